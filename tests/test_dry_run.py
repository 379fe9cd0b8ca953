"""The paper-scale configs of every study (frozen_det.projects.paper_configs): the papers'
numbers are in them; each shrinks for a dry run (`python -m frozen_det.dry_run`); in the second
tier each reads fake data of its datasets' features, and each distinct program trains two steps
and evaluates on 8 simulated devices (XLA's host platform)."""

import json
import math
import os
import re
import subprocess
import sys

import pytest

from frozen_det.dry_run import shrink
from frozen_det.projects.paper_configs import DISTINCT_PROGRAMS, PAPER_CONFIGS
from frozen_det.projects.runner import repo_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALL = [spec for specs in PAPER_CONFIGS.values() for spec in specs]


@pytest.mark.parametrize("spec", ALL)
def test_every_paper_config_shrinks_for_a_dry_run(spec):
    config = repo_config(spec)
    small = shrink(config, devices=8)
    assert small.train.batch_size == 8 and small.train.total_steps == 2 and small.train.schedule.boundaries == ()
    assert small.model.backbone.init_checkpoint == "" and small.train.init_from == ""
    assert small.model.type == config.model.type and small.data.source == config.data.source
    if "canvas" in small.data:
        assert small.data.canvas == 128 and all(s <= 128 for s in small.data.augment.short_sides)
    assert DISTINCT_PROGRAMS == tuple(s for s in DISTINCT_PROGRAMS if s in ALL)


def test_dap_configs_have_the_papers_protocol():
    """Zhong et al. 2021 sec. 4.1."""
    pretrain = repo_config("frozen_det/projects/dap/paper.py:pretrain")
    assert (pretrain.train.batch_size, pretrain.train.total_steps) == (32, 40_038)
    assert pretrain.data.augment.short_sides == (96, 160, 320, 640) and pretrain.data.source == "tfds_pseudo_boxes"
    assert repo_config("frozen_det/projects/dap/paper.py:pretrain,freeze").model.backbone.freeze == "all"
    for step in ("voc07", "voc0712", "coco"):
        c = repo_config(f"frozen_det/projects/dap/paper.py:{step}")
        # fixed BatchNorm, the first conv block frozen, weight decay 1e-4, batch 16
        assert (c.model.backbone.bn_mode, c.model.backbone.freeze, c.train.weight_decay) == ("frozen_stats", "0", 1e-4)
        assert c.train.batch_size == 16
    voc07 = repo_config("frozen_det/projects/dap/paper.py:voc07")
    assert voc07.train.schedule.base_lr == 0.01 and abs(voc07.train.total_steps - 4_500) < 200
    assert voc07.data.augment.short_sides == (640,) and voc07.data.eval_split == "test"
    assert repo_config("frozen_det/projects/dap/paper.py:voc0712").data.name == "voc/2007+voc/2012"
    coco = repo_config("frozen_det/projects/dap/paper.py:coco")
    assert (coco.train.total_steps, coco.train.schedule.boundaries, coco.train.schedule.base_lr) == (
        90_000,
        (60_000, 80_000),
        0.02,
    )


def test_predet_configs_have_the_papers_protocol():
    """Ramanathan et al. 2021 sec. 4.1-4.2; the mask head's lr multiplier names real parameters."""
    pretrain = repo_config("frozen_det/projects/predet/paper.py:pretrain")
    p = pretrain.model.predet
    assert (p.num_queries, p.num_negatives, p.multilabel, p.crpn, p.croi, p.croi_regression) == (
        16,
        512,
        True,
        True,
        True,
        True,
    )
    assert (pretrain.train.batch_size, pretrain.train.total_steps, pretrain.train.schedule.base_lr) == (
        1024,
        540_000,
        0.2,
    )
    assert pretrain.train.schedule.boundaries == (108_000, 216_000, 324_000, 432_000)  # four uniform steps
    assert pretrain.data.image_size == 480 and pretrain.data.queries == "proposals" and pretrain.data.labels
    assert pretrain.model.backbone.init_checkpoint == ""  # from scratch: our reading
    cls = repo_config("frozen_det/projects/predet/paper.py:cls").model.predet
    assert (cls.multilabel, cls.crpn, cls.croi, cls.croi_regression) == (True, False, False, False)
    coco = repo_config("frozen_det/projects/predet/paper.py:coco")
    assert coco.model.mask.enabled and coco.data.with_masks and coco.data.source == "coco_folder"
    assert coco.data.augment.short_sides == (640, 672, 704, 736, 768, 800) and coco.model.backbone.freeze == "none"
    ((pattern, factor),) = coco.train.lr_multipliers
    from frozen_det.resources import parameter_counts
    from frozen_det.tree_paths import leaf_paths

    paths = leaf_paths(parameter_counts(shrink(coco, devices=1))[2]["params"])  # shapes only
    assert factor == 4.0 and any(re.search(pattern, p) for p in paths) and not all(re.search(pattern, p) for p in paths)
    voc = repo_config("frozen_det/projects/predet/paper.py:voc0712")
    assert (voc.train.total_steps, voc.train.schedule.boundaries, voc.train.schedule.base_lr) == (
        24_000,
        (18_000, 22_000),
        0.02,
    )


@pytest.mark.slow
def test_every_paper_config_reads_fake_data_of_its_datasets(tmp_path):
    from frozen_det.data.mock_tfds import mock_tfds
    from frozen_det.dry_run import fake_offline_files
    from frozen_det.tasks import get_task

    for k, spec in enumerate(ALL):
        config = shrink(repo_config(spec), devices=2)
        os.makedirs(tmp_path / str(k))
        with mock_tfds():
            fake_offline_files(config, str(tmp_path / str(k)))
            task = get_task(config)
            pipeline = task.train_pipeline()
            task.validate(pipeline.info)
            batch = next(pipeline)
        images = batch.get("image", batch.get("view1"))
        assert images.shape[0] == 2, (spec, {k: v.shape for k, v in batch.items()})


@pytest.mark.slow
@pytest.mark.parametrize("spec", DISTINCT_PROGRAMS)
def test_paper_config_dry_run_on_8_devices(spec, tmp_path):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
    run = subprocess.run(
        [sys.executable, "-m", "frozen_det.dry_run", f"--config={ROOT}/{spec}", f"--workdir={tmp_path}"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["devices"] == 8 and report["train"]["step"] == 2
    assert math.isfinite(report["train"]["loss"]) and report["train"]["nonfinite_steps"] == 0
    assert report["eval"]["step"] == 2 and os.path.isfile(report["eval"]["path"])


@pytest.mark.slow
def test_dry_run_refuses_a_folder_with_files(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    run = subprocess.run(
        [sys.executable, "-m", "frozen_det.dry_run", f"--config={ROOT}/{ALL[0]}", f"--workdir={tmp_path}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 2 and "not empty" in run.stderr and (tmp_path / "notes.txt").read_text() == "mine"
