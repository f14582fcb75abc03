"""What the camera + LiDAR nodes share: CameraInfo cache, the ``T_cam_lidar`` sources, and the
image size check before decoding (``max_image_pixels``, CameraInfo size; JPEG / PNG sizes come
from the header, :mod:`drive_segment_ros.ros.image_header`).

``T_cam_lidar`` (LiDAR frame -> camera optical frame, REP 103) comes from, in this order: the
``T_cam_lidar`` parameter (16 numbers, row-major), the ``calibration_yaml`` file
(:func:`drive_segment_ros.calibration.load_calibration_yaml`), or ``/tf_static`` (needs
``tf2_msgs``; transient-local QoS as ``robot_state_publisher`` / ``static_transform_publisher``
publish it).
"""
from __future__ import annotations

import collections
from typing import Any, Dict, Optional

import numpy as np

from drive_segment_ros.calibration import load_calibration_yaml
from drive_segment_ros.nodes import transform_from_parameter
from drive_segment_ros.ros.camera_info import camera_model_from_info
from drive_segment_ros.ros.image_header import compressed_image_size
from drive_segment_ros.ros.msgtypes import header_stamp_ns
from drive_segment_ros.ros.qos import sensor_qos, tf_static_qos
from drive_segment_ros.tf_buffer import TransformBuffer
from drive_segment_ros.types import DriveSegmentError

#: Parameters every camera + LiDAR node declares (``declare_parameters`` format).
CAMERA_LIDAR_PARAMETERS: Dict[str, tuple] = {
    "T_cam_lidar": ([], "LiDAR -> camera optical transform, 16 numbers row-major; empty: calibration_yaml or /tf_static"),
    "calibration_yaml": ("", "calibration YAML (config/calibration_example.yaml format) used when T_cam_lidar is empty"),
    "max_image_pixels": (16_777_216, "refuse images with more pixels (width x height), read from the header before decoding"),
    "use_tf_static": (True, "look T_cam_lidar up in /tf_static (needs tf2_msgs) when no parameter / YAML gives it"),
}


class CameraLidarMixin:
    """Mixin for rclpy nodes (with :class:`~drive_segment_ros.nodes.NodeErrorMixin`) pairing images with scans.

    Call :meth:`setup_camera_lidar` in ``__init__``; it subscribes ``~/camera_info`` (and
    ``/tf_static`` when that is the transform source).
    """

    def setup_camera_lidar(self, params: Dict[str, Any], types: Any, use_tf_static: bool = True, info_qos: Any = None) -> None:
        """Read the calibration parameters and create the CameraInfo (+ /tf_static) subscriptions.

        ``info_qos``: QoS of ``~/camera_info`` (default SensorDataQoS, depth 10).

        Raises:
            DriveSegmentError: malformed ``T_cam_lidar`` or an unreadable calibration YAML.
        """
        self.T_param = transform_from_parameter(params["T_cam_lidar"])
        self.calibration = None
        if params["calibration_yaml"]:
            self.calibration = load_calibration_yaml(params["calibration_yaml"])
        self._infos: collections.deque = collections.deque(maxlen=10)
        self._tf_tree = None
        self.sub_tf = None
        self.sub_info = self.create_subscription(types.CameraInfo, "~/camera_info", self.on_camera_info,
                                                 info_qos if info_qos is not None else sensor_qos(10))
        if use_tf_static and params["use_tf_static"] and self.T_param is None and self.calibration is None:
            if types.TFMessage is not None:
                self._tf_tree = TransformBuffer(reparent_static=True)  # static only; a re-published frame replaces
                self.sub_tf = self.create_subscription(types.TFMessage, "/tf_static", self.on_tf_static, tf_static_qos())
            else:
                self.get_logger().warning("tf2_msgs not importable: /tf_static unavailable; set T_cam_lidar or calibration_yaml")

    def check_image_size(self, img: Any, info: Any = None) -> None:
        """Refuse an image larger than ``max_image_pixels`` or than ``info``'s size, before decoding.

        For a CompressedImage the size comes from the JPEG / PNG header
        (:func:`drive_segment_ros.ros.image_header.compressed_image_size`); for a raw Image from
        ``width`` / ``height``.

        Raises:
            DriveSegmentError: too large, or a compressed image whose header is unreadable.
        """
        if hasattr(img, "encoding"):
            width, height, what = int(img.width), int(img.height), f"{img.encoding} image"
        else:
            width, height, fmt = compressed_image_size(img.data)
            what = f"{fmt} image"
        limit = int(self.params["max_image_pixels"])
        if width * height > limit:
            raise DriveSegmentError(f"{what} {width}x{height} refused before decoding: more than max_image_pixels={limit}")
        if info is not None and int(info.width) > 0 and (width > int(info.width) or height > int(info.height)):
            raise DriveSegmentError(f"{what} {width}x{height} does not match CameraInfo {info.width}x{info.height} (larger: refused before decoding)")

    def teardown_camera_lidar(self) -> None:
        """Destroy the CameraInfo / ``/tf_static`` subscriptions and forget the cached CameraInfos."""
        for name in ("sub_info", "sub_tf"):
            sub = getattr(self, name, None)
            if sub is not None:
                self.destroy_subscription(sub)
                setattr(self, name, None)
        if getattr(self, "_infos", None) is not None:
            self._infos.clear()

    def on_tf_static(self, msg: Any) -> None:
        """Add every ``/tf_static`` transform to the node's :class:`~drive_segment_ros.tf_buffer.TransformBuffer`."""
        try:
            self._tf_tree.add_tf_message(msg, static=True)
        except Exception as exc:
            self.report_error(f"bad /tf_static message: {exc}")

    def on_camera_info(self, msg: Any) -> None:
        """Cache a CameraInfo (the nearest in stamp to each image is used)."""
        self._infos.append((header_stamp_ns(msg), msg))

    def camera_info_for(self, stamp_ns: int) -> Optional[Any]:
        """The cached CameraInfo nearest in stamp to ``stamp_ns`` (``None`` when none)."""
        if not self._infos:
            return None
        return min(self._infos, key=lambda item: abs(item[0] - stamp_ns))[1]

    def camera_calibration(self, camera_frame: str):
        """The calibration YAML entry of ``camera_frame`` (or of the image topic), else ``None``."""
        if self.calibration is None:
            return None
        topic = getattr(self.subs[0], "topic_name", "")
        entry = self.calibration.for_camera(camera_frame, topic)
        if entry is None and len(self.calibration.cameras) == 1:
            entry = next(iter(self.calibration.cameras.values()))
        return entry

    def camera_and_extrinsics(self, info: Any, camera_frame: str, lidar_frame: str, image_size=None):
        """``(CameraModel, T_cam_lidar)`` for one image: K/D from ``info`` (``sensor_msgs/CameraInfo``),
        overridden by the calibration YAML entry when there is one, and the 4x4 float64 transform.

        Args:
            camera_frame: the image's ``header.frame_id`` (empty: the CameraInfo's).
            image_size: optional (width, height) the CameraInfo must match.

        Raises:
            DriveSegmentError: invalid CameraInfo, size mismatch, or no transform source.
        """
        camera = camera_model_from_info(info, topic=self.sub_info.topic_name, image_size=image_size)
        camera_frame = camera_frame or camera.frame_id
        entry = self.camera_calibration(camera_frame)
        if entry is not None:
            camera = entry.apply(camera)
        return camera, self.lookup_T_cam_lidar(camera_frame, lidar_frame)

    def lookup_T_cam_lidar(self, camera_frame: str, lidar_frame: str) -> np.ndarray:
        """``T_cam_lidar`` (4x4 float64): parameter, else calibration YAML, else /tf_static.

        Raises:
            DriveSegmentError: when no source gives it.
        """
        if self.T_param is not None:
            return self.T_param
        entry = self.camera_calibration(camera_frame)
        if entry is not None:
            return entry.T_cam_lidar
        if self._tf_tree is not None:
            return np.asarray(self._tf_tree.lookup_transform(camera_frame, lidar_frame), dtype=np.float64)
        raise DriveSegmentError(
            f"no transform {lidar_frame!r} -> {camera_frame!r}: set T_cam_lidar, calibration_yaml or publish /tf_static"
        )
