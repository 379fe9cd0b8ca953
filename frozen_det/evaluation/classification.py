"""Classification metrics and feature-space evaluations (host side, numpy).

* `top_k_accuracy`, `per_class_accuracy`: from scores and labels;
* `ClassificationEvaluator`: accumulates an eval split's logits and scores it (top-1, top-5,
  loss, per-class accuracy and its mean);
* `knn_predict` / `knn_accuracy`: k-nearest-neighbour classification of features by cosine
  similarity, majority vote (ties to the smallest class id, as scikit-learn's
  KNeighborsClassifier): the "induction accuracy" of Huh et al. 2016 (sec. 5.3) on classes a
  network never trained on;
* `coarse_minus_fine_accuracy`: how well a fine classifier knows its coarse groups (sec. 5.4);
* `extract_features`: a classifier's pooled features over a pipeline.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from frozen_det.evaluation.gather import gathered_outputs


def top_k_accuracy(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Fraction of rows whose label is among the k highest scores (ties: the lower class id
    ranks first, a stable sort of -score)."""
    scores, labels = np.asarray(scores), np.asarray(labels)
    k = min(k, scores.shape[1])
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(top == labels[:, None], axis=1))) if len(labels) else 0.0


def per_class_accuracy(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """float [num_classes]: accuracy over each class's examples (nan for classes without any)."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    out = np.full(num_classes, np.nan)
    for c in range(num_classes):
        mine = labels == c
        if mine.any():
            out[c] = float(np.mean(predictions[mine] == c))
    return out


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    logits = np.asarray(logits, np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-np.mean(log_probs[np.arange(len(labels)), labels]))


class ClassificationEvaluator:
    """Accumulates (logits, labels) of valid examples and reports the eval JSON's metrics."""

    def __init__(self, class_names: list):
        self.class_names = list(class_names)
        self._logits, self._labels = [], []

    def add(self, logits: np.ndarray, labels: np.ndarray) -> None:
        self._logits.append(np.asarray(logits, np.float32))
        self._labels.append(np.asarray(labels, np.int64))

    def evaluate(self) -> dict:
        logits = np.concatenate(self._logits) if self._logits else np.zeros((0, len(self.class_names)))
        labels = np.concatenate(self._labels) if self._labels else np.zeros((0,), np.int64)
        per_class = per_class_accuracy(np.argmax(logits, 1), labels, len(self.class_names))
        present = ~np.isnan(per_class)
        return {
            "top1": top_k_accuracy(logits, labels, 1),
            "top5": top_k_accuracy(logits, labels, 5),
            "loss": softmax_cross_entropy(logits, labels) if len(labels) else float("nan"),
            "mean_per_class_accuracy": float(np.mean(per_class[present])) if present.any() else float("nan"),
            "per_class_accuracy": {self.class_names[c]: float(per_class[c]) for c in np.flatnonzero(present)},
            "num_images": int(len(labels)),
        }


def _normalised(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def knn_votes(train_features, train_labels, query_features, k: int, num_classes: int, chunk: int = 1024):
    """int [Q, num_classes]: how many of each query's k nearest training features (cosine
    similarity; ties in distance to the lower training index) carry each class."""
    train, labels = _normalised(train_features), np.asarray(train_labels, np.int64)
    queries = _normalised(query_features)
    votes = np.zeros((len(queries), num_classes), np.int64)
    for start in range(0, len(queries), chunk):
        similarity = queries[start : start + chunk] @ train.T
        nearest = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
        for row, neighbours in enumerate(nearest):
            np.add.at(votes[start + row], labels[neighbours], 1)
    return votes


def knn_predict(train_features, train_labels, query_features, k: int, num_classes: int) -> np.ndarray:
    """Majority vote of the k nearest neighbours (ties to the smallest class id)."""
    return np.argmax(knn_votes(train_features, train_labels, query_features, k, num_classes), axis=1)


def knn_accuracy(
    train_features, train_labels, query_features, query_labels, k: int = 20, num_classes: int | None = None
) -> dict:
    """{"top1", "top5"}: the label's rank among the classes ordered by neighbour votes."""
    num_classes = num_classes or int(max(np.max(train_labels), np.max(query_labels))) + 1
    votes = knn_votes(train_features, train_labels, query_features, k, num_classes)
    return {"top1": top_k_accuracy(votes, query_labels, 1), "top5": top_k_accuracy(votes, query_labels, 5)}


def coarse_minus_fine_accuracy(predictions, labels, group_of) -> dict:
    """Huh et al. 2016 sec. 5.4, for a classifier of fine classes: per coarse group (`group_of`:
    fine class -> group), the accuracy of its coarse class (the predicted fine class falls in
    the image's group) minus the mean accuracy of its sub-classes. Large where confusions stay
    inside the group (visually consistent sub-classes)."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    group_of = np.asarray(group_of)
    out = {}
    for group in np.unique(group_of[labels]):
        members = group_of[labels] == group
        coarse = float(np.mean(group_of[predictions[members]] == group))
        fine = [float(np.mean(predictions[labels == c] == c)) for c in np.unique(labels[members])]
        out[int(group)] = coarse - float(np.mean(fine))
    return out


def extract_features(
    features_fn: Callable, variables, pipeline, to_device: Callable | None = None, label_key: str = "label"
):
    """(features [N, D], labels [N]) of a pipeline's valid examples (an eval pipeline: one
    ordered pass), from `features_fn(variables, images) -> [B, D]` (jitted by the caller);
    `label_key` "fine_label" gives the source's classes instead of the training labels."""
    fn = lambda v, inputs: {"features": features_fn(v, inputs["image"])}
    outs = list(gathered_outputs(fn, variables, pipeline, ("image",), to_device, carry=(label_key,)))
    return np.concatenate([o["features"] for o in outs]), np.concatenate([o[label_key] for o in outs])
