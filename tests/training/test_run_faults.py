"""Nothing lost, nothing silent in a run (issue 31), on the toy task of tests/test_toy_task.py (its
step compiles in seconds), in this process: Ctrl-C (a real SIGINT) saves the step the run is on
and the same command resumes it exactly (its exit status and one line: tests/test_faults.py); a
resumed run logs no step twice; a damaged latest checkpoint is reported in one line and training
and evaluation fall back to the step before; a non-finite loss stops the run naming the step and
the last good checkpoint (or is skipped), and never reaches the weights."""

import glob
import json
import logging
import os
import re
import shutil
import signal
import sys
import textwrap
import time

import jax
import numpy as np
import pytest
from test_toy_task import TOY_CONFIG, TOY_TASK

STEPS = 40


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """A folder with the toy task and its config, importable."""
    folder = tmp_path_factory.mktemp("toy")
    (folder / "toy_task.py").write_text(textwrap.dedent(TOY_TASK))
    (folder / "toy_config.py").write_text(textwrap.dedent(TOY_CONFIG))
    sys.path.insert(0, str(folder))
    yield folder
    sys.path.remove(str(folder))


def toy_config(**train):
    import toy_config

    config = toy_config.get_config()
    config.train.update(dict(dict(total_steps=STEPS, log_every=1, eval_at_end=False, checkpoint_every=10), **train))
    return config


def train(workdir, **train):
    from frozen_det.training.loop import train_and_evaluate

    return train_and_evaluate(toy_config(**train), str(workdir))


def logged(workdir) -> list[dict]:
    with open(os.path.join(workdir, "train_metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def losses(workdir) -> dict:
    records = logged(workdir)
    steps = [r["step"] for r in records]
    assert len(steps) == len(set(steps)), f"steps logged twice: {sorted(s for s in steps if steps.count(s) > 1)}"
    return {r["step"]: r["total"] for r in records}


def assert_same_curve(workdir, reference):
    expected, got = losses(reference), losses(workdir)
    assert sorted(got) == list(range(1, STEPS + 1))
    for step in got:
        assert got[step] == pytest.approx(expected[step], rel=1e-6), step


@pytest.fixture(scope="module")
def reference(toy, tmp_path_factory):
    """An uninterrupted run: checkpoints at 20, 30, 40 (the last three of every 10 steps)."""
    workdir = tmp_path_factory.mktemp("reference")
    train(workdir)
    return workdir


def damage(step_dir):
    """Truncates the data files of a checkpoint step, as a full disk or a bad copy would."""
    for path in glob.glob(os.path.join(step_dir, "state", "d", "*")):
        with open(path, "r+b") as f:
            f.truncate(16)


class InterruptedAt:
    """A train pipeline that sends this process SIGINT, as Ctrl-C does, while the batch of `step`
    is read (the loop's handler is installed by then)."""

    def __init__(self, pipeline, step):
        self.pipeline, self.calls, self.step = pipeline, 0, step

    def __next__(self):
        self.calls += 1
        if self.calls == self.step:
            os.kill(os.getpid(), signal.SIGINT)
        return next(self.pipeline)

    def __getattr__(self, name):
        return getattr(self.pipeline, name)


def test_ctrl_c_saves_the_current_step_and_the_same_command_resumes_exactly(reference, tmp_path, monkeypatch, capsys):
    from frozen_det.training import loop

    def interrupted_task(config):
        task = get_task(config)
        train_pipeline = task.train_pipeline
        task.train_pipeline = lambda: InterruptedAt(train_pipeline(), 12)
        return task

    get_task = loop.get_task
    monkeypatch.setattr(loop, "get_task", interrupted_task)
    before = signal.getsignal(signal.SIGINT)  # a test run earlier in this worker may have changed it
    workdir = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt, match=r"interrupted: saved step 12 in .*; the same command resumes"):
        train(workdir, checkpoint_every=1000)  # no periodic checkpoint before the end
    assert "Ctrl-C again: stop without saving" in capsys.readouterr().err
    assert os.listdir(workdir / "checkpoints") == ["12"]
    assert [r["step"] for r in logged(workdir)] == list(range(1, 13))
    assert signal.getsignal(signal.SIGINT) is before  # handlers given back

    monkeypatch.undo()
    train(workdir, checkpoint_every=1000)  # the same run again
    assert_same_curve(workdir, reference)


def test_a_damaged_latest_checkpoint_falls_back_and_training_logs_no_step_twice(reference, tmp_path, caplog):
    workdir = tmp_path / "damaged"
    shutil.copytree(reference, workdir)
    damage(workdir / "checkpoints" / str(STEPS))  # the log already holds steps 31..40, never saved now
    with caplog.at_level(logging.WARNING, logger="frozen_det"):
        train(workdir)
    unreadable = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
    assert unreadable[0].startswith(f"checkpoint step {STEPS} in ") and "falling back to step 30" in unreadable[0]
    assert "\n" not in unreadable[0] and "tensorstore_spec" not in unreadable[0]
    assert os.path.isdir(workdir / "checkpoints_unreadable" / str(STEPS))  # kept for a post-mortem
    assert_same_curve(workdir, reference)  # steps 31..40 trained again from step 30, each logged once

    from frozen_det.training.run import Run

    with Run(str(workdir)) as run:
        assert int(run.restored_state().step) == STEPS  # saved again, readable


def test_evaluation_reads_the_newest_readable_step_and_names_the_unreadable_one(reference, tmp_path, caplog):
    from frozen_det.evaluate import evaluate
    from frozen_det.training.checkpointing import UnreadableCheckpoint
    from frozen_det.training.run import Run

    workdir = tmp_path / "damaged"
    shutil.copytree(reference, workdir)
    damage(workdir / "checkpoints" / str(STEPS))
    os.remove(workdir / "checkpoints" / "30" / "state" / "manifest.ocdbt")  # a deleted manifest
    with Run(str(workdir)) as run, caplog.at_level(logging.WARNING, logger="frozen_det"):
        assert int(run.restored_state().step) == 20
        with pytest.raises(
            UnreadableCheckpoint, match=rf"step {STEPS} .* is unreadable .*other steps kept: \[20, 30\]"
        ):
            run.restored_state(STEPS)
        with pytest.raises(ValueError, match=r"no checkpoint at step 999; it kept steps \[20, 30, 40\]"):
            run.check_step(999)
    warnings = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
    assert len(warnings) == 2 and all("\n" not in w and "tensorstore_spec" not in w for w in warnings)
    assert sorted(os.listdir(workdir / "checkpoints")) == ["20", "30", "40"]  # evaluation moves nothing

    start = time.time()
    with pytest.raises(ValueError, match=r"--step 999: .* it kept steps \[20, 30, 40\]"):
        evaluate(toy_config(), str(workdir), step=999)
    assert time.time() - start < 10, "the step is checked before the model and the data are built"


def test_evaluating_other_data_never_overwrites_the_runs_own_results(reference):
    from frozen_det.evaluate import evaluate

    own = evaluate(toy_config(), str(reference))
    other_config = toy_config()
    other_config.data.synthetic.num_validation = 16  # another dataset
    other = evaluate(other_config, str(reference))
    assert own["path"].endswith(f"eval/validation_step{STEPS}.json")
    assert other["path"] != own["path"] and "_data-" in os.path.basename(other["path"])
    with open(own["path"]) as f:
        assert json.load(f)["num_images"] == 64
    with open(other["path"]) as f:
        assert json.load(f)["num_images"] == 16


def test_a_nonfinite_loss_stops_the_run_naming_the_step_and_never_reaches_the_weights(toy, tmp_path):
    from frozen_det.training.run import Run

    diverging = dict(total_steps=6, schedule=dict(base_lr=1e30))  # the loss overflows at step 2
    workdir = tmp_path / "stop"
    with pytest.raises(FloatingPointError) as error:
        train(workdir, checkpoint_every=1, **diverging)
    pattern = r"at step (\d+): .* last good checkpoint is step (\d+) .* train.nonfinite='skip'"
    found = re.search(pattern, str(error.value))
    assert found, str(error.value)
    bad, good = (int(v) for v in found.groups())
    with Run(str(workdir)) as run:
        assert run.steps[-1] == good == bad - 1  # every step before it saved, nothing after
        assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(jax.device_get(run.variables())))

    workdir = tmp_path / "skip"
    train(workdir, checkpoint_every=3, nonfinite="skip", **diverging)
    records = logged(workdir)
    assert [r["step"] for r in records] == list(range(1, 7)) and sum(r["nonfinite_steps"] for r in records) >= 4
    with Run(str(workdir)) as run:
        assert run.steps[-1] == 6
        assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(jax.device_get(run.variables())))
