"""Every study project's README tables are generated from its committed records (what
`python -m frozen_det.projects.<study> --table_only` prints), and every committed record names a
commit in this repository's history and a config that frozen_det.config loads."""

import importlib
import subprocess

import pytest

from frozen_det import config as config_lib
from frozen_det.projects import PROJECTS, runner
from frozen_det.projects.provenance import REPOSITORY, is_ancestor


def _study(name):
    return importlib.import_module(f"frozen_det.projects.{name}").STUDY


def _full_history() -> bool:
    done = subprocess.run(
        ["git", "rev-parse", "--is-shallow-repository"], cwd=REPOSITORY, capture_output=True, text=True
    )
    return done.returncode == 0 and done.stdout.strip() == "false"


@pytest.mark.parametrize("name", PROJECTS)
def test_readme_tables_are_generated_from_the_committed_records(name):
    study = _study(name)
    with open(study.readme) as f:
        blocks = runner.readme_blocks(f.read(), name)
    assert blocks == study.tables(runner.load_records(study.results_dir)), (
        f"run `python -m frozen_det.projects.{name} --table_only --update_readme`"
    )


@pytest.mark.parametrize("name", PROJECTS)
def test_committed_records_name_their_commit_and_a_loadable_config(name):
    study = _study(name)
    history = _full_history()
    for record in runner.load_records(study.results_dir):
        where = f"{name} {record['row']} s{record['seed']}"
        assert not record["smoke"], where
        assert record["row"] in {r.name for r in study.rows}, where
        if history:
            assert is_ancestor(record["provenance"]["commit"]), f"{where}: commit not in this history"
        overrides = {
            k: v.format(root="/nonexistent") if isinstance(v, str) else v for k, v in record["overrides"].items()
        }
        config = runner.repo_config(record["config"], overrides)
        config_lib.complete(config)
