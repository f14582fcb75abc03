"""``tf2_ros.Buffer`` behind :class:`drive_segment_ros.tf_buffer.TransformBuffer`'s lookups (where ROS 2 is installed).

The package uses :class:`~drive_segment_ros.tf_buffer.TransformBuffer` everywhere (the offline reader
and the nodes' ``/tf_static``; it also does vectorised per-point lookups, an extrapolation tolerance
and constant mountings on ``/tf``, which tf2 does not); this adapter exists so that, on a machine
with ROS 2, the tests check both give the same transforms
(``test/test_tf_buffer.py::test_matches_tf2_ros``), and so a node can use tf2's own buffer through
the same 4x4-matrix interface.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from drive_segment_ros.calibration import transform_to_matrix
from drive_segment_ros.tf_buffer import DEFAULT_CACHE_NS, ExtrapolationError
from drive_segment_ros.types import error_line


def tf2_available() -> bool:
    """True when ``tf2_ros`` and ``rclpy`` import."""
    try:
        import rclpy  # noqa: F401  # optional heavy dependency
        import tf2_ros  # noqa: F401  # optional heavy dependency
    except ImportError:
        return False
    return True


class Tf2Buffer:
    """A ``tf2_ros.Buffer`` with ``add_transform_stamped`` / ``lookup_transform`` / ``lookup_transform_full``
    returning (4, 4) float64 ``T_target_source`` (needs rclpy + tf2_ros; raises ImportError otherwise)."""

    def __init__(self, cache_ns: Optional[int] = DEFAULT_CACHE_NS) -> None:
        import tf2_ros  # optional heavy dependency
        from rclpy.duration import Duration  # optional heavy dependency

        self._buf = tf2_ros.Buffer(cache_time=Duration(nanoseconds=int(cache_ns or DEFAULT_CACHE_NS)))

    def add_transform_stamped(self, msg: Any, static: bool = False) -> None:
        """Add an rclpy ``geometry_msgs/TransformStamped``."""
        (self._buf.set_transform_static if static else self._buf.set_transform)(msg, "drive_segment")

    def lookup_transform(self, target: str, source: str, time_ns: Optional[int] = None) -> np.ndarray:
        """(4, 4) ``T_target_source`` at ``time_ns`` (None / 0 = latest); tf2 errors -> ExtrapolationError."""
        from rclpy.time import Time  # optional heavy dependency

        try:
            return transform_to_matrix(self._buf.lookup_transform(target, source, Time(nanoseconds=int(time_ns or 0))).transform)
        except Exception as exc:  # tf2 LookupException / ExtrapolationException / ConnectivityException
            raise ExtrapolationError(error_line(exc)) from None

    def lookup_transform_full(self, target: str, target_time_ns: int, source: str, source_time_ns: int,
                              fixed_frame: str) -> np.ndarray:
        """tf2 ``lookup_transform_full``: ``T_target(target_time)_source(source_time)`` through ``fixed_frame``."""
        from rclpy.time import Time  # optional heavy dependency

        try:
            ts = self._buf.lookup_transform_full(target, Time(nanoseconds=int(target_time_ns)), source,
                                                 Time(nanoseconds=int(source_time_ns)), fixed_frame)
        except Exception as exc:
            raise ExtrapolationError(error_line(exc)) from None
        return transform_to_matrix(ts.transform)
