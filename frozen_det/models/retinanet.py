"""RetinaNet (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017) on any backbone:
backbone -> neck (FPN P3-P7 by default) -> class and box subnets shared across levels
(frozen_det.models.heads.retina) on A anchors per location.

One stage, no proposals and no sampling: every anchor is labelled (positive / negative /
ignored by IoU) inside the jitted step, the focal loss is summed over all non-ignored anchors
and the box loss over the positive ones, both divided by the number of positive anchors of the
batch (at least 1). Same calling convention as the two-stage detector
(frozen_det.models.detector): train mode returns `((losses, metrics), updates)` with
`losses["total"]`; inference returns fixed-size detections (boxes in canvas and original-image
pixels, scores, classes 1..num_classes-1, valid).

The backbone sits at `backbone/` and the neck at `neck/` with the two-stage detector's
parameter names, so backbones (and necks) transfer between the two by `train.init_from`.
"""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from frozen_det import losses as loss_lib
from frozen_det.models.backbones import build_backbone
from frozen_det.models.heads.retina import RetinaNetHead, assign_anchors
from frozen_det.models.layers import batch_norm, conv_module, dtype_of
from frozen_det.models.necks import build_neck
from frozen_det.ops import boxes as box_ops
from frozen_det.ops import matching
from frozen_det.ops.anchors import MultilevelAnchors, multilevel_anchors
from frozen_det.ops.postprocess import dense_postprocess


class RetinaNet(nn.Module):
    """`config` is a complete `config.model` (frozen_det.models.config.retinanet_defaults),
    frozen for hashing."""

    config: ml_collections.FrozenConfigDict

    def setup(self):
        c = self.config
        dtype = dtype_of(c.dtype)
        conv = conv_module(c.conv_impl)
        self.backbone = build_backbone(c.backbone)
        self.neck = build_neck(c.neck, dtype=dtype, conv=conv)
        self.head = RetinaNetHead(
            num_classes=c.num_classes - 1,
            num_anchors=c.anchors.num_scales * len(c.anchors.aspect_ratios),
            num_convs=c.head.num_convs,
            num_filters=c.head.num_filters,
            use_batch_norm=c.head.use_batch_norm,
            activation=c.activation,
            prior_probability=c.head.prior_probability,
            dtype=dtype,
            conv=conv,
            norm=batch_norm(c.bn.momentum, c.bn.epsilon),
        )

    def anchors(self, image_shape) -> MultilevelAnchors:
        a, n = self.config.anchors, self.config.neck
        return multilevel_anchors(
            tuple(image_shape), n.min_level, n.max_level, a.num_scales, tuple(a.aspect_ratios), a.anchor_size
        )

    def outputs(self, images, train: bool, backbone_features=None):
        """(anchors, {level: [B, N_l, K] class logits}, {level: [B, N_l, 4] box deltas}).
        `backbone_features` given: the backbone is skipped (what the rest costs alone,
        frozen_det.resources)."""
        if backbone_features is None:
            backbone_features = self.backbone(images, train=train)
        logits, deltas = self.head(self.neck(backbone_features, train=train), train)
        return self.anchors(images.shape[1:3]), logits, deltas

    # ------------------------------------------------------------------ training

    def training_losses(self, batch: Mapping[str, Any], backbone_features=None):
        c = self.config
        anchors, logits, deltas = self.outputs(batch["image"], True, backbone_features)
        m = c.matching
        targets = assign_anchors(
            jnp.asarray(anchors.boxes),
            batch["boxes"].astype(jnp.float32),
            batch["classes"].astype(jnp.int32),
            batch["valid"].astype(bool),
            positive_from=m.positive_from,
            negative_below=m.negative_below,
            force_match_gt=m.force_match_gt,
        )
        levels = anchors.levels
        logits = jnp.concatenate([logits[l] for l in levels], axis=1)  # [B, N, K], anchors in level order
        deltas = jnp.concatenate([deltas[l] for l in levels], axis=1)
        positive = targets.labels == matching.POSITIVE
        num_positive = jnp.sum(positive)
        normalizer = jnp.maximum(num_positive, 1).astype(jnp.float32)
        class_targets = jax.nn.one_hot(targets.classes - 1, logits.shape[-1]) * positive[..., None]
        loss = c.loss
        losses = {
            "focal": loss_lib.focal_class_loss(
                logits,
                class_targets,
                targets.labels != matching.IGNORE,
                normalizer,
                alpha=loss.focal_alpha,
                gamma=loss.focal_gamma,
            ),
            "box": loss.box_loss_weight
            * loss_lib.dense_box_loss(deltas, targets.box_targets, positive, normalizer, loss.huber_delta),
        }
        losses["total"] = losses["focal"] + losses["box"]
        batch_size = logits.shape[0]
        metrics = {
            "positive_anchors": num_positive / batch_size,
            "ignored_anchors": jnp.sum(targets.labels == matching.IGNORE) / batch_size,
        }
        return losses, metrics

    # ------------------------------------------------------------------ inference

    def detect(self, batch: Mapping[str, Any]):
        images = batch["image"]
        anchors, logits, deltas = self.outputs(images, False)
        d = self.config.detections
        levels = anchors.levels
        dets = dense_postprocess(
            [logits[l] for l in levels],
            [deltas[l] for l in levels],
            [anchors.per_level[l].reshape(-1, 4) for l in levels],
            images.shape[1:3],
            pre_nms_top_k=d.pre_nms_top_k,
            score_threshold=d.score_threshold,
            iou_threshold=d.iou_threshold,
            max_detections=d.max_detections,
        )
        out = {
            "boxes": dets.boxes,
            "scores": dets.scores,
            "classes": dets.classes,
            "valid": dets.valid,
            "num_detections": dets.num_detections,
        }
        if "image_info" in batch:
            out["original_boxes"] = box_ops.to_original_boxes(dets.boxes, batch["image_info"])
        return out

    def __call__(self, batch: Mapping[str, Any], train: bool = False, backbone_features=None):
        return self.training_losses(batch, backbone_features) if train else self.detect(batch)
