"""Dataset importers: KITTI / nuScenes samples -> ROS 2 bags (sqlite3 or mcap) with rosbags' Writer.

Each bag holds what a real drive recording holds, so the rest of the pipeline only ever reads bags:

* ``sensor_msgs/Image`` (KITTI, ``rgb8``) or ``sensor_msgs/CompressedImage`` (nuScenes, the
  original JPEG bytes) per camera, plus ``sensor_msgs/CameraInfo`` on ``<ns>/camera_info``;
* ``sensor_msgs/PointCloud2`` (x, y, z, intensity float32; nuScenes adds ring uint16);
* ``/tf_static`` (``tf2_msgs/TFMessage``, offered transient-local) with REP 103 / REP 105 frames
  ``base_link -> <lidar frame>`` and the camera optical frames (z forward, x right, y down).

KITTI (Geiger et al., CVPR 2012; devkit ``readme.txt``): the calib ``cam2img`` is the rectified
projection ``P2`` whose 4th column is non-zero (stereo baseline). We store ``K = P2[:3, :3]`` and
fold ``t = K^-1 P2[:3, 3]`` into the extrinsic: ``T_cam_lidar = [I | t] @ R0_rect @ Tr_velo_to_cam``,
so ``K @ (T_cam_lidar @ X) == P2 @ R0_rect @ Tr_velo_to_cam @ X``; ``P2`` goes into
``CameraInfo.p``. ``base_link`` is KITTI's IMU/GPS frame (x forward, y left, z up):
``T_base_velo = Tr_imu_to_velo^-1``. KITTI object frames carry no time, so every message gets
``stamp_ns``.

nuScenes (Caesar et al., CVPR 2020): stamps are the microsecond timestamps in the file names (the
cameras fire tens of ms apart from the LiDAR sweep). ``base_link -> LIDAR_TOP`` is ``lidar2ego``
and ``base_link -> CAM_*_optical`` is ``cam2ego`` (static extrinsics; nuScenes camera frames are
already optical). The per-keyframe ``lidar2cam`` in calib.json is ego-motion compensated between
the LiDAR and camera timestamps, so it differs from ``cam2ego^-1 @ lidar2ego`` by up to ~0.3 m;
``extrinsics="keyframe"`` writes ``LIDAR_TOP -> CAM_*_optical = lidar2cam^-1`` instead.

Ego poses (``extrinsics="static"``, ``ego_poses=True``): calib.json gives ``ego2global`` only at
the LiDAR time, but each camera's compensated ``lidar2cam`` fixes the ego pose at that camera's time:
``T_odom_base(t_cam) = ego2global @ lidar2ego @ lidar2cam^-1 @ cam2ego^-1``
(:func:`drive_segment_ros.ego_motion.ego_pose_from_compensated`). The 7 poses go on ``/tf`` as
``odom -> base_link`` (REP 105; nuScenes' global frame plays ``odom``), so the drive reader's
ego-motion compensation reproduces each camera's ``lidar2cam`` from the static mountings.
"""
from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any, Dict, List, Tuple, Union

import cv2
import numpy as np
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2 import StoragePlugin, Writer

from drive_segment_ros.ego_motion import ego_pose_from_compensated
from drive_segment_ros.geometry import invert_transform
from drive_segment_ros.ros.camera_info import camera_info_msg, transform_stamped
from drive_segment_ros.ros.image import encoded_to_compressed_msg, rgb_to_image_msg
from drive_segment_ros.ros.msgtypes import rosbags_types
from drive_segment_ros.ros.pointcloud2 import points_to_pointcloud2
from drive_segment_ros.types import CameraModel, DriveSegmentError

log = logging.getLogger(__name__)

#: default stamp of the (timeless) KITTI object frames: 2011-09-26 13:02:25 UTC (a KITTI raw drive day)
KITTI_DEFAULT_STAMP_NS = 1_317_042_145_000_000_000
NUSCENES_CAMERAS = ("CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_FRONT_LEFT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_BACK_RIGHT")
_NUSC_NAME = re.compile(r"__(?P<sensor>[A-Z_]+)__(?P<us>\d+)\.(?:jpg|jpeg|png|pcd\.bin)$")


def _load_json(path: Path) -> Dict[str, Any]:
    if not path.is_file():
        raise DriveSegmentError(f"calibration file {str(path)!r} not found")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DriveSegmentError(f"{str(path)!r} is not valid JSON: {exc}") from None


def _matrix(value: Any, shape: Tuple[int, int], what: str) -> np.ndarray:
    M = np.asarray(value, dtype=np.float64)
    if M.shape != shape or not np.all(np.isfinite(M)):
        raise DriveSegmentError(f"{what}: expected a finite {shape[0]}x{shape[1]} matrix, got shape {M.shape}")
    return M


class _BagWriter:
    """Small wrapper over :class:`rosbags.rosbag2.Writer`: connections by topic, CDR serialization."""

    def __init__(self, out_bag: Path, storage: str, overwrite: bool) -> None:
        plugins = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}
        if storage not in plugins:
            raise DriveSegmentError(f"unknown storage {storage!r} (use sqlite3 or mcap)")
        out_bag = Path(out_bag)
        if out_bag.exists():
            if not overwrite:
                raise DriveSegmentError(f"output bag {str(out_bag)!r} already exists (pass overwrite=True / --overwrite)")
            shutil.rmtree(out_bag) if out_bag.is_dir() else out_bag.unlink()
        out_bag.parent.mkdir(parents=True, exist_ok=True)
        self.types = rosbags_types()
        self.store = self.types.typestore
        self.writer = Writer(out_bag, version=9, storage_plugin=plugins[storage])
        self.path = out_bag
        self.conns: Dict[str, Any] = {}
        self.records: List[Tuple[int, int, str, Any]] = []

    def add(self, topic: str, stamp_ns: int, msg: Any) -> None:
        """Queue one message (written in time order by :meth:`close`)."""
        self.records.append((int(stamp_ns), len(self.records), topic, msg))

    def write(self, topic: str, stamp_ns: int, msg: Any) -> None:
        """Write one message now (the writer must be open); ``/tf_static`` gets a latched QoS."""
        conn = self.conns.get(topic)
        if conn is None:
            qos = [_latched_qos()] if topic == "/tf_static" else []
            conn = self.writer.add_connection(topic, msg.__msgtype__, typestore=self.store, offered_qos_profiles=qos)
            self.conns[topic] = conn
        self.writer.write(conn, int(stamp_ns), self.store.serialize_cdr(msg, msg.__msgtype__))

    def close(self) -> None:
        """Write the queued messages in time order and close the bag."""
        self.writer.open()
        try:
            for stamp, _, topic, msg in sorted(self.records, key=lambda r: (r[0], r[1])):
                self.write(topic, stamp, msg)
        finally:
            self.writer.close()


def _latched_qos() -> Qos:
    """Transient-local, keep-last-1 QoS (what ``/tf_static`` publishers offer)."""
    return Qos(QosHistory.KEEP_LAST, 1, QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL,
               QosTime(0, 0), QosTime(0, 0), QosLiveliness.AUTOMATIC, QosTime(0, 0), False)


def _check_src(src_dir: Union[str, Path]) -> Path:
    src = Path(src_dir)
    if not src.is_dir():
        raise DriveSegmentError(f"source directory {str(src)!r} not found")
    return src


def kitti_T_cam_lidar(calib: Dict[str, Any], camera: str = "CAM2") -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(K (3,3), T_cam_lidar (4,4), P (3,4))`` of a KITTI camera from ``calib.json``.

    ``T_cam_lidar = [I | K^-1 P[:3, 3]] @ R0_rect @ Tr_velo_to_cam`` so that
    ``K @ T_cam_lidar[:3] @ X == P @ R0_rect @ Tr_velo_to_cam @ X`` (KITTI devkit readme).

    Raises:
        DriveSegmentError: missing keys or wrong-shape matrices.
    """
    try:
        cam = calib["cameras"][camera]
        P = _matrix(cam["cam2img"], (4, 4), f"KITTI {camera} cam2img")[:3]
        if "lidar2cam" in cam:
            lidar2cam = _matrix(cam["lidar2cam"], (4, 4), f"KITTI {camera} lidar2cam")
        else:
            lidar2cam = _matrix(calib["R0_rect"], (4, 4), "KITTI R0_rect") @ _matrix(calib["Tr_velo_to_cam"], (4, 4), "KITTI Tr_velo_to_cam")
    except KeyError as exc:
        raise DriveSegmentError(f"KITTI calib.json lacks {exc}") from None
    K = P[:, :3].copy()
    shift = np.eye(4)
    shift[:3, 3] = np.linalg.solve(K, P[:, 3])
    return K, shift @ lidar2cam, P


def import_kitti(
    src_dir: Union[str, Path],
    out_bag: Union[str, Path],
    storage: str = "sqlite3",
    stamp_ns: int = KITTI_DEFAULT_STAMP_NS,
    overwrite: bool = False,
) -> Path:
    """Write a KITTI 3D-object sample (``calib.json``, ``<id>.png``, ``<id>.bin``) as a ROS 2 bag.

    Topics: ``/kitti/camera_color_left/image_raw`` (Image rgb8, frame ``camera_color_left_optical``),
    ``/kitti/camera_color_left/camera_info`` (K = P2[:3,:3], D = 0, p = P2),
    ``/kitti/velodyne/points`` (PointCloud2 x y z intensity float32, frame ``velo_link``),
    ``/tf_static`` (``base_link -> velo_link`` = Tr_imu_to_velo^-1, ``velo_link ->
    camera_color_left_optical`` = T_cam_lidar^-1). Every message is stamped ``stamp_ns``.

    Args:
        src_dir: the sample folder; out_bag: the bag directory to create;
        storage: ``"sqlite3"`` or ``"mcap"``; overwrite: replace an existing ``out_bag``.

    Returns:
        Path of the bag directory.

    Raises:
        DriveSegmentError: missing files / calibration, unreadable image, bad scan size, existing output.
    """
    src = _check_src(src_dir)
    calib = _load_json(src / "calib.json")
    cam = calib.get("cameras", {}).get("CAM2", {})
    image_name = cam.get("image_file") or cam.get("img_path")
    lidar_name = calib.get("lidar", {}).get("file")
    image_path = src / image_name if image_name else next(iter(sorted(src.glob("*.png"))), None)
    lidar_path = src / lidar_name if lidar_name else next(iter(sorted(src.glob("*.bin"))), None)
    if image_path is None or not image_path.is_file():
        raise DriveSegmentError(f"KITTI image not found in {str(src)!r}")
    if lidar_path is None or not lidar_path.is_file():
        raise DriveSegmentError(f"KITTI Velodyne scan (.bin) not found in {str(src)!r}")
    bgr = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise DriveSegmentError(f"cannot read image {str(image_path)!r}")
    rgb = np.ascontiguousarray(bgr[:, :, ::-1])
    raw = np.fromfile(lidar_path, dtype=np.float32)
    if raw.size % 4:
        raise DriveSegmentError(f"{str(lidar_path)!r}: {raw.size} floats is not N x 4 (x, y, z, intensity)")
    points = raw.reshape(-1, 4)
    K, T_cam_lidar, P = kitti_T_cam_lidar(calib)
    T_imu_velo = _matrix(calib.get("Tr_imu_to_velo", np.eye(4).tolist()), (4, 4), "KITTI Tr_imu_to_velo")
    camera = CameraModel(K=K, D=np.zeros(5), width=rgb.shape[1], height=rgb.shape[0], frame_id="camera_color_left_optical")
    if "width" in cam and (int(cam["width"]), int(cam["height"])) != (camera.width, camera.height):
        raise DriveSegmentError(f"KITTI image is {camera.width}x{camera.height}, calib.json says {cam['width']}x{cam['height']}")

    w = _BagWriter(Path(out_bag), storage, overwrite)
    t = w.types
    stamp_ns = int(stamp_ns)
    tf = t.TFMessage(transforms=[
        transform_stamped(invert_transform(T_imu_velo), "base_link", "velo_link", stamp_ns, t),
        transform_stamped(invert_transform(T_cam_lidar), "velo_link", camera.frame_id, stamp_ns, t),
    ])
    w.add("/tf_static", stamp_ns, tf)
    w.add("/kitti/camera_color_left/camera_info", stamp_ns, camera_info_msg(camera, stamp_ns, t, P=P))
    w.add("/kitti/camera_color_left/image_raw", stamp_ns, rgb_to_image_msg(rgb, camera.frame_id, stamp_ns, t))
    w.add("/kitti/velodyne/points", stamp_ns, points_to_pointcloud2(points, "velo_link", stamp_ns, t))
    w.close()
    log.info("wrote KITTI sample %s -> %s (%s, %d points)", src.name, w.path, storage, len(points))
    return w.path


def _nuscenes_stamp(name: str) -> Tuple[str, int]:
    m = _NUSC_NAME.search(name)
    if not m:
        raise DriveSegmentError(f"cannot parse sensor and microsecond timestamp from nuScenes file name {name!r}")
    return m.group("sensor"), int(m.group("us")) * 1000


def import_nuscenes(
    src_dir: Union[str, Path],
    out_bag: Union[str, Path],
    storage: str = "sqlite3",
    extrinsics: str = "static",
    overwrite: bool = False,
    ego_poses: bool = True,
) -> Path:
    """Write a nuScenes keyframe (6 camera JPEGs, LIDAR_TOP ``.pcd.bin``, ``calib.json``) as a ROS 2 bag.

    Topics: ``/nuscenes/<CAM>/image_raw/compressed`` (CompressedImage, original JPEG bytes, frame
    ``<CAM>_optical``), ``/nuscenes/<CAM>/camera_info`` (K = cam2img, D = 0: nuScenes images are
    undistorted), ``/nuscenes/LIDAR_TOP/points`` (x y z intensity float32 + ring uint16, frame
    ``LIDAR_TOP``), ``/tf_static``, and with ``ego_poses`` (static extrinsics only) ``/tf``
``odom -> base_link`` at the LiDAR and each camera stamp. Stamps: the file-name microsecond
timestamps (x 1000 ns).

    Args:
        extrinsics: ``"static"`` (``base_link -> LIDAR_TOP`` = lidar2ego, ``base_link -> <CAM>_optical``
            = cam2ego) or ``"keyframe"`` (``LIDAR_TOP -> <CAM>_optical`` = lidar2cam^-1, ego-motion
            compensated for this keyframe).
        ego_poses: with ``"static"``, write the ego poses at the 7 sensor stamps on ``/tf`` (see the
            module doc); ignored with ``"keyframe"`` (already compensated).

    Returns:
        Path of the bag directory.

    Raises:
        DriveSegmentError: missing files / calibration, bad scan size, unknown ``extrinsics``, existing output.
    """
    if extrinsics not in ("static", "keyframe"):
        raise DriveSegmentError(f"extrinsics must be 'static' or 'keyframe', got {extrinsics!r}")
    src = _check_src(src_dir)
    calib = _load_json(src / "calib.json")
    lidar = calib.get("lidar", {})
    lidar_file = lidar.get("file") or next((p.name for p in sorted(src.glob("*LIDAR_TOP*.pcd.bin"))), None)
    if not lidar_file or not (src / lidar_file).is_file():
        raise DriveSegmentError(f"nuScenes LIDAR_TOP .pcd.bin not found in {str(src)!r}")
    _, lidar_stamp = _nuscenes_stamp(lidar_file)
    raw = np.fromfile(src / lidar_file, dtype=np.float32)
    if raw.size % 5:
        raise DriveSegmentError(f"{lidar_file!r}: {raw.size} floats is not N x 5 (x, y, z, intensity, ring)")
    scan = raw.reshape(-1, 5)
    T_ego_lidar = _matrix(lidar.get("lidar2ego"), (4, 4), "nuScenes lidar2ego")
    cams = calib.get("cameras", {})
    if not cams:
        raise DriveSegmentError(f"{str(src / 'calib.json')!r} has no cameras")

    w = _BagWriter(Path(out_bag), storage, overwrite)
    t = w.types
    first_stamp = lidar_stamp
    transforms = []
    records = []
    poses = []  # (stamp, T_odom_base)
    if extrinsics == "static" and ego_poses:
        E_lidar = _matrix(calib.get("ego2global"), (4, 4), "nuScenes ego2global")
        poses.append((lidar_stamp, E_lidar))
    for name in [c for c in NUSCENES_CAMERAS if c in cams] + sorted(set(cams) - set(NUSCENES_CAMERAS)):
        cam = cams[name]
        path = src / cam.get("image_file", "")
        if not path.is_file():
            raise DriveSegmentError(f"nuScenes image for {name} not found: {str(path)!r}")
        _, stamp = _nuscenes_stamp(path.name)
        first_stamp = min(first_stamp, stamp)
        data = path.read_bytes()
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if decoded is None:
            raise DriveSegmentError(f"cannot decode {str(path)!r}")
        height, width = decoded.shape[:2]
        K = _matrix(cam.get("cam2img"), (3, 3), f"nuScenes {name} cam2img")
        frame = f"{name}_optical"
        camera = CameraModel(K=K, D=np.zeros(5), width=width, height=height, frame_id=frame)
        if extrinsics == "static":
            cam2ego = _matrix(cam.get("cam2ego"), (4, 4), f"nuScenes {name} cam2ego")
            transforms.append(transform_stamped(cam2ego, "base_link", frame, 0, t))
            if ego_poses:
                l2c = _matrix(cam.get("lidar2cam"), (4, 4), f"nuScenes {name} lidar2cam")
                poses.append((stamp, ego_pose_from_compensated(E_lidar, T_ego_lidar, cam2ego, l2c)))
        else:
            l2c = _matrix(cam.get("lidar2cam"), (4, 4), f"nuScenes {name} lidar2cam")
            transforms.append(transform_stamped(invert_transform(l2c), "LIDAR_TOP", frame, 0, t))
        records.append((f"/nuscenes/{name}/camera_info", stamp, camera_info_msg(camera, stamp, t)))
        records.append((f"/nuscenes/{name}/image_raw/compressed", stamp, encoded_to_compressed_msg(data, "jpeg", frame, stamp, t)))
    base = transform_stamped(T_ego_lidar, "base_link", "LIDAR_TOP", first_stamp, t)
    transforms = [base] + transforms
    for tr in transforms:
        tr.header.stamp = base.header.stamp
    w.add("/tf_static", first_stamp, t.TFMessage(transforms=transforms))
    for stamp, pose in sorted(poses, key=lambda p: p[0]):
        w.add("/tf", stamp, t.TFMessage(transforms=[transform_stamped(pose, "odom", "base_link", stamp, t)]))
    for topic, stamp, msg in records:
        w.add(topic, stamp, msg)
    cloud = points_to_pointcloud2(scan[:, :4], "LIDAR_TOP", lidar_stamp, t, rings=scan[:, 4].astype(np.uint16))
    w.add("/nuscenes/LIDAR_TOP/points", lidar_stamp, cloud)
    w.close()
    log.info("wrote nuScenes keyframe %s -> %s (%s, %d cameras, %d points)", src.name, w.path, storage, len(cams), len(scan))
    return w.path


# --------------------------------------------------------------------------- CLI
def _cmd_import_kitti(args: argparse.Namespace) -> int:
    path = import_kitti(args.src, args.out, storage=args.storage, stamp_ns=args.stamp_ns, overwrite=args.overwrite)
    print(path)
    return 0


def _cmd_import_nuscenes(args: argparse.Namespace) -> int:
    path = import_nuscenes(args.src, args.out, storage=args.storage, extrinsics=args.extrinsics, overwrite=args.overwrite,
                           ego_poses=not args.no_ego_poses)
    print(path)
    return 0


def add_cli(sub) -> None:
    """Register ``import-kitti SRC --out BAG [--storage]`` and ``import-nuscenes SRC --out BAG [--storage]``."""
    p = sub.add_parser("import-kitti", help="KITTI 3D-object sample -> ROS 2 bag (Image, CameraInfo, PointCloud2, /tf_static)")
    p.add_argument("src", help="folder with calib.json, <id>.png, <id>.bin")
    p.add_argument("--out", required=True, help="bag directory to create")
    p.add_argument("--storage", choices=("sqlite3", "mcap"), default="sqlite3")
    p.add_argument("--stamp-ns", type=int, default=KITTI_DEFAULT_STAMP_NS, help="stamp of every message (ns)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output bag")
    p.set_defaults(func=_cmd_import_kitti)
    p = sub.add_parser("import-nuscenes", help="nuScenes keyframe -> ROS 2 bag (6 CompressedImage, CameraInfo, PointCloud2, /tf_static)")
    p.add_argument("src", help="folder with calib.json, 6 camera JPEGs and the LIDAR_TOP .pcd.bin")
    p.add_argument("--out", required=True, help="bag directory to create")
    p.add_argument("--storage", choices=("sqlite3", "mcap"), default="sqlite3")
    p.add_argument("--extrinsics", choices=("static", "keyframe"), default="static",
                   help="static: cam2ego/lidar2ego (+ ego poses on /tf); keyframe: ego-motion compensated lidar2cam")
    p.add_argument("--no-ego-poses", action="store_true",
                   help="do not write the ego poses at the sensor stamps on /tf (static extrinsics only)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output bag")
    p.set_defaults(func=_cmd_import_nuscenes)
