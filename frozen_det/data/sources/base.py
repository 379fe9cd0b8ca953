"""What every data source provides: class metadata, raw records, decoding, COCO ground truth.

A source hands the pipeline *records* (cheap: encoded image bytes or a file path plus the
annotations) so that skipping to a saved position never decodes an image, and a
``decode(record)`` TF function that turns one record into the canonical example:

  image     uint8 [H, W, 3]
  boxes     float32 [n, 4]  [ymin, xmin, ymax, xmax], absolute pixels of the original image
                            (continuous coordinates: a box covering pixel columns 3..5 is
                            xmin=3, xmax=6)
  classes   int32 [n]       contiguous ids 1..num_classes
  is_crowd  bool [n]
  masks     uint8 [n, H, W] 0/1 (only when the source has masks and they were requested)
  image_id  int64 []

Two kinds of sources exist (:attr:`Source.random_access`):

* random-access sources (local folders) know every record up front; the pipeline shuffles
  indices with a seeded permutation per epoch and resumes by slicing the index list;
* streaming sources (TFDS builders) are read in order, shuffled through a seeded
  buffer per epoch, and resume with ``Dataset.skip`` on the still-encoded records.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Optional

import numpy as np
import tensorflow as tf

log = logging.getLogger("frozen_det.data")


class DataError(ValueError):
    """A problem with the data or its location that the user must fix (message says how)."""


@dataclasses.dataclass
class DatasetInfo:
    """Class metadata of a source.

    ``class_names[i]`` is the name of contiguous class id ``i`` (``class_names[0]`` is
    "background"); ``category_ids[i]`` is the dataset's own category id for class ``i``
    (e.g. COCO's 1..90 with gaps), used when writing detections for COCO/LVIS evaluation.
    """

    name: str
    class_names: list
    category_ids: list
    has_masks: bool
    frequencies: Optional[list] = None  # LVIS "r"/"c"/"f" per class id (index 0 unused)

    @property
    def num_classes(self) -> int:
        """Number of object classes, background excluded (model: num_classes + 1 logits)."""
        return len(self.class_names) - 1

    def categories(self) -> list:
        """The COCO-format `categories` list."""
        cats = []
        for i in range(1, len(self.class_names)):
            cat = {"id": int(self.category_ids[i]), "name": self.class_names[i], "supercategory": ""}
            if self.frequencies:
                cat["frequency"] = self.frequencies[i]
            cats.append(cat)
        return cats


class Source:
    """Base class. Subclasses set ``info`` and implement the record and decode methods."""

    info: DatasetInfo
    random_access: bool = True

    # --- random-access sources -------------------------------------------------------
    def num_records(self, split: str) -> int:
        raise NotImplementedError

    def record_class_counts(self, split: str) -> list:
        """Per record, ``{class id: number of non-crowd instances}`` (one pass over the split's
        annotations, images not decoded; cached). Drives k-shot subsampling, repeat-factor
        sampling, class-balanced losses and the LVIS frequency groups."""
        cache = self.__dict__.setdefault("_class_count_cache", {})
        if split not in cache:
            cache[split] = self._record_class_counts(split)
        return cache[split]

    def _record_class_counts(self, split: str) -> list:
        raise NotImplementedError

    def record_classes(self, split: str) -> list:
        """Per record, the set of (non-crowd) class ids."""
        return [set(counts) for counts in self.record_class_counts(split)]

    def records(self, split: str, indices: np.ndarray) -> tf.data.Dataset:
        """Records of ``split`` at ``indices`` (in that order)."""
        raise NotImplementedError

    # --- streaming sources -----------------------------------------------------------
    def stream(
        self, split: str, shard: tuple, seed: Optional[int], buffer: int, repeats: Optional[np.ndarray] = None
    ) -> tf.data.Dataset:
        """Records of this process's shard ``(index, count)``; shuffled when ``seed`` is set.
        ``repeats``: if given, record i of the whole split is read ``repeats[i]`` times (0:
        skipped; k-shot selection and repeat-factor sampling), and records are sharded by
        index (i % count == index)."""
        raise NotImplementedError

    # --- both --------------------------------------------------------------------------
    def decode(self, record: dict, with_masks: bool) -> dict:
        """TF function: record -> canonical example (module docstring)."""
        raise NotImplementedError

    def coco_ground_truth(self, split: str) -> dict:
        """COCO-format ground truth of ``split`` in original pixels, for pycocotools."""
        raise NotImplementedError

    def describe_record(self, split: str, index: int) -> str:
        """Human-readable name of a record, for log lines."""
        return f"record {index}"

    def skipped_report(self) -> dict:
        """Counts of rows the source dropped while indexing, by reason."""
        return dict(getattr(self, "_skipped", {}))


def decode_image(encoded: tf.Tensor) -> tf.Tensor:
    """Any of JPEG/PNG/GIF/BMP to uint8 [H, W, 3] (grey and RGBA converted)."""
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def count(counter: dict, key: str, n: int = 1) -> None:
    counter[key] = counter.get(key, 0) + n


def coco_image_entry(image_id, file_name, height, width) -> dict:
    return {"id": int(image_id), "file_name": str(file_name), "height": int(height), "width": int(width)}


def coco_annotation(ann_id, image_id, box_yxyx, category_id, iscrowd, segmentation=None, area=None) -> dict:
    y0, x0, y1, x1 = [float(v) for v in box_yxyx]
    ann = {
        "id": int(ann_id),
        "image_id": int(image_id),
        "category_id": int(category_id),
        "bbox": [x0, y0, x1 - x0, y1 - y0],
        "iscrowd": int(bool(iscrowd)),
        "area": float(area if area is not None else (x1 - x0) * (y1 - y0)),
    }
    if segmentation is not None:
        ann["segmentation"] = segmentation
    return ann
