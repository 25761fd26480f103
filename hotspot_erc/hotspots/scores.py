"""Per-frame intensity scores (DESIGN §4): from the data, from a rule, or learned.

(a) Data scores (audio energy, action-unit intensity, LLM-tagged words...) arrive with the batch
    (``Batch.intensity``); :func:`normalize_scores` puts them, or any other score, on a common
    per-utterance [0, 1] scale.
(b) :func:`rule_scores` computes a score from the features themselves.
(c) :class:`LearnedScorer` is a small network trained end to end through the soft window
    membership of :func:`hotspot_erc.hotspots.extract.extract_hotspots` (``soft=True``).
"""
from __future__ import annotations

import torch
from torch import nn

from hotspot_erc.ops import _backend
from hotspot_erc.segments import Segments, as_segments, segment_amax, segment_broadcast

RULES = ("norm", "delta")


def check_packed(x: torch.Tensor, segments: Segments | torch.Tensor, name: str = "x") -> Segments:
    """``x`` is [N, ...] float and ``segments`` (a :class:`~hotspot_erc.segments.Segments` or a
    valid [S+1] ``cu_seqlens`` ending at N) covers its rows; returns the Segments."""
    _backend.check_tensor(name, x, dtypes=_backend.FLOAT_DTYPES)
    if x.dim() < 1:
        raise ValueError(f"{name} must have a leading frame dimension, got a 0-d tensor")
    cu = segments.cu_seqlens if isinstance(segments, Segments) else segments
    _backend.check_cu_seqlens("cu_seqlens", cu, x.shape[0], x.device)
    return as_segments(segments, x.shape[0])


def rule_scores(x: torch.Tensor, cu_seqlens: Segments | torch.Tensor, kind: str = "norm") -> torch.Tensor:
    """Intensity of every frame of packed features ``x`` [N, d] -> [N] (``cu_seqlens``: offsets
    [S+1] or the batch's :class:`~hotspot_erc.segments.Segments`).

    ``kind="norm"``: ‖x_t‖₂, the energy of the frame.
    ``kind="delta"``: ‖x_t − x_{t−1}‖₂, how much the frame changed from the previous frame of the
    same utterance (changes never cross utterance boundaries). The first frame of an utterance
    takes the change to its successor, so a burst at the very start is still seen; a one-frame
    utterance scores 0.
    """
    segs = check_packed(x, cu_seqlens)
    if x.dim() != 2:
        raise ValueError(f"x must have shape [N, d], got {tuple(x.shape)}")
    if kind == "norm":
        return torch.linalg.vector_norm(x, dim=1)
    if kind != "delta":
        raise ValueError(f"kind must be one of {RULES}, got {kind!r}")
    n = x.shape[0]
    if n == 0:
        return x.new_zeros(0)
    seg = segs.ids
    step = torch.linalg.vector_norm(x[1:] - x[:-1], dim=1)  # step[t-1] = change into frame t
    same_prev = torch.zeros(n, dtype=torch.bool, device=x.device)
    same_prev[1:] = seg[1:] == seg[:-1]
    into = x.new_zeros(n)
    into[1:] = step
    out_of = x.new_zeros(n)
    out_of[:-1] = step
    same_next = torch.zeros_like(same_prev)
    same_next[:-1] = same_prev[1:]
    return torch.where(same_prev, into, torch.where(same_next, out_of, torch.zeros_like(into)))


def normalize_scores(scores: torch.Tensor, cu_seqlens: Segments | torch.Tensor) -> torch.Tensor:
    """Min-max scale ``scores`` [N] to [0, 1] within each utterance; a flat utterance maps to 0.

    Peak picking only compares scores inside one utterance, so this changes no window; it makes
    scores from different sources comparable (e.g. to average a data score with a rule score).
    """
    segs = check_packed(scores, cu_seqlens, "scores")
    if scores.dim() != 1:
        raise ValueError(f"scores must have shape [N], got {tuple(scores.shape)}")
    hi = segment_broadcast(segment_amax(scores, segs), segs)
    lo = -segment_broadcast(segment_amax(-scores, segs), segs)
    span = hi - lo
    return torch.where(span > 0, (scores - lo) / torch.where(span > 0, span, torch.ones_like(span)),
                       torch.zeros_like(scores))


class LearnedScorer(nn.Module):
    """A learned per-frame intensity: ``score_t = w₂ · tanh(W₁ x_t + b₁) + b₂``.

    Frame-local on purpose: context comes from the features (already projected and, in the full
    model, extracted per utterance). Train it end to end with ``extract_hotspots(..., soft=True)``,
    whose soft window membership and attention pooling pass gradients to these scores.

    Args:
        dim: feature size of the frames.
        hidden: hidden width (default ``max(8, dim // 2)``).
    """

    def __init__(self, dim: int, hidden: int | None = None):
        super().__init__()
        hidden = hidden or max(8, dim // 2)
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)
