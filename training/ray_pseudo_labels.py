"""Pseudo-labelling of many drives on Ray (``drive-segment pseudo-label ... --ray``).

The same shard functions as the one-process run (:mod:`drive_segment_training.pseudo_labels`),
spread over Ray actors::

    driver                                   actors (one model each; one per GPU when there are GPUs)
    ------                                   ------------------------------------------------------
    shards = bags (or bag time ranges)  -->  pass 1: process_shard(bag_shard_frames(bag, t0, t1), ...)
    fit_centroids (bounded reservoir)   <--  ShardResult per shard
    run_key                             -->  pass 2: label_shard(out, shard, centroids, run_dir)
    finalize_run (index.json last)      <--  LabelResult per shard

Results equal the one-process run's: every shard writes only its own files
(``frames/<shard>.jsonl``, per-frame files named by bag and frame), the driver passes the shards
to :func:`fit_centroids` / :func:`finalize_run` in the order of the bags given (not the order in
which they finished), and every frame's computation is the one of the one-process run. With one
shard per bag (the default) the output directory is byte-for-byte the one of
``run_pseudo_labelling`` when the workers use the same device type and torch thread count (CPU
float reductions depend on the thread count; ``cpus_per_worker`` sets it). Time-range shards
(``shards_per_bag > 1``) give the same frames, features, centroids and label maps, under other
shard ids (``index.json["shards"]``, the run directory name).

Ray: an optional dependency (the ``scale`` extra: ``pip install -e .[scale]``). Without
``address`` a local Ray is started in this process (``num_cpus = workers * cpus_per_worker``, no
dashboard) and shut down at the end; ``address="auto"`` or ``"ray://host:10001"`` joins a running
cluster. On a cluster the output directory must be on a file system every node sees at the same
path (NFS, a shared volume), the bags too, and this package must be installed on every node.

Memory: each actor holds one model and the shard's frames in flight (``batch_size`` + ``prefetch``);
the driver holds only the k-means sample (``kmeans_sample`` rows).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
import torch

from drive_segment_ros.models.backbones import build_backbone
from drive_segment_ros.pseudo_labeling import PseudoLabelConfig
from drive_segment_ros.ros.bags import open_bag
from drive_segment_ros.types import DriveSegmentError
from drive_segment_training import pseudo_labels as pl

LOG = logging.getLogger(__name__)

__all__ = ["RAY_MISSING", "Shard", "add_cli", "bag_time_shards", "import_ray", "run_pseudo_labelling_ray"]

RAY_MISSING = ("--ray needs Ray, which is not installed: pip install 'drive_segment_ros[scale]' "
               "(or pip install ray)")


def import_ray():
    """The ``ray`` module, or DriveSegmentError with the one-line install hint (:data:`RAY_MISSING`)."""
    try:
        import ray  # optional heavy dependency (the `scale` extra)
    except ImportError:
        raise DriveSegmentError(RAY_MISSING) from None
    return ray


@dataclass(frozen=True)
class Shard:
    """One unit of work: a bag, or the frames of a bag whose image stamp is in ``[start_ns, end_ns)``.

    ``bag`` is the absolute path the workers read; ``source`` the path as given (recorded in the
    index, as the one-process run records it; default ``bag``).
    """

    bag: str
    start_ns: Optional[int] = None
    end_ns: Optional[int] = None
    source: Optional[str] = None

    @property
    def shard_id(self) -> str:
        """:func:`pseudo_labels.shard_id_for` of the shard."""
        return pl.shard_id_for(self.bag, self.start_ns, self.end_ns)


def bag_time_shards(bag: Union[str, Path], n: int, source: Optional[str] = None) -> List[Shard]:
    """Split ``bag`` into ``n`` shards of equal duration (by the bag's message time range).

    Each time-range shard reads the bag from its start and keeps the frames of its range
    (:func:`pseudo_labels.bag_shard_frames`), so splitting a bag costs extra reading; prefer one
    shard per bag when there are at least as many bags as workers.

    Raises:
        DriveSegmentError: ``n < 1`` or an unreadable bag.
    """
    if n < 1:
        raise DriveSegmentError(f"shards per bag must be >= 1, got {n}")
    if n == 1:
        return [Shard(str(bag), source=source)]
    reader = open_bag(Path(bag))
    try:
        t0, t1 = int(reader.start_time), int(reader.end_time)
    finally:
        reader.close()
    edges = [t0 + (t1 + 1 - t0) * i // n for i in range(n + 1)]
    edges[0], edges[-1] = None, None  # first / last shard open-ended: nothing falls outside
    return [Shard(str(bag), edges[i], edges[i + 1], source) for i in range(n)]


class _ShardWorker:
    """A Ray actor: one backbone (on its GPU when Ray gave it one), runs pass 1 and pass 2 of shards."""

    def __init__(self, config: Dict[str, Any], backbone_module=None, threads: int = 1, cwd: Optional[str] = None) -> None:
        if cwd and os.path.isdir(cwd):  # relative bag paths resolve as on the driver (recorded in image_ref)
            os.chdir(cwd)

        torch.set_num_threads(max(1, int(threads)))
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.cfg = PseudoLabelConfig.from_dict(config)
        if backbone_module is None:
            backbone_module = build_backbone(self.cfg.backbone, weights=self.cfg.backbone_weights)
        import ray  # optional heavy dependency (the `scale` extra; present inside a Ray worker)

        self.device = "cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu"
        self.backbone = backbone_module.to(self.device).eval()
        self.labeler = pl.PseudoLabeler(self.backbone, None, self.cfg)

    def info(self) -> Dict[str, Any]:
        return {"feature_key": pl.feature_cache_key(self.cfg, self.backbone), "device": self.device,
                "description": getattr(self.backbone, "description", self.cfg.backbone),
                "self_supervised": bool(getattr(self.backbone, "self_supervised", False)),
                "node": os.uname().nodename, "pid": os.getpid()}

    def process(self, shard: Shard, out_dir: str, reading: Optional[Mapping[str, Any]] = None):
        """Pass 1 of ``shard``; ``reading``: the :func:`pseudo_labels.bag_shard_frames` keyword arguments
        (``image_topics``, ``reader_options``; default: the config's image topics)."""
        reading = dict(reading) if reading else {"image_topics": self.cfg.image_topics}
        frames = pl.bag_shard_frames(shard.bag, shard.start_ns, shard.end_ns, **reading)
        return pl.process_shard(frames, out_dir, shard.shard_id, source=Path(shard.source or shard.bag), config=self.cfg,
                                labeler=self.labeler, progress=False)

    def label(self, shard_id: str, out_dir: str, centroids: np.ndarray, run_dir: str):
        return pl.label_shard(out_dir, shard_id, self.cfg, centroids, run_dir, progress=False)


def _ordered_map(pool, method: str, items: Sequence[Any], *args: Any) -> List[Any]:
    """``[actor.method(item, *args) for item in items]`` over an ActorPool; results in ``items`` order."""
    return list(pool.map(lambda actor, item: getattr(actor, method).remote(item, *args), list(items)))


def run_pseudo_labelling_ray(
    bags: Sequence[Union[str, Path]],
    out_dir: Union[str, Path],
    k: Optional[int] = None,
    backbone: Optional[str] = None,
    backbone_weights: Optional[str] = None,
    config: Union[None, str, Path, Mapping[str, Any], PseudoLabelConfig] = None,
    seed: Optional[int] = None,
    previews: bool = True,
    address: Optional[str] = None,
    num_workers: Optional[int] = None,
    cpus_per_worker: int = 1,
    gpus_per_worker: Optional[float] = None,
    shards_per_bag: int = 1,
    backbone_module=None,
    ray_init_kwargs: Optional[Mapping[str, Any]] = None,
    image_topics: Optional[Sequence[str]] = None,
    reader_options: Optional[Mapping[str, Any]] = None,
) -> Dict[str, Any]:
    """:func:`pseudo_labels.run_pseudo_labelling` with the shards on Ray actors.

    Args:
        bags, out_dir, k, backbone, backbone_weights, config, seed, previews: as
            :func:`~drive_segment_training.pseudo_labels.run_pseudo_labelling`.
        address: ``None``: start a local Ray in this process (shut down at the end); else the
            cluster to join (``"auto"``, ``"ray://head:10001"``, ``"head:6379"``).
        num_workers: actors (models); default: the cluster's GPUs when ``gpus_per_worker`` > 0,
            else ``min(shards, CPUs / cpus_per_worker)``; never more than the shards.
        cpus_per_worker: CPUs reserved per actor (= its torch threads).
        gpus_per_worker: GPUs per actor; ``None``: 1 when the cluster has GPUs, else 0.
        shards_per_bag: split each bag into this many time ranges (:func:`bag_time_shards`).
        backbone_module: a built backbone shipped to every actor (tests); default: each actor
            builds ``config.backbone``.
        ray_init_kwargs: extra ``ray.init`` arguments (e.g. ``runtime_env``).
        image_topics: image topics to read (default: ``config.image_topics``, else every camera).
        reader_options: further ``DriveReader`` arguments (``camera_info_topics``, ``calibration``,
            ``lidar_topic``, ``max_dt_ms``, ``ego_motion``), as the one-process CLI passes them
            (:func:`pseudo_labels.frame_reading_from_args`); relative paths resolve against the
            driver's working directory.

    Returns:
        the ``index.json`` content (``frames`` streamed), as the one-process run.

    Raises:
        DriveSegmentError: Ray missing (:data:`RAY_MISSING`), no / duplicate bags, no frames, actors
        that disagree on the feature settings (e.g. GPU and CPU workers mixed), a failed shard
        (its error on one line).
        OSError: file-system errors (a rerun resumes, as the one-process run).
    """
    ray = import_ray()
    cfg, bag_paths = pl.prepare_run(bags, config, k=k, backbone=backbone, backbone_weights=backbone_weights, seed=seed,
                                    previews=previews, backbone_module=backbone_module)
    reading = {"image_topics": list(image_topics) if image_topics else cfg.image_topics,
               "reader_options": dict(reader_options or {})}
    shards = [s for b in bag_paths for s in bag_time_shards(b.resolve(), shards_per_bag, source=str(b))]
    out = Path(out_dir).resolve()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DriveSegmentError(f"cannot create {out}: {exc}") from exc

    started = False
    if not ray.is_initialized():
        kwargs: Dict[str, Any] = dict(include_dashboard=False, ignore_reinit_error=True, log_to_driver=True)
        if address is None:
            n_local = num_workers or min(len(shards), os.cpu_count() or 1)
            kwargs["num_cpus"] = max(1, int(n_local)) * max(1, int(cpus_per_worker))
        kwargs.update(ray_init_kwargs or {})
        try:
            ray.init(address=address, **kwargs)
        except Exception as exc:  # ConnectionError, RuntimeError, ValueError from ray.init
            where = f"the Ray cluster at {address}" if address else "a local Ray"
            raise DriveSegmentError(f"cannot start {where}: {str(exc).splitlines()[0] if str(exc) else exc!r}") from exc
        started = True
    try:
        resources = ray.cluster_resources()
        if gpus_per_worker is None:
            gpus_per_worker = 1.0 if resources.get("GPU", 0) >= 1 else 0.0
        if num_workers is None:
            if gpus_per_worker > 0:
                num_workers = int(resources.get("GPU", 0) // gpus_per_worker)
            else:
                num_workers = int(resources.get("CPU", 1) // max(1, cpus_per_worker))
        num_workers = max(1, min(int(num_workers), len(shards)))
        LOG.info("Ray: %d shards on %d workers (%d CPU, %.2g GPU each), cluster %s", len(shards), num_workers,
                 cpus_per_worker, gpus_per_worker, {k: v for k, v in resources.items() if k in ("CPU", "GPU")})
        from ray.util import ActorPool  # optional heavy dependency (the `scale` extra)

        actor_cls = ray.remote(num_cpus=cpus_per_worker, num_gpus=gpus_per_worker)(_ShardWorker)
        bb_ref = ray.put(backbone_module) if backbone_module is not None else None
        actors = [actor_cls.remote(cfg.to_dict(), bb_ref, cpus_per_worker, os.getcwd()) for _ in range(num_workers)]
        try:
            infos = _get(ray, [a.info.remote() for a in actors])
            keys = {i["feature_key"] for i in infos}
            if len(keys) != 1:
                raise DriveSegmentError("Ray workers compute features with different settings (devices "
                                        f"{sorted({i['device'] for i in infos})}); use only GPU or only CPU workers")
            key = keys.pop()
            pool = ActorPool(actors)
            results = _run(ray, lambda: _ordered_map(pool, "process", shards, str(out), reading), "pass 1")
            for res in results:
                LOG.info("shard %s: %d frames (%d computed, %d from cache)", res.shard_id, res.n_frames,
                         res.n_computed, res.n_cached)
            shard_ids = [r.shard_id for r in results if r.n_frames]
            if not shard_ids:
                raise DriveSegmentError(f"no camera/LiDAR frame pairs in {', '.join(map(str, bag_paths))}")
            centroids, n_clustered = pl.fit_centroids(out, cfg, shard_ids)
            run = out / pl.RUNS_DIR / pl.run_key(cfg, key, shard_ids)
            labels = _run(ray, lambda: _ordered_map(pool, "label", shard_ids, str(out), centroids, str(run)), "pass 2")
        finally:
            for a in actors:
                ray.kill(a)
        index = pl.finalize_run(out, cfg, centroids, run, shard_ids, labels, n_clustered=n_clustered, feature_key=key,
                                backbone_description=infos[0]["description"],
                                self_supervised=infos[0]["self_supervised"])
    finally:
        if started:
            ray.shutdown()
    LOG.info("wrote %s: %d frames from %d shards on %d Ray workers, %d segments clustered", out, index["n_frames"],
             len(shard_ids), num_workers, n_clustered)
    return index


def _get(ray, refs):
    return _run(ray, lambda: ray.get(refs), "worker start-up")


def _run(ray, fn, what: str):
    """Run ``fn``; a task / actor error becomes DriveSegmentError (or the OSError it was) with one line."""
    try:
        return fn()
    except (ray.exceptions.RayTaskError, ray.exceptions.RayActorError) as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, (DriveSegmentError, OSError)):
            raise cause from None
        lines = [ln for ln in str(exc).splitlines() if ln.strip()]
        raise DriveSegmentError(f"Ray {what} failed: {lines[-1] if lines else type(exc).__name__}") from exc


# --------------------------------------------------------------------------------------------
# CLI: --ray options of `drive-segment pseudo-label`
# --------------------------------------------------------------------------------------------
def _cli_ray(args) -> int:
    if getattr(args, "max_frames", None) is not None:
        raise DriveSegmentError("--max-frames is not supported with --ray (shards run in parallel); "
                                "use it without --ray, or pass fewer bags")
    cfg = pl.config_from_args(args)  # the same settings and bag reading as the one-process command
    index = run_pseudo_labelling_ray(
        args.bags, args.out, k=args.k, backbone=args.backbone, backbone_weights=args.backbone_weights,
        config=cfg, **pl.frame_reading_from_args(args, cfg), seed=args.seed, previews=not args.no_previews, address=args.ray_address,
        num_workers=args.ray_workers, cpus_per_worker=args.ray_cpus_per_worker, gpus_per_worker=args.ray_gpus_per_worker,
        shards_per_bag=args.ray_shards_per_bag,
    )
    print(f"{len(index['frames'])} frames, k={index['k']}, backbone {index['backbone']} "
          f"(self-supervised: {index['self_supervised']}) -> {Path(args.out) / 'index.json'} (Ray)")
    return 0


def add_cli(sub) -> None:
    """Add the ``--ray`` options to the ``pseudo-label`` subcommand (registered before by ``pseudo_labels``)."""
    p = sub.choices.get("pseudo-label") if hasattr(sub, "choices") else None
    if p is None:
        return
    g = p.add_argument_group("Ray (many drives, many GPUs; the `scale` extra)")
    g.add_argument("--ray", action="store_true",
                   help="run the shards (bags) on Ray actors, one model each; a local Ray unless --ray-address")
    g.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="join this Ray cluster (auto, ray://head:10001, head:6379); implies --ray")
    g.add_argument("--ray-workers", type=int, default=None, metavar="N",
                   help="actors (default: one per GPU, else one per CPU, at most one per shard)")
    g.add_argument("--ray-cpus-per-worker", type=int, default=1, metavar="N", help="CPUs (torch threads) per actor")
    g.add_argument("--ray-gpus-per-worker", type=float, default=None, metavar="G",
                   help="GPUs per actor (default 1 when the cluster has GPUs, else 0)")
    g.add_argument("--ray-shards-per-bag", type=int, default=1, metavar="N",
                   help="split every bag into N time ranges (more shards than bags)")
    one_process = p.get_default("func")

    def dispatch(args) -> int:
        if args.ray or args.ray_address:
            return _cli_ray(args)
        return one_process(args)

    p.set_defaults(func=dispatch)
