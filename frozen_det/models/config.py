"""`config.model`: the schemas of the models, their defaults, and the checks that need only the
model section.

Each task (frozen_det.tasks) declares which schema its `config.model` has: the two-stage
detector's (Faster / Mask / Cascade R-CNN), RetinaNet's, the classifier's, PreDet's pretext (a
two-stage detector's layers plus `predet`). Defaults are the reference's (docs/reference.md, sections in
comments), so an experiment states only what it changes. `complete_*(model)` returns the full
section, unknown fields rejected with their name, and validated; the values that would
otherwise fail deep inside jit are checked here.
"""

from __future__ import annotations

from frozen_det.models.freezing import num_frozen_stages
from frozen_det.schema import ConfigDict, choice, fields, merge, placeholder

FAMILIES = ("resnet", "resnet_rs", "efficientnet")
NECKS = ("fpn", "nasfpn")
CONV_IMPLS = ("xla", "fast")
DTYPES = ("float32", "bfloat16")
CLASS_LOSSES = ("softmax", "sigmoid", "federated")
CLASS_WEIGHTINGS = ("none", "effective_number", "inverse_frequency", "inverse_sqrt_frequency")


def backbone_defaults() -> ConfigDict:
    """`model.backbone` (frozen_det.models.backbones)."""
    return ConfigDict(
        dict(
            type="resnet",  # one of FAMILIES
            depth=50,  # ResNet 18..200, ResNet-RS 50..200
            variant=placeholder(str),  # EfficientNet "b0".."b7", "lite0".."lite4"
            freeze="none",  # "none" | "all" | k: stem + first k stages (the freeze switch)
            # "none" | "residual" (a zero-initialised parallel 1x1 conv per block) | "film" (a
            # per-channel scale and shift after every block, identity at init); False / True:
            # "none" / "residual", the switch's earlier form (old configs and checkpoints)
            adapters="none",
            num_classes=placeholder(int),  # the backbone's own ImageNet head; unset: no head
            init_checkpoint="",  # "" (scratch), "package:efficientnet_lite0", or a converted dir
            bn_momentum=placeholder(float),  # unset: the family's default
            bn_epsilon=placeholder(float),
            drop_path_rate=placeholder(float),
            dropout_rate=placeholder(float),  # before the classifier (classifiers); unset: the family's
            width=1.0,  # ResNet: channels x width (0.25: a ResNet that pre-trains in minutes on CPU)
            # "batch" (BN on batch statistics in training) or "frozen_stats" (stored statistics
            # always, scale and offset trainable: the Detectron fine-tuning mode)
            bn_mode="batch",
            dtype="float32",  # activations; parameters stay float32
            conv_impl="xla",  # "fast": frozen_det.models.fast_conv (faster on XLA:CPU)
            # Recompute each trained stage's activations in the backward pass instead of keeping
            # them (nn.remat per stage): less memory for large batches, about one more forward pass.
            remat=False,
        )
    )


def neck_defaults(kind: str = "fpn") -> ConfigDict:
    """`model.neck`: FPN (docs/reference.md §2.3) or NAS-FPN (§2.3, §5.3)."""
    choice(kind, NECKS, "model.neck.type")
    common = dict(
        activation="swish", bn_momentum=0.997, bn_epsilon=1e-4, num_filters=256, dtype=placeholder(str)
    )  # dtype unset: the model's
    if kind == "fpn":
        return ConfigDict(dict(type="fpn", min_level=2, max_level=6, **common))
    return ConfigDict(
        dict(
            type="nasfpn",
            min_level=3,
            max_level=7,
            num_repeats=5,
            block="conv",
            combine="attention",
            drop_connect_rate=0.0,
            **common,
        )
    )


def two_stage_defaults() -> ConfigDict:
    """`config.model` of a Faster / Mask / Cascade R-CNN with the reference's defaults."""
    m = ConfigDict()
    m.type = "two_stage"
    m.num_classes = 91  # including background (class 0)
    m.activation = "swish"
    m.dtype = "float32"
    # Convolutions of the neck and heads (the backbone has its own `backbone.conv_impl`).
    m.conv_impl = "xla"
    m.bn = ConfigDict(dict(momentum=0.997, epsilon=1e-4))  # sync BN 0.997 / 1e-4 (§2.14)
    m.backbone = backbone_defaults()
    m.neck = neck_defaults("fpn")
    # §2.4: 3 anchors per location, side 8 * stride (kept at 8 for NAS-FPN L3-7).
    m.anchors = ConfigDict(dict(num_scales=1, aspect_ratios=(0.5, 1.0, 2.0), anchor_size=8.0))
    m.rpn = ConfigDict(
        dict(
            num_convs=1,
            num_filters=256,
            use_batch_norm=True,
            negative_below=0.3,
            positive_from=0.7,  # §2.5 matcher bands + force-match
            batch_size_per_image=256,
            positive_fraction=0.5,
            pre_nms_top_k_train=2000,
            pre_nms_top_k_test=1000,  # §2.6, per level
            post_nms_top_k_train=1000,
            post_nms_top_k_test=1000,  # per level after NMS
            num_proposals_train=1000,
            num_proposals_test=1000,
            nms_iou=0.7,
            huber_delta=1.0 / 9,
            score_normalizer="num_rois",  # §2.12 quirk: B * 512 sampled ROIs; or "num_anchors" (B * 256)
        )
    )
    m.roi = ConfigDict(
        dict(
            num_samples=512,
            fg_fraction=0.25,
            fg_iou=0.5,
            bg_iou_high=0.5,
            bg_iou_low=0.0,
            strict_fg=False,
            mix_gt_boxes=True,  # §2.8
            crop_size=7,
            sampling_ratio=1,
            aligned=False,  # §2.9: one sample per bin, no half-pixel shift
        )
    )
    m.box_head = ConfigDict(
        dict(
            num_convs=4,
            num_filters=256,
            num_fcs=2,
            fc_dims=1024,
            use_batch_norm=True,  # §2.10
            class_agnostic=False,
            weights=(10.0, 10.0, 5.0, 5.0),
            huber_delta=1.0,
            # Classification loss: "softmax" CE (reference), "sigmoid" BCE per class, or "federated"
            # (Zhou et al. 2021: sigmoid BCE on the batch's classes + `federated_num_classes` sampled
            # by training image frequency^federated_power). Class-balanced re-weighting of the loss
            # by training instance counts: "none", "effective_number" (Cui et al. 2019, beta),
            # "inverse_frequency", "inverse_sqrt_frequency" (the LVIS second stage uses one).
            class_loss="softmax",
            class_weighting="none",
            class_balance_beta=0.999,
            federated_num_classes=50,
            federated_power=0.5,
        )
    )
    m.cascade = ConfigDict(
        dict(
            enabled=False,
            iou_thresholds=(0.7, 0.8),
            class_ensemble=True,
            weights=((10.0, 10.0, 5.0, 5.0), (20.0, 20.0, 10.0, 10.0), (30.0, 30.0, 15.0, 15.0)),
        )
    )
    # §2.10: 14x14 RoIAlign crops, upsampled x2 by the head's deconvolution to 28x28 logits.
    m.mask = ConfigDict(
        dict(enabled=False, num_samples=128, crop_size=14, output_size=28, num_convs=4, num_filters=256)
    )
    # §2.7 DetectionGenerator (v2): score > 0.05, NMS 0.5, 100 per image.
    m.detections = ConfigDict(dict(max_detections=100, pre_nms_top_k=1000, score_threshold=0.05, iou_threshold=0.5))
    return m


def retinanet_neck_defaults(kind: str = "fpn") -> ConfigDict:
    """`model.neck` of RetinaNet: the pyramid P3-P7 (Lin et al. 2017 sec. 4.1; NAS-FPN's levels
    are 3-7 already). Our FPN makes P6 by a stride-2 conv on P5 and P7 by another on ReLU(P6),
    as TF-Vision's FPN and torchvision's `retinanet_resnet50_fpn` (the paper: P6 from C5)."""
    neck = neck_defaults(kind)
    neck.update(min_level=3, max_level=7)
    if kind == "fpn":
        neck.activation = "relu"
    return neck


def retinanet_defaults() -> ConfigDict:
    """`config.model` of RetinaNet (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017,
    sec. 3-4; frozen_det.models.retinanet) with the paper's values; where the paper leaves a
    choice, TF Model Garden's RetinaNet (tensorflow/models official/vision/configs/retinanet.py)."""
    m = ConfigDict()
    m.type = "retinanet"
    m.num_classes = 91  # including background (class 0), which has no logit
    m.activation = "relu"  # of the subnets (sec. 4.1)
    m.dtype = "float32"
    m.conv_impl = "xla"  # convolutions of the neck and head
    m.bn = ConfigDict(dict(momentum=0.997, epsilon=1e-4))  # the subnets' BatchNorm, as the neck's
    m.backbone = backbone_defaults()
    m.neck = retinanet_neck_defaults("fpn")
    # Sec. 4.1: A = 9 anchors per location, sizes 4 * stride * 2^(0, 1/3, 2/3) (32..813 px on P3-P7)
    # x aspect ratios 1:2, 1:1, 2:1.
    m.anchors = ConfigDict(dict(num_scales=3, aspect_ratios=(0.5, 1.0, 2.0), anchor_size=4.0))
    # Sec. 4.1: 4 convs of 256 filters per subnet; TF Model Garden's head has a BatchNorm per level
    # after each (the paper none: use_batch_norm=False); prior pi = 0.01 (sec. 3.3).
    m.head = ConfigDict(dict(num_convs=4, num_filters=256, use_batch_norm=True, prior_probability=0.01))
    # Sec. 4: IoU >= 0.5 positive, < 0.4 negative, in between ignored; plus each ground truth's best
    # anchor (TF Model Garden's force_match_for_each_row; torchvision's allow_low_quality_matches).
    m.matching = ConfigDict(dict(positive_from=0.5, negative_below=0.4, force_match_gt=True))
    # Focal loss alpha 0.25, gamma 2 (sec. 5.1; TF Model Garden's default gamma is 1.5). Box loss:
    # TF Model Garden's Huber(0.1) averaged over the 4 coordinates x 50, i.e. 1.25 x smooth-L1
    # (beta 0.1) summed over coordinates; unit box-coder weights.
    m.loss = ConfigDict(dict(focal_alpha=0.25, focal_gamma=2.0, huber_delta=0.1, box_loss_weight=50.0))
    # Sec. 4 "Inference": per level the 1000 best (anchor, class) scores above 0.05, class-aware
    # NMS 0.5 over all levels, 100 detections.
    m.detections = ConfigDict(dict(max_detections=100, pre_nms_top_k=1000, score_threshold=0.05, iou_threshold=0.5))
    return m


def classifier_defaults() -> ConfigDict:
    """`config.model` of an image classifier (frozen_det.models.classifier): a backbone with its
    family's global pooling and linear classifier."""
    m = ConfigDict()
    m.type = "classifier"
    m.num_classes = 1000  # no background class
    m.loss = "softmax"  # or "sigmoid" (per-class BCE)
    m.label_smoothing = 0.0
    m.backbone = backbone_defaults()
    # "backbone": the backbone family's own pooling and classifier. A detector's tap instead
    # (frozen_det.models.classifier.DetectorTapClassifier): "conv5", "conv_proj",
    # "conv_proj_1|2|4", "fc1", "fc2" of the detector in `model.detector` (its whole
    # config.model, backbone included; model.backbone is then not used).
    m.features = "backbone"
    m.detector = two_stage_defaults()
    m.frozen_features = False  # taps: the detector's layers in inference mode (a linear probe)
    return m


def predet_defaults() -> ConfigDict:
    """`config.model` of PreDet pre-training (frozen_det.models.predet; Ramanathan et al., "PreDet:
    Large-scale weakly supervised pre-training for detection", ICCV 2021, sec. 3-4).

    Every section of a two-stage detector is kept with its defaults (backbone, neck, anchors,
    rpn, roi, box_head, ...) so that the layers PreDet shares with Faster R-CNN are built by the
    same code with the same parameter paths and shapes, and a PreDet run transfers into a
    detector with `train.init_from`. `predet` holds what the pretext task adds. The switches
    (`crpn`, `croi`, `croi_regression`, `multilabel`) make the paper's Table 1 ablation a set of
    configs; `multilabel` needs image labels in the data (`num_labels` > 0)."""
    m = two_stage_defaults()
    m.type = "predet"
    m.predet = ConfigDict(
        dict(
            num_queries=16,  # Q, sec. 4.1
            num_negatives=512,  # |P_neg|, sec. 4.1
            temperature=0.07,  # tau of InfoNCE, sec. 3.2.2
            crpn_dims=64,  # D of the CRPN's per-anchor features f_I^cls / f_q^cls
            embedding_dims=128,  # the CROI head's FC projection before the cosine similarity
            regression_dims=128,  # D of the CROI regression's 1 x D / 4 x D projections
            crpn_positive_above=0.7,
            crpn_negative_below=0.3,
            crpn_batch_size_per_image=256,  # 128 positives + 128 negatives, sec. 3.2.1
            crpn_positive_fraction=0.5,
            crpn_huber_beta=1.0 / 9,
            croi_iou=0.5,  # positive > 0.5, negatives < 0.5 with every query, sec. 3.2.2
            croi_huber_beta=1.0,
            # The positive proposal of a query: random among those above croi_iou ("sample one",
            # sec. 3.2.2), or the highest-IoU one (False: with the queries among the proposals,
            # always the query's own box).
            random_positive=True,
            add_queries_to_proposals=True,  # detectron2's "GT boxes among the proposals"
            # Proposals without the CRPN (crpn=False, Table 1): this many random boxes per image
            # plus one jittered copy of each query ("we randomly sampled positive and negative
            # boxes for each query box", sec. 5.1).
            num_random_proposals=256,
            num_labels=0,  # classes of the image labels (multi-label loss); 0: no labels
            # Loss switches (Table 1): L_crpn, L_info, L_croi-reg, L_cls.
            crpn=True,
            croi=True,
            croi_regression=True,
            multilabel=False,
        )
    )
    return m


def complete_backbone(given) -> ConfigDict:
    """A complete, validated `model.backbone` from a partial one (dict or ConfigDict)."""
    from frozen_det.models.freezing import adapter_kind

    b = merge(backbone_defaults(), given or {}, "config.model.backbone")
    with b.ignore_type():
        b.freeze = str(b.freeze)  # "all" | "none" | "k": one type, overridable on the command line
        b.adapters = adapter_kind(b.adapters)  # booleans of earlier configs as their kind's name
    validate_backbone(b)
    return b


def complete_neck(given) -> ConfigDict:
    given = given or {}
    kind = dict(fields(given)).get("type", "fpn")
    return merge(neck_defaults(kind), given, "config.model.neck")


def complete_section(defaults: ConfigDict, given, *, typed=None) -> ConfigDict:
    """`defaults` with `given`'s fields laid over it and the backbone completed (the shared part
    of every model schema's completion)."""
    m = merge(defaults, given or {}, "config.model", typed=typed)
    with m.ignore_type():
        m.backbone = complete_backbone(m.backbone)
    return m


def complete_two_stage(given) -> ConfigDict:
    """The full `config.model` of a two-stage detector."""
    m = complete_section(two_stage_defaults(), given, typed={"neck": neck_defaults})
    validate_two_stage(m)
    return m


def complete_retinanet(given) -> ConfigDict:
    """The full `config.model` of RetinaNet."""
    m = complete_section(retinanet_defaults(), given, typed={"neck": retinanet_neck_defaults})
    validate_retinanet(m)
    return m


def complete_classifier(given) -> ConfigDict:
    """The full `config.model` of a classifier; `detector` (the detector whose tap a classifier may
    read) is a whole two-stage model section."""
    given = dict(fields(given or {}))
    detector = given.pop("detector", None)
    m = complete_section(classifier_defaults(), given)
    with m.ignore_type():
        m.detector = complete_two_stage(dict(fields(detector or {}), type="two_stage"))
    validate_classifier(m)
    return m


def complete_predet(given) -> ConfigDict:
    """The full `config.model` of PreDet pre-training."""
    m = complete_section(predet_defaults(), given, typed={"neck": neck_defaults})
    validate_predet(m)
    return m


def validate_backbone(b: ConfigDict) -> None:
    choice(b.type, FAMILIES, "model.backbone.type")
    choice(b.dtype, DTYPES, "model.backbone.dtype")
    choice(b.conv_impl, CONV_IMPLS, "model.backbone.conv_impl")
    try:
        num_frozen_stages(b.freeze, 4)
    except ValueError as e:
        raise ValueError(f"config.model.backbone.freeze: {e}") from None
    choice(b.bn_mode, ("batch", "frozen_stats"), "model.backbone.bn_mode")
    if b.width <= 0 or (b.type == "efficientnet" and b.width != 1.0):
        raise ValueError(
            f"config.model.backbone.width={b.width}: a positive multiplier of a ResNet's channels "
            "(EfficientNet variants set their own width: use 1.0)."
        )
    if b.type == "efficientnet" and not b.variant:
        raise ValueError(
            "config.model.backbone.variant: an efficientnet backbone needs a variant ('b0'..'b7', 'lite0'..'lite4')."
        )


def validate_classifier(m: ConfigDict) -> None:
    choice(m.loss, ("softmax", "sigmoid"), "model.loss")
    taps = ("backbone", "conv5", "conv_proj", "conv_proj_1", "conv_proj_2", "conv_proj_4", "fc1", "fc2")
    choice(m.features, taps, "model.features")
    if not 0 <= m.label_smoothing < 1:
        raise ValueError(f"config.model.label_smoothing={m.label_smoothing}: must be in [0, 1).")
    if m.backbone.num_classes is not None and m.backbone.num_classes != m.num_classes:
        raise ValueError(
            f"config.model.backbone.num_classes={m.backbone.num_classes}: a classifier's head has "
            f"model.num_classes={m.num_classes} outputs; leave backbone.num_classes unset."
        )


def validate_two_stage(m: ConfigDict) -> None:
    """Checks of a two-stage detector's section (also the layers PreDet shares with it)."""
    choice(m.dtype, DTYPES, "model.dtype")
    choice(m.conv_impl, CONV_IMPLS, "model.conv_impl")
    choice(m.box_head.class_loss, CLASS_LOSSES, "model.box_head.class_loss")
    choice(m.box_head.class_weighting, CLASS_WEIGHTINGS, "model.box_head.class_weighting")
    choice(m.rpn.score_normalizer, ("num_rois", "num_anchors"), "model.rpn.score_normalizer")
    if m.mask.enabled and m.mask.output_size != 2 * m.mask.crop_size:
        raise ValueError(
            f"config.model.mask.output_size={m.mask.output_size}: the mask head upsamples its "
            f"{m.mask.crop_size}x{m.mask.crop_size} RoI crops by 2, so output_size must be "
            f"2 * model.mask.crop_size = {2 * m.mask.crop_size}."
        )
    if m.cascade.enabled and len(m.cascade.weights) != len(m.cascade.iou_thresholds) + 1:
        raise ValueError(
            f"config.model.cascade: {len(m.cascade.iou_thresholds)} iou_thresholds need "
            f"{len(m.cascade.iou_thresholds) + 1} box-coder weights (one per stage), got "
            f"{len(m.cascade.weights)}."
        )
    if m.neck.min_level > m.neck.max_level:
        raise ValueError(f"config.model.neck: min_level={m.neck.min_level} > max_level={m.neck.max_level}.")


def validate_retinanet(m: ConfigDict) -> None:
    choice(m.dtype, DTYPES, "model.dtype")
    choice(m.conv_impl, CONV_IMPLS, "model.conv_impl")
    if m.num_classes < 2:
        raise ValueError(f"config.model.num_classes={m.num_classes}: classes + background, at least 2.")
    if m.neck.min_level > m.neck.max_level:
        raise ValueError(f"config.model.neck: min_level={m.neck.min_level} > max_level={m.neck.max_level}.")
    if not 0 < m.head.prior_probability < 1:
        raise ValueError(f"config.model.head.prior_probability={m.head.prior_probability}: must be in (0, 1).")
    if not 0 <= m.matching.negative_below <= m.matching.positive_from <= 1:
        raise ValueError(
            f"config.model.matching: need 0 <= negative_below ({m.matching.negative_below}) <= "
            f"positive_from ({m.matching.positive_from}) <= 1."
        )
    if not 0 <= m.loss.focal_alpha <= 1 or m.loss.focal_gamma < 0 or m.loss.huber_delta <= 0:
        raise ValueError(
            f"config.model.loss: focal_alpha={m.loss.focal_alpha} must be in [0, 1], focal_gamma="
            f"{m.loss.focal_gamma} >= 0 and huber_delta={m.loss.huber_delta} > 0."
        )
    for field in ("max_detections", "pre_nms_top_k"):
        if m.detections[field] <= 0:
            raise ValueError(f"config.model.detections.{field}={m.detections[field]}: must be positive.")


def validate_predet(m: ConfigDict) -> None:
    validate_two_stage(m)
    p = m.predet
    if m.mask.enabled or m.cascade.enabled:
        raise ValueError(
            "config.model.mask.enabled / cascade.enabled: PreDet pre-trains the layers of a Faster R-CNN "
            "(backbone, neck, RPN convs, box head); set both to False."
        )
    if not (p.crpn or p.croi or p.croi_regression or p.multilabel):
        raise ValueError("config.model.predet: every loss switch (crpn, croi, croi_regression, multilabel) is off.")
    if p.croi_regression and not p.croi:
        raise ValueError("config.model.predet.croi_regression=True needs croi=True (it regresses the CROI positives).")
    if p.multilabel and p.num_labels <= 0:
        raise ValueError(
            "config.model.predet.multilabel=True needs image labels: set model.predet.num_labels to the "
            "number of classes of the data's labels, or multilabel=False."
        )
    for field in ("num_queries", "num_negatives", "crpn_dims", "embedding_dims", "regression_dims"):
        if p[field] <= 0:
            raise ValueError(f"config.model.predet.{field}={p[field]}: must be positive.")
    if p.temperature <= 0:
        raise ValueError(f"config.model.predet.temperature={p.temperature}: must be positive.")
