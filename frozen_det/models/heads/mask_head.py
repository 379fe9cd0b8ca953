"""Mask head (docs/reference.md §2.10): 4 x [3x3 conv -> BN -> act], a 2x2 stride-2
deconvolution -> BN -> act, and a 1x1 conv to per-class mask logits."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from frozen_det.models.backbones.common import activation_fn
from frozen_det.models.layers import DEFAULT_NORM, ModuleDef


class MaskHead(nn.Module):
    num_classes: int
    num_convs: int = 4
    num_filters: int = 256
    use_batch_norm: bool = True
    activation: str = "swish"
    dtype: Any = jnp.float32
    conv: ModuleDef = nn.Conv  # frozen_det.models.layers: chosen once by config.model.conv_impl
    norm: ModuleDef = DEFAULT_NORM

    @nn.compact
    def __call__(self, roi_features: jax.Array, classes: jax.Array, train: bool) -> jax.Array:
        """roi_features [B, N, S, S, C], classes [B, N] -> mask logits [B, N, 2S, 2S] of each
        ROI's class (the ground-truth class in training, the predicted one at inference)."""
        act = activation_fn(self.activation)
        batch, num = roi_features.shape[:2]
        x = roi_features.reshape((batch * num,) + roi_features.shape[2:]).astype(self.dtype)
        init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")

        def norm(name):
            return self.norm(use_running_average=not train, dtype=self.dtype, name=name)

        conv_cls = self.conv
        for i in range(self.num_convs):
            x = conv_cls(self.num_filters, (3, 3), padding="SAME", kernel_init=init, dtype=self.dtype, name=f"conv{i}")(
                x
            )
            x = act(norm(f"conv{i}_bn")(x) if self.use_batch_norm else x)
        x = nn.ConvTranspose(
            self.num_filters, (2, 2), strides=(2, 2), kernel_init=init, dtype=self.dtype, name="deconv"
        )(x)
        x = act(norm("deconv_bn")(x) if self.use_batch_norm else x)
        logits = conv_cls(self.num_classes, (1, 1), kernel_init=init, dtype=self.dtype, name="mask_logits")(x)
        size = logits.shape[1]
        logits = logits.reshape(batch, num, size, size, self.num_classes).astype(jnp.float32)
        return jnp.take_along_axis(logits, classes[:, :, None, None, None], axis=-1)[..., 0]
