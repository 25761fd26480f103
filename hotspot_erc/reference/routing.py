"""Plain-PyTorch Mixture-of-Aligners routing (DESIGN §3.4): TopK-masked softmax and the
Switch-style load-balancing loss. Tiny tensors ([S, E]). This is the spec: the model runs its own
copy (:mod:`hotspot_erc.nn.routing`), which the tests hold to these functions.
"""
from __future__ import annotations

import torch


def topk_masked_softmax(logits: torch.Tensor, k: int):
    """Route each row of ``logits`` [S, E] to its top-``k`` experts.

    Returns ``(experts LongTensor [S, k], gates [S, k], probs [S, E])``: ``gates`` is the softmax
    over the k kept logits (equal to the full softmax with the other logits masked to -inf,
    renormalised), ``probs`` the full softmax used by the load-balancing loss. Experts of a row
    come in decreasing logit order.
    """
    if not 1 <= k <= logits.shape[-1]:
        raise ValueError(f"top_k must be in [1, {logits.shape[-1]}] (the number of experts), got {k}")
    top, experts = logits.topk(k, dim=-1)
    gates = torch.softmax(top, dim=-1)
    probs = torch.softmax(logits, dim=-1)
    return experts, gates, probs


def load_balancing_loss(probs: torch.Tensor, experts: torch.Tensor, num_experts: int,
                        valid: torch.Tensor | None = None):
    """Switch-style ``L = E · Σ_e f_e · P_e`` over the rows marked ``valid`` (all when None).

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
