"""`config.data` of classification runs (`model.type="classifier"`): defaults, merging and
validation, as frozen_det.data.detection.config is for detection.

Sources (`data.source`):

* "fashion_mnist": Fashion-MNIST's idx files (70k 28x28 grey images, 10 classes; offline from
  the Debian package `dataset-fashion-mnist`, /usr/share/datasets/fashion-mnist), splits
  "train" (60k) and "test" (10k);
* "image_folder": `path/<split>/<class name>/<image>` (one sub-folder per class);
* "coco_labels": a COCO-format folder whose images carry an image-level `label` (a category
  id), e.g. the ImageNet-like canvases of frozen_det.data.offline.canvases;
* "detection_crops": the objects of a detection source (`data.detection`, a detection data
  section: a VOC / COCO folder, TFDS, ...) cropped out and labelled with their class, e.g.
  BCCD's 4.9k blood-cell crops;
* "tfds": a TFDS image classification dataset by name (imagenet2012, caltech101,
  oxford_flowers102, sun397, cifar10, ...; features "image" and "label").

Training batches: random-resized crop (area `augment.crop_scale`, aspect `augment.crop_ratio`)
+ horizontal flip, resized to `image_size`; evaluation: the shorter side resized to
`image_size / crop_fraction`, centre crop of `image_size` (the usual ImageNet protocol).
"""

from __future__ import annotations

from frozen_det.data import sections
from frozen_det.data.detection.config import complete as complete_detection_data
from frozen_det.schema import ConfigDict, choice, merge, placeholder

SOURCES = ("fashion_mnist", "image_folder", "coco_labels", "detection_crops", "tfds")


def defaults() -> ConfigDict:
    return ConfigDict(
        dict(
            source="fashion_mnist",  # one of SOURCES
            name="",  # tfds: the dataset name, e.g. "cifar10", "imagenet2012"
            path="",  # image_folder root; fashion_mnist idx folder (default: the Debian package's);
            # tfds data_dir (optional)
            train_split="train",
            eval_split="test",
            class_names=(),  # image_folder: fixes the classes and their order; empty = sorted sub-folders
            image_size=224,  # H = W of every batch image
            crop_fraction=0.875,  # eval: centre crop of this fraction of the resized shorter side
            batch_size=0,  # global train batch; 0 = config.train.batch_size
            eval_batch_size=64,
            mean=placeholder(tuple),  # unset: the backbone checkpoint's, else ImageNet's (sections)
            std=placeholder(tuple),
            seed=0,
            shuffle_buffer=4096,  # tfds streams; random-access sources shuffle the whole split
            # "uniform" or "repeat_factor" (power 1, threshold 1: class-balanced sampling)
            sampling="uniform",
            repeat_threshold=1.0,
            repeat_power=1.0,
            augment=ConfigDict(
                dict(
                    random_resized_crop=True,
                    crop_scale=(0.08, 1.0),  # area fraction of the image (Inception crops)
                    crop_ratio=(3 / 4, 4 / 3),
                    hflip=True,
                )
            ),
            # Subsets (frozen_det.data.classification.subsets; nested and seeded): of the train
            # split's images per class (0: all; a fraction in (0, 1] or a count), of the classes
            # (explicit names, under / without taxonomy nodes, then `num_classes` at random), or
            # a fixed image budget spread over the kept classes. Evaluation keeps the same classes.
            subset=ConfigDict(
                dict(
                    images_per_class=0.0,
                    num_classes=0,
                    classes=(),
                    under=(),
                    remove_under=(),
                    image_budget=0,
                    seed=0,
                )
            ),
            # The classes' tree (frozen_det.data.classification.taxonomy): "", "imagenet1k", "fashion_mnist" or a
            # table file; and the training labels: "fine", "merged:K" (the kept classes in K random
            # groups, every image kept), "bottom_up:N" (the N-th bottom-up label
            # set of the kept classes, 0 = the leaves), "top_down:D" (ancestors at depth D) or
            # "top_down_lifted:K" (the paper's top-down sets: 127 / 10 / 2 labels at K = 1 / 2 / 3).
            # Batches keep the source's class in `fine_label`.
            taxonomy="",
            labels="fine",
            # detection_crops: the detection source (a detection `config.data` section), the
            # context around each box (fraction of its size on every side) and the smallest box
            # side kept (pixels).
            detection=ConfigDict(dict(source="voc_folder")),
            crop_context=0.1,
            min_crop_size=4.0,
            num_parallel_calls=-1,
            prefetch=2,
        )
    )


def complete(given) -> ConfigDict:
    cfg = merge(defaults(), given or {}, "config.data", free_form=("detection",))
    with cfg.ignore_type():
        cfg.detection = complete_detection_data(cfg.detection)
    validate(cfg)
    return cfg


def resolve(data_config, train_batch_size: int | None = None) -> ConfigDict:
    """The complete classification `config.data` a pipeline runs on (frozen_det.data.sections.resolve)."""
    return sections.resolve(complete, data_config, train_batch_size, path_sources=("image_folder", "coco_labels"))


def validate(cfg: ConfigDict) -> None:
    def bad(field, message):
        raise ValueError(f"config.data.{field}={cfg[field] if field in cfg else ''!r}: {message}")

    choice(cfg.source, SOURCES, "data.source")
    choice(cfg.sampling, ("uniform", "repeat_factor"), "data.sampling")
    if cfg.image_size <= 0:
        bad("image_size", "must be positive")
    if not 0 < cfg.crop_fraction <= 1:
        bad("crop_fraction", "must be in (0, 1]")
    if not sections.valid_normalisation(cfg):
        bad("mean", "mean and std need 3 values each, std > 0")
    lo, hi = cfg.augment.crop_scale
    if not 0 < lo <= hi <= 1:
        raise ValueError(f"config.data.augment.crop_scale={cfg.augment.crop_scale}: need 0 < min <= max <= 1")
    lo, hi = cfg.augment.crop_ratio
    if not 0 < lo <= hi:
        raise ValueError(f"config.data.augment.crop_ratio={cfg.augment.crop_ratio}: need 0 < min <= max")
    if cfg.crop_context < 0:
        bad("crop_context", "must be >= 0")
    if cfg.subset.images_per_class < 0 or cfg.subset.num_classes < 0 or cfg.subset.image_budget < 0:
        raise ValueError(f"config.data.subset: counts and fractions must be >= 0, got {cfg.subset.to_dict()}")
    if cfg.subset.image_budget and cfg.subset.images_per_class:
        raise ValueError("config.data.subset: set image_budget or images_per_class, not both")
    if cfg.labels.partition(":")[0] not in ("fine", "merged", "bottom_up", "top_down", "top_down_lifted"):
        bad("labels", "use 'fine', 'merged:K', 'bottom_up:N', 'top_down:D' or 'top_down_lifted:K'")
