"""Unsupervised region proposals of a PreDet run's images, cached once before pre-training (the
queries' candidates, PreDet sec. 3.2 / 4.1; frozen_det.data.two_view.proposals):

    python -m frozen_det.data.two_view.cache_proposals --config configs/predet/pretrain.py:proposals \\
        --config.data.path=IMAGES --config.data.proposals_file=IMAGES/proposals.npz [--max_boxes 500]

Every image of the config's train and eval splits (its two-view data section: an image folder,
a COCO / VOC folder or a TFDS dataset) gets its proposals under the key the two-view pipeline looks it up by (the
image id, or the path relative to `data.path`). An existing file is extended: images
already in it are not computed again, so an interrupted run resumes. Images that cannot be read
are counted and listed, not fatal.
"""

from __future__ import annotations

import json
import logging

from absl import app, flags
from ml_collections import config_flags

log = logging.getLogger("frozen_det.data")


def split_images(config, split: str):
    """(proposal key, uint8 image) of every readable image of `split`, and the unreadable ones."""
    from frozen_det.data.two_view import config as two_view_config
    from frozen_det.data.two_view.images import open_split

    cfg = two_view_config.complete(config.data if "data" in config else config)
    unreadable = []

    def images():
        for _, record in open_split(cfg, split).epoch(0, (0, 1), None):
            try:
                yield record.proposal_key, record.read()
            except (OSError, ValueError) as e:
                log.warning("skipped %s: %s", record.path, e)
                unreadable.append(record.path)

    return images, unreadable


def cache_run_proposals(config, path: str | None = None, splits=None, **search) -> dict:
    """Proposals of the train and eval splits of `config` (a PreDet config or its data section)
    written to `path` (default `data.proposals_file`); `search` goes to selective_search. Returns
    {"images": ..., "unreadable": [...]}."""
    from frozen_det.data.two_view import config as two_view_config
    from frozen_det.data.two_view.proposals import cache_proposals

    data = two_view_config.complete(config.data if "data" in config else config)
    path = path or data.proposals_file
    if not path:
        raise ValueError("config.data.proposals_file: where to write the proposals (an .npz path)")
    splits = splits or tuple(dict.fromkeys((data.train_split, data.eval_split)))
    cache, unreadable = {}, []
    for split in splits:
        images, bad = split_images(data, split)
        cache = cache_proposals(path, images(), **search)
        unreadable += bad
    return {"images": len(cache), "unreadable": unreadable, "path": path}


_CONFIG = config_flags.DEFINE_config_file("config", None, "a PreDet config (model.type='predet')")
flags.DEFINE_integer("max_boxes", 500, "proposals kept per image")
flags.DEFINE_integer("max_side", 512, "images are downscaled to this longer side for the search")


def main(argv):
    del argv
    report = cache_run_proposals(_CONFIG.value, max_boxes=flags.FLAGS.max_boxes, max_side=flags.FLAGS.max_side)
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    app.run(main)
