"""Plain data types shared by every stage (no ROS imports).

Conventions
-----------
* Frames follow REP 103: the LiDAR frame is x forward, y left, z up; the camera *optical*
  frame is x right, y down, z forward.
* ``T_a_b`` is the 4x4 homogeneous transform that maps points expressed in frame ``b``
  into frame ``a``: ``p_a = T_a_b @ p_b``. So ``T_cam_lidar`` maps LiDAR points into the
  camera optical frame.
* ``K`` is the 3x3 pinhole intrinsic matrix (pixels); ``D`` the distortion coefficients in
  OpenCV / ROS ``plumb_bob`` order ``(k1, k2, p1, p2, k3)`` (``sensor_msgs/CameraInfo``).
* Timestamps are integer nanoseconds since the Unix epoch (``builtin_interfaces/Time``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

#: Proposal point label of LiDAR points classified as ground (``segment_scan`` output, int32).
GROUND = -1
#: Proposal point label of LiDAR points in no segment (too far, too small a cluster, invalid).
UNASSIGNED = -2
#: Value of a training label map (uint8) pixel that carries no label; losses and metrics skip it.
IGNORE_INDEX = 255


class DriveSegmentError(RuntimeError):
    """Base class of the errors this package raises on bad user input (one clear line)."""


def error_line(exc: BaseException) -> str:
    """The first line of ``str(exc)`` (the class name when the message is blank): the text of a
    library error (rosbags, sqlite3, mcap, ...) to put into a one-line :class:`DriveSegmentError`."""
    text = str(exc)
    return text.splitlines()[0] if text.strip() else type(exc).__name__


@dataclass(frozen=True)
class CameraModel:
    """Pinhole camera with optional distortion, as in ``sensor_msgs/CameraInfo``.

    Attributes:
        K: (3, 3) float64 intrinsics in pixels.
        D: (n,) float64 distortion coefficients (``plumb_bob``: k1, k2, p1, p2, k3); may be empty.
        width, height: image size in pixels.
        frame_id: the camera optical frame (REP 103: z forward, x right, y down).
        distortion_model: ``"plumb_bob"`` (or ``"rational_polynomial"``, 8 coefficients).
    """

    K: np.ndarray
    D: np.ndarray
    width: int
    height: int
    frame_id: str = "camera_optical"
    distortion_model: str = "plumb_bob"

    def __post_init__(self) -> None:
        K = np.asarray(self.K, dtype=np.float64)
        if K.shape != (3, 3) or not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
            raise DriveSegmentError(f"camera {self.frame_id!r}: K must be a finite 3x3 matrix with fx, fy > 0, got {K.tolist()}")
        object.__setattr__(self, "K", K)
        object.__setattr__(self, "D", np.asarray(self.D, dtype=np.float64).reshape(-1))
        if self.width <= 0 or self.height <= 0:
            raise DriveSegmentError(f"camera {self.frame_id!r}: image size must be positive, got {self.width}x{self.height}")


@dataclass
class DriveFrame:
    """One camera image paired in time with one LiDAR scan.

    Attributes:
        image: (H, W, 3) uint8 RGB.
        points: (N, 4) float32 ``x, y, z, intensity`` in the LiDAR frame, metres.
        camera: the camera model (K, D, size, optical frame_id).
        T_cam_lidar: (4, 4) float64, LiDAR frame -> camera optical frame.
        image_stamp_ns, lidar_stamp_ns: header stamps (ns).
        rings: optional (N,) int16 laser ring / row index (``ring`` field), else ``None``.
        lidar_frame: ``frame_id`` of the scan.
        image_topic, lidar_topic: where the data came from.
        index: running index of the frame within its drive.
    """

    image: np.ndarray
    points: np.ndarray
    camera: CameraModel
    T_cam_lidar: np.ndarray
    image_stamp_ns: int
    lidar_stamp_ns: int
    rings: Optional[np.ndarray] = None
    lidar_frame: str = "lidar"
    image_topic: str = ""
    lidar_topic: str = ""
    index: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def dt_ns(self) -> int:
        """LiDAR stamp minus image stamp, in ns (signed)."""
        return int(self.lidar_stamp_ns) - int(self.image_stamp_ns)

    @property
    def name(self) -> str:
        """A filesystem-safe name: ``<topic>_<index:06d>``."""
        topic = self.image_topic.strip("/").replace("/", "_") or "image"
        return f"{topic}_{self.index:06d}"
