"""Benchmark loaders (official layouts) and streaming evaluation, on tiny fixtures written here.

Every fixture image encodes the cluster a fake model predicts in its red channel
(``cluster = R // 40``), so each confusion matrix and mIoU below is computed by hand.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from drive_segment_ros.types import DriveSegmentError
from drive_segment_training import benchmark_eval as be
from drive_segment_training import benchmarks as bm
from drive_segment_training.evaluation import evaluate_predictions

# Cityscapes labelIds used below: 0 unlabeled (void), 7 road, 23 sky, 26 car.
# image A (2x4): gt [[7 7 7 26], [7 7 26 0]]  pred [[0 0 1 1], [0 0 1 2]]
GT_A = np.array([[7, 7, 7, 26], [7, 7, 26, 0]], np.uint8)
PRED_A = np.array([[0, 0, 1, 1], [0, 0, 1, 2]], np.uint8)
# image B (2x4): all sky, predicted cluster 2
GT_B = np.full((2, 4), 23, np.uint8)
PRED_B = np.full((2, 4), 2, np.uint8)
# Hand computation over A: road TP 4 FN 1 -> 4/5; car TP 2 FP 1 -> 2/3; mIoU (0.8 + 2/3) / 2.
MIOU_A = (0.8 + 2 / 3) / 2
# A + B: sky TP 8 -> IoU 1; mIoU (0.8 + 2/3 + 1) / 3; pixel acc (6 + 8) / (7 + 8).
MIOU_AB = (0.8 + 2 / 3 + 1.0) / 3
PACC_AB = 14 / 15


def fake_predict(rgb: np.ndarray) -> np.ndarray:
    return (rgb[..., 0] // 40).astype(np.uint8)


def _write(img_path: Path, pred: np.ndarray, label_path: Path, gt: np.ndarray) -> None:
    img_path.parent.mkdir(parents=True, exist_ok=True)
    label_path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.zeros(pred.shape + (3,), np.uint8)
    rgb[..., 0] = pred * 40
    rgb[..., 1] = 77
    assert cv2.imwrite(str(img_path), rgb[..., ::-1])
    assert cv2.imwrite(str(label_path), gt)


def write_cityscapes(root: Path) -> Path:
    for city, stem, pred, gt in (("aachen", "aachen_000000_000019", PRED_A, GT_A), ("bochum", "bochum_000000_000313", PRED_B, GT_B)):
        _write(root / "leftImg8bit" / "val" / city / f"{stem}_leftImg8bit.png", pred,
               root / "gtFine" / "val" / city / f"{stem}_gtFine_labelIds.png", gt)
    return root


def write_kitti(root: Path) -> Path:
    for i, (pred, gt) in enumerate(((PRED_A, GT_A), (PRED_B, GT_B))):
        name = f"{2 * i:06d}_10.png"
        _write(root / "training" / "image_2" / name, pred, root / "training" / "semantic" / name, gt)
    return root


def write_acdc(root: Path) -> Path:
    for cond, seq, pred, gt in (("fog", "GOPR0475", PRED_A, GT_A), ("night", "GOPR0351", PRED_B, GT_B)):
        stem = f"{seq}_frame_000041"
        _write(root / "rgb_anon" / cond / "val" / seq / f"{stem}_rgb_anon.png", pred,
               root / "gt" / cond / "val" / seq / f"{stem}_gt_labelIds.png", gt)
    return root


def write_dark_zurich(root: Path) -> Path:
    for k, (pred, gt) in enumerate(((PRED_A, GT_A), (PRED_B, GT_B))):
        stem = f"GOPR0356_frame_{321 + 3 * k:06d}"
        _write(root / "rgb_anon" / "val" / "night" / "GOPR0356" / f"{stem}_rgb_anon.png", pred,
               root / "gt" / "val" / "night" / "GOPR0356" / f"{stem}_gt_labelIds.png", gt)
    return root


def write_nighttime(root: Path) -> Path:
    for k, (pred, gt) in enumerate(((PRED_A, GT_A), (PRED_B, GT_B))):
        stem = f"0_frame_{92 + k:04d}"
        _write(root / "leftImg8bit" / "test" / "night" / f"{stem}_leftImg8bit.png", pred,
               root / "gtCoarse_daytime_trainvaltest" / "test" / "night" / f"{stem}_gtCoarse_labelIds.png", gt)
    return root


def write_waymo(root: Path) -> Path:
    # Waymo classes: 20 ROAD -> road, 2 CAR -> car, 25 SKY -> sky, 0 UNDEFINED -> ignore
    to_waymo = np.zeros(256, np.uint8)
    to_waymo[[7, 26, 23, 0]] = [20, 2, 25, 0]
    cams = {}
    for name, pred, gt in (("FRONT", PRED_A, GT_A), ("SIDE_LEFT", PRED_B, GT_B)):
        _write(root / f"{name}.png", pred, root / f"{name}_semantic.png", to_waymo[gt])
        cams[name] = {"image_file": f"{name}.png", "semantic_file": f"{name}_semantic.png"}
    (root / "frame.json").write_text(json.dumps({"cameras": cams}))
    return root


WRITERS = {"cityscapes": write_cityscapes, "kitti-semantics": write_kitti, "acdc": write_acdc,
           "dark-zurich": write_dark_zurich, "nighttime-driving": write_nighttime, "waymo": write_waymo}


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_each_layout_detected_and_scored(tmp_path, name):
    root = WRITERS[name](tmp_path / name)
    assert bm.detect_dataset(root) == name
    ds = bm.load_dataset(root)  # auto-detected
    assert ds.name == name and len(ds) == 2
    res = be.evaluate_dataset(fake_predict, ds, n_pred=3, label_sets=("cityscapes19",), progress=False)
    h = res["results"]["cityscapes19"]["all"]["hungarian"]
    assert h["mIoU"] == pytest.approx(MIOU_AB)
    assert h["pixel_accuracy"] == pytest.approx(PACC_AB)
    assert res["n_images"] == 2


def test_cityscapes_19_and_27_and_mapping(tmp_path):
    ds = bm.load_dataset(write_cityscapes(tmp_path / "cs"), "cityscapes")
    assert [s.name for s in ds.samples] == ["aachen/aachen_000000_000019", "bochum/bochum_000000_000313"]
    res = be.evaluate_dataset(fake_predict, ds, 3, ("cityscapes19", "cityscapes27"), max_images=1, progress=False)
    for ls, road, car in (("cityscapes19", 0, 13), ("cityscapes27", 0, 19)):
        m = res["results"][ls]["all"]["hungarian"]
        assert m["mIoU"] == pytest.approx(MIOU_A)
        assert m["mapping"][0] == road and m["mapping"][1] == car
        assert m["per_class_iou"][road] == pytest.approx(0.8)
        assert m["per_class_iou"][car] == pytest.approx(2 / 3)
        assert m["confusion"].sum() == 7  # the void pixel is ignored
    assert res["n_images"] == 1


def test_trainid_labels_19_only(tmp_path):
    root = tmp_path / "cs"
    lut = np.full(256, 255, np.uint8)
    lut[[7, 23, 26]] = [0, 10, 13]
    _write(root / "leftImg8bit/val/ulm/ulm_000000_000019_leftImg8bit.png", PRED_A,
           root / "gtFine/val/ulm/ulm_000000_000019_gtFine_labelTrainIds.png", lut[GT_A])
    ds = bm.load_dataset(root)
    assert ds.label_sets() == ("cityscapes19",)
    res = be.evaluate_dataset(fake_predict, ds, 3, progress=False)
    assert res["results"]["cityscapes19"]["all"]["hungarian"]["mIoU"] == pytest.approx(MIOU_A)
    with pytest.raises(DriveSegmentError, match="labelId"):
        be.evaluate_dataset(fake_predict, ds, 3, ("cityscapes27",), progress=False)


def test_hungarian_vs_majority_hand_checked(tmp_path):
    # one image, all road; half predicted cluster 0, half cluster 1:
    # Hungarian keeps one cluster for road -> IoU 1/2; majority maps both to road -> IoU 1.
    root = tmp_path / "kitti"
    pred = np.array([[0, 0, 1, 1]], np.uint8)
    _write(root / "training/image_2/000000_10.png", pred, root / "training/semantic/000000_10.png", np.full((1, 4), 7, np.uint8))
    res = be.evaluate_dataset(fake_predict, bm.load_dataset(root), 2, progress=False)
    per = res["results"]["cityscapes19"]["all"]
    assert per["hungarian"]["mIoU"] == pytest.approx(0.5)
    assert per["majority"]["mIoU"] == pytest.approx(1.0)


def test_acdc_per_condition_and_mean(tmp_path):
    ds = bm.load_dataset(write_acdc(tmp_path / "acdc"))
    assert ds.groups == ("night", "fog")
    res = be.evaluate_dataset(fake_predict, ds, 3, progress=False)
    per = res["results"]["cityscapes19"]
    assert per["fog"]["hungarian"]["mIoU"] == pytest.approx(MIOU_A)
    assert per["night"]["hungarian"]["mIoU"] == pytest.approx(1.0)
    assert per["mean"]["hungarian"]["mIoU"] == pytest.approx((MIOU_A + 1.0) / 2)
    assert per["all"]["hungarian"]["mIoU"] == pytest.approx(MIOU_AB)
    line = be.summary_line(res)
    assert line.startswith("acdc [val, 2 images]") and "fog 73.3" in line and "night 100.0" in line


def test_missing_label_names_the_file(tmp_path):
    root = write_dark_zurich(tmp_path / "dz")
    victim = root / "gt/val/night/GOPR0356/GOPR0356_frame_000321_gt_labelIds.png"
    victim.unlink()
    with pytest.raises(DriveSegmentError, match=r"missing label file .*GOPR0356_frame_000321_gt_labelIds\.png"):
        bm.load_dataset(root)


def test_dark_zurich_official_list_and_train_ids(tmp_path):
    """With ``lists_file_names/val_filenames.txt`` (the devkit's list, entries
    ``val/night/{seq}/{stem}``) exactly the listed images are scored, here with the devkit's
    ``_gt_labelTrainIds.png`` labels; a listed image that is missing is named."""
    root = tmp_path / "dz"
    to_train = np.full(256, 255, np.uint8)
    to_train[[7, 23, 26]] = [0, 10, 13]  # road, sky, car (cityscapesScripts labels.py)
    entries = []
    for k, (pred, gt) in enumerate(((PRED_A, GT_A), (PRED_B, GT_B), (PRED_B, GT_A))):
        entry = f"val/night/GOPR0356/GOPR0356_frame_{321 + 3 * k:06d}"
        _write(root / "rgb_anon" / f"{entry}_rgb_anon.png", pred, root / "gt" / f"{entry}_gt_labelTrainIds.png",
               to_train[gt])
        entries.append(entry)
    (root / "lists_file_names").mkdir()
    # the third image is not listed: not evaluated
    (root / "lists_file_names" / "val_filenames.txt").write_text("\n".join(entries[:2]) + "\n")
    ds = bm.load_dataset(root)
    assert ds.name == "dark-zurich" and [s.name for s in ds.samples] == [
        "GOPR0356/GOPR0356_frame_000321", "GOPR0356/GOPR0356_frame_000324"]
    assert {s.label_kind for s in ds.samples} == {"trainIds"}
    res = be.evaluate_dataset(fake_predict, ds, n_pred=3, label_sets=("cityscapes19",), progress=False)
    assert res["results"]["cityscapes19"]["all"]["hungarian"]["mIoU"] == pytest.approx(MIOU_AB)
    (root / "rgb_anon" / f"{entries[1]}_rgb_anon.png").unlink()
    with pytest.raises(DriveSegmentError, match=r"missing image file .*GOPR0356_frame_000324_rgb_anon\.png listed in"):
        bm.load_dataset(root)


def test_mismatched_label_stops_and_writes_nothing(tmp_path):
    root = write_nighttime(tmp_path / "nd")
    label = sorted((root / "gtCoarse_daytime_trainvaltest/test/night").glob("*.png"))[1]
    cv2.imwrite(str(label), np.zeros((3, 4), np.uint8))
    out = tmp_path / "out"
    with pytest.raises(DriveSegmentError, match=label.name):
        be.evaluate_dataset(fake_predict, bm.load_dataset(root), 3, out_dir=out, progress=False)
    assert not (out / "metrics.json").exists()


def test_streaming_equals_one_shot_and_memory_is_constant():
    rng = np.random.default_rng(0)
    preds = [rng.integers(0, 5, (6, 7)) for _ in range(40)]
    gts = [np.where(rng.random((6, 7)) < 0.1, 255, rng.integers(0, 19, (6, 7))) for _ in range(40)]
    acc = be.StreamingConfusion(5, ("cityscapes19",))
    acc.update(preds[0], {"cityscapes19": gts[0]})
    size_one = sum(c.nbytes for c in acc.conf.values())
    for p, g in zip(preds[1:], gts[1:]):
        acc.update(p, {"cityscapes19": g})
    assert sum(c.nbytes for c in acc.conf.values()) == size_one
    one_shot = evaluate_predictions([np.concatenate(preds)], [np.concatenate(gts)], 5, 19)
    streamed = acc.metrics("cityscapes19")["hungarian"]
    np.testing.assert_array_equal(streamed["confusion"], one_shot["confusion"])
    assert streamed["mIoU"] == pytest.approx(one_shot["mIoU"])


def test_outputs_written(tmp_path):
    ds = bm.load_dataset(write_cityscapes(tmp_path / "cs"))
    out = tmp_path / "out"
    be.evaluate_dataset(fake_predict, ds, 3, ("cityscapes19", "cityscapes27"), out_dir=out, n_panels=2, progress=False)
    js = json.loads((out / "metrics.json").read_text())
    h = js["results"]["cityscapes19"]["all"]["hungarian"]
    assert h["mIoU"] == pytest.approx(MIOU_AB)
    assert h["mapping_named"]["0"] == "road" and h["mapping_named"]["1"] == "car" and h["mapping_named"]["2"] == "sky"
    assert js["results"]["cityscapes27"]["all"]["majority"]["per_class_iou_named"]["car"] == pytest.approx(2 / 3)
    for ls in ("cityscapes19", "cityscapes27"):
        for matching in ("hungarian", "majority"):
            assert (out / f"confusion_{ls}_all_{matching}.png").is_file()
    assert len(js["panels"]) == 2
    panel = cv2.imread(str(out / js["panels"][0]))
    assert panel.shape == (2, 12, 3)
    # the prediction third of panel 0 uses the matched Cityscapes colours: road (128, 64, 128) at (0, 0)
    assert tuple(panel[0, 8][::-1]) == (128, 64, 128)


def test_suite_finds_everything_and_prints_paper_table(tmp_path):
    root = tmp_path / "bench"
    for name, writer in WRITERS.items():
        writer(root / name.replace("-", "_"))
    assert set(bm.find_datasets(root)) == set(WRITERS)
    lines = []
    results = be.run_suite(fake_predict, root, 3, out_dir=tmp_path / "out", progress=False, echo=lines.append, plots=False)
    assert set(results) == set(WRITERS)
    table = lines[-1]
    assert "| Cityscapes-19 | 2 | 82.2 |" in table and "| 21.8 |" in table
    assert "| Cityscapes-27 | 2 | 82.2 |" in table and "| 15.3 |" in table
    assert "| ACDC fog | 1 | 73.3 |" in table and "| ACDC snow | - | - | - | 14.6 |" in table
    assert "| KITTI semantics-19 | 2 | 82.2 |" in table
    rows = json.loads((tmp_path / "out" / "paper_table.json").read_text())
    assert [r["drive_segment_paper"] for r in rows[:8]] == [21.8, 15.3, 14.2, 18.9, 13.8, 14.5, 14.9, 14.6]
    assert (tmp_path / "out" / "acdc" / "metrics.json").is_file()
    assert len(lines) == len(WRITERS) + 1


def test_unknown_layout_and_bad_names(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DriveSegmentError, match="cannot tell the dataset layout"):
        bm.load_dataset(tmp_path / "empty")
    with pytest.raises(DriveSegmentError, match="unknown dataset"):
        bm.load_dataset(tmp_path / "empty", "mapillary")
    with pytest.raises(DriveSegmentError, match="only the 'training' split"):
        bm.load_kitti_semantics(write_kitti(tmp_path / "k"), "val")
