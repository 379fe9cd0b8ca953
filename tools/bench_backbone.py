"""Benchmark our ResNet-50 against torchvision's on this machine, in one process.

    python tools/bench_backbone.py                       # 512x512, batch 2, all rows, ~4 min
    python tools/bench_backbone.py --variants xla,no-ynn-conv,fast-conv+no-ynn-conv --json out.json
    python tools/bench_backbone.py --conv-split           # per-convolution fwd / dx / dW times
    python tools/bench_backbone.py --conv-split fpn       # the same for the FPN + RPN convolutions

Rows (our `ResNet(50)` with torchvision's random weights converted, so both compute the same
function; the max |logit difference| is printed as a check):
  forward     inference (BN in inference mode, no gradient)
  fine-tune   train step: ImageNet-head cross-entropy + SGD momentum, BN in train mode
  frozen      freeze="all": only the classifier trains (torch: backbone requires_grad=False,
              eval-mode BN)
  freeze=1    stem + first stage frozen (torch: conv1/bn1/layer1 frozen, their BN in eval mode)
For JAX, XLA's FLOPs (`cost_analysis`) and temp memory (`memory_analysis`) of each compiled step.

Variants (JAX only, compiled side by side in this process with per-executable XLA options):
  xla           flax.linen.Conv, XLA:CPU defaults (the baseline)
  no-ynn-conv   xla_cpu_experimental_ynn_fusion_type=INDIVIDUAL_DOT: convolutions go to Eigen,
                dots stay on YNNPACK
                (XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=-individual_convolution)
  eigen         no YNNPACK at all (ynn_fusion_type empty)
  onednn        no YNNPACK, oneDNN for dot/convolution fusions (xla_cpu_use_onednn)
  fast-math     xla_cpu_enable_fast_math
  xnn-greedy    xla_cpu_experimental_xnn_graph_fusion_mode=GREEDY
  fast-conv     frozen_det.models.fast_conv.Conv instead of nn.Conv (weight gradient as per-tap dots)
  bf16          bfloat16 activations (ResNet(dtype=bfloat16), float32 parameters)
  combine with '+', e.g. fast-conv+no-ynn-conv. The first variant measures every row; the others
  the rows in --variant-rows (default: fine-tune).

Timings: every contender is compiled / warmed up first, then timed round-robin (A B C A B C ...)
`--repeats` times; medians are reported, because this machine's speed drifts between and within
processes, plus best-of-N (torch's OpenMP threads slow down ~5x, XLA's ~2x, when other jobs
take the cores, so the median JAX/torch ratio depends on the load; best-of approximates a quiet
machine). Compare ratios from one run only.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

# torch before anything that might pull in TensorFlow (the reverse order segfaults).
import torch
import torchvision

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bench_common import keyed, machine_info, round_robin, write_json, xla_stats  # noqa: E402

from frozen_det.checkpoints.mapping import assign_by_path  # noqa: E402
from frozen_det.checkpoints.torchvision_resnet import convert_torchvision_resnet  # noqa: E402
from frozen_det.models import fast_conv  # noqa: E402
from frozen_det.models.backbones import backbone_frozen_patterns  # noqa: E402
from frozen_det.models.backbones import resnet as resnet_module  # noqa: E402
from frozen_det.models.layers import conv_module  # noqa: E402
from frozen_det.training import partition  # noqa: E402
from frozen_det.training.state import create_train_state  # noqa: E402
from frozen_det.training.step import make_train_step  # noqa: E402

ROWS = ("forward", "fine-tune", "frozen", "freeze=1")
ROW_FREEZE = {"fine-tune": "none", "frozen": "all", "freeze=1": 1}
CLASSES = 1000
LR, MOMENTUM = 0.01, 0.9

NO_YNN_CONV = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}
NO_YNN = {"xla_cpu_experimental_ynn_fusion_type": ""}
OPTION_SETS = {
    "xla": {},
    "no-ynn-conv": NO_YNN_CONV,
    "eigen": NO_YNN,
    "onednn": dict(
        NO_YNN,
        xla_cpu_use_onednn=True,
        xla_cpu_experimental_onednn_fusion_type=(
            "LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION,LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"
        ),
    ),
    "fast-math": {"xla_cpu_enable_fast_math": True},
    "xnn-greedy": {"xla_cpu_experimental_xnn_graph_fusion_mode": "XNN_GRAPH_FUSION_MODE_GREEDY"},
}
MODEL_FLAGS = ("fast-conv", "bf16")


def parse_variant(name: str) -> dict:
    options, fast, bf16 = {}, False, False
    for part in name.split("+"):
        if part == "fast-conv":
            fast = True
        elif part == "bf16":
            bf16 = True
        elif part in OPTION_SETS:
            options.update(OPTION_SETS[part])
        else:
            raise SystemExit(
                f"unknown variant part {part!r} in {name!r}; "
                f"choose from {sorted(OPTION_SETS) + list(MODEL_FLAGS)} joined by '+'."
            )
    return {"name": name, "options": options, "fast_conv": fast, "dtype": jnp.bfloat16 if bf16 else jnp.float32}


# ---------------------------------------------------------------- torch reference


def calibrated_torch_resnet50(rng: np.random.Generator):
    """Random weights with BN affine/statistics like a trained net's (activations stay O(1))."""
    torch.manual_seed(0)
    model = torchvision.models.resnet50()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(torch.from_numpy(rng.uniform(0.2, 0.6, m.weight.shape)))
                m.bias.copy_(torch.from_numpy(rng.normal(0, 0.1, m.bias.shape)))
                m.momentum = None  # cumulative average: one batch sets the statistics
        model.train()
        model(torch.from_numpy(rng.normal(size=(8, 3, 64, 64)).astype(np.float32)))
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.momentum = 0.1
    return model.eval()


def torch_contenders(ref, x_nchw, labels):
    x, y = torch.from_numpy(x_nchw), torch.from_numpy(labels)

    def forward():
        with torch.inference_mode():
            ref(x)

    def train_step_fn(freeze):
        model = copy.deepcopy(ref)
        model.train()
        frozen = {
            "none": [],
            "all": [n for n, _ in model.named_children() if n != "fc"],
            1: ["conv1", "bn1", "layer1"],
        }[freeze]
        for name in frozen:
            module = getattr(model, name)
            module.eval()
            for p in module.parameters():
                p.requires_grad_(False)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.SGD(params, lr=LR, momentum=MOMENTUM)

        def step():
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()

        return step

    return {"forward": forward, **{row: train_step_fn(f) for row, f in ROW_FREEZE.items()}}


# ---------------------------------------------------------------- ours


def jax_contenders(variables, images, labels, variant, rows):
    """{row: (callable, xla stats, compile seconds)} for one variant."""
    out = {}
    impl = "fast" if variant["fast_conv"] else "xla"
    for row in rows:
        t0 = time.perf_counter()
        if row == "forward":
            model = resnet_module.ResNet(50, dtype=variant["dtype"], conv=conv_module(impl))
            fn = jax.jit(lambda v, x: model.apply(v, x, train=False, return_logits=True)[1])
            compiled = fn.lower(variables, images).compile(compiler_options=variant["options"] or None)
            args = (variables, images)
        else:
            freeze = ROW_FREEZE[row]
            model = resnet_module.ResNet(50, freeze=freeze, dtype=variant["dtype"], conv=conv_module(impl))

            def loss_fn(params, batch_stats, batch, rng, model=model):
                x, y = batch
                (_, logits), updates = model.apply(
                    {"params": params, "batch_stats": batch_stats},
                    x,
                    train=True,
                    return_logits=True,
                    mutable=["batch_stats"],
                )
                loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
                return loss, ({}, updates["batch_stats"])

            mask = partition.trainable_mask(variables["params"], frozen=backbone_frozen_patterns({"freeze": freeze}))
            optimizer = optax.sgd(LR, momentum=MOMENTUM)
            state = create_train_state(variables, mask, optimizer)
            fn = jax.jit(make_train_step(loss_fn, optimizer))
            args = (state, (images, labels), jax.random.key(0))
            compiled = fn.lower(*args).compile(compiler_options=variant["options"] or None)
        jax.block_until_ready(compiled(*args))  # warm-up outside the timings
        out[row] = (
            lambda c=compiled, a=args: jax.block_until_ready(c(*a)),
            xla_stats(compiled),
            time.perf_counter() - t0,
        )
    return out


# ---------------------------------------------------------------- the benchmark


def run_model_bench(args) -> dict:
    rng = np.random.default_rng(0)
    variants = [parse_variant(v) for v in args.variants.split(",")]
    rows = [r for r in args.rows.split(",")]
    extra_rows = [r for r in args.variant_rows.split(",")]
    for r in rows + extra_rows:
        if r not in ROWS:
            raise SystemExit(f"unknown row {r!r}; choose from {ROWS}")

    ref = calibrated_torch_resnet50(rng)
    images = rng.normal(size=(args.batch, args.size, args.size, 3)).astype(np.float32)
    labels = rng.integers(0, CLASSES, size=(args.batch,)).astype(np.int64)
    shapes = jax.eval_shape(lambda: resnet_module.ResNet(50).init(jax.random.key(0), jnp.zeros((1, 64, 64, 3))))
    variables = assign_by_path(
        shapes,
        convert_torchvision_resnet({k: v.numpy() for k, v in ref.state_dict().items()}),
        source="torchvision resnet50",
    )
    variables = jax.tree.map(jnp.asarray, variables)
    images_j, labels_j = jnp.asarray(images), jnp.asarray(labels.astype(np.int32))

    contenders, stats, compile_s = {}, {}, {}
    if not args.no_torch:
        for row, fn in torch_contenders(ref, images.transpose(0, 3, 1, 2).copy(), labels).items():
            if row in rows:
                fn()  # warm-up
                contenders[("torch", row)] = fn
    for i, variant in enumerate(variants):
        wanted = rows if i == 0 else [r for r in extra_rows if r in ROWS]
        for row, (fn, st, cs) in jax_contenders(variables, images_j, labels_j, variant, wanted).items():
            contenders[(variant["name"], row)] = fn
            stats[(variant["name"], row)] = st
            compile_s[(variant["name"], row)] = cs
            print(
                f"compiled {variant['name']:>24s} {row:<9s} in {cs:5.1f} s  "
                f"{st['gflops']:6.1f} GFLOPs  {st['temp_mb']:7.0f} MB temp",
                file=sys.stderr,
                flush=True,
            )

    check = None
    if not args.no_torch and "forward" in rows:
        ours = np.asarray(
            jax.jit(lambda v, x: resnet_module.ResNet(50).apply(v, x, return_logits=True)[1])(variables, images_j)
        )
        with torch.inference_mode():
            theirs = ref(torch.from_numpy(images.transpose(0, 3, 1, 2).copy())).numpy()
        check = float(np.abs(ours - theirs).max())

    cpu = {}
    times = round_robin(contenders, args.repeats, cpu)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "variants": [v["name"] for v in variants],
        "rows": rows,
        "median_s": med,
        "times_s": times,
        "cpu_median_s": {k: statistics.median(v) for k, v in cpu.items()},
        "xla": stats,
        "compile_s": compile_s,
        "max_abs_logit_diff": check,
    }


def markdown(result, args) -> str:
    med, stats = result["median_s"], result["xla"]
    base = result["variants"][0]
    lines = [
        f"ResNet-50, {args.size}x{args.size}, batch {args.batch}, medians of {args.repeats} "
        f"round-robin repeats (jax {jax.__version__}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch threads, load average {os.getloadavg()[0]:.1f} "
        f"on {os.cpu_count()} CPUs at the end)",
        "",
    ]
    cpu = result["cpu_median_s"]
    best = {k: min(v) for k, v in result["times_s"].items()}
    header = (
        "| row | variant | JAX s | torch s | JAX / torch | best-of JAX / torch | JAX CPU s "
        "| torch CPU s | GFLOPs (XLA) | temp MB (XLA) |"
    )
    lines += [header, "|---|---|---|---|---|---|---|---|---|---|"]
    for row in ROWS:
        for name in result["variants"]:
            if (name, row) not in med:
                continue
            t = med[(name, row)]
            tt = med.get(("torch", row))
            st = stats[(name, row)]
            torch_s, ratio = (f"{tt:.3f}", f"{t / tt:.2f}") if tt else ("-", "-")
            best_ratio = (
                (
                    f"{best[(name, row)]:.2f} / {best[('torch', row)]:.2f} = "
                    f"{best[(name, row)] / best[('torch', row)]:.2f}"
                )
                if tt
                else "-"
            )
            torch_cpu = f"{cpu[('torch', row)]:.2f}" if ("torch", row) in cpu else "-"
            lines.append(
                f"| {row} | {name} | {t:.3f} | {torch_s} | {ratio} | {best_ratio} | "
                f"{cpu[(name, row)]:.2f} | {torch_cpu} | {st['gflops']:.0f} | {st['temp_mb']:.0f} |"
            )
    lines.append("")
    if ("torch", "fine-tune") in med or (base, "fine-tune") in med:
        for who in ("torch", base):
            if (who, "fine-tune") in med and (who, "frozen") in med:
                lines.append(
                    f"- {who}: frozen / fine-tune step time = {med[(who, 'frozen')] / med[(who, 'fine-tune')]:.2f}"
                )
        if (base, "fine-tune") in stats and (base, "frozen") in stats:
            a, b = stats[(base, "frozen")], stats[(base, "fine-tune")]
            lines.append(
                f"- XLA frozen / fine-tune: GFLOPs {a['gflops'] / b['gflops']:.2f}, "
                f"temp memory {a['temp_mb'] / b['temp_mb']:.2f}"
            )
    for name in result["variants"][1:]:
        if (name, "fine-tune") in med and (base, "fine-tune") in med:
            lines.append(
                f"- {name} / {base} fine-tune step: wall time "
                f"{med[(name, 'fine-tune')] / med[(base, 'fine-tune')]:.2f}, CPU time "
                f"{cpu[(name, 'fine-tune')] / cpu[(base, 'fine-tune')]:.2f}"
            )
    if result["max_abs_logit_diff"] is not None:
        lines.append(f"- same function check: max |logit(ours) - logit(torch)| = {result['max_abs_logit_diff']:.2e}")
    return "\n".join(lines)


# ---------------------------------------------------------------- per-convolution split


# (name, input H=W at size 512, cin, cout, kernel, stride, count in ResNet-50)
def conv_shapes(size: int):
    s = size // 4
    table = [("stem 7x7/2", size, 3, 64, 7, 2, 1)]
    cin = 64
    for stage, (width, blocks) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3)), start=1):
        hw_in = s if stage == 1 else s * 2
        stride = 1 if stage == 1 else 2
        table += [
            (f"s{stage} 1x1 reduce (first)", hw_in, cin, width, 1, 1, 1),
            (f"s{stage} 3x3/{stride} (first)", hw_in, width, width, 3, stride, 1),
            (f"s{stage} 1x1 expand", s, width, 4 * width, 1, 1, blocks),
            (f"s{stage} proj 1x1/{stride}", hw_in, cin, 4 * width, 1, stride, 1),
            (f"s{stage} 1x1 reduce", s, 4 * width, width, 1, 1, blocks - 1),
            (f"s{stage} 3x3", s, width, width, 3, 1, blocks - 1),
        ]
        cin = 4 * width
        s //= 2
    return table


# The same for torchvision's FPN + RPN on ResNet-50 features (count: convolutions of the shape).
def fpn_conv_shapes(size: int):
    table = []
    for level, cin in zip(range(2, 6), (256, 512, 1024, 2048)):
        hw = size // 2**level
        table += [
            (f"P{level} lateral 1x1", hw, cin, 256, 1, 1, 1),
            (f"P{level} output / RPN 3x3", hw, 256, 256, 3, 1, 2),
        ]
    table += [("P6 3x3/2 from P5", size // 32, 256, 256, 3, 2, 1), ("P6 RPN 3x3", size // 64, 256, 256, 3, 1, 1)]
    return table


CONV_SHAPES = {"resnet": conv_shapes, "fpn": fpn_conv_shapes}


def run_conv_split(args) -> dict:
    """fwd / input-grad / weight-grad time of each distinct ResNet-50 (or FPN + RPN) convolution
    (batch `--batch`): XLA defaults vs no-ynn-conv, XLA's weight grad vs fast_conv's, NHWC vs
    NCHW."""
    from jax import lax

    rng = np.random.default_rng(0)
    results, totals = [], {}
    opts = {"xla": {}, "no-ynn-conv": NO_YNN_CONV}
    for name, hw, cin, cout, k, stride, count in CONV_SHAPES[args.conv_split](args.size):
        x = jnp.asarray(rng.normal(size=(args.batch, hw, hw, cin)).astype(np.float32))
        w = jnp.asarray(rng.normal(size=(k, k, cin, cout)).astype(np.float32) * 0.05)
        pad = ((k // 2, k // 2),) * 2

        def conv(x, w, dn=("NHWC", "HWIO", "NHWC")):
            return lax.conv_general_dilated(x, w, (stride, stride), pad, dimension_numbers=dn)

        g = jnp.asarray(rng.normal(size=conv(x, w).shape).astype(np.float32))
        x_nchw, g_nchw = jnp.transpose(x, (0, 3, 1, 2)), jnp.transpose(g, (0, 3, 1, 2))
        nchw = ("NCHW", "OIHW", "NCHW")
        w_oihw = jnp.transpose(w, (3, 2, 0, 1))
        fns = {
            "fwd": (lambda x, w, g: conv(x, w), (x, w, g)),
            "dx": (lambda x, w, g: jax.vjp(lambda x: conv(x, w), x)[1](g)[0], (x, w, g)),
            "dW": (lambda x, w, g: jax.vjp(lambda w: conv(x, w), w)[1](g)[0], (x, w, g)),
            "dW fast_conv": (
                lambda x, w, g: jax.vjp(lambda w: fast_conv.conv2d(x, w, stride, pad), w)[1](g)[0],
                (x, w, g),
            ),
            "fwd NCHW": (lambda x, w, g: conv(x, w, nchw), (x_nchw, w_oihw, g_nchw)),
            "dW NCHW": (lambda x, w, g: jax.vjp(lambda w: conv(x, w, nchw), w)[1](g)[0], (x_nchw, w_oihw, g_nchw)),
        }
        contenders = {}
        for oname, o in opts.items():
            for fname, (fn, a) in fns.items():
                c = jax.jit(fn).lower(*a).compile(compiler_options=o or None)
                jax.block_until_ready(c(*a))
                contenders[(oname, fname)] = lambda c=c, a=a: jax.block_until_ready(c(*a))
        med = {k_: statistics.median(v) for k_, v in round_robin(contenders, args.repeats).items()}
        row = {"conv": name, "count": count, "ms": {f"{o}/{f}": 1e3 * t for (o, f), t in med.items()}}
        results.append(row)
        for key, t in row["ms"].items():
            totals[key] = totals.get(key, 0.0) + t * count
        print(
            f"{name:24s} x{count:<2d} " + "  ".join(f"{key} {t:6.1f}" for key, t in row["ms"].items()),
            file=sys.stderr,
            flush=True,
        )
    return {"convs": results, "totals_ms": totals}


def conv_split_markdown(res) -> str:
    keys = list(res["convs"][0]["ms"])
    lines = ["| conv | count | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
    for row in res["convs"]:
        cells = " | ".join(f"{row['ms'][k]:.1f}" for k in keys)
        lines.append(f"| {row['conv']} | {row['count']} | {cells} |")
    lines.append("| **sum x count** | | " + " | ".join(f"**{res['totals_ms'][k]:.0f}**" for k in keys) + " |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", default=None, help="write all measurements here")
    p.add_argument("--variants", default="xla", help="comma-separated JAX variants, see the docstring")
    p.add_argument("--rows", default=",".join(ROWS), help=f"rows for torch and the first variant {ROWS}")
    p.add_argument("--variant-rows", default="fine-tune", help="rows for the other variants")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument(
        "--conv-split",
        nargs="?",
        const="resnet",
        choices=sorted(CONV_SHAPES),
        help="instead: per-convolution forward / input-grad / weight-grad times of "
        "ResNet-50's convolutions (default) or of the FPN + RPN on it ('fpn')",
    )
    args = p.parse_args(argv)

    meta = {
        "size": args.size,
        "batch": args.batch,
        "repeats": args.repeats,
        **machine_info(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": os.getloadavg(),
    }
    if args.conv_split:
        res = run_conv_split(args)
        print(conv_split_markdown(res))
        out = dict(meta, **res)
    else:
        res = run_model_bench(args)
        print(markdown(res, args))
        out = dict(
            meta,
            variants=res["variants"],
            max_abs_logit_diff=res["max_abs_logit_diff"],
            **{name: keyed(res[name]) for name in ("median_s", "times_s", "cpu_median_s", "xla", "compile_s")},
            options={v: parse_variant(v)["options"] for v in res["variants"]},
        )
    if args.json:
        write_json(args.json, out)


if __name__ == "__main__":
    main()
