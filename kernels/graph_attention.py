"""Triton kernels for multi-head attention over the incoming edges of a graph (DESIGN §3.8).

For destination node i, head h, over its incoming edges e = (j → i):

    s_e = scale · q_i · (k_j + E_e)            (E_e: optional edge embedding [H, D])
    alpha_e = softmax of s over i's incoming edges,  lse_i = log Σ exp(s_e)
    out_i = Σ_e alpha_e · m_e · (v_j + E_e)   (m_e: optional multiplier [E, H], dropout's mask)

This is varlen attention (:mod:`.varlen_attention`) whose key segment of node i is the set of
gathered rows ``k[col[rowptr[i]:rowptr[i+1]]]``: the [E, H, D] gathered keys and values are
never materialised. Each query segment holds a single row, so there is no ``tl.dot`` to feed:
scores are elementwise products reduced over D, which also means every dtype runs the same
float32 arithmetic (loads are upcast at once; the interpreter, which has no bfloat16
arithmetic, needs nothing special).

Graph structure (built by the caller, int64):

* ``rowptr`` [N_dst+1], ``col`` [E], ``eid`` [E]: the edges sorted stably by destination, as
  CSR; ``col`` their sources, ``eid`` their original ids.
* ``t_rowptr`` [N_src+1], ``t_dst`` [E], ``t_eid`` [E]: the same for the edges sorted by source
  (the transposed structure the key/value gradients walk).

Edge-level tensors (the embedding, the multiplier, ``alpha``, the embedding's gradient) stay in
the original edge order and are addressed through ``eid``/``t_eid``, so no caller ever permutes
a copy of them.

Scheduling: one program per (node, head), walking the node's edges in tiles of ``BLOCK_E``
gathered rows with an online softmax (float32 statistics and accumulators). Node degrees are
read on the device, so nothing synchronises with the host and the grid comes from shapes alone.
A node without incoming edges runs no tile: out = 0, lse = -inf, dq = 0 (and a source without
out-edges gets dk = dv = 0), never NaN. One head per program keeps the per-head reductions
plain 1-D sums and pads only D (100 → 128) rather than H·D; the price, reloading each edge's
two ids once per head, is 16 bytes against the 2·D·b bytes of the rows it gathers.

Backward (the softmax gradient of attention, with the multiplier inside the message):

    δ_i = do_i · out_i,  p_e = exp(s_e − lse_i),  g_e = m_e · do_i · (v_j + E_e)
    ds_e = p_e · (g_e − δ_i),  PM_e = p_e · m_e
    dq_i = scale · Σ_e ds_e (k_j + E_e)             per destination
    dE_e = PM_e · do_i + scale · ds_e · q_i         per edge (E_e is in both key and value)
    dk_j = scale · Σ_{e out of j} ds_e · q_dst(e),  dv_j = Σ_{e out of j} PM_e · do_dst(e)

Two launches and no atomics, so the result is deterministic: the per-destination kernel
computes δ, dq and dE and leaves ds and PM per edge in two [E, H] float32 scratch arrays; the
per-source kernel walks each source's out-edges through the transposed structure and sums dk
and dv in registers in a fixed order.

Nothing here validates arguments (the ops layer does).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._launch import on_device, triton_interpret

LOG2E = 1.4426950408889634


# Addressing: node and edge ids are loaded as (or cast to) int64 before they multiply a row
# stride, since N·H·D and E·H·D exceed 2**31 elements on large graphs; offsets inside a row
# (head, feature) stay small.


@triton.jit
def _segment(PTR, node):
    """First edge position (int64) and edge count (int32) of ``node``'s CSR segment: the
    count drives a loop over tiles, and an int32 trip count keeps that loop's induction
    variable 32-bit."""
    start = tl.load(PTR + node).to(tl.int64)
    count = (tl.load(PTR + node + 1).to(tl.int64) - start).to(tl.int32)
    return start, count


@triton.jit
def _rows(X, rows, stride_n, offs_d, stride_d, mask):
    """Gathered rows ``X[rows]`` of one head as a float32 [BLOCK_E, BLOCK_D] tile (zeros where
    masked, so padded lanes add nothing to the reductions over edges)."""
    ptrs = X + rows[:, None] * stride_n + offs_d[None, :] * stride_d
    return tl.load(ptrs, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _fwd_kernel(
    Q, K, V, EDGE, MASK, OUT, LSE, ALPHA, ROWPTR, COL, EID,
    stride_qn, stride_qh, stride_qd, stride_kn, stride_kh, stride_kd, stride_vn, stride_vh, stride_vd,
    stride_en, stride_eh, stride_ed, stride_mn, stride_mh,
    stride_on, stride_oh, stride_od, stride_ln, stride_lh, stride_an, stride_ah,
    head_dim, qk_scale,
    HAS_EDGE: tl.constexpr, HAS_MASK: tl.constexpr, NEED_ALPHA: tl.constexpr,
    BLOCK_E: tl.constexpr, BLOCK_D: tl.constexpr,
):
    node = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1).to(tl.int64)
    start, degree = _segment(ROWPTR, node)
    offs_e = tl.arange(0, BLOCK_E)
    offs_d = tl.arange(0, BLOCK_D)
    d_mask = offs_d < head_dim
    K += h * stride_kh
    V += h * stride_vh
    EDGE += h * stride_eh
    MASK += h * stride_mh
    ALPHA += h * stride_ah

    q = tl.load(Q + node * stride_qn + h * stride_qh + offs_d * stride_qd, mask=d_mask, other=0.0).to(tl.float32)
    # qk_scale carries log2(e): the softmax runs on exp2 and m_i, lse2 are in base 2.
    m_i = tl.full([], float("-inf"), tl.float32)
    l_i = tl.full([], 0.0, tl.float32)
    acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    for off in range(0, degree, BLOCK_E):
        e_mask = off + offs_e < degree
        pos = start + off + offs_e
        src = tl.load(COL + pos, mask=e_mask, other=0).to(tl.int64)
        ids = tl.load(EID + pos, mask=e_mask, other=0).to(tl.int64)
        rd_mask = e_mask[:, None] & d_mask[None, :]
        k = _rows(K, src, stride_kn, offs_d, stride_kd, rd_mask)
        v = _rows(V, src, stride_vn, offs_d, stride_vd, rd_mask)
        if HAS_EDGE:
            emb = _rows(EDGE, ids, stride_en, offs_d, stride_ed, rd_mask)
            k += emb
            v += emb
        s = tl.sum(q[None, :] * k, 1) * qk_scale
        s = tl.where(e_mask, s, float("-inf"))
        # Every tile holds at least one real edge, so m_new is finite and the first tile's
        # correction exp2(-inf) is an exact 0.
        m_new = tl.maximum(m_i, tl.max(s, 0))
        p = tl.math.exp2(s - m_new)
        corr = tl.math.exp2(m_i - m_new)
        # The denominator sums the plain probabilities: the multiplier scales messages only.
        l_i = l_i * corr + tl.sum(p, 0)
        if HAS_MASK:
            p *= tl.load(MASK + ids * stride_mn, mask=e_mask, other=0.0).to(tl.float32)
        acc = acc * corr + tl.sum(p[:, None] * v, 0)
        m_i = m_new

    has_edges = l_i > 0.0
    denom = tl.where(has_edges, l_i, 1.0)
    out = acc / denom
    tl.store(OUT + node * stride_on + h * stride_oh + offs_d * stride_od, out.to(OUT.dtype.element_ty), mask=d_mask)
    lse = tl.where(has_edges, (m_i + tl.math.log2(denom)) * 0.6931471805599453, float("-inf"))
    tl.store(LSE + node * stride_ln + h * stride_lh, lse)

    if NEED_ALPHA:
        # The weights need the final statistics, so this second pass regathers the keys. It
        # cannot read back scores stored by the first pass instead: a program's own global
        # stores are not guaranteed visible to its other threads without a barrier.
        for off in range(0, degree, BLOCK_E):
            e_mask = off + offs_e < degree
            pos = start + off + offs_e
            src = tl.load(COL + pos, mask=e_mask, other=0).to(tl.int64)
            ids = tl.load(EID + pos, mask=e_mask, other=0).to(tl.int64)
            rd_mask = e_mask[:, None] & d_mask[None, :]
            k = _rows(K, src, stride_kn, offs_d, stride_kd, rd_mask)
            if HAS_EDGE:
                k += _rows(EDGE, ids, stride_en, offs_d, stride_ed, rd_mask)
            s = tl.sum(q[None, :] * k, 1) * qk_scale
            alpha = tl.math.exp2(s - m_i) / denom
            tl.store(ALPHA + ids * stride_an, alpha, mask=e_mask)


@triton.jit
def _bwd_dst_kernel(
    Q, K, V, EDGE, MASK, OUT, DO, LSE, DQ, DEDGE, PM, DS, ROWPTR, COL, EID,
    stride_qn, stride_qh, stride_qd, stride_kn, stride_kh, stride_kd, stride_vn, stride_vh, stride_vd,
    stride_en, stride_eh, stride_ed, stride_mn, stride_mh,
    stride_on, stride_oh, stride_od, stride_don, stride_doh, stride_dod, stride_ln, stride_lh,
    stride_dqn, stride_dqh, stride_dqd, stride_den, stride_deh, stride_ded, stride_pn, stride_ph,
    head_dim, sm_scale, qk_scale,
    HAS_EDGE: tl.constexpr, HAS_MASK: tl.constexpr, NEED_EDGE_GRAD: tl.constexpr,
    BLOCK_E: tl.constexpr, BLOCK_D: tl.constexpr,
):
    node = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1).to(tl.int64)
    start, degree = _segment(ROWPTR, node)
    offs_e = tl.arange(0, BLOCK_E)
    offs_d = tl.arange(0, BLOCK_D)
    d_mask = offs_d < head_dim
    K += h * stride_kh
    V += h * stride_vh
    EDGE += h * stride_eh
    DEDGE += h * stride_deh
    MASK += h * stride_mh
    PM += h * stride_ph
    DS += h * stride_ph

    q = tl.load(Q + node * stride_qn + h * stride_qh + offs_d * stride_qd, mask=d_mask, other=0.0).to(tl.float32)
    do = tl.load(DO + node * stride_don + h * stride_doh + offs_d * stride_dod, mask=d_mask, other=0.0).to(tl.float32)
    o = tl.load(OUT + node * stride_on + h * stride_oh + offs_d * stride_od, mask=d_mask, other=0.0).to(tl.float32)
    # Σ_e p_e·g_e = do·out: the saved output gives the softmax-gradient term without a pass.
    delta = tl.sum(do * o, 0)
    # Finite whenever the loop below runs (the node has edges).
    lse2 = tl.load(LSE + node * stride_ln + h * stride_lh) * 1.4426950408889634
    dq = tl.zeros([BLOCK_D], dtype=tl.float32)
    for off in range(0, degree, BLOCK_E):
        e_mask = off + offs_e < degree
        pos = start + off + offs_e
        src = tl.load(COL + pos, mask=e_mask, other=0).to(tl.int64)
        ids = tl.load(EID + pos, mask=e_mask, other=0).to(tl.int64)
        rd_mask = e_mask[:, None] & d_mask[None, :]
        k = _rows(K, src, stride_kn, offs_d, stride_kd, rd_mask)
        v = _rows(V, src, stride_vn, offs_d, stride_vd, rd_mask)
        if HAS_EDGE:
            emb = _rows(EDGE, ids, stride_en, offs_d, stride_ed, rd_mask)
            k += emb
            v += emb
        s = tl.sum(q[None, :] * k, 1) * qk_scale
        p = tl.where(e_mask, tl.math.exp2(s - lse2), 0.0)
        g = tl.sum(do[None, :] * v, 1)
        if HAS_MASK:
            keep = tl.load(MASK + ids * stride_mn, mask=e_mask, other=0.0).to(tl.float32)
            g *= keep
            pm = p * keep
        else:
            pm = p
        ds = p * (g - delta)
        dq += tl.sum(ds[:, None] * k, 0)
        tl.store(PM + ids * stride_pn, pm, mask=e_mask)
        tl.store(DS + ids * stride_pn, ds, mask=e_mask)
        if NEED_EDGE_GRAD:
            de = pm[:, None] * do[None, :] + (sm_scale * ds)[:, None] * q[None, :]
            tl.store(DEDGE + ids[:, None] * stride_den + offs_d[None, :] * stride_ded,
                     de.to(DEDGE.dtype.element_ty), mask=rd_mask)
    dq = dq * sm_scale
    tl.store(DQ + node * stride_dqn + h * stride_dqh + offs_d * stride_dqd, dq.to(DQ.dtype.element_ty), mask=d_mask)


@triton.jit
def _bwd_src_kernel(
    Q, DO, PM, DS, DK, DV, T_ROWPTR, T_DST, T_EID,
    stride_qn, stride_qh, stride_qd, stride_don, stride_doh, stride_dod, stride_pn, stride_ph,
    stride_dkn, stride_dkh, stride_dkd, stride_dvn, stride_dvh, stride_dvd,
    head_dim, sm_scale,
    BLOCK_E: tl.constexpr, BLOCK_D: tl.constexpr,
):
    node = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1).to(tl.int64)
    start, degree = _segment(T_ROWPTR, node)
    offs_e = tl.arange(0, BLOCK_E)
    offs_d = tl.arange(0, BLOCK_D)
    d_mask = offs_d < head_dim
    Q += h * stride_qh
    DO += h * stride_doh
    PM += h * stride_ph
    DS += h * stride_ph

    dk = tl.zeros([BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_D], dtype=tl.float32)
    for off in range(0, degree, BLOCK_E):
        e_mask = off + offs_e < degree
        pos = start + off + offs_e
        dst = tl.load(T_DST + pos, mask=e_mask, other=0).to(tl.int64)
        ids = tl.load(T_EID + pos, mask=e_mask, other=0).to(tl.int64)
        rd_mask = e_mask[:, None] & d_mask[None, :]
        ds = tl.load(DS + ids * stride_pn, mask=e_mask, other=0.0)
        pm = tl.load(PM + ids * stride_pn, mask=e_mask, other=0.0)
        q = _rows(Q, dst, stride_qn, offs_d, stride_qd, rd_mask)
        do = _rows(DO, dst, stride_don, offs_d, stride_dod, rd_mask)
        dk += tl.sum(ds[:, None] * q, 0)
        dv += tl.sum(pm[:, None] * do, 0)
    dk = dk * sm_scale
    tl.store(DK + node * stride_dkn + h * stride_dkh + offs_d * stride_dkd, dk.to(DK.dtype.element_ty), mask=d_mask)
    tl.store(DV + node * stride_dvn + h * stride_dvh + offs_d * stride_dvd, dv.to(DV.dtype.element_ty), mask=d_mask)


# ----------------------------------------------------------------------------- launchers

def head_tile(head_dim: int) -> int:
    """Feature tile: the head dim rounded up to a power of two (Triton's tile sizes), at least
    16 so narrow heads still give each thread a few contiguous elements."""
    return max(16, triton.next_power_of_2(head_dim))


def edge_tile(block_d: int) -> int:
    """Gathered rows per tile: a [BLOCK_E, BLOCK_D] tile of about 2K elements. Every element
    of a gathered tile also holds a 64-bit address, so larger tiles cost registers fast: by
    ptxas' count on sm_90 (bfloat16, edge features and mask on) 4K-element tiles make the
    per-destination backward spill at D = 64 and 128, while 2K-element tiles stay spill-free
    at every head tile from 16 to 1024 (the backward at about 150 registers at D = 100).
    16 rows at the main shape (D = 100, tile 128) cover a conversation graph's typical
    in-degree in one or two tiles. Under the interpreter, 4 rows, so small test graphs
    already cross tile edges."""
    if triton_interpret():
        return 4
    return max(4, min(64, 2048 // block_d))


def _warps(block_e: int, block_d: int) -> int:
    return 4 if block_e * block_d <= 2048 else 8


def _strides(t: torch.Tensor | None, n: int) -> tuple:
    """``t``'s strides, or n zeros for an absent tensor (its pointer is a dummy the kernel
    never dereferences)."""
    return tuple(t.stride()) if t is not None else (0,) * n


@on_device
def forward(q, k, v, edge, mask, rowptr, col, eid, scale: float, need_alpha: bool):
    """q [N_dst,H,D], k/v [N_src,H,D] contiguous, same dtype (float32/float16/bfloat16);
    edge [E,H,D] same dtype or None; mask [E,H] float32 or None.
    Returns (out [N_dst,H,D] q.dtype, lse [N_dst,H] float32, alpha [E,H] float32 in the
    original edge order, or an empty [0, H] tensor when not need_alpha).

    One launch, grid (N_dst, H); every element of the outputs is written by it (a node without
    incoming edges gets out = 0, lse = -inf). Any strides are read in place: a copy would be a
    second launch."""
    n_dst, heads, head_dim = q.shape
    num_edges = col.shape[0]
    out = torch.empty(q.shape, device=q.device, dtype=q.dtype)
    lse = torch.empty((n_dst, heads), device=q.device, dtype=torch.float32)
    # Without alpha, [0, H]: the same rank either way, so shape functions need no special case.
    alpha = torch.empty((num_edges if need_alpha else 0, heads), device=q.device, dtype=torch.float32)
    if n_dst == 0 or heads == 0:
        return out, lse, alpha
    bd = head_tile(head_dim)
    be = edge_tile(bd)
    # Absent tensors are replaced by q, which is only ever read: the constexpr flags keep the
    # kernel from touching them.
    _fwd_kernel[(n_dst, heads)](
        q, k, v, q if edge is None else edge, q if mask is None else mask, out, lse,
        alpha if need_alpha else q, rowptr, col, eid,
        *q.stride(), *k.stride(), *v.stride(), *_strides(edge, 3), *_strides(mask, 2),
        *out.stride(), *lse.stride(), *alpha.stride(),
        head_dim, scale * LOG2E,
        HAS_EDGE=edge is not None, HAS_MASK=mask is not None, NEED_ALPHA=need_alpha,
        BLOCK_E=be, BLOCK_D=bd, num_warps=_warps(be, bd), num_stages=1,
    )
    return out, lse, alpha


@on_device
def backward(do, q, k, v, edge, mask, out, lse, rowptr, col, eid, t_rowptr, t_dst, t_eid, scale: float,
             need_edge_grad: bool):
    """Returns (dq, dk, dv, dedge) in the inputs' dtypes; dedge None when edge is None or not
    need_edge_grad. ``out`` and ``lse`` are the forward's (the softmax is recomputed from lse;
    alpha and lse themselves get no gradient).

    Two launches: per destination (grid (N_dst, H): δ, dq, dedge, and the per-edge ds and
    p·m in [E, H] float32 scratch), then per source (grid (N_src, H): dk, dv through the
    transposed structure). No atomics: bitwise reproducible."""
    n_dst, heads, head_dim = q.shape
    n_src = k.shape[0]
    num_edges = col.shape[0]
    dq = torch.empty(q.shape, device=q.device, dtype=q.dtype)
    dk = torch.empty(k.shape, device=k.device, dtype=k.dtype)
    dv = torch.empty(v.shape, device=v.device, dtype=v.dtype)
    want_dedge = edge is not None and need_edge_grad
    dedge = torch.empty(edge.shape, device=edge.device, dtype=edge.dtype) if want_dedge else None
    if heads == 0:
        return dq, dk, dv, dedge
    # ds and p·m per (edge, head), written by the first kernel (each edge lies in exactly one
    # destination segment) and read by the second.
    pm = torch.empty((num_edges, heads), device=q.device, dtype=torch.float32)
    ds = torch.empty((num_edges, heads), device=q.device, dtype=torch.float32)
    bd = head_tile(head_dim)
    be = edge_tile(bd)
    if n_dst > 0:
        _bwd_dst_kernel[(n_dst, heads)](
            q, k, v, q if edge is None else edge, q if mask is None else mask, out, do, lse, dq,
            dedge if want_dedge else q, pm, ds, rowptr, col, eid,
            *q.stride(), *k.stride(), *v.stride(), *_strides(edge, 3), *_strides(mask, 2),
            *out.stride(), *do.stride(), *lse.stride(), *dq.stride(), *_strides(dedge, 3), *pm.stride(),
            head_dim, scale, scale * LOG2E,
            HAS_EDGE=edge is not None, HAS_MASK=mask is not None, NEED_EDGE_GRAD=want_dedge,
            BLOCK_E=be, BLOCK_D=bd, num_warps=_warps(be, bd), num_stages=1,
        )
    if n_src > 0:
        _bwd_src_kernel[(n_src, heads)](
            q, do, pm, ds, dk, dv, t_rowptr, t_dst, t_eid,
            *q.stride(), *do.stride(), *pm.stride(), *dk.stride(), *dv.stride(),
            head_dim, scale,
            BLOCK_E=be, BLOCK_D=bd, num_warps=_warps(be, bd), num_stages=1,
        )
    return dq, dk, dv, dedge
