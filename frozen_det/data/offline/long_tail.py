"""A generated long-tailed dataset in the LVIS v1 release layout: the LVIS machinery
(frequency groups, federated evaluation, repeat-factor sampling, the stratified analysis in
tools/lvis_stratified.py) offline, in seconds.

    python -m frozen_det.data.offline.long_tail --output /tmp/long_tail
    python -m frozen_det.data.show --config configs/data/long_tail.py:/tmp/long_tail --output /tmp/lt

Layout (the LVIS v1 file names, images beside them)::

    DIR/annotations/lvis_v1_train.json    DIR/train/000000000001.png ...
    DIR/annotations/lvis_v1_val.json      DIR/val/000001000001.png ...

Classes are (shape, colour) pairs drawn with the synthetic-shapes helpers
(:mod:`frozen_det.data.offline.scenes`): the 8 shapes in ceil(C / 8) well-separated fixed colours
(red, green, blue, yellow, magenta, cyan) on a desaturated textured background, each object
with a small brightness jitter and pixel noise; which pairs are used and in which order is a
seeded permutation. Class names read ``<colour>_<shape>``.

The long tail is set by the number of *training images* per class, so that exactly
``num_frequent`` / ``num_common`` / ``num_rare`` classes fall in LVIS's f (> 100 images) /
c (11-100) / r (1-10) groups (class_stats.frequency_group): frequent classes get from 80% of
the training images down to 110 (geometric), common 95 down to 12 (geometric), rare 10 down to
1 (linear). Category ids run in that order (1 = the most frequent). Each class is put in
exactly that many images (drawn with probability proportional to an image's free room, at
most ``max_objects`` classes per image), with 1-3 instances (extra instances only while the
image has room); rarer classes are placed first, so every assigned class is really drawn.
Every class is in max(3, its train share) validation images, so APr / APc / APf are defined.
The annotations are exhaustive; per image, ``neg_category_ids`` is a random half of the
absent classes and 10% of the images list one present class in
``not_exhaustive_category_ids`` (a label only: nothing is removed).

Both files carry the same ``categories`` (``frequency``, ``image_count``, ``instance_count``
from the train split, as LVIS does); annotations have a tight ``bbox`` of the visible mask,
its pixel ``area`` and the mask as compressed RLE (ascii counts). Everything is a function of
the arguments, so two writes are byte-identical.

Default size: 300 train + 100 val images of 128 px, 20 classes (3 f, 5 c, 12 r), about 1,200
+ 400 objects, 12 MB of PNGs; about 4 s on one CPU core (plus imports).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from frozen_det.data.class_stats import LVIS_COMMON_MAX_IMAGES, LVIS_RARE_MAX_IMAGES, frequency_group
from frozen_det.data.offline import scenes
from frozen_det.runtime import prepare_entry_point

COLOURS = (
    ("red", (215, 45, 45)),
    ("green", (45, 180, 65)),
    ("blue", (50, 90, 225)),
    ("yellow", (225, 205, 45)),
    ("magenta", (205, 55, 205)),
    ("cyan", (45, 200, 210)),
)
RADIUS = (0.07, 0.17)  # object radius range, fraction of the image size
MIN_VAL_IMAGES = 3
NEG_FRACTION = 0.5  # of the absent classes, listed in neg_category_ids
NOT_EXHAUSTIVE_RATE = 0.1  # images with one present class marked not exhaustive
SPLITS = {"train": ("lvis_v1_train.json", 1), "val": ("lvis_v1_val.json", 1_000_001)}  # json, first id


@dataclasses.dataclass(frozen=True)
class ClassSpec:
    name: str
    shape: str
    colour: str
    rgb: tuple


def class_specs(num_classes: int, seed: int) -> list:
    """The (shape, colour) of each class, in category-id order."""
    num_colours = -(-num_classes // len(scenes.SHAPES))
    if num_classes < 1 or num_colours > len(COLOURS):
        raise ValueError(f"{num_classes} classes: between 1 and {len(COLOURS) * len(scenes.SHAPES)}")
    pairs = [(shape, colour) for colour in COLOURS[:num_colours] for shape in scenes.SHAPES]
    order = np.random.default_rng([seed, 2]).permutation(len(pairs))[:num_classes]
    return [ClassSpec(f"{pairs[k][1][0]}_{pairs[k][0]}", pairs[k][0], pairs[k][1][0], pairs[k][1][1]) for k in order]


def target_image_counts(num_train: int, num_frequent: int, num_common: int, num_rare: int) -> np.ndarray:
    """Training images per class (frequent, then common, then rare; module docstring)."""
    top = int(0.8 * num_train)
    if num_frequent and top < LVIS_COMMON_MAX_IMAGES + 10:
        raise ValueError(
            f"num_train={num_train}: frequent classes need more than {LVIS_COMMON_MAX_IMAGES} "
            "training images each; use num_train >= 138"
        )
    if num_common and num_train < LVIS_COMMON_MAX_IMAGES - 5:
        raise ValueError(f"num_train={num_train}: common classes need up to 95 training images")
    counts = np.concatenate(
        [
            np.geomspace(top, LVIS_COMMON_MAX_IMAGES + 10, num_frequent),
            np.geomspace(LVIS_COMMON_MAX_IMAGES - 5, LVIS_RARE_MAX_IMAGES + 2, num_common),
            np.linspace(LVIS_RARE_MAX_IMAGES, 1, num_rare),
        ]
    )
    return np.round(counts).astype(np.int64)


def _assign(rng, image_counts, num_images: int, max_objects: int, split: str) -> list:
    """Classes of each image: class c in exactly image_counts[c] images, at most max_objects
    classes per image, images drawn in proportion to their free room (largest classes first)."""
    members = [[] for _ in range(num_images)]
    free = np.full(num_images, float(max_objects))
    for c in np.argsort(-image_counts, kind="stable"):
        n = int(image_counts[c])
        if np.count_nonzero(free) < n:
            raise ValueError(
                f"{split}: no room for {n} images of class {c + 1} in {num_images} images of at "
                f"most {max_objects} objects; raise max_objects or the number of images"
            )
        chosen = rng.choice(num_images, n, replace=False, p=free / free.sum())
        for i in chosen:
            members[i].append(int(c))
        free[chosen] -= 1
    return members


def _draw(rng, size: int, present: list, image_counts, specs: list, max_objects: int):
    """One image (uint8 [S, S, 3]), its instance map and the class of each object."""
    image = scenes.background(rng, size)
    grey = image.mean(-1, keepdims=True)
    image = grey + 0.25 * (image - grey)  # desaturated: the class colours stand out
    firsts = sorted(present, key=lambda c: (image_counts[c], c))  # rarest first
    extras = [c for c in firsts for _ in range(rng.binomial(2, 0.25))]
    queue = firsts + [int(c) for c in rng.permutation(extras)][: max(0, max_objects - len(firsts))]
    inst = np.zeros((size, size), np.uint8)
    full_areas, labels = [], []
    for c in queue:
        for _ in range(50):
            mask = scenes.random_shape_mask(rng, specs[c].shape, size, RADIUS)
            trial = scenes.place(inst, full_areas, mask)
            if trial is not None:
                break
        else:
            continue
        inst = trial
        labels.append(c)
        full_areas.append(int(mask.sum()))
        scenes.paint(rng, image, mask, np.asarray(specs[c].rgb, np.float64) + rng.uniform(-25, 25))
    return np.clip(image, 0, 255).astype(np.uint8), inst, labels


def _generate_split(
    root: str, split: str, members: list, image_counts, specs: list, image_size: int, max_objects: int, seed: int
) -> tuple:
    """Draws and writes the split's images (``members``: the classes of each); returns its
    (images, annotations) json lists."""
    stream = list(SPLITS).index(split)
    first_id = SPLITS[split][1]
    os.makedirs(os.path.join(root, split), exist_ok=True)
    images, annotations = [], []
    for i, present in enumerate(members):
        rng = np.random.default_rng([seed, stream, i])
        pixels, inst, labels = _draw(rng, image_size, present, image_counts, specs, max_objects)
        image_id = first_id + i
        file_name = f"{image_id:012d}.png"
        Image.fromarray(pixels).save(os.path.join(root, split, file_name))
        boxes, areas = scenes.visible_boxes(inst, len(labels))
        for j, c in enumerate(labels):
            rle = mask_utils.encode(np.asfortranarray((inst == j + 1).astype(np.uint8)))
            y0, x0, y1, x1 = (float(v) for v in boxes[j])
            annotations.append(
                {
                    "id": first_id + len(annotations),
                    "image_id": image_id,
                    "category_id": c + 1,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": int(areas[j]),
                    "segmentation": {"size": [image_size, image_size], "counts": rle["counts"].decode("ascii")},
                }
            )
        absent = [c for c in range(len(specs)) if c not in labels]
        neg = [c + 1 for c in absent if rng.random() < NEG_FRACTION]
        not_exhaustive = []
        if labels and rng.random() < NOT_EXHAUSTIVE_RATE:
            not_exhaustive = [int(rng.choice(sorted(set(labels)))) + 1]
        images.append(
            {
                "id": image_id,
                "file_name": file_name,
                "height": image_size,
                "width": image_size,
                "neg_category_ids": neg,
                "not_exhaustive_category_ids": not_exhaustive,
            }
        )
    return images, annotations


def _counts(annotations: list, num_classes: int) -> tuple:
    """(images, instances) per class id - 1."""
    instances = np.zeros(num_classes, np.int64)
    images = [set() for _ in range(num_classes)]
    for a in annotations:
        instances[a["category_id"] - 1] += 1
        images[a["category_id"] - 1].add(a["image_id"])
    return np.array([len(s) for s in images], np.int64), instances


def write_long_tailed_lvis(
    path: str,
    *,
    image_size: int = 128,
    num_train: int = 300,
    num_val: int = 100,
    num_frequent: int = 3,
    num_common: int = 5,
    num_rare: int = 12,
    max_objects: int = 6,
    seed: int = 0,
) -> dict:
    """Writes the dataset under ``path`` (module docstring) and returns a summary: sizes, the
    r/c/f group sizes and per category its train / val image and instance counts."""
    if image_size < 64:
        raise ValueError(f"image_size={image_size}: at least 64")
    if max_objects < 1 or num_val < 1:
        raise ValueError("max_objects and num_val must be positive")
    specs = class_specs(num_frequent + num_common + num_rare, seed)
    train_counts = target_image_counts(num_train, num_frequent, num_common, num_rare)
    val_counts = np.maximum(MIN_VAL_IMAGES, np.round(train_counts * num_val / num_train)).astype(np.int64)
    sizes = {"train": (num_train, train_counts), "val": (num_val, val_counts)}
    members = {
        split: _assign(np.random.default_rng([seed, list(SPLITS).index(split)]), counts, num, max_objects, split)
        for split, (num, counts) in sizes.items()
    }  # both first: a size error writes nothing
    os.makedirs(os.path.join(path, "annotations"), exist_ok=True)
    splits = {
        split: _generate_split(path, split, members[split], counts, specs, image_size, max_objects, seed)
        for split, (_, counts) in sizes.items()
    }
    num_classes = len(specs)
    train_images, train_instances = _counts(splits["train"][1], num_classes)
    val_images, val_instances = _counts(splits["val"][1], num_classes)
    categories = [
        {
            "id": c + 1,
            "name": s.name,
            "synset": f"{s.name}.n.01",
            "synonyms": [s.name],
            "def": f"a {s.colour} {s.shape}",
            "frequency": frequency_group(int(train_images[c])),
            "image_count": int(train_images[c]),
            "instance_count": int(train_instances[c]),
        }
        for c, s in enumerate(specs)
    ]
    groups = {g: sum(cat["frequency"] == g for cat in categories) for g in "fcr"}
    wanted = {"f": num_frequent, "c": num_common, "r": num_rare}
    if groups != wanted or train_images.min() < 1 or val_images.min() < 1:
        raise RuntimeError(
            f"seed {seed}: the drawn images give groups {groups} (wanted {wanted}), train "
            f"images per class {train_images.tolist()}, val {val_images.tolist()}; "
            "lower max_objects or change the seed"
        )
    info = {
        "description": "frozen_det long-tailed shapes in the LVIS v1 format (frozen_det.data.offline.long_tail)",
        "version": "1.0",
        "seed": seed,
        "image_size": image_size,
    }
    for split, (images, anns) in splits.items():
        with open(os.path.join(path, "annotations", SPLITS[split][0]), "w") as f:
            json.dump(
                {"info": info, "licenses": [], "categories": categories, "images": images, "annotations": anns},
                f,
                separators=(",", ":"),
            )
    return {
        "path": os.path.abspath(path),
        "image_size": image_size,
        "num_classes": num_classes,
        "frequency_groups": groups,
        **{split: {"images": len(images), "annotations": len(anns)} for split, (images, anns) in splits.items()},
        "categories": [
            {
                "id": cat["id"],
                "name": cat["name"],
                "frequency": cat["frequency"],
                "train_images": cat["image_count"],
                "train_instances": cat["instance_count"],
                "val_images": int(val_images[c]),
                "val_instances": int(val_instances[c]),
            }
            for c, cat in enumerate(categories)
        ],
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--output", required=True, help="dataset folder (created)")
    ap.add_argument("--image_size", type=int, default=128)
    ap.add_argument("--num_train", type=int, default=300)
    ap.add_argument("--num_val", type=int, default=100)
    ap.add_argument("--num_frequent", type=int, default=3)
    ap.add_argument("--num_common", type=int, default=5)
    ap.add_argument("--num_rare", type=int, default=12)
    ap.add_argument("--max_objects", type=int, default=6, help="classes (and objects) per image at most")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    start = time.perf_counter()
    summary = write_long_tailed_lvis(
        a.output,
        image_size=a.image_size,
        num_train=a.num_train,
        num_val=a.num_val,
        num_frequent=a.num_frequent,
        num_common=a.num_common,
        num_rare=a.num_rare,
        max_objects=a.max_objects,
        seed=a.seed,
    )
    print(json.dumps(summary, indent=1))
    print(f"wrote {summary['path']} in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    prepare_entry_point(sys.argv)  # before anything (the config file too) imports TensorFlow
    sys.exit(main())
