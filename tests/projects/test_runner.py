"""frozen_det.projects.runner: rows run their dependencies first at the same seed, unseeded rows
once, finished rows are read back, --force reruns a row but not its source, records carry the
resolved config and provenance, publishing refuses smoke and dirty records, and README blocks
round-trip. The trainer is a stand-in that writes nothing (configs are real: loading them is
cheap; training is what the smoke test of each project does)."""

import json
import os

import pytest

from frozen_det.projects import runner, tables
from frozen_det.projects.runner import Row, Study

CONFIG = "configs/tiny/two_stage.py"


def _study():
    rows = (
        Row("shared", CONFIG, seeded=False),
        Row("pre", CONFIG, {"train.total_steps": 7}),
        Row("ft", CONFIG, {"data.path": "{root}/canvases"}, init_from="pre"),
        Row("from_shared", CONFIG, init_from="shared"),
        Row("boxes", "", train=_boxes_step),
        Row("on_boxes", CONFIG, {"data.coco_files": {"train": ("{run:boxes}/boxes.json", "train")}}, measure=_measure),
    )

    def table(records):
        grouped = tables.by_row(records)
        body = [
            [
                r.name,
                str(len(grouped.get(r.name, []))),
                tables.cell([x["metrics"]["AP"] for x in grouped.get(r.name, [])]),
            ]
            for r in rows
        ]
        return {"main": tables.markdown(["row", "n", "AP"], body)}

    return Study(name="toy", doc="a toy study", rows=rows, tables=table, seeds=2)


def _boxes_step(row, run_dir, config):
    os.makedirs(run_dir, exist_ok=True)
    open(os.path.join(run_dir, "boxes.json"), "w").write("{}")
    return {"metrics": {"boxes": 3}}


def _measure(run_dir, config):
    return {"path": config.data.coco_files["train"][0]}


class Trainer:
    def __init__(self):
        self.calls = []

    def __call__(self, row, run_dir, config):
        self.calls.append((row.name, int(config.train.seed), str(config.train.init_from), run_dir))
        return {"metrics": {"AP": 0.1 * (len(self.calls))}, "train_seconds": 1.0, "curve": []}


@pytest.fixture
def toy(tmp_path, monkeypatch):
    study = _study()
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.setattr(Study, "folder", property(lambda self: str(project)))
    return study, str(tmp_path / "root")


def test_dependencies_first_at_the_same_seed_and_unseeded_rows_once(toy):
    study, root = toy
    train = Trainer()
    runner.run_row(study, study.row("ft"), 1, root, train=train)
    for row in study.rows[:4]:
        for seed in runner.seeds_of(row, 2):
            runner.run_row(study, row, seed, root, train=train)
    names = [(n, s) for n, s, _, _ in train.calls]
    assert names == [
        ("pre", 1),
        ("ft", 1),
        ("shared", 0),
        ("pre", 0),
        ("ft", 0),
        ("from_shared", 0),
        ("from_shared", 1),
    ]
    inits = {(n, s): i for n, s, i, _ in train.calls}
    assert inits[("ft", 1)] == runner.workdir(root, study.row("pre"), 1)
    assert inits[("from_shared", 1)] == runner.workdir(root, study.row("shared"), 0)
    record = json.load(open(runner.record_path(os.path.join(root, "records"), "ft", 1)))
    assert record["dependencies"] == {"pre": 1}
    assert record["overrides"]["data.path"] == "{root}/canvases"  # portable: no machine path
    assert record["resolved_config"]["data"]["path"] == f"{root}/canvases"
    assert record["resolved_config"]["train"]["seed"] == 1 and record["resolved_config"]["data"]["seed"] == 1
    assert set(record["provenance"]) >= {"commit", "dirty", "versions", "device_kind", "device_count"}
    assert record["provenance"]["versions"]["jax"]


def test_steps_run_dependencies_named_in_overrides_and_measures_go_to_extra(toy):
    study, root = toy
    assert study.row("on_boxes").dependencies == ("boxes",)
    train = Trainer()
    record = runner.run_row(study, study.row("on_boxes"), 1, root, train=train)
    boxes = runner.workdir(root, study.row("boxes"), 1)
    assert os.path.exists(os.path.join(boxes, "boxes.json")) and train.calls[0][0] == "on_boxes"
    assert record["extra"] == {"path": f"{boxes}/boxes.json"}
    saved = json.load(open(runner.record_path(os.path.join(root, "records"), "on_boxes", 1)))
    assert saved["overrides"]["data.coco_files"] == {"train": ["{run:boxes}/boxes.json", "train"]}
    assert runner.load_records(os.path.join(root, "records"))[0]["resolved_config"] is None  # the step's


def test_finished_rows_are_read_back_and_force_reruns_only_the_row(toy):
    study, root = toy
    train = Trainer()
    runner.run_row(study, study.row("ft"), 0, root, train=train)
    assert len(train.calls) == 2
    first = runner.run_row(study, study.row("ft"), 0, root, train=train)
    assert len(train.calls) == 2 and first["metrics"]["AP"] == pytest.approx(0.2)
    again = runner.run_row(study, study.row("ft"), 0, root, force=True, train=train)
    assert [c[0] for c in train.calls] == ["pre", "ft", "ft"]
    assert again["metrics"]["AP"] == pytest.approx(0.3)


def test_seed_placeholder_is_the_runs_seed(toy):
    study, root = toy
    seeded = Study(name="toy", doc="", rows=(Row("x", CONFIG, {"data.max_instances": "{seed}"}),), tables=study.tables)
    assert runner.row_config(seeded, seeded.rows[0], 3, root).data.max_instances == 3
    assert runner.row_overrides(seeded, seeded.rows[0], 3, root, False, fill=False)["data.max_instances"] == "{seed}"


def test_smoke_overrides_and_unknown_fields(toy):
    study, root = toy
    smoky = Study(name="toy", doc="", rows=study.rows, tables=study.tables, smoke={"train.total_steps": 2})
    config = runner.row_config(smoky, smoky.row("pre"), 0, root, smoke=True)
    assert config.train.total_steps == 2
    bad = Study(name="toy", doc="", rows=(Row("x", CONFIG, {"train.totl_steps": 1}),), tables=study.tables)
    with pytest.raises(KeyError, match="train.totl_steps"):
        runner.row_config(bad, bad.rows[0], 0, root)
    with pytest.raises(ValueError, match="unknown rows depended on"):
        Study(name="toy", doc="", rows=(Row("x", CONFIG, init_from="nope"),), tables=study.tables)


def test_publish_refuses_smoke_and_dirty_records(toy):
    study, root = toy
    runner.run_row(study, study.row("pre"), 0, root, train=Trainer())
    path = runner.record_path(os.path.join(root, "records"), "pre", 0)
    record = json.load(open(path))
    for change, message in (
        ({"smoke": True}, "smoke"),
        ({"provenance": dict(record["provenance"], dirty=True)}, "uncommitted"),
    ):
        json.dump(dict(record, **change), open(path, "w"))
        with pytest.raises(ValueError, match=message):
            runner.publish(study, root)
    assert runner.publish(study, root, allow_dirty=True) == ["pre s0"]
    assert runner.load_records(study.results_dir)[0]["provenance"]["dirty"] is True


def test_readme_blocks_are_rewritten_from_the_tables(toy):
    study, _ = toy
    begin = runner.BEGIN.format(name="main", study="toy")
    with open(study.readme, "w") as f:
        f.write(f"# Toy\n\nprose\n\n{begin}\nold\n<!-- /table:main -->\n\nmore prose\n")
    runner.update_readme(study, {"main": "| a |\n|---|\n"})
    text = open(study.readme).read()
    assert runner.readme_blocks(text, "toy") == {"main": "| a |\n|---|\n"}
    assert text.startswith("# Toy\n\nprose\n") and text.endswith("more prose\n")
    with pytest.raises(ValueError, match="blocks"):
        runner.update_readme(study, {"other": ""})


def test_mean_and_standard_error_cells():
    assert tables.cell([]) == "—"
    assert tables.cell([0.5]) == "0.500"
    # mean 0.2, sample std 0.1, n 3: standard error 0.1 / sqrt(3)
    assert tables.cell([0.1, 0.2, 0.3]) == "0.200 ± 0.058"
    assert tables.cell([60.0, 120.0], 1, 1 / 60) == "1.5 ± 0.5"


def test_provenance_line_flags_smoke_runs():
    made = {"commit": "abcdef0123456", "dirty": False, "device_count": 2, "device_kind": "cpu"}
    records = [{"smoke": True, "provenance": made}, {"smoke": False, "provenance": dict(made, dirty=True)}]
    line = tables.provenance_line(records)
    assert line.startswith("2 runs; **1 of them are smoke runs")
    assert "commit abcdef0123, abcdef0123 (dirty); devices 2 x cpu." in line


def test_a_killed_session_counts_until_the_last_write_and_is_flagged(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints" / "400").mkdir(parents=True)
    last = run_dir / "checkpoints" / "400" / "state"
    last.write_text("x")
    os.utime(last, (1000.0 + 300, 1000.0 + 300))
    (run_dir / "timing.json").write_text("{}")
    os.utime(run_dir / "timing.json", (1000.0, 1000.0))
    timing = {"sessions": [{"seconds": 50.0, "finished_at": "earlier"}, {"started": 1000.0}]}
    closed = runner.close_killed_session(timing, str(run_dir))
    assert closed["sessions"] == [{"seconds": 50.0, "finished_at": "earlier"}, {"seconds": 300.0, "killed": True}]
    finished = {"sessions": [{"seconds": 5.0, "finished_at": "x"}]}
    assert runner.close_killed_session(finished, str(run_dir)) == finished
