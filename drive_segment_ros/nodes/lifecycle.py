"""Managed (lifecycle) node base and a signal-safe ``main()`` for every node of the package.

:class:`ManagedNode` is an ``rclpy.lifecycle.LifecycleNode`` (REP-2002 state machine: unconfigured
-> inactive -> active). Subclasses implement

* :meth:`ManagedNode.configure` -- read parameters, load the model / engine / bag, create publishers
  (``on_configure``);
* :meth:`ManagedNode.activate` -- create the input subscriptions / start playback (``on_activate``);
* :meth:`ManagedNode.deactivate` -- destroy the subscriptions (``on_deactivate``);
* :meth:`ManagedNode.cleanup` -- release what ``configure`` built (``on_cleanup``).

The ``autostart`` parameter (default ``true``) configures and activates the node in its
constructor, so ``ros2 run`` / ``launch_ros.actions.Node`` / ``segment_stack`` work as plain
nodes; with ``autostart:=false`` it waits, unconfigured, for a lifecycle manager
(``ros2 lifecycle set /segmentation_node configure``, ``nav2_lifecycle_manager``,
``launch_ros.actions.LifecycleNode``). In the autostart path a configure failure raises its
:class:`DriveSegmentError` from the constructor (one line, exit status 2 in :func:`run_nodes`);
when managed, it is logged and the transition returns FAILURE (node stays unconfigured).

:func:`run_nodes` replaces rclpy's signal handling: SIGINT and SIGTERM -- at any point, also
during model loading, also twice (a terminal's Ctrl-C reaches the process group *and* launch
forwards SIGINT) -- end the process with exit status 0 and no traceback. While nodes are
being built (model loading) the first signal aborts the build; while spinning it stops the
loop; during clean-up further signals are ignored. The rclpy context is shut down only after
the nodes are destroyed, so no ``context is invalid`` errors.
Source: ROS 2 design "Managed nodes"; rclpy ``rclpy.lifecycle``; ``rclpy.signals.SignalHandlerOptions``.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
from typing import Any, Callable, Dict, Iterable, List, Optional

from drive_segment_ros.nodes import NodeErrorMixin, declare_parameters
from drive_segment_ros.nodes.diagnostics import NodeDiagnostics
from drive_segment_ros.nodes.transport import apply_fastdds_profile
from drive_segment_ros.types import DriveSegmentError

LOG = logging.getLogger(__name__)

try:
    from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
except ImportError:  # pragma: no cover - no rclpy: the module still imports (docs, static checks)
    LifecycleNode = object  # type: ignore[misc,assignment]
    TransitionCallbackReturn = None  # type: ignore[assignment]

__all__ = ["ManagedNode", "MANAGED_PARAMETERS", "ShutdownRequested", "run_nodes", "destroy_subscriptions"]

#: Parameters every managed node declares.
MANAGED_PARAMETERS: Dict[str, tuple] = {
    "autostart": (True, "configure and activate at start-up; false: wait for a lifecycle manager (ros2 lifecycle set ...)"),
}


class ShutdownRequested(BaseException):
    """Raised by the signal handler while nodes are being built (not an ``Exception``: never swallowed)."""


def destroy_subscriptions(node: Any, subs: Iterable[Any]) -> None:
    """Destroy rclpy subscriptions or ``message_filters.Subscriber`` objects (their ``.sub``)."""
    for sub in subs or []:
        inner = getattr(sub, "sub", sub)
        try:
            node.destroy_subscription(inner)
        except Exception:  # pragma: no cover - already destroyed
            pass


class ManagedNode(NodeErrorMixin, LifecycleNode):
    """Lifecycle node with error reporting, diagnostics and ``autostart`` (see module doc).

    Args:
        node_name: ROS node name.
        parameters: ``{name: (default, description)}`` declared in the constructor (so
            ``ros2 param`` works while unconfigured); values in ``self.params``.
        task: diagnostics task name.
        **kwargs: ``rclpy.node.Node`` keyword arguments.

    Raises:
        DriveSegmentError: with ``autostart``, when configuring / activating fails.

    Attributes: ``params``, ``diagnostics`` (:class:`NodeDiagnostics`), ``n_errors``, ``last_error``,
    ``configure_error``.
    """

    def __init__(self, node_name: str, parameters: Dict[str, tuple], task: str, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)

        self.params = declare_parameters(self, {**parameters, **MANAGED_PARAMETERS})
        self.configure_error: Optional[DriveSegmentError] = None
        self._autostarting = False
        self.diagnostics = NodeDiagnostics(self, task)
        if self.params["autostart"]:
            self.startup()

    # -- error reporting (NodeErrorMixin's, plus diagnostics) -------------------------------
    def report_error(self, text: str) -> None:
        """Log ``text`` as one error line (rclpy + Python logging), count it, show it on /diagnostics."""
        super().report_error(text)
        diag = getattr(self, "diagnostics", None)
        if diag is not None:
            diag.error()

    # -- start-up ---------------------------------------------------------------------------
    def startup(self) -> None:
        """Configure and activate now (the ``autostart`` path).

        Raises:
            DriveSegmentError: the configure error (the node is destroyed first), or an
            activation failure.
        """
        self._autostarting = True
        try:
            ret = self.trigger_configure()
            if ret != TransitionCallbackReturn.SUCCESS:
                err = self.configure_error or DriveSegmentError(f"{self.get_name()}: configure failed ({self.last_error or ret})")
                self.destroy_node()
                raise err
            ret = self.trigger_activate()
            if ret != TransitionCallbackReturn.SUCCESS:
                err = DriveSegmentError(f"{self.get_name()}: activate failed ({self.last_error or ret})")
                self.destroy_node()
                raise err
        finally:
            self._autostarting = False

    @property
    def state(self) -> str:
        """Current lifecycle state label (``unconfigured``, ``inactive``, ``active``, ``finalized``)."""
        return str(self._state_machine.current_state[1])

    # -- hooks for subclasses ---------------------------------------------------------------
    def configure(self) -> None:  # pragma: no cover - overridden
        """Load resources and create publishers. Raise DriveSegmentError on bad parameters / files."""

    def activate(self) -> None:  # pragma: no cover - overridden
        """Create the input subscriptions."""

    def deactivate(self) -> None:  # pragma: no cover - overridden
        """Destroy the input subscriptions."""

    def cleanup(self) -> None:  # pragma: no cover - overridden
        """Release what :meth:`configure` built."""

    # -- lifecycle callbacks ----------------------------------------------------------------
    def on_configure(self, state: Any):
        """Refresh ``self.params`` from the node parameters, run :meth:`configure`; FAILURE (after :meth:`cleanup`) on any error."""
        self.configure_error = None
        try:
            for name in list(self.params):  # values set with `ros2 param set` while unconfigured count
                param = self.get_parameter_or(name, None)
                value = None if param is None else param.value
                self.params[name] = [] if value is None and isinstance(self.params[name], list) else value
            self.configure()
        except DriveSegmentError as exc:
            return self._transition_failed(exc)
        except Exception as exc:
            return self._transition_failed(DriveSegmentError(f"{type(exc).__name__}: {exc}"))
        return TransitionCallbackReturn.SUCCESS

    def _transition_failed(self, exc: DriveSegmentError):
        self.configure_error = exc
        self.last_error = str(exc)
        if not self._autostarting:  # managed: say it here; autostart raises it from the constructor
            self.report_error(f"configure failed: {exc}")
        try:
            self.cleanup()
        except Exception:  # pragma: no cover - partial configure
            pass
        return TransitionCallbackReturn.FAILURE

    def on_activate(self, state: Any):
        """Run :meth:`activate`; an error is reported and returns FAILURE."""
        try:
            self.activate()
        except Exception as exc:
            self.report_error(f"activate failed: {exc}")
            return TransitionCallbackReturn.FAILURE
        return super().on_activate(state)

    def on_deactivate(self, state: Any):
        """Run :meth:`deactivate`."""
        self.deactivate()
        return super().on_deactivate(state)

    def on_cleanup(self, state: Any):
        """Run :meth:`cleanup`."""
        self.cleanup()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: Any):
        """Deactivate (when active) and clean up (when configured) before the node is finalized."""
        if state.label == "active":
            self.deactivate()
        if state.label in ("active", "inactive"):
            self.cleanup()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: Any):
        """Report the error, deactivate and clean up; the node goes back to unconfigured."""
        self.report_error(f"lifecycle error while {state.label}; back to unconfigured")
        try:
            self.deactivate()
            self.cleanup()
        except Exception:  # pragma: no cover
            pass
        return TransitionCallbackReturn.SUCCESS


# ---------------------------------------------------------------------------------- main()
class _Signals:
    """SIGINT / SIGTERM handler with three phases: ``build`` (raise), ``spin`` (flag), ``stop`` (ignore)."""

    def __init__(self) -> None:
        self.phase = "build"
        self.received: List[int] = []
        self._previous: Dict[int, Any] = {}

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            try:
                signal.signal(sig, handler)
            except (TypeError, ValueError):  # pragma: no cover
                pass

    def _handle(self, signum: int, frame: Any) -> None:
        self.received.append(signum)
        if self.phase == "build" and len(self.received) == 1:
            raise ShutdownRequested(signum)

    @property
    def stop(self) -> bool:
        return bool(self.received)


def run_nodes(factories: Iterable[Callable[..., Any]], args: Optional[List[str]] = None,
              until: Optional[Callable[[List[Any]], bool]] = None) -> int:
    """``main()`` of every node: init rclpy with ``args``, build nodes, spin one executor, exit cleanly.

    Args:
        factories: callables ``f() -> Node`` or ``f() -> [Node, ...]`` (node classes work).
        args: command-line arguments (``--ros-args ...``), default ``sys.argv``.
        until: optional predicate ``until(nodes) -> bool``; spinning stops once it is true (bag finished).
    Returns:
        exit status: 0 (also after SIGINT / SIGTERM), 2 on a :class:`DriveSegmentError` while
        building the nodes (one ``<prog>: error: <message>`` line on stderr).

    Applies the Fast DDS large-data profile first (:func:`drive_segment_ros.nodes.transport.apply_fastdds_profile`).
    """
    import rclpy  # optional heavy dependency
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor  # optional heavy dependency
    from rclpy.signals import SignalHandlerOptions  # optional heavy dependency

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    prog = os.path.basename((args or sys.argv or ["node"])[0])
    signals = _Signals()
    signals.install()
    nodes: List[Any] = []
    executor = None
    status = 0
    context_ok = False
    try:
        try:
            apply_fastdds_profile()
            rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
            context_ok = True
            executor = SingleThreadedExecutor()
            for factory in factories:
                built = factory()
                for node in built if isinstance(built, (list, tuple)) else [built]:
                    nodes.append(node)
                    executor.add_node(node)
            signals.phase = "spin"
            if signals.stop:
                raise ShutdownRequested()
            while rclpy.ok() and not signals.stop and not (until is not None and until(nodes)):
                executor.spin_once(timeout_sec=0.1)
        except DriveSegmentError as exc:  # bad parameters / files: one clear line, exit status 2
            signals.phase = "stop"
            if not signals.received:  # (a signal raised inside C code, e.g. torch loading, comes back as an error)
                print(f"{prog}: error: {exc}", file=sys.stderr)
                status = 2
        except (ShutdownRequested, KeyboardInterrupt, ExternalShutdownException):
            signals.phase = "stop"
        except Exception:
            signals.phase = "stop"
            if not signals.received:
                raise
        finally:
            signals.phase = "stop"
            _shutdown(nodes, executor, context_ok)
    except ShutdownRequested:  # pragma: no cover - a signal raced the phase change
        pass
    finally:
        # A console script (args None) is about to exit: ignore late signals (a second Ctrl-C must
        # not kill the interpreter during its teardown; Python resets Python-level handlers to
        # SIG_DFL when it finalizes, but leaves SIG_IGN). Called with args (tests, an embedding
        # program): give the caller its handlers back.
        if args is None:
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, signal.SIG_IGN)
        else:
            signals.restore()
    if signals.received:
        LOG.info("%s: stopped by signal %s", prog, signals.received[0])
    return status


def _shutdown(nodes: List[Any], executor: Any, context_ok: bool) -> None:
    """Finish nodes (``shutdown_hook``), destroy them, then the executor and the context; never raises."""
    import rclpy  # optional heavy dependency

    for node in nodes:
        hook = getattr(node, "shutdown_hook", None)
        try:
            if hook is not None:
                hook()
            LOG.info("%s: %s processed, %s errors", node.get_name(),
                     getattr(node, "n_processed", getattr(node, "n_frames", "-")), getattr(node, "n_errors", 0))
        except Exception as exc:  # pragma: no cover
            LOG.warning("shutdown of %s: %s", getattr(node, "get_name", lambda: "?")(), exc)
    if executor is not None:
        try:
            executor.shutdown(timeout_sec=1.0)
        except Exception:  # pragma: no cover
            pass
    for node in nodes:
        try:
            node.destroy_node()
        except Exception:  # pragma: no cover
            pass
    if context_ok:
        try:
            if rclpy.ok():
                # uninstall_handlers=False: rclpy installed none (SignalHandlerOptions.NO); "uninstalling"
                # would reset SIGINT to SIG_DFL and a second Ctrl-C would kill the process (status -2)
                rclpy.shutdown(uninstall_handlers=False)
        except Exception:  # pragma: no cover
            pass
