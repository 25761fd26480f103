"""One inspection pass of a trained model over a split: everything the report reads, per utterance
and per frame, in the split's stored order.

The model runs with ``model.inspect`` set, so MoA hands back each pair's queries and keys; the
attention probabilities of every hotspot query (a peak row) over its source utterance's frames
are recomputed from them (the fused kernels never form them). Utterances are numbered 0..U-1 in
the split's stored order; frames keep their utterance and position inside it, and their row in
the corpus arrays, so generator truth and words can be laid beside them.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from hotspot_erc.train.batching import eval_loader

GATE_BINS = 25  # histogram of raw α values over [0, 1]


@dataclasses.dataclass
class FrameRecord:
    """Frames of one modality over the split (F of them)."""

    utterance: np.ndarray            # [F] int64 split-local utterance index
    position: np.ndarray             # [F] int64 frame index inside the utterance
    corpus_frame: np.ndarray         # [F] int64 row of corpus.features[m]
    score: np.ndarray                # [F] float32 intensity score the model extracted windows from
    window: np.ndarray               # [F] bool: inside an extracted hotspot window
    peaks: np.ndarray                # [U, K] int64 window centres inside the utterance, -1 = none
    gate: np.ndarray | None = None   # [F] float32 HGF gate α, mean over its channels (None: HGF off)
    intensity: np.ndarray | None = None  # [F] float32 the corpus' own intensity, when it has one
    gate_counts: np.ndarray | None = None  # [GATE_BINS] counts of every raw α value (all channels)
    gate_channels: int = 0


@dataclasses.dataclass
class AttentionRecord:
    """MoA attention of one ordered pair: one row per hotspot query (a target peak whose
    utterance has source frames)."""

    utterance: np.ndarray   # [Q] split-local utterance index
    query: np.ndarray       # [Q] the query's frame inside the target utterance
    offsets: np.ndarray     # [Q + 1] into ``probs``
    probs: np.ndarray       # [Σ source lengths] float32 attention over the source utterance's frames

    def row(self, i: int) -> np.ndarray:
        return self.probs[self.offsets[i]:self.offsets[i + 1]]


@dataclasses.dataclass
class Collected:
    """What one pass over a split gives (see the module docstring)."""

    split: str
    label_names: list[str]
    modalities: tuple[str, ...]
    utterance_ids: list[str]
    corpus_row: np.ndarray           # [U] row of the corpus' per-utterance arrays
    dialogue: np.ndarray             # [U] split-local dialogue index
    position: np.ndarray             # [U] turn inside the dialogue
    speaker: np.ndarray              # [U] dialogue-local speaker id
    labels: np.ndarray               # [U] true class, -1 = unlabelled
    probs: np.ndarray                # [U, C]
    lengths: dict[str, np.ndarray]   # m -> [U] frames per utterance
    frames: dict[str, FrameRecord]
    routing: dict[str, dict]         # pair -> {"experts" [U, k], "gates" [U, k], "valid" [U], "num_experts"}
    attention: dict[str, AttentionRecord]
    edges: dict | None               # {"source", "target" [E] utterances, "source_modality", "target_modality",
                                     #  "relation" [E]} (None without the graph)
    relation_names: list[str]
    node_modalities: tuple[str, ...]

    @property
    def preds(self) -> np.ndarray:
        return self.probs.argmax(1) if self.probs.size else np.zeros(0, dtype=np.int64)

    @property
    def num_dialogues(self) -> int:
        return int(self.dialogue.max()) + 1 if self.dialogue.size else 0


def split_rows(dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(corpus row, split-local dialogue index, turn) of every utterance of ``dataset`` in order."""
    rows, dia, pos = [], [], []
    for i, d in enumerate(np.asarray(dataset.indices)):
        lo, hi = dataset.corpus.dialogue_utterances(int(d))
        rows.append(np.arange(lo, hi))
        dia.append(np.full(hi - lo, i))
        pos.append(np.arange(hi - lo))
    cat = (lambda xs: np.concatenate(xs).astype(np.int64)) if rows else (lambda xs: np.zeros(0, np.int64))
    return cat(rows), cat(dia), cat(pos)


@torch.no_grad()
def query_attention(q: torch.Tensor, k: torch.Tensor, cu_k: torch.Tensor, rows: torch.Tensor,
                    seg: torch.Tensor) -> list[np.ndarray]:
    """Attention probabilities (softmax over the segment's keys, scale Dh^-1/2, mean over heads) of
    query rows ``rows`` over the keys of their segments ``seg``; one array per row."""
    if rows.numel() == 0:
        return []
    start = cu_k[:-1].long()[seg]
    length = (cu_k[1:] - cu_k[:-1]).long()[seg]
    width = int(length.max())
    pos = torch.arange(width, device=q.device)
    valid = pos.view(1, -1) < length.view(-1, 1)
    idx = (start.view(-1, 1) + pos.view(1, -1)).clamp(max=max(k.shape[0] - 1, 0))
    scores = torch.einsum("rhd,rwhd->rhw", q[rows].float(), k[idx].float()) * q.shape[-1] ** -0.5
    prob = scores.masked_fill(~valid.unsqueeze(1), float("-inf")).softmax(-1).mean(1).cpu().numpy()
    return [prob[i, :n] for i, n in enumerate(length.tolist())]


class _Collector:
    def __init__(self, model, dataset):
        self.model, self.dataset = model, dataset
        self.mods = tuple(model.modalities)
        self.rows, self.dia, self.pos = split_rows(dataset)
        self.u0 = 0
        self.utt_ids, self.labels, self.probs, self.speaker = [], [], [], []
        self.lengths = {m: [] for m in self.mods}
        self.frames = {m: {"utterance": [], "position": [], "score": [], "window": [], "gate": [],
                           "intensity": [], "peaks": []} for m in self.mods}
        self.gate_counts: dict[str, np.ndarray] = {}
        self.gate_channels: dict[str, int] = {}
        self.routing: dict[str, dict] = {}
        self.attention: dict[str, dict] = {}
        self.edges: dict[str, list] = {"source": [], "target": [], "source_modality": [], "target_modality": [],
                                       "relation": []}

    def update(self, out, batch) -> None:
        s_count = batch.num_utterances
        u0 = self.u0
        expect = [str(self.dataset.corpus.utterance_ids[r]) for r in self.rows[u0:u0 + s_count]]
        if list(batch.utterance_ids) != expect:  # the loader must keep the stored order
            raise RuntimeError("inspection batches are not in the split's stored order")
        self.utt_ids.extend(batch.utterance_ids)
        self.labels.append(batch.labels.cpu().numpy())
        self.speaker.append(batch.speaker.cpu().numpy())
        self.probs.append(torch.softmax(out.logits.float(), -1).cpu().numpy())
        for m in self.mods:
            self._frames(out, batch, m, u0)
        for pair, info in out.routing.items():
            self._routing(out, pair, info)
        for pair, qk in out.attention_qk.items():
            self._attention(out, pair, qk, u0)
        if getattr(self.model, "use_graph", False):
            self._graph(out, batch, u0)
        self.u0 += s_count

    def _frames(self, out, batch, m: str, u0: int) -> None:
        seg = out.segments[m]
        lengths = seg.lengths.cpu()
        self.lengths[m].append(lengths.numpy())
        n = int(lengths.sum())
        utt = torch.repeat_interleave(torch.arange(lengths.numel()), lengths, output_size=n)
        pos = torch.arange(n) - seg.cu_seqlens.cpu()[:-1].long()[utt]
        f = self.frames[m]
        f["utterance"].append(utt.numpy() + u0)
        f["position"].append(pos.numpy())
        f["score"].append(out.scores[m].float().cpu().numpy().reshape(-1))
        f["window"].append((out.hotspot_mask[m].float() > 0.5).cpu().numpy().reshape(-1))
        peaks = out.peaks[m].cpu().long()
        starts = seg.cu_seqlens.cpu()[:-1].long().unsqueeze(1)
        f["peaks"].append(torch.where(peaks >= 0, peaks - starts, peaks).numpy())
        if m in out.gates:
            alpha = out.gates[m].float().cpu()
            f["gate"].append(alpha.mean(1).numpy())
            counts, _ = np.histogram(alpha.numpy().reshape(-1), bins=GATE_BINS, range=(0.0, 1.0))
            self.gate_counts[m] = self.gate_counts.get(m, 0) + counts
            self.gate_channels[m] = int(alpha.shape[1])
        inten = getattr(batch, "intensity", None)
        if inten is not None and m in inten:
            f["intensity"].append(inten[m].float().cpu().numpy())

    def _routing(self, out, pair: str, info) -> None:
        src, tgt = pair.split("->")
        valid = (out.segments[src].lengths > 0) & (out.segments[tgt].lengths > 0)
        r = self.routing.setdefault(pair, {"experts": [], "gates": [], "valid": [],
                                           "num_experts": int(info.usage.shape[-1])})
        r["experts"].append(info.experts.cpu().numpy())
        r["gates"].append(info.gates.float().cpu().numpy())
        r["valid"].append(valid.cpu().numpy())

    def _attention(self, out, pair: str, qk, u0: int) -> None:
        src, tgt = pair.split("->")
        if getattr(self.model, "moa_keys", "all") != "all":  # keys are window slots, not frames
            return
        q, k, _, cu_k = qk
        peaks = out.peaks[tgt]                                      # [S, K] packed target frames
        seg_t = out.segments[tgt]
        s_count, k_count = peaks.shape
        src_len = (cu_k[1:] - cu_k[:-1]).long()
        ok = (peaks >= 0) & (src_len > 0).unsqueeze(1) & (seg_t.lengths > 0).unsqueeze(1)
        seg = torch.arange(s_count, device=peaks.device).unsqueeze(1).expand_as(peaks)[ok]
        if getattr(self.model, "moa_queries", "frames") == "peaks":  # K query rows per utterance
            rows = (seg * k_count + torch.arange(k_count, device=peaks.device).expand_as(peaks)[ok])
        else:                                                        # every target frame is a row
            rows = peaks[ok]
        probs = query_attention(q, k, cu_k, rows.long(), seg)
        a = self.attention.setdefault(pair, {"utterance": [], "query": [], "probs": []})
        a["utterance"].append(seg.cpu().numpy() + u0)
        a["query"].append((peaks[ok] - seg_t.cu_seqlens[:-1].long()[seg]).cpu().numpy())
        a["probs"].extend(probs)

    def _graph(self, out, batch, u0: int) -> None:
        graph_mod = self.model.graph
        present = torch.stack([out.segments[m].present for m in self.mods])
        if len(graph_mod.node_modalities) == 1 and len(self.mods) > 1:
            present = present.any(0, keepdim=True)
        g = graph_mod.build_graph(batch.dialogue, batch.speaker, present)
        s_count = batch.num_utterances
        ei = g.edge_index.cpu().numpy()
        e = self.edges
        e["source"].append(ei[0] % s_count + u0)
        e["target"].append(ei[1] % s_count + u0)
        e["source_modality"].append(ei[0] // s_count)
        e["target_modality"].append(ei[1] // s_count)
        e["relation"].append(g.edge_type.cpu().numpy())

    def result(self, split: str, label_names) -> Collected:
        cat = _cat
        frames = {}
        for m in self.mods:
            f = self.frames[m]
            frames[m] = FrameRecord(
                utterance=cat(f["utterance"], np.int64), position=cat(f["position"], np.int64),
                corpus_frame=np.zeros(0, np.int64), score=cat(f["score"], np.float32),
                window=cat(f["window"], bool), peaks=np.concatenate(f["peaks"]) if f["peaks"] else
                np.zeros((0, 1), np.int64), gate=cat(f["gate"], np.float32) if f["gate"] else None,
                intensity=cat(f["intensity"], np.float32) if f["intensity"] else None,
                gate_counts=self.gate_counts.get(m), gate_channels=self.gate_channels.get(m, 0))
            offsets = np.asarray(self.dataset.corpus.offsets[m], dtype=np.int64)
            frames[m].corpus_frame = offsets[self.rows[frames[m].utterance]] + frames[m].position
        routing = {p: {"experts": np.concatenate(r["experts"]), "gates": np.concatenate(r["gates"]),
                       "valid": np.concatenate(r["valid"]), "num_experts": r["num_experts"]}
                   for p, r in self.routing.items()}
        attention = {}
        for p, a in self.attention.items():
            lens = np.array([len(x) for x in a["probs"]], dtype=np.int64)
            attention[p] = AttentionRecord(
                utterance=cat(a["utterance"], np.int64), query=cat(a["query"], np.int64),
                offsets=np.concatenate([[0], np.cumsum(lens)]).astype(np.int64),
                probs=np.concatenate(a["probs"]).astype(np.float32) if a["probs"] else np.zeros(0, np.float32))
        graph = getattr(self.model, "graph", None) if getattr(self.model, "use_graph", False) else None
        edges = {k: cat(v, np.int64) for k, v in self.edges.items()} if graph is not None else None
        num_classes = len(label_names)
        return Collected(
            split=split, label_names=list(label_names), modalities=self.mods, utterance_ids=list(self.utt_ids),
            corpus_row=self.rows, dialogue=self.dia, position=self.pos,
            speaker=cat(self.speaker, np.int64), labels=cat(self.labels, np.int64),
            probs=np.concatenate(self.probs) if self.probs else np.zeros((0, num_classes), np.float32),
            lengths={m: cat(v, np.int64) for m, v in self.lengths.items()}, frames=frames, routing=routing,
            attention=attention, edges=edges,
            relation_names=list(graph.relation_names) if graph is not None else [],
            node_modalities=tuple(graph.node_modalities) if graph is not None else ())


def _cat(parts, dtype) -> np.ndarray:
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)


@torch.no_grad()
def collect(model, dataset, device, label_names, batch_size: int = 8) -> Collected:
    """Run ``model`` over ``dataset`` (a :class:`~hotspot_erc.data.dataset.DialogueDataset`) in
    stored order and gather what the report needs (see :class:`Collected`)."""
    device = torch.device(device)
    was_training, was_inspecting = model.training, model.inspect
    model.eval()
    model.inspect = True
    got = _Collector(model, dataset)
    try:
        for batch in eval_loader(dataset, batch_size, device):
            batch = batch.to(device)
            got.update(model(batch), batch)
    finally:
        model.train(was_training)
        model.inspect = was_inspecting
    return got.result(dataset.split or "all", label_names)
