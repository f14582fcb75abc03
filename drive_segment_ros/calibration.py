"""Calibration: CameraInfo <-> :class:`CameraModel`, the TF tree of ``/tf_static``, calibration YAML.

* ``sensor_msgs/CameraInfo`` (ros2/common_interfaces): ``k`` row-major 3x3 intrinsics, ``d``
  distortion (``plumb_bob``: k1 k2 p1 p2 k3), ``r`` rectification, ``p`` 3x4 projection.
* ``tf2_msgs/TFMessage`` of ``geometry_msgs/TransformStamped``: ``header.frame_id`` is the parent,
  ``child_frame_id`` the child; the transform maps child-frame points into the parent frame, i.e.
  it is ``T_parent_child`` (REP 105 / tf2 convention). Quaternions are ``(x, y, z, w)``, converted
  with :class:`scipy.spatial.transform.Rotation` (scalar-last).
* The calibration YAML (``config/calibration_example.yaml``) gives ``T_cam_lidar`` per camera for
  bags without ``/tf_static``, plus optional ``K`` / ``D`` overrides.
"""
from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple, Union

import numpy as np

from drive_segment_ros.types import CameraModel, DriveSegmentError

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- CameraInfo
def camera_model_from_info(msg: Any, topic: str = "", image_size: Optional[Tuple[int, int]] = None) -> CameraModel:
    """Build a :class:`CameraModel` from a ``sensor_msgs/CameraInfo`` (rosbags or rclpy).

    Args:
        msg: CameraInfo; ``k`` (9 floats, pixels), ``d``, ``width``, ``height``, ``header.frame_id``.
        topic: topic name, used in error messages.
        image_size: optional ``(width, height)`` of the images on the paired image topic; must match.

    Returns:
        CameraModel with K (3, 3) float64, D (n,) float64, size, ``frame_id`` = the header frame.

    Raises:
        DriveSegmentError: K not finite / fx or fy <= 0 (uncalibrated all-zero K), non-positive
        size, or a size different from ``image_size`` — the message names ``topic``.
    """
    where = f"CameraInfo on {topic!r}" if topic else "CameraInfo"
    K = np.asarray(msg.k, dtype=np.float64).reshape(-1)
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
    D = np.asarray(msg.d, dtype=np.float64).reshape(-1)
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
    """A complete CameraInfo message (rosbags or rclpy ``types``) for ``camera`` (header frame = ``camera.frame_id``)."""
    from drive_segment_ros.ros.msgtypes import make_header, types_for

    types = types_for(types if types is not None else "rosbags")
    roi = types.RegionOfInterest(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return types.CameraInfo(header=make_header(camera.frame_id, stamp_ns, types), roi=roi, **camera_info_fields(camera, P))


# --------------------------------------------------------------------------- transforms
def quaternion_to_matrix(q_xyzw: Iterable[float]) -> np.ndarray:
    """(3, 3) float64 rotation of a quaternion ``(x, y, z, w)`` (normalized; scipy Rotation).

    Raises:
        DriveSegmentError: zero-norm or non-finite quaternion.
    """
    from scipy.spatial.transform import Rotation

    q = np.asarray(list(q_xyzw), dtype=np.float64)
    if q.shape != (4,) or not np.all(np.isfinite(q)) or np.linalg.norm(q) < 1e-12:
        raise DriveSegmentError(f"invalid quaternion (x, y, z, w) {q.tolist()}")
    return Rotation.from_quat(q).as_matrix()


def matrix_to_quaternion(R: np.ndarray) -> np.ndarray:
    """(4,) float64 quaternion ``(x, y, z, w)`` of a 3x3 rotation (scipy Rotation)."""
    from scipy.spatial.transform import Rotation

    return Rotation.from_matrix(np.asarray(R, dtype=np.float64)).as_quat()


def transform_to_matrix(transform: Any) -> np.ndarray:
    """(4, 4) float64 of a ``geometry_msgs/Transform`` (``translation`` m, ``rotation`` quaternion)."""
    t, q = transform.translation, transform.rotation
    T = np.eye(4)
    T[:3, :3] = quaternion_to_matrix((q.x, q.y, q.z, q.w))
    T[:3, 3] = (t.x, t.y, t.z)
    return T


def validate_transform(T: Any, what: str = "transform") -> np.ndarray:
    """Check and return a rigid (4, 4) float64 transform (16 numbers accepted, row-major).

    Raises:
        DriveSegmentError: wrong shape, non-finite, last row != [0 0 0 1], or rotation not orthonormal (tol 1e-3).
    """
    M = np.asarray(T, dtype=np.float64)
    if M.size == 16:
        M = M.reshape(4, 4)
    elif M.shape == (3, 4):
        M = np.vstack([M, [0, 0, 0, 1]])
    if M.shape != (4, 4):
        raise DriveSegmentError(f"{what}: expected a 4x4 matrix (or 16 / 3x4 numbers), got shape {np.asarray(T).shape}")
    if not np.all(np.isfinite(M)) or not np.allclose(M[3], [0, 0, 0, 1]):
        raise DriveSegmentError(f"{what}: must be finite with last row [0, 0, 0, 1]")
    R = M[:3, :3]
    if not np.allclose(R @ R.T, np.eye(3), atol=1e-3) or np.linalg.det(R) < 0:
        raise DriveSegmentError(f"{what}: rotation part is not a proper rotation (R R^T != I or det < 0)")
    return M


def invert_transform(T: np.ndarray) -> np.ndarray:
    """Inverse of a rigid (4, 4) transform: ``[R^T | -R^T t]``."""
    Ti = np.eye(4)
    R = T[:3, :3]
    Ti[:3, :3] = R.T
    Ti[:3, 3] = -R.T @ T[:3, 3]
    return Ti


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
        """Add one ``geometry_msgs/TransformStamped`` (parent = ``header.frame_id``, child = ``child_frame_id``)."""
        self.add(transform_to_matrix(ts.transform), ts.header.frame_id, ts.child_frame_id)

    def add_tf_message(self, msg: Any) -> None:
        """Add every transform of a ``tf2_msgs/TFMessage``."""
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


def transform_stamped(T_parent_child: np.ndarray, parent: str, child: str, stamp_ns: int, types: Any = None) -> Any:
    """``geometry_msgs/TransformStamped`` for ``T_parent_child`` (rosbags or rclpy ``types``)."""
    from drive_segment_ros.ros.msgtypes import make_header, types_for

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
    from drive_segment_ros.config_io import load_yaml_mapping

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
