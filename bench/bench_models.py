"""``make bench`` section "models": CPU forward latency of the segmenters (medians, ratios).

Reference in the same process: the offline MobileNetV2 backbone alone at 256x512. Reported:
MobileNetV2 + conv head (the offline demo model), MobileNetV2 + mask transformer, Segmenter
ViT-S/16 + 1-layer mask transformer (the paper's architecture, random weights: timing only),
and the MobileNetV2 + conv model through ONNX Runtime.
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch


def _median_ms(fn, repeats: int = 7, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main() -> None:
    """Print median latencies (ms) and ratios to the backbone-only reference, with 1 intra-op
    thread (robust on a shared machine) and with torch's default thread count."""
    default = torch.get_num_threads()
    for threads in sorted({1, default}):
        torch.set_num_threads(threads)
        _run()
    torch.set_num_threads(default)


def _run() -> None:
    from drive_segment_ros.models.backbones import build_backbone
    from drive_segment_ros.models.segmenter import SegmenterConfig, build_segmenter

    torch.manual_seed(0)
    H, W = 256, 512
    x = torch.randn(1, 3, H, W)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, input 1x3x{H}x{W}, CPU")
    backbone = build_backbone("mobilenetv2_deepsort").eval()
    with torch.no_grad():
        ref = _median_ms(lambda: backbone(x))
    print(f"{'mobilenetv2_deepsort backbone (reference)':55s} {ref:8.1f} ms  x1.00")
    runs = {
        "mobilenetv2 + conv head (demo model)": SegmenterConfig.for_backbone("mobilenetv2_deepsort", 31),
        "mobilenetv2 + mask transformer (d=128, 1 layer)": SegmenterConfig.for_backbone(
            "mobilenetv2_deepsort", 31, decoder="mask_transformer", d_model=128, n_heads=2),
        "Segmenter ViT-S/16 + mask transformer (paper arch)": SegmenterConfig.for_backbone(
            "vit_small_patch16_224.dino", 31),
    }
    conv_model = None
    for label, cfg in runs.items():
        model = build_segmenter(cfg, allow_random=not cfg.backbone.startswith("mobilenet")).eval()
        conv_model = conv_model or model
        with torch.no_grad():
            ms = _median_ms(lambda: model(x), repeats=5)
        print(f"{label:55s} {ms:8.1f} ms  x{ms / ref:.2f}")
    try:
        import onnxruntime as ort
    except ImportError:
        print("onnxruntime not installed: ONNX timing skipped")
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.onnx"
        torch.onnx.export(conv_model, (x,), str(path), opset_version=17, input_names=["image"],
                          output_names=["logits"], dynamo=False)
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        feed = {"image": x.numpy()}
        ms = _median_ms(lambda: sess.run(None, feed))
    print(f"{'mobilenetv2 + conv head, onnxruntime CPU':55s} {ms:8.1f} ms  x{ms / ref:.2f}")


if __name__ == "__main__":
    main()
