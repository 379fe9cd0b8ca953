"""Model factory: `config.model` -> a Flax module, with start-up validation of the config."""

from __future__ import annotations

import ml_collections

from frozen_det.models.backbones.common import num_frozen_stages

MODEL_TYPES = ("two_stage",)


def validate_model_config(config, num_data_classes: int | None = None) -> None:
    """Fails at start, naming the field, on values that would otherwise fail deep inside jit."""
    m = config.model
    if m.get("type", "two_stage") not in MODEL_TYPES:
        raise ValueError(f"config.model.type={m.type!r}: choose one of {MODEL_TYPES}.")
    from frozen_det.models.backbones import FAMILIES
    if m.backbone.type not in FAMILIES:
        raise ValueError(f"config.model.backbone.type={m.backbone.type!r}: choose one of {FAMILIES}.")
    try:
        num_frozen_stages(m.backbone.freeze, 4)
    except ValueError as e:
        raise ValueError(f"config.model.backbone.freeze: {e}") from None
    stride = 2 ** int(m.neck.max_level)
    canvas = int(config.data.canvas)
    if canvas % stride:
        raise ValueError(f"config.data.canvas={canvas} is not a multiple of 2^max_level={stride} "
                         f"(model.neck.max_level={m.neck.max_level}); use e.g. {canvas // stride * stride + stride}.")
    if num_data_classes is not None and int(m.num_classes) != num_data_classes + 1:
        raise ValueError(f"config.model.num_classes={m.num_classes} but the dataset has {num_data_classes} "
                         f"classes: set model.num_classes={num_data_classes + 1} (classes + background).")
    from frozen_det.models.detector import CLASS_LOSSES, CLASS_WEIGHTINGS
    if m.box_head.get("class_loss", "softmax") not in CLASS_LOSSES:
        raise ValueError(f"config.model.box_head.class_loss={m.box_head.class_loss!r}: choose one of {CLASS_LOSSES}.")
    if m.box_head.get("class_weighting", "none") not in CLASS_WEIGHTINGS:
        raise ValueError(f"config.model.box_head.class_weighting={m.box_head.class_weighting!r}: choose one of "
                         f"{CLASS_WEIGHTINGS}.")
    if m.mask.enabled and not config.data.get("with_masks", False):
        raise ValueError("config.model.mask.enabled=True needs config.data.with_masks=True.")


def trainable_mask(config, params):
    """The config's trainable partition of `params`: the backbone's freeze rules plus
    `train.trainable_only` (e.g. the LVIS second stage's classifier-only training)."""
    from frozen_det.models.backbones import backbone_frozen_patterns
    from frozen_det.training import partition
    train = config.get("train") or {}
    only = train.get("trainable_only") or None
    return partition.trainable_mask(
        params, frozen=backbone_frozen_patterns(config.model.backbone, prefix="backbone/"),
        trainable_only=list(only) if only else None)


def needs_class_statistics(model_config) -> bool:
    """Whether the model's training losses read the training split's class counts."""
    head = model_config.box_head
    return head.get("class_weighting", "none") != "none" or head.get("class_loss", "softmax") == "federated"


def build_model(model_config, class_statistics=None):
    """`class_statistics`: a frozen_det.data.class_stats.ClassStatistics of the training split,
    for the losses that need it (`needs_class_statistics`)."""
    from frozen_det.models.detector import TwoStageDetector
    frozen = (model_config if isinstance(model_config, ml_collections.FrozenConfigDict)
              else ml_collections.FrozenConfigDict(model_config))
    if class_statistics is None:
        return TwoStageDetector(frozen)
    return TwoStageDetector(frozen, class_instance_counts=tuple(int(n) for n in class_statistics.instance_counts),
                            class_image_counts=tuple(int(n) for n in class_statistics.image_counts))
