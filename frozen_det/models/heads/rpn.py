"""Region proposal network: the head (docs/reference.md §2.5) and proposal generation (2.6)."""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from frozen_det.models.backbones.common import activation_fn
from frozen_det.models.layers import DEFAULT_NORM, ModuleDef
from frozen_det.ops import boxes as box_ops
from frozen_det.ops.nms import non_max_suppression_padded


class RPNHead(nn.Module):
    """`num_convs` 3x3 convs shared across levels, each followed by a per-level BN and the
    activation, then 1x1 objectness (A logits) and box (4A deltas) convs shared across levels.

    Initialisers (docs/reference.md §2.5): shared convs N(0, 0.01); outputs N(0, 1e-5); biases 0.
    Returns ({level: [B, H, W, A]}, {level: [B, H, W, 4A]}); with `taps=True` the shared convs'
    output {level: [B, H, W, num_filters]} instead, the objectness and box convs neither created
    nor run (heads that score anchors their own way on the same features, e.g. PreDet's CRPN).
    """

    num_anchors: int
    num_convs: int = 1
    num_filters: int = 256
    use_batch_norm: bool = True
    activation: str = "swish"
    dtype: Any = jnp.float32
    conv: ModuleDef = nn.Conv  # frozen_det.models.layers: chosen once by config.model.conv_impl
    norm: ModuleDef = DEFAULT_NORM

    @nn.compact
    def __call__(self, features: Mapping[int, jax.Array], train: bool, taps: bool = False):
        act = activation_fn(self.activation)
        conv_cls = self.conv
        convs = [
            conv_cls(
                self.num_filters,
                (3, 3),
                padding="SAME",
                dtype=self.dtype,
                kernel_init=nn.initializers.normal(0.01),
                name=f"conv{i}",
            )
            for i in range(self.num_convs)
        ]
        scores_conv = conv_cls(
            self.num_anchors, (1, 1), dtype=self.dtype, kernel_init=nn.initializers.normal(1e-5), name="scores"
        )
        boxes_conv = conv_cls(
            4 * self.num_anchors, (1, 1), dtype=self.dtype, kernel_init=nn.initializers.normal(1e-5), name="boxes"
        )
        scores, deltas, tapped = {}, {}, {}
        for level in sorted(features):
            x = features[level]
            for i, conv in enumerate(convs):
                x = conv(x)
                if self.use_batch_norm:
                    x = self.norm(use_running_average=not train, dtype=self.dtype, name=f"bn{i}_l{level}")(x)
                x = act(x)
            if taps:
                tapped[level] = x
                continue
            scores[level] = scores_conv(x).astype(jnp.float32)
            deltas[level] = boxes_conv(x).astype(jnp.float32)
        return tapped if taps else (scores, deltas)


def generate_proposals(
    scores: Mapping[int, jax.Array],
    deltas: Mapping[int, jax.Array],
    anchors: Mapping[int, Any],
    image_shape: tuple[int, int],
    *,
    pre_nms_top_k: int,
    post_nms_top_k: int,
    num_proposals: int,
    nms_iou: float = 0.7,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Proposals as the reference's MultilevelROIGenerator (docs/reference.md §2.6).

    Per level: sigmoid, decode with unit weights, clip to the (padded) canvas, top-k
    `pre_nms_top_k`, NMS at `nms_iou` keeping `post_nms_top_k`; then the global top
    `num_proposals` over all levels. `anchors[level]` is [H, W, A, 4].

    Returns (boxes [B, K, 4], scores [B, K] (probabilities), valid [B, K]); padding entries
    have zero boxes and scores and are invalid.
    """
    all_boxes, all_scores, all_valid = [], [], []
    for level in sorted(scores):
        batch = scores[level].shape[0]
        level_scores = jax.nn.sigmoid(scores[level].reshape(batch, -1))
        level_deltas = deltas[level].reshape(batch, -1, 4)
        level_anchors = jnp.asarray(anchors[level]).reshape(-1, 4)
        k = min(pre_nms_top_k, level_scores.shape[1])
        top_scores, top_index = jax.lax.top_k(level_scores, k)
        top_deltas = jnp.take_along_axis(level_deltas, top_index[..., None], axis=1)
        top_boxes = box_ops.clip_boxes(box_ops.decode_boxes(top_deltas, level_anchors[top_index]), image_shape)
        keep = min(post_nms_top_k, k)
        nms = non_max_suppression_padded(top_boxes, top_scores, keep, nms_iou)
        all_boxes.append(nms.boxes)
        all_scores.append(jnp.where(nms.valid, nms.scores, -1.0))
        all_valid.append(nms.valid)
    boxes = jnp.concatenate(all_boxes, axis=1)
    ranked = jnp.concatenate(all_scores, axis=1)
    valid = jnp.concatenate(all_valid, axis=1)
    k = min(num_proposals, ranked.shape[1])
    top_scores, top_index = jax.lax.top_k(ranked, k)
    boxes = jnp.take_along_axis(boxes, top_index[..., None], axis=1)
    valid = jnp.take_along_axis(valid, top_index, axis=1)
    pad = num_proposals - k
    if pad:
        boxes = jnp.pad(boxes, ((0, 0), (0, pad), (0, 0)))
        top_scores = jnp.pad(top_scores, ((0, 0), (0, pad)), constant_values=-1.0)
        valid = jnp.pad(valid, ((0, 0), (0, pad)))
    return (jnp.where(valid[..., None], boxes, 0.0), jnp.where(valid, top_scores, 0.0), valid)
