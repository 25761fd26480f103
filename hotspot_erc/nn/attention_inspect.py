"""Where cross-modal attention looks: the attention mass that target hotspot frames put on source
hotspot frames, against what uniform attention would put there.

Used by :class:`~hotspot_erc.nn.moa.MixtureOfAligners` when asked to inspect (evaluation only,
no gradient). The fused attention kernels never form the probabilities, so they are recomputed
here from the same q and k over every (query, key) pair of a segment: Σ_s Lq_s·Lk_s pairs, small
at conversation scale.
"""
from __future__ import annotations

import torch

from hotspot_erc.segments import segment_ids, segment_lengths


@torch.no_grad()
def hotspot_attention_mass(q: torch.Tensor, k: torch.Tensor, cu_q: torch.Tensor, cu_k: torch.Tensor,
                           hot_q: torch.Tensor, hot_k: torch.Tensor, scale: float) -> torch.Tensor:
    """Sums over target hotspot frames that have keys, as float64 [3]: (attention mass on source
    hotspot frames, the mass uniform attention would put there, number of such frames).

    ``q`` [Nq, H, Dh], ``k`` [Nk, H, Dh]; ``hot_q`` / ``hot_k`` [Nq] / [Nk] hotspot masks (bool,
    or window weights: a frame counts above 0.5).
    The mass is averaged over heads. Divide the first two sums by the third for means.
    """
    device = q.device
    # soft (learned) windows give weights in [0, 1]: a frame counts as hotspot above one half
    hot_q = hot_q if hot_q.dtype == torch.bool else hot_q > 0.5
    hot_k = hot_k if hot_k.dtype == torch.bool else hot_k > 0.5
    lk = segment_lengths(cu_k)
    nq = q.shape[0]
    seg_q = segment_ids(cu_q, nq)
    keys_per_row = lk[seg_q]  # [Nq]
    pairs = int(keys_per_row.sum())
    out = torch.zeros(3, dtype=torch.float64, device=device)
    if pairs == 0:
        return out
    q_idx = torch.repeat_interleave(torch.arange(nq, device=device), keys_per_row, output_size=pairs)
    first_pair = torch.cumsum(keys_per_row, 0) - keys_per_row  # first pair of each query row
    pos = torch.arange(pairs, device=device) - first_pair[q_idx]
    k_idx = cu_k[:-1].long()[seg_q][q_idx] + pos
    scores = (q[q_idx].float() * k[k_idx].float()).sum(-1) * scale  # [P, H]
    row_max = torch.full((nq, scores.shape[1]), float("-inf"), device=device)
    row_max = row_max.scatter_reduce(0, q_idx[:, None].expand_as(scores), scores, "amax")
    w = torch.exp(scores - row_max[q_idx])
    denom = torch.zeros(nq, scores.shape[1], device=device).index_add_(0, q_idx, w)
    on_hot = torch.zeros_like(denom).index_add_(0, q_idx, w * hot_k[k_idx, None].float())
    mass = (on_hot / denom.clamp(min=1e-30)).mean(1)  # [Nq], over heads
    hot_keys = torch.zeros(nq, device=device).index_add_(0, q_idx, hot_k[k_idx].float())
    uniform = hot_keys / keys_per_row.clamp(min=1).float()
    rows = hot_q & (keys_per_row > 0)
    out[0] = mass[rows].double().sum()
    out[1] = uniform[rows].double().sum()
    out[2] = rows.double().sum()
    return out


@torch.no_grad()
def range_attention_mass(q: torch.Tensor, k: torch.Tensor, cu_k: torch.Tensor, rows: torch.Tensor,
                         seg: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, scale: float) -> torch.Tensor:
    """Attention mass that chosen query rows put on chosen key ranges of their segment, [U, B] float32
    (mean over heads).

    ``rows`` [U] packed query rows; ``seg`` [U] their segments; ``lo`` / ``hi`` [U, B] key positions
    within the segment, half-open, clipped to the segment (an empty range gets 0). Evaluation only:
    the probabilities are recomputed over the rows' whole key segments, padded to the longest one
    (one host read of that length).
    """
    start = cu_k[:-1].long()[seg]
    length = (cu_k[1:] - cu_k[:-1]).long()[seg]                      # [U]
    width = int(length.max()) if length.numel() else 0
    if width == 0:
        return torch.zeros(lo.shape, dtype=torch.float32, device=q.device)
    pos = torch.arange(width, device=q.device)
    valid = pos.view(1, -1) < length.view(-1, 1)                     # [U, W]
    idx = (start.view(-1, 1) + pos.view(1, -1)).clamp(max=max(k.shape[0] - 1, 0))
    scores = torch.einsum("uhd,uwhd->uhw", q[rows.long()].float(), k[idx].float()) * scale
    prob = scores.masked_fill(~valid.unsqueeze(1), float("-inf")).softmax(-1).nan_to_num(0.0).mean(1)  # [U, W]
    inside = (pos.view(1, 1, -1) >= lo.unsqueeze(-1)) & (pos.view(1, 1, -1) < hi.unsqueeze(-1))  # [U, B, W]
    return (prob.unsqueeze(1) * inside).sum(-1)
