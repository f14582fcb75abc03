"""ONNX export (report, metadata, dynamic shapes, CLI) and TensorRT engine staleness logic."""
from __future__ import annotations

import argparse
import json

import numpy as np
import onnx
import pytest
import torch

from drive_segment_ros.inference import export as E
from drive_segment_training import export_cli
from drive_segment_ros.inference import tensorrt_engine as TE
from drive_segment_ros.inference.backends import TENSORRT_MISSING, create_backend
from drive_segment_ros.types import DriveSegmentError

N_CLASSES = 8
SIZE = (64, 192)




def _make_checkpoint(directory, backbone="mobilenetv2_deepsort", seed=0):
    from drive_segment_ros.models.checkpoint import save_checkpoint
    from drive_segment_ros.models.segmenter import SegmenterConfig, build_segmenter

    torch.manual_seed(seed)
    cfg = SegmenterConfig.for_backbone(backbone, n_classes=N_CLASSES, input_size=SIZE)
    model = build_segmenter(cfg, allow_random=backbone != "mobilenetv2_deepsort")
    save_checkpoint(directory, model, cfg, {"stage": "test"})
    return directory


@pytest.fixture(scope="module")
def conv(tmp_path_factory):
    """(checkpoint, onnx, report) of the conv model exported at SIZE, checked on a real image.

    Shares the session cache of test_inference_backends.py when that ran first."""
    root = tmp_path_factory.getbasetemp() / "inference_shared"
    root.mkdir(exist_ok=True)
    ckpt, onnx_path, report_path = root / "ckpt_conv", root / "conv.onnx", root / "conv.report.json"
    if not report_path.is_file():
        _make_checkpoint(ckpt)
        report_path.write_text(json.dumps(E.export_onnx(ckpt, onnx_path)))
    return ckpt, onnx_path, json.loads(report_path.read_text())


def _cli(argv):
    parser = argparse.ArgumentParser(prog="drive-segment")
    sub = parser.add_subparsers(dest="command")
    export_cli.add_cli(sub)
    args = parser.parse_args(argv)
    return args.func(args)


def test_export_report_and_metadata(conv):
    ckpt, onnx_path, report = conv
    assert report["max_abs_diff"] < 1e-4 and report["argmax_agreement"] > 0.999
    assert report["input_shape"] == [1, 3, *SIZE] and report["output_shape"] == [1, N_CLASSES, *SIZE]
    assert report["opset"] == 17 and report["n_classes"] == N_CLASSES and report["size_mb"] > 0.5
    model = onnx.load(str(onnx_path))
    props = {p.key: json.loads(p.value) for p in model.metadata_props}
    assert props["n_classes"] == N_CLASSES and props["input_size"] == list(SIZE)
    assert props["mean"] == pytest.approx([0.485, 0.456, 0.406]) and props["std"] == pytest.approx([0.229, 0.224, 0.225])
    assert props["backbone"] == "mobilenetv2_deepsort" and props["palette"] in ("voc", "drive_segment")
    assert [i.name for i in model.graph.input] == ["images"] and [o.name for o in model.graph.output] == ["logits"]
    assert any(op.domain in ("", "ai.onnx") and op.version == 17 for op in model.opset_import)
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, *SIZE]


def test_export_checks_on_a_real_image(conv, kitti_dir, tmp_path):
    ckpt, _, _ = conv
    report = E.export_onnx(
        ckpt, tmp_path / "sub" / "m.onnx", height=32, width=96, image=kitti_dir / "000008.png", dynamic_batch=True
    )
    assert report["check_input"].endswith("000008.png")
    assert report["max_abs_diff"] < 1e-4 and report["argmax_agreement"] > 0.999
    (dyn,) = report["dynamic_check"]
    assert dyn["input_shape"] == [2, 3, 32, 96] and dyn["max_abs_diff"] < 1e-4
    backend = create_backend("onnxruntime", tmp_path / "sub" / "m.onnx", device="cpu")
    assert backend.static_batch is None
    assert backend.infer(np.zeros((3, 3, 32, 96), np.float32)).shape == (3, N_CLASSES, 32, 96)


def test_dynamic_hw_that_the_trace_fixed_is_refused(conv, tmp_path):
    # Segmenter's output crop / resize sizes are Python ints at trace time, so the graph keeps
    # the example size: ORT then returns 64x128 logits for a 96x160 input. The check must catch
    # it (a smaller input alone would pass: the fixed crop still fits).
    ckpt, _, _ = conv
    with pytest.raises(DriveSegmentError, match="does not run at 1x3x96x192"):
        E.export_onnx(ckpt, tmp_path / "d.onnx", height=64, width=128, dynamic_hw=True)
    assert not (tmp_path / "d.onnx").exists()  # the broken graph is not left behind


def test_export_input_errors(conv, tmp_path):
    ckpt, _, _ = conv
    with pytest.raises(DriveSegmentError, match="not found"):
        E.export_onnx(tmp_path / "nope", tmp_path / "x.onnx")
    with pytest.raises(DriveSegmentError, match="opset"):
        E.export_onnx(ckpt, tmp_path / "x.onnx", opset=9)
    with pytest.raises(DriveSegmentError, match="exporter"):
        E.export_onnx(ckpt, tmp_path / "x.onnx", exporter="magic")
    with pytest.raises(DriveSegmentError, match="cannot read image"):
        E.export_onnx(ckpt, tmp_path / "x.onnx", image=tmp_path / "missing.png")


def test_cli_export_prints_the_max_abs_diff(conv, tmp_path, capsys):
    ckpt, _, _ = conv
    out = tmp_path / "cli.onnx"
    assert _cli(["export", str(ckpt), "--onnx", str(out), "--height", "32", "--width", "64"]) == 0
    text = capsys.readouterr().out
    assert "max abs diff" in text and "1x3x32x64" in text
    assert json.loads({p.key: p.value for p in onnx.load(str(out)).metadata_props}["input_size"]) == [32, 64]


def test_build_engine_without_tensorrt_is_one_clear_error(conv, monkeypatch, tmp_path):
    import builtins

    real_import = builtins.__import__

    def no_tensorrt(name, *args, **kwargs):
        if name == "tensorrt":
            raise ImportError("No module named 'tensorrt'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorrt)
    _, onnx_path, _ = conv
    with pytest.raises(DriveSegmentError) as err:
        TE.build_engine(onnx_path, tmp_path / "m.engine")
    assert str(err.value) == TENSORRT_MISSING
    with pytest.raises(DriveSegmentError, match="needs the `tensorrt` Python package"):
        _cli(["build-engine", str(onnx_path), "--engine", str(tmp_path / "m.engine"), "--no-fp16"])
    # through the real entry point: one line on stderr, exit status 2
    try:
        from drive_segment_training import cli
        cli.build_parser()
    except ImportError as exc:  # another stage's module is not there yet
        pytest.skip(f"drive-segment parser not buildable yet: {exc}")
    assert cli.main(["build-engine", str(onnx_path)]) == 2


# ---------------------------------------------------------------------------------------------
# engine staleness, without TensorRT (the environment query is monkeypatched)
# ---------------------------------------------------------------------------------------------
ENV = {"gpu_name": "NVIDIA Jetson AGX Orin", "compute_capability": "8.7", "tensorrt_version": "10.3.0"}


@pytest.fixture()
def fake_engine(tmp_path, monkeypatch):
    onnx_path = tmp_path / "m.onnx"
    onnx_path.write_bytes(b"onnx model bytes v1")
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"serialized engine")
    TE.write_sidecar(engine, onnx_path, ENV, fp16=True)
    monkeypatch.setattr(TE, "current_environment", lambda device=0: dict(ENV))
    return engine, onnx_path


def test_fresh_engine_is_not_stale(fake_engine):
    engine, onnx_path = fake_engine
    side = json.loads((engine.parent / "m.engine.json").read_text())
    assert side["onnx_sha256"] == TE.file_sha256(onnx_path) and side["gpu_name"] == ENV["gpu_name"]
    assert TE.stale_reasons(engine, onnx_path) == []
    assert not TE.engine_is_stale(engine, onnx_path)


@pytest.mark.parametrize(
    "key,value", [("gpu_name", "NVIDIA H100"), ("compute_capability", "9.0"), ("tensorrt_version", "10.8.0"), ("tensorrt_version", None)]
)
def test_environment_change_makes_the_engine_stale(fake_engine, monkeypatch, key, value):
    engine, onnx_path = fake_engine
    monkeypatch.setattr(TE, "current_environment", lambda device=0: {**ENV, key: value})
    assert TE.engine_is_stale(engine, onnx_path)
    assert any(r.startswith(key) for r in TE.stale_reasons(engine, onnx_path))


def test_onnx_change_and_missing_files_make_the_engine_stale(fake_engine):
    engine, onnx_path = fake_engine
    onnx_path.write_bytes(b"onnx model bytes v2")
    assert TE.stale_reasons(engine, onnx_path)[0].startswith("ONNX changed")
    TE.write_sidecar(engine, onnx_path, ENV)
    assert not TE.engine_is_stale(engine, onnx_path)
    (engine.parent / "m.engine.json").write_text("{not json")
    assert "unreadable" in TE.stale_reasons(engine, onnx_path)[0]
    (engine.parent / "m.engine.json").unlink()
    assert "missing" in TE.stale_reasons(engine, onnx_path)[0]
    engine.unlink()
    assert "does not exist" in TE.stale_reasons(engine, onnx_path)[0]
    with pytest.raises(DriveSegmentError, match="not found"):
        TE.engine_is_stale(engine, engine.parent / "absent.onnx")


def test_ensure_engine_rebuilds_only_when_stale(fake_engine, monkeypatch):
    engine, onnx_path = fake_engine
    calls = []
    monkeypatch.setattr(TE, "build_engine", lambda o, e, **kw: calls.append((o, e, kw)))
    assert TE.ensure_engine(onnx_path, engine, fp16=False) == engine and calls == []
    monkeypatch.setattr(TE, "current_environment", lambda device=0: {**ENV, "tensorrt_version": "10.9.0"})
    TE.ensure_engine(onnx_path, engine, fp16=False)
    assert calls == [(onnx_path, engine, {"fp16": False})]


def test_default_profile_shapes():
    lo, opt, hi = TE.default_profile(["batch", 3, "height", "width"], (512, 1024), max_batch=4)
    assert lo == (1, 3, 256, 512) and opt == (1, 3, 512, 1024) and hi == (4, 3, 1024, 2048)
    lo, opt, hi = TE.default_profile([-1, 3, 375, 1242], (375, 1242), max_batch=8)
    assert lo == (1, 3, 375, 1242) and hi == (8, 3, 375, 1242)  # static H, W are kept
    lo, _, _ = TE.default_profile([1, 3, -1, -1], (100, 50))
    assert lo == (1, 3, 32, 32)  # rounded down to the stride, at least 32
