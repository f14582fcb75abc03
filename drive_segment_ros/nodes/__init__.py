"""rclpy nodes: thin adapters around the ROS-free algorithms.

* :mod:`.proposal_node` — PointCloud2 -> LiDAR segments (+ box markers).
* :mod:`.segmentation_node` — Image (+ CameraInfo, PointCloud2) -> class-id mask, colour
  mask, semantic points.
* :mod:`.pseudo_label_node` — replayed drive -> partial pseudo-labels on disk.
* :mod:`.bag_player_node` — ``ros2 bag play`` on ``rosbags`` (no rosbag2_py needed).
* :mod:`.composition` — all of them in one process and one executor.

This module holds the small helpers they share (parameter declaration with descriptors,
error reporting that keeps the node alive, the ``main()`` boilerplate). ``rclpy`` is
imported lazily so ``import drive_segment_ros.nodes`` works without ROS.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import sys
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

import numpy as np

LOG = logging.getLogger(__name__)

__all__ = [
    "declare_parameters",
    "dataclass_parameter_specs",
    "NodeErrorMixin",
    "run_nodes",
    "transform_from_parameter",
]


def _parameter_type(value: Any):
    from rcl_interfaces.msg import ParameterType

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
    from rcl_interfaces.msg import ParameterDescriptor
    from rclpy.parameter import Parameter

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
    import re

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
        DriveSegmentError: for a wrong length or a non-rigid / non-finite matrix.
    """
    from drive_segment_ros.types import DriveSegmentError

    if values is None or len(values) == 0:
        return None
    arr = np.asarray(list(values), dtype=np.float64)
    if arr.size != 16 or not np.all(np.isfinite(arr)):
        raise DriveSegmentError(f"parameter {name} must hold 16 finite numbers (row-major 4x4), got {arr.size}")
    T = arr.reshape(4, 4)
    R = T[:3, :3]
    if not np.allclose(T[3], [0, 0, 0, 1], atol=1e-6) or not np.allclose(R @ R.T, np.eye(3), atol=1e-3):
        raise DriveSegmentError(f"parameter {name} is not a rigid transform (last row / rotation part)")
    return T


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


def run_nodes(factories: Iterable[Callable[..., Any]], args: Optional[List[str]] = None,
              until: Optional[Callable[[List[Any]], bool]] = None) -> int:
    """``main()`` boilerplate: init rclpy with ``args``, build nodes, spin one executor.

    Args:
        factories: callables ``f() -> Node`` or ``f() -> [Node, ...]`` (node classes work).
        args: command-line arguments (``--ros-args ...``), default ``sys.argv``.
        until: optional predicate ``until(nodes) -> bool``; spinning stops once it is true (bag finished).
    Returns:
        exit status (0; 2 on a :class:`DriveSegmentError` while building the nodes).
    """
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

    from drive_segment_ros.types import DriveSegmentError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    rclpy.init(args=args)
    nodes = []
    executor = SingleThreadedExecutor()
    status = 0
    try:
        for factory in factories:
            built = factory()
            for node in built if isinstance(built, (list, tuple)) else [built]:
                nodes.append(node)
                executor.add_node(node)
        while rclpy.ok() and not (until is not None and until(nodes)):
            executor.spin_once(timeout_sec=0.1)
    except DriveSegmentError as exc:  # bad parameters / files: one clear line, exit status 2
        prog = os.path.basename((args or sys.argv or ["node"])[0])
        print(f"{prog}: error: {exc}", file=sys.stderr)
        status = 2
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        for node in nodes:
            LOG.info("%s: %s processed, %s errors", node.get_name(),
                     getattr(node, "n_processed", getattr(node, "n_frames", "-")), getattr(node, "n_errors", 0))
        executor.shutdown()
        for node in nodes:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return status
