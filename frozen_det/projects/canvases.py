"""The canvases the study projects train on (frozen_det.data.offline.canvases), written once into
a study's root by its ``prepare``."""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


def ensure_canvases(path: str, mode: str, num_train: int, num_val: int, seed: int, image_size: int = 128) -> None:
    """Writes ``mode``-like canvases (voc | imagenet) to ``path`` unless a finished set is there
    (its validation annotations are written last)."""
    if os.path.exists(os.path.join(path, "annotations", "instances_val.json")):
        return
    from frozen_det.data.offline.canvases import write_canvases

    log.info("writing %s-like canvases to %s", mode, path)
    write_canvases(path, mode, num_train=num_train, num_val=num_val, image_size=image_size, seed=seed)
