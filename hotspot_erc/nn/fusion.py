"""`HotspotGatedFusion`: the module over :func:`hotspot_erc.ops.hotspot_gate.hotspot_gate`."""
from __future__ import annotations

import math

import torch
from torch import nn

from hotspot_erc.ops.hotspot_gate import hotspot_gate


class HotspotGatedFusion(nn.Module):
    """Mixes global content ``c`` and hotspot features ``h`` per token (DESIGN §3.1):
    ``out = c + α ⊙ (h − c)``, ``α = sigmoid([c; h] @ weight + bias)``.

    Args:
        dim: feature size d of ``c`` and ``h``.
        gate: ``"vector"`` (one gate per feature, weight [2d, d]) or ``"scalar"`` (one gate per
            token, weight [2d, 1]).
        backend: forwarded to the op (None = automatic).

    ``forward(c, h, return_gate=False)`` returns ``out`` [N, d], or ``(out, α)`` with α [N, g].
    Parameters are cast to the input dtype, so the module runs inside bf16/fp16 models and
    under autocast without a dtype error (the cast is a no-op when the dtypes match).
    """

    def __init__(self, dim: int, gate: str = "vector", backend: str | None = None):
        super().__init__()
        if gate not in ("vector", "scalar"):
            raise ValueError(f"gate must be 'vector' or 'scalar', got {gate!r}")
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.dim = dim
        self.gate = gate
        self.backend = backend
        g = dim if gate == "vector" else 1
        self.weight = nn.Parameter(torch.empty(2 * dim, g))
        self.bias = nn.Parameter(torch.empty(g))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # nn.Linear(2d, g)'s initialisation: the gate starts near 0.5 with a small spread.
        bound = 1.0 / math.sqrt(2 * self.dim)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, c: torch.Tensor, h: torch.Tensor, return_gate: bool = False):
        return hotspot_gate(c, h, self.weight.to(c.dtype), self.bias.to(c.dtype), return_gate=return_gate, backend=self.backend)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, gate={self.gate!r}"
