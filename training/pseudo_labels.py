"""Pseudo-classes from LiDAR segments and image features (Drive&Segment, stage 4), at drive scale.

Drive&Segment (Vobecky et al., ECCV 2022, Sec. 3.2 "Pseudo-labels"; IJCV 2025, Sec. 3.3): a
self-supervised backbone (DINO ViT-S/16 in the released model) gives a dense feature map; the
features are averaged over each projected LiDAR segment's mask; k-means over all segments of all
drives gives ``k`` pseudo-classes (about 30 in the paper); each image gets a *partial* label map
(segment pixels = the segment's cluster id, everything else = ignore 255) that the teacher is
trained on.

Pipeline of :func:`run_pseudo_labelling` (CLI ``drive-segment pseudo-label``), in shards (one
shard = one bag, or a bag and an image-stamp range; the same functions run shards on Ray)::

    pass 1, per shard (process_shard): bag -> DriveReader (background thread, bounded queue)
        -> PseudoLabeler.segment_features_batch (segment maps; batched backbone forward, bf16 on CUDA;
           segment pooling) -> segments/, features/, images/ + one fsynced line in frames/<shard>.jsonl
    fit_centroids: every frame's cached features streamed once through a bounded reservoir sample
        -> kmeans.fit_pseudo_classes
    pass 2, per shard (label_shard): features + segment map -> nearest centroid -> runs/<key>/labels/
    finalize_run: runs/<key>/index.jsonl, centroids, config, and index.json LAST (the completion marker)

Memory does not grow with the number of frames: frames are processed one batch at a time, the
k-means sample is bounded (``kmeans_sample`` rows), indexes are streamed. A crash (or a full
disk: ``OSError``, one line from the CLI) loses at most the batch in flight: the rerun skips every
frame recorded in its shard's ``frames/<shard>.jsonl`` whose files still match their recorded
CRC-32 (damaged entries are logged and recomputed) and writes byte-identical outputs.

The per-frame labeller is the core :mod:`drive_segment_ros.pseudo_labeling` (shared with the ROS
``pseudo_label_node``); the files follow :mod:`drive_segment_ros.pseudo_label_store`.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import queue
import re
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from tqdm import tqdm

from drive_segment_ros import pseudo_label_store as store
from drive_segment_ros.models.backbones import build_backbone
from drive_segment_ros.pseudo_labeling import (
    PseudoLabelConfig,
    PseudoLabeler,
    assign_pseudo_classes,
    l2_normalize,
    partial_label_map,
    preview_image,
)
from drive_segment_ros.types import IGNORE_INDEX, DriveFrame, DriveSegmentError
from drive_segment_training.datasets import BagImageLoader
from drive_segment_training.drives import DriveReader, add_bag_reading_args, reader_options_from_args
from drive_segment_training.kmeans import ReservoirSample, fit_pseudo_classes

LOG = logging.getLogger(__name__)

__all__ = [
    "FEATURE_CACHE_VERSION", "DEFAULT_CONFIG_PATH", "ShardResult", "LabelResult", "resolve_config", "prepare_run",
    "config_from_args", "frame_reading_from_args", "shard_id_for",
    "default_frame_name", "bag_shard_frames", "feature_cache_key", "prefetched", "process_shard", "fit_centroids",
    "run_key", "label_shard", "finalize_run", "run_pseudo_labelling", "add_cli",
]

#: Bumped whenever the cached per-frame features would change meaning.
FEATURE_CACHE_VERSION = 2
DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent.parent / "config" / "pseudo_labels.yaml"
FRAMES_DIR = "frames"
RUNS_DIR = "runs"
_IMAGE_EXT = {"jpeg": ".jpg", "jpg": ".jpg", "png": ".png"}


# --------------------------------------------------------------------------------------------
# settings, names, shards
# --------------------------------------------------------------------------------------------
def resolve_config(config: Union[None, str, Path, Mapping[str, Any], PseudoLabelConfig] = None,
                   **overrides: Any) -> PseudoLabelConfig:
    """A :class:`PseudoLabelConfig` from a YAML path, mapping, config or ``None`` (defaults), with the
    non-``None`` ``overrides`` (``k``, ``backbone``, ``seed`` ...) applied. Raises DriveSegmentError."""
    if isinstance(config, PseudoLabelConfig):
        cfg = PseudoLabelConfig.from_dict(config.to_dict())
    elif isinstance(config, (str, Path)):
        cfg = PseudoLabelConfig.from_yaml(config)
    else:
        cfg = PseudoLabelConfig.from_dict(config)
    return PseudoLabelConfig.from_dict({**cfg.to_dict(), **{a: v for a, v in overrides.items() if v is not None}})


def prepare_run(bags: Sequence[Union[str, Path]], config: Union[None, str, Path, Mapping[str, Any], PseudoLabelConfig],
                *, k: Optional[int] = None, backbone: Optional[str] = None, backbone_weights: Optional[str] = None,
                seed: Optional[int] = None, previews: bool = True, backbone_module=None) -> Tuple[PseudoLabelConfig, List[Path]]:
    """The checked settings and bag paths of a run (the one-process and the Ray run share this).

    :func:`resolve_config` with the overrides; ``previews=False`` sets ``preview_every`` /
    ``preview_first`` to 0; a given ``backbone_module`` whose ``name`` differs from
    ``config.backbone`` replaces it (logged).

    Returns:
        ``(config, bags as Paths)``.

    Raises:
        DriveSegmentError: no bags, a missing bag, two bags with the same directory name (their
        frame names would collide), a bad config.
    """
    cfg = resolve_config(config, k=k, backbone=backbone, backbone_weights=backbone_weights, seed=seed)
    if not previews:
        cfg.preview_every = cfg.preview_first = 0
    if not bags:
        raise DriveSegmentError("no bags given")
    paths = [Path(b) for b in bags]
    for b in paths:
        if not b.exists():
            raise DriveSegmentError(f"bag {b} not found")
    if len({shard_id_for(b) for b in paths}) != len(paths):
        raise DriveSegmentError("two bags have the same directory name; frame names would collide")
    if backbone_module is not None:
        name = getattr(backbone_module, "name", cfg.backbone)
        if name != cfg.backbone:
            LOG.info("using the given backbone module %r (config said %r)", name, cfg.backbone)
            cfg.backbone = name
    return cfg, paths


def config_from_args(args: argparse.Namespace) -> PseudoLabelConfig:
    """The settings of ``drive-segment pseudo-label`` (with or without ``--ray``): ``--config`` (default
    ``config/pseudo_labels.yaml`` when present) with the ``--batch-size``, ``--kmeans-sample``,
    ``--image-storage`` and ``--preview-every`` overrides (``-k``, ``--backbone``, ``--seed`` are
    applied by the run). Raises DriveSegmentError on a bad config."""
    config = getattr(args, "config", None)
    if config is None and DEFAULT_CONFIG_PATH.is_file():
        config = DEFAULT_CONFIG_PATH
    overrides = {name: getattr(args, name, None) for name in ("batch_size", "kmeans_sample", "image_storage", "preview_every")}
    return resolve_config(config, **overrides)


def frame_reading_from_args(args: argparse.Namespace, config: PseudoLabelConfig) -> Dict[str, Any]:
    """The keyword arguments of :func:`bag_shard_frames` from the bag-reading options
    (``drives.add_bag_reading_args``): ``image_topics`` (``--image-topic``, else ``config.image_topics``)
    and ``reader_options`` (``--camera-info-topic``, ``--lidar-topic``, ``--calibration``,
    ``--max-dt-ms``, ``--ego-motion``). Raises DriveSegmentError on inconsistent topics."""
    return {"image_topics": getattr(args, "image_topic", None) or config.image_topics,
            "reader_options": reader_options_from_args(args)}


def shard_id_for(bag: Union[str, Path], start_ns: Optional[int] = None, end_ns: Optional[int] = None) -> str:
    """The shard id of a bag (its directory name) or of a bag + image-stamp range ``[start_ns, end_ns)``."""
    sid = store.safe_name(Path(bag).name)
    if start_ns is not None or end_ns is not None:
        sid += f"__{'' if start_ns is None else int(start_ns)}-{'' if end_ns is None else int(end_ns)}"
    return sid


def default_frame_name(source: Union[str, Path], frame: DriveFrame) -> str:
    """``safe_name(<bag directory name>__<image topic>_<index:06d>)`` (the node uses the same naming)."""
    return store.safe_name(f"{Path(source).name}__{frame.name}")


def bag_shard_frames(bag: Union[str, Path], start_ns: Optional[int] = None, end_ns: Optional[int] = None,
                     image_topics: Optional[Sequence[str]] = None,
                     reader_options: Optional[Mapping[str, Any]] = None) -> Iterator[DriveFrame]:
    """The frames of ``bag`` (``DriveReader``) whose image stamp lies in ``[start_ns, end_ns)``.

    Frame indexes (and so names) count over the whole bag, so time-range shards of one bag never
    share a frame name. ``reader_options``: further ``DriveReader`` arguments (``camera_info_topics``,
    ``calibration``, ``lidar_topic``, ``max_dt_ms``, ``ego_motion``).
    """
    for frame in DriveReader(bag, image_topics=list(image_topics) if image_topics else None, progress=False,
                             **dict(reader_options or {})):
        t = int(frame.image_stamp_ns)
        if (start_ns is None or t >= start_ns) and (end_ns is None or t < end_ns):
            yield frame


def feature_cache_key(config: PseudoLabelConfig, backbone) -> str:
    """Hash of everything that changes the cached per-frame segments and features
    (backbone + weights, image size, window, bf16 on CUDA, proposal and projection settings;
    not the batch size, which does not change them)."""
    weights = config.backbone_weights
    wstat = None
    if weights and Path(weights).is_file():
        st = Path(weights).stat()
        wstat = [str(Path(weights).resolve()), st.st_size, int(st.st_mtime)]
    try:
        cuda = next(backbone.parameters()).device.type == "cuda"
    except (AttributeError, StopIteration, TypeError):
        cuda = False
    payload = {
        "version": FEATURE_CACHE_VERSION,
        "backbone": config.backbone,
        "weights": wstat or weights or getattr(backbone, "weight_source", None),
        "max_side": config.max_side,
        "window": config.window,
        "bf16_cuda": bool(config.bf16 and cuda),
        "image_storage": config.image_storage,
        "proposals": config.proposal_config().to_dict(),
        "projection": config.projection_config().to_dict(),
    }
    return hashlib.sha1(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def prefetched(iterable: Iterable[Any], depth: int) -> Iterator[Any]:
    """Iterate ``iterable`` in a background thread, at most ``depth`` items ahead (bounded queue).

    Overlaps bag reading and decoding with feature extraction (numpy, OpenCV, sqlite and torch
    release the GIL). Exceptions of the producer are raised in the consumer; leaving the loop
    early stops the producer. ``depth <= 0``: plain iteration.
    """
    if depth <= 0:
        yield from iterable
        return
    q: "queue.Queue[Tuple[str, Any]]" = queue.Queue(maxsize=int(depth))
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        it = iter(iterable)
        try:
            for item in it:
                if not put(("item", item)):
                    break
            else:
                put(("end", None))
        except BaseException as exc:  # forwarded to the consumer
            put(("error", exc))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name="pseudo-label-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = q.get()
            if kind == "item":
                yield value
            elif kind == "end":
                return
            else:
                raise value
    finally:
        stop.set()
        thread.join(timeout=10)


# --------------------------------------------------------------------------------------------
# pass 1: one shard -> segment maps, features, images, frames/<shard>.jsonl
# --------------------------------------------------------------------------------------------
@dataclass
class ShardResult:
    """What :func:`process_shard` did (picklable: Ray tasks return it)."""

    shard_id: str
    n_frames: int = 0
    n_computed: int = 0
    n_cached: int = 0
    n_damaged: int = 0


def _frames_file(out: Path, shard_id: str) -> Path:
    return out / FRAMES_DIR / f"{shard_id}.jsonl"


def _image_ext(fmt: str) -> str:
    for word in re.split(r"[^a-z0-9]+", str(fmt).lower()):
        if word in _IMAGE_EXT:
            return _IMAGE_EXT[word]
    return ".jpg"


def _verify_record(out: Path, rec: Mapping[str, Any]) -> Optional[str]:
    """``None`` when every file of a pass-1 record has its recorded CRC-32, else what is wrong."""
    for what, crc in rec.get("crc", {}).items():
        path = out / rec[what]
        got = store.file_crc32(path)
        if got is None:
            return f"{rec[what]} missing"
        if got != crc:
            return f"{rec[what]} damaged (CRC-32 {got:08x}, recorded {crc:08x})"
    return None


def _record_from_disk(out: Path, name: str, key: str) -> Optional[Dict[str, Any]]:
    """The pass-1 record of ``name`` rebuilt from its feature cache, if that cache is intact and
    was made with ``key`` (a frame done before the shard's jsonl lost its line)."""
    path = out / "features" / f"{name}.npz"
    if not path.is_file():
        return None
    try:
        z = store.load_npz_checked(path, ("cache_key", "record"))
    except DriveSegmentError as exc:
        LOG.warning("damaged feature cache entry, recomputing: %s", exc)
        return None
    if str(z["cache_key"]) != key:
        return None
    rec = json.loads(str(z["record"]))
    rec["crc"] = {**rec["crc"], "features": store.file_crc32(path)}
    problem = _verify_record(out, rec)
    if problem:
        LOG.warning("frame %s: %s; recomputing", name, problem)
        return None
    return rec



def _write_frame(out: Path, name: str, source: str, frame: DriveFrame, fs, key: str,
                 cfg: PseudoLabelConfig) -> Dict[str, Any]:
    """Write one frame's pass-1 files atomically; returns its jsonl record (files' CRC-32 included)."""
    crc: Dict[str, int] = {}
    image = None
    data = frame.extra.get("image_bytes") if isinstance(getattr(frame, "extra", None), dict) else None
    if cfg.image_storage == "auto" and data:
        image = f"images/{name}{_image_ext(frame.extra.get('image_format', 'jpeg'))}"
        store.atomic_write_bytes(out / image, bytes(data))  # the original compressed bytes, not re-encoded
    elif cfg.image_storage == "png":
        image = f"images/{name}.png"
        store.write_png(out / image, np.asarray(frame.image))
    if image:
        crc["image"] = store.file_crc32(out / image)
    segments = store.write_segment_map(out, name, fs.segment_map)
    crc["segments"] = store.file_crc32(out / segments)
    H, W = np.asarray(frame.image).shape[:2]
    rec: Dict[str, Any] = {
        "name": name, "bag": str(source), "image_topic": frame.image_topic, "stamp_ns": int(frame.image_stamp_ns),
        "lidar_stamp_ns": int(frame.lidar_stamp_ns), "height": int(H), "width": int(W), "image": image,
        "image_ref": {"bag": str(Path(source).resolve()), "topic": frame.image_topic, "stamp_ns": int(frame.image_stamp_ns)},
        "segments": segments, "features": f"features/{name}.npz", "cache_key": key, "crc": crc,
    }
    store.write_npz(out / rec["features"], compress=True, segment_ids=fs.segment_ids, feats=fs.feats,
                    pixel_counts=fs.pixel_counts, is_ground=fs.is_ground, cache_key=np.array(key),
                    record=np.array(json.dumps(rec)))
    rec["crc"] = {**crc, "features": store.file_crc32(out / rec["features"])}
    return rec


def process_shard(
    frames: Iterable[DriveFrame],
    out_dir: Union[str, Path],
    shard_id: str,
    *,
    source: Union[str, Path],
    config: Optional[PseudoLabelConfig] = None,
    backbone_module=None,
    labeler: Optional[PseudoLabeler] = None,
    max_frames: Optional[int] = None,
    name_fn: Optional[Callable[[Union[str, Path], DriveFrame], str]] = None,
    progress: bool = True,
) -> ShardResult:
    """Pass 1 of one shard: segment maps + pooled features of every frame, resumable, O(1) memory.

    Frames are read ``config.prefetch`` ahead by a background thread and extracted
    ``config.batch_size`` at a time (:meth:`PseudoLabeler.segment_features_batch`). Per frame:
    ``segments/<name>.png``, ``features/<name>.npz``, ``images/<name>.<ext>`` (original bytes of a
    CompressedImage, see ``PseudoLabelConfig.image_storage``), each atomic, then one line in
    ``frames/<shard_id>.jsonl`` (written, flushed, fsynced; the frame's files' CRC-32 inside).

    Resuming: the shard's existing lines are read in step with ``frames``; a frame whose line
    matches (name, cache key) and whose files still have their CRC-32 is skipped. From the first
    mismatch on the rest of the old file is dropped, and frames whose intact feature cache was
    made with the same settings are re-indexed without recomputation; damaged entries are logged
    and recomputed. Outputs are byte-identical to an uninterrupted run.

    Args:
        frames: the shard's DriveFrames (e.g. :func:`bag_shard_frames`).
        out_dir: the pseudo-label directory (shared by all shards).
        shard_id: unique id of the shard (file name of its jsonl), e.g. :func:`shard_id_for`.
        source: the bag the frames come from (recorded; images are referenced from it).
        config: settings (``None`` = defaults); backbone_module / labeler: the model (a labeler
            built from ``backbone_module`` and ``config`` when not given; the backbone is built
            from the config when neither is given).
        max_frames: stop after this many frames of the shard.
        name_fn: ``(source, frame) -> name`` (default :func:`default_frame_name`).
        progress: tqdm progress bar.

    Raises:
        DriveSegmentError: bad inputs; OSError: file-system errors (full disk ...), after which
            a rerun resumes.
    """
    cfg = config if config is not None else PseudoLabelConfig()
    if labeler is None:
        if backbone_module is None:
            backbone_module = build_backbone(cfg.backbone, weights=cfg.backbone_weights)
        labeler = PseudoLabeler(backbone_module, None, cfg)
    name_fn = name_fn or default_frame_name
    out = Path(out_dir)
    store.make_dirs(out, (FRAMES_DIR, "segments", "features", "images"))
    key = feature_cache_key(cfg, labeler.backbone)
    try:
        device = next(labeler.backbone.parameters()).device.type
    except (AttributeError, StopIteration, TypeError):
        device = "cpu"
    batch_size = cfg.batch_size or (8 if device == "cuda" else 1)
    result = ShardResult(shard_id)
    path = _frames_file(out, shard_id)
    old = store.read_jsonl(path, with_offsets=True) if path.is_file() else iter(())
    appender = store.JsonlAppender(path)
    diverged = False
    pending: List[Tuple[str, DriveFrame]] = []
    bar = tqdm(total=max_frames, desc=f"pseudo-label {shard_id}", unit="frame", disable=not progress)

    def flush() -> None:
        if not pending:
            return
        fss = labeler.segment_features_batch([f for _, f in pending])
        for (name, frame), fs in zip(pending, fss):
            appender.append(_write_frame(out, name, str(source), frame, fs, key, cfg))
            result.n_computed += 1
        pending.clear()

    def diverge(offset: Optional[int]) -> None:
        nonlocal diverged, old
        diverged = True
        if hasattr(old, "close"):
            old.close()
        if offset is not None:
            appender.truncate_to(offset)

    try:
        for frame in prefetched(frames, cfg.prefetch):
            if max_frames is not None and result.n_frames >= max_frames:
                break
            name = name_fn(source, frame)
            result.n_frames += 1
            bar.update(1)
            damaged = False
            if not diverged:
                prev = next(old, None)
                if prev is not None:
                    offset, rec = prev
                    if rec.get("name") == name and rec.get("cache_key") == key:
                        problem = _verify_record(out, rec)
                        if problem is None:
                            result.n_cached += 1
                            continue
                        LOG.warning("frame %s: %s; recomputing", name, problem)
                        result.n_damaged += 1
                        damaged = True
                    elif rec.get("name") == name:
                        LOG.info("shard %s: features were made with another configuration; recomputing", shard_id)
                    diverge(offset)
                else:
                    diverge(None)
            rec = None if damaged else _record_from_disk(out, name, key)
            if rec is not None:
                flush()
                appender.append(rec)
                result.n_cached += 1
            else:
                pending.append((name, frame))
                if len(pending) >= batch_size:
                    flush()
        flush()
        if not diverged:
            prev = next(old, None)
            diverge(prev[0] if prev is not None else None)  # fewer frames than recorded: drop the rest
    finally:
        bar.close()
        if hasattr(old, "close"):
            old.close()
        appender.close()
    LOG.info("shard %s: %d frames, %d computed, %d from cache (%d damaged entries recomputed)", shard_id,
             result.n_frames, result.n_computed, result.n_cached, result.n_damaged)
    return result


def _iter_shard_features(out: Path, shard_ids: Sequence[str]) -> Iterator[Tuple[Dict[str, Any], Dict[str, np.ndarray]]]:
    for sid in shard_ids:
        path = _frames_file(out, sid)
        if not path.is_file():
            raise DriveSegmentError(f"shard {sid!r} has no index {path} (run process_shard first)")
        for rec in store.read_jsonl(path):
            try:
                z = store.load_npz_checked(out / rec["features"], ("segment_ids", "feats", "pixel_counts"))
            except DriveSegmentError as exc:
                raise DriveSegmentError(f"{exc}; rerun pseudo-label to recompute it") from None
            yield rec, z


# --------------------------------------------------------------------------------------------
# k-means on a bounded sample
# --------------------------------------------------------------------------------------------
def fit_centroids(out_dir: Union[str, Path], config: PseudoLabelConfig, shard_ids: Sequence[str]) -> Tuple[np.ndarray, int]:
    """k-means centroids from the cached features of ``shard_ids`` (in that order), in bounded memory.

    Every segment with at least ``min_segment_pixels`` pixels (L2-normalised when
    ``normalize_features``) is offered to a :class:`~drive_segment_training.kmeans.ReservoirSample`
    of ``kmeans_sample`` rows (seed ``config.seed``); k-means is fitted on the sample
    (:func:`~drive_segment_training.kmeans.fit_pseudo_classes`).

    Returns:
        ``(centroids (k, C) float32, number of segments clustered)``.

    Raises:
        DriveSegmentError: no segments, too few for k, damaged caches.
    """
    out = Path(out_dir)
    sample = ReservoirSample(config.kmeans_sample, seed=config.seed)
    for _, z in tqdm(_iter_shard_features(out, shard_ids), desc="pseudo-label: k-means sample", unit="frame", leave=False):
        X = z["feats"][z["pixel_counts"] >= config.min_segment_pixels]
        if config.normalize_features:
            X = l2_normalize(X)
        sample.add(X)
    X = sample.sample()
    if X.shape[0] == 0:
        X = np.zeros((0, 1), np.float32)
    if X.shape[0] < sample.n_seen:
        LOG.info("k-means on a reservoir sample of %d of %d segments", X.shape[0], sample.n_seen)
    centroids = fit_pseudo_classes(X, config.k, config.seed, config.n_init, config.max_iter,
                                   config.minibatch_above)
    return centroids, int(sample.n_seen)


# --------------------------------------------------------------------------------------------
# pass 2: label maps of one clustering
# --------------------------------------------------------------------------------------------
def run_key(config: PseudoLabelConfig, feature_key: str, shard_ids: Sequence[str]) -> str:
    """Directory name ``runs/<key>`` of one clustering: hash of the feature key, the k-means
    settings and the shards (another k never writes into an existing run's files)."""
    payload = {"features": feature_key, "shards": list(shard_ids),
               **{a: getattr(config, a) for a in ("k", "seed", "n_init", "max_iter", "minibatch_above",
                                                    "normalize_features", "min_segment_pixels", "kmeans_sample")}}
    return "k%d-%s" % (config.k, hashlib.sha1(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12])


@dataclass
class LabelResult:
    """What :func:`label_shard` wrote (picklable)."""

    shard_id: str
    n_frames: int = 0
    n_segments: int = 0
    cluster_pixel_counts: List[int] = field(default_factory=list)
    coverage_sum: float = 0.0


def label_shard(out_dir: Union[str, Path], shard_id: str, config: PseudoLabelConfig, centroids: np.ndarray,
                run_dir: Union[str, Path], image_loader=None, progress: bool = True) -> LabelResult:
    """Pass 2 of one shard: every segment -> nearest centroid -> ``<run_dir>/labels/<name>.png``.

    Streams the shard's ``frames/<shard_id>.jsonl``; writes the training records to
    ``<run_dir>/frames/<shard_id>.jsonl`` (temporary file, renamed when the shard is done) and
    preview overlays (``previews/<name>.jpg``) for the first ``preview_first`` frames and every
    ``preview_every``-th. No model needed (CPU). ``image_loader`` reads images referenced from
    bags for the previews (default: ``datasets.BagImageLoader``).

    Raises:
        DriveSegmentError: missing / damaged pass-1 files; OSError: file-system errors.
    """
    out, run = Path(out_dir), Path(run_dir)
    rel_run = run.relative_to(out).as_posix()
    C = np.asarray(centroids, np.float32)
    counts = np.zeros(256, np.int64)
    res = LabelResult(shard_id)
    own_loader = image_loader is None and bool(config.preview_every or config.preview_first)
    if own_loader:
        image_loader = BagImageLoader()
    target = run / FRAMES_DIR / f"{shard_id}.jsonl"
    tmp = target.with_name(f".{target.name}.tmp")
    if tmp.exists():
        tmp.unlink()
    with store.JsonlAppender(tmp) as lines:
        for pos, (rec, z) in enumerate(tqdm(_iter_shard_features(out, [shard_id]), desc=f"pseudo-label: labels {shard_id}",
                                            unit="frame", leave=False, disable=not progress)):
            keep = z["pixel_counts"] >= config.min_segment_pixels
            X = z["feats"][keep]
            if config.normalize_features:
                X = l2_normalize(X)
            ids = z["segment_ids"][keep]
            seg = store.read_segments(out / rec["segments"])
            label = partial_label_map(seg, ids, assign_pseudo_classes(X, C))
            label_path = f"{rel_run}/labels/{rec['name']}.png"
            store.write_png(out / label_path, label)
            hist = np.bincount(label.reshape(-1), minlength=256)
            counts += hist
            coverage = float(1.0 - hist[IGNORE_INDEX] / label.size)
            lines.append({
                "name": rec["name"], "image": rec["image"], "image_ref": rec["image_ref"], "label": label_path,
                "segments": rec["segments"], "bag": rec["bag"], "image_topic": rec["image_topic"],
                "stamp_ns": rec["stamp_ns"], "lidar_stamp_ns": rec["lidar_stamp_ns"],
                "n_segments": int(ids.size), "coverage": coverage,
            })
            res.n_frames += 1
            res.n_segments += int(ids.size)
            res.coverage_sum += coverage
            if pos < config.preview_first or (config.preview_every and pos % config.preview_every == 0):
                rgb = store.read_image(out, rec, image_loader)
                store.write_jpeg(out / "previews" / f"{rec['name']}.jpg", preview_image(rgb, label, config.k))
    if own_loader:
        image_loader.close()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp.replace(target)
    res.cluster_pixel_counts = counts[: config.k].tolist()
    return res


def finalize_run(out_dir: Union[str, Path], config: PseudoLabelConfig, centroids: np.ndarray, run_dir: Union[str, Path],
                 shard_ids: Sequence[str], results: Sequence[LabelResult], *, n_clustered: int, feature_key: str,
                 backbone_description: str, self_supervised: bool) -> Dict[str, Any]:
    """Write the run's index and settings, and ``index.json`` LAST (the completion marker).

    ``<run_dir>/index.jsonl`` = the shards' records in ``shard_ids`` order (streamed copy);
    ``<run_dir>/centroids.npy``; ``DIR/centroids.npy`` and ``DIR/pseudo_label_config.yaml`` (the
    run's settings: what ``PseudoLabeler.from_dir`` and the node load); then ``DIR/index.json``.
    Other (stale) ``runs/*`` are removed afterwards.

    Returns:
        ``index.json``'s content with ``frames`` = a streaming :class:`~drive_segment_ros.pseudo_label_store.FrameIndex`.
    """
    out, run = Path(out_dir), Path(run_dir)
    rel_run = run.relative_to(out).as_posix()
    index_tmp = run / ".index.jsonl.tmp"
    n_frames = 0
    with open(index_tmp, "wb") as dst:
        for sid in shard_ids:
            with open(run / FRAMES_DIR / f"{sid}.jsonl", "rb") as src:
                for line in src:
                    dst.write(line)
                    n_frames += 1
        dst.flush()
        os.fsync(dst.fileno())
    index_tmp.replace(run / "index.jsonl")
    if n_frames == 0:
        raise DriveSegmentError("no camera/LiDAR frame pairs to label")
    cen = np.asarray(centroids, np.float32)
    store.write_npy(run / store.CENTROIDS_FILE, cen)
    cluster = np.zeros(config.k, np.int64)
    for r in results:
        cluster += np.asarray(r.cluster_pixel_counts, np.int64)
    record = {**config.to_dict(), "backbone_description": backbone_description, "self_supervised": bool(self_supervised),
              "ignore_index": IGNORE_INDEX}
    record["proposals"] = config.proposal_config().to_dict()
    record["projection"] = config.projection_config().to_dict()
    store.write_npy(out / store.CENTROIDS_FILE, cen)
    store.write_yaml(out / store.CONFIG_FILE, record)
    index = {
        "format": store.FORMAT,
        "k": int(config.k),
        "backbone": config.backbone,
        "backbone_description": backbone_description,
        "self_supervised": bool(self_supervised),
        "ignore_index": IGNORE_INDEX,
        "n_clustered_segments": int(n_clustered),
        "cluster_pixel_counts": cluster.tolist(),
        "n_frames": int(n_frames),
        "mean_coverage": float(sum(r.coverage_sum for r in results) / n_frames),
        "run_dir": rel_run,
        "frames_file": f"{rel_run}/index.jsonl",
        "centroids": f"{rel_run}/{store.CENTROIDS_FILE}",
        "shards": list(shard_ids),
        "feature_cache_key": feature_key,
        "settings": record,
    }
    store.write_json(out / store.INDEX_FILE, index)  # LAST: the run is complete
    for stale in sorted((out / RUNS_DIR).iterdir()):
        if stale.is_dir() and stale.resolve() != run.resolve():
            LOG.info("removing the superseded run %s", stale)
            shutil.rmtree(stale, ignore_errors=True)
    fi = store.open_frame_index(out)
    return {**fi.meta, "frames": fi}


# --------------------------------------------------------------------------------------------
# the offline run
# --------------------------------------------------------------------------------------------
def run_pseudo_labelling(
    bags: Sequence[Union[str, Path]],
    out_dir: Union[str, Path],
    k: Optional[int] = None,
    backbone: Optional[str] = None,
    backbone_weights: Optional[str] = None,
    config: Union[None, str, Path, Mapping[str, Any], PseudoLabelConfig] = None,
    max_frames: Optional[int] = None,
    seed: Optional[int] = None,
    previews: bool = True,
    backbone_module=None,
    frame_source: Optional[Callable[[Path], Iterable[DriveFrame]]] = None,
    progress: bool = True,
) -> Dict[str, Any]:
    """Offline pseudo-labelling of drives (``drive-segment pseudo-label``): one shard per bag.

    :func:`process_shard` per bag (resumable), :func:`fit_centroids`, :func:`label_shard` per
    bag into ``runs/<run_key>/``, :func:`finalize_run` (``index.json`` last). Explicit arguments
    override ``config`` (a YAML path, mapping or :class:`PseudoLabelConfig`; ``None`` = defaults).

    Args:
        bags: ROS 2 bag directories (read with ``drives.DriveReader``).
        out_dir: output directory (layout: :mod:`drive_segment_ros.pseudo_label_store`).
        k, backbone, backbone_weights, seed: override the config.
        max_frames: stop after this many frames in total (over all bags).
        previews: write preview overlays for a sample of frames (``preview_first`` / ``preview_every``).
        backbone_module: an already built backbone (tests / the demo), else ``build_backbone``.
        frame_source: ``bag -> iterable of DriveFrame`` (default :func:`bag_shard_frames`; tests).
        progress: progress bars.

    Returns:
        the ``index.json`` content, ``frames`` streamed from the run's ``index.jsonl``.

    Raises:
        DriveSegmentError: no bags / frames, too few segments for k, bad config.
        OSError: file-system errors (the CLI prints one line); a rerun resumes.
    """
    cfg, bags = prepare_run(bags, config, k=k, backbone=backbone, backbone_weights=backbone_weights, seed=seed,
                            previews=previews, backbone_module=backbone_module)
    if max_frames is not None and max_frames < 1:
        raise DriveSegmentError(f"max_frames must be >= 1, got {max_frames}")
    if backbone_module is None:
        backbone_module = build_backbone(cfg.backbone, weights=cfg.backbone_weights)
    labeler = PseudoLabeler(backbone_module, None, cfg)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DriveSegmentError(f"cannot create {out}: {exc}") from exc
    frame_source = frame_source or (lambda bag: bag_shard_frames(bag, image_topics=cfg.image_topics))

    shard_ids: List[str] = []
    total = 0
    for bag in bags:
        if max_frames is not None and total >= max_frames:
            break
        sid = shard_id_for(bag)
        res = process_shard(frame_source(bag), out, sid, source=bag, config=cfg, labeler=labeler,
                            max_frames=None if max_frames is None else max_frames - total, progress=progress)
        total += res.n_frames
        if res.n_frames:
            shard_ids.append(sid)
    if not total:
        raise DriveSegmentError(f"no camera/LiDAR frame pairs in {', '.join(map(str, bags))}")

    key = feature_cache_key(cfg, backbone_module)
    centroids, n_clustered = fit_centroids(out, cfg, shard_ids)
    run = out / RUNS_DIR / run_key(cfg, key, shard_ids)
    results = [label_shard(out, sid, cfg, centroids, run, progress=progress) for sid in shard_ids]
    desc = getattr(backbone_module, "description", cfg.backbone)
    selfsup = bool(getattr(backbone_module, "self_supervised", False))
    index = finalize_run(out, cfg, centroids, run, shard_ids, results, n_clustered=n_clustered, feature_key=key,
                         backbone_description=desc, self_supervised=selfsup)
    used = int((np.asarray(index["cluster_pixel_counts"]) > 0).sum())
    LOG.info("wrote %s: %d frames, %d segments, %d/%d pseudo-classes used, mean coverage %.3f", out, index["n_frames"],
             n_clustered, used, cfg.k, index["mean_coverage"])
    if not selfsup:
        LOG.warning("backbone %s is NOT self-supervised (%s); Drive&Segment uses DINO features", cfg.backbone, desc)
    return index


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------
def _cli(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    reading = frame_reading_from_args(args, cfg)
    index = run_pseudo_labelling(
        args.bags, args.out, k=args.k, backbone=args.backbone, backbone_weights=args.backbone_weights,
        config=cfg, max_frames=args.max_frames, seed=args.seed, previews=not args.no_previews,
        frame_source=lambda bag: bag_shard_frames(bag, **reading),
    )
    print(f"{len(index['frames'])} frames, k={index['k']}, backbone {index['backbone']} "
          f"(self-supervised: {index['self_supervised']}) -> {Path(args.out) / 'index.json'}")
    return 0


def add_cli(sub) -> None:
    """Register ``drive-segment pseudo-label BAG [BAG...] --out DIR ...``."""
    p = sub.add_parser(
        "pseudo-label",
        help="pool backbone features over LiDAR segments, k-means pseudo-classes, partial label PNGs",
        description="Drive&Segment pseudo-labels: per-segment mean backbone features, k-means over all "
                    "segments of all bags (bounded reservoir sample), partial label maps (255 = ignore). "
                    "Resumable after a crash or a full disk (frames/*.jsonl + features/ cache); "
                    "index.json is written last and marks the run complete.",
    )
    p.add_argument("bags", nargs="+", metavar="BAG", help="ROS 2 bag directories")
    p.add_argument("--out", required=True, help="output directory")
    add_bag_reading_args(p)  # --image-topic, --camera-info-topic, --lidar-topic, --calibration, --max-dt-ms, --ego-motion
    p.add_argument("-k", type=int, default=None, help="number of pseudo-classes (config default 30)")
    p.add_argument("--backbone", default=None, help="backbone name (config default mobilenetv2_deepsort)")
    p.add_argument("--backbone-weights", default=None, metavar="FILE", help="local backbone weights file")
    p.add_argument("--config", default=None, help=f"pseudo-label YAML (default {DEFAULT_CONFIG_PATH.name} when present)")
    p.add_argument("--max-frames", type=int, default=None, metavar="N", help="stop after N frames in total")
    p.add_argument("--seed", type=int, default=None, help="k-means seed")
    p.add_argument("--no-previews", action="store_true", help="skip previews/<name>.jpg")
    p.add_argument("--preview-every", type=int, default=None, metavar="N",
                   help="preview overlay for every N-th frame of a bag (config default 100; 0 = first frames only)")
    p.add_argument("--batch-size", type=int, default=None, metavar="B",
                   help="images per backbone forward (default 8 on CUDA, 1 on CPU)")
    p.add_argument("--kmeans-sample", type=int, default=None, metavar="N",
                   help="k-means is fitted on a reservoir sample of at most N segments (config default 100000)")
    p.add_argument("--image-storage", choices=("auto", "reference", "png"), default=None,
                   help="auto: copy CompressedImage bytes, reference raw images in the bag (default); "
                        "png: lossless copy of every image (no bag needed later)")
    p.set_defaults(func=_cli)
