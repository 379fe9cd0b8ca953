"""The freeze switch as path rules and a per-part plan (pure Python: config checks import it).

The freeze switch (docs/architecture.md, "The freeze switch"): a backbone is a stem followed by
`num_stages` stages, each ending at one pyramid level (stage k ends at level k + 1, i.e.
stride 2**(k + 1)). Parameters live under `stem/` and `stage{k}/` so that one set of path
rules freezes any backbone family. `freeze` is

* ``"none"``: everything trains;
* ``"all"``: stem and every stage are frozen (the ImageNet head, which detection never uses,
  stays trainable so that a linear probe is ``freeze="all"`` too);
* an integer ``k >= 0``: the stem and the first ``k`` stages are frozen (Detectron2's
  FREEZE_AT minus one: ``k = 0`` freezes the stem only).

A frozen part runs BatchNorm in inference mode, drops stochastic depth, and, when nothing
trainable sits below it, is cut from the gradient with ``jax.lax.stop_gradient``. Its
parameters are never differentiated: the train step takes gradients of the trainable
partition only (``frozen_det.training.partition``), which `frozen_param_patterns` feeds.
"""

from __future__ import annotations

import dataclasses
import re

FreezeSpec = str | int

# Where every backbone family keeps its ImageNet classification head (as '/'-path regexes over
# a variables tree: 'params/classifier/kernel', 'batch_stats/head_bn/mean', ...).
HEAD_PATTERNS = (r"^[^/]+/(?:head_conv|head_bn|classifier)/",)

# Name of the adapter sub-module inside a residual block; the partition rules keep any
# parameter under it trainable even when its block is frozen.
ADAPTER_NAME = "adapter"

# `model.backbone.adapters`: no adapters, residual adapters (a parallel 1x1 convolution per
# block) or FiLM (a per-channel scale and shift after every block), frozen_det.models.adapters.
ADAPTER_KINDS = ("none", "residual", "film")


def adapter_kind(adapters: str | bool) -> str:
    """`adapters` as one of ADAPTER_KINDS. Booleans (and their spellings on a command line) are
    the switch's earlier form, kept for old configs and checkpoints: False is "none", True is
    "residual"."""
    if isinstance(adapters, bool):
        return "residual" if adapters else "none"
    text = str(adapters).strip().lower()
    text = {"false": "none", "true": "residual"}.get(text, text)
    if text not in ADAPTER_KINDS:
        raise ValueError(
            f"config.model.backbone.adapters={adapters!r}: choose one of {ADAPTER_KINDS} "
            "(False / True are accepted as 'none' / 'residual')."
        )
    return text


def num_frozen_stages(freeze: FreezeSpec, num_stages: int) -> int:
    """Returns how many stages are frozen: -1 for none, 0 for the stem only, ... num_stages.

    Raises ValueError naming the accepted values for anything else.
    """
    if isinstance(freeze, str):
        text = freeze.strip().lower()
        if text == "none":
            return -1
        if text == "all":
            return num_stages
        if text.lstrip("-").isdigit():
            freeze = int(text)
        else:
            raise ValueError(
                f"model.backbone.freeze={freeze!r} is not understood: use 'none', 'all' or an "
                f"integer k in [0, {num_stages}] (stem + first k stages frozen)."
            )
    if isinstance(freeze, bool) or not isinstance(freeze, int):
        raise ValueError(f"model.backbone.freeze must be 'none', 'all' or an int, got {freeze!r}.")
    if not 0 <= freeze <= num_stages:
        raise ValueError(
            f"model.backbone.freeze={freeze} is out of range: this backbone has {num_stages} "
            f"stages, so k must be in [0, {num_stages}] (or 'none' / 'all')."
        )
    return freeze


@dataclasses.dataclass(frozen=True)
class FreezePlan:
    """Which parts of a backbone are frozen, derived once from the config."""

    frozen_stages: int  # -1: nothing frozen; 0: stem; k: stem + stages 1..k.
    adapters: bool  # any kind of adapter (ADAPTER_KINDS other than "none")

    def is_frozen(self, part: int) -> bool:
        """`part` is 0 for the stem and k for stage k."""
        return part <= self.frozen_stages

    def cut_gradient_after(self, part: int) -> bool:
        """True where the output of `part` needs no gradient at all.

        That holds for a frozen part when nothing trainable sits at or below it: adapters
        (residual or FiLM) live inside the stages' blocks (never in the stem), so with adapters
        only the stem is cut.
        """
        if not self.is_frozen(part):
            return False
        return part == 0 or not self.adapters


def freeze_plan(freeze: FreezeSpec, num_stages: int, adapters: str | bool) -> FreezePlan:
    return FreezePlan(num_frozen_stages(freeze, num_stages), adapter_kind(adapters) != "none")


def frozen_param_patterns(freeze: FreezeSpec, num_stages: int, prefix: str = "") -> list[str]:
    """Regexes (frozen_det.tree_paths rules over '/'-joined param paths) of frozen parameters.

    `prefix` is where the backbone sits in a larger model, e.g. "backbone/". Adapter
    parameters never match: they are trainable even inside a frozen block.
    """
    k = num_frozen_stages(freeze, num_stages)
    if k < 0:
        return []
    parts = ["stem"] + [f"stage{i}" for i in range(1, k + 1)]
    alternatives = "|".join(parts)
    return [rf"^{re.escape(prefix)}(?:{alternatives})/(?!(?:.*/)?{ADAPTER_NAME}/)"]
