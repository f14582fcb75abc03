"""Sliding-window inference (the released Drive&Segment protocol), backend independent."""
from __future__ import annotations

import numpy as np
import pytest

from drive_segment_ros.inference.preprocess import Preprocessor
from drive_segment_ros.inference.sliding_window import (
    AUTHORS_CPU, AUTHORS_GPU, SlidingWindowConfig, count_windows, prepare_image, sliding_logits,
    sliding_window_logits, window_anchors, working_size)
from drive_segment_ros.types import DriveSegmentError

RNG = np.random.default_rng(0)
W_1X1 = RNG.normal(size=(5, 3)).astype(np.float32)  # a pointwise (1x1 conv) "network", 5 classes


def pointwise(batch: np.ndarray) -> np.ndarray:
    """(B, 3, h, w) -> (B, 5, h, w); translation equivariant, so windows cannot change it."""
    return np.einsum("kc,bchw->bkhw", W_1X1, batch).astype(np.float32)


def test_anchors_follow_the_authors_rule():
    # [a for a in range(0, L, stride) if a < L - window] + [L - window]
    assert window_anchors(1024, 512, 128) == [0, 128, 256, 384, 512]
    assert window_anchors(1024, 512, 384) == [0, 384, 512]
    assert window_anchors(2048, 512, 384) == [0, 384, 768, 1152, 1536]
    assert window_anchors(512, 512, 128) == [0]
    assert window_anchors(600, 512, 384) == [0, 88]
    with pytest.raises(DriveSegmentError, match="smaller than the window"):
        window_anchors(400, 512, 128)


def test_working_size():
    assert working_size((1024, 2048), AUTHORS_GPU) == (1024, 2048)  # Cityscapes: unchanged
    assert working_size((375, 1242), AUTHORS_GPU) == (1024, int(1242 * 1024 / 375))
    assert working_size((2048, 1024), AUTHORS_CPU) == (2048, 1024)
    cover = SlidingWindowConfig(window_size=(256, 512), window_stride=(192, 384))
    assert working_size((375, 1242), cover) == (256, 848)  # scale 256/375 covers the window
    assert working_size((512, 512), SlidingWindowConfig(512, 384)) == (512, 512)
    # CPU variant on a Cityscapes image: 3 x 5 windows, GPU variant: 5 x 13
    assert count_windows((1024, 2048), AUTHORS_CPU) == 15
    assert count_windows((1024, 2048), AUTHORS_GPU) == 5 * 13


def test_pointwise_network_sliding_equals_whole_image():
    x = RNG.normal(size=(1, 3, 37, 61)).astype(np.float32)
    whole = pointwise(x)
    for win, stride, bs in (((16, 16), (5, 7), 1), ((37, 61), (37, 61), 1), ((20, 30), (10, 10), 4)):
        got = sliding_window_logits(x, pointwise, win, stride, bs)
        assert got.shape == (1, 5, 37, 61)
        np.testing.assert_allclose(got, whole, rtol=1e-5, atol=1e-5)


def test_window_covering_the_image_is_the_whole_image_forward():
    calls = []

    def net(batch):  # not translation equivariant: depends on the window's mean
        calls.append(batch.shape)
        return pointwise(batch) + batch.mean(axis=(1, 2, 3), keepdims=True)

    x = RNG.normal(size=(1, 3, 32, 48)).astype(np.float32)
    got = sliding_window_logits(x, net, (32, 48), (16, 16))
    assert calls == [(1, 3, 32, 48)]
    np.testing.assert_array_equal(got, net(x))


def test_overlap_average_hand_checked():
    # H=4, W=6, window 4x4, stride 2: anchors rows [0], cols [0, 2] -> windows cover cols 0-3 and 2-5.
    # The "network" answers 1.0 for the first window and 3.0 for the second:
    # cols 0-1 -> 1, cols 2-3 -> (1 + 3) / 2 = 2, cols 4-5 -> 3.
    values = iter([1.0, 3.0])

    def net(batch):
        return np.full((batch.shape[0], 2, 4, 4), next(values), np.float32)

    got = sliding_window_logits(np.zeros((1, 3, 4, 6), np.float32), net, 4, 2, batch_size=1)
    expected = np.array([1, 1, 2, 2, 3, 3], np.float32)
    np.testing.assert_array_equal(got[0, 0], np.tile(expected, (4, 1)))
    np.testing.assert_array_equal(got[0, 1], np.tile(expected, (4, 1)))


def test_batching_does_not_change_the_result():
    def net(batch):
        return pointwise(batch) * (1 + batch.std(axis=(1, 2, 3), keepdims=True))

    x = RNG.normal(size=(1, 3, 40, 70)).astype(np.float32)
    one = sliding_window_logits(x, net, 24, 10, batch_size=1)
    many = sliding_window_logits(x, net, 24, 10, batch_size=5)
    np.testing.assert_allclose(one, many, rtol=1e-6, atol=1e-6)


def test_torch_forward_outputs():
    torch = pytest.importorskip("torch")

    def net_np(batch):
        return pointwise(batch) + batch.mean(axis=(1, 2, 3), keepdims=True)

    def net_torch(batch):
        return torch.from_numpy(net_np(batch))

    x = RNG.normal(size=(1, 3, 30, 50)).astype(np.float32)
    a = sliding_window_logits(x, net_np, 16, 8, 3)
    b = sliding_window_logits(x, net_torch, 16, 8, 3)
    assert isinstance(b, np.ndarray) and b.shape == (1, 5, 30, 50)  # CPU tensors are accumulated with numpy
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)
    if torch.cuda.is_available():  # GPU tensors stay on the GPU
        c = sliding_window_logits(x, lambda bt: net_torch(bt).cuda(), 16, 8, 3)
        assert isinstance(c, torch.Tensor) and c.is_cuda
        np.testing.assert_allclose(c.cpu().numpy(), a, rtol=1e-5, atol=1e-5)


def test_small_image_is_padded_and_cropped():
    x = RNG.normal(size=(1, 3, 10, 12)).astype(np.float32)
    got = sliding_window_logits(x, pointwise, 16, 8)
    assert got.shape == (1, 5, 10, 12)
    np.testing.assert_allclose(got, pointwise(x), rtol=1e-5, atol=1e-5)


def test_low_resolution_window_output_is_resized():
    def patch_net(batch):  # answers on a 1/4 grid, constant per window
        b, _, h, w = batch.shape
        return np.ones((b, 2, h // 4, w // 4), np.float32)

    got = sliding_window_logits(np.zeros((1, 3, 32, 40), np.float32), patch_net, 16, 8)
    assert got.shape == (1, 2, 32, 40)
    np.testing.assert_allclose(got, 1.0, atol=1e-6)


def test_forward_with_wrong_batch_is_refused():
    with pytest.raises(DriveSegmentError, match="returned shape"):
        sliding_window_logits(np.zeros((1, 3, 8, 8), np.float32), lambda b: np.zeros((1, 2, 8, 8), np.float32), 4, 4, 4)


def test_config_from_authors_variant_and_for_model():
    cfg = SlidingWindowConfig.from_dict({"im_size": 1024, "window_size": 512, "window_stride": 128})
    assert cfg.window_size == (512, 512) and cfg.window_stride == (128, 128) and cfg.im_size == 1024
    assert SlidingWindowConfig.from_dict(cfg.to_dict()) == cfg
    own = SlidingWindowConfig.for_model((256, 512))
    assert own.window_size == (256, 512) and own.window_stride == (192, 384) and own.im_size is None
    stored = SlidingWindowConfig.for_model((512, 512), {"sliding_window": AUTHORS_GPU.to_dict()}, batch_size=2)
    assert stored.window_stride == (128, 128) and stored.im_size == 1024 and stored.batch_size == 2
    with pytest.raises(DriveSegmentError, match="must not exceed"):
        SlidingWindowConfig(window_size=64, window_stride=65)
    with pytest.raises(DriveSegmentError, match="sliding-window settings: unknown keys"):
        SlidingWindowConfig.from_dict({"window": 3})


def test_sliding_logits_uses_the_package_normalisation():
    rgb = RNG.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    pre = Preprocessor((48, 64))
    cfg = SlidingWindowConfig(window_size=(48, 64), window_stride=(24, 32))
    x = prepare_image(rgb, pre.normalize, cfg)
    np.testing.assert_array_equal(x, pre(rgb))  # same size: no resize, same normalisation
    np.testing.assert_allclose(sliding_logits(rgb, pre.normalize, pointwise, cfg), pointwise(pre(rgb)), rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------------------
# through SegmentationModel (the deployed path), torch and ONNX Runtime
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    """MobileNetV2 + conv head (8 classes, 64x192 input) checkpoint carrying sliding settings,
    and its ONNX export (fixed 64x192, batch 1)."""
    torch = pytest.importorskip("torch")
    from drive_segment_ros.inference.export import export_onnx
    from drive_segment_ros.models.checkpoint import save_checkpoint
    from drive_segment_ros.models.segmenter import SegmenterConfig, build_segmenter

    torch.manual_seed(0)
    cfg = SegmenterConfig.for_backbone("mobilenetv2_deepsort", n_classes=8, input_size=(64, 192))
    root = tmp_path_factory.mktemp("sliding_model")
    sliding = SlidingWindowConfig(window_size=(64, 192), window_stride=(32, 96), im_size=96, batch_size=3)
    save_checkpoint(root / "ckpt", build_segmenter(cfg), cfg, {"sliding_window": sliding.to_dict()})
    export_onnx(root / "ckpt", root / "model.onnx")
    return root / "ckpt", root / "model.onnx", sliding


def _scene(h, w):
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([(xx * 255 // w), (yy * 255 // h), ((xx + yy) % 64) * 4], axis=2)
    return np.clip(img + RNG.integers(0, 20, img.shape), 0, 255).astype(np.uint8)


def test_model_carries_its_sliding_settings_through_export(small_model):
    from drive_segment_ros.inference.backends import load_model

    ckpt, onnx_path, sliding = small_model
    for path in (ckpt, onnx_path):
        model = load_model(path, device="cpu", inference_mode="sliding")
        assert model.inference_mode == "sliding" and model.sliding == sliding
    assert load_model(ckpt, device="cpu", inference_mode="sliding", sliding={"batch_size": 1}).sliding.batch_size == 1
    with pytest.raises(DriveSegmentError, match="inference_mode"):
        load_model(ckpt, device="cpu", inference_mode="tiles")


def test_sliding_torch_and_onnxruntime_agree(small_model):
    from drive_segment_ros.inference.backends import load_model

    ckpt, onnx_path, _ = small_model
    rgb = _scene(150, 497)
    ids_t, timing = load_model(ckpt, device="cpu", inference_mode="sliding").predict(rgb)
    ids_o, _ = load_model(onnx_path, device="cpu", inference_mode="sliding").predict(rgb)
    assert ids_t.shape == (150, 497) and ids_t.dtype == np.uint8 and timing["total_ms"] > 0
    assert np.mean(ids_t == ids_o) > 0.999


def test_sliding_with_one_window_equals_whole(small_model):
    from drive_segment_ros.inference.backends import load_model

    ckpt, _, _ = small_model
    rgb = _scene(64, 192)  # the model input size: one window, no resize
    whole = load_model(ckpt, device="cpu", inference_mode="whole")
    sliding = load_model(ckpt, device="cpu", inference_mode="sliding", sliding={"im_size": None})
    np.testing.assert_allclose(sliding.logits(rgb), whole.logits(rgb), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(sliding.predict(rgb)[0], whole.predict(rgb)[0])


class _FakeEngine:
    def get_tensor_shape(self, name):
        return (-1, 3, 8, 8)

    def get_tensor_profile_shape(self, name, profile):
        return [(1, 3, 8, 8), (1, 3, 8, 8), (4, 3, 8, 8)]


class _NumpyBackend:
    """A backend in the InferenceBackend protocol, running :func:`pointwise` (like ONNX Runtime would)."""

    name, device, input_size = "fake", "cpu", (8, 8)
    metadata = {"n_classes": 5, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "input_size": [8, 8]}

    def __init__(self, engine=None):
        self.batches = []
        if engine is not None:
            self.engine, self.input_name = engine, "input"

    def infer(self, batch):
        self.batches.append(batch.shape)
        return pointwise(batch)


def test_segmentation_model_sliding_on_any_backend():
    from drive_segment_ros.inference.backends import SegmentationModel

    backend = _NumpyBackend()
    model = SegmentationModel(backend, inference_mode="sliding", sliding={"window_stride": 4, "batch_size": 2, "im_size": 12})
    rgb = _scene(12, 20)
    ids, timing = model.predict(rgb)
    assert ids.shape == (12, 20) and set(timing) >= {"infer_ms", "total_ms"}
    assert all(b[0] <= 2 and b[1:] == (3, 8, 8) for b in backend.batches)  # the backend only sees windows
    # a pointwise network: sliding = whole image at the working scale (12x20, no resize)
    x = model.preprocessor.normalize(rgb)[None]
    np.testing.assert_allclose(model.logits(rgb), pointwise(x), rtol=1e-5, atol=1e-5)
    assert "sliding" in repr(model)


def test_tensorrt_engine_batch_caps_the_window_batch():
    from drive_segment_ros.inference.backends import SegmentationModel

    model = SegmentationModel(_NumpyBackend(_FakeEngine()), inference_mode="sliding", sliding={"batch_size": 8})
    assert model.sliding.batch_size == 4
    assert SegmentationModel(_NumpyBackend(), inference_mode="sliding", sliding={"batch_size": 8}).sliding.batch_size == 8
