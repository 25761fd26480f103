"""Cross-utterance alignment objective: teaches MoA's queries and keys to match content across
modalities without labels.

Why: the classification loss alone reaches the key match only through the classifier, and on the
alignment story it never does — the model memorises the training set first and its attention puts
no more mass on the matched burst than on a distractor (measured 2026-11-30, docs/EXPERIMENTS.md).
What one utterance's modalities share, and other utterances' do not, is exactly what alignment must
find, so it can be learned contrastively: a target utterance's query rows must pick out *its own* source stream among the
other utterances of the batch.

For one ordered pair (source k -> target j) and head h, with q the target's query rows and k^(s)
the source keys as utterance s's attention would make them (its own expert mix: MoA computes
this exactly and cheaply, see ``MixtureOfAligners._contrast``)::

    score_h(s, u) = log Σ_{r in rows_j(s)} Σ_{f in frames_k(u)} exp(q_{r,h} · k^(s)_{f,h} / sqrt(d_h))
    loss = mean over (pair, head, s with rows and frames) of  -log softmax_u score_h(s, u) [at u = s]

The double log-sum-exp is a multiple-instance score: it is high when *some* query row of s (a
hotspot peak) matches *some* frame of u. Only the content shared by the two modalities of one
utterance can raise score(s, s) above score(s, u), so the optimum is attention that finds the
matching frame; distractor bursts inside s cannot help. Utterances without query rows or without
source frames are left out (they have nothing to match); an empty batch gives 0.

Cost per pair: H · S² · L_q · L_k scores (S utterances in the batch, L the longest padded
segments); it runs in training only, and only when ``align_weight`` > 0. ``align_warmup`` (train
config) trains it alone for the first epochs, before cross-entropy joins.
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

_MASKED = -1e9


def padded_rows(cu_seqlens: torch.Tensor, max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row index [S, max_len] of every segment's rows, padded (padding points at a valid row),
    and its mask [S, max_len]; ``max_len`` is a host int (no device read)."""
    cu = cu_seqlens.long()
    pos = torch.arange(max(max_len, 1), device=cu.device)
    lengths = cu[1:] - cu[:-1]
    mask = pos[None, :] < lengths[:, None]
    index = torch.where(mask, cu[:-1, None] + pos[None, :], torch.zeros_like(cu[:-1, None]))
    return index, mask


def grouped(x: torch.Tensor, group: int) -> torch.Tensor:
    """``x`` [S, ...] as [ceil(S / group), group, ...], zero-padded (padded utterances must be
    masked out by the caller's masks, which go through this too and pad with False)."""
    s_count = x.shape[0]
    blocks = max(1, -(-s_count // group))
    pad = blocks * group - s_count
    if pad:
        x = torch.cat([x, x.new_zeros((pad, *x.shape[1:]))])
    return x.view(blocks, group, *x.shape[1:])


def alignment_contrast(q: torch.Tensor, q_mask: torch.Tensor, k: torch.Tensor, k_mask: torch.Tensor,
                       scale: float, row_bias: torch.Tensor | None = None, group: int | None = None) -> torch.Tensor:
    """The objective of the module docstring for one pair, on padded per-utterance tensors.

    ``q`` [S, L_q, H, D] query rows and ``q_mask`` [S, L_q]; ``k`` [S, L_k, H, D] keys, or
    [S, L_k, D] keys shared by every head, and ``k_mask`` [S, L_k]; scores are ``scale · q·k``
    plus ``row_bias`` [S, L_q, H] when given (a per-row term constant over frames, added as is).
    ``group``: the utterances are split into consecutive groups of this many and each one's
    negatives are the others of its group (cost S·group instead of S²; None = one group).
    Returns the mean cross-entropy over (head, utterance with rows and frames), a 0-dim tensor
    (0 when there is none).
    """
    if q.dim() != 4 or k.dim() not in (3, 4) or q.shape[-1] != k.shape[-1] or (k.dim() == 4 and k.shape[2] != q.shape[2]):
        raise ValueError(f"q must be [S, L, H, D] and k [S, L, H, D] or [S, L, D] with the same H and D, got "
                         f"{tuple(q.shape)} and {tuple(k.shape)}")
    if q_mask.shape != q.shape[:2] or k_mask.shape != k.shape[:2] or q.shape[0] != k.shape[0]:
        raise ValueError("q_mask and k_mask must be [S, L] matching q and k with the same S, got "
                         f"{tuple(q_mask.shape)} for q {tuple(q.shape)} and {tuple(k_mask.shape)} for k {tuple(k.shape)}")
    if group is not None and group < 2:
        raise ValueError(f"group must be >= 2 (an utterance needs negatives), got {group}")
    if q.shape[0] == 0 or q.shape[1] == 0 or k.shape[1] == 0:
        return (q.sum() + k.sum()) * 0.0
    group = group or q.shape[0]
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32  # half inputs: scores in float32
    qf, kf = grouped(q.to(acc), group), grouped(k.to(acc), group)
    if k.dim() == 3:
        scores = torch.einsum("gslhd,gtfd->ghsltf", qf, kf)
    else:
        scores = torch.einsum("gslhd,gtfhd->ghsltf", qf, kf)
    scores = scores * scale
    if row_bias is not None:
        scores = scores + grouped(row_bias.to(acc), group).permute(0, 3, 1, 2)[..., None, None]
    return contrast_from_scores(scores, grouped(q_mask, group), grouped(k_mask, group))


def contrast_from_scores(scores: torch.Tensor, q_mask: torch.Tensor, k_mask: torch.Tensor) -> torch.Tensor:
    """The objective from grouped scores [G, H, S, L_q, S, L_k] (query row (s, l) against frame
    (u, f) of the same group) and the masks [G, S, L_q], [G, S, L_k]; see :func:`alignment_contrast`."""
    groups, heads, s_count, l_q, _, l_k = scores.shape
    if s_count == 0 or l_q == 0 or l_k == 0:
        return scores.sum() * 0.0
    # A finite fill, not -inf: a log-sum-exp over nothing but -inf has a NaN gradient, and an
    # utterance without frames (or rows) is such a case; exp(_MASKED - max) is exactly 0.
    scores = scores.masked_fill(~k_mask.view(groups, 1, 1, 1, s_count, l_k), _MASKED)
    per_row = torch.logsumexp(scores, -1)                                       # [G, H, S, L_q, S]
    per_row = per_row.masked_fill(~q_mask.view(groups, 1, s_count, l_q, 1), _MASKED)
    logits = torch.logsumexp(per_row, 3)                                        # [G, H, S, S]
    k_any, q_any = k_mask.any(2), q_mask.any(2)                                 # [G, S]
    logits = logits.masked_fill(~k_any.view(groups, 1, 1, s_count), _MASKED)   # no frames: never the answer
    rows = q_any & k_any
    # Rows left out are replaced by zeros (finite) and weighted 0, so no NaN reaches the mean.
    logits = torch.where(rows.view(groups, 1, s_count, 1), logits, torch.zeros_like(logits))
    target = torch.arange(s_count, device=scores.device).expand(groups, heads, s_count)
    ce = F.cross_entropy(logits.reshape(-1, s_count), target.reshape(-1), reduction="none")
    weight = rows.view(groups, 1, s_count).expand(groups, heads, s_count).reshape(-1).to(ce.dtype)
    return (ce * weight).sum() / weight.sum().clamp(min=1.0)
