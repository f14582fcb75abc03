"""Teacher / student training: Drive&Segment cross-modal distillation.

* **Teacher** (Vobecky et al., ECCV 2022, Sec. 3.3): a Segmenter trained with cross-entropy
  on the partial pseudo-labels (``ignore_index = 255`` off the LiDAR segments), on random
  crops with flips, scale jitter, photometric jitter and optional LiDAR-segment copy-paste
  (:mod:`drive_segment_training.augment`).
* **Student** (Sec. 3.4, cross-modal distillation; the IJCV 2025 extension adds an
  exponential-moving-average teacher and soft targets): the teacher predicts on the whole
  augmented crop; inside every LiDAR segment its prediction is replaced by the segment's
  majority class (hard) or the segment-mean probability (soft) -- :func:`refine_with_segments`;
  the student is trained on these full-image targets (soft: cross-entropy with the teacher's
  probabilities at temperature ``T``, scaled by ``T**2`` as in Hinton et al. 2015; hard: CE on
  the argmax). With ``ema`` the teacher's weights follow the student's as an exponential
  moving average after every step (mean teacher, Tarvainen & Valpola 2017) -- :func:`ema_update`.
  EMA, soft targets and the refinement are each switchable in ``config/train.yaml``.

Optimisation: AdamW, polynomial ("poly", power 0.9) learning-rate decay with optional linear
warm-up, bf16 autocast on CUDA. Outputs per stage (``cfg.out_dir``)::

    checkpoint/        save_checkpoint(): model.safetensors + config.json (+ extra: stage,
                       iteration, pseudo-label dir, backbone description, self_supervised)
    ema_teacher/       student stage with ema: the EMA teacher, same format
    optimizer.pt       optimizer + scheduler state, iteration, RNG state (torch.save, loaded
                       with weights_only=True) for --resume
    metrics.json       loss / lr history, timing, run settings
    loss_curve.png     the loss curve (matplotlib)
    train_config.json  the resolved TrainConfig
"""
from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from drive_segment_ros.devices import resolve_device  # noqa: F401 (re-exported)
from drive_segment_ros.types import DriveSegmentError

LOG = logging.getLogger(__name__)

IGNORE_INDEX = 255
STAGES = ("teacher", "student")
CHECKPOINT_SUBDIR = "checkpoint"
EMA_SUBDIR = "ema_teacher"


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------
@dataclass
class TrainConfig:
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

    def __post_init__(self) -> None:
        self.validate()

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
        if self.student_init not in ("teacher", "backbone"):
            raise DriveSegmentError(f"train config: student_init must be 'teacher' or 'backbone', got {self.student_init!r}")
        if not isinstance(self.segmenter, dict):
            raise DriveSegmentError("train config: 'segmenter' must be a mapping of SegmenterConfig arguments")
        return self

    @classmethod
    def field_names(cls) -> List[str]:
        """Names of every configurable key."""
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_yaml(
        cls, path: Optional[Union[str, Path]] = None, stage: str = "teacher", **overrides: Any
    ) -> "TrainConfig":
        """Build a config from a YAML file, its ``<stage>:`` section, then ``overrides``.

        Args:
            path: YAML file; None = the package's ``config/train.yaml`` when found, else defaults.
            stage: ``"teacher"`` or ``"student"``: that section's keys override the top level.
            overrides: final values (``None`` values are skipped, so argparse defaults pass through).

        Raises:
            DriveSegmentError: unreadable YAML, unknown keys, invalid values.
        """
        from drive_segment_ros.config_io import load_yaml_mapping

        if stage not in STAGES:
            raise DriveSegmentError(f"train config: stage must be one of {STAGES}, got {stage!r}")
        values: Dict[str, Any] = {}
        path = Path(path) if path is not None else default_config_path()
        if path is not None:
            data = load_yaml_mapping(path, "train config")
            sections = {s: data.pop(s, None) or {} for s in STAGES}
            values.update(data)
            values.update(sections[stage])
        values.update({k: v for k, v in overrides.items() if v is not None})
        unknown = sorted(set(values) - set(cls.field_names()))
        if unknown:
            raise DriveSegmentError(f"train config: unknown keys {unknown} (known: {', '.join(cls.field_names())})")
        return cls(**values)

    def to_dict(self) -> Dict[str, Any]:
        """JSON-serialisable dict of every setting."""
        d = dataclasses.asdict(self)
        d["crop_size"] = list(self.crop_size)
        d["scale_range"] = list(self.scale_range)
        return d


def default_config_path() -> Optional[Path]:
    """``config/train.yaml`` of the source tree, ``sys.prefix/share`` or the ament share dir, or None."""
    here = Path(__file__).resolve().parent
    candidates = [here.parent / "config" / "train.yaml",
                  Path(sys.prefix) / "share" / "drive_segment_ros" / "config" / "train.yaml"]
    try:  # colcon / ament install: <install>/share/drive_segment_ros/config/train.yaml
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory("drive_segment_ros")) / "config" / "train.yaml")
    except Exception:  # not installed with ament, or ament_index_python missing
        pass
    for cand in candidates:
        if cand.is_file():
            return cand
    return None


# --------------------------------------------------------------------------------------------
# Core of the distillation (pure tensor functions)
# --------------------------------------------------------------------------------------------
def refine_with_segments(probs, segments, mode: str = "soft"):
    """Refine per-pixel teacher predictions with LiDAR segments (Drive&Segment Sec. 3.4).

    Inside every LiDAR segment (same id in the same image) all pixels get

    * ``mode="soft"``: the segment-mean probability vector, or
    * ``mode="hard"``: the one-hot vector of the segment's majority class (votes = the per-pixel
      argmax; ties go to the lowest class id, as ``torch.argmax``).

    Pixels with ``segments < 0`` keep the teacher's probabilities unchanged. Fully vectorised:
    segment keys ``(b, id)`` are compacted with ``torch.unique`` and accumulated with
    ``index_add_`` (no Python loop over segments).

    Args:
        probs: (B, K, H, W) float probabilities (any float dtype; computed in float32).
        segments: (B, H, W) integer segment ids, ``-1`` = no segment.
        mode: ``"soft"`` or ``"hard"``.

    Returns:
        (B, K, H, W) float32 refined targets (rows still sum to 1).

    Raises:
        DriveSegmentError: shape mismatch or unknown mode.
    """
    import torch

    if mode not in ("soft", "hard"):
        raise DriveSegmentError(f"refine_with_segments: mode must be 'soft' or 'hard', got {mode!r}")
    if probs.dim() != 4 or segments.shape != (probs.shape[0],) + tuple(probs.shape[2:]):
        raise DriveSegmentError(
            f"refine_with_segments: probs (B,K,H,W) and segments (B,H,W) must match, got "
            f"{tuple(probs.shape)} and {tuple(segments.shape)}"
        )
    B, K, H, W = probs.shape
    out = probs.float().permute(0, 2, 3, 1).contiguous()  # (B,H,W,K)
    seg = segments.to(device=probs.device, dtype=torch.long)
    inside = seg >= 0
    if not bool(inside.any()):
        return out.permute(0, 3, 1, 2)
    b_idx = torch.arange(B, device=seg.device).view(B, 1, 1).expand(B, H, W)
    keys = b_idx[inside] * (int(seg.max()) + 1) + seg[inside]
    _, inv = torch.unique(keys, return_inverse=True)
    n_seg = int(inv.max()) + 1
    p = out[inside]  # (M, K)
    if mode == "soft":
        sums = torch.zeros(n_seg, K, device=p.device, dtype=torch.float32).index_add_(0, inv, p)
        counts = torch.bincount(inv, minlength=n_seg).clamp_min(1).to(torch.float32)
        seg_values = sums / counts[:, None]
    else:
        votes = torch.zeros(n_seg * K, device=p.device, dtype=torch.float32)
        votes.index_add_(0, inv * K + p.argmax(1), torch.ones_like(inv, dtype=torch.float32))
        majority = votes.view(n_seg, K).argmax(1)
        seg_values = torch.nn.functional.one_hot(majority, K).to(torch.float32)
    out[inside] = seg_values[inv]
    return out.permute(0, 3, 1, 2)


def ema_update(teacher, student, decay: float) -> None:
    """Mean-teacher update, in place: ``theta_t <- decay * theta_t + (1 - decay) * theta_s``.

    Applied to every parameter and floating-point buffer (BatchNorm running statistics);
    integer buffers (``num_batches_tracked``) are copied from the student. Tarvainen & Valpola,
    NeurIPS 2017; used by the IJCV 2025 Drive&Segment student.

    Args:
        teacher, student: ``nn.Module`` with identical parameter / buffer names and shapes.
        decay: in [0, 1]; 1 freezes the teacher, 0 copies the student.

    Raises:
        DriveSegmentError: architectures differ or decay outside [0, 1].
    """
    import torch

    if not 0.0 <= float(decay) <= 1.0:
        raise DriveSegmentError(f"ema_update: decay must be in [0, 1], got {decay}")
    t_state = dict(teacher.named_parameters())
    t_state.update(dict(teacher.named_buffers()))
    s_state = dict(student.named_parameters())
    s_state.update(dict(student.named_buffers()))
    if t_state.keys() != s_state.keys():
        raise DriveSegmentError("ema_update: teacher and student architectures differ")
    with torch.no_grad():
        for name, s in s_state.items():
            t = t_state[name]
            if t.shape != s.shape:
                raise DriveSegmentError(f"ema_update: {name} shape {tuple(t.shape)} vs {tuple(s.shape)}")
            if t.is_floating_point():
                t.lerp_(s.detach().to(t.dtype), 1.0 - float(decay))
            else:
                t.copy_(s)


def distillation_loss(student_logits, targets, valid=None, soft: bool = True, temperature: float = 1.0):
    """Student loss on full-image teacher targets.

    Args:
        student_logits: (B, K, H, W) raw scores.
        targets: (B, K, H, W) target probabilities (from :func:`refine_with_segments` or the
            teacher's softmax at ``temperature``).
        valid: optional (B, H, W) bool; False pixels (crop padding) are excluded.
        soft: True -> ``T**2 * mean_pixels( -sum_k p_k log softmax(z / T)_k )`` (soft cross-entropy,
            = KL(p || q) + H(p), same gradient as KL; Hinton et al. 2015); False -> cross-entropy
            with ``argmax_k p_k`` (``temperature`` unused).
        temperature: ``T`` > 0.

    Returns:
        Scalar float32 loss tensor (0 when no pixel is valid).
    """
    import torch
    import torch.nn.functional as F

    logits = student_logits.float()
    if valid is None:
        valid = torch.ones(logits.shape[0], *logits.shape[2:], dtype=torch.bool, device=logits.device)
    n = valid.sum()
    if soft:
        per_pixel = -(targets.float() * F.log_softmax(logits / temperature, dim=1)).sum(1)
        return (per_pixel * valid).sum() / n.clamp_min(1) * (temperature**2)
    hard = targets.argmax(1)
    hard = torch.where(valid, hard, torch.full_like(hard, IGNORE_INDEX))
    if int(n) == 0:
        return logits.sum() * 0.0
    return F.cross_entropy(logits, hard, ignore_index=IGNORE_INDEX)


def poly_lr_factor(iteration: int, total: int, power: float = 0.9, warmup: int = 0) -> float:
    """Multiplier of the base lr at ``iteration``: linear warm-up then ``(1 - it/total) ** power``."""
    if warmup > 0 and iteration < warmup:
        return (iteration + 1) / float(warmup)
    return max(0.0, 1.0 - iteration / float(max(total, 1))) ** power


# --------------------------------------------------------------------------------------------
# Models, checkpoints, inference helpers
# --------------------------------------------------------------------------------------------
def build_model(cfg: TrainConfig, n_classes: int):
    """Segmenter for ``cfg`` with ``n_classes`` outputs: ``(model, SegmenterConfig)``.

    ``SegmenterConfig.for_backbone(backbone, n_classes, decoder=..., **cfg.segmenter)`` (per-backbone
    defaults: conv head of 128 channels for CNNs, 1-layer mask transformer for ViTs) built with
    ``build_segmenter``; raises DriveSegmentError when the backbone weights are missing (unless
    ``allow_random_backbone``) or the config is invalid.
    """
    from drive_segment_ros.models.segmenter import SegmenterConfig, build_segmenter

    scfg = SegmenterConfig.for_backbone(cfg.backbone, int(n_classes), decoder=cfg.decoder, **cfg.segmenter)
    model = build_segmenter(scfg, backbone_weights=cfg.backbone_weights, allow_random=cfg.allow_random_backbone)
    return model, scfg


def norm_stats(model, config=None) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    """RGB normalisation (mean, std) a segmenter expects: from ``config.mean/std``, the model,
    its ``backbone`` or ImageNet statistics, in that order."""
    from .datasets import IMAGENET_MEAN, IMAGENET_STD

    for obj in (config, model, getattr(model, "backbone", None)):
        mean, std = getattr(obj, "mean", None), getattr(obj, "std", None)
        if mean is not None and std is not None and len(mean) == 3 and len(std) == 3:
            return tuple(float(v) for v in mean), tuple(float(v) for v in std)
    return IMAGENET_MEAN, IMAGENET_STD


def resolve_checkpoint(path: Union[str, Path], what: str = "checkpoint") -> Path:
    """A checkpoint directory from either itself or a stage output dir containing ``checkpoint/``.

    Raises:
        DriveSegmentError: nothing there.
    """
    path = Path(path)
    if (path / CHECKPOINT_SUBDIR).is_dir():
        return path / CHECKPOINT_SUBDIR
    if path.is_dir():
        return path
    raise DriveSegmentError(f"{what} {path} not found")


def _load_segmenter(path: Path, device):
    """``load_segmenter(path, device) -> (model, config, extra)``."""
    from drive_segment_ros.models.checkpoint import load_segmenter

    return load_segmenter(path, device)


def predict_logits(model, config, rgb_uint8: np.ndarray, size: Optional[Tuple[int, int]] = None, device=None):
    """(1, K, H, W) float32 logits of one RGB image, upsampled to the image size.

    Args:
        model: a segmenter ``(B,3,h,w) -> (B,K,h,w)``.
        config: its config (for normalisation stats; may be None).
        rgb_uint8: (H, W, 3) uint8 RGB.
        size: optional (h, w) network input size (the image is resized; logits are resized back).
        device: defaults to the model's device.
    """
    import torch
    import torch.nn.functional as F

    from .datasets import normalize_image

    if rgb_uint8.ndim != 3 or rgb_uint8.shape[2] != 3 or rgb_uint8.dtype != np.uint8:
        raise DriveSegmentError(f"predict: expected (H, W, 3) uint8 RGB, got {rgb_uint8.shape} {rgb_uint8.dtype}")
    H, W = rgb_uint8.shape[:2]
    img = rgb_uint8
    if size is not None:
        import cv2

        img = cv2.resize(rgb_uint8, (int(size[1]), int(size[0])), interpolation=cv2.INTER_LINEAR)
    if device is None:
        device = next(model.parameters()).device
    mean, std = norm_stats(model, config)
    x = normalize_image(img, mean, std).unsqueeze(0).to(device)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        logits = model(x).float()
    model.train(was_training)
    if logits.shape[-2:] != (H, W):
        logits = F.interpolate(logits, size=(H, W), mode="bilinear", align_corners=False)
    return logits


def predict_image(model, config, rgb_uint8: np.ndarray, size: Optional[Tuple[int, int]] = None) -> np.ndarray:
    """(H, W) int64 pseudo-class map of one (H, W, 3) uint8 RGB image.

    Args:
        model, config: a trained segmenter and its config (e.g. from ``load_segmenter``).
        rgb_uint8: the image.
        size: optional (h, w) network input size (e.g. the training crop); logits are
            bilinearly resized back to (H, W) before the argmax.

    Raises:
        DriveSegmentError: the image is not (H, W, 3) uint8.
    """
    return predict_logits(model, config, rgb_uint8, size).argmax(1)[0].cpu().numpy().astype(np.int64)


# --------------------------------------------------------------------------------------------
# Training loop
# --------------------------------------------------------------------------------------------
def _seed_everything(seed: int) -> None:
    import random

    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _param_groups(model, cfg: TrainConfig):
    backbone, rest = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (backbone if name.startswith("backbone.") else rest).append(p)
    groups = [{"params": rest, "lr": cfg.lr}]
    if backbone:
        groups.append({"params": backbone, "lr": cfg.lr * cfg.backbone_lr_mult})
    return groups


def _save_loss_curve(path: Path, losses: Sequence[float], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    it = np.arange(1, len(losses) + 1)
    ax.plot(it, losses, lw=0.8, alpha=0.5, label="loss")
    if len(losses) >= 5:
        w = max(2, len(losses) // 20)
        smooth = np.convolve(losses, np.ones(w) / w, mode="valid")
        ax.plot(it[w - 1 :], smooth, lw=1.5, label=f"mean of {w}")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


class _Stage:
    """One training stage (teacher or student); see :func:`train_teacher` / :func:`train_student`."""

    def __init__(self, cfg: TrainConfig, stage: str, teacher_checkpoint: Optional[Path] = None) -> None:
        import torch

        from .augment import AugmentConfig
        from .datasets import InfiniteSampler, PseudoLabelDataset, load_pseudo_label_index

        cfg.validate()
        if not cfg.pseudo_dir:
            raise DriveSegmentError("train: pseudo-label directory not set")
        if not cfg.out_dir:
            raise DriveSegmentError("train: output directory not set (--out)")
        self.cfg, self.stage = cfg, stage
        self.out = Path(cfg.out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.ckpt_dir = self.out / CHECKPOINT_SUBDIR
        self.device = resolve_device(cfg.device)
        self.use_bf16 = bool(cfg.bf16) and self.device.type == "cuda"
        _seed_everything(cfg.seed)
        index = load_pseudo_label_index(cfg.pseudo_dir)
        self.index = index
        n_frames = len(index["frames"])
        self.total = int(math.ceil(cfg.epochs * n_frames / cfg.batch_size)) if cfg.epochs else int(cfg.iterations)

        self.teacher = None
        self.teacher_extra: Dict[str, Any] = {}
        resume_from = self.ckpt_dir if cfg.resume and (self.ckpt_dir / "config.json").is_file() else None
        if cfg.resume and resume_from is None:
            LOG.warning("%s: --resume given but %s has no checkpoint; starting from scratch", stage, self.ckpt_dir)
        if stage == "student":
            if teacher_checkpoint is None:
                raise DriveSegmentError("train-student: a teacher checkpoint is required (--teacher)")
            tpath = resolve_checkpoint(teacher_checkpoint, "teacher checkpoint")
            self.teacher, self.teacher_config, self.teacher_extra = _load_segmenter(tpath, self.device)
            self.teacher_path = tpath
            n_classes = int(getattr(self.teacher_config, "n_classes"))
            if n_classes < int(index["k"]):
                raise DriveSegmentError(
                    f"teacher {tpath} predicts {n_classes} classes but the pseudo-labels have k={index['k']}"
                )
        else:
            n_classes = int(index["k"])

        self.iteration = 0
        if resume_from is not None:
            self.model, self.model_config, extra = _load_segmenter(resume_from, self.device)
            if extra.get("stage", stage) != stage:
                raise DriveSegmentError(f"--resume: {resume_from} holds a {extra.get('stage')} checkpoint, not {stage}")
            self.iteration = int(extra.get("iteration", 0))
            if stage == "student" and cfg.ema and (self.out / EMA_SUBDIR / "config.json").is_file():
                self.teacher, _, _ = _load_segmenter(self.out / EMA_SUBDIR, self.device)
            LOG.info("%s: resuming from %s at iteration %d", stage, resume_from, self.iteration)
        elif stage == "student" and cfg.student_init == "teacher":
            self.model, self.model_config = copy.deepcopy(self.teacher), self.teacher_config
        else:
            self.model, self.model_config = build_model(cfg, n_classes)
        n_out = int(getattr(self.model_config, "n_classes", n_classes))
        if n_out != n_classes:
            raise DriveSegmentError(f"{stage}: model has {n_out} classes but {n_classes} are needed (k changed?)")
        if stage == "student" and cfg.ema:
            t_shapes = {k: tuple(v.shape) for k, v in self.teacher.state_dict().items()}
            s_shapes = {k: tuple(v.shape) for k, v in self.model.state_dict().items()}
            if t_shapes != s_shapes:
                raise DriveSegmentError(
                    "train-student: ema needs the student and teacher architectures to match "
                    f"(teacher {self.teacher_config.backbone}/{self.teacher_config.decoder}, student "
                    f"{self.model_config.backbone}/{self.model_config.decoder}); use student_init: teacher or ema: false"
                )
        self.model.to(self.device).train()
        if self.teacher is not None:
            self.teacher.to(self.device).eval()
            for p in self.teacher.parameters():
                p.requires_grad_(False)

        self.backbone_description = str(
            self.teacher_extra.get("backbone_description")
            or getattr(getattr(self.model, "backbone", None), "description", None)
            or index.get("backbone_description", cfg.backbone)
        )
        self.self_supervised = bool(
            getattr(getattr(self.model, "backbone", None), "self_supervised", index.get("self_supervised", False))
        )
        mean, std = norm_stats(self.model, self.model_config)
        aug = AugmentConfig(
            scale_range=cfg.scale_range, hflip_prob=cfg.hflip_prob, photometric=cfg.photometric,
            copy_paste_prob=cfg.copy_paste_prob,
        )
        self.dataset = PseudoLabelDataset(cfg.pseudo_dir, cfg.crop_size, train=True, augment=aug,
                                          mean=mean, std=std, seed=cfg.seed)
        self.sampler = InfiniteSampler(len(self.dataset), seed=cfg.seed, start=self.iteration * cfg.batch_size)
        self.loader = torch.utils.data.DataLoader(
            self.dataset, batch_size=cfg.batch_size, sampler=self.sampler, num_workers=cfg.num_workers,
            pin_memory=self.device.type == "cuda", persistent_workers=False,
            # own generator: creating the iterator must not consume the global torch RNG
            # (dropout), or a resumed run would diverge from an uninterrupted one.
            generator=torch.Generator().manual_seed(cfg.seed),
        )
        self.optimizer = torch.optim.AdamW(_param_groups(self.model, cfg), lr=cfg.lr, weight_decay=cfg.weight_decay)
        total, power, warm = self.total, cfg.poly_power, cfg.warmup_iters
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda it: poly_lr_factor(it, total, power, warm)
        )
        self.history: Dict[str, List[float]] = {"loss": [], "lr": [], "seconds": [], "cpu_seconds": []}
        self._teacher_renorm = None
        if self.teacher is not None:
            t_mean, t_std = norm_stats(self.teacher, self.teacher_config)
            if (t_mean, t_std) != (tuple(mean), tuple(std)):
                # x_teacher = (x * std + mean - t_mean) / t_std, per channel
                a = torch.tensor(std) / torch.tensor(t_std)
                b = (torch.tensor(mean) - torch.tensor(t_mean)) / torch.tensor(t_std)
                self._teacher_renorm = (a.view(1, 3, 1, 1).to(self.device), b.view(1, 3, 1, 1).to(self.device))
        if resume_from is not None:
            self._load_training_state()

    # -- persistence ------------------------------------------------------------------------
    def _load_training_state(self) -> None:
        import torch

        opt_path = self.out / "optimizer.pt"
        if opt_path.is_file():
            state = torch.load(opt_path, map_location=self.device, weights_only=True)
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            if "torch_rng" in state:
                torch.set_rng_state(state["torch_rng"].cpu())
        else:
            LOG.warning("%s: %s missing; optimizer state restarts", self.stage, opt_path)
            for _ in range(self.iteration):
                self.scheduler.step()
        metrics_path = self.out / "metrics.json"
        if metrics_path.is_file():
            old = json.loads(metrics_path.read_text())
            for key in self.history:
                self.history[key] = list(old.get("history", {}).get(key, []))[: self.iteration]

    def _extra(self) -> Dict[str, Any]:
        extra = {
            "stage": self.stage,
            "iteration": int(self.iteration),
            "total_iterations": int(self.total),
            "pseudo_label_dir": str(Path(self.cfg.pseudo_dir).resolve()),
            "k": int(self.index["k"]),
            "pseudo_label_backbone": str(self.index.get("backbone", "")),
            "backbone_description": self.backbone_description,
            "self_supervised": self.self_supervised,
            "seed": int(self.cfg.seed),
        }
        if self.stage == "student":
            extra.update(teacher_checkpoint=str(self.teacher_path), ema=bool(self.cfg.ema),
                         soft_targets=bool(self.cfg.soft_targets),
                         refine_with_segments=bool(self.cfg.refine_with_segments),
                         temperature=float(self.cfg.temperature))
        return extra

    def save(self) -> None:
        """Write checkpoint/, ema_teacher/ (student + ema), optimizer.pt, metrics.json, loss_curve.png."""
        import torch

        from drive_segment_ros.models.checkpoint import save_checkpoint

        extra = self._extra()
        save_checkpoint(self.ckpt_dir, self.model, self.model_config, extra)
        if self.stage == "student" and self.cfg.ema:
            save_checkpoint(self.out / EMA_SUBDIR, self.teacher, self.teacher_config, dict(extra, stage="ema_teacher"))
        tmp = self.out / "optimizer.pt.tmp"
        torch.save({"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                    "iteration": int(self.iteration), "torch_rng": torch.get_rng_state()}, tmp)
        os.replace(tmp, self.out / "optimizer.pt")
        self.write_metrics()

    def write_metrics(self) -> None:
        """Write ``metrics.json`` (loss / lr / time history, first/last loss means) and ``loss_curve.png``."""
        losses = self.history["loss"]
        secs = self.history["seconds"]
        k = max(1, min(10, len(losses) // 2))
        metrics = {
            "stage": self.stage,
            "iteration": int(self.iteration),
            "total_iterations": int(self.total),
            "initial_loss": float(np.mean(losses[:k])) if k else None,
            "final_loss": float(np.mean(losses[-k:])) if k else None,
            "seconds_per_iteration_median": float(np.median(secs[1:] if len(secs) > 1 else secs)) if secs else None,
            "cpu_seconds_per_iteration_median": (float(np.median(self.history["cpu_seconds"][1:] or self.history["cpu_seconds"]))
                                                 if self.history["cpu_seconds"] else None),
            "device": str(self.device),
            "bf16": self.use_bf16,
            "n_frames": len(self.dataset),
            "k": int(self.index["k"]),
            "config": self.cfg.to_dict(),
            "checkpoint": str(self.ckpt_dir),
            "extra": self._extra(),
            "history": self.history,
        }
        (self.out / "metrics.json").write_text(json.dumps(metrics, indent=1))
        (self.out / "train_config.json").write_text(json.dumps(self.cfg.to_dict(), indent=1))
        if losses:
            _save_loss_curve(self.out / "loss_curve.png", losses, f"{self.stage} ({len(losses)} it)")

    # -- steps ------------------------------------------------------------------------------
    def _loss(self, batch):
        import torch
        import torch.nn.functional as F

        x = batch["image"].to(self.device, non_blocking=True)
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.use_bf16):
            if self.stage == "teacher":
                y = batch["label"].to(self.device, non_blocking=True)
                logits = self.model(x)
                return F.cross_entropy(logits.float(), y, ignore_index=IGNORE_INDEX)
            valid = batch["valid"].to(self.device, non_blocking=True)
            T = float(self.cfg.temperature) if self.cfg.soft_targets else 1.0
            with torch.no_grad():
                xt = x if self._teacher_renorm is None else x * self._teacher_renorm[0] + self._teacher_renorm[1]
                probs = torch.softmax(self.teacher(xt).float() / T, dim=1)
                if self.cfg.refine_with_segments:
                    mode = "soft" if self.cfg.soft_targets else "hard"
                    probs = refine_with_segments(probs, batch["segments"].to(self.device), mode)
            logits = self.model(x)
            return distillation_loss(logits, probs, valid, soft=self.cfg.soft_targets, temperature=T)

    def run(self, stop_at: Optional[int] = None) -> Path:
        """Train up to ``cfg`` iterations (or only up to iteration ``stop_at``, for time-boxed jobs;
        the state is saved there and ``resume`` continues). Returns the checkpoint directory."""
        import torch
        from tqdm import tqdm

        cfg = self.cfg
        if self.iteration >= self.total:
            LOG.info("%s: already trained for %d/%d iterations", self.stage, self.iteration, self.total)
            if not (self.ckpt_dir / "config.json").is_file():
                self.save()
            return self.ckpt_dir
        LOG.info("%s: %d frames, k=%d, %d iterations from %d, batch %d, crop %s, device %s%s", self.stage,
                 len(self.dataset), self.index["k"], self.total, self.iteration, cfg.batch_size,
                 cfg.crop_size, self.device, " (bf16)" if self.use_bf16 else "")
        batches = iter(self.loader)
        end = self.total if stop_at is None else max(self.iteration, min(int(stop_at), self.total))
        bar = tqdm(range(self.iteration, end), desc=f"train-{self.stage}", unit="it",
                   initial=self.iteration, total=self.total, disable=None)
        for _ in bar:
            t0, c0 = time.perf_counter(), time.process_time()
            batch = next(batches)
            loss = self._loss(batch)
            if not torch.isfinite(loss):
                raise DriveSegmentError(f"{self.stage}: loss became {float(loss)} at iteration {self.iteration}")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            lr = self.optimizer.param_groups[0]["lr"]
            self.optimizer.step()
            self.scheduler.step()
            if self.stage == "student" and cfg.ema:
                ema_update(self.teacher, self.model, cfg.ema_decay)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.iteration += 1
            self.history["loss"].append(float(loss.detach()))
            self.history["lr"].append(float(lr))
            self.history["seconds"].append(time.perf_counter() - t0)
            self.history["cpu_seconds"].append(time.process_time() - c0)
            if self.iteration % max(1, cfg.log_every) == 0:
                value = self.history["loss"][-1]
                bar.set_postfix(loss=f"{value:.4f}", lr=f"{lr:.2e}")
                LOG.debug("%s it %d loss %.4f lr %.2e", self.stage, self.iteration, value, lr)
            if self.iteration % cfg.checkpoint_every == 0 or self.iteration in (self.total, end):
                self.save()
        bar.close()
        k = max(1, min(10, len(self.history["loss"]) // 2))
        LOG.info("%s: done, loss (mean of %d) %.4f -> %.4f, checkpoint %s", self.stage, k,
                 np.mean(self.history["loss"][:k]), np.mean(self.history["loss"][-k:]), self.ckpt_dir)
        return self.ckpt_dir


def train_teacher(cfg: TrainConfig) -> Path:
    """Train the teacher Segmenter on partial pseudo-labels (Drive&Segment Sec. 3.3).

    Args:
        cfg: the stage settings (``pseudo_dir``, ``out_dir`` required).

    Returns:
        The checkpoint directory ``cfg.out_dir/checkpoint`` (``load_segmenter`` reads it).

    Raises:
        DriveSegmentError: bad pseudo-label directory, config or device; non-finite loss.
    """
    return _Stage(cfg, "teacher").run()


def train_student(cfg: TrainConfig, teacher_checkpoint: Optional[Union[str, Path]] = None) -> Path:
    """Train the student by cross-modal distillation from a teacher (Sec. 3.4 + IJCV extension).

    Args:
        cfg: the stage settings (student keys: ema, ema_decay, soft_targets, temperature,
            refine_with_segments, student_init).
        teacher_checkpoint: the teacher's checkpoint dir (or its stage output dir); default
            ``cfg.teacher_checkpoint``.

    Returns:
        The student's checkpoint directory ``cfg.out_dir/checkpoint``.

    Raises:
        DriveSegmentError: missing teacher, class-count mismatch, bad config / data.
    """
    teacher_checkpoint = teacher_checkpoint if teacher_checkpoint is not None else cfg.teacher_checkpoint
    if teacher_checkpoint is None:
        raise DriveSegmentError("train-student: a teacher checkpoint is required (--teacher)")
    return _Stage(cfg, "student", Path(teacher_checkpoint)).run()


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------
def _parse_set(items: Optional[Iterable[str]]) -> Dict[str, Any]:
    import yaml

    out: Dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise DriveSegmentError(f"--set expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def _add_common(p) -> None:
    p.add_argument("pseudo_dir", metavar="PSEUDO_DIR", help="pseudo-label directory (index.json, images/, labels/, segments/)")
    p.add_argument("--out", required=True, help="output directory of this stage")
    p.add_argument("--config", default=None, help="YAML config (default: config/train.yaml)")
    p.add_argument("--backbone", default=None, help="backbone registry name (e.g. mobilenetv2_deepsort)")
    p.add_argument("--backbone-weights", default=None, help="local backbone weights file")
    p.add_argument("--allow-random-backbone", action="store_const", const=True, default=None,
                   help="permit random backbone weights when none are found")
    p.add_argument("--decoder", choices=("mask_transformer", "conv"), default=None)
    p.add_argument("--crop", type=int, nargs=2, metavar=("H", "W"), default=None, help="training crop size")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--iterations", type=int, default=None)
    p.add_argument("--epochs", type=float, default=None, help="overrides --iterations")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--weight-decay", type=float, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N")
    p.add_argument("--no-bf16", dest="bf16", action="store_const", const=False, default=None)
    p.add_argument("--num-workers", type=int, default=None)
    p.add_argument("--copy-paste-prob", type=float, default=None)
    p.add_argument("--checkpoint-every", type=int, default=None)
    p.add_argument("--resume", action="store_const", const=True, default=None,
                   help="continue from OUT/checkpoint and OUT/optimizer.pt")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="any TrainConfig key (YAML value)")


def _config_from_args(args, stage: str) -> TrainConfig:
    overrides = dict(
        pseudo_dir=args.pseudo_dir, out_dir=args.out, backbone=args.backbone,
        backbone_weights=args.backbone_weights, allow_random_backbone=args.allow_random_backbone,
        decoder=args.decoder, crop_size=args.crop, batch_size=args.batch_size, iterations=args.iterations,
        epochs=args.epochs, lr=args.lr, weight_decay=args.weight_decay, seed=args.seed, device=args.device,
        bf16=args.bf16, num_workers=args.num_workers, copy_paste_prob=args.copy_paste_prob,
        checkpoint_every=args.checkpoint_every, resume=args.resume,
    )
    if stage == "student":
        overrides.update(ema=args.ema, ema_decay=args.ema_decay, soft_targets=args.soft_targets,
                         temperature=args.temperature, refine_with_segments=args.refine,
                         student_init=args.student_init)
    overrides.update(_parse_set(args.set))
    return TrainConfig.from_yaml(args.config, stage=stage, **overrides)


def _cmd_train_teacher(args) -> int:
    cfg = _config_from_args(args, "teacher")
    path = train_teacher(cfg)
    print(path)
    return 0


def _cmd_train_student(args) -> int:
    cfg = _config_from_args(args, "student")
    path = train_student(cfg, args.teacher)
    print(path)
    return 0


def add_cli(sub) -> None:
    """Register ``train-teacher`` and ``train-student`` on the ``drive-segment`` subparsers."""
    p = sub.add_parser("train-teacher", help="train the Segmenter teacher on partial pseudo-labels",
                       description=train_teacher.__doc__.split("\n")[0])
    _add_common(p)
    p.set_defaults(func=_cmd_train_teacher)

    p = sub.add_parser("train-student", help="cross-modal distillation of a student from the teacher",
                       description=train_student.__doc__.split("\n")[0])
    _add_common(p)
    p.add_argument("--teacher", required=True, metavar="CKPT", help="teacher checkpoint (or its --out dir)")
    p.add_argument("--no-ema", dest="ema", action="store_const", const=False, default=None,
                   help="frozen teacher instead of an EMA of the student")
    p.add_argument("--ema-decay", type=float, default=None)
    p.add_argument("--hard-targets", dest="soft_targets", action="store_const", const=False, default=None,
                   help="train on the argmax of the refined targets instead of probabilities")
    p.add_argument("--temperature", type=float, default=None)
    p.add_argument("--no-refine", dest="refine", action="store_const", const=False, default=None,
                   help="skip the LiDAR-segment refinement of the teacher's prediction")
    p.add_argument("--student-init", choices=("teacher", "backbone"), default=None)
    p.set_defaults(func=_cmd_train_student)
