"""Conversation graphs (DESIGN §3.7): nodes (modality, utterance), typed temporal and cross-modal
edges, built for a whole batch of dialogues at once with tensor ops (no loop over dialogues or
utterances), on the device of the inputs.

Node ``m * S + s`` is modality ``modalities[m]`` of utterance ``s`` (modality-major). Edges point
from source to destination (row 0 / row 1 of ``edge_index``, PyG's convention). An edge's offset
``o`` is (source utterance) − (destination utterance) inside one dialogue: a "past" edge (o < 0)
comes from an earlier utterance, a "future" edge (o > 0) from a later one.

Our schemes (``window_past`` / ``window_future`` >= 0: offsets ``-window_past <= o <= window_future``):

* ``"default"``: ``"{m}:past"``, ``"{m}:future"`` per modality (intra-modal temporal links), then
  ``"{a}->{b}"`` per ordered modality pair (same-utterance cross-modal links). 2M + M(M-1).
* ``"speaker"``: temporal links typed also by whether the two utterances share a speaker,
  ``"{m}:past:same"``, ``"{m}:past:other"``, ``"{m}:future:same"``, ``"{m}:future:other"``, then the
  cross-modal pairs. 4M + M(M-1).
* ``"temporal_multi"``: our own dense scheme (neither CORECT's nor COGMEN's graph): temporal links
  between *every* ordered modality pair, ``"{a}->{b}:past"``, ``"{a}->{b}:future"``, plus
  same-utterance ``"{a}->{b}:same"`` for a != b. 2M² + M(M-1).

The baselines' graphs, edge for edge (window -1 = the whole past / future, as in their code):

* ``"corect"``: CORECT's ``batch_graphify`` with ``edge_type="temp_multi"``. For utterance j and
  modality k, edges (k, j) -> (k, i) for every i of the dialogue with
  ``max(0, j - wp) <= i < min(L, j + wf)`` (future bound exclusive; the self pair is included when
  wf != 0), typed by CORECT's temporal code (-1: source earlier, 1: source later, 0: self) and k;
  plus (k, j) -> (l, j) for l != k typed by the pair. Relation ids in CORECT's order: codes -1, 1, 0
  over the modalities (``"{m}:past"``, ``"{m}:future"``, ``"{m}:self"``), then ``"{a}->{b}"``.
  3M + M(M-1). Row 0 is CORECT's "vertex", row 1 its "neighbor".
* ``"cogmen"``: COGMEN's ``batch_graphify``: one node per utterance (the single pseudo-modality
  ``"u"``: see :func:`node_modalities`); edges j -> i for every i of the dialogue with
  ``j - wp <= i <= j + wf`` (inclusive, self pair included), typed by (speaker of j, speaker of i,
  0 if j < i else 1), ids in COGMEN's ``edge_type_to_idx`` order, ``(sj * P + si) * 2 + c`` for
  ``P = num_speakers`` dialogue-local speaker ids. Names ``"s{a}->s{b}:past"`` (c = 0: the source
  is earlier) and ``"s{a}->s{b}:future"`` (c = 1, self pair included). 2P².

:func:`baseline_relation_keys` gives CORECT's / COGMEN's own dictionary keys in relation-id order.
``temporal=False`` drops the links between different utterances (corect keeps its self pairs, as
CORECT's non-temporal mode does); ``cross_modal=False`` drops same-utterance cross-modal links. The
relations stay defined either way, so a model's ``num_relations`` depends only on (modalities,
scheme, num_speakers). ``present[m, s] = False`` (modality m missing for utterance s) leaves that
node without edges.
"""
from __future__ import annotations

import dataclasses
import functools

import torch

from hotspot_erc.segments import segment_lengths

OUR_SCHEMES = ("default", "temporal_multi", "speaker")
BASELINE_SCHEMES = ("corect", "cogmen")  # the baselines' graphs, edge for edge
SCHEMES = OUR_SCHEMES + BASELINE_SCHEMES
UTTERANCE_NODE = "u"  # the pseudo-modality of COGMEN's one-node-per-utterance graph
_PAST, _FUTURE, _SAME_UTT = 0, 1, 2


def node_modalities(modalities, scheme: str) -> tuple[str, ...]:
    """The modalities that carry graph nodes: ``modalities`` itself, or ``("u",)`` for COGMEN's
    one node per utterance."""
    _check_scheme(scheme)
    return (UTTERANCE_NODE,) if scheme == "cogmen" else tuple(modalities)


@functools.lru_cache(maxsize=None)
def relation_names(modalities: tuple[str, ...] = ("t", "a", "v"), scheme: str = "default",
                   num_speakers: int = 2) -> tuple[str, ...]:
    """Readable names of the relations of ``scheme`` over ``modalities``, in relation-id order
    (``num_speakers`` matters only for ``"cogmen"``)."""
    _check_scheme(scheme)
    modalities = tuple(modalities)
    if scheme == "cogmen":
        _check_num_speakers(num_speakers)
        return tuple(f"s{a}->s{b}:{d}" for a in range(num_speakers) for b in range(num_speakers)
                     for d in ("past", "future"))
    names = []
    if scheme == "default":
        for m in modalities:
            names += [f"{m}:past", f"{m}:future"]
    elif scheme == "speaker":
        for m in modalities:
            names += [f"{m}:past:same", f"{m}:past:other", f"{m}:future:same", f"{m}:future:other"]
    elif scheme == "corect":
        for direction in ("past", "future", "self"):  # CORECT's temporal codes -1, 1, 0
            names += [f"{m}:{direction}" for m in modalities]
    else:
        for a in modalities:
            for b in modalities:
                names += [f"{a}->{b}:past", f"{a}->{b}:future"]
    for a in modalities:
        for b in modalities:
            if a != b:
                names.append(f"{a}->{b}" if scheme != "temporal_multi" else f"{a}->{b}:same")
    return tuple(names)


def baseline_relation_keys(modalities=("t", "a", "v"), scheme: str = "corect",
                           num_speakers: int = 2) -> tuple[str, ...]:
    """CORECT's / COGMEN's own ``edge_type_to_idx`` keys, in relation-id order: CORECT
    ``f"{code}{k}{l}"`` with modality indices, COGMEN ``f"{speaker_j}{speaker_i}{c}"``."""
    if scheme not in BASELINE_SCHEMES:
        raise ValueError(f"scheme must be one of {BASELINE_SCHEMES}, got {scheme!r}")
    if scheme == "cogmen":
        _check_num_speakers(num_speakers)
        return tuple(f"{a}{b}{c}" for a in range(num_speakers) for b in range(num_speakers) for c in (0, 1))
    m_count = len(tuple(modalities))
    keys = [f"{code}{k}{k}" for code in (-1, 1, 0) for k in range(m_count)]
    keys += [f"0{k}{l}" for k in range(m_count) for l in range(m_count) if k != l]
    return tuple(keys)


def num_relations(modalities=("t", "a", "v"), scheme: str = "default", num_speakers: int = 2) -> int:
    return len(relation_names(tuple(node_modalities(modalities, scheme)), scheme, num_speakers))


@functools.lru_cache(maxsize=None)
def relation_table(modalities: tuple[str, ...], scheme: str, temporal: bool = True,
                   cross_modal: bool = True) -> torch.Tensor:
    """[3 directions (past, future, same utterance), M src, M dst, 2 (same / other speaker)] ->
    relation id, or -1 where the scheme (or a disabled flag) has no edge. Not defined for
    ``"cogmen"``, whose relations depend on speaker ids. Cached: treat as read-only."""
    if scheme == "cogmen":
        raise ValueError("relation_table is not defined for scheme 'cogmen' (relations come from speaker ids)")
    names = {n: i for i, n in enumerate(relation_names(modalities, scheme))}
    m_count = len(modalities)
    table = torch.full((3, m_count, m_count, 2), -1, dtype=torch.long)
    for ia, a in enumerate(modalities):
        for ib, b in enumerate(modalities):
            for d, dname in ((_PAST, "past"), (_FUTURE, "future")):
                if not temporal or (a != b and not cross_modal):
                    continue
                for sp, sname in ((0, "same"), (1, "other")):
                    if scheme in ("default", "corect") and a == b:
                        table[d, ia, ib, sp] = names[f"{a}:{dname}"]
                    elif scheme == "speaker" and a == b:
                        table[d, ia, ib, sp] = names[f"{a}:{dname}:{sname}"]
                    elif scheme == "temporal_multi":
                        table[d, ia, ib, sp] = names[f"{a}->{b}:{dname}"]
            if a == b and scheme == "corect":
                table[_SAME_UTT, ia, ib, :] = names[f"{a}:self"]
            if a != b and cross_modal:
                table[_SAME_UTT, ia, ib, :] = names[f"{a}->{b}" if scheme != "temporal_multi" else f"{a}->{b}:same"]
    return table


def scheme_has_edges(modalities, scheme: str, temporal: bool = True, cross_modal: bool = True) -> bool:
    """Whether a graph of ``scheme`` with these flags can have any edge at all."""
    if scheme == "cogmen":
        return True  # the self pairs stay even without temporal links
    return bool((relation_table(tuple(modalities), scheme, temporal, cross_modal) >= 0).any())


def _check_scheme(scheme: str) -> None:
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")


def _check_num_speakers(num_speakers) -> None:
    if isinstance(num_speakers, bool) or not isinstance(num_speakers, int) or num_speakers < 1:
        raise ValueError(f"num_speakers must be an int >= 1, got {num_speakers!r}")


@dataclasses.dataclass
class ConversationGraph:
    """Typed edges over the (modality, utterance) nodes of a batch of dialogues: index tensors and
    relation names only. The model prepares them for the relational op
    (:func:`hotspot_erc.nn.graph.prepare_graph`); ``RGCNConv`` also takes ``edge_index`` and
    ``edge_type`` as they are."""

    edge_index: torch.Tensor  # [2, E] int64: row 0 source, row 1 destination
    edge_type: torch.Tensor  # [E] int64 relation ids
    num_nodes: int  # M * S, node id = m * S + s
    num_relations: int
    relation_names: list[str]
    modalities: tuple[str, ...] = ("t", "a", "v")
    num_utterances: int = 0

    def node_id(self, modality: str, utterance):
        """Node id(s) of ``modality`` for utterance index/indices ``utterance``."""
        return self.modalities.index(modality) * self.num_utterances + utterance

    def relational(self):
        """Removed: the data layer describes edges and no longer imports the ops."""
        raise AttributeError("ConversationGraph.relational() moved to the model's side: use "
                             "hotspot_erc.nn.graph.prepare_graph(graph), or pass graph.edge_index and "
                             "graph.edge_type to RGCNConv")

    def to(self, device, non_blocking: bool = False) -> "ConversationGraph":
        return dataclasses.replace(self, edge_index=self.edge_index.to(device, non_blocking=non_blocking),
                                   edge_type=self.edge_type.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> "ConversationGraph":
        return dataclasses.replace(self, edge_index=self.edge_index.pin_memory(),
                                   edge_type=self.edge_type.pin_memory())


def build_conversation_graph(dialogue: torch.Tensor, speaker: torch.Tensor, modalities=("t", "a", "v"),
                             window_past: int = 2, window_future: int = 2, scheme: str = "default",
                             temporal: bool = True, cross_modal: bool = True,
                             present: torch.Tensor | None = None, num_speakers: int = 2) -> ConversationGraph:
    """Typed conversation graph of a batch (see the module docstring for nodes and relations).

    Args:
        dialogue: [S] int dialogue index of each utterance; utterances of one dialogue are
            contiguous and in speaking order (as ``collate_dialogues`` produces).
        speaker: [S] int speaker id of each utterance (compared within a dialogue; for
            ``"cogmen"`` a dialogue-local id in ``[0, num_speakers)``).
        modalities: the node modalities, in node-id order (``("u",)`` for ``"cogmen"``).
        window_past, window_future: the windows of the scheme; -1 (whole dialogue) for the
            baseline schemes only.
        present: optional bool [M, S]; False = modality missing there, the node gets no edges.
        num_speakers: COGMEN's speaker count P (its relations are speaker pairs).

    Candidate edges for every (offset, modality pair, utterance) are formed by broadcasting and
    filtered with one mask, so the cost is O(M² · K · S) for K window offsets.
    """
    _check_scheme(scheme)
    modalities = tuple(modalities)
    if not modalities or len(set(modalities)) != len(modalities) or not all(
            isinstance(m, str) and m for m in modalities):
        raise ValueError(f"modalities must be distinct non-empty strings, got {modalities!r}")
    if scheme == "cogmen" and len(modalities) != 1:
        raise ValueError(f"scheme 'cogmen' has one node per utterance: pass modalities=('u',) "
                         f"(node_modalities(...)), got {modalities!r}")
    lowest = -1 if scheme in BASELINE_SCHEMES else 0
    for name, w in (("window_past", window_past), ("window_future", window_future)):
        if isinstance(w, bool) or not isinstance(w, int) or w < lowest:
            expected = "an int >= -1 (-1 = whole dialogue)" if lowest else \
                "an int >= 0 (-1 = whole dialogue exists for schemes 'corect' and 'cogmen' only)"
            raise ValueError(f"{name} must be {expected}, got {w!r}")
    for name, t in (("dialogue", dialogue), ("speaker", speaker)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 1 or t.dtype not in (torch.int32, torch.int64):
            raise TypeError(f"{name} must be a 1-D int32/int64 tensor, got {t.dtype} of shape {tuple(t.shape)}")
    if speaker.shape != dialogue.shape or speaker.device != dialogue.device:
        raise ValueError(f"speaker must match dialogue in shape and device, got {tuple(speaker.shape)} on "
                         f"{speaker.device} vs {tuple(dialogue.shape)} on {dialogue.device}")
    device = dialogue.device
    s_count, m_count = dialogue.shape[0], len(modalities)
    if present is None:
        present = torch.ones(m_count, s_count, dtype=torch.bool, device=device)
    elif not isinstance(present, torch.Tensor) or present.dtype != torch.bool or tuple(present.shape) != (m_count, s_count):
        raise ValueError(f"present must be a bool tensor of shape [{m_count}, {s_count}]")
    elif present.device != device:
        raise ValueError(f"present must be on {device}, got {present.device}")
    if device.type == "cpu" and s_count > 1 and bool((dialogue[1:] < dialogue[:-1]).any()):
        raise ValueError("dialogue must be non-decreasing: utterances of one dialogue contiguous, in order")
    if scheme == "cogmen":
        _check_num_speakers(num_speakers)
        if device.type == "cpu" and s_count and (int(speaker.min()) < 0 or int(speaker.max()) >= num_speakers):
            raise ValueError(f"scheme 'cogmen' needs dialogue-local speaker ids in [0, num_speakers={num_speakers}), "
                             f"got [{int(speaker.min())}, {int(speaker.max())}]")

    dialogue = dialogue.long()
    speaker = speaker.long()
    offsets, in_window = _window_offsets(dialogue, scheme, window_past, window_future, temporal, device)
    k_count = offsets.shape[0]
    dst = torch.arange(s_count, device=device)  # [S]
    src = dst[None, :] + offsets[:, None]  # [K, S]
    in_range = (src >= 0) & (src < s_count)
    src_c = src.clamp(0, max(s_count - 1, 0))
    # index_select, not advanced indexing: several times faster on CPU for these 1-D gathers
    flat_src = src_c.view(-1)
    same_dialogue = in_range & (dialogue.index_select(0, flat_src).view_as(src) == dialogue[None, :])
    speaker_src = speaker.index_select(0, flat_src).view_as(src)  # [K, S]
    if scheme == "cogmen":
        # COGMEN: (speaker of source, speaker of destination, 0 if the source is earlier else 1)
        typ = ((speaker_src * num_speakers + speaker[None, :]) * 2 + (offsets >= 0).long()[:, None])[None, None]
        if not temporal:
            typ = torch.where(offsets[None, None, :, None] == 0, typ, torch.full_like(typ, -1))
    else:
        table = relation_table(modalities, scheme, temporal, cross_modal).to(device).view(-1)
        direction = torch.where(offsets < 0, _PAST, torch.where(offsets > 0, _FUTURE, _SAME_UTT))
        other_speaker = (speaker_src != speaker[None, :]).long()  # [K, S]
        # Candidate edge (a, b, k, s): modality a of utterance s + offsets[k] -> modality b of s. Its
        # relation is table[direction[k], a, b, other_speaker[k, s]], read through one flat index.
        mods = torch.arange(m_count, device=device)
        flat = ((direction[None, None, :, None] * m_count + mods[:, None, None, None]) * m_count
                + mods[None, :, None, None]) * 2 + other_speaker[None, None]
        typ = table.index_select(0, flat.view(-1)).view(flat.shape)  # [M, M, K, S]
    # The window bounds intra-modal links only; cross-modal links ignore it (CORECT adds them
    # for every utterance whatever its window).
    window_ok = in_window[None, None, :, None]
    if m_count > 1:
        cross = torch.ones(m_count, m_count, dtype=torch.bool, device=device).fill_diagonal_(False)
        window_ok = window_ok | cross[:, :, None, None]
    # present[a, source utterance] and present[b, destination utterance]
    valid = ((typ >= 0) & window_ok & same_dialogue[None, None]
             & present.index_select(1, flat_src).view(m_count, 1, k_count, s_count) & present[None, :, None, :])
    keep = valid.view(-1).nonzero().squeeze(1)  # the one data-dependent size: a single sync on GPU
    s_idx = keep % s_count
    rest = keep // s_count
    if m_count == 1:  # integer division dominates the builder's time; skip what is known to be 0
        dst_node = s_idx
        src_node = s_idx + offsets.index_select(0, rest)
    else:
        k_idx = rest % k_count
        ab = rest // k_count
        src_node = (ab // m_count) * s_count + s_idx + offsets.index_select(0, k_idx)
        dst_node = (ab % m_count) * s_count + s_idx
    edge_index = torch.stack([src_node, dst_node])
    edge_type = typ.expand(m_count, m_count, k_count, s_count).reshape(-1).index_select(0, keep)
    names = list(relation_names(modalities, scheme, num_speakers))
    return ConversationGraph(edge_index=edge_index, edge_type=edge_type, num_nodes=m_count * s_count,
                             num_relations=len(names), relation_names=names, modalities=modalities,
                             num_utterances=s_count)


def _window_offsets(dialogue: torch.Tensor, scheme: str, window_past: int, window_future: int,
                    temporal: bool, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The offsets o = source − destination to enumerate, and which of them the scheme's window
    admits for intra-modal links. Offset 0 is always enumerated (same-utterance links)."""
    if scheme in BASELINE_SCHEMES and -1 in (window_past, window_future):
        # "whole dialogue": the longest dialogue bounds the offsets (a host read; on a GPU the
        # builder synchronises once anyway, for the edge count)
        longest = int(torch.unique_consecutive(dialogue, return_counts=True)[1].max()) if dialogue.numel() else 1
        whole = longest - 1
    else:
        whole = 0
    if scheme == "corect":
        # CORECT: source utterance j, destination i with j - wp <= i < j + wf, i.e. -wf < o <= wp
        hi = whole if window_past == -1 else window_past
        lo = -whole if window_future == -1 else 1 - window_future
    elif scheme == "cogmen":
        # COGMEN: j - wp <= i <= j + wf, i.e. -wf <= o <= wp
        hi = whole if window_past == -1 else window_past
        lo = -whole if window_future == -1 else -window_future
    else:  # ours: a past edge comes from up to window_past utterances back
        lo, hi = -window_past, window_future
    offsets = torch.arange(min(lo, 0), max(hi, 0) + 1, device=device)
    in_window = (offsets >= lo) & (offsets <= hi)
    if scheme == "corect" and not temporal:
        in_window = offsets == 0  # CORECT's non-temporal graph keeps every self pair
    return offsets, in_window


class conversation_graph_fn:  # noqa: N801  (used like a function: conversation_graph_fn(**kwargs))
    """``graph_fn(batch)`` for ``collate_dialogues``: the conversation graph of a ``Batch``.

    Keyword arguments go to :func:`build_conversation_graph`. A modality's node is absent where
    the utterance has no frames of it (or the batch has no such modality). A class rather than a
    closure so DataLoader workers can pickle it.
    """

    def __init__(self, **kwargs):
        if "present" in kwargs or "dialogue" in kwargs or "speaker" in kwargs:
            raise TypeError("dialogue, speaker and present come from the batch")
        self.kwargs = kwargs
        _check_scheme(kwargs.get("scheme", "default"))

    def __call__(self, batch) -> ConversationGraph:
        modalities = tuple(self.kwargs.get("modalities", ("t", "a", "v")))
        s_count = batch.dialogue.shape[0]
        rows = []
        segments = getattr(batch, "segments", None) or {}
        for m in modalities:
            cu = batch.cu_seqlens.get(m) if batch.cu_seqlens is not None else None
            if m in segments:
                rows.append(segments[m].present.to(batch.dialogue.device))
            elif cu is None:
                rows.append(torch.zeros(s_count, dtype=torch.bool, device=batch.dialogue.device))
            else:
                rows.append((segment_lengths(cu) > 0).to(batch.dialogue.device))
        present = torch.stack(rows) if rows else None
        kwargs = {k: v for k, v in self.kwargs.items() if k != "modalities"}
        scheme = kwargs.get("scheme", "default")
        if scheme == "cogmen" and present is not None:
            present = present.any(0, keepdim=True)  # an utterance node exists if any modality does
        return build_conversation_graph(batch.dialogue, batch.speaker, modalities=node_modalities(modalities, scheme),
                                        present=present, **kwargs)

    def __repr__(self) -> str:
        return f"conversation_graph_fn({', '.join(f'{k}={v!r}' for k, v in self.kwargs.items())})"
