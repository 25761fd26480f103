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

from hotspot_erc import _ext  # loads the compiled ops
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


def _bucket_ptr(key: torch.Tensor, num_buckets: int) -> torch.Tensor:
    """CSR pointer [num_buckets+1] of bucket ids in [0, num_buckets] (the last one is the
    discarded bucket of invalid edges). Integer scatter-add: exact, and unlike ``bincount`` it
    needs no device-to-host read of the largest id."""
    counts = torch.zeros(num_buckets + 1, dtype=torch.long, device=key.device)
    counts.scatter_add_(0, key, torch.ones_like(key))
    ptr = torch.zeros(num_buckets + 1, dtype=torch.long, device=key.device)
    torch.cumsum(counts[:num_buckets], 0, out=ptr[1:])
    return ptr


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
        # Stable sorts keep edges of one bucket in input order: sums are reproducible run to run.
        key_sorted, perm = torch.sort(key, stable=True)
        self.rowptr = _bucket_ptr(key, nb)
        # index_select, not advanced indexing: the faster 1-D gather on CPU
        self.col = safe_src.index_select(0, perm)
        self.key = torch.where(key_sorted == nb, 0, key_sorted)
        self.col_rel = self.col * num_relations + safe_typ.index_select(0, perm)
        self.node_ptr = self.rowptr[::num_relations].contiguous()
        _, tperm = torch.sort(tkey, stable=True)
        self.t_rowptr = _bucket_ptr(tkey, nb)
        self.t_dst = safe_dst.index_select(0, tperm)
        self.t_key = torch.where(bad.index_select(0, tperm), 0, key.index_select(0, tperm))
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


def _relational_gather_fake(src, ptr, idx, wkey, t_ptr, t_idx, t_wkey, count_ptr, mean):
    torch._check(src.dim() == 2, lambda: "relational_gather: src must be 2-D")
    return src.new_empty((ptr.shape[0] - 1, src.shape[1]))


# Shapes for FakeTensor / torch.compile; the op exists only when the extension loaded (without it
# every call takes the reference path).
if _ext.available() and hasattr(torch.ops.hotspot_erc, _KERNEL):
    torch.library.register_fake(f"hotspot_erc::{_KERNEL}")(_relational_gather_fake)


# ----------------------------------------------------------------------------- fused R-GCN term

_BLOCK_BYTES = 4 * 2**20  # per-block intermediate: stays in cache and in malloc's reusable heap


def _block_rows(bytes_per_row: int) -> int:
    return max(1, _BLOCK_BYTES // max(bytes_per_row, 1))


def _gather(src, ptr, idx, wkey, t_ptr, t_idx, t_wkey, count_ptr, mean):
    return torch.ops.hotspot_erc.relational_gather(src, ptr, idx, wkey, t_ptr, t_idx, t_wkey, count_ptr, mean)


class _BlockedRelationalMatmul(torch.autograd.Function):
    """CPU: ``out = sum_r agg_r(x) W_r`` one block of destination nodes at a time.

    The [N, R, in] aggregate never exists in full: each block's Z (a few MiB) is gathered and
    multiplied straight into its rows of ``out``; backward recomputes the blocks for the weight
    gradient (summed block after block: deterministic) and gathers the output gradient through
    the transposed structure, block by source node, for the input gradient. Large fresh buffers
    cost page faults on every call on the CPU; these blocks are reused from the heap.
    """

    @staticmethod
    def forward(ctx, x, weight, graph, mean):
        n, r, i, o = graph.num_nodes, graph.num_relations, x.shape[1], weight.shape[2]
        wf = weight.reshape(r * i, o)
        out = x.new_empty(n, o)
        rows = _block_rows(r * i * x.element_size())
        for a in range(0, n, rows):
            b = min(n, a + rows)
            z = _gather(x, graph.rowptr[a * r:b * r + 1], graph.col, graph.key, graph.t_node_ptr, graph.t_key,
                        graph.t_key, graph.rowptr, mean)
            torch.mm(z.view(b - a, r * i), wf, out=out[a:b])
        ctx.save_for_backward(x, weight)
        ctx.graph, ctx.mean = graph, mean
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        graph, mean = ctx.graph, ctx.mean
        n, r, i, o = graph.num_nodes, graph.num_relations, x.shape[1], weight.shape[2]
        g = grad_out.contiguous()
        grad_x = grad_w = None
        if ctx.needs_input_grad[1]:
            gw = torch.zeros(r * i, o, dtype=weight.dtype, device=weight.device)
            rows = _block_rows(r * i * x.element_size())
            for a in range(0, n, rows):
                b = min(n, a + rows)
                z = _gather(x, graph.rowptr[a * r:b * r + 1], graph.col, graph.key, graph.t_node_ptr, graph.t_key,
                            graph.t_key, graph.rowptr, mean)
                gw.addmm_(z.view(b - a, r * i).t(), g[a:b])
            grad_w = gw.view(r, i, o)
        if ctx.needs_input_grad[0]:
            # grad_x[j] = sum_r G[j, r] W_r^T with G[j, r] = sum_{(j->i) of type r} w * grad_out[i]
            wt = weight.transpose(1, 2).reshape(r * o, i)
            grad_x = x.new_empty(n, i)
            rows = _block_rows(r * o * g.element_size())
            for a in range(0, n, rows):
                b = min(n, a + rows)
                gz = _gather(g, graph.t_rowptr[a * r:b * r + 1], graph.t_dst, graph.t_key, graph.node_ptr,
                             graph.col_rel, graph.key, graph.rowptr, mean)
                torch.mm(gz.view(b - a, r * o), wt, out=grad_x[a:b])
        return grad_x, grad_w, None, None


def relational_matmul(x: torch.Tensor, weight: torch.Tensor, graph: RelationalGraph, reduce: str = "mean",
                      backend: str | None = None) -> torch.Tensor:
    """R-GCN's relational term ``out[i] = sum_r reduce_{(j -> i) of type r} x[j] @ weight[r]`` -> [N, out].

    ``weight`` is [R, in, out]. On the CPU (eager) this runs blocked over destination nodes
    (no [N, R, in] intermediate); on CUDA, and under torch.compile, it is
    :func:`relational_aggregate` followed by one GEMM.
    """
    _check_inputs("x", x, graph, reduce, 2)
    _backend.check_tensor("weight", weight, ndim=3, dtypes=(x.dtype,), device=x.device)
    if weight.shape[:2] != (graph.num_relations, x.shape[1]):
        raise ValueError(f"weight must have shape [{graph.num_relations}, {x.shape[1]}, out], got "
                         f"{tuple(weight.shape)}")
    backend = _choose(backend, x.device)
    n, r, i, o = graph.num_nodes, graph.num_relations, x.shape[1], weight.shape[2]
    if backend == "cpu" and not torch.compiler.is_compiling():
        return _BlockedRelationalMatmul.apply(x, weight, graph, reduce == "mean")
    z = relational_aggregate(x, graph, reduce, backend=backend)
    return z.view(n, r * i) @ weight.reshape(r * i, o)
