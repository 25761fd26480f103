"""Triton kernels for the segment-routed expert projection (DESIGN §3.2) and their launchers.

``y_t = Σ_i gates[s,i] · (x_t @ W[experts[s,i]] + b[experts[s,i]])`` for every token t of segment s.

Plan. Everything the kernels need to know about *where* work is — which row tiles exist and
which (segment, slot) assignments each expert owns — depends on ``cu_seqlens`` and ``experts``
only, not on the values being multiplied. One launch of :func:`_plan_kernel` builds it on the
device (no host sync: every size is bounded from shapes alone) into two int64 buffers:

* ``tiles`` = ``[tile_seg (T) | tile_row0 (T) | tile_start (S+1)]``: every segment is cut into
  row tiles of ``BLOCK_M`` tokens that never cross a segment boundary (so one program owns rows
  that share the same k experts); T = ``cdiv(N, BLOCK_M) + S`` bounds the tile count, entries
  past the real count have ``tile_seg = -1`` and their programs exit at once. ``tile_start[s]``
  is segment s's first tile (the gate-gradient reduction walks a segment's tiles with it).
* ``routing`` = ``[order (S·k) | start (S·k+1) | first (E+1)]``: the S·k assignments
  ``a = s·k + i`` stably sorted by expert (a counting sort: expert e's assignments are
  ``order[first[e]:first[e+1]]``), and ``start`` the prefix sum of their segment lengths in that
  order, i.e. where each assignment's rows begin in expert e's virtual token stream. A plan
  built for P expert choices at once (``experts`` [P, S, k], e.g. the P modality pairs of one
  Mixture-of-Aligners layer that share a source's ``cu_seqlens``) has ``routing`` [P, ...]; the
  tiles are shared.

The forward is then the plan plus one launch, the backward three launches reusing the forward's
plan (the op saves it): no tile map or sort is rebuilt.

Kernels:

* :func:`_plan_kernel` — the plan. Programs ``[0, n_tile_programs)`` each fill ``BLOCK_P`` tile
  entries with the scan the attention block tables share (:func:`._tiles.segment_tiles`);
  program (p, e) of the rest sorts expert e's assignments of choice p (a count of the
  assignments with smaller ids, then stable positions from a cumsum of matches).
* :func:`_routed_mm_kernel` — forward ``y = Σ_i g_i (x W_e + b_e)``, and, with weight strides
  swapped, the input gradient ``dx = Σ_i g_i dy W_eᵀ``. In that backward mode it also computes
  per-tile partial gate gradients ``Σ_rows x · (dy W_eᵀ) + dy · b_e`` (= ``dy · (x W_e + b_e)``),
  so no extra pass over ``x`` W is needed.
* :func:`_expert_weight_grad_kernel` — ``dW_e = Σ_{(s,i): e_si = e} g_si x_sᵀ dy_s`` (and
  ``db_e``), grouped by expert through the plan: each expert's token stream is split into
  ``SPLIT`` contiguous slices for parallelism (a program finds its slice's assignments by a
  binary search of ``start``) and every program writes its own float32 partial.
* :func:`_finalize_kernel` — one launch for every reduction the backward still needs, each in a
  fixed order (deterministic; no atomics): the gate-gradient partials tile by tile into
  ``dgates[S, k]``, and the ``SPLIT`` weight and bias partials into ``dW``/``db`` in the
  parameters' dtype.

Sizes that change with every batch (token, tile, segment and assignment counts) are
``do_not_specialize``: one compiled kernel serves every batch size.

Pure kernel code: arguments are assumed valid (see :mod:`hotspot_erc.ops.grouped_linear`);
whatever the values, nothing is read or written out of bounds (an expert id outside [0, E)
contributes nothing; the op's checks report it).
"""
from __future__ import annotations


import torch
import triton
import triton.language as tl

from ._launch import block_size, dot_precision, on_device, triton_interpret
from ._tiles import segment_tiles


# ----------------------------------------------------------------------------- plan

@triton.jit(do_not_specialize=["S", "T", "n_tile_programs", "routing_stride"])
def _plan_kernel(
    cu_ptr, experts_ptr, tiles_ptr, routing_ptr,
    S, T, E, n_tile_programs, routing_stride,
    K: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_S: tl.constexpr,
    BLOCK_A: tl.constexpr,
):
    pid = tl.program_id(0)
    if pid < n_tile_programs:
        # Tile entries [pid·BLOCK_P, (pid+1)·BLOCK_P); program 0 also writes tile_start[1:].
        ts = pid * BLOCK_P + tl.arange(0, BLOCK_P).to(tl.int64)
        seg, blk, total = segment_tiles(cu_ptr, S, BLOCK_M, ts, tiles_ptr + 2 * T + 1, pid == 0,
                                        BLOCK_S=BLOCK_S, WRITE_ENDS=True)
        real = ts < total
        inside = ts < T
        seg_c = tl.minimum(seg, tl.maximum(S - 1, 0))
        row0 = tl.load(cu_ptr + seg_c, mask=real & inside, other=0).to(tl.int64) + blk * BLOCK_M
        tl.store(tiles_ptr + ts, tl.where(real, seg, -1), mask=inside)
        tl.store(tiles_ptr + T + ts, tl.where(real, row0, 0), mask=inside)
        if pid == 0:
            tl.store(tiles_ptr + 2 * T, 0)
    else:
        # Expert e of choice p: assignments a = s·K + i with experts[p, s, i] == e, in order of a.
        q = pid - n_tile_programs
        p = q // E
        e = q % E
        SK = S * K
        ex_ptr = experts_ptr + p.to(tl.int64) * SK
        out_ptr = routing_ptr + p.to(tl.int64) * routing_stride
        # pass 1: how many assignments, and how many rows, go to smaller expert ids
        before = tl.zeros([1], dtype=tl.int64)
        rows_before = tl.zeros([1], dtype=tl.int64)
        for a0 in range(0, SK, BLOCK_A):
            a = a0 + tl.arange(0, BLOCK_A)
            m = a < SK
            ea = tl.load(ex_ptr + a, mask=m, other=-1).to(tl.int64)
            smaller = m & (ea >= 0) & (ea < e)
            seg = a // K
            ln = (tl.load(cu_ptr + seg + 1, mask=smaller, other=0).to(tl.int64)
                  - tl.load(cu_ptr + seg, mask=smaller, other=0).to(tl.int64))
            before += tl.sum(smaller.to(tl.int64), 0)
            rows_before += tl.sum(ln, 0)
        # pass 2: stable positions of expert e's assignments and their rows' start
        pos0 = before
        rows = rows_before
        for a0 in range(0, SK, BLOCK_A):
            a = a0 + tl.arange(0, BLOCK_A)
            m = a < SK
            ea = tl.load(ex_ptr + a, mask=m, other=-1).to(tl.int64)
            hit = m & (ea == e)
            seg = a // K
            ln = (tl.load(cu_ptr + seg + 1, mask=hit, other=0).to(tl.int64)
                  - tl.load(cu_ptr + seg, mask=hit, other=0).to(tl.int64))
            hit64 = hit.to(tl.int64)
            pos = pos0 + tl.cumsum(hit64, 0) - 1
            row_end = rows + tl.cumsum(ln, 0)
            tl.store(out_ptr + pos, a.to(tl.int64), mask=hit)
            tl.store(out_ptr + SK + pos, row_end - ln, mask=hit)
            pos0 += tl.sum(hit64, 0)
            rows += tl.sum(ln, 0)
        # first[e] and first[e + 1]; start[first[e + 1]] closes expert e's stream (the next
        # expert writes the same value as its own first start, or it is the total).
        zero = tl.arange(0, 1)
        tl.store(out_ptr + 2 * SK + 1 + e + zero, before)
        tl.store(out_ptr + 2 * SK + 1 + e + 1 + zero, pos0)
        tl.store(out_ptr + SK + pos0 + zero, rows)
        tl.store(out_ptr + SK + before + zero, rows_before)


# ----------------------------------------------------------------------------- products

@triton.jit(do_not_specialize=["T"])
def _routed_mm_kernel(
    a_ptr, b_ptr, bias_ptr, experts_ptr, gates_ptr, out_ptr,
    tiles_ptr, cu_ptr,
    x2_ptr, dgb_ptr, partial_ptr,
    KA, NB, T, E,
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
    seg = tl.load(tiles_ptr + t)
    if seg < 0:  # past the real tile count
        return
    row0 = tl.load(tiles_ptr + T + t)
    row_end = tl.load(cu_ptr + seg + 1).to(tl.int64)
    rows = row0 + tl.arange(0, BLOCK_M)
    rmask = rows < row_end
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    cmask = cols < NB
    out = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for i in range(K):
        e = tl.load(experts_ptr + seg * K + i).to(tl.int64)
        g = tl.load(gates_ptr + seg * K + i).to(tl.float32)
        # An id outside [0, E) (which the op's checks report) contributes nothing and reads
        # expert 0's weight, never out of bounds.
        g = tl.where((e >= 0) & (e < E), g, 0.0)
        e = tl.where((e >= 0) & (e < E), e, 0)
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
            tl.store(partial_ptr + (pid_n * T + t) * K + i, part)
        if HAS_BIAS:
            bias = tl.load(bias_ptr + e * stride_biase + cols, mask=cmask, other=0.0).to(tl.float32)
            acc += bias[None, :]
        out += g * acc
    tl.store(out_ptr + rows[:, None] * stride_om + cols[None, :] * stride_on,
             out.to(out_ptr.dtype.element_ty), mask=rmask[:, None] & cmask[None, :])


@triton.jit
def _first_at_least(start_ptr, lo, hi, value, STEPS):
    """Smallest index a in [lo, hi] with start[a] >= value (start non-decreasing on [lo, hi)):
    a binary search of STEPS = ceil(log2(hi - lo + 1)) steps bounded by the assignment count."""
    for _ in range(STEPS):
        active = lo < hi
        mid = (lo + hi) // 2
        v = tl.load(start_ptr + mid, mask=active, other=0)
        right = v < value
        lo = tl.where(active & right, mid + 1, lo)
        hi = tl.where(active & (~right), mid, hi)
    return lo


@triton.jit(do_not_specialize=["SK", "STEPS", "SPLIT"])
def _expert_weight_grad_kernel(
    x_ptr, dy_ptr, cu_ptr, gates_ptr, routing_ptr,
    dw_ptr, db_ptr,
    D_IN, D_OUT, E, SK, STEPS, SPLIT,
    stride_xm, stride_xk, stride_ym, stride_yn,
    K: tl.constexpr, HAS_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr,
    UPCAST: tl.constexpr, PRECISION: tl.constexpr,
):
    pid = tl.program_id(0)  # = e * SPLIT + j
    pid_k = tl.program_id(1)
    pid_n = tl.program_id(2)
    e = pid // SPLIT
    j = pid % SPLIT
    order_ptr = routing_ptr
    start_ptr = routing_ptr + SK
    f0 = tl.load(routing_ptr + 2 * SK + 1 + e)
    f1 = tl.load(routing_ptr + 2 * SK + 1 + e + 1)
    # This program owns the virtual token range [v0, v1) of expert e's stream (its rows in
    # order of assignment) and the assignments [a0, a1) that overlap it.
    lo = tl.load(start_ptr + f0)
    hi = tl.load(start_ptr + f1)
    v0 = lo + ((hi - lo) * j) // SPLIT
    v1 = lo + ((hi - lo) * (j + 1)) // SPLIT
    # first assignment ending after v0 (= last one starting at or before it), first starting at v1
    a0 = tl.maximum(_first_at_least(start_ptr, f0, f1, v0 + 1, STEPS) - 1, f0)
    a1 = _first_at_least(start_ptr, f0, f1, v1, STEPS)
    ks = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    kmask = ks < D_IN
    ns = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    nmask = ns < D_OUT
    acc = tl.zeros((BLOCK_K, BLOCK_N), dtype=tl.float32)
    acc_b = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for a in range(a0, a1):
        asg = tl.load(order_ptr + a)
        seg = asg // K
        g = tl.load(gates_ptr + asg).to(tl.float32)
        c = tl.load(start_ptr + a)
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


@triton.jit(do_not_specialize=["S", "T", "n_gate_programs", "n_w_programs", "W_NUMEL", "B_NUMEL", "SPLIT"])
def _finalize_kernel(
    partial_ptr, tiles_ptr, dgates_ptr,
    dw_part_ptr, dw_ptr, db_part_ptr, db_ptr,
    S, T, NT, n_gate_programs, n_w_programs, W_NUMEL, B_NUMEL, SPLIT,
    K: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    if pid < n_gate_programs:
        # dgates[s, :] = Σ over s's tiles t, then column tiles j, of partial[j, t, :]
        s = pid
        t0 = tl.load(tiles_ptr + 2 * T + s)
        t1 = tl.load(tiles_ptr + 2 * T + s + 1)
        ks = tl.arange(0, BLOCK_K)
        kmask = ks < K
        acc = tl.zeros((BLOCK_K,), dtype=tl.float32)
        for t in range(t0, t1):
            for j in range(0, NT):
                acc += tl.load(partial_ptr + (j * T + t) * K + ks, mask=kmask, other=0.0)
        tl.store(dgates_ptr + s * K + ks, acc.to(dgates_ptr.dtype.element_ty), mask=kmask)
    elif pid < n_gate_programs + n_w_programs:
        _sum_slices(dw_part_ptr, dw_ptr, pid - n_gate_programs, W_NUMEL, SPLIT, BLOCK)
    else:
        _sum_slices(db_part_ptr, db_ptr, pid - n_gate_programs - n_w_programs, B_NUMEL, SPLIT, BLOCK)


@triton.jit
def _sum_slices(src, dst, q, numel, SPLIT, BLOCK: tl.constexpr):
    """dst[i] = Σ_j src[j, i] over the SPLIT float32 slices in slice order, in dst's dtype."""
    offs = q.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = offs < numel
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    src_offs = offs
    for _ in range(SPLIT):
        acc += tl.load(src + src_offs, mask=m, other=0.0)
        src_offs += numel
    tl.store(dst + offs, acc.to(dst.dtype.element_ty), mask=m)


# ----------------------------------------------------------------------------- launchers

def _empty(shape, dtype, device) -> torch.Tensor:
    """Every buffer a kernel must fill; tests replace this with a NaN fill so unwritten
    elements show."""
    return torch.empty(shape, dtype=dtype, device=device)


def plan_block_m(num_tokens: int, num_segments: int) -> int:
    """Row tile of the plan: short conversation segments waste less of a 32-row tile on their
    ragged end (shapes only: no sync)."""
    if triton_interpret():
        return 16
    mean_len = num_tokens / max(num_segments, 1)
    return 32 if mean_len < 96 else 64


def plan_sizes(num_tokens: int, num_segments: int, k: int, num_experts: int, block_m: int):
    """(tile bound T, length of ``tiles``, length of one choice's ``routing``)."""
    t = triton.cdiv(num_tokens, block_m) + num_segments
    return t, 2 * t + num_segments + 1, 2 * num_segments * k + 1 + num_experts + 1


_PLAN_TILES = 128     # tile entries per plan program
_PLAN_SEGMENTS = 256  # segments scanned per step
_PLAN_ASSIGN = 512    # assignments scanned per step


@on_device
def build_plan(cu_seqlens: torch.Tensor, experts: torch.Tensor, num_experts: int, num_tokens: int,
               block_m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The plan (``tiles`` [L_t], ``routing`` [L_r] or [P, L_r] for ``experts`` [P, S, k]): one
    launch, no host sync (see the module docstring for the layout)."""
    num_seg, k = experts.shape[-2], experts.shape[-1]
    choices = experts.shape[0] if experts.dim() == 3 else 1
    t, len_tiles, len_routing = plan_sizes(num_tokens, num_seg, k, num_experts, block_m)
    dev = cu_seqlens.device
    tiles = _empty((len_tiles,), torch.int64, dev)
    routing = _empty((choices, len_routing) if experts.dim() == 3 else (len_routing,), torch.int64, dev)
    n_tile_programs = triton.cdiv(t, _PLAN_TILES) if t > 0 else 1  # one writes tile_start[0]
    grid = (n_tile_programs + choices * num_experts,)
    _plan_kernel[grid](
        cu_seqlens, experts, tiles, routing,
        num_seg, t, num_experts, n_tile_programs, len_routing,
        K=k, BLOCK_M=block_m, BLOCK_P=_PLAN_TILES, BLOCK_S=_PLAN_SEGMENTS, BLOCK_A=_PLAN_ASSIGN,
    )
    return tiles, routing


def _routed_mm(a, b_strides, weight, bias, experts, gates, cu, tiles, block_m, out_features,
               dgate_x=None, dgate_bias=None):
    """Launch :func:`_routed_mm_kernel`; returns out (and the dgate partials + column tiles)."""
    n, ka = a.shape
    num_seg, k = experts.shape
    t = triton.cdiv(n, block_m) + num_seg
    out = _empty((n, out_features), a.dtype, a.device)
    block_n = block_size(out_features, 128)
    block_k = block_size(ka, 64 if a.dtype != torch.float32 else 32)
    # At least one column tile even when out_features == 0 (d_in == 0 in the backward): the
    # gate-gradient bias term dy·b_e is computed by the pid_n == 0 programs, so an empty grid
    # would leave it out (the masked stores write nothing).
    nt = max(1, triton.cdiv(out_features, block_n))
    dgate = dgate_x is not None
    partial = _empty((nt, t, k), torch.float32, a.device) if dgate else out
    dummy = out
    if n > 0:
        _routed_mm_kernel[(t, nt)](
            a, weight, bias if bias is not None else dummy, experts, gates, out,
            tiles, cu,
            dgate_x if dgate else dummy, dgate_bias if dgate_bias is not None else dummy, partial,
            ka, out_features, t, weight.shape[0],
            a.stride(0), a.stride(1),
            *b_strides,
            bias.stride(0) if bias is not None else 0,
            out.stride(0), out.stride(1),
            dgate_x.stride(0) if dgate else 0, dgate_x.stride(1) if dgate else 0,
            dgate_bias.stride(0) if dgate_bias is not None else 0,
            K=k, HAS_BIAS=bias is not None, DGATE=dgate, DGATE_BIAS=dgate_bias is not None,
            BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k,
            UPCAST=triton_interpret(), PRECISION=dot_precision(a.dtype),
            # Two [BLOCK_M, BLOCK_N] float32 accumulators (acc, out) plus int64 pointer tiles:
            # at 64x128, 4 warps spill on sm_90 by ptxas' count (128 B forward, ~1.2 KB with the
            # gate gradient); 8 warps halve the per-thread share (0 B / ~450 B).
            num_warps=8 if block_m * block_n >= 64 * 128 else 4, num_stages=3,
        )
    return out, partial, nt


@on_device
def grouped_linear_forward(x, cu_seqlens, experts, gates, weight, bias, tiles, block_m):
    """Forward launcher: one kernel launch over the plan's tiles."""
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


_FINALIZE_BLOCK = 1024


@on_device
def grouped_linear_backward(dy, x, cu_seqlens, experts, gates, weight, bias, tiles, routing, block_m,
                            need_x=True, need_gates=True, need_weight=True, need_bias=True):
    """Gradients (dx, dgates, dweight, dbias) from the forward's plan; entries not needed are
    returned as None. Three launches: the routed product (dx and the gate-gradient partials), the
    weight-gradient partials, and one reduction of every partial."""
    n, d_in = x.shape
    num_experts, _, d_out = weight.shape
    num_seg, k = experts.shape
    dev = x.device
    prec = dot_precision(x.dtype)
    dx = dgates = dweight = dbias = None
    dy = dy.contiguous()
    need_bias = need_bias and bias is not None
    t = triton.cdiv(n, block_m) + num_seg

    partial, nt = None, 0
    if need_x or need_gates:
        # dy @ W_eᵀ: the same routed kernel with the weight's last two strides swapped.
        strides = (weight.stride(0), weight.stride(2), weight.stride(1))
        dx, partial, nt = _routed_mm(
            dy, strides, weight, None, experts, gates, cu_seqlens, tiles, block_m, d_in,
            dgate_x=x if need_gates else None,
            dgate_bias=bias if (need_gates and bias is not None) else None)
        if not need_x:
            dx = None
    if need_gates:
        dgates = _empty((num_seg, k), gates.dtype, dev)
        if n == 0 and num_seg > 0:
            dgates.zero_()  # no tile ran: nothing to reduce
    n_gate_programs = num_seg if (need_gates and n > 0) else 0

    n_w_programs = n_b_programs = 0
    split = 1
    dw_part = db_part = None
    if need_weight or need_bias:
        dweight = _empty(weight.shape, weight.dtype, dev) if need_weight else None
        dbias = _empty(bias.shape, bias.dtype, dev) if need_bias else None
        if n == 0 or num_seg == 0 or d_out == 0:
            # Nothing routed: zero gradients, no kernel.
            if dweight is not None:
                dweight.zero_()
            if dbias is not None:
                dbias.zero_()
        else:
            wb_m = 16 if triton_interpret() else 64
            block_k = block_size(d_in, 64)
            block_n = block_size(d_out, 64)
            split = _weight_split(num_experts, d_in, d_out, block_k, block_n, n * k, dev)
            dw_part = _empty((split, num_experts, d_in, d_out), torch.float32, dev)
            db_part = (_empty((split, num_experts, d_out), torch.float32, dev)
                       if bias is not None else dw_part)
            sk = num_seg * k
            # At least one d_in tile: the bias gradient is written by the pid_k == 0 programs,
            # which must exist (and write db_part) even when d_in == 0.
            grid = (num_experts * split, max(1, triton.cdiv(d_in, block_k)), triton.cdiv(d_out, block_n))
            _expert_weight_grad_kernel[grid](
                x, dy, cu_seqlens, gates, routing,
                # SPLIT follows the row count: a runtime argument, or every batch size would compile
                dw_part, db_part, d_in, d_out, num_experts, sk, max(1, sk).bit_length() + 1, split,
                x.stride(0), x.stride(1), dy.stride(0), dy.stride(1),
                K=k, HAS_BIAS=bias is not None,
                BLOCK_M=wb_m, BLOCK_K=block_k, BLOCK_N=block_n,
                # 8 warps: the two 64x64 float32 accumulators (acc, part) spill with 4 on sm_90.
                UPCAST=triton_interpret(), PRECISION=prec, num_warps=8, num_stages=3,
            )
            if need_weight:
                n_w_programs = triton.cdiv(dweight.numel(), _FINALIZE_BLOCK)
            if need_bias:
                n_b_programs = triton.cdiv(dbias.numel(), _FINALIZE_BLOCK)

    grid = n_gate_programs + n_w_programs + n_b_programs
    if grid > 0:
        # Unused pointers get any valid buffer; their program ranges are empty.
        any_f32 = partial if partial is not None else dw_part
        _finalize_kernel[(grid,)](
            partial if partial is not None else any_f32, tiles,
            dgates if dgates is not None else any_f32,
            dw_part if dw_part is not None else any_f32, dweight if dweight is not None else any_f32,
            db_part if need_bias else any_f32, dbias if dbias is not None else any_f32,
            num_seg, t, nt, n_gate_programs, n_w_programs,
            dweight.numel() if n_w_programs else 0, dbias.numel() if n_b_programs else 0, split,
            K=k, BLOCK_K=triton.next_power_of_2(k), BLOCK=_FINALIZE_BLOCK,
        )
    return dx, dgates, dweight, dbias
