"""The one row runner of every study project (frozen_det/projects/<study>/).

A study is data: its rows (``Row``: a name, a repository config file with its argument, dotted
overrides, the row it initialises from, whether seeds apply) and a function that turns the rows'
records into Markdown tables. The runner trains a row at each seed into
``ROOT/runs/<row>/s<seed>`` with the library's API (its dependencies first, at the same seed, so
a transfer row's pre-training has the row's seed too), resumes a stopped row from its
checkpoint, and when the row is done writes its *record* ``ROOT/records/<row>/s<seed>.json``: the
final evaluation, the learning curve, train time, the resolved config, and the provenance as the row started (commit,
dirty tree, versions, devices). Records are small JSON: ``--publish`` copies them into the
project's ``results/`` folder to be committed, and every table on the project's README is
generated from the committed records (``--update_readme``; a test checks the README against
them). Seeds are a dimension: seed s sets ``train.seed``, ``data.seed`` and (where the data has
one) ``data.kshot_seed``; tables report mean ± standard error over the seeds with n.

    python -m frozen_det.projects.<study> --root DIR [--rows a,b] [--seeds N] [--force]
    python -m frozen_det.projects.<study> --root DIR --publish    # ROOT/records -> results/
    python -m frozen_det.projects.<study> --table_only [--update_readme]
    python -m frozen_det.projects.<study> --smoke --root DIR     # every row at a few steps, tiny
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import importlib
import json
import logging
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

from frozen_det.projects.provenance import REPOSITORY, provenance

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Row:
    """One row of a study. ``config`` is ``configs/FILE.py[:ARG]`` in the repository (empty for a
    ``train`` that needs none); ``overrides`` are dotted fields whose string values (also inside
    tuples, lists and dicts) may name ``{root}`` (the study's root), be ``{seed}`` (the run's seed,
    an integer: e.g. the seed that draws a subset) and name ``{run:ROW}`` (the run
    folder of another row at this row's seed, or at 0 when that row is not seeded: a dependency);
    ``init_from`` names the row whose run initialises this one (``train.init_from``, a dependency
    too); ``cost`` records the XLA train-step cost; ``iou_thresholds`` adds AP at those IoUs to a
    detector's evaluation. ``train(row, run_dir, config) -> outcome`` replaces training and
    evaluation for a row that is another kind of step (pseudo-boxes from a classifier, say);
    ``measure(run_dir, config) -> dict`` adds measurements of the finished run to the record's
    ``extra``."""

    name: str
    config: str
    overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    init_from: str | None = None
    seeded: bool = True
    cost: bool = False
    iou_thresholds: tuple[float, ...] | None = None
    train: Callable[[Row, str, Any], dict] | None = None
    measure: Callable[[str, Any], dict] | None = None

    @property
    def dependencies(self) -> tuple[str, ...]:
        """The rows this one reads: ``init_from`` and the ``{run:ROW}`` of its overrides."""
        named = [m for v in self.overrides.values() for m in _RUN_REF.findall(repr(v))]
        return tuple(dict.fromkeys(([self.init_from] if self.init_from else []) + named))


_RUN_REF = re.compile(r"\{run:([^}]+)\}")


# What --smoke does to every row unless a study says more: two steps, a checkpoint at the end.
SMOKE_SCHEDULE = {
    "train.total_steps": 2,
    "train.checkpoint_every": 2,
    "train.log_every": 1,
    "train.schedule.warmup_steps": 1,
}


@dataclasses.dataclass(frozen=True)
class Study:
    """A study project: its rows, how its records become tables (``tables(records) -> {name:
    markdown}``), its default number of seeds, the overrides of ``--smoke`` (every row at a few
    steps and tiny sizes, for the test suite), and ``prepare(root, smoke)`` for data the rows read
    (canvases written once)."""

    name: str
    doc: str
    rows: tuple[Row, ...]
    tables: Callable[[list[dict]], dict[str, str]]
    seeds: int = 3
    smoke: Mapping[str, Any] = dataclasses.field(default_factory=lambda: dict(SMOKE_SCHEDULE))
    prepare: Callable[[str, bool], None] | None = None

    def __post_init__(self):
        names = [r.name for r in self.rows]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        missing = sorted({d for r in self.rows for d in r.dependencies if d not in names})
        if duplicates or missing:
            raise ValueError(f"study {self.name}: duplicate rows {duplicates}, unknown rows depended on {missing}")

    def row(self, name: str) -> Row:
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(name)

    @property
    def folder(self) -> str:
        return os.path.join(os.path.dirname(os.path.abspath(__file__)), self.name)

    @property
    def results_dir(self) -> str:
        """The committed records."""
        return os.path.join(self.folder, "results")

    @property
    def readme(self) -> str:
        return os.path.join(self.folder, "README.md")


# ----------------------------------------------------------------------------- paths and configs


def _slug(name: str) -> str:
    return name.replace(":", "_")


def seeds_of(row: Row, seeds: int) -> tuple[int, ...]:
    return tuple(range(seeds)) if row.seeded else (0,)


def workdir(root: str, row: Row, seed: int) -> str:
    return os.path.join(root, "runs", _slug(row.name), f"s{seed}")


def record_path(records: str, row_name: str, seed: int) -> str:
    return os.path.join(records, _slug(row_name), f"s{seed}.json")


def repo_config(spec: str, overrides: Mapping[str, Any] | None = None):
    """The config of ``configs/FILE.py[:ARG]`` in the repository, dotted ``overrides`` set."""
    file, _, arg = spec.partition(":")
    if not os.path.isfile(os.path.join(REPOSITORY, file)):
        raise FileNotFoundError(
            f"{file}: not in {REPOSITORY}; the study projects run from a clone of the repository "
            "(configs/ is not installed)"
        )
    if REPOSITORY not in sys.path:
        sys.path.insert(0, REPOSITORY)  # config files import each other from the `configs` package
    get_config = importlib.import_module(file[: -len(".py")].replace("/", ".")).get_config
    config = get_config(arg) if arg else get_config()
    set_fields(config, overrides or {})
    return config


def set_fields(config, overrides: Mapping[str, Any]) -> None:
    """Sets dotted fields in place: {"train.schedule.base_lr": 0.05, ...}; an unknown field is a
    KeyError naming it."""
    for field, value in overrides.items():
        section, _, key = field.rpartition(".")
        node = config
        for part in section.split(".") if section else ():
            node = node[part]
        if key not in node:
            raise KeyError(f"{field}: no such config field")
        node[key] = value


def _fill(value, root: str, runs: Callable[[str], str], seed: int):
    """``value`` with ``{root}``, ``{seed}`` and ``{run:ROW}`` filled in, through tuples, lists and dicts."""
    if value == "{seed}":
        return seed
    if isinstance(value, str):
        return _RUN_REF.sub(lambda m: runs(m.group(1)), value).replace("{root}", root)
    if isinstance(value, tuple | list):
        return type(value)(_fill(v, root, runs, seed) for v in value)
    if isinstance(value, Mapping):
        return {k: _fill(v, root, runs, seed) for k, v in value.items()}
    return value


def dependency_seed(study: Study, name: str, seed: int) -> int:
    return seed if study.row(name).seeded else 0


def row_overrides(study: Study, row: Row, seed: int, root: str, smoke: bool, fill: bool = True) -> dict:
    """Every override a row's run gets: the row's own (placeholders filled in unless ``fill`` is
    False), the seed's and, with ``smoke``, the study's smoke overrides."""
    runs = lambda name: workdir(root, study.row(name), dependency_seed(study, name, seed))
    keep = (lambda v: v) if not fill else (lambda v: _fill(v, root, runs, seed))
    out = {k: keep(v) for k, v in row.overrides.items()}
    out.update({"train.seed": seed, "data.seed": seed})
    if smoke:
        out.update({k: keep(v) for k, v in study.smoke.items()})
    return out


def row_config(study: Study, row: Row, seed: int, root: str, smoke: bool = False):
    """The row's config at ``seed`` (None for a ``train`` step without a config file)."""
    if not row.config:
        return None
    config = repo_config(row.config)
    overrides = row_overrides(study, row, seed, root, smoke)
    if "kshot_seed" in config.data:
        overrides["data.kshot_seed"] = seed
    if row.init_from:
        source = study.row(row.init_from)
        overrides["train.init_from"] = workdir(root, source, dependency_seed(study, row.init_from, seed))
    set_fields(config, overrides)
    return config


# ------------------------------------------------------------------------------------- running


def _read_json(path: str):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _write_json(path: str, value) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(value, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def _numbers(result: Mapping) -> dict:
    """The numeric entries of an evaluation result (and dicts of numbers: per-class AP)."""
    out = {}
    for key, value in result.items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[key] = value
        elif isinstance(value, Mapping) and all(isinstance(v, int | float) for v in value.values()):
            out[key] = dict(value)
    return out


def learning_curve(run_dir: str, split: str) -> list[list]:
    """[[step, {metric: value}]] of every evaluation the run wrote (RUN/eval/<split>_step<N>.json)."""
    out = []
    for path in glob.glob(os.path.join(run_dir, "eval", f"{split}_step*.json")):
        stem = os.path.basename(path)[len(split) + len("_step") : -len(".json")]
        if stem.isdigit():
            result = _read_json(path)
            out.append([int(stem), {k: v for k, v in _numbers(result).items() if not isinstance(v, dict)}])
    return sorted(out, key=lambda x: x[0])


def close_killed_session(timing: dict, run_dir: str) -> dict:
    """A session that a kill (SIGKILL, a lost machine) ended before training returned is still
    open in timing.json; it is closed as lasting until the run directory's last write (a
    checkpoint or a metrics line), flagged "killed". The steps after its last checkpoint are
    redone by the next session, so up to one checkpoint interval counts twice."""
    sessions = timing["sessions"]
    if sessions and "seconds" in sessions[-1]:
        return timing
    if sessions:
        started = sessions[-1]["started"]
        last_write = max(
            (os.path.getmtime(os.path.join(d, f)) for d, _, files in os.walk(run_dir) for f in files),
            default=started,
        )
        sessions[-1] = {"seconds": round(max(last_write - started, 0.0), 1), "killed": True}
    return timing


def train_and_evaluate_row(row: Row, run_dir: str, config) -> dict:
    """Trains (or resumes) a row's run and evaluates its final checkpoint with the evaluate entry
    point's API; {"metrics", "train_seconds", "curve", "cost"?, "restored"?}. Exits after a
    preempted session (SIGTERM saves a checkpoint) without evaluating."""
    from frozen_det.evaluate import evaluate
    from frozen_det.resources import train_step_cost
    from frozen_det.training.loop import train_and_evaluate
    from frozen_det.training.run import Run

    os.makedirs(run_dir, exist_ok=True)
    config.train.eval_at_end = False  # evaluated below, with the evaluate entry point's API
    timing_path = os.path.join(run_dir, "timing.json")
    timing = close_killed_session(_read_json(timing_path) or {"sessions": []}, run_dir)
    start = time.time()
    timing["sessions"].append({"started": start})
    _write_json(timing_path, timing)  # open until training returns: a killed session stays open
    train_and_evaluate(config, run_dir)
    timing["sessions"][-1] = {"seconds": round(time.time() - start, 1), "finished_at": time.ctime()}
    _write_json(timing_path, timing)
    with Run(run_dir, config) as run:
        reached, total = run.latest_step, int(config.train.total_steps)
    if reached is None or reached < total:
        raise SystemExit(f"{row.name} stopped at step {reached} of {total}; run the same command again to resume")
    result = evaluate(config, run_dir, iou_thresholds=row.iou_thresholds)
    out = {
        "metrics": _numbers(result),
        "train_seconds": sum(s["seconds"] for s in timing["sessions"]),
        "train_sessions": len(timing["sessions"]),
        "killed_sessions": sum(bool(s.get("killed")) for s in timing["sessions"]),
        "curve": learning_curve(run_dir, config.data.eval_split),
    }
    if row.cost:
        out["cost"] = train_step_cost(config)
    report = _read_json(os.path.join(run_dir, "init_from.json"))
    if report is not None:
        out["restored"] = {k: len(v) for k, v in report.items() if isinstance(v, list)}
    return out


Trainer = Callable[[Row, str, Any], dict]


def run_row(
    study: Study,
    row: Row,
    seed: int,
    root: str,
    smoke: bool = False,
    force: bool = False,
    train: Trainer = train_and_evaluate_row,
) -> dict:
    """The record of ``row`` at ``seed``: read back when ROOT/records has it (unless ``force``),
    else its dependencies first (at the same seed), then its run trained and evaluated (or its
    own ``train`` step), then its ``measure``. ``force`` reruns the row itself, not the rows it
    depends on."""
    path = record_path(os.path.join(root, "records"), row.name, seed)
    if force:
        os.remove(path) if os.path.exists(path) else None
        shutil.rmtree(workdir(root, row, seed), ignore_errors=True)
    record = _read_json(path)
    if record is not None:
        return record
    for name in row.dependencies:
        run_row(study, study.row(name), dependency_seed(study, name, seed), root, smoke, train=train)
    config = row_config(study, row, seed, root, smoke)
    run_dir = workdir(root, row, seed)
    log.info("%s: row %s, seed %d -> %s", study.name, row.name, seed, run_dir)
    began, made_by = time.time(), provenance()  # the code as this session starts the row
    outcome = (row.train or train)(row, run_dir, config)
    if row.measure:
        outcome["extra"] = row.measure(run_dir, config)
    record = {
        "study": study.name,
        "row": row.name,
        "seed": seed,
        "smoke": smoke,
        "config": row.config,
        "overrides": row_overrides(study, row, seed, "{root}", smoke, fill=False),
        "dependencies": {name: dependency_seed(study, name, seed) for name in row.dependencies},
        "resolved_config": json.loads(config.to_json()) if config is not None else None,
        **outcome,
        "provenance": dict(made_by, session_seconds=round(time.time() - began, 1)),
    }
    _write_json(path, record)
    return record


def load_records(folder: str) -> list[dict]:
    """Every record under ``folder`` (``<row>/s<seed>.json``), sorted by row and seed."""
    records = [_read_json(p) for p in glob.glob(os.path.join(folder, "**", "s*.json"), recursive=True)]
    return sorted(records, key=lambda r: (r["row"], r["seed"]))


# ---------------------------------------------------------------------- publishing and README

BEGIN = (
    "<!-- table:{name} generated by `python -m frozen_det.projects.{study} --table_only --update_readme`; "
    "do not edit -->"
)
END = "<!-- /table:{name} -->"


def publish(study: Study, root: str, allow_dirty: bool = False) -> list[str]:
    """Copies ROOT/records into the project's results/ folder; refuses smoke records, and records
    made on a tree that differed from its commit unless ``allow_dirty``. Returns what it copied."""
    copied = []
    for record in load_records(os.path.join(root, "records")):
        where = f"{record['row']} s{record['seed']}"
        if record["smoke"]:
            raise ValueError(f"{where}: a --smoke record; publish full runs only (another --root)")
        if record["provenance"]["dirty"] and not allow_dirty:
            raise ValueError(
                f"{where}: made on a tree with uncommitted changes to {record['provenance']['commit']}; "
                "commit and rerun, or --allow_dirty (the record keeps dirty=true)"
            )
        _write_json(record_path(study.results_dir, record["row"], record["seed"]), record)
        copied.append(where)
    return copied


def readme_blocks(text: str, study: str) -> dict[str, str]:
    """{name: content} of the generated blocks of a README."""
    out, lines, name = {}, [], None
    for line in text.splitlines():
        if line.startswith("<!-- table:"):
            name, lines = line[len("<!-- table:") :].split(" ", 1)[0], []
        elif name and line == END.format(name=name):
            out[name] = "\n".join(lines).strip("\n") + "\n"
            name = None
        elif name:
            lines.append(line)
    return out


def update_readme(study: Study, tables: dict[str, str]) -> None:
    """Replaces the README's generated blocks with ``tables``; a table without a block, or a block
    without a table, is an error naming it."""
    with open(study.readme) as f:
        text = f.read()
    present = set(readme_blocks(text, study.name))
    if present != set(tables):
        raise ValueError(f"{study.readme}: blocks {sorted(present)} but tables {sorted(tables)}")
    out, skipping = [], None
    for line in text.splitlines():
        if skipping:
            if line == END.format(name=skipping):
                out += [tables[skipping].rstrip("\n"), line]
                skipping = None
            continue
        out.append(line)
        if line.startswith("<!-- table:"):
            skipping = line[len("<!-- table:") :].split(" ", 1)[0]
            out[-1] = BEGIN.format(name=skipping, study=study.name)
    with open(study.readme, "w") as f:
        f.write("\n".join(out) + "\n")


# ------------------------------------------------------------------------------ command line


def chosen_rows(study: Study, text: str) -> list[Row]:
    names = [r.strip() for r in text.split(",") if r.strip()]
    unknown = [n for n in names if n not in {r.name for r in study.rows}]
    if unknown:
        raise ValueError(f"--rows: unknown rows {unknown}; choose from {', '.join(r.name for r in study.rows)}")
    return [study.row(n) for n in names] if names else list(study.rows)


def parser(study: Study) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python -m frozen_det.projects.{study.name}", description=study.doc)
    p.add_argument("--root", default=f"/tmp/frozen_det_projects/{study.name}", help="runs and records go here")
    p.add_argument(
        "--rows", default="", help="comma-separated rows (default: all): " + ",".join(r.name for r in study.rows)
    )
    p.add_argument("--seeds", type=int, default=study.seeds, help="seeds 0..N-1 of every seeded row")
    p.add_argument("--force", action="store_true", help="delete and rerun the chosen rows (not their dependencies)")
    p.add_argument("--smoke", action="store_true", help="every row at a few steps and tiny sizes (tests)")
    p.add_argument("--table_only", action="store_true", help="print the tables of --results; run nothing")
    p.add_argument(
        "--results",
        default="",
        help="records the tables read (default: ROOT/records; --table_only: the committed results/)",
    )
    p.add_argument("--publish", action="store_true", help="copy ROOT/records into the project's results/ folder")
    p.add_argument("--allow_dirty", action="store_true", help="--publish records made on an uncommitted tree")
    p.add_argument(
        "--update_readme", action="store_true", help="rewrite the README's tables from the committed results"
    )
    return p


def main(study: Study, argv: list[str] | None = None) -> None:
    args = parser(study).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from frozen_det.runtime import one_line_errors, quiet_tensorflow

    with one_line_errors(traceback="-v" in (argv or sys.argv)):
        if args.seeds < 1:
            raise ValueError(f"--seeds {args.seeds}: at least 1")
        if args.smoke and args.publish:
            raise ValueError("--smoke with --publish: smoke records are never published")
        root = os.path.abspath(args.root)
        if not (args.table_only or args.publish or args.update_readme):
            quiet_tensorflow()
            rows = chosen_rows(study, args.rows)
            if study.prepare:
                study.prepare(root, args.smoke)
            for row in rows:
                for seed in seeds_of(row, args.seeds):
                    run_row(study, row, seed, root, args.smoke, args.force)
        if args.publish:
            for where in publish(study, root, args.allow_dirty):
                print(f"published {where} -> {study.results_dir}")
        committed = args.table_only or args.publish or args.update_readme
        results = args.results or (study.results_dir if committed else os.path.join(root, "records"))
        tables = study.tables(load_records(results))
        if args.update_readme:
            update_readme(study, tables)
            print(f"updated {study.readme}")
        for name, table in tables.items():
            print(f"\n### {name}\n\n{table}", flush=True)
