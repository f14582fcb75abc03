"""Model file integrity: recorded sha256, verification, non-finite weights (drive_segment_ros.models.integrity)."""
from __future__ import annotations

import numpy as np
import pytest

from drive_segment_ros.models.integrity import (
    IntegrityError, check_finite, digest_path, file_sha256, read_digest, verify_digest, write_digest,
)
from drive_segment_ros.types import DriveSegmentError


def _safetensors(path, tensors):
    from safetensors.numpy import save_file

    save_file(tensors, str(path))
    return path


def test_digest_round_trip_and_corruption(tmp_path):
    rng = np.random.default_rng(0)
    path = _safetensors(tmp_path / "model.safetensors", {"w": rng.standard_normal((256, 256)).astype(np.float32)})
    digest = write_digest(path)
    assert digest == file_sha256(path) and len(digest) == 64
    assert digest_path(path).read_text().split() == [digest, "model.safetensors"]  # sha256sum format
    assert read_digest(path) == digest and verify_digest(path) == digest
    # 64 KiB of random bytes in the data region: safetensors still loads it, the digest does not match
    raw = bytearray(path.read_bytes())
    raw[-70_000:-70_000 + 65_536] = rng.integers(0, 256, 65_536, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(raw))
    from safetensors.numpy import load_file

    load_file(str(path))  # loads silently: this is why the digest exists
    with pytest.raises(IntegrityError, match="sha256 mismatch") as info:
        verify_digest(path)
    assert "\n" not in str(info.value) and "corrupt or unreadable" in str(info.value)
    assert isinstance(info.value, DriveSegmentError)
    with pytest.raises(IntegrityError):
        verify_digest(path, expected=digest)


def test_no_recorded_digest_is_a_warning(tmp_path, caplog):
    path = _safetensors(tmp_path / "old.safetensors", {"w": np.zeros(3, np.float32)})
    assert verify_digest(path) is None
    assert "no recorded sha256" in caplog.text
    digest_path(path).write_text("not-a-digest\n")
    with pytest.raises(IntegrityError, match="not a sha256"):
        read_digest(path)


def test_check_finite_numpy_and_torch():
    torch = pytest.importorskip("torch")
    good = {"a": np.ones((2, 3), np.float32), "ids": np.arange(4), "t": torch.ones(5)}
    assert check_finite(good) == 6 + 4 + 5
    w = torch.ones(10, 10)
    w[0, :3] = float("nan")
    w[1, 0] = float("inf")
    with pytest.raises(IntegrityError, match=r"4 non-finite weights in 1 tensors \(first: blocks.0.w\)") as info:
        check_finite({"ok": torch.zeros(3), "blocks.0.w": w, "n": torch.arange(3)}, source="ckpt/model.safetensors")
    assert str(info.value).startswith("ckpt/model.safetensors:") and "\n" not in str(info.value)
    with pytest.raises(IntegrityError, match="2 non-finite weights in 2 tensors"):
        check_finite([("x", np.array([np.inf], np.float64)), ("y", np.array([np.nan], np.float16))])


def test_check_onnx_finite(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    from drive_segment_ros.models.integrity import check_onnx_finite

    def model(weights):
        init = numpy_helper.from_array(weights, name="W")
        node = helper.make_node("Add", ["x", "W"], ["y"])
        graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])], [init])
        return helper.make_model(graph)

    onnx.save(model(np.ones(3, np.float32)), str(tmp_path / "ok.onnx"))
    assert check_onnx_finite(tmp_path / "ok.onnx") == 3
    onnx.save(model(np.array([1, np.nan, 2], np.float32)), str(tmp_path / "bad.onnx"))
    with pytest.raises(IntegrityError, match="1 non-finite weights in 1 tensors \\(first: W\\)"):
        check_onnx_finite(tmp_path / "bad.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"\x00garbage")
    with pytest.raises(DriveSegmentError, match="not a readable ONNX model"):
        check_onnx_finite(tmp_path / "junk.onnx")


# ------------------------------------------------------------------ wired into checkpoints / export / backends
def _tiny_checkpoint(directory):
    torch = pytest.importorskip("torch")
    from drive_segment_ros.models.checkpoint import save_checkpoint
    from drive_segment_ros.models.segmenter import SegmenterConfig, build_segmenter

    torch.manual_seed(0)
    cfg = SegmenterConfig(backbone="vit_tiny_patch16_224", n_classes=4, decoder="conv", d_model=16, input_size=(32, 32))
    model = build_segmenter(cfg, allow_random=True)
    save_checkpoint(directory, model, cfg)
    return model, cfg


def test_checkpoint_records_and_verifies_its_sha256(tmp_path, capsys):
    import json

    from drive_segment_ros.models.checkpoint import load_segmenter

    ckpt = tmp_path / "ckpt"
    _tiny_checkpoint(ckpt)
    weights = ckpt / "model.safetensors"
    assert json.loads((ckpt / "config.json").read_text())["weights_sha256"] == file_sha256(weights)
    load_segmenter(ckpt)  # verified
    # the case: 64 KiB of random bytes in the data region (safetensors alone loads it)
    raw = bytearray(weights.read_bytes())
    mid = len(raw) // 2
    raw[mid:mid + 65_536] = np.random.default_rng(1).integers(0, 256, 65_536, dtype=np.uint8).tobytes()
    weights.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError, match="sha256 mismatch") as info:
        load_segmenter(ckpt)
    assert "\n" not in str(info.value)
    # the CLI: one error line, no traceback
    from drive_segment_training.cli import main

    capsys.readouterr()
    assert main(["export", str(ckpt), "--onnx", str(tmp_path / "m.onnx")]) != 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and "sha256 mismatch" in errors[0], err


def test_checkpoint_with_nonfinite_weights_is_refused(tmp_path):
    torch = pytest.importorskip("torch")
    from drive_segment_ros.models.checkpoint import load_segmenter, save_checkpoint

    model, cfg = _tiny_checkpoint(tmp_path / "ok")
    with torch.no_grad():
        name, param = next((n, p) for n, p in model.named_parameters() if p.dtype.is_floating_point)
        param.view(-1)[:5] = float("nan")
    save_checkpoint(tmp_path / "nan", model, cfg)  # digest recorded for the NaN file: only the finite check catches it
    with pytest.raises(IntegrityError, match=f"5 non-finite weights in 1 tensors \\(first: {name}\\)"):
        load_segmenter(tmp_path / "nan")


def test_exported_onnx_records_and_verifies_its_sha256(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from drive_segment_ros.inference.backends import load_model
    from drive_segment_ros.inference.export import export_onnx

    _tiny_checkpoint(tmp_path / "ckpt")
    onnx_path = tmp_path / "m.onnx"
    report = export_onnx(tmp_path / "ckpt", onnx_path)
    assert report["sha256"] == read_digest(onnx_path) == file_sha256(onnx_path)
    load_model(onnx_path, backend="onnxruntime", device="cpu")  # verified
    raw = bytearray(onnx_path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # one flipped byte in the weights
    onnx_path.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError, match="sha256 mismatch"):
        load_model(onnx_path, backend="onnxruntime", device="cpu")
