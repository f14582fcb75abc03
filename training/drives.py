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

Pairing (Drive&Segment, Vobecky et al. ECCV 2022 Sec. 3.1 / docs/METHOD.md stage 1 "synchronized drive
data": LiDAR and camera are never perfectly synchronized, so images are paired by timestamp): each
image goes with the scan whose *header* stamp is nearest, if within ``max_dt_ms``; others are
counted as unpaired and logged. Messages are streamed in bag order with bounded buffers (a few
recent scans, a bounded queue of images waiting for the next scan), so memory does not grow
with the drive length.
"""
from __future__ import annotations

import argparse
import json
import logging
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Deque, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
from tqdm import tqdm

from drive_segment_ros.calibration import Calibration, TransformTree, load_calibration_yaml
from drive_segment_ros.ros.bags import open_bag
from drive_segment_ros.ros.camera_info import camera_model_from_info
from drive_segment_ros.ros.image import any_image_to_rgb
from drive_segment_ros.ros.msgtypes import header_stamp_ns
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
    """Counts of the time pairing: per image topic ``paired`` / ``unpaired``, and |dt| in ms."""

    paired: Dict[str, int] = field(default_factory=dict)
    unpaired: Dict[str, int] = field(default_factory=dict)
    abs_dt_ms: List[float] = field(default_factory=list)
    scans: int = 0

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


def _iter_messages(reader, connections, path: Path):
    """``reader.messages(connections)`` with read / decode failures turned into one-line DriveSegmentErrors.

    An empty ``connections`` list yields nothing (rosbags would read *every* connection)."""
    if not connections:
        return
    it = reader.messages(connections=connections)
    while True:
        try:
            conn, stamp, raw = next(it)
        except StopIteration:
            return
        except Exception as exc:  # rosbags ReaderError, sqlite3.DatabaseError, mcap errors, struct errors ...
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise DriveSegmentError(f"cannot read bag {str(path)!r} (corrupt or truncated?): {first}") from None
        yield conn, stamp, raw


def _deserialize(reader, raw, conn, path: Path):
    try:
        return reader.deserialize(raw, conn.msgtype)
    except Exception as exc:
        raise DriveSegmentError(f"cannot decode a {conn.msgtype} message on {conn.topic!r} in {str(path)!r}: {exc}") from None


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

    Yields (iteration):
        DriveFrame with image (H, W, 3) uint8 RGB, points (N, 4) float32 x y z intensity in the
        LiDAR frame, rings (N,) int16 or None, camera (K, D, size, optical frame), T_cam_lidar
        (4, 4) float64, both header stamps (ns), topics and a running index.

    Raises:
        DriveSegmentError (one line): missing / corrupt bag, no image topic, no PointCloud2 topic,
        no CameraInfo for an image topic, no transform between the LiDAR and a camera frame,
        wrong-shape calibration, an unknown requested topic.
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
    ) -> None:

        self.path = Path(path)
        self.max_dt_ms = float(max_dt_ms)
        if not np.isfinite(self.max_dt_ms) or self.max_dt_ms < 0:
            raise DriveSegmentError(f"max_dt_ms must be a finite number >= 0, got {max_dt_ms}")
        self.progress = bool(progress)
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
            self.camera_info_topics = self._match_infos(reader, camera_info_topics, first)
            self.tree = TransformTree()
            self._read_tf(reader)
            self.cameras: Dict[str, CameraModel] = {}
            self.camera_frames: Dict[str, str] = {}
            self._T: Dict[str, np.ndarray] = {}
            self._T_from_tf: set = set()
            self._resolve_cameras(reader, first)
        finally:
            reader.close()

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
        for conn, _, raw in _iter_messages(reader, conns, self.path):
            return _deserialize(reader, raw, conn, self.path)
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
        for conn, _, raw in _iter_messages(reader, static, self.path):
            self._add_tf(_deserialize(reader, raw, conn, self.path))
        dynamic = [c for c in reader.connections if c.topic in TF_TOPICS and c.msgtype == TF_TYPE]
        for n, (conn, _, raw) in enumerate(_iter_messages(reader, dynamic, self.path)):
            if n >= 200:
                break
            self._add_tf(_deserialize(reader, raw, conn, self.path))

    def _add_tf(self, msg) -> None:
        for ts in msg.transforms:
            try:
                self.tree.add_transform_stamped(ts)
            except DriveSegmentError as exc:
                log.warning("ignoring transform: %s", exc)

    def _resolve_cameras(self, reader, first) -> None:

        for img in self.image_topics:
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
            self.cameras[img] = camera
            self.camera_frames[img] = camera.frame_id
            if cal is not None:
                self._T[img] = cal.T_cam_lidar
            else:
                self._T[img] = self._lookup(img)
                self._T_from_tf.add(img)

    def _lookup(self, img: str) -> np.ndarray:
        cam_frame = self.camera_frames[img].lstrip("/")
        if not self.tree.frames:
            raise DriveSegmentError(
                f"no transform between LiDAR frame {self.lidar_frame!r} and camera frame {cam_frame!r}: "
                f"bag has no /tf_static; pass a calibration YAML (config/calibration_example.yaml)"
            )
        try:
            return self.tree.lookup(cam_frame, self.lidar_frame)
        except DriveSegmentError as exc:
            raise DriveSegmentError(
                f"no transform between LiDAR frame {self.lidar_frame!r} and camera frame {cam_frame!r} ({exc})"
            ) from None

    # ------------------------------------------------------------------ iteration
    def T_cam_lidar(self, image_topic: str) -> np.ndarray:
        """(4, 4) float64 LiDAR -> camera optical transform used for ``image_topic``."""
        return self._T[image_topic].copy()

    def _selected(self, reader):
        wanted = set(self.image_topics) | {self.lidar_topic} | {t for t in self.camera_info_topics.values() if t}
        return [c for c in reader.connections if c.topic in wanted or (c.topic in TF_TOPICS and c.msgtype == TF_TYPE)]

    def _stream(self, decode: bool) -> Iterator[Tuple[_PendingImage, Optional[_Scan]]]:


        pairer = TimePairer(int(round(self.max_dt_ms * 1e6)))
        stats = PairingStats(paired={t: 0 for t in self.image_topics}, unpaired={t: 0 for t in self.image_topics})
        info_for = {v: k for k, v in self.camera_info_topics.items() if v}
        reader = open_bag(self.path)
        try:
            conns = self._selected(reader)
            total = sum(int(getattr(c, "msgcount", 0) or 0) for c in conns)
            bar = tqdm(total=total, desc=f"reading {self.path.name}", unit="msg", disable=not (self.progress and decode), leave=False)
            try:
                for conn, _, raw in _iter_messages(reader, conns, self.path):
                    bar.update(1)
                    topic = conn.topic
                    if topic == self.lidar_topic:
                        msg = _deserialize(reader, raw, conn, self.path)
                        stats.scans += 1
                        yield from self._account(pairer.add_scan(header_stamp_ns(msg), msg), stats)
                    elif topic in self._T:
                        msg = _deserialize(reader, raw, conn, self.path)
                        yield from self._account(pairer.add_image(header_stamp_ns(msg), topic, msg), stats)
                    elif topic in info_for and decode:
                        info = _deserialize(reader, raw, conn, self.path)
                        self._update_info(info_for[topic], info)
                    elif topic in TF_TOPICS and decode:
                        self._add_tf(_deserialize(reader, raw, conn, self.path))
                        for img_topic in self._T_from_tf:  # latest /tf value, no interpolation
                            if self.tree.can_transform(self.camera_frames[img_topic], self.lidar_frame):
                                self._T[img_topic] = self.tree.lookup(self.camera_frames[img_topic], self.lidar_frame)
                yield from self._account(pairer.flush(), stats)
            finally:
                bar.close()
        finally:
            reader.close()
        self._stats = stats
        s = stats.as_dict()
        log.info("%s: %d images paired, %d unpaired (max_dt %.1f ms), %d scans", self.path.name,
                 s["images_paired"], s["images_unpaired"], self.max_dt_ms, stats.scans)

    def _account(self, pairs, stats: PairingStats):
        for img, scan in pairs:
            if scan is None:
                stats.unpaired[img.topic] = stats.unpaired.get(img.topic, 0) + 1
                log.debug("image on %s at %d ns has no scan within %.1f ms", img.topic, img.stamp, self.max_dt_ms)
                continue
            stats.paired[img.topic] = stats.paired.get(img.topic, 0) + 1
            stats.abs_dt_ms.append(abs(scan.stamp - img.stamp) / 1e6)
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

    def __iter__(self) -> Iterator[DriveFrame]:

        index = 0
        for img, scan in self._stream(decode=True):
            if not isinstance(scan.item, tuple):
                scan.item = (scan.item, read_points_xyzi(scan.item))  # decode each scan once
            _, (points, rings) = scan.item
            rgb = any_image_to_rgb(img.item)
            camera = self.cameras[img.topic]
            if rgb.shape[:2] != (camera.height, camera.width):
                raise DriveSegmentError(
                    f"image on {img.topic!r} is {rgb.shape[1]}x{rgb.shape[0]} but its CameraInfo says {camera.width}x{camera.height}"
                )
            yield DriveFrame(  # points / rings copied: several cameras may share one decoded scan
                image=rgb, points=points.copy(), camera=camera, T_cam_lidar=self._T[img.topic].copy(),
                image_stamp_ns=img.stamp, lidar_stamp_ns=scan.stamp, rings=None if rings is None else rings.copy(),
                lidar_frame=self.lidar_frame,
                image_topic=img.topic, lidar_topic=self.lidar_topic, index=index,
            )
            index += 1

    # ------------------------------------------------------------------ summary
    def roles(self) -> Dict[str, str]:
        """Topic -> role: ``image``, ``camera_info``, ``lidar``, ``tf_static``, ``tf``, ``other``."""
        out = {}
        infos = set(v for v in self.camera_info_topics.values() if v)
        for t, e in self._topics.items():
            if t in self.image_topics:
                out[t] = "image"
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

    def summary(self) -> Dict[str, Any]:
        """Dict: ``path, topics`` (topic -> msgtype, count, role), ``image_topics, lidar_topic,
        lidar_frame, camera_info_topics, cameras`` (frame, size, K), ``T_cam_lidar`` (lists),
        ``max_dt_ms`` and ``pairing`` (see :meth:`pairing_stats`)."""
        roles = self.roles()
        return {
            "path": str(self.path),
            "topics": {t: {"msgtype": e["msgtype"], "count": e["count"], "role": roles[t]} for t, e in sorted(self._topics.items())},
            "image_topics": list(self.image_topics),
            "lidar_topic": self.lidar_topic,
            "lidar_frame": self.lidar_frame,
            "camera_info_topics": dict(self.camera_info_topics),
            "cameras": {t: {"frame_id": c.frame_id, "width": c.width, "height": c.height, "K": c.K.tolist(),
                            "D": c.D.tolist()} for t, c in self.cameras.items()},
            "T_cam_lidar": {t: T.tolist() for t, T in self._T.items()},
            "max_dt_ms": self.max_dt_ms,
            "pairing": self.pairing_stats(),
        }


# --------------------------------------------------------------------------- CLI
def _cmd_inspect(args: argparse.Namespace) -> int:

    reader = DriveReader(
        args.bag, image_topics=args.image_topic or None, lidar_topic=args.lidar_topic,
        calibration=args.calibration, max_dt_ms=args.max_dt_ms, progress=False,
    )
    s = reader.summary()
    if args.json:
        print(json.dumps(s, indent=2))
        return 0
    print(f"bag: {s['path']}")
    print("topics:")
    for t, e in s["topics"].items():
        print(f"  {t:50s} {e['msgtype']:34s} {e['count']:6d}  {e['role']}")
    print(f"lidar: {s['lidar_topic']} (frame {s['lidar_frame']!r})")
    for t in s["image_topics"]:
        c = s["cameras"][t]
        p = s["pairing"]
        print(f"camera: {t}  info={s['camera_info_topics'].get(t)}  frame={c['frame_id']!r}  {c['width']}x{c['height']}  "
              f"paired={p['paired'].get(t, 0)} unpaired={p['unpaired'].get(t, 0)}")
    p = s["pairing"]
    dt = "n/a" if p["max_abs_dt_ms"] is None else f"mean |dt| {p['mean_abs_dt_ms']:.1f} ms, max {p['max_abs_dt_ms']:.1f} ms"
    print(f"pairing (max_dt {s['max_dt_ms']:.1f} ms): {p['images_paired']} paired, {p['images_unpaired']} unpaired, {p['scans']} scans; {dt}")
    return 0


def add_cli(sub) -> None:
    """Register ``drive-segment inspect BAG`` (topics, roles, cameras and pairing statistics)."""
    p = sub.add_parser("inspect", help="list a bag's camera / LiDAR topics and how images pair with scans",
                       description="List the topics of a bag with their roles, cameras, and image/scan pairing statistics.")
    p.add_argument("bag", help="ROS 2 bag directory (sqlite3 / mcap) or ROS 1 .bag")
    p.add_argument("--image-topic", action="append", help="image topic to use (repeatable; default: all)")
    p.add_argument("--lidar-topic", default=None, help="PointCloud2 topic (default: auto)")
    p.add_argument("--calibration", default=None, help="calibration YAML for bags without /tf_static")
    p.add_argument("--max-dt-ms", type=float, default=50.0, help="largest image/scan stamp difference to pair (ms)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=_cmd_inspect)
