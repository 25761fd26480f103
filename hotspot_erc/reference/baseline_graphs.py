"""CORECT's and COGMEN's conversation graphs written out one dialogue and one edge at a time: the
readable spec that the vectorised ``build_conversation_graph(scheme="corect" | "cogmen")`` is
tested against, and the baseline its benchmark beats.

Transcribed from the semantics of the baselines' ``batch_graphify`` (CORECT:
``corect/model/GraphModel.py`` with ``edge_type="temp_multi"``; COGMEN: ``cogmen/model/functions.py``),
not from our builder, and naming each edge's relation with the baselines' own dictionary keys.
Imports nothing from the package.

* CORECT, per dialogue of length L, for utterance j and modality k: neighbours i in
  ``range(lo, hi)`` with ``lo = max(0, j - wp)`` (0 when wp = -1) and ``hi = min(L, j + wf)``
  (L when wf = -1); edge (k, j) -> (k, i) with key ``f"{code}{k}{k}"``, code 1 if j > i, -1 if
  j < i, 0 if equal; and edge (k, j) -> (l, j), l != k, key ``f"0{k}{l}"``. Nodes are
  modality-major over the whole batch: node (k, j) = k * total + offset of the dialogue + j.
  Edges form a set (no duplicates).
* COGMEN, per dialogue: one node per utterance; neighbours i in ``range(lo, hi)`` with
  ``lo = max(0, j - wp)`` and ``hi = min(L, j + wf + 1)`` (again -1 = unbounded); edge j -> i with
  key ``f"{speaker[j]}{speaker[i]}{c}"``, c = 0 if j < i else 1.
"""
from __future__ import annotations


def _dialogue_spans(dialogue: list[int]) -> list[tuple[int, int]]:
    """(first utterance, length) of each run of equal dialogue ids, in batch order."""
    spans: list[tuple[int, int]] = []
    for pos, d in enumerate(dialogue):
        if pos and d == dialogue[pos - 1]:
            first, length = spans[-1]
            spans[-1] = (first, length + 1)
        else:
            spans.append((pos, 1))
    return spans


def _window(j: int, length: int, wp: int, wf: int, future_inclusive: bool) -> range:
    lo = 0 if wp == -1 else max(0, j - wp)
    hi = length if wf == -1 else min(length, j + wf + (1 if future_inclusive else 0))
    return range(lo, hi)


def corect_graph_loop(dialogue, num_modalities: int, wp: int = 11, wf: int = 9,
                      temporal: bool = True, multi: bool = True) -> set[tuple[int, int, str]]:
    """The set of (source node, destination node, CORECT key) of a batch; ``dialogue`` is the [S]
    dialogue id of each utterance (dialogues contiguous)."""
    dialogue = [int(d) for d in dialogue]
    total = len(dialogue)
    edges: set[tuple[int, int, str]] = set()
    for first, length in _dialogue_spans(dialogue):
        for j in range(length):
            for k in range(num_modalities):
                vertex = k * total + first + j
                if temporal:
                    for i in _window(j, length, wp, wf, future_inclusive=False):
                        code = 1 if j > i else (-1 if j < i else 0)
                        edges.add((vertex, k * total + first + i, f"{code}{k}{k}"))
                else:
                    edges.add((vertex, vertex, f"0{k}{k}"))
                if multi:
                    for l in range(num_modalities):
                        if l != k:
                            edges.add((vertex, l * total + first + j, f"0{k}{l}"))
    return edges


def cogmen_graph_loop(dialogue, speaker, wp: int = 10, wf: int = 10) -> set[tuple[int, int, str]]:
    """The set of (source node, destination node, COGMEN key) of a batch; ``speaker`` holds the
    dialogue-local speaker id of each utterance."""
    dialogue = [int(d) for d in dialogue]
    speaker = [int(s) for s in speaker]
    edges: set[tuple[int, int, str]] = set()
    for first, length in _dialogue_spans(dialogue):
        for j in range(length):
            for i in _window(j, length, wp, wf, future_inclusive=True):
                c = 0 if j < i else 1
                edges.add((first + j, first + i, f"{speaker[first + j]}{speaker[first + i]}{c}"))
    return edges
