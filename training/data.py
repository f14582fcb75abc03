"""Where the real sample drives live (offline only: the robot reads sensors, not sample folders).

``DRIVE_SEGMENT_DATA`` overrides the default ``<repository>/../shared/data`` (KITTI frame
``kitti_000008/``, nuScenes keyframe ``nuscenes_n015/``, Waymo PVPS frame ``waymo_pvps_one_frame/``).
"""
import os

#: Where the real sample frames live (KITTI, nuScenes, Waymo). Override with DRIVE_SEGMENT_DATA.
DEFAULT_DATA_DIR = os.environ.get(
    "DRIVE_SEGMENT_DATA",
    os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data"),
)


def data_dir() -> str:
    """Return the directory holding the real sample data (``$DRIVE_SEGMENT_DATA`` or ``../shared/data``), absolute."""
    return os.path.abspath(os.environ.get("DRIVE_SEGMENT_DATA", DEFAULT_DATA_DIR))
