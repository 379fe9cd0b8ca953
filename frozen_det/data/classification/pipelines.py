"""The classification pipelines: the shared iterators of frozen_det.data.pipeline with the
classification sources and transforms (batch contract: frozen_det.data.classification)."""

from __future__ import annotations

from frozen_det.data.classification import config as config_lib
from frozen_det.data.classification import subsets
from frozen_det.data.classification.sources import ClassInfo, build_source
from frozen_det.data.classification.transforms import make_eval_fn, make_train_fn
from frozen_det.data.pipeline import EvalPipeline, Kind, TrainPipeline


def _select(cfg, source, split, train):
    return subsets.select(source.labels(split), cfg.subset, subsets.source_label_set(cfg, source).kept, train)


def _info(cfg, source) -> ClassInfo:
    return ClassInfo(source.info.name, list(subsets.source_label_set(cfg, source).names))


CLASSIFICATION = Kind(
    name="classification",
    resolve=config_lib.resolve,
    build_source=build_source,
    source_fields=("source", "name", "path", "class_names", "detection", "crop_context", "min_crop_size"),
    make_train_fn=make_train_fn,
    make_eval_fn=make_eval_fn,
    select=_select,
    info=_info,
)


def build_train_pipeline(config, **kw) -> TrainPipeline:
    """Train iterator from a full config or a classification data section (keywords as
    frozen_det.data.detection.build_train_pipeline)."""
    return TrainPipeline(CLASSIFICATION, config, **kw)


def build_eval_pipeline(config, **kw) -> EvalPipeline:
    return EvalPipeline(CLASSIFICATION, config, **kw)
