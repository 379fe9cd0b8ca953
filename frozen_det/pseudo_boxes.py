"""Pseudo-boxes of a folder of images or a TFDS split from a classifier's class activation maps
(DAP step 2: Zhong et al., CVPR 2021, sec. 3.1), written as a COCO-format detection file.

    python -m frozen_det.pseudo_boxes --config CONFIG [--workdir RUN] --output FILE.json \\
        (--images DIR | --tfds NAME:SPLIT [--data_dir D]) \\
        [--labels LABELS.json | --labels folders | --labels dataset | --class_id N] \\
        [--variant paper|released] [--score mean_cam|area|excess_mass] \\
        [--scales 288,576] [--thresholds 0.2,0.3,0.4,0.5] [--nms_iou 0.8] \\
        [--noflip] [--max_images N] [--batch_size 8] [--pad_multiple 32] [--host_workers N] \\
        [--distributed] [--overwrite]

CONFIG is a classification run's config with its --workdir, or a classifier config with
pretrained weights and no --workdir (configs/backbones/efficientnet_lite0_imagenet.py: the
packaged ImageNet EfficientNet-Lite0 and its ImageNet head). The class of each image:
`--labels LABELS.json`, a COCO-format file whose
`images` have `file_name` (relative to DIR) and `label`, the id of one of its `categories` (the
k-th category by id is the classifier's class k), as the ImageNet-like canvases of
`python -m frozen_det.data.offline.canvases --mode imagenet` do (their image ids are kept);
`--labels folders`, each image's first folder under DIR names its class (the
ImageFolder layout); `--labels dataset`, a TFDS split's own `label` (e.g. imagenet2012 with an
ImageNet-1k classifier); `--class_id N` for every image; otherwise the classifier's top-1 class.

The CAMs are computed in batches on the device (`--batch_size` images of one padded input shape
per call, split over the local devices; `--pad_multiple` > 32 bounds the number of shapes that
compile, see frozen_det.localization.cam.batched_feature_maps); the boxes on the host. With
`--distributed` every host of a TPU pod slice or multi-GPU job runs the same command on a shared
output directory: each boxes its contiguous part of the images into FILE.json.shards/, resumes
it after a preemption, and the last host to finish merges the shards into FILE.json
(frozen_det.data.process_shards). A run on one host resumes the same way.

FILE.json: `images` (`id`, `file_name` relative to DIR or the TFDS record's `tfds_id`, `width`,
`height`, `label`: the category id of the class boxed), `categories` (every class of the
classifier, id = class index + 1), `annotations` (`image_id`, `bbox` [x, y, w, h] in the
original image's pixels, `category_id`, `score`, `area`), `wsol_boxes` (`image_id`, `bbox`: the
weakly supervised localisation literature's one box per image from the same CAM, for CorLoc as
it reports it; frozen_det.localization.cam_boxes.wsol_box), and `stats`: boxes per image and mean
box width / height per threshold before merging and after (DAP's Tables A1 / A2), the options,
and the images that could not be read (counted and listed, not fatal). The detection pipeline
reads it back: for a folder, the COCO-folder source
(`--config.data.source=coco_folder --config.data.path=DIR/.. --config.data.coco_files.train="('FILE.json', 'DIR')"`);
for a TFDS split, the TFDS pseudo-box source (`--config.data.source=tfds_pseudo_boxes
--config.data.name=NAME --config.data.coco_files.train="('FILE.json', 'SPLIT')"`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys

import numpy as np
from absl import flags
from ml_collections import config_flags

from frozen_det.data.process_shards import ProcessSlot, chunks, host_pool, other_layouts, process_slot
from frozen_det.localization.cam import STRIDE, CamClassifier, batched_feature_maps, cam_classifier_from_model
from frozen_det.localization.cam_boxes import SCORES, PseudoBoxOptions, pseudo_boxes_from_maps
from frozen_det.localization.image_sources import image_source
from frozen_det.runtime import fail, prepare_entry_point, run_main

log = logging.getLogger("frozen_det.pseudo_boxes")

SHARD_SUFFIX = ".jsonl"
IMAGES_PER_CHUNK = 16  # batches of CAMs read ahead, so that images of one input shape meet


def load_cam_classifier(config, workdir: str | None = None) -> CamClassifier:
    """The classifier whose CAMs box the images: a classification run's latest checkpoint in
    `workdir` (`config`: its config, or None for the one it saved), or without a workdir the
    pretrained weights a classifier config names (its backbone's `init_checkpoint`, ImageNet
    head included)."""
    from frozen_det.training.run import Run, pretrained_model

    if workdir:
        with Run(workdir, config) as run:
            config, task, model, variables = run.config, run.task, run.model, run.variables()
    else:
        config, task, model, variables = pretrained_model(config)
    if not hasattr(task, "class_names"):
        raise ValueError(
            f"config.model.type={config.model.type!r}: class activation maps need a classifier "
            "(model.type='classifier'), e.g. configs/backbones/efficientnet_lite0_imagenet.py"
        )
    return cam_classifier_from_model(model, variables, config.data.mean, config.data.std, task.class_names())


def _box_sizes(boxes: np.ndarray) -> list:
    """[count, sum of widths, sum of heights] of [N, 4] yxyx boxes: what the statistics add up."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    return [len(boxes), float(np.sum(boxes[:, 3] - boxes[:, 1])), float(np.sum(boxes[:, 2] - boxes[:, 0]))]


def _size_stats(sizes: list, num_images: int) -> dict:
    """Boxes per image and mean width / height (DAP Tables A1 / A2) from summed `_box_sizes`."""
    n, width, height = (float(v) for v in np.sum(np.asarray(sizes, np.float64).reshape(-1, 3), axis=0))
    return {
        "boxes_per_image": round(n / max(num_images, 1), 4),
        "mean_width": round(width / n, 2) if n else None,
        "mean_height": round(height / n, 2) if n else None,
    }


def _image_line(entry: dict, image_hw, result, label: int) -> dict:
    """One boxed image as a shard line: its COCO image entry, its boxes and their sizes."""
    h, w = image_hw
    return {
        "image": {"id": entry["id"], "file_name": entry["file_name"], "width": w, "height": h, "label": label + 1},
        "boxes": np.round(result.boxes.astype(np.float64), 2).tolist(),
        "scores": np.round(result.scores.astype(np.float64), 5).tolist(),
        "per_threshold": [_box_sizes(b) for b in result.per_threshold],
        "merged": _box_sizes(result.boxes),
        "wsol_box": np.round(result.wsol_box.astype(np.float64), 2).tolist(),
    }


class _Shard:
    """This process's JSONL shard: a header line (what is boxed, how), one line per image
    (boxed or unreadable), a last {"done": true}. Reopening it keeps its complete lines."""

    def __init__(self, path: str, header: dict):
        self.path, self.lines, self.done = path, [], False
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if os.path.exists(path):
            self._read(header)
        if not self.lines:
            with open(path, "w") as f:
                f.write(json.dumps({"header": header}) + "\n")

    def _read(self, header: dict) -> None:
        path = self.path
        with open(path, "rb") as f:
            raw = f.read()
        complete = raw[: raw.rfind(b"\n") + 1]  # a line cut by an interruption is dropped
        lines = [json.loads(line) for line in complete.decode().splitlines()]
        if lines and lines[0].get("header") != header:
            raise ValueError(
                f"{path}: a shard of pseudo-boxes made with other inputs or options ({lines[0].get('header')}); "
                "delete the .shards folder to start again, or run with the options it was made with"
            )
        if len(complete) < len(raw):
            with open(path, "r+b") as f:
                f.truncate(len(complete))
        self.lines = lines[1:]
        self.done = bool(self.lines) and self.lines[-1].get("done", False)

    def seen_ids(self) -> set:
        return {
            line["image"]["id"] if "image" in line else line["unreadable"]["id"]
            for line in self.lines
            if "done" not in line
        }

    def append(self, lines: list) -> None:
        with open(self.path, "a") as f:
            f.writelines(json.dumps(line) + "\n" for line in lines)
            f.flush()
            os.fsync(f.fileno())
        self.lines += lines


def write_pseudo_boxes(
    clf: CamClassifier,
    images,
    output: str,
    options: PseudoBoxOptions,
    class_id: int | None = None,
    progress: bool = True,
    max_images: int = 0,
    slot: ProcessSlot = ProcessSlot(),
    batch_size: int = 8,
    pad_multiple: int = STRIDE,
    host_workers: int = 0,
) -> dict | None:
    """Boxes this process's part of `images` (a FolderImages or TfdsImages of
    frozen_det.localization.image_sources; the first `max_images` if > 0) into its shard of
    `output`, resuming the shard if it exists; if every process's shard is then done, merges
    them into `output` and returns the file's `stats` block (else None).

    The boxes' host part (CAMs in image pixels, components, moments) runs in `host_workers`
    processes (0: in this one) while the device computes the next chunk's maps: on an
    accelerator host it is the slower half (tools/bench_offline_steps.py)."""
    from tqdm import tqdm

    if class_id is not None and not 0 <= class_id < clf.num_classes:
        raise ValueError(f"--class_id {class_id}: not one of the classifier's {clf.num_classes} classes")
    stale = other_layouts(output, slot)
    if stale:
        raise ValueError(
            f"{os.path.dirname(stale[0])}: shards of another number of processes ({os.path.basename(stale[0])}); "
            f"run with that many, or delete the folder to start again with {slot.count}"
        )
    total = min(len(images), max_images) if max_images > 0 else len(images)
    header = {
        "images": images.description,
        "total": total,
        "classes": clf.num_classes,
        "class_id": class_id,
        "options": _options_record(options),
    }
    shard = _Shard(slot.shard_path(output, SHARD_SUFFIX), header)
    if not shard.done:
        seen = shard.seen_ids()
        positions = slot.part(total)
        todo = (e for e in images.entries(positions) if e["id"] not in seen)
        bar = tqdm(total=len(positions), initial=len(seen), desc="pseudo-boxes", unit="image", disable=not progress)
        head = dataclasses.replace(clf, maps_and_logits=None)  # what the host part needs, picklable
        with host_pool(host_workers) as pool:
            pending = None
            for chunk in chunks(todo, batch_size * IMAGES_PER_CHUNK):
                submitted = _submit_chunk(clf, head, pool, chunk, options, class_id, batch_size, pad_multiple)
                if pending is not None:
                    shard.append(_collect(pending))
                    bar.update(len(pending))
                pending = submitted
            if pending is not None:
                shard.append(_collect(pending))
                bar.update(len(pending))
        bar.close()
        shard.append([{"done": True}])
    return _merge_if_complete(output, slot, clf, options)


def _options_record(options: PseudoBoxOptions) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in vars(options).items()}


def _boxes_job(head: CamClassifier, maps: list, image_hw, options: PseudoBoxOptions, label):
    """The host part of one image's boxes -> (PseudoBoxes, the class boxed)."""
    result, _, label = pseudo_boxes_from_maps(head, maps, image_hw, options, label)
    return result, label


def _submit_chunk(clf, head, pool, chunk: list, options, class_id, batch_size: int, pad_multiple: int) -> list:
    """A chunk's CAM maps on the device in batches, then its boxes submitted to `pool`: per
    entry, its shard line (unreadable images) or (id, file name, (height, width), future)."""
    readable = [e for e in chunk if "error" not in e]
    maps = batched_feature_maps(
        clf, [e["image"] for e in readable], options.scales, options.flip, batch_size, pad_multiple
    )
    maps_of = {e["id"]: m for e, m in zip(readable, maps)}
    out = []
    for entry in chunk:
        if "error" in entry:
            log.warning("cannot read %s: %s (skipped)", entry["file_name"], entry["error"])
            out.append({"unreadable": {"id": entry["id"], "file_name": entry["file_name"], "error": entry["error"]}})
            continue
        label = class_id if class_id is not None else entry["label"]
        if label is not None and not 0 <= label < clf.num_classes:
            raise ValueError(f"{entry['file_name']}: class {label} is not one of the classifier's {clf.num_classes}")
        hw = entry["image"].shape[:2]
        out.append(
            (
                entry["id"],
                entry["file_name"],
                hw,
                pool.submit(_boxes_job, head, maps_of[entry["id"]], hw, options, label),
            )
        )
    return out


def _collect(submitted: list) -> list:
    """Shard lines of a submitted chunk, in its order, once its boxes are done."""
    lines = []
    for item in submitted:
        if isinstance(item, dict):
            lines.append(item)
        else:
            image_id, file_name, hw, future = item
            result, label = future.result()
            lines.append(_image_line({"id": image_id, "file_name": file_name}, hw, result, label))
    return lines


def _merge_if_complete(output: str, slot: ProcessSlot, clf, options) -> dict | None:
    """Every shard done: the COCO-format file of all of them, written atomically; its stats."""
    shards = []
    for path in slot.all_shard_paths(output, SHARD_SUFFIX):
        if not os.path.exists(path):
            return None
        with open(path) as f:
            lines = [json.loads(line) for line in f.read().splitlines()]
        if not lines[-1].get("done"):
            return None
        shards.append(lines[1:-1])
    lines = sorted(
        (line for shard in shards for line in shard), key=lambda l: (l.get("image") or l["unreadable"])["id"]
    )
    boxed = [line for line in lines if "image" in line]
    unreadable = [line["unreadable"] for line in lines if "unreadable" in line]
    annotations = []
    for line in boxed:
        image = line["image"]
        for (y1, x1, y2, x2), score in zip(line["boxes"], line["scores"]):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image["id"],
                    "category_id": image["label"],
                    "bbox": [x1, y1, round(x2 - x1, 2), round(y2 - y1, 2)],
                    "area": round((x2 - x1) * (y2 - y1), 2),
                    "score": score,
                    "iscrowd": 0,
                }
            )
    stats = {
        "images": len(boxed),
        "per_threshold": {
            str(t): _size_stats([line["per_threshold"][k] for line in boxed], len(boxed))
            for k, t in enumerate(options.thresholds)
        },
        "merged": _size_stats([line["merged"] for line in boxed], len(boxed)),
        "options": _options_record(options),
        "unreadable": unreadable,
        "num_unreadable": len(unreadable),
        "processes": slot.count,
    }
    wsol_boxes = [
        {"image_id": line["image"]["id"], "bbox": [x1, y1, round(x2 - x1, 2), round(y2 - y1, 2)]}
        for line in boxed
        for y1, x1, y2, x2 in [line["wsol_box"]]
    ]
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(clf.class_names)]
    temporary = f"{output}.process-{slot.index}.tmp"
    with open(temporary, "w") as f:
        json.dump(
            {
                "images": [line["image"] for line in boxed],
                "categories": categories,
                "annotations": annotations,
                "wsol_boxes": wsol_boxes,
                "stats": stats,
            },
            f,
        )
    os.replace(temporary, output)
    return stats


def _floats(text: str) -> tuple:
    return tuple(float(v) for v in text.split(",") if v.strip())


def main(argv):
    del argv
    F = flags.FLAGS
    if os.path.exists(F.output) and not F.overwrite:
        fail(f"--output {F.output} exists: choose another path, or pass --overwrite to replace it")
    options = PseudoBoxOptions(
        variant=F.variant,
        scales=tuple(int(v) for v in _floats(F.scales)),
        flip=F.flip,
        thresholds=_floats(F.thresholds),
        nms_iou=F.nms_iou,
        score=F.score,
    )
    slot = process_slot(F.distributed, F.coordinator, F.num_processes, F.process_id)
    clf = load_cam_classifier(_CONFIG.value, F.workdir)
    images = image_source(clf.class_names, F.images, F.tfds, F.data_dir, F.labels)
    stats = write_pseudo_boxes(
        clf,
        images,
        F.output,
        options,
        F.class_id,
        max_images=F.max_images,
        slot=slot,
        batch_size=F.batch_size,
        pad_multiple=F.pad_multiple,
        host_workers=F.host_workers,
    )
    if stats is None:
        print(json.dumps({"process": slot.index, "of": slot.count, "merged": False}), flush=True)
    else:
        print(json.dumps({k: v for k, v in stats.items() if k != "unreadable"}), flush=True)


if __name__ == "__main__":
    prepare_entry_point(sys.argv, runs=("workdir",))  # before anything (the config file too) imports TensorFlow
    _CONFIG = config_flags.DEFINE_config_file("config", None, "Classifier config file.", lock_config=True)
    flags.DEFINE_string("workdir", None, "The classification run (omit for a backbone config with packaged weights).")
    flags.DEFINE_string("images", "", "Folder of images (searched recursively).")
    flags.DEFINE_string("tfds", "", "A TFDS split with an 'image' feature, NAME:SPLIT (e.g. imagenet2012:train).")
    flags.DEFINE_string("data_dir", "", "The TFDS data directory of --tfds.")
    flags.DEFINE_string("output", None, "COCO-format JSON to write.")
    flags.DEFINE_bool("overwrite", False, "Replace an existing --output.")
    flags.DEFINE_string("labels", None, "COCO JSON with images[].label, 'folders', or 'dataset' (--tfds).")
    flags.DEFINE_integer("class_id", None, "One class for every image.")
    flags.DEFINE_enum("variant", "paper", ["paper", "released"], "The paper's text or the authors' code.")
    flags.DEFINE_string("scales", "288,576", "Shorter sides of the CAM inputs.")
    flags.DEFINE_string("thresholds", "0.2,0.3,0.4,0.5", "CAM thresholds tau.")
    flags.DEFINE_enum("score", "", ["", *SCORES], "Box score (default: the variant's own; see cam_boxes).")
    flags.DEFINE_float("nms_iou", 0.8, "IoU of the NMS that merges the thresholds' boxes (1: none).")
    flags.DEFINE_bool("flip", True, "Average with the flipped image's CAM.")
    flags.DEFINE_integer("max_images", 0, "Box only the first N images (0: all).")
    flags.DEFINE_integer("batch_size", 8, "Images per CAM batch on the device.")
    flags.DEFINE_integer("pad_multiple", STRIDE, "Inputs padded to a multiple of this (32: as the DAP release).")
    flags.DEFINE_integer("host_workers", 0, "Processes for the boxes' host part (0: this one).")
    flags.DEFINE_bool("distributed", False, "Split the images over jax.distributed's processes.")
    flags.DEFINE_string("coordinator", "", "With --distributed: host:port of process 0 (else detected).")
    flags.DEFINE_integer("num_processes", 0, "With --coordinator: the number of processes.")
    flags.DEFINE_integer("process_id", -1, "With --coordinator: this process's index.")
    flags.mark_flags_as_required(["config", "output"])
    run_main(main)
