"""Run-folder reports: metrics JSON, confusion matrix and diagnostic plots.

The plots are the failure signatures a user must be able to check at a glance:

* ``learning_curves.png``: train loss and dev accuracy / weighted F1 per epoch;
* ``gates.png``: HGF gate distribution per modality, and the gate against the frame intensity
  score (with Pearson r): a collapsed gate is a spike at 0 or 1, an uninformative one shows r≈0;
* ``experts.png``: MoA expert usage per modality pair and per emotion: collapsed routing is one
  bar taking everything;
* ``load_balance.png``: the load-balancing loss and the dev routing entropy per epoch;
* ``branches.png``: whether each branch earns its place: the gradient norm reaching each branch
  per epoch, the dev linear-probe accuracy of each representation the classifier could use
  (encoder-pooled, MoA-pooled, graph, its whole input; ``train/probes.py``) and where MoA
  attention looks (mass that target hotspot frames put on source hotspot frames vs uniform);
* ``confusion_matrix.png`` / ``.csv``.

``metrics.json`` also carries the same diagnostics as numbers (``diagnostics.probes``,
``diagnostics.moa_attention``, ``diagnostics.moa_residual_ratio``, ``diagnostics.hgf_join_ratio``
with ``hgf_join``; ``history.json`` the per-epoch
``grad_norm`` per branch) plus ``warnings`` naming any collapse that was detected.
"""
from __future__ import annotations

import csv
import json
import math
import os

import numpy as np
import torch

# Per-target ratios a ModelOutput carries (its field -> the summary key of their mean over batches).
RATIO_OUTPUTS = {"moa_residual": "moa_residual_ratio", "hgf_join_ratio": "hgf_join_ratio"}

# Below these, a gate or a router is reported as collapsed, and the graph as inert.
GATE_STD_MIN = 0.02
ROUTING_ENTROPY_MIN = 0.3
GRAPH_UPDATE_MIN = 0.02


class Diagnostics:
    """Accumulates gates, intensity scores and routing over an evaluation pass.

    Gates: per-channel moments over all frames (a vector gate collapses per channel, which a mean
    over channels would hide), a sample of raw α values for the histogram, and the per-frame mean
    α next to the frame's intensity score for the correlation.
    """

    def __init__(self, modalities, num_classes: int, max_points: int = 200_000):
        self.modalities = tuple(modalities)
        self.num_classes = num_classes
        self.max_points = max_points
        self.gate = {m: [] for m in self.modalities}          # per-frame mean α (capped)
        self.gate_values = {m: [] for m in self.modalities}   # raw α values (capped)
        self.intensity = {m: [] for m in self.modalities}
        self.moments: dict[str, list] = {}                    # m -> [frames, Σα [g], Σα² [g]]
        self.usage: dict[str, torch.Tensor] = {}
        self.by_emotion: dict[str, torch.Tensor] = {}
        self.graph_updates: list[float] = []
        self.attention: dict[str, torch.Tensor] = {}          # pair -> float64 [3] sums
        self.ratios: dict[str, dict[str, list]] = {}          # summary key -> target -> per-batch ratios

    @torch.no_grad()
    def update(self, out, batch) -> None:
        for m, alpha in out.gates.items():
            a = alpha.detach().double().cpu()
            mom = self.moments.setdefault(m, [0, torch.zeros(a.shape[1], dtype=torch.float64),
                                              torch.zeros(a.shape[1], dtype=torch.float64)])
            mom[0] += a.shape[0]
            mom[1] += a.sum(0)
            mom[2] += a.square().sum(0)
            if sum(t.numel() for t in self.gate_values[m]) < self.max_points:
                self.gate_values[m].append(a.reshape(-1)[: self.max_points].float())
            if sum(t.numel() for t in self.gate[m]) >= self.max_points:
                continue
            self.gate[m].append(a.mean(-1).float())
            # The corpus' own intensity when it has one, else the scores the model used.
            inten = getattr(batch, "intensity", None)
            src = inten[m] if inten and m in inten else out.scores.get(m)
            if src is None or src.shape[0] != alpha.shape[0]:
                src = torch.full((alpha.shape[0],), float("nan"))
            self.intensity[m].append(src.detach().float().cpu())
        if getattr(out, "graph_update", None) is not None:
            self.graph_updates.append(float(out.graph_update))
        for pair, mass in getattr(out, "attention_mass", {}).items():
            self.attention[pair] = self.attention.get(pair, 0) + mass.detach().double().cpu()
        for name, key in RATIO_OUTPUTS.items():
            for m, ratio in getattr(out, name, {}).items():
                self.ratios.setdefault(key, {}).setdefault(m, []).append(float(ratio))
        labels = batch.labels.cpu()
        for pair, info in out.routing.items():
            experts, gates = info.experts.cpu(), info.gates.float().cpu()
            e = int(info.usage.shape[-1])
            if pair not in self.usage:
                self.usage[pair] = torch.zeros(e, dtype=torch.float64)
                self.by_emotion[pair] = torch.zeros(self.num_classes, e, dtype=torch.float64)
            flat_e, flat_g = experts.reshape(-1), gates.reshape(-1).double()
            self.usage[pair].index_add_(0, flat_e, flat_g)
            lab = labels.unsqueeze(1).expand_as(experts).reshape(-1)
            keep = lab >= 0
            self.by_emotion[pair].index_put_((lab[keep], flat_e[keep]), flat_g[keep], accumulate=True)

    def summary(self) -> dict:
        """JSON-ready numbers: gate statistics per modality, routing shares and entropies."""
        res = {"gates": {}, "routing": {}}
        if self.graph_updates:
            res["graph_update_ratio"] = float(np.mean(self.graph_updates))
        for m in self.modalities:
            if m not in self.moments or self.moments[m][0] == 0:
                continue
            n, s1, s2 = self.moments[m]
            mean_c = s1 / n
            std_c = (s2 / n - mean_c.square()).clamp(min=0).sqrt()
            vals = torch.cat(self.gate_values[m]).double()
            g, it = torch.cat(self.gate[m]).double(), torch.cat(self.intensity[m]).double()
            res["gates"][m] = {
                "mean": float(mean_c.mean()),
                # How much α varies across frames, per channel, averaged over channels: ~0 = collapsed.
                "std": float(std_c.mean()),
                "frac_below_0.05": float((vals < 0.05).double().mean()),
                "frac_above_0.95": float((vals > 0.95).double().mean()),
                "corr_intensity": _pearson(g, it),
                "frames": int(n),
                "channels": int(s1.numel()),
            }
        for key, per_target in self.ratios.items():
            res[key] = {m: float(np.mean(v)) for m, v in per_target.items()}
        if self.attention:
            res["moa_attention"] = {}
            for pair, (mass, uniform, frames) in self.attention.items():
                if frames > 0:
                    res["moa_attention"][pair] = {
                        "hotspot_mass": float(mass / frames), "uniform_mass": float(uniform / frames),
                        "lift": float(mass / uniform) if uniform > 0 else None, "frames": int(frames)}
        for pair, u in self.usage.items():
            share = (u / u.sum()).tolist() if u.sum() > 0 else [0.0] * len(u)
            res["routing"][pair] = {
                "usage_share": share,
                "entropy": routing_entropy(u),
                "by_emotion": self.by_emotion[pair].tolist(),
            }
        return res


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float | None:
    keep = torch.isfinite(a) & torch.isfinite(b)
    a, b = a[keep], b[keep]
    if a.numel() < 2 or a.std() == 0 or b.std() == 0:
        return None
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()))


def routing_entropy(usage) -> float:
    """Entropy of the expert-usage shares, normalised to [0, 1] (1 = perfectly balanced)."""
    u = torch.as_tensor(usage, dtype=torch.float64)
    if u.numel() < 2 or u.sum() <= 0:
        return 0.0
    p = u / u.sum()
    h = -(p[p > 0] * p[p > 0].log()).sum()
    return float(h / math.log(u.numel()))


def collapse_warnings(diag: dict) -> list[str]:
    """Human-readable warnings for collapsed gates and routers."""
    out = []
    for m, g in diag.get("gates", {}).items():
        if g["frames"] > 1 and g["std"] < GATE_STD_MIN:
            out.append(f"HGF gate of modality {m!r} hardly varies (mean {g['mean']:.3f}, std {g['std']:.4f}): "
                       "it has collapsed and does not single out hotspot frames")
    for pair, r in diag.get("routing", {}).items():
        # One expert (nothing to route) has zero entropy by construction, not by collapse.
        if len(r.get("usage_share", ())) > 1 and r["entropy"] < ROUTING_ENTROPY_MIN:
            out.append(f"MoA routing of pair {pair} has collapsed (normalised entropy {r['entropy']:.2f}; "
                       f"usage {[round(s, 2) for s in r['usage_share']]})")
    g = diag.get("graph_update_ratio")
    if g is not None and g < GRAPH_UPDATE_MIN:
        out.append(f"the graph layers barely change the utterance vectors (relative update {g:.3f}): "
                   "the graph adds nothing; compare with an ablation without it (--no-graph)")
    return out


# ----------------------------------------------------------------------------- files

def write_json(path: str, obj) -> str:
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(obj, fh, indent=1, default=_json_default)
    os.replace(tmp, path)
    return path


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (np.ndarray, torch.Tensor)):
        return o.tolist()
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


def write_confusion_csv(path: str, cm, label_names) -> str:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["true\\pred", *label_names])
        for name, row in zip(label_names, cm):
            w.writerow([name, *[int(v) for v in row]])
    return path


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_learning_curves(history: list[dict], path: str) -> str:
    plt = _plt()
    ep = [h["epoch"] for h in history]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    a1.plot(ep, [h["train_loss"] for h in history], "o-", label="train loss (total)")
    a1.plot(ep, [h["train_ce"] for h in history], "s--", label="train cross-entropy")
    if any("dev_loss" in h for h in history):
        a1.plot(ep, [h.get("dev_loss", float("nan")) for h in history], "^-", label="dev cross-entropy")
    a1.set_xlabel("epoch"), a1.set_ylabel("loss"), a1.legend(), a1.set_title("losses")
    a2.plot(ep, [h["dev_accuracy"] for h in history], "o-", label="dev accuracy")
    a2.plot(ep, [h["dev_weighted_f1"] for h in history], "s-", label="dev weighted F1")
    a2.set_xlabel("epoch"), a2.set_ylim(0, 1), a2.legend(), a2.set_title("dev metrics")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_confusion(cm, label_names, path: str) -> str:
    plt = _plt()
    cm = np.asarray(cm)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    k = len(label_names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * k, 0.8 + 0.7 * k))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(int(cm[i, j])), ha="center", va="center",
                    color="white" if norm[i, j] > 0.5 else "black", fontsize=8)
    ax.set_xticks(range(k), label_names, rotation=45, ha="right"), ax.set_yticks(range(k), label_names)
    ax.set_xlabel("predicted"), ax.set_ylabel("true"), ax.set_title("confusion matrix (test)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_gates(diag: Diagnostics, path: str) -> str | None:
    mods = [m for m in diag.modalities if diag.gate[m]]
    if not mods:
        return None
    plt = _plt()
    fig, axes = plt.subplots(2, len(mods), figsize=(3.6 * len(mods), 6.2), squeeze=False)
    for i, m in enumerate(mods):
        g = torch.cat(diag.gate[m]).numpy()
        it = torch.cat(diag.intensity[m]).numpy()
        vals = torch.cat(diag.gate_values[m]).numpy()
        axes[0, i].hist(vals, bins=50, range=(0, 1), color="tab:blue")
        axes[0, i].set_title(f"HGF gate, modality {m} (mean {vals.mean():.2f})")
        axes[0, i].set_xlabel("α (every channel of every frame)")
        r = _pearson(torch.from_numpy(g).double(), torch.from_numpy(it).double())
        sel = np.random.default_rng(0).permutation(len(g))[:5000]
        axes[1, i].scatter(it[sel], g[sel], s=2, alpha=0.3)
        axes[1, i].set_xlabel("frame intensity score"), axes[1, i].set_ylabel("α (mean over channels)")
        axes[1, i].set_title(f"gate vs intensity (r = {r:.2f})" if r is not None else "gate vs intensity")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_experts(diag: Diagnostics, label_names, path: str) -> str | None:
    pairs = sorted(diag.usage)
    if not pairs:
        return None
    plt = _plt()
    fig, axes = plt.subplots(2, len(pairs), figsize=(3.2 * len(pairs), 6.0), squeeze=False)
    for i, pair in enumerate(pairs):
        u = diag.usage[pair].numpy()
        share = u / max(u.sum(), 1e-12)
        axes[0, i].bar(range(len(u)), share, color="tab:orange")
        axes[0, i].set_ylim(0, 1), axes[0, i].set_xlabel("expert")
        axes[0, i].set_title(f"{pair} usage (H = {routing_entropy(u):.2f})")
        be = diag.by_emotion[pair].numpy()
        be = be / np.maximum(be.sum(1, keepdims=True), 1e-12)
        axes[1, i].imshow(be, cmap="viridis", vmin=0, vmax=1, aspect="auto")
        axes[1, i].set_yticks(range(len(label_names)), label_names), axes[1, i].set_xlabel("expert")
        axes[1, i].set_title(f"{pair} usage per emotion")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_load_balance(history: list[dict], path: str) -> str | None:
    if not history or all(h.get("train_lb", 0.0) == 0.0 and not h.get("dev_routing_entropy") for h in history):
        return None
    plt = _plt()
    ep = [h["epoch"] for h in history]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    a1.plot(ep, [h.get("train_lb", float("nan")) for h in history], "o-")
    a1.set_xlabel("epoch"), a1.set_ylabel("L_lb (sum over pairs)"), a1.set_title("load-balancing loss (train)")
    pairs = sorted({p for h in history for p in h.get("dev_routing_entropy", {})})
    for p in pairs:
        a2.plot(ep, [h.get("dev_routing_entropy", {}).get(p, float("nan")) for h in history], "o-", label=p)
    a2.axhline(ROUTING_ENTROPY_MIN, color="red", ls=":", label="collapse threshold")
    a2.set_ylim(0, 1.05), a2.set_xlabel("epoch"), a2.set_ylabel("normalised entropy")
    a2.set_title("dev routing entropy per pair"), a2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_branches(history: list[dict], diag_summary: dict, path: str) -> str | None:
    """Does each branch earn its place? Gradient norm reaching each branch per epoch, dev
    linear-probe accuracy of each representation, and where MoA attention looks (mass that target
    hotspot frames put on source hotspot frames vs uniform attention)."""
    grads = [h.get("grad_norm") for h in history if h.get("grad_norm")]
    probes = diag_summary.get("probes") or {}
    attention = diag_summary.get("moa_attention") or {}
    panels = [p for p, present in (("grad", grads), ("probe", probes), ("attn", attention)) if present]
    if not panels:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.6), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        if panel == "grad":
            for name in grads[-1]:
                ax.plot(range(1, len(grads) + 1), [g.get(name, float("nan")) for g in grads], label=name)
            ax.set_yscale("log"), ax.set_xlabel("epoch"), ax.set_ylabel("RMS gradient norm")
            ax.set_title("gradient reaching each branch"), ax.legend(fontsize=7)
        elif panel == "probe":
            names = list(probes)
            ax.bar(range(len(names)), [probes[n]["dev_accuracy"] for n in names], color="tab:blue")
            ax.set_xticks(range(len(names)), names, rotation=20, fontsize=8)
            ax.set_ylim(0, 1), ax.set_ylabel("dev accuracy"), ax.set_title("linear probe per representation")
        else:
            pairs = list(attention)
            x = np.arange(len(pairs))
            ax.bar(x - 0.2, [attention[p]["hotspot_mass"] for p in pairs], 0.4, label="attention")
            ax.bar(x + 0.2, [attention[p]["uniform_mass"] for p in pairs], 0.4, label="uniform")
            ax.set_xticks(x, pairs, fontsize=8), ax.set_ylim(0, 1), ax.legend(fontsize=7)
            ax.set_ylabel("mass on source hotspots"), ax.set_title("MoA: target hotspots look at")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(run_dir: str, metrics: dict, history: list[dict], diag: Diagnostics | None,
                 label_names, plots: bool = True) -> dict[str, str]:
    """Write everything into ``run_dir`` (PNG plots unless ``plots=False``); returns {artifact: path}."""
    os.makedirs(run_dir, exist_ok=True)
    files = {"metrics": write_json(os.path.join(run_dir, "metrics.json"), metrics),
             "history": write_json(os.path.join(run_dir, "history.json"), history)}
    test = metrics.get("test")
    if test is not None:
        files["confusion_csv"] = write_confusion_csv(os.path.join(run_dir, "confusion_matrix.csv"),
                                                     test["confusion_matrix"], label_names)
        if plots:
            files["confusion_png"] = plot_confusion(test["confusion_matrix"], label_names,
                                                    os.path.join(run_dir, "confusion_matrix.png"))
    if not plots:
        return files
    if history:
        files["learning_curves"] = plot_learning_curves(history, os.path.join(run_dir, "learning_curves.png"))
        lb = plot_load_balance(history, os.path.join(run_dir, "load_balance.png"))
        if lb:
            files["load_balance"] = lb
    branches = plot_branches(history, metrics.get("diagnostics") or {}, os.path.join(run_dir, "branches.png"))
    if branches:
        files["branches"] = branches
    if diag is not None:
        for key, fn in (("gates", lambda p: plot_gates(diag, p)),
                        ("experts", lambda p: plot_experts(diag, label_names, p))):
            p = fn(os.path.join(run_dir, f"{key}.png"))
            if p:
                files[key] = p
    return files
