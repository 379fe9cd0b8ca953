"""fast_conv.Conv is a drop-in flax.linen.Conv: same parameters, outputs and gradients,
for dense and depthwise convolutions."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from frozen_det.models import fast_conv
from frozen_det.models.layers import conv_module

CASES = [  # kernel, strides, padding, use_bias
    ((1, 1), 1, "SAME", False),
    ((1, 1), 2, "SAME", False),
    ((1, 1), 2, "VALID", True),
    ((1, 1), 1, ((1, 0), (0, 1)), True),
    ((3, 3), 1, "SAME", False),
    ((3, 3), 2, "SAME", True),
    ((3, 3), 2, ((1, 1), (1, 1)), False),
    ((7, 7), 2, ((3, 3), (3, 3)), False),
    ((2, 3), (2, 1), "VALID", True),
]


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.abs(a - b).max() / max(np.abs(b).max(), 1e-12)


def _assert_matches_nn_conv(kwargs, x, rng, tol):
    """Same parameter shapes and dtypes, outputs, input gradient and parameter gradients as
    flax.linen.Conv built from the same arguments."""
    ref, ours = nn.Conv(**kwargs), fast_conv.Conv(**kwargs)
    params = ref.init(jax.random.key(0), x)
    ours_params = ours.init(jax.random.key(0), x)
    assert jax.tree.map(lambda a: (a.shape, a.dtype), params) == jax.tree.map(lambda a: (a.shape, a.dtype), ours_params)
    if kwargs.get("use_bias", True):  # a non-zero bias, so its gradient path is exercised too
        params = jax.tree.map(
            lambda a: a + 0.1 * jnp.arange(a.size, dtype=a.dtype).reshape(a.shape) if a.ndim == 1 else a, params
        )
    y_ref, y_ours = ref.apply(params, x), ours.apply(params, x)
    assert y_ref.shape == y_ours.shape
    assert _rel(y_ours, y_ref) <= tol
    cotangent = jnp.asarray(rng.normal(size=y_ref.shape).astype(np.float32))

    def grads(module):
        return jax.grad(lambda p, x: jnp.sum(module.apply(p, x) * cotangent), argnums=(0, 1))(params, x)

    (gp_ref, gx_ref), (gp_ours, gx_ours) = grads(ref), grads(ours)
    assert _rel(gx_ours, gx_ref) <= tol
    for path, g in jax.tree_util.tree_leaves_with_path(gp_ref):
        mine = dict(jax.tree_util.tree_leaves_with_path(gp_ours))[path]
        assert _rel(mine, g) <= tol, path


@pytest.mark.parametrize("kernel,strides,padding,use_bias", CASES)
def test_outputs_and_gradients_match_nn_conv(kernel, strides, padding, use_bias):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2, 11, 13, 6)).astype(np.float32))
    kwargs = dict(features=5, kernel_size=kernel, strides=strides, padding=padding, use_bias=use_bias)
    _assert_matches_nn_conv(kwargs, x, rng, tol=1e-4)


DEPTHWISE_CASES = [  # kernel, strides, padding, use_bias
    ((3, 3), 1, "SAME", False),
    ((3, 3), 2, "SAME", True),
    ((5, 5), 1, "SAME", False),
    ((5, 5), 2, "SAME", False),
    ((3, 3), 1, "VALID", True),
    ((3, 5), (2, 1), ((1, 2), (0, 2)), False),
]


@pytest.mark.parametrize("kernel,strides,padding,use_bias", DEPTHWISE_CASES)
def test_depthwise_outputs_and_gradients_match_grouped_nn_conv(kernel, strides, padding, use_bias):
    rng = np.random.default_rng(2)
    # Odd sizes: stride-2 'SAME' padding is asymmetric (TF's rule, which EfficientNet needs).
    x = jnp.asarray(rng.normal(size=(2, 11, 14, 6)).astype(np.float32))
    kwargs = dict(
        features=6, kernel_size=kernel, strides=strides, padding=padding, feature_group_count=6, use_bias=use_bias
    )
    _assert_matches_nn_conv(kwargs, x, rng, tol=1e-5)


def test_depthwise_bfloat16_accumulates_in_float32():
    # 49 taps of bfloat16 products summed in bfloat16 would lose ~3 significant bits.
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=(1, 16, 16, 8)).astype(np.float32))
    kernel = jnp.asarray(rng.normal(size=(7, 7, 1, 8)).astype(np.float32))
    ours = fast_conv.depthwise_conv2d(x.astype(jnp.bfloat16), kernel.astype(jnp.bfloat16))
    assert ours.dtype == jnp.bfloat16
    exact = jax.lax.conv_general_dilated(
        x.astype(jnp.bfloat16).astype(jnp.float32),
        kernel.astype(jnp.bfloat16).astype(jnp.float32),
        (1, 1),
        "SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=8,
        precision="highest",
    )
    # Only the final rounding to bfloat16 remains: half an ulp, 2^-8 relative.
    assert float(jnp.max(jnp.abs(ours.astype(jnp.float32) - exact) / (jnp.abs(exact) + 1e-3))) <= 2**-8


def test_leading_batch_dims_and_unbatched_inputs():
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(3, 2, 8, 8, 4)).astype(np.float32))
    ref, ours = nn.Conv(7, (1, 1), 2), fast_conv.Conv(7, (1, 1), 2)
    params = ref.init(jax.random.key(0), x)
    assert _rel(ours.apply(params, x), ref.apply(params, x)) <= 1e-5
    assert _rel(ours.apply(params, x[0, 0]), ref.apply(params, x[0, 0])) <= 1e-5


def test_bfloat16_compute_keeps_float32_params_and_grads():
    x = jnp.ones((2, 8, 8, 4), jnp.float32)
    module = fast_conv.Conv(8, (1, 1), dtype=jnp.bfloat16)
    params = module.init(jax.random.key(0), x)
    assert params["params"]["kernel"].dtype == jnp.float32
    y = module.apply(params, x)
    assert y.dtype == jnp.bfloat16
    g = jax.grad(lambda p: module.apply(p, x).astype(jnp.float32).sum())(params)
    assert g["params"]["kernel"].dtype == jnp.float32
    expected = jax.grad(lambda p: nn.Conv(8, (1, 1), dtype=jnp.bfloat16).apply(p, x).astype(jnp.float32).sum())(params)
    assert _rel(g["params"]["kernel"], expected["params"]["kernel"]) <= 1e-2


def test_jits_once():
    traces = []
    module = fast_conv.Conv(4, (1, 1), 2)
    x = jnp.ones((2, 8, 8, 3))
    params = module.init(jax.random.key(0), x)

    @jax.jit
    def loss_and_grad(p, x):
        traces.append(1)
        return jax.value_and_grad(lambda p: jnp.sum(module.apply(p, x) ** 2))(p)

    for i in range(3):
        jax.block_until_ready(loss_and_grad(params, x + i))
    assert len(traces) == 1


def test_unsupported_options_are_clear_errors():
    x = jnp.ones((1, 8, 8, 3))
    with pytest.raises(ValueError, match="no dilation"):
        fast_conv.Conv(4, (3, 3), kernel_dilation=2).init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="only as a depthwise convolution"):
        fast_conv.Conv(6, (3, 3), feature_group_count=3).init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="use one of"):
        conv_module("cudnn")
    with pytest.raises(ValueError, match="CIRCULAR"):
        fast_conv.Conv(4, (3, 3), padding="CIRCULAR").init(jax.random.key(0), x)
