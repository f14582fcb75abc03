"""Benchmark: camera -> segmentation_node -> mask over real DDS, every party in its own process.

Run: ``python bench/run_bench.py node_transport`` (part of ``make bench``; not a test).

Two sections, a few seconds per case:

1. ``transport``: one publisher process sends KITTI-sized rgb8 images (1242x375, 1.4 MB) at
   10 Hz to two idle subscribers in this process (best effort depth 1 = the node's default
   QoS, and reliable depth 1), once with Fast DDS's defaults (``DRIVE_SEGMENT_FASTDDS_PROFILE=none``)
   and once with the large-data profile (:mod:`drive_segment_ros.nodes.transport`). Shows
   where frames are lost.
2. ``node``: per input (KITTI 1242x375 rgb8 ``Image``; nuScenes CAM_FRONT 1600x900 JPEG
   ``CompressedImage``) one ``segmentation_node`` process (tiny random ViT-Ti model, 128x384
   input, CPU) and per rate 10 / 20 / 30 Hz one publisher process (SensorDataQoS, best
   effort, like a camera driver; header stamp = wall clock at publish). Printed: frames out
   (published), frames in (received by the node, from its ``/diagnostics``), masks (received
   here), latency header stamp -> mask receipt p50 / p95 / max (ms), node RSS (MB).

The publisher role is this file run as ``python bench/bench_node_transport.py publish ...``
(also used by ``test/test_ros_transport.py``).
"""
from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECONDS = 3.0
RATES = (10, 20, 30)


# ------------------------------------------------------------------ publisher process
def _frame(kind: str):
    """(message builder, description) for ``kitti`` (rgb8 Image) or ``nuscenes`` (JPEG CompressedImage)."""
    import cv2
    import numpy as np

    from drive_segment_ros.ros.image import encoded_to_compressed_msg, rgb_to_image_msg
    from drive_segment_ros.ros.msgtypes import rclpy_types

    T = rclpy_types()
    data = Path(os.environ.get("DRIVE_SEGMENT_DATA", ROOT.parent / "shared" / "data"))
    if kind == "kitti":
        path = data / "kitti_000008" / "000008.png"
        rgb = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if rgb is None:  # no sample data: same size, synthetic content
            rgb = np.random.default_rng(0).integers(0, 255, (375, 1242, 3), dtype=np.uint8)
        rgb = np.ascontiguousarray(rgb[:, :, ::-1])
        return (lambda stamp: rgb_to_image_msg(rgb, "camera_color_left_optical", stamp, T)), T.Image
    jpgs = sorted(data.glob("nuscenes_n015/*CAM_FRONT__*.jpg"))
    if jpgs:
        raw = jpgs[0].read_bytes()
    else:  # pragma: no cover - no sample data
        ok, enc = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 255, (900, 1600, 3), dtype=np.uint8))
        raw = enc.tobytes()
    return (lambda stamp: encoded_to_compressed_msg(raw, "jpeg", "cam_front_optical", stamp, T)), T.CompressedImage


def publish_main(argv) -> int:
    """Publisher process: ``publish --kind kitti|nuscenes --topic T --rate HZ --seconds S --qos best_effort|reliable``.

    Waits (<= 20 s) for ``--subscribers`` subscriptions, then publishes at the rate with
    ``header.stamp`` = wall clock (ns), lingers 1 s, prints ``published N``.
    """
    import rclpy
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from rclpy.signals import SignalHandlerOptions

    from drive_segment_ros.nodes.transport import apply_fastdds_profile

    p = argparse.ArgumentParser(prog="bench_node_transport publish")
    p.add_argument("--kind", default="kitti")
    p.add_argument("--topic", required=True)
    p.add_argument("--rate", type=float, default=10.0)
    p.add_argument("--seconds", type=float, default=SECONDS)
    p.add_argument("--frames", type=int, default=0, help="publish this many frames instead of --seconds")
    p.add_argument("--qos", default="best_effort")
    p.add_argument("--subscribers", type=int, default=1)
    a = p.parse_args(argv)
    apply_fastdds_profile()  # a camera driver configured as docs/vehicle.md says (unless DRIVE_SEGMENT_FASTDDS_PROFILE=none)
    make, cls = _frame(a.kind)
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node(f"bench_publisher_{os.getpid()}")
    qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5 if a.qos == "best_effort" else 10,
                     reliability=ReliabilityPolicy.BEST_EFFORT if a.qos == "best_effort" else ReliabilityPolicy.RELIABLE)
    pub = node.create_publisher(cls, a.topic, qos)
    deadline = time.monotonic() + 20
    while pub.get_subscription_count() < a.subscribers and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)
    n = a.frames or int(round(a.seconds * a.rate))
    period = 1.0 / a.rate
    t0 = time.monotonic()
    for i in range(n):
        delay = t0 + i * period - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        pub.publish(make(time.time_ns()))
    time.sleep(1.0)
    print(f"published {n}", flush=True)
    node.destroy_node()
    rclpy.shutdown()
    return 0


# ------------------------------------------------------------------ benchmark driver
def _env(domain: int, **extra) -> dict:
    env = dict(os.environ)
    env.update(ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    env.update(extra)
    return env


def _publisher(env, **kw) -> subprocess.Popen:
    args = [sys.executable, str(Path(__file__).resolve()), "publish"]
    for k, v in kw.items():
        args += [f"--{k}", str(v)]
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def _pct(values, q):
    import numpy as np

    return float(np.percentile(values, q)) if values else float("nan")


def _spin_while(ex, cond, timeout):
    deadline = time.monotonic() + timeout
    while cond() and time.monotonic() < deadline:
        ex.spin_once(timeout_sec=0.01)


def bench_transport(domain: int) -> None:
    """Section 1: idle best-effort vs reliable subscribers, Fast DDS defaults vs large-data profile."""
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

    from drive_segment_ros.ros.msgtypes import rclpy_types

    T = rclpy_types()
    print(f"\n-- transport: 1242x375 rgb8 (1.4 MB) at 10 Hz for {SECONDS:.0f} s from a reliable publisher process to idle subscribers")
    print(f"{'publisher Fast DDS settings':34s} {'sent':>5s} {'best effort d1':>15s} {'reliable d1':>12s}")
    for label, extra in (("defaults (512 KiB SHM segment)", {"DRIVE_SEGMENT_FASTDDS_PROFILE": "none"}), ("large-data profile (32 MiB)", {})):
        ctx = Context()
        os.environ["ROS_DOMAIN_ID"] = str(domain)
        rclpy.init(context=ctx)
        ex = SingleThreadedExecutor(context=ctx)
        node = rclpy.create_node("bench_transport_sub", context=ctx)
        ex.add_node(node)
        got = {"be": 0, "rel": 0}
        for key, rel in (("be", ReliabilityPolicy.BEST_EFFORT), ("rel", ReliabilityPolicy.RELIABLE)):
            node.create_subscription(T.Image, "/bench/transport", lambda m, k=key: got.__setitem__(k, got[k] + 1),
                                     QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=rel))
        pub = _publisher(_env(domain, **extra), kind="kitti", topic="/bench/transport", rate=10, seconds=SECONDS, qos="reliable", subscribers=2)
        _spin_while(ex, lambda: pub.poll() is None, SECONDS + 30)
        out = pub.stdout.read().strip() if pub.stdout else ""
        _spin_while(ex, lambda: True, 0.3)
        sent = int(out.split()[-1]) if out.startswith("published") else -1
        print(f"{label:34s} {sent:5d} {got['be']:15d} {got['rel']:12d}")
        ex.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=ctx)
        domain += 1


def bench_node(domain: int) -> None:
    """Section 2: publisher process -> segmentation_node process -> this process, per input and rate."""
    import rclpy
    import torch
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor

    from drive_segment_ros.models.checkpoint import save_checkpoint
    from drive_segment_ros.models.segmenter import SegmenterConfig, build_segmenter
    from drive_segment_ros.ros.msgtypes import header_stamp_ns, rclpy_types
    from drive_segment_ros.ros.qos import output_qos

    T = rclpy_types()
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        cfg = SegmenterConfig(backbone="vit_tiny_patch16_224", n_classes=19, decoder="conv", d_model=64, input_size=(128, 384))
        save_checkpoint(Path(tmp) / "ckpt", build_segmenter(cfg, allow_random=True), cfg)
        print(f"\n-- node: publisher process (SensorDataQoS) -> segmentation_node process (ViT-Ti 128x384, torch CPU, 1 thread) -> here; {SECONDS:.0f} s per case")
        print(f"{'input':28s} {'Hz':>3s} {'out':>4s} {'in':>4s} {'masks':>5s} {'p50 ms':>7s} {'p95 ms':>7s} {'max ms':>7s} {'RSS MB':>7s}")
        for kind, transport, desc in (("kitti", "raw", "KITTI 1242x375 rgb8"), ("nuscenes", "compressed", "nuScenes 1600x900 JPEG")):
            env = _env(domain)
            os.environ["ROS_DOMAIN_ID"] = str(domain)
            node_proc = subprocess.Popen(
                [sys.executable, "-m", "drive_segment_ros.nodes.segmentation_node", "--ros-args", "-r", "__node:=bench_seg",
                 "-r", "~/image:=/bench/image", "-p", f"model_path:={Path(tmp) / 'ckpt'}", "-p", "backend:=torch",
                 "-p", f"image_transport:={transport}", "-p", "use_lidar:=false", "-p", "require_camera_info:=false"],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            ctx = Context()
            rclpy.init(context=ctx)
            ex = SingleThreadedExecutor(context=ctx)
            rec = rclpy.create_node("bench_recorder", context=ctx)
            ex.add_node(rec)
            lat = []
            diag = {}

            def on_mask(msg):
                lat.append((time.time_ns() - header_stamp_ns(msg)) / 1e6)

            def on_diag(msg):
                for s in msg.status:
                    if s.name.startswith("bench_seg:"):
                        diag.update({kv.key: kv.value for kv in s.values})

            rec.create_subscription(T.Image, "/bench_seg/mask", on_mask, output_qos(50))
            rec.create_subscription(DiagnosticArray, "/diagnostics", on_diag, output_qos(10))
            try:
                _spin_while(ex, lambda: diag.get("state") != "active", 90)
                for rate in RATES:
                    lat.clear()
                    n_in0 = int(diag.get("frames in", 0))
                    pub = _publisher(env, kind=kind, topic="/bench/image", rate=rate, seconds=SECONDS, qos="best_effort")
                    _spin_while(ex, lambda: pub.poll() is None, SECONDS + 40)
                    _spin_while(ex, lambda: True, 1.2)  # last masks + one diagnostics period
                    out = pub.stdout.read().strip() if pub.stdout else ""
                    sent = int(out.split()[-1]) if out.startswith("published") else -1
                    n_in = int(diag.get("frames in", 0)) - n_in0
                    print(f"{desc:28s} {rate:3d} {sent:4d} {n_in:4d} {len(lat):5d} {_pct(lat, 50):7.1f} {_pct(lat, 95):7.1f} "
                          f"{max(lat) if lat else float('nan'):7.1f} {_rss_mb(node_proc.pid):7.0f}", flush=True)
            finally:
                node_proc.send_signal(2)
                try:
                    node_proc.wait(20)
                except subprocess.TimeoutExpired:  # pragma: no cover
                    node_proc.kill()
                ex.shutdown()
                rec.destroy_node()
                rclpy.shutdown(context=ctx)
            domain += 1


def main() -> None:
    domain = random.randint(150, 200)
    bench_transport(domain)
    bench_node(domain + 5)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    if len(sys.argv) > 1 and sys.argv[1] == "publish":
        raise SystemExit(publish_main(sys.argv[2:]))
    main()
