"""A drop-in `nn.Conv` whose weight gradient for 1x1 convolutions is a plain matrix product.

Why: on XLA:CPU (jaxlib 0.10) the weight gradient of a convolution is emitted as another
convolution whose "kernel" is the whole output gradient (window = the feature map). Both of
XLA:CPU's convolution back-ends run that shape far slower than the forward convolution: the
default YNNPACK path 5-10x slower for 1x1 kernels, Eigen 2-3x (tools/bench_backbone.py
measures it). For a 1x1 kernel the weight gradient is exactly

    dW[0, 0, i, o] = sum_{n, h, w} x[n, s*h, s*w, i] * g[n, h, w, o]

one [N*H*W, Cin]^T x [N*H*W, Cout] matrix product, which the dot back-end runs at full speed.
ResNet bottlenecks are two thirds 1x1 convolutions. Kernels larger than 1x1 keep XLA's own
weight gradient (an im2col product measured slower than it); the input gradient and the forward
pass are always XLA's.

`Conv` takes the same arguments as `flax.linen.Conv` for 2-D convolutions (no dilation, no
feature groups) and creates the same parameters (`kernel` [kh, kw, cin, cout], optional `bias`
[cout]), so checkpoints move between the two unchanged. `conv2d` is the functional form.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen.dtypes import promote_dtype
from jax import lax

_DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")
Padding = tuple[tuple[int, int], tuple[int, int]]


def _conv(x, kernel, strides, padding, precision):
    return lax.conv_general_dilated(x, kernel, strides, padding,
                                    dimension_numbers=_DIMENSION_NUMBERS, precision=precision)


@partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv2d(x, kernel, strides, padding, precision):
    return _conv(x, kernel, strides, padding, precision)


def _conv2d_fwd(x, kernel, strides, padding, precision):
    return _conv(x, kernel, strides, padding, precision), (x, kernel)


def _pointwise_weight_grad(x, g, strides, padding, precision):
    """dW of a 1x1 convolution: pad and subsample x like the forward pass, then x^T g."""
    (pt, pb), (pl, pr) = padding
    if any((pt, pb, pl, pr)):
        x = lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), (pt, pb, 0), (pl, pr, 0), (0, 0, 0)))
    sh, sw = strides
    _, ho, wo, cout = g.shape
    x = lax.slice(x, (0, 0, 0, 0), (x.shape[0], sh * (ho - 1) + 1, sw * (wo - 1) + 1, x.shape[3]),
                  (1, sh, sw, 1))
    dw = lax.dot_general(x.reshape(-1, x.shape[-1]), g.reshape(-1, cout),
                         (((0,), (0,)), ((), ())), precision=precision,
                         preferred_element_type=jnp.float32)
    return dw.astype(g.dtype)[None, None]


def _conv2d_bwd(strides, padding, precision, residuals, g):
    x, kernel = residuals
    # Both gradients are linear in g; linear_transpose emits XLA's own transposed convolutions
    # without re-running the forward pass.
    (dx,) = jax.linear_transpose(lambda x_: _conv(x_, kernel, strides, padding, precision), x)(g)
    if kernel.shape[:2] == (1, 1):
        dw = _pointwise_weight_grad(x, g, strides, padding, precision).astype(kernel.dtype)
    else:
        (dw,) = jax.linear_transpose(lambda k: _conv(x, k, strides, padding, precision), kernel)(g)
    return dx, dw


_conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)


def _explicit_padding(padding, in_hw, kernel_hw, strides) -> Padding:
    if isinstance(padding, str):
        if padding.upper() not in ("SAME", "VALID"):
            raise ValueError(f"fast_conv supports padding 'SAME', 'VALID', an int or explicit "
                             f"pairs, not {padding!r}; use flax.linen.Conv for it.")
        pads = lax.padtype_to_pads(in_hw, kernel_hw, strides, padding.upper())
    elif isinstance(padding, int):
        pads = [(padding, padding)] * 2
    else:
        pads = [(p, p) if isinstance(p, int) else tuple(p) for p in padding]
    if len(pads) != 2:
        raise ValueError(f"fast_conv is 2-D: padding {padding!r} must give two spatial dims.")
    return tuple((int(lo), int(hi)) for lo, hi in pads)


def _pair(v, name) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    v = tuple(int(i) for i in v)
    if len(v) != 2:
        raise ValueError(f"fast_conv is 2-D: {name}={v} must have two entries.")
    return v


def conv2d(x: jax.Array, kernel: jax.Array, strides: int | Sequence[int] = 1,
           padding: str | int | Sequence = "SAME", precision: Any = None) -> jax.Array:
    """NHWC x HWIO convolution with the fast 1x1 weight gradient; `x` is [N, H, W, Cin]."""
    strides = _pair(strides, "strides")
    pads = _explicit_padding(padding, x.shape[1:3], kernel.shape[:2], strides)
    return _conv2d(x, kernel, strides, pads, precision)


class Conv(nn.Module):
    """`flax.linen.Conv` for 2-D inputs [..., H, W, C], same parameters, faster 1x1 backward."""

    features: int
    kernel_size: int | Sequence[int]
    strides: int | Sequence[int] = 1
    padding: str | int | Sequence = "SAME"
    input_dilation: int | Sequence[int] = 1
    kernel_dilation: int | Sequence[int] = 1
    feature_group_count: int = 1
    use_bias: bool = True
    dtype: Any = None
    param_dtype: Any = jnp.float32
    precision: Any = None
    kernel_init: Any = nn.initializers.lecun_normal()
    bias_init: Any = nn.initializers.zeros_init()

    @nn.compact
    def __call__(self, inputs: jax.Array) -> jax.Array:
        if (_pair(self.input_dilation, "input_dilation") != (1, 1)
                or _pair(self.kernel_dilation, "kernel_dilation") != (1, 1)
                or self.feature_group_count != 1):
            raise ValueError("fast_conv.Conv has no dilation or feature groups; use flax.linen.Conv.")
        kh, kw = _pair(self.kernel_size, "kernel_size")
        unbatched = inputs.ndim == 3
        if unbatched:
            inputs = inputs[None]
        if inputs.ndim < 4:
            raise ValueError(f"fast_conv.Conv expects [..., H, W, C] inputs, got shape {inputs.shape}.")
        batch_shape = inputs.shape[:-3]
        x = inputs.reshape((-1,) + inputs.shape[-3:])
        kernel = self.param("kernel", self.kernel_init, (kh, kw, x.shape[-1], self.features),
                            self.param_dtype)
        bias = (self.param("bias", self.bias_init, (self.features,), self.param_dtype)
                if self.use_bias else None)
        x, kernel, bias = promote_dtype(x, kernel, bias, dtype=self.dtype)
        y = conv2d(x, kernel, self.strides, self.padding, self.precision)
        if bias is not None:
            y = y + bias
        y = y.reshape(batch_shape + y.shape[1:])
        return y[0] if unbatched else y


__all__ = ["Conv", "conv2d"]
