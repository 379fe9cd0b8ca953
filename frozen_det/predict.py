"""Run a trained run on image files: its task's predictions as JSON (and drawn PNGs).

    python -m frozen_det.predict --config CONFIG --workdir DIR --output OUT a.jpg b.png ...

writes OUT/<name>.json and, where the task draws its predictions, OUT/<name>.png. Detectors:
boxes in original pixels as [xmin, ymin, xmax, ymax], class ids and names, scores, drawn with
their labels and masks; images get the evaluation preprocessing of the data pipeline (longer
side to the canvas, pad).
"""

from __future__ import annotations

import json
import os
import sys

from absl import app, flags
from ml_collections import config_flags
from PIL import Image

from frozen_det.runtime import prepare_entry_point


def predict(
    config, workdir: str, paths: list[str], output: str, step: int | None = None, min_score: float = 0.3
) -> list[dict]:
    """Predictions for the images at `paths` (see predict_images)."""
    loaded = []
    for path in paths:
        try:
            loaded.append((path, Image.open(path).convert("RGB")))
        except (OSError, ValueError) as e:
            raise SystemExit(f"cannot read image {path}: {e}") from None
    return predict_images(config, workdir, loaded, output, step, min_score)


def predict_images(
    config,
    workdir: str,
    images: list[tuple[str, Image.Image]],
    output: str,
    step: int | None = None,
    min_score: float = 0.3,
) -> list[dict]:
    """Runs the run's latest (or `step`) checkpoint on `(name, PIL image)` pairs; writes
    OUTPUT/<stem>.json per image (and <stem>.png when the task draws), and returns the records
    (with "png" the drawing's path)."""
    from frozen_det.training.run import Run

    with Run(workdir, config) as run:
        task, model, variables = run.task, run.model, run.variables(step)
    os.makedirs(output, exist_ok=True)
    records = []
    for record in task.predict(model, variables, images, min_score=min_score):
        stem = os.path.join(output, os.path.splitext(os.path.basename(record["image"]))[0])
        drawing = record.pop("drawing", None)
        with open(f"{stem}.json", "w") as f:
            json.dump(record, f, indent=2)
        if drawing is not None:
            drawing.save(f"{stem}.png")
            record["png"] = f"{stem}.png"
        records.append(record)
    return records


def main(argv):
    paths = argv[1:]
    if not paths:
        raise app.UsageError("give one or more image paths after the flags")
    for r in predict(_CONFIG.value, _WORKDIR.value, paths, _OUTPUT.value, _STEP.value, _MIN_SCORE.value):
        summary = {"image": r["image"]}
        if "detections" in r:
            summary["num_detections"] = len(r["detections"])
        print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    prepare_entry_point(sys.argv)  # before anything (the config file too) imports TensorFlow
    # Flags are defined only when run as a program, so the module can be imported (tests,
    # notebooks) beside other entry points that define the same flag names.
    _CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
    _WORKDIR = flags.DEFINE_string("workdir", None, "The training run's directory.")
    _OUTPUT = flags.DEFINE_string("output", None, "Directory for the JSON and PNG outputs.")
    _STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
    _MIN_SCORE = flags.DEFINE_float("min_score", 0.3, "Keep (and draw) predictions at or above this score.")
    flags.mark_flags_as_required(["config", "workdir", "output"])
    app.run(main)
