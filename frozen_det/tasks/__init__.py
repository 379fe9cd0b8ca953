"""Tasks by `config.model.type`: the one registry. A task class (frozen_det.tasks.base.Task)
declares its `config.model` schema and its data kind and holds the code that trains, evaluates and
predicts with its model; nothing outside this package branches on `model.type`.

A new task is a module and a line in `TASKS`. A task that lives outside the package (a user's own
module, a test's toy task) is named by its import path instead: `model.type="my_pkg.my_module:MyTask"`.
"""

from __future__ import annotations

import importlib

from frozen_det.tasks.base import Task

# model.type -> "module:class".
TASKS = {
    "two_stage": "frozen_det.tasks.two_stage:TwoStageTask",
    "retinanet": "frozen_det.tasks.retinanet:RetinaNetTask",
    "classifier": "frozen_det.tasks.classification:ClassificationTask",
    "predet": "frozen_det.tasks.predet:PreDetTask",
}


def task_class(model_type: str) -> type[Task]:
    """The Task subclass of `model.type`: a name in `TASKS` or a "module:Class" import path."""
    path = TASKS.get(model_type, model_type)
    module, _, name = path.partition(":")
    if not name:
        raise ValueError(
            f"config.model.type={model_type!r}: choose one of {tuple(TASKS)}, or name your own task "
            "class as 'package.module:TaskClass'."
        )
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"config.model.type={model_type!r}: cannot import the task class ({e}).") from None
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise ValueError(f"config.model.type={model_type!r}: {path} is not a frozen_det.tasks.base.Task subclass.")
    return cls


def get_task(config) -> Task:
    """The task of a complete config (frozen_det.config.complete / resolve)."""
    return task_class(config.model.type)(config)


__all__ = ["TASKS", "Task", "get_task", "task_class"]
