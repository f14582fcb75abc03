"""Benchmark: quality of the LiDAR proposals on real labels, and their time per full scan.

``main()`` prints, in one run (``make bench`` or ``python bench/run_bench.py proposal_quality``):

* ground precision / recall / F1 on ``semantickitti_seq00`` (SemanticKITTI sequence 00, manual
  per-point labels) with the Patchwork++ protocol (:mod:`drive_segment_training.proposal_quality`),
  for both backends (``range_image``, ``dbscan``), beside Patchwork++'s published KITTI 00-10
  figures (95.6 / 97.2 / 96.3), and the range image with its defaults from before issue 8
  (:data:`PREVIOUS_DEFAULTS`) for comparison (ground, objects and time, in the same run);
* object recall on the labelled SemanticKITTI instances (cars, people, ... with >= 20 points),
  both backends;
* object recall on ``kitti_object`` (10 KITTI scans with real 3D boxes): per class (Car, Van,
  Truck, Pedestrian, Cyclist; boxes with >= 20 points; recalled at point-IoU >= 0.5) with the
  under- / over-segmented / missed counts, both backends;
* the range-image proposal time on these real full 360 deg HDL-64E scans (108k-127k points):
  median wall and CPU ms per scan after ``tune_malloc()`` (as the proposal node runs), and the
  same scaled linearly to 120k points;
* the goals: F1 >= 96.3 with recall >= 97, object recall >= 95 %, < 25 ms per 120k-point scan.

Data are read from ``../shared/data`` (``DRIVE_SEGMENT_DATA``); a missing folder is reported and
skipped. The DBSCAN backend needs open3d.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from drive_segment_ros.proposals import ProposalConfig, segment_scan  # noqa: E402
from drive_segment_training import proposal_quality as pq  # noqa: E402
from drive_segment_training.data import data_dir  # noqa: E402

GOALS = {"f1": 96.3, "recall": 97.0, "object_recall": 95.0, "ms_per_120k": 25.0}
#: The range-image parameters before issue 8 (for the before / after lines: quality and time).
PREVIOUS_DEFAULTS = {"ground_angle_deg": 7.0, "ground_near_m": 0.0, "ground_face_foot": False,
                     "rings_from_order": False, "max_gap_px": 2, "max_gap_rows": 2,
                     "skip_ground_px": False}


def _tune_malloc() -> bool:
    try:
        from drive_segment_ros.nodes.runtime import tune_malloc
    except ImportError:  # before the nodes' runtime module existed
        from drive_segment_ros.proposals.range_image import tune_malloc
    return tune_malloc()


def _have_open3d() -> bool:
    try:
        import open3d  # noqa: F401  optional heavy dependency
    except Exception:
        return False
    return True


def time_scans(paths, config: ProposalConfig, repeats: int = 5):
    """Median wall / CPU ms of ``segment_scan`` per scan (each scan: 1 warm-up + ``repeats``)."""
    walls, cpus, sizes = [], [], []
    for path in paths:
        pts = pq.read_velodyne(path)
        segment_scan(pts, config)
        w, c = [], []
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            segment_scan(pts, config)
            w.append((time.perf_counter() - t0) * 1e3)
            c.append((time.process_time() - c0) * 1e3)
        walls.append(float(np.median(w)))
        cpus.append(float(np.median(c)))
        sizes.append(pts.shape[0])
    walls, cpus, sizes = np.array(walls), np.array(cpus), np.array(sizes, dtype=float)
    return {
        "n_scans": len(sizes), "points_median": float(np.median(sizes)),
        "wall_ms": float(np.median(walls)), "cpu_ms": float(np.median(cpus)),
        "wall_ms_per_120k": float(np.median(walls * 120_000 / sizes)),
        "cpu_ms_per_120k": float(np.median(cpus * 120_000 / sizes)),
    }


def main(repeats: int = 5) -> dict:
    """Print the table; return ``{"ground": {backend: ...}, "objects": {backend: ...}, "timing": ...}``."""
    root = Path(data_dir())
    sk, ko = root / "semantickitti_seq00", root / "kitti_object"
    backends = ["range_image"] + (["dbscan"] if _have_open3d() else [])
    if len(backends) == 1:
        print("bench_proposal_quality: open3d not installed, dbscan backend skipped")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"proposal quality on real labels; cpus={os.cpu_count()}, load average {load:.1f}")
    tuned = _tune_malloc()
    results = {"ground": {}, "objects": {}, "timing": None}
    if sk.is_dir():
        for backend in backends:
            res = pq.evaluate_ground(sk, ProposalConfig(backend=backend))
            results["ground"][backend] = res
            print(pq.format_ground(res))
            print(pq.format_instances(res))
        res = pq.evaluate_ground(sk, ProposalConfig.from_dict(PREVIOUS_DEFAULTS))
        results["ground"]["range_image_previous"] = res
        print("  previous range-image defaults (" + ", ".join(f"{k} {v}" for k, v in PREVIOUS_DEFAULTS.items())
              + "): " + pq.format_ground(res).split("] ", 1)[1])
        print("  previous range-image defaults: " + pq.format_instances(res).split("] ", 1)[1])
    else:
        print(f"bench_proposal_quality: {sk} not found (set DRIVE_SEGMENT_DATA); ground figures skipped")
    if ko.is_dir():
        for backend in backends:
            res = pq.evaluate_objects(ko, ProposalConfig(backend=backend))
            results["objects"][backend] = res
            print(pq.format_objects(res))
        res = pq.evaluate_objects(ko, ProposalConfig.from_dict(PREVIOUS_DEFAULTS))
        results["objects"]["range_image_previous"] = res
        t = res["total"]
        print(f"  previous range-image defaults: object recall {t['recall']:.1f}% ({t['recalled']}/{t['evaluated']}), "
              f"under {t['under']}, over {t['over']}, missed {t['missed']}")
    else:
        print(f"bench_proposal_quality: {ko} not found; object recall skipped")
    paths = []
    if sk.is_dir():
        paths += [p for _, p, _ in pq.semantickitti_scans(sk)]
    if ko.is_dir():
        paths += [p for _, p, _, _ in pq.kitti_object_frames(ko)]
    if paths:
        t = time_scans(paths, ProposalConfig(), repeats)
        results["timing"] = t
        print(f"range_image on {t['n_scans']} real HDL-64E scans (median {t['points_median']:.0f} points), "
              f"tune_malloc applied: {tuned}: {t['wall_ms']:.1f} ms wall / {t['cpu_ms']:.1f} ms cpu per scan; "
              f"per 120k points {t['wall_ms_per_120k']:.1f} ms wall / {t['cpu_ms_per_120k']:.1f} ms cpu")
        prev = time_scans(paths, ProposalConfig.from_dict(PREVIOUS_DEFAULTS), repeats)
        results["timing_previous"] = prev
        print(f"  previous range-image defaults: {prev['cpu_ms_per_120k']:.1f} ms cpu per 120k points; "
              f"defaults / previous = {t['cpu_ms_per_120k'] / prev['cpu_ms_per_120k']:.2f}x")
    g = results["ground"].get("range_image")
    o = results["objects"].get("range_image")
    if g and o and results["timing"]:
        ok_g = g["f1"] >= GOALS["f1"] and g["recall"] >= GOALS["recall"]
        ok_o = o["total"]["recall"] >= GOALS["object_recall"]
        ms = results["timing"]["cpu_ms_per_120k"]
        print(f"goal ground (F1 >= {GOALS['f1']}, recall >= {GOALS['recall']}): {'met' if ok_g else 'NOT met'} "
              f"(F1 {g['f1']:.1f}, recall {g['recall']:.1f})")
        print(f"goal object recall >= {GOALS['object_recall']} %: {'met' if ok_o else 'NOT met'} "
              f"({o['total']['recall']:.1f} %, {o['total']['recalled']}/{o['total']['evaluated']} boxes)")
        print(f"goal < {GOALS['ms_per_120k']} ms per 120k-point scan (cpu time): "
              f"{'met' if ms < GOALS['ms_per_120k'] else 'NOT met'} ({ms:.1f} ms cpu, "
              f"{results['timing']['wall_ms_per_120k']:.1f} ms wall)")
    return results


if __name__ == "__main__":
    main()
