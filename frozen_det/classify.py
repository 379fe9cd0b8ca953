"""Classify images with a backbone's ImageNet head.

    python -m frozen_det.classify --config configs/backbones/efficientnet_lite0_imagenet.py a.jpg b.png

prints one JSON line per image: {"image": PATH, "top5": [[class_id, probability], ...]}.
"""

from __future__ import annotations

import json

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags
from PIL import Image

from frozen_det.checkpoints.pretrained import load_backbone_variables
from frozen_det.config import complete
from frozen_det.models.backbones import build_backbone
from frozen_det.runtime import quiet_tensorflow


def load_image(path: str, size: int, crop_fraction: float) -> np.ndarray:
    """RGB [size, size, 3] float32 in [0, 255]: centre crop of `crop_fraction` of the shorter side."""
    try:
        image = Image.open(path).convert("RGB")
    except (OSError, ValueError) as e:
        raise SystemExit(f"cannot read image {path}: {e}") from None
    w, h = image.size
    side = crop_fraction * min(w, h)
    left, top = (w - side) / 2, (h - side) / 2
    image = image.resize((size, size), Image.BICUBIC, box=(left, top, left + side, top + side))
    return np.asarray(image, np.float32)


def classify(config, paths: list[str]) -> list[dict]:
    config = complete(config)
    model = build_backbone(config.model.backbone)
    if model.num_classes is None:
        raise SystemExit("config.model.backbone.num_classes is None: this backbone has no ImageNet head.")
    variables, preprocessing = load_backbone_variables(config.model.backbone.init_checkpoint, model)
    top_k = int(config.classify.top_k)

    @jax.jit
    def probabilities(variables, images):
        _, logits = model.apply(variables, preprocessing(images), train=False, return_logits=True)
        return jax.nn.softmax(logits.astype(np.float32), axis=-1)

    results = []
    for path in paths:
        image = load_image(path, int(config.classify.size), float(config.classify.crop_fraction))
        probs = np.asarray(probabilities(variables, image[None]))[0]
        best = np.argsort(-probs)[:top_k]
        results.append({"image": path, f"top{top_k}": [[int(i), round(float(probs[i]), 6)] for i in best]})
    return results


def main(argv):
    paths = argv[1:]
    if not paths:
        raise app.UsageError("give one or more image paths after the flags")
    for result in classify(_CONFIG.value, paths):
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    quiet_tensorflow()  # before anything (the config file too) imports TensorFlow
    # Flags are defined only when run as a program, so the module can be imported (tests,
    # notebooks) beside other entry points that define the same flag names.
    _CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
    flags.mark_flag_as_required("config")
    app.run(main)
