"""Label sets for unsupervised evaluation: Cityscapes 19 / 27 classes and the Waymo mapping.

Drive&Segment (Vobecky et al., ECCV 2022, Sec. 4) evaluates on Cityscapes with the 19
``trainId`` classes and with the 27-class set used by IIC / PiCIE / STEGO (every Cityscapes
``labelId`` from 7 ``road`` to 33 ``bicycle``; class index = ``labelId - 7``). Names, ids and
the colour palette follow the official ``cityscapesscripts/helpers/labels.py``.

The held-out labelled images here are Waymo Open Dataset camera-segmentation frames (29
classes, ``camera_segmentation.proto``); ``config/waymo_to_cityscapes.yaml`` maps them to the
Cityscapes sets (one documented row per class, 255 = ignore).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import List, Tuple, Union

import cv2
import numpy as np
import yaml

from drive_segment_ros.types import IGNORE_INDEX, DriveSegmentError

LOG = logging.getLogger(__name__)

# (labelId, name, trainId or 255, RGB colour) -- cityscapesscripts/helpers/labels.py, ids 7..33.
_CITYSCAPES = [
    (7, "road", 0, (128, 64, 128)),
    (8, "sidewalk", 1, (244, 35, 232)),
    (9, "parking", 255, (250, 170, 160)),
    (10, "rail track", 255, (230, 150, 140)),
    (11, "building", 2, (70, 70, 70)),
    (12, "wall", 3, (102, 102, 156)),
    (13, "fence", 4, (190, 153, 153)),
    (14, "guard rail", 255, (180, 165, 180)),
    (15, "bridge", 255, (150, 100, 100)),
    (16, "tunnel", 255, (150, 120, 90)),
    (17, "pole", 5, (153, 153, 153)),
    (18, "polegroup", 255, (153, 153, 153)),
    (19, "traffic light", 6, (250, 170, 30)),
    (20, "traffic sign", 7, (220, 220, 0)),
    (21, "vegetation", 8, (107, 142, 35)),
    (22, "terrain", 9, (152, 251, 152)),
    (23, "sky", 10, (70, 130, 180)),
    (24, "person", 11, (220, 20, 60)),
    (25, "rider", 12, (255, 0, 0)),
    (26, "car", 13, (0, 0, 142)),
    (27, "truck", 14, (0, 0, 70)),
    (28, "bus", 15, (0, 60, 100)),
    (29, "caravan", 255, (0, 0, 90)),
    (30, "trailer", 255, (0, 0, 110)),
    (31, "train", 16, (0, 80, 100)),
    (32, "motorcycle", 17, (0, 0, 230)),
    (33, "bicycle", 18, (119, 11, 32)),
]

#: The 19 Cityscapes evaluation classes, index = trainId.
CITYSCAPES19_NAMES: Tuple[str, ...] = tuple(n for _, n, t, _ in sorted(_CITYSCAPES, key=lambda r: r[2]) if t != 255)
#: (19, 3) uint8 standard Cityscapes colours, row = trainId.
CITYSCAPES19_PALETTE: np.ndarray = np.array(
    [c for _, _, t, c in sorted(_CITYSCAPES, key=lambda r: r[2]) if t != 255], dtype=np.uint8
)
#: The 27-class set (labelIds 7..33), index = labelId - 7.
CITYSCAPES27_NAMES: Tuple[str, ...] = tuple(n for _, n, _, _ in _CITYSCAPES)
#: (27, 3) uint8 colours of the 27-class set.
CITYSCAPES27_PALETTE: np.ndarray = np.array([c for _, _, _, c in _CITYSCAPES], dtype=np.uint8)
#: Cityscapes labelIds of the 27-class set, index = class.
CITYSCAPES27_LABEL_IDS: Tuple[int, ...] = tuple(i for i, _, _, _ in _CITYSCAPES)

#: Waymo camera-segmentation classes 0..28 (waymo_open_dataset/protos/camera_segmentation.proto).
WAYMO_NAMES: Tuple[str, ...] = (
    "UNDEFINED", "EGO_VEHICLE", "CAR", "TRUCK", "BUS", "OTHER_LARGE_VEHICLE", "BICYCLE", "MOTORCYCLE",
    "TRAILER", "PEDESTRIAN", "CYCLIST", "MOTORCYCLIST", "BIRD", "GROUND_ANIMAL", "CONSTRUCTION_CONE_POLE",
    "POLE", "PEDESTRIAN_OBJECT", "SIGN", "TRAFFIC_LIGHT", "BUILDING", "ROAD", "LANE_MARKER", "ROAD_MARKER",
    "SIDEWALK", "VEGETATION", "SKY", "GROUND", "DYNAMIC", "STATIC",
)

LABEL_SETS = {"cityscapes19": (CITYSCAPES19_NAMES, CITYSCAPES19_PALETTE), "cityscapes27": (CITYSCAPES27_NAMES, CITYSCAPES27_PALETTE)}

_DEFAULT_MAPPING = Path(__file__).resolve().parent.parent / "config" / "waymo_to_cityscapes.yaml"


def label_set(name: str) -> Tuple[Tuple[str, ...], np.ndarray]:
    """Return ``(class names, (n,3) uint8 palette)`` of ``"cityscapes19"`` or ``"cityscapes27"``.

    Raises:
        DriveSegmentError: unknown label-set name.
    """
    key = {"19": "cityscapes19", "27": "cityscapes27"}.get(str(name), str(name))
    if key not in LABEL_SETS:
        raise DriveSegmentError(f"unknown label set {name!r}; choose one of {sorted(LABEL_SETS)}")
    return LABEL_SETS[key]


def cityscapes_labelid_to_trainid() -> np.ndarray:
    """(256,) uint8 lookup table Cityscapes labelId -> trainId (255 for void / non-evaluated ids)."""
    lut = np.full(256, IGNORE_INDEX, np.uint8)
    for label_id, _, train_id, _ in _CITYSCAPES:
        lut[label_id] = train_id
    return lut


def cityscapes_labelid_to_27() -> np.ndarray:
    """(256,) uint8 lookup table Cityscapes labelId -> 27-class index (labelId - 7; 255 for ids 0..6)."""
    lut = np.full(256, IGNORE_INDEX, np.uint8)
    for idx, label_id in enumerate(CITYSCAPES27_LABEL_IDS):
        lut[label_id] = idx
    return lut


def load_waymo_mapping(path: Union[str, Path, None] = None, target: str = "cityscapes19") -> np.ndarray:
    """Load the Waymo -> Cityscapes mapping as a (256,) uint8 lookup table.

    Args:
        path: the YAML (default ``config/waymo_to_cityscapes.yaml`` of this package).
        target: ``"cityscapes19"`` (trainIds) or ``"cityscapes27"`` (labelId - 7).

    Returns:
        ``lut`` with ``lut[waymo_class]`` = target class id or 255 (also 255 for ids > 28).

    Raises:
        DriveSegmentError: file missing, a class missing, or a target id out of range.
    """
    path = Path(path) if path is not None else _DEFAULT_MAPPING
    if not path.is_file():
        raise DriveSegmentError(f"Waymo -> Cityscapes mapping {path} not found")
    names, _ = label_set(target)
    key = "cityscapes19" if len(names) == 19 else "cityscapes27"
    data = yaml.safe_load(path.read_text()) or {}
    classes = data.get("classes") or {}
    lut = np.full(256, IGNORE_INDEX, np.uint8)
    for waymo_id in range(len(WAYMO_NAMES)):
        row = classes.get(waymo_id, classes.get(str(waymo_id)))
        if row is None or key not in row:
            raise DriveSegmentError(f"{path}: Waymo class {waymo_id} ({WAYMO_NAMES[waymo_id]}) has no {key!r} entry")
        value = int(row[key])
        if value != IGNORE_INDEX and not 0 <= value < len(names):
            raise DriveSegmentError(f"{path}: Waymo class {waymo_id} maps to {value}, outside 0..{len(names) - 1} / 255")
        lut[waymo_id] = value
    return lut


def map_waymo_labels(semantic: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Apply a (256,) lookup table to a Waymo semantic label image (H, W) uint8 -> (H, W) uint8."""
    semantic = np.asarray(semantic)
    if semantic.ndim != 2:
        raise DriveSegmentError(f"Waymo semantic label must be (H, W), got shape {semantic.shape}")
    return lut[semantic.astype(np.uint8)]


def load_waymo_eval(
    waymo_dir: Union[str, Path], target: str = "cityscapes19", mapping_path: Union[str, Path, None] = None
) -> List[Tuple[str, np.ndarray, np.ndarray]]:
    """Load the labelled Waymo camera images for evaluation.

    Reads ``frame.json`` (``cameras.<NAME>.image_file`` / ``semantic_file``), the JPEG images and
    the uint8 Waymo class PNGs, and maps labels with :func:`load_waymo_mapping`.

    Returns:
        list of ``(camera name, rgb (H,W,3) uint8, gt (H,W) uint8)``; ``gt`` holds Cityscapes
        trainIds (``target="cityscapes19"``) or 27-class ids, 255 = ignore. Cameras in
        ``frame.json`` order.

    Raises:
        DriveSegmentError: missing directory / frame.json / image, unreadable image, or an image
        and its label of different sizes.
    """
    waymo_dir = Path(waymo_dir)
    meta_path = waymo_dir / "frame.json"
    if not meta_path.is_file():
        raise DriveSegmentError(f"{waymo_dir} is not a Waymo evaluation folder (no frame.json)")
    meta = json.loads(meta_path.read_text())
    lut = load_waymo_mapping(mapping_path, target)
    out = []
    for name, cam in (meta.get("cameras") or {}).items():
        img_path, sem_path = waymo_dir / cam["image_file"], waymo_dir / cam.get("semantic_file", "")
        if not cam.get("semantic_file") or not sem_path.is_file():
            LOG.warning("Waymo camera %s has no semantic label; skipped", name)
            continue
        bgr = cv2.imread(str(img_path), cv2.IMREAD_COLOR)
        sem = cv2.imread(str(sem_path), cv2.IMREAD_UNCHANGED)
        if bgr is None or sem is None:
            raise DriveSegmentError(f"cannot read Waymo image {img_path} or label {sem_path}")
        if sem.ndim == 3:
            sem = sem[..., 0]
        if sem.shape != bgr.shape[:2]:
            raise DriveSegmentError(f"Waymo camera {name}: image {bgr.shape[:2]} and label {sem.shape} differ in size")
        out.append((name, np.ascontiguousarray(bgr[..., ::-1]), map_waymo_labels(sem, lut)))
    if not out:
        raise DriveSegmentError(f"no labelled camera images in {waymo_dir}")
    LOG.info("loaded %d labelled Waymo images from %s (%s)", len(out), waymo_dir, target)
    return out
