"""Baseline without LiDAR: k-means directly on the backbone's per-pixel features.

Drive&Segment (Vobecky et al., ECCV 2022, Sec. 4, Table 1 ablations) compares the LiDAR-driven
pseudo-labels against clustering image features alone. This module measures that baseline with
the *same* backbone and the *same* k as the LiDAR pipeline so the two numbers are comparable:

* :func:`fit_pixel_kmeans` -- sample pixels of the (bilinearly upsampled) feature maps of a set of
  images and fit scikit-learn k-means (the same :func:`~drive_segment_training.kmeans.fit_pseudo_classes`).
* :func:`predict_pixel_kmeans` -- per-pixel nearest centroid at full image resolution (features
  upsampled with ``align_corners=False`` bilinear interpolation, ``grid_sample`` in row bands so
  the (C, H, W) map is never held at once).
"""
from __future__ import annotations

import logging
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as tF
from tqdm import tqdm

from drive_segment_ros.pseudo_labeling import _as_feature_array, bilinear_taps, image_features, l2_normalize
from drive_segment_ros.types import DriveSegmentError
from drive_segment_training.evaluation import evaluate_predictions
from drive_segment_training.kmeans import fit_pseudo_classes

LOG = logging.getLogger(__name__)


def sample_pixel_features(features, ys: np.ndarray, xs: np.ndarray, cell_size: Tuple[float, float]) -> np.ndarray:
    """Bilinearly upsampled features at given pixels (``align_corners=False`` convention).

    Args:
        features: (C, h, w) float torch tensor / numpy array.
        ys, xs: (P,) integer pixel rows / columns of the original image.
        cell_size: ``(cell_y, cell_x)`` image pixels per feature cell
            (:func:`~drive_segment_ros.pseudo_labeling.feature_cell_size`).

    Returns:
        (P, C) float32.
    """
    F = _as_feature_array(features)
    _, h, w = F.shape
    y0, y1, ly = bilinear_taps(ys, h, cell_size[0])
    x0, x1, lx = bilinear_taps(xs, w, cell_size[1])
    ly, lx = ly[None], lx[None]
    out = (1 - ly) * ((1 - lx) * F[:, y0, x0] + lx * F[:, y0, x1]) + ly * ((1 - lx) * F[:, y1, x0] + lx * F[:, y1, x1])
    return np.ascontiguousarray(out.T, dtype=np.float32)


def fit_pixel_kmeans(
    backbone,
    images: Iterable[np.ndarray],
    k: int,
    max_pixels_per_image: int = 10000,
    seed: int = 0,
    normalize: bool = True,
    max_side: Optional[int] = 1024,
    window: Optional[int] = None,
    n_init: int = 10,
) -> np.ndarray:
    """k-means on per-pixel backbone features of ``images`` (the no-LiDAR baseline).

    Args:
        backbone: :class:`~drive_segment_ros.models.backbones.Backbone` (or any module with
            ``stride``, ``embed_dim``, ``mean``, ``std`` and ``forward -> (B,C,h,w)``).
        images: iterable of (H, W, 3) uint8 RGB images (sizes may differ).
        k: number of clusters (use the LiDAR pipeline's k).
        max_pixels_per_image: pixels sampled uniformly without replacement per image
            (``numpy.random.default_rng(seed)``).
        seed: sampling and k-means seed.
        normalize: L2-normalise each pixel feature (as the segment features).
        max_side, window: feature extraction (``backbones.extract_features``).
        n_init: k-means restarts.

    Returns:
        (k, C) float32 centroids.

    Raises:
        DriveSegmentError: no images, bad images, or fewer sampled pixels than k.
    """
    if max_pixels_per_image < 1:
        raise DriveSegmentError(f"max_pixels_per_image must be >= 1, got {max_pixels_per_image}")
    rng = np.random.default_rng(seed)
    samples: List[np.ndarray] = []
    for rgb in tqdm(list(images), desc="baseline: pixel features", unit="image", leave=False):
        rgb = np.asarray(rgb)
        feats, cell = image_features(backbone, rgb, max_side, window)
        H, W = rgb.shape[:2]
        n = min(int(max_pixels_per_image), H * W)
        flat = rng.choice(H * W, size=n, replace=False)
        X = sample_pixel_features(feats, flat // W, flat % W, cell)
        samples.append(l2_normalize(X) if normalize else X)
    if not samples:
        raise DriveSegmentError("no images for the pixel k-means baseline")
    X = np.concatenate(samples, axis=0)
    LOG.info("pixel k-means baseline: %d pixels from %d images, k=%d", X.shape[0], len(samples), k)
    return fit_pseudo_classes(X, k=k, seed=seed, n_init=n_init)


def _band_grid(rows: np.ndarray, W: int, h: int, w: int, cy: float, cx: float):
    """``grid_sample`` grid (1, b, W, 2) that samples feature coordinate ``(p + 0.5) / cell - 0.5``
    for every pixel of the given rows (``align_corners=False``; border padding = the same clamping
    as :func:`~drive_segment_ros.pseudo_labeling.bilinear_taps`)."""
    gx = torch.as_tensor((np.arange(W) + 0.5) * 2.0 / (cx * w) - 1.0, dtype=torch.float32)
    gy = torch.as_tensor((np.asarray(rows) + 0.5) * 2.0 / (cy * h) - 1.0, dtype=torch.float32)
    return torch.stack(torch.broadcast_tensors(gx[None, :], gy[:, None]), dim=-1)[None]


def predict_pixel_kmeans(
    backbone,
    centroids: np.ndarray,
    rgb: np.ndarray,
    normalize: bool = True,
    max_side: Optional[int] = 1024,
    window: Optional[int] = None,
    band_elements: int = 1 << 25,
) -> np.ndarray:
    """Per-pixel nearest centroid on features bilinearly upsampled to the image size.

    The nearest centroid minimises ``|c_k|^2 - 2 u.c_k`` (raw pixel feature ``u``) or
    ``|c_k|^2 - 2 u.c_k / |u|`` (``normalize=True``: L2-normalised pixel features, as in
    :func:`fit_pixel_kmeans`). Bilinear upsampling is linear, so ``u.c_k`` is the upsampled
    (k, h, w) score map ``F.c_k`` (k channels instead of C); ``|u|`` needs the upsampled features
    themselves. Both are sampled with ``torch.nn.functional.grid_sample`` (bilinear,
    ``align_corners=False``, border clamping = :func:`sample_pixel_features`) one band of rows at a
    time, so at most ``band_elements`` floats of features are held (never the (C, H, W) map).

    Args:
        backbone: as in :func:`fit_pixel_kmeans`.
        centroids: (k, C) float centroids from :func:`fit_pixel_kmeans`.
        rgb: (H, W, 3) uint8 RGB.
        normalize, max_side, window: must match the fit.
        band_elements: rows per band = ``band_elements // (C * W)`` (at least 1).

    Returns:
        (H, W) int64 cluster ids in ``[0, k)``.

    Raises:
        DriveSegmentError: centroid dimension differs from the feature channels, bad image.
    """
    rgb = np.asarray(rgb)
    feats, (cy, cx) = image_features(backbone, rgb, max_side, window)
    F = torch.as_tensor(_as_feature_array(feats))
    C, h, w = F.shape
    cen = torch.as_tensor(np.asarray(centroids, dtype=np.float32))
    if cen.ndim != 2 or cen.shape[1] != C:
        raise DriveSegmentError(f"centroids {tuple(cen.shape)} do not match {C}-channel features")
    H, W = rgb.shape[:2]
    S = torch.einsum("chw,kc->khw", F, cen)[None]  # (1, k, h, w) scores F . c_k
    cnorm = (cen * cen).sum(1)[:, None, None]
    band = max(1, int(band_elements) // (C * W))
    out = np.empty((H, W), np.int64)
    with torch.no_grad():
        for r0 in range(0, H, band):
            rows = np.arange(r0, min(H, r0 + band))
            grid = _band_grid(rows, W, h, w, cy, cx)
            dot = tF.grid_sample(S, grid, mode="bilinear", padding_mode="border", align_corners=False)[0]
            if normalize:
                U = tF.grid_sample(F[None], grid, mode="bilinear", padding_mode="border", align_corners=False)[0]
                dot = dot / U.norm(dim=0).clamp_min(1e-8)
            out[r0:r0 + rows.size] = (cnorm - 2.0 * dot).argmin(dim=0).numpy()
    return out


def evaluate_pixel_kmeans(
    backbone,
    centroids: np.ndarray,
    items: Sequence[Tuple[str, np.ndarray, np.ndarray]],
    n_gt: int,
    normalize: bool = True,
    max_side: Optional[int] = 1024,
    matching: str = "hungarian",
) -> Dict[str, object]:
    """Predict every labelled image and score with :func:`~drive_segment_training.evaluation.evaluate_predictions`.

    Args:
        items: ``(name, rgb (H,W,3) uint8, gt (H,W) uint8 with 255 = ignore)`` as returned by
            :func:`~drive_segment_training.labels.load_waymo_eval`.
        n_gt: number of ground-truth classes (19 or 27).

    Returns:
        the metrics dict (``mIoU``, ``pixel_accuracy``, ``per_class_iou``, ``confusion``, ``mapping``...).
    """
    k = int(np.asarray(centroids).shape[0])
    preds = (predict_pixel_kmeans(backbone, centroids, rgb, normalize, max_side) for _, rgb, _ in items)
    return evaluate_predictions(preds, (gt for _, _, gt in items), n_pred=k, n_gt=n_gt, matching=matching)
