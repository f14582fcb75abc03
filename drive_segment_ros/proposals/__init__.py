"""LiDAR object proposals: ground removal + spatially coherent segments (Drive&Segment stage 2).

``segment_scan(points, config, rings)`` labels every point of one scan as ground (``GROUND``),
unassigned (``UNASSIGNED``: invalid, out of range, or in a segment outside the size limits) or
one of ``n_segments`` object segments ``0..n-1`` (ordered by decreasing size). Backends:

* ``range_image`` (default): Bogoslavskyi & Stachniss, "Efficient online segmentation for sparse
  3D laser scans", PFG 2017 (PRBonn/depth_clustering), as used by Vobecky et al.
  (Drive&Segment, ECCV 2022, Sec. 3.1) - see :mod:`.range_image`.
* ``dbscan``: RANSAC ground plane + open3d DBSCAN - see :mod:`.clustering`.

:func:`ground_cell_ids` then cuts the ground into x/y cells so that road and sidewalk also get
segments for the pseudo-labelling.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from drive_segment_ros.proposals.clustering import segment_dbscan
from drive_segment_ros.proposals.config import BACKENDS, ProposalConfig
from drive_segment_ros.proposals.ground import ground_cell_ids
from drive_segment_ros.proposals.range_image import segment_range_image
from drive_segment_ros.types import GROUND, UNASSIGNED, DriveSegmentError

LOG = logging.getLogger(__name__)

__all__ = [
    "GROUND", "UNASSIGNED", "BACKENDS", "ProposalConfig", "Proposals", "segment_scan", "ground_cell_ids",
    "relabel_segments",
]


@dataclass
class Proposals:
    """Result of :func:`segment_scan` for one scan of N points.

    Attributes:
        labels: (N,) int32; ``GROUND`` (-1), ``UNASSIGNED`` (-2) or segment id ``0..n_segments-1``
            (contiguous, segment 0 the largest).
        n_segments: number of object segments.
        stats: ``n_points``, ``n_ground``, ``ground_fraction`` (of all N points), ``n_segments``,
            ``sizes`` (list of points per segment, by id), ``time_ms`` (wall time of the
            segmentation), ``backend``.
    """

    labels: np.ndarray
    n_segments: int
    stats: dict = field(default_factory=dict)

    @property
    def ground(self) -> np.ndarray:
        """(N,) bool mask of ground points."""
        return self.labels == GROUND


def _relabel(raw: np.ndarray, min_size: int, max_size: int):
    """relabel_segments, also returning (sizes of the new segments by id, number of ground points)."""
    raw = np.asarray(raw)
    shifted = raw.astype(np.int64) - UNASSIGNED  # UNASSIGNED -> 0, GROUND -> 1, segment k -> k + 2
    if shifted.size and shifted.min() < 0:
        raise DriveSegmentError(f"relabel_segments: labels must be >= {UNASSIGNED}")
    counts = np.bincount(shifted, minlength=2)
    sizes = counts[2:]
    ok = np.flatnonzero((sizes >= min_size) & (sizes <= max_size))
    order = ok[np.lexsort((ok, -sizes[ok]))]
    lut = np.full(counts.size, UNASSIGNED, dtype=np.int32)
    lut[1] = GROUND
    lut[order + 2] = np.arange(order.size, dtype=np.int32)
    return np.take(lut, shifted, mode="clip"), sizes[order], int(counts[1])  # shifted in [0, counts.size)


def relabel_segments(raw: np.ndarray, min_size: int, max_size: int) -> np.ndarray:
    """Size-filter raw component ids and renumber them 0..n-1 by decreasing size.

    Args:
        raw: (N,) int labels: GROUND (-1), UNASSIGNED (-2) or a raw component id >= 0.
        min_size, max_size: segments with fewer / more points become UNASSIGNED.

    Returns:
        (N,) int32 labels (ties in size ordered by the raw id).

    Raises:
        DriveSegmentError: a label below -2.
    """
    return _relabel(raw, min_size, max_size)[0]


def segment_scan(points: np.ndarray, config: Optional[ProposalConfig] = None, rings: Optional[np.ndarray] = None) -> Proposals:
    """Ground removal + segmentation of one LiDAR scan into object proposals.

    Args:
        points: (N, >=3) float array ``x, y, z[, intensity, ...]`` in the LiDAR frame (REP 103,
            z up), metres. Non-finite points and points outside ``[min_range_m, max_range_m]``
            become UNASSIGNED. N may be 0.
        config: :class:`ProposalConfig` (default: ``ProposalConfig()``); ``config.backend``
            selects ``"range_image"`` or ``"dbscan"``.
        rings: optional (N,) integer laser ring (e.g. the nuScenes HDL-32E ``ring`` field);
            range-image rows then follow the rings. Without it, the rings are recovered from
            the point order when the scan is stored ring by ring (``config.rings_from_order``,
            KITTI ``.bin``), else rows are elevation bins.

    Returns:
        :class:`Proposals`.

    Raises:
        DriveSegmentError: points not a 2-D numeric array with >= 3 columns, bad rings, bad config.
    """
    config = ProposalConfig() if config is None else config
    if not isinstance(config, ProposalConfig):
        raise DriveSegmentError(f"segment_scan: config must be a ProposalConfig, got {type(config).__name__}")
    config.validate()
    pts = np.asarray(points)
    if pts.ndim != 2 or pts.shape[1] < 3 or pts.dtype.kind not in "fiu":
        raise DriveSegmentError(f"segment_scan: points must be a numeric (N, >=3) array, got shape {pts.shape}, dtype {pts.dtype}")
    n = pts.shape[0]
    t0 = time.perf_counter()
    if n == 0:
        labels, sizes, n_ground = np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.int64), 0
    else:
        backend = segment_range_image if config.backend == "range_image" else segment_dbscan
        labels, sizes, n_ground = _relabel(backend(pts, config, rings), config.min_segment_size, config.max_segment_size)
    time_ms = (time.perf_counter() - t0) * 1000.0
    n_segments = int(sizes.size)
    sizes = sizes.tolist()
    stats = {
        "n_points": int(n),
        "n_ground": n_ground,
        "ground_fraction": n_ground / n if n else 0.0,
        "n_segments": n_segments,
        "sizes": sizes,
        "time_ms": time_ms,
        "backend": config.backend,
    }
    LOG.debug("segment_scan[%s]: %d points, %d ground, %d segments, %.1f ms", config.backend, n, n_ground, n_segments, time_ms)
    return Proposals(labels=labels, n_segments=n_segments, stats=stats)
