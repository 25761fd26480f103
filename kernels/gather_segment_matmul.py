"""Triton kernels of ``RGCNConv``'s fused CUDA path: :mod:`segment_matmul` with
the relational gather fused into its A-tile load, so the gathered matrix Z never exists.

The rows are those of the graph's compact structure (``RelationalGraph.compact()``): group 0 is
the *root* group (row i = node i, rows [0, N)), groups 1..R the non-empty (node, relation)
buckets of each relation (relation-major), then padding rows up to a bound M from shapes (no
host sync on CUDA). ``group_ptr`` [R+2] holds the group bounds. A bucket row's entries are
``idx[eptr[row]:eptr[row+1]]`` (its source nodes, in CSR order).

Kernels:

* :func:`_gather_mm_kernel` — ``P[rows of g] = A[rows] @ W_g`` where, in ``GATHER`` mode (the
  forward), ``A[row] = Σ_e w_e · x[idx[e]]`` over the row's entries (``w_e`` = 1/degree for the
  mean, 1 for the sum), accumulated in float32 (float64 for double) in CSR order, exactly the
  arithmetic of ``relational_aggregate`` (``csrc/relational/relational_row.h``): inside the K loop,
  a row tile walks its entries up to the largest degree in the tile (a scalar loop bound) and
  adds the gathered [BLOCK_M, BLOCK_K] slice of x into the A tile, which then goes straight to
  ``tl.dot``. Root rows are rows of x times ``root`` plus ``bias`` (bias alone when there is no
  root weight, zeros when neither); padding rows are not written (no later kernel reads them:
  neither structure lists them). With ``GATHER`` off (the input
  gradient), ``A[row] = src[rowsrc[row]]`` (a row of dout copied to each of its node's rows: the
  gradient of the per-node sum) and the weights are passed transposed (strides swapped).
* :func:`_gather_wgrad_kernel` — ``dW_g = A_gᵀ · dout[node(rows of g)]``, A regathered from x
  (no saved Z), one program per (group, d_in tile, d_out tile) walking the group's rows in
  order; the root group gives ``droot`` and ``dbias``. Writes the parameters' dtype.
  Deterministic, no atomics, no partials.

The per-node sum of P's rows and the input gradient's transposed gather are the compiled
``relational_aggregate`` (see ``hotspot_erc.ops.relational``).

Bytes per forward + backward (b bytes per element, K non-empty buckets, M = N + K rows, E edges;
the gathers' re-reads of x and dout rows that hit L2 are counted once): forward reads x
(b·N·in, the gathered rows mostly from L2), the weights, writes P (b·M·out), the node sum reads
P and writes out (b·N·out); backward: dW reads x again and dout (b·N·out), Q = dout@Wᵀ writes
b·M·in, the transposed gather reads Q per entry (b·(E+N)·in) and writes dx. The three-launch path
also wrote Z [M, in] and read it back in forward and again in backward (3·b·M·in more).

Group and row counts change per graph: not specialised (one compile for every graph).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._launch import block_size, dot_precision, on_device, triton_interpret
from .segment_matmul import block_m, tile_map  # noqa: F401 - the gather kernels share the row tiling


@triton.jit
def _entry_weight(deg, MEAN: tl.constexpr, ACC64: tl.constexpr):
    """Weight of each entry of a row of ``deg`` entries: 1/deg for the mean (correctly rounded,
    as ``relational_row.h``'s ``acc_t(1) / c``), 1 for the sum; 0 for an empty row."""
    if ACC64:
        one = tl.full(deg.shape, 1.0, tl.float64)
        if MEAN:
            one = one / tl.maximum(deg, 1).to(tl.float64)  # IEEE division for float64
    else:
        one = tl.full(deg.shape, 1.0, tl.float32)
        if MEAN:
            one = tl.math.div_rn(one, tl.maximum(deg, 1).to(tl.float32))  # not the approximate fast division
    return tl.where(deg > 0, one, 0.0)


@triton.jit(do_not_specialize=["T", "G", "M", "N_SRC", "NUM_E"])
def _gather_mm_kernel(src_ptr, eptr_ptr, idx_ptr, rowsrc_ptr, w_ptr, root_ptr, bias_ptr, out_ptr, tiles_ptr,
                      gptr_ptr, KA, NB, T, G, M, N_SRC, NUM_E,
                      stride_sm, stride_we, stride_wk, stride_wn, stride_rk, stride_rn, stride_om,
                      GATHER: tl.constexpr, MEAN: tl.constexpr, HAS_ROOT: tl.constexpr, HAS_BIAS: tl.constexpr,
                      ACC64: tl.constexpr, LOW: tl.constexpr, PRECISION: tl.constexpr,
                      BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    t = tl.program_id(0)
    pid_n = tl.program_id(1)
    g = tl.load(tiles_ptr + t)
    if (g < 0) | (g >= G):  # past the real tile count, or the padding rows [gptr[G], M): never read
        return
    row0 = tl.load(tiles_ptr + T + t)
    row_end = tl.load(gptr_ptr + g + 1)
    rows = row0 + tl.arange(0, BLOCK_M)
    rmask = rows < row_end
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    cmask = cols < NB
    if ACC64:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float64)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    if g == 0:  # the root group: row i is node i
        if HAS_ROOT:
            for k0 in range(0, KA, BLOCK_K):
                ks = k0 + tl.arange(0, BLOCK_K)
                kmask = ks < KA
                a = tl.load(src_ptr + rows[:, None] * stride_sm + ks[None, :],
                            mask=rmask[:, None] & kmask[None, :], other=0.0)
                b = tl.load(root_ptr + ks[:, None] * stride_rk + cols[None, :] * stride_rn,
                            mask=kmask[:, None] & cmask[None, :], other=0.0)
                if not LOW:
                    a = a.to(acc.dtype)
                    b = b.to(acc.dtype)
                acc = tl.dot(a, b, acc, input_precision=PRECISION)
        if HAS_BIAS:
            acc += tl.load(bias_ptr + cols, mask=cmask, other=0.0).to(acc.dtype)[None, :]
    else:  # relation g - 1
        w_base = w_ptr + (g - 1).to(tl.int64) * stride_we
        if GATHER:
            e0 = tl.load(eptr_ptr + rows, mask=rmask, other=0)
            e1 = tl.load(eptr_ptr + rows + 1, mask=rmask, other=0)
            e1 = tl.minimum(tl.maximum(e1, 0), NUM_E)  # a malformed pointer never reads outside idx
            e0 = tl.minimum(tl.maximum(e0, 0), e1)
            deg = e1 - e0
            max_deg = tl.max(deg, axis=0)  # the tile's edge loop bound
            wgt = _entry_weight(deg, MEAN, ACC64)
        else:
            srow = tl.load(rowsrc_ptr + rows, mask=rmask, other=-1)
            smask = rmask & (srow >= 0) & (srow < N_SRC)
            srow = tl.where(smask, srow, 0)
        for k0 in range(0, KA, BLOCK_K):
            ks = k0 + tl.arange(0, BLOCK_K)
            kmask = ks < KA
            if GATHER:
                if ACC64:
                    a = tl.zeros((BLOCK_M, BLOCK_K), dtype=tl.float64)
                else:
                    a = tl.zeros((BLOCK_M, BLOCK_K), dtype=tl.float32)
                for d in range(0, max_deg):
                    emask = d < deg
                    j = tl.load(idx_ptr + e0 + d, mask=emask, other=0)
                    emask = emask & (j >= 0) & (j < N_SRC)
                    v = tl.load(src_ptr + j[:, None] * stride_sm + ks[None, :],
                                mask=emask[:, None] & kmask[None, :], other=0.0)
                    a += wgt[:, None] * v.to(acc.dtype)  # acc += w_e * x[j]: relational_row.h's order
                if LOW:
                    a = a.to(src_ptr.dtype.element_ty)
            else:
                a = tl.load(src_ptr + srow[:, None] * stride_sm + ks[None, :],
                            mask=smask[:, None] & kmask[None, :], other=0.0)
                if not LOW:
                    a = a.to(acc.dtype)
            b = tl.load(w_base + ks[:, None] * stride_wk + cols[None, :] * stride_wn,
                        mask=kmask[:, None] & cmask[None, :], other=0.0)
            if not LOW:
                b = b.to(acc.dtype)
            acc = tl.dot(a, b, acc, input_precision=PRECISION)
    tl.store(out_ptr + rows[:, None] * stride_om + cols[None, :], acc.to(out_ptr.dtype.element_ty),
             mask=rmask[:, None] & cmask[None, :])


@triton.jit(do_not_specialize=["N_SRC", "N_G", "NUM_E"])
def _gather_wgrad_kernel(x_ptr, eptr_ptr, idx_ptr, g_ptr, rownode_ptr, gptr_ptr, dw_ptr, droot_ptr, db_ptr,
                         D_IN, D_OUT, N_SRC, N_G, NUM_E, stride_xm, stride_gm,
                         MEAN: tl.constexpr, HAS_ROOT: tl.constexpr, HAS_BIAS: tl.constexpr, ACC64: tl.constexpr,
                         LOW: tl.constexpr, PRECISION: tl.constexpr,
                         BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr):
    grp = tl.program_id(0)  # 0: the root group; g >= 1: relation g - 1
    pid_k = tl.program_id(1)
    pid_n = tl.program_id(2)
    r0 = tl.load(gptr_ptr + grp)
    r1 = tl.load(gptr_ptr + grp + 1)
    ks = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    kmask = ks < D_IN
    ns = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    nmask = ns < D_OUT
    if ACC64:
        acc = tl.zeros((BLOCK_K, BLOCK_N), dtype=tl.float64)
        acc_b = tl.zeros((BLOCK_N,), dtype=tl.float64)
    else:
        acc = tl.zeros((BLOCK_K, BLOCK_N), dtype=tl.float32)
        acc_b = tl.zeros((BLOCK_N,), dtype=tl.float32)
    mask = kmask[:, None] & nmask[None, :]
    if grp == 0:
        if HAS_ROOT or HAS_BIAS:
            for m0 in range(r0, r1, BLOCK_M):
                rows = m0 + tl.arange(0, BLOCK_M)
                rmask = rows < r1
                gy = tl.load(g_ptr + rows[:, None] * stride_gm + ns[None, :], mask=rmask[:, None] & nmask[None, :],
                             other=0.0)
                if HAS_BIAS:
                    acc_b += tl.sum(gy.to(acc.dtype), axis=0)
                if HAS_ROOT:
                    xa = tl.load(x_ptr + rows[None, :] * stride_xm + ks[:, None], mask=kmask[:, None] & rmask[None, :],
                                 other=0.0)
                    if not LOW:
                        xa = xa.to(acc.dtype)
                        gy = gy.to(acc.dtype)
                    acc = tl.dot(xa, gy, acc, input_precision=PRECISION)
        if HAS_ROOT:
            tl.store(droot_ptr + ks[:, None] * D_OUT + ns[None, :], acc.to(droot_ptr.dtype.element_ty), mask=mask)
        if HAS_BIAS:
            tl.store(db_ptr + ns, acc_b.to(db_ptr.dtype.element_ty), mask=nmask & (pid_k == 0))
    else:
        for m0 in range(r0, r1, BLOCK_M):
            rows = m0 + tl.arange(0, BLOCK_M)
            rmask = rows < r1
            e0 = tl.load(eptr_ptr + rows, mask=rmask, other=0)
            e1 = tl.load(eptr_ptr + rows + 1, mask=rmask, other=0)
            e1 = tl.minimum(tl.maximum(e1, 0), NUM_E)
            e0 = tl.minimum(tl.maximum(e0, 0), e1)
            deg = e1 - e0
            max_deg = tl.max(deg, axis=0)
            if ACC64:
                a = tl.zeros((BLOCK_M, BLOCK_K), dtype=tl.float64)
            else:
                a = tl.zeros((BLOCK_M, BLOCK_K), dtype=tl.float32)
            wgt = _entry_weight(deg, MEAN, ACC64)
            for d in range(0, max_deg):
                emask = d < deg
                j = tl.load(idx_ptr + e0 + d, mask=emask, other=0)
                emask = emask & (j >= 0) & (j < N_SRC)
                v = tl.load(x_ptr + j[:, None] * stride_xm + ks[None, :], mask=emask[:, None] & kmask[None, :],
                            other=0.0)
                a += wgt[:, None] * v.to(acc.dtype)
            node = tl.load(rownode_ptr + rows, mask=rmask, other=-1)
            nd_mask = rmask & (node >= 0) & (node < N_G)
            node = tl.where(nd_mask, node, 0)
            gy = tl.load(g_ptr + node[:, None] * stride_gm + ns[None, :], mask=nd_mask[:, None] & nmask[None, :],
                         other=0.0)
            if LOW:
                a = a.to(g_ptr.dtype.element_ty)
            else:
                gy = gy.to(acc.dtype)
            acc = tl.dot(tl.trans(a), gy, acc, input_precision=PRECISION)
        base = (grp - 1).to(tl.int64) * D_IN * D_OUT
        tl.store(dw_ptr + base + ks[:, None] * D_OUT + ns[None, :], acc.to(dw_ptr.dtype.element_ty), mask=mask)


# ----------------------------------------------------------------------------- launchers


def _low(dtype: torch.dtype) -> bool:
    # Half-precision operands go to tl.dot in their dtype (the gathered A rounded once, as the
    # three-launch path rounded Z); the interpreter multiplies in float32.
    return dtype in (torch.float16, torch.bfloat16) and not triton_interpret()


def _launch_mm(src, eptr, idx, rowsrc, weight, root, bias, num_rows, out_cols, group_ptr, tiles, bm, gather, mean,
               swap):
    groups = group_ptr.numel() - 1  # root group + R relations
    t = triton.cdiv(num_rows, bm) + groups + 1
    out = torch.empty((num_rows, out_cols), dtype=src.dtype, device=src.device)
    if num_rows == 0 or out_cols == 0:
        return out
    ka = weight.shape[2] if swap else weight.shape[1]
    f64 = src.dtype == torch.float64
    bn = block_size(out_cols, 64 if f64 else 128)
    bk = block_size(ka, 64 if src.dtype in (torch.float16, torch.bfloat16) else 32)
    ws = (weight.stride(0), weight.stride(2), weight.stride(1)) if swap else weight.stride()
    rs = (0, 0) if root is None else ((root.stride(1), root.stride(0)) if swap else root.stride())
    _gather_mm_kernel[(t, triton.cdiv(out_cols, bn))](
        src, eptr, idx, rowsrc, weight, root if root is not None else weight, bias if bias is not None else weight,
        out, tiles, group_ptr, ka, out_cols, t, groups, num_rows, src.shape[0], idx.numel(),
        src.stride(0), *ws, *rs, out.stride(0),
        GATHER=gather, MEAN=mean, HAS_ROOT=root is not None, HAS_BIAS=bias is not None, ACC64=f64,
        LOW=_low(src.dtype), PRECISION=dot_precision(src.dtype), BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk,
        num_warps=8 if bm * bn >= 64 * 128 else 4, num_stages=2)
    return out


@on_device
def forward(x, weight, root, bias, eptr, idx, group_ptr, num_rows, tiles, bm, mean):
    """P [num_rows, out]: each row's gathered A times its group's weight (see the module);
    padding rows not written."""
    return _launch_mm(x, eptr, idx, idx, weight, root, bias, num_rows, weight.shape[2], group_ptr, tiles, bm,
                      True, mean, False)


@on_device
def input_rows(grad, weight, root, row_node, group_ptr, num_rows, tiles, bm):
    """Q [num_rows, in]: Q[row] = grad[node(row)] @ W_gᵀ (root rows: grad[i] @ rootᵀ, zeros
    without a root weight); padding rows not written."""
    return _launch_mm(grad, row_node, row_node, row_node, weight, root, None, num_rows, weight.shape[1], group_ptr,
                      tiles, bm, False, False, True)


@on_device
def weight_grad(x, grad, weight, root, has_bias, eptr, idx, row_node, group_ptr, mean):
    """(dW, droot, dbias) in the parameters' dtype; one launch (zeros when nothing to sum)."""
    d_in, d_out = weight.shape[1], weight.shape[2]
    dev = x.device
    grad_w = torch.empty(weight.shape, dtype=weight.dtype, device=dev)
    grad_root = torch.empty((d_in, d_out) if root is not None else (0,), dtype=x.dtype, device=dev)
    grad_bias = torch.empty((d_out,) if has_bias else (0,), dtype=x.dtype, device=dev)
    groups = group_ptr.numel() - 1
    f64 = x.dtype == torch.float64
    bk, bn = block_size(d_in, 32 if f64 else 64), block_size(d_out, 64 if f64 else 128)
    if groups > 0 and d_out > 0:
        # At least one d_in tile: the bias gradient comes from the pid_k == 0 programs.
        _gather_wgrad_kernel[(groups, max(1, triton.cdiv(d_in, bk)), triton.cdiv(d_out, bn))](
            x, eptr, idx, grad, row_node, group_ptr, grad_w, grad_root, grad_bias,
            d_in, d_out, x.shape[0], grad.shape[0], idx.numel(), x.stride(0), grad.stride(0),
            MEAN=mean, HAS_ROOT=root is not None, HAS_BIAS=has_bias, ACC64=f64, LOW=_low(x.dtype),
            PRECISION=dot_precision(x.dtype), BLOCK_M=16 if triton_interpret() else 32, BLOCK_K=bk, BLOCK_N=bn,
            num_warps=8 if bk * bn >= 64 * 128 else 4, num_stages=2)
    else:  # no groups or no output features: zero gradients (no kernel to write them)
        for t in (grad_w, grad_root, grad_bias):
            t.zero_()
    return grad_w, grad_root, grad_bias


# ----------------------------------------------------------------------------- bytes model

def bytes_moved(num_nodes: int, num_edges: int, num_relations: int, nonempty_buckets: int, d_in: int, d_out: int,
                b: int, fused: bool = True, row_bound: int | None = None, index_bytes: int = 8) -> tuple[float, float]:
    """(forward, backward) bytes RGCNConv's CUDA path moves, from shapes (the module docstring's
    model; every gathered row counted once, as if the re-reads hit L2). ``fused=False`` models
    the former three-launch path, which also wrote the gathered Z [M, in] (all ``row_bound`` =
    N + min(E, N·R) rows, padding included), read it back in the GEMM and again for the weight
    gradient, wrote and read the node sum's gradient dP [M, out], and wrote dZ [M, in]."""
    n, e, k, r = float(num_nodes), float(num_edges), float(nonempty_buckets), float(num_relations)
    m = n + k  # rows that are computed and read: one root row per node, one per non-empty bucket
    mb = float(row_bound) if row_bound is not None else n + min(e, n * r)  # rows allocated
    w = b * (r + 1) * d_in * d_out  # relation weights and root
    gather = b * (e + n) * d_in  # the x rows of every entry (edges, and root rows)
    csr = index_bytes * (2 * m + e + 2 * n + 2)  # row pointers, entries, node pointers, node rows
    if fused:
        fwd = gather + w + 2 * b * m * d_out + b * n * d_out + csr  # write P, read P, write out
        bwd = (gather + b * m * d_out + w                           # dW: regather A, dout rows, write dW
               + b * m * d_out + w + b * m * d_in                   # Q = dout[node] @ Wᵀ, written
               + b * (e + n) * d_in + b * n * d_in + 2 * csr)        # dx: transposed gather of Q
        return fwd, bwd
    fwd = (gather + 2 * b * mb * d_in + w                           # Z written, read by the GEMM
           + b * mb * d_out + b * m * d_out + b * n * d_out + csr)  # P written (all rows), read, out
    bwd = (b * m * d_out + b * mb * d_out                           # dP = dout copied to its rows
           + b * mb * d_out + w + b * mb * d_in                     # dZ = dP @ Wᵀ
           + b * mb * d_in + b * mb * d_out + w                     # dW = Zᵀ dP
           + b * (e + n) * d_in + b * n * d_in + 2 * csr)            # dx: transposed gather of dZ
    return fwd, bwd
