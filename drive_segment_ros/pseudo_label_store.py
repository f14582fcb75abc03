"""The one on-disk layout of a pseudo-label dataset: paths, atomic writes, the index, reading.

Written by the offline run (``drive-segment pseudo-label``, ``drive_segment_training.pseudo_labels``)
and by the ROS ``pseudo_label_node``; read by the training datasets (``drive_segment_training.datasets``).

Layout of the offline run (format 2; ``<key>`` = hash of the clustering settings)::

    DIR/frames/<shard>.jsonl        pass-1 index, one JSON line per frame, appended and fsynced per frame
                                    (the resume point: a crash loses at most the frame or batch in flight)
    DIR/segments/<name>.png         uint16 PNG, value = segment id + 1 (0 = unlabelled); ids >= 65535
                                    are refused by write_segments_png and the run falls back to
                                    DIR/segments/<name>.npz (compressed int32)
    DIR/features/<name>.npz         per-frame feature cache (compressed, deterministic zip bytes):
                                    segment_ids (S,) int32, feats (S, C) float32, pixel_counts (S,) int64,
                                    is_ground (n,) bool, cache_key, name
    DIR/images/<name>.jpg|.png      the camera's ORIGINAL compressed bytes (CompressedImage), never
                                    re-encoded; raw Image topics are not copied: the index references
                                    them as image_ref = {"bag", "topic", "stamp_ns"} (read back from the bag)
    DIR/runs/<key>/labels/<name>.png  uint8 partial label map of one clustering, 255 (IGNORE_INDEX) = ignore
    DIR/runs/<key>/index.jsonl      the training index of that clustering: one JSON line per frame
                                    {"name", "image" (path or null), "image_ref", "label", "segments",
                                     "bag", "image_topic", "stamp_ns", "lidar_stamp_ns", "n_segments", "coverage"}
    DIR/runs/<key>/centroids.npy    (k, C) float32
    DIR/previews/<name>.jpg         colour overlays for people, a sample of the frames only
    DIR/centroids.npy, DIR/pseudo_label_config.yaml   copies of the completed run's (node / from_dir)
    DIR/index.json                  THE completion marker, written last after a successful run:
                                    {"format": 2, "k", "backbone", ..., "settings", "run_dir",
                                     "frames_file": "runs/<key>/index.jsonl", "n_frames", ...}

A re-run with other clustering settings writes another ``runs/<key>/``: the previous complete run
stays readable through the old ``index.json`` until the new one replaces it (then stale runs are
removed). The ROS ``pseudo_label_node`` writes format 2 with its frames in ``DIR/index.jsonl``
(appended per frame; ``index.json`` written last when the node finalizes). Only
``drive_segment_training.datasets.make_synthetic_pseudo_label_dir`` writes format 1: ``index.json``
with an inline ``"frames"`` list, ``images/<name>.png`` and ``segments/<name>.npy``; every reader
here accepts both.

Every file is written atomically: the bytes go to a hidden temporary file in the same
directory (flushed and fsynced), which then replaces the target with ``os.replace`` (atomic on
POSIX), so a reader (training while the node is still labelling, or a resumed run after a
crash) never sees a partial file; on an error the temporary file is removed and the target is
left as it was. JSON-lines indexes are appended one line at a time (write, flush, fsync); a
partial last line (crash or full disk mid-write) is ignored by readers and cut off by the next
appender.
"""
from __future__ import annotations

import io
import json
import logging
import os
import re
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple, Union

import cv2
import numpy as np
import yaml

from drive_segment_ros.types import IGNORE_INDEX, DriveSegmentError

LOG = logging.getLogger(__name__)

__all__ = [
    "INDEX_FILE", "CENTROIDS_FILE", "CONFIG_FILE", "FORMAT", "SUBDIRS", "MAX_SEGMENT_ID", "FramePaths", "safe_name",
    "frame_paths", "frame_record", "atomic_write_bytes", "write_png", "write_npy", "write_npz", "npz_bytes",
    "write_json", "write_yaml", "make_dirs", "crc32_of", "file_crc32", "write_segments_png", "read_segments",
    "load_npz_checked", "JsonlAppender", "read_jsonl", "FrameIndex", "open_frame_index", "load_pseudo_label_index",
    "read_image", "read_frame", "read_labeler_files",
]

INDEX_FILE = "index.json"
CENTROIDS_FILE = "centroids.npy"
CONFIG_FILE = "pseudo_label_config.yaml"
#: Version of the offline layout written by ``drive_segment_training.pseudo_labels`` (1 = inline frames).
FORMAT = 2
#: Sub-directories of a format-1 pseudo-label dataset (the node, synthetic data).
SUBDIRS = ("images", "labels", "segments", "features", "previews")
#: Largest segment id a uint16 segment PNG can hold (value = id + 1, 0 = unlabelled).
MAX_SEGMENT_ID = 65534
#: fsync every atomically written file before the rename (durable across power loss).
FSYNC = True

PathLike = Union[str, Path]


# --------------------------------------------------------------------------------------------
# names and paths
# --------------------------------------------------------------------------------------------
def safe_name(text: str) -> str:
    """A file-name-safe version of ``text`` (runs of other characters -> ``_``; never empty)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "frame"


@dataclass(frozen=True)
class FramePaths:
    """Paths of one frame's files (format 1), relative to the dataset directory (as stored in ``index.json``)."""

    image: str
    label: str
    segments: str
    features: str
    preview: str


def frame_paths(name: str) -> FramePaths:
    """The format-1 relative paths of frame ``name`` (``images/<name>.png`` ...; the node, synthetic data)."""
    return FramePaths(f"images/{name}.png", f"labels/{name}.png", f"segments/{name}.npy",
                      f"features/{name}.npz", f"previews/{name}.png")


def frame_record(name: str, bag: str, image_topic: str, stamp_ns: int, lidar_stamp_ns: int) -> Dict[str, Any]:
    """The format-1 ``index.json`` entry of one frame (``n_segments`` / ``coverage`` are added once labelled)."""
    p = frame_paths(name)
    return {"name": name, "image": p.image, "label": p.label, "segments": p.segments, "bag": str(bag),
            "image_topic": image_topic, "stamp_ns": int(stamp_ns), "lidar_stamp_ns": int(lidar_stamp_ns)}


def make_dirs(root: PathLike, subdirs=SUBDIRS) -> Path:
    """Create ``root`` and its sub-directories; returns ``root`` as a Path.

    Raises:
        DriveSegmentError: the directories cannot be created.
    """
    root = Path(root)
    try:
        for sub in subdirs:
            (root / sub).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DriveSegmentError(f"cannot create pseudo-label directory {root}: {exc}") from exc
    return root


# --------------------------------------------------------------------------------------------
# atomic writes
# --------------------------------------------------------------------------------------------
def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        if FSYNC:
            f.flush()
            os.fsync(f.fileno())


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file in the same directory + ``os.replace``).

    Parents are created. On any error (``OSError`` such as ENOSPC included) the temporary file is
    removed, the target keeps its old content (or stays absent) and the error is raised again.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        _write_file(tmp, data)
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        raise
    return path


def write_png(path: PathLike, image: np.ndarray) -> Path:
    """Write an (H, W, 3) uint8 RGB or (H, W) uint8 / uint16 single-channel image as PNG, atomically.

    Raises:
        DriveSegmentError: OpenCV cannot encode the image.
    """
    image = np.asarray(image)
    img = image[..., ::-1] if image.ndim == 3 else image
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(img))
    if not ok:
        raise DriveSegmentError(f"cannot encode {path} as PNG (shape {image.shape}, dtype {image.dtype})")
    return atomic_write_bytes(path, buf.tobytes())


def write_jpeg(path: PathLike, rgb: np.ndarray, quality: int = 90) -> Path:
    """Write an (H, W, 3) uint8 RGB image as JPEG (previews only: lossy), atomically."""
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(np.asarray(rgb)[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise DriveSegmentError(f"cannot encode {path} as JPEG")
    return atomic_write_bytes(path, buf.tobytes())


def write_npy(path: PathLike, array: np.ndarray) -> Path:
    """``np.save`` to ``path``, atomically."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(array))
    return atomic_write_bytes(path, buf.getvalue())


def npz_bytes(compress: bool = True, **arrays: Any) -> bytes:
    """The bytes of an ``.npz`` archive of ``arrays`` that ``np.load`` reads, *deterministically*.

    ``np.savez`` stamps every member with the current time, so two runs never write the same
    bytes; here every member has the fixed zip time 1980-01-01 and a fixed order (the keyword
    order), so equal arrays give byte-identical files (resumed == uninterrupted run).
    ``compress``: deflate (``np.savez_compressed``) or store.
    """
    buf = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(buf, "w", compression=method) as zf:
        for key, value in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = method
            info.external_attr = 0o600 << 16
            zf.writestr(info, member.getvalue())
    return buf.getvalue()


def write_npz(path: PathLike, compress: bool = False, **arrays: Any) -> Path:
    """An ``.npz`` archive (deterministic bytes, see :func:`npz_bytes`) to ``path``, atomically."""
    return atomic_write_bytes(path, npz_bytes(compress, **arrays))


def write_json(path: PathLike, obj: Any, indent: Optional[int] = 1) -> Path:
    """JSON text to ``path``, atomically (the object is serialised before anything is written)."""
    return atomic_write_bytes(path, json.dumps(obj, indent=indent).encode())


def write_yaml(path: PathLike, obj: Mapping[str, Any]) -> Path:
    """``yaml.safe_dump(obj, sort_keys=False)`` to ``path``, atomically."""
    return atomic_write_bytes(path, yaml.safe_dump(dict(obj), sort_keys=False).encode())


def crc32_of(data: bytes) -> int:
    """CRC-32 (``zlib.crc32``) of ``data`` as an unsigned int (recorded in the index per file)."""
    return zlib.crc32(data) & 0xFFFFFFFF


def file_crc32(path: PathLike) -> Optional[int]:
    """CRC-32 of the file's bytes, or ``None`` when it cannot be read."""
    try:
        return crc32_of(Path(path).read_bytes())
    except OSError:
        return None


# --------------------------------------------------------------------------------------------
# segment maps and feature caches
# --------------------------------------------------------------------------------------------
def segments_png_bytes(segment_map: np.ndarray) -> bytes:
    """uint16 PNG bytes of an (H, W) int segment map: value = id + 1, 0 = unlabelled (any negative id).

    Lossless: :func:`read_segments` returns the same map with every negative id as -1.

    Raises:
        DriveSegmentError: an id above :data:`MAX_SEGMENT_ID` (65534) does not fit in uint16
            (callers fall back to a compressed ``.npz``), a map that is not 2-D, or an encoder failure.
    """
    seg = np.asarray(segment_map)
    if seg.ndim != 2:
        raise DriveSegmentError(f"segment map must be (H, W), got shape {seg.shape}")
    top = int(seg.max(initial=-1))
    if top > MAX_SEGMENT_ID:
        raise DriveSegmentError(f"segment id {top} does not fit a uint16 segment PNG (max {MAX_SEGMENT_ID})")
    enc = np.where(seg >= 0, seg.astype(np.int64) + 1, 0).astype(np.uint16)
    ok, buf = cv2.imencode(".png", enc)
    if not ok:
        raise DriveSegmentError(f"cannot encode a {seg.shape} segment map as PNG")
    return buf.tobytes()


def write_segments_png(path: PathLike, segment_map: np.ndarray) -> Path:
    """Write ``segment_map`` as a uint16 PNG (:func:`segments_png_bytes`), atomically."""
    return atomic_write_bytes(path, segments_png_bytes(segment_map))


def write_segment_map(root: PathLike, name: str, segment_map: np.ndarray) -> str:
    """Write one frame's segment map under ``root``, atomically; returns its path relative to ``root``.

    ``segments/<name>.png`` (uint16, id + 1, :func:`segments_png_bytes`), or ``segments/<name>.npz``
    (compressed int32, key ``segments``) when an id does not fit uint16. :func:`read_segments`
    reads both. Used by the offline run and the pseudo-label node.

    Raises:
        DriveSegmentError: a map that is not 2-D; OSError: the write failed (nothing left half-written).
    """
    try:
        data = segments_png_bytes(segment_map)
    except DriveSegmentError as exc:
        if np.asarray(segment_map).ndim != 2:
            raise
        LOG.info("frame %s: %s; writing a compressed .npz segment map", name, exc)
        rel = f"segments/{name}.npz"
        write_npz(Path(root) / rel, compress=True, segments=np.asarray(segment_map, dtype=np.int32))
        return rel
    rel = f"segments/{name}.png"
    atomic_write_bytes(Path(root) / rel, data)
    return rel


def read_segments(path: PathLike) -> np.ndarray:
    """(H, W) int32 segment map (-1 = unlabelled) from ``.png`` (uint16, id + 1), ``.npz`` or ``.npy``.

    Raises:
        DriveSegmentError: missing, truncated or damaged file, or an unexpected dtype.
    """
    path = Path(path)
    try:
        if path.suffix == ".png":
            raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            if raw is None or raw.ndim != 2 or raw.dtype != np.uint16:
                raise DriveSegmentError(f"cannot read uint16 segment PNG {path} (missing or damaged)")
            return raw.astype(np.int32) - 1
        if path.suffix == ".npz":
            return load_npz_checked(path, ("segments",))["segments"].astype(np.int32, copy=False)
        return np.load(path, allow_pickle=False).astype(np.int32, copy=False)
    except DriveSegmentError:
        raise
    except (OSError, ValueError, EOFError) as exc:
        raise DriveSegmentError(f"cannot read segment map {path}: {exc}") from None


def load_npz_checked(path: PathLike, keys) -> Dict[str, np.ndarray]:
    """Load every member of an ``.npz`` (zip CRCs checked) and check ``keys`` are present.

    Returns:
        ``{key: array}`` fully read into memory (the file is closed).

    Raises:
        DriveSegmentError: missing file, truncated / damaged archive (``BadZipFile``, CRC error,
            short read), missing keys. Callers treat this as a damaged cache entry.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            out = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
        raise DriveSegmentError(f"damaged or unreadable {path}: {type(exc).__name__}: {exc}") from None
    missing = [k for k in keys if k not in out]
    if missing:
        raise DriveSegmentError(f"damaged {path}: missing {', '.join(missing)}")
    return out


# --------------------------------------------------------------------------------------------
# JSON-lines indexes
# --------------------------------------------------------------------------------------------
def _dumps_line(record: Mapping[str, Any]) -> bytes:
    return (json.dumps(record, separators=(",", ":")) + "\n").encode()


class JsonlAppender:
    """Append-only JSON-lines file: each :meth:`append` writes one line, flushes and fsyncs it.

    On open, a partial last line (a crash or a full disk in the middle of a write) is cut off,
    so the file always holds whole lines only. :meth:`truncate_to` drops every line from a byte
    offset on (a resumed run that diverges from what was recorded).

    Raises:
        OSError: from the file system (ENOSPC ...), after the partial line was removed again.
    """

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "ab+")
        self._f.seek(0, os.SEEK_END)
        size = self._f.tell()
        if size:
            self._f.seek(0)
            data = self._f.read()
            end = data.rfind(b"\n") + 1
            if end != size:
                LOG.warning("%s: dropping a partial last line (%d bytes) left by an interrupted run", self.path, size - end)
                self._f.truncate(end)
            self._f.seek(0, os.SEEK_END)

    def tell(self) -> int:
        """Current size in bytes (the offset the next line starts at)."""
        return self._f.seek(0, os.SEEK_END)

    def append(self, record: Mapping[str, Any]) -> None:
        """Write one line (compact JSON), flush, fsync. A failed write leaves no partial line."""
        line = _dumps_line(record)
        start = self.tell()
        try:
            self._f.write(line)
            self._f.flush()
            os.fsync(self._f.fileno())
        except BaseException:
            try:
                self._f.truncate(start)
            except OSError:
                pass
            raise

    def truncate_to(self, offset: int) -> None:
        """Drop everything from byte ``offset`` on (fsynced)."""
        self._f.truncate(int(offset))
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        """Close the file (every appended line is already fsynced)."""
        self._f.close()

    def __enter__(self) -> "JsonlAppender":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_jsonl(path: PathLike, with_offsets: bool = False) -> Iterator[Any]:
    """Stream the records of a JSON-lines file (one parsed line at a time, constant memory).

    A partial last line (no newline: the write in flight when a run died) is skipped with a log
    line. ``with_offsets``: yield ``(byte_offset, record)``.

    Raises:
        DriveSegmentError: an unreadable file or a malformed complete line.
    """
    path = Path(path)
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise DriveSegmentError(f"cannot read {path}: {exc}") from None
    with f:
        offset = 0
        for n, line in enumerate(f, 1):
            if not line.endswith(b"\n"):
                LOG.warning("%s: ignoring a partial last line (%d bytes)", path, len(line))
                return
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DriveSegmentError(f"{path}:{n}: invalid JSON line ({exc})") from None
            yield (offset, rec) if with_offsets else rec
            offset += len(line)


class FrameIndex:
    """Random access to the frame records of a pseudo-label dataset without holding them in memory.

    Format 2: the byte offset of every line of ``runs/<key>/index.jsonl`` (8 bytes per frame);
    a record is parsed when asked for. Format 1: the inline list of ``index.json``.

    Attributes:
        root: the dataset directory; meta: ``index.json`` without ``frames``; path: the JSON-lines file or None.
    """

    def __init__(self, root: PathLike, meta: Dict[str, Any], frames: Optional[List[dict]] = None,
                 path: Optional[Path] = None, offsets: Optional[np.ndarray] = None) -> None:
        self.root, self.meta, self._frames, self.path, self._offsets = Path(root), meta, frames, path, offsets
        self._fh = None

    def __len__(self) -> int:
        return len(self._frames) if self._frames is not None else int(self._offsets.size)

    def __getitem__(self, i: int) -> dict:
        if self._frames is not None:
            return self._frames[i]
        i = int(i)
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        if self._fh is None or self._fh_pid != os.getpid():  # DataLoader workers: one handle per process
            self._fh, self._fh_pid = open(self.path, "rb"), os.getpid()
        self._fh.seek(int(self._offsets[i]))
        return json.loads(self._fh.readline())

    def __iter__(self) -> Iterator[dict]:
        if self._frames is not None:
            yield from self._frames
        else:
            yield from read_jsonl(self.path)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_fh"] = None
        return state


def _read_index_json(root: Path) -> dict:
    index_path = root / INDEX_FILE
    if not root.is_dir():
        raise DriveSegmentError(f"pseudo-label directory {root} does not exist")
    if not index_path.is_file():
        raise DriveSegmentError(
            f"{index_path} not found: run `drive-segment pseudo-label` first (or it did not finish: "
            f"a run writes {INDEX_FILE} last)")
    try:
        index = json.loads(index_path.read_text())
    except json.JSONDecodeError as exc:
        raise DriveSegmentError(f"{index_path}: invalid JSON ({exc})") from None
    if not isinstance(index, dict) or "k" not in index or ("frames" not in index and "frames_file" not in index):
        raise DriveSegmentError(f"{index_path}: expected an object with 'k' and 'frames' (or 'frames_file')")
    index.setdefault("ignore_index", IGNORE_INDEX)
    if int(index["k"]) < 1:
        raise DriveSegmentError(f"{index_path}: k must be >= 1, got {index['k']}")
    return index


def open_frame_index(root: PathLike) -> FrameIndex:
    """The frame records of a complete pseudo-label dataset, streamed (format 2) or inline (format 1).

    Only byte offsets are kept in memory (format 2); file existence is checked when a frame is read.

    Raises:
        DriveSegmentError: missing directory / ``index.json`` (no complete run), malformed JSON,
            missing keys, an index file that does not hold ``n_frames`` lines, or no frames.
    """
    root = Path(root)
    index = _read_index_json(root)
    index_path = root / INDEX_FILE
    if "frames" in index:
        frames = index.pop("frames")
        if not frames:
            raise DriveSegmentError(f"{index_path}: no frames")
        return FrameIndex(root, index, frames=list(frames))
    path = root / index["frames_file"]
    if not path.is_file():
        raise DriveSegmentError(f"{index_path}: frame index {index['frames_file']} not found (incomplete run?)")
    offsets = np.fromiter((off for off, _ in read_jsonl(path, with_offsets=True)), dtype=np.int64)
    if offsets.size == 0:
        raise DriveSegmentError(f"{index_path}: no frames")
    if "n_frames" in index and int(index["n_frames"]) != offsets.size:
        raise DriveSegmentError(f"{path}: {offsets.size} frames but {INDEX_FILE} says {index['n_frames']} (damaged run)")
    return FrameIndex(root, index, path=path, offsets=offsets)


def _check_frame(root: Path, fr: dict, where: Path) -> None:
    for key in ("name", "label", "segments"):
        if key not in fr:
            raise DriveSegmentError(f"{where}: frame {fr.get('name', '?')!r} lacks {key!r}")
    if not fr.get("image") and not fr.get("image_ref"):
        raise DriveSegmentError(f"{where}: frame {fr['name']!r} has neither 'image' nor 'image_ref'")
    for key in ("image", "label", "segments"):
        if fr.get(key) and not (root / fr[key]).is_file():
            raise DriveSegmentError(f"{where}: frame {fr['name']!r}: {fr[key]} not found")


def load_pseudo_label_index(root: PathLike, check_files: bool = True) -> dict:
    """Read and validate the index of a complete pseudo-label directory, frames as a list.

    Convenient for small sets; training streams with :func:`open_frame_index` instead.

    Returns:
        ``index.json`` (``k``, ``ignore_index`` (default 255), ...) with ``frames`` = the list of
        frame records; with ``check_files`` every frame's image / label / segments file is
        checked to exist (an image may instead be referenced by ``image_ref``).

    Raises:
        DriveSegmentError: as :func:`open_frame_index`, or missing keys / files.
    """
    fi = open_frame_index(root)
    frames = list(fi)
    if check_files:
        for fr in frames:
            _check_frame(fi.root, fr, fi.root / INDEX_FILE)
    return {**fi.meta, "frames": frames}


# --------------------------------------------------------------------------------------------
# reading frames
# --------------------------------------------------------------------------------------------
ImageLoader = Callable[[dict], np.ndarray]


def decode_image_bytes(data: bytes, what: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB of encoded image bytes (JPEG / PNG ...).

    Raises:
        DriveSegmentError: empty, truncated or undecodable bytes.
    """
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    if bgr is None:
        raise DriveSegmentError(f"cannot decode image {what} (truncated or damaged file?)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_image(root: PathLike, frame: dict, image_loader: Optional[ImageLoader] = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB image of one frame record.

    ``frame["image"]`` (a file under ``root``: original compressed bytes or a PNG copy) is
    decoded; otherwise ``frame["image_ref"]`` (``{"bag", "topic", "stamp_ns"}``) is passed to
    ``image_loader`` (the offline package provides one that reads bags:
    ``drive_segment_training.datasets.BagImageLoader``).

    Raises:
        DriveSegmentError: unreadable / damaged file, or a referenced image without a loader.
    """
    root = Path(root)
    if frame.get("image"):
        path = root / frame["image"]
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise DriveSegmentError(f"cannot read image {path}: {exc}") from None
        return decode_image_bytes(data, str(path))
    ref = frame.get("image_ref")
    if not ref:
        raise DriveSegmentError(f"frame {frame.get('name', '?')!r} has neither 'image' nor 'image_ref'")
    if image_loader is None:
        raise DriveSegmentError(
            f"frame {frame.get('name', '?')!r}: the image is referenced from bag {ref.get('bag')!r} "
            f"({ref.get('topic')} @ {ref.get('stamp_ns')} ns); pass an image_loader that reads bags")
    return image_loader(frame)


def read_frame(root: PathLike, frame: dict, image_loader: Optional[ImageLoader] = None) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Load one frame's (image (H,W,3) uint8 RGB, label (H,W) uint8, segments (H,W) int32).

    Args:
        root: the dataset directory.
        frame: its index record (``image`` or ``image_ref``, ``label``, ``segments`` relative paths).
        image_loader: reads ``image_ref`` images (see :func:`read_image`).

    Raises:
        DriveSegmentError: unreadable / damaged files or mismatched sizes.
    """
    root = Path(root)
    img = read_image(root, frame, image_loader)
    label = cv2.imread(str(root / frame["label"]), cv2.IMREAD_UNCHANGED)
    if label is None or label.ndim != 2:
        raise DriveSegmentError(f"cannot read single-channel label {root / frame['label']}")
    label = label.astype(np.uint8, copy=False)
    segments = read_segments(root / frame["segments"])
    if label.shape != img.shape[:2] or segments.shape != img.shape[:2]:
        raise DriveSegmentError(
            f"frame {frame['name']!r}: image {img.shape[:2]}, label {label.shape}, segments {segments.shape} differ"
        )
    return img, label, segments


def read_labeler_files(root: PathLike) -> Tuple[Dict[str, Any], np.ndarray]:
    """``(settings mapping, centroids (k, C) float32)`` of a finished offline run.

    Format 2: the ``settings`` and ``centroids`` named by ``index.json`` (the completed run, even if
    a later failed run already replaced the top-level copies); otherwise (the node's output, or no
    ``index.json``) ``pseudo_label_config.yaml`` and ``centroids.npy``.

    Raises:
        DriveSegmentError: either file is missing or the YAML is not a mapping.
    """
    root = Path(root)
    index_path = root / INDEX_FILE
    if index_path.is_file():  # format 2: the settings and centroids of the run index.json marks complete
        try:
            index = json.loads(index_path.read_text())
        except json.JSONDecodeError as exc:
            raise DriveSegmentError(f"{index_path}: invalid JSON ({exc})") from None
        if isinstance(index, dict) and isinstance(index.get("settings"), dict) and index.get("centroids"):
            cen = root / index["centroids"]
            if not cen.is_file():
                raise DriveSegmentError(f"{index_path}: centroids {index['centroids']} not found")
            return dict(index["settings"]), np.load(cen).astype(np.float32, copy=False)
    cfg_path, cen_path = root / CONFIG_FILE, root / CENTROIDS_FILE
    if not cfg_path.is_file() or not cen_path.is_file():
        raise DriveSegmentError(f"{root} holds no pseudo-label model (need {CONFIG_FILE} and {CENTROIDS_FILE})")
    data = yaml.safe_load(cfg_path.read_text()) or {}
    if not isinstance(data, dict):
        raise DriveSegmentError(f"{cfg_path}: expected a mapping, got {type(data).__name__}")
    return data, np.load(cen_path).astype(np.float32, copy=False)
