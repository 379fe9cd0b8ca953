"""Each study project end to end at smoke size (a few steps, tiny canvases) through its command
line: a refactor cannot silently break a study. Second tier: each row compiles a detector."""

import json
import os

import pytest

from frozen_det.data.offline import fashion_mnist
from frozen_det.projects import runner

BCCD_DIR = os.environ.get("BCCD_DIR", "")


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir(BCCD_DIR), reason="BCCD not available (BCCD_DIR)")
def test_bccd_smoke_row_records_and_table(tmp_path, capsys):
    from frozen_det.projects.bccd import STUDY

    root = str(tmp_path)
    runner.main(STUDY, ["--smoke", "--root", root, "--rows", "frozen:fpn", "--seeds", "1"])
    record = json.load(open(runner.record_path(os.path.join(root, "records"), "frozen:fpn", 0)))
    assert record["smoke"] and record["resolved_config"]["data"]["canvas"] == 128
    assert 0.0 <= record["metrics"]["AP"] <= 1.0 and set(record["metrics"]["per_class_AP"]) == {
        "Platelets",
        "RBC",
        "WBC",
    }
    assert record["cost"]["params_trainable"] < record["cost"]["params_total"]  # the backbone is frozen
    assert record["curve"][-1][0] == 2
    out = capsys.readouterr().out
    assert "| frozen | fpn | 1 |" in out and "| finetune | fpn | 0 | pending |" in out


@pytest.mark.slow
@pytest.mark.skipif(not fashion_mnist.available(), reason="Debian package dataset-fashion-mnist not installed")
def test_transfer_smoke_chain_pretrains_first_and_restores_its_backbone(tmp_path, capsys):
    """canvas/fmnist pre-trains fmnist first (at the row's seed: tests/projects/test_runner.py)
    and restores its backbone."""
    from frozen_det.projects.transfer import STUDY

    root = str(tmp_path)
    runner.main(STUDY, ["--smoke", "--root", root, "--rows", "canvas/fmnist", "--seeds", "1"])
    records = {(r["row"], r["seed"]) for r in runner.load_records(os.path.join(root, "records"))}
    assert records == {("fmnist", 0), ("canvas/fmnist", 0)}
    record = json.load(open(runner.record_path(os.path.join(root, "records"), "canvas/fmnist", 0)))
    assert record["resolved_config"]["train"]["init_from"] == os.path.join(root, "runs", "fmnist", "s0")
    assert record["restored"]["restored"] > 0 and record["dependencies"] == {"fmnist": 0}
    assert "| VOC-like canvases | ResNet from Fashion-MNIST | AP | 1 |" in capsys.readouterr().out
