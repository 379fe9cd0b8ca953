"""Shared machinery of random-access sources whose annotations fit in host memory
(local VOC / COCO folders): a per-split list of :class:`Record` and a tf.data view of it."""

from __future__ import annotations

import collections
import dataclasses
import os
from typing import Optional

import numpy as np
import tensorflow as tf

from frozen_det.data.detection.sources.base import coco_annotation, coco_image_entry
from frozen_det.data.source import Source, count, decode_image


@dataclasses.dataclass
class Record:
    image_path: str
    image_id: int
    height: int
    width: int
    boxes: np.ndarray  # float32 [n, 4] yxyx original pixels, already sanitised
    classes: np.ndarray  # int32 [n], 1..C
    is_crowd: np.ndarray  # bool [n]
    segmentations: Optional[list] = None  # COCO segmentation per object (polygons / RLE)


class RecordListSource(Source):
    """A source backed by ``self._split_records(split) -> list[Record]`` (cached). While a split is
    read, ``self._skipped`` is that split's counter of skipped rows (``skipped_report(split)``)."""

    random_access = True

    def __init__(self):
        self._cache = {}
        self._tensors = {}
        self._skipped = {}
        self._skipped_by_split = {}

    def _split_records(self, split: str) -> list:
        raise NotImplementedError

    def split_records(self, split: str) -> list:
        if split not in self._cache:
            self._skipped = self._skipped_by_split.setdefault(split, {})
            self._cache[split] = self._split_records(split)
        return self._cache[split]

    def skipped_report(self, split: str | None = None) -> dict:
        if split is not None:
            return dict(self._skipped_by_split.get(split, {}))
        total: dict = {}
        for counter in self._skipped_by_split.values():
            for key, n in counter.items():
                count(total, key, n)
        return total

    def num_records(self, split):
        return len(self.split_records(split))

    def _record_class_counts(self, split):
        return [dict(collections.Counter(r.classes[~r.is_crowd].tolist())) for r in self.split_records(split)]

    def describe_record(self, split, index):
        rec = self.split_records(split)[index]
        return f"{rec.image_path} (image id {rec.image_id})"

    def _split_tensors(self, split):
        if split not in self._tensors:
            recs = self.split_records(split)
            lengths = [len(r.classes) for r in recs]

            def ragged(values, dtype, width=None):
                flat = (
                    np.concatenate([np.asarray(v, dtype).reshape((-1,) + ((width,) if width else ())) for v in values])
                    if recs
                    else np.zeros((0,) + ((width,) if width else ()), dtype)
                )
                return tf.RaggedTensor.from_row_lengths(tf.constant(flat), tf.constant(lengths, tf.int64))

            self._tensors[split] = dict(
                path=tf.constant([r.image_path for r in recs], tf.string),
                image_id=tf.constant([r.image_id for r in recs], tf.int64),
                boxes=ragged([r.boxes for r in recs], np.float32, 4),
                classes=ragged([r.classes for r in recs], np.int32),
                is_crowd=ragged([r.is_crowd for r in recs], bool),
            )
        return self._tensors[split]

    def records(self, split, indices):
        t = self._split_tensors(split)

        def lookup(i):
            return dict(
                index=i,
                path=t["path"][i],
                image_id=t["image_id"][i],
                boxes=t["boxes"][i],
                classes=t["classes"][i],
                is_crowd=t["is_crowd"][i],
            )

        ds = tf.data.Dataset.from_tensor_slices(np.asarray(indices, np.int64))
        return ds.map(lookup)

    def decode(self, record, with_masks):
        image = decode_image(tf.io.read_file(record["path"]))
        ex = dict(
            image=image,
            boxes=record["boxes"],
            classes=record["classes"],
            is_crowd=record["is_crowd"],
            image_id=record["image_id"],
        )
        if with_masks:
            ex["masks"] = self._masks_tf(record, tf.shape(image)[0], tf.shape(image)[1])
        return ex

    def _masks_tf(self, record, height, width):
        raise NotImplementedError(f"{type(self).__name__} has no instance masks")

    def coco_ground_truth(self, split):
        images, anns = [], []
        for rec in self.split_records(split):
            images.append(coco_image_entry(rec.image_id, os.path.basename(rec.image_path), rec.height, rec.width))
            for j in range(len(rec.classes)):
                seg = rec.segmentations[j] if rec.segmentations is not None else None
                anns.append(
                    coco_annotation(
                        len(anns) + 1,
                        rec.image_id,
                        rec.boxes[j],
                        self.info.category_ids[int(rec.classes[j])],
                        rec.is_crowd[j],
                        segmentation=seg,
                        area=self._area(rec, j),
                    )
                )
        return {
            "images": images,
            "annotations": anns,
            "categories": self.info.categories(),
            "info": {"description": f"{self.info.name} {split}"},
        }

    def _area(self, rec, j):
        return None


def sanitize_box(box_yxyx, height, width, where, counter, log):
    """Clips a box to the image; returns None (counted and logged) when it is degenerate or
    not finite. ``where`` names the file and object for the log line."""
    b = np.asarray(box_yxyx, np.float64)
    if not np.all(np.isfinite(b)):
        counter["bad_boxes"] = counter.get("bad_boxes", 0) + 1
        log.warning("skipping non-finite box %s in %s", b.tolist(), where)
        return None
    clipped = np.array(
        [np.clip(b[0], 0, height), np.clip(b[1], 0, width), np.clip(b[2], 0, height), np.clip(b[3], 0, width)]
    )
    if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
        counter["degenerate_boxes"] = counter.get("degenerate_boxes", 0) + 1
        log.warning(
            "skipping degenerate box %s (ymin,xmin,ymax,xmax; after clipping to the %dx%d image) in %s",
            b.tolist(),
            height,
            width,
            where,
        )
        return None
    if not np.allclose(clipped, b):
        counter["clipped_boxes"] = counter.get("clipped_boxes", 0) + 1
    return clipped.astype(np.float32)
