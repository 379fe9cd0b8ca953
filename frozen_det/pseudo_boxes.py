"""Pseudo-boxes of a folder of images from a classifier's class activation maps (DAP step 2:
Zhong et al., CVPR 2021, sec. 3.1), written as a COCO-format detection file.

    python -m frozen_det.pseudo_boxes --config CONFIG [--workdir RUN] --images DIR --output FILE.json \\
        [--labels LABELS.json | --labels folders | --class_id N] [--variant paper|released] \\
        [--scales 288,576] [--thresholds 0.2,0.3,0.4,0.5] [--nms_iou 0.8] [--noflip] [--max_images N]

CONFIG is a classification run's config with its --workdir, or a classifier config with
pretrained weights and no --workdir (configs/backbones/efficientnet_lite0_imagenet.py: the
packaged ImageNet EfficientNet-Lite0 and its ImageNet head). The class of each image:
`--labels LABELS.json`, a COCO-format file whose
`images` have `file_name` (relative to DIR) and `label`, the id of one of its `categories` (the
k-th category by id is the classifier's class k), as the ImageNet-like canvases of
`python -m frozen_det.data.offline.canvases --mode imagenet` do (their image ids are kept);
`--labels folders`, each image's first folder under DIR names its class (the
ImageFolder layout); `--class_id N` for every image; otherwise the classifier's top-1 class.

FILE.json: `images` (`id`, `file_name` relative to DIR, `width`, `height`, `label`: the category
id of the class boxed),
`categories` (every class of the classifier, id = class index + 1), `annotations` (`image_id`,
`bbox` [x, y, w, h] in the original image's pixels, `category_id`, `score`, `area`), and
`stats`: boxes per image and mean box width / height per threshold before merging and after
(DAP's Tables A1 / A2), the options, and the images that could not be read (counted and listed,
not fatal). The detection pipeline's COCO-folder source reads it:
`--config.data.source=coco_folder --config.data.path=DIR/.. --config.data.coco_files.train="('FILE.json', 'DIR')"`.
"""

from __future__ import annotations

import json
import logging
import os
import sys

import numpy as np
from absl import flags
from ml_collections import config_flags

from frozen_det.data.files import IMAGE_EXTENSIONS, image_files, read_rgb
from frozen_det.localization.cam import CamClassifier, cam_classifier_from_model
from frozen_det.localization.cam_boxes import PseudoBoxOptions, image_pseudo_boxes
from frozen_det.runtime import prepare_entry_point, run_main

log = logging.getLogger("frozen_det.pseudo_boxes")


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


def read_labels_file(path: str) -> dict:
    """The `--labels` file: COCO-format JSON whose `images` have `id`, `file_name` and `label`
    and whose `categories` have `id`; anything else fails in one line saying what is missing."""
    expected = (
        "a COCO-format labels file has 'images' (each with 'id', 'file_name' and 'label', a category id) "
        "and 'categories' (each with 'id'), as `python -m frozen_det.data.offline.canvases --mode imagenet` writes"
    )
    try:
        with open(path) as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"--labels {path}: not JSON ({e}); {expected}") from None
    found = sorted(data) if isinstance(data, dict) else type(data).__name__
    entries_ok = isinstance(data, dict) and all(
        isinstance(data.get(key), list) and all(isinstance(e, dict) and set(fields) <= set(e) for e in data[key])
        for key, fields in (("images", ("id", "file_name")), ("categories", ("id",)))
    )
    if not entries_ok:
        raise ValueError(f"--labels {path}: not a COCO-format labels file (found {found}); {expected}")
    return data


def list_images(images_dir: str, labels: str | None, class_names) -> list[dict]:
    """[{"id", "file_name", "label" (None: the classifier's top-1)}] of the images to box."""
    if labels and labels != "folders":
        data = read_labels_file(labels)
        index = {c["id"]: i for i, c in enumerate(sorted(data["categories"], key=lambda c: c["id"]))}
        out = []
        for e in data["images"]:
            if e.get("label") not in index:
                raise ValueError(
                    f"--labels {labels}: image {e.get('file_name')!r} has no 'label' that is one of the "
                    f"file's category ids ({len(index)} categories)"
                )
            out.append({"id": int(e["id"]), "file_name": e["file_name"], "label": index[e["label"]]})
        return out
    files = image_files(images_dir, recursive=True)
    if not files:
        raise ValueError(f"--images {images_dir}: no image files ({', '.join(IMAGE_EXTENSIONS)}) found")
    index = {name: i for i, name in enumerate(class_names)}
    out = []
    for i, file_name in enumerate(files):
        label = None
        if labels == "folders":
            folder = file_name.split(os.sep)[0]
            if folder not in index:
                raise ValueError(
                    f"--labels folders: {file_name!r} is in folder {folder!r}, which is not a class of "
                    f"the classifier ({len(class_names)} classes, e.g. {list(class_names)[:5]})"
                )
            label = index[folder]
        out.append({"id": i + 1, "file_name": file_name, "label": label})
    return out


def _size_stats(boxes_per_image: list) -> dict:
    """Boxes per image and mean width / height (DAP Tables A1 / A2) of [N_i, 4] arrays."""
    boxes = np.concatenate([b.reshape(-1, 4) for b in boxes_per_image]) if boxes_per_image else np.zeros((0, 4))
    n = max(len(boxes_per_image), 1)
    return {
        "boxes_per_image": round(len(boxes) / n, 4),
        "mean_width": round(float(np.mean(boxes[:, 3] - boxes[:, 1])), 2) if len(boxes) else None,
        "mean_height": round(float(np.mean(boxes[:, 2] - boxes[:, 0])), 2) if len(boxes) else None,
    }


def write_pseudo_boxes(
    clf,
    images_dir: str,
    output: str,
    options: PseudoBoxOptions,
    labels: str | None = None,
    class_id: int | None = None,
    progress: bool = True,
    max_images: int = 0,
) -> dict:
    """Boxes every image of `images_dir` (the first `max_images` if > 0; see the module
    docstring) into `output`; returns the file's `stats` block."""
    from tqdm import tqdm

    entries = list_images(images_dir, labels, clf.class_names)
    entries = entries[:max_images] if max_images > 0 else entries
    images, annotations, unreadable = [], [], []
    per_threshold = [[] for _ in options.thresholds]
    merged = []
    for entry in tqdm(entries, desc="pseudo-boxes", unit="image", disable=not progress, mininterval=2):
        path = os.path.join(images_dir, entry["file_name"])
        try:
            image = np.asarray(read_rgb(path))
        except (OSError, ValueError) as e:
            unreadable.append({"file_name": entry["file_name"], "error": str(e)})
            log.warning("cannot read %s: %s (skipped)", path, e)
            continue
        label = class_id if class_id is not None else entry["label"]
        if label is not None and not 0 <= label < clf.num_classes:
            raise ValueError(f"{entry['file_name']}: class {label} is not one of the classifier's {clf.num_classes}")
        result, _, label = image_pseudo_boxes(clf, image, options, label)
        h, w = image.shape[:2]
        images.append({"id": entry["id"], "file_name": entry["file_name"], "width": w, "height": h, "label": label + 1})
        for t, boxes in enumerate(result.per_threshold):
            per_threshold[t].append(boxes)
        merged.append(result.boxes)
        for (y1, x1, y2, x2), score in zip(result.boxes.tolist(), result.scores.tolist()):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": entry["id"],
                    "category_id": label + 1,
                    "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                    "area": round((x2 - x1) * (y2 - y1), 2),
                    "score": round(score, 5),
                    "iscrowd": 0,
                }
            )
    stats = {
        "images": len(images),
        "per_threshold": {str(t): _size_stats(b) for t, b in zip(options.thresholds, per_threshold)},
        "merged": _size_stats(merged),
        "options": {k: list(v) if isinstance(v, tuple) else v for k, v in vars(options).items()},
        "unreadable": unreadable,
        "num_unreadable": len(unreadable),
    }
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(clf.class_names)]
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with open(output, "w") as f:
        json.dump({"images": images, "categories": categories, "annotations": annotations, "stats": stats}, f)
    return stats


def _floats(text: str) -> tuple:
    return tuple(float(v) for v in text.split(",") if v.strip())


def main(argv):
    del argv
    F = flags.FLAGS
    options = PseudoBoxOptions(
        variant=F.variant,
        scales=tuple(int(v) for v in _floats(F.scales)),
        flip=F.flip,
        thresholds=_floats(F.thresholds),
        nms_iou=F.nms_iou,
    )
    clf = load_cam_classifier(_CONFIG.value, F.workdir)
    stats = write_pseudo_boxes(clf, F.images, F.output, options, F.labels, F.class_id, max_images=F.max_images)
    print(json.dumps({k: v for k, v in stats.items() if k != "unreadable"}), flush=True)


if __name__ == "__main__":
    prepare_entry_point(sys.argv, runs=("workdir",))  # before anything (the config file too) imports TensorFlow
    _CONFIG = config_flags.DEFINE_config_file("config", None, "Classifier config file.", lock_config=True)
    flags.DEFINE_string("workdir", None, "The classification run (omit for a backbone config with packaged weights).")
    flags.DEFINE_string("images", None, "Folder of images (searched recursively).")
    flags.DEFINE_string("output", None, "COCO-format JSON to write.")
    flags.DEFINE_string("labels", None, "COCO JSON with images[].label, or 'folders'.")
    flags.DEFINE_integer("class_id", None, "One class for every image.")
    flags.DEFINE_enum("variant", "paper", ["paper", "released"], "The paper's text or the authors' code.")
    flags.DEFINE_string("scales", "288,576", "Shorter sides of the CAM inputs.")
    flags.DEFINE_string("thresholds", "0.2,0.3,0.4,0.5", "CAM thresholds tau.")
    flags.DEFINE_float("nms_iou", 0.8, "IoU of the NMS that merges the thresholds' boxes (1: none).")
    flags.DEFINE_bool("flip", True, "Average with the flipped image's CAM.")
    flags.DEFINE_integer("max_images", 0, "Box only the first N images (0: all).")
    flags.mark_flags_as_required(["config", "images", "output"])
    run_main(main)
