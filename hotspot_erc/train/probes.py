"""Linear probes of the representations the classifier could use.

After training, each branch's per-utterance vectors (``ModelOutput.branches``: encoder-pooled,
MoA-pooled, graph; plus the classifier's whole input) are computed for the train and dev splits,
a logistic regression is fitted on train and scored on dev. A branch whose probe is no better
than the encoder-pooled one adds nothing the classifier could not already read; one that is
better but does not lift the model points at how the branches are combined or trained.
"""
from __future__ import annotations

import numpy as np
import torch

from hotspot_erc.train.metrics import evaluate_predictions
from hotspot_erc.train.trainer import predict

CLASSIFIER_INPUT = "classifier_input"


class _BranchCollector:
    """Receives every evaluated batch from :func:`~hotspot_erc.train.trainer.predict` (its
    ``diagnostics`` hook) and keeps the labelled utterances' branch vectors."""

    def __init__(self):
        self.feats: dict[str, list] = {}
        self.labels: list = []

    def update(self, out, batch) -> None:
        keep = batch.labels >= 0
        for name, vec in {**out.branches, CLASSIFIER_INPUT: out.features}.items():
            self.feats.setdefault(name, []).append(vec[keep].float().cpu())
        self.labels.append(batch.labels[keep].cpu())


def branch_features(model, dataset, device, batch_size: int = 16) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per-utterance vectors of every branch over ``dataset`` (labelled utterances only)."""
    got = _BranchCollector()
    predict(model, dataset, device, batch_size=batch_size, diagnostics=got)
    return ({k: torch.cat(v).numpy() for k, v in got.feats.items()},
            torch.cat(got.labels).numpy() if got.labels else np.zeros(0, dtype=np.int64))


def linear_probes(model, train_set, dev_set, device, label_names, batch_size: int = 16,
                  max_train: int = 20_000, seed: int = 0) -> dict[str, dict]:
    """{branch: {"dev_accuracy", "dev_weighted_f1", "dim"}} of a logistic regression per branch."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train, y_train = branch_features(model, train_set, device, batch_size)
    dev, y_dev = branch_features(model, dev_set, device, batch_size)
    if len(y_train) == 0 or len(y_dev) == 0 or len(np.unique(y_train)) < 2:
        return {}
    if len(y_train) > max_train:  # keeps the probe to seconds on large corpora
        pick = np.random.default_rng(seed).choice(len(y_train), max_train, replace=False)
        train = {k: v[pick] for k, v in train.items()}
        y_train = y_train[pick]
    res = {}
    for name in train:
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500, random_state=seed))
        clf.fit(train[name], y_train)
        m = evaluate_predictions(y_dev, clf.predict(dev[name]), list(label_names))
        res[name] = {"dev_accuracy": m["accuracy"], "dev_weighted_f1": m["weighted_f1"],
                     "dim": int(train[name].shape[1])}
    return res
