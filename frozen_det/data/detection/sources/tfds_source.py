"""TFDS builders as streaming sources: coco/2017 (boxes), lvis (boxes + masks), voc/2007 and
voc/2012 (boxes), open_images_v4 (boxes), and our synthetic_shapes (boxes + masks).

Open Images V4 (the detection pre-training set of Li et al. 2019 beside COCO): the boxes are
the `bobjects` (TFDS's 601 boxable classes, named by the dataset's MIDs, e.g.
"/m/011k07"); a box marked `is_group_of` (one box around several instances) is a crowd box, as
COCO evaluation can express it (ignored, not a miss; the Open Images metric instead counts one
detection inside it as a hit); image ids are a 62-bit fingerprint of the file name (a 16-hex-digit
image id, which does not fit a signed 64-bit integer).

Records keep the image (and masks) encoded (``tfds.decode.SkipDecoding``) so that resuming
skips records without decoding them. TFDS boxes are normalised [ymin, xmin, ymax, xmax];
they become pixels once the image is decoded.
"""

from __future__ import annotations

import collections

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from frozen_det.data.detection.sources.base import DatasetInfo, coco_annotation, coco_image_entry
from frozen_det.data.source import DataError, Source, decode_image, log
from frozen_det.data.tfds import read_split, split_size

# COCO's 80 category ids (1..90 with gaps), in TFDS label order.
COCO_CATEGORY_IDS = [
    1,
    2,
    3,
    4,
    5,
    6,
    7,
    8,
    9,
    10,
    11,
    13,
    14,
    15,
    16,
    17,
    18,
    19,
    20,
    21,
    22,
    23,
    24,
    25,
    27,
    28,
    31,
    32,
    33,
    34,
    35,
    36,
    37,
    38,
    39,
    40,
    41,
    42,
    43,
    44,
    46,
    47,
    48,
    49,
    50,
    51,
    52,
    53,
    54,
    55,
    56,
    57,
    58,
    59,
    60,
    61,
    62,
    63,
    64,
    65,
    67,
    70,
    72,
    73,
    74,
    75,
    76,
    77,
    78,
    79,
    80,
    81,
    82,
    84,
    85,
    86,
    87,
    88,
    89,
    90,
]


class TfdsSource(Source):
    random_access = False

    def __init__(self, builder: tfds.core.DatasetBuilder, voc_difficult: str = "crowd", frequency_split: str = "train"):
        self.builder = builder
        self.name = builder.info.full_name if hasattr(builder.info, "full_name") else builder.name
        self.kind = self._kind(builder.name)
        feats = builder.info.features
        self.objects_key = "bobjects" if self.kind == "open_images" else "objects"
        names = list(feats[self.objects_key]["label"].names)
        if self.kind == "coco":
            if len(names) != len(COCO_CATEGORY_IDS):
                raise DataError(f"{builder.name}: expected 80 COCO classes, got {len(names)}")
            cat_ids = [0] + COCO_CATEGORY_IDS
        else:  # lvis label = category_id - 1; voc / synthetic have no other ids
            cat_ids = list(range(len(names) + 1))
        self.has_masks = self.kind in ("lvis", "synthetic")
        self.info = DatasetInfo(
            name=builder.name, class_names=["background"] + names, category_ids=cat_ids, has_masks=self.has_masks
        )
        self.voc_difficult = voc_difficult
        self.frequency_split = frequency_split  # LVIS: r/c/f groups from this split's image counts
        self._counts = {}

    @staticmethod
    def _kind(name):
        for k in ("coco", "lvis", "voc", "open_images", "synthetic"):
            if name.startswith(k):
                return k
        raise DataError(
            f"tfds dataset {name!r} is not supported: use coco/2017, lvis, voc/2007, voc/2012, open_images_v4 "
            "(or the synthetic source)"
        )

    def _decoders(self):
        dec = {"image": tfds.decode.SkipDecoding()}
        if self.kind == "lvis":
            dec["objects"] = {"segmentation": tfds.decode.SkipDecoding()}
        if self.kind == "synthetic":
            dec["instance_map"] = tfds.decode.SkipDecoding()
        return dec

    def _split_known(self, split):
        try:
            return self.builder.info.splits[split].num_examples > 0
        except Exception:  # unknown split or mocked info
            return False

    def _as_dataset(self, split, seed=None):
        return read_split(self.builder, split, seed, self._decoders())

    def stream(self, split, shard, seed, buffer, repeats=None):
        index, count = shard
        if repeats is not None:
            times = tf.constant(np.asarray(repeats, np.int64))
            ds = self._as_dataset(split).enumerate()
            ds = ds.filter(lambda i, r: tf.logical_and(i % count == index, times[i] > 0))
            ds = ds.flat_map(lambda i, r: tf.data.Dataset.from_tensors(r).repeat(times[i]))
        elif count > 1 and self._split_known(split):
            ds = self._as_dataset(tfds.even_splits(split, count)[index], seed)
        else:
            ds = self._as_dataset(split, seed if count == 1 else None)
            if count > 1:  # split size unknown (e.g. mocked): read all, keep every count-th
                ds = ds.shard(count, index)
        if seed is not None:
            ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=False)
        return ds.map(self._record)

    def _record(self, ex):
        objs = ex[self.objects_key]
        rec = dict(image=ex["image"], bbox=tf.reshape(objs["bbox"], [-1, 4]), label=tf.cast(objs["label"], tf.int32))
        n = tf.shape(rec["label"])[0]
        if self.kind == "coco":
            rec["is_crowd"] = objs["is_crowd"]
        elif self.kind == "voc":
            diff = objs["is_difficult"]
            rec["is_crowd"] = diff if self.voc_difficult == "crowd" else tf.zeros_like(diff)
            if self.voc_difficult == "drop":
                keep = ~diff
                rec = dict(
                    rec,
                    bbox=tf.boolean_mask(rec["bbox"], keep),
                    label=tf.boolean_mask(rec["label"], keep),
                    is_crowd=tf.boolean_mask(diff, keep),
                )
        elif self.kind == "synthetic":
            rec["is_crowd"] = objs["is_crowd"]
            rec["instance_map"] = ex["instance_map"]
        elif self.kind == "open_images":
            rec["is_crowd"] = tf.equal(objs["is_group_of"], 1)
        else:
            rec["is_crowd"] = tf.zeros([n], tf.bool)
        if self.kind == "lvis":
            rec["segmentation"] = objs["segmentation"]
            for key in ("neg_category_ids", "not_exhaustive_category_ids"):  # labels = category id - 1
                rec[key] = tf.cast(ex[key], tf.int64) + 1
        rec["image_id"] = self._image_id(ex)
        return rec

    def _image_id(self, ex):
        if "image/id" in ex:
            return tf.cast(ex["image/id"], tf.int64)
        if self.kind == "open_images":
            return tf.strings.to_hash_bucket_fast(ex["image/filename"], 2**62)
        # VOC: the digits of the file name (2008_000123.jpg -> 2008000123).
        digits = tf.strings.regex_replace(ex["image/filename"], r"[^0-9]", "")
        return tf.strings.to_number(tf.strings.substr(digits, 0, 18), tf.int64)

    def decode(self, record, with_masks):
        image = decode_image(record["image"])
        h, w = tf.shape(image)[0], tf.shape(image)[1]
        size = tf.cast(tf.stack([h, w, h, w]), tf.float32)
        ex = dict(
            image=image,
            boxes=record["bbox"] * size,
            classes=record["label"] + 1,
            is_crowd=record["is_crowd"],
            image_id=record["image_id"],
        )
        if with_masks:
            if self.kind == "synthetic":
                inst = tf.io.decode_png(record["instance_map"], channels=1)[..., 0]
                ids = tf.range(1, tf.shape(record["label"])[0] + 1)
                ex["masks"] = tf.cast(tf.equal(tf.cast(inst, tf.int32)[None], ids[:, None, None]), tf.uint8)
            else:  # lvis: one PNG per object, resized to the image if the sizes disagree

                def one(png):
                    m = tf.io.decode_png(png, channels=1)
                    m = tf.image.resize(m, tf.stack([h, w]), method="nearest")
                    return tf.cast(m[..., 0] > 0, tf.uint8)

                segs = record["segmentation"]
                ex["masks"] = tf.cond(  # map_fn cannot produce an empty [0, h, w] result
                    tf.size(segs) > 0,
                    lambda: tf.map_fn(one, segs, fn_output_signature=tf.TensorSpec([None, None], tf.uint8)),
                    lambda: tf.zeros(tf.stack([0, h, w]), tf.uint8),
                )
                ex["masks"] = tf.reshape(ex["masks"], tf.stack([-1, h, w]))
        return ex

    # ------------------------------------------------------------------ whole-split passes
    def num_records(self, split):
        if split not in self._counts:
            self._counts[split] = split_size(self.builder, split, self._decoders())
        return self._counts[split]

    def _record_class_counts(self, split):
        def labels(rec):
            return tf.boolean_mask(rec["label"], tf.logical_not(rec["is_crowd"])) + 1

        ds = self._as_dataset(split).map(self._record).map(labels)
        return [dict(collections.Counter(classes.tolist())) for classes in ds.as_numpy_iterator()]

    def _lvis_frequencies(self) -> list:
        """TFDS lvis does not ship the categories' r/c/f groups; LVIS defines them by the number
        of training images per category, which one label-only pass over the split recovers."""
        from frozen_det.data.class_stats import source_statistics

        stats = source_statistics(self, self.frequency_split)
        log.info("LVIS frequency groups from %d images of split %r", stats.num_images, self.frequency_split)
        return stats.frequency_groups()

    def describe_record(self, split, index):
        return f"record {index} of tfds {self.builder.name} {split!r}"

    def coco_ground_truth(self, split):
        from pycocotools import mask as mask_utils

        images, anns = [], []
        ds = self._as_dataset(split).map(self._record)

        def add_shape(rec):
            rec["hw"] = tf.cond(
                tf.io.is_jpeg(rec["image"]),
                lambda: tf.image.extract_jpeg_shape(rec["image"])[:2],
                lambda: tf.shape(decode_image(rec["image"]))[:2],
            )
            return rec

        for rec in ds.map(add_shape).as_numpy_iterator():
            h, w = (int(v) for v in rec["hw"])
            image_id = int(rec["image_id"])
            images.append(coco_image_entry(image_id, f"{image_id}", h, w))
            if self.kind == "lvis":
                images[-1].update({k: rec[k].tolist() for k in ("neg_category_ids", "not_exhaustive_category_ids")})
            boxes = rec["bbox"] * np.array([h, w, h, w], np.float32)
            masks = None
            if self.kind == "synthetic":
                inst = tf.io.decode_png(rec["instance_map"], channels=1).numpy()[..., 0]
                masks = [(inst == j + 1) for j in range(len(boxes))]
            elif self.kind == "lvis":
                masks = [
                    tf.image.resize(tf.io.decode_png(p, channels=1), [h, w], method="nearest").numpy()[..., 0] > 0
                    for p in rec["segmentation"]
                ]
            for j, box in enumerate(boxes):
                if not (box[2] > box[0] and box[3] > box[1]):
                    continue
                seg = area = None
                if masks is not None:
                    rle = mask_utils.encode(np.asfortranarray(masks[j].astype(np.uint8)))
                    area = float(mask_utils.area(rle))
                    rle["counts"] = rle["counts"].decode("ascii")
                    seg = rle
                anns.append(
                    coco_annotation(
                        len(anns) + 1,
                        image_id,
                        box,
                        self.info.category_ids[int(rec["label"][j]) + 1],
                        rec["is_crowd"][j],
                        segmentation=seg,
                        area=area,
                    )
                )
        log.info("tfds %s %s: %d images, %d annotations", self.builder.name, split, len(images), len(anns))
        if self.kind == "lvis" and self.info.frequencies is None:
            self.info.frequencies = self._lvis_frequencies()
        return {
            "images": images,
            "annotations": anns,
            "categories": self.info.categories(),
            "info": {"description": f"{self.builder.name} {split}"},
        }
