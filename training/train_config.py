"""Settings of one training stage: :class:`TrainConfig` (``config/train.yaml`` + ``teacher:`` / ``student:`` section).

Loads, validates and fails like every config of the package (:class:`drive_segment_ros.config.ConfigBase`);
the stage sections overlay the shared top level (:meth:`TrainConfig.select_section`).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Dict, Mapping, Optional, Tuple

from drive_segment_ros.config import ConfigBase
from drive_segment_ros.types import DriveSegmentError

__all__ = ["STAGES", "TrainConfig", "default_config_path"]

#: The two training stages, also the names of the sections of ``config/train.yaml``.
STAGES = ("teacher", "student")


@dataclass
class TrainConfig(ConfigBase):
    """Settings of one training stage (``config/train.yaml`` + ``teacher:``/``student:`` section + CLI).

    Data / model:
        pseudo_dir: pseudo-label directory (``index.json``, images/, labels/, segments/).
        out_dir: output directory of the stage (checkpoint/, metrics.json, loss_curve.png ...).
        backbone: backbone registry name (``drive_segment_ros.models.backbones.BACKBONES``).
        backbone_weights: optional local weights file for the backbone (else the registry default).
        allow_random_backbone: permit a randomly initialised backbone when no weights exist.
        decoder: ``"mask_transformer"`` (Segmenter) or ``"conv"``.
        segmenter: extra keyword arguments of ``SegmenterConfig`` (e.g. decoder width / layers).
    Optimisation:
        crop_size: (h, w) training crop, pixels. batch_size: images per step.
        iterations: optimiser steps; ``epochs`` (if set) overrides it as
            ``ceil(epochs * n_frames / batch_size)``.
        lr: AdamW base learning rate; backbone_lr_mult: factor for ``backbone.*`` parameters.
        weight_decay: AdamW weight decay. poly_power: exponent of the poly decay
            ``lr * (1 - it / iterations) ** poly_power``; warmup_iters: linear warm-up steps.
        grad_clip: max global gradient norm (0 = off).
        seed: seeds torch, the sampler and the augmentations. device: ``"auto"`` (CUDA when
            available), ``"cpu"``, ``"cuda"``, ``"cuda:1"`` ... bf16: bf16 autocast on CUDA.
        num_workers: DataLoader workers. log_every / checkpoint_every: in iterations.
        resume: continue from ``out_dir/checkpoint`` + ``optimizer.pt`` when present.
    Data-parallel (``torchrun``; :mod:`drive_segment_training.distributed`):
        batch_size is then the *global* batch, split evenly over the processes.
        dist_backend: ``"auto"`` (nccl on CUDA, gloo on the CPU), ``"gloo"`` or ``"nccl"``.
        sync_bn: BatchNorm -> SyncBatchNorm on CUDA when more than one process runs.
    Augmentation:
        scale_range, hflip_prob, photometric, copy_paste_prob (LiDAR-segment copy-paste).
    Student (IJCV 2025 extension; ignored by the teacher stage):
        ema: EMA teacher (teacher <- ema_decay * teacher + (1 - ema_decay) * student each step);
        ema_decay; soft_targets: train on probabilities (else argmax); temperature: ``T`` of the
        teacher / student softmax for soft targets; refine_with_segments: LiDAR-segment refinement
        of the teacher's prediction; student_init: ``"teacher"`` (copy the teacher's weights; needed
        for a meaningful EMA teacher) or ``"backbone"`` (fresh decoder on the pretrained backbone);
        teacher_checkpoint: the teacher (checkpoint dir or teacher stage dir) when
        :func:`train_student` is not given one.
    """

    pseudo_dir: str = ""
    out_dir: str = ""
    backbone: str = "vit_small_patch16_224.dino"
    backbone_weights: Optional[str] = None
    allow_random_backbone: bool = False
    decoder: str = "mask_transformer"
    segmenter: Dict[str, Any] = field(default_factory=dict)
    crop_size: Tuple[int, int] = (256, 512)
    batch_size: int = 4
    iterations: int = 1000
    epochs: Optional[float] = None
    lr: float = 3e-4
    backbone_lr_mult: float = 0.1
    weight_decay: float = 0.01
    poly_power: float = 0.9
    warmup_iters: int = 0
    grad_clip: float = 1.0
    seed: int = 0
    device: str = "auto"
    bf16: bool = True
    num_workers: int = 0
    log_every: int = 10
    checkpoint_every: int = 250
    resume: bool = False
    dist_backend: str = "auto"
    sync_bn: bool = True
    scale_range: Tuple[float, float] = (0.75, 1.5)
    hflip_prob: float = 0.5
    photometric: bool = True
    copy_paste_prob: float = 0.5
    ema: bool = True
    ema_decay: float = 0.999
    soft_targets: bool = True
    temperature: float = 1.0
    refine_with_segments: bool = True
    student_init: str = "teacher"
    teacher_checkpoint: Optional[str] = None

    CONFIG_NAME: ClassVar[str] = "train config"

    def validate(self) -> "TrainConfig":
        """Coerce types and check ranges. Raises DriveSegmentError with the offending key."""
        try:
            self.crop_size = tuple(int(v) for v in self.crop_size)  # type: ignore[assignment]
            self.scale_range = tuple(float(v) for v in self.scale_range)  # type: ignore[assignment]
        except (TypeError, ValueError):
            raise DriveSegmentError("train config: crop_size / scale_range must be pairs of numbers") from None
        if len(self.crop_size) != 2 or min(self.crop_size) < 8:
            raise DriveSegmentError(f"train config: crop_size must be (h, w) >= 8, got {self.crop_size}")
        if len(self.scale_range) != 2 or not 0 < self.scale_range[0] <= self.scale_range[1]:
            raise DriveSegmentError(f"train config: scale_range must be 0 < min <= max, got {self.scale_range}")
        checks = [
            ("batch_size", int(self.batch_size) >= 1),
            ("iterations", int(self.iterations) >= 1),
            ("lr", float(self.lr) > 0),
            ("weight_decay", float(self.weight_decay) >= 0),
            ("ema_decay", 0.0 <= float(self.ema_decay) <= 1.0),
            ("temperature", float(self.temperature) > 0),
            ("copy_paste_prob", 0.0 <= float(self.copy_paste_prob) <= 1.0),
            ("hflip_prob", 0.0 <= float(self.hflip_prob) <= 1.0),
            ("num_workers", int(self.num_workers) >= 0),
            ("checkpoint_every", int(self.checkpoint_every) >= 1),
            ("epochs", self.epochs is None or float(self.epochs) > 0),
        ]
        for key, ok in checks:
            if not ok:
                raise DriveSegmentError(f"train config: invalid {key} = {getattr(self, key)!r}")
        if self.decoder not in ("mask_transformer", "conv"):
            raise DriveSegmentError(f"train config: decoder must be 'mask_transformer' or 'conv', got {self.decoder!r}")
        if self.dist_backend not in ("auto", "gloo", "nccl"):
            raise DriveSegmentError(f"train config: dist_backend must be 'auto', 'gloo' or 'nccl', got {self.dist_backend!r}")
        if self.student_init not in ("teacher", "backbone"):
            raise DriveSegmentError(f"train config: student_init must be 'teacher' or 'backbone', got {self.student_init!r}")
        if not isinstance(self.segmenter, dict):
            raise DriveSegmentError("train config: 'segmenter' must be a mapping of SegmenterConfig arguments")
        return self

    @classmethod
    def default_yaml_path(cls) -> Optional[Path]:
        """``config/train.yaml`` when found (:func:`default_config_path`), else None (defaults)."""
        return default_config_path()

    @classmethod
    def select_section(cls, data: Dict[str, Any], section: Optional[str]) -> Dict[str, Any]:
        """The shared top level of ``config/train.yaml`` with the ``<section>:`` stage section on top.

        Args:
            data: the YAML mapping (top-level keys + ``teacher:`` / ``student:`` sections).
            section: ``"teacher"`` (default when None) or ``"student"``.

        Raises:
            DriveSegmentError: unknown stage, or a stage section that is not a mapping.
        """
        stage = "teacher" if section is None else section
        if stage not in STAGES:
            raise DriveSegmentError(f"train config: stage must be one of {STAGES}, got {stage!r}")
        values = {k: v for k, v in data.items() if k not in STAGES}
        for name in STAGES:
            if not isinstance(data.get(name) or {}, Mapping):
                raise DriveSegmentError(f"train config: section {name!r} must be a mapping, got {data[name]!r}")
        values.update(data.get(stage) or {})
        return values


def default_config_path() -> Optional[Path]:
    """``config/train.yaml`` of the source tree, ``sys.prefix/share`` or the ament share dir, or None."""
    here = Path(__file__).resolve().parent
    candidates = [here.parent / "config" / "train.yaml",
                  Path(sys.prefix) / "share" / "drive_segment_ros" / "config" / "train.yaml"]
    try:  # colcon / ament install: <install>/share/drive_segment_ros/config/train.yaml
        from ament_index_python.packages import get_package_share_directory  # optional heavy dependency (ROS install only)

        candidates.append(Path(get_package_share_directory("drive_segment_ros")) / "config" / "train.yaml")
    except Exception:  # not installed with ament, or ament_index_python missing
        pass
    for cand in candidates:
        if cand.is_file():
            return cand
    return None
