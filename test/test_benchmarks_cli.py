"""``drive-segment evaluate``: the real KITTI semantics frames through the deployed model path, and its errors."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from drive_segment_training.data import data_dir

KITTI = Path(data_dir()) / "kitti_semantics"


def _need_kitti() -> Path:
    if not (KITTI / "training" / "semantic").is_dir():
        pytest.skip(f"real KITTI semantics frames not found under {KITTI} (set DRIVE_SEGMENT_DATA or place ../shared/data beside the checkout)")
    return KITTI


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory):
    """MobileNetV2 (offline real weights) + conv head, 8 classes, 64x192 input: fast on 2 cores."""
    import torch

    from drive_segment_ros.models.checkpoint import save_checkpoint
    from drive_segment_ros.models.segmenter import SegmenterConfig, build_segmenter

    torch.manual_seed(0)
    cfg = SegmenterConfig.for_backbone("mobilenetv2_deepsort", n_classes=8, input_size=(64, 192))
    directory = tmp_path_factory.mktemp("ckpt") / "small"
    save_checkpoint(directory, build_segmenter(cfg), cfg, {"stage": "test"})
    return directory


def test_real_kitti_semantics_layout():
    from drive_segment_training.benchmarks import detect_dataset, load_dataset

    root = _need_kitti()
    assert detect_dataset(root) == "kitti-semantics"
    ds = load_dataset(root)
    assert len(ds) == 100 and ds.split == "training"
    assert ds.label_sets() == ("cityscapes19", "cityscapes27")
    rgb, gts = ds.load(ds.samples[0], ("cityscapes19", "cityscapes27"))
    assert rgb.shape == (375, 1242, 3) and rgb.dtype == np.uint8
    present = set(np.unique(gts["cityscapes19"]).tolist())
    assert present <= set(range(19)) | {255} and len(present - {255}) >= 5


@pytest.mark.parametrize("mode,label_set", [("sliding", "cityscapes19"), ("whole", "cityscapes27")])
def test_evaluate_cli_on_real_kitti(small_checkpoint, tmp_path, capsys, mode, label_set):
    from drive_segment_training.cli import main

    root = _need_kitti()
    out = tmp_path / "eval"
    rc = main(["evaluate", str(small_checkpoint), "--root", str(root), "--max-images", "3", "--label-set", label_set,
               "--inference-mode", mode, "--out", str(out), "--no-progress", "--backend", "torch", "--device", "cpu"])
    assert rc == 0
    stdout = capsys.readouterr().out.strip().splitlines()
    assert stdout[-1].startswith("kitti-semantics [training, 3 images]: " + label_set)
    js = json.loads((out / "metrics.json").read_text())
    assert js["n_images"] == 3 and js["inference_mode"] == mode and js["dataset"] == "kitti-semantics"
    h = js["results"][label_set]["all"]["hungarian"]
    assert 0.0 < h["mIoU"] <= 1.0 and len(h["mapping"]) == 8
    assert (out / f"confusion_{label_set}_all_hungarian.png").is_file() and len(js["panels"]) == 3
    if mode == "sliding":
        # window = the model input (64x192), stride 3/4, scale so a frame just covers one window
        assert js["sliding_window"]["window_size"] == [64, 192] and js["sliding_window"]["window_stride"] == [48, 144]


def test_evaluate_cli_missing_label_is_one_line_and_writes_nothing(small_checkpoint, tmp_path, capsys):
    import cv2

    from drive_segment_training.cli import main

    root = tmp_path / "kitti"
    for name in ("000000_10.png", "000002_10.png"):
        for sub in ("image_2", "semantic"):
            (root / "training" / sub).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / "training" / sub / name), np.full((40, 120, 3) if sub == "image_2" else (40, 120), 7, np.uint8))
    (root / "training" / "semantic" / "000002_10.png").unlink()
    out = tmp_path / "eval"
    rc = main(["evaluate", str(small_checkpoint), "--root", str(root), "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0
    assert err[-1].startswith("drive-segment: error: kitti-semantics: missing label file") and "000002_10.png" in err[-1]
    assert not (out / "metrics.json").exists()


def test_evaluate_cli_saved_predictions_on_waymo(tmp_path, capsys):
    """Saved predictions = ground truth with permuted ids (ignore -> extra cluster): Hungarian mIoU 1."""
    import cv2

    from drive_segment_training.benchmarks import load_dataset
    from drive_segment_training.cli import main

    waymo = Path(data_dir()) / "waymo_pvps_one_frame"
    if not (waymo / "frame.json").is_file():
        pytest.skip(f"Waymo sample frame not found under {waymo}")
    ds = load_dataset(waymo)
    perm = np.random.default_rng(3).permutation(19)
    pred_dir = tmp_path / "preds"
    pred_dir.mkdir()
    for s in ds.samples:
        gt = ds.load(s)[1]["cityscapes19"]
        cv2.imwrite(str(pred_dir / f"{s.name}.png"), np.where(gt == 255, 19, perm[np.minimum(gt, 18)]).astype(np.uint8))
    rc = main(["evaluate", "--predictions", str(pred_dir), "--n-pred", "20", "--out", str(tmp_path / "eval"), "--no-progress"])
    assert rc == 0
    js = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    per = js["results"]["cityscapes19"]["all"]
    assert per["hungarian"]["mIoU"] == pytest.approx(1.0) and per["majority"]["mIoU"] == pytest.approx(1.0)
    assert per["hungarian"]["n_images"] == 5 and per["hungarian"]["mapping"][19] == -1
