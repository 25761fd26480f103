"""Relational aggregation over typed edges (DESIGN §3.5) and the prepared graph it runs on.

:class:`RelationalGraph` sorts a typed edge list once, on the tensors' device and without host
synchronisation, into the CSR structures every layer reuses:

* by (destination, relation) bucket ``b = i * R + r``: ``rowptr`` [N*R+1], source ``col``,
  (source, relation) row ``col_rel`` and bucket ``key`` per sorted edge, and ``node_ptr`` [N+1]
  (the same edges grouped by destination only);
* the transposed structure by (source, relation): ``t_rowptr`` [N*R+1], destination ``t_dst``,
  bucket ``t_key`` and ``t_node_ptr`` [N+1] (backward: a deterministic segment reduction again).

The functional ops all run the one compiled op ``hotspot_erc::relational_aggregate`` (C++ on
CPU, CUDA on GPU) over one of these structures:

* :func:`relational_aggregate` ``Z[i, r] = reduce_{(j->i) of type r} x[j]`` -> [N, R, d];
* :func:`relational_message_sum` ``out[i] = sum_r reduce_{(j->i) of type r} h[j, r]`` for
  per-relation messages h [N, R, d] (the transform-then-aggregate order of ``RGCNConv``);
* :func:`relational_matmul` ``out[i] = sum_r reduce_{(j->i) of type r} x[j] @ W_r`` (R-GCN's
  relational term; a grouped GEMM over non-empty buckets on the CPU).

Invalid ids (out of range node or relation) raise when the graph is built from CPU tensors, or
from CUDA tensors with ``validate=True`` / ``HOTSPOT_ERC_VALIDATE=1`` (one synchronisation, at
build time). Unvalidated CUDA graphs route such edges to a bucket no kernel reads: they are
dropped, never written out of bounds.
"""
from __future__ import annotations

import torch

from hotspot_erc import _ext  # loads the compiled ops
from hotspot_erc.ops import _backend
from hotspot_erc.ops.segment_matmul import gather_kernels
from hotspot_erc.reference import relational as ref

OP = "relational_aggregate"
_KERNEL = "relational_aggregate"  # the compiled op: the structure-parameterised gather
REDUCTIONS = ("mean", "sum")


def _cuda_reason(device: torch.device) -> str:
    return _backend.cuda_ext_reason(_KERNEL)


def _cpu_reason(device: torch.device) -> str:
    return _backend.cpu_ext_reason(_KERNEL)


# relational_message_sum and relational_matmul run the same compiled op: one entry covers them.
SUPPORTS = _backend.register(OP, {"cuda": _cuda_reason, "cpu": _cpu_reason})

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


# (node, relation) buckets of one graph at most: the prepared graph holds int64 pointers over
# every bucket (rowptr and its transpose), and an aggregation writes [N, R, d]; past 2**31
# buckets those alone are 32 GiB, so a bigger count is a wrong argument, not a graph.
MAX_BUCKETS = 2**31 - 1


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, (bool, torch.Tensor)) or not hasattr(type(value), "__index__"):
        raise TypeError(f"{name} must be a Python int, got {type(value).__name__}")
    value = int(value)  # numpy integers are fine
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if value > MAX_BUCKETS:
        raise ValueError(f"{name} must be at most {MAX_BUCKETS}, got {value}")
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
        if num_nodes * num_relations > MAX_BUCKETS:
            raise ValueError(
                f"num_nodes * num_relations = {num_nodes} * {num_relations} (node, relation) buckets exceeds "
                f"{MAX_BUCKETS}: the graph keeps pointers for every bucket; check both sizes")
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
        # Contiguous copies: a strided view (e.g. a transposed [E, 2] list) is read like any other.
        self.edge_index = edge_index.long().contiguous()
        self.edge_type = edge_type.long().contiguous()
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
        self._relation_major = None  # CPU grouped-GEMM layout, built on first use

    def relation_major(self) -> dict:
        """Non-empty buckets ordered by (relation, destination), for the CPU grouped GEMMs of
        :func:`relational_matmul` and ``hotspot_erc::relational_conv``: ``ptr`` [K+1] / ``col`` /
        ``wkey`` (a CSR over the K non-empty buckets), ``dst`` [K] their destination nodes,
        ``ranges`` (python (start, end) per relation) and ``rel_ptr`` (the same as a tensor [R+1]), ``t_idx`` [E] the compact bucket of each edge in transposed order. Built once
        and cached; reads counts on the host (a synchronisation on CUDA)."""
        if self._relation_major is None:
            n, r = self.num_nodes, self.num_relations
            counts = self.in_degree()  # [N, R]
            nonempty = counts.t().reshape(-1) > 0  # relation-major buckets r * N + i
            rm_bucket = nonempty.nonzero().squeeze(1)
            rel, dst = rm_bucket // max(n, 1), rm_bucket % max(n, 1)
            bucket = dst * r + rel  # (dst, type) bucket id of each compact bucket
            starts = self.rowptr.index_select(0, bucket)
            lengths = self.rowptr.index_select(0, bucket + 1) - starts
            ptr = torch.zeros(bucket.numel() + 1, dtype=torch.long, device=self.device)
            torch.cumsum(lengths, 0, out=ptr[1:])
            # edges of compact bucket k, in their CSR order: positions starts[k] + 0..lengths[k]-1
            owner = torch.repeat_interleave(torch.arange(bucket.numel(), device=self.device), lengths)
            pos = starts.index_select(0, owner) + (torch.arange(owner.numel(), device=self.device)
                                                   - ptr.index_select(0, owner))
            compact = torch.full((n * r,), -1, dtype=torch.long, device=self.device)
            compact[bucket] = torch.arange(bucket.numel(), device=self.device)
            per_rel = torch.bincount(rel, minlength=r).tolist()
            bounds = [0]
            for c in per_rel:
                bounds.append(bounds[-1] + c)
            self._relation_major = {
                "ptr": ptr, "col": self.col.index_select(0, pos), "wkey": self.key.index_select(0, pos),
                "dst": dst, "ranges": list(zip(bounds[:-1], bounds[1:])), "num_buckets": bucket.numel(),
                "rel_ptr": torch.tensor(bounds, dtype=torch.long, device=self.device),
                "t_idx": compact.index_select(0, self.t_key).clamp_min(0),
            }
        return self._relation_major

    def compact(self, exact_rows: bool | None = None) -> dict:
        """The structures of ``RGCNConv``'s grouped path, built once on the graph's
        device and cached. Rows of the gathered matrix Z: [0, N) one *root* row per node (node i
        itself), then the K non-empty (node, relation) buckets grouped by relation (relation-
        major), then, on CUDA, padding up to the bound N + min(E, N*R) (sizes from shapes: no
        host sync; on the CPU the row count is exact, reading K there is free). ``exact_rows``
        overrides that choice (tests run the padded layout on CPU tensors); each layout is cached.

        * ``z``: the gather x -> Z as :func:`relational_aggregate`'s CSR arguments (a root row
          has one entry of weight 1; a bucket row its edges, weight 1/degree when the mean is
          asked), with the transposed structure for the gradient;
        * ``group_ptr`` [R+2]: the root group then one group per relation (for segment_matmul);
        * ``nodes``: the sum of each node's rows (its root row and its buckets) as CSR arguments,
          and the transposed structure (the gradient copies a node's row gradient to its rows);
        * ``rows``: M, the number of rows of Z (the fused Triton path never writes Z: M is the
          row count of its products); ``tiles``: the Triton kernels' row tiles (cached per row
          tile size by :func:`relational_conv` and ``RGCNConv``).
        """
        if exact_rows is None:
            exact_rows = self.device.type == "cpu"
        cache = self.__dict__.setdefault("_compacts", {})
        if exact_rows not in cache:
            n, r, dev = self.num_nodes, self.num_relations, self.device
            e = self.num_edges
            counts = self.in_degree().t().reshape(-1)  # relation-major buckets r * N + i
            nonempty = counts > 0
            cidx = torch.cumsum(nonempty.long(), 0) - 1
            per_rel = nonempty.view(r, n).sum(1) if n else torch.zeros(r, dtype=torch.long, device=dev)
            if exact_rows:
                rows = n + int(nonempty.sum())
            else:
                rows = n + min(e, n * r)
            ar_n = torch.arange(n, device=dev)
            group_ptr = torch.zeros(r + 2, dtype=torch.long, device=dev)
            group_ptr[1:] = n
            torch.cumsum(per_rel, 0, out=group_ptr[2:])
            group_ptr[2:] += n
            # row of each relation-major bucket (rows past the last: a dump slot, never read)
            bucket_row = torch.where(nonempty, n + cidx, rows)
            lens = torch.zeros(rows + 1, dtype=torch.long, device=dev)
            lens.scatter_(0, bucket_row, counts)
            lens[:n] = 1
            ptr_z = torch.zeros(rows + 1, dtype=torch.long, device=dev)
            torch.cumsum(lens[:rows], 0, out=ptr_z[1:])
            # edges in relation-major bucket order (stable: CSR order inside a bucket); the
            # invalid edges (past rowptr[-1] in the sorted arrays) last
            valid = torch.arange(e, device=dev) < self.rowptr[-1]
            rm_key = torch.where(valid, (self.key % r) * n + self.key // r, r * n)
            rm_sorted, perm = torch.sort(rm_key, stable=True)
            edge_ok = rm_sorted < r * n
            edge_row = torch.where(edge_ok, bucket_row.index_select(0, rm_sorted.clamp(max=max(r * n - 1, 0))), rows)
            idx_z = torch.cat([ar_n, self.col.index_select(0, perm)])
            wkey_z = torch.cat([ar_n, edge_row])
            src = torch.cat([ar_n, torch.where(edge_ok, self.col.index_select(0, perm), n)])
            _, tperm = torch.sort(src, stable=True)
            t_ptr_z = _bucket_ptr(src, n)
            t_idx_z = wkey_z.index_select(0, tperm)
            # rows of each node: its root row and its bucket rows (padding rows: node n, never read)
            row_node = torch.full((rows + 1,), n, dtype=torch.long, device=dev)
            row_node[:n] = ar_n
            row_node.scatter_(0, bucket_row, torch.arange(r * n, device=dev) % max(n, 1))
            row_node = row_node[:rows].contiguous()
            _, nperm = torch.sort(row_node, stable=True)
            ptr_n = _bucket_ptr(row_node, n)
            t_ptr_n = torch.zeros(rows + 1, dtype=torch.long, device=dev)
            torch.cumsum((row_node < n).long(), 0, out=t_ptr_n[1:])
            zeros = torch.zeros(max(rows, 1), dtype=torch.long, device=dev)
            cache[exact_rows] = {
                "rows": rows, "group_ptr": group_ptr, "tiles": {},
                "z": (ptr_z, idx_z, wkey_z, t_ptr_z, t_idx_z, t_idx_z, ptr_z),
                "nodes": (ptr_n, nperm, zeros[:rows], t_ptr_n, row_node, zeros[:rows], ptr_n),
            }
        return cache[exact_rows]

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
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")


def relational_aggregate(x: torch.Tensor, graph: RelationalGraph, reduce: str = "mean",
                         backend: str | None = None) -> torch.Tensor:
    """``Z[i, r] = reduce_{(j -> i) of type r} x[j]`` (zero without such edges) -> [N, R, d].

    ``reduce`` is ``"mean"`` (per node and relation, as in R-GCN) or ``"sum"``. Differentiable
    w.r.t. ``x`` (twice); deterministic; no host synchronisation.
    """
    _check_inputs("x", x, graph, reduce, 2)
    x = x.contiguous()  # the kernels read rows at unit stride; a strided view is copied
    backend = _choose(backend, x.device)
    n, r, d = graph.num_nodes, graph.num_relations, x.shape[1]
    if backend == "reference":
        return ref.relational_aggregate(x, graph.edge_index, graph.edge_type, n, r, reduce)
    out = torch.ops.hotspot_erc.relational_aggregate(
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
    h = h.contiguous()
    backend = _choose(backend, h.device)
    if backend == "reference":
        return ref.relational_message_sum(h, graph.edge_index, graph.edge_type, graph.num_nodes, reduce)
    flat = h.view(graph.num_nodes * graph.num_relations, h.shape[2])
    return torch.ops.hotspot_erc.relational_aggregate(
        flat, graph.node_ptr, graph.col_rel, graph.key, graph.t_rowptr, graph.t_dst, graph.t_key, graph.rowptr,
        reduce == "mean")


def _relational_aggregate_fake(src, ptr, idx, wkey, t_ptr, t_idx, t_wkey, count_ptr, mean):
    torch._check(src.dim() == 2, lambda: "relational_aggregate: src must be 2-D")
    return src.new_empty((ptr.shape[0] - 1, src.shape[1]))


# Shapes for FakeTensor / torch.compile; the op exists only when the extension loaded (without it
# every call takes the reference path).
if _ext.available() and hasattr(torch.ops.hotspot_erc, _KERNEL):
    torch.library.register_fake(f"hotspot_erc::{_KERNEL}")(_relational_aggregate_fake)


def _relational_conv_fake(x, weight, root, bias, rel_ptr, ptr, col, dst, mean):
    return x.new_empty((x.shape[0], weight.shape[2]))


def _relational_conv_backward_fake(grad, x, weight, root, has_bias, rel_ptr, ptr, col, dst, mean):
    groot = x.new_empty((x.shape[1], weight.shape[2])) if root is not None else x.new_empty(0)
    gb = x.new_empty(weight.shape[2]) if has_bias else x.new_empty(0)
    return x.new_empty(x.shape), weight.new_empty(weight.shape), groot, gb


if _ext.available() and hasattr(torch.ops.hotspot_erc, "relational_conv"):
    torch.library.register_fake("hotspot_erc::relational_conv")(_relational_conv_fake)
    torch.library.register_fake("hotspot_erc::relational_conv_backward")(_relational_conv_backward_fake)


def _triton_conv_reason(device: torch.device) -> str:
    """Empty when the Triton path of :func:`relational_conv` can run on ``device`` (its per-node
    sum and transposed gather are the compiled ``relational_aggregate``)."""
    return _backend.triton_reason(device) or _backend.ext_reason(_KERNEL, "CUDA" if device.type == "cuda" else "CPU")


def relational_conv_available(device: torch.device) -> bool:
    """Whether :func:`relational_conv` has its fused kernel for ``device``: the C++
    ``hotspot_erc::relational_conv`` on the CPU, the Triton gather-GEMM
    (``kernels/gather_segment_matmul.py``) on CUDA."""
    if device.type == "cuda":
        return not _triton_conv_reason(device)
    return _ext.available() and _ext.has_kernel("relational_conv", "CPU")


class _TritonRelationalConv(torch.autograd.Function):
    """``relational_conv`` on CUDA (or CPU tensors under ``TRITON_INTERPRET=1``): the gather fused
    into the grouped GEMM's A-tile load, over the graph's compact structure (sizes are bounds from
    shapes: no host sync).

    Forward, 2 launches: ``P = gather_mm(x)`` [M, out] (root rows times ``root`` plus ``bias``,
    bucket rows gathered from x and times ``W_r``; padding rows not written: nothing reads them),
    then each node's rows summed (``relational_aggregate`` over ``compact()["nodes"]``, root row
    first, then relations in order). Backward, 3 launches: ``dW``/``droot``/``dbias`` regathering A per group (no saved
    Z) against dout's rows; ``Q[row] = dout[node(row)] @ W_gᵀ`` [M, in] (the same kernel, rows
    copied, weights transposed); ``dx`` = the transposed gather of Q (``relational_aggregate`` on
    the compact structure's transpose, with the forward's mean weights). The input gradient goes
    through Q and the existing transposed gather rather than a second fused kernel on a
    transposed compact structure: both write one [rows, in] intermediate, and this one needs no
    second structure per graph (its sorts at preparation, its memory) and reuses a tested kernel.
    Deterministic: no atomics; every sum in a fixed order.
    """

    @staticmethod
    def forward(ctx, x, weight, root, bias, cs, tiles, bm, mean):
        K = gather_kernels()
        ptr_z, idx_z = cs["z"][0], cs["z"][1]
        p = K.forward(x, weight, root, bias, ptr_z, idx_z, cs["group_ptr"], cs["rows"], tiles, bm, mean)
        out = torch.ops.hotspot_erc.relational_aggregate(p, *cs["nodes"], False)
        ctx.save_for_backward(x, weight, root)
        ctx.cs, ctx.tiles, ctx.bm, ctx.mean, ctx.has_bias = cs, tiles, bm, mean, bias is not None
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        K = gather_kernels()
        x, weight, root = ctx.saved_tensors
        cs, mean = ctx.cs, ctx.mean
        g = grad.contiguous()
        row_node = cs["nodes"][4]
        need_x, need_w, need_root, need_b = ctx.needs_input_grad[:4]
        gx = gw = groot = gb = None
        if need_w or need_root or need_b:
            gw, groot, gb = K.weight_grad(x, g, weight, root, ctx.has_bias, cs["z"][0], cs["z"][1], row_node,
                                          cs["group_ptr"], mean)
        if need_x:
            q = K.input_rows(g, weight, root, row_node, cs["group_ptr"], cs["rows"], ctx.tiles, ctx.bm)
            ptr_z, idx_z, wkey_z, t_ptr_z, t_idx_z, t_wkey_z, count_ptr = cs["z"]
            gx = torch.ops.hotspot_erc.relational_aggregate(q, t_ptr_z, t_idx_z, t_wkey_z, ptr_z, idx_z, wkey_z,
                                                            count_ptr, mean)
        return (gx, gw if need_w else None, groot if need_root else None, gb if need_b else None,
                None, None, None, None)


def _triton_relational_conv(x, weight, cs, root, bias, mean):
    K = gather_kernels()
    bm = K.block_m(cs["rows"], cs["group_ptr"].numel() - 1)
    key = ("gather", bm)
    if key not in cs["tiles"]:  # built once per graph and tile size (one launch, no sync)
        cs["tiles"][key] = K.tile_map(cs["group_ptr"], cs["rows"], bm)
    return _TritonRelationalConv.apply(x, weight, root, bias, cs, cs["tiles"][key], bm, mean)


def relational_conv(x: torch.Tensor, weight: torch.Tensor, graph: RelationalGraph, root: torch.Tensor | None = None,
                    bias: torch.Tensor | None = None, reduce: str = "mean", backend: str | None = None) -> torch.Tensor:
    """``out_i = x_i root + bias + Σ_r reduce_{j ∈ N_r(i)} x_j W_r`` over the non-empty (node,
    relation) buckets only, gathered straight into the GEMM's A operand (no [buckets, in]
    matrix in memory). ``weight`` [R, in, out]; ``root`` [in, out] or None; ``bias`` [out] or
    None. Deterministic, no host sync on CUDA.

    ``backend``: None takes the device's kernel; ``"cpu"`` the C++ ``hotspot_erc::relational_conv``
    (CPU tensors: chunks of buckets gathered into a cached buffer, one GEMM each, rows added into
    their nodes; one launch each way, ``csrc/relational_conv/``); ``"triton"`` the Triton
    gather-GEMM (CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1``: 2 launches forward, 3
    backward, see ``_TritonRelationalConv``)."""
    _check_inputs("x", x, graph, reduce, 2)
    _backend.check_tensor("weight", weight, ndim=3, dtypes=(x.dtype,), device=x.device)
    if weight.shape[0] != graph.num_relations or weight.shape[1] != x.shape[1]:
        raise ValueError(f"weight must be [R={graph.num_relations}, in={x.shape[1]}, out], got {tuple(weight.shape)}")
    if root is not None:
        _backend.check_tensor("root", root, ndim=2, dtypes=(x.dtype,), device=x.device)
        if tuple(root.shape) != (x.shape[1], weight.shape[2]):
            raise ValueError(f"root must be [in, out] = [{x.shape[1]}, {weight.shape[2]}], got {tuple(root.shape)}")
    if bias is not None:
        _backend.check_tensor("bias", bias, ndim=1, dtypes=(x.dtype,), device=x.device)
        if bias.shape[0] != weight.shape[2]:
            raise ValueError(f"bias must be [out] = [{weight.shape[2]}], got {tuple(bias.shape)}")
    if backend is None:
        backend = "triton" if x.is_cuda else "cpu"
    if backend == "triton":
        why = _triton_conv_reason(x.device)
        if why:
            raise _backend.BackendUnavailable(f"relational_conv: backend 'triton' is unavailable: {why}")
        return _triton_relational_conv(x.contiguous(), weight.contiguous(), graph.compact(),
                                       None if root is None else root.contiguous(),
                                       None if bias is None else bias.contiguous(), reduce == "mean")
    if backend != "cpu":
        raise ValueError(f"relational_conv: backend must be None, 'cpu' or 'triton', got {backend!r}")
    if x.is_cuda or not relational_conv_available(x.device):
        raise _backend.BackendUnavailable(f"hotspot_erc::relational_conv has no kernel for {x.device.type} tensors "
                                          f"in this build")
    rm = graph.relation_major()
    return torch.ops.hotspot_erc.relational_conv(x.contiguous(), weight, root, bias, rm["rel_ptr"], rm["ptr"],
                                                 rm["col"], rm["dst"], reduce == "mean")


# ----------------------------------------------------------------------------- fused R-GCN term

def _gather(src, ptr, idx, wkey, t_ptr, t_idx, t_wkey, count_ptr, mean):
    return torch.ops.hotspot_erc.relational_aggregate(src, ptr, idx, wkey, t_ptr, t_idx, t_wkey, count_ptr, mean)


class _CompactRelationalMatmul(torch.autograd.Function):
    """CPU: ``out = sum_r agg_r(x) W_r`` as a grouped GEMM over the non-empty buckets only.

    A dense [N, R*in] @ [R*in, out] multiplies every (node, relation) bucket, also the empty ones
    (two thirds of them in a conversation graph, where a node has in-edges of ~4 of its 12
    relations). Here relation r's non-empty buckets are gathered into Z_r [n_r, in], multiplied by
    W_r and added into their (distinct) destination rows: GEMM work drops to the non-empty
    share, in all three GEMMs of forward and backward, and no [N, R, in] buffer exists. The
    per-relation row counts are read on the host, which is free on the CPU (on CUDA it would be a
    synchronisation, so CUDA takes the dense path). Deterministic: every sum has a fixed order.
    """

    @staticmethod
    def forward(ctx, x, weight, graph, mean):
        rm = graph.relation_major()
        n, o = graph.num_nodes, weight.shape[2]
        out = torch.zeros(n, o, dtype=x.dtype, device=x.device)
        # All of Z (K rows, no more than the edges) is gathered once into one buffer and kept for
        # the weight gradient: cheaper than gathering it again in backward.
        z = x.new_empty(rm["num_buckets"], x.shape[1])
        for r, (a, b) in enumerate(rm["ranges"]):
            if b > a:
                z[a:b] = _gather(x, rm["ptr"][a:b + 1], rm["col"], rm["wkey"], graph.t_node_ptr, graph.t_key,
                                 graph.t_key, graph.rowptr, mean)
                # destinations within one relation are distinct: no two rows collide
                out.index_add_(0, rm["dst"][a:b], z[a:b] @ weight[r])
        ctx.save_for_backward(weight, z if ctx.needs_input_grad[1] else None)
        ctx.graph, ctx.mean = graph, mean
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        weight, z = ctx.saved_tensors
        graph, mean = ctx.graph, ctx.mean
        rm = graph.relation_major()
        g = grad_out.contiguous()
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_w = torch.zeros_like(weight) if need_w else None
        grad_z = g.new_empty(rm["num_buckets"], weight.shape[1]) if need_x else None
        for r, (a, b) in enumerate(rm["ranges"]):
            if b == a:
                continue
            g_r = g.index_select(0, rm["dst"][a:b])  # [n_r, out]
            if need_w:
                torch.mm(z[a:b].t(), g_r, out=grad_w[r])
            if need_x:
                torch.mm(g_r, weight[r].t(), out=grad_z[a:b])
        grad_x = None
        if need_x:
            # grad_x[j] = sum over j's out-edges of w * grad_z[bucket]: the transposed gather
            grad_x = _gather(grad_z, graph.t_node_ptr, rm["t_idx"], graph.t_key, rm["ptr"], rm["col"], rm["wkey"],
                             graph.rowptr, mean)
        return grad_x, grad_w, None, None


def relational_matmul(x: torch.Tensor, weight: torch.Tensor, graph: RelationalGraph, reduce: str = "mean",
                      backend: str | None = None) -> torch.Tensor:
    """R-GCN's relational term ``out[i] = sum_r reduce_{(j -> i) of type r} x[j] @ weight[r]`` -> [N, out].

    ``weight`` is [R, in, out]. On the CPU (eager) it is a grouped GEMM over the non-empty
    (node, relation) buckets (see ``_CompactRelationalMatmul``); on CUDA, and under torch.compile,
    :func:`relational_aggregate` followed by one dense GEMM (no host synchronisation).
    """
    _check_inputs("x", x, graph, reduce, 2)
    x = x.contiguous()
    _backend.check_tensor("weight", weight, ndim=3, dtypes=(x.dtype,), device=x.device)
    if weight.shape[:2] != (graph.num_relations, x.shape[1]):
        raise ValueError(f"weight must have shape [{graph.num_relations}, {x.shape[1]}, out], got "
                         f"{tuple(weight.shape)}")
    backend = _choose(backend, x.device)
    n, r, i, o = graph.num_nodes, graph.num_relations, x.shape[1], weight.shape[2]
    if backend == "cpu" and not torch.compiler.is_compiling():
        return _CompactRelationalMatmul.apply(x, weight, graph, reduce == "mean")
    z = relational_aggregate(x, graph, reduce, backend=backend)
    return z.view(n, r * i) @ weight.reshape(r * i, o)
