"""The images of one split of a PreDet run (`config.data` of frozen_det.data.two_view.config), in
the order an epoch reads them: folders on disk (random access) or a TFDS dataset (streamed).

    images = open_split(cfg, "train")
    for index, record in images.epoch(epoch, (process_index, process_count), seed, offset):
        image = record.read()   # uint8 [H, W, 3]; OSError / ValueError if it cannot be decoded

`index` is the record's position in the stored split (the held-out set's views are seeded by it);
`record.proposal_key` is what the region-proposal cache (frozen_det.data.two_view.proposals) keys
the image by; `record.classes` (1..K) are its classes for PreDet's multi-label loss.

Order of epoch e on process p of P (shard p::P of the split):
* folders: a numpy permutation of the shard seeded by (seed, e, p), or stored order (seed None);
* TFDS: the shard (``Dataset.shard``) of the split, files shuffled (when the records have an id
  feature) and a shuffle buffer (`data.shuffle_buffer`) seeded by (seed, e, p), or stored order
  (seed None). Images stay encoded until ``read()``, so skipping to a position decodes nothing.
  The id is "image/id" (COCO), "image/filename" / "file_name" (VOC, ImageNet), else
  "SPLIT/index" (the record's stored position).
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os

import numpy as np
from PIL import Image

from frozen_det.data.source import DataError

log = logging.getLogger("frozen_det.data")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


@dataclasses.dataclass(frozen=True)
class ImageRecord:
    path: str  # the image file, or a description of a record whose bytes are in `encoded`
    image_id: int
    proposal_key: object  # the region-proposal cache's key of this image
    classes: tuple = ()  # 1..K of the image's non-crowd objects / its class (as image labels)
    encoded: bytes = b""  # streamed sources: the encoded image

    def read(self) -> np.ndarray:
        """uint8 [H, W, 3] (grey and RGBA converted); OSError / ValueError when undecodable."""
        with Image.open(io.BytesIO(self.encoded) if self.encoded else self.path) as im:
            return np.asarray(im.convert("RGB"))


@dataclasses.dataclass(frozen=True)
class TwoViewInfo:
    """What the examples' labels are (the trainer checks the model against it)."""

    name: str
    num_labels: int  # 0: no labels
    class_names: tuple = ()


class FolderImages:
    """An image folder or a local COCO / VOC detection folder: every record known up front."""

    random_access = True

    def __init__(self, records: list, info: TwoViewInfo):
        self.records, self.info = records, info

    def __len__(self) -> int:
        return len(self.records)

    def epoch(self, epoch: int, shard: tuple, seed, offset: int = 0):
        index, count = shard
        order = np.arange(len(self.records))[index::count]
        if seed is not None:
            order = order[np.random.default_rng([seed, epoch, index]).permutation(len(order))]
        for i in order[offset:]:
            yield int(i), self.records[i]


class TfdsImages:
    """A TFDS dataset with an "image" feature: classification sets ("label": one class per
    image) and detection sets ("objects"/"label": the image's object classes) alike."""

    random_access = False

    def __init__(self, cfg, split: str):
        from frozen_det.data.tfds import tfds_builder

        self.builder = builder = tfds_builder(cfg.name, cfg.path)
        self.split, self.buffer = split, int(cfg.shuffle_buffer)
        feats = builder.info.features
        if "image" not in feats:
            raise DataError(f"config.data.name={cfg.name}: the TFDS dataset has no 'image' feature")
        if "objects" in feats and "label" in feats["objects"]:
            self._label_of, names = (lambda ex: ex["objects"]["label"]), feats["objects"]["label"].names
        elif "label" in feats:
            self._label_of, names = (lambda ex: ex["label"]), feats["label"].names
        else:
            self._label_of, names = None, []
        if cfg.labels and self._label_of is None:
            raise DataError(f"config.data.labels=True: the TFDS dataset {cfg.name} has no 'label' feature")
        self._id_key = next((k for k in ("image/id", "image/filename", "file_name") if k in feats), None)
        self.info = TwoViewInfo(builder.name, len(names) if cfg.labels else 0, tuple(names))
        self._length = None

    def __len__(self) -> int:
        if self._length is None:
            try:
                self._length = int(self.builder.info.splits[self.split].num_examples)
            except Exception:  # unknown split or mocked info: count (images stay encoded)
                self._length = 0
            if self._length <= 0:
                self._length = int(self._dataset(None).reduce(np.int64(0), lambda c, _: c + 1))
        return self._length

    def _dataset(self, seed):
        from frozen_det.data.tfds import read_split

        return read_split(self.builder, self.split, seed)

    def epoch(self, epoch: int, shard: tuple, seed, offset: int = 0):
        import tensorflow as tf

        index, count = shard
        epoch_seed = None if seed is None else int(np.random.default_rng([seed, epoch, index]).integers(2**31 - 1))
        # Files are shuffled only when records carry their own id: otherwise the read position
        # is the id (and the proposal key), so it must be the stored one.
        ds = self._dataset(epoch_seed if self._id_key else None).enumerate().shard(count, index)
        if epoch_seed is not None:
            ds = ds.shuffle(self.buffer, seed=epoch_seed, reshuffle_each_iteration=False)

        def fields(i, ex):
            out = {"index": i, "image": ex["image"]}
            if self._label_of is not None:
                out["labels"] = tf.reshape(tf.cast(self._label_of(ex), tf.int64), [-1])
            if self._id_key is not None:
                out["id"] = ex[self._id_key]
            return out

        for ex in ds.skip(offset).map(fields).as_numpy_iterator():
            i = int(ex["index"])
            key = ex.get("id", f"{self.split}/{i}")
            if isinstance(key, bytes):
                key = key.decode()
            yield (
                i,
                ImageRecord(
                    path=f"record {i} of tfds {self.builder.name} {self.split!r}",
                    image_id=int(key) if isinstance(key, (int, np.integer)) else i,
                    proposal_key=int(key) if isinstance(key, (int, np.integer)) else key,
                    classes=tuple(sorted({int(c) + 1 for c in ex.get("labels", ())})),
                    encoded=ex["image"],
                ),
            )


def _image_folder(root: str, split: str) -> FolderImages:
    folder = os.path.join(root, split)
    if not os.path.isdir(folder):
        log.warning("%s has no folder %r: every split reads all its images (no held-out set)", root, split)
        folder = root
    if not os.path.isdir(folder):
        raise DataError(f"config.data.path={root}: no folder {folder} of split {split!r}")
    paths = sorted(
        os.path.join(d, f) for d, _, files in os.walk(folder) for f in files if f.lower().endswith(IMAGE_EXTENSIONS)
    )
    if not paths:
        raise DataError(f"config.data.path={root}: no images ({', '.join(IMAGE_EXTENSIONS)}) under {folder}")
    records = [ImageRecord(p, i, os.path.relpath(p, root)) for i, p in enumerate(paths)]
    return FolderImages(records, TwoViewInfo(name=root, num_labels=0))


def _detection_folder(cfg, split: str) -> FolderImages:
    from frozen_det.data.detection import config as detection_config
    from frozen_det.data.detection.sources import build_source

    fields = dict(
        source=cfg.source,
        path=cfg.path,
        train_split=cfg.train_split,
        eval_split=cfg.eval_split,
        coco_files=cfg.coco_files.to_dict(),
        class_names=tuple(cfg.class_names),
        voc_difficult=cfg.voc_difficult,
    )
    source = build_source(detection_config.complete(fields))
    records = [
        ImageRecord(r.image_path, int(r.image_id), int(r.image_id), tuple(int(c) for c in r.classes[~r.is_crowd]))
        for r in source.split_records(split)
    ]
    names = tuple(source.info.class_names)
    return FolderImages(records, TwoViewInfo(source.info.name, source.info.num_classes if cfg.labels else 0, names))


def open_split(cfg, split: str):
    """The images of one split of a complete two-view data section."""
    if cfg.source == "image_folder":
        images = _image_folder(cfg.path, split)
    elif cfg.source == "tfds":
        images = TfdsImages(cfg, split)
    else:
        images = _detection_folder(cfg, split)
    if not len(images):
        raise DataError(f"split {split!r} of {cfg.name or cfg.path} has no images")
    return images
