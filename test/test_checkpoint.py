"""Checkpoints: save -> load gives identical outputs, config/extra round trip, clear errors on
missing / corrupt / mismatching files."""
from __future__ import annotations

import json
import logging

import pytest
import torch

from drive_segment_ros.models.checkpoint import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    load_segmenter,
    read_checkpoint_config,
    save_checkpoint,
)
from drive_segment_ros.models.segmenter import SegmenterConfig, build_segmenter
from drive_segment_ros.types import DriveSegmentError




def _perturb(model):
    """Make every parameter/buffer differ from a fresh build (so a no-op load would be caught)."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                t.add_(0.01 * torch.randn(t.shape, generator=g))
                if "running_var" in name:
                    t.abs_().add_(0.1)
    return model


@pytest.fixture(scope="module")
def saved_cnn(tmp_path_factory):
    cfg = SegmenterConfig.for_backbone("mobilenetv2_deepsort", n_classes=5, d_model=32, input_size=(64, 96))
    model = _perturb(build_segmenter(cfg)).eval()
    directory = tmp_path_factory.mktemp("ckpt") / "teacher"
    extra = {"stage": "teacher", "n_pseudo_classes": 5, "epochs": 3}
    save_checkpoint(directory, model, cfg, extra)
    return directory, model, cfg, extra


@pytest.mark.parametrize("kind", ["cnn_conv", "vit_mask_transformer"])
def test_save_load_identical_outputs(kind, tmp_path, saved_cnn, caplog):
    if kind == "cnn_conv":
        directory, model, cfg, extra = saved_cnn
    else:
        cfg = SegmenterConfig.for_backbone("vit_tiny_patch16_224", n_classes=4, d_model=64, n_heads=2,
                                           input_size=(48, 64))
        model = _perturb(build_segmenter(cfg, allow_random=True)).eval()
        directory, extra = tmp_path / "student", {"stage": "student", "ema": 0.999}
        save_checkpoint(directory, model, cfg, extra)
    assert (directory / WEIGHTS_FILE).is_file() and (directory / CONFIG_FILE).is_file()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        loaded, cfg2, extra2 = load_segmenter(directory)
    assert "RANDOM" not in caplog.text  # the random init before the state dict is not reported
    assert cfg2 == cfg and extra2 == extra and not loaded.training
    x = torch.randn(2, 3, *cfg.input_size)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), atol=0, rtol=0)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_config_json_contents(saved_cnn):
    directory, model, cfg, extra = saved_cnn
    meta = json.loads((directory / CONFIG_FILE).read_text())
    assert meta["config"]["n_classes"] == 5 and meta["config"]["decoder"] == "conv"
    assert meta["config"]["mean"] == [0.485, 0.456, 0.406]
    assert meta["extra"] == extra and meta["torch_version"] == torch.__version__
    assert "NOT self-supervised" in meta["backbone_description"] and meta["backbone_self_supervised"] is False
    cfg2, extra2, meta2 = read_checkpoint_config(directory)
    assert cfg2 == cfg and extra2 == extra and meta2["format_version"] == 1


def test_missing_and_corrupt_files(tmp_path, saved_cnn):
    import shutil

    src = saved_cnn[0]
    with pytest.raises(DriveSegmentError, match="not found"):
        load_segmenter(tmp_path / "nothing")

    d = tmp_path / "no_weights"
    shutil.copytree(src, d)
    (d / WEIGHTS_FILE).unlink()
    with pytest.raises(DriveSegmentError, match="has no model.safetensors"):
        load_segmenter(d)

    d = tmp_path / "truncated"
    shutil.copytree(src, d)
    data = (d / WEIGHTS_FILE).read_bytes()
    (d / WEIGHTS_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(DriveSegmentError, match="corrupt or unreadable"):
        load_segmenter(d)

    d = tmp_path / "bad_json"
    shutil.copytree(src, d)
    (d / CONFIG_FILE).write_text("{not json")
    with pytest.raises(DriveSegmentError, match="not valid JSON"):
        load_segmenter(d)

    d = tmp_path / "no_config"
    shutil.copytree(src, d)
    (d / CONFIG_FILE).unlink()
    with pytest.raises(DriveSegmentError, match="has no config.json"):
        load_segmenter(d)


def test_weights_not_matching_config(tmp_path, saved_cnn):
    import shutil

    d = tmp_path / "mismatch"
    shutil.copytree(saved_cnn[0], d)
    meta = json.loads((d / CONFIG_FILE).read_text())
    meta["config"]["n_classes"] = 7  # classifier weights in the file have 5 rows
    (d / CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(DriveSegmentError, match="does not match its config.*wrong shape"):
        load_segmenter(d)


def test_save_rejects_bad_extra_and_config(tmp_path, saved_cnn):
    _, model, cfg, _ = saved_cnn
    with pytest.raises(DriveSegmentError, match="JSON-serialisable"):
        save_checkpoint(tmp_path / "x", model, cfg, {"tensor": torch.zeros(1)})
    with pytest.raises(DriveSegmentError, match="SegmenterConfig"):
        save_checkpoint(tmp_path / "y", model, cfg.to_dict())
    other = SegmenterConfig.for_backbone("mobilenetv2_deepsort", n_classes=9)
    with pytest.raises(DriveSegmentError, match="classes"):
        save_checkpoint(tmp_path / "z", model, other)
