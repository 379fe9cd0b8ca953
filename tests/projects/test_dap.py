"""frozen_det.projects.dap: DAP pre-training has the targets' shared layers (so the transfer
restores backbone, FPN, RPN and box head), each row starts from the right run at its own seed
with the class-specific layers excluded and its own k-shot subset, and the tables render with
pending rows (configs only); second tier: the smallest chain end to end at smoke size."""

import json
import os

import pytest

from frozen_det.data.offline import fashion_mnist
from frozen_det.projects import runner
from frozen_det.projects.dap import INITS, KSHOTS, STUDY, TARGETS, tables
from frozen_det.strategies import OUTSIDE_THE_BACKBONE

SHARED = ("backbone", "neck", "anchors", "rpn", "box_head", "roi")


def _config(name, seed, root, smoke=False):
    return runner.row_config(STUDY, STUDY.row(name), seed, root, smoke)


def test_rows_start_from_the_right_runs_with_the_shared_layers(tmp_path):
    root = str(tmp_path)
    workdir = lambda name, seed: runner.workdir(root, STUDY.row(name), seed)  # noqa: E731
    for name, freeze in (("dap/paper", False), ("dap_freeze/paper", True)):
        pretrain = _config(name, 1, root)
        assert pretrain.train.init_from == workdir("cls", 1)
        assert pretrain.data.coco_files["train"] == (f"{workdir('pseudo/paper', 1)}/boxes.json", "train")
        assert pretrain.model.backbone.freeze == ("all" if freeze else "none")
        assert STUDY.row(name).dependencies == ("cls", "pseudo/paper")
    assert _config("pseudo/paper", 2, root).train.init_from == workdir("cls", 2)  # boxes of the seed's classifier
    assert not STUDY.row("pseudo/lite0").seeded  # the packaged weights: one run
    pretrain = _config("dap/paper", 0, root)
    finetune = [r.name for r in STUDY.rows if r.name.split("/")[0] in TARGETS]
    assert len(finetune) == len(TARGETS) * len(KSHOTS) * len(INITS)
    assert finetune[0].startswith("voc/5shot/") and finetune[-1].startswith("bccd/20shot/")
    for name, seed in (("voc/5shot/dap", 1), ("bccd/20shot/dap_freeze", 0), ("bccd/5shot/cls", 1)):
        target, kshot, init = name.split("/")
        config = _config(name, seed, root)
        expected = workdir("cls" if init == "cls" else f"{init}/paper", seed)
        assert config.train.init_from == expected
        assert config.train.init_exclude == ("/(class_logits|box_deltas)/",)
        assert config.data.kshot == int(kshot[:-4]) and config.data.kshot_seed == config.train.seed == seed
        for section in SHARED:  # everything but the class count (and how the backbone trains) transfers
            shape = lambda c: {k: v for k, v in c.model[section].to_dict().items() if k not in ("freeze", "bn_mode")}  # noqa: E731
            assert shape(config) == shape(pretrain), (name, section)
        assert tuple(config.data.mean) == tuple(pretrain.data.mean)
    assert _config("voc/5shot/cls", 0, root).data.path == f"{root}/canvases_voc"
    # the head-priors rows: DAP's backbone alone; CLS's backbone under DAP's FPN and heads
    backbone_only = _config("voc/5shot/dap_backbone", 1, root)
    assert backbone_only.train.init_from == workdir("dap/paper", 1)
    assert backbone_only.train.init_exclude == OUTSIDE_THE_BACKBONE and not backbone_only.train.backbone_from
    heads = _config("bccd/20shot/cls_dap_heads", 2, root)
    assert (heads.train.init_from, heads.train.backbone_from) == (workdir("dap/paper", 2), workdir("cls", 2))
    assert STUDY.row("bccd/20shot/cls_dap_heads").dependencies == ("dap/paper", "cls")


def test_every_row_follows_the_papers_protocol(tmp_path):
    """Sec. 4.1: pre-training at the shorter sides 96 / 160 / 320 / 640 (scaled to the canvas),
    every fine-tuning row with BatchNorm on its stored statistics and the stem frozen."""
    root = str(tmp_path)
    for row in STUDY.rows:
        config = _config(row.name, 0, root)
        if row.name.split("/")[0] in TARGETS:
            assert (config.model.backbone.freeze, config.model.backbone.bn_mode) == ("0", "frozen_stats"), row.name
        elif row.name.startswith("dap"):
            assert tuple(config.data.augment.short_sides) == (19, 32, 64, 128) and config.data.canvas == 128
            assert config.model.backbone.bn_mode == "batch"


def test_tables_render_pending_rows():
    rendered = tables([])
    assert set(rendered) == {"pseudo_boxes", "pretraining", "kshot", "curves"}
    assert "| VOC-like canvases | 5 | pending | pending | pending | pending |" in rendered["kshot"]
    assert "| CLS, paper's text | 0 | pending |" in rendered["pseudo_boxes"]
    assert "| VOC-like canvases, 5-shot | pending |" in rendered["curves"]


@pytest.mark.slow
@pytest.mark.skipif(not fashion_mnist.available(), reason="Debian package dataset-fashion-mnist not installed")
def test_smoke_chain_classifier_boxes_pretraining_finetuning(tmp_path, capsys, monkeypatch):
    """voc/5shot/dap at seed 0 runs cls, its pseudo-boxes and DAP pre-training at seed 0 first."""
    root = str(tmp_path / "root")
    monkeypatch.setattr(type(STUDY), "folder", property(lambda self: str(tmp_path / "project")))
    runner.main(STUDY, ["--smoke", "--root", root, "--rows", "voc/5shot/dap", "--seeds", "1"])
    records = {r["row"]: r for r in runner.load_records(os.path.join(root, "records"))}
    assert set(records) == {"cls", "pseudo/paper", "dap/paper", "voc/5shot/dap"}
    assert all(r["smoke"] and r["seed"] == 0 for r in records.values())
    boxes = records["pseudo/paper"]
    assert 0.0 <= boxes["metrics"]["corloc"] <= 1.0 and boxes["stats"]["merged"]["boxes_per_image"] > 0
    assert 0.0 <= records["dap/paper"]["extra"]["top1"] <= 1.0
    finetuned = records["voc/5shot/dap"]
    assert finetuned["resolved_config"]["train"]["init_from"] == os.path.join(root, "runs", "dap", "paper", "s0")
    assert finetuned["restored"]["restored"] > 0 and finetuned["curve"][-1][0] == 2
    with open(runner.record_path(os.path.join(root, "records"), "dap/paper", 0)) as f:
        assert json.load(f)["dependencies"] == {"cls": 0, "pseudo/paper": 0}
    out = capsys.readouterr().out
    assert "| dap/paper | 1 |" in out and "| VOC-like canvases | 5 | pending | " in out
    with pytest.raises(ValueError, match="smoke"):  # smoke numbers never reach the page
        runner.publish(STUDY, root)


def test_the_best_step_is_chosen_on_the_mean_curve_of_seeds_that_all_reached_it():
    from frozen_det.projects.curves import best_step_cell

    records = [
        {"curve": [[100, {"AP": 0.2}], [200, {"AP": 0.5}], [300, {"AP": 0.3}]]},
        {"curve": [[100, {"AP": 0.4}], [200, {"AP": 0.3}], [300, {"AP": 0.35}]]},
    ]
    # per-seed maxima (0.5 at 200, 0.4 at 100) are not what is reported: the mean curve peaks at 200
    assert best_step_cell(records) == "0.400 ± 0.100 at 200 (n 2)"
    records[1]["curve"] = records[1]["curve"][:1]  # a seed that stopped at step 100
    assert best_step_cell(records) == "0.300 ± 0.100 at 100 (n 2)"
    assert best_step_cell([]) == "pending"
