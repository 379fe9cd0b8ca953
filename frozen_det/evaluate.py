"""Evaluate a run's checkpoint on the eval split with its task's metrics (COCO / LVIS for
detectors).

    python -m frozen_det.evaluate --config CONFIG --workdir DIR [--step N]

writes DIR/eval/<split>_step<N>.json (for detectors: AP, AP50, AP75, APs, APm, APl, per-class
AP, and mask_* with a mask head) and prints the summary as one JSON line.
"""

from __future__ import annotations

import json
import logging

from absl import app, flags
from ml_collections import config_flags

from frozen_det.runtime import quiet_tensorflow


def evaluate(config, workdir: str, step: int | None = None) -> dict:
    from frozen_det.evaluation.runner import write_eval_json
    from frozen_det.inference import restore_for_inference
    from frozen_det.training import sharding

    config, task, model, variables, step = restore_for_inference(config, workdir, step)
    eval_pipeline = task.eval_pipeline()
    task.validate(eval_pipeline.info)
    mesh = sharding.make_mesh()
    result = task.evaluate(model, variables, eval_pipeline, lambda b: sharding.global_batch(b, mesh))
    result["path"] = write_eval_json(workdir, eval_pipeline.split, step, result)
    result["step"] = step
    return result


def main(argv):
    del argv
    logging.getLogger().setLevel(logging.INFO)
    result = evaluate(_CONFIG.value, _WORKDIR.value, _STEP.value)
    summary = {k: v for k, v in result.items() if not isinstance(v, dict)}
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    quiet_tensorflow()  # before anything (the config file too) imports TensorFlow
    # Flags are defined only when run as a program, so the module can be imported (tests,
    # notebooks) beside other entry points that define the same flag names.
    _CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
    _WORKDIR = flags.DEFINE_string("workdir", None, "The training run's directory.")
    _STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(main)
