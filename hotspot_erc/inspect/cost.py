"""``#cost``: what MoA costs against plain cross-attention, per training step.

Measured here on one batch of the split: the run's MoA block (its experts, top-k and width) and a
:class:`~hotspot_erc.nn.moa.PlainCrossModalAttention` of the same width and heads (one key/value
projection per pair, no router), forward and backward on the batch's projected frames, every frame
a query, median of a few repeats after a warm-up. Timings depend on the machine and what else runs
on it; the device and thread count are stated. Where the checkout holds the MoA benchmark's JSON
(``benchmarks/results/moa-*.json``), its overheads are shown beside, with its own device and date.
"""
from __future__ import annotations

import glob
import json
import os
import statistics
import time

import torch

from hotspot_erc.nn.moa import MixtureOfAligners, PlainCrossModalAttention

REPEATS = 5


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _step_ms(module, feats: dict, cu: dict, device: torch.device) -> float:
    times = []
    for i in range(REPEATS + 1):
        x = {m: v.detach().requires_grad_() for m, v in feats.items()}
        _sync(device)
        t0 = time.perf_counter()
        out = module(x, cu)
        loss = sum(o.float().square().mean() for o in out.outputs.values()) + out.lb_loss.float()
        loss.backward()
        _sync(device)
        if i:  # the first call warms caches and allocators
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


# DESIGN's routed setting, measured beside a run that has one expert per pair.
ROUTED = (4, 2)


def measure(model, batch, device) -> dict:
    """MoA and plain cross-attention time per forward + backward on ``batch``; with one expert per
    pair in the run, also a fresh routed block (:data:`ROUTED` experts and top-k)."""
    mods = tuple(model.modalities)
    if len(mods) < 2:
        return {"note": "one modality: there is no pair to align, so MoA has no cost to measure."}
    cfg = model.config
    batch = batch.to(device)
    with torch.no_grad():
        feats = {m: model.proj[m](batch.features[m]) for m in mods}
    cu = {m: batch.cu_seqlens[m] for m in mods}
    moa = getattr(model, "moa", None)
    source = "the run's trained MoA block"
    if moa is None:
        moa = MixtureOfAligners(cfg.d_model, modalities=mods, num_experts=cfg.num_experts, top_k=cfg.top_k,
                                num_heads=cfg.num_heads, shared_expert=cfg.shared_expert).to(device)
        source = "a fresh MoA block of the run's settings (the run has MoA off)"
    plain = PlainCrossModalAttention(cfg.d_model, modalities=mods, num_heads=cfg.num_heads).to(device)
    was = moa.training
    moa.train()
    try:
        moa_ms = _step_ms(moa, feats, cu, device)
    finally:
        moa.train(was)
        moa.zero_grad(set_to_none=True)
    plain_ms = _step_ms(plain.train(), feats, cu, device)
    routed = None
    if cfg.num_experts == 1:
        block = MixtureOfAligners(cfg.d_model, modalities=mods, num_experts=ROUTED[0], top_k=ROUTED[1],
                                  num_heads=cfg.num_heads).to(device).train()
        ms = _step_ms(block, feats, cu, device)
        routed = {"num_experts": ROUTED[0], "top_k": ROUTED[1], "ms": ms,
                  "overhead": ms / plain_ms if plain_ms > 0 else None}
    return {"moa_ms": moa_ms, "plain_ms": plain_ms, "overhead": moa_ms / plain_ms if plain_ms > 0 else None,
            "routed": routed,
            "moa_source": source, "num_experts": cfg.num_experts, "top_k": cfg.top_k, "d_model": cfg.d_model,
            "num_heads": cfg.num_heads, "dialogues": batch.num_dialogues, "utterances": batch.num_utterances,
            "frames": {m: int(batch.features[m].shape[0]) for m in mods}, "repeats": REPEATS,
            "device": str(device), "threads": torch.get_num_threads()}


def benchmark_rows(folder: str = os.path.join("benchmarks", "results")) -> dict | None:
    """The newest MoA benchmark JSON in ``folder`` (a checkout's), as rows with ``moa_overhead``."""
    files = sorted(glob.glob(os.path.join(folder, "moa-*.json")))
    if not files:
        return None
    try:
        with open(files[-1]) as fh:
            data = json.load(fh)
        rows = [{k: r.get(k) for k in ("name", "ms", "moa_overhead", "utterances", "frames", "d", "E", "k", "dtype")}
                for r in data.get("results", []) if r.get("moa_overhead") is not None]
        env = data.get("environment", {})
    except (OSError, ValueError, AttributeError):
        return None
    return {"file": files[-1], "device": env.get("device"), "date": env.get("date"), "rows": rows}


def cost_section(model, batch, device, history: list[dict], bench_folder: str | None = None) -> dict:
    res = {"measured": measure(model, batch, device),
           "benchmark": benchmark_rows(bench_folder) if bench_folder else benchmark_rows()}
    secs = [h["seconds"] for h in history or () if h.get("seconds") is not None]
    res["run_epoch_seconds"] = statistics.median(secs) if secs else None
    return res
