"""Ego-motion compensation of camera / LiDAR pairs and per-point deskewing (numpy, no ROS).

A camera image (stamp ``t_img``) and a LiDAR scan (stamp ``t_scan``) are never captured at the same
instant: the car moves ``v * |t_img - t_scan|`` in between (0.3 m at 10 m/s and 30 ms). With the
vehicle's odometry (``odom -> base_link`` on ``/tf``, REP 105) the extrinsic for the pair is

    T_cam_lidar = T_cam_base @ T_base(t_img)_odom @ T_odom_base(t_scan) @ T_base_lidar

i.e. :meth:`TransformBuffer.lookup_transform_full(cam, t_img, lidar, t_scan, fixed_frame="odom")
<drive_segment_ros.tf_buffer.TransformBuffer.lookup_transform_full>` (tf2's two-time lookup).

A spinning LiDAR also moves during its own sweep (~0.1 s). When the driver gives each point its
time (``time`` / ``t`` / ``timestamp`` fields, see :mod:`drive_segment_ros.ros.point_time`),
:func:`deskew_points` moves each point from the LiDAR frame at its own time into the LiDAR frame at
the scan stamp, with one interpolated odometry pose per point:

    p(t_scan) = T_lidar_base @ T_base(t_scan)_odom @ T_odom_base(t_i) @ T_base_lidar @ p(t_i)

so ``T_cam_lidar(t_img, t_scan) @ p(t_scan)`` equals deskewing each point straight to the image
time, while the scan is deskewed once and shared by every camera paired with it. Without per-point
times the whole scan uses the pose at its stamp (one pose per scan).

:func:`ego_pose_from_compensated` inverts the formula: from a dataset's compensated ``lidar2cam``
(nuScenes ``calib.json``), the mountings and the ego pose at the LiDAR time, it recovers the ego pose
at the camera time (used by ``import-nuscenes`` to write ``/tf``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, List, Optional, Tuple

import numpy as np

from drive_segment_ros.geometry import invert_transform, validate_transform
from drive_segment_ros.tf_buffer import EdgeInfo, TransformBuffer
from drive_segment_ros.types import DriveSegmentError

log = logging.getLogger(__name__)


def _orthonormalize(T: np.ndarray) -> np.ndarray:
    U, _, Vt = np.linalg.svd(T[:3, :3])
    R = U @ Vt
    if np.linalg.det(R) < 0:  # pragma: no cover - validate_transform rejects reflections
        raise DriveSegmentError("transform has a reflection")
    out = T.copy()
    out[:3, :3] = R
    return out


def compensated_T_cam_lidar(buffer: Any, camera_frame: str, t_img_ns: int, lidar_frame: str, t_scan_ns: int,
                            fixed_frame: str = "odom", tolerance_ns: Optional[int] = None) -> np.ndarray:
    """(4, 4) float64 ego-motion compensated ``T_cam_lidar`` for one image / scan pair.

    ``T_cam_base @ T_base(t_img)_fixed @ T_fixed_base(t_scan) @ T_base_lidar`` looked up in ``buffer``
    (a :class:`~drive_segment_ros.tf_buffer.TransformBuffer`, with ``fixed_frame -> base_link`` on
    ``/tf`` and the mountings on ``/tf_static``); stamps in integer ns.

    Raises:
        TransformLookupError / ExtrapolationError (one line) when the frames are not connected or
        the odometry does not cover a stamp (beyond the buffer's tolerance).
    """
    return buffer.lookup_transform_full(camera_frame, int(t_img_ns), lidar_frame, int(t_scan_ns), fixed_frame,
                                        tolerance_ns=tolerance_ns)


def deskew_points(points: np.ndarray, point_times_ns: np.ndarray, ref_time_ns: int, buffer: Any, lidar_frame: str,
                  fixed_frame: str = "odom", tolerance_ns: Optional[int] = None) -> np.ndarray:
    """Move each LiDAR point from the LiDAR frame at its own time to the LiDAR frame at ``ref_time_ns``.

    Args:
        points: (N, 3+) float32/float64, x y z (m) in ``lidar_frame`` at each point's time; extra
            columns (intensity, ...) are copied unchanged.
        point_times_ns: (N,) int64 absolute stamps (ns) of the points.
        ref_time_ns: the time to deskew to (the scan header stamp).
        buffer: :class:`~drive_segment_ros.tf_buffer.TransformBuffer` with ``fixed_frame`` connected
            to ``lidar_frame`` through the dynamic odometry.

    Returns:
        (N, C) array of ``points``' dtype: ``p(ref) = T_lidar(ref)_fixed @ T_fixed_lidar(t_i) @ p(t_i)``.
        One pose per *distinct* time (Velodyne firings share times), interpolated (lerp + slerp).

    Raises:
        DriveSegmentError: shape mismatch; lookup errors as in :func:`compensated_T_cam_lidar`.
    """
    pts = np.asarray(points)
    times = np.asarray(point_times_ns, dtype=np.int64).reshape(-1)
    if pts.ndim != 2 or pts.shape[1] < 3 or times.shape[0] != pts.shape[0]:
        raise DriveSegmentError(f"deskew needs (N, 3+) points and (N,) times, got {pts.shape} and {times.shape}")
    if pts.shape[0] == 0:
        return pts.copy()
    uniq, inverse = np.unique(times, return_inverse=True)
    T_fixed_lidar = buffer.lookup_transforms(fixed_frame, lidar_frame, uniq, tolerance_ns=tolerance_ns)  # (U, 4, 4)
    T_lidar_fixed_ref = buffer.lookup_transform(lidar_frame, fixed_frame, int(ref_time_ns), tolerance_ns=tolerance_ns)
    M = T_lidar_fixed_ref[None] @ T_fixed_lidar  # (U, 4, 4): T_lidar(ref)_lidar(t_u)
    xyz = pts[:, :3].astype(np.float64)
    R = M[inverse, :3, :3]
    t = M[inverse, :3, 3]
    moved = np.einsum("nij,nj->ni", R, xyz) + t
    out = pts.copy()
    out[:, :3] = moved.astype(pts.dtype, copy=False)
    return out


def ego_pose_from_compensated(T_odom_base_scan: Any, T_base_lidar: Any, T_base_cam: Any, T_cam_lidar_compensated: Any) -> np.ndarray:
    """Ego pose at the camera time from a compensated extrinsic (inverse of the module formula).

    ``T_cam_lidar = T_base_cam^-1 @ T_odom_base(t_img)^-1 @ T_odom_base(t_scan) @ T_base_lidar`` gives
    ``T_odom_base(t_img) = T_odom_base(t_scan) @ T_base_lidar @ T_cam_lidar^-1 @ T_base_cam^-1``.

    Args (all (4, 4), rigid; float32-rounded rotations are re-orthonormalised):
        T_odom_base_scan: ego pose at the LiDAR time (nuScenes ``ego2global``).
        T_base_lidar: LiDAR mounting (``lidar2ego``); T_base_cam: camera mounting (``cam2ego``).
        T_cam_lidar_compensated: the dataset's compensated ``lidar2cam``.

    Returns:
        (4, 4) float64 ``T_odom_base`` at the camera time.

    Raises:
        DriveSegmentError: a non-rigid input.
    """
    E = _orthonormalize(validate_transform(T_odom_base_scan, "T_odom_base(t_scan)"))
    B = _orthonormalize(validate_transform(T_base_lidar, "T_base_lidar"))
    C = _orthonormalize(validate_transform(T_base_cam, "T_base_cam"))
    L = _orthonormalize(validate_transform(T_cam_lidar_compensated, "T_cam_lidar"))
    return _orthonormalize(E @ B @ invert_transform(L) @ invert_transform(C))


@dataclass
class PairMotion:
    """How far the ego moved between an image and its scan (for reports / ``inspect``).

    Attributes:
        dt_ms: ``t_img - t_scan`` in ms; translation_m: |ego translation| between the two stamps;
        rotation_deg: ego rotation angle between them.
    """

    dt_ms: float
    translation_m: float
    rotation_deg: float


def pair_motion(buffer: Any, t_img_ns: int, t_scan_ns: int, base_frame: str = "base_link", fixed_frame: str = "odom",
                tolerance_ns: Optional[int] = None) -> PairMotion:
    """Ego motion between the two stamps: ``T_base(t_img)_base(t_scan)`` from the odometry."""
    D = buffer.lookup_transform_full(base_frame, int(t_img_ns), base_frame, int(t_scan_ns), fixed_frame,
                                     tolerance_ns=tolerance_ns)
    ang = float(np.degrees(np.arccos(np.clip((np.trace(D[:3, :3]) - 1.0) / 2.0, -1.0, 1.0))))
    return PairMotion(dt_ms=(int(t_img_ns) - int(t_scan_ns)) / 1e6, translation_m=float(np.linalg.norm(D[:3, 3])),
                      rotation_deg=ang)


class EgoMotion:
    """``/tf`` + ``/tf_static`` of a drive in a :class:`~drive_segment_ros.tf_buffer.TransformBuffer`,
    answering per-pair motion of the LiDAR frame (used by the offline drive reader).

    The *fixed frame* is the root of the LiDAR frame's tree (``odom``, ``map`` or ``world``) when the
    chain from it to the LiDAR frame has a dynamic (``/tf``) edge with at least two samples: then ego
    motion is available. Any static extrinsic ``T_cam_lidar`` (from ``/tf_static`` or a calibration
    YAML) is compensated as ``T_cam_lidar @ T_lidar(t_img)_lidar(t_scan)``, which equals
    ``T_cam_base @ T_base(t_img)_odom @ T_odom_base(t_scan) @ T_base_lidar`` for a tree-given
    extrinsic.

    Args:
        cache_s: seconds of dynamic transforms kept behind the newest (bounded memory over long drives).
        tolerance_ms: how far outside the odometry samples a stamp may lie and hold the nearest pose.
    """

    def __init__(self, cache_s: float = 30.0, tolerance_ms: float = 50.0) -> None:
        self.tolerance_ns = int(round(float(tolerance_ms) * 1e6))
        self.buffer = TransformBuffer(cache_ns=int(float(cache_s) * 1e9), max_extrapolation_ns=self.tolerance_ns)
        self.n_dynamic = 0
        self.n_static = 0
        self.first_dynamic_ns: Optional[int] = None
        self.last_dynamic_ns: Optional[int] = None
        self.rejected = 0

    def add_tf_message(self, msg: Any, static: bool) -> None:
        """Add every valid transform of a ``tf2_msgs/TFMessage``; invalid ones are counted and skipped."""
        for ts in msg.transforms:
            try:
                ns = self.buffer.add_transform_stamped(ts, static=static)
            except DriveSegmentError as exc:
                self.rejected += 1
                if self.rejected <= 3:
                    log.warning("ignoring transform: %s", exc)
                continue
            if static:
                self.n_static += 1
            else:
                self.n_dynamic += 1
                self.first_dynamic_ns = ns if self.first_dynamic_ns is None else min(self.first_dynamic_ns, ns)
                self.last_dynamic_ns = ns if self.last_dynamic_ns is None else max(self.last_dynamic_ns, ns)

    def _moving_edges(self, frame: str) -> Tuple[List[str], List[EdgeInfo]]:
        """``(root path of frame, its moving edges)``: the path ``[frame, ..., root]`` (empty for an unknown
        frame) and the :class:`~drive_segment_ros.tf_buffer.EdgeInfo` of each dynamic, non-constant edge on it."""
        buf, frame = self.buffer, frame.lstrip("/")
        path = buf.root_path(frame) if frame in buf else []
        edges = [buf.edge(child) for child in path[:-1]]
        return path, [e for e in edges if e is not None and e.moving]

    def fixed_frame(self, lidar_frame: str) -> Optional[str]:
        """The root frame above ``lidar_frame`` when odometry moves it, else None."""
        path, moving = self._moving_edges(lidar_frame)
        if not moving:
            return None
        if any(e.n_samples < 2 for e in moving):
            return None
        return path[-1]

    def available(self, lidar_frame: str) -> bool:
        """True when the drive's ``/tf`` moves the LiDAR frame relative to a fixed frame."""
        return self.fixed_frame(lidar_frame) is not None

    def covered_until(self, lidar_frame: str) -> Optional[int]:
        """Newest stamp (ns) every moving edge above ``lidar_frame`` has (None without odometry)."""
        _, moving = self._moving_edges(lidar_frame)
        ends = [e.last_ns for e in moving if e.last_ns is not None]
        return min(ends) if ends else None

    def describe(self, lidar_frame: str) -> str:
        """One line for ``inspect``: the odometry chain, its rate and time span, or why there is none."""
        fixed = self.fixed_frame(lidar_frame)
        if fixed is None:
            if self.n_dynamic:
                return f"none: /tf has {self.n_dynamic} transforms but none moves {lidar_frame!r} against a fixed frame"
            return "none: no /tf odometry in the bag (one static extrinsic per camera)"
        _, moving = self._moving_edges(lidar_frame)
        parts = []
        for e in moving:
            span = (e.last_ns - e.first_ns) / 1e9 if e.n_samples > 1 else 0.0
            rate = (e.n_samples - 1) / span if span > 0 else 0.0
            parts.append(f"{e.parent} -> {e.child} ({e.n_samples} poses over {span:.1f} s, {rate:.1f} Hz)")
        return f"/tf odometry, fixed frame {fixed!r}: " + ", ".join(parts)

    def lidar_motion(self, lidar_frame: str, t_img_ns: int, t_scan_ns: int) -> np.ndarray:
        """(4, 4) ``T_lidar(t_img)_lidar(t_scan)``: LiDAR-frame points at the scan time -> the LiDAR frame at
        the image time, through the fixed frame.

        Raises:
            DriveSegmentError: no odometry for ``lidar_frame``; ExtrapolationError beyond the tolerance."""
        fixed = self.fixed_frame(lidar_frame)
        if fixed is None:
            raise DriveSegmentError(f"no /tf odometry moves {lidar_frame!r}")
        return self.buffer.lookup_transform_full(lidar_frame, int(t_img_ns), lidar_frame, int(t_scan_ns), fixed)

    def deskew(self, points: np.ndarray, point_times_ns: np.ndarray, t_scan_ns: int, lidar_frame: str) -> np.ndarray:
        """:func:`deskew_points` to the scan stamp through this drive's fixed frame."""
        fixed = self.fixed_frame(lidar_frame)
        if fixed is None:
            raise DriveSegmentError(f"no /tf odometry moves {lidar_frame!r}")
        return deskew_points(points, point_times_ns, t_scan_ns, self.buffer, lidar_frame, fixed_frame=fixed)
