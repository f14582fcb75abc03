"""ApproximateTimeSynchronizer on hand-fed stamp sequences (known answers, no ROS runtime)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from drive_segment_ros.ros.msgtypes import header_stamp_ns
from drive_segment_ros.ros.sync import ApproximateTimeSynchronizer
from drive_segment_ros.types import DriveSegmentError


def msg(t_ms: float, tag: str = ""):
    ns = int(round(t_ms * 1e6))
    return SimpleNamespace(header=SimpleNamespace(stamp=SimpleNamespace(sec=ns // 10**9, nanosec=ns % 10**9)), tag=tag)


def ms(m) -> float:
    return header_stamp_ns(m) / 1e6


def collect(sync):
    out = []
    sync.register_callback(lambda *ms_: out.append(tuple(ms(m) for m in ms_)))
    return out


def test_stamp_ns_and_missing_header():
    assert header_stamp_ns(msg(1500.25)) == 1_500_250_000
    with pytest.raises(DriveSegmentError, match="header.stamp"):
        header_stamp_ns(object())


def test_pairs_within_slop_returns_tuple():
    sync = ApproximateTimeSynchronizer(queue_size=10, slop_s=0.05)
    out = collect(sync)
    assert sync.add(msg(40), 1) is None          # nothing on input 0 yet
    pair = sync.add(msg(100), 0)                 # 60 ms apart > 50 ms slop
    assert pair is None and out == []
    pair = sync.add(msg(130), 1)                 # 30 ms from camera 100
    assert [ms(m) for m in pair] == [100.0, 130.0]
    assert out == [(100.0, 130.0)]
    assert sync.queued() == [0, 0]               # lidar 40 is older than the matched 130 -> dropped


def test_known_sequence_two_inputs():
    sync = ApproximateTimeSynchronizer(queue_size=10, slop_s=0.02)
    out = collect(sync)
    sync.add(msg(0), 0)      # camera 0
    sync.add(msg(50), 1)     # lidar 50: 50 ms away from camera 0 -> no pair
    assert out == []
    sync.add(msg(45), 0)     # camera 45: lidar 50 within 20 ms -> pair (45, 50)
    assert out == [(45.0, 50.0)]
    # camera 0 is older than the matched camera 45 -> discarded; lidar queue empty
    assert sync.queued() == [0, 0]
    sync.add(msg(101), 1)
    sync.add(msg(95), 1)     # two lidar candidates for the next camera
    sync.add(msg(99), 0)     # 101 is 2 ms away, 95 is 4 ms: picks 101
    assert out[-1] == (99.0, 101.0)
    # lidar 95 was older than the matched 101 -> dropped too
    assert sync.queued() == [0, 0]
    assert sync.n_emitted == 2


def test_slop_is_strict():
    sync = ApproximateTimeSynchronizer(queue_size=5, slop_s=0.010)
    out = collect(sync)
    sync.add(msg(0), 0)
    sync.add(msg(10), 1)     # exactly the slop -> not matched (message_filters uses "<")
    assert out == []
    sync.add(msg(19.999), 0)  # 9.999 ms from lidar 10 -> matched
    assert out == [(19.999, 10.0)]


def test_three_inputs_minimal_spread():
    sync = ApproximateTimeSynchronizer(queue_size=10, slop_s=0.05, n_inputs=3)
    out = collect(sync)
    sync.add(msg(100), 1)    # camera_info
    sync.add(msg(130), 1)
    sync.add(msg(128), 2)    # lidar
    assert out == []
    sync.add(msg(131), 0)    # image 131: best tuple (131, 130, 128), spread 3 ms; (131,100,128) spread 31
    assert out == [(131.0, 130.0, 128.0)]
    assert sync.queued() == [0, 0, 0]  # info 100 older than matched 130 -> dropped


def test_queue_size_drops_oldest():
    sync = ApproximateTimeSynchronizer(queue_size=3, slop_s=0.005)
    out = collect(sync)
    for t in (0, 100, 200, 300, 400):
        sync.add(msg(t), 0)
    assert sync.queued() == [3, 0]
    assert sync.n_dropped == 2
    sync.add(msg(1), 1)      # would have matched 0, which was dropped
    assert out == []
    sync.add(msg(201), 1)
    assert out == [(200.0, 201.0)]
    # input 0 keeps 300 and 400 (newer than the match); input 1 loses 1 (older than 201)
    assert sync.queued() == [2, 0]
    assert sync.n_dropped == 3


def test_callback_args_and_single_input():
    sync = ApproximateTimeSynchronizer(queue_size=2, slop_s=0.1, n_inputs=1)
    got = []
    sync.register_callback(lambda m, tag: got.append((ms(m), tag)), "x")
    sync.add(msg(5), 0)
    assert got == [(5.0, "x")]


def test_bad_arguments():
    with pytest.raises(DriveSegmentError):
        ApproximateTimeSynchronizer(0, 0.1)
    with pytest.raises(DriveSegmentError):
        ApproximateTimeSynchronizer(1, 0.0)
    sync = ApproximateTimeSynchronizer(1, 0.1)
    with pytest.raises(DriveSegmentError, match="out of range"):
        sync.add(msg(0), 2)
    with pytest.raises(DriveSegmentError, match="header.stamp"):
        sync.add(object(), 0)
    headerless = ApproximateTimeSynchronizer(2, 0.1, allow_headerless=True, clock=lambda: 7_000_000)
    got = []
    headerless.register_callback(lambda a, b: got.append((a, ms(b))))
    headerless.add(msg(7), 1)
    headerless.add("no header", 0)
    assert got == [("no header", 7.0)]


def test_qos_profiles():
    pytest.importorskip("rclpy")
    from rclpy.qos import DurabilityPolicy, ReliabilityPolicy, qos_profile_sensor_data

    from drive_segment_ros.ros.qos import latest_only_qos, output_qos, sensor_qos, tf_static_qos

    assert sensor_qos() is qos_profile_sensor_data
    latest = latest_only_qos()
    assert latest.depth == 1 and latest.reliability == ReliabilityPolicy.BEST_EFFORT
    assert output_qos(3).reliability == ReliabilityPolicy.RELIABLE and output_qos(3).depth == 3
    tf = tf_static_qos()
    assert tf.durability == DurabilityPolicy.TRANSIENT_LOCAL and tf.depth == 100


def test_make_synchronizer_on_a_real_node():
    """The fallback path of make_synchronizer pairs messages published over rclpy."""
    pytest.importorskip("rclpy")
    from sensor_msgs.msg import CameraInfo, PointCloud2

    from drive_segment_ros.ros.qos import output_qos
    from drive_segment_ros.ros.sync import make_synchronizer
    from test_ros_harness import RosHarness

    h = RosHarness("sync")
    try:
        pairs = []
        sync, subs = make_synchronizer(h.probe, [(CameraInfo, "/s/a", output_qos()), (PointCloud2, "/s/b", output_qos())],
                                       lambda a, b: pairs.append((header_stamp_ns(a), header_stamp_ns(b))), queue_size=5, slop_s=0.02,
                                       prefer_message_filters=False)
        assert isinstance(sync, ApproximateTimeSynchronizer) and len(subs) == 2
        pa, pb = h.publisher(CameraInfo, "/s/a"), h.publisher(PointCloud2, "/s/b")
        assert h.wait_matched(pubs=[pa, pb])
        a, b = CameraInfo(), PointCloud2()
        a.header.stamp.sec, b.header.stamp.sec, b.header.stamp.nanosec = 10, 10, 15_000_000
        pb.publish(b)
        pa.publish(a)
        assert h.spin_until(lambda: pairs, 10.0)
        assert pairs == [(10_000_000_000, 10_015_000_000)]
    finally:
        h.close()
