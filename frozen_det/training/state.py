"""The train state and how it is born: random init, the backbone's pretrained weights, the
trainable / frozen partition, shardings.

Used by the training loop and by a run's rebuilding for inference (frozen_det.training.run):
neither `evaluate` nor `predict` imports the loop.

Only the trainable partition of the parameters is differentiated and has optimizer state; the
frozen partition rides along as constants, so XLA never builds its backward pass
(docs/architecture.md, "The freeze switch").
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from frozen_det.checkpoints.pretrained import IMAGENET_CLASSES, load_backbone_variables
from frozen_det.models.backbones import build_backbone
from frozen_det.training import partition, sharding
from frozen_det.training.optimizer import build_optimizer
from frozen_det.tree_paths import leaf_paths, overlay, unmatched_patterns

log = logging.getLogger(__name__)


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any  # trainable partition (differentiated, has optimizer state)
    frozen_params: Any  # frozen partition (constants)
    batch_stats: Any
    opt_state: Any

    def all_params(self):
        return partition.merge(self.params, self.frozen_params)

    def variables(self) -> dict:
        """The model's variables (inference and transfer)."""
        return {"params": self.all_params(), "batch_stats": self.batch_stats}


def create_train_state(
    variables: Mapping[str, Any], mask: Mapping[str, Any], optimizer: optax.GradientTransformation
) -> TrainState:
    """Splits `variables['params']` by the bool `mask` (see `partition.trainable_mask`)."""
    trainable, frozen = partition.split(variables["params"], mask)
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=trainable,
        frozen_params=frozen,
        batch_stats=variables.get("batch_stats", {}),
        opt_state=optimizer.init(trainable),
    )


def trainable_mask(config, task, params) -> dict:
    """The config's trainable partition of `params` (real or abstract): the task's freeze rules
    plus `train.trainable_only`, whose patterns must each select some parameter."""
    only = tuple(config.train.trainable_only)
    if only:
        unused = unmatched_patterns(leaf_paths(params), only)
        if unused:
            raise ValueError(
                f"config.train.trainable_only: {unused} match no parameter of this model; "
                f"parameter paths look like {leaf_paths(params)[:3]}."
            )
    return partition.trainable_mask(params, frozen=task.frozen_patterns(), trainable_only=only or None)


def load_pretrained_backbone(backbone_config, variables: dict) -> dict:
    """The backbone section's `init_checkpoint` weights in place of the backbone's random ones. A
    backbone with a classifier of its own (a classification model) takes the checkpoint's
    ImageNet head too (head convolution, and the classifier when the class counts agree); a
    classifier of another size keeps its initialisation."""
    init_checkpoint = backbone_config.init_checkpoint if backbone_config is not None else ""
    if not init_checkpoint:
        return variables
    ours = {c: tree["backbone"] for c, tree in variables.items() if "backbone" in tree}
    has_head = "classifier" in ours.get("params", {})
    checkpoint_backbone = dict(backbone_config.to_dict(), num_classes=IMAGENET_CLASSES if has_head else None)
    loaded, _ = load_backbone_variables(init_checkpoint, build_backbone(checkpoint_backbone))
    merged, report = overlay(ours, loaded)
    if report["shape_differs"]:
        log.info("backbone: not loaded from %s (shapes differ): %s", init_checkpoint, report["shape_differs"])
    for collection, tree in merged.items():
        variables[collection] = dict(variables[collection], backbone=tree)
    log.info("backbone initialised from %s (%d leaves)", init_checkpoint, len(report["restored"]))
    return variables


def _init_compiler_options() -> dict | None:
    """The initialisation program runs once, so XLA:CPU's LLVM optimisations only cost: without
    them it compiles in half the time (the quick start's detector: 13 s -> 6 s). Its random
    values may then differ from an optimised build's in the last bit of a float32 (fused
    multiply-adds), the same from run to run. Asked when initialising, not at import:
    jax.distributed.initialize() must come before the backend starts."""
    return {"xla_backend_optimization_level": 0} if jax.default_backend() == "cpu" else None


def initial_variables(config, task, model, rng: jax.Array, train: bool = True) -> dict:
    """Random init (jitted) through the train (or inference) path, then the backbone's
    pretrained weights if the config names them. Checks the trainable partition's rules on
    the traced shapes first, so a typo fails before anything compiles."""
    example = task.model_batch(task.example_batch(1, train), train)
    init = jax.jit(lambda b: model.init(task.init_rngs(rng), b, train=train)).lower(example)  # one trace
    trainable_mask(config, task, init.out_info["params"])
    variables = jax.tree.map(np.asarray, dict(init.compile(_init_compiler_options())(example)))
    return load_pretrained_backbone(task.backbone_config(), variables)


def build_state(config, task, model, mesh, train: bool = True):
    """(TrainState laid out on the mesh, its shardings, the optimizer, its schedule)."""
    optimizer, schedule = build_optimizer(config.train)
    variables = initial_variables(config, task, model, jax.random.key(int(config.train.seed)), train)
    state = create_train_state(variables, trainable_mask(config, task, variables["params"]), optimizer)
    rules = [tuple(r) for r in config.train.sharding_rules]
    shardings = sharding.state_shardings(state, mesh, rules, config.train.fsdp_min_size or None)
    return jax.device_put(state, shardings), shardings, optimizer, schedule
