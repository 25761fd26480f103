"""CPU backend of ``hotspot_gate``: an ATen composition (two ``addmm`` into one buffer, in-place
sigmoid, one ``lerp``) that never builds ``[c; h]``. Device-generic: it also serves float64 CUDA
tensors, which the Triton kernels do not take. The forward hands α out because this backward
reuses it (see :mod:`hotspot_erc.ops.hotspot_gate` for why the CPU path keeps it)."""
from __future__ import annotations

import torch


def gate(c, h, weight, bias):
    """α [N, g] in a fresh buffer: the two halves of the GEMM accumulate into one output."""
    d = c.shape[1]
    if weight.shape[1] == 1:
        z = torch.addmv(bias.expand(c.shape[0]), c, weight[:d, 0])
        z.addmv_(h, weight[d:, 0])
        return z.sigmoid_().unsqueeze(1)
    z = torch.addmm(bias, c, weight[:d])
    z.addmm_(h, weight[d:])
    return z.sigmoid_()


def forward(c, h, weight, bias, write_alpha):
    alpha = gate(c, h, weight, bias)
    out = torch.lerp(c, h, alpha)  # c + α(h − c) in one elementwise pass
    return out, (alpha if write_alpha else None)


def backward(grad_out, grad_alpha, c, h, weight, bias, alpha=None):
    d = c.shape[1]
    scalar = weight.shape[1] == 1
    if alpha is None:
        alpha = gate(c, h, weight, bias)
    dz = torch.sub(h, c).mul_(grad_out)  # dα per element
    if scalar:
        dz = dz.sum(1, keepdim=True)
    if grad_alpha is not None:
        dz.add_(grad_alpha)
    dz = torch.ops.aten.sigmoid_backward(dz, alpha)  # dα ⊙ α(1 − α), one pass
    dc = torch.addcmul(grad_out, grad_out, alpha, value=-1)  # dout ⊙ (1 − α), one pass
    dh = grad_out * alpha
    if scalar:
        dc.addr_(dz[:, 0], weight[:d, 0])
        dh.addr_(dz[:, 0], weight[d:, 0])
    else:
        dc.addmm_(dz, weight[:d].t())
        dh.addmm_(dz, weight[d:].t())
    dw = torch.empty_like(weight)
    torch.mm(c.t(), dz, out=dw[:d])
    torch.mm(h.t(), dz, out=dw[d:])
    db = dz.sum(0, dtype=torch.float32).to(bias.dtype) if dz.dtype != torch.float64 else dz.sum(0)
    return dc, dh, dw, db
