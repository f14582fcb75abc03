"""Replay that delivers, end to end, in separate processes (as ``ros2 launch ... bag:=`` runs it).

Processes: ``bag_player_node`` x2 (KITTI rgb8 bag, nuScenes JPEG bag), ``segmentation_node`` x2
(raw / compressed input, with LiDAR), ``proposal_node``; this test process only records.
Each player starts before the nodes have loaded their model and must wait for them; it loops
its bag 3 times with stamp offsets, so each node must publish exactly one mask per image
(3 + 3 masks with increasing stamps) and then the nodes must stop on SIGINT with status 0.
"""
from __future__ import annotations

import signal

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from test_ros_harness import (  # noqa: E402
    NodeProcess, RosHarness, assert_clean_exit, kitti_frame, nuscenes_frame, process_env, tiny_model,
)

from drive_segment_ros.ros.msgtypes import header_stamp_ns, rclpy_types  # noqa: E402

KITTI = {"image": "/kitti/camera_color_left/image_raw", "camera_info": "/kitti/camera_color_left/camera_info",
         "points": "/kitti/velodyne/points"}
NUS = {"image": "/nuscenes/CAM_FRONT/image_raw/compressed", "camera_info": "/nuscenes/CAM_FRONT/camera_info",
       "points": "/nuscenes/LIDAR_TOP/points"}
PASSES = 3


def _T(frame) -> str:
    return "[" + ",".join(repr(float(v)) for v in frame["T_cam_lidar"].ravel()) + "]"


def _seg_args(name, topics, ckpt, frame, transport):
    return ["-r", f"__node:={name}", "-r", f"~/image:={topics['image']}", "-r", f"~/camera_info:={topics['camera_info']}",
            "-r", f"~/points:={topics['points']}", "-p", f"model_path:={ckpt}", "-p", "backend:=torch",
            "-p", f"image_transport:={transport}", "-p", "use_lidar:=true", "-p", f"T_cam_lidar:={_T(frame)}"]


def _player_args(name, bag, topics):
    wait = "[" + ",".join(f"'{t}'" for t in topics.values()) + "]"
    return ["-r", f"__node:={name}", "-p", f"bag:={bag}", "-p", "rate:=1.0", "-p", "loop:=true",
            "-p", f"loop_passes:={PASSES}", "-p", "loop_gap_s:=0.5", "-p", f"wait_topics:={wait}",
            "-p", "wait_for_subscribers:=1", "-p", "wait_timeout_s:=90.0"]


def test_bag_replay_one_mask_per_image(kitti_bag, nuscenes_bag, kitti_dir, nuscenes_dir, tmp_path):
    ros = RosHarness("replay")
    procs = []
    try:
        T = rclpy_types()
        ckpt = tmp_path / "ckpt"
        tiny_model(ckpt)
        masks_k = ros.record(T.Image, "/seg_kitti/mask")
        masks_n = ros.record(T.Image, "/seg_nus/mask")
        segments = ros.record(T.PointCloud2, "/proposal_node/segments")
        points_k = ros.record(T.PointCloud2, "/seg_kitti/semantic_points")
        env = process_env(int(__import__("os").environ["ROS_DOMAIN_ID"]))
        # the players start first: they must wait for the nodes (model loading takes seconds)
        procs.append(NodeProcess("drive_segment_ros.nodes.bag_player_node", _player_args("player_kitti", kitti_bag, KITTI), env, tmp_path, "player_kitti"))
        procs.append(NodeProcess("drive_segment_ros.nodes.bag_player_node", _player_args("player_nus", nuscenes_bag, NUS), env, tmp_path, "player_nus"))
        procs.append(NodeProcess("drive_segment_ros.nodes.proposal_node", ["-r", f"~/points:={KITTI['points']}"], env, tmp_path, "proposal_node"))
        procs.append(NodeProcess("drive_segment_ros.nodes.segmentation_node",
                                 _seg_args("seg_kitti", KITTI, ckpt, kitti_frame(kitti_dir), "raw"), env, tmp_path, "seg_kitti"))
        procs.append(NodeProcess("drive_segment_ros.nodes.segmentation_node",
                                 _seg_args("seg_nus", NUS, ckpt, nuscenes_frame(nuscenes_dir), "compressed"), env, tmp_path, "seg_nus"))
        players, nodes = procs[:2], procs[2:]
        ok = ros.spin_until(lambda: all(p.proc.poll() is not None for p in players)
                            and len(masks_k) >= PASSES and len(masks_n) >= PASSES and len(segments) >= PASSES, 150.0)
        ros.spin_until(lambda: False, 0.5)  # anything extra would arrive now
        logs = "\n".join(f"--- {p.name}\n{p.text()[-1500:]}" for p in procs)
        assert ok, f"masks kitti {len(masks_k)} nus {len(masks_n)} segments {len(segments)}\n{logs}"
        for p in players:
            assert_clean_exit(p, 5.0)
            assert "all " in p.text() and "delivered" in p.text(), p.text()[-2000:]
        # exactly one mask per image, stamps strictly increasing (stamp offsets per pass)
        for masks, frame in ((masks_k, kitti_frame(kitti_dir)), (masks_n, nuscenes_frame(nuscenes_dir))):
            assert len(masks) == PASSES, [header_stamp_ns(m) for m in masks]
            stamps = [header_stamp_ns(m) for m in masks]
            steps = np.diff(stamps)  # pass k is shifted by k * (bag span + loop_gap_s)
            assert np.all(steps >= 500_000_000) and np.all(steps == steps[0]), stamps
            assert (masks[0].width, masks[0].height) == (frame["rgb"].shape[1], frame["rgb"].shape[0])
        assert len(segments) == PASSES and len(points_k) == PASSES
        assert np.frombuffer(bytes(masks_k[0].data), np.uint8).size == 1242 * 375
        # Ctrl-C as a terminal sends it (process group), twice as launch forwards it again
        for p in nodes:
            p.signal(signal.SIGINT)
            p.signal(signal.SIGINT)
        for p in nodes:
            assert_clean_exit(p)
    finally:
        for p in procs:
            p.close()
        ros.close()
