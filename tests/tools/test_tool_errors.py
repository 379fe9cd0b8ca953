"""Tools fail on a user's mistake in one line that says what is wrong (issue 31): a weights file that
is not a PyTorch checkpoint, `weight_drift.py --runs` without names."""

import convert_checkpoint
import pytest
import weight_drift


def test_convert_checkpoint_of_a_file_that_is_not_a_checkpoint_is_one_line(tmp_path, capsys):
    weights = tmp_path / "resnet18.pth"
    weights.write_text("<html>a download that went wrong</html>")
    with pytest.raises(SystemExit) as exit_:
        convert_checkpoint.main(
            [
                "--format",
                "torchvision_resnet",
                "--depth",
                "18",
                "--input",
                str(weights),
                "--output",
                str(tmp_path / "out"),
            ]
        )
    assert exit_.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and f"{weights} is not a PyTorch checkpoint" in lines[0], lines
    assert not (tmp_path / "out").exists()


def test_weight_drift_runs_may_be_bare_workdirs_and_bad_lists_are_named():
    assert weight_drift.parse_runs("runs/finetune,frozen=runs/bccd_frozen/") == {
        "finetune": "runs/finetune",
        "frozen": "runs/bccd_frozen/",
    }
    for bad, message in (("a=x,a=y", "two runs named 'a'"), ("=x", "not name=WORKDIR"), (",", "give name=WORKDIR")):
        with pytest.raises(ValueError, match=message):
            weight_drift.parse_runs(bad)
