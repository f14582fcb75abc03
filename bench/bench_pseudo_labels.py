"""Benchmark of the pseudo-label hot paths against naive references, same process, same inputs.

* ``pool_segment_features`` (sparse bilinear weights, no (C,H,W) map) vs upsampling the feature map
  with ``torch.nn.functional.interpolate`` and a per-segment masked mean loop.
* ``predict_pixel_kmeans`` (banded grid_sample in score space) vs full upsampling + ``torch.cdist``.

Prints medians (ms) and the speed ratio reference / ours. Not part of the test suite.
"""
from __future__ import annotations

import statistics
import time

import numpy as np
import torch


def _median_ms(fn, reps=5):
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def main() -> None:
    from drive_segment_ros.pseudo_labeling import pool_segment_features

    torch.set_num_threads(max(1, torch.get_num_threads()))
    rng = np.random.default_rng(0)
    # nuScenes-sized frame: 1600x900 image, 96-channel stride-16 features at max_side 1024 (36x64 cells)
    C, h, w, H, W = 96, 36, 64, 900, 1600
    F = rng.normal(size=(C, h, w)).astype(np.float32)
    seg = np.full((H, W), -1, np.int32)
    for s in range(300):  # 300 rectangular segments covering part of the image
        y, x = rng.integers(0, H - 60), rng.integers(0, W - 80)
        seg[y:y + rng.integers(10, 60), x:x + rng.integers(10, 80)] = s
    cell = (H / h, W / w)

    def ours():
        return pool_segment_features(F, seg, cell_size=cell)

    def reference():
        up = torch.nn.functional.interpolate(torch.from_numpy(F)[None], size=(H, W), mode="bilinear",
                                             align_corners=False)[0]
        ids = np.unique(seg[seg >= 0])
        st = torch.from_numpy(seg)
        return ids, torch.stack([up[:, st == s].mean(dim=1) for s in ids]).numpy()

    ids, a, _ = ours()
    _, b = reference()
    assert np.allclose(a, b, atol=1e-4), "pooling disagrees with the reference"
    t_ours, t_ref = _median_ms(ours, reps=3), _median_ms(reference, reps=1)
    print(f"pool_segment_features 1600x900, {ids.size} segments, C={C}: ours {t_ours:.1f} ms, "
          f"upsample+loop reference {t_ref:.1f} ms, ratio {t_ref / t_ours:.1f}x")

    # per-pixel nearest centroid, k = 30, L2-normalised pixel features (the baseline's default)
    import drive_segment_training.baseline as B

    cen = rng.normal(size=(30, C)).astype(np.float32)
    Ft = torch.from_numpy(F)
    B.image_features = lambda backbone, rgb, max_side, window: (Ft, cell)  # synthetic features
    rgb = np.zeros((H, W, 3), np.uint8)

    def ours_predict():
        return B.predict_pixel_kmeans(None, cen, rgb, normalize=True)

    def full():
        up = torch.nn.functional.interpolate(Ft[None], size=(H, W), mode="bilinear", align_corners=False)[0]
        X = up.reshape(C, -1).T
        X = X / X.norm(dim=1, keepdim=True).clamp_min(1e-8)
        return torch.cdist(X, torch.from_numpy(cen)).argmin(1).reshape(H, W).numpy()

    agree = float((ours_predict() == full()).mean())
    t_b, t_f = _median_ms(ours_predict, reps=3), _median_ms(full, reps=1)
    print(f"pixel k-means assignment 1600x900, C={C}, k=30: banded grid_sample {t_b:.1f} ms, "
          f"full upsample+cdist reference {t_f:.1f} ms (peak ~{C * H * W * 4 / 2**20:.0f} MiB), "
          f"ratio {t_f / t_b:.2f}x, agreement {agree:.5f}")

if __name__ == "__main__":
    main()
