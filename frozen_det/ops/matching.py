"""IoU-threshold matching of candidate boxes (anchors or ROIs) to ground truth.

Input is a similarity matrix ``iou [..., N, M]`` (N candidates, M ground-truth boxes) as
produced by :func:`frozen_det.ops.boxes.pairwise_iou` with validity masks, so padded ground
truth / padded candidates carry IoU -1 and can never be positive.

Each candidate's best IoU puts it in one band (docs/reference.md §2.5, §2.8)::

    max_iou < invalid_below                      -> INVALID   (only if invalid_below is set)
    max_iou < negative_below                     -> NEGATIVE
    negative_below <= max_iou < positive_from    -> IGNORE
    max_iou >= positive_from  (> if strict)      -> POSITIVE

Labels are int32 constants below. ``matched_gt`` holds the ground-truth index for positives
and -1 for everything else; gather with :func:`gather_matched`.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax.numpy as jnp

POSITIVE = 1
NEGATIVE = 0
IGNORE = -1
INVALID = -2  # candidate overlaps no valid ground truth at all (IoU -1 everywhere)


class Match(NamedTuple):
    labels: jnp.ndarray  # [..., N] int32 in {POSITIVE, NEGATIVE, IGNORE, INVALID}
    matched_gt: jnp.ndarray  # [..., N] int32 ground-truth index, -1 unless POSITIVE
    max_iou: jnp.ndarray  # [..., N] best IoU of each candidate


def match_by_iou(
    iou: jnp.ndarray,
    negative_below: float,
    positive_from: float,
    *,
    strict_positive: bool = False,
    invalid_below: Optional[float] = None,
    force_match_gt: bool = False,
    gt_valid: Optional[jnp.ndarray] = None,
) -> Match:
    """Assign each of N candidates to its best of M ground-truth boxes by IoU bands.

    Args:
      iou: ``[..., N, M]`` IoU (padding = -1).
      negative_below: candidates whose best IoU is below this are NEGATIVE.
      positive_from: candidates whose best IoU is at least this are POSITIVE.
      strict_positive: use ``>`` instead of ``>=`` for the positive band (the TPU Eff-B7
        ROI sampler's fg test, docs/reference.md §7.2).
      invalid_below: optional lower bound of the negative band; below it the label is INVALID
        (the ROI matcher's ``[-inf, 0)`` band, docs/reference.md §2.8).
      force_match_gt: make each valid ground truth's best candidate POSITIVE for that ground
        truth, whatever its IoU (``force_match_for_each_col``, RPN, docs/reference.md §2.5). Like the
        reference: one candidate per ground truth (the first among equal IoUs), and if two
        ground truths pick the same candidate the lower ground-truth index wins.
      gt_valid: ``[..., M]`` bool, needed with ``force_match_gt`` so padded ground truth does
        not force anything (the reference labels unpadded ground truth on the host).

    Under ``jax.vmap`` or with leading batch dimensions, everything is per image.
    """
    num_candidates = iou.shape[-2]
    max_iou = jnp.max(iou, axis=-1)
    best_gt = jnp.argmax(iou, axis=-1).astype(jnp.int32)
    positive = max_iou > positive_from if strict_positive else max_iou >= positive_from
    labels = jnp.where(positive, POSITIVE, jnp.where(max_iou < negative_below, NEGATIVE, IGNORE))
    if invalid_below is not None:
        labels = jnp.where(max_iou < invalid_below, INVALID, labels)

    if force_match_gt:
        # For every ground truth, its best candidate; then for every candidate, the lowest
        # ground-truth index that chose it (if any).
        best_candidate = jnp.argmax(iou, axis=-2)  # [..., M]
        chosen = best_candidate[..., None, :] == jnp.arange(num_candidates)[:, None]  # [..., N, M]
        if gt_valid is not None:
            chosen = chosen & gt_valid[..., None, :]
        forced = jnp.any(chosen, axis=-1)
        forced_gt = jnp.argmax(chosen, axis=-1).astype(jnp.int32)
        best_gt = jnp.where(forced, forced_gt, best_gt)
        labels = jnp.where(forced, POSITIVE, labels)

    labels = labels.astype(jnp.int32)
    matched_gt = jnp.where(labels == POSITIVE, best_gt, -1).astype(jnp.int32)
    return Match(labels, matched_gt, max_iou)


def rpn_match(
    iou: jnp.ndarray, gt_valid: jnp.ndarray, negative_below: float = 0.3, positive_from: float = 0.7
) -> Match:
    """RPN anchor labels (docs/reference.md §2.5): < 0.3 negative, [0.3, 0.7) ignore, >= 0.7 positive,
    plus each valid ground truth's best anchor forced positive. ``iou`` is ``[..., A, M]``."""
    return match_by_iou(iou, negative_below, positive_from, force_match_gt=True, gt_valid=gt_valid)


def roi_match(
    iou: jnp.ndarray,
    foreground_from: float = 0.5,
    background_below: float = 0.5,
    background_from: float = 0.0,
    strict_foreground: bool = False,
) -> Match:
    """ROI labels (docs/reference.md §2.8): positive at IoU >= 0.5 (or > t with ``strict_foreground``),
    background ``[0, 0.5)``, and INVALID below 0 (padded ROIs, images without ground truth).
    Both NEGATIVE and INVALID ROIs are background (class 0).
    Cascade stages 2/3 use ``foreground_from = background_below = 0.7 / 0.8``."""
    return match_by_iou(
        iou, background_below, foreground_from, strict_positive=strict_foreground, invalid_below=background_from
    )


def gather_matched(values: jnp.ndarray, matched_gt: jnp.ndarray, fill=0) -> jnp.ndarray:
    """``values [..., M, *F]`` gathered at ``matched_gt [..., N]`` -> ``[..., N, *F]``;
    unmatched (-1) rows get ``fill``. Leading dims of both must agree (batch)."""
    safe = jnp.maximum(matched_gt, 0)
    if values.ndim == matched_gt.ndim:  # one value per ground truth, no feature dims
        out = jnp.take_along_axis(values, safe, axis=-1)
        return jnp.where(matched_gt >= 0, out, fill)
    batch = matched_gt.ndim - 1
    index = safe.reshape(safe.shape + (1,) * (values.ndim - batch - 1))
    out = jnp.take_along_axis(values, index, axis=batch)
    mask = (matched_gt >= 0).reshape(index.shape)
    return jnp.where(mask, out, fill)
