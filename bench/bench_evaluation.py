"""Evaluation throughput (images/s) on the real KITTI semantics frames (1242x375), this machine's CPU.

Runs the streaming benchmark evaluation (:func:`drive_segment_training.benchmark_eval.evaluate_dataset`,
reading PNGs, predicting through the deployed ``SegmentationModel``, accumulating the confusion
matrix) end to end, for:

* the demo's model architecture (MobileNetV2 features + conv head, 256x512 input, k=30) in
  ``whole`` and ``sliding`` mode (sliding: window 256x512, stride 3/4, the image scaled so it just
  covers a window -> 256x848, 2 windows per frame);
* the released Drive&Segment architecture (Segmenter ViT-S/16 + 1-layer mask transformer, 31
  classes) with the authors' CPU variant (im_size 1024, window 512, stride 384 -> a 1024x3390
  working image, 27 windows per KITTI frame); random weights (speed does not depend on them).

Weights are random / offline: only the speed is measured. Usage::

    OMP_NUM_THREADS=1 python bench/bench_evaluation.py [--images 20] [--vit-images 2] [--threads 1]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def _checkpoint(directory: Path, backbone: str, n_classes: int, input_size, extra=None) -> Path:
    import torch

    from drive_segment_ros.models.checkpoint import save_checkpoint
    from drive_segment_ros.models.segmenter import SegmenterConfig, build_segmenter

    torch.manual_seed(0)
    cfg = SegmenterConfig.for_backbone(backbone, n_classes=n_classes, input_size=input_size)
    model = build_segmenter(cfg, allow_random=backbone != "mobilenetv2_deepsort")
    save_checkpoint(directory, model, cfg, extra or {})
    return directory


def main() -> int:
    import torch

    from drive_segment_ros.inference.backends import load_model
    from drive_segment_ros.inference.sliding_window import AUTHORS_CPU, count_windows
    from drive_segment_training.benchmark_eval import evaluate_dataset
    from drive_segment_training.benchmarks import load_dataset
    from drive_segment_training.data import data_dir

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=20, help="KITTI frames for the demo-sized model")
    ap.add_argument("--vit-images", type=int, default=1, help="KITTI frames for the authors' ViT-S/16 set-up (0 = skip)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    kitti = Path(data_dir()) / "kitti_semantics"
    ds = load_dataset(kitti, "kitti-semantics")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        small = _checkpoint(Path(tmp) / "small", "mobilenetv2_deepsort", 30, (256, 512))
        runs = [("demo model (MobileNetV2 + conv, 256x512)", small, mode, args.images, None) for mode in ("whole", "sliding")]
        if args.vit_images > 0:
            vit = _checkpoint(Path(tmp) / "vit", "vit_small_patch16_224.dino", 31, (512, 512),
                              {"sliding_window": AUTHORS_CPU.to_dict()})
            runs.append(("Drive&Segment ViT-S/16, authors' CPU variant", vit, "sliding", args.vit_images, None))
        for label, ckpt, mode, n, sliding in runs:
            model = load_model(ckpt, backend="torch", device="cpu", inference_mode=mode, sliding=sliding)
            model.predict(ds.load(ds.samples[0])[0])  # warm-up
            res = evaluate_dataset(lambda rgb: model.predict(rgb)[0], ds, model.n_classes, max_images=n, progress=False)
            windows = count_windows((375, 1242), model.sliding) if mode == "sliding" else 1
            row = {"model": label, "mode": mode, "images": res["n_images"], "windows_per_image": windows,
                   "images_per_s": round(res["images_per_s"], 3), "predict_images_per_s": round(res["predict_images_per_s"], 3),
                   "threads": torch.get_num_threads()}
            rows.append(row)
            print(json.dumps(row))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
