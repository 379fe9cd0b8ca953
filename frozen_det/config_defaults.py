"""Building blocks for experiment configs (configs/**.py import these).

Defaults are the reference's (reference/tfmg.md; section numbers in comments), so a config file
only states what its experiment changes.
"""

from __future__ import annotations

import ml_collections

ConfigDict = ml_collections.ConfigDict


def backbone(type="resnet_rs", depth=101, variant=None, freeze="all", adapters=False,
             init_checkpoint="", bn_momentum=None, bn_epsilon=None, drop_path_rate=None,
             dtype="float32", conv_impl="xla") -> ConfigDict:
    """`model.backbone` (see frozen_det.models.backbones). Detection backbones have no
    ImageNet head (num_classes=None)."""
    return ConfigDict(dict(type=type, depth=depth, variant=variant, freeze=freeze, adapters=adapters,
                           num_classes=None, init_checkpoint=init_checkpoint, bn_momentum=bn_momentum,
                           bn_epsilon=bn_epsilon, drop_path_rate=drop_path_rate, dtype=dtype,
                           conv_impl=conv_impl))


def fpn(min_level=2, max_level=6, num_filters=256) -> ConfigDict:
    return ConfigDict(dict(type="fpn", min_level=min_level, max_level=max_level, num_filters=num_filters,
                           activation="swish", bn_momentum=0.997, bn_epsilon=1e-4))


def nasfpn(min_level=3, max_level=7, num_filters=256, num_repeats=5, block="conv", combine="attention",
           drop_connect_rate=0.0) -> ConfigDict:
    return ConfigDict(dict(type="nasfpn", min_level=min_level, max_level=max_level, num_filters=num_filters,
                           num_repeats=num_repeats, block=block, combine=combine,
                           drop_connect_rate=drop_connect_rate, activation="swish",
                           bn_momentum=0.997, bn_epsilon=1e-4))


def two_stage_model(num_classes=91, neck=None, backbone_cfg=None, cascade=False, mask=False,
                    activation="swish", conv_impl="xla") -> ConfigDict:
    """`config.model` of a Faster / Mask / Cascade R-CNN with the reference's defaults."""
    m = ConfigDict()
    m.type = "two_stage"
    m.num_classes = num_classes  # including background (class 0)
    m.activation = activation
    m.dtype = "float32"
    # Convolutions of the neck and heads (the backbone has its own `backbone.conv_impl`): "xla"
    # (flax) or "fast" (fast_conv.Conv: same parameters and function, weight gradients as dots,
    # several times faster on XLA:CPU).
    m.conv_impl = conv_impl
    m.bn = ConfigDict(dict(momentum=0.997, epsilon=1e-4))  # sync BN 0.997 / 1e-4 (2.14)
    m.backbone = backbone_cfg or backbone()
    m.neck = neck or fpn()
    # 2.4: 3 anchors per location, side 8 * stride (kept at 8 for NAS-FPN L3-7).
    m.anchors = ConfigDict(dict(num_scales=1, aspect_ratios=(0.5, 1.0, 2.0), anchor_size=8.0))
    m.rpn = ConfigDict(dict(
        num_convs=1, num_filters=256, use_batch_norm=True,
        negative_below=0.3, positive_from=0.7,  # 2.5 matcher bands + force-match
        batch_size_per_image=256, positive_fraction=0.5,
        pre_nms_top_k_train=2000, pre_nms_top_k_test=1000,  # 2.6, per level
        post_nms_top_k_train=1000, post_nms_top_k_test=1000,  # per level after NMS
        num_proposals_train=1000, num_proposals_test=1000,
        nms_iou=0.7,
        huber_delta=1.0 / 9,
        score_normalizer="num_rois",  # 2.12 quirk: B * 512 sampled ROIs; or "num_anchors" (B * 256)
    ))
    m.roi = ConfigDict(dict(
        num_samples=512, fg_fraction=0.25, fg_iou=0.5, bg_iou_high=0.5, bg_iou_low=0.0,
        strict_fg=False, mix_gt_boxes=True,  # 2.8
        crop_size=7, sampling_ratio=1, aligned=False,  # 2.9: one sample per bin, no half-pixel shift
    ))
    m.box_head = ConfigDict(dict(
        num_convs=4, num_filters=256, num_fcs=2, fc_dims=1024, use_batch_norm=True,  # 2.10
        class_agnostic=False, weights=(10.0, 10.0, 5.0, 5.0), huber_delta=1.0,
        # Classification loss: "softmax" CE (reference), "sigmoid" BCE per class, or "federated"
        # (Zhou et al. 2021: sigmoid BCE on the batch's classes + `federated_num_classes` sampled
        # by training image frequency^federated_power). Class-balanced re-weighting of the loss
        # by training instance counts: "none", "effective_number" (Cui et al. 2019, beta),
        # "inverse_frequency", "inverse_sqrt_frequency" (the LVIS second stage uses one).
        class_loss="softmax", class_weighting="none", class_balance_beta=0.999,
        federated_num_classes=50, federated_power=0.5,
    ))
    m.cascade = ConfigDict(dict(
        enabled=cascade, iou_thresholds=(0.7, 0.8), class_ensemble=True,
        weights=((10.0, 10.0, 5.0, 5.0), (20.0, 20.0, 10.0, 10.0), (30.0, 30.0, 15.0, 15.0)),
    ))
    m.mask = ConfigDict(dict(enabled=mask, num_samples=128, crop_size=14, output_size=28,
                             num_convs=4, num_filters=256))
    # 2.7 DetectionGenerator (v2): score > 0.05, NMS 0.5, 100 per image.
    m.detections = ConfigDict(dict(max_detections=100, pre_nms_top_k=1000, score_threshold=0.05,
                                   iou_threshold=0.5))
    return m


def tiny_two_stage_model(num_classes=4, cascade=False, mask=False, freeze="none", adapters=False,
                         neck_type="fpn") -> ConfigDict:
    """A small, fast-compiling variant for tests and CPU demos (ResNet-18, 32-channel heads,
    few proposals). Same code paths as the paper's models."""
    neck = fpn(2, 5, 32) if neck_type == "fpn" else nasfpn(3, 7, 32, num_repeats=1)
    m = two_stage_model(num_classes, neck=neck, cascade=cascade, mask=mask,
                        backbone_cfg=backbone("resnet", 18, freeze=freeze, adapters=adapters))
    m.anchors.anchor_size = 4.0
    # Short runs: BN moving averages must converge within a few hundred steps (0.997 needs
    # thousands), or inference-mode heads see statistics they were never trained with.
    m.bn.momentum = 0.9
    m.neck.bn_momentum = 0.9
    m.rpn.update(num_filters=32, batch_size_per_image=64, pre_nms_top_k_train=200, pre_nms_top_k_test=100,
                 post_nms_top_k_train=50, post_nms_top_k_test=50, num_proposals_train=64,
                 num_proposals_test=32)
    m.roi.num_samples = 32
    m.box_head.update(num_convs=1, num_filters=32, num_fcs=1, fc_dims=64)
    m.mask.update(num_samples=8, num_convs=1, num_filters=32)
    m.detections.update(max_detections=20, pre_nms_top_k=32)
    return m


def torchvision_faster_rcnn_r50_fpn(num_classes=91, freeze="none", conv_impl="xla", pre_nms=2000,
                                     post_nms=2000, rois=512, detections=100) -> ConfigDict:
    """`config.model` set to torchvision's `fasterrcnn_resnet50_fpn` (train-time settings) as far
    as the fields allow, for like-for-like comparisons with it (tools/bench_peer.py lists what
    still differs: BN in our FPN, P6 by conv, RoIAlign over P2-P6). `pre_nms` is the RPN's top-k
    per level before NMS, `post_nms` the proposals kept (per level and in total, which selects the
    same set as torchvision's per-level NMS followed by the global top k), `rois` the sampled
    ROIs per image."""
    m = two_stage_model(num_classes, neck=fpn(2, 6, 256), activation="relu", conv_impl=conv_impl,
                        backbone_cfg=backbone("resnet", 50, freeze=freeze, conv_impl=conv_impl))
    m.neck.activation = "relu"
    m.anchors.update(num_scales=1, aspect_ratios=(0.5, 1.0, 2.0), anchor_size=8.0)
    m.rpn.update(num_convs=1, num_filters=256, use_batch_norm=False, negative_below=0.3, positive_from=0.7,
                 batch_size_per_image=256, positive_fraction=0.5, pre_nms_top_k_train=pre_nms,
                 post_nms_top_k_train=post_nms, num_proposals_train=post_nms, nms_iou=0.7,
                 score_normalizer="num_anchors")
    m.roi.update(num_samples=rois, fg_fraction=0.25, fg_iou=0.5, bg_iou_high=0.5, bg_iou_low=0.0,
                 mix_gt_boxes=True, crop_size=7, sampling_ratio=2, aligned=False)
    m.box_head.update(num_convs=0, num_fcs=2, fc_dims=1024, use_batch_norm=False, huber_delta=1.0 / 9)
    m.detections.max_detections = detections
    return m


# ---------------------------------------------------------------------------- schedules

# COCO train2017 = 118,287 images; at batch 64 one epoch is 1848.2 steps (tfmg.md 1.2).
PAPER_SCHEDULES = {
    "72ep": dict(total_steps=133_056, boundaries=[88_704, 125_664]),
    "600ep": dict(total_steps=1_108_940, boundaries=[1_062_734, 1_090_458]),
}


def train(batch_size=64, total_steps=133_056, boundaries=(88_704, 125_664), base_lr=0.16,
          warmup_steps=500, warmup_lr=0.0067, weight_decay=4e-5) -> ConfigDict:
    """`config.train`: SGD momentum 0.9, linear warm-up then piecewise-constant x0.1 drops,
    L2 on kernels only (tfmg.md 2.13)."""
    return ConfigDict(dict(
        batch_size=batch_size,
        total_steps=total_steps,
        optimizer=ConfigDict(dict(name="sgd", momentum=0.9, nesterov=False)),
        schedule=ConfigDict(dict(name="warmup_piecewise", base_lr=base_lr, warmup_steps=warmup_steps,
                                 warmup_lr=warmup_lr, boundaries=tuple(boundaries),
                                 multipliers=tuple(0.1 ** (i + 1) for i in range(len(boundaries))))),
        weight_decay=weight_decay,
        grad_clip_norm=0.0,  # 0: off
        seed=0,
        log_every=50,
        checkpoint_every=1000,
        keep_checkpoints=3,
        eval_every=0,  # 0: evaluate only at the end
        eval_at_end=True,
        init_from="",  # another run's workdir: start from its parameters (e.g. LVIS stage 2)
        trainable_only=(),  # path regexes: train only these (classifier-only fine-tuning)
        freeze_batch_stats=False,  # keep every BatchNorm statistic as restored (second stage)
        sharding_rules=(),  # (regex, "fsdp" | "replicate") over state paths
        fsdp_min_size=0,  # >0: FSDP-shard every state leaf with at least this many elements
        distributed=False,  # call jax.distributed.initialize() (multi-host)
    ))


def paper_train(schedule: str) -> ConfigDict:
    if schedule not in PAPER_SCHEDULES:
        raise ValueError(f"schedule {schedule!r}: choose one of {sorted(PAPER_SCHEDULES)}")
    return train(**PAPER_SCHEDULES[schedule])


def coco_data(canvas=1024, with_masks=False, max_instances=100) -> ConfigDict:
    """`config.data` for TFDS COCO 2017 with LSJ [0.1, 2.0] + flip (tfmg.md 2.11)."""
    return ConfigDict(dict(source="tfds", name="coco/2017", train_split="train", eval_split="validation",
                           canvas=canvas, max_instances=max_instances, with_masks=with_masks, mask_size=112,
                           augment=ConfigDict(dict(hflip=True, scale_min=0.1, scale_max=2.0,
                                                   copy_paste=False)),
                           mean=[0.485 * 255, 0.456 * 255, 0.406 * 255],
                           std=[0.229 * 255, 0.224 * 255, 0.225 * 255]))


STRATEGIES = {
    # name -> (freeze, adapters, pretrained?)
    "frozen": ("all", False, True),
    "finetune": ("none", False, True),
    "scratch": ("none", False, False),
    "adapters": ("all", True, True),
}


def apply_strategy(model: ConfigDict, strategy: str, checkpoint: str) -> None:
    """Sets the backbone's freeze / adapters / init_checkpoint for a named transfer strategy."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy {strategy!r}: choose one of {sorted(STRATEGIES)}")
    freeze, adapters, pretrained = STRATEGIES[strategy]
    model.backbone.freeze = freeze
    model.backbone.adapters = adapters
    model.backbone.init_checkpoint = checkpoint if pretrained else ""


def parse_arg(arg: str | None, **defaults) -> dict:
    """'72ep,finetune' style config arguments: each token sets the key whose allowed values
    contain it. `defaults` maps key -> (default, allowed values)."""
    chosen = {k: v[0] for k, v in defaults.items()}
    for token in filter(None, (arg or "").split(",")):
        keys = [k for k, (_, allowed) in defaults.items() if token in allowed]
        if not keys:
            allowed = {k: v[1] for k, v in defaults.items()}
            raise ValueError(f"config argument {token!r} not understood; allowed: {allowed}")
        chosen[keys[0]] = token
    return chosen


# ---------------------------------------------------------------------------- LVIS second stage

# The detection classifier's final layer(s): every box head's `class_logits` (one per cascade
# stage). The second stage trains only these.
CLASSIFIER_PATTERNS = (r"^box_heads_\d+/class_logits/",)


def second_stage(config: ConfigDict, *, init_from: str = "", balance: str = "loss", total_steps: int,
                 base_lr: float, weighting: str = "effective_number", beta: float = 0.999) -> None:
    """Turns a first-stage config into the LVIS second stage (paper 002 sec. 4.3, after Ghiasi
    et al.): restore the first stage (`train.init_from`, its workdir), train only the final
    classification layer(s) with everything else - BatchNorm statistics included - bit-identical,
    class-balanced by `balance`:
      "loss":     re-weight the classification loss per class (`weighting`, `beta`);
      "sampling": repeat-factor sampling with power 1 (close to class-balanced image sampling).
    The schedule is short and fresh: warm-up 10% of `total_steps`, then cosine to 0. No public
    code fixes these values (tfmg.md 5.7); they are ours."""
    if balance not in ("loss", "sampling"):
        raise ValueError(f"second stage balance {balance!r}: 'loss' or 'sampling'")
    t = config.train
    t.init_from = init_from
    t.trainable_only = CLASSIFIER_PATTERNS
    t.freeze_batch_stats = True
    t.total_steps = total_steps
    t.schedule = ConfigDict(dict(name="warmup_cosine", base_lr=base_lr, warmup_steps=max(1, total_steps // 10),
                                 warmup_lr=base_lr / 10))
    if balance == "loss":
        config.model.box_head.class_weighting = weighting
        config.model.box_head.class_balance_beta = beta
    else:
        config.data.sampling = "repeat_factor"
        config.data.repeat_power = 1.0
        config.data.repeat_threshold = 1.0
