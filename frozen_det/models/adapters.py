"""Adapters: small trainable modules inside a frozen backbone's blocks, each starting as the
identity so that at step 0 the adapted network computes exactly the pretrained function.

* Residual adapters (Rebuffi et al. 2017, "Learning multiple visual domains with residual
  adapters"; Vasconcelos et al. 2022, Table 7 and Sec. 4.4): a parallel 1x1 convolution that
  runs beside a residual block's main branch, from the block's input to its output width (with
  the block's stride), and whose output is added to the block's residual sum. Its kernel is
  zero-initialised.
* FiLM (Perez et al. 2018, "FiLM: Visual Reasoning with a General Conditioning Layer"): a
  per-channel scale and shift of a block's output, initialised to scale 1 and shift 0. Proper
  Reuse (Vasconcelos et al. 2022, Sec. 4.5) conjectures that such feature-wise transformations
  might serve like the residual adapters. Here the scale and shift are free parameters (FiLM's
  generator network, which predicts them from a conditioning input, has no counterpart in
  detection).

Both stay trainable when the block around them is frozen: their parameters sit under the name
`ADAPTER_NAME`, which the freeze rules exempt. `model.backbone.adapters` picks the kind
(frozen_det.models.freezing.ADAPTER_KINDS).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from frozen_det.models.freezing import ADAPTER_NAME

# The initial value of every adapter parameter, by leaf name: the constants that make each
# adapter the identity. Checkpoint loaders fill adapters, which no classification checkpoint
# has, from this table without running the model (frozen_det.checkpoints.efficientnet_lite.
# conversion_target).
IDENTITY_INIT = {"kernel": 0.0, "scale": 1.0, "shift": 0.0}


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
            kernel_init=nn.initializers.constant(IDENTITY_INIT["kernel"]),
            dtype=self.dtype,
            name="conv",
        )(x)


class FiLM(nn.Module):
    """``x * scale + shift`` per channel (the last axis), float32 parameters, identity at init."""

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        channels = (x.shape[-1],)
        scale = self.param("scale", nn.initializers.constant(IDENTITY_INIT["scale"]), channels, jnp.float32)
        shift = self.param("shift", nn.initializers.constant(IDENTITY_INIT["shift"]), channels, jnp.float32)
        return x * scale.astype(self.dtype) + shift.astype(self.dtype)


def adapter(features: int, strides: int, dtype: Any, conv_cls: type[nn.Module] = nn.Conv) -> ResidualAdapter:
    """The residual adapter of the enclosing block, under the name the freeze rules recognise."""
    return ResidualAdapter(features, strides, dtype, conv_cls, name=ADAPTER_NAME)


def film(dtype: Any) -> FiLM:
    """The FiLM layer of the enclosing block, under the name the freeze rules recognise."""
    return FiLM(dtype, name=ADAPTER_NAME)
