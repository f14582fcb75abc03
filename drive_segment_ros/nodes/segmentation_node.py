"""``segmentation_node``: camera images -> semantic class-id masks (+ semantic LiDAR points).

The deployed student / teacher of Drive&Segment (docs/METHOD.md stages 5-6) behind
:class:`~drive_segment_ros.inference.backends.SegmentationModel` (torch, ONNX Runtime or
TensorRT, chosen by parameter). Topic layout follows the Isaac ROS image-segmentation
convention (``raw_segmentation_mask`` mono8 + ``colored_segmentation_mask`` rgb8, QoS depth 1).

Subscriptions (all remappable):

* ``~/image`` — ``sensor_msgs/Image`` (rgb8, bgr8, mono8, ...) or, with
  ``image_transport: compressed``, ``sensor_msgs/CompressedImage`` (JPEG/PNG). QoS from
  ``qos.image.{reliability,durability,depth}`` (default best effort, volatile, KEEP_LAST 1:
  receives from SensorDataQoS drivers and reliable bag players, and a slow model only ever
  sees the newest frame; :mod:`drive_segment_ros.nodes.transport`). Compressed images are
  sized from their JPEG/PNG header first and refused, undecoded, when larger than the
  CameraInfo size or ``max_image_pixels``.
* ``~/camera_info`` — ``sensor_msgs/CameraInfo``; cached (last 10), the one nearest in stamp
  to each image is used. Required for ``~/semantic_points`` and (``require_camera_info``) to
  check the image size; a missing / mismatching CameraInfo drops the frame with an error.
* ``~/points`` — ``sensor_msgs/PointCloud2`` when ``use_lidar`` is true, approximately
  time-synchronised with the image (``slop_s``, :mod:`drive_segment_ros.ros.sync`).

Publications (reliable, depth 5):

* ``~/mask`` — mono8 class ids, same size, stamp and ``frame_id`` as the input image.
* ``~/mask_color`` — rgb8 palette colours (``color_mode: color``) or the colours blended over
  the image (``overlay``, ``overlay_alpha``); computed only when someone subscribes.
* ``~/semantic_points`` — the input cloud (``x, y, z, intensity`` float32) with a ``class_id``
  int32 field: the 2-D prediction carried to each point with
  :func:`drive_segment_ros.projection.labels_to_points` (-1 outside the image / occluded);
  same header as the input cloud. Needs ``T_cam_lidar`` from the ``T_cam_lidar`` parameter
  (16 numbers, row-major), a ``calibration_yaml`` or ``/tf_static`` (when ``tf2_msgs`` is
  importable).

Stale frames are dropped, not queued: messages older than the last processed one, and,
when ``max_age_s > 0``, messages older than ``max_age_s`` w.r.t. the node clock (use
``use_sim_time`` with replayed bags). When the stamps jump back by more than
``time_jump_reset_s`` (a bag restarted, ``bag_player loop`` without stamp offsets) the
stale-frame state is reset, as tf2 buffers reset on a backwards time jump. Every bad input is
logged as one error line and the node keeps running; a bad point cloud only skips
``~/semantic_points`` (the mask is still published, and the log says so).

Managed (lifecycle) node (:class:`~drive_segment_ros.nodes.lifecycle.ManagedNode`): the model
loads in ``on_configure``, the image / cloud subscriptions start in ``on_activate``;
``autostart`` (default true) does both at start-up. Health on ``/diagnostics`` (1 Hz).
"""
from __future__ import annotations

import logging
import time
from typing import Any, Dict, Optional

import numpy as np

from drive_segment_ros.nodes import run_nodes
from drive_segment_ros.nodes.camera_lidar import CAMERA_LIDAR_PARAMETERS, CameraLidarMixin
from drive_segment_ros.nodes.lifecycle import ManagedNode, destroy_subscriptions
from drive_segment_ros.nodes.transport import qos_from_parameters, qos_parameter_specs
from drive_segment_ros.projection import labels_to_points
from drive_segment_ros.ros.image import any_image_to_rgb, mono8_to_image_msg, rgb_to_image_msg
from drive_segment_ros.ros.msgtypes import header_stamp_ns, rclpy_types
from drive_segment_ros.ros.pointcloud2 import array_to_pointcloud2, read_points_xyzi
from drive_segment_ros.ros.qos import output_qos
from drive_segment_ros.ros.sync import make_synchronizer
from drive_segment_ros.types import DriveSegmentError
from drive_segment_ros.visualization import overlay

LOG = logging.getLogger(__name__)

__all__ = ["SegmentationNode", "PARAMETERS", "semantic_cloud_array", "main"]

#: name -> (default, description); mirrored in config/segment.yaml
PARAMETERS: Dict[str, tuple] = {
    "model_path": ("", "segmentation model: checkpoint directory (torch), .onnx (onnxruntime) or .engine/.plan (tensorrt)"),
    "backend": ("auto", "inference backend: auto (by file type), torch, onnxruntime or tensorrt"),
    "device": ("cpu", "inference device: cpu, cuda, cuda:N or auto"),
    "inference_mode": ("whole", "whole (one pass at the network input size) or sliding (windows averaged over overlaps, "
                                "the released Drive&Segment protocol; settings from the model; several passes per image)"),
    "image_transport": ("raw", "raw (sensor_msgs/Image) or compressed (sensor_msgs/CompressedImage) on ~/image"),
    "use_lidar": (False, "subscribe ~/points (synchronised with the image) and publish ~/semantic_points"),
    "require_camera_info": (True, "drop images when no CameraInfo was received or its size differs from the image"),
    "slop_s": (0.1, "approximate-time synchronisation tolerance between image and point cloud (s)"),
    "queue_size": (5, "messages kept per input by the synchroniser"),
    "max_age_s": (0.0, "drop frames older than this w.r.t. the node clock (s); 0 disables"),
    "color_mode": ("overlay", "~/mask_color content: overlay (palette blended over the image) or color (palette only)"),
    "overlay_alpha": (0.5, "weight of the palette colour in the overlay, in [0, 1]"),
    "time_jump_reset_s": (1.0, "a stamp this far (s) behind the last processed one resets the stale-frame state (bag restart)"),
    **qos_parameter_specs("image", "best_effort", "volatile", 1),
    **qos_parameter_specs("camera_info", "best_effort", "volatile", 5),
    **qos_parameter_specs("points", "best_effort", "volatile", 2),
    **CAMERA_LIDAR_PARAMETERS,
}


def semantic_cloud_array(points: np.ndarray, class_ids: np.ndarray) -> np.ndarray:
    """Structured (N,) array ``x, y, z, intensity`` float32 + ``class_id`` int32 (-1 = no label).

    Raises:
        DriveSegmentError: shapes disagree.
    """
    points = np.asarray(points)
    class_ids = np.asarray(class_ids)
    if points.ndim != 2 or points.shape[1] < 3 or class_ids.shape != (points.shape[0],):
        raise DriveSegmentError(f"points (N,>=3) and class ids (N,) disagree: {points.shape} vs {class_ids.shape}")
    dt = np.dtype([("x", np.float32), ("y", np.float32), ("z", np.float32), ("intensity", np.float32), ("class_id", np.int32)])
    out = np.empty(points.shape[0], dtype=dt)
    out["x"], out["y"], out["z"] = points[:, 0], points[:, 1], points[:, 2]
    out["intensity"] = points[:, 3] if points.shape[1] > 3 else 0.0
    out["class_id"] = class_ids
    return out


class SegmentationNode(CameraLidarMixin, ManagedNode):
    """Image (+ CameraInfo, PointCloud2) -> mask, colour mask, semantic points.

    Args:
        node_name: ROS node name.
        model: optional already-loaded ``SegmentationModel`` (composition, tests, benchmarks);
            otherwise ``model_path`` / ``backend`` / ``device`` parameters are used (in ``on_configure``).
        **kwargs: ``rclpy.node.Node`` keyword arguments (``context``, ``parameter_overrides``,
            ``cli_args`` ...).

    Raises:
        DriveSegmentError: with ``autostart``: no model (empty ``model_path``), a model that does
        not load, bad parameter values.

    Attributes: ``model``, ``n_processed``, ``n_stale``, ``n_errors``, ``last_error``,
    ``last_timing`` (dict of ms: ``decode``, ``model``, ``publish``, ``total``), ``diagnostics``.
    """

    def __init__(self, node_name: str = "segmentation_node", model: Any = None, **kwargs: Any) -> None:
        self._given_model = model
        self.model = None
        self.n_processed = 0
        self.n_stale = 0
        self.last_timing: Dict[str, float] = {}
        self._last_stamp = -1
        self.subs: list = []
        self.sync = None
        self.pub_mask = self.pub_color = self.pub_points = None
        super().__init__(node_name, PARAMETERS, task="segmentation", **kwargs)

    # -- lifecycle ------------------------------------------------------------------------
    def configure(self) -> None:
        """Check parameters, load the model, create publishers and the CameraInfo subscription."""
        self.types = T = rclpy_types()
        p = self.params
        if p["image_transport"] not in ("raw", "compressed"):
            raise DriveSegmentError(f"image_transport must be raw or compressed, got {p['image_transport']!r}")
        if p["inference_mode"] not in ("whole", "sliding"):
            raise DriveSegmentError(f"inference_mode must be whole or sliding, got {p['inference_mode']!r}")
        if p["color_mode"] not in ("overlay", "color"):
            raise DriveSegmentError(f"color_mode must be overlay or color, got {p['color_mode']!r}")
        if not 0.0 <= float(p["overlay_alpha"]) <= 1.0:
            raise DriveSegmentError(f"overlay_alpha must be in [0, 1], got {p['overlay_alpha']}")
        if int(p["max_image_pixels"]) <= 0:
            raise DriveSegmentError(f"max_image_pixels must be > 0, got {p['max_image_pixels']}")
        self.qos = {name: qos_from_parameters(p, name) for name in ("image", "camera_info", "points")}
        model = self._given_model
        if model is None:
            if not p["model_path"]:
                raise DriveSegmentError("segmentation_node: parameter model_path is empty (set it in config/segment.yaml or the launch argument model)")
            from drive_segment_ros.inference.backends import load_model  # deferred: imports torch (signal handlers first)

            self.get_logger().info(f"loading model {p['model_path']} (backend {p['backend']}, device {p['device']})")
            model = load_model(p["model_path"], backend=p["backend"], device=p["device"], inference_mode=p["inference_mode"])
        self.model = model
        self.diagnostics.set_model(repr(model))
        self.pub_mask = self.create_publisher(T.Image, "~/mask", output_qos())
        self.pub_color = self.create_publisher(T.Image, "~/mask_color", output_qos())
        self.pub_points = self.create_publisher(T.PointCloud2, "~/semantic_points", output_qos()) if p["use_lidar"] else None
        self.setup_camera_lidar(p, T, use_tf_static=p["use_lidar"], info_qos=self.qos["camera_info"])

    def activate(self) -> None:
        """Subscribe ``~/image`` (and ``~/points``, synchronised)."""
        T, p = self.types, self.params
        image_type = T.CompressedImage if p["image_transport"] == "compressed" else T.Image
        if p["use_lidar"]:
            self.sync, self.subs = make_synchronizer(
                self,
                [(image_type, "~/image", self.qos["image"]), (T.PointCloud2, "~/points", self.qos["points"])],
                self.on_image_points,
                queue_size=int(p["queue_size"]),
                slop_s=float(p["slop_s"]),
            )
        else:
            self.sync = None
            self.subs = [self.create_subscription(image_type, "~/image", self.on_image, self.qos["image"])]
        topic = self.subs[0].topic_name if hasattr(self.subs[0], "topic_name") else "~/image"
        self.get_logger().info(f"segmentation_node active: {self.model!r}, image {topic}")

    def deactivate(self) -> None:
        """Stop the image / cloud subscriptions (the model stays loaded)."""
        destroy_subscriptions(self, self.subs)
        self.subs, self.sync = [], None

    def cleanup(self) -> None:
        """Drop the model, publishers and calibration subscriptions."""
        self.deactivate()
        for pub in (self.pub_mask, self.pub_color, self.pub_points):
            if pub is not None:
                self.destroy_publisher(pub)
        self.pub_mask = self.pub_color = self.pub_points = None
        self.teardown_camera_lidar()
        self.model = None
        self._last_stamp = -1

    # -- callbacks ------------------------------------------------------------------------
    def on_image(self, img: Any) -> None:
        """Image-only callback (``use_lidar: false``)."""
        self.diagnostics.input()
        self._guarded(img, None)

    def on_image_points(self, img: Any, cloud: Any) -> None:
        """Synchronised image + cloud callback (``use_lidar: true``)."""
        self.diagnostics.input()
        self._guarded(img, cloud)

    def _guarded(self, img: Any, cloud: Any) -> None:
        try:
            result = self.process(img, cloud)
        except DriveSegmentError as exc:
            self.diagnostics.dropped()
            self.report_error(f"dropped image ({img.header.frame_id!r}): {exc}")
        except Exception as exc:
            self.diagnostics.dropped()
            self.report_error(f"dropped image ({img.header.frame_id!r}): {type(exc).__name__}: {exc}")
        else:
            if result is None:
                self.diagnostics.dropped()
            else:
                self.diagnostics.output(self.last_timing.get("total"))

    def is_stale(self, stamp_ns: int) -> bool:
        """True for frames older than the last processed one or than ``max_age_s`` (node clock).

        A stamp more than ``time_jump_reset_s`` behind the last processed one resets that state
        first (time jumped back: bag restarted), so the frame is processed.
        """
        jump = float(self.params["time_jump_reset_s"])
        if self._last_stamp >= 0 and jump > 0 and stamp_ns < self._last_stamp - jump * 1e9:
            self.get_logger().info(f"time jumped back by {(self._last_stamp - stamp_ns) / 1e9:.3f} s: stale-frame state reset")
            self._last_stamp = -1
        if stamp_ns <= self._last_stamp:
            return True
        max_age = float(self.params["max_age_s"])
        if max_age > 0.0:
            now = self.get_clock().now().nanoseconds
            if now - stamp_ns > max_age * 1e9:
                return True
        return False

    def process(self, img: Any, cloud: Any = None) -> Optional[np.ndarray]:
        """Segment one image (and label one cloud); publish; return the class ids or ``None`` if stale.

        Raises:
            DriveSegmentError: undecodable image, missing / mismatching CameraInfo, no extrinsics,
            empty cloud.
        """
        t0 = time.perf_counter()
        stamp = header_stamp_ns(img)
        if self.is_stale(stamp):
            self.n_stale += 1
            self.get_logger().debug(f"dropping stale image stamped {stamp}")
            return None
        info = self.camera_info_for(stamp)
        need_info = bool(self.params["require_camera_info"]) or cloud is not None
        if info is None and need_info:
            raise DriveSegmentError(f"no CameraInfo received on {self.sub_info.topic_name}")
        self.check_image_size(img, info)  # before decoding: a small PNG can expand to gigabytes
        rgb = any_image_to_rgb(img)
        if info is not None and (int(info.width), int(info.height)) != (rgb.shape[1], rgb.shape[0]):
            raise DriveSegmentError(
                f"image {rgb.shape[1]}x{rgb.shape[0]} does not match CameraInfo {info.width}x{info.height}"
            )
        t1 = time.perf_counter()
        class_ids, _ = self.model.predict(rgb)
        class_ids = np.ascontiguousarray(class_ids, dtype=np.uint8)
        t2 = time.perf_counter()
        header = img.header
        mask_msg = mono8_to_image_msg(class_ids, header.frame_id, stamp, self.types)
        mask_msg.header = header
        self.pub_mask.publish(mask_msg)
        if self.pub_color.get_subscription_count() > 0:
            if self.params["color_mode"] == "overlay":
                color = overlay(rgb, class_ids, self.model.palette, float(self.params["overlay_alpha"]), ignore=None)
            else:
                color = self.model.colorize(class_ids)
            color_msg = rgb_to_image_msg(color, header.frame_id, stamp, self.types)
            color_msg.header = header
            self.pub_color.publish(color_msg)
        if cloud is not None:
            try:
                self.publish_semantic_points(class_ids, cloud, info, header.frame_id)
            except Exception as exc:  # the mask is out already: say exactly what was skipped
                what = str(exc) if isinstance(exc, DriveSegmentError) else f"{type(exc).__name__}: {exc}"
                self.report_error(f"semantic points skipped (bad PointCloud2 {cloud.header.frame_id!r}: {what}); mask published")
        self._last_stamp = stamp
        self.n_processed += 1
        t3 = time.perf_counter()
        self.last_timing = {"decode": (t1 - t0) * 1e3, "model": (t2 - t1) * 1e3, "publish": (t3 - t2) * 1e3, "total": (t3 - t0) * 1e3}
        return class_ids

    def publish_semantic_points(self, class_ids: np.ndarray, cloud: Any, info: Any, camera_frame: str) -> np.ndarray:
        """Carry ``class_ids`` (H, W) to the cloud's points and publish ``~/semantic_points``.

        Returns the (N,) int32 class id per point (-1 = not visible). Raises DriveSegmentError.
        """
        points, _ = read_points_xyzi(cloud)
        if points.shape[0] == 0:
            raise DriveSegmentError("empty PointCloud2 (0 finite points)")
        camera, T = self.camera_and_extrinsics(info, camera_frame, cloud.header.frame_id)
        point_ids = labels_to_points(class_ids, points, camera, T)
        arr = semantic_cloud_array(points, point_ids)
        msg = array_to_pointcloud2(arr, cloud.header.frame_id, header_stamp_ns(cloud), self.types)
        msg.header = cloud.header
        self.pub_points.publish(msg)
        return point_ids


def main(args: Optional[list] = None) -> int:
    """Console script ``segmentation_node`` (``--ros-args -p model_path:=... -r ~/image:=...``)."""
    return run_nodes([SegmentationNode], args=args)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
