"""The freeze switch and residual adapters: what trains, what stays bit-identical, what XLA drops.

A small classifier (ResNet-18 backbone + a conv head on C5) stands in for a detector: the
mechanism under test is the backbone's, the head only has to train.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import traverse_util

from frozen_det.models.backbones import backbone_frozen_patterns
from frozen_det.models.backbones.resnet import ResNet
from frozen_det.resources import compiled_cost
from frozen_det.training import partition
from frozen_det.training.state import create_train_state
from frozen_det.training.step import make_train_step
from frozen_det.tree_paths import flatten, leaf_paths, map_paths

SIZE, BATCH, CLASSES = 64, 2, 5


class Head(nn.Module):
    @nn.compact
    def __call__(self, c5):
        x = jax.nn.relu(nn.Conv(128, (3, 3), name="conv")(c5))
        return nn.Dense(CLASSES, name="fc")(jnp.mean(x, axis=(1, 2)))


class Classifier(nn.Module):
    freeze: str | int = "none"
    adapters: bool = False

    @nn.compact
    def __call__(self, images, train: bool):
        features = ResNet(18, freeze=self.freeze, adapters=self.adapters, num_classes=None, name="backbone")(
            images, train=train
        )
        return Head(name="head")(features[5])


def _batch():
    rng = np.random.default_rng(0)
    return (rng.normal(size=(BATCH, SIZE, SIZE, 3)).astype(np.float32), rng.integers(0, CLASSES, size=(BATCH,)))


def _calibrated_variables(model):
    """Init, then one train-mode pass so BN statistics are realistic (not mean 0 / var 1)."""
    images, _ = _batch()
    variables = Classifier().init(jax.random.key(0), images, train=False)
    _, updates = Classifier().apply(variables, images, train=True, mutable=["batch_stats"])
    variables = {"params": variables["params"], "batch_stats": updates["batch_stats"]}
    if model.adapters:  # same non-adapter weights, adapters at their zero init
        with_adapters = model.init(jax.random.key(0), images, train=False)
        flat = traverse_util.flatten_dict(with_adapters["params"])
        flat.update(traverse_util.flatten_dict(variables["params"]))
        variables["params"] = traverse_util.unflatten_dict(flat)
    return variables


def _loss_fn(model):
    def loss_fn(params, batch_stats, batch, rng):
        images, labels = batch
        logits, updates = model.apply(
            {"params": params, "batch_stats": batch_stats}, images, train=True, mutable=["batch_stats"]
        )
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        return loss, ({}, updates["batch_stats"])

    return loss_fn


def _train_step(freeze, adapters=False):
    """Returns (variables before, state after one SGD step, the state's optimizer leaves)."""
    model = Classifier(freeze=freeze, adapters=adapters)
    variables = _calibrated_variables(model)
    mask = partition.trainable_mask(
        variables["params"], frozen=backbone_frozen_patterns({"freeze": freeze}, prefix="backbone/")
    )
    optimizer = optax.sgd(0.1, momentum=0.9)
    state = create_train_state(variables, mask, optimizer)
    step = jax.jit(make_train_step(_loss_fn(model), optimizer))
    new_state, metrics = step(state, _batch(), jax.random.key(1))
    assert np.isfinite(float(metrics["loss"]))
    return variables, new_state


def _changed(before, after):
    """Set of '/'-paths whose leaves differ (bitwise) between two trees."""
    b, a = flatten(before), flatten(after)
    return {k for k in b if not np.array_equal(np.asarray(b[k]), np.asarray(a[k]))}


def _prefix(paths):
    return {"/".join(p.split("/")[:2]) for p in paths}


def test_freeze_all_keeps_backbone_bit_identical():
    before, state = _train_step("all")
    after = state.all_params()
    changed = _changed(before["params"], after)
    assert changed and all(p.startswith("head/") for p in changed)
    assert not _changed(before["batch_stats"], state.batch_stats)
    # Optimizer state (SGD momentum) exists for the head only.
    trace = state.opt_state[0].trace
    head_paths = {p for p in leaf_paths(before["params"]) if p.startswith("head/")}
    assert set(leaf_paths(trace)) == head_paths


@pytest.mark.parametrize("k", [pytest.param(0, marks=pytest.mark.slow), 2])
def test_freeze_k_changes_only_later_stages(k):
    before, state = _train_step(k)
    frozen_parts = {"backbone/stem"} | {f"backbone/stage{i}" for i in range(1, k + 1)}
    changed_params = _prefix(_changed(before["params"], state.all_params()))
    changed_stats = _prefix(_changed(before["batch_stats"], state.batch_stats))
    assert not changed_params & frozen_parts
    assert not changed_stats & frozen_parts
    trainable_parts = {f"backbone/stage{i}" for i in range(k + 1, 5)}
    assert trainable_parts <= changed_params
    assert trainable_parts <= changed_stats


def test_adapters_start_as_identity_and_only_they_train():
    images, _ = _batch()
    plain = _calibrated_variables(Classifier())
    adapted_model = Classifier(freeze="all", adapters=True)
    adapted = _calibrated_variables(adapted_model)
    out_plain = Classifier().apply(plain, images, train=False)
    out_adapted = adapted_model.apply(adapted, images, train=False)
    assert np.abs(np.asarray(out_plain) - np.asarray(out_adapted)).max() <= 1e-6

    before, state = _train_step("all", adapters=True)
    changed = _changed(before["params"], state.all_params())
    backbone_changed = {p for p in changed if p.startswith("backbone/")}
    assert backbone_changed and all("/adapter/" in p for p in backbone_changed)
    assert not _changed(before["batch_stats"], state.batch_stats)


def _flops(compiled):
    return compiled_cost(compiled)["gflops"]


def test_frozen_train_step_has_no_backbone_backward_pass():
    """XLA's compiled train step with freeze='all' costs backbone forward + head training."""
    images, labels = _batch()
    model = Classifier(freeze="all")
    variables = _calibrated_variables(model)
    optimizer = optax.sgd(0.1)

    def step_flops(freeze):
        m = Classifier(freeze=freeze)
        mask = partition.trainable_mask(
            variables["params"], frozen=backbone_frozen_patterns({"freeze": freeze}, prefix="backbone/")
        )
        state = create_train_state(variables, mask, optimizer)
        step = jax.jit(make_train_step(_loss_fn(m), optimizer))
        return _flops(step.lower(state, (images, labels), jax.random.key(0)).compile())

    backbone = ResNet(18, freeze="all", num_classes=None)
    backbone_vars = {"params": variables["params"]["backbone"], "batch_stats": variables["batch_stats"]["backbone"]}
    forward = jax.jit(lambda v, x: backbone.apply(v, x, train=True))
    backbone_flops = _flops(forward.lower(backbone_vars, images).compile())
    c5 = jax.eval_shape(lambda: forward(backbone_vars, images))[5]

    head = Head()
    head_params = {"params": variables["params"]["head"]}

    def head_loss(params, batch_stats, batch, rng):
        features, y = batch
        logits = head.apply({"params": params}, features)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), ({}, batch_stats)

    head_state = create_train_state(head_params, map_paths(head_params["params"], lambda *_: True), optimizer)
    head_step = jax.jit(make_train_step(head_loss, optimizer))
    head_flops = _flops(
        head_step.lower(head_state, (jnp.zeros(c5.shape, c5.dtype), labels), jax.random.key(0)).compile()
    )

    frozen = step_flops("all")
    assert abs(frozen - (backbone_flops + head_flops)) <= 0.05 * (backbone_flops + head_flops)
    assert step_flops("none") > 2.0 * frozen  # fine-tuning pays the backward pass
