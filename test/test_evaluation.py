"""Known-answer tests of the unsupervised evaluation (confusion, Hungarian / majority matching, mIoU)."""
from __future__ import annotations

import numpy as np
import pytest

from drive_segment_ros.types import DriveSegmentError
from drive_segment_training.evaluation import (
    confusion_matrix,
    evaluate_predictions,
    hungarian_match,
    majority_match,
    mapped_confusion,
    metrics_to_json,
    plot_confusion,
    segmentation_metrics,
)

# 4 clusters x 3 classes, built by hand.
CONF = np.array(
    [
        [50, 10, 0],
        [5, 30, 5],
        [0, 0, 20],
        [10, 0, 0],
    ],
    dtype=np.int64,
)


def test_confusion_matrix_counts_and_ignore():
    pred = np.array([[0, 0, 1], [1, 2, 2]])
    gt = np.array([[0, 255, 1], [0, 2, 255]])
    conf = confusion_matrix(pred, gt, n_pred=3, n_gt=3)
    expected = np.zeros((3, 3), np.int64)
    expected[0, 0] = 1  # (0,0)
    expected[1, 1] = 1  # (0,2)
    expected[1, 0] = 1  # (1,0)
    expected[2, 2] = 1  # (1,1); (0,1) and (1,2) are ignored in gt
    np.testing.assert_array_equal(conf, expected)
    assert conf.dtype == np.int64
    # accumulable over images
    np.testing.assert_array_equal(confusion_matrix(pred, gt, 3, 3) + conf, 2 * expected)


def test_confusion_matrix_pred_ignore_and_errors():
    pred = np.array([0, 255, 1])
    gt = np.array([0, 1, 1])
    conf = confusion_matrix(pred, gt, 2, 2, pred_ignore_index=255)
    np.testing.assert_array_equal(conf, [[1, 0], [0, 1]])
    with pytest.raises(DriveSegmentError, match="predicted ids"):
        confusion_matrix(pred, gt, 2, 2)
    with pytest.raises(DriveSegmentError, match="ground-truth ids"):
        confusion_matrix(np.array([0]), np.array([5]), 2, 2)
    with pytest.raises(DriveSegmentError, match="shape"):
        confusion_matrix(np.zeros((2, 2)), np.zeros((2, 3)), 2, 2)


def test_hungarian_on_hand_built_matrix():
    mapping = hungarian_match(CONF)
    # best one-to-one: 0->0 (50) + 1->1 (30) + 2->2 (20) = 100; cluster 3 unmatched.
    np.testing.assert_array_equal(mapping, [0, 1, 2, -1])
    m = segmentation_metrics(CONF, mapping)
    # gt totals: c0 = 50+5+0+10 = 65, c1 = 10+30+0+0 = 40, c2 = 0+5+20+0 = 25 (130 pixels)
    # IoU0 = 50 / (60 + 65 - 50) = 50/75 ; IoU1 = 30 / (40 + 40 - 30) = 30/50 ; IoU2 = 20 / (20 + 25 - 20) = 20/25
    np.testing.assert_allclose(m["per_class_iou"], [50 / 75, 30 / 50, 20 / 25])
    assert m["mIoU"] == pytest.approx((50 / 75 + 0.6 + 0.8) / 3)
    assert m["pixel_accuracy"] == pytest.approx(100 / 130)  # unmatched cluster 3 counts as wrong
    assert m["n_classes_present"] == 3 and m["n_pixels"] == 130


def test_majority_many_to_one():
    mapping = majority_match(CONF)
    np.testing.assert_array_equal(mapping, [0, 1, 2, 0])
    m = segmentation_metrics(CONF, mapping)
    # class 0 now predicted by clusters 0 and 3: TP = 60, predicted = 70 -> IoU0 = 60 / (70 + 65 - 60) = 0.8
    np.testing.assert_allclose(m["per_class_iou"], [0.8, 0.6, 0.8])
    assert m["mIoU"] == pytest.approx(2.2 / 3)
    assert m["pixel_accuracy"] == pytest.approx(110 / 130)
    # an empty cluster row is unmatched in majority matching
    np.testing.assert_array_equal(majority_match(np.array([[0, 0], [1, 3]])), [-1, 1])


def test_permuted_perfect_prediction_gives_miou_one():
    rng = np.random.default_rng(0)
    gts = [rng.integers(0, 5, size=(20, 30)) for _ in range(3)]
    gts[0][:2] = 255
    perm = np.array([3, 0, 4, 1, 2])
    preds = [np.where(g == 255, 0, perm[np.minimum(g, 4)]) for g in gts]
    res = evaluate_predictions(preds, gts, n_pred=5, n_gt=5)
    assert res["mIoU"] == pytest.approx(1.0) and res["pixel_accuracy"] == pytest.approx(1.0)
    np.testing.assert_array_equal(res["mapping"][perm], np.arange(5))
    assert res["n_images"] == 3
    # same with 7 clusters where two are never used: still perfect, extras unmatched
    res7 = evaluate_predictions(preds, gts, n_pred=7, n_gt=5)
    assert res7["mIoU"] == pytest.approx(1.0)


def test_absent_class_excluded_from_miou_and_ignore_pixels_ignored():
    gt = np.array([[0, 0, 1, 1, 255, 255]])
    pred = np.array([[1, 1, 0, 2, 0, 0]])  # gt class 2 absent
    res = evaluate_predictions([pred], [gt], n_pred=3, n_gt=3)
    # Hungarian: 1->0 (2 px); clusters 0 and 2 tie for class 1 (1 px each), the other takes class 2.
    # IoU0 = 2/2, IoU1 = 1/(1+2-1) = 0.5 either way, class 2 absent
    assert res["mapping"][1] == 0 and sorted(res["mapping"][[0, 2]]) == [1, 2]
    assert np.isnan(res["per_class_iou"][2])
    assert res["mIoU"] == pytest.approx(0.75) and res["n_classes_present"] == 2
    assert res["pixel_accuracy"] == pytest.approx(3 / 4)
    js = metrics_to_json(res, ["a", "b", "c"])
    assert js["per_class_iou"][2] is None and js["per_class_iou_named"]["a"] == 1.0


def test_mapped_confusion_and_errors(tmp_path):
    mc = mapped_confusion(CONF, [0, 1, 2, -1])
    assert mc.shape == (4, 3)
    np.testing.assert_array_equal(mc[3], [10, 0, 0])
    with pytest.raises(DriveSegmentError):
        segmentation_metrics(CONF, [0, 1])
    with pytest.raises(DriveSegmentError):
        segmentation_metrics(np.zeros((2, 2), np.int64), [0, 1])
    with pytest.raises(DriveSegmentError, match="matching"):
        evaluate_predictions([np.zeros(2, int)], [np.zeros(2, int)], 1, 1, matching="greedy")
    path = plot_confusion(CONF, [0, 1, 2, -1], ["road", "car", "sky"], tmp_path / "c.png")
    assert path.is_file() and path.stat().st_size > 1000
