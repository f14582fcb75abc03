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

Densification adapts to the sensor (:func:`estimate_lidar_spacing`, :func:`densify_kernel_px`):
the LiDAR's vertical (ring) and horizontal (azimuth) angular spacing is estimated from the scan
itself (from the ``ring`` field when present, else from the points' elevation / azimuth
neighbourhoods), and the per-segment closing kernel and the gap fill between segments span
``f * spacing * margin`` pixels - ~7 px rows for KITTI's HDL-64E at f = 721 px, ~45 px for
nuScenes' HDL-32E (1.33 deg) at f = 1266 px - always bounded by the depth buffer.

Nothing here imports ROS; everything is vectorized with numpy (``np.minimum.at`` z-buffers,
``np.maximum.accumulate`` gap scans) and OpenCV morphology; the only Python loop is the
optional per-*segment* closing / hull step.
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
    "LidarSpacing",
    "estimate_lidar_spacing",
    "lidar_spacing",
    "densify_kernel_px",
    "segment_map",
    "labels_to_points",
    "compute_segment_map",
]


# --------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------
def _pair(value: Any, kind: type, name: str) -> tuple:
    """Scalar or length-2 sequence -> 2-tuple of ``kind``; DriveSegmentError otherwise."""
    try:
        vals = tuple(kind(v) for v in np.atleast_1d(np.asarray(value, dtype=np.float64)).ravel())
    except (TypeError, ValueError) as exc:
        raise DriveSegmentError(f"projection config: {name} must be one or two numbers, got {value!r}") from exc
    if len(vals) == 1:
        vals = (vals[0], vals[0])
    if len(vals) != 2 or not all(np.isfinite(vals)):
        raise DriveSegmentError(f"projection config: {name} must be one or two finite numbers, got {value!r}")
    return vals


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
        closing_px: *minimum* per-segment morphological closing kernel ``[width, height]`` in pixels
            (rectangle); ``[0, 0]`` (or any entry <= 1) = no densification beyond the splats (no
            closing, no gap fill). Newly closed pixels are accepted only where unlabelled and where
            no nearer surface is in the splatted depth buffer (closing bounded by depth discontinuities).
        adaptive: enlarge the kernel to the LiDAR's angular spacing seen by this camera:
            ``[fx * azimuth_spacing, fy * elevation_spacing] * spacing_margin`` pixels (rounded to
            the nearest odd integer), spacing from :func:`estimate_lidar_spacing` (or ``lidar_spacing_deg``).
        spacing_margin: factor (>= 1) on the spacing in pixels; > 1 absorbs the camera-LiDAR parallax
            (near ground rings look ~1.4x farther apart from a camera mounted ahead of the LiDAR).
        closing_max_px: upper bound ``[width, height]`` of the adaptive kernel, pixels.
        lidar_spacing_deg: ``[azimuth, elevation]`` spacing in degrees to use instead of estimating
            it from the scan; ``None`` = estimate.
        fallback_spacing_deg: ``[azimuth, elevation]`` degrees used when the estimate fails (too
            few points, implausible values).
        gap_fill: after the closing, fill runs of empty pixels (no point, no splat) between two
            occupied pixels of the same column shorter than the kernel height (resp. same row,
            shorter than its width) with the label of the nearer end; runs touching an unlabelled
            surface end get -1 there, so it never labels across a nearer unlabelled surface and
            never grows a mask outwards (rows above a wall's top ring stay empty).
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
    adaptive: bool = True
    spacing_margin: float = 1.5
    closing_max_px: Tuple[int, int] = (31, 63)
    lidar_spacing_deg: Optional[Tuple[float, float]] = None
    fallback_spacing_deg: Tuple[float, float] = (0.2, 0.4)
    gap_fill: bool = True
    hull: bool = False
    min_pixels: int = 30

    def __post_init__(self) -> None:
        self.closing_px = _pair(self.closing_px, int, "closing_px")  # type: ignore[assignment]
        self.closing_max_px = _pair(self.closing_max_px, int, "closing_max_px")  # type: ignore[assignment]
        self.fallback_spacing_deg = _pair(self.fallback_spacing_deg, float, "fallback_spacing_deg")  # type: ignore[assignment]
        if self.lidar_spacing_deg is not None:
            self.lidar_spacing_deg = _pair(self.lidar_spacing_deg, float, "lidar_spacing_deg")  # type: ignore[assignment]
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
        if min(self.closing_max_px) < 1 or max(self.closing_max_px) > 255:
            raise DriveSegmentError(f"projection config: closing_max_px must be two integers in [1, 255], got {self.closing_max_px}")
        if not (1.0 <= float(self.spacing_margin) <= 4.0):
            raise DriveSegmentError(f"projection config: spacing_margin must be in [1, 4], got {self.spacing_margin}")
        for name in ("fallback_spacing_deg", "lidar_spacing_deg"):
            val = getattr(self, name)
            if val is not None and not all(0.0 < v <= 10.0 for v in val):
                raise DriveSegmentError(f"projection config: {name} must be two angles in (0, 10] deg, got {val}")
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
        """Load ``config/projection.yaml``-style YAML. Raises DriveSegmentError (missing / invalid file, bad keys)."""
        from drive_segment_ros.config_io import load_yaml_mapping

        return cls.from_dict(load_yaml_mapping(path, "projection config"))

    def to_dict(self) -> Dict[str, Any]:
        """Plain-dict form (for ``index.json`` and YAML)."""
        d = asdict(self)
        for key in ("closing_px", "closing_max_px", "fallback_spacing_deg", "lidar_spacing_deg"):
            if d[key] is not None:
                d[key] = list(d[key])
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



# --------------------------------------------------------------------------------------------
# sensor-adaptive densification
# --------------------------------------------------------------------------------------------
@dataclass
class LidarSpacing:
    """Angular sampling of a spinning LiDAR (result of :func:`estimate_lidar_spacing`).

    Attributes:
        azimuth_rad: horizontal angle between consecutive firings of one laser, radians.
        elevation_rad: typical vertical angle between adjacent laser rings, radians.
        source: ``"rings"`` (ring field), ``"points"`` (elevation / azimuth neighbourhoods),
            ``"config"`` (``lidar_spacing_deg``) or ``"fallback"`` (``fallback_spacing_deg``).
    """

    azimuth_rad: float
    elevation_rad: float
    source: str

    def degrees(self) -> Tuple[float, float]:
        """``(azimuth, elevation)`` in degrees."""
        return float(np.degrees(self.azimuth_rad)), float(np.degrees(self.elevation_rad))


# plausible spinning-LiDAR spacings (deg): Ouster OS2-128 0.18 vertical .. VLP-16 2.0 / 4 deg;
# azimuth 0.05 (Pandar128 at 5 Hz) .. 1.0 (generous bounds)
_EL_RANGE_DEG = (0.05, 5.0)
_AZ_RANGE_DEG = (0.005, 2.0)
_MIN_SAMPLES = 50
_MAX_NN_POINTS = 60000  # points used by the ring-less estimate (k-d tree); more are windowed in azimuth


def _group_median(keys: np.ndarray, values: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-key median of ``values`` (lower median), vectorized: ``(unique keys, medians, counts)``."""
    order = np.lexsort((values, keys))
    k, v = keys[order], values[order]
    start = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
    counts = np.diff(np.r_[start, k.size])
    return k[start], v[start + (counts - 1) // 2], counts


def _sorted_run_diffs(keys: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Differences of consecutive ``values`` sorted within each ``keys`` group (groups not mixed)."""
    order = np.lexsort((values, keys))
    k, v = keys[order], values[order]
    same = k[1:] == k[:-1]
    return np.diff(v)[same]


def estimate_lidar_spacing(
    points: np.ndarray,
    rings: Optional[np.ndarray] = None,
    fallback_deg: Tuple[float, float] = (0.2, 0.4),
    min_range_m: float = 1.0,
) -> LidarSpacing:
    """Estimate a spinning LiDAR's azimuth and ring (elevation) spacing from one scan.

    Angles are taken in the LiDAR frame (REP 103: z up): elevation ``atan2(z, hypot(x, y))``,
    azimuth ``atan2(y, x)``; points nearer than ``min_range_m`` horizontally (e.g. nuScenes'
    no-return points at the origin) and non-finite ones are ignored.

    * With ``rings``: elevation spacing = median difference between the sorted per-ring median
      elevations (adjacent rings); azimuth spacing = median difference of consecutive azimuths
      within a ring. nuScenes HDL-32E: 1.33 deg, 0.33 deg.
    * Without: azimuth spacing = median angular nearest-neighbour distance with elevation
      weighted x20 (the nearest point is the same laser's next firing); elevation spacing =
      median of the elevation steps between consecutive points of narrow azimuth columns (one
      azimuth step wide; steps below 0.3x their median - same-laser duplicates - are dropped
      and the median retaken). KITTI HDL-64E (0.33 / 0.5 deg blocks): ~0.37 deg, 0.18 deg.
      Scans over 60k points use 12 evenly spread azimuth windows holding ~60k points.

    Estimates outside plausible ranges (elevation 0.05..5 deg, azimuth 0.005..2 deg) or from fewer
    than 50 samples are replaced by ``fallback_deg`` (``source = "fallback"`` when both are).

    Args:
        points: (N, >=3) LiDAR frame, metres.
        rings: optional (N,) integer laser ring per point (any order of ring ids).
        fallback_deg: ``(azimuth, elevation)`` degrees.
        min_range_m: horizontal range below which points are ignored, metres.

    Returns:
        :class:`LidarSpacing` (radians).

    Raises:
        DriveSegmentError: bad shapes, ``rings`` of the wrong length.

    Source: Velodyne HDL-32E / HDL-64E manuals (laser elevation tables); the range-image rows of
    Bogoslavskyi & Stachniss (2017) used by Drive&Segment Sec. 3.1 assume the same ring structure.
    """
    xyz = _check_xyz(points).astype(np.float64, copy=False)
    r = np.hypot(xyz[:, 0], xyz[:, 1])
    ok = np.isfinite(r) & np.isfinite(xyz[:, 2]) & (r > float(min_range_m))
    if rings is not None:
        rings = np.asarray(rings).reshape(-1)
        if rings.shape[0] != xyz.shape[0]:
            raise DriveSegmentError(f"rings has {rings.shape[0]} entries for {xyz.shape[0]} points")
        ok &= np.isfinite(rings.astype(np.float64))
    el = np.arctan2(xyz[ok, 2], r[ok])
    az = np.arctan2(xyz[ok, 1], xyz[ok, 0])
    az_est = el_est = np.nan
    source = "points"
    if rings is not None and el.size >= _MIN_SAMPLES:
        ring = rings[ok].astype(np.int64)
        _, med, counts = _group_median(ring, el)
        med = np.sort(med[counts >= 10])
        if med.size >= 3:
            d = np.diff(med)
            d = d[d > np.radians(0.01)]
            if d.size >= 2:
                el_est = float(np.median(d))
        daz = _sorted_run_diffs(ring, az)
        daz = daz[daz > 1e-6]
        if daz.size >= _MIN_SAMPLES:
            az_est = float(np.median(daz))
        source = "rings"
    if (not np.isfinite(el_est) or not np.isfinite(az_est)) and el.size >= _MIN_SAMPLES:
        from scipy.spatial import cKDTree

        source = "points"
        if el.size > _MAX_NN_POINTS:  # keep 12 azimuth windows: local neighbourhoods stay complete
            sector = 2.0 * np.pi / 12.0
            win = np.mod(az + np.pi, sector) < sector * (_MAX_NN_POINTS / el.size)
            el, az = el[win], az[win]
        if not np.isfinite(az_est):
            ang = np.stack([az, 20.0 * el], 1)
            dist, _ = cKDTree(ang).query(ang, k=2)
            dn = dist[:, 1]
            dn = dn[np.isfinite(dn) & (dn > 1e-6)]
            if dn.size >= _MIN_SAMPLES:
                az_est = float(np.median(dn))
        if not np.isfinite(el_est) and np.isfinite(az_est) and az_est > 0:
            col = np.floor((az + np.pi) / az_est).astype(np.int64)
            d = _sorted_run_diffs(col, el)
            d = d[d > 1e-6]
            if d.size >= _MIN_SAMPLES:
                d = d[d > 0.3 * np.median(d)]
                el_est = float(np.median(d))
    fb_az, fb_el = (float(np.radians(v)) for v in fallback_deg)
    az_ok = np.isfinite(az_est) and _AZ_RANGE_DEG[0] <= np.degrees(az_est) <= _AZ_RANGE_DEG[1]
    el_ok = np.isfinite(el_est) and _EL_RANGE_DEG[0] <= np.degrees(el_est) <= _EL_RANGE_DEG[1]
    if not (az_ok or el_ok):
        source = "fallback"
    if not (az_ok and el_ok):
        LOG.debug("LiDAR spacing estimate az=%s el=%s rad implausible / missing, using fallback %s deg",
                  az_est, el_est, fallback_deg)
    return LidarSpacing(az_est if az_ok else fb_az, el_est if el_ok else fb_el, source)


def lidar_spacing(points: np.ndarray, rings: Optional[np.ndarray], config: ProjectionConfig) -> LidarSpacing:
    """Spacing used by :func:`segment_map`: ``config.lidar_spacing_deg`` when set, else
    :func:`estimate_lidar_spacing` with ``config.fallback_spacing_deg``."""
    if config.lidar_spacing_deg is not None:
        az, el = config.lidar_spacing_deg
        return LidarSpacing(float(np.radians(az)), float(np.radians(el)), "config")
    return estimate_lidar_spacing(points, rings, config.fallback_spacing_deg)


def _odd_round(x: float) -> int:
    """Nearest odd integer >= 1 (kernels centred on their pixel)."""
    return max(1, 2 * int(np.floor((float(x) - 1.0) / 2.0 + 0.5)) + 1)


def densify_kernel_px(spacing: Optional[LidarSpacing], camera: CameraModel, config: ProjectionConfig) -> Tuple[int, int]:
    """Closing / gap-fill extent ``(width, height)`` in pixels for one camera.

    ``width = max(closing_px[0], odd_round(fx * spacing.azimuth_rad * spacing_margin))`` and
    ``height = max(closing_px[1], odd_round(fy * spacing.elevation_rad * spacing_margin))``, each
    clipped to ``closing_max_px`` (never below ``closing_px``); ``spacing = None`` or
    ``config.adaptive = False`` gives ``closing_px``. Example: nuScenes CAM_FRONT (fy = 1266 px),
    1.334 deg, margin 1.5 -> 45 px; KITTI (fy = 721 px), ~0.37 deg -> 7 px (= the minimum).
    """
    kw, kh = config.closing_px
    if spacing is None or not config.adaptive:
        return int(kw), int(kh)
    fx, fy = float(camera.K[0, 0]), float(camera.K[1, 1])
    m = float(config.spacing_margin)
    aw = min(_odd_round(abs(fx) * spacing.azimuth_rad * m), config.closing_max_px[0])
    ah = min(_odd_round(abs(fy) * spacing.elevation_rad * m), config.closing_max_px[1])
    return max(int(kw), aw), max(int(kh), ah)


def _fill_gaps_rows(out: np.ndarray, occupied: np.ndarray, max_gap: int) -> None:
    """Vertical gap fill on C-contiguous ``out`` / ``occupied`` (both modified in place).

    A run of ``n < max_gap`` non-occupied pixels between two occupied pixels of a column takes,
    pixel by pixel, the label of the nearer end (ties: the upper one); an end that is an
    unlabelled surface (``out == -1``) gives -1. A run touching the top / bottom image border
    (the next ring lies outside the image) takes its one occupied end's label when its length
    up to the border is ``< max_gap``. Vectorized with running max / min
    of occupied row indices (int16 / int32), on the band of rows holding occupied pixels.
    """
    H, W = out.shape
    any_row = occupied.any(axis=1)
    if max_gap <= 1 or not any_row.any():
        return
    r0 = int(np.argmax(any_row))
    r1 = H - int(np.argmax(any_row[::-1]))
    r0, r1 = max(r0 - max_gap, 0), min(r1 + max_gap, H)
    occ = occupied[r0:r1]
    lab = out[r0:r1]
    h = r1 - r0
    dt = np.int16 if H < 2 ** 15 - 2 else np.int32
    rows = np.arange(r0, r1, dtype=dt)[:, None]
    above = np.where(occ, rows, dt(-1))  # nearest occupied row above (-1: none, i.e. the top border)
    np.maximum.accumulate(above, axis=0, out=above)
    below = np.where(occ, rows, dt(H))[::-1]  # nearest occupied row below (H: none)
    below = np.minimum.accumulate(below, axis=0)[::-1]
    has_a, has_b = above >= 0, below < H
    # run length between the two ends; a run open at the border is counted up to the border
    cand = (below - above - 1 < max_gap) & (has_a | has_b)
    cand &= ~occ
    if not cand.any():
        return
    take_a = has_a & (~has_b | (rows - above <= below - rows))
    src = np.where(take_a, above, below).astype(np.int32)
    src -= r0
    np.clip(src, 0, h - 1, out=src)
    src *= W
    src += np.arange(W, dtype=np.int32)
    np.copyto(lab, np.take(lab.ravel(), src), where=cand)
    occ |= cand


def _fill_gaps(out: np.ndarray, occupied: np.ndarray, max_gap_v: int, max_gap_h: int) -> None:
    """Gap fill between occupied pixels: vertical runs shorter than ``max_gap_v``, then horizontal
    runs shorter than ``max_gap_h`` (see :func:`_fill_gaps_rows`); ``out`` modified in place."""
    occupied = occupied.copy()
    _fill_gaps_rows(out, occupied, max_gap_v)
    if max_gap_h > 1:
        out_t = np.ascontiguousarray(out.T)
        _fill_gaps_rows(out_t, np.ascontiguousarray(occupied.T), max_gap_h)
        out[...] = out_t.T


def segment_map(
    points: np.ndarray,
    point_ids: np.ndarray,
    camera: CameraModel,
    T_cam_lidar: np.ndarray,
    config: Optional[ProjectionConfig] = None,
    rings: Optional[np.ndarray] = None,
    spacing: Optional[LidarSpacing] = None,
) -> np.ndarray:
    """Dense, occlusion-aware segment mask from labelled LiDAR points.

    Algorithm (Drive&Segment Sec. 3.1, step "projection"): (1) project the points (in front of
    the camera, inside the image, ``min_depth < depth <= max_depth``); (2) depth-tested disk
    splatting - every point, labelled or not, covers a disk whose pixel radius shrinks with
    depth, and each pixel takes the id of the nearest covering point, so nearer surfaces occlude
    farther ones and points with ``id < 0`` occlude without labelling; (3) optional per-segment
    morphological closing / convex hull, accepted only on unlabelled pixels with no nearer
    surface (``zbuf >= seg_min_depth - tolerance``), nearest segments first; the kernel adapts
    to the sensor (:func:`densify_kernel_px` from :func:`estimate_lidar_spacing`); (4) gap fill:
    short empty vertical runs between two occupied pixels (rows between two LiDAR rings,
    typically of two different segments, e.g. ground cells) take the nearer end's label, then
    likewise short horizontal runs - only pixels with no point / splat at all, so nothing is
    labelled over a nearer surface and nothing grows outwards; (5) segments with fewer than
    ``min_pixels`` pixels are dropped. Steps 3-4 run only when ``closing_px`` is on.

    Args:
        points: (N, >=3) LiDAR frame, metres.
        point_ids: (N,) int, segment id per point; ``< 0`` = no label (still occludes).
        camera: camera model (image size, K, D).
        T_cam_lidar: (4, 4) LiDAR -> camera optical frame.
        config: :class:`ProjectionConfig` (defaults when ``None``).
        rings: optional (N,) laser ring per point, for :func:`estimate_lidar_spacing`.
        spacing: precomputed :class:`LidarSpacing` of this scan (e.g. shared by several cameras);
            ``None`` = ``config.lidar_spacing_deg`` or estimated from ``points`` / ``rings``.

    Returns:
        (H, W) int32 segment ids, -1 = unlabelled.

    Raises:
        DriveSegmentError: shape mismatch between points and ids (or rings, when the spacing is
        estimated), bad transform.
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
    kernel = (0, 0)
    if do_close:
        if config.adaptive and spacing is None:
            spacing = lidar_spacing(points, rings, config)
        kernel = densify_kernel_px(spacing, camera, config)
        LOG.debug("segment_map %s: spacing %s -> closing kernel %s px", camera.frame_id,
                  None if spacing is None else spacing.degrees(), kernel)
    if do_close or config.hull:
        _fill_segments(out, zbuf, rows, cols, depth, ids, config, kernel)
    if do_close and config.gap_fill:
        _fill_gaps(out, (out >= 0) | np.isfinite(zbuf), kernel[1], kernel[0])

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
    kernel_px: Tuple[int, int],
) -> None:
    """Per-segment closing / convex hull bounded by depth discontinuities (in place on ``out``).

    ``kernel_px``: closing rectangle ``(width, height)``, no closing when either is <= 1.
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
    kw, kh = kernel_px
    # rectangular kernel: OpenCV runs it as separable row / column passes (several times faster than an ellipse)
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (max(kw, 1), max(kh, 1))) if min(kw, kh) > 1 else None
    # the ROI must hold the splats (up to splat_max_px beyond the points) plus the dilation, so the
    # closing's erosion never meets the ROI border (outside is 0: BORDER_CONSTANT below)
    splat_pad = int(np.ceil(config.splat_max_px)) + 1
    pad_r, pad_c = (kh // 2 + splat_pad, kw // 2 + splat_pad) if kernel is not None else (splat_pad, splat_pad)
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
            filled = cv2.morphologyEx(filled, cv2.MORPH_CLOSE, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
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
    ``n_segments + cell``; unassigned points (-2) only occlude. Then :func:`segment_map`
    (with ``frame.rings`` for the sensor-adaptive densification).

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
    smap = segment_map(points, ids, frame.camera, frame.T_cam_lidar, projection_config, rings=frame.rings)
    is_ground = np.zeros(n_seg + n_cells, dtype=bool)
    is_ground[n_seg:] = True
    LOG.debug(
        "%s: %d segments, %d ground cells, coverage %.3f",
        frame.name, n_seg, n_cells, float((smap >= 0).mean()),
    )
    return smap, is_ground, proposals
