"""What every backbone shares besides the freeze switch (frozen_det.models.freezing): the
pyramid-level output contract, pooling, padding and activations."""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp

# Output contract of every backbone's `__call__(images, *, train, return_logits)`: a dict
# {level: feature map} keyed by the int pyramid level (2..5 = strides 4..32); with
# return_logits=True, the tuple (features, logits). (Int and str keys cannot share one dict in a
# JAX pytree, hence the tuple.)


def maybe_stop_gradient(x: jax.Array, cut: bool) -> jax.Array:
    return jax.lax.stop_gradient(x) if cut else x


def global_average_pool(x: jax.Array) -> jax.Array:
    return jnp.mean(x, axis=(1, 2))


def pad_symmetric(kernel_size: int) -> Sequence[tuple[int, int]]:
    """Explicit PyTorch-style padding (k // 2 on each side)."""
    p = kernel_size // 2
    return ((p, p), (p, p))


def activation_fn(name: str):
    """Activation by config name; 'swish' and 'silu' are the same function."""
    table: dict[str, Any] = {
        "relu": jax.nn.relu,
        "relu6": jax.nn.relu6,
        "swish": jax.nn.silu,
        "silu": jax.nn.silu,
        "gelu": jax.nn.gelu,
    }
    if name not in table:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(table)}.")
    return table[name]
