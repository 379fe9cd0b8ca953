"""The task interface: what the shared trainer, `evaluate`, `predict`, `resources` and the config
need to know about one kind of model. A task is selected by `config.model.type`
(frozen_det.tasks: the one registry).

The loop, checkpoints, sharding, resumption and entry points know no task; a new kind of model
(a classifier, a pre-training pretext) is one new module subclassing `Task` and one line in the
registry. The interface:

    Task.complete_model(section)                 # its `config.model` schema (class method)
    Task.data                                    # its data kind: a frozen_det.data subpackage
    task = get_task(config)                      # config: complete (frozen_det.config)
    task.validate(pipeline.info)                 # data-dependent config checks, before compiling
    task.train_pipeline() / task.eval_pipeline() # seeded, resumable fixed-shape numpy batches
    model = task.build_model(train_pipeline)     # a flax module (train data: class statistics)
    task.model_inputs(train)                     # the batch keys that reach the model
    task.example_batch(batch_size, train)        # numpy batch of the pipeline's shapes (init, costs)
    task.frozen_patterns()                       # path rules of the frozen parameters
    task.loss_fn(model)                          # (params, batch_stats, batch, rng) -> (loss, (metrics, stats))
    task.evaluate(model, variables, pipeline, to_device, **options) -> dict   # JSON-able metrics
    task.predict(model, variables, images) -> list[dict]                      # records (+ drawings)

Models of every task follow one calling convention: `model.apply(variables, batch, train=True,
rngs=..., mutable=["batch_stats"])` returns `((losses, metrics), updates)` with the objective in
`losses["total"]`; `train=False` returns the task's predictions. With that convention the loss
function below serves every task.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, Callable

import jax

from frozen_det.models.backbones import backbone_frozen_patterns
from frozen_det.schema import ConfigDict

# loss_fn(params, batch_stats, batch, rng) -> (loss, (metrics dict, new batch_stats))
LossFn = Callable[[Any, Any, Any, jax.Array], tuple[jax.Array, tuple[dict, Any]]]


class Task:
    """Base class: the parts every task shares. Subclasses set `name`, `data` and
    `complete_model`, and fill in the rest."""

    name: str = ""
    # The data kind the task reads: a frozen_det.data subpackage with `config` (its schema:
    # complete / resolve) and `build_train_pipeline` / `build_eval_pipeline`.
    data: ModuleType
    # Keyword options of `evaluate` beyond the common ones (entry points check them by name).
    evaluate_options: tuple[str, ...] = ()
    # The headline metric of the task's evaluation, for logs and progress lines.
    headline_metrics: tuple[str, ...] = ()
    # Whether the model's train call takes `backbone_features` (the heads' own cost without the
    # backbone, frozen_det.resources).
    heads_take_backbone_features: bool = True
    # The batch key of the images the backbone reads (frozen_det.resources measures it alone).
    backbone_input: str = "image"

    def __init__(self, config):
        self.config = config

    # ------------------------------------------------------------------ config

    @classmethod
    def complete_model(cls, section) -> ConfigDict:
        """The full, validated `config.model` of this task from a partial one (its schema)."""
        raise NotImplementedError

    @classmethod
    def complete_data(cls, section) -> ConfigDict:
        """The full, validated `config.data` of this task's data kind."""
        return cls.data.config.complete(section)

    def data_config(self) -> ConfigDict:
        """The complete data section a pipeline runs on (batch size and location resolved)."""
        return self.data.config.resolve(self.config)

    # ------------------------------------------------------------------ data

    def train_pipeline(self, **kwargs):
        return self.data.build_train_pipeline(self.config, **kwargs)

    def eval_pipeline(self, **kwargs):
        return self.data.build_eval_pipeline(self.config, **kwargs)

    def validate(self, data_info) -> None:
        """Checks of the config against the data (class counts, canvas); fail naming the field."""

    # ------------------------------------------------------------------ model

    def build_model(self, train_pipeline=None):
        raise NotImplementedError

    def model_inputs(self, train: bool) -> tuple[str, ...]:
        raise NotImplementedError

    def model_batch(self, batch: dict, train: bool) -> dict:
        """The part of a pipeline batch the model reads."""
        return {k: batch[k] for k in self.model_inputs(train) if k in batch}

    def example_batch(self, batch_size: int, train: bool = True) -> dict:
        """Numpy arrays with the pipeline's shapes and dtypes, contents that every code path
        traces through (initialisation, cost analysis)."""
        raise NotImplementedError

    @classmethod
    def backbone_section(cls, model: ConfigDict) -> ConfigDict | None:
        """The part of a `config.model` the model's backbone is built from (None: no backbone, so
        no pretrained weights and nothing for the freeze switch)."""
        return model.get("backbone")

    def backbone_config(self) -> ConfigDict | None:
        return self.backbone_section(self.config.model)

    def frozen_patterns(self) -> list[str]:
        """Path regexes of parameters the freeze switch freezes (the backbone sits at `backbone/`)."""
        backbone = self.backbone_config()
        return [] if backbone is None else backbone_frozen_patterns(backbone, prefix="backbone/")

    def init_rngs(self, rng: jax.Array) -> dict:
        return {"params": rng, "sampling": rng, "dropout": rng}

    def loss_fn(self, model, **model_kwargs) -> LossFn:
        """The training objective. `train.freeze_batch_stats`: the restored BN statistics are
        kept (returned unchanged), e.g. in the LVIS second stage where only the classifier may
        change. `model_kwargs` go to the model's train call (e.g. `backbone_features`)."""
        keep_stats = bool(self.config.train.freeze_batch_stats)

        def loss_fn(params, batch_stats, batch, rng):
            sampling, dropout = jax.random.split(rng)
            (losses, metrics), updates = model.apply(
                {"params": params, "batch_stats": batch_stats},
                batch,
                train=True,
                rngs={"sampling": sampling, "dropout": dropout},
                mutable=["batch_stats"],
                **model_kwargs,
            )
            new_stats = batch_stats if keep_stats else updates.get("batch_stats", batch_stats)
            return losses["total"], ({**losses, **metrics}, new_stats)

        return loss_fn

    # ------------------------------------------------------------------ evaluation and prediction

    def evaluate(self, model, variables, eval_pipeline, to_device: Callable | None = None, **options) -> dict:
        """JSON-able metrics of one pass over `eval_pipeline`; `options` are the task's
        `evaluate_options`."""
        raise NotImplementedError

    def summary(self, result: dict) -> str:
        """One log line of an evaluation result."""
        return "  ".join(f"{k} {result[k]:.4f}" for k in self.headline_metrics if k in result)

    def predict(self, model, variables, images: list) -> list[dict]:
        """Predictions for `(name, PIL image)` pairs: JSON-able records; a record may carry a
        drawn PIL image under "drawing" (written next to its JSON by `frozen_det.predict`)."""
        raise NotImplementedError
