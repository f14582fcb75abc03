"""Model file integrity: a recorded sha256 of the weights, verified on load, and a finite-weights check.

What it guards against: a weights file whose bytes changed after it was written (disk or copy
corruption, a truncated download, a tampered file). safetensors alone cannot notice: 64 KiB of
random bytes in its data region still load, silently giving NaN / huge weights and a different
class for every pixel. Two checks, each raising ONE line (:class:`IntegrityError`):

* **Digest.** The writer records ``sha256`` of the whole weights file -- ``config.json`` key
  ``weights_sha256`` for checkpoints (``model.safetensors``), a ``<file>.sha256`` side file in
  ``sha256sum`` format (``<hex>  <name>``) for exported ``.onnx`` / TensorRT engines -- and the
  loader compares (:func:`verify_digest`). Files without a recorded digest (written before this
  existed) load with a warning.
* **Finite weights.** Every floating-point tensor must be finite (:func:`check_finite`;
  :func:`check_onnx_finite` for ONNX initializers), so a file that was *written* with NaN
  weights (a diverged training run) is refused as well.

Core module: hashlib / numpy only at import time; torch and onnx are imported inside the
functions that need them.
"""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Tuple, Union

import numpy as np

from drive_segment_ros.types import DriveSegmentError, error_line

LOG = logging.getLogger(__name__)

__all__ = [
    "IntegrityError", "file_sha256", "digest_path", "write_digest", "read_digest", "verify_digest",
    "check_finite", "check_onnx_finite", "DIGEST_KEY",
]

#: ``config.json`` key of a checkpoint's weights digest
DIGEST_KEY = "weights_sha256"
_CHUNK = 1 << 20

PathLike = Union[str, os.PathLike]


class IntegrityError(DriveSegmentError):
    """A model file does not match its recorded sha256, or holds non-finite weights (one line)."""


def file_sha256(path: PathLike) -> str:
    """Lower-case hex sha256 of the file's bytes (read in 1 MiB chunks).

    Raises:
        DriveSegmentError: the file cannot be read.
    """
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(_CHUNK), b""):
                h.update(chunk)
    except OSError as exc:
        raise DriveSegmentError(f"cannot read {path}: {exc.strerror or exc}") from None
    return h.hexdigest()


def digest_path(path: PathLike) -> Path:
    """The side file ``<path>.sha256`` that records ``path``'s digest."""
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def write_digest(path: PathLike) -> str:
    """Compute ``path``'s sha256 and write it to ``<path>.sha256`` (``sha256sum`` format); returns the hex."""
    digest = file_sha256(path)
    side = digest_path(path)
    tmp = side.with_name(side.name + ".tmp")
    tmp.write_text(f"{digest}  {Path(path).name}\n", encoding="utf-8")
    os.replace(tmp, side)
    return digest


def read_digest(path: PathLike) -> Optional[str]:
    """The digest recorded in ``<path>.sha256`` (``None`` when there is no side file).

    Raises:
        IntegrityError: the side file exists but does not start with 64 hex digits.
    """
    side = digest_path(path)
    if not side.is_file():
        return None
    text = side.read_text(encoding="utf-8", errors="replace").strip()
    digest = text.split()[0].lower() if text else ""
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise IntegrityError(f"{side}: not a sha256 digest file")
    return digest


def verify_digest(path: PathLike, expected: Optional[str] = None, what: str = "weights file") -> Optional[str]:
    """Compare ``path``'s sha256 with ``expected`` (default: its ``.sha256`` side file).

    Returns:
        the digest when verified, ``None`` when nothing was recorded (a warning is logged).

    Raises:
        IntegrityError: mismatch (``<path>: <what> corrupt or unreadable: sha256 mismatch (file
        abc..., recorded def...); it changed after it was written, re-export or re-download it``).
    """
    if expected is None:
        expected = read_digest(path)
    if not expected:
        LOG.warning("%s: no recorded sha256 (written before integrity checks); integrity not verified", path)
        return None
    actual = file_sha256(path)
    if actual != str(expected).lower():
        raise IntegrityError(f"{path}: {what} corrupt or unreadable: sha256 mismatch (file {actual[:12]}..., recorded "
                             f"{str(expected)[:12]}...); it changed after it was written, re-export or re-download it")
    return actual


def _nonfinite_count(value: Any) -> Tuple[int, int]:
    """``(non-finite count, element count)`` of a floating tensor / array; ``(0, n)`` for other dtypes."""
    if hasattr(value, "is_floating_point"):  # torch.Tensor (duck-typed: torch stays optional here)
        if not value.is_floating_point():
            return 0, int(value.numel())
        import torch  # optional heavy dependency (only reached with torch tensors)

        return int((~torch.isfinite(value)).sum().item()), int(value.numel())
    arr = np.asarray(value)
    if not np.issubdtype(arr.dtype, np.floating):
        return 0, int(arr.size)
    return int(arr.size - np.count_nonzero(np.isfinite(arr))), int(arr.size)


def check_finite(tensors: Union[Mapping[str, Any], Iterable[Tuple[str, Any]]], source: PathLike = "model") -> int:
    """Refuse NaN / inf in any floating-point tensor of a state dict (or ``(name, array)`` pairs).

    Returns:
        the number of checked elements.

    Raises:
        IntegrityError: ``<source>: 66 non-finite weights in 2 tensors (first: blocks.0.attn.qkv.weight);
        the file is corrupt or the training diverged``.
    """
    items = tensors.items() if isinstance(tensors, Mapping) else tensors
    bad, bad_names, total = 0, [], 0
    for name, value in items:
        n_bad, n = _nonfinite_count(value)
        total += n
        if n_bad:
            bad += n_bad
            bad_names.append(str(name))
    if bad:
        raise IntegrityError(f"{source}: {bad} non-finite weights in {len(bad_names)} tensors (first: {bad_names[0]}); "
                             "the file is corrupt or the training diverged")
    return total


def check_onnx_finite(path: PathLike) -> int:
    """:func:`check_finite` over the initializers of an ONNX model file.

    Returns 0 (with a warning) when the ``onnx`` package is not installed.

    Raises:
        IntegrityError: non-finite initializer values.
        DriveSegmentError: the file is not a readable ONNX model.
    """
    try:
        import onnx  # optional heavy dependency (ONNX export / onnxruntime backend)
        from onnx import numpy_helper  # optional heavy dependency
    except ImportError:  # onnxruntime without the onnx package: only the digest check applies
        LOG.warning("%s: the onnx package is not installed; initializers not checked for NaN / inf", path)
        return 0

    try:
        model = onnx.load(str(path), load_external_data=True)
    except Exception as exc:
        raise DriveSegmentError(f"{path}: not a readable ONNX model ({error_line(exc)})") from None
    return check_finite(((init.name, numpy_helper.to_array(init)) for init in model.graph.initializer), source=path)
