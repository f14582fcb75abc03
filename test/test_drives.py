"""DriveReader: time pairing against brute force on a synthetic drive, storages, errors, CLI inspect."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rosbags.rosbag2 import StoragePlugin, Writer

from drive_segment_ros.ros.camera_info import camera_info_msg, transform_stamped
from drive_segment_training.drives import DriveReader, TimePairer
from drive_segment_ros.ros.image import rgb_to_compressed_msg, rgb_to_image_msg
from drive_segment_ros.ros.msgtypes import rosbags_types
from drive_segment_ros.ros.pointcloud2 import points_to_pointcloud2
from drive_segment_ros.types import CameraModel, DriveSegmentError

MS = 1_000_000
T0 = 1_700_000_000_000_000_000
SCANS_MS = [0, 100, 200, 300, 400, 500, 600, 700, 800, 900]
CAM_A_MS = [10, 120, 240, 345, 450, 560, 960]  # 450: exactly 50 ms -> paired; 960: 60 ms -> unpaired
CAM_B_MS = [55, 180, 730, 1000]  # 1000: 100 ms after the last scan -> unpaired
T_BASE_LIDAR = np.array([[1, 0, 0, 0.5], [0, 1, 0, 0], [0, 0, 1, 1.8], [0, 0, 0, 1.0]])
T_BASE_CAM = np.array([[0, 0, 1, 1.0], [-1, 0, 0, 0.1], [0, -1, 0, 1.5], [0, 0, 0, 1.0]])
CAM = CameraModel(K=np.array([[50.0, 0, 16], [0, 50, 12], [0, 0, 1]]), D=np.zeros(5), width=32, height=24, frame_id="cam_a_optical")
CAM_B = CameraModel(K=np.array([[40.0, 0, 16], [0, 40, 12], [0, 0, 1]]), D=np.zeros(5), width=32, height=24, frame_id="cam_b_optical")


def _image(i: int) -> np.ndarray:
    img = np.zeros((24, 32, 3), np.uint8)
    img[..., 0] = i
    img[..., 1] = np.arange(32, dtype=np.uint8)[None, :]
    img[..., 2] = 200
    return img


def write_drive(path: Path, storage="sqlite3", with_tf=True, with_info=True, with_lidar=True, with_images=True,
                lidar_latency_ms=60, image_latency_ms=30, tf_topic="/tf_static") -> Path:
    """Synthetic drive: 10 Hz scans (x = scan index) and two cameras, bag time = stamp + latency."""
    t = rosbags_types()
    store = t.typestore
    records = []
    if with_tf:
        tf = t.TFMessage(transforms=[transform_stamped(T_BASE_LIDAR, "base_link", "lidar", T0, t),
                                     transform_stamped(T_BASE_CAM, "base_link", "cam_a_optical", T0, t),
                                     transform_stamped(np.eye(4), "cam_a_optical", "cam_b_optical", T0, t)])
        records.append((tf_topic, T0, tf))
    if with_lidar:
        for k, ms in enumerate(SCANS_MS):
            pts = np.zeros((100 + k, 4), np.float32)
            pts[:, 0] = k
            pts[:, 3] = np.arange(100 + k)
            pts[0, 1] = np.nan  # dropped by the reader
            msg = points_to_pointcloud2(pts, "lidar", T0 + ms * MS, t, rings=np.arange(100 + k) % 16)
            records.append(("/velodyne_points", T0 + (ms + lidar_latency_ms) * MS, msg))
    if with_images:
        for i, ms in enumerate(CAM_A_MS):
            stamp = T0 + ms * MS
            if with_info:
                records.append(("/cam_a/camera_info", stamp + image_latency_ms * MS, camera_info_msg(CAM, stamp, t)))
            records.append(("/cam_a/image_raw", stamp + image_latency_ms * MS, rgb_to_image_msg(_image(i), CAM.frame_id, stamp, t, encoding="bgr8")))
        for i, ms in enumerate(CAM_B_MS):
            stamp = T0 + ms * MS
            if with_info:
                records.append(("/cam_b/camera_info", stamp + image_latency_ms * MS, camera_info_msg(CAM_B, stamp, t)))
            records.append(("/cam_b/image_raw/compressed", stamp + image_latency_ms * MS,
                            rgb_to_compressed_msg(_image(100 + i), CAM_B.frame_id, stamp, t, fmt="png")))
    writer = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3)
    writer.open()
    conns = {}
    for topic, bag_time, msg in sorted(records, key=lambda r: r[1]):
        if topic not in conns:
            conns[topic] = writer.add_connection(topic, msg.__msgtype__, typestore=store)
        writer.write(conns[topic], bag_time, store.serialize_cdr(msg, msg.__msgtype__))
    writer.close()
    return path


def expected_pairs(max_dt_ms=50.0):
    """Brute force: every image with its nearest scan (all scans known), within max_dt."""
    out = {}
    for topic, stamps, base in (("/cam_a/image_raw", CAM_A_MS, 0), ("/cam_b/image_raw/compressed", CAM_B_MS, 100)):
        for i, ms in enumerate(stamps):
            d = np.abs(np.array(SCANS_MS) - ms)
            k = int(np.argmin(d))
            out[(topic, base + i)] = k if d[k] <= max_dt_ms else None
    return out


def test_time_pairer_known_answer():
    p = TimePairer(max_dt_ns=50)
    assert p.add_image(120, "a", "i120") == []
    assert p.add_scan(100, "s100") == []  # scan before the image does not resolve it
    [(img, scan)] = p.add_scan(200, "s200")
    assert (img.item, scan.item) == ("i120", "s100")
    [(img, scan)] = p.add_image(180, "a", "i180")  # late image, a later scan is already buffered
    assert scan.item == "s200"
    p.add_image(500, "a", "i500")
    [(img, scan)] = p.flush()
    assert img.item == "i500" and scan is None
    # bounded buffers: a camera-only stretch never queues more than max_pending images
    p = TimePairer(max_dt_ns=50, scan_buffer=4, max_pending=8)
    resolved = []
    for k in range(1000):
        resolved += p.add_image(k * 100, "a", k)
        assert len(p.pending) <= 8
    assert len(resolved) == 992 and all(scan is None for _, scan in resolved)
    for k in range(100):
        p.add_scan(10**6 + k, k)
    assert len(p.scans) == 4


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_pairing_matches_brute_force(tmp_path, storage):
    bag = write_drive(tmp_path / "drive", storage=storage)
    reader = DriveReader(bag, progress=False)
    assert reader.image_topics == ["/cam_a/image_raw", "/cam_b/image_raw/compressed"]
    assert reader.lidar_topic == "/velodyne_points" and reader.lidar_frame == "lidar"
    assert reader.camera_info_topics == {"/cam_a/image_raw": "/cam_a/camera_info",
                                         "/cam_b/image_raw/compressed": "/cam_b/camera_info"}
    frames = list(reader)
    expected = expected_pairs()
    got = {}
    for f in frames:
        ident = int(f.image[0, 0, 0])
        got[(f.image_topic, ident)] = int(f.points[0, 0])
        k = int(f.points[0, 0])
        assert f.lidar_stamp_ns == T0 + SCANS_MS[k] * MS
        assert f.points.shape == (100 + k - 1, 4) and f.points.dtype == np.float32  # the NaN point dropped
        assert f.rings.dtype == np.int16 and f.rings[0] == 1
        np.testing.assert_array_equal(f.image[..., 1], np.broadcast_to(np.arange(32), (24, 32)))
        assert f.image.dtype == np.uint8 and f.image.shape == (24, 32, 3)
        cam = CAM if f.image_topic == "/cam_a/image_raw" else CAM_B
        np.testing.assert_array_equal(f.camera.K, cam.K)
        assert f.camera.frame_id == cam.frame_id
        # T_cam_lidar = T_base_cam^-1 @ T_base_lidar (cam_b coincides with cam_a)
        np.testing.assert_allclose(f.T_cam_lidar, np.linalg.inv(T_BASE_CAM) @ T_BASE_LIDAR, atol=1e-9)
    assert got == {key: k for key, k in expected.items() if k is not None}
    assert [f.index for f in frames] == list(range(len(frames)))
    stats = reader.summary()["pairing"]
    assert stats["images_paired"] == 9 and stats["images_unpaired"] == 2
    assert stats["unpaired"] == {"/cam_a/image_raw": 1, "/cam_b/image_raw/compressed": 1}
    assert stats["max_abs_dt_ms"] == pytest.approx(50.0)
    # stamps-only pass (no full iteration) gives the same statistics
    assert DriveReader(bag, progress=False).pairing_stats() == stats
    # a tighter window pairs fewer images
    assert DriveReader(bag, max_dt_ms=20, progress=False).pairing_stats()["images_paired"] == \
        sum(k is not None for k in expected_pairs(20).values())


def test_topic_overrides_and_roles(tmp_path):
    bag = write_drive(tmp_path / "drive")
    reader = DriveReader(bag, image_topics=["/cam_b/image_raw/compressed"], camera_info_topics=["/cam_b/camera_info"], progress=False)
    assert {f.image_topic for f in reader} == {"/cam_b/image_raw/compressed"}
    roles = reader.roles()
    assert roles["/cam_b/image_raw/compressed"] == "image" and roles["/velodyne_points"] == "lidar"
    assert roles["/tf_static"] == "tf_static" and roles["/cam_a/image_raw"] == "other"
    with pytest.raises(DriveSegmentError, match="image topic '/nope' is not in bag"):
        DriveReader(bag, image_topics=["/nope"])
    with pytest.raises(DriveSegmentError, match="LiDAR topic '/cam_a/image_raw' is not a PointCloud2"):
        DriveReader(bag, lidar_topic="/cam_a/image_raw")


def test_transforms_on_dynamic_tf(tmp_path):
    bag = write_drive(tmp_path / "drive", tf_topic="/tf")
    reader = DriveReader(bag, progress=False)
    assert reader.roles()["/tf"] == "tf"
    f = next(iter(reader))
    np.testing.assert_allclose(f.T_cam_lidar, np.linalg.inv(T_BASE_CAM) @ T_BASE_LIDAR, atol=1e-9)


def test_calibration_yaml_replaces_tf_static(tmp_path):
    bag = write_drive(tmp_path / "drive", with_tf=False)
    with pytest.raises(DriveSegmentError, match="no transform between LiDAR frame 'lidar' and camera frame 'cam_a_optical'"):
        DriveReader(bag)
    T = np.array([[0, -1, 0, 0.1], [0, 0, -1, 0.2], [1, 0, 0, 0.3], [0, 0, 0, 1.0]])
    rows = "\n".join(f"      - {r.tolist()}" for r in T)
    (tmp_path / "cal.yaml").write_text(
        f"lidar_frame: lidar\ncameras:\n  cam_a_optical:\n    T_cam_lidar:\n{rows}\n    K: [[60, 0, 16], [0, 60, 12], [0, 0, 1]]\n"
        f"  /cam_b/image_raw/compressed:\n    T_cam_lidar:\n{rows}\n"
    )
    reader = DriveReader(bag, calibration=tmp_path / "cal.yaml", progress=False)
    frames = list(reader)
    assert frames and all(np.array_equal(f.T_cam_lidar, T) for f in frames)
    assert {f.camera.K[0, 0] for f in frames if f.image_topic == "/cam_a/image_raw"} == {60.0}
    (tmp_path / "bad.yaml").write_text("cameras:\n  cam_a_optical:\n    T_cam_lidar: [[1, 0, 0], [0, 1, 0], [0, 0, 1]]\n")
    with pytest.raises(DriveSegmentError, match="T_cam_lidar: expected a 4x4"):
        DriveReader(bag, calibration=tmp_path / "bad.yaml")


def test_errors(tmp_path):
    with pytest.raises(DriveSegmentError, match="not found"):
        DriveReader(tmp_path / "missing")
    junk = tmp_path / "junk.bag"
    junk.write_bytes(b"#ROSBAG V2.0\n" + bytes(range(256)) * 4)
    with pytest.raises(DriveSegmentError, match="cannot read bag"):
        DriveReader(junk)
    bag = write_drive(tmp_path / "cut")
    db = next(bag.glob("*.db3"))
    db.write_bytes(db.read_bytes()[:2000])
    with pytest.raises(DriveSegmentError, match="cannot read bag"):
        DriveReader(bag)
    with pytest.raises(DriveSegmentError, match="no sensor_msgs/PointCloud2"):
        DriveReader(write_drive(tmp_path / "nolidar", with_lidar=False))
    with pytest.raises(DriveSegmentError, match="no sensor_msgs/Image or CompressedImage"):
        DriveReader(write_drive(tmp_path / "noimg", with_images=False))
    with pytest.raises(DriveSegmentError, match="no CameraInfo for image topic '/cam_a/image_raw'"):
        DriveReader(write_drive(tmp_path / "noinfo", with_info=False))
    with pytest.raises(DriveSegmentError, match="max_dt_ms"):
        DriveReader(bag, max_dt_ms=-1)


def test_ros1_bag_written_with_rosbag1_writer(tmp_path):
    """A ROS 1 bag (Noetic types: Header.seq, CameraInfo.K/D) read through AnyReader."""
    from rosbags.rosbag1 import Writer as Writer1
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS1_NOETIC)
    Time, Header = store.types["builtin_interfaces/msg/Time"], store.types["std_msgs/msg/Header"]
    Image, Info = store.types["sensor_msgs/msg/Image"], store.types["sensor_msgs/msg/CameraInfo"]
    ROI = store.types["sensor_msgs/msg/RegionOfInterest"]
    ros2_cloud = points_to_pointcloud2(np.array([[5, 0, 0, 7], [6, 1, 0, 8]], np.float32), "lidar", T0, "rosbags")
    Cloud, Field = store.types["sensor_msgs/msg/PointCloud2"], store.types["sensor_msgs/msg/PointField"]

    def header(frame, stamp):
        return Header(seq=0, stamp=Time(sec=stamp // 10**9, nanosec=stamp % 10**9), frame_id=frame)

    rgb = _image(7)
    img = Image(header=header("cam_a_optical", T0 + 10 * MS), height=24, width=32, encoding="rgb8", is_bigendian=0,
                step=96, data=rgb.reshape(-1).copy())
    info = Info(header=header("cam_a_optical", T0 + 10 * MS), height=24, width=32, distortion_model="plumb_bob",
                D=np.zeros(5), K=CAM.K.reshape(-1), R=np.eye(3).reshape(-1), P=np.hstack([CAM.K, np.zeros((3, 1))]).reshape(-1),
                binning_x=0, binning_y=0, roi=ROI(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))
    cloud = Cloud(header=header("lidar", T0), height=1, width=2,
                  fields=[Field(name=f.name, offset=f.offset, datatype=f.datatype, count=f.count) for f in ros2_cloud.fields],
                  is_bigendian=False, point_step=ros2_cloud.point_step, row_step=ros2_cloud.row_step,
                  data=ros2_cloud.data, is_dense=True)
    path = tmp_path / "drive.bag"
    with Writer1(path) as w:
        for topic, msg, stamp in (("/velodyne_points", cloud, T0), ("/cam_a/camera_info", info, T0 + 10 * MS),
                                  ("/cam_a/image_raw", img, T0 + 10 * MS)):
            conn = w.add_connection(topic, msg.__msgtype__, typestore=store)
            w.write(conn, stamp, store.serialize_ros1(msg, msg.__msgtype__))
    T = np.eye(4)
    (tmp_path / "cal.yaml").write_text(f"cameras:\n  cam_a_optical:\n    T_cam_lidar: {T.reshape(-1).tolist()}\n")
    frames = list(DriveReader(path, calibration=tmp_path / "cal.yaml", progress=False))
    assert len(frames) == 1
    f = frames[0]
    np.testing.assert_array_equal(f.image, rgb)
    np.testing.assert_array_equal(f.points, [[5, 0, 0, 7], [6, 1, 0, 8]])
    np.testing.assert_array_equal(f.camera.K, CAM.K)
    assert f.dt_ns == -10 * MS


def _run_cli(argv):
    """Parse with only this module's subcommand (other stages may not be importable yet)."""
    import argparse

    from drive_segment_training import drives

    parser = argparse.ArgumentParser(prog="drive-segment")
    drives.add_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_inspect(tmp_path, capsys):
    import json

    bag = write_drive(tmp_path / "drive")
    assert _run_cli(["inspect", str(bag)]) == 0
    out = capsys.readouterr().out
    assert "/velodyne_points" in out and "lidar" in out
    assert "9 paired, 2 unpaired, 10 scans" in out
    assert _run_cli(["inspect", str(bag), "--json", "--max-dt-ms", "20"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["max_dt_ms"] == 20 and s["topics"]["/cam_a/camera_info"]["role"] == "camera_info"
    with pytest.raises(DriveSegmentError, match="bag .* not found"):
        _run_cli(["inspect", str(tmp_path / "missing")])


def test_real_kitti_bag(kitti_bag):
    reader = DriveReader(kitti_bag, progress=False)
    s = reader.summary()
    assert s["pairing"]["images_paired"] == 1 and s["lidar_frame"] == "velo_link"
    [f] = list(reader)
    assert f.image.shape == (375, 1242, 3) and f.points.shape == (17238, 4) and f.dt_ns == 0


def test_real_nuscenes_bag_pairs_six_cameras(nuscenes_bag):
    reader = DriveReader(nuscenes_bag, progress=False)
    frames = list(reader)
    assert len(frames) == 6
    dts = sorted(round(abs(f.dt_ns) / 1e6, 3) for f in frames)
    # file-name stamps: LiDAR ...647951 us, cameras ...604844 .. 647423 us
    assert dts == [0.528, 10.426, 20.058, 27.612, 35.491, 43.107]
    assert all(f.rings is not None and f.rings.max() == 31 for f in frames)
    assert DriveReader(nuscenes_bag, max_dt_ms=30, progress=False).pairing_stats()["images_unpaired"] == 2
