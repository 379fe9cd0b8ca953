"""The training run, top to bottom: setup, input, model, state, resume, the jitted step, the
loop with its periodic actions (metrics, progress/ETA, checkpoints, evaluation, preemption).

Resume order: (1) this workdir's own latest checkpoint; (2) `train.init_from`, another run's
checkpoint directory (e.g. the LVIS second stage starting from the first); (3) the backbone's
pretrained weights (`model.backbone.init_checkpoint`); (4) scratch.
"""

from __future__ import annotations

import json
import logging
import os
import time

import jax
import ml_collections
import numpy as np
from clu import metric_writers, parameter_overview, periodic_actions

from frozen_det import data as data_lib
from frozen_det.checkpoints.pretrained import load_backbone_variables
from frozen_det.evaluation.runner import evaluate_detector, make_detect_fn, write_eval_json
from frozen_det.models import build_model, needs_class_statistics, trainable_mask, validate_model_config
from frozen_det.training import partition, sharding
from frozen_det.training.checkpointing import Checkpointer, PreemptionFlag
from frozen_det.training.optimizer import build_optimizer
from frozen_det.training.step import TrainState, create_train_state, make_train_step

log = logging.getLogger(__name__)

MODEL_INPUTS = ("image", "boxes", "classes", "valid", "masks", "image_info")


def _hide_accelerators_from_tensorflow():
    import tensorflow as tf
    tf.config.set_visible_devices([], "GPU")


def model_batch(batch: dict, with_masks: bool) -> dict:
    """The part of a pipeline batch the model reads."""
    return {k: v for k, v in batch.items() if k in MODEL_INPUTS and (with_masks or k != "masks")}


def loss_fn_for(model, freeze_batch_stats: bool = False):
    """`freeze_batch_stats`: the restored BN statistics are kept (returned unchanged), e.g. in
    the LVIS second stage, where only the classifier may change."""
    def loss_fn(params, batch_stats, batch, rng):
        sampling, dropout = jax.random.split(rng)
        (losses, metrics), updates = model.apply(
            {"params": params, "batch_stats": batch_stats}, batch, train=True,
            rngs={"sampling": sampling, "dropout": dropout}, mutable=["batch_stats"])
        new_stats = batch_stats if freeze_batch_stats else updates["batch_stats"]
        return losses["total"], ({**losses, **metrics}, new_stats)
    return loss_fn


def training_class_statistics(config, source, split: str):
    """The train split's class counts when the model's losses need them (else None); one
    label-only pass over the split, logged."""
    if not needs_class_statistics(config.model):
        return None
    from frozen_det.data.class_stats import source_statistics
    stats = source_statistics(source, split)
    log.info("class statistics of %r: %d images, %d instances, %d classes without instances", split,
             stats.num_images, int(stats.instance_counts.sum()), int((stats.instance_counts[1:] == 0).sum()))
    return stats


def initial_variables(config, model, example_batch, rng, train: bool = True) -> dict:
    """Random init (jitted), then the backbone's pretrained weights if the config names them.
    `train=False` initialises through the inference path (same variables; needs no training
    statistics)."""
    first = {k: v[:1] for k, v in example_batch.items()}
    variables = jax.jit(lambda b: model.init({"params": rng, "sampling": rng, "dropout": rng}, b, train=train))(first)
    variables = jax.tree.map(np.asarray, dict(variables))
    init_checkpoint = config.model.backbone.get("init_checkpoint") or ""
    if init_checkpoint:
        from frozen_det.models.backbones import build_backbone
        backbone = build_backbone(config.model.backbone)
        loaded, _ = load_backbone_variables(init_checkpoint, backbone)
        for collection, tree in loaded.items():
            if collection in variables:
                variables[collection] = dict(variables[collection], backbone=tree)
        log.info("backbone initialised from %s", init_checkpoint)
    return variables


def build_state(config, model, example_batch, mesh, train: bool = True):
    """TrainState laid out on the mesh, plus its shardings and the optimizer's schedule."""
    optimizer, schedule = build_optimizer(config.train)
    variables = initial_variables(config, model, example_batch, jax.random.key(int(config.train.seed)), train)
    mask = trainable_mask(config, variables["params"])
    state = create_train_state(variables, mask, optimizer)
    rules = [tuple(r) for r in config.train.get("sharding_rules", [])]
    shardings = sharding.state_shardings(state, mesh, rules, config.train.get("fsdp_min_size"))
    state = jax.device_put(state, shardings)
    return state, shardings, optimizer, schedule


def _init_from_other_run(state: TrainState, directory: str) -> TrainState:
    """Parameters and BN statistics (not optimizer state or step) of another run's latest
    checkpoint, whatever its trainable partition (Checkpointer.restore_into)."""
    other = Checkpointer(os.path.dirname(os.path.abspath(directory.rstrip("/")))
                         if os.path.basename(directory.rstrip("/")) == "checkpoints" else directory)
    if other.latest_step() is None:
        other.close()
        raise FileNotFoundError(f"train.init_from={directory}: no checkpoint there; train that run first")
    step = other.latest_step()
    state = other.restore_into(state)
    other.close()
    log.info("initialised from %s step %d", directory, step)
    return state


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Runs (or resumes) training; returns the last evaluation result (or {})."""
    # ------------------------------------------------------------------ setup
    _hide_accelerators_from_tensorflow()
    if config.train.get("distributed", False):
        jax.distributed.initialize()
    os.makedirs(workdir, exist_ok=True)
    mesh = sharding.make_mesh()
    sharding.check_batch_size(int(config.train.batch_size), mesh)
    writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)

    # ------------------------------------------------------------------ input pipeline
    train_pipeline = data_lib.build_train_pipeline(config)
    info = train_pipeline.source.info
    validate_model_config(config, num_data_classes=info.num_classes)
    with_masks = bool(config.model.mask.enabled)
    first_batch = next(train_pipeline)  # shapes for init; also the first training batch

    # ------------------------------------------------------------------ model and state
    model = build_model(config.model, training_class_statistics(config, train_pipeline.source, train_pipeline.split))
    state, state_shardings, optimizer, schedule = build_state(
        config, model, model_batch(first_batch, with_masks), mesh)
    if jax.process_index() == 0:
        parameter_overview.log_parameter_overview(state.params, msg="trainable parameters")
        log.info("parameters: %d trainable, %d frozen", partition.count_params(state.params),
                 partition.count_params(state.frozen_params))

    # ------------------------------------------------------------------ resume
    checkpointer = Checkpointer(workdir, max_to_keep=int(config.train.get("keep_checkpoints", 3)),
                                save_interval_steps=int(config.train.get("checkpoint_every", 1000)))
    pending = [first_batch]
    if config.train.get("init_from"):
        # Also on resume: this run's checkpoints hold only its trainable part; the rest is the
        # other run's (e.g. everything but the classifier in the LVIS second stage).
        state = _init_from_other_run(state, config.train.init_from)
    if checkpointer.latest_step() is not None:
        state, meta = checkpointer.restore(state)
        train_pipeline.restore(meta["data"])
        pending = []
        log.info("resumed from step %d", int(state.step))

    # ------------------------------------------------------------------ the jitted step
    batch_sharding = sharding.batch_sharding(mesh)
    replicated = sharding.replicated(mesh)
    loss_fn = loss_fn_for(model, bool(config.train.get("freeze_batch_stats", False)))
    train_step = jax.jit(make_train_step(loss_fn, optimizer),
                         in_shardings=(state_shardings, batch_sharding, replicated),
                         out_shardings=(state_shardings, replicated), donate_argnums=0)
    base_rng = jax.random.key(int(config.train.seed) + 1)

    detect_fn = make_detect_fn(model)
    eval_pipeline = None

    def run_eval(step: int) -> dict:
        nonlocal eval_pipeline
        eval_pipeline = eval_pipeline or data_lib.build_eval_pipeline(config)
        variables = {"params": state.all_params(), "batch_stats": state.batch_stats}
        result = evaluate_detector(detect_fn, variables, eval_pipeline,
                                   to_device=lambda b: sharding.global_batch(b, mesh),
                                   include_masks=with_masks,
                                   max_detections=int(config.model.detections.max_detections),
                                   metric=eval_pipeline.config.eval_metric)
        path = write_eval_json(workdir, eval_pipeline.split, step, result)
        writer.write_scalars(step, {f"eval/{k}": v for k, v in result.items() if isinstance(v, float)})
        log.info("eval step %d: AP %.4f AP50 %.4f (%s)", step, result["AP"], result["AP50"], path)
        return result

    # ------------------------------------------------------------------ loop
    total_steps = int(config.train.total_steps)
    log_every = int(config.train.get("log_every", 50))
    eval_every = int(config.train.get("eval_every", 0))
    step = int(jax.device_get(state.step))
    progress = periodic_actions.ReportProgress(num_train_steps=total_steps, writer=writer,
                                               every_secs=None, every_steps=log_every)
    preempted = PreemptionFlag()
    meta = lambda: {"data": train_pipeline.state(), "config": config.to_json()}
    last_eval: dict = {}
    accumulated: list = []
    start, start_step = time.time(), step
    first_step = step
    try:
        while step < total_steps:
            batch = pending.pop() if pending else next(train_pipeline)
            device_batch = sharding.global_batch(model_batch(batch, with_masks), mesh)
            state, metrics = train_step(state, device_batch, base_rng)
            step += 1
            if step == first_step + 1:  # steps/s and the ETA leave out the first step's compilation
                jax.block_until_ready(metrics)
                start, start_step = time.time(), step
            accumulated.append(metrics)
            progress(step)
            if step % log_every == 0 or step == total_steps:
                means = {k: float(np.mean([jax.device_get(m[k]) for m in accumulated])) for k in accumulated[0]}
                means["learning_rate"] = float(schedule(step - 1))
                if not all(np.isfinite(v) for v in means.values()):
                    checkpointer.close()
                    raise FloatingPointError(f"non-finite training metrics at step {step}: {means}; the last "
                                             f"good checkpoint is step {checkpointer.latest_step()}")
                writer.write_scalars(step, {f"train/{k}": v for k, v in means.items()})
                if jax.process_index() == 0:
                    with open(os.path.join(workdir, "train_metrics.jsonl"), "a") as f:
                        f.write(json.dumps({"step": step, **means}) + "\n")
                rate = (step - start_step) / max(time.time() - start, 1e-9) if step > start_step else 0.0
                eta = f"ETA {(total_steps - step) / rate / 60:.1f} min" if rate > 0 else "ETA ?"
                print(f"{progress_bar(step, total_steps)} step {step}/{total_steps}  loss {means['total']:.4f}  "
                      f"lr {means['learning_rate']:.4g}  {rate:.2f} steps/s  {eta}", flush=True)
                accumulated = []
            if checkpointer.should_save(step) or step == total_steps or preempted.is_set:
                checkpointer.save(state, meta())
            if preempted.is_set:
                log.warning("SIGTERM: saved step %d, stopping", step)
                break
            if eval_every and step % eval_every == 0 and step != total_steps:
                last_eval = run_eval(step)
        if step >= total_steps and not preempted.is_set and config.train.get("eval_at_end", True):
            last_eval = run_eval(step)
    finally:
        preempted.restore_handlers()
        checkpointer.close()
        writer.flush()
    return last_eval


def progress_bar(step: int, total: int, width: int = 24) -> str:
    done = int(width * step / max(total, 1))
    return "[" + "#" * done + "." * (width - done) + "]"


def restore_for_inference(config, workdir: str, step: int | None = None, example_batch: dict | None = None):
    """(model, variables, step) from a run's checkpoint: frozen parameters are rebuilt as in
    training, everything else is restored (latest checkpoint unless `step`)."""
    _hide_accelerators_from_tensorflow()
    mesh = sharding.make_mesh()
    model = build_model(config.model)
    if example_batch is None:
        eval_pipeline = data_lib.build_eval_pipeline(config)
        validate_model_config(config, num_data_classes=eval_pipeline.source.info.num_classes)
        example_batch = next(iter(eval_pipeline))
    batch = model_batch(example_batch, with_masks=False)  # the inference path reads no masks
    state, _, _, _ = build_state(config, model, batch, mesh, train=False)
    if config.train.get("init_from"):  # the part this run did not train (see train_and_evaluate)
        state = _init_from_other_run(state, config.train.init_from)
    checkpointer = Checkpointer(workdir)
    if checkpointer.latest_step() is None:
        raise FileNotFoundError(f"no checkpoint in {checkpointer.directory}: train first "
                                f"(python -m frozen_det.train --workdir {workdir} ...)")
    state = checkpointer.restore_model(state, step)
    checkpointer.close()
    variables = {"params": state.all_params(), "batch_stats": state.batch_stats}
    return model, variables, int(jax.device_get(state.step))
