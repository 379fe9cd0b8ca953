"""`config.data`: defaults, merging and validation.

Experiment configs state only what they change (e.g. ``source="synthetic", canvas=128``);
:func:`resolve` fills every other field from :func:`defaults` and checks the values, so the
pipeline can rely on a complete ConfigDict and bad values fail at start with the field named.
"""

from __future__ import annotations

from frozen_det.data import sections
from frozen_det.schema import ConfigDict, merge, placeholder

SOURCES = ("synthetic", "voc_folder", "coco_folder", "tfds", "tfds_pseudo_boxes")


def defaults() -> ConfigDict:
    """Every `config.data` field with its default (reference values: docs/reference.md §2.11, §5.6)."""
    return ConfigDict(
        dict(
            source="synthetic",  # one of SOURCES
            # tfds: "coco/2017", "lvis", "voc/2007", "voc/2012", "open_images_v4"; "voc/2007+voc/2012": both as one
            name="",
            path="",  # voc_folder / coco_folder root; tfds data_dir (optional)
            train_split="train",
            eval_split="validation",
            # coco_folder: split -> (annotation json, image dir), relative to `path`. Empty means
            # annotations/instances_{split}.json and {split}/ (the COCO / LVIS release layout).
            # tfds_pseudo_boxes: split -> (pseudo-box json of `python -m frozen_det.pseudo_boxes
            # --tfds`, the TFDS split of `name` it boxes).
            coco_files=ConfigDict(dict()),
            class_names=(),  # voc_folder: fixes the class order; empty = sorted names found
            voc_difficult="crowd",  # VOC `difficult` objects: "crowd" (ignored in train and eval),
            # "keep" (ordinary objects) or "drop"
            voc_size_mismatch="rescale",  # an XML <size> unlike the image's: "rescale" its boxes or "skip" it
            canvas=1024,  # H = W of every batch image; a multiple of 2^max_level
            batch_size=0,  # global train batch; 0 = config.train.batch_size
            eval_batch_size=8,  # global eval batch (reference: 8, docs/reference.md §6)
            max_instances=100,  # N; what does not fit is counted (num_dropped_instances)
            with_masks=False,
            mask_size=112,  # box-aligned GT mask crops (docs/reference.md §2.10)
            canvas_masks=False,  # also emit full-canvas masks [B, N, H, W] (uint8)
            masks_dtype="float32",  # or "uint8" (0..255) to save host memory
            image_dtype="float32",  # or "bfloat16"
            mean=placeholder(tuple),  # unset: the backbone checkpoint's, else ImageNet's (sections)
            std=placeholder(tuple),
            seed=0,
            shuffle_buffer=2048,  # tfds sources stream; local/synthetic shuffle the full split
            kshot=0,  # >0: keep k images per class in the train split (the low-data settings of PreDet / DAP)
            kshot_seed=0,
            # Train image sampling: "uniform" (every image once per epoch) or "repeat_factor" (LVIS
            # sec. 4.1: image i appears r_i = max over its classes c of max(1, (t / f_c)^power) times
            # per epoch in expectation, f_c = fraction of train images containing c).
            sampling="uniform",
            repeat_threshold=0.001,  # t (LVIS: 0.001)
            repeat_power=0.5,  # 0.5: LVIS; 1.0: close to class-balanced image sampling
            eval_metric="auto",  # "coco" (pycocotools), "lvis" (official lvis API, federated),
            # "auto": lvis when the source has LVIS r/c/f frequencies
            augment=ConfigDict(
                dict(
                    hflip=True,
                    scale_min=0.1,
                    scale_max=2.0,  # LSJ, docs/reference.md §2.11
                    # Instead of LSJ: the shorter side one of these at random, the longer at most
                    # the canvas, no crop (DAP's pre-training: 96, 160, 320, 640 with canvas 1000)
                    short_sides=(),
                    # True: boxes of objects cut by the LSJ crop become the tight box of their visible
                    # mask (needs masks). False (reference): the transformed box is only clipped.
                    boxes_from_masks=False,
                    copy_paste=False,
                    # Copy-Paste (docs/reference.md §5.6): thresholds in canvas pixels / original-image pixels.
                    copy_paste_box_update_threshold=10.0,
                    copy_paste_occluded_area=300.0,
                    copy_paste_rule="per_object",  # or "reference" (the coded scalar quirk, 5.6)
                )
            ),
            synthetic=ConfigDict(
                dict(
                    image_size=128,
                    num_train=256,
                    num_validation=64,
                    num_classes=3,
                    max_objects=6,
                    version="1.0.0",
                    data_dir="",  # "" = ~/tensorflow_datasets
                )
            ),
            num_parallel_calls=-1,  # tf.data.AUTOTUNE
            prefetch=2,
        )
    )


def complete(given) -> ConfigDict:
    """The full `config.data` section (defaults with `given`'s fields laid over it), validated.
    `batch_size=0` stays 0 ("the train batch"): `resolve` derives it."""
    cfg = merge(defaults(), given or {}, "config.data", free_form=("coco_files",))
    validate(cfg)
    return cfg


def resolve(data_config, train_batch_size: int | None = None) -> ConfigDict:
    """The complete detection `config.data` a pipeline runs on (frozen_det.data.sections.resolve)."""
    return sections.resolve(complete, data_config, train_batch_size, path_sources=("voc_folder", "coco_folder"))


def validate(cfg: ConfigDict) -> None:
    def bad(field, msg):
        raise ValueError(f"config.data.{field}: {msg}")

    if cfg.source not in SOURCES:
        bad("source", f"{cfg.source!r} is not one of {SOURCES}")
    if cfg.canvas <= 0 or cfg.canvas % 8:
        bad("canvas", f"{cfg.canvas} must be a positive multiple of 8 (of 2^max_level for the model)")
    if cfg.max_instances <= 0:
        bad("max_instances", "must be positive")
    if cfg.mask_size <= 1:
        bad("mask_size", "must be > 1")
    if any(not 0 < side <= cfg.canvas for side in cfg.augment.short_sides):
        bad("augment.short_sides", f"{tuple(cfg.augment.short_sides)}: each in (0, canvas={cfg.canvas}]")
    if not 0 < cfg.augment.scale_min <= cfg.augment.scale_max:
        bad("augment.scale_min", "need 0 < scale_min <= scale_max")
    if cfg.augment.copy_paste_rule not in ("per_object", "reference"):
        bad("augment.copy_paste_rule", "'per_object' or 'reference'")
    if not sections.valid_normalisation(cfg):
        bad("mean", "mean and std need 3 values each, std > 0")
    if cfg.image_dtype not in ("float32", "bfloat16"):
        bad("image_dtype", "'float32' or 'bfloat16'")
    if cfg.masks_dtype not in ("float32", "uint8"):
        bad("masks_dtype", "'float32' or 'uint8'")
    if cfg.voc_difficult not in ("crowd", "keep", "drop"):
        bad("voc_difficult", "'crowd', 'keep' or 'drop'")
    if cfg.voc_size_mismatch not in ("rescale", "skip"):
        bad("voc_size_mismatch", "'rescale' or 'skip'")
    if cfg.sampling not in ("uniform", "repeat_factor"):
        bad("sampling", "'uniform' or 'repeat_factor'")
    if cfg.repeat_threshold <= 0 or cfg.repeat_power <= 0:
        bad("repeat_threshold", "repeat_threshold and repeat_power must be positive")
    if cfg.eval_metric not in ("auto", "coco", "lvis"):
        bad("eval_metric", "'auto', 'coco' or 'lvis'")
    if cfg.augment.copy_paste and not cfg.with_masks:
        bad(
            "augment.copy_paste",
            "Copy-Paste pastes objects by their instance masks: set "
            "data.with_masks=True (on a source with masks) or augment.copy_paste=False",
        )
