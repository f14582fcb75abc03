"""Figures of the offline pipeline: LiDAR proposals drawn over the camera image.

RGB ``uint8`` (H, W, 3) in and out, like :mod:`drive_segment_ros.visualization` whose palette and
checks it reuses.
"""
from __future__ import annotations

from typing import Collection, Sequence, Union

import numpy as np

from drive_segment_ros.visualization import _check_label_map, _check_rgb, palette

__all__ = ["draw_proposals"]


def _ground_flags(is_ground_id: Union[np.ndarray, Collection[int], None], n: int) -> np.ndarray:
    flags = np.zeros(n, dtype=bool)
    if is_ground_id is None:
        return flags
    if isinstance(is_ground_id, np.ndarray) and is_ground_id.dtype == bool:
        m = min(n, is_ground_id.size)
        flags[:m] = is_ground_id[:m]
        return flags
    ids = np.fromiter((int(i) for i in is_ground_id), dtype=np.int64)
    ids = ids[(ids >= 0) & (ids < n)]
    flags[ids] = True
    return flags


def draw_proposals(
    rgb: np.ndarray,
    segment_map: np.ndarray,
    is_ground_id: Union[np.ndarray, Collection[int], None] = None,
    alpha: float = 0.5,
    ground_color: Sequence[int] = (255, 0, 255),
    ground_alpha: float = 0.3,
    seed: int = 0,
    boundaries: bool = True,
) -> np.ndarray:
    """Draw LiDAR proposals projected to the image.

    Object segments get distinct colours (``palette(max_id + 1, seed)``) blended with ``alpha``;
    every ground id (``is_ground_id``: (n,) bool indexed by segment id, or a set of ids) is
    shaded in the one translucent ``ground_color`` with ``ground_alpha``; unlabelled pixels
    (< 0) are untouched; with ``boundaries``, pixels where the object id changes to another id
    (4-neighbourhood) are drawn white.

    Args: rgb (H, W, 3) uint8 RGB; segment_map (H, W) int, -1 = unlabelled.
    Returns a new (H, W, 3) uint8 image. Raises DriveSegmentError on mismatched shapes.
    """
    seg = _check_label_map(segment_map)
    rgb = _check_rgb(rgb, seg.shape)
    n = int(seg.max()) + 1 if seg.size else 0
    if n <= 0:
        return rgb.copy()
    ground = _ground_flags(is_ground_id, n)
    labelled = seg >= 0
    on_ground = np.zeros_like(labelled)
    on_ground[labelled] = ground[seg[labelled]]
    objects = labelled & ~on_ground
    out = rgb.copy()
    pal = palette(n, seed)
    f = rgb.astype(np.float32)
    out[objects] = np.clip(np.rint((1 - alpha) * f[objects] + alpha * pal[seg[objects]]), 0, 255).astype(np.uint8)
    gc = np.asarray(ground_color, dtype=np.float32)
    out[on_ground] = np.clip(np.rint((1 - ground_alpha) * f[on_ground] + ground_alpha * gc), 0, 255).astype(np.uint8)
    if boundaries:
        obj_id = np.where(objects, seg, -1)
        edge = np.zeros_like(objects)
        dv = obj_id[1:, :] != obj_id[:-1, :]
        dh = obj_id[:, 1:] != obj_id[:, :-1]
        edge[1:, :] |= dv
        edge[:-1, :] |= dv
        edge[:, 1:] |= dh
        edge[:, :-1] |= dh
        out[edge & objects] = 255
    return out
