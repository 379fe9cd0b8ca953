"""Look at what the detector will be trained on.

    python -m frozen_det.data.show --config configs/data/synthetic.py --num 8 --output /tmp/inspect
    python -m frozen_det.data.show --config configs/data/bccd.py --num 4 --output /tmp/bccd \
        --config.data.canvas=512

Writes N augmented training examples as PNGs (boxes, class names, masks drawn) and prints the
split's example count, per-class instance counts and the skipped-row counts.
"""

from __future__ import annotations

import collections
import json
import os
import sys

import numpy as np
from absl import app, flags
from ml_collections import config_flags
from PIL import Image, ImageDraw

from frozen_det.drawing import colour, denormalize
from frozen_det.runtime import prepare_entry_point, run_main


def draw_example(batch: dict, i: int, class_names, mean, std) -> Image.Image:
    """One example of a batch as a PIL image with masks, boxes and class names."""
    img = denormalize(batch["image"][i], mean, std).astype(np.float32)
    valid = np.nonzero(batch["valid"][i])[0]
    for j in valid:
        rgb = np.array(colour(batch["classes"][i, j]), np.float32)
        if "canvas_masks" in batch:
            m = batch["canvas_masks"][i, j].astype(np.float32)
        elif "masks" in batch:
            m = np.zeros(img.shape[:2], np.float32)
            y0, x0, y1, x1 = batch["boxes"][i, j]
            iy0, ix0 = int(np.floor(y0)), int(np.floor(x0))
            iy1, ix1 = int(np.ceil(y1)), int(np.ceil(x1))
            if iy1 > iy0 and ix1 > ix0:
                crop = np.asarray(batch["masks"][i, j], np.float32)
                if crop.max() > 1.0:
                    crop = crop / 255.0
                pil = Image.fromarray((crop * 255).astype(np.uint8)).resize((ix1 - ix0, iy1 - iy0), Image.BILINEAR)
                m[iy0:iy1, ix0:ix1] = np.asarray(pil, np.float32)[: img.shape[0] - iy0, : img.shape[1] - ix0] / 255.0
        else:
            continue
        a = 0.45 * (m > 0.5)[..., None]
        img = img * (1 - a) + rgb * a
    out = Image.fromarray(img.astype(np.uint8))
    d = ImageDraw.Draw(out)
    for j in valid:
        c = int(batch["classes"][i, j])
        y0, x0, y1, x1 = [float(v) for v in batch["boxes"][i, j]]
        # the last covered pixel; boxes under one pixel wide (crop slivers) still get one
        d.rectangle([x0, y0, max(x1 - 1, x0), max(y1 - 1, y0)], outline=colour(c), width=2 if out.width >= 256 else 1)
        name = class_names[c] if c < len(class_names) else str(c)
        if batch["is_crowd"][i, j]:
            name += " (crowd)"
        d.text((x0 + 2, max(y0 - 11, 0)), name, fill=colour(c))
    return out


def instance_counts(source, split) -> dict:
    counts = collections.Counter()
    if source.random_access:
        for rec in source.split_records(split):
            counts.update(int(c) for c in rec.classes)
    else:
        for classes in source.record_classes(split):
            counts.update(classes)  # image counts for streaming sources (one pass, no decode)
    return {source.info.class_names[k]: v for k, v in sorted(counts.items())}


def run(config, num: int, output: str, split=None) -> dict:
    from frozen_det.data.detection import build_train_pipeline

    os.makedirs(output, exist_ok=True)
    pipe = build_train_pipeline(config, split=split, process_index=0, process_count=1, batch_size=min(num, 8) or 1)
    cfg, source = pipe.config, pipe.source
    written = []
    while len(written) < num:
        batch = next(pipe)
        for i in range(len(batch["image"])):
            if len(written) == num:
                break
            path = os.path.join(output, f"example_{len(written):03d}_id{int(batch['image_id'][i])}.png")
            draw_example(batch, i, source.info.class_names, cfg.mean, cfg.std).save(path)
            written.append(path)
    summary = {
        "dataset": source.info.name,
        "split": pipe.split,
        "examples": source.num_records(pipe.split),
        "instances_per_class" if source.random_access else "images_per_class": instance_counts(source, pipe.split),
        # the pipeline's report minus its count of examples made (those drawn), which is no skip
        "skipped": {k: v for k, v in pipe.report().items() if k != "examples"},
        "written": written,
    }
    return summary


def main(argv):
    del argv
    if _CONFIG.value is None:
        raise app.UsageError("--config is required, e.g. --config configs/data/synthetic.py")
    summary = run(_CONFIG.value, _NUM.value, _OUTPUT.value, _SPLIT.value)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    prepare_entry_point(sys.argv)  # before anything (the config file too) imports TensorFlow
    # Flags are defined only when run as a program, so the module can be imported (tests,
    # notebooks) beside other entry points that define the same flag names.
    _CONFIG = config_flags.DEFINE_config_file("config", None, "config file (configs/**.py)")
    _NUM = flags.DEFINE_integer("num", 8, "number of training examples to draw")
    _OUTPUT = flags.DEFINE_string("output", "inspect", "output directory")
    _SPLIT = flags.DEFINE_string("split", None, "split (default data.train_split)")
    run_main(main)
