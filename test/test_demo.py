"""The main job end to end on the real samples, at tiny settings (the full run is `make demo`).

Every check here can fail for a real defect: the metrics are recomputed from the saved confusion
matrices (Hungarian optimality, one-to-one mapping, IoU arithmetic, majority >= Hungarian pixel
accuracy), the numbers the report prints equal the saved ones, the backbone the report names is the
one that ran, every report image resolves relative to the report (and decodes in headless chromium
where installed), and the ONNX deployment path matches torch. A second test checks the output of
the full `make demo` (when present): the student beats the per-pixel baseline by the demo's margin,
and README's table prints the same numbers.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from drive_segment_training.report import image_sources
from report_checks import BROWSERS, decoded_images

ROOT = Path(__file__).resolve().parents[1]
TAGS = ("baseline", "teacher", "student")


def _miou_and_accuracy(conf: np.ndarray, mapping: np.ndarray) -> tuple[float, float]:
    """Independent re-implementation: IoU per gt class present, pixels of clusters mapped to it."""
    n_gt = conf.shape[1]
    pred_as = np.zeros((n_gt, n_gt), np.float64)  # [gt, predicted class]
    for cluster, cls in enumerate(mapping):
        if cls >= 0:
            pred_as[:, cls] += conf[cluster]
    tp = np.diag(pred_as)
    gt_total = conf.sum(axis=0)
    pred_total = pred_as.sum(axis=0)
    present = gt_total > 0
    iou = tp[present] / (gt_total[present] + pred_total[present] - tp[present])
    return float(iou.mean()), float(tp.sum() / conf.sum())


def _report_metric_rows(html: str) -> dict[str, list[str]]:
    table = re.search(r"<table>\s*<tr><th>method</th>(.*?)</table>", html, re.S)
    assert table, "metrics table missing from the report"
    rows = {}
    for row in re.findall(r"<tr>(<td>.*?)</tr>", table.group(1), re.S):
        cells = re.findall(r"<td>(.*?)</td>", row)
        rows[cells[0]] = cells[1:]
    return rows


def _check_report_images(report: Path, expected: int) -> None:
    from drive_segment_training.report import report_image_problems

    sources = image_sources(report)
    assert len(sources) == expected, (len(sources), expected)
    assert report_image_problems(report) == []
    browser = next((b for b in map(shutil.which, BROWSERS) if b), None)
    if browser:  # the pure check above always runs; the decode check where chromium is installed
        images = decoded_images(report, browser)
        assert [i["src"] for i in images] == sources
        broken = [i["src"] for i in images if not i["naturalWidth"]]
        assert not broken, f"images that did not decode in {browser}: {broken}"


@pytest.mark.slow
def test_demo_runs_every_stage_and_writes_report(data_root, tmp_path, monkeypatch):
    from drive_segment_training.demo import DemoConfig, run_demo

    monkeypatch.chdir(tmp_path)  # a relative --out, as `make demo` runs it (report images broke there)
    cfg = DemoConfig(
        data=str(data_root),
        out="demo",
        k=8,
        teacher_iterations=2,
        student_iterations=2,
        crop_size=(128, 256),
        eval_size=(192, 288),
        eval_max_images=4,  # KITTI semantics frames evaluated (all 5 Waymo images are)
        batch_size=2,
        device="cpu",
    )
    report = run_demo(cfg)
    out = tmp_path / "demo"
    assert report.resolve() == (out / "report.html").resolve()
    html = report.read_text()
    summary = json.loads((out / "summary.json").read_text())

    # the backbone the report names is the one that ran; the non-self-supervised warning is there
    assert summary["backbone"] == cfg.backbone == "mobilenetv2_deepsort"
    assert re.findall(r"Backbone: (\S+) ", html) == [cfg.backbone]
    assert f"backbone {cfg.backbone} " in html  # subtitle
    assert summary["self_supervised"] is False  # ImageNet-supervised MobileNetV2 weights
    assert html.count("class='warn'") == 1 and "ImageNet-SUPERVISED" in html
    assert summary["k"] == 8

    # metrics: recomputed from the saved confusion matrices, equal to summary.json and the report table
    rows = _report_metric_rows(html)
    assert set(rows) == set(TAGS)
    totals = set()
    for tag in TAGS:
        js = json.loads((out / "eval" / tag / "waymo" / "metrics.json").read_text())
        assert js["backbone"] == cfg.backbone
        h, m = js["results"]["cityscapes19"]["all"]["hungarian"], js["results"]["cityscapes19"]["all"]["majority"]
        conf = np.asarray(h["confusion"], np.int64)
        assert conf.shape == (8, 19) and np.array_equal(conf, np.asarray(m["confusion"]))
        totals.add(int(conf.sum()))
        hmap, mmap = np.asarray(h["mapping"]), np.asarray(m["mapping"])
        matched = hmap[hmap >= 0]
        assert len(matched) == min(conf.shape) and len(set(matched.tolist())) == len(matched), "not one-to-one"
        r, c = linear_sum_assignment(conf, maximize=True)
        assert conf[np.arange(len(hmap))[hmap >= 0], matched].sum() == conf[r, c].sum(), "Hungarian not optimal"
        nonempty = conf.sum(axis=1) > 0
        assert np.array_equal(mmap[nonempty], conf.argmax(axis=1)[nonempty])
        for name, mj, mapping in (("hungarian", h, hmap), ("majority", m, mmap)):
            miou, acc = _miou_and_accuracy(conf, mapping)
            assert mj["mIoU"] == pytest.approx(miou, abs=1e-9), (tag, name)
            assert mj["pixel_accuracy"] == pytest.approx(acc, abs=1e-9), (tag, name)
            assert summary["metrics"][tag][name] == {"mIoU": pytest.approx(miou, abs=1e-9), "pixel_accuracy": pytest.approx(acc, abs=1e-9)}
        assert m["pixel_accuracy"] >= h["pixel_accuracy"] - 1e-12  # many-to-one can only match more pixels
        printed = [f"{100 * v:.1f}" for v in (h["mIoU"], h["pixel_accuracy"], m["mIoU"], m["pixel_accuracy"])]
        assert rows[tag] == printed, (tag, rows[tag], printed)
    assert len(totals) == 1, "the methods were scored on different pixels"

    # the on-vehicle path: the ONNX export matches torch through the same SegmentationModel
    deploy = summary["deploy"]
    assert deploy["max_abs_diff"] < 1e-3
    assert deploy["ort_vs_torch_pixel_agreement"] > 0.999
    assert abs(deploy["ort_mIoU"] - deploy["torch_mIoU"]) < 1e-3

    # every stage left its pictures, and every picture of the report loads relative to the report
    n_props = len(list((out / "proposals").glob("*_overlay.png")))
    n_pseudo = len([p for p in (out / "pseudo" / "previews").iterdir() if p.suffix in (".png", ".jpg")])
    n_pred = len(list((out / "predictions").glob("*.png")))
    assert n_props == 7 and n_pseudo == 7 and n_pred == 14  # 1 KITTI + 6 nuScenes images; teacher + student
    assert (out / "eval" / "student" / "waymo" / "confusion_cityscapes19_all_hungarian.png").is_file()

    # proposal quality on real labels: both backends scored, the tuned range-image ground meets its goal
    quality = summary["proposal_quality"]
    assert "LiDAR proposal quality on real labels" in html
    if (data_root / "semantickitti_seq00").is_dir():
        ground = quality["ground"]["range_image"]
        assert ground["n_scans"] == 3 and ground["recall"] >= 97.0 and ground["f1"] >= 96.3, ground
        assert set(quality["ground"]) == {"range_image", "dbscan"}
    if (data_root / "kitti_object").is_dir():
        total = quality["objects"]["range_image"]["total"]
        assert total["evaluated"] == total["recalled"] + total["under"] + total["over"] + total["missed"] > 0

    # the paper's table layout on KITTI semantics + Waymo, sliding-window inference, throughput
    assert "Drive&amp;Segment (paper) mIoU %" in html or "Drive&Segment (paper) mIoU %" in html
    kitti = json.loads((out / "eval" / "student" / "kitti-semantics" / "metrics.json").read_text())
    assert kitti["n_images"] == 4 and kitti["inference_mode"] == "sliding"
    win, stride = kitti["sliding_window"]["window_size"], kitti["sliding_window"]["window_stride"]
    assert all(0 < st <= w for st, w in zip(stride, win))  # windows of the model input, overlapping
    bench = summary["benchmarks"]["student"]
    assert bench["n_images"] == {"kitti-semantics": 4, "waymo": 5} and bench["images_per_s"]["kitti-semantics"] > 0
    row = next(r for r in bench["paper_table"] if r["benchmark"] == "KITTI semantics-19")
    assert row["ours_hungarian"] == pytest.approx(100 * kitti["results"]["cityscapes19"]["all"]["hungarian"]["mIoU"])
    assert [r["drive_segment_paper"] for r in bench["paper_table"][:2]] == [21.8, 15.3]
    n_kitti_figs = 1 + 3  # student: KITTI confusion + 3 panels
    n_ego = len(list((out / "ego_motion").glob("*.png")))  # compensation off vs on, 2 nuScenes cameras
    assert n_ego == 2
    _check_report_images(report, expected=3 + 6 + n_kitti_figs + n_props + n_pseudo + 2 + n_pred + n_ego)


def _full_demo_summary() -> dict:
    path = ROOT / "demo_out" / "summary.json"
    if not path.is_file():
        pytest.skip(f"no full demo output at {path} (run `make demo`; it takes ~6 minutes)")
    summary = json.loads(path.read_text())
    cfg = summary.get("config", {})
    if (cfg.get("teacher_iterations"), cfg.get("student_iterations"), cfg.get("k")) != (150, 100, 30):
        pytest.skip(f"{path} is not from the default `make demo` settings: {cfg}")
    return summary


def test_full_demo_student_beats_baseline_and_readme_matches():
    """`make demo` output: student > per-pixel k-means baseline (Hungarian), README prints the same numbers."""
    summary = _full_demo_summary()
    met = summary["metrics"]
    assert summary["backbone"] == "mobilenetv2_deepsort"
    # the demo's measured margin is ~6 mIoU points and ~30 pixel-accuracy points
    assert met["student"]["hungarian"]["mIoU"] >= met["baseline"]["hungarian"]["mIoU"] + 0.03
    assert met["student"]["hungarian"]["pixel_accuracy"] >= met["baseline"]["hungarian"]["pixel_accuracy"] + 0.15
    assert met["teacher"]["hungarian"]["mIoU"] >= met["baseline"]["hungarian"]["mIoU"] + 0.03
    readme = (ROOT / "README.md").read_text()
    names = {"baseline": r"per-pixel k-means baseline[^|]*", "teacher": "teacher", "student": "student"}
    for tag, label in names.items():
        row = re.search(rf"^\| {label} \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|", readme, re.M)
        assert row, f"README demo table has no {tag} row"
        m = met[tag]
        expected = [f"{100 * m['hungarian']['mIoU']:.1f}", f"{100 * m['hungarian']['pixel_accuracy']:.1f}",
                    f"{100 * m['majority']['mIoU']:.1f}"]
        assert list(row.groups()) == expected, (tag, row.groups(), expected)
    # 3 confusion matrices, 6 Waymo predictions, 7 proposal overlays, 7 pseudo-label previews,
    # 2 loss curves, 14 teacher/student predictions, the student's KITTI-semantics confusion matrix and
    # 3 KITTI panels (+ 2 ego-motion figures in runs that have them)
    _check_report_images(ROOT / "demo_out" / "report.html", expected=43 + len(list((ROOT / "demo_out" / "ego_motion").glob("*.png"))))
