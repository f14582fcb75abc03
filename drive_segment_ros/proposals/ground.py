"""Ground segments: split the ground points into an x/y grid of cells.

The pseudo-labelling (docs/METHOD.md stage 4) pools image features per segment; without ground
segments the road / sidewalk would never get a pseudo-class. The ground is therefore cut into
``cell_m x cell_m`` cells (axis-aligned in the LiDAR frame's x/y), each non-empty cell becoming
one extra segment.
"""
from __future__ import annotations

import numpy as np

from drive_segment_ros.types import GROUND, DriveSegmentError


def ground_cell_ids(points: np.ndarray, labels: np.ndarray, cell_m: float = 4.0) -> np.ndarray:
    """Segment ids with the ground split into a grid of cells.

    Args:
        points: (N, >=3) float, x, y, z in the LiDAR frame, metres.
        labels: (N,) int labels of :class:`~drive_segment_ros.proposals.Proposals`
            (``-1`` ground, ``-2`` unassigned, ``0..n-1`` object segments).
        cell_m: cell size in metres (> 0).

    Returns:
        (N,) int32: object segments keep their id; ground points get ``n_segments + k`` where
        ``n_segments = labels.max() + 1`` and ``k`` numbers the non-empty cells in order of
        (cell x index, cell y index); unassigned points (and non-finite ground points) get -1.

    Raises:
        DriveSegmentError: shapes disagree or ``cell_m`` is not a positive finite number.
    """
    pts = np.asarray(points)
    labels = np.asarray(labels)
    if pts.ndim != 2 or pts.shape[1] < 3:
        raise DriveSegmentError(f"ground_cell_ids: points must be (N, >=3), got shape {pts.shape}")
    if labels.shape != (pts.shape[0],):
        raise DriveSegmentError(f"ground_cell_ids: labels must be ({pts.shape[0]},), got shape {labels.shape}")
    if not np.isfinite(cell_m) or cell_m <= 0:
        raise DriveSegmentError(f"ground_cell_ids: cell_m must be > 0, got {cell_m}")
    out = np.full(pts.shape[0], -1, dtype=np.int32)
    obj = labels >= 0
    out[obj] = labels[obj]
    n_segments = int(labels[obj].max()) + 1 if obj.any() else 0
    ground = (labels == GROUND) & np.isfinite(pts[:, :2]).all(axis=1)
    if ground.any():
        cells = np.floor(pts[ground, :2].astype(np.float64) / cell_m).astype(np.int64)
        _, inverse = np.unique(cells, axis=0, return_inverse=True)
        out[ground] = n_segments + inverse.reshape(-1)
    return out
