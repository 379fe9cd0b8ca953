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
        for section in SHARED:  # everything but the class count transfers
            assert config.model[section].to_dict() == pretrain.model[section].to_dict(), (name, section)
        assert tuple(config.data.mean) == tuple(pretrain.data.mean)
    assert _config("voc/5shot/cls", 0, root).data.path == f"{root}/canvases_voc"


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
