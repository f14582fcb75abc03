"""Shared fixtures: the real sample frames (skipped with a clear reason when absent)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from drive_segment_training.data import data_dir

DATA = Path(data_dir())


def _need(sub: str) -> Path:
    path = DATA / sub
    if not path.is_dir():
        pytest.skip(
            f"real sample data {sub!r} not found under {DATA} "
            "(set DRIVE_SEGMENT_DATA or place ../shared/data beside the checkout)"
        )
    return path


@pytest.fixture(scope="session")
def data_root() -> Path:
    """Root of the real sample data (``$DRIVE_SEGMENT_DATA`` or ``../shared/data``)."""
    if not DATA.is_dir():
        pytest.skip(f"real sample data not found at {DATA} (set DRIVE_SEGMENT_DATA)")
    return DATA


@pytest.fixture(scope="session")
def kitti_dir() -> Path:
    """KITTI 3D-object frame 000008 (image, Velodyne scan, calib.json)."""
    return _need("kitti_000008")


@pytest.fixture(scope="session")
def nuscenes_dir() -> Path:
    """nuScenes v1.0-mini keyframe: 6 cameras + LIDAR_TOP, calib.json."""
    return _need("nuscenes_n015")


@pytest.fixture(scope="session")
def waymo_dir() -> Path:
    """Waymo frame with 5 camera images and semantic label PNGs (evaluation only)."""
    return _need("waymo_pvps_one_frame")


@pytest.fixture(scope="session")
def kitti_bag(kitti_dir, tmp_path_factory) -> Path:
    """The KITTI sample imported once into a ROS 2 sqlite3 bag (session-scoped)."""
    from drive_segment_training.importers import import_kitti

    return import_kitti(kitti_dir, tmp_path_factory.mktemp("bags") / "kitti_000008")


@pytest.fixture(scope="session")
def nuscenes_bag(nuscenes_dir, tmp_path_factory) -> Path:
    """The nuScenes sample imported once into a ROS 2 sqlite3 bag (session-scoped)."""
    from drive_segment_training.importers import import_nuscenes

    return import_nuscenes(nuscenes_dir, tmp_path_factory.mktemp("bags") / "nuscenes_n015")


@pytest.fixture(scope="session", autouse=True)
def _torch_one_thread():
    """Tests use tiny tensors: one intra-op thread avoids OpenMP oversubscription on the 2-core
    CI machine (torch's spinning workers made small forwards ~10-20x slower when shared)."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
