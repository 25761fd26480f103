"""Hotspot window extraction (DESIGN §4): scores -> up to K windows per utterance -> (C, H, mask).

Everything runs on packed frames with ``cu_seqlens`` and is vectorised over utterances: the only
Python loop is over the K windows (K is small), never over utterances or frames, and nothing
reads tensor values back to the host.

Peak picking is greedy non-maximum suppression, per utterance: take the highest-scoring frame
still available as a window centre, make every frame within ``2 * radius`` of it unavailable (so
windows of radius ``radius`` never overlap), repeat up to K times. Ties go to the earliest frame,
so flat scores give windows from the start of the utterance; a NaN score ranks below every
number. Windows are clipped at utterance boundaries, so an utterance shorter than a window gets
one clipped window (covering it whole when it has at most ``radius + 1`` frames); an utterance
with no frames gets no window (its peaks are -1).

With ``soft=True`` the window membership becomes differentiable in the scores (a soft top-k):
window k of an utterance gets the weight ``σ((s_peak_k − s_runner_up) / temperature)``, where
the runner-up is the frame NMS would have picked next (the weight is 1 when no frame is left).
Raising a chosen peak's score above the best rejected candidate strengthens its window, so a
learned scorer receives gradients from what the windows are used for. The hard choice of
centres is unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from hotspot_erc.hotspots.scores import check_packed
from hotspot_erc.segments import (Segments, as_segments, gather_rows, segment_amax, segment_broadcast, segment_mean,
                                  segment_softmax, segment_sum)

POOLS = ("mean", "attention")


@dataclass
class Hotspots:
    """Result of :func:`extract_hotspots`.

    Attributes:
        content: C [N, d], the utterance's global content broadcast to each of its frames.
        hotspot: H [N, d], x inside windows and 0 outside (scaled by the soft membership when
            ``soft=True``).
        mask: [N] float in [0, 1], window membership of each frame (hard: 0/1).
        peaks: [S, K] int64 packed frame index (into x) of each window centre, -1 where the
            utterance has fewer than K windows.
        window_weight: [S, K] weight of each window (1 for hard windows, the soft top-k weight
            with ``soft=True``, 0 where there is no window).
    """

    content: torch.Tensor
    hotspot: torch.Tensor
    mask: torch.Tensor
    peaks: torch.Tensor
    window_weight: torch.Tensor


def pick_peaks(scores: torch.Tensor, cu_seqlens: Segments | torch.Tensor, num_windows: int = 2,
               radius: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy NMS peak picking. Returns ``(peaks [S, K], runner_up [S])``: packed frame indices,
    -1 where there is none (``runner_up`` is the frame that would have been picked next)."""
    n = scores.shape[0]
    segs = as_segments(cu_seqlens, n)
    s, seg = segs.num_segments, segs.ids
    frames = torch.arange(n, device=scores.device)
    sc = scores.detach()
    if sc.dtype in (torch.float16, torch.bfloat16):
        sc = sc.float()
    sc = torch.nan_to_num(sc, nan=float("-inf"), posinf=float("inf"), neginf=float("-inf"))
    avail = torch.ones(n, dtype=torch.bool, device=scores.device)
    picks = []
    for _ in range(num_windows + 1):
        best = _best_available(sc, avail, segs, frames, n)
        picks.append(best)
        centre = best.clamp(min=0)[seg]
        near = (best >= 0)[seg] & ((frames - centre).abs() <= 2 * radius)
        avail = avail & ~near
    peaks = torch.stack(picks[:num_windows], dim=1) if num_windows else torch.full(
        (s, 0), -1, dtype=torch.long, device=scores.device)
    return peaks, picks[num_windows]


def _best_available(sc, avail, segs, frames, n):
    """Per segment: the earliest available frame with the highest score, or -1."""
    s, seg = segs.num_segments, segs.ids
    masked = sc.masked_fill(~avail, float("-inf"))
    top = segment_amax(masked, segs)
    hit = avail & (masked == top[seg])
    idx = torch.where(hit, frames, torch.full_like(frames, n))
    first = torch.full((s,), n, dtype=frames.dtype, device=frames.device).scatter_reduce(
        0, seg, idx, "amin", include_self=True)
    return torch.where(first < n, first, torch.full_like(first, -1))


def extract_hotspots(x: torch.Tensor, cu_seqlens: Segments | torch.Tensor, scores: torch.Tensor, num_windows: int = 2,
                     radius: int = 2, soft: bool = False, temperature: float = 1.0,
                     pool: str = "mean") -> Hotspots:
    """Turn per-frame ``scores`` [N] into up to ``num_windows`` windows of half-width ``radius``
    per utterance and build C, H and the window mask (see the module docstring).

    Args:
        x: [N, d] packed frames; cu_seqlens: [S+1] offsets (int32/int64), or the batch's
            :class:`~hotspot_erc.segments.Segments` (nothing is re-derived then).
        scores: [N] intensity per frame (data, :func:`rule_scores` or a :class:`LearnedScorer`).
        num_windows: K >= 0, windows per utterance at most.
        radius: w >= 0; a window covers centre ± w frames of the same utterance.
        soft: make the membership differentiable in ``scores`` (soft top-k, see above).
        temperature: > 0, softness of the soft top-k and of attention pooling.
        pool: how C summarises an utterance: ``"mean"`` over its frames, or ``"attention"``
            with weights ``softmax(scores / temperature)`` inside the utterance.
    """
    segs = check_packed(x, cu_seqlens)
    if x.dim() != 2:
        raise ValueError(f"x must have shape [N, d], got {tuple(x.shape)}")
    if not isinstance(scores, torch.Tensor) or scores.shape != (x.shape[0],):
        shape = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
        raise ValueError(f"scores must have shape [N] = [{x.shape[0]}] (one per frame of x), got {shape}")
    if scores.device != x.device:
        raise ValueError(f"scores must be on {x.device}, got {scores.device}")
    if not scores.is_floating_point():
        raise TypeError(f"scores must be a floating-point tensor, got {scores.dtype}")
    if int(num_windows) != num_windows or num_windows < 0:
        raise ValueError(f"num_windows must be an integer >= 0, got {num_windows!r}")
    if int(radius) != radius or radius < 0:
        raise ValueError(f"radius must be an integer >= 0, got {radius!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
    num_windows, radius = int(num_windows), int(radius)

    n = x.shape[0]
    seg = segs.ids
    peaks, runner_up = pick_peaks(scores, segs, num_windows, radius)

    has = peaks >= 0
    wdt = torch.float64 if x.dtype == torch.float64 else torch.float32  # weights never in 16 bits
    if soft and num_windows:
        sf = scores.to(wdt)
        # gather_rows, not sf[...]: indexing's backward adds repeated rows in a thread-dependent order
        peak_score = gather_rows(sf, peaks.clamp(min=0)).view(peaks.shape) if n else sf.new_zeros(peaks.shape)
        rival = gather_rows(sf, runner_up.clamp(min=0)) if n else sf.new_zeros(runner_up.shape)
        weight = torch.sigmoid((peak_score - rival[:, None]) / temperature)
        weight = torch.where((runner_up >= 0)[:, None], weight, torch.ones_like(weight))
        weight = torch.where(has, weight, torch.zeros_like(weight))
    else:
        weight = has.to(wdt)

    # Membership of frame t: the weight of the window of its own utterance that covers it.
    frames = torch.arange(n, device=x.device)
    own = peaks.index_select(0, seg)  # [N, K]
    covers = (own >= 0) & ((frames[:, None] - own).abs() <= radius)
    mask = ((segment_broadcast(weight, segs) * covers).amax(dim=1) if num_windows
            else x.new_zeros(n, dtype=wdt))
    mask = mask.to(x.dtype)
    hotspot = x * mask[:, None]

    # Broadcasts back to the frames through segment_broadcast (backward: an ordered segment
    # sum), never pooled[seg], whose backward is a parallel atomic scatter on the CPU.
    if pool == "mean":
        pooled = segment_mean(x, segs)
    else:
        att = segment_softmax(scores.to(wdt) / temperature, segs).to(x.dtype)
        pooled = segment_sum(x * att[:, None], segs)
    content = segment_broadcast(pooled, segs)
    return Hotspots(content=content, hotspot=hotspot, mask=mask, peaks=peaks, window_weight=weight)
