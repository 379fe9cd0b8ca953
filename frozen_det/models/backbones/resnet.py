"""ResNet v1.5 (torchvision layout) and ResNet-RS (TF Model Garden), with the freeze switch.

Both return ``{2: C2, 3: C3, 4: C4, 5: C5}`` (strides 4..32) or, with ``return_logits``, the
pair ``(features, ImageNet logits)``.

* ``variant="v1.5"``: torchvision's ResNet (stride on the 3x3 conv, 7x7 stem + max-pool,
  projection shortcut = strided 1x1 conv + BN, explicit symmetric padding), depths
  18/34 (basic blocks) and 50/101/152/200 (bottlenecks). Parameter names mirror torchvision's
  (`conv1`, `bn1`, ..., `proj_conv`/`proj_bn` for `downsample`) so the converter is a rename.
* ``variant="rs"``: ResNet-RS exactly as docs/reference.md §2.2: deep 3x3 stem
  (32, 32, 64) with a strided 3x3 conv instead of the max-pool, ResNet-D shortcut (2x2 average
  pool with TF 'SAME' padding that excludes padded cells, then 1x1 conv + BN), SE with ratio
  0.25 of the block output (ReLU inside, biases), swish, stochastic depth scaled by stage, TF
  'SAME' padding everywhere.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from frozen_det.models.adapters import adapter, film
from frozen_det.models.backbones.common import activation_fn, global_average_pool, maybe_stop_gradient, pad_symmetric
from frozen_det.models.freezing import FreezePlan, adapter_kind, freeze_plan
from frozen_det.models.layers import ModuleDef

# depth -> (bottleneck?, blocks per stage)
V15_LAYOUTS = {
    18: (False, (2, 2, 2, 2)),
    34: (False, (3, 4, 6, 3)),
    50: (True, (3, 4, 6, 3)),
    101: (True, (3, 4, 23, 3)),
    152: (True, (3, 8, 36, 3)),
    200: (True, (3, 24, 36, 3)),
}
RS_LAYOUTS = {d: V15_LAYOUTS[d] for d in (50, 101, 152, 200)}
STAGE_WIDTHS = (64, 128, 256, 512)
BN_MODES = ("batch", "frozen_stats")


def scaled(channels: int, width: float) -> int:
    """`channels` times the width multiplier, at least 1 (a ResNet-18 at width 0.25 has
    16 / 32 / 64 / 128 channels per stage)."""
    return max(1, int(round(channels * width)))


class _Block(nn.Module):
    """Shared configuration of the residual blocks below."""

    features: int
    strides: int
    project: bool  # first block of a stage: projection shortcut
    rs: bool
    frozen: bool
    adapters: str  # frozen_det.models.freezing.ADAPTER_KINDS
    act: Callable
    norm: Callable
    drop_path_rate: float = 0.0
    dtype: Any = jnp.float32
    conv_cls: Any = nn.Conv

    def conv(self, features, kernel, strides=1, name=None):
        padding = "SAME" if self.rs else pad_symmetric(kernel)
        return self.conv_cls(
            features, (kernel, kernel), (strides, strides), padding=padding, use_bias=False, dtype=self.dtype, name=name
        )

    def shortcut(self, x, out_features):
        if not self.project:
            return x
        if self.rs:  # ResNet-D: average, then 1x1 conv (docs/reference.md §2.2).
            x = nn.avg_pool(x, (2, 2), (self.strides, self.strides), padding="SAME", count_include_pad=False)
            x = self.conv(out_features, 1, name="proj_conv")(x)
        else:
            x = self.conv(out_features, 1, self.strides, name="proj_conv")(x)
        return self.norm(name="proj_bn")(x)

    def finish(self, x, residual, out_features, train):
        """shortcut + (stochastic depth) residual [+ residual adapter], the activation [, FiLM]."""
        if self.drop_path_rate > 0 and train and not self.frozen:
            keep = 1.0 - self.drop_path_rate
            mask = jax.random.bernoulli(self.make_rng("dropout"), keep, (residual.shape[0], 1, 1, 1))
            residual = residual * mask.astype(residual.dtype) / keep
        y = self.shortcut(x, out_features) + residual
        if self.adapters == "residual":
            y = y + adapter(out_features, self.strides, self.dtype, self.conv_cls)(x)
        y = self.act(y)
        if self.adapters == "film":  # on the block's output, as the MBConv blocks' (efficientnet.py)
            y = film(self.dtype)(y)
        return y


class BasicBlock(_Block):
    @nn.compact
    def __call__(self, x, train: bool):
        y = self.conv(self.features, 3, self.strides, name="conv1")(x)
        y = self.act(self.norm(name="bn1")(y))
        y = self.conv(self.features, 3, name="conv2")(y)
        y = self.norm(name="bn2")(y)
        return self.finish(x, y, self.features, train)


class SqueezeExcite(nn.Module):
    """TF-Vision SqueezeExcitation as used by ResNet-RS: inner ReLU, biases (docs/reference.md §2.2)."""

    reduced: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        s = jnp.mean(x, axis=(1, 2), keepdims=True)
        s = jax.nn.relu(nn.Conv(self.reduced, (1, 1), dtype=self.dtype, name="reduce")(s))
        s = nn.Conv(x.shape[-1], (1, 1), dtype=self.dtype, name="expand")(s)
        return x * jax.nn.sigmoid(s)


class BottleneckBlock(_Block):
    se_ratio: float = 0.0

    @nn.compact
    def __call__(self, x, train: bool):
        out_features = 4 * self.features
        y = self.conv(self.features, 1, name="conv1")(x)
        y = self.act(self.norm(name="bn1")(y))
        y = self.conv(self.features, 3, self.strides, name="conv2")(y)
        y = self.act(self.norm(name="bn2")(y))
        y = self.conv(out_features, 1, name="conv3")(y)
        y = self.norm(name="bn3")(y)
        if self.se_ratio > 0:
            y = SqueezeExcite(max(1, int(out_features * self.se_ratio)), self.dtype, name="se")(y)
        return self.finish(x, y, out_features, train)


class _Stem(nn.Module):
    rs: bool
    act: Callable
    norm: Callable
    dtype: Any = jnp.float32
    conv_cls: Any = nn.Conv
    width: float = 1.0

    @nn.compact
    def __call__(self, x):
        def conv_bn_act(x, features, kernel, strides, i):
            padding = "SAME" if self.rs else pad_symmetric(kernel)
            x = self.conv_cls(
                features,
                (kernel, kernel),
                (strides, strides),
                padding=padding,
                use_bias=False,
                dtype=self.dtype,
                name=f"conv{i}",
            )(x)
            return self.act(self.norm(name=f"bn{i}")(x))

        if not self.rs:  # torchvision: 7x7/2 conv, BN, ReLU, 3x3/2 max-pool (pad 1).
            x = conv_bn_act(x, scaled(64, self.width), 7, 2, 1)
            return nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
        # ResNet-RS v1 stem; the max-pool is replaced by a strided 3x3 conv (docs/reference.md §2.2).
        for i, (features, strides) in enumerate(((32, 2), (32, 1), (64, 1), (64, 2)), start=1):
            x = conv_bn_act(x, scaled(features, self.width), 3, strides, i)
        return x


class _Stage(nn.Module):
    block: type
    widths: int
    count: int
    first_strides: int
    project_first: bool
    block_kwargs: dict

    @nn.compact
    def __call__(self, x, train: bool):
        for i in range(self.count):
            x = self.block(
                features=self.widths,
                strides=self.first_strides if i == 0 else 1,
                project=i == 0 and self.project_first,
                name=f"block{i}",
                **self.block_kwargs,
            )(x, train)
        return x


class ResNet(nn.Module):
    depth: int = 50
    variant: str = "v1.5"  # "v1.5" | "rs"
    freeze: str | int = "none"
    adapters: str | bool = "none"  # "none" | "residual" | "film" (True / False: "residual" / "none")
    num_classes: int | None = 1000
    bn_momentum: float = 0.9  # flax convention: 0.9 == torch momentum 0.1
    bn_epsilon: float = 1e-5
    activation: str | None = None  # default: relu (v1.5), swish (rs)
    se_ratio: float | None = None  # default: 0 (v1.5), 0.25 (rs)
    drop_path_rate: float = 0.0  # stochastic depth (ResNet-RS scales it by stage)
    dropout_rate: float = 0.0  # before the ImageNet classifier
    # Channels of the stem and every stage times `width` (narrow ResNets that pre-train in
    # minutes on a CPU); 1.0 is the standard network (and the converters' layout).
    width: float = 1.0
    # "batch": BatchNorm normalises with batch statistics in training (frozen parts never do);
    # "frozen_stats": always with the stored statistics, scale and offset still trainable (the
    # fine-tuning mode of the Detectron / maskrcnn-benchmark recipes).
    bn_mode: str = "batch"
    dtype: Any = jnp.float32
    # The convolution (frozen_det.models.layers.conv_module): flax's, or fast_conv.Conv, whose
    # weight gradients are one dot per kernel tap (much faster fine-tuning on XLA:CPU,
    # tools/bench_backbone.py); the same parameters either way.
    conv: ModuleDef = nn.Conv
    remat: bool = False  # recompute trained stages' activations in the backward pass (nn.remat)

    NUM_STAGES = 4

    def layout(self) -> tuple[bool, tuple[int, ...]]:
        """(bottleneck?, blocks per stage), validating variant and depth."""
        if self.variant not in ("v1.5", "rs"):
            raise ValueError(f"ResNet variant {self.variant!r} is unknown: use 'v1.5' or 'rs'.")
        table = RS_LAYOUTS if self.variant == "rs" else V15_LAYOUTS
        if self.depth not in table:
            name = "ResNet-RS" if self.variant == "rs" else "ResNet"
            raise ValueError(f"{name} depth {self.depth} is not available; choose one of {sorted(table)}.")
        return table[self.depth]

    @nn.compact
    def __call__(
        self, images: jax.Array, *, train: bool = False, return_logits: bool = False, return_pre_pool: bool = False
    ):
        """`{level: map}`; with `return_logits`, `(features, logits)`; with `return_pre_pool`
        too, `(features, logits, the map the classifier pools)` (class activation maps)."""
        bottleneck, blocks = self.layout()
        if self.bn_mode not in BN_MODES:
            raise ValueError(f"config.model.backbone.bn_mode={self.bn_mode!r}: choose one of {BN_MODES}.")
        rs = self.variant == "rs"
        adapters = adapter_kind(self.adapters)
        plan: FreezePlan = freeze_plan(self.freeze, self.NUM_STAGES, adapters)
        act = activation_fn(self.activation or ("swish" if rs else "relu"))
        se_ratio = (0.25 if rs else 0.0) if self.se_ratio is None else self.se_ratio
        conv_cls = self.conv

        def norm_for(part: int):
            # A frozen part always runs BN in inference mode with the checkpoint's statistics.
            training = train and not plan.is_frozen(part) and self.bn_mode == "batch"
            return lambda name: nn.BatchNorm(
                use_running_average=not training,
                momentum=self.bn_momentum,
                epsilon=self.bn_epsilon,
                dtype=self.dtype,
                name=name,
            )

        x = _Stem(rs, act, norm_for(0), self.dtype, conv_cls, self.width, name="stem")(images.astype(self.dtype))
        x = maybe_stop_gradient(x, plan.cut_gradient_after(0))

        features = {}
        for stage, (width, count) in enumerate(zip(STAGE_WIDTHS, blocks), start=1):
            block_kwargs = dict(
                rs=rs,
                frozen=plan.is_frozen(stage),
                adapters=adapters,
                act=act,
                norm=norm_for(stage),
                dtype=self.dtype,
                conv_cls=conv_cls,
                # TF-Vision ResNet-RS: stage rate = rate * (stage + 1) / 5.
                drop_path_rate=self.drop_path_rate * ((stage + 1) / 5 if rs else 1.0),
            )
            if bottleneck:
                block_kwargs["se_ratio"] = se_ratio
            stage_cls = (
                nn.remat(_Stage, static_argnums=(2,))
                if self.remat and (not plan.is_frozen(stage) or adapters != "none")
                else _Stage
            )
            x = stage_cls(
                BottleneckBlock if bottleneck else BasicBlock,
                scaled(width, self.width),
                count,
                first_strides=1 if stage == 1 else 2,
                project_first=stage > 1 or bottleneck,
                block_kwargs=block_kwargs,
                name=f"stage{stage}",
            )(x, train)
            x = maybe_stop_gradient(x, plan.cut_gradient_after(stage))
            features[stage + 1] = x

        if return_logits:
            if self.num_classes is None:
                raise ValueError("return_logits=True needs a classifier: set num_classes.")
            pooled = global_average_pool(x).astype(jnp.float32)
            pooled = nn.Dropout(self.dropout_rate, deterministic=not train)(pooled)
            logits = nn.Dense(self.num_classes, name="classifier")(pooled)
            return (features, logits, x) if return_pre_pool else (features, logits)
        if self.num_classes is not None and self.is_initializing():
            # Create the head's parameters at init so that checkpoints round-trip either way.
            nn.Dense(self.num_classes, name="classifier")(global_average_pool(x).astype(jnp.float32))
        return features
