"""Frame-level encoders and attention pooling on packed variable-length segments.

DESIGN §1 default: each modality has a pre-norm transformer block whose self-attention is
:func:`~hotspot_erc.ops.varlen_attention.varlen_cross_attention` with q, k and v taken from the
same segments (frames attend only within their own utterance). Utterance vectors are attention-
pooled frames: one learned query per head attends over the utterance's frames, which is again a
varlen cross-attention with one query token per segment. A segment with no frames therefore pools
to an exact zero vector (the op returns zeros for key-less segments and the output projection has
no bias), never NaN.
"""
from __future__ import annotations

import torch
from torch import nn

# ops.varlen_attention defines no kernel at import time (it loads kernels/ on the first Triton
# call), so importing it here keeps `import hotspot_erc.nn` free of Triton.
from hotspot_erc.ops.varlen_attention import varlen_cross_attention as _attention


class VarlenSelfAttention(nn.Module):
    """Multi-head self-attention inside each segment of packed frames ``x`` [N, dim]."""

    def __init__(self, dim: int, num_heads: int = 4, dropout: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, cu_seqlens: torch.Tensor) -> torch.Tensor:
        n, d = x.shape
        q, k, v = self.qkv(x).view(n, 3, self.num_heads, d // self.num_heads).unbind(1)
        o = _attention(q.contiguous(), k.contiguous(), v.contiguous(), cu_seqlens, cu_seqlens)
        return self.dropout(self.out(o.reshape(n, d)))


class FrameEncoderLayer(nn.Module):
    """Pre-norm transformer block: ``x + Attn(LN(x))`` then ``x + FFN(LN(x))``."""

    def __init__(self, dim: int, num_heads: int = 4, ffn_mult: int = 2, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = VarlenSelfAttention(dim, num_heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_mult * dim), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(ffn_mult * dim, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, cu_seqlens: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), cu_seqlens)
        return x + self.ffn(self.norm2(x))


class FrameEncoder(nn.Module):
    """``num_layers`` :class:`FrameEncoderLayer` blocks and a final LayerNorm."""

    def __init__(self, dim: int, num_layers: int = 1, num_heads: int = 4, ffn_mult: int = 2,
                 dropout: float = 0.0):
        super().__init__()
        self.layers = nn.ModuleList(FrameEncoderLayer(dim, num_heads, ffn_mult, dropout)
                                    for _ in range(num_layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, cu_seqlens: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, cu_seqlens)
        return self.norm(x)


class AttentionPool(nn.Module):
    """Pool each segment's frames to one vector with a learned query per head.

    ``forward(x [N, dim], cu_seqlens [S+1]) -> [S, dim]``; zero-frame segments give zeros.
    """

    def __init__(self, dim: int, num_heads: int = 4):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.query = nn.Parameter(torch.randn(num_heads, dim // num_heads) * (dim // num_heads) ** -0.5)
        self.key = nn.Linear(dim, dim, bias=False)  # a key bias cannot change a softmax over keys
        self.value = nn.Linear(dim, dim)
        # No bias: an utterance without frames must stay an exact zero vector.
        self.out = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor, cu_seqlens: torch.Tensor) -> torch.Tensor:
        n, d = x.shape
        s = cu_seqlens.shape[0] - 1
        h, dh = self.num_heads, d // self.num_heads
        q = self.query.to(x.dtype).unsqueeze(0).expand(s, h, dh).contiguous()
        cu_q = torch.arange(s + 1, device=x.device, dtype=cu_seqlens.dtype)
        k = self.key(x).view(n, h, dh)
        v = self.value(x).view(n, h, dh)
        o = _attention(q, k, v, cu_q, cu_seqlens)
        return self.out(o.reshape(s, d))
