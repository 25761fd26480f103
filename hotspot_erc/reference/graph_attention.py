"""Plain-PyTorch reference of attention over incoming edges (DESIGN §3.8): the executable spec.

Written for clarity, not speed: it gathers one key and one value row per edge ([E, H, D] each),
exactly what the kernels avoid. Tests compare every backend and :class:`hotspot_erc.nn.TransformerConv`
with it in float64; the benchmarks import it as a baseline.
"""
from __future__ import annotations

import math

import torch


def graph_attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, edge_index: torch.Tensor,
                              edge: torch.Tensor | None = None, edge_mask: torch.Tensor | None = None,
                              scale: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention of every destination node over its incoming edges.

    Args:
        q: [N_dst, H, D] queries of the destination nodes.
        k, v: [N_src, H, D] keys and values of the source nodes.
        edge_index: [2, E], row 0 = source j, row 1 = destination i (PyG's convention).
        edge: optional [E, H, D] edge embedding, added to the key and to the value of its edge.
        edge_mask: optional [E, H] multiplier of each probability in the message only (dropout's
            scaled keep-mask); the returned weights are taken before it.
        scale: score scale, default ``D ** -0.5``.

    Returns:
        ``out`` [N_dst, H, D] with ``out_i = sum_j alpha_ij * m_ij * (v_j + e_ij)``, zero for a node
        without incoming edges, and ``alpha`` [E, H], the softmax over each destination's incoming
        edges of ``q_i . (k_j + e_ij) * scale``, in edge_index order.
    """
    src, dst = edge_index[0].long(), edge_index[1].long()
    n_dst, heads = q.shape[0], q.shape[1]
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[2]) if q.shape[2] else 1.0
    key = k.index_select(0, src)
    val = v.index_select(0, src)
    if edge is not None:
        key, val = key + edge, val + edge
    score = (q.index_select(0, dst) * key).sum(-1) * scale  # [E, H]
    peak = score.new_full((n_dst, heads), float("-inf"))
    peak = peak.scatter_reduce(0, dst[:, None].expand_as(score), score, "amax", include_self=False)
    weight = torch.exp(score - peak.index_select(0, dst))
    total = score.new_zeros((n_dst, heads)).index_add(0, dst, weight)
    alpha = weight / total.index_select(0, dst)
    used = alpha if edge_mask is None else alpha * edge_mask.to(alpha.dtype)
    out = q.new_zeros((n_dst,) + tuple(v.shape[1:])).index_add(0, dst, used[..., None] * val)
    return out, alpha
