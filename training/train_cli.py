"""``drive-segment train-teacher`` / ``train-student``: the command line of :mod:`drive_segment_training.trainer`.

Settings come from ``config/train.yaml`` (or ``--config``), its ``teacher:`` / ``student:``
section, then the command-line flags and ``--set KEY=VALUE`` (any :class:`TrainConfig` key).

Data-parallel on several GPUs (or CPU processes), with torch DDP: start the same command under
``torchrun``, e.g. ``torchrun --standalone --nproc_per_node=4 $(which drive-segment) train-teacher PL --out OUT
--batch-size 32`` (``--batch-size`` is then the global batch; :mod:`drive_segment_training.distributed`).
Only rank 0 writes the outputs and prints the checkpoint path.
"""
from __future__ import annotations

import os
from typing import Any, Dict, Iterable, Optional

import yaml

from drive_segment_ros.types import DriveSegmentError
from drive_segment_training.train_config import TrainConfig
from drive_segment_training.trainer import train_student, train_teacher

__all__ = ["add_cli"]


def _parse_set(items: Optional[Iterable[str]]) -> Dict[str, Any]:
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
    return TrainConfig.from_yaml(args.config, stage, **overrides)


def _cmd_train_teacher(args) -> int:
    cfg = _config_from_args(args, "teacher")
    path = train_teacher(cfg)
    if os.environ.get("RANK", "0") == "0":  # torchrun: rank 0 only
        print(path)
    return 0


def _cmd_train_student(args) -> int:
    cfg = _config_from_args(args, "student")
    path = train_student(cfg, args.teacher)
    if os.environ.get("RANK", "0") == "0":  # torchrun: rank 0 only
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
