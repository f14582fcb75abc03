"""rclpy nodes: thin adapters around the ROS-free algorithms.

* :mod:`.proposal_node` — PointCloud2 -> LiDAR segments (+ box markers).
* :mod:`.segmentation_node` — Image (+ CameraInfo, PointCloud2) -> class-id mask, colour
  mask, semantic points.
* :mod:`.pseudo_label_node` — replayed drive -> partial pseudo-labels on disk.
* :mod:`.bag_player_node` — ``ros2 bag play`` on ``rosbags`` (no rosbag2_py needed).
* :mod:`.composition` — all of them in one process and one executor.
* :mod:`.lifecycle` — managed-node base (``autostart``), signal-safe ``main()``.
* :mod:`.diagnostics` — ``/diagnostics`` publisher; :mod:`.transport` — QoS parameters, Fast DDS profile.

This module holds the small helpers they share (parameter declaration with descriptors,
error reporting that keeps the node alive, the ``main()`` boilerplate). ``rclpy`` is
imported lazily so ``import drive_segment_ros.nodes`` works without ROS.
"""
from __future__ import annotations

import os
import signal
import sys
import threading

#: console scripts of this package (setup.py entry points)
CONSOLE_SCRIPTS = ("proposal_node", "segmentation_node", "pseudo_label_node", "bag_player_node", "segment_stack")


def _exit_quietly_on_early_signal() -> None:
    """Ctrl-C / SIGTERM while a node process is still importing: exit 0 without a traceback.

    Only when this process is one of :data:`CONSOLE_SCRIPTS` (``ros2 run``, ``ros2 launch``;
    not ``python -m``, whose ``argv[0]`` is ``-m`` while packages import);
    :func:`~drive_segment_ros.nodes.lifecycle.run_nodes` installs the real handlers later.
    Importing the package anywhere else changes nothing.
    """
    prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if prog.removesuffix(".py") not in CONSOLE_SCRIPTS or threading.current_thread() is not threading.main_thread():
        return

    def _exit(signum, frame):  # noqa: ARG001
        raise SystemExit(0)

    for sig in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(sig) in (signal.default_int_handler, signal.SIG_DFL):
            signal.signal(sig, _exit)


_exit_quietly_on_early_signal()

# the guard above runs before the slower imports below (scipy via geometry: ~0.3 s)
import dataclasses  # noqa: E402
import logging  # noqa: E402
import re  # noqa: E402
from typing import Any, Dict, Optional, Sequence  # noqa: E402

import numpy as np  # noqa: E402

from drive_segment_ros.geometry import validate_transform  # noqa: E402
from drive_segment_ros.types import DriveSegmentError  # noqa: E402

LOG = logging.getLogger(__name__)

__all__ = [
    "declare_parameters",
    "dataclass_parameter_specs",
    "NodeErrorMixin",
    "run_nodes",
    "transform_from_parameter",
]


def _parameter_type(value: Any):
    from rcl_interfaces.msg import ParameterType  # optional heavy dependency

    if isinstance(value, bool):
        return ParameterType.PARAMETER_BOOL
    if isinstance(value, int):
        return ParameterType.PARAMETER_INTEGER
    if isinstance(value, float):
        return ParameterType.PARAMETER_DOUBLE
    if isinstance(value, str):
        return ParameterType.PARAMETER_STRING
    if isinstance(value, (list, tuple)):
        if value and all(isinstance(v, bool) for v in value):
            return ParameterType.PARAMETER_BOOL_ARRAY
        if value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return ParameterType.PARAMETER_INTEGER_ARRAY
        if value and all(isinstance(v, str) for v in value):
            return ParameterType.PARAMETER_STRING_ARRAY
        return ParameterType.PARAMETER_DOUBLE_ARRAY
    raise TypeError(f"unsupported parameter default {value!r}")


def declare_parameters(node: Any, specs: Dict[str, tuple]) -> Dict[str, Any]:
    """Declare ``specs`` = ``{name: (default, description)}`` on ``node`` with descriptors.

    Each parameter gets an ``rcl_interfaces/ParameterDescriptor`` with its description and
    explicit type (so an empty double array ``[]`` is typed). Returns ``{name: value}``
    after overrides (``--params-file``, ``parameter_overrides``) are applied.
    Source: rclpy ``Node.declare_parameter`` / ROS 2 "About parameters".
    """
    from rcl_interfaces.msg import ParameterDescriptor  # optional heavy dependency
    from rclpy.parameter import Parameter  # optional heavy dependency

    values = {}
    for name, (default, description) in specs.items():
        ptype = _parameter_type(default)
        descriptor = ParameterDescriptor(name=name, type=ptype, description=description)
        if isinstance(default, (list, tuple)) and not default:
            # an empty list has no element type: declare typed, with an explicit Parameter.Type
            value = node.declare_parameter(name, Parameter.Type(ptype), descriptor).value
            value = [] if value is None else value
        else:
            value = node.declare_parameter(name, default, descriptor).value
        values[name] = value
    return values


def _docstring_fields(cls: type) -> Dict[str, str]:
    """``{field: first line of its description}`` from a Google-style ``name, other: text`` docstring."""

    out: Dict[str, str] = {}
    for line in (cls.__doc__ or "").splitlines():
        m = re.match(r"^\s+([A-Za-z_][A-Za-z0-9_]*(?:,\s*[A-Za-z_][A-Za-z0-9_]*)*):\s+(\S.*)$", line)
        if m:
            for name in m.group(1).split(","):
                out.setdefault(name.strip(), m.group(2).strip())
    return out


def dataclass_parameter_specs(cls: type, prefix: str, docs: Optional[Dict[str, str]] = None) -> Dict[str, tuple]:
    """Parameter specs ``{prefix.field: (default, description)}`` for a config dataclass.

    Only fields with a scalar / list default of bool, int, float or str become parameters
    (``None`` defaults and nested objects are skipped). ``docs`` overrides descriptions.
    """
    specs = {}
    docs = {**_docstring_fields(cls), **(docs or {})}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        else:
            continue
        if isinstance(default, tuple):
            default = list(default)
        if not isinstance(default, (bool, int, float, str, list)):
            continue
        if isinstance(default, list) and not all(isinstance(v, (bool, int, float, str)) for v in default):
            continue
        if isinstance(default, list) and default and any(isinstance(v, float) for v in default):
            default = [float(v) for v in default]
        desc = docs.get(f.name) or str(f.metadata.get("help", "")) or f"{cls.__name__}.{f.name}"
        specs[f"{prefix}.{f.name}"] = (default, desc)
    return specs


def transform_from_parameter(values: Sequence[float], name: str = "T_cam_lidar") -> Optional[np.ndarray]:
    """A 4x4 float64 transform from a 16-element row-major parameter (``[]`` -> ``None``).

    Raises:
        DriveSegmentError: for a wrong length or a non-rigid / non-finite / mirrored matrix
        (:func:`drive_segment_ros.geometry.validate_transform`).
    """

    if values is None or len(values) == 0:
        return None
    arr = np.asarray(list(values), dtype=np.float64)
    if arr.size != 16 or not np.all(np.isfinite(arr)):
        raise DriveSegmentError(f"parameter {name} must hold 16 finite numbers (row-major 4x4), got {arr.size}")
    return validate_transform(arr, f"parameter {name}")


class NodeErrorMixin:
    """Report a bad message without killing the node.

    ``self.report_error(text)`` logs on the node's rclpy logger and this package's
    Python logger, counts it in ``self.n_errors`` and keeps ``self.last_error``.
    """

    n_errors: int = 0
    last_error: str = ""

    def report_error(self, text: str) -> None:
        """Log ``text`` as an error (rclpy + Python logging) and count it."""
        self.n_errors = getattr(self, "n_errors", 0) + 1
        self.last_error = str(text)
        self.get_logger().error(text)  # type: ignore[attr-defined]
        logging.getLogger(type(self).__module__).error("%s: %s", self.get_name(), text)  # type: ignore[attr-defined]


# at the end: lifecycle.py imports declare_parameters from this (then complete) module
from drive_segment_ros.nodes.lifecycle import run_nodes  # noqa: E402  (signal-safe main(), see lifecycle.run_nodes)
