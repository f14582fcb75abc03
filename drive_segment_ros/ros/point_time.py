"""Per-point timestamps of LiDAR driver clouds (``sensor_msgs/PointCloud2``), as absolute ns.

Conventions of the common drivers (their PCL point types, registered field by field):

=====================================  ==========  =========  ==========================================
driver / point type                    field       datatype   meaning
=====================================  ==========  =========  ==========================================
velodyne_pointcloud ``PointXYZIRT``    ``time``    FLOAT32    seconds relative to the cloud header stamp
ouster-ros ``ouster_ros::Point``       ``t``       UINT32     nanoseconds relative to the header stamp
Hesai / RoboSense / LIO-SAM types      ``timestamp`` FLOAT64  absolute seconds (Unix epoch)
Livox ``CustomPoint`` converted        ``timestamp`` FLOAT64  absolute nanoseconds
=====================================  ==========  =========  ==========================================

(``ring`` uint16 in Velodyne / Ouster, ``channel`` in newer Ouster / Hesai layouts, is read by
:func:`drive_segment_ros.ros.pointcloud2.read_points_xyzi`.) A ``timestamp`` field is taken as
absolute seconds when its values look like epoch seconds (> 1e8), absolute ns when > 1e17, else
as seconds relative to the header stamp. Other names accepted: ``time_stamp``, ``offset_time``
(Livox, uint32 ns relative), ``t`` as FLOAT32/64 (seconds relative).
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np

from drive_segment_ros.ros.msgtypes import header_stamp_ns
from drive_segment_ros.ros.pointcloud2 import _raw_view
from drive_segment_ros.types import DriveSegmentError

#: candidate per-point time fields, in order of preference
TIME_FIELDS = ("time", "t", "timestamp", "time_stamp", "offset_time")


def point_time_field(msg: Any) -> Optional[str]:
    """Name of the per-point time field of a PointCloud2, or None."""
    names = [f.name for f in msg.fields]
    for n in TIME_FIELDS:
        if n in names:
            return n
    return None


def read_point_times_ns(msg: Any, skip_nans: bool = True) -> Tuple[Optional[np.ndarray], Optional[str]]:
    """Absolute per-point stamps (ns) of a PointCloud2, aligned with ``read_points_xyzi(msg, skip_nans)``.

    Args:
        msg: rosbags or rclpy ``sensor_msgs/PointCloud2``.
        skip_nans: drop the points whose x, y or z is not finite (as ``read_points_xyzi`` does).

    Returns:
        ``(times, field)``: (N,) int64 ns since the epoch and the field name used, or
        ``(None, None)`` when the cloud has no per-point time field.

    Non-finite float times count as 0 (relative fields: the header stamp).

    Raises:
        DriveSegmentError: a time field of an unsupported type (count > 1); a cloud without ``header.stamp``.
    """
    name = point_time_field(msg)
    if name is None:
        return None, None
    arr = _raw_view(msg)
    if arr.dtype.fields[name][0].subdtype is not None:
        raise DriveSegmentError(f"PointCloud2 time field {name!r} has count > 1")
    raw = arr[name]
    stamp = header_stamp_ns(msg)
    kind = raw.dtype.kind
    if kind in "ui":  # ouster-ros ``t`` / Livox ``offset_time`` (and any integer field): ns relative to the header
        times = stamp + raw.astype(np.int64)
    else:
        vals = raw.astype(np.float64)
        finite = np.isfinite(vals)
        if not finite.all():
            vals = np.where(finite, vals, 0.0)
        ref = float(np.median(np.abs(vals))) if vals.size else 0.0
        if name in ("timestamp", "time_stamp") and ref > 1e17:  # absolute ns stored as float64
            times = np.round(vals).astype(np.int64)
        elif name in ("timestamp", "time_stamp") and ref > 1e8:  # absolute epoch seconds
            sec = np.floor(vals)
            times = sec.astype(np.int64) * 1_000_000_000 + np.round((vals - sec) * 1e9).astype(np.int64)
        else:  # Velodyne ``time``: seconds relative to the header stamp
            times = stamp + np.round(vals * 1e9).astype(np.int64)
    if skip_nans:
        keep = np.isfinite(arr["x"]) & np.isfinite(arr["y"]) & np.isfinite(arr["z"])
        if not keep.all():
            times = times[keep]
    return np.ascontiguousarray(times, dtype=np.int64), name
