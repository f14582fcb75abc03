"""The segmentation network: Segmenter (Strudel et al., "Segmenter: Transformer for Semantic
Segmentation", ICCV 2021) as used by Drive&Segment (Vobecky et al., ECCV 2022, Sec. 3.3-3.4).

The released Drive&Segment teacher/student is Segmenter ViT-S/16 (encoder initialised from DINO)
with a 1-layer *mask transformer* decoder. Both teacher and student are built here
(:func:`build_segmenter`); training lives in ``drive_segment_training.trainer``.

Decoders (both take the backbone's dense map ``(B,C,h,w)``):

``"mask_transformer"`` (Strudel et al., Sec. 3.2; reference code ``segm/model/decoder.py``)
    patch tokens are projected to ``d_model``; ``n_classes`` learnable class embeddings are
    appended; ``n_layers`` pre-norm transformer blocks process both jointly; after a LayerNorm,
    patch and class tokens are projected (``proj_patch``, ``proj_classes``), L2-normalised, and the
    masks are their scalar products ``patches @ classes^T`` followed by a LayerNorm over classes.
``"conv"``
    a light head for CNN backbones: 3x3 conv-BN-ReLU, 3x3 conv-BN-ReLU, 1x1 conv to classes.

The class logits at the feature grid are bilinearly upsampled to the (stride-padded) input size
and cropped to ``(H, W)``, as in Segmenter. ``forward`` has no data-dependent control flow (only
shape arithmetic), so it exports to ONNX (opset 17) with a fixed input size.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar, Iterator, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from drive_segment_ros.config import ConfigBase
from drive_segment_ros.models.backbones import BACKBONES, DEFAULT, Backbone, build_backbone
from drive_segment_ros.types import DriveSegmentError

LOG = logging.getLogger(__name__)

DECODERS = ("mask_transformer", "conv")


@dataclass
class SegmenterConfig(ConfigBase):
    """Architecture of a :class:`Segmenter` (everything needed to rebuild it from a checkpoint).

    Attributes:
        backbone: key of :data:`~drive_segment_ros.models.backbones.BACKBONES`.
        n_classes: number of output classes ``K`` (pseudo-classes; the released model has 31).
        decoder: ``"mask_transformer"`` (Segmenter) or ``"conv"`` (light head for CNN backbones).
        d_model: decoder width (mask transformer: token width, Segmenter uses the encoder's
            width; conv head: hidden channels).
        n_layers: mask-transformer blocks (Drive&Segment: 1). Ignored by the conv head.
        n_heads: attention heads (``d_model % n_heads == 0``). Ignored by the conv head.
        dropout: dropout in the decoder blocks / before the conv classifier.
        mean, std: RGB normalisation of inputs on ``[0, 1]`` values; ``None`` = the backbone's
            (filled in by :func:`build_segmenter`).
        input_size: ``(H, W)`` pixels, default network input for export / inference.
        pos_embed_resize: how a ViT encoder resamples its position embedding to the input's
            patch grid: ``"timm"`` (bicubic to ``size=(h, w)``, default) or ``"dino"`` (DINO's
            ``interpolate_pos_encoding``, ``scale_factor = (h + 0.1) / 14``), which the
            authors' released model was trained with (``drive-segment import-official``).
    """

    backbone: str = DEFAULT
    n_classes: int = 31
    decoder: str = "mask_transformer"
    d_model: int = 384
    n_layers: int = 1
    n_heads: int = 6
    dropout: float = 0.1
    mean: Optional[Tuple[float, float, float]] = None
    std: Optional[Tuple[float, float, float]] = None
    input_size: Tuple[int, int] = (512, 512)
    pos_embed_resize: str = "timm"

    CONFIG_NAME: ClassVar[str] = "SegmenterConfig"

    def validate(self) -> "SegmenterConfig":
        """Check and coerce every value (tuples of floats / ints); raise :class:`DriveSegmentError`."""
        if self.backbone not in BACKBONES:
            raise DriveSegmentError(f"unknown backbone {self.backbone!r}; choose one of: {', '.join(BACKBONES)}")
        if self.decoder not in DECODERS:
            raise DriveSegmentError(f"unknown decoder {self.decoder!r}; choose one of: {', '.join(DECODERS)}")
        if int(self.n_classes) < 1 or int(self.d_model) < 1 or int(self.n_layers) < 0 or int(self.n_heads) < 1:
            raise DriveSegmentError(
                f"SegmenterConfig: n_classes, d_model, n_heads must be >= 1 and n_layers >= 0, got {self}")
        if self.decoder == "mask_transformer" and int(self.d_model) % int(self.n_heads):
            raise DriveSegmentError(f"SegmenterConfig: d_model {self.d_model} not divisible by n_heads {self.n_heads}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise DriveSegmentError(f"SegmenterConfig: dropout must be in [0, 1), got {self.dropout}")
        for key in ("mean", "std"):
            value = getattr(self, key)
            if value is not None:
                value = tuple(float(v) for v in value)
                if len(value) != 3 or (key == "std" and min(value) <= 0):
                    raise DriveSegmentError(f"SegmenterConfig: {key} must be 3 numbers (std > 0), got {value}")
                setattr(self, key, value)
        size = tuple(int(v) for v in self.input_size)
        if len(size) != 2 or min(size) < 1:
            raise DriveSegmentError(f"SegmenterConfig: input_size must be (H, W) > 0, got {self.input_size}")
        self.input_size = size
        if self.pos_embed_resize not in ("timm", "dino"):
            raise DriveSegmentError(f"SegmenterConfig: pos_embed_resize must be 'timm' or 'dino', got {self.pos_embed_resize!r}")
        self.n_classes, self.d_model = int(self.n_classes), int(self.d_model)
        self.n_layers, self.n_heads, self.dropout = int(self.n_layers), int(self.n_heads), float(self.dropout)
        return self

    @classmethod
    def for_backbone(cls, backbone: str = DEFAULT, n_classes: int = 31, **overrides: Any) -> "SegmenterConfig":
        """Sensible defaults per backbone: ViT -> Segmenter mask transformer with
        ``d_model = embed_dim``, ``n_heads = embed_dim // 64``, 1 layer, 512x512 input (the
        released config; 518x518 for stride 14 so the size is a multiple of the patch); CNN -> conv head with 128 channels, 256x512 input (CPU friendly).
        ``overrides`` replace any field (``None`` values are ignored)."""
        if backbone not in BACKBONES:
            raise DriveSegmentError(f"unknown backbone {backbone!r}; choose one of: {', '.join(BACKBONES)}")
        spec = BACKBONES[backbone]
        overrides = {k: v for k, v in overrides.items() if v is not None}  # None = keep the default
        if spec.kind == "timm_vit":
            side = -(-512 // spec.stride) * spec.stride  # 512, or 518 for stride 14
            base = dict(decoder="mask_transformer", d_model=spec.embed_dim, n_heads=max(1, spec.embed_dim // 64),
                        n_layers=1, input_size=(side, side))
        else:
            base = dict(decoder="conv", d_model=128, n_heads=1, n_layers=1, dropout=0.1, input_size=(256, 512))
        base.update(overrides)
        return cls(backbone=backbone, n_classes=n_classes, **base)


# --------------------------------------------------------------------------------------------
# Decoders
# --------------------------------------------------------------------------------------------
class _Attention(nn.Module):
    """Multi-head self-attention (qkv in one Linear, as in ViT / Segmenter)."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.attn_drop = nn.Dropout(dropout)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (B, heads, N, C/heads)
        attn = self.attn_drop(torch.softmax((q @ k.transpose(-2, -1)) * self.scale, dim=-1))
        x = (attn @ v).transpose(1, 2).reshape(B, N, C)
        return self.proj_drop(self.proj(x))


class _Block(nn.Module):
    """Pre-norm transformer block: ``x + Attn(LN(x))``, then ``x + MLP(LN(x))`` (MLP ratio 4, GELU)."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = _Attention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(4 * dim, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class MaskTransformer(nn.Module):
    """Segmenter mask-transformer decoder (Strudel et al. 2021, Sec. 3.2, ``MaskTransformer``).

    ``forward(feats (B,C,h,w)) -> masks (B,n_classes,h,w)`` (LayerNorm-ed cosine similarities
    between refined patch tokens and class embeddings).
    """

    def __init__(self, in_dim: int, n_classes: int, d_model: int, n_layers: int, n_heads: int,
                 dropout: float) -> None:
        super().__init__()
        self.n_classes = n_classes
        scale = d_model ** -0.5
        self.proj_dec = nn.Linear(in_dim, d_model)
        self.cls_emb = nn.Parameter(torch.randn(1, n_classes, d_model))
        self.blocks = nn.ModuleList([_Block(d_model, n_heads, dropout) for _ in range(n_layers)])
        self.proj_patch = nn.Parameter(scale * torch.randn(d_model, d_model))
        self.proj_classes = nn.Parameter(scale * torch.randn(d_model, d_model))
        self.decoder_norm = nn.LayerNorm(d_model)
        self.mask_norm = nn.LayerNorm(n_classes)
        self.apply(_init_weights)
        nn.init.trunc_normal_(self.cls_emb, std=0.02)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """``(B,C,h,w)`` backbone features -> ``(B,n_classes,h,w)`` masks (class logits)."""
        B, _, h, w = feats.shape
        x = self.proj_dec(feats.flatten(2).transpose(1, 2))  # (B, h*w, d)
        x = torch.cat((x, self.cls_emb.expand(B, -1, -1)), dim=1)
        for block in self.blocks:
            x = block(x)
        x = self.decoder_norm(x)
        patches = x[:, : h * w] @ self.proj_patch
        classes = x[:, h * w:] @ self.proj_classes
        patches = F.normalize(patches, dim=-1)
        classes = F.normalize(classes, dim=-1)
        masks = self.mask_norm(patches @ classes.transpose(1, 2))  # (B, h*w, K)
        return masks.transpose(1, 2).reshape(B, self.n_classes, h, w)


class ConvHead(nn.Module):
    """Light convolutional head: ``[3x3 conv, BN, ReLU] x 2 -> dropout -> 1x1 conv``.

    ``forward(feats (B,C,h,w)) -> logits (B,n_classes,h,w)``.
    """

    def __init__(self, in_dim: int, n_classes: int, d_model: int, dropout: float) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_dim, d_model, 3, padding=1, bias=False), nn.BatchNorm2d(d_model), nn.ReLU(inplace=True),
            nn.Conv2d(d_model, d_model, 3, padding=1, bias=False), nn.BatchNorm2d(d_model), nn.ReLU(inplace=True),
            nn.Dropout2d(dropout),
        )
        self.classifier = nn.Conv2d(d_model, n_classes, 1)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """``(B,C,h,w)`` backbone features -> ``(B,n_classes,h,w)`` class logits."""
        return self.classifier(self.body(feats))


def _init_weights(m: nn.Module) -> None:
    """Segmenter's init: truncated-normal(0.02) Linear weights, zero bias, unit LayerNorm."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------
class Segmenter(nn.Module):
    """Encoder (a :class:`~drive_segment_ros.models.backbones.Backbone`) + decoder.

    Attributes:
        config: the :class:`SegmenterConfig` it was built from.
        backbone: the encoder (DINO ViT initialises Segmenter's encoder directly).
        decoder: :class:`MaskTransformer` or :class:`ConvHead`.
        n_classes, stride, mean, std: shortcuts (``mean``/``std``: input normalisation).

    ``forward(x)``: ``x`` ``(B,3,H,W)`` float32 normalised with ``mean``/``std`` ->
    logits ``(B,n_classes,H,W)`` float32 (unnormalised; ``softmax(dim=1)`` gives probabilities).
    Any ``H, W`` works (padded to the stride internally).
    """

    def __init__(self, config: SegmenterConfig, backbone: Backbone) -> None:
        super().__init__()
        self.config = config
        self.backbone = backbone
        backbone.pos_embed_resize = config.pos_embed_resize
        self.n_classes = config.n_classes
        self.stride = backbone.stride
        self.mean = tuple(config.mean) if config.mean is not None else backbone.mean
        self.std = tuple(config.std) if config.std is not None else backbone.std
        if config.decoder == "mask_transformer":
            self.decoder = MaskTransformer(backbone.embed_dim, config.n_classes, config.d_model, config.n_layers,
                                           config.n_heads, config.dropout)
        else:
            self.decoder = ConvHead(backbone.embed_dim, config.n_classes, config.d_model, config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B,3,H,W)`` normalised -> logits ``(B,n_classes,H,W)``."""
        H, W = int(x.shape[-2]), int(x.shape[-1])
        feats = self.backbone(x)  # (B, C, ceil(H/s), ceil(W/s)), input padded bottom/right
        masks = self.decoder(feats)
        # scale_factor == stride maps exactly onto the stride-padded input (same sampling as
        # size=(h*stride, w*stride)); it also keeps the traced graph free of shape->int casts.
        masks = F.interpolate(masks, scale_factor=float(self.stride), mode="bilinear", align_corners=False)
        return masks[:, :, :H, :W]

    def encoder_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the backbone (for a separate, lower learning rate)."""
        return self.backbone.parameters()

    def decoder_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the decoder head."""
        return self.decoder.parameters()


def build_segmenter(config: SegmenterConfig, backbone_weights: Optional[str] = None,
                    allow_random: bool = False) -> Segmenter:
    """Build a :class:`Segmenter` (teacher or student) from its config.

    The encoder is :func:`~drive_segment_ros.models.backbones.build_backbone`'d with
    ``backbone_weights`` / ``allow_random`` (same rules: real weights or one clear error);
    ``allow_random=True`` when the full model's weights come from a checkpoint right after
    (:func:`~drive_segment_ros.models.checkpoint.load_segmenter`). The decoder is freshly
    initialised (Segmenter init). ``config.mean``/``config.std`` that are ``None`` are filled
    in place with the backbone's normalisation, so a saved config is self-contained.

    Returns:
        the model in eval mode on CPU.

    Raises:
        DriveSegmentError: invalid config, unknown backbone, or no backbone weights.
    """
    if not isinstance(config, SegmenterConfig):
        raise DriveSegmentError(f"build_segmenter expects a SegmenterConfig, got {type(config).__name__}")
    backbone = build_backbone(config.backbone, weights=backbone_weights, allow_random=allow_random)
    if config.mean is None:
        config.mean = backbone.mean
    if config.std is None:
        config.std = backbone.std
    model = Segmenter(config, backbone).eval()
    n_dec = sum(p.numel() for p in model.decoder.parameters())
    n_enc = sum(p.numel() for p in model.backbone.parameters())
    LOG.info("Segmenter: %s encoder (%.1fM params) + %s decoder (%.2fM params), %d classes",
             config.backbone, n_enc / 1e6, config.decoder, n_dec / 1e6, config.n_classes)
    return model
