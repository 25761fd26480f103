"""Triton kernels for hotspot-gated fusion (DESIGN §3.1) and their launchers.

``out = c + σ([c; h] @ W + b) ⊙ (h − c)`` with ``W = [W_c; W_h]`` of shape [2d, g], g ∈ {1, d}.

Forward (one launch): each program owns a tile of output rows and sweeps the column tiles
(``BLOCK_N`` up to 128, so for d <= 128 one sweep reads its c/h rows and W once), accumulates the
gate GEMM ``c @ W_c + h @ W_h`` in float32 straight from ``c`` and ``h`` (``[c; h]`` is never
built), and applies bias, sigmoid and the interpolation in the epilogue; ``z`` and ``α`` stay in
registers (``α`` is written only when the caller asks for it).

Backward (nothing but the forward inputs is saved; ``α`` is recomputed), two launches each:

* vector gate (g = d):
  1. rows kernel, one program per row tile and every column: recomputes α, forms
     ``dz = (dout ⊙ (h − c) + dα_ext) ⊙ α(1 − α)`` and at once ``dc = dout ⊙ (1 − α) + dz @ W_cᵀ``,
     ``dh = dout ⊙ α + dz @ W_hᵀ``; writes dc, dh and dz (α never goes to memory).
  2. ``dw`` kernel: ``dW = [cᵀ dz; hᵀ dz]`` and ``db = Σ dz``, one program per output tile
     summing every row in a fixed order and writing the parameters' dtype: deterministic, no
     atomics, no partials. Bytes: 3·N·d·b read + 3·N·d·b written by kernel 1, 3·N·d·b read by
     kernel 2 (9·N·d·b; the old three-kernel design moved ~13).
* scalar gate (g = 1): a row kernel per chunk of rows (``z`` and ``Σ_k dout ⊙ (h − c)`` in one
  sweep, then ``dc``/``dh``, and the chunk's float32 weight/bias-gradient partials), then one
  kernel summing the partials in chunk order into the parameters' dtype.

Every kernel loads in the storage dtype and computes in float32. Under ``TRITON_INTERPRET=1`` the
dot operands are upcast to float32 first (the interpreter gets bf16 dots wrong); on a GPU they go
to the tensor cores in their own dtype. Launch parameters are fixed heuristics per shape class
rather than autotuned: token counts change every batch in ERC training, and re-tuning per N would
cost more than it saves. For the same reason N (and the sizes derived from it) is
``do_not_specialize``: one compiled kernel serves every batch size.
"""
from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl

from ._launch import dot_precision, triton_interpret


# ----------------------------------------------------------------------------- forward

@triton.jit
def _vector_alpha_tile(c_ptr, h_ptr, w_ptr, b_ptr, rows, cols, rmask, cmask, D,
                       stride_c, stride_h, stride_w,
                       UPCAST: tl.constexpr, PRECISION: tl.constexpr,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """α for a (rows, cols) tile: sigmoid(c @ W[:D] + h @ W[D:] + b), [c; h] never formed.
    Shared by the forward and by the backward's recompute, so both see the same α."""
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, D, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        kmask = ks < D
        xmask = rmask[:, None] & kmask[None, :]
        wmask = kmask[:, None] & cmask[None, :]
        c_t = tl.load(c_ptr + rows[:, None] * stride_c + ks[None, :], mask=xmask, other=0.0)
        h_t = tl.load(h_ptr + rows[:, None] * stride_h + ks[None, :], mask=xmask, other=0.0)
        w_c = tl.load(w_ptr + ks[:, None] * stride_w + cols[None, :], mask=wmask, other=0.0)
        w_h = tl.load(w_ptr + (ks[:, None] + D) * stride_w + cols[None, :], mask=wmask, other=0.0)
        if UPCAST:
            c_t = c_t.to(tl.float32)
            h_t = h_t.to(tl.float32)
            w_c = w_c.to(tl.float32)
            w_h = w_h.to(tl.float32)
        acc = tl.dot(c_t, w_c, acc, input_precision=PRECISION)
        acc = tl.dot(h_t, w_h, acc, input_precision=PRECISION)

    bias = tl.load(b_ptr + cols, mask=cmask, other=0.0).to(tl.float32)
    return tl.sigmoid(acc + bias[None, :])


@triton.jit(do_not_specialize=["N"])
def _fwd_vector_kernel(c_ptr, h_ptr, w_ptr, b_ptr, out_ptr, alpha_ptr, N, D,
                       stride_c, stride_h, stride_w, stride_o, stride_a,
                       WRITE_ALPHA: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    # One program per row tile, sweeping the column tiles itself: c and h rows come from memory
    # once per row tile (later column tiles re-read them from L2 of the same SM, just touched),
    # and for d <= BLOCK_N there is a single sweep.
    pid = tl.program_id(0)
    rows = (pid * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    rmask = rows < N
    for n0 in range(0, D, BLOCK_N):
        cols = n0 + tl.arange(0, BLOCK_N)
        cmask = cols < D
        alpha = _vector_alpha_tile(c_ptr, h_ptr, w_ptr, b_ptr, rows, cols, rmask, cmask, D,
                                   stride_c, stride_h, stride_w, UPCAST, PRECISION, BLOCK_M, BLOCK_N, BLOCK_K)
        omask = rmask[:, None] & cmask[None, :]
        c_e = tl.load(c_ptr + rows[:, None] * stride_c + cols[None, :], mask=omask, other=0.0).to(tl.float32)
        h_e = tl.load(h_ptr + rows[:, None] * stride_h + cols[None, :], mask=omask, other=0.0).to(tl.float32)
        out = c_e + alpha * (h_e - c_e)
        tl.store(out_ptr + rows[:, None] * stride_o + cols[None, :], out.to(out_ptr.dtype.element_ty), mask=omask)
        if WRITE_ALPHA:
            tl.store(alpha_ptr + rows[:, None] * stride_a + cols[None, :],
                     alpha.to(alpha_ptr.dtype.element_ty), mask=omask)


@triton.jit(do_not_specialize=["N"])
def _fwd_scalar_kernel(c_ptr, h_ptr, w_ptr, b_ptr, out_ptr, alpha_ptr, N, D,
                       stride_c, stride_h, stride_o,
                       WRITE_ALPHA: tl.constexpr, ONE_PASS: tl.constexpr,
                       BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr):
    # A GEMV: memory-bound, so no tensor cores. ONE_PASS (a row fits one BLOCK_D tile): c and h
    # are read once and stay in registers. Otherwise one sweep for z and one for the output (the
    # second re-reads rows just touched, from cache).
    pid = tl.program_id(0)
    rows = (pid * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    rmask = rows < N
    bias = tl.load(b_ptr).to(tl.float32)
    if ONE_PASS:
        ks = tl.arange(0, BLOCK_D)
        kmask = ks < D
        m = rmask[:, None] & kmask[None, :]
        c_t = tl.load(c_ptr + rows[:, None] * stride_c + ks[None, :], mask=m, other=0.0).to(tl.float32)
        h_t = tl.load(h_ptr + rows[:, None] * stride_h + ks[None, :], mask=m, other=0.0).to(tl.float32)
        w_c = tl.load(w_ptr + ks, mask=kmask, other=0.0).to(tl.float32)
        w_h = tl.load(w_ptr + D + ks, mask=kmask, other=0.0).to(tl.float32)
        alpha = tl.sigmoid(tl.sum(c_t * w_c[None, :] + h_t * w_h[None, :], axis=1) + bias)
        if WRITE_ALPHA:
            tl.store(alpha_ptr + rows, alpha.to(alpha_ptr.dtype.element_ty), mask=rmask)
        out = c_t + alpha[:, None] * (h_t - c_t)
        tl.store(out_ptr + rows[:, None] * stride_o + ks[None, :], out.to(out_ptr.dtype.element_ty), mask=m)
    else:
        z = tl.zeros((BLOCK_M,), dtype=tl.float32)
        for k0 in range(0, D, BLOCK_D):
            ks = k0 + tl.arange(0, BLOCK_D)
            kmask = ks < D
            m = rmask[:, None] & kmask[None, :]
            c_t = tl.load(c_ptr + rows[:, None] * stride_c + ks[None, :], mask=m, other=0.0).to(tl.float32)
            h_t = tl.load(h_ptr + rows[:, None] * stride_h + ks[None, :], mask=m, other=0.0).to(tl.float32)
            w_c = tl.load(w_ptr + ks, mask=kmask, other=0.0).to(tl.float32)
            w_h = tl.load(w_ptr + D + ks, mask=kmask, other=0.0).to(tl.float32)
            z += tl.sum(c_t * w_c[None, :] + h_t * w_h[None, :], axis=1)
        alpha = tl.sigmoid(z + bias)
        if WRITE_ALPHA:
            tl.store(alpha_ptr + rows, alpha.to(alpha_ptr.dtype.element_ty), mask=rmask)
        for k0 in range(0, D, BLOCK_D):
            ks = k0 + tl.arange(0, BLOCK_D)
            m = rmask[:, None] & (ks < D)[None, :]
            c_t = tl.load(c_ptr + rows[:, None] * stride_c + ks[None, :], mask=m, other=0.0).to(tl.float32)
            h_t = tl.load(h_ptr + rows[:, None] * stride_h + ks[None, :], mask=m, other=0.0).to(tl.float32)
            out = c_t + alpha[:, None] * (h_t - c_t)
            tl.store(out_ptr + rows[:, None] * stride_o + ks[None, :], out.to(out_ptr.dtype.element_ty), mask=m)


# ----------------------------------------------------------------------------- backward, vector gate

@triton.jit(do_not_specialize=["N"])
def _bwd_rows_vector_kernel(c_ptr, h_ptr, w_ptr, b_ptr, g_ptr, ga_ptr, dz_ptr, dc_ptr, dh_ptr, N, D,
                            stride_c, stride_h, stride_w, stride_g, stride_ga, stride_dz, stride_dc, stride_dh,
                            HAS_GA: tl.constexpr, ONE_TILE: tl.constexpr,
                            UPCAST: tl.constexpr, PRECISION: tl.constexpr,
                            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """dz and the input gradients of one row tile, all d columns, in one program:
    ``dz = (dout ⊙ (h − c) + dα_ext) ⊙ α(1 − α)`` (α recomputed), ``dc = dout ⊙ (1 − α) + dz W_cᵀ``,
    ``dh = dout ⊙ α + dz W_hᵀ``. dz is written (the weight-gradient kernel reads it); α never is.

    ONE_TILE (d <= BLOCK_N): α, dz and the elementwise terms stay in registers. Otherwise phase 1
    sweeps the gate columns writing dz, ``dout ⊙ (1 − α)`` into dc and ``dout ⊙ α`` into dh;
    phase 2 adds the two GEMMs, reading back this program's own just-written rows (from L2)."""
    pid = tl.program_id(0)
    rows = (pid * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    rmask = rows < N
    for n0 in range(0, D, BLOCK_N):
        cols = n0 + tl.arange(0, BLOCK_N)
        cmask = cols < D
        alpha = _vector_alpha_tile(c_ptr, h_ptr, w_ptr, b_ptr, rows, cols, rmask, cmask, D,
                                   stride_c, stride_h, stride_w, UPCAST, PRECISION, BLOCK_M, BLOCK_N, BLOCK_K)
        omask = rmask[:, None] & cmask[None, :]
        c_e = tl.load(c_ptr + rows[:, None] * stride_c + cols[None, :], mask=omask, other=0.0).to(tl.float32)
        h_e = tl.load(h_ptr + rows[:, None] * stride_h + cols[None, :], mask=omask, other=0.0).to(tl.float32)
        g_e = tl.load(g_ptr + rows[:, None] * stride_g + cols[None, :], mask=omask, other=0.0).to(tl.float32)
        dalpha = g_e * (h_e - c_e)
        if HAS_GA:
            dalpha += tl.load(ga_ptr + rows[:, None] * stride_ga + cols[None, :], mask=omask,
                              other=0.0).to(tl.float32)
        # dz in the storage dtype, as eager autograd rounds it before its GEMMs; the same rounded
        # values feed dx here and dW in the next kernel.
        dz = (dalpha * alpha * (1.0 - alpha)).to(dz_ptr.dtype.element_ty)
        tl.store(dz_ptr + rows[:, None] * stride_dz + cols[None, :], dz, mask=omask)
        dc_e = g_e * (1.0 - alpha)
        dh_e = g_e * alpha
        if ONE_TILE:
            # Transposed weight tiles read in place: T[j, f] = W[f, j] (W_c) and W[D + f, j] (W_h).
            wmask = cmask[:, None] & cmask[None, :]
            wt_c = tl.load(w_ptr + cols[None, :] * stride_w + cols[:, None], mask=wmask, other=0.0)
            wt_h = tl.load(w_ptr + (cols[None, :] + D) * stride_w + cols[:, None], mask=wmask, other=0.0)
            if UPCAST:
                dz = dz.to(tl.float32)
                wt_c = wt_c.to(tl.float32)
                wt_h = wt_h.to(tl.float32)
            dc_e = tl.dot(dz, wt_c, dc_e, input_precision=PRECISION)
            dh_e = tl.dot(dz, wt_h, dh_e, input_precision=PRECISION)
        tl.store(dc_ptr + rows[:, None] * stride_dc + cols[None, :], dc_e.to(dc_ptr.dtype.element_ty), mask=omask)
        tl.store(dh_ptr + rows[:, None] * stride_dh + cols[None, :], dh_e.to(dh_ptr.dtype.element_ty), mask=omask)
    if not ONE_TILE:
        # Phase 2 reads what other threads of this program wrote in phase 1.
        tl.debug_barrier()
        for f0 in range(0, D, BLOCK_N):
            feats = f0 + tl.arange(0, BLOCK_N)  # feature index of c/h
            fmask = feats < D
            acc_c = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
            acc_h = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
            for j0 in range(0, D, BLOCK_K):
                js = j0 + tl.arange(0, BLOCK_K)  # gate index
                jmask = js < D
                dz_t = tl.load(dz_ptr + rows[:, None] * stride_dz + js[None, :],
                               mask=rmask[:, None] & jmask[None, :], other=0.0)
                wmask = jmask[:, None] & fmask[None, :]
                wt_c = tl.load(w_ptr + feats[None, :] * stride_w + js[:, None], mask=wmask, other=0.0)
                wt_h = tl.load(w_ptr + (feats[None, :] + D) * stride_w + js[:, None], mask=wmask, other=0.0)
                if UPCAST:
                    dz_t = dz_t.to(tl.float32)
                    wt_c = wt_c.to(tl.float32)
                    wt_h = wt_h.to(tl.float32)
                acc_c = tl.dot(dz_t, wt_c, acc_c, input_precision=PRECISION)
                acc_h = tl.dot(dz_t, wt_h, acc_h, input_precision=PRECISION)
            omask = rmask[:, None] & fmask[None, :]
            dc_e = tl.load(dc_ptr + rows[:, None] * stride_dc + feats[None, :], mask=omask, other=0.0).to(tl.float32)
            dh_e = tl.load(dh_ptr + rows[:, None] * stride_dh + feats[None, :], mask=omask, other=0.0).to(tl.float32)
            tl.store(dc_ptr + rows[:, None] * stride_dc + feats[None, :], (dc_e + acc_c).to(dc_ptr.dtype.element_ty),
                     mask=omask)
            tl.store(dh_ptr + rows[:, None] * stride_dh + feats[None, :], (dh_e + acc_h).to(dh_ptr.dtype.element_ty),
                     mask=omask)


@triton.jit(do_not_specialize=["N"])
def _bwd_dw_vector_kernel(c_ptr, h_ptr, dz_ptr, dw_ptr, db_ptr, N, D,
                          stride_c, stride_h, stride_dz,
                          UPCAST: tl.constexpr, PRECISION: tl.constexpr,
                          BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """``dW = [cᵀ dz; hᵀ dz]`` and ``db = Σ dz``: program = (weight-row tile over [W_c; W_h], gate-
    column tile), summing over every row in order and writing the parameters' dtype. One
    program per output tile, so no partials and no second pass: deterministic, no atomics."""
    pid = tl.program_id(0)
    num_n = tl.cdiv(D, BLOCK_N)
    num_k = tl.cdiv(D, BLOCK_K)
    pid_n = pid % num_n
    pid_k = pid // num_n
    half = pid_k // num_k  # 0: rows of W_c (from c), 1: rows of W_h (from h)
    ks = (pid_k % num_k) * BLOCK_K + tl.arange(0, BLOCK_K)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    kmask = ks < D
    cmask = cols < D
    if half == 0:
        x_ptr = c_ptr
        stride_x = stride_c
    else:
        x_ptr = h_ptr
        stride_x = stride_h
    acc = tl.zeros((BLOCK_K, BLOCK_N), dtype=tl.float32)
    acc_b = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for m0 in range(0, N, BLOCK_M):
        rows = (m0 + tl.arange(0, BLOCK_M)).to(tl.int64)
        rmask = rows < N
        x_t = tl.load(x_ptr + rows[None, :] * stride_x + ks[:, None], mask=kmask[:, None] & rmask[None, :], other=0.0)
        dz_t = tl.load(dz_ptr + rows[:, None] * stride_dz + cols[None, :], mask=rmask[:, None] & cmask[None, :],
                       other=0.0)
        acc_b += tl.sum(dz_t.to(tl.float32), axis=0)
        if UPCAST:
            x_t = x_t.to(tl.float32)
            dz_t = dz_t.to(tl.float32)
        acc = tl.dot(x_t, dz_t, acc, input_precision=PRECISION)
    wrows = half * D + ks
    tl.store(dw_ptr + wrows[:, None] * D + cols[None, :], acc.to(dw_ptr.dtype.element_ty),
             mask=kmask[:, None] & cmask[None, :])
    tl.store(db_ptr + cols, acc_b.to(db_ptr.dtype.element_ty), mask=cmask & (pid_k == 0))


# ----------------------------------------------------------------------------- backward, scalar gate

@triton.jit(do_not_specialize=["N", "rows_per_chunk"])
def _bwd_rows_scalar_kernel(c_ptr, h_ptr, w_ptr, b_ptr, g_ptr, ga_ptr, dc_ptr, dh_ptr, pw_ptr, N, D,
                            rows_per_chunk,
                            stride_c, stride_h, stride_g, stride_dc, stride_dh,
                            HAS_GA: tl.constexpr, ONE_PASS: tl.constexpr,
                            BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr):
    """One program per chunk of rows, row tile by row tile: z and dα = Σ_k dout ⊙ (h − c) come
    from the same sweep over a row; dc/dh need both, so they are written after it (from
    registers when ONE_PASS, else by a second sweep). The same sweeps accumulate the chunk's
    weight-gradient partials ``Σ_rows dz·c``, ``Σ_rows dz·h`` and ``Σ dz`` (row ``pw[chunk]`` =
    [dW_c (D) | dW_h (D) | db]); the finalize kernel sums chunks in order. ONE_PASS keeps the
    partials in registers; otherwise they accumulate in the chunk's own row of pw (no other
    program touches it)."""
    chunk = tl.program_id(0)
    lo = chunk * rows_per_chunk
    hi = tl.minimum(lo + rows_per_chunk, N)
    bias = tl.load(b_ptr).to(tl.float32)
    pw_row = pw_ptr + chunk.to(tl.int64) * (2 * D + 1)
    acc_db = tl.zeros((BLOCK_M,), dtype=tl.float32)
    if ONE_PASS:
        ks = tl.arange(0, BLOCK_D)
        kmask = ks < D
        w_c = tl.load(w_ptr + ks, mask=kmask, other=0.0).to(tl.float32)
        w_h = tl.load(w_ptr + D + ks, mask=kmask, other=0.0).to(tl.float32)
        acc_c = tl.zeros((BLOCK_D,), dtype=tl.float32)
        acc_h = tl.zeros((BLOCK_D,), dtype=tl.float32)
        for m0 in range(lo, hi, BLOCK_M):
            rows = (m0 + tl.arange(0, BLOCK_M)).to(tl.int64)
            rmask = rows < hi
            m = rmask[:, None] & kmask[None, :]
            c_t = tl.load(c_ptr + rows[:, None] * stride_c + ks[None, :], mask=m, other=0.0).to(tl.float32)
            h_t = tl.load(h_ptr + rows[:, None] * stride_h + ks[None, :], mask=m, other=0.0).to(tl.float32)
            g_t = tl.load(g_ptr + rows[:, None] * stride_g + ks[None, :], mask=m, other=0.0).to(tl.float32)
            alpha = tl.sigmoid(tl.sum(c_t * w_c[None, :] + h_t * w_h[None, :], axis=1) + bias)
            dalpha = tl.sum(g_t * (h_t - c_t), axis=1)
            if HAS_GA:
                dalpha += tl.load(ga_ptr + rows, mask=rmask, other=0.0).to(tl.float32)
            dz = tl.where(rmask, dalpha * alpha * (1.0 - alpha), 0.0)
            dc = g_t * (1.0 - alpha[:, None]) + dz[:, None] * w_c[None, :]
            dh = g_t * alpha[:, None] + dz[:, None] * w_h[None, :]
            tl.store(dc_ptr + rows[:, None] * stride_dc + ks[None, :], dc.to(dc_ptr.dtype.element_ty), mask=m)
            tl.store(dh_ptr + rows[:, None] * stride_dh + ks[None, :], dh.to(dh_ptr.dtype.element_ty), mask=m)
            acc_c += tl.sum(c_t * dz[:, None], axis=0)
            acc_h += tl.sum(h_t * dz[:, None], axis=0)
            acc_db += dz
        tl.store(pw_row + ks, acc_c, mask=kmask)
        tl.store(pw_row + D + ks, acc_h, mask=kmask)
    else:
        for k0 in range(0, 2 * D, BLOCK_D):  # the chunk's partial row starts at zero
            ks = k0 + tl.arange(0, BLOCK_D)
            tl.store(pw_row + ks, tl.zeros((BLOCK_D,), dtype=tl.float32), mask=ks < 2 * D)
        for m0 in range(lo, hi, BLOCK_M):
            rows = (m0 + tl.arange(0, BLOCK_M)).to(tl.int64)
            rmask = rows < hi
            z = tl.zeros((BLOCK_M,), dtype=tl.float32)
            dalpha = tl.zeros((BLOCK_M,), dtype=tl.float32)
            for k0 in range(0, D, BLOCK_D):
                ks = k0 + tl.arange(0, BLOCK_D)
                kmask = ks < D
                m = rmask[:, None] & kmask[None, :]
                c_t = tl.load(c_ptr + rows[:, None] * stride_c + ks[None, :], mask=m, other=0.0).to(tl.float32)
                h_t = tl.load(h_ptr + rows[:, None] * stride_h + ks[None, :], mask=m, other=0.0).to(tl.float32)
                g_t = tl.load(g_ptr + rows[:, None] * stride_g + ks[None, :], mask=m, other=0.0).to(tl.float32)
                w_c = tl.load(w_ptr + ks, mask=kmask, other=0.0).to(tl.float32)
                w_h = tl.load(w_ptr + D + ks, mask=kmask, other=0.0).to(tl.float32)
                z += tl.sum(c_t * w_c[None, :] + h_t * w_h[None, :], axis=1)
                dalpha += tl.sum(g_t * (h_t - c_t), axis=1)
            alpha = tl.sigmoid(z + bias)
            if HAS_GA:
                dalpha += tl.load(ga_ptr + rows, mask=rmask, other=0.0).to(tl.float32)
            dz = tl.where(rmask, dalpha * alpha * (1.0 - alpha), 0.0)
            acc_db += dz
            for k0 in range(0, D, BLOCK_D):
                ks = k0 + tl.arange(0, BLOCK_D)
                kmask = ks < D
                m = rmask[:, None] & kmask[None, :]
                c_t = tl.load(c_ptr + rows[:, None] * stride_c + ks[None, :], mask=m, other=0.0).to(tl.float32)
                h_t = tl.load(h_ptr + rows[:, None] * stride_h + ks[None, :], mask=m, other=0.0).to(tl.float32)
                g_t = tl.load(g_ptr + rows[:, None] * stride_g + ks[None, :], mask=m, other=0.0).to(tl.float32)
                w_c = tl.load(w_ptr + ks, mask=kmask, other=0.0).to(tl.float32)
                w_h = tl.load(w_ptr + D + ks, mask=kmask, other=0.0).to(tl.float32)
                dc = g_t * (1.0 - alpha[:, None]) + dz[:, None] * w_c[None, :]
                dh = g_t * alpha[:, None] + dz[:, None] * w_h[None, :]
                tl.store(dc_ptr + rows[:, None] * stride_dc + ks[None, :], dc.to(dc_ptr.dtype.element_ty), mask=m)
                tl.store(dh_ptr + rows[:, None] * stride_dh + ks[None, :], dh.to(dh_ptr.dtype.element_ty), mask=m)
                # The previous row tile's read-modify-write of these elements may have been done by
                # other threads of this program (layouts differ between loads and reductions).
                tl.debug_barrier()
                pc = tl.load(pw_row + ks, mask=kmask, other=0.0)
                ph = tl.load(pw_row + D + ks, mask=kmask, other=0.0)
                tl.store(pw_row + ks, pc + tl.sum(c_t * dz[:, None], axis=0), mask=kmask)
                tl.store(pw_row + D + ks, ph + tl.sum(h_t * dz[:, None], axis=0), mask=kmask)
    tl.store(pw_row + 2 * D + tl.arange(0, 1), tl.sum(acc_db, axis=0) + tl.zeros((1,), dtype=tl.float32))


@triton.jit(do_not_specialize=["chunks"])
def _bwd_finalize_scalar_kernel(pw_ptr, dw_ptr, db_ptr, D, chunks, BLOCK: tl.constexpr):
    """dW (2D) and db (1) = Σ over chunks of the partial rows, in chunk order, in the
    parameters' dtype."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    width = 2 * D + 1
    m = offs < width
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    src = offs.to(tl.int64)
    for _ in range(0, chunks):
        acc += tl.load(pw_ptr + src, mask=m, other=0.0)
        src += width
    tl.store(dw_ptr + offs, acc.to(dw_ptr.dtype.element_ty), mask=offs < 2 * D)
    tl.store(db_ptr + (offs - 2 * D), acc.to(db_ptr.dtype.element_ty), mask=offs == 2 * D)


# ----------------------------------------------------------------------------- launchers


def _tiles(d: int, elem: int) -> dict:
    """Tile sizes for the GEMM-shaped kernels (tl.dot needs every dimension >= 16). ``elem``:
    bytes per element; 4-byte tiles get a shorter K so three pipeline stages of the four operand
    tiles (c, h, W_c, W_h) stay within the ~228 KB of shared memory of an H100 (and float32 dots
    without TF32 run on FMA units, which need more registers per tile)."""
    if triton_interpret():
        # The interpreter pays per program and per op, not per FLOP: few, large tiles.
        b = max(16, min(64, triton.next_power_of_2(d)))
        return dict(BLOCK_M=64, BLOCK_N=b, BLOCK_K=b, num_warps=4)
    # BLOCK_M stays at 64: the epilogue holds the accumulator plus two [BLOCK_M, BLOCK_N] float32
    # tiles (c, h) at once, and 128-row tiles would spill registers. BLOCK_N up to 128 columns:
    # for d <= 128 one program reads its c/h rows and all of W once.
    bn = max(16, min(128, triton.next_power_of_2(d)))
    bk = max(16, min(32 if elem >= 4 else 64, triton.next_power_of_2(d)))
    return dict(BLOCK_M=64, BLOCK_N=bn, BLOCK_K=bk, num_warps=8 if bn >= 128 else 4, num_stages=3)


def _row_tiles(d: int) -> tuple[int, int, int, bool]:
    """(BLOCK_M, BLOCK_D, num_warps, ONE_PASS) for the scalar-gate row kernels."""
    # Rows up to 1024 features fit one register tile on a GPU. The interpreter caps the tile at
    # 64 so that tests at small d run the multi-tile (two-sweep) path as well.
    cap = 64 if triton_interpret() else 1024
    block_d = max(16, min(cap, triton.next_power_of_2(d)))
    block_m = max(2, min(64, 4096 // block_d))
    return block_m, block_d, 8 if block_m * block_d >= 4096 else 4, block_d >= d


def _num_chunks(n: int, tiles_per_chunk: int, min_rows: int) -> int:
    """Row chunks for the deterministic weight-gradient reductions: enough programs to fill a
    GPU, never chunks thinner than ``min_rows`` rows."""
    if triton_interpret():
        # Few programs, but still more than one chunk once n allows it: the tests exercise the
        # multi-chunk reduction (and its ragged last chunk) at interpreter-sized n.
        return max(1, min(3, triton.cdiv(n, min_rows)))
    target = 1024
    want = max(1, target // max(1, tiles_per_chunk))
    return max(1, min(want, triton.cdiv(n, min_rows)))


def _empty(shape, dtype, device) -> torch.Tensor:
    """Every buffer a kernel writes comes from here (tests poison it to catch unwritten elements)."""
    return torch.empty(shape, dtype=dtype, device=device)


def _rows_contig(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


def forward(c: torch.Tensor, h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
            write_alpha: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Launch the forward kernel. Inputs are validated by the caller; returns (out, α or None)."""
    c, h = _rows_contig(c), _rows_contig(h)
    weight, bias = weight.contiguous(), bias.contiguous()
    n, d = c.shape
    g = weight.shape[1]
    out = _empty((n, d), c.dtype, c.device)
    alpha = _empty((n, g), c.dtype, c.device) if write_alpha else None
    if n == 0 or d == 0:
        if alpha is not None:
            alpha.copy_(torch.sigmoid(bias).expand(n, g))
        return out, alpha
    a_arg = alpha if alpha is not None else out  # never touched when WRITE_ALPHA is false
    with torch.cuda.device(c.device) if c.is_cuda else contextlib.nullcontext():
        if g == 1:
            bm, bd, nw, one = _row_tiles(d)
            _fwd_scalar_kernel[(triton.cdiv(n, bm),)](
                c, h, weight, bias, out, a_arg, n, d, c.stride(0), h.stride(0), out.stride(0),
                WRITE_ALPHA=write_alpha, ONE_PASS=one, BLOCK_M=bm, BLOCK_D=bd, num_warps=nw)
        else:
            t = _tiles(d, c.element_size())
            grid = (triton.cdiv(n, t["BLOCK_M"]),)
            _fwd_vector_kernel[grid](
                c, h, weight, bias, out, a_arg, n, d, c.stride(0), h.stride(0), weight.stride(0),
                out.stride(0), a_arg.stride(0), WRITE_ALPHA=write_alpha, UPCAST=triton_interpret(),
                PRECISION=dot_precision(c.dtype), **t)
    return out, alpha


def _dw_tiles(d: int) -> tuple[int, int]:
    """(BLOCK_K, BLOCK_N) of the vector weight-gradient kernel, whose programs each own one
    output tile and sum over every row: the largest tiles (fewer re-reads of c, h and dz) that
    still give a GPU's worth of programs, down to tl.dot's minimum of 16."""
    if triton_interpret():
        b = max(16, min(32, triton.next_power_of_2(d)))
        return b, b
    for b in (64, 32):
        if 2 * triton.cdiv(d, b) * triton.cdiv(d, b) >= 128:
            return b, b
    return 16, 16


def _dw_rows(block_k: int, elem: int) -> int:
    """Rows per step of the weight-gradient kernel. Each program walks all N rows in order, so
    the step count (N / BLOCK_M) is its latency: take the longest step whose operand tiles stay
    spill-free on sm_90 at 4 warps (ptxas -v: 256 rows with 16/32-wide half-precision tiles, 128
    with float32; 64 for 64-wide tiles)."""
    if triton_interpret():
        return 32
    if block_k > 32:
        return 64
    return 256 if elem < 4 else 128


def _rows_tiles(d: int, elem: int) -> dict:
    """Tiles of the fused vector backward row kernel: BLOCK_N covers the whole row (every gate
    column in registers) up to 64 columns (32 in float32); wider rows sweep column tiles twice
    (see the kernel)."""
    if triton_interpret():
        # Capped at 32 so that the tests' d = 100 and 256 take the two-phase path, d = 16 the
        # one-tile path.
        b = max(16, min(32, triton.next_power_of_2(d)))
        return dict(BLOCK_M=32, BLOCK_N=b, BLOCK_K=b, num_warps=4)
    bn = max(16, min(64 if elem < 4 else 32, triton.next_power_of_2(d)))
    bk = max(16, min(32 if elem >= 4 else 64, triton.next_power_of_2(d)))
    # 8 warps: the α, dz, c, h, dout tiles plus two accumulators spill with 4 on sm_90 (ptxas
    # -v on Triton's PTX); float32 (FMA dots without TF32) also needs the shorter row tile.
    return dict(BLOCK_M=64 if elem < 4 else 32, BLOCK_N=bn, BLOCK_K=bk, num_warps=8, num_stages=3)


def backward(grad_out: torch.Tensor, grad_alpha: torch.Tensor | None, c: torch.Tensor, h: torch.Tensor,
             weight: torch.Tensor, bias: torch.Tensor):
    """Launch the backward kernels (two launches); returns (dc, dh, dweight, dbias).
    ``grad_alpha`` is the gradient flowing into the returned gate (None when the gate was not
    returned or not used)."""
    c, h, grad_out = _rows_contig(c), _rows_contig(h), _rows_contig(grad_out)
    weight, bias = weight.contiguous(), bias.contiguous()
    if grad_alpha is not None:
        grad_alpha = grad_alpha.contiguous()
    n, d = c.shape
    g = weight.shape[1]
    dc = _empty((n, d), c.dtype, c.device)
    dh = _empty((n, d), h.dtype, h.device)
    # Contiguous like every other gradient (the op's fake says so).
    dw = _empty(weight.shape, weight.dtype, weight.device)
    db = _empty(bias.shape, bias.dtype, bias.device)
    if n == 0 or d == 0:
        dw.zero_()
        db.zero_()
        return dc, dh, dw, db
    ga_arg = grad_alpha if grad_alpha is not None else grad_out
    interp = triton_interpret()
    with torch.cuda.device(c.device) if c.is_cuda else contextlib.nullcontext():
        if g == 1:
            bm, bd, nw, one = _row_tiles(d)
            chunks = _num_chunks(n, 1, 8 * bm)
            rows_per_chunk = triton.cdiv(triton.cdiv(n, chunks), bm) * bm
            chunks = triton.cdiv(n, rows_per_chunk)
            pw = _empty((chunks, 2 * d + 1), torch.float32, c.device)
            _bwd_rows_scalar_kernel[(chunks,)](
                c, h, weight, bias, grad_out, ga_arg, dc, dh, pw, n, d, rows_per_chunk,
                c.stride(0), h.stride(0), grad_out.stride(0), dc.stride(0), dh.stride(0),
                HAS_GA=grad_alpha is not None, ONE_PASS=one, BLOCK_M=bm, BLOCK_D=bd, num_warps=nw)
            block = 1024
            _bwd_finalize_scalar_kernel[(triton.cdiv(2 * d + 1, block),)](pw, dw, db, d, chunks, BLOCK=block)
            return dc, dh, dw, db

        t = _rows_tiles(d, c.element_size())
        prec = dot_precision(c.dtype)
        # dz in the storage dtype feeds the tensor cores directly (as eager autograd would).
        dz = _empty((n, d), c.dtype, c.device)
        _bwd_rows_vector_kernel[(triton.cdiv(n, t["BLOCK_M"]),)](
            c, h, weight, bias, grad_out, ga_arg, dz, dc, dh, n, d,
            c.stride(0), h.stride(0), weight.stride(0), grad_out.stride(0), ga_arg.stride(0),
            dz.stride(0), dc.stride(0), dh.stride(0),
            HAS_GA=grad_alpha is not None, ONE_TILE=t["BLOCK_N"] >= d, UPCAST=interp, PRECISION=prec, **t)
        bk, bn = _dw_tiles(d)
        _bwd_dw_vector_kernel[(2 * triton.cdiv(d, bk) * triton.cdiv(d, bn),)](
            c, h, dz, dw, db, n, d, c.stride(0), h.stride(0), dz.stride(0),
            UPCAST=interp, PRECISION=prec, BLOCK_M=_dw_rows(bk, c.element_size()), BLOCK_N=bn, BLOCK_K=bk,
            num_warps=4, num_stages=3 if not interp else 1)
        return dc, dh, dw, db
