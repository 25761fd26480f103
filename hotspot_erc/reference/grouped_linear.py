"""Plain-PyTorch segment-routed expert projection: the executable spec of DESIGN §3.2.

For token t of segment s: ``y_t = Σ_i gates[s,i] · (x_t @ weight[experts[s,i]] + bias[experts[s,i]])``.

:func:`grouped_expert_linear_reference` is what a model author writes first (the usual eager
mixture-of-experts loop: for each expert, gather the tokens routed to it, project, scale by the
gate, add back); it is the eager baseline of the benchmarks. :func:`grouped_expert_linear_per_segment` is the definition read
literally (a loop over segments and slots) and serves only to check the first on tiny inputs.
"""
from __future__ import annotations

import torch


def token_segments(cu_seqlens: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """Segment index of every token, LongTensor [N] (``output_size`` avoids a host sync)."""
    cu = cu_seqlens.to(torch.int64)
    lengths = cu[1:] - cu[:-1]
    seg = torch.arange(lengths.numel(), device=cu.device)
    return torch.repeat_interleave(seg, lengths, output_size=num_tokens)


def grouped_expert_linear_reference(x: torch.Tensor, cu_seqlens: torch.Tensor, experts: torch.Tensor,
                                    gates: torch.Tensor, weight: torch.Tensor,
                                    bias: torch.Tensor | None = None) -> torch.Tensor:
    """Loop over the E experts, each applied to the tokens whose segment selected it; returns
    [N, d_out] in x's dtype.

    x: [N, d_in]; cu_seqlens: [S+1]; experts: [S, k] ids in [0, E); gates: [S, k];
    weight: [E, d_in, d_out]; bias: [E, d_out] or None. A slot that repeats an expert adds its
    gate again (the sum in the definition runs over slots, not over distinct experts). Experts
    no segment selected are never read: an inf or NaN in their weights cannot reach the output
    (0 · inf would be NaN). Gathers the selected rows per expert (``nonzero``: a host sync on
    a GPU, as in the usual eager mixture-of-experts loop).
    """
    num_experts = weight.shape[0]
    seg = token_segments(cu_seqlens, x.shape[0])
    experts = experts.long()
    # per-segment total gate of each expert, and whether the segment selected it: [S, E]
    seg_gate = torch.zeros(experts.shape[0], num_experts, dtype=gates.dtype, device=x.device)
    seg_gate = seg_gate.scatter_add(1, experts, gates)
    chosen = torch.zeros(experts.shape[0], num_experts, dtype=torch.bool, device=x.device)
    chosen = chosen.scatter(1, experts, True)
    tok_chosen = chosen.index_select(0, seg)  # [N, E]
    out = x.new_zeros(x.shape[0], weight.shape[2])
    for e in range(num_experts):
        rows = tok_chosen[:, e].nonzero().squeeze(1)
        y = x.index_select(0, rows) @ weight[e]
        if bias is not None:
            y = y + bias[e]
        g = seg_gate[:, e].index_select(0, seg.index_select(0, rows)).to(x.dtype)
        # rows of one expert are distinct: index_add writes each once
        out = out.index_add(0, rows, g[:, None] * y)
    return out


def grouped_expert_linear_per_segment(x, cu_seqlens, experts, gates, weight, bias=None):
    """The definition read literally: a Python loop over segments and slots (tiny inputs only)."""
    cu = cu_seqlens.tolist()
    rows = []
    for s in range(len(cu) - 1):
        xs = x[cu[s]:cu[s + 1]]
        ys = xs.new_zeros(xs.shape[0], weight.shape[2])
        for i in range(experts.shape[1]):
            e = int(experts[s, i])
            y = xs @ weight[e]
            if bias is not None:
                y = y + bias[e]
            ys = ys + gates[s, i].to(x.dtype) * y
        rows.append(ys)
    # x[:0] @ weight[0]: an empty result that still belongs to the autograd graph (zero grads)
    return torch.cat(rows) if rows else x[:0] @ weight[0]
