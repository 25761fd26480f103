"""``#dialogues``: the per-dialogue view's data, one entry per shown dialogue.

Each utterance in order: speaker, true and predicted label, confidence; per modality its frames'
hotspot score, gate and window membership (and the generator's bursts, where known), or, for text
whose frames are the words of a stored transcript, the words themselves; its strongest MoA links
(a hotspot query and the source frames it attends to most) and its graph neighbours with their
relations. Splits with more dialogues than ``max_dialogues`` are sampled (seeded), and the report
says how many of how many it shows.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from hotspot_erc.inspect.alignment import frame_starts
from hotspot_erc.text.words import split_words

TOP_SOURCES = 3   # source frames shown per MoA query
TOP_LINKS = 6     # MoA queries shown per utterance


def choose_dialogues(num_dialogues: int, max_dialogues: int, seed: int = 0) -> list[int]:
    if max_dialogues < 1:
        raise ValueError(f"max_dialogues must be >= 1, got {max_dialogues}")
    if num_dialogues <= max_dialogues:
        return list(range(num_dialogues))
    return sorted(np.random.default_rng(seed).choice(num_dialogues, max_dialogues, replace=False).tolist())


def colour_ranges(col) -> dict:
    """Per modality, the value ranges the strips' colours span (score: 1st to 99th percentile, so
    one outlier does not wash out the rest; gate: min to max, since gates often sit in a narrow band)."""
    out = {}
    for m, f in col.frames.items():
        s = f.score[np.isfinite(f.score)]
        rng = {"score": [float(np.quantile(s, 0.01)), float(np.quantile(s, 0.99))] if s.size else [0.0, 1.0]}
        if f.gate is not None and f.gate.size:
            rng["gate"] = [float(f.gate.min()), float(f.gate.max())]
        out[m] = rng
    return out


def _words(corpus, row: int, frames: int) -> list[str] | None:
    texts = getattr(corpus, "texts", None)
    if texts is None:
        return None
    words = split_words(str(texts[row]))
    return words if len(words) == frames and frames > 0 else None


def _round(x) -> list:
    return [round(float(v), 4) for v in x]


def _links(col, u: int, words: dict) -> list[dict]:
    links = []
    for pair, rec in col.attention.items():
        src, tgt = pair.split("->")
        for i in np.nonzero(rec.utterance == u)[0]:
            p = rec.row(int(i))
            top = np.argsort(-p, kind="stable")[:TOP_SOURCES]
            q = int(rec.query[i])
            links.append({"pair": pair, "query": q, "query_word": (words.get(tgt) or [None] * (q + 1))[q],
                          "sources": [[int(j), round(float(p[j]), 4),
                                       (words.get(src) or [None] * (int(j) + 1))[int(j)]] for j in top]})
    links.sort(key=lambda x: -x["sources"][0][1] if x["sources"] else 0.0)
    return links[:TOP_LINKS]


def _neighbours(col, index: dict, u: int) -> list[dict]:
    names, mods = col.relation_names, col.node_modalities
    got = defaultdict(list)
    for k in index.get(u, ()):
        e = col.edges
        got[int(e["source"][k])].append(f"{mods[e['source_modality'][k]]}→{mods[e['target_modality'][k]]} "
                                        f"{names[e['relation'][k]]}")
    return [{"turn": int(col.position[s]) + 1, "relations": sorted(set(r))} for s, r in sorted(got.items())]


def dialogue_view(col, corpus, truth_roles: dict | None, max_dialogues: int = 40, seed: int = 0) -> dict:
    chosen = choose_dialogues(col.num_dialogues, max_dialogues, seed)
    starts = {m: frame_starts(col.lengths[m]) for m in col.modalities}
    index = defaultdict(list)
    if col.edges is not None:
        for k, t in enumerate(col.edges["target"].tolist()):
            index[t].append(k)
    names, preds = col.label_names, col.preds
    by_dialogue = defaultdict(list)
    for u, d in enumerate(col.dialogue.tolist()):
        by_dialogue[d].append(u)
    shown = []
    for d in chosen:
        utts = []
        for u in by_dialogue[d]:
            row = int(col.corpus_row[u])
            mods, words = {}, {}
            for m, f in col.frames.items():
                lo, n = int(starts[m][u]), int(col.lengths[m][u])
                sl = slice(lo, lo + n)
                words[m] = _words(corpus, row, n) if m == "t" else None
                roles = truth_roles.get(m) if truth_roles is not None else None
                mods[m] = {"score": _round(f.score[sl]), "gate": None if f.gate is None else _round(f.gate[sl]),
                           "window": f.window[sl].astype(int).tolist(), "words": words[m],
                           "truth": None if roles is None else roles[f.corpus_frame[sl]].astype(int).tolist()}
            lab = int(col.labels[u])
            utts.append({"id": col.utterance_ids[u], "turn": int(col.position[u]) + 1,
                         "speaker": int(col.speaker[u]), "true": names[lab] if lab >= 0 else None,
                         "pred": names[int(preds[u])], "confidence": round(float(col.probs[u].max()), 4),
                         "modalities": mods, "links": _links(col, u, words),
                         "neighbours": _neighbours(col, index, u)})
        shown.append({"id": str(corpus.dialogue_ids[int(corpus_dialogue(col, corpus, d))]),
                      "index": d, "utterances": utts})
    return {"dialogues": shown, "shown": len(shown), "total": col.num_dialogues,
            "sampled": len(shown) < col.num_dialogues, "seed": seed, "ranges": colour_ranges(col),
            "has_truth": truth_roles is not None, "has_words": getattr(corpus, "texts", None) is not None}


def corpus_dialogue(col, corpus, d: int) -> int:
    """The corpus dialogue index of split-local dialogue ``d``."""
    first = int(col.corpus_row[np.argmax(col.dialogue == d)])
    return int(np.searchsorted(np.asarray(corpus.dialogue_offsets), first, side="right") - 1)
