"""Flax modules: backbones, adapters, necks, heads and the assembled models. Nothing here reads
data or training code; `config.model`'s schema is frozen_det.models.config, and the task that
builds a model from it is frozen_det.tasks."""
