"""Detect objects in image files with a trained run and draw them.

    python -m frozen_det.predict --config CONFIG --workdir DIR --output OUT a.jpg b.png ...

writes OUT/<name>.json (boxes in original pixels as [xmin, ymin, xmax, ymax], class ids and
names, scores) and OUT/<name>.png (boxes, labels, scores and masks drawn on the image).
Images get the evaluation preprocessing of the data pipeline (longer side to the canvas, pad).
"""

from __future__ import annotations

import json
import os

import numpy as np
from absl import app, flags
from ml_collections import config_flags
from PIL import Image, ImageDraw


PALETTE = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128)]


def preprocess(image_u8: np.ndarray, data_config) -> tuple[np.ndarray, np.ndarray]:
    """(normalised canvas image [H, W, 3], image_info [4, 2]) exactly as the eval pipeline."""
    import tensorflow as tf
    from frozen_det.data import augment
    canvas = int(data_config.canvas)
    params = augment.resize_params(image_u8.shape[0], image_u8.shape[1], canvas, 1.0)
    image = augment.transform_image(tf.constant(image_u8), params, canvas, data_config.mean, data_config.std)
    return image.numpy().astype(np.float32), augment.image_info(params, canvas).numpy()


def draw(image: Image.Image, detections: list[dict], masks: list | None) -> Image.Image:
    out = np.asarray(image.convert("RGB"), np.float32)
    for det, mask in zip(detections, masks or [None] * len(detections)):
        if mask is not None:
            colour = np.array(PALETTE[det["class_id"] % len(PALETTE)], np.float32)
            alpha = 0.45 * mask[..., None]
            out = out * (1 - alpha) + colour * alpha
    drawn = Image.fromarray(out.astype(np.uint8))
    pen = ImageDraw.Draw(drawn)
    width = max(1, round(min(drawn.size) / 300))
    for det in detections:
        colour = PALETTE[det["class_id"] % len(PALETTE)]
        x0, y0, x1, y1 = det["box_xyxy"]
        pen.rectangle([x0, y0, x1, y1], outline=colour, width=width)
        label = f"{det['class_name']} {det['score']:.2f}"
        # The label on a filled tab in the box colour, above the box (inside it at the top edge).
        left, top, right, bottom = pen.textbbox((0, 0), label)
        tw, th = right - left + 4, bottom - top + 4
        tx = min(max(x0, 0), max(drawn.width - tw, 0))
        ty = y0 - th if y0 - th >= 0 else max(y0, 0)
        pen.rectangle([tx, ty, tx + tw, ty + th], fill=colour)
        text_colour = (0, 0, 0) if sum(colour) > 380 else (255, 255, 255)
        pen.text((tx + 2 - left, ty + 2 - top), label, fill=text_colour)
    return drawn


def predict(config, workdir: str, paths: list[str], output: str, step: int | None = None,
            min_score: float = 0.3) -> list[dict]:
    """Detections of the images at `paths` (see predict_images)."""
    loaded = []
    for path in paths:
        try:
            loaded.append((path, Image.open(path).convert("RGB")))
        except (OSError, ValueError) as e:
            raise SystemExit(f"cannot read image {path}: {e}") from None
    return predict_images(config, workdir, loaded, output, step, min_score)


def predict_images(config, workdir: str, images: list[tuple[str, Image.Image]], output: str,
                   step: int | None = None, min_score: float = 0.3) -> list[dict]:
    """Runs the run's latest (or `step`) checkpoint on `(name, PIL image)` pairs; writes
    OUTPUT/<stem>.json (boxes [x0, y0, x1, y1] in image pixels, class, score) and <stem>.png
    (boxes, labels, scores and masks drawn) per image, and returns the JSON records."""
    import jax
    from frozen_det import data as data_lib
    from frozen_det.evaluation.coco import paste_mask
    from frozen_det.training.loop import restore_for_inference

    data_config = data_lib.resolve_config(config)
    info = data_lib.build_source(data_config).info
    prepared = [preprocess(np.asarray(im), data_config) for _, im in images]
    n = int(data_config.max_instances)
    example = {"image": prepared[0][0][None], "image_info": prepared[0][1][None],
               "boxes": np.zeros((1, n, 4), np.float32), "classes": np.zeros((1, n), np.int32),
               "valid": np.zeros((1, n), bool)}
    model, variables, _ = restore_for_inference(config, workdir, step, example)
    detect = jax.jit(lambda v, b: model.apply(v, b, train=False))
    os.makedirs(output, exist_ok=True)
    results = []
    for (path, image), (canvas_image, info_array) in zip(images, prepared):
        out = jax.device_get(detect(variables, {"image": canvas_image[None], "image_info": info_array[None]}))
        detections, masks = [], []
        for k in np.nonzero(out["valid"][0])[0]:
            score = float(out["scores"][0, k])
            if score < min_score:
                continue
            y0, x0, y1, x1 = (float(v) for v in out["original_boxes"][0, k])
            c = int(out["classes"][0, k])
            detections.append({"box_xyxy": [x0, y0, x1, y1], "class_id": c, "score": score,
                               "class_name": info.class_names[c] if c < len(info.class_names) else str(c)})
            if "masks" in out:
                masks.append(paste_mask(out["masks"][0, k], (y0, x0, y1, x1), (image.height, image.width)))
        stem = os.path.splitext(os.path.basename(path))[0]
        with open(os.path.join(output, f"{stem}.json"), "w") as f:
            json.dump({"image": path, "detections": detections}, f, indent=2)
        draw(image, detections, masks if masks else None).save(os.path.join(output, f"{stem}.png"))
        results.append({"image": path, "detections": detections, "png": os.path.join(output, f"{stem}.png")})
    return results


def main(argv):
    paths = argv[1:]
    if not paths:
        raise app.UsageError("give one or more image paths after the flags")
    for r in predict(_CONFIG.value, _WORKDIR.value, paths, _OUTPUT.value, _STEP.value, _MIN_SCORE.value):
        print(json.dumps({"image": r["image"], "num_detections": len(r["detections"])}), flush=True)


if __name__ == "__main__":
    # Flags are defined only when run as a program, so the module can be imported (tests,
    # notebooks) beside other entry points that define the same flag names.
    _CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
    _WORKDIR = flags.DEFINE_string("workdir", None, "The training run's directory.")
    _OUTPUT = flags.DEFINE_string("output", None, "Directory for the JSON and PNG outputs.")
    _STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
    _MIN_SCORE = flags.DEFINE_float("min_score", 0.3, "Draw detections at or above this score.")
    flags.mark_flags_as_required(["config", "workdir", "output"])
    app.run(main)
