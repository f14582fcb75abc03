"""``bag_player_node``: ``ros2 bag play`` on top of ``rosbags`` (no rosbag2_py needed).

Reads a ROS 2 bag (sqlite3 or mcap; :func:`drive_segment_ros.ros.bags.open_bag`), deserializes
each message with rosbags and converts it to the rclpy message class of the same type by
recursive field copy (:func:`to_rclpy`; every type whose Python package is importable:
Image, CompressedImage, CameraInfo, PointCloud2, TFMessage, ...), and publishes it on the
recorded topic. What makes a replay *deliver*:

* **Wait for the consumers.** Playback starts once every topic in ``wait_topics`` (empty: every
  played topic except ``/tf_static``) has ``wait_for_subscribers`` subscribers, or after
  ``wait_timeout_s`` (then a warning names the topics without subscribers), plus ``settle_s``
  so that the other subscriptions of the same nodes are discovered too. A volatile
  publisher loses what it sends before a subscriber is discovered, and a segmentation node
  needs seconds to load its model (launch argument ``wait_timeout``).
* **Bag time.** ``publish_clock`` publishes ``rosgraph_msgs/Clock`` on ``/clock`` (with each
  message, and at ``clock_hz`` between messages) so nodes started with ``use_sim_time:=true``
  run on bag time.
* **Recorded rate.** Messages are due at ``(t - t0) / rate`` after the start (``rate <= 0``: as
  fast as possible, one message per timer tick).
* **Deliveries acknowledged before exit.** At the end the node waits until every reliable
  subscriber acknowledged everything (``Publisher.wait_for_all_acked``, at most
  ``ack_timeout_s``) and at least ``linger_s`` for best-effort subscribers, then sets ``done``.
* **Loop.** ``loop`` restarts at the end (``loop_passes`` > 0: that many passes in all); with ``loop_offset_stamps`` (default) pass *k* adds
  ``k * (bag span + loop_gap_s)`` to every header stamp (also ``TFMessage`` transforms) and to
  ``/clock``, so stamps keep increasing and nodes that drop stale frames process every pass.
  Without it, stamps repeat; ``segmentation_node`` then resets its stale-frame state when a
  stamp jumps back more than its ``time_jump_reset_s`` (as tf2 buffers do on a time jump).
  ``/tf_static`` is published on the first pass only (transient local), with or without
  ``loop_offset_stamps`` (:func:`publish_on_pass`).

QoS: ``/tf_static`` reliable transient local (late joiners still get the calibration), other
topics reliable keep-last ``depth`` (``ros2 bag play`` default), ``/clock`` best effort
keep-last 1 (what rclpy's TimeSource subscribes with). Managed (lifecycle) node: the bag opens
in ``on_configure``, playback runs while active (``autostart`` default true).
Source: rosbags docs "Highlevel APIs / AnyReader"; rosbag2 ``ros2 bag play`` options
(``--clock``, ``--rate``, ``--loop``, ``--wait-for-all-acked``).
"""
from __future__ import annotations

import array
import importlib
import logging
import time
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np
from tqdm import tqdm

from drive_segment_ros.nodes import run_nodes
from drive_segment_ros.nodes.lifecycle import ManagedNode
from drive_segment_ros.ros.bags import deserialize, iter_messages, open_bag
from drive_segment_ros.ros.msgtypes import stamp_to_ns
from drive_segment_ros.ros.qos import output_qos, tf_static_qos
from drive_segment_ros.types import DriveSegmentError

LOG = logging.getLogger(__name__)

__all__ = ["BagPlayerNode", "PARAMETERS", "rclpy_class", "to_rclpy", "publish_on_pass", "shift_stamps", "main"]

PARAMETERS: Dict[str, tuple] = {
    "bag": ("", "ROS 2 bag directory (or .mcap / .db3 file) to play"),
    "rate": (1.0, "playback speed factor of the recorded timing; <= 0 plays as fast as possible"),
    "loop": (False, "restart from the beginning at the end of the bag"),
    "loop_passes": (0, "with loop: stop after this many passes; 0 = loop forever"),
    "loop_offset_stamps": (True, "with loop: add k * (bag span + loop_gap_s) to header stamps and /clock on pass k"),
    "loop_gap_s": (0.1, "bag time between the last message of a pass and the first of the next (s)"),
    "topics": ([""], "topics to play; empty list / [''] plays all"),
    "depth": (10, "KEEP_LAST depth of the reliable publishers"),
    "publish_clock": (True, "publish rosgraph_msgs/Clock on /clock with the bag time (for use_sim_time)"),
    "clock_hz": (50.0, "/clock rate between messages while playing (Hz); <= 0: only with each message"),
    "wait_for_subscribers": (1, "before playing, wait until every topic in wait_topics has this many subscribers"),
    "wait_topics": ([""], "topics to wait for; empty: every played topic except /tf_static"),
    "wait_timeout_s": (10.0, "give up waiting for subscribers after this many seconds and play anyway"),
    "settle_s": (0.25, "once every waited topic has its subscribers, wait this long more (the other subscriptions of the same nodes)"),
    "ack_timeout_s": (5.0, "at the end, wait at most this long for reliable subscribers to acknowledge (s)"),
    "linger_s": (0.5, "at the end, stay at least this long for best-effort subscribers (s)"),
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


class BagPlayerNode(ManagedNode):
    """Publish a bag's messages with the recorded timing (see module doc).

    Raises:
        DriveSegmentError: (with ``autostart``) empty ``bag`` parameter, unreadable bag, no
        playable topic, bad parameter values.

    Attributes: ``done`` (end reached, deliveries acknowledged, not looping), ``n_published``
    (per topic dict), ``n_loops``, ``skipped_topics`` (type not importable here, e.g. tf2_msgs
    in the PyPI wheels), ``acked`` (all reliable deliveries acknowledged at the end).
    """

    def __init__(self, node_name: str = "bag_player", **kwargs: Any) -> None:
        self.reader = None
        self.done = False
        self.acked: Optional[bool] = None
        self.n_loops = 0
        self.n_published: Dict[str, int] = {}
        self.skipped_topics: list = []
        self.publishers_by_topic: Dict[str, Any] = {}
        self.timer = None
        self.clock_timer = None
        self._bar = None
        super().__init__(node_name, PARAMETERS, task="playback", **kwargs)

    # -- lifecycle ------------------------------------------------------------------------
    def configure(self) -> None:
        """Open the bag, create one publisher per played topic (+ ``/clock``)."""
        from rclpy.qos import QoSProfile, ReliabilityPolicy  # optional heavy dependency

        p = self.params
        if not p["bag"]:
            raise DriveSegmentError("bag_player_node: parameter bag is empty")
        if int(p["depth"]) < 1:
            raise DriveSegmentError(f"depth must be >= 1, got {p['depth']}")
        path = self.path = Path(p["bag"])
        self.reader = open_bag(path)
        wanted = {t for t in p["topics"] if t}
        self.connections = []
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
                qos = tf_static_qos() if conn.topic == "/tf_static" else output_qos(int(p["depth"]))
                self.publishers_by_topic[conn.topic] = self.create_publisher(cls, conn.topic, qos)
                self.classes[conn.topic] = cls
        if not self.connections:
            self.close_bag()
            raise DriveSegmentError(f"bag {path}: no playable topic (wanted {sorted(wanted) or 'all'}, skipped {self.skipped_topics})")
        wait = [t for t in p["wait_topics"] if t]
        unknown = [t for t in wait if t not in self.publishers_by_topic]
        if unknown:
            self.get_logger().warning(f"wait_topics not in the bag (ignored): {unknown}")
        self.wait_topics = [t for t in wait if t in self.publishers_by_topic] or [t for t in self.publishers_by_topic if t != "/tf_static"]
        self.clock_pub = None
        if p["publish_clock"]:
            from rosgraph_msgs.msg import Clock  # optional heavy dependency

            self._Clock = Clock
            self.clock_pub = self.create_publisher(Clock, "/clock", QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT))
        self.span_ns = max(0, int(self.reader.end_time) - int(self.reader.start_time))
        self.n_published = {t: 0 for t in self.publishers_by_topic}
        self.diagnostics.set_model(f"bag {path.name}")
        self._reset_playback()

    def _reset_playback(self) -> None:
        self.done = False
        self.acked = None
        self.n_loops = 0
        self._gen = None
        self._pending: Optional[Tuple[Any, int, bytes, int, int]] = None  # (connection, stamp + offset, raw, offset, pass)
        self._t_created = time.monotonic()
        self._wall0: Optional[float] = None
        self._bag0: Optional[int] = None
        self._finish_deadline: Optional[float] = None
        self._linger_until: Optional[float] = None
        self._last_clock_ns: Optional[int] = None
        self._matched_at: Optional[float] = None

    def activate(self) -> None:
        """Start (or resume) playback."""
        if self.params["progress"] and self._bar is None:
            self._bar = tqdm(total=sum(c.msgcount for c in self.connections), desc=f"play {self.path.name}", unit="msg")
        from rclpy.clock import Clock, ClockType  # optional heavy dependency

        # steady-clock timers: the player is the time source, it must not wait on /clock itself
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self._t_created = time.monotonic()  # wait_timeout_s counts from activation
        self.timer = self.create_timer(0.001, self.on_timer, clock=steady)
        hz = float(self.params["clock_hz"])
        if self.clock_pub is not None and hz > 0:
            self.clock_timer = self.create_timer(1.0 / hz, self.on_clock_timer, clock=steady)
        self.get_logger().info(f"playing {self.path} ({len(self.connections)} connections, rate {self.params['rate']}, loop {self.params['loop']}); "
                               f"waiting for {int(self.params['wait_for_subscribers'])} subscriber(s) on {self.wait_topics}")

    def deactivate(self) -> None:
        """Pause playback (the next activation resumes with fresh timing)."""
        for timer in (self.timer, self.clock_timer):
            if timer is not None:
                self.destroy_timer(timer)
        self.timer = self.clock_timer = None
        self._wall0 = None

    def cleanup(self) -> None:
        """Close the bag and destroy the publishers."""
        self.deactivate()
        for pub in list(self.publishers_by_topic.values()) + [getattr(self, "clock_pub", None)]:
            if pub is not None:
                self.destroy_publisher(pub)
        self.publishers_by_topic = {}
        self.clock_pub = None
        self.close_bag()

    def close_bag(self) -> None:
        """Close the bag reader (idempotent)."""
        if self.reader is not None:
            try:
                self.reader.close()
            except Exception:  # pragma: no cover - already closed
                pass
            self.reader = None
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    # -- playback -------------------------------------------------------------------------
    def _ready(self) -> bool:
        waited = time.monotonic() - self._t_created
        if waited < float(self.params["start_delay_s"]):
            return False
        need = int(self.params["wait_for_subscribers"])
        if need <= 0:
            return True
        missing = [t for t in self.wait_topics if self.publishers_by_topic[t].get_subscription_count() < need]
        if not missing:
            if self._matched_at is None:
                self._matched_at = time.monotonic()
                self.get_logger().info(f"every waited topic has {need} subscriber(s) after {waited:.1f} s")
            return time.monotonic() - self._matched_at >= float(self.params["settle_s"])
        if waited > float(self.params["wait_timeout_s"]):
            self.get_logger().warning(f"playing although {missing} have fewer than {need} subscriber(s) after {waited:.1f} s")
            return True
        return False

    def _next(self):
        if self._gen is None:
            self._gen = iter_messages(self.reader, self.connections, self.path)
        item = next(self._gen, None)
        if item is not None or not self.params["loop"]:
            return item
        passes = int(self.params["loop_passes"])
        if passes > 0 and self.n_loops + 1 >= passes:
            return None
        self.n_loops += 1
        self._gen = iter_messages(self.reader, self.connections, self.path)
        return next(self._gen, None)

    def offset_ns(self) -> int:
        """Stamp offset of the current pass (0 without ``loop_offset_stamps``)."""
        if not self.params["loop_offset_stamps"]:
            return 0
        return self.n_loops * (self.span_ns + int(round(float(self.params["loop_gap_s"]) * 1e9)))

    def on_timer(self) -> None:
        """Publish every message that is due (or one per tick when ``rate <= 0``); finish at the end."""
        if self.done:
            return
        if self._finish_deadline is not None:
            self._check_finished()
            return
        if self._wall0 is None and self._pending is None and not self._ready():
            return
        rate = float(self.params["rate"])
        while True:
            if self._pending is None:
                try:
                    item = self._next()
                except DriveSegmentError as exc:  # corrupt bag data: say so once, end playback
                    self.report_error(str(exc))
                    item = None
                if item is None:
                    self.finish()
                    return
                conn, t_ns, raw = item
                offset = self.offset_ns()
                self._pending = (conn, t_ns + offset, raw, offset, self.n_loops)
            conn, t_ns, raw, offset, pass_index = self._pending
            now = time.monotonic()
            if self._wall0 is None:
                self._wall0, self._bag0 = now, t_ns
            if rate > 0 and (t_ns - self._bag0) / rate > (now - self._wall0) * 1e9:
                return  # not due yet
            self._pending = None
            if publish_on_pass(conn.topic, pass_index):
                self.publish_one(conn, t_ns, raw, offset)
            if rate <= 0:
                return

    def on_clock_timer(self) -> None:
        """``/clock`` between messages: the bag time that corresponds to now."""
        if self.clock_pub is None or self._wall0 is None or self.done or self._finish_deadline is not None:
            return
        rate = float(self.params["rate"])
        if rate <= 0:
            return
        self.publish_clock(int(self._bag0 + (time.monotonic() - self._wall0) * 1e9 * rate))

    def publish_clock(self, t_ns: int) -> None:
        """Publish ``/clock`` = ``t_ns`` (never backwards within a pass)."""
        if self.clock_pub is None:
            return
        if self._last_clock_ns is not None and t_ns < self._last_clock_ns and not self.params["loop"]:
            return
        self._last_clock_ns = t_ns
        clock = self._Clock()
        clock.clock.sec, clock.clock.nanosec = int(t_ns // 1_000_000_000), int(t_ns % 1_000_000_000)
        self.clock_pub.publish(clock)

    def publish_one(self, conn: Any, t_ns: int, raw: bytes, offset_ns: int = 0) -> None:
        """Deserialize, convert, shift stamps by ``offset_ns`` and publish one message (errors logged)."""
        try:
            obj = deserialize(self.reader, raw, conn, self.path)
            msg = to_rclpy(obj, self.classes[conn.topic])
            if offset_ns:
                shift_stamps(msg, offset_ns)
        except Exception as exc:
            self.report_error(f"cannot convert a {conn.msgtype} message on {conn.topic}: {exc}")
            return
        self.publish_clock(t_ns)
        self.publishers_by_topic[conn.topic].publish(msg)
        self.n_published[conn.topic] += 1
        self.diagnostics.output()
        if self._bar is not None:
            self._bar.update(1)

    def finish(self) -> None:
        """End of the bag: wait for acknowledgements (``ack_timeout_s``) and ``linger_s``, then ``done``."""
        now = time.monotonic()
        self._finish_deadline = now + max(0.0, float(self.params["ack_timeout_s"]))
        self._linger_until = now + max(0.0, float(self.params["linger_s"]))
        self.get_logger().info(f"bag finished: {sum(self.n_published.values())} messages published; waiting for acknowledgements")
        self._check_finished()

    def all_acked(self) -> bool:
        """True when every reliable subscriber acknowledged every message (non-blocking)."""
        from rclpy.duration import Duration  # optional heavy dependency

        return all(pub.wait_for_all_acked(Duration(seconds=0)) for pub in self.publishers_by_topic.values())

    def _check_finished(self) -> None:
        now = time.monotonic()
        acked = self.all_acked()
        if (acked and now >= self._linger_until) or now >= self._finish_deadline:
            self.acked = acked
            self.done = True
            if self._bar is not None:
                self._bar.close()
                self._bar = None
            if acked:
                self.get_logger().info(f"all {sum(self.n_published.values())} messages delivered (reliable subscribers acknowledged)")
            else:
                self.get_logger().warning(f"not every reliable subscriber acknowledged within ack_timeout_s={self.params['ack_timeout_s']}")

    def destroy_node(self) -> None:
        """Close the bag, then destroy the node."""
        self.close_bag()
        super().destroy_node()


def publish_on_pass(topic: str, pass_index: int) -> bool:
    """Whether a message of ``topic`` is published on loop pass ``pass_index`` (0 = first pass).

    ``/tf_static`` is published on the first pass only: its publisher is transient local, so
    every subscriber (late joiners included) already holds the calibration, and a resent static
    transform would only repeat it. This depends on the pass number alone, not on whether the
    pass shifts stamps (``loop_offset_stamps``). Every other topic is published on every pass.
    """
    return not (topic == "/tf_static" and int(pass_index) > 0)


def shift_stamps(msg: Any, offset_ns: int) -> Any:
    """Add ``offset_ns`` to ``msg.header.stamp`` and to each ``msg.transforms[i].header.stamp`` (in place)."""
    headers = []
    if hasattr(msg, "header"):
        headers.append(msg.header)
    for tf in getattr(msg, "transforms", None) or []:
        if hasattr(tf, "header"):
            headers.append(tf.header)
    for header in headers:
        t = stamp_to_ns(header.stamp) + int(offset_ns)
        header.stamp.sec, header.stamp.nanosec = t // 1_000_000_000, t % 1_000_000_000
    return msg


def main(args: Optional[list] = None) -> int:
    """Console script ``bag_player_node``: play a bag, exit at its end (unless ``loop``)."""
    return run_nodes([BagPlayerNode], args=args, until=lambda nodes: all(getattr(n, "done", False) for n in nodes))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
