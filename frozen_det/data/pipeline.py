"""Seeded, sharded, resumable train and eval iterators of fixed-shape numpy batches.

Engine: tf.data for decoding and augmentation (parallel, ``deterministic=True``), batches
assembled in Python. Decided once for the whole pipeline (docs/architecture.md: tf.data is the default;
grain is not installed): instead of checkpointing tf.data's internal iterator state, which
would serialise shuffle buffers, the position is a pair of integers.

Determinism. Example ``i`` of epoch ``e`` on process ``p`` is always the same record with the
same augmentation, because
* the record order of an epoch is a function of (seed, epoch, p): a numpy permutation of the
  shard for local folders, a seeded file shuffle + shuffle buffer for TFDS streams;
* every random draw of an example uses stateless ops seeded by (seed, p, epoch, position).
So ``state() == {"epoch": e, "offset": k, ...}`` (k = records of epoch e already consumed) is
the whole position, and ``restore(state)`` rebuilds epoch e and skips k records *before*
decoding (index slicing for local folders, ``Dataset.skip`` on encoded TFDS records).
Batches run across epoch boundaries; the train iterator never ends.

Sharding: process p of P reads records ``p::P`` of a local split or ``tfds.even_splits(split,
P)[p]`` of a TFDS split (disjoint, covering). Each process yields the per-process batch
``global_batch // P``; the trainer builds global arrays with
``jax.make_array_from_process_local_data``.

Bad records: an example whose decoding fails (corrupt image) is dropped by
``ignore_errors``; the iterator notices the gap in positions, counts it in
``stats["examples_skipped"]`` and logs which record it was. A kind's per-example counters
(``Kind.counters``) are summed into ``stats``: detection's boxes removed by sanitising in
``stats["bad_boxes"]``, instances over ``max_instances`` in ``stats["dropped_instances"]`` (and
per example in ``num_dropped_instances``).

Examples made in Python. An example function may wrap numpy / Pillow code in
``tf.numpy_function`` (the two-view kind: frozen_det.data.two_view.pipelines), seeded from the
example's stateless seed: the map runs ``Kind.parallel_calls`` of them at once (Pillow and numpy
release the GIL for most of their work; 0: one at a time, tf.data's own parallelisation of the
map switched off), and an exception one raises drops the example like a decoding error. Epochs
still being read at exit are closed first (``_close_open_epochs``).
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import math
import weakref
from typing import Callable

import numpy as np
import tensorflow as tf

from frozen_det.data.class_stats import class_statistics, epoch_repeats, repeat_factors
from frozen_det.data.position import ResumablePosition, padding_like, per_process_batch, process_layout, stack_examples
from frozen_det.data.source import DataError, log

# The epochs being read: generators that hold a tf.data iterator.
_OPEN_EPOCHS = weakref.WeakSet()


@atexit.register
def _close_open_epochs():
    """Closes the epochs still being read (a train iterator's current epoch, an eval pass left
    half way) while the interpreter can still run Python threads. A tf.data iterator destroyed
    during interpreter shutdown waits for its in-flight ``tf.numpy_function`` calls, which can no
    longer take the GIL: the process would hang at exit."""
    for epoch in list(_OPEN_EPOCHS):
        epoch.close()


def sub_seed(seed, k: int):
    """Independent stateless seed ``k`` derived from an example's seed (shape [2] int32/64)."""
    return tf.random.experimental.stateless_fold_in(seed, k)


_SOURCES: dict = {}


def cached_source(cfg, kind: Kind):
    """One source object per source-defining config (indexing a folder and tracing the
    augmentation graph are done once per process, not once per pipeline)."""
    key = json.dumps(
        [kind.name, {k: cfg[k].to_dict() if hasattr(cfg[k], "to_dict") else cfg[k] for k in kind.source_fields}],
        sort_keys=True,
        default=str,
    )
    if key not in _SOURCES:
        _SOURCES[key] = kind.build_source(cfg)
    return _SOURCES[key]


@dataclasses.dataclass(frozen=True)
class Kind:
    """What the shared iterator machinery below needs to know about one kind of example:
    the data schema's resolver, the sources, the example functions, the per-example counters
    summed into the pipeline's report (counter field -> report key) and a source check.

    The data section a kind resolves has the fields the machinery reads: ``seed``,
    ``batch_size``, ``eval_batch_size``, ``train_split``, ``eval_split``, ``shuffle_buffer``,
    ``prefetch``, the parallelism ``parallel_calls`` reads, and optionally ``sampling``
    ("repeat_factor" with ``repeat_threshold`` / ``repeat_power``; absent: every record once per
    epoch). A counter field whose name starts with ``_`` is only counted: it is removed from the
    example, so it stays out of the batch contract."""

    name: str
    resolve: Callable  # (config or data section) -> complete data section
    build_source: Callable  # data section -> Source
    source_fields: tuple  # the data fields that define the source (cache key)
    make_train_fn: Callable  # (source, cfg, **options) -> fn(seed, record[, second record])
    make_eval_fn: Callable  # (source, cfg, **options) -> fn(seed, record)
    counters: tuple = ()  # ((example field, stats key), ...)
    check: Callable = lambda cfg, source: None
    second_stream: Callable = lambda cfg: False  # a second record stream per example (Copy-Paste)
    # (cfg, source, split, train) -> the record indices read (ascending) or None for all
    select: Callable = lambda cfg, source, split, train: None
    # (cfg, source) -> what the examples' labels are (the source's classes, or a label set)
    info: Callable = lambda cfg, source: source.info
    # (cfg) -> examples made at once by tf.data's map: n > 0, < 0 for AUTOTUNE, 0 one at a time
    parallel_calls: Callable = lambda cfg: cfg.num_parallel_calls


def _cached_fn(source, key, make):
    cache = source.__dict__.setdefault("_example_fns", {})
    if key not in cache:
        cache[key] = make()
    return cache[key]


@dataclasses.dataclass
class _Gaps:
    """Counts and logs the examples an epoch skipped (positions missing from its stream)."""

    stats: dict
    source: object
    split: str
    order: np.ndarray | None  # a random-access epoch's record order, for names and the end

    def count(self, expected: int, position: int) -> None:
        for missing in range(expected, position):
            self.stats["examples_skipped"] += 1
            log.warning(
                "skipped %s of split %r: it could not be decoded (see the TF warning above)",
                self._describe(missing),
                self.split,
            )

    def _describe(self, position) -> str:
        if self.order is not None and position < len(self.order):
            return self.source.describe_record(self.split, int(self.order[position]))
        return f"record {position} of the shard"


def _read_epoch(ds, offset: int, gaps: _Gaps):
    """(position, example) of an epoch's dataset. Neither this generator nor the train stream
    that reads it references the pipeline: a dropped pipeline then frees its tf.data iterator at
    once, by reference counting. Left in a reference cycle, the iterator would be destroyed by a
    later garbage collection, which holds the GIL while the iterator's destructor waits for its
    in-flight ``tf.numpy_function`` calls, which need it (stalls of tens of seconds seen)."""
    expected = offset
    for ex in ds.as_numpy_iterator():
        pos = int(ex.pop("_position"))
        gaps.count(expected, pos)
        expected = pos + 1
        yield pos, ex
    if gaps.order is not None:
        gaps.count(expected, len(gaps.order))  # failures at the end of the epoch


def _train_stream(pipeline_ref):
    """A train pipeline's (epoch, position, example), with (epoch, None, None) at each epoch's
    end, from the pipeline's position at each epoch's start; holds the pipeline weakly
    (`_read_epoch`)."""
    while True:
        pipeline = pipeline_ref()
        if pipeline is None:
            return
        epoch, offset = pipeline._epoch, pipeline._offset
        examples = pipeline._examples(epoch, offset, pipeline._fn, pipeline.copy_paste)
        empty = DataError(
            f"split {pipeline.split!r} of {pipeline.source.info.name!r} gave no usable "
            f"example on process {pipeline.process_index} (all skipped or empty shard)"
        )
        del pipeline
        produced = False
        for pos, ex in examples:
            produced = True
            yield epoch, pos, ex
        if not produced and offset == 0:
            raise empty
        yield epoch, None, None  # epoch boundary


class _Base:
    def __init__(self, kind, config, split, train, process_index, process_count, source, batch_size, options):
        tf.config.set_visible_devices([], "GPU")
        self.kind = kind
        self.config = kind.resolve(config)
        cfg = self.config
        # Keywords of the kind's example functions that are not data fields (the two-view kind:
        # the model's number of queries); part of the example functions' cache key.
        self.options = dict(options or {})
        self.train = train
        self.split = split or (cfg.train_split if train else cfg.eval_split)
        self.process_index, self.process_count = process_layout(process_index, process_count)
        self.source = source or cached_source(cfg, kind)
        kind.check(cfg, self.source)
        global_batch = batch_size or (cfg.batch_size if train else cfg.eval_batch_size)
        field = f"config.data.{'batch_size' if train else 'eval_batch_size'}"
        self.batch_size = per_process_batch(global_batch, self.process_count, field)
        if self.source.random_access:
            self.source.num_records(self.split)  # a missing split fails here, with its name
        self.stats = {"examples": 0, "examples_skipped": 0, **{key: 0 for _, key in kind.counters}}
        self._selected = kind.select(cfg, self.source, self.split, train)  # None: every record
        self._repeat_factors = None  # repeat-factor sampling: per kept record

    # ------------------------------------------------------------------ record order
    def _epoch_repeats(self, epoch: int):
        """Per record of the whole split, how often it is read in ``epoch``; None = each once.
        The same on every process (seeded by the epoch only), so shards stay disjoint."""
        if self._selected is None and self._repeat_factors is None:
            return None
        n = self.source.num_records(self.split)
        repeats = np.zeros(n, np.int64)
        chosen = self._selected if self._selected is not None else np.arange(n)
        if self._repeat_factors is None:
            repeats[chosen] = 1
        else:
            rng = np.random.default_rng([self.config.seed, epoch, 7])
            repeats[chosen] = epoch_repeats(self._repeat_factors, rng)
        return repeats

    def _shard_indices(self, epoch: int = 0) -> np.ndarray:
        n = self.source.num_records(self.split)
        repeats = self._epoch_repeats(epoch)
        idx = np.arange(n) if repeats is None else np.repeat(np.arange(n), repeats)
        return idx[self.process_index :: self.process_count]

    def _records(self, epoch: int, offset: int, stream: int = 0):
        """tf.data of records of ``epoch`` from ``offset`` on; ``stream`` 1 = the Copy-Paste
        source stream (an independent order of the same shard)."""
        cfg, src = self.config, self.source
        shuffle = self.train
        if src.random_access:
            order = self._shard_indices(epoch)
            if shuffle:
                rng = np.random.default_rng([cfg.seed, epoch, self.process_index, stream])
                order = order[rng.permutation(len(order))]
            self._order = order if stream == 0 else getattr(self, "_order", None)
            return src.records(self.split, order[offset:])
        seed = None
        if shuffle:
            seed = int(np.random.default_rng([cfg.seed, epoch, self.process_index, stream]).integers(0, 2**31 - 1))
        ds = src.stream(
            self.split,
            (self.process_index, self.process_count),
            seed,
            cfg.shuffle_buffer,
            repeats=self._epoch_repeats(epoch),
        )
        return ds.skip(offset)

    def _traced_fn(self, fn, element_spec):
        """The example function traced once per (source, config, spec) and reused across
        epochs and pipelines: tracing the augmentation graph costs ~2 s on this CPU."""
        key = (id(fn), repr(element_spec))
        cache = self.source.__dict__.setdefault("_traced_cache", {})
        if key not in cache:

            def run(seed, pidx, epoch, position, *recs):
                base = tf.stack([seed, pidx * 1_000_003 + epoch])
                out = fn(tf.random.experimental.stateless_fold_in(base, position), *recs)
                out["_position"] = position
                return out

            spec = [tf.TensorSpec([], tf.int64)] * 4 + list(element_spec[1:])
            cache[key] = tf.function(run, input_signature=spec, reduce_retracing=True)
        return cache[key]

    def _examples(self, epoch: int, offset: int, fn, copy_paste: bool):
        """Iterator of (position, numpy example) of one epoch from ``offset``; logs gaps. The
        iterator holds no reference to the pipeline (`_read_epoch`)."""
        ds = self._epoch_dataset(epoch, offset, fn, copy_paste)
        order = getattr(self, "_order", None) if self.source.random_access else None
        gaps = _Gaps(self.stats, self.source, self.split, order)
        examples = _read_epoch(ds, offset, gaps)
        _OPEN_EPOCHS.add(examples)
        return examples

    def _epoch_dataset(self, epoch: int, offset: int, fn, copy_paste: bool):
        cfg = self.config
        records = self._records(epoch, offset)
        positions = tf.data.Dataset.range(offset, 2**62)
        parts = [positions, records]
        if copy_paste:
            parts.append(self._records(epoch, offset, stream=1))
        ds = tf.data.Dataset.zip(tuple(parts))
        traced = self._traced_fn(fn, ds.element_spec)
        epoch_t = tf.constant(epoch, tf.int64)
        seed, pidx = cfg.seed, self.process_index

        def process(position, *recs):
            return traced(tf.constant(seed, tf.int64), tf.constant(pidx, tf.int64), epoch_t, position, *recs)

        npc = self.kind.parallel_calls(cfg)
        if npc == 0:  # one example at a time: tf.data would parallelise a stateless map itself
            ds = ds.map(process)
            options = tf.data.Options()
            options.experimental_optimization.map_parallelization = False
            ds = ds.with_options(options)
        else:
            ds = ds.map(process, num_parallel_calls=tf.data.AUTOTUNE if npc < 0 else npc, deterministic=True)
        return ds.ignore_errors(log_warning=True).prefetch(cfg.prefetch)

    def _account(self, ex):
        """Counts ``ex`` into ``stats`` (and removes its count-only ``_`` fields)."""
        self.stats["examples"] += 1
        for field, key in self.kind.counters:
            self.stats[key] += int(ex.pop(field) if field.startswith("_") else ex[field])

    def _example_fn(self, train: bool):
        """The kind's train or eval example function, made once per (source, config, options)."""
        cfg, make = self.config, self.kind.make_train_fn if train else self.kind.make_eval_fn
        key = ("train" if train else "eval", cfg.to_json(), json.dumps(self.options, sort_keys=True))
        return _cached_fn(self.source, key, lambda: make(self.source, cfg, **self.options))

    @property
    def info(self):
        """What the examples' labels are: the source's classes (detection), or the run's label
        set (classification subsets and coarse labels)."""
        return self.kind.info(self.config, self.source)

    def report(self) -> dict:
        """Counters of this iterator plus the rows the source skipped while indexing."""
        return dict(self.stats, **{f"source_{k}": v for k, v in self.source.skipped_report().items()})


class TrainPipeline(ResumablePosition, _Base):
    """Infinite iterator of per-process train batches. ``state()`` / ``restore(state)``
    save and restore the position (module docstring)."""

    def __init__(
        self,
        kind,
        config,
        split=None,
        process_index=None,
        process_count=None,
        source=None,
        batch_size=None,
        options=None,
    ):
        super().__init__(kind, config, split, True, process_index, process_count, source, batch_size, options)
        cfg = self.config
        self.copy_paste = self.kind.second_stream(cfg)
        if cfg.get("sampling") == "repeat_factor":
            self._repeat_factors = self._compute_repeat_factors()
        self._fn = self._example_fn(train=True)
        self._epoch, self._offset = 0, 0
        self._gen = None

    def _compute_repeat_factors(self) -> np.ndarray:
        cfg = self.config
        counts = self.source.record_class_counts(self.split)
        if self._selected is not None:
            counts = [counts[i] for i in self._selected]
        stats = class_statistics(counts, self.source.info.num_classes)
        factors = repeat_factors(counts, stats, cfg.repeat_threshold, cfg.repeat_power)
        log.info(
            "repeat-factor sampling (t=%g, power=%g): %.1f%% of %d images repeated, mean factor %.3f, max %.2f",
            cfg.repeat_threshold,
            cfg.repeat_power,
            100 * np.mean(factors > 1),
            len(factors),
            factors.mean(),
            factors.max(),
        )
        return factors

    def _restored(self) -> None:
        self._gen = None

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        if self._gen is None:
            self._gen = _train_stream(weakref.ref(self))
        batch = []
        while len(batch) < self.batch_size:
            epoch, pos, ex = next(self._gen)
            if ex is None:  # epoch boundary
                self._epoch, self._offset = epoch + 1, 0
                continue
            self._account(ex)
            batch.append(ex)
            self._epoch, self._offset = epoch, pos + 1
        return stack_examples(batch)


class EvalPipeline(_Base):
    """One pass over the eval split per ``iter()``, in order, with the last batch padded by
    examples whose ``example_valid`` is False (image_id -1). Every process yields the same
    number of batches (``num_batches``), as a multi-host evaluation step needs."""

    def __init__(
        self,
        kind,
        config,
        split=None,
        process_index=None,
        process_count=None,
        source=None,
        batch_size=None,
        options=None,
    ):
        super().__init__(kind, config, split, False, process_index, process_count, source, batch_size, options)
        self._fn = self._example_fn(train=False)
        n = self.source.num_records(self.split) if self._selected is None else len(self._selected)
        self.num_examples = n
        self.num_batches = max(1, math.ceil(math.ceil(n / self.process_count) / self.batch_size))

    def __iter__(self):
        template = None
        batch, produced = [], 0
        for _, ex in self._examples(0, 0, self._fn, False):
            self._account(ex)
            template = template or ex
            batch.append(ex)
            if len(batch) == self.batch_size:
                yield stack_examples(batch)
                produced += 1
                batch = []
        if template is None:
            raise DataError(
                f"eval split {self.split!r} of {self.source.info.name!r} gave no usable "
                f"example on process {self.process_index}"
            )
        while produced < self.num_batches:
            while len(batch) < self.batch_size:
                batch.append(padding_like(template))
            yield stack_examples(batch)
            produced += 1
            batch = []
