"""NAS-FPN (Ghiasi et al. 2019) as TF-Vision's `decoders.NASFPN` (docs/reference.md §2.3, §4.1) and
the Copy-Paste codebase's bottleneck variant (tensorflow/tpu `modeling/architecture/nasfpn.py`,
docs/reference.md §5.3).

Input: ``{level: [B, H / 2**level, W / 2**level, C_level]}`` from a backbone (int keys; levels
``min_level..5`` used, others ignored). Output: ``{level: [B, H / 2**level, W / 2**level, C]}``
for ``min_level..max_level`` with ``C = num_filters`` (``block='conv'``) or ``4 * num_filters``
(``block='bottleneck'``). The canvas must be a multiple of ``2**max_level`` (as in the reference).

Structure (both codebases, verified in their sources):

* Inputs: each backbone level in ``min_level..max_level`` is resampled to `num_filters`
  channels (1x1 conv with bias + BN, only when its channel count differs); the missing coarser
  levels (L6, L7) are max-pools (kernel = stride = 2, 'SAME') of the previous level, no conv.
* ``num_repeats`` cells. A cell starts from the five level maps (feature indices 0-4 =
  L3..L7) and appends one node per `BlockSpec` (indices 5, 6, ...). A node resamples its two
  inputs to its level and to `num_filters` channels (`Resample`: 1x1 conv with bias + BN only
  when the channel count differs, *then* max-pool down / nearest up), combines them by sum or
  by global attention (``coarser + finer * sigmoid(global_max(coarser))``, where "coarser" is
  the input whose source level is >= the other's), and - for output nodes only - adds every
  earlier feature of the same level that no node has read yet (each through its own
  `Resample`). Then ``activation -> block``. `cell_wiring` derives all of this from the specs
  with the reference's bookkeeping; for the default specs the only such adds are input L5 into
  node 5 (index 9) and input L7 into node 6 (index 10).
* The last five nodes of a cell are its output pyramid (levels 3, 4, 5, 7, 6) and the next
  cell's inputs. Each cell has its own weights; every resampling of every use has its own
  weights (no sharing).

``block='conv'`` (TF-Vision, the paper's ResNet-RS models): the block is a 3x3 conv with bias
then BN (no activation after). Every conv, including the input 1x1 projections, is He-normal
fan_out (untruncated ``VarianceScaling(2, fan_out)``), biases 0. All maps have `num_filters`
channels, so no resampling conv exists inside the cells: 3 input convs + 35 node convs
(21,590,528 params / 21,609,984 with BN statistics for ResNet inputs, docs/reference.md §4.1).

``block='bottleneck'`` (the Copy-Paste codebase, EfficientNet-B7 model, docs/reference.md §5.3; checked
in tensorflow/tpu at 7dc921f: `nasfpn.py` `block_group`/`resample_feature_map`,
`resnet.py:block_group`, `nn_blocks.py:bottleneck_block`, `nn_ops.py`):

* ``combine='sum'`` there (`use_sum_for_combination: true`) turns every combine into a sum;
  the module keeps the two switches independent like the TPU code.
* The block is one ResNet bottleneck with ``filters = num_filters``: 1x1 f -> BN-act -> 3x3 f
  -> BN-act -> 1x1 4f -> BN (gamma initialised to 1, not 0), a projection shortcut 1x1 4f +
  BN (the node input always has f channels, so the projection is always used), drop-connect
  on the residual branch in training (the same `drop_connect_rate` for every node; per-sample
  keep mask, divided by the keep probability), then ``act(residual + shortcut)``. These convs
  have no bias and TF1 ``variance_scaling_initializer()`` init (scale 1, fan_in, truncated
  normal). The BN-activations use the NAS-FPN activation.
* Nodes therefore have 4f (1024) channels: every later read of a node - as a node input or
  as an unconsumed same-level add - goes through a 1x1 conv (with bias, `tf.layers.conv2d`
  default init = Glorot-uniform) + BN to f. The cell-1 inputs already have f channels and get
  no conv. That is 10 resampling convs in the first cell and 16 in each later one (74 for 5
  cells; docs/reference.md §5.3 says 77), plus the input projections, which in this codebase are also
  Glorot-uniform.
* Nothing is applied to the last cell's outputs: the pyramid fed to the RPN and ROI heads has
  4f = 1024 channels.
* Drop-connect draws from the flax rng stream ``"dropout"`` (as the backbones' stochastic
  depth), so a train step with ``drop_connect_rate > 0`` must pass ``rngs={"dropout": key}``.

BatchNorm everywhere: momentum 0.997 / epsilon 1e-4 by default (flax's momentum equals TF's),
batch statistics when ``train=True``, moving statistics otherwise.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from frozen_det.models.backbones.common import activation_fn
from frozen_det.models.layers import DEFAULT_NORM, ModuleDef
from frozen_det.models.necks.fpn import as_level_dict, nearest_upsample


class BlockSpec(NamedTuple):
    """One node: (level, combine 'sum' | 'attention', (input offset 0, offset 1), is_output)."""

    level: int
    combine: str
    inputs: tuple[int, int]
    is_output: bool


# The searched cell (docs/reference.md §2.3 table; identical in TF-Vision and tensorflow/tpu). Offsets index
# the cell's growing feature list: 0-4 are the incoming L3..L7, 5.. the nodes in order.
NASFPN_BLOCK_SPECS: tuple[BlockSpec, ...] = (
    BlockSpec(4, "attention", (1, 3), False),
    BlockSpec(4, "sum", (1, 5), False),
    BlockSpec(3, "sum", (0, 6), True),
    BlockSpec(4, "sum", (6, 7), True),
    BlockSpec(5, "attention", (7, 8), True),
    BlockSpec(7, "attention", (6, 9), True),
    BlockSpec(6, "attention", (9, 10), True),
)

# Initialisers (docs/reference.md §7.2 and the TPU sources, see the module docstring).
HE_NORMAL_FAN_OUT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
TF1_VARIANCE_SCALING = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")
GLOROT_UNIFORM = nn.initializers.glorot_uniform()


@dataclasses.dataclass(frozen=True)
class NodeWiring:
    """What one node reads: feature indices of its two inputs and of the unconsumed
    same-level features it adds (output nodes only), and how it combines them."""

    level: int
    combine: str
    inputs: tuple[int, int]
    adds: tuple[int, ...]
    is_output: bool


def cell_wiring(
    min_level: int = 3,
    max_level: int = 7,
    block_specs: Sequence[BlockSpec] = NASFPN_BLOCK_SPECS,
    sum_only: bool = False,
) -> tuple[tuple[NodeWiring, ...], dict[int, int]]:
    """The reference's per-cell bookkeeping, done once in Python.

    Returns (one `NodeWiring` per spec, {output level: feature index}). Features 0..n-1 are the
    cell's inputs at levels min_level..max_level; node k is feature n + k. An output node adds
    every earlier feature of its level whose consumer count is still 0 (and counts it).
    The last ``max_level - min_level + 1`` features are the outputs; they must cover each level
    once.
    """
    levels = list(range(min_level, max_level + 1))
    num_levels = len(levels)
    consumers = [0] * num_levels
    nodes = []
    for k, spec in enumerate(block_specs):
        spec = BlockSpec(*spec)
        if spec.combine not in ("sum", "attention"):
            raise ValueError(f"NAS-FPN block spec {k}: combine {spec.combine!r} is not 'sum' or 'attention'.")
        for offset in spec.inputs:
            if not 0 <= offset < len(levels):
                raise ValueError(
                    f"NAS-FPN block spec {k} reads feature {offset} but only {len(levels)} exist "
                    f"for min_level={min_level}, max_level={max_level}. The searched cell "
                    f"(docs/reference.md §2.3) is defined on the five levels 3..7: use min_level=3, "
                    f"max_level=7 (canvas a multiple of 128)."
                )
            consumers[offset] += 1
        adds = []
        if spec.is_output:
            for j, (level, used) in enumerate(zip(levels, consumers)):
                if used == 0 and level == spec.level:
                    consumers[j] += 1
                    adds.append(j)
        nodes.append(
            NodeWiring(
                spec.level, "sum" if sum_only else spec.combine, tuple(spec.inputs), tuple(adds), bool(spec.is_output)
            )
        )
        levels.append(spec.level)
        consumers.append(0)
    out_levels = levels[len(levels) - num_levels :]
    if sorted(out_levels) != list(range(min_level, max_level + 1)):
        raise ValueError(
            f"NAS-FPN cell outputs levels {out_levels}, not each of "
            f"{min_level}..{max_level} once: use min_level=3, max_level=7 with the "
            "default block specs."
        )
    return tuple(nodes), {level: len(levels) - num_levels + i for i, level in enumerate(out_levels)}


def global_attention(coarser: jax.Array, finer: jax.Array) -> jax.Array:
    """``coarser + finer * sigmoid(max over H, W of coarser)`` (per sample and channel)."""
    gate = jax.nn.sigmoid(jnp.max(coarser, axis=(1, 2), keepdims=True))
    return coarser + finer * gate


class Resample(nn.Module):
    """To `num_filters` channels (1x1 conv with bias + BN, only if they differ), then to
    `target_level`: max-pool (kernel = stride = 2**d, 'SAME') or nearest upsampling."""

    num_filters: int
    kernel_init: Callable
    dtype: Any
    conv: ModuleDef = nn.Conv
    norm: ModuleDef = DEFAULT_NORM

    @nn.compact
    def __call__(self, x, level: int, target_level: int, target_hw: tuple[int, int], train: bool):
        if x.shape[-1] != self.num_filters:
            x = self.conv(
                self.num_filters,
                (1, 1),
                use_bias=True,
                kernel_init=self.kernel_init,
                bias_init=nn.initializers.zeros,
                dtype=self.dtype,
                name="conv",
            )(x)
            x = self.norm(use_running_average=not train, dtype=self.dtype, name="bn")(x)
        if level < target_level:
            s = 2 ** (target_level - level)
            x = nn.max_pool(x, (s, s), (s, s), padding="SAME")
        elif level > target_level:
            x = nearest_upsample(x, 2 ** (level - target_level), target_hw)
        return x


class BottleneckBlock(nn.Module):
    """The TPU codebase's ResNet bottleneck used as a NAS-FPN node (docs/reference.md §5.3): output
    ``4 * filters`` channels; drop-connect on the residual branch when training."""

    filters: int
    activation: str = "swish"
    drop_connect_rate: float = 0.0
    dtype: Any = jnp.float32
    conv: ModuleDef = nn.Conv
    norm: ModuleDef = DEFAULT_NORM

    @nn.compact
    def __call__(self, x, train: bool = False):
        act = activation_fn(self.activation)
        out = 4 * self.filters

        def conv(features, kernel, name):
            return self.conv(
                features,
                (kernel, kernel),
                padding="SAME",
                use_bias=False,
                kernel_init=TF1_VARIANCE_SCALING,
                dtype=self.dtype,
                name=name,
            )

        def bn(name):
            return self.norm(use_running_average=not train, dtype=self.dtype, name=name)

        shortcut = x
        if x.shape[-1] != out:
            shortcut = bn("proj_bn")(conv(out, 1, "proj_conv")(x))
        y = act(bn("bn1")(conv(self.filters, 1, "conv1")(x)))
        y = act(bn("bn2")(conv(self.filters, 3, "conv2")(y)))
        y = bn("bn3")(conv(out, 1, "conv3")(y))
        if train and self.drop_connect_rate > 0:
            keep = 1.0 - self.drop_connect_rate
            mask = jax.random.bernoulli(self.make_rng("dropout"), keep, (y.shape[0], 1, 1, 1))
            y = y * mask.astype(y.dtype) / jnp.asarray(keep, y.dtype)
        return act(y + shortcut)


@dataclasses.dataclass(frozen=True)
class NodeConfig:
    """What every node of a NAS-FPN shares."""

    num_filters: int
    block: str
    activation: str
    drop_connect_rate: float
    resample_init: Callable
    dtype: Any
    conv: ModuleDef
    norm: ModuleDef


class _Node(nn.Module):
    """One cell node: resample inputs (and unconsumed adds), combine, activation, block."""

    wiring: NodeWiring
    cfg: NodeConfig

    def _resample(self, name):
        c = self.cfg
        return Resample(c.num_filters, c.resample_init, c.dtype, c.conv, c.norm, name=name)

    @nn.compact
    def __call__(self, feats: Sequence[jax.Array], levels: Sequence[int], target_hw: tuple[int, int], train: bool):
        w = self.wiring
        (i0, i1) = w.inputs
        x0 = self._resample("resample_in0")(feats[i0], levels[i0], w.level, target_hw, train)
        x1 = self._resample("resample_in1")(feats[i1], levels[i1], w.level, target_hw, train)
        if w.combine == "sum":
            y = x0 + x1
        elif levels[i0] >= levels[i1]:
            y = global_attention(x0, x1)
        else:
            y = global_attention(x1, x0)
        for j in w.adds:
            y = y + self._resample(f"resample_add{j}")(feats[j], levels[j], w.level, target_hw, train)
        c = self.cfg
        y = activation_fn(c.activation)(y)
        if c.block == "conv":
            y = c.conv(
                c.num_filters,
                (3, 3),
                padding="SAME",
                use_bias=True,
                kernel_init=HE_NORMAL_FAN_OUT,
                bias_init=nn.initializers.zeros,
                dtype=c.dtype,
                name="conv",
            )(y)
            return c.norm(use_running_average=not train, dtype=c.dtype, name="bn")(y)
        return BottleneckBlock(c.num_filters, c.activation, c.drop_connect_rate, c.dtype, c.conv, c.norm, name="block")(
            y, train
        )


BLOCKS = ("conv", "bottleneck")
COMBINES = ("attention", "sum")


class NASFPN(nn.Module):
    """NAS-FPN (see the module docstring). `__call__(features, train)` -> {level: map}.

    ``combine='attention'`` uses each spec's own combine (the searched mix of sum and global
    attention); ``combine='sum'`` makes every combine a sum (the TPU codebase's
    `use_sum_for_combination`). Parameters: ``input_l{l}`` (input projections),
    ``cell{r}/node{k}/{resample_in0, resample_in1, resample_add{j}, conv, bn | block}``.
    """

    min_level: int = 3
    max_level: int = 7
    num_filters: int = 256
    num_repeats: int = 5
    block: str = "conv"
    combine: str = "attention"
    activation: str = "swish"
    drop_connect_rate: float = 0.0
    block_specs: tuple[BlockSpec, ...] = NASFPN_BLOCK_SPECS
    dtype: Any = jnp.float32
    conv: ModuleDef = nn.Conv  # frozen_det.models.layers: chosen once by config.model.conv_impl
    norm: ModuleDef = DEFAULT_NORM

    def wiring(self) -> tuple[tuple[NodeWiring, ...], dict[int, int]]:
        if self.block not in BLOCKS:
            raise ValueError(f"NAS-FPN block={self.block!r}: choose one of {BLOCKS}.")
        if self.combine not in COMBINES:
            raise ValueError(f"NAS-FPN combine={self.combine!r}: choose one of {COMBINES}.")
        if self.num_repeats < 1:
            raise ValueError(f"NAS-FPN num_repeats={self.num_repeats} must be >= 1.")
        if not 0.0 <= self.drop_connect_rate < 1.0:
            raise ValueError(f"NAS-FPN drop_connect_rate={self.drop_connect_rate} must be in [0, 1).")
        return cell_wiring(self.min_level, self.max_level, self.block_specs, self.combine == "sum")

    @property
    def resample_kernel_init(self) -> Callable:
        """Init of the 1x1 input / resampling convs: TF-Vision (block='conv') uses He-normal
        fan_out like its other convs; the TPU codebase's are `tf.layers.conv2d` defaults
        (Glorot-uniform)."""
        return HE_NORMAL_FAN_OUT if self.block == "conv" else GLOROT_UNIFORM

    @property
    def output_channels(self) -> int:
        return 4 * self.num_filters if self.block == "bottleneck" else self.num_filters

    @nn.compact
    def __call__(self, features: Mapping[int, jax.Array], train: bool = False) -> dict[int, jax.Array]:
        nodes, outputs = self.wiring()
        feats_in = as_level_dict(features)
        if self.min_level not in feats_in:
            raise ValueError(
                f"NAS-FPN min_level={self.min_level} needs that backbone level; got levels {sorted(feats_in)}."
            )
        cfg = NodeConfig(
            self.num_filters,
            self.block,
            self.activation,
            self.drop_connect_rate,
            self.resample_kernel_init,
            self.dtype,
            self.conv,
            self.norm,
        )

        levels = list(range(self.min_level, self.max_level + 1))
        feats: list[jax.Array] = []
        for level in levels:
            resample = Resample(
                self.num_filters, cfg.resample_init, self.dtype, self.conv, self.norm, name=f"input_l{level}"
            )
            if level in feats_in:
                feats.append(resample(feats_in[level].astype(self.dtype), level, level, None, train))
            else:  # coarser level: max-pool of the previous one (already num_filters channels)
                feats.append(resample(feats[-1], level - 1, level, None, train))

        for r in range(self.num_repeats):
            feats = _Cell(nodes, tuple(sorted(outputs.items())), self.min_level, cfg, name=f"cell{r}")(feats, train)
        return dict(zip(levels, feats))


class _Cell(nn.Module):
    """One NAS-FPN cell: appends a node per wiring entry; returns the output maps by level."""

    nodes: tuple[NodeWiring, ...]
    outputs: tuple[tuple[int, int], ...]  # (level, feature index), by level
    min_level: int
    cfg: NodeConfig

    @nn.compact
    def __call__(self, feats: Sequence[jax.Array], train: bool) -> list[jax.Array]:
        levels = list(range(self.min_level, self.min_level + len(feats)))
        hw = {level: f.shape[1:3] for level, f in zip(levels, feats)}
        feats = list(feats)
        for k, w in enumerate(self.nodes):
            node = _Node(w, self.cfg, name=f"node{k}")
            feats.append(node(feats, levels, hw[w.level], train))
            levels.append(w.level)
        return [feats[index] for _, index in self.outputs]
