"""``proposal_node``: LiDAR object proposals on a live PointCloud2 stream.

Subscribes ``~/points`` (``sensor_msgs/PointCloud2``, SensorDataQoS) and, per scan, runs
:func:`drive_segment_ros.proposals.segment_scan` (ground removal + segments, docs/METHOD.md
stage 2; Bogoslavskyi & Stachniss range-image method or RANSAC + DBSCAN) and publishes

* ``~/segments`` — PointCloud2 with fields ``x, y, z, intensity`` (float32, metres, the input
  frame), ``segment`` (int32: ``>= 0`` segment id, ``-1`` ground, ``-2`` unassigned) and
  ``ground`` (uint8, 1 for ground points); same ``header`` (stamp, frame_id) as the input.
* ``~/markers`` — ``visualization_msgs/MarkerArray``: one ``DELETEALL`` marker, then one
  axis-aligned ``CUBE`` box per segment (namespace ``segments``, id = segment id, colour
  from the segment palette), same header as the input.

Parameters (declared with descriptors, see ``config/segment.yaml``): ``proposals.<field>`` for
every scalar field of :class:`~drive_segment_ros.proposals.ProposalConfig`,
``proposals_config`` (optional YAML overriding the defaults; explicit parameters win),
``publish_markers`` (bool), ``marker_alpha`` (float). Bad input (empty cloud, missing x/y/z)
is logged as an error and the node keeps running.
"""
from __future__ import annotations

import colorsys
import dataclasses
import logging
import time
from typing import Any, Dict, List, Optional

import numpy as np

from drive_segment_ros.nodes import dataclass_parameter_specs, run_nodes
from drive_segment_ros.nodes.lifecycle import ManagedNode, destroy_subscriptions
from drive_segment_ros.nodes.runtime import tune_malloc
from drive_segment_ros.nodes.transport import qos_from_parameters, qos_parameter_specs
from drive_segment_ros.proposals import ProposalConfig, segment_scan
from drive_segment_ros.ros.msgtypes import header_stamp_ns, rclpy_types
from drive_segment_ros.ros.pointcloud2 import array_to_pointcloud2, read_points_xyzi
from drive_segment_ros.ros.qos import output_qos
from drive_segment_ros.types import DriveSegmentError
from drive_segment_ros.visualization import palette

LOG = logging.getLogger(__name__)

__all__ = ["ProposalNode", "segments_cloud_array", "segment_boxes", "segment_colors", "main"]

SEGMENT_DTYPE = np.dtype(
    [("x", np.float32), ("y", np.float32), ("z", np.float32), ("intensity", np.float32), ("segment", np.int32), ("ground", np.uint8)]
)


def segments_cloud_array(points: np.ndarray, labels: np.ndarray, ground_label: int = -1) -> np.ndarray:
    """Structured (N,) array ``x, y, z, intensity`` float32, ``segment`` int32, ``ground`` uint8.

    Args:
        points: (N, >=3) float, metres (column 3 = intensity, 0 when absent).
        labels: (N,) int segment labels from ``segment_scan`` (``ground_label`` marks ground).
    Raises:
        DriveSegmentError: when the shapes disagree.
    """
    points = np.asarray(points)
    labels = np.asarray(labels)
    if points.ndim != 2 or points.shape[1] < 3 or labels.shape != (points.shape[0],):
        raise DriveSegmentError(f"points (N,>=3) and labels (N,) disagree: {points.shape} vs {labels.shape}")
    out = np.empty(points.shape[0], dtype=SEGMENT_DTYPE)
    out["x"], out["y"], out["z"] = points[:, 0], points[:, 1], points[:, 2]
    out["intensity"] = points[:, 3] if points.shape[1] > 3 else 0.0
    out["segment"] = labels
    out["ground"] = labels == ground_label
    return out


def segment_boxes(points: np.ndarray, labels: np.ndarray):
    """Axis-aligned bounding boxes of the segments (labels ``>= 0``), vectorised.

    Returns:
        ids (S,) int32 sorted, mins (S, 3) float64, maxs (S, 3) float64, counts (S,) int64.
    """
    labels = np.asarray(labels)
    keep = labels >= 0
    if not keep.any():
        return np.zeros(0, np.int32), np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0, np.int64)
    xyz = np.asarray(points, dtype=np.float64)[keep, :3]
    lab = labels[keep]
    order = np.argsort(lab, kind="stable")
    lab, xyz = lab[order], xyz[order]
    starts = np.flatnonzero(np.r_[True, lab[1:] != lab[:-1]])
    ids = lab[starts].astype(np.int32)
    mins = np.minimum.reduceat(xyz, starts, axis=0)
    maxs = np.maximum.reduceat(xyz, starts, axis=0)
    counts = np.diff(np.r_[starts, lab.size])
    return ids, mins, maxs, counts


def segment_colors(ids: np.ndarray) -> np.ndarray:
    """(S, 3) float RGB in [0, 1] per segment id (the package palette, else golden-ratio hues)."""
    ids = np.asarray(ids, dtype=np.int64)
    if ids.size == 0:
        return np.zeros((0, 3))
    try:
        pal = np.asarray(palette(int(ids.max()) + 1), dtype=np.float64) / 255.0
        return pal[ids]
    except Exception:  # visualization not available: deterministic HSV wheel

        hues = (ids * 0.618033988749895) % 1.0
        return np.array([colorsys.hsv_to_rgb(h, 0.8, 0.95) for h in hues])


class ProposalNode(ManagedNode):
    """PointCloud2 -> segments cloud + box markers (see module doc for topics / parameters).

    Managed (lifecycle) node: parameters / ``proposals_config`` are read and publishers created
    in ``on_configure``, ``~/points`` is subscribed in ``on_activate`` (``autostart`` does both).

    Attributes (for tests / diagnostics): ``config`` (ProposalConfig), ``n_processed``,
    ``n_errors``, ``last_error``, ``last_timing_ms``, ``diagnostics``.
    """

    def __init__(self, node_name: str = "proposal_node", **kwargs: Any) -> None:
        self.n_processed = 0
        self.last_timing_ms = 0.0
        self.sub = None
        self.pub_segments = self.pub_markers = None
        self._field_specs = dataclass_parameter_specs(ProposalConfig, "proposals")
        specs = {
            "proposals_config": ("", "YAML file with ProposalConfig values (config/proposals.yaml); explicit proposals.* parameters override it"),
            "publish_markers": (True, "publish ~/markers (MarkerArray of axis-aligned segment boxes)"),
            "marker_alpha": (0.4, "opacity of the segment boxes in [0, 1]"),
            **qos_parameter_specs("points", "best_effort", "volatile", 1),
        }
        super().__init__(node_name, {**specs, **self._field_specs}, task="proposals", **kwargs)

    def configure(self) -> None:
        """Build the ProposalConfig, create the publishers."""

        # A long-running node segments a scan every 50-100 ms: keep large buffers mapped instead
        # of paying page faults for fresh arrays on every scan (see bench/bench_proposals.py).
        tune_malloc()
        self.types = rclpy_types()
        values = self.params
        self.config = self._build_config(values)
        self.publish_markers = bool(values["publish_markers"])
        self.marker_alpha = float(values["marker_alpha"])
        self.points_qos = qos_from_parameters(values, "points")
        self.diagnostics.set_model(f"proposals {getattr(self.config, 'backend', '')}".strip())
        self.pub_segments = self.create_publisher(self.types.PointCloud2, "~/segments", output_qos())
        self.pub_markers = self.create_publisher(self.types.MarkerArray, "~/markers", output_qos())

    def activate(self) -> None:
        """Subscribe ``~/points``."""
        self.sub = self.create_subscription(self.types.PointCloud2, "~/points", self.on_points, self.points_qos)
        self.get_logger().info(f"proposal_node active: {self.sub.topic_name} -> {self.pub_segments.topic_name}")

    def deactivate(self) -> None:
        """Stop the ``~/points`` subscription."""
        destroy_subscriptions(self, [self.sub] if self.sub is not None else [])
        self.sub = None

    def cleanup(self) -> None:
        """Destroy publishers and subscription."""
        self.deactivate()
        for pub in (self.pub_segments, self.pub_markers):
            if pub is not None:
                self.destroy_publisher(pub)
        self.pub_segments = self.pub_markers = None

    def _build_config(self, values: Dict[str, Any]) -> ProposalConfig:
        """``proposals_config`` YAML (if set) overridden by every non-default ``proposals.*`` parameter;
        without a YAML, all ``proposals.*`` parameters. Raises DriveSegmentError (bad file / values)."""
        path = values.get("proposals_config") or ""
        kwargs = dataclasses.asdict(ProposalConfig.from_yaml(path)) if path else {}
        for name, (default, _) in self._field_specs.items():
            value = self.get_parameter(name).value
            if not path or value != default:
                kwargs[name.split(".", 1)[1]] = value
        return ProposalConfig(**kwargs)

    def on_points(self, msg: Any) -> None:
        """Callback: segment one scan and publish; errors are logged, the node keeps running."""
        self.diagnostics.input()
        try:
            self.process(msg)
        except DriveSegmentError as exc:
            self.diagnostics.dropped()
            self.report_error(f"dropped cloud ({msg.header.frame_id!r}): {exc}")
        except Exception as exc:  # keep the node alive on unexpected failures, but say so
            self.diagnostics.dropped()
            self.report_error(f"dropped cloud ({msg.header.frame_id!r}): {type(exc).__name__}: {exc}")
        else:
            self.diagnostics.output(self.last_timing_ms)

    def process(self, msg: Any):
        """Segment ``msg`` and publish ``~/segments`` and ``~/markers``; returns the structured array.

        Raises:
            DriveSegmentError: empty cloud or no x/y/z fields.
        """
        t0 = time.perf_counter()
        points, rings = read_points_xyzi(msg)
        if points.shape[0] == 0:
            raise DriveSegmentError("empty PointCloud2 (0 finite points)")
        proposals = segment_scan(points, self.config, rings=rings)
        labels = np.asarray(proposals.labels, dtype=np.int32)
        arr = segments_cloud_array(points, labels)
        stamp = header_stamp_ns(msg)
        frame_id = msg.header.frame_id
        out = array_to_pointcloud2(arr, frame_id, stamp, self.types)
        out.header = msg.header
        self.pub_segments.publish(out)
        if self.publish_markers:
            self.pub_markers.publish(self.make_markers(msg.header, points, labels))
        self.n_processed += 1
        self.last_timing_ms = (time.perf_counter() - t0) * 1e3
        self.get_logger().debug(f"{points.shape[0]} points -> {int(proposals.n_segments)} segments in {self.last_timing_ms:.1f} ms")
        return arr

    def make_markers(self, header: Any, points: np.ndarray, labels: np.ndarray):
        """MarkerArray: ``DELETEALL`` then one CUBE per segment (centre, size = box extent, min 5 cm)."""
        T = self.types
        ids, mins, maxs, _ = segment_boxes(points, labels)
        colors = segment_colors(ids)
        centres = (mins + maxs) / 2.0
        sizes = np.maximum(maxs - mins, 0.05)
        markers: List[Any] = [T.Marker(header=header, ns="segments", id=0, action=T.Marker.DELETEALL)]
        for k in range(ids.size):  # one message object per segment (no per-point work)
            m = T.Marker(header=header, ns="segments", id=int(ids[k]), type=T.Marker.CUBE, action=T.Marker.ADD)
            m.pose.position.x, m.pose.position.y, m.pose.position.z = (float(v) for v in centres[k])
            m.pose.orientation.w = 1.0
            m.scale.x, m.scale.y, m.scale.z = (float(v) for v in sizes[k])
            m.color.r, m.color.g, m.color.b = (float(v) for v in colors[k])
            m.color.a = self.marker_alpha
            markers.append(m)
        return T.MarkerArray(markers=markers)


def main(args: Optional[list] = None) -> int:
    """Console script ``proposal_node``: spin one :class:`ProposalNode` (``--ros-args`` accepted)."""
    return run_nodes([ProposalNode], args=args)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
