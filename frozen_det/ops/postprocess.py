"""Detector post-processing: NMS to a fixed number of detections.

Reproduces the reference's ``DetectionGenerator`` with ``nms_version='v2'`` (docs/reference.md §2.7):

1. softmax over class logits, drop background (class 0);
2. decode the box deltas on the ROIs with the stage's weights, clip to the canvas;
3. per foreground class: top-k (``pre_nms_top_k``) ROIs by score, scores <= 0.05 dropped,
   greedy NMS at IoU 0.5 keeping up to ``max_per_class``;
4. all classes pooled, global top ``max_detections`` (100).

:func:`detection_postprocess` does all four from raw head outputs;
:func:`multiclass_nms` does 3-4 for boxes already decoded (e.g. cascade outputs).
:func:`dense_postprocess` is the one-stage (RetinaNet) counterpart on per-level anchor outputs.
Output classes are 1..C-1 (0 marks padding).
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

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


def dense_postprocess(
    class_logits: Sequence[jnp.ndarray],
    box_deltas: Sequence[jnp.ndarray],
    anchors: Sequence[np.ndarray],
    image_shape,
    *,
    weights: Optional[Sequence[float]] = None,
    pre_nms_top_k: int = 1000,
    score_threshold: float = 0.05,
    iou_threshold: float = 0.5,
    max_detections: int = 100,
    tile_size: int = 256,
) -> Detections:
    """One-stage detections from per-level anchor outputs, as torchvision's
    `RetinaNet.postprocess_detections` (pytorch/vision torchvision/models/detection/retinanet.py)
    with static shapes:

    1. per level: sigmoid scores of every (anchor, class) pair, the `pre_nms_top_k` best of
       them, scores <= `score_threshold` dropped; their anchors' deltas decoded and clipped;
    2. all levels pooled, class-aware NMS at `iou_threshold` (a box suppresses only boxes of its
       own class, `torchvision.ops.batched_nms`), the best `max_detections`.

    Args:
      class_logits: per level ``[..., N_l, K]`` logits of the K foreground classes.
      box_deltas: per level ``[..., N_l, 4]`` deltas relative to the level's anchors.
      anchors: per level ``[N_l, 4]`` yxyx anchors (static, shared by the batch).
      image_shape: static ``(h, w)`` or ``[..., 2]``: boxes are clipped to it.
      weights: the box coder's weights (None: unit weights, RetinaNet's).
    """
    boxes, scores, classes = [], [], []
    for logits, deltas, level_anchors in zip(class_logits, box_deltas, anchors):
        num_anchors, num_fg = logits.shape[-2], logits.shape[-1]
        level_scores = jax.nn.sigmoid(logits.astype(jnp.float32)).reshape(logits.shape[:-2] + (-1,))
        top_scores, top_index = jax.lax.top_k(level_scores, min(pre_nms_top_k, num_anchors * num_fg))
        anchor_index = top_index // num_fg
        top_deltas = jnp.take_along_axis(deltas.astype(jnp.float32), anchor_index[..., None], axis=-2)
        decoded = decode_boxes(top_deltas, jnp.asarray(level_anchors)[anchor_index], weights)
        boxes.append(clip_boxes(decoded, image_shape))
        scores.append(top_scores)
        classes.append((top_index % num_fg + 1).astype(jnp.int32))
    boxes, scores, classes = jnp.concatenate(boxes, -2), jnp.concatenate(scores, -1), jnp.concatenate(classes, -1)
    nms = non_max_suppression_padded(
        boxes,
        scores,
        max_detections,
        iou_threshold,
        classes=classes,
        score_threshold=score_threshold,
        tile_size=tile_size,
    )
    out_classes = jnp.where(nms.valid, jnp.take_along_axis(classes, nms.indices, axis=-1), 0)
    return Detections(
        boxes=nms.boxes,
        scores=nms.scores,
        classes=out_classes,
        valid=nms.valid,
        num_detections=jnp.sum(nms.valid, axis=-1, dtype=jnp.int32),
    )
