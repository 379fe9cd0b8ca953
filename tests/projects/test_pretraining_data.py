"""frozen_det.projects.pretraining_data: every pre-training setting is the paper's subset with the
classifier sized to its label set, its subset drawn by the row's seed, the targets start from
the pre-training at their own seed (scratch from nothing), the fixed budget of 10 x 600 is
images/10's subset, and the tables render pending rows and FAKE records (configs and made-up
numbers only); second tier: the smallest chain (pre-training -> canvases) end to end at smoke size."""

import os

import numpy as np
import pytest

from frozen_det import config as config_lib
from frozen_det.data.classification.subsets import label_set, select
from frozen_det.data.offline import fashion_mnist
from frozen_det.projects import runner
from frozen_det.projects.pretraining_data import SETTINGS, SHOTS, STUDY, TARGETS, tables

FAKE = "FAKE record written by tests/projects/test_pretraining_data.py: made-up numbers, no model was run"


def _config(name, seed, root, smoke=False):
    return runner.row_config(STUDY, STUDY.row(name), seed, root, smoke)


@pytest.mark.parametrize("setting", [s for s, (_, overrides) in SETTINGS.items() if overrides is not None])
def test_pretraining_settings_size_the_classifier_to_their_label_set(setting, tmp_path):
    for seed in (0, 2):
        config = _config(f"pretrain/{setting}", seed, str(tmp_path))
        assert config.data.subset.seed == seed  # the row's seed draws the subset
        labels = label_set(config.data, list(fashion_mnist.CLASSES))
        assert config.model.num_classes == labels.num_labels, (setting, seed)
        assert config.train.total_steps == 1500 and config.train.batch_size == 64  # one schedule for all
    kind, size = setting.split("/")
    subset = config.data.subset
    if kind == "images":
        assert subset.images_per_class == (0.0 if size == "100" else int(size) / 100)
    elif kind == "classes":
        assert subset.num_classes == int(size) == labels.num_labels
    elif kind == "coarse":
        assert labels.names == ("tops", "trousers", "footwear", "bags")
    elif kind == "merged":  # every class kept, its images under one of K labels of 10 // K or more classes
        assert labels.kept == tuple(range(10)) and labels.num_labels == int(size)
        groups = np.bincount(labels.label_of, minlength=labels.num_labels)
        assert groups.sum() == 10 and groups.min() == 10 // int(size)
        other = label_set(_config(f"pretrain/{setting}", 1, str(tmp_path)).data, list(fashion_mnist.CLASSES))
        assert other.names != labels.names  # the seed draws the grouping
    else:
        classes, per_class = map(int, size.split("x"))
        assert subset.image_budget == classes * per_class == 6000 and labels.num_labels == classes


def test_targets_start_from_the_pretraining_at_their_seed(tmp_path):
    root = str(tmp_path)
    assert len(STUDY.rows) == (len(SETTINGS) - 1) + len(SETTINGS) * len(TARGETS)
    for setting in SETTINGS:
        for target in TARGETS:
            config = _config(f"{target}/{setting}", 2, root)
            expected = "" if setting == "scratch" else runner.workdir(root, STUDY.row(f"pretrain/{setting}"), 2)
            assert config.train.init_from == expected and config.train.seed == config.data.seed == 2
    canvases, bccd = _config("canvases/images/10", 0, root), _config("bccd5/coarse/4", 0, root)
    assert canvases.data.path == f"{root}/canvases_voc" and canvases.train.total_steps == 500
    assert bccd.data.subset.images_per_class == SHOTS and bccd.train.total_steps == 300
    assert bccd.data.subset.seed == 0  # the same 5 crops per class at every seed
    pre = config_lib.complete(_config("pretrain/images/100", 0, root))
    for target in (canvases, bccd):  # the backbone restores: the same network
        backbone = config_lib.complete(target).model.backbone
        assert (backbone.type, backbone.depth, backbone.width) == ("resnet", 18, pre.model.backbone.width)
        assert tuple(target.data.mean) == tuple(pre.data.mean)


@pytest.mark.skipif(not fashion_mnist.available(), reason="Debian package dataset-fashion-mnist not installed")
def test_the_fixed_budget_of_ten_classes_is_the_ten_percent_subset(tmp_path):
    labels = fashion_mnist.read(fashion_mnist.DEBIAN_DIR, "train", "labels")
    chosen = []
    for name in ("pretrain/images/10", "pretrain/budget/10x600"):
        data = _config(name, 1, str(tmp_path)).data
        chosen.append(select(labels, data.subset, tuple(range(10)), train=True))
    assert len(chosen[0]) == 6000 and np.array_equal(*chosen)


def fake_record(row, seed, metrics, extra=None, seconds=60.0, note=FAKE):
    """A record with made-up numbers (also tests/projects/test_detection_pretraining.py's)."""
    return {
        "note": note,
        "row": row,
        "seed": seed,
        "metrics": metrics,
        "extra": extra or {},
        "train_seconds": seconds,
        "provenance": {"commit": "0123456789abcdef", "dirty": False, "device_count": 1, "device_kind": "cpu"},
    }


def test_tables_from_fake_records_and_pending_rows():
    rendered = tables([])
    assert set(rendered) == {"pretraining_data", "coarse_minus_fine"}
    assert (
        "| scratch (no pre-training) | — | — | — | — | — | 0 | pending | pending | 0 | pending |"
        in rendered["pretraining_data"]
    )
    assert "| tops | T-shirt/top, Pullover, Dress, Coat, Shirt | 0 | pending |" in rendered["coarse_minus_fine"]
    records = [
        fake_record(
            "pretrain/images/100",
            s,
            {"top1": top1},
            {"induction_top1": 0.8, "induction_top5": 0.9, "coarse_minus_fine": {"tops": d, "bags": 0.0}},
        )
        for s, top1, d in ((0, 0.4, 0.2), (1, 0.5, 0.3), (2, 0.6, 0.4))
    ]
    records += [fake_record("canvases/images/100", 0, {"AP": 0.25, "AP50": 0.5}, seconds=120.0)]
    records += [fake_record("bccd5/scratch", s, {"mean_per_class_accuracy": a}) for s, a in ((0, 0.8), (1, 0.9))]
    rendered = tables(records)
    lines = rendered["pretraining_data"].strip().splitlines()
    assert len(lines) == 2 + len(SETTINGS) + 2  # header, rows, blank, provenance
    # top-1 0.4 / 0.5 / 0.6: mean 0.5, standard error 0.1 / sqrt(3)
    assert lines[2] == (
        "| images/100 (all 6,000 per class) | 3 | 0.500 ± 0.058 | 0.800 ± 0.000 | 0.900 ± 0.000 | — | 1 | 0.250 | "
        "0.500 | 0 | pending | 1.0 ± 0.0 / 2.0 / — |"
    )
    assert lines[3].startswith("| images/50 | 0 | pending |")
    assert lines[2 + len(SETTINGS) - 1] == (
        "| scratch (no pre-training) | — | — | — | — | — | 0 | pending | pending | 2 | 0.850 ± 0.050 | "
        "— / — / 1.0 ± 0.0 |"
    )
    assert lines[-1].startswith("6 runs; commit 0123456789; devices 1 x cpu.")
    coarse = rendered["coarse_minus_fine"]
    assert "| tops | T-shirt/top, Pullover, Dress, Coat, Shirt | 3 | 0.300 ± 0.058 |" in coarse
    assert "| trousers | Trouser | 3 | — |" in coarse and "| bags | Bag | 3 | 0.000 ± 0.000 |" in coarse
    assert coarse.strip().splitlines()[-1].startswith("3 runs;")


@pytest.mark.slow
@pytest.mark.skipif(not fashion_mnist.available(), reason="Debian package dataset-fashion-mnist not installed")
def test_smoke_chain_pretraining_source_measures_and_canvases(tmp_path, capsys, monkeypatch):
    """canvases/images/100 at seed 0 pre-trains pretrain/images/100 at seed 0 first; the
    pre-training's record has the induction accuracy and the coarse minus fine accuracy."""
    root = str(tmp_path / "root")
    monkeypatch.setattr(type(STUDY), "folder", property(lambda self: str(tmp_path / "project")))
    runner.main(STUDY, ["--smoke", "--root", root, "--rows", "canvases/images/100", "--seeds", "1"])
    records = {r["row"]: r for r in runner.load_records(os.path.join(root, "records"))}
    assert set(records) == {"pretrain/images/100", "canvases/images/100"}
    pre, det = records["pretrain/images/100"], records["canvases/images/100"]
    assert pre["smoke"] and pre["resolved_config"]["data"]["subset"]["seed"] == 0
    assert 0.0 <= pre["metrics"]["top1"] <= 1.0
    extra = pre["extra"]
    assert 0.0 <= extra["induction_top1"] <= extra["induction_top5"] <= 1.0
    assert set(extra["coarse_minus_fine"]) == {"tops", "trousers", "footwear", "bags"}
    assert extra["coarse_minus_fine"]["trousers"] == 0.0  # one sub-class: coarse = fine
    assert "induction_unseen_top1" not in extra  # every class seen
    # A class subset's record adds the induction accuracy on the classes it never saw.
    from frozen_det.projects.pretraining_data import source_measures

    subset = runner.row_config(STUDY, STUDY.row("pretrain/images/100"), 0, root, smoke=True)
    subset.data.subset.num_classes = 2
    unseen = source_measures(os.path.join(root, "runs", "pretrain", "images", "100", "s0"), subset)
    assert unseen["unseen_classes"] == 8 and 0.0 <= unseen["induction_unseen_top1"] <= 1.0
    assert det["resolved_config"]["train"]["init_from"] == os.path.join(root, "runs", "pretrain", "images", "100", "s0")
    assert det["restored"]["restored"] > 0 and det["dependencies"] == {"pretrain/images/100": 0}
    assert 0.0 <= det["metrics"]["AP"] <= 1.0 and det["curve"][-1][0] == 2
    out = capsys.readouterr().out
    assert "| images/100 (all 6,000 per class) | 1 |" in out and "| images/50 | 0 | pending |" in out
    with pytest.raises(ValueError, match="smoke"):  # smoke numbers never reach the page
        runner.publish(STUDY, root)
