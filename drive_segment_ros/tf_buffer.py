"""Time-aware transform buffer: the ``tf2`` lookup semantics without a ROS runtime.

A tree of frames (REP 105: ``map -> odom -> base_link -> <sensor frames>``) whose edges are either
static (``/tf_static``, valid at all times) or dynamic (``/tf``, a time series). Lookups follow
``tf2::BufferCore``:

* :meth:`TransformBuffer.lookup_transform` ``(target, source, time_ns)`` returns the (4, 4) float64
  ``T_target_source`` (maps points in ``source`` into ``target``; ``p_target = T @ p_source``) at one
  time, like ``tf2_ros.Buffer.lookup_transform(target, source, time)``;
* :meth:`TransformBuffer.lookup_transform_full` ``(target, target_time, source, source_time,
  fixed_frame)`` chains through a frame that does not move between the two times, like tf2's
  ``lookupTransform(target, target_time, source, source_time, fixed_frame)``:
  ``T = T_target_fixed(target_time) @ T_fixed_source(source_time)``. With ``fixed_frame = "odom"``
  and the camera / LiDAR stamps this is the ego-motion compensated extrinsic
  ``T_cam_base @ T_base(t_img)_odom @ T_odom_base(t_scan) @ T_base_lidar``.
* :meth:`TransformBuffer.lookup_transforms` is the vectorised form (one time per row) used to give
  every LiDAR point its own pose (deskewing).

Interpolation between the two samples around the requested time (tf2 ``TimeCache``): translation
linear, rotation spherical-linear (slerp, shortest arc). A request outside a dynamic edge's sample
range is an :class:`ExtrapolationError`, unless it is at most ``max_extrapolation_ns`` outside, in
which case the nearest sample is held (tf2 has no such tolerance; it lets a camera frame a few ms
before the first ``/tf`` sample be used, and is 0 by default). Quaternions are ``(x, y, z, w)``
(``geometry_msgs/Quaternion``), converted with :class:`scipy.spatial.transform.Rotation`.

This is the package's one transform tree: the offline drive reader (through
:class:`drive_segment_ros.ego_motion.EgoMotion`) fills it from a bag's ``/tf`` + ``/tf_static``, and
the camera + LiDAR nodes (:mod:`drive_segment_ros.nodes.camera_lidar`) fill it from ``/tf_static``
only (``static=True``; a static chain is looked up with no time). Each frame has one parent; a
transform that would close a loop is rejected when it is added. A static transform that gives a
frame a new parent is rejected (the offline reader keeps the first tree it saw) unless the buffer
is built with ``reparent_static=True``, where it replaces the old edge as tf2's static cache does
(what a node wants when a calibration is re-published).

Where ROS 2 is installed, :mod:`drive_segment_ros.ros.tf2_buffer` puts a ``tf2_ros.Buffer`` behind the
same lookups, and the tests cross-check the two; this class stays the one the package uses,
because it also does vectorised (per-point) lookups, the extrapolation tolerance and constant
mountings on ``/tf``. Core module: numpy / scipy only.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from drive_segment_ros.geometry import invert_transform, matrix_to_quaternion, validate_transform
from drive_segment_ros.types import DriveSegmentError

#: tf2's default cache length (``tf2::BufferCore::DEFAULT_CACHE_TIME``, 10 s)
DEFAULT_CACHE_NS = 10_000_000_000


class LookupError_(DriveSegmentError):  # noqa: N801 - keeps ``LookupError`` (builtin) unshadowed
    """No chain of transforms between the two frames (tf2 ``LookupException`` / ``ConnectivityException``)."""


class ExtrapolationError(DriveSegmentError):
    """The requested time lies outside a dynamic transform's samples by more than the tolerance
    (tf2 ``ExtrapolationException``)."""


TransformLookupError = LookupError_


def _clean(frame: str) -> str:
    frame = str(frame).strip()
    return frame[1:] if frame.startswith("/") else frame


def _fmt_s(ns: int) -> str:
    return f"{ns / 1e9:.6f}"


def slerp(q0: np.ndarray, q1: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Spherical-linear interpolation of unit quaternions, vectorised.

    Args:
        q0, q1: (N, 4) or (4,) float64 quaternions ``(x, y, z, w)``, unit norm.
        a: (N,) or scalar interpolation fractions in [0, 1] (0 -> q0, 1 -> q1).

    Returns:
        (N, 4) float64 unit quaternions along the shortest arc (``q1`` sign-flipped when ``q0 . q1 < 0``).
    """
    q0 = np.atleast_2d(np.asarray(q0, dtype=np.float64))
    q1 = np.atleast_2d(np.asarray(q1, dtype=np.float64))
    a = np.asarray(a, dtype=np.float64).reshape(-1, 1)
    dot = np.sum(q0 * q1, axis=1, keepdims=True)
    q1 = np.where(dot < 0, -q1, q1)
    dot = np.abs(dot)
    theta = np.arccos(np.clip(dot, -1.0, 1.0))
    sin_t = np.sin(theta)
    small = sin_t < 1e-9
    safe = np.where(small, 1.0, sin_t)
    w0 = np.where(small, 1.0 - a, np.sin((1.0 - a) * theta) / safe)
    w1 = np.where(small, a, np.sin(a * theta) / safe)
    q = w0 * q0 + w1 * q1
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def _quat_to_mats(q: np.ndarray) -> np.ndarray:
    """(N, 3, 3) rotation matrices of (N, 4) unit quaternions ``(x, y, z, w)`` (numpy; no per-call scipy overhead)."""
    q = np.atleast_2d(np.asarray(q, dtype=np.float64))
    x, y, z, w = q[:, 0], q[:, 1], q[:, 2], q[:, 3]
    R = np.empty((q.shape[0], 3, 3))
    R[:, 0, 0] = 1 - 2 * (y * y + z * z)
    R[:, 0, 1] = 2 * (x * y - z * w)
    R[:, 0, 2] = 2 * (x * z + y * w)
    R[:, 1, 0] = 2 * (x * y + z * w)
    R[:, 1, 1] = 1 - 2 * (x * x + z * z)
    R[:, 1, 2] = 2 * (y * z - x * w)
    R[:, 2, 0] = 2 * (x * z - y * w)
    R[:, 2, 1] = 2 * (y * z + x * w)
    R[:, 2, 2] = 1 - 2 * (x * x + y * y)
    return R


def _compose(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """(N, 4, 4) homogeneous transforms from (N, 3, 3) rotations and (N, 3) translations."""
    n = R.shape[0]
    T = np.zeros((n, 4, 4))
    T[:, :3, :3] = R
    T[:, :3, 3] = t
    T[:, 3, 3] = 1.0
    return T


@dataclass
class _Edge:
    """One parent -> child edge: ``T_parent_child`` samples (sorted by time) or one static value."""

    parent: str
    static: bool
    constant_as_static: bool = True
    times: List[int] = field(default_factory=list)
    trans: List[np.ndarray] = field(default_factory=list)
    quats: List[np.ndarray] = field(default_factory=list)
    _arrays: Optional[Tuple[np.ndarray, np.ndarray, np.ndarray]] = None

    _constant: Optional[bool] = None

    def insert(self, stamp: int, t: np.ndarray, q: np.ndarray) -> None:
        if self.static:
            self.times, self.trans, self.quats = [stamp], [t], [q]
            self._arrays, self._constant = None, None
            return
        i = bisect.bisect_left(self.times, stamp)
        if i < len(self.times) and self.times[i] == stamp:
            self.trans[i], self.quats[i] = t, q  # same stamp: replace (tf2 keeps the newest)
            self._arrays, self._constant = None, None
        elif i == len(self.times):  # the usual case: a newer sample; cached arrays are extended lazily
            self.times.append(stamp)
            self.trans.append(t)
            self.quats.append(q)
            if self._constant is not None and len(self.times) > 1:
                self._constant = self._constant and bool(np.array_equal(t, self.trans[0]) and np.array_equal(q, self.quats[0]))
        else:
            self.times.insert(i, stamp)
            self.trans.insert(i, t)
            self.quats.insert(i, q)
            self._arrays, self._constant = None, None

    def prune(self, older_than: int) -> None:
        if self.static or len(self.times) <= 2:
            return
        i = bisect.bisect_left(self.times, older_than)
        i = min(i, len(self.times) - 2)  # always keep two samples to interpolate from
        if i > 0:
            del self.times[:i], self.trans[:i], self.quats[:i]
            if self._arrays is not None and self._arrays[0].shape[0] >= i:
                self._arrays = tuple(a[i:] for a in self._arrays)
            else:
                self._arrays = None
            self._constant = None

    def arrays(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        n = len(self.times)
        if self._arrays is None or self._arrays[0].shape[0] > n:
            self._arrays = (np.asarray(self.times, dtype=np.int64), np.asarray(self.trans).reshape(-1, 3),
                            np.asarray(self.quats).reshape(-1, 4))
        elif self._arrays[0].shape[0] < n:  # append-only since the last call: convert the tail only
            m = self._arrays[0].shape[0]
            self._arrays = (np.concatenate([self._arrays[0], np.asarray(self.times[m:], dtype=np.int64)]),
                            np.concatenate([self._arrays[1], np.asarray(self.trans[m:]).reshape(-1, 3)]),
                            np.concatenate([self._arrays[2], np.asarray(self.quats[m:]).reshape(-1, 4)]))
        return self._arrays

    def is_constant(self) -> bool:
        """True for a dynamic edge with >= 2 samples that are all identical."""
        if len(self.times) < 2:
            return False
        if self._constant is None:
            _, tr, qs = self.arrays()
            self._constant = bool(np.all(tr == tr[0]) and np.all(qs == qs[0]))
        return self._constant

    def sample(self, times: np.ndarray, child: str, tolerance_ns: int) -> np.ndarray:
        """(N, 4, 4) ``T_parent_child`` at ``times`` (int64 ns)."""
        ts, tr, qs = self.arrays()
        n = times.shape[0]
        if self.static or (self.constant_as_static and self.is_constant()):
            T = _compose(_quat_to_mats(qs[:1]), tr[:1])
            return np.repeat(T, n, axis=0)
        lo, hi = int(ts[0]), int(ts[-1])
        tmin, tmax = int(times.min()), int(times.max())
        where = f"{self.parent} -> {child}"
        if tmin < lo - tolerance_ns:
            raise ExtrapolationError(
                f"lookup of {where} at {_fmt_s(tmin)} s would require extrapolation {(lo - tmin) / 1e9:.3f} s into the past "
                f"(earliest sample {_fmt_s(lo)} s, tolerance {tolerance_ns / 1e9:.3f} s)")
        if tmax > hi + tolerance_ns:
            raise ExtrapolationError(
                f"lookup of {where} at {_fmt_s(tmax)} s would require extrapolation {(tmax - hi) / 1e9:.3f} s into the future "
                f"(latest sample {_fmt_s(hi)} s, tolerance {tolerance_ns / 1e9:.3f} s)")
        if ts.shape[0] == 1:
            T = _compose(_quat_to_mats(qs[:1]), tr[:1])
            return np.repeat(T, n, axis=0)
        clamped = np.clip(times, lo, hi)
        i1 = np.clip(np.searchsorted(ts, clamped, side="left"), 1, ts.shape[0] - 1)
        i0 = i1 - 1
        span = (ts[i1] - ts[i0]).astype(np.float64)
        a = ((clamped - ts[i0]).astype(np.float64) / span)
        t = tr[i0] + a[:, None] * (tr[i1] - tr[i0])
        q = slerp(qs[i0], qs[i1], a)
        return _compose(_quat_to_mats(q), t)


@dataclass(frozen=True)
class EdgeInfo:
    """A snapshot of one ``parent -> child`` edge of a :class:`TransformBuffer` (public query result).

    Attributes:
        parent, child: frame names (no leading ``/``).
        static: the edge came on ``/tf_static`` (valid at all times).
        constant: a dynamic edge with >= 2 identical samples that the buffer treats as static
            (``constant_as_static``, a mounting republished on ``/tf``).
        n_samples: stored samples (1 for a static edge; dynamic ones are pruned to the cache length).
        first_ns, last_ns: earliest / latest stored stamp, integer ns (``None`` when there is none).
    """

    parent: str
    child: str
    static: bool
    constant: bool
    n_samples: int
    first_ns: Optional[int]
    last_ns: Optional[int]

    @property
    def moving(self) -> bool:
        """True for a dynamic edge whose samples differ (odometry): neither static nor held constant."""
        return not self.static and not self.constant


class TransformBuffer:
    """tf2-like transform buffer (static + dynamic edges, interpolation, extrapolation checks).

    Args:
        cache_ns: dynamic samples older than ``latest - cache_ns`` are dropped as new ones arrive
            (tf2 keeps 10 s); ``None`` keeps everything.
        max_extrapolation_ns: how far outside a dynamic edge's samples a lookup may be and still
            hold the nearest sample (0 = tf2 behaviour: raise).
        constant_as_static: a dynamic edge with at least two samples that are all identical (a
            sensor mounting republished on ``/tf``, as Foxglove's nuScenes converter does) is valid at
            all times, as if it came on ``/tf_static`` (tf2 would raise outside its samples).
        reparent_static: a static transform whose child already hangs off another frame by a
            static edge replaces that edge (tf2's static cache keeps the latest transform, parent
            included; the nodes use this for ``/tf_static``). ``False`` (default) rejects it as a
            second parent. A dynamic edge never changes parent.

    Raises:
        TransformLookupError (lookups): unknown frame or frames in different trees.
        ExtrapolationError (lookups): a requested time outside a dynamic edge's samples beyond the tolerance.
        DriveSegmentError (adding): a frame with two different parents (see ``reparent_static``), a
        transform that would close a loop, a non-rigid transform, a bad quaternion.
    """

    def __init__(self, cache_ns: Optional[int] = DEFAULT_CACHE_NS, max_extrapolation_ns: int = 0,
                 constant_as_static: bool = True, reparent_static: bool = False) -> None:
        self.cache_ns = None if cache_ns is None else int(cache_ns)
        self.max_extrapolation_ns = int(max_extrapolation_ns)
        self.constant_as_static = bool(constant_as_static)
        self.reparent_static = bool(reparent_static)
        self._edges: Dict[str, _Edge] = {}  # child -> edge to its parent

    @classmethod
    def from_messages(cls, messages: Iterable[Any], static: bool = False, **kwargs: Any) -> "TransformBuffer":
        """A buffer filled with every transform of an iterable of ``tf2_msgs/TFMessage`` (rosbags or rclpy).

        Args:
            static: the messages come from ``/tf_static``.
            **kwargs: constructor arguments.

        Raises:
            DriveSegmentError: as :meth:`add_tf_message`."""
        buf = cls(**kwargs)
        for msg in messages:
            buf.add_tf_message(msg, static=static)
        return buf

    # ------------------------------------------------------------------ filling
    def set_transform(self, T_parent_child: Any, parent: str, child: str, stamp_ns: int = 0, static: bool = False) -> None:
        """Add ``T_parent_child`` (4x4, maps child points into the parent frame) at ``stamp_ns``.

        Raises:
            DriveSegmentError: non-rigid / non-finite transform, parent == child, ``child`` already
            has another parent (a tf tree has one parent per frame; see ``reparent_static``), or the
            edge would close a loop.
        """
        parent, child = _clean(parent), _clean(child)
        if not parent or not child or parent == child:
            raise DriveSegmentError(f"transform needs two different non-empty frames, got {parent!r} -> {child!r}")
        T = validate_transform(T_parent_child, f"transform {parent} -> {child}")
        U, _, Vt = np.linalg.svd(T[:3, :3])  # re-orthonormalise (float32 inputs) before the quaternion
        self._insert(parent, child, int(stamp_ns), T[:3, 3].copy(), matrix_to_quaternion(U @ Vt), static)

    def set_transform_quat(self, translation: Sequence[float], quat_xyzw: Sequence[float], parent: str, child: str,
                           stamp_ns: int = 0, static: bool = False) -> None:
        """Add a transform given as translation (m) + quaternion ``(x, y, z, w)`` (normalised here)."""
        parent, child = _clean(parent), _clean(child)
        if not parent or not child or parent == child:
            raise DriveSegmentError(f"transform needs two different non-empty frames, got {parent!r} -> {child!r}")
        t = np.asarray(translation, dtype=np.float64).reshape(3)
        q = np.asarray(quat_xyzw, dtype=np.float64).reshape(4)
        nq = float(np.linalg.norm(q))
        if not (np.all(np.isfinite(t)) and np.all(np.isfinite(q))) or nq < 1e-9:
            raise DriveSegmentError(f"transform {parent} -> {child}: non-finite translation or invalid quaternion {q.tolist()}")
        self._insert(parent, child, int(stamp_ns), t, q / nq, static)

    def _closes_loop(self, parent: str, child: str) -> bool:
        """True when ``child`` is ``parent`` or one of its ancestors (a new ``parent -> child`` edge would loop)."""
        frame, steps = parent, 0
        while frame is not None and steps <= len(self._edges):
            if frame == child:
                return True
            e = self._edges.get(frame)
            frame, steps = (e.parent if e else None), steps + 1
        return False

    def _insert(self, parent: str, child: str, stamp: int, t: np.ndarray, q: np.ndarray, static: bool) -> None:
        edge = self._edges.get(child)
        replace = edge is not None and edge.parent != parent
        if replace and not (static and edge.static and self.reparent_static):
            raise DriveSegmentError(f"frame {child!r} has two parents: {edge.parent!r} and {parent!r}")
        if (edge is None or replace) and self._closes_loop(parent, child):
            raise DriveSegmentError(f"transform {parent} -> {child} would close a loop: {child!r} is already above {parent!r}")
        if edge is None or replace:
            edge = _Edge(parent=parent, static=bool(static), constant_as_static=self.constant_as_static)
            self._edges[child] = edge
        elif static and not edge.static:
            edge.static = True  # a /tf_static value wins over earlier /tf samples of the same edge
        edge.insert(stamp, t, q)
        if not edge.static and self.cache_ns is not None:
            edge.prune(edge.times[-1] - self.cache_ns)

    def add_transform_stamped(self, msg: Any, static: bool = False) -> int:
        """Add a ``geometry_msgs/TransformStamped`` (rosbags or rclpy message; ``header.frame_id`` is
        the parent, ``child_frame_id`` the child, ``transform`` is ``T_parent_child``).

        Returns:
            the transform's stamp, integer ns (``header.stamp``; ROS 1 ``secs`` / ``nsecs`` too).

        Raises:
            DriveSegmentError: as :meth:`set_transform_quat`."""
        st = msg.header.stamp
        sec = getattr(st, "sec", None)
        nsec = getattr(st, "nanosec", getattr(st, "nsec", 0))
        stamp = int(sec) * 1_000_000_000 + int(nsec) if sec is not None else int(getattr(st, "secs", 0)) * 1_000_000_000 + int(nsec)
        tr, rq = msg.transform.translation, msg.transform.rotation
        self.set_transform_quat((tr.x, tr.y, tr.z), (rq.x, rq.y, rq.z, rq.w), msg.header.frame_id, msg.child_frame_id,
                                stamp, static)
        return stamp

    def add_tf_message(self, msg: Any, static: bool = False) -> int:
        """Add every transform of a ``tf2_msgs/TFMessage``; returns how many were added.

        Raises:
            DriveSegmentError: on the first invalid transform (callers that want to skip bad ones
            call :meth:`add_transform_stamped` per transform)."""
        n = 0
        for ts in msg.transforms:
            self.add_transform_stamped(ts, static=static)
            n += 1
        return n

    # ------------------------------------------------------------------ queries
    @property
    def frames(self) -> List[str]:
        """Every known frame, sorted."""
        out = set(self._edges)
        out.update(e.parent for e in self._edges.values())
        return sorted(out)

    def __contains__(self, frame: str) -> bool:
        """True when ``frame`` (leading ``/`` ignored) is a child or a parent of some edge."""
        frame = _clean(frame)
        return frame in self._edges or any(e.parent == frame for e in self._edges.values())

    def root_path(self, frame: str) -> List[str]:
        """``[frame, parent, grandparent, ..., root]`` (frame names, leading ``/`` dropped).

        Raises:
            TransformLookupError: unknown frame."""
        frame = _clean(frame)
        if frame not in self:
            raise TransformLookupError(f"frame {frame!r} does not exist (known frames: {self.frames})")
        return self._root_path(frame)

    def edge(self, child: str) -> Optional[EdgeInfo]:
        """The edge ``parent(child) -> child`` as an :class:`EdgeInfo` (``None`` for a root or an unknown frame)."""
        child = _clean(child)
        e = self._edges.get(child)
        if e is None:
            return None
        constant = (not e.static) and e.constant_as_static and e.is_constant()
        return EdgeInfo(parent=e.parent, child=child, static=e.static, constant=constant, n_samples=len(e.times),
                        first_ns=e.times[0] if e.times else None, last_ns=e.times[-1] if e.times else None)

    def edges(self) -> List[EdgeInfo]:
        """Every edge as an :class:`EdgeInfo`, sorted by child frame (for ``inspect``)."""
        return [self.edge(c) for c in sorted(self._edges)]

    def parent_of(self, frame: str) -> Optional[str]:
        """The parent frame of ``frame`` (None for a root or an unknown frame)."""
        e = self._edges.get(_clean(frame))
        return e.parent if e else None

    def is_static_chain(self, target: str, source: str) -> bool:
        """True when every edge between ``target`` and ``source`` is static (raises like lookups)."""
        up, down = self._chain(_clean(target), _clean(source))
        return all(self._edges[c].static for c in up + down)

    def time_range(self, frame: str) -> Optional[Tuple[int, int]]:
        """(earliest, latest) stamp (ns) of the dynamic edge ``parent(frame) -> frame``; None if static / unknown."""
        e = self._edges.get(_clean(frame))
        if e is None or e.static or not e.times:
            return None
        return e.times[0], e.times[-1]

    def _root_path(self, frame: str) -> List[str]:
        path = [frame]
        seen = {frame}
        while frame in self._edges:
            frame = self._edges[frame].parent
            if frame in seen:
                raise DriveSegmentError(f"transform tree has a loop through {frame!r}")
            path.append(frame)
            seen.add(frame)
        return path

    def _chain(self, target: str, source: str) -> Tuple[List[str], List[str]]:
        """Children on the way up from ``source`` and from ``target`` to their common ancestor."""
        known = set(self.frames)
        for f in (target, source):
            if f not in known:
                raise TransformLookupError(f"frame {f!r} does not exist (known frames: {sorted(known)})")
        up_s = self._root_path(source)
        up_t = self._root_path(target)
        common = next((f for f in up_s if f in set(up_t)), None)
        if common is None:
            raise TransformLookupError(
                f"frames {target!r} and {source!r} are not connected (roots {up_t[-1]!r} and {up_s[-1]!r})")
        return up_s[: up_s.index(common)], up_t[: up_t.index(common)]

    def _lookup_many(self, target: str, source: str, times: np.ndarray, tolerance_ns: Optional[int]) -> np.ndarray:
        tol = self.max_extrapolation_ns if tolerance_ns is None else int(tolerance_ns)
        target, source = _clean(target), _clean(source)
        n = times.shape[0]
        out = np.repeat(np.eye(4)[None], n, axis=0)
        if target == source:
            if target not in set(self.frames):
                raise TransformLookupError(f"frame {target!r} does not exist (known frames: {self.frames})")
            return out
        from_source, from_target = self._chain(target, source)
        T_common_source = out.copy()
        for child in from_source:  # walk up: T_parent_source = T_parent_child @ T_child_source
            T_common_source = self._edges[child].sample(times, child, tol) @ T_common_source
        T_common_target = out.copy()
        for child in from_target:
            T_common_target = self._edges[child].sample(times, child, tol) @ T_common_target
        return invert_transform(T_common_target) @ T_common_source

    def _latest_common_time(self, target: str, source: str) -> int:
        up, down = self._chain(_clean(target), _clean(source))
        ends = [self._edges[c].times[-1] for c in up + down if not self._edges[c].static]
        return min(ends) if ends else 0

    def lookup_transform(self, target: str, source: str, time_ns: Optional[int] = None,
                         tolerance_ns: Optional[int] = None) -> np.ndarray:
        """(4, 4) float64 ``T_target_source`` at ``time_ns`` (int ns; ``None`` or 0 = the latest time
        every dynamic edge of the chain has, like tf2's ``Time(0)``).

        Raises:
            TransformLookupError / ExtrapolationError (see the class)."""
        if not time_ns:
            time_ns = self._latest_common_time(target, source)
        return self._lookup_many(target, source, np.array([int(time_ns)], dtype=np.int64), tolerance_ns)[0]

    def lookup_transforms(self, target: str, source: str, times_ns: Any, tolerance_ns: Optional[int] = None) -> np.ndarray:
        """(N, 4, 4) float64 ``T_target_source`` at each of ``times_ns`` ((N,) int64 ns), vectorised."""
        times = np.asarray(times_ns, dtype=np.int64).reshape(-1)
        if times.size == 0:
            return np.zeros((0, 4, 4))
        return self._lookup_many(target, source, times, tolerance_ns)

    def lookup_transform_full(self, target: str, target_time_ns: int, source: str, source_time_ns: int,
                              fixed_frame: str, tolerance_ns: Optional[int] = None) -> np.ndarray:
        """(4, 4) ``T_target(target_time)_source(source_time)`` through ``fixed_frame`` (assumed not to
        move between the two times): ``T_target_fixed(target_time) @ T_fixed_source(source_time)``.

        tf2 ``lookupTransform(target, target_time, source, source_time, fixed_frame)``."""
        T_fixed_source = self.lookup_transform(fixed_frame, source, source_time_ns or None, tolerance_ns)
        T_target_fixed = self.lookup_transform(target, fixed_frame, target_time_ns or None, tolerance_ns)
        return T_target_fixed @ T_fixed_source

    def can_transform(self, target: str, source: str, time_ns: Optional[int] = None,
                      tolerance_ns: Optional[int] = None) -> bool:
        """True when :meth:`lookup_transform` would succeed."""
        try:
            self.lookup_transform(target, source, time_ns, tolerance_ns)
        except DriveSegmentError:
            return False
        return True
