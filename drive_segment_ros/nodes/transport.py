"""Transport settings of the nodes: per-input QoS parameters and the Fast DDS large-data profile.

QoS parameters
--------------
Every input subscription ``<input>`` (``image``, ``camera_info``, ``points``) of a node has three
parameters ``qos.<input>.reliability`` (``best_effort`` | ``reliable``), ``qos.<input>.durability``
(``volatile`` | ``transient_local``) and ``qos.<input>.depth`` (KEEP_LAST depth, >= 1).

The defaults (best effort, volatile, depth 1 for images) are chosen so that one subscription

* matches both kinds of publisher found on a car: sensor drivers with ``SensorDataQoS`` (best
  effort) and bag players / ``ros2 bag play`` (reliable) -- a best-effort reader is compatible
  with both, a reliable reader does not match a best-effort writer (ROS 2 docs, "Quality of
  Service settings", compatibility table);
* keeps only the newest frame when the node is slower than the input (KEEP_LAST 1: the DDS
  reader history overwrites the older sample, nothing queues up).

Fast DDS large-data profile
---------------------------
Measured on this machine (``bench/bench_node_transport.py``, section "transport"): a best-effort
subscriber lost 40-65 % of 1242x375 rgb8 images (1.4 MB) at 10 Hz while a reliable one got all.
The cause is the publisher's Fast DDS shared-memory segment: its default size is 512 KiB
(``SharedMemTransportDescriptor::segment_size``), smaller than one image, so every sample is
fragmented through a buffer that is recycled before the reader has copied the fragments; a
reliable reader re-requests the lost fragments (NACK), a best-effort one drops the sample.
Raising the UDP socket buffers (4 MiB = ``net.core.rmem_max`` here) or ``FASTDDS_BUILTIN_TRANSPORTS=
LARGE_DATA`` did not help for same-host traffic; a 32 MiB segment gave 150 of 150 frames at
30 Hz for best-effort and reliable readers. The segment belongs to the *writer*: the profile
must be active in every process that publishes images (camera drivers, the bag player, these
nodes' mask outputs). :data:`FASTDDS_PROFILE_XML` is that profile (also shipped as
``config/fastdds_large_data.xml``); :func:`apply_fastdds_profile` activates it for this process
through ``FASTDDS_DEFAULT_PROFILES_FILE`` unless the user already set a profile.
Source: Fast DDS docs "Shared Memory Transport" (segment_size), "XML profiles", "Large data".
"""
from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional

from drive_segment_ros.types import DriveSegmentError

LOG = logging.getLogger(__name__)

__all__ = ["qos_parameter_specs", "qos_from_parameters", "FASTDDS_PROFILE_XML", "apply_fastdds_profile", "PROFILE_ENV"]

RELIABILITIES = ("best_effort", "reliable")
DURABILITIES = ("volatile", "transient_local")

#: Environment variable a user sets to a Fast DDS XML file (``none`` disables our default).
PROFILE_ENV = "DRIVE_SEGMENT_FASTDDS_PROFILE"

#: Shared memory with a 32 MiB segment (several 1600x900 rgb8 images in flight) + UDPv4 with
#: 4 MiB socket buffers for other hosts. ``is_default_profile`` applies it to every participant.
FASTDDS_PROFILE_XML = """<?xml version="1.0" encoding="UTF-8" ?>
<!-- Fast DDS profile for camera-sized messages (drive_segment_ros, docs/vehicle.md).
     Use in EVERY process that publishes images (camera drivers, bag players, segmentation_node):
       export FASTDDS_DEFAULT_PROFILES_FILE=/path/to/fastdds_large_data.xml
     The shared-memory segment belongs to the publisher; the 512 KiB default is smaller than one
     image, and best-effort readers then lose most frames. -->
<dds xmlns="http://www.eprosima.com">
  <profiles>
    <transport_descriptors>
      <transport_descriptor>
        <transport_id>drive_segment_shm</transport_id>
        <type>SHM</type>
        <segment_size>33554432</segment_size>
        <maxMessageSize>8388608</maxMessageSize>
      </transport_descriptor>
      <transport_descriptor>
        <transport_id>drive_segment_udp</transport_id>
        <type>UDPv4</type>
        <sendBufferSize>4194304</sendBufferSize>
        <receiveBufferSize>4194304</receiveBufferSize>
      </transport_descriptor>
    </transport_descriptors>
    <participant profile_name="drive_segment_large_data" is_default_profile="true">
      <rtps>
        <userTransports>
          <transport_id>drive_segment_shm</transport_id>
          <transport_id>drive_segment_udp</transport_id>
        </userTransports>
        <useBuiltinTransports>false</useBuiltinTransports>
      </rtps>
    </participant>
  </profiles>
</dds>
"""


def qos_parameter_specs(name: str, reliability: str = "best_effort", durability: str = "volatile", depth: int = 1) -> Dict[str, tuple]:
    """``declare_parameters`` specs ``qos.<name>.{reliability,durability,depth}`` for one input."""
    return {
        f"qos.{name}.reliability": (reliability, f"{name} subscription reliability: best_effort (matches sensor drivers and bag players) or reliable"),
        f"qos.{name}.durability": (durability, f"{name} subscription durability: volatile or transient_local"),
        f"qos.{name}.depth": (int(depth), f"{name} subscription KEEP_LAST depth (1 = only the newest message waits)"),
    }


def qos_from_parameters(params: Dict[str, Any], name: str):
    """``rclpy.qos.QoSProfile`` (KEEP_LAST) from the ``qos.<name>.*`` values in ``params``.

    Raises:
        DriveSegmentError: unknown reliability / durability, depth < 1.
    """
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy  # optional heavy dependency

    rel = str(params[f"qos.{name}.reliability"]).lower()
    dur = str(params[f"qos.{name}.durability"]).lower()
    depth = int(params[f"qos.{name}.depth"])
    if rel not in RELIABILITIES:
        raise DriveSegmentError(f"qos.{name}.reliability must be one of {RELIABILITIES}, got {rel!r}")
    if dur not in DURABILITIES:
        raise DriveSegmentError(f"qos.{name}.durability must be one of {DURABILITIES}, got {dur!r}")
    if depth < 1:
        raise DriveSegmentError(f"qos.{name}.depth must be >= 1, got {depth}")
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.RELIABLE if rel == "reliable" else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if dur == "transient_local" else DurabilityPolicy.VOLATILE,
    )


def apply_fastdds_profile(environ: Optional[Dict[str, str]] = None) -> Optional[str]:
    """Point ``FASTDDS_DEFAULT_PROFILES_FILE`` at the large-data profile, before ``rclpy.init``.

    Does nothing (returns ``None``) when the user already chose a profile
    (``FASTDDS_DEFAULT_PROFILES_FILE`` / ``FASTRTPS_DEFAULT_PROFILES_FILE`` set), when
    ``DRIVE_SEGMENT_FASTDDS_PROFILE=none``, or when another RMW than Fast DDS is selected
    (``RMW_IMPLEMENTATION``). ``DRIVE_SEGMENT_FASTDDS_PROFILE=<file>`` selects another file.
    Otherwise writes :data:`FASTDDS_PROFILE_XML` to a per-user temp file (same content each
    time) and returns its path. Fast DDS reads the variable when the first participant of the
    process is created, so call this before the first ``rclpy.init``.
    """
    env = os.environ if environ is None else environ
    choice = env.get(PROFILE_ENV, "")
    if choice.lower() == "none":
        return None
    if env.get("FASTDDS_DEFAULT_PROFILES_FILE") or env.get("FASTRTPS_DEFAULT_PROFILES_FILE"):
        return None
    rmw = env.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    if "fastrtps" not in rmw:
        return None
    if choice:
        path = Path(choice)
        if not path.is_file():
            raise DriveSegmentError(f"{PROFILE_ENV}={choice}: no such file")
    else:
        path = Path(tempfile.gettempdir()) / f"drive_segment_fastdds_{os.getuid()}.xml"
        try:
            if not path.is_file() or path.read_text() != FASTDDS_PROFILE_XML:
                tmp = path.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_text(FASTDDS_PROFILE_XML)
                os.replace(tmp, path)
        except OSError as exc:  # read-only /tmp: run with the Fast DDS defaults
            LOG.warning("cannot write the Fast DDS profile %s (%s); large best-effort images may be lost", path, exc)
            return None
    env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(path)
    return str(path)
