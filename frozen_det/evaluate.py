"""Evaluate a run's checkpoint on the eval split with its task's metrics (COCO / LVIS for
detectors).

    python -m frozen_det.evaluate --config CONFIG --workdir DIR [--step N]

writes DIR/eval/<split>_step<N>.json (for detectors: AP, AP50, AP75, APs, APm, APl, per-class
AP, and mask_* with a mask head; for classifiers: top1, top5, loss, per-class accuracy) and
prints the summary as one JSON line. `--iou_thresholds=default` (detectors) adds
DIR/eval/<split>_step<N>_ap_vs_iou.json: COCO-style AP and Pascal VOC AP (all-point and 11-point
rules) at IoU 0.1, 0.2, ..., 0.9 (frozen_det.evaluation.ap_vs_iou).

The run's own dataset (the data section it was trained with) writes those names; another one
(a different `--config.data.path`, split, source...) writes `<split>_step<N>_data-<key>.json`,
`<key>` a hash of its data section, so that it never overwrites the run's own results. Shows a
progress bar with an ETA while it evaluates; a mistyped --workdir or --step fails at once,
naming the steps the run kept.
"""

from __future__ import annotations

import hashlib
import json
import sys

import jax
from absl import flags
from ml_collections import config_flags

from frozen_det.runtime import prepare_entry_point, run_main

# Data fields that change how a dataset is read, not which examples it holds.
_READING_FIELDS = ("batch_size", "eval_batch_size", "num_parallel_calls", "prefetch", "shuffle_buffer")


def data_key(data, own_data) -> str:
    """ "" when the data section `data` reads the run's own dataset (`own_data`, the section it
    was trained with), else `_data-<8 hex digits>` naming it (module docstring)."""

    def identity(section) -> str:
        fields = {k: v for k, v in section.to_dict().items() if k not in _READING_FIELDS}
        return json.dumps(fields, sort_keys=True, default=str)

    if identity(data) == identity(own_data):
        return ""
    return "_data-" + hashlib.sha1(identity(data).encode()).hexdigest()[:8]


def evaluate(config, workdir: str, step: int | None = None, iou_thresholds=None) -> dict:
    """Evaluates and writes the JSON; `iou_thresholds` (detectors): also AP at each threshold,
    written to <split>_step<N>_ap_vs_iou.json."""
    from frozen_det.evaluation.runner import write_eval_json
    from frozen_det.training import sharding
    from frozen_det.training.run import Run

    with Run(workdir, config) as run:
        run.check_step(step)
        task, model = run.task, run.model
        options = {}
        if iou_thresholds:
            if "iou_thresholds" not in task.evaluate_options:
                raise ValueError(f"--iou_thresholds: model.type={task.name!r} evaluates without IoU thresholds")
            options["iou_thresholds"] = [float(t) for t in iou_thresholds]
        key = data_key(run.config.data, run.saved_config().data)
        workdir = run.workdir
        eval_pipeline = task.eval_pipeline()
        task.validate(eval_pipeline.info)
        state = run.restored_state(step)
        variables, step = state.variables(), int(jax.device_get(state.step))
    mesh = sharding.make_mesh()
    result = task.evaluate(model, variables, eval_pipeline, lambda b: sharding.global_batch(b, mesh), **options)
    curve = result.pop("ap_vs_iou", None)
    if curve is not None:
        result["ap_vs_iou_path"] = write_eval_json(workdir, eval_pipeline.split, step, curve, f"{key}_ap_vs_iou")
    result["path"] = write_eval_json(workdir, eval_pipeline.split, step, result, key)
    result["step"] = step
    return result


def main(argv):
    del argv
    thresholds = _IOU_THRESHOLDS.value
    if thresholds == ["default"]:
        from frozen_det.evaluation.ap_vs_iou import DEFAULT_THRESHOLDS

        thresholds = list(DEFAULT_THRESHOLDS)
    result = evaluate(_CONFIG.value, _WORKDIR.value, _STEP.value, thresholds)
    summary = {k: v for k, v in result.items() if not isinstance(v, dict)}
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    prepare_entry_point(sys.argv, runs=("workdir",))  # before anything (the config file too) imports TensorFlow
    # Flags are defined only when run as a program, so the module can be imported (tests,
    # notebooks) beside other entry points that define the same flag names.
    _CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
    _WORKDIR = flags.DEFINE_string("workdir", None, "The training run's directory.")
    _STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
    _IOU_THRESHOLDS = flags.DEFINE_list(
        "iou_thresholds",
        [],
        "Detectors: also AP at these IoU thresholds ('default': 0.1, ..., 0.9), "
        "COCO-style and VOC (all-point, 11-point), in <split>_step<N>_ap_vs_iou.json.",
    )
    flags.mark_flags_as_required(["config", "workdir"])
    run_main(main)
