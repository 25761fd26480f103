"""Triton kernels for the segment-routed expert projection (DESIGN §3.2) and their launchers.

``y_t = Σ_i gates[s,i] · (x_t @ W[experts[s,i]] + b[experts[s,i]])`` for every token t of segment s.

Scheduling. Every segment is cut into row tiles of ``BLOCK_M`` tokens that never cross a segment
boundary, so one program owns rows that share the same k experts. The tile map is computed on the
device from ``cu_seqlens`` (no host sync): the number of tiles is bounded by
``cdiv(N, BLOCK_M) + S`` from shapes alone, and programs past the real count exit at once.

Kernels (one launch each):

* :func:`_routed_mm_kernel` — forward ``y = Σ_i g_i (x W_e + b_e)``, and, with weight strides
  swapped, the input gradient ``dx = Σ_i g_i dy W_eᵀ``. In that backward mode it also computes
  per-tile partial gate gradients ``Σ_rows x · (dy W_eᵀ) + dy · b_e`` (= ``dy · (x W_e + b_e)``),
  so no extra pass over ``x`` W is needed.
* :func:`_tile_to_segment_sum_kernel` — sums those partials tile by tile in a fixed order into
  ``dgates[S, k]`` (deterministic; no atomics).
* :func:`_expert_weight_grad_kernel` — ``dW_e = Σ_{(s,i): e_si = e} g_si x_sᵀ dy_s`` (and
  ``db_e``), grouped by expert: assignments are sorted by expert and each expert's token stream is
  split into ``SPLIT`` contiguous slices for parallelism; every program writes its own partial
  and the slices are summed in a fixed order, so the weight gradient is deterministic.

Pure kernel code: arguments are assumed valid (see :mod:`hotspot_erc.ops.grouped_linear`).
"""
from __future__ import annotations


import torch
import triton
import triton.language as tl

from hotspot_erc.kernels._launch import on_device
from hotspot_erc.ops._backend import triton_interpret


@triton.jit
def _routed_mm_kernel(
    a_ptr, b_ptr, bias_ptr, experts_ptr, gates_ptr, out_ptr,
    tile_seg_ptr, tile_row0_ptr, cu_ptr,
    x2_ptr, dgb_ptr, partial_ptr,
    KA, NB, T_MAX,
    stride_am, stride_ak,
    stride_be, stride_bk, stride_bn,
    stride_biase,
    stride_om, stride_on,
    stride_x2m, stride_x2n,
    stride_dgbe,
    K: tl.constexpr,
    HAS_BIAS: tl.constexpr, DGATE: tl.constexpr, DGATE_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    UPCAST: tl.constexpr, PRECISION: tl.constexpr,
):
    t = tl.program_id(0)
    pid_n = tl.program_id(1)
    seg = tl.load(tile_seg_ptr + t)
    if seg < 0:  # past the real tile count
        return
    row0 = tl.load(tile_row0_ptr + t).to(tl.int64)
    row_end = tl.load(cu_ptr + seg + 1).to(tl.int64)
    rows = row0 + tl.arange(0, BLOCK_M)
    rmask = rows < row_end
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    cmask = cols < NB
    out = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for i in range(K):
        e = tl.load(experts_ptr + seg * K + i).to(tl.int64)
        g = tl.load(gates_ptr + seg * K + i).to(tl.float32)
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        dgb = tl.zeros((BLOCK_M,), dtype=tl.float32)
        for k0 in range(0, KA, BLOCK_K):
            ks = k0 + tl.arange(0, BLOCK_K)
            kmask = ks < KA
            a = tl.load(a_ptr + rows[:, None] * stride_am + ks[None, :] * stride_ak,
                        mask=rmask[:, None] & kmask[None, :], other=0.0)
            b = tl.load(b_ptr + e * stride_be + ks[:, None] * stride_bk + cols[None, :] * stride_bn,
                        mask=kmask[:, None] & cmask[None, :], other=0.0)
            if UPCAST:
                a = a.to(tl.float32)
                b = b.to(tl.float32)
            acc = tl.dot(a, b, acc, input_precision=PRECISION)
            if DGATE_BIAS:
                # dy · b_e over the whole d_out, which this program streams anyway.
                bb = tl.load(dgb_ptr + e * stride_dgbe + ks, mask=kmask, other=0.0).to(tl.float32)
                dgb += tl.sum(a.to(tl.float32) * bb[None, :], axis=1)
        if DGATE:
            x2 = tl.load(x2_ptr + rows[:, None] * stride_x2m + cols[None, :] * stride_x2n,
                         mask=rmask[:, None] & cmask[None, :], other=0.0).to(tl.float32)
            part = tl.sum(tl.sum(acc * x2, axis=1), axis=0)
            if DGATE_BIAS:
                part += tl.where(pid_n == 0, tl.sum(dgb, axis=0), 0.0)
            tl.store(partial_ptr + (pid_n * T_MAX + t) * K + i, part)
        if HAS_BIAS:
            bias = tl.load(bias_ptr + e * stride_biase + cols, mask=cmask, other=0.0).to(tl.float32)
            acc += bias[None, :]
        out += g * acc
    tl.store(out_ptr + rows[:, None] * stride_om + cols[None, :] * stride_on,
             out.to(out_ptr.dtype.element_ty), mask=rmask[:, None] & cmask[None, :])


@triton.jit
def _tile_to_segment_sum_kernel(
    partial_ptr, tile_start_ptr, out_ptr, T_MAX, NT,
    K: tl.constexpr, BLOCK_K: tl.constexpr,
):
    s = tl.program_id(0)
    t0 = tl.load(tile_start_ptr + s)
    t1 = tl.load(tile_start_ptr + s + 1)
    ks = tl.arange(0, BLOCK_K)
    kmask = ks < K
    acc = tl.zeros((BLOCK_K,), dtype=tl.float32)
    for t in range(t0, t1):
        for j in range(0, NT):
            acc += tl.load(partial_ptr + (j * T_MAX + t) * K + ks, mask=kmask, other=0.0)
    tl.store(out_ptr + s * K + ks, acc.to(out_ptr.dtype.element_ty), mask=kmask)


@triton.jit
def _expert_weight_grad_kernel(
    x_ptr, dy_ptr, cu_ptr,
    asg_seg_ptr, asg_gate_ptr, asg_start_ptr,
    split_v_ptr, split_a_ptr,
    dw_ptr, db_ptr,
    D_IN, D_OUT, E,
    stride_xm, stride_xk, stride_ym, stride_yn,
    SPLIT: tl.constexpr, HAS_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr,
    UPCAST: tl.constexpr, PRECISION: tl.constexpr,
):
    pid = tl.program_id(0)  # = e * SPLIT + j
    pid_k = tl.program_id(1)
    pid_n = tl.program_id(2)
    e = pid // SPLIT
    j = pid % SPLIT
    # This program owns the virtual token range [v0, v1) of expert e's stream and the
    # assignments [a0, a1) that overlap it.
    v0 = tl.load(split_v_ptr + e * (SPLIT + 1) + j)
    v1 = tl.load(split_v_ptr + e * (SPLIT + 1) + j + 1)
    a0 = tl.load(split_a_ptr + 2 * pid)
    a1 = tl.load(split_a_ptr + 2 * pid + 1)
    ks = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    kmask = ks < D_IN
    ns = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    nmask = ns < D_OUT
    acc = tl.zeros((BLOCK_K, BLOCK_N), dtype=tl.float32)
    acc_b = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for a in range(a0, a1):
        seg = tl.load(asg_seg_ptr + a)
        g = tl.load(asg_gate_ptr + a).to(tl.float32)
        c = tl.load(asg_start_ptr + a)
        seg_lo = tl.load(cu_ptr + seg).to(tl.int64)
        seg_hi = tl.load(cu_ptr + seg + 1).to(tl.int64)
        r0 = seg_lo + tl.maximum(v0 - c, 0)
        r1 = seg_lo + tl.minimum(v1 - c, seg_hi - seg_lo)
        part = tl.zeros((BLOCK_K, BLOCK_N), dtype=tl.float32)
        part_b = tl.zeros((BLOCK_N,), dtype=tl.float32)
        for m0 in range(r0, r1, BLOCK_M):
            rows = m0 + tl.arange(0, BLOCK_M)
            rmask = rows < r1
            xa = tl.load(x_ptr + rows[:, None] * stride_xm + ks[None, :] * stride_xk,
                         mask=rmask[:, None] & kmask[None, :], other=0.0)
            dy = tl.load(dy_ptr + rows[:, None] * stride_ym + ns[None, :] * stride_yn,
                         mask=rmask[:, None] & nmask[None, :], other=0.0)
            if UPCAST:
                xa = xa.to(tl.float32)
                dy = dy.to(tl.float32)
            part = tl.dot(tl.trans(xa), dy, part, input_precision=PRECISION)
            if HAS_BIAS:
                part_b += tl.sum(dy.to(tl.float32), axis=0)
        acc += g * part
        acc_b += g * part_b
    base = (j.to(tl.int64) * E + e) * D_IN * D_OUT
    tl.store(dw_ptr + base + ks[:, None] * D_OUT + ns[None, :], acc,
             mask=kmask[:, None] & nmask[None, :])
    if HAS_BIAS:
        if pid_k == 0:
            tl.store(db_ptr + (j.to(tl.int64) * E + e) * D_OUT + ns, acc_b, mask=nmask)


# ----------------------------------------------------------------------------- launchers

def _empty(shape, dtype, device) -> torch.Tensor:
    """Every buffer a kernel must fill; tests replace this with a NaN fill so unwritten
    elements show."""
    return torch.empty(shape, dtype=dtype, device=device)


def _precision(dtype: torch.dtype) -> str:
    # float32 follows torch's own matmul setting (TF32 only when the user allowed it).
    if dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32:
        return "ieee"
    return "tf32"


def _block_m(num_tokens: int, num_segments: int) -> int:
    """Row tile: short conversation segments waste less of a 32-row tile on their ragged end."""
    if triton_interpret():
        return 16
    mean_len = num_tokens / max(num_segments, 1)
    return 32 if mean_len < 96 else 64


def _block(n: int, cap: int) -> int:
    if triton_interpret():
        return 16 if n <= 16 else 32
    return max(16, min(cap, triton.next_power_of_2(n)))


def tile_map(cu_seqlens: torch.Tensor, block_m: int, num_tokens: int):
    """Row tiles of ``block_m`` that never cross a segment, computed on the device.

    Returns (tile_seg int32 [T_max] with -1 past the real count, tile_row0 int64 [T_max],
    tile_start int64 [S+1]); T_max = cdiv(N, block_m) + S depends on shapes only (no sync).
    """
    cu = cu_seqlens.to(torch.int64)
    num_seg = cu.numel() - 1
    lengths = cu[1:] - cu[:-1]
    tiles = (lengths + block_m - 1) // block_m
    tile_start = torch.zeros(num_seg + 1, dtype=torch.int64, device=cu.device)
    torch.cumsum(tiles, 0, out=tile_start[1:])
    t_max = triton.cdiv(num_tokens, block_m) + num_seg
    t = torch.arange(max(t_max, 1), device=cu.device)
    seg = torch.searchsorted(tile_start[1:], t, right=True)
    valid = seg < num_seg
    seg_c = seg.clamp(max=max(num_seg - 1, 0))
    row0 = cu[seg_c] + (t - tile_start[seg_c]) * block_m
    tile_seg = torch.where(valid, seg_c, -1).to(torch.int32)
    return tile_seg, row0, tile_start


def _routed_mm(a, b_strides_src, weight_view, bias, experts, gates, cu, tiles, block_m,
               out_features, dgate_x=None, dgate_bias=None):
    """Launch :func:`_routed_mm_kernel`; returns out (and the dgate partials + block count)."""
    tile_seg, tile_row0, _ = tiles
    n = a.shape[0]
    ka = a.shape[1]
    k = experts.shape[1]
    out = _empty((n, out_features), a.dtype, a.device)
    block_n = _block(out_features, 128)
    block_k = _block(ka, 64 if a.dtype != torch.float32 else 32)
    # At least one column tile even when out_features == 0 (d_in == 0 in the backward): the
    # gate-gradient bias term dy·b_e is computed by the pid_n == 0 programs, so an empty grid
    # would leave it out (the masked stores write nothing).
    nt = max(1, triton.cdiv(out_features, block_n))
    t_max = tile_seg.numel()
    dgate = dgate_x is not None
    partial = (_empty((nt, t_max, k), torch.float32, a.device)
               if dgate else out)
    dummy = out
    grid = (t_max, nt)
    if n > 0:
        _routed_mm_kernel[grid](
            a, weight_view, bias if bias is not None else dummy, experts, gates, out,
            tile_seg, tile_row0, cu,
            dgate_x if dgate else dummy, dgate_bias if dgate_bias is not None else dummy, partial,
            ka, out_features, t_max,
            a.stride(0), a.stride(1),
            *b_strides_src,
            bias.stride(0) if bias is not None else 0,
            out.stride(0), out.stride(1),
            dgate_x.stride(0) if dgate else 0, dgate_x.stride(1) if dgate else 0,
            dgate_bias.stride(0) if dgate_bias is not None else 0,
            K=k, HAS_BIAS=bias is not None, DGATE=dgate, DGATE_BIAS=dgate_bias is not None,
            BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k,
            UPCAST=triton_interpret(), PRECISION=_precision(a.dtype),
            # Two [BLOCK_M, BLOCK_N] float32 accumulators (acc, out) plus int64 pointer tiles:
            # at 64x128, 4 warps spill on sm_90 by ptxas' count (128 B forward, ~1.2 KB with the
            # gate gradient); 8 warps halve the per-thread share (0 B / ~450 B).
            num_warps=8 if block_m * block_n >= 64 * 128 else 4, num_stages=3,
        )
    return out, partial, nt


@on_device
def grouped_linear_forward(x, cu_seqlens, experts, gates, weight, bias):
    """Forward launcher: one kernel launch (plus the tiny on-device tile map)."""
    block_m = _block_m(x.shape[0], experts.shape[0])
    tiles = tile_map(cu_seqlens, block_m, x.shape[0])
    strides = (weight.stride(0), weight.stride(1), weight.stride(2))
    out, _, _ = _routed_mm(x, strides, weight, bias, experts, gates, cu_seqlens, tiles, block_m,
                           weight.shape[2])
    return out


def _weight_split(num_experts: int, d_in: int, d_out: int, block_k: int, block_n: int,
                  rows: int, device: torch.device) -> int:
    """Slices per expert so the weight-gradient grid fills the GPU (shapes only: no sync)."""
    if triton_interpret():
        return 2
    tiles = num_experts * triton.cdiv(d_in, block_k) * triton.cdiv(d_out, block_n)
    sms = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 8
    want = triton.cdiv(2 * sms, tiles)
    # Keep at least ~256 rows per slice on average, or the partial sums cost more than they save.
    most = max(1, rows // (256 * num_experts))
    return int(max(1, min(want, most, 32)))


@on_device
def grouped_linear_backward(dy, x, cu_seqlens, experts, gates, weight, bias,
                            need_x=True, need_gates=True, need_weight=True, need_bias=True):
    """Gradients (dx, dgates, dweight, dbias); entries not needed are returned as None."""
    n, d_in = x.shape
    num_experts, _, d_out = weight.shape
    num_seg, k = experts.shape
    dev = x.device
    prec = _precision(x.dtype)
    dx = dgates = dweight = dbias = None
    dy = dy.contiguous()

    if need_x or need_gates:
        block_m = _block_m(n, num_seg)
        tiles = tile_map(cu_seqlens, block_m, n)
        # dy @ W_eᵀ: the same routed kernel with the weight's last two strides swapped.
        strides = (weight.stride(0), weight.stride(2), weight.stride(1))
        dx, partial, nt = _routed_mm(
            dy, strides, weight, None, experts, gates, cu_seqlens, tiles, block_m, d_in,
            dgate_x=x if need_gates else None,
            dgate_bias=bias if (need_gates and bias is not None) else None)
        if need_gates:
            dgates = _empty((num_seg, k), gates.dtype, dev)
            if num_seg > 0:
                if n > 0:
                    _tile_to_segment_sum_kernel[(num_seg,)](
                        partial, tiles[2], dgates, tiles[0].numel(), nt,
                        K=k, BLOCK_K=triton.next_power_of_2(k))
                else:
                    dgates.zero_()

    if (need_weight or (need_bias and bias is not None)) and (n == 0 or num_seg == 0 or d_out == 0):
        # Nothing routed: no kernel. Contiguous like every other gradient here (the op's fake says
        # so; zeros_like would copy a transposed weight's strides).
        dweight = weight.new_zeros(weight.shape)
        dbias = bias.new_zeros(bias.shape) if bias is not None else None
    elif need_weight or (need_bias and bias is not None):
        block_m = 16 if triton_interpret() else 64
        block_k = _block(d_in, 64)
        block_n = _block(d_out, 64)
        split = _weight_split(num_experts, d_in, d_out, block_k, block_n, n * k, dev)
        flat_e = experts.reshape(-1).to(torch.int64)
        sorted_e, order = torch.sort(flat_e, stable=True)
        cu = cu_seqlens.to(torch.int64)
        lengths = cu[1:] - cu[:-1]
        asg_seg = order // k
        asg_gate = gates.reshape(-1)[order]
        asg_len = lengths[asg_seg]
        cum = torch.zeros(order.numel() + 1, dtype=torch.int64, device=dev)
        torch.cumsum(asg_len, 0, out=cum[1:])
        # first[e] = assignments with expert < e (bincount would sync on CUDA to size its output)
        first = torch.searchsorted(sorted_e, torch.arange(num_experts + 1, device=dev))
        lo, hi = cum[first[:-1]], cum[first[1:]]
        j = torch.arange(split + 1, device=dev)
        split_v = lo[:, None] + ((hi - lo)[:, None] * j[None, :]) // split  # [E, SPLIT+1]
        # assignments overlapping [v0, v1): end > v0 and start < v1
        a0 = torch.searchsorted(cum[1:], split_v[:, :-1].contiguous(), right=True)
        a1 = torch.searchsorted(cum[:-1], split_v[:, 1:].contiguous(), right=False)
        split_a = torch.stack([a0, torch.maximum(a0, a1)], dim=-1).contiguous()
        dw_part = _empty((split, num_experts, d_in, d_out), torch.float32, dev)
        db_part = (_empty((split, num_experts, d_out), torch.float32, dev)
                   if bias is not None else dw_part)
        # At least one d_in tile: the bias gradient is written by the pid_k == 0 programs, which
        # must exist (and write db_part) even when d_in == 0.
        grid = (num_experts * split, max(1, triton.cdiv(d_in, block_k)), triton.cdiv(d_out, block_n))
        _expert_weight_grad_kernel[grid](
            x, dy, cu, asg_seg, asg_gate, cum, split_v.contiguous(), split_a,
            dw_part, db_part, d_in, d_out, num_experts,
            x.stride(0), x.stride(1), dy.stride(0), dy.stride(1),
            SPLIT=split, HAS_BIAS=bias is not None,
            BLOCK_M=block_m, BLOCK_K=block_k, BLOCK_N=block_n,
            # 8 warps: the two 64x64 float32 accumulators (acc, part) spill with 4 on sm_90.
            UPCAST=triton_interpret(), PRECISION=prec, num_warps=8, num_stages=3,
        )
        # Fixed-order sum over the slices: deterministic.
        dweight = (dw_part[0] if split == 1 else dw_part.sum(0)).to(weight.dtype)
        if bias is not None:
            dbias = (db_part[0] if split == 1 else db_part.sum(0)).to(bias.dtype)
    return dx, dgates, dweight, dbias
