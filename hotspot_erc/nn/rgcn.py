"""``RGCNConv``: drop-in for ``torch_geometric.nn.RGCNConv`` on the compiled relational ops.

``out_i = x_i W_root + b + sum_r reduce_{j in N_r(i)} x_j W_r`` (DESIGN §3.6) with the same
constructor, parameter names (``weight``, ``comp``, ``root``, ``bias``) and shapes as PyG, so a
PyG ``state_dict`` loads and gives the same outputs. Unlike PyG it never loops over edge masks
per relation and never gathers a per-edge weight:

* dense or composed weights (eager; :meth:`RGCNConv._forward_grouped`): only the non-empty
  (node, relation) buckets, grouped by relation, are multiplied by their weight, and the root by
  ``root`` plus ``bias``, the buckets gathered straight into the GEMM's A operand
  (:func:`~hotspot_erc.ops.relational.relational_conv`). On the CPU that is one fused kernel each
  way (``hotspot_erc::relational_conv``: the buckets gathered chunk by chunk into the GEMM's
  operand, each product row added into its node's row); on CUDA a Triton grouped GEMM whose A-tile
  load gathers the buckets (``kernels/gather_segment_matmul.py``) then the per-node row sum: two
  launches forward, three backward, no gathered matrix in memory. In a conversation graph two
  thirds of the buckets are empty: a dense ``[N, R*in] @ [R*in, out]`` would multiply those zeros
  too;
* otherwise (torch.compile, bases applied on the feature side, blocks), one aggregation kernel
  plus one GEMM, in whichever order is cheaper for the layer's shape:
  aggregate-then-transform (``Z = relational_aggregate(x)`` [N, R, in], then ``Z @ W``) or
  transform-then-aggregate (``H = x @ W`` [N, R, out], then ``relational_message_sum(H)``).
  Both cost ``2*N*R*in*out`` GEMM FLOPs (fewer when a basis decomposition is applied on the
  smaller side), so the order is chosen by FLOPs first and then by the intermediate's size.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from hotspot_erc import _ext
from hotspot_erc.ops._backend import validate_values
from hotspot_erc.ops.relational import (RelationalGraph, relational_aggregate, relational_conv,
                                        relational_conv_available, relational_matmul, relational_message_sum)
from hotspot_erc.ops.segment import gather_rows
from hotspot_erc.ops.segment_matmul import row_tiles, segment_matmul


def _grouped_ok(x: torch.Tensor) -> bool:
    """The grouped path needs the compiled ops on x's device (else the reference-backed path
    runs) and eager mode (its compact structure reads the bucket count on the CPU)."""
    if torch.compiler.is_compiling() or not _ext.available():
        return False
    if x.is_cuda:  # the Triton gather-GEMM plus the compiled per-node sum
        return relational_conv_available(x.device)
    return _ext.has_kernel("relational_aggregate", "CPU") and _ext.has_kernel("segment_matmul", "CPU")

_AGGRS = {"mean": "mean", "add": "sum", "sum": "sum"}
_MAX_SIZE = 2**31 - 1
_MAX_PARAMS = 2**34  # 64 GiB of float32 weights: a wrong argument, not a layer


def _size(name: str, value) -> int:
    if isinstance(value, (bool, torch.Tensor)) or not hasattr(type(value), "__index__"):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    value = int(value)
    if not 1 <= value <= _MAX_SIZE:
        raise ValueError(f"{name} must be in [1, {_MAX_SIZE}], got {value}")
    return value


def _glorot_(t: torch.Tensor | None) -> None:
    # Same initialisation family as PyG (uniform, bound from the last two dims).
    if t is not None:
        bound = math.sqrt(6.0 / (t.size(-2) + t.size(-1)))
        with torch.no_grad():
            t.uniform_(-bound, bound)


class RGCNConv(nn.Module):
    """Relational graph convolution (Schlichtkrull et al.) with per-relation mean by default.

    Args mirror ``torch_geometric.nn.RGCNConv``: ``in_channels`` (int), ``out_channels``,
    ``num_relations``, ``num_bases`` (basis decomposition), ``num_blocks`` (block-diagonal),
    ``aggr`` ("mean", or "add"/"sum"), ``root_weight``, ``bias``; ``is_sorted`` is accepted and
    ignored (edges are sorted once when the graph is prepared).

    ``forward(x, edge_index, edge_type)`` as in PyG (``x`` float features [N, in], or ``None`` /
    an index tensor for featureless nodes), or ``forward(x, graph)`` with a prepared
    :class:`~hotspot_erc.ops.relational.RelationalGraph` (or anything with ``.relational()``,
    e.g. a conversation graph) reused across layers.
    """

    def __init__(self, in_channels: int, out_channels: int, num_relations: int, num_bases: int | None = None,
                 num_blocks: int | None = None, aggr: str = "mean", root_weight: bool = True,
                 is_sorted: bool = False, bias: bool = True):
        super().__init__()
        if isinstance(in_channels, tuple):
            raise TypeError("in_channels must be an int (bipartite (src, dst) channel pairs are not supported)")
        in_channels = _size("in_channels", in_channels)
        out_channels = _size("out_channels", out_channels)
        num_relations = _size("num_relations", num_relations)
        num_bases = None if num_bases is None else _size("num_bases", num_bases)
        num_blocks = None if num_blocks is None else _size("num_blocks", num_blocks)
        if num_bases is not None and num_blocks is not None:
            raise ValueError("use either num_bases (basis decomposition) or num_blocks (block-diagonal), not both")
        if aggr not in _AGGRS:
            raise ValueError(f"aggr must be one of {tuple(_AGGRS)}, got {aggr!r}")
        per_relation = in_channels * out_channels // (num_blocks or 1)
        params = (num_bases * per_relation + num_relations * num_bases if num_bases is not None
                  else num_relations * per_relation)
        if params > _MAX_PARAMS:
            raise ValueError(
                f"RGCNConv({in_channels}, {out_channels}, num_relations={num_relations}) would hold {params} "
                f"relation weights (more than {_MAX_PARAMS}); check the sizes, or use num_bases")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.num_relations = num_relations
        self.num_bases = num_bases
        self.num_blocks = num_blocks
        self.aggr = aggr
        self.is_sorted = is_sorted
        if num_bases is not None:
            self.weight = nn.Parameter(torch.empty(num_bases, in_channels, out_channels))
            self.comp = nn.Parameter(torch.empty(num_relations, num_bases))
        elif num_blocks is not None:
            if in_channels % num_blocks or out_channels % num_blocks:
                raise ValueError(f"num_blocks={num_blocks} must divide in_channels={in_channels} and "
                                 f"out_channels={out_channels}")
            self.weight = nn.Parameter(torch.empty(num_relations, num_blocks, in_channels // num_blocks,
                                                   out_channels // num_blocks))
            self.register_parameter("comp", None)
        else:
            self.weight = nn.Parameter(torch.empty(num_relations, in_channels, out_channels))
            self.register_parameter("comp", None)
        self.root = nn.Parameter(torch.empty(in_channels, out_channels)) if root_weight else None
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _glorot_(self.weight)
        _glorot_(self.comp)
        _glorot_(self.root)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    # ------------------------------------------------------------------ planning
    def plan(self, num_nodes: int = 1, device: torch.device | None = None) -> tuple[str, bool]:
        """(order, use_basis): order is "aggregate_first" or "transform_first"; use_basis says
        whether the basis is applied on the feature side instead of composing W_r. On the CPU
        (eager) dense weights always go aggregate-first through the grouped
        :func:`relational_matmul`, which multiplies only non-empty buckets."""
        n, r, i, o = num_nodes, self.num_relations, self.in_channels, self.out_channels
        dense = 2 * n * r * i * o
        if self.num_bases is not None:
            b = self.num_bases
            agg = min(dense, 2 * n * r * b * i + 2 * n * b * i * o)
            tra = min(dense, 2 * n * i * b * o + 2 * n * b * r * o)
        else:
            agg = tra = dense
        if agg != tra:
            order = "aggregate_first" if agg < tra else "transform_first"
        else:
            order = "aggregate_first" if i <= o else "transform_first"
        use_basis = self.num_bases is not None and (min(agg, tra) < dense)
        if (device is not None and torch.device(device).type == "cpu" and not use_basis
                and self.num_blocks is None and not torch.compiler.is_compiling()):
            order = "aggregate_first"
        return order, use_basis

    def _dense_weight(self) -> torch.Tensor:
        if self.num_bases is not None:
            return (self.comp @ self.weight.view(self.num_bases, -1)).view(
                self.num_relations, self.in_channels, self.out_channels)
        return self.weight

    # ------------------------------------------------------------------ forward
    def _graph(self, edge_index, edge_type, num_nodes: int) -> RelationalGraph:
        if isinstance(edge_index, RelationalGraph):
            graph = edge_index
        elif hasattr(edge_index, "relational") and not isinstance(edge_index, torch.Tensor):
            graph = edge_index.relational()
        else:
            if edge_type is None:
                raise ValueError("edge_type is required with an edge_index tensor")
            return RelationalGraph(edge_index, edge_type, num_nodes, self.num_relations)
        if edge_type is not None:
            raise ValueError("pass edge_type only with an edge_index tensor, not with a prepared graph")
        if graph.num_relations != self.num_relations:
            raise ValueError(f"graph has {graph.num_relations} relations, the layer {self.num_relations}")
        if graph.num_nodes != num_nodes:
            raise ValueError(f"graph has {graph.num_nodes} nodes but x has {num_nodes}")
        return graph

    def forward(self, x: torch.Tensor | None, edge_index, edge_type: torch.Tensor | None = None) -> torch.Tensor:
        if isinstance(x, tuple):
            raise TypeError("RGCNConv: bipartite (x_src, x_dst) inputs are not supported")
        if x is None or (isinstance(x, torch.Tensor) and not x.is_floating_point()):
            return self._forward_featureless(x, edge_index, edge_type)
        if x.dim() != 2 or x.shape[1] != self.in_channels:
            raise ValueError(f"x must have shape [N, {self.in_channels}], got {tuple(x.shape)}")
        graph = self._graph(edge_index, edge_type, x.shape[0])
        reduce = _AGGRS[self.aggr]
        x = x.contiguous()
        n, r, i, o = x.shape[0], self.num_relations, self.in_channels, self.out_channels
        order, use_basis = self.plan(n, x.device)
        if self.num_blocks is None and not use_basis and _grouped_ok(x):
            return self._forward_grouped(x, graph)
        if order == "aggregate_first":
            if self.num_blocks is not None:
                nb = self.num_blocks
                z = relational_aggregate(x, graph, reduce)  # [N, R, in]
                out = torch.einsum("nrbi,rbio->nbo", z.view(n, r, nb, i // nb), self.weight).reshape(n, o)
            elif use_basis:
                z = relational_aggregate(x, graph, reduce)
                zb = torch.einsum("nri,rb->nbi", z, self.comp)  # R -> B first: the GEMM shrinks by R/B
                out = zb.reshape(n, self.num_bases * i) @ self.weight.view(self.num_bases * i, o)
            else:
                out = relational_matmul(x, self._dense_weight(), graph, reduce)
        else:
            if self.num_blocks is not None:
                nb = self.num_blocks
                h = torch.einsum("nbi,rbio->nrbo", x.view(n, nb, i // nb), self.weight).reshape(n, r, o)
            elif use_basis:
                hb = (x @ self.weight.permute(1, 0, 2).reshape(i, self.num_bases * o)).view(n, self.num_bases, o)
                h = torch.einsum("nbo,rb->nro", hb, self.comp)
            else:
                h = (x @ self._dense_weight().permute(1, 0, 2).reshape(i, r * o)).view(n, r, o)
            out = relational_message_sum(h.contiguous(), graph, reduce)
        if self.root is not None:
            out = out + x @ self.root
        if self.bias is not None:
            out = out + self.bias
        return out

    def _forward_grouped(self, x: torch.Tensor, graph: RelationalGraph) -> torch.Tensor:
        """Dense (or composed) weights: :func:`relational_conv`, fused on both devices (CPU: the
        C++ kernel, one launch each way; CUDA: the Triton gather-GEMM plus the per-node row sum,
        two launches forward, three backward; no host sync, bitwise reproducible run to run).
        Fallback where a CPU build lacks ``relational_conv``, three launches forward:

        1. gather Z [M, in]: one root row per node (x_i) and the non-empty (node, relation)
           buckets grouped by relation (the mean over the bucket's in-edges), one
           ``relational_aggregate`` over the graph's cached compact structure;
        2. ``segment_matmul``: the root group times ``root`` plus ``bias``, each relation's
           group times ``W_r`` (no GEMM row is an empty bucket);
        3. sum each node's rows (its root row and its buckets): ``relational_aggregate`` again.
        Backward: the same three in reverse (gradients of the row sum, of the grouped product
        with the weight, root and bias gradients in the same launch on the CPU, and of the
        gather). Deterministic: every sum runs in a fixed order, no atomics."""
        if relational_conv_available(x.device):
            # The gather fused into the GEMM (see ops.relational.relational_conv): what the three
            # launches below do, without their [M, in] gathered matrix (and on the CPU without
            # the [M, out] product either).
            return relational_conv(x, self._dense_weight(), graph, self.root, self.bias,
                                   "mean" if self.aggr == "mean" else "sum")
        cs = graph.compact()
        gather = torch.ops.hotspot_erc.relational_aggregate
        z = gather(x, *cs["z"], self.aggr == "mean")
        root, bias = self.root, self.bias
        if root is not None:
            ptr = cs["group_ptr"]
            y = segment_matmul(z, ptr, self._dense_weight(), root, bias, row_tiles(ptr, cs["rows"], cs["tiles"]))
        else:
            # Rows [0, N) are the nodes' root rows and belong to no group here: give them zeros
            # explicitly (segment_matmul leaves rows outside every group unwritten).
            n = x.shape[0]
            rest = segment_matmul(z[n:], cs["group_ptr"][1:] - n, self._dense_weight())
            y = torch.cat([rest.new_zeros(n, rest.shape[1]), rest])
        out = gather(y, *cs["nodes"], False)
        if root is None and bias is not None:
            out = out + bias
        return out

    def _forward_featureless(self, x, edge_index, edge_type) -> torch.Tensor:
        # Node j's "features" are one-hot rows of W: its message under relation r is W_r[x_j].
        if self.num_blocks is not None:
            raise ValueError("block-diagonal decomposition needs float node features (as in PyG)")
        w = self._dense_weight()  # [R, in, out]
        if x is None:
            h = w.permute(1, 0, 2)  # [in, R, out]: node j = row j
            root = self.root
            ei = edge_index
            if (isinstance(ei, torch.Tensor) and ei.numel() and not ei.is_floating_point()
                    and (ei.device.type == "cpu" or validate_values())):
                lo, hi = int(ei.min()), int(ei.max())
                if lo < 0 or hi >= self.in_channels:
                    raise ValueError(
                        f"with x=None (featureless nodes) there is one node per input channel: edge_index "
                        f"must hold node ids in [0, in_channels={self.in_channels}), got values in [{lo}, {hi}]")
        else:
            if x.dim() != 1 or x.dtype not in (torch.int32, torch.int64):
                raise ValueError(f"index node features x must be a 1-D int32/int64 tensor of ids in "
                                 f"[0, in_channels={self.in_channels}), got {x.dtype} of shape {tuple(x.shape)}")
            if x.numel() and (x.device.type == "cpu" or validate_values()):
                lo, hi = int(x.min()), int(x.max())
                if lo < 0 or hi >= self.in_channels:
                    raise ValueError(f"index node features x must hold ids in [0, in_channels={self.in_channels}), "
                                     f"got values in [{lo}, {hi}]")
            # gather_rows, not w[x]: its backward sums repeated ids in a fixed order
            h = gather_rows(w.permute(1, 0, 2), x)
            root = None if self.root is None else gather_rows(self.root, x)
        graph = self._graph(edge_index, edge_type, h.shape[0])
        out = relational_message_sum(h.contiguous(), graph, _AGGRS[self.aggr])
        if root is not None:
            out = out + root
        if self.bias is not None:
            out = out + self.bias
        return out

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, num_relations={self.num_relations}, aggr={self.aggr!r}"
                + (f", num_bases={self.num_bases}" if self.num_bases is not None else "")
                + (f", num_blocks={self.num_blocks}" if self.num_blocks is not None else ""))
