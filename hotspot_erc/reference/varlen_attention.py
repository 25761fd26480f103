"""Plain-PyTorch references for variable-length cross-attention (DESIGN §3.3).

``varlen_cross_attention_reference`` is the executable spec: a loop over segments with the
textbook formula, computed in the inputs' dtype. The padded variants are the baselines a user
without a varlen kernel would write (pad every segment to the longest, mask, attend, unpad); the
benchmarks time them and the tests check that they agree with the spec.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def default_scale(head_dim: int, scale: float | None) -> float:
    if scale is not None:
        return float(scale)
    return 1.0 / math.sqrt(head_dim) if head_dim > 0 else 1.0  # Dh = 0: the output is empty anyway


def _zeros(qs, k, v):
    """Zeros [len(qs), H, Dh] that depend on q, k and v with exactly zero gradient: sums over
    empty slices, so no value of the inputs (not even inf or NaN) can leak into them, and a
    backward through an output made only of these still reaches every input."""
    return qs[..., :0].sum(-1, keepdim=True) + k[:0].sum(0) + v[:0].sum(0)


def varlen_cross_attention_reference(q, k, v, cu_seqlens_q, cu_seqlens_k, scale=None):
    """``o_t = softmax(q_t · K_sᵀ · scale) V_s`` for every query token t of segment s.

    q: [Nq, H, Dh]; k, v: [Nk, H, Dh]; cu_seqlens_*: [S+1]. Segments without keys give zeros
    (and zero gradients); keys and values of segments without queries get zero gradients.
    """
    scale = default_scale(q.shape[-1], scale)
    cq = cu_seqlens_q.tolist()
    ck = cu_seqlens_k.tolist()
    pieces = []
    for s in range(len(cq) - 1):
        qs, ks, vs = q[cq[s]:cq[s + 1]], k[ck[s]:ck[s + 1]], v[ck[s]:ck[s + 1]]
        if qs.shape[0] == 0:
            continue
        if ks.shape[0] == 0:
            pieces.append(_zeros(qs, k, v))
            continue
        scores = torch.einsum("qhd,khd->hqk", qs, ks) * scale
        probs = torch.softmax(scores, dim=-1)
        pieces.append(torch.einsum("hqk,khd->qhd", probs, vs))
    if not pieces:
        return _zeros(q, k, v)
    # cat (not writes into a preallocated output) keeps the result differentiable for gradcheck.
    return torch.cat(pieces, 0)


def pad_packed(x: torch.Tensor, cu_seqlens: torch.Tensor, max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Packed [N, ...] -> (padded [S, max_len, ...] with zeros, valid mask [S, max_len])."""
    lens = cu_seqlens[1:] - cu_seqlens[:-1]
    pos = torch.arange(max_len, device=x.device)
    valid = pos[None, :] < lens[:, None]
    padded = x.new_zeros((lens.shape[0], max_len) + tuple(x.shape[1:]))
    padded[valid] = x
    return padded, valid


def unpad(padded: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`pad_packed`: [S, L, ...] -> packed [N, ...]."""
    return padded[valid]


def _max_len(cu: torch.Tensor) -> int:
    return int((cu[1:] - cu[:-1]).max()) if cu.numel() > 1 else 0


def padded_attention_reference(q, k, v, cu_seqlens_q, cu_seqlens_k, scale=None,
                               max_seqlen_q: int | None = None, max_seqlen_k: int | None = None):
    """Eager padded baseline: pad to [S, H, L, Dh], masked softmax over a dense score tensor
    (O(S·H·Lq·Lk) memory), unpad. Rows whose segment has no keys give zeros."""
    scale = default_scale(q.shape[-1], scale)
    lq = _max_len(cu_seqlens_q) if max_seqlen_q is None else max_seqlen_q
    lk = _max_len(cu_seqlens_k) if max_seqlen_k is None else max_seqlen_k
    qp, qvalid = pad_packed(q, cu_seqlens_q, lq)
    kp, kvalid = pad_packed(k, cu_seqlens_k, lk)
    vp, _ = pad_packed(v, cu_seqlens_k, lk)
    scores = torch.einsum("sqhd,skhd->shqk", qp, kp) * scale
    scores = scores.masked_fill(~kvalid[:, None, None, :], float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    # A segment without keys has an all -inf row: softmax gives NaN there; those rows are zero.
    probs = probs.masked_fill(~kvalid.any(1)[:, None, None, None], 0.0)
    out = torch.einsum("shqk,skhd->sqhd", probs, vp)
    return unpad(out, qvalid)


def padded_sdpa_attention(q, k, v, cu_seqlens_q, cu_seqlens_k, scale=None,
                          max_seqlen_q: int | None = None, max_seqlen_k: int | None = None):
    """Baseline with ``torch.nn.functional.scaled_dot_product_attention`` on padded batches and a
    key-padding mask. Segments without keys are given one dummy key and zeroed afterwards, since
    a fully masked row is NaN in some SDPA backends."""
    lq = _max_len(cu_seqlens_q) if max_seqlen_q is None else max_seqlen_q
    lk = _max_len(cu_seqlens_k) if max_seqlen_k is None else max_seqlen_k
    qp, qvalid = pad_packed(q, cu_seqlens_q, lq)
    kp, kvalid = pad_packed(k, cu_seqlens_k, max(lk, 1))
    vp, _ = pad_packed(v, cu_seqlens_k, max(lk, 1))
    has_keys = kvalid.any(1)
    mask = kvalid.clone()
    mask[:, 0] |= ~has_keys
    out = F.scaled_dot_product_attention(
        qp.transpose(1, 2), kp.transpose(1, 2), vp.transpose(1, 2),
        attn_mask=mask[:, None, None, :], scale=scale,
    ).transpose(1, 2)
    out = out * has_keys[:, None, None, None].to(out.dtype)
    return unpad(out, qvalid)
