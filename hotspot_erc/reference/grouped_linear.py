"""Plain-PyTorch segment-routed expert projection: the executable spec of DESIGN §3.2.

For token t of segment s: ``y_t = Σ_i gates[s,i] · (x_t @ weight[experts[s,i]] + bias[experts[s,i]])``.

:func:`grouped_expert_linear_reference` is what a model author writes first (a loop over experts,
each applied to every token and masked by the token's total gate for that expert); it is the eager
baseline of the benchmarks. :func:`grouped_expert_linear_per_segment` is the definition read
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
    """Loop over the E experts; returns [N, d_out] in x's dtype.

    x: [N, d_in]; cu_seqlens: [S+1]; experts: [S, k] ids in [0, E); gates: [S, k];
    weight: [E, d_in, d_out]; bias: [E, d_out] or None. A slot that repeats an expert adds its
    gate again (the sum in the definition runs over slots, not over distinct experts).
    """
    num_experts = weight.shape[0]
    seg = token_segments(cu_seqlens, x.shape[0])
    # per-segment total gate of each expert: [S, E]
    seg_gate = torch.zeros(experts.shape[0], num_experts, dtype=gates.dtype, device=x.device)
    seg_gate = seg_gate.scatter_add(1, experts.long(), gates)
    tok_gate = seg_gate[seg].to(x.dtype)  # [N, E]
    out = x.new_zeros(x.shape[0], weight.shape[2])
    for e in range(num_experts):
        y = x @ weight[e]
        if bias is not None:
            y = y + bias[e]
        out = out + tok_gate[:, e:e + 1] * y
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
    return torch.cat(rows) if rows else x.new_zeros(0, weight.shape[2])
