"""Pseudo-classes from LiDAR segments and image features (Drive&Segment, stage 4).

Drive&Segment (Vobecky et al., ECCV 2022, Sec. 3.2 "Pseudo-labels"; IJCV 2025, Sec. 3.3): a
self-supervised backbone (DINO ViT-S/16 in the released model) gives a dense feature map; the
features are averaged over each projected LiDAR segment's mask; k-means over all segments of all
drives gives ``k`` pseudo-classes (about 30 in the paper); each image gets a *partial* label map
(segment pixels = the segment's cluster id, everything else = ignore 255) that the teacher is
trained on.

Pipeline of :func:`run_pseudo_labelling` (CLI ``drive-segment pseudo-label``)::

    bag -> DriveReader -> DriveFrame -> projection.compute_segment_map (proposals + projection)
        -> backbones.extract_features -> pool_segment_features   (cached per frame: resumable)
    all frames -> fit_pseudo_classes (k-means) -> assign_pseudo_classes -> partial_label_map

Output layout (read by ``training/datasets.py``; keep exactly)::

    OUT/index.json               {"k", "backbone", "backbone_description", "self_supervised",
                                  "ignore_index": 255, "frames": [{"name", "image", "label",
                                  "segments", "bag", "image_topic", "stamp_ns", "n_segments",
                                  "coverage"}, ...], ...}
    OUT/centroids.npy            (k, C) float32
    OUT/pseudo_label_config.yaml everything that made the centroids
    OUT/images/<name>.png        RGB copy of the camera image
    OUT/labels/<name>.png        uint8 partial label map, 255 = ignore
    OUT/segments/<name>.npy      int32 (H, W) segment map, -1 = unlabelled
    OUT/features/<name>.npz      per-frame cache (segment ids, pooled features, pixel counts)
    OUT/previews/<name>.png      colour overlay for people to look at
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from drive_segment_ros.types import DriveFrame, DriveSegmentError

LOG = logging.getLogger(__name__)

IGNORE_INDEX = 255
#: Bumped whenever the cached per-frame features would change meaning.
FEATURE_CACHE_VERSION = 1
DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent.parent / "config" / "pseudo_labels.yaml"


# --------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------
@dataclass
class PseudoLabelConfig:
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
    proposals: Dict[str, Any] = field(default_factory=dict)
    projection: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.k < 1 or self.k > 255:
            raise DriveSegmentError(f"pseudo-labels: k must be in 1..255 (uint8 labels, 255 = ignore), got {self.k}")
        if self.n_init < 1 or self.max_iter < 1 or self.min_segment_pixels < 1:
            raise DriveSegmentError("pseudo-labels: n_init, max_iter and min_segment_pixels must be >= 1")
        if self.max_side is not None and self.max_side < 16:
            raise DriveSegmentError(f"pseudo-labels: max_side must be >= 16 or null, got {self.max_side}")
        self.proposals = dict(self.proposals or {})
        self.projection = dict(self.projection or {})

    @classmethod
    def from_dict(cls, data: Optional[Mapping[str, Any]]) -> "PseudoLabelConfig":
        """Build from a mapping (unknown keys raise :class:`DriveSegmentError`); ``None`` = defaults."""
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise DriveSegmentError(f"pseudo-label config must be a mapping, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known - {"backbone_description", "self_supervised", "ignore_index"})
        if unknown:
            raise DriveSegmentError(f"pseudo-label config: unknown key(s) {unknown}; known: {sorted(known)}")
        try:
            return cls(**{k: v for k, v in data.items() if k in known})
        except (TypeError, ValueError) as exc:
            raise DriveSegmentError(f"pseudo-label config: {exc}") from exc

    @classmethod
    def from_yaml(cls, path: Union[str, Path]) -> "PseudoLabelConfig":
        """Load ``config/pseudo_labels.yaml``. Raises DriveSegmentError (missing / invalid file)."""
        from drive_segment_ros.config_io import load_yaml_mapping

        return cls.from_dict(load_yaml_mapping(path, "pseudo-label config"))

    def to_dict(self) -> Dict[str, Any]:
        """Plain dict (YAML / JSON serialisable)."""
        return asdict(self)

    def proposal_config(self):
        """The :class:`~drive_segment_ros.proposals.ProposalConfig` of this run."""
        from drive_segment_ros.proposals import ProposalConfig

        return ProposalConfig.from_dict(self.proposals)

    def projection_config(self):
        """The :class:`~drive_segment_ros.projection.ProjectionConfig` of this run."""
        from drive_segment_ros.projection import ProjectionConfig

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
    Hs, Ws = H, W
    if max_side is not None and max(H, W) > max_side:
        scale = max_side / float(max(H, W))
        Hs, Ws = max(1, round(H * scale)), max(1, round(W * scale))
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
    from drive_segment_ros.models.backbones import extract_features

    feats = extract_features(backbone, rgb, max_side=max_side, window=window)
    return feats, feature_cell_size(backbone, rgb.shape[:2], max_side)


def _as_feature_array(features) -> np.ndarray:
    try:
        import torch

        if isinstance(features, torch.Tensor):
            features = features.detach().cpu().float().numpy()
    except ImportError:  # pragma: no cover
        pass
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
    from scipy import sparse

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


# --------------------------------------------------------------------------------------------
# k-means pseudo-classes
# --------------------------------------------------------------------------------------------
def fit_pseudo_classes(
    feats: np.ndarray,
    k: int = 30,
    seed: int = 0,
    n_init: int = 10,
    max_iter: int = 300,
    minibatch_above: int = 50000,
    sample_weight: Optional[np.ndarray] = None,
) -> np.ndarray:
    """k-means over segment features -> pseudo-class centroids (Drive&Segment Sec. 3.2).

    scikit-learn ``KMeans(n_clusters=k, n_init, random_state=seed)`` (Lloyd, k-means++ init); for
    more than ``minibatch_above`` rows ``MiniBatchKMeans`` (Sculley 2010) with the same seeding.

    Args:
        feats: (M, C) float features (already L2-normalised if wanted).
        k: number of clusters (1..255).
        seed, n_init, max_iter: k-means parameters.
        minibatch_above: switch to ``MiniBatchKMeans`` above this many rows.
        sample_weight: optional (M,) non-negative weights (e.g. pixel counts).

    Returns:
        (k, C) float32 centroids.

    Raises:
        DriveSegmentError: non-finite input, bad k, or fewer (distinct) features than clusters.
    """
    from sklearn.cluster import KMeans, MiniBatchKMeans

    X = np.asarray(feats, dtype=np.float32)
    if X.ndim != 2:
        raise DriveSegmentError(f"features must be (M, C), got shape {X.shape}")
    if not np.all(np.isfinite(X)):
        raise DriveSegmentError("features contain NaN or inf")
    if not 1 <= int(k) <= 255:
        raise DriveSegmentError(f"k must be in 1..255, got {k}")
    M = X.shape[0]
    if M < k:
        raise DriveSegmentError(f"only {M} segment features for k={k} pseudo-classes; use more frames or a smaller k")
    n_distinct = np.unique(X, axis=0).shape[0]
    if n_distinct < k:
        raise DriveSegmentError(f"only {n_distinct} distinct segment features for k={k} pseudo-classes; use a smaller k")
    if M > minibatch_above:
        km = MiniBatchKMeans(n_clusters=int(k), random_state=int(seed), n_init=int(n_init), max_iter=int(max_iter),
                             batch_size=4096)
    else:
        km = KMeans(n_clusters=int(k), random_state=int(seed), n_init=int(n_init), max_iter=int(max_iter))
    km.fit(X, sample_weight=sample_weight)
    LOG.info("k-means: %d features x %d dims -> k=%d (inertia %.4g, %s)", M, X.shape[1], k, km.inertia_,
             type(km).__name__)
    return km.cluster_centers_.astype(np.float32)


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
# the labeller (shared with the ROS pseudo_label_node)
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

    Used offline by :func:`run_pseudo_labelling` and online by the ROS ``pseudo_label_node`` so
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

    def segment_features(self, frame: DriveFrame) -> FrameSegments:
        """Proposals + projection (``compute_segment_map``) and per-segment mean backbone features."""
        from drive_segment_ros.projection import compute_segment_map

        # Several cameras pair with the same scan: segment it once (cache keyed by topic + stamp).
        key = (frame.lidar_topic, int(frame.lidar_stamp_ns), int(frame.points.shape[0]))
        cached = self._proposals_cache if self._proposals_cache and self._proposals_cache[0] == key else None
        smap, is_ground, proposals = compute_segment_map(
            frame, self.proposal_config, self.projection_config, proposals=cached[1] if cached else None
        )
        self._proposals_cache = (key, proposals)
        feats, cell = image_features(self.backbone, np.asarray(frame.image), self.config.max_side, self.config.window)
        ids, pooled, counts = pool_segment_features(feats, smap, cell_size=cell, normalize=False)
        return FrameSegments(smap.astype(np.int32), np.asarray(is_ground, bool), ids, pooled, counts)

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
        import yaml

        out_dir = Path(out_dir)
        cfg_path, cen_path = out_dir / "pseudo_label_config.yaml", out_dir / "centroids.npy"
        if not cfg_path.is_file() or not cen_path.is_file():
            raise DriveSegmentError(f"{out_dir} holds no pseudo-label model (need pseudo_label_config.yaml and centroids.npy)")
        config = PseudoLabelConfig.from_dict(yaml.safe_load(cfg_path.read_text()) or {})
        if backbone is None:
            from drive_segment_ros.models.backbones import build_backbone

            backbone = build_backbone(config.backbone, weights=config.backbone_weights)
        elif getattr(backbone, "name", config.backbone) != config.backbone:
            raise DriveSegmentError(f"backbone {backbone.name!r} differs from the one that made the centroids ({config.backbone!r})")
        return cls(backbone, np.load(cen_path), config)


# --------------------------------------------------------------------------------------------
# the offline run
# --------------------------------------------------------------------------------------------
def _feature_cache_key(config: PseudoLabelConfig, backbone) -> str:
    """Hash of everything that changes the cached per-frame segments and features."""
    weights = config.backbone_weights
    wstat = None
    if weights and Path(weights).is_file():
        st = Path(weights).stat()
        wstat = [str(Path(weights).resolve()), st.st_size, int(st.st_mtime)]
    payload = {
        "version": FEATURE_CACHE_VERSION,
        "backbone": config.backbone,
        "weights": wstat or weights or getattr(backbone, "weight_source", None),
        "max_side": config.max_side,
        "window": config.window,
        "proposals": config.proposal_config().to_dict(),
        "projection": config.projection_config().to_dict(),
    }
    return hashlib.sha1(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def safe_name(text: str) -> str:
    """A file-name-safe version of ``text`` (runs of other characters -> ``_``; never empty)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "frame"


def write_png(path: Path, image: np.ndarray) -> None:
    """Write an (H, W, 3) uint8 RGB or (H, W) label image as PNG (parents created).

    Raises:
        DriveSegmentError: OpenCV could not write the file.
    """
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    img = image[..., ::-1] if image.ndim == 3 else image
    if not cv2.imwrite(str(path), np.ascontiguousarray(img)):
        raise DriveSegmentError(f"cannot write {path}")


def preview_image(rgb: np.ndarray, label_map: np.ndarray, k: int) -> np.ndarray:
    """Colour overlay of a partial label map (``visualization.palette`` / ``overlay``; ignored pixels dimmed)."""
    from drive_segment_ros.visualization import overlay, palette

    dimmed = np.where((label_map == IGNORE_INDEX)[..., None], (rgb * 0.5).astype(np.uint8), rgb)
    return overlay(dimmed, label_map, palette(max(int(k), 1)), alpha=0.6, ignore=IGNORE_INDEX)


#: Public names of the output helpers (the ROS pseudo_label_node writes the same files).


def _iter_frames(bag: Path, image_topics: Optional[Sequence[str]]):
    from drive_segment_ros.drives import DriveReader

    yield from DriveReader(bag, image_topics=list(image_topics) if image_topics else None, progress=False)


def run_pseudo_labelling(
    bags: Sequence[Union[str, Path]],
    out_dir: Union[str, Path],
    k: Optional[int] = None,
    backbone: Optional[str] = None,
    backbone_weights: Optional[str] = None,
    config: Union[None, str, Path, Mapping[str, Any], PseudoLabelConfig] = None,
    max_frames: Optional[int] = None,
    seed: Optional[int] = None,
    previews: bool = True,
    backbone_module=None,
) -> Dict[str, Any]:
    """Offline pseudo-labelling of drives (``drive-segment pseudo-label``).

    Explicit arguments override ``config`` (a YAML path, mapping or :class:`PseudoLabelConfig`;
    ``None`` = built-in defaults). Frames whose ``features/<name>.npz`` cache was written with the
    same backbone / proposal / projection settings are not recomputed (the run is resumable);
    a changed configuration invalidates the cache (logged). Clustering always runs over all frames.

    Args:
        bags: ROS 2 bag directories (read with ``drives.DriveReader``).
        out_dir: output directory (layout in the module docstring).
        k, backbone, backbone_weights, seed: override the config.
        max_frames: stop after this many frames in total (over all bags).
        previews: write ``previews/<name>.png`` overlays.
        backbone_module: an already built backbone (tests / the demo), else ``build_backbone``.

    Returns:
        the ``index.json`` content (dict).

    Raises:
        DriveSegmentError: no bags / frames, too few segments for k, bad config.
    """
    import yaml
    from tqdm import tqdm

    if isinstance(config, PseudoLabelConfig):
        cfg = PseudoLabelConfig.from_dict(config.to_dict())
    elif isinstance(config, (str, Path)):
        cfg = PseudoLabelConfig.from_yaml(config)
    else:
        cfg = PseudoLabelConfig.from_dict(config)
    overrides = {"k": k, "backbone": backbone, "backbone_weights": backbone_weights, "seed": seed}
    cfg = PseudoLabelConfig.from_dict({**cfg.to_dict(), **{a: v for a, v in overrides.items() if v is not None}})
    if not bags:
        raise DriveSegmentError("no bags given")
    bags = [Path(b) for b in bags]
    for b in bags:
        if not b.exists():
            raise DriveSegmentError(f"bag {b} not found")
    if max_frames is not None and max_frames < 1:
        raise DriveSegmentError(f"max_frames must be >= 1, got {max_frames}")

    if backbone_module is None:
        from drive_segment_ros.models.backbones import build_backbone

        backbone_module = build_backbone(cfg.backbone, weights=cfg.backbone_weights)
    else:
        name = getattr(backbone_module, "name", cfg.backbone)
        if name != cfg.backbone:
            LOG.info("using the given backbone module %r (config said %r)", name, cfg.backbone)
            cfg.backbone = name
    labeler = PseudoLabeler(backbone_module, None, cfg)
    key = _feature_cache_key(cfg, backbone_module)
    out = Path(out_dir)
    for sub in ("images", "labels", "segments", "features", "previews"):
        (out / sub).mkdir(parents=True, exist_ok=True)

    frames: List[Dict[str, Any]] = []
    cached = computed = invalidated = 0
    progress = tqdm(total=max_frames, desc="pseudo-label: segments + features", unit="frame")
    try:
        for bag in bags:
            if max_frames is not None and len(frames) >= max_frames:
                break
            for frame in _iter_frames(bag, cfg.image_topics):
                name = safe_name(f"{bag.name}__{frame.name}")
                cache = out / "features" / f"{name}.npz"
                seg_path, img_path = out / "segments" / f"{name}.npy", out / "images" / f"{name}.png"
                hit = False
                if cache.is_file() and seg_path.is_file() and img_path.is_file():
                    with np.load(cache) as z:
                        if str(z["cache_key"]) == key:
                            ids, feats, counts = z["segment_ids"], z["feats"], z["pixel_counts"]
                            hit = True
                        else:
                            if invalidated == 0:
                                LOG.info("feature cache in %s was made with another configuration; recomputing", out / "features")
                            invalidated += 1
                if hit:
                    cached += 1
                else:
                    fs = labeler.segment_features(frame)
                    ids, feats, counts = fs.segment_ids, fs.feats, fs.pixel_counts
                    write_png(img_path, np.asarray(frame.image))
                    np.save(seg_path, fs.segment_map)
                    np.savez(cache, segment_ids=ids, feats=feats, pixel_counts=counts, is_ground=fs.is_ground,
                             cache_key=np.array(key))
                    computed += 1
                frames.append({
                    "name": name, "image": f"images/{name}.png", "label": f"labels/{name}.png",
                    "segments": f"segments/{name}.npy", "bag": str(bag), "image_topic": frame.image_topic,
                    "stamp_ns": int(frame.image_stamp_ns), "lidar_stamp_ns": int(frame.lidar_stamp_ns),
                    "_ids": ids, "_feats": feats, "_counts": counts,
                })
                progress.update(1)
                if max_frames is not None and len(frames) >= max_frames:
                    break
    finally:
        progress.close()
    if not frames:
        raise DriveSegmentError(f"no camera/LiDAR frame pairs in {', '.join(map(str, bags))}")
    LOG.info("%d frames: %d computed, %d from cache", len(frames), computed, cached)

    # ---- k-means over the segments of all frames
    keep = [f["_counts"] >= cfg.min_segment_pixels for f in frames]
    X = np.concatenate([f["_feats"][m] for f, m in zip(frames, keep)], axis=0) if frames else np.zeros((0, 1))
    if cfg.normalize_features:
        X = l2_normalize(X)
    centroids = fit_pseudo_classes(X, cfg.k, cfg.seed, cfg.n_init, cfg.max_iter, cfg.minibatch_above)
    labeler.set_centroids(centroids)
    cluster_sizes = np.zeros(cfg.k, np.int64)

    for f in tqdm(frames, desc="pseudo-label: label maps", unit="frame"):
        seg = np.load(out / f["segments"])
        ids, classes = labeler.classify(f.pop("_ids"), f.pop("_feats"), f.pop("_counts"))
        label = partial_label_map(seg, ids, classes)
        write_png(out / f["label"], label)
        cluster_sizes += np.bincount(label[label != IGNORE_INDEX], minlength=256)[: cfg.k]
        f["n_segments"] = int(ids.size)
        f["coverage"] = float((label != IGNORE_INDEX).mean())
        if previews:
            import cv2

            rgb = cv2.imread(str(out / f["image"]), cv2.IMREAD_COLOR)[..., ::-1]
            write_png(out / "previews" / f"{f['name']}.png", preview_image(rgb, label, cfg.k))

    desc = getattr(backbone_module, "description", cfg.backbone)
    selfsup = bool(getattr(backbone_module, "self_supervised", False))
    np.save(out / "centroids.npy", centroids.astype(np.float32))
    record = {**cfg.to_dict(), "backbone_description": desc, "self_supervised": selfsup, "ignore_index": IGNORE_INDEX}
    record["proposals"] = cfg.proposal_config().to_dict()
    record["projection"] = cfg.projection_config().to_dict()
    (out / "pseudo_label_config.yaml").write_text(yaml.safe_dump(record, sort_keys=False))
    index = {
        "k": int(cfg.k),
        "backbone": cfg.backbone,
        "backbone_description": desc,
        "self_supervised": selfsup,
        "ignore_index": IGNORE_INDEX,
        "n_clustered_segments": int(X.shape[0]),
        "cluster_pixel_counts": cluster_sizes.tolist(),
        "frames": frames,
    }
    (out / "index.json").write_text(json.dumps(index, indent=1))
    used = int((cluster_sizes > 0).sum())
    LOG.info("wrote %s: %d frames, %d segments, %d/%d pseudo-classes used, mean coverage %.3f", out, len(frames),
             X.shape[0], used, cfg.k, float(np.mean([f["coverage"] for f in frames])))
    if not selfsup:
        LOG.warning("backbone %s is NOT self-supervised (%s); Drive&Segment uses DINO features", cfg.backbone, desc)
    return index


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------
def _cli(args: argparse.Namespace) -> int:
    config = args.config
    if config is None and DEFAULT_CONFIG_PATH.is_file():
        config = DEFAULT_CONFIG_PATH
    index = run_pseudo_labelling(
        args.bags, args.out, k=args.k, backbone=args.backbone, backbone_weights=args.backbone_weights,
        config=config, max_frames=args.max_frames, seed=args.seed, previews=not args.no_previews,
    )
    print(f"{len(index['frames'])} frames, k={index['k']}, backbone {index['backbone']} "
          f"(self-supervised: {index['self_supervised']}) -> {Path(args.out) / 'index.json'}")
    return 0


def add_cli(sub) -> None:
    """Register ``drive-segment pseudo-label BAG [BAG...] --out DIR ...``."""
    p = sub.add_parser(
        "pseudo-label",
        help="pool backbone features over LiDAR segments, k-means pseudo-classes, partial label PNGs",
        description="Drive&Segment pseudo-labels: per-segment mean backbone features, k-means over all "
                    "segments of all bags, partial label maps (255 = ignore). Resumable (features/ cache).",
    )
    p.add_argument("bags", nargs="+", metavar="BAG", help="ROS 2 bag directories")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("-k", type=int, default=None, help="number of pseudo-classes (config default 30)")
    p.add_argument("--backbone", default=None, help="backbone name (config default mobilenetv2_deepsort)")
    p.add_argument("--backbone-weights", default=None, metavar="FILE", help="local backbone weights file")
    p.add_argument("--config", default=None, help=f"pseudo-label YAML (default {DEFAULT_CONFIG_PATH.name} when present)")
    p.add_argument("--max-frames", type=int, default=None, metavar="N", help="stop after N frames in total")
    p.add_argument("--seed", type=int, default=None, help="k-means seed")
    p.add_argument("--no-previews", action="store_true", help="skip previews/<name>.png")
    p.set_defaults(func=_cli)
