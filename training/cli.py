"""``drive-segment``: the one command-line entry point of the offline pipeline.

Each stage module contributes its subcommand(s) through ``add_cli(subparsers)``; the
handlers import heavy dependencies (torch, open3d, timm) lazily so ``--help`` stays fast.
User errors (:class:`~drive_segment_ros.types.DriveSegmentError`) and operating-system errors
(``OSError``: missing files, permissions, a full disk) are printed as one line
``drive-segment: error: ...`` with exit status 2.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import List, Optional

from drive_segment_ros.types import DriveSegmentError

#: Modules that provide ``add_cli(subparsers)``, in the order the stages run.
CLI_MODULES = (
    "drive_segment_training.importers",        # import-kitti, import-nuscenes
    "drive_segment_training.drives",           # inspect
    "drive_segment_training.proposals_stage",  # proposals
    "drive_segment_training.pseudo_labels",    # pseudo-label
    "drive_segment_training.ray_pseudo_labels",  # pseudo-label --ray (adds the Ray options)
    "drive_segment_training.train_cli",        # train-teacher, train-student
    "drive_segment_training.benchmark_eval",   # evaluate
    "drive_segment_training.demo",             # demo
    "drive_segment_training.export_cli",       # export, build-engine
    "drive_segment_training.official",         # import-official (the authors' released checkpoint)
)

DESCRIPTION = """\
Drive&Segment: unsupervised semantic segmentation of urban scenes from camera + LiDAR drives.

Stages, in order (each reads what the previous wrote):
  import-kitti / import-nuscenes  turn dataset samples into ROS 2 bags (Image, CameraInfo, PointCloud2, /tf_static)
  inspect                         list a bag's camera / LiDAR topics and how images pair with scans
  proposals                       LiDAR ground removal + segments, projected to per-image segment maps (+ overlays)
  pseudo-label                    DINO features pooled per segment, k-means pseudo-classes, partial label PNGs
  train-teacher / train-student   Segmenter teacher on partial labels, then cross-modal distillation to a student
  evaluate                        Hungarian-matched mIoU / pixel accuracy on labelled images
  export / build-engine           ONNX export (checked with ONNX Runtime) and TensorRT engine build
  import-official                 the authors' released segmenter_nusc.pth -> a checkpoint folder
  demo                            all of the above on the real samples in ../shared/data, HTML report
"""


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every stage's subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="drive-segment", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in CLI_MODULES:
        module = importlib.import_module(name)
        module.add_cli(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the ``drive-segment`` console script. Returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        result = args.func(args)
    except (DriveSegmentError, OSError) as exc:  # OSError: full disk, permissions, missing files ...
        print(f"drive-segment: error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("drive-segment: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
