"""Per-dialogue Python-loop conversation graph builder: the readable spec of
:func:`hotspot_erc.data.graph.build_conversation_graph` and the baseline its benchmark beats.

It walks dialogues, utterances, window offsets and modality pairs one at a time (the way
CORECT/COGMEN-style code builds graphs) and names each edge's relation as a string. Same edge set
and relation ids as the vectorised builder; edge order may differ. Imports nothing from the package.
"""
from __future__ import annotations

import torch


def relation_names(modalities, scheme: str) -> tuple[str, ...]:
    """The relation names of our schemes in id order, written out again here so the spec does
    not depend on the code it specifies."""
    names = []
    for m in modalities:
        if scheme == "default":
            names += [f"{m}:past", f"{m}:future"]
        elif scheme == "speaker":
            names += [f"{m}:past:same", f"{m}:past:other", f"{m}:future:same", f"{m}:future:other"]
    if scheme == "temporal_multi":
        names += [f"{a}->{b}:{d}" for a in modalities for b in modalities for d in ("past", "future")]
    names += [f"{a}->{b}" + (":same" if scheme == "temporal_multi" else "")
              for a in modalities for b in modalities if a != b]
    return tuple(names)


def _relation(scheme: str, a: str, b: str, offset: int, same_speaker: bool) -> str | None:
    """Name of the relation of an edge from (a, s + offset) to (b, s), or None if there is none."""
    if offset == 0:
        if a == b:
            return None
        return f"{a}->{b}:same" if scheme == "temporal_multi" else f"{a}->{b}"
    direction = "past" if offset < 0 else "future"
    if scheme == "temporal_multi":
        return f"{a}->{b}:{direction}"
    if a != b:
        return None
    if scheme == "speaker":
        return f"{a}:{direction}:{'same' if same_speaker else 'other'}"
    return f"{a}:{direction}"


def build_conversation_graph_loop(dialogue, speaker, modalities=("t", "a", "v"), window_past: int = 2,
                                  window_future: int = 2, scheme: str = "default", temporal: bool = True,
                                  cross_modal: bool = True, present=None):
    """Returns (edge_index [2, E], edge_type [E], relation names) built one edge at a time."""
    modalities = tuple(modalities)
    names = list(relation_names(modalities, scheme))
    rel_id = {n: i for i, n in enumerate(names)}
    dialogue = [int(d) for d in dialogue.tolist()]
    speaker = [int(s) for s in speaker.tolist()]
    num_utt = len(dialogue)
    pres = None if present is None else present.tolist()
    # group utterances by dialogue, keeping their order
    groups: dict[int, list[int]] = {}
    for s, d in enumerate(dialogue):
        groups.setdefault(d, []).append(s)
    src, dst, typ = [], [], []
    for utts in groups.values():
        for pos, s in enumerate(utts):
            for offset in range(-window_past, window_future + 1):
                if not 0 <= pos + offset < len(utts):
                    continue
                s_src = utts[pos + offset]
                if offset != 0 and not temporal:
                    continue
                for ia, a in enumerate(modalities):
                    for ib, b in enumerate(modalities):
                        if a != b and not cross_modal:
                            continue
                        if pres is not None and not (pres[ia][s_src] and pres[ib][s]):
                            continue
                        name = _relation(scheme, a, b, offset, speaker[s_src] == speaker[s])
                        if name is None:
                            continue
                        src.append(ia * num_utt + s_src)
                        dst.append(ib * num_utt + s)
                        typ.append(rel_id[name])
    edge_index = torch.tensor([src, dst], dtype=torch.long).view(2, -1)
    return edge_index, torch.tensor(typ, dtype=torch.long), names
