"""Class weights of the cross-entropy, from the labels of the training split."""
from __future__ import annotations

import numpy as np
import torch


def split_labels(dataset) -> np.ndarray:
    """Labels of every utterance of a :class:`DialogueDataset` (reads only the label array)."""
    c = dataset.corpus
    parts = []
    for d in dataset.indices:
        lo, hi = c.dialogue_utterances(int(d))
        parts.append(np.asarray(c.label[lo:hi], dtype=np.int64))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def inverse_frequency_weights(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    """w_c = n / (C · n_c), 1 for classes absent from the training split."""
    labels = labels[labels >= 0]
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    w = np.where(counts > 0, labels.size / (num_classes * np.maximum(counts, 1)), 1.0)
    return torch.tensor(w, dtype=torch.float32)
