"""Self-consistent fake examples for any TFDS image dataset, for tests and config dry runs
without the data (`python -m frozen_det.dry_run`).

`tfds.testing.mock_data`'s own random examples do not fit detection datasets (an object's
`bbox` and `label` sequences get different lengths, docs/dependencies.md); `mock_tfds()` is
mock_data with these instead: per split, `num_examples` images of 48-64 x 64 pixels with 0, 1
or 2 objects (boxes inside the image, a crowd / difficult flag on the second, instance masks
where the dataset has them), a class label, ids and file names, and `tfds_id` when the reader
asks for it. A split is the name before any slice (e.g. "train[2:5]" is "train"'s examples 2-4;
"train+validation" is one split of its own); "train" has one seed, every other split another.
"""

from __future__ import annotations

import contextlib
import re

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds


def fake_examples(builder, split: str, num_examples: int = 6) -> list[dict]:
    """`num_examples` examples of `split` with every feature of `builder` that image datasets
    have (image, label, objects, ids, file names, VOC / LVIS label lists)."""
    feats = builder.info.features
    rng = np.random.default_rng(0 if split == "train" else 1)
    out = []
    for i in range(num_examples):
        h, w = 48 + 8 * (i % 3), 64
        ex = {"image": rng.integers(0, 255, (h, w, 3), dtype=np.uint8)}
        labels = []
        for key in ("objects", "bobjects"):  # bobjects: Open Images' boxes
            if key in feats and "bbox" in _inner(feats[key]).keys():
                ex[key] = _objects(feats[key], rng, i % 3, h, w)  # 0, 1 or 2 objects
                labels = ex[key]["label"]
        for key in feats.keys():
            if key == "label":
                ex[key] = int(rng.integers(0, feats[key].num_classes))
            elif key == "image/id":
                ex[key] = 100 + i
            elif key == "image/filename":
                ex[key] = f"{2007}_{i:06d}.jpg"
            elif key == "file_name":
                ex[key] = f"{split}_{i:06d}.JPEG"
            elif key == "neg_category_ids":  # labels (category id - 1) verified absent
                ex[key] = [1000 + i, 1100]
            elif key == "not_exhaustive_category_ids":
                ex[key] = labels[:1]
            elif key in ("labels", "labels_no_difficult"):
                ex[key] = sorted(set(labels))
            elif key in ("objects", "objects_trainable") and key not in ex:  # Open Images' image-level labels
                ex[key] = _objects(feats[key], rng, 1, h, w)
        out.append(ex)
    return out


def _inner(feature):
    return feature.feature if hasattr(feature, "feature") else feature


def _objects(objects_feature, rng, n: int, h: int, w: int) -> dict:
    """`n` objects of a Sequence feature: boxes where it has them, labels, flags (the second
    object a crowd / difficult / group one)."""
    inner = _inner(objects_feature)
    ymin, xmin = rng.uniform(0, 0.4, n), rng.uniform(0, 0.4, n)
    objs = {"label": rng.integers(0, inner["label"].num_classes, n).tolist()}
    if "bbox" in inner.keys():
        objs["bbox"] = [tfds.features.BBox(a, b, a + 0.5, b + 0.5) for a, b in zip(ymin, xmin)]
    for key in inner.keys():
        if key in ("id", "area"):
            objs[key] = list(range(n))
        elif key in ("is_crowd", "is_difficult", "is_truncated", "is_group_of"):
            flag = [j == 1 and key != "is_truncated" for j in range(n)]
            objs[key] = flag if inner[key].dtype == tf.bool else [int(f) for f in flag]
        elif key in ("pose", "source", "confidence", "is_occluded", "is_depiction", "is_inside"):
            objs[key] = [0] * n
        elif key == "segmentation":
            segs = []
            for box in objs["bbox"]:
                m = np.zeros((h, w, 1), np.uint8)
                m[int(box.ymin * h) : int(box.ymax * h), int(box.xmin * w) : int(box.xmax * w)] = 1
                segs.append(m)
            objs[key] = segs
    return objs


def as_dataset_fn(num_examples: int = 6):
    """A `mock_data(as_dataset_fn=...)` reader of `fake_examples`."""

    def as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False, **kwargs):
        text = str(split)
        name, start, stop = _slice(text)
        examples = fake_examples(self, name, num_examples)[start:stop]
        feats = self.info.features
        ds = tf.data.Dataset.from_tensor_slices([feats.serialize_example(ex) for ex in examples])
        ds = ds.map(lambda s: feats.deserialize_example(s, decoders=decoders))
        if read_config is not None and read_config.add_tfds_id:
            first = start or 0
            ids = [f"{self.name}-{name}.tfrecord-00000-of-00001__{first + i}" for i in range(len(examples))]
            ds = tf.data.Dataset.zip(ds, tf.data.Dataset.from_tensor_slices(ids)).map(lambda ex, i: dict(ex, tfds_id=i))
        return ds

    return as_dataset


def _slice(split: str) -> tuple[str, int | None, int | None]:
    """ "train[2:5]" -> ("train", 2, 5); "train" -> ("train", None, None)."""
    match = re.fullmatch(r"(.*)\[(-?\d*):(-?\d*)\]", split)
    if not match:
        return split, None, None
    return (
        match.group(1),
        int(match.group(2)) if match.group(2) else None,
        int(match.group(3)) if match.group(3) else None,
    )


@contextlib.contextmanager
def mock_tfds(num_examples: int = 6):
    """tfds.testing.mock_data with `fake_examples` (module docstring)."""
    with tfds.testing.mock_data(as_dataset_fn=as_dataset_fn(num_examples), num_examples=num_examples):
        yield
