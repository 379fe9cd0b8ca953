"""Necks (multi-level decoders): build one from `config.model.neck`.

Both take ``{level: backbone map}`` (int keys, strides 2**level) and ``train`` and return
``{level: [B, H / 2**level, W / 2**level, C]}`` for ``min_level..max_level``.

Fields and defaults (frozen_det.models.config.neck_defaults; the reference's, docs/reference.md
§2.3 / §5.3): type "fpn" | "nasfpn", min_level / max_level (FPN 2..6 in the paper; NAS-FPN must
be 3..7), num_filters 256, activation "swish", bn_momentum / bn_epsilon 0.997 / 1e-4 (flax
momentum == TF momentum), dtype (unset: the model's); NAS-FPN also num_repeats 5, block "conv"
(TF-Vision, C = num_filters) | "bottleneck" (Copy-Paste codebase, C = 4 * num_filters), combine
"attention" (the searched cell's sum / attention mix) | "sum", drop_connect_rate (bottleneck
residual branches; needs rngs={"dropout": key} when training).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from frozen_det.models.config import complete_neck
from frozen_det.models.layers import ModuleDef, batch_norm, dtype_of
from frozen_det.models.necks.fpn import FPN
from frozen_det.models.necks.nasfpn import NASFPN, NASFPN_BLOCK_SPECS, BlockSpec, cell_wiring, global_attention

__all__ = [
    "FPN",
    "NASFPN",
    "NASFPN_BLOCK_SPECS",
    "BlockSpec",
    "build_neck",
    "cell_wiring",
    "global_attention",
    "neck_output_channels",
]


def build_neck(cfg: Any, dtype: Any = None, conv: ModuleDef = nn.Conv) -> nn.Module:
    """FPN or NASFPN from `config.model.neck` (a partial section is completed from the defaults;
    unknown fields are an error). `dtype` (the model-wide activation dtype) overrides the
    section's; `conv` is the model's convolution (frozen_det.models.layers.conv_module)."""
    cfg = complete_neck(cfg)
    if dtype is None:
        dtype = dtype_of(cfg.dtype, "model.neck.dtype") if cfg.dtype else jnp.float32
    common = dict(
        min_level=cfg.min_level,
        max_level=cfg.max_level,
        num_filters=cfg.num_filters,
        activation=cfg.activation,
        dtype=dtype,
        conv=conv,
        norm=batch_norm(cfg.bn_momentum, cfg.bn_epsilon),
    )
    if cfg.type == "fpn":
        return FPN(**common)
    neck = NASFPN(
        num_repeats=cfg.num_repeats,
        block=cfg.block,
        combine=cfg.combine,
        drop_connect_rate=cfg.drop_connect_rate,
        **common,
    )
    neck.wiring()  # fail at build time on bad levels / block / combine values
    return neck


def neck_output_channels(cfg: Any) -> int:
    """Channels of every output level of the neck `cfg` builds (1024 for bottleneck NAS-FPN)."""
    neck = build_neck(cfg)
    return neck.output_channels if isinstance(neck, NASFPN) else neck.num_filters
