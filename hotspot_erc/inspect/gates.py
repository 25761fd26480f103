"""``#gates``: does HGF's gate concentrate on emotionally intense frames?

Per modality: the distribution of the gate α (every channel of every frame, and the per-frame mean
over channels), its correlation with the frame intensity (the corpus' own, else the score the
model extracted windows from), and the mean gate inside against outside the hotspots: the
generator's planted bursts where the corpus has a truth file, else the model's own windows. The
windows are also scored against the bursts (precision, recall). Intervals resample utterances.
"""
from __future__ import annotations

import numpy as np

from hotspot_erc.data.synthetic_common import ROLE_EVIDENCE
from hotspot_erc.inspect import stats

# α moves a fused row by Δα·(H − C): a gate that differs by less than this between hotspot and
# other frames treats them alike, which is the failure the paper names ("the same everywhere").
GATE_DIFF_MIN = 0.05
VERDICTS = ("concentrated", "flat", "inverted")


def verdict(diff: dict) -> str | None:
    """concentrated / flat / inverted from a :func:`~hotspot_erc.inspect.stats.mean_difference_ci`
    result: concentrated when the gate is at least :data:`GATE_DIFF_MIN` higher inside the hotspots
    and the interval excludes 0, inverted when as much lower, flat otherwise; None without frames
    on both sides."""
    d, ci = diff.get("difference"), diff.get("ci")
    if d is None:
        return None
    if ci is not None and ci[0] > 0 and d >= GATE_DIFF_MIN:
        return "concentrated"
    if ci is not None and ci[1] < 0 and d <= -GATE_DIFF_MIN:
        return "inverted"
    return "flat"


def _quantiles(x: np.ndarray) -> dict:
    if x.size == 0:
        return {"p05": None, "p50": None, "p95": None}
    q = np.quantile(x.astype(np.float64), [0.05, 0.5, 0.95])
    return {"p05": float(q[0]), "p50": float(q[1]), "p95": float(q[2])}


def modality_gates(f, roles: np.ndarray | None, seed: int = 0) -> dict:
    """The numbers of one modality; ``f`` a :class:`~hotspot_erc.inspect.collect.FrameRecord`,
    ``roles`` the generator's burst role of each of its frames (None without a truth file)."""
    gate = f.gate.astype(np.float64)
    res = {"frames": int(gate.size), "channels": int(f.gate_channels),
           "mean": float(gate.mean()) if gate.size else None,
           "std": float(gate.std()) if gate.size else None, **_quantiles(gate),
           "histogram_all_channels": {"edges": np.linspace(0.0, 1.0, len(f.gate_counts) + 1).tolist(),
                                      "counts": np.asarray(f.gate_counts).astype(np.int64).tolist()},
           "histogram_frame_mean": stats.histogram(gate, 25, float(gate.min()), float(gate.max()))
           if gate.size and gate.max() > gate.min() else None}
    source = "corpus intensity" if f.intensity is not None else "model score"
    inten = f.intensity if f.intensity is not None else f.score
    res["intensity_source"] = source
    res["correlation"] = stats.pearson_ci(gate, inten, f.utterance, seed=seed)
    res["windows"] = stats.mean_difference_ci(gate, f.window, f.utterance, seed=seed)
    res["window_share"] = float(f.window.mean()) if f.window.size else None
    if roles is not None:
        hot = roles > 0
        res["truth"] = {
            "gate": stats.mean_difference_ci(gate, hot, f.utterance, seed=seed),
            "windows_vs_bursts": stats.precision_recall(f.window, hot),
            "windows_vs_evidence": stats.precision_recall(f.window, roles == ROLE_EVIDENCE),
            "burst_share": float(hot.mean()) if hot.size else None}
        judged, against = res["truth"]["gate"], "the generator's bursts"
    else:
        judged, against = res["windows"], "the model's hotspot windows (the corpus has no ground truth)"
    res["verdict"] = verdict(judged)
    res["verdict_against"] = against
    return res


def gate_section(col, truth_roles: dict | None, seed: int = 0) -> dict:
    """``{"modalities": {m: ...}, "note"}``; a modality without HGF (off in this run) is absent."""
    mods = {}
    for m, f in col.frames.items():
        if f.gate is None:
            continue
        roles = truth_roles[m][f.corpus_frame] if truth_roles is not None and m in truth_roles else None
        mods[m] = modality_gates(f, roles, seed)
    note = None if mods else "HGF is off in this run (--no-hgf): there is no gate to inspect."
    return {"modalities": mods, "gate_diff_min": GATE_DIFF_MIN, "note": note,
            "bootstrap": {"replicates": stats.BOOTSTRAP_REPLICATES, "level": stats.CI_LEVEL, "seed": seed,
                          "resampled": "utterances"}}


def verdict_line(m: str, g: dict) -> str:
    """One sentence a reader can take away without the plots."""
    judged = g["truth"]["gate"] if "truth" in g else g["windows"]
    if g["verdict"] is None:
        return f"{m}: undetermined (no frames on one side of {g['verdict_against']})"
    ci = judged["ci"]
    ci_txt = f", 95% CI [{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else ""
    r = g["correlation"]
    r_txt = "undefined" if r["r"] is None else f"{r['r']:+.2f}" + (
        f" [{r['ci'][0]:+.2f}, {r['ci'][1]:+.2f}]" if r["ci"] else "")
    return (f"{m}: {g['verdict']}: mean gate {judged['inside']:.3f} inside {g['verdict_against']} vs "
            f"{judged['outside']:.3f} outside (Δ {judged['difference']:+.3f}{ci_txt}; the verdict needs "
            f"|Δ| ≥ {GATE_DIFF_MIN}); r(gate, {g['intensity_source']}) = {r_txt}")
