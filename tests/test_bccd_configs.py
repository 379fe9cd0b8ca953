"""configs/bccd: every strategy x head builds and validates, the strategies differ only in the
backbone's transfer fields; tools/bccd_study.py's table from FAKE evaluation JSONs (written
here, made-up numbers, no model was run)."""

import json
import os
import runpy
import sys
import types

import pytest

from frozen_det.config import resolve
from frozen_det.data.detection.config import resolve as resolve_data
from frozen_det.resources import parameter_counts
from frozen_det.tasks import get_task

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, os.path.join(ROOT, "tools"))
try:
    import bccd_study
finally:
    sys.path.pop(0)

FAKE = "FAKE evaluation written by tests/test_bccd_configs.py: made-up numbers, no model was run"
EXPECTED = {
    "frozen": ("all", "none", True),
    "finetune": ("none", "none", True),
    "scratch": ("none", "none", False),
    "adapters": ("all", "residual", True),
    "film": ("all", "film", True),
}


def _config(strategy, head):
    return runpy.run_path(os.path.join(ROOT, "configs", "bccd", f"{strategy}.py"))["get_config"](head)


@pytest.mark.parametrize("head", bccd_study.HEADS)
def test_configs_build_and_share_everything_but_the_backbone_transfer(head):
    configs = {s: _config(s, head) for s in bccd_study.STRATEGIES}
    reference = configs["frozen"].to_dict()
    for strategy, config in configs.items():
        get_task(resolve(config, num_devices=1)).validate(types.SimpleNamespace(num_classes=3))
        assert list(resolve_data(config).class_names) == ["Platelets", "RBC", "WBC"]
        b = config.model.backbone
        freeze, adapters, pretrained = EXPECTED[strategy]
        assert (b.variant, b.freeze, b.adapters) == ("lite0", freeze, adapters)
        assert b.init_checkpoint == ("package:efficientnet_lite0" if pretrained else "")
        assert config.model.cascade.enabled == (head == "cascade")
        assert config.model.detections.max_detections == 100
        assert config.data.eval_split == "test"
        other = config.to_dict()
        other["model"]["backbone"] = reference["model"]["backbone"]
        assert other == reference, strategy  # one schedule, data and head for every row


def test_parameter_counts_follow_the_strategy():
    """Abstract init (jax.eval_shape, nothing compiled) of the frozen / FiLM / adapters /
    fine-tune models: FiLM and adapters add trainable parameters to a frozen backbone (FiLM two
    per output channel of every block), fine-tuning trains it."""
    counts = {}
    for strategy in ("frozen", "film", "adapters", "finetune"):
        config = _config(strategy, "fpn")
        config.data.canvas = 128  # parameter counts do not depend on the canvas
        counts[strategy] = parameter_counts(config)[0]
    assert counts["frozen"]["params_trainable"] < counts["film"]["params_trainable"]
    assert counts["film"]["params_trainable"] < counts["adapters"]["params_trainable"]
    assert counts["adapters"]["params_trainable"] < counts["finetune"]["params_trainable"]
    assert counts["frozen"]["params_total"] == counts["finetune"]["params_total"]


def _fake_row(workdir, ap, ap50, steps, seconds, cost):
    os.makedirs(os.path.join(workdir, "eval"))
    with open(bccd_study.eval_path(workdir, "test", steps), "w") as f:
        json.dump(
            {
                "note": FAKE,
                "AP": ap,
                "AP50": ap50,
                "AP75": ap / 2,
                "step": steps,
                "split": "test",
                "per_class_AP": {"Platelets": 0.1, "RBC": 0.2, "WBC": 0.3},
            },
            f,
        )
    with open(os.path.join(workdir, "timing.json"), "w") as f:
        json.dump({"sessions": [{"seconds": s} for s in seconds]}, f)
    with open(os.path.join(workdir, "cost.json"), "w") as f:
        json.dump(cost, f)


def test_table_from_fake_eval_jsons(tmp_path):
    root = str(tmp_path)
    cost = {
        "params_total": 7_300_000,
        "params_trainable": 4_300_000,
        "train_step_gflops": 101.0,
        "train_step_temp_bytes": 400_000_000,
    }
    _fake_row(bccd_study.row_dir(root, "frozen:fpn"), 0.5, 0.875, 10, [300.0, 300.0], cost)
    # A row evaluated at another step than the schedule's end is not finished.
    _fake_row(bccd_study.row_dir(root, "frozen:cascade"), 0.9, 0.99, 5, [60.0], cost)
    with open(os.path.join(bccd_study.row_dir(root, "frozen:cascade"), "train_metrics.jsonl"), "w") as f:
        f.write('{"step": 2, "loss": 1.5}\n{"step": 4, "loss": 1.0}\n')
    rows = [bccd_study.collect_row(r, bccd_study.row_dir(root, r), "test", 10) for r in bccd_study.ALL_ROWS]
    assert [r["status"] for r in rows] == ["done"] + ["pending"] * (len(bccd_study.ALL_ROWS) - 1)
    assert rows[0]["train_seconds"] == 600.0 and rows[0]["seconds_per_step"] == 60.0

    table = bccd_study.write_table(rows, root, "Command: `fake`")
    lines = table.strip().splitlines()
    assert len(lines) == 2 + len(bccd_study.ALL_ROWS)
    assert all(line.count("|") == len(bccd_study.COLUMNS) + 1 for line in lines)
    assert lines[2] == (
        "| frozen | fpn | 0.500 | 0.875 | 0.250 | 0.100 / 0.200 / 0.300 | 10.0 | 60.00 | 101.0 | 400 | 4.30 / 7.30 |"
    )
    assert lines[3].startswith("| frozen | cascade | pending (trained 4/10 steps) |")
    assert lines[4].startswith("| adapters | fpn | pending |")
    with open(os.path.join(root, "results.md")) as f:
        assert f.read() == table + "\nCommand: `fake`\n"
    with open(os.path.join(root, "results.json")) as f:
        assert json.load(f)[0]["AP50"] == 0.875


def test_rows_argument():
    assert bccd_study.chosen_rows("", bccd_study.ALL_ROWS) == list(bccd_study.ALL_ROWS)
    assert bccd_study.chosen_rows("frozen:fpn, finetune:cascade", bccd_study.ALL_ROWS) == [
        "frozen:fpn",
        "finetune:cascade",
    ]
    with pytest.raises(SystemExit, match="frozen:nasfpn"):
        bccd_study.chosen_rows("frozen:nasfpn", bccd_study.ALL_ROWS)
