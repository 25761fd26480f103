"""``graph_attention``: multi-head attention of every destination node over its incoming edges.

Semantics (DESIGN §3.8): for destination i and head h, over the edges j -> i,
``alpha_ij = softmax_j(q_i . (k_j + e_ij) * scale)`` and ``out_i = sum_j alpha_ij m_ij (v_j + e_ij)``,
with ``e`` an optional edge embedding and ``m`` an optional multiplier (dropout's scaled keep-mask).
A node without incoming edges gets zeros (and zero gradients), never NaN; duplicate edges count
as often as they appear.

Edges grouped by destination make each node's incoming edges one key segment, so this is
varlen attention whose keys and values are rows gathered through the source index: no
[E, H, D] tensor is ever built. :class:`AttentionGraph` holds that grouping and its transpose
(edges grouped by source), built once on the tensors' device without host synchronisation.

Backends: ``"cpu"`` the compiled kernels (``csrc/graph_attention``: one task per destination,
then per source in the backward); ``"triton"`` (CUDA tensors, or CPU tensors under
``TRITON_INTERPRET=1``) :mod:`hotspot_erc.kernels.graph_attention`; ``"reference"`` the plain
PyTorch of :mod:`hotspot_erc.reference.graph_attention`. The backward is deterministic on every
backend: dq per destination; dk and dv per source through the transposed structure, with the
probabilities recomputed from the saved log-sum-exp; no float atomics.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from hotspot_erc import _ext  # noqa: F401  (loads the compiled ops)
from hotspot_erc.ops import _backend
from hotspot_erc.ops.relational import _bucket_ptr
from hotspot_erc.reference.graph_attention import graph_attention_reference

OP = "graph_attention"
_KERNEL = "graph_attention_forward"


def _cpu_reason(device: torch.device) -> str:
    if device.type != "cpu":
        return "the compiled kernel is for CPU tensors"
    return _backend.cpu_ext_reason(_KERNEL)


SUPPORTS = _backend.register(OP, {"triton": _backend.triton_reason, "cpu": _cpu_reason})

# What the build offers is fixed once the extension is loaded; torch.compile reads this instead of
# tracing the dispatcher queries in _backend.choose.
_CPU_KERNEL = not _cpu_reason(torch.device("cpu"))


def _choose(backend: str | None, q: torch.Tensor) -> str:
    if torch.compiler.is_compiling():
        if backend is not None:
            return backend
        if q.device.type == "cuda":
            return "triton" if q.dtype != torch.float64 else "reference"
        return "cpu" if _CPU_KERNEL else "reference"
    return _backend.choose(OP, backend, q.device, SUPPORTS, dtype=q.dtype, head_dim=q.shape[2])


class AttentionGraph:
    """Edges prepared for :func:`graph_attention`; build once per graph, reuse in every layer.

    Args:
        edge_index: [2, E] int64/int32, row 0 = source j, row 1 = destination i (PyG's convention).
        num_src: number of source nodes (rows of k and v).
        num_dst: number of destination nodes (rows of q); default ``num_src``.
        validate: check that ids are in range. ``None``: always for CPU tensors, for CUDA tensors
            only when ``HOTSPOT_ERC_VALIDATE=1`` (the check synchronises once).

    Holds, by destination (stable order): ``rowptr`` [N_dst+1], the source ``col`` [E] and the
    original edge id ``eid`` [E] of each edge; by source: ``t_rowptr`` [N_src+1], ``t_dst`` and
    ``t_eid``. Per-edge tensors (edge embeddings, masks, the returned weights) stay in the caller's
    edge order; the kernels read them through the ids.
    """

    def __init__(self, edge_index: torch.Tensor, num_src: int, num_dst: int | None = None,
                 validate: bool | None = None):
        num_src = _count("num_src", num_src)
        num_dst = num_src if num_dst is None else _count("num_dst", num_dst)
        _backend.check_tensor("edge_index", edge_index, ndim=2, dtypes=_backend.INDEX_DTYPES)
        if edge_index.shape[0] != 2:
            raise ValueError(f"edge_index must have shape [2, E], got {tuple(edge_index.shape)}")
        self.num_src, self.num_dst = num_src, num_dst
        self.device = edge_index.device
        self.edge_index = edge_index.long()
        src, dst = self.edge_index[0], self.edge_index[1]
        bad = (src < 0) | (src >= num_src) | (dst < 0) | (dst >= num_dst)
        if validate is None:
            validate = self.device.type == "cpu" or _backend.validate_values()
        if validate and not torch.compiler.is_compiling() and bool(bad.any()):
            e = int(bad.nonzero()[0, 0])
            raise ValueError(f"edge_index column {e} is out of range: source {int(src[e])} must lie in "
                             f"[0, {num_src}) and destination {int(dst[e])} in [0, {num_dst})")
        # Unvalidated bad edges (CUDA) go to a pointer range no kernel reads: dropped, never
        # read or written out of bounds.
        key = torch.where(bad, num_dst, dst)
        tkey = torch.where(bad, num_src, src)
        # Stable sorts keep each node's edges in input order: sums are reproducible run to run.
        _, perm = torch.sort(key, stable=True)
        _, tperm = torch.sort(tkey, stable=True)
        self.rowptr = _bucket_ptr(key, num_dst)
        self.col = torch.where(bad, 0, src).index_select(0, perm)
        self.eid = perm
        self.t_rowptr = _bucket_ptr(tkey, num_src)
        self.t_dst = torch.where(bad, 0, dst).index_select(0, tperm)
        self.t_eid = tperm

    @property
    def num_edges(self) -> int:
        return self.edge_index.shape[1]

    def structure(self) -> tuple[torch.Tensor, ...]:
        return self.rowptr, self.col, self.eid, self.t_rowptr, self.t_dst, self.t_eid

    def __repr__(self) -> str:
        return (f"AttentionGraph(num_src={self.num_src}, num_dst={self.num_dst}, "
                f"num_edges={self.num_edges}, device={self.device})")


def _count(name: str, value) -> int:
    if isinstance(value, (bool, torch.Tensor)) or not hasattr(type(value), "__index__"):
        raise TypeError(f"{name} must be a Python int, got {type(value).__name__}")
    if int(value) < 0:
        raise ValueError(f"{name} must be >= 0, got {int(value)}")
    return int(value)


def stat_dtype(dtype: torch.dtype) -> torch.dtype:
    """dtype of the log-sum-exp, the returned weights and the mask: float32, float64 for float64."""
    return torch.float64 if dtype == torch.float64 else torch.float32


# ----------------------------------------------------------------------------- registered ops

def _triton_kernels():
    # Imported on first use: TRITON_INTERPRET is read when the @triton.jit functions are defined.
    from hotspot_erc.kernels import graph_attention as kernels

    return kernels


@torch.library.custom_op("hotspot_erc::graph_attention", mutates_args=())
def _fwd_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, edge: Optional[torch.Tensor],
            mask: Optional[torch.Tensor], rowptr: torch.Tensor, col: torch.Tensor, eid: torch.Tensor,
            t_rowptr: torch.Tensor, t_dst: torch.Tensor, t_eid: torch.Tensor, scale: float, need_alpha: bool,
            backend: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(out [N_dst, H, D], lse [N_dst, H], alpha [E, H] or [0, H]); lse is -inf for nodes
    without incoming edges. The transposed structure is an input only so that the backward finds
    it among the saved tensors."""
    if backend == "triton":
        return _triton_kernels().forward(q, k, v, edge, mask, rowptr, col, eid, scale, need_alpha)
    out, lse, alpha = torch.ops.hotspot_erc.graph_attention_forward(q, k, v, edge, mask, rowptr, col, eid, scale,
                                                                     need_alpha)
    return out, lse, alpha


@_fwd_op.register_fake
def _(q, k, v, edge, mask, rowptr, col, eid, t_rowptr, t_dst, t_eid, scale, need_alpha, backend):
    sd = stat_dtype(q.dtype)
    return (q.new_empty(q.shape), q.new_empty(q.shape[:2], dtype=sd),
            q.new_empty((col.shape[0] if need_alpha else 0, q.shape[1]), dtype=sd))


@torch.library.custom_op("hotspot_erc::graph_attention_bwd", mutates_args=())
def _bwd_op(grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
            edge: Optional[torch.Tensor], mask: Optional[torch.Tensor], out: torch.Tensor, lse: torch.Tensor,
            rowptr: torch.Tensor, col: torch.Tensor, eid: torch.Tensor, t_rowptr: torch.Tensor,
            t_dst: torch.Tensor, t_eid: torch.Tensor, scale: float, need_edge_grad: bool,
            backend: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dq, dk, dv, dedge); dedge is [0] unless the edge embedding needs its gradient."""
    if backend == "triton":
        dq, dk, dv, de = _triton_kernels().backward(grad_out, q, k, v, edge, mask, out, lse, rowptr, col, eid,
                                                    t_rowptr, t_dst, t_eid, scale, need_edge_grad)
        return dq, dk, dv, (de if de is not None else q.new_empty(0))
    dq, dk, dv, de = torch.ops.hotspot_erc.graph_attention_backward(
        grad_out, q, k, v, edge, mask, out, lse, rowptr, col, eid, t_rowptr, t_dst, t_eid, scale, need_edge_grad)
    return dq, dk, dv, de


@_bwd_op.register_fake
def _(grad_out, q, k, v, edge, mask, out, lse, rowptr, col, eid, t_rowptr, t_dst, t_eid, scale, need_edge_grad,
      backend):
    de = edge.new_empty(edge.shape) if (edge is not None and need_edge_grad) else q.new_empty(0)
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape), de


def _setup_context(ctx, inputs, output):
    q, k, v, edge, mask, rowptr, col, eid, t_rowptr, t_dst, t_eid, scale, _need_alpha, backend = inputs
    out, lse, alpha = output
    ctx.has_edge, ctx.has_mask = edge is not None, mask is not None
    ctx.save_for_backward(q, k, v, edge if edge is not None else q.new_empty(0),
                          mask if mask is not None else q.new_empty(0), out, lse, rowptr, col, eid, t_rowptr,
                          t_dst, t_eid)
    ctx.scale, ctx.backend = scale, backend
    ctx.mark_non_differentiable(lse, alpha)
    ctx.set_materialize_grads(False)


def _backward(ctx, grad_out, _grad_lse, _grad_alpha):
    q, k, v, edge, mask, out, lse, rowptr, col, eid, t_rowptr, t_dst, t_eid = ctx.saved_tensors
    if grad_out is None:
        grad_out = torch.zeros_like(out)
    edge = edge if ctx.has_edge else None
    mask = mask if ctx.has_mask else None
    need_edge_grad = ctx.has_edge and ctx.needs_input_grad[3]
    dq, dk, dv, de = _bwd_op(grad_out.contiguous(), q, k, v, edge, mask, out, lse, rowptr, col, eid, t_rowptr, t_dst,
                             t_eid, ctx.scale, need_edge_grad, ctx.backend)
    return (dq, dk, dv, de if need_edge_grad else None) + (None,) * 10


_fwd_op.register_autograd(_backward, setup_context=_setup_context)


# ----------------------------------------------------------------------------- public API

def _rows(t: torch.Tensor) -> torch.Tensor:
    """``t`` itself when each row's [H, D] block is dense (any row stride: column slices of a
    fused projection are read in place), else a contiguous copy."""
    if t.shape[0] and t[0].is_contiguous() and (t.shape[0] == 1 or t.stride(0) >= t[0].numel()):
        return t
    return t.contiguous()


def _check(q, k, v, graph, edge, edge_mask, scale) -> None:
    _backend.check_qkv(q, k, v, key_rows="N_src", head_dim="D")
    if graph.device != q.device:
        raise ValueError(f"the graph must be on q's device {q.device}, got {graph.device}")
    if graph.num_src != k.shape[0] or graph.num_dst != q.shape[0]:
        raise ValueError(f"the graph has {graph.num_src} source and {graph.num_dst} destination nodes, but k has "
                         f"{k.shape[0]} rows and q {q.shape[0]}")
    e = graph.num_edges
    if edge is not None:
        _backend.check_tensor("edge", edge, ndim=3, dtypes=(q.dtype,), device=q.device)
        if edge.shape != (e,) + tuple(q.shape[1:]):
            raise ValueError(f"edge must be [E, H, D] = {(e,) + tuple(q.shape[1:])}, got {tuple(edge.shape)}")
    if edge_mask is not None:
        _backend.check_tensor("edge_mask", edge_mask, ndim=2, dtypes=_backend.FLOAT_DTYPES, device=q.device)
        if edge_mask.shape != (e, q.shape[1]):
            raise ValueError(f"edge_mask must be [E, H] = {(e, q.shape[1])}, got {tuple(edge_mask.shape)}")
        if edge_mask.requires_grad:
            raise ValueError("edge_mask takes no gradient (it is a dropout mask): pass a detached tensor")
    if scale is not None and not (isinstance(scale, (int, float)) and math.isfinite(scale)):
        raise ValueError(f"scale must be a finite number or None, got {scale!r}")


def graph_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, graph, edge: torch.Tensor | None = None,
                    edge_mask: torch.Tensor | None = None, scale: float | None = None, return_alpha: bool = False,
                    backend: str | None = None):
    """Attention of every destination node over its incoming edges.

    Args:
        q: [N_dst, H, D] queries of the destination nodes.
        k, v: [N_src, H, D] keys and values of the source nodes.
        graph: an :class:`AttentionGraph` (reuse it across layers), or an ``edge_index`` [2, E]
            (row 0 = source, row 1 = destination), prepared on the fly.
        edge: optional [E, H, D] edge embedding, in edge_index order, added to keys and values.
        edge_mask: optional [E, H] multiplier of each weight in the message (e.g. dropout's
            scaled keep-mask); no gradient.
        scale: score scale, default ``D ** -0.5``.
        return_alpha: also return the softmax weights [E, H] (before ``edge_mask``), in
            edge_index order. They carry no gradient.
        backend: None (auto: Triton for CUDA tensors, the compiled kernel for CPU tensors),
            ``"triton"``, ``"cpu"`` or ``"reference"``.

    Returns:
        ``out`` [N_dst, H, D] in q's dtype (zeros for nodes without incoming edges), or
        ``(out, alpha)`` with ``return_alpha``.
    """
    if not isinstance(graph, AttentionGraph):
        if not isinstance(graph, torch.Tensor):
            raise TypeError(f"graph must be an AttentionGraph or an edge_index tensor, got {type(graph).__name__}")
        _backend.check_tensor("q", q, ndim=3, dtypes=_backend.FLOAT_DTYPES)
        _backend.check_tensor("k", k, ndim=3)
        graph = AttentionGraph(graph.to(q.device) if graph.device != q.device else graph, k.shape[0], q.shape[0])
    _check(q, k, v, graph, edge, edge_mask, scale)
    name = _choose(backend, q)
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[2]) if q.shape[2] else 1.0
    scale = float(scale)
    if name == "reference":
        out, alpha = graph_attention_reference(q, k, v, graph.edge_index, edge, edge_mask, scale)
        return (out, alpha.detach()) if return_alpha else out
    sd = stat_dtype(q.dtype)
    mask = None if edge_mask is None else edge_mask.to(sd).contiguous()
    edge = None if edge is None else edge.contiguous()
    out, _lse, alpha = _fwd_op(_rows(q), _rows(k), _rows(v), edge, mask, *graph.structure(), scale,
                               bool(return_alpha), name)
    return (out, alpha) if return_alpha else out
