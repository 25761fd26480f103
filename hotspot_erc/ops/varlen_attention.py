"""``varlen_cross_attention``: multi-head attention over packed variable-length segments.

Semantics (DESIGN §3.3): query segment s attends only to key/value segment s;
``o_t = softmax(q_t · K_sᵀ · scale) V_s`` with ``scale = Dh^-1/2`` by default. A segment with no
keys gives zeros (and zero gradients); a segment with no queries gives nothing, and its keys and
values get zero gradients. Never NaN.

Backends: ``"triton"`` (CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1``): the
FlashAttention-style kernels of :mod:`hotspot_erc.kernels.varlen_attention`, O(N) memory,
deterministic; forward: one launch building the block tables of the forward and of both backward
passes, then the attention launch; backward: two launches over those tables (saved by the
forward). Tile configs come from a checked-in table (:mod:`hotspot_erc.kernels.tile_configs`),
not from timing, so results are bitwise identical across processes. ``"cpu"``: segments grouped by length into
padded batches under a work budget and run through ATen's CPU flash-attention kernel (explicit
matmul/softmax where a torch build lacks it, or where the log-sum-exp has a gradient).
``"reference"``: the per-segment loop of :mod:`hotspot_erc.reference.varlen_attention` with
plain autograd.

Host synchronisation: none on the Triton path. The value checks on ``cu_seqlens`` (starts at 0,
non-decreasing, ends at the token count) read the tensor, so they run for CPU tensors always
(no sync there) and for CUDA tensors only when ``HOTSPOT_ERC_VALIDATE=1``. Shape, dtype, device,
segment-count and head-dim checks read only metadata and always run; under ``torch.compile``
only the metadata checks run. Unchecked bad offsets on CUDA can make the kernels read or write
out of bounds: set ``HOTSPOT_ERC_VALIDATE=1`` while developing.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from hotspot_erc.ops import _backend
from hotspot_erc.reference.varlen_attention import varlen_cross_attention_reference

OP = "varlen_cross_attention"
TRITON_MAX_HEAD_DIM = 128
_TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# Padded score work (elements of count·H·Lq·Lk) of one group of segments on the CPU path.
_CPU_SCORE_BUDGET = 1 << 20

SUPPORTS = _backend.register(OP, {
    "triton": _backend.triton_reason,
    "cpu": lambda device: "" if device.type == "cpu" else "the ATen path is for CPU tensors",
})


# ----------------------------------------------------------------------------- CPU (ATen) path

# ATen's CPU flash-attention kernels (they return the log-sum-exp the backward needs). They are
# private ops: where a torch build lacks them, the explicit formulas below do the same work.
_CPU_FLASH = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
_CPU_FLASH_BWD = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)


def _cpu_chunks(cu_q: torch.Tensor, cu_k: torch.Tensor, heads: int) -> list[torch.Tensor]:
    """Segments with queries and keys, sorted by length and grouped so that each group's padded
    score work (count·H·Lq·Lk) stays under a budget: similar lengths keep padding waste small,
    and the explicit path's dense score tensor stays bounded."""
    lq = (cu_q[1:] - cu_q[:-1]).tolist()
    lk = (cu_k[1:] - cu_k[:-1]).tolist()
    order = sorted((s for s in range(len(lq)) if lq[s] > 0 and lk[s] > 0), key=lambda s: (lk[s], lq[s]))
    chunks, cur, mq, mk = [], [], 0, 0
    for s in order:
        nq, nk = max(mq, lq[s]), max(mk, lk[s])
        if cur and (len(cur) + 1) * heads * nq * nk > _CPU_SCORE_BUDGET:
            chunks.append(cur)
            cur, nq, nk = [], lq[s], lk[s]
        cur.append(s)
        mq, mk = nq, nk
    if cur:
        chunks.append(cur)
    return [torch.tensor(c, dtype=torch.long) for c in chunks]


class _Padding:
    """Where the tokens of a group of segments sit in a padded [c, L, ...] batch."""

    def __init__(self, cu: torch.Tensor, segs: torch.Tensor):
        starts = cu[segs].long()
        self.lens = cu[segs + 1].long() - starts
        self.count, self.length = segs.numel(), int(self.lens.max())
        pos = torch.arange(self.length)
        self.valid = pos[None, :] < self.lens[:, None]
        self.slot = self.valid.flatten().nonzero().squeeze(1)  # flat padded position of each token
        self.tok = (starts[:, None] + pos[None, :])[self.valid]  # packed index of each token

    def pad(self, x: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
        padded = x.new_full((self.count * self.length,) + tuple(x.shape[1:]), fill)
        padded.index_copy_(0, self.slot, x.index_select(0, self.tok))
        return padded.view((self.count, self.length) + tuple(x.shape[1:]))

    def unpad_into(self, dst: torch.Tensor, padded: torch.Tensor) -> None:
        rows = padded.reshape((self.count * self.length,) + tuple(dst.shape[1:])).index_select(0, self.slot)
        dst.index_copy_(0, self.tok, rows.to(dst.dtype))


def _lse_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _key_mask(pk: _Padding, dtype: torch.dtype) -> torch.Tensor:
    """Additive [c, 1, 1, Lk] mask: -inf on padded keys."""
    return torch.zeros(pk.valid.shape, dtype=dtype).masked_fill(~pk.valid, float("-inf"))[:, None, None, :]


def _heads_first(x: torch.Tensor) -> torch.Tensor:
    return x.transpose(1, 2)  # [c, L, H, D] -> [c, H, L, D]


def _cpu_forward(q, k, v, cu_q, cu_k, scale):
    out = torch.zeros(q.shape, dtype=q.dtype)
    lse = torch.full(q.shape[:2], float("-inf"), dtype=_lse_dtype(q.dtype))
    for segs in _cpu_chunks(cu_q, cu_k, q.shape[1]):
        pq, pk = _Padding(cu_q, segs), _Padding(cu_k, segs)
        qp, kp, vp = _heads_first(pq.pad(q)), _heads_first(pk.pad(k)), _heads_first(pk.pad(v))
        if _CPU_FLASH is not None:
            o, l = _CPU_FLASH(qp, kp, vp, attn_mask=_key_mask(pk, q.dtype), scale=scale)
        else:
            ct = _lse_dtype(q.dtype)
            scores = torch.matmul(qp.to(ct), kp.to(ct).transpose(-1, -2)) * scale + _key_mask(pk, ct)
            l = torch.logsumexp(scores, dim=-1)  # finite: every grouped segment has keys
            o = torch.matmul(torch.exp(scores - l[..., None]), vp.to(ct))
        pq.unpad_into(out, _heads_first(o))
        pq.unpad_into(lse, l.transpose(1, 2))
    return out, lse


def _cpu_backward(do, q, k, v, out, lse, grad_lse, cu_q, cu_k, scale):
    dq, dk, dv = (torch.zeros(t.shape, dtype=t.dtype) for t in (q, k, v))
    # ATen's kernel has no log-sum-exp gradient input: use it only when that gradient is zero.
    if grad_lse is not None and not bool(grad_lse.any()):
        grad_lse = None
    use_flash = _CPU_FLASH_BWD is not None and grad_lse is None
    ct = _lse_dtype(q.dtype)
    for segs in _cpu_chunks(cu_q, cu_k, q.shape[1]):
        pq, pk = _Padding(cu_q, segs), _Padding(cu_k, segs)
        qp, dop, op_ = (_heads_first(pq.pad(t)) for t in (q, do, out))
        kp, vp = _heads_first(pk.pad(k)), _heads_first(pk.pad(v))
        # +inf on padded query rows makes their probabilities exactly 0.
        lsep = pq.pad(lse, fill=float("inf")).transpose(1, 2)
        mask = _key_mask(pk, q.dtype if use_flash else ct)
        if use_flash:
            dqp, dkp, dvp = _CPU_FLASH_BWD(dop, qp, kp, vp, op_, lsep, 0.0, False, attn_mask=mask, scale=scale)
        else:
            qc, kc, vc, doc = qp.to(ct), kp.to(ct), vp.to(ct), dop.to(ct)
            delta = (doc * op_.to(ct)).sum(-1)
            if grad_lse is not None:
                delta = delta - pq.pad(grad_lse.to(ct)).transpose(1, 2)
            probs = torch.exp(torch.matmul(qc, kc.transpose(-1, -2)) * scale + mask - lsep[..., None])
            dvp = torch.matmul(probs.transpose(-1, -2), doc)
            ds = probs * (torch.matmul(doc, vc.transpose(-1, -2)) - delta[..., None])
            dqp = torch.matmul(ds, kc) * scale
            dkp = torch.matmul(ds.transpose(-1, -2), qc) * scale
        pq.unpad_into(dq, _heads_first(dqp))
        pk.unpad_into(dk, _heads_first(dkp))
        pk.unpad_into(dv, _heads_first(dvp))
    return dq, dk, dv


# ----------------------------------------------------------------------------- registered ops

def _triton_kernels():
    # Imported on first use: TRITON_INTERPRET is read when the @triton.jit functions are defined.
    from hotspot_erc.kernels import varlen_attention as kernels

    return kernels


def _tables_numel(q, k, cu_seqlens_q, backend) -> int:
    if backend != "triton" or q.shape[1] == 0 or q.shape[2] == 0:
        return 0
    return _triton_kernels().tables_numel(q.shape[0], k.shape[0], cu_seqlens_q.shape[0] - 1, q.dtype)


@torch.library.custom_op("hotspot_erc::varlen_attention_fwd", mutates_args=())
def _fwd_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens_q: torch.Tensor,
            cu_seqlens_k: torch.Tensor, scale: float, backend: str
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(out [Nq, H, Dh], lse [Nq, H], tables); lse is -inf for rows whose segment has no keys.
    ``tables`` (int32, empty off the Triton path) holds the block tables of the forward and of
    both backward passes, built in one launch here and reused by the backward."""
    if q.shape[1] == 0 or q.shape[2] == 0:
        # Nothing to attend with (and ATen's CPU flash kernel divides by the head count).
        return (q.new_zeros(q.shape), q.new_full(q.shape[:2], float("-inf"), dtype=_lse_dtype(q.dtype)),
                q.new_empty(0, dtype=torch.int32))
    if backend == "triton":
        return _triton_kernels().forward(q, k, v, cu_seqlens_q, cu_seqlens_k, scale)
    return (*_cpu_forward(q, k, v, cu_seqlens_q, cu_seqlens_k, scale), q.new_empty(0, dtype=torch.int32))


@_fwd_op.register_fake
def _(q, k, v, cu_seqlens_q, cu_seqlens_k, scale, backend):
    return (q.new_empty(q.shape), q.new_empty(q.shape[:2], dtype=_lse_dtype(q.dtype)),
            q.new_empty(_tables_numel(q, k, cu_seqlens_q, backend), dtype=torch.int32))


@torch.library.custom_op("hotspot_erc::varlen_attention_bwd", mutates_args=())
def _bwd_op(grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
            out: torch.Tensor, lse: torch.Tensor, grad_lse: Optional[torch.Tensor], cu_seqlens_q: torch.Tensor,
            cu_seqlens_k: torch.Tensor, scale: float, backend: str,
            tables: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dq, dk, dv). ``grad_lse`` (None when the log-sum-exp got no gradient) enters the
    softmax-gradient row term: d lse / d score = softmax probability. ``tables``: the forward's
    block tables (rebuilt when None or empty)."""
    if q.shape[1] == 0 or q.shape[2] == 0:
        return q.new_zeros(q.shape), k.new_zeros(k.shape), v.new_zeros(v.shape)
    if backend == "triton":
        return _triton_kernels().backward(grad_out, q, k, v, out, lse, grad_lse, cu_seqlens_q, cu_seqlens_k, scale,
                                          tables)
    return _cpu_backward(grad_out, q, k, v, out, lse, grad_lse, cu_seqlens_q, cu_seqlens_k, scale)


@_bwd_op.register_fake
def _(grad_out, q, k, v, out, lse, grad_lse, cu_seqlens_q, cu_seqlens_k, scale, backend, tables=None):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _setup_context(ctx, inputs, output):
    q, k, v, cu_q, cu_k, scale, backend = inputs
    out, lse, tables = output
    ctx.save_for_backward(q, k, v, out, lse, cu_q, cu_k, tables)
    ctx.scale = scale
    ctx.backend = backend
    # An unused log-sum-exp arrives as None rather than a zero tensor: no fill, no extra read.
    ctx.set_materialize_grads(False)


def _backward(ctx, grad_out, grad_lse, _grad_tables):
    q, k, v, out, lse, cu_q, cu_k, tables = ctx.saved_tensors
    if grad_out is None:
        grad_out = torch.zeros_like(out)
    dq, dk, dv = _bwd_op(grad_out, q, k, v, out, lse, grad_lse, cu_q, cu_k, ctx.scale, ctx.backend, tables)
    return dq, dk, dv, None, None, None, None


_fwd_op.register_autograd(_backward, setup_context=_setup_context)


# ----------------------------------------------------------------------------- public API

def _check(q, k, v, cu_q, cu_k, scale) -> None:
    _backend.check_tensor("q", q, ndim=3, dtypes=_backend.FLOAT_DTYPES)
    _backend.check_tensor("k", k, ndim=3, dtypes=(q.dtype,), device=q.device)
    _backend.check_tensor("v", v, ndim=3, dtypes=(q.dtype,), device=q.device)
    if k.shape[1:] != q.shape[1:]:
        raise ValueError(f"k must be [Nk, H, Dh] with q's H and Dh {tuple(q.shape[1:])}, got shape {tuple(k.shape)}")
    if v.shape != k.shape:
        raise ValueError(f"v must have k's shape {tuple(k.shape)}, got {tuple(v.shape)}")
    if torch.compiler.is_compiling():
        # Value checks read the tensors; under torch.compile only metadata is checked.
        _backend.check_tensor("cu_seqlens_q", cu_q, ndim=1, dtypes=_backend.INDEX_DTYPES, device=q.device)
        _backend.check_tensor("cu_seqlens_k", cu_k, ndim=1, dtypes=_backend.INDEX_DTYPES, device=q.device)
    else:
        _backend.check_cu_seqlens("cu_seqlens_q", cu_q, q.shape[0], q.device)
        _backend.check_cu_seqlens("cu_seqlens_k", cu_k, k.shape[0], q.device)
    if cu_q.shape != cu_k.shape:
        raise ValueError(
            f"cu_seqlens_q and cu_seqlens_k must describe the same number of segments, got "
            f"{cu_q.numel() - 1} and {cu_k.numel() - 1}")
    if scale is not None and not (isinstance(scale, (int, float)) and math.isfinite(scale)):
        raise ValueError(f"scale must be a finite number or None, got {scale!r}")


def varlen_cross_attention(q, k, v, cu_seqlens_q, cu_seqlens_k, scale=None, backend=None):
    """Attention of packed query segments to their own key/value segments.

    Args:
        q: [Nq, H, Dh] queries of S segments, packed.
        k, v: [Nk, H, Dh] keys and values of the same S segments, packed.
        cu_seqlens_q, cu_seqlens_k: int32/int64 [S+1] segment offsets (start at 0,
            non-decreasing, end at Nq / Nk).
        scale: softmax scale, default ``Dh ** -0.5``.
        backend: None (auto: Triton for CUDA tensors, ATen for CPU tensors), ``"triton"``,
            ``"cpu"`` or ``"reference"``.

    Returns:
        [Nq, H, Dh] in q's dtype; zeros for segments without keys. H = 0 or Dh = 0 give an
        empty result (and empty gradients) on every backend.

    The Triton backend takes float32/float16/bfloat16 and head dims up to 128 (any size:
    non-powers of two are masked); larger heads need ``"cpu"`` or ``"reference"``, and float64
    CUDA tensors go to the reference automatically.
    """
    _check(q, k, v, cu_seqlens_q, cu_seqlens_k, scale)
    # The kernels read offsets at unit stride: a strided view (same values) would be misread.
    cu_seqlens_q, cu_seqlens_k = cu_seqlens_q.contiguous(), cu_seqlens_k.contiguous()
    name = _backend.choose(OP, backend, q.device, SUPPORTS)
    if backend is None and name == "triton" and q.dtype == torch.float64:
        name = "reference"  # float64 on CUDA (e.g. gradcheck): only the reference computes in it
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[2]) if q.shape[2] else 1.0  # Dh = 0: an empty output
    scale = float(scale)
    if name == "reference":
        return varlen_cross_attention_reference(q, k, v, cu_seqlens_q, cu_seqlens_k, scale)
    if name == "triton":
        if q.dtype not in _TRITON_DTYPES:
            raise TypeError(f"{OP}: the triton backend takes float32, float16 or bfloat16, got "
                            f"{str(q.dtype).replace('torch.', '')}; use backend='cpu' or 'reference'")
        if q.shape[2] > TRITON_MAX_HEAD_DIM:
            raise ValueError(f"{OP}: the triton backend supports head dims up to {TRITON_MAX_HEAD_DIM}, "
                             f"got {q.shape[2]}; use backend='reference'")
    return _fwd_op(q, k, v, cu_seqlens_q, cu_seqlens_k, scale, name)[0]
