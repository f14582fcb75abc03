"""``drive-segment export`` / ``build-engine``: the command line of the core export functions.

``export CHECKPOINT --onnx model.onnx [--height --width --opset --dynamic-batch --dynamic-hw
--image IMG]`` (:func:`drive_segment_ros.inference.export.export_onnx`) and ``build-engine
model.onnx [--engine out.engine] [--fp16/--no-fp16] [--workspace-gb N] [--timing-cache F]
[--force]`` (:func:`drive_segment_ros.inference.tensorrt_engine.build_engine`).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from drive_segment_ros.inference.backends import import_tensorrt
from drive_segment_ros.inference.export import export_onnx
from drive_segment_ros.inference.tensorrt_engine import build_engine, engine_is_stale
from drive_segment_ros.types import DriveSegmentError

__all__ = ["add_cli"]


def _cmd_export(args: argparse.Namespace) -> int:
    report = export_onnx(
        args.checkpoint,
        args.onnx,
        height=args.height,
        width=args.width,
        opset=args.opset,
        dynamic_batch=args.dynamic_batch,
        dynamic_hw=args.dynamic_hw,
        image=args.image,
    )
    print(f"wrote {report['onnx_path']} ({report['size_mb']:.1f} MB, input {'x'.join(map(str, report['input_shape']))}, {report['n_classes']} classes)")
    print(
        f"ONNX Runtime vs torch on {report['check_input']}: max abs diff {report['max_abs_diff']:.3g}, "
        f"mean {report['mean_abs_diff']:.3g}, argmax agreement {100 * report['argmax_agreement']:.2f}%"
    )
    if "dynamic_check" in report:
        for d in report["dynamic_check"]:
            print(f"dynamic shape check {'x'.join(map(str, d['input_shape']))}: max abs diff {d['max_abs_diff']:.3g}")
    return 0


def _cmd_build_engine(args: argparse.Namespace) -> int:
    import_tensorrt()  # fail first, with one clear line, on machines without TensorRT
    onnx_path = Path(args.onnx)
    if not onnx_path.is_file():
        raise DriveSegmentError(f"ONNX model {onnx_path} not found")
    engine = Path(args.engine) if args.engine else onnx_path.with_suffix(".engine")
    if not args.force and not engine_is_stale(engine, onnx_path):
        print(f"{engine} is up to date (same ONNX, GPU and TensorRT version); use --force to rebuild")
        return 0
    rec = build_engine(onnx_path, engine, fp16=args.fp16, workspace_gb=args.workspace_gb, timing_cache=args.timing_cache, max_batch=args.max_batch)
    print(f"wrote {engine} for {rec['gpu_name']} (sm {rec['compute_capability']}, TensorRT {rec['tensorrt_version']}) in {rec['build_s']:.1f} s")
    return 0


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Register ``export`` and ``build-engine`` on the ``drive-segment`` parser."""
    p = subparsers.add_parser("export", help="export a checkpoint to ONNX (checked with ONNX Runtime)")
    p.add_argument("checkpoint", help="checkpoint directory (save_checkpoint output)")
    p.add_argument("--onnx", required=True, help="output .onnx file")
    p.add_argument("--height", type=int, default=None, help="input height (default: the config's input_size)")
    p.add_argument("--width", type=int, default=None, help="input width (default: the config's input_size)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--dynamic-batch", action="store_true", help="dynamic batch dimension")
    p.add_argument("--dynamic-hw", action="store_true", help="dynamic height and width")
    p.add_argument("--image", default=None, help="real RGB image for the ORT-vs-torch check (default: random input)")
    p.set_defaults(func=_cmd_export)

    b = subparsers.add_parser("build-engine", help="build a TensorRT engine from an exported ONNX model")
    b.add_argument("onnx", help="the .onnx written by `drive-segment export`")
    b.add_argument("--engine", default=None, help="output engine (default: <onnx>.engine)")
    b.add_argument("--fp16", action=argparse.BooleanOptionalAction, default=True, help="allow FP16 kernels (default on)")
    b.add_argument("--workspace-gb", type=float, default=4.0, help="builder workspace limit in GiB (default 4)")
    b.add_argument("--timing-cache", default=None, help="timing cache file (default <engine>.timing.cache)")
    b.add_argument("--max-batch", type=int, default=4, help="largest batch of the dynamic-shape profile (default 4)")
    b.add_argument("--force", action="store_true", help="rebuild even when the engine is up to date")
    b.set_defaults(func=_cmd_build_engine)
