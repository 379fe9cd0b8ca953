"""Class metadata of detection sources and the COCO-format entries they write (the engine's
record / decode interface is frozen_det.data.source)."""

from __future__ import annotations

import dataclasses
from typing import Optional


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
