"""Known-answer tests of the training augmentations (training/augment.py)."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from drive_segment_ros.types import DriveSegmentError
from drive_segment_training.augment import (
    AugmentConfig,
    copy_paste_segments,
    hflip,
    photometric_jitter,
    random_crop,
    random_scale,
    resize_sample,
)


def _scene(h=20, w=30):
    """Destination and source triplets with hand-placed segments."""
    dst_img = np.zeros((h, w, 3), np.uint8)
    dst_img[..., 0] = 10
    dst_lab = np.full((h, w), 255, np.uint8)
    dst_seg = np.full((h, w), -1, np.int32)
    dst_lab[2:5, 2:6] = 4
    dst_seg[2:5, 2:6] = 7  # an existing destination segment, id 7

    src_img = np.zeros((h, w, 3), np.uint8)
    src_lab = np.full((h, w), 255, np.uint8)
    src_seg = np.full((h, w), -1, np.int32)
    # Segment 3: an L-shape (not a box) in rows 10..14, cols 5..8, class 2, one ignore pixel.
    src_seg[10:15, 5:7] = 3
    src_seg[13:15, 7:9] = 3
    src_lab[src_seg == 3] = 2
    src_lab[10, 5] = 255
    src_img[src_seg == 3] = (200, 100, 50)
    src_img[12, 6] = (1, 2, 3)  # a distinctive pixel to follow
    # Segment 5: small box, class 1.
    src_seg[1:3, 20:23] = 5
    src_lab[1:3, 20:23] = 1
    src_img[1:3, 20:23] = (0, 255, 0)
    return dst_img, dst_lab, dst_seg, src_img, src_lab, src_seg


def test_copy_paste_exact_pixels_labels_and_ids():
    dst_img, dst_lab, dst_seg, src_img, src_lab, src_seg = _scene()
    rng = np.random.default_rng(0)
    img, lab, seg, info = copy_paste_segments(
        dst_img, dst_lab, dst_seg, src_img, src_lab, src_seg, rng,
        segment_ids=[3], shifts=[10], return_info=True,
    )
    src_mask = src_seg == 3
    expect = np.zeros_like(src_mask)
    expect[:, 10:] = src_mask[:, :-10]  # same rows, shifted right by 10 columns
    assert info == [{"src_id": 3, "dst_id": 8, "dx": 10, "scale": 1.0, "n_pixels": int(src_mask.sum())}]
    # Segment map: new id 8 = max(dst)+1 exactly at the shifted pixels; old segment untouched.
    np.testing.assert_array_equal(seg == 8, expect)
    np.testing.assert_array_equal(seg[~expect], dst_seg[~expect])
    # Labels follow the pixels (including the ignore pixel inside the segment).
    np.testing.assert_array_equal(lab[expect], src_lab[src_mask])
    assert lab[10, 15] == 255 and lab[12, 16] == 2
    np.testing.assert_array_equal(lab[~expect], dst_lab[~expect])
    # RGB follows the pixels; the distinctive pixel moved from (12, 6) to (12, 16).
    np.testing.assert_array_equal(img[expect], src_img[src_mask])
    assert tuple(img[12, 16]) == (1, 2, 3)
    np.testing.assert_array_equal(img[~expect], dst_img[~expect])
    # Inputs untouched.
    assert (dst_seg == 8).sum() == 0 and dst_img[12, 16, 0] == 10


def test_copy_paste_clips_at_border_and_keeps_rows():
    dst_img, dst_lab, dst_seg, src_img, src_lab, src_seg = _scene()
    img, lab, seg, info = copy_paste_segments(
        dst_img, dst_lab, dst_seg, src_img, src_lab, src_seg, np.random.default_rng(0),
        segment_ids=[5], shifts=[8], return_info=True,
    )
    # Box cols 20..22 shifted by 8 -> 28..30; column 30 falls outside a 30-wide image.
    ys, xs = np.nonzero(seg == 8)
    assert set(xs.tolist()) == {28, 29} and set(ys.tolist()) == {1, 2}
    assert info[0]["n_pixels"] == 4
    assert np.all(lab[seg == 8] == 1)


def test_copy_paste_random_keeps_ground_contact_and_box_inside():
    dst_img, dst_lab, dst_seg, src_img, src_lab, src_seg = _scene()
    for s in range(20):
        rng = np.random.default_rng(s)
        img, lab, seg, info = copy_paste_segments(
            dst_img, dst_lab, dst_seg, src_img, src_lab, src_seg, rng,
            max_segments=1, min_pixels=10, scale_range=(0.8, 1.25), return_info=True,
        )
        # Only segment 3 has >= 10 labelled pixels.
        assert len(info) == 1 and info[0]["src_id"] == 3
        ys, xs = np.nonzero(seg == 8)
        assert ys.max() == 14  # ground-contact row of the source segment kept
        assert info[0]["n_pixels"] == ys.size > 0
        # Labels of the pasted pixels come from the source segment's classes only.
        assert set(np.unique(lab[seg == 8]).tolist()) <= {2, 255}


def test_copy_paste_resizes_source_and_validates():
    dst_img, dst_lab, dst_seg, src_img, src_lab, src_seg = _scene()
    big = resize_sample(src_img, src_lab, src_seg, (40, 60))
    img, lab, seg = copy_paste_segments(dst_img, dst_lab, dst_seg, *big, np.random.default_rng(0),
                                        segment_ids=[3], shifts=[0])
    np.testing.assert_array_equal(seg == 8, src_seg == 3)  # x2 up then back down = original mask
    with pytest.raises(DriveSegmentError, match="not in the source"):
        copy_paste_segments(dst_img, dst_lab, dst_seg, src_img, src_lab, src_seg, np.random.default_rng(0),
                            segment_ids=[42])
    with pytest.raises(DriveSegmentError, match="same H, W"):
        copy_paste_segments(dst_img, dst_lab[:5], dst_seg, src_img, src_lab, src_seg, np.random.default_rng(0))
    # No eligible segment: output equals input.
    out = copy_paste_segments(dst_img, dst_lab, dst_seg, src_img, src_lab, src_seg, np.random.default_rng(0),
                              min_pixels=10_000)
    for a, b in zip(out, (dst_img, dst_lab, dst_seg)):
        np.testing.assert_array_equal(a, b)


def test_crop_pad_flip_scale_keep_alignment():
    rng = np.random.default_rng(1)
    h, w = 24, 40
    yy, xx = np.mgrid[0:h, 0:w]
    code = (yy * w + xx).astype(np.int32)  # unique per pixel
    img = np.stack([yy * 10 % 256, xx * 6 % 256, np.zeros_like(xx)], -1).astype(np.uint8)
    lab = (code % 200).astype(np.uint8)
    c_img, c_lab, c_seg, valid = random_crop(img, lab, code, (10, 12), rng)
    y0, x0 = divmod(int(c_seg[0, 0]), w)
    np.testing.assert_array_equal(c_seg, code[y0 : y0 + 10, x0 : x0 + 12])
    np.testing.assert_array_equal(c_lab, lab[y0 : y0 + 10, x0 : x0 + 12])
    np.testing.assert_array_equal(c_img, img[y0 : y0 + 10, x0 : x0 + 12])
    assert valid.all()
    # Crop larger than the image: padding is ignore / -1 / invalid.
    p_img, p_lab, p_seg, p_valid = random_crop(img, lab, code, (30, 50), rng)
    assert p_valid.sum() == h * w and (p_lab[~p_valid] == 255).all() and (p_seg[~p_valid] == -1).all()
    f_img, f_lab, f_seg = hflip(img, lab, code)
    np.testing.assert_array_equal(f_seg[:, 0], code[:, w - 1])
    np.testing.assert_array_equal(f_img[:, 3], img[:, w - 4])
    # Scaling: nearest for labels / segments (no new values), relative to base size.
    s_img, s_lab, s_seg, f = random_scale(img, lab, code, rng, (0.5, 2.0), base_hw=(48, 80))
    assert 1.0 <= f <= 4.0 and s_seg.shape == (round(h * f), round(w * f)) == s_img.shape[:2]
    assert set(np.unique(s_seg).tolist()) <= set(code.ravel().tolist())
    assert set(np.unique(s_lab).tolist()) <= set(lab.ravel().tolist())
    assert s_seg.dtype == np.int32


def test_photometric_jitter_and_config_validation():
    img = np.full((8, 8, 3), 100, np.uint8)
    img[:4] = 200
    out = photometric_jitter(img, np.random.default_rng(0), brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0)
    np.testing.assert_array_equal(out, img)
    out = photometric_jitter(img, np.random.default_rng(0))
    assert out.shape == img.shape and out.dtype == np.uint8 and not np.array_equal(out, img)
    # Deterministic with the seed.
    np.testing.assert_array_equal(out, photometric_jitter(img, np.random.default_rng(0)))
    with pytest.raises(DriveSegmentError):
        photometric_jitter(img.astype(np.float32), np.random.default_rng(0))
    with pytest.raises(DriveSegmentError):
        AugmentConfig(scale_range=(2.0, 1.0))
    with pytest.raises(DriveSegmentError):
        AugmentConfig(copy_paste_prob=1.5)


def test_copy_paste_on_real_kitti_frame(kitti_dir):
    """LiDAR segments of the real KITTI frame (projected Velodyne points, coarse 3-D grid
    clusters) pasted from the image into its mirror: every pasted pixel carries its label."""
    from scipy import ndimage

    calib = json.loads((kitti_dir / "calib.json").read_text())
    rgb = cv2.cvtColor(cv2.imread(str(kitti_dir / "000008.png")), cv2.COLOR_BGR2RGB)
    pts = np.fromfile(kitti_dir / "000008.bin", dtype=np.float32).reshape(-1, 4)
    lidar2img = np.asarray(calib["cameras"]["CAM2"]["lidar2img"], dtype=np.float64)
    hom = np.c_[pts[:, :3], np.ones(len(pts))] @ lidar2img.T
    front = hom[:, 2] > 1.0
    uv = (hom[front, :2] / hom[front, 2:3]).round().astype(int)
    H, W = rgb.shape[:2]
    inside = (uv[:, 0] >= 0) & (uv[:, 0] < W) & (uv[:, 1] >= 0) & (uv[:, 1] < H)
    xyz = pts[front][inside, :3]
    uv = uv[inside]
    above = xyz[:, 2] > -1.4  # drop the road (sensor ~1.73 m above ground)
    # Segments: connected cells of a 0.5 m occupancy grid (a coarse stand-in for proposals).
    cells = np.floor(xyz[above, :2] / 0.5).astype(int)
    cells -= cells.min(0)
    occ = np.zeros(cells.max(0) + 1, bool)
    occ[cells[:, 0], cells[:, 1]] = True
    comp, n = ndimage.label(occ)
    seg = np.full((H, W), -1, np.int32)
    ids = comp[cells[:, 0], cells[:, 1]] - 1
    seg[uv[above, 1], uv[above, 0]] = ids
    seg = ndimage.grey_dilation(seg, size=(5, 5))  # densify sparse points
    seg[seg < 0] = -1
    label = np.where(seg >= 0, seg % 20, 255).astype(np.uint8)
    assert n > 5 and (seg >= 0).sum() > 5000
    dst = hflip(rgb, label, seg)
    img, lab, out_seg, info = copy_paste_segments(*dst, rgb, label, seg, np.random.default_rng(0),
                                                  max_segments=3, min_pixels=200, return_info=True)
    assert len(info) == 3
    for item in info:
        pasted = out_seg == item["dst_id"]
        assert pasted.sum() == item["n_pixels"] > 0
        assert np.all(lab[pasted] == item["src_id"] % 20)
        ys = np.nonzero(pasted)[0]
        assert ys.max() == np.nonzero(seg == item["src_id"])[0].max()  # ground contact row kept
    untouched = out_seg < int(dst[2].max()) + 1
    np.testing.assert_array_equal(img[untouched], dst[0][untouched])


def test_random_scale_cover_fit_known_sizes():
    rng = np.random.default_rng(0)
    for (h, w), base, expect in [((24, 40), (48, 80), (48, 80)), ((90, 160), (32, 64), (36, 64)),
                                 ((375, 1242), (256, 512), (256, 848))]:
        img = np.zeros((h, w, 3), np.uint8)
        lab = np.zeros((h, w), np.uint8)
        seg = np.zeros((h, w), np.int32)
        out = random_scale(img, lab, seg, rng, (1.0, 1.0), base_hw=base)
        assert out[0].shape[:2] == out[1].shape == out[2].shape == expect
