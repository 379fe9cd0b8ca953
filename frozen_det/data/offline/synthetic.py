"""Synthetic shapes with instance masks: a TFDS builder that generates offline and
deterministically (the default data for demos and tests).

Each image is a textured background (a smooth colour gradient, stripes and noise) with 0 to
``max_objects`` filled shapes of random colour; the *shape* is the class (circle, square,
triangle, cross, ring, diamond, star, hexagon in that order; ``num_classes`` <= 8). Later
shapes occlude earlier ones, and a placement is rejected if it would hide more than half of
an earlier object, so every object stays recognisable. The instance masks are stored as one
PNG "instance map" (pixel value j+1 = object j, 0 = background, the *visible* region), and
each box is the tight box of its visible mask. Every example is a pure function of
(split, index) through ``numpy.random.default_rng``, so two builds are byte-identical.
The drawing helpers are in :mod:`frozen_det.data.offline.scenes`.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from frozen_det.data.offline.scenes import SHAPES, background, paint, place, random_shape_mask, visible_boxes

_SPLIT_SEED = {"train": 0, "validation": 1}


@dataclasses.dataclass
class SyntheticShapesConfig(tfds.core.BuilderConfig):
    image_size: int = 128
    num_train: int = 256
    num_validation: int = 64
    num_classes: int = 3
    max_objects: int = 6


def config_name(image_size, num_train, num_validation, num_classes, max_objects) -> str:
    return f"s{image_size}_n{num_train}_v{num_validation}_c{num_classes}_o{max_objects}"


def make_config(
    image_size=128, num_train=256, num_validation=64, num_classes=3, max_objects=6, version="1.0.0"
) -> SyntheticShapesConfig:
    if not 1 <= num_classes <= len(SHAPES):
        raise ValueError(f"config.data.synthetic.num_classes={num_classes}: 1..{len(SHAPES)}")
    if image_size < 32:
        raise ValueError(f"config.data.synthetic.image_size={image_size}: at least 32")
    return SyntheticShapesConfig(
        name=config_name(image_size, num_train, num_validation, num_classes, max_objects),
        version=version,
        description="synthetic shapes",
        image_size=image_size,
        num_train=num_train,
        num_validation=num_validation,
        num_classes=num_classes,
        max_objects=max_objects,
    )


def generate_example(index: int, split: str, image_size: int, num_classes: int, max_objects: int) -> dict:
    """One example as numpy: image uint8 [S,S,3], instance_map uint8 [S,S,1], boxes
    (ymin,xmin,ymax,xmax, pixels), labels (0-based), visible areas."""
    rng = np.random.default_rng([_SPLIT_SEED.get(split, 2), index, image_size, num_classes])
    size = image_size
    image = background(rng, size)
    inst = np.zeros((size, size), np.uint8)
    full_areas, labels = [], []
    n_target = int(rng.integers(0, max_objects + 1))
    attempts = 0
    while len(labels) < n_target and attempts < 50:
        attempts += 1
        label = int(rng.integers(0, num_classes))
        mask = random_shape_mask(rng, SHAPES[label], size)
        trial = place(inst, full_areas, mask)
        if trial is None:
            continue
        inst = trial
        labels.append(label)
        full_areas.append(int(mask.sum()))
        colour = rng.uniform(0, 255, 3)
        while np.abs(colour - image[mask].mean(0)).sum() < 150:  # contrast with the background
            colour = rng.uniform(0, 255, 3)
        paint(rng, image, mask, colour)
    boxes, areas = visible_boxes(inst, len(labels))
    return dict(
        image=np.clip(image, 0, 255).astype(np.uint8),
        instance_map=inst[..., None],
        boxes=boxes,
        labels=np.asarray(labels, np.int64),
        areas=areas,
    )


class SyntheticShapes(tfds.core.GeneratorBasedBuilder):
    """Registered as ``synthetic_shapes``; configs are built by :func:`make_config`."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [make_config()]

    def _info(self) -> tfds.core.DatasetInfo:
        c = self.builder_config
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(c.image_size, c.image_size, 3), encoding_format="png"),
                    "image/id": np.int64,
                    "instance_map": tfds.features.Image(shape=(c.image_size, c.image_size, 1), encoding_format="png"),
                    "objects": tfds.features.Sequence(
                        {
                            "bbox": tfds.features.BBoxFeature(),
                            "label": tfds.features.ClassLabel(names=list(SHAPES[: c.num_classes])),
                            "area": np.int64,
                            "is_crowd": np.bool_,
                        }
                    ),
                }
            ),
            supervised_keys=None,
        )

    def _split_generators(self, dl_manager):
        c = self.builder_config
        return {
            "train": self._generate_examples("train", c.num_train),
            "validation": self._generate_examples("validation", c.num_validation),
        }

    def _generate_examples(self, split, num):
        c = self.builder_config
        offset = 1 if split == "train" else 1_000_001  # image ids unique across splits
        for i in range(num):
            ex = generate_example(i, split, c.image_size, c.num_classes, c.max_objects)
            s = float(c.image_size)
            yield (
                i,
                {
                    "image": ex["image"],
                    "image/id": offset + i,
                    "instance_map": ex["instance_map"],
                    "objects": {
                        "bbox": [tfds.features.BBox(*(np.minimum(b / s, 1.0)).tolist()) for b in ex["boxes"]],
                        "label": ex["labels"].tolist(),
                        "area": ex["areas"].tolist(),
                        "is_crowd": [False] * len(ex["labels"]),
                    },
                },
            )


def build(cfg_synthetic, data_dir: str = "") -> tfds.core.DatasetBuilder:
    """Builds (once; later calls reuse the files) and returns the builder for
    ``config.data.synthetic``."""
    c = make_config(
        cfg_synthetic.image_size,
        cfg_synthetic.num_train,
        cfg_synthetic.num_validation,
        cfg_synthetic.num_classes,
        cfg_synthetic.max_objects,
        cfg_synthetic.version,
    )
    registered = {b.name: b for b in SyntheticShapes.BUILDER_CONFIGS}
    same = registered.get(c.name)
    if same is not None and same.version == c.version:
        c = c.name  # TFDS refuses a custom config named like a registered one
    builder = SyntheticShapes(config=c, data_dir=data_dir or None)
    # No feature statistics: nothing reads them, and they are a quarter of the build time.
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(
            try_download_gcs=False, compute_stats=tfds.download.ComputeStatsMode.SKIP
        )
    )
    return builder
