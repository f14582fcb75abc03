"""Partial-pseudo-label datasets for the teacher and the student (Drive&Segment Sec. 3.3-3.4).

Reads the directory written by the pseudo-label step (``drive-segment pseudo-label``)::

    DIR/index.json   {"k", "backbone", "backbone_description", "self_supervised",
                      "ignore_index": 255,
                      "frames": [{"name", "image": "images/<name>.png",
                                  "label": "labels/<name>.png",
                                  "segments": "segments/<name>.npy", ...}, ...]}
    DIR/images/<name>.png     RGB image
    DIR/labels/<name>.png     uint8 partial labels (pseudo-class id, 255 = ignore)
    DIR/segments/<name>.npy   int32 (H, W) LiDAR segment map, -1 = no segment

and yields augmented, normalised training crops (:mod:`drive_segment_training.augment`).
Randomness is a pure function of ``(seed, index)``: index ``i`` returns frame ``i % len``
augmented with the generator ``numpy.random.default_rng([seed, i])``, so a sampler that
yields ``i + epoch * len`` gets fresh augmentations each epoch, and results do not depend on
the number of DataLoader workers.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from drive_segment_ros.types import DriveSegmentError

from .augment import (
    IGNORE_INDEX,
    NO_SEGMENT,
    AugmentConfig,
    copy_paste_segments,
    hflip,
    photometric_jitter,
    random_crop,
    random_scale,
)

LOG = logging.getLogger(__name__)

#: ImageNet normalisation (used by DINO and the MobileNetV2 re-ID backbone alike).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def load_pseudo_label_index(root: Union[str, Path]) -> dict:
    """Read and validate ``root/index.json`` of a pseudo-label directory.

    Returns:
        The parsed index (``k``, ``ignore_index``, ``frames`` ...), with every frame's file
        paths checked to exist.

    Raises:
        DriveSegmentError: missing directory / index, malformed JSON, missing keys or files,
            or an empty frame list.
    """
    root = Path(root)
    index_path = root / "index.json"
    if not root.is_dir():
        raise DriveSegmentError(f"pseudo-label directory {root} does not exist")
    if not index_path.is_file():
        raise DriveSegmentError(f"{index_path} not found: run `drive-segment pseudo-label` first")
    try:
        index = json.loads(index_path.read_text())
    except json.JSONDecodeError as exc:
        raise DriveSegmentError(f"{index_path}: invalid JSON ({exc})") from None
    if not isinstance(index, dict) or "frames" not in index or "k" not in index:
        raise DriveSegmentError(f"{index_path}: expected an object with 'k' and 'frames'")
    frames = index["frames"]
    if not frames:
        raise DriveSegmentError(f"{index_path}: no frames")
    for fr in frames:
        for key in ("name", "image", "label", "segments"):
            if key not in fr:
                raise DriveSegmentError(f"{index_path}: frame {fr.get('name', '?')!r} lacks {key!r}")
        for key in ("image", "label", "segments"):
            if not (root / fr[key]).is_file():
                raise DriveSegmentError(f"{index_path}: frame {fr['name']!r}: {fr[key]} not found")
    index.setdefault("ignore_index", IGNORE_INDEX)
    if int(index["k"]) < 1:
        raise DriveSegmentError(f"{index_path}: k must be >= 1, got {index['k']}")
    return index


def read_frame(root: Union[str, Path], frame: dict) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Load one frame's (image (H,W,3) uint8 RGB, label (H,W) uint8, segments (H,W) int32).

    Raises:
        DriveSegmentError: unreadable files or mismatched sizes.
    """
    root = Path(root)
    bgr = cv2.imread(str(root / frame["image"]), cv2.IMREAD_COLOR)
    if bgr is None:
        raise DriveSegmentError(f"cannot read image {root / frame['image']}")
    img = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    label = cv2.imread(str(root / frame["label"]), cv2.IMREAD_UNCHANGED)
    if label is None or label.ndim != 2:
        raise DriveSegmentError(f"cannot read single-channel label {root / frame['label']}")
    label = label.astype(np.uint8, copy=False)
    segments = np.load(root / frame["segments"]).astype(np.int32, copy=False)
    if label.shape != img.shape[:2] or segments.shape != img.shape[:2]:
        raise DriveSegmentError(
            f"frame {frame['name']!r}: image {img.shape[:2]}, label {label.shape}, segments {segments.shape} differ"
        )
    return img, label, segments


def normalize_image(img: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (3, H, W) float32 tensor ``(x / 255 - mean) / std``."""
    t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    return (t - m) / s


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
        cache: keep decoded frames in memory (small pseudo-label sets).

    Items (``dataset[i]``, frame ``i % len(dataset)``) are dicts:
        ``image`` (3, h, w) float32 normalised; ``label`` (h, w) int64 (``ignore_index`` = 255
        elsewhere); ``segments`` (h, w) int64 (-1 = none); ``valid`` (h, w) bool (False on
        padding); ``name`` str; ``index`` int (frame index).

    Raises:
        DriveSegmentError: bad directory / index (see :func:`load_pseudo_label_index`), bad crop size.
    """

    def __init__(
        self,
        root: Union[str, Path],
        crop_size: Tuple[int, int] = (256, 512),
        train: bool = True,
        augment: Optional[AugmentConfig] = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        seed: int = 0,
        cache: bool = True,
    ) -> None:
        self.root = Path(root)
        self.index = load_pseudo_label_index(self.root)
        self.frames: List[dict] = list(self.index["frames"])
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
        self.cache = bool(cache)
        self._cache: Dict[int, Tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.frames)

    def _load(self, j: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        if j in self._cache:
            return self._cache[j]
        out = read_frame(self.root, self.frames[j])
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
    out = Path(out_dir)
    for sub in ("images", "labels", "segments"):
        (out / sub).mkdir(parents=True, exist_ok=True)
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
        cv2.imwrite(str(out / "images" / f"{name}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(out / "labels" / f"{name}.png"), label)
        np.save(out / "segments" / f"{name}.npy", segments)
        frames.append({"name": name, "image": f"images/{name}.png", "label": f"labels/{name}.png",
                       "segments": f"segments/{name}.npy"})
    index = {"k": int(k), "backbone": "synthetic", "backbone_description": "synthetic colour classes",
             "self_supervised": False, "ignore_index": IGNORE_INDEX, "frames": frames}
    (out / "index.json").write_text(json.dumps(index, indent=1))
    return out
