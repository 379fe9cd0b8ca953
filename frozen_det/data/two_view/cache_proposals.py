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
import sys

import numpy as np
from absl import flags
from ml_collections import config_flags

from frozen_det.runtime import prepare_entry_point, run_main

log = logging.getLogger("frozen_det.data")


def split_images(config, split: str):
    """(proposal key, uint8 image) of every readable image of `split`, in stored order, and the
    unreadable ones (the list fills while the images are read)."""
    from frozen_det.data.two_view import config as two_view_config
    from frozen_det.data.two_view.sources import build_source

    source = build_source(two_view_config.complete(config.data if "data" in config else config))
    unreadable = []

    def skipped(start, stop):
        for index in range(start, stop):
            unreadable.append(source.describe_record(split, index))
            log.warning("skipped %s: it could not be decoded", unreadable[-1])

    def images():
        n = source.num_records(split)
        records = source.records(split, np.arange(n)) if source.random_access else source.stream(split, (0, 1), None, 0)
        expected = 0
        for ex in records.map(source.decode).ignore_errors(log_warning=True).as_numpy_iterator():
            skipped(expected, ex["index"])
            expected = ex["index"] + 1
            key = ex["proposal_key"].decode()
            yield (int(key) if source.proposal_keys_are_ids else key), ex["image"]
        skipped(expected, n)

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


def main(argv):
    del argv
    report = cache_run_proposals(_CONFIG.value, max_boxes=flags.FLAGS.max_boxes, max_side=flags.FLAGS.max_side)
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    prepare_entry_point(sys.argv)  # before anything (the config file too) imports TensorFlow
    # Flags are defined only when run as a program, like every entry point's.
    _CONFIG = config_flags.DEFINE_config_file("config", None, "a PreDet config (model.type='predet')")
    flags.DEFINE_integer("max_boxes", 500, "proposals kept per image")
    flags.DEFINE_integer("max_side", 512, "images are downscaled to this longer side for the search")
    run_main(main)
