"""The images of PreDet's two-view data (`config.data.source`, frozen_det.data.two_view.config) as
sources of the shared engine (frozen_det.data.source): image folders and local COCO / VOC folders
(random access: every record known up front) and TFDS datasets with an "image" feature
(streamed, the images still encoded, so skipping to a saved position decodes nothing).

`decode(record)` gives the canonical two-view example:

  image         uint8 [H, W, 3]  decoded by Pillow (grey, palette and RGBA converted to RGB)
  index         int64 []         the record's position in the stored split
  image_id      int64 []         the dataset's id (detection folders, TFDS "image/id"), else the index
  proposal_key  string []        what the region-proposal cache keys the image by (the cache's
                                 int ids as decimal strings): the image id, the TFDS file name,
                                 "SPLIT/index" (other TFDS records) or the path relative to
                                 `data.path` (image folders)
  image_labels  float32 [K]      only with `data.labels`: multi-hot of the image's classes 1..K
                                 (its non-crowd objects' classes, or its one TFDS class)

The image is decoded in Python, by ``tf.numpy_function``: Pillow reads every file an image
folder may hold (.webp and 16-bit PNGs included), and the views are numpy / Pillow code anyway
(frozen_det.data.two_view.views). A file Pillow cannot read raises in ``decode``, which the
engine counts as a skipped example.
"""

from __future__ import annotations

import dataclasses
import io
import os

import numpy as np
import tensorflow as tf
from PIL import Image

from frozen_det.data.files import image_files
from frozen_det.data.source import DataError, Source, log


@dataclasses.dataclass(frozen=True)
class TwoViewInfo:
    """What the examples' labels are (the trainer checks the model against it)."""

    name: str
    num_labels: int  # 0: no labels
    class_names: tuple = ()


def read_image(encoded: bytes) -> np.ndarray:
    """Encoded image bytes -> uint8 [H, W, 3]; OSError / ValueError when Pillow cannot decode them."""
    with Image.open(io.BytesIO(encoded)) as im:
        return np.asarray(im.convert("RGB"))


class TwoViewSource(Source):
    """Base: ``decode`` turns a record into the canonical two-view example (module docstring). By
    default a record's image is the file at its ``path`` and its proposal key is its image id."""

    info: TwoViewInfo
    # The proposal keys are image ids, which the region-proposal cache stores as ints.
    proposal_keys_are_ids = True

    def _encoded(self, record) -> tf.Tensor:
        """The record's encoded image (TF): its file's bytes."""
        return tf.io.read_file(record["path"])

    def _proposal_key(self, record) -> tf.Tensor:
        return tf.strings.as_string(record["image_id"])

    def _classes(self, record) -> tf.Tensor:
        """The image's classes 1..K (TF), for its labels."""
        raise NotImplementedError

    def decode(self, record, with_masks=False):
        image = tf.numpy_function(read_image, [self._encoded(record)], tf.uint8, stateful=False)
        image.set_shape([None, None, 3])
        out = dict(
            image=image,
            index=record["index"],
            image_id=record["image_id"],
            proposal_key=self._proposal_key(record),
        )
        if self.info.num_labels:
            # Classes outside 1..K give zero rows of one_hot, so they set no label.
            hot = tf.one_hot(tf.cast(self._classes(record), tf.int32) - 1, self.info.num_labels)
            out["image_labels"] = tf.minimum(tf.reduce_sum(hot, axis=0), 1.0)
        return out


class ImageFolderSource(TwoViewSource):
    """Every image under ``root/<split>/`` (sub-folders included), or under ``root`` when that
    folder does not exist (every split then reads all images: no held-out set); no labels."""

    proposal_keys_are_ids = False

    def __init__(self, root: str):
        self.root = root
        self.info = TwoViewInfo(name=root, num_labels=0)
        self._paths = {}

    def split_paths(self, split: str) -> list[str]:
        """The image files of ``split`` (sorted paths; record i is the i-th)."""
        if split not in self._paths:
            folder = os.path.join(self.root, split)
            if not os.path.isdir(folder):
                log.warning("%s has no folder %r: every split reads all its images (no held-out set)", self.root, split)
                folder = self.root
            if not os.path.isdir(folder):
                raise DataError(f"config.data.path={self.root}: no folder {folder} of split {split!r}")
            paths = [os.path.join(folder, name) for name in image_files(folder, recursive=True)]
            if not paths:
                raise DataError(f"config.data.path={self.root}: no image files under {folder}")
            self._paths[split] = paths
        return self._paths[split]

    def num_records(self, split):
        return len(self.split_paths(split))

    def records(self, split, indices):
        paths = self.split_paths(split)
        path = tf.constant(paths)
        key = tf.constant([os.path.relpath(p, self.root) for p in paths])
        ds = tf.data.Dataset.from_tensor_slices(np.asarray(indices, np.int64))
        return ds.map(lambda i: {"index": i, "image_id": i, "path": path[i], "proposal_key": key[i]})

    def _proposal_key(self, record):
        return record["proposal_key"]

    def describe_record(self, split, index):
        return self.split_paths(split)[index]


class DetectionFolderSource(TwoViewSource):
    """The images of a local COCO / VOC detection folder (frozen_det.data.detection.sources, whose
    records this source reads), labelled by their non-crowd objects' classes."""

    def __init__(self, detection, labels: bool):
        self.detection = detection
        info = detection.info
        self.info = TwoViewInfo(info.name, info.num_classes if labels else 0, tuple(info.class_names))

    def num_records(self, split):
        return self.detection.num_records(split)

    def records(self, split, indices):
        return self.detection.records(split, indices)

    def _classes(self, record):
        return tf.boolean_mask(record["classes"], tf.logical_not(record["is_crowd"]))

    def describe_record(self, split, index):
        return self.detection.describe_record(split, index)

    def skipped_report(self, split=None):
        return self.detection.skipped_report(split)


class TfdsImagesSource(TwoViewSource):
    """A TFDS dataset with an "image" feature, streamed: classification sets ("label": the
    image's class) and detection sets ("objects"/"label": its objects' classes) alike."""

    random_access = False

    def __init__(self, builder, labels: bool):
        self.builder = builder
        feats = builder.info.features
        if "image" not in feats:
            raise DataError(f"config.data.name={builder.name}: the TFDS dataset has no 'image' feature")
        if "objects" in feats and "label" in feats["objects"]:
            self._label_of, names = (lambda ex: ex["objects"]["label"]), feats["objects"]["label"].names
        elif "label" in feats:
            self._label_of, names = (lambda ex: ex["label"]), feats["label"].names
        else:
            self._label_of, names = None, []
        if labels and self._label_of is None:
            raise DataError(f"config.data.labels=True: the TFDS dataset {builder.name} has no 'label' feature")
        self._id_key = next((k for k in ("image/id", "image/filename", "file_name") if k in feats), None)
        self.proposal_keys_are_ids = self._id_key == "image/id"
        self.info = TwoViewInfo(builder.name, len(names) if labels else 0, tuple(names))
        self._counts = {}

    def num_records(self, split):
        from frozen_det.data.tfds import split_size

        if split not in self._counts:
            self._counts[split] = split_size(self.builder, split)
        return self._counts[split]

    def stream(self, split, shard, seed, buffer, repeats=None):
        from frozen_det.data.tfds import read_split

        index, count = shard
        # Files are shuffled only when every process reads its own copy of the split (one
        # process; several must shard one order) and the records carry their own id (otherwise
        # the read position is the id and the proposal key, so it must be the stored one).
        shuffle_files = seed is not None and count == 1 and self._id_key is not None
        ds = read_split(self.builder, split, seed if shuffle_files else None).enumerate()
        if repeats is not None:
            times = tf.constant(np.asarray(repeats, np.int64))
            ds = ds.filter(lambda i, ex: tf.logical_and(i % count == index, times[i] > 0))
            ds = ds.flat_map(lambda i, ex: tf.data.Dataset.from_tensors((i, ex)).repeat(times[i]))
        elif count > 1:
            ds = ds.shard(count, index)
        if seed is not None:
            ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=False)
        return ds.map(lambda i, ex: self._record(split, i, ex))

    def _record(self, split, i, ex):
        record = {"index": i, "image": ex["image"], "image_id": i}
        if self._id_key == "image/id":
            record["image_id"] = tf.cast(ex["image/id"], tf.int64)
            record["proposal_key"] = tf.strings.as_string(record["image_id"])
        elif self._id_key is not None:
            record["proposal_key"] = ex[self._id_key]
        else:
            record["proposal_key"] = tf.strings.join([split, tf.strings.as_string(i)], "/")
        if self.info.num_labels:
            record["classes"] = tf.reshape(tf.cast(self._label_of(ex), tf.int64), [-1]) + 1
        return record

    def _encoded(self, record):
        return record["image"]

    def _proposal_key(self, record):
        return record["proposal_key"]

    def _classes(self, record):
        return record["classes"]

    def describe_record(self, split, index):
        return f"record {index} of tfds {self.builder.name} {split!r}"


def build_source(cfg) -> TwoViewSource:
    """The source of a complete two-view data section (every split)."""
    if cfg.source == "image_folder":
        return ImageFolderSource(cfg.path)
    if cfg.source == "tfds":
        from frozen_det.data.tfds import tfds_builder

        return TfdsImagesSource(tfds_builder(cfg.name, cfg.path), cfg.labels)
    from frozen_det.data.detection import config as detection_config
    from frozen_det.data.detection.sources import build_source as build_detection_source

    fields = dict(
        source=cfg.source,
        path=cfg.path,
        train_split=cfg.train_split,
        eval_split=cfg.eval_split,
        coco_files=cfg.coco_files.to_dict(),
        class_names=tuple(cfg.class_names),
        voc_difficult=cfg.voc_difficult,
    )
    return DetectionFolderSource(build_detection_source(detection_config.complete(fields)), cfg.labels)
