"""EfficientNet B0-B7 / Lite0-4: architecture arithmetic, shapes, and the freeze switch.

Equivalence with keras.applications and the real Lite0 weights: tests/checkpoints/
test_efficientnet_checkpoints.py. Variables here are random, built from `jax.eval_shape`
(`model.init` of a whole EfficientNet takes ~10 s to compile on CPU; this takes none).
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from frozen_det.models import freezing
from frozen_det.models.backbones import efficientnet as E
from frozen_det.models.backbones.efficientnet import EfficientNet
from frozen_det.models.layers import conv_module

# Channels at levels 2..5 (TPU codebase endpoints reduction_2..5) and ImageNet-head parameter
# counts, which equal keras.applications' trainable parameter counts for B0/B7 and the 4.65 M
# of the packaged Lite0 .pth.
LEVEL_CHANNELS = {
    "b0": (24, 40, 112, 320),
    "b3": (32, 48, 136, 384),
    "b7": (48, 80, 224, 640),
    "lite0": (24, 40, 112, 320),
    "lite4": (32, 56, 160, 448),
}
PARAM_COUNTS = {"b0": 5_288_548, "b7": 66_347_960, "lite0": 4_652_008}


def _shapes(model, size=64):
    return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3))))


def _random_variables(model, seed=0, size=64):
    """He-scaled kernels, BN affine near identity and non-trivial running statistics."""
    rng = np.random.default_rng(seed)
    flat = traverse_util.flatten_dict(_shapes(model, size))
    out = {}
    for path, leaf in flat.items():
        name = path[-1]
        if "adapter" in path:
            value = np.zeros(leaf.shape)
        elif name == "kernel":
            fan_in = np.prod(leaf.shape[:-1])
            value = rng.normal(0, np.sqrt(1.0 / fan_in), leaf.shape)
        elif name == "scale":
            value = rng.uniform(0.5, 1.0, leaf.shape)
        elif name == "var":
            value = rng.uniform(0.5, 2.0, leaf.shape)
        else:  # bias, mean
            value = rng.normal(0, 0.1, leaf.shape)
        out[path] = jnp.asarray(value, leaf.dtype)
    return traverse_util.unflatten_dict(out)


def _without_adapters(variables):
    flat = traverse_util.flatten_dict(variables)
    return traverse_util.unflatten_dict({k: v for k, v in flat.items() if "adapter" not in k})


def test_unknown_variant_lists_the_variants():
    with pytest.raises(ValueError, match=r"b0.*b7.*lite0.*lite4"):
        E.variant_config("b9")
    with pytest.raises(ValueError, match="unknown EfficientNet variant 'resnet50'"):
        _shapes(EfficientNet("resnet50"))


def test_tf_rounding_rules():
    # round_filters: multiple of 8, never more than 10% below the scaled width.
    assert [E.round_filters(f, 1.2) for f in (32, 16, 24, 40, 80, 112, 192, 320, 1280)] == [
        40,
        24,
        32,
        48,
        96,
        136,
        232,
        384,
        1536,
    ]
    assert E.round_filters(16, 1.1) == 16 and E.round_filters(24, 1.1) == 24  # B2 keeps these
    assert [E.round_repeats(r, 3.1) for r in (1, 2, 2, 3, 3, 4, 1)] == [4, 7, 7, 10, 10, 13, 4]
    assert len(E.block_specs("b7")) == 55 and len(E.block_specs("b0")) == 16
    # Lite: first and last groups keep their single repeat; stem and head are not scaled.
    lite4 = E.block_specs("lite4")
    assert len(lite4) == 30 and lite4[0].name == "block1a" and lite4[1].name == "block2a"
    assert lite4[-1].name == "block7a" and lite4[-2].name == "block6h"
    assert E.stem_filters("lite4") == 32 and E.head_filters("lite4") == 1280
    assert E.stem_filters("b7") == 64 and E.head_filters("b7") == 2560
    # SE from the block's input width; Lite has none.
    b0 = {s.name: s for s in E.block_specs("b0")}
    assert b0["block2a"].se_filters == 4 and b0["block2b"].se_filters == 6
    assert all(s.se_filters == 0 for s in lite4)
    # Drop-connect grows linearly with the global block index.
    rates = [s.drop_rate for s in E.block_specs("b0")]
    np.testing.assert_allclose(rates, 0.2 * np.arange(16) / 16)


def test_stage_grouping_by_output_stride():
    groups = {}
    for spec in E.block_specs("b3"):
        groups.setdefault(spec.stage, set()).add(int(spec.name[5]))
    assert groups == {1: {1, 2}, 2: {3}, 3: {4, 5}, 4: {6, 7}}


@pytest.mark.parametrize("variant", sorted(LEVEL_CHANNELS))
def test_feature_shapes_without_compute(variant):
    model = EfficientNet(variant)
    variables = _shapes(model, 96)
    features, logits = jax.eval_shape(
        lambda v: model.apply(v, jnp.zeros((2, 96, 96, 3)), return_logits=True), variables
    )
    assert sorted(features) == [2, 3, 4, 5]
    for level, channels in zip((2, 3, 4, 5), LEVEL_CHANNELS[variant]):
        size = 96 // 2**level
        assert features[level].shape == (2, size, size, channels), (variant, level)
    assert logits.shape == (2, 1000)
    assert E.level_channels(variant) == dict(zip((2, 3, 4, 5), LEVEL_CHANNELS[variant]))
    if variant in PARAM_COUNTS:
        assert sum(x.size for x in jax.tree_util.tree_leaves(variables["params"])) == PARAM_COUNTS[variant]
    # Odd sizes follow TF 'SAME': ceil division at every stride-2 layer.
    features = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((1, 97, 75, 3))), variables)
    assert features[5].shape[1:3] == (4, 3)


def test_parameter_naming_and_no_head_without_classes():
    params = _shapes(EfficientNet("b0"))["params"]
    assert set(params) == {"stem", "stage1", "stage2", "stage3", "stage4", "head_conv", "head_bn", "classifier"}
    assert set(params["stage1"]) == {"block1a", "block2a", "block2b"}
    assert set(params["stage1"]["block2a"]) == {
        "expand_conv",
        "expand_bn",
        "depthwise_conv",
        "depthwise_bn",
        "se_reduce",
        "se_expand",
        "project_conv",
        "project_bn",
    }
    assert params["stage1"]["block2a"]["depthwise_conv"]["kernel"].shape == (3, 3, 1, 96)
    assert jnp.float32 == params["stem"]["conv"]["kernel"].dtype
    # The shared freeze rules select exactly the stem and first k stages, never adapters.
    flat = ["/".join(k) for k in traverse_util.flatten_dict(_shapes(EfficientNet("b0", adapters=True))["params"])]
    patterns = freezing.frozen_param_patterns(2, EfficientNet.NUM_STAGES)
    frozen = {p for p in flat if any(re.match(r, p) for r in patterns)}
    assert frozen == {p for p in flat if p.split("/")[0] in ("stem", "stage1", "stage2") and "/adapter/" not in p}
    assert any("/adapter/" in p for p in flat if p.startswith("stage1/"))
    headless = EfficientNet("b0", num_classes=None)
    variables = _shapes(headless)
    assert set(variables["params"]) == {"stem", "stage1", "stage2", "stage3", "stage4"}
    assert set(variables["batch_stats"]) == {"stem", "stage1", "stage2", "stage3", "stage4"}
    with pytest.raises(ValueError, match="num_classes"):
        jax.eval_shape(lambda v: headless.apply(v, jnp.zeros((1, 64, 64, 3)), return_logits=True), variables)


def test_bfloat16_activations_float32_params():
    model = EfficientNet("lite0", dtype=jnp.bfloat16)
    variables = _shapes(model)
    assert {x.dtype for x in jax.tree_util.tree_leaves(variables)} == {jnp.dtype(jnp.float32)}
    features = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((1, 64, 64, 3))), variables)
    assert features[5].dtype == jnp.bfloat16


def _stats_changed(model, variables, x):
    _, updates = jax.jit(
        lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(1)})
    )(variables, x)
    return {
        part: not all(
            np.array_equal(a, b)
            for a, b in zip(
                jax.tree_util.tree_leaves(variables["batch_stats"][part]),
                jax.tree_util.tree_leaves(updates["batch_stats"][part]),
            )
        )
        for part in variables["batch_stats"]
    }


@pytest.mark.parametrize(
    "freeze, expected",
    [
        # The head exists (num_classes=1000) but a features-only call does not run it.
        ("all", {"stem": False, "stage1": False, "stage2": False, "stage3": False, "stage4": False, "head_bn": False}),
        (2, {"stem": False, "stage1": False, "stage2": False, "stage3": True, "stage4": True, "head_bn": False}),
    ],
)
def test_frozen_parts_keep_their_batch_stats(freeze, expected):
    model = EfficientNet("b0", freeze=freeze)
    variables = _random_variables(model)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 64, 64, 3)), jnp.float32)
    assert _stats_changed(model, variables, x) == expected


def test_frozen_backbone_in_train_mode_is_the_inference_function():
    """freeze='all': inference BN and no drop-connect even with train=True, and no gradient."""
    model = EfficientNet("lite0", freeze="all", num_classes=None)
    variables = _random_variables(model)
    x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 64, 64, 3)), jnp.float32)

    def loss(x, v, train):
        f = model.apply(v, x, train=train, mutable=["batch_stats"], rngs={"dropout": jax.random.key(0)})[0]
        return sum(jnp.sum(f[level] ** 2) for level in f)

    train_loss, (grad, var_grads) = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)), static_argnums=2)(
        x, variables, True
    )
    eval_loss = jax.jit(loss, static_argnums=2)(x, variables, False)
    assert float(train_loss) == pytest.approx(float(eval_loss), rel=1e-6)
    # stop_gradient after every frozen part: nothing reaches the image or any weight.
    assert float(jnp.abs(grad).max()) == 0.0
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree_util.tree_leaves(var_grads))

    # Positive control: the same weights unfrozen do drop connections in training.
    free = EfficientNet("lite0", num_classes=None)
    run = jax.jit(
        lambda rng: free.apply(variables, x, train=True, mutable=["batch_stats"], rngs={"dropout": rng})[0][5]
    )
    assert not np.allclose(run(jax.random.key(0)), run(jax.random.key(1)))


def test_adapters_start_as_identity_and_stay_trainable_when_frozen():
    adapted = EfficientNet("b0", freeze="all", adapters=True)
    variables = _random_variables(adapted)
    plain = EfficientNet("b0", freeze="all")
    x = jnp.asarray(np.random.default_rng(2).normal(size=(1, 64, 64, 3)), jnp.float32)
    fa, la = jax.jit(lambda v: adapted.apply(v, x, return_logits=True))(variables)
    fp, lp = jax.jit(lambda v: plain.apply(v, x, return_logits=True))(_without_adapters(variables))
    for level in (2, 3, 4, 5):
        assert float(jnp.abs(fa[level] - fp[level]).max()) <= 1e-6
    assert float(jnp.abs(la - lp).max()) <= 1e-6
    # Every MBConv block has one, from its input width to its output width and stride.
    adapters = [k for k in traverse_util.flatten_dict(variables["params"]) if "adapter" in k]
    assert len(adapters) == len(E.block_specs("b0"))
    assert variables["params"]["stage2"]["block3a"]["adapter"]["conv"]["kernel"].shape == (1, 1, 24, 40)

    # Gradients: adapters receive them inside the frozen backbone, the stem (cut by
    # stop_gradient: nothing trainable below it) does not. Level 2 keeps the backward small.
    def loss(params):
        f = adapted.apply({"params": params, "batch_stats": variables["batch_stats"]}, x, train=True)
        return jnp.sum(f[2] ** 2)

    grads = traverse_util.flatten_dict(jax.jit(jax.grad(loss))(variables["params"]))
    assert all(float(jnp.abs(g).max()) == 0.0 for k, g in grads.items() if k[0] == "stem")
    assert all(float(jnp.abs(g).max()) > 0.0 for k, g in grads.items() if k[0] == "stage1" and "adapter" in k)


@pytest.mark.slow
def test_fast_conv_impl_is_the_same_function_and_gradient():
    # Lite0 (ReLU6, no SE) with adapters: depthwise, 1x1 and adapter convolutions all switch.
    slow = EfficientNet("lite0", num_classes=None, adapters=True, drop_connect_rate=0.0)
    fast = EfficientNet("lite0", num_classes=None, adapters=True, drop_connect_rate=0.0, conv=conv_module("fast"))
    variables = _random_variables(slow)
    assert jax.tree.structure(_shapes(slow)) == jax.tree.structure(_shapes(fast))
    x = jnp.asarray(np.random.default_rng(4).normal(size=(2, 64, 64, 3)), jnp.float32)

    def loss(model):
        def f(params):
            out, _ = model.apply({**variables, "params": params}, x, train=True, mutable=["batch_stats"])
            return sum(jnp.sum(out[level] ** 2) for level in (3, 5))

        return f

    v_slow, g_slow = jax.jit(jax.value_and_grad(loss(slow)))(variables["params"])
    v_fast, g_fast = jax.jit(jax.value_and_grad(loss(fast)))(variables["params"])
    np.testing.assert_allclose(v_fast, v_slow, rtol=1e-4)
    # Some train-mode BN gradients are sums that cancel to float noise (~1e-5 of the largest
    # gradient); their absolute tolerance follows the overall gradient scale.
    scale = max(float(np.abs(a).max()) for a in jax.tree.leaves(g_slow))
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(g_slow), jax.tree.leaves(g_fast)):
        np.testing.assert_allclose(
            b, a, rtol=1e-3, atol=1e-3 * float(np.abs(a).max()) + 1e-5 * scale, err_msg=jax.tree_util.keystr(path)
        )
