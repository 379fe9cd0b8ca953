"""Unsupervised region proposals of a PreDet run's images, cached once before pre-training (the
queries' candidates, PreDet sec. 3.2 / 4.1; frozen_det.data.two_view.proposals):

    python -m frozen_det.data.two_view.cache_proposals --config configs/predet/pretrain.py:proposals \\
        --config.data.path=IMAGES --config.data.proposals_file=IMAGES/proposals.npz [--max_boxes 500] \\
        [--workers N] [--distributed]

Every image of the config's train and eval splits (its two-view data section: an image folder,
a COCO / VOC folder or a TFDS dataset) gets its proposals under the key the two-view pipeline looks it up by (the
image id, or the path relative to `data.path`). The search runs on the host, in `--workers`
processes. With `--distributed`, every host of a pod slice or multi-GPU job runs the same
command: each takes its contiguous part of every split (frozen_det.data.process_shards).

Progress is saved every `--save_every` images as a part file under FILE.npz.shards/, so an
interrupted run resumes from its last part; when every process is done, the last one merges the
parts (and whatever FILE.npz held before: its images are not computed again) into FILE.npz. The
parts stay: a second run merges them again and computes nothing; to extend FILE.npz with new
images, delete FILE.npz.shards/ first. Images that cannot be read are counted and listed, not
fatal.
"""

from __future__ import annotations

import functools
import glob
import json
import logging
import os
import sys

import numpy as np
from absl import flags
from ml_collections import config_flags

from frozen_det.data.process_shards import ProcessSlot, chunks, host_pool, other_layouts, process_slot
from frozen_det.data.two_view.proposals import load_proposals, save_proposals, selective_search
from frozen_det.runtime import prepare_entry_point, run_main

log = logging.getLogger("frozen_det.data")


def split_images(config, split: str, slot: ProcessSlot = ProcessSlot()):
    """(proposal key, uint8 image) of every readable image of `slot`'s part of `split`, in
    stored order, and the unreadable ones (the list fills while the images are read)."""
    from frozen_det.data.two_view import config as two_view_config
    from frozen_det.data.two_view.sources import build_source

    source = build_source(two_view_config.complete(config.data if "data" in config else config))
    unreadable = []
    positions = slot.part(source.num_records(split))

    def skipped(start, stop):
        for index in range(start, stop):
            unreadable.append(source.describe_record(split, index))
            log.warning("skipped %s: it could not be decoded", unreadable[-1])

    def images():
        if source.random_access:
            records = source.records(split, np.asarray(positions, np.int64))
        else:
            start, stop = positions.start, positions.stop
            records = source.stream(split, (0, 1), None, 0).filter(
                lambda r: (r["index"] >= start) & (r["index"] < stop)
            )
        expected = positions.start
        for ex in records.map(source.decode).ignore_errors(log_warning=True).as_numpy_iterator():
            skipped(expected, ex["index"])
            expected = ex["index"] + 1
            key = ex["proposal_key"].decode()
            yield (int(key) if source.proposal_keys_are_ids else key), ex["image"]
        skipped(expected, positions.stop)

    return images, unreadable


def cache_run_proposals(
    config,
    path: str | None = None,
    splits=None,
    slot: ProcessSlot = ProcessSlot(),
    workers: int = 0,
    save_every: int = 500,
    **search,
) -> dict:
    """Proposals of this process's part of the train and eval splits of `config` (a PreDet
    config or its data section) saved in parts beside `path` (default `data.proposals_file`)
    and merged into it once every process is done (module docstring); `search` goes to
    selective_search. Returns {"images": images in the merged file (None: not merged by this
    process), "unreadable": [...] (of every process once merged), "path": ...}."""
    from frozen_det.data.two_view import config as two_view_config

    data = two_view_config.complete(config.data if "data" in config else config)
    path = path or data.proposals_file
    if not path:
        raise ValueError("config.data.proposals_file: where to write the proposals (an .npz path)")
    stale = other_layouts(path, slot)
    if stale:
        raise ValueError(
            f"{os.path.dirname(stale[0])}: parts of another number of processes; run with that many, or "
            f"delete the folder to start again with {slot.count}"
        )
    splits = splits or tuple(dict.fromkeys((data.train_split, data.eval_split)))
    done_marker = slot.shard_path(path, ".done")
    unreadable = []
    os.makedirs(os.path.dirname(done_marker), exist_ok=True)
    if not os.path.exists(done_marker):
        known = set(load_proposals(path)) if os.path.exists(path) else set()
        for part in _parts(path, slot):
            known |= set(load_proposals(part))
        with host_pool(workers) as pool:
            for split in splits:
                images, bad = split_images(data, split, slot)
                todo = ((key, image) for key, image in images() if key not in known)
                for chunk in chunks(todo, save_every):
                    keys = [key for key, _ in chunk]
                    boxes = pool.map(functools.partial(selective_search, **search), [im for _, im in chunk])
                    save_proposals(
                        slot.shard_path(path, f"-part{len(_parts(path, slot)):06d}.npz"), dict(zip(keys, boxes))
                    )
                    known |= set(keys)
                unreadable += bad
        _write_json(done_marker, {"unreadable": unreadable})
    merged = _merge_if_complete(path, slot)
    if merged is not None:  # every process's unreadable images
        unreadable = []
        for marker in slot.all_shard_paths(path, ".done"):
            with open(marker) as f:
                unreadable += json.load(f)["unreadable"]
    return {"images": merged, "unreadable": unreadable, "path": path}


def _parts(path: str, slot: ProcessSlot) -> list[str]:
    return sorted(glob.glob(slot.shard_path(path, "-part*.npz")))


def _write_json(path: str, value) -> None:
    with open(f"{path}.tmp", "w") as f:
        json.dump(value, f)
    os.replace(f"{path}.tmp", path)


def _merge_if_complete(path: str, slot: ProcessSlot) -> int | None:
    """Every process done: the parts of all (and the file's earlier content) merged into `path`
    (atomically: two processes finishing at once write the same file); -> its number of images."""
    if not all(os.path.exists(marker) for marker in slot.all_shard_paths(path, ".done")):
        return None
    cache = load_proposals(path) if os.path.exists(path) else {}
    for index in range(slot.count):
        for part in _parts(path, ProcessSlot(index, slot.count)):
            cache.update(load_proposals(part))
    save_proposals(path, cache)
    return len(cache)


def main(argv):
    del argv
    F = flags.FLAGS
    report = cache_run_proposals(
        _CONFIG.value,
        slot=process_slot(F.distributed, F.coordinator, F.num_processes, F.process_id),
        workers=F.workers,
        save_every=F.save_every,
        max_boxes=F.max_boxes,
        max_side=F.max_side,
    )
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    prepare_entry_point(sys.argv)  # before anything (the config file too) imports TensorFlow
    # Flags are defined only when run as a program, like every entry point's.
    _CONFIG = config_flags.DEFINE_config_file("config", None, "a PreDet config (model.type='predet')")
    flags.DEFINE_integer("max_boxes", 500, "proposals kept per image")
    flags.DEFINE_integer("max_side", 512, "images are downscaled to this longer side for the search")
    flags.DEFINE_integer("workers", 0, "processes for the search (0: this one)")
    flags.DEFINE_integer("save_every", 500, "images per saved part (what an interruption can lose)")
    flags.DEFINE_bool("distributed", False, "split the images over jax.distributed's processes")
    flags.DEFINE_string("coordinator", "", "with --distributed: host:port of process 0 (else detected)")
    flags.DEFINE_integer("num_processes", 0, "with --coordinator: the number of processes")
    flags.DEFINE_integer("process_id", -1, "with --coordinator: this process's index")
    run_main(main)
