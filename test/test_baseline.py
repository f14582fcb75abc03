"""Pixel k-means baseline: synthetic colour images with a known answer, and one real image."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from drive_segment_ros.types import DriveSegmentError
from drive_segment_training.baseline import fit_pixel_kmeans, predict_pixel_kmeans, sample_pixel_features
from drive_segment_training.evaluation import evaluate_predictions


class ColourBackbone(nn.Module):
    """Trivial backbone: 4x4 average pooling of the RGB image (stride 4, 3 channels)."""

    name = "colour"
    stride = 4
    embed_dim = 3
    self_supervised = False
    description = "test colour pooling"
    mean = (0.0, 0.0, 0.0)
    std = (1.0, 1.0, 1.0)

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def output_size(self, H, W):
        return -(-H // 4), -(-W // 4)

    def forward(self, x):
        h, w = self.output_size(*x.shape[-2:])
        x = nn.functional.pad(x, (0, w * 4 - x.shape[-1], 0, h * 4 - x.shape[-2]))
        return nn.functional.avg_pool2d(x, 4)


COLOURS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], np.uint8)


def _scene(seed):
    """64x96 image of constant-colour stripes 16 px wide (aligned with the 4-px feature cells),
    vertical for even seeds, horizontal for odd ones, + its region id map. Stripes (no corners
    where three regions meet) keep the bilinear weight of a pixel's own colour >= 0.625."""
    rng = np.random.default_rng(seed)
    n = 6 if seed % 2 == 0 else 4
    stripes = rng.integers(0, 3, size=n)
    stripes[:3] = rng.permutation(3)  # every colour present
    if seed % 2 == 0:
        regions = np.repeat(np.repeat(stripes[None, :], 16, axis=1), 64, axis=0)
    else:
        regions = np.repeat(np.repeat(stripes[:, None], 16, axis=0), 96, axis=1)
    return COLOURS[regions], regions


def test_sample_pixel_features_matches_torch_upsampling():
    rng = np.random.default_rng(1)
    F = rng.normal(size=(5, 6, 7)).astype(np.float32)
    up = nn.functional.interpolate(torch.from_numpy(F)[None], size=(24, 28), mode="bilinear", align_corners=False)[0].numpy()
    ys, xs = rng.integers(0, 24, 50), rng.integers(0, 28, 50)
    np.testing.assert_allclose(sample_pixel_features(F, ys, xs, (4.0, 4.0)), up[:, ys, xs].T, atol=1e-5)


@pytest.mark.parametrize("normalize", [True, False])
def test_colour_scenes_recovered_exactly(normalize):
    bb = ColourBackbone()
    scenes = [_scene(s) for s in range(3)]
    cen = fit_pixel_kmeans(bb, [im for im, _ in scenes], k=3, max_pixels_per_image=2000, seed=0, normalize=normalize,
                           n_init=3)
    assert cen.shape == (3, 3) and cen.dtype == np.float32
    preds = [predict_pixel_kmeans(bb, cen, im, normalize=normalize, band_elements=3 * 96 * 10) for im, _ in scenes]
    assert preds[0].shape == (64, 96)
    res = evaluate_predictions(preds, [r for _, r in scenes], n_pred=3, n_gt=3)
    # every pixel (boundary pixels included: the bilinear blend weighs the own colour >= 0.625)
    # gets its region's cluster
    assert res["mIoU"] == 1.0 and res["pixel_accuracy"] == 1.0


def test_errors():
    bb = ColourBackbone()
    with pytest.raises(DriveSegmentError):
        fit_pixel_kmeans(bb, [], k=3)
    with pytest.raises(DriveSegmentError):
        predict_pixel_kmeans(bb, np.zeros((3, 5), np.float32), _scene(0)[0])
    with pytest.raises(DriveSegmentError):
        fit_pixel_kmeans(bb, [np.zeros((8, 8), np.uint8)], k=2)


def test_real_image_smoke(kitti_dir):
    import cv2

    from drive_segment_ros.models.backbones import build_backbone

    rgb = cv2.imread(str(kitti_dir / "000008.png"))[..., ::-1].copy()
    bb = build_backbone("mobilenetv2_deepsort")
    cen = fit_pixel_kmeans(bb, [rgb], k=6, max_pixels_per_image=3000, seed=0, n_init=1, max_side=640)
    assert cen.shape == (6, bb.embed_dim)
    pred = predict_pixel_kmeans(bb, cen, rgb, max_side=640)
    assert pred.shape == rgb.shape[:2]
    counts = np.bincount(pred.ravel(), minlength=6)
    assert (counts > 0).sum() >= 4  # real image splits into several clusters
    # the sky-free top rows and the road bottom rows of KITTI 000008 mostly differ in cluster
    assert np.bincount(pred[-40:].ravel()).argmax() != np.bincount(pred[:40].ravel()).argmax()


@pytest.mark.parametrize("normalize", [True, False])
def test_predict_equals_full_upsampling_reference(normalize, monkeypatch):
    """Banded grid_sample prediction == upsample the whole (C,H,W) map with torch, then nearest centroid."""
    import drive_segment_training.baseline as B

    rng = np.random.default_rng(4)
    F = torch.from_numpy(rng.normal(size=(16, 7, 9)).astype(np.float32))
    cell = (50 / 7 * 0.9, 70 / 9 * 0.95)  # padded grid: cells slightly smaller than H/h
    monkeypatch.setattr(B, "image_features", lambda bb, rgb, ms, win: (F, cell))
    cen = rng.normal(size=(5, 16)).astype(np.float32)
    pred = B.predict_pixel_kmeans(None, cen, np.zeros((50, 70, 3), np.uint8), normalize=normalize, band_elements=16 * 16 * 70)
    ys, xs = np.mgrid[0:50, 0:70]
    X = sample_pixel_features(F, ys.ravel(), xs.ravel(), cell)  # checked against torch above
    if normalize:
        X = X / np.linalg.norm(X, axis=1, keepdims=True)
    ref = ((X[:, None, :] - cen[None]) ** 2).sum(-1).argmin(1).reshape(50, 70)
    np.testing.assert_array_equal(pred, ref)
