"""Calibration: ``geometry_msgs/Transform`` -> matrix, calibration YAML (no ROS imports, no message building).

* ``geometry_msgs/TransformStamped``: ``header.frame_id`` is the parent, ``child_frame_id`` the
  child; the transform maps child-frame points into the parent frame, i.e. it is ``T_parent_child``
  (REP 105 / tf2 convention). Quaternions are ``(x, y, z, w)``, converted with
  :class:`scipy.spatial.transform.Rotation` (scalar-last). Messages are read by duck typing (rosbags
  or rclpy alike). The transform tree that ``/tf_static`` and ``/tf`` fill (nodes and the offline
  drive reader alike) is :class:`drive_segment_ros.tf_buffer.TransformBuffer`.
* The calibration YAML (``config/calibration_example.yaml``) gives ``T_cam_lidar`` per camera for
  bags without ``/tf_static``, plus optional ``K`` / ``D`` overrides.

``sensor_msgs/CameraInfo`` <-> :class:`~drive_segment_ros.types.CameraModel` and building
``TransformStamped`` messages live in :mod:`drive_segment_ros.ros.camera_info`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Union

import numpy as np

from drive_segment_ros.config import load_yaml_mapping
from drive_segment_ros.geometry import quaternion_to_matrix, validate_transform
from drive_segment_ros.types import CameraModel, DriveSegmentError

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- transforms
def transform_to_matrix(transform: Any) -> np.ndarray:
    """(4, 4) float64 ``T_parent_child`` of a ``geometry_msgs/Transform`` (rosbags or rclpy).

    Args:
        transform: ``translation`` (x, y, z metres) and ``rotation`` (quaternion x, y, z, w).

    Raises:
        DriveSegmentError: zero-norm or non-finite quaternion.
    """
    t, q = transform.translation, transform.rotation
    T = np.eye(4)
    T[:3, :3] = quaternion_to_matrix((q.x, q.y, q.z, q.w))
    T[:3, 3] = (t.x, t.y, t.z)
    return T


# --------------------------------------------------------------------------- YAML
@dataclass
class CameraCalibration:
    """One camera of a calibration YAML: ``T_cam_lidar`` (4, 4) float64, optional ``K`` (3, 3), ``D`` (n,), size."""

    T_cam_lidar: np.ndarray
    K: Optional[np.ndarray] = None
    D: Optional[np.ndarray] = None
    width: Optional[int] = None
    height: Optional[int] = None

    def apply(self, camera: CameraModel) -> CameraModel:
        """``camera`` with K / D / size replaced where this calibration overrides them."""
        return CameraModel(
            K=self.K if self.K is not None else camera.K,
            D=self.D if self.D is not None else camera.D,
            width=self.width or camera.width,
            height=self.height or camera.height,
            frame_id=camera.frame_id,
            distortion_model=camera.distortion_model,
        )


@dataclass
class Calibration:
    """Calibration YAML contents: ``lidar_frame`` (optional) and cameras keyed by optical frame_id or image topic."""

    cameras: Dict[str, CameraCalibration] = field(default_factory=dict)
    lidar_frame: Optional[str] = None
    source: str = ""

    def for_camera(self, frame_id: str = "", topic: str = "") -> Optional[CameraCalibration]:
        """The entry for a camera, looked up by image topic first, then by optical frame_id."""
        for key in (topic, topic.rstrip("/"), str(frame_id).lstrip("/")):
            if key and key in self.cameras:
                return self.cameras[key]
        return None


def load_calibration_yaml(path: Union[str, Path]) -> Calibration:
    """Load a calibration YAML (format: ``config/calibration_example.yaml``).

    Returns:
        :class:`Calibration` with validated ``T_cam_lidar`` (rigid 4x4), optional ``K`` (3x3,
        fx, fy > 0), ``D``, ``width``/``height`` per camera.

    Raises:
        DriveSegmentError: missing file, invalid YAML, no ``cameras`` mapping, wrong-shape matrices.
    """
    path = Path(path)
    data = load_yaml_mapping(path, "calibration file")
    if not isinstance(data, dict) or not isinstance(data.get("cameras"), dict) or not data["cameras"]:
        raise DriveSegmentError(f"calibration file {str(path)!r} needs a non-empty 'cameras' mapping")
    cams: Dict[str, CameraCalibration] = {}
    for name, entry in data["cameras"].items():
        where = f"{path.name}: camera {name!r}"
        if not isinstance(entry, dict) or "T_cam_lidar" not in entry:
            raise DriveSegmentError(f"{where}: needs a 'T_cam_lidar' 4x4 matrix")
        T = validate_transform(entry["T_cam_lidar"], f"{where} T_cam_lidar")
        K = None
        if entry.get("K") is not None:
            K = np.asarray(entry["K"], dtype=np.float64)
            if K.size != 9:
                raise DriveSegmentError(f"{where}: K must be 3x3 (9 numbers), got shape {K.shape}")
            K = K.reshape(3, 3)
            if not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
                raise DriveSegmentError(f"{where}: K must be finite with fx, fy > 0")
        D = None if entry.get("D") is None else np.asarray(entry["D"], dtype=np.float64).reshape(-1)
        if D is not None and D.size not in (0, 4, 5, 8, 12, 14):
            raise DriveSegmentError(f"{where}: D must have 4, 5, 8, 12 or 14 coefficients, got {D.size}")
        cams[str(name)] = CameraCalibration(
            T_cam_lidar=T, K=K, D=D,
            width=int(entry["width"]) if entry.get("width") else None,
            height=int(entry["height"]) if entry.get("height") else None,
        )
    lidar = data.get("lidar_frame")
    return Calibration(cameras=cams, lidar_frame=str(lidar) if lidar else None, source=str(path))
