"""Two-stage detector post-processing: per-class NMS to a fixed number of detections.

Reproduces the reference's ``DetectionGenerator`` with ``nms_version='v2'`` (docs/reference.md §2.7):

1. softmax over class logits, drop background (class 0);
2. decode the box deltas on the ROIs with the stage's weights, clip to the canvas;
3. per foreground class: top-k (``pre_nms_top_k``) ROIs by score, scores <= 0.05 dropped,
   greedy NMS at IoU 0.5 keeping up to ``max_per_class``;
4. all classes pooled, global top ``max_detections`` (100).

:func:`detection_postprocess` does all four from raw head outputs;
:func:`multiclass_nms` does 3-4 for boxes already decoded (e.g. cascade outputs).
Output classes are 1..C-1 (0 marks padding).
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp

from frozen_det.ops.boxes import FRCNN_WEIGHTS, clip_boxes, decode_boxes
from frozen_det.ops.nms import non_max_suppression_padded


class Detections(NamedTuple):
    boxes: jnp.ndarray  # [..., K, 4] yxyx canvas pixels, 0 for padding
    scores: jnp.ndarray  # [..., K], 0 for padding, descending
    classes: jnp.ndarray  # [..., K] int32 in 1..C-1, 0 for padding
    valid: jnp.ndarray  # [..., K] bool
    num_detections: jnp.ndarray  # [...] int32


def multiclass_nms(
    boxes: jnp.ndarray,
    scores: jnp.ndarray,
    *,
    max_detections: int = 100,
    max_per_class: Optional[int] = None,
    pre_nms_top_k: int = 5000,
    score_threshold: float = 0.05,
    iou_threshold: float = 0.5,
    tile_size: int = 256,
) -> Detections:
    """Per-class NMS then a global top-k (steps 3-4 of the module docstring).

    Args:
      boxes: ``[..., N, F, 4]`` per-class boxes for F foreground classes, or ``[..., N, 4]``
        (class-agnostic boxes shared by all classes).
      scores: ``[..., N, F]`` foreground-class probabilities (background already dropped).
      max_detections: K, the static output size (100 COCO, 300 LVIS).
      max_per_class: NMS output per class (default ``max_detections``, as the reference).
      pre_nms_top_k: per-class candidates before NMS (clamped to N).
      score_threshold: scores ``<= score_threshold`` are dropped.
      iou_threshold: per-class NMS threshold.
    """
    num_boxes, num_fg = scores.shape[-2], scores.shape[-1]
    max_per_class = max_per_class or max_detections
    top_k = min(pre_nms_top_k, num_boxes)
    if boxes.ndim == scores.ndim:  # class-agnostic: the same box for every class
        boxes = jnp.broadcast_to(boxes[..., None, :], scores.shape + (4,))
    # Class-major: [..., F, N] scores, [..., F, N, 4] boxes.
    class_scores = jnp.swapaxes(scores, -1, -2)
    class_boxes = jnp.swapaxes(boxes, -2, -3)
    cand_scores, cand_index = jax.lax.top_k(class_scores, top_k)  # [..., F, k]
    cand_boxes = jnp.take_along_axis(class_boxes, cand_index[..., None], axis=-2)
    nms = non_max_suppression_padded(
        cand_boxes, cand_scores, max_per_class, iou_threshold, score_threshold=score_threshold, tile_size=tile_size
    )  # [..., F, max_per_class]

    lead = scores.shape[:-2]
    pooled_scores = jnp.where(nms.valid, nms.scores, -jnp.inf).reshape(lead + (-1,))
    pooled_boxes = nms.boxes.reshape(lead + (-1, 4))
    pooled_classes = jnp.broadcast_to(jnp.arange(1, num_fg + 1, dtype=jnp.int32)[:, None], nms.valid.shape).reshape(
        lead + (-1,)
    )
    k = min(max_detections, pooled_scores.shape[-1])
    top_scores, top_index = jax.lax.top_k(pooled_scores, k)
    valid = jnp.isfinite(top_scores)
    out_boxes = jnp.take_along_axis(pooled_boxes, top_index[..., None], axis=-2)
    out_classes = jnp.take_along_axis(pooled_classes, top_index, axis=-1)
    pad = [(0, 0)] * len(lead) + [(0, max_detections - k)]
    detections = Detections(
        boxes=jnp.pad(jnp.where(valid[..., None], out_boxes, 0), pad + [(0, 0)]),
        scores=jnp.pad(jnp.where(valid, top_scores, 0), pad),
        classes=jnp.pad(jnp.where(valid, out_classes, 0), pad),
        valid=jnp.pad(valid, pad),
        num_detections=jnp.sum(valid, axis=-1, dtype=jnp.int32),
    )
    return detections


def detection_postprocess(
    class_logits: jnp.ndarray,
    box_deltas: jnp.ndarray,
    rois: jnp.ndarray,
    image_shape,
    *,
    weights: Optional[Sequence[float]] = FRCNN_WEIGHTS,
    score_activation: str = "softmax",
    **nms_kwargs,
) -> Detections:
    """From second-stage head outputs to final detections (docs/reference.md §2.7, v2).

    Args:
      class_logits: ``[..., N, C]`` logits, class 0 = background.
      box_deltas: ``[..., N, 4 * C]`` or ``[..., N, C, 4]`` class-specific deltas (the
        background slot is ignored), or ``[..., N, 4]`` class-agnostic deltas (cascade heads).
      rois: ``[..., N, 4]`` yxyx boxes the deltas are relative to.
      image_shape: static ``(h, w)`` or ``[..., 2]`` per image; boxes are clipped to it (the
        reference clips to the padded canvas size, docs/reference.md §2.6).
      weights: box-coder weights of the stage whose deltas these are ([30, 30, 15, 15] for the
        last cascade stage).
      score_activation: "softmax" over all classes (softmax-CE heads), or "sigmoid" per class
        (heads trained with sigmoid / federated losses; the background logit is unused).
      **nms_kwargs: forwarded to :func:`multiclass_nms`.
    """
    num_classes = class_logits.shape[-1]
    if score_activation == "softmax":
        scores = jax.nn.softmax(class_logits.astype(jnp.float32), axis=-1)[..., 1:]
    elif score_activation == "sigmoid":
        scores = jax.nn.sigmoid(class_logits[..., 1:].astype(jnp.float32))
    else:
        raise ValueError(f"score_activation={score_activation!r}: 'softmax' or 'sigmoid'")
    deltas = box_deltas.astype(jnp.float32)
    if deltas.shape[-1] == 4 * num_classes and num_classes > 1:
        deltas = deltas.reshape(deltas.shape[:-1] + (num_classes, 4))
    if deltas.ndim == class_logits.ndim + 1:  # class-specific: drop the background slot
        deltas = deltas[..., 1:, :]
        anchors = rois[..., None, :]
    else:
        anchors = rois
    boxes = clip_boxes(decode_boxes(deltas, anchors.astype(jnp.float32), weights), image_shape)
    return multiclass_nms(boxes, scores, **nms_kwargs)
