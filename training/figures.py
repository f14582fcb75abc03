"""Figures of the offline pipeline: LiDAR proposals drawn over the camera image, and how they move
with ego-motion compensation on vs off (:func:`ego_motion_figure`).

RGB ``uint8`` (H, W, 3) in and out, like :mod:`drive_segment_ros.visualization` whose palette and
checks it reuses.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Collection, Dict, List, Sequence, Tuple, Union

import cv2
import numpy as np

from drive_segment_ros.projection import project_points
from drive_segment_ros.proposals import segment_scan
from drive_segment_ros.segment_map import compute_segment_map
from drive_segment_ros.types import DriveFrame, DriveSegmentError
from drive_segment_ros.visualization import _check_label_map, _check_rgb, palette
from drive_segment_training.drives import DriveReader

__all__ = ["draw_proposals", "ego_motion_figure", "write_ego_motion_figures"]


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


def ego_motion_figure(frame: DriveFrame, T_static: np.ndarray, proposal_config: Any = None, projection_config: Any = None,
                      proposals: Any = None) -> Tuple[np.ndarray, Dict[str, Any]]:
    """How the projected LiDAR segments move with ego-motion compensation on vs off, on one frame.

    Args:
        frame: a :class:`~drive_segment_ros.types.DriveFrame` read with ego motion on (its
            ``T_cam_lidar`` is the compensated extrinsic for the pair's two stamps).
        T_static: (4, 4) the uncompensated extrinsic (``DriveReader.T_cam_lidar(topic)``).
        proposal_config / projection_config: as :func:`drive_segment_ros.segment_map.compute_segment_map`.
        proposals: the scan's ``segment_scan`` result when already computed.

    Returns:
        ``(figure, stats)``: figure (H, W, 3) uint8 RGB, the camera image with the object-segment
        boundaries of both segment maps (red: compensation off, green: on, yellow: both) and a caption;
        stats dict: ``dt_ms`` (scan - image stamp), ``shift_px_median`` / ``shift_px_max`` (pixel shift
        of the points visible with both extrinsics), ``changed_pixels`` (fraction of labelled pixels
        whose segment id differs), ``ego_translation_m``.

    Raises:
        DriveSegmentError: as :func:`~drive_segment_ros.segment_map.compute_segment_map`.
    """
    T_static = np.asarray(T_static, dtype=np.float64)
    seg_on, ground_on, props = compute_segment_map(frame, proposal_config, projection_config, proposals=proposals)
    off_frame = dataclasses.replace(frame, T_cam_lidar=T_static)
    seg_off, ground_off, _ = compute_segment_map(off_frame, proposal_config, projection_config, proposals=props)

    def edges(seg, ground):
        n = int(seg.max()) + 1 if seg.size and seg.max() >= 0 else 0
        flags = _ground_flags(ground, n)  # object segments only: ground cells would draw a grid
        obj = np.where((seg >= 0) & ~flags[np.clip(seg, 0, max(n - 1, 0))], seg, -1) if n else np.full(seg.shape, -1)
        e = np.zeros(seg.shape, bool)
        dv = obj[1:, :] != obj[:-1, :]
        dh = obj[:, 1:] != obj[:, :-1]
        e[1:, :] |= dv
        e[:-1, :] |= dv
        e[:, 1:] |= dh
        e[:, :-1] |= dh
        e &= obj >= 0  # boundary pixels on the object side
        return cv2.dilate(e.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0  # 3 px lines, visible when scaled down

    e_on, e_off = edges(seg_on, ground_on), edges(seg_off, ground_off)
    out = (np.asarray(frame.image, dtype=np.float32) * 0.6).astype(np.uint8)
    out[e_off & ~e_on] = (255, 40, 40)
    out[e_on & ~e_off] = (40, 255, 40)
    out[e_on & e_off] = (255, 255, 0)
    p_on = project_points(frame.points, frame.camera, frame.T_cam_lidar)
    p_off = project_points(frame.points, frame.camera, T_static)
    both = p_on.valid & p_off.valid
    shift = np.linalg.norm(p_on.uv[both].astype(np.float64) - p_off.uv[both], axis=1)
    labelled = (seg_on >= 0) | (seg_off >= 0)
    changed = float(np.mean(seg_on[labelled] != seg_off[labelled])) if labelled.any() else 0.0
    D = np.linalg.inv(T_static) @ frame.T_cam_lidar
    stats = {
        "image_topic": frame.image_topic,
        "dt_ms": frame.dt_ns / 1e6,
        "shift_px_median": float(np.median(shift)) if shift.size else 0.0,
        "shift_px_max": float(shift.max()) if shift.size else 0.0,
        "changed_pixels": changed,
        "ego_translation_m": float(np.linalg.norm(D[:3, 3])),
    }
    scale = max(0.5, out.shape[1] / 1600.0)
    text = (f"{frame.image_topic}  scan-image dt {stats['dt_ms']:+.1f} ms, ego moved {stats['ego_translation_m']:.2f} m: "
            f"points shift median {stats['shift_px_median']:.1f} px, max {stats['shift_px_max']:.1f} px")
    cv2.putText(out, text, (10, int(30 * scale)), cv2.FONT_HERSHEY_SIMPLEX, 0.7 * scale, (255, 255, 255), max(1, int(2 * scale)), cv2.LINE_AA)
    cv2.putText(out, "red: compensation off   green: on   yellow: both", (10, int(62 * scale)), cv2.FONT_HERSHEY_SIMPLEX,
                0.7 * scale, (255, 255, 255), max(1, int(2 * scale)), cv2.LINE_AA)
    return out, stats


def write_ego_motion_figures(bag: Any, out_dir: Any, max_figures: int = 2, scale: float = 0.6,
                             proposal_config: Any = None, projection_config: Any = None) -> List[Dict[str, Any]]:
    """:func:`ego_motion_figure` for every camera / scan pair of a bag with odometry; PNGs for the pairs
    with the largest |scan - image| stamp difference.

    Args:
        bag: a bag whose ``/tf`` has odometry (e.g. ``import-nuscenes`` output).
        out_dir: where ``ego_motion_<camera>.png`` are written (created).
        max_figures: how many figures to write (largest |dt| first); every pair gets a stats row.
        scale: resize factor of the written PNGs.

    Returns:
        one stats dict per pair (see :func:`ego_motion_figure`), sorted by |dt| descending; the
        pairs with a figure have ``"figure"`` = its path.

    Raises:
        DriveSegmentError: the bag has no usable odometry (``ego_motion="on"``), reader errors.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    reader = DriveReader(bag, progress=False, ego_motion="on")
    rows: List[Dict[str, Any]] = []
    cache: Dict[Any, Any] = {}  # one segment_scan per scan, shared by the cameras paired with it
    frames = sorted(reader, key=lambda f: -abs(f.dt_ns))
    for i, frame in enumerate(frames):
        key = (frame.lidar_stamp_ns, len(frame.points))
        if key not in cache:
            cache = {key: segment_scan(frame.points, proposal_config, rings=frame.rings)}
        fig, st = ego_motion_figure(frame, reader.T_cam_lidar(frame.image_topic), proposal_config, projection_config,
                                    proposals=cache[key])
        if i < max_figures:
            name = out / f"ego_motion_{frame.image_topic.strip('/').replace('/', '_')}.png"
            small = cv2.resize(fig, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale != 1 else fig
            if not cv2.imwrite(str(name), small[:, :, ::-1]):
                raise DriveSegmentError(f"cannot write {name}")
            st["figure"] = str(name)
        rows.append(st)
    return rows
