"""A TFDS image classification split read as detection data through a pseudo-box file (DAP's
step 3 at paper scale: Faster R-CNN pre-training on ImageNet's CAM boxes, Zhong et al. 2021
sec. 3.1), without a copy of the images:

    data.source = "tfds_pseudo_boxes"
    data.name = "imagenet2012"
    data.path = TFDS_DATA_DIR                               # optional
    data.coco_files.train = ("boxes.json", "train")         # split -> (pseudo-box file, TFDS split)

The file is what `python -m frozen_det.pseudo_boxes --tfds NAME:SPLIT` writes (sharded or not):
its images are keyed by the record's `tfds_id`, their boxes are in original pixels, and its
categories are the classifier's classes. The split is streamed as TFDS stores it, each record
looked up by its `tfds_id`; records the file does not list (unreadable, or past
`--max_images`) are left out. Record index i is the file's i-th image.
"""

from __future__ import annotations

import collections
import json
import os

import numpy as np
import tensorflow as tf

from frozen_det.data.detection.sources.base import DatasetInfo
from frozen_det.data.source import DataError, Source, decode_image
from frozen_det.data.tfds import read_split


class TfdsPseudoBoxSource(Source):
    random_access = False

    def __init__(self, builder, files: dict):
        if not files:
            raise DataError(
                "data.source='tfds_pseudo_boxes' needs data.coco_files.<split> = (pseudo-box json, TFDS split), "
                "the file of `python -m frozen_det.pseudo_boxes --tfds NAME:SPLIT`"
            )
        self.builder = builder
        self.files = {split: tuple(value) for split, value in files.items()}
        self._boxes = {}
        categories = self._load(next(iter(self.files)))["categories"]
        ids = sorted(c["id"] for c in categories)
        names = {c["id"]: c["name"] for c in categories}
        self.info = DatasetInfo(
            name=f"{builder.name} pseudo-boxes",
            class_names=["background"] + [names[i] for i in ids],
            category_ids=[0] + ids,
            has_masks=False,
        )
        self._class_of = {cid: i + 1 for i, cid in enumerate(ids)}

    def _entry(self, split):
        if split not in self.files:
            raise DataError(f"split {split!r}: data.coco_files names no pseudo-box file for it ({sorted(self.files)})")
        return self.files[split]

    def _load(self, split) -> dict:
        if split not in self._boxes:
            path = self._entry(split)[0]
            try:
                with open(path) as f:
                    data = json.load(f)
            except (OSError, json.JSONDecodeError) as e:
                raise DataError(f"data.coco_files.{split}: cannot read the pseudo-box file {path} ({e})") from e
            if not data.get("images") or not _keyed_by_tfds_id(data):
                raise DataError(
                    f"{path}: no images keyed by tfds_id; "
                    "make it with `python -m frozen_det.pseudo_boxes --tfds NAME:SPLIT`"
                )
            self._boxes[split] = data
        return self._boxes[split]

    def _tables(self, split):
        """tfds_id -> record index, and per record its boxes [n, 4] yxyx, classes and image id."""
        cache = self.__dict__.setdefault("_table_cache", {})
        if split not in cache:
            data = self._load(split)
            per_image = collections.defaultdict(list)
            for a in data["annotations"]:
                per_image[a["image_id"]].append(a)
            keys, boxes, classes, lengths = [], [], [], []
            for image in data["images"]:
                keys.append(image["file_name"])
                anns = per_image[image["id"]]
                boxes += [[y, x, y + h, x + w] for x, y, w, h in (a["bbox"] for a in anns)]
                classes += [self._class_of[a["category_id"]] for a in anns]
                lengths.append(len(anns))
            table = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(tf.constant(keys), tf.range(len(keys), dtype=tf.int64)), -1
            )
            cache[split] = dict(
                table=table,
                image_id=tf.constant([image["id"] for image in data["images"]], tf.int64),
                boxes=tf.RaggedTensor.from_row_lengths(
                    tf.constant(np.asarray(boxes, np.float32).reshape(-1, 4)), tf.constant(lengths, tf.int64)
                ),
                classes=tf.RaggedTensor.from_row_lengths(
                    tf.constant(np.asarray(classes, np.int32)), tf.constant(lengths, tf.int64)
                ),
            )
        return cache[split]

    def stream(self, split, shard, seed, buffer, repeats=None):
        index, count = shard
        t = self._tables(split)
        ds = read_split(self.builder, self._entry(split)[1], seed, with_tfds_id=True)
        ds = ds.map(lambda ex: (t["table"].lookup(ex["tfds_id"]), ex["image"]))
        ds = ds.filter(lambda i, _: tf.logical_and(i >= 0, i % count == index))
        if repeats is not None:
            times = tf.constant(np.asarray(repeats, np.int64))
            ds = ds.filter(lambda i, _: times[i] > 0)
            ds = ds.flat_map(lambda i, image: tf.data.Dataset.from_tensors((i, image)).repeat(times[i]))
        if seed is not None:
            ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=False)
        return ds.map(
            lambda i, image: dict(
                index=i, image=image, image_id=t["image_id"][i], boxes=t["boxes"][i], classes=t["classes"][i]
            )
        )

    def decode(self, record, with_masks):
        if with_masks:
            raise DataError("data.source='tfds_pseudo_boxes' has boxes only: set data.with_masks=False")
        return dict(
            image=decode_image(record["image"]),
            boxes=record["boxes"],
            classes=record["classes"],
            is_crowd=tf.zeros_like(record["classes"], tf.bool),
            image_id=record["image_id"],
        )

    def num_records(self, split):
        return len(self._load(split)["images"])

    def _record_class_counts(self, split):
        data = self._load(split)
        per_image = collections.defaultdict(collections.Counter)
        for a in data["annotations"]:
            per_image[a["image_id"]][self._class_of[a["category_id"]]] += 1
        return [dict(per_image[image["id"]]) for image in data["images"]]

    def describe_record(self, split, index):
        image = self._load(split)["images"][index]
        return f"{image['file_name']} (image id {image['id']}) of tfds {self.builder.name}"

    def coco_ground_truth(self, split):
        data = self._load(split)
        return {
            "images": [{k: image[k] for k in ("id", "file_name", "width", "height")} for image in data["images"]],
            "annotations": [dict(a, iscrowd=0) for a in data["annotations"]],
            "categories": self.info.categories(),
            "info": {"description": f"{os.path.basename(self._entry(split)[0])}: pseudo-boxes of {self.builder.name}"},
        }


def _keyed_by_tfds_id(data: dict) -> bool:
    """Whether the file's image names are TFDS record ids (NAME-SPLIT.tfrecord-...__N)."""
    return all(".tfrecord-" in image["file_name"] for image in data["images"][:10])
