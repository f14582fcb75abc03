"""Teacher / student distillation (training/trainer.py, losses.py, train_config.py, train_cli.py): known answers, overfit, checkpoints, resume."""
from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from drive_segment_ros.types import DriveSegmentError
from drive_segment_training.datasets import make_synthetic_pseudo_label_dir, read_frame
from drive_segment_ros.inference.backends import load_model
from drive_segment_training.losses import distillation_loss, refine_with_segments
from drive_segment_training.train_cli import add_cli
from drive_segment_training.train_config import TrainConfig
from drive_segment_training.trainer import Trainer, ema_update, poly_lr_factor, train_student, train_teacher




def _cfg(pseudo, out, **kw):
    base = dict(pseudo_dir=str(pseudo), out_dir=str(out), backbone="mobilenetv2_deepsort", decoder="conv", crop_size=(64, 96), batch_size=2, iterations=4,
                lr=3e-3, backbone_lr_mult=1.0, scale_range=(1.0, 1.0), photometric=False, copy_paste_prob=0.0,
                checkpoint_every=1000, device="cpu", seed=0)
    base.update(kw)
    return TrainConfig.from_yaml(None, "teacher", **base)


# ---------------------------------------------------------------- refinement (known answers)
def test_refine_hard_majority_and_outside_untouched():
    K, H, W = 4, 2, 4
    probs = torch.zeros(2, K, H, W)
    # Image 0: segment 5 covers row 0; its pixels vote 1, 1, 1, 3 (3:1).
    votes = [1, 1, 1, 3]
    for x, c in enumerate(votes):
        probs[0, c, 0, x] = 0.7
        probs[0, (c + 1) % K, 0, x] = 0.3
    probs[0, 2, 1, :] = 1.0  # row 1: outside any segment, teacher says class 2
    # Image 1: the same id 5 must be a different segment (votes 0, 0, 2, 2 -> tie -> class 0).
    for x, c in enumerate([0, 2, 0, 2]):
        probs[1, c, 0, x] = 1.0
    probs[1, 3, 1, :] = 1.0
    seg = torch.full((2, H, W), -1, dtype=torch.long)
    seg[:, 0, :] = 5
    out = refine_with_segments(probs, seg, mode="hard")
    assert out.shape == probs.shape and out.dtype == torch.float32
    assert torch.equal(out[0, :, 0, :].argmax(0), torch.tensor([1, 1, 1, 1]))
    assert torch.equal(out[0, :, 0, :], F.one_hot(torch.full((4,), 1), K).T.float())
    assert torch.equal(out[1, :, 0, :].argmax(0), torch.tensor([0, 0, 0, 0]))
    assert torch.equal(out[:, :, 1, :], probs[:, :, 1, :])  # outside: teacher prediction kept
    assert torch.equal(probs[0, 3, 0, 3], torch.tensor(0.7))  # input not modified


def test_refine_soft_mean_probabilities():
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(1, 3, 3, 3, generator=g), dim=1)
    seg = torch.tensor([[[0, 0, -1], [7, 7, 7], [-1, 0, 7]]])
    out = refine_with_segments(probs, seg, mode="soft")
    for sid in (0, 7):
        m = seg[0] == sid
        mean = probs[0][:, m].mean(1)
        for y, x in m.nonzero().tolist():
            torch.testing.assert_close(out[0, :, y, x], mean)
    outside = seg[0] < 0
    torch.testing.assert_close(out[0][:, outside], probs[0][:, outside])
    torch.testing.assert_close(out.sum(1), torch.ones(1, 3, 3))
    # No segment at all: identity.
    torch.testing.assert_close(refine_with_segments(probs, torch.full((1, 3, 3), -1)), probs)
    with pytest.raises(DriveSegmentError):
        refine_with_segments(probs, seg[:, :2])
    with pytest.raises(DriveSegmentError):
        refine_with_segments(probs, seg, mode="median")


# ---------------------------------------------------------------- EMA, losses, schedule
def test_ema_update_math():
    def net(w, b, rm):
        m = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
        with torch.no_grad():
            m[0].weight.copy_(torch.tensor(w))
            m[0].bias.copy_(torch.tensor(b))
            m[1].running_mean.copy_(torch.tensor(rm))
            m[1].num_batches_tracked.fill_(int(rm[0]))
        return m

    teacher = net([[1.0, 2.0], [3.0, 4.0]], [0.0, 10.0], [2.0, 2.0])
    student = net([[3.0, 0.0], [1.0, 8.0]], [4.0, -10.0], [6.0, 0.0])
    ema_update(teacher, student, decay=0.5)
    torch.testing.assert_close(teacher[0].weight, torch.tensor([[2.0, 1.0], [2.0, 6.0]]))
    torch.testing.assert_close(teacher[0].bias, torch.tensor([2.0, 0.0]))
    torch.testing.assert_close(teacher[1].running_mean, torch.tensor([4.0, 1.0]))
    assert int(teacher[1].num_batches_tracked) == 6  # integer buffer copied
    ema_update(teacher, student, decay=0.75)  # 0.75 * 2 + 0.25 * 3
    torch.testing.assert_close(teacher[0].weight[0, 0], torch.tensor(2.25))
    ema_update(teacher, student, decay=1.0)
    torch.testing.assert_close(teacher[0].weight[0, 0], torch.tensor(2.25))
    with pytest.raises(DriveSegmentError):
        ema_update(teacher, nn.Linear(2, 2), 0.5)
    with pytest.raises(DriveSegmentError):
        ema_update(teacher, student, 1.5)


def test_distillation_loss_values():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]]).T.reshape(1, 3, 1, 2)
    onehot = F.one_hot(torch.tensor([[[0, 2]]]), 3).permute(0, 3, 1, 2).float()
    ce = F.cross_entropy(logits, torch.tensor([[[0, 2]]]))
    torch.testing.assert_close(distillation_loss(logits, onehot, soft=True), ce)
    torch.testing.assert_close(distillation_loss(logits, onehot, soft=False), ce)
    # Hand value, pixel 0 only (pixel 1 masked): -log softmax([2,0,-1])_0
    valid = torch.tensor([[[True, False]]])
    expect = -math.log(math.exp(2) / (math.exp(2) + 1 + math.exp(-1)))
    assert abs(float(distillation_loss(logits, onehot, valid, soft=True)) - expect) < 1e-5
    # Temperature: T^2 * CE(softmax(z/T)).
    T = 2.0
    soft_t = -(onehot * F.log_softmax(logits / T, 1)).sum(1).mean() * T * T
    torch.testing.assert_close(distillation_loss(logits, onehot, soft=True, temperature=T), soft_t)
    assert float(distillation_loss(logits, onehot, torch.zeros(1, 1, 2, dtype=torch.bool))) == 0.0


def test_poly_schedule_and_config(tmp_path):
    assert poly_lr_factor(0, 100) == 1.0
    assert abs(poly_lr_factor(50, 100, 0.9) - 0.5**0.9) < 1e-12
    assert poly_lr_factor(100, 100) == 0.0
    assert poly_lr_factor(1, 100, warmup=4) == 0.5
    y = tmp_path / "t.yaml"
    y.write_text("lr: 0.5\nbatch_size: 3\nteacher: {batch_size: 5}\nstudent: {lr: 0.25, ema: false}\n")
    t = TrainConfig.from_yaml(y, "teacher")
    s = TrainConfig.from_yaml(y, "student", batch_size=7, temperature=None)
    assert (t.lr, t.batch_size, t.ema) == (0.5, 5, True)
    assert (s.lr, s.batch_size, s.ema, s.temperature) == (0.25, 7, False, 1.0)
    with pytest.raises(DriveSegmentError, match="unknown keys"):
        TrainConfig.from_yaml(y, "teacher", lr_typo=1)
    with pytest.raises(DriveSegmentError, match="decoder"):
        TrainConfig(decoder="unet")
    with pytest.raises(DriveSegmentError, match="ema_decay"):
        TrainConfig(ema_decay=2.0)
    # The shipped config/train.yaml parses for both stages.
    assert TrainConfig.from_yaml(None, "student").student_init == "teacher"
    assert TrainConfig.from_yaml(None, "teacher").backbone == "vit_small_patch16_224.dino"


# ---------------------------------------------------------------- training on synthetic data
@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return make_synthetic_pseudo_label_dir(tmp_path_factory.mktemp("pl") / "pl", n_frames=2,
                                           size_hw=(64, 96), k=3, seed=0)


@pytest.fixture(scope="module")
def teacher_ckpt(synthetic, tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher")
    ckpt = train_teacher(_cfg(synthetic, out, iterations=40))
    return ckpt


def test_teacher_overfits_synthetic_classes(teacher_ckpt, synthetic):
    out = teacher_ckpt.parent
    metrics = json.loads((out / "metrics.json").read_text())
    losses = metrics["history"]["loss"]
    assert len(losses) == 40 and metrics["iteration"] == 40
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    assert (out / "loss_curve.png").stat().st_size > 1000 and (out / "optimizer.pt").is_file()
    from drive_segment_ros.models.checkpoint import load_segmenter

    model, config, extra = load_segmenter(teacher_ckpt, "cpu")
    assert extra["stage"] == "teacher" and extra["iteration"] == 40 and extra["k"] == 3
    assert extra["self_supervised"] is False and "MobileNetV2" in extra["backbone_description"]
    assert extra["pseudo_label_dir"] == str(synthetic.resolve())
    frames = json.loads((synthetic / "index.json").read_text())["frames"]
    img, lab, _ = read_frame(synthetic, frames[0])
    # the one prediction path (the segmentation node's SegmentationModel), at the image size
    pred, _ = load_model(teacher_ckpt, backend="torch", device="cpu", input_size=img.shape[:2]).predict(img)
    assert pred.shape == lab.shape and pred.dtype == np.uint8
    m = lab != 255
    assert (pred[m] == lab[m]).mean() > 0.9  # the colour classes were learned
    # Resized-input path returns the original size too.
    assert load_model(teacher_ckpt, backend="torch", device="cpu", input_size=(32, 48)).predict(img)[0].shape == lab.shape


@pytest.mark.parametrize("ema,soft,refine,init", [(True, True, True, "teacher"), (False, False, True, "teacher"),
                                                  (False, True, False, "backbone")])
def test_student_runs_and_checkpoint_reload_is_exact(teacher_ckpt, synthetic, tmp_path, ema, soft, refine, init):
    from drive_segment_ros.models.checkpoint import load_segmenter

    cfg = _cfg(synthetic, tmp_path / "student", iterations=3, ema=ema, ema_decay=0.5, soft_targets=soft,
               refine_with_segments=refine, temperature=2.0 if soft else 1.0, lr=1e-3, student_init=init)
    stage = Trainer(cfg, "student", teacher_ckpt.parent)  # a stage output dir is accepted too
    teacher0 = {k: v.clone() for k, v in stage.teacher.state_dict().items()}
    ckpt = stage.run()
    model, config, extra = load_segmenter(ckpt, "cpu")
    assert extra["stage"] == "student" and extra["iteration"] == 3
    assert extra["ema"] is ema and extra["soft_targets"] is soft
    x = torch.randn(1, 3, 64, 96)
    stage.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), stage.model(x), rtol=0, atol=0)
    w = "decoder.classifier.weight" if "decoder.classifier.weight" in teacher0 else next(
        k for k, v in teacher0.items() if v.is_floating_point() and k.startswith("decoder"))
    changed = not torch.equal(stage.teacher.state_dict()[w], teacher0[w])
    assert changed is ema  # EMA teacher follows the student; a frozen teacher does not move
    if ema:
        ema_model, _, ema_extra = load_segmenter(ckpt.parent / "ema_teacher", "cpu")
        assert ema_extra["stage"] == "ema_teacher"
        torch.testing.assert_close(ema_model.state_dict()[w], stage.teacher.state_dict()[w])
    losses = json.loads((ckpt.parent / "metrics.json").read_text())["history"]["loss"]
    assert len(losses) == 3 and all(np.isfinite(losses))


def test_resume_continues_exactly(synthetic, tmp_path):
    full = Trainer(_cfg(synthetic, tmp_path / "full", iterations=6), "teacher")
    full.run()
    part = Trainer(_cfg(synthetic, tmp_path / "part", iterations=6), "teacher")
    part.run(stop_at=3)
    assert json.loads((tmp_path / "part" / "metrics.json").read_text())["iteration"] == 3
    resumed = Trainer(_cfg(synthetic, tmp_path / "part", iterations=6, resume=True), "teacher")
    assert resumed.iteration == 3 and len(resumed.history["loss"]) == 3
    resumed.run()
    metrics = json.loads((tmp_path / "part" / "metrics.json").read_text())
    assert metrics["iteration"] == 6 and len(metrics["history"]["loss"]) == 6
    np.testing.assert_allclose(metrics["history"]["loss"], full.history["loss"], rtol=1e-4)
    for (k, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=k)


def test_cli_and_errors(synthetic, teacher_ckpt, tmp_path):
    parser = argparse.ArgumentParser()
    add_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train-student", str(synthetic), "--teacher", str(teacher_ckpt), "--out",
                              str(tmp_path / "s"), "--iterations", "1", "--crop", "64", "96", "--batch-size", "1",
                              "--device", "cpu", "--hard-targets", "--no-ema", "--set", "photometric=false",
                              "--set", "scale_range=[1.0, 1.0]"])
    from drive_segment_training.train_cli import _config_from_args

    cfg = _config_from_args(args, "student")
    assert (cfg.soft_targets, cfg.ema, cfg.refine_with_segments, cfg.crop_size) == (False, False, True, (64, 96))
    assert cfg.photometric is False and cfg.scale_range == (1.0, 1.0) and cfg.copy_paste_prob == 0.0
    assert args.func(args) == 0
    assert (tmp_path / "s" / "checkpoint" / "model.safetensors").is_file()
    bad = parser.parse_args(["train-teacher", str(tmp_path / "nope"), "--out", str(tmp_path / "t")])
    with pytest.raises(DriveSegmentError, match="does not exist"):
        bad.func(bad)
    with pytest.raises(DriveSegmentError, match="teacher"):
        train_student(_cfg(synthetic, tmp_path / "x"), tmp_path / "missing")
    with pytest.raises(DriveSegmentError, match="uint8"):
        load_model(teacher_ckpt, backend="torch", device="cpu").predict(np.zeros((4, 4, 3), np.float32))


# ---------------------------------------------------------------- real frames
def _real_pseudo_dir(kitti_dir, out):
    """Pseudo-label dir from the real KITTI frame (and its mirror): Velodyne points projected with
    calib.json, obstacle points (z > -1.4 m) clustered on a 0.5 m grid = LiDAR segments,
    pseudo-class = segment's mean-height bin (k = 4)."""
    import cv2
    from scipy import ndimage

    calib = json.loads((kitti_dir / "calib.json").read_text())
    rgb = cv2.cvtColor(cv2.imread(str(kitti_dir / "000008.png")), cv2.COLOR_BGR2RGB)
    pts = np.fromfile(kitti_dir / "000008.bin", dtype=np.float32).reshape(-1, 4)
    P = np.asarray(calib["cameras"]["CAM2"]["lidar2img"], dtype=np.float64)
    hom = np.c_[pts[:, :3], np.ones(len(pts))] @ P.T
    front = hom[:, 2] > 1.0
    uv = (hom[front, :2] / hom[front, 2:3]).round().astype(int)
    H, W = rgb.shape[:2]
    ok = (uv[:, 0] >= 0) & (uv[:, 0] < W) & (uv[:, 1] >= 0) & (uv[:, 1] < H)
    xyz, uv = pts[front][ok, :3], uv[ok]
    keep = xyz[:, 2] > -1.4
    cells = np.floor(xyz[keep, :2] / 0.5).astype(int)
    cells -= cells.min(0)
    occ = np.zeros(cells.max(0) + 1, bool)
    occ[cells[:, 0], cells[:, 1]] = True
    comp, n = ndimage.label(occ)
    ids = comp[cells[:, 0], cells[:, 1]] - 1
    height = np.bincount(ids, xyz[keep, 2], n) / np.maximum(np.bincount(ids, minlength=n), 1)
    cls = np.clip(((height + 1.4) / 0.6).astype(int), 0, 3)
    seg = np.full((H, W), -1, np.int32)
    seg[uv[keep, 1], uv[keep, 0]] = ids
    seg = ndimage.grey_dilation(seg, size=(5, 5))
    seg[seg < 0] = -1
    label = np.where(seg >= 0, cls[np.maximum(seg, 0)], 255).astype(np.uint8)
    for sub in ("images", "labels", "segments"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    frames = []
    for name, (im, lab, sg) in {"kitti": (rgb, label, seg),
                                "kitti_mirror": (rgb[:, ::-1], label[:, ::-1], seg[:, ::-1])}.items():
        cv2.imwrite(str(out / "images" / f"{name}.png"), cv2.cvtColor(np.ascontiguousarray(im), cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(out / "labels" / f"{name}.png"), np.ascontiguousarray(lab))
        np.save(out / "segments" / f"{name}.npy", np.ascontiguousarray(sg))
        frames.append({"name": name, "image": f"images/{name}.png", "label": f"labels/{name}.png",
                       "segments": f"segments/{name}.npy"})
    (out / "index.json").write_text(json.dumps({
        "k": 4, "backbone": "geometry", "backbone_description": "LiDAR height bins", "self_supervised": False,
        "ignore_index": 255, "frames": frames}))
    return out, rgb, label


def test_teacher_and_student_on_real_kitti(kitti_dir, tmp_path):
    from drive_segment_ros.models.checkpoint import load_segmenter

    pl, rgb, label = _real_pseudo_dir(kitti_dir, tmp_path / "pl")
    assert (label != 255).sum() > 5000 and len(np.unique(label[label != 255])) >= 3
    common = dict(crop_size=(128, 256), batch_size=2, lr=2e-3, scale_range=(0.75, 1.25), photometric=True,
                  copy_paste_prob=0.5)
    t_ckpt = train_teacher(_cfg(pl, tmp_path / "teacher", iterations=12, **common))
    losses = json.loads((tmp_path / "teacher" / "metrics.json").read_text())["history"]["loss"]
    assert all(np.isfinite(losses)) and np.mean(losses[-4:]) < np.mean(losses[:4])
    s_ckpt = train_student(_cfg(pl, tmp_path / "student", iterations=2, ema=True, soft_targets=True, **common),
                           t_ckpt)
    model, config, extra = load_segmenter(s_ckpt, "cpu")
    assert extra["k"] == 4 and config.n_classes == 4
    pred, _ = load_model(s_ckpt, backend="torch", device="cpu", input_size=(128, 416)).predict(rgb)
    assert pred.shape == rgb.shape[:2] and pred.min() >= 0 and pred.max() < 4


def test_epochs_set_the_iteration_count(synthetic, tmp_path):
    stage = Trainer(_cfg(synthetic, tmp_path / "e", epochs=3, batch_size=2), "teacher")
    assert stage.total == 3  # ceil(3 epochs * 2 frames / batch 2)
    stage = Trainer(_cfg(synthetic, tmp_path / "e2", epochs=1, batch_size=4), "teacher")
    assert stage.total == 1
