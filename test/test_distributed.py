"""Data-parallel training (training/distributed.py + the DDP path of training/trainer.py).

Two CPU processes with the gloo backend, started like torchrun would (``spawn_local``), against the
one-process run with the same global batch: same loss curve, identical weights on every rank,
EMA teachers identical across ranks, resume with another number of processes.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from drive_segment_ros.types import DriveSegmentError
from drive_segment_training import ddp_launch as launch
from drive_segment_training import distributed as ddp
from drive_segment_training.datasets import InfiniteSampler, make_synthetic_pseudo_label_dir
from drive_segment_training.losses import distillation_loss, teacher_loss
from drive_segment_training.train_config import TrainConfig
from drive_segment_training.trainer import Trainer

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="torch.distributed with the gloo backend is not available in this torch build")


# ---------------------------------------------------------------- pieces (no process group)
def test_rank_sampler_splits_every_global_batch():
    stream = InfiniteSampler(5, seed=3, start=4)
    ref = [i for _, i in zip(range(24), InfiniteSampler(5, seed=3, start=4))]
    parts = []
    for r in range(3):
        it = iter(ddp.RankSampler(stream, 2, rank=r, world_size=3))
        parts.append([next(it) for _ in range(8)])  # 4 global batches of 6
    for step in range(4):
        glob = sum((p[2 * step: 2 * step + 2] for p in parts), [])
        assert glob == ref[6 * step: 6 * step + 6]  # ranks' slices, in rank order, = the global batch
    one = iter(ddp.RankSampler(stream, 6))
    assert [next(one) for _ in range(24)] == ref
    with pytest.raises(DriveSegmentError):
        ddp.RankSampler(stream, 2, rank=3, world_size=3)
    with pytest.raises(DriveSegmentError, match="divisible"):
        ddp.per_rank_batch(5, 2)
    assert ddp.per_rank_batch(6, 3) == 2


def test_sum_reductions_and_one_process_context(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx = ddp.init_from_env(torch.device("cpu"))
    assert (ctx.rank, ctx.world_size, ctx.distributed, ctx.is_main) == (0, 1, False, True)
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 4, 5, generator=g, requires_grad=True)
    labels = torch.randint(0, 3, (2, 4, 5), generator=g)
    labels[0, :2] = 255
    n = (labels != 255).sum()
    loss, mean = ddp.global_mean_loss(teacher_loss(logits, labels, reduction="sum"), n, ctx)
    torch.testing.assert_close(loss, teacher_loss(logits, labels))
    torch.testing.assert_close(mean, teacher_loss(logits, labels).detach())
    probs = torch.softmax(torch.randn(2, 3, 4, 5, generator=g), 1)
    valid = torch.rand(2, 4, 5, generator=g) > 0.3
    for soft in (True, False):
        s = distillation_loss(logits, probs, valid, soft=soft, temperature=2.0, reduction="sum")
        torch.testing.assert_close(s / valid.sum(), distillation_loss(logits, probs, valid, soft=soft, temperature=2.0))
    with pytest.raises(DriveSegmentError):
        teacher_loss(logits, labels, reduction="none")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "5")
    with pytest.raises(DriveSegmentError, match="RANK=5"):
        ddp.init_from_env(torch.device("cpu"))


# ---------------------------------------------------------------- two processes (gloo)
@pytest.fixture(scope="module")
def pl_dir(tmp_path_factory):
    return make_synthetic_pseudo_label_dir(tmp_path_factory.mktemp("ddp") / "pl", n_frames=5, size_hw=(64, 96), k=3,
                                           seed=1)


def _cfg(pl, out, **kw):
    # A LayerNorm ViT without dropout: the data-parallel run must equal the one-process run.
    base = dict(pseudo_dir=str(pl), out_dir=str(out), backbone="vit_tiny_patch16_224", allow_random_backbone=True,
                decoder="mask_transformer", segmenter={"dropout": 0.0}, crop_size=(64, 96), batch_size=4,
                iterations=4, lr=1e-3, checkpoint_every=1000, device="cpu", seed=0, copy_paste_prob=0.5)
    base.update(kw)
    return TrainConfig.from_yaml(None, "teacher", **base)


def test_two_processes_match_one_process_and_resume_across_world_sizes(pl_dir, tmp_path):
    one = Trainer(_cfg(pl_dir, tmp_path / "one"), "teacher")
    one.run()
    ref = one.history["loss"]

    res = launch.spawn_local(2, "teacher", _cfg(pl_dir, tmp_path / "two").to_dict())
    assert res[0]["iteration"] == res[1]["iteration"] == 4
    assert res[0]["model_checksum"] == res[1]["model_checksum"]  # identical weights on both ranks
    np.testing.assert_allclose(res[0]["loss"], ref, rtol=1e-4, atol=1e-5)  # same global-batch loss curve
    assert res[0]["loss"] == res[1]["loss"]  # every rank logs the global mean
    metrics = json.loads((tmp_path / "two" / "metrics.json").read_text())  # written by rank 0
    assert (metrics["world_size"], metrics["batch_per_rank"], metrics["iteration"]) == (2, 2, 4)
    from drive_segment_ros.models.checkpoint import load_segmenter

    two_model, _, extra = load_segmenter(tmp_path / "two" / "checkpoint", "cpu")
    assert extra["iteration"] == 4
    # Adam divides by sqrt(v): float reduction-order noise (~1e-7) becomes ~1e-5 in the weights after
    # 4 steps of lr 1e-3 (each step moves a weight by up to 1e-3); the predictions agree closely.
    for (k, a), b in zip(one.model.state_dict().items(), two_model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=2e-4, msg=k)
    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    one.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(two_model(x), one.model(x), rtol=0, atol=2e-3)

    # 1 process for 2 steps, then 2 processes resume to 4: the same curve again.
    Trainer(_cfg(pl_dir, tmp_path / "resumed"), "teacher").run(stop_at=2)
    res = launch.spawn_local(2, "teacher", _cfg(pl_dir, tmp_path / "resumed", resume=True).to_dict())
    assert res[0]["iteration"] == 4 and res[0]["model_checksum"] == res[1]["model_checksum"]
    metrics = json.loads((tmp_path / "resumed" / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    np.testing.assert_allclose(metrics["history"]["loss"], ref, rtol=1e-4, atol=1e-5)

    with pytest.raises(DriveSegmentError, match="not divisible"):
        launch.spawn_local(2, "teacher", _cfg(pl_dir, tmp_path / "odd", batch_size=3).to_dict())


def test_ema_teacher_identical_on_every_rank_with_batchnorm(pl_dir, tmp_path):
    """MobileNetV2 + conv head (BatchNorm): per-rank batch statistics differ, yet the broadcast
    after each step keeps student and EMA teacher bit-identical across ranks."""
    common = dict(backbone="mobilenetv2_deepsort", allow_random_backbone=False, decoder="conv", segmenter={},
                  lr=3e-3, iterations=1)
    teacher = Trainer(_cfg(pl_dir, tmp_path / "teacher", **common), "teacher")
    teacher.run()
    cfg = _cfg(pl_dir, tmp_path / "student", **dict(common, iterations=3), ema=True, ema_decay=0.5,
               soft_targets=True, refine_with_segments=True)
    res = launch.spawn_local(2, "student", cfg.to_dict(), teacher=str(tmp_path / "teacher"))
    assert res[0]["teacher_checksum"] is not None
    assert res[0]["teacher_checksum"] == res[1]["teacher_checksum"]
    assert res[0]["model_checksum"] == res[1]["model_checksum"]
    assert all(np.isfinite(res[0]["loss"])) and len(res[0]["loss"]) == 3
    from drive_segment_ros.models.checkpoint import load_segmenter

    ema, _, extra = load_segmenter(tmp_path / "student" / "ema_teacher", "cpu")
    assert extra["stage"] == "ema_teacher" and ddp.state_checksum(ema) == res[0]["teacher_checksum"]
