"""Inference benchmark: torch eager vs ONNX Runtime (CPU here), plus bf16 / torch.compile /
TensorRT when a CUDA GPU is present.

Models (random-weight decoders; the MobileNetV2 encoder has its real offline weights; the
ViT-S/16 Segmenter has random weights but the paper's architecture and therefore its cost):

* ``mobilenetv2_deepsort`` + conv head at 256x512 and 512x1024 (CPU-friendly student),
* Segmenter ViT-S/16 + 1-layer mask transformer at 512x512 (the released Drive&Segment model).

Prints median milliseconds per forward (batch 1) and ratios against torch eager fp32 measured
in the same process, plus one end-to-end ``SegmentationModel.predict`` on the real KITTI frame.
Run: ``python bench/run_bench.py inference`` (or ``make bench``). Options through env vars:
``BENCH_INFERENCE_REPS`` (default 7), ``BENCH_INFERENCE_QUICK=1`` (only the small conv model),
``BENCH_INFERENCE_THREADS`` (torch and ORT intra-op threads; default see :func:`_threads`).
"""
from __future__ import annotations

import logging
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

CASES = [
    # (label, backbone, (H, W), reps scale)
    ("mobilenetv2+conv 256x512", "mobilenetv2_deepsort", (256, 512), 1.0),
    ("mobilenetv2+conv 512x1024", "mobilenetv2_deepsort", (512, 1024), 0.6),
    ("Segmenter ViT-S/16 512x512", "vit_small_patch16_224.dino", (512, 512), 0.5),
]


def _median_ms(fn, reps: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(3, reps)):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _machine() -> str:
    import onnxruntime as ort
    import torch

    gpu = f"CUDA {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "no CUDA GPU"
    return (
        f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), onnxruntime {ort.__version__} {ort.get_available_providers()}, {gpu}"
    )


def _threads() -> int:
    """Intra-op threads for BOTH torch and ONNX Runtime (same budget, fair ratio).

    ``BENCH_INFERENCE_THREADS`` when set; else every core, unless the 1-minute load average
    already exceeds the core count: then 1, because spinning OpenMP workers on an
    oversubscribed machine measure contention (torch eager was 20x slower with 2 threads than
    with 1 on a 2-core machine at load 13), not the model.
    """
    if os.environ.get("BENCH_INFERENCE_THREADS"):
        n = int(os.environ["BENCH_INFERENCE_THREADS"])
        print(f"threads: {n} (BENCH_INFERENCE_THREADS)")
        return n
    cores = os.cpu_count() or 1
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if load > cores:
        print(f"threads: 1 (load average {load:.1f} > {cores} cores; set BENCH_INFERENCE_THREADS to override)")
        return 1
    print(f"threads: {cores} (load average {load:.1f})")
    return cores


def _kitti_rgb():
    import cv2

    from drive_segment_training.data import data_dir

    path = Path(data_dir()) / "kitti_000008" / "000008.png"
    bgr = cv2.imread(str(path))
    return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def main() -> None:
    """Run the benchmark and print medians / ratios (see module docstring)."""
    import torch

    from drive_segment_ros.inference.backends import SegmentationModel, create_backend
    from drive_segment_ros.inference.export import export_onnx
    from drive_segment_ros.models.checkpoint import save_checkpoint
    from drive_segment_ros.models.segmenter import SegmenterConfig, build_segmenter

    logging.getLogger("drive_segment_ros").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    reps = int(os.environ.get("BENCH_INFERENCE_REPS", "7"))
    cases = CASES[:1] if os.environ.get("BENCH_INFERENCE_QUICK") else CASES
    cuda = torch.cuda.is_available()
    threads = _threads()
    torch.set_num_threads(threads)
    print(f"machine: {_machine()}")
    print("batch 1, median ms per forward; ratio = backend / torch eager fp32 (same device class)")
    rgb = _kitti_rgb()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, backbone, size, scale in cases:
            torch.manual_seed(0)
            cfg = SegmenterConfig.for_backbone(backbone, n_classes=31, input_size=size)
            model = build_segmenter(cfg, allow_random=backbone != "mobilenetv2_deepsort")
            ckpt = Path(tmp) / backbone
            save_checkpoint(ckpt, model, cfg, {"stage": "bench"})
            onnx_path = Path(tmp) / f"{backbone}_{size[0]}x{size[1]}.onnx"
            report = export_onnx(ckpt, onnx_path)
            n = max(3, int(round(reps * scale)))
            x = np.random.default_rng(0).standard_normal((1, 3) + size).astype(np.float32)

            t_cpu = create_backend("torch", ckpt, device="cpu")
            o_cpu = create_backend("onnxruntime", onnx_path, device="cpu", threads=threads)
            ref = _median_ms(lambda: t_cpu.infer(x), n)
            ort_ms = _median_ms(lambda: o_cpu.infer(x), n)
            print(f"\n{label}: export {report['export_s']:.1f} s, {report['size_mb']:.1f} MB, ORT vs torch max |diff| {report['max_abs_diff']:.2g}")
            print(f"  cpu  torch eager fp32   {ref:9.1f} ms   1.00x")
            print(f"  cpu  onnxruntime fp32   {ort_ms:9.1f} ms   {ort_ms / ref:.2f}x  (ORT/torch)")
            rows.append((label, "cpu", ref, ort_ms))
            if rgb is not None:
                e2e = SegmentationModel(o_cpu)
                totals = [e2e.predict(rgb)[1] for _ in range(max(3, n // 2))]
                med = {k: statistics.median(t[k] for t in totals) for k in totals[0]}
                print(
                    f"  cpu  ORT predict(KITTI 1242x375) total {med['total_ms']:.1f} ms "
                    f"(pre {med['preprocess_ms']:.1f}, infer {med['infer_ms']:.1f}, post {med['postprocess_ms']:.1f})"
                )

            if cuda:
                _bench_cuda(ckpt, onnx_path, x, n, label)
            sys.stdout.flush()
    print("\nsummary (cpu): " + "; ".join(f"{l}: torch {a:.0f} ms, ORT {b:.0f} ms ({b / a:.2f}x)" for l, _, a, b in rows))


def _bench_cuda(ckpt, onnx_path, x, n, label) -> None:
    """CUDA rows: torch fp32 / bf16 autocast / bf16 + torch.compile, ORT CUDA EP, TensorRT fp16."""
    import onnxruntime as ort

    from drive_segment_ros.inference.backends import create_backend
    from drive_segment_ros.types import DriveSegmentError

    n = max(10, n * 3)
    ref_b = create_backend("torch", ckpt, device="cuda", bf16=False)
    ref = _median_ms(lambda: ref_b.infer(x), n, warmup=5)
    print(f"  cuda torch eager fp32   {ref:9.2f} ms   1.00x")
    bf = create_backend("torch", ckpt, device="cuda", bf16=True)
    ms = _median_ms(lambda: bf.infer(x), n, warmup=5)
    print(f"  cuda torch bf16         {ms:9.2f} ms   {ms / ref:.2f}x")
    try:
        comp = create_backend("torch", ckpt, device="cuda", bf16=True, compile=True)
        ms = _median_ms(lambda: comp.infer(x), n, warmup=3)
        print(f"  cuda torch bf16+compile {ms:9.2f} ms   {ms / ref:.2f}x")
    except Exception as exc:  # torch.compile needs a working toolchain (triton)
        print(f"  cuda torch.compile unavailable: {str(exc).splitlines()[0]}")
    if "CUDAExecutionProvider" in ort.get_available_providers():
        o = create_backend("onnxruntime", onnx_path, device="cuda")
        ms = _median_ms(lambda: o.infer(x), n, warmup=5)
        print(f"  cuda onnxruntime fp32   {ms:9.2f} ms   {ms / ref:.2f}x")
    try:
        from drive_segment_ros.inference.tensorrt_engine import build_engine

        engine = Path(onnx_path).with_suffix(".engine")
        rec = build_engine(onnx_path, engine, fp16=True, workspace_gb=4)
        trt_b = create_backend("tensorrt", engine)
        ms = _median_ms(lambda: trt_b.infer(x), n, warmup=5)
        print(f"  cuda tensorrt fp16      {ms:9.2f} ms   {ms / ref:.2f}x  (build {rec['build_s']:.0f} s)")
    except DriveSegmentError as exc:
        print(f"  cuda tensorrt: {exc}")


if __name__ == "__main__":
    main()
