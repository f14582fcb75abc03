"""Augmentations for training on partial pseudo-labels (teacher) and full-image targets (student).

Every spatial operation is applied identically to the three aligned arrays of a training
sample: the RGB image (bilinear resampling), the partial label map (nearest; ``255`` = ignore)
and the LiDAR segment map (nearest; ``-1`` = no segment). Photometric jitter touches the
image only. Randomness always comes from an explicit :class:`numpy.random.Generator` so a
seed reproduces a sample exactly.

* Random scale / crop / horizontal flip: the standard Segmenter training pipeline
  (Strudel et al., ICCV 2021, mmsegmentation ``RandomResize`` + ``RandomCrop`` + ``RandomFlip``)
  used by Drive&Segment for the teacher (Vobecky et al., ECCV 2022, Sec. 3.3 / 4.1).
* :func:`copy_paste_segments`: LiDAR-segment copy-paste, after the coherent-region copy-paste of
  Zeng et al., "Unsupervised semantic segmentation with coherent region copy-paste"
  (BMVC 2022): a geometrically coherent region (here a LiDAR segment, which is exactly an object
  or object part separated in 3D) is cut with its labels from one image and pasted into another
  at a plausible place -- the same image-row band (the ground-contact row is kept, so the object
  still stands on the road at the right distance) shifted horizontally, optionally slightly
  rescaled about its ground-contact point.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from drive_segment_ros.config import ConfigBase
from drive_segment_ros.types import IGNORE_INDEX, DriveSegmentError

LOG = logging.getLogger(__name__)

#: Segment-map value of pixels not covered by a LiDAR segment.
NO_SEGMENT = -1


@dataclass
class AugmentConfig(ConfigBase):
    """Training-time augmentation settings (all probabilities in [0, 1]).

    Attributes:
        scale_range: (min, max) factor of the random isotropic rescale applied before the crop
            (drawn log-uniformly), relative to the scale at which the image just covers the crop
            (datasets) -- below 1 the crop is padded (ignore). ``(1, 1)``: always that scale.
        hflip_prob: probability of a horizontal flip.
        photometric: enable photometric jitter (:func:`photometric_jitter`).
        brightness, contrast, saturation: maximum relative change (e.g. 0.3 = +-30 %).
        hue: maximum hue shift in degrees (OpenCV hue unit is 2 degrees).
        copy_paste_prob: probability of applying :func:`copy_paste_segments` to a sample.
        copy_paste_max_segments: at most this many segments pasted per sample.
        copy_paste_scale_range: (min, max) rescale of a pasted segment about its ground contact.
        copy_paste_min_pixels: a source segment needs at least this many labelled pixels.
    """

    scale_range: Tuple[float, float] = (0.75, 1.5)
    hflip_prob: float = 0.5
    photometric: bool = True
    brightness: float = 0.25
    contrast: float = 0.25
    saturation: float = 0.25
    hue: float = 8.0
    copy_paste_prob: float = 0.0
    copy_paste_max_segments: int = 3
    copy_paste_scale_range: Tuple[float, float] = (0.9, 1.1)
    copy_paste_min_pixels: int = 50

    CONFIG_NAME: ClassVar[str] = "augment"

    def validate(self) -> "AugmentConfig":
        """Coerce the ranges to float pairs and check them; raise :class:`DriveSegmentError`."""
        try:
            lo, hi = (float(v) for v in self.scale_range)
            clo, chi = (float(v) for v in self.copy_paste_scale_range)
        except (TypeError, ValueError):
            raise DriveSegmentError("augment: scale_range / copy_paste_scale_range must be pairs of numbers") from None
        if not (0 < lo <= hi):
            raise DriveSegmentError(f"augment: scale_range must satisfy 0 < min <= max, got {self.scale_range}")
        self.scale_range = (lo, hi)
        if not (0 < clo <= chi):
            raise DriveSegmentError(
                f"augment: copy_paste_scale_range must satisfy 0 < min <= max, got {self.copy_paste_scale_range}"
            )
        self.copy_paste_scale_range = (clo, chi)
        for name in ("hflip_prob", "copy_paste_prob"):
            value = float(getattr(self, name))
            if not 0.0 <= value <= 1.0:
                raise DriveSegmentError(f"augment: {name} must be in [0, 1], got {value}")
            setattr(self, name, value)
        return self


def _check_triplet(img: np.ndarray, label: np.ndarray, segments: np.ndarray, what: str = "sample") -> None:
    if img.ndim != 3 or img.shape[2] != 3:
        raise DriveSegmentError(f"{what}: image must be (H, W, 3), got shape {img.shape}")
    if label.shape != img.shape[:2] or segments.shape != img.shape[:2]:
        raise DriveSegmentError(
            f"{what}: image {img.shape[:2]}, label {label.shape} and segments {segments.shape} must have the same H, W"
        )


def resize_sample(
    img: np.ndarray, label: np.ndarray, segments: np.ndarray, size_hw: Tuple[int, int]
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Resize an aligned (image, label, segments) triplet to ``size_hw`` = (H', W').

    Args:
        img: (H, W, 3) uint8 RGB (bilinear, ``cv2.INTER_LINEAR``).
        label: (H, W) uint8 partial labels (nearest, so no invented class ids).
        segments: (H, W) int32/int64 segment ids (nearest).
        size_hw: target (height, width) in pixels, both >= 1.

    Returns:
        The resized triplet with the input dtypes.

    Raises:
        DriveSegmentError: on mismatched shapes or a non-positive size.
    """
    _check_triplet(img, label, segments)
    h, w = int(size_hw[0]), int(size_hw[1])
    if h < 1 or w < 1:
        raise DriveSegmentError(f"resize: target size must be positive, got {size_hw}")
    if (h, w) == img.shape[:2]:
        return img, label, segments
    img_r = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
    lab_r = cv2.resize(label, (w, h), interpolation=cv2.INTER_NEAREST)
    # cv2 has no int64 resize; int32 covers every realistic segment id.
    seg_r = cv2.resize(segments.astype(np.int32, copy=False), (w, h), interpolation=cv2.INTER_NEAREST)
    return img_r, lab_r, seg_r.astype(segments.dtype, copy=False)


def random_scale(
    img: np.ndarray,
    label: np.ndarray,
    segments: np.ndarray,
    rng: np.random.Generator,
    scale_range: Tuple[float, float] = (0.5, 1.5),
    base_hw: Optional[Tuple[int, int]] = None,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Rescale the triplet by a factor drawn log-uniformly from ``scale_range``.

    Args:
        img, label, segments: aligned (H, W, 3) uint8 / (H, W) uint8 / (H, W) int arrays.
        rng: the random generator.
        scale_range: (min, max) factor; relative to ``base_hw`` when given (e.g. the crop
            size, so images of any resolution land near the training scale), else to (H, W).
        base_hw: optional (H0, W0): the factor is applied to the size that fits the image's
            shorter side to ``min(base_hw)`` first.

    Returns:
        (img, label, segments, factor) where ``factor`` is the total resize factor applied.
    """
    _check_triplet(img, label, segments)
    lo, hi = scale_range
    s = float(np.exp(rng.uniform(np.log(lo), np.log(hi)))) if hi > lo else float(lo)
    h, w = img.shape[:2]
    if base_hw is not None:
        s *= max(base_hw[0] / float(h), base_hw[1] / float(w))
    new_hw = (max(1, int(round(h * s))), max(1, int(round(w * s))))
    img, label, segments = resize_sample(img, label, segments, new_hw)
    return img, label, segments, s


def random_crop(
    img: np.ndarray,
    label: np.ndarray,
    segments: np.ndarray,
    crop_hw: Tuple[int, int],
    rng: np.random.Generator,
    ignore_index: int = IGNORE_INDEX,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Random ``crop_hw`` window of the triplet, padding (bottom / right) when the image is smaller.

    Padding uses image value 0, label ``ignore_index`` and segment ``-1``.

    Returns:
        (img (h, w, 3), label (h, w), segments (h, w), valid (h, w) bool) where ``valid`` is
        False on padded pixels (no image content; the student loss skips them).

    Raises:
        DriveSegmentError: on mismatched shapes or a non-positive crop size.
    """
    _check_triplet(img, label, segments)
    ch, cw = int(crop_hw[0]), int(crop_hw[1])
    if ch < 1 or cw < 1:
        raise DriveSegmentError(f"crop: crop size must be positive, got {crop_hw}")
    h, w = img.shape[:2]
    ph, pw = max(0, ch - h), max(0, cw - w)
    valid = np.ones((h, w), dtype=bool)
    if ph or pw:
        img = np.pad(img, ((0, ph), (0, pw), (0, 0)), constant_values=0)
        label = np.pad(label, ((0, ph), (0, pw)), constant_values=ignore_index)
        segments = np.pad(segments, ((0, ph), (0, pw)), constant_values=NO_SEGMENT)
        valid = np.pad(valid, ((0, ph), (0, pw)), constant_values=False)
        h, w = img.shape[:2]
    y0 = int(rng.integers(0, h - ch + 1))
    x0 = int(rng.integers(0, w - cw + 1))
    sl = (slice(y0, y0 + ch), slice(x0, x0 + cw))
    return img[sl], label[sl], segments[sl], valid[sl]


def hflip(*arrays: np.ndarray) -> Tuple[np.ndarray, ...]:
    """Mirror every (H, W[, C]) array left-right (column ``x`` -> ``W - 1 - x``); returns contiguous copies."""
    return tuple(np.ascontiguousarray(a[:, ::-1]) for a in arrays)


def photometric_jitter(
    img: np.ndarray,
    rng: np.random.Generator,
    brightness: float = 0.25,
    contrast: float = 0.25,
    saturation: float = 0.25,
    hue: float = 8.0,
) -> np.ndarray:
    """Random brightness, contrast, saturation and hue change of an RGB uint8 image.

    Same parameterisation as ``torchvision.transforms.ColorJitter`` (factors drawn uniformly in
    ``[1 - x, 1 + x]``; hue shift in degrees), in a fixed order: brightness, contrast (around the
    mean grey), saturation and hue (HSV, OpenCV). A zero amplitude disables that component.

    Args:
        img: (H, W, 3) uint8 RGB.
        rng: the random generator.

    Returns:
        (H, W, 3) uint8 RGB, a new array.

    Raises:
        DriveSegmentError: if ``img`` is not (H, W, 3) uint8.
    """
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise DriveSegmentError(f"photometric_jitter: expected (H, W, 3) uint8 RGB, got {img.shape} {img.dtype}")
    out = img.astype(np.float32)
    if brightness > 0:
        out *= rng.uniform(1 - brightness, 1 + brightness)
    if contrast > 0:
        grey = out.mean()
        out = (out - grey) * rng.uniform(1 - contrast, 1 + contrast) + grey
    out = np.clip(out, 0, 255).astype(np.uint8)
    if saturation > 0 or hue > 0:
        hsv = cv2.cvtColor(out, cv2.COLOR_RGB2HSV).astype(np.float32)
        if saturation > 0:
            hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(1 - saturation, 1 + saturation), 0, 255)
        if hue > 0:
            hsv[..., 0] = np.mod(hsv[..., 0] + rng.uniform(-hue, hue) / 2.0, 180.0)
        out = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)
    return out


def _segment_boxes(segments: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Bounding boxes (K, 4) = (y0, y1, x0, x1) inclusive of the segment ids ``ids`` (vectorised)."""
    ys, xs = np.nonzero(segments >= 0)
    seg = segments[ys, xs]
    order = np.searchsorted(ids, seg)
    keep = (order < len(ids)) & (ids[np.minimum(order, len(ids) - 1)] == seg)
    order, ys, xs = order[keep], ys[keep], xs[keep]
    boxes = np.empty((len(ids), 4), dtype=np.int64)
    boxes[:, 0] = np.iinfo(np.int64).max
    boxes[:, 2] = np.iinfo(np.int64).max
    boxes[:, 1] = -1
    boxes[:, 3] = -1
    np.minimum.at(boxes[:, 0], order, ys)
    np.maximum.at(boxes[:, 1], order, ys)
    np.minimum.at(boxes[:, 2], order, xs)
    np.maximum.at(boxes[:, 3], order, xs)
    return boxes


def copy_paste_segments(
    dst_img: np.ndarray,
    dst_label: np.ndarray,
    dst_segments: np.ndarray,
    src_img: np.ndarray,
    src_label: np.ndarray,
    src_segments: np.ndarray,
    rng: np.random.Generator,
    max_segments: int = 3,
    scale_range: Tuple[float, float] = (1.0, 1.0),
    min_pixels: int = 50,
    segment_ids: Optional[Sequence[int]] = None,
    shifts: Optional[Sequence[int]] = None,
    ignore_index: int = IGNORE_INDEX,
    return_info: bool = False,
):
    """Paste LiDAR segments (pixels + labels) of a source image into a destination image.

    Coherent-region copy-paste (Zeng et al., BMVC 2022) with LiDAR segments as the coherent
    regions. For each chosen source segment ``s`` (pixels ``src_segments == s``):

    * the ground-contact row (the segment's lowest pixel row, ``y1``) is kept, so the object
      stays in the same image-row band, i.e. at a plausible distance on the road;
    * it is shifted horizontally by ``dx`` pixels (random, keeping the box inside the image);
    * optionally rescaled by ``f`` from ``scale_range`` about its bottom-centre point
      (bilinear for pixels, nearest for mask and labels), still standing on row ``y1``;
    * destination pixels under the pasted mask take the source RGB and the source *per-pixel*
      label (ignore stays ignore), and the segment map gets a new id ``max(dst_segments) + 1 + i``
      so the pasted object is a separate segment (it occludes whatever was there).

    Pixels outside the pasted masks are left untouched in all three arrays. If the source and
    destination sizes differ, the source triplet is first resized to the destination size
    (which keeps each object's relative image row).

    Args:
        dst_img, src_img: (H, W, 3) uint8 RGB.
        dst_label, src_label: (H, W) uint8 partial pseudo-labels, ``ignore_index`` = unlabelled.
        dst_segments, src_segments: (H, W) integer LiDAR segment maps, ``-1`` = none.
        rng: random generator (segment choice, shift, scale).
        max_segments: number of segments pasted (at most; fewer when the source has fewer).
        scale_range: (min, max) rescale of a pasted segment; ``(1, 1)`` = pixel-exact copy.
        min_pixels: a source segment is eligible when it has at least this many labelled pixels.
        segment_ids: explicit source segment ids to paste (bypasses the random choice).
        shifts: explicit horizontal shifts (pixels, one per pasted segment; bypasses the random
            shift; the pasted box is clipped at the image border).
        ignore_index: label value of unlabelled pixels.
        return_info: also return a list of dicts ``{src_id, dst_id, dx, scale, n_pixels}``.

    Returns:
        ``(img, label, segments)`` new arrays with the destination dtypes, plus ``info`` when
        ``return_info``.

    Raises:
        DriveSegmentError: on mismatched shapes, unknown ``segment_ids`` or a bad ``shifts`` length.
    """
    _check_triplet(dst_img, dst_label, dst_segments, "copy_paste destination")
    _check_triplet(src_img, src_label, src_segments, "copy_paste source")
    H, W = dst_img.shape[:2]
    if src_img.shape[:2] != (H, W):
        src_img, src_label, src_segments = resize_sample(src_img, src_label, src_segments, (H, W))
    img = dst_img.copy()
    label = dst_label.copy()
    segs = dst_segments.copy()
    info: List[dict] = []

    # Eligible source segments: enough labelled pixels (vectorised counts with np.unique).
    labelled = (src_segments >= 0) & (src_label != ignore_index)
    ids, counts = np.unique(src_segments[labelled], return_counts=True)
    if segment_ids is not None:
        chosen = np.asarray(list(segment_ids), dtype=np.int64)
        present = np.unique(src_segments[src_segments >= 0])
        missing = np.setdiff1d(chosen, present)
        if missing.size:
            raise DriveSegmentError(f"copy_paste: segment ids {missing.tolist()} are not in the source segment map")
    else:
        eligible = ids[counts >= min_pixels]
        n = min(int(max_segments), eligible.size)
        chosen = rng.choice(eligible, size=n, replace=False) if n > 0 else np.zeros(0, dtype=np.int64)
    if shifts is not None and len(shifts) != len(chosen):
        raise DriveSegmentError(f"copy_paste: got {len(shifts)} shifts for {len(chosen)} segments")
    if chosen.size == 0:
        return (img, label, segs, info) if return_info else (img, label, segs)

    order = np.sort(np.unique(chosen))
    boxes = _segment_boxes(src_segments, order)
    next_id = int(max(int(dst_segments.max(initial=-1)), -1)) + 1
    lo, hi = scale_range
    for i, sid in enumerate(chosen):
        y0, y1, x0, x1 = boxes[np.searchsorted(order, sid)]
        mask = src_segments[y0 : y1 + 1, x0 : x1 + 1] == sid
        patch = src_img[y0 : y1 + 1, x0 : x1 + 1]
        plab = src_label[y0 : y1 + 1, x0 : x1 + 1]
        f = float(rng.uniform(lo, hi)) if hi > lo else float(lo)
        bh, bw = mask.shape
        if f != 1.0:
            nh, nw = max(1, int(round(bh * f))), max(1, int(round(bw * f)))
            patch = cv2.resize(patch, (nw, nh), interpolation=cv2.INTER_LINEAR)
            mask = cv2.resize(mask.astype(np.uint8), (nw, nh), interpolation=cv2.INTER_NEAREST).astype(bool)
            plab = cv2.resize(plab, (nw, nh), interpolation=cv2.INTER_NEAREST)
            bh, bw = nh, nw
        # Keep the ground-contact row y1 and the bottom-centre column (scaled about it).
        cx = (x0 + x1) / 2.0
        nx0 = int(round(cx - (bw - 1) / 2.0))
        ny0 = int(y1) - bh + 1
        if shifts is not None:
            dx = int(shifts[i])
        else:
            lo_dx, hi_dx = -nx0, W - bw - nx0  # keep the whole box inside when possible
            dx = int(rng.integers(min(lo_dx, hi_dx), max(lo_dx, hi_dx) + 1))
        nx0 += dx
        # Clip to the image.
        ty0, tx0 = max(ny0, 0), max(nx0, 0)
        ty1, tx1 = min(ny0 + bh, H), min(nx0 + bw, W)
        if ty1 <= ty0 or tx1 <= tx0:
            continue
        sub = (slice(ty0 - ny0, ty1 - ny0), slice(tx0 - nx0, tx1 - nx0))
        m = mask[sub]
        region = (slice(ty0, ty1), slice(tx0, tx1))
        img[region][m] = patch[sub][m]
        label[region][m] = plab[sub][m]
        segs[region][m] = next_id
        info.append({"src_id": int(sid), "dst_id": next_id, "dx": dx, "scale": f, "n_pixels": int(m.sum())})
        next_id += 1
    return (img, label, segs, info) if return_info else (img, label, segs)
