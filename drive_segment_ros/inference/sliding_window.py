"""Sliding-window inference, the protocol of the released Drive&Segment model.

The authors' inference code (``vobecant/DriveAndSegment``: ``inference.py`` and
``segmenter_model/utils.py`` functions ``sliding_window`` / ``merge_windows`` / ``inference``,
following Segmenter, Strudel et al. ICCV 2021, ``segm/model/utils.py``) segments an image as
follows, and this module does the same on *any* backend:

1. Normalise the whole image and bring it to the working scale. Their variant files
   (``weights/segmenter_nusc.pth_variant.yml`` and ``..._variant_gpu.yml``, key
   ``inference_kwargs``) give ``im_size: 1024``; torchvision ``Resize(im_size)`` scales the
   *short* side to ``im_size``. (Their ``get_transformations`` skips the resize when
   ``im_size == 1024`` because their images were Cityscapes-sized, whose short side already is
   1024; here the short side is always brought to ``im_size``, which is identical for such
   images.) ``im_size=None`` means: the smallest scale at which one window still fits (the
   Segmenter evaluation convention, and the scale our own models are trained at, see
   ``drive_segment_training.augment``).
2. Cut square windows of ``window_size`` (512) at anchors ``0, stride, 2 stride, ...`` that
   keep the window inside the image, plus a last one flush with the bottom / right border
   (``H - window``); ``window_stride`` is 128 in the GPU variant, 384 in the CPU variant.
3. Run the network on the windows in batches (``batch_size`` 8 on GPU, 1 on CPU in
   ``inference.py``); every window gives ``(K, window, window)`` logits.
4. Sum the window logits into the image and divide by the number of windows covering each
   pixel (logits averaged over overlaps). Their ``merge_windows`` then applies a softmax,
   which does not change the argmax; the averaged logits are returned here.

Deviations, both documented and tested: windows may be rectangular ``(h, w)`` (our exported
models may have a non-square fixed input), and an image smaller than a window (possible only
with an explicit small ``im_size``) is zero-padded at the bottom / right in normalised space
(Segmenter's ``padding`` with fill value 0) and the padding is cropped from the result.

The per-window forward is a plain callable ``(B, 3, h, w) float32 -> (B, K, h', w')`` logits
(numpy array or torch tensor): a torch module, an ONNX Runtime session or a TensorRT engine
that was exported at the window size. When it returns torch tensors on a GPU the accumulation
runs there with torch; otherwise (numpy, CPU tensors) with numpy. Window outputs at another resolution than
the window (e.g. a patch-grid output) are bilinearly resized to the window first.

Memory: the accumulator holds ``K x H x W`` float32 logits of the working-scale image (e.g.
31 x 1024 x 2048 x 4 bytes = 260 MB for a Cityscapes image at the authors' scale).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from drive_segment_ros.config import ConfigBase
from drive_segment_ros.types import DriveSegmentError

LOG = logging.getLogger(__name__)

#: Inference modes of :class:`~drive_segment_ros.inference.backends.SegmentationModel`.
INFERENCE_MODES = ("whole", "sliding")

#: Metadata / checkpoint key holding a :class:`SlidingWindowConfig` dict.
METADATA_KEY = "sliding_window"

IntPair = Union[int, Sequence[int]]
Forward = Callable[[np.ndarray], Any]


def _pair(value: IntPair, what: str) -> Tuple[int, int]:
    if isinstance(value, (int, np.integer)):
        h = w = int(value)
    else:
        try:
            h, w = (int(v) for v in value)
        except (TypeError, ValueError) as exc:
            raise DriveSegmentError(f"{what} must be an int or (height, width), got {value!r}") from exc
    if h < 1 or w < 1:
        raise DriveSegmentError(f"{what} must be positive, got {value!r}")
    return h, w


@dataclass(frozen=True)
class SlidingWindowConfig(ConfigBase):
    """Settings of sliding-window inference (all sizes in pixels of the working-scale image).

    Attributes:
        window_size: window ``(h, w)`` (an int means square), = the network input size.
        window_stride: step between window anchors ``(h, w)``; ``<= window_size``.
        im_size: short side of the working-scale image; ``None`` = the smallest scale at which
            the image covers one window (``max(win_h / H, win_w / W)``).
        batch_size: windows per forward call (>= 1).

    The released model's values are :data:`AUTHORS_GPU` (512 / 128 / 1024, batch 8) and
    :data:`AUTHORS_CPU` (512 / 384 / 1024, batch 1).

    Raises:
        DriveSegmentError: non-positive values or a stride larger than the window (pixels
            that no window covers).
    """

    CONFIG_NAME: ClassVar[str] = "sliding-window settings"

    window_size: Tuple[int, int] = (512, 512)
    window_stride: Tuple[int, int] = (384, 384)
    im_size: Optional[int] = None
    batch_size: int = 1

    def validate(self) -> "SlidingWindowConfig":
        win = _pair(self.window_size, "window_size")
        stride = _pair(self.window_stride, "window_stride")
        if stride[0] > win[0] or stride[1] > win[1]:
            raise DriveSegmentError(f"window_stride {stride} must not exceed window_size {win} (pixels would be skipped)")
        if self.im_size is not None and int(self.im_size) < 1:
            raise DriveSegmentError(f"im_size must be positive or None, got {self.im_size!r}")
        if int(self.batch_size) < 1:
            raise DriveSegmentError(f"batch_size must be >= 1, got {self.batch_size!r}")
        object.__setattr__(self, "window_size", win)
        object.__setattr__(self, "window_stride", stride)
        object.__setattr__(self, "im_size", None if self.im_size is None else int(self.im_size))
        object.__setattr__(self, "batch_size", int(self.batch_size))
        return self

    # from_dict / to_dict come from ConfigBase (one config loader): ``to_dict`` is the JSON form stored
    # in model metadata under :data:`METADATA_KEY`; ``from_dict`` also reads the authors'
    # ``inference_kwargs`` keys (``window_size``, ``window_stride``, ``im_size``, optional ``batch_size``)
    # and raises DriveSegmentError for a non-mapping, unknown keys or invalid values.

    @classmethod
    def for_model(
        cls, input_size: IntPair, metadata: Optional[Mapping[str, Any]] = None, **overrides: Any
    ) -> "SlidingWindowConfig":
        """The settings of a model: ``metadata[METADATA_KEY]`` when the model carries them,
        else windows of the model's input size, stride 3/4 of the window (the ratio of the
        authors' CPU variant, 384/512) and ``im_size=None``. ``overrides`` (non-``None``) win.
        """
        stored = (metadata or {}).get(METADATA_KEY)
        if stored:
            base = cls.from_dict(stored).to_dict()
        else:
            win = _pair(input_size, "input_size")
            base = {"window_size": list(win), "window_stride": [max(1, (3 * v) // 4) for v in win],
                    "im_size": None, "batch_size": 1}
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_dict(base)


#: The released model's GPU variant (``segmenter_nusc.pth_variant_gpu.yml``, ``inference.py`` batch 8).
AUTHORS_GPU = SlidingWindowConfig(window_size=512, window_stride=128, im_size=1024, batch_size=8)
#: The released model's CPU variant (``segmenter_nusc.pth_variant.yml``, ``inference.py`` batch 1).
AUTHORS_CPU = SlidingWindowConfig(window_size=512, window_stride=384, im_size=1024, batch_size=1)


def window_anchors(length: int, window: int, stride: int) -> List[int]:
    """Start offsets of the windows along one axis (the authors' rule).

    ``[a for a in range(0, length, stride) if a < length - window] + [length - window]``:
    regular steps that leave room for a full window, then one window flush with the end.

    Args:
        length: image size along the axis (pixels), ``>= window``.
        window, stride: window size and step (pixels, ``1 <= stride <= window``).

    Returns:
        sorted, distinct offsets; ``[0]`` when ``length == window``.

    Raises:
        DriveSegmentError: ``length < window`` (pad first) or bad window / stride.
    """
    if window < 1 or stride < 1 or stride > window:
        raise DriveSegmentError(f"need 1 <= stride <= window, got window {window}, stride {stride}")
    if length < window:
        raise DriveSegmentError(f"image size {length} is smaller than the window {window}; pad it first")
    return [a for a in range(0, length, stride) if a < length - window] + [length - window]


def working_size(image_hw: Sequence[int], config: SlidingWindowConfig) -> Tuple[int, int]:
    """Size ``(H, W)`` of the working-scale image for an input of size ``image_hw``.

    ``im_size`` set: the short side becomes ``im_size`` and the long side scales by the same
    factor (``int(long * im_size / short)``, torchvision ``Resize(int)`` truncation).
    ``im_size=None``: scale ``s = max(win_h / H, win_w / W)`` (the image just covers a window),
    each side ``ceil(side * s)`` so that it never ends below the window.
    """
    h, w = (int(v) for v in image_hw)
    if h < 1 or w < 1:
        raise DriveSegmentError(f"image size must be positive, got {image_hw!r}")
    if config.im_size is not None:
        short = min(h, w)
        if h <= w:
            return config.im_size, int(w * config.im_size / short)
        return int(h * config.im_size / short), config.im_size
    wh, ww = config.window_size
    s = max(wh / h, ww / w)
    return max(wh, int(math.ceil(h * s - 1e-9))), max(ww, int(math.ceil(w * s - 1e-9)))


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def _resize_window_logits(y: Any, size: Tuple[int, int]) -> Any:
    """(B, K, h', w') logits -> (B, K, h, w), bilinear (half-pixel centres), numpy or torch."""
    if tuple(y.shape[2:]) == tuple(size):
        return y
    if _is_torch(y):
        import torch.nn.functional as F  # optional heavy dependency (only for torch outputs)

        return F.interpolate(y.float(), size=size, mode="bilinear", align_corners=False)
    out = np.empty(y.shape[:2] + tuple(size), np.float32)
    for b in range(y.shape[0]):
        hwk = np.ascontiguousarray(y[b].astype(np.float32).transpose(1, 2, 0))
        r = cv2.resize(hwk, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
        out[b] = (r[:, :, None] if r.ndim == 2 else r).transpose(2, 0, 1)
    return out


def sliding_window_logits(
    x: np.ndarray,
    forward: Forward,
    window_size: IntPair,
    window_stride: IntPair,
    batch_size: int = 1,
) -> Any:
    """Average a network's window logits over a (normalised) image.

    Args:
        x: ``(1, 3, H, W)`` or ``(3, H, W)`` float32 normalised image (working scale).
        forward: ``(B, 3, win_h, win_w) float32 -> (B, K, h', w')`` logits, numpy or torch
            (any device); called ``ceil(n_windows / batch_size)`` times, the last batch may be
            smaller.
        window_size, window_stride: ints or ``(h, w)`` pixels, ``stride <= window``.
        batch_size: windows per call.

    Returns:
        ``(1, K, H, W)`` float32 averaged logits: a torch tensor on the forward's device when it
        returns GPU tensors, else a numpy array.

    Raises:
        DriveSegmentError: bad shapes / settings, or a forward output with the wrong batch size.
    """
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[0] != 1 or x.shape[1] != 3:
        raise DriveSegmentError(f"sliding window expects one (1, 3, H, W) image, got shape {x.shape}")
    if x.dtype != np.float32:
        raise DriveSegmentError(f"sliding window expects float32 input, got {x.dtype}")
    wh, ww = _pair(window_size, "window_size")
    sh, sw = _pair(window_stride, "window_stride")
    batch_size = int(batch_size)
    if batch_size < 1:
        raise DriveSegmentError(f"batch_size must be >= 1, got {batch_size}")
    _, _, h, w = x.shape
    ph, pw = max(h, wh), max(w, ww)
    if (ph, pw) != (h, w):  # Segmenter ``padding``: zeros (normalised space) at bottom / right
        padded = np.zeros((1, 3, ph, pw), np.float32)
        padded[:, :, :h, :w] = x
        x = padded
    anchors = [(a, b) for a in window_anchors(ph, wh, sh) for b in window_anchors(pw, ww, sw)]
    acc = None
    count = np.zeros((ph, pw), np.float32)
    for i in range(0, len(anchors), batch_size):
        chunk = anchors[i : i + batch_size]
        batch = np.ascontiguousarray(np.stack([x[0, :, a : a + wh, b : b + ww] for a, b in chunk]))
        y = forward(batch)
        if _is_torch(y) and y.device.type == "cpu":  # host tensors: numpy (argmax_classes is faster later)
            y = y.detach().float().numpy()
        if tuple(y.shape[:1]) != (len(chunk),) or len(y.shape) != 4:
            raise DriveSegmentError(f"window forward returned shape {tuple(y.shape)} for {len(chunk)} windows")
        y = _resize_window_logits(y, (wh, ww))
        if acc is None:
            k = int(y.shape[1])
            if _is_torch(y):
                import torch  # optional heavy dependency (only when the forward returns torch tensors)

                acc = torch.zeros((k, ph, pw), dtype=torch.float32, device=y.device)
            else:
                acc = np.zeros((k, ph, pw), np.float32)
        for j, (a, b) in enumerate(chunk):
            acc[:, a : a + wh, b : b + ww] += y[j].float() if _is_torch(y) else y[j]
            count[a : a + wh, b : b + ww] += 1.0
    count = count[:h, :w]
    acc = acc[:, :h, :w]
    if _is_torch(acc):
        import torch  # optional heavy dependency

        acc = acc / torch.from_numpy(np.ascontiguousarray(count)).to(acc.device)
        return acc.unsqueeze(0)
    return (acc / count)[None]


def prepare_image(rgb: np.ndarray, normalize: Callable[[np.ndarray], np.ndarray], config: SlidingWindowConfig) -> np.ndarray:
    """Resize ``rgb`` to the working scale (``cv2.INTER_LINEAR``) and normalise it.

    Args:
        rgb: ``(H0, W0, 3)`` uint8 RGB.
        normalize: ``(H, W, 3) uint8 -> (3, H, W) float32``, e.g.
            :meth:`drive_segment_ros.inference.preprocess.Preprocessor.normalize` (the ONE
            normalisation of the package).
        config: sliding-window settings (:func:`working_size`).

    Returns:
        ``(1, 3, H, W)`` float32.
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise DriveSegmentError(f"expected an (H, W, 3) uint8 RGB image, got {rgb.dtype} {rgb.shape}")
    h, w = working_size(rgb.shape[:2], config)
    if (h, w) != rgb.shape[:2]:
        rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(normalize(rgb))[None]


def sliding_logits(
    rgb: np.ndarray,
    normalize: Callable[[np.ndarray], np.ndarray],
    forward: Forward,
    config: SlidingWindowConfig,
) -> Any:
    """Whole pipeline for one image: working scale, windows, averaged logits.

    Returns ``(1, K, H, W)`` logits at the working scale (see :func:`working_size`); turn them
    into class ids at the image size with
    :func:`drive_segment_ros.inference.preprocess.postprocess`.
    """
    x = prepare_image(rgb, normalize, config)
    return sliding_window_logits(x, forward, config.window_size, config.window_stride, config.batch_size)


def count_windows(image_hw: Sequence[int], config: SlidingWindowConfig) -> int:
    """Number of windows (forward passes x batch) :func:`sliding_logits` runs for an image size."""
    h, w = working_size(image_hw, config)
    wh, ww = config.window_size
    return len(window_anchors(max(h, wh), wh, config.window_stride[0])) * len(window_anchors(max(w, ww), ww, config.window_stride[1]))
