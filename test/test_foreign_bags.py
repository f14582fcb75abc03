"""The drive reader on bags written the way the field's tools write them (test/fixtures/foreign_bags.py).

Each fixture has a synthetic world and a known ego trajectory, so every frame can be checked against
the truth: ``T_cam_lidar @ points`` must be where the camera saw the world points at the image time.
"""
from __future__ import annotations

import logging

import numpy as np
import pytest

from drive_segment_training.drives import DriveReader
from drive_segment_ros.types import DriveSegmentError
from fixtures.foreign_bags import (
    WRITERS,
    damage_sqlite,
    truncate,
    write_lidar_driver_bag,
)

pytest.importorskip("mcap")


@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    root = tmp_path_factory.mktemp("foreign")
    return {name: fn(root / name) for name, fn in WRITERS.items()}


def camera_error(fb, frame) -> np.ndarray:
    """Per-point distance (m) between the reader's camera coordinates and the truth (no-return cells dropped)."""
    expect = fb.expected_camera_points(frame.image_topic, frame.image_stamp_ns, frame.lidar_stamp_ns)
    keep = ~np.isnan(expect[:, 0])
    if fb.convention == "ouster":  # read_points_xyzi keeps no-return (0, 0, 0) cells, in cell order
        pts = frame.points[keep]
    else:
        pts = frame.points
    expect = expect[keep]
    got = np.hstack([pts[:, :3].astype(np.float64), np.ones((len(pts), 1))]) @ frame.T_cam_lidar.T
    return np.linalg.norm(got[:, :3] - expect, axis=1)


@pytest.mark.parametrize("name", list(WRITERS))
def test_reader_reproduces_true_camera_coordinates(bags, name):
    fb = bags[name]
    reader = DriveReader(fb.path, progress=False)
    assert reader.lidar_topic == fb.lidar_topic and reader.lidar_frame == fb.lidar_frame
    assert sorted(reader.image_topics) == sorted(fb.image_topics)
    assert sorted(reader.skipped) == sorted(fb.uncalibrated_topics)
    assert reader.ego_motion_available and reader.compensate
    assert (reader.point_time_field is not None) == fb.per_point_time
    frames = list(reader)
    assert {f.image_topic for f in frames} == set(fb.image_topics)  # every calibrated camera pairs
    stats = reader.pairing_stats()
    assert stats["compensated_pairs"] == len(frames) and stats["uncompensated_pairs"] == 0
    if fb.per_point_time:
        assert stats["deskewed_scans"] == len({f.lidar_stamp_ns for f in frames})
    worst = 0.0
    for f in frames:
        assert f.extra["ego_motion"]["compensated"] and f.extra["ego_motion"]["deskewed"] == fb.per_point_time
        worst = max(worst, float(camera_error(fb, f).max()))
    assert worst < 2e-3, f"{name}: worst camera-frame error {worst:.4f} m"  # float32 points over 30 m


@pytest.mark.parametrize("name", ["velodyne", "nuscenes2mcap"])
def test_compensation_off_is_off_by_the_ego_motion(bags, name):
    fb = bags[name]
    frames = list(DriveReader(fb.path, progress=False, ego_motion="off"))
    worst = max(float(camera_error(fb, f).max()) for f in frames)
    assert worst > 0.1  # 8 m/s: tens of ms between stamps (and a 0.1 s sweep) are decimetres
    assert not any(f.extra["ego_motion"]["compensated"] for f in frames)


def test_split_zstd_mcap_bag(tmp_path):
    fb = write_lidar_driver_bag(tmp_path, "velodyne", storage="mcap", split=True, compress=True, scans=4)
    assert len(list(fb.path.glob("*.mcap"))) == 2
    reader = DriveReader(fb.path, progress=False)
    frames = list(reader)
    assert {f.lidar_stamp_ns for f in frames} == set(fb.scan_stamps)
    assert max(float(camera_error(fb, f).max()) for f in frames) < 2e-3


def test_uncalibrated_camera_reported_and_all_uncalibrated_fatal(bags):
    fb = bags["velodyne"]
    reader = DriveReader(fb.path, progress=False)
    assert "no CameraInfo for image topic '/camera_extra/image_raw/compressed'" in reader.skipped["/camera_extra/image_raw/compressed"]
    assert reader.roles()["/camera_extra/image_raw/compressed"] == "image (skipped)"
    with pytest.raises(DriveSegmentError, match="no usable camera .*no CameraInfo for image topic '/camera_extra"):
        DriveReader(fb.path, image_topics=["/camera_extra/image_raw/compressed"], progress=False)
    no_odom = write_lidar_driver_bag(fb.path.parent / "no_odom", "velodyne", scans=2, odometry=False)
    reader = DriveReader(no_odom.path, progress=False)
    assert not reader.ego_motion_available and "no /tf odometry" in reader.ego_motion_description
    assert not any(f.extra["ego_motion"]["compensated"] for f in reader)
    with pytest.raises(DriveSegmentError, match="ego_motion='on' but .* has no usable odometry"):
        DriveReader(no_odom.path, progress=False, ego_motion="on")


def test_truncated_mcap_read_up_to_last_chunk(bags, tmp_path, caplog):
    fb = bags["nuscenes2mcap"]
    cut = truncate(fb.path, 0.6, tmp_path / "cut.mcap")
    with caplog.at_level(logging.WARNING):
        reader = DriveReader(cut, progress=False)
        frames = list(reader)
    msg = " ".join(r.getMessage() for r in caplog.records)
    assert "cut.mcap is truncated" in msg and "recovered" in msg and "complete chunks" in msg
    full = list(DriveReader(fb.path, progress=False))
    assert 0 < len(frames) < len(full)
    assert max(float(camera_error(fb, f).max()) for f in frames) < 2e-3


def test_damaged_sqlite_reported_by_inspect_check(tmp_path, capsys):
    import argparse

    from drive_segment_training import drives

    fb = write_lidar_driver_bag(tmp_path, "velodyne", storage="sqlite3", scans=3, uncalibrated_camera=False)
    parser = argparse.ArgumentParser(prog="drive-segment")
    drives.add_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["inspect", str(fb.path), "--check"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "ok  velodyne_drive.db3: ok" in out and "ego-motion: /tf odometry, fixed frame 'odom'" in out
    assert "per-point time field 'time'" in out and "transform=/tf_static" in out
    damage_sqlite(next(fb.path.glob("*.db3")))
    args = parser.parse_args(["inspect", str(fb.path), "--check"])
    assert args.func(args) == 1
    out = capsys.readouterr().out
    assert "BAD velodyne_drive.db3" in out


def test_nuscenes_import_reproduces_compensated_lidar2cam(nuscenes_dir, tmp_path):
    """Known answer on real data: import-nuscenes writes the 7 ego poses (derived from calib.json) on
    /tf; the reader's compensated T_cam_lidar equals each camera's lidar2cam to 1e-4 m."""
    import json

    from drive_segment_training.importers import import_nuscenes

    calib = json.loads((nuscenes_dir / "calib.json").read_text())
    bag = import_nuscenes(nuscenes_dir, tmp_path / "n")
    reader = DriveReader(bag, progress=False)
    assert reader.ego_motion_available and "odom" in reader.ego_motion_description
    frames = list(reader)
    assert len(frames) == 6
    worst, worst_static = 0.0, 0.0
    for f in frames:
        cam = calib["cameras"][f.image_topic.split("/")[2]]
        L = np.array(cam["lidar2cam"])
        worst = max(worst, float(np.abs(f.T_cam_lidar[:3, 3] - L[:3, 3]).max()))
        np.testing.assert_allclose(f.T_cam_lidar[:3, :3], L[:3, :3], atol=1e-5)
        worst_static = max(worst_static, float(np.abs(reader.T_cam_lidar(f.image_topic)[:3, 3] - L[:3, 3]).max()))
    assert worst < 1e-4, worst
    assert worst_static > 0.1  # without compensation the extrinsic is off by decimetres
    off = {f.image_topic: f.T_cam_lidar for f in DriveReader(bag, progress=False, ego_motion="off")}
    assert all(np.allclose(off[t], reader.T_cam_lidar(t)) for t in off)


def test_ego_motion_figures_on_nuscenes(nuscenes_bag, tmp_path):
    """The report figure: projected segments with compensation off (static extrinsic) vs on."""
    from drive_segment_training.figures import write_ego_motion_figures

    rows = write_ego_motion_figures(nuscenes_bag, tmp_path / "fig", max_figures=1)
    assert len(rows) == 6 and rows[0]["dt_ms"] == pytest.approx(43.107, abs=1e-3)  # CAM_FRONT_LEFT: largest |dt|
    assert rows[0]["shift_px_median"] > 10 and rows[0]["ego_translation_m"] > 0.3 and rows[0]["changed_pixels"] > 0.05
    assert rows[-1]["shift_px_median"] < 1.0  # CAM_BACK_LEFT, 0.5 ms from the sweep: nothing moves
    import cv2

    img = cv2.imread(rows[0]["figure"])
    assert img is not None and img.shape[1] == 960
    assert "figure" not in rows[1]


def test_camera_info_topic_and_calibration_options(bags, tmp_path, capsys):
    """`--camera-info-topic IMAGE=INFO` and `--calibration` rescue the camera the bag leaves uncalibrated."""
    import argparse

    from drive_segment_training import drives

    fb = bags["velodyne"]
    extra = "/camera_extra/image_raw/compressed"
    T = np.linalg.inv(fb.T_base_cam["/camera_front/image_raw/compressed"])  # any rigid extrinsic will do here
    rows = "\n".join(f"      - {r.tolist()}" for r in T)
    (tmp_path / "cal.yaml").write_text(f"cameras:\n  {extra}:\n    T_cam_lidar:\n{rows}\n")
    parser = argparse.ArgumentParser(prog="drive-segment")
    drives.add_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["inspect", str(fb.path), "--json", "--calibration", str(tmp_path / "cal.yaml"),
                              "--camera-info-topic", f"{extra}=/camera_front/camera_info"])
    assert args.func(args) == 0
    s = __import__("json").loads(capsys.readouterr().out)
    assert extra in s["image_topics"] and not s["skipped_cameras"]
    assert s["cameras"][extra]["transform_source"].startswith("calibration")
    assert s["pairing"]["per_camera"][extra]["paired"] == 7
    with pytest.raises(DriveSegmentError, match="--camera-info-topic: 1 plain topic"):
        drives.camera_info_topics_arg(None, ["/camera_front/camera_info"])
    assert drives.camera_info_topics_arg(["/a"], ["/a_info"]) == ["/a_info"]
