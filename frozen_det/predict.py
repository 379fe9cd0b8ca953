"""Run a trained run on image files: its task's predictions as JSON (and drawn PNGs).

    python -m frozen_det.predict --config CONFIG --workdir DIR --output OUT a.jpg b.png ...

writes OUT/<name>.json and, where the task draws its predictions, OUT/<name>.png. Detectors:
boxes in original pixels as [xmin, ymin, xmax, ymax], class ids and names, scores, drawn with
their labels and masks; images get the evaluation preprocessing of the data pipeline (longer
side to the canvas, pad).

The user's files are never overwritten: <name> is the input's stem (`a` for a.jpg) unless two
inputs share it (a.jpg and a.png write a.jpg.json and a.png.json; two a.jpg of different
folders a.jpg.json and a.jpg_2.json), and OUT may not be the folder of an input (the drawing
a.png of a.jpg would replace the user's own a.png). 16-bit images are read at their full range.
"""

from __future__ import annotations

import collections
import json
import os
import sys

from absl import app, flags
from ml_collections import config_flags
from PIL import Image

from frozen_det.data.files import read_rgb
from frozen_det.runtime import prepare_entry_point, run_main


def predict(
    config, workdir: str, paths: list[str], output: str, step: int | None = None, min_score: float = 0.3
) -> list[dict]:
    """Predictions for the images at `paths` (see predict_images)."""
    check_output(output, paths)
    loaded = []
    for path in paths:
        try:
            loaded.append((path, read_rgb(path)))
        except (OSError, ValueError) as e:
            raise ValueError(f"cannot read image {path}: {e}") from None
    return predict_images(config, workdir, loaded, output, step, min_score)


def check_output(output: str, names: list[str]) -> None:
    """Refuses an output folder that holds one of the input files (module docstring)."""
    folder = os.path.realpath(output)
    for name in names:
        if os.path.isfile(name) and os.path.dirname(os.path.realpath(name)) == folder:
            raise ValueError(
                f"--output {output} is the folder of the input {name}: the predictions would overwrite the "
                "user's files there (its drawing is <name>.png); give another --output folder"
            )


def output_names(names: list[str]) -> list[str]:
    """A distinct output name per input name: the file's stem, its file name where two inputs
    share the stem, numbered where they share the file name too (module docstring)."""
    stems = [os.path.splitext(os.path.basename(n))[0] for n in names]
    shared_stems = {s for s, k in collections.Counter(stems).items() if k > 1}
    keys = [os.path.basename(n) if s in shared_stems else s for n, s in zip(names, stems)]
    seen: collections.Counter = collections.Counter()
    out = []
    for key in keys:
        seen[key] += 1
        out.append(key if seen[key] == 1 else f"{key}_{seen[key]}")
    return out


def predict_images(
    config,
    workdir: str,
    images: list[tuple[str, Image.Image]],
    output: str,
    step: int | None = None,
    min_score: float = 0.3,
) -> list[dict]:
    """Runs the run's latest (or `step`) checkpoint on `(name, PIL image)` pairs; writes
    OUTPUT/<name>.json per image (and <name>.png when the task draws; `output_names`), and
    returns the records (with "png" the drawing's path)."""
    from frozen_det.training.run import Run

    check_output(output, [name for name, _ in images])
    with Run(workdir, config) as run:
        task, model, variables = run.task, run.model, run.variables(step)
    return write_predictions(task, model, variables, images, output, min_score)


def write_predictions(task, model, variables, images: list[tuple[str, Image.Image]], output: str, min_score: float):
    """`task.predict` on `(name, PIL image)` pairs with `variables` in memory, written as in
    `predict_images` (the quick start draws with the variables training ended with)."""
    check_output(output, [name for name, _ in images])
    os.makedirs(output, exist_ok=True)
    records = []
    names = output_names([name for name, _ in images])
    for record, name in zip(task.predict(model, variables, images, min_score=min_score), names):
        stem = os.path.join(output, name)
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
    prepare_entry_point(sys.argv, runs=("workdir",))  # before anything (the config file too) imports TensorFlow
    # Flags are defined only when run as a program, so the module can be imported (tests,
    # notebooks) beside other entry points that define the same flag names.
    _CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
    _WORKDIR = flags.DEFINE_string("workdir", None, "The training run's directory.")
    _OUTPUT = flags.DEFINE_string("output", None, "Directory for the JSON and PNG outputs.")
    _STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
    _MIN_SCORE = flags.DEFINE_float("min_score", 0.3, "Keep (and draw) predictions at or above this score.")
    flags.mark_flags_as_required(["config", "workdir", "output"])
    run_main(main)
