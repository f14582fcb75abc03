"""LiDAR -> image projection with occlusion handling, dense segment masks, and back-projection.

Stage 3 of Drive&Segment (Vobecky et al., ECCV 2022, Sec. 3.1 "Object proposals from LiDAR";
IJCV 2025, Sec. 3.2): every LiDAR segment is projected into the camera image, only points in
front of the camera are kept, occlusions are resolved with a depth buffer, and the sparse
projected points are densified into a segment mask; pixels covered by no segment stay
unlabelled (-1). The reverse direction (:func:`labels_to_points`) carries 2-D predictions to
the LiDAR points, giving annotation-free point-cloud labels.

Conventions (``docs/ARCHITECTURE.md``, REP 103): ``T_cam_lidar`` maps LiDAR points into the
camera optical frame (z forward, x right, y down); pixel ``(u, v)`` = (column, row) with the
OpenCV convention that pixel centres sit at integer coordinates, so point ``(u, v)`` lies in
pixel ``(row, col) = (floor(v + 0.5), floor(u + 0.5))``. Depth = z in the optical frame, metres.

Nothing here imports ROS; everything is vectorized with numpy (``np.minimum.at`` z-buffers) and
OpenCV morphology; the only Python loop is the optional per-*segment* closing / hull step.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional, Tuple, Union

import numpy as np

from drive_segment_ros.types import CameraModel, DriveFrame, DriveSegmentError

if TYPE_CHECKING:  # pragma: no cover
    from drive_segment_ros.proposals import ProposalConfig, Proposals

LOG = logging.getLogger(__name__)

__all__ = [
    "Projection",
    "ProjectionConfig",
    "transform_points",
    "project_points",
    "pixel_indices",
    "depth_buffer",
    "splat_radius",
    "segment_map",
    "labels_to_points",
    "compute_segment_map",
]


# --------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------
@dataclass
class ProjectionConfig:
    """Parameters of :func:`segment_map` / :func:`labels_to_points` (YAML: ``config/projection.yaml``).

    Attributes:
        min_depth: points with optical-axis depth <= this (metres) are dropped (behind / at the camera).
        max_depth: points farther than this (metres) are dropped.
        splat_size_m: metric radius of the disk each projected point covers; the pixel radius is
            ``clip(splat_size_m * f / depth, splat_min_px, splat_max_px)`` with ``f = (fx + fy) / 2``.
        splat_min_px, splat_max_px: bounds of that radius in pixels; the radius is then rounded to
            an integer ``r`` and the point covers a disk-like octagon of radius ``r`` (see
            ``_splat``; ``r = 0``: its own pixel only).
        depth_tolerance_m, depth_tolerance_rel: a surface at depth ``z`` counts as *nearer* than a
            segment / point at depth ``d`` only when ``z < d - (depth_tolerance_m + depth_tolerance_rel * d)``
            (slanted surfaces such as the road change depth quickly between neighbouring pixels).
        closing_px: per-segment morphological closing kernel ``[width, height]`` in pixels (rectangle),
            ``[0, 0]`` = off. Newly closed pixels are accepted only where unlabelled and where no
            nearer surface is in the splatted depth buffer (closing bounded by depth discontinuities).
        hull: fill each segment's convex hull under the same depth test (for very sparse LiDARs).
        min_pixels: segments covering fewer pixels are removed (set to -1).
    """

    min_depth: float = 0.5
    max_depth: float = 80.0
    splat_size_m: float = 0.12
    splat_min_px: float = 1.5
    splat_max_px: float = 5.0
    depth_tolerance_m: float = 0.5
    depth_tolerance_rel: float = 0.1
    closing_px: Tuple[int, int] = (5, 7)
    hull: bool = False
    min_pixels: int = 30

    def __post_init__(self) -> None:
        cp = tuple(int(v) for v in np.atleast_1d(np.asarray(self.closing_px)).ravel())
        if len(cp) == 1:
            cp = (cp[0], cp[0])
        self.closing_px = cp  # type: ignore[assignment]
        self.validate()

    def validate(self) -> "ProjectionConfig":
        """Check ranges; raise :class:`DriveSegmentError` with one line naming the bad field."""
        if not (0.0 <= self.min_depth < self.max_depth):
            raise DriveSegmentError(f"projection config: need 0 <= min_depth < max_depth, got {self.min_depth}, {self.max_depth}")
        if self.splat_size_m < 0 or not (0.0 <= self.splat_min_px <= self.splat_max_px):
            raise DriveSegmentError(
                f"projection config: need splat_size_m >= 0 and 0 <= splat_min_px <= splat_max_px, got "
                f"{self.splat_size_m}, {self.splat_min_px}, {self.splat_max_px}"
            )
        if self.splat_max_px > 32:
            raise DriveSegmentError(f"projection config: splat_max_px must be <= 32, got {self.splat_max_px}")
        if self.depth_tolerance_m < 0 or self.depth_tolerance_rel < 0:
            raise DriveSegmentError("projection config: depth tolerances must be >= 0")
        if len(self.closing_px) != 2 or min(self.closing_px) < 0:
            raise DriveSegmentError(f"projection config: closing_px must be two integers >= 0, got {self.closing_px}")
        if self.min_pixels < 0:
            raise DriveSegmentError(f"projection config: min_pixels must be >= 0, got {self.min_pixels}")
        return self

    @classmethod
    def from_dict(cls, data: Optional[Mapping[str, Any]]) -> "ProjectionConfig":
        """Build from a mapping (unknown keys raise :class:`DriveSegmentError`); ``None`` = defaults.

        A top-level ``projection:`` key is unwrapped, so the YAML may be nested or flat.
        """
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise DriveSegmentError(f"projection config must be a mapping, got {type(data).__name__}")
        if "projection" in data and isinstance(data["projection"], Mapping):
            data = data["projection"]
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise DriveSegmentError(f"projection config: unknown key(s) {unknown}; known: {sorted(known)}")
        try:
            return cls(**dict(data))
        except (TypeError, ValueError) as exc:
            raise DriveSegmentError(f"projection config: {exc}") from exc

    @classmethod
    def from_yaml(cls, path: Union[str, Path]) -> "ProjectionConfig":
        """Load ``config/projection.yaml``-style YAML. Raises FileNotFoundError / DriveSegmentError."""
        import yaml

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"projection config not found: {path}")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise DriveSegmentError(f"projection config {path}: invalid YAML ({exc})") from exc
        return cls.from_dict(data)

    def to_dict(self) -> Dict[str, Any]:
        """Plain-dict form (for ``index.json`` and YAML)."""
        d = asdict(self)
        d["closing_px"] = list(self.closing_px)
        return d

    def tolerance(self, depth: np.ndarray) -> np.ndarray:
        """Depth-discontinuity tolerance (metres) at ``depth`` (metres): ``tol_m + tol_rel * depth``."""
        return self.depth_tolerance_m + self.depth_tolerance_rel * np.asarray(depth)


# --------------------------------------------------------------------------------------------
# projection
# --------------------------------------------------------------------------------------------
@dataclass
class Projection:
    """Result of :func:`project_points`.

    Attributes:
        uv: (N, 2) float32 pixel coordinates (u = column, v = row), distortion applied.
        depth: (N,) float32 depth along the optical axis (camera z), metres; <= 0 behind the camera.
        valid: (N,) bool, ``depth > min_depth`` and the pixel lies inside the image
            (``-0.5 <= u < W - 0.5`` and ``-0.5 <= v < H - 0.5``) and, with distortion, the point
            lies inside the field of view where the distortion polynomial is meaningful.
    """

    uv: np.ndarray
    depth: np.ndarray
    valid: np.ndarray

    def pixels(self) -> Tuple[np.ndarray, np.ndarray]:
        """(rows, cols) int64 pixel indices of every point (meaningful only where ``valid``)."""
        return pixel_indices(self.uv)


def _check_T(T: np.ndarray, name: str = "T_cam_lidar") -> np.ndarray:
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        raise DriveSegmentError(f"{name} must be a finite 4x4 matrix, got shape {T.shape}")
    return T


def _check_xyz(xyz: np.ndarray) -> np.ndarray:
    xyz = np.asarray(xyz)
    if xyz.ndim != 2 or xyz.shape[1] < 3:
        raise DriveSegmentError(f"points must be an (N, >=3) array, got shape {xyz.shape}")
    return xyz[:, :3]


def transform_points(xyz: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Apply a 4x4 homogeneous transform: ``(N, >=3)`` points (first 3 columns used) -> (N, 3) float64.

    Raises DriveSegmentError on bad shapes or a non-finite transform.
    """
    xyz = _check_xyz(xyz).astype(np.float64, copy=False)
    T = _check_T(T, "transform")
    return xyz @ T[:3, :3].T + T[:3, 3]


def _distort_normalized(x: np.ndarray, y: np.ndarray, D: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """OpenCV distortion model on normalized coordinates (``cv::projectPoints`` semantics).

    ``D`` = (k1, k2, p1, p2[, k3[, k4, k5, k6]]) - plumb_bob (5) or rational_polynomial (8)
    (OpenCV docs, "Camera Calibration and 3D Reconstruction"; ROS ``sensor_msgs/CameraInfo``).
    """
    k = np.zeros(8)
    k[: min(8, D.size)] = D[:8]
    k1, k2, p1, p2, k3, k4, k5, k6 = k
    r2 = x * x + y * y
    r4 = r2 * r2
    r6 = r4 * r2
    radial = (1.0 + k1 * r2 + k2 * r4 + k3 * r6) / (1.0 + k4 * r2 + k5 * r4 + k6 * r6)
    xd = x * radial + 2.0 * p1 * x * y + p2 * (r2 + 2.0 * x * x)
    yd = y * radial + p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * x * y
    return xd, yd


def _undistorted_fov_box(camera: CameraModel, margin: float = 0.1) -> Tuple[float, float, float, float]:
    """Bounding box (xmin, xmax, ymin, ymax) of the normalized, *undistorted* image border, enlarged by ``margin``.

    Points outside it are never valid: far outside the calibrated field of view the distortion
    polynomial can fold back and map them into the image.
    """
    import cv2

    W, H = camera.width, camera.height
    t = np.linspace(0.0, 1.0, 33)
    border = np.concatenate(
        [
            np.stack([t * (W - 1), np.zeros_like(t)], 1),
            np.stack([t * (W - 1), np.full_like(t, H - 1)], 1),
            np.stack([np.zeros_like(t), t * (H - 1)], 1),
            np.stack([np.full_like(t, W - 1), t * (H - 1)], 1),
        ]
    ).astype(np.float64)
    und = cv2.undistortPoints(border.reshape(-1, 1, 2), camera.K, camera.D).reshape(-1, 2)
    xmin, ymin = und.min(0)
    xmax, ymax = und.max(0)
    dx, dy = (xmax - xmin) * margin, (ymax - ymin) * margin
    return float(xmin - dx), float(xmax + dx), float(ymin - dy), float(ymax + dy)


def project_points(
    xyz: np.ndarray, camera: CameraModel, T_cam_lidar: np.ndarray, min_depth: float = 0.1
) -> Projection:
    """Project LiDAR points into the image.

    Args:
        xyz: (N, >=3) points in the LiDAR frame, metres (extra columns such as intensity ignored).
        camera: pinhole model; ``D`` (plumb_bob k1, k2, p1, p2, k3 or 8-term rational) is applied
            when non-zero exactly as ``cv2.projectPoints`` does; ``K[0, 1]`` skew is honoured.
        T_cam_lidar: (4, 4) LiDAR frame -> camera optical frame.
        min_depth: metres; points with depth <= this are invalid (also avoids division by ~0).

    Returns:
        :class:`Projection` (uv float32 (N, 2), depth float32 (N,), valid bool (N,)).
        Points behind the camera get ``valid = False`` and uv = NaN.

    Raises:
        DriveSegmentError: bad shapes, non-finite transform.

    Source: pinhole + Brown-Conrady model, OpenCV ``projectPoints`` / ROS ``image_geometry``.
    """
    if not isinstance(camera, CameraModel):
        raise DriveSegmentError(f"camera must be a CameraModel, got {type(camera).__name__}")
    pc = transform_points(xyz, T_cam_lidar)
    z = pc[:, 2]
    front = np.isfinite(z) & (z > max(float(min_depth), 1e-9))
    with np.errstate(divide="ignore", invalid="ignore"):
        x = np.where(front, pc[:, 0] / np.where(front, z, 1.0), np.nan)
        y = np.where(front, pc[:, 1] / np.where(front, z, 1.0), np.nan)
    K = camera.K
    D = camera.D
    distorted = D.size > 0 and np.any(D != 0)
    if distorted:
        xmin, xmax, ymin, ymax = _undistorted_fov_box(camera)
        with np.errstate(invalid="ignore"):
            front &= (x >= xmin) & (x <= xmax) & (y >= ymin) & (y <= ymax)
        xd, yd = _distort_normalized(x, y, D)
    else:
        xd, yd = x, y
    u = K[0, 0] * xd + K[0, 1] * yd + K[0, 2]
    v = K[1, 1] * yd + K[1, 2]
    W, H = camera.width, camera.height
    with np.errstate(invalid="ignore"):
        inside = (u >= -0.5) & (u < W - 0.5) & (v >= -0.5) & (v < H - 0.5)
    valid = front & inside
    uv = np.stack([u, v], axis=1).astype(np.float32)
    uv[~front] = np.nan
    return Projection(uv=uv, depth=z.astype(np.float32), valid=valid)


def pixel_indices(uv: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(rows, cols) int64 of the pixels containing ``uv`` (N, 2) (centre-at-integer convention).

    NaN coordinates map to -1 (callers must mask with ``Projection.valid``).
    """
    uv = np.asarray(uv, dtype=np.float64)
    finite = np.isfinite(uv).all(1)
    rc = np.full((uv.shape[0], 2), -1, dtype=np.int64)
    rc[finite] = np.floor(uv[finite][:, ::-1] + 0.5).astype(np.int64)
    return rc[:, 0], rc[:, 1]


def depth_buffer(rows: np.ndarray, cols: np.ndarray, depth: np.ndarray, shape: Tuple[int, int]) -> np.ndarray:
    """Nearest depth per pixel: (H, W) float32, ``inf`` where no point lands (vectorized ``np.minimum.at``).

    ``rows``, ``cols`` must already be inside ``shape``.
    """
    H, W = shape
    buf = np.full(H * W, np.inf, dtype=np.float32)
    np.minimum.at(buf, rows * W + cols, depth.astype(np.float32))
    return buf.reshape(H, W)


def _visible_projection(
    points: np.ndarray, camera: CameraModel, T_cam_lidar: np.ndarray, config: ProjectionConfig
) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Indices of points inside the image and depth range, their rows, cols, depths."""
    proj = project_points(points, camera, T_cam_lidar, min_depth=config.min_depth)
    keep = proj.valid & (proj.depth <= config.max_depth)
    idx = np.flatnonzero(keep)
    rows, cols = pixel_indices(proj.uv[idx])
    return idx, rows, cols, proj.depth[idx].astype(np.float32)


def _nearest_per_pixel(rows: np.ndarray, cols: np.ndarray, depth: np.ndarray, width: int) -> np.ndarray:
    """Indices of the nearest point of every occupied pixel (vectorized lexsort, no loop)."""
    flat = rows * width + cols
    order = np.lexsort((depth, flat))
    first = np.ones(order.size, dtype=bool)
    first[1:] = flat[order][1:] != flat[order][:-1]
    return order[first]


_IDX_BITS = 22  # point index bits of the packed (depth, index) z-buffer key (<= 4M points per image)


def splat_radius(depth: np.ndarray, camera: CameraModel, config: ProjectionConfig) -> np.ndarray:
    """Integer splat radius in pixels per point: ``round(clip(splat_size_m * f / depth, min_px, max_px))``.

    ``f = (fx + fy) / 2`` pixels; ``depth`` metres; returns (N,) int64.
    """
    f = 0.5 * (camera.K[0, 0] + camera.K[1, 1])
    r = np.clip(config.splat_size_m * f / np.maximum(np.asarray(depth, dtype=np.float64), 1e-6), config.splat_min_px, config.splat_max_px)
    return np.rint(r).astype(np.int64)


def _splat(
    rows: np.ndarray,
    cols: np.ndarray,
    depth: np.ndarray,
    camera: CameraModel,
    config: ProjectionConfig,
) -> Tuple[np.ndarray, np.ndarray]:
    """Depth-tested disk splatting (z-buffered point splats).

    Every point covers a disk-like octagon of radius ``r = splat_radius(depth)`` pixels,
    ``{max(|dx|, |dy|) <= r and |dx| + |dy| <= r + ceil(r / 2)}`` (r = 1: 3x3 square; r = 4: the
    9x9 square minus 3 pixels per corner); each pixel keeps the nearest covering point. Implemented
    as grey-level erosion (min filter, ``cv2.erode``) of a packed key image
    ``key = depth_mm * 2**22 + index`` (float64, exact below 2**53): keys of the points with radius
    ``r`` enter the image before the last ``r`` of ``r_max`` successive 3x3 erosions (square on odd,
    cross on even steps), since erosion distributes over ``min``. No per-point loop; ``r_max`` cheap
    passes over the points' bounding box.

    Args:
        rows, cols: (M,) int pixel indices, one point per pixel at most (nearest already chosen).
        depth: (M,) float32 metres.

    Returns:
        ``(zbuf (H, W) float32 metres, inf = empty; winner (H, W) int64 index into the inputs, -1 = empty)``.
    """
    import cv2

    H, W = camera.height, camera.width
    m = rows.size
    if m >= 2 ** _IDX_BITS:
        raise DriveSegmentError(f"too many points for one image ({m} >= {2 ** _IDX_BITS})")
    zbuf = np.full((H, W), np.inf, dtype=np.float32)
    winner = np.full((H, W), -1, dtype=np.int64)
    if m == 0:
        return zbuf, winner
    keys = np.rint(np.asarray(depth, dtype=np.float64) * 1000.0) * float(2 ** _IDX_BITS) + np.arange(m, dtype=np.float64)
    radius = splat_radius(depth, camera, config)
    rmax = int(radius.max())
    r0, r1 = max(int(rows.min()) - rmax, 0), min(int(rows.max()) + rmax + 1, H)
    c0, c1 = max(int(cols.min()) - rmax, 0), min(int(cols.max()) + rmax + 1, W)
    rr, cc = rows - r0, cols - c0
    acc = np.full((r1 - r0, c1 - c0), np.inf, dtype=np.float64)
    square = np.ones((3, 3), np.uint8)
    cross = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    for step in range(rmax, -1, -1):
        sel = radius == step
        if sel.any():  # at most one point per pixel: a plain masked assignment is a min-update
            acc[rr[sel], cc[sel]] = np.minimum(acc[rr[sel], cc[sel]], keys[sel])
        if step > 0:
            acc = cv2.erode(acc, square if step % 2 else cross, borderType=cv2.BORDER_CONSTANT, borderValue=np.inf)
    has = np.isfinite(acc)
    idx = np.mod(acc[has], float(2 ** _IDX_BITS)).astype(np.int64)
    winner[r0:r1, c0:c1][has] = idx
    zbuf[r0:r1, c0:c1][has] = np.asarray(depth, dtype=np.float32)[idx]
    return zbuf, winner


def segment_map(
    points: np.ndarray,
    point_ids: np.ndarray,
    camera: CameraModel,
    T_cam_lidar: np.ndarray,
    config: Optional[ProjectionConfig] = None,
) -> np.ndarray:
    """Dense, occlusion-aware segment mask from labelled LiDAR points.

    Algorithm (Drive&Segment Sec. 3.1, step "projection"): (1) project the points (in front of
    the camera, inside the image, ``min_depth < depth <= max_depth``); (2) depth-tested disk
    splatting - every point, labelled or not, covers a disk whose pixel radius shrinks with
    depth, and each pixel takes the id of the nearest covering point, so nearer surfaces occlude
    farther ones and points with ``id < 0`` occlude without labelling; (3) optional per-segment
    morphological closing / convex hull, accepted only on unlabelled pixels with no nearer
    surface (``zbuf >= seg_min_depth - tolerance``), nearest segments first; (4) segments with
    fewer than ``min_pixels`` pixels are dropped.

    Args:
        points: (N, >=3) LiDAR frame, metres.
        point_ids: (N,) int, segment id per point; ``< 0`` = no label (still occludes).
        camera: camera model (image size, K, D).
        T_cam_lidar: (4, 4) LiDAR -> camera optical frame.
        config: :class:`ProjectionConfig` (defaults when ``None``).

    Returns:
        (H, W) int32 segment ids, -1 = unlabelled.

    Raises:
        DriveSegmentError: shape mismatch between points and ids, bad transform.
    """
    config = config or ProjectionConfig()
    points = _check_xyz(points)
    point_ids = np.asarray(point_ids).reshape(-1)
    if point_ids.shape[0] != points.shape[0]:
        raise DriveSegmentError(f"point_ids has {point_ids.shape[0]} entries for {points.shape[0]} points")
    H, W = camera.height, camera.width
    out = np.full((H, W), -1, dtype=np.int32)
    idx, rows, cols, depth = _visible_projection(points, camera, T_cam_lidar, config)
    if idx.size == 0:
        return out
    ids = point_ids[idx].astype(np.int64)
    # keep only the nearest point per pixel before splatting (fewer candidates, same result)
    sel = _nearest_per_pixel(rows, cols, depth, W)
    rows, cols, depth, ids = rows[sel], cols[sel], depth[sel], ids[sel]

    zbuf, winner = _splat(rows, cols, depth, camera, config)
    has = winner >= 0
    out[has] = np.where(ids[winner[has]] >= 0, ids[winner[has]], -1).astype(np.int32)

    do_close = min(config.closing_px) > 1
    if do_close or config.hull:
        _fill_segments(out, zbuf, rows, cols, depth, ids, config)

    if config.min_pixels > 1:
        _drop_small(out, config.min_pixels)
    return out


def _drop_small(out: np.ndarray, min_pixels: int) -> None:
    """Set segments with fewer than ``min_pixels`` pixels to -1 (in place; bincount, O(pixels))."""
    labelled = out >= 0
    if not labelled.any():
        return
    vals = out[labelled]
    top = int(vals.max())
    if top < 4 * out.size + 1024:  # dense enough ids: histogram + lookup table
        small = np.bincount(vals, minlength=top + 1) < min_pixels
        drop = np.zeros_like(labelled)
        drop[labelled] = small[vals]
    else:  # huge sparse ids
        uniq, counts = np.unique(vals, return_counts=True)
        drop = np.isin(out, uniq[counts < min_pixels])
    out[drop] = -1


def _fill_segments(
    out: np.ndarray,
    zbuf: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    depth: np.ndarray,
    ids: np.ndarray,
    config: ProjectionConfig,
) -> None:
    """Per-segment closing / convex hull bounded by depth discontinuities (in place on ``out``).

    Loops over segments (not points), each on its bounding-box ROI.
    """
    import cv2

    H, W = out.shape
    lab = ids >= 0
    if not lab.any():
        return
    seg_ids, inv = np.unique(ids[lab], return_inverse=True)
    r, c, d = rows[lab], cols[lab], depth[lab]
    n = seg_ids.size
    dmin = np.full(n, np.inf)
    np.minimum.at(dmin, inv, d)
    rmin = np.full(n, H, dtype=np.int64)
    rmax = np.full(n, -1, dtype=np.int64)
    cmin = np.full(n, W, dtype=np.int64)
    cmax = np.full(n, -1, dtype=np.int64)
    np.minimum.at(rmin, inv, r)
    np.maximum.at(rmax, inv, r)
    np.minimum.at(cmin, inv, c)
    np.maximum.at(cmax, inv, c)
    kw, kh = config.closing_px
    # rectangular kernel: OpenCV runs it as separable row / column passes (several times faster than an ellipse)
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (max(kw, 1), max(kh, 1))) if min(kw, kh) > 1 else None
    pad_r, pad_c = (kh // 2 + 1, kw // 2 + 1) if kernel is not None else (1, 1)
    allowed_depth = dmin - config.tolerance(dmin)
    for k in np.argsort(dmin, kind="stable"):  # nearest segments claim pixels first
        sid = int(seg_ids[k])
        r0, r1 = max(rmin[k] - pad_r, 0), min(rmax[k] + pad_r + 1, H)
        c0, c1 = max(cmin[k] - pad_c, 0), min(cmax[k] + pad_c + 1, W)
        roi = out[r0:r1, c0:c1]
        mask = (roi == sid).astype(np.uint8)
        if not mask.any():
            continue
        filled = mask
        if kernel is not None:
            filled = cv2.morphologyEx(filled, cv2.MORPH_CLOSE, kernel)
        if config.hull:
            pts = cv2.findNonZero(filled)
            if pts is not None and len(pts) >= 3:
                hull = cv2.convexHull(pts)
                filled = filled.copy()
                cv2.fillConvexPoly(filled, hull, 1)
        new = (filled > 0) & (roi == -1) & (zbuf[r0:r1, c0:c1] >= allowed_depth[k])
        roi[new] = sid


def labels_to_points(
    label_image: np.ndarray,
    points: np.ndarray,
    camera: CameraModel,
    T_cam_lidar: np.ndarray,
    occlusion: bool = True,
    config: Optional[ProjectionConfig] = None,
) -> np.ndarray:
    """Carry a 2-D label image to the LiDAR points (annotation-free point-cloud labels).

    Each point takes the label of the pixel it projects to; it gets -1 when it lies behind the
    camera, outside the image or depth range, or (``occlusion=True``) when a nearer surface
    covers its pixel in the splatted depth buffer of all points (nearer by more than
    ``config.tolerance(depth)``). Used for the reverse 2D -> 3D transfer (UOV / AFOV style).

    Args:
        label_image: (H, W) integer labels (any value is copied as is, e.g. 255 = ignore stays 255).
        points: (N, >=3) LiDAR frame, metres.
        camera, T_cam_lidar: as in :func:`project_points`; ``label_image`` must be camera-sized.
        occlusion: apply the depth-buffer visibility test.
        config: :class:`ProjectionConfig` for depth range, splat radius and tolerances.

    Returns:
        (N,) int32 labels, -1 where not visible.

    Raises:
        DriveSegmentError: label image size differs from the camera's.
    """
    config = config or ProjectionConfig()
    label_image = np.asarray(label_image)
    if label_image.shape[:2] != (camera.height, camera.width) or label_image.ndim != 2:
        raise DriveSegmentError(
            f"label image shape {label_image.shape} does not match camera {camera.width}x{camera.height} (need (H, W))"
        )
    points = _check_xyz(points)
    out = np.full(points.shape[0], -1, dtype=np.int32)
    idx, rows, cols, depth = _visible_projection(points, camera, T_cam_lidar, config)
    if idx.size == 0:
        return out
    if occlusion:
        sel = _nearest_per_pixel(rows, cols, depth, camera.width)
        zbuf, _ = _splat(rows[sel], cols[sel], depth[sel], camera, config)
        vis = depth <= zbuf[rows, cols] + config.tolerance(depth)
        idx, rows, cols = idx[vis], rows[vis], cols[vis]
    out[idx] = label_image[rows, cols].astype(np.int32)
    return out


# --------------------------------------------------------------------------------------------
# proposals -> segment map (shared by the CLI, the pseudo-labeller and the ROS nodes)
# --------------------------------------------------------------------------------------------
def compute_segment_map(
    frame: DriveFrame,
    proposal_config: "Optional[ProposalConfig]" = None,
    projection_config: Optional[ProjectionConfig] = None,
    proposals: "Optional[Proposals]" = None,
) -> Tuple[np.ndarray, np.ndarray, "Proposals"]:
    """LiDAR proposals of one frame projected to a dense image segment map.

    ``segment_scan(frame.points, proposal_config, rings=frame.rings)`` gives object segments
    (ids ``0 .. n_segments-1``) and ground; ``ground_cell_ids(points, labels,
    proposal_config.ground_cell_m)`` splits the ground into x/y cells, which get ids
    ``n_segments + cell``; unassigned points (-2) only occlude. Then :func:`segment_map`.

    Args:
        frame: a :class:`DriveFrame` (image, points (N, 4) LiDAR frame, camera, T_cam_lidar, rings).
        proposal_config: ``proposals.ProposalConfig`` (defaults when ``None``).
        projection_config: :class:`ProjectionConfig` (defaults when ``None``).
        proposals: already computed ``segment_scan`` result for ``frame.points`` (e.g. the same
            scan paired with several cameras); ``None`` = run ``segment_scan``.

    Returns:
        ``(segment_map (H, W) int32 -1 = unlabelled, is_ground_id (n,) bool with
        n = n_segments + n_ground_cells - True for ground-cell ids, proposals)``. Segment-map id
        ``k < proposals.n_segments`` is proposal segment ``k`` (same id as ``proposals.labels``).

    Raises:
        DriveSegmentError: image size differs from the camera model, proposals of another scan,
        bad inputs.
    """
    from drive_segment_ros.proposals import ProposalConfig, ground_cell_ids, segment_scan

    proposal_config = proposal_config or ProposalConfig()
    projection_config = projection_config or ProjectionConfig()
    img = np.asarray(frame.image)
    if img.shape[:2] != (frame.camera.height, frame.camera.width):
        raise DriveSegmentError(
            f"frame {frame.name}: image {img.shape[1]}x{img.shape[0]} differs from camera model "
            f"{frame.camera.width}x{frame.camera.height}"
        )
    points = np.asarray(frame.points)
    if proposals is None:
        proposals = segment_scan(points, proposal_config, rings=frame.rings)
    elif np.asarray(proposals.labels).shape != (points.shape[0],):
        raise DriveSegmentError(
            f"frame {frame.name}: proposals have {np.asarray(proposals.labels).shape[0]} labels for {points.shape[0]} points"
        )
    n_seg = int(proposals.n_segments)
    ids = np.asarray(ground_cell_ids(points, proposals.labels, proposal_config.ground_cell_m)).astype(np.int64)
    n_cells = int(ids.max()) + 1 - n_seg if ids.size and ids.max() >= n_seg else 0
    smap = segment_map(points, ids, frame.camera, frame.T_cam_lidar, projection_config)
    is_ground = np.zeros(n_seg + n_cells, dtype=bool)
    is_ground[n_seg:] = True
    LOG.debug(
        "%s: %d segments, %d ground cells, coverage %.3f",
        frame.name, n_seg, n_cells, float((smap >= 0).mean()),
    )
    return smap, is_ground, proposals
