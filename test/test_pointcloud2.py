"""PointCloud2 <-> numpy against hand-built byte layouts (padding, big endian, organized, count)."""
from __future__ import annotations

import struct

import numpy as np
import pytest

from drive_segment_ros.ros.msgtypes import header_stamp_ns, make_header, rclpy_types, rosbags_types
from drive_segment_ros.ros.pointcloud2 import (
    FLOAT32,
    FLOAT64,
    INT8,
    INT16,
    INT32,
    UINT8,
    UINT16,
    UINT32,
    array_to_pointcloud2,
    pointcloud2_to_array,
    points_to_pointcloud2,
    read_points_xyzi,
)
from drive_segment_ros.types import DriveSegmentError


def _cloud(types, fields, point_step, data: bytes, width, height=1, row_step=None, bigendian=False):
    pf = [types.PointField(name=n, offset=o, datatype=d, count=c) for n, o, d, c in fields]
    payload = np.frombuffer(data, np.uint8).copy() if types.kind == "rosbags" else data
    return types.PointCloud2(
        header=make_header("velodyne", 1_500_000_123, types),
        height=height,
        width=width,
        fields=pf,
        is_bigendian=bigendian,
        point_step=point_step,
        row_step=row_step if row_step is not None else point_step * width,
        data=payload,
        is_dense=False,
    )


VELODYNE = [("x", 0, FLOAT32, 1), ("y", 4, FLOAT32, 1), ("z", 8, FLOAT32, 1), ("intensity", 12, FLOAT32, 1),
            ("ring", 16, UINT16, 1), ("time", 18, FLOAT32, 1)]


def _velodyne_bytes(rows, endian="<"):
    return b"".join(struct.pack(endian + "ffffHf", *r) for r in rows)


ROWS = [(1.0, 2.0, 3.0, 10.0, 5, 0.25), (-4.5, 0.5, -1.0, 0.0, 31, 0.5), (float("nan"), 1.0, 1.0, 7.0, 2, 0.75)]


@pytest.mark.parametrize("kind", ["rosbags", "rclpy"])
def test_velodyne_layout_known_values(kind):
    types = rosbags_types() if kind == "rosbags" else rclpy_types()
    msg = _cloud(types, VELODYNE, 22, _velodyne_bytes(ROWS), width=3)
    arr = pointcloud2_to_array(msg)
    assert arr.dtype.names == ("x", "y", "z", "intensity", "ring", "time")
    assert arr["ring"].tolist() == [5, 31, 2]
    assert arr["time"].tolist() == [0.25, 0.5, 0.75]
    pts, rings = read_points_xyzi(msg)
    np.testing.assert_array_equal(pts, np.array([[1, 2, 3, 10], [-4.5, 0.5, -1, 0]], np.float32))
    assert rings.dtype == np.int16 and rings.tolist() == [5, 31]
    pts_all, rings_all = read_points_xyzi(msg, skip_nans=False)
    assert pts_all.shape == (3, 4) and np.isnan(pts_all[2, 0]) and rings_all.tolist() == [5, 31, 2]


def test_big_endian_equals_little_endian():
    le = _cloud(rosbags_types(), VELODYNE, 22, _velodyne_bytes(ROWS, "<"), width=3)
    be = _cloud(rosbags_types(), VELODYNE, 22, _velodyne_bytes(ROWS, ">"), width=3, bigendian=True)
    a, b = pointcloud2_to_array(le), pointcloud2_to_array(be)
    for name in a.dtype.names:
        np.testing.assert_array_equal(a[name], b[name])
    assert b["ring"].dtype.byteorder in ("=", "|")  # native result
    for skip in (True, False):  # field-by-field path (big endian) == strided fast path (little endian)
        np.testing.assert_array_equal(read_points_xyzi(be, skip)[0], read_points_xyzi(le, skip)[0])
        np.testing.assert_array_equal(read_points_xyzi(be, skip)[1], read_points_xyzi(le, skip)[1])
    f64 = np.zeros(3, dtype=[("x", "f8"), ("y", "f8"), ("z", "f8"), ("intensity", "u1")])
    f64["x"], f64["intensity"] = [1.5, np.inf, 3.5], [1, 2, 3]
    pts, _ = read_points_xyzi(array_to_pointcloud2(f64, "l", 0, rosbags_types()))
    assert pts.tolist() == [[1.5, 0, 0, 1], [3.5, 0, 0, 3]]


def test_ouster_like_padding_and_row_step():
    # x y z + 4 pad bytes, intensity float32 @16, t uint32 @20, reflectivity uint16 @24, ring uint16 @26,
    # ambient uint16 @28, 2 pad, range uint32 @32, 12 pad -> point_step 48; organized 2x2 with 8 bytes row padding
    fields = [("x", 0, FLOAT32, 1), ("y", 4, FLOAT32, 1), ("z", 8, FLOAT32, 1), ("intensity", 16, FLOAT32, 1),
              ("t", 20, UINT32, 1), ("reflectivity", 24, UINT16, 1), ("ring", 26, UINT16, 1),
              ("ambient", 28, UINT16, 1), ("range", 32, UINT32, 1)]
    vals = [[(i + 0.5, -i, 2.0 * i, 100.0 + i, 1000 * i, 7, r, 9, 5000 + i) for i in range(2)] for r in range(2)]
    row_step = 2 * 48 + 8
    data = b""
    for r in range(2):
        for v in vals[r]:
            data += struct.pack("<fff4xfIHHH2xI12x", *v)
        data += b"\xee" * 8
    msg = _cloud(rosbags_types(), fields, 48, data, width=2, height=2, row_step=row_step)
    arr = pointcloud2_to_array(msg)
    assert arr.shape == (4,)
    assert arr["ring"].tolist() == [0, 0, 1, 1]
    assert arr["range"].tolist() == [5000, 5001, 5000, 5001]
    assert arr["t"].tolist() == [0, 1000, 0, 1000]
    pts, rings = read_points_xyzi(msg)
    np.testing.assert_array_equal(pts[:, 0], [0.5, 1.5, 0.5, 1.5])
    np.testing.assert_array_equal(pts[:, 3], [100, 101, 100, 101])
    assert rings.tolist() == [0, 0, 1, 1]


def test_all_datatypes_and_count():
    fields = [("a", 0, INT8, 1), ("b", 1, UINT8, 1), ("c", 2, INT16, 1), ("d", 4, INT32, 1), ("e", 8, UINT32, 1),
              ("x", 12, FLOAT32, 1), ("y", 16, FLOAT32, 1), ("z", 20, FLOAT32, 1), ("f", 24, FLOAT64, 1),
              ("v", 32, FLOAT32, 3)]
    data = struct.pack("<bBhiIfffd3f", -5, 250, -300, -70000, 4000000000, 1, 2, 3, 3.25, 1.5, 2.5, 3.5)
    msg = _cloud(rosbags_types(), fields, 44, data, width=1)
    arr = pointcloud2_to_array(msg)
    assert (int(arr["a"][0]), int(arr["b"][0]), int(arr["c"][0]), int(arr["d"][0]), int(arr["e"][0])) == (
        -5, 250, -300, -70000, 4000000000)
    assert arr["f"][0] == 3.25 and arr["f"].dtype == np.float64
    assert arr["v"].shape == (1, 3) and arr["v"][0].tolist() == [1.5, 2.5, 3.5]
    pts, rings = read_points_xyzi(msg)
    assert rings is None and pts.tolist() == [[1, 2, 3, 0]]  # no intensity -> 0


@pytest.mark.parametrize("kind", ["rosbags", "rclpy"])
def test_round_trip_extra_fields(kind):
    types = rosbags_types() if kind == "rosbags" else rclpy_types()
    rng = np.random.default_rng(0)
    n = 1000
    arr = np.zeros(n, dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("intensity", "f4"), ("ring", "u2"),
                             ("segment", "i4"), ("ground", "u1"), ("class_id", "i2"), ("normal", "f4", (3,))])
    for name in ("x", "y", "z", "intensity"):
        arr[name] = rng.normal(size=n)
    arr["ring"] = rng.integers(0, 64, n)
    arr["segment"] = rng.integers(-2, 500, n)
    arr["ground"] = rng.integers(0, 2, n)
    arr["class_id"] = rng.integers(-1, 27, n)
    arr["normal"] = rng.normal(size=(n, 3))
    msg = array_to_pointcloud2(arr, "lidar", 123_456_789_012, types)
    assert isinstance(msg, types.PointCloud2)
    assert msg.point_step == 4 * 4 + 2 + 4 + 1 + 2 + 12 and msg.row_step == msg.point_step * n
    assert header_stamp_ns(msg) == 123_456_789_012 and msg.header.frame_id == "lidar" and msg.is_dense
    back = pointcloud2_to_array(msg)
    assert back.dtype.names == arr.dtype.names
    for name in arr.dtype.names:
        np.testing.assert_array_equal(back[name], arr[name])
    pts, rings = read_points_xyzi(msg)
    np.testing.assert_array_equal(pts[:, 0], arr["x"])
    np.testing.assert_array_equal(rings, arr["ring"].astype(np.int16))


def test_organized_round_trip_and_points_helper():
    arr = np.zeros((2, 3), dtype=[("x", "f4"), ("y", "f4"), ("z", "f4")])
    arr["x"] = np.arange(6).reshape(2, 3)
    arr["z"][1, 2] = np.nan
    msg = array_to_pointcloud2(arr, "os_sensor", 5, rosbags_types())
    assert (msg.height, msg.width, msg.is_dense) == (2, 3, False)
    pts, _ = read_points_xyzi(msg)
    assert pts[:, 0].tolist() == [0, 1, 2, 3, 4]
    p = np.array([[1, 2, 3, 4], [5, 6, 7, 8]], np.float32)
    msg2 = points_to_pointcloud2(p, "velo_link", 7, "rosbags", rings=np.array([3, 4]), extra={"segment": np.array([1, -1], np.int32)})
    back = pointcloud2_to_array(msg2)
    assert back["segment"].tolist() == [1, -1] and back["ring"].dtype == np.uint16
    pts2, rings2 = read_points_xyzi(msg2)
    np.testing.assert_array_equal(pts2, p)
    assert rings2.tolist() == [3, 4]


def test_rclpy_and_rosbags_messages_give_identical_arrays():
    rng = np.random.default_rng(1)
    pts = rng.normal(size=(500, 4)).astype(np.float32)
    a = points_to_pointcloud2(pts, "l", 1, rosbags_types(), rings=np.arange(500) % 32)
    b = points_to_pointcloud2(pts, "l", 1, rclpy_types(), rings=np.arange(500) % 32)
    from sensor_msgs.msg import PointCloud2

    assert isinstance(b, PointCloud2)
    assert bytes(b.data) == a.data.tobytes()
    np.testing.assert_array_equal(read_points_xyzi(a)[0], read_points_xyzi(b)[0])


def test_bad_layouts_raise_clear_errors():
    t = rosbags_types()
    with pytest.raises(DriveSegmentError, match="unknown datatype"):
        pointcloud2_to_array(_cloud(t, [("x", 0, 9, 1)], 4, b"\0" * 4, width=1))
    with pytest.raises(DriveSegmentError, match="exceeds point_step"):
        pointcloud2_to_array(_cloud(t, [("x", 2, FLOAT32, 1)], 4, b"\0" * 4, width=1))
    with pytest.raises(DriveSegmentError, match="needs"):
        pointcloud2_to_array(_cloud(t, VELODYNE, 22, b"\0" * 30, width=2))
    with pytest.raises(DriveSegmentError, match="no y/z"):
        read_points_xyzi(_cloud(t, [("x", 0, FLOAT32, 1)], 4, b"\0" * 4, width=1))
    with pytest.raises(DriveSegmentError, match="structured"):
        array_to_pointcloud2(np.zeros((3, 3), np.float32), "l", 0, t)
    with pytest.raises(DriveSegmentError, match="int64"):
        array_to_pointcloud2(np.zeros(3, dtype=[("x", "i8")]), "l", 0, t)


def test_real_kitti_scan_round_trip(kitti_dir):
    scan = np.fromfile(kitti_dir / "000008.bin", dtype=np.float32).reshape(-1, 4)
    for types in (rosbags_types(), rclpy_types()):
        msg = points_to_pointcloud2(scan, "velo_link", 1, types)
        pts, rings = read_points_xyzi(msg)
        assert rings is None and pts.shape == (17238, 4)
        np.testing.assert_array_equal(pts, scan)


def test_real_nuscenes_scan_with_rings(nuscenes_dir):
    path = next(nuscenes_dir.glob("*LIDAR_TOP*.pcd.bin"))
    scan = np.fromfile(path, dtype=np.float32).reshape(-1, 5)
    msg = points_to_pointcloud2(scan[:, :4], "LIDAR_TOP", 1, rosbags_types(), rings=scan[:, 4].astype(np.uint16))
    pts, rings = read_points_xyzi(msg)
    np.testing.assert_array_equal(pts, scan[:, :4])
    assert rings.min() >= 0 and rings.max() <= 31  # HDL-32E
    np.testing.assert_array_equal(rings, scan[:, 4].astype(np.int16))


def test_cdr_interop_between_rosbags_and_rclpy():
    """Bytes written by rosbags deserialize in rclpy (and back) to the same points."""
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import PointCloud2

    store = rosbags_types().typestore
    pts = np.random.default_rng(2).normal(size=(64, 4)).astype(np.float32)
    a = points_to_pointcloud2(pts, "lidar", 1_600_000_000_123_456_789, rosbags_types(), rings=np.arange(64) % 8)
    via_rclpy = deserialize_message(bytes(store.serialize_cdr(a, a.__msgtype__)), PointCloud2)
    assert header_stamp_ns(via_rclpy) == 1_600_000_000_123_456_789
    back = store.deserialize_cdr(serialize_message(via_rclpy), "sensor_msgs/msg/PointCloud2")
    for msg in (via_rclpy, back):
        p, r = read_points_xyzi(msg)
        np.testing.assert_array_equal(p, pts)
        np.testing.assert_array_equal(r, np.arange(64) % 8)


@pytest.mark.parametrize("kind", ["rosbags", "rclpy"])
def test_msgtypes_namespace(kind):
    from drive_segment_ros.ros.msgtypes import make_time, stamp_to_ns

    types = rosbags_types() if kind == "rosbags" else rclpy_types()
    assert types.kind == kind
    for name in ("Image", "CompressedImage", "CameraInfo", "PointCloud2", "PointField", "Header", "Time", "MarkerArray"):
        assert getattr(types, name) is not None, name
    h = types.header("base_link", 3_000_000_001)
    assert isinstance(h, types.Header) and h.frame_id == "base_link"
    assert (h.stamp.sec, h.stamp.nanosec) == (3, 1) and stamp_to_ns(types.time(42)) == 42
    with pytest.raises(DriveSegmentError, match=">= 0"):
        make_time(-1, types)


def test_one_decoder_even_when_sensor_msgs_py_is_importable(monkeypatch):
    """sensor_msgs_py (when installed) must not change what an rclpy cloud decodes to: ONE tested decoder.

    Its ``read_points`` ignores the row padding of organized clouds and splits ``count > 1`` fields into
    ``name_0 .. name_k``; the fake below returns such a result."""
    import importlib
    import sys
    import types as pytypes

    import drive_segment_ros.ros.pointcloud2 as pc2_mod

    def read_points(msg, skip_nans=False):
        n = int(msg.height) * int(msg.width)
        return np.zeros(n, dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("v_0", "f4"), ("v_1", "f4"), ("v_2", "f4")])

    fake = pytypes.ModuleType("sensor_msgs_py")
    fake.point_cloud2 = pytypes.SimpleNamespace(read_points=read_points)
    monkeypatch.setitem(sys.modules, "sensor_msgs_py", fake)
    monkeypatch.setitem(sys.modules, "sensor_msgs_py.point_cloud2", fake.point_cloud2)
    fields = [("x", 0, FLOAT32, 1), ("y", 4, FLOAT32, 1), ("z", 8, FLOAT32, 1), ("v", 12, FLOAT32, 3)]
    rows = [[(r * 10.0 + c, 1.0, 2.0, 0.5, 1.5, 2.5) for c in range(3)] for r in range(2)]
    data = b"".join(b"".join(struct.pack("<6f", *p) for p in row) + b"\xee" * 4 for row in rows)
    try:
        reloaded = importlib.reload(pc2_mod)
        msg = _cloud(rclpy_types(), fields, 24, data, width=3, height=2, row_step=3 * 24 + 4)
        arr = reloaded.pointcloud2_to_array(msg)
        assert arr.dtype.names == ("x", "y", "z", "v")
        assert arr["x"].tolist() == [0, 1, 2, 10, 11, 12]
        assert arr["v"].tolist() == [[0.5, 1.5, 2.5]] * 6
    finally:
        monkeypatch.delitem(sys.modules, "sensor_msgs_py")
        monkeypatch.delitem(sys.modules, "sensor_msgs_py.point_cloud2")
        importlib.reload(pc2_mod)
