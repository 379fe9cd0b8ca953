"""Image classifiers: any backbone (ResNet / ResNet-RS / EfficientNet, any freeze setting,
adapters) with its global pooling and linear classifier, or a linear classifier on a tap of a
two-stage detector (DetectorTapClassifier) (the backbone family's own ImageNet
head layout: ResNet pools C5; EfficientNet pools its 1x1 head convolution), trained with a
softmax or a per-class sigmoid loss and label smoothing.

Train mode (`model.apply(variables, batch, train=True, rngs={"dropout": key},
mutable=["batch_stats"])`) returns `(losses, metrics)` like every task's model
(frozen_det.tasks.base); inference returns `{"logits", "probabilities"}` and, with
`with_maps=True`, the map the classifier pools (`pre_pool_map`, for class activation maps).
The batch: `image` [B, S, S, 3] and `label` [B] (0..num_classes-1).
"""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from frozen_det.models.backbones import build_backbone
from frozen_det.models.detector import TwoStageDetector
from frozen_det.ops.roi_align import multilevel_roi_align


class Classifier(nn.Module):
    """`config` is a complete `config.model` of type "classifier"
    (frozen_det.models.config.classifier_defaults), frozen for hashing."""

    config: ml_collections.FrozenConfigDict

    def setup(self):
        c = self.config
        self.backbone = build_backbone(dict(c.backbone.to_dict(), num_classes=c.num_classes))

    def logits(self, images, train: bool, with_maps: bool = False):
        features, logits, pre_pool = self.backbone(images, train=train, return_logits=True, return_pre_pool=True)
        del features
        logits = logits.astype(jnp.float32)
        return (logits, pre_pool) if with_maps else logits

    def loss(self, logits, labels):
        """Softmax cross-entropy or per-class sigmoid BCE against (smoothed) one-hot labels."""
        c = self.config
        targets = optax.smooth_labels(jax.nn.one_hot(labels, c.num_classes), c.label_smoothing)
        if c.loss == "softmax":
            return jnp.mean(optax.softmax_cross_entropy(logits, targets))
        return jnp.mean(jnp.sum(optax.sigmoid_binary_cross_entropy(logits, targets), axis=-1))

    def probabilities(self, logits):
        return jax.nn.softmax(logits) if self.config.loss == "softmax" else jax.nn.sigmoid(logits)

    def __call__(self, batch: Mapping[str, Any], train: bool = False, with_maps: bool = False):
        if not train:
            logits, maps = self.logits(batch["image"], False, with_maps=True)
            out = {"logits": logits, "probabilities": self.probabilities(logits)}
            if with_maps:
                out["pre_pool_map"] = maps
            return out
        logits = self.logits(batch["image"], True)
        labels = batch["label"].astype(jnp.int32)
        loss = self.loss(logits, labels)
        accuracy = jnp.mean((jnp.argmax(logits, -1) == labels).astype(jnp.float32))
        return {"total": loss, "classification": loss}, {"accuracy": accuracy}


TAPS = ("conv5", "conv_proj", "conv_proj_1", "conv_proj_2", "conv_proj_4", "fc1", "fc2")
# The FPN level the whole-image box is read from. The canonical rule (FPN, Lin et al. 2017, eq. 1:
# level 4 for a 224-pixel box) puts the whole image of Li et al.'s ~800-pixel inputs on P5; it
# would put a 64-96 pixel canvas on P2, a map the paper's taps never read.
TAP_LEVEL = 5


def adaptive_average_pool(x: jnp.ndarray, size: int) -> jnp.ndarray:
    """[B, S, S, C] -> [B, size, size, C]: bin i averages rows (and columns) floor(i S / size) to
    ceil((i + 1) S / size) - 1, as torch.nn.AdaptiveAvgPool2d (a 7 x 7 map to 2 x 2: rows 0-3
    and 3-6), so that every bin is an exact mean of whole cells."""

    def bins(n):
        weights = [[0.0] * n for _ in range(size)]
        for i in range(size):
            start, end = (i * n) // size, -((-(i + 1) * n) // size)
            for j in range(start, end):
                weights[i][j] = 1.0 / (end - start)
        return jnp.asarray(weights, x.dtype)

    return jnp.einsum("is,bstc,jt->bijc", bins(x.shape[1]), x, bins(x.shape[2]))


class DetectorTapClassifier(TwoStageDetector):
    """A linear classifier on a feature of a two-stage detector (Li et al., "An analysis of
    pre-training on object detection", sec. 4.3): `tap` is
      "conv5"          the backbone's last level, average pooled;
      "conv_proj"      the RoI feature map of the whole-image box (RoIAlign on the FPN's P5,
                       `TAP_LEVEL`, then the box head's convolutions): the blob the first FC
                       reads, flattened;
      "conv_proj_K"    the same map average pooled to K x K (K = 1, 2, 4; adaptive bins);
      "fc1", "fc2"     the box head's fully connected layers on that box.
    `config` is the detector's `config.model` (the run to transfer from); the detector's layers
    keep their parameter paths (backbone/, neck/, box_heads_0/) so that `train.init_from` of a
    detector run restores them, and the new layer is `tap_classifier/`. `frozen_features` runs
    the detector's layers in inference mode (BatchNorm on stored statistics: fixed features for
    a linear probe)."""

    tap: str = "fc1"
    num_tap_classes: int = 10
    loss_kind: str = "softmax"
    label_smoothing: float = 0.0
    frozen_features: bool = False

    def setup(self):
        super().setup()
        if self.tap not in TAPS:
            raise ValueError(f"config.model.features={self.tap!r}: choose 'backbone' or one of {TAPS}")
        self.tap_classifier = nn.Dense(self.num_tap_classes, name="tap_classifier")

    def tap_features(self, images, train: bool):
        """-> (features [B, D], map [B, H, W, D] whose spatial mean is `features`: C5 itself for
        the conv5 tap, the features as a 1x1 map for the others)."""
        train = train and not self.frozen_features
        c5 = self.backbone(images, train=train)
        if self.tap == "conv5":
            top = c5[max(c5)].astype(jnp.float32)
            return jnp.mean(top, axis=(1, 2)), top
        features = self.neck(c5, train=train)
        h, w = images.shape[1:3]
        whole = jnp.broadcast_to(jnp.asarray([0.0, 0.0, h, w], jnp.float32), (images.shape[0], 1, 4))
        n = self.config.neck
        level = min(max(TAP_LEVEL, n.min_level), n.max_level)
        crops = multilevel_roi_align(
            {level: features[level]},
            whole,
            self.config.roi.crop_size,
            sampling_ratio=self.config.roi.sampling_ratio,
            aligned=self.config.roi.aligned,
        )
        taps = self.box_heads[0](crops, train, taps=True)
        if self.tap not in taps and self.tap.startswith("fc"):
            raise ValueError(
                f"config.model.features={self.tap!r}: the detector's box head has "
                f"{self.config.box_head.num_fcs} fully connected layers"
            )
        if self.tap.startswith("fc"):
            return self._as_map(taps[self.tap][:, 0].astype(jnp.float32))
        blob = taps["conv_proj"][:, 0].astype(jnp.float32)  # [B, S, S, C]
        if self.tap != "conv_proj":
            k = int(self.tap.rsplit("_", 1)[1])
            blob = adaptive_average_pool(blob, k)
        return self._as_map(blob.reshape(blob.shape[0], -1))

    @staticmethod
    def _as_map(features):
        return features, features[:, None, None, :]

    def __call__(self, batch: Mapping[str, Any], train: bool = False, with_maps: bool = False):
        features, feature_map = self.tap_features(batch["image"], train)
        logits = self.tap_classifier(features).astype(jnp.float32)
        if not train:
            probabilities = jax.nn.softmax(logits) if self.loss_kind == "softmax" else jax.nn.sigmoid(logits)
            out = {"logits": logits, "probabilities": probabilities}
            if with_maps:  # for feature extraction and activation maps
                out["pre_pool_map"] = feature_map
            return out
        labels = batch["label"].astype(jnp.int32)
        targets = optax.smooth_labels(jax.nn.one_hot(labels, self.num_tap_classes), self.label_smoothing)
        if self.loss_kind == "softmax":
            loss = jnp.mean(optax.softmax_cross_entropy(logits, targets))
        else:
            loss = jnp.mean(jnp.sum(optax.sigmoid_binary_cross_entropy(logits, targets), axis=-1))
        accuracy = jnp.mean((jnp.argmax(logits, -1) == labels).astype(jnp.float32))
        return {"total": loss, "classification": loss}, {"accuracy": accuracy}
