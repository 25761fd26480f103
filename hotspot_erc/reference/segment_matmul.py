"""Reference of ``segment_matmul`` (:mod:`hotspot_erc.ops.segment_matmul`): rows of ``a`` [M, in] in
groups given by ``ptr`` ([G+1], or [G+2] with a root group first); group g's rows times
``weight[g]`` [in, out], the root group's rows times ``root`` plus ``bias``; rows outside
``[ptr[0], ptr[-1])`` are zero. Plain PyTorch, one group at a time."""
from __future__ import annotations

import torch


def segment_matmul_reference(a, ptr, weight, root=None, bias=None):
    """The definition, one group at a time (plain autograd)."""
    bounds = ptr.tolist()
    out = a.new_zeros(a.shape[0], weight.shape[2])
    weights = ([root] if root is not None else []) + list(weight.unbind(0))
    pieces = []
    for g, w in enumerate(weights):
        y = a[bounds[g]:bounds[g + 1]] @ w
        if g == 0 and root is not None and bias is not None:
            y = y + bias
        pieces.append(y)
    if pieces:
        out = torch.cat([a.new_zeros(bounds[0], weight.shape[2]), *pieces,
                         a.new_zeros(a.shape[0] - bounds[-1], weight.shape[2])])
    return out
