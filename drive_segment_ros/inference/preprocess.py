"""Pre- and post-processing shared by every inference backend (torch, ONNX Runtime, TensorRT).

One implementation, tested once, so that the three backends see bit-identical network inputs
and turn logits into class ids the same way:

* :class:`Preprocessor`: RGB ``uint8 (H0, W0, 3)`` -> ``float32 (1, 3, H, W)`` NCHW, resized
  with ``cv2.resize(..., INTER_LINEAR)`` (OpenCV ``cv::resize`` doc) to the network input size
  and normalized per channel, ``x = (rgb / 255 - mean) / std`` (the timm / torchvision ImageNet
  convention used by DINO and Segmenter, Strudel et al. ICCV 2021).
* :func:`postprocess`: logits ``(1, K, H, W)`` or ``(K, H, W)`` -> class ids ``(H0, W0) uint8``.
  The policy is **argmax at model resolution, then nearest-neighbour resize** of the id map to
  the image size (``cv2.INTER_NEAREST_EXACT``: pixel-centre aligned, so an integer up-scaling
  replicates each model pixel into an exact block). This is what on-vehicle decoders do (Isaac
  ROS segmentation decoder): resizing K float maps costs K times more than resizing one uint8
  map. ``mode="bilinear"`` (resize the logits, then argmax, as in Segmenter's evaluation) is
  available for offline evaluation; every backend uses the same default.
* :data:`IMAGENET_MEAN` / :data:`IMAGENET_STD` and :func:`normalize_image`: the one RGB
  normalisation of the package (also used by the backbones and the training datasets).

Colouring class ids is :func:`drive_segment_ros.visualization.colorize`.
"""
from __future__ import annotations

import logging
from typing import Sequence, Tuple

import cv2
import numpy as np

from drive_segment_ros.types import DriveSegmentError

LOG = logging.getLogger(__name__)

#: ImageNet RGB mean / std in [0, 1] units (timm ``IMAGENET_DEFAULT_MEAN/STD``), used by DINO.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize_image(rgb_uint8: np.ndarray, mean: Sequence[float] = IMAGENET_MEAN,
                    std: Sequence[float] = IMAGENET_STD, device="cpu"):
    """The one torch normalisation: ``(H, W, 3)`` uint8 RGB -> ``(3, H, W)`` float32 tensor on ``device``.

    ``x = (rgb / 255 - mean) / std`` per channel, computed in float32 in this order (divide,
    subtract, divide), so the backbones, the training datasets and the torch inference see the
    same values bit for bit. :class:`Preprocessor` is its numpy form for backends without torch
    (``x * (1 / (255 std)) - mean / std``: equal up to float32 rounding, about 1e-6).

    Args:
        rgb_uint8: (H, W, 3) uint8 RGB image.
        mean, std: per-channel RGB mean / std in [0, 1] units (default ImageNet).
        device: torch device of the result (the uint8 image is moved first, then converted).

    Returns:
        ``torch.Tensor`` (3, H, W) float32; add the batch axis with ``[None]`` / ``unsqueeze(0)``.

    Raises:
        DriveSegmentError: not an (H, W, 3) uint8 array.
    """
    import torch  # optional heavy dependency: the numpy inference path (Preprocessor) does not need torch

    arr = np.asarray(rgb_uint8)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise DriveSegmentError(f"expected an (H,W,3) uint8 RGB image, got shape {arr.shape} dtype {arr.dtype}")
    x = torch.from_numpy(np.ascontiguousarray(arr)).to(device).permute(2, 0, 1).float().div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32, device=device).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=device).view(3, 1, 1)
    return (x - m) / s


#: Post-processing modes accepted by :func:`postprocess`.
POSTPROCESS_MODES = ("nearest", "bilinear")


def _check_size(size: Sequence[int], what: str) -> Tuple[int, int]:
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError) as exc:
        raise DriveSegmentError(f"{what} must be (height, width), got {size!r}") from exc
    if h <= 0 or w <= 0:
        raise DriveSegmentError(f"{what} must be positive (height, width), got {size!r}")
    return h, w


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise DriveSegmentError(f"expected an RGB image of shape (H, W, 3), got shape {rgb.shape}")
    if rgb.dtype != np.uint8:
        raise DriveSegmentError(f"expected a uint8 RGB image, got dtype {rgb.dtype}")
    return rgb


class Preprocessor:
    """RGB image -> normalized NCHW float32 network input.

    Args:
        input_size: network input ``(H, W)`` in pixels.
        mean, std: per-channel RGB mean and std in [0, 1] units (e.g. ImageNet
            ``(0.485, 0.456, 0.406)`` / ``(0.229, 0.224, 0.225)``), 3 values each, std > 0.

    Raises:
        DriveSegmentError: on a bad size, mean or std (e.g. values given in 0..255 units).

    Calling it on ``rgb`` (H0, W0, 3) uint8 returns ``(1, 3, H, W)`` float32 C-contiguous:
    ``cv2.resize(rgb, (W, H), interpolation=cv2.INTER_LINEAR)`` (skipped when the size
    already matches) then ``(x / 255 - mean) / std`` per channel.
    """

    def __init__(
        self,
        input_size: Sequence[int],
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        self.input_size = _check_size(input_size, "input_size")
        mean_a = np.asarray(mean, dtype=np.float64).reshape(-1)
        std_a = np.asarray(std, dtype=np.float64).reshape(-1)
        if mean_a.shape != (3,) or std_a.shape != (3,):
            raise DriveSegmentError(f"mean and std need 3 values (RGB), got {list(mean_a)} and {list(std_a)}")
        if not (np.all(np.isfinite(mean_a)) and np.all(np.isfinite(std_a)) and np.all(std_a > 0)):
            raise DriveSegmentError(f"mean/std must be finite with std > 0, got mean={list(mean_a)} std={list(std_a)}")
        if np.any(np.abs(mean_a) > 1.0) or np.any(std_a > 1.0):
            raise DriveSegmentError(
                f"mean/std must be in [0, 1] units (e.g. 0.485, not 123.7), got mean={list(mean_a)} std={list(std_a)}"
            )
        self.mean = tuple(float(v) for v in mean_a)
        self.std = tuple(float(v) for v in std_a)
        # x_norm = x_uint8 * scale + offset, with scale = 1/(255 std), offset = -mean/std.
        self._scale = (1.0 / (255.0 * std_a)).astype(np.float32)
        self._offset = (-mean_a / std_a).astype(np.float32)

    def __repr__(self) -> str:
        return f"Preprocessor(input_size={self.input_size}, mean={self.mean}, std={self.std})"

    def resize(self, rgb: np.ndarray) -> np.ndarray:
        """Resize ``rgb`` (H0, W0, 3) uint8 to the input size (H, W, 3) uint8 (INTER_LINEAR)."""
        rgb = _check_rgb(rgb)
        h, w = self.input_size
        if rgb.shape[:2] == (h, w):
            return rgb
        return cv2.resize(rgb, (w, h), interpolation=cv2.INTER_LINEAR)

    def normalize(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 -> (3, H, W) float32 normalized, ``(x/255 - mean)/std``."""
        x = rgb.astype(np.float32) * self._scale + self._offset  # (H, W, 3), broadcast per channel
        return np.ascontiguousarray(x.transpose(2, 0, 1))

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """Preprocess one image: (H0, W0, 3) uint8 -> (1, 3, H, W) float32."""
        return self.normalize(self.resize(rgb))[None]

    def batch(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Preprocess several images (any sizes) into one (B, 3, H, W) float32 batch."""
        if len(images) == 0:
            raise DriveSegmentError("batch() needs at least one image")
        return np.stack([self.normalize(self.resize(im)) for im in images], axis=0)

    def denormalize(self, batch: np.ndarray) -> np.ndarray:
        """Inverse of the normalization: (1 or B, 3, H, W) float32 -> (B, H, W, 3) uint8 (rounded)."""
        x = np.asarray(batch, dtype=np.float32)
        if x.ndim == 3:
            x = x[None]
        rgb = (x.transpose(0, 2, 3, 1) - self._offset) / self._scale
        return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def postprocess(logits, out_size: Sequence[int], mode: str = "nearest") -> np.ndarray:
    """Logits -> class ids at the image size.

    Args:
        logits: ``(1, K, H, W)`` or ``(K, H, W)`` numpy array or torch tensor (any float dtype,
            any device; a torch tensor is reduced with ``argmax`` on its own device so only
            the uint8 id map crosses to the host). K <= 256.
        out_size: ``(H0, W0)`` size of the original image in pixels.
        mode: ``"nearest"`` (default, used by every backend): argmax at model resolution, then
            ``cv2.INTER_NEAREST_EXACT`` resize of the id map. ``"bilinear"``: resize the logits
            bilinearly (``cv2.INTER_LINEAR``, half-pixel centres) then argmax (Segmenter eval).

    Returns:
        ``(H0, W0)`` uint8 class ids; ties in argmax resolve to the lowest class id.

    Raises:
        DriveSegmentError: on a wrong shape, K > 256, a batch > 1, or an unknown mode.
    """
    if mode not in POSTPROCESS_MODES:
        raise DriveSegmentError(f"unknown postprocess mode {mode!r}; use one of {POSTPROCESS_MODES}")
    h0, w0 = _check_size(out_size, "out_size")
    shape = tuple(logits.shape)
    if len(shape) == 4:
        if shape[0] != 1:
            raise DriveSegmentError(f"postprocess takes one image's logits, got batch of {shape[0]} (shape {shape})")
        logits = logits[0]
    elif len(shape) != 3:
        raise DriveSegmentError(f"logits must be (1, K, H, W) or (K, H, W), got shape {shape}")
    k, h, w = (int(v) for v in logits.shape)
    if k < 1 or k > 256 or h == 0 or w == 0:
        raise DriveSegmentError(f"logits need 1..256 classes and a non-empty map, got shape {shape}")

    if not isinstance(logits, np.ndarray):  # torch tensor
        import torch  # optional heavy dependency: only reached with a torch tensor

        if mode == "nearest":
            ids = logits.argmax(dim=0).to(dtype=torch.uint8).cpu().numpy()
            return _resize_ids(ids, h0, w0)
        logits = logits.detach().float().cpu().numpy()

    logits = np.asarray(logits)
    if mode == "nearest":
        return _resize_ids(argmax_classes(logits), h0, w0)
    # bilinear: resize every class map (cv2 handles up to 512 channels as (H, W, C)).
    hwk = np.ascontiguousarray(logits.astype(np.float32, copy=False).transpose(1, 2, 0))
    if (h, w) != (h0, w0):
        if k > 512:
            raise DriveSegmentError(f"bilinear postprocess supports at most 512 classes, got {k}")
        hwk = cv2.resize(hwk, (w0, h0), interpolation=cv2.INTER_LINEAR)
        if hwk.ndim == 2:
            hwk = hwk[:, :, None]
    return np.argmax(hwk, axis=2).astype(np.uint8)


def argmax_classes(logits: np.ndarray) -> np.ndarray:
    """``argmax`` over axis 0 of ``(K, H, W)`` logits -> ``(H, W)`` uint8 (K <= 256).

    A running maximum over the K contiguous class planes (vectorized per plane), about 2x
    faster than ``np.argmax(axis=0)``'s strided reduction; ties keep the lowest class id, as
    ``np.argmax`` does.
    """
    best = np.array(logits[0], dtype=np.float32, copy=True)
    ids = np.zeros(best.shape, dtype=np.uint8)
    for k in range(1, logits.shape[0]):
        plane = logits[k]
        ids[plane > best] = k
        np.maximum(best, plane, out=best)
    return ids


def _resize_ids(ids: np.ndarray, h0: int, w0: int) -> np.ndarray:
    if ids.shape == (h0, w0):
        return np.ascontiguousarray(ids)
    return cv2.resize(ids, (w0, h0), interpolation=cv2.INTER_NEAREST_EXACT)
