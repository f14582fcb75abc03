"""Per-frame pseudo-labelling (Drive&Segment, stage 4): LiDAR segments + image features -> partial labels.

Drive&Segment (Vobecky et al., ECCV 2022, Sec. 3.2 "Pseudo-labels"; IJCV 2025, Sec. 3.3): a
self-supervised backbone (DINO ViT-S/16 in the released model) gives a dense feature map; the
features are averaged over each projected LiDAR segment's mask (:func:`pool_segment_features`);
each segment gets the pseudo-class of its nearest k-means centroid (:func:`assign_pseudo_classes`)
and each image a *partial* label map (segment pixels = the segment's class, everything else =
ignore 255, :func:`partial_label_map`).

:class:`PseudoLabeler` does this for one :class:`~drive_segment_ros.types.DriveFrame`; the
offline batch run (k-means over all drives, ``drive-segment pseudo-label``) is
``drive_segment_training.pseudo_labels`` and the ROS ``pseudo_label_node`` labels live frames
with the centroids it wrote. The dataset files are :mod:`drive_segment_ros.pseudo_label_store`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Dict, FrozenSet, List, Optional, Tuple, Union

import numpy as np
import torch
from scipy import sparse

from drive_segment_ros.config import ConfigBase
from drive_segment_ros.inference.preprocess import normalize_image
from drive_segment_ros.models.backbones import build_backbone, extract_features, max_side_size, resize_max_side
from drive_segment_ros.projection import ProjectionConfig
from drive_segment_ros.proposals import ProposalConfig
from drive_segment_ros.pseudo_label_store import read_labeler_files
from drive_segment_ros.segment_map import compute_segment_map
from drive_segment_ros.types import IGNORE_INDEX, DriveFrame, DriveSegmentError
from drive_segment_ros.visualization import overlay, palette

__all__ = [
    "PseudoLabelConfig", "bilinear_taps", "feature_cell_size", "image_features", "image_features_batch", "l2_normalize",
    "pool_segment_features", "assign_pseudo_classes", "partial_label_map", "FrameSegments", "PseudoLabeler",
    "preview_image",
]


# --------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------
@dataclass
class PseudoLabelConfig(ConfigBase):
    """Parameters of the pseudo-labelling run (YAML: ``config/pseudo_labels.yaml``).

    Attributes:
        backbone: :data:`drive_segment_ros.models.backbones.BACKBONES` key (paper: DINO ViT-S/16,
            ``vit_small_patch16_224.dino``; offline here: ``mobilenetv2_deepsort``).
        backbone_weights: optional local weights file for the backbone.
        k: number of pseudo-classes (k-means clusters; paper about 30).
        seed: k-means random state.
        n_init: k-means restarts (best inertia kept).
        max_iter: k-means iterations per restart.
        minibatch_above: use ``MiniBatchKMeans`` when there are more segments than this.
        normalize_features: L2-normalise each pooled segment feature before k-means.
        min_segment_pixels: segments covering fewer pixels get no pseudo-label (255) and are not
            clustered (their mean feature is too noisy).
        max_side: images are resized so their longer side is at most this before the backbone
            (``extract_features(max_side=...)``); ``None`` = native size.
        window: sliding-window size for feature extraction (pixels), ``None`` = one pass.
        image_topics: camera topics to read (``None`` = all cameras in the bag).
        batch_size: images per backbone forward (same-size images are stacked); ``None`` = 8 on
            CUDA, 1 on CPU. Batched and one-by-one extraction give the same features on CPU
            float32 (tested); the batch size is not part of the feature-cache key.
        bf16: run the backbone under ``torch.autocast(bfloat16)`` on CUDA (ignored on CPU).
        prefetch: frames decoded ahead by a background thread (bounded queue); 0 = no thread.
        kmeans_sample: at most this many segment features are kept for fitting k-means (a
            uniform reservoir sample over all frames, seeded); every segment is then assigned in a
            second streaming pass. Memory bound: ``kmeans_sample * C * 4`` bytes (C = feature
            dimension: 100k x 384 (DINO ViT-S) = 154 MB) plus scikit-learn's working copies.
        image_storage: ``"auto"``: a CompressedImage's original bytes are copied to
            ``images/<name>.<fmt>``, a raw Image is referenced by bag + topic + stamp;
            ``"reference"``: always reference; ``"png"``: lossless PNG copy of every image.
        preview_every, preview_first: preview overlays (JPEG) for the first ``preview_first``
            frames of each shard and every ``preview_every``-th frame after (0 = none).
        proposals: :class:`~drive_segment_ros.proposals.ProposalConfig` fields (``{}`` = defaults).
        projection: :class:`~drive_segment_ros.projection.ProjectionConfig` fields (``{}`` = defaults).
    """

    backbone: str = "vit_small_patch16_224.dino"
    backbone_weights: Optional[str] = None
    k: int = 30
    seed: int = 0
    n_init: int = 10
    max_iter: int = 300
    minibatch_above: int = 50000
    normalize_features: bool = True
    min_segment_pixels: int = 50
    max_side: Optional[int] = 1024
    window: Optional[int] = None
    image_topics: Optional[List[str]] = None
    batch_size: Optional[int] = None
    bf16: bool = True
    prefetch: int = 8
    kmeans_sample: int = 100000
    image_storage: str = "auto"
    preview_every: int = 100
    preview_first: int = 10
    proposals: Dict[str, Any] = field(default_factory=dict)
    projection: Dict[str, Any] = field(default_factory=dict)

    CONFIG_NAME: ClassVar[str] = "pseudo-label config"
    #: Metadata keys written next to the fields in ``pseudo_label_config.yaml`` (accepted, dropped).
    IGNORED_KEYS: ClassVar[FrozenSet[str]] = frozenset({"backbone_description", "self_supervised", "ignore_index"})

    def validate(self) -> "PseudoLabelConfig":
        """Check ranges (k in 1..255, ...); raise :class:`DriveSegmentError`."""
        if self.k < 1 or self.k > 255:
            raise DriveSegmentError(f"pseudo-labels: k must be in 1..255 (uint8 labels, 255 = ignore), got {self.k}")
        if self.n_init < 1 or self.max_iter < 1 or self.min_segment_pixels < 1:
            raise DriveSegmentError("pseudo-labels: n_init, max_iter and min_segment_pixels must be >= 1")
        if self.max_side is not None and self.max_side < 16:
            raise DriveSegmentError(f"pseudo-labels: max_side must be >= 16 or null, got {self.max_side}")
        if self.batch_size is not None and self.batch_size < 1:
            raise DriveSegmentError(f"pseudo-labels: batch_size must be >= 1 or null, got {self.batch_size}")
        if self.prefetch < 0 or self.preview_every < 0 or self.preview_first < 0:
            raise DriveSegmentError("pseudo-labels: prefetch, preview_every and preview_first must be >= 0")
        if self.kmeans_sample < self.k:
            raise DriveSegmentError(f"pseudo-labels: kmeans_sample ({self.kmeans_sample}) must be >= k ({self.k})")
        if self.image_storage not in ("auto", "reference", "png"):
            raise DriveSegmentError(f"pseudo-labels: image_storage must be auto, reference or png, got {self.image_storage!r}")
        self.proposals = dict(self.proposals or {})
        self.projection = dict(self.projection or {})
        return self

    def proposal_config(self) -> ProposalConfig:
        """The :class:`~drive_segment_ros.proposals.ProposalConfig` of this run."""
        return ProposalConfig.from_dict(self.proposals)

    def projection_config(self) -> ProjectionConfig:
        """The :class:`~drive_segment_ros.projection.ProjectionConfig` of this run."""
        return ProjectionConfig.from_dict(self.projection)


# --------------------------------------------------------------------------------------------
# features: bilinear upsampling without materialising (C, H, W)
# --------------------------------------------------------------------------------------------
def bilinear_taps(coords: np.ndarray, n: int, cell: float) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """1-D bilinear interpolation taps from pixel coordinates to a feature grid.

    Pixel ``p`` (centre ``p + 0.5``) sits at feature coordinate ``(p + 0.5) / cell - 0.5``
    (feature ``i`` covers pixels ``[i*cell, (i+1)*cell)``), clamped like
    ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)``.

    Args:
        coords: (P,) integer pixel indices along one axis.
        n: feature-grid size along that axis.
        cell: pixels per feature cell along that axis (> 0).

    Returns:
        ``(i0 (P,) int64, i1 (P,) int64, frac (P,) float32)``: value = ``(1-frac)*F[i0] + frac*F[i1]``.
    """
    f = (np.asarray(coords, dtype=np.float64) + 0.5) / float(cell) - 0.5
    f = np.clip(f, 0.0, n - 1)
    i0 = np.floor(f).astype(np.int64)
    i1 = np.minimum(i0 + 1, n - 1)
    return i0, i1, (f - i0).astype(np.float32)


def feature_cell_size(backbone, image_hw: Tuple[int, int], max_side: Optional[int]) -> Tuple[float, float]:
    """Pixels of the original image per feature cell, ``(cell_y, cell_x)``, for
    ``extract_features(backbone, rgb, max_side)`` on an image of size ``image_hw``.

    ``extract_features`` resizes to ``(H', W')`` (longer side <= ``max_side``, cv2 rounding) and
    the backbone pads bottom/right to the stride, so cell ``i`` covers original rows
    ``[i*stride*H/H', (i+1)*stride*H/H')``.
    """
    H, W = int(image_hw[0]), int(image_hw[1])
    Hs, Ws = max_side_size((H, W), max_side)
    s = float(backbone.stride)
    return s * H / Hs, s * W / Ws


def image_features(backbone, rgb: np.ndarray, max_side: Optional[int] = 1024, window: Optional[int] = None):
    """Dense backbone features of one image plus the cell size needed to map them to pixels.

    Args:
        backbone: a :class:`~drive_segment_ros.models.backbones.Backbone` (or any ``nn.Module`` with
            ``stride``, ``embed_dim``, ``mean``, ``std`` and ``forward((B,3,H,W)) -> (B,C,h,w)``).
        rgb: (H, W, 3) uint8 RGB.
        max_side, window: see ``backbones.extract_features``.

    Returns:
        ``(features (C, h, w) float32 torch CPU tensor, (cell_y, cell_x) pixels per cell)``.
    """
    feats = extract_features(backbone, rgb, max_side=max_side, window=window)
    return feats, feature_cell_size(backbone, rgb.shape[:2], max_side)


def image_features_batch(backbone, rgbs, max_side: Optional[int] = 1024, window: Optional[int] = None,
                         bf16: bool = True):
    """Dense features of several images, stacking same-size images into one forward.

    Identical to ``[image_features(backbone, rgb, max_side, window) for rgb in rgbs]`` on CPU
    float32 (tested); on CUDA with ``bf16`` the forward runs under
    ``torch.autocast("cuda", torch.bfloat16)`` and features are returned as float32. With a
    ``window`` (sliding-window extraction) images are done one by one.

    Args:
        backbone: see :func:`image_features`.
        rgbs: sequence of (H, W, 3) uint8 RGB images (sizes may differ).
        max_side, window: see ``backbones.extract_features``.
        bf16: autocast to bfloat16 on CUDA.

    Returns:
        list of ``(features (C, h, w) float32 CPU tensor, (cell_y, cell_x))`` in input order.

    Raises:
        DriveSegmentError: a bad image.
    """
    rgbs = [np.asarray(r) for r in rgbs]
    for r in rgbs:
        if r.ndim != 3 or r.shape[2] != 3 or r.dtype != np.uint8:
            raise DriveSegmentError(f"expected an (H,W,3) uint8 RGB image, got shape {r.shape} dtype {r.dtype}")
    device = next(backbone.parameters()).device
    autocast = bool(bf16) and device.type == "cuda"
    out: List[Any] = [None] * len(rgbs)
    groups: Dict[Tuple[int, int], List[int]] = {}
    resized = {}
    for i, r in enumerate(rgbs):
        if window is not None:
            out[i] = None
            continue
        resized[i] = resize_max_side(r, max_side)
        groups.setdefault(resized[i].shape[:2], []).append(i)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
        for i, r in enumerate(rgbs):
            if window is not None:
                out[i] = (extract_features(backbone, r, max_side=max_side, window=window),
                          feature_cell_size(backbone, r.shape[:2], max_side))
        for members in groups.values():
            x = torch.stack([normalize_image(resized[i], backbone.mean, backbone.std, device) for i in members])
            feats = backbone(x).float().cpu()
            for j, i in enumerate(members):
                out[i] = (feats[j].contiguous(), feature_cell_size(backbone, rgbs[i].shape[:2], max_side))
    return out


def _as_feature_array(features) -> np.ndarray:
    if isinstance(features, torch.Tensor):
        features = features.detach().cpu().float().numpy()
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 3:
        raise DriveSegmentError(f"features must be (C, h, w), got shape {features.shape}")
    return features


def l2_normalize(x: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """Row-wise L2 normalisation of (M, C) float -> (M, C) float32 (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps)


def pool_segment_features(
    features,
    segment_map: np.ndarray,
    cell_size: Optional[Tuple[float, float]] = None,
    normalize: bool = False,
    min_pixels: int = 1,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean feature over each segment's mask (Drive&Segment Sec. 3.2).

    Exactly the mean of the *bilinearly upsampled* feature map (``align_corners=False``) over each
    segment's pixels, computed without materialising the (C, H, W) map: every labelled pixel
    contributes its four bilinear taps to a sparse (S, h*w) weight matrix (``scipy.sparse``), and
    ``feats = W @ F.T / pixel_counts``. No Python loop over segments or pixels.

    Args:
        features: (C, h, w) float torch tensor or numpy array.
        segment_map: (H, W) int, segment id per pixel, -1 (any negative) = unlabelled.
        cell_size: ``(cell_y, cell_x)`` original pixels per feature cell (see
            :func:`feature_cell_size`); ``None`` = the map spans the image exactly (``H/h``, ``W/w``).
        normalize: L2-normalise each pooled feature.
        min_pixels: segments covering fewer pixels are dropped.

    Returns:
        ``(segment_ids (S,) int32 ascending, feats (S, C) float32, pixel_counts (S,) int64)``;
        ``S = 0`` (with shapes (0,), (0, C), (0,)) when nothing is labelled.

    Raises:
        DriveSegmentError: bad shapes.
    """
    F = _as_feature_array(features)
    C, h, w = F.shape
    seg = np.asarray(segment_map)
    if seg.ndim != 2:
        raise DriveSegmentError(f"segment_map must be (H, W), got shape {seg.shape}")
    H, W = seg.shape
    cy, cx = (H / h, W / w) if cell_size is None else (float(cell_size[0]), float(cell_size[1]))
    if cy <= 0 or cx <= 0:
        raise DriveSegmentError(f"cell_size must be positive, got {cell_size}")
    ys, xs = np.nonzero(seg >= 0)
    if ys.size == 0:
        return np.zeros(0, np.int32), np.zeros((0, C), np.float32), np.zeros(0, np.int64)
    ids, inv = np.unique(seg[ys, xs], return_inverse=True)
    counts = np.bincount(inv, minlength=ids.size).astype(np.int64)
    y0, y1, ly = bilinear_taps(ys, h, cy)
    x0, x1, lx = bilinear_taps(xs, w, cx)
    rows = np.concatenate([inv] * 4)
    cols = np.concatenate([y0 * w + x0, y0 * w + x1, y1 * w + x0, y1 * w + x1])
    vals = np.concatenate([(1 - ly) * (1 - lx), (1 - ly) * lx, ly * (1 - lx), ly * lx]).astype(np.float64)
    A = sparse.csr_matrix((vals, (rows, cols)), shape=(ids.size, h * w))
    sums = np.asarray(A @ F.reshape(C, h * w).T.astype(np.float64))
    feats = (sums / counts[:, None]).astype(np.float32)
    keep = counts >= int(min_pixels)
    ids, feats, counts = ids[keep].astype(np.int32), feats[keep], counts[keep]
    if normalize:
        feats = l2_normalize(feats)
    return ids, feats, counts


def assign_pseudo_classes(feats: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Nearest centroid (squared Euclidean, as k-means) of each feature.

    Args:
        feats: (M, C) float; centroids: (k, C) float.

    Returns:
        (M,) int64 cluster ids in ``[0, k)``.

    Raises:
        DriveSegmentError: dimension mismatch.
    """
    X = np.asarray(feats, dtype=np.float32)
    Cn = np.asarray(centroids, dtype=np.float32)
    if X.ndim != 2 or Cn.ndim != 2 or X.shape[1] != Cn.shape[1]:
        raise DriveSegmentError(f"features {X.shape} and centroids {Cn.shape} must be (M, C) and (k, C)")
    if X.shape[0] == 0:
        return np.zeros(0, np.int64)
    # ||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2; ||x||^2 does not change the argmin.
    d = (Cn * Cn).sum(axis=1)[None, :] - 2.0 * (X @ Cn.T)
    return np.argmin(d, axis=1).astype(np.int64)


def partial_label_map(
    segment_map: np.ndarray, segment_ids: np.ndarray, classes: np.ndarray, ignore_index: int = IGNORE_INDEX
) -> np.ndarray:
    """Partial pseudo-label map: pixels of segment ``segment_ids[i]`` get ``classes[i]``.

    Args:
        segment_map: (H, W) int, -1 = unlabelled.
        segment_ids: (S,) int segment ids that have a class (others, e.g. too small, stay ignored).
        classes: (S,) int class ids in ``[0, 255)``, excluding ``ignore_index``.
        ignore_index: value for every other pixel.

    Returns:
        (H, W) uint8.

    Raises:
        DriveSegmentError: length mismatch or class ids outside uint8 / equal to ``ignore_index``.
    """
    seg = np.asarray(segment_map)
    ids = np.asarray(segment_ids, dtype=np.int64).reshape(-1)
    cls = np.asarray(classes, dtype=np.int64).reshape(-1)
    if seg.ndim != 2:
        raise DriveSegmentError(f"segment_map must be (H, W), got shape {seg.shape}")
    if ids.shape != cls.shape:
        raise DriveSegmentError(f"{ids.size} segment ids but {cls.size} classes")
    if cls.size and (cls.min() < 0 or cls.max() > 255 or np.any(cls == ignore_index)):
        raise DriveSegmentError(f"classes must lie in [0, 255] and differ from ignore_index {ignore_index}")
    out = np.full(seg.shape, ignore_index, np.uint8)
    if ids.size == 0:
        return out
    top = int(max(ids.max(), seg.max(initial=-1))) + 1
    lut = np.full(top + 1, ignore_index, np.uint8)  # last slot: negative ids
    valid = ids >= 0
    lut[ids[valid]] = cls[valid]
    s = seg.astype(np.int64)
    return lut[np.where(s >= 0, s, top)]


# --------------------------------------------------------------------------------------------
# the labeller (used by the offline run and the ROS pseudo_label_node)
# --------------------------------------------------------------------------------------------
@dataclass
class FrameSegments:
    """Everything computed for one frame before clustering.

    Attributes:
        segment_map: (H, W) int32, -1 unlabelled.
        is_ground: (n,) bool, ground-cell ids of the segment map (``compute_segment_map``).
        segment_ids: (S,) int32 segments with a pooled feature.
        feats: (S, C) float32 raw (not normalised) mean features.
        pixel_counts: (S,) int64 pixels per segment.
    """

    segment_map: np.ndarray
    is_ground: np.ndarray
    segment_ids: np.ndarray
    feats: np.ndarray
    pixel_counts: np.ndarray


class PseudoLabeler:
    """Backbone + centroids + proposal/projection configs: one DriveFrame -> partial label map.

    Used offline by ``drive_segment_training.pseudo_labels.run_pseudo_labelling`` and online by the ROS ``pseudo_label_node`` so
    both write the same output.

    Args:
        backbone: a :class:`~drive_segment_ros.models.backbones.Backbone` (eval mode).
        centroids: (k, C) float32 pseudo-class centroids, or ``None`` before clustering.
        config: :class:`PseudoLabelConfig` (proposal / projection configs, feature options).
    """

    def __init__(self, backbone, centroids: Optional[np.ndarray] = None, config: Optional[PseudoLabelConfig] = None):
        self.backbone = backbone
        self.config = config or PseudoLabelConfig(backbone=getattr(backbone, "name", "custom"))
        self.proposal_config = self.config.proposal_config()
        self.projection_config = self.config.projection_config()
        self.centroids = None
        self._proposals_cache = None  # ((lidar_topic, lidar_stamp_ns, n_points), Proposals) of the last scan
        if centroids is not None:
            self.set_centroids(centroids)

    def set_centroids(self, centroids: np.ndarray) -> None:
        """Install (k, C) centroids; raises DriveSegmentError if C differs from the backbone's."""
        c = np.asarray(centroids, dtype=np.float32)
        dim = getattr(self.backbone, "embed_dim", c.shape[-1])
        if c.ndim != 2 or c.shape[1] != dim or not 1 <= c.shape[0] <= 255:
            raise DriveSegmentError(f"centroids must be (k<=255, {dim}) for backbone {getattr(self.backbone, 'name', '?')}, got {c.shape}")
        self.centroids = c

    @property
    def k(self) -> int:
        """Number of pseudo-classes (0 before clustering)."""
        return 0 if self.centroids is None else int(self.centroids.shape[0])

    def segment_map(self, frame: DriveFrame) -> Tuple[np.ndarray, np.ndarray]:
        """Proposals + projection (``compute_segment_map``): ``(segment map (H, W) int32, is_ground (n,) bool)``."""
        # Several cameras pair with the same scan: segment it once (cache keyed by topic + stamp).
        key = (frame.lidar_topic, int(frame.lidar_stamp_ns), int(frame.points.shape[0]))
        cached = self._proposals_cache if self._proposals_cache and self._proposals_cache[0] == key else None
        smap, is_ground, proposals = compute_segment_map(
            frame, self.proposal_config, self.projection_config, proposals=cached[1] if cached else None
        )
        self._proposals_cache = (key, proposals)
        return smap.astype(np.int32), np.asarray(is_ground, bool)

    def segment_features(self, frame: DriveFrame) -> FrameSegments:
        """Proposals + projection (``compute_segment_map``) and per-segment mean backbone features."""
        return self.segment_features_batch([frame])[0]

    def segment_features_batch(self, frames) -> List[FrameSegments]:
        """:meth:`segment_features` of several frames with one batched backbone forward per image size
        (:func:`image_features_batch`; ``config.bf16`` autocast on CUDA). Same results as one by one on CPU."""
        maps = [self.segment_map(f) for f in frames]
        feats = image_features_batch(self.backbone, [np.asarray(f.image) for f in frames], self.config.max_side,
                                     self.config.window, bf16=self.config.bf16)
        out = []
        for (smap, is_ground), (fmap, cell) in zip(maps, feats):
            ids, pooled, counts = pool_segment_features(fmap, smap, cell_size=cell, normalize=False)
            out.append(FrameSegments(smap, is_ground, ids, pooled, counts))
        return out

    def classify(self, segment_ids: np.ndarray, feats: np.ndarray, pixel_counts: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Cluster ids of the segments large enough to be labelled.

        Returns ``(kept segment_ids (S',), classes (S',) int64)``; raises DriveSegmentError without centroids.
        """
        if self.centroids is None:
            raise DriveSegmentError("PseudoLabeler has no centroids yet (run pseudo-label first or load with from_dir)")
        keep = np.asarray(pixel_counts) >= self.config.min_segment_pixels
        X = np.asarray(feats)[keep]
        if self.config.normalize_features:
            X = l2_normalize(X)
        return np.asarray(segment_ids)[keep], assign_pseudo_classes(X, self.centroids)

    def label_frame(self, frame: DriveFrame) -> Tuple[np.ndarray, np.ndarray]:
        """Partial pseudo-label map of one frame.

        Returns:
            ``(label_map (H, W) uint8, 255 = ignore; segment_map (H, W) int32, -1 = unlabelled)``.

        Raises:
            DriveSegmentError: no centroids, or errors from projection / backbone.
        """
        fs = self.segment_features(frame)
        ids, classes = self.classify(fs.segment_ids, fs.feats, fs.pixel_counts)
        return partial_label_map(fs.segment_map, ids, classes), fs.segment_map

    @classmethod
    def from_dir(cls, out_dir: Union[str, Path], backbone=None) -> "PseudoLabeler":
        """Load ``centroids.npy`` + ``pseudo_label_config.yaml`` written by :func:`run_pseudo_labelling`.

        Args:
            out_dir: the pseudo-label output directory.
            backbone: optional already built backbone (must match the config's name); otherwise
                built with ``build_backbone(config.backbone, config.backbone_weights)``.

        Raises:
            DriveSegmentError: missing files, or a backbone that differs from the recorded one.
        """
        data, centroids = read_labeler_files(out_dir)
        config = PseudoLabelConfig.from_dict(data)
        if backbone is None:
            backbone = build_backbone(config.backbone, weights=config.backbone_weights)
        elif getattr(backbone, "name", config.backbone) != config.backbone:
            raise DriveSegmentError(f"backbone {backbone.name!r} differs from the one that made the centroids ({config.backbone!r})")
        return cls(backbone, centroids, config)


def preview_image(rgb: np.ndarray, label_map: np.ndarray, k: int) -> np.ndarray:
    """Colour overlay of a partial label map (``visualization.palette`` / ``overlay``; ignored pixels dimmed).

    Args: rgb (H, W, 3) uint8; label_map (H, W) uint8 (255 = ignore); k the number of pseudo-classes.
    Returns (H, W, 3) uint8 RGB.
    """
    dimmed = np.where((label_map == IGNORE_INDEX)[..., None], (rgb * 0.5).astype(np.uint8), rgb)
    return overlay(dimmed, label_map, palette(max(int(k), 1)), alpha=0.6, ignore=IGNORE_INDEX)
