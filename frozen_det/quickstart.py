"""The main job, end to end: train a detector on a frozen ImageNet backbone, evaluate it, and
draw its predictions on held-out images.

    python -m frozen_det.quickstart [--config configs/quickstart.py[:ARGS]] [--workdir runs/quickstart]

Defaults: configs/quickstart.py (Faster R-CNN + FPN on the packaged ImageNet
EfficientNet-Lite0, frozen, on the offline synthetic shapes at 256 x 256; about 3 minutes on
2 CPU cores).
Prints progress lines with an ETA, then the evaluation summary as one JSON line, and writes

  WORKDIR/eval/<split>_step<N>.json      COCO (or LVIS) metrics, per-class AP
  WORKDIR/predictions/<id>.png / .json   detections on the first --num_examples eval images

Running it again resumes (or, when finished, only re-evaluates and redraws).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time

import numpy as np
from absl import flags
from ml_collections import config_flags
from PIL import Image

from frozen_det.config import complete
from frozen_det.runtime import prepare_entry_point, run_main

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "quickstart.py")


def eval_images(config, num: int, min_side: int = 384) -> list[tuple[str, Image.Image]]:
    """The first `num` images of the eval split as (name, PIL image), recovered from the eval
    pipeline's canvases (un-normalised, padding cropped off), enlarged to at least `min_side`
    pixels so that labels are legible (the detector resizes them to its canvas again)."""
    from frozen_det.data import detection
    from frozen_det.drawing import denormalize

    pipeline = detection.build_eval_pipeline(config)
    out = []
    for batch in pipeline:
        for i in np.flatnonzero(batch["example_valid"]):
            (h, w), _, (sy, sx), _ = batch["image_info"][i]
            rows, cols = int(round(h * sy)), int(round(w * sx))
            image = Image.fromarray(
                denormalize(batch["image"][i][:rows, :cols], pipeline.config.mean, pipeline.config.std)
            )
            zoom = max(1, -(-min_side // max(rows, cols)))
            out.append(
                (
                    f"image_{int(batch['image_id'][i])}",
                    image.resize((cols * zoom, rows * zoom), Image.Resampling.NEAREST),
                )
            )
            if len(out) == num:
                return out
    return out


def run(config, workdir: str, num_examples: int = 6, min_score: float = 0.5) -> dict:
    """Trains (or resumes), evaluates and draws; returns {"metrics", "predictions", "seconds"}."""
    from frozen_det.predict import write_predictions
    from frozen_det.training.loop import train_and_evaluate

    start = time.time()
    predictions = []

    def draw(task, model, variables):
        images = eval_images(config, num_examples)
        predictions.extend(
            write_predictions(task, model, variables, images, os.path.join(workdir, "predictions"), min_score)
        )

    # The evaluation at the end of training and the drawings use the variables in memory (a
    # finished run is restored once, then evaluated and drawn again).
    config.train.eval_at_end = True
    metrics = train_and_evaluate(config, workdir, then=draw)
    return {"metrics": metrics, "predictions": predictions, "seconds": time.time() - start}


def main(argv):
    del argv
    logging.getLogger("absl").setLevel(logging.ERROR)  # TFDS's notes on the generated dataset's config
    config = complete(_CONFIG.value)
    workdir = os.path.abspath(_WORKDIR.value)
    print(
        f"frozen_det quickstart: {config.model.backbone.type} {config.model.backbone.variant or ''} "
        f"backbone (freeze={config.model.backbone.freeze}) on {config.data.source} {config.data.path or ''}"
        f"{config.data.name} at {config.data.canvas}x{config.data.canvas}, {config.train.total_steps} steps "
        f"-> {workdir}",
        flush=True,
    )
    result = run(config, workdir, _NUM_EXAMPLES.value, _MIN_SCORE.value)
    metrics = {
        k: round(v, 4) if isinstance(v, float) else v for k, v in result["metrics"].items() if not isinstance(v, dict)
    }
    print(json.dumps(metrics), flush=True)
    for p in result["predictions"]:
        print(f"{p['png']}: {len(p['detections'])} detections", flush=True)
    print(f"done in {result['seconds'] / 60:.1f} min; metrics in {metrics.get('path')}", flush=True)


if __name__ == "__main__":
    prepare_entry_point(sys.argv)  # before anything (the config file too) imports TensorFlow
    _CONFIG = config_flags.DEFINE_config_file("config", DEFAULT_CONFIG, "Experiment config file.", lock_config=False)
    _WORKDIR = flags.DEFINE_string("workdir", "runs/quickstart", "Run directory.")
    _NUM_EXAMPLES = flags.DEFINE_integer("num_examples", 6, "Eval images to draw predictions on.")
    _MIN_SCORE = flags.DEFINE_float("min_score", 0.5, "Draw detections at or above this score.")
    run_main(main, package_level=logging.WARNING)
