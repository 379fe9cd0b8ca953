"""PreDet's two-view pipelines: the engine's seeded, sharded, resumable iterators
(frozen_det.data.pipeline) with the two-view sources (frozen_det.data.two_view.sources) and an
example function that makes the views in numpy / Pillow (no labels needed).

    train = build_train_pipeline(config, num_queries=16)   # infinite; state() / restore()
    held_out = build_eval_pipeline(config, num_queries=16) # the same batches on every pass

Batch contract (per process; B = global batch // process count, S = data.image_size,
Q = num_queries, K = the labels' classes):

==============  =================  ==========================================================
view1, view2    float32 [B,S,S,3]  two MoCo v2 views (frozen_det.data.two_view.views), normalised
                                   by data.mean / data.std on [0, 255]
query_boxes1/2  float32 [B,Q,4]    the same queries in each view's pixels (yxyx); row i is
                                   the same region in both; padding rows 0
query_valid     bool [B,Q]
image_id        int64 [B]          dataset id (detection folders, TFDS "image/id") or record
                                   index (image folders, other TFDS); -1 for eval padding
image_labels    float32 [B,K]      only with data.labels: multi-hot of the image's classes
example_valid   bool [B]           False for eval padding examples
==============  =================  ==========================================================

The engine gives what every kind has: process p of P reads records ``p::P``, the order of epoch
e is seeded by (seed, e, p), ``state() = {epoch, offset}`` is the whole position and
``restore`` skips to it without decoding anything, an image that cannot be read is counted in
``stats["examples_skipped"]`` and logged (never fatal). The example function decodes the image
(Pillow) and makes the two views and their queries with :func:`views.make_two_views` inside
``tf.numpy_function``, its ``numpy.random.Generator`` seeded by the engine's stateless seed of
the example, a function of (seed, p, e, position). ``data.num_workers`` examples are made at
once by tf.data's parallel map (0: one at a time); Pillow and numpy release the GIL for most of
the work, and the seeds make the batches identical whatever the parallelism.

Counters: ``stats["missing_proposals"]`` (queries="proposals": images without cached proposals,
which get no query) and ``stats["no_query"]`` (examples without a valid query).

The held-out set is the first ``data.num_eval_examples`` images of the eval split (stored
order; this process's share ``p::P`` of them), with views seeded by (seed, the image's index in
the split): every evaluation, whatever the process layout, measures the same pretext examples.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from frozen_det.data.pipeline import EvalPipeline, Kind, TrainPipeline
from frozen_det.data.source import DataError
from frozen_det.data.two_view import config as config_lib
from frozen_det.data.two_view.sources import build_source
from frozen_det.data.two_view.views import TwoViewConfig, make_two_views

# Second word of the held-out views' seed (train seeds fold in the process and epoch instead).
_HELD_OUT = 1_000_003


def _proposals(cfg):
    """The cached region proposals {key: [K, 4]} (keys as strings, like the sources'
    ``proposal_key``) when the queries come from them, else None."""
    if cfg.queries != "proposals":
        return None
    from frozen_det.data.two_view.proposals import load_proposals

    return {str(k): v for k, v in load_proposals(cfg.proposals_file).items()}


def make_example_fn(source, cfg, num_queries: int, train: bool):
    """TF function (seed, record) -> one two-view example (module docstring)."""
    views = TwoViewConfig(size=int(cfg.image_size), num_queries=int(num_queries), **cfg.augment.to_dict())
    proposals = _proposals(cfg)
    mean, std = tf.constant(cfg.mean, tf.float32), tf.constant(cfg.std, tf.float32)

    def two_views(seed, image, key):
        """numpy: the views and queries of ``image``, every random number drawn from ``seed``."""
        candidates, missing = None, False
        if proposals is not None:
            candidates = proposals.get(key.decode())
            missing = candidates is None
            if missing:
                candidates = np.zeros((0, 4), np.float32)
        ex = make_two_views(image, np.random.default_rng(seed.view(np.uint64)), views, candidates)
        return ex["view1"], ex["view2"], ex["boxes1"], ex["boxes2"], ex["query_valid"], np.bool_(missing)

    def example(seed, record):
        ex = source.decode(record)
        if not train:
            seed = tf.random.experimental.stateless_fold_in(tf.constant([cfg.seed, _HELD_OUT], tf.int64), ex["index"])
        out = tf.numpy_function(
            two_views,
            [seed, ex["image"], ex["proposal_key"]],
            (tf.uint8, tf.uint8, tf.float32, tf.float32, tf.bool, tf.bool),
            stateful=False,
        )
        shapes = ([views.size, views.size, 3],) * 2 + ([views.num_queries, 4],) * 2 + ([views.num_queries], [])
        for tensor, shape in zip(out, shapes):
            tensor.set_shape(shape)
        view1, view2, boxes1, boxes2, valid, missing = out
        result = dict(
            view1=(tf.cast(view1, tf.float32) - mean) / std,
            view2=(tf.cast(view2, tf.float32) - mean) / std,
            query_boxes1=boxes1,
            query_boxes2=boxes2,
            query_valid=valid,
            image_id=ex["image_id"],
            example_valid=tf.constant(True),
            _missing_proposals=missing,
            _no_query=tf.logical_not(tf.reduce_any(valid)),
        )
        if "image_labels" in ex:
            result["image_labels"] = ex["image_labels"]
        return result

    return example


def _check_proposals_file(cfg, source) -> None:
    if cfg.queries == "proposals" and not os.path.isfile(cfg.proposals_file):
        raise DataError(
            f"config.data.proposals_file={cfg.proposals_file}: not found; write it with "
            "`python -m frozen_det.data.two_view.cache_proposals` or use data.queries='random'"
        )


def _held_out(cfg, source, split, train):
    """Eval reads the first `data.num_eval_examples` records of the split (0: all)."""
    n = cfg.num_eval_examples
    if train or not n or source.num_records(split) <= n:
        return None
    return np.arange(n)


TWO_VIEW = Kind(
    name="two_view",
    resolve=config_lib.resolve,
    build_source=build_source,
    source_fields=(
        "source",
        "name",
        "path",
        "coco_files",
        "class_names",
        "voc_difficult",
        "labels",
        "train_split",
        "eval_split",
    ),
    make_train_fn=lambda source, cfg, num_queries: make_example_fn(source, cfg, num_queries, train=True),
    make_eval_fn=lambda source, cfg, num_queries: make_example_fn(source, cfg, num_queries, train=False),
    counters=(("_missing_proposals", "missing_proposals"), ("_no_query", "no_query")),
    check=_check_proposals_file,
    select=_held_out,
    parallel_calls=lambda cfg: cfg.num_workers,
)


def build_train_pipeline(config, num_queries: int = 16, **kw) -> TrainPipeline:
    """Train iterator from a full PreDet config or a two-view data section. ``num_queries``: Q,
    the model's `predet.num_queries`; other keywords as
    frozen_det.data.detection.build_train_pipeline (split, process_index, process_count,
    source, batch_size)."""
    return TrainPipeline(TWO_VIEW, config, options={"num_queries": int(num_queries)}, **kw)


def build_eval_pipeline(config, num_queries: int = 16, **kw) -> EvalPipeline:
    """The held-out iterator (module docstring); keywords as :func:`build_train_pipeline`."""
    return EvalPipeline(TWO_VIEW, config, options={"num_queries": int(num_queries)}, **kw)
