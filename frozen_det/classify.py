"""Classify images with a classifier config's pretrained weights (or a classification run's).

    python -m frozen_det.classify --config configs/backbones/efficientnet_lite0_imagenet.py a.jpg b.png
    python -m frozen_det.classify --config CONFIG --workdir RUN a.jpg

prints one JSON line per image: {"image": PATH, "top5": [[class_id, probability], ...]}. The
classifier task's own prediction (frozen_det.tasks.classification: the evaluation preprocessing,
shorter side resized and centre-cropped by `data.crop_fraction` to `data.image_size`).
"""

from __future__ import annotations

import json
import sys

from absl import app, flags
from ml_collections import config_flags

from frozen_det.data.files import read_rgb
from frozen_det.runtime import prepare_entry_point, run_main


def classify(config, paths: list[str], top_k: int = 5, workdir: str | None = None) -> list[dict]:
    from frozen_det.training.run import Run, pretrained_model

    if workdir:
        with Run(workdir, config) as run:
            task, model, variables = run.task, run.model, run.variables()
    else:
        _, task, model, variables = pretrained_model(config)
    images = []
    for path in paths:
        try:
            images.append((path, read_rgb(path)))
        except (OSError, ValueError) as e:
            raise ValueError(f"cannot read image {path}: {e}") from None
    records = task.predict(model, variables, images, top_k=top_k)
    return [
        {"image": r["image"], f"top{top_k}": [[c["class_id"], round(c["probability"], 6)] for c in r["top_classes"]]}
        for r in records
    ]


def main(argv):
    paths = argv[1:]
    if not paths:
        raise app.UsageError("give one or more image paths after the flags")
    for result in classify(_CONFIG.value, paths, _TOP_K.value, _WORKDIR.value):
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    prepare_entry_point(sys.argv, runs=("workdir",))  # before anything (the config file too) imports TensorFlow
    # Flags are defined only when run as a program, so the module can be imported (tests,
    # notebooks) beside other entry points that define the same flag names.
    _CONFIG = config_flags.DEFINE_config_file("config", None, "Classifier config file.", lock_config=True)
    _WORKDIR = flags.DEFINE_string("workdir", None, "A classification run (default: the config's pretrained weights).")
    _TOP_K = flags.DEFINE_integer("top_k", 5, "How many classes to print per image.")
    flags.mark_flag_as_required("config")
    run_main(main)
