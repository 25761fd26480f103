"""Running a model over a dataset in stored order: labels, probabilities, loss, routing usage."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from hotspot_erc.train.batching import eval_loader
from hotspot_erc.train.device import autocast
from hotspot_erc.train.reports import Diagnostics


@torch.no_grad()
def predict(model, dataset, device, batch_size: int = 16, amp: bool = False, diagnostics: Diagnostics | None = None,
            progress: bool = False, desc: str = "eval", num_workers: int = 0, loader=None) -> dict:
    """Run ``model`` over ``dataset`` in stored order (through ``loader`` when given, e.g. one kept
    with its workers across epochs). Returns numpy arrays ``labels``, ``preds``, ``probs`` [U, C],
    the ``utterance_ids``, the mean dev cross-entropy ``loss`` and the routing usage per pair."""
    device = torch.device(device)
    if loader is None:
        loader = eval_loader(dataset, batch_size, device, num_workers)

    was_training = model.training
    model.eval()
    labels, probs, ids = [], [], []
    usage: dict[str, torch.Tensor] = {}
    ce_sum = torch.zeros((), dtype=torch.float64, device=device)
    # disable=None: tqdm stays quiet when stderr is not a terminal (logs, CI, `make train | tee`).
    for batch in tqdm(loader, desc=desc, disable=None if progress else True, leave=False):
        batch = batch.to(device, non_blocking=True)
        with autocast(device, amp):
            out = model(batch)
        logits = out.logits.float()
        valid = batch.labels >= 0
        ce_sum += F.cross_entropy(logits, batch.labels.clamp(min=0), reduction="none")[valid].double().sum()
        probs.append(torch.softmax(logits, -1).cpu())
        labels.append(batch.labels.cpu())
        ids.extend(batch.utterance_ids)
        for pair, info in out.routing.items():
            u = info.usage.detach().double().cpu()
            usage[pair] = usage[pair] + u if pair in usage else u
        if diagnostics is not None:
            diagnostics.update(out, batch)
    model.train(was_training)
    labels_t = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long)
    probs_t = torch.cat(probs) if probs else torch.zeros(0, 0)
    n_valid = int((labels_t >= 0).sum())
    return {"labels": labels_t.numpy(), "probs": probs_t.numpy(), "preds": probs_t.argmax(-1).numpy(),
            "utterance_ids": ids, "loss": float(ce_sum) / max(n_valid, 1), "usage": usage}
