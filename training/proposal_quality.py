"""Quality of the LiDAR proposals against real labels: ground segmentation and object recall.

Two measurements, both for any :class:`~drive_segment_ros.proposals.ProposalConfig` (so for
both backends, ``range_image`` and ``dbscan``):

**Ground precision / recall / F1 on SemanticKITTI** with the Patchwork++ protocol (Lim et al.,
"Patchwork++: Fast and robust ground segmentation solving partial under-segmentation using 3D
point cloud", IROS 2022, Sec. IV.A; ``url-kaist/patchwork-plusplus``
``python/examples/evaluate_semantickitti.py``, protocol ``patchworkpp``):

* ground truth ground = SemanticKITTI classes road 40, parking 44, sidewalk 48, other-ground 49,
  lane-marking 60, terrain 72 (:data:`GROUND_CLASSES`);
* vegetation (70), unlabelled (0) and outlier (1) points are left out of the count: a predicted
  ground point with one of those labels is neither a true nor a false positive;
* per scan ``TP`` = predicted ground with a ground label, ``precision = TP / (predicted ground
  not excluded)``, ``recall = TP / (ground-truth ground)``, ``F1 = 2PR / (P + R)`` (percent);
* the figures of a run are the means over scans (as Patchwork++ reports them); the pooled
  (micro-averaged) counts are given beside them. Scans with no predicted ground are skipped
  (Patchwork++ does the same) and counted in ``skipped``.

Patchwork++ reports precision 95.6 / recall 97.2 / F1 96.3 on KITTI 00-10 (IROS 2022,
Table I): :data:`PATCHWORKPP_ANCHOR`.

The same SemanticKITTI scans also give **object recall on their labelled instances** (car, truck,
other-vehicle, person, bicycle / bicyclist, motorcycle / motorcyclist with >= 20 points; the
instance's points take the place of a box's): a second object measurement on other scans.

**Object recall on KITTI 3D boxes** (object benchmark layout ``training/{velodyne,label_2,calib}``):
every box of the classes Car, Van, Truck, Pedestrian, Cyclist (:data:`OBJECT_CLASSES`) holding at
least ``min_points`` (20) scan points is evaluated; it is *recalled* when one proposal segment
(labels ``>= 0``; ground and unassigned points belong to no segment) reaches point-IoU
``|S & B| / |S | B| >= 0.5`` with the box's points ``B``. A box that is not recalled is, in this
order:

* ``under`` (under-segmented): one segment holds at least half of the box's points but as many
  again outside it (merged with a neighbour, the ground or a wall);
* ``over`` (over-segmented): at least two segments hold 10 % of the box's points each;
* ``missed``: the rest (points mostly ground, unassigned, or in tiny fragments).

so ``recalled + under + over + missed = evaluated`` per class.

Boxes are given in rectified camera-2 coordinates (KITTI object devkit ``readme.txt``:
``h w l`` metres, ``x y z`` the bottom centre, ``rotation_y`` about the camera's y axis, which
points down). Scan points are taken to that frame with ``R0_rect @ Tr_velo_to_cam`` and tested
against the box there; :func:`box_corners_velodyne` gives the box in the Velodyne frame
(``inv(R0_rect @ Tr_velo_to_cam)``) for drawing.
"""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from drive_segment_ros.proposals import ProposalConfig, segment_scan
from drive_segment_ros.types import GROUND, DriveSegmentError

LOG = logging.getLogger(__name__)

PathLike = Union[str, Path]

#: SemanticKITTI ground classes of the Patchwork++ protocol: road, parking, sidewalk,
#: other-ground, lane-marking, terrain.
GROUND_CLASSES: Tuple[int, ...] = (40, 44, 48, 49, 60, 72)
#: SemanticKITTI vegetation: left out of the count (neither ground nor non-ground).
VEGETATION = 70
#: SemanticKITTI unlabelled (0) and outlier (1): left out of the count.
OUTLIER_CLASSES: Tuple[int, ...] = (0, 1)
#: Patchwork++ on SemanticKITTI 00-10 (Lim et al., IROS 2022, Table I), percent.
PATCHWORKPP_ANCHOR = {"precision": 95.6, "recall": 97.2, "f1": 96.3}
#: SemanticKITTI "thing" classes whose instances are evaluated for object recall (label ids of
#: ``semantic-kitti.yaml``).
INSTANCE_CLASSES: Dict[int, str] = {10: "car", 11: "bicycle", 15: "motorcycle", 18: "truck", 20: "other-vehicle",
                                    30: "person", 31: "bicyclist", 32: "motorcyclist"}
#: KITTI object classes whose boxes are evaluated for object recall.
OBJECT_CLASSES: Tuple[str, ...] = ("Car", "Van", "Truck", "Pedestrian", "Cyclist")
#: Outcomes of one evaluated box (see the module docstring).
OUTCOMES: Tuple[str, ...] = ("recalled", "under", "over", "missed")


# --------------------------------------------------------------------------------------------
# Readers
# --------------------------------------------------------------------------------------------
def read_velodyne(path: PathLike) -> np.ndarray:
    """A KITTI / SemanticKITTI Velodyne scan: ``(N, 4)`` float32 ``x, y, z, reflectance``
    (Velodyne frame: x forward, y left, z up, metres).

    Raises:
        DriveSegmentError: missing file or a size that is not a multiple of 16 bytes.
    """
    path = Path(path)
    if not path.is_file():
        raise DriveSegmentError(f"scan not found: {path}")
    raw = np.fromfile(path, dtype=np.float32)
    if raw.size % 4:
        raise DriveSegmentError(f"{path}: {raw.size} floats is not N x 4 (x, y, z, reflectance)")
    return raw.reshape(-1, 4)


def read_semantickitti_labels(path: PathLike, n_points: int) -> Tuple[np.ndarray, np.ndarray]:
    """SemanticKITTI ``.label`` file: ``(semantic, instance)``, two ``(N,)`` uint16 arrays (lower
    and upper 16 bits of the uint32 per point; instance 0 = none).

    Raises:
        DriveSegmentError: missing file or a label count that differs from ``n_points``.
    """
    path = Path(path)
    if not path.is_file():
        raise DriveSegmentError(f"label file not found: {path}")
    raw = np.fromfile(path, dtype=np.uint32)
    if raw.size != n_points:
        raise DriveSegmentError(f"{path}: {raw.size} labels for a scan of {n_points} points")
    return (raw & 0xFFFF).astype(np.uint16), (raw >> 16).astype(np.uint16)


def semantickitti_scans(root: PathLike) -> List[Tuple[str, Path, Path]]:
    """Labelled scans under a SemanticKITTI folder, sorted: ``[(name, scan.bin, scan.label)]``.

    ``root`` may be the dataset root (holding ``sequences/``), the ``sequences`` folder, or one
    sequence folder (holding ``velodyne/`` and ``labels/``). Scans without a label file are
    skipped; ``name`` is ``"SEQ/FRAME"``.

    Raises:
        DriveSegmentError: no labelled scan found.
    """
    root = Path(root)
    if (root / "velodyne").is_dir():
        seq_dirs = [root]
    elif (root / "sequences").is_dir():
        seq_dirs = sorted(p for p in (root / "sequences").iterdir() if (p / "velodyne").is_dir())
    else:
        seq_dirs = sorted(p for p in root.iterdir() if (p / "velodyne").is_dir()) if root.is_dir() else []
    out = []
    for seq in seq_dirs:
        for scan in sorted((seq / "velodyne").glob("*.bin")):
            label = seq / "labels" / (scan.stem + ".label")
            if label.is_file():
                out.append((f"{seq.name}/{scan.stem}", scan, label))
    if not out:
        raise DriveSegmentError(
            f"no labelled SemanticKITTI scans under {root} (expected [sequences/]SEQ/velodyne/*.bin + SEQ/labels/*.label)")
    return out


@dataclass
class KittiCalib:
    """KITTI object calibration (``training/calib/NNNNNN.txt``).

    Attributes:
        P2: (3, 4) projection of the left colour camera (rectified camera-2 frame -> pixels).
        R0_rect: (3, 3) rectifying rotation (camera-0 -> rectified camera frame).
        Tr_velo_to_cam: (3, 4) rigid transform Velodyne -> camera-0 (metres).
    """

    P2: np.ndarray
    R0_rect: np.ndarray
    Tr_velo_to_cam: np.ndarray

    @property
    def T_rect_velo(self) -> np.ndarray:
        """(4, 4) float64 Velodyne -> rectified camera frame: ``R0_rect @ Tr_velo_to_cam``."""
        r0 = np.eye(4)
        r0[:3, :3] = self.R0_rect
        tr = np.eye(4)
        tr[:3, :4] = self.Tr_velo_to_cam
        return r0 @ tr


def read_kitti_calib(path: PathLike) -> KittiCalib:
    """Read ``P2``, ``R0_rect`` and ``Tr_velo_to_cam`` from a KITTI object calib file.

    Raises:
        DriveSegmentError: missing file, missing key, or a wrong number of values.
    """
    path = Path(path)
    if not path.is_file():
        raise DriveSegmentError(f"calibration file not found: {path}")
    values: Dict[str, np.ndarray] = {}
    for line in path.read_text().splitlines():
        if ":" not in line:
            continue
        key, rest = line.split(":", 1)
        try:
            values[key.strip()] = np.array([float(v) for v in rest.split()], dtype=np.float64)
        except ValueError as exc:
            raise DriveSegmentError(f"{path}: bad numbers for {key.strip()}: {exc}") from exc
    shapes = {"P2": (3, 4), "R0_rect": (3, 3), "Tr_velo_to_cam": (3, 4)}
    out = {}
    for key, shape in shapes.items():
        if key not in values:
            raise DriveSegmentError(f"{path}: no {key} entry")
        if values[key].size != shape[0] * shape[1]:
            raise DriveSegmentError(f"{path}: {key} has {values[key].size} values, expected {shape[0] * shape[1]}")
        out[key] = values[key].reshape(shape)
    return KittiCalib(**out)


@dataclass
class KittiObject:
    """One line of a KITTI object label file (``training/label_2/NNNNNN.txt``).

    Attributes:
        type: class name (``Car``, ``Van``, ``Truck``, ``Pedestrian``, ``Person_sitting``,
            ``Cyclist``, ``Tram``, ``Misc``, ``DontCare``).
        truncated, occluded, alpha: as in the devkit (``occluded`` 0..3).
        bbox: 2D box (left, top, right, bottom) pixels in image 2.
        h, w, l: box height, width, length (m).
        x, y, z: bottom centre of the box in rectified camera-2 coordinates (m; y down).
        ry: rotation about the camera y axis (rad), ``[-pi, pi]``.
    """

    type: str
    truncated: float
    occluded: int
    alpha: float
    bbox: Tuple[float, float, float, float]
    h: float
    w: float
    l: float  # noqa: E741 (the devkit's name)
    x: float
    y: float
    z: float
    ry: float


def read_kitti_labels(path: PathLike) -> List[KittiObject]:
    """All objects of a KITTI object label file (15 values per line; a 16th score is ignored).

    Raises:
        DriveSegmentError: missing file or a malformed line (names the line).
    """
    path = Path(path)
    if not path.is_file():
        raise DriveSegmentError(f"label file not found: {path}")
    out = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 15:
            raise DriveSegmentError(f"{path}:{i}: expected 15 values, got {len(parts)}")
        try:
            v = [float(p) for p in parts[1:15]]
        except ValueError as exc:
            raise DriveSegmentError(f"{path}:{i}: {exc}") from exc
        out.append(KittiObject(parts[0], v[0], int(v[1]), v[2], (v[3], v[4], v[5], v[6]),
                               v[7], v[8], v[9], v[10], v[11], v[12], v[13]))
    return out


# --------------------------------------------------------------------------------------------
# Geometry of the boxes
# --------------------------------------------------------------------------------------------
def _box_frame(obj: KittiObject) -> np.ndarray:
    """(4, 4) box frame -> rectified camera frame (origin at the bottom centre)."""
    c, s = math.cos(obj.ry), math.sin(obj.ry)
    T = np.eye(4)
    T[:3, :3] = [[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]]  # rotation about the camera y axis
    T[:3, 3] = (obj.x, obj.y, obj.z)
    return T


def points_in_box(points: np.ndarray, obj: KittiObject, calib: KittiCalib) -> np.ndarray:
    """Which Velodyne points lie inside a KITTI 3D box (faces included).

    Args:
        points: (N, >=3) float, x, y, z in the Velodyne frame (m).
        obj: the box (rectified camera-2 coordinates).
        calib: the frame's calibration.

    Returns:
        (N,) bool.
    """
    pts = np.asarray(points, dtype=np.float64)[:, :3]
    T = np.linalg.inv(_box_frame(obj)) @ calib.T_rect_velo  # Velodyne -> box frame
    local = pts @ T[:3, :3].T + T[:3, 3]
    return ((np.abs(local[:, 0]) <= obj.l / 2) & (np.abs(local[:, 2]) <= obj.w / 2)
            & (local[:, 1] <= 0.0) & (local[:, 1] >= -obj.h))


def box_corners_velodyne(obj: KittiObject, calib: KittiCalib) -> np.ndarray:
    """(8, 3) corners of a KITTI box in the Velodyne frame (m): bottom face first
    (``+l/2,+w/2``, ``+l/2,-w/2``, ``-l/2,-w/2``, ``-l/2,+w/2`` in the box's x/z), then the top face."""
    l2, w2 = obj.l / 2, obj.w / 2
    xs = np.array([l2, l2, -l2, -l2] * 2)
    zs = np.array([w2, -w2, -w2, w2] * 2)
    ys = np.array([0.0] * 4 + [-obj.h] * 4)
    local = np.stack([xs, ys, zs, np.ones(8)])
    velo = np.linalg.inv(calib.T_rect_velo) @ _box_frame(obj) @ local
    return velo[:3].T


# --------------------------------------------------------------------------------------------
# Scores
# --------------------------------------------------------------------------------------------
@dataclass
class GroundScore:
    """Ground segmentation of one scan (or pooled over scans) under the Patchwork++ protocol.

    Attributes:
        tp: predicted ground points whose label is a ground class.
        n_pred: predicted ground points, less those labelled vegetation / unlabelled / outlier.
        n_gt: points labelled with a ground class.
        precision, recall, f1: percent (0 when the denominator is 0).
    """

    tp: int
    n_pred: int
    n_gt: int
    precision: float
    recall: float
    f1: float


def _prf(tp: int, n_pred: int, n_gt: int) -> Tuple[float, float, float]:
    p = 100.0 * tp / n_pred if n_pred else 0.0
    r = 100.0 * tp / n_gt if n_gt else 0.0
    return p, r, (2 * p * r / (p + r) if p + r > 0 else 0.0)


def ground_score(pred_ground: np.ndarray, semantic: np.ndarray) -> GroundScore:
    """Patchwork++ ground precision / recall / F1 of one scan.

    Args:
        pred_ground: (N,) bool, True for points predicted as ground.
        semantic: (N,) int SemanticKITTI class per point (lower 16 bits of the label).

    Returns:
        :class:`GroundScore` (percent).

    Raises:
        DriveSegmentError: shapes differ.
    """
    pred = np.asarray(pred_ground, dtype=bool).reshape(-1)
    sem = np.asarray(semantic).reshape(-1)
    if pred.shape != sem.shape:
        raise DriveSegmentError(f"ground_score: {pred.size} predictions for {sem.size} labels")
    gt = np.isin(sem, GROUND_CLASSES)
    excluded = (sem == VEGETATION) | np.isin(sem, OUTLIER_CLASSES)
    tp = int(np.count_nonzero(pred & gt))
    n_pred = int(np.count_nonzero(pred & ~excluded))
    n_gt = int(np.count_nonzero(gt))
    return GroundScore(tp, n_pred, n_gt, *_prf(tp, n_pred, n_gt))


def box_outcome(labels: np.ndarray, in_box: np.ndarray, iou_threshold: float = 0.5) -> Tuple[str, float]:
    """Outcome of one box against the proposal segments (see the module docstring).

    Args:
        labels: (N,) int proposal labels of the scan (``>= 0`` segment ids; ground and
            unassigned are negative and belong to no segment).
        in_box: (N,) bool points of the box (at least one).
        iou_threshold: point-IoU needed to count the box as recalled.

    Returns:
        ``(outcome, best_iou)``, outcome one of :data:`OUTCOMES`.
    """
    labels = np.asarray(labels)
    n_box = int(np.count_nonzero(in_box))
    if n_box == 0:
        return "missed", 0.0
    seg_in = labels[in_box]
    seg_in = seg_in[seg_in >= 0]
    if seg_in.size == 0:
        return "missed", 0.0
    ids, inter = np.unique(seg_in, return_counts=True)
    sizes = np.bincount(labels[labels >= 0], minlength=int(ids.max()) + 1)[ids]
    iou = inter / (sizes + n_box - inter)
    best = float(iou.max())
    if best >= iou_threshold:
        return "recalled", best
    if inter.max() >= 0.5 * n_box:
        return "under", best
    if np.count_nonzero(inter >= 0.1 * n_box) >= 2:
        return "over", best
    return "missed", best


# --------------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------------
def _config(config=None, backend: Optional[str] = None):
    if config is None:
        config = ProposalConfig()
    if backend is not None and backend != config.backend:
        values = config.to_dict()
        values["backend"] = backend
        config = ProposalConfig.from_dict(values)
    return config


def evaluate_ground(root: PathLike, config=None, backend: Optional[str] = None,
                    max_scans: Optional[int] = None, scans: Optional[Sequence[str]] = None) -> Dict:
    """Ground precision / recall / F1 of the proposals on SemanticKITTI (Patchwork++ protocol).

    Args:
        root: SemanticKITTI folder (see :func:`semantickitti_scans`).
        config: :class:`~drive_segment_ros.proposals.ProposalConfig` (default: the defaults).
        backend: overrides ``config.backend`` (``"range_image"`` or ``"dbscan"``).
        max_scans: evaluate at most this many scans (in name order).
        scans: evaluate only these names (``"SEQ/FRAME"``).

    Returns:
        dict: ``backend``, ``n_scans``, ``skipped``, ``precision``, ``recall``, ``f1`` (means over
        scans, percent), ``pooled`` (:class:`GroundScore` dict over all points), ``per_scan``
        (list of ``{name, n_points, time_ms, evaluated, **GroundScore}``), ``time_ms_median``,
        ``points_median``, and ``instances``: object recall on the labelled instances of
        :data:`INSTANCE_CLASSES` with at least 20 points, scored as the KITTI boxes are
        (:func:`box_outcome`: ``{evaluated, recalled, under, over, missed, recall}`` plus
        ``per_class``) -- a second object measurement, on other scans than the boxes.

    Raises:
        DriveSegmentError: no labelled scan, or a scan/label mismatch.
    """
    config = _config(config, backend)
    items = semantickitti_scans(root)
    if scans is not None:
        wanted = set(scans)
        items = [it for it in items if it[0] in wanted]
    if max_scans is not None:
        items = items[: int(max_scans)]
    per_scan, skipped, things = [], 0, []
    tp = n_pred = n_gt = 0
    for name, scan_path, label_path in items:
        points = read_velodyne(scan_path)
        sem, inst = read_semantickitti_labels(label_path, points.shape[0])
        t0 = time.perf_counter()
        prop = segment_scan(points, config)
        ms = (time.perf_counter() - t0) * 1e3
        for cls, cls_name in INSTANCE_CLASSES.items():
            of_cls = (sem == cls) & (inst > 0)
            for i in np.unique(inst[of_cls]):
                mask = of_cls & (inst == i)
                if np.count_nonzero(mask) >= 20:
                    things.append({"scan": name, "type": cls_name, "outcome": box_outcome(prop.labels, mask)[0]})
        pred = prop.labels == GROUND
        score = ground_score(pred, sem)
        tp, n_pred, n_gt = tp + score.tp, n_pred + score.n_pred, n_gt + score.n_gt
        any_ground = bool(pred.any())
        skipped += not any_ground
        per_scan.append({"name": name, "n_points": int(points.shape[0]), "time_ms": ms, "evaluated": any_ground,
                         **asdict(score)})
    used = [s for s in per_scan if s["evaluated"]]
    mean = {k: float(np.mean([s[k] for s in used])) if used else 0.0 for k in ("precision", "recall", "f1")}
    pooled = GroundScore(tp, n_pred, n_gt, *_prf(tp, n_pred, n_gt))
    return {
        "backend": config.backend,
        "n_scans": len(used),
        "skipped": skipped,
        **mean,
        "pooled": asdict(pooled),
        "per_scan": per_scan,
        "time_ms_median": float(np.median([s["time_ms"] for s in per_scan])) if per_scan else 0.0,
        "points_median": float(np.median([s["n_points"] for s in per_scan])) if per_scan else 0.0,
        "instances": {**_outcome_summary(things),
                      "per_class": {c: _outcome_summary([t for t in things if t["type"] == c])
                                    for c in INSTANCE_CLASSES.values() if any(t["type"] == c for t in things)}},
    }


def _outcome_summary(rows: List[Dict]) -> Dict:
    """``{evaluated, recalled, under, over, missed, recall %}`` of rows with an ``outcome``."""
    out = {"evaluated": len(rows), **{k: sum(r["outcome"] == k for r in rows) for k in OUTCOMES}}
    out["recall"] = 100.0 * out["recalled"] / len(rows) if rows else float("nan")
    return out


def kitti_object_frames(root: PathLike) -> List[Tuple[str, Path, Path, Path]]:
    """Frames of a KITTI object folder with scan, labels and calibration, sorted:
    ``[(frame, velodyne.bin, label_2.txt, calib.txt)]``.

    ``root`` may be the dataset root (holding ``training/``) or the ``training`` folder.

    Raises:
        DriveSegmentError: no complete frame found.
    """
    root = Path(root)
    base = root / "training" if (root / "training").is_dir() else root
    out = []
    velo = base / "velodyne"
    for scan in sorted(velo.glob("*.bin")) if velo.is_dir() else []:
        label = base / "label_2" / (scan.stem + ".txt")
        calib = base / "calib" / (scan.stem + ".txt")
        if label.is_file() and calib.is_file():
            out.append((scan.stem, scan, label, calib))
    if not out:
        raise DriveSegmentError(
            f"no KITTI object frames under {root} (expected [training/]velodyne/*.bin + label_2/*.txt + calib/*.txt)")
    return out


def evaluate_objects(root: PathLike, config=None, backend: Optional[str] = None,
                     classes: Iterable[str] = OBJECT_CLASSES, min_points: int = 20,
                     iou_threshold: float = 0.5, max_frames: Optional[int] = None) -> Dict:
    """Object recall of the proposals on KITTI 3D boxes (protocol in the module docstring).

    Args:
        root: KITTI object folder (see :func:`kitti_object_frames`).
        config, backend: as in :func:`evaluate_ground`.
        classes: box classes evaluated (default :data:`OBJECT_CLASSES`).
        min_points: boxes with fewer scan points inside are not evaluated.
        iou_threshold: point-IoU for a box to count as recalled.
        max_frames: evaluate at most this many frames.

    Returns:
        dict: ``backend``, ``n_frames``, ``per_class`` (``{class: {evaluated, recalled, under,
        over, missed, recall}}``, recall in percent), ``total`` (same over all classes),
        ``boxes`` (list of ``{frame, type, n_points, outcome, best_iou}``), ``time_ms_median``,
        ``points_median``.

    Raises:
        DriveSegmentError: no complete frame, or malformed files.
    """
    config = _config(config, backend)
    classes = tuple(classes)
    frames = kitti_object_frames(root)
    if max_frames is not None:
        frames = frames[: int(max_frames)]
    boxes, times, sizes = [], [], []
    for frame, scan_path, label_path, calib_path in frames:
        points = read_velodyne(scan_path)
        calib = read_kitti_calib(calib_path)
        t0 = time.perf_counter()
        prop = segment_scan(points, config)
        times.append((time.perf_counter() - t0) * 1e3)
        sizes.append(points.shape[0])
        for obj in read_kitti_labels(label_path):
            if obj.type not in classes:
                continue
            inside = points_in_box(points, obj, calib)
            n = int(np.count_nonzero(inside))
            if n < min_points:
                continue
            outcome, best = box_outcome(prop.labels, inside, iou_threshold)
            boxes.append({"frame": frame, "type": obj.type, "n_points": n, "outcome": outcome, "best_iou": best})

    return {
        "backend": config.backend,
        "n_frames": len(frames),
        "per_class": {c: _outcome_summary([b for b in boxes if b["type"] == c]) for c in classes},
        "total": _outcome_summary(boxes),
        "boxes": boxes,
        "time_ms_median": float(np.median(times)) if times else 0.0,
        "points_median": float(np.median(sizes)) if sizes else 0.0,
    }


def format_ground(result: Dict) -> str:
    """One line: ``ground [backend] P/R/F1 over n scans (Patchwork++ 95.6/97.2/96.3)``."""
    a = PATCHWORKPP_ANCHOR
    return (f"ground [{result['backend']}] precision {result['precision']:.1f} recall {result['recall']:.1f} "
            f"F1 {result['f1']:.1f} over {result['n_scans']} scans (Patchwork++ KITTI 00-10: "
            f"{a['precision']}/{a['recall']}/{a['f1']}); {result['time_ms_median']:.1f} ms/scan median")


def format_instances(result: Dict) -> str:
    """One line: object recall on the SemanticKITTI instances of an :func:`evaluate_ground` result."""
    t = result["instances"]
    if not t["evaluated"]:
        return f"instances [{result['backend']}] no labelled instance with enough points"
    return (f"instances [{result['backend']}] SemanticKITTI objects recall {t['recall']:.1f}% "
            f"({t['recalled']}/{t['evaluated']}), under {t['under']}, over {t['over']}, missed {t['missed']}")


def format_objects(result: Dict) -> str:
    """Lines: total and per-class recall with the under / over / missed counts."""
    lines = []
    for name, row in [("all", result["total"])] + list(result["per_class"].items()):
        if not row["evaluated"]:
            lines.append(f"objects [{result['backend']}] {name:<10} no box with enough points")
            continue
        lines.append(f"objects [{result['backend']}] {name:<10} recall {row['recall']:5.1f}% "
                     f"({row['recalled']}/{row['evaluated']}), under {row['under']}, over {row['over']}, "
                     f"missed {row['missed']}")
    return "\n".join(lines)


def run_quality(config=None, semantickitti: Optional[PathLike] = None, kitti_boxes: Optional[PathLike] = None,
                backend: Optional[str] = None, out: Optional[PathLike] = None) -> Dict:
    """Score a proposal config on SemanticKITTI ground and / or KITTI boxes; print one summary
    per measurement and optionally write ``out/proposal_quality.json``.

    Used by ``drive-segment proposals --eval-semantickitti DIR --eval-kitti-boxes DIR`` so users
    can score their own parameter choices.

    Args:
        config: :class:`~drive_segment_ros.proposals.ProposalConfig`, a YAML path
            (``config/proposals.yaml`` layout) or ``None`` (defaults).
        semantickitti, kitti_boxes: dataset folders (see :func:`evaluate_ground`,
            :func:`evaluate_objects`); ``None`` skips that measurement.
        backend: overrides the config's backend.
        out: folder for ``proposal_quality.json`` (created), or ``None``.

    Returns:
        ``{"config": dict, "ground": result or None, "objects": result or None}``.

    Raises:
        DriveSegmentError: bad config or dataset folders.
    """
    if config is not None and not isinstance(config, ProposalConfig):
        config = ProposalConfig.from_yaml(config)
    config = _config(config, backend)
    result = {"config": config.to_dict(), "ground": None, "objects": None}
    if semantickitti is not None:
        result["ground"] = evaluate_ground(semantickitti, config)
        print(format_ground(result["ground"]))
        print(format_instances(result["ground"]))
    if kitti_boxes is not None:
        result["objects"] = evaluate_objects(kitti_boxes, config)
        print(format_objects(result["objects"]))
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "proposal_quality.json").write_text(json.dumps(result, indent=1, default=float))
        print(f"-> {out / 'proposal_quality.json'}")
    return result
