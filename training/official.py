"""Import the authors' released Drive&Segment model into this package's checkpoint format.

The authors (Vobecky et al., "Drive&Segment: Unsupervised Semantic Segmentation of Urban Scenes
via Cross-modal Distillation", ECCV 2022) published a nuScenes-trained Segmenter
(public repository ``vobecant/DriveAndSegment``, files ``weights/segmenter_nusc.pth``,
``weights/segmenter_nusc.pth_variant.yml`` (CPU) and ``..._variant_gpu.yml``):

* the checkpoint is ``torch.save({"model": state_dict})`` of their ``Segmenter``
  (``segmenter_model/segmenter.py``): ``encoder.*`` is DINO's ViT-S/16 (``vit_dino.vit_small``:
  384 wide, 12 blocks, 6 heads, LayerNorm eps 1e-6, qkv bias; built with DINO's default
  ``img_size=224``, so ``encoder.pos_embed`` is ``(1, 197, 384)`` = CLS + 14 x 14 patches);
  ``decoder.*`` is the Segmenter mask transformer (``segmenter_model/decoder.py``, Strudel et al.,
  ICCV 2021) with ``n_layers`` blocks (1 in the release), width = the encoder's (384),
  ``n_heads = width // 64`` = 6 (their ``create_decoder`` overrides the variant's ``n_heads``),
  MLP ratio 4, and ``n_cls`` = 31 class embeddings;
* the variant YAML gives the architecture (``net_kwargs``) and the inference protocol
  (``inference_kwargs``: ``im_size`` 1024, windows of 512, stride 384 (CPU file) or 128 (GPU
  file)); it contains a ``!!python/tuple`` tag, read here with a safe loader that only adds
  tuples.

:func:`import_official` maps every key onto :class:`~drive_segment_ros.models.segmenter.Segmenter`
(strict: every key of their file used once, every key of ours filled, shapes equal; table in
:func:`official_key_to_ours`) and writes a normal checkpoint (``model.safetensors`` +
``config.json``) that ``export``, ``evaluate`` and the segmentation node take like any other.
The config records ``pos_embed_resize="dino"``: DINO resamples the 14 x 14 position embedding
with ``scale_factor = (h + 0.1) / 14`` (bicubic), slightly unlike timm's ``size=(h, w)``; the
imported model reproduces DINO's exactly. The sliding-window settings of the chosen variant go to
``extra["sliding_window"]`` (``SlidingWindowConfig.to_dict()`` of
:mod:`drive_segment_ros.inference.sliding_window`; batch 8 for the GPU file, 1 for the CPU file,
as their ``inference.py`` runs them).

Loading never executes pickled code: ``torch.load(weights_only=True)`` with a small allow-list
(numpy scalar / dtype reconstruction, as optimiser states carry); a file that needs anything
else is refused with one line naming the globals it asks for.

:data:`NUSC_TO_CITYSCAPES` is the authors' fixed pseudo-class -> Cityscapes trainId mapping of
this model (``inference.py``, ``remap``), so their demo colours can be reproduced
(:func:`official_to_cityscapes`, :func:`colorize_official`); evaluation keeps Hungarian matching
as its default.

CLI: ``drive-segment import-official CHECKPOINT.pth --variant VARIANT.yml --out DIR``.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import numpy as np
import torch
import yaml
from safetensors.torch import load_file

from drive_segment_ros.inference.sliding_window import SlidingWindowConfig
from drive_segment_ros.models.checkpoint import save_checkpoint
from drive_segment_ros.models.segmenter import SegmenterConfig, build_segmenter
from drive_segment_ros.types import DriveSegmentError
from drive_segment_training.labels import label_set

LOG = logging.getLogger(__name__)

PathLike = Union[str, Path]

#: Their backbone names -> ours (only DINO ViT-S/16 was released).
OFFICIAL_BACKBONES = {"dino_vits16": "vit_small_patch16_224.dino"}
#: DINO ViT-S/16 (``vit_dino.vit_small``): width, depth, heads, patch, pretraining grid.
_VITS16 = {"embed_dim": 384, "depth": 12, "heads": 6, "patch": 16, "grid": 14}
#: Segmenter's input normalisations (``segm/data/utils.py`` STATS): name -> (mean, std).
NORMALIZATIONS = {
    "deit": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "vit": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}

#: The authors' pseudo-class -> Cityscapes trainId mapping of the nuScenes model
#: (vobecant/DriveAndSegment ``inference.py``, ``remap``, the ``'nusc' in WEIGHTS`` branch);
#: pseudo-classes not listed are shown as ignore (255, black).
NUSC_TO_CITYSCAPES: Dict[int, int] = {
    0: 0, 13: 1, 2: 2, 7: 3, 17: 4, 20: 5, 8: 6, 12: 7, 26: 8, 14: 9, 22: 10, 11: 11, 6: 12, 27: 13,
    10: 14, 19: 15, 24: 16, 9: 17, 4: 18,
}
#: Named mappings of released models (``extra["label_mapping"]`` of an imported checkpoint).
LABEL_MAPPINGS: Dict[str, Dict[int, int]] = {"drive_and_segment_nusc": NUSC_TO_CITYSCAPES}


# --------------------------------------------------------------------------------------------
# Variant file
# --------------------------------------------------------------------------------------------
def _variant_loader():
    class _Loader(yaml.SafeLoader):
        """SafeLoader + ``!!python/tuple`` (a plain sequence; nothing else of python/*)."""

    _Loader.add_constructor("tag:yaml.org,2002:python/tuple",
                            lambda loader, node: tuple(loader.construct_sequence(node)))
    return _Loader


def load_variant(path: PathLike) -> Dict[str, Any]:
    """Read one of the authors' variant YAML files (``segmenter_nusc.pth_variant[_gpu].yml``).

    Returns:
        the mapping as written (``net_kwargs``, ``inference_kwargs``, ...).

    Raises:
        DriveSegmentError: missing file, invalid YAML, a python tag other than tuple, or no
            ``net_kwargs`` mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise DriveSegmentError(f"variant file not found: {path}")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_variant_loader())  # noqa: S506 (safe loader)
    except yaml.YAMLError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DriveSegmentError(f"variant file {path} is not readable YAML: {first}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("net_kwargs"), dict):
        raise DriveSegmentError(f"variant file {path} has no 'net_kwargs' mapping (not a Drive&Segment variant?)")
    return data


@dataclass(frozen=True)
class OfficialVariant:
    """What the importer needs from a variant file.

    Attributes:
        backbone: their backbone name (``"dino_vits16"``).
        n_classes: output classes (31).
        decoder_layers: mask-transformer blocks (1).
        decoder_dropout: the decoder's dropout (0.1; inference sets it to 0, irrelevant in eval).
        mean, std: input normalisation on ``[0, 1]`` RGB (``normalization: deit`` = ImageNet).
        window_size: sliding-window side (pixels) = the network input size (512).
        window_stride: sliding-window stride (pixels; 384 CPU file, 128 GPU file).
        im_size: short side the image is brought to before the windows (1024).
    """

    backbone: str
    n_classes: int
    decoder_layers: int
    decoder_dropout: float
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]
    window_size: int
    window_stride: int
    im_size: int


def parse_variant(data: Mapping[str, Any], source: str = "variant") -> OfficialVariant:
    """Check a variant mapping against the released architecture and extract its settings.

    Raises:
        DriveSegmentError: an architecture this importer does not map (names the field).
    """
    net = data.get("net_kwargs")
    if not isinstance(net, Mapping):
        raise DriveSegmentError(f"{source}: no 'net_kwargs' mapping")
    dec = net.get("decoder") or {}

    def need(cond: bool, what: str) -> None:
        if not cond:
            raise DriveSegmentError(f"{source}: {what}; this importer maps the released DINO ViT-S/16 + mask transformer only")

    backbone = str(net.get("backbone", ""))
    need(backbone in OFFICIAL_BACKBONES, f"backbone {backbone!r} is not one of {sorted(OFFICIAL_BACKBONES)}")
    need(int(net.get("patch_size", 16)) == _VITS16["patch"], f"patch_size {net.get('patch_size')} != 16")
    need(int(net.get("d_model", 384)) == _VITS16["embed_dim"], f"d_model {net.get('d_model')} != 384")
    need(int(net.get("n_layers", 12)) == _VITS16["depth"], f"n_layers {net.get('n_layers')} != 12")
    need(not net.get("distilled", False), "distilled (DeiT distillation token) models are not supported")
    need(isinstance(dec, Mapping) and dec.get("name") == "mask_transformer",
         f"decoder {dec.get('name') if isinstance(dec, Mapping) else dec!r} is not 'mask_transformer'")
    n_cls = int(net.get("n_cls", dec.get("n_cls", 0)))
    need(n_cls >= 1, "n_cls missing")
    need(int(dec.get("n_cls", n_cls)) == n_cls, f"decoder n_cls {dec.get('n_cls')} != n_cls {n_cls}")
    layers = int(dec.get("n_layers", 1))
    need(layers >= 1, f"decoder n_layers {layers} < 1")
    norm = str(net.get("normalization", "deit"))
    need(norm in NORMALIZATIONS, f"normalization {norm!r} is not one of {sorted(NORMALIZATIONS)}")
    inf = data.get("inference_kwargs") or {}
    window = int(inf.get("window_size", 512))
    stride = int(inf.get("window_stride", window))
    im_size = int(inf.get("im_size", 1024))
    need(window > 0 and window % _VITS16["patch"] == 0, f"window_size {window} is not a positive multiple of 16")
    need(0 < stride <= window, f"window_stride {stride} not in (0, window_size]")
    need(im_size >= window, f"im_size {im_size} < window_size {window}")
    mean, std = NORMALIZATIONS[norm]
    return OfficialVariant(backbone, n_cls, layers, float(dec.get("dropout", 0.0)), mean, std, window, stride, im_size)


def segmenter_config(variant: OfficialVariant):
    """Our :class:`~drive_segment_ros.models.segmenter.SegmenterConfig` of the released model."""
    return SegmenterConfig(
        backbone=OFFICIAL_BACKBONES[variant.backbone], n_classes=variant.n_classes, decoder="mask_transformer",
        d_model=_VITS16["embed_dim"], n_layers=variant.decoder_layers, n_heads=_VITS16["embed_dim"] // 64,
        dropout=variant.decoder_dropout, mean=variant.mean, std=variant.std,
        input_size=(variant.window_size, variant.window_size), pos_embed_resize="dino")


# --------------------------------------------------------------------------------------------
# Key mapping
# --------------------------------------------------------------------------------------------
_ENC_BLOCK = re.compile(r"^encoder\.blocks\.(\d+)\.(norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.(weight|bias)$")
_DEC_BLOCK = re.compile(r"^decoder\.blocks\.(\d+)\.(norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.(weight|bias)$")
_ENC_TOP = {"encoder.cls_token", "encoder.pos_embed", "encoder.patch_embed.proj.weight",
            "encoder.patch_embed.proj.bias", "encoder.norm.weight", "encoder.norm.bias"}
_DEC_TOP = {"decoder.cls_emb", "decoder.proj_dec.weight", "decoder.proj_dec.bias", "decoder.proj_patch",
            "decoder.proj_classes", "decoder.decoder_norm.weight", "decoder.decoder_norm.bias",
            "decoder.mask_norm.weight", "decoder.mask_norm.bias"}
#: Their decoder MLP (``FeedForward.fc1/fc2``) -> ours (``nn.Sequential`` positions 0 and 3).
_DEC_MLP = {"mlp.fc1": "mlp.0", "mlp.fc2": "mlp.3"}


def official_key_to_ours(key: str) -> Optional[str]:
    """Our state-dict key for one key of their checkpoint, ``None`` for a key we do not know.

    ====================================================  =============================================
    theirs (``segmenter_model``)                          ours (``drive_segment_ros.models.segmenter``)
    ====================================================  =============================================
    ``encoder.{cls_token,pos_embed,patch_embed.proj.*}``  ``backbone.net.*`` (timm VisionTransformer)
    ``encoder.blocks.i.{norm1,attn.*,norm2,mlp.fc*}.*``   ``backbone.net.blocks.i.*`` (same names)
    ``encoder.norm.*``                                    ``backbone.net.norm.*``
    ``decoder.{cls_emb,proj_*,decoder_norm,mask_norm}``   ``decoder.*`` (same names)
    ``decoder.blocks.i.{norm1,attn.*,norm2}.*``           ``decoder.blocks.i.*``
    ``decoder.blocks.i.mlp.fc1.*`` / ``mlp.fc2.*``        ``decoder.blocks.i.mlp.0.*`` / ``mlp.3.*``
    ====================================================  =============================================
    """
    if key in _ENC_TOP or _ENC_BLOCK.match(key):
        return "backbone.net." + key[len("encoder."):]
    if key in _DEC_TOP:
        return key
    m = _DEC_BLOCK.match(key)
    if m:
        return f"decoder.blocks.{m.group(1)}.{_DEC_MLP.get(m.group(2), m.group(2))}.{m.group(3)}"
    return None


# --------------------------------------------------------------------------------------------
# Reading their file without executing pickled code
# --------------------------------------------------------------------------------------------
def _safe_numpy_globals() -> list:
    """numpy globals that only rebuild data (scalars and dtypes in optimiser / scheduler states),
    as ``torch.serialization.safe_globals`` entries; the scalar constructor is allowed under both
    its numpy 2 name and the ``numpy.core`` name that files pickled with numpy 1 (2022) carry."""
    out: list = [np.dtype]
    for mod_name in ("numpy._core.multiarray", "numpy.core.multiarray"):  # numpy 2, numpy 1
        try:
            scalar = getattr(importlib.import_module(mod_name), "scalar")
            break
        except (ImportError, AttributeError):
            continue
    else:  # pragma: no cover - every numpy has one of the two
        scalar = None
    if scalar is not None:
        out += [(scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar")]
    out.extend(v for v in vars(getattr(np, "dtypes", object)).values() if isinstance(v, type))
    return out


def _global_names(entries: list) -> set:
    return {e[1] if isinstance(e, tuple) else f"{e.__module__}.{e.__qualname__}" for e in entries}


def read_official_checkpoint(path: PathLike) -> Dict[str, Any]:
    """Their state dict (``{"model": state_dict}`` unwrapped), read without running pickled code.

    ``.pth``/``.pt``: ``torch.load(weights_only=True)`` (tensors, plain containers, numpy
    scalars / dtypes); ``.safetensors``: safetensors. Other entries of the file (optimiser,
    epoch, ...) are ignored.

    Returns:
        dict key -> ``torch.Tensor`` (CPU).

    Raises:
        DriveSegmentError: missing / unreadable file; a file that needs other pickled objects
            (one line naming them; nothing of it is executed); no ``model`` state dict of tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise DriveSegmentError(f"checkpoint not found: {path}")
    if path.suffix.lower() == ".safetensors":
        try:
            state = load_file(str(path), device="cpu")
        except Exception as exc:
            raise DriveSegmentError(f"cannot read {path}: {type(exc).__name__}: {exc}") from exc
    else:
        try:
            with torch.serialization.safe_globals(_safe_numpy_globals()):
                state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:  # UnpicklingError (forbidden global), corrupt zip, ...
            needed = []
            try:
                needed = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
            except Exception:
                pass
            allowed = _global_names(_safe_numpy_globals())
            needed = [g for g in needed if g not in allowed]
            if needed:
                raise DriveSegmentError(
                    f"{path.name} needs pickled objects beyond tensors ({', '.join(sorted(needed)[:5])}); refusing to "
                    "unpickle them (that would run code from the file): re-save it as torch.save({'model': "
                    "model.state_dict()}) or as safetensors") from None
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise DriveSegmentError(f"cannot read {path}: {type(exc).__name__}: {first[:200]}") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DriveSegmentError(f"{path} holds no state dict of tensors (expected {{'model': state_dict}})")
    return state


# --------------------------------------------------------------------------------------------
# Conversion
# --------------------------------------------------------------------------------------------
def convert_state_dict(state: Mapping[str, Any], model) -> Dict[str, Any]:
    """Map their state dict onto ``model`` (our Segmenter), strictly.

    Every key of ``state`` must map (:func:`official_key_to_ours`) to a distinct key of
    ``model.state_dict()`` with the same shape, and every key of ours must be filled.

    Returns:
        our state dict (float32 tensors, contiguous).

    Raises:
        DriveSegmentError: unknown / duplicate / missing keys or shape mismatches (one line,
            a few examples of each).
    """
    own = model.state_dict()
    out: Dict[str, torch.Tensor] = {}
    unknown, bad_shape, duplicate = [], [], []
    for key, value in state.items():
        ours = official_key_to_ours(key)
        if ours is None or ours not in own:
            unknown.append(key)
            continue
        if ours in out:
            duplicate.append(key)
            continue
        if tuple(value.shape) != tuple(own[ours].shape):
            bad_shape.append(f"{key} {tuple(value.shape)} vs {tuple(own[ours].shape)}")
            continue
        out[ours] = value.detach().to(torch.float32).contiguous()
    missing = sorted(set(own) - set(out))
    if unknown or bad_shape or duplicate or missing:
        raise DriveSegmentError(
            f"checkpoint does not match the released architecture: {len(unknown)} unknown key(s) {sorted(unknown)[:3]}, "
            f"{len(bad_shape)} wrong shape {bad_shape[:2]}, {len(missing)} of ours unfilled {missing[:3]}, "
            f"{len(duplicate)} duplicate {duplicate[:2]}")
    return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def import_official(checkpoint: PathLike, variant: PathLike, out_dir: PathLike) -> Path:
    """Convert the authors' checkpoint + variant file into our checkpoint format.

    Args:
        checkpoint: ``segmenter_nusc.pth`` (``{"model": state_dict}``) or a ``.safetensors``.
        variant: ``segmenter_nusc.pth_variant.yml`` (CPU: stride 384) or ``..._variant_gpu.yml``
            (stride 128).
        out_dir: output checkpoint folder (``model.safetensors`` + ``config.json``).

    Returns:
        ``out_dir`` as a Path. ``config.json`` ``extra`` holds ``source``, ``official_checkpoint``
        (file name), ``sha256``, ``variant``, ``sliding_window`` (window_size, window_stride,
        im_size, batch_size), ``label_mapping`` (``"drive_and_segment_nusc"``) and
        ``pseudo_to_cityscapes`` (the mapping itself).

    Raises:
        DriveSegmentError: unreadable / unsafe files, unsupported variant, key or shape mismatch.
    """
    checkpoint, variant = Path(checkpoint), Path(variant)
    spec = parse_variant(load_variant(variant), source=str(variant))
    state = read_official_checkpoint(checkpoint)
    config = segmenter_config(spec)
    backbone_log = logging.getLogger("drive_segment_ros.models")
    level = backbone_log.level
    backbone_log.setLevel(logging.ERROR)  # "RANDOM weights" warning: they are overwritten just below
    try:
        model = build_segmenter(config, allow_random=True)
    finally:
        backbone_log.setLevel(level)
    ours = convert_state_dict(state, model)
    with torch.no_grad():
        model.load_state_dict(ours, strict=True)
    model.backbone.weight_source = f"official {checkpoint.name}"
    gpu = "gpu" in variant.name.lower()
    extra = {
        "source": "Drive&Segment release (Vobecky et al., ECCV 2022; github.com/vobecant/DriveAndSegment)",
        "official_checkpoint": checkpoint.name,
        "sha256": _sha256(checkpoint),
        "variant": variant.name,
        "sliding_window": SlidingWindowConfig(window_size=spec.window_size, window_stride=spec.window_stride,
                                              im_size=spec.im_size, batch_size=8 if gpu else 1).to_dict(),
        "label_mapping": "drive_and_segment_nusc",
        "pseudo_to_cityscapes": {str(k): v for k, v in sorted(NUSC_TO_CITYSCAPES.items())},
        "stage": "official",
    }
    out = save_checkpoint(out_dir, model, config, extra=extra)
    LOG.info("imported %s (%d tensors, %d classes, windows %d/%d at short side %d) -> %s", checkpoint.name,
             len(ours), spec.n_classes, spec.window_size, spec.window_stride, spec.im_size, out)
    return out


# --------------------------------------------------------------------------------------------
# The authors' colours
# --------------------------------------------------------------------------------------------
def official_to_cityscapes(pred: np.ndarray, mapping: Mapping[int, int] = NUSC_TO_CITYSCAPES) -> np.ndarray:
    """Pseudo-class map -> Cityscapes trainIds with the authors' fixed mapping (255 elsewhere).

    Args:
        pred: (H, W) int pseudo-class ids (argmax of the 31 logits).
        mapping: pseudo-class -> trainId (default :data:`NUSC_TO_CITYSCAPES`).

    Returns:
        (H, W) uint8 trainIds, 255 for unmapped pseudo-classes.
    """
    pred = np.asarray(pred)
    lut = np.full(max(int(pred.max(initial=0)) + 1, max(mapping) + 1), 255, dtype=np.uint8)
    for pseudo, train_id in mapping.items():
        lut[int(pseudo)] = int(train_id)
    return lut[np.clip(pred, 0, lut.size - 1)] if pred.size else pred.astype(np.uint8)


def colorize_official(pred: np.ndarray, mapping: Mapping[int, int] = NUSC_TO_CITYSCAPES) -> np.ndarray:
    """(H, W) pseudo-classes -> (H, W, 3) uint8 RGB in Cityscapes colours as the authors' demo
    shows them (their ``map2cs``): mapped classes in the Cityscapes palette, the rest black."""
    _, palette = label_set("cityscapes19")
    train = official_to_cityscapes(pred, mapping)
    rgb = np.zeros(train.shape + (3,), dtype=np.uint8)
    ok = train < len(palette)
    rgb[ok] = np.asarray(palette, dtype=np.uint8)[train[ok]]
    return rgb


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------
def _cmd_import(args: argparse.Namespace) -> int:
    out = import_official(args.checkpoint, args.variant, args.out)
    print(f"imported {args.checkpoint} -> {out} (export it with: drive-segment export {out} --onnx model.onnx)")
    return 0


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Register ``import-official``."""
    p = subparsers.add_parser(
        "import-official", help="convert the authors' released segmenter_nusc.pth into a checkpoint folder",
        description="Convert the Drive&Segment release (segmenter_nusc.pth + its variant YAML, from "
                    "github.com/vobecant/DriveAndSegment) into model.safetensors + config.json. "
                    "Nothing pickled is executed.")
    p.add_argument("checkpoint", help="segmenter_nusc.pth ({'model': state_dict})")
    p.add_argument("--variant", required=True,
                   help="segmenter_nusc.pth_variant.yml (CPU windows, stride 384) or ..._variant_gpu.yml (stride 128)")
    p.add_argument("--out", required=True, help="output checkpoint folder")
    p.set_defaults(func=_cmd_import)
