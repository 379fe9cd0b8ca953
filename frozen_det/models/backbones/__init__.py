"""Backbone registry: build a backbone from `config.model.backbone`.

Fields (ml_collections ConfigDict):
  type: "resnet" (v1.5, torchvision layout) | "resnet_rs" | "efficientnet"
  depth: ResNet depth (18/34/50/101/152/200; ResNet-RS 50/101/152/200)
  variant: EfficientNet variant ("b0".."b7", "lite0".."lite4")
  freeze: "none" | "all" | k  (stem + first k stages)
  adapters: bool (residual adapters, zero-initialised)
  num_classes: ImageNet head size, or None for no head
  bn_momentum, bn_epsilon: None keeps the family default
  drop_path_rate: stochastic depth / drop-connect (None keeps the family default)
  dtype: "float32" | "bfloat16" activations (parameters stay float32)
  conv_impl: "xla" | "fast" (fast_conv.Conv: weight gradients as per-tap dots, depthwise
             convolutions as shifted multiply-adds; same parameters, much faster on XLA:CPU)
  init_checkpoint: a converted checkpoint directory, "package:efficientnet_lite0", or ""
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from frozen_det.models.backbones.common import frozen_param_patterns

FAMILIES = ("resnet", "resnet_rs", "efficientnet")


def _get(cfg, name, default=None):
    value = cfg.get(name, default) if hasattr(cfg, "get") else getattr(cfg, name, default)
    return default if value is None else value


def _dtype(name: str):
    table = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
    if name not in table:
        raise ValueError(f"model.backbone.dtype={name!r}: use 'float32' or 'bfloat16'.")
    return table[name]


def build_backbone(cfg: Any) -> nn.Module:
    family = _get(cfg, "type")
    common: dict[str, Any] = dict(
        freeze=_get(cfg, "freeze", "none"),
        adapters=bool(_get(cfg, "adapters", False)),
        num_classes=cfg.get("num_classes", 1000) if hasattr(cfg, "get") else 1000,
        dtype=_dtype(_get(cfg, "dtype", "float32")),
    )
    for field in ("bn_momentum", "bn_epsilon", "drop_path_rate"):
        if _get(cfg, field) is not None:
            common[field] = _get(cfg, field)
    if family in ("resnet", "resnet_rs"):
        from frozen_det.models.backbones.resnet import ResNet
        return ResNet(depth=int(_get(cfg, "depth", 50)), variant="rs" if family == "resnet_rs" else "v1.5",
                      conv_impl=str(_get(cfg, "conv_impl", "xla")), **common)
    if family == "efficientnet":
        from frozen_det.models.backbones.efficientnet import EfficientNet
        if "drop_path_rate" in common:
            common["drop_connect_rate"] = common.pop("drop_path_rate")
        return EfficientNet(variant=str(_get(cfg, "variant", "b0")),
                            conv_impl=str(_get(cfg, "conv_impl", "xla")), **common)
    raise ValueError(f"model.backbone.type={family!r} is unknown; choose one of {FAMILIES}.")


def backbone_frozen_patterns(cfg: Any, prefix: str = "") -> list[str]:
    """Path regexes of the frozen backbone parameters for this config (see common.py)."""
    return frozen_param_patterns(_get(cfg, "freeze", "none"), 4, prefix)


__all__ = ["build_backbone", "backbone_frozen_patterns", "FAMILIES"]
