"""``#graph``: what each family of conversation-graph edges contributes, removed at inference.

Variants (trained weights unchanged; each says what it removed and how many edges that was):
no cross-modal edges (same-utterance links between modalities), no temporal edges (links between
different utterances), and for speaker-typed graphs no same-speaker / no other-speaker temporal
edges. Each is scored by weighted F1 on the split and per dialogue-length bucket (about equal
numbers of dialogues per bucket), against the full graph.
"""
from __future__ import annotations

import re

import numpy as np

from hotspot_erc.inspect import perturb, stats

_COGMEN = re.compile(r"^s(\d+)->s(\d+):")


def speaker_relations(names: list[str], scheme: str) -> dict[str, list[int]]:
    """Relation ids of same-speaker and other-speaker temporal edges, for the schemes that type
    edges by speaker (``speaker``: ``...:same`` / ``...:other``; ``cogmen``: speaker pairs)."""
    same, other = [], []
    for i, n in enumerate(names):
        if scheme == "speaker":
            if n.endswith(":same"):
                same.append(i)
            elif n.endswith(":other"):
                other.append(i)
        elif scheme == "cogmen" and (hit := _COGMEN.match(n)):
            (same if hit.group(1) == hit.group(2) else other).append(i)
    return {"same_speaker": same, "other_speaker": other}


def edge_families(col, scheme: str) -> dict[str, dict]:
    """Per variant: what it removes (text), how (``kind`` and relation ids for
    :func:`~hotspot_erc.inspect.perturb.edges_removed`) and how many of the split's edges that is."""
    e = col.edges
    same_utt = e["source"] == e["target"]
    fam = {"no_cross_modal": {"kind": "cross_modal", "relations": [],
                              "removes": "same-utterance links between modalities",
                              "edges": int((same_utt & (e["source_modality"] != e["target_modality"])).sum())},
           "no_temporal": {"kind": "temporal", "relations": [],
                           "removes": "links between different utterances of a dialogue",
                           "edges": int((~same_utt).sum())}}
    for name, ids in speaker_relations(col.relation_names, scheme).items():
        who = "the same speaker" if name == "same_speaker" else "another speaker"
        fam[f"no_{name}"] = {"kind": "relations", "relations": ids,
                             "removes": f"temporal links from utterances of {who}",
                             "edges": int(np.isin(e["relation"], ids).sum())}
    return fam


def graph_section(model, col, dataset, device, batch_size: int, scheme: str) -> dict:
    if col.edges is None:
        return {"note": "the graph is off in this run (--no-graph): there are no edges to remove.", "variants": {}}
    dia_len = np.bincount(col.dialogue)[col.dialogue]
    buckets = stats.length_buckets(np.bincount(col.dialogue))
    bucket = perturb.bucket_of(dia_len, buckets)
    num_classes = len(col.label_names)
    full = perturb.scores(col.labels, col.preds, bucket, len(buckets), num_classes)
    res = {"note": None, "total_edges": int(col.edges["source"].size), "buckets": [list(b) for b in buckets],
           "bucket_dialogues": [int(((np.bincount(col.dialogue) >= lo) & (np.bincount(col.dialogue) <= hi)).sum())
                                for lo, hi in buckets],
           "bucket_utterances": [int(((bucket == i) & (col.labels >= 0)).sum()) for i in range(len(buckets))],
           "full": full, "variants": {}}
    for name, fam in edge_families(col, scheme).items():
        entry = {"removes": fam["removes"], "edges_removed": fam["edges"]}
        if fam["edges"] == 0:
            entry["note"] = "not applicable: the graph of this run has no such edges"
        else:
            with perturb.edges_removed(model, fam["kind"], fam["relations"]):
                preds = perturb.run_pass(model, dataset, device, batch_size)
            entry.update(perturb.scores(col.labels, preds, bucket, len(buckets), num_classes))
            entry["delta"] = entry["weighted_f1"] - full["weighted_f1"]
            entry["delta_by_length"] = [None if a is None or b is None else a - b
                                        for a, b in zip(entry["by_length"], full["by_length"])]
        res["variants"][name] = entry
    return res
