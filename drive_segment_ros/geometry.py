"""Rigid-transform maths shared by calibration, projection and the nodes (no ROS imports).

Conventions (``docs/ARCHITECTURE.md``, REP 103 / REP 105): ``T_a_b`` is a (4, 4) float64
homogeneous transform mapping points in frame ``b`` into frame ``a`` (``p_a = T_a_b @ p_b``),
translation in metres; quaternions are ``(x, y, z, w)`` (scalar last, as
``geometry_msgs/Quaternion`` and :class:`scipy.spatial.transform.Rotation`).

:func:`validate_transform` is the ONE check every transform entering the package goes through
(calibration YAML, ``/tf_static``, the ``T_cam_lidar`` node parameter, :mod:`.projection`).
"""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np
from scipy.spatial.transform import Rotation

from drive_segment_ros.types import DriveSegmentError

__all__ = ["validate_transform", "invert_transform", "quaternion_to_matrix", "matrix_to_quaternion"]

#: Tolerance on ``R R^T = I`` of a rotation part (calibration files carry ~6 significant digits).
ORTHONORMAL_ATOL = 1e-3


def validate_transform(T: Any, what: str = "transform") -> np.ndarray:
    """Check and return a rigid transform as a (4, 4) float64 array.

    Args:
        T: a (4, 4) matrix, 16 numbers (row-major) or a (3, 4) ``[R | t]`` (last row added).
        what: what the transform is (e.g. ``"parameter T_cam_lidar"``), used in the error message.

    Returns:
        (4, 4) float64 (a new array), metres; last row ``[0, 0, 0, 1]``.

    Raises:
        DriveSegmentError: wrong shape; non-finite values; last row not ``[0, 0, 0, 1]``; a
        rotation part that is not orthonormal (``|R R^T - I| > 1e-3``) or is a reflection
        (``det R < 0``: a mirrored frame, e.g. a left-handed calibration).
    """
    try:
        M = np.array(T, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DriveSegmentError(f"{what}: expected a 4x4 matrix of numbers, got {type(T).__name__}") from exc
    if M.size == 16:
        M = M.reshape(4, 4)
    elif M.shape == (3, 4):
        M = np.vstack([M, [0, 0, 0, 1]])
    if M.shape != (4, 4):
        raise DriveSegmentError(f"{what}: expected a 4x4 matrix (or 16 / 3x4 numbers), got shape {np.shape(M)}")
    if not np.all(np.isfinite(M)) or not np.allclose(M[3], [0, 0, 0, 1]):
        raise DriveSegmentError(f"{what}: must be finite with last row [0, 0, 0, 1]")
    R = M[:3, :3]
    if not np.allclose(R @ R.T, np.eye(3), atol=ORTHONORMAL_ATOL) or np.linalg.det(R) < 0:
        raise DriveSegmentError(f"{what}: rotation part is not a proper rotation (R R^T != I or det < 0)")
    return M


def invert_transform(T: np.ndarray) -> np.ndarray:
    """Inverse of rigid transforms: ``[R^T | -R^T t]``.

    Args:
        T: (4, 4) or stacked (..., 4, 4) rigid transforms (not checked; see :func:`validate_transform`).

    Returns:
        float64 array of ``T``'s shape (a new array), last row ``[0, 0, 0, 1]``.
    """
    T = np.asarray(T, dtype=np.float64)
    Rt = np.swapaxes(T[..., :3, :3], -1, -2)
    out = np.zeros_like(T)
    out[..., :3, :3] = Rt
    out[..., :3, 3] = -np.einsum("...ij,...j->...i", Rt, T[..., :3, 3])
    out[..., 3, 3] = 1.0
    return out


def quaternion_to_matrix(q_xyzw: Iterable[float]) -> np.ndarray:
    """(3, 3) float64 rotation of a quaternion ``(x, y, z, w)`` (normalized; scipy Rotation).

    Raises:
        DriveSegmentError: zero-norm or non-finite quaternion.
    """
    q = np.asarray(list(q_xyzw), dtype=np.float64)
    if q.shape != (4,) or not np.all(np.isfinite(q)) or np.linalg.norm(q) < 1e-12:
        raise DriveSegmentError(f"invalid quaternion (x, y, z, w) {q.tolist()}")
    return Rotation.from_quat(q).as_matrix()


def matrix_to_quaternion(R: np.ndarray) -> np.ndarray:
    """(4,) float64 quaternion ``(x, y, z, w)`` of a (3, 3) rotation (scipy Rotation)."""
    return Rotation.from_matrix(np.asarray(R, dtype=np.float64)).as_quat()
