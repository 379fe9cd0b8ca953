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

from frozen_det.data.classification import config
from frozen_det.data.classification.pipelines import CLASSIFICATION, build_eval_pipeline, build_train_pipeline
from frozen_det.data.classification.sources import build_source

__all__ = ["config", "CLASSIFICATION", "build_eval_pipeline", "build_source", "build_train_pipeline"]
