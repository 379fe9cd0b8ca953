"""Building blocks for experiment configs (configs/**.py import these).

The defaults of every field live in the schemas (frozen_det.models.config, frozen_det.config's
`train_defaults`, frozen_det.data.detection.config: the reference's values, docs/reference.md);
the builders here take overrides only and set what a family of experiments changes. A config
file ends with
`return complete(config)` (frozen_det.config): every field present, each overridable on the
command line.
"""

from __future__ import annotations

from frozen_det import strategies
from frozen_det.checkpoints.pretrained import preprocessing_of
from frozen_det.config import complete, train_defaults
from frozen_det.data.detection import config as data_config
from frozen_det.models import config as model_config
from frozen_det.schema import ConfigDict, merge

__all__ = ["ConfigDict", "complete"]  # and the builders below


def backbone(**fields) -> ConfigDict:
    """`model.backbone` (frozen_det.models.backbones): the schema's defaults with `fields` laid
    over them (type, depth, variant, freeze, adapters, init_checkpoint, bn_momentum, ...)."""
    return model_config.complete_backbone(fields)


def fpn(min_level=2, max_level=6, num_filters=256) -> ConfigDict:
    return merge(
        model_config.neck_defaults("fpn"),
        dict(min_level=min_level, max_level=max_level, num_filters=num_filters),
        "config.model.neck",
    )


def nasfpn(
    min_level=3, max_level=7, num_filters=256, num_repeats=5, block="conv", combine="attention", drop_connect_rate=0.0
) -> ConfigDict:
    return merge(
        model_config.neck_defaults("nasfpn"),
        dict(
            min_level=min_level,
            max_level=max_level,
            num_filters=num_filters,
            num_repeats=num_repeats,
            block=block,
            combine=combine,
            drop_connect_rate=drop_connect_rate,
        ),
        "config.model.neck",
    )


def two_stage_model(backbone_cfg: ConfigDict, neck=None, cascade=False, mask=False, **fields) -> ConfigDict:
    """`config.model` of a Faster / Mask / Cascade R-CNN: the reference's defaults with the given
    backbone, neck (default: the schema's FPN), heads and top-level fields (num_classes,
    activation, conv_impl, ...)."""
    m = model_config.two_stage_defaults()
    m.update(fields)
    m.backbone = backbone_cfg
    if neck is not None:
        m.neck = neck
    m.cascade.enabled = cascade
    m.mask.enabled = mask
    return m


def tiny_two_stage_model(
    num_classes=4, cascade=False, mask=False, freeze="none", adapters="none", neck_type="fpn"
) -> ConfigDict:
    """A small, fast-compiling variant for tests and CPU demos (ResNet-18, 32-channel heads,
    few proposals). Same code paths as the paper's models."""
    neck = fpn(2, 5, 32) if neck_type == "fpn" else nasfpn(3, 7, 32, num_repeats=1)
    m = two_stage_model(
        backbone(type="resnet", depth=18, freeze=freeze, adapters=adapters),
        neck=neck,
        cascade=cascade,
        mask=mask,
        num_classes=num_classes,
    )
    m.anchors.anchor_size = 4.0
    # Short runs: BN moving averages must converge within a few hundred steps (0.997 needs
    # thousands), or inference-mode heads see statistics they were never trained with.
    m.bn.momentum = 0.9
    m.neck.bn_momentum = 0.9
    m.rpn.update(
        num_filters=32,
        batch_size_per_image=64,
        pre_nms_top_k_train=200,
        pre_nms_top_k_test=100,
        post_nms_top_k_train=50,
        post_nms_top_k_test=50,
        num_proposals_train=64,
        num_proposals_test=32,
    )
    m.roi.num_samples = 32
    m.box_head.update(num_convs=1, num_filters=32, num_fcs=1, fc_dims=64)
    m.mask.update(num_samples=8, num_convs=1, num_filters=32)
    m.detections.update(max_detections=20, pre_nms_top_k=32)
    return m


def retinanet_model(backbone_cfg: ConfigDict, neck=None, **fields) -> ConfigDict:
    """`config.model` of RetinaNet: the schema's defaults (Lin et al. 2017: FPN P3-P7, 9 anchors,
    4-conv subnets, focal loss) with the given backbone, neck and top-level fields."""
    m = model_config.retinanet_defaults()
    m.update(fields)
    m.backbone = backbone_cfg
    if neck is not None:
        m.neck = neck
    return m


def tiny_retinanet_model(num_classes=4, freeze="none", adapters="none", width=0.5, num_filters=32) -> ConfigDict:
    """A small, fast-compiling RetinaNet for tests and CPU demos: a narrow ResNet-18 (`width` x its
    channels), `num_filters`-channel FPN P3-P7 and 2-conv subnets, fewer candidates before NMS.
    Same code paths as the full model."""
    m = retinanet_model(
        backbone(type="resnet", depth=18, width=width, freeze=freeze, adapters=adapters), num_classes=num_classes
    )
    # Short runs: BN moving averages must converge within a few hundred steps (as the tiny
    # two-stage model).
    m.bn.momentum = 0.9
    m.neck.update(num_filters=num_filters, bn_momentum=0.9)
    m.head.update(num_convs=2, num_filters=num_filters)
    m.detections.update(max_detections=20, pre_nms_top_k=100)
    return m


def predet_model(detector: ConfigDict, **predet) -> ConfigDict:
    """`config.model` of PreDet pre-training (frozen_det.models.predet) for the layers of
    `detector` (a two-stage `config.model`): every detector section is copied, so the shared
    layers have the detector's paths and shapes and the run transfers into it by
    `train.init_from`; `predet` fields (num_queries, switches, ...) by keyword."""
    m = model_config.predet_defaults()
    for key, value in detector.items():
        if key != "type":
            with m.ignore_type():
                m[key] = value.copy_and_resolve_references() if isinstance(value, ConfigDict) else value
    m.mask.enabled = False
    m.cascade.enabled = False
    m.predet.update(predet)
    return m


def torchvision_faster_rcnn_r50_fpn(
    num_classes=91, freeze="none", conv_impl="xla", pre_nms=2000, post_nms=2000, rois=512, detections=100
) -> ConfigDict:
    """`config.model` set to torchvision's `fasterrcnn_resnet50_fpn` (train-time settings) as far
    as the fields allow, for like-for-like comparisons with it (tools/bench_peer.py lists what
    still differs: BN in our FPN, P6 by conv, RoIAlign over P2-P6). `pre_nms` is the RPN's top-k
    per level before NMS, `post_nms` the proposals kept (per level and in total, which selects the
    same set as torchvision's per-level NMS followed by the global top k), `rois` the sampled
    ROIs per image."""
    m = two_stage_model(
        backbone(type="resnet", depth=50, freeze=freeze, conv_impl=conv_impl),
        neck=fpn(2, 6, 256),
        num_classes=num_classes,
        activation="relu",
        conv_impl=conv_impl,
    )
    m.neck.activation = "relu"
    m.anchors.update(num_scales=1, aspect_ratios=(0.5, 1.0, 2.0), anchor_size=8.0)
    m.rpn.update(
        num_convs=1,
        num_filters=256,
        use_batch_norm=False,
        negative_below=0.3,
        positive_from=0.7,
        batch_size_per_image=256,
        positive_fraction=0.5,
        pre_nms_top_k_train=pre_nms,
        post_nms_top_k_train=post_nms,
        num_proposals_train=post_nms,
        nms_iou=0.7,
        score_normalizer="num_anchors",
    )
    m.roi.update(
        num_samples=rois,
        fg_fraction=0.25,
        fg_iou=0.5,
        bg_iou_high=0.5,
        bg_iou_low=0.0,
        mix_gt_boxes=True,
        crop_size=7,
        sampling_ratio=2,
        aligned=False,
    )
    m.box_head.update(num_convs=0, num_fcs=2, fc_dims=1024, use_batch_norm=False, huber_delta=1.0 / 9)
    m.detections.max_detections = detections
    return m


# ---------------------------------------------------------------------------- schedules

# COCO train2017 = 118,287 images; at batch 64 one epoch is 1848.2 steps (docs/reference.md §1.2).
PAPER_SCHEDULES = {
    "72ep": dict(total_steps=133_056, boundaries=[88_704, 125_664]),
    "600ep": dict(total_steps=1_108_940, boundaries=[1_062_734, 1_090_458]),
}


def train(**fields) -> ConfigDict:
    """`config.train`: the schema's defaults (SGD momentum 0.9, linear warm-up then x0.1 drops,
    L2 on kernels only, docs/reference.md §2.13) with `fields` laid over them; the fields of
    `train.schedule` (base_lr, warmup_steps, warmup_lr, boundaries, ...) may be given flat."""
    t = train_defaults()
    schedule = {k: fields.pop(k) for k in list(fields) if k not in t and k in t.schedule}
    return merge(t, dict(fields, schedule=schedule), "config.train")


def paper_train(schedule: str) -> ConfigDict:
    if schedule not in PAPER_SCHEDULES:
        raise ValueError(f"schedule {schedule!r}: choose one of {sorted(PAPER_SCHEDULES)}")
    return train(**PAPER_SCHEDULES[schedule])


# COCO's 80 classes + background as our COCO sources number them (contiguous 1..80, the category ids
# kept for evaluation). TF Model Garden's classifier is 91 wide, one output per category id
# (docs/reference.md §4: its parameter arithmetic); a 91-wide model does not run on our sources.
COCO_CLASSES = 81


def coco_data(canvas=1024, with_masks=False, max_instances=100) -> ConfigDict:
    """`config.data` for COCO 2017 with LSJ [0.1, 2.0] + flip (docs/reference.md §2.11),
    ImageNet mean / std: TFDS coco/2017 for boxes; with masks, which TFDS's COCO does not have,
    the COCO 2017 release folder (`data.path` = DIR with annotations/instances_{train,val}2017.json,
    train2017/ and val2017/, read by the coco_folder source)."""
    fields = dict(source="tfds", name="coco/2017", train_split="train", eval_split="validation")
    if with_masks:
        fields = dict(source="coco_folder", train_split="train2017", eval_split="val2017")
    return data_config.complete(dict(fields, canvas=canvas, max_instances=max_instances, with_masks=with_masks))


STRATEGIES = strategies.STRATEGIES  # the named transfer strategies (train.transfer's values)


def normalisation_of(checkpoint: str) -> dict:
    """`data.mean` / `data.std` of the weights `checkpoint` names (their preprocessing), for a
    family of rows that must share one input pipeline whether or not a row loads them (a
    from-scratch row beside pretrained ones)."""
    pre = preprocessing_of(checkpoint)
    if pre is None:
        raise ValueError(f"{checkpoint!r}: no preprocessing known for these weights")
    return dict(mean=tuple(pre.mean), std=tuple(pre.std))


def apply_strategy(model: ConfigDict, strategy: str, checkpoint: str) -> None:
    """Sets the backbone's freeze / adapters / init_checkpoint for a named transfer strategy (what
    `train.transfer` does at complete time, for a config file's builder)."""
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


def second_stage(
    config: ConfigDict,
    *,
    init_from: str = "",
    balance: str = "loss",
    total_steps: int,
    base_lr: float,
    weighting: str = "effective_number",
    beta: float = 0.999,
) -> None:
    """Turns a first-stage config into the LVIS second stage (Vasconcelos et al. 2022 sec. 4.3, after Ghiasi
    et al.): restore the first stage (`train.init_from`, its workdir), train only the final
    classification layer(s) with everything else - BatchNorm statistics included - bit-identical,
    class-balanced by `balance`:
      "loss":     re-weight the classification loss per class (`weighting`, `beta`);
      "sampling": repeat-factor sampling with power 1 (close to class-balanced image sampling).
    The schedule is short and fresh: warm-up 10% of `total_steps`, then cosine to 0. No public
    code fixes these values (docs/reference.md §5.7); they are ours."""
    if balance not in ("loss", "sampling"):
        raise ValueError(f"second stage balance {balance!r}: 'loss' or 'sampling'")
    t = config.train
    t.init_from = init_from
    t.trainable_only = CLASSIFIER_PATTERNS
    t.freeze_batch_stats = True
    t.total_steps = total_steps
    t.schedule = ConfigDict(
        dict(name="warmup_cosine", base_lr=base_lr, warmup_steps=max(1, total_steps // 10), warmup_lr=base_lr / 10)
    )
    if balance == "loss":
        config.model.box_head.class_weighting = weighting
        config.model.box_head.class_balance_beta = beta
    else:
        config.data.sampling = "repeat_factor"
        config.data.repeat_power = 1.0
        config.data.repeat_threshold = 1.0
