"""Segmenter: config round trip / validation, the mask-transformer maths against a hand-written
reference, upsampling + cropping, ONNX export checked in onnxruntime (both decoders), a
synthetic scene it must learn, and a forward pass on the real KITTI image."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from drive_segment_ros.models.backbones import normalize_image
from drive_segment_ros.models.segmenter import (
    ConvHead,
    MaskTransformer,
    SegmenterConfig,
    build_segmenter,
)
from drive_segment_ros.types import DriveSegmentError





def _tiny_vit_segmenter(n_classes=4, depth=2, **kw):
    """vit_tiny with its encoder cut to ``depth`` blocks (keeps the tests fast)."""
    cfg = SegmenterConfig.for_backbone("vit_tiny_patch16_224", n_classes=n_classes, d_model=64, n_heads=2,
                                       input_size=(64, 128), **kw)
    model = build_segmenter(cfg, allow_random=True)
    model.backbone.net.blocks = model.backbone.net.blocks[:depth]
    return model.eval()


@pytest.fixture(scope="module")
def vit_model():
    torch.manual_seed(0)
    return _tiny_vit_segmenter()


@pytest.fixture(scope="module")
def cnn_model():
    torch.manual_seed(0)
    cfg = SegmenterConfig.for_backbone("mobilenetv2_deepsort", n_classes=6, input_size=(64, 128))
    return build_segmenter(cfg).eval()


# ---------------------------------------------------------------------------- config
def test_config_roundtrip_and_defaults():
    cfg = SegmenterConfig()
    assert (cfg.backbone, cfg.decoder, cfg.n_layers, cfg.d_model, cfg.n_heads) == \
        ("vit_small_patch16_224.dino", "mask_transformer", 1, 384, 6)
    vit = SegmenterConfig.for_backbone("vit_base_patch8_224.dino", n_classes=27)
    assert (vit.decoder, vit.d_model, vit.n_heads, vit.input_size) == ("mask_transformer", 768, 12, (512, 512))
    assert SegmenterConfig.for_backbone("vit_small_patch14_dinov2.lvd142m").input_size == (518, 518)
    cnn = SegmenterConfig.for_backbone("mobilenetv2_deepsort", n_classes=10, mean=(0.5, 0.5, 0.5))
    assert cnn.decoder == "conv" and cnn.mean == (0.5, 0.5, 0.5)
    back = SegmenterConfig.from_dict(json.loads(json.dumps(cnn.to_dict())))
    assert back == cnn and isinstance(back.input_size, tuple)


@pytest.mark.parametrize("bad, match", [
    (dict(decoder="fcn"), "unknown decoder"),
    (dict(backbone="resnet"), "unknown backbone"),
    (dict(n_classes=0), "n_classes"),
    (dict(d_model=100, n_heads=3), "not divisible"),
    (dict(dropout=1.5), "dropout"),
    (dict(input_size=(0, 5)), "input_size"),
    (dict(std=(1, 0, 1)), "std"),
])
def test_config_validation(bad, match):
    with pytest.raises(DriveSegmentError, match=match):
        SegmenterConfig(**bad)


def test_config_from_dict_rejects_unknown_keys():
    with pytest.raises(DriveSegmentError, match="unknown keys"):
        SegmenterConfig.from_dict({"n_classes": 3, "heads": 2})
    with pytest.raises(DriveSegmentError, match="must be a mapping"):
        SegmenterConfig.from_dict([1, 2])


def test_build_fills_mean_std_from_backbone(cnn_model):
    assert cnn_model.config.mean == (0.485, 0.456, 0.406) and cnn_model.mean == cnn_model.config.mean
    with pytest.raises(DriveSegmentError, match="SegmenterConfig"):
        build_segmenter({"n_classes": 3})


# ---------------------------------------------------------------------------- decoder maths
def test_mask_transformer_matches_reference_formula():
    """Strudel et al. 2021 Sec. 3.2 written out by hand with the module's own parameters."""
    torch.manual_seed(0)
    dec = MaskTransformer(in_dim=12, n_classes=5, d_model=16, n_layers=1, n_heads=2, dropout=0.0).eval()
    feats = torch.randn(2, 12, 3, 4)
    with torch.no_grad():
        out = dec(feats)
        x = feats.flatten(2).transpose(1, 2) @ dec.proj_dec.weight.T + dec.proj_dec.bias  # (2, 12, 16)
        x = torch.cat([x, dec.cls_emb.expand(2, -1, -1)], 1)
        blk = dec.blocks[0]
        y = F.layer_norm(x, (16,), blk.norm1.weight, blk.norm1.bias)
        qkv = y @ blk.attn.qkv.weight.T + blk.attn.qkv.bias
        q, k, v = qkv.split(16, dim=-1)
        heads = []
        for hd in range(2):
            sl = slice(8 * hd, 8 * hd + 8)
            a = torch.softmax(q[..., sl] @ k[..., sl].transpose(1, 2) / np.sqrt(8), -1)
            heads.append(a @ v[..., sl])
        x = x + torch.cat(heads, -1) @ blk.attn.proj.weight.T + blk.attn.proj.bias
        x = x + blk.mlp(F.layer_norm(x, (16,), blk.norm2.weight, blk.norm2.bias))
        x = F.layer_norm(x, (16,), dec.decoder_norm.weight, dec.decoder_norm.bias)
        p = x[:, :12] @ dec.proj_patch
        c = x[:, 12:] @ dec.proj_classes
        cos = (p / p.norm(dim=-1, keepdim=True)) @ (c / c.norm(dim=-1, keepdim=True)).transpose(1, 2)
        assert cos.abs().max() <= 1 + 1e-5
        masks = F.layer_norm(cos, (5,), dec.mask_norm.weight, dec.mask_norm.bias)
        ref = masks.transpose(1, 2).reshape(2, 5, 3, 4)
    assert out.shape == (2, 5, 3, 4)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    # the mask LayerNorm (unit weight, zero bias at init) -> zero mean, unit variance over classes
    torch.testing.assert_close(out.mean(1), torch.zeros(2, 3, 4), atol=1e-5, rtol=0)


def test_bad_input_shape_is_a_clear_error(cnn_model):
    with pytest.raises(DriveSegmentError, match=r"expected a \(B,3,H,W\) tensor"):
        cnn_model(torch.zeros(1, 4, 32, 32))


def test_conv_head_shape():
    head = ConvHead(in_dim=96, n_classes=7, d_model=32, dropout=0.1).eval()
    assert head(torch.randn(1, 96, 5, 9)).shape == (1, 7, 5, 9)


@pytest.mark.parametrize("which", ["vit", "cnn"])
def test_logits_are_upsampled_and_cropped(which, vit_model, cnn_model):
    model = vit_model if which == "vit" else cnn_model
    x = torch.randn(2, 3, 50, 90)  # not a multiple of 16
    with torch.no_grad():
        logits = model(x)
        grid = model.decoder(model.backbone(x))
        s = model.stride
        ref = F.interpolate(grid, size=(grid.shape[2] * s, grid.shape[3] * s), mode="bilinear",
                            align_corners=False)[:, :, :50, :90]
    assert logits.shape == (2, model.n_classes, 50, 90) and grid.shape[2:] == (4, 6)
    torch.testing.assert_close(logits, ref)


# ---------------------------------------------------------------------------- ONNX
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize("which", ["vit_mask_transformer", "cnn_conv", "cnn_mask_transformer"])
def test_onnx_export_matches_onnxruntime(which, tmp_path, vit_model, cnn_model):
    ort = pytest.importorskip("onnxruntime")
    if which == "vit_mask_transformer":
        model = vit_model
    elif which == "cnn_conv":
        model = cnn_model
    else:
        torch.manual_seed(0)
        cfg = SegmenterConfig.for_backbone("mobilenetv2_deepsort", n_classes=3, decoder="mask_transformer",
                                           d_model=32, n_heads=2, input_size=(64, 128))
        model = build_segmenter(cfg).eval()
    H, W = model.config.input_size
    x = torch.randn(1, 3, H, W)
    path = tmp_path / "model.onnx"
    torch.onnx.export(model, (x,), str(path), opset_version=17, input_names=["image"], output_names=["logits"],
                      dynamo=False)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x2 = torch.randn(1, 3, H, W)  # a different input than the one traced with
    got = sess.run(None, {"image": x2.numpy()})[0]
    with torch.no_grad():
        ref = model(x2).numpy()
    assert got.shape == (1, model.n_classes, H, W)
    assert np.abs(got - ref).max() < 1e-3


# ---------------------------------------------------------------------------- learning
def test_learns_a_synthetic_two_class_scene():
    """Left half red-ish texture = class 0, right half blue-ish = class 1, partial labels
    (ignore_index 255 on a band) -> after a few steps the prediction is right everywhere."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    cfg = SegmenterConfig.for_backbone("mobilenetv2_deepsort", n_classes=2, d_model=32, input_size=(64, 96))
    model = build_segmenter(cfg).train()
    model.backbone.eval().requires_grad_(False)  # frozen ImageNet encoder: fast, decoder learns
    imgs, labels = [], []
    for i in range(4):
        split = 32 + 8 * i
        rgb = rng.integers(0, 60, (64, 96, 3), dtype=np.uint8)
        rgb[:, :split, 0] += 150
        rgb[:, split:, 2] += 150
        lab = np.zeros((64, 96), np.int64)
        lab[:, split:] = 1
        lab[:, split - 6:split + 6] = 255  # unlabelled band around the boundary
        imgs.append(normalize_image(rgb, model.mean, model.std)[None])
        labels.append(torch.from_numpy(lab))
    x, y = torch.cat(imgs), torch.stack(labels)
    opt = torch.optim.Adam(model.decoder_parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        loss = F.cross_entropy(model(x), y, ignore_index=255)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        pred = model(x).argmax(1)
    known = y != 255
    acc = (pred[known] == y[known]).float().mean().item()
    assert losses[-1] < 0.5 * losses[0] and acc > 0.95


# ---------------------------------------------------------------------------- real data
def test_forward_on_real_kitti(kitti_dir, cnn_model):
    bgr = cv2.imread(str(kitti_dir / "000008.png"), cv2.IMREAD_COLOR)
    rgb = cv2.resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), (512, 160), interpolation=cv2.INTER_AREA)
    x = normalize_image(rgb, cnn_model.mean, cnn_model.std)[None]
    with torch.no_grad():
        logits = cnn_model(x)
    assert logits.shape == (1, 6, 160, 512) and torch.isfinite(logits).all()
    # untrained head, but ImageNet features: the prediction is not one constant class everywhere
    assert logits.argmax(1).unique().numel() > 1
