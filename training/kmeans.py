"""k-means pseudo-classes over the pooled segment features of all drives (Drive&Segment Sec. 3.2; offline).

Memory: the features of all segments of all drives are never held together. The batch run
(``pseudo_labels.fit_centroids``) streams every frame's cached features once through a
:class:`ReservoirSample` (Vitter's Algorithm R: a uniform random sample of at most ``capacity``
rows, seeded, independent of how the stream is split into frames), fits scikit-learn k-means on
that sample (:func:`fit_pseudo_classes`: ``KMeans``, or ``MiniBatchKMeans`` above
``minibatch_above`` rows), and assigns every segment to its nearest centroid in a second
streaming pass (``pseudo_labeling.assign_pseudo_classes``). Peak memory of the fit is
``capacity * C * 4`` bytes for the sample (default 100k rows: 38 MB at C = 96 (MobileNetV2),
154 MB at C = 384 (DINO ViT-S/16)) plus scikit-learn's working copies (about the same again,
and ``n_samples * k`` distances). When the stream holds at most ``capacity`` rows the sample is
all rows in stream order, so small runs cluster exactly as an in-memory k-means did.

Why scikit-learn and not faiss: scikit-learn is already a dependency of the offline extra,
deterministic for a seed on every platform, and at 100k x 384 x k=30 its Lloyd k-means takes
seconds, far below feature extraction; faiss (optional, not installed here) would pay off for
samples of millions of rows, which the bounded sample makes unnecessary.
"""
from __future__ import annotations

import logging
from typing import Optional

import numpy as np
from sklearn.cluster import KMeans, MiniBatchKMeans

from drive_segment_ros.types import DriveSegmentError

LOG = logging.getLogger(__name__)

__all__ = ["ReservoirSample", "fit_pseudo_classes"]


class ReservoirSample:
    """A uniform random sample of at most ``capacity`` rows of a stream of (m, C) blocks.

    Algorithm R (Vitter 1985): the first ``capacity`` rows are kept in order; row ``i >= capacity``
    replaces slot ``j ~ U{0..i}`` when ``j < capacity``. Draws come from
    ``numpy.random.default_rng(seed)`` in row order, so the sample depends only on the rows and
    their order, not on the block sizes. Memory: ``capacity * C`` float32.

    Args:
        capacity: maximum number of rows kept (>= 1).
        seed: random seed.

    Attributes:
        n_seen: rows offered so far.
    """

    def __init__(self, capacity: int, seed: int = 0) -> None:
        if int(capacity) < 1:
            raise DriveSegmentError(f"reservoir capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self.rng = np.random.default_rng(seed)
        self.n_seen = 0
        self._data: Optional[np.ndarray] = None
        self._n = 0

    def add(self, rows: np.ndarray) -> None:
        """Offer an (m, C) block of rows (float32 copies are kept).

        Raises:
            DriveSegmentError: a block whose width differs from the earlier ones.
        """
        X = np.asarray(rows, dtype=np.float32)
        if X.ndim != 2:
            raise DriveSegmentError(f"reservoir rows must be (m, C), got shape {X.shape}")
        m = X.shape[0]
        if m == 0:
            return
        if self._data is None:
            self._data = np.empty((self.capacity, X.shape[1]), np.float32)
        elif X.shape[1] != self._data.shape[1]:
            raise DriveSegmentError(f"reservoir rows have {X.shape[1]} columns, earlier ones {self._data.shape[1]}")
        fill = min(m, self.capacity - self._n)
        if fill > 0:
            self._data[self._n:self._n + fill] = X[:fill]
            self._n += fill
        rest = X[fill:]
        if rest.shape[0]:
            i = np.arange(self.n_seen + fill, self.n_seen + m, dtype=np.int64)
            j = self.rng.integers(0, i + 1)
            hit = np.nonzero(j < self.capacity)[0]
            if hit.size:
                # sequential semantics: a later row replacing the same slot wins
                slots = j[hit]
                _, last = np.unique(slots[::-1], return_index=True)
                keep = hit[::-1][last]
                self._data[j[keep]] = rest[keep]
        self.n_seen += m

    def sample(self) -> np.ndarray:
        """The (min(n_seen, capacity), C) float32 sample (a view; copy before changing it)."""
        if self._data is None:
            return np.zeros((0, 0), np.float32)
        return self._data[: self._n]


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
