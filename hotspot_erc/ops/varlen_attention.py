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
from hotspot_erc.ops.cpu import varlen_attention as cpu
from hotspot_erc.reference.varlen_attention import varlen_cross_attention_reference

OP = "varlen_cross_attention"
TRITON_MAX_HEAD_DIM = _backend.CAPABILITIES[OP]["triton"].max_head_dim  # kept for imports

SUPPORTS = _backend.register(OP, {
    "triton": _backend.triton_reason,
    "cpu": lambda device: "" if device.type == "cpu" else "the ATen path is for CPU tensors",
})


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
        return (q.new_zeros(q.shape), q.new_full(q.shape[:2], float("-inf"), dtype=cpu.lse_dtype(q.dtype)),
                q.new_empty(0, dtype=torch.int32))
    if backend == "triton":
        return _triton_kernels().forward(q, k, v, cu_seqlens_q, cu_seqlens_k, scale)
    return (*cpu.forward(q, k, v, cu_seqlens_q, cu_seqlens_k, scale), q.new_empty(0, dtype=torch.int32))


@_fwd_op.register_fake
def _(q, k, v, cu_seqlens_q, cu_seqlens_k, scale, backend):
    return (q.new_empty(q.shape), q.new_empty(q.shape[:2], dtype=cpu.lse_dtype(q.dtype)),
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
    return cpu.backward(grad_out, q, k, v, out, lse, grad_lse, cu_seqlens_q, cu_seqlens_k, scale)


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
    _backend.check_qkv(q, k, v)
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
    non-powers of two are masked; ``_backend.CAPABILITIES``); larger heads need ``"cpu"`` or
    ``"reference"``, and the automatic choice sends float64 or Dh > 128 CUDA tensors to the
    reference.
    """
    _check(q, k, v, cu_seqlens_q, cu_seqlens_k, scale)
    # The kernels read offsets at unit stride: a strided view (same values) would be misread.
    cu_seqlens_q, cu_seqlens_k = cu_seqlens_q.contiguous(), cu_seqlens_k.contiguous()
    name = _backend.choose(OP, backend, q.device, SUPPORTS, dtype=q.dtype, head_dim=q.shape[2])
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[2]) if q.shape[2] else 1.0  # Dh = 0: an empty output
    scale = float(scale)
    if name == "reference":
        return varlen_cross_attention_reference(q, k, v, cu_seqlens_q, cu_seqlens_k, scale)
    return _fwd_op(q, k, v, cu_seqlens_q, cu_seqlens_k, scale, name)[0]
