"""What a config costs: parameters (total / trainable) and XLA's compiled FLOPs and memory, for
any task (frozen_det.tasks).

    python -m frozen_det.resources --config configs/paper/resnetrs101_fpn.py:72ep,frozen [--config.x=y ...]

prints one JSON object:
  params_total, params_trainable       (BN statistics counted in the total, as Keras does)
  forward_gflops                       inference forward pass of the whole model
  backbone_forward_gflops              backbone alone
  train_step_gflops                    forward + target assignment + losses + backward of the
                                       trainable parameters + SGD update
  backbone_train_mode_forward_gflops   the backbone as the train step runs it
  head_train_step_gflops               the same train step with the backbone's outputs given
                                       (frozen: train_step ~= backbone + head train step)
  train_step_temp_bytes                XLA's temporary buffer size for the train step
at the config's canvas (`data.canvas`) and per-device batch (`train.batch_size` / devices).
This is how freezing's savings are measured rather than assumed. `train_step_cost(config)`
gives the parameter counts, train-step GFLOPs and temp bytes alone (one compilation), e.g. to
compare transfer strategies side by side.
"""

from __future__ import annotations

import json
import sys

import jax
import optax
from ml_collections import config_flags

from frozen_det import config as config_lib
from frozen_det.models.backbones import build_backbone
from frozen_det.runtime import compile_progress, prepare_entry_point, run_main
from frozen_det.tasks import get_task
from frozen_det.training import partition
from frozen_det.training.state import create_train_state, trainable_mask
from frozen_det.training.step import make_train_step
from frozen_det.tree_paths import count_elements


def compiled_cost(compiled) -> dict:
    """XLA's cost and memory analysis of a compiled function: {"gflops", "temp_bytes"}."""
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost  # one entry per device on some versions
    memory = compiled.memory_analysis()
    return {
        "gflops": float(cost.get("flops", float("nan"))) / 1e9,
        "temp_bytes": int(getattr(memory, "temp_size_in_bytes", -1)) if memory is not None else -1,
    }


def _per_device_batch(config) -> int:
    return max(1, int(config.train.batch_size) // jax.device_count())


def _setup(config):
    """(resolved config, task, model, per-device example batch, abstract variables, trainable mask)."""
    config = config_lib.complete(config)
    task = get_task(config)
    model = task.build_model()  # losses that read class counts get uniform stand-ins
    batch = task.model_batch(task.example_batch(_per_device_batch(config), train=True), train=True)
    variables = jax.eval_shape(
        lambda b: model.init(task.init_rngs(jax.random.key(0)), b, train=True), jax.tree.map(lambda x: x[:1], batch)
    )
    return config, task, model, batch, variables, trainable_mask(config, task, variables["params"])


def _counts(variables, mask) -> dict:
    trainable, _ = partition.split(variables["params"], mask)
    return {"params_total": count_elements(variables), "params_trainable": count_elements(trainable)}


def _abstract(tree):
    """Shapes and dtypes only: what XLA compiles against, no array materialised."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)


def _train_step(task, model, variables, mask, batch, backbone_features=None):
    """Compiled SGD train step of the task's loss, from the shapes of `variables` and `batch`;
    with `backbone_features`, of the heads alone."""
    return _lowered_train_step(task, model, variables, mask, batch, backbone_features).compile()


def lowered_train_step(config):
    """The config's train step traced and lowered for its per-device batch (shapes only):
    `.compile()` it to time XLA alone (tools/bench_compile.py)."""
    _, task, model, batch, abstract, mask = _setup(config)
    return _lowered_train_step(task, model, abstract, mask, batch)


def _lowered_train_step(task, model, variables, mask, batch, backbone_features=None):
    def loss_fn(params, batch_stats, b, rng):
        b, feats = b
        kwargs = {} if feats is None else {"backbone_features": feats}
        return task.loss_fn(model, **kwargs)(params, batch_stats, b, rng)

    optimizer = optax.sgd(0.01, momentum=0.9)
    state = jax.eval_shape(lambda v: create_train_state(v, mask, optimizer), _abstract(variables))
    step = jax.jit(make_train_step(loss_fn, optimizer), donate_argnums=0)
    return step.lower(state, _abstract((batch, backbone_features)), jax.random.key(0))


def parameter_counts(config):
    """({params_total, params_trainable}, model, abstract variables, trainable mask)."""
    _, _, model, _, abstract, mask = _setup(config)
    return _counts(abstract, mask), model, abstract, mask


def freeze_savings(config, _setup_and_variables=None) -> dict:
    """FLOPs of the backbone's forward pass, the full train step and the heads' train step
    (backbone outputs given as inputs), and the train step's temp bytes. With a frozen backbone,
    full = backbone + heads: XLA built no backbone backward pass."""
    if _setup_and_variables is None:
        setup = _setup(config)
        _setup_and_variables = setup, setup[4]
    (config, task, model, batch, _, mask), variables = _setup_and_variables
    backbone = build_backbone(task.backbone_config())
    backbone_vars = {k: v["backbone"] for k, v in variables.items() if "backbone" in v}
    # The frozen parts of a backbone run in inference mode inside the train step too.
    # (A dropout key: trained EfficientNet stages drop paths in training.)
    backbone_forward = jax.jit(
        lambda v, x: backbone.apply(v, x, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(0)})[0]
    )
    images = batch[task.backbone_input]
    compiled_backbone = backbone_forward.lower(_abstract(backbone_vars), _abstract(images)).compile()
    features = jax.eval_shape(backbone_forward, _abstract(backbone_vars), _abstract(images))
    compiled_step = _train_step(task, model, variables, mask, batch)
    head_step = _train_step(task, model, variables, mask, batch, features)
    return {
        "backbone_train_mode_forward_gflops": round(compiled_cost(compiled_backbone)["gflops"], 3),
        "train_step_gflops": round(compiled_cost(compiled_step)["gflops"], 3),
        "head_train_step_gflops": round(compiled_cost(head_step)["gflops"], 3),
        "train_step_temp_bytes": compiled_cost(compiled_step)["temp_bytes"],
    }


def train_step_cost(config) -> dict:
    """params_total, params_trainable, train_step_gflops and train_step_temp_bytes, as in
    `measure` but from the train step's compilation alone."""
    _, task, model, batch, abstract, mask = _setup(config)
    cost = compiled_cost(_train_step(task, model, abstract, mask, batch))
    return {
        **_counts(abstract, mask),
        "train_step_gflops": round(cost["gflops"], 3),
        "train_step_temp_bytes": cost["temp_bytes"],
    }


def measure(config) -> dict:
    config, task, model, batch, abstract, mask = _setup(config)
    variables = abstract
    eval_batch = task.model_batch(task.example_batch(_per_device_batch(config), train=False), train=False)
    forward = jax.jit(lambda v, b: model.apply(v, b, train=False)).lower(variables, _abstract(eval_batch)).compile()
    backbone = build_backbone(task.backbone_config())
    backbone_vars = {k: v["backbone"] for k, v in variables.items() if "backbone" in v}
    images = _abstract(batch[task.backbone_input])
    backbone_forward = jax.jit(lambda v, x: backbone.apply(v, x, train=False)).lower(backbone_vars, images).compile()
    return {
        **_counts(abstract, mask),
        "forward_gflops": round(compiled_cost(forward)["gflops"], 3),
        "backbone_forward_gflops": round(compiled_cost(backbone_forward)["gflops"], 3),
        **(
            freeze_savings(config, ((config, task, model, batch, abstract, mask), variables))
            if task.heads_take_backbone_features
            else train_step_cost(config)
        ),
        "canvas": int(images.shape[1]),
        "per_device_batch": _per_device_batch(config),
    }


def main(argv):
    del argv
    config = config_lib.complete(_CONFIG.value)
    # What `measure` compiles: the forward pass, the backbone's, and the train step (with a
    # separable backbone also the backbone in train mode and the heads' train step).
    programs = 5 if get_task(config).heads_take_backbone_features else 3
    with compile_progress("resources: compiling", total=programs):
        result = measure(config)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    prepare_entry_point(sys.argv)  # before anything (the config file too) imports TensorFlow
    # Flags are defined only when run as a program, so the module can be imported (tests,
    # notebooks) beside other entry points that define the same flag names.
    _CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
    run_main(main)
