"""Approximate-time synchronisation of several message streams (no ROS runtime needed).

:class:`ApproximateTimeSynchronizer` re-implements the semantics of
``message_filters.ApproximateTimeSynchronizer`` (ROS 2 ``message_filters`` Python package,
``message_filters/__init__.py``) for installs where ``message_filters`` is not importable
(the PyPI ROS 2 wheels used here): every input keeps a queue of at most ``queue_size``
messages keyed by header stamp (oldest dropped first); when a message arrives on input *i*,
the other queues are searched for messages within ``slop_s`` of it, the candidate tuple with
the smallest spread (max stamp - min stamp, ties broken by the summed distance to the new
message) that is *strictly* below ``slop_s`` is emitted to the registered callbacks, and the
emitted messages are removed from their queues. Like the C++ policy, a match also discards
every queued message older than the matched one of its input (it can no longer be the
best partner of anything newer), so stale data never accumulates.

:func:`make_synchronizer` creates the subscriptions on an ``rclpy`` node and wires them to
``message_filters`` when it is importable (real ROS 2 installs) or to this class otherwise.
"""
from __future__ import annotations

import itertools
import logging
import threading
from typing import Any, Callable, List, Optional, Sequence, Tuple

from drive_segment_ros.ros.msgtypes import header_stamp_ns
from drive_segment_ros.types import DriveSegmentError

LOG = logging.getLogger(__name__)

__all__ = ["ApproximateTimeSynchronizer", "make_synchronizer", "have_message_filters"]


class ApproximateTimeSynchronizer:
    """Pair messages of ``n_inputs`` streams whose header stamps are within ``slop_s``.

    Args:
        queue_size: messages kept per input (>= 1); the oldest is dropped beyond that.
        slop_s: maximal spread (seconds, > 0) between the stamps of an emitted tuple.
        n_inputs: number of input streams (>= 1); ``add(msg, index)`` with ``0 <= index < n_inputs``.
        allow_headerless: if true, messages without ``header.stamp`` are stamped with ``clock()``.
        clock: callable returning "now" in ns, only used for headerless messages.

    Callbacks registered with :meth:`register_callback` are called as
    ``cb(msg_0, ..., msg_{n-1}, *args)`` in input order, synchronously from :meth:`add`.
    Thread-safe (one lock around the queues; callbacks run outside it).
    Source: ``message_filters.ApproximateTimeSynchronizer`` (ROS 2 Python API).
    """

    def __init__(
        self,
        queue_size: int,
        slop_s: float,
        n_inputs: int = 2,
        allow_headerless: bool = False,
        clock: Optional[Callable[[], int]] = None,
    ) -> None:
        if int(queue_size) < 1:
            raise DriveSegmentError(f"queue_size must be >= 1, got {queue_size}")
        if not float(slop_s) > 0.0:
            raise DriveSegmentError(f"slop_s must be > 0 seconds, got {slop_s}")
        if int(n_inputs) < 1:
            raise DriveSegmentError(f"n_inputs must be >= 1, got {n_inputs}")
        self.queue_size = int(queue_size)
        self.slop_ns = int(round(float(slop_s) * 1e9))
        self.n_inputs = int(n_inputs)
        self.allow_headerless = bool(allow_headerless)
        self._clock = clock
        self._queues: List[dict] = [dict() for _ in range(self.n_inputs)]
        self._callbacks: List[Tuple[Callable, tuple]] = []
        self._lock = threading.Lock()
        self.n_emitted = 0
        self.n_dropped = 0

    # -- message_filters-compatible API -------------------------------------------------
    def register_callback(self, callback: Callable, *args: Any) -> None:
        """Call ``callback(*msgs, *args)`` for every synchronised tuple."""
        self._callbacks.append((callback, args))

    registerCallback = register_callback  # message_filters spelling

    def add(self, msg: Any, index: int) -> Optional[tuple]:
        """Feed ``msg`` arriving on input ``index``; returns the emitted tuple or ``None``.

        Raises :class:`DriveSegmentError` for an index out of range or a message without
        a header stamp (unless ``allow_headerless``).
        """
        if not 0 <= int(index) < self.n_inputs:
            raise DriveSegmentError(f"input index {index} out of range 0..{self.n_inputs - 1}")
        index = int(index)
        try:
            t = header_stamp_ns(msg)
        except DriveSegmentError:
            if not self.allow_headerless or self._clock is None:
                raise
            t = int(self._clock())
        with self._lock:
            queue = self._queues[index]
            queue[t] = msg
            while len(queue) > self.queue_size:
                del queue[min(queue)]
                self.n_dropped += 1
            out = self._match(index, t)
        if out is not None:
            self.n_emitted += 1
            for callback, args in self._callbacks:
                callback(*out, *args)
        return out

    # -- internals ----------------------------------------------------------------------
    def _match(self, index: int, t: int) -> Optional[tuple]:
        candidates: List[List[int]] = []
        for j, queue in enumerate(self._queues):
            if j == index:
                candidates.append([t])
                continue
            near = sorted((s for s in queue if abs(s - t) < self.slop_ns), key=lambda s: abs(s - t))
            if not near:
                return None
            candidates.append(near)
        best = None
        best_key = None
        for combo in itertools.product(*candidates):
            spread = max(combo) - min(combo)
            if spread >= self.slop_ns:
                continue
            key = (spread, sum(abs(s - t) for s in combo))
            if best_key is None or key < best_key:
                best, best_key = combo, key
        if best is None:
            return None
        msgs = tuple(self._queues[j][s] for j, s in enumerate(best))
        for j, s in enumerate(best):
            queue = self._queues[j]
            for old in [k for k in queue if k <= s]:
                del queue[old]
                if old != s:
                    self.n_dropped += 1
        return msgs

    def queued(self) -> List[int]:
        """Number of messages waiting in each input queue."""
        with self._lock:
            return [len(q) for q in self._queues]

    def clear(self) -> None:
        """Drop every queued message."""
        with self._lock:
            for q in self._queues:
                q.clear()


def have_message_filters() -> bool:
    """True when the ROS 2 ``message_filters`` package is importable."""
    try:
        import message_filters  # noqa: F401  # optional heavy dependency (ROS 2 apt installs only)
    except ImportError:
        return False
    return True


def make_synchronizer(
    node: Any,
    inputs: Sequence[Tuple[type, str, Any]],
    callback: Callable,
    queue_size: int = 10,
    slop_s: float = 0.1,
    prefer_message_filters: bool = True,
) -> Tuple[Any, list]:
    """Subscribe ``node`` to ``inputs`` and call ``callback(*msgs)`` on approximately-synchronised tuples.

    Args:
        node: an ``rclpy.node.Node``.
        inputs: ``(msg_type, topic, qos_profile)`` per input, in callback argument order.
        callback: called with one message per input.
        queue_size, slop_s: as in :class:`ApproximateTimeSynchronizer`.
        prefer_message_filters: use ``message_filters`` (``Subscriber`` +
            ``ApproximateTimeSynchronizer``) when importable; else this module's class.

    Returns:
        ``(synchronizer, subscriptions)``; keep both referenced for the node's lifetime.
    Raises:
        DriveSegmentError: with no inputs.
    """
    if not inputs:
        raise DriveSegmentError("make_synchronizer needs at least one input")
    if prefer_message_filters and have_message_filters():
        import message_filters  # optional heavy dependency (ROS 2 apt installs only)

        subs = [message_filters.Subscriber(node, t, topic, qos_profile=qos) for t, topic, qos in inputs]
        sync = message_filters.ApproximateTimeSynchronizer(subs, queue_size, slop_s)
        sync.registerCallback(callback)
        LOG.debug("synchronising %s with message_filters", [i[1] for i in inputs])
        return sync, subs
    sync = ApproximateTimeSynchronizer(queue_size, slop_s, n_inputs=len(inputs))
    sync.register_callback(callback)
    subs = []
    for i, (msg_type, topic, qos) in enumerate(inputs):
        subs.append(node.create_subscription(msg_type, topic, lambda m, i=i: sync.add(m, i), qos))
    LOG.debug("synchronising %s with drive_segment_ros.ros.sync", [i[1] for i in inputs])
    return sync, subs
