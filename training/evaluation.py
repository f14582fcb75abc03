"""Unsupervised segmentation evaluation: confusion matrix, cluster matching, mIoU.

Predicted pseudo-classes carry no names, so they are matched to ground-truth classes on the
dataset-level confusion matrix before scoring (Drive&Segment, Vobecky et al. ECCV 2022, Sec. 4;
the protocol of IIC / PiCIE / STEGO):

* :func:`hungarian_match` -- one-to-one assignment maximising the matched pixel overlap
  (``scipy.optimize.linear_sum_assignment``); extra clusters stay unmatched (-1) and count as
  wrong everywhere.
* :func:`majority_match` -- many-to-one: every cluster takes the gt class it overlaps most.

``mIoU`` is averaged over the classes present in the ground truth; values are fractions in
[0, 1] (multiply by 100 for the percentages papers print).

The streaming evaluation of a model on the benchmarks (``drive-segment evaluate``) is
:mod:`drive_segment_training.benchmark_eval`; it accumulates :func:`confusion_matrix` image by
image and scores with the functions here.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, Iterable, Optional, Sequence, Union

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy.optimize import linear_sum_assignment

from drive_segment_ros.types import IGNORE_INDEX, DriveSegmentError

LOG = logging.getLogger(__name__)


def confusion_matrix(
    pred: np.ndarray,
    gt: np.ndarray,
    n_pred: int,
    n_gt: int,
    ignore_index: int = IGNORE_INDEX,
    pred_ignore_index: Optional[int] = None,
) -> np.ndarray:
    """Pixel confusion matrix between predicted clusters and ground-truth classes.

    Args:
        pred: (H, W) (or any shape) integer cluster ids in ``[0, n_pred)``.
        gt: same shape, integer class ids in ``[0, n_gt)`` or ``ignore_index``.
        n_pred, n_gt: number of predicted clusters / ground-truth classes.
        ignore_index: gt value that is not evaluated (Cityscapes 255).
        pred_ignore_index: optional pred value whose pixels are skipped too (to score partial
            pseudo-label maps on their labelled pixels only); ``None`` = every pixel must be valid.

    Returns:
        (n_pred, n_gt) int64, ``conf[i, j]`` = number of pixels predicted ``i`` with gt ``j``.
        Matrices of several images add up (``sum`` them for a dataset-level matrix).

    Raises:
        DriveSegmentError: shape mismatch, or ids out of range (other than the ignore values).
    """
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.shape != gt.shape:
        raise DriveSegmentError(f"prediction shape {pred.shape} differs from ground truth shape {gt.shape}")
    if n_pred <= 0 or n_gt <= 0:
        raise DriveSegmentError(f"n_pred and n_gt must be positive, got {n_pred}, {n_gt}")
    p = pred.reshape(-1).astype(np.int64)
    g = gt.reshape(-1).astype(np.int64)
    keep = g != ignore_index
    if pred_ignore_index is not None:
        keep &= p != pred_ignore_index
    p, g = p[keep], g[keep]
    if p.size and (p.min() < 0 or p.max() >= n_pred):
        raise DriveSegmentError(f"predicted ids must lie in [0, {n_pred}), got range [{p.min()}, {p.max()}]")
    if g.size and (g.min() < 0 or g.max() >= n_gt):
        raise DriveSegmentError(f"ground-truth ids must lie in [0, {n_gt}) or be {ignore_index}, got range [{g.min()}, {g.max()}]")
    return np.bincount(p * n_gt + g, minlength=n_pred * n_gt).reshape(n_pred, n_gt).astype(np.int64)


def _check_conf(conf: np.ndarray) -> np.ndarray:
    conf = np.asarray(conf)
    if conf.ndim != 2 or conf.shape[0] == 0 or conf.shape[1] == 0:
        raise DriveSegmentError(f"confusion matrix must be a non-empty 2-D (n_pred, n_gt) array, got shape {conf.shape}")
    if np.any(conf < 0):
        raise DriveSegmentError("confusion matrix has negative counts")
    return conf


def hungarian_match(conf: np.ndarray) -> np.ndarray:
    """One-to-one cluster -> class matching that maximises the total matched overlap.

    Uses ``scipy.optimize.linear_sum_assignment(conf, maximize=True)`` (Hungarian / Jonker-Volgenant).

    Args:
        conf: (n_pred, n_gt) confusion matrix (:func:`confusion_matrix`).

    Returns:
        (n_pred,) int64 ``mapping[i]`` = gt class of cluster ``i``, or -1 when ``n_pred > n_gt``
        left it unmatched. Matched clusters that never overlapped their class still get it
        (zero-gain assignments are harmless: they add no true positives).
    """
    conf = _check_conf(conf)
    rows, cols = linear_sum_assignment(conf.astype(np.float64), maximize=True)
    mapping = np.full(conf.shape[0], -1, np.int64)
    mapping[rows] = cols
    return mapping


def majority_match(conf: np.ndarray) -> np.ndarray:
    """Many-to-one matching: each cluster takes the gt class it overlaps most.

    Args:
        conf: (n_pred, n_gt) confusion matrix.

    Returns:
        (n_pred,) int64 mapping; -1 for clusters with no evaluated pixel (an all-zero row).
    """
    conf = _check_conf(conf)
    mapping = np.argmax(conf, axis=1).astype(np.int64)
    mapping[conf.sum(axis=1) == 0] = -1
    return mapping


def mapped_confusion(conf: np.ndarray, mapping: np.ndarray) -> np.ndarray:
    """Collapse a (n_pred, n_gt) confusion matrix through ``mapping`` to (n_gt + 1, n_gt).

    Row ``c`` (< n_gt) counts pixels whose cluster maps to class ``c``; the last row counts pixels
    of unmatched clusters (mapping -1), which are wrong for every class.
    """
    conf = _check_conf(conf)
    mapping = np.asarray(mapping, dtype=np.int64).reshape(-1)
    n_pred, n_gt = conf.shape
    if mapping.shape[0] != n_pred:
        raise DriveSegmentError(f"mapping has {mapping.shape[0]} entries, confusion matrix has {n_pred} rows")
    if np.any((mapping < -1) | (mapping >= n_gt)):
        raise DriveSegmentError(f"mapping values must lie in [-1, {n_gt})")
    rows = np.where(mapping < 0, n_gt, mapping)
    out = np.zeros((n_gt + 1, n_gt), np.int64)
    np.add.at(out, rows, conf.astype(np.int64))
    return out


def segmentation_metrics(conf: np.ndarray, mapping: np.ndarray) -> Dict[str, object]:
    """mIoU, per-class IoU and pixel accuracy of matched predictions.

    For gt class ``c``: TP = pixels of ``c`` predicted by clusters mapped to ``c``;
    FP = other evaluated pixels predicted by clusters mapped to ``c``; FN = pixels of ``c`` not
    predicted as ``c`` (including those in unmatched clusters); ``IoU = TP / (TP + FP + FN)``.

    Args:
        conf: (n_pred, n_gt) int confusion matrix.
        mapping: (n_pred,) int, cluster -> class or -1 (:func:`hungarian_match` / :func:`majority_match`).

    Returns:
        dict with ``mIoU`` (float, mean IoU over classes present in gt, in [0, 1]),
        ``per_class_iou`` ((n_gt,) float64, NaN for classes absent from gt), ``pixel_accuracy``
        (float, TP total / evaluated pixels), ``n_classes_present`` (int), ``n_pixels`` (int).

    Raises:
        DriveSegmentError: bad shapes / mapping values, or no evaluated pixel.
    """
    mc = mapped_confusion(conf, mapping)
    n_gt = mc.shape[1]
    tp = np.diag(mc[:n_gt]).astype(np.float64)
    pred_total = mc[:n_gt].sum(axis=1).astype(np.float64)
    gt_total = mc.sum(axis=0).astype(np.float64)
    total = float(gt_total.sum())
    if total == 0:
        raise DriveSegmentError("no evaluated pixels (everything ignored)")
    present = gt_total > 0
    union = pred_total + gt_total - tp
    iou = np.full(n_gt, np.nan)
    iou[present] = tp[present] / union[present]
    return {
        "mIoU": float(np.mean(iou[present])),
        "per_class_iou": iou,
        "pixel_accuracy": float(tp.sum() / total),
        "n_classes_present": int(present.sum()),
        "n_pixels": int(total),
    }


def evaluate_predictions(
    preds: Iterable[np.ndarray],
    gts: Iterable[np.ndarray],
    n_pred: int,
    n_gt: int,
    ignore_index: int = IGNORE_INDEX,
    matching: str = "hungarian",
    pred_ignore_index: Optional[int] = None,
) -> Dict[str, object]:
    """Dataset-level evaluation: accumulate one confusion matrix, match once, score.

    Args:
        preds, gts: iterables of equally shaped (H, W) integer maps (see :func:`confusion_matrix`).
        n_pred, n_gt, ignore_index, pred_ignore_index: as in :func:`confusion_matrix`.
        matching: ``"hungarian"`` (one-to-one) or ``"majority"`` (many-to-one).

    Returns:
        :func:`segmentation_metrics` dict plus ``confusion`` ((n_pred, n_gt) int64), ``mapping``
        ((n_pred,) int64), ``matching`` and ``n_images``.

    Raises:
        DriveSegmentError: unknown matching, no image pairs, or any error of the helpers.
    """
    match_fn = {"hungarian": hungarian_match, "majority": majority_match}.get(matching)
    if match_fn is None:
        raise DriveSegmentError(f"unknown matching {matching!r}; use 'hungarian' or 'majority'")
    conf = np.zeros((n_pred, n_gt), np.int64)
    n_images = 0
    for pred, gt in zip(preds, gts):
        conf += confusion_matrix(pred, gt, n_pred, n_gt, ignore_index, pred_ignore_index)
        n_images += 1
    if n_images == 0:
        raise DriveSegmentError("no (prediction, ground truth) pairs to evaluate")
    mapping = match_fn(conf)
    metrics = segmentation_metrics(conf, mapping)
    metrics.update(confusion=conf, mapping=mapping, matching=matching, n_images=n_images)
    return metrics


def plot_confusion(
    conf: np.ndarray, mapping: np.ndarray, class_names: Sequence[str], path: Union[str, Path], title: str = ""
) -> Path:
    """Save the row-normalised matched confusion matrix as a PNG (matplotlib, Agg backend).

    Rows are gt classes, columns the class each pixel was predicted as after ``mapping``, plus a
    last column "unmatched" for clusters mapped to -1. Each row sums to 1 (empty rows stay 0).

    Returns:
        the written path. Raises DriveSegmentError if ``class_names`` length differs from n_gt.
    """
    mc = mapped_confusion(conf, mapping)  # (n_gt + 1, n_gt): rows = predicted class
    n_gt = mc.shape[1]
    if len(class_names) != n_gt:
        raise DriveSegmentError(f"{len(class_names)} class names for {n_gt} ground-truth classes")
    gt_by_pred = mc.T.astype(np.float64)  # (n_gt, n_gt + 1): rows = gt class
    norm = gt_by_pred / np.maximum(gt_by_pred.sum(axis=1, keepdims=True), 1.0)
    size = max(5.0, 0.35 * n_gt + 2)
    fig = Figure(figsize=(size + 1, size))  # no pyplot: no global backend state
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(n_gt + 1))
    ax.set_xticklabels(list(class_names) + ["unmatched"], rotation=90, fontsize=7)
    ax.set_yticks(range(n_gt))
    ax.set_yticklabels(list(class_names), fontsize=7)
    ax.set_xlabel("predicted (after matching)")
    ax.set_ylabel("ground truth")
    ax.set_title(title or "row-normalised confusion")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def metrics_to_json(metrics: Dict[str, object], class_names: Optional[Sequence[str]] = None) -> Dict[str, object]:
    """JSON-serialisable copy of an :func:`evaluate_predictions` dict (NaN IoU -> null)."""
    out: Dict[str, object] = {}
    for key, value in metrics.items():
        if isinstance(value, np.ndarray):
            value = [None if (isinstance(v, float) and np.isnan(v)) else v for v in value.tolist()]
        out[key] = value
    if class_names is not None and "per_class_iou" in out:
        out["per_class_iou_named"] = dict(zip(class_names, out["per_class_iou"]))
    return out
