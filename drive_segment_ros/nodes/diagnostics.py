"""Node health on ``/diagnostics`` (``diagnostic_msgs/DiagnosticArray``), once per second.

Follows the ``diagnostic_updater`` convention (ros/diagnostics, ``diagnostic_updater/_updater.py``):
one ``DiagnosticStatus`` per task with ``name = "<node name>: <task>"``, ``hardware_id``
(the model / backend or input topic), ``level`` (OK=0, WARN=1, ERROR=2, STALE=3), a short
``message`` and ``values`` (``diagnostic_msgs/KeyValue``, strings):

==========================  =================================================================
key                         meaning
==========================  =================================================================
``state``                   lifecycle state (``unconfigured``, ``inactive``, ``active``)
``input rate (Hz)``         messages received per second over the last period
``output rate (Hz)``        results published per second over the last period
``frames in``               messages received since start
``frames out``              results published since start
``dropped frames``          inputs not turned into a result (stale, bad, refused) since start
``processing latency ms``   mean / max over the last period (callback time)
``model``                   model or backend description (``-`` when none)
``last error``              the last error line (``-`` when none)
==========================  =================================================================

Level: ERROR when an error occurred in the last period, WARN when frames were dropped in the
last period or the node is not active, OK otherwise. The timer runs on the steady clock, so
diagnostics keep flowing under ``use_sim_time`` before ``/clock`` arrives. ``rqt_robot_monitor``
and Autoware's ``diagnostic_graph_aggregator`` read this topic.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Dict, List, Optional

from drive_segment_ros.ros.qos import output_qos

__all__ = ["NodeDiagnostics", "DIAGNOSTICS_TOPIC"]

DIAGNOSTICS_TOPIC = "/diagnostics"


class NodeDiagnostics:
    """Counters of one node and the 1 Hz ``/diagnostics`` publisher.

    Args:
        node: the rclpy node (needs ``get_name``, ``create_publisher``, ``create_timer``).
        task: task name (``segmentation``, ``proposals``, ``playback`` ...).
        hardware_id: initial ``hardware_id`` (see :meth:`set_model`).
        period_s: publication period (1.0 s; ``<= 0`` disables the timer, tests call :meth:`publish`).

    Thread-safe counters (one lock); call :meth:`input` per received message, :meth:`output`
    per published result with its processing time, :meth:`dropped` per dropped input.
    """

    def __init__(self, node: Any, task: str, hardware_id: str = "", period_s: float = 1.0) -> None:
        self.node = node
        self.task = task
        self.hardware_id = hardware_id or node.get_name()
        self.model = "-"
        self._lock = threading.Lock()
        self.n_in = self.n_out = self.n_dropped = 0
        self._win_in = self._win_out = self._win_dropped = self._win_errors = 0
        self._lat: List[float] = []
        self._t_window = time.monotonic()
        self.pub = None
        self.timer = None
        try:
            from diagnostic_msgs.msg import DiagnosticArray  # optional heavy dependency
        except ImportError:  # pragma: no cover - diagnostic_msgs missing: counters only
            node.get_logger().warning("diagnostic_msgs not importable: no /diagnostics (pip install ros-diagnostic-msgs)")
            return
        from rclpy.clock import Clock, ClockType  # optional heavy dependency

        self.pub = node.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, output_qos(10))
        if period_s > 0:
            self.timer = node.create_timer(float(period_s), self.publish, clock=Clock(clock_type=ClockType.STEADY_TIME))

    # -- counters ------------------------------------------------------------------------
    def set_model(self, description: str) -> None:
        """Record the model / backend description (also used as ``hardware_id``)."""
        self.model = str(description) or "-"
        self.hardware_id = self.model

    def input(self, n: int = 1) -> None:
        """Count ``n`` received inputs."""
        with self._lock:
            self.n_in += n
            self._win_in += n

    def output(self, latency_ms: Optional[float] = None) -> None:
        """Count one published result; ``latency_ms``: its processing time (ms)."""
        with self._lock:
            self.n_out += 1
            self._win_out += 1
            if latency_ms is not None:
                self._lat.append(float(latency_ms))

    def dropped(self, n: int = 1) -> None:
        """Count ``n`` dropped inputs (stale, bad, or failed)."""
        with self._lock:
            self.n_dropped += n
            self._win_dropped += n

    def error(self) -> None:
        """Count one error in the current window (the next status is ERROR)."""
        with self._lock:
            self._win_errors += 1

    # -- message -------------------------------------------------------------------------
    def status(self) -> Any:
        """The ``DiagnosticStatus`` of the period since the last call (resets the window)."""
        from diagnostic_msgs.msg import DiagnosticStatus, KeyValue  # optional heavy dependency

        now = time.monotonic()
        with self._lock:
            dt = max(now - self._t_window, 1e-6)
            win_in, win_out, win_drop, win_err, lat = self._win_in, self._win_out, self._win_dropped, self._win_errors, self._lat
            self._win_in = self._win_out = self._win_dropped = self._win_errors = 0
            self._lat = []
            self._t_window = now
            n_in, n_out, n_drop = self.n_in, self.n_out, self.n_dropped
        state = _state_label(self.node)
        last_error = getattr(self.node, "last_error", "") or "-"
        if win_err:
            level, message = DiagnosticStatus.ERROR, f"{win_err} error(s): {last_error}"
        elif state not in ("active", "-"):
            level, message = DiagnosticStatus.WARN, f"not active ({state})"
        elif win_drop:
            level, message = DiagnosticStatus.WARN, f"{win_drop} frame(s) dropped"
        else:
            level, message = DiagnosticStatus.OK, "ok" if win_in else "ok (no input)"
        values: Dict[str, str] = {
            "state": state,
            "input rate (Hz)": f"{win_in / dt:.2f}",
            "output rate (Hz)": f"{win_out / dt:.2f}",
            "frames in": str(n_in),
            "frames out": str(n_out),
            "dropped frames": str(n_drop),
            "processing latency ms": (f"mean {sum(lat) / len(lat):.1f} max {max(lat):.1f}" if lat else "-"),
            "model": self.model,
            "last error": last_error,
        }
        return DiagnosticStatus(level=level, name=f"{self.node.get_name()}: {self.task}", message=message,
                                hardware_id=self.hardware_id, values=[KeyValue(key=k, value=v) for k, v in values.items()])

    def publish(self) -> None:
        """Publish one ``DiagnosticArray`` (stamped with the node clock) on ``/diagnostics``."""
        if self.pub is None:
            return
        from diagnostic_msgs.msg import DiagnosticArray  # optional heavy dependency

        try:
            msg = DiagnosticArray(status=[self.status()])
            msg.header.stamp = self.node.get_clock().now().to_msg()
            self.pub.publish(msg)
        except Exception as exc:  # context shutting down: diagnostics must never kill the node
            self.node.get_logger().debug(f"diagnostics not published: {exc}")


def _state_label(node: Any) -> str:
    machine = getattr(node, "_state_machine", None)
    if machine is None:
        return "-"
    try:
        return str(machine.current_state[1])
    except Exception:  # pragma: no cover - destroyed node
        return "-"
