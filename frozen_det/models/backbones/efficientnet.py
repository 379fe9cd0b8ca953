"""EfficientNet-B0..B7 and EfficientNet-Lite0..4 (Tan & Le 2019) as detection backbones.

Architecture facts follow TF's `efficientnet_builder` / `efficientnet_lite_builder` (and
keras.applications, which builds the same B-graph): MBConv blocks with swish, squeeze-excite
reduced from the block's *input* width times 0.25, TF 'SAME' padding (asymmetric for stride 2,
which lax 'SAME' reproduces), BatchNorm momentum 0.99 / epsilon 1e-3, drop-connect rate growing
linearly with the block index, and the width/depth multipliers applied by `round_filters` /
`round_repeats`. Lite variants use ReLU6, no squeeze-excite, a fixed 32-channel stem and
1280-channel head, and do not scale the repeats of the first and last block groups.

Input: NHWC images already normalised as the weights expect (see
`frozen_det.checkpoints.keras_efficientnet` / `.efficientnet_lite` for each source's mean/std).

Output: ``{2: stride 4, 3: stride 8, 4: stride 16, 5: stride 32}`` feature maps, as the TPU
detection codebase's endpoints ``reduction_2..5`` (level 5 is the last MBConv block's output,
before the 1x1 head conv: 320 channels for B0, 640 for B7); with ``return_logits`` the pair
``(features, ImageNet logits)``, as every backbone here (a dict mixing int and str keys could
not cross `jax.jit`). Features-only calls never run the head (no head dropout rng needed).

Freeze grouping (`frozen_det.models.freezing.freeze_plan`): ``stem`` = stem conv + BN; ``stage1`` = block groups
1-2 (output stride <= 4), ``stage2`` = group 3 (8), ``stage3`` = groups 4-5 (16),
``stage4`` = groups 6-7 (32). The ImageNet head (``head_conv``, ``head_bn``, ``classifier``)
belongs to no stage.

Parameter paths: ``stem/{conv,bn}``, ``stage{k}/block{g}{letter}/{expand_conv, expand_bn,
depthwise_conv, depthwise_bn, se_reduce, se_expand, project_conv, project_bn, adapter}``
where ``block{g}{letter}`` is keras' block name (group g = 1..7, ``a`` = first repeat);
``adapter`` holds a residual adapter's ``conv`` or FiLM's ``scale`` / ``shift``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from frozen_det.models import adapters as adapters_lib
from frozen_det.models.backbones import common
from frozen_det.models.freezing import adapter_kind, freeze_plan
from frozen_det.models.layers import ModuleDef


@dataclasses.dataclass(frozen=True)
class VariantConfig:
    width: float
    depth: float
    resolution: int  # the ImageNet training resolution (informational)
    dropout_rate: float  # before the classifier
    lite: bool


VARIANTS: dict[str, VariantConfig] = {
    "b0": VariantConfig(1.0, 1.0, 224, 0.2, False),
    "b1": VariantConfig(1.0, 1.1, 240, 0.2, False),
    "b2": VariantConfig(1.1, 1.2, 260, 0.3, False),
    "b3": VariantConfig(1.2, 1.4, 300, 0.3, False),
    "b4": VariantConfig(1.4, 1.8, 380, 0.4, False),
    "b5": VariantConfig(1.6, 2.2, 456, 0.4, False),
    "b6": VariantConfig(1.8, 2.6, 528, 0.5, False),
    "b7": VariantConfig(2.0, 3.1, 600, 0.5, False),
    "lite0": VariantConfig(1.0, 1.0, 224, 0.2, True),
    "lite1": VariantConfig(1.0, 1.1, 240, 0.2, True),
    "lite2": VariantConfig(1.1, 1.2, 260, 0.3, True),
    "lite3": VariantConfig(1.2, 1.4, 280, 0.3, True),
    "lite4": VariantConfig(1.4, 1.8, 300, 0.3, True),
}

DEFAULT_DROP_CONNECT_RATE = 0.2  # survival probability 0.8 at the last block
SE_RATIO = 0.25
DEPTH_DIVISOR = 8
STEM_FILTERS = 32
HEAD_FILTERS = 1280

# The seven B0 block groups: (repeats, kernel, stride, expand ratio, input filters, output filters).
BASE_GROUPS: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """What input a set of weights expects: per-channel ``(x - mean) / std`` on RGB pixels in
    [0, 255]. The converters in `frozen_det.checkpoints` return one per checkpoint."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __call__(self, images: Any) -> jax.Array:
        mean = jnp.asarray(self.mean, jnp.float32)
        std = jnp.asarray(self.std, jnp.float32)
        return (jnp.asarray(images, jnp.float32) - mean) / std


def variant_config(variant: str) -> VariantConfig:
    key = str(variant).strip().lower().removeprefix("efficientnet-").removeprefix("efficientnet")
    if key not in VARIANTS:
        raise ValueError(f"unknown EfficientNet variant {variant!r}; choose one of {', '.join(VARIANTS)}.")
    return VARIANTS[key]


def round_filters(filters: int, width: float, divisor: int = DEPTH_DIVISOR) -> int:
    """TF's channel rounding: scale, round to a multiple of `divisor`, never lose > 10%."""
    scaled = filters * width
    new = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if new < 0.9 * scaled:
        new += divisor
    return int(new)


def round_repeats(repeats: int, depth: float) -> int:
    return int(math.ceil(depth * repeats))


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    name: str  # keras' block name, e.g. "block2b"
    stage: int  # freeze stage 1..4
    kernel_size: int
    strides: int
    expand_ratio: int
    input_filters: int
    output_filters: int
    se_filters: int  # 0: no squeeze-excite
    drop_rate: float  # drop-connect rate before the freeze switch / train flag


def _stage_of_stride(stride: int) -> int:
    """Output stride 2 or 4 -> stage 1, 8 -> 2, 16 -> 3, 32 -> 4."""
    return max(1, int(math.log2(stride)) - 1)


def block_specs(variant: str, drop_connect_rate: float = DEFAULT_DROP_CONNECT_RATE) -> tuple[BlockSpec, ...]:
    """Every MBConv block of `variant` in order, with TF's scaling applied."""
    cfg = variant_config(variant)
    groups = []
    for g, (repeats, k, s, e, fin, fout) in enumerate(BASE_GROUPS):
        fixed = cfg.lite and g in (0, len(BASE_GROUPS) - 1)
        n = repeats if fixed else round_repeats(repeats, cfg.depth)
        groups.append((n, k, s, e, round_filters(fin, cfg.width), round_filters(fout, cfg.width)))
    total = sum(g[0] for g in groups)
    specs = []
    stride, index = 2, 0  # the stem has stride 2
    prev_out = stem_filters(variant)
    for g, (n, k, s, e, fin, fout) in enumerate(groups):
        for j in range(n):
            strides = s if j == 0 else 1
            stride *= strides
            # The TF builder sizes squeeze-excite (and decides the identity skip) from the
            # rounded `input_filters` of the group; convolutions see the real input width,
            # which differs only for Lite's fixed stem (no SE there, and no skip either way).
            nominal_in = fin if j == 0 else fout
            se = 0 if cfg.lite else max(1, int(nominal_in * SE_RATIO))
            specs.append(
                BlockSpec(
                    name=f"block{g + 1}{chr(ord('a') + j)}",
                    stage=_stage_of_stride(stride),
                    kernel_size=k,
                    strides=strides,
                    expand_ratio=e,
                    input_filters=prev_out,
                    output_filters=fout,
                    se_filters=se,
                    drop_rate=drop_connect_rate * index / total,
                )
            )
            prev_out = fout
            index += 1
    return tuple(specs)


def stem_filters(variant: str) -> int:
    cfg = variant_config(variant)
    return STEM_FILTERS if cfg.lite else round_filters(STEM_FILTERS, cfg.width)


def head_filters(variant: str) -> int:
    cfg = variant_config(variant)
    return HEAD_FILTERS if cfg.lite else round_filters(HEAD_FILTERS, cfg.width)


def level_channels(variant: str) -> dict[int, int]:
    """Channels of the feature map at each pyramid level 2..5."""
    out = {}
    for spec in block_specs(variant):
        out[spec.stage + 1] = spec.output_filters
    return out


def _conv(features, kernel_size, strides, groups, name, dtype, conv_cls, use_bias=False):
    # TF's conv_kernel_initializer: N(0, 2 / (k * k * out)) with `out` the kernel's last dim in
    # TF's layout, which is 1 for a depthwise kernel -- i.e. Flax's fan_in for (k, k, 1, C).
    mode = "fan_in" if groups > 1 else "fan_out"
    return conv_cls(
        features,
        (kernel_size, kernel_size),
        strides=(strides, strides),
        padding="SAME",
        feature_group_count=groups,
        use_bias=use_bias,
        kernel_init=nn.initializers.variance_scaling(2.0, mode, "truncated_normal"),
        dtype=dtype,
        param_dtype=jnp.float32,
        name=name,
    )


def _bn(name, momentum, epsilon, dtype):
    return nn.BatchNorm(momentum=momentum, epsilon=epsilon, dtype=dtype, param_dtype=jnp.float32, name=name)


class MBConv(nn.Module):
    """Inverted residual block: [expand 1x1] -> depthwise kxk -> [SE] -> project 1x1 (+ skip)."""

    spec: BlockSpec
    act: Callable[[jax.Array], jax.Array]
    frozen: bool
    adapters: str  # frozen_det.models.freezing.ADAPTER_KINDS
    bn_momentum: float
    bn_epsilon: float
    dtype: Any = jnp.float32
    conv_cls: Any = nn.Conv
    stored_stats: bool = False  # BN with the stored statistics also in training (bn_mode)

    @nn.compact
    def __call__(self, inputs: jax.Array, *, train: bool) -> jax.Array:
        s = self.spec
        running = self.frozen or not train or self.stored_stats
        bn = lambda name: _bn(name, self.bn_momentum, self.bn_epsilon, self.dtype)
        x = inputs
        filters = s.input_filters * s.expand_ratio
        if s.expand_ratio != 1:
            x = _conv(filters, 1, 1, 1, "expand_conv", self.dtype, self.conv_cls)(x)
            x = self.act(bn("expand_bn")(x, use_running_average=running))
        x = _conv(filters, s.kernel_size, s.strides, filters, "depthwise_conv", self.dtype, self.conv_cls)(x)
        x = self.act(bn("depthwise_bn")(x, use_running_average=running))
        if s.se_filters:
            se = jnp.mean(x, axis=(1, 2), keepdims=True)
            se = self.act(_conv(s.se_filters, 1, 1, 1, "se_reduce", self.dtype, self.conv_cls, use_bias=True)(se))
            se = _conv(filters, 1, 1, 1, "se_expand", self.dtype, self.conv_cls, use_bias=True)(se)
            x = x * jax.nn.sigmoid(se)
        x = _conv(s.output_filters, 1, 1, 1, "project_conv", self.dtype, self.conv_cls)(x)
        x = bn("project_bn")(x, use_running_average=running)
        if s.strides == 1 and s.input_filters == s.output_filters:
            if s.drop_rate > 0 and train and not self.frozen:
                # Drop-connect: drop the whole residual branch per example, rescale the rest.
                x = nn.Dropout(s.drop_rate, broadcast_dims=(1, 2, 3), deterministic=False)(x)
            x = x + inputs
        if self.adapters == "residual":
            x = x + adapters_lib.adapter(s.output_filters, s.strides, self.dtype, self.conv_cls)(inputs)
        elif self.adapters == "film":  # on the block's output, after the skip connection
            x = adapters_lib.film(self.dtype)(x)
        return x


class _Stem(nn.Module):
    features: int
    act: Callable[[jax.Array], jax.Array]
    bn_momentum: float
    bn_epsilon: float
    dtype: Any = jnp.float32
    conv_cls: Any = nn.Conv

    @nn.compact
    def __call__(self, x, *, use_running_average: bool):
        x = _conv(self.features, 3, 2, 1, "conv", self.dtype, self.conv_cls)(x)
        x = _bn("bn", self.bn_momentum, self.bn_epsilon, self.dtype)(x, use_running_average=use_running_average)
        return self.act(x)


class _Stage(nn.Module):
    """The blocks of one freeze stage, under `stage{k}/block{g}{letter}`."""

    blocks: tuple[BlockSpec, ...]
    block_kwargs: dict[str, Any]  # MBConv's fields other than `spec`

    @nn.compact
    def __call__(self, x, train: bool):  # positional: nn.remat takes `train` as a static argument
        for spec in self.blocks:
            x = MBConv(spec, **self.block_kwargs, name=spec.name)(x, train=train)
        return x


class EfficientNet(nn.Module):
    """EfficientNet-B0..B7 / Lite0..4 backbone with the freeze switch and optional adapters
    (residual or FiLM).

    `drop_connect_rate` / `dropout_rate` default (None) to the variant's values (0.2 and the
    variant's classifier dropout). Parameters are float32; `dtype` is the activation dtype.
    `conv=fast_conv.Conv` (config `conv_impl="fast"`) swaps in depthwise convolutions as
    shifted multiply-adds and weight gradients as per-tap dots: several times faster on XLA:CPU
    (tools/bench_depthwise.py), with the same parameters and function as flax's `nn.Conv`.
    """

    variant: str
    freeze: str | int = "none"
    adapters: str | bool = "none"  # "none" | "residual" | "film" (True / False: "residual" / "none")
    num_classes: int | None = 1000
    bn_momentum: float = 0.99
    bn_epsilon: float = 1e-3
    drop_connect_rate: float | None = None
    dropout_rate: float | None = None
    # "batch" or "frozen_stats": BatchNorm with the stored statistics also in training, scale
    # and offset trainable (as ResNet's `bn_mode`).
    bn_mode: str = "batch"
    dtype: Any = jnp.float32
    conv: ModuleDef = nn.Conv
    remat: bool = False  # recompute trained stages' activations in the backward pass (nn.remat)

    NUM_STAGES = 4

    @nn.compact
    def __call__(
        self, images: jax.Array, *, train: bool = False, return_logits: bool = False, return_pre_pool: bool = False
    ):
        """`{level: map}`; with `return_logits`, `(features, logits)`; with `return_pre_pool`
        too, `(features, logits, the head convolution's map that the classifier pools)`."""
        cfg = variant_config(self.variant)
        if self.bn_mode not in ("batch", "frozen_stats"):
            raise ValueError(f"config.model.backbone.bn_mode={self.bn_mode!r}: choose 'batch' or 'frozen_stats'.")
        stored = self.bn_mode == "frozen_stats"
        adapters = adapter_kind(self.adapters)
        plan = freeze_plan(self.freeze, self.NUM_STAGES, adapters)
        act = common.activation_fn("relu6" if cfg.lite else "swish")
        dc = DEFAULT_DROP_CONNECT_RATE if self.drop_connect_rate is None else self.drop_connect_rate
        specs = block_specs(self.variant, dc)
        conv_cls = self.conv

        x = images.astype(self.dtype)
        x = _Stem(
            stem_filters(self.variant), act, self.bn_momentum, self.bn_epsilon, self.dtype, conv_cls, name="stem"
        )(x, use_running_average=plan.is_frozen(0) or not train or stored)
        x = common.maybe_stop_gradient(x, plan.cut_gradient_after(0))

        outputs: dict[int, jax.Array] = {}
        for k in range(1, self.NUM_STAGES + 1):
            stage_blocks = tuple(s for s in specs if s.stage == k)
            block_kwargs = dict(
                act=act,
                frozen=plan.is_frozen(k),
                adapters=adapters,
                bn_momentum=self.bn_momentum,
                bn_epsilon=self.bn_epsilon,
                dtype=self.dtype,
                conv_cls=conv_cls,
                stored_stats=stored,
            )
            stage_cls = (
                nn.remat(_Stage, static_argnums=(2,))
                if self.remat and (not plan.is_frozen(k) or adapters != "none")
                else _Stage
            )
            x = stage_cls(stage_blocks, block_kwargs, name=f"stage{k}")(x, train)
            x = common.maybe_stop_gradient(x, plan.cut_gradient_after(k))
            outputs[k + 1] = x

        if self.num_classes is None:
            if return_logits:
                raise ValueError(
                    "return_logits=True needs the ImageNet head, but this EfficientNet was built "
                    "with num_classes=None; set num_classes (e.g. 1000)."
                )
            return outputs
        if not (return_logits or self.is_initializing()):
            # The head's parameters exist (init always builds them) but features-only calls
            # neither compute it nor touch its BN statistics or dropout.
            return outputs
        y = _conv(head_filters(self.variant), 1, 1, 1, "head_conv", self.dtype, conv_cls)(x)
        y = _bn("head_bn", self.bn_momentum, self.bn_epsilon, self.dtype)(y, use_running_average=not train or stored)
        pre_pool = y = act(y)
        y = common.global_average_pool(y).astype(jnp.float32)
        rate = cfg.dropout_rate if self.dropout_rate is None else self.dropout_rate
        if rate > 0:
            y = nn.Dropout(rate, deterministic=not train)(y)
        logits = nn.Dense(
            self.num_classes,
            kernel_init=nn.initializers.variance_scaling(1.0 / 3.0, "fan_out", "uniform"),
            name="classifier",
        )(y)
        if not return_logits:
            return outputs
        return (outputs, logits, pre_pool) if return_pre_pool else (outputs, logits)
