"""Tasks by `config.model.type`: the one place that maps a model type to the code that trains,
evaluates and predicts with it (frozen_det.tasks.base.Task). A new task is a module and a line
here."""

from __future__ import annotations

import importlib

from frozen_det.tasks.base import Task

# model.type -> "module:class"; the schema of each type's `config.model` is in
# frozen_det.models.config.SCHEMAS.
TASKS = {
    "two_stage": "frozen_det.tasks.detection:DetectionTask",
    "classifier": "frozen_det.tasks.classification:ClassificationTask",
    "predet": "frozen_det.tasks.predet:PreDetTask",
}


def get_task(config) -> Task:
    """The task of a complete config (frozen_det.config.complete / resolve)."""
    model_type = config.model.type
    if model_type not in TASKS:
        raise ValueError(f"config.model.type={model_type!r}: choose one of {tuple(TASKS)}.")
    module, name = TASKS[model_type].split(":")
    return getattr(importlib.import_module(module), name)(config)


__all__ = ["TASKS", "Task", "get_task"]
