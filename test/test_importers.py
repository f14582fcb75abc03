"""Importers: KITTI / nuScenes -> bag -> DriveReader round trips against the raw files and calib.json."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from rosbags.highlevel import AnyReader

from drive_segment_training.drives import DriveReader
from drive_segment_ros.geometry import invert_transform
from drive_segment_training.importers import KITTI_DEFAULT_STAMP_NS, import_kitti, import_nuscenes, kitti_T_cam_lidar
from drive_segment_ros.ros.msgtypes import rosbags_typestore
from drive_segment_ros.tf_buffer import TransformBuffer
from drive_segment_ros.types import DriveSegmentError


def _bag_messages(bag, topic):
    with AnyReader([bag], default_typestore=rosbags_typestore()) as r:
        conns = [c for c in r.connections if c.topic == topic]
        return [(c, t, r.deserialize(raw, c.msgtype)) for c, t, raw in r.messages(connections=conns)]


def _project(P34, pts):
    X = np.hstack([pts[:, :3].astype(np.float64), np.ones((len(pts), 1))])
    h = (P34 @ X.T).T
    return h[:, :2] / h[:, 2:3], h[:, 2]


def _check_kitti(bag, kitti_dir):
    calib = json.loads((kitti_dir / "calib.json").read_text())
    cam2 = calib["cameras"]["CAM2"]
    P2 = np.array(cam2["cam2img"])[:3]
    reader = DriveReader(bag, progress=False)
    assert reader.image_topics == ["/kitti/camera_color_left/image_raw"]
    assert reader.lidar_topic == "/kitti/velodyne/points"
    [f] = list(reader)
    np.testing.assert_array_equal(f.image, cv2.imread(str(kitti_dir / "000008.png"))[:, :, ::-1])
    scan = np.fromfile(kitti_dir / "000008.bin", np.float32).reshape(-1, 4)
    np.testing.assert_array_equal(f.points, scan)
    assert f.rings is None and f.lidar_frame == "velo_link"
    assert f.image_stamp_ns == f.lidar_stamp_ns == KITTI_DEFAULT_STAMP_NS
    np.testing.assert_array_equal(f.camera.K, P2[:, :3])
    assert f.camera.frame_id == "camera_color_left_optical" and (f.camera.width, f.camera.height) == (1242, 375)
    # known answer: K @ T_cam_lidar projects LiDAR points to the same pixels as calib lidar2img
    front = scan[scan[:, 0] > 1.0]
    uv_ours, z_ours = _project(f.camera.K @ f.T_cam_lidar[:3], front)
    uv_ref, z_ref = _project(np.array(cam2["lidar2img"])[:3], front)
    assert front.shape[0] > 15000
    np.testing.assert_allclose(uv_ours, uv_ref, atol=1e-3)
    np.testing.assert_allclose(z_ours, z_ref, atol=1e-5)
    # P2's 4th column folded into T_cam_lidar: t = K^-1 p4, by hand t_x = (44.85728 - 609.5593 * 0.002745884) / 721.5377
    np.testing.assert_allclose(f.T_cam_lidar, kitti_T_cam_lidar(calib)[1], atol=1e-6)
    shift = f.T_cam_lidar[:3, 3] - np.array(cam2["lidar2cam"])[:3, 3]
    np.testing.assert_allclose(shift, [(44.85728 - 609.5593 * 0.002745884) / 721.5377,
                                       (0.2163791 - 172.854 * 0.002745884) / 721.5377, 0.002745884], atol=1e-6)
    return calib, P2


def test_kitti_round_trip(kitti_bag, kitti_dir):
    calib, P2 = _check_kitti(kitti_bag, kitti_dir)
    [(_, _, info)] = _bag_messages(kitti_bag, "/kitti/camera_color_left/camera_info")
    np.testing.assert_array_equal(np.asarray(info.p).reshape(3, 4), P2)
    [(conn, t, tf)] = _bag_messages(kitti_bag, "/tf_static")
    assert t == KITTI_DEFAULT_STAMP_NS
    assert [(x.header.frame_id, x.child_frame_id) for x in tf.transforms] == [
        ("base_link", "velo_link"), ("velo_link", "camera_color_left_optical")]
    tree = TransformBuffer.from_messages([tf], static=True)
    np.testing.assert_allclose(tree.lookup_transform("velo_link", "base_link"), np.array(calib["Tr_imu_to_velo"]), atol=1e-6)
    qos = conn.ext.offered_qos_profiles
    assert qos and qos[0].durability.name == "TRANSIENT_LOCAL"


def test_kitti_mcap_and_ros1(kitti_dir, tmp_path):
    from rosbags.convert import convert
    from rosbags.typesys import Stores, get_typestore

    bag = import_kitti(kitti_dir, tmp_path / "k_mcap", storage="mcap")
    assert list(bag.glob("*.mcap"))
    _check_kitti(bag, kitti_dir)
    _check_kitti(next(bag.glob("*.mcap")), kitti_dir)  # the storage file itself is accepted too
    ros1 = tmp_path / "k.bag"  # rosbag2 -> rosbag1 through rosbags' converter (rosbag1 Writer)
    convert([bag], ros1, dst_storage="sqlite3", dst_version=None, compress=None, compress_mode="file",
            default_typestore=None, typestore=get_typestore(Stores.ROS1_NOETIC), exclude_topics=[], include_topics=[],
            exclude_msgtypes=[], include_msgtypes=[])
    _check_kitti(ros1, kitti_dir)
    # the same bag without its LiDAR topic, and a truncated mcap -> one-line errors
    nolidar = tmp_path / "k_nolidar"
    convert([bag], nolidar, dst_storage="sqlite3", dst_version=9, compress=None, compress_mode="file",
            default_typestore=None, typestore=None, exclude_topics=["/kitti/velodyne/points"], include_topics=[],
            exclude_msgtypes=[], include_msgtypes=[])
    with pytest.raises(DriveSegmentError, match="no sensor_msgs/PointCloud2 .LiDAR. topic"):
        DriveReader(nolidar)
    mcap = next(bag.glob("*.mcap"))
    mcap.write_bytes(mcap.read_bytes()[:5000])
    with pytest.raises(DriveSegmentError, match="cannot read bag"):
        list(DriveReader(bag, progress=False))


def test_nuscenes_round_trip(nuscenes_bag, nuscenes_dir):
    calib = json.loads((nuscenes_dir / "calib.json").read_text())
    scan = np.fromfile(next(nuscenes_dir.glob("*LIDAR_TOP*.pcd.bin")), np.float32).reshape(-1, 5)
    lidar_stamp = 1532402927647951 * 1000
    T_ego_lidar = np.array(calib["lidar"]["lidar2ego"])
    reader = DriveReader(nuscenes_bag, progress=False)
    frames = list(reader)
    assert sorted(f.image_topic for f in frames) == sorted(f"/nuscenes/{c}/image_raw/compressed" for c in calib["cameras"])
    for f in frames:
        name = f.image_topic.split("/")[2]
        cam = calib["cameras"][name]
        assert f.camera.frame_id == f"{name}_optical" and f.lidar_frame == "LIDAR_TOP"
        assert f.image_stamp_ns == int(cam["image_file"].split("__")[-1][:-4]) * 1000
        assert f.lidar_stamp_ns == lidar_stamp
        np.testing.assert_array_equal(f.image, cv2.imread(str(nuscenes_dir / cam["image_file"]))[:, :, ::-1])
        np.testing.assert_array_equal(f.points, scan[:, :4])
        np.testing.assert_array_equal(f.rings, scan[:, 4].astype(np.int16))
        np.testing.assert_array_equal(f.camera.K, np.array(cam["cam2img"]))
        # static mountings on /tf_static; the ego poses at the 7 sensor stamps on /tf make the reader's
        # compensated extrinsic the dataset's per-keyframe lidar2cam (test_foreign_bags checks 1e-4 m)
        np.testing.assert_allclose(reader.T_cam_lidar(f.image_topic), invert_transform(np.array(cam["cam2ego"])) @ T_ego_lidar, atol=1e-6)
        np.testing.assert_allclose(f.T_cam_lidar, np.array(cam["lidar2cam"]), atol=1e-4)
        assert f.extra["ego_motion"]["compensated"]


def test_nuscenes_keyframe_extrinsics_mcap(nuscenes_dir, tmp_path):
    bag = import_nuscenes(nuscenes_dir, tmp_path / "n", storage="mcap", extrinsics="keyframe")
    calib = json.loads((nuscenes_dir / "calib.json").read_text())
    scan = np.fromfile(next(nuscenes_dir.glob("*LIDAR_TOP*.pcd.bin")), np.float32).reshape(-1, 5)
    reader = DriveReader(bag, image_topics=["/nuscenes/CAM_FRONT/image_raw/compressed"], progress=False)
    [f] = list(reader)
    cam = calib["cameras"]["CAM_FRONT"]
    np.testing.assert_allclose(f.T_cam_lidar, np.array(cam["lidar2cam"]), atol=1e-6)
    ahead = scan[scan[:, 1] > 2.0]  # LIDAR_TOP is x right, y forward
    uv, z = _project(f.camera.K @ f.T_cam_lidar[:3], ahead)
    uv_ref, _ = _project(np.array(cam["cam2img"]) @ np.array(cam["lidar2cam"])[:3], ahead)
    np.testing.assert_allclose(uv, uv_ref, atol=1e-3)
    inside = (z > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < 1600) & (uv[:, 1] >= 0) & (uv[:, 1] < 900)
    assert inside.sum() > 2000  # the front camera sees thousands of LiDAR points


def test_importer_errors_and_cli(kitti_dir, tmp_path, capsys):
    import argparse

    from drive_segment_training import importers

    with pytest.raises(DriveSegmentError, match="source directory"):
        import_kitti(tmp_path / "nope", tmp_path / "x")
    with pytest.raises(DriveSegmentError, match="unknown storage"):
        import_kitti(kitti_dir, tmp_path / "x", storage="zip")
    with pytest.raises(DriveSegmentError, match="calib.json"):
        import_nuscenes(tmp_path, tmp_path / "y")
    with pytest.raises(DriveSegmentError, match="extrinsics"):
        import_nuscenes(tmp_path, tmp_path / "y", extrinsics="moving")
    parser = argparse.ArgumentParser()
    importers.add_cli(parser.add_subparsers())
    args = parser.parse_args(["import-kitti", str(kitti_dir), "--out", str(tmp_path / "cli"), "--storage", "mcap", "--stamp-ns", "5000"])
    assert args.func(args) == 0 and capsys.readouterr().out.strip() == str(tmp_path / "cli")
    [f] = list(DriveReader(tmp_path / "cli", progress=False))
    assert f.image_stamp_ns == 5000
    with pytest.raises(DriveSegmentError, match="already exists"):
        args.func(args)
    args = parser.parse_args(["import-nuscenes", "src", "--out", "o"])
    assert args.storage == "sqlite3" and args.extrinsics == "static"
