"""TransformBuffer: static + dynamic edges, interpolation, two-time lookups, extrapolation errors."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from drive_segment_ros.tf_buffer import (
    ExtrapolationError,
    TransformBuffer,
    TransformLookupError,
    slerp,
)
from drive_segment_ros.types import DriveSegmentError

S = 1_000_000_000  # ns per second
T0 = 1_700_000_000 * S


def make_T(yaw=0.0, t=(0.0, 0.0, 0.0), roll=0.0, pitch=0.0):
    T = np.eye(4)
    T[:3, :3] = Rotation.from_euler("xyz", [roll, pitch, yaw]).as_matrix()
    T[:3, 3] = t
    return T


def trajectory(t_s):
    """Known ego pose T_odom_base(t): linear translation, constant yaw rate (exact under lerp + slerp)."""
    return make_T(yaw=0.3 * t_s, t=(10.0 * t_s + 5.0, 2.0 * t_s - 1.0, 0.1 * t_s))


def buffer_with_odometry(stamps_s, **kw):
    buf = TransformBuffer(cache_ns=None, **kw)
    for ts in stamps_s:
        buf.set_transform(trajectory(ts), "odom", "base_link", T0 + int(round(ts * S)))
    buf.set_transform(make_T(yaw=0.01, t=(0.9, 0.0, 1.8)), "base_link", "lidar", static=True)
    # camera optical frame: z forward, x right, y down (REP 103 optical)
    R_base_opt = np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0]], dtype=float)
    T_base_cam = np.eye(4)
    T_base_cam[:3, :3] = R_base_opt
    T_base_cam[:3, 3] = (1.5, 0.1, 1.5)
    buf.set_transform(T_base_cam, "base_link", "cam_optical", static=True)
    return buf


def test_static_chain_and_inverse():
    buf = TransformBuffer()
    A = make_T(yaw=0.4, t=(1, 2, 3))
    B = make_T(roll=0.2, t=(-1, 0.5, 0))
    buf.set_transform(A, "base_link", "lidar", static=True)
    buf.set_transform(B, "base_link", "cam", static=True)
    T = buf.lookup_transform("cam", "lidar", T0)
    np.testing.assert_allclose(T, np.linalg.inv(B) @ A, atol=1e-12)
    np.testing.assert_allclose(buf.lookup_transform("lidar", "cam"), np.linalg.inv(T), atol=1e-12)
    np.testing.assert_allclose(buf.lookup_transform("lidar", "lidar"), np.eye(4))
    assert buf.is_static_chain("cam", "lidar")
    assert buf.frames == ["base_link", "cam", "lidar"]


def test_interpolation_exact_on_linear_trajectory():
    stamps = [0.0, 0.013, 0.05, 0.051, 0.1, 0.2]
    buf = buffer_with_odometry(stamps)
    for q in (0.0, 0.006, 0.03, 0.0505, 0.07, 0.15, 0.2):
        got = buf.lookup_transform("odom", "base_link", T0 + int(round(q * S)))
        np.testing.assert_allclose(got, trajectory(q), atol=1e-9)
    qs = np.array([0.001, 0.02, 0.099, 0.18])
    many = buf.lookup_transforms("odom", "base_link", T0 + np.round(qs * S).astype(np.int64))
    for Tq, q in zip(many, qs):
        np.testing.assert_allclose(Tq, trajectory(q), atol=1e-9)


def test_two_time_lookup_through_fixed_frame():
    buf = buffer_with_odometry(np.linspace(0, 0.5, 11))
    t_img, t_scan = 0.123, 0.161
    got = buf.lookup_transform_full("cam_optical", T0 + int(t_img * S), "lidar", T0 + int(t_scan * S), "odom")
    T_base_cam = buf.lookup_transform("base_link", "cam_optical")
    T_base_lidar = buf.lookup_transform("base_link", "lidar")
    expect = np.linalg.inv(T_base_cam) @ np.linalg.inv(trajectory(t_img)) @ trajectory(t_scan) @ T_base_lidar
    np.testing.assert_allclose(got, expect, atol=1e-9)
    # same time -> the static extrinsic
    same = buf.lookup_transform_full("cam_optical", T0 + int(t_img * S), "lidar", T0 + int(t_img * S), "odom")
    np.testing.assert_allclose(same, np.linalg.inv(T_base_cam) @ T_base_lidar, atol=1e-9)


def test_extrapolation_error_and_tolerance():
    buf = buffer_with_odometry([0.0, 0.1])
    with pytest.raises(ExtrapolationError, match="into the future"):
        buf.lookup_transform("odom", "base_link", T0 + int(0.15 * S))
    with pytest.raises(ExtrapolationError, match="into the past"):
        buf.lookup_transform("odom", "lidar", T0 - int(0.02 * S))
    # within tolerance: the nearest sample is held
    held = buf.lookup_transform("odom", "base_link", T0 - int(0.02 * S), tolerance_ns=int(0.05 * S))
    np.testing.assert_allclose(held, trajectory(0.0), atol=1e-12)
    tol = buffer_with_odometry([0.0, 0.1], max_extrapolation_ns=int(0.05 * S))
    np.testing.assert_allclose(tol.lookup_transform("odom", "base_link", T0 + int(0.12 * S)), trajectory(0.1), atol=1e-12)
    assert not buf.can_transform("odom", "base_link", T0 + 5 * S)
    assert buf.can_transform("odom", "base_link", T0 + int(0.05 * S))


def test_latest_time_and_single_sample():
    buf = buffer_with_odometry([0.0, 0.1, 0.2])
    np.testing.assert_allclose(buf.lookup_transform("odom", "base_link"), trajectory(0.2), atol=1e-12)
    one = TransformBuffer()
    one.set_transform(trajectory(0.0), "odom", "base_link", T0)
    np.testing.assert_allclose(one.lookup_transform("odom", "base_link", T0), trajectory(0.0))
    with pytest.raises(ExtrapolationError):
        one.lookup_transform("odom", "base_link", T0 + 1)


def test_unknown_and_disconnected_frames():
    buf = buffer_with_odometry([0.0, 0.1])
    buf.set_transform(np.eye(4), "other_root", "thing", static=True)
    with pytest.raises(TransformLookupError, match="does not exist"):
        buf.lookup_transform("odom", "nope", T0)
    with pytest.raises(TransformLookupError, match="not connected"):
        buf.lookup_transform("thing", "lidar", T0)


def test_two_parents_and_bad_transform_rejected():
    buf = TransformBuffer()
    buf.set_transform(np.eye(4), "a", "b", static=True)
    with pytest.raises(DriveSegmentError, match="two parents"):
        buf.set_transform(np.eye(4), "c", "b", static=True)
    bad = np.eye(4)
    bad[0, 0] = -1.0  # reflection
    with pytest.raises(DriveSegmentError):
        buf.set_transform(bad, "a", "x")
    with pytest.raises(DriveSegmentError):
        buf.set_transform_quat((0, 0, 0), (0, 0, 0, 0), "a", "y")


def test_static_reparent_replaces_only_when_asked_and_loops_are_rejected():
    """The nodes' /tf_static semantics (reparent_static=True: the latest static transform of a frame wins,
    parent included, as tf2's static cache) vs the drive reader's (first tree kept); loops never enter."""
    A, B = make_T(yaw=0.1, t=(1, 0, 0)), make_T(yaw=-0.2, t=(0, 2, 0))
    node = TransformBuffer(reparent_static=True)
    node.set_transform(A, "base_link", "cam", static=True)
    node.set_transform(np.eye(4), "base_link", "mount", static=True)
    node.set_transform(B, "mount", "cam", static=True)  # the calibration is re-published under another parent
    assert node.parent_of("cam") == "mount" and node.root_path("/cam") == ["cam", "mount", "base_link"]
    np.testing.assert_allclose(node.lookup_transform("base_link", "cam"), B, atol=1e-12)
    node.set_transform(A, "mount", "cam", static=True)  # same parent: the value is replaced
    np.testing.assert_allclose(node.lookup_transform("base_link", "cam"), A, atol=1e-12)
    reader = TransformBuffer()
    reader.set_transform(A, "base_link", "cam", static=True)
    for buf in (node, reader):
        buf.set_transform(np.eye(4), "odom", "base_link", T0)
        with pytest.raises(DriveSegmentError, match="two parents"):  # a dynamic edge never changes parent
            buf.set_transform(np.eye(4), "map", "base_link", T0 + 1)
        with pytest.raises(DriveSegmentError, match="two parents"):  # nor does static replace a dynamic one
            buf.set_transform(np.eye(4), "map", "base_link", static=True)
        with pytest.raises(DriveSegmentError, match="would close a loop: 'odom' is already above 'cam'"):
            buf.set_transform(np.eye(4), "cam", "odom", static=True)
    with pytest.raises(DriveSegmentError, match="would close a loop: 'mount' is already above 'cam'"):
        node.set_transform(np.eye(4), "cam", "mount", static=True)  # a re-parent that would loop is refused too
    assert node.root_path("cam") == ["cam", "mount", "base_link", "odom"]
    with pytest.raises(DriveSegmentError, match="two parents"):
        reader.set_transform(B, "mount", "cam", static=True)
    np.testing.assert_allclose(reader.lookup_transform("base_link", "cam"), A, atol=1e-12)


def test_public_edge_queries():
    from types import SimpleNamespace as NS

    buf = buffer_with_odometry([0.0, 0.1, 0.2])
    for k in range(3):  # a constant mounting on /tf
        buf.set_transform(make_T(yaw=0.2), "base_link", "radar", T0 + k * S // 10)
    assert "base_link" in buf and "/odom" in buf and "nope" not in buf
    assert buf.root_path("lidar") == ["lidar", "base_link", "odom"] and buf.root_path("odom") == ["odom"]
    with pytest.raises(TransformLookupError, match="'nope' does not exist"):
        buf.root_path("nope")
    odo, lidar, radar = buf.edge("base_link"), buf.edge("/lidar"), buf.edge("radar")
    assert (odo.parent, odo.child, odo.static, odo.constant, odo.moving) == ("odom", "base_link", False, False, True)
    assert odo.n_samples == 3
    assert (odo.first_ns, odo.last_ns) == (T0, T0 + S // 5)
    assert lidar.static and not lidar.moving and lidar.n_samples == 1
    assert radar.constant and not radar.static and not radar.moving
    assert buf.edge("odom") is None and buf.edge("nope") is None
    assert [e.child for e in buf.edges()] == ["base_link", "cam_optical", "lidar", "radar"]
    tf = NS(transforms=[NS(header=NS(frame_id="base_link", stamp=NS(sec=1, nanosec=0)), child_frame_id="x",
                           transform=NS(translation=NS(x=1.0, y=0.0, z=0.0), rotation=NS(x=0.0, y=0.0, z=0.0, w=1.0)))])
    static = TransformBuffer.from_messages([tf], static=True, cache_ns=None)
    assert static.edge("x").static and static.cache_ns is None
    np.testing.assert_allclose(static.lookup_transform("base_link", "x")[:3, 3], (1, 0, 0))


def test_constant_dynamic_edge_is_static_and_cache_pruning():
    buf = TransformBuffer(cache_ns=int(0.5 * S))
    mount = make_T(yaw=0.2, t=(1, 0, 2))
    for k in range(3):  # a mounting republished on /tf (nuScenes-to-MCAP convention)
        buf.set_transform(mount, "base_link", "CAM_FRONT", T0 + k * S // 2)
    np.testing.assert_allclose(buf.lookup_transform("base_link", "CAM_FRONT", T0 - 10 * S), mount, atol=1e-12)
    strict = TransformBuffer(constant_as_static=False)
    for k in range(3):
        strict.set_transform(mount, "base_link", "CAM_FRONT", T0 + k * S // 2)
    with pytest.raises(ExtrapolationError):
        strict.lookup_transform("base_link", "CAM_FRONT", T0 - 10 * S)
    for k in range(30):
        buf.set_transform(trajectory(k * 0.1), "odom", "base_link", T0 + k * S // 10)
    lo, hi = buf.time_range("base_link")
    assert hi == T0 + 29 * S // 10 and hi - lo <= S // 2


def test_slerp_shortest_arc_and_endpoints():
    q0 = Rotation.from_euler("z", 0.1).as_quat()
    q1 = Rotation.from_euler("z", 0.5).as_quat()
    mid = slerp(q0, -q1, 0.5)[0]  # -q1 is the same rotation: must take the short way
    np.testing.assert_allclose(Rotation.from_quat(mid).as_euler("xyz")[2], 0.3, atol=1e-12)
    np.testing.assert_allclose(np.abs(slerp(q0, q1, 0.0)[0] @ q0), 1.0, atol=1e-12)
    np.testing.assert_allclose(slerp(q0, q0, np.array([0.3, 0.7])), np.stack([q0, q0]), atol=1e-12)


def test_tf_message_objects():
    from types import SimpleNamespace as NS

    def ts(parent, child, sec, nsec, xyz, q):
        return NS(header=NS(frame_id=parent, stamp=NS(sec=sec, nanosec=nsec)), child_frame_id=child,
                  transform=NS(translation=NS(x=xyz[0], y=xyz[1], z=xyz[2]), rotation=NS(x=q[0], y=q[1], z=q[2], w=q[3])))

    buf = TransformBuffer()
    n = buf.add_tf_message(NS(transforms=[ts("/odom", "base_link", 10, 0, (0, 0, 0), (0, 0, 0, 1)),
                                          ts("odom", "base_link", 10, 500_000_000, (1, 0, 0), (0, 0, 0, 1))]))
    assert n == 2
    T = buf.lookup_transform("odom", "base_link", 10 * S + S // 4)
    np.testing.assert_allclose(T[:3, 3], (0.5, 0, 0), atol=1e-12)  # halfway between 10.0 s and 10.5 s


def test_matches_tf2_ros():
    """Where ROS 2 is installed: tf2_ros.Buffer gives the same interpolated and two-time lookups."""
    from drive_segment_ros.ros.tf2_buffer import Tf2Buffer, tf2_available

    if not tf2_available():
        pytest.skip("tf2_ros / rclpy not installed (ROS 2 machines only)")
    from geometry_msgs.msg import TransformStamped  # optional heavy dependency

    def msg(T, parent, child, ns):
        q = Rotation.from_matrix(T[:3, :3]).as_quat()
        m = TransformStamped()
        m.header.frame_id, m.child_frame_id = parent, child
        m.header.stamp.sec, m.header.stamp.nanosec = ns // S, ns % S
        m.transform.translation.x, m.transform.translation.y, m.transform.translation.z = (float(v) for v in T[:3, 3])
        m.transform.rotation.x, m.transform.rotation.y, m.transform.rotation.z, m.transform.rotation.w = (float(v) for v in q)
        return m

    ours = buffer_with_odometry(np.linspace(0, 0.5, 6))
    theirs = Tf2Buffer()
    for k, ts in enumerate(np.linspace(0, 0.5, 6)):
        theirs.add_transform_stamped(msg(trajectory(ts), "odom", "base_link", T0 + int(round(ts * S))))
    for child in ("lidar", "cam_optical"):
        theirs.add_transform_stamped(msg(ours.lookup_transform("base_link", child), "base_link", child, T0), static=True)
    for q in (0.05, 0.23, 0.41):
        t = T0 + int(q * S)
        np.testing.assert_allclose(theirs.lookup_transform("odom", "lidar", t), ours.lookup_transform("odom", "lidar", t), atol=1e-9)
    a, b = T0 + int(0.12 * S), T0 + int(0.161 * S)
    np.testing.assert_allclose(theirs.lookup_transform_full("cam_optical", a, "lidar", b, "odom"),
                               ours.lookup_transform_full("cam_optical", a, "lidar", b, "odom"), atol=1e-9)
