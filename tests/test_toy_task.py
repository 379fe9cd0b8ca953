"""docs/architecture.md's "How to add a task", literally: a task class in a module of its own
(outside the package, in a temporary folder), named by its import path in `model.type`, trains
and evaluates through `python -m frozen_det.train` with nothing else changed, and its run opens
as a `Run` with the saved config."""

import json
import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TOY_TASK = '''
"""A toy task: count the objects of a detection image (its own model schema, detection data)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from frozen_det.data import detection
from frozen_det.evaluation.gather import gathered_outputs
from frozen_det.schema import ConfigDict, merge
from frozen_det.tasks.base import Task


def complete_counter(given):
    return merge(ConfigDict(dict(type="toy_task:CountTask", width=4)), given or {}, "config.model")


class Counter(nn.Module):
    width: int

    @nn.compact
    def __call__(self, batch, train=False):
        x = nn.relu(nn.Conv(self.width, (3, 3), strides=(4, 4))(batch["image"]))
        count = nn.Dense(1)(jnp.mean(x, axis=(1, 2)))[:, 0]
        if not train:
            return {"count": count}
        target = jnp.sum(batch["valid"], axis=1).astype(jnp.float32)
        return {"total": jnp.mean((count - target) ** 2)}, {"mae": jnp.mean(jnp.abs(count - target))}


class CountTask(Task):
    name = "count"
    data = detection
    complete_model = staticmethod(complete_counter)
    headline_metrics = ("mae",)

    def build_model(self, train_pipeline=None):
        return Counter(int(self.config.model.width))

    def model_inputs(self, train):
        return ("image", "valid") if train else ("image",)

    def example_batch(self, batch_size, train=True):
        canvas = int(self.config.data.canvas)
        n = int(self.config.data.max_instances)
        image = np.zeros((batch_size, canvas, canvas, 3), np.float32)
        return {"image": image, "valid": np.zeros((batch_size, n), bool)}

    def evaluate(self, model, variables, eval_pipeline, to_device=None):
        fn = jax.jit(lambda v, b: model.apply(v, b, train=False))
        outs = gathered_outputs(fn, variables, eval_pipeline, ("image",), to_device, carry=("valid",))
        errors = np.concatenate([np.abs(o["count"] - o["valid"].sum(axis=1)) for o in outs])
        return {"mae": float(np.mean(errors)), "num_images": len(errors)}
'''

TOY_CONFIG = """
from frozen_det import config_defaults as d


def get_config():
    config = d.ConfigDict()
    config.model = d.ConfigDict(dict(type="toy_task:CountTask", width=4))
    config.data = d.ConfigDict(dict(source="synthetic", canvas=32, max_instances=6, eval_batch_size=16))
    config.train = d.train(batch_size=4, total_steps=6, boundaries=(), base_lr=0.01, warmup_steps=0, log_every=3)
    return d.complete(config)
"""


def test_a_task_in_its_own_module_trains_through_the_train_command(tmp_path):
    (tmp_path / "toy_task.py").write_text(textwrap.dedent(TOY_TASK))
    (tmp_path / "toy_config.py").write_text(textwrap.dedent(TOY_CONFIG))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    workdir = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "frozen_det.train",
        f"--config={tmp_path / 'toy_config.py'}",
        f"--workdir={workdir}",
    ]
    out = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]

    result = json.loads((workdir / "eval" / "validation_step6.json").read_text())
    assert result["num_images"] > 0 and result["mae"] >= 0.0
    steps = [json.loads(line)["step"] for line in (workdir / "train_metrics.jsonl").read_text().splitlines()]
    assert steps == [3, 6]

    sys.path.insert(0, str(tmp_path))
    try:
        from frozen_det.training.run import Run

        with Run(str(workdir)) as run:  # rebuilt from the saved config: the task by its import path
            assert run.config.model.type == "toy_task:CountTask" and run.task.name == "count"
            assert run.steps == [6]
            assert set(run.variables()["params"]) == {"Conv_0", "Dense_0"}
    finally:
        sys.path.remove(str(tmp_path))
