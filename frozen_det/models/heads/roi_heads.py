"""Second stage: ROI sampling and labelling (docs/reference.md §2.8) and the box head (2.10).

Cascade R-CNN reuses both: stage k > 1 relabels the previous stage's refined boxes with a
higher IoU threshold and no subsampling (`assign_rois`), and runs its own `BoxHead`.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from frozen_det.models.backbones.common import activation_fn
from frozen_det.models.layers import DEFAULT_NORM, ModuleDef
from frozen_det.ops import boxes as box_ops
from frozen_det.ops import matching
from frozen_det.ops.sampling import batched_sample_balanced


class RoiTargets(NamedTuple):
    rois: jax.Array  # [B, S, 4] yxyx canvas pixels
    classes: jax.Array  # [B, S] int32, 0 = background
    box_targets: jax.Array  # [B, S, 4] encoded with the stage's weights, 0 for background
    matched_gt: jax.Array  # [B, S] int32 index into the ground truth, -1 for background
    foreground: jax.Array  # [B, S] bool


def _label(rois, roi_valid, gt_boxes, gt_classes, gt_valid, *, fg_iou, bg_iou_high, bg_iou_low, strict_fg, box_weights):
    iou = box_ops.pairwise_iou(rois, gt_boxes, roi_valid, gt_valid)
    match = matching.roi_match(iou, fg_iou, bg_iou_high, bg_iou_low, strict_fg)
    foreground = match.labels == matching.POSITIVE
    classes = jnp.where(foreground, matching.gather_matched(gt_classes, match.matched_gt), 0)
    matched_boxes = matching.gather_matched(gt_boxes, match.matched_gt)
    targets = box_ops.encode_boxes(matched_boxes, rois, box_weights)
    targets = jnp.where(foreground[..., None], targets, 0.0)
    return match, RoiTargets(rois, classes.astype(jnp.int32), targets, match.matched_gt, foreground)


def sample_rois(
    key,
    proposals,
    proposal_valid,
    gt_boxes,
    gt_classes,
    gt_valid,
    *,
    num_samples: int = 512,
    fg_fraction: float = 0.25,
    fg_iou: float = 0.5,
    bg_iou_high: float = 0.5,
    bg_iou_low: float = 0.0,
    strict_fg: bool = False,
    mix_gt_boxes: bool = True,
    box_weights: Sequence[float] = box_ops.FRCNN_WEIGHTS,
) -> RoiTargets:
    """Samples `num_samples` ROIs per image from the proposals (plus the ground truth when
    `mix_gt_boxes`), at most `fg_fraction` foreground, topped up with non-candidates labelled
    background when there are too few; sampled ROIs keep ascending candidate order (docs/reference.md §2.8).
    """
    proposals = jax.lax.stop_gradient(proposals)
    if mix_gt_boxes:
        proposals = jnp.concatenate([proposals, gt_boxes.astype(proposals.dtype)], axis=1)
        proposal_valid = jnp.concatenate([proposal_valid, gt_valid], axis=1)
    match, labelled = _label(
        proposals,
        proposal_valid,
        gt_boxes,
        gt_classes,
        gt_valid,
        fg_iou=fg_iou,
        bg_iou_high=bg_iou_high,
        bg_iou_low=bg_iou_low,
        strict_fg=strict_fg,
        box_weights=box_weights,
    )
    sample = batched_sample_balanced(
        key,
        labelled.foreground,
        match.labels == matching.NEGATIVE,
        num_samples,
        fg_fraction,
        fill_with_non_candidates=True,
    )
    take = lambda x: jnp.take_along_axis(x, sample.indices.reshape(sample.indices.shape + (1,) * (x.ndim - 2)), axis=1)
    return RoiTargets(*(take(x) for x in labelled))


def assign_rois(
    rois, gt_boxes, gt_classes, gt_valid, *, iou_threshold: float, box_weights: Sequence[float]
) -> RoiTargets:
    """Cascade stages 2 and 3: relabel every ROI, foreground at IoU >= t, background below
    (docs/reference.md §2.8: mix_gt_boxes False, fg = bg_high = t, bg_low 0, no subsampling)."""
    rois = jax.lax.stop_gradient(rois)
    valid = jnp.ones(rois.shape[:2], bool)
    _, labelled = _label(
        rois,
        valid,
        gt_boxes,
        gt_classes,
        gt_valid,
        fg_iou=iou_threshold,
        bg_iou_high=iou_threshold,
        bg_iou_low=0.0,
        strict_fg=False,
        box_weights=box_weights,
    )
    return labelled


class BoxHead(nn.Module):
    """`num_convs` x [3x3 conv -> BN -> act], flatten, `num_fcs` x [dense -> BN -> act], then
    class logits and box deltas (docs/reference.md §2.10). Initialisers: convs VarianceScaling(2,
    fan_out, normal); FCs VarianceScaling(1/3, fan_out, uniform); classifier N(0, 0.01); box
    N(0, 0.001); biases 0.

    Input [B, N, S, S, C] ROI features; output logits [B, N, num_classes] (class 0 =
    background) and deltas [B, N, 4 * num_classes] (or [B, N, 4] when class-agnostic).
    """

    num_classes: int
    class_agnostic: bool = False
    num_convs: int = 4
    num_filters: int = 256
    num_fcs: int = 2
    fc_dims: int = 1024
    use_batch_norm: bool = True
    activation: str = "swish"
    # Initial class-logit bias: 0 for softmax CE; -log((1 - p) / p) with p = 0.01 for sigmoid
    # losses, so that hundreds of classes do not start at a loss of C * log 2 per ROI.
    class_bias_init: float = 0.0
    dtype: Any = jnp.float32
    conv: ModuleDef = nn.Conv  # frozen_det.models.layers: chosen once by config.model.conv_impl
    norm: ModuleDef = DEFAULT_NORM

    @nn.compact
    def __call__(self, roi_features: jax.Array, train: bool, taps: bool = False):
        """`taps=True`: the intermediate features instead of the outputs, {"conv_proj": the RoI
        feature map the first FC reads [B, N, S, S, C'], "fc1": [B, N, fc_dims], "fc2": ...}
        (Li et al.'s detection-head taps; no class / box layers are created or run)."""
        act = activation_fn(self.activation)
        batch, num = roi_features.shape[:2]
        x = roi_features.reshape((batch * num,) + roi_features.shape[2:]).astype(self.dtype)

        def norm(name):
            return self.norm(use_running_average=not train, dtype=self.dtype, name=name)

        conv_cls = self.conv
        for i in range(self.num_convs):
            x = conv_cls(
                self.num_filters,
                (3, 3),
                padding="SAME",
                dtype=self.dtype,
                kernel_init=nn.initializers.variance_scaling(2.0, "fan_out", "normal"),
                name=f"conv{i}",
            )(x)
            x = act(norm(f"conv{i}_bn")(x) if self.use_batch_norm else x)
        tapped = {"conv_proj": x.reshape((batch, num) + x.shape[1:])}
        x = x.reshape(batch * num, -1)
        for i in range(self.num_fcs):
            x = nn.Dense(
                self.fc_dims,
                dtype=self.dtype,
                kernel_init=nn.initializers.variance_scaling(1 / 3, "fan_out", "uniform"),
                name=f"fc{i}",
            )(x)
            x = act(norm(f"fc{i}_bn")(x) if self.use_batch_norm else x)
            tapped[f"fc{i + 1}"] = x.reshape(batch, num, -1)
        if taps:
            return tapped
        logits = nn.Dense(
            self.num_classes,
            dtype=self.dtype,
            kernel_init=nn.initializers.normal(0.01),
            bias_init=nn.initializers.constant(self.class_bias_init),
            name="class_logits",
        )(x)
        box_outputs = 4 if self.class_agnostic else 4 * self.num_classes
        deltas = nn.Dense(box_outputs, dtype=self.dtype, kernel_init=nn.initializers.normal(0.001), name="box_deltas")(
            x
        )
        return (logits.reshape(batch, num, -1).astype(jnp.float32), deltas.reshape(batch, num, -1).astype(jnp.float32))


def select_class_deltas(deltas: jax.Array, classes: jax.Array) -> jax.Array:
    """[B, N, 4C] (or [B, N, 4] agnostic) -> the [B, N, 4] deltas of each ROI's class."""
    if deltas.shape[-1] == 4:
        return deltas
    per_class = deltas.reshape(deltas.shape[:-1] + (-1, 4))
    return jnp.take_along_axis(per_class, classes[..., None, None], axis=-2)[..., 0, :]
