"""The LVIS recipe end to end on the generated long-tailed dataset (configs/lvis/long_tail.py,
tiny backbone), with the federated sigmoid loss (Zhou et al.; sigmoid scores at inference): a
first stage trains and evaluates with LVIS r/c/f metrics; the second stage
restores it, trains only the classifier layer class-balanced, changes nothing else (parameters
and BN statistics bit-identical), keeps optimizer state only for the classifier, and evaluates
again; the stratified analysis draws its figure from the two runs."""

import importlib.util
import os

import jax
import numpy as np
import pytest

from frozen_det.data.offline.long_tail import write_long_tailed_lvis
from frozen_det.tree_paths import leaf_paths

pytest.importorskip("lvis")
pytestmark = pytest.mark.slow  # two trainings and three evaluations: the second tier (README)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(arg, data_dir, **train):
    spec = importlib.util.spec_from_file_location(
        "long_tail_config", os.path.join(ROOT, "configs", "lvis", "long_tail.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config(arg)
    config.data.path = str(data_dir)
    config.data.update(batch_size=4, eval_batch_size=8)
    config.train.update(batch_size=4, log_every=10, checkpoint_every=1000, **train)
    config.model.box_head.update(class_loss="federated", federated_num_classes=8)
    return config


def _flat(tree):
    return {
        "/".join(k): np.asarray(v)
        for k, v in __import__("flax").traverse_util.flatten_dict(jax.device_get(dict(tree))).items()
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from frozen_det.training.loop import train_and_evaluate

    root = tmp_path_factory.mktemp("lvis")
    data_dir = root / "data"
    write_long_tailed_lvis(str(data_dir), image_size=128, num_train=300, num_val=60)
    stage1 = _config("stage1,finetune,tiny", data_dir, total_steps=30)
    stage1.train.schedule.boundaries = (25,)
    first = train_and_evaluate(stage1, str(root / "stage1"))
    stage2 = _config("stage2,finetune,tiny,loss", data_dir, total_steps=10, init_from=str(root / "stage1"))
    second = train_and_evaluate(stage2, str(root / "stage2"))
    return dict(root=root, data_dir=data_dir, stage1=stage1, stage2=stage2, first=first, second=second)


def test_both_stages_evaluate_with_lvis_groups(runs):
    assert runs["stage1"].model.box_head.class_loss == "federated"
    with open(runs["root"] / "stage1" / "train_metrics.jsonl") as f:
        logged = [__import__("json").loads(line) for line in f]
    assert all(np.isfinite(m["frcnn_class"]) for m in logged) and logged[-1]["total"] < logged[0]["total"]
    for result in (runs["first"], runs["second"]):
        assert result["metric"] == "lvis"
        for key in ("AP", "APr", "APc", "APf", "mask_AP", "mask_APr"):
            assert -1.0 <= result[key] <= 1.0, key
        assert len(result["per_class_AP"]) == 20
    assert os.path.isfile(runs["root"] / "stage2" / "eval" / "val_step10.json")


def test_second_stage_changes_only_the_classifier(runs):
    from frozen_det.training import sharding
    from frozen_det.training.run import Run
    from frozen_det.training.state import build_state

    with Run(str(runs["root"] / "stage1"), runs["stage1"]) as run:
        before = run.variables()
    with Run(str(runs["root"] / "stage2"), runs["stage2"]) as run:
        config, task, model, after, step = run.config, run.task, run.model, run.variables(), run.latest_step
    assert step == 10
    p0, p1 = _flat(before["params"]), _flat(after["params"])
    changed = sorted(k for k in p0 if not np.array_equal(p0[k], p1[k]))
    assert changed == ["box_heads_0/class_logits/bias", "box_heads_0/class_logits/kernel"]
    s0, s1 = _flat(before["batch_stats"]), _flat(after["batch_stats"])
    assert all(np.array_equal(s0[k], s1[k]) for k in s0)
    # The second stage's train state: trainable partition and optimizer state = the classifier.
    state, _, _, _ = build_state(config, task, model, sharding.make_mesh(), train=False)
    assert sorted(leaf_paths(state.params)) == changed
    opt_shapes = sorted(x.shape for x in jax.tree.leaves(state.opt_state) if getattr(x, "ndim", 0) > 0)
    assert opt_shapes == sorted(p0[k].shape for k in changed)


def test_stratified_analysis_of_the_two_stages(runs):
    spec = importlib.util.spec_from_file_location("lvis_stratified", os.path.join(ROOT, "tools", "lvis_stratified.py"))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = runs["root"] / "analysis"
    tool.main(
        [
            "--runs",
            f"stage1={runs['root'] / 'stage1'},stage2={runs['root'] / 'stage2'}",
            "--data-config",
            os.path.join(ROOT, "configs", "lvis", "long_tail.py") + ":stage1,tiny",
            "--data-path",
            str(runs["data_dir"]),
            "--log-x",
            "--output",
            str(out),
        ]
    )
    with open(out / "per_class.csv") as f:
        lines = f.read().splitlines()
    assert len(lines) == 21  # header + 20 classes
    from PIL import Image

    assert Image.open(out / "stratified.png").size[0] > 100
    table = (out / "groups.md").read_text()
    assert "APr" in table and "stage2" in table
    counts = __import__("json").loads((out / "counts.json").read_text())
    assert sum(1 for c in counts.values() if c["frequency"] == "r") == 12
