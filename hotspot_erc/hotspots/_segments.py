"""Packed-segment helpers shared by the scorers and the extractor (no host synchronisation)."""
from __future__ import annotations

import torch

from hotspot_erc.ops import _backend


def check_packed(x: torch.Tensor, cu_seqlens: torch.Tensor, name: str = "x") -> None:
    """``x`` is [N, ...] float and ``cu_seqlens`` a valid [S+1] offset vector ending at N."""
    _backend.check_tensor(name, x, dtypes=_backend.FLOAT_DTYPES)
    if x.dim() < 1:
        raise ValueError(f"{name} must have a leading frame dimension, got a 0-d tensor")
    _backend.check_cu_seqlens("cu_seqlens", cu_seqlens, x.shape[0], x.device)


def segment_ids(cu_seqlens: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Segment index of every frame, [N] int64 (empty segments own no frame)."""
    frames = torch.arange(num_frames, device=cu_seqlens.device, dtype=cu_seqlens.dtype)
    return torch.searchsorted(cu_seqlens[1:].contiguous(), frames, right=True)


def lengths(cu_seqlens: torch.Tensor) -> torch.Tensor:
    return (cu_seqlens[1:] - cu_seqlens[:-1]).long()


def segment_sum(x: torch.Tensor, cu_seqlens: torch.Tensor) -> torch.Tensor:
    """Per-segment sum over frames, [S, ...]; zero for an empty segment. Deterministic (a
    segmented reduction, not atomics) and differentiable."""
    return torch.segment_reduce(x, "sum", lengths=lengths(cu_seqlens), axis=0, unsafe=True)


def segment_amax(values: torch.Tensor, seg: torch.Tensor, num_segments: int) -> torch.Tensor:
    """Per-segment maximum of a 1-D tensor; -inf for an empty segment (max is order-free, so
    the scatter is deterministic)."""
    out = torch.full((num_segments,), float("-inf"), dtype=values.dtype, device=values.device)
    return out.scatter_reduce(0, seg, values, "amax", include_self=True)


def segment_softmax(scores: torch.Tensor, seg: torch.Tensor, cu_seqlens: torch.Tensor) -> torch.Tensor:
    """Softmax of a 1-D score vector within each segment, [N]."""
    s = cu_seqlens.numel() - 1
    peak = segment_amax(scores.detach(), seg, s)  # softmax is shift-invariant: no gradient needed
    e = torch.exp(scores - peak[seg])
    denom = segment_sum(e, cu_seqlens)
    return e / denom[seg]
