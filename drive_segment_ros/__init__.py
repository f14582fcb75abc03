"""drive_segment_ros: Drive&Segment (Vobecky et al., ECCV 2022; IJCV 2025) for ROS 2.

The algorithms (drives, LiDAR proposals, projection, models, inference) are importable
without a ROS runtime; the ROS 2 nodes in :mod:`drive_segment_ros.nodes` are thin adapters.
"""
import os

__version__ = "0.1.0"

#: Where the real sample frames live (KITTI, nuScenes, Waymo). Override with DRIVE_SEGMENT_DATA.
DEFAULT_DATA_DIR = os.environ.get(
    "DRIVE_SEGMENT_DATA",
    os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data"),
)


def data_dir() -> str:
    """Return the directory holding the real sample data (``$DRIVE_SEGMENT_DATA`` or ``../shared/data``)."""
    return os.path.abspath(os.environ.get("DRIVE_SEGMENT_DATA", DEFAULT_DATA_DIR))
