"""Torch device selection shared by training and inference."""
from __future__ import annotations

import torch

from drive_segment_ros.types import DriveSegmentError


def resolve_device(name: str = "auto") -> torch.device:
    """Turn ``"auto" | "cpu" | "cuda" | "cuda:N"`` into a ``torch.device``.

    ``"auto"`` picks CUDA when ``torch.cuda.is_available()``, else the CPU.

    Raises:
        DriveSegmentError: unknown device string, an unsupported device type, or CUDA
        requested but not available to torch.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise DriveSegmentError(f"unknown device {name!r} (use auto, cpu, cuda or cuda:N)") from None
    if dev.type not in ("cpu", "cuda"):
        raise DriveSegmentError(f"unsupported device {name!r} (use auto, cpu, cuda or cuda:N)")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DriveSegmentError(f"device {name!r} requested but CUDA is not available to torch")
    return dev
