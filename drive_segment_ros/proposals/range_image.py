"""Range-image ground removal and segmentation (Bogoslavskyi & Stachniss, PFG 2017).

I. Bogoslavskyi, C. Stachniss, "Efficient online segmentation for sparse 3D laser scans",
PFG 85(1), 2017 (code: PRBonn/depth_clustering), as re-implemented by the Drive&Segment
authors (docs/METHOD.md, stage 2). Every step is vectorized with numpy; graph searches use
``scipy.sparse.csgraph`` on CSR matrices (no per-point Python loops).

1. **Range image.** Rows are the laser rings when a ``ring`` field is given (ordered bottom to
   top by their mean elevation, so both Velodyne and Ouster ring orders work), or the rings
   recovered from the point order of a scan stored ring by ring (:func:`rings_from_scan_order`;
   KITTI ``.bin`` scans have no ring field); otherwise rows are ``config.rows`` elevation bins
   over ``[fov_down_deg, fov_up_deg]``. Columns are azimuth bins over 360 deg (``config.cols``,
   or estimated from the scan). A pixel keeps its closest point; every point of the pixel later
   inherits the pixel's label. Neighbours are the next occupied pixel left / right within
   ``max_gap_px`` columns and up / down within ``max_gap_rows`` rows; columns wrap around (a
   360 deg scan is closed; a cropped scan simply has no pixels at the seam).
2. **Ground** (paper Sec. 3.1; depth_clustering ``DepthGroundRemover``). For each pixel, the
   inclination of the line to its lower neighbour, handled as its tangent ``|dz| / |d rho|``
   (``rho`` horizontal distance; clipped at 45 deg; no per-pixel arctan). The columns are
   smoothed over ``smooth_window`` pixels (moving average by default, which dilutes a curb's
   single steep pair so the sidewalk stays ground; or Savitzky-Golay as in depth_clustering);
   a pixel is a ground candidate when ``min(raw, smoothed) < tan(ground_angle_deg)`` (the
   minimum keeps the smoothing from leaking the steep face of an object onto the ground at
   its foot) and, with ``ground_face_foot``, when beyond ``ground_face_foot_m`` the pair with
   its upper neighbour does not rise more than ``ground_max_step_m`` at more than that angle
   (:func:`_face_foot`). Near the sensor (``ground_near_m``) a pixel is also a candidate when
   its height is within ``ground_near_tol_m`` of the near ground level (the median height of the ground
   found by the inclination test within twice that radius; the ground is then grown again):
   there consecutive rings meet the road a few centimetres apart, so range noise, not the
   surface, decides the pairwise inclination. In that second pass a column's lowest pixel
   starts the ground only when it lies at most 1 m above the near ground level (in
   camera-cropped scans the lowest visible pixel can be the roof of an adjacent car).
   Ground is grown from the lowest pixel of each column (as depth_clustering's BFS): upwards
   along candidate pixels, and sideways or downwards to candidates whose height differs by less
   than ``ground_max_step_m`` (so the ground never floods onto a flat roof seen next to far
   ground, but does reach the sidewalk just behind a curb from farther sidewalk pixels) - a
   directed breadth-first search from a virtual source.
3. **Segments** (paper Sec. 3.2). Two neighbouring non-ground pixels (with ``skip_ground_px``,
   neighbours are found among the non-ground pixels, so a stray ground pixel does not cut an
   object) with ranges
   ``d1 >= d2`` and angular step ``alpha`` between their beams join when
   ``beta = atan2(d2 sin(alpha), d1 - d2 cos(alpha)) > segment_angle_deg``; the segments are
   the connected components of that graph (``scipy.sparse.csgraph.connected_components``).
   ``alpha`` is the true angle between the two points' beams (so irregular ring spacing and
   bridged gaps are exact); the test is evaluated with dot products, without trigonometry.

Speed (bench/bench_proposals.py, see the module docstring there): the azimuth column comes from
a float32 polynomial ``arctan2`` with exact ``np.arctan2`` recomputation of the points near a bin
edge (:func:`_angle_bins`, bit-identical bins); float32 ``hypot`` is computed as glibc does it
(float64 sum, sqrt, round); gathers use ``np.take`` (``mode="clip"`` where -1 "no neighbour" entries are masked
afterwards); row-neighbour pairs ``(i, i + 1)`` are processed as contiguous slices.
"""
from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
from scipy import ndimage, sparse
from scipy.signal import savgol_coeffs
from scipy.sparse import csgraph

from drive_segment_ros.proposals.config import ProposalConfig
from drive_segment_ros.types import UNASSIGNED, DriveSegmentError

LOG = logging.getLogger(__name__)

#: A column's lowest pixel starts the ground (second, near-field pass) only when it lies at most
#: this high (m) above the near ground level: roads climb less within the 4-10 m where the lowest
#: beams land, while an adjacent car's roof (1.4-1.6 m) is excluded.
_SEED_ABOVE_LEVEL_M = 1.0
#: Largest ring index accepted (a ``ring`` field is a small laser index).
MAX_RING = 4096


@dataclass
class RangeImage:
    """A scan binned into a range image (only occupied pixels are stored, as "nodes").

    Attributes:
        rows, cols: image size; row 0 is the lowest beam, column 0 azimuth -pi (LiDAR frame,
            azimuth ``atan2(y, x)``).
        point_node: (N,) int64 node of every input point, -1 for invalid / out-of-range points.
        node_pixel: (M,) int64 flat pixel ``row * cols + col`` of every node (sorted).
        x, y, z: (M,) float32 coordinates of the node's closest point (LiDAR frame, metres).
        rng: (M,) float32 its range (m).
        down, up, left, right: (M,) int64 neighbouring node within ``max_gap_rows`` rows /
            ``max_gap_px`` columns, -1 none.
    """

    rows: int
    cols: int
    point_node: np.ndarray
    node_pixel: np.ndarray
    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    rng: np.ndarray
    down: np.ndarray
    up: np.ndarray
    left: np.ndarray
    right: np.ndarray


def _rows_from_rings(ring: np.ndarray, sin_elev: np.ndarray) -> Tuple[np.ndarray, int, float]:
    """Map ring ids to rows 0..n-1 ordered bottom-to-top by their mean elevation (sine).

    Returns (row per point, number of rows, points in the fullest ring (1.0 when no point)).
    """
    counts = np.bincount(ring, minlength=1)
    sums = np.bincount(ring, weights=sin_elev, minlength=counts.size)
    present = np.flatnonzero(counts)
    order = present[np.argsort(sums[present] / counts[present], kind="stable")]
    row_of_ring = np.full(counts.size, -1, dtype=np.int64)
    row_of_ring[order] = np.arange(order.size)
    per_row = float(counts.max()) if ring.size else 1.0
    return np.take(row_of_ring, ring), int(order.size), per_row


#: Resolution of the sin(elevation) -> row lookup table (0.006 deg steps for the HDL-64E FOV).
_ROW_LUT_SIZE = 4096


def _elevation_rows(sin_elev: np.ndarray, down_rad: float, up_rad: float, n_rows: int) -> np.ndarray:
    """Row = elevation bin over [down, up] (clipped), via a sin(elevation) lookup table.

    Equivalent to ``floor((arcsin(s) - down) / (up - down) * n_rows)`` up to the table step
    (a point within ~0.006 deg of a bin edge may land in the neighbouring row), without the
    per-point ``arcsin``.
    """
    s_lo, s_hi = math.sin(down_rad), math.sin(up_rad)
    lut = _row_lut(down_rad, up_rad, n_rows)
    q = (sin_elev - np.float32(s_lo)) * np.float32(_ROW_LUT_SIZE / (s_hi - s_lo))
    np.clip(q, 0, _ROW_LUT_SIZE - 1, out=q)
    return np.take(lut, q.astype(np.int64), mode="clip")


@functools.lru_cache(maxsize=16)
def _row_lut(down_rad: float, up_rad: float, n_rows: int) -> np.ndarray:
    """(``_ROW_LUT_SIZE``,) int64 row of each sin(elevation) table cell (cached per field of view)."""
    s_lo, s_hi = math.sin(down_rad), math.sin(up_rad)
    centres = s_lo + (np.arange(_ROW_LUT_SIZE) + 0.5) * ((s_hi - s_lo) / _ROW_LUT_SIZE)
    lut = np.clip(np.floor((np.arcsin(centres) - down_rad) * (n_rows / (up_rad - down_rad))), 0, n_rows - 1)
    lut = lut.astype(np.int64)
    lut.flags.writeable = False
    return lut


#: float32 coefficients of atan(t) ~ t * P(t^2) on [0, 1] (least squares, max error 8.4e-7 rad).
_ATAN_COEFFS = (0.006858523003757, -0.03401683643460274, 0.08053451776504517, -0.13316582143306732,
                0.19841784238815308, -0.33322852849960327, 0.9999985098838806)
#: Bound used for |approximate - np.arctan2| (rad), 12x the measured polynomial error.
_ATAN_ERR = 1e-5


def _approx_azimuth(ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """float32 ``arctan2(ys, xs)`` within ``_ATAN_ERR`` rad (polynomial; NaN for x = y = 0).

    About 4x cheaper than ``np.arctan2`` (scalar libm); only used through :func:`_angle_bins`,
    which recomputes the exact value wherever the approximation could change a bin.
    """
    ax, ay = np.abs(xs), np.abs(ys)
    swap = ay > ax
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.minimum(ax, ay)
        t /= np.maximum(ax, ay)
    s = t * t
    p = np.full_like(t, _ATAN_COEFFS[0])
    for c in _ATAN_COEFFS[1:]:
        p *= s
        p += np.float32(c)
    p *= t
    np.subtract(np.float32(math.pi / 2), p, out=p, where=swap)
    np.subtract(np.float32(math.pi), p, out=p, where=xs < 0)
    return np.copysign(p, ys, out=p)


def _angle_bins(az: np.ndarray, ys: np.ndarray, xs: np.ndarray, scale: float) -> np.ndarray:
    """``((arctan2(ys, xs) + pi) * scale).astype(int64)`` in float32, bit-exact, from approximate ``az``.

    ``az`` comes from :func:`_approx_azimuth`; bins whose float value lies within the
    approximation error of an integer (and NaN ones) are recomputed with ``np.arctan2``, so the
    result equals the all-``arctan2`` computation exactly.
    """
    f = (az + np.float32(math.pi)) * np.float32(scale)
    with np.errstate(invalid="ignore"):
        out = f.astype(np.int64)
    top = float(np.float32(2 * math.pi) * np.float32(scale))
    tol = scale * (_ATAN_ERR + 1e-6) + 4.0 * float(np.spacing(np.float32(max(top, 1.0))))
    dist = np.abs(f - np.rint(f))
    redo = np.flatnonzero(~(dist >= tol))  # NaN -> redo
    if redo.size:
        exact = np.arctan2(np.take(ys, redo), np.take(xs, redo))
        out[redo] = ((exact + np.float32(math.pi)) * np.float32(scale)).astype(np.int64)
    return out


#: :func:`rings_from_scan_order` accepts the order as ring by ring when at least this share of
#: the steps between consecutive points sweep the same way by less than :data:`_ORDER_MAX_STEP`
#: (a ring-major scan: KITTI / SemanticKITTI ``.bin``, organized clouds stored row by row);
#: firing-order (column-major) or shuffled clouds step back and forth and are refused.
_ORDER_MIN_SHARE = 0.9
#: Largest azimuth step (rad) between consecutive points of one ring (about 6 deg).
_ORDER_MAX_STEP = 0.1
#: Smallest mean share of a full turn that each recovered ring must sweep in small steps.
_ORDER_MIN_TURN = 0.5
#: Fewest rings (full turns of the unwrapped azimuth) accepted from the order of a scan.
_ORDER_MIN_RINGS = 8


def rings_from_scan_order(az: np.ndarray) -> Optional[np.ndarray]:
    """Laser ring of every point recovered from the order of a scan stored ring by ring.

    A spinning LiDAR whose points are written one laser after the other, each laser over one
    full turn from the same start azimuth (KITTI and SemanticKITTI ``velodyne/*.bin``,
    HDL-64E), sweeps the azimuth one way within a laser and starts the next laser where the
    first began. So a new ring starts at every step that passes the start azimuth (taken half a
    mean step before the first point, so jitter at the start stays in its ring), measured
    forward modulo a turn: missing returns (gaps of any size) and points jittering across the
    +-pi seam or a little backwards do not start one. Elevation bins cannot separate the HDL-64E's
    rings: its lasers are not at the origin, so one laser's elevation seen from the origin moves
    by ~0.5 deg between 15 m and 40 m, more than the ~0.33 deg between neighbouring lasers of its
    upper block (measured on the KITTI scans: 5-95 % elevation spread per recovered ring 0.24
    deg at 20-40 m; uniform bins merge or skip rings).

    Args:
        az: (N,) azimuth (rad) of the points, in the order of the scan.

    Returns:
        (N,) int64 ring index (0-based, in scan order), or None when the order is not ring by
        ring: fewer than :data:`_ORDER_MIN_SHARE` of the steps sweep one way by less than
        :data:`_ORDER_MAX_STEP` (firing-order or shuffled clouds), fewer than
        :data:`_ORDER_MIN_RINGS` or more than ``MAX_RING + 1`` rings, or rings that sweep on
        average less than :data:`_ORDER_MIN_TURN` of a turn (a scan cropped to the camera's
        sector, whose rings are cut at the sector's edges).
    """
    n = az.shape[0]
    if n < 2 * _ORDER_MIN_RINGS:
        return None
    two_pi = np.float32(2 * math.pi)
    a = az.astype(np.float32, copy=False)
    d = a[1:] - a[:-1]
    d[d < 0] += two_pi  # forward step in [0, 2 pi) (azimuths lie in [-pi, pi])
    fwd = int(np.count_nonzero(d < _ORDER_MAX_STEP)) - int(np.count_nonzero(d == 0))
    back = int(np.count_nonzero(d > two_pi - np.float32(_ORDER_MAX_STEP)))
    if max(fwd, back) < _ORDER_MIN_SHARE * (n - 1):
        return None
    if back > fwd:  # sweeping clockwise: mirror the azimuth
        a = -a
        d = two_pi - d
        d[d >= two_pi] -= two_pi
    d[d > two_pi - np.float32(_ORDER_MAX_STEP)] = 0  # a small step back (jitter) crosses nothing
    swept = float(np.sum(d, where=d < _ORDER_MAX_STEP, dtype=np.float64))  # in small steps
    n_steps = int(np.count_nonzero((d > 0) & (d < _ORDER_MAX_STEP)))
    step = swept / n_steps if n_steps else 0.0
    # position of each point after the start azimuth (half a mean step before the first point)
    pos = a[:-1] - np.float32(a[0] - 0.5 * step)
    pos[pos < 0] += two_pi
    pos += d
    ring = np.empty(n, dtype=np.int64)
    ring[0] = 0
    np.cumsum(pos >= two_pi, out=ring[1:])  # the step passes the start azimuth: next laser
    n_rings = int(ring[-1]) + 1
    if not _ORDER_MIN_RINGS <= n_rings <= MAX_RING + 1:
        return None
    # each ring must sweep most of a turn in small steps: a scan cropped to a sector (rings cut
    # at the sector's edges, not at one start azimuth) is left to elevation bins
    if swept < _ORDER_MIN_TURN * 2 * math.pi * n_rings:
        return None
    return ring


def _estimate_cols(per_row: float, az: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> int:
    """Columns per 360 deg ~ points per row / covered fraction of the azimuth circle (1 deg bins).

    ``az`` approximate azimuths (:func:`_approx_azimuth`) of the points ``(xs, ys)``.
    """
    step = max(1, az.size // 20000)  # 20k azimuths are plenty for 1 deg bins
    bins = _angle_bins(az[::step], ys[::step], xs[::step], 360 / (2 * math.pi))
    hist = np.bincount(np.minimum(bins, 359), minlength=360)
    coverage = max(np.count_nonzero(hist) / 360.0, 1.0 / 360.0)
    return int(np.clip(round(per_row / coverage), 16, 16384))


def _neighbours(node_pixel: np.ndarray, node_of_pix: np.ndarray, rows: int, cols: int, max_gap: int,
                row_gap: int):
    """Nearest occupied pixel left / right within ``max_gap`` pixels and down / up within
    ``row_gap`` rows, as node ids (-1 none).

    ``node_of_pix`` holds the node id of every pixel (-1 empty) followed by ``row_gap`` rows of -1.

    Nodes are sorted row-major, so the right neighbour is the next node when it lies in the same
    row within the gap (plus the wrap-around pair of each row); the up neighbour is found by
    looking ``k = 1..max_gap`` rows up in the flat occupancy index.
    """
    m = node_pixel.size
    row = node_pixel // cols
    col = node_pixel - row * cols
    right = np.full(m, -1, dtype=np.int64)
    left = np.full(m, -1, dtype=np.int64)
    if m > 1:
        same = row[1:] == row[:-1]
        nxt = np.flatnonzero(same & (col[1:] - col[:-1] <= max_gap))
        right[nxt] = nxt + 1
        left[nxt + 1] = nxt  # right is one-to-one: left is its inverse
        # wrap-around: last node of each row -> first node of that row
        first = np.flatnonzero(np.r_[True, ~same])
        last = np.r_[first[1:] - 1, m - 1]
        wrap = (first != last) & (col[first] + cols - col[last] <= max_gap)
        right[last[wrap]] = first[wrap]
        left[first[wrap]] = last[wrap]
    # node_of_pix is padded with max_gap empty rows on top: no bounds checks needed
    if row_gap:
        up = np.take(node_of_pix, node_pixel + cols, mode="clip").astype(np.int64)
    else:
        up = np.full(m, -1, dtype=np.int64)
    for k in range(2, row_gap + 1):  # nearest first; fill the still-missing ones
        miss = np.flatnonzero(up < 0)
        up[miss] = np.take(node_of_pix, np.take(node_pixel, miss) + k * cols, mode="clip")
    down = np.full(m, -1, dtype=np.int64)
    has = np.flatnonzero(up >= 0)
    down[np.take(up, has)] = has
    return down, up, left, right


def build_range_image(points: np.ndarray, config: ProposalConfig, rings: Optional[np.ndarray] = None) -> RangeImage:
    """Bin a scan into a range image (closest point per pixel).

    Args:
        points: (N, >=3) float array, x, y, z in the LiDAR frame (z up), metres.
        config: uses ``min_range_m``, ``max_range_m``, ``rings_from_order``, ``rows``, ``cols``,
            ``fov_up_deg``, ``fov_down_deg``, ``max_gap_px``, ``max_gap_rows``.
        rings: optional (N,) integer laser ring per point; rows follow the rings (sorted by mean
            elevation). Without it, rings come from :func:`rings_from_scan_order` when
            ``config.rings_from_order`` and the scan is stored ring by ring, else rows are
            elevation bins.

    Returns:
        :class:`RangeImage`; non-finite points and points outside the range limits get node -1.

    Raises:
        DriveSegmentError: ``rings`` of the wrong length, non-integer or out of ``[0, 4096]``.
    """
    xyz_all = np.asarray(points)[:, :3]
    n = xyz_all.shape[0]
    cols_all = None
    with np.errstate(invalid="ignore", over="ignore"):
        if xyz_all.dtype == np.float32:  # same float32 ops as einsum ((x*x + y*y) + z*z), contiguous
            cols_all = [np.ascontiguousarray(xyz_all[:, i]) for i in range(3)]
            rng_all = cols_all[0] * cols_all[0]
            rng_all += cols_all[1] * cols_all[1]
            rng_all += cols_all[2] * cols_all[2]
            np.sqrt(rng_all, out=rng_all)
        else:
            rng_all = np.sqrt(np.einsum("ij,ij->i", xyz_all, xyz_all))
        valid = (rng_all >= config.min_range_m) & (rng_all <= config.max_range_m) & (rng_all > 0)  # NaN -> False
    idx = np.flatnonzero(valid)
    rv = None
    if rings is not None:
        rings = np.asarray(rings).reshape(-1)
        if rings.shape[0] != n:
            raise DriveSegmentError(f"proposals: rings has {rings.shape[0]} values for {n} points")
        if rings.dtype.kind not in "fiu":
            raise DriveSegmentError(f"proposals: rings must be integers, got dtype {rings.dtype}")
        rv = np.take(rings, idx)  # rings of the valid points
        if rings.dtype.kind == "f" and (not np.all(np.isfinite(rv)) or np.any(rv != np.round(rv))):
            raise DriveSegmentError("proposals: rings must be integer laser indices")
        rv = rv.astype(np.int64)
        if rv.size and (rv.min() < 0 or rv.max() > MAX_RING):
            raise DriveSegmentError(f"proposals: ring indices must be in [0, {MAX_RING}]")
    if idx.size == n:  # nothing to drop: skip the copy
        if cols_all is not None:
            xs, ys, zs = cols_all
        else:
            xs, ys, zs = (np.ascontiguousarray(xyz_all[:, i], dtype=np.float32) for i in range(3))
        rng = rng_all.astype(np.float32, copy=False)
    else:
        if cols_all is not None:
            xs, ys, zs = (np.take(c, idx) for c in cols_all)
        else:
            xs, ys, zs = (xyz_all[idx, i].astype(np.float32, copy=False) for i in range(3))
        rng = np.take(rng_all, idx).astype(np.float32, copy=False)
    sin_elev = zs / rng
    az = _approx_azimuth(ys, xs)
    if rings is None and config.rings_from_order:
        rv = rings_from_scan_order(az)
    if rv is not None:
        row, n_rows, per_row = _rows_from_rings(rv, sin_elev)
        n_rows = max(n_rows, 1)
    else:
        n_rows = config.rows
        down_rad, up_rad = math.radians(config.fov_down_deg), math.radians(config.fov_up_deg)
        row = _elevation_rows(sin_elev, down_rad, up_rad, n_rows)
        counts = np.bincount(row, minlength=n_rows)
        per_row = float(np.median(counts[counts > 0])) if idx.size else 1.0
    cols = config.cols or _estimate_cols(per_row, az, ys, xs)
    col = _angle_bins(az, ys, xs, cols / (2 * math.pi))
    col[col >= cols] -= cols
    pix = row * cols + col
    n_pix = n_rows * cols
    gap_rows = min(config.max_gap_rows, n_rows - 1)
    depth = np.full(n_pix, np.inf, dtype=np.float32)
    np.minimum.at(depth, pix, rng)
    node_pixel = np.flatnonzero(depth < np.inf)
    # node id per pixel (-1 empty), padded with gap_rows empty rows on top for the "up" lookups
    node_of_pix = np.full(n_pix + gap_rows * cols, -1, dtype=np.int32)
    node_of_pix[node_pixel] = np.arange(node_pixel.size, dtype=np.int32)
    valid_node = np.take(node_of_pix, pix, mode="clip")
    if idx.size == n:
        point_node = valid_node.astype(np.int64)
    else:
        point_node = np.full(n, -1, dtype=np.int64)
        point_node[idx] = valid_node
    is_rep = np.flatnonzero(rng == np.take(depth, pix, mode="clip"))
    rep_nodes = np.empty(node_pixel.size, dtype=np.int64)
    rep_nodes[np.take(valid_node, is_rep)] = is_rep  # ties: the last point wins
    down, up, left, right = _neighbours(node_pixel, node_of_pix, n_rows, cols, config.max_gap_px, gap_rows)
    xr, yr, zr, rr = (np.take(a, rep_nodes, mode="clip") for a in (xs, ys, zs, rng))
    return RangeImage(n_rows, cols, point_node, node_pixel, xr, yr, zr, rr, down, up, left, right)


def _fill_columns(img: np.ndarray) -> np.ndarray:
    """Fill NaN pixels of each column with the nearest valid pixel below (else above)."""
    rows, cols = img.shape
    ok = ~np.isnan(img)
    r = np.arange(rows)[:, None]
    c = np.arange(cols)[None, :]
    below = np.maximum.accumulate(np.where(ok, r, -1), axis=0)
    above = np.minimum.accumulate(np.where(ok, r, rows)[::-1], axis=0)[::-1]
    src = np.where(below >= 0, below, np.minimum(above, rows - 1))
    return img[src, c]


def _smooth_columns(raw: np.ndarray, image: RangeImage, config: ProposalConfig) -> np.ndarray:
    """Column-wise smoothing of per-node angles (NaN = no value) over ``smooth_window`` rows.

    ``mean``: the mean of the valid values of the node and of its ``smooth_window // 2`` nearest
    occupied neighbours up and down the column (the column chain of :class:`RangeImage`,
    empty pixels skipped within ``max_gap_rows``). ``savgol``: Savitzky-Golay (quadratic)
    on the column with empty pixels filled from the nearest valid pixel below (else above).
    """
    win = min(config.smooth_window, image.rows if image.rows % 2 else image.rows - 1)
    if win < 3:
        return raw
    rows, cols = image.rows, image.cols
    h = win // 2
    if config.smoothing == "savgol":
        img = np.full(rows * cols, np.nan, dtype=np.float32)
        img[image.node_pixel] = raw
        if np.isnan(img).all():
            return raw
        img = _fill_columns(img.reshape(rows, cols))
        img = ndimage.correlate1d(img, savgol_coeffs(win, polyorder=2).astype(np.float32), axis=0, mode="nearest")
        return img.reshape(-1)[image.node_pixel]
    # moving average over the column chain: the node, its h nearest neighbours up and h down.
    # NaN only occurs on isolated nodes (no up, no down), which are in nobody's chain; count
    # them as 0 with weight 0 for themselves.
    m = raw.shape[0]
    val = np.empty(m + 1, dtype=np.float32)  # index m: sentinel "no neighbour" (value 0)
    val[:m] = raw
    val[m] = 0.0
    nan = np.isnan(val)
    val[nan] = 0.0
    total = val[:m].copy()
    count = (~nan[:m]).astype(np.float32)
    nxt = np.empty(m + 1, dtype=np.int64)
    nxt[m] = m
    for chain in (image.up, image.down):
        # "no neighbour" -1 -> sentinel m (as uint64, -1 is the largest value)
        np.minimum(chain.view(np.uint64), np.uint64(m), out=nxt[:m].view(np.uint64))
        cur = nxt[:m]
        for i in range(h):
            total += np.take(val, cur, mode="clip")  # indices are all in [0, m]
            count += cur != m
            if i + 1 < h:
                cur = np.take(nxt, cur, mode="clip")
    with np.errstate(invalid="ignore", divide="ignore"):
        return total / count


def ground_mask(image: RangeImage, config: ProposalConfig) -> np.ndarray:
    """Ground nodes of a range image (paper Sec. 3.1, grown as in depth_clustering).

    Args:
        image: from :func:`build_range_image`.
        config: uses ``ground_angle_deg``, ``smooth_window``, ``smoothing``, ``ground_max_step_m``,
            ``ground_near_m``, ``ground_near_tol_m``, ``ground_face_foot``, ``ground_face_foot_m``.

    Returns:
        (M,) bool, True for ground nodes.
    """
    m = image.rng.shape[0]
    if m == 0:
        return np.zeros(0, dtype=bool)
    z = image.z
    # == np.hypot in float32 (glibc hypotf: sqrt of the double sum, rounded), 4x cheaper
    x64 = image.x.astype(np.float64)
    y64 = image.y.astype(np.float64)
    x64 *= x64
    y64 *= y64
    x64 += y64
    rho = np.sqrt(x64).astype(np.float32)
    has_down = np.flatnonzero(image.down >= 0)
    dn = np.take(image.down, has_down)
    # inclination of the pair (pixel, lower neighbour) as its tangent |dz| / |d rho|, clipped at
    # 1 (45 deg): monotonic in the angle, no arctan per pixel; a steep face still outweighs
    # flat ground in the smoothing window as it does with angles
    raw = np.full(m, np.nan, dtype=np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        tan = np.abs(np.take(z, has_down) - np.take(z, dn)) / np.abs(np.take(rho, has_down) - np.take(rho, dn))
    raw[has_down] = np.fmin(tan, np.float32(1.0))  # 0/0 (identical points) stays NaN
    # the lowest pixel of a column takes the inclination of the pair above it (as depth_clustering)
    lowest = np.flatnonzero((image.down < 0) & (image.up >= 0))
    raw[lowest] = raw[image.up[lowest]]
    smooth = _smooth_columns(raw, image, config)
    eff = np.fmin(raw, smooth)  # raw NaN (lowest pixel of a column) -> smoothed value
    cand = eff < math.tan(math.radians(config.ground_angle_deg))  # NaN -> False
    if config.ground_face_foot:
        cand &= ~_face_foot(image, rho, config.ground_max_step_m, math.tan(math.radians(config.ground_angle_deg)),
                            config.ground_face_foot_m)
    # seeds: the lowest occupied pixel of each column, below the sensor, when a candidate
    pix_col = image.node_pixel % image.cols
    col_first = np.full(image.cols, m, dtype=np.int64)
    np.minimum.at(col_first, pix_col, np.arange(m))  # nodes are row-major: lowest index = lowest row
    lowest_nodes = col_first[col_first < m]
    below = lowest_nodes[z[lowest_nodes] < 0]
    ground = _grow_ground(image, rho, cand, below[cand[below]], config.ground_max_step_m)
    if config.ground_near_m > 0:
        # near-field height prior (ProposalConfig.ground_near_m): the near ground level is the
        # median height of the ground found so far within 2 x ground_near_m; near pixels within
        # ground_near_tol_m of it become candidates, and a column's lowest pixel may start the
        # ground only up to _SEED_ABOVE_LEVEL_M above it; then the ground is grown again
        ref = np.flatnonzero(ground & (rho < np.float32(2.0 * config.ground_near_m)))
        if ref.size >= 10:
            level = np.float32(np.median(np.take(z, ref)))
            near = rho < np.float32(config.ground_near_m)
            near &= np.abs(z - level) <= np.float32(config.ground_near_tol_m)
            cand |= near
            seeds = below[cand[below] & (z[below] <= level + np.float32(_SEED_ABOVE_LEVEL_M))]
            ground = _grow_ground(image, rho, cand, seeds, config.ground_max_step_m)
    return ground


def _face_foot(image: RangeImage, rho: np.ndarray, step: float, tan_ground: float, min_rho: float) -> np.ndarray:
    """(M,) bool nodes beyond ``min_rho`` (m) that are the foot of a face: the pair with the
    upper neighbour rises more than ``step`` (m) at an inclination above ``atan(tan_ground)``.

    See ``ProposalConfig.ground_face_foot``: the next beam up meets anything standing on the
    ground in front of the beam's own ground point at most ``rho * d theta`` above the ground
    (a few cm near the sensor; nearer than ``min_rho``, ground seen under an overhang is the
    exception), so a taller, steep rise right above a pixel means the pixel itself lies on the
    face -- typically an object's lowest visible row just above a crest in the road, which the
    pairwise inclination to the crest (a long, flat-looking jump) would otherwise call ground.
    """
    has_up = np.flatnonzero(image.up >= 0)
    up = np.take(image.up, has_up)
    rise = np.take(image.z, up) - np.take(image.z, has_up)
    recede = np.abs(np.take(rho, up) - np.take(rho, has_up))
    foot = np.zeros(rho.shape[0], dtype=bool)
    foot[has_up] = (rise > np.float32(step)) & (rise > recede * np.float32(tan_ground))
    foot &= rho > np.float32(min_rho)
    return foot


def _grow_ground(image: RangeImage, rho: np.ndarray, cand: np.ndarray, seeds: np.ndarray, step: float) -> np.ndarray:
    """Ground grown from ``seeds`` over candidate nodes (directed BFS; see :func:`ground_mask`).

    Args:
        image: the range image; rho: (M,) float32 horizontal distance of each node (m);
        cand: (M,) bool ground candidates; seeds: node ids that start the ground;
        step: ``ground_max_step_m``.

    Returns:
        (M,) bool ground nodes.
    """
    m = cand.shape[0]
    z = image.z
    # directed graph as CSR with 4 slots per node (up, right, left, down); unused slots are
    # self-loops. Vertical steps must recede from the sensor going up (ground seen by
    # consecutive beams), which stops jumps from far ground onto a near object's top.
    nodes = np.arange(m)
    slots = np.empty((m, 4), dtype=np.int32)
    # (index -1 reads node 0 (np.take mode="clip"): garbage, always masked by nb >= 0)
    nb = image.up
    slots[:, 0] = np.where((nb >= 0) & np.take(cand, nb, mode="clip") & (np.take(rho, nb, mode="clip") > rho), nb, nodes)
    nb = image.down
    dz = np.take(z, nb, mode="clip")
    dz -= z
    ok = np.abs(dz, out=dz) <= step
    ok &= nb >= 0
    ok &= np.take(cand, nb, mode="clip")
    ok &= np.take(rho, nb, mode="clip") < rho
    slots[:, 3] = np.where(ok, nb, nodes)
    # right / left: nodes are row-major, so the pairs are (i, i + 1) (contiguous slices; |dz| is
    # symmetric) except at the seam of each row
    right, left = image.right, image.left
    slots[:, 1] = nodes
    slots[:, 2] = nodes
    if m > 1:
        flat = (np.abs(z[1:] - z[:-1]) <= step) & (right[:-1] == nodes[1:])
        np.copyto(slots[:-1, 1], nodes[1:], where=flat & cand[1:])
        np.copyto(slots[1:, 2], nodes[:-1], where=flat & cand[:-1])
    for j, nb, step_j in ((1, right, 1), (2, left, -1)):
        seam = np.flatnonzero((nb >= 0) & (nb - nodes != step_j))
        tgt = nb[seam]
        ok = cand[tgt] & (np.abs(z[tgt] - z[seam]) <= step)
        slots[seam[ok], j] = tgt[ok]
    indices = np.concatenate([slots.reshape(-1), seeds.astype(np.int32)])
    indptr = np.concatenate([np.arange(0, 4 * m + 1, 4, dtype=np.int32), [4 * m + seeds.size]]).astype(np.int32)
    graph = sparse.csr_matrix((np.ones(indices.size, dtype=np.float64), indices, indptr), shape=(m + 1, m + 1))
    reached = csgraph.breadth_first_order(graph, m, directed=True, return_predecessors=False)
    ground = np.zeros(m + 1, dtype=bool)
    ground[reached] = True
    return ground[:m]


def _beta_joins(xa, ya, za, ra, xb, yb, zb, rb, cos_t) -> np.ndarray:
    """Angle criterion ``beta > theta`` of the pairs (a, b) (float32 arrays; see :func:`segment_nodes`)."""
    dx, dy, dz = xb - xa, yb - ya, zb - za
    ra_far = ra >= rb
    pa_d = xa * dx + ya * dy + za * dz
    dd = dx * dx + dy * dy + dz * dz
    # far = a: lhs = -(P_a . (P_b - P_a)) = -pa_d ; far = b: lhs = -(P_b . (P_a - P_b)) = pa_d + dd
    with np.errstate(invalid="ignore"):
        lhs = np.where(ra_far, -pa_d, pa_d + dd)
        rhs = cos_t * np.maximum(ra, rb) * np.sqrt(dd)
        return lhs < rhs


def segment_nodes(image: RangeImage, ground: np.ndarray, config: ProposalConfig) -> np.ndarray:
    """Connected segments of the non-ground nodes (paper Sec. 3.2, angle criterion beta).

    ``beta`` is the angle at the farther point P1 between its beam (towards the sensor) and the
    line to the nearer point P2; ``beta > theta`` is tested as
    ``-P1 . (P2 - P1) < cos(theta) * |P1| * |P2 - P1|``, which equals the paper's
    ``atan2(d2 sin(alpha), d1 - d2 cos(alpha)) > theta`` and stays exact in float32 for the tiny
    angular steps of a range image.

    Args:
        image: from :func:`build_range_image`.
        ground: (M,) bool from :func:`ground_mask`.
        config: uses ``segment_angle_deg``, ``skip_ground_px``, ``max_gap_px``, ``max_gap_rows``.

    Returns:
        (M,) int64 component id per node (arbitrary ids >= 0), -1 for ground nodes.
    """
    m = image.rng.shape[0]
    if m == 0:
        return np.zeros(0, dtype=np.int64)
    keep = ~ground
    cos_t = np.float32(math.cos(math.radians(config.segment_angle_deg)))
    slots = np.full((m, 2), -1, dtype=np.int32)  # (up, right); -1 = no edge
    x, y, z, rng = image.x, image.y, image.z, image.rng
    up_nb, right = image.up, image.right
    if config.skip_ground_px:
        # neighbours among the non-ground nodes: a dropout or a stray ground pixel inside an
        # object does not cut it (the gaps stay bounded by max_gap_px / max_gap_rows)
        ng = np.flatnonzero(keep)
        gap = min(config.max_gap_rows, image.rows - 1)
        node_of_pix = np.full(image.rows * image.cols + gap * image.cols, -1, dtype=np.int32)
        node_of_pix[image.node_pixel[ng]] = np.arange(ng.size, dtype=np.int32)
        _, up_s, _, right_s = _neighbours(image.node_pixel[ng], node_of_pix, image.rows, image.cols,
                                          config.max_gap_px, gap)
        up_nb = np.full(m, -1, dtype=np.int64)
        right = np.full(m, -1, dtype=np.int64)
        up_nb[ng] = np.where(up_s >= 0, np.take(ng, up_s, mode="clip"), -1)
        right[ng] = np.where(right_s >= 0, np.take(ng, right_s, mode="clip"), -1)
    # up pairs (a, up[a]) of two non-ground nodes
    nb = up_nb
    a = np.flatnonzero(keep & (nb >= 0) & np.take(keep, nb, mode="clip"))  # nb -1 reads garbage, masked by nb >= 0
    b = np.take(nb, a)
    join = np.flatnonzero(_beta_joins(np.take(x, a), np.take(y, a), np.take(z, a), np.take(rng, a),
                                      np.take(x, b), np.take(y, b), np.take(z, b), np.take(rng, b), cos_t))
    slots[np.take(a, join), 0] = np.take(b, join)
    # right pairs: nodes are row-major, so right[i] is i + 1 (contiguous slices) except at the seam
    if m > 1:
        consec = keep[:-1] & keep[1:] & (right[:-1] == np.arange(1, m))
        ok = _beta_joins(x[:-1], y[:-1], z[:-1], rng[:-1], x[1:], y[1:], z[1:], rng[1:], cos_t)
        ok &= consec
        i = np.flatnonzero(ok)
        slots[i, 1] = i + 1
    seam = np.flatnonzero((right >= 0) & (right != np.arange(1, m + 1)))
    a = seam[keep[seam] & keep[right[seam]]]
    b = right[a]
    join = _beta_joins(x[a], y[a], z[a], rng[a], x[b], y[b], z[b], rng[b], cos_t)
    slots[a[join], 1] = b[join]
    # CSR of the real edges only (no self-loops): same components, and connected_components
    # numbers them by their lowest node either way
    has = slots >= 0
    indices = np.compress(has.reshape(-1), slots.reshape(-1))
    indptr = np.zeros(m + 1, dtype=np.int32)
    per_node = has[:, 0].astype(np.int32)
    per_node += has[:, 1]
    np.cumsum(per_node, out=indptr[1:])
    graph = sparse.csr_matrix((np.ones(indices.size, dtype=np.float64), indices, indptr), shape=(m, m))
    _, comp = csgraph.connected_components(graph, directed=False)
    comp = comp.astype(np.int64)
    comp[ground] = -1
    return comp


def segment_range_image(points: np.ndarray, config: ProposalConfig, rings: Optional[np.ndarray] = None) -> np.ndarray:
    """Ground removal + segmentation of one scan with the range-image method.

    Args:
        points: (N, >=3) float, x, y, z (LiDAR frame, z up, metres).
        config: :class:`ProposalConfig`.
        rings: optional (N,) integer laser ring per point.

    Returns:
        (N,) int64 raw labels: ``-1`` ground, ``-2`` invalid / out of range, else a component id
        (not yet size-filtered nor contiguous; :func:`~drive_segment_ros.proposals.segment_scan`
        does that).
    """
    image = build_range_image(points, config, rings)
    ground = ground_mask(image, config)
    comp = segment_nodes(image, ground, config)
    comp_ext = np.append(comp, UNASSIGNED)  # point_node -1 (invalid point) -> UNASSIGNED
    labels = comp_ext[image.point_node]
    LOG.debug("range image %dx%d, %d pixels occupied, %d ground", image.rows, image.cols, image.rng.size, int(ground.sum()))
    return labels
