"""An experiment config as a whole: every section completed from its schema, and the checks
that need more than one section or the devices, run before anything compiles.

Sections: `data` (frozen_det.data.detection.config; classifiers: frozen_det.data.classification.config;
PreDet: frozen_det.data.two_view.config),
`model` (frozen_det.models.config; its `type` picks
the schema and the task), `train` (frozen_det.training.config), and `classify` (the ImageNet
`frozen_det.classify` command). Config files return `complete(config)`, so the printed config
shows every field and each can be overridden on the command line; entry points call
`resolve(config)` again after the overrides.
"""

from __future__ import annotations

from frozen_det.schema import ConfigDict, fields, merge


def _classify_defaults() -> ConfigDict:
    # Eval preprocessing of `frozen_det.classify`: centre crop of `crop_fraction` of the shorter
    # side resized to `size` (TF's EfficientNet eval crop: 224 / 256), top-k printed.
    return ConfigDict(dict(size=224, crop_fraction=224 / 256, top_k=5))


# The data schema each model type reads (default: detection data).
DATA_SCHEMA_OF_MODEL = {"classifier": "classification", "predet": "two_view"}


def _complete_section(name: str, given, model_type: str) -> ConfigDict:
    if name == "data" and DATA_SCHEMA_OF_MODEL.get(model_type) == "classification":
        from frozen_det.data.classification.config import complete
    elif name == "data" and DATA_SCHEMA_OF_MODEL.get(model_type) == "two_view":
        from frozen_det.data.two_view.config import complete
    elif name == "data":
        from frozen_det.data.detection.config import complete
    elif name == "model":
        from frozen_det.models.config import complete
    elif name == "train":
        from frozen_det.training.config import complete
    else:
        return merge(_classify_defaults(), given, "config.classify")
    return complete(given)


SECTIONS = ("data", "model", "train", "classify")


def complete(config) -> ConfigDict:
    """Every section of `config` filled from its schema and validated (unknown sections and
    fields are errors naming them). Idempotent."""
    out = ConfigDict()
    model_type = dict(fields(config["model"])).get("type", "two_stage") if "model" in config else "two_stage"
    for name, section in config.items():
        if name not in SECTIONS:
            raise ValueError(f"config.{name}: unknown section; a config has {SECTIONS}.")
        out[name] = _complete_section(name, section, model_type)
    return out


def check_devices(config, num_devices: int, num_processes: int = 1) -> None:
    """Global batch sizes must split evenly over the devices and the hosts (else the first train
    step, or the first evaluation after hours of training, fails inside jit)."""
    batches = []
    if "train" in config:
        batches.append(("train.batch_size", int(config.train.batch_size)))
    if "data" in config:
        batches.append(("data.eval_batch_size", int(config.data.eval_batch_size)))
        if config.data.batch_size:
            batches.append(("data.batch_size", int(config.data.batch_size)))
    for field, size in batches:
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
        import jax

        num_devices, num_processes = jax.device_count(), jax.process_count()
    check_devices(out, num_devices, num_processes or 1)
    return out
