"""Dense image segment maps from LiDAR segments: the per-frame stage orchestrator.

Stage 3 of Drive&Segment (Vobecky et al., ECCV 2022, Sec. 3.1 "Object proposals from LiDAR";
IJCV 2025, Sec. 3.2): every LiDAR segment is projected into the camera image, occlusions are
resolved with a depth buffer, and the sparse projected points are densified into a segment mask;
pixels covered by no segment stay unlabelled (-1).

* :func:`segment_map`: labelled LiDAR points -> (H, W) segment ids (projection, splatting and
  densification: :mod:`.projection`, :mod:`.densification`).
* :func:`compute_segment_map`: one :class:`~drive_segment_ros.types.DriveFrame` -> LiDAR proposals
  (:mod:`.proposals`) with the ground cut into cells -> :func:`segment_map`. Shared by the offline
  proposal stage, the pseudo-labeller and the ROS nodes.

This module sits above both :mod:`.proposals` and :mod:`.projection` (neither imports the other).
Conventions as in :mod:`.projection` (REP 103 frames, metres, pixel centres at integers).
"""
from __future__ import annotations

import logging
from typing import Optional, Tuple

import numpy as np

from drive_segment_ros.densification import LidarSpacing, densify
from drive_segment_ros.projection import (
    ProjectionConfig,
    check_points,
    nearest_per_pixel,
    splat_points,
    visible_projection,
)
from drive_segment_ros.proposals import ProposalConfig, Proposals, ground_cell_ids, segment_scan
from drive_segment_ros.types import CameraModel, DriveFrame, DriveSegmentError

LOG = logging.getLogger(__name__)

__all__ = ["segment_map", "compute_segment_map"]


def segment_map(
    points: np.ndarray,
    point_ids: np.ndarray,
    camera: CameraModel,
    T_cam_lidar: np.ndarray,
    config: Optional[ProjectionConfig] = None,
    rings: Optional[np.ndarray] = None,
    spacing: Optional[LidarSpacing] = None,
) -> np.ndarray:
    """Dense, occlusion-aware segment mask from labelled LiDAR points.

    Algorithm (Drive&Segment Sec. 3.1, step "projection"): (1) project the points (in front of
    the camera, inside the image, ``min_depth < depth <= max_depth``); (2) depth-tested disk
    splatting - every point, labelled or not, covers a disk whose pixel radius shrinks with
    depth, and each pixel takes the id of the nearest covering point, so nearer surfaces occlude
    farther ones and points with ``id < 0`` occlude without labelling; (3) optional per-segment
    morphological closing / convex hull, accepted only on unlabelled pixels with no nearer
    surface (``zbuf >= seg_min_depth - tolerance``), nearest segments first; the kernel adapts
    to the sensor (:func:`~drive_segment_ros.densification.densify_kernel_px` from
    :func:`~drive_segment_ros.densification.estimate_lidar_spacing`); (4) gap fill:
    short empty vertical runs between two occupied pixels (rows between two LiDAR rings,
    typically of two different segments, e.g. ground cells) take the nearer end's label, then
    likewise short horizontal runs - only pixels with no point / splat at all, so nothing is
    labelled over a nearer surface and nothing grows outwards; (5) segments with fewer than
    ``min_pixels`` pixels are dropped. Steps 3-4 run only when ``closing_px`` is on.

    Args:
        points: (N, >=3) LiDAR frame, metres.
        point_ids: (N,) int, segment id per point; ``< 0`` = no label (still occludes).
        camera: camera model (image size, K, D).
        T_cam_lidar: (4, 4) LiDAR -> camera optical frame.
        config: :class:`ProjectionConfig` (defaults when ``None``).
        rings: optional (N,) laser ring per point, for :func:`estimate_lidar_spacing`.
        spacing: precomputed :class:`LidarSpacing` of this scan (e.g. shared by several cameras);
            ``None`` = ``config.lidar_spacing_deg`` or estimated from ``points`` / ``rings``.

    Returns:
        (H, W) int32 segment ids, -1 = unlabelled.

    Raises:
        DriveSegmentError: shape mismatch between points and ids (or rings, when the spacing is
        estimated), bad transform.
    """
    config = config or ProjectionConfig()
    points = check_points(points)
    point_ids = np.asarray(point_ids).reshape(-1)
    if point_ids.shape[0] != points.shape[0]:
        raise DriveSegmentError(f"point_ids has {point_ids.shape[0]} entries for {points.shape[0]} points")
    H, W = camera.height, camera.width
    out = np.full((H, W), -1, dtype=np.int32)
    idx, rows, cols, depth = visible_projection(points, camera, T_cam_lidar, config)
    if idx.size == 0:
        return out
    ids = point_ids[idx].astype(np.int64)
    # keep only the nearest point per pixel before splatting (fewer candidates, same result)
    sel = nearest_per_pixel(rows, cols, depth, W)
    rows, cols, depth, ids = rows[sel], cols[sel], depth[sel], ids[sel]

    zbuf, winner = splat_points(rows, cols, depth, camera, config)
    has = winner >= 0
    out[has] = np.where(ids[winner[has]] >= 0, ids[winner[has]], -1).astype(np.int32)

    densify(out, zbuf, rows, cols, depth, ids, camera, config, points, rings, spacing)
    return out


def compute_segment_map(
    frame: DriveFrame,
    proposal_config: Optional[ProposalConfig] = None,
    projection_config: Optional[ProjectionConfig] = None,
    proposals: Optional[Proposals] = None,
) -> Tuple[np.ndarray, np.ndarray, Proposals]:
    """LiDAR proposals of one frame projected to a dense image segment map.

    ``segment_scan(frame.points, proposal_config, rings=frame.rings)`` gives object segments
    (ids ``0 .. n_segments-1``) and ground; ``ground_cell_ids(points, labels,
    proposal_config.ground_cell_m)`` splits the ground into x/y cells, which get ids
    ``n_segments + cell``; unassigned points (-2) only occlude. Then :func:`segment_map`
    (with ``frame.rings`` for the sensor-adaptive densification).

    Args:
        frame: a :class:`DriveFrame` (image, points (N, 4) LiDAR frame, camera, T_cam_lidar, rings).
        proposal_config: ``proposals.ProposalConfig`` (defaults when ``None``).
        projection_config: :class:`ProjectionConfig` (defaults when ``None``).
        proposals: already computed ``segment_scan`` result for ``frame.points`` (e.g. the same
            scan paired with several cameras); ``None`` = run ``segment_scan``.

    Returns:
        ``(segment_map (H, W) int32 -1 = unlabelled, is_ground_id (n,) bool with
        n = n_segments + n_ground_cells - True for ground-cell ids, proposals)``. Segment-map id
        ``k < proposals.n_segments`` is proposal segment ``k`` (same id as ``proposals.labels``).

    Raises:
        DriveSegmentError: image size differs from the camera model, proposals of another scan,
        bad inputs.
    """
    proposal_config = proposal_config or ProposalConfig()
    projection_config = projection_config or ProjectionConfig()
    img = np.asarray(frame.image)
    if img.shape[:2] != (frame.camera.height, frame.camera.width):
        raise DriveSegmentError(
            f"frame {frame.name}: image {img.shape[1]}x{img.shape[0]} differs from camera model "
            f"{frame.camera.width}x{frame.camera.height}"
        )
    points = np.asarray(frame.points)
    if proposals is None:
        proposals = segment_scan(points, proposal_config, rings=frame.rings)
    elif np.asarray(proposals.labels).shape != (points.shape[0],):
        raise DriveSegmentError(
            f"frame {frame.name}: proposals have {np.asarray(proposals.labels).shape[0]} labels for {points.shape[0]} points"
        )
    n_seg = int(proposals.n_segments)
    ids = np.asarray(ground_cell_ids(points, proposals.labels, proposal_config.ground_cell_m)).astype(np.int64)
    n_cells = int(ids.max()) + 1 - n_seg if ids.size and ids.max() >= n_seg else 0
    smap = segment_map(points, ids, frame.camera, frame.T_cam_lidar, projection_config, rings=frame.rings)
    is_ground = np.zeros(n_seg + n_cells, dtype=bool)
    is_ground[n_seg:] = True
    LOG.debug(
        "%s: %d segments, %d ground cells, coverage %.3f",
        frame.name, n_seg, n_cells, float((smap >= 0).mean()),
    )
    return smap, is_ground, proposals
