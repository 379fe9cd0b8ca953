import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from frozen_det import config_defaults
from frozen_det.training.optimizer import build_optimizer, keras_momentum_sgd, learning_rate_schedule


def test_paper_schedule_warmup_and_drops():
    train = config_defaults.paper_train("72ep")
    lr = learning_rate_schedule(train.schedule, train.total_steps)
    np.testing.assert_allclose(lr(0), 0.0067, rtol=1e-6)
    np.testing.assert_allclose(lr(250), 0.0067 + 0.5 * (0.16 - 0.0067), rtol=1e-5)
    np.testing.assert_allclose(lr(500), 0.16, rtol=1e-6)
    np.testing.assert_allclose(lr(88_703), 0.16, rtol=1e-6)
    np.testing.assert_allclose(lr(88_704), 0.016, rtol=1e-5)
    np.testing.assert_allclose(lr(125_664), 0.0016, rtol=1e-5)


def test_cosine_schedule_ends_at_zero():
    schedule = ml_collections.ConfigDict(dict(name="warmup_cosine", base_lr=1.0, warmup_steps=10, warmup_lr=0.0))
    lr = learning_rate_schedule(schedule, 110)
    np.testing.assert_allclose([lr(0), lr(10), lr(60), lr(110)], [0.0, 1.0, 0.5, 0.0], atol=1e-6)


def test_keras_momentum_folds_the_learning_rate_into_the_velocity():
    lrs = [0.1, 0.1, 0.01]
    opt = keras_momentum_sgd(lambda step: jnp.asarray(lrs)[step], momentum=0.9)
    w = {"w": jnp.ones(())}
    state = opt.init(w)
    v, expected = 0.0, 1.0
    for step, g in enumerate([1.0, 2.0, 3.0]):
        updates, state = opt.update({"w": jnp.asarray(g)}, state)
        v = 0.9 * v - lrs[step] * g
        expected += v
        w = jax.tree.map(lambda a, u: a + u, w, updates)
    np.testing.assert_allclose(w["w"], expected, rtol=1e-6)


def test_weight_decay_applies_to_kernels_only():
    train = config_defaults.train(weight_decay=0.5, base_lr=1.0, warmup_steps=0, boundaries=(), total_steps=10)
    opt, _ = build_optimizer(train)
    params = {"conv": {"kernel": jnp.ones((2,)), "bias": jnp.ones((2,))}, "bn": {"scale": jnp.ones((2,))}}
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = opt.update(zeros, opt.init(params), params)
    np.testing.assert_allclose(updates["conv"]["kernel"], -0.5)
    np.testing.assert_allclose(updates["conv"]["bias"], 0.0)
    np.testing.assert_allclose(updates["bn"]["scale"], 0.0)


def test_unknown_optimizer_is_a_clear_error():
    train = config_defaults.train()
    train.optimizer.name = "lamb"
    with pytest.raises(ValueError, match="'sgd' or 'adamw'"):
        build_optimizer(train)


def _trajectory(train, params, grads, steps=4):
    opt, _ = build_optimizer(train)
    state = opt.init(params)
    for step in range(steps):
        g = jax.tree.map(lambda x: x * (step + 1), grads)  # changing gradients: momentum matters
        updates, state = opt.update(g, state, params)
        params = jax.tree.map(lambda p, u: p + u, params, updates)
    return params


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_lr_multiplier_equals_that_parameters_learning_rate_scaled(optimizer):
    """A (regex, 4) rule moves the matched parameters exactly as a 4x learning rate would (with
    warm-up, weight decay and momentum / Adam state), and the others as before."""

    def train(base_lr, rules=()):
        t = config_defaults.train(
            weight_decay=0.1, base_lr=base_lr, warmup_steps=2, warmup_lr=0.1 * base_lr, boundaries=(3,), total_steps=4
        )
        t.optimizer.name = optimizer
        t.lr_multipliers = rules
        return t

    params = {"mask_head": {"conv": {"kernel": jnp.full((3,), 0.7)}}, "box_head": {"kernel": jnp.full((3,), -0.4)}}
    grads = {"mask_head": {"conv": {"kernel": jnp.asarray([0.3, -1.0, 2.0])}}, "box_head": {"kernel": jnp.ones(3)}}
    ruled = _trajectory(train(0.05, ((r"^mask_head/", 4.0),)), params, grads)
    plain = _trajectory(train(0.05), params, grads)
    fast = _trajectory(train(0.2), params, grads)
    np.testing.assert_allclose(ruled["mask_head"]["conv"]["kernel"], fast["mask_head"]["conv"]["kernel"], rtol=1e-6)
    np.testing.assert_allclose(ruled["box_head"]["kernel"], plain["box_head"]["kernel"], rtol=1e-6)
    assert not np.allclose(plain["mask_head"]["conv"]["kernel"], fast["mask_head"]["conv"]["kernel"])


def test_lr_multiplier_first_rule_wins_and_unmatched_rule_is_refused():
    t = config_defaults.train(weight_decay=0.0, base_lr=1.0, warmup_steps=0, boundaries=(), total_steps=10)
    t.optimizer.momentum = 0.0
    t.lr_multipliers = ((r"head/a", 0.5), (r"head", 3.0))
    opt, _ = build_optimizer(t)
    params = {"head": {"a": jnp.ones(()), "b": jnp.ones(())}, "neck": {"c": jnp.ones(())}}
    ones = jax.tree.map(jnp.ones_like, params)
    updates, _ = opt.update(ones, opt.init(params), params)
    np.testing.assert_allclose([updates["head"]["a"], updates["head"]["b"], updates["neck"]["c"]], [-0.5, -3.0, -1.0])
    t.lr_multipliers = ((r"^backbone/", 0.1),)
    opt, _ = build_optimizer(t)
    with pytest.raises(ValueError, match="'\\^backbone/' matches no trainable parameter"):
        opt.init(params)


@pytest.mark.parametrize("rules", [(("x",),), ((3, 1.0),), (("x", -1.0),), (("(", 2.0),)])
def test_malformed_lr_multipliers_are_config_errors(rules):
    from frozen_det.config import complete_train

    with pytest.raises(ValueError, match="lr_multipliers"):
        complete_train({"lr_multipliers": rules})
