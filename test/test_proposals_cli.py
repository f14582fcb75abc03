"""Tests of ``drive-segment proposals`` (drive_segment_training.proposals_stage) and compute_segment_map."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from drive_segment_ros.types import CameraModel, DriveFrame, DriveSegmentError


def _run_cli(argv):
    """Parse ``argv`` with only this module's subcommand registered (as drive_segment_training.cli does) and run it."""
    import argparse

    from drive_segment_training.proposals_stage import add_cli

    parser = argparse.ArgumentParser(prog="drive-segment")
    add_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def _kitti_frame(kitti_dir):
    calib = json.loads((kitti_dir / "calib.json").read_text())
    P = np.array(calib["cameras"]["CAM2"]["cam2img"], dtype=np.float64)
    L = np.array(calib["cameras"]["CAM2"]["lidar2cam"], dtype=np.float64)
    K = P[:3, :3]
    T = np.eye(4)
    T[:3, 3] = np.linalg.solve(K, P[:3, 3])
    pts = np.fromfile(kitti_dir / "000008.bin", dtype=np.float32).reshape(-1, 4)
    rgb = cv2.cvtColor(cv2.imread(str(kitti_dir / "000008.png")), cv2.COLOR_BGR2RGB)
    cam = CameraModel(K, np.zeros(5), rgb.shape[1], rgb.shape[0], frame_id="CAM2")
    return DriveFrame(rgb, pts, cam, T @ L, 0, 0, image_topic="/kitti/camera/image_raw")


def test_compute_segment_map_kitti(kitti_dir):
    from drive_segment_ros.segment_map import compute_segment_map

    frame = _kitti_frame(kitti_dir)
    smap, is_ground, proposals = compute_segment_map(frame)
    assert smap.shape == (375, 1242) and smap.dtype == np.int32
    n_seg = proposals.n_segments
    assert is_ground.dtype == bool and not is_ground[:n_seg].any() and is_ground[n_seg:].all()
    assert smap.max() < is_ground.size
    lab = smap >= 0
    coverage = lab.mean()
    assert 0.4 < coverage < 0.7  # measured 0.53 (nothing above the LiDAR's top beam)
    # the road in front of the car (rows 300-375, cols 620-900) is ground-cell pixels
    road = smap[300:, 620:900]
    assert (road >= 0).mean() > 0.9
    assert is_ground[road[road >= 0]].mean() > 0.95
    # the silver car (cols 380-590, rows 200-320) is mostly one object segment
    car = smap[200:320, 380:590]
    car_ids = car[(car >= 0)]
    car_ids = car_ids[~is_ground[car_ids]]
    top = np.bincount(car_ids).argmax()
    assert top < n_seg and (car_ids == top).mean() > 0.7


def test_cli_on_kitti_bag(kitti_bag, tmp_path):
    out = tmp_path / "props"
    rc = _run_cli(["proposals", str(kitti_bag), "--out", str(out), "--max-frames", "3"])
    assert rc == 0
    index = json.loads((out / "index.json").read_text())
    assert index["frames"], "the KITTI bag has one paired image"
    f = index["frames"][0]
    assert f["bag"] == str(kitti_bag)
    assert abs(f["dt_ms"]) <= 50.0
    seg = np.load(out / f["segments"])
    assert seg.dtype == np.int32 and seg.shape == (f["height"], f["width"]) == (375, 1242)
    png = cv2.imread(str(out / f["overlay"]))
    assert png.shape == (375, 1242, 3)
    assert 0.4 < f["coverage"] < 0.7  # measured 0.53
    assert f["coverage"] == pytest.approx((seg >= 0).mean())
    assert f["n_segments"] >= 10 and f["n_ground_cells"] >= 5
    assert 0.2 < f["ground_fraction"] < 0.7
    assert 0.1 < f["ground_pixel_fraction"] < 0.6
    assert seg.max() < f["n_segments"] + f["n_ground_cells"]
    assert index["projection_config"]["closing_px"] and index["proposal_config"]["backend"] == "range_image"
    # unlabelled pixels keep the image exactly; labelled ones are changed
    from drive_segment_training.drives import DriveReader

    frame = next(iter(DriveReader(kitti_bag, progress=False)))
    bgr = cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR)
    np.testing.assert_array_equal(png[seg < 0], bgr[seg < 0])
    assert (np.abs(png[seg >= 0].astype(int) - bgr[seg >= 0]).sum(1) > 0).mean() > 0.9


def test_cli_errors(tmp_path, kitti_bag):
    from drive_segment_training.proposals_stage import run_proposals

    with pytest.raises(DriveSegmentError, match="not found"):
        _run_cli(["proposals", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    with pytest.raises(SystemExit):
        _run_cli(["proposals", str(kitti_bag), "--out", str(tmp_path / "o"), "--backend", "magic"])
    with pytest.raises(DriveSegmentError):
        run_proposals([kitti_bag], tmp_path / "o", max_frames=0)
    with pytest.raises(DriveSegmentError):
        run_proposals([kitti_bag], tmp_path / "o", projection_config={"bogus": 1})
    with pytest.raises(DriveSegmentError):
        run_proposals([], tmp_path / "o")


def test_run_proposals_nuscenes_bag(nuscenes_bag, tmp_path):
    """Compressed images + ring field; one scan shared by the cameras (segment_scan runs once)."""
    from drive_segment_training.proposals_stage import run_proposals

    sparse = {"splat_size_m": 0.3, "splat_max_px": 8, "closing_px": [9, 31]}  # HDL-32: rings ~29 px apart
    index = run_proposals([nuscenes_bag], tmp_path / "n", projection_config=sparse, max_frames=2, overlays=False)
    frames = index["frames"]
    assert len(frames) == 2
    assert frames[0]["n_segments"] == frames[1]["n_segments"] >= 20  # same scan, same proposals
    for f in frames:
        assert abs(f["dt_ms"]) <= 50.0  # measured 43 and 35 ms (nuScenes cameras fire in sequence)
        assert f["overlay"] is None and not list((tmp_path / "n").glob("*.png"))
        seg = np.load(tmp_path / "n" / f["segments"])
        assert seg.shape == (900, 1600)
        assert 0.35 < f["coverage"] < 0.8  # measured 0.62 (CAM_FRONT_LEFT), 0.53 (CAM_FRONT)
        assert (seg[:100] == -1).mean() > 0.95  # sky / tall facades above the top ring
    assert index["projection_config"]["closing_px"] == [9, 31]
