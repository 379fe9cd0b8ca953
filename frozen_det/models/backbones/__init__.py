"""Backbone registry: build a backbone from `config.model.backbone`.

Fields and defaults: frozen_det.models.config.backbone_defaults (type resnet | resnet_rs |
efficientnet, depth, variant, freeze, adapters none | residual | film, num_classes,
init_checkpoint, bn_momentum, bn_epsilon, drop_path_rate, dtype, conv_impl). A partial section
(e.g. `{"freeze": "all"}`) is completed from those defaults; unknown fields are an error.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn

from frozen_det.models.config import complete_backbone
from frozen_det.models.freezing import frozen_param_patterns
from frozen_det.models.layers import conv_module, dtype_of


def build_backbone(cfg: Any) -> nn.Module:
    cfg = complete_backbone(cfg)
    common: dict[str, Any] = dict(
        freeze=cfg.freeze,
        adapters=cfg.adapters,
        bn_mode=cfg.bn_mode,
        num_classes=cfg.num_classes,
        dtype=dtype_of(cfg.dtype, "model.backbone.dtype"),
        conv=conv_module(cfg.conv_impl, "model.backbone.conv_impl"),
        remat=bool(cfg.remat),
    )
    for field in ("bn_momentum", "bn_epsilon", "dropout_rate"):
        if cfg[field] is not None:  # unset: the family's own default
            common[field] = cfg[field]
    if cfg.type in ("resnet", "resnet_rs"):
        from frozen_det.models.backbones.resnet import ResNet

        if cfg.drop_path_rate is not None:
            common["drop_path_rate"] = cfg.drop_path_rate
        variant = "rs" if cfg.type == "resnet_rs" else "v1.5"
        return ResNet(depth=int(cfg.depth), variant=variant, width=float(cfg.width), **common)
    from frozen_det.models.backbones.efficientnet import EfficientNet

    if cfg.drop_path_rate is not None:
        common["drop_connect_rate"] = cfg.drop_path_rate
    return EfficientNet(variant=str(cfg.variant), **common)


def backbone_frozen_patterns(cfg: Any, prefix: str = "") -> list[str]:
    """Path regexes of the frozen backbone parameters for this config (frozen_det.models.freezing)."""
    return frozen_param_patterns(complete_backbone(cfg).freeze, 4, prefix)


__all__ = ["build_backbone", "backbone_frozen_patterns"]
