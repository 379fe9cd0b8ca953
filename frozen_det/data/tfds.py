"""TFDS access shared by every kind of data: a builder that is prepared (or a clear error), and
one split read with its images still encoded."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from frozen_det.data.source import DataError


def read_split(builder, split: str, seed=None, decoders=None, with_tfds_id: bool = False) -> tf.data.Dataset:
    """``builder.as_dataset`` of one split with the images left encoded (``decoders``), files
    shuffled when ``seed`` is given, each record's ``tfds_id`` added when asked (a name that
    survives shuffling); a missing split is a DataError naming the prepared ones."""
    decoders = decoders or {"image": tfds.decode.SkipDecoding()}
    try:
        return builder.as_dataset(
            split=split,
            shuffle_files=seed is not None,
            decoders=decoders,
            read_config=tfds.ReadConfig(shuffle_seed=seed, try_autocache=False, add_tfds_id=with_tfds_id),
        )
    except (KeyError, ValueError, AssertionError) as e:
        raise DataError(
            f"tfds {builder.name}: cannot read split {split!r} ({e}); prepared "
            f"splits: {list(builder.info.splits.keys())}. Set data.train_split / "
            "data.eval_split, or prepare the dataset (tfds build) into data.path."
        ) from e


def split_size(builder, split: str, decoders=None) -> int:
    """The number of records of ``split``: TFDS's metadata, else (split sizes unknown, e.g. mocked
    data) one pass over the records with the images still encoded (``decoders`` as read_split).
    Sources cache it per split."""
    try:
        n = builder.info.splits[split].num_examples
    except Exception:  # unknown split or mocked info
        n = 0
    if n > 0:
        return int(n)
    return int(read_split(builder, split, decoders=decoders).reduce(np.int64(0), lambda c, _: c + 1))


def tfds_builder(name: str, data_dir: str = ""):
    """The real TFDS builder; a clear error (not a 200 s download attempt) when the data is
    not prepared locally."""
    builder = tfds.builder(name, data_dir=data_dir or None)
    try:
        prepared = builder.is_prepared()
    except Exception:
        prepared = False
    if not prepared and not _mocked():
        raise DataError(
            f"tfds dataset {name!r} is not prepared in {builder.data_dir}: prepare it once "
            f"with `tfds build {name} --data_dir DIR` (COCO/LVIS need their downloads, see "
            "the TFDS catalog) and set data.path=DIR"
        )
    return builder


def _mocked() -> bool:
    """True inside ``tfds.testing.mock_data`` (its as_dataset replaces the reader)."""
    return "mock" in type(tfds.core.DatasetBuilder.as_dataset).__name__.lower() or "mock" in getattr(
        tfds.core.DatasetBuilder.as_dataset, "__module__", ""
    )
