"""Per-point LiDAR times of the driver conventions; truncated MCAP recovery; sqlite integrity checks."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rosbags.typesys import Stores, get_typestore

from drive_segment_ros.ros.bag_repair import (
    check_bag,
    mcap_is_complete,
    open_paths_with_recovery,
    recover_mcap,
    sqlite_integrity,
)
from drive_segment_ros.ros.point_time import read_point_times_ns
from drive_segment_ros.ros.pointcloud2 import read_points_xyzi
from drive_segment_ros.types import DriveSegmentError
from fixtures.foreign_bags import (
    T_START,
    _hesai_cloud,
    _Msgs,
    _ouster_cloud,
    _velodyne_cloud,
    damage_sqlite,
    truncate,
    write_lidar_driver_bag,
    write_nuscenes_mcap,
)

mcap = pytest.importorskip("mcap")


@pytest.mark.parametrize("build,field", [(_velodyne_cloud, "time"), (_ouster_cloud, "t"), (_hesai_cloud, "timestamp")])
def test_point_times_of_driver_conventions(build, field):
    m = _Msgs(get_typestore(Stores.ROS2_HUMBLE))
    rng = np.random.default_rng(0)
    p = rng.uniform(-20, 20, size=(300, 3))
    t_scan = T_START + 123_456_789
    times = t_scan + np.sort(rng.integers(0, 100_000_000, size=300))
    msg, index = build(m, p, times, t_scan, "lidar")
    got, name = read_point_times_ns(msg)
    pts, rings = read_points_xyzi(msg)
    assert name == field and got.dtype == np.int64 and got.shape == (pts.shape[0],)
    ok = index >= 0
    tol = {"time": 100, "t": 0, "timestamp": 1_000}[field]  # float32 s offsets / exact ns / float64 epoch s
    assert np.abs(got[ok] - times[index[ok]]).max() <= tol
    assert rings is not None  # ring (Velodyne / Ouster) or channel (Hesai)


def test_point_times_absent_and_nan_rows_dropped():
    from drive_segment_ros.ros.pointcloud2 import points_to_pointcloud2

    msg = points_to_pointcloud2(np.zeros((4, 4), np.float32), "lidar", T_START, "rosbags")
    assert read_point_times_ns(msg) == (None, None)
    m = _Msgs(get_typestore(Stores.ROS2_HUMBLE))
    p = np.ones((5, 3))
    p[2, 0] = np.nan
    msg, _ = _velodyne_cloud(m, p, T_START + np.arange(5) * 1000, T_START, "lidar")
    times, _ = read_point_times_ns(msg)
    pts, _ = read_points_xyzi(msg)
    assert times.shape == (4,) == pts.shape[:1]
    assert times.tolist() == [T_START + k * 1000 for k in (0, 1, 3, 4)]


def test_recover_truncated_mcap(tmp_path):
    fb = write_nuscenes_mcap(tmp_path / "n")
    assert mcap_is_complete(fb.path)
    whole = recover_mcap(fb.path, tmp_path / "whole.mcap")
    assert whole.error == "" and whole.messages > 0
    cut = truncate(fb.path, 0.5, tmp_path / "cut.mcap")
    assert not mcap_is_complete(cut)
    rec = recover_mcap(cut, tmp_path / "rec.mcap")
    assert 0 < rec.messages < whole.messages and 0 < rec.chunks < whole.chunks
    assert rec.bytes_used <= rec.bytes_total and mcap_is_complete(tmp_path / "rec.mcap")
    assert "cut.mcap is truncated" in rec.summary() and f"recovered {rec.messages} messages" in rec.summary()
    [p] = open_paths_with_recovery([cut])
    assert p != cut and mcap_is_complete(p)
    from rosbags.highlevel import AnyReader

    with AnyReader([p]) as reader:  # the ROS 1 profile copy converted to ROS 2; the JSON /events channel left out
        assert sum(1 for _ in reader.messages()) == rec.messages - rec.channels.get("/events", 0)
    head = truncate(fb.path, 0.001, tmp_path / "head.mcap")  # nothing but the header
    with pytest.raises(DriveSegmentError, match="no complete chunk"):
        open_paths_with_recovery([head])
    (tmp_path / "x.mcap").write_bytes(b"not an mcap at all")
    with pytest.raises(DriveSegmentError, match="not an MCAP"):
        recover_mcap(tmp_path / "x.mcap", tmp_path / "y.mcap")


def test_ros1_profile_mcap_converted(tmp_path):
    from drive_segment_ros.ros.mcap_ros1 import convert_ros1_mcap, ros1_profile

    fb = write_nuscenes_mcap(tmp_path / "r1")
    assert ros1_profile(fb.path)
    conv = convert_ros1_mcap(fb.path, tmp_path / "r2.mcap")
    assert not ros1_profile(tmp_path / "r2.mcap")
    assert conv.messages["/CAM_FRONT/camera_info"] == 12 and conv.skipped == {"/events": "encoding 'json' (not ROS 1)"}
    fb2 = write_nuscenes_mcap(tmp_path / "cdr", profile="ros2")
    assert not ros1_profile(fb2.path) and open_paths_with_recovery([fb2.path]) == [fb2.path]


def test_unclosed_bag_directory_without_metadata(tmp_path):
    fb = write_lidar_driver_bag(tmp_path, "velodyne", storage="mcap", scans=2, uncalibrated_camera=False)
    (fb.path / "metadata.yaml").unlink()  # the recorder died before writing it
    paths = open_paths_with_recovery([fb.path])
    assert [p.suffix for p in paths] == [".mcap"]


def test_check_bag_sqlite_and_mcap(tmp_path):
    fb = write_lidar_driver_bag(tmp_path / "s", "velodyne", storage="sqlite3", scans=2, uncalibrated_camera=False)
    [(name, ok, detail)] = check_bag(fb.path)
    assert ok and detail == "ok" and name.endswith(".db3")
    db3 = next(fb.path.glob("*.db3"))
    damage_sqlite(db3)
    rows = sqlite_integrity(db3)
    assert rows != ["ok"]
    [(name, ok, detail)] = check_bag(fb.path)
    assert not ok and detail
    (tmp_path / "junk.db3").write_bytes(b"garbage" * 100)
    assert sqlite_integrity(tmp_path / "junk.db3")[0].startswith("not a database")
    nb = write_nuscenes_mcap(tmp_path / "m")
    [(name, ok, detail)] = check_bag(nb.path)
    assert ok and "CRCs valid" in detail
    cut = truncate(nb.path, 0.7, tmp_path / "m" / "cut.mcap")
    [(name, ok, detail)] = check_bag(cut)
    assert not ok and "truncated" in detail


def test_derived_copies_removed_at_exit(tmp_path):
    """The ROS 2 copy of a ROS 1 profile MCAP lives in temp while the process runs and is removed
    when it exits; a forked child that exits leaves its parent's copy in place."""
    import os
    import subprocess
    import sys
    import textwrap

    fb = write_nuscenes_mcap(tmp_path / "r1")
    script = textwrap.dedent(f"""
        import os, sys
        from drive_segment_ros.ros.mcap_ros1 import ros2_copy
        out = ros2_copy({str(fb.path)!r})
        assert out.is_file() and out.parent.name.startswith("drive_segment_ros1mcap_")
        pid = os.fork()
        if pid == 0:
            sys.exit(0)  # a normal interpreter exit in the child runs atexit handlers
        os.waitpid(pid, 0)
        assert out.is_file(), "the child removed the parent's copy"
        print(out)
        """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    out = Path(res.stdout.strip().splitlines()[-1])
    assert out.name == fb.path.name and not out.exists() and not out.parent.exists()
