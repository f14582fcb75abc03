"""The default input QoS receives from both kinds of publisher found on a car, in separate processes.

``segmentation_node`` (own process, default ``qos.image.*``: best effort, volatile, KEEP_LAST 1)
gets 1242x375 rgb8 images (1.4 MB) at 10 Hz from a publisher process with SensorDataQoS (best
effort, a camera driver) and then from one with reliable QoS (a bag player). The node keeps up
at 10 Hz, so every image must become a mask (before the Fast DDS large-data profile, a
best-effort reader lost 40-65 % of such images here; see drive_segment_ros/nodes/transport.py).
Also: the QoS parameters are validated, and the profile helper leaves a user's profile alone.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

rclpy = pytest.importorskip("rclpy")

from test_ros_harness import NodeProcess, RosHarness, assert_clean_exit, process_env, tiny_model  # noqa: E402

from drive_segment_ros.nodes.transport import FASTDDS_PROFILE_XML, apply_fastdds_profile, qos_from_parameters  # noqa: E402
from drive_segment_ros.ros.msgtypes import rclpy_types  # noqa: E402
from drive_segment_ros.types import DriveSegmentError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
N = 20


def test_qos_parameters_and_profile(tmp_path):
    from rclpy.qos import DurabilityPolicy, ReliabilityPolicy

    q = qos_from_parameters({"qos.image.reliability": "reliable", "qos.image.durability": "transient_local", "qos.image.depth": 3}, "image")
    assert (q.reliability, q.durability, q.depth) == (ReliabilityPolicy.RELIABLE, DurabilityPolicy.TRANSIENT_LOCAL, 3)
    with pytest.raises(DriveSegmentError, match="qos.image.reliability"):
        qos_from_parameters({"qos.image.reliability": "sometimes", "qos.image.durability": "volatile", "qos.image.depth": 1}, "image")
    with pytest.raises(DriveSegmentError, match="depth"):
        qos_from_parameters({"qos.image.reliability": "reliable", "qos.image.durability": "volatile", "qos.image.depth": 0}, "image")
    env = {}
    path = apply_fastdds_profile(env)
    assert env["FASTDDS_DEFAULT_PROFILES_FILE"] == path and Path(path).read_text() == FASTDDS_PROFILE_XML
    assert (ROOT / "config" / "fastdds_large_data.xml").read_text() == FASTDDS_PROFILE_XML  # the file users deploy
    mine = {"FASTDDS_DEFAULT_PROFILES_FILE": "/etc/my_profile.xml"}
    assert apply_fastdds_profile(mine) is None and mine["FASTDDS_DEFAULT_PROFILES_FILE"] == "/etc/my_profile.xml"
    assert apply_fastdds_profile({"DRIVE_SEGMENT_FASTDDS_PROFILE": "none"}) is None
    assert apply_fastdds_profile({"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"}) is None


def test_default_qos_receives_best_effort_and_reliable_publishers(tmp_path):
    ros = RosHarness("transport")
    T = rclpy_types()
    ckpt = tmp_path / "ckpt"
    tiny_model(ckpt)
    env = process_env(int(os.environ["ROS_DOMAIN_ID"]))
    node = NodeProcess("drive_segment_ros.nodes.segmentation_node",
                       ["-r", "__node:=seg_qos", "-r", "~/image:=/qos/image", "-p", f"model_path:={ckpt}",
                        "-p", "use_lidar:=false", "-p", "require_camera_info:=false"], env, tmp_path, "seg_qos")
    masks = ros.record(T.Image, "/seg_qos/mask")
    try:
        assert node.wait_for("segmentation_node active", 90.0), node.text()
        counts = {}
        for kind in ("best_effort", "reliable"):
            before = len(masks)
            pub = subprocess.Popen([sys.executable, str(ROOT / "bench" / "bench_node_transport.py"), "publish", "--kind", "kitti",
                                    "--topic", "/qos/image", "--rate", "10", "--frames", str(N), "--qos", kind],
                                   env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            assert ros.spin_until(lambda: pub.poll() is not None, 60.0)
            ros.spin_until(lambda: len(masks) - before >= N, 5.0)
            out, err = pub.communicate()
            assert pub.returncode == 0 and f"published {N}" in out, err[-2000:]
            counts[kind] = len(masks) - before
        # the node keeps up at 10 Hz: no loss from either kind of publisher (tolerance: one frame on a loaded machine)
        assert counts["best_effort"] >= N - 1 and counts["reliable"] >= N - 1, counts
        node.signal(__import__("signal").SIGTERM, group=False)
        assert_clean_exit(node)
    finally:
        node.close()
        ros.close()
