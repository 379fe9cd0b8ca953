"""Where a config's train step spends its time: XLA's per-op profile, attributed to the model.

    python tools/profile_step.py --config configs/bccd/frozen.py:fpn
    python tools/profile_step.py --config configs/bench/r50_fpn_torchvision.py:frozen --top 40 \
        --json /tmp/profile.json
    python tools/profile_step.py --config configs/tiny/two_stage.py --steps 2 --trace_dir /tmp/trace

The step is the training loop's own (the task's loss + `make_train_step` on the config's optimizer
and trainable partition, one device), fed the first batch of the config's train pipeline, so
data-dependent work (NMS loop trip counts) is realistic. After one warm-up step, `--steps`
steps run under `jax.profiler.trace`. Every thunk XLA executes is a trace event carrying its HLO
instruction name; the compiled HLO's metadata maps the instruction to the JAX operation and
Flax module path that produced it. The tool prints

  - wall time per step and the summed op time (ops on different threads may overlap, so the
    sum can exceed the wall time; their ratio is the parallelism XLA found);
  - op time per model part (the first module path component: backbone, neck, rpn_head, ...,
    with "(loss/targets)" for work outside any module) and direction: forward, or backward
    (ops under `transpose(...)`, JAX's name for the VJP of the forward pass);
  - op time per HLO opcode class (convolution, dot, fusion, sort, scatter, gather, while, ...);
  - the `--top` most expensive instructions with their part and JAX source op.

Loops (`while`, e.g. NMS or chunked RoIAlign) and other control flow: their body instructions
are counted like any other (their op_name says which loop they are in), the loop's own row
only with its exclusive time (its event minus the body events nested in it; XLA:CPU may run a
body asynchronously, so a loop's event can end long before its body's work). Profiling adds
per-thunk overhead, so compare shares, not the absolute times, with `tools/bench_peer.py`.
"""

from __future__ import annotations

import argparse
import bisect
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time

import jax
from ml_collections import config_flags

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_common import machine_info, write_json  # noqa: E402

from frozen_det import config as config_lib  # noqa: E402
from frozen_det.runtime import hide_accelerators_from_tensorflow  # noqa: E402
from frozen_det.tasks import get_task  # noqa: E402
from frozen_det.training import sharding  # noqa: E402
from frozen_det.training.state import build_state  # noqa: E402
from frozen_det.training.step import make_train_step  # noqa: E402

_COMPUTATION = re.compile(r"^(ENTRY\s+)?%?([\w.\-]+)\s*\(.*\{\s*$")
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_FUSION_KIND = re.compile(r"kind=(k\w+)")
_CALLS = re.compile(r"calls=%?([\w.\-]+)")
_CUSTOM_TARGET = re.compile(r'custom_call_target="([^"]*)"')
# Computations a control-flow instruction runs: while body / condition, conditional branches.
_CONTROL_BODIES = re.compile(
    r"(?:body|condition|true_computation|false_computation)=%?([\w.\-]+)"
    r"|branch_computations=\{([^}]*)\}"
)
_METHOD = re.compile(r"^[A-Z]\w*\.(\w+)$")  # Flax's name scope of a module method: "Class.method"


# ---------------------------------------------------------------- HLO metadata


def _opcode(rhs: str) -> str:
    """The opcode of an instruction's right-hand side "<type> <opcode>(<operands>), ...". A
    tuple type is one balanced parenthesis group; other types have no spaces."""
    if rhs.startswith("("):
        depth = 0
        for i, ch in enumerate(rhs):
            depth += {"(": 1, ")": -1}.get(ch, 0)
            if depth == 0:
                rhs = rhs[i + 1 :].lstrip()
                break
    else:
        rhs = rhs.split(" ", 1)[-1]
    return rhs.split("(", 1)[0].strip()


def hlo_instructions(hlo_text: str) -> dict:
    """{instruction name: {"opcode", "op_name", "kind", "entry", "computation", "bodies"}} of every
    instruction in optimized HLO text; "entry" is True for the entry computation's own
    instructions (not those of loop, branch or fusion bodies), "computation" names the one it is
    in, "bodies" the computations a while / conditional runs. A fusion XLA made without metadata
    (e.g. a kernel transpose for a convolution's input gradient) takes the op_name of an
    instruction inside it, the root's if it has one."""
    out, entry, computation = {}, False, ""
    names_in = collections.defaultdict(list)  # computation -> op_names inside, root first
    calls = {}
    for line in hlo_text.splitlines():
        if not line.startswith(" "):
            m = _COMPUTATION.match(line)
            if m:
                entry, computation = bool(m.group(1)), m.group(2)
            continue
        root = line.strip().startswith("ROOT ")
        lhs, sep, rhs = line.strip().removeprefix("ROOT ").partition(" = ")
        if not sep:
            continue
        name, opcode = lhs.lstrip("%"), _opcode(rhs)
        op_name = _OP_NAME.search(rhs)
        op_name = op_name.group(1) if op_name else ""
        if op_name:
            names_in[computation].insert(0 if root else len(names_in[computation]), op_name)
        called = _CALLS.search(rhs)
        if called and not op_name:
            calls[name] = called.group(1)
        kind = _FUSION_KIND.search(rhs) if opcode == "fusion" else _CUSTOM_TARGET.search(rhs)
        bodies = []
        if opcode in ("while", "conditional"):
            for single, branches in _CONTROL_BODIES.findall(rhs):
                bodies += [single] if single else [b.strip().lstrip("%") for b in branches.split(",")]
        out[name] = {
            "opcode": opcode,
            "op_name": op_name,
            "kind": kind.group(1) if kind else "",
            "entry": entry,
            "computation": computation,
            "bodies": bodies,
        }
    for name, computation in calls.items():
        if names_in.get(computation):
            out[name]["op_name"] = names_in[computation][0]
    return out


def model_part(op_name: str, top_modules: set) -> str:
    """Which part of the model an op belongs to, from its JAX name stack: the innermost model
    method ("Detector.proposals" -> "proposals") before the first top-level submodule, joined
    with that submodule ("features/backbone", "box_stage/box_heads_0"). Ops outside any module
    method are "(optimizer)" (the update, gradient norms), or "(no metadata)"."""
    if not op_name:
        return "(no metadata)"
    method = ""
    for component in op_name.split("/"):
        while re.fullmatch(r"\w+\((.*)\)", component):  # transpose(jvp(Foo)) -> Foo
            component = re.fullmatch(r"\w+\((.*)\)", component).group(1)
        m = _METHOD.match(component)
        if m:
            method = m.group(1)
        elif component in top_modules:
            return f"{method}/{component}" if method else component
    return method or "(optimizer)"


def direction(op_name: str) -> str:
    return "backward" if "transpose(" in op_name else "forward"


def opcode_class(info: dict) -> str:
    if info["opcode"] == "fusion":
        return f"fusion:{info['kind'].removeprefix('k').lower()}" if info["kind"] else "fusion"
    if info["opcode"] == "custom-call":
        return f"custom-call:{info['kind']}" if info["kind"] else "custom-call"
    return info["opcode"]


# ---------------------------------------------------------------- trace


def thunk_events(trace_dir: str, hlo_module: str) -> list[dict]:
    """Complete ("X") events of the thunks of `hlo_module`, from the Perfetto JSON that
    `jax.profiler.trace(create_perfetto_trace=True)` writes."""
    paths = glob.glob(os.path.join(trace_dir, "**", "perfetto_trace.json.gz"), recursive=True)
    if not paths:
        raise FileNotFoundError(f"no perfetto_trace.json.gz under {trace_dir}: did the profiler run?")
    with gzip.open(max(paths, key=os.path.getmtime)) as f:
        trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    return [
        e
        for e in events
        if e.get("ph") == "X" and (e.get("args") or {}).get("hlo_module") == hlo_module and "hlo_op" in e["args"]
    ]


UNKNOWN = {"opcode": "?", "op_name": "", "kind": "", "entry": True, "computation": "", "bodies": []}


def _exclusive_durations(events: list[dict], instructions: dict) -> list[float]:
    """Each event's duration (us), for a while / conditional minus the events of its own bodies
    that lie inside its interval (so nothing is counted twice, whether XLA ran the body inside
    the loop's event or asynchronously after it)."""
    owner = {body: name for name, info in instructions.items() for body in info["bodies"]}
    children = collections.defaultdict(list)  # control instruction -> [(ts, end)] of body events
    for e in events:
        parent = owner.get(instructions.get(e["args"]["hlo_op"], UNKNOWN)["computation"])
        if parent:
            children[parent].append((e["ts"], e["ts"] + e["dur"]))
    for spans in children.values():
        spans.sort()
    out = []
    for e in events:
        name, start, end = e["args"]["hlo_op"], e["ts"], e["ts"] + e["dur"]
        spans = children.get(name, ())
        nested = sum(
            min(s_end, end) - s_start
            for s_start, s_end in spans[
                bisect.bisect_left(spans, (start,)) : bisect.bisect_right(spans, (end, float("inf")))
            ]
            if s_start < end
        )
        out.append(max(0.0, e["dur"] - nested))
    return out


def attribute(events: list[dict], instructions: dict, top_modules: set, steps: int) -> dict:
    """Per-step milliseconds of every instruction (loop bodies included, loops by exclusive
    time), by part x direction, by opcode class and by instruction."""
    per_part, per_class, per_op = (collections.Counter() for _ in range(3))
    for e, dur in zip(events, _exclusive_durations(events, instructions)):
        name = e["args"]["hlo_op"]
        info = instructions.get(name, UNKNOWN)
        ms = dur / 1e3 / steps
        per_part[(model_part(info["op_name"], top_modules), direction(info["op_name"]))] += ms
        per_class[opcode_class(info)] += ms
        per_op[name] += ms
    return {
        "per_part": per_part,
        "per_class": per_class,
        "per_op": per_op,
        "op_ms": sum(per_op.values()),
        "unmatched": sorted({e["args"]["hlo_op"] for e in events} - set(instructions)),
    }


# ---------------------------------------------------------------- run


def compiled_step(config):
    """(compiled train step, its arguments, top-level module names) as the training loop builds
    them, on one device, with the first batch of the config's train pipeline."""
    hide_accelerators_from_tensorflow()
    config = config_lib.complete(config)
    task = get_task(config)
    mesh = sharding.make_mesh(jax.devices()[:1])
    pipeline = task.train_pipeline()
    batch = jax.device_put(task.model_batch(next(pipeline), train=True))
    model = task.build_model(pipeline)
    state, _, optimizer, _ = build_state(config, task, model, mesh)
    step = jax.jit(make_train_step(task.loss_fn(model), optimizer))
    args = (state, batch, jax.random.key(0))
    top_modules = set(state.params) | set(state.frozen_params) | set(state.batch_stats)
    return step.lower(*args).compile(), args, top_modules


def profile_compiled(compiled, args: tuple, top_modules: set, steps: int, trace_dir: str) -> dict:
    """Runs `compiled(*args)` once to warm up, then `steps` times under the profiler; the
    attribution of its thunks (see `attribute`) plus the wall time per step."""
    jax.block_until_ready(compiled(*args))
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
        t0 = time.perf_counter()
        for _ in range(steps):
            jax.block_until_ready(compiled(*args))
        wall_ms = (time.perf_counter() - t0) * 1e3 / steps
    text = compiled.as_text()
    instructions = hlo_instructions(text)
    module = text.split(None, 2)[1].rstrip(",")  # "HloModule jit_step, is_scheduled=..."
    events = thunk_events(trace_dir, module)
    if not events:
        raise RuntimeError(
            f"the trace in {trace_dir} has no thunk events of {module}; this jaxlib's "
            f"profiler may not record XLA:CPU thunks"
        )
    return {
        **attribute(events, instructions, top_modules, steps),
        "wall_ms": wall_ms,
        "instructions": instructions,
        "hlo_module": module,
        "top_modules": top_modules,
    }


def profile(config, steps: int, trace_dir: str) -> dict:
    t0 = time.perf_counter()
    compiled, args, top_modules = compiled_step(config)
    compile_s = time.perf_counter() - t0
    return {**profile_compiled(compiled, args, top_modules, steps, trace_dir), "compile_s": compile_s}


def report(result: dict, top: int) -> str:
    op_ms, wall = result["op_ms"], result["wall_ms"]
    share = lambda ms: f"{100 * ms / op_ms:5.1f}%"  # noqa: E731
    lines = [
        f"train step: {wall:.0f} ms wall per step (profiled), {op_ms:.0f} ms summed op time "
        f"(x{op_ms / wall:.2f} parallel), compile {result.get('compile_s', 0):.0f} s",
        "",
        "| part | forward ms | backward ms | total | share |",
        "|---|---|---|---|---|",
    ]
    parts = collections.defaultdict(dict)
    for (part, d), ms in result["per_part"].items():
        parts[part][d] = ms
    for part, d in sorted(parts.items(), key=lambda kv: -sum(kv[1].values())):
        total = sum(d.values())
        lines.append(
            f"| {part} | {d.get('forward', 0):.0f} | {d.get('backward', 0):.0f} | {total:.0f} | {share(total)} |"
        )
    lines += ["", "| op class | ms | share |", "|---|---|---|"]
    for cls, ms in result["per_class"].most_common():
        lines.append(f"| {cls} | {ms:.0f} | {share(ms)} |")
    lines += ["", f"| top {top} instructions | class | ms | share | part | JAX op |", "|---|---|---|---|---|---|"]
    for name, ms in result["per_op"].most_common(top):
        info = result["instructions"].get(name, UNKNOWN)
        op_name = info["op_name"]
        lines.append(
            f"| {name} | {opcode_class(info)} | {ms:.1f} | {share(ms)} | "
            f"{model_part(op_name, result['top_modules'])} {direction(op_name)[:3]} | "
            f"{op_name[-80:]} |"
        )
    if result["unmatched"]:
        lines.append(
            f"\n{len(result['unmatched'])} traced ops not found in the HLO text, e.g. {result['unmatched'][:5]}"
        )
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=3, help="profiled steps (after one warm-up)")
    p.add_argument("--top", type=int, default=25, help="instructions listed by time")
    p.add_argument("--trace_dir", default="", help="keep the raw trace here (default: a temporary directory)")
    p.add_argument("--json", default="", help="write the attribution here")
    args, rest = p.parse_known_args(argv)
    flags = config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=False)
    from absl import flags as absl_flags

    absl_flags.FLAGS([sys.argv[0]] + rest)
    if flags.value is None:
        raise SystemExit("--config is required, e.g. --config configs/bccd/frozen.py:fpn")
    with tempfile.TemporaryDirectory() as tmp:
        result = profile(flags.value, args.steps, args.trace_dir or tmp)
    table = report(result, args.top)
    print(table, flush=True)
    if args.json:
        write_json(
            args.json,
            {
                **machine_info(),
                "steps": args.steps,
                "wall_ms": result["wall_ms"],
                "op_ms": result["op_ms"],
                "compile_s": result["compile_s"],
                "per_part": {f"{p}/{d}": v for (p, d), v in result["per_part"].items()},
                "per_class": dict(result["per_class"]),
                "per_op": dict(result["per_op"]),
                "table": table,
            },
        )
    return result


if __name__ == "__main__":
    main()
