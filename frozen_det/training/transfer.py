"""Transfer between runs: `train.init_from` (another run's workdir, any task) restores every
leaf of this model that the other run has with the same path and shape, except those matching a
`train.init_exclude` regex; the rest keeps its fresh initialisation. What was restored, skipped
(excluded, or a shape that differs, e.g. a classifier with other classes) and freshly
initialised is logged and returned as a report.

The other run's variables come from `frozen_det.training.run.Run` (its frozen parameters rebuilt
from its own saved config, its checkpoint restored on top), so a classifier's backbone moves into
a detector (`backbone/...` in both), a detector's backbone into a classifier, a PreDet run into a
detector, and a classifier into another classifier. This module only lays them over a state.
"""

from __future__ import annotations

import logging

from frozen_det.training.state import TrainState
from frozen_det.tree_paths import flatten, map_paths, overlay

log = logging.getLogger(__name__)


def summarise(report: dict) -> str:
    def sample(key):
        items = report[key]
        return f"{len(items)}" + (f" (e.g. {', '.join(items[:3])})" if items else "")

    return (
        f"restored {sample('restored')}; excluded {sample('excluded')}; shape differs "
        f"{sample('shape_differs')}; freshly initialised, not in the source {sample('not_in_source')}; "
        f"unused leaves of the source {sample('unused_from_source')}"
    )


def overlay_run_variables(state: TrainState, theirs: dict, exclude, source: dict) -> tuple[TrainState, dict]:
    """`state` with `theirs` ({"params", "batch_stats"} of another run, numpy) laid over it where
    path and shape match and no `exclude` regex matches; step and optimizer state stay. `source`
    describes the other run (source, source_step, source_model_type) for the report and errors."""
    ours = {"params": state.all_params(), "batch_stats": state.batch_stats}
    restored, report = overlay(ours, theirs, tuple(exclude))
    if not report["restored"]:
        raise ValueError(
            f"config.train.init_from={source['source']}: no leaf of that run ({source['source_model_type']}) "
            f"matches this model by path and shape; {summarise(report)}"
        )
    report = dict(report, **source)
    log.info("initialised from %s step %d: %s", source["source"], source["source_step"], summarise(report))
    params = flatten(restored["params"])
    return state.replace(
        params=map_paths(state.params, lambda p, _: params[p]),
        frozen_params=map_paths(state.frozen_params, lambda p, _: params[p]),
        batch_stats=restored["batch_stats"],
    ), report
