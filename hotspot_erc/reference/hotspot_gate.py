"""Plain-PyTorch hotspot-gated fusion: the executable spec of DESIGN §3.1.

Tests compare every backend of :func:`hotspot_erc.ops.hotspot_gate.hotspot_gate` with this
function (in float64), and the benchmarks time it as the eager baseline. It is written the way a
model author would write it: concatenate, one linear layer, sigmoid, interpolate.
"""
from __future__ import annotations

import torch


def hotspot_gate_reference(c: torch.Tensor, h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                           return_gate: bool = False):
    """``out = c + α ⊙ (h − c)`` with ``α = sigmoid([c; h] @ weight + bias)``.

    c, h: [N, d]; weight: [2d, g]; bias: [g] with g ∈ {1, d}. With g = 1 the scalar gate of a
    token is broadcast over its d features. Returns ``out`` [N, d], or ``(out, α)`` with α [N, g].
    NaN/Inf in any input propagates to the outputs it touches, as in any linear layer.
    """
    z = torch.cat([c, h], dim=-1) @ weight + bias
    alpha = torch.sigmoid(z)
    out = c + alpha * (h - c)
    return (out, alpha) if return_gate else out
