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
