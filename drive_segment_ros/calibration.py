"""Calibration: the TF tree of ``/tf_static``, calibration YAML (no ROS imports, no message building).

* ``tf2_msgs/TFMessage`` of ``geometry_msgs/TransformStamped``: ``header.frame_id`` is the parent,
  ``child_frame_id`` the child; the transform maps child-frame points into the parent frame, i.e.
  it is ``T_parent_child`` (REP 105 / tf2 convention). Quaternions are ``(x, y, z, w)``, converted
  with :class:`scipy.spatial.transform.Rotation` (scalar-last). Messages are read by duck typing
  (rosbags or rclpy alike); every transform is checked by :func:`.geometry.validate_transform`.
* The calibration YAML (``config/calibration_example.yaml``) gives ``T_cam_lidar`` per camera for
  bags without ``/tf_static``, plus optional ``K`` / ``D`` overrides.

``sensor_msgs/CameraInfo`` <-> :class:`~drive_segment_ros.types.CameraModel` and building
``TransformStamped`` messages live in :mod:`drive_segment_ros.ros.camera_info`.
"""
from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Union

import numpy as np

from drive_segment_ros.config import load_yaml_mapping
from drive_segment_ros.geometry import invert_transform, quaternion_to_matrix, validate_transform
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


class TransformTree:
    """Static transform graph built from ``/tf_static`` (and latest ``/tf``) messages.

    Edges are stored as ``T_parent_child``; :meth:`lookup` walks the graph (breadth first) in
    either direction, so ``lookup("camera_optical", "velo_link")`` works whether both frames hang
    off ``base_link`` or one is the parent of the other. Dynamic ``/tf`` edges keep their latest
    value (no interpolation; fine for sensor extrinsics, not for odometry).
    """

    def __init__(self) -> None:
        self._edges: Dict[str, Dict[str, np.ndarray]] = {}
        self._parents: Dict[str, str] = {}

    def add(self, T_parent_child: np.ndarray, parent: str, child: str) -> None:
        """Add / replace the edge ``parent -> child`` (``T_parent_child`` 4x4 float64, child points into parent).

        Raises:
            DriveSegmentError: invalid matrix, empty or identical frame names.
        """
        parent, child = str(parent).lstrip("/"), str(child).lstrip("/")
        if not parent or not child or parent == child:
            raise DriveSegmentError(f"transform needs two different non-empty frames, got {parent!r} -> {child!r}")
        T = validate_transform(T_parent_child, f"transform {parent} -> {child}")
        old = self._parents.get(child)
        if old is not None and old != parent:
            self._edges[old].pop(child, None)
            self._edges[child].pop(old, None)
        self._parents[child] = parent
        self._edges.setdefault(parent, {})[child] = T
        self._edges.setdefault(child, {})[parent] = invert_transform(T)

    def add_transform_stamped(self, ts: Any) -> None:
        """Add one ``geometry_msgs/TransformStamped`` (parent = ``header.frame_id``, child = ``child_frame_id``).

        Raises:
            DriveSegmentError: as :meth:`add` (invalid or mirrored transform, bad frame names).
        """
        self.add(transform_to_matrix(ts.transform), ts.header.frame_id, ts.child_frame_id)

    def add_tf_message(self, msg: Any) -> None:
        """Add every transform of a ``tf2_msgs/TFMessage``. Raises DriveSegmentError as :meth:`add`."""
        for ts in msg.transforms:
            self.add_transform_stamped(ts)

    @classmethod
    def from_messages(cls, messages: Iterable[Any]) -> "TransformTree":
        """Tree from an iterable of TFMessage messages."""
        tree = cls()
        for msg in messages:
            tree.add_tf_message(msg)
        return tree

    @property
    def frames(self) -> List[str]:
        """All frame names, sorted."""
        return sorted(self._edges)

    def __contains__(self, frame: str) -> bool:
        return str(frame).lstrip("/") in self._edges

    def can_transform(self, target_frame: str, source_frame: str) -> bool:
        """True when :meth:`lookup` would succeed."""
        try:
            self.lookup(target_frame, source_frame)
        except DriveSegmentError:
            return False
        return True

    def lookup(self, target_frame: str, source_frame: str) -> np.ndarray:
        """``T_target_source`` (4, 4) float64: maps points in ``source_frame`` into ``target_frame``.

        Raises:
            DriveSegmentError: unknown frame or no path between the frames (lists the known frames).
        """
        target, source = str(target_frame).lstrip("/"), str(source_frame).lstrip("/")
        if target == source:
            return np.eye(4)
        for f in (target, source):
            if f not in self._edges:
                raise DriveSegmentError(f"no transform from {source!r} to {target!r}: frame {f!r} unknown (known: {self.frames})")
        # BFS from target; T accumulates T_target_node
        seen = {target: np.eye(4)}
        queue = deque([target])
        while queue:
            node = queue.popleft()
            for nxt, T_node_nxt in self._edges[node].items():
                if nxt in seen:
                    continue
                seen[nxt] = seen[node] @ T_node_nxt
                if nxt == source:
                    return seen[nxt]
                queue.append(nxt)
        raise DriveSegmentError(f"no transform path from {source!r} to {target!r} in the TF tree (frames: {self.frames})")


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
