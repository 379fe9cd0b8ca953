"""ResNet v1.5 / ResNet-RS: equivalence with torchvision and TF Model Garden, shapes, counts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from frozen_det.checkpoints.mapping import CheckpointMismatchError, assign_by_path
from frozen_det.checkpoints.torchvision_resnet import convert_torchvision_resnet
from frozen_det.models.backbones import build_backbone
from frozen_det.models.backbones.resnet import ResNet
from frozen_det.models.layers import conv_module
from frozen_det.tree_paths import count_elements


def _init_shapes(model, size=64):
    return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3))))


def _calibrate_bn(torch, model, rng):
    """Random BN affine parameters and statistics taken from a batch (like a trained network's),
    so activations keep a realistic scale through the depth and the logits are O(1-10)."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.copy_(torch.from_numpy(rng.uniform(0.2, 0.6, module.weight.shape)))
                module.bias.copy_(torch.from_numpy(rng.normal(0, 0.1, module.bias.shape)))
                module.momentum = None  # cumulative average: one batch sets the statistics
        model.train()
        model(torch.from_numpy(rng.normal(size=(8, 3, 64, 64)).astype(np.float32)))
    model.eval()


@pytest.mark.parametrize("depth", [18, 50])
def test_matches_torchvision_logits_and_features(depth):
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    rng = np.random.default_rng(depth)
    torch.manual_seed(depth)
    ref = getattr(torchvision.models, f"resnet{depth}")()
    _calibrate_bn(torch, ref, rng)
    state = {k: v.numpy() for k, v in ref.state_dict().items()}
    model = ResNet(depth)
    variables = assign_by_path(_init_shapes(model), convert_torchvision_resnet(state), source="torchvision")
    x = rng.normal(size=(2, 64, 64, 3)).astype(np.float32)
    features, logits = model.apply(variables, x, return_logits=True)
    with torch.no_grad():
        expected = ref(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
        c5 = torch.nn.Sequential(*list(ref.children())[:-2])(torch.from_numpy(x.transpose(0, 3, 1, 2)))
    assert np.abs(np.asarray(logits) - expected).max() <= 1e-4
    # C5 before pooling carries float32 round-off of the same size as torch's own float32-vs-
    # float64 error at this depth (~2e-4); the pooled logits average it down.
    np.testing.assert_allclose(np.asarray(features[5]), c5.numpy().transpose(0, 2, 3, 1), atol=1e-3)
    assert count_elements(variables["params"]) == sum(p.numel() for p in ref.parameters())


def test_matches_tf_model_garden_resnet_rs50(tmp_path):
    """Our ResNet-RS-50 against TF Model Garden's own backbone, same random weights."""
    pytest.importorskip(
        "official.vision.modeling.backbones.resnet",
        reason="TF Model Garden reference not installed (.ci/run installs it)",
    )
    import tensorflow as tf
    import tf_keras
    from official.vision.modeling.backbones import resnet as tfmg_resnet

    from frozen_det.checkpoints.tfmg_resnet import convert_tfmg_resnet, read_tf_checkpoint

    ref = tfmg_resnet.ResNet(
        model_id=50,
        input_specs=tf_keras.layers.InputSpec(shape=[None, 64, 64, 3]),
        replace_stem_max_pool=True,
        resnetd_shortcut=True,
        se_ratio=0.25,
        stem_type="v1",
        activation="swish",
        norm_epsilon=1e-4,
    )
    rng = np.random.default_rng(7)
    for w in ref.weights:
        if "moving_mean" in w.name or "beta" in w.name:
            w.assign(rng.normal(0, 0.1, w.shape))
        elif "moving_variance" in w.name or "gamma" in w.name:
            w.assign(rng.uniform(0.5, 1.5, w.shape))
    path = tf.train.Checkpoint(model=tf.train.Checkpoint(backbone=ref)).write(str(tmp_path / "ckpt"))
    ours = ResNet(50, "rs", bn_epsilon=1e-4, num_classes=None)
    mapped = convert_tfmg_resnet(read_tf_checkpoint(path), (3, 4, 6, 3))
    variables = assign_by_path(_init_shapes(ours), mapped, source=path)
    x = rng.normal(size=(2, 64, 64, 3)).astype(np.float32)
    features = ours.apply(variables, x)
    expected = ref(x, training=False)
    for level in range(2, 6):
        got, want = np.asarray(features[level]), expected[str(level)].numpy()
        assert got.shape == want.shape
        assert np.abs(got - want).max() <= 1e-5 * max(1.0, np.abs(want).max())


def test_resnet_rs_101_parameter_count_matches_reference_arithmetic():
    # docs/reference.md §4.1: 61,464,096 conv/SE weights + 105,600 BN gamma/beta, and
    # 105,600 BN moving statistics; the ImageNet head adds 2048 * 1000 + 1000.
    variables = _init_shapes(ResNet(101, "rs"))
    params = dict(variables["params"])
    head = params.pop("classifier")
    assert count_elements(params) == 61_569_696
    assert count_elements(variables["batch_stats"]) == 105_600
    assert count_elements(head) == 2_049_000


@pytest.mark.parametrize(
    "variant,depth,channels",
    [
        ("v1.5", 18, (64, 128, 256, 512)),
        ("v1.5", 34, (64, 128, 256, 512)),
        ("v1.5", 101, (256, 512, 1024, 2048)),
        ("v1.5", 152, (256, 512, 1024, 2048)),
        ("v1.5", 200, (256, 512, 1024, 2048)),
        ("rs", 50, (256, 512, 1024, 2048)),
        ("rs", 152, (256, 512, 1024, 2048)),
        ("rs", 200, (256, 512, 1024, 2048)),
    ],
)
def test_feature_pyramid_shapes(variant, depth, channels):
    model = ResNet(depth, variant, num_classes=None)
    variables = _init_shapes(model, 128)
    out = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((2, 128, 128, 3))), variables)
    assert sorted(out) == [2, 3, 4, 5]
    for level, c in zip(range(2, 6), channels):
        s = 128 // 2**level
        assert out[level].shape == (2, s, s, c)


def test_bfloat16_activations_keep_float32_params():
    model = ResNet(18, dtype=jnp.bfloat16, num_classes=None)
    variables = _init_shapes(model)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(variables))
    out = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((1, 64, 64, 3))), variables)
    assert out[5].dtype == jnp.bfloat16


def test_bad_depth_and_variant_are_clear_errors():
    with pytest.raises(ValueError, match="choose one of"):
        _init_shapes(ResNet(77))
    with pytest.raises(ValueError, match="ResNet-RS depth 18"):
        _init_shapes(ResNet(18, "rs"))
    with pytest.raises(ValueError, match="'v1.5' or 'rs'"):
        _init_shapes(ResNet(50, "v2"))


def test_checkpoint_mismatch_lists_offending_names():
    model = ResNet(18)
    mapped = {
        "params/stem/conv1/kernel": np.zeros((7, 7, 3, 64), np.float32),
        "params/classifier/kernel": np.zeros((512, 10), np.float32),  # wrong class count
        "params/stage9/block0/conv1/kernel": np.zeros((1,), np.float32),  # no such module
    }
    with pytest.raises(CheckpointMismatchError) as info:
        assign_by_path(_init_shapes(model), mapped, source="test.pth")
    message = str(info.value)
    assert "stage9/block0/conv1/kernel" in message  # unused entry
    assert "params/stem/bn1/scale" in message  # missing entry
    assert "classifier/kernel: checkpoint (512, 10) vs model (512, 1000)" in message


def test_torchvision_converter_rejects_unknown_names():
    with pytest.raises(KeyError, match="avgpool.weight"):
        convert_torchvision_resnet(
            {"conv1.weight": np.zeros((64, 3, 7, 7), np.float32), "avgpool.weight": np.zeros((1,), np.float32)}
        )


@pytest.mark.slow
def test_fast_conv_impl_is_the_same_function_and_gradient():
    x = np.random.default_rng(3).normal(size=(2, 64, 64, 3)).astype(np.float32)
    slow, fast = ResNet(18, num_classes=None), ResNet(18, num_classes=None, conv=conv_module("fast"))
    variables = slow.init(jax.random.key(0), x)
    assert jax.tree.structure(variables) == jax.tree.structure(fast.init(jax.random.key(0), x))

    def loss(model):
        return lambda p: jnp.sum(model.apply({**variables, "params": p}, x)[5] ** 2)

    g_slow = jax.jit(jax.grad(loss(slow)))(variables["params"])
    g_fast = jax.jit(jax.grad(loss(fast)))(variables["params"])
    for a, b in zip(jax.tree.leaves(g_slow), jax.tree.leaves(g_fast)):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3 * float(np.abs(a).max()) + 1e-8)
    with pytest.raises(ValueError, match="model.backbone.conv_impl='cudnn'"):
        build_backbone(dict(type="resnet", depth=18, conv_impl="cudnn"))


@pytest.mark.slow
def test_width_multiplier_and_frozen_statistics_mode():
    """width scales every stage's channels; bn_mode="frozen_stats" normalises with the stored
    statistics in training too (the train-mode output equals inference, statistics never move)
    while BatchNorm's scale and offset still get gradients."""
    x = np.random.default_rng(5).normal(size=(4, 32, 32, 3)).astype(np.float32)
    narrow = build_backbone(dict(type="resnet", depth=18, width=0.25, bn_mode="frozen_stats"))
    variables = narrow.init(jax.random.key(0), x)
    features = narrow.apply(variables, x)
    assert [features[level].shape[-1] for level in (2, 3, 4, 5)] == [16, 32, 64, 128]
    assert variables["params"]["stem"]["conv1"]["kernel"].shape == (7, 7, 3, 16)
    # stored statistics unlike a batch's (mean 0, variance 2), so that using them is visible
    stats = jax.tree.map(lambda s: s * 2.0, variables["batch_stats"])
    variables = {"params": variables["params"], "batch_stats": stats}
    out, updates = narrow.apply(variables, x, train=True, mutable=["batch_stats"])
    np.testing.assert_allclose(out[5], narrow.apply(variables, x)[5], rtol=1e-5, atol=1e-5)
    jax.tree.map(np.testing.assert_array_equal, updates["batch_stats"], stats)

    def loss(params):
        return jnp.sum(
            narrow.apply({"params": params, "batch_stats": stats}, x, train=True, mutable=["batch_stats"])[0][5] ** 2
        )

    grads = jax.grad(loss)(variables["params"])
    assert float(jnp.abs(grads["stage4"]["block1"]["bn2"]["scale"]).max()) > 0
    batch_mode = build_backbone(dict(type="resnet", depth=18, width=0.25))
    _, moved = batch_mode.apply(variables, x, train=True, mutable=["batch_stats"])
    assert not np.allclose(moved["batch_stats"]["stem"]["bn1"]["mean"], stats["stem"]["bn1"]["mean"])
    with pytest.raises(ValueError, match="model.backbone.width"):
        build_backbone(dict(type="efficientnet", variant="lite0", width=0.5))
