"""Partial-pseudo-label datasets for the teacher and the student (Drive&Segment Sec. 3.3-3.4).

Reads the directory written by the pseudo-label step (``drive-segment pseudo-label`` or the
``pseudo_label_node``; the one layout is :mod:`drive_segment_ros.pseudo_label_store`, which also
reads the index and the frames). ``DIR/index.json`` marks a complete run; the frame records are
streamed from its ``frames_file`` (JSON lines; only the byte offset of each line is kept, so
memory does not grow with the drive), or read from its inline ``frames`` list (the node, format 1).
Each record names ``image`` (a file: the camera's original compressed bytes or a PNG) or
``image_ref`` (``{"bag", "topic", "stamp_ns"}``: read back from the bag by
:class:`BagImageLoader`), ``label`` (uint8 PNG, 255 = ignore) and ``segments`` (uint16 PNG
id + 1, or int32 ``.npy``).

and yields augmented, normalised training crops (:mod:`drive_segment_training.augment`).
Randomness is a pure function of ``(seed, index)``: index ``i`` returns frame ``i % len``
augmented with the generator ``numpy.random.default_rng([seed, i])``, so a sampler that
yields ``i + epoch * len`` gets fresh augmentations each epoch, and results do not depend on
the number of DataLoader workers.
"""
from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from drive_segment_ros import pseudo_label_store as store
from drive_segment_ros.inference.preprocess import IMAGENET_MEAN, IMAGENET_STD, normalize_image
from drive_segment_ros.pseudo_label_store import load_pseudo_label_index, open_frame_index
from drive_segment_ros.ros.bags import deserialize, iter_messages, open_bag
from drive_segment_ros.ros.image import any_image_to_rgb
from drive_segment_ros.ros.msgtypes import header_stamp_ns
from drive_segment_ros.types import IGNORE_INDEX, DriveSegmentError
from drive_segment_training.augment import (
    NO_SEGMENT,
    AugmentConfig,
    copy_paste_segments,
    hflip,
    photometric_jitter,
    random_crop,
    random_scale,
)

LOG = logging.getLogger(__name__)

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "BagImageLoader", "InfiniteSampler", "PseudoLabelDataset",
    "load_pseudo_label_index", "make_synthetic_pseudo_label_dir", "normalize_image", "read_frame", "read_image",
]


#: First look-up window (s) of :class:`BagImageLoader` around the header stamp.
NEAR_WINDOW_S = 0.05


class BagImageLoader:
    """Reads images that a pseudo-label index references as ``image_ref = {"bag", "topic", "stamp_ns"}``.

    The message on ``topic`` whose header stamp is ``stamp_ns`` is looked up among the messages
    logged within :data:`NEAR_WINDOW_S` of that stamp (sqlite3 / mcap bags are indexed by log
    time, which a live recording keeps within milliseconds of the header stamp: one or two
    messages are decoded), then within ``window_s``, then in the whole topic. At most
    ``max_open`` readers stay open (least recently used closed first; one set per process:
    DataLoader workers open their own), so hours of driving in hundreds of bags do not exhaust
    file handles. Callable as ``loader(frame_record) -> (H, W, 3) uint8 RGB``.

    Raises (on call):
        DriveSegmentError: the bag cannot be opened (moved or deleted since labelling: use
            ``--image-storage png``), or holds no such message.
    """

    def __init__(self, window_s: float = 2.0, max_open: int = 8) -> None:
        self.window_ns = int(window_s * 1e9)
        self.max_open = max(1, int(max_open))
        self._readers: "OrderedDict[str, Any]" = OrderedDict()
        self._lock = threading.Lock()

    def __getstate__(self):
        return {"window_ns": self.window_ns, "max_open": self.max_open}

    def __setstate__(self, state):
        self.__init__(state["window_ns"] / 1e9, state.get("max_open", 8))

    def _reader(self, bag: str):
        if bag in self._readers:
            self._readers.move_to_end(bag)
        else:
            while len(self._readers) >= self.max_open:
                self._readers.popitem(last=False)[1].close()
            self._readers[bag] = open_bag(bag)
        return self._readers[bag]

    def __call__(self, frame: dict) -> np.ndarray:
        ref = frame["image_ref"]
        bag, topic, stamp = str(ref["bag"]), ref["topic"], int(ref["stamp_ns"])
        with self._lock:
            reader = self._reader(bag)
            conns = [c for c in reader.connections if c.topic == topic]
            if not conns:
                raise DriveSegmentError(f"bag {bag!r} has no topic {topic!r} (frame {frame.get('name', '?')!r})")
            near = int(NEAR_WINDOW_S * 1e9)
            for window in ((stamp - near, stamp + near + 1), (stamp - self.window_ns, stamp + self.window_ns + 1),
                           (None, None)):
                it = reader.messages(connections=conns, start=window[0], stop=window[1]) if window[0] is not None \
                    else iter_messages(reader, conns, bag)
                for conn, _, raw in it:
                    msg = deserialize(reader, raw, conn, bag)
                    if header_stamp_ns(msg) == stamp:
                        return any_image_to_rgb(msg)
        raise DriveSegmentError(f"bag {bag!r}: no image on {topic!r} with stamp {stamp} ns (frame {frame.get('name', '?')!r})")

    def close(self) -> None:
        """Close the open bag readers."""
        for r in self._readers.values():
            r.close()
        self._readers.clear()


_DEFAULT_LOADER = BagImageLoader()


def read_image(root: Union[str, Path], frame: dict) -> np.ndarray:
    """(H, W, 3) uint8 RGB image of a frame record: its file, or its bag reference (:class:`BagImageLoader`)."""
    return store.read_image(root, frame, _DEFAULT_LOADER)


def read_frame(root: Union[str, Path], frame: dict):
    """``(image (H,W,3) uint8, label (H,W) uint8, segments (H,W) int32)`` of a frame record
    (:func:`drive_segment_ros.pseudo_label_store.read_frame` with bag-referenced images)."""
    return store.read_frame(root, frame, _DEFAULT_LOADER)


class PseudoLabelDataset(Dataset):
    """Training crops of a pseudo-label directory (teacher: partial labels; student: images + segments).

    Args:
        root: the pseudo-label directory (layout in the module docstring).
        crop_size: (h, w) output size in pixels. In training mode every sample is exactly this
            size; in eval mode (``train=False``) the whole image is returned unaugmented.
        train: enable random scale / crop / flip / photometric jitter / copy-paste.
        augment: :class:`AugmentConfig` (defaults when None). ``scale_range`` is relative to the
            scale at which the image just covers the crop (``max(h / H, w / W)``).
        mean, std: per-channel normalisation of the backbone (RGB, [0, 1] units).
        seed: base seed; sample ``i`` uses ``numpy.random.default_rng([seed, i])``.
        cache: keep decoded frames in memory; ``None`` (default) = only for sets of at most
            :attr:`CACHE_MAX_FRAMES` frames, so memory does not grow with a long drive.

    Items (``dataset[i]``, frame ``i % len(dataset)``) are dicts:
        ``image`` (3, h, w) float32 normalised; ``label`` (h, w) int64 (``ignore_index`` = 255
        elsewhere); ``segments`` (h, w) int64 (-1 = none); ``valid`` (h, w) bool (False on
        padding); ``name`` str; ``index`` int (frame index).

    Raises:
        DriveSegmentError: bad directory / index (see :func:`load_pseudo_label_index`), bad crop size.
    """

    #: Largest set whose decoded frames are cached in memory by default.
    CACHE_MAX_FRAMES = 256

    def __init__(
        self,
        root: Union[str, Path],
        crop_size: Tuple[int, int] = (256, 512),
        train: bool = True,
        augment: Optional[AugmentConfig] = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        seed: int = 0,
        cache: Optional[bool] = None,
    ) -> None:
        self.root = Path(root)
        self.frames = open_frame_index(self.root)  # streamed: byte offsets only (format 2)
        self.index = dict(self.frames.meta)
        self.k = int(self.index["k"])
        self.ignore_index = int(self.index.get("ignore_index", IGNORE_INDEX))
        if len(crop_size) != 2 or min(int(c) for c in crop_size) < 1:
            raise DriveSegmentError(f"crop_size must be (h, w) with positive entries, got {crop_size}")
        self.crop_size = (int(crop_size[0]), int(crop_size[1]))
        self.train = bool(train)
        self.augment = augment if augment is not None else AugmentConfig()
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self.seed = int(seed)
        self.cache = len(self.frames) <= self.CACHE_MAX_FRAMES if cache is None else bool(cache)
        self._cache: Dict[int, Tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._loader = BagImageLoader()

    def __len__(self) -> int:
        return len(self.frames)

    def _load(self, j: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        if j in self._cache:
            return self._cache[j]
        out = store.read_frame(self.root, self.frames[j], self._loader)
        if self.cache:
            self._cache[j] = out
        return out

    def raw(self, i: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Unaugmented (image uint8 (H,W,3), label uint8 (H,W), segments int32 (H,W)) of frame ``i``."""
        return self._load(int(i) % len(self))

    def __getitem__(self, i: int) -> dict:
        i = int(i)
        if i < 0:
            raise IndexError(i)
        j = i % len(self)
        img, label, segments = self._load(j)
        valid = np.ones(label.shape, dtype=bool)
        if self.train:
            rng = np.random.default_rng([self.seed, i])
            a = self.augment
            if a.copy_paste_prob > 0 and len(self) > 1 and rng.random() < a.copy_paste_prob:
                other = int(rng.integers(0, len(self) - 1))
                other += other >= j  # any frame but this one
                s_img, s_lab, s_seg = self._load(other)
                img, label, segments = copy_paste_segments(
                    img, label, segments, s_img, s_lab, s_seg, rng,
                    max_segments=a.copy_paste_max_segments,
                    scale_range=a.copy_paste_scale_range,
                    min_pixels=a.copy_paste_min_pixels,
                    ignore_index=self.ignore_index,
                )
            img, label, segments, _ = random_scale(
                img, label, segments, rng, a.scale_range, base_hw=self.crop_size
            )
            img, label, segments, valid = random_crop(
                img, label, segments, self.crop_size, rng, ignore_index=self.ignore_index
            )
            if rng.random() < a.hflip_prob:
                img, label, segments, valid = hflip(img, label, segments, valid)
            if a.photometric:
                img = photometric_jitter(img, rng, a.brightness, a.contrast, a.saturation, a.hue)
        return {
            "image": normalize_image(img, self.mean, self.std),
            "label": torch.from_numpy(np.ascontiguousarray(label).astype(np.int64)),
            "segments": torch.from_numpy(np.ascontiguousarray(segments).astype(np.int64)),
            "valid": torch.from_numpy(np.ascontiguousarray(valid)),
            "name": str(self.frames[j]["name"]),
            "index": j,
        }


class InfiniteSampler(torch.utils.data.Sampler):
    """Endless, seeded stream of dataset indices for iteration-based training.

    Position ``p`` of the stream is ``perm_e[p % n] + e * n`` with ``e = p // n`` and
    ``perm_e = default_rng([seed, e]).permutation(n)``: every epoch visits each frame once,
    and with :class:`PseudoLabelDataset` the ``+ e * n`` offset gives fresh augmentations.
    ``start`` skips to a position, so a resumed run sees exactly the samples it would have.
    """

    def __init__(self, n: int, seed: int = 0, start: int = 0, shuffle: bool = True) -> None:
        if n < 1:
            raise DriveSegmentError("InfiniteSampler: empty dataset")
        self.n, self.seed, self.start, self.shuffle = int(n), int(seed), int(start), bool(shuffle)

    def __iter__(self):
        p = self.start
        while True:
            e, r = divmod(p, self.n)
            perm = np.random.default_rng([self.seed, e]).permutation(self.n) if self.shuffle else np.arange(self.n)
            for q in range(r, self.n):
                yield int(perm[q]) + e * self.n
            p = (e + 1) * self.n

    def __len__(self) -> int:  # pragma: no cover - infinite
        return 2**62


def make_synthetic_pseudo_label_dir(
    out_dir: Union[str, Path],
    n_frames: int = 3,
    size_hw: Tuple[int, int] = (64, 96),
    k: int = 3,
    shapes_per_frame: int = 4,
    seed: int = 0,
    noise: float = 8.0,
) -> Path:
    """Write a small synthetic pseudo-label directory with known answers (tests, smoke runs).

    Each frame is a grey noisy background with ``shapes_per_frame`` axis-aligned rectangles;
    rectangle ``j`` has pseudo-class ``c = j % k`` and the fixed colour ``palette[c]`` (so the
    class is predictable from colour), is LiDAR segment ``j`` in ``segments/<name>.npy`` and
    is labelled ``c`` in ``labels/<name>.png``; everything else is label 255 / segment -1.

    Args:
        out_dir: directory to create (``index.json``, ``images/``, ``labels/``, ``segments/``).
        n_frames, size_hw, k, shapes_per_frame, seed: scene parameters (``k <= 8``).
        noise: std of the Gaussian pixel noise (grey levels).

    Returns:
        ``out_dir`` as a Path.

    Raises:
        DriveSegmentError: ``k`` outside 1..8 or an image too small for the shapes.
    """
    if not 1 <= k <= 8:
        raise DriveSegmentError(f"synthetic pseudo-labels: k must be in 1..8, got {k}")
    H, W = int(size_hw[0]), int(size_hw[1])
    if H < 16 or W < 16:
        raise DriveSegmentError(f"synthetic pseudo-labels: image too small {size_hw}")
    palette = np.array(
        [[220, 30, 30], [30, 200, 40], [40, 60, 230], [230, 220, 40],
         [200, 40, 210], [40, 210, 210], [250, 140, 20], [20, 20, 20]], dtype=np.float32
    )
    out = store.make_dirs(out_dir, ("images", "labels", "segments"))
    rng = np.random.default_rng(seed)
    frames = []
    for f in range(int(n_frames)):
        img = np.full((H, W, 3), 128.0, dtype=np.float32)
        label = np.full((H, W), IGNORE_INDEX, dtype=np.uint8)
        segments = np.full((H, W), NO_SEGMENT, dtype=np.int32)
        for j in range(int(shapes_per_frame)):
            c = j % k
            h = int(rng.integers(H // 6, H // 3 + 1))
            w = int(rng.integers(W // 8, W // 4 + 1))
            y0 = int(rng.integers(0, H - h))
            x0 = int(rng.integers(0, W - w))
            img[y0 : y0 + h, x0 : x0 + w] = palette[c]
            label[y0 : y0 + h, x0 : x0 + w] = c
            segments[y0 : y0 + h, x0 : x0 + w] = j
        img = np.clip(img + rng.normal(0.0, noise, img.shape), 0, 255).astype(np.uint8)
        name = f"synthetic_{f:03d}"
        paths = store.frame_paths(name)
        store.write_png(out / paths.image, img)
        store.write_png(out / paths.label, label)
        store.write_npy(out / paths.segments, segments)
        frames.append({"name": name, "image": paths.image, "label": paths.label, "segments": paths.segments})
    index = {"k": int(k), "backbone": "synthetic", "backbone_description": "synthetic colour classes",
             "self_supervised": False, "ignore_index": IGNORE_INDEX, "frames": frames}
    store.write_json(out / store.INDEX_FILE, index)
    return out
