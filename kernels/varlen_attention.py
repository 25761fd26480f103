"""Triton kernels for variable-length (packed) multi-head attention, FlashAttention style.

Layout: ``q`` [Nq, H, Dh], ``k``/``v`` [Nk, H, Dh] hold the tokens of S segments back to back;
``cu_q``/``cu_k`` [S+1] are the segment offsets. Query segment s attends to key segment s only.

Scheduling. Each program owns one tile of one segment (tiles never cross segments) and one head.
Tiles are mapped to programs by a *block table* that one small kernel builds on the device
(``_block_table_kernel``), so a forward call makes two launches and never synchronises with the
host: the grid size is the bound ``cdiv(N, BLOCK) + S`` (every segment wastes at most one
partial tile), known from shapes alone; programs past the last real tile exit at once. The
table's tile size follows the average segment length (shapes only); the other tile, the warps
and the pipeline stages are autotuned per head dim and dtype.

Forward (``_fwd_kernel``): online softmax over the segment's key tiles; saves the row
log-sum-exp (natural log, -inf for rows whose segment has no keys) for the backward.
Backward, deterministic (no atomics): ``_bwd_dq_kernel`` gives each query tile its own program,
which computes the rows' softmax-gradient term rowsum(dO·O) (stored for the next kernel) and
walks the key tiles accumulating dQ; then ``_bwd_dkdv_kernel`` gives each key tile its own
program, which walks the segment's query tiles and accumulates dK and dV in registers.

Numerics: loads keep the input dtype; softmax statistics and accumulators are float32. On a GPU,
half-precision inputs go to ``tl.dot`` in their own dtype (tensor cores, float32 accumulation,
P rounded to the input dtype before P·V as FlashAttention does); float32 inputs use TF32 only
when ``torch.backends.cuda.matmul.allow_tf32`` allows it. Under ``TRITON_INTERPRET=1``
bfloat16 operands are upcast to float32 first (the interpreter has no bfloat16 arithmetic).

Nothing here validates arguments: :mod:`hotspot_erc.ops.varlen_attention` does.
"""
from __future__ import annotations


import torch
import triton
import triton.language as tl

from . import tile_configs
from ._launch import on_device, triton_interpret
from ._tiles import segment_tiles

LOG2E = 1.4426950408889634


@triton.jit
def _segment(TBL, CU_Q, CU_K, pid, num_tiles):
    """Program ``pid``'s segment (-1: nothing to do), tile index inside it, the segment's first
    query and key token (int64) and its query and key lengths (int32)."""
    seg = tl.load(TBL + pid)
    blk = tl.load(TBL + num_tiles + pid)
    safe = tl.maximum(seg, 0)
    q_start = tl.load(CU_Q + safe).to(tl.int64)
    k_start = tl.load(CU_K + safe).to(tl.int64)
    q_len = (tl.load(CU_Q + safe + 1).to(tl.int64) - q_start).to(tl.int32)
    k_len = (tl.load(CU_K + safe + 1).to(tl.int64) - k_start).to(tl.int32)
    return seg, blk, q_start, k_start, q_len, k_len


def _candidates(free_tile: str) -> list:
    """The configs ``HOTSPOT_ERC_AUTOTUNE=1`` times (the free tile, warps, pipeline stages);
    by default the checked-in table (:mod:`hotspot_erc.kernels.tile_configs`) picks one."""
    return [triton.Config({free_tile: t}, num_warps=w, num_stages=st)
            for t in (32, 64) for w in (4, 8) for st in (1, 2, 3)]


# The autotuner's key when HOTSPOT_ERC_AUTOTUNE=1: token counts are not in it (they change every
# batch, the best config hardly does).
_KEY = ["head_dim", "BLOCK_D", "DOT_F32", "PRECISION"]
_FREE_TILE = {"fwd": "BLOCK_N", "dq": "BLOCK_N", "dkdv": "BLOCK_M"}
_TABLE_TILE = {"fwd": "BLOCK_M", "dq": "BLOCK_M", "dkdv": "BLOCK_N"}
_AUTOTUNED: dict = {}


def _launch_config(name: str, kernel, device: torch.device, dtype: torch.dtype, block_d: int,
                   table_tile: int):
    """(kernel to launch, its extra launch arguments). Fixed by default: the table entry for
    (kernel, arch family, dtype class, head tile, table tile), so every process and every rank
    runs the same tile (hence the same summation order: bitwise-identical results), and nothing
    is timed or recompiled at the first call of a shape. ``HOTSPOT_ERC_AUTOTUNE=1`` autotunes
    instead (``benchmarks/tune_attention.py`` writes the winners back into the table)."""
    if _interpreting():
        return kernel, {_FREE_TILE[name]: 16, "num_warps": 4, "num_stages": 1}
    if tile_configs.autotune_enabled():
        if name not in _AUTOTUNED:
            _AUTOTUNED[name] = triton.autotune(configs=_candidates(_FREE_TILE[name]),
                                               key=_KEY + [_TABLE_TILE[name]])(kernel)
        return _AUTOTUNED[name], {}
    cfg = tile_configs.lookup("varlen_attention", name, tile_configs.arch_family(device),
                              tile_configs.dtype_class(dtype), block_d, table_tile)
    return kernel, {_FREE_TILE[name]: cfg["tile"], "num_warps": cfg["num_warps"], "num_stages": cfg["num_stages"]}


# Address arithmetic: the segment's start goes into the base pointer as an int64 scalar; offsets
# inside a segment stay int32 (half the registers of int64 offset tiles), which holds while one
# segment's length x H x Dh is below 2**31 elements.


@triton.jit(do_not_specialize=["num_tiles"])
def _fwd_kernel(
    Q, K, V, O, LSE, CU_Q, CU_K, TBL, num_tiles,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh,
    stride_ot, stride_oh, stride_lt, stride_lh,
    head_dim, qk_scale,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    DOT_F32: tl.constexpr, PRECISION: tl.constexpr,
):
    pid = tl.program_id(0)
    h = tl.program_id(1).to(tl.int64)
    seg, blk, q_start, k_start, q_len, k_len = _segment(TBL, CU_Q, CU_K, pid, num_tiles)
    if seg < 0:
        return
    Q += q_start * stride_qt + h * stride_qh
    K += k_start * stride_kt + h * stride_kh
    V += k_start * stride_vt + h * stride_vh
    O += q_start * stride_ot + h * stride_oh
    LSE += q_start * stride_lt + h * stride_lh

    offs_m = blk * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    m_mask = offs_m < q_len
    d_mask = offs_d < head_dim

    q = tl.load(Q + offs_m[:, None] * stride_qt + offs_d[None, :], mask=m_mask[:, None] & d_mask[None, :], other=0.0)
    if DOT_F32:
        q = q.to(tl.float32)
    # qk_scale carries log2(e) so the softmax runs on exp2.
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    for start_n in range(0, k_len, BLOCK_N):
        cols = start_n + offs_n
        n_mask = cols < k_len
        kv_mask = n_mask[:, None] & d_mask[None, :]
        k = tl.load(K + cols[:, None] * stride_kt + offs_d[None, :], mask=kv_mask, other=0.0)
        v = tl.load(V + cols[:, None] * stride_vt + offs_d[None, :], mask=kv_mask, other=0.0)
        if DOT_F32:
            k = k.to(tl.float32)
            v = v.to(tl.float32)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
        s = tl.where(n_mask[None, :], s, float("-inf"))
        # Every key tile holds at least one real key, so m_new is finite and alpha is exact 0
        # on the first tile (exp2(-inf)).
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.math.exp2(s - m_new[:, None])
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
        m_i = m_new

    has_keys = l_i > 0.0
    out = acc / tl.where(has_keys, l_i, 1.0)[:, None]
    tl.store(O + offs_m[:, None] * stride_ot + offs_d[None, :], out.to(O.dtype.element_ty),
             mask=m_mask[:, None] & d_mask[None, :])
    lse = tl.where(has_keys, (m_i + tl.math.log2(tl.where(has_keys, l_i, 1.0))) * 0.6931471805599453,
                   float("-inf"))
    tl.store(LSE + offs_m * stride_lt, lse, mask=m_mask)


@triton.jit(do_not_specialize=["num_tiles"])
def _bwd_dkdv_kernel(
    Q, K, V, DO, LSE, DELTA, DK, DV, CU_Q, CU_K, TBL, num_tiles,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh,
    stride_dot, stride_doh, stride_lt, stride_lh,
    stride_dkt, stride_dkh, stride_dvt, stride_dvh,
    head_dim, sm_scale, qk_scale,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    DOT_F32: tl.constexpr, PRECISION: tl.constexpr,
):
    pid = tl.program_id(0)
    h = tl.program_id(1).to(tl.int64)
    seg, blk, q_start, k_start, q_len, k_len = _segment(TBL, CU_Q, CU_K, pid, num_tiles)
    if seg < 0:
        return
    Q += q_start * stride_qt + h * stride_qh
    DO += q_start * stride_dot + h * stride_doh
    LSE += q_start * stride_lt + h * stride_lh
    DELTA += q_start * stride_lt + h * stride_lh
    K += k_start * stride_kt + h * stride_kh
    V += k_start * stride_vt + h * stride_vh
    DK += k_start * stride_dkt + h * stride_dkh
    DV += k_start * stride_dvt + h * stride_dvh

    offs_n = blk * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    n_mask = offs_n < k_len
    d_mask = offs_d < head_dim
    kv_mask = n_mask[:, None] & d_mask[None, :]
    k = tl.load(K + offs_n[:, None] * stride_kt + offs_d[None, :], mask=kv_mask, other=0.0)
    v = tl.load(V + offs_n[:, None] * stride_vt + offs_d[None, :], mask=kv_mask, other=0.0)
    if DOT_F32:
        k = k.to(tl.float32)
        v = v.to(tl.float32)
    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    for start_m in range(0, q_len, BLOCK_M):
        rows = start_m + offs_m
        m_mask = rows < q_len
        qd_mask = m_mask[:, None] & d_mask[None, :]
        q = tl.load(Q + rows[:, None] * stride_qt + offs_d[None, :], mask=qd_mask, other=0.0)
        do = tl.load(DO + rows[:, None] * stride_dot + offs_d[None, :], mask=qd_mask, other=0.0)
        if DOT_F32:
            q = q.to(tl.float32)
            do = do.to(tl.float32)
        # This segment has keys, so every real row has a finite LSE; padded rows get p = 0.
        lse = tl.load(LSE + rows * stride_lt, mask=m_mask, other=0.0) * 1.4426950408889634
        delta = tl.load(DELTA + rows * stride_lt, mask=m_mask, other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
        p = tl.math.exp2(s - lse[:, None])
        p = tl.where(m_mask[:, None] & n_mask[None, :], p, 0.0)
        dv += tl.dot(tl.trans(p.to(do.dtype)), do, input_precision=PRECISION)
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
        ds = p * (dp - delta[:, None])
        dk += tl.dot(tl.trans(ds.to(q.dtype)), q, input_precision=PRECISION)
    dk = dk * sm_scale
    tl.store(DK + offs_n[:, None] * stride_dkt + offs_d[None, :], dk.to(DK.dtype.element_ty), mask=kv_mask)
    tl.store(DV + offs_n[:, None] * stride_dvt + offs_d[None, :], dv.to(DV.dtype.element_ty), mask=kv_mask)


@triton.jit(do_not_specialize=["num_tiles"])
def _bwd_dq_kernel(
    Q, K, V, O, DO, LSE, DLSE, DELTA, DQ, CU_Q, CU_K, TBL, num_tiles,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_ot, stride_oh,
    stride_dot, stride_doh, stride_lt, stride_lh, stride_dqt, stride_dqh,
    head_dim, sm_scale, qk_scale,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    DOT_F32: tl.constexpr, PRECISION: tl.constexpr, HAS_DLSE: tl.constexpr,
):
    pid = tl.program_id(0)
    h = tl.program_id(1).to(tl.int64)
    seg, blk, q_start, k_start, q_len, k_len = _segment(TBL, CU_Q, CU_K, pid, num_tiles)
    if seg < 0:
        return
    Q += q_start * stride_qt + h * stride_qh
    O += q_start * stride_ot + h * stride_oh
    DO += q_start * stride_dot + h * stride_doh
    LSE += q_start * stride_lt + h * stride_lh
    DLSE += q_start * stride_lt + h * stride_lh
    DELTA += q_start * stride_lt + h * stride_lh
    DQ += q_start * stride_dqt + h * stride_dqh
    K += k_start * stride_kt + h * stride_kh
    V += k_start * stride_vt + h * stride_vh

    offs_m = blk * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    m_mask = offs_m < q_len
    d_mask = offs_d < head_dim
    qd_mask = m_mask[:, None] & d_mask[None, :]
    q = tl.load(Q + offs_m[:, None] * stride_qt + offs_d[None, :], mask=qd_mask, other=0.0)
    do = tl.load(DO + offs_m[:, None] * stride_dot + offs_d[None, :], mask=qd_mask, other=0.0)
    if DOT_F32:
        q = q.to(tl.float32)
        do = do.to(tl.float32)
    lse = tl.load(LSE + offs_m * stride_lt, mask=m_mask, other=0.0) * 1.4426950408889634
    # delta = rowsum(dO * O) - dLSE, the softmax-gradient row term; stored for the dK/dV kernel,
    # which runs after this one on the same stream.
    o = tl.load(O + offs_m[:, None] * stride_ot + offs_d[None, :], mask=qd_mask, other=0.0)
    delta = tl.sum(do.to(tl.float32) * o.to(tl.float32), 1)
    if HAS_DLSE:
        delta -= tl.load(DLSE + offs_m * stride_lt, mask=m_mask, other=0.0)
    tl.store(DELTA + offs_m * stride_lt, delta, mask=m_mask)
    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    for start_n in range(0, k_len, BLOCK_N):
        cols = start_n + offs_n
        n_mask = cols < k_len
        kv_mask = n_mask[:, None] & d_mask[None, :]
        k = tl.load(K + cols[:, None] * stride_kt + offs_d[None, :], mask=kv_mask, other=0.0)
        v = tl.load(V + cols[:, None] * stride_vt + offs_d[None, :], mask=kv_mask, other=0.0)
        if DOT_F32:
            k = k.to(tl.float32)
            v = v.to(tl.float32)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
        p = tl.math.exp2(s - lse[:, None])
        p = tl.where(m_mask[:, None] & n_mask[None, :], p, 0.0)
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds.to(k.dtype), k, input_precision=PRECISION)
    dq = dq * sm_scale
    tl.store(DQ + offs_m[:, None] * stride_dqt + offs_d[None, :], dq.to(DQ.dtype.element_ty), mask=qd_mask)


_TABLE_ROWS, _TABLE_COLS = 128, 64  # programs x segments per step of the table kernel


@triton.jit
def _fill_table(CU, TBL, num_segments, grid_size, block, tile_id,
                BLOCK_P: tl.constexpr, BLOCK_S: tl.constexpr):
    """Fills entries [tile_id·BLOCK_P, (tile_id+1)·BLOCK_P) of one block table (the tile scan
    is :func:`._tiles.segment_tiles`, shared with the grouped projection's plan)."""
    pids = tile_id * BLOCK_P + tl.arange(0, BLOCK_P).to(tl.int64)
    seg, blk, total = segment_tiles(CU, num_segments, block, pids, TBL, False,
                                    BLOCK_S=BLOCK_S, WRITE_ENDS=False)
    real = pids < total
    inside = pids < grid_size
    # Tile counts and program ids fit in int32 (the grid itself is an int32 range).
    tl.store(TBL + pids, tl.where(real, seg, -1).to(tl.int32), mask=inside)
    tl.store(TBL + grid_size + pids, blk.to(tl.int32), mask=inside)


@triton.jit(do_not_specialize=["num_segments", "g0", "g1", "g2", "p0", "p1"])
def _block_tables_kernel(CU_Q, CU_K, TBL, num_segments, g0, g1, g2, p0, p1, b0, b1, b2,
                         BLOCK_P: tl.constexpr, BLOCK_S: tl.constexpr):
    """Every block table of one attention call in one launch: programs [0, p0) fill the
    forward's query table (tile b0), [p0, p0 + p1) the dQ pass's query table (tile b1; absent,
    p1 = 0, when it equals the forward's), the rest the dK/dV pass's key table (tile b2). The
    tables lie back to back in TBL, each [2, g]."""
    pid = tl.program_id(0)
    if pid < p0:
        _fill_table(CU_Q, TBL, num_segments, g0, b0, pid, BLOCK_P, BLOCK_S)
    elif pid < p0 + p1:
        _fill_table(CU_Q, TBL + 2 * g0, num_segments, g1, b1, pid - p0, BLOCK_P, BLOCK_S)
    else:
        _fill_table(CU_K, TBL + 2 * (g0 + g1), num_segments, g2, b2, pid - p0 - p1, BLOCK_P, BLOCK_S)


# ----------------------------------------------------------------------------- launchers

def offline_signature(kernel, dtype: str) -> dict:
    """``triton.compile`` signature of one of these kernels with data pointers of ``dtype``
    ("bf16", "fp32"), for compiling them without a GPU (tests, ``benchmarks.tune_attention``):
    offsets and tables are int32, softmax statistics float32, scalars int32 but the scale."""
    sig = {}
    for p in kernel.params:
        if p.is_constexpr:
            sig[p.name] = "constexpr"
        elif p.name in ("CU_Q", "CU_K", "CU", "TBL"):
            sig[p.name] = "*i32"
        elif p.name in ("LSE", "DLSE", "DELTA"):
            sig[p.name] = "*fp32"
        elif p.name.isupper():
            sig[p.name] = "*" + dtype
        else:
            sig[p.name] = "fp32" if "scale" in p.name else "i32"
    return sig


def _interpreting() -> bool:
    return triton_interpret()


def table_layout(nq: int, nk: int, num_segments: int, dtype: torch.dtype) -> tuple:
    """((tile, grid) of the forward's query table, of the dQ pass's query table (grid 0: it
    reuses the forward's), of the dK/dV pass's key table), from shapes only. Grid = cdiv(N,
    tile) + S bounds the tile count, so the tables are built on the device without a sync."""
    dot_f32, precision = _dot_args(dtype)
    fma = _fma_dot(dot_f32, precision)
    bm_f = _table_tile(nq, num_segments, 64 if fma else 128)
    bm_q = _table_tile(nq, num_segments, 64)
    bn = _table_tile(nk, num_segments, 32 if fma else 64)
    g_f = triton.cdiv(nq, bm_f) + num_segments
    g_q = 0 if bm_q == bm_f else triton.cdiv(nq, bm_q) + num_segments
    return (bm_f, g_f), (bm_q, g_q), (bn, triton.cdiv(nk, bn) + num_segments)


def tables_numel(nq: int, nk: int, num_segments: int, dtype: torch.dtype) -> int:
    return 2 * sum(g for _, g in table_layout(nq, nk, num_segments, dtype))


def build_tables(cu_q: torch.Tensor, cu_k: torch.Tensor, nq: int, nk: int, dtype: torch.dtype) -> torch.Tensor:
    """int32 [2·(g_f + g_q + g_k)]: every block table of one call (forward and both backward
    passes), one launch. The forward returns it and the backward reuses it."""
    num_segments = cu_q.numel() - 1
    (b0, g0), (b1, g1), (b2, g2) = table_layout(nq, nk, num_segments, dtype)
    tables = torch.empty(2 * (g0 + g1 + g2), device=cu_q.device, dtype=torch.int32)
    p0, p1, p2 = (triton.cdiv(g, _TABLE_ROWS) for g in (g0, g1, g2))
    if p0 + p1 + p2 > 0:
        _block_tables_kernel[(p0 + p1 + p2,)](
            cu_q, cu_k, tables, num_segments, g0, g1, g2, p0, p1, b0, b1, b2,
            BLOCK_P=_TABLE_ROWS, BLOCK_S=_TABLE_COLS)
    return tables


def _split_tables(tables: torch.Tensor, nq: int, nk: int, num_segments: int, dtype: torch.dtype):
    """Views (tile, [2, g] table) of the forward, dQ and dK/dV tables inside ``tables``."""
    (b0, g0), (b1, g1), (b2, g2) = table_layout(nq, nk, num_segments, dtype)
    fwd = tables[:2 * g0].view(2, g0)
    dq = tables[2 * g0:2 * (g0 + g1)].view(2, g1) if g1 else fwd
    dkdv = tables[2 * (g0 + g1):].view(2, g2)
    return (b0, fwd), (b1 if g1 else b0, dq), (b2, dkdv)


def block_table(cu_seqlens: torch.Tensor, block: int, num_tokens: int) -> torch.Tensor:
    """int32 [2, G] table: row 0 the segment of program p (-1: nothing to do), row 1 the tile
    index inside that segment. G = cdiv(num_tokens, block) + S bounds the tile count from shapes
    alone, so the table is built on the device, in one launch, without a host sync."""
    num_segments = cu_seqlens.numel() - 1
    grid = triton.cdiv(num_tokens, block) + num_segments
    table = torch.empty((2, grid), device=cu_seqlens.device, dtype=torch.int32)
    if grid > 0:
        _block_tables_kernel[(triton.cdiv(grid, _TABLE_ROWS),)](
            cu_seqlens, cu_seqlens, table, num_segments, grid, 0, 0, triton.cdiv(grid, _TABLE_ROWS), 0,
            block, block, block, BLOCK_P=_TABLE_ROWS, BLOCK_S=_TABLE_COLS)
    return table


def _table_tile(num_tokens: int, num_segments: int, largest: int) -> int:
    """Rows per tile of the side that indexes the block table, from shapes only (no sync):
    short segments get short tiles, since tile waste on ragged segment ends, not peak FLOPs,
    dominates conversation shapes; long ones get up to ``largest`` (128 forward; 64 backward,
    where 128-row dK/dV or dQ accumulators spill registers on sm_90 by ptxas' count; less for
    float32 IEEE dots, see :func:`_fma_dot`)."""
    if _interpreting():
        return 16
    avg = num_tokens / max(num_segments, 1)
    if avg <= 48:
        return 32
    if avg >= 1024:
        return largest
    return min(64, largest)


def _fma_dot(dot_f32: bool, precision: str) -> bool:
    """Float32 operands with ``input_precision="ieee"`` (torch's default: TF32 off) take Triton's
    FMA dot, which holds far more per thread than a tensor-core dot. By ptxas' count on sm_90
    (Dh = 128) every autotune config spills for a 128-row forward tile (>= 2.6 KB/thread) and for
    a 64-row dK/dV tile (>= 0.5 KB), while 64-row forward and dQ tiles and 32-row dK/dV tiles
    each have a spill-free config (8 warps): the table tiles are capped there."""
    return dot_f32 and precision == "ieee"


def _head_tile(head_dim: int) -> int:
    return max(16, triton.next_power_of_2(head_dim))


def _dot_args(dtype: torch.dtype) -> tuple[bool, str]:
    """(upcast dot operands to float32, tl.dot input precision)."""
    if _interpreting():
        # The interpreter has float16 but no bfloat16 arithmetic: float16 inputs take the GPU's
        # native-dtype dot path there, so the tests cover it.
        return dtype != torch.float16, "ieee"
    if dtype == torch.float32:
        return True, "tf32" if torch.backends.cuda.matmul.allow_tf32 else "ieee"
    return False, "tf32"  # half-precision operands: the setting only concerns float32 operands


def _last_dim_contiguous(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


@on_device
def forward(q, k, v, cu_q, cu_k, scale: float):
    """Returns (out [Nq, H, Dh] in q's dtype, lse [Nq, H] float32, the block tables the
    backward reuses). Two launches: the tables, the attention."""
    q, k, v = (_last_dim_contiguous(t) for t in (q, k, v))
    cu_q, cu_k = cu_q.contiguous(), cu_k.contiguous()  # the kernels read offsets at unit stride
    nq, heads, head_dim = q.shape
    nk = k.shape[0]
    num_segments = cu_q.numel() - 1
    out = torch.empty(q.shape, device=q.device, dtype=q.dtype)
    lse = torch.empty((nq, heads), device=q.device, dtype=torch.float32)
    if heads == 0 or num_segments == 0:
        return out, lse, torch.empty(tables_numel(nq, nk, num_segments, q.dtype), device=q.device,
                                     dtype=torch.int32)
    tables = build_tables(cu_q, cu_k, nq, nk, q.dtype)
    if nq == 0:
        return out, lse, tables
    dot_f32, precision = _dot_args(q.dtype)
    (bm, tbl), _, _ = _split_tables(tables, nq, nk, num_segments, q.dtype)
    bd = _head_tile(head_dim)
    kernel, cfg = _launch_config("fwd", _fwd_kernel, q.device, q.dtype, bd, bm)
    kernel[(tbl.shape[1], heads)](
        q, k, v, out, lse, cu_q, cu_k, tbl, tbl.shape[1],
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        out.stride(0), out.stride(1), lse.stride(0), lse.stride(1),
        head_dim, scale * LOG2E,
        BLOCK_M=bm, BLOCK_D=bd, DOT_F32=dot_f32, PRECISION=precision, **cfg,
    )
    return out, lse, tables


@on_device
def backward(do, q, k, v, out, lse, grad_lse, cu_q, cu_k, scale: float, tables=None):
    """Returns (dq, dk, dv) in the inputs' dtype; ``grad_lse`` (None or [Nq, H]) is the
    gradient of the saved log-sum-exp. Two launches (dQ with the softmax-gradient row sums,
    then dK/dV) over the forward's block tables (rebuilt, one more launch, when ``tables`` is
    None or empty), no atomics."""
    q, k, v, do, out = (_last_dim_contiguous(t) for t in (q, k, v, do, out))
    lse, cu_q, cu_k = lse.contiguous(), cu_q.contiguous(), cu_k.contiguous()
    nq, heads, head_dim = q.shape
    nk = k.shape[0]
    num_segments = cu_q.numel() - 1
    dq = torch.empty(q.shape, device=q.device, dtype=q.dtype)
    dk = torch.empty(k.shape, device=k.device, dtype=k.dtype)
    dv = torch.empty(v.shape, device=v.device, dtype=v.dtype)
    if heads == 0 or num_segments == 0:
        return dq, dk, dv
    if tables is None or tables.numel() == 0:
        tables = build_tables(cu_q, cu_k, nq, nk, q.dtype)
    _, (bm, tbl_q), (bn, tbl_k) = _split_tables(tables, nq, nk, num_segments, q.dtype)
    delta = torch.empty((nq, heads), device=q.device, dtype=torch.float32)
    dlse = delta if grad_lse is None else grad_lse.to(torch.float32).contiguous()
    dot_f32, precision = _dot_args(q.dtype)
    bd = _head_tile(head_dim)
    if nq > 0:
        kernel, cfg = _launch_config("dq", _bwd_dq_kernel, q.device, q.dtype, bd, bm)
        kernel[(tbl_q.shape[1], heads)](
            q, k, v, out, do, lse, dlse, delta, dq, cu_q, cu_k, tbl_q, tbl_q.shape[1],
            q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
            out.stride(0), out.stride(1), do.stride(0), do.stride(1), lse.stride(0), lse.stride(1),
            dq.stride(0), dq.stride(1),
            head_dim, scale, scale * LOG2E,
            BLOCK_M=bm, BLOCK_D=bd, DOT_F32=dot_f32, PRECISION=precision, HAS_DLSE=grad_lse is not None,
            **cfg,
        )
    if nk > 0:
        kernel, cfg = _launch_config("dkdv", _bwd_dkdv_kernel, q.device, q.dtype, bd, bn)
        kernel[(tbl_k.shape[1], heads)](
            q, k, v, do, lse, delta, dk, dv, cu_q, cu_k, tbl_k, tbl_k.shape[1],
            q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
            do.stride(0), do.stride(1), lse.stride(0), lse.stride(1),
            dk.stride(0), dk.stride(1), dv.stride(0), dv.stride(1),
            head_dim, scale, scale * LOG2E,
            BLOCK_N=bn, BLOCK_D=bd, DOT_F32=dot_f32, PRECISION=precision,
            **cfg,
        )
    return dq, dk, dv
