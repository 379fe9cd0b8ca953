"""The training run, top to bottom, for any task (frozen_det.tasks): setup, input, model, state,
resume, the jitted step, the loop with its periodic actions (metrics, progress/ETA,
checkpoints, evaluation, preemption).

Resume order: (1) this workdir's own newest readable checkpoint; (2) `train.init_from`, another
run's checkpoint directory (e.g. the LVIS second stage starting from the first), its backbone
replaced by `train.backbone_from`'s where that is set; (3) the backbone's pretrained weights
(`model.backbone.init_checkpoint`); (4) scratch.

Nothing lost, nothing repeated: SIGTERM (a preemption notice; on several hosts JAX's sync
service) and Ctrl-C save the step the run is on and stop; a resumed run continues from its
checkpoint exactly (model, optimizer, step, input position) and first drops the lines of
`train_metrics.jsonl` past that step (a run killed without saving had logged them), so no step
is logged twice. Ctrl-C then raises KeyboardInterrupt (the caller stops too, e.g. quickstart's
evaluation); SIGTERM returns. A non-finite loss never reaches the weights (training/step.py):
`train.nonfinite="stop"` raises FloatingPointError naming the step and the last good
checkpoint, before anything else is saved; "skip" counts the skipped updates and goes on.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Callable

import jax
import ml_collections
import numpy as np
from clu import metric_writers, parameter_overview, periodic_actions

from frozen_det import config as config_lib
from frozen_det.evaluation.runner import write_eval_json
from frozen_det.runtime import hide_accelerators_from_tensorflow
from frozen_det.tasks import get_task
from frozen_det.training import sharding
from frozen_det.training.checkpointing import Checkpointer, PreemptionFlag
from frozen_det.training.run import other_runs_weights
from frozen_det.training.state import build_state
from frozen_det.training.step import make_train_step
from frozen_det.tree_paths import count_elements

log = logging.getLogger(__name__)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, then: Callable | None = None) -> dict:
    """Runs (or resumes) training; returns the last evaluation result (or {}). `then(task,
    model, variables)`, if given, is called with the variables training ended with (a finished
    run's restored ones), unless it stopped early: the quick start draws predictions with them
    without restoring the run a second time."""
    # ------------------------------------------------------------------ setup
    hide_accelerators_from_tensorflow()
    config = config_lib.complete(config)
    if config.train.distributed:
        jax.distributed.initialize()
    config = config_lib.resolve(config)  # every field, and the batches vs the devices, before compiling
    task = get_task(config)
    os.makedirs(workdir, exist_ok=True)
    mesh = sharding.make_mesh()
    writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)

    # ------------------------------------------------------------------ input pipeline
    train_pipeline = task.train_pipeline()
    task.validate(train_pipeline.info)

    # ------------------------------------------------------------------ model and state
    model = task.build_model(train_pipeline)
    state, state_shardings, optimizer, schedule = build_state(config, task, model, mesh)
    if jax.process_index() == 0:
        parameter_overview.log_parameter_overview(state.params, msg="trainable parameters")
        log.info(
            "parameters: %d trainable, %d frozen", count_elements(state.params), count_elements(state.frozen_params)
        )

    # ------------------------------------------------------------------ resume
    checkpointer = Checkpointer(
        workdir,
        max_to_keep=config.train.keep_checkpoints,
        save_interval_steps=config.train.checkpoint_every,
        writer=True,
    )
    # Also on resume: this run's checkpoints hold only its trainable part; the rest is the other
    # runs' (e.g. everything but the classifier in the LVIS second stage).
    state, reports = other_runs_weights(state, config)
    if jax.process_index() == 0:
        for name, report in reports.items():  # init_from.json, backbone_from.json
            with open(os.path.join(workdir, f"{name}.json"), "w") as f:
                json.dump(report, f, indent=1)
    if checkpointer.latest_step() is not None:
        state, meta = checkpointer.restore(state)
        train_pipeline.restore(meta["data"])
        log.info("resumed from step %d", int(state.step))
    metrics_log = os.path.join(workdir, "train_metrics.jsonl")
    if jax.process_index() == 0:
        drop_logged_steps_after(metrics_log, int(jax.device_get(state.step)))

    # ------------------------------------------------------------------ the jitted step
    batch_sharding = sharding.batch_sharding(mesh)
    replicated = sharding.replicated(mesh)
    train_step = jax.jit(
        make_train_step(task.loss_fn(model), optimizer),
        in_shardings=(state_shardings, batch_sharding, replicated),
        out_shardings=(state_shardings, replicated),
        donate_argnums=0,
    )
    base_rng = jax.random.key(int(config.train.seed) + 1)
    to_device = lambda b: sharding.global_batch(b, mesh)
    eval_pipeline = None

    def run_eval(step: int) -> dict:
        nonlocal eval_pipeline
        eval_pipeline = eval_pipeline or task.eval_pipeline()
        result = task.evaluate(model, state.variables(), eval_pipeline, to_device)
        path = write_eval_json(workdir, eval_pipeline.split, step, result)
        writer.write_scalars(step, {f"eval/{k}": v for k, v in result.items() if isinstance(v, float)})
        log.info("eval step %d: %s (%s)", step, task.summary(result), path)
        return dict(result, path=path, step=step)

    # ------------------------------------------------------------------ loop
    total_steps = int(config.train.total_steps)
    log_every, eval_every = config.train.log_every, config.train.eval_every
    step = int(jax.device_get(state.step))
    progress = periodic_actions.ReportProgress(
        num_train_steps=total_steps, writer=writer, every_secs=None, every_steps=log_every
    )
    preemption = PreemptionFlag(catch_interrupt=True)
    meta = lambda: {"data": train_pipeline.state(), "config": config.to_json()}
    last_eval: dict = {}
    accumulated: list = []
    start, start_step = time.time(), step
    first_step = step
    preempted = False

    def check_finite() -> None:
        """train.nonfinite="stop": the first non-finite step of those not yet logged stops the run."""
        bad = first_nonfinite(accumulated, step)
        if bad is not None and config.train.nonfinite == "stop":
            raise FloatingPointError(
                f"non-finite loss or gradients at step {bad}: the weights were not updated from it; the last "
                f"good checkpoint is {last_good(checkpointer)}. Lower "
                "train.schedule.base_lr, set train.grad_clip_norm, or train.nonfinite='skip' to skip such steps."
            )

    try:
        while step < total_steps:
            batch = task.model_batch(next(train_pipeline), train=True)
            state, metrics = train_step(state, to_device(batch), base_rng)
            step += 1
            if step == first_step + 1:  # steps/s and the ETA leave out the first step's compilation
                jax.block_until_ready(metrics)
                start, start_step = time.time(), step
            accumulated.append(metrics)
            progress(step)
            if step % log_every == 0 or step == total_steps:
                check_finite()
                means = mean_metrics(accumulated)
                means["learning_rate"] = float(schedule(step - 1))
                if means["nonfinite_steps"]:
                    log.warning("skipped %d non-finite updates up to step %d", means["nonfinite_steps"], step)
                writer.write_scalars(step, {f"train/{k}": v for k, v in means.items() if v is not None})
                if jax.process_index() == 0:
                    with open(metrics_log, "a") as f:
                        f.write(json.dumps({"step": step, **means}, allow_nan=False) + "\n")
                rate = (step - start_step) / max(time.time() - start, 1e-9) if step > start_step else 0.0
                eta = f"ETA {(total_steps - step) / rate / 60:.1f} min" if rate > 0 else "ETA ?"
                loss = f"{means['total']:.4f}" if means.get("total") is not None else "n/a"
                print(
                    f"{progress_bar(step, total_steps)} step {step}/{total_steps}  loss {loss}  "
                    f"lr {means['learning_rate']:.4g}  {rate:.2f} steps/s  {eta}",
                    flush=True,
                )
                accumulated = []
            # Every host reaches the same decision at the same step (PreemptionFlag).
            preempted = preemption.should_stop(step)
            if checkpointer.should_save(step) or step == total_steps or preempted:
                check_finite()
                checkpointer.save(state, meta())
            if preempted:
                log.warning("preempted: saved step %d, stopping", step)
                break
            if eval_every and step % eval_every == 0 and step != total_steps:
                last_eval = run_eval(step)
        if step >= total_steps and not preempted and config.train.eval_at_end:
            last_eval = run_eval(step)
        if step >= total_steps and not preempted and then is not None:
            then(task, model, state.variables())
    finally:
        preemption.restore_handlers()
        checkpointer.close()
        writer.flush()
    if preemption.interrupted:
        raise KeyboardInterrupt(f"interrupted: saved step {step} in {checkpointer.directory}; the same command resumes")
    return last_eval


def last_good(checkpointer: Checkpointer) -> str:
    step = checkpointer.latest_step()
    return f"step {step} in {checkpointer.directory}" if step is not None else "none (no step was saved)"


def drop_logged_steps_after(path: str, step: int) -> None:
    """Keeps the lines of the metrics log `path` up to `step`, the step a run resumes from: a run
    killed after logging steps it never saved would otherwise log them twice (and a line a kill
    cut short would break the file)."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        lines = f.readlines()
    kept = [line for line in lines if _logged_step(line) <= step]
    if len(kept) != len(lines):
        log.info(
            "%s: dropped %d lines past step %d, the step this run resumes from", path, len(lines) - len(kept), step
        )
        with open(path, "w") as f:
            f.writelines(kept)


def _logged_step(line: str) -> float:
    """The step of a metrics log line; infinity for a line that is not a whole record."""
    try:
        return json.loads(line)["step"] if line.endswith("\n") else float("inf")
    except (ValueError, KeyError, TypeError):
        return float("inf")


def first_nonfinite(accumulated: list, last_step: int) -> int | None:
    """The step of the first of `accumulated` (the metrics of the steps up to `last_step`) whose
    update was skipped as non-finite, or None."""
    flags = [float(jax.device_get(m["nonfinite"])) for m in accumulated]
    bad = [i for i, flag in enumerate(flags) if flag]
    return last_step - len(flags) + 1 + bad[0] if bad else None


def mean_metrics(accumulated: list) -> dict:
    """Means over the steps whose update was finite, and `nonfinite_steps`, how many were not
    (None for a metric none of them has a finite value of: JSON has no NaN)."""
    host = [jax.device_get(m) for m in accumulated]
    finite = [m for m in host if not m["nonfinite"]]
    means = {}
    for key in host[0]:
        if key != "nonfinite":
            value = float(np.mean([m[key] for m in finite])) if finite else float("nan")
            means[key] = value if np.isfinite(value) else None
    means["nonfinite_steps"] = len(host) - len(finite)
    return means


def progress_bar(step: int, total: int, width: int = 24) -> str:
    done = int(width * step / max(total, 1))
    return "[" + "#" * done + "." * (width - done) + "]"
