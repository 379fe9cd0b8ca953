"""The images an offline localisation step (pseudo-boxes) reads: a folder of image files, or a
split of a TFDS image classification dataset (e.g. imagenet2012, read without a copy of its
images), each listed once in a fixed order so that the hosts of a sharded run can take
contiguous parts of it (frozen_det.data.process_shards).

An entry is {"id", "file_name", "label"} plus the decoded "image" (uint8 [H, W, 3]) or, for an
image that cannot be decoded, the "error". `file_name` is the path under the folder, or the
record's `tfds_id` (which the TFDS pseudo-box detection source looks images up by:
frozen_det.data.detection.sources.tfds_pseudo_boxes); `id` is the 1-based position in the
listing; `label` is the class index to box, or None for the classifier's top-1 class.
"""

from __future__ import annotations

import io
import json
import os
from typing import Iterator

import numpy as np
from PIL import Image

from frozen_det.data.files import IMAGE_EXTENSIONS, image_files, read_rgb


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
    """[{"id", "file_name", "label" (None: the classifier's top-1)}] of a folder's images to box:
    `labels` is a COCO-format labels file, "folders" (each image's first folder names its
    class) or None."""
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


class FolderImages:
    """The image files under a folder (recursively, sorted), with their classes from `labels`
    (see `list_images`)."""

    def __init__(self, images_dir: str, labels: str | None, class_names):
        self.images_dir = images_dir
        self.listing = list_images(images_dir, labels, class_names)
        self.description = {"images": os.path.abspath(images_dir), "labels": labels}

    def __len__(self) -> int:
        return len(self.listing)

    def entries(self, positions: range) -> Iterator[dict]:
        for entry in (self.listing[p] for p in positions):
            try:
                yield dict(entry, image=np.asarray(read_rgb(os.path.join(self.images_dir, entry["file_name"]))))
            except (OSError, ValueError) as e:
                yield dict(entry, error=str(e))


class TfdsImages:
    """The images of one split of a prepared TFDS dataset with an "image" feature, in stored
    order. `labels`: "dataset" boxes each image's own "label" (which must index the
    classifier's classes), None its top-1 class. A split of unknown size (mocked data) is read
    whole and filtered; a known one is read in the part a process asks for only."""

    def __init__(self, name: str, split: str, data_dir: str = "", labels: str | None = None, num_classes: int = 0):
        from frozen_det.data.tfds import split_size, tfds_builder

        self.builder = tfds_builder(name, data_dir)
        self.split = split
        features = self.builder.info.features
        if "image" not in features:
            raise ValueError(f"--tfds {name}: the dataset has no 'image' feature (features: {list(features)})")
        if labels not in (None, "dataset"):
            raise ValueError(f"--labels {labels!r} with --tfds: 'dataset' (the split's own labels) or none (top-1)")
        if labels == "dataset":
            found = getattr(features.get("label"), "num_classes", None) if "label" in features else None
            if found != num_classes:
                raise ValueError(
                    f"--labels dataset: tfds {name} has {found or 'no'} 'label' classes, the classifier "
                    f"{num_classes}; box its top-1 class (no --labels) or use a classifier of this dataset"
                )
        self.labels = labels
        self._size = split_size(self.builder, split)
        self._size_known = split in self.builder.info.splits and self.builder.info.splits[split].num_examples > 0
        self.description = {"tfds": name, "split": split, "labels": labels}

    def __len__(self) -> int:
        return self._size

    def _records(self, positions: range):
        import tensorflow as tf

        from frozen_det.data.tfds import read_split

        start, stop = positions.start, positions.stop
        known = self._size_known
        split = f"{self.split}[{start}:{stop}]" if known else self.split
        ds = read_split(self.builder, split, with_tfds_id=True).enumerate(start if known else 0)
        if not known:
            ds = ds.filter(lambda i, ex: tf.logical_and(i >= start, i < stop))
        return ds.as_numpy_iterator()

    def entries(self, positions: range) -> Iterator[dict]:
        for index, ex in self._records(positions):
            entry = {
                "id": int(index) + 1,
                "file_name": ex["tfds_id"].decode(),
                "label": int(ex["label"]) if self.labels == "dataset" else None,
            }
            try:
                with Image.open(io.BytesIO(ex["image"])) as image:
                    yield dict(entry, image=np.asarray(image.convert("RGB")))
            except (OSError, ValueError) as e:
                yield dict(entry, error=str(e))


def image_source(class_names, images: str = "", tfds: str = "", data_dir: str = "", labels: str | None = None):
    """FolderImages of `images`, or TfdsImages of `tfds` ("NAME:SPLIT", e.g. imagenet2012:train)."""
    if bool(images) == bool(tfds):
        raise ValueError("name the images to box: --images DIR or --tfds NAME:SPLIT (one of them)")
    if images:
        return FolderImages(images, labels, class_names)
    name, _, split = tfds.partition(":")
    if not split:
        raise ValueError(f"--tfds {tfds!r}: NAME:SPLIT, e.g. imagenet2012:train")
    return TfdsImages(name, split, data_dir, labels, len(class_names))
