"""Evaluation metrics as ERC papers report them.

Accuracy, weighted F1 (``sklearn.metrics.f1_score(..., average="weighted")``), per-class F1 and the
confusion matrix. Labels equal to ``-1`` mark unlabelled utterances and are ignored everywhere.
The same functions serve every label set (IEMOCAP 6-way / 4-way, MOSEI 2- / 7-class): the label
set is whatever the corpus' ``meta["label_names"]`` says.
"""
from __future__ import annotations

import numpy as np
import torch
from sklearn import metrics as _sk

IGNORE_INDEX = -1


def _as_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.int64).reshape(-1)


def _labelled(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    y_true, y_pred = _as_numpy(y_true), _as_numpy(y_pred)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred must have the same length, got {y_true.size} and {y_pred.size}")
    keep = y_true != IGNORE_INDEX
    return y_true[keep], y_pred[keep]


def accuracy(y_true, y_pred) -> float:
    """Share of labelled utterances predicted correctly (0.0 when none is labelled)."""
    t, p = _labelled(y_true, y_pred)
    return float((t == p).mean()) if t.size else 0.0


def weighted_f1(y_true, y_pred, num_classes: int | None = None) -> float:
    """F1 per class averaged with the class supports as weights (sklearn ``average="weighted"``)."""
    t, p = _labelled(y_true, y_pred)
    if not t.size:
        return 0.0
    labels = None if num_classes is None else list(range(num_classes))
    return float(_sk.f1_score(t, p, labels=labels, average="weighted", zero_division=0))


def per_class_f1(y_true, y_pred, num_classes: int) -> list[float]:
    """F1 of each class 0..num_classes-1 (0.0 for a class never true nor predicted)."""
    t, p = _labelled(y_true, y_pred)
    if not t.size:
        return [0.0] * num_classes
    f1 = _sk.f1_score(t, p, labels=list(range(num_classes)), average=None, zero_division=0)
    return [float(v) for v in f1]


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    """[num_classes, num_classes] counts; row = true class, column = predicted class."""
    t, p = _labelled(y_true, y_pred)
    for name, arr in (("y_true", t), ("y_pred", p)):
        if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
            raise ValueError(f"{name} holds labels outside [0, {num_classes}): {sorted(set(arr.tolist()))}")
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (t, p), 1)
    return cm


def evaluate_predictions(y_true, y_pred, label_names: list[str]) -> dict:
    """Every metric in one JSON-ready dict: accuracy, weighted_f1, per_class_f1 (by name),
    confusion_matrix (nested lists, rows = true) and the number of labelled utterances."""
    k = len(label_names)
    f1s = per_class_f1(y_true, y_pred, k)
    t, _ = _labelled(y_true, y_pred)
    return {
        "accuracy": accuracy(y_true, y_pred),
        "weighted_f1": weighted_f1(y_true, y_pred, k),
        "per_class_f1": {name: f for name, f in zip(label_names, f1s)},
        "confusion_matrix": confusion_matrix(y_true, y_pred, k).tolist(),
        "label_names": list(label_names),
        "support": int(t.size),
    }
