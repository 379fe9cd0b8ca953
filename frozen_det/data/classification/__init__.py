"""Image classification input pipelines: sources -> random-resized crop / centre crop ->
fixed-shape numpy batches, on the same seeded, sharded, resumable iterators as detection
(frozen_det.data.pipeline).

    from frozen_det.data import classification
    train = classification.build_train_pipeline(config)   # infinite; state() / restore()
    evals = classification.build_eval_pipeline(config)    # one ordered pass, padded

Batch contract (per process; B = global batch // process count, S = data.image_size):

==============  ===============  ====================================================
image           float32 [B,S,S,3]  RGB normalised by data.mean / data.std on [0, 255]
label           int32 [B]          the training label, 0..num_labels-1 (data.labels / subset)
fine_label      int32 [B]          the source's class, 0..num_classes-1
image_id        int64 [B]          the record's id (-1 for eval padding)
example_valid   bool [B]           eval only: False for padding examples
==============  ===============  ====================================================

Config fields and defaults: frozen_det.data.classification.config.
"""

from __future__ import annotations

import importlib

# Loaded on first use (PEP 562), so that config files can import the schema
# (frozen_det.data.classification.config) without loading TensorFlow.
_EXPORTS = {
    "CLASSIFICATION": "frozen_det.data.classification.pipelines",
    "build_train_pipeline": "frozen_det.data.classification.pipelines",
    "build_eval_pipeline": "frozen_det.data.classification.pipelines",
    "build_source": "frozen_det.data.classification.sources",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'frozen_det.data.classification' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
