"""Parameters grouped by model branch, for the per-branch gradient norms of ``history.json``."""
from __future__ import annotations

import torch


# Which branch a top-level submodule of HotspotERC belongs to, for the per-branch gradient norms.
BRANCH_OF = {"proj": "hotspot_fusion", "center_beta": "hotspot_fusion", "scorer": "hotspot_fusion",
             "hotspot_marker": "hotspot_fusion", "hgf": "hotspot_fusion", "hgf_join_scale": "hotspot_fusion",
             "encoder": "encoder", "pool": "encoder",
             "moa": "moa", "moa_pool": "moa",
             "speaker": "graph", "gnn": "graph", "gnn_norm": "graph", "classifier": "classifier"}


def branch_parameters(model) -> dict[str, list]:
    """{branch: parameters}, branches named by :data:`BRANCH_OF` (other modules by their own name)."""
    groups: dict[str, list] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            top = name.split(".", 1)[0]
            groups.setdefault(BRANCH_OF.get(top, top), []).append(p)
    return groups


def branch_grad_sq(groups: dict[str, list]) -> torch.Tensor:
    """Squared gradient norm of each branch, float64 [G] on the parameters' device (no sync)."""
    rows = []
    for params in groups.values():
        sq = [p.grad.detach().double().square().sum() for p in params if p.grad is not None]
        rows.append(torch.stack(sq).sum() if sq else torch.zeros((), dtype=torch.float64, device=params[0].device))
    return torch.stack(rows)
