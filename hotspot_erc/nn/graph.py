"""`CrossModalGraph` (DESIGN §2): the conversation-graph branch of the model as a module.

Nodes are (modality, utterance) pairs (or one node per utterance for COGMEN's scheme), their
features the utterance vectors of each modality plus a speaker embedding; typed temporal and
cross-modal edges come from :func:`hotspot_erc.data.graph.build_conversation_graph`; relational
GNN layers (:class:`~hotspot_erc.nn.rgcn.RGCNConv`, pre-norm residual) pass messages along them, or
the baselines' stack (RGCNConv, then :class:`~hotspot_erc.nn.transformer_conv.TransformerConv`).

The data layer only describes edges (index tensors and relation names); preparing them for the
relational op (:func:`prepare_graph`) happens here, on the model's side.
"""
from __future__ import annotations

import torch
from torch import nn

from hotspot_erc.data.graph import (ConversationGraph, build_conversation_graph, node_modalities, relation_names,
                                    scheme_has_edges)
from hotspot_erc.nn.config import GRAPH_CONVS
from hotspot_erc.nn.rgcn import RGCNConv
from hotspot_erc.nn.transformer_conv import TransformerConv
from hotspot_erc.ops.graph_attention import AttentionGraph
from hotspot_erc.ops.relational import RelationalGraph


def prepare_graph(graph: ConversationGraph) -> RelationalGraph:
    """The :class:`~hotspot_erc.ops.relational.RelationalGraph` of a conversation graph: build it
    once per batch and pass it to every layer."""
    # Built by the graph builder, ids are valid by construction: skip the value check.
    return RelationalGraph(graph.edge_index, graph.edge_type, graph.num_nodes, graph.num_relations, validate=False)


class CrossModalGraph(nn.Module):
    """Relational GNN over the conversation graph of a batch.

    Args:
        dim: feature size of the utterance vectors (and of the output per node).
        modalities: the modalities whose utterance vectors come in, e.g. ``("t", "a", "v")``.
        num_layers: RGCNConv layers of ``conv="rgcn"``, each ``h + dropout(relu(conv(LayerNorm(h))))``.
        scheme, window_past, window_future, temporal_edges, cross_modal_edges: the graph of
            :func:`~hotspot_erc.data.graph.build_conversation_graph`.
        num_speakers: size of the speaker embedding table (dialogue-local speaker ids; COGMEN's
            relations are per speaker pair).
        dropout: on each layer's update.
        conv: ``"rgcn"`` (the layers above) or ``"rgcn_transformer"``: CORECT's and COGMEN's stack,
            ``leaky_relu(BatchNorm(TransformerConv(RGCNConv(h))))`` with ``heads`` concatenated
            heads of ``dim // heads`` (the transformer attends over the same edges, untyped).
        heads: attention heads of ``"rgcn_transformer"`` (a divisor of ``dim``).

    ``forward(pooled, dialogue, speaker, present=None)`` takes ``pooled[m]`` [S, dim] per
    modality, ``dialogue`` / ``speaker`` [S] and ``present`` [M, S] bool (modality m has frames
    for utterance s; all when None) and returns ``(features [S, M'·dim], update)``: the node
    states of each utterance side by side (M' = node modalities) and ‖output − input‖ / ‖input‖
    over all nodes (detached), near 0 when the graph changes nothing.
    """

    def __init__(self, dim: int, modalities=("t", "a", "v"), num_layers: int = 2, scheme: str = "default",
                 window_past: int = 2, window_future: int = 2, temporal_edges: bool = True,
                 cross_modal_edges: bool = True, num_speakers: int = 8, dropout: float = 0.0, conv: str = "rgcn",
                 heads: int = 4):
        super().__init__()
        if conv not in GRAPH_CONVS:
            raise ValueError(f"conv must be one of {GRAPH_CONVS}, got {conv!r}")
        if conv == "rgcn_transformer" and (isinstance(heads, bool) or not isinstance(heads, int) or heads < 1
                                           or dim % heads):
            raise ValueError(f"heads must be a positive divisor of dim={dim} for conv 'rgcn_transformer', got {heads!r}")
        mods = tuple(modalities)
        if isinstance(num_speakers, bool) or not isinstance(num_speakers, int) or num_speakers < 1:
            raise ValueError(f"num_speakers must be an int >= 1 (the size of the speaker table), got {num_speakers!r}")
        # The relation vocabulary depends only on (modalities, scheme, num_speakers); the edge
        # flags only decide which relations get edges, so num_relations is fixed.
        self.modalities = mods
        self.node_modalities = node_modalities(mods, scheme)
        self.relation_names = list(relation_names(self.node_modalities, scheme, num_speakers))
        if not scheme_has_edges(self.node_modalities, scheme, temporal_edges, cross_modal_edges):
            raise ValueError("the conversation graph has no edges with these options "
                             "(temporal and cross-modal edges both off, or one modality without "
                             "temporal edges); turn the graph off with graph=False / --no-graph")
        self.num_speakers = num_speakers
        self.edge_options = dict(window_past=window_past, window_future=window_future, scheme=scheme,
                                 temporal=temporal_edges, cross_modal=cross_modal_edges, num_speakers=num_speakers)
        self.speaker = nn.Embedding(num_speakers, dim)
        self.conv = conv
        if conv == "rgcn":
            self.gnn = nn.ModuleList(RGCNConv(dim, dim, len(self.relation_names)) for _ in range(num_layers))
            self.gnn_norm = nn.ModuleList(nn.LayerNorm(dim) for _ in range(num_layers))
        else:
            self.rgcn = RGCNConv(dim, dim, len(self.relation_names))
            self.transformer = TransformerConv(dim, dim // heads, heads=heads, concat=True)
            self.bn = nn.BatchNorm1d(dim)
        self.drop = nn.Dropout(dropout)

    @property
    def out_features(self) -> int:
        return len(self.node_modalities) * self.speaker.embedding_dim

    def build_graph(self, dialogue: torch.Tensor, speaker: torch.Tensor,
                    present: torch.Tensor | None = None) -> ConversationGraph:
        """The conversation graph of a batch; ``present`` [M', S] over the node modalities."""
        return build_conversation_graph(dialogue, speaker, modalities=self.node_modalities, present=present,
                                        **self.edge_options)

    def _speaker_ids(self, speaker: torch.Tensor) -> torch.Tensor:
        if speaker.device.type == "cpu":  # a value check is free here; on a GPU it would sync
            lo, hi = (int(speaker.min()), int(speaker.max())) if speaker.numel() else (0, 0)
            if lo < 0 or hi >= self.num_speakers:
                raise ValueError(f"speaker ids must be in [0, num_speakers={self.num_speakers}), got "
                                 f"[{lo}, {hi}]; build the model with a larger num_speakers (the trainer "
                                 f"sizes it from the corpus)")
            return speaker
        return speaker.clamp(0, self.num_speakers - 1)

    def forward(self, pooled: dict[str, torch.Tensor], dialogue: torch.Tensor, speaker: torch.Tensor,
                present: torch.Tensor | None = None):
        mods = self.modalities
        s = pooled[mods[0]].shape[0]
        if present is None:
            present = torch.ones(len(mods), s, dtype=torch.bool, device=dialogue.device)
        spk = self.speaker(self._speaker_ids(speaker))
        if len(self.node_modalities) == 1 and len(mods) > 1:
            # One node per utterance (COGMEN's graph): the mean of the modalities it has.
            weight = present.to(spk.dtype).unsqueeze(-1)
            total = sum(pooled[m] * weight[i] for i, m in enumerate(mods))
            h0 = total / weight.sum(0).clamp(min=1.0) + spk
            present = present.any(0, keepdim=True)
        else:
            h0 = torch.cat([pooled[m] + spk for m in mods], 0)  # node id = m*S + s (modality-major)
        edges = self.build_graph(dialogue, speaker, present)
        graph = prepare_graph(edges)
        if self.conv == "rgcn":
            h = h0
            for conv, norm in zip(self.gnn, self.gnn_norm):
                h = h + self.drop(torch.relu(conv(norm(h), graph)))
        else:
            h = self.rgcn(h0, graph)
            att = AttentionGraph(edges.edge_index, edges.num_nodes, validate=False)  # valid by construction
            h = nn.functional.leaky_relu(self.bn(self.transformer(h, att)))
        update = ((h - h0).detach().norm() / h0.detach().norm().clamp(min=1e-12))
        return h.view(len(self.node_modalities), s, -1).transpose(0, 1).reshape(s, -1), update
