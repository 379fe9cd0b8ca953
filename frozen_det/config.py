"""An experiment config as a whole: every section completed from its schema, and the checks
that need more than one section or the devices, run before anything compiles.

Sections: `model` (its `type` names the task, frozen_det.tasks, which declares the model schema
and the data kind), `data` (the task's data kind: frozen_det.data.detection.config,
frozen_det.data.classification.config, frozen_det.data.two_view.config) and `train` (the shared
trainer's schema, below). Config files return `complete(config)`, so the printed config shows
every field and each can be overridden on the command line; entry points call `resolve(config)`
again after the overrides.
"""

from __future__ import annotations

import re

import jax

from frozen_det import strategies
from frozen_det.checkpoints.pretrained import preprocessing_of
from frozen_det.data.sections import fill_normalisation
from frozen_det.schema import ConfigDict, choice, fields, merge
from frozen_det.tasks import task_class

SECTIONS = ("model", "data", "train")
DEFAULT_MODEL_TYPE = "two_stage"


OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("warmup_piecewise", "warmup_cosine", "constant")
SHARDING_MODES = ("fsdp", "replicate")
NONFINITE = ("stop", "skip")


def train_defaults() -> ConfigDict:
    """`config.train`: the schema of the shared trainer (defaults: the reference's detection recipe,
    docs/reference.md §2.13: SGD momentum 0.9, linear warm-up then x0.1 drops, L2 on kernels only)."""
    return ConfigDict(
        dict(
            batch_size=64,  # global, over every device and host
            total_steps=133_056,  # the paper's 72 epochs of COCO at batch 64
            optimizer=ConfigDict(dict(name="sgd", momentum=0.9, nesterov=False, b1=0.9, b2=0.999)),
            schedule=ConfigDict(
                dict(
                    name="warmup_piecewise",  # or "warmup_cosine" (to 0 at total_steps), "constant"
                    base_lr=0.16,
                    warmup_steps=500,
                    warmup_lr=0.0067,
                    boundaries=(88_704, 125_664),  # warmup_piecewise: absolute steps of the drops ...
                    multipliers=(),  # ... and the factor from each on; () = 0.1, 0.01, ... (x0.1 per drop)
                )
            ),
            weight_decay=4e-5,  # L2 on kernels (wd * w added to the gradient)
            # ((regex, multiplier), ...) over trainable parameter paths, first match: that
            # parameter's learning rate times the multiplier (e.g. ((r"/mask_head/", 4.0),), the
            # PreDet paper's COCO fine-tuning, sec. 4.2; ((r"^backbone/", 0.1),) for a slower backbone).
            lr_multipliers=(),
            grad_clip_norm=0.0,  # 0: off
            seed=0,
            log_every=50,
            checkpoint_every=1000,
            keep_checkpoints=3,  # >= 2: a damaged latest checkpoint falls back to the one before
            # A step whose loss, gradients or update are not finite never changes the weights;
            # "stop": the run stops there, naming the step and the last good checkpoint; "skip":
            # the update is skipped, counted (nonfinite_steps in the metrics) and training goes on.
            nonfinite="stop",
            eval_every=0,  # 0: evaluate only at the end
            eval_at_end=True,
            # Transfer: another run's workdir (any task) whose parameters and BN statistics start
            # this run where path and shape match (e.g. the LVIS second stage from the first, a
            # classifier's backbone into a detector); init_exclude: path regexes kept fresh.
            init_from="",
            init_exclude=(),
            # Another run whose backbone replaces, after init_from, the backbone this run starts
            # with: the heads of one run on the backbone of another (e.g. a classifier's backbone
            # under a pre-trained detector's FPN and heads).
            backbone_from="",
            # The transfer strategy as one value, "STRATEGY[,from=RUN]" (frozen_det/strategies.py):
            # scratch | finetune | frozen | frozen@K | adapters | film; "" leaves the backbone's
            # freeze / adapters / init_checkpoint and init_from as given.
            transfer="",
            trainable_only=(),  # path regexes (frozen_det.tree_paths): train only these
            freeze_batch_stats=False,  # keep every BatchNorm statistic as restored (second stage)
            sharding_rules=(),  # ((regex, "fsdp" | "replicate"), ...) over train-state paths
            fsdp_min_size=0,  # >0: FSDP-shard every state leaf with at least this many elements
            distributed=False,  # call jax.distributed.initialize() (multi-host)
        )
    )


def complete_train(given) -> ConfigDict:
    t = merge(train_defaults(), given or {}, "config.train")
    validate_train(t)
    return t


def validate_train(t: ConfigDict) -> None:
    def bad(field, message):
        raise ValueError(f"config.train.{field}={t[field] if field in t else ''!r}: {message}")

    choice(t.optimizer.name, OPTIMIZERS, "train.optimizer.name")
    choice(t.schedule.name, SCHEDULES, "train.schedule.name")
    choice(t.nonfinite, NONFINITE, "train.nonfinite")
    if t.batch_size <= 0:
        bad("batch_size", "must be positive")
    if t.total_steps < 0:
        bad("total_steps", "must be >= 0")
    s = t.schedule
    if s.name == "warmup_piecewise" and s.multipliers and len(s.boundaries) != len(s.multipliers):
        raise ValueError(
            f"config.train.schedule.boundaries {t.schedule.boundaries} and .multipliers "
            f"{t.schedule.multipliers} must have the same length (one factor per drop)."
        )
    for field in ("log_every", "checkpoint_every", "keep_checkpoints"):
        if t[field] <= 0:
            bad(field, "must be positive")
    if t.keep_checkpoints < 2:
        bad("keep_checkpoints", "keep at least 2, so that a damaged latest checkpoint can fall back to the one before")
    for rule in t.lr_multipliers:
        if len(rule) != 2 or not isinstance(rule[0], str) or not isinstance(rule[1], (int, float)) or rule[1] < 0:
            raise ValueError(
                f"config.train.lr_multipliers: {rule!r} is not a (regex, multiplier >= 0) pair, "
                'e.g. (("/mask_head/", 4.0),).'
            )
        try:
            re.compile(rule[0])
        except re.error as e:
            raise ValueError(f"config.train.lr_multipliers: {rule[0]!r} is not a regular expression ({e})") from None
    for rule in t.sharding_rules:
        if len(rule) != 2 or rule[1] not in SHARDING_MODES:
            raise ValueError(
                f"config.train.sharding_rules: {rule!r} is not a (regex, mode) pair with mode in {SHARDING_MODES}."
            )


def complete(config) -> ConfigDict:
    """Every section (`SECTIONS`) filled from its schema, the given fields laid over the defaults
    and validated (unknown sections and fields are errors naming them). Idempotent."""
    unknown = [name for name in config.keys() if name not in SECTIONS]
    if unknown:
        raise ValueError(f"config.{unknown[0]}: unknown section; a config has {SECTIONS}.")
    model_type = (
        dict(fields(config["model"])).get("type", DEFAULT_MODEL_TYPE) if "model" in config else DEFAULT_MODEL_TYPE
    )
    task = task_class(model_type)
    out = ConfigDict()
    out.model = task.complete_model(config.get("model"))
    out.data = task.complete_data(config.get("data"))
    out.train = complete_train(config.get("train"))
    # The input normalisation the backbone's pretrained weights expect, unless the data says.
    backbone = task.backbone_section(out.model)
    strategies.apply(backbone, out.train)
    fill_normalisation(out.data, preprocessing_of(backbone.init_checkpoint) if backbone is not None else None)
    return out


def check_devices(config, num_devices: int, num_processes: int = 1) -> None:
    """Global batch sizes must be positive and split evenly over the devices and the hosts (else
    the first train step, or the first evaluation after hours of training, fails inside jit)."""
    batches = []
    if "train" in config:
        batches.append(("train.batch_size", int(config.train.batch_size)))
    if "data" in config:
        batches.append(("data.eval_batch_size", int(config.data.eval_batch_size)))
        if config.data.batch_size:
            batches.append(("data.batch_size", int(config.data.batch_size)))
    for field, size in batches:
        if size <= 0:
            raise ValueError(f"config.{field}={size}: must be positive (e.g. {max(num_devices, 8)}).")
        for count, what in ((num_devices, "devices"), (num_processes, "processes")):
            if size % count:
                raise ValueError(
                    f"config.{field}={size} is not divisible by the {count} {what}; use a "
                    f"multiple of {count} (e.g. {max(count, size // count * count)})."
                )


def resolve(config, num_devices: int | None = None, num_processes: int | None = None) -> ConfigDict:
    """`complete(config)` plus the cross-section and device checks; what entry points run on."""
    out = complete(config)
    if "data" in out and "train" in out and out.data.batch_size and out.data.batch_size != out.train.batch_size:
        raise ValueError(
            f"config.data.batch_size={out.data.batch_size} differs from config.train.batch_size="
            f"{out.train.batch_size}: leave data.batch_size at 0 (= the train batch)."
        )
    if num_devices is None:
        num_devices, num_processes = jax.device_count(), jax.process_count()
    check_devices(out, num_devices, num_processes or 1)
    return out
