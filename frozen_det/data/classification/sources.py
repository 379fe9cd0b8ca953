"""Image classification sources (`config.data.source` of classification runs).

A source hands the shared pipeline (frozen_det.data.pipeline) cheap *records* and a
`decode(record)` TF function that returns the canonical classification example:

  image     uint8 [H, W, 3]
  label     int32 []        0..num_classes-1
  image_id  int64 []

`info.class_names` lists the classes in label order (no background entry). Random-access
sources (Fashion-MNIST, image folders, detection crops) know every record up front; the TFDS
source streams.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os

import numpy as np
import tensorflow as tf

from frozen_det.data.files import is_image_file
from frozen_det.data.offline import fashion_mnist
from frozen_det.data.source import DataError, Source, class_names_hint, count, decode_image, log


@dataclasses.dataclass
class ClassInfo:
    """Class metadata of a classification source."""

    name: str
    class_names: list

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


class ClassificationSource(Source):
    """Random-access base: per split, arrays of labels plus what `_lookup` turns into a record."""

    random_access = True

    def __init__(self):
        self._labels = {}
        self._skipped = {}

    def labels(self, split: str) -> np.ndarray:
        """int32 [N]: the label of every record of `split`."""
        if split not in self._labels:
            self._labels[split] = np.asarray(self._split_labels(split), np.int32)
        return self._labels[split]

    def _split_labels(self, split: str) -> np.ndarray:
        raise NotImplementedError

    def num_records(self, split):
        return len(self.labels(split))

    def _record_class_counts(self, split):
        # One "instance" per image, class ids 1..C as in the detection sources' statistics.
        return [{int(label) + 1: 1} for label in self.labels(split)]

    def records(self, split, indices):
        table = self._tables(split)
        ds = tf.data.Dataset.from_tensor_slices(np.asarray(indices, np.int64))
        return ds.map(lambda i: {"index": i, "image_id": i, **{k: v[i] for k, v in table.items()}})

    def _tables(self, split) -> dict:
        """{field: tensor [N, ...]} of what a record of `split` holds besides its index."""
        raise NotImplementedError


class FashionMnistSource(ClassificationSource):
    """Fashion-MNIST (Xiao et al. 2017): 60k train / 10k test 28x28 grey images of 10 clothing
    classes, read from its idx files (frozen_det.data.offline.fashion_mnist)."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path
        self.info = ClassInfo("fashion_mnist", list(fashion_mnist.CLASSES))
        self._images = {}

    def images(self, split: str) -> np.ndarray:
        """uint8 [N, 28, 28]."""
        if split not in self._images:
            self._images[split] = fashion_mnist.read(self.path, split, "images")
        return self._images[split]

    def _split_labels(self, split):
        return fashion_mnist.read(self.path, split, "labels")

    def _tables(self, split):
        return {"pixels": tf.constant(self.images(split)), "label": tf.constant(self.labels(split))}

    def decode(self, record, with_masks=False):
        image = tf.image.grayscale_to_rgb(record["pixels"][..., None])
        return {"image": image, "label": record["label"], "image_id": record["image_id"]}

    def describe_record(self, split, index):
        return f"Fashion-MNIST {split} image {index}"


class ImageFileSource(ClassificationSource):
    """Base of the sources whose records are image files: `_index(split)` fills `self._paths[split]`
    (file paths) and `self._labels[split]`; decoding reads the file."""

    def __init__(self):
        super().__init__()
        self._paths = {}

    def _index(self, split):
        raise NotImplementedError

    def _split_labels(self, split):
        return self.labels(split)

    def labels(self, split):
        self._index(split)
        return self._labels[split]

    def _tables(self, split):
        self._index(split)
        return {"path": tf.constant(self._paths[split]), "label": tf.constant(self._labels[split])}

    def decode(self, record, with_masks=False):
        return {
            "image": decode_image(tf.io.read_file(record["path"])),
            "label": record["label"],
            "image_id": record["image_id"],
        }

    def describe_record(self, split, index):
        self._index(split)
        return self._paths[split][index]


class ImageFolderSource(ImageFileSource):
    """`root/<split>/<class name>/<image file>`: one sub-folder per class (torchvision's
    ImageFolder layout). Files that are not images are counted and skipped."""

    def __init__(self, root: str, class_names=()):
        super().__init__()
        self.root = os.path.abspath(os.path.expanduser(root))
        if not os.path.isdir(self.root):
            raise DataError(f"image folder {self.root} does not exist (data.path); expected <path>/<split>/<class>/*")
        self._class_names = list(class_names)
        self.info = ClassInfo(f"image_folder:{os.path.basename(self.root)}", self._class_names)

    def _index(self, split):
        if split in self._paths:
            return
        folder = os.path.join(self.root, split)
        if not os.path.isdir(folder):
            splits = sorted(d for d in os.listdir(self.root) if os.path.isdir(os.path.join(self.root, d)))
            raise DataError(f"image folder {self.root}: no split {split!r}; found {splits}")
        found = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))
        if not self._class_names:  # the first split indexed fixes the classes
            self._class_names.extend(found)
        index = {name: i for i, name in enumerate(self._class_names)}
        paths, labels = [], []
        for name in found:
            if name not in index:
                count(self._skipped, "unknown_class_folders")
                log.warning("skipping %s: not one of the classes %s", os.path.join(folder, name), self._class_names)
                continue
            for file in sorted(os.listdir(os.path.join(folder, name))):
                if is_image_file(file):
                    paths.append(os.path.join(folder, name, file))
                    labels.append(index[name])
                else:
                    count(self._skipped, "not_image_files")
        if not paths:
            matched = set(found) & set(index)
            raise DataError(
                f"image folder {folder}: no images in the class sub-folders {sorted(matched) or found}"
                + ("" if matched else f" (data.class_names={tuple(self._class_names)!r} match none of them)")
                + ("" if matched else class_names_hint(self._class_names, found))
            )
        self._paths[split] = paths
        self._labels[split] = np.asarray(labels, np.int32)


class CocoImageLabelsSource(ImageFileSource):
    """A COCO-format folder whose `images` carry an image-level `label` (a category id), read as
    a classification set: `path/annotations/instances_<split>.json` and `path/<split>/` (the
    ImageNet-like canvases of frozen_det.data.offline.canvases, or pseudo-box files). The k-th category
    by id is class k; the boxes are ignored. Images without a label are counted and skipped."""

    def __init__(self, path: str):
        super().__init__()
        from frozen_det.data.detection.sources.coco_folder import default_files

        self.root = os.path.abspath(os.path.expanduser(path))
        self._files = default_files
        self._info = None

    @property
    def info(self) -> ClassInfo:
        """The classes (categories by id) of the first split's file."""
        if self._info is None:
            folder = os.path.join(self.root, "annotations")
            found = sorted(f for f in os.listdir(folder) if f.startswith("instances_")) if os.path.isdir(folder) else []
            if not found:
                raise DataError(f"COCO labels: no annotations/instances_<split>.json in data.path={self.root}")
            self._index(found[0][len("instances_") : -len(".json")])
        return self._info

    def _index(self, split):
        if split in self._paths:
            return
        annotations, images = (os.path.join(self.root, p) for p in self._files(split))
        if not os.path.isfile(annotations):
            raise DataError(f"COCO labels: {annotations} is missing (data.path={self.root}, split {split!r})")
        with open(annotations) as f:
            data = json.load(f)
        categories = sorted(data.get("categories", []), key=lambda c: c["id"])
        names = [c["name"] for c in categories]
        if self._info is None:
            self._info = ClassInfo(f"coco_labels:{os.path.basename(self.root)}", names)
        elif self._info.class_names != names:
            raise DataError(f"COCO labels: {annotations} has other categories than the split read first")
        index = {c["id"]: i for i, c in enumerate(categories)}
        paths, labels = [], []
        for image in data.get("images", []):
            if image.get("label") not in index:
                count(self._skipped, "images_without_label")
                continue
            paths.append(os.path.join(images, image["file_name"]))
            labels.append(index[image["label"]])
        if not paths:
            raise DataError(f"COCO labels: no image of {annotations} has a 'label' that is a category id")
        self._paths[split] = paths
        self._labels[split] = np.asarray(labels, np.int32)


class DetectionCropsSource(ClassificationSource):
    """The objects of a random-access detection source (VOC / COCO folder) as classification
    examples: each non-crowd box, widened by `context` of its size on every side and clipped to
    the image, labelled with its class (detection class id - 1). Boxes with a side under
    `min_size` pixels are counted and skipped."""

    def __init__(self, detection_source, context: float = 0.1, min_size: float = 4.0):
        super().__init__()
        if not detection_source.random_access:
            raise DataError(
                "data.source='detection_crops' needs a random-access detection source (a VOC or COCO "
                f"folder), not {detection_source.info.name!r}"
            )
        self.detection = detection_source
        self.context, self.min_size = float(context), float(min_size)
        self.info = ClassInfo(f"crops:{detection_source.info.name}", list(detection_source.info.class_names[1:]))
        self._crops = {}

    def _index(self, split):
        if split in self._crops:
            return self._crops[split]
        paths, boxes, labels, ids = [], [], [], []
        per_image = collections.Counter()
        for rec in self.detection.split_records(split):
            for box, cls, crowd in zip(rec.boxes, rec.classes, rec.is_crowd):
                h, w = box[2] - box[0], box[3] - box[1]
                if crowd:
                    continue
                if min(h, w) < self.min_size:
                    count(self._skipped, "small_boxes")
                    continue
                m = self.context
                paths.append(rec.image_path)
                boxes.append(
                    [
                        max(0.0, box[0] - m * h),
                        max(0.0, box[1] - m * w),
                        min(rec.height, box[2] + m * h),
                        min(rec.width, box[3] + m * w),
                    ]
                )
                labels.append(int(cls) - 1)
                ids.append(rec.image_id * 1000 + per_image[rec.image_id])  # image id, object number
                per_image[rec.image_id] += 1
        if not paths:
            raise DataError(f"{self.info.name} split {split!r}: no objects to crop")
        self._crops[split] = dict(
            path=np.asarray(paths),
            box=np.asarray(boxes, np.float32),
            label=np.asarray(labels, np.int32),
            crop_id=np.asarray(ids, np.int64),
        )
        log.info(
            "%s split %s: %d crops (%s)",
            self.info.name,
            split,
            len(paths),
            dict(collections.Counter(self.info.class_names[i] for i in labels)),
        )
        return self._crops[split]

    def _split_labels(self, split):
        return self._index(split)["label"]

    def _tables(self, split):
        crops = self._index(split)
        return {
            "path": tf.constant(crops["path"]),
            "box": tf.constant(crops["box"]),
            "label": tf.constant(crops["label"]),
            "crop_id": tf.constant(crops["crop_id"]),
        }

    def decode(self, record, with_masks=False):
        image = decode_image(tf.io.read_file(record["path"]))
        box = tf.cast(tf.round(record["box"]), tf.int32)
        y0, x0 = box[0], box[1]
        h, w = tf.maximum(box[2] - y0, 1), tf.maximum(box[3] - x0, 1)
        crop = tf.image.crop_to_bounding_box(image, y0, x0, h, w)
        return {"image": crop, "label": record["label"], "image_id": record["crop_id"]}

    def describe_record(self, split, index):
        crops = self._index(split)
        return f"crop {index} ({crops['box'][index].tolist()}) of {crops['path'][index]}"


class TfdsClassificationSource(Source):
    """A TFDS image classification dataset (features "image" and "label"), streamed; images stay
    encoded until decoded, so resuming skips records without decoding them."""

    random_access = False

    def __init__(self, builder):
        self.builder = builder
        feats = builder.info.features
        if "image" not in feats or "label" not in feats:
            raise DataError(f"tfds {builder.name}: a classification dataset needs 'image' and 'label' features")
        self.info = ClassInfo(builder.name, list(feats["label"].names))
        self._counts = {}

    def _as_dataset(self, split, seed=None):
        from frozen_det.data.tfds import read_split

        return read_split(self.builder, split, seed)

    def stream(self, split, shard, seed, buffer, repeats=None):
        index, count_ = shard
        ds = self._as_dataset(split, seed if count_ == 1 else None).enumerate()
        if repeats is not None:
            times = tf.constant(np.asarray(repeats, np.int64))
            ds = ds.filter(lambda i, ex: tf.logical_and(i % count_ == index, times[i] > 0))
            ds = ds.flat_map(lambda i, ex: tf.data.Dataset.from_tensors((i, ex)).repeat(times[i]))
        elif count_ > 1:
            ds = ds.shard(count_, index)
        if seed is not None:
            ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=False)
        return ds.map(lambda i, ex: {"image": ex["image"], "label": tf.cast(ex["label"], tf.int32), "image_id": i})

    def decode(self, record, with_masks=False):
        return {"image": decode_image(record["image"]), "label": record["label"], "image_id": record["image_id"]}

    def num_records(self, split):
        from frozen_det.data.tfds import split_size

        if split not in self._counts:
            self._counts[split] = split_size(self.builder, split)
        return self._counts[split]

    def labels(self, split: str) -> np.ndarray:
        """int32 [N]: every record's label, in stored order (one pass, images not decoded; cached)."""
        cache = self.__dict__.setdefault("_labels", {})
        if split not in cache:
            cache[split] = np.fromiter(
                self._as_dataset(split).map(lambda ex: ex["label"]).as_numpy_iterator(), np.int32
            )
        return cache[split]

    def _record_class_counts(self, split):
        return [{int(label) + 1: 1} for label in self.labels(split)]

    def describe_record(self, split, index):
        return f"record {index} of tfds {self.builder.name} {split!r}"


def build_source(cfg) -> Source:
    """The source of a complete classification `config.data`."""
    if cfg.source == "fashion_mnist":
        return FashionMnistSource(cfg.path or fashion_mnist.DEBIAN_DIR)
    if cfg.source == "image_folder":
        return ImageFolderSource(cfg.path, cfg.class_names)
    if cfg.source == "coco_labels":
        return CocoImageLabelsSource(cfg.path)
    if cfg.source == "detection_crops":
        from frozen_det.data.detection import config as detection_config
        from frozen_det.data.detection.sources import build_source as build_detection_source

        return DetectionCropsSource(
            build_detection_source(detection_config.resolve(cfg.detection)), cfg.crop_context, cfg.min_crop_size
        )
    if cfg.source == "tfds":
        from frozen_det.data.tfds import tfds_builder

        return TfdsClassificationSource(tfds_builder(cfg.name, cfg.path))
    raise DataError(f"config.data.source={cfg.source!r} unknown")
