"""Layer choices made once, when a model is built from its config, and handed to every module as
factories (the flax `ModuleDef` habit): which convolution (`conv_impl`), which normalisation
(BatchNorm momentum / epsilon), which activation dtype. Modules call `self.conv(...)` and
`self.norm(use_running_average=..., dtype=self.dtype, name=...)` and never see the config
strings.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from frozen_det.models import fast_conv

ModuleDef = Any

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
CONV_IMPLS = {"xla": nn.Conv, "fast": fast_conv.Conv}

# The reference's synchronized BatchNorm (docs/reference.md §2.14): momentum 0.997, epsilon 1e-4.
DEFAULT_NORM = functools.partial(nn.BatchNorm, momentum=0.997, epsilon=1e-4)


def dtype_of(name: str, field: str = "model.dtype"):
    """The activation dtype a config names ("float32" or "bfloat16")."""
    if name not in DTYPES:
        raise ValueError(f"config.{field}={name!r}: use one of {sorted(DTYPES)}.")
    return DTYPES[name]


def conv_module(impl: str, field: str = "model.conv_impl") -> ModuleDef:
    """The convolution a config's `conv_impl` names: "xla" (flax.linen.Conv) or "fast"
    (fast_conv.Conv: same parameters and function, much faster weight gradients on XLA:CPU)."""
    if impl not in CONV_IMPLS:
        raise ValueError(
            f"config.{field}={impl!r}: use one of {sorted(CONV_IMPLS)} ('fast' speeds up convolution gradients on CPU)."
        )
    return CONV_IMPLS[impl]


def batch_norm(momentum: float, epsilon: float) -> ModuleDef:
    """A BatchNorm factory; callers add `use_running_average`, their `dtype` and `name`."""
    return functools.partial(nn.BatchNorm, momentum=momentum, epsilon=epsilon)
