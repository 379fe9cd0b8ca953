"""Detection pipelines: the engine's seeded, sharded, resumable iterators (frozen_det.data.pipeline)
with the detection sources, the train / eval example functions (decode, LSJ, Copy-Paste, pad) and
k-shot selection. Batch contract: frozen_det.data.detection."""

from __future__ import annotations

from frozen_det.data.detection import config as config_lib
from frozen_det.data.detection.example import make_eval_fn, make_train_fn
from frozen_det.data.detection.kshot import kshot_select
from frozen_det.data.detection.sources import build_source
from frozen_det.data.pipeline import EvalPipeline, Kind, TrainPipeline
from frozen_det.data.source import DataError, log

_SOURCE_FIELDS = (
    "source",
    "name",
    "path",
    "coco_files",
    "class_names",
    "voc_difficult",
    "voc_size_mismatch",
    "synthetic",
    "train_split",
    "eval_split",
)


def _check_masks(cfg, source):
    if cfg.with_masks and not source.info.has_masks:
        raise DataError(
            f"config.data.with_masks=True but source {source.info.name!r} has no instance "
            "masks: set data.with_masks=False (and augment.copy_paste=False) or use "
            "a source with masks (synthetic, coco_folder, tfds lvis)"
        )


def _train_records(cfg, source, split, train):
    """The records a pipeline reads (None: every one). A train split of a local folder without a
    single (non-crowd) object stops here, before anything compiles: it would train on nothing and
    evaluate to AP -1; classes without one are named in a warning. Training sets of k images per
    class (`data.kshot`: PreDet, Ramanathan et al. 2021; DAP, Zhong et al. 2021) are selected here."""
    if not train:
        return None
    if source.random_access:
        present = set().union(*source.record_classes(split))
        names = source.info.class_names[1:]
        if not present:
            raise DataError(
                f"train split {split!r} of {source.info.name!r} has no object of any class {names} in its "
                f"{source.num_records(split)} images (skipped: {source.skipped_report(split) or 'nothing'}): it would "
                "train on nothing; check data.class_names and the annotations"
            )
        missing = [name for k, name in enumerate(names, start=1) if k not in present]
        if missing:
            log.warning(
                "train split %r of %r: no object of %d classes: %s%s",
                split,
                source.info.name,
                len(missing),
                missing[:20],
                " ..." if len(missing) > 20 else "",
            )
    if not cfg.kshot:
        return None
    selected = kshot_select(source.record_classes(split), cfg.kshot, cfg.kshot_seed)
    log.info("k-shot: %d images of split %r keep >= %d images per class", len(selected), split, cfg.kshot)
    return selected


DETECTION = Kind(
    name="detection",
    resolve=config_lib.resolve,
    build_source=build_source,
    source_fields=_SOURCE_FIELDS,
    make_train_fn=make_train_fn,
    make_eval_fn=make_eval_fn,
    counters=(("num_bad_boxes", "bad_boxes"), ("num_dropped_instances", "dropped_instances")),
    check=_check_masks,
    second_stream=lambda cfg: bool(cfg.augment.copy_paste),
    select=_train_records,
)


def build_train_pipeline(config, **kw) -> TrainPipeline:
    """Train iterator from a full config (``config.data`` + ``config.train.batch_size``) or a
    data config. Keywords: split, process_index, process_count (default: JAX's), source,
    batch_size (global; default data.batch_size or train.batch_size)."""
    return TrainPipeline(DETECTION, config, **kw)


def build_eval_pipeline(config, **kw) -> EvalPipeline:
    return EvalPipeline(DETECTION, config, **kw)
