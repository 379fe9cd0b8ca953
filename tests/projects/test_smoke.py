"""Each study project end to end at smoke size (a few steps, tiny canvases) through its command
line: a refactor cannot silently break a study. Second tier: each row compiles a detector."""

import json
import os

import pytest

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
