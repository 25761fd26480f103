"""Triton kernels of ``hotspot_erc::segment_matmul`` (the CUDA side; the CPU side is C++ in
``csrc/segment_matmul/``): rows of ``a`` in groups given by ``ptr``, each group times its own
weight (group 0 may be the *root* group: its own weight ``root`` plus ``bias``). With k = 1 and
unit gates this is :mod:`grouped_linear`'s routed product, and it reuses its plan kernel for the
row tiles (tiles never cross a group; built once per graph and cached by the caller).

Kernels:

* :func:`_segment_mm_kernel` — ``out[rows of g] = a[rows] @ W_g (+ bias for the root group)``;
  with the weight strides swapped, the input gradient ``grad @ W_gᵀ``. The rows past the last
  group (a sync-free bound's padding) are written as zeros by the tiles of a final padding group.
* :func:`_segment_wgrad_kernel` — ``dW_g = a_gᵀ grad_g`` (and the bias gradient of the root
  group): one program per (group, d_in tile, d_out tile) summing the group's rows in order,
  writing the parameters' dtype. Deterministic, no atomics, no partials.

Group and row counts change per graph: not specialised (one compile for every graph).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._launch import block_size, dot_precision, on_device, triton_interpret
from .grouped_linear import build_plan


@triton.jit(do_not_specialize=["T", "G", "M"])
def _segment_mm_kernel(a_ptr, w_ptr, root_ptr, bias_ptr, out_ptr, tiles_ptr, ptr_ptr,
                       KA, NB, T, G, M,
                       stride_am, stride_we, stride_wk, stride_wn, stride_rk, stride_rn, stride_om,
                       ROOT: tl.constexpr, HAS_BIAS: tl.constexpr, UPCAST: tl.constexpr,
                       PRECISION: tl.constexpr,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    t = tl.program_id(0)
    pid_n = tl.program_id(1)
    g = tl.load(tiles_ptr + t)
    if g < 0:  # past the real tile count
        return
    row0 = tl.load(tiles_ptr + T + t)
    # group G: the padding rows [ptr[G], M) past the last group
    row_end = tl.where(g < G, tl.load(ptr_ptr + tl.minimum(g, G - 1) + 1), M)
    rows = row0 + tl.arange(0, BLOCK_M)
    rmask = rows < row_end
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    cmask = cols < NB
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    if g < G:  # group G is the padding past the last group: zeros
        is_root = g < ROOT  # ROOT = 1: group 0 is the root group; ROOT = 0: no root group
        if is_root:
            w_base = root_ptr
            s_k = stride_rk
            s_n = stride_rn
        else:
            w_base = w_ptr + (g - ROOT).to(tl.int64) * stride_we
            s_k = stride_wk
            s_n = stride_wn
        for k0 in range(0, KA, BLOCK_K):
            ks = k0 + tl.arange(0, BLOCK_K)
            kmask = ks < KA
            a = tl.load(a_ptr + rows[:, None] * stride_am + ks[None, :], mask=rmask[:, None] & kmask[None, :],
                        other=0.0)
            b = tl.load(w_base + ks[:, None] * s_k + cols[None, :] * s_n, mask=kmask[:, None] & cmask[None, :],
                        other=0.0)
            if UPCAST:
                a = a.to(tl.float32)
                b = b.to(tl.float32)
            acc = tl.dot(a, b, acc, input_precision=PRECISION)
        if HAS_BIAS:
            if is_root:
                acc += tl.load(bias_ptr + cols, mask=cmask, other=0.0).to(tl.float32)[None, :]
    tl.store(out_ptr + rows[:, None] * stride_om + cols[None, :], acc.to(out_ptr.dtype.element_ty),
             mask=rmask[:, None] & cmask[None, :])


@triton.jit
def _segment_wgrad_kernel(a_ptr, g_ptr, ptr_ptr, dw_ptr, droot_ptr, db_ptr, D_IN, D_OUT,
                          stride_am, stride_gm,
                          ROOT: tl.constexpr, HAS_BIAS: tl.constexpr, UPCAST: tl.constexpr,
                          PRECISION: tl.constexpr,
                          BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr):
    grp = tl.program_id(0)
    pid_k = tl.program_id(1)
    pid_n = tl.program_id(2)
    r0 = tl.load(ptr_ptr + grp)
    r1 = tl.load(ptr_ptr + grp + 1)
    ks = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    kmask = ks < D_IN
    ns = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    nmask = ns < D_OUT
    acc = tl.zeros((BLOCK_K, BLOCK_N), dtype=tl.float32)
    acc_b = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for m0 in range(r0, r1, BLOCK_M):
        rows = m0 + tl.arange(0, BLOCK_M)
        rmask = rows < r1
        xa = tl.load(a_ptr + rows[None, :] * stride_am + ks[:, None], mask=kmask[:, None] & rmask[None, :], other=0.0)
        gy = tl.load(g_ptr + rows[:, None] * stride_gm + ns[None, :], mask=rmask[:, None] & nmask[None, :], other=0.0)
        if HAS_BIAS:
            acc_b += tl.sum(gy.to(tl.float32), axis=0)
        if UPCAST:
            xa = xa.to(tl.float32)
            gy = gy.to(tl.float32)
        acc = tl.dot(xa, gy, acc, input_precision=PRECISION)
    mask = kmask[:, None] & nmask[None, :]
    if grp < ROOT:  # the root group
        tl.store(droot_ptr + ks[:, None] * D_OUT + ns[None, :], acc.to(droot_ptr.dtype.element_ty), mask=mask)
        if HAS_BIAS:
            tl.store(db_ptr + ns, acc_b.to(db_ptr.dtype.element_ty), mask=nmask & (pid_k == 0))
    else:
        base = (grp - ROOT).to(tl.int64) * D_IN * D_OUT
        tl.store(dw_ptr + base + ks[:, None] * D_OUT + ns[None, :], acc.to(dw_ptr.dtype.element_ty), mask=mask)


# ----------------------------------------------------------------------------- launchers


def block_m(num_rows: int, num_groups: int) -> int:
    if triton_interpret():
        return 16
    return 32 if num_rows / max(num_groups, 1) < 96 else 64


def tile_map(ptr: torch.Tensor, num_rows: int, bm: int) -> torch.Tensor:
    """Row tiles of ``bm`` rows over the groups of ``ptr`` plus a final padding group
    [ptr[-1], num_rows): :mod:`grouped_linear`'s plan kernel (tiles part only). One launch, no
    sync; callers cache it with the graph."""
    ext = torch.cat([ptr, ptr.new_full((1,), num_rows)])
    groups = ext.numel() - 1
    dummy = torch.empty((groups, 1), dtype=torch.int64, device=ptr.device)  # no routing part (E = 0)
    tiles, _ = build_plan(ext, dummy, 0, num_rows, bm)
    return tiles


def _mm(a, weight, root, bias, ptr, tiles, bm, n_out, swap):
    m, ka = a.shape
    groups = ptr.numel() - 1
    t = triton.cdiv(m, bm) + groups + 1
    out = torch.empty((m, n_out), dtype=a.dtype, device=a.device)
    if m == 0:
        return out
    bn = block_size(n_out, 128)
    bk = block_size(ka, 64 if a.dtype != torch.float32 else 32)
    ws = (weight.stride(0), weight.stride(2), weight.stride(1)) if swap else weight.stride()
    rs = (0, 0) if root is None else ((root.stride(1), root.stride(0)) if swap else root.stride())
    _segment_mm_kernel[(t, max(1, triton.cdiv(n_out, bn)))](
        a, weight, root if root is not None else weight, bias if bias is not None else weight, out, tiles, ptr,
        ka, n_out, t, groups, m, a.stride(0), *ws, *rs, out.stride(0),
        ROOT=int(root is not None), HAS_BIAS=bias is not None, UPCAST=triton_interpret(),
        PRECISION=dot_precision(a.dtype), BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk,
        num_warps=8 if bm * bn >= 64 * 128 else 4, num_stages=3)
    return out


@on_device
def forward(a, ptr, weight, root, bias, tiles=None):
    a = a.contiguous()
    bm = block_m(a.shape[0], ptr.numel() - 1)
    if tiles is None:
        tiles = tile_map(ptr, a.shape[0], bm)
    return _mm(a, weight, root, bias, ptr, tiles, bm, weight.shape[2], swap=False)


@on_device
def backward(grad, a, ptr, weight, root, has_bias, tiles=None):
    """(grad_a, grad_weight, grad_root, grad_bias); two launches."""
    a, grad = a.contiguous(), grad.contiguous()
    m, d_in = a.shape
    d_out = weight.shape[2]
    bm = block_m(m, ptr.numel() - 1)
    if tiles is None:
        tiles = tile_map(ptr, m, bm)
    grad_a = _mm(grad, weight, root, None, ptr, tiles, bm, d_in, swap=True)
    groups = ptr.numel() - 1
    grad_w = torch.empty(weight.shape, dtype=weight.dtype, device=a.device)
    grad_root = torch.empty((d_in, d_out) if root is not None else (0,), dtype=a.dtype, device=a.device)
    grad_bias = torch.empty((d_out,) if has_bias else (0,), dtype=a.dtype, device=a.device)
    bk, bn = block_size(d_in, 64), block_size(d_out, 64)
    if groups > 0 and d_out > 0:
        # At least one d_in tile: the bias gradient comes from the pid_k == 0 programs.
        _segment_wgrad_kernel[(groups, max(1, triton.cdiv(d_in, bk)), triton.cdiv(d_out, bn))](
            a, grad, ptr, grad_w, grad_root, grad_bias, d_in, d_out, a.stride(0), grad.stride(0),
            ROOT=int(root is not None), HAS_BIAS=has_bias, UPCAST=triton_interpret(), PRECISION=dot_precision(a.dtype),
            BLOCK_M=16 if triton_interpret() else 64, BLOCK_K=bk, BLOCK_N=bn, num_warps=4, num_stages=3)
    else:  # no rows or no output features: zero gradients (no kernel to write them)
        for t in (grad_w, grad_root, grad_bias):
            t.zero_()
    return grad_a, grad_w, grad_root, grad_bias
