"""Mixture-of-Aligners routing used by the model (DESIGN §3.4): TopK-masked softmax, the
Switch-style load-balancing loss, and both for P routers at once.

:mod:`hotspot_erc.reference.routing` keeps its own copy of the first two as the spec (the tests
hold these to it); this copy is what the forward pass runs, so the spec never sits in the model's
import path.
"""
from __future__ import annotations

import torch


def topk_masked_softmax(logits: torch.Tensor, k: int):
    """Route each row of ``logits`` [..., E] to its top-``k`` experts.

    Returns ``(experts LongTensor [..., k], gates [..., k], probs [..., E])``: ``gates`` is the
    softmax over the k kept logits (the full softmax with the other logits masked to -inf,
    renormalised), ``probs`` the full softmax the load-balancing loss uses. Experts of a row come
    in decreasing logit order.
    """
    if not 1 <= k <= logits.shape[-1]:
        raise ValueError(f"top_k must be in [1, {logits.shape[-1]}] (the number of experts), got {k}")
    top, experts = logits.topk(k, dim=-1)
    gates = torch.softmax(top, dim=-1)
    probs = torch.softmax(logits, dim=-1)
    return experts, gates, probs


def load_balancing_loss(probs: torch.Tensor, experts: torch.Tensor, num_experts: int,
                        valid: torch.Tensor | None = None):
    """Switch-style ``L = E · Σ_e f_e · P_e`` over the rows [S] marked ``valid`` (all when None).

    ``f_e``: share of the (row, slot) assignments that went to expert e (no gradient, as in
    Switch); ``P_e``: mean full-softmax probability of e. Returns ``(loss, f)``; both are 0 when
    no row is valid, so a batch without any routed utterance gives no NaN.
    """
    if valid is None:
        valid = torch.ones(probs.shape[0], dtype=torch.bool, device=probs.device)
    w = valid.to(probs.dtype)
    rows = w.sum().clamp(min=1)
    onehot = torch.zeros_like(probs).scatter_add(
        1, experts, w[:, None].expand(experts.shape).contiguous())
    f = onehot.sum(0) / (rows * experts.shape[1])
    p = (probs * w[:, None]).sum(0) / rows
    return num_experts * (f.detach() * p).sum(), f.detach()


def batched_routing(logits: torch.Tensor, top_k: int, num_experts: int, valid: torch.Tensor | None = None):
    """:func:`topk_masked_softmax` and :func:`load_balancing_loss` of P routers at once, one set
    of ops.

    ``logits`` [P, S, E]; ``valid`` [P, S] (bool, or 0/1 in the logits' dtype; all rows when None).
    Returns ``(experts [P, S, k], gates [P, S, k], usage [P, E], loss [P])``: row p is what the
    per-router functions give for ``logits[p]`` and ``valid[p]``.
    """
    experts, gates, probs = topk_masked_softmax(logits, top_k)
    w = probs.new_ones(probs.shape[:-1]) if valid is None else valid.to(probs.dtype)
    rows = w.sum(-1).clamp(min=1)
    # Each row's top-k experts are distinct, so writing w (rather than adding it) into zeros is
    # the per-router scatter_add; the expanded source needs no copy.
    onehot = torch.zeros_like(probs).scatter_(-1, experts, w.unsqueeze(-1).expand(experts.shape))
    f = onehot.sum(-2) / (rows * experts.shape[-1]).unsqueeze(-1)
    p = (probs * w.unsqueeze(-1)).sum(-2) / rows.unsqueeze(-1)
    return experts, gates, f, num_experts * (f * p).sum(-1)
