"""Packed-segment helpers shared by the scorers and the extractor (no host synchronisation)."""
from __future__ import annotations

import torch

from hotspot_erc.ops import _backend
# Re-exported: the packed-segment helpers with deterministic backward live in ops.segment.
from hotspot_erc.ops.segment import (gather_rows, segment_broadcast, segment_ids,  # noqa: F401
                                     segment_lengths, segment_mean, segment_sum)


def check_packed(x: torch.Tensor, cu_seqlens: torch.Tensor, name: str = "x") -> None:
    """``x`` is [N, ...] float and ``cu_seqlens`` a valid [S+1] offset vector ending at N."""
    _backend.check_tensor(name, x, dtypes=_backend.FLOAT_DTYPES)
    if x.dim() < 1:
        raise ValueError(f"{name} must have a leading frame dimension, got a 0-d tensor")
    _backend.check_cu_seqlens("cu_seqlens", cu_seqlens, x.shape[0], x.device)


def lengths(cu_seqlens: torch.Tensor) -> torch.Tensor:
    return segment_lengths(cu_seqlens)


def segment_amax(values: torch.Tensor, seg: torch.Tensor, num_segments: int) -> torch.Tensor:
    """Per-segment maximum of a 1-D tensor; -inf for an empty segment (max is order-free, so
    the scatter is deterministic)."""
    out = torch.full((num_segments,), float("-inf"), dtype=values.dtype, device=values.device)
    return out.scatter_reduce(0, seg, values, "amax", include_self=True)


def segment_softmax(scores: torch.Tensor, seg: torch.Tensor, cu_seqlens: torch.Tensor) -> torch.Tensor:
    """Softmax of a 1-D score vector within each segment, [N]."""
    s = cu_seqlens.numel() - 1
    n = scores.shape[0]
    peak = segment_amax(scores.detach(), seg, s)  # softmax is shift-invariant: no gradient needed
    e = torch.exp(scores - peak.index_select(0, seg))
    return e / segment_broadcast(segment_sum(e, cu_seqlens), cu_seqlens, n)
