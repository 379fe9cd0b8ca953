"""`config.train`: the schema (defaults in one place), and checks of the section alone.

Defaults are the reference's detection recipe (docs/reference.md §2.13): SGD momentum 0.9,
linear warm-up then piecewise-constant x0.1 drops, L2 on kernels only, batch 64. Checks that
need the devices (batch sizes divisible by the device count) or the parameters (rules that
match nothing) run in frozen_det.config.check_devices and the state's construction.
"""

from __future__ import annotations

from frozen_det.schema import ConfigDict, choice, merge

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("warmup_piecewise", "warmup_cosine", "constant")
SHARDING_MODES = ("fsdp", "replicate")


def defaults() -> ConfigDict:
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
            grad_clip_norm=0.0,  # 0: off
            seed=0,
            log_every=50,
            checkpoint_every=1000,
            keep_checkpoints=3,
            eval_every=0,  # 0: evaluate only at the end
            eval_at_end=True,
            # Transfer: another run's workdir (any task) whose parameters and BN statistics start
            # this run where path and shape match (e.g. the LVIS second stage from the first, a
            # classifier's backbone into a detector); init_exclude: path regexes kept fresh.
            init_from="",
            init_exclude=(),
            trainable_only=(),  # path regexes (frozen_det.tree_paths): train only these
            freeze_batch_stats=False,  # keep every BatchNorm statistic as restored (second stage)
            sharding_rules=(),  # ((regex, "fsdp" | "replicate"), ...) over train-state paths
            fsdp_min_size=0,  # >0: FSDP-shard every state leaf with at least this many elements
            distributed=False,  # call jax.distributed.initialize() (multi-host)
        )
    )


def complete(given) -> ConfigDict:
    t = merge(defaults(), given or {}, "config.train")
    validate(t)
    return t


def validate(t: ConfigDict) -> None:
    def bad(field, message):
        raise ValueError(f"config.train.{field}={t[field] if field in t else ''!r}: {message}")

    choice(t.optimizer.name, OPTIMIZERS, "train.optimizer.name")
    choice(t.schedule.name, SCHEDULES, "train.schedule.name")
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
    for rule in t.sharding_rules:
        if len(rule) != 2 or rule[1] not in SHARDING_MODES:
            raise ValueError(
                f"config.train.sharding_rules: {rule!r} is not a (regex, mode) pair with mode in {SHARDING_MODES}."
            )
