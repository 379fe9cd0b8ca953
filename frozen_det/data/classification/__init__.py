"""Image classification input pipelines: sources -> random-resized crop / centre crop ->
fixed-shape numpy batches, on the same seeded, sharded, resumable iterators as detection
(frozen_det.data.pipeline).

    from frozen_det.data import classification
    train = classification.build_train_pipeline(config)   # infinite; state() / restore()
    evals = classification.build_eval_pipeline(config)    # one ordered pass, padded

Batch contract (per process; B = global batch // process count, S = data.image_size):

==============  ===============  ====================================================
image           float32 [B,S,S,3]  RGB normalised by data.mean / data.std on [0, 255]
label           int32 [B]          0..num_classes-1
image_id        int64 [B]          the record's id (-1 for eval padding)
example_valid   bool [B]           eval only: False for padding examples
==============  ===============  ====================================================

Config fields and defaults: frozen_det.data.classification.config.
"""

from __future__ import annotations

from frozen_det.data.classification import config as config_lib
from frozen_det.data.classification.sources import build_source
from frozen_det.data.classification.transforms import make_eval_fn, make_train_fn
from frozen_det.data.pipeline import EvalPipeline, Kind, TrainPipeline

CLASSIFICATION = Kind(
    name="classification",
    resolve=config_lib.resolve,
    build_source=build_source,
    source_fields=("source", "name", "path", "class_names", "detection", "crop_context", "min_crop_size"),
    make_train_fn=make_train_fn,
    make_eval_fn=make_eval_fn,
)


def build_train_pipeline(config, **kw) -> TrainPipeline:
    """Train iterator from a full config or a classification data section (keywords as
    frozen_det.data.build_train_pipeline)."""
    return TrainPipeline(config, kind=CLASSIFICATION, **kw)


def build_eval_pipeline(config, **kw) -> EvalPipeline:
    return EvalPipeline(config, kind=CLASSIFICATION, **kw)


__all__ = ["CLASSIFICATION", "build_eval_pipeline", "build_source", "build_train_pipeline"]
