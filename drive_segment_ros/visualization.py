"""Palettes and overlays for label maps, LiDAR segment maps and projected points.

All images are RGB ``uint8`` (H, W, 3) (convert with ``cv2.cvtColor(..., cv2.COLOR_RGB2BGR)``
before ``cv2.imwrite``). Label maps are integer (H, W) arrays; ignore / unlabelled pixels
(``-1`` for segment maps, ``255`` for Cityscapes-style train-id maps) are left untouched or
drawn black. No ROS imports; numpy and OpenCV only. :func:`colorize` is the one colouring of
class-id maps (the inference :class:`~drive_segment_ros.inference.backends.SegmentationModel` uses
it with :func:`palette`); figures of the offline pipeline (``draw_proposals``) live in
``drive_segment_training.figures``.
"""
from __future__ import annotations

import colorsys
import logging
from typing import Optional, Sequence, Union

import cv2
import numpy as np

from drive_segment_ros.types import DriveSegmentError

LOG = logging.getLogger(__name__)

__all__ = [
    "CITYSCAPES_CLASSES",
    "cityscapes_palette",
    "palette",
    "colorize",
    "overlay",
    "draw_points",
    "depth_colors",
]

#: The 19 Cityscapes evaluation classes in train-id order (Cordts et al., CVPR 2016; cityscapesScripts ``labels.py``).
CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)

_CITYSCAPES_RGB = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
    (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
)

IgnoreSpec = Union[None, int, Sequence[int]]


def cityscapes_palette() -> np.ndarray:
    """The official Cityscapes colours of the 19 train ids: (19, 3) uint8 RGB (cityscapesScripts ``labels.py``)."""
    return np.array(_CITYSCAPES_RGB, dtype=np.uint8)


def palette(n: int, seed: int = 0) -> np.ndarray:
    """``n`` distinct, saturated RGB colours: (n, 3) uint8.

    Hues follow the golden-ratio sequence (successive ids far apart on the hue circle) from a
    seed-dependent start, with saturation / value cycling over three levels so that neighbouring
    hues for large ``n`` still differ. Deterministic for a given ``(n, seed)``; colour ``i`` does
    not depend on ``n`` (a prefix of a longer palette is the shorter palette).

    Raises DriveSegmentError for ``n < 0``.
    """
    n = int(n)
    if n < 0:
        raise DriveSegmentError(f"palette size must be >= 0, got {n}")
    start = np.random.default_rng(seed).random()
    out = np.empty((n, 3), dtype=np.uint8)
    golden = 0.6180339887498949
    levels = ((0.85, 0.95), (0.6, 0.85), (0.95, 0.7))
    for i in range(n):  # n is the number of classes / segments (small), not pixels
        h = (start + i * golden) % 1.0
        s, v = levels[(i // 7) % 3]
        out[i] = np.round(np.array(colorsys.hsv_to_rgb(h, s, v)) * 255)
    return out


_default_palette = palette  # reachable where a parameter named ``palette`` shadows the function


def _ignore_mask(label_map: np.ndarray, n_colors: int, ignore: IgnoreSpec) -> np.ndarray:
    """Pixels to leave uncoloured: listed ignore values, negatives, and ids without a colour."""
    mask = (label_map < 0) | (label_map >= n_colors)
    if ignore is not None:
        mask |= np.isin(label_map, np.atleast_1d(np.asarray(ignore)))
    return mask


def _check_label_map(label_map: np.ndarray) -> np.ndarray:
    label_map = np.asarray(label_map)
    if label_map.ndim != 2 or not np.issubdtype(label_map.dtype, np.integer):
        raise DriveSegmentError(f"label map must be an (H, W) integer array, got {label_map.dtype} {label_map.shape}")
    return label_map


def _check_rgb(rgb: np.ndarray, shape: Optional[tuple] = None) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise DriveSegmentError(f"image must be (H, W, 3) uint8 RGB, got {rgb.dtype} {rgb.shape}")
    if shape is not None and rgb.shape[:2] != tuple(shape):
        raise DriveSegmentError(f"image {rgb.shape[:2]} and label map {tuple(shape)} differ in size")
    return rgb


def _check_palette(pal: np.ndarray) -> np.ndarray:
    pal = np.asarray(pal)
    if pal.ndim != 2 or pal.shape[1] != 3:
        raise DriveSegmentError(f"palette must be (n, 3), got {pal.shape}")
    return pal.astype(np.uint8)


def colorize(label_map: np.ndarray, palette: np.ndarray, ignore_value: IgnoreSpec = (-1, 255)) -> np.ndarray:
    """Colour a label map: (H, W) int -> (H, W, 3) uint8 RGB, ``palette[label]``.

    Pixels equal to ``ignore_value`` (an int or a list; default -1 and 255), negative, or with a
    label ``>= len(palette)`` are black. Raises DriveSegmentError on bad shapes / dtypes.
    """
    label_map = _check_label_map(label_map)
    pal = _check_palette(palette)
    out = np.zeros(label_map.shape + (3,), dtype=np.uint8)
    ign = _ignore_mask(label_map, len(pal), ignore_value)
    out[~ign] = pal[label_map[~ign]]
    return out


def overlay(
    rgb: np.ndarray,
    label_map: np.ndarray,
    palette: Optional[np.ndarray] = None,
    alpha: float = 0.5,
    ignore: IgnoreSpec = (-1, 255),
) -> np.ndarray:
    """Blend colourized labels over an image: ``out = round((1 - alpha) * rgb + alpha * colour)``.

    Ignored pixels (``ignore`` values, negatives, ids without a colour) keep the original image.
    Args: rgb (H, W, 3) uint8; label_map (H, W) int; palette (n, 3) uint8 or ``None`` for
    :func:`palette` over the ids present (a number in its place is taken as ``alpha``, the
    ``overlay(rgb, label_map, alpha)`` form of docs/ARCHITECTURE.md); alpha in [0, 1].
    Returns a new (H, W, 3) uint8 array.
    Raises DriveSegmentError on size / dtype mismatches or alpha outside [0, 1].
    """
    label_map = _check_label_map(label_map)
    rgb = _check_rgb(rgb, label_map.shape)
    if palette is not None and np.ndim(palette) == 0:
        alpha, palette = float(palette), None
    if palette is None:
        ign = np.atleast_1d(np.asarray(ignore)) if ignore is not None else np.zeros(0, int)
        ok = (label_map >= 0) & ~np.isin(label_map, ign)
        palette = _default_palette(int(label_map[ok].max()) + 1 if ok.any() else 0)
    pal = _check_palette(palette)
    if not 0.0 <= float(alpha) <= 1.0:
        raise DriveSegmentError(f"alpha must be in [0, 1], got {alpha}")
    out = rgb.copy()
    keep = ~_ignore_mask(label_map, len(pal), ignore)
    col = pal[label_map[keep]].astype(np.float32)
    out[keep] = np.clip(np.rint((1.0 - alpha) * rgb[keep].astype(np.float32) + alpha * col), 0, 255).astype(np.uint8)
    return out


def depth_colors(depth: np.ndarray, max_depth: float = 60.0) -> np.ndarray:
    """Colour depths (metres) with the turbo colormap, near = red, far = blue: (N,) -> (N, 3) uint8 RGB."""
    d = np.clip(np.asarray(depth, dtype=np.float64) / float(max_depth), 0.0, 1.0)
    lut = cv2.applyColorMap(np.arange(256, dtype=np.uint8).reshape(-1, 1), cv2.COLORMAP_TURBO).reshape(256, 3)[:, ::-1]
    return lut[np.rint((1.0 - d) * 255).astype(np.int64)]


def draw_points(rgb: np.ndarray, uv: np.ndarray, colors: np.ndarray, radius: int = 0) -> np.ndarray:
    """Draw projected points on a copy of ``rgb``.

    Args:
        rgb: (H, W, 3) uint8 RGB.
        uv: (N, 2) float pixel coordinates (u = column, v = row); a point lands in pixel
            ``(floor(v + 0.5), floor(u + 0.5))``; NaN / outside points are skipped.
        colors: (N, 3) uint8 per point, or one (3,) colour for all.
        radius: 0 = one pixel per point; > 0 = filled square of half-size ``radius`` (vectorized).
    Returns a new (H, W, 3) uint8 image; later points overwrite earlier ones.
    Raises DriveSegmentError on shape mismatches.
    """
    rgb = _check_rgb(rgb)
    uv = np.asarray(uv, dtype=np.float64)
    if uv.ndim != 2 or uv.shape[1] != 2:
        raise DriveSegmentError(f"uv must be (N, 2), got {uv.shape}")
    colors = np.asarray(colors)
    if colors.shape == (3,):
        colors = np.broadcast_to(colors, (uv.shape[0], 3))
    if colors.shape != (uv.shape[0], 3):
        raise DriveSegmentError(f"colors must be (N, 3) or (3,), got {colors.shape} for {uv.shape[0]} points")
    out = rgb.copy()
    H, W = rgb.shape[:2]
    ok = np.isfinite(uv).all(1)
    rc = np.floor(uv[ok][:, ::-1] + 0.5).astype(np.int64)
    col = colors[ok].astype(np.uint8)
    r = int(radius)
    offs = [(dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1)]  # <= (2r+1)^2 offsets, not points
    for dy, dx in offs:
        rr, cc = rc[:, 0] + dy, rc[:, 1] + dx
        inside = (rr >= 0) & (rr < H) & (cc >= 0) & (cc < W)
        out[rr[inside], cc[inside]] = col[inside]
    return out
