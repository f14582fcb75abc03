"""Tests of drive_segment_ros.visualization with small hand-built arrays (exact pixel values)."""
from __future__ import annotations

import numpy as np
import pytest

from drive_segment_ros.types import DriveSegmentError
from drive_segment_training.figures import draw_proposals
from drive_segment_ros.visualization import (
    CITYSCAPES_CLASSES,
    cityscapes_palette,
    colorize,
    depth_colors,
    draw_points,
    overlay,
    palette,
)

PAL = np.array([[10, 20, 30], [200, 100, 0], [0, 0, 250]], dtype=np.uint8)


def test_palette_distinct_deterministic_prefix():
    p = palette(60, seed=3)
    assert p.shape == (60, 3) and p.dtype == np.uint8
    assert len({tuple(c) for c in p}) == 60
    np.testing.assert_array_equal(p, palette(60, seed=3))
    np.testing.assert_array_equal(palette(10, seed=3), p[:10])
    assert not np.array_equal(palette(10, seed=4), p[:10])
    # neighbouring ids are clearly different colours
    diffs = np.abs(p[1:].astype(int) - p[:-1].astype(int)).sum(1)
    assert diffs.min() > 60
    assert palette(0).shape == (0, 3)
    with pytest.raises(DriveSegmentError):
        palette(-1)


def test_cityscapes_palette():
    p = cityscapes_palette()
    assert p.shape == (19, 3) and len(CITYSCAPES_CLASSES) == 19
    assert p[0].tolist() == [128, 64, 128]  # road
    assert p[13].tolist() == [0, 0, 142]  # car
    assert p[10].tolist() == [70, 130, 180]  # sky


def test_colorize_exact():
    lab = np.array([[0, 1, -1], [2, 255, 7]])
    out = colorize(lab, PAL)
    assert out.dtype == np.uint8 and out.shape == (2, 3, 3)
    assert out[0, 0].tolist() == [10, 20, 30]
    assert out[0, 1].tolist() == [200, 100, 0]
    assert out[1, 0].tolist() == [0, 0, 250]
    assert out[0, 2].tolist() == [0, 0, 0]  # -1 ignored
    assert out[1, 1].tolist() == [0, 0, 0]  # 255 ignored
    assert out[1, 2].tolist() == [0, 0, 0]  # no colour for id 7
    out2 = colorize(lab, PAL, ignore_value=1)
    assert out2[0, 1].tolist() == [0, 0, 0]
    with pytest.raises(DriveSegmentError):
        colorize(np.zeros((2, 2), np.float32), PAL)


def test_overlay_exact_blend():
    rgb = np.full((2, 2, 3), 100, np.uint8)
    lab = np.array([[0, -1], [1, 2]])
    out = overlay(rgb, lab, PAL, alpha=0.25)
    # 0.75 * 100 + 0.25 * c
    assert out[0, 0].tolist() == [78, 80, 82]  # 75 + 2.5 -> 78 (round half even), 75 + 5, 75 + 7.5 -> 82
    assert out[0, 1].tolist() == [100, 100, 100]
    assert out[1, 0].tolist() == [125, 100, 75]
    assert out[1, 1].tolist() == [75, 75, 138]  # 75 + 62.5 -> 138 (round half even: 137.5 -> 138)
    assert rgb[0, 0].tolist() == [100, 100, 100]  # input untouched
    np.testing.assert_array_equal(overlay(rgb, lab, PAL, alpha=0.0), rgb)
    # ARCHITECTURE.md form overlay(rgb, label_map, alpha): default palette(max id + 1)
    auto = overlay(rgb, lab, 0.25)
    assert auto[1, 1].tolist() == np.rint(75 + 0.25 * palette(3)[2].astype(float)).astype(int).tolist()
    assert auto[0, 1].tolist() == [100, 100, 100]
    with pytest.raises(DriveSegmentError):
        overlay(rgb, lab, PAL, alpha=1.5)
    with pytest.raises(DriveSegmentError):
        overlay(rgb, np.zeros((3, 3), int), PAL)


def test_draw_proposals_ground_and_segments():
    rgb = np.full((4, 4, 3), 100, np.uint8)
    seg = np.array(
        [
            [-1, 0, 0, -1],
            [-1, 0, 0, -1],
            [2, 2, 1, 1],
            [2, 2, 1, 1],
        ]
    )
    is_ground = np.array([False, False, True])
    out = draw_proposals(rgb, seg, is_ground, alpha=0.5, ground_color=(200, 0, 0), ground_alpha=0.5, boundaries=False)
    pal = palette(3)
    assert out[0, 0].tolist() == [100, 100, 100]
    assert out[3, 0].tolist() == [150, 50, 50]  # ground: 0.5 * 100 + 0.5 * (200, 0, 0)
    exp0 = np.rint(0.5 * 100 + 0.5 * pal[0].astype(float)).astype(int).tolist()
    exp1 = np.rint(0.5 * 100 + 0.5 * pal[1].astype(float)).astype(int).tolist()
    assert out[0, 1].tolist() == exp0 and out[1, 2].tolist() == exp0
    assert out[3, 3].tolist() == exp1
    # ground given as a set of ids gives the same picture
    np.testing.assert_array_equal(
        draw_proposals(rgb, seg, {2}, alpha=0.5, ground_color=(200, 0, 0), ground_alpha=0.5, boundaries=False), out
    )
    # boundaries: object pixels next to another id (or unlabelled / ground) turn white, others keep colour
    ob = draw_proposals(rgb, seg, is_ground, alpha=0.5, ground_color=(200, 0, 0), ground_alpha=0.5, boundaries=True)
    assert ob[0, 1].tolist() == [255, 255, 255]  # next to -1
    assert ob[1, 2].tolist() == [255, 255, 255]  # above segment 1
    assert ob[3, 3].tolist() == exp1  # interior corner of segment 1 (neighbours 1, 1)
    assert ob[3, 0].tolist() == [150, 50, 50]  # ground is never outlined
    empty = draw_proposals(rgb, np.full((4, 4), -1), None)
    np.testing.assert_array_equal(empty, rgb)


def test_draw_points_exact():
    rgb = np.zeros((5, 6, 3), np.uint8)
    uv = np.array([[1.0, 2.0], [4.4, 0.6], [np.nan, 1.0], [10.0, 1.0], [-0.6, 0.0]])
    cols = np.array([[255, 0, 0], [0, 255, 0], [1, 1, 1], [2, 2, 2], [3, 3, 3]], np.uint8)
    out = draw_points(rgb, uv, cols)
    assert out[2, 1].tolist() == [255, 0, 0]
    assert out[1, 4].tolist() == [0, 255, 0]  # (u 4.4 -> col 4, v 0.6 -> row 1)
    assert (out.reshape(-1, 3).sum(1) > 0).sum() == 2  # NaN and outside points skipped
    big = draw_points(rgb, uv[:1], np.array([9, 8, 7], np.uint8), radius=1)
    assert (big[1:4, 0:3] == [9, 8, 7]).all() and big.sum() == 9 * (9 + 8 + 7)
    with pytest.raises(DriveSegmentError):
        draw_points(rgb, uv, cols[:2])


def test_depth_colors_near_red_far_blue():
    c = depth_colors(np.array([0.0, 60.0, 200.0]), max_depth=60.0)
    assert c.shape == (3, 3) and c.dtype == np.uint8
    assert c[0, 0] > c[0, 2]  # near: red dominates
    assert c[1, 2] > c[1, 0]  # far: blue dominates
    np.testing.assert_array_equal(c[1], c[2])  # clipped
