"""Run by test_sharding.py in a process with 8 simulated CPU devices:

* the same train step on a 1-device mesh and on an 8-device mesh for a partly frozen tiny
  detector (`freeze=2`: the stem and stages 1-2 frozen, stages 3-4 and the heads trained, so both
  partitions are sharded; relative differences of loss, updated parameters, BN statistics);
* the task's evaluation on 1 and on 8 devices (the same COCO metrics);
* a config whose eval_batch_size does not split over the 8 devices stops before compiling.

Prints one JSON line."""

import json
import os
import sys
import tempfile
import time

import jax
import numpy as np

from frozen_det import config as config_lib
from frozen_det import config_defaults
from frozen_det.tasks import get_task
from frozen_det.training import sharding
from frozen_det.training.state import build_state
from frozen_det.training.step import make_train_step

BATCH = 8


def batch(canvas=64):
    rng = np.random.default_rng(0)
    b = {
        "image": rng.normal(size=(BATCH, canvas, canvas, 3)).astype(np.float32) * 0.2,
        "boxes": np.zeros((BATCH, 4, 4), np.float32),
        "classes": np.zeros((BATCH, 4), np.int32),
        "valid": np.zeros((BATCH, 4), bool),
        "image_info": np.tile(
            np.array([[canvas, canvas], [canvas, canvas], [1, 1], [0, 0]], np.float32), (BATCH, 1, 1)
        ),
    }
    for i in range(BATCH):
        y, x = rng.uniform(0, canvas / 2, 2)
        b["boxes"][i, 0] = (y, x, y + 24, x + 20)
        b["classes"][i, 0] = 1 + i % 3
        b["valid"][i, 0] = True
        b["image"][i, int(y) : int(y) + 24, int(x) : int(x) + 20] += 1.0
    return b


def relative(a, b, floor=1e-4):
    """max |a - b| / max |a|, with the scale floored at `floor`: the biases of convs followed by
    BatchNorm have an exactly-zero gradient, so their updates are ~1e-11 of pure round-off whose
    relative size means nothing (every real parameter here is far above the floor)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(a)), floor))


def tiny_config(data_dir):
    config = config_defaults.ConfigDict()
    config.model = config_defaults.tiny_two_stage_model(num_classes=4, freeze="2")
    config.train = config_defaults.train(batch_size=BATCH, base_lr=0.05, warmup_steps=0, boundaries=())
    config.data = config_defaults.ConfigDict(
        dict(
            source="synthetic",
            canvas=64,
            max_instances=4,
            eval_batch_size=BATCH,
            synthetic=dict(
                image_size=64, num_train=8, num_validation=12, num_classes=3, max_objects=3, data_dir=data_dir
            ),
        )
    )
    return config_lib.complete(config)


def run(data_dir):
    config = tiny_config(data_dir)
    task = get_task(config)
    model = task.build_model()
    data = batch()
    results, evaluations = [], []
    for devices in (jax.devices()[:1], jax.devices()):
        mesh = sharding.make_mesh(devices)
        state, shardings, optimizer, _ = build_state(config, task, model, mesh)
        step = jax.jit(
            make_train_step(task.loss_fn(model), optimizer),
            in_shardings=(shardings, sharding.batch_sharding(mesh), sharding.replicated(mesh)),
            out_shardings=(shardings, sharding.replicated(mesh)),
        )
        new_state, metrics = step(state, sharding.global_batch(task.model_batch(data, True), mesh), jax.random.key(0))
        results.append(jax.device_get((metrics["total"], new_state.params, new_state.batch_stats)))
        evaluations.append(
            task.evaluate(
                model,
                new_state.variables(),
                task.eval_pipeline(),
                lambda b, mesh=mesh: sharding.global_batch(b, mesh),
            )
        )
    (loss1, params1, stats1), (loss8, params8, stats8) = results
    out = {
        "loss": relative(loss1, loss8),
        "params": max(relative(a, b) for a, b in zip(jax.tree.leaves(params1), jax.tree.leaves(params8))),
        "batch_stats": max(relative(a, b) for a, b in zip(jax.tree.leaves(stats1), jax.tree.leaves(stats8))),
        "num_devices": len(jax.devices()),
    }
    out["eval"] = [{k: e[k] for k in ("AP", "AP50", "num_images")} for e in evaluations]
    return out


def bad_eval_batch(data_dir, workdir):
    """train_and_evaluate with eval_batch_size=3 on 8 devices: (error message, seconds)."""
    from frozen_det.training.loop import train_and_evaluate

    config = tiny_config(data_dir)
    config.data.eval_batch_size = 3
    start = time.time()
    try:
        train_and_evaluate(config, workdir)
    except ValueError as e:
        return str(e), time.time() - start
    return "", time.time() - start


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        out = {"freeze2": run(tmp)}
        out["bad_eval_batch"] = bad_eval_batch(tmp, os.path.join(tmp, "run"))
    print(json.dumps(out), flush=True)
    sys.exit(0)
