"""drive_segment_ros.ros.bags: every bag layout opens and reads back; every failure is one clear line."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rosbags.rosbag2 import StoragePlugin, Writer

from drive_segment_ros.ros.bags import bag_paths, deserialize, iter_messages, open_bag
from drive_segment_ros.ros.msgtypes import header_stamp_ns, rosbags_typestore, rosbags_types
from drive_segment_ros.ros.pointcloud2 import points_to_pointcloud2, read_points_xyzi
from drive_segment_ros.types import DriveSegmentError

T0 = 1_700_000_000_000_000_000
STAMPS = [T0, T0 + 100_000_000, T0 + 200_000_000]


def _write(path: Path, storage: str = "sqlite3") -> Path:
    t = rosbags_types()
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=9, storage_plugin=plugin) as w:
        conn = w.add_connection("/points", "sensor_msgs/msg/PointCloud2", typestore=t.typestore)
        for i, s in enumerate(STAMPS):
            msg = points_to_pointcloud2(np.array([[i, 0, 0, 1]], np.float32), "lidar", s, t)
            w.write(conn, s, t.typestore.serialize_cdr(msg, msg.__msgtype__))
    return path


def _read_all(path) -> list:
    reader = open_bag(path)
    try:
        assert [c.topic for c in reader.connections] == ["/points"]
        out = []
        for conn, t, raw in iter_messages(reader, reader.connections, path):
            msg = deserialize(reader, raw, conn, path)
            out.append((t, header_stamp_ns(msg), float(read_points_xyzi(msg)[0][0, 0])))
        return out
    finally:
        reader.close()


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_ros2_directory_and_storage_file(tmp_path, storage):
    bag = _write(tmp_path / "drive", storage)
    expected = [(s, s, float(i)) for i, s in enumerate(STAMPS)]
    assert _read_all(bag) == expected
    (storage_file,) = [p for p in bag.iterdir() if p.suffix in (".db3", ".mcap")]
    assert bag_paths(storage_file) == [bag]  # the file next to metadata.yaml opens its directory
    assert _read_all(storage_file) == expected


def test_typestore_is_the_package_one(tmp_path):
    reader = open_bag(_write(tmp_path / "drive"))
    try:
        assert reader.default_typestore is rosbags_typestore()
        assert list(iter_messages(reader, [], "x")) == []  # no connections: nothing (not every message)
    finally:
        reader.close()


def test_ros1_bag(tmp_path):
    from rosbags.rosbag1 import Writer as Writer1
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS1_NOETIC)
    String = store.types["std_msgs/msg/String"]
    path = tmp_path / "drive.bag"
    with Writer1(path) as w:
        conn = w.add_connection("/chatter", "std_msgs/msg/String", typestore=store)
        w.write(conn, T0, store.serialize_ros1(String(data="hello"), "std_msgs/msg/String"))
    reader = open_bag(path)
    try:
        [(conn, t, raw)] = list(iter_messages(reader, reader.connections, path))
        assert t == T0 and deserialize(reader, raw, conn, path).data == "hello"
    finally:
        reader.close()


def test_one_line_errors(tmp_path):
    with pytest.raises(DriveSegmentError, match=r"^bag '.*missing' not found$"):
        open_bag(tmp_path / "missing")
    junk = tmp_path / "junk.bag"
    junk.write_bytes(b"#ROSBAG V2.0\n" + bytes(range(256)) * 4)
    with pytest.raises(DriveSegmentError, match=r"^cannot read bag '.*junk.bag': ") as info:
        open_bag(junk)
    assert "\n" not in str(info.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DriveSegmentError, match=r"^cannot read bag '.*empty': "):
        open_bag(tmp_path / "empty")
    bag = _write(tmp_path / "cut")
    db = next(bag.glob("*.db3"))
    db.write_bytes(db.read_bytes()[:2000])
    with pytest.raises(DriveSegmentError, match=r"cannot read bag '.*cut'") as info:
        _read_all(bag)
    assert "\n" not in str(info.value)
    bag = _write(tmp_path / "ok")
    reader = open_bag(bag)
    try:
        conn = reader.connections[0]
        with pytest.raises(DriveSegmentError, match=r"^cannot decode a sensor_msgs/msg/PointCloud2 message on '/points'"):
            deserialize(reader, b"\x00\x01\x00\x00\x07", conn, bag)
    finally:
        reader.close()
