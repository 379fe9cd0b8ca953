"""Necks (multi-level decoders): build one from `config.model.neck`.

Both take ``{level: backbone map}`` (int keys, strides 2**level) and ``train`` and return
``{level: [B, H / 2**level, W / 2**level, C]}`` for ``min_level..max_level``.

Fields (ml_collections ConfigDict; defaults are the reference's, tfmg.md 2.3 / 5.3):
  type: "fpn" | "nasfpn"
  min_level, max_level: output levels (FPN 2..6 in the paper; NAS-FPN must be 3..7)
  num_filters: 256
  activation: "swish"
  bn_momentum, bn_epsilon: 0.997, 1e-4 (flax momentum == TF momentum)
  dtype: "float32" | "bfloat16" activations (parameters stay float32); `build_neck(...,
    dtype=...)` overrides it, e.g. with the model-wide dtype
  (`build_neck(..., conv_impl=...)`: "xla" | "fast" convolutions, the model-wide
    `config.model.conv_impl`; see frozen_det.models.fast_conv)
  nasfpn only:
    num_repeats: 5
    block: "conv" (TF-Vision, C = num_filters) | "bottleneck" (Copy-Paste codebase,
      C = 4 * num_filters)
    combine: "attention" (the searched cell's sum / attention mix) | "sum" (all sums)
    drop_connect_rate: 0.0 (bottleneck residual branches; needs rngs={"dropout": key} when
      training)
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from frozen_det.models.necks.fpn import FPN
from frozen_det.models.necks.nasfpn import (NASFPN, NASFPN_BLOCK_SPECS, BlockSpec, cell_wiring,
                                            global_attention)

__all__ = ["FPN", "NASFPN", "NASFPN_BLOCK_SPECS", "BlockSpec", "build_neck", "cell_wiring",
           "global_attention", "neck_output_channels"]

_COMMON = ("min_level", "max_level", "num_filters", "activation", "bn_momentum", "bn_epsilon")
_FIELDS = {
    "fpn": _COMMON,
    "nasfpn": _COMMON + ("num_repeats", "block", "combine", "drop_connect_rate"),
}
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def _as_dict(cfg: Any) -> dict[str, Any]:
    if hasattr(cfg, "to_dict"):
        return dict(cfg.to_dict())
    return dict(cfg)


def _dtype(value: Any):
    if value is None:
        return jnp.float32
    if isinstance(value, str):
        if value not in _DTYPES:
            raise ValueError(f"model.neck.dtype={value!r}: use 'float32' or 'bfloat16'.")
        return _DTYPES[value]
    return value


def build_neck(cfg: Any, dtype: Any = None, conv_impl: str = "xla") -> nn.Module:
    """FPN or NASFPN from `config.model.neck`; unset (None) fields keep the module defaults.

    Unknown fields are an error (a misspelt field would otherwise be silently ignored).
    """
    fields = _as_dict(cfg)
    kind = fields.pop("type", None)
    if kind not in _FIELDS:
        raise ValueError(f"model.neck.type={kind!r} is unknown; choose one of {sorted(_FIELDS)}.")
    neck_dtype = _dtype(dtype if dtype is not None else fields.pop("dtype", None))
    fields.pop("dtype", None)
    unknown = sorted(set(fields) - set(_FIELDS[kind]))
    if unknown:
        raise ValueError(f"model.neck has fields {unknown} that a {kind!r} neck does not take; "
                         f"accepted: {sorted(_FIELDS[kind]) + ['dtype', 'type']}.")
    kwargs = {k: v for k, v in fields.items() if v is not None}
    module = FPN if kind == "fpn" else NASFPN
    neck = module(dtype=neck_dtype, conv_impl=conv_impl, **kwargs)
    if kind == "nasfpn":
        neck.wiring()  # fail at build time on bad levels / block / combine values
    return neck


def neck_output_channels(cfg: Any) -> int:
    """Channels of every output level of the neck `cfg` builds (1024 for bottleneck NAS-FPN)."""
    neck = build_neck(cfg)
    return neck.output_channels if isinstance(neck, NASFPN) else neck.num_filters
