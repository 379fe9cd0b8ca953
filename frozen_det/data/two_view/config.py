"""`config.data` of PreDet pre-training (`model.type="predet"`): two augmented views of unlabelled
images with query boxes (frozen_det.data.two_view.pipelines). Defaults, merging, validation.

Sources (`data.source`): "image_folder" (every image under `path/<split>/`, or under `path` when
that folder does not exist; no labels), "coco_folder" and "voc_folder" (the detection sources'
folders, frozen_det.data.detection.sources: their images, and with `labels=True` each image's classes as
multi-hot image labels for PreDet's multi-label loss), and "tfds" (a TFDS dataset by `name` with
an "image" feature, streamed from `path` as data_dir: classification sets such as imagenet2012,
whose class is the image label, and detection sets such as coco/2017, whose object classes are).

Queries (`data.queries`): "random" boxes inside the two crops' overlap, or "proposals": cached
unsupervised region proposals (frozen_det.data.two_view.proposals' ``.npz``, `proposals_file`)
keyed by the image id (detection folders, TFDS records with "image/id"), the file name (TFDS
records with one), "SPLIT/index" (other TFDS records) or the image's path relative to `data.path`
(image folders).
"""

from __future__ import annotations

from frozen_det.data import sections
from frozen_det.schema import ConfigDict, choice, merge, placeholder

SOURCES = ("image_folder", "coco_folder", "voc_folder", "tfds")


def defaults() -> ConfigDict:
    return ConfigDict(
        dict(
            source="image_folder",  # one of SOURCES
            name="",  # tfds: the dataset, e.g. "imagenet2012", "coco/2017"
            path="",  # the folder; tfds: data_dir (optional)
            train_split="train",
            eval_split="validation",
            coco_files=ConfigDict(dict()),  # coco_folder: split -> (annotation json, image dir)
            class_names=(),  # voc_folder: the class order
            voc_difficult="crowd",
            image_size=224,  # each view is image_size x image_size (the paper: 480)
            batch_size=0,  # global train batch (images, two views each); 0 = config.train.batch_size
            eval_batch_size=8,
            num_eval_examples=0,  # the held-out set: the first n images of eval_split (0: all)
            mean=placeholder(tuple),  # unset: the backbone checkpoint's, else ImageNet's (sections)
            std=placeholder(tuple),
            seed=0,
            shuffle_buffer=4096,  # tfds streams (folders shuffle the whole split)
            queries="random",  # "random" | "proposals"
            proposals_file="",  # queries="proposals": the .npz cache of frozen_det.data.two_view.proposals
            labels=False,  # detection folders: emit `image_labels` (multi-hot of the image's classes)
            # Examples made at once by tf.data's parallel map (0: one at a time); the same batches.
            num_workers=4,
            prefetch=2,  # examples made ahead of the batch being assembled
            # MoCo v2 views (frozen_det.data.two_view.views.TwoViewConfig).
            augment=ConfigDict(
                dict(
                    scale=(0.2, 1.0),
                    ratio=(3 / 4, 4 / 3),
                    flip_prob=0.5,
                    photometric=True,
                    min_view_size=8.0,
                    min_queries=1,
                    max_attempts=10,
                )
            ),
        )
    )


def complete(given) -> ConfigDict:
    cfg = merge(defaults(), given or {}, "config.data", free_form=("coco_files",))
    validate(cfg)
    return cfg


def _check_proposals(cfg) -> None:
    if cfg.queries == "proposals" and not cfg.proposals_file:
        raise ValueError(
            "config.data.proposals_file: queries='proposals' reads cached region proposals; give the .npz "
            "(python -m frozen_det.data.two_view.cache_proposals writes it) or use queries='random'."
        )


def resolve(data_config, train_batch_size: int | None = None) -> ConfigDict:
    """The complete two-view `config.data` a pipeline runs on (frozen_det.data.sections.resolve)."""
    return sections.resolve(
        complete,
        data_config,
        train_batch_size,
        path_sources=("image_folder", "coco_folder", "voc_folder"),
        check=_check_proposals,
    )


def validate(cfg: ConfigDict) -> None:
    choice(cfg.source, SOURCES, "data.source")
    choice(cfg.queries, ("random", "proposals"), "data.queries")
    choice(cfg.voc_difficult, ("crowd", "keep", "drop"), "data.voc_difficult")
    if cfg.image_size <= 0 or cfg.image_size % 8:
        raise ValueError(f"config.data.image_size={cfg.image_size}: a positive multiple of 8 (of 2^max_level).")
    if cfg.labels and cfg.source == "image_folder":
        raise ValueError("config.data.labels=True: an image_folder has no labels; use a coco_folder / voc_folder.")
    if cfg.num_workers < 0:
        raise ValueError(f"config.data.num_workers={cfg.num_workers}: 0 (one example at a time) or more.")
    if not sections.valid_normalisation(cfg):
        raise ValueError("config.data.mean / std: 3 values each, std > 0.")
