"""Benchmarks of the distillation stage (``python bench/run_bench.py distill``).

1. ``refine_with_segments`` (vectorised: unique + index_add) against a reference per-segment
   Python loop, on teacher probabilities of the released size (31 classes) at a 256x512 crop.
2. One optimiser step of the teacher (CE on partial labels) and of the student (teacher forward +
   segment refinement + soft loss + EMA update) with the offline ``mobilenetv2_deepsort``
   Segmenter, batch 4, 256x512 crops; the student/teacher ratio is the distillation overhead.
Medians over repeats, measured in this process; no numbers are asserted.
"""
from __future__ import annotations

import copy
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _refine_loop(probs, segments, mode):
    """Reference: one boolean mask per (image, segment) -- what the vectorised version avoids."""
    out = probs.clone()
    for b in range(probs.shape[0]):
        for sid in torch.unique(segments[b]):
            if sid < 0:
                continue
            m = segments[b] == sid
            p = probs[b][:, m]
            if mode == "soft":
                out[b][:, m] = p.mean(1, keepdim=True)
            else:
                c = torch.bincount(p.argmax(0), minlength=probs.shape[1]).argmax()
                out[b][:, m] = F.one_hot(c, probs.shape[1]).float()[:, None]
    return out


def _synthetic_segments(B, H, W, n_seg, rng):
    seg = np.full((B, H, W), -1, np.int64)
    for b in range(B):
        for s in range(n_seg):
            h, w = rng.integers(4, 40), rng.integers(4, 60)
            y, x = rng.integers(0, H - h), rng.integers(0, W - w)
            seg[b, y : y + h, x : x + w] = s
    return torch.from_numpy(seg)


def main() -> None:
    from drive_segment_training.losses import distillation_loss, refine_with_segments
    from drive_segment_training.trainer import ema_update

    rng = np.random.default_rng(0)
    B, K, H, W = 4, 31, 256, 512
    probs = torch.softmax(torch.randn(B, K, H, W, generator=torch.Generator().manual_seed(0)), 1)
    seg = _synthetic_segments(B, H, W, 150, rng)
    for mode in ("soft", "hard"):
        torch.testing.assert_close(refine_with_segments(probs, seg, mode), _refine_loop(probs, seg, mode))
        t_vec = _median_time(lambda: refine_with_segments(probs, seg, mode), 5)
        t_loop = _median_time(lambda: _refine_loop(probs, seg, mode), 2)
        print(f"refine_with_segments {mode}: vectorised {t_vec * 1e3:.1f} ms, per-segment loop "
              f"{t_loop * 1e3:.1f} ms, speed-up x{t_loop / t_vec:.1f}  (B={B}, K={K}, {H}x{W}, 150 segments/image)")

    try:
        from drive_segment_ros.models.segmenter import SegmenterConfig, build_segmenter

        cfg = SegmenterConfig.for_backbone("mobilenetv2_deepsort", K, decoder="conv")
        student = build_segmenter(cfg).train()
    except Exception as exc:  # pragma: no cover - weights missing
        print(f"step benchmark skipped: {exc}")
        return
    teacher = copy.deepcopy(student).eval()
    opt = torch.optim.AdamW(student.parameters(), lr=1e-4)
    x = torch.randn(B, 3, H, W)
    labels = torch.randint(0, K, (B, H, W))
    labels[:, ::2] = 255

    def teacher_step():
        loss = F.cross_entropy(student(x), labels, ignore_index=255)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def student_step():
        with torch.no_grad():
            p = refine_with_segments(torch.softmax(teacher(x), 1), seg, "soft")
        loss = distillation_loss(student(x), p, soft=True)
        opt.zero_grad()
        loss.backward()
        opt.step()
        ema_update(teacher, student, 0.999)

    t_teacher = _median_time(teacher_step, 3)
    t_student = _median_time(student_step, 3)
    print(f"train step (mobilenetv2_deepsort + conv head, batch {B}, {H}x{W}, {torch.get_num_threads()} threads): "
          f"teacher {t_teacher:.2f} s/it, student {t_student:.2f} s/it, student/teacher x{t_student / t_teacher:.2f}")


if __name__ == "__main__":
    main()
