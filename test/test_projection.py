"""Tests of drive_segment_ros.projection: known-answer geometry, occlusion, sensor-adaptive densification
(synthetic sparse-ring LiDAR), real KITTI / nuScenes frames."""
from __future__ import annotations

import glob
import json

import cv2
import numpy as np
import pytest

from drive_segment_ros.densification import LidarSpacing, densify_kernel_px, estimate_lidar_spacing
from drive_segment_ros.projection import (
    ProjectionConfig,
    depth_buffer,
    labels_to_points,
    pixel_indices,
    project_points,
    splat_radius,
)
from drive_segment_ros.segment_map import segment_map
from drive_segment_ros.types import CameraModel, DriveSegmentError

K_SYN = np.array([[500.0, 0.0, 320.0], [0.0, 400.0, 240.0], [0.0, 0.0, 1.0]])
CAM = CameraModel(K_SYN, np.zeros(5), 640, 480)

# REP 103 LiDAR (x fwd, y left, z up) -> optical (x right, y down, z fwd)
R_OPT_LIDAR = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])


def _T(R=np.eye(3), t=(0.0, 0.0, 0.0)):
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = t
    return T


def _rot_z(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


# ------------------------------------------------------------------------------------ geometry
def test_known_pixel_identity_transform():
    pr = project_points(np.array([[1.0, -0.5, 4.0]]), CAM, np.eye(4))
    # u = 500 * 1/4 + 320 = 445 ; v = 400 * (-0.5/4) + 240 = 190
    np.testing.assert_allclose(pr.uv[0], [445.0, 190.0], atol=1e-4)
    assert pr.depth[0] == pytest.approx(4.0)
    assert pr.valid[0]
    assert pr.uv.dtype == np.float32 and pr.depth.dtype == np.float32 and pr.valid.dtype == bool


def test_known_pixel_nontrivial_transform():
    # LiDAR yawed by +90 deg relative to a base frame, then base -> optical, plus a lever arm
    R = R_OPT_LIDAR @ _rot_z(np.pi / 2)
    T = _T(R, (0.1, -0.2, 0.3))
    p_lidar = np.array([[-2.0, -10.0, 1.0]])  # yaw 90: base = (10, -2, 1)
    # optical before translation = (-y_b, -z_b, x_b) = (2, -1, 10); + t = (2.1, -1.2, 10.3)
    pr = project_points(p_lidar, CAM, T)
    u = 500 * 2.1 / 10.3 + 320
    v = 400 * -1.2 / 10.3 + 240
    np.testing.assert_allclose(pr.uv[0], [u, v], atol=1e-3)
    assert pr.depth[0] == pytest.approx(10.3, abs=1e-5)
    assert pr.valid[0]


def test_skew_is_used():
    K = K_SYN.copy()
    K[0, 1] = 10.0
    pr = project_points(np.array([[1.0, 2.0, 4.0]]), CameraModel(K, [], 640, 480), np.eye(4))
    np.testing.assert_allclose(pr.uv[0], [500 * 0.25 + 10 * 0.5 + 320, 400 * 0.5 + 240], atol=1e-4)


@pytest.mark.parametrize(
    "D",
    [
        [-0.3, 0.1, 0.001, -0.002, 0.02],
        [0.05, -0.01, -0.003, 0.002, 0.0],
        [0.2, -0.1, 0.001, 0.001, 0.01, 0.1, -0.05, 0.02],  # rational_polynomial
    ],
)
def test_distortion_matches_cv2_projectPoints(D):
    rng = np.random.default_rng(1)
    cam = CameraModel(K_SYN, D, 640, 480, distortion_model="rational_polynomial" if len(D) == 8 else "plumb_bob")
    R = R_OPT_LIDAR @ _rot_z(0.1)
    T = _T(R, (0.05, -0.1, 0.2))
    pts = np.stack([rng.uniform(2, 30, 2000), rng.uniform(-8, 8, 2000), rng.uniform(-2, 3, 2000)], 1)
    pr = project_points(pts, cam, T)
    rvec, _ = cv2.Rodrigues(T[:3, :3])
    ref, _ = cv2.projectPoints(pts.reshape(-1, 1, 3), rvec, T[:3, 3], cam.K, np.asarray(D, dtype=np.float64))
    ref = ref.reshape(-1, 2)
    assert pr.valid.sum() > 300
    np.testing.assert_allclose(pr.uv[pr.valid], ref[pr.valid], atol=2e-3)


def test_distortion_far_outside_fov_is_invalid():
    # strong barrel distortion folds far off-axis rays back into the image; they must be rejected
    cam = CameraModel(K_SYN, [-0.5, 0.2, 0, 0, 0], 640, 480)
    pts = np.array([[3.0, 0.0, 1.0], [0.1, 0.0, 1.0]])  # x/z = 3 (72 deg off-axis) and 0.1
    pr = project_points(pts, cam, np.eye(4))
    folded_u = 500 * 3 * (1 - 0.5 * 9 + 0.2 * 81) + 320  # what the raw polynomial gives
    assert folded_u > 0
    assert not pr.valid[0]
    assert pr.valid[1]


def test_points_behind_camera_never_land():
    # mirror images of in-view points (behind the camera) would project inside the image if z was not checked
    pts = np.array([[0.5, 0.2, -3.0], [0.0, 0.0, 0.0], [0.1, 0.1, 0.05], [0.5, 0.2, 3.0]])
    pr = project_points(pts, CAM, np.eye(4))
    assert pr.valid.tolist() == [False, False, False, True]
    assert np.isnan(pr.uv[:3]).all()
    smap = segment_map(pts[:3], np.array([1, 2, 3]), CAM, np.eye(4), ProjectionConfig(min_pixels=0))
    assert (smap == -1).all()
    assert labels_to_points(np.zeros((480, 640), int), pts, CAM, np.eye(4)).tolist() == [-1, -1, -1, 0]


def test_image_border_convention():
    # pixel centres at integers: valid u in [-0.5, W - 0.5)
    z = 10.0
    us = np.array([-0.49, -0.51, 639.49, 639.5])
    pts = np.stack([(us - 320) / 500 * z, np.zeros(4), np.full(4, z)], 1)
    pr = project_points(pts, CAM, np.eye(4))
    assert pr.valid.tolist() == [True, False, True, False]
    rows, cols = pixel_indices(pr.uv[pr.valid])
    assert cols.tolist() == [0, 639] and rows.tolist() == [240, 240]


def test_round_trip_depth_map():
    H, W = 60, 80
    cam = CameraModel([[90.0, 0, 39.5], [0, 95.0, 29.5], [0, 0, 1]], [], W, H)
    vv, uu = np.mgrid[0:H, 0:W].astype(np.float64)
    depth = 5.0 + 0.05 * uu + 3.0 * np.exp(-((uu - 40) ** 2 + (vv - 30) ** 2) / 50.0)
    rays = np.stack([uu.ravel(), vv.ravel(), np.ones(H * W)], 1) @ np.linalg.inv(cam.K).T
    p_cam = rays * depth.ravel()[:, None]
    T_cam_lidar = _T(R_OPT_LIDAR @ _rot_z(0.3), (0.2, -0.4, 1.1))
    T_lidar_cam = np.linalg.inv(T_cam_lidar)
    p_lidar = p_cam @ T_lidar_cam[:3, :3].T + T_lidar_cam[:3, 3]
    pr = project_points(p_lidar, cam, T_cam_lidar)
    assert pr.valid.all()
    np.testing.assert_allclose(pr.uv[:, 0], uu.ravel(), atol=2e-3)
    np.testing.assert_allclose(pr.uv[:, 1], vv.ravel(), atol=2e-3)
    np.testing.assert_allclose(pr.depth, depth.ravel(), rtol=1e-5)
    rows, cols = pr.pixels()
    buf = depth_buffer(rows, cols, pr.depth, (H, W))
    np.testing.assert_allclose(buf, depth, rtol=1e-5)


def test_bad_inputs_raise():
    with pytest.raises(DriveSegmentError):
        project_points(np.zeros((3, 2)), CAM, np.eye(4))
    with pytest.raises(DriveSegmentError):
        project_points(np.zeros((3, 3)), CAM, np.eye(3))
    with pytest.raises(DriveSegmentError):
        segment_map(np.zeros((3, 3)), np.zeros(4, int), CAM, np.eye(4))
    with pytest.raises(DriveSegmentError):
        labels_to_points(np.zeros((10, 10), int), np.zeros((3, 3)), CAM, np.eye(4))


# ------------------------------------------------------------------------------------ config
def test_config_dict_yaml_and_errors(tmp_path):
    cfg = ProjectionConfig.from_dict({"projection": {"max_depth": 40.0, "closing_px": [3, 9]}})
    assert cfg.max_depth == 40.0 and cfg.closing_px == (3, 9)
    assert ProjectionConfig.from_dict(cfg.to_dict()) == cfg
    p = tmp_path / "p.yaml"
    p.write_text("min_depth: 1.0\nhull: true\n")
    assert ProjectionConfig.from_yaml(p).hull is True
    with pytest.raises(DriveSegmentError, match="unknown key"):
        ProjectionConfig.from_dict({"max_dpth": 3})
    with pytest.raises(DriveSegmentError):
        ProjectionConfig(min_depth=5.0, max_depth=1.0)
    with pytest.raises(DriveSegmentError):
        ProjectionConfig(splat_min_px=4, splat_max_px=2)
    with pytest.raises(DriveSegmentError, match="not found"):
        ProjectionConfig.from_yaml(tmp_path / "missing.yaml")


def test_repository_config_loads():
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "config" / "projection.yaml"
    cfg = ProjectionConfig.from_yaml(path)
    assert cfg.min_depth > 0 and cfg.max_depth > cfg.min_depth


def test_splat_radius_depth_dependent():
    cfg = ProjectionConfig(splat_size_m=0.1, splat_min_px=1, splat_max_px=4)
    # f = (500 + 400) / 2 = 450: 0.1 * 450 / d
    r = splat_radius(np.array([5.0, 15.0, 30.0, 100.0]), CAM, cfg)
    assert r.tolist() == [4, 3, 2, 1]  # 9 -> 4 (clip), 3.0, 1.5 -> 2 (round half even), 0.45 -> 1 (clip)


# ------------------------------------------------------------------------------------ segment maps
def _plane_points(u0, u1, v0, v1, depth, step, cam=CAM):
    """Points at ``depth`` whose pixels form the grid u0:u1, v0:v1 with ``step`` (int or (su, sv))."""
    su, sv = (step, step) if np.isscalar(step) else step
    vv, uu = np.mgrid[v0:v1:sv, u0:u1:su].astype(np.float64)
    rays = np.stack([uu.ravel(), vv.ravel(), np.ones(uu.size)], 1) @ np.linalg.inv(cam.K).T
    return rays * depth


def test_occlusion_near_segment_wins_far_stays_visible():
    cfg = ProjectionConfig(splat_size_m=0.0, splat_min_px=2, splat_max_px=2, closing_px=(0, 0), min_pixels=0)
    far = _plane_points(100, 500, 100, 400, 20.0, 3)  # segment 2, behind
    near = _plane_points(200, 300, 150, 250, 5.0, 3)  # segment 1, in front
    pts = np.concatenate([far, near])
    ids = np.r_[np.full(len(far), 2), np.full(len(near), 1)]
    smap = segment_map(pts, ids, CAM, np.eye(4), cfg)
    assert smap.dtype == np.int32 and smap.shape == (480, 640)
    inner = smap[153:246, 203:296]
    assert (inner == 1).all(), "far points must not bleed through the near segment"
    assert (smap[110:390, 400:490] == 2).all()
    assert (smap[300:390, 110:490] == 2).all()
    assert (smap[:90] == -1).all() and (smap[:, 510:] == -1).all()
    # same scene, near points unlabelled (-1): they still occlude
    smap2 = segment_map(pts, np.r_[np.full(len(far), 2), np.full(len(near), -1)], CAM, np.eye(4), cfg)
    assert (smap2[153:246, 203:296] == -1).all()
    assert (smap2[300:390, 110:490] == 2).all()
    # order of the points does not matter
    perm = np.random.default_rng(0).permutation(len(pts))
    np.testing.assert_array_equal(segment_map(pts[perm], ids[perm], CAM, np.eye(4), cfg), smap)


def test_depth_dependent_splat_and_min_pixels():
    cfg = ProjectionConfig(splat_size_m=0.1, splat_min_px=0, splat_max_px=4, closing_px=(0, 0), min_pixels=10)
    # single points: near one splats a radius-4 octagon (0.1*450/5 = 9 -> 4), far one a 3x3 square (0.9 -> 1)
    pts = np.array([[0.0, 0.0, 5.0], [1.0, 0.0, 50.0]])
    smap = segment_map(pts, np.array([3, 4]), CAM, np.eye(4), cfg)
    dy, dx = np.abs(np.mgrid[-4:5, -4:5])
    octagon = (np.maximum(dx, dy) <= 4) & (dx + dy <= 6)  # 9x9 square minus 3 pixels per corner = 69 px
    np.testing.assert_array_equal(smap[236:245, 316:325] == 3, octagon)
    assert (smap == 3).sum() == 69
    assert (smap == 4).sum() == 0  # 9 pixels < min_pixels
    cfg0 = ProjectionConfig(splat_size_m=0.1, splat_min_px=0, splat_max_px=4, closing_px=(0, 0), min_pixels=0)
    smap0 = segment_map(pts, np.array([3, 4]), CAM, np.eye(4), cfg0)
    assert (smap0[239:242, 329:332] == 4).all()  # u = 500 * 1/50 + 320 = 330
    assert (smap0 == 4).sum() == 9


def test_closing_fills_gaps_but_not_over_nearer_surface():
    # scan rows of segment 5 every 8 px at 10 m (gaps of 5 px after radius-1 splats), 2 px apart along rows
    seg = _plane_points(200, 300, 200, 281, 10.0, (2, 8))
    occl = _plane_points(240, 260, 236, 237, 4.0, 1)  # a thin nearer unlabelled surface in one gap (v = 236)
    pts = np.concatenate([seg, occl])
    ids = np.r_[np.full(len(seg), 5), np.full(len(occl), -1)]
    base = dict(splat_size_m=0.0, splat_min_px=1, splat_max_px=1, min_pixels=0)
    open_map = segment_map(pts, ids, CAM, np.eye(4), ProjectionConfig(closing_px=(0, 0), **base))
    assert (open_map[203:206, 220] == -1).all()  # gap rows 202..206 between rows 200 and 208
    closed = segment_map(pts, ids, CAM, np.eye(4), ProjectionConfig(closing_px=(3, 9), **base))
    assert (closed[200:281, 210:290] == 5).sum() > 0.97 * 81 * 80
    assert (closed[203:206, 220] == 5).all()
    assert (closed[236, 242:258] == -1).all(), "closing must not cover a nearer surface"
    assert (closed[:195] == -1).all()


def test_hull_fills_sparse_segment_within_depth_limits():
    seg = np.array([[-0.8, -0.6, 10.0], [0.8, -0.6, 10.0], [0.8, 0.6, 10.0], [-0.8, 0.6, 10.0]])  # corners
    smap = segment_map(
        seg, np.full(4, 2), CAM, np.eye(4),
        ProjectionConfig(splat_size_m=0.0, splat_min_px=0, splat_max_px=0, closing_px=(0, 0), hull=True, min_pixels=0),
    )
    # corners at u = 320 -+ 40, v = 240 -+ 24
    assert (smap[216:265, 280:361] == 2).all()
    assert (smap == 2).sum() == 49 * 81


def test_labels_to_points_occlusion():
    label = np.zeros((480, 640), np.int64)
    label[:, 320:] = 7
    label[:, :320] = 3
    near = _plane_points(300, 340, 220, 260, 4.0, 2)
    hidden = np.array([[0.0, 0.0, 12.0], [0.05, 0.0, 12.0]])  # behind the near patch (u = 320, 322)
    free = np.array([[-2.0, 0.0, 10.0], [2.0, 0.0, 10.0]])  # u = 220 and 420, nothing in front
    behind = np.array([[0.0, 0.0, -5.0]])
    pts = np.concatenate([near, hidden, free, behind])
    out = labels_to_points(label, pts, CAM, np.eye(4), config=ProjectionConfig(splat_min_px=2))
    n = len(near)
    assert out.dtype == np.int32
    exp_near = np.where(np.floor(near[:, 0] / near[:, 2] * 500 + 320 + 0.5) >= 320, 7, 3)
    np.testing.assert_array_equal(out[:n], exp_near)
    assert out[n : n + 2].tolist() == [-1, -1]
    assert out[n + 2 : n + 4].tolist() == [3, 7]
    assert out[-1] == -1
    no_occ = labels_to_points(label, pts, CAM, np.eye(4), occlusion=False)
    assert no_occ[n : n + 2].tolist() == [7, 7]


# ------------------------------------------------------------------------------------ real data
def _kitti(kitti_dir):
    calib = json.loads((kitti_dir / "calib.json").read_text())
    P = np.array(calib["cameras"]["CAM2"]["cam2img"], dtype=np.float64)
    L = np.array(calib["cameras"]["CAM2"]["lidar2cam"], dtype=np.float64)
    K = P[:3, :3]
    T = _T(np.eye(3), np.linalg.solve(K, P[:3, 3])) @ L
    pts = np.fromfile(kitti_dir / "000008.bin", dtype=np.float32).reshape(-1, 4)
    img = cv2.imread(str(kitti_dir / "000008.png"))
    return pts, CameraModel(K, np.zeros(5), img.shape[1], img.shape[0], frame_id="CAM2"), T, calib, img


# road surface of KITTI 000008, drawn by hand on the image (pixel u, v)
KITTI_ROAD = np.array(
    [(385, 375), (390, 350), (530, 345), (610, 298), (700, 250), (745, 222), (800, 192),
     (845, 180), (870, 182), (885, 232), (950, 262), (960, 375)], dtype=np.float32,
)


def _inside(poly, uv):
    from matplotlib.path import Path as MplPath

    return MplPath(poly).contains_points(uv)


def test_kitti_projection_matches_lidar2img(kitti_dir):
    pts, cam, T, calib, _ = _kitti(kitti_dir)
    pr = project_points(pts, cam, T)
    li = np.array(calib["cameras"]["CAM2"]["lidar2img"])
    h = pts[:, :3].astype(np.float64) @ li[:3, :3].T + li[:3, 3]
    np.testing.assert_allclose(pr.uv[pr.valid], (h[:, :2] / h[:, 2:])[pr.valid], atol=1e-3)
    assert pr.valid.mean() > 0.99  # the scan is pre-cropped to the camera's field of view


def test_kitti_ground_on_road(kitti_dir):
    pts, cam, T, _, img = _kitti(kitti_dir)
    pr = project_points(pts, cam, T)
    visible = labels_to_points(np.zeros((cam.height, cam.width), int), pts, cam, T) >= 0
    v = pr.valid & visible
    ground = pts[:, 2] < -1.4  # Velodyne 1.73 m above the road
    inside = _inside(KITTI_ROAD, pr.uv)
    frac_ground_in = (inside & v & ground).sum() / (v & ground).sum()
    frac_other_in = (inside & v & ~ground).sum() / (v & ~ground).sum()
    # measured: 0.83 of visible ground points on the road polygon (rest: sidewalks), 0.009 of the others
    assert frac_ground_in > 0.75
    assert frac_other_in < 0.03
    assert 0.8 < visible.mean() < 0.97  # measured 0.88: parked cars hide ground / walls


def test_kitti_segment_map_real(kitti_dir):
    pts, cam, T, _, _ = _kitti(kitti_dir)
    ground = pts[:, 2] < -1.4
    # simple 3 m voxel columns as proposals, ground as id 0
    key = np.floor(pts[:, :2] / 3.0).astype(np.int64)
    _, ids = np.unique(key, axis=0, return_inverse=True)
    ids = np.where(ground, 0, ids.ravel() + 1)
    smap = segment_map(pts, ids, cam, T)
    assert smap.shape == (375, 1242) and smap.dtype == np.int32
    coverage = (smap >= 0).mean()
    assert 0.45 < coverage < 0.7  # measured 0.57: no LiDAR above ~4 m (sky, tree tops)
    road_px = _inside(KITTI_ROAD, np.stack(np.meshgrid(np.arange(1242), np.arange(375)), -1).reshape(-1, 2))
    road_ids = smap.ravel()[road_px]
    assert (road_ids == 0).mean() > 0.8
    assert (smap[:100] >= 0).mean() < 0.05  # top rows (sky, upper facades) stay unlabelled
    # back-projection is consistent: visible labelled points get their own id back
    back = labels_to_points(smap, pts, cam, T)
    got = back >= 0
    assert got.mean() > 0.8
    assert (back[got] == ids[got]).mean() > 0.9


def test_nuscenes_cam_front(nuscenes_dir):
    calib = json.loads((nuscenes_dir / "calib.json").read_text())
    cc = calib["cameras"]["CAM_FRONT"]
    pts = np.fromfile(glob.glob(str(nuscenes_dir / "*LIDAR_TOP*"))[0], dtype=np.float32).reshape(-1, 5)
    img = cv2.imread(str(nuscenes_dir / cc["image_file"]))
    cam = CameraModel(np.array(cc["cam2img"]), [], img.shape[1], img.shape[0], frame_id="CAM_FRONT")
    T = np.array(cc["lidar2cam"])
    pr = project_points(pts, cam, T)
    # LIDAR_TOP: x right, y forward -> front camera sees y > 0 points only
    assert 2000 < pr.valid.sum() < 5000  # measured 3060 of 34,688 (HDL-32, 70 deg FOV)
    assert (pts[pr.valid, 1] > 0).all()
    ground = pts[:, 2] < -1.5  # LIDAR_TOP 1.84 m above the road
    g = pr.valid & ground
    horizon = cam.K[1, 2]
    assert g.sum() > 300
    assert (pr.uv[g, 1] > horizon).mean() > 0.97  # the road lies below the horizon
    # nearest ground points land in the lower image part, far ones near the horizon
    d = pr.depth[g]
    assert np.median(pr.uv[g, 1][d < np.percentile(d, 20)]) > np.median(pr.uv[g, 1][d > np.percentile(d, 80)]) + 50
    ids = np.where(ground, 0, 1)
    # fixed KITTI-tuned kernel (adaptive off): the HDL-32 rings stay ~29 px apart
    sparse = segment_map(pts, ids, cam, T, ProjectionConfig(adaptive=False))
    smap = segment_map(pts, ids, cam, T, ProjectionConfig(closing_px=(9, 31), adaptive=False, gap_fill=False))  # tall closing
    # measured: coverage 0.17 -> 0.54; rows >= 550 ground 0.71; rows 300-550 objects 0.56; sky rows none
    assert 0.1 < (sparse >= 0).mean() < 0.25
    assert 0.45 < (smap >= 0).mean() < 0.65
    assert (smap[:150] == -1).all()
    assert (smap[550:] == 0).mean() > 0.6
    assert (smap[300:550] == 1).mean() > 0.45


@pytest.mark.parametrize("r,count", [(0, 1), (1, 9), (2, 21), (3, 45), (5, 109)])
def test_splat_footprint_sizes(r, count):
    # octagon {max(|dx|,|dy|) <= r, |dx|+|dy| <= r + ceil(r/2)}: hand counts 1, 9, 25-4, 49-4, 121-12
    cfg = ProjectionConfig(splat_size_m=0.0, splat_min_px=r, splat_max_px=r, closing_px=(0, 0), min_pixels=0)
    smap = segment_map(np.array([[0.0, 0.0, 10.0]]), np.array([0]), CAM, np.eye(4), cfg)
    assert (smap == 0).sum() == count
    rows, cols = np.nonzero(smap == 0)
    assert rows.min() == 240 - r and rows.max() == 240 + r and cols.min() == 320 - r and cols.max() == 320 + r


# ------------------------------------------------------------------------------------ sensor-adaptive densification
K_WALL = np.array([[700.0, 0.0, 400.0], [0.0, 700.0, 300.0], [0.0, 0.0, 1.0]])
CAM_WALL = CameraModel(K_WALL, np.zeros(5), 800, 600)
LIDAR_H = 1.8  # m above the ground


def _sparse_ring_scan(el_step_deg=2.0, az_step_deg=0.2):
    """Ray-cast a spinning LiDAR (rings every ``el_step_deg`` from -24 to +10 deg, azimuth every
    ``az_step_deg`` over +-45 deg) 1.8 m above a ground plane, facing a wall x = 10 m,
    |y| <= 2 m, z in [-1.8, 1.0] m (LiDAR frame, REP 103). Returns points, rings, ids
    (wall 1, ground 100 + 4 m range cell)."""
    el = np.radians(np.arange(-24.0, 10.0 + 1e-9, el_step_deg))
    az = np.radians(np.arange(-45.0, 45.0 + 1e-9, az_step_deg))
    E, A = np.meshgrid(el, az, indexing="ij")
    ring = np.broadcast_to(np.arange(el.size)[:, None], E.shape)
    d = np.stack([np.cos(E) * np.cos(A), np.cos(E) * np.sin(A), np.sin(E)], -1).reshape(-1, 3)
    ring = ring.ravel()
    with np.errstate(divide="ignore", invalid="ignore"):
        t_wall = np.where(d[:, 0] > 0, 10.0 / d[:, 0], np.inf)
        hit_w = t_wall[:, None] * d
        on_wall = (np.abs(hit_w[:, 1]) <= 2.0) & (hit_w[:, 2] >= -LIDAR_H) & (hit_w[:, 2] <= 1.0)
        t_wall = np.where(on_wall, t_wall, np.inf)
        t_gnd = np.where(d[:, 2] < 0, -LIDAR_H / d[:, 2], np.inf)
    t_gnd = np.where(t_gnd <= 60.0, t_gnd, np.inf)
    t = np.minimum(t_wall, t_gnd)
    hit = np.isfinite(t)
    pts = d[hit] * t[hit, None]
    wall = (t_wall <= t_gnd)[hit]
    rng = np.hypot(pts[:, 0], pts[:, 1])
    ids = np.where(wall, 1, 100 + np.floor(rng / 4.0).astype(np.int64))
    return pts, ring[hit], ids


def test_estimate_lidar_spacing_known_answer():
    pts, rings, _ = _sparse_ring_scan(2.0, 0.2)
    s = estimate_lidar_spacing(pts, rings)
    assert s.source == "rings"
    np.testing.assert_allclose(s.degrees(), (0.2, 2.0), rtol=1e-3)
    s2 = estimate_lidar_spacing(pts)  # no ring field: from the elevation / azimuth neighbourhoods
    assert s2.source == "points"
    np.testing.assert_allclose(s2.degrees(), (0.2, 2.0), rtol=0.02)
    # shuffled ring ids (Velodyne fires rings out of elevation order) and shuffled points
    perm = np.random.default_rng(0).permutation(len(pts))
    relabel = np.random.default_rng(1).permutation(rings.max() + 1)
    np.testing.assert_allclose(estimate_lidar_spacing(pts[perm], relabel[rings[perm]]).degrees(), (0.2, 2.0), rtol=1e-3)
    # dense scan (115k points > 60k): the ring-less estimate runs on azimuth windows
    dense, _, _ = _sparse_ring_scan(2.0, 0.01)
    np.testing.assert_allclose(estimate_lidar_spacing(dense).degrees(), (0.01, 2.0), rtol=0.02)
    # too few points: fallback
    fb = estimate_lidar_spacing(pts[:10], fallback_deg=(0.3, 0.7))
    assert fb.source == "fallback" and fb.degrees() == pytest.approx((0.3, 0.7))
    with pytest.raises(DriveSegmentError):
        estimate_lidar_spacing(pts, rings[:-1])


def test_densify_kernel_px_known_answer():
    cfg = ProjectionConfig()  # closing_px (5, 7) minimum, margin 1.5
    s = LidarSpacing(np.radians(0.2), np.radians(2.0), "rings")
    # 700 * 0.0349 * 1.5 = 36.65 -> 37 ; 700 * 0.00349 * 1.5 = 3.67 -> 3, below the minimum 5
    assert densify_kernel_px(s, CAM_WALL, cfg) == (5, 37)
    wide = LidarSpacing(np.radians(1.0), np.radians(5.0), "rings")
    assert densify_kernel_px(wide, CAM_WALL, cfg) == (19, 63)  # 18.3 -> 19 ; 91.6 clipped to 63
    assert densify_kernel_px(s, CAM_WALL, ProjectionConfig(adaptive=False)) == (5, 7)
    assert densify_kernel_px(None, CAM_WALL, cfg) == (5, 7)
    # KITTI HDL-64E (~0.37 deg at fy = 721 px): 6.98 -> 7 = the KITTI-tuned minimum, unchanged
    assert densify_kernel_px(LidarSpacing(np.radians(0.18), np.radians(0.37), "points"),
                             CameraModel(np.diag([721.5, 721.5, 1.0]), [], 1242, 375), cfg) == (5, 7)


def test_sparse_ring_wall_solid_without_bleeding():
    pts, rings, ids = _sparse_ring_scan(2.0, 0.2)
    T = _T(R_OPT_LIDAR)
    smap = segment_map(pts, ids, CAM_WALL, T, rings=rings)
    # true wall rectangle in the image: u = 400 -+ 700 * 2 / 10, v from 300 - 70 (top) to 300 + 126 (bottom)
    u0, u1, v_top, v_bot = 260, 540, 230, 426
    wall = smap == 1
    pr = project_points(pts[ids == 1], CAM_WALL, T)
    top_ring, bot_ring = int(np.ceil(pr.uv[:, 1].min())), int(pr.uv[:, 1].max())
    # solid: every row between the top and bottom wall rings fully covered inside the edges
    assert wall[top_ring:bot_ring + 1, u0 + 3:u1 - 2].all(), "horizontal gaps left in the wall"
    # no bleeding past the left / right edges by more than the 5 px splat
    rows, cols = np.nonzero(wall)
    assert cols.min() >= u0 - 6 and cols.max() <= u1 + 6
    # nothing above the top ring but the splat (sky above: the gap fill never grows outwards)
    assert rows.min() >= top_ring - 6 and rows.min() > v_top
    # bottom: the wall meets the ground between the wall's lowest ring (v 423) and the first ground
    # ring (v 449); the gap splits at the midpoint
    assert rows.max() <= v_bot + 12
    # ground: solid from below the wall to the image bottom, and beside the wall
    assert (smap[v_bot + 14:] >= 100).all()
    assert (smap[330:600, :u0 - 8] >= 100).all() and (smap[330:600, u1 + 8:] >= 100).all()
    assert (smap[:200] == -1).all()  # above the wall and above the horizon: no returns
    # the fixed KITTI-sized kernel leaves the 24 px ring gaps open
    fixed = segment_map(pts, ids, CAM_WALL, T, ProjectionConfig(adaptive=False, gap_fill=False), rings=rings)
    assert (fixed[top_ring:bot_ring + 1, 300] == 1).mean() < 0.6
    # without the ring field the estimate from the points gives the same mask
    np.testing.assert_array_equal(segment_map(pts, ids, CAM_WALL, T), smap)


def test_gap_fill_known_answer():
    # two scan lines (1 px, no splat) at rows 200 (id 1, 10 m) and 230 (id 2, 12 m), cols 100..299
    a = _plane_points(100, 300, 200, 201, 10.0, 1)
    b = _plane_points(100, 300, 230, 231, 12.0, 1)
    cfg = ProjectionConfig(splat_size_m=0.0, splat_min_px=0, splat_max_px=0, closing_px=(5, 41), adaptive=False, min_pixels=0)
    smap = segment_map(np.concatenate([a, b]), np.r_[np.ones(len(a)), np.full(len(b), 2)], CAM, np.eye(4), cfg)
    col = smap[:, 150]
    assert (col[200:216] == 1).all() and (col[216:231] == 2).all()  # 215: tie (15 vs 15) -> upper end
    assert (col[:200] == -1).all() and (col[231:] == -1).all()  # open runs longer than 41 px stay empty
    assert (smap[:, 300:] == -1).all() and (smap[:, :100] == -1).all()
    # an unlabelled nearer line at row 215 (5 m) ends both runs: its half of each run stays -1
    occ = _plane_points(100, 300, 215, 216, 5.0, 1)
    smap2 = segment_map(np.concatenate([a, b, occ]), np.r_[np.ones(len(a)), np.full(len(b), 2), np.full(len(occ), -1)],
                        CAM, np.eye(4), cfg)
    col = smap2[:, 150]
    assert (col[200:208] == 1).all() and (col[208:223] == -1).all() and (col[223:231] == 2).all()
    # a line 9 px above the image bottom: the open run to the border (9 < 41) is filled
    c = _plane_points(100, 300, 470, 471, 10.0, 1)
    smap3 = segment_map(c, np.full(len(c), 3), CAM, np.eye(4), cfg)
    assert (smap3[470:, 100:300] == 3).all() and (smap3[:470] == -1).all()
    # gap_fill off: only the lines
    smap4 = segment_map(np.concatenate([a, b]), np.r_[np.ones(len(a)), np.full(len(b), 2)], CAM, np.eye(4),
                        ProjectionConfig(**{**cfg.to_dict(), "gap_fill": False}))
    assert (smap4 >= 0).sum() == 400


def _nuscenes_front(nuscenes_dir):
    calib = json.loads((nuscenes_dir / "calib.json").read_text())
    cc = calib["cameras"]["CAM_FRONT"]
    pts = np.fromfile(glob.glob(str(nuscenes_dir / "*LIDAR_TOP*"))[0], dtype=np.float32).reshape(-1, 5)
    img = cv2.imread(str(nuscenes_dir / cc["image_file"]))
    cam = CameraModel(np.array(cc["cam2img"]), [], img.shape[1], img.shape[0], frame_id="CAM_FRONT")
    return pts, cam, np.array(cc["lidar2cam"])


def test_nuscenes_lidar_spacing(nuscenes_dir, kitti_dir):
    pts, cam, _ = _nuscenes_front(nuscenes_dir)
    s = estimate_lidar_spacing(pts, pts[:, 4].astype(np.int64))
    # HDL-32E datasheet: 32 rings over -30.67 .. +10.67 deg = 1.333 deg; 20 Hz: ~0.33 deg azimuth
    assert s.source == "rings" and s.degrees()[1] == pytest.approx(1.333, abs=0.01)
    assert s.degrees()[0] == pytest.approx(0.333, abs=0.01)
    s2 = estimate_lidar_spacing(pts)  # measured 0.332, 1.340 deg
    assert s2.degrees() == pytest.approx((0.333, 1.333), abs=0.02)
    assert densify_kernel_px(s, cam, ProjectionConfig()) == (11, 45)
    kp = np.fromfile(kitti_dir / "000008.bin", dtype=np.float32).reshape(-1, 4)
    sk = estimate_lidar_spacing(kp)  # HDL-64E: 1/3 deg (upper block) .. 1/2 deg (lower); measured 0.376, 0.182
    assert 0.3 < sk.degrees()[1] < 0.45 and 0.15 < sk.degrees()[0] < 0.22


def test_nuscenes_cam_front_dense_masks(nuscenes_dir):
    from drive_segment_ros.proposals.ground import ground_cell_ids

    pts, cam, T = _nuscenes_front(nuscenes_dir)
    rings = pts[:, 4].astype(np.int64)
    # fixed simple proposals: ground (z < -1.5 m, LiDAR 1.84 m up) in 4 m cells, objects as 3 m columns
    key = np.floor(pts[:, :2] / 3.0).astype(np.int64)
    _, obj = np.unique(key, axis=0, return_inverse=True)
    labels = np.where(pts[:, 2] < -1.5, -1, obj.ravel())
    _, labels[labels >= 0] = np.unique(labels[labels >= 0], return_inverse=True)
    n_obj = int(labels.max()) + 1
    ids = ground_cell_ids(pts, labels, 4.0).astype(np.int64)
    smap = segment_map(pts, ids, cam, T, rings=rings)
    thin = segment_map(pts, ids, cam, T, ProjectionConfig(adaptive=False, gap_fill=False), rings=rings)
    lower = smap[450:]
    # measured: lower-half coverage 0.316 (fixed 5x7 kernel: scan lines ~29 px apart) -> 0.911 (what
    # stays empty: the far background between the cars at the horizon); whole image 0.201 -> 0.584
    assert 0.25 < (thin[450:] >= 0).mean() < 0.4
    assert 0.85 < (lower >= 0).mean() < 0.98
    assert 0.5 < (smap >= 0).mean() < 0.75
    road = smap[650:, 200:1400]  # road in front of the car: ground cells, no scan-line gaps
    assert (road >= n_obj).mean() > 0.97
    assert ((smap[600:] >= 0).mean(axis=1) > 0.9).all(), "unlabelled rows left between the rings"
    assert (smap[:150] == -1).all()  # sky / facade above the top ring (+10.7 deg)
    # occlusion still honoured: labelled points map back to their own id
    back = labels_to_points(smap, pts, cam, T)
    got = back >= 0
    assert got.sum() > 2000 and (back[got] == ids[got]).mean() > 0.9


def test_point_rounding_onto_the_right_edge_in_float32_is_not_valid():
    """A float64 u just below W - 0.5 rounds to W - 0.5 in float32: it must not be valid (it would index column W)."""
    from drive_segment_ros.projection import pixel_indices, project_points
    from drive_segment_ros.types import CameraModel

    W, H = 1242, 375
    K = np.array([[700.0, 0, 600], [0, 700.0, 180], [0, 0, 1]])
    cam = CameraModel(K=K, D=np.zeros(5), width=W, height=H)
    u = np.nextafter(W - 0.5, 0)
    assert np.float32(u) == np.float32(W - 0.5)
    x = (u - 600) / 700 * 10
    proj = project_points(np.array([[x, 0.0, 10.0]]), cam, np.eye(4))
    rows, cols = pixel_indices(proj.uv)
    assert not proj.valid[0] or cols[0] < W
