"""bfloat16 compute with float32 master weights, end to end: one train step of a fine-tuned tiny
detector and of a classifier with `model.dtype` (and the backbone's) bfloat16 against the same
step in float32, from the same variables and batch. The parameters stay float32; the loss agrees
within 2% and the parameter updates (the first SGD step's update is the learning rate times the
gradient) within the bounds below, over all trainable parameters together.

bfloat16 keeps 8 bits of mantissa (relative rounding 2^-9 = 0.2% per operation); the differences
accumulate over the network's depth and the losses' reductions. Measured here: the detector's
update differs from float32's by 5-10% (cosine similarity > 0.995; its heads dominate the update);
the ResNet-18 classifier's (32 x 32 inputs, batch 8) by 31% (cosine 0.950; 26% / 0.966 at 64 x
64 and batch 16), the largest relative errors in the early stages' BatchNorm scales and conv
kernels, whose gradients are sums that largely cancel over the batch. The classifier's bounds
are set from that measurement, not from a derivation: a regression to, say, bfloat16 master
weights or a float16 cast would break them, a precision study of the backbone's gradients is not
done yet.
"""

import jax
import numpy as np
import pytest
from sharded_step_check import batch, tiny_config

from frozen_det import config as config_lib
from frozen_det import config_defaults as d
from frozen_det.tasks import get_task
from frozen_det.training import sharding
from frozen_det.training.state import build_state
from frozen_det.training.step import make_train_step


def _step(config, data, variables=None):
    """(loss, params before, params after) of one train step; `variables` replace the init."""
    task = get_task(config)
    model = task.build_model()
    mesh = sharding.make_mesh(jax.devices()[:1])
    state, _, optimizer, _ = build_state(config, task, model, mesh)
    if variables is not None:
        state = state.replace(params=variables["params"], batch_stats=variables.get("batch_stats", {}))
    step = jax.jit(make_train_step(task.loss_fn(model), optimizer))
    new_state, metrics = step(state, task.model_batch(data, True), jax.random.key(0))
    return float(metrics["total"]), state, new_state


def _bfloat16(config):
    config = config.copy_and_resolve_references()
    if "dtype" in config.model:  # detectors: necks and heads; classifiers have the backbone's
        config.model.dtype = "bfloat16"
    config.model.backbone.dtype = "bfloat16"
    return config_lib.complete(config)


def _compare(config, data, max_update_error: float, min_cosine: float):
    loss32, before, after32 = _step(config, data)
    loss16, before16, after16 = _step(
        _bfloat16(config), data, {"params": before.params, "batch_stats": before.batch_stats}
    )
    assert all(leaf.dtype == np.float32 for leaf in jax.tree.leaves(after16.params))  # float32 master weights
    update = lambda after, b: np.concatenate(  # noqa: E731
        [
            np.ravel(np.asarray(a, np.float64) - np.asarray(p, np.float64))
            for a, p in zip(jax.tree.leaves(after.params), jax.tree.leaves(b.params))
        ]
    )
    u32, u16 = update(after32, before), update(after16, before16)
    assert np.linalg.norm(u32) > 0
    assert abs(loss16 - loss32) <= 0.02 * abs(loss32), (loss16, loss32)
    assert np.linalg.norm(u16 - u32) <= max_update_error * np.linalg.norm(u32)
    assert u16 @ u32 / (np.linalg.norm(u16) * np.linalg.norm(u32)) >= min_cosine
    return loss32, loss16


@pytest.mark.slow
def test_detector_step_in_bfloat16_matches_float32(tmp_path):
    config = tiny_config(str(tmp_path))
    config.model.backbone.freeze = "none"  # gradients through the whole backbone in bfloat16
    _compare(config_lib.complete(config), batch(), max_update_error=0.10, min_cosine=0.995)


@pytest.mark.slow
def test_classifier_step_in_bfloat16_matches_float32():
    config = d.ConfigDict()
    config.model = d.ConfigDict(
        dict(type="classifier", num_classes=10, backbone=dict(type="resnet", depth=18, width=0.25))
    )
    config.data = d.ConfigDict(dict(source="fashion_mnist", image_size=32))
    config.train = d.train(batch_size=8, base_lr=0.1, warmup_steps=0, boundaries=())
    config = config_lib.complete(config)
    rng = np.random.default_rng(0)
    data = {"image": rng.normal(size=(8, 32, 32, 3)).astype(np.float32), "label": rng.integers(0, 10, 8)}
    _compare(config, data, max_update_error=0.40, min_cosine=0.93)
