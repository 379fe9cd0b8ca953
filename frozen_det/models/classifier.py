"""Image classifiers: any backbone (ResNet / ResNet-RS / EfficientNet, any freeze setting,
adapters) with its global pooling and linear classifier (the backbone family's own ImageNet
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
