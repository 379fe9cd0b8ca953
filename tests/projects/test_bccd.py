"""configs/bccd: every strategy x head builds and validates, the strategies differ only in the
backbone's transfer fields; the BCCD project's table from FAKE records (written here, made-up
numbers, no model was run)."""

import os
import runpy
import types

import pytest

from frozen_det.config import resolve
from frozen_det.data.detection.config import resolve as resolve_data
from frozen_det.projects import bccd, runner
from frozen_det.resources import parameter_counts
from frozen_det.tasks import get_task

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
FAKE = "FAKE record written by tests/projects/test_bccd.py: made-up numbers, no model was run"
EXPECTED = {
    "frozen": ("all", "none", True),
    "finetune": ("none", "none", True),
    "scratch": ("none", "none", False),
    "adapters": ("all", "residual", True),
    "film": ("all", "film", True),
}


def _config(strategy, head):
    return runpy.run_path(os.path.join(ROOT, "configs", "bccd", f"{strategy}.py"))["get_config"](head)


@pytest.mark.parametrize("head", bccd.HEADS)
def test_configs_build_and_share_everything_but_the_backbone_transfer(head):
    configs = {s: _config(s, head) for s in bccd.STRATEGIES}
    reference = configs["frozen"].to_dict()
    for strategy, config in configs.items():
        get_task(resolve(config, num_devices=1)).validate(types.SimpleNamespace(num_classes=3))
        assert list(resolve_data(config).class_names) == ["Platelets", "RBC", "WBC"]
        b = config.model.backbone
        freeze, adapters, pretrained = EXPECTED[strategy]
        assert (b.variant, b.freeze, b.adapters) == ("lite0", freeze, adapters)
        assert b.init_checkpoint == ("package:efficientnet_lite0" if pretrained else "")
        assert config.model.type == ("retinanet" if head == "retinanet" else "two_stage")
        if head != "retinanet":
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


def _fake_record(row, seed, ap, seconds, cost):
    return {
        "note": FAKE,
        "row": row,
        "seed": seed,
        "metrics": {
            "AP": ap,
            "AP50": 0.875,
            "AP75": ap / 2,
            "per_class_AP": {"Platelets": 0.1, "RBC": 0.2, "WBC": 0.3},
        },
        "train_seconds": seconds,
        "resolved_config": {"train": {"total_steps": 10}},
        "cost": cost,
        "provenance": {"commit": "0123456789abcdef", "dirty": False, "device_count": 1, "device_kind": "cpu"},
    }


def test_table_from_fake_records():
    cost = {
        "params_total": 7_300_000,
        "params_trainable": 4_300_000,
        "train_step_gflops": 101.0,
        "train_step_temp_bytes": 400_000_000,
    }
    records = [_fake_record("frozen:fpn", s, ap, 600.0, cost) for s, ap in enumerate((0.4, 0.5, 0.6))]
    records.append(_fake_record("frozen:cascade", 0, 0.9, 60.0, cost))
    table = bccd.tables(records)["transfer"]
    lines = table.strip().splitlines()
    assert len(lines) == 2 + len(bccd.ROWS) + 2  # header, rows, blank, provenance
    assert all(line.count("|") == len(bccd.HEADER) + 1 for line in lines[: 2 + len(bccd.ROWS)])
    # AP 0.4 / 0.5 / 0.6: mean 0.5, standard error 0.1 / sqrt(3)
    assert lines[2] == (
        "| frozen | fpn | 3 | 0.500 ± 0.058 | 0.875 ± 0.000 | 0.250 ± 0.029 | 0.100 ± 0.000 / 0.200 ± 0.000 / "
        "0.300 ± 0.000 | 10.0 ± 0.0 | 60.00 ± 0.00 | 101.0 | 400 | 4.30 / 7.30 |"
    )
    assert lines[3].startswith("| frozen | cascade | 1 | 0.900 | 0.875 | 0.450 |")
    assert lines[4].startswith("| frozen | retinanet | 0 | pending |")
    assert lines[-1].startswith("4 runs; commit 0123456789; devices 1 x cpu.")


def test_rows_argument():
    assert runner.chosen_rows(bccd.STUDY, "") == list(bccd.ROWS)
    assert [r.name for r in runner.chosen_rows(bccd.STUDY, "frozen:fpn, finetune:cascade")] == [
        "frozen:fpn",
        "finetune:cascade",
    ]
    with pytest.raises(ValueError, match="frozen:nasfpn"):
        runner.chosen_rows(bccd.STUDY, "frozen:nasfpn")
