"""What a config costs: parameters (total / trainable) and XLA's compiled FLOPs and memory.

    python -m frozen_det.resources --config configs/paper/fpn_frozen_72ep.py [--config.x=y ...]

prints one JSON object:
  params_total, params_trainable       (BN statistics counted in the total, as Keras does)
  forward_gflops                       inference forward pass of the whole detector
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
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app
from ml_collections import config_flags

from frozen_det.models import build_model, needs_class_statistics, trainable_mask
from frozen_det.models.backbones import build_backbone
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


def _temp_bytes(compiled) -> int:
    return int(getattr(compiled.memory_analysis(), "temp_size_in_bytes", -1))


def _per_device_batch(config) -> int:
    return max(1, int(config.train.batch_size) // jax.device_count())


def _sample_batch(spec) -> dict:
    """Concrete zeros with one valid box per image: enough for target assignment to trace."""
    batch = {k: np.zeros(v.shape, v.dtype) for k, v in spec.items()}
    batch["boxes"][:, 0] = (8, 8, 64, 64)
    batch["valid"][:, 0] = True
    batch["classes"][:, 0] = 1
    return batch


def parameter_counts(config):
    """({params_total, params_trainable}, model, abstract variables, trainable mask). Losses
    that read the training split's class counts get uniform stand-ins (costs do not depend on
    them)."""
    stats = None
    if needs_class_statistics(config.model):
        from frozen_det.data.class_stats import uniform_statistics
        stats = uniform_statistics(int(config.model.num_classes) - 1)
    model = build_model(config.model, stats)
    spec = abstract_batch(config, 1)
    variables = jax.eval_shape(
        lambda b: model.init({"params": jax.random.key(0), "sampling": jax.random.key(0)}, b, train=True),
        spec)
    mask = trainable_mask(config, variables["params"])
    trainable, _ = partition.split(variables["params"], mask)
    return {"params_total": partition.count_params(variables),
            "params_trainable": partition.count_params(trainable)}, model, variables, mask


def _init(model, config) -> dict:
    rngs = {"params": jax.random.key(0), "sampling": jax.random.key(1)}
    return jax.jit(lambda b: model.init(rngs, b, train=True))(_sample_batch(abstract_batch(config, 1)))


def _train_step_flops(model, variables, mask, batch, backbone_features=None) -> tuple[float, Any]:
    """(GFLOPs, compiled) of one SGD train step; with `backbone_features`, of the heads alone."""
    def loss_fn(params, batch_stats, b, rng):
        b, feats = b
        (losses, metrics), updates = model.apply(
            {"params": params, "batch_stats": batch_stats}, b, train=True, backbone_features=feats,
            rngs=dict(zip(("sampling", "dropout"), jax.random.split(rng))), mutable=["batch_stats"])
        return losses["total"], (metrics, updates["batch_stats"])

    optimizer = optax.sgd(0.01, momentum=0.9)
    state = create_train_state(variables, mask, optimizer)
    step = jax.jit(make_train_step(loss_fn, optimizer), donate_argnums=0)
    compiled = step.lower(state, (batch, backbone_features), jax.random.key(0)).compile()
    return _gflops(compiled), compiled


def freeze_savings(config, model=None, variables=None, mask=None, batch=None) -> dict:
    """FLOPs of the backbone's forward pass, the full train step and the heads' train step
    (backbone outputs given as inputs). With a frozen backbone, full = backbone + heads: XLA
    built no backbone backward pass."""
    if model is None:
        _, model, _, mask = parameter_counts(config)
        batch = _sample_batch(abstract_batch(config, _per_device_batch(config)))
        variables = _init(model, config)
    backbone = build_backbone(config.model.backbone)
    backbone_vars = {k: v["backbone"] for k, v in variables.items() if "backbone" in v}
    # The frozen parts of a backbone run in inference mode inside the train step too.
    backbone_forward = jax.jit(lambda v, x: backbone.apply(v, x, train=True, mutable=["batch_stats"])[0])
    compiled_backbone = backbone_forward.lower(backbone_vars, batch["image"]).compile()
    features = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype),
                            jax.eval_shape(backbone_forward, backbone_vars, batch["image"]))
    train_gflops, compiled_step = _train_step_flops(model, variables, mask, batch)
    head_gflops, _ = _train_step_flops(model, variables, mask, batch, features)
    return {"backbone_train_mode_forward_gflops": round(_gflops(compiled_backbone), 3),
            "train_step_gflops": round(train_gflops, 3),
            "head_train_step_gflops": round(head_gflops, 3),
            "_compiled_step": compiled_step}


def train_step_cost(config) -> dict:
    """params_total, params_trainable, train_step_gflops and train_step_temp_bytes, as in
    `measure` but from the train step's compilation alone."""
    counts, model, _, mask = parameter_counts(config)
    batch = _sample_batch(abstract_batch(config, _per_device_batch(config)))
    gflops, compiled = _train_step_flops(model, _init(model, config), mask, batch)
    return {**counts, "train_step_gflops": round(gflops, 3), "train_step_temp_bytes": _temp_bytes(compiled)}


def measure(config) -> dict:
    counts, model, _, mask = parameter_counts(config)
    per_device = _per_device_batch(config)
    spec = abstract_batch(config, per_device)
    batch = _sample_batch(spec)
    variables = _init(model, config)

    forward = jax.jit(lambda v, b: model.apply(v, b, train=False)).lower(variables, batch).compile()
    backbone = build_backbone(config.model.backbone)
    backbone_vars = {k: v["backbone"] for k, v in variables.items() if "backbone" in v}
    backbone_forward = jax.jit(lambda v, x: backbone.apply(v, x, train=False)).lower(
        backbone_vars, batch["image"]).compile()

    savings = freeze_savings(config, model, variables, mask, batch)
    temp_bytes = _temp_bytes(savings.pop("_compiled_step"))
    return {
        **counts,
        "forward_gflops": round(_gflops(forward), 3),
        "backbone_forward_gflops": round(_gflops(backbone_forward), 3),
        **savings,
        "train_step_temp_bytes": temp_bytes,
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
