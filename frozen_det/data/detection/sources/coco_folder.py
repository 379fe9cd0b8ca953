"""A local COCO-format folder: an instances JSON (COCO or LVIS v1) plus an image directory.

Polygons, uncompressed RLE and compressed RLE are decoded with pycocotools (``frPyObjects``,
merge, decode) inside a ``tf.numpy_function``. Category ids are mapped to contiguous ids in
increasing id order. LVIS files work too: images without ``file_name`` use the basename of
``coco_url``; ``frequency`` (r/c/f) is kept in the DatasetInfo; ``neg_category_ids`` and
``not_exhaustive_category_ids`` pass through to the evaluation ground truth.

Bad rows: annotations of unknown images or categories, degenerate boxes (clipped to the image
first) and images whose file is missing are counted, logged with the file name, and skipped.
Images with no annotation are kept (they teach "background").
"""

from __future__ import annotations

import json
import os

import numpy as np
import tensorflow as tf

from frozen_det.data.detection.sources.base import DatasetInfo
from frozen_det.data.detection.sources.records import Record, RecordListSource, sanitize_box
from frozen_det.data.source import DataError, count, log


def default_files(split: str) -> tuple:
    return (os.path.join("annotations", f"instances_{split}.json"), split)


class CocoFolderSource(RecordListSource):
    def __init__(self, path: str, files: dict | None = None):
        super().__init__()
        self.path = os.path.abspath(os.path.expanduser(path))
        if not os.path.isdir(self.path):
            raise DataError(
                f"COCO folder {self.path} does not exist: set data.path to a folder with "
                "annotations/instances_<split>.json and <split>/ images (or data.coco_files)"
            )
        self.files = dict(files or {})
        self._json = {}
        self.info = None
        # Categories come from the first split that is read; all splits must agree.

    def _paths(self, split):
        ann, img = self.files.get(split) or default_files(split)
        return os.path.join(self.path, ann), os.path.join(self.path, img)

    def load_json(self, split):
        if split not in self._json:
            ann_path, _ = self._paths(split)
            if not os.path.isfile(ann_path):
                raise DataError(
                    f"COCO folder: annotation file {ann_path} for split {split!r} is missing; "
                    "set data.coco_files.<split> = (annotation json, image dir) relative to "
                    f"data.path={self.path}"
                )
            try:
                with open(ann_path) as f:
                    self._json[split] = json.load(f)
            except (OSError, json.JSONDecodeError) as e:
                raise DataError(f"COCO folder: cannot parse {ann_path}: {e}") from e
            self._set_categories(self._json[split], ann_path)
        return self._json[split]

    def ensure_info(self, split):
        self.load_json(split)
        return self.info

    def _set_categories(self, data, where):
        cats = sorted(data.get("categories", []), key=lambda c: c["id"])
        if not cats:
            raise DataError(f"{where}: no 'categories'")
        names = ["background"] + [c["name"] for c in cats]
        ids = [0] + [int(c["id"]) for c in cats]
        freq = [""] + [c.get("frequency", "") for c in cats] if any("frequency" in c for c in cats) else None
        if self.info is not None and self.info.category_ids != ids:
            raise DataError(f"{where}: categories differ from the other split's")
        self.info = DatasetInfo(
            name=f"coco_folder:{os.path.basename(self.path)}",
            class_names=names,
            category_ids=ids,
            has_masks=True,
            frequencies=freq,
        )
        self._cat_to_class = {cid: i for i, cid in enumerate(ids) if i > 0}

    def _split_records(self, split):
        data = self.load_json(split)
        ann_path, image_dir = self._paths(split)
        if not os.path.isdir(image_dir):
            raise DataError(
                f"COCO folder: image directory {image_dir} for split {split!r} is missing; "
                "set data.coco_files.<split> = (annotation json, image dir)"
            )
        images = {}
        for im in data.get("images", []):
            fname = im.get("file_name") or os.path.basename(im.get("coco_url", ""))
            images[im["id"]] = (im, fname)
        per_image = {i: [] for i in images}
        for ann in data.get("annotations", []):
            if ann.get("image_id") not in per_image:
                count(self._skipped, "annotations_of_unknown_images")
                log.warning(
                    "%s: annotation %s refers to unknown image %s", ann_path, ann.get("id"), ann.get("image_id")
                )
                continue
            if ann.get("category_id") not in self._cat_to_class:
                count(self._skipped, "annotations_of_unknown_categories")
                log.warning(
                    "%s: annotation %s has unknown category %s", ann_path, ann.get("id"), ann.get("category_id")
                )
                continue
            per_image[ann["image_id"]].append(ann)
        self._by_path = getattr(self, "_by_path", {})
        records = []
        for image_id in sorted(images):
            im, fname = images[image_id]
            path = os.path.join(image_dir, fname)
            if not os.path.isfile(path):
                count(self._skipped, "missing_images")
                log.warning("skipping image %s (id %s): file not found", path, image_id)
                continue
            h, w = int(im["height"]), int(im["width"])
            boxes, classes, crowd, segs, areas = [], [], [], [], []
            for ann in per_image[image_id]:
                where = f"{ann_path} (annotation {ann.get('id')}, image {fname})"
                x, y, bw, bh = (ann.get("bbox") or [0, 0, 0, 0])[:4]
                box = sanitize_box([y, x, y + bh, x + bw], h, w, where, self._skipped, log)
                if box is None:
                    continue
                boxes.append(box)
                classes.append(self._cat_to_class[ann["category_id"]])
                crowd.append(bool(ann.get("iscrowd", 0)))
                segs.append(ann.get("segmentation"))
                areas.append(ann.get("area"))
            rec = Record(
                image_path=path,
                image_id=int(image_id),
                height=h,
                width=w,
                boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
                classes=np.asarray(classes, np.int32),
                is_crowd=np.asarray(crowd, bool),
                segmentations=segs,
            )
            rec.areas = areas
            rec.extra = {k: im[k] for k in ("neg_category_ids", "not_exhaustive_category_ids") if k in im}
            records.append(rec)
        log.info(
            "COCO folder %s split %s: %d images (%s)",
            self.path,
            split,
            len(records),
            self.skipped_report(split) or "nothing skipped",
        )
        return records

    def _area(self, rec, j):
        return rec.areas[j] if getattr(rec, "areas", None) else None

    def coco_ground_truth(self, split):
        gt = super().coco_ground_truth(split)
        for entry, rec in zip(gt["images"], self.split_records(split)):
            entry.update(getattr(rec, "extra", {}))
        return gt

    def records(self, split, indices):
        ds = super().records(split, indices)
        return ds.map(lambda r: dict(r, split=tf.constant(split)))

    def _masks_tf(self, record, height, width):
        def decode(split, index, h, w):
            rec = self.split_records(split.decode())[int(index)]
            return decode_segmentations(rec.segmentations, int(h), int(w))

        masks = tf.numpy_function(decode, [record["split"], record["index"], height, width], tf.uint8, stateful=False)
        return tf.reshape(masks, tf.stack([-1, height, width]))


def decode_segmentations(segmentations, h, w) -> np.ndarray:
    """COCO segmentations (polygon lists, RLE dicts with list or string counts) -> uint8
    [n, h, w]. Missing or empty segmentations give empty masks."""
    from pycocotools import mask as mask_utils

    out = np.zeros((len(segmentations), h, w), np.uint8)
    for j, seg in enumerate(segmentations):
        if not seg:
            continue
        if isinstance(seg, list):
            polys = [p for p in seg if len(p) >= 6]
            if not polys:
                continue
            rle = mask_utils.merge(mask_utils.frPyObjects(polys, h, w))
        elif isinstance(seg.get("counts"), list):
            rle = mask_utils.frPyObjects(seg, h, w)
        else:
            rle = dict(seg)
            if isinstance(rle["counts"], str):
                rle["counts"] = rle["counts"].encode("ascii")
        m = mask_utils.decode(rle)
        if m.shape[:2] != (h, w):
            continue
        out[j] = m.reshape(h, w)
    return out
