"""Objects on canvases: real object images (Fashion-MNIST items) coloured and pasted on textured
backgrounds, written as COCO-format folders that the detection pipeline reads (source
"coco_folder"), for offline transfer studies with real objects.

Two modes, after the two kinds of pre-training data the studies contrast:

* "imagenet": ImageNet-like, object-centric: one class per image, 1-3 large instances (a side
  of 35-70% of the canvas); the image's class is public (`images[i]["label"]`, the class id,
  and `images[i]["label_name"]`), the boxes are kept to score localisation (and to pre-train
  detectors on pseudo-boxes against the truth);
* "voc": VOC-like, scene-centric: 2-6 objects of several classes, smaller (15-40%), plus clutter
  (unannotated fragments of other items).

An item's mask is its pixels above a small threshold (Fashion-MNIST items are white-on-black);
it is scaled, tinted with a random colour, pasted with that mask, and may be occluded by later
items (at most half of an earlier object may be hidden; boxes and masks are the visible part).
Train items come from Fashion-MNIST's train split, validation items from its test split.
Everything is a function of (mode, split, index, seed): two runs write identical files.

    python -m frozen_det.data.offline.canvases --mode voc --output /tmp/canvases_voc [--num_train 2000 --num_val 400]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
from PIL import Image

from frozen_det.data.offline import fashion_mnist
from frozen_det.data.offline.scenes import background, place, visible_boxes
from frozen_det.runtime import one_line_errors, prepare_entry_point, progress

MODES = {
    # mode: (objects per image, side as a fraction of the canvas, one class per image, clutter fragments)
    "imagenet": ((1, 3), (0.35, 0.7), True, (0, 0)),
    "voc": ((2, 6), (0.15, 0.4), False, (1, 4)),
}
_SPLITS = {"train": ("train", 0), "val": ("test", 1)}


def _item(rng, items: np.ndarray, labels: np.ndarray, label: int | None):
    """(grey item [28, 28] in [0, 1], its label) drawn at random (of class `label` if given)."""
    pool = np.flatnonzero(labels == label) if label is not None else np.arange(len(labels))
    k = int(rng.choice(pool))
    return items[k].astype(np.float32) / 255.0, int(labels[k])


def _scaled(item: np.ndarray, side: int) -> np.ndarray:
    return (
        np.asarray(Image.fromarray((item * 255).astype(np.uint8)).resize((side, side), Image.BILINEAR), np.float32)
        / 255.0
    )


def _tint(rng, image: np.ndarray, mask_region) -> np.ndarray:
    """A colour that stands out from what is under the item."""
    under = image[mask_region].mean(0) if mask_region.any() else np.full(3, 128.0)
    colour = rng.uniform(30, 255, 3)
    for _ in range(20):
        if np.abs(colour - under).sum() >= 150:
            break
        colour = rng.uniform(30, 255, 3)
    return colour


def generate_example(mode: str, items, labels, index: int, split_seed: int, size: int, seed: int = 0) -> dict:
    """One canvas: image uint8 [S, S, 3], instance map uint8 [S, S], boxes [n, 4] (yxyx
    pixels of the visible parts), labels [n], visible areas [n], the image's class (or -1)."""
    (lo, hi), (side_lo, side_hi), single_class, (clutter_lo, clutter_hi) = MODES[mode]
    rng = np.random.default_rng([seed, split_seed, index, size, 7 if mode == "voc" else 3])
    image = background(rng, size)
    image_class = int(rng.integers(0, len(fashion_mnist.CLASSES))) if single_class else None
    for _ in range(int(rng.integers(clutter_lo, clutter_hi + 1))):  # unannotated fragments of items
        item, _ = _item(rng, items, labels, None)
        y, x = rng.integers(0, 20, 2)
        fragment = _scaled(item[y : y + 8, x : x + 8], int(rng.integers(size // 10, size // 5)))
        top, left = rng.integers(0, size - fragment.shape[0], 2)
        region = (slice(top, top + fragment.shape[0]), slice(left, left + fragment.shape[1]))
        alpha = fragment[..., None] * 0.8
        image[region] = image[region] * (1 - alpha) + _tint(rng, image[region], fragment > 0.1) * alpha
    inst = np.zeros((size, size), np.uint8)
    full_areas, object_labels = [], []
    target, attempts = int(rng.integers(lo, hi + 1)), 0
    while len(object_labels) < target and attempts < 40:
        attempts += 1
        item, label = _item(rng, items, labels, image_class)
        side = int(rng.uniform(side_lo, side_hi) * size)
        scaled = _scaled(item, side)
        top, left = rng.integers(0, size - side + 1, 2)
        mask = np.zeros((size, size), bool)
        mask[top : top + side, left : left + side] = scaled > 0.1
        trial = place(inst, full_areas, mask)
        if trial is None:
            continue
        inst = trial
        full_areas.append(int(mask.sum()))
        object_labels.append(label)
        colour = _tint(rng, image, mask)
        shade = scaled[mask[top : top + side, left : left + side]][:, None]  # the item's own shading
        image[mask] = colour * (0.35 + 0.65 * shade) + rng.normal(0, 3, (int(mask.sum()), 3))
    boxes, areas = visible_boxes(inst, len(object_labels))
    return dict(
        image=np.clip(image, 0, 255).astype(np.uint8),
        instance_map=inst,
        boxes=boxes,
        labels=np.asarray(object_labels, np.int64),
        areas=areas,
        image_class=image_class if image_class is not None else -1,
    )


def write_canvases(
    output: str,
    mode: str = "voc",
    num_train: int = 2000,
    num_val: int = 400,
    image_size: int = 128,
    seed: int = 0,
    fashion_mnist_dir: str = fashion_mnist.DEBIAN_DIR,
) -> dict:
    """Writes `output/{train,val}/*.png` and `output/annotations/instances_{train,val}.json`
    (COCO, with RLE masks of the visible parts); returns a summary."""
    from pycocotools import mask as mask_utils

    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: choose one of {sorted(MODES)}")
    for name, count in (("num_train", num_train), ("num_val", num_val)):
        if count < 1:
            raise ValueError(f"--{name} {count}: a dataset needs at least one image per split")
    categories = [{"id": i + 1, "name": name, "supercategory": ""} for i, name in enumerate(fashion_mnist.CLASSES)]
    os.makedirs(os.path.join(output, "annotations"), exist_ok=True)
    summary = {"mode": mode, "image_size": image_size, "seed": seed}
    for split, count in (("train", num_train), ("val", num_val)):
        fashion_split, split_seed = _SPLITS[split]
        items = fashion_mnist.read(fashion_mnist_dir, fashion_split, "images")
        labels = fashion_mnist.read(fashion_mnist_dir, fashion_split, "labels")
        os.makedirs(os.path.join(output, split), exist_ok=True)
        images, annotations = [], []
        for index in progress(range(count), f"canvases {split}", unit="image"):
            ex = generate_example(mode, items, labels, index, split_seed, image_size, seed)
            name = f"{index:06d}.png"
            Image.fromarray(ex["image"]).save(os.path.join(output, split, name))
            entry = {"id": index + 1, "file_name": name, "height": image_size, "width": image_size}
            if ex["image_class"] >= 0:
                entry.update(label=ex["image_class"] + 1, label_name=fashion_mnist.CLASSES[ex["image_class"]])
            images.append(entry)
            for j, (box, label, area) in enumerate(zip(ex["boxes"], ex["labels"], ex["areas"])):
                rle = mask_utils.encode(np.asfortranarray((ex["instance_map"] == j + 1).astype(np.uint8)))
                rle["counts"] = rle["counts"].decode("ascii")
                y0, x0, y1, x1 = (float(v) for v in box)
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": index + 1,
                        "category_id": int(label) + 1,
                        "bbox": [x0, y0, x1 - x0, y1 - y0],
                        "area": float(area),
                        "iscrowd": 0,
                        "segmentation": rle,
                    }
                )
        with open(os.path.join(output, "annotations", f"instances_{split}.json"), "w") as f:
            json.dump(
                {
                    "images": images,
                    "annotations": annotations,
                    "categories": categories,
                    "info": {"description": f"frozen_det objects on canvases ({mode}-like), seed {seed}"},
                },
                f,
            )
        summary[split] = {"images": count, "objects": len(annotations)}
    return summary


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--output", required=True)
    ap.add_argument("--mode", default="voc", choices=sorted(MODES))
    ap.add_argument("--num_train", type=int, default=2000)
    ap.add_argument("--num_val", type=int, default=400)
    ap.add_argument("--image_size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fashion_mnist", default=fashion_mnist.DEBIAN_DIR, help="the idx files' folder")
    a = ap.parse_args(argv)
    start = time.perf_counter()
    with one_line_errors():
        summary = write_canvases(a.output, a.mode, a.num_train, a.num_val, a.image_size, a.seed, a.fashion_mnist)
    print(json.dumps(dict(summary, seconds=round(time.perf_counter() - start, 1))), flush=True)


if __name__ == "__main__":
    prepare_entry_point(sys.argv)  # before anything (the config file too) imports TensorFlow
    main()
