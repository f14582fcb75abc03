"""Benchmark of the LiDAR proposals: range-image vs RANSAC + open3d DBSCAN backend.

``main()`` prints the median wall time (ms per scan; CPU time too) of both backends of
:func:`drive_segment_ros.proposals.segment_scan` on the real KITTI and nuScenes scans of
``../shared/data`` and on two ~120k-point scans built from them:

* ``kitti_x7``: the KITTI HDL-64E scan (17k points, cropped to the camera's 80 deg) rotated by
  k * 360/7 deg, k = 0..6, with 1 cm jitter -> 120,666 points over 360 deg, no ring field
  (about the density of a full HDL-64E revolution);
* ``nuscenes_x4``: the nuScenes HDL-32E scan rotated by 0/0.08/0.17/0.25 deg with 1 cm jitter
  (4x denser rings), ring field kept -> 138,752 points (106k with a return).

Ratios ``dbscan / range_image`` are measured in the same process. Goals (2 CPU cores):
range image >= 3x faster than DBSCAN and < 25 ms per 120k-point scan. The range image is timed
twice: with glibc's default allocator settings, then after :func:`tune_malloc` (freed buffers
kept in the heap, as a long-running proposal node would do). CPU time (``process_time``) is
printed beside wall time: on a shared, oversubscribed machine wall time mostly measures waiting.
Run: ``python bench/bench_proposals.py`` or ``make bench`` (``bench/run_bench.py proposals``).
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from drive_segment_training.data import data_dir  # noqa: E402
from drive_segment_ros.proposals import ProposalConfig, segment_scan  # noqa: E402
from drive_segment_ros.nodes.runtime import tune_malloc  # noqa: E402


def _rotate(points: np.ndarray, deg: float, rng: np.random.Generator, jitter: float = 0.01) -> np.ndarray:
    a = np.radians(deg)
    c, s = np.cos(a), np.sin(a)
    out = points.copy()
    out[:, :2] = points[:, :2] @ np.array([[c, s], [-s, c]], dtype=np.float32)
    finite = np.isfinite(out[:, :3]).all(axis=1) & (np.linalg.norm(points[:, :3], axis=1) > 0.5)
    out[finite, :3] += rng.normal(0, jitter, (int(finite.sum()), 3)).astype(np.float32)
    return out


def load_scans():
    """Real scans and the merged ~120k-point scans: list of (name, points, rings)."""
    root = Path(data_dir())
    scans = []
    kitti_path = root / "kitti_000008" / "000008.bin"
    nus = sorted((root / "nuscenes_n015").glob("*LIDAR_TOP*.pcd.bin"))
    rng = np.random.default_rng(0)
    if kitti_path.is_file():
        kitti = np.fromfile(kitti_path, dtype=np.float32).reshape(-1, 4)
        scans.append(("kitti", kitti, None))
    if nus:
        raw = np.fromfile(nus[0], dtype=np.float32).reshape(-1, 5)
        scans.append(("nuscenes", raw[:, :4].copy(), raw[:, 4].astype(np.int16)))
    if kitti_path.is_file():
        big = np.concatenate([_rotate(kitti, k * 360.0 / 7, rng) for k in range(7)])
        scans.append(("kitti_x7", big, None))
    if nus:
        big = np.concatenate([_rotate(raw[:, :4], d, rng) for d in (0.0, 0.083, 0.166, 0.25)])
        scans.append(("nuscenes_x4", big, np.tile(raw[:, 4].astype(np.int16), 4)))
    return scans


def time_backend(points, rings, config, repeats):
    """Median wall and CPU ms of segment_scan over `repeats` runs (after one warm-up run)."""
    prop = segment_scan(points, config, rings)
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        prop = segment_scan(points, config, rings)
        wall.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.process_time() - c0) * 1e3)
    return float(np.median(wall)), float(np.median(cpu)), prop


def main(repeats: int = 15) -> dict:
    """Print the benchmark table; return {scan: {backend: median wall ms, 'ratio': dbscan/range}}."""
    scans = load_scans()
    if not scans:
        print(f"bench_proposals: no real scans under {data_dir()} (set DRIVE_SEGMENT_DATA); nothing to do")
        return {}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"segment_scan, median of {repeats} runs; cpus={os.cpu_count()}, load average {load:.1f}")
    print(f"{'scan':<12} {'points':>8} {'backend':<12} {'wall ms':>8} {'cpu ms':>8} {'ground':>7} {'segments':>8}")
    results = {}
    for name, points, rings in scans:
        row = {}
        for backend in ("range_image", "dbscan"):
            reps = repeats if backend == "range_image" else max(3, repeats // 3)
            wall, cpu, prop = time_backend(points, rings, ProposalConfig(backend=backend), reps)
            row[backend], row[backend + "_cpu"] = wall, cpu
            print(f"{name:<12} {len(points):>8} {backend:<12} {wall:>8.1f} {cpu:>8.1f} "
                  f"{prop.stats['ground_fraction']:>7.3f} {prop.n_segments:>8}")
        row["ratio"] = row["dbscan"] / row["range_image"]
        row["ratio_cpu"] = row["dbscan_cpu"] / row["range_image_cpu"]
        results[name] = row
        print(f"{name:<12} ratio dbscan/range_image = {row['ratio']:.1f}x wall, {row['ratio_cpu']:.1f}x cpu")
    tuned = tune_malloc()
    print(f"after tune_malloc() (applied: {tuned}):")
    for name, points, rings in scans:
        wall, cpu, prop = time_backend(points, rings, ProposalConfig(), repeats)
        results[name]["range_image_tuned"], results[name]["range_image_tuned_cpu"] = wall, cpu
        print(f"{name:<12} {len(points):>8} {'range_image':<12} {wall:>8.1f} {cpu:>8.1f}   "
              f"(x{results[name]['range_image'] / wall:.2f} wall vs default allocator)")
    for name in ("kitti_x7", "nuscenes_x4"):
        if name in results:
            r = results[name]
            for kind, ms, ratio in (("wall", r["range_image_tuned"], r["ratio"]),
                                    ("cpu", r["range_image_tuned_cpu"], r["ratio_cpu"])):
                ok = ms < 25.0 and ratio >= 3.0
                print(f"goal on {name} ({kind} time; < 25 ms, >= 3x): {'met' if ok else 'NOT met'} "
                      f"({ms:.1f} ms, {ratio:.1f}x)")
    return results


if __name__ == "__main__":
    main()
