"""Kill soak: a training run killed at random moments and restarted each time ends where an
uninterrupted run ends (docs/robustness.md).

    python tools/kill_soak.py --output docs/results/kill_soak.json [--kills 20 --steps 60 --checkpoint_every 5]

Trains the config (default: configs/tiny/two_stage.py at a 64-pixel canvas) once without
interruption, then again in another workdir through `python -m frozen_det.train`, killing the
process `--kills` times (SIGKILL and SIGTERM in turn; every third kill is a SIGKILL while a
checkpoint is being written, when the loop's save is caught in the act) and running the same
command again after each kill, to the end. For each kill it records the signal, the last step the
run had logged, the newest checkpoint left on disk and the step the next run resumed from
("resumed from step N" on its console): the steps lost beyond the last checkpoint are the
difference, 0 when nothing is lost. At the end it compares the final parameters and the logged
loss curve with the uninterrupted run's (bit for bit, and the largest relative difference) and
checks that no step was logged twice. Writes a JSON with the commit it ran at (`git rev-parse
HEAD`, and whether the tree had uncommitted changes).

    python tools/kill_soak.py --table docs/results/kill_soak.json

prints that result as the Markdown table of docs/robustness.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from frozen_det.projects.provenance import commit

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TMP_MARK = ".orbax-checkpoint-tmp"  # orbax writes a step into <step>.orbax-checkpoint-tmp-<n>, then renames it


def train_command(args, workdir: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "frozen_det.train",
        f"--config={args.config}",
        f"--workdir={workdir}",
        f"--config.train.total_steps={args.steps}",
        f"--config.train.checkpoint_every={args.checkpoint_every}",
        "--config.train.log_every=1",
        "--config.train.eval_at_end=False",
        *args.overrides,
    ]


def logged_steps(workdir: str) -> list[int]:
    path = os.path.join(workdir, "train_metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line)["step"] for line in f if line.endswith("\n")]  # a kill may cut the last short


def checkpoint_steps(workdir: str) -> list[int]:
    folder = os.path.join(workdir, "checkpoints")
    return sorted(int(d) for d in os.listdir(folder) if d.isdigit()) if os.path.isdir(folder) else []


def saving_now(workdir: str) -> bool:
    folder = os.path.join(workdir, "checkpoints")
    return os.path.isdir(folder) and any(TMP_MARK in d for d in os.listdir(folder))


def start(args, workdir: str, log_path: str) -> subprocess.Popen:
    with open(log_path, "w") as log:
        return subprocess.Popen(
            train_command(args, workdir), cwd=REPO, env=args.env, stdout=log, stderr=subprocess.STDOUT
        )


def training(log_path: str) -> bool:
    """Whether the run logging to `log_path` has printed a progress line (imported, compiled, stepping)."""
    with open(log_path) as f:
        return "] step " in f.read()


def resumed_from(log_path: str) -> int:
    """The step a run resumed from, from its console ("resumed from step N"; 0: from scratch)."""
    with open(log_path) as f:
        for line in f:
            if "resumed from step " in line:
                return int(line.split("resumed from step ")[1].split()[0])
    return 0


def kill_once(args, workdir: str, log_path: str, kind: str, rng: random.Random) -> dict:
    """Starts the run, kills it as `kind` says ("sigterm", "sigkill", "sigkill_saving") once it
    trains, and returns what happened; None-valued fields when the run finished first."""
    process = start(args, workdir, log_path)
    while not training(log_path) and process.poll() is None:
        time.sleep(0.05)
    if kind == "sigkill_saving":
        deadline = time.time() + 120
        while not saving_now(workdir) and process.poll() is None and time.time() < deadline:
            time.sleep(0.001)
    else:
        time.sleep(rng.uniform(0.0, args.max_delay))
    caught_saving = saving_now(workdir)
    if process.poll() is None:
        process.send_signal(signal.SIGTERM if kind == "sigterm" else signal.SIGKILL)
    code = process.wait()
    steps = logged_steps(workdir)
    return {
        "kind": kind,
        "exit_code": code,
        "caught_saving": caught_saving,
        "resumed_from": resumed_from(log_path),
        "last_logged_step": steps[-1] if steps else 0,
        "checkpoints_after": checkpoint_steps(workdir),
    }


def final_comparison(reference: str, soaked: str) -> dict:
    """Parameters and loss curves of the two runs: bit-identical or not, largest differences."""
    import jax
    import numpy as np

    from frozen_det.training.run import Run

    def leaves(workdir):
        with Run(workdir) as run:
            return jax.tree.leaves(jax.device_get(run.variables()))

    ours, theirs = leaves(soaked), leaves(reference)
    abs_diff = max(float(np.max(np.abs(a - b))) for a, b in zip(ours, theirs))
    rel = max(float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-12))) for a, b in zip(ours, theirs))
    curves = []
    for workdir in (reference, soaked):
        with open(os.path.join(workdir, "train_metrics.jsonl")) as f:
            curves.append({r["step"]: r["total"] for r in map(json.loads, f)})
    curve_rel = max(abs(curves[1][s] - curves[0][s]) / max(abs(curves[0][s]), 1e-12) for s in curves[0])
    return {
        "params_bit_identical": all(np.array_equal(a, b) for a, b in zip(ours, theirs)),
        "params_max_abs_diff": abs_diff,
        "params_max_rel_diff": rel,
        "loss_curve_bit_identical": curves[0] == curves[1],
        "loss_curve_max_rel_diff": curve_rel,
    }


def without_root(argv: list[str]) -> list[str]:
    """The command line minus `--root DIR` (where this machine kept the workdirs)."""
    out, skip = [], False
    for a in argv:
        if not skip and a != "--root" and not a.startswith("--root="):
            out.append(a)
        skip = a == "--root"
    return out


def summary_table(result: dict) -> str:
    """The result JSON's summary as a Markdown table, headed by the commit and the command."""
    state = f"{result['commit'][:10]}{' (uncommitted changes)' if result['dirty'] else ''}"
    lines = [
        f"Commit {state}, `{result['command']}`: {result['steps']} steps, a checkpoint every "
        f"{result['checkpoint_every']}, seed {result['seed']}, {result['seconds']} s.",
        "",
        "| | |",
        "|---|---|",
    ]
    lines += [f"| {key.replace('_', ' ')} | {value} |" for key, value in result["summary"].items()]
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="configs/tiny/two_stage.py", help="relative to the repository")
    ap.add_argument("--overrides", nargs="*", default=["--config.data.canvas=64"])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--checkpoint_every", type=int, default=5)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--max_delay", type=float, default=4.0, help="seconds of training before a random kill")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--root", default="", help="workdirs (default: a temporary folder, removed)")
    ap.add_argument("--output", help="the result JSON")
    ap.add_argument("--table", metavar="RESULT_JSON", help="print that result as a Markdown table and stop")
    ap.add_argument("--no_cache", action="store_true", help="every process compiles (no persistent XLA cache)")
    args = ap.parse_args(argv)
    if args.table:
        with open(args.table) as f:
            print(summary_table(json.load(f)))
        return
    if not args.output:
        ap.error("--output: where to write the result JSON (or --table RESULT_JSON to print one)")
    rng = random.Random(args.seed)
    root = args.root or tempfile.mkdtemp(prefix="kill_soak_")
    # With the cache (default), the restarts load the programs the reference run compiled.
    args.env = (
        dict(os.environ) if args.no_cache else dict(os.environ, JAX_COMPILATION_CACHE_DIR=os.path.join(root, "xla"))
    )
    reference, soaked = os.path.join(root, "reference"), os.path.join(root, "soaked")
    for workdir in (reference, soaked):
        shutil.rmtree(workdir, ignore_errors=True)
    began, git = time.time(), commit()  # the code the run uses: HEAD when it starts
    subprocess.run(train_command(args, reference), cwd=REPO, env=args.env, check=True, capture_output=True)
    kinds = ["sigkill_saving" if k % 3 == 2 else ("sigterm" if k % 2 else "sigkill") for k in range(args.kills)]
    kills, attempt = [], 0
    while len(kills) < args.kills:
        newest = checkpoint_steps(soaked)[-1:] or [0]
        record = kill_once(args, soaked, os.path.join(root, f"attempt_{attempt}.log"), kinds[len(kills)], rng)
        record["newest_checkpoint_before"] = newest[0]
        record["lost_steps_beyond_last_checkpoint"] = newest[0] - record["resumed_from"]
        attempt += 1
        if record["exit_code"] == 0 and record["last_logged_step"] >= args.steps:
            raise SystemExit(
                f"the run finished before kill {len(kills) + 1}: use more --steps or a smaller --max_delay"
            )
        kills.append(record)
        print(json.dumps(record), flush=True)
    final_log = os.path.join(root, "final.log")
    process = start(args, soaked, final_log)
    if process.wait():
        raise SystemExit(f"the last run failed; see {final_log}")
    steps = logged_steps(soaked)
    summary = {
        "kills": len(kills),
        "sigkill": sum(k["kind"] != "sigterm" for k in kills),
        "sigterm": sum(k["kind"] == "sigterm" for k in kills),
        "killed_while_saving_a_checkpoint": sum(k["caught_saving"] for k in kills),
        "lost_steps_beyond_last_checkpoint": sum(k["lost_steps_beyond_last_checkpoint"] for k in kills),
        "sigterm_saved_the_step_it_was_on": all(
            k["checkpoints_after"][-1:] == [k["last_logged_step"]] for k in kills if k["kind"] == "sigterm"
        ),
        "steps_logged_twice": len(steps) - len(set(steps)),
        "every_step_logged": sorted(set(steps)) == list(range(1, args.steps + 1)),
        "final_checkpoint": checkpoint_steps(soaked)[-1],
        **final_comparison(reference, soaked),
    }
    result = {
        **git,
        "command": "python tools/kill_soak.py " + " ".join(without_root(argv if argv is not None else sys.argv[1:])),
        "train_command": " ".join(train_command(args, "WORKDIR")[1:]),
        "steps": args.steps,
        "checkpoint_every": args.checkpoint_every,
        "seed": args.seed,
        "xla_cache_shared": not args.no_cache,
        "seconds": round(time.time() - began),
        "summary": summary,
        "kills": kills,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(summary, indent=1))
    if not args.root:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
