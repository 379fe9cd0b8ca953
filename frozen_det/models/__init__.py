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
    if m.mask.enabled and not config.data.get("with_masks", False):
        raise ValueError("config.model.mask.enabled=True needs config.data.with_masks=True.")


def build_model(model_config):
    from frozen_det.models.detector import TwoStageDetector
    frozen = (model_config if isinstance(model_config, ml_collections.FrozenConfigDict)
              else ml_collections.FrozenConfigDict(model_config))
    return TwoStageDetector(frozen)
