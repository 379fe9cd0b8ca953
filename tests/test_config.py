"""Config schemas (frozen_det.config): every config file returns a complete config whose every
field can be overridden on the command line (ml_collections config_flags, as the entry points
parse them), unknown fields fail naming themselves, and checks that need the devices or the
parameters stop a run before anything compiles."""

import os
import subprocess
import sys

import jax
import ml_collections
import pytest
from absl import flags
from ml_collections import config_flags
from ml_collections.config_dict import FieldReference

from frozen_det import config as config_lib
from frozen_det import config_defaults as d

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_FILES = sorted(
    os.path.join(dirpath, f)
    for dirpath, _, files in os.walk(os.path.join(ROOT, "configs"))
    for f in files
    if f.endswith(".py") and f not in ("common.py", "__init__.py")
)


def _parse(path, *overrides):
    """The config as `python -m frozen_det.X --config PATH OVERRIDES...` sees it."""
    argv = ["prog", f"--config={path}", *overrides]
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True, sys_argv=argv)
    values(argv)
    return values.config


def _leaves(config, prefix="config"):
    for key, field in config._fields.items():
        value = config[key]
        if isinstance(value, ml_collections.ConfigDict):
            yield from _leaves(value, f"{prefix}.{key}")
        else:
            yield f"{prefix}.{key}", field, value


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: os.path.relpath(p, ROOT))
def test_every_field_of_every_config_file_can_be_overridden(path):
    config = _parse(path)
    assert config_lib.complete(config).to_dict() == config.to_dict()  # complete, and idempotent
    for name, field, value in _leaves(config):
        if name.startswith("config.data.coco_files"):
            continue  # a free-form mapping of split -> files
        assert not isinstance(value, list), f"{name} is a list: ml_collections cannot override it; use a tuple"
        assert value is not None or isinstance(field, FieldReference), (
            f"{name} is a bare None: ml_collections cannot override it; use schema.placeholder(type)"
        )


def test_overrides_of_tuples_placeholders_and_fields_a_file_never_mentions():
    path = os.path.join(ROOT, "configs", "bccd", "frozen.py")
    config = _parse(
        path,
        "--config.data.class_names=('cat',)",
        "--config.model.anchors.aspect_ratios=(1.0,)",
        "--config.model.backbone.bn_epsilon=0.001",
        "--config.data.kshot=5",
        "--config.model.backbone.freeze=2",
        "--config.model.backbone.adapters=film",
        "--config.train.schedule.boundaries=(300, 400)",
    )
    assert config.data.class_names == ("cat",) and config.model.anchors.aspect_ratios == (1.0,)
    assert config.model.backbone.bn_epsilon == 0.001 and config.data.kshot == 5
    assert config.model.backbone.freeze == "2" and config.train.schedule.boundaries == (300, 400)
    assert config.model.backbone.adapters == "film"
    config_lib.resolve(config, num_devices=1)


def test_the_inspect_command_takes_a_class_list_override(voc_folder, tmp_path):
    """The new user's first command on their own VOC folder, with their own class list."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "frozen_det.data.show",
            "--config",
            "configs/data/bccd.py",
            f"--config.data.path={voc_folder}",
            "--config.data.class_names=('cat',)",
            "--config.data.canvas=128",
            "--num",
            "1",
            "--output",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert '"cat"' in out.stdout and '"dog"' not in out.stdout, out.stdout


@pytest.mark.parametrize("section,field", [("model", "num_clases"), ("train", "batchsize"), ("data", "canvs")])
def test_unknown_fields_fail_naming_the_field(section, field):
    config = d.ConfigDict({"model": d.tiny_two_stage_model(), "train": d.train(), "data": {"source": "synthetic"}})
    config[section][field] = 1
    with pytest.raises(ValueError, match=f"config.{section}.{field}: unknown field"):
        config_lib.complete(config)
    with pytest.raises(ValueError, match="config.tasks: unknown section"):
        config_lib.complete(d.ConfigDict({"tasks": {}}))


def _tiny(**data):
    config = d.ConfigDict(
        {
            "model": d.tiny_two_stage_model(mask=True),
            "train": d.train(batch_size=8),
            "data": dict(source="synthetic", canvas=64, max_instances=4, with_masks=True, mask_size=16, **data),
        }
    )
    return config_lib.complete(config)


def test_batches_must_split_over_the_devices_and_hosts():
    config_lib.resolve(_tiny(eval_batch_size=8), num_devices=8)
    with pytest.raises(ValueError, match=r"config.data.eval_batch_size=3 is not divisible by the 8 devices"):
        config_lib.resolve(_tiny(eval_batch_size=3), num_devices=8)
    with pytest.raises(ValueError, match=r"config.train.batch_size=8 is not divisible by the 3 processes"):
        config_lib.resolve(_tiny(eval_batch_size=12), num_devices=4, num_processes=3)


def test_model_checks_need_only_the_model_section():
    config = _tiny()
    config.model.mask.output_size = 30
    with pytest.raises(ValueError, match=r"config.model.mask.output_size=30.*2 \* model.mask.crop_size = 28"):
        config_lib.complete(config)
    config = _tiny()
    config.model.box_head.class_loss = "focal"
    with pytest.raises(ValueError, match="config.model.box_head.class_loss='focal'"):
        config_lib.complete(config)


def test_trainable_only_patterns_must_select_parameters():
    from frozen_det.tasks import get_task
    from frozen_det.training.state import trainable_mask

    config = _tiny()
    task = get_task(config)
    model = task.build_model()
    batch = task.model_batch(task.example_batch(1), train=True)
    params = jax.eval_shape(lambda b: model.init(task.init_rngs(jax.random.key(0)), b, train=True), batch)["params"]
    config.train.trainable_only = (r"/class_logits/",)
    assert any(jax.tree.leaves(trainable_mask(config, task, params)))
    config.train.trainable_only = (r"/class_logits/", r"^box_head/cls_score/")
    with pytest.raises(
        ValueError, match=r"config.train.trainable_only: \['\^box_head/cls_score/'\] match no parameter"
    ):
        trainable_mask(config, task, params)
