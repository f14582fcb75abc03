"""Streaming evaluation on the benchmarks of :mod:`drive_segment_training.benchmarks`, and the paper's table.

:func:`evaluate_dataset` predicts one image at a time and adds its pixels to one confusion
matrix per (label set, group) -- memory does not grow with the number of images -- then matches
clusters to classes once on the dataset-level matrix (Hungarian and majority,
:mod:`drive_segment_training.evaluation`) and scores mIoU / pixel accuracy / per-class IoU.
Outputs: ``metrics.json``, row-normalised confusion PNGs, a few prediction panels
(image | ground truth | prediction, matched Cityscapes colours) and one line on stdout.
A missing, unreadable or wrongly sized label file stops the run with a one-line error naming
the file, before anything is written.

:func:`run_suite` evaluates every benchmark present under a root and
:func:`format_paper_table` prints the layout of the Drive&Segment paper beside its published
figures (:data:`PAPER_TABLE`).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
from tqdm import tqdm

from drive_segment_ros.inference.backends import load_model
from drive_segment_ros.types import DriveSegmentError
from drive_segment_training.benchmarks import DATASETS, find_datasets, load_dataset
from drive_segment_training.data import data_dir
from drive_segment_training.evaluation import (
    confusion_matrix, hungarian_match, majority_match, metrics_to_json, plot_confusion, segmentation_metrics)
from drive_segment_training.labels import label_set as get_label_set

LOG = logging.getLogger(__name__)

PathLike = Union[str, Path]
Predict = Callable[[np.ndarray], np.ndarray]

#: Group key of a whole dataset (datasets without sub-sets, and ACDC pooled over conditions).
ALL = "all"
#: ACDC summary key: mean of the per-condition mIoUs.
MEAN = "mean"


@dataclass(frozen=True)
class PaperRow:
    """One row of the paper's table: where our figure comes from, and the published one.

    Attributes:
        label: row title as printed.
        dataset: benchmark loader name (:data:`drive_segment_training.benchmarks.DATASETS`).
        label_set: ``cityscapes19`` or ``cityscapes27``.
        group: ``"all"`` or an ACDC condition.
        published: Drive&Segment's mIoU in percent, or ``None`` (row not in the paper).
    """

    label: str
    dataset: str
    label_set: str
    group: str
    published: Optional[float]


#: The paper's table layout with the published Drive&Segment (ViT-S/16, nuScenes-trained) mIoU
#: in percent: Vobecky et al., "Drive&Segment: Unsupervised Semantic Segmentation of Urban
#: Scenes via Cross-modal Distillation", ECCV 2022 (arXiv:2203.11160), comparison with the
#: state of the art on Cityscapes (19 / 27 classes), Dark Zurich, Nighttime Driving and ACDC
#: per condition, Hungarian matching. The last two rows are this project's extra held-out data.
PAPER_TABLE: Tuple[PaperRow, ...] = (
    PaperRow("Cityscapes-19", "cityscapes", "cityscapes19", ALL, 21.8),
    PaperRow("Cityscapes-27", "cityscapes", "cityscapes27", ALL, 15.3),
    PaperRow("Dark Zurich", "dark-zurich", "cityscapes19", ALL, 14.2),
    PaperRow("Nighttime Driving", "nighttime-driving", "cityscapes19", ALL, 18.9),
    PaperRow("ACDC night", "acdc", "cityscapes19", "night", 13.8),
    PaperRow("ACDC fog", "acdc", "cityscapes19", "fog", 14.5),
    PaperRow("ACDC rain", "acdc", "cityscapes19", "rain", 14.9),
    PaperRow("ACDC snow", "acdc", "cityscapes19", "snow", 14.6),
    PaperRow("KITTI semantics-19", "kitti-semantics", "cityscapes19", ALL, None),
    PaperRow("Waymo-19", "waymo", "cityscapes19", ALL, None),
)


def suite_label_sets(dataset: str) -> Tuple[str, ...]:
    """Label sets the paper suite scores a dataset in (those of :data:`PAPER_TABLE`)."""
    sets = tuple(dict.fromkeys(r.label_set for r in PAPER_TABLE if r.dataset == dataset))
    return sets or ("cityscapes19",)


class StreamingConfusion:
    """Dataset-level confusion matrices accumulated image by image.

    One ``(n_pred, n_gt)`` int64 matrix per ``(label_set, group)``; every image adds to its
    group and to :data:`ALL`. Memory is ``O(n_pred * n_gt)`` per key, independent of the
    number of images.

    Args:
        n_pred: number of predicted clusters (ids in ``[0, n_pred)``).
        label_sets: evaluation label sets (``cityscapes19`` / ``cityscapes27``).
    """

    def __init__(self, n_pred: int, label_sets: Sequence[str]) -> None:
        if int(n_pred) < 1:
            raise DriveSegmentError(f"n_pred must be >= 1, got {n_pred}")
        if not label_sets:
            raise DriveSegmentError("at least one label set is needed")
        self.n_pred = int(n_pred)
        self.n_gt = {ls: len(get_label_set(ls)[0]) for ls in label_sets}
        self.label_sets = tuple(label_sets)
        self.conf: Dict[Tuple[str, str], np.ndarray] = {}
        self.n_images: Dict[str, int] = {}

    def update(self, pred: np.ndarray, gts: Dict[str, np.ndarray], group: str = "") -> None:
        """Add one image: ``pred`` (H, W) ids, ``gts[label_set]`` (H, W) gt ids (255 ignore)."""
        groups = (ALL,) if not group or group == ALL else (ALL, group)
        for ls in self.label_sets:
            c = confusion_matrix(pred, gts[ls], self.n_pred, self.n_gt[ls])
            for g in groups:
                key = (ls, g)
                if key in self.conf:
                    self.conf[key] += c
                else:
                    self.conf[key] = c.copy()
        for g in groups:
            self.n_images[g] = self.n_images.get(g, 0) + 1

    def groups(self) -> List[str]:
        """Groups seen, :data:`ALL` first."""
        return [ALL] + sorted({g for _, g in self.conf} - {ALL})

    def metrics(self, label_set: str, group: str = ALL) -> Dict[str, Dict[str, object]]:
        """``{"hungarian": m, "majority": m}`` for one key; ``m`` as
        :func:`drive_segment_training.evaluation.evaluate_predictions` returns it."""
        conf = self.conf.get((label_set, group))
        if conf is None:
            raise DriveSegmentError(f"no image of group {group!r} evaluated in {label_set}")
        out = {}
        for matching, fn in (("hungarian", hungarian_match), ("majority", majority_match)):
            mapping = fn(conf)
            m = segmentation_metrics(conf, mapping)
            m.update(confusion=conf.copy(), mapping=mapping, matching=matching, n_images=self.n_images[group])
            out[matching] = m
        return out


def _fit_width(img: np.ndarray, width: int, nearest: bool) -> np.ndarray:
    h, w = img.shape[:2]
    if w <= width:
        return img
    size = (width, max(1, round(h * width / w)))
    return cv2.resize(img, size, interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_AREA)


def _write_panels(out: Path, panels: List[Tuple[str, np.ndarray, np.ndarray, np.ndarray]], mapping: np.ndarray,
                  palette: np.ndarray) -> List[str]:
    """image | ground truth | prediction (Hungarian-matched colours), ignore / unmatched black."""
    colours = np.zeros((256, 3), np.uint8)
    colours[: len(palette)] = palette
    lut = np.full(256, 255, np.uint8)
    lut[: len(mapping)] = np.where(mapping >= 0, mapping, 255)
    written = []
    for i, (name, rgb, gt, pred) in enumerate(panels):
        row = np.concatenate([rgb, colours[gt], colours[lut[pred]]], axis=1)
        fname = f"panel_{i:02d}_{name.replace('/', '_')}.png"
        cv2.imwrite(str(out / fname), np.ascontiguousarray(row[..., ::-1]))
        written.append(fname)
    return written


def evaluate_dataset(
    predict: Predict,
    dataset,
    n_pred: int,
    label_sets: Optional[Sequence[str]] = None,
    out_dir: Optional[PathLike] = None,
    max_images: Optional[int] = None,
    n_panels: int = 3,
    progress: bool = True,
    tag: str = "model",
    extra: Optional[Dict[str, object]] = None,
    with_sample: bool = False,
    plots: bool = True,
) -> Dict[str, object]:
    """Predict and score a benchmark, streaming image by image.

    Args:
        predict: ``rgb (H, W, 3) uint8 -> (H, W)`` integer cluster ids in ``[0, n_pred)``
            (e.g. ``lambda rgb: model.predict(rgb)[0]`` with a
            :class:`~drive_segment_ros.inference.backends.SegmentationModel`).
        dataset: a :class:`~drive_segment_training.benchmarks.BenchmarkDataset`.
        n_pred: number of predicted clusters.
        label_sets: label sets to score (default: ``("cityscapes19",)``).
        out_dir: when given: ``metrics.json``, ``confusion_<label_set>_<group>_<matching>.png``
            and ``panel_NN_<image>.png`` (first ``n_panels`` images, first label set).
        max_images: evaluate only the first N images (deterministic order).
        progress: show a tqdm progress bar on stderr.
        tag: name of what is evaluated (JSON).
        extra: more JSON keys (backbone, inference mode, ...).
        with_sample: call ``predict(rgb, sample)`` (e.g. to read saved predictions by name).
        plots: write the confusion PNGs (matplotlib, ~0.3 s each) with ``out_dir``.

    Returns:
        dict with ``dataset``, ``split``, ``root``, ``n_images``, ``seconds``, ``images_per_s``
        (end to end: reading, predicting, accumulating), ``predict_images_per_s``,
        ``label_sets``, ``groups`` and ``results[label_set][group] = {"hungarian": m,
        "majority": m}`` (numpy arrays kept); for datasets with groups (ACDC) also
        ``results[label_set]["mean"]`` with the mean of the per-group mIoUs.

    Raises:
        DriveSegmentError: a missing / unreadable / mismatched label or image (named), a
            prediction of the wrong shape or id range; nothing is written then.
    """
    label_sets = tuple(label_sets or ("cityscapes19",))
    supported = dataset.label_sets()
    for ls in label_sets:
        if ls not in supported:
            raise DriveSegmentError(f"{dataset.name}: label set {ls} needs labelId files; this copy supports {list(supported)}")
    samples = list(dataset.samples)
    if max_images is not None:
        if int(max_images) < 1:
            raise DriveSegmentError(f"--max-images must be >= 1, got {max_images}")
        samples = samples[: int(max_images)]
    acc = StreamingConfusion(n_pred, label_sets)
    panels: List[Tuple[str, np.ndarray, np.ndarray, np.ndarray]] = []
    t_predict = 0.0
    t0 = time.perf_counter()
    for sample in tqdm(samples, desc=dataset.name, unit="img", disable=not progress, file=sys.stderr, leave=False):
        rgb, gts = dataset.load(sample, label_sets)
        t1 = time.perf_counter()
        pred = np.asarray(predict(rgb, sample) if with_sample else predict(rgb))
        t_predict += time.perf_counter() - t1
        if pred.shape != rgb.shape[:2]:
            raise DriveSegmentError(f"{dataset.name}: prediction for {sample.image} has shape {pred.shape}, expected {rgb.shape[:2]}")
        try:
            acc.update(pred, gts, sample.group)
        except DriveSegmentError as exc:
            raise DriveSegmentError(f"{dataset.name}: {sample.image}: {exc}") from None
        if len(panels) < n_panels:
            gt0 = gts[label_sets[0]]
            panels.append((sample.name, _fit_width(rgb, 640, False), _fit_width(gt0, 640, True),
                           _fit_width(pred.astype(np.uint8), 640, True)))
    seconds = time.perf_counter() - t0
    if not samples:
        raise DriveSegmentError(f"{dataset.name}: no images to evaluate")

    results: Dict[str, Dict[str, object]] = {}
    groups = acc.groups()
    for ls in label_sets:
        per = {g: acc.metrics(ls, g) for g in groups}
        if dataset.groups:
            conds = [g for g in dataset.groups if g in per]
            per[MEAN] = {m: {"mIoU": float(np.mean([per[g][m]["mIoU"] for g in conds])), "groups": conds}
                         for m in ("hungarian", "majority")}
        results[ls] = per
    result: Dict[str, object] = {
        "tag": tag, "dataset": dataset.name, "split": dataset.split, "root": str(dataset.root),
        "n_images": len(samples), "n_images_available": len(dataset.samples), "seconds": seconds,
        "images_per_s": len(samples) / seconds if seconds > 0 else float("inf"),
        "predict_images_per_s": len(samples) / t_predict if t_predict > 0 else float("inf"),
        "label_sets": list(label_sets), "groups": groups, "n_pred": int(n_pred), "licence": dataset.licence,
        "results": results, **(extra or {}),
    }
    if out_dir is not None:
        write_outputs(result, Path(out_dir), panels, plots=plots)
    return result


def write_outputs(result: Dict[str, object], out: Path, panels: Sequence[Tuple[str, np.ndarray, np.ndarray, np.ndarray]] = (),
                  plots: bool = True) -> None:
    """Write ``metrics.json``, confusion PNGs and prediction panels of one :func:`evaluate_dataset` result."""
    out.mkdir(parents=True, exist_ok=True)
    js = {k: v for k, v in result.items() if k != "results"}
    js["results"] = {}
    for ls, per in result["results"].items():
        names, _ = get_label_set(ls)
        js["results"][ls] = {}
        for g, by_matching in per.items():
            js["results"][ls][g] = {}
            for matching, m in by_matching.items():
                if g == MEAN:
                    js["results"][ls][g][matching] = m
                    continue
                entry = metrics_to_json(m, names)
                entry["mapping_named"] = {str(i): (names[c] if c >= 0 else None) for i, c in enumerate(m["mapping"].tolist())}
                js["results"][ls][g][matching] = entry
                if plots:
                    plot_confusion(m["confusion"], m["mapping"], names, out / f"confusion_{ls}_{g}_{matching}.png",
                                   title=f"{result['dataset']} {g} ({ls}, {matching}): mIoU {100 * m['mIoU']:.1f}%")
    if panels:
        ls0 = result["label_sets"][0]
        _, pal = get_label_set(ls0)
        js["panels"] = _write_panels(out, list(panels), result["results"][ls0][ALL]["hungarian"]["mapping"], pal)
    (out / "metrics.json").write_text(json.dumps(js, indent=1))
    LOG.info("wrote %s", out / "metrics.json")


def summary_line(result: Dict[str, object]) -> str:
    """One stdout line per dataset: mIoU (Hungarian / majority) per label set, groups, speed."""
    parts = []
    for ls, per in result["results"].items():
        h, m = per[ALL]["hungarian"], per[ALL]["majority"]
        text = f"{ls} mIoU {100 * h['mIoU']:.1f}% (Hungarian) / {100 * m['mIoU']:.1f}% (majority), pixel acc {100 * h['pixel_accuracy']:.1f}%"
        groups = [g for g in per if g not in (ALL, MEAN)]
        if groups:
            text += "; " + ", ".join(f"{g} {100 * per[g]['hungarian']['mIoU']:.1f}" for g in groups)
            text += f", mean {100 * per[MEAN]['hungarian']['mIoU']:.1f}"
        parts.append(text)
    return (f"{result['dataset']} [{result['split']}, {result['n_images']} images]: " + "; ".join(parts)
            + f"; {result['images_per_s']:.2f} images/s")


# --------------------------------------------------------------------------------------------
# the paper suite
# --------------------------------------------------------------------------------------------
def run_suite(
    predict: Predict,
    root: PathLike,
    n_pred: int,
    out_dir: Optional[PathLike] = None,
    max_images: Optional[int] = None,
    datasets: Optional[Dict[str, PathLike]] = None,
    progress: bool = True,
    tag: str = "model",
    extra: Optional[Dict[str, object]] = None,
    echo: Callable[[str], None] = print,
    with_sample: bool = False,
    plots: bool = True,
) -> Dict[str, Dict[str, object]]:
    """Evaluate every benchmark present under ``root`` in the label sets of :data:`PAPER_TABLE`.

    Args:
        predict, n_pred, max_images, progress, tag, extra: as in :func:`evaluate_dataset`.
        root: folder holding the datasets (itself or sub-folders up to two levels,
            :func:`~drive_segment_training.benchmarks.find_datasets`); may be ``None`` when
            ``datasets`` is given.
        out_dir: results go to ``out_dir/<dataset>/`` plus ``out_dir/paper_table.md`` and
            ``out_dir/paper_table.json``.
        datasets: explicit ``{name: folder}`` (added to / overriding what ``root`` holds).
        echo: where the per-dataset lines and the table go (default ``print``).
        with_sample, plots: as in :func:`evaluate_dataset`.

    Returns:
        ``{dataset name: evaluate_dataset result}``.

    Raises:
        DriveSegmentError: no benchmark found, or any dataset's error (the run stops).
    """
    found: Dict[str, Path] = dict(find_datasets(root)) if root is not None else {}
    found.update({k: Path(v) for k, v in (datasets or {}).items()})
    if not found:
        raise DriveSegmentError(f"no benchmark dataset found under {root} (expected one of the layouts in drive_segment_training.benchmarks)")
    results: Dict[str, Dict[str, object]] = {}
    for name, folder in found.items():
        ds = load_dataset(folder, name)
        sets = tuple(ls for ls in suite_label_sets(name) if ls in ds.label_sets())
        res = evaluate_dataset(predict, ds, n_pred, sets, None if out_dir is None else Path(out_dir) / name,
                               max_images=max_images, progress=progress, tag=tag, extra=extra, with_sample=with_sample, plots=plots)
        results[name] = res
        echo(summary_line(res))
    table = format_paper_table(results)
    echo(table)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "paper_table.md").write_text(table + "\n")
        (out / "paper_table.json").write_text(json.dumps(paper_table_rows(results), indent=1))
    return results


def paper_table_rows(results: Dict[str, Dict[str, object]]) -> List[Dict[str, object]]:
    """Rows of :data:`PAPER_TABLE` with our Hungarian / majority mIoU (percent, ``None`` = not run)."""
    rows = []
    for r in PAPER_TABLE:
        ours = maj = None
        n = None
        res = results.get(r.dataset)
        if res is not None and r.label_set in res["results"] and r.group in res["results"][r.label_set]:
            per = res["results"][r.label_set][r.group]
            ours, maj = 100 * per["hungarian"]["mIoU"], 100 * per["majority"]["mIoU"]
            n = per["hungarian"].get("n_images")
        rows.append({"benchmark": r.label, "dataset": r.dataset, "label_set": r.label_set, "group": r.group,
                     "ours_hungarian": ours, "ours_majority": maj, "n_images": n, "drive_segment_paper": r.published})
    return rows


def format_paper_table(results: Dict[str, Dict[str, object]]) -> str:
    """Markdown table in the paper's layout: our mIoU beside Drive&Segment's published mIoU.

    Rows whose dataset was not evaluated show ``-``; the published column cites
    :data:`PAPER_TABLE` (Vobecky et al., ECCV 2022).
    """
    lines = ["| benchmark | images | ours mIoU % (Hungarian) | ours mIoU % (majority) | Drive&Segment (ECCV 2022) |",
             "|---|---:|---:|---:|---:|"]
    fmt = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
    for row in paper_table_rows(results):
        lines.append(f"| {row['benchmark']} | {row['n_images'] if row['n_images'] is not None else '-'} | {fmt(row['ours_hungarian'])} | "
                     f"{fmt(row['ours_majority'])} | {fmt(row['drive_segment_paper'])} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# CLI: drive-segment evaluate
# --------------------------------------------------------------------------------------------
class PredictionFolder:
    """Saved predictions as a predictor: ``DIR/<sample name with / -> _>.png`` uint8 cluster ids.

    Called as ``predict(rgb, sample)`` (``with_sample=True``); raises DriveSegmentError naming
    the missing / unreadable file.
    """

    def __init__(self, folder: PathLike) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise DriveSegmentError(f"predictions folder {self.folder} not found")

    def path_for(self, sample) -> Path:
        """The PNG expected for ``sample`` (a :class:`~drive_segment_training.benchmarks.Sample`): ``DIR/<name, / -> _>.png``."""
        return self.folder / (sample.name.replace("/", "_") + ".png")

    def __call__(self, rgb: np.ndarray, sample) -> np.ndarray:
        path = self.path_for(sample)
        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise DriveSegmentError(f"no prediction {path} (uint8 class-id PNG named after the image)")
        return img if img.ndim == 2 else img[..., 0]


def model_predictor(args) -> Tuple[Predict, int, Dict[str, object]]:
    """``(predict, n_pred, extra)`` for ``args.model`` through the deployed
    :class:`~drive_segment_ros.inference.backends.SegmentationModel` (same pre/post-processing
    and inference mode as the node)."""
    sliding = {k: v for k, v in (("window_size", args.window), ("window_stride", args.stride),
                                  ("im_size", args.im_size), ("batch_size", args.window_batch)) if v is not None}
    model = load_model(args.model, backend=args.backend, device=args.device, inference_mode=args.inference_mode,
                       sliding=sliding or None)
    extra: Dict[str, object] = {"model": str(args.model), "backend": model.backend.name, "device": model.backend.device,
                                "inference_mode": model.inference_mode, "backbone": model.metadata.get("backbone", "")}
    if model.inference_mode == "sliding":
        extra["sliding_window"] = model.sliding.to_dict()
    else:
        extra["input_size"] = list(model.backend.input_size)

    def predict(rgb: np.ndarray) -> np.ndarray:
        return model.predict(rgb)[0]

    return predict, model.n_classes, extra


def _cmd_evaluate(args) -> int:
    model = args.model_pos or args.model
    if (model is None) == (args.predictions is None):
        raise DriveSegmentError("give exactly one of MODEL (checkpoint dir, .onnx or engine) or --predictions DIR")
    if args.predictions is not None and args.n_pred is None:
        raise DriveSegmentError("--predictions needs --n-pred (number of predicted classes)")
    # list the images (and check every label file exists) before loading the model
    ds = None
    if args.suite is not None:
        if args.root is None:
            raise DriveSegmentError("--suite paper needs --root DIR (the folder holding the benchmark datasets)")
        if not find_datasets(args.root):
            raise DriveSegmentError(f"no benchmark dataset found under {args.root}")
    else:
        root = args.root
        if root is None:
            if args.dataset not in (None, "waymo"):
                raise DriveSegmentError(f"--dataset {args.dataset} needs --root DIR")
            root = Path(data_dir()) / "waymo_pvps_one_frame"
        ds = load_dataset(root, args.dataset, args.split)
    if args.predictions is not None:
        predict, n_pred, with_sample = PredictionFolder(args.predictions), int(args.n_pred), True
        extra: Dict[str, object] = {"predictions": str(args.predictions)}
        tag = args.tag or "predictions"
    else:
        args.model = model
        predict, n_pred, extra = model_predictor(args)
        with_sample, tag = False, args.tag or Path(str(model)).name
    out = None if args.out in (None, "", "-") else Path(args.out)
    if ds is None:
        run_suite(predict, args.root, n_pred, out, args.max_images, progress=not args.no_progress, tag=tag, extra=extra,
                  with_sample=with_sample)
        return 0
    res = evaluate_dataset(predict, ds, n_pred, (args.label_set,), out, args.max_images, progress=not args.no_progress,
                           tag=tag, extra=extra, with_sample=with_sample)
    print(summary_line(res))
    return 0


def add_cli(sub) -> None:
    """Register ``drive-segment evaluate`` (see :func:`_cmd_evaluate`)."""
    p = sub.add_parser(
        "evaluate",
        help="unsupervised evaluation (Hungarian / majority mIoU) on Cityscapes, KITTI, ACDC, Dark Zurich, "
             "Nighttime Driving, Waymo; --suite paper prints the paper's table",
        description="Predict every labelled image of a benchmark (official folder layout, auto-detected) through the "
                    "deployed SegmentationModel, accumulate the confusion matrix image by image, match clusters to "
                    "classes (Hungarian and majority) and report mIoU, pixel accuracy and per-class IoU. "
                    "Without --root: the Waymo sample frame in ../shared/data.",
    )
    p.add_argument("model_pos", nargs="?", default=None, metavar="MODEL", help="checkpoint directory, .onnx or TensorRT engine")
    p.add_argument("--model", default=None, help=argparse.SUPPRESS)
    p.add_argument("--predictions", default=None, metavar="DIR", help="evaluate saved predictions: DIR/<image name>.png uint8 ids")
    p.add_argument("--n-pred", type=int, default=None, help="number of predicted classes (with --predictions)")
    p.add_argument("--dataset", default=None, choices=DATASETS, help="benchmark layout (default: detected from --root)")
    p.add_argument("--root", "--data", dest="root", default=None, metavar="DIR", help="dataset root (or, with --suite, the folder holding them)")
    p.add_argument("--split", default=None, help="split (default: the labelled evaluation split of the dataset)")
    p.add_argument("--label-set", default="cityscapes19", choices=["cityscapes19", "cityscapes27"])
    p.add_argument("--suite", default=None, choices=["paper"], help="evaluate every benchmark under --root, print the paper's table")
    p.add_argument("--max-images", type=int, default=None, metavar="N", help="evaluate the first N images only")
    p.add_argument("--inference-mode", default="sliding", choices=["whole", "sliding"],
                   help="sliding windows as the authors' released inference (default) or one whole-image pass as the node's default")
    p.add_argument("--window", type=int, default=None, help="sliding window size (default: the model's)")
    p.add_argument("--stride", type=int, default=None, help="sliding window stride (default: the model's)")
    p.add_argument("--im-size", type=int, default=None, help="short side of the working scale (default: the model's)")
    p.add_argument("--window-batch", type=int, default=None, help="windows per forward pass")
    p.add_argument("--out", default="eval_out", help="metrics.json, confusion PNGs and panels go here ('-' = none)")
    p.add_argument("--tag", default=None, help="name of what is evaluated (JSON)")
    p.add_argument("--backend", default="auto", help="inference backend: auto, torch, onnxruntime, tensorrt")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_evaluate)

