"""Depthwise convolutions on XLA:CPU: XLA's grouped convolution against `fast_conv`'s shifted
multiply-adds, per EfficientNet layer and for the whole backbone's train step, in one process.

    python tools/bench_depthwise.py --json bench_depthwise.json   # Lite0, 512x512, batch 4, ~5 min
    python tools/bench_depthwise.py --variant b0 --size 256 --batch 2 --rows layers

Rows:
  layers    every distinct depthwise layer of the variant at this canvas (input size, channels,
            kernel, stride): "fwd" = y = conv(x, w); "fwd+bwd" = y and the gradients of
            sum(y * c) with respect to x and w (a fixed random c).
  backbone  the backbone's train step (features loss = mean of squared level 2-5 maps, SGD
            momentum): freeze="all" (forward only, BN in inference mode) and freeze="none"
            (BN in train mode, full backward), each with conv_impl "xla" and "fast".
Both implementations are checked to agree (max relative difference printed). Every contender
is compiled and warmed up first, then timed round-robin `--repeats` times; medians are
reported with XLA's temporary memory of each compiled function. Compare within one run only.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bench_common import keyed, machine_info, round_robin, write_json, xla_stats  # noqa: E402

from frozen_det.models import fast_conv  # noqa: E402
from frozen_det.models.backbones import (
    backbone_frozen_patterns,  # noqa: E402
    efficientnet,  # noqa: E402
)
from frozen_det.models.layers import conv_module  # noqa: E402
from frozen_det.training import partition  # noqa: E402
from frozen_det.training.state import create_train_state  # noqa: E402
from frozen_det.training.step import make_train_step  # noqa: E402

IMPLS = ("xla", "fast")
LEVELS = (2, 3, 4, 5)


def depthwise_layers(variant: str, size: int) -> list[dict]:
    """Distinct depthwise layers of `variant` on a size x size canvas, in network order, with
    how many blocks share each."""
    hw = -(-size // 2)  # after the stride-2 stem ('SAME': ceil)
    layers: dict[tuple, dict] = {}
    for spec in efficientnet.block_specs(variant):
        key = (hw, spec.input_filters * spec.expand_ratio, spec.kernel_size, spec.strides)
        layers.setdefault(key, {"hw": key[0], "channels": key[1], "kernel": key[2], "stride": key[3], "blocks": []})[
            "blocks"
        ].append(spec.name)
        hw = -(-hw // spec.strides)
    return list(layers.values())


def _xla_depthwise(x, w, stride):
    return lax.conv_general_dilated(
        x, w, (stride, stride), "SAME", feature_group_count=x.shape[-1], dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def _fast_depthwise(x, w, stride):
    return fast_conv.depthwise_conv2d(x, w, stride, "SAME")


def layer_contenders(layer: dict, batch: int, seed: int = 0) -> tuple[dict, dict, float]:
    """({(layer name, impl, fwd|fwd+bwd): call}, {same key: xla stats}, max rel. difference)."""
    rng = np.random.default_rng(seed)
    c, k, s, hw = layer["channels"], layer["kernel"], layer["stride"], layer["hw"]
    x = jnp.asarray(rng.normal(size=(batch, hw, hw, c)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(k, k, 1, c)) / k, jnp.float32)
    name = f"{hw}x{hw}x{c} k{k} s{s}"
    cot = jnp.asarray(rng.normal(size=jax.eval_shape(lambda a, b: _xla_depthwise(a, b, s), x, w).shape), jnp.float32)
    calls, stats, outputs = {}, {}, {}
    for impl, conv in (("xla", _xla_depthwise), ("fast", _fast_depthwise)):
        forward = jax.jit(lambda x, w, conv=conv: conv(x, w, s))
        both = jax.jit(lambda x, w, conv=conv: jax.vjp(lambda a, b: conv(a, b, s), x, w)[1](cot))
        for mode, fn in (("fwd", forward), ("fwd+bwd", both)):
            compiled = fn.lower(x, w).compile()
            outputs[impl, mode] = jax.block_until_ready(compiled(x, w))
            calls[name, impl, mode] = lambda c_=compiled: jax.block_until_ready(c_(x, w))
            stats[name, impl, mode] = xla_stats(compiled)
    diff = max(
        _max_rel(a, b)
        for a, b in zip(
            jax.tree.leaves(outputs["fast", "fwd"]) + jax.tree.leaves(outputs["fast", "fwd+bwd"]),
            jax.tree.leaves(outputs["xla", "fwd"]) + jax.tree.leaves(outputs["xla", "fwd+bwd"]),
        )
    )
    return calls, stats, diff


def _max_rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


def backbone_contenders(variant: str, size: int, batch: int) -> tuple[dict, dict, float]:
    """Train steps of the backbone alone, frozen and fine-tuned, per conv_impl."""
    images = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, (batch, size, size, 3)), jnp.float32)
    calls, stats, losses = {}, {}, {}
    variables = None
    for freeze in ("all", "none"):
        for impl in IMPLS:
            model = efficientnet.EfficientNet(
                variant, freeze=freeze, num_classes=None, conv=conv_module(impl), drop_connect_rate=0.0
            )
            if variables is None:
                variables = jax.jit(lambda x: model.init(jax.random.key(0), x))(images)

            def loss_fn(params, batch_stats, x, rng, model=model):
                features, updates = model.apply(
                    {"params": params, "batch_stats": batch_stats}, x, train=True, mutable=["batch_stats"]
                )
                loss = sum(jnp.mean(features[level] ** 2) for level in LEVELS)
                return loss, ({}, updates["batch_stats"])

            mask = partition.trainable_mask(variables["params"], frozen=backbone_frozen_patterns({"freeze": freeze}))
            optimizer = optax.sgd(0.01, momentum=0.9)
            state = create_train_state(variables, mask, optimizer)
            step = jax.jit(make_train_step(loss_fn, optimizer))
            args = (state, images, jax.random.key(0))
            compiled = step.lower(*args).compile()
            _, metrics = jax.block_until_ready(compiled(*args))
            key = ("backbone", impl, "frozen" if freeze == "all" else "fine-tune")
            losses[key] = float(metrics["loss"])
            calls[key] = lambda c=compiled, a=args: jax.block_until_ready(c(*a))
            stats[key] = xla_stats(compiled)
    diff = max(
        abs(losses["backbone", "fast", m] - losses["backbone", "xla", m]) / abs(losses["backbone", "xla", m])
        for m in ("frozen", "fine-tune")
    )
    return calls, stats, diff


def run(args) -> dict:
    rows = args.rows.split(",")
    unknown = set(rows) - {"layers", "backbone"}
    if unknown:
        raise SystemExit(f"--rows: unknown {sorted(unknown)}; use layers and/or backbone")
    calls, stats, diffs = {}, {}, {}
    if "layers" in rows:
        for layer in depthwise_layers(args.variant, args.size):
            c, s, d = layer_contenders(layer, args.batch)
            calls.update(c), stats.update(s)
            diffs[next(iter(c))[0]] = d
    if "backbone" in rows:
        c, s, d = backbone_contenders(args.variant, args.size, args.batch)
        calls.update(c), stats.update(s)
        diffs["backbone"] = d
    times = round_robin(calls, args.repeats)
    return {"median_s": {k: statistics.median(v) for k, v in times.items()}, "xla": stats, "max_rel_diff": diffs}


def markdown(result: dict, args) -> str:
    med, stats = result["median_s"], result["xla"]
    groups = list(dict.fromkeys((name, mode) for name, _, mode in med))
    lines = [
        f"EfficientNet-{args.variant}, {args.size}x{args.size}, batch {args.batch}, "
        f"median of {args.repeats} (ms; temp MB from XLA's memory_analysis)",
        "",
        "| what | pass | xla ms | fast ms | xla / fast | xla temp MB | fast temp MB | max rel. diff |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, mode in groups:
        x, f = med[name, "xla", mode], med[name, "fast", mode]
        lines.append(
            f"| {name} | {mode} | {x * 1e3:.1f} | {f * 1e3:.1f} | {x / f:.2f} | "
            f"{stats[name, 'xla', mode]['temp_mb']:.0f} | {stats[name, 'fast', mode]['temp_mb']:.0f} | "
            f"{result['max_rel_diff'][name]:.1e} |"
        )
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", default="lite0")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--rows", default="layers,backbone", help="layers and/or backbone")
    p.add_argument("--json", default=None, help="write all measurements here")
    args = p.parse_args(argv)
    result = run(args)
    print(markdown(result, args))
    if args.json:
        write_json(
            args.json,
            {
                "variant": args.variant,
                "size": args.size,
                "batch": args.batch,
                "repeats": args.repeats,
                **machine_info(),
                "load_average_at_end": os.getloadavg(),
                **{name: keyed(result[name]) for name in ("median_s", "xla")},
                "max_rel_diff": result["max_rel_diff"],
            },
        )
    return result


if __name__ == "__main__":
    main()
