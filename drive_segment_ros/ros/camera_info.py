"""``sensor_msgs/CameraInfo`` <-> :class:`~drive_segment_ros.types.CameraModel`, ``TransformStamped`` building.

* ``sensor_msgs/CameraInfo`` (ros2/common_interfaces): ``k`` row-major 3x3 intrinsics (pixels),
  ``d`` distortion (``plumb_bob``: k1 k2 p1 p2 k3), ``r`` rectification, ``p`` 3x4 projection;
  the header frame is the camera optical frame (REP 103: z forward, x right, y down).
* ``geometry_msgs/TransformStamped``: ``header.frame_id`` is the parent, ``child_frame_id`` the
  child, the transform is ``T_parent_child`` (REP 105 / tf2); quaternion ``(x, y, z, w)``.

Messages are read by duck typing (rosbags dataclasses or rclpy classes alike) and built with a
types namespace of :mod:`.msgtypes`. Reading TF messages into a transform tree is
:class:`drive_segment_ros.tf_buffer.TransformBuffer`.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import numpy as np

from drive_segment_ros.geometry import matrix_to_quaternion, validate_transform
from drive_segment_ros.ros.msgtypes import make_header, types_for
from drive_segment_ros.types import CameraModel, DriveSegmentError

__all__ = ["camera_model_from_info", "camera_info_fields", "camera_info_msg", "transform_stamped"]


def _field(msg: Any, where: str, *names: str) -> Any:
    """The first attribute of ``msg`` among ``names`` (ROS 2 lower-case, then ROS 1 upper-case names)."""
    for n in names:
        if hasattr(msg, n):
            return getattr(msg, n)
    raise DriveSegmentError(f"{where} has none of the fields {list(names)}")


def camera_model_from_info(msg: Any, topic: str = "", image_size: Optional[Tuple[int, int]] = None) -> CameraModel:
    """Build a :class:`CameraModel` from a ``sensor_msgs/CameraInfo`` (rosbags or rclpy).

    Args:
        msg: CameraInfo; ``k`` (9 floats, pixels), ``d``, ``width``, ``height``, ``header.frame_id``
            (ROS 1 ``K`` / ``D`` field names are accepted too).
        topic: topic name, used in error messages.
        image_size: optional ``(width, height)`` of the images on the paired image topic; must match.

    Returns:
        CameraModel with K (3, 3) float64, D (n,) float64, size, ``frame_id`` = the header frame.

    Raises:
        DriveSegmentError: K not finite / fx or fy <= 0 (uncalibrated all-zero K), non-positive
        size, or a size different from ``image_size`` — the message names ``topic``.
    """
    where = f"CameraInfo on {topic!r}" if topic else "CameraInfo"
    K = np.asarray(_field(msg, where, "k", "K"), dtype=np.float64).reshape(-1)
    if K.size != 9 or not np.all(np.isfinite(K)):
        raise DriveSegmentError(f"{where}: K must be 9 finite numbers, got {K.tolist()}")
    K = K.reshape(3, 3)
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise DriveSegmentError(f"{where}: fx, fy must be > 0 (is the camera calibrated?), got fx={K[0, 0]}, fy={K[1, 1]}")
    width, height = int(msg.width), int(msg.height)
    if width <= 0 or height <= 0:
        raise DriveSegmentError(f"{where}: image size must be positive, got {width}x{height}")
    if image_size is not None and (int(image_size[0]), int(image_size[1])) != (width, height):
        raise DriveSegmentError(
            f"{where}: size {width}x{height} does not match the image size {int(image_size[0])}x{int(image_size[1])}"
        )
    D = np.asarray(_field(msg, where, "d", "D"), dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(D)):
        raise DriveSegmentError(f"{where}: distortion D must be finite, got {D.tolist()}")
    model = str(msg.distortion_model) or "plumb_bob"
    return CameraModel(K=K, D=D, width=width, height=height, frame_id=str(msg.header.frame_id), distortion_model=model)


def camera_info_fields(camera: CameraModel, P: Optional[np.ndarray] = None) -> Dict[str, Any]:
    """Field values to fill a ``sensor_msgs/CameraInfo`` from a :class:`CameraModel`.

    Args:
        camera: the model.
        P: optional 3x4 (or 4x4, top 3 rows used) projection; default ``[K | 0]``.

    Returns:
        dict with ``height, width, distortion_model, d (n,), k (9,), r (9,) identity, p (12,)``
        (float64 numpy arrays), ``binning_x = binning_y = 0``. Use with ``header`` and ``roi``,
        or call :func:`camera_info_msg`.

    Raises:
        DriveSegmentError: P of the wrong shape.
    """
    if P is None:
        P = np.hstack([camera.K, np.zeros((3, 1))])
    P = np.asarray(P, dtype=np.float64)
    if P.shape == (4, 4):
        P = P[:3]
    if P.shape != (3, 4):
        raise DriveSegmentError(f"camera {camera.frame_id!r}: projection P must be 3x4, got {P.shape}")
    return {
        "height": int(camera.height),
        "width": int(camera.width),
        "distortion_model": camera.distortion_model,
        "d": np.asarray(camera.D, dtype=np.float64).copy(),
        "k": camera.K.reshape(-1).copy(),
        "r": np.eye(3).reshape(-1),
        "p": P.reshape(-1).copy(),
        "binning_x": 0,
        "binning_y": 0,
    }


def camera_info_msg(camera: CameraModel, stamp_ns: int, types: Any = None, P: Optional[np.ndarray] = None) -> Any:
    """A complete ``sensor_msgs/CameraInfo`` for ``camera``.

    Args:
        camera: the model; the header frame is ``camera.frame_id`` (optical frame).
        stamp_ns: header stamp, integer ns since the epoch.
        types: :func:`~drive_segment_ros.ros.msgtypes.rosbags_types` / ``rclpy_types()`` namespace
            (or ``"rosbags"`` / ``"rclpy"``); default rosbags.
        P: optional projection, as in :func:`camera_info_fields`.

    Returns:
        CameraInfo of the requested kind (fields of :func:`camera_info_fields`, zero ``roi``).

    Raises:
        DriveSegmentError: P of the wrong shape, negative stamp, unknown ``types``.
    """
    types = types_for(types if types is not None else "rosbags")
    roi = types.RegionOfInterest(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return types.CameraInfo(header=make_header(camera.frame_id, stamp_ns, types), roi=roi, **camera_info_fields(camera, P))


def transform_stamped(T_parent_child: np.ndarray, parent: str, child: str, stamp_ns: int, types: Any = None) -> Any:
    """``geometry_msgs/TransformStamped`` for ``T_parent_child``.

    Args:
        T_parent_child: (4, 4) rigid transform mapping ``child`` points into ``parent`` (metres).
        parent: ``header.frame_id``; child: ``child_frame_id``.
        stamp_ns: header stamp, integer ns.
        types: rosbags / rclpy types namespace (or ``"rosbags"`` / ``"rclpy"``); default rosbags.

    Returns:
        TransformStamped (translation metres, rotation quaternion ``x, y, z, w``).

    Raises:
        DriveSegmentError: not a rigid transform (see :func:`~drive_segment_ros.geometry.validate_transform`).
    """
    types = types_for(types if types is not None else "rosbags")
    T = validate_transform(T_parent_child, f"transform {parent} -> {child}")
    q = matrix_to_quaternion(T[:3, :3])
    return types.TransformStamped(
        header=make_header(parent, stamp_ns, types),
        child_frame_id=child,
        transform=types.Transform(
            translation=types.Vector3(x=float(T[0, 3]), y=float(T[1, 3]), z=float(T[2, 3])),
            rotation=types.Quaternion(x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3])),
        ),
    )
