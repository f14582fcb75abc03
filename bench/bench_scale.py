#!/usr/bin/env python3
"""``make bench-scale``: the offline pipeline on a long drive built from the real frames (issue 9).

1. Generates a long drive from the real samples in ``$DRIVE_SEGMENT_DATA`` (default ``../shared/data``):
   the nuScenes keyframe (6 cameras, LIDAR_TOP with rings, original JPEG bytes) and the KITTI
   frame (camera PNG bytes, Velodyne), repeated at 10 Hz with small jitter of the stamps
   (+-2 ms), of the LiDAR pose (the scan rotated by up to +-0.5 deg and moved by up to +-5 cm) and
   of the ego pose (``/tf`` ``odom -> base_link``, 10 m/s forward), written as ROS 2 mcap bags of
   ``--frames-per-bag`` camera frames each (nuScenes and KITTI bags alternate). Nothing is copied
   into the repository; the bags go to ``--work`` (default ``/tmp/bench_scale``).
2. Pseudo-labels the first 200 / 1,000 / 2,000 frames (``--frames``), each run in a fresh process
   into the same output directory (frames of a previous run come from the resumable cache): pass 1
   (decode + proposals + features), k-means on the bounded reservoir sample, pass 2 (label maps);
   frames/s per stage, the process's peak RSS, bytes per camera image on disk.
3. Ray: pass 1 + k-means + pass 2 of ``--ray-frames`` frames (whole bags) with 1 and with 2 local
   workers (one model each): throughput ratio.
4. DDP: ``--ddp-iters`` teacher steps on the pseudo-labels with 1 and with 2 processes (gloo, CPU,
   the same global batch): throughput ratio.

Prints one table and writes ``<work>/bench_scale.json``. Short run:
``python bench/bench_scale.py --frames 20,50,100 --ray-frames 24 --ddp-iters 6``. Not part of the tests.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from drive_segment_ros.geometry import invert_transform  # noqa: E402
from drive_segment_ros.ros.camera_info import camera_info_msg, transform_stamped  # noqa: E402
from drive_segment_ros.ros.image import encoded_to_compressed_msg  # noqa: E402
from drive_segment_ros.ros.msgtypes import rosbags_types  # noqa: E402
from drive_segment_ros.ros.pointcloud2 import points_to_pointcloud2  # noqa: E402
from drive_segment_ros.types import CameraModel  # noqa: E402
from drive_segment_training.data import data_dir  # noqa: E402
from drive_segment_training.importers import NUSCENES_CAMERAS, _BagWriter, _nuscenes_stamp, kitti_T_cam_lidar  # noqa: E402

PERIOD_NS = 100_000_000  # 10 Hz
SPEED_MPS = 10.0


# ------------------------------------------------------------------------------------------ drive
class _StreamingBagWriter(_BagWriter):
    """The importers' bag writer, writing each message at once (messages must come in time order):
    a long drive is never held in memory."""

    def __init__(self, out_bag: Path) -> None:
        super().__init__(out_bag, "mcap", overwrite=True)
        self.writer.open()

    def add(self, topic: str, stamp_ns: int, msg: Any) -> None:
        self.write(topic, stamp_ns, msg)

    def close(self) -> None:
        self.writer.close()


def _jitter_points(points: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Small rigid jitter of a scan: yaw +-0.5 deg, translation +-5 cm (x y z columns only)."""
    yaw = np.deg2rad(rng.uniform(-0.5, 0.5))
    c, s = np.cos(yaw), np.sin(yaw)
    R = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], np.float32)
    out = points.copy()
    out[:, :3] = points[:, :3] @ R.T + rng.uniform(-0.05, 0.05, 3).astype(np.float32)
    return out


def _ego_pose(t_s: float, rng: np.random.Generator) -> np.ndarray:
    T = np.eye(4)
    T[0, 3] = SPEED_MPS * t_s + rng.normal(0, 0.02)
    T[1, 3] = rng.normal(0, 0.02)
    return T


def _write_nuscenes_bag(src: Path, out: Path, n_sweeps: int, t0_ns: int, seed: int) -> int:
    calib = json.loads((src / "calib.json").read_text())
    lidar = calib["lidar"]
    _, lidar_stamp0 = _nuscenes_stamp(lidar["file"])
    scan = np.fromfile(src / lidar["file"], np.float32).reshape(-1, 5)
    T_ego_lidar = np.asarray(lidar["lidar2ego"], np.float64)
    rng = np.random.default_rng(seed)
    w = _StreamingBagWriter(out)
    t = w.types
    cams = []
    for name in [c for c in NUSCENES_CAMERAS if c in calib["cameras"]]:
        cam = calib["cameras"][name]
        data = (src / cam["image_file"]).read_bytes()
        h, wd = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED).shape[:2]
        _, stamp = _nuscenes_stamp(cam["image_file"])
        model = CameraModel(K=np.asarray(cam["cam2img"], np.float64), D=np.zeros(5), width=wd, height=h,
                            frame_id=f"{name}_optical")
        cams.append((name, data, model, stamp - lidar_stamp0, np.asarray(cam["cam2ego"], np.float64)))
    statics = [transform_stamped(T_ego_lidar, "base_link", "LIDAR_TOP", t0_ns, t)]
    statics += [transform_stamped(c2e, "base_link", model.frame_id, t0_ns, t) for _, _, model, _, c2e in cams]
    w.add("/tf_static", t0_ns, t.TFMessage(transforms=statics))
    for name, _, model, _, _ in cams:
        w.add(f"/nuscenes/{name}/camera_info", t0_ns, camera_info_msg(model, t0_ns, t))
    for i in range(n_sweeps):
        t_lidar = t0_ns + (i + 1) * PERIOD_NS
        msgs = []
        for name, data, model, offset, _ in cams:  # cameras before the scan (offsets 0..-43 ms), +-2 ms jitter
            stamp = t_lidar + offset + int(rng.integers(-2_000_000, 2_000_001))
            msgs.append((stamp, f"/nuscenes/{name}/image_raw/compressed",
                         encoded_to_compressed_msg(data, "jpeg", model.frame_id, stamp, t)))
            msgs.append((stamp, "/tf", t.TFMessage(transforms=[
                transform_stamped(_ego_pose((stamp - t0_ns) * 1e-9, rng), "odom", "base_link", stamp, t)])))
        pts = _jitter_points(scan, rng)
        msgs.append((t_lidar, "/nuscenes/LIDAR_TOP/points", points_to_pointcloud2(
            pts[:, :4], "LIDAR_TOP", t_lidar, t, rings=pts[:, 4].astype(np.uint16))))
        for stamp, topic, msg in sorted(msgs, key=lambda m: m[0]):
            w.add(topic, stamp, msg)
    w.close()
    return n_sweeps * len(cams)


def _write_kitti_bag(src: Path, out: Path, n_frames: int, t0_ns: int, seed: int) -> int:
    calib = json.loads((src / "calib.json").read_text())
    image_path = next(iter(sorted(src.glob("*.png"))))
    data = image_path.read_bytes()
    h, wd = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED).shape[:2]
    points = np.fromfile(next(iter(sorted(src.glob("*.bin")))), np.float32).reshape(-1, 4)
    K, T_cam_lidar, P = kitti_T_cam_lidar(calib)
    T_imu_velo = np.asarray(calib.get("Tr_imu_to_velo", np.eye(4).tolist()), np.float64)
    model = CameraModel(K=K, D=np.zeros(5), width=wd, height=h, frame_id="camera_color_left_optical")
    rng = np.random.default_rng(seed)
    w = _StreamingBagWriter(out)
    t = w.types
    w.add("/tf_static", t0_ns, t.TFMessage(transforms=[
        transform_stamped(invert_transform(T_imu_velo), "base_link", "velo_link", t0_ns, t),
        transform_stamped(invert_transform(T_cam_lidar), "velo_link", model.frame_id, t0_ns, t)]))
    w.add("/kitti/camera_color_left/camera_info", t0_ns, camera_info_msg(model, t0_ns, t, P=P))
    for i in range(n_frames):
        t_lidar = t0_ns + (i + 1) * PERIOD_NS
        stamp = t_lidar + int(rng.integers(-2_000_000, 2_000_001))
        msgs = [(stamp, "/kitti/camera_color_left/image_raw/compressed",
                 encoded_to_compressed_msg(data, "png", model.frame_id, stamp, t)),
                (stamp, "/tf", t.TFMessage(transforms=[
                    transform_stamped(_ego_pose((stamp - t0_ns) * 1e-9, rng), "odom", "base_link", stamp, t)])),
                (t_lidar, "/kitti/velodyne/points", points_to_pointcloud2(_jitter_points(points, rng), "velo_link",
                                                                          t_lidar, t))]
        for s, topic, msg in sorted(msgs, key=lambda m: m[0]):
            w.add(topic, s, msg)
    w.close()
    return n_frames


def generate_drive(root: Path, n_frames: int, frames_per_bag: int, seed: int = 0) -> List[Path]:
    """Bags of a long drive from the real nuScenes + KITTI frames (half each); nuScenes / KITTI bags alternate.

    Returns the bag directories in drive order. Reuses a drive in ``root`` (``drive.json``) made with
    the same settings and at least ``n_frames`` frames (runs read the first frames of it).
    """
    data = Path(data_dir())
    nusc, kitti = data / "nuscenes_n015", data / "kitti_000008"
    for d in (nusc, kitti):
        if not d.is_dir():
            sys.exit(f"bench_scale: {d} not found (set DRIVE_SEGMENT_DATA)")
    spec = {"n_frames": n_frames, "frames_per_bag": frames_per_bag, "seed": seed, "version": 1}
    marker = root / "drive.json"
    if marker.is_file():
        old = json.loads(marker.read_text())
        same = {k: v for k, v in old.get("spec", {}).items() if k != "n_frames"} == \
            {k: v for k, v in spec.items() if k != "n_frames"}
        if same and int(old["spec"]["n_frames"]) >= n_frames and all((root / b).is_dir() for b in old["bags"]):
            return [root / b for b in old["bags"]]
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    n_nusc = int(round(n_frames / 2 / 6)) * 6
    n_kitti = n_frames - n_nusc
    sweeps_per_bag = max(1, frames_per_bag // 6)
    nusc_bags = [min(sweeps_per_bag, (n_nusc // 6) - i) for i in range(0, n_nusc // 6, sweeps_per_bag)]
    kitti_bags = [min(frames_per_bag, n_kitti - i) for i in range(0, n_kitti, frames_per_bag)]
    bags, t0 = [], 1_700_000_000_000_000_000
    t_start = time.perf_counter()
    for j in range(max(len(nusc_bags), len(kitti_bags))):
        for kind, sizes in (("nusc", nusc_bags), ("kitti", kitti_bags)):
            if j < len(sizes):
                path = root / f"{kind}_drive_{j:03d}"
                writer = _write_nuscenes_bag if kind == "nusc" else _write_kitti_bag
                writer(nusc if kind == "nusc" else kitti, path, sizes[j], t0, seed * 1000 + len(bags))
                t0 += (sizes[j] + 10) * PERIOD_NS
                bags.append(path)
    marker.write_text(json.dumps({"spec": spec, "bags": [b.name for b in bags]}))
    size = sum(f.stat().st_size for b in bags for f in b.rglob("*") if f.is_file())
    print(f"drive: {n_frames} camera frames ({n_nusc} nuScenes in {len(nusc_bags)} bags, {n_kitti} KITTI in "
          f"{len(kitti_bags)} bags), {size / 1e6:.0f} MB of mcap, written in {time.perf_counter() - t_start:.0f} s",
          flush=True)
    return bags


# ------------------------------------------------------------------------------- child processes
def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def child_pseudo(job: Dict[str, Any]) -> Dict[str, Any]:
    """One pseudo-labelling run (the steps of run_pseudo_labelling, timed), in this process."""
    import torch

    from drive_segment_ros.models.backbones import build_backbone
    from drive_segment_training import pseudo_labels as pl

    torch.set_num_threads(int(job["threads"]))
    cfg = pl.resolve_config(pl.DEFAULT_CONFIG_PATH if pl.DEFAULT_CONFIG_PATH.is_file() else None, **job["overrides"])
    out = Path(job["out"])
    out.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    backbone = build_backbone(cfg.backbone, weights=cfg.backbone_weights)
    labeler = pl.PseudoLabeler(backbone, None, cfg)
    timing: Dict[str, Any] = {"model_s": time.perf_counter() - t}
    shard_ids, total, computed, t = [], 0, 0, time.perf_counter()
    max_frames = int(job["max_frames"])
    for bag in map(Path, job["bags"]):
        if total >= max_frames:
            break
        sid = pl.shard_id_for(bag)
        res = pl.process_shard(pl.bag_shard_frames(bag, image_topics=cfg.image_topics), out, sid, source=bag,
                               config=cfg, labeler=labeler, max_frames=max_frames - total, progress=False)
        total += res.n_frames
        computed += res.n_computed
        shard_ids.append(sid)
    timing.update(pass1_s=time.perf_counter() - t, frames=total, computed=computed, rss_after_pass1_mb=_peak_rss_mb())
    t = time.perf_counter()
    key = pl.feature_cache_key(cfg, backbone)
    centroids, n_clustered = pl.fit_centroids(out, cfg, shard_ids)
    timing.update(kmeans_s=time.perf_counter() - t, segments=n_clustered)
    t = time.perf_counter()
    run = out / pl.RUNS_DIR / pl.run_key(cfg, key, shard_ids)
    results = [pl.label_shard(out, sid, cfg, centroids, run, progress=False) for sid in shard_ids]
    pl.finalize_run(out, cfg, centroids, run, shard_ids, results, n_clustered=n_clustered, feature_key=key,
                    backbone_description=backbone.description, self_supervised=backbone.self_supervised)
    timing.update(pass2_s=time.perf_counter() - t, peak_rss_mb=_peak_rss_mb(),
                  kmeans_sample=cfg.kmeans_sample, max_side=cfg.max_side, k=cfg.k, backbone=cfg.backbone)
    return timing


def child_decode(job: Dict[str, Any]) -> Dict[str, Any]:
    """Bag reading + pairing + image/scan decoding alone (``DriveReader``), first ``max_frames`` frames."""
    from drive_segment_training import pseudo_labels as pl

    n, t = 0, time.perf_counter()
    for bag in map(Path, job["bags"]):
        for _ in pl.bag_shard_frames(bag):
            n += 1
            if n >= job["max_frames"]:
                break
        if n >= job["max_frames"]:
            break
    return {"frames": n, "decode_s": time.perf_counter() - t, "peak_rss_mb": _peak_rss_mb()}


def child_ray(job: Dict[str, Any]) -> Dict[str, Any]:
    """Ray run over whole bags with ``workers`` local actors (Ray started once, outside the timing)."""
    import ray

    from drive_segment_training.ray_pseudo_labels import run_pseudo_labelling_ray

    ray.init(num_cpus=int(job["workers"]), include_dashboard=False, log_to_driver=False)
    try:
        t = time.perf_counter()
        index = run_pseudo_labelling_ray(job["bags"], job["out"], config=job["overrides"], num_workers=int(job["workers"]),
                                         previews=False)
        return {"frames": int(index["n_frames"]), "wall_s": time.perf_counter() - t}
    finally:
        ray.shutdown()


def child_ddp(job: Dict[str, Any]) -> Dict[str, Any]:
    from drive_segment_training.ddp_launch import spawn_local
    from drive_segment_training.train_config import TrainConfig

    cfg = TrainConfig.from_yaml(None, "teacher", **job["config"])
    t = time.perf_counter()
    res = spawn_local(int(job["world_size"]), "teacher", cfg.to_dict(), threads=int(job["threads"]), timeout_s=3000)
    secs = res[0]["seconds"][1:] or res[0]["seconds"]  # the first step builds caches
    return {"wall_s": time.perf_counter() - t, "step_s_median": float(np.median(secs)), "steps": len(res[0]["seconds"]),
            "images_per_s": cfg.batch_size / float(np.median(secs)), "loss_last": res[0]["loss"][-1]}


CHILDREN = {"pseudo": child_pseudo, "decode": child_decode, "ray": child_ray, "ddp": child_ddp}


def run_child(kind: str, job: Dict[str, Any], log: Path, timeout: float) -> Optional[Dict[str, Any]]:
    """Run ``CHILDREN[kind](job)`` in a fresh interpreter (its own peak RSS); None on failure."""
    job_path = log.with_suffix(".job.json")
    job_path.write_text(json.dumps(job))
    env = dict(os.environ, OMP_NUM_THREADS=str(job.get("threads", 1)))
    with open(log, "w") as fh:
        try:
            proc = subprocess.run([sys.executable, __file__, "--child", kind, str(job_path)], stdout=subprocess.PIPE,
                                  stderr=fh, env=env, timeout=timeout, text=True)
        except subprocess.TimeoutExpired:
            print(f"  {kind}: timed out after {timeout:.0f} s (log {log})", flush=True)
            return None
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        tail = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()][-1:]
        print(f"  {kind}: failed ({proc.returncode}): {tail[0] if tail else ''} (log {log})", flush=True)
        return None
    return json.loads(lines[-1][len("RESULT "):])


def _du(path: Path, sub: Optional[str] = None) -> int:
    root = path / sub if sub else path
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file()) if root.exists() else 0


# ------------------------------------------------------------------------------------------- main
def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", default="200,1000,2000", help="frame counts of the pseudo-label runs (the last = drive length)")
    ap.add_argument("--frames-per-bag", type=int, default=250)
    ap.add_argument("--work", default="/tmp/bench_scale", help="bags, outputs, logs (not in the repository)")
    ap.add_argument("--backbone", default="mobilenetv2_deepsort", help="pseudo-label backbone (CPU-friendly default)")
    ap.add_argument("--max-side", type=int, default=640, help="longer image side for feature extraction")
    ap.add_argument("-k", type=int, default=30)
    ap.add_argument("--kmeans-sample", type=int, default=20000, help="k-means reservoir size (the memory bound)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    ap.add_argument("--prefetch", type=int, default=None,
                    help="frames decoded ahead by a background thread (pseudo-label config; 0 = no thread)")
    ap.add_argument("--ray-frames", type=int, default=200, help="frames (whole bags) of the Ray 1 vs 2 workers runs; 0 = skip")
    ap.add_argument("--ddp-iters", type=int, default=20, help="teacher steps of the DDP 1 vs 2 runs; 0 = skip")
    ap.add_argument("--ddp-batch", type=int, default=4, help="global batch of the DDP runs")
    ap.add_argument("--ddp-crop", type=int, nargs=2, default=(256, 512), metavar=("H", "W"))
    ap.add_argument("--timeout", type=float, default=3 * 3600, help="seconds per child run")
    ap.add_argument("--resume", action="store_true", help="keep <work>/pseudo (frames already done come from its cache)")
    ap.add_argument("--skip-decode", action="store_true", help="skip the decode-only measurement")
    ap.add_argument("--child", nargs=2, metavar=("KIND", "JOB"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        kind, job = args.child
        print("RESULT " + json.dumps(CHILDREN[kind](json.loads(Path(job).read_text()))), flush=True)
        return 0

    counts = sorted({int(v) for v in args.frames.split(",") if v.strip()})
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    bags = generate_drive(work / "drive", counts[-1], args.frames_per_bag)
    overrides = {"backbone": args.backbone, "max_side": args.max_side, "k": args.k, "kmeans_sample": args.kmeans_sample,
                 "n_init": 1}
    if args.prefetch is not None:
        overrides["prefetch"] = args.prefetch
    report: Dict[str, Any] = {"settings": {**vars(args), "frames": counts, "cpu_count": os.cpu_count(),
                                           "overrides": overrides}}

    # ---- stage throughput and memory
    if not args.skip_decode:
        report["decode"] = run_child("decode", {"bags": [str(b) for b in bags], "max_frames": min(counts[-1], 200)},
                                     logs / "decode.log", args.timeout)
    out = work / "pseudo"
    if not args.resume:
        shutil.rmtree(out, ignore_errors=True)
    runs, prev = [], 0
    for n in counts:
        print(f"pseudo-label: first {n} frames ...", flush=True)
        r = run_child("pseudo", {"bags": [str(b) for b in bags], "out": str(out), "max_frames": n,
                                 "overrides": overrides, "threads": args.threads}, logs / f"pseudo_{n}.log", args.timeout)
        if r is None:
            break
        r["new_frames"] = r["computed"]
        r["bytes_on_disk"] = _du(out)
        r["bytes_by_dir"] = {d: _du(out, d) for d in ("images", "segments", "features", "frames", "runs", "previews")}
        runs.append(r)
        prev = n
        print(f"  {r['frames']} frames ({r['computed']} new): pass 1 {r['pass1_s']:.1f} s, k-means {r['kmeans_s']:.1f} s, "
              f"pass 2 {r['pass2_s']:.1f} s, peak RSS {r['peak_rss_mb']:.0f} MB, {r['bytes_on_disk'] / max(r['frames'], 1) / 1e6:.3f} MB/image",
              flush=True)
    report["pseudo_label_runs"] = runs
    del prev

    # ---- Ray 1 vs 2 workers
    if args.ray_frames > 0:
        sel, n = [], 0
        for b in bags:
            if n >= args.ray_frames and len(sel) >= 2:
                break
            sel.append(b)
            n += _bag_frames(b)
        ray_res = {}
        for workers in (1, 2):
            print(f"Ray: {n} frames in {len(sel)} bags, {workers} worker(s) ...", flush=True)
            o = work / f"ray_{workers}"
            shutil.rmtree(o, ignore_errors=True)
            ray_res[workers] = run_child("ray", {"bags": [str(b) for b in sel], "out": str(o), "workers": workers,
                                                 "overrides": overrides, "threads": 1}, logs / f"ray_{workers}.log",
                                         args.timeout)
            if ray_res[workers]:
                print(f"  {ray_res[workers]['frames']} frames in {ray_res[workers]['wall_s']:.1f} s", flush=True)
        report["ray"] = ray_res

    # ---- DDP 1 vs 2 processes
    if args.ddp_iters > 0 and runs:
        ddp_res = {}
        for world in (1, 2):
            print(f"DDP: {args.ddp_iters} teacher steps, global batch {args.ddp_batch}, {world} process(es) ...", flush=True)
            cfg = dict(pseudo_dir=str(out), out_dir=str(work / f"ddp_{world}"), backbone=args.backbone, decoder="conv",
                       crop_size=list(args.ddp_crop), batch_size=args.ddp_batch, iterations=args.ddp_iters,
                       checkpoint_every=10**6, device="cpu", seed=0)
            shutil.rmtree(work / f"ddp_{world}", ignore_errors=True)
            ddp_res[world] = run_child("ddp", {"config": cfg, "world_size": world, "threads": 1},
                                       logs / f"ddp_{world}.log", args.timeout)
            if ddp_res[world]:
                print(f"  {ddp_res[world]['images_per_s']:.2f} images/s (median step {ddp_res[world]['step_s_median']:.2f} s)",
                      flush=True)
        report["ddp"] = ddp_res

    (work / "bench_scale.json").write_text(json.dumps(report, indent=1))
    print_table(report)
    print(f"(details: {work / 'bench_scale.json'}, logs: {logs})")
    return 0


def _bag_frames(bag: Path) -> int:
    """Camera frames of a generated bag (from its metadata: image message counts)."""
    import yaml

    meta = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    return sum(int(t["message_count"]) for t in meta["topics_with_message_count"]
               if "image" in t["topic_metadata"]["name"])


def print_table(report: Dict[str, Any]) -> None:
    rows: List[str] = []
    dec = report.get("decode")
    if dec:
        rows.append(f"decode (bag read + pairing + JPEG/PNG + PointCloud2)   {dec['frames'] / dec['decode_s']:8.2f} frames/s")
    runs = report.get("pseudo_label_runs") or []
    for r in runs:
        new = max(r["computed"], 1)
        rows.append(f"{r['frames']:>6} frames: pass 1 (decode+proposals+features) {new / r['pass1_s']:7.2f} frames/s | "
                    f"k-means {r['frames'] / max(r['kmeans_s'], 1e-9):7.1f} frames/s ({r['segments']} segments, sample "
                    f"{r['kmeans_sample']}) | pass 2 {r['frames'] / max(r['pass2_s'], 1e-9):7.1f} frames/s | "
                    f"peak RSS {r['peak_rss_mb']:6.0f} MB | {r['bytes_on_disk'] / r['frames'] / 1e6:.3f} MB/image")
    if runs:
        last = runs[-1]
        per = {d: v / last["frames"] / 1e3 for d, v in last["bytes_by_dir"].items()}
        rows.append("bytes per image (kB): " + ", ".join(f"{d} {v:.1f}" for d, v in per.items()))
    ray = report.get("ray") or {}
    if ray.get(1) and ray.get(2):
        r1, r2 = ray[1]["frames"] / ray[1]["wall_s"], ray[2]["frames"] / ray[2]["wall_s"]
        rows.append(f"Ray: 1 worker {r1:.2f} frames/s, 2 workers {r2:.2f} frames/s, ratio {r2 / r1:.2f}")
    ddp = report.get("ddp") or {}
    if ddp.get(1) and ddp.get(2):
        rows.append(f"DDP: 1 process {ddp[1]['images_per_s']:.2f} images/s, 2 processes {ddp[2]['images_per_s']:.2f} "
                    f"images/s, ratio {ddp[2]['images_per_s'] / ddp[1]['images_per_s']:.2f}")
    print("\n=== bench-scale (%d CPUs) ===" % (report["settings"]["cpu_count"] or 0))
    print("\n".join(rows))


if __name__ == "__main__":
    sys.exit(main())
