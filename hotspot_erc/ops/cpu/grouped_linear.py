"""CPU backend of ``grouped_expert_linear`` (the "ATen path"): the (token, slot) pairs are sorted
by expert and each expert multiplies only its own rows, N·k rows in all against the reference's
N·E. Device-generic, but it reads per-expert counts on the host (a sync on CUDA), so the
automatic choice takes it for CUDA tensors only in float64, which the Triton kernels do not take.
The weight gradient is grouped by expert: deterministic, no scatter-add."""
from __future__ import annotations

import torch

from hotspot_erc.segments import segment_ids


def pairs_by_expert(cu_seqlens, experts, num_tokens):
    """(token, slot) pairs p = token·k + slot sorted by expert (stable).

    Returns (order: pair ids in expert order [N·k], its inverse permutation, the token of each
    sorted pair, the segment of every token [N], pairs per expert as host ints).
    """
    k = experts.shape[1]
    seg = segment_ids(cu_seqlens, num_tokens)
    pair_e = experts.to(torch.int64).index_select(0, seg).reshape(-1)
    order = torch.sort(pair_e, stable=True).indices
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(order.numel(), device=order.device)
    counts = torch.bincount(pair_e).tolist()
    return order, inverse, order // k, seg, counts


def slot_sum(rows: torch.Tensor, inverse: torch.Tensor, n: int, k: int) -> torch.Tensor:
    """Rows of the expert-sorted pairs back in (token, slot) order, the k slots summed: a gather
    and a fixed-order sum instead of a scatter-add."""
    back = rows.index_select(0, inverse)
    return back if k == 1 else back.view(n, k, -1).sum(1)


def forward(x, cu_seqlens, experts, gates, weight, bias):
    n, k, d_out = x.shape[0], experts.shape[1], weight.shape[2]
    if n == 0:
        return x.new_zeros(0, d_out)
    order, inverse, tok, seg, counts = pairs_by_expert(cu_seqlens, experts, n)
    g = gates.to(x.dtype).index_select(0, seg).reshape(-1).index_select(0, order)[:, None]
    xs = x.index_select(0, tok)
    ys = x.new_empty(n * k, d_out)
    start = 0
    for e, cnt in enumerate(counts):
        if cnt:
            sl = slice(start, start + cnt)
            if bias is not None:
                torch.addmm(bias[e], xs[sl], weight[e], out=ys[sl])
            else:
                torch.mm(xs[sl], weight[e], out=ys[sl])
            start += cnt
    return slot_sum(ys.mul_(g), inverse, n, k)


def backward(dy, x, cu_seqlens, experts, gates, weight, bias):
    n, d_in = x.shape
    k = experts.shape[1]
    acc = torch.promote_types(x.dtype, torch.float32)
    # new_zeros, not zeros_like: gradients are contiguous whatever the inputs' strides, as the
    # registered fake says (zeros_like would copy a transposed weight's strides).
    dweight = weight.new_zeros(weight.shape)
    dbias = bias.new_zeros(bias.shape) if bias is not None else None
    if n == 0:
        return x.new_zeros(x.shape), gates.new_zeros(gates.shape), dweight, dbias
    order, inverse, tok, seg, counts = pairs_by_expert(cu_seqlens, experts, n)
    g = gates.to(x.dtype).index_select(0, seg).reshape(-1).index_select(0, order)[:, None]
    xs = x.index_select(0, tok)
    dys = dy.index_select(0, tok)
    gdy = dys * g
    t = x.new_empty(n * k, d_in)
    dg_bias = torch.zeros(n * k, dtype=acc, device=x.device) if bias is not None else None
    start = 0
    for e, cnt in enumerate(counts):
        if not cnt:
            continue
        sl = slice(start, start + cnt)
        torch.mm(dys[sl], weight[e].transpose(0, 1), out=t[sl])
        torch.mm(xs[sl].transpose(0, 1), gdy[sl], out=dweight[e])
        if bias is not None:
            dbias[e] = gdy[sl].sum(0)
            dg_bias[sl] = dys[sl].to(acc) @ bias[e].to(acc)
        start += cnt
    # d gate = dy · (x W_e + b_e) = x · (dy W_eᵀ) + dy · b_e, per pair, then summed per segment
    dg = (t.to(acc) * xs.to(acc)).sum(-1)
    if dg_bias is not None:
        dg = dg + dg_bias
    dx = slot_sum(t.mul_(g), inverse, n, k)
    dg_tok = dg.index_select(0, inverse).view(n, k)
    lengths = cu_seqlens[1:] - cu_seqlens[:-1]
    dgates = torch.segment_reduce(dg_tok, "sum", lengths=lengths, unsafe=True, initial=0)
    return dx, dgates.to(gates.dtype), dweight, dbias
