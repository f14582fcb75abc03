"""Ego-motion compensation and per-point deskewing: synthetic known answers + the nuScenes keyframe."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from drive_segment_ros.ego_motion import compensated_T_cam_lidar, deskew_points, ego_pose_from_compensated, pair_motion
from drive_segment_ros.tf_buffer import TransformBuffer

from test_tf_buffer import S, T0, buffer_with_odometry, trajectory


def _h(p):
    return np.hstack([p, np.ones((p.shape[0], 1))])


def test_compensated_extrinsic_maps_world_points_correctly():
    """A static world point seen by the LiDAR at t_scan lands where the camera sees it at t_img."""
    buf = buffer_with_odometry(np.linspace(0.0, 0.3, 31))
    rng = np.random.default_rng(0)
    X_odom = rng.uniform([0, -10, -1], [40, 10, 3], size=(200, 3))
    t_scan, t_img = 0.1, 0.143
    T_lidar_odom = buf.lookup_transform("lidar", "odom", T0 + int(t_scan * S))
    p_lidar = (_h(X_odom) @ T_lidar_odom.T)[:, :3]
    T = compensated_T_cam_lidar(buf, "cam_optical", T0 + int(t_img * S), "lidar", T0 + int(t_scan * S))
    p_cam = (_h(p_lidar) @ T.T)[:, :3]
    expect = (_h(X_odom) @ buf.lookup_transform("cam_optical", "odom", T0 + int(t_img * S)).T)[:, :3]
    np.testing.assert_allclose(p_cam, expect, atol=1e-9)
    # the uncompensated (static) extrinsic is off by about v * dt (10.2 m/s * 43 ms ~ 0.44 m)
    T_static = buf.lookup_transform("cam_optical", "lidar")
    err = np.linalg.norm((_h(p_lidar) @ T_static.T)[:, :3] - expect, axis=1)
    assert err.min() > 0.3
    m = pair_motion(buf, T0 + int(t_img * S), T0 + int(t_scan * S))
    assert m.dt_ms == pytest.approx(43.0) and m.translation_m == pytest.approx(0.043 * np.hypot(10, np.hypot(2, 0.1)), rel=1e-6)


def test_deskew_per_point_times_known_answer():
    """Points captured along a 0.1 s sweep, each at its own time, deskewed to the scan stamp."""
    buf = buffer_with_odometry(np.linspace(0.0, 0.3, 7))
    rng = np.random.default_rng(1)
    n = 5000
    X_odom = rng.uniform([-30, -30, -2], [30, 30, 3], size=(n, 3))
    t_ref = 0.1
    times_s = t_ref + np.sort(rng.integers(0, 100, size=n)) / 1000.0  # 1 ms firing groups over 0.1 s
    times_ns = T0 + np.round(times_s * S).astype(np.int64)
    T_lidar_odom_i = np.linalg.inv(buf.lookup_transforms("odom", "lidar", times_ns))
    p_i = np.einsum("nij,nj->ni", T_lidar_odom_i, _h(X_odom))[:, :3]
    points = np.hstack([p_i, rng.uniform(size=(n, 1))]).astype(np.float64)
    out = deskew_points(points, times_ns, T0 + int(t_ref * S), buf, "lidar")
    expect = (_h(X_odom) @ buf.lookup_transform("lidar", "odom", T0 + int(t_ref * S)).T)[:, :3]
    np.testing.assert_allclose(out[:, :3], expect, atol=1e-8)
    np.testing.assert_array_equal(out[:, 3], points[:, 3])  # intensity untouched
    # float32 input keeps its dtype; error within float32 rounding
    out32 = deskew_points(points.astype(np.float32), times_ns, T0 + int(t_ref * S), buf, "lidar")
    assert out32.dtype == np.float32
    np.testing.assert_allclose(out32[:, :3], expect, atol=2e-5)
    # without deskewing, points at the end of the sweep are ~1 m off
    assert np.linalg.norm(p_i - expect, axis=1).max() > 0.8


def test_deskew_shape_errors():
    buf = buffer_with_odometry([0.0, 0.1])
    from drive_segment_ros.types import DriveSegmentError

    with pytest.raises(DriveSegmentError, match="deskew needs"):
        deskew_points(np.zeros((3, 3)), np.zeros(2, np.int64), T0, buf, "lidar")
    assert deskew_points(np.zeros((0, 4)), np.zeros(0, np.int64), T0, buf, "lidar").shape == (0, 4)


def test_ego_pose_from_compensated_roundtrip():
    buf = buffer_with_odometry(np.linspace(0.0, 0.3, 31))
    T_base_lidar = buf.lookup_transform("base_link", "lidar")
    T_base_cam = buf.lookup_transform("base_link", "cam_optical")
    t_scan, t_img = 0.2, 0.161
    L = compensated_T_cam_lidar(buf, "cam_optical", T0 + int(t_img * S), "lidar", T0 + int(t_scan * S))
    got = ego_pose_from_compensated(trajectory(t_scan), T_base_lidar, T_base_cam, L)
    np.testing.assert_allclose(got, trajectory(t_img), atol=1e-9)


# --------------------------------------------------------------------------- real data: nuScenes keyframe
def nuscenes_poses(calib: dict):
    """(lidar_stamp_ns, T_odom_base at LiDAR time, {camera: (stamp_ns, T_odom_base at camera time)})."""
    stamp = lambda name: int(re.search(r"__(\d+)\.", name).group(1)) * 1000  # noqa: E731
    E_l = np.asarray(calib["ego2global"], dtype=np.float64)
    B = np.asarray(calib["lidar"]["lidar2ego"], dtype=np.float64)
    cams = {}
    for name, cam in calib["cameras"].items():
        cams[name] = (stamp(cam["image_file"]),
                      ego_pose_from_compensated(E_l, B, np.asarray(cam["cam2ego"]), np.asarray(cam["lidar2cam"])))
    return stamp(calib["lidar"]["file"]), E_l, cams


def test_nuscenes_compensated_lidar2cam_reproduced(nuscenes_dir):
    """Ego poses at the 7 sensor times, derived from calib.json, put in the buffer as /tf samples:
    the two-time lookup reproduces each camera's ego-motion-compensated lidar2cam to 1e-4 m."""
    calib = json.loads((nuscenes_dir / "calib.json").read_text())
    t_lidar, E_l, cams = nuscenes_poses(calib)
    buf = TransformBuffer(cache_ns=None)
    buf.set_transform(E_l, "odom", "base_link", t_lidar)
    for name, (t_cam, E_c) in cams.items():
        buf.set_transform(E_c, "odom", "base_link", t_cam)
        buf.set_transform(np.asarray(calib["cameras"][name]["cam2ego"]), "base_link", name, static=True)
    buf.set_transform(np.asarray(calib["lidar"]["lidar2ego"]), "base_link", "LIDAR_TOP", static=True)
    worst_static = 0.0
    for name, (t_cam, _) in cams.items():
        L = np.asarray(calib["cameras"][name]["lidar2cam"], dtype=np.float64)
        T = compensated_T_cam_lidar(buf, name, t_cam, "LIDAR_TOP", t_lidar)
        assert np.abs(T[:3, 3] - L[:3, 3]).max() < 1e-4, name
        assert np.abs(T[:3, :3] - L[:3, :3]).max() < 1e-5, name
        worst_static = max(worst_static, float(np.abs(buf.lookup_transform(name, "LIDAR_TOP")[:3, 3] - L[:3, 3]).max()))
        assert abs(t_cam - t_lidar) < 50_000_000  # the cameras fire within 50 ms of the sweep
    assert worst_static > 0.1  # compensation matters here: the static chain is off by decimetres
