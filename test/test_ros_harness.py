"""Shared helpers of the ROS node tests: rclpy context per module, real KITTI / nuScenes frames.

Imported by the other ``test_ros_*.py`` modules (pytest puts ``test/`` on ``sys.path``);
the only tests here check the helpers themselves (frame loading and message round trips).
"""
from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pytest


# ------------------------------------------------------------------ real frames (raw files)
def kitti_frame(kitti_dir: Path) -> dict:
    """KITTI 000008: rgb (375,1242,3) uint8, points (N,4) float32 velodyne, K, T_cam_lidar (CAM2).

    K = P2[:3,:3]; T_cam_lidar = [I | K^-1 P2[:3,3]] @ R0_rect @ Tr_velo_to_cam so that
    K @ T_cam_lidar @ X == P2 @ R0_rect @ Tr_velo_to_cam @ X (KITTI devkit convention).
    """
    import cv2

    calib = json.loads((kitti_dir / "calib.json").read_text())
    P2 = np.asarray(calib["cameras"]["CAM2"]["cam2img"], dtype=np.float64)[:3, :4]
    R0 = np.eye(4)
    R0[:3, :3] = np.asarray(calib["R0_rect"], dtype=np.float64)[:3, :3]
    Tr = np.eye(4)
    Tr[:3, :4] = np.asarray(calib["Tr_velo_to_cam"], dtype=np.float64)[:3, :4]
    K = P2[:, :3].copy()
    shift = np.eye(4)
    shift[:3, 3] = np.linalg.solve(K, P2[:, 3])
    bgr = cv2.imread(str(kitti_dir / "000008.png"), cv2.IMREAD_COLOR)
    points = np.fromfile(kitti_dir / "000008.bin", dtype=np.float32).reshape(-1, 4)
    return dict(rgb=np.ascontiguousarray(bgr[:, :, ::-1]), points=points, rings=None, K=K, T_cam_lidar=shift @ R0 @ Tr,
                camera_frame="camera_color_left_optical", lidar_frame="velo_link",
                image_stamp_ns=1_317_000_000_000_000_000, lidar_stamp_ns=1_317_000_000_010_000_000)


def _us_from_name(name: str) -> int:
    """``..._CAM_FRONT__1532402927612460.jpg`` -> 1532402927612460 (nuScenes file names, microseconds)."""
    return int(name.split("__")[-1].split(".")[0])


def nuscenes_frame(nuscenes_dir: Path, camera: str = "CAM_FRONT") -> dict:
    """nuScenes keyframe: rgb (900,1600,3), points (N,4) LIDAR_TOP, rings (N,) int16, K, T_cam_lidar."""
    import cv2

    calib = json.loads((nuscenes_dir / "calib.json").read_text())
    cam = calib["cameras"][camera]
    raw = np.fromfile(nuscenes_dir / calib["lidar"]["file"], dtype=np.float32).reshape(-1, 5)
    bgr = cv2.imread(str(nuscenes_dir / cam["image_file"]), cv2.IMREAD_COLOR)
    # calib.json's "timestamp_us" holds whole seconds; the file names carry the microseconds
    lidar_us = _us_from_name(calib["lidar"]["file"])
    return dict(rgb=np.ascontiguousarray(bgr[:, :, ::-1]), points=np.ascontiguousarray(raw[:, :4]), rings=raw[:, 4].astype(np.int16),
                K=np.asarray(cam["cam2img"], dtype=np.float64)[:3, :3], T_cam_lidar=np.asarray(cam["lidar2cam"], dtype=np.float64),
                camera_frame=camera.lower() + "_optical", lidar_frame="lidar_top",
                image_stamp_ns=_us_from_name(cam["image_file"]) * 1000, lidar_stamp_ns=lidar_us * 1000)


def camera_model(frame: dict):
    """CameraModel of a frame dict (no distortion: KITTI rectified, nuScenes undistorted)."""
    from drive_segment_ros.types import CameraModel

    h, w = frame["rgb"].shape[:2]
    return CameraModel(K=frame["K"], D=np.zeros(5), width=w, height=h, frame_id=frame["camera_frame"])


def frame_messages(frame: dict) -> dict:
    """rclpy Image (rgb8), CameraInfo and PointCloud2 (x y z intensity [ring]) of a frame dict."""
    from drive_segment_ros.ros.camera_info import camera_info_msg
    from drive_segment_ros.ros.image import rgb_to_image_msg
    from drive_segment_ros.ros.msgtypes import rclpy_types
    from drive_segment_ros.ros.pointcloud2 import points_to_pointcloud2

    T = rclpy_types()
    image = rgb_to_image_msg(frame["rgb"], frame["camera_frame"], frame["image_stamp_ns"], T)
    info = camera_info_msg(camera_model(frame), frame["image_stamp_ns"], T)
    cloud = points_to_pointcloud2(frame["points"], frame["lidar_frame"], frame["lidar_stamp_ns"], T, rings=frame["rings"])
    return dict(image=image, info=info, cloud=cloud)


# ------------------------------------------------------------------ rclpy harness
class RosHarness:
    """One rclpy Context + SingleThreadedExecutor + a probe node that publishes / records.

    ``spin_until(pred, timeout)`` spins the executor in 20 ms slices until ``pred()`` is true
    (no fixed sleeps); returns the predicate's final value.
    """

    def __init__(self, name: str) -> None:
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor

        os.environ["ROS_DOMAIN_ID"] = str(random.Random(f"{name}-{os.getpid()}-{time.time_ns()}").randint(1, 200))
        os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
        self.context = Context()
        rclpy.init(context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.probe = rclpy.create_node(f"probe_{name}_{os.getpid()}", context=self.context)
        self.executor.add_node(self.probe)
        self.nodes = [self.probe]
        self.received: dict = {}
        self.subs: dict = {}

    def add(self, node):
        """Add a node (built with ``context=harness.context``) to the executor."""
        self.nodes.append(node)
        self.executor.add_node(node)
        return node

    def publisher(self, msg_type, topic: str, depth: int = 5):
        """Reliable publisher on the probe node."""
        from drive_segment_ros.ros.qos import output_qos

        return self.probe.create_publisher(msg_type, topic, output_qos(depth))

    def record(self, msg_type, topic: str, qos=None) -> list:
        """Subscribe the probe to ``topic``; returns the list the messages are appended to."""
        from drive_segment_ros.ros.qos import output_qos

        out = self.received.setdefault(topic, [])
        self.subs[topic] = self.probe.create_subscription(msg_type, topic, out.append, qos or output_qos(10))
        return out

    def spin_until(self, pred: Callable[[], bool], timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while not pred() and time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.02)
        return bool(pred())

    def wait_matched(self, pubs=(), subs=(), timeout: float = 10.0) -> bool:
        """Spin until every publisher has a subscriber and every subscription a publisher."""
        return self.spin_until(
            lambda: all(p.get_subscription_count() > 0 for p in pubs) and all(s.get_publisher_count() > 0 for s in subs),
            timeout,
        )

    def close(self) -> None:
        import rclpy

        self.executor.shutdown()
        for node in self.nodes:
            node.destroy_node()
        rclpy.shutdown(context=self.context)


def tiny_model(directory: Path, n_classes: int = 8, input_size=(64, 192)):
    """A random-weight Segmenter checkpoint (ViT-Ti/16 + conv head) loaded as a torch SegmentationModel."""
    import torch

    from drive_segment_ros.inference.backends import load_model
    from drive_segment_ros.models.checkpoint import save_checkpoint
    from drive_segment_ros.models.segmenter import SegmenterConfig, build_segmenter

    torch.manual_seed(0)
    cfg = SegmenterConfig(backbone="vit_tiny_patch16_224", n_classes=n_classes, decoder="conv", d_model=32, input_size=tuple(input_size))
    save_checkpoint(directory, build_segmenter(cfg, allow_random=True), cfg)
    return load_model(directory, backend="torch", device="cpu")


# ------------------------------------------------------------------ tests of the helpers
def test_kitti_frame_projects_into_image(kitti_dir):
    from drive_segment_ros.projection import project_points

    f = kitti_frame(kitti_dir)
    assert f["rgb"].shape == (375, 1242, 3) and f["points"].shape == (17238, 4)
    proj = project_points(f["points"][:, :3], camera_model(f), f["T_cam_lidar"])
    # the scan is cropped to the camera FOV: nearly every point lands in the image
    assert proj.valid.mean() > 0.9


def test_frame_messages_round_trip(nuscenes_dir):
    pytest.importorskip("rclpy")
    from drive_segment_ros.ros.image import image_msg_to_rgb
    from drive_segment_ros.ros.pointcloud2 import read_points_xyzi

    f = nuscenes_frame(nuscenes_dir)
    msgs = frame_messages(f)
    assert np.array_equal(image_msg_to_rgb(msgs["image"]), f["rgb"])
    pts, rings = read_points_xyzi(msgs["cloud"])
    assert np.array_equal(pts, f["points"]) and np.array_equal(rings, f["rings"])
    assert (msgs["info"].width, msgs["info"].height) == (1600, 900)
    assert 0 < f["lidar_stamp_ns"] - f["image_stamp_ns"] < 100_000_000  # 35 ms apart


# ------------------------------------------------------------------ nodes in separate processes
class NodeProcess:
    """A node console script run as ``python -m <module> --ros-args ...`` in its own process (group).

    stdout / stderr go to files (no pipe can fill up); ``wait_for(text)`` polls stderr+stdout.
    ``signal(sig, group=True)`` sends like a terminal's Ctrl-C does (to the process group).
    """

    def __init__(self, module: str, ros_args, env: dict, log_dir: Path, name: str) -> None:
        import subprocess
        import sys

        self.name = name
        self.out_path = Path(log_dir) / f"{name}.out"
        self.err_path = Path(log_dir) / f"{name}.err"
        self._out = open(self.out_path, "wb")
        self._err = open(self.err_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", module, "--ros-args", *ros_args], env=env,
                                     stdout=self._out, stderr=self._err, start_new_session=True,
                                     cwd=str(Path(__file__).resolve().parents[1]))

    def text(self) -> str:
        return self.out_path.read_text(errors="replace") + self.err_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.text():
                return True
            if self.proc.poll() is not None:
                return text in self.text()
            time.sleep(0.05)
        return False

    def signal(self, sig: int, group: bool = True) -> None:
        if self.proc.poll() is None:
            if group:
                os.killpg(self.proc.pid, sig)
            else:
                self.proc.send_signal(sig)

    def wait(self, timeout: float = 20.0):
        import subprocess

        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def close(self) -> None:
        import signal as _signal

        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, _signal.SIGKILL)
            except ProcessLookupError:  # pragma: no cover
                pass
            self.proc.wait(10)
        self._out.close()
        self._err.close()


def process_env(domain_id: int) -> dict:
    """Environment for node subprocesses: own domain, localhost discovery, one OpenMP thread."""
    env = dict(os.environ)
    env.update(ROS_DOMAIN_ID=str(domain_id), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", OMP_NUM_THREADS="1",
               PYTHONUNBUFFERED="1", RCUTILS_LOGGING_BUFFERED_STREAM="0")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")]))
    return env


def assert_clean_exit(p: NodeProcess, timeout: float = 20.0) -> None:
    """The process ended with status 0 and printed no Python traceback."""
    rc = p.wait(timeout)
    err = p.stderr()
    assert rc == 0, f"{p.name}: exit status {rc}\n{err[-3000:]}"
    assert "Traceback" not in err and "RCLError" not in err and "context is invalid" not in err, f"{p.name}:\n{err[-3000:]}"
