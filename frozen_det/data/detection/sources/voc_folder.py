"""A local Pascal-VOC folder: ``Annotations/*.xml``, ``JPEGImages/*``, ``ImageSets/Main/<split>.txt``.

VOC pixel indices are 1-based and inclusive; boxes become continuous 0-based coordinates
(``xmin - 1 .. xmax``, as Detectron does). Boxes are clipped to the image; boxes that are empty
after clipping (BCCD has two zero-size boxes) and records whose image file is missing are
counted, logged with the file name, and skipped. ``difficult`` objects follow
``data.voc_difficult``: "crowd" (default: ignored in training, ignore regions in evaluation,
as the VOC metric does), "keep" or "drop".

The image file, not the XML, says how large an image is: an XML ``<size>`` that disagrees with
the decoded image's header is reported per file and counted, and ``data.voc_size_mismatch``
decides: "rescale" (default) maps the boxes from the XML's frame to the image's, "skip" drops
the image. ``data.class_names`` that name no object of a split (e.g. "Circle" in a folder
labelled "circle") are an error listing the names found (and the fix, when only case differs)
rather than a split that trains on nothing.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET

import numpy as np
from PIL import Image

from frozen_det.data.detection.sources.base import DatasetInfo
from frozen_det.data.detection.sources.records import Record, RecordListSource, sanitize_box
from frozen_det.data.files import IMAGE_EXTENSIONS
from frozen_det.data.source import DataError, class_names_hint, count, log


class VocFolderSource(RecordListSource):
    def __init__(self, path: str, class_names=(), difficult: str = "crowd", size_mismatch: str = "rescale"):
        super().__init__()
        self.path = os.path.abspath(os.path.expanduser(path))
        self.difficult = difficult
        self.size_mismatch = size_mismatch
        self._given_names = list(class_names)
        for sub in ("Annotations", "JPEGImages", os.path.join("ImageSets", "Main")):
            if not os.path.isdir(os.path.join(self.path, sub)):
                raise DataError(
                    f"VOC folder {self.path}: missing {sub}/. A Pascal-VOC folder has Annotations/"
                    "*.xml, JPEGImages/* and ImageSets/Main/<split>.txt; set data.path to such a folder."
                )
        names = list(class_names) or self._scan_class_names()
        self.info = DatasetInfo(
            name=f"voc_folder:{os.path.basename(self.path)}",
            class_names=["background"] + names,
            category_ids=list(range(len(names) + 1)),
            has_masks=False,
        )
        self._class_to_id = {n: i + 1 for i, n in enumerate(names)}
        self._unknown_names: set = set()

    def available_splits(self):
        main = os.path.join(self.path, "ImageSets", "Main")
        return sorted(f[:-4] for f in os.listdir(main) if f.endswith(".txt") and "_" not in f)

    def _scan_class_names(self):
        names = set()
        ann_dir = os.path.join(self.path, "Annotations")
        for f in sorted(os.listdir(ann_dir)):
            if f.endswith(".xml"):
                try:
                    root = ET.parse(os.path.join(ann_dir, f)).getroot()
                except ET.ParseError:
                    continue  # reported when the split is read
                names.update(o.findtext("name", "").strip() for o in root.findall("object"))
        names.discard("")
        if not names:
            raise DataError(f"VOC folder {self.path}: no <object><name> in Annotations/*.xml")
        return sorted(names)

    def _split_records(self, split):
        list_file = os.path.join(self.path, "ImageSets", "Main", f"{split}.txt")
        if not os.path.isfile(list_file):
            raise DataError(
                f"VOC folder {self.path}: split {split!r} not found ({list_file} is "
                f"missing); available splits: {self.available_splits()}. Set "
                "data.train_split / data.eval_split."
            )
        with open(list_file) as f:
            stems = [line.split()[0] for line in f if line.strip()]
        numbers = [re.findall(r"\d+", s) for s in stems]
        ids = [int("".join(n)) if n else -1 for n in numbers]
        if len(set(ids)) != len(ids) or min(ids, default=0) < 0:
            ids = list(range(1, len(stems) + 1))
        records, names_found = [], set()
        for stem, image_id in zip(stems, ids):
            rec = self._read(stem, image_id, names_found)
            if rec is not None:
                records.append(rec)
        log.info(
            "VOC folder %s split %s: %d images (%s)",
            self.path,
            split,
            len(records),
            self.skipped_report(split) or "nothing skipped",
        )
        if self._given_names and names_found and not names_found & set(self._class_to_id):
            self._no_class_matches(split, names_found)
        return records

    def _no_class_matches(self, split: str, names_found: set) -> None:
        """Fails: the given class names name no object of `split` (with the fix, if only case differs)."""
        raise DataError(
            f"VOC folder {self.path} split {split!r}: data.class_names={tuple(self._given_names)!r} match none "
            f"of the objects' names {sorted(names_found)[:20]}, so it would train on nothing"
            + class_names_hint(self._given_names, names_found)
        )

    def _image_size(self, root, image_path: str, xml_path: str):
        """(height, width, scale [sy, sx] from the XML's frame to the image's, or None to skip).
        The image header decides (module docstring)."""
        try:
            with Image.open(image_path) as im:
                width, height = im.size
        except OSError as e:
            count(self._skipped, "undecodable_images")
            log.warning("skipping %s: cannot read image (%s)", image_path, e)
            return None
        try:
            xml_w = int(float(root.findtext("size/width", "0")))
            xml_h = int(float(root.findtext("size/height", "0")))
        except ValueError:
            xml_w = xml_h = 0
        if xml_w <= 0 or xml_h <= 0 or (xml_w, xml_h) == (width, height):
            return height, width, (1.0, 1.0)
        action = "boxes rescaled to the image" if self.size_mismatch == "rescale" else "image skipped"
        count(self._skipped, f"size_mismatch_{'rescaled' if self.size_mismatch == 'rescale' else 'skipped'}")
        log.warning(
            "%s: <size> %dx%d disagrees with the image %s (%dx%d): %s (data.voc_size_mismatch=%r)",
            xml_path,
            xml_w,
            xml_h,
            image_path,
            width,
            height,
            action,
            self.size_mismatch,
        )
        if self.size_mismatch != "rescale":
            return None
        return height, width, (height / xml_h, width / xml_w)

    def _read(self, stem, image_id, names_found: set):
        xml_path = os.path.join(self.path, "Annotations", stem + ".xml")
        try:
            root = ET.parse(xml_path).getroot()
        except (OSError, ET.ParseError) as e:
            count(self._skipped, "bad_annotation_files")
            log.warning("skipping %s: cannot read annotation (%s)", xml_path, e)
            return None
        image_path = None
        fname = root.findtext("filename")
        candidates = ([fname] if fname else []) + [stem + e for e in IMAGE_EXTENSIONS]
        for c in candidates:
            p = os.path.join(self.path, "JPEGImages", c.strip())
            if os.path.isfile(p):
                image_path = p
                break
        if image_path is None:
            count(self._skipped, "missing_images")
            log.warning("skipping %s: no image JPEGImages/%s found", xml_path, candidates[0])
            return None
        size = self._image_size(root, image_path, xml_path)
        if size is None:
            return None
        height, width, (sy, sx) = size
        boxes, classes, crowd = [], [], []
        for k, obj in enumerate(root.findall("object")):
            name = obj.findtext("name", "").strip()
            names_found.add(name)
            where = f"{xml_path} (object {k}, {name})"
            if name not in self._class_to_id:
                count(self._skipped, "unknown_class_objects")
                if name not in self._unknown_names:  # once per name; the split's report counts them all
                    self._unknown_names.add(name)
                    log.warning("skipping objects of class %r: not in data.class_names (first: %s)", name, where)
                continue
            difficult = obj.findtext("difficult", "0").strip() == "1"
            if difficult and self.difficult == "drop":
                continue
            try:
                b = [float(obj.findtext(f"bndbox/{k}")) for k in ("ymin", "xmin", "ymax", "xmax")]
            except (TypeError, ValueError):
                count(self._skipped, "bad_boxes")
                log.warning("skipping object without a numeric bndbox in %s", where)
                continue
            if b[2] <= b[0] or b[3] <= b[1]:  # zero extent as annotated (BCCD has two)
                count(self._skipped, "degenerate_boxes")
                log.warning("skipping degenerate box (ymin,xmin,ymax,xmax)=%s in %s", b, where)
                continue
            frame = [(b[0] - 1) * sy, (b[1] - 1) * sx, b[2] * sy, b[3] * sx]  # the image's pixels
            box = sanitize_box(frame, height, width, where, self._skipped, log)
            if box is None:
                continue
            boxes.append(box)
            classes.append(self._class_to_id[name])
            crowd.append(difficult and self.difficult == "crowd")
        if not boxes:
            count(self._skipped, "images_without_objects_kept")
        return Record(
            image_path=image_path,
            image_id=image_id,
            height=height,
            width=width,
            boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
            classes=np.asarray(classes, np.int32),
            is_crowd=np.asarray(crowd, bool),
        )
