"""Static-shape greedy non-maximum suppression.

Returns exactly ``max_output`` boxes plus a validity mask, for any number of input boxes,
under ``jax.jit`` and ``jax.vmap``. The result is the same set, in the same (descending score)
order, as ``tf.image.non_max_suppression`` / ``torchvision.ops.nms`` truncated to
``max_output``: a box is suppressed by a higher-scoring kept box when their IoU is strictly
greater than ``iou_threshold``. Zero-area boxes have IoU 0 with everything, so they are kept
and never suppress (as in TF's kernel).

Algorithm (tiled, like the reference's ``sorted_non_max_suppression_padded``, docs/reference.md §2.7):
boxes are sorted by score and processed in tiles of ``tile_size``. Each tile is

1. suppressed by the boxes already kept, held in a compact ``[max_output]`` buffer, so this
   costs ``tile_size x max_output`` IoUs rather than a comparison with every earlier box;
2. suppressed within itself by iterating ``keep_k = alive_k and no kept j < k overlaps k`` to
   its fixed point. The fixed point is unique and equals the greedy result (box k depends only
   on boxes before it), and the test uses ``iou_threshold`` itself -- public tiled ports
   hard-code 0.5 there, which is wrong for other thresholds.

The loop stops once ``max_output`` boxes are kept. Padding in the outputs is index 0, box 0,
score 0, ``valid`` False, as TF's padded NMS.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from frozen_det.ops.boxes import pairwise_iou


class NMSResult(NamedTuple):
    indices: jnp.ndarray  # [..., K] int32 into the input boxes (0 where not valid)
    valid: jnp.ndarray  # [..., K] bool
    boxes: jnp.ndarray  # [..., K, 4] selected boxes (0 where not valid)
    scores: jnp.ndarray  # [..., K] selected scores (0 where not valid)


def _overlapping(boxes_a, boxes_b, classes_a, classes_b, iou_threshold):
    over = pairwise_iou(boxes_a, boxes_b) > iou_threshold
    if classes_a is not None:
        over = over & (classes_a[:, None] == classes_b[None, :])
    return over


def _nms_one_image(boxes, scores, valid, classes, max_output, iou_threshold, tile_size):
    """Indices (into ``boxes``) of the first ``max_output`` greedy-NMS survivors, and a mask."""
    n = boxes.shape[0]
    tile = max(1, min(tile_size, n))
    num_tiles = math.ceil(n / tile)
    padded = num_tiles * tile

    order = jnp.argsort(-jnp.where(valid, scores.astype(jnp.float32), -jnp.inf), stable=True)
    pad = lambda x: jnp.pad(x[order], [(0, padded - n)] + [(0, 0)] * (x.ndim - 1))
    sorted_boxes = pad(boxes.astype(jnp.float32))  # IoUs in float32 even for bfloat16 inputs
    sorted_valid = pad(valid)
    sorted_classes = None if classes is None else pad(classes)
    before = jnp.arange(tile)[:, None] < jnp.arange(tile)[None, :]  # j < k

    def tile_slice(x, t):
        return jax.lax.dynamic_slice_in_dim(x, t * tile, tile)

    def process_tile(state):
        t, count, kept_pos, kept_boxes, kept_classes = state
        tile_boxes = tile_slice(sorted_boxes, t)
        tile_classes = None if classes is None else tile_slice(sorted_classes, t)
        # 1. suppression by boxes kept in earlier tiles (empty buffer slots are masked off).
        slot_used = jnp.arange(max_output) < count
        cross = _overlapping(tile_boxes, kept_boxes, tile_classes, kept_classes, iou_threshold)
        alive = tile_slice(sorted_valid, t) & ~jnp.any(cross & slot_used[None, :], axis=1)
        # 2. self-suppression to the fixed point.
        self_over = _overlapping(tile_boxes, tile_boxes, tile_classes, tile_classes, iou_threshold) & before

        def step(carry):
            keep, _ = carry
            new_keep = alive & ~jnp.any(self_over & keep[:, None], axis=0)
            return new_keep, jnp.any(new_keep != keep)

        keep, _ = jax.lax.while_loop(lambda c: c[1], step, (alive, jnp.array(True)))
        # 3. append survivors to the buffer in order; slots >= max_output are dropped.
        slot = jnp.where(keep, count + jnp.cumsum(keep) - 1, max_output)
        kept_pos = kept_pos.at[slot].set(t * tile + jnp.arange(tile), mode="drop")
        kept_boxes = kept_boxes.at[slot].set(tile_boxes, mode="drop")
        if classes is not None:
            kept_classes = kept_classes.at[slot].set(tile_classes, mode="drop")
        count = count + jnp.sum(keep, dtype=jnp.int32)
        return t + 1, count, kept_pos, kept_boxes, kept_classes

    init = (
        jnp.array(0, jnp.int32),
        jnp.array(0, jnp.int32),
        jnp.zeros([max_output], jnp.int32),
        jnp.zeros([max_output, 4], jnp.float32),
        None if classes is None else jnp.zeros([max_output], classes.dtype),
    )
    _, count, kept_pos, _, _ = jax.lax.while_loop(
        lambda s: (s[0] < num_tiles) & (s[1] < max_output), process_tile, init
    )
    out_valid = jnp.arange(max_output) < count
    indices = jnp.where(out_valid, order[jnp.minimum(kept_pos, n - 1)], 0).astype(jnp.int32)
    return indices, out_valid


def _flatten_batch(x, core_ndim):
    lead = x.shape[: x.ndim - core_ndim]
    return x.reshape((-1,) + x.shape[x.ndim - core_ndim :]), lead


def non_max_suppression_padded(
    boxes: jnp.ndarray,
    scores: jnp.ndarray,
    max_output: int,
    iou_threshold: float = 0.5,
    *,
    valid: Optional[jnp.ndarray] = None,
    classes: Optional[jnp.ndarray] = None,
    score_threshold: Optional[float] = None,
    tile_size: int = 256,
) -> NMSResult:
    """Greedy NMS with a fixed output size.

    Args:
      boxes: ``[..., N, 4]`` yxyx boxes; leading dims are batch dims (each image separately).
      scores: ``[..., N]``.
      max_output: static number of outputs K (may exceed N; the rest is padding).
      iou_threshold: suppress when IoU > this (scalar, may be traced).
      valid: optional ``[..., N]`` bool; invalid boxes are never selected and never suppress.
      classes: optional ``[..., N]`` int; if given, boxes suppress only boxes of the same
        class (class-aware NMS, ``torchvision.ops.batched_nms``); otherwise class-agnostic.
      score_threshold: optional; boxes with ``score <= score_threshold`` are dropped (TF).
      tile_size: boxes processed per step; larger = fewer sequential steps, more wasted work.

    Returns:
      :class:`NMSResult` with K entries per image in descending score order.
    """
    if valid is None:
        valid = jnp.ones(scores.shape, bool)
    if score_threshold is not None:
        valid = valid & (scores > score_threshold)
    flat_boxes, lead = _flatten_batch(boxes, 2)
    flat_scores, _ = _flatten_batch(scores, 1)
    flat_valid, _ = _flatten_batch(valid, 1)
    one_image = lambda b, s, v, c: _nms_one_image(b, s, v, c, max_output, iou_threshold, tile_size)
    flat_classes = None if classes is None else _flatten_batch(classes, 1)[0]
    if not lead:  # a single image: no vmap, so the while loops keep their early exit
        indices, out_valid = one_image(boxes, scores, valid, classes)
    elif classes is None:
        indices, out_valid = jax.vmap(lambda b, s, v: one_image(b, s, v, None))(flat_boxes, flat_scores, flat_valid)
    else:
        indices, out_valid = jax.vmap(one_image)(flat_boxes, flat_scores, flat_valid, flat_classes)
    indices = indices.reshape(lead + (max_output,))
    out_valid = out_valid.reshape(lead + (max_output,))
    out_boxes = jnp.take_along_axis(boxes, indices[..., None], axis=-2)
    out_scores = jnp.take_along_axis(scores, indices, axis=-1)
    return NMSResult(
        indices,
        out_valid,
        jnp.where(out_valid[..., None], out_boxes, 0),
        jnp.where(out_valid, out_scores, 0),
    )


def nms_indices(boxes, scores, iou_threshold: float) -> np.ndarray:
    """Host-side greedy NMS of a variable number of boxes: the indices (numpy, descending score)
    of ``boxes`` [N, 4] that survive, the same set as ``torchvision.ops.nms``; an IoU threshold
    >= 1 keeps everything. The boxes are padded to a power of two so that a handful of compiled
    shapes serve every call (pseudo-box merging, region proposals)."""
    boxes, scores = np.asarray(boxes, np.float32), np.asarray(scores, np.float32)
    if len(boxes) == 0 or iou_threshold >= 1.0:
        return np.argsort(-scores, kind="stable")
    size = max(16, 1 << (len(boxes) - 1).bit_length())
    padded = np.zeros((size, 4), np.float32)
    padded[: len(boxes)] = boxes
    padded_scores = np.zeros((size,), np.float32)
    padded_scores[: len(boxes)] = scores
    indices, kept = _padded_nms(padded, padded_scores, np.arange(size) < len(boxes), np.float32(iou_threshold))
    return np.asarray(indices)[np.asarray(kept)]


@jax.jit
def _padded_nms(boxes, scores, valid, iou_threshold):
    result = non_max_suppression_padded(boxes, scores, boxes.shape[0], iou_threshold, valid=valid)
    return result.indices, result.valid
