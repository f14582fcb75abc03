"""LiDAR -> image projection, depth buffer and splatting, and 2-D -> 3-D back-projection.

Stage 3 of Drive&Segment (Vobecky et al., ECCV 2022, Sec. 3.1 "Object proposals from LiDAR";
IJCV 2025, Sec. 3.2): LiDAR points are projected into the camera image, only points in front of
the camera are kept and occlusions are resolved with a depth buffer (:func:`project_points`,
:func:`depth_buffer`, :func:`splat_points`). The reverse direction (:func:`labels_to_points`)
carries 2-D predictions to the LiDAR points, giving annotation-free point-cloud labels.
Densifying the projected segments into masks is :mod:`drive_segment_ros.densification`; the
dense segment map of one frame is :mod:`drive_segment_ros.segment_map`.

Conventions (``docs/ARCHITECTURE.md``, REP 103): ``T_cam_lidar`` maps LiDAR points into the
camera optical frame (z forward, x right, y down); pixel ``(u, v)`` = (column, row) with the
OpenCV convention that pixel centres sit at integer coordinates, so point ``(u, v)`` lies in
pixel ``(row, col) = (floor(v + 0.5), floor(u + 0.5))``. Depth = z in the optical frame, metres.

Nothing here imports ROS; everything is vectorized with numpy (``np.minimum.at`` z-buffers) and
OpenCV (undistortion, grey-level erosion for the splats).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar, Optional, Tuple

import cv2
import numpy as np

from drive_segment_ros.config import ConfigBase
from drive_segment_ros.geometry import validate_transform
from drive_segment_ros.types import CameraModel, DriveSegmentError

LOG = logging.getLogger(__name__)

__all__ = [
    "Projection",
    "ProjectionConfig",
    "check_points",
    "transform_points",
    "project_points",
    "pixel_indices",
    "depth_buffer",
    "visible_projection",
    "nearest_per_pixel",
    "splat_radius",
    "splat_points",
    "labels_to_points",
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
class ProjectionConfig(ConfigBase):
    """Parameters of :func:`~drive_segment_ros.segment_map.segment_map` / :func:`labels_to_points` (YAML: ``config/projection.yaml``).

    Attributes:
        min_depth: points with optical-axis depth <= this (metres) are dropped (behind / at the camera).
        max_depth: points farther than this (metres) are dropped.
        splat_size_m: metric radius of the disk each projected point covers; the pixel radius is
            ``clip(splat_size_m * f / depth, splat_min_px, splat_max_px)`` with ``f = (fx + fy) / 2``.
        splat_min_px, splat_max_px: bounds of that radius in pixels; the radius is then rounded to
            an integer ``r`` and the point covers a disk-like octagon of radius ``r`` (see
            ``splat_points``; ``r = 0``: its own pixel only).
        depth_tolerance_m, depth_tolerance_rel: a surface at depth ``z`` counts as *nearer* than a
            segment / point at depth ``d`` only when ``z < d - (depth_tolerance_m + depth_tolerance_rel * d)``
            (slanted surfaces such as the road change depth quickly between neighbouring pixels).
        closing_px: *minimum* per-segment morphological closing kernel ``[width, height]`` in pixels
            (rectangle); ``[0, 0]`` (or any entry <= 1) = no densification beyond the splats (no
            closing, no gap fill). Newly closed pixels are accepted only where unlabelled and where
            no nearer surface is in the splatted depth buffer (closing bounded by depth discontinuities).
        adaptive: enlarge the kernel to the LiDAR's angular spacing seen by this camera:
            ``[fx * azimuth_spacing, fy * elevation_spacing] * spacing_margin`` pixels (rounded to
            the nearest odd integer), spacing from :func:`~drive_segment_ros.densification.estimate_lidar_spacing` (or ``lidar_spacing_deg``).
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

    CONFIG_NAME: ClassVar[str] = "projection config"
    SECTION: ClassVar[Optional[str]] = "projection"

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


def check_points(xyz: np.ndarray) -> np.ndarray:
    """The ``x, y, z`` columns of an (N, >=3) point array (a view, dtype kept).

    Raises:
        DriveSegmentError: not a 2-D array with at least 3 columns.
    """
    xyz = np.asarray(xyz)
    if xyz.ndim != 2 or xyz.shape[1] < 3:
        raise DriveSegmentError(f"points must be an (N, >=3) array, got shape {xyz.shape}")
    return xyz[:, :3]


def transform_points(xyz: np.ndarray, T: np.ndarray, what: str = "transform") -> np.ndarray:
    """Apply a rigid 4x4 homogeneous transform to points.

    Args:
        xyz: (N, >=3) points (first 3 columns used), metres, in the transform's source frame.
        T: (4, 4) rigid transform, e.g. ``T_cam_lidar`` (checked by
            :func:`~drive_segment_ros.geometry.validate_transform`).
        what: name of the transform in error messages.

    Returns:
        (N, 3) float64 points in the target frame, metres.

    Raises:
        DriveSegmentError: bad point shape; a transform of the wrong shape, non-finite, not
        orthonormal or mirrored (det < 0).
    """
    xyz = check_points(xyz).astype(np.float64, copy=False)
    T = validate_transform(T, what)
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
        DriveSegmentError: bad shapes; ``T_cam_lidar`` not a finite rigid transform (reflections
        rejected, :func:`~drive_segment_ros.geometry.validate_transform`).

    Source: pinhole + Brown-Conrady model, OpenCV ``projectPoints`` / ROS ``image_geometry``.
    """
    if not isinstance(camera, CameraModel):
        raise DriveSegmentError(f"camera must be a CameraModel, got {type(camera).__name__}")
    pc = transform_points(xyz, T_cam_lidar, "T_cam_lidar")
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
    # Decide "inside" on the float32 values returned: a float64 u just below W - 0.5 can round
    # up to W - 0.5 in float32 and would then fall into column W in pixel_indices().
    uv = np.stack([u, v], axis=1).astype(np.float32)
    u32, v32 = uv[:, 0], uv[:, 1]
    with np.errstate(invalid="ignore"):
        inside = (u32 >= -0.5) & (u32 < W - 0.5) & (v32 >= -0.5) & (v32 < H - 0.5)
    valid = front & inside
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


def visible_projection(
    points: np.ndarray, camera: CameraModel, T_cam_lidar: np.ndarray, config: ProjectionConfig
) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Points inside the image and the depth range ``(min_depth, max_depth]`` of ``config``.

    Args:
        points: (N, >=3) LiDAR frame, metres; camera, T_cam_lidar: as in :func:`project_points`.

    Returns:
        ``(idx (M,) int64 indices into points, rows (M,) int64, cols (M,) int64, depth (M,) float32 metres)``.

    Raises:
        DriveSegmentError: as :func:`project_points`.
    """
    proj = project_points(points, camera, T_cam_lidar, min_depth=config.min_depth)
    keep = proj.valid & (proj.depth <= config.max_depth)
    idx = np.flatnonzero(keep)
    rows, cols = pixel_indices(proj.uv[idx])
    return idx, rows, cols, proj.depth[idx].astype(np.float32)


def nearest_per_pixel(rows: np.ndarray, cols: np.ndarray, depth: np.ndarray, width: int) -> np.ndarray:
    """Indices of the nearest point of every occupied pixel (vectorized lexsort, no loop).

    Args:
        rows, cols: (M,) int64 pixel indices inside an image of ``width`` columns.
        depth: (M,) float depths, metres.

    Returns:
        (K,) int64 indices into the inputs, one per occupied pixel, ordered by flat pixel index.
    """
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


def splat_points(
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
    points = check_points(points)
    out = np.full(points.shape[0], -1, dtype=np.int32)
    idx, rows, cols, depth = visible_projection(points, camera, T_cam_lidar, config)
    if idx.size == 0:
        return out
    if occlusion:
        sel = nearest_per_pixel(rows, cols, depth, camera.width)
        zbuf, _ = splat_points(rows[sel], cols[sel], depth[sel], camera, config)
        vis = depth <= zbuf[rows, cols] + config.tolerance(depth)
        idx, rows, cols = idx[vis], rows[vis], cols[vis]
    out[idx] = label_image[rows, cols].astype(np.int32)
    return out
