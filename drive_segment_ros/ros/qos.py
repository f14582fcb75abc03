"""QoS profiles used by the nodes (rclpy imported lazily; callers must have rclpy).

* :func:`sensor_qos` — ``rclpy.qos.qos_profile_sensor_data`` (SensorDataQoS: best effort,
  keep last 5, volatile), optionally with a different depth. A best-effort subscription
  accepts both best-effort and reliable publishers (ROS 2 docs, "Quality of Service
  settings", QoS compatibility table).
* :func:`latest_only_qos` — sensor QoS with depth 1: keep only the newest frame (Isaac ROS
  image segmentation convention) so a slow consumer drops stale frames instead of queueing.
* :func:`output_qos` — reliable, keep last ``depth``, volatile: what RViz2 and ``ros2 bag
  record`` subscribe to by default, and also readable by best-effort subscribers.
* :func:`tf_static_qos` — reliable, transient local, keep last 100 (``tf2_ros``
  ``StaticTransformBroadcaster`` / ``/tf_static`` convention, REP 105 tooling).
"""
from __future__ import annotations

__all__ = ["sensor_qos", "latest_only_qos", "output_qos", "tf_static_qos", "latched_qos"]


def sensor_qos(depth: int = 5):
    """SensorDataQoS (best effort, volatile, keep last ``depth``); ``depth=5`` equals ``qos_profile_sensor_data``."""
    from rclpy.qos import QoSProfile, qos_profile_sensor_data  # optional heavy dependency (ros extra)

    if depth == qos_profile_sensor_data.depth:
        return qos_profile_sensor_data
    return QoSProfile(
        history=qos_profile_sensor_data.history,
        depth=int(depth),
        reliability=qos_profile_sensor_data.reliability,
        durability=qos_profile_sensor_data.durability,
    )


def latest_only_qos():
    """Best effort, keep last 1: only the newest message waits for the callback."""
    return sensor_qos(1)


def output_qos(depth: int = 5):
    """Reliable, volatile, keep last ``depth``: for published results (RViz2 defaults to reliable)."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy  # optional heavy dependency (ros extra)

    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=int(depth),
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.VOLATILE,
    )


def latched_qos(depth: int = 1):
    """Reliable, transient local, keep last ``depth`` (late joiners get the last message)."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy  # optional heavy dependency (ros extra)

    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=int(depth),
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL,
    )


def tf_static_qos():
    """``/tf_static`` QoS: reliable, transient local, keep last 100 (as tf2_ros uses)."""
    return latched_qos(100)
