"""The authors' released checkpoint: import (strict key / shape mapping, no pickled code run),
forward equal to an independent implementation of the Segmenter equations, ONNX export.

No real ``segmenter_nusc.pth`` is needed: a state dict with the authors' exact key names and
shapes (written out below from their ``segmenter_model/vit_dino.py`` (DINO ``vit_small``),
``segmenter_model/decoder.py`` (``MaskTransformer``), ``segmenter_model/blocks.py`` and the
variant file ``weights/segmenter_nusc.pth_variant.yml``) is filled with random values and saved
as they save it, ``torch.save({"model": state_dict})``.
"""
from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("timm")
F = torch.nn.functional

from drive_segment_ros.types import DriveSegmentError  # noqa: E402
from drive_segment_training import official  # noqa: E402

# The authors' CPU variant file (weights/segmenter_nusc.pth_variant.yml), as published.
VARIANT_CPU = """\
dataset_kwargs:
  window_size: 512
  window_stride: 384
debug: false
inference_kwargs:
  im_size: 1024
  window_size: 512
  window_stride: 384
net_kwargs:
  backbone: dino_vits16
  d_model: 384
  decoder:
    drop_path_rate: 0.0
    dropout: 0.1
    n_cls: 31
    n_layers: 1
    name: mask_transformer
  distilled: false
  drop_path_rate: 0.1
  dropout: 0.0
  image_size: !!python/tuple
    - 512
    - 512
  n_cls: 31
  n_heads: 3
  n_layers: 12
  normalization: deit
  patch_size: 16
val_dataset_kwargs:
  batch_size: 1
  crop_size: 512
  dataset: cityscapes
  image_size: 1024
  normalization: deit
  num_workers: 10
  split: val
"""
VARIANT_GPU = VARIANT_CPU.replace("  window_stride: 384\nnet_kwargs", "  window_stride: 128\nnet_kwargs")

D, DEPTH, HEADS, PATCH, N_CLS = 384, 12, 6, 16, 31  # DINO vit_small; decoder heads = 384 // 64


def _block_shapes(prefix: str) -> dict:
    """timm / Segmenter ``Block``: norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2 (ratio 4)."""
    return {
        f"{prefix}.norm1.weight": (D,), f"{prefix}.norm1.bias": (D,),
        f"{prefix}.attn.qkv.weight": (3 * D, D), f"{prefix}.attn.qkv.bias": (3 * D,),
        f"{prefix}.attn.proj.weight": (D, D), f"{prefix}.attn.proj.bias": (D,),
        f"{prefix}.norm2.weight": (D,), f"{prefix}.norm2.bias": (D,),
        f"{prefix}.mlp.fc1.weight": (4 * D, D), f"{prefix}.mlp.fc1.bias": (4 * D,),
        f"{prefix}.mlp.fc2.weight": (D, 4 * D), f"{prefix}.mlp.fc2.bias": (D,),
    }


def their_shapes(n_cls: int = N_CLS, dec_layers: int = 1) -> dict:
    """Key -> shape of their ``Segmenter(encoder=vit_small(...), decoder=MaskTransformer(...))``."""
    shapes = {
        "encoder.cls_token": (1, 1, D),
        "encoder.pos_embed": (1, 1 + 14 * 14, D),  # DINO's default img_size=224 (image_size is not passed on)
        "encoder.patch_embed.proj.weight": (D, 3, PATCH, PATCH),
        "encoder.patch_embed.proj.bias": (D,),
        "encoder.norm.weight": (D,), "encoder.norm.bias": (D,),
        "decoder.cls_emb": (1, n_cls, D),
        "decoder.proj_dec.weight": (D, D), "decoder.proj_dec.bias": (D,),
        "decoder.proj_patch": (D, D), "decoder.proj_classes": (D, D),
        "decoder.decoder_norm.weight": (D,), "decoder.decoder_norm.bias": (D,),
        "decoder.mask_norm.weight": (n_cls,), "decoder.mask_norm.bias": (n_cls,),
    }
    for i in range(DEPTH):
        shapes.update(_block_shapes(f"encoder.blocks.{i}"))
    for i in range(dec_layers):
        shapes.update(_block_shapes(f"decoder.blocks.{i}"))
    return shapes


def their_state_dict(seed: int = 0, n_cls: int = N_CLS, dec_layers: int = 1) -> dict:
    """Random values of a plausible scale (LayerNorm gains around 1, small weights)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in their_shapes(n_cls, dec_layers).items():
        if "norm" in key and key.endswith("weight"):
            t = 1.0 + 0.1 * torch.randn(shape, generator=g)
        elif key.endswith(("proj_patch", "proj_classes")):
            t = torch.randn(shape, generator=g) * D ** -0.5
        elif key.endswith(("pos_embed", "cls_token", "cls_emb")):
            t = 0.5 * torch.randn(shape, generator=g)
        else:
            t = 0.05 * torch.randn(shape, generator=g)
        out[key] = t
    return out


# --- an independent implementation of the Segmenter equations (Strudel et al., ICCV 2021) ---
def _ln(x, sd, key, eps):
    return F.layer_norm(x, x.shape[-1:], sd[key + ".weight"], sd[key + ".bias"], eps)


def _block(x, sd, p, eps, heads):
    B, N, C = x.shape
    h = _ln(x, sd, p + ".norm1", eps)
    qkv = F.linear(h, sd[p + ".attn.qkv.weight"], sd[p + ".attn.qkv.bias"]).reshape(B, N, 3, heads, C // heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    a = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(C // heads), dim=-1)
    h = (a @ v).transpose(1, 2).reshape(B, N, C)
    x = x + F.linear(h, sd[p + ".attn.proj.weight"], sd[p + ".attn.proj.bias"])
    h = _ln(x, sd, p + ".norm2", eps)
    h = F.linear(F.gelu(F.linear(h, sd[p + ".mlp.fc1.weight"], sd[p + ".mlp.fc1.bias"])),
                 sd[p + ".mlp.fc2.weight"], sd[p + ".mlp.fc2.bias"])
    return x + h


def reference_forward(sd: dict, x: torch.Tensor, dec_layers: int = 1) -> torch.Tensor:
    """Logits (B, K, H, W) of their model for a normalised (B, 3, H, W) input, H, W % 16 == 0."""
    B, _, H, W = x.shape
    h, w = H // PATCH, W // PATCH
    t = F.conv2d(x, sd["encoder.patch_embed.proj.weight"], sd["encoder.patch_embed.proj.bias"], stride=PATCH)
    t = t.flatten(2).transpose(1, 2)  # patch embedding (B, h*w, D)
    t = torch.cat([sd["encoder.cls_token"].expand(B, -1, -1), t], dim=1)
    pos = sd["encoder.pos_embed"]
    if (h, w) != (14, 14):  # DINO interpolate_pos_encoding: bicubic, scale (h + 0.1) / 14
        grid = pos[:, 1:].reshape(1, 14, 14, D).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, scale_factor=((h + 0.1) / 14, (w + 0.1) / 14), mode="bicubic", align_corners=False)
        assert grid.shape[-2:] == (h, w)
        pos = torch.cat([pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, h * w, D)], dim=1)
    t = t + pos
    for i in range(DEPTH):
        t = _block(t, sd, f"encoder.blocks.{i}", 1e-6, HEADS)
    t = _ln(t, sd, "encoder.norm", 1e-6)[:, 1:]  # last layer, normed, CLS dropped
    # mask transformer: patch tokens + class embeddings through the blocks
    t = F.linear(t, sd["decoder.proj_dec.weight"], sd["decoder.proj_dec.bias"])
    t = torch.cat([t, sd["decoder.cls_emb"].expand(B, -1, -1)], dim=1)
    for i in range(dec_layers):
        t = _block(t, sd, f"decoder.blocks.{i}", 1e-5, D // 64)
    t = _ln(t, sd, "decoder.decoder_norm", 1e-5)
    patches = t[:, : h * w] @ sd["decoder.proj_patch"]
    classes = t[:, h * w:] @ sd["decoder.proj_classes"]
    patches = patches / patches.norm(dim=-1, keepdim=True)  # L2-normalised patch features
    classes = classes / classes.norm(dim=-1, keepdim=True)  # L2-normalised class embeddings
    masks = _ln(patches @ classes.transpose(1, 2), sd, "decoder.mask_norm", 1e-5)  # (B, h*w, K)
    masks = masks.transpose(1, 2).reshape(B, -1, h, w)
    return F.interpolate(masks, size=(H, W), mode="bilinear", align_corners=False)


# --- fixtures ---
@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """Their checkpoint + CPU variant on disk, and the imported checkpoint folder."""
    root = tmp_path_factory.mktemp("official")
    sd = their_state_dict()
    torch.save({"model": sd}, root / "segmenter_nusc.pth")
    (root / "segmenter_nusc.pth_variant.yml").write_text(VARIANT_CPU)
    out = official.import_official(root / "segmenter_nusc.pth", root / "segmenter_nusc.pth_variant.yml", root / "ckpt")
    return root, sd, out


def test_variant_reads_python_tuple_safely(tmp_path):
    path = tmp_path / "v.yml"
    path.write_text(VARIANT_CPU)
    data = official.load_variant(path)
    assert data["net_kwargs"]["image_size"] == (512, 512)
    spec = official.parse_variant(data)
    assert (spec.n_classes, spec.decoder_layers, spec.window_size, spec.window_stride, spec.im_size) == (31, 1, 512, 384, 1024)
    assert spec.mean == (0.485, 0.456, 0.406)
    path.write_text(VARIANT_CPU.replace("!!python/tuple", "!!python/object/apply:os.system"))
    with pytest.raises(DriveSegmentError, match="not readable YAML"):
        official.load_variant(path)
    path.write_text(VARIANT_CPU.replace("dino_vits16", "vit_base_patch8_384"))
    with pytest.raises(DriveSegmentError, match="backbone 'vit_base_patch8_384'"):
        official.parse_variant(official.load_variant(path))


def test_every_key_is_mapped_once(released):
    from drive_segment_ros.models.checkpoint import load_segmenter

    _, sd, out = released
    model, config, extra = load_segmenter(out)
    own = model.state_dict()
    mapped = {official.official_key_to_ours(k): k for k in sd}
    assert None not in mapped and len(mapped) == len(sd) == len(own)  # one-to-one, nothing left over
    for ours, theirs in mapped.items():
        assert torch.equal(own[ours], sd[theirs]), ours
    assert (config.n_classes, config.n_layers, config.n_heads, config.input_size) == (31, 1, 6, (512, 512))
    assert config.backbone == "vit_small_patch16_224.dino" and config.pos_embed_resize == "dino"
    assert extra["sliding_window"] == {"window_size": [512, 512], "window_stride": [384, 384], "im_size": 1024,
                                       "batch_size": 1}
    assert extra["label_mapping"] == "drive_and_segment_nusc" and len(extra["sha256"]) == 64


@pytest.mark.parametrize("size", [(64, 96), (224, 224)])
def test_forward_matches_segmenter_equations(released, size):
    from drive_segment_ros.models.checkpoint import load_segmenter

    _, sd, out = released
    model, _, _ = load_segmenter(out)
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model(x)
        ref = reference_forward(sd, x)
    assert ours.shape == ref.shape == (2, 31, *size)
    assert float((ours - ref).abs().max()) < 2e-4
    assert float(ref.std()) > 0.1  # not a degenerate comparison


def test_export_takes_the_imported_model(released, tmp_path):
    pytest.importorskip("onnxruntime")
    from drive_segment_ros.inference.backends import load_model
    from drive_segment_ros.inference.export import export_onnx

    _, _, out = released
    report = export_onnx(out, tmp_path / "official.onnx", height=64, width=96)
    assert report["output_shape"][1] == 31
    assert report["max_abs_diff"] < 1e-3 and report["argmax_agreement"] > 0.99
    # the deployed path (segmentation node, evaluation) picks the variant's windows up
    for path, kind in ((out, "torch"), (tmp_path / "official.onnx", "onnxruntime")):
        model = load_model(path, backend=kind, device="cpu", inference_mode="sliding")
        assert model.sliding.window_size == (512, 512) and model.sliding.window_stride == (384, 384)
        assert model.sliding.im_size == 1024


def test_gpu_variant_and_strictness(tmp_path):
    sd = their_state_dict(seed=2)
    (tmp_path / "gpu.yml").write_text(VARIANT_GPU)
    torch.save({"model": sd}, tmp_path / "ok.pth")
    from drive_segment_ros.models.checkpoint import read_checkpoint_config

    official.import_official(tmp_path / "ok.pth", tmp_path / "gpu.yml", tmp_path / "gpu")
    assert read_checkpoint_config(tmp_path / "gpu")[1]["sliding_window"]["window_stride"] == [128, 128]
    broken = dict(sd)
    del broken["decoder.mask_norm.bias"]
    broken["encoder.head.weight"] = torch.zeros(1000, D)
    torch.save({"model": broken}, tmp_path / "bad.pth")
    with pytest.raises(DriveSegmentError, match=r"1 unknown key.*encoder.head.weight.*1 of ours unfilled.*mask_norm.bias"):
        official.import_official(tmp_path / "bad.pth", tmp_path / "gpu.yml", tmp_path / "bad")
    wrong = dict(sd)
    wrong["decoder.cls_emb"] = torch.zeros(1, 27, D)
    torch.save({"model": wrong}, tmp_path / "wrong.pth")
    with pytest.raises(DriveSegmentError, match=r"wrong shape.*decoder.cls_emb"):
        official.import_official(tmp_path / "wrong.pth", tmp_path / "gpu.yml", tmp_path / "wrong")


RAN = []


def _run_payload(flag):
    RAN.append(flag)


class Payload:
    """Unpickling this would run code (``__reduce__`` -> ``_run_payload``); it must be refused."""

    def __reduce__(self):
        return (_run_payload, ("executed",))


def test_pickled_code_is_refused(tmp_path):
    sd = their_state_dict(seed=3)
    torch.save({"model": sd, "args": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(DriveSegmentError) as err:
        official.read_official_checkpoint(tmp_path / "evil.pth")
    msg = str(err.value)
    assert "\n" not in msg and "refusing to unpickle" in msg and "_run_payload" in msg
    assert RAN == []
    # numpy scalars (optimiser / scheduler states) are data and are allowed
    torch.save({"model": sd, "epoch": np.int64(63), "lr": np.float64(1e-4)}, tmp_path / "np.pth")
    assert set(official.read_official_checkpoint(tmp_path / "np.pth")) == set(sd)
    (tmp_path / "junk.pth").write_bytes(pickle.dumps([1, 2], protocol=2) + b"junk")
    with pytest.raises(DriveSegmentError, match="cannot read|no state dict"):
        official.read_official_checkpoint(tmp_path / "junk.pth")


def test_authors_cityscapes_mapping():
    pred = np.array([[0, 13, 2], [30, 4, 5]])
    train = official.official_to_cityscapes(pred)
    assert train.tolist() == [[0, 1, 2], [255, 18, 255]]
    assert sorted(official.NUSC_TO_CITYSCAPES.values()) == list(range(19))  # each trainId once
    rgb = official.colorize_official(pred)
    assert rgb.shape == (2, 3, 3) and rgb[0, 0].tolist() == [128, 64, 128] and rgb[1, 0].tolist() == [0, 0, 0]


def test_cli_import_official(tmp_path, capsys):
    from drive_segment_training.cli import main

    torch.save({"model": their_state_dict(seed=4)}, tmp_path / "segmenter_nusc.pth")
    (tmp_path / "v.yml").write_text(VARIANT_CPU)
    rc = main(["import-official", str(tmp_path / "segmenter_nusc.pth"), "--variant", str(tmp_path / "v.yml"),
               "--out", str(tmp_path / "ckpt")])
    assert rc == 0 and (tmp_path / "ckpt" / "model.safetensors").is_file() and (tmp_path / "ckpt" / "config.json").is_file()
    assert "drive-segment export" in capsys.readouterr().out
    torch.save({"model": their_state_dict(seed=4), "args": Payload()}, tmp_path / "evil.pth")
    assert main(["import-official", str(tmp_path / "evil.pth"), "--variant", str(tmp_path / "v.yml"),
                 "--out", str(tmp_path / "evil")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "refusing to unpickle" in err and RAN == []


def test_numpy1_scalar_names_are_allowed(tmp_path):
    """Files pickled with numpy 1 (the 2022 release) name ``numpy.core.multiarray.scalar``."""
    import zipfile

    torch.save({"model": {"encoder.cls_token": torch.zeros(1, 1, D)}, "epoch": np.int64(3)}, tmp_path / "a.pth")
    with zipfile.ZipFile(tmp_path / "a.pth") as src, zipfile.ZipFile(tmp_path / "b.pth", "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            if name.endswith("data.pkl"):
                data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
            dst.writestr(name, data)
    assert list(official.read_official_checkpoint(tmp_path / "b.pth")) == ["encoder.cls_token"]
