"""Packed segments: the one place that turns ``cu_seqlens`` into lengths, row ids and presence,
and the segment reductions, broadcasts and row gathers with deterministic backward.

Packed layout (DESIGN §3): the rows of S segments lie back to back in one [N, ...] tensor and an
int32/int64 ``cu_seqlens`` [S+1] (0 first, N last, non-decreasing) says where each starts.
:class:`Segments` carries everything derived from one ``cu_seqlens`` so it is computed once (in
collate) and reused by every layer of a step instead of being rebuilt.

Why not ``x[idx]``: the backward of advanced indexing is ``index_put_(accumulate=True)``, which on
the CPU adds float rows with atomics in parallel once the gradient is large (N·d >= 32768 and
more than one thread): rows that share a destination are summed in a thread-timing-dependent
order, so two identical training runs drift apart bit by bit. ``index_select``'s backward
(``index_add_``) happens to be serial on today's CPU kernels, but that is an implementation
detail. The functions here pin the order instead:

* :func:`segment_sum` / :func:`segment_mean` reduce each segment's rows sequentially
  (``torch.segment_reduce``); their backward is :func:`segment_broadcast`, a gather;
* :func:`segment_broadcast` copies row s of an [S, ...] tensor to every row of segment s; its
  backward is :func:`segment_sum`;
* :func:`gather_rows` ``src[index]`` for any index; its backward sorts the index once (stably)
  and sums each source row's gradients with a segment reduction.

Each backward is built from the other functions, so double backward works too. Nothing reads
tensor values on the host: no synchronisation on a GPU.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Segments:
    """Everything derived from one ``cu_seqlens`` (all on its device; ``max_len`` a host int known
    at collate time, so reading it never synchronises).

    ``cu_seqlens`` int64 [S+1]; ``lengths`` int64 [S]; ``ids`` int64 [N] (segment of every row);
    ``present`` bool [S] (segment has at least one row); ``max_len`` the longest segment, or None
    where it is not known without reading a GPU tensor (built from offsets on a device, e.g. by
    a model given a batch without segments)."""

    cu_seqlens: torch.Tensor
    lengths: torch.Tensor
    ids: torch.Tensor
    present: torch.Tensor
    max_len: int | None

    @classmethod
    def from_lengths(cls, lengths: torch.Tensor | list[int], device=None) -> "Segments":
        """Build from per-segment lengths. A list (the collate path) gives ``max_len`` without
        touching a device; a tensor on a GPU costs one sync for ``max_len``: build on the host."""
        lens = torch.as_tensor(lengths, dtype=torch.int64, device=device).reshape(-1)
        if lens.numel() and bool((lens < 0).any()):
            raise ValueError("lengths must be non-negative")
        cu = torch.zeros(lens.numel() + 1, dtype=torch.int64, device=lens.device)
        torch.cumsum(lens, 0, out=cu[1:])
        max_len = int(lens.max()) if lens.numel() else 0
        n = int(cu[-1]) if isinstance(lengths, torch.Tensor) else int(sum(int(v) for v in lengths))
        return cls(cu, lens, segment_ids(cu, n), lens > 0, max_len)

    @classmethod
    def from_cu_seqlens(cls, cu_seqlens: torch.Tensor, num_rows: int, max_len: int | None = None) -> "Segments":
        """Build from offsets ``[S+1]`` of ``num_rows`` rows. ``max_len`` is read from CPU offsets
        when not given; on a GPU it stays None rather than cost a synchronisation."""
        if not isinstance(cu_seqlens, torch.Tensor) or cu_seqlens.dim() != 1 or cu_seqlens.numel() < 1:
            shape = tuple(cu_seqlens.shape) if isinstance(cu_seqlens, torch.Tensor) else type(cu_seqlens).__name__
            raise ValueError(f"cu_seqlens must be a 1-D tensor [S+1], got {shape}")
        cu = cu_seqlens.long()
        lens = segment_lengths(cu)
        if max_len is None and cu.device.type == "cpu":
            max_len = int(lens.max()) if lens.numel() else 0
        return cls(cu, lens, segment_ids(cu, num_rows), lens > 0, None if max_len is None else int(max_len))

    @classmethod
    def from_segment_lengths(cls, lengths: torch.Tensor, num_rows: int, cu_seqlens: torch.Tensor | None = None,
                             max_len: int | None = None) -> "Segments":
        """Build from device lengths [S] of ``num_rows`` rows (offsets computed unless given),
        without reading any tensor value."""
        lens = lengths.long()
        cu = cu_seqlens_from_lengths(lens) if cu_seqlens is None else cu_seqlens.long()
        return cls(cu, lens, segment_ids(cu, num_rows), lens > 0, max_len)

    @property
    def num_segments(self) -> int:
        return self.lengths.numel()

    @property
    def num_rows(self) -> int:
        return self.ids.numel()

    def to(self, device, non_blocking: bool = False) -> "Segments":
        mv = lambda t: t.to(device, non_blocking=non_blocking)  # noqa: E731
        return Segments(mv(self.cu_seqlens), mv(self.lengths), mv(self.ids), mv(self.present), self.max_len)

    def pin_memory(self) -> "Segments":
        return Segments(self.cu_seqlens.pin_memory(), self.lengths.pin_memory(), self.ids.pin_memory(),
                        self.present.pin_memory(), self.max_len)


def as_segments(segments: "Segments | torch.Tensor", num_rows: int) -> Segments:
    """``segments`` itself, or the :class:`Segments` of offsets ``cu_seqlens`` over ``num_rows``
    rows (for callers that accept either)."""
    if isinstance(segments, Segments):
        if segments.num_rows != num_rows:
            raise ValueError(f"segments cover {segments.num_rows} rows, but the tensor has {num_rows}")
        return segments
    return Segments.from_cu_seqlens(segments, num_rows)


def _lengths(segments: "Segments | torch.Tensor") -> torch.Tensor:
    return segments.lengths if isinstance(segments, Segments) else segment_lengths(segments)


def cu_seqlens_from_lengths(lengths: torch.Tensor) -> torch.Tensor:
    """Offsets int64 [S+1] of per-segment lengths [S] (on their device, no sync)."""
    cu = torch.zeros(lengths.numel() + 1, dtype=torch.int64, device=lengths.device)
    torch.cumsum(lengths.reshape(-1).long(), 0, out=cu[1:])
    return cu


def segment_lengths(cu_seqlens: torch.Tensor) -> torch.Tensor:
    """Rows per segment, int64 [S]."""
    return (cu_seqlens[1:] - cu_seqlens[:-1]).long()


def segment_ids(cu_seqlens: torch.Tensor, num_rows: int) -> torch.Tensor:
    """Segment of every row, int64 [N] (empty segments own no row)."""
    rows = torch.arange(num_rows, device=cu_seqlens.device, dtype=torch.int64)
    return torch.searchsorted(cu_seqlens[1:].contiguous().long(), rows, right=True)


def _sum(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    # initial=0: an empty segment sums to 0 (not the reduction's identity of another dtype)
    return torch.segment_reduce(x, "sum", lengths=lengths, axis=0, unsafe=True, initial=0)


def _broadcast(x: torch.Tensor, lengths: torch.Tensor, num_rows: int) -> torch.Tensor:
    return torch.repeat_interleave(x, lengths, dim=0, output_size=num_rows)


class _SegmentSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, lengths):
        ctx.save_for_backward(lengths)
        ctx.num_rows = x.shape[0]
        return _sum(x, lengths)

    @staticmethod
    def backward(ctx, grad):
        (lengths,) = ctx.saved_tensors
        return _SegmentBroadcast.apply(grad, lengths, ctx.num_rows), None


class _SegmentBroadcast(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, lengths, num_rows):
        ctx.save_for_backward(lengths)
        return _broadcast(x, lengths, num_rows)

    @staticmethod
    def backward(ctx, grad):
        (lengths,) = ctx.saved_tensors
        return _SegmentSum.apply(grad, lengths), None, None


def segment_sum(x: torch.Tensor, segments: "Segments | torch.Tensor") -> torch.Tensor:
    """Sum of each segment's rows of ``x`` [N, ...] -> [S, ...]; 0 for an empty segment.
    ``segments``: a :class:`Segments` or its ``cu_seqlens`` (likewise below)."""
    return _SegmentSum.apply(x, _lengths(segments))


def segment_sum_by_lengths(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """:func:`segment_sum` given int64 lengths [S] (for callers that hold lengths of several
    segmentations stacked in one tensor)."""
    return _SegmentSum.apply(x, lengths)


def segment_mean(x: torch.Tensor, segments: "Segments | torch.Tensor") -> torch.Tensor:
    """Mean of each segment's rows -> [S, ...]; 0 for an empty segment."""
    lengths = _lengths(segments)
    total = _SegmentSum.apply(x, lengths)
    return total / lengths.clamp(min=1).to(x.dtype).view((-1,) + (1,) * (x.dim() - 1))


def segment_broadcast(x: torch.Tensor, segments: "Segments | torch.Tensor", num_rows: int | None = None) -> torch.Tensor:
    """Row s of ``x`` [S, ...] repeated over the rows of segment s -> [N, ...] (``num_rows`` N is
    needed with offsets; a :class:`Segments` knows it)."""
    if num_rows is None:
        if not isinstance(segments, Segments):
            raise ValueError("segment_broadcast needs num_rows when given cu_seqlens instead of Segments")
        num_rows = segments.num_rows
    return _SegmentBroadcast.apply(x, _lengths(segments), num_rows)


def segment_mean_broadcast(x: torch.Tensor, segments: "Segments | torch.Tensor") -> torch.Tensor:
    """Each row replaced by the mean of its segment's rows, [N, ...] (ordered reductions both
    ways)."""
    return segment_broadcast(segment_mean(x, segments), segments, x.shape[0])


def segment_amax(values: torch.Tensor, segments: Segments) -> torch.Tensor:
    """Per-segment maximum of a 1-D tensor [N] -> [S]; -inf for an empty segment (max is
    order-free, so the scatter is deterministic)."""
    out = torch.full((segments.num_segments,), float("-inf"), dtype=values.dtype, device=values.device)
    return out.scatter_reduce(0, segments.ids, values, "amax", include_self=True)


def segment_softmax(scores: torch.Tensor, segments: Segments) -> torch.Tensor:
    """Softmax of a 1-D score vector [N] within each segment -> [N]."""
    peak = segment_amax(scores.detach(), segments)  # softmax is shift-invariant: no gradient needed
    e = torch.exp(scores - peak.index_select(0, segments.ids))
    return e / segment_broadcast(segment_sum(e, segments), segments, scores.shape[0])


class _GatherRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, src, index):
        ctx.save_for_backward(index)
        ctx.num_src = src.shape[0]
        if ctx.num_src == 0:  # no row to point at: every index is the caller's padding
            return src.new_zeros((index.shape[0], *src.shape[1:]))
        return src.index_select(0, index)

    @staticmethod
    def backward(ctx, grad):
        (index,) = ctx.saved_tensors
        if ctx.num_src == 0:
            return grad.new_zeros((0, *grad.shape[1:])), None
        order = torch.sort(index, stable=True).indices
        # Integer counts: exact whatever the order the scatter adds them in.
        counts = torch.zeros(ctx.num_src, dtype=torch.int64, device=index.device)
        counts.scatter_add_(0, index, torch.ones_like(index))
        return _SegmentSum.apply(_GatherRows.apply(grad, order), counts), None


def gather_rows(src: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``src[index]`` for a 1-D int64 ``index`` (rows in [0, src.shape[0])), with a backward that
    sums repeated rows in a fixed order. An empty ``src`` (a modality absent from a whole batch)
    gives zero rows: callers pad with index 0, which such a stream lacks, and mask what it gives."""
    return _GatherRows.apply(src, index.long().reshape(-1))
