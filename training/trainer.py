"""The one training loop of Drive&Segment's teacher and student (cross-modal distillation).

* **Teacher** (Vobecky et al., ECCV 2022, Sec. 3.3): a Segmenter trained with cross-entropy
  on the partial pseudo-labels (``ignore_index = 255`` off the LiDAR segments), on random
  crops with flips, scale jitter, photometric jitter and optional LiDAR-segment copy-paste
  (:mod:`drive_segment_training.augment`) -- set up by :func:`setup_teacher`.
* **Student** (Sec. 3.4, cross-modal distillation; the IJCV 2025 extension adds an
  exponential-moving-average teacher and soft targets): the teacher predicts on the whole
  augmented crop; inside every LiDAR segment its prediction is replaced by the segment's
  majority class (hard) or the segment-mean probability (soft)
  (:func:`~drive_segment_training.losses.refine_with_segments`); the student is trained on these
  full-image targets (:func:`~drive_segment_training.losses.distillation_loss`). With ``ema`` the
  teacher's weights follow the student's as an exponential moving average after every step (mean
  teacher, Tarvainen & Valpola 2017) -- :func:`ema_update`. Set up by :func:`setup_student`.

Both stages run through :class:`Trainer` (one loop: AdamW, polynomial "poly" learning-rate decay
with optional linear warm-up, bf16 autocast on CUDA). Under ``torchrun`` the same loop runs data-parallel
(torch DDP; ``batch_size`` is the global batch, rank 0 writes the outputs, the EMA teacher stays identical
on every rank, resuming works with another number of processes) -- :mod:`drive_segment_training.distributed`.
Outputs per stage (``cfg.out_dir``)::

    checkpoint/        save_checkpoint(): model.safetensors + config.json (+ extra: stage,
                       iteration, pseudo-label dir, backbone description, self_supervised)
    ema_teacher/       student stage with ema: the EMA teacher, same format
    optimizer.pt       optimizer + scheduler state, iteration, RNG state (torch.save, loaded
                       with weights_only=True) for --resume
    metrics.json       loss / lr history, timing, run settings
    loss_curve.png     the loss curve (matplotlib)
    train_config.json  the resolved TrainConfig

The command line (``drive-segment train-teacher`` / ``train-student``) is
:mod:`drive_segment_training.train_cli`.
"""
from __future__ import annotations

import copy
import json
import logging
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import nn
from tqdm import tqdm

from drive_segment_ros.devices import resolve_device
from drive_segment_ros.inference.preprocess import IMAGENET_MEAN, IMAGENET_STD
from drive_segment_ros.models.checkpoint import load_segmenter, save_checkpoint
from drive_segment_ros.models.segmenter import SegmenterConfig, build_segmenter
from drive_segment_ros.types import IGNORE_INDEX, DriveSegmentError
from drive_segment_training import distributed as ddp
from drive_segment_training.augment import AugmentConfig
from drive_segment_training.datasets import InfiniteSampler, PseudoLabelDataset, load_pseudo_label_index
from drive_segment_training.losses import distillation_loss, refine_with_segments, teacher_loss
from drive_segment_training.train_config import TrainConfig

LOG = logging.getLogger(__name__)

__all__ = [
    "CHECKPOINT_SUBDIR", "EMA_SUBDIR", "StageSetup", "Trainer", "build_model", "ema_update", "norm_stats",
    "poly_lr_factor", "resolve_checkpoint", "setup_student", "setup_teacher", "train_student", "train_teacher",
]

CHECKPOINT_SUBDIR = "checkpoint"
EMA_SUBDIR = "ema_teacher"


# --------------------------------------------------------------------------------------------
# Schedule and EMA
# --------------------------------------------------------------------------------------------
def poly_lr_factor(iteration: int, total: int, power: float = 0.9, warmup: int = 0) -> float:
    """Multiplier of the base lr at ``iteration``: linear warm-up then ``(1 - it/total) ** power``."""
    if warmup > 0 and iteration < warmup:
        return (iteration + 1) / float(warmup)
    return max(0.0, 1.0 - iteration / float(max(total, 1))) ** power


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


# --------------------------------------------------------------------------------------------
# Models and checkpoints
# --------------------------------------------------------------------------------------------
def build_model(cfg: TrainConfig, n_classes: int):
    """Segmenter for ``cfg`` with ``n_classes`` outputs: ``(model, SegmenterConfig)``.

    ``SegmenterConfig.for_backbone(backbone, n_classes, decoder=..., **cfg.segmenter)`` (per-backbone
    defaults: conv head of 128 channels for CNNs, 1-layer mask transformer for ViTs) built with
    ``build_segmenter``; raises DriveSegmentError when the backbone weights are missing (unless
    ``allow_random_backbone``) or the config is invalid.
    """
    scfg = SegmenterConfig.for_backbone(cfg.backbone, int(n_classes), decoder=cfg.decoder, **cfg.segmenter)
    model = build_segmenter(scfg, backbone_weights=cfg.backbone_weights, allow_random=cfg.allow_random_backbone)
    return model, scfg


def norm_stats(model, config=None) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    """RGB normalisation (mean, std) a segmenter expects: from ``config.mean/std``, the model,
    its ``backbone`` or ImageNet statistics, in that order."""
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


# --------------------------------------------------------------------------------------------
# The two stages: what differs between teacher and student
# --------------------------------------------------------------------------------------------
@dataclass
class StageSetup:
    """The models and loss of one stage, as built by :func:`setup_teacher` / :func:`setup_student`.

    Attributes:
        stage: ``"teacher"`` or ``"student"``.
        model, model_config: the network being trained and its ``SegmenterConfig``.
        n_classes: output classes the stage needs (the pseudo-label ``k``, or the teacher's classes).
        iteration: first iteration (> 0 when resuming).
        loss: ``loss(trainer, x, batch, reduction="mean") -> scalar tensor`` for one batch (``x`` on the
            device); ``reduction="sum"`` returns ``(sum, count)`` of the per-element losses (data-parallel runs).
        teacher, teacher_config, teacher_extra, teacher_path: the (frozen or EMA) teacher of the student.
        ema: the teacher follows the student (:func:`ema_update` after every step; saved as ``ema_teacher/``).
        extra: stage-specific checkpoint metadata.
    """

    stage: str
    model: nn.Module
    model_config: Any
    n_classes: int
    iteration: int
    loss: Callable[["Trainer", torch.Tensor, Dict[str, torch.Tensor]], torch.Tensor]
    teacher: Optional[nn.Module] = None
    teacher_config: Any = None
    teacher_extra: Dict[str, Any] = field(default_factory=dict)
    teacher_path: Optional[Path] = None
    ema: bool = False
    extra: Dict[str, Any] = field(default_factory=dict)


def _resume_model(resume_from: Path, stage: str, device):
    """``(model, config, iteration)`` of the checkpoint being resumed; it must be of ``stage``."""
    model, config, extra = load_segmenter(resume_from, device)
    if extra.get("stage", stage) != stage:
        raise DriveSegmentError(f"--resume: {resume_from} holds a {extra.get('stage')} checkpoint, not {stage}")
    return model, config, int(extra.get("iteration", 0))


def _check_classes(stage: str, config: Any, n_classes: int) -> None:
    n_out = int(getattr(config, "n_classes", n_classes))
    if n_out != n_classes:
        raise DriveSegmentError(f"{stage}: model has {n_out} classes but {n_classes} are needed (k changed?)")


def _teacher_batch_loss(trainer: "Trainer", x: torch.Tensor, batch: Dict[str, torch.Tensor],
                        reduction: str = "mean"):
    y = batch["label"].to(trainer.device, non_blocking=True)
    if reduction == "sum":
        return teacher_loss(trainer.net(x), y, reduction="sum"), (y != IGNORE_INDEX).sum()
    return teacher_loss(trainer.net(x), y)


def _student_batch_loss(trainer: "Trainer", x: torch.Tensor, batch: Dict[str, torch.Tensor],
                        reduction: str = "mean"):
    cfg = trainer.cfg
    valid = batch["valid"].to(trainer.device, non_blocking=True)
    T = float(cfg.temperature) if cfg.soft_targets else 1.0
    with torch.no_grad():
        renorm = trainer.teacher_renorm
        xt = x if renorm is None else x * renorm[0] + renorm[1]
        probs = torch.softmax(trainer.teacher(xt).float() / T, dim=1)
        if cfg.refine_with_segments:
            mode = "soft" if cfg.soft_targets else "hard"
            probs = refine_with_segments(probs, batch["segments"].to(trainer.device), mode)
    logits = trainer.net(x)
    if reduction == "sum":
        return (distillation_loss(logits, probs, valid, soft=cfg.soft_targets, temperature=T, reduction="sum"),
                valid.sum())
    return distillation_loss(logits, probs, valid, soft=cfg.soft_targets, temperature=T)


def setup_teacher(cfg: TrainConfig, index: dict, device, resume_from: Optional[Path]) -> StageSetup:
    """Teacher stage: a fresh Segmenter with ``k`` classes (or the resumed checkpoint), cross-entropy loss."""
    n_classes = int(index["k"])
    if resume_from is not None:
        model, config, iteration = _resume_model(resume_from, "teacher", device)
        LOG.info("teacher: resuming from %s at iteration %d", resume_from, iteration)
    else:
        (model, config), iteration = build_model(cfg, n_classes), 0
    _check_classes("teacher", config, n_classes)
    return StageSetup("teacher", model, config, n_classes, iteration, loss=_teacher_batch_loss)


def setup_student(cfg: TrainConfig, index: dict, device, resume_from: Optional[Path],
                  teacher_checkpoint: Optional[Union[str, Path]]) -> StageSetup:
    """Student stage: load the teacher, initialise the student from it (or from the backbone), distillation loss.

    Raises:
        DriveSegmentError: no / missing teacher, the teacher predicts fewer classes than ``k``,
        or ``ema`` with teacher and student architectures that differ.
    """
    if teacher_checkpoint is None:
        raise DriveSegmentError("train-student: a teacher checkpoint is required (--teacher)")
    tpath = resolve_checkpoint(teacher_checkpoint, "teacher checkpoint")
    teacher, teacher_config, teacher_extra = load_segmenter(tpath, device)
    n_classes = int(getattr(teacher_config, "n_classes"))
    if n_classes < int(index["k"]):
        raise DriveSegmentError(f"teacher {tpath} predicts {n_classes} classes but the pseudo-labels have k={index['k']}")
    iteration = 0
    if resume_from is not None:
        model, config, iteration = _resume_model(resume_from, "student", device)
        ema_dir = Path(cfg.out_dir) / EMA_SUBDIR
        if cfg.ema and (ema_dir / "config.json").is_file():
            teacher, _, _ = load_segmenter(ema_dir, device)
        LOG.info("student: resuming from %s at iteration %d", resume_from, iteration)
    elif cfg.student_init == "teacher":
        model, config = copy.deepcopy(teacher), teacher_config
    else:
        model, config = build_model(cfg, n_classes)
    _check_classes("student", config, n_classes)
    if cfg.ema:
        t_shapes = {k: tuple(v.shape) for k, v in teacher.state_dict().items()}
        s_shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        if t_shapes != s_shapes:
            raise DriveSegmentError(
                "train-student: ema needs the student and teacher architectures to match "
                f"(teacher {teacher_config.backbone}/{teacher_config.decoder}, student "
                f"{config.backbone}/{config.decoder}); use student_init: teacher or ema: false"
            )
    extra = dict(teacher_checkpoint=str(tpath), ema=bool(cfg.ema), soft_targets=bool(cfg.soft_targets),
                 refine_with_segments=bool(cfg.refine_with_segments), temperature=float(cfg.temperature))
    return StageSetup("student", model, config, n_classes, iteration, loss=_student_batch_loss, teacher=teacher,
                      teacher_config=teacher_config, teacher_extra=teacher_extra, teacher_path=tpath,
                      ema=bool(cfg.ema), extra=extra)


# --------------------------------------------------------------------------------------------
# The training loop
# --------------------------------------------------------------------------------------------
def _seed_everything(seed: int) -> None:
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
    fig = Figure(figsize=(6, 3.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
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


class Trainer:
    """One training stage (teacher or student) and its loop; see :func:`train_teacher` / :func:`train_student`.

    Args:
        cfg: the stage settings (``pseudo_dir`` and ``out_dir`` required).
        stage: ``"teacher"`` or ``"student"``.
        teacher_checkpoint: the student's teacher (checkpoint dir or its stage output dir).

    Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) the process group is joined here
    and the model wrapped in ``DistributedDataParallel`` (``self.net``; ``self.model`` stays the
    plain module that is saved); ``self.dist`` describes the run. :meth:`close` leaves the group.

    Raises:
        DriveSegmentError: bad config / pseudo-label directory / device, a global batch that does not
        split over the processes, or a stage set-up error.
    """

    def __init__(self, cfg: TrainConfig, stage: str, teacher_checkpoint: Optional[Path] = None) -> None:
        cfg.validate()
        if stage not in ("teacher", "student"):
            raise DriveSegmentError(f"train: stage must be 'teacher' or 'student', got {stage!r}")
        if not cfg.pseudo_dir:
            raise DriveSegmentError("train: pseudo-label directory not set")
        if not cfg.out_dir:
            raise DriveSegmentError("train: output directory not set (--out)")
        self.cfg, self.stage = cfg, stage
        self.out = Path(cfg.out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.ckpt_dir = self.out / CHECKPOINT_SUBDIR
        self.device = ddp.distributed_device(resolve_device(cfg.device))
        self.dist = ddp.init_from_env(self.device, cfg.dist_backend)
        self.batch_per_rank = ddp.per_rank_batch(int(cfg.batch_size), self.dist.world_size)
        self.use_bf16 = bool(cfg.bf16) and self.device.type == "cuda"
        _seed_everything(cfg.seed)
        # checks every frame's files up front; the frame list is not kept (the dataset streams it)
        index = load_pseudo_label_index(cfg.pseudo_dir)
        n_frames = len(index.pop("frames"))
        #: ``index.json``'s metadata (``k``, ``backbone``, ...), without the frame records.
        self.index = index
        self.total = int(math.ceil(cfg.epochs * n_frames / cfg.batch_size)) if cfg.epochs else int(cfg.iterations)

        resume_from = self.ckpt_dir if cfg.resume and (self.ckpt_dir / "config.json").is_file() else None
        if cfg.resume and resume_from is None:
            LOG.warning("%s: --resume given but %s has no checkpoint; starting from scratch", stage, self.ckpt_dir)
        if stage == "student":
            setup = setup_student(cfg, index, self.device, resume_from, teacher_checkpoint)
        else:
            setup = setup_teacher(cfg, index, self.device, resume_from)
        self.setup = setup
        self.model, self.model_config, self.iteration = setup.model, setup.model_config, setup.iteration
        self.teacher, self.teacher_config = setup.teacher, setup.teacher_config
        self.model.to(self.device).train()
        if self.teacher is not None:
            self.teacher.to(self.device).eval()
            for p in self.teacher.parameters():
                p.requires_grad_(False)
        #: the module the loss calls: ``self.model`` or its DistributedDataParallel wrapper.
        self.net = self.model
        if self.dist.distributed:
            if cfg.sync_bn and self.device.type == "cuda":
                self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
            # buffers are broadcast from rank 0 after each step (ddp.broadcast_buffers), not at every forward
            self.net = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device] if self.device.type == "cuda" else None,
                **ddp.no_forward_buffer_sync())
            if self.dist.rank > 0:  # other dropout masks than rank 0; rank 0 keeps the one-process stream
                torch.manual_seed(ddp.rank_seed(cfg.seed * 1_000_003 + self.iteration, self.dist.rank))

        self.backbone_description = str(
            setup.teacher_extra.get("backbone_description")
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
        if self.dist.distributed:  # this rank's slice of every global batch of the same stream
            self.sampler = ddp.RankSampler(self.sampler, self.batch_per_rank, self.dist.rank, self.dist.world_size)
        self.loader = torch.utils.data.DataLoader(
            self.dataset, batch_size=self.batch_per_rank, sampler=self.sampler, num_workers=cfg.num_workers,
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
        #: ``(a, b)`` with ``x_teacher = x * a + b`` when teacher and student normalise differently, else None.
        self.teacher_renorm = None
        if self.teacher is not None:
            t_mean, t_std = norm_stats(self.teacher, self.teacher_config)
            if (t_mean, t_std) != (tuple(mean), tuple(std)):
                # x_teacher = (x * std + mean - t_mean) / t_std, per channel
                a = torch.tensor(std) / torch.tensor(t_std)
                b = (torch.tensor(mean) - torch.tensor(t_mean)) / torch.tensor(t_std)
                self.teacher_renorm = (a.view(1, 3, 1, 1).to(self.device), b.view(1, 3, 1, 1).to(self.device))
        if resume_from is not None:
            self._load_training_state()

    # -- persistence ------------------------------------------------------------------------
    def _load_training_state(self) -> None:
        opt_path = self.out / "optimizer.pt"
        if opt_path.is_file():
            state = torch.load(opt_path, map_location=self.device, weights_only=True)
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            if "torch_rng" in state and self.dist.is_main:
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
        extra.update(self.setup.extra)
        return extra

    def save(self) -> None:
        """Write checkpoint/, ema_teacher/ (student + ema), optimizer.pt, metrics.json, loss_curve.png
        (rank 0 only; the other ranks wait for it)."""
        if self.dist.is_main:
            self._save()
        ddp.barrier(self.dist)

    def close(self) -> None:
        """Leave the process group this trainer joined (no-op in a one-process run)."""
        ddp.cleanup(self.dist)

    def _save(self) -> None:
        extra = self._extra()
        save_checkpoint(self.ckpt_dir, self.model, self.model_config, extra)
        if self.setup.ema:
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
            "world_size": int(self.dist.world_size),
            "batch_per_rank": int(self.batch_per_rank),
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
    def _loss(self, batch) -> torch.Tensor:
        x = batch["image"].to(self.device, non_blocking=True)
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.use_bf16):
            return self.setup.loss(self, x, batch)

    def _dist_loss(self, batch) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(loss to back-propagate, global mean loss)`` of a data-parallel step (:func:`ddp.global_mean_loss`)."""
        x = batch["image"].to(self.device, non_blocking=True)
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.use_bf16):
            local_sum, count = self.setup.loss(self, x, batch, reduction="sum")
        return ddp.global_mean_loss(local_sum, count, self.dist)

    def run(self, stop_at: Optional[int] = None) -> Path:
        """Train up to ``cfg`` iterations (or only up to iteration ``stop_at``, for time-boxed jobs;
        the state is saved there and ``resume`` continues). Returns the checkpoint directory."""
        cfg = self.cfg
        if self.iteration >= self.total:
            LOG.info("%s: already trained for %d/%d iterations", self.stage, self.iteration, self.total)
            if self.dist.distributed or not (self.ckpt_dir / "config.json").is_file():
                self.save()  # every rank calls it (barrier inside)
            return self.ckpt_dir
        if self.dist.is_main:
            LOG.info("%s: %d frames, k=%d, %d iterations from %d, batch %d%s, crop %s, device %s%s", self.stage,
                     len(self.dataset), self.index["k"], self.total, self.iteration, cfg.batch_size,
                     f" ({self.dist.world_size} processes x {self.batch_per_rank}, {self.dist.backend})"
                     if self.dist.distributed else "", cfg.crop_size, self.device, " (bf16)" if self.use_bf16 else "")
        batches = iter(self.loader)
        end = self.total if stop_at is None else max(self.iteration, min(int(stop_at), self.total))
        bar = tqdm(range(self.iteration, end), desc=f"train-{self.stage}", unit="it",
                   initial=self.iteration, total=self.total, disable=None if self.dist.is_main else True)
        for _ in bar:
            t0, c0 = time.perf_counter(), time.process_time()
            batch = next(batches)
            if self.dist.distributed:
                loss, loss_value = self._dist_loss(batch)
            else:
                loss = loss_value = self._loss(batch)
            if not torch.isfinite(loss_value):
                raise DriveSegmentError(f"{self.stage}: loss became {float(loss_value)} at iteration {self.iteration}")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            lr = self.optimizer.param_groups[0]["lr"]
            self.optimizer.step()
            self.scheduler.step()
            if self.dist.distributed:  # BatchNorm statistics of rank 0 everywhere: identical EMA teachers
                ddp.broadcast_buffers(self.model, self.dist)
            if self.setup.ema:
                ema_update(self.teacher, self.model, cfg.ema_decay)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.iteration += 1
            self.history["loss"].append(float(loss_value.detach()))
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
        if self.dist.is_main:
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
    trainer = Trainer(cfg, "teacher")
    try:
        return trainer.run()
    finally:
        trainer.close()


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
    trainer = Trainer(cfg, "student", Path(teacher_checkpoint))
    try:
        return trainer.run()
    finally:
        trainer.close()
