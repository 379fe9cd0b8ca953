"""What a config costs: parameters (total / trainable) and XLA's compiled FLOPs and memory.

    python -m frozen_det.resources --config configs/paper/fpn_frozen_72ep.py [--config.x=y ...]

prints one JSON object:
  params_total, params_trainable       (BN statistics counted in the total, as Keras does)
  forward_gflops                       inference forward pass of the whole detector
  backbone_forward_gflops              backbone alone
  train_step_gflops                    forward + target assignment + losses + backward of the
                                       trainable parameters + SGD update
  train_step_temp_bytes                XLA's temporary buffer size for the train step
at the config's canvas (`data.canvas`) and per-device batch (`train.batch_size` / devices).
This is how freezing's savings are measured rather than assumed.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import app
from ml_collections import config_flags

from frozen_det.models.backbones import backbone_frozen_patterns, build_backbone
from frozen_det.models.detector import TwoStageDetector
from frozen_det.training import partition
from frozen_det.training.step import create_train_state, make_train_step



def abstract_batch(config, batch_size: int) -> dict:
    """ShapeDtypeStructs of a training batch (the data pipeline's contract)."""
    canvas = int(config.data.canvas)
    n = int(config.data.get("max_instances", 100))
    batch = {
        "image": jax.ShapeDtypeStruct((batch_size, canvas, canvas, 3), jnp.float32),
        "boxes": jax.ShapeDtypeStruct((batch_size, n, 4), jnp.float32),
        "classes": jax.ShapeDtypeStruct((batch_size, n), jnp.int32),
        "valid": jax.ShapeDtypeStruct((batch_size, n), jnp.bool_),
        "image_info": jax.ShapeDtypeStruct((batch_size, 4, 2), jnp.float32),
    }
    if config.model.mask.enabled:
        m = int(config.data.get("mask_size", 112))
        batch["masks"] = jax.ShapeDtypeStruct((batch_size, n, m, m), jnp.float32)
    return batch


def _cost(compiled) -> dict:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return cost


def _gflops(compiled) -> float:
    return float(_cost(compiled).get("flops", float("nan"))) / 1e9


def _sample_batch(spec) -> dict:
    """Concrete zeros with one valid box per image: enough for target assignment to trace."""
    batch = {k: np.zeros(v.shape, v.dtype) for k, v in spec.items()}
    batch["boxes"][:, 0] = (8, 8, 64, 64)
    batch["valid"][:, 0] = True
    batch["classes"][:, 0] = 1
    return batch


def parameter_counts(config):
    """({params_total, params_trainable}, model, abstract variables, trainable mask)."""
    model = TwoStageDetector(ml_collections.FrozenConfigDict(config.model))
    spec = abstract_batch(config, 1)
    variables = jax.eval_shape(
        lambda b: model.init({"params": jax.random.key(0), "sampling": jax.random.key(0)}, b, train=True),
        spec)
    mask = partition.trainable_mask(
        variables["params"], frozen=backbone_frozen_patterns(config.model.backbone, prefix="backbone/"))
    trainable, _ = partition.split(variables["params"], mask)
    return {"params_total": partition.count_params(variables),
            "params_trainable": partition.count_params(trainable)}, model, variables, mask


def measure(config) -> dict:
    counts, model, _, mask = parameter_counts(config)
    per_device = max(1, int(config.train.batch_size) // jax.device_count())
    spec = abstract_batch(config, per_device)
    batch = _sample_batch(spec)
    variables = model.init({"params": jax.random.key(0), "sampling": jax.random.key(1)},
                           _sample_batch(abstract_batch(config, 1)), train=True)

    forward = jax.jit(lambda v, b: model.apply(v, b, train=False)).lower(variables, batch).compile()
    backbone = build_backbone(config.model.backbone)
    backbone_vars = {k: v["backbone"] for k, v in variables.items() if "backbone" in v}
    backbone_forward = jax.jit(lambda v, x: backbone.apply(v, x, train=False)).lower(
        backbone_vars, batch["image"]).compile()

    def loss_fn(params, batch_stats, b, rng):
        (losses, metrics), updates = model.apply({"params": params, "batch_stats": batch_stats}, b,
                                                 train=True, rngs={"sampling": rng}, mutable=["batch_stats"])
        return losses["total"], (metrics, updates["batch_stats"])

    optimizer = optax.sgd(0.01, momentum=0.9)
    state = create_train_state(variables, mask, optimizer)
    step = jax.jit(make_train_step(loss_fn, optimizer), donate_argnums=0)
    compiled_step = step.lower(state, batch, jax.random.key(0)).compile()
    memory = compiled_step.memory_analysis()
    return {
        **counts,
        "forward_gflops": round(_gflops(forward), 3),
        "backbone_forward_gflops": round(_gflops(backbone_forward), 3),
        "train_step_gflops": round(_gflops(compiled_step), 3),
        "train_step_temp_bytes": int(getattr(memory, "temp_size_in_bytes", -1)),
        "canvas": int(config.data.canvas),
        "per_device_batch": per_device,
    }


def main(argv):
    del argv
    print(json.dumps(measure(_CONFIG.value)), flush=True)


if __name__ == "__main__":
    # Flags are defined only when run as a program, so the module can be imported (tests,
    # notebooks) beside other entry points that define the same flag names.
    _CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
    app.run(main)
