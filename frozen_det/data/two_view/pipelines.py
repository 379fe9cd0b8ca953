"""Seeded, sharded, resumable iterators of PreDet's two-view batches (no labels needed).

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

How it mirrors frozen_det.data.pipeline, as simply as possible: the images of a split come from
frozen_det.data.two_view.images (folders on disk, random access, or a TFDS dataset, streamed with
the images still encoded); process p of P reads records ``p::P``; the order of epoch e is seeded
by (seed, e, p); the example at position k of epoch e draws every random number from a
``numpy.random.Generator`` seeded by (seed, p, e, k). So ``state() = {epoch, offset}`` is the
whole position and ``restore`` skips to it without decoding anything. Decoding and augmentation
run in Python (Pillow + numpy: the views are made by make_two_views, which is numpy); an image
that cannot be read is counted in ``stats["examples_skipped"]`` and logged, never crashes the
run. With ``data.num_workers`` > 0 the examples of a batch are made by that many threads (Pillow
and numpy release the GIL for most of the work); the seeds make the batches identical to the
in-line ones. The held-out set is the first ``data.num_eval_examples`` images of the eval split
(stored order) with views seeded by their index, so every evaluation measures the same pretext
batches.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from frozen_det.data.position import ResumablePosition, padding_like, per_process_batch, process_layout, stack_examples
from frozen_det.data.source import DataError
from frozen_det.data.two_view import config as config_lib
from frozen_det.data.two_view.images import TwoViewInfo, open_split
from frozen_det.data.two_view.views import TwoViewConfig, make_two_views

log = logging.getLogger("frozen_det.data")


class _Base:
    def __init__(self, config, num_queries, split, train, process_index, process_count, batch_size):
        self.config = cfg = config_lib.resolve(config)
        self.train = train
        self.split = split or (cfg.train_split if train else cfg.eval_split)
        self.process_index, self.process_count = process_layout(process_index, process_count)
        global_batch = batch_size or (cfg.batch_size if train else cfg.eval_batch_size)
        field = f"config.data.{'batch_size' if train else 'eval_batch_size'}"
        self.batch_size = per_process_batch(global_batch, self.process_count, field)
        self.images = open_split(cfg, self.split)
        self.proposals = _proposals(cfg)
        self.views = TwoViewConfig(size=int(cfg.image_size), num_queries=int(num_queries), **cfg.augment.to_dict())
        self.mean = np.asarray(cfg.mean, np.float32)
        self.std = np.asarray(cfg.std, np.float32)
        self.stats = {"examples": 0, "examples_skipped": 0, "missing_proposals": 0, "no_query": 0}
        self._pool = None

    @property
    def info(self) -> TwoViewInfo:
        return self.images.info

    def report(self) -> dict:
        return dict(self.stats)

    @property
    def _shard(self) -> tuple:
        return self.process_index, self.process_count

    def _example(self, record, seed) -> tuple[dict | None, dict]:
        """The two-view example of ``record`` (two_view_images.ImageRecord) with the generator
        seeded by ``seed`` (None if its image cannot be read: logged) and its counters. No shared
        state is touched, so examples can be made in worker threads."""
        try:
            image = record.read()
        except (OSError, ValueError) as e:
            log.warning("skipped %s (image id %s): %s", record.path, record.image_id, e)
            return None, {"examples_skipped": 1}
        counts = {"examples": 1}
        candidates = None
        if self.proposals is not None:
            candidates = self.proposals.get(record.proposal_key)
            if candidates is None:
                counts["missing_proposals"] = 1
                candidates = np.zeros((0, 4), np.float32)
        ex = make_two_views(image, np.random.default_rng(seed), self.views, candidates)
        counts["no_query"] = int(not ex["query_valid"].any())
        out = dict(
            view1=(ex["view1"].astype(np.float32) - self.mean) / self.std,
            view2=(ex["view2"].astype(np.float32) - self.mean) / self.std,
            query_boxes1=ex["boxes1"],
            query_boxes2=ex["boxes2"],
            query_valid=ex["query_valid"],
            image_id=np.int64(record.image_id),
            example_valid=np.bool_(True),
        )
        if self.info.num_labels:
            labels = np.zeros(self.info.num_labels, np.float32)
            labels[[c - 1 for c in record.classes if 1 <= c <= self.info.num_labels]] = 1.0
            out["image_labels"] = labels
        return out, counts

    def _examples(self, jobs):
        """``[(record, seed)]`` -> their examples in order (worker threads when
        ``data.num_workers`` > 0: the seeds make the result independent of the scheduling);
        counters accounted here."""
        run = lambda job: self._example(*job)
        if self.config.num_workers > 0:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.config.num_workers, thread_name_prefix="two_view")
            results = list(self._pool.map(run, jobs))
        else:
            results = [run(job) for job in jobs]
        for _, counts in results:
            for key, n in counts.items():
                self.stats[key] += n
        return [ex for ex, _ in results]


class TwoViewTrainPipeline(ResumablePosition, _Base):
    """Infinite iterator of per-process train batches; ``state()`` / ``restore(state)``."""

    STATE_NAME = "two-view pipeline"

    def __init__(self, config, num_queries=16, split=None, process_index=None, process_count=None, batch_size=None):
        super().__init__(config, num_queries, split, True, process_index, process_count, batch_size)
        self._epoch, self._offset = 0, 0
        self._gen = None

    def _restored(self) -> None:
        self._gen = None

    def _positions(self):
        """(epoch, position, record) from the current position on, across epochs."""
        epoch, offset = self._epoch, self._offset
        while True:
            empty = True
            records = self.images.epoch(epoch, self._shard, self.config.seed, offset)
            for k, (_, record) in enumerate(records, start=offset):
                empty = False
                yield epoch, k, record
            if empty and offset == 0:
                raise DataError(f"split {self.split!r}: process {self.process_index}'s shard has no images")
            epoch, offset = epoch + 1, 0

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        if self._gen is None:
            self._gen = self._positions()
        batch, failures = [], 0
        while len(batch) < self.batch_size:
            jobs = [next(self._gen) for _ in range(self.batch_size - len(batch))]
            seeds = [[self.config.seed, self.process_index, e, k] for e, k, _ in jobs]
            for (e, k, _), ex in zip(jobs, self._examples([(r, s) for (_, _, r), s in zip(jobs, seeds)])):
                self._epoch, self._offset = e, k + 1
                if ex is None:
                    failures += 1
                    if failures > len(self.images):
                        raise DataError(f"split {self.split!r}: no image of this process's shard could be read")
                    continue
                ex.pop("example_valid")
                batch.append(ex)
        return stack_examples(batch)


class TwoViewEvalPipeline(_Base):
    """The held-out pretext batches: the first `num_eval_examples` images of the split (this
    process's share), views from a fixed seed, the last batch padded (``example_valid`` False);
    every process yields ``num_batches`` batches."""

    def __init__(self, config, num_queries=16, split=None, process_index=None, process_count=None, batch_size=None):
        super().__init__(config, num_queries, split, False, process_index, process_count, batch_size)
        n = len(self.images)
        self.num_examples = min(n, self.config.num_eval_examples or n)
        self.num_batches = max(1, math.ceil(math.ceil(self.num_examples / self.process_count) / self.batch_size))

    def __iter__(self):
        held_out = self.images.epoch(0, self._shard, None)  # stored order
        held_out = itertools.takewhile(lambda item: item[0] < self.num_examples, held_out)
        batch, produced, template = [], 0, None
        while chunk := list(itertools.islice(held_out, self.batch_size)):
            for ex in self._examples([(record, [self.config.seed, 1_000_003, i]) for i, record in chunk]):
                if ex is None:
                    continue
                template = template or ex
                batch.append(ex)
                if len(batch) == self.batch_size:
                    yield stack_examples(batch)
                    produced, batch = produced + 1, []
        if template is None:
            raise DataError(f"eval split {self.split!r}: no image of this process's share could be read")
        padding = padding_like(template)
        while produced < self.num_batches:
            batch += [padding] * (self.batch_size - len(batch))
            yield stack_examples(batch)
            produced, batch = produced + 1, []


def _proposals(cfg):
    """The cached region proposals {key: [K, 4]} when the queries come from them, else None."""
    if cfg.queries != "proposals":
        return None
    from frozen_det.data.two_view.proposals import load_proposals

    if not os.path.isfile(cfg.proposals_file):
        raise DataError(
            f"config.data.proposals_file={cfg.proposals_file}: not found; write it with "
            "`python -m frozen_det.data.two_view.cache_proposals` or use data.queries='random'"
        )
    return load_proposals(cfg.proposals_file)


def build_train_pipeline(config, **kw) -> TwoViewTrainPipeline:
    """Keywords: num_queries (Q, the model's `predet.num_queries`), split, process_index,
    process_count (default: JAX's), batch_size (global)."""
    return TwoViewTrainPipeline(config, **kw)


def build_eval_pipeline(config, **kw) -> TwoViewEvalPipeline:
    return TwoViewEvalPipeline(config, **kw)
