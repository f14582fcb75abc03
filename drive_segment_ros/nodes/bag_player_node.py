"""``bag_player_node``: ``ros2 bag play`` on top of ``rosbags`` (no rosbag2_py needed).

Reads a ROS 2 bag (sqlite3 or mcap, any rosbags-readable bag, ``rosbags.highlevel.AnyReader``),
deserializes each message with rosbags and converts it to the rclpy message class of the
same type by recursive field copy (:func:`to_rclpy`; works for every type whose Python
package is importable: Image, CompressedImage, CameraInfo, PointCloud2, TFMessage, ...), and
publishes it on the recorded topic.

Parameters: ``bag`` (path, required), ``rate`` (playback speed factor; ``<= 0`` = as fast as
possible, one message per timer tick), ``loop`` (restart at the end), ``topics`` (subset to
play; empty = all), ``publish_clock`` (``/clock`` with the recorded time, for
``use_sim_time``), ``progress`` (tqdm bar), ``wait_for_subscribers`` / ``wait_timeout_s`` (hold playback until every
volatile topic has that many subscribers, or the timeout passes — a volatile publisher loses
messages sent before discovery), ``start_delay_s``.

QoS: ``/tf_static`` transient local (late joiners still get the calibration), other topics
reliable keep-last 10 (``ros2 bag play`` default). Header stamps are left as recorded.
Source: rosbags docs "Highlevel APIs / AnyReader"; rosbag2 ``ros2 bag play`` options.
"""
from __future__ import annotations

import array
import importlib
import logging
import time
from typing import Any, Dict, Optional, Tuple

import numpy as np

from drive_segment_ros.nodes import NodeErrorMixin, declare_parameters, run_nodes
from drive_segment_ros.types import DriveSegmentError

LOG = logging.getLogger(__name__)

try:
    from rclpy.node import Node
except ImportError:  # pragma: no cover
    Node = object  # type: ignore[misc,assignment]

__all__ = ["BagPlayerNode", "PARAMETERS", "rclpy_class", "to_rclpy", "main"]

PARAMETERS: Dict[str, tuple] = {
    "bag": ("", "ROS 2 bag directory (or .mcap / .db3 file) to play"),
    "rate": (1.0, "playback speed factor of the recorded timing; <= 0 plays as fast as possible"),
    "loop": (False, "restart from the beginning at the end of the bag"),
    "topics": ([""], "topics to play; empty list / [''] plays all"),
    "publish_clock": (False, "publish rosgraph_msgs/Clock on /clock with the recorded time"),
    "wait_for_subscribers": (0, "before playing, wait until every volatile topic has this many subscribers"),
    "wait_timeout_s": (5.0, "give up waiting for subscribers after this many seconds and play anyway"),
    "start_delay_s": (0.0, "extra delay before the first message (s)"),
    "progress": (False, "show a tqdm progress bar over the bag's messages"),
}

_TYPECODES = {
    "int8": "b", "uint8": "B", "octet": "B", "char": "B", "int16": "h", "uint16": "H", "int32": "i",
    "uint32": "I", "int64": "q", "uint64": "Q", "float": "f", "double": "d", "float32": "f", "float64": "d",
}
_NP_DTYPES = {
    "int8": np.int8, "uint8": np.uint8, "octet": np.uint8, "char": np.uint8, "int16": np.int16, "uint16": np.uint16,
    "int32": np.int32, "uint32": np.uint32, "int64": np.int64, "uint64": np.uint64, "float": np.float32,
    "double": np.float64,
}
_PLAN_CACHE: Dict[type, list] = {}


def rclpy_class(msgtype: str) -> type:
    """The rclpy class of a ROS type name (``sensor_msgs/msg/Image`` or ``sensor_msgs/Image``).

    Raises:
        DriveSegmentError: when the message package is not importable.
    """
    parts = msgtype.split("/")
    pkg, name = parts[0], parts[-1]
    try:
        return getattr(importlib.import_module(f"{pkg}.msg"), name)
    except (ImportError, AttributeError) as exc:
        raise DriveSegmentError(f"message type {msgtype} is not importable in this ROS install ({exc})") from exc


def _plan(cls: type) -> list:
    plan = _PLAN_CACHE.get(cls)
    if plan is not None:
        return plan
    plan = []
    for name, tstr in cls.get_fields_and_field_types().items():
        kind, elem = "scalar", tstr
        if tstr.startswith("sequence<"):
            kind, elem = "sequence", tstr[len("sequence<"):-1].split(",")[0].strip()
        elif tstr.endswith("]"):
            kind, elem = "array", tstr[: tstr.index("[")]
        if "/" in elem:
            plan.append((name, kind, "msg", rclpy_class(elem)))
        else:
            plan.append((name, kind, elem, None))
    _PLAN_CACHE[cls] = plan
    return plan


def to_rclpy(obj: Any, cls: type) -> Any:
    """Copy a deserialized rosbags message ``obj`` into a new instance of rclpy class ``cls``.

    Recursive over nested messages; ``uint8[]`` payloads become ``array.array('B')`` (the
    rclpy fast path, a single memcpy), numeric sequences ``array.array`` of the matching
    type code, fixed-size arrays numpy arrays. Field names are the ROS IDL names, which
    rosbags and rclpy share (rosbags docs "Type system").
    """
    msg = cls()
    for name, kind, elem, sub in _plan(cls):
        value = getattr(obj, name)
        if elem == "msg":
            if kind == "scalar":
                setattr(msg, name, to_rclpy(value, sub))
            else:
                setattr(msg, name, [to_rclpy(v, sub) for v in value])
        elif kind == "scalar":
            setattr(msg, name, value.item() if isinstance(value, np.generic) else value)
        elif elem in _TYPECODES:
            arr = np.ascontiguousarray(value, dtype=_NP_DTYPES[elem])
            if kind == "array":
                setattr(msg, name, arr)
            else:
                setattr(msg, name, array.array(_TYPECODES[elem], arr.tobytes()))
        else:  # strings, booleans
            setattr(msg, name, [v.item() if isinstance(v, np.generic) else v for v in value])
    return msg


class BagPlayerNode(NodeErrorMixin, Node):
    """Publish a bag's messages with the recorded timing (see module doc).

    Raises:
        DriveSegmentError: empty ``bag`` parameter, unreadable bag, no playable topic.

    Attributes: ``done`` (end reached and not looping), ``n_published`` (per topic dict),
    ``skipped_topics`` (type not importable here, e.g. tf2_msgs in the PyPI wheels).
    """

    def __init__(self, node_name: str = "bag_player", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        from rclpy.qos import DurabilityPolicy

        from drive_segment_ros.ros.qos import output_qos, tf_static_qos

        p = declare_parameters(self, PARAMETERS)
        self.params = p
        if not p["bag"]:
            raise DriveSegmentError("bag_player_node: parameter bag is empty")
        from rosbags.highlevel import AnyReader
        from pathlib import Path

        path = Path(p["bag"])
        if not path.exists():
            raise DriveSegmentError(f"bag {path} not found")
        try:
            self.reader = AnyReader([path])
            self.reader.open()
        except Exception as exc:
            raise DriveSegmentError(f"cannot open bag {path}: {exc}") from exc
        wanted = {t for t in p["topics"] if t}
        self.connections = []
        self.publishers_by_topic: Dict[str, Any] = {}
        self.classes: Dict[str, type] = {}
        self.skipped_topics = []
        for conn in self.reader.connections:
            if wanted and conn.topic not in wanted:
                continue
            try:
                cls = rclpy_class(conn.msgtype)
            except DriveSegmentError as exc:
                self.skipped_topics.append(conn.topic)
                self.get_logger().warning(f"skipping {conn.topic}: {exc}")
                continue
            self.connections.append(conn)
            if conn.topic not in self.publishers_by_topic:
                qos = tf_static_qos() if conn.topic == "/tf_static" else output_qos(10)
                self.publishers_by_topic[conn.topic] = self.create_publisher(cls, conn.topic, qos)
                self.classes[conn.topic] = cls
        if not self.connections:
            raise DriveSegmentError(f"bag {path}: no playable topic (wanted {sorted(wanted) or 'all'}, skipped {self.skipped_topics})")
        self._volatile = [pub for topic, pub in self.publishers_by_topic.items() if pub.qos_profile.durability != DurabilityPolicy.TRANSIENT_LOCAL]
        self.clock_pub = None
        if p["publish_clock"]:
            from rosgraph_msgs.msg import Clock

            self.clock_pub = self.create_publisher(Clock, "/clock", output_qos(10))
        self.n_published: Dict[str, int] = {t: 0 for t in self.publishers_by_topic}
        self.n_loops = 0
        self.done = False
        self._gen = None
        self._pending: Optional[Tuple[Any, int, bytes]] = None
        self._t_created = time.monotonic()
        self._wall0: Optional[float] = None
        self._bag0: Optional[int] = None
        self._bar = None
        if p["progress"]:
            from tqdm import tqdm

            self._bar = tqdm(total=sum(c.msgcount for c in self.connections), desc=f"play {path.name}", unit="msg")
        self.timer = self.create_timer(0.001, self.on_timer)
        self.get_logger().info(f"playing {path} ({len(self.connections)} connections, rate {p['rate']}, loop {p['loop']})")

    # -- playback -------------------------------------------------------------------------
    def _ready(self) -> bool:
        waited = time.monotonic() - self._t_created
        if waited < float(self.params["start_delay_s"]):
            return False
        need = int(self.params["wait_for_subscribers"])
        if need <= 0:
            return True
        if all(pub.get_subscription_count() >= need for pub in self._volatile):
            return True
        if waited > float(self.params["wait_timeout_s"]):
            self.get_logger().warning(f"playing although not every topic has {need} subscriber(s) after {waited:.1f} s")
            return True
        return False

    def _next(self):
        if self._gen is None:
            self._gen = self.reader.messages(connections=self.connections)
        try:
            return next(self._gen)
        except StopIteration:
            if not self.params["loop"]:
                return None
            self.n_loops += 1
            self._gen = self.reader.messages(connections=self.connections)
            self._wall0, self._bag0 = None, None
            return next(self._gen, None)

    def on_timer(self) -> None:
        """Publish every message that is due (or one per tick when ``rate <= 0``)."""
        if self.done:
            return
        if self._wall0 is None and self._pending is None and not self._ready():
            return
        rate = float(self.params["rate"])
        while True:
            if self._pending is None:
                self._pending = self._next()
                if self._pending is None:
                    self.finish()
                    return
            conn, t_ns, raw = self._pending
            now = time.monotonic()
            if self._wall0 is None:
                self._wall0, self._bag0 = now, t_ns
            if rate > 0 and (t_ns - self._bag0) / rate > (now - self._wall0) * 1e9:
                return  # not due yet
            self._pending = None
            self.publish_one(conn, t_ns, raw)
            if rate <= 0:
                return

    def publish_one(self, conn: Any, t_ns: int, raw: bytes) -> None:
        """Deserialize, convert and publish one recorded message (errors logged, playback goes on)."""
        try:
            obj = self.reader.deserialize(raw, conn.msgtype)
            msg = to_rclpy(obj, self.classes[conn.topic])
        except Exception as exc:
            self.report_error(f"cannot convert a {conn.msgtype} message on {conn.topic}: {exc}")
            return
        if self.clock_pub is not None:
            from rosgraph_msgs.msg import Clock

            clock = Clock()
            clock.clock.sec, clock.clock.nanosec = int(t_ns // 1_000_000_000), int(t_ns % 1_000_000_000)
            self.clock_pub.publish(clock)
        self.publishers_by_topic[conn.topic].publish(msg)
        self.n_published[conn.topic] += 1
        if self._bar is not None:
            self._bar.update(1)

    def finish(self) -> None:
        """Mark the end of playback (``done``)."""
        if not self.done:
            self.done = True
            if self._bar is not None:
                self._bar.close()
            self.get_logger().info(f"bag finished: {sum(self.n_published.values())} messages published")

    def destroy_node(self) -> None:
        """Close the bag, then destroy the node."""
        try:
            self.reader.close()
        except Exception:  # pragma: no cover - already closed
            pass
        super().destroy_node()


def main(args: Optional[list] = None) -> int:
    """Console script ``bag_player_node``: play a bag, exit at its end (unless ``loop``)."""
    return run_nodes([BagPlayerNode], args=args, until=lambda nodes: all(getattr(n, "done", False) for n in nodes))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
