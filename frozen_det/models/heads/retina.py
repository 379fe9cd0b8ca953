"""RetinaNet's head (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017, sec. 4.1) and
its anchor targets.

Two subnets shared across the pyramid levels, each `num_convs` 3x3 convolutions (with a
per-level BatchNorm, as TF Model Garden's RetinaNetHead, tensorflow/models
official/vision/modeling/heads/dense_prediction_heads.py, or none as the paper) and the
activation, then a 3x3 output convolution: K * A class logits (sigmoid per class, no background
logit) and 4 * A box deltas. Initialisers (sec. 4.1): every convolution N(0, 0.01) with bias 0
(no bias before a BatchNorm), except the class output's bias -log((1 - pi) / pi), so that every
anchor starts at probability pi = 0.01 for every class and the many easy negatives do not swamp
the first steps.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, NamedTuple, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from frozen_det.models.backbones.common import activation_fn
from frozen_det.models.layers import DEFAULT_NORM, ModuleDef
from frozen_det.ops import boxes as box_ops
from frozen_det.ops import matching


def prior_bias(probability: float) -> float:
    """The logit bias that makes a sigmoid output `probability` at initialisation (Lin et al.
    2017 sec. 3.3, "Initialization")."""
    return -math.log((1 - probability) / probability)


class RetinaNetHead(nn.Module):
    """`__call__(features, train)` on {level: [B, H, W, C]} returns ({level: [B, H*W*A, K]} class
    logits, {level: [B, H*W*A, 4]} box deltas), anchors in the order of
    frozen_det.ops.anchors (row-major [H, W, A])."""

    num_classes: int  # K foreground classes
    num_anchors: int  # A per location
    num_convs: int = 4
    num_filters: int = 256
    use_batch_norm: bool = True
    activation: str = "relu"
    prior_probability: float = 0.01
    dtype: Any = jnp.float32
    conv: ModuleDef = nn.Conv  # frozen_det.models.layers: chosen once by config.model.conv_impl
    norm: ModuleDef = DEFAULT_NORM

    def _conv(self, features: int, name: str, bias_init=nn.initializers.zeros, use_bias: bool = True):
        return self.conv(
            features,
            (3, 3),
            padding="SAME",
            use_bias=use_bias,
            dtype=self.dtype,
            kernel_init=nn.initializers.normal(0.01),
            bias_init=bias_init,
            name=name,
        )

    @nn.compact
    def __call__(self, features: Mapping[int, jax.Array], train: bool):
        act = activation_fn(self.activation)
        subnets = {
            name: [
                self._conv(self.num_filters, f"{name}_conv{i}", use_bias=not self.use_batch_norm)
                for i in range(self.num_convs)
            ]
            for name in ("class", "box")
        }
        outputs = {
            "class": self._conv(
                self.num_anchors * self.num_classes,
                "class_logits",
                bias_init=nn.initializers.constant(prior_bias(self.prior_probability)),
            ),
            "box": self._conv(4 * self.num_anchors, "box_deltas"),
        }
        results = {"class": {}, "box": {}}
        for level in sorted(features):
            for name, convs in subnets.items():
                x = features[level]
                for i, conv in enumerate(convs):
                    x = conv(x)
                    if self.use_batch_norm:  # statistics per level: the levels' maps differ
                        x = self.norm(use_running_average=not train, dtype=self.dtype, name=f"{name}_bn{i}_l{level}")(x)
                    x = act(x)
                y = outputs[name](x).astype(jnp.float32)
                results[name][level] = y.reshape(y.shape[0], -1, y.shape[-1] // self.num_anchors)
        return results["class"], results["box"]


class AnchorTargets(NamedTuple):
    labels: jax.Array  # [B, N] matching.POSITIVE / NEGATIVE / IGNORE
    matched_gt: jax.Array  # [B, N] index of the matched ground truth, -1 unless positive
    classes: jax.Array  # [B, N] class (1..C-1) of the matched ground truth, 0 unless positive
    box_targets: jax.Array  # [B, N, 4] the matched box encoded on its anchor, 0 unless positive


def assign_anchors(
    anchors: jax.Array,
    gt_boxes: jax.Array,
    gt_classes: jax.Array,
    gt_valid: jax.Array,
    *,
    positive_from: float = 0.5,
    negative_below: float = 0.4,
    force_match_gt: bool = True,
    box_weights: Optional[Sequence[float]] = None,
) -> AnchorTargets:
    """Anchor labels of RetinaNet (Lin et al. 2017 sec. 4): IoU >= `positive_from` positive,
    < `negative_below` negative, in between ignored; with `force_match_gt`, each valid ground
    truth's best anchor is positive for it whatever the IoU (TF Model Garden's
    `force_match_for_each_row`: one anchor per ground truth, the first among equal IoUs, the
    lower ground-truth index when two pick the same anchor; frozen_det.ops.matching).
    anchors [N, 4]; gt_boxes [B, M, 4], gt_classes / gt_valid [B, M]."""
    iou = box_ops.pairwise_iou(anchors, gt_boxes, None, gt_valid)  # [B, N, M]; padding -1
    match = matching.match_by_iou(iou, negative_below, positive_from, force_match_gt=force_match_gt, gt_valid=gt_valid)
    positive = match.labels == matching.POSITIVE
    matched_boxes = matching.gather_matched(gt_boxes, match.matched_gt)
    targets = jnp.where(positive[..., None], box_ops.encode_boxes(matched_boxes, anchors, box_weights), 0.0)
    return AnchorTargets(match.labels, match.matched_gt, matching.gather_matched(gt_classes, match.matched_gt), targets)
