"""Segment reductions, broadcasts and row gathers over packed rows with deterministic backward.

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

import torch


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


def segment_sum(x: torch.Tensor, cu_seqlens: torch.Tensor) -> torch.Tensor:
    """Sum of each segment's rows of ``x`` [N, ...] -> [S, ...]; 0 for an empty segment."""
    return _SegmentSum.apply(x, segment_lengths(cu_seqlens))


def segment_mean(x: torch.Tensor, cu_seqlens: torch.Tensor) -> torch.Tensor:
    """Mean of each segment's rows -> [S, ...]; 0 for an empty segment."""
    lengths = segment_lengths(cu_seqlens)
    total = _SegmentSum.apply(x, lengths)
    return total / lengths.clamp(min=1).to(x.dtype).view((-1,) + (1,) * (x.dim() - 1))


def segment_broadcast(x: torch.Tensor, cu_seqlens: torch.Tensor, num_rows: int) -> torch.Tensor:
    """Row s of ``x`` [S, ...] repeated over the ``num_rows`` rows of segment s -> [N, ...]."""
    return _SegmentBroadcast.apply(x, segment_lengths(cu_seqlens), num_rows)


class _GatherRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, src, index):
        ctx.save_for_backward(index)
        ctx.num_src = src.shape[0]
        return src.index_select(0, index)

    @staticmethod
    def backward(ctx, grad):
        (index,) = ctx.saved_tensors
        order = torch.sort(index, stable=True).indices
        # Integer counts: exact whatever the order the scatter adds them in.
        counts = torch.zeros(ctx.num_src, dtype=torch.int64, device=index.device)
        counts.scatter_add_(0, index, torch.ones_like(index))
        return _SegmentSum.apply(_GatherRows.apply(grad, order), counts), None


def gather_rows(src: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``src[index]`` for a 1-D int64 ``index`` (rows in [0, src.shape[0])), with a backward that
    sums repeated rows in a fixed order."""
    return _GatherRows.apply(src, index.long().reshape(-1))
