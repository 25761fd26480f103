"""``TransformerConv``: drop-in for ``torch_geometric.nn.TransformerConv`` on the fused graph-attention op.

Same constructor, forward and parameter names (``lin_query``, ``lin_key``, ``lin_value``,
``lin_edge``, ``lin_skip``, ``lin_beta``) as PyG's (DESIGN §3.8), so a PyG ``state_dict`` loads
strictly and gives PyG's outputs and gradients. PyG gathers a query, key and value row per edge
([E, H, C] each) and softmaxes through scatter ops; here the four projections are the only dense
work and the attention is one :func:`~hotspot_erc.ops.graph_attention` call that reads the rows
where they lie. Attention dropout draws one [E, H] keep-mask exactly as ``F.dropout`` does on
PyG's weights, so with the same random state both drop the same edges.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from hotspot_erc.ops.graph_attention import AttentionGraph, graph_attention, stat_dtype

# PyG's MessagePassing options that leave this layer's result unchanged when given their defaults.
_PYG_DEFAULTS = {"aggr": "add", "flow": "source_to_target", "node_dim": 0}


def _channels(name: str, value) -> int:
    if isinstance(value, (bool, torch.Tensor)) or not hasattr(type(value), "__index__"):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    value = int(value)
    if value == -1:
        raise ValueError(f"{name}=-1 (lazy initialisation) is not supported: give the feature size")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def _fused_linear(x: torch.Tensor, lins: list) -> list[torch.Tensor]:
    """``[lin(x) for lin in lins]`` as one GEMM over the stacked weights: the projections a
    layer cannot avoid run at one wide GEMM's speed, and their outputs are column slices that
    the attention op reads in place (its backward's gradients are joined by one ``cat``)."""
    if len(lins) == 1:
        return [lins[0](x)]
    weight = torch.cat([lin.weight for lin in lins])
    bias = torch.cat([lin.bias for lin in lins]) if lins[0].bias is not None else None
    return list(nn.functional.linear(x, weight, bias).split([lin.out_features for lin in lins], dim=1))


class TransformerConv(nn.Module):
    """Graph transformer convolution (Shi et al., 2021): multi-head attention over incoming edges.

    For destination i and head h: ``alpha_ij = softmax_j((W_q x_i) . (W_k x_j + W_e e_ij) / sqrt(C))``,
    ``m_i = sum_j alpha_ij (W_v x_j + W_e e_ij)``; heads concatenated (``concat=True``) or averaged;
    then ``out_i = W_skip x_i + m_i``, or with ``beta=True`` a learned gate
    ``beta_i = sigmoid(w_beta . [m_i, W_skip x_i, m_i - W_skip x_i])`` mixing the two.

    Args mirror PyG's: ``in_channels`` (int, or (source, destination) sizes for bipartite
    graphs), ``out_channels`` (C, per head), ``heads``, ``concat``, ``beta``, ``dropout`` (on the
    attention weights, in training), ``edge_dim``, ``bias``, ``root_weight``. ``backend`` forces
    an op backend (None: automatic). PyG's ``aggr``, ``flow`` and ``node_dim`` are accepted at
    their defaults only.

    ``forward(x, edge_index, edge_attr=None, return_attention_weights=None)``: ``x`` [N, in] or a
    pair ``(x_src, x_dst)``; ``edge_index`` [2, E] (row 0 source, row 1 destination) or a prepared
    :class:`~hotspot_erc.ops.AttentionGraph`. With ``return_attention_weights`` set to a bool it
    also returns ``(edge_index, alpha)``, alpha [E, H] before dropout (it carries no gradient).
    """

    def __init__(self, in_channels, out_channels: int, heads: int = 1, concat: bool = True, beta: bool = False,
                 dropout: float = 0.0, edge_dim: int | None = None, bias: bool = True, root_weight: bool = True,
                 backend: str | None = None, **kwargs):
        super().__init__()
        for key, value in kwargs.items():
            if key not in _PYG_DEFAULTS:
                raise TypeError(f"TransformerConv got an unexpected keyword argument {key!r}")
            if value != _PYG_DEFAULTS[key]:
                raise ValueError(f"TransformerConv supports {key}={_PYG_DEFAULTS[key]!r} only, got {value!r}")
        if isinstance(in_channels, (tuple, list)):
            if len(in_channels) != 2:
                raise ValueError(f"in_channels must be an int or a (source, destination) pair, got {in_channels!r}")
            in_src, in_dst = (_channels("in_channels", c) for c in in_channels)
            in_channels = (in_src, in_dst)
        else:
            in_src = in_dst = _channels("in_channels", in_channels)
        out_channels = _channels("out_channels", out_channels)
        heads = _channels("heads", heads)
        if not (isinstance(dropout, (int, float)) and 0.0 <= dropout <= 1.0):
            raise ValueError(f"dropout must be a probability in [0, 1], got {dropout!r}")
        self.in_channels, self.out_channels, self.heads = in_channels, out_channels, heads
        self.concat, self.root_weight = bool(concat), bool(root_weight)
        self.beta = bool(beta) and self.root_weight  # PyG: no skip, no gate
        self.dropout, self.edge_dim, self.backend = float(dropout), edge_dim, backend
        width = heads * out_channels
        self.lin_key = nn.Linear(in_src, width, bias=bias)
        self.lin_query = nn.Linear(in_dst, width, bias=bias)
        self.lin_value = nn.Linear(in_src, width, bias=bias)
        if edge_dim is not None:
            self.lin_edge = nn.Linear(_channels("edge_dim", edge_dim), width, bias=False)
        else:
            self.register_parameter("lin_edge", None)
        # PyG keeps lin_skip even without the root term: its state_dict has it either way.
        skip = width if self.concat else out_channels
        self.lin_skip = nn.Linear(in_dst, skip, bias=bias)
        if self.beta:
            self.lin_beta = nn.Linear(3 * skip, 1, bias=False)
        else:
            self.register_parameter("lin_beta", None)

    def reset_parameters(self) -> None:
        for lin in (self.lin_key, self.lin_query, self.lin_value, self.lin_edge, self.lin_skip, self.lin_beta):
            if lin is not None:
                lin.reset_parameters()

    def _graph(self, edge_index, num_src: int, num_dst: int) -> AttentionGraph:
        if isinstance(edge_index, AttentionGraph):
            graph = edge_index
        elif hasattr(edge_index, "attention") and not isinstance(edge_index, torch.Tensor):
            graph = edge_index.attention()
        elif isinstance(edge_index, torch.Tensor):
            return AttentionGraph(edge_index, num_src, num_dst)
        else:
            raise TypeError(f"edge_index must be a [2, E] tensor or an AttentionGraph, got {type(edge_index).__name__}"
                            " (SparseTensor adjacency is not supported: pass its COO edge_index)")
        if (graph.num_src, graph.num_dst) != (num_src, num_dst):
            raise ValueError(f"the graph has {graph.num_src} source and {graph.num_dst} destination nodes, x has "
                             f"{num_src} and {num_dst}")
        return graph

    def _attention_mask(self, num_edges: int, like: torch.Tensor) -> torch.Tensor | None:
        if not self.training or self.dropout == 0.0:
            return None
        shape = (num_edges, self.heads)
        if self.dropout == 1.0:
            return like.new_zeros(shape, dtype=stat_dtype(like.dtype))
        # F.dropout's own recipe on a tensor shaped like PyG's weights: the same draws.
        keep = 1.0 - self.dropout
        return like.new_empty(shape, dtype=stat_dtype(like.dtype)).bernoulli_(keep).div_(keep)

    def forward(self, x, edge_index, edge_attr: torch.Tensor | None = None, return_attention_weights=None):
        x_src, x_dst = x if isinstance(x, (tuple, list)) else (x, x)
        for name, t, size in (("x_src", x_src, self.lin_key.in_features), ("x_dst", x_dst, self.lin_query.in_features)):
            if not isinstance(t, torch.Tensor) or t.dim() != 2 or t.shape[1] != size:
                got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                raise ValueError(f"{name if isinstance(x, (tuple, list)) else 'x'} must be a [N, {size}] tensor, got {got}")
        graph = self._graph(edge_index, x_src.shape[0], x_dst.shape[0])
        heads, c = self.heads, self.out_channels
        skip = [self.lin_skip] if self.root_weight else []
        if x_src is x_dst:
            query, key, value, *x_r = _fused_linear(x_src, [self.lin_query, self.lin_key, self.lin_value] + skip)
        else:
            query, *x_r = _fused_linear(x_dst, [self.lin_query] + skip)
            key, value = _fused_linear(x_src, [self.lin_key, self.lin_value])
        query, key, value = (t.view(-1, heads, c) for t in (query, key, value))
        edge = None
        if self.lin_edge is not None:
            if edge_attr is None:
                raise ValueError(f"edge_attr is required: the layer was built with edge_dim={self.edge_dim}")
            if edge_attr.dim() != 2 or edge_attr.shape != (graph.num_edges, self.edge_dim):
                raise ValueError(f"edge_attr must be [E, edge_dim] = [{graph.num_edges}, {self.edge_dim}], got "
                                 f"{tuple(edge_attr.shape)}")
            edge = self.lin_edge(edge_attr).view(-1, heads, c)
        elif edge_attr is not None:
            raise ValueError("edge_attr was given but the layer has no edge_dim: build it with edge_dim=")
        mask = self._attention_mask(graph.num_edges, query)
        want = isinstance(return_attention_weights, bool)
        res = graph_attention(query, key, value, graph, edge, mask, scale=1.0 / math.sqrt(c), return_alpha=want,
                              backend=self.backend)
        out, alpha = res if want else (res, None)
        out = out.reshape(-1, heads * c) if self.concat else out.mean(dim=1)
        if self.root_weight:
            x_r = x_r[0]
            if self.lin_beta is not None:
                gate = torch.sigmoid(self.lin_beta(torch.cat([out, x_r, out - x_r], dim=-1)))
                out = gate * x_r + (1 - gate) * out
            else:
                out = out + x_r
        if want:
            return out, (graph.edge_index if not isinstance(edge_index, torch.Tensor) else edge_index, alpha)
        return out

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, heads={self.heads}, concat={self.concat}, "
                f"beta={self.beta}, dropout={self.dropout}, edge_dim={self.edge_dim}")
