"""Two-stage detectors: Faster R-CNN, Mask R-CNN and Cascade (Mask) R-CNN on any backbone.

backbone -> neck (FPN / NAS-FPN) -> RPN -> proposals -> ROI sampling -> box head(s)
[-> cascade stages] [-> mask head]. Everything has static shapes and runs inside one jit:
target assignment (RPN anchor labels, ROI sampling, mask targets) included (docs/architecture.md).

Train mode (`model.apply(variables, batch, train=True, rngs={"sampling": key},
mutable=["batch_stats"])`) returns `(losses, metrics)`: a dict of named loss terms whose sum
is the objective (`losses["total"]`), and a dict of scalar diagnostics. Inference mode returns
a dict of fixed-size detections: boxes (canvas and original-image pixels), scores, classes
(1..num_classes-1), valid mask and, with a mask head, per-detection mask probabilities.

The batch is the data pipeline's contract (frozen_det/data): image, boxes, classes, valid,
masks (optional, box-aligned crops), image_info.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from frozen_det import losses as loss_lib
from frozen_det.models.backbones import build_backbone
from frozen_det.models.heads.mask_head import MaskHead
from frozen_det.models.heads.retina import prior_bias
from frozen_det.models.heads.roi_heads import BoxHead, RoiTargets, assign_rois, sample_rois, select_class_deltas
from frozen_det.models.heads.rpn import RPNHead, generate_proposals
from frozen_det.models.layers import batch_norm, conv_module, dtype_of
from frozen_det.models.necks import build_neck
from frozen_det.ops import boxes as box_ops
from frozen_det.ops import matching
from frozen_det.ops.anchors import multilevel_anchors
from frozen_det.ops.masks import mask_targets_from_box_crops
from frozen_det.ops.postprocess import detection_postprocess
from frozen_det.ops.roi_align import multilevel_roi_align
from frozen_det.ops.sampling import batched_sample_balanced

SIGMOID_PRIOR_BIAS = prior_bias(0.01)  # a 1% prior per class (RetinaNet's)


class TwoStageDetector(nn.Module):
    """`config` is a complete `config.model` (frozen_det.models.config.two_stage_defaults),
    frozen for hashing.

    `class_instance_counts` / `class_image_counts` ([C + 1] tuples, the training split's
    non-crowd instances / images per class) are needed only by the losses that use them
    (`box_head.class_weighting`, `box_head.class_loss="federated"`); inference never does.
    """

    config: ml_collections.FrozenConfigDict
    class_instance_counts: Optional[tuple] = None
    class_image_counts: Optional[tuple] = None

    def setup(self):
        c = self.config
        # Layer choices made once, here (frozen_det.models.layers).
        dtype = dtype_of(c.dtype)
        conv = conv_module(c.conv_impl)
        shared = dict(dtype=dtype, conv=conv, norm=batch_norm(c.bn.momentum, c.bn.epsilon))
        self.backbone = build_backbone(c.backbone)
        self.neck = build_neck(c.neck, dtype=dtype, conv=conv)
        self.rpn_head = RPNHead(
            num_anchors=self.num_anchors_per_location,
            num_convs=c.rpn.num_convs,
            num_filters=c.rpn.num_filters,
            use_batch_norm=c.rpn.use_batch_norm,
            activation=c.activation,
            **shared,
        )
        head_kwargs = dict(
            num_classes=c.num_classes,
            num_convs=c.box_head.num_convs,
            num_filters=c.box_head.num_filters,
            num_fcs=c.box_head.num_fcs,
            fc_dims=c.box_head.fc_dims,
            use_batch_norm=c.box_head.use_batch_norm,
            activation=c.activation,
            class_bias_init=0.0 if self.class_loss == "softmax" else SIGMOID_PRIOR_BIAS,
            **shared,
        )
        if self.cascade:
            # Cascade heads are class-agnostic (the reference's MaskRCNNModel requires it).
            self.box_heads = [BoxHead(class_agnostic=True, **head_kwargs) for i in range(len(self.stage_weights))]
        else:
            self.box_heads = [BoxHead(class_agnostic=c.box_head.class_agnostic, **head_kwargs)]
        if c.mask.enabled:
            self.mask_head = MaskHead(
                num_classes=c.num_classes,
                num_convs=c.mask.num_convs,
                num_filters=c.mask.num_filters,
                activation=c.activation,
                **shared,
            )

    # ------------------------------------------------------------------ static structure

    @property
    def cascade(self) -> bool:
        return bool(self.config.cascade.enabled)

    @property
    def stage_weights(self) -> tuple[tuple[float, ...], ...]:
        c = self.config
        if not self.cascade:
            return (tuple(c.box_head.weights),)
        return tuple(tuple(w) for w in c.cascade.weights)

    @property
    def num_anchors_per_location(self) -> int:
        a = self.config.anchors
        return a.num_scales * len(a.aspect_ratios)

    def anchors(self, image_shape):
        a, n = self.config.anchors, self.config.neck
        return multilevel_anchors(
            tuple(image_shape), n.min_level, n.max_level, a.num_scales, tuple(a.aspect_ratios), a.anchor_size
        )

    # ------------------------------------------------------------------ shared pieces

    def features(self, images, train: bool, backbone_features=None):
        """Neck outputs. `backbone_features` given: the backbone is skipped (used to measure
        what the heads alone cost, frozen_det.resources)."""
        if backbone_features is None:
            backbone_features = self.backbone(images, train=train)
        return self.neck(backbone_features, train=train)

    def box_features(self, features, boxes, train: bool):
        """The (first) box head's last FC output for yxyx boxes ``[B, N, 4]`` -> ``[B, N, fc_dims]``:
        the representation the box classifier reads (PreDet's embeddings, box-feature analyses)."""
        roi = self.roi_features(features, boxes, self.config.roi.crop_size)
        return self.box_heads[0](roi, train, taps=True)[f"fc{self.config.box_head.num_fcs}"]

    def roi_features(self, features, rois, output_size):
        n = self.config.neck
        return multilevel_roi_align(
            {l: features[l] for l in range(n.min_level, n.max_level + 1)},
            rois,
            output_size,
            sampling_ratio=self.config.roi.sampling_ratio,
            aligned=self.config.roi.aligned,
        )

    def proposal_limits(self, train: bool) -> dict:
        """`generate_proposals`' top-k / NMS settings of `config.rpn` for training or inference."""
        r = self.config.rpn
        return dict(
            pre_nms_top_k=r.pre_nms_top_k_train if train else r.pre_nms_top_k_test,
            post_nms_top_k=r.post_nms_top_k_train if train else r.post_nms_top_k_test,
            num_proposals=r.num_proposals_train if train else r.num_proposals_test,
            nms_iou=r.nms_iou,
        )

    def proposals(self, features, image_shape, train: bool):
        scores, deltas = self.rpn_head(features, train)
        anchors = self.anchors(image_shape)
        boxes, probs, valid = generate_proposals(
            scores, deltas, anchors.per_level, image_shape, **self.proposal_limits(train)
        )
        return scores, deltas, anchors, boxes, probs, valid

    # ------------------------------------------------------------------ training

    def rpn_targets(self, key, anchors, gt_boxes, gt_valid):
        """Anchor labels (1 / 0 / -1 not sampled) and box targets per level (docs/reference.md §2.5)."""
        r = self.config.rpn
        all_anchors = jnp.asarray(anchors.boxes)
        iou = box_ops.pairwise_iou(
            jnp.broadcast_to(all_anchors, gt_boxes.shape[:1] + all_anchors.shape), gt_boxes, None, gt_valid
        )
        match = matching.rpn_match(iou, gt_valid, r.negative_below, r.positive_from)
        positive = match.labels == matching.POSITIVE
        sample = batched_sample_balanced(
            key,
            positive,
            match.labels == matching.NEGATIVE,
            r.batch_size_per_image,
            r.positive_fraction,
            fill_with_non_candidates=False,
        )
        labels = jnp.where(sample.indicator, positive.astype(jnp.int32), -1)
        matched_boxes = matching.gather_matched(gt_boxes, match.matched_gt)
        targets = jnp.where(positive[..., None], box_ops.encode_boxes(matched_boxes, all_anchors), 0.0)
        label_levels = anchors.split_levels(labels, axis=1)
        target_levels = anchors.split_levels(targets, axis=1)
        return (
            {l: v for l, v in label_levels.items()},
            {l: v.reshape(v.shape[:3] + (-1,)) for l, v in target_levels.items()},
            jnp.sum(positive & sample.indicator),
        )

    @property
    def class_loss(self) -> str:
        return self.config.box_head.class_loss

    def _class_weights(self):
        """Per-class weights of the classification loss (None: unweighted)."""
        method = self.config.box_head.class_weighting
        if method == "none":
            return None
        if self.class_instance_counts is None:
            raise ValueError(
                f"model.box_head.class_weighting={method!r} needs the training split's class counts: "
                "build the model with class_instance_counts (the training loop does)"
            )
        return jnp.asarray(
            loss_lib.class_balance_weights(self.class_instance_counts, method, self.config.box_head.class_balance_beta)
        )

    def classification_loss(self, key, logits, classes):
        """`box_head.class_loss`: softmax CE (the reference), per-class sigmoid BCE, or the
        federated loss (sigmoid BCE on a sampled class subset)."""
        weights = self._class_weights()
        if self.class_loss == "softmax":
            return loss_lib.frcnn_class_loss(logits, classes, weights)
        class_mask = None
        if self.class_loss == "federated":
            if self.class_image_counts is None:
                raise ValueError(
                    "model.box_head.class_loss='federated' samples classes by training frequency: "
                    "build the model with class_image_counts (the training loop does)"
                )
            h = self.config.box_head
            sampling = jnp.asarray(self.class_image_counts, jnp.float32) ** h.federated_power
            class_mask = loss_lib.federated_class_mask(
                key, classes, sampling.at[0].set(0.0), int(h.federated_num_classes)
            )
        return loss_lib.sigmoid_class_loss(logits, classes, weights, class_mask)

    def box_stage(self, stage: int, features, targets: RoiTargets, train: bool):
        roi_feats = self.roi_features(features, targets.rois, self.config.roi.crop_size)
        return self.box_heads[stage](roi_feats, train)

    def training_losses(self, batch: Mapping[str, Any], backbone_features=None):
        c = self.config
        images = batch["image"]
        image_shape = images.shape[1:3]
        gt_boxes = batch["boxes"].astype(jnp.float32)
        gt_classes = batch["classes"].astype(jnp.int32)
        gt_valid = batch["valid"].astype(bool)
        rpn_key, roi_key, class_key = jax.random.split(self.make_rng("sampling"), 3)

        features = self.features(images, train=True, backbone_features=backbone_features)
        scores, deltas, anchors, proposals, _, proposal_valid = self.proposals(features, image_shape, True)

        # RPN losses.
        rpn_labels, rpn_box_targets, num_rpn_pos = self.rpn_targets(rpn_key, anchors, gt_boxes, gt_valid)
        batch_size = images.shape[0]
        normalizer = batch_size * (
            c.roi.num_samples if c.rpn.score_normalizer == "num_rois" else c.rpn.batch_size_per_image
        )
        losses = {
            "rpn_score": loss_lib.rpn_score_loss(scores, {l: rpn_labels[l] for l in scores}, normalizer),
            "rpn_box": loss_lib.rpn_box_loss(deltas, rpn_box_targets, c.rpn.huber_delta),
        }

        # Second stage (and cascade stages).
        r = c.roi
        targets = sample_rois(
            roi_key,
            proposals,
            proposal_valid,
            gt_boxes,
            gt_classes,
            gt_valid,
            num_samples=r.num_samples,
            fg_fraction=r.fg_fraction,
            fg_iou=r.fg_iou,
            bg_iou_high=r.bg_iou_high,
            bg_iou_low=r.bg_iou_low,
            strict_fg=r.strict_fg,
            mix_gt_boxes=r.mix_gt_boxes,
            box_weights=self.stage_weights[0],
        )
        cls_losses, box_losses, num_fg = [], [], []
        box_deltas = None  # the previous stage's (class-agnostic) deltas, for cascades
        for stage, weights in enumerate(self.stage_weights):
            if stage > 0:
                rois = box_ops.clip_boxes(
                    box_ops.decode_boxes(box_deltas, targets.rois, self.stage_weights[stage - 1]), image_shape
                )
                targets = assign_rois(
                    rois,
                    gt_boxes,
                    gt_classes,
                    gt_valid,
                    iou_threshold=c.cascade.iou_thresholds[stage - 1],
                    box_weights=weights,
                )
            logits, box_deltas = self.box_stage(stage, features, targets, train=True)
            class_deltas = select_class_deltas(box_deltas, targets.classes)
            cls_losses.append(self.classification_loss(jax.random.fold_in(class_key, stage), logits, targets.classes))
            box_losses.append(
                loss_lib.frcnn_box_loss(class_deltas, targets.box_targets, targets.foreground, c.box_head.huber_delta)
            )
            num_fg.append(jnp.sum(targets.foreground))
        # Cascade: class and box losses are the mean over stages (docs/reference.md §2.12).
        losses["frcnn_class"] = sum(cls_losses) / len(cls_losses)
        losses["frcnn_box"] = sum(box_losses) / len(box_losses)

        if c.mask.enabled:
            losses["mask"] = self.mask_loss(features, targets, batch, gt_boxes)

        losses["total"] = sum(losses.values())
        metrics = {
            "rpn_sampled_positives": num_rpn_pos / batch_size,
            **{f"stage{i}_foreground_rois": n / batch_size for i, n in enumerate(num_fg)},
        }
        return losses, metrics

    def mask_loss(self, features, targets: RoiTargets, batch, gt_boxes):
        """The first `mask.num_samples` foreground ROIs (background fills carry weight 0),
        targets re-sampled from the box-aligned GT crops (docs/reference.md §2.10)."""
        if "masks" not in batch:
            raise ValueError(
                "model.mask.enabled=True but the batch has no 'masks': enable "
                "data.with_masks on a source with instance masks."
            )
        m = self.config.mask
        _, index = jax.lax.top_k(targets.foreground.astype(jnp.int32), m.num_samples)
        take = lambda x: jnp.take_along_axis(x, index.reshape(index.shape + (1,) * (x.ndim - 2)), axis=1)
        rois, classes, matched, weights = (
            take(targets.rois),
            take(targets.classes),
            take(targets.matched_gt),
            take(targets.foreground),
        )
        mask_targets = mask_targets_from_box_crops(
            batch["masks"].astype(jnp.float32), gt_boxes, matched, rois, m.output_size
        )
        roi_feats = self.roi_features(features, jax.lax.stop_gradient(rois), m.crop_size)
        logits = self.mask_head(roi_feats, classes, train=True)
        return loss_lib.mask_loss(logits, jax.lax.stop_gradient(mask_targets), weights)

    # ------------------------------------------------------------------ inference

    def detect(self, batch: Mapping[str, Any]):
        c = self.config
        images = batch["image"]
        image_shape = images.shape[1:3]
        features = self.features(images, train=False)
        _, _, _, rois, _, _ = self.proposals(features, image_shape, train=False)

        logits_sum, deltas = None, None
        for stage, weights in enumerate(self.stage_weights):
            if stage > 0:
                rois = box_ops.clip_boxes(
                    box_ops.decode_boxes(deltas, rois, self.stage_weights[stage - 1]), image_shape
                )
            roi_feats = self.roi_features(features, rois, c.roi.crop_size)
            logits, deltas = self.box_heads[stage](roi_feats, False)
            logits_sum = logits if logits_sum is None else logits_sum + logits
        # Cascade: average the stages' logits (class ensemble), boxes from the last stage.
        if self.cascade and c.cascade.class_ensemble:
            logits = logits_sum / len(self.stage_weights)
        d = c.detections
        dets = detection_postprocess(
            logits,
            deltas,
            rois,
            image_shape,
            weights=self.stage_weights[-1],
            max_detections=d.max_detections,
            pre_nms_top_k=d.pre_nms_top_k,
            score_threshold=d.score_threshold,
            iou_threshold=d.iou_threshold,
            score_activation="softmax" if self.class_loss == "softmax" else "sigmoid",
        )
        out = {
            "boxes": dets.boxes,
            "scores": dets.scores,
            "classes": dets.classes,
            "valid": dets.valid,
            "num_detections": dets.num_detections,
        }
        if c.mask.enabled:
            roi_feats = self.roi_features(features, dets.boxes, c.mask.crop_size)
            out["masks"] = jax.nn.sigmoid(self.mask_head(roi_feats, dets.classes, train=False))
        if "image_info" in batch:
            out["original_boxes"] = box_ops.to_original_boxes(dets.boxes, batch["image_info"])
        return out

    def __call__(self, batch: Mapping[str, Any], train: bool = False, backbone_features=None):
        return self.training_losses(batch, backbone_features) if train else self.detect(batch)
