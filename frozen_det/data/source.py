"""What every data source of the engine (frozen_det.data.pipeline) provides: raw records,
decoding, and the errors and counters shared by all kinds.

A source hands the pipeline *records* (cheap: encoded image bytes or a file path plus the
annotations) so that skipping to a saved position never decodes an image, and a
``decode(record)`` TF function that turns one record into its kind's canonical example
(detection: frozen_det.data.detection.sources; classification:
frozen_det.data.classification.sources). A detection example, for instance:

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

import logging
from typing import Optional

import numpy as np
import tensorflow as tf

log = logging.getLogger("frozen_det.data")


class DataError(ValueError):
    """A problem with the data or its location that the user must fix (message says how)."""


class Source:
    """Base class. Subclasses set ``info`` and implement the record and decode methods."""

    info: object  # the kind's class metadata (detection: DatasetInfo)
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

    def skipped_report(self, split: str | None = None) -> dict:
        """Counts of rows the source dropped while indexing `split` (None: every split read), by
        reason. Sources that count per split override this; the others count over all splits."""
        return dict(getattr(self, "_skipped", {}))


# A truncated JPEG (a copy cut short) whose first rows decode is still an image with its ground
# truth: tf.io.decode_image refuses it, Pillow decodes it. libjpeg's recovery fills the missing
# rows with grey and logs "Premature end of JPEG data" on stderr; below this fraction of rows the
# image fails, and the pipeline skips it and counts it.
RECOVERABLE_JPEG_FRACTION = 0.5


def decode_image(encoded: tf.Tensor) -> tf.Tensor:
    """Any of JPEG/PNG/GIF/BMP to uint8 [H, W, 3] (grey and RGBA converted; 16-bit PNGs scaled to
    8 bits; truncated JPEGs recovered, `RECOVERABLE_JPEG_FRACTION`)."""
    image = tf.cond(
        tf.io.is_jpeg(encoded),
        lambda: tf.io.decode_jpeg(
            encoded, channels=3, try_recover_truncated=True, acceptable_fraction=RECOVERABLE_JPEG_FRACTION
        ),
        lambda: tf.io.decode_image(encoded, channels=3, expand_animations=False),
    )
    image.set_shape([None, None, 3])
    return image


def count(counter: dict, key: str, n: int = 1) -> None:
    counter[key] = counter.get(key, 0) + n


def class_names_hint(given, found) -> str:
    """The fix of `data.class_names` that match none of the dataset's names `found` but for
    case ("Circle" for "circle"), as the end of an error message; "" if there is none."""
    by_lower = {name.lower(): name for name in sorted(found)}
    fixed = [by_lower.get(name.lower()) for name in given]
    return f"; class names are case-sensitive: data.class_names={tuple(fixed)!r}?" if all(fixed) else ""
