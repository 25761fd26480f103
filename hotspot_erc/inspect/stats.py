"""The statistics behind the report's numbers, on plain NumPy arrays.

Frames of one utterance are not independent draws (a gate or an intensity drifts smoothly along
an utterance), so confidence intervals resample whole utterances: a cluster bootstrap whose
replicates are weights on utterances (how often each was drawn), never copies of the frames.
Every function returns None, not NaN, where a number is undefined (no frames, no variance).
"""
from __future__ import annotations

import numpy as np

BOOTSTRAP_REPLICATES = 200
CI_LEVEL = 0.95
SHUFFLES = 200


def bootstrap_weights(num_clusters: int, replicates: int = BOOTSTRAP_REPLICATES, seed: int = 0) -> np.ndarray:
    """[replicates, num_clusters] draw counts of a cluster bootstrap: each replicate draws
    ``num_clusters`` clusters with replacement (``default_rng(seed).multinomial``)."""
    if num_clusters < 1:
        raise ValueError(f"num_clusters must be >= 1, got {num_clusters}")
    rng = np.random.default_rng(seed)
    return rng.multinomial(num_clusters, np.full(num_clusters, 1.0 / num_clusters), size=replicates)


def _cluster_sums(values: np.ndarray, cluster: np.ndarray, num_clusters: int) -> np.ndarray:
    return np.bincount(cluster, weights=values, minlength=num_clusters)


def _pearson_from_sums(n, sx, sy, sxx, syy, sxy):
    """Pearson r from (possibly weighted) sums; NaN where either variance is 0 (callers turn it
    into None)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        cov = n * sxy - sx * sy
        vx = n * sxx - sx * sx
        vy = n * syy - sy * sy
        r = cov / np.sqrt(vx * vy)
    return np.where((vx > 0) & (vy > 0), np.clip(r, -1.0, 1.0), np.nan)


def _interval(replicates: np.ndarray) -> list[float] | None:
    ok = replicates[np.isfinite(replicates)]
    # Half the replicates undefined (a degenerate resample) says the interval is not to be trusted.
    if ok.size < max(2, replicates.size // 2):
        return None
    alpha = (1.0 - CI_LEVEL) / 2.0
    return [float(np.quantile(ok, alpha)), float(np.quantile(ok, 1.0 - alpha))]


def pearson(x: np.ndarray, y: np.ndarray) -> float | None:
    """Pearson correlation of the finite pairs; None with fewer than 2 or a constant side."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if x.size < 2:
        return None
    x, y = x - x.mean(), y - y.mean()
    r = _pearson_from_sums(x.size, 0.0, 0.0, float(x @ x), float(y @ y), float(x @ y))
    return None if not np.isfinite(r) else float(r)


def pearson_ci(x: np.ndarray, y: np.ndarray, cluster: np.ndarray, replicates: int = BOOTSTRAP_REPLICATES,
               seed: int = 0) -> dict:
    """Pearson r of (x, y) over frames and its cluster-bootstrap interval (clusters = utterances:
    ``cluster`` [F] int ids). ``{"r", "ci", "frames", "clusters"}``; r and ci None when undefined."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    cluster = np.asarray(cluster, dtype=np.int64)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y, cluster = x[keep], y[keep], cluster[keep]
    ids, cluster = np.unique(cluster, return_inverse=True)
    out = {"r": pearson(x, y), "ci": None, "frames": int(x.size), "clusters": int(ids.size)}
    if out["r"] is None or ids.size < 2:
        return out
    # Centred first: the sums then cancel no leading digits even for gates all near 1.
    x, y = x - x.mean(), y - y.mean()
    k = ids.size
    stats = np.stack([_cluster_sums(np.ones_like(x), cluster, k), _cluster_sums(x, cluster, k),
                      _cluster_sums(y, cluster, k), _cluster_sums(x * x, cluster, k),
                      _cluster_sums(y * y, cluster, k), _cluster_sums(x * y, cluster, k)], 1)   # [K, 6]
    w = bootstrap_weights(k, replicates, seed).astype(np.float64)                              # [B, K]
    sums = w @ stats                                                                             # [B, 6]
    out["ci"] = _interval(_pearson_from_sums(*sums.T))
    return out


def mean_difference_ci(values: np.ndarray, inside: np.ndarray, cluster: np.ndarray,
                       replicates: int = BOOTSTRAP_REPLICATES, seed: int = 0) -> dict:
    """Mean of ``values`` where ``inside`` minus the mean elsewhere, with its cluster-bootstrap
    interval. ``{"inside", "outside", "difference", "ci", "frames_inside", "frames_outside"}``;
    a mean over no frames is None, and so is every number that needs it."""
    v = np.asarray(values, dtype=np.float64)
    inside = np.asarray(inside, dtype=bool)
    cluster = np.asarray(cluster, dtype=np.int64)
    keep = np.isfinite(v)
    v, inside, cluster = v[keep], inside[keep], cluster[keep]
    n_in, n_out = int(inside.sum()), int((~inside).sum())
    out = {"inside": float(v[inside].mean()) if n_in else None,
           "outside": float(v[~inside].mean()) if n_out else None,
           "difference": None, "ci": None, "frames_inside": n_in, "frames_outside": n_out}
    if not n_in or not n_out:
        return out
    out["difference"] = out["inside"] - out["outside"]
    ids, cluster = np.unique(cluster, return_inverse=True)
    if ids.size < 2:
        return out
    k = ids.size
    c = v - v.mean()
    stats = np.stack([_cluster_sums(inside.astype(np.float64), cluster, k),
                      _cluster_sums(np.where(inside, c, 0.0), cluster, k),
                      _cluster_sums((~inside).astype(np.float64), cluster, k),
                      _cluster_sums(np.where(inside, 0.0, c), cluster, k)], 1)
    s = bootstrap_weights(k, replicates, seed).astype(np.float64) @ stats
    with np.errstate(invalid="ignore", divide="ignore"):
        diff = np.where((s[:, 0] > 0) & (s[:, 2] > 0), s[:, 1] / s[:, 0] - s[:, 3] / s[:, 2], np.nan)
    out["ci"] = _interval(diff)
    return out


def histogram(values: np.ndarray, bins: int = 25, lo: float = 0.0, hi: float = 1.0) -> dict:
    """Counts of ``values`` in ``bins`` equal bins over [lo, hi] (the last bin closed)."""
    counts, edges = np.histogram(np.asarray(values, dtype=np.float64), bins=bins, range=(lo, hi))
    return {"edges": edges.tolist(), "counts": counts.astype(np.int64).tolist()}


def mutual_information(a: np.ndarray, b: np.ndarray) -> float:
    """Mutual information in bits between two integer labelings of the same items (0 for none)."""
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    if a.size == 0:
        return 0.0
    _, a = np.unique(a, return_inverse=True)
    _, b = np.unique(b, return_inverse=True)
    joint = np.zeros((a.max() + 1, b.max() + 1))
    np.add.at(joint, (a, b), 1.0)
    p = joint / a.size
    pa, pb = p.sum(1, keepdims=True), p.sum(0, keepdims=True)
    nz = p > 0
    return float((p[nz] * np.log2(p[nz] / (pa @ pb)[nz])).sum())


def mutual_information_vs_shuffled(a: np.ndarray, b: np.ndarray, shuffles: int = SHUFFLES, seed: int = 0) -> dict:
    """MI(a; b) in bits against the MI left after shuffling ``b`` (``default_rng(seed)``
    permutations): ``{"mi_bits", "shuffled_mean", "shuffled_p95", "p_value", "items"}``. The p-value
    counts shuffles at least as informative as the data, (1 + count) / (1 + shuffles)."""
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    mi = mutual_information(a, b)
    rng = np.random.default_rng(seed)
    null = np.array([mutual_information(a, rng.permutation(b)) for _ in range(shuffles)])
    return {"mi_bits": mi, "shuffled_mean": float(null.mean()) if null.size else None,
            "shuffled_p95": float(np.quantile(null, 0.95)) if null.size else None,
            "p_value": float((1 + (null >= mi - 1e-12).sum()) / (1 + null.size)), "items": int(a.size)}


def precision_recall(predicted: np.ndarray, truth: np.ndarray) -> dict:
    """Frame-level precision (share of predicted frames that are true) and recall (share of true
    frames predicted); None where the denominator is empty."""
    p, t = np.asarray(predicted, dtype=bool), np.asarray(truth, dtype=bool)
    hit = int((p & t).sum())
    return {"precision": hit / int(p.sum()) if p.any() else None,
            "recall": hit / int(t.sum()) if t.any() else None,
            "predicted_frames": int(p.sum()), "true_frames": int(t.sum())}


def length_buckets(lengths: np.ndarray, parts: int = 3) -> list[tuple[int, int]]:
    """Up to ``parts`` inclusive ranges of dialogue lengths holding about equal numbers of
    dialogues (quantile cut points); fewer when the lengths take fewer values."""
    lengths = np.sort(np.asarray(lengths, dtype=np.int64))
    if lengths.size == 0:
        return []
    cuts = sorted({int(np.quantile(lengths, q, method="lower")) for q in np.arange(1, parts) / parts})
    bounds, lo = [], int(lengths[0])
    for c in cuts:
        if lo <= c < int(lengths[-1]):
            bounds.append((lo, c))
            lo = c + 1
    bounds.append((lo, int(lengths[-1])))
    return bounds
