"""Relational aggregation over typed edges (DESIGN §3.5) and the prepared graph it runs on.

:class:`RelationalGraph` sorts a typed edge list once, on the tensors' device and without host
synchronisation, into the CSR structures every layer reuses:

* by (destination, relation) bucket ``b = i * R + r``: ``rowptr`` [N*R+1], source ``col`` and
  bucket ``key`` per sorted edge (forward of :func:`relational_aggregate`);
* the transposed structure by (source, relation): ``t_rowptr`` [N*R+1], destination ``t_dst``
  and bucket ``t_key`` (its backward, deterministic: a segment reduction again).

Both functional ops run the compiled ``hotspot_erc::relational_gather`` (C++ on CPU, CUDA on GPU):

* :func:`relational_aggregate` ``Z[i, r] = reduce_{(j->i) of type r} x[j]`` -> [N, R, d];
* :func:`relational_message_sum` ``out[i] = sum_r reduce_{(j->i) of type r} h[j, r]`` for
  per-relation messages h [N, R, d] (the transform-then-aggregate order of ``RGCNConv``).

Invalid ids (out of range node or relation) raise when the graph is built from CPU tensors, or
from CUDA tensors with ``validate=True`` / ``HOTSPOT_ERC_VALIDATE=1`` (one synchronisation, at
build time). Unvalidated CUDA graphs route such edges to a bucket no kernel reads: they are
dropped, never written out of bounds.
"""
from __future__ import annotations

import torch

from hotspot_erc import _ext  # noqa: F401  (loads the compiled ops)
from hotspot_erc.ops import _backend

OP = "relational_aggregate"
_KERNEL = "relational_gather"
REDUCTIONS = ("mean", "sum")


def _cuda_reason(device: torch.device) -> str:
    return _backend.cuda_ext_reason(_KERNEL)


def _cpu_reason(device: torch.device) -> str:
    return _backend.cpu_ext_reason(_KERNEL)


SUPPORTS = _backend.register(OP, {"cuda": _cuda_reason, "cpu": _cpu_reason})
_backend.register("relational_message_sum", SUPPORTS)

# What the extension offers is fixed once it is loaded; torch.compile reads these instead of
# tracing the dispatcher queries in _backend.choose.
_NATIVE_OK = {"cpu": not _cpu_reason(torch.device("cpu")), "cuda": not _cuda_reason(torch.device("cuda"))}


def _choose(backend: str | None, device: torch.device) -> str:
    if torch.compiler.is_compiling():
        if backend is None:
            native = "cuda" if device.type == "cuda" else "cpu"
            return native if _NATIVE_OK.get(native, False) else "reference"
        return backend
    return _backend.choose(OP, backend, device, SUPPORTS)


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a Python int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


class RelationalGraph:
    """A typed edge list prepared for :func:`relational_aggregate`; build once, reuse per layer.

    Args:
        edge_index: [2, E] int64/int32, row 0 = source j, row 1 = destination i (PyG convention).
        edge_type: [E] int64/int32 relation ids in [0, num_relations).
        num_nodes: N (Python int: output sizes are known without reading tensors).
        num_relations: R (Python int).
        validate: check id ranges. ``None``: always for CPU tensors, for CUDA tensors only when
            ``HOTSPOT_ERC_VALIDATE=1`` (the check synchronises once).
    """

    def __init__(self, edge_index: torch.Tensor, edge_type: torch.Tensor, num_nodes: int,
                 num_relations: int, validate: bool | None = None):
        num_nodes = _check_int("num_nodes", num_nodes, 0)
        num_relations = _check_int("num_relations", num_relations, 1)
        _backend.check_tensor("edge_index", edge_index, ndim=2, dtypes=_backend.INDEX_DTYPES)
        if edge_index.shape[0] != 2:
            raise ValueError(f"edge_index must have shape [2, E], got {tuple(edge_index.shape)}")
        _backend.check_tensor("edge_type", edge_type, ndim=1, dtypes=_backend.INDEX_DTYPES,
                              device=edge_index.device)
        if edge_type.shape[0] != edge_index.shape[1]:
            raise ValueError(f"edge_type must have one entry per edge: edge_index has {edge_index.shape[1]} "
                             f"edges, edge_type has {edge_type.shape[0]}")
        self.num_nodes = num_nodes
        self.num_relations = num_relations
        self.device = edge_index.device
        self.edge_index = edge_index.long()
        self.edge_type = edge_type.long()
        src, dst = self.edge_index[0], self.edge_index[1]
        typ = self.edge_type
        bad = (src < 0) | (src >= num_nodes) | (dst < 0) | (dst >= num_nodes) | (typ < 0) | (typ >= num_relations)
        if validate is None:
            validate = self.device.type == "cpu" or _backend.validate_values()
        if validate and not torch.compiler.is_compiling() and bool(bad.any()):
            e = int(bad.nonzero()[0, 0])
            raise ValueError(
                f"edge {e} is out of range: source {int(src[e])}, destination {int(dst[e])} must lie in "
                f"[0, {num_nodes}) and type {int(typ[e])} in [0, {num_relations})")
        nb = num_nodes * num_relations
        # Invalid edges get bucket nb, past every pointer range: sorted last and never read.
        key = torch.where(bad, nb, dst * num_relations + typ)
        tkey = torch.where(bad, nb, src * num_relations + typ)
        safe_src = torch.where(bad, 0, src)
        safe_dst = torch.where(bad, 0, dst)
        safe_typ = torch.where(bad, 0, typ)
        buckets = torch.arange(nb + 1, device=self.device)
        # Stable sorts keep edges of one bucket in input order: sums are reproducible run to run.
        key_sorted, perm = torch.sort(key, stable=True)
        self.rowptr = torch.searchsorted(key_sorted, buckets)
        self.col = safe_src[perm].contiguous()
        self.key = torch.where(key_sorted == nb, 0, key_sorted).contiguous()
        self.col_rel = (safe_src[perm] * num_relations + safe_typ[perm]).contiguous()
        self.node_ptr = self.rowptr[::num_relations].contiguous()
        tkey_sorted, tperm = torch.sort(tkey, stable=True)
        self.t_rowptr = torch.searchsorted(tkey_sorted, buckets)
        self.t_dst = safe_dst[tperm].contiguous()
        self.t_key = torch.where(bad[tperm], 0, key[tperm]).contiguous()
        self.t_node_ptr = self.t_rowptr[::num_relations].contiguous()

    @property
    def num_edges(self) -> int:
        return self.edge_index.shape[1]

    def in_degree(self) -> torch.Tensor:
        """[N, R] number of type-r edges into each node (the mean's denominators)."""
        return (self.rowptr[1:] - self.rowptr[:-1]).view(self.num_nodes, self.num_relations)

    def to(self, device) -> "RelationalGraph":
        """The same graph on ``device`` (re-sorted there: the structures are cheap to rebuild)."""
        device = torch.device(device)
        if device == self.device:
            return self
        return RelationalGraph(self.edge_index.to(device), self.edge_type.to(device), self.num_nodes,
                               self.num_relations, validate=False)

    def __repr__(self) -> str:
        return (f"RelationalGraph(num_nodes={self.num_nodes}, num_edges={self.num_edges}, "
                f"num_relations={self.num_relations}, device={self.device})")


def _check_inputs(name: str, t: torch.Tensor, graph: RelationalGraph, reduce: str, ndim: int) -> None:
    if not isinstance(graph, RelationalGraph):
        raise TypeError(f"graph must be a RelationalGraph, got {type(graph).__name__}")
    _backend.check_tensor(name, t, ndim=ndim, dtypes=_backend.FLOAT_DTYPES, device=graph.device)
    if t.shape[0] != graph.num_nodes:
        raise ValueError(f"{name} must have one row per node ({graph.num_nodes}), got {t.shape[0]}")
    if not t.is_contiguous():
        raise ValueError(f"{name} must be contiguous (call .contiguous())")
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")


def relational_aggregate(x: torch.Tensor, graph: RelationalGraph, reduce: str = "mean",
                         backend: str | None = None) -> torch.Tensor:
    """``Z[i, r] = reduce_{(j -> i) of type r} x[j]`` (zero without such edges) -> [N, R, d].

    ``reduce`` is ``"mean"`` (per node and relation, as in R-GCN) or ``"sum"``. Differentiable
    w.r.t. ``x`` (twice); deterministic; no host synchronisation.
    """
    _check_inputs("x", x, graph, reduce, 2)
    backend = _choose(backend, x.device)
    n, r, d = graph.num_nodes, graph.num_relations, x.shape[1]
    if backend == "reference":
        from hotspot_erc.reference import relational as ref

        return ref.relational_aggregate(x, graph.edge_index, graph.edge_type, n, r, reduce)
    out = torch.ops.hotspot_erc.relational_gather(
        x, graph.rowptr, graph.col, graph.key, graph.t_node_ptr, graph.t_key, graph.t_key, graph.rowptr,
        reduce == "mean")
    return out.view(n, r, d)


def relational_message_sum(h: torch.Tensor, graph: RelationalGraph, reduce: str = "mean",
                           backend: str | None = None) -> torch.Tensor:
    """``out[i] = sum_r reduce_{(j -> i) of type r} h[j, r]`` for messages h [N, R, d] -> [N, d].

    With ``h[j, r] = x[j] @ W_r`` this is R-GCN's relational term in transform-then-aggregate
    order. Same guarantees as :func:`relational_aggregate`.
    """
    _check_inputs("h", h, graph, reduce, 3)
    if h.shape[1] != graph.num_relations:
        raise ValueError(f"h must have shape [N, {graph.num_relations}, d], got {tuple(h.shape)}")
    backend = _choose(backend, h.device)
    if backend == "reference":
        from hotspot_erc.reference import relational as ref

        return ref.relational_message_sum(h, graph.edge_index, graph.edge_type, graph.num_nodes, reduce)
    flat = h.view(graph.num_nodes * graph.num_relations, h.shape[2])
    return torch.ops.hotspot_erc.relational_gather(
        flat, graph.node_ptr, graph.col_rel, graph.key, graph.t_rowptr, graph.t_dst, graph.t_key, graph.rowptr,
        reduce == "mean")


@torch.library.register_fake("hotspot_erc::relational_gather")
def _relational_gather_fake(src, ptr, idx, wkey, t_ptr, t_idx, t_wkey, count_ptr, mean):
    torch._check(src.dim() == 2, lambda: "relational_gather: src must be 2-D")
    return src.new_empty((ptr.shape[0] - 1, src.shape[1]))
