"""Plain-PyTorch reference of relational message passing (DESIGN §3.5-3.6): the executable spec.

Written for clarity, not speed: per-edge gathers and ``index_add``. Tests compare the C++/CUDA
kernels and :class:`hotspot_erc.nn.RGCNConv` against these functions in float64, and the
benchmarks import them as baselines.
"""
from __future__ import annotations

import torch

REDUCTIONS = ("mean", "sum")


def _bucket_weights(dst: torch.Tensor, edge_type: torch.Tensor, num_nodes: int, num_relations: int,
                    reduce: str, dtype: torch.dtype) -> torch.Tensor:
    """Per-edge factor: 1 for a sum, 1/|{edges of type r into i}| for a mean."""
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")
    key = dst * num_relations + edge_type
    if reduce == "sum":
        return torch.ones(key.shape, dtype=dtype, device=key.device)
    count = torch.bincount(key, minlength=num_nodes * num_relations)
    return 1.0 / count[key].to(dtype)


def relational_aggregate(x: torch.Tensor, edge_index: torch.Tensor, edge_type: torch.Tensor,
                         num_nodes: int, num_relations: int, reduce: str = "mean") -> torch.Tensor:
    """``Z[i, r] = reduce_{(j -> i) of type r} x[j]``; zero where i has no type-r in-edge. [N, R, d]."""
    src, dst = edge_index[0].long(), edge_index[1].long()
    edge_type = edge_type.long()
    w = _bucket_weights(dst, edge_type, num_nodes, num_relations, reduce, x.dtype)
    out = x.new_zeros(num_nodes * num_relations, x.shape[1])
    # index_select, not x[src]: indexing's backward adds repeated rows in a thread-dependent order
    out = out.index_add(0, dst * num_relations + edge_type, x.index_select(0, src) * w[:, None])
    return out.view(num_nodes, num_relations, x.shape[1])


def relational_message_sum(h: torch.Tensor, edge_index: torch.Tensor, edge_type: torch.Tensor,
                           num_nodes: int, reduce: str = "mean") -> torch.Tensor:
    """``out[i] = sum_r reduce_{(j -> i) of type r} h[j, r]`` for per-relation messages h [N, R, d]."""
    num_relations = h.shape[1]
    src, dst = edge_index[0].long(), edge_index[1].long()
    edge_type = edge_type.long()
    w = _bucket_weights(dst, edge_type, num_nodes, num_relations, reduce, h.dtype)
    msg = h.reshape(-1, h.shape[2]).index_select(0, src * num_relations + edge_type)
    return h.new_zeros(num_nodes, h.shape[2]).index_add(0, dst, msg * w[:, None])


def rgcn_weight(weight: torch.Tensor, comp: torch.Tensor | None, num_relations: int) -> torch.Tensor:
    """Dense per-relation weights [R, in, out] from PyG's parameters (plain, basis or blocks)."""
    if comp is not None:  # basis: W_r = sum_b comp[r, b] V_b
        return torch.einsum("rb,bio->rio", comp, weight)
    if weight.dim() == 4:  # blocks [R, nb, in/nb, out/nb] -> block-diagonal [R, in, out]
        return torch.stack([torch.block_diag(*weight[r]) for r in range(num_relations)])
    return weight


def rgcn_conv(x: torch.Tensor, edge_index: torch.Tensor, edge_type: torch.Tensor, weight: torch.Tensor,
              comp: torch.Tensor | None = None, root: torch.Tensor | None = None,
              bias: torch.Tensor | None = None, aggr: str = "mean") -> torch.Tensor:
    """``out_i = x_i W_root + b + sum_r reduce_{j in N_r(i)} x_j W_r``, one relation at a time."""
    num_relations = comp.shape[0] if comp is not None else weight.shape[0]
    w = rgcn_weight(weight, comp, num_relations)
    z = relational_aggregate(x, edge_index, edge_type, x.shape[0], num_relations, aggr)
    out = x.new_zeros(x.shape[0], w.shape[2])
    for r in range(num_relations):
        out = out + z[:, r] @ w[r]
    if root is not None:
        out = out + x @ root
    if bias is not None:
        out = out + bias
    return out
