"""Necks: FPN and NAS-FPN (conv and bottleneck) against docs/reference.md §2.3, §4.1, §5.3.

Parameter counts use jax.eval_shape at the paper's canvases (no compute). Numerics are checked
against independent re-implementations written below from the reference's description (plain
lax convs, literal transcription of the reference's per-cell bookkeeping), on 64-128 px inputs
with 8-16 filters.
"""

from __future__ import annotations

import re

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax import lax

from frozen_det.models.layers import batch_norm, conv_module
from frozen_det.models.necks import FPN, NASFPN, build_neck, cell_wiring, global_attention
from frozen_det.models.necks.nasfpn import BottleneckBlock, NodeConfig, NodeWiring, _Node

S = jax.ShapeDtypeStruct
KEY = jax.random.key(0)
RESNET_CHANNELS = {2: 256, 3: 512, 4: 1024, 5: 2048}
EFFB7_CHANNELS = {2: 48, 3: 80, 4: 224, 5: 640}  # EfficientNet-B7 reduction_2..5 endpoints


def count(tree) -> int:
    return int(sum(x.size for x in jax.tree_util.tree_leaves(tree)))


def shapes(canvas, channels, batch=1):
    return {l: S((batch, canvas // 2**l, canvas // 2**l, c), jnp.float32) for l, c in channels.items()}


def normal(shape, seed=1):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def random_features(canvas, channels, batch=2, seed=1):
    return {l: normal((batch, canvas // 2**l, canvas // 2**l, c), seed + l) for l, c in channels.items()}


def param_paths(tree) -> list[str]:
    return ["/".join(str(p.key) for p in path) for path, _ in jax.tree_util.tree_leaves_with_path(tree)]


def random_variables(module, inputs, seed=3):
    """Variables of `module` with random values (kernels ~ N(0, 1 / fan_in), non-zero biases,
    random BN scales and statistics), so that a wrong wire shows. Shapes come from
    jax.eval_shape: a real init compiles a random-number kernel per parameter shape, which is
    most of the cost of a small test on CPU."""
    shape_tree = jax.eval_shape(module.init, KEY, inputs)
    rng = np.random.default_rng(seed)

    def fill(path, x):
        name = str(path[-1].key)
        if name == "kernel":
            value = rng.normal(size=x.shape) / np.sqrt(np.prod(x.shape[:-1]))
        elif name == "var":
            value = rng.uniform(0.5, 2.0, size=x.shape)
        elif name == "scale":
            value = rng.uniform(0.5, 1.5, size=x.shape)
        else:  # bias, mean
            value = 0.2 * rng.normal(size=x.shape)
        return jnp.asarray(value, x.dtype)

    return jax.tree_util.tree_map_with_path(fill, shape_tree)


# ----------------------------------------------------------------------- reference pieces


def ref_conv(p, x, stride=1):
    y = lax.conv_general_dilated(
        x,
        p["kernel"],
        (stride, stride),
        "SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=lax.Precision.HIGHEST,
    )
    return y + p["bias"] if "bias" in p else y


def ref_bn(p, s, x, eps=1e-4):
    return (x - s["mean"]) / jnp.sqrt(s["var"] + eps) * p["scale"] + p["bias"]


def ref_max_pool(x, s):
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, s, s, 1), (1, s, s, 1), "SAME")


def ref_upsample(x, s):
    return jnp.repeat(jnp.repeat(x, s, axis=1), s, axis=2)


def close(a, b, tol=2e-4):
    np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), rtol=tol, atol=tol)


# ======================================================================= parameter counts


def test_fpn_parameter_count_matches_tfmg():
    """docs/reference.md §4.1 FPN L2-6 on ResNet C2-C5: laterals 984,064 + 4 x 590,080 + P6 590,080 +
    5 BN (gamma/beta 2,560) = 3,937,024 trainable; + 2,560 moving statistics = 3,939,584."""
    v = jax.eval_shape(FPN(2, 6, 256).init, KEY, shapes(1024, RESNET_CHANNELS))
    assert count(v["params"]) == 3_937_024
    assert count(v["params"]) + count(v["batch_stats"]) == 3_939_584


def test_nasfpn_parameter_count_matches_tfmg():
    """docs/reference.md §4.1 NAS-FPN (5 x 7 nodes, 256, L3-7, inputs 512/1024/2048): input 1x1 convs
    918,272 + 35 x 590,080 + 38 BN = 21,590,528 trainable; 21,609,984 total."""
    v = jax.eval_shape(NASFPN().init, KEY, shapes(1024, RESNET_CHANNELS))
    assert count(v["params"]) == 21_590_528
    assert count(v["params"]) + count(v["batch_stats"]) == 21_609_984
    # TF-Vision's cell never needs a resampling conv: all maps have 256 channels.
    assert not [p for p in param_paths(v["params"]) if "resample" in p]


@pytest.mark.slow  # EfficientNet-B7 at 1280 px: ~60 s even abstract
def test_bottleneck_nasfpn_parameter_count_effb7():
    """Copy-Paste codebase NAS-FPN (bottleneck, sums, 5 repeats, 256) on EfficientNet-B7
    L3-L5 (80 / 224 / 640 ch) at 1280 px. Our count, term by term:

    * input 1x1 convs with bias (80 + 224 + 640) * 256 + 3 * 256 = 242,432; 3 BN(256);
    * 35 bottleneck nodes: 1x1 256x256 + 3x3 256x256 + 1x1 256x1024 + projection 1x1
      256x1024 (no biases) = 1,179,648 each, 41,287,680; BN over 256+256+1024+1024 channels;
    * resampling 1x1 1024->256 convs with bias (262,400 each) + BN(256): one per read of a
      1024-channel node, i.e. 10 in the first cell (its inputs have 256 channels) and 16 in
      each later cell (14 node inputs + the 2 unconsumed same-level adds) = 74.

    Trainable 242,432 + 1,536 + 41,287,680 + 179,200 + 74 * 262,912 = 61,166,336 (61.17 M);
    with BN moving statistics (218,624) 61,384,960 (61.38 M).

    docs/reference.md §5.3 estimates "NAS-FPN(bottleneck) ~ 61.4 M" and speaks of "77 such convs". The
    61.4 M agrees with our total including BN statistics (61.38 M; 0.4 % above our trainable
    count). The 77 is a miscount: the TPU code's bookkeeping (cell_wiring, checked in
    test_cell_wiring_matches_spec_table) gives 74, and 3 more convs would put the total at
    62.2 M, away from the 61.4 M estimate.
    """
    neck = NASFPN(block="bottleneck", combine="sum", drop_connect_rate=0.2)
    inputs = shapes(1280, EFFB7_CHANNELS)
    out, v = jax.eval_shape(neck.init_with_output, KEY, inputs)
    assert count(v["params"]) == 61_166_336
    assert count(v["params"]) + count(v["batch_stats"]) == 61_384_960
    resample_convs = [p for p in param_paths(v["params"]) if re.search(r"resample_\w+/conv/kernel$", p)]
    assert len(resample_convs) == 74
    assert len([p for p in resample_convs if p.startswith("cell0/")]) == 10
    assert {l: o.shape for l, o in out.items()} == {l: (1, 1280 // 2**l, 1280 // 2**l, 1024) for l in range(3, 8)}
    assert neck.output_channels == 1024


# ======================================================================= FPN numerics


def ref_fpn(variables, feats, min_level, max_level, act=jax.nn.silu):
    """docs/reference.md §2.3 FPN from its description."""
    p, s = variables["params"], variables["batch_stats"]
    top = min(max(feats), max_level)
    lat = {l: ref_conv(p[f"lateral_{l}"], feats[l]) for l in range(min_level, top + 1)}
    merged = {top: lat[top]}
    for l in range(top - 1, min_level - 1, -1):
        merged[l] = lat[l] + ref_upsample(merged[l + 1], 2)
    out = {l: ref_conv(p[f"post_hoc_{l}"], merged[l]) for l in range(min_level, top + 1)}
    for l in range(top + 1, max_level + 1):
        x = out[l - 1] if l == top + 1 else act(out[l - 1])
        out[l] = ref_conv(p[f"coarser_{l}"], x, stride=2)
    return {l: ref_bn(p[f"norm_{l}"], s[f"norm_{l}"], out[l]) for l in out}


@pytest.mark.parametrize("min_level,max_level", [(2, 6), (3, 7)])
def test_fpn_matches_reference_description(min_level, max_level):
    channels = {2: 8, 3: 16, 4: 24, 5: 32}
    feats = random_features(128, channels)
    fpn = FPN(min_level, max_level, num_filters=16)
    v = random_variables(fpn, feats)
    out = fpn.apply(v, feats)
    assert sorted(out) == list(range(min_level, max_level + 1))
    for l, x in out.items():
        assert x.shape == (2, 128 // 2**l, 128 // 2**l, 16) and x.dtype == jnp.float32
    want = ref_fpn(v, feats, min_level, max_level)
    for l in out:
        close(out[l], want[l])
    names = set(v["params"])
    assert ("lateral_2" in names) == (min_level == 2)  # levels below min_level are ignored


def test_fpn_top_down_propagates():
    channels = {2: 8, 3: 16, 4: 24, 5: 32}
    feats = random_features(128, channels)
    fpn = FPN(2, 6, num_filters=16)
    v = random_variables(fpn, feats)
    apply = lambda f: fpn.apply(v, f)  # noqa: E731  (eager: reuses the ops compiled above)
    base = apply(feats)
    changed = apply({**feats, 5: feats[5] + 1.0})
    assert float(jnp.max(jnp.abs(changed[2] - base[2]))) > 1e-3  # C5 reaches P2
    changed = apply({**feats, 2: feats[2] + 1.0})
    for l in (3, 4, 5, 6):  # nothing flows bottom-up
        close(changed[l], base[l], tol=0)


def test_fpn_initialisers_and_batch_norm_momentum():
    """Initialisers (docs/reference.md §7.2): Keras VarianceScaling (fan_in, truncated normal) kernels,
    zero biases. One train step moves the moving mean by (1 - 0.997) of the batch mean (the
    TF and flax conventions agree)."""
    feats = random_features(64, {5: 16})
    fpn = FPN(5, 5, num_filters=16)
    v = fpn.init(jax.random.key(0, impl="unsafe_rbg"), feats)
    p = v["params"]
    assert not np.any(p["lateral_5"]["bias"]) and not np.any(p["post_hoc_5"]["bias"])
    k, std = np.asarray(p["post_hoc_5"]["kernel"]), np.sqrt(1.0 / (9 * 16))
    assert abs(k.std() - std) < 0.1 * std
    assert np.abs(k).max() <= 2 * std / 0.87962566 + 1e-6  # truncated at 2 sigma
    np.testing.assert_array_equal(v["batch_stats"]["norm_5"]["mean"], 0.0)
    _, upd = fpn.apply(v, feats, train=True, mutable=["batch_stats"])
    pre = ref_conv(v["params"]["post_hoc_5"], ref_conv(v["params"]["lateral_5"], feats[5]))
    close(upd["batch_stats"]["norm_5"]["mean"], 0.003 * jnp.mean(pre, axis=(0, 1, 2)), tol=1e-5)


# ======================================================================= NAS-FPN wiring

SPEC_TABLE = [  # docs/reference.md §2.3, transcribed independently of the module
    (4, "attention", (1, 3), False),
    (4, "sum", (1, 5), False),
    (3, "sum", (0, 6), True),
    (4, "sum", (6, 7), True),
    (5, "attention", (7, 8), True),
    (7, "attention", (6, 9), True),
    (6, "attention", (9, 10), True),
]


def test_cell_wiring_matches_spec_table():
    nodes, outputs = cell_wiring(3, 7)
    assert [(n.level, n.combine, n.inputs, n.is_output) for n in nodes] == SPEC_TABLE
    # Unconsumed same-level features added to output nodes: input L5 (2) into the L5 node and
    # input L7 (4) into the L7 node; L6 (3) is read by node 0, L3/L4 inputs by nodes 2/0.
    assert [n.adds for n in nodes] == [(), (), (), (), (2,), (4,), ()]
    assert outputs == {3: 7, 4: 8, 5: 9, 7: 10, 6: 11}
    sum_nodes, _ = cell_wiring(3, 7, sum_only=True)
    assert all(n.combine == "sum" for n in sum_nodes)
    assert isinstance(nodes[0], NodeWiring)


def test_nasfpn_rejects_other_level_ranges():
    with pytest.raises(ValueError, match="min_level=3, max_level=7"):
        cell_wiring(3, 5)
    with pytest.raises(ValueError, match="min_level=3, max_level=7"):
        NASFPN(min_level=2, max_level=6).wiring()


def test_global_attention_formula():
    rng = np.random.default_rng(0)
    coarser = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)
    finer = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)
    gate = 1.0 / (1.0 + np.exp(-coarser.max(axis=(1, 2), keepdims=True)))
    close(global_attention(jnp.asarray(coarser), jnp.asarray(finer)), coarser + finer * gate, tol=1e-6)
    # One sample, one channel by hand: max 2 -> gate sigmoid(2).
    c = jnp.array([[[[1.0], [2.0]], [[0.0], [-1.0]]]])
    f = jnp.full((1, 2, 2, 1), 3.0)
    want = np.array([[1.0, 2.0], [0.0, -1.0]]) + 3.0 / (1.0 + np.exp(-2.0))
    close(global_attention(c, f)[0, :, :, 0], want, tol=1e-6)


def ref_nasfpn(variables, feats, num_filters, num_repeats, block, sum_only, act=jax.nn.silu):
    """The reference's NAS-FPN forward (TF-Vision / tensorflow/tpu `_build_feature_pyramid`),
    transcribed from SPEC_TABLE with its own bookkeeping, in inference mode."""
    P, S_ = variables["params"], variables["batch_stats"]

    def resample(p, s, x, level, target):
        if x.shape[-1] != num_filters:
            x = ref_bn(p["bn"], s["bn"], ref_conv(p["conv"], x))
        if level < target:
            x = ref_max_pool(x, 2 ** (target - level))
        elif level > target:
            x = ref_upsample(x, 2 ** (level - target))
        return x

    def bottleneck(p, s, x):
        shortcut = ref_bn(p["proj_bn"], s["proj_bn"], ref_conv(p["proj_conv"], x))
        y = act(ref_bn(p["bn1"], s["bn1"], ref_conv(p["conv1"], x)))
        y = act(ref_bn(p["bn2"], s["bn2"], ref_conv(p["conv2"], y)))
        y = ref_bn(p["bn3"], s["bn3"], ref_conv(p["conv3"], y))
        return act(y + shortcut)

    xs = []
    for level in range(3, 8):
        if level in feats:
            name = f"input_l{level}"
            xs.append(resample(P.get(name), S_.get(name), feats[level], level, level))
        else:
            xs.append(ref_max_pool(xs[-1], 2))
    for r in range(num_repeats):
        cp, cs = P[f"cell{r}"], S_[f"cell{r}"]
        levels, used = list(range(3, 8)), [0] * 5
        for k, (level, combine, (a, b), is_output) in enumerate(SPEC_TABLE):
            np_, ns = cp[f"node{k}"], cs[f"node{k}"]
            used[a] += 1
            used[b] += 1
            xa = resample(np_.get("resample_in0"), ns.get("resample_in0"), xs[a], levels[a], level)
            xb = resample(np_.get("resample_in1"), ns.get("resample_in1"), xs[b], levels[b], level)
            if sum_only or combine == "sum":
                y = xa + xb
            else:
                c, f = (xa, xb) if levels[a] >= levels[b] else (xb, xa)
                y = c + f * jax.nn.sigmoid(jnp.max(c, axis=(1, 2), keepdims=True))
            if is_output:
                for j in range(len(xs)):
                    if used[j] == 0 and levels[j] == level:
                        used[j] += 1
                        y = y + resample(
                            np_.get(f"resample_add{j}"), ns.get(f"resample_add{j}"), xs[j], levels[j], level
                        )
            y = act(y)
            if block == "conv":
                y = ref_bn(np_["bn"], ns["bn"], ref_conv(np_["conv"], y))
            else:
                y = bottleneck(np_["block"], ns["block"], y)
            xs.append(y)
            levels.append(level)
            used.append(0)
        xs = [xs[levels.index(l, len(levels) - 5)] for l in range(3, 8)]
    return dict(zip(range(3, 8), xs))


@pytest.mark.parametrize("block,combine", [("conv", "attention"), ("bottleneck", "sum")])
def test_nasfpn_matches_reference_forward(block, combine):
    channels = {2: 8, 3: 16, 4: 24, 5: 32}
    feats = random_features(128, channels)
    neck = NASFPN(num_filters=8, num_repeats=2, block=block, combine=combine)
    v = random_variables(neck, feats)
    out = neck.apply(v, feats)
    c = 8 if block == "conv" else 32
    assert {l: x.shape for l, x in out.items()} == {l: (2, 128 // 2**l, 128 // 2**l, c) for l in range(3, 8)}
    want = ref_nasfpn(v, feats, 8, 2, block, combine == "sum")
    for l in range(3, 8):
        close(out[l], want[l], tol=5e-4)


def test_nasfpn_initialisers():
    """TF-Vision (block='conv'): He-normal fan_out (untruncated) convs, zero biases. TPU
    bottleneck: no conv biases, TF1 variance_scaling (fan_in, truncated normal); its 1x1
    resampling convs are Glorot-uniform with bias. Checked on single nodes (a whole-neck init
    costs seconds of compilation on CPU)."""
    key = jax.random.key(0, impl="unsafe_rbg")
    feats = [normal((1, 8, 8, 64)), normal((1, 4, 4, 256))]

    def node(block, init):
        return _Node(
            NodeWiring(4, "sum", (0, 1), (), False),
            NodeConfig(64, block, "swish", 0.0, init, jnp.float32, flax.linen.Conv, batch_norm(0.997, 1e-4)),
        )

    p = node("conv", NASFPN().resample_kernel_init).init(key, feats, [3, 4], (4, 4), False)["params"]
    k, std = np.asarray(p["conv"]["kernel"]), np.sqrt(2.0 / (9 * 64))
    assert abs(k.std() - std) < 0.05 * std and np.abs(k).max() > 2.5 * std  # untruncated
    assert not np.any(p["conv"]["bias"])
    assert set(p) == {"conv", "bn", "resample_in1"}  # 256 -> 64 channels: resampled through a conv
    k = np.asarray(p["resample_in1"]["conv"]["kernel"])
    assert abs(k.std() - np.sqrt(2.0 / 64)) < 0.05 * np.sqrt(2.0 / 64)

    glorot = NASFPN(block="bottleneck").resample_kernel_init
    p = node("bottleneck", glorot).init(key, feats, [3, 4], (4, 4), False)["params"]
    limit = np.sqrt(6.0 / (256 + 64))
    k = np.asarray(p["resample_in1"]["conv"]["kernel"])
    assert 0.95 * limit < np.abs(k).max() <= limit
    assert abs(k.std() - limit / np.sqrt(3)) < 0.05 * limit
    assert not np.any(p["resample_in1"]["conv"]["bias"])
    b = p["block"]
    assert set(b) == {"conv1", "bn1", "conv2", "bn2", "conv3", "bn3", "proj_conv", "proj_bn"}
    assert all(set(b[c]) == {"kernel"} for c in b if "conv" in c)  # no biases
    k, std = np.asarray(b["conv2"]["kernel"]), np.sqrt(1.0 / (9 * 64))
    assert abs(k.std() - std) < 0.05 * std and np.abs(k).max() <= 2 * std / 0.87962566 + 1e-6
    np.testing.assert_array_equal(b["bn3"]["scale"], 1.0)  # gamma not zero-initialised


# ======================================================================= modes and dtypes


@pytest.mark.parametrize(
    "make",
    [
        lambda dt: FPN(2, 6, 16, dtype=dt),
        lambda dt: NASFPN(num_filters=8, num_repeats=1, dtype=dt),
        lambda dt: NASFPN(num_filters=8, num_repeats=1, block="bottleneck", combine="sum", dtype=dt),
    ],
)
def test_bfloat16_activations_keep_float32_params(make):
    inputs = shapes(128, {2: 8, 3: 16, 4: 24, 5: 32})
    neck = make(jnp.bfloat16)
    v = jax.eval_shape(neck.init, KEY, inputs)
    assert {x.dtype for x in jax.tree_util.tree_leaves(v)} == {jnp.dtype(jnp.float32)}
    out = jax.eval_shape(lambda v, x: neck.apply(v, x, train=True, mutable=["batch_stats"]), v, inputs)
    assert {x.dtype for x in out[0].values()} == {jnp.dtype(jnp.bfloat16)}
    assert {x.dtype for x in jax.tree_util.tree_leaves(out[1])} == {jnp.dtype(jnp.float32)}


def test_fpn_bfloat16_close_to_float32():
    feats = random_features(64, {5: 16})
    v = random_variables(FPN(5, 5, 16), feats)
    f32 = FPN(5, 5, 16).apply(v, feats)
    bf16 = FPN(5, 5, 16, dtype=jnp.bfloat16).apply(v, feats)
    assert bf16[5].dtype == jnp.bfloat16
    for l in f32:
        np.testing.assert_allclose(np.asarray(bf16[l], np.float32), np.asarray(f32[l]), atol=0.1, rtol=0.05)


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda impl: FPN(2, 6, 8, conv=conv_module(impl)), id="fpn", marks=pytest.mark.slow),
        pytest.param(lambda impl: NASFPN(num_filters=8, num_repeats=1, conv=conv_module(impl)), id="nasfpn"),
        pytest.param(
            lambda impl: NASFPN(
                num_filters=4, num_repeats=1, block="bottleneck", combine="sum", conv=conv_module(impl)
            ),
            id="nasfpn_bottleneck",
            marks=pytest.mark.slow,
        ),
    ],
)
def test_fast_conv_impl_is_the_same_function_and_gradient(make):
    """conv_impl="fast" swaps every convolution for fast_conv.Conv: the same parameters, the
    same outputs and (up to float summation order) the same gradients in train mode."""
    feats = random_features(64, {2: 8, 3: 16, 4: 24, 5: 32})
    xla_neck, fast_neck = make("xla"), make("fast")
    v = random_variables(xla_neck, feats)
    assert jax.tree.structure(jax.eval_shape(fast_neck.init, KEY, feats)) == jax.tree.structure(v)
    jaxprs = {
        impl: str(jax.make_jaxpr(lambda v, f: neck.apply(v, f))(v, feats))
        for impl, neck in (("xla", xla_neck), ("fast", fast_neck))
    }
    # every convolution of the fast neck sits in fast_conv's custom VJP, none of the other's
    assert jaxprs["fast"].count("custom_vjp_call") == jaxprs["xla"].count("conv_general_dilated") > 0
    assert "custom_vjp_call" not in jaxprs["xla"]
    cotangents = {l: normal(s.shape, seed=10 + l) for l, s in jax.eval_shape(lambda: xla_neck.apply(v, feats)).items()}

    def loss(neck, params, feats):
        out, _ = neck.apply({**v, "params": params}, feats, train=True, mutable=["batch_stats"])
        return sum(jnp.sum(out[l] * cotangents[l]) for l in out)

    grads = {
        impl: jax.grad(loss, argnums=(1, 2))(neck, v["params"], feats)
        for impl, neck in (("xla", xla_neck), ("fast", fast_neck))
    }
    np.testing.assert_allclose(loss(fast_neck, v["params"], feats), loss(xla_neck, v["params"], feats), rtol=1e-6)
    for path, want in jax.tree_util.tree_leaves_with_path(grads["xla"]):
        got = dict(jax.tree_util.tree_leaves_with_path(grads["fast"]))[path]
        scale = float(jnp.max(jnp.abs(want))) + 1e-6
        np.testing.assert_allclose(
            np.asarray(got) / scale, np.asarray(want) / scale, atol=2e-5, err_msg=jax.tree_util.keystr(path)
        )


@pytest.mark.parametrize("make", [lambda: FPN(3, 7, 8), lambda: NASFPN(num_filters=8, num_repeats=1)])
def test_train_updates_batch_stats_and_eval_does_not(make):
    feats = random_features(128, {3: 16, 4: 24, 5: 32})
    neck = make()
    v = random_variables(neck, feats)
    v["params"] = jax.tree_util.tree_map_with_path(  # BN offsets 0, as at init
        lambda path, x: (
            jnp.zeros_like(x) if re.search("bn|norm", str(path[-2].key)) and str(path[-1].key) == "bias" else x
        ),
        v["params"],
    )
    out_train, upd = neck.apply(v, feats, train=True, mutable=["batch_stats"])
    out, same = neck.apply(v, feats, train=False, mutable=["batch_stats"])
    moved = jax.tree_util.tree_map(lambda a, b: bool(jnp.any(a != b)), v["batch_stats"], upd["batch_stats"])
    assert all(jax.tree_util.tree_leaves(moved))  # every BN's statistics move
    jax.tree_util.tree_map(np.testing.assert_array_equal, v["batch_stats"], same["batch_stats"])
    # Train mode normalises with batch statistics: each output channel's batch mean is the BN
    # offset (0 at init); in inference mode (moving stats mean 0, var 1) it is not.
    assert float(jnp.max(jnp.abs(jnp.mean(out_train[3], axis=(0, 1, 2))))) < 1e-4
    assert float(jnp.max(jnp.abs(jnp.mean(out[3], axis=(0, 1, 2))))) > 1e-2


def test_bottleneck_drop_connect():
    """Drop-connect in training keeps (scaled by 1 / keep) or drops each sample's residual
    branch; inference is the plain block; training needs the "dropout" rng stream."""
    x = normal((16, 4, 4, 8))
    block = BottleneckBlock(filters=4, drop_connect_rate=0.5)
    v = random_variables(block, x)
    p = v["params"]

    def bn_train(name, y):  # batch statistics (biased variance), as BN in training
        m, var = jnp.mean(y, axis=(0, 1, 2)), jnp.var(y, axis=(0, 1, 2))
        return (y - m) / jnp.sqrt(var + 1e-4) * p[name]["scale"] + p[name]["bias"]

    act = jax.nn.silu
    shortcut = bn_train("proj_bn", ref_conv(p["proj_conv"], x))
    y = act(bn_train("bn1", ref_conv(p["conv1"], x)))
    y = act(bn_train("bn2", ref_conv(p["conv2"], y)))
    y = bn_train("bn3", ref_conv(p["conv3"], y))
    kept, dropped = act(shortcut + y / 0.5), act(shortcut)
    seen = set()
    out, _ = block.apply(v, x, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(1)})
    for i in range(x.shape[0]):
        is_kept = bool(jnp.allclose(out[i], kept[i], atol=1e-4))
        assert is_kept or bool(jnp.allclose(out[i], dropped[i], atol=1e-4)), i
        seen.add(is_kept)
    assert seen == {True, False}
    infer = block.apply(v, x)
    close(infer, BottleneckBlock(filters=4, drop_connect_rate=0.0).apply(v, x), tol=1e-6)
    with pytest.raises(Exception, match="dropout"):
        jax.eval_shape(lambda v: block.apply(v, x, train=True, mutable=["batch_stats"]), v)
    # The NAS-FPN passes its rate to every node's block.
    neck = NASFPN(num_filters=4, num_repeats=1, block="bottleneck", combine="sum", drop_connect_rate=0.2)
    feats = shapes(128, {3: 8, 4: 8, 5: 8})
    v = jax.eval_shape(neck.init, KEY, feats)
    with pytest.raises(Exception, match="dropout"):
        jax.eval_shape(lambda v, f: neck.apply(v, f, train=True, mutable=["batch_stats"]), v, feats)
    jax.eval_shape(
        lambda v, f, k: neck.apply(v, f, train=True, mutable=["batch_stats"], rngs={"dropout": k}), v, feats, KEY
    )


# ======================================================================= factory


def test_build_neck_from_config():
    fpn = build_neck(
        ml_collections.ConfigDict(
            dict(
                type="fpn",
                min_level=2,
                max_level=6,
                num_filters=256,
                activation="swish",
                bn_momentum=0.997,
                bn_epsilon=1e-4,
            )
        )
    )
    assert isinstance(fpn, FPN) and (fpn.min_level, fpn.max_level, fpn.num_filters) == (2, 6, 256)
    nas = build_neck(
        ml_collections.ConfigDict(
            dict(
                type="nasfpn",
                min_level=3,
                max_level=7,
                num_filters=256,
                num_repeats=5,
                block="bottleneck",
                combine="sum",
                drop_connect_rate=0.2,
                activation="swish",
                bn_momentum=0.997,
                bn_epsilon=1e-4,
                dtype="bfloat16",
            )
        )
    )
    assert isinstance(nas, NASFPN) and nas.block == "bottleneck" and nas.drop_connect_rate == 0.2
    assert nas.dtype == jnp.bfloat16 and nas.output_channels == 1024
    default = build_neck(ml_collections.ConfigDict(dict(type="nasfpn")), dtype=jnp.bfloat16)
    assert default.dtype == jnp.bfloat16 and (default.num_repeats, default.block) == (5, "conv")
    with pytest.raises(ValueError, match="model.neck.type"):
        build_neck(ml_collections.ConfigDict(dict(type="bifpn")))
    with pytest.raises(ValueError, match="num_repeat"):
        build_neck(ml_collections.ConfigDict(dict(type="fpn", num_repeat=3)))
    with pytest.raises(ValueError, match="min_level=3, max_level=7"):
        build_neck(ml_collections.ConfigDict(dict(type="nasfpn", min_level=3, max_level=5)))
    with pytest.raises(ValueError, match="block"):
        build_neck(ml_collections.ConfigDict(dict(type="nasfpn", block="mbconv")))
