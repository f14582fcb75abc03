"""Losses of the two training stages (pure tensor functions, Drive&Segment Sec. 3.3-3.4).

* Teacher: cross-entropy on the partial pseudo-labels, ``ignore_index = 255``
  (:data:`drive_segment_ros.types.IGNORE_INDEX`) off the LiDAR segments -- :func:`teacher_loss`.
* Student: the teacher's prediction refined with the LiDAR segments (:func:`refine_with_segments`)
  is the full-image target of :func:`distillation_loss` (soft cross-entropy at temperature ``T``,
  Hinton et al. 2015, or hard cross-entropy on its argmax).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from drive_segment_ros.types import IGNORE_INDEX, DriveSegmentError

__all__ = ["teacher_loss", "refine_with_segments", "distillation_loss"]


def teacher_loss(logits, labels, reduction: str = "mean"):
    """Cross-entropy of (B, K, H, W) logits (computed in float32) against (B, H, W) int64 partial
    labels; pixels equal to ``IGNORE_INDEX`` (255) are skipped.

    ``reduction="mean"``: mean over the labelled pixels (scalar). ``"sum"``: the sum over them
    (scalar; data-parallel training divides by the all-reduced count of labelled pixels,
    :func:`drive_segment_training.distributed.global_mean_loss`).
    """
    if reduction not in ("mean", "sum"):
        raise DriveSegmentError(f"teacher_loss: reduction must be 'mean' or 'sum', got {reduction!r}")
    return F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX, reduction=reduction)


def refine_with_segments(probs, segments, mode: str = "soft"):
    """Refine per-pixel teacher predictions with LiDAR segments (Drive&Segment Sec. 3.4).

    Inside every LiDAR segment (same id in the same image) all pixels get

    * ``mode="soft"``: the segment-mean probability vector, or
    * ``mode="hard"``: the one-hot vector of the segment's majority class (votes = the per-pixel
      argmax; ties go to the lowest class id, as ``torch.argmax``).

    Pixels with ``segments < 0`` keep the teacher's probabilities unchanged. Fully vectorised:
    segment keys ``(b, id)`` are compacted with ``torch.unique`` and accumulated with
    ``index_add_`` (no Python loop over segments).

    Args:
        probs: (B, K, H, W) float probabilities (any float dtype; computed in float32).
        segments: (B, H, W) integer segment ids, ``-1`` = no segment.
        mode: ``"soft"`` or ``"hard"``.

    Returns:
        (B, K, H, W) float32 refined targets (rows still sum to 1).

    Raises:
        DriveSegmentError: shape mismatch or unknown mode.
    """
    if mode not in ("soft", "hard"):
        raise DriveSegmentError(f"refine_with_segments: mode must be 'soft' or 'hard', got {mode!r}")
    if probs.dim() != 4 or segments.shape != (probs.shape[0],) + tuple(probs.shape[2:]):
        raise DriveSegmentError(
            f"refine_with_segments: probs (B,K,H,W) and segments (B,H,W) must match, got "
            f"{tuple(probs.shape)} and {tuple(segments.shape)}"
        )
    B, K, H, W = probs.shape
    out = probs.float().permute(0, 2, 3, 1).contiguous()  # (B,H,W,K)
    seg = segments.to(device=probs.device, dtype=torch.long)
    inside = seg >= 0
    if not bool(inside.any()):
        return out.permute(0, 3, 1, 2)
    b_idx = torch.arange(B, device=seg.device).view(B, 1, 1).expand(B, H, W)
    keys = b_idx[inside] * (int(seg.max()) + 1) + seg[inside]
    _, inv = torch.unique(keys, return_inverse=True)
    n_seg = int(inv.max()) + 1
    p = out[inside]  # (M, K)
    if mode == "soft":
        sums = torch.zeros(n_seg, K, device=p.device, dtype=torch.float32).index_add_(0, inv, p)
        counts = torch.bincount(inv, minlength=n_seg).clamp_min(1).to(torch.float32)
        seg_values = sums / counts[:, None]
    else:
        votes = torch.zeros(n_seg * K, device=p.device, dtype=torch.float32)
        votes.index_add_(0, inv * K + p.argmax(1), torch.ones_like(inv, dtype=torch.float32))
        majority = votes.view(n_seg, K).argmax(1)
        seg_values = F.one_hot(majority, K).to(torch.float32)
    out[inside] = seg_values[inv]
    return out.permute(0, 3, 1, 2)


def distillation_loss(student_logits, targets, valid=None, soft: bool = True, temperature: float = 1.0,
                      reduction: str = "mean"):
    """Student loss on full-image teacher targets.

    Args:
        student_logits: (B, K, H, W) raw scores.
        targets: (B, K, H, W) target probabilities (from :func:`refine_with_segments` or the
            teacher's softmax at ``temperature``).
        valid: optional (B, H, W) bool; False pixels (crop padding) are excluded.
        soft: True -> ``T**2 * mean_pixels( -sum_k p_k log softmax(z / T)_k )`` (soft cross-entropy,
            = KL(p || q) + H(p), same gradient as KL; Hinton et al. 2015); False -> cross-entropy
            with ``argmax_k p_k`` (``temperature`` unused).
        temperature: ``T`` > 0.
        reduction: ``"mean"`` over the valid pixels, or ``"sum"`` over them (data-parallel
            training divides the sum by the all-reduced count of valid pixels).

    Returns:
        Scalar float32 loss tensor (0 when no pixel is valid).
    """
    if reduction not in ("mean", "sum"):
        raise DriveSegmentError(f"distillation_loss: reduction must be 'mean' or 'sum', got {reduction!r}")
    logits = student_logits.float()
    if valid is None:
        valid = torch.ones(logits.shape[0], *logits.shape[2:], dtype=torch.bool, device=logits.device)
    n = valid.sum()
    if soft:
        per_pixel = -(targets.float() * F.log_softmax(logits / temperature, dim=1)).sum(1)
        if reduction == "sum":
            return (per_pixel * valid).sum() * (temperature**2)
        return (per_pixel * valid).sum() / n.clamp_min(1) * (temperature**2)
    hard = targets.argmax(1)
    hard = torch.where(valid, hard, torch.full_like(hard, IGNORE_INDEX))
    if int(n) == 0:
        return logits.sum() * 0.0
    return F.cross_entropy(logits, hard, ignore_index=IGNORE_INDEX, reduction=reduction)
