"""frozen_det: detectors and instance segmenters on frozen, partly frozen, adapted or fine-tuned
classification backbones, in JAX / Flax (docs/architecture.md)."""

import os

# TensorFlow only feeds the input pipelines (docs/architecture.md): its C++ start-up notices
# (oneDNN, CPU feature guards) are noise on a user's console, whichever frozen_det module imports
# it first. A level the user has set wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
