"""Which ROS message classes to build: the rosbags typestore or rclpy's generated classes.

The conversions in :mod:`drive_segment_ros.ros.pointcloud2` and :mod:`drive_segment_ros.ros.image`
read *either* kind of message (duck typing on the field names of ``sensor_msgs``) and build
messages of the kind selected by a ``types`` namespace returned here:

* :func:`rosbags_types` — pure-Python dataclasses of a ``rosbags`` typestore (ROS 2 Kilted, or
  Jazzy on older rosbags), for writing and reading bags without a ROS runtime.
* :func:`rclpy_types` — the ``sensor_msgs.msg`` / ``std_msgs.msg`` / ... classes that rclpy
  publishes (ROS 2 Kilted wheels or an apt install).

Both namespaces have the attributes ``kind`` (``"rosbags"`` / ``"rclpy"``), ``Time, Header,
Image, CompressedImage, CameraInfo, RegionOfInterest, PointCloud2, PointField, TFMessage,
TransformStamped, Transform, Vector3, Quaternion, Marker, MarkerArray, Point, Pose, ColorRGBA,
Duration, String`` plus the helpers ``time(stamp_ns)`` and ``header(frame_id, stamp_ns)`` (``None`` when a package is not importable, e.g. ``tf2_msgs`` in the rclpy
wheels) and ``typestore`` (rosbags only). Message definitions: ``sensor_msgs``/``std_msgs``
from ros2/common_interfaces; rosbags typestores: https://ternaris.gitlab.io/rosbags/topics/typesys.html
"""
from __future__ import annotations

import functools
import importlib
from types import SimpleNamespace
from typing import Any, Optional

from rosbags.typesys import Stores, get_typestore

from drive_segment_ros.types import DriveSegmentError

#: short name -> full ROS 2 message type name
MESSAGE_NAMES = {
    "Time": "builtin_interfaces/msg/Time",
    "Duration": "builtin_interfaces/msg/Duration",
    "Header": "std_msgs/msg/Header",
    "String": "std_msgs/msg/String",
    "ColorRGBA": "std_msgs/msg/ColorRGBA",
    "Image": "sensor_msgs/msg/Image",
    "CompressedImage": "sensor_msgs/msg/CompressedImage",
    "CameraInfo": "sensor_msgs/msg/CameraInfo",
    "RegionOfInterest": "sensor_msgs/msg/RegionOfInterest",
    "PointCloud2": "sensor_msgs/msg/PointCloud2",
    "PointField": "sensor_msgs/msg/PointField",
    "TFMessage": "tf2_msgs/msg/TFMessage",
    "TransformStamped": "geometry_msgs/msg/TransformStamped",
    "Transform": "geometry_msgs/msg/Transform",
    "Vector3": "geometry_msgs/msg/Vector3",
    "Quaternion": "geometry_msgs/msg/Quaternion",
    "Point": "geometry_msgs/msg/Point",
    "Pose": "geometry_msgs/msg/Pose",
    "Marker": "visualization_msgs/msg/Marker",
    "MarkerArray": "visualization_msgs/msg/MarkerArray",
}


def _newest_store():
    for name in ("ROS2_KILTED", "ROS2_JAZZY"):
        if hasattr(Stores, name):
            return getattr(Stores, name)
    return Stores.LATEST


@functools.lru_cache(maxsize=None)
def rosbags_typestore():
    """The rosbags typestore used for every bag this package writes (ROS 2 Kilted, else Jazzy)."""
    return get_typestore(_newest_store())


@functools.lru_cache(maxsize=None)
def rosbags_types() -> SimpleNamespace:
    """Message classes of the rosbags typestore (see module doc for the attribute names).

    Returns:
        SimpleNamespace with ``kind="rosbags"``, ``typestore`` and one class per entry of
        :data:`MESSAGE_NAMES`. The classes are dataclasses that need every field as a keyword.
    """
    store = rosbags_typestore()
    ns = SimpleNamespace(kind="rosbags", typestore=store)
    for short, full in MESSAGE_NAMES.items():
        setattr(ns, short, store.types.get(full))
    _add_helpers(ns)
    return ns


@functools.lru_cache(maxsize=None)
def rclpy_types() -> SimpleNamespace:
    """rclpy message classes (``sensor_msgs.msg.PointCloud2`` ...), ``None`` where not importable.

    Raises:
        DriveSegmentError: when ``sensor_msgs`` / ``std_msgs`` (rclpy messages) are not installed.
    """
    ns = SimpleNamespace(kind="rclpy", typestore=None)
    for short, full in MESSAGE_NAMES.items():
        pkg, _, name = full.split("/")
        try:
            module = importlib.import_module(f"{pkg}.msg")
            cls = getattr(module, name)
        except (ImportError, AttributeError):
            cls = None
        setattr(ns, short, cls)
    if ns.Header is None or ns.PointCloud2 is None or ns.Image is None:
        raise DriveSegmentError("rclpy message packages (std_msgs, sensor_msgs) are not importable; source ROS 2 or pip install .[ros]")
    _add_helpers(ns)
    return ns


def _add_helpers(ns: SimpleNamespace) -> None:
    """Attach ``ns.time(stamp_ns)`` and ``ns.header(frame_id, stamp_ns)`` bound to this namespace."""
    ns.time = lambda stamp_ns: make_time(stamp_ns, ns)
    ns.header = lambda frame_id, stamp_ns: make_header(frame_id, stamp_ns, ns)


def types_for(kind: Any) -> SimpleNamespace:
    """Return a types namespace from ``"rosbags"`` / ``"rclpy"`` or pass a namespace through.

    Raises:
        DriveSegmentError: an unknown ``kind``; ``"rclpy"`` without the rclpy message packages.
    """
    if isinstance(kind, SimpleNamespace):
        return kind
    if kind == "rosbags":
        return rosbags_types()
    if kind == "rclpy":
        return rclpy_types()
    raise DriveSegmentError(f"unknown message types {kind!r}: use rosbags_types(), rclpy_types(), 'rosbags' or 'rclpy'")


def make_time(stamp_ns: int, types: Any):
    """``builtin_interfaces/Time`` for an integer stamp in ns (sec = ns // 1e9, nanosec = rest).

    Raises:
        DriveSegmentError: for a negative stamp.
    """
    types = types_for(types)
    stamp_ns = int(stamp_ns)
    if stamp_ns < 0:
        raise DriveSegmentError(f"stamp must be >= 0 ns, got {stamp_ns}")
    return types.Time(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000)


def make_header(frame_id: str, stamp_ns: int, types: Any):
    """``std_msgs/Header`` with ``frame_id`` and the stamp ``stamp_ns`` (integer ns since epoch).

    Raises:
        DriveSegmentError: negative stamp, unknown ``types``.
    """
    types = types_for(types)
    return types.Header(stamp=make_time(stamp_ns, types), frame_id=str(frame_id))


def stamp_to_ns(stamp: Any) -> int:
    """Integer ns of a ``builtin_interfaces/Time`` (rosbags or rclpy; ROS 1 ``secs/nsecs`` too)."""
    if hasattr(stamp, "sec"):
        return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)
    return int(stamp.secs) * 1_000_000_000 + int(stamp.nsecs)  # pragma: no cover - ROS 1 genpy


def header_stamp_ns(msg: Any) -> int:
    """``msg.header.stamp`` as integer nanoseconds since the epoch: THE stamp helper of the package.

    Args:
        msg: a rosbags or rclpy message with a ``std_msgs/Header`` (``builtin_interfaces/Time``
            ``sec`` / ``nanosec``; ROS 1 ``secs`` / ``nsecs`` too).

    Raises:
        DriveSegmentError: the message has no ``header.stamp``.
    """
    try:
        stamp = msg.header.stamp
    except AttributeError:
        raise DriveSegmentError(f"message of type {type(msg).__name__} has no header.stamp") from None
    try:
        return stamp_to_ns(stamp)
    except AttributeError:
        raise DriveSegmentError(f"message of type {type(msg).__name__} has no header.stamp (sec / nanosec)") from None


def message_kind(msg: Any) -> str:
    """``"rosbags"`` when ``msg`` is a rosbags dataclass (has ``__msgtype__``), else ``"rclpy"``."""
    return "rosbags" if hasattr(type(msg), "__msgtype__") else "rclpy"


def msgtype_name(msg: Any) -> Optional[str]:
    """Full ROS type name (``sensor_msgs/msg/Image``) of a rosbags or rclpy message, if known."""
    name = getattr(type(msg), "__msgtype__", None)
    if name:
        return name
    module = type(msg).__module__.split(".")
    if len(module) >= 2:
        return f"{module[0]}/msg/{type(msg).__name__}"
    return None
