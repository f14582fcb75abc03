"""Known-answer tests of the shared pre/post-processing (drive_segment_ros.inference.preprocess)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from drive_segment_ros.inference.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Preprocessor,
    argmax_classes,
    normalize_image,
    postprocess,
)
from drive_segment_ros.types import DriveSegmentError


def test_normalization_known_values():
    # pixel == 255 * mean -> 0; 255 with mean 0, std 1 -> 1; 0 with mean .5, std .25 -> -2
    mean = (124 / 255, 116 / 255, 104 / 255)
    pre = Preprocessor((2, 3), mean, (0.5, 0.5, 0.5))
    img = np.empty((2, 3, 3), np.uint8)
    img[:] = (124, 116, 104)
    x = pre(img)
    assert x.shape == (1, 3, 2, 3) and x.dtype == np.float32 and x.flags.c_contiguous
    np.testing.assert_allclose(x, 0.0, atol=1e-6)

    pre2 = Preprocessor((1, 2), (0.0, 0.5, 0.5), (1.0, 0.25, 0.5))
    img2 = np.array([[[255, 0, 255], [0, 255, 0]]], np.uint8)  # (1, 2, 3)
    x2 = pre2(img2)[0]
    np.testing.assert_allclose(x2[0, 0], [1.0, 0.0], atol=1e-6)  # R: (v/255 - 0)/1
    np.testing.assert_allclose(x2[1, 0], [-2.0, 2.0], atol=1e-6)  # G: (v/255 - .5)/.25
    np.testing.assert_allclose(x2[2, 0], [1.0, -1.0], atol=1e-6)  # B: (v/255 - .5)/.5


def test_resize_is_inter_linear_half_pixel():
    # 1-D [0, 100] up-scaled to 4 px with half-pixel centres: src x = -.25, .25, .75, 1.25
    # -> clamp/interp = 0, 25, 75, 100
    img = np.zeros((1, 2, 3), np.uint8)
    img[0, 1] = 100
    pre = Preprocessor((1, 4), (0, 0, 0), (1, 1, 1))
    x = pre(img)[0] * 255.0
    np.testing.assert_allclose(x[0, 0], [0, 25, 75, 100], atol=1e-3)
    assert x.shape == (3, 1, 4)


def test_batch_and_denormalize_roundtrip():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    pre = Preprocessor((20, 30))
    batch = pre.batch([a, b])
    assert batch.shape == (2, 3, 20, 30) and batch.dtype == np.float32
    np.testing.assert_array_equal(pre.denormalize(batch)[1], b)  # same size: no resize, exact
    np.testing.assert_array_equal(pre.denormalize(batch)[0], cv2.resize(a, (30, 20), interpolation=cv2.INTER_LINEAR))


@pytest.mark.parametrize(
    "args",
    [((0, 10),), ((10,),), ((4, 4), (124, 116, 104), (58, 57, 57)), ((4, 4), (0.5, 0.5), (1, 1, 1)), ((4, 4), (0.5,) * 3, (0, 1, 1))],
)
def test_preprocessor_rejects_bad_config(args):
    with pytest.raises(DriveSegmentError):
        Preprocessor(*args)


def test_preprocessor_rejects_bad_images():
    pre = Preprocessor((4, 4))
    with pytest.raises(DriveSegmentError, match="uint8"):
        pre(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(DriveSegmentError, match="shape"):
        pre(np.zeros((4, 4), np.uint8))
    with pytest.raises(DriveSegmentError):
        pre.batch([])


def _logits_2x2():
    # argmax map [[2, 0], [1, 2]] over K=3 classes
    lg = np.zeros((3, 2, 2), np.float32)
    lg[2, 0, 0] = lg[0, 0, 1] = lg[1, 1, 0] = lg[2, 1, 1] = 5.0
    return lg


def test_postprocess_nearest_integer_scale_replicates_blocks():
    ids = postprocess(_logits_2x2()[None], (4, 4))
    expected = np.array([[2, 2, 0, 0], [2, 2, 0, 0], [1, 1, 2, 2], [1, 1, 2, 2]], np.uint8)
    assert ids.dtype == np.uint8
    np.testing.assert_array_equal(ids, expected)


def test_postprocess_nearest_fractional_scale_is_centre_aligned():
    # INTER_NEAREST_EXACT: src = floor((i + .5) * 2/3) -> 0, 1, 1
    ids = postprocess(_logits_2x2(), (3, 3))
    np.testing.assert_array_equal(ids, [[2, 0, 0], [1, 2, 2], [1, 2, 2]])


def test_postprocess_bilinear_differs_from_nearest_as_computed_by_hand():
    # class 0 ramps 0 -> 1 over 2 px, class 1 is 0.2; upsampled to 4 px, class 0 becomes
    # [0, .25, .75, 1]: bilinear argmax [1, 0, 0, 0]; nearest argmax [1, 0] -> [1, 1, 0, 0]
    lg = np.array([[[0.0, 1.0]], [[0.2, 0.2]]], np.float32)  # (K=2, H=1, W=2)
    np.testing.assert_array_equal(postprocess(lg, (1, 4), mode="bilinear"), [[1, 0, 0, 0]])
    np.testing.assert_array_equal(postprocess(lg, (1, 4), mode="nearest"), [[1, 1, 0, 0]])


def test_postprocess_torch_matches_numpy_and_ties_pick_lowest_id():
    rng = np.random.default_rng(1)
    lg = rng.standard_normal((1, 7, 9, 13)).astype(np.float32)
    lg[0, :, 0, 0] = 1.0  # a tie across all classes -> class 0
    for mode in ("nearest", "bilinear"):
        a = postprocess(lg, (20, 31), mode=mode)
        b = postprocess(torch.from_numpy(lg), (20, 31), mode=mode)
        np.testing.assert_array_equal(a, b)
    assert postprocess(lg, (9, 13))[0, 0] == 0
    np.testing.assert_array_equal(postprocess(lg, (9, 13)), lg[0].argmax(0))


def test_postprocess_errors():
    with pytest.raises(DriveSegmentError, match="batch"):
        postprocess(np.zeros((2, 3, 4, 4), np.float32), (4, 4))
    with pytest.raises(DriveSegmentError):
        postprocess(np.zeros((300, 4, 4), np.float32), (4, 4))
    with pytest.raises(DriveSegmentError):
        postprocess(np.zeros((4, 4), np.float32), (4, 4))
    with pytest.raises(DriveSegmentError, match="mode"):
        postprocess(np.zeros((3, 4, 4), np.float32), (4, 4), mode="cubic")
    with pytest.raises(DriveSegmentError):
        postprocess(np.zeros((3, 4, 4), np.float32), (0, 4))


def test_normalize_image_matches_preprocessor():
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    x = normalize_image(rgb).numpy()
    assert x.shape == (3, 5, 7) and x.dtype == np.float32
    ref = (rgb.astype(np.float32) / 255.0 - np.float32(IMAGENET_MEAN)) / np.float32(IMAGENET_STD)
    np.testing.assert_array_equal(x, ref.transpose(2, 0, 1))
    np.testing.assert_allclose(x[None], Preprocessor((5, 7))(rgb), atol=1e-5)
    with pytest.raises(DriveSegmentError):
        normalize_image(rgb.astype(np.float32))


def test_preprocess_real_kitti_image(kitti_dir):
    rgb = cv2.cvtColor(cv2.imread(str(kitti_dir / "000008.png")), cv2.COLOR_BGR2RGB)
    assert rgb.shape == (375, 1242, 3)
    pre = Preprocessor((192, 640))
    x = pre(rgb)
    assert x.shape == (1, 3, 192, 640) and np.isfinite(x).all()
    # normalized ImageNet-style statistics of a real street image are O(1)
    assert -2.2 < float(x.min()) < 0 < float(x.max()) < 2.7
    # the round trip recovers the resized image exactly (up to float rounding)
    back = pre.denormalize(x)[0].astype(int)
    ref = cv2.resize(rgb, (640, 192), interpolation=cv2.INTER_LINEAR).astype(int)
    assert np.abs(back - ref).max() <= 1
    # class ids at model resolution come back at the image size
    ids = postprocess(np.random.default_rng(0).standard_normal((1, 5, 192, 640)).astype(np.float32), rgb.shape[:2])
    assert ids.shape == (375, 1242) and ids.max() < 5


def test_argmax_classes_matches_numpy_with_ties():
    rng = np.random.default_rng(2)
    lg = rng.standard_normal((31, 17, 23)).astype(np.float32)
    lg[:, 3, 4] = 0.5  # all tied -> 0
    lg[[4, 9], 5, 6] = 9.0  # two-way tie -> 4
    ids = argmax_classes(lg)
    assert ids.dtype == np.uint8
    np.testing.assert_array_equal(ids, np.argmax(lg, axis=0))
    assert ids[3, 4] == 0 and ids[5, 6] == 4
