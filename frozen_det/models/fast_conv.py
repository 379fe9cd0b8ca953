"""A drop-in `nn.Conv` that avoids XLA:CPU's slow convolution gradients and depthwise kernels.

Why: on XLA:CPU (jaxlib 0.10) the weight gradient of a convolution is emitted as another
convolution whose "kernel" is the whole output gradient (window = the feature map). Both of
XLA:CPU's convolution back-ends run that shape far slower than the forward convolution: the
default YNNPACK path 5-13x slower for 1x1 kernels, and 1.2-4x for 3x3 (worst on large maps:
a 3x3 256->256 convolution on a 2x128x128 FPN level runs its forward pass at ~270 GFLOP/s and
its weight gradient at ~44). The weight gradient is a sum over kernel taps,

    dW[i, j, :, :] = sum_{n, h, w} x_pad[n, s*h + i, s*w + j, :]^T g[n, h, w, :]

one [N*Ho*Wo, Cin]^T x [N*Ho*Wo, Cout] matrix product per tap (i, j) of the strided slice of
the padded input, which the dot back-end runs at full speed. Measured on this machine for the
FPN + RPN of a 512x512, batch-2 R50-FPN (`tools/bench_backbone.py --conv-split fpn`): 3x3
kernels 4.5x (P2), 3.2x (P3), 1.8x (P4) faster and equal within noise on the 16x16 and smaller
maps (~2-3 ms either way); 1x1 kernels 2-14x; all of them 3.1 s -> 0.69 s
(`--conv-split` does the same for ResNet-50's own convolutions). The input gradient and the
forward pass are always XLA's own (fast) convolutions.

Depthwise convolutions (feature groups = input channels = output channels, EfficientNet's
MBConv) are worse still on XLA:CPU: the forward pass runs at under 1 GFLOP/s and the weight
gradient 4-9x slower again. `depthwise_conv2d` writes one as kh*kw shifted multiply-adds of
the padded input, which XLA fuses into a single elementwise loop; JAX differentiates it into
shifted multiply-adds too (the weight gradient is a reduction per tap). Measured on this
machine for Lite0-sized layers (batch 4, 512 canvas): forward 1.5-2.5x and forward+backward
4-9x faster than XLA's grouped convolution (tools/bench_depthwise.py).

`Conv` takes the same arguments as `flax.linen.Conv` for 2-D convolutions (no dilation; feature
groups only as depthwise) and creates the same parameters (`kernel` [kh, kw, cin / groups,
cout], optional `bias` [cout]), so checkpoints move between the two unchanged. `conv2d` and
`depthwise_conv2d` are the functional forms.
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
    return lax.conv_general_dilated(
        x, kernel, strides, padding, dimension_numbers=_DIMENSION_NUMBERS, precision=precision
    )


@partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv2d(x, kernel, strides, padding, precision):
    return _conv(x, kernel, strides, padding, precision)


def _conv2d_fwd(x, kernel, strides, padding, precision):
    return _conv(x, kernel, strides, padding, precision), (x, kernel)


def _weight_grad_by_taps(x, g, kernel_hw, strides, padding, precision):
    """dW of a convolution as one x^T g product per kernel tap (module docstring): pad x like
    the forward pass; tap (i, j) reads the strided window of x that meets kernel entry (i, j)."""
    (pt, pb), (pl, pr) = padding
    if any((pt, pb, pl, pr)):
        x = lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), (pt, pb, 0), (pl, pr, 0), (0, 0, 0)))
    n, _, _, cin = x.shape
    _, ho, wo, cout = g.shape
    sh, sw = strides
    g = g.reshape(-1, cout)
    taps = []
    for i in range(kernel_hw[0]):
        for j in range(kernel_hw[1]):
            window = lax.slice(x, (0, i, j, 0), (n, i + sh * (ho - 1) + 1, j + sw * (wo - 1) + 1, cin), (1, sh, sw, 1))
            taps.append(
                lax.dot_general(
                    window.reshape(-1, cin),
                    g,
                    (((0,), (0,)), ((), ())),
                    precision=precision,
                    preferred_element_type=jnp.float32,
                )
            )
    dw = jnp.stack(taps).reshape(kernel_hw + (cin, cout))
    return dw.astype(g.dtype)


def _conv2d_bwd(strides, padding, precision, residuals, g):
    x, kernel = residuals
    # The input gradient is linear in g; linear_transpose emits XLA's own transposed
    # convolution without re-running the forward pass.
    (dx,) = jax.linear_transpose(lambda x_: _conv(x_, kernel, strides, padding, precision), x)(g)
    dw = _weight_grad_by_taps(x, g, kernel.shape[:2], strides, padding, precision)
    return dx, dw.astype(kernel.dtype)


_conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)


def _explicit_padding(padding, in_hw, kernel_hw, strides) -> Padding:
    if isinstance(padding, str):
        if padding.upper() not in ("SAME", "VALID"):
            raise ValueError(
                f"fast_conv supports padding 'SAME', 'VALID', an int or explicit "
                f"pairs, not {padding!r}; use flax.linen.Conv for it."
            )
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


def conv2d(
    x: jax.Array,
    kernel: jax.Array,
    strides: int | Sequence[int] = 1,
    padding: str | int | Sequence = "SAME",
    precision: Any = None,
) -> jax.Array:
    """NHWC x HWIO convolution with the per-tap weight gradient; `x` is [N, H, W, Cin]."""
    strides = _pair(strides, "strides")
    pads = _explicit_padding(padding, x.shape[1:3], kernel.shape[:2], strides)
    return _conv2d(x, kernel, strides, pads, precision)


def depthwise_conv2d(
    x: jax.Array, kernel: jax.Array, strides: int | Sequence[int] = 1, padding: str | int | Sequence = "SAME"
) -> jax.Array:
    """NHWC depthwise convolution, `kernel` [kh, kw, 1, C], as kh*kw shifted multiply-adds.

    Sums are accumulated in at least float32 (as XLA's convolutions do for bfloat16) and the
    result is cast back to the promoted input dtype. JAX's autodiff of the taps is the backward
    pass. Its cost: where a reduction follows (train-mode BatchNorm), XLA:CPU hands the
    multiply-adds to one YNNPACK fusion that reads every shifted tap from memory, so a
    fine-tuned Lite0 train step needs ~2.3x the temporary memory of XLA's convolution
    (tools/bench_depthwise.py prints both).
    """
    strides = _pair(strides, "strides")
    kh, kw, one, channels = kernel.shape
    if one != 1 or x.shape[-1] != channels:
        raise ValueError(
            f"depthwise_conv2d needs a [kh, kw, 1, C] kernel for C = {x.shape[-1]} "
            f"input channels, got kernel shape {kernel.shape}."
        )
    (pt, pb), (pl, pr) = _explicit_padding(padding, x.shape[1:3], (kh, kw), strides)
    out_dtype = jnp.result_type(x, kernel)
    acc_dtype = jnp.promote_types(out_dtype, jnp.float32)
    x = jnp.pad(x.astype(acc_dtype), ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    kernel = kernel.astype(acc_dtype)
    n, h, w, _ = x.shape
    sh, sw = strides
    ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
    if ho < 1 or wo < 1:
        raise ValueError(f"depthwise_conv2d: a {kh}x{kw} kernel does not fit the padded input {h}x{w}.")
    y = None
    for i in range(kh):
        for j in range(kw):
            tap = (
                lax.slice(x, (0, i, j, 0), (n, i + sh * (ho - 1) + 1, j + sw * (wo - 1) + 1, channels), (1, sh, sw, 1))
                * kernel[i, j, 0]
            )
            y = tap if y is None else y + tap
    return y.astype(out_dtype)


class Conv(nn.Module):
    """`flax.linen.Conv` for 2-D inputs [..., H, W, C], same parameters, faster on XLA:CPU."""

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
        if _pair(self.input_dilation, "input_dilation") != (1, 1) or _pair(self.kernel_dilation, "kernel_dilation") != (
            1,
            1,
        ):
            raise ValueError("fast_conv.Conv has no dilation; use flax.linen.Conv.")
        depthwise = self.feature_group_count != 1
        if depthwise and not self.feature_group_count == inputs.shape[-1] == self.features:
            raise ValueError(
                f"fast_conv.Conv supports feature groups only as a depthwise convolution "
                f"(feature_group_count = input channels = features), got feature_group_count="
                f"{self.feature_group_count}, {inputs.shape[-1]} input channels, features="
                f"{self.features}; use flax.linen.Conv."
            )
        kh, kw = _pair(self.kernel_size, "kernel_size")
        unbatched = inputs.ndim == 3
        if unbatched:
            inputs = inputs[None]
        if inputs.ndim < 4:
            raise ValueError(f"fast_conv.Conv expects [..., H, W, C] inputs, got shape {inputs.shape}.")
        batch_shape = inputs.shape[:-3]
        x = inputs.reshape((-1,) + inputs.shape[-3:])
        kernel = self.param(
            "kernel",
            self.kernel_init,
            (kh, kw, x.shape[-1] // self.feature_group_count, self.features),
            self.param_dtype,
        )
        bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype) if self.use_bias else None
        x, kernel, bias = promote_dtype(x, kernel, bias, dtype=self.dtype)
        if depthwise:
            y = depthwise_conv2d(x, kernel, self.strides, self.padding)
        else:
            y = conv2d(x, kernel, self.strides, self.padding, self.precision)
        if bias is not None:
            y = y + bias
        y = y.reshape(batch_shape + y.shape[1:])
        return y[0] if unbatched else y


__all__ = ["Conv", "conv2d", "depthwise_conv2d"]
