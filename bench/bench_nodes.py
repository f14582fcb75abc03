"""Benchmark: segmentation_node path (Image message in -> mask out, in-process pub/sub) vs the bare model.

For each CPU backend (torch, onnxruntime) a small random-weight Segmenter (ViT-Ti/16 + conv
head, 128x384 input) runs on the real KITTI image. Reported, as medians over N frames:

* ``bare``: ``SegmentationModel.predict(rgb)`` (preprocess + forward + upsampling argmax);
* ``process``: ``SegmentationNode.process(msg)`` called directly (decode, predict, mono8 encode, publish);
* ``node``: publish an ``sensor_msgs/Image`` from a probe node and wait for ``~/mask`` on a
  probe subscription, all in one SingleThreadedExecutor (DDS transport both ways).

Goal: ``node / bare <= 1.5``. Run: ``python bench/run_bench.py nodes`` (or this file).
"""
from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
N_FRAMES = 9


def _models(tmp: Path):
    import torch

    from drive_segment_ros.inference.backends import load_model
    from drive_segment_ros.inference.export import export_onnx
    from drive_segment_ros.models.checkpoint import save_checkpoint
    from drive_segment_ros.models.segmenter import SegmenterConfig, build_segmenter

    torch.manual_seed(0)
    cfg = SegmenterConfig(backbone="vit_tiny_patch16_224", n_classes=19, decoder="conv", d_model=64, input_size=(128, 384))
    save_checkpoint(tmp / "ckpt", build_segmenter(cfg, allow_random=True), cfg)
    export_onnx(tmp / "ckpt", tmp / "model.onnx")
    return {"torch": load_model(tmp / "ckpt", backend="torch", device="cpu"),
            "onnxruntime": load_model(tmp / "model.onnx", backend="onnxruntime", device="cpu")}


def _kitti_rgb():
    import cv2

    from drive_segment_training.data import data_dir

    path = Path(data_dir()) / "kitti_000008" / "000008.png"
    if not path.is_file():
        raise SystemExit(f"bench_nodes: {path} not found (set DRIVE_SEGMENT_DATA)")
    return cv2.imread(str(path), cv2.IMREAD_COLOR)[:, :, ::-1].copy()


def main() -> None:
    import os
    import random

    import numpy as np
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter

    from drive_segment_ros.nodes.segmentation_node import SegmentationNode
    from drive_segment_ros.ros.image import rgb_to_image_msg
    from drive_segment_ros.ros.msgtypes import rclpy_types
    from drive_segment_ros.ros.qos import output_qos

    os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(100, 200)))
    rgb = _kitti_rgb()
    T = rclpy_types()
    with tempfile.TemporaryDirectory() as tmp:
        models = _models(Path(tmp))
        ctx = Context()
        rclpy.init(context=ctx)
        ex = SingleThreadedExecutor(context=ctx)
        probe = rclpy.create_node("bench_probe", context=ctx)
        ex.add_node(probe)
        print(f"KITTI image {rgb.shape[1]}x{rgb.shape[0]}, {N_FRAMES} frames per measurement, medians in ms")
        print(f"{'backend':12s} {'bare':>8s} {'process':>8s} {'node':>8s} {'node/bare':>10s}")
        try:
            for kind, model in models.items():
                node = SegmentationNode(f"bench_seg_{kind}", model=model, context=ctx,
                                        cli_args=["--ros-args", "-r", f"~/image:=/bench/{kind}/image"],
                                        parameter_overrides=[Parameter("require_camera_info", value=False)])
                ex.add_node(node)
                pub = probe.create_publisher(T.Image, f"/bench/{kind}/image", output_qos(1))
                got = []
                sub = probe.create_subscription(T.Image, f"/bench_seg_{kind}/mask", got.append, output_qos(1))
                deadline = time.monotonic() + 10
                while (pub.get_subscription_count() == 0 or sub.get_publisher_count() == 0) and time.monotonic() < deadline:
                    ex.spin_once(timeout_sec=0.02)
                for _ in range(2):  # warm-up
                    model.predict(rgb)
                bare, direct, full = [], [], []
                stamp = 1_000_000_000
                for i in range(N_FRAMES):
                    t0 = time.perf_counter()
                    model.predict(rgb)
                    bare.append((time.perf_counter() - t0) * 1e3)
                    stamp += 100_000_000
                    msg = rgb_to_image_msg(rgb, "camera", stamp, T)
                    t0 = time.perf_counter()
                    n = len(got)
                    node.process(msg)
                    direct.append((time.perf_counter() - t0) * 1e3)
                    while len(got) == n and time.perf_counter() - t0 < 10:  # drain the mask it published
                        ex.spin_once(timeout_sec=0.001)
                    stamp += 100_000_000
                    msg = rgb_to_image_msg(rgb, "camera", stamp, T)
                    n = len(got)
                    t0 = time.perf_counter()
                    pub.publish(msg)
                    while len(got) == n and time.perf_counter() - t0 < 10:
                        ex.spin_once(timeout_sec=0.001)
                    full.append((time.perf_counter() - t0) * 1e3)
                b, d, f = (statistics.median(x) for x in (bare, direct, full))
                print(f"{kind:12s} {b:8.1f} {d:8.1f} {f:8.1f} {f / b:10.2f}  {'OK' if f / b <= 1.5 else 'ABOVE 1.5x GOAL'}")
                ex.remove_node(node)
                node.destroy_node()
                assert np.array_equal(np.frombuffer(bytes(got[-1].data), np.uint8).reshape(rgb.shape[:2]), model.predict(rgb)[0])
        finally:
            ex.shutdown()
            probe.destroy_node()
            rclpy.shutdown(context=ctx)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
