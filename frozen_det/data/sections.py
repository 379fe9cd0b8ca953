"""What every kind's `config.data` shares: the ImageNet normalisation and `resolve()`.

Each kind (detection, classification, two_view) has its schema in its own `config.py` with a
`complete(given)` (defaults laid under the given fields, validated); `resolve` turns a whole
experiment config or a data section into the complete section a pipeline runs on, the same
way for every kind: the train batch size filled in where `data.batch_size` is 0, and the
source's location checked (a TFDS dataset needs its name, a folder source its path).
"""

from __future__ import annotations

from typing import Callable

from frozen_det.schema import ConfigDict

# torchvision's / Keras' ImageNet statistics on [0, 255] RGB (Lite variants normalise by
# (x - 127) / 128 instead: frozen_det.checkpoints.pretrained's preprocessing).
IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)

# The global train batch of a data section read without a train section (tools, tests).
DEFAULT_BATCH_SIZE = 8


def valid_normalisation(cfg: ConfigDict) -> bool:
    """`mean` / `std` unset (filled later) or 3 values each with a positive std."""
    mean_ok = cfg.mean is None or len(cfg.mean) == 3
    std_ok = cfg.std is None or (len(cfg.std) == 3 and min(cfg.std) > 0)
    return mean_ok and std_ok


def fill_normalisation(cfg: ConfigDict, checkpoint_preprocessing) -> None:
    """Unset `mean` / `std` of a complete data section: those of the backbone's pretrained weights
    (`checkpoint_preprocessing`, an object with `.mean` / `.std`), else ImageNet's."""
    if cfg.mean is None or cfg.std is None:
        mean, std = (
            (IMAGENET_MEAN, IMAGENET_STD)
            if checkpoint_preprocessing is None
            else (checkpoint_preprocessing.mean, checkpoint_preprocessing.std)
        )
        with cfg.ignore_type():
            cfg.mean = cfg.mean if cfg.mean is not None else tuple(float(v) for v in mean)
            cfg.std = cfg.std if cfg.std is not None else tuple(float(v) for v in std)


def resolve(
    complete: Callable,
    data_config,
    train_batch_size: int | None = None,
    *,
    path_sources: tuple = (),
    check: Callable | None = None,
) -> ConfigDict:
    """A complete, validated copy of `config.data` (or of a whole config's `.data`) by the kind's
    `complete`, with `batch_size` resolved (0 = the train batch size) and the location checked:
    the sources in `path_sources` need `data.path`; `check(cfg)` adds the kind's checks of fields
    that config files may leave to the command line."""
    if data_config is not None and "data" in data_config and "source" not in data_config:
        if train_batch_size is None and "train" in data_config:
            train_batch_size = data_config.train.batch_size
        data_config = data_config.data
    cfg = complete(data_config)
    fill_normalisation(cfg, None)
    if not cfg.batch_size:
        cfg.batch_size = int(train_batch_size or DEFAULT_BATCH_SIZE)
    # Checked only here: config files may leave these to the command line.
    if cfg.source.startswith("tfds") and not cfg.name:
        raise ValueError(
            f"config.data.name: the {cfg.source} source needs a dataset name (e.g. 'coco/2017', 'imagenet2012')"
        )
    if cfg.source in path_sources and not cfg.path:
        raise ValueError(f"config.data.path: the {cfg.source} source needs its folder (--config.data.path=DIR)")
    if check is not None:
        check(cfg)
    return cfg
