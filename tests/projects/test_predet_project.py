"""frozen_det.projects.predet: the PreDet rows have the target detectors' shared layers (so the
transfer restores the neck, RPN convolution and box head), every fine-tuning row starts from its
PreDet row at its own seed, heads-only rows keep the ImageNet backbone, and the tables render
with pending rows (configs only); second tier: a PreDet row end to end at smoke size."""

import json
import os
import re

import pytest

from frozen_det.data.offline import fashion_mnist
from frozen_det.projects import runner
from frozen_det.projects.predet import (
    INITS,
    PREDET_STEPS,
    PRETRAIN,
    STUDY,
    TARGETS,
    restored_by_module,
    tables,
)

SHARED = ("backbone", "neck", "anchors", "rpn", "box_head", "roi")


def _config(name, seed, root, smoke=False):
    return runner.row_config(STUDY, STUDY.row(name), seed, root, smoke)


@pytest.mark.parametrize("name", sorted(PRETRAIN))
def test_predet_rows_have_the_targets_shared_layers(name, tmp_path):
    root = str(tmp_path)
    pretrain = _config(f"predet/{name}", 1, root)
    assert pretrain.model.type == "predet" and pretrain.data.image_size == 128
    assert pretrain.train.total_steps == PREDET_STEPS
    for target in TARGETS:
        finetune = _config(f"{target}/5shot/{name}", 1, root)
        for section in SHARED:
            assert pretrain.model[section].to_dict() == finetune.model[section].to_dict(), (target, section)
        assert finetune.train.init_from == runner.workdir(root, STUDY.row(f"predet/{name}"), 1)
        assert finetune.train.init_exclude and finetune.data.kshot == 5 and finetune.data.kshot_seed == 1
        assert tuple(finetune.data.mean) == tuple(pretrain.data.mean)


def test_smoke_rows_and_pending_tables(tmp_path):
    finetune = [r for r in STUDY.rows if r.name.split("/")[0] in TARGETS]
    assert len(finetune) == len(TARGETS) * len(INITS)
    config = _config("bccd/5shot/imagenet", 0, str(tmp_path), smoke=True)
    assert config.train.total_steps == STUDY.smoke["train.total_steps"] == 2 and not config.train.init_from
    assert config.data.canvas == 256
    rendered = tables([])
    assert set(rendered) == {"pretext", "kshot", "restored", "curves", "similarity"}
    assert all("pending" in table for table in rendered.values())
    assert "| ImageNet Lite0 | pending | pending |" in rendered["kshot"]


def test_heads_only_rows_keep_the_imagenet_backbone(tmp_path):
    config = _config("voc/5shot/full_heads", 0, str(tmp_path))
    assert config.train.init_from == runner.workdir(str(tmp_path), STUDY.row("predet/full"), 0)
    excluded = lambda path: any(re.search(p, path) for p in config.train.init_exclude)  # noqa: E731
    assert excluded("params/backbone/stem/conv/kernel") and excluded("batch_stats/backbone/stem/bn/mean")
    assert excluded("params/box_heads_0/class_logits/kernel")  # the class-specific layers, as every row
    assert not excluded("params/neck/lateral_2/kernel") and not excluded("params/box_heads_0/fc_0/kernel")
    assert _config("voc/5shot/full", 0, str(tmp_path)).train.init_exclude == config.train.init_exclude[:1]


def test_similarity_rows_compare_the_imagenet_lite0_with_predet_rows_on_the_same_canvases(tmp_path):
    root = str(tmp_path)
    imagenet, full = _config("similarity/imagenet", 0, root), _config("similarity/full", 2, root)
    assert not STUDY.row("similarity/imagenet").seeded and not imagenet.train.init_from
    assert full.train.init_from == runner.workdir(root, STUDY.row("predet/full"), 2)
    assert imagenet.data.path == full.data.path == f"{root}/canvases_voc"


def test_restored_leaves_are_counted_per_shared_module(tmp_path):
    restored = ["params/backbone/stem/conv/kernel", "batch_stats/backbone/stem/bn/mean", "params/neck/lateral_2/kernel"]
    (tmp_path / "init_from.json").write_text(json.dumps({"restored": restored, "excluded": ["x"]}))
    by_module = restored_by_module(str(tmp_path), None)["restored_by_module"]
    assert by_module == {"backbone": 2, "neck": 1, "rpn_head": 0, "box_heads_0": 0}


@pytest.mark.slow
@pytest.mark.skipif(not fashion_mnist.available(), reason="Debian package dataset-fashion-mnist not installed")
def test_smoke_labelled_pretext_row_records_its_measures(tmp_path, capsys, monkeypatch):
    """predet/mlc (the labelled canvases: no BCCD needed) at smoke size: its pretext evaluation,
    backbone drift and last training loss reach the record and the table. (Its fine-tuning rows
    run the detector rows of DAP's smoke test; compiling the Lite0 detector too would triple
    this test's time.)"""
    root = str(tmp_path / "root")
    monkeypatch.setattr(type(STUDY), "folder", property(lambda self: str(tmp_path / "project")))
    runner.main(STUDY, ["--smoke", "--root", root, "--rows", "predet/mlc", "--seeds", "1"])
    (record,) = runner.load_records(os.path.join(root, "records"))
    assert record["row"] == "predet/mlc" and record["smoke"] and record["metrics"]["step"] == 2
    drift = record["extra"]["backbone_drift"]
    assert set(drift) == {"stem", "stage1", "stage2", "stage3", "stage4"} and drift["stem"] > 0
    assert record["extra"]["final_train_loss"] > 0
    out = capsys.readouterr().out
    assert "| mlc | mlc (labelled canvases) | 1 | 2 |" in out and "| full | crpn,croi,reg | 0 | pending |" in out
    with pytest.raises(ValueError, match="smoke"):  # smoke numbers never reach the page
        runner.publish(STUDY, root)
