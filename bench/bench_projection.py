"""Benchmark of drive_segment_ros.projection on the real KITTI frame 000008 (1242x375, 17,238 points).

Prints median CPU times (ms, ``time.process_time``) and ratios against references measured in the same process:
``project_points`` vs ``cv2.projectPoints`` (with plumb_bob distortion), ``segment_map`` and
``labels_to_points`` vs a bare nearest-point-per-pixel z-buffer (``np.minimum.at``, no splatting).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np


def _median_ms(fn, repeat=15):
    """Median CPU time (``time.process_time``, robust to other processes sharing the cores) in ms."""
    fn()
    ts = []
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        ts.append(time.process_time() - t0)
    return float(np.median(ts) * 1e3)


def main() -> None:
    import cv2

    from drive_segment_training.data import data_dir
    from drive_segment_ros.projection import ProjectionConfig, depth_buffer, labels_to_points, project_points
    from drive_segment_ros.segment_map import segment_map
    from drive_segment_ros.types import CameraModel

    d = Path(data_dir()) / "kitti_000008"
    if not d.is_dir():
        print(f"skipped: {d} not found")
        return
    calib = json.loads((d / "calib.json").read_text())
    P = np.array(calib["cameras"]["CAM2"]["cam2img"])
    L = np.array(calib["cameras"]["CAM2"]["lidar2cam"])
    K = P[:3, :3]
    T = np.eye(4)
    T[:3, 3] = np.linalg.solve(K, P[:3, 3])
    T = T @ L
    pts = np.fromfile(d / "000008.bin", dtype=np.float32).reshape(-1, 4)
    cam = CameraModel(K, np.zeros(5), 1242, 375)
    D = np.array([-0.2, 0.05, 0.001, -0.001, 0.0])
    camd = CameraModel(K, D, 1242, 375)
    key = np.floor(pts[:, :2] / 3.0).astype(np.int64)
    _, ids = np.unique(key, axis=0, return_inverse=True)
    ids = np.where(pts[:, 2] < -1.4, 0, ids.ravel() + 1)

    rvec, _ = cv2.Rodrigues(T[:3, :3])
    xyz = pts[:, :3].astype(np.float64)
    ref_cv2 = _median_ms(lambda: cv2.projectPoints(xyz.reshape(-1, 1, 3), rvec, T[:3, 3], K, D))
    ours = _median_ms(lambda: project_points(pts, camd, T))
    print(f"project_points (distorted)   {ours:7.2f} ms | cv2.projectPoints {ref_cv2:7.2f} ms | ratio {ours / ref_cv2:5.2f}")

    def bare():
        pr = project_points(pts, cam, T)
        r, c = pr.pixels()
        depth_buffer(r[pr.valid], c[pr.valid], pr.depth[pr.valid], (375, 1242))

    ref = _median_ms(bare)
    print(f"bare z-buffer (reference)    {ref:7.2f} ms")
    for name, cfg in [
        ("segment_map default", ProjectionConfig()),
        ("segment_map no closing", ProjectionConfig(closing_px=(0, 0))),
        ("segment_map hull", ProjectionConfig(hull=True)),
    ]:
        t = _median_ms(lambda: segment_map(pts, ids, cam, T, cfg))
        print(f"{name:28s} {t:7.2f} ms | ratio to bare z-buffer {t / ref:5.2f}")
    smap = segment_map(pts, ids, cam, T)
    t = _median_ms(lambda: labels_to_points(smap, pts, cam, T))
    print(f"{'labels_to_points':28s} {t:7.2f} ms | ratio to bare z-buffer {t / ref:5.2f}")


if __name__ == "__main__":
    main()
