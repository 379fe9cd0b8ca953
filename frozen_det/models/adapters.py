"""Residual adapters (Rebuffi et al. 2017, "Learning multiple visual domains with residual
adapters"; Vasconcelos et al. 2022, Table 7 and Sec. 4.4).

A parallel adapter is a 1x1 convolution that runs beside a residual block's main branch, from
the block's input to its output width (with the block's stride), and whose output is added to
the block's residual sum. Its kernel is zero-initialised, so at step 0 the adapted network
computes exactly the pretrained function; it stays trainable when the block around it is
frozen (its parameters sit under the name `ADAPTER_NAME`, which the freeze rules exempt).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from frozen_det.models.freezing import ADAPTER_NAME


class ResidualAdapter(nn.Module):
    """1x1 (strided) convolution, zero-initialised, no bias, no normalisation."""

    features: int
    strides: int = 1
    dtype: Any = jnp.float32
    conv_cls: type[nn.Module] = nn.Conv  # the backbone's convolution (nn.Conv or fast_conv.Conv)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return self.conv_cls(
            self.features,
            (1, 1),
            strides=(self.strides, self.strides),
            use_bias=False,
            kernel_init=nn.initializers.zeros,
            dtype=self.dtype,
            name="conv",
        )(x)


def adapter(features: int, strides: int, dtype: Any, conv_cls: type[nn.Module] = nn.Conv) -> ResidualAdapter:
    """The adapter of the enclosing block, under the name the freeze rules recognise."""
    return ResidualAdapter(features, strides, dtype, conv_cls, name=ADAPTER_NAME)
