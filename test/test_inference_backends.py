"""The one inference interface: torch vs ONNX Runtime (vs TensorRT when present) on real frames."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from drive_segment_ros.inference import backends as B
from drive_segment_ros.inference.backends import (
    InferenceBackend,
    backend_kind_for,
    create_backend,
    decode_metadata,
    encode_metadata,
    load_model,
)
from drive_segment_ros.inference.export import export_onnx
from drive_segment_ros.types import DriveSegmentError

N_CLASSES = 8
SIZE = (64, 192)  # (H, W): small, fast on 2 CPU cores; KITTI-like aspect




def _make_checkpoint(directory, backbone, seed=0, constant_class=None):
    from drive_segment_ros.models.checkpoint import save_checkpoint
    from drive_segment_ros.models.segmenter import SegmenterConfig, build_segmenter

    torch.manual_seed(seed)
    cfg = SegmenterConfig.for_backbone(backbone, n_classes=N_CLASSES, input_size=SIZE)
    model = build_segmenter(cfg, allow_random=backbone != "mobilenetv2_deepsort")  # real offline MobileNetV2 weights
    if constant_class is not None:  # conv head: zero classifier + bias -> one class everywhere
        with torch.no_grad():
            model.decoder.classifier.weight.zero_()
            model.decoder.classifier.bias.copy_(torch.arange(N_CLASSES) == constant_class)
    save_checkpoint(directory, model, cfg, {"stage": "test"})
    return directory


def shared_artifacts(tmp_path_factory, tags=("conv", "vit")):
    """Checkpoints + ONNX exports of a MobileNetV2 conv model and a tiny ViT Segmenter, made
    once per session under the session's base temp dir (test_export.py reuses them)."""
    root = tmp_path_factory.getbasetemp() / "inference_shared"
    root.mkdir(exist_ok=True)
    out = {}
    for tag in tags:
        backbone = {"conv": "mobilenetv2_deepsort", "vit": "vit_tiny_patch16_224"}[tag]
        ckpt, onnx_path = root / f"ckpt_{tag}", root / f"{tag}.onnx"
        report_path = root / f"{tag}.report.json"
        if not report_path.is_file():
            _make_checkpoint(ckpt, backbone)
            report_path.write_text(json.dumps(export_onnx(ckpt, onnx_path)))
        out[tag] = (ckpt, onnx_path, json.loads(report_path.read_text()))
    return out


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """See :func:`shared_artifacts`."""
    return shared_artifacts(tmp_path_factory)


@pytest.fixture(scope="module")
def kitti_rgb(kitti_dir):
    bgr = cv2.imread(str(kitti_dir / "000008.png"))
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


@pytest.mark.parametrize("tag", ["conv", "vit"])
def test_torch_and_onnxruntime_give_the_same_class_ids_on_kitti(artifacts, kitti_rgb, tag):
    ckpt, onnx_path, _ = artifacts[tag]
    m_torch = load_model(ckpt, device="cpu")
    m_ort = load_model(onnx_path, device="cpu")
    assert m_torch.backend.name == "torch" and m_ort.backend.name == "onnxruntime"
    ids_t, timing = m_torch.predict(kitti_rgb)
    ids_o, _ = m_ort.predict(kitti_rgb)
    assert ids_t.shape == ids_o.shape == kitti_rgb.shape[:2] and ids_t.dtype == np.uint8
    assert set(timing) == {"preprocess_ms", "infer_ms", "postprocess_ms", "total_ms"}
    assert timing["total_ms"] >= timing["infer_ms"] > 0

    lt, lo = m_torch.logits(kitti_rgb), m_ort.logits(kitti_rgb)
    assert lt.shape == lo.shape == (1, N_CLASSES) + SIZE
    assert np.abs(lt - lo).max() < 1e-3
    # identical ids wherever the prediction is not a numerical tie (top-2 margin > 1e-3)
    top2 = np.sort(lt[0], axis=0)[-2:]
    decisive = (top2[1] - top2[0]) > 1e-3
    ids_t_model, ids_o_model = lt[0].argmax(0), lo[0].argmax(0)
    np.testing.assert_array_equal(ids_t_model[decisive], ids_o_model[decisive])
    assert np.mean(ids_t == ids_o) > 0.999
    # a random-weight net still predicts several classes on a real street image
    assert len(np.unique(ids_t)) >= 2


def test_known_answer_constant_class_through_both_backends(tmp_path, kitti_rgb):
    ckpt = _make_checkpoint(tmp_path / "ckpt", "mobilenetv2_deepsort", constant_class=5)
    onnx_path = tmp_path / "m.onnx"
    export_onnx(ckpt, onnx_path)
    for path in (ckpt, onnx_path):
        ids, _ = load_model(path, device="cpu").predict(kitti_rgb)
        assert ids.shape == (375, 1242)
        assert np.all(ids == 5)


def test_metadata_travels_inside_the_onnx_file(artifacts):
    ckpt, onnx_path, report = artifacts["vit"]
    backend = create_backend("onnxruntime", onnx_path, device="cpu")
    meta = backend.metadata
    assert meta["n_classes"] == N_CLASSES
    assert meta["input_size"] == list(SIZE) and backend.input_size == SIZE
    assert meta["backbone"] == "vit_tiny_patch16_224" and meta["decoder"] == "mask_transformer"
    torch_backend = create_backend("torch", ckpt, device="cpu")
    assert torch_backend.metadata["mean"] == pytest.approx(meta["mean"])
    assert torch_backend.metadata["std"] == pytest.approx(meta["std"])
    assert isinstance(backend, InferenceBackend) and isinstance(torch_backend, InferenceBackend)
    assert decode_metadata(encode_metadata(meta)) == meta
    with pytest.raises(DriveSegmentError, match="drive-segment export"):
        decode_metadata({"n_classes": "3"}, "x.onnx")


def test_batches_and_input_checks(artifacts):
    ckpt, onnx_path, _ = artifacts["conv"]
    ort_b = create_backend("onnxruntime", onnx_path, device="cpu")
    torch_b = create_backend("torch", ckpt, device="cpu")
    x = np.random.default_rng(3).standard_normal((2, 3) + SIZE).astype(np.float32)
    y_ort = ort_b.infer(x)  # static batch-1 graph: run image by image
    y_t = torch_b.infer(x)
    assert y_ort.shape == y_t.shape == (2, N_CLASSES) + SIZE and y_ort.dtype == np.float32
    assert np.abs(y_ort - y_t).max() < 1e-3
    np.testing.assert_allclose(y_ort[1:], ort_b.infer(x[1:]), atol=1e-6)
    with pytest.raises(DriveSegmentError, match="fixed at 64x192"):
        ort_b.infer(np.zeros((1, 3, 64, 64), np.float32))
    with pytest.raises(DriveSegmentError, match="float32"):
        ort_b.infer(x.astype(np.float64))
    with pytest.raises(DriveSegmentError, match=r"\(B, 3, H, W\)"):
        torch_b.infer(np.zeros((3,) + SIZE, np.float32))


def test_segmentation_model_colorize_and_repr(artifacts, kitti_rgb):
    model = load_model(artifacts["conv"][1])
    ids, _ = model.predict(kitti_rgb)
    rgb = model.colorize(ids)
    assert rgb.shape == kitti_rgb.shape and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[ids == ids[0, 0]][0], model.palette[ids[0, 0]])
    assert "onnxruntime" in repr(model) and "n_classes=8" in repr(model)


def test_backend_selection_and_errors(artifacts, tmp_path):
    ckpt, onnx_path, _ = artifacts["conv"]
    assert backend_kind_for(ckpt) == "torch"
    assert backend_kind_for(onnx_path) == "onnxruntime"
    assert backend_kind_for(tmp_path / "x.engine") == "tensorrt"
    assert backend_kind_for(tmp_path / "x.plan") == "tensorrt"
    with pytest.raises(DriveSegmentError, match="not found"):
        backend_kind_for(tmp_path / "missing.bin")
    (tmp_path / "weights.bin").write_bytes(b"\0")
    with pytest.raises(DriveSegmentError, match="cannot tell"):
        load_model(tmp_path / "weights.bin")
    with pytest.raises(DriveSegmentError, match="unknown inference backend"):
        create_backend("openvino", onnx_path)
    with pytest.raises(DriveSegmentError, match="bad option"):
        create_backend("onnxruntime", onnx_path, bf16=True)
    with pytest.raises(DriveSegmentError, match="not found"):
        load_model(tmp_path / "missing.onnx")
    with pytest.raises(DriveSegmentError, match="checkpoint directory"):
        create_backend("torch", onnx_path)
    (tmp_path / "broken.onnx").write_bytes(b"not an onnx model")
    with pytest.raises(DriveSegmentError, match="onnxruntime cannot load"):
        load_model(tmp_path / "broken.onnx")
    with pytest.raises(DriveSegmentError, match="device"):
        create_backend("torch", ckpt, device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(DriveSegmentError, match="CUDA is not available"):
            create_backend("torch", ckpt, device="cuda")
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(DriveSegmentError, match="onnxruntime-gpu"):
            create_backend("onnxruntime", onnx_path, device="cuda")


def test_tensorrt_backend_without_tensorrt_is_one_clear_error(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_tensorrt(name, *args, **kwargs):
        if name == "tensorrt":
            raise ImportError("No module named 'tensorrt'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorrt)
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"\0")
    with pytest.raises(DriveSegmentError) as err:
        load_model(engine)
    assert str(err.value) == B.TENSORRT_MISSING


def test_tensorrt_matches_onnxruntime(artifacts, kitti_rgb, tmp_path):
    pytest.importorskip("tensorrt", reason="TensorRT backend test needs the `tensorrt` package (JetPack / pip install tensorrt)")
    if not torch.cuda.is_available():
        pytest.skip("TensorRT backend test needs a CUDA GPU")
    from drive_segment_ros.inference.tensorrt_engine import build_engine, engine_is_stale

    _, onnx_path, _ = artifacts["conv"]
    engine = tmp_path / "conv.engine"
    record = build_engine(onnx_path, engine, fp16=False, workspace_gb=1)
    assert json.loads((tmp_path / "conv.engine.json").read_text())["onnx_sha256"] == record["onnx_sha256"]
    assert not engine_is_stale(engine, onnx_path)
    m_trt, m_ort = load_model(engine), load_model(onnx_path, device="cpu")
    assert m_trt.backend.name == "tensorrt"
    lt, lo = m_trt.logits(kitti_rgb), m_ort.logits(kitti_rgb)
    assert np.abs(lt - lo).max() < 1e-2
    ids_t, _ = m_trt.predict(kitti_rgb)
    ids_o, _ = m_ort.predict(kitti_rgb)
    assert np.mean(ids_t == ids_o) > 0.99


def test_torch_bf16_autocast_and_channels_last_stay_close_to_fp32(artifacts):
    # the CUDA fast path (bf16 autocast + NHWC) exercised on CPU: bf16 keeps ~3 significant digits
    ckpt, _, _ = artifacts["conv"]
    x = np.random.default_rng(5).standard_normal((1, 3) + SIZE).astype(np.float32)
    fp32 = create_backend("torch", ckpt, device="cpu")
    fast = create_backend("torch", ckpt, device="cpu", bf16=True, channels_last=True)
    assert (fp32.bf16, fp32.channels_last, fast.bf16, fast.channels_last) == (False, False, True, True)
    a, b = fp32.infer(x), fast.infer(x)
    assert b.dtype == np.float32
    scale = np.abs(a).max()
    assert 0 < np.abs(a - b).max() < 0.05 * scale  # really ran in bf16, and stayed close
    assert np.mean(a.argmax(1) == b.argmax(1)) > 0.8


def test_torch_and_onnxruntime_agree_on_a_nuscenes_camera(artifacts, nuscenes_dir):
    path = sorted(nuscenes_dir.glob("*CAM_FRONT__*.jpg"))[0]
    rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    assert rgb.shape == (900, 1600, 3)
    ckpt, onnx_path, _ = artifacts["conv"]
    ids_t, _ = load_model(ckpt, device="cpu").predict(rgb)
    ids_o, _ = load_model(onnx_path, device="cpu").predict(rgb)
    assert ids_t.shape == (900, 1600)
    assert np.mean(ids_t == ids_o) > 0.999 and len(np.unique(ids_t)) >= 2


def test_torch_backend_input_size_override(tmp_path):
    """``input_size`` overrides the checkpoint's network input (e.g. to match a fixed-size ONNX export)."""
    ckpt = _make_checkpoint(tmp_path / "ckpt", "mobilenetv2_deepsort")
    model = B.load_model(ckpt, backend="torch", device="cpu", input_size=(96, 160))
    assert model.backend.input_size == (96, 160)
    assert model.preprocessor(np.zeros((200, 300, 3), np.uint8)).shape == (1, 3, 96, 160)
    ids, _ = model.predict(np.zeros((200, 300, 3), np.uint8))
    assert ids.shape == (200, 300) and ids.dtype == np.uint8
