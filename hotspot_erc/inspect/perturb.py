"""Changes made at inference, with the trained weights as they are: a split whose inputs are
altered (modalities hidden, Gaussian noise), a graph with some edges removed, and the scores of a
pass (weighted F1 overall and per dialogue-length bucket).

Every change is seeded per dialogue (``default_rng((seed, dialogue))``), so a dialogue is altered
the same way whatever the batch size, and reports are reproducible.
"""
from __future__ import annotations

import contextlib
import dataclasses

import numpy as np
import torch

from hotspot_erc.train.metrics import weighted_f1
from hotspot_erc.train.prediction import predict


class PerturbedSplit:
    """``dataset`` with ``change(item, rng) -> item`` applied to every dialogue."""

    def __init__(self, dataset, change, seed: int = 0):
        self.base, self.change, self.seed = dataset, change, seed
        self.corpus, self.split, self.modalities = dataset.corpus, dataset.split, dataset.modalities

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        return self.change(self.base[i], np.random.default_rng((self.seed, int(i))))


def hide_modality(modality: str, share: float):
    """Empty modality ``modality`` in each utterance that has it with probability ``share``
    (1 hides it everywhere); its frames (and intensity) go, the other modalities stay."""
    def change(item, rng):
        lengths = item.lengths[modality]
        hide = torch.from_numpy(rng.random(lengths.numel()) < share) & (lengths > 0)
        if not bool(hide.any()):
            return item
        keep = torch.repeat_interleave(~hide, lengths, output_size=int(lengths.sum()))
        feats = {**item.features, modality: item.features[modality][keep]}
        inten = None if item.intensity is None else {**item.intensity, modality: item.intensity[modality][keep]}
        return dataclasses.replace(item, features=feats, intensity=inten,
                                   lengths={**item.lengths, modality: torch.where(hide, 0, lengths)})
    return change


def add_noise(level: float, scale: dict[str, np.ndarray]):
    """Add Gaussian noise of ``level`` times ``scale[m]`` (a per-channel standard deviation) to
    every frame of every modality in ``scale``."""
    def change(item, rng):
        feats = dict(item.features)
        for m, sd in scale.items():
            x = feats[m]
            noise = rng.standard_normal(tuple(x.shape)).astype(np.float32) * (level * sd.astype(np.float32))
            feats[m] = x + torch.from_numpy(noise)
        return dataclasses.replace(item, features=feats)
    return change


def channel_std(dataset, modality: str) -> np.ndarray:
    """Standard deviation of each feature channel over the split's frames of ``modality``."""
    c = dataset.corpus
    off = c.offsets[modality]
    parts = []
    for d in np.asarray(dataset.indices):
        lo, hi = c.dialogue_utterances(int(d))
        parts.append(np.asarray(c.features[modality][off[lo]:off[hi]], dtype=np.float64))
    x = np.concatenate(parts) if parts else np.zeros((0, int(c.dims[modality])))
    return x.std(0) if x.shape[0] > 1 else np.zeros(x.shape[1])


@contextlib.contextmanager
def edges_removed(model, kind: str, relation_ids=()):
    """Inside the block, the model's conversation graph lacks one family of edges:
    ``"cross_modal"`` / ``"temporal"`` (the graph builder's own switches), or ``"relations"``
    (the edges of the relation ids ``relation_ids``)."""
    graph = model.graph
    saved = dict(graph.edge_options)
    build = graph.build_graph
    try:
        if kind in ("cross_modal", "temporal"):
            graph.edge_options = {**saved, kind: False}
        elif kind == "relations":
            drop = torch.tensor(sorted(relation_ids), dtype=torch.long)

            def filtered(dialogue, speaker, present=None):
                g = build(dialogue, speaker, present)
                keep = ~torch.isin(g.edge_type, drop.to(g.edge_type.device))
                return dataclasses.replace(g, edge_index=g.edge_index[:, keep], edge_type=g.edge_type[keep])
            graph.build_graph = filtered
        else:
            raise ValueError(f"kind must be 'cross_modal', 'temporal' or 'relations', got {kind!r}")
        yield
    finally:
        graph.edge_options = saved
        if "build_graph" in vars(graph):
            del graph.build_graph


def bucket_of(dialogue_length: np.ndarray, buckets: list[tuple[int, int]]) -> np.ndarray:
    """Index of the (lo, hi) bucket holding each length (-1 outside every bucket)."""
    out = np.full(len(dialogue_length), -1, dtype=np.int64)
    for i, (lo, hi) in enumerate(buckets):
        out[(dialogue_length >= lo) & (dialogue_length <= hi)] = i
    return out


def scores(labels: np.ndarray, preds: np.ndarray, bucket: np.ndarray, num_buckets: int,
           num_classes: int) -> dict:
    """Weighted F1 of the labelled utterances, overall and per dialogue-length bucket."""
    res = {"weighted_f1": weighted_f1(labels, preds, num_classes), "by_length": []}
    for b in range(num_buckets):
        sel = bucket == b
        res["by_length"].append(weighted_f1(labels[sel], preds[sel], num_classes)
                                if (labels[sel] >= 0).any() else None)
    return res


def run_pass(model, dataset, device, batch_size: int) -> np.ndarray:
    """Predicted classes of one pass over ``dataset`` in stored order."""
    return predict(model, dataset, device, batch_size=batch_size)["preds"]
