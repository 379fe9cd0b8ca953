"""Feature Pyramid Network as TF-Vision's `decoders.FPN` (docs/reference.md §2.3, §4.1, §7.2).

Input: ``{level: [B, H / 2**level, W / 2**level, C_level]}`` from a backbone (int keys, e.g.
2..5 or 3..5; levels below `min_level` are ignored). Output: ``{level: [B, H / 2**level,
W / 2**level, num_filters]}`` for every level in ``min_level..max_level``.

The network (docs/reference.md §2.3):

* lateral 1x1 conv with bias on each backbone level ``min_level..backbone_max`` where
  ``backbone_max = min(max input level, max_level)``;
* top-down path: nearest x2 upsampling of the coarser merged map plus the lateral (sum);
* a 3x3 conv with bias on every merged level;
* extra levels ``backbone_max + 1..max_level``: 3x3 stride-2 conv (TF 'SAME' padding) on
  the previous output, preceded by the activation only from the second extra level on
  (so never in the paper's L2-6 FPN);
* BatchNorm on every output level, no output activation.

Initialisers (docs/reference.md §7.2): Keras-default ``VarianceScaling`` (scale 1, fan_in, truncated
normal) for every conv, biases 0. BatchNorm: TF-Vision detection defaults momentum 0.997
(flax and TF share the convention: ``stat = m * stat + (1 - m) * batch``), epsilon 1e-4;
batch statistics in training, moving statistics otherwise.

Parameter names follow TF-Vision's layer names (``lateral_{l}``, ``post_hoc_{l}``,
``coarser_{l}``, ``norm_{l}``) so that a weight converter is a rename.
"""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from frozen_det.models.backbones.common import activation_fn
from frozen_det.models.layers import DEFAULT_NORM, ModuleDef

# Keras' default initializer for `kernel_initializer='VarianceScaling'` (docs/reference.md §7.2).
FPN_KERNEL_INIT = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")


def nearest_upsample(x: jax.Array, scale: int, target_hw: tuple[int, int] | None = None) -> jax.Array:
    """Nearest-neighbour upsampling by an integer `scale` (each pixel repeated scale x scale).

    With `target_hw`, the result is cropped to that size: a backbone with TF 'SAME' padding
    makes a coarse level ceil(H / 2), so its upsampled copy can be one row/column too large
    when the canvas is not a multiple of 2**max_level. For such canvases the reference
    fails; on multiples (every config of the paper) the crop is a no-op.
    """
    if scale > 1:
        x = jnp.repeat(jnp.repeat(x, scale, axis=1), scale, axis=2)
    if target_hw is not None:
        h, w = target_hw
        if x.shape[1] < h or x.shape[2] < w:
            raise ValueError(
                f"cannot upsample a {x.shape[1:3]} map by {scale} to {target_hw}: "
                "the pyramid levels do not halve consistently."
            )
        x = x[:, :h, :w]
    return x


def as_level_dict(features: Mapping[Any, jax.Array]) -> dict[int, jax.Array]:
    """{level: array} with int keys (accepts TF-style '3' string keys too)."""
    return {int(k): v for k, v in features.items()}


class FPN(nn.Module):
    """TF-Vision FPN (docs/reference.md §2.3). `__call__(features, train)` -> {level: map}."""

    min_level: int = 2
    max_level: int = 6
    num_filters: int = 256
    activation: str = "swish"
    dtype: Any = jnp.float32
    conv: ModuleDef = nn.Conv  # frozen_det.models.layers: chosen once by config.model.conv_impl
    norm: ModuleDef = DEFAULT_NORM

    def _conv(self, kernel: int, strides: int, name: str) -> nn.Module:
        return self.conv(
            self.num_filters,
            (kernel, kernel),
            (strides, strides),
            padding="SAME",
            use_bias=True,
            kernel_init=FPN_KERNEL_INIT,
            bias_init=nn.initializers.zeros,
            dtype=self.dtype,
            name=name,
        )

    @nn.compact
    def __call__(self, features: Mapping[int, jax.Array], train: bool = False) -> dict[int, jax.Array]:
        feats_in = as_level_dict(features)
        if self.min_level > self.max_level:
            raise ValueError(f"FPN min_level={self.min_level} > max_level={self.max_level}.")
        if not feats_in or min(feats_in) > self.min_level:
            raise ValueError(
                f"FPN min_level={self.min_level} needs backbone levels from "
                f"{self.min_level} on; got levels {sorted(feats_in)}."
            )
        top = min(max(feats_in), self.max_level)
        missing = [l for l in range(self.min_level, top + 1) if l not in feats_in]
        if missing:
            raise ValueError(
                f"FPN needs backbone levels {self.min_level}..{top}; "
                f"levels {missing} are missing (got {sorted(feats_in)})."
            )

        lateral = {
            l: self._conv(1, 1, f"lateral_{l}")(feats_in[l].astype(self.dtype)) for l in range(self.min_level, top + 1)
        }
        merged = {top: lateral[top]}
        for l in range(top - 1, self.min_level - 1, -1):
            merged[l] = lateral[l] + nearest_upsample(merged[l + 1], 2, lateral[l].shape[1:3])
        out = {l: self._conv(3, 1, f"post_hoc_{l}")(merged[l]) for l in range(self.min_level, top + 1)}

        act = activation_fn(self.activation)
        for l in range(top + 1, self.max_level + 1):
            x = out[l - 1]
            if l > top + 1:  # activation only before the second and later extra levels
                x = act(x)
            out[l] = self._conv(3, 2, f"coarser_{l}")(x)

        return {
            l: self.norm(use_running_average=not train, dtype=self.dtype, name=f"norm_{l}")(out[l])
            for l in range(self.min_level, self.max_level + 1)
        }
