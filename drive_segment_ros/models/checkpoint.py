"""Model checkpoints: ``model.safetensors`` (weights) + ``config.json`` (architecture, metadata).

safetensors (https://huggingface.co/docs/safetensors) stores raw tensors only, so loading a
checkpoint never executes code (unlike pickle). ``config.json`` layout::

    {"format": "drive_segment_ros/segmenter", "format_version": 1,
     "config": SegmenterConfig.to_dict(),
     "extra": {...caller's metadata: training stage, pseudo-class count, ...},
     "backbone_description": "...", "torch_version": "...", "package_version": "...",
     "created_utc": "2026-01-01T00:00:00Z",
     "weights_sha256": "<sha256 of model.safetensors>"}   # verified on load (models/integrity.py)
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import torch

from drive_segment_ros import __version__
from drive_segment_ros.models.integrity import DIGEST_KEY, check_finite, file_sha256, verify_digest
from drive_segment_ros.models.weights import LOG as WEIGHTS_LOG
from drive_segment_ros.models.segmenter import Segmenter, SegmenterConfig, build_segmenter
from drive_segment_ros.types import DriveSegmentError

LOG = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
FORMAT = "drive_segment_ros/segmenter"
FORMAT_VERSION = 1


def save_checkpoint(directory: Union[str, os.PathLike], model: Segmenter, config: SegmenterConfig,
                    extra: Optional[Dict[str, Any]] = None) -> Path:
    """Write ``directory/model.safetensors`` and ``directory/config.json`` (directory created).

    Args:
        directory: output folder (existing files there are overwritten).
        model: the network; its ``state_dict()`` is saved (moved to CPU, contiguous).
        config: the architecture it was built from (``config.mean/std`` should be filled, as
            :func:`~drive_segment_ros.models.segmenter.build_segmenter` does).
        extra: JSON-serialisable metadata, e.g. ``{"stage": "teacher", "n_pseudo_classes": 30}``.

    Returns:
        the directory as a ``Path``.

    Raises:
        DriveSegmentError: ``extra`` not JSON-serialisable, or config/model mismatch.
    """
    from safetensors.torch import save_file  # optional heavy dependency (safetensors files only)

    if not isinstance(config, SegmenterConfig):
        raise DriveSegmentError(f"save_checkpoint expects a SegmenterConfig, got {type(config).__name__}")
    n_out = getattr(model, "n_classes", config.n_classes)
    if n_out != config.n_classes:
        raise DriveSegmentError(f"model has {n_out} classes but config says {config.n_classes}")
    if extra is not None and not isinstance(extra, dict):
        raise DriveSegmentError(f"checkpoint 'extra' must be a dict, got {type(extra).__name__}")
    extra = dict(extra or {})
    backbone = getattr(model, "backbone", None)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": config.to_dict(),
        "extra": extra,
        "backbone_description": getattr(backbone, "description", ""),
        "backbone_self_supervised": bool(getattr(backbone, "self_supervised", False)),
        "torch_version": torch.__version__,
        "package_version": __version__,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    try:
        json.dumps(meta)
    except (TypeError, ValueError) as exc:
        raise DriveSegmentError(f"checkpoint 'extra' metadata must be JSON-serialisable: {exc}") from exc
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    tmp = directory / (WEIGHTS_FILE + ".tmp")
    save_file(state, str(tmp), metadata={"format": FORMAT, "format_version": str(FORMAT_VERSION)})
    os.replace(tmp, directory / WEIGHTS_FILE)  # atomic: a reader never sees half a file
    meta[DIGEST_KEY] = file_sha256(directory / WEIGHTS_FILE)  # verified by load_segmenter (models/integrity.py)
    text = json.dumps(meta, indent=2, sort_keys=False)
    (directory / CONFIG_FILE).write_text(text + "\n", encoding="utf-8")
    LOG.info("saved checkpoint %s (%d tensors, %s, %d classes)", directory, len(state), config.backbone,
             config.n_classes)
    return directory


def read_checkpoint_config(directory: Union[str, os.PathLike]) -> Tuple[SegmenterConfig, Dict[str, Any], Dict[str, Any]]:
    """Read ``config.json`` only (no weights): ``(config, extra, metadata)``.

    Raises:
        DriveSegmentError: missing directory/file, invalid JSON, or invalid config.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise DriveSegmentError(f"checkpoint directory not found: {directory}")
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise DriveSegmentError(f"checkpoint {directory} has no {CONFIG_FILE}")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise DriveSegmentError(f"checkpoint {path} is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict) or "config" not in meta:
        raise DriveSegmentError(f"checkpoint {path} has no 'config' entry")
    if int(meta.get("format_version", FORMAT_VERSION)) > FORMAT_VERSION:
        raise DriveSegmentError(f"checkpoint {path} has format_version {meta['format_version']}, "
                                f"newer than this package understands ({FORMAT_VERSION})")
    config = SegmenterConfig.from_dict(meta["config"])
    extra = meta.get("extra") or {}
    return config, extra, meta


class _DropRandomWeightWarning(logging.Filter):
    """Hide the backbone's 'RANDOM weights' warning while a checkpoint is being loaded."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "RANDOM weights" not in record.getMessage()


def load_segmenter(directory: Union[str, os.PathLike], device: Union[str, torch.device] = "cpu"
                   ) -> Tuple[Segmenter, SegmenterConfig, Dict[str, Any]]:
    """Load a checkpoint written by :func:`save_checkpoint`.

    The architecture is rebuilt from ``config.json`` with ``allow_random=True`` (no backbone
    download) and the full state dict is then loaded with ``strict=True``.

    Args:
        directory: checkpoint folder.
        device: torch device for the model.

    Returns:
        ``(model.eval() on device, config, extra)``.

    Raises:
        DriveSegmentError: missing/corrupt ``config.json`` or ``model.safetensors``, or weights
            that do not match the architecture (names a few offending keys).
        IntegrityError: (a DriveSegmentError) the weights file does not match the sha256 that
            :func:`save_checkpoint` recorded in ``config.json``, or holds NaN / inf weights
            (:mod:`drive_segment_ros.models.integrity`; checkpoints without a digest load with a warning).
    """
    from safetensors.torch import load_file  # optional heavy dependency (safetensors files only)

    config, extra, meta = read_checkpoint_config(directory)
    weights = Path(directory) / WEIGHTS_FILE
    if not weights.is_file():
        raise DriveSegmentError(f"checkpoint {directory} has no {WEIGHTS_FILE}")
    verify_digest(weights, meta.get(DIGEST_KEY), what="checkpoint weights file")  # IntegrityError: one line
    try:
        state = load_file(str(weights), device="cpu")
    except Exception as exc:  # SafetensorError, OSError, ...
        raise DriveSegmentError(f"checkpoint weights {weights} are corrupt or unreadable: {exc}") from exc
    check_finite(state, source=weights)  # NaN / inf weights: IntegrityError, one line
    quiet = _DropRandomWeightWarning()  # the random init is overwritten just below
    WEIGHTS_LOG.addFilter(quiet)  # the "RANDOM weights" warning comes from the weight loading
    try:
        model = build_segmenter(config, allow_random=True)
    finally:
        WEIGHTS_LOG.removeFilter(quiet)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    bad = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or bad:
        raise DriveSegmentError(
            f"checkpoint {weights} does not match its config ({config.backbone}, {config.decoder}, "
            f"{config.n_classes} classes): {len(missing)} missing (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]}), {len(bad)} wrong shape (e.g. {bad[:3]})")
    model.load_state_dict(state, strict=True)
    model.backbone.weight_source = f"checkpoint {weights}"
    model = model.to(device).eval()
    LOG.info("loaded checkpoint %s (%s, %s decoder, %d classes) on %s", directory, config.backbone,
             config.decoder, config.n_classes, device)
    return model, config, extra
