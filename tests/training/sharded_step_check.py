"""Run by test_sharding.py in a process with 8 simulated CPU devices: the same train step on a
1-device mesh and on an 8-device mesh, for a fine-tuned and a frozen tiny detector. Prints one
JSON line of relative differences (loss, updated parameters, BN statistics)."""

import json
import os
import sys

import jax
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "models"))

from frozen_det.config_defaults import tiny_two_stage_model  # noqa: E402
from frozen_det.models import build_model  # noqa: E402
from frozen_det.training import sharding  # noqa: E402
from frozen_det.training.loop import build_state, loss_fn_for  # noqa: E402
from frozen_det.training.step import make_train_step  # noqa: E402
from frozen_det import config_defaults  # noqa: E402

BATCH = 8


def batch(canvas=64):
    rng = np.random.default_rng(0)
    b = {"image": rng.normal(size=(BATCH, canvas, canvas, 3)).astype(np.float32) * 0.2,
         "boxes": np.zeros((BATCH, 4, 4), np.float32), "classes": np.zeros((BATCH, 4), np.int32),
         "valid": np.zeros((BATCH, 4), bool)}
    for i in range(BATCH):
        y, x = rng.uniform(0, canvas / 2, 2)
        b["boxes"][i, 0] = (y, x, y + 24, x + 20)
        b["classes"][i, 0] = 1 + i % 3
        b["valid"][i, 0] = True
        b["image"][i, int(y):int(y) + 24, int(x):int(x) + 20] += 1.0
    return b


def relative(a, b, floor=1e-4):
    """max |a - b| / max |a|, with the scale floored at `floor`: the biases of convs followed by
    BatchNorm have an exactly-zero gradient, so their updates are ~1e-11 of pure round-off whose
    relative size means nothing (every real parameter here is far above the floor)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(a)), floor))


def run(strategy):
    config = config_defaults.ConfigDict()
    config.model = tiny_two_stage_model(num_classes=4)
    config_defaults.apply_strategy(config.model, strategy, "")
    config.train = config_defaults.train(batch_size=BATCH, base_lr=0.05, warmup_steps=0, boundaries=())
    model = build_model(config.model)
    data = batch()
    results = []
    for devices in (jax.devices()[:1], jax.devices()):
        mesh = sharding.make_mesh(devices)
        state, shardings, optimizer, _ = build_state(config, model, data, mesh)
        step = jax.jit(make_train_step(loss_fn_for(model), optimizer),
                       in_shardings=(shardings, sharding.batch_sharding(mesh), sharding.replicated(mesh)),
                       out_shardings=(shardings, sharding.replicated(mesh)))
        new_state, metrics = step(state, sharding.global_batch(data, mesh), jax.random.key(0))
        results.append(jax.device_get((metrics["total"], new_state.params, new_state.batch_stats)))
    (loss1, params1, stats1), (loss8, params8, stats8) = results
    return {"loss": relative(loss1, loss8),
            "params": max(relative(a, b) for a, b in zip(jax.tree.leaves(params1), jax.tree.leaves(params8))),
            "batch_stats": max(relative(a, b) for a, b in zip(jax.tree.leaves(stats1), jax.tree.leaves(stats8))),
            "num_devices": len(jax.devices())}


if __name__ == "__main__":
    print(json.dumps({s: run(s) for s in ("finetune", "frozen")}), flush=True)
