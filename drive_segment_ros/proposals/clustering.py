"""RANSAC ground plane + DBSCAN clustering backend (the usual alternative to the range image).

Ground: the dominant plane found by RANSAC (open3d ``PointCloud.segment_plane``, Fischler &
Bolles 1981), accepted only if its normal is within ``ground_max_tilt_deg`` of the z axis and
the plane lies below the sensor. Objects: DBSCAN (Ester et al., KDD 1996) on the remaining
points with open3d ``PointCloud.cluster_dbscan(eps, min_points)``; DBSCAN noise -> UNASSIGNED.
Docs: https://www.open3d.org/docs/release/tutorial/geometry/pointcloud.html (plane
segmentation, DBSCAN clustering).
"""
from __future__ import annotations

import logging
import math
from typing import Optional

import numpy as np

from drive_segment_ros.proposals.config import ProposalConfig
from drive_segment_ros.types import GROUND, UNASSIGNED

LOG = logging.getLogger(__name__)


def ransac_ground(xyz: np.ndarray, config: ProposalConfig) -> np.ndarray:
    """Ground points as the inliers of the dominant near-horizontal RANSAC plane.

    Args:
        xyz: (M, 3) float64, finite, LiDAR frame (z up), metres.
        config: uses ``ransac_distance_m``, ``ransac_iterations``, ``ground_max_tilt_deg``, ``seed``.

    Returns:
        (M,) bool, True for ground. All False when M < 3 or the plane is too tilted.
    """
    import open3d as o3d  # optional heavy dependency (train extra)

    m = xyz.shape[0]
    ground = np.zeros(m, dtype=bool)
    if m < 3:
        return ground
    o3d.utility.random.seed(int(config.seed))
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(xyz))
    plane, inliers = pcd.segment_plane(
        distance_threshold=float(config.ransac_distance_m), ransac_n=3, num_iterations=int(config.ransac_iterations)
    )
    a, b, c, d = (float(v) for v in plane)
    norm = math.sqrt(a * a + b * b + c * c) or 1.0
    tilt = math.degrees(math.acos(min(1.0, abs(c) / norm)))
    if tilt > config.ground_max_tilt_deg or len(inliers) == 0:
        LOG.debug("RANSAC plane rejected as ground (tilt %.1f deg, %d inliers)", tilt, len(inliers))
        return ground
    ground[np.asarray(inliers, dtype=np.int64)] = True
    return ground


def dbscan_clusters(xyz: np.ndarray, config: ProposalConfig) -> np.ndarray:
    """DBSCAN cluster ids of points (open3d ``cluster_dbscan``).

    Args:
        xyz: (M, 3) float64 finite points, metres.
        config: uses ``dbscan_eps_m``, ``dbscan_min_points``.

    Returns:
        (M,) int64 cluster id >= 0, or -2 (UNASSIGNED) for DBSCAN noise.
    """
    import open3d as o3d  # optional heavy dependency (train extra)

    if xyz.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(xyz))
    labels = np.asarray(
        pcd.cluster_dbscan(eps=float(config.dbscan_eps_m), min_points=int(config.dbscan_min_points), print_progress=False),
        dtype=np.int64,
    )
    labels[labels < 0] = UNASSIGNED
    return labels


def segment_dbscan(points: np.ndarray, config: ProposalConfig, rings: Optional[np.ndarray] = None) -> np.ndarray:
    """RANSAC ground + DBSCAN segmentation of one scan.

    Args:
        points: (N, >=3) float, x, y, z (LiDAR frame, z up, metres).
        config: :class:`ProposalConfig` (``min_range_m`` / ``max_range_m`` apply too).
        rings: ignored (accepted for a common backend signature).

    Returns:
        (N,) int64 raw labels: ``-1`` ground, ``-2`` invalid / out of range / noise, else a
        cluster id (size filtering is done by :func:`~drive_segment_ros.proposals.segment_scan`).
    """
    xyz_all = np.asarray(points)[:, :3]
    n = xyz_all.shape[0]
    with np.errstate(invalid="ignore", over="ignore"):
        rng = np.sqrt(np.einsum("ij,ij->i", xyz_all, xyz_all, dtype=np.float64))
        valid = np.isfinite(rng) & (rng >= config.min_range_m) & (rng <= config.max_range_m)
    idx = np.flatnonzero(valid)
    xyz = xyz_all[idx].astype(np.float64)
    labels = np.full(n, UNASSIGNED, dtype=np.int64)
    ground = ransac_ground(xyz, config)
    labels[idx[ground]] = GROUND
    rest = idx[~ground]
    labels[rest] = dbscan_clusters(xyz[~ground], config)
    return labels
