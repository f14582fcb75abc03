"""Drive reader: camera images paired in time with LiDAR scans from a rosbag (no ROS runtime).

Built on :class:`rosbags.highlevel.AnyReader` (https://ternaris.gitlab.io/rosbags/topics/highlevel.html),
so it reads ROS 2 bags (sqlite3 and mcap storage, a bag directory or its single storage file)
and ROS 1 ``.bag`` files. Roles are detected from the message types:

* images: ``sensor_msgs/Image`` and ``sensor_msgs/CompressedImage`` (a camera's ``.../compressed``
  topic is dropped when its raw topic is in the bag);
* CameraInfo: matched to an image topic by namespace (``/cam/image_raw`` <-> ``/cam/camera_info``)
  or, failing that, by ``header.frame_id``;
* LiDAR: the ``sensor_msgs/PointCloud2`` topic (the one with most messages when several);
* extrinsics: ``/tf_static`` (and ``/tf``) ``tf2_msgs/TFMessage`` -> ``T_cam_lidar``, or a
  calibration YAML (:func:`drive_segment_ros.calibration.load_calibration_yaml`).

Several cameras: every camera / scan pair is a frame. A camera without calibration (no CameraInfo
and no K in the calibration YAML, or no transform to the LiDAR frame) is reported and skipped
(:attr:`DriveReader.skipped`), not fatal; only a bag with no usable camera is an error.

Ego motion (``ego_motion="auto"``, the default): when ``/tf`` carries odometry that moves the LiDAR
frame against a fixed frame (``odom -> base_link``, ``map -> base_link`` from Foxglove's nuScenes
converter, ``world -> base_link`` from kitti2bag), every pair gets the compensated extrinsic
``T_cam_base @ T_base(t_img)_odom @ T_odom_base(t_scan) @ T_base_lidar`` (interpolated poses, see
:mod:`drive_segment_ros.ego_motion`), and clouds with per-point time (Velodyne ``time``, Ouster
``t``, Hesai ``timestamp``; :mod:`drive_segment_ros.ros.point_time`) are deskewed to the scan stamp
with one pose per point. Without odometry one static extrinsic per camera is used.
Bags are opened by :func:`drive_segment_ros.ros.bags.open_bag`: a truncated MCAP (recording cut
short) is read up to its last complete chunk with a warning (:mod:`drive_segment_ros.ros.bag_repair`),
and a ROS 1 profile MCAP (Foxglove's nuScenes converter) is read through a ROS 2 copy
(:mod:`drive_segment_ros.ros.mcap_ros1`).

Pairing (Drive&Segment, Vobecky et al. ECCV 2022 Sec. 3.1 / docs/METHOD.md stage 1 "synchronized drive
data": LiDAR and camera are never perfectly synchronized, so images are paired by timestamp): each
image goes with the scan whose *header* stamp is nearest, if within ``max_dt_ms``; others are
counted as unpaired and logged. Messages are streamed in bag order with bounded buffers (a few
recent scans, a bounded queue of images waiting for the next scan), so memory does not grow
with the drive length.
"""
from __future__ import annotations

import argparse
import datetime
import json
import logging
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Deque, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
from tqdm import tqdm

from drive_segment_ros.calibration import Calibration, load_calibration_yaml
from drive_segment_ros.ego_motion import EgoMotion
from drive_segment_ros.ros.bag_repair import check_bag
from drive_segment_ros.ros.bags import deserialize, iter_messages, open_bag
from drive_segment_ros.ros.camera_info import camera_model_from_info
from drive_segment_ros.ros.image import any_image_to_rgb
from drive_segment_ros.ros.msgtypes import header_stamp_ns
from drive_segment_ros.ros.point_time import point_time_field, read_point_times_ns
from drive_segment_ros.ros.pointcloud2 import read_points_xyzi
from drive_segment_ros.types import CameraModel, DriveFrame, DriveSegmentError

log = logging.getLogger(__name__)

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
POINTCLOUD2_TYPE = "sensor_msgs/msg/PointCloud2"
TF_TYPE = "tf2_msgs/msg/TFMessage"
TF_STATIC_TOPICS = ("/tf_static", "tf_static")
TF_TOPICS = ("/tf", "tf")


# --------------------------------------------------------------------------- pairing
@dataclass
class _Scan:
    stamp: int
    item: Any


@dataclass
class _PendingImage:
    stamp: int
    topic: str
    item: Any
    extra: Dict[str, Any] = field(default_factory=dict)


@dataclass
class PairingStats:
    """Counts of the time pairing: per image topic ``paired`` / ``unpaired``, and |dt| in ms; how many
    pairs got an ego-motion compensated extrinsic and how many scans were deskewed (full iteration only)."""

    paired: Dict[str, int] = field(default_factory=dict)
    unpaired: Dict[str, int] = field(default_factory=dict)
    abs_dt_ms: List[float] = field(default_factory=list)
    scans: int = 0
    abs_dt_ms_by_topic: Dict[str, List[float]] = field(default_factory=dict)
    compensated: int = 0
    not_compensated: int = 0
    deskewed_scans: int = 0

    def as_dict(self) -> Dict[str, Any]:
        """JSON-friendly dict: totals, per-topic counts, mean / max |dt| (ms)."""
        dts = np.asarray(self.abs_dt_ms, dtype=np.float64)
        return {
            "images_paired": int(sum(self.paired.values())),
            "images_unpaired": int(sum(self.unpaired.values())),
            "paired": dict(self.paired),
            "unpaired": dict(self.unpaired),
            "scans": int(self.scans),
            "mean_abs_dt_ms": float(dts.mean()) if dts.size else None,
            "max_abs_dt_ms": float(dts.max()) if dts.size else None,
            "per_camera": {t: {"paired": int(self.paired.get(t, 0)), "unpaired": int(self.unpaired.get(t, 0)),
                               "mean_abs_dt_ms": float(np.mean(v)) if v else None,
                               "max_abs_dt_ms": float(np.max(v)) if v else None}
                           for t, v in ((t, self.abs_dt_ms_by_topic.get(t, [])) for t in sorted(set(self.paired) | set(self.unpaired)))},
            "compensated_pairs": int(self.compensated),
            "uncompensated_pairs": int(self.not_compensated),
            "deskewed_scans": int(self.deskewed_scans),
        }


class TimePairer:
    """Streaming nearest-in-time pairing of image stamps with scan stamps (all ns).

    Feed messages in bag order with :meth:`add_scan` / :meth:`add_image`; each returns the
    resolved ``(pending_image, scan or None)`` pairs. An image is resolved as soon as a scan with
    stamp >= the image stamp arrives (the nearest scan is then that one or an earlier buffered
    one), when the pending queue exceeds ``max_pending``, or at :meth:`flush`. ``scan`` is
    ``None`` when no buffered scan lies within ``max_dt_ns``.
    """

    def __init__(self, max_dt_ns: int, scan_buffer: int = 16, max_pending: int = 32) -> None:
        self.max_dt_ns = int(max_dt_ns)
        self.scans: Deque[_Scan] = deque(maxlen=max(2, int(scan_buffer)))
        self.pending: Deque[_PendingImage] = deque()
        self.max_pending = max(1, int(max_pending))

    def _resolve(self, img: _PendingImage) -> Tuple[_PendingImage, Optional[_Scan]]:
        best, best_dt = None, None
        for scan in self.scans:
            dt = abs(scan.stamp - img.stamp)
            if best_dt is None or dt < best_dt:
                best, best_dt = scan, dt
        if best is None or best_dt > self.max_dt_ns:
            return img, None
        return img, best

    def add_scan(self, stamp: int, item: Any) -> List[Tuple[_PendingImage, Optional[_Scan]]]:
        """Buffer a scan; resolve every pending image with stamp <= this scan's stamp."""
        self.scans.append(_Scan(int(stamp), item))
        out, keep = [], deque()
        for img in self.pending:
            (out if img.stamp <= stamp else keep).append(img)
        self.pending = keep
        return [self._resolve(img) for img in out]

    def add_image(self, stamp: int, topic: str, item: Any, **extra: Any) -> List[Tuple[_PendingImage, Optional[_Scan]]]:
        """Queue an image; resolved now when a scan at or after it is already buffered."""
        img = _PendingImage(int(stamp), topic, item, dict(extra))
        if self.scans and max(s.stamp for s in self.scans) >= img.stamp:
            return [self._resolve(img)]
        self.pending.append(img)
        out = []
        while len(self.pending) > self.max_pending:
            out.append(self._resolve(self.pending.popleft()))
        return out

    def flush(self) -> List[Tuple[_PendingImage, Optional[_Scan]]]:
        """Resolve every pending image with the scans buffered so far (end of the bag)."""
        out = [self._resolve(img) for img in self.pending]
        self.pending.clear()
        return out


# --------------------------------------------------------------------------- helpers
def _namespace(topic: str) -> str:
    parts = topic.rstrip("/").split("/")
    if parts and parts[-1] in ("compressed", "theora", "compressedDepth"):
        parts = parts[:-1]
    return "/".join(parts[:-1])


def _field(msg: Any, *names: str) -> Any:
    for n in names:
        if hasattr(msg, n):
            return getattr(msg, n)
    raise AttributeError(names[0])


class _InfoView:
    """CameraInfo with ROS 1 (``K``, ``D``) field names mapped to ROS 2 (``k``, ``d``)."""

    def __init__(self, msg: Any) -> None:
        self.header = msg.header
        self.k = _field(msg, "k", "K")
        self.d = _field(msg, "d", "D")
        self.p = _field(msg, "p", "P")
        self.width, self.height = msg.width, msg.height
        self.distortion_model = msg.distortion_model


# --------------------------------------------------------------------------- reader
class DriveReader:
    """Iterate a bag as :class:`~drive_segment_ros.types.DriveFrame`\\ s (image + nearest LiDAR scan).

    Args:
        path: ROS 2 bag directory (sqlite3 or mcap), its ``.db3``/``.mcap`` file, or a ROS 1 ``.bag``.
        image_topics: image topics to use (default: every Image / CompressedImage topic).
        lidar_topic: PointCloud2 topic (default: auto-detected).
        camera_info_topics: CameraInfo topic per image topic — a list aligned with ``image_topics``
            or a dict ``{image_topic: info_topic}`` (default: matched by namespace / frame_id).
        calibration: calibration YAML path or a loaded :class:`~drive_segment_ros.calibration.Calibration`;
            its ``T_cam_lidar`` (and K/D overrides) take precedence over ``/tf_static``.
        max_dt_ms: largest |image stamp - scan stamp| accepted for a pair (header stamps), ms.
        progress: show a tqdm bar over the bag's messages while iterating.
        ego_motion: ``"auto"`` (compensate + deskew when ``/tf`` odometry moves the LiDAR frame),
            ``"on"`` (require odometry: error without it) or ``"off"`` (one static extrinsic per camera).
        tf_tolerance_ms: how far outside the odometry samples a stamp may lie and still use the
            nearest pose (beyond it the pair keeps the static extrinsic and is counted as uncompensated).

    Yields (iteration):
        DriveFrame with image (H, W, 3) uint8 RGB, points (N, 4) float32 x y z intensity in the
        LiDAR frame at the scan stamp (deskewed when the cloud has per-point time and odometry is
        present), rings (N,) int16 or None, camera (K, D, size, optical frame), T_cam_lidar
        (4, 4) float64 (ego-motion compensated for the pair's two stamps when odometry is present),
        both header stamps (ns), topics, a running index, and ``extra["ego_motion"]`` =
        ``{"compensated": bool, "deskewed": bool, "translation_m": ego motion between the stamps}``.

    Attributes:
        skipped: image topic -> why the camera was skipped (no CameraInfo / no transform).
        point_time_field: the scan's per-point time field (``time``/``t``/``timestamp``) or None.

    Raises:
        DriveSegmentError (one line): missing / corrupt bag, no image topic, no PointCloud2 topic,
        no usable camera (every camera lacks CameraInfo or a transform; the reasons are listed),
        wrong-shape calibration, an unknown requested topic, ``ego_motion="on"`` without odometry.
    """

    def __init__(
        self,
        path: Union[str, Path],
        image_topics: Optional[Sequence[str]] = None,
        lidar_topic: Optional[str] = None,
        camera_info_topics: Optional[Union[Sequence[str], Dict[str, str]]] = None,
        calibration: Any = None,
        max_dt_ms: float = 50.0,
        progress: bool = True,
        ego_motion: str = "auto",
        tf_tolerance_ms: float = 50.0,
    ) -> None:

        self.path = Path(path)
        self.max_dt_ms = float(max_dt_ms)
        if not np.isfinite(self.max_dt_ms) or self.max_dt_ms < 0:
            raise DriveSegmentError(f"max_dt_ms must be a finite number >= 0, got {max_dt_ms}")
        self.progress = bool(progress)
        if ego_motion not in ("auto", "on", "off"):
            raise DriveSegmentError(f"ego_motion must be 'auto', 'on' or 'off', got {ego_motion!r}")
        self.ego_motion_mode = ego_motion
        self.tf_tolerance_ms = float(tf_tolerance_ms)
        self.skipped: Dict[str, str] = {}
        self._motion: Optional[Any] = None
        if calibration is None or isinstance(calibration, Calibration):
            self.calibration = calibration
        else:
            self.calibration = load_calibration_yaml(calibration)
        self._stats: Optional[PairingStats] = None

        reader = open_bag(self.path)
        try:
            self._connections = list(reader.connections)
            self._topics: Dict[str, Dict[str, Any]] = {}
            for c in self._connections:
                entry = self._topics.setdefault(c.topic, {"msgtype": c.msgtype, "count": 0})
                entry["count"] += int(getattr(c, "msgcount", 0) or 0)
            self.image_topics = self._select_images(image_topics)
            self.lidar_topic = self._select_lidar(lidar_topic)
            first = {t: self._first_message(reader, t) for t in self.image_topics + [self.lidar_topic]}
            self.lidar_frame = str(first[self.lidar_topic].header.frame_id).lstrip("/") if first[self.lidar_topic] else ""
            if self.calibration is not None and self.calibration.lidar_frame and self.lidar_frame and \
                    self.calibration.lidar_frame != self.lidar_frame:
                log.warning("calibration lidar_frame %r differs from the scan frame %r", self.calibration.lidar_frame, self.lidar_frame)
            self.point_time_field = point_time_field(first[self.lidar_topic]) if first[self.lidar_topic] is not None else None
            self.camera_info_topics = self._match_infos(reader, camera_info_topics, first)
            self.tf = EgoMotion(cache_s=1e9, tolerance_ms=self.tf_tolerance_ms)  # first /tf only: structure + extrinsics
            self._read_tf(reader)
            self.cameras: Dict[str, CameraModel] = {}
            self.camera_frames: Dict[str, str] = {}
            self._T: Dict[str, np.ndarray] = {}
            self._T_source: Dict[str, str] = {}
            self._resolve_cameras(reader, first)
        finally:
            reader.close()
        self.ego_motion_available = self.tf.available(self.lidar_frame) if self.lidar_frame else False
        self.ego_motion_description = self.tf.describe(self.lidar_frame) if self.lidar_frame else "none: scan has no frame_id"
        if self.ego_motion_mode == "on" and not self.ego_motion_available:
            raise DriveSegmentError(f"ego_motion='on' but bag {str(self.path)!r} has no usable odometry: {self.ego_motion_description}")
        self.compensate = self.ego_motion_available and self.ego_motion_mode != "off"

    # ------------------------------------------------------------------ detection
    def _by_type(self, types: Sequence[str]) -> List[str]:
        return sorted(t for t, e in self._topics.items() if e["msgtype"] in types)

    def _select_images(self, image_topics) -> List[str]:
        found = self._by_type(IMAGE_TYPES)
        if image_topics:
            topics = [str(t) for t in image_topics]
            for t in topics:
                if t not in self._topics:
                    raise DriveSegmentError(f"image topic {t!r} is not in bag {str(self.path)!r} (image topics: {found})")
                if self._topics[t]["msgtype"] not in IMAGE_TYPES:
                    raise DriveSegmentError(f"topic {t!r} is {self._topics[t]['msgtype']}, not an Image / CompressedImage")
            return topics
        if not found:
            raise DriveSegmentError(f"no sensor_msgs/Image or CompressedImage topic in bag {str(self.path)!r}")
        raw = {t for t in found if self._topics[t]["msgtype"] == IMAGE_TYPES[0]}
        return [t for t in found if not (t.endswith("/compressed") and t[: -len("/compressed")] in raw)]

    def _select_lidar(self, lidar_topic) -> str:
        clouds = self._by_type((POINTCLOUD2_TYPE,))
        if lidar_topic:
            if lidar_topic not in self._topics or self._topics[lidar_topic]["msgtype"] != POINTCLOUD2_TYPE:
                raise DriveSegmentError(f"LiDAR topic {lidar_topic!r} is not a PointCloud2 topic of {str(self.path)!r} (PointCloud2 topics: {clouds})")
            return lidar_topic
        if not clouds:
            raise DriveSegmentError(f"no sensor_msgs/PointCloud2 (LiDAR) topic in bag {str(self.path)!r}")
        best = max(clouds, key=lambda t: (self._topics[t]["count"], t))
        if len(clouds) > 1:
            log.info("several PointCloud2 topics %s; using %s (pass lidar_topic to choose)", clouds, best)
        return best

    def _first_message(self, reader, topic: str):
        conns = [c for c in reader.connections if c.topic == topic]
        for conn, _, raw in iter_messages(reader, conns, self.path):
            return deserialize(reader, raw, conn, self.path)
        return None

    def _match_infos(self, reader, requested, first) -> Dict[str, Optional[str]]:
        infos = self._by_type((CAMERA_INFO_TYPE,))
        result: Dict[str, Optional[str]] = {}
        if requested:
            mapping = dict(requested) if isinstance(requested, dict) else dict(zip(self.image_topics, requested))
            if not isinstance(requested, dict) and len(requested) != len(self.image_topics):
                raise DriveSegmentError(f"camera_info_topics has {len(requested)} entries for {len(self.image_topics)} image topics")
            for img, info in mapping.items():
                if info not in self._topics or self._topics[info]["msgtype"] != CAMERA_INFO_TYPE:
                    raise DriveSegmentError(f"CameraInfo topic {info!r} is not in bag {str(self.path)!r} (CameraInfo topics: {infos})")
            result.update(mapping)
        info_frames: Dict[str, str] = {}
        for img in self.image_topics:
            if img in result:
                continue
            ns = _namespace(img)
            match = [i for i in infos if _namespace(i) == ns]
            if not match:
                if not info_frames:
                    for i in infos:
                        m = self._first_message(reader, i)
                        info_frames[i] = str(m.header.frame_id) if m is not None else ""
                frame = str(first[img].header.frame_id) if first.get(img) is not None else None
                match = [i for i in infos if frame and info_frames.get(i) == frame]
            result[img] = match[0] if match else None
        return result

    def _read_tf(self, reader) -> None:
        static = [c for c in reader.connections if c.topic in TF_STATIC_TOPICS and c.msgtype == TF_TYPE]
        for conn, _, raw in iter_messages(reader, static, self.path):
            self.tf.add_tf_message(deserialize(reader, raw, conn, self.path), static=True)
        dynamic = [c for c in reader.connections if c.topic in TF_TOPICS and c.msgtype == TF_TYPE]
        for n, (conn, _, raw) in enumerate(iter_messages(reader, dynamic, self.path)):
            if n >= 200:  # enough to know the tree and the static-like mountings; the rest is streamed
                break
            self.tf.add_tf_message(deserialize(reader, raw, conn, self.path), static=False)

    def _resolve_cameras(self, reader, first) -> None:
        for img in list(self.image_topics):
            try:
                self._resolve_camera(reader, first, img)
            except DriveSegmentError as exc:
                self.skipped[img] = str(exc)
                log.warning("skipping camera %s: %s", img, exc)
        self.image_topics = [t for t in self.image_topics if t not in self.skipped]
        if not self.image_topics:
            reasons = "; ".join(self.skipped.values())
            raise DriveSegmentError(f"no usable camera in bag {str(self.path)!r}: {reasons}")

    def _resolve_camera(self, reader, first, img: str) -> None:
        info_topic = self.camera_info_topics.get(img)
        first_img = first.get(img)
        img_frame = str(first_img.header.frame_id).lstrip("/") if first_img is not None else ""
        cal = self.calibration.for_camera(img_frame, img) if self.calibration is not None else None
        info_msg = self._first_message(reader, info_topic) if info_topic else None
        if info_msg is None:
            if cal is None or cal.K is None or not cal.width or not cal.height:
                raise DriveSegmentError(f"no CameraInfo for image topic {img!r} (CameraInfo topics: {self._by_type((CAMERA_INFO_TYPE,))}); give camera_info_topics or K/width/height in the calibration YAML")
            camera = CameraModel(K=cal.K, D=cal.D if cal.D is not None else np.zeros(0), width=cal.width,
                                 height=cal.height, frame_id=img_frame or img)
        else:
            size = None
            if first_img is not None:
                if hasattr(first_img, "encoding"):
                    size = (int(first_img.width), int(first_img.height))
                else:
                    h, w = any_image_to_rgb(first_img).shape[:2]
                    size = (w, h)
            camera = camera_model_from_info(_InfoView(info_msg), info_topic, image_size=size)
            if not camera.frame_id and img_frame:
                camera = CameraModel(K=camera.K, D=camera.D, width=camera.width, height=camera.height,
                                     frame_id=img_frame, distortion_model=camera.distortion_model)
            if cal is None and self.calibration is not None:
                cal = self.calibration.for_camera(camera.frame_id, img)
            if cal is not None:
                camera = cal.apply(camera)
        if cal is not None:
            T, source = cal.T_cam_lidar, f"calibration {self.calibration.source or 'YAML'}"
        else:
            T, source = self._lookup(camera.frame_id)
        self.cameras[img] = camera
        self.camera_frames[img] = camera.frame_id
        self._T[img] = T
        self._T_source[img] = source

    def _lookup(self, cam_frame: str) -> Tuple[np.ndarray, str]:
        """Static ``T_cam_lidar`` from the transform tree and where it came from."""
        cam_frame = cam_frame.lstrip("/")
        buf = self.tf.buffer
        if not buf.frames:
            raise DriveSegmentError(
                f"no transform between LiDAR frame {self.lidar_frame!r} and camera frame {cam_frame!r}: "
                f"bag has no /tf_static; pass a calibration YAML (config/calibration_example.yaml)"
            )
        try:
            T = buf.lookup_transform(cam_frame, self.lidar_frame)
            static = buf.is_static_chain(cam_frame, self.lidar_frame)
        except DriveSegmentError as exc:
            raise DriveSegmentError(
                f"no transform between LiDAR frame {self.lidar_frame!r} and camera frame {cam_frame!r} ({exc})"
            ) from None
        return T, "/tf_static" if static else "/tf"

    # ------------------------------------------------------------------ iteration
    def T_cam_lidar(self, image_topic: str) -> np.ndarray:
        """(4, 4) float64 static LiDAR -> camera optical transform of ``image_topic`` (before ego-motion compensation)."""
        return self._T[image_topic].copy()

    def _selected(self, reader, decode: bool):
        wanted = set(self.image_topics) | {self.lidar_topic} | {t for t in self.camera_info_topics.values() if t}
        tf = set(TF_TOPICS) | set(TF_STATIC_TOPICS) if (decode and self.compensate) else set()
        return [c for c in reader.connections if c.topic in wanted or (c.topic in tf and c.msgtype == TF_TYPE)]

    def _stream(self, decode: bool) -> Iterator[Tuple[_PendingImage, Optional[_Scan]]]:
        pairer = TimePairer(int(round(self.max_dt_ms * 1e6)))
        stats = PairingStats(paired={t: 0 for t in self.image_topics}, unpaired={t: 0 for t in self.image_topics})
        info_for = {v: k for k, v in self.camera_info_topics.items() if v}
        motion = EgoMotion(cache_s=60.0, tolerance_ms=self.tf_tolerance_ms) if (decode and self.compensate) else None
        self._motion, self._stream_stats = motion, stats
        # pairs wait until the odometry covers both stamps (+ one sweep for per-point times), bounded
        margin = 200_000_000 if self.point_time_field else 0
        waiting: Deque[Tuple[int, Tuple[_PendingImage, _Scan]]] = deque()

        def release(final: bool = False):
            covered = motion.covered_until(self.lidar_frame) if motion is not None else None
            while waiting and (final or motion is None or len(waiting) > 256 or
                               (covered is not None and waiting[0][0] <= covered)):
                yield waiting.popleft()[1]

        reader = open_bag(self.path)
        try:
            if motion is not None:  # /tf_static first: it is latched, one message may sit anywhere
                static = [c for c in reader.connections if c.topic in TF_STATIC_TOPICS and c.msgtype == TF_TYPE]
                for conn, _, raw in iter_messages(reader, static, self.path):
                    motion.add_tf_message(deserialize(reader, raw, conn, self.path), static=True)
            conns = self._selected(reader, decode)
            total = sum(int(getattr(c, "msgcount", 0) or 0) for c in conns)
            bar = tqdm(total=total, desc=f"reading {self.path.name}", unit="msg", disable=not (self.progress and decode), leave=False)
            try:
                for conn, _, raw in iter_messages(reader, conns, self.path):
                    bar.update(1)
                    topic = conn.topic
                    pairs = []
                    if topic == self.lidar_topic:
                        msg = deserialize(reader, raw, conn, self.path)
                        stats.scans += 1
                        pairs = pairer.add_scan(header_stamp_ns(msg), msg)
                    elif topic in self._T:
                        msg = deserialize(reader, raw, conn, self.path)
                        pairs = pairer.add_image(header_stamp_ns(msg), topic, msg)
                    elif topic in info_for and decode:
                        info = deserialize(reader, raw, conn, self.path)
                        self._update_info(info_for[topic], info)
                    elif topic in TF_TOPICS and motion is not None:
                        motion.add_tf_message(deserialize(reader, raw, conn, self.path), static=False)
                    elif topic in TF_STATIC_TOPICS:
                        pass  # read above
                    for img, scan in self._account(pairs, stats):
                        waiting.append((max(img.stamp, scan.stamp + margin), (img, scan)))
                    yield from release()
                yield from self._account(pairer.flush(), stats)
                yield from release(final=True)
            finally:
                bar.close()
        finally:
            reader.close()
        self._stats = stats
        s = stats.as_dict()
        log.info("%s: %d images paired, %d unpaired (max_dt %.1f ms), %d scans", self.path.name,
                 s["images_paired"], s["images_unpaired"], self.max_dt_ms, stats.scans)
        if decode and self.compensate and stats.not_compensated:
            log.warning("%s: %d of %d pairs had no odometry within %.0f ms of their stamps and use the static extrinsic",
                        self.path.name, stats.not_compensated, stats.compensated + stats.not_compensated, self.tf_tolerance_ms)

    def _account(self, pairs, stats: PairingStats):
        for img, scan in pairs:
            if scan is None:
                stats.unpaired[img.topic] = stats.unpaired.get(img.topic, 0) + 1
                log.debug("image on %s at %d ns has no scan within %.1f ms", img.topic, img.stamp, self.max_dt_ms)
                continue
            stats.paired[img.topic] = stats.paired.get(img.topic, 0) + 1
            dt = abs(scan.stamp - img.stamp) / 1e6
            stats.abs_dt_ms.append(dt)
            stats.abs_dt_ms_by_topic.setdefault(img.topic, []).append(dt)
            yield img, scan

    def _update_info(self, image_topic: str, info: Any) -> None:
        cam = self.cameras[image_topic]
        new = camera_model_from_info(_InfoView(info), self.camera_info_topics[image_topic])
        cal = self.calibration.for_camera(cam.frame_id, image_topic) if self.calibration is not None else None
        if cal is not None:
            new = cal.apply(new)
        if new.frame_id != cam.frame_id:
            new = CameraModel(K=new.K, D=new.D, width=new.width, height=new.height, frame_id=cam.frame_id,
                              distortion_model=new.distortion_model)
        self.cameras[image_topic] = new

    def _decode_scan(self, scan: _Scan) -> Tuple[np.ndarray, Optional[np.ndarray], bool]:
        """``(points, rings, deskewed)`` of a scan, decoded (and deskewed) once, shared by its pairs."""
        if isinstance(scan.item, tuple):
            return scan.item[1]
        msg = scan.item
        points, rings = read_points_xyzi(msg)
        deskewed = False
        if self._motion is not None and self.point_time_field:
            times, _ = read_point_times_ns(msg)
            try:
                points = self._motion.deskew(points, times, scan.stamp, self.lidar_frame)
                deskewed = True
                self._stream_stats.deskewed_scans += 1
            except DriveSegmentError as exc:
                log.debug("scan at %d ns not deskewed: %s", scan.stamp, exc)
        scan.item = (msg, (points, rings, deskewed))
        return scan.item[1]

    def __iter__(self) -> Iterator[DriveFrame]:
        index = 0
        for img, scan in self._stream(decode=True):
            points, rings, deskewed = self._decode_scan(scan)
            rgb = any_image_to_rgb(img.item)
            camera = self.cameras[img.topic]
            if rgb.shape[:2] != (camera.height, camera.width):
                raise DriveSegmentError(
                    f"image on {img.topic!r} is {rgb.shape[1]}x{rgb.shape[0]} but its CameraInfo says {camera.width}x{camera.height}"
                )
            T = self._T[img.topic].copy()
            ego = {"compensated": False, "deskewed": bool(deskewed), "translation_m": None}
            if self._motion is not None:
                try:
                    M = self._motion.lidar_motion(self.lidar_frame, img.stamp, scan.stamp)
                    T = T @ M
                    ego.update(compensated=True, translation_m=float(np.linalg.norm(M[:3, 3])))
                    self._stream_stats.compensated += 1
                except DriveSegmentError as exc:
                    self._stream_stats.not_compensated += 1
                    log.debug("pair %s @ %d ns: static extrinsic (%s)", img.topic, img.stamp, exc)
            yield DriveFrame(  # points / rings copied: several cameras may share one decoded scan
                image=rgb, points=points.copy(), camera=camera, T_cam_lidar=T,
                image_stamp_ns=img.stamp, lidar_stamp_ns=scan.stamp, rings=None if rings is None else rings.copy(),
                lidar_frame=self.lidar_frame,
                image_topic=img.topic, lidar_topic=self.lidar_topic, index=index, extra={"ego_motion": ego},
            )
            index += 1

    # ------------------------------------------------------------------ summary
    def roles(self) -> Dict[str, str]:
        """Topic -> role: ``image``, ``image (skipped)``, ``camera_info``, ``lidar``, ``tf_static``, ``tf``, ``other``."""
        out = {}
        infos = set(v for v in self.camera_info_topics.values() if v)
        for t, e in self._topics.items():
            if t in self.image_topics:
                out[t] = "image"
            elif t in self.skipped:
                out[t] = "image (skipped)"
            elif t == self.lidar_topic:
                out[t] = "lidar"
            elif t in infos:
                out[t] = "camera_info"
            elif t in TF_STATIC_TOPICS:
                out[t] = "tf_static"
            elif t in TF_TOPICS:
                out[t] = "tf"
            else:
                out[t] = "other"
        return out

    def pairing_stats(self) -> Dict[str, Any]:
        """Pairing counts (runs a stamps-only pass over the bag unless a full iteration already ran)."""
        if self._stats is None:
            for _ in self._stream(decode=False):
                pass
        return self._stats.as_dict()

    def topic_stats(self) -> Dict[str, Dict[str, Any]]:
        """Per topic: ``count``, ``first_ns`` / ``last_ns`` (bag time) and ``rate_hz`` = (count - 1) / span
        (one pass over the bag reading no message contents)."""
        out: Dict[str, Dict[str, Any]] = {}
        reader = open_bag(self.path)
        try:
            for conn, t, _ in iter_messages(reader, list(reader.connections), self.path):
                e = out.setdefault(conn.topic, {"count": 0, "first_ns": int(t), "last_ns": int(t)})
                e["count"] += 1
                e["first_ns"] = min(e["first_ns"], int(t))
                e["last_ns"] = max(e["last_ns"], int(t))
        finally:
            reader.close()
        for e in out.values():
            span = (e["last_ns"] - e["first_ns"]) / 1e9
            e["rate_hz"] = (e["count"] - 1) / span if span > 0 else None
        return out

    def summary(self, topic_stats: bool = False) -> Dict[str, Any]:
        """Dict: ``path, topics`` (topic -> msgtype, count, role; with ``topic_stats`` also first/last
        bag time and rate), ``image_topics, skipped_cameras`` (topic -> reason), ``lidar_topic,
        lidar_frame, point_time_field, camera_info_topics, cameras`` (frame, size, K, transform
        source), ``T_cam_lidar`` (static, lists), ``ego_motion`` (available, mode, description),
        ``max_dt_ms`` and ``pairing`` (see :meth:`pairing_stats`)."""
        roles = self.roles()
        stats = self.topic_stats() if topic_stats else {}
        topics = {}
        for t, e in sorted(self._topics.items()):
            entry = {"msgtype": e["msgtype"], "count": e["count"], "role": roles[t]}
            if t in stats:
                entry.update(first_ns=stats[t]["first_ns"], last_ns=stats[t]["last_ns"], rate_hz=stats[t]["rate_hz"])
            topics[t] = entry
        return {
            "path": str(self.path),
            "topics": topics,
            "image_topics": list(self.image_topics),
            "skipped_cameras": dict(self.skipped),
            "lidar_topic": self.lidar_topic,
            "lidar_frame": self.lidar_frame,
            "point_time_field": self.point_time_field,
            "camera_info_topics": dict(self.camera_info_topics),
            "cameras": {t: {"frame_id": c.frame_id, "width": c.width, "height": c.height, "K": c.K.tolist(),
                            "D": c.D.tolist(), "transform_source": self._T_source.get(t)} for t, c in self.cameras.items()},
            "T_cam_lidar": {t: T.tolist() for t, T in self._T.items()},
            "ego_motion": {"available": bool(self.ego_motion_available), "mode": self.ego_motion_mode,
                           "compensating": bool(self.compensate), "description": self.ego_motion_description,
                           "deskew": bool(self.compensate and self.point_time_field)},
            "max_dt_ms": self.max_dt_ms,
            "pairing": self.pairing_stats(),
        }


# --------------------------------------------------------------------------- CLI
def _fmt_time(ns: Optional[int]) -> str:
    if ns is None:
        return "-"
    return datetime.datetime.fromtimestamp(ns / 1e9, tz=datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def camera_info_topics_arg(image_topics: Optional[Sequence[str]], values: Optional[Sequence[str]]) -> Any:
    """``--camera-info-topic`` values -> the ``camera_info_topics`` argument of :class:`DriveReader`.

    Each value is ``IMAGE_TOPIC=INFO_TOPIC`` (a mapping) or a plain INFO_TOPIC, aligned with the
    ``--image-topic`` values in order.

    Raises:
        DriveSegmentError: plain topics whose number differs from ``--image-topic``'s, or mixed forms.
    """
    if not values:
        return None
    pairs = [v.split("=", 1) for v in values]
    if all(len(p) == 2 for p in pairs):
        return {a: b for a, b in pairs}
    if any(len(p) == 2 for p in pairs):
        raise DriveSegmentError("--camera-info-topic: use either IMAGE=INFO pairs or plain topics aligned with --image-topic, not both")
    if not image_topics or len(image_topics) != len(values):
        raise DriveSegmentError(f"--camera-info-topic: {len(values)} plain topic(s) need as many --image-topic values "
                                f"(got {len(image_topics or [])}); or write IMAGE=INFO")
    return list(values)


def add_bag_reading_args(p: argparse.ArgumentParser) -> None:
    """The bag-reading options every CLI stage that reads bags shares: ``--image-topic``,
    ``--camera-info-topic``, ``--lidar-topic``, ``--calibration``, ``--max-dt-ms``, ``--ego-motion``."""
    p.add_argument("--image-topic", action="append", help="image topic to use (repeatable; default: all)")
    p.add_argument("--camera-info-topic", action="append", default=None,
                   help="CameraInfo topic for an image topic: IMAGE=INFO, or plain topics aligned with --image-topic "
                        "(repeatable; default: matched by namespace / frame_id)")
    p.add_argument("--lidar-topic", default=None, help="PointCloud2 topic (default: auto)")
    p.add_argument("--calibration", default=None, help="calibration YAML (T_cam_lidar, optional K/D) for bags without /tf_static")
    p.add_argument("--max-dt-ms", type=float, default=50.0, help="largest image/scan stamp difference to pair (ms)")
    p.add_argument("--ego-motion", choices=("auto", "on", "off"), default="auto",
                   help="compensate ego motion between image and scan stamps (and deskew clouds with per-point time) "
                        "from /tf odometry: auto = when present (default)")


def reader_options_from_args(args: argparse.Namespace) -> Dict[str, Any]:
    """:class:`DriveReader` keyword arguments (all but ``image_topics``) from :func:`add_bag_reading_args` options."""
    image_topics = getattr(args, "image_topic", None) or None
    return {"lidar_topic": getattr(args, "lidar_topic", None),
            "camera_info_topics": camera_info_topics_arg(image_topics, getattr(args, "camera_info_topic", None)),
            "calibration": getattr(args, "calibration", None), "max_dt_ms": getattr(args, "max_dt_ms", 50.0),
            "ego_motion": getattr(args, "ego_motion", "auto")}


def reader_from_args(args: argparse.Namespace, path: Any = None, **kw: Any) -> "DriveReader":
    """A :class:`DriveReader` from :func:`add_bag_reading_args` options."""
    image_topics = getattr(args, "image_topic", None) or None
    return DriveReader(path if path is not None else args.bag, image_topics=image_topics,
                       **reader_options_from_args(args), **kw)


def _cmd_inspect(args: argparse.Namespace) -> int:
    check_failed = False
    if args.check:
        print(f"check: {args.bag}")
        for name, ok, detail in check_bag(args.bag):
            print(f"  {'ok ' if ok else 'BAD'} {name}: {detail}")
            check_failed |= not ok
    try:
        reader = reader_from_args(args, progress=False)
        s = reader.summary(topic_stats=True)
    except DriveSegmentError:
        if check_failed:
            print("the bag cannot be read (see the check above)")
            return 1
        raise
    if args.json:
        if args.check:
            s["check_failed"] = check_failed
        print(json.dumps(s, indent=2))
        return 1 if check_failed else 0
    print(f"bag: {s['path']}")
    print("topics:")
    tw = max([len("topic")] + [len(t) for t in s["topics"]])
    mw = max([len("type")] + [len(e["msgtype"]) for e in s["topics"].values()])
    print(f"  {'topic':{tw}s} {'type':{mw}s} {'count':>6s} {'rate Hz':>8s}  {'first (UTC)':23s}  {'last (UTC)':23s}  role")
    for t, e in s["topics"].items():
        rate = "-" if e.get("rate_hz") is None else f"{e['rate_hz']:.2f}"
        print(f"  {t:{tw}s} {e['msgtype']:{mw}s} {e['count']:6d} {rate:>8s}  {_fmt_time(e.get('first_ns')):23s}  "
              f"{_fmt_time(e.get('last_ns')):23s}  {e['role']}")
    ptf = f", per-point time field {s['point_time_field']!r}" if s["point_time_field"] else ", no per-point time"
    print(f"lidar: {s['lidar_topic']} (frame {s['lidar_frame']!r}{ptf})")
    em = s["ego_motion"]
    print(f"ego-motion: {em['description']}" + ("" if not em["available"] else
          f"; {'compensating each pair' if em['compensating'] else 'off (--ego-motion off)'}"
          f"{', deskewing scans per point' if em['deskew'] else ''}"))
    p = s["pairing"]
    for t in s["image_topics"]:
        c = s["cameras"][t]
        pc = p["per_camera"].get(t, {})
        dt = "" if pc.get("max_abs_dt_ms") is None else f", |dt| mean {pc['mean_abs_dt_ms']:.1f} ms max {pc['max_abs_dt_ms']:.1f} ms"
        print(f"camera: {t}  info={s['camera_info_topics'].get(t)}  frame={c['frame_id']!r}  {c['width']}x{c['height']}  "
              f"paired={p['paired'].get(t, 0)} unpaired={p['unpaired'].get(t, 0)}{dt}  transform={c['transform_source']}  "
              f"ego-motion={'yes' if em['compensating'] else 'no'}")
    for t, why in s["skipped_cameras"].items():
        print(f"camera: {t}  SKIPPED: {why}")
    dt = "n/a" if p["max_abs_dt_ms"] is None else f"mean |dt| {p['mean_abs_dt_ms']:.1f} ms, max {p['max_abs_dt_ms']:.1f} ms"
    print(f"pairing (max_dt {s['max_dt_ms']:.1f} ms): {p['images_paired']} paired, {p['images_unpaired']} unpaired, {p['scans']} scans; {dt}")
    return 1 if check_failed else 0


def add_cli(sub) -> None:
    """Register ``drive-segment inspect BAG`` (per topic count / rate / time range and role; per camera pairing
    statistics, transform source and ego motion; ``--check`` storage integrity)."""
    p = sub.add_parser("inspect", help="list a bag's camera / LiDAR topics and how images pair with scans",
                       description="List the topics of a bag with their roles, cameras, and image/scan pairing statistics.")
    p.add_argument("bag", help="ROS 2 bag directory (sqlite3 / mcap), a bare .mcap, or ROS 1 .bag")
    add_bag_reading_args(p)
    p.add_argument("--check", action="store_true",
                   help="check the storage first: sqlite PRAGMA integrity_check, mcap magic / CRCs / truncation; exit 1 if damaged")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=_cmd_inspect)
