"""The report's statistics (hotspot_erc.inspect.stats) against direct computations: correlation,
cluster-bootstrap intervals built by materialising each resample, mutual information against
sklearn, precision / recall by counting, length buckets; undefined numbers are None, never NaN."""
import math

import numpy as np
import pytest
import torch
from conftest import seed_for
from inspect_runs import materialised_replicates
from sklearn.metrics import mutual_info_score
from tolerance import rel_bound

from hotspot_erc.inspect import stats

F64 = torch.float64


def _corr_bound(x, y) -> float:
    """Rounding bound of a float64 Pearson r over n pairs: c·√n·u times the condition number of
    centring (‖x‖‖y‖ over the centred norms), which is large for values in a narrow band."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    kappa = (np.linalg.norm(x) * np.linalg.norm(y)) / (np.linalg.norm(x - x.mean()) * np.linalg.norm(y - y.mean()))
    return rel_bound(F64, x.size) * kappa


def _clustered(rng, clusters=12, per=(3, 9), narrow=False):
    sizes = rng.integers(per[0], per[1] + 1, clusters)
    cluster = np.repeat(np.arange(clusters), sizes)
    shift = rng.normal(size=clusters)[cluster]
    x = rng.normal(size=cluster.size) + shift
    y = 0.6 * x + rng.normal(size=cluster.size)
    if narrow:  # a gate: near 1, varying in the fourth decimal
        x = 0.99 + 1e-4 * x
    return x, y, cluster


@pytest.mark.parametrize("narrow", [False, True])
def test_pearson_and_its_cluster_bootstrap_interval(narrow):
    rng = np.random.default_rng(seed_for(1))
    x, y, cluster = _clustered(rng, narrow=narrow)
    got = stats.pearson_ci(x, y, cluster, replicates=40, seed=seed_for(2))
    ref = np.corrcoef(x, y)[0, 1]
    assert abs(got["r"] - ref) <= _corr_bound(x, y)
    assert got["frames"] == x.size and got["clusters"] == 12
    weights = stats.bootstrap_weights(12, 40, seed_for(2))
    assert weights.shape == (40, 12) and (weights.sum(1) == 12).all()
    reps = materialised_replicates(lambda a, b: np.corrcoef(a, b)[0, 1], (x, y), cluster, weights)
    lo, hi = np.quantile(reps, [0.025, 0.975])
    assert abs(got["ci"][0] - lo) <= _corr_bound(x, y) and abs(got["ci"][1] - hi) <= _corr_bound(x, y)
    assert got["ci"][0] <= got["r"] <= got["ci"][1]


def test_mean_difference_and_its_interval():
    rng = np.random.default_rng(seed_for(3))
    v, _, cluster = _clustered(rng, clusters=10)
    inside = rng.random(v.size) < 0.3
    got = stats.mean_difference_ci(v, inside, cluster, replicates=30, seed=seed_for(4))
    scale = np.abs(v).max()
    bound = rel_bound(F64, v.size) * scale
    assert abs(got["inside"] - v[inside].mean()) <= bound and abs(got["outside"] - v[~inside].mean()) <= bound
    assert abs(got["difference"] - (v[inside].mean() - v[~inside].mean())) <= 2 * bound
    assert got["frames_inside"] == inside.sum() and got["frames_outside"] == (~inside).sum()
    weights = stats.bootstrap_weights(10, 30, seed_for(4))
    reps = materialised_replicates(lambda a, b: a[b].mean() - a[~b].mean() if b.any() and (~b).any() else np.nan,
                                    (v, inside), cluster, weights)
    ok = reps[np.isfinite(reps)]
    lo, hi = np.quantile(ok, [0.025, 0.975])
    assert abs(got["ci"][0] - lo) <= 4 * bound and abs(got["ci"][1] - hi) <= 4 * bound


def test_undefined_numbers_are_none_not_nan():
    assert stats.pearson([1.0, 1.0, 1.0], [0.0, 1.0, 2.0]) is None      # a constant side
    assert stats.pearson([1.0], [2.0]) is None                         # one pair
    got = stats.pearson_ci(np.ones(6), np.arange(6.0), np.arange(6) // 2)
    assert got["r"] is None and got["ci"] is None
    empty = stats.mean_difference_ci(np.arange(4.0), np.zeros(4, bool), np.arange(4))
    assert empty["inside"] is None and empty["difference"] is None and empty["ci"] is None
    assert empty["outside"] == 1.5
    pr = stats.precision_recall(np.zeros(5, bool), np.zeros(5, bool))
    assert pr["precision"] is None and pr["recall"] is None
    assert stats.mutual_information(np.zeros(0, int), np.zeros(0, int)) == 0.0
    with pytest.raises(ValueError, match="num_clusters"):
        stats.bootstrap_weights(0)


def test_mutual_information_against_sklearn_and_its_shuffled_baseline():
    rng = np.random.default_rng(seed_for(5))
    a = rng.integers(0, 4, 300)
    b = np.where(rng.random(300) < 0.6, a, rng.integers(0, 4, 300))  # b tells a lot about a
    mi = stats.mutual_information(a, b)
    ref = mutual_info_score(a, b) / math.log(2)
    assert abs(mi - ref) <= rel_bound(F64, 16) * math.log2(300)
    got = stats.mutual_information_vs_shuffled(a, b, shuffles=50, seed=seed_for(6))
    perm = np.random.default_rng(seed_for(6))
    null = np.array([mutual_info_score(a, perm.permutation(b)) / math.log(2) for _ in range(50)])
    assert abs(got["shuffled_mean"] - null.mean()) <= rel_bound(F64, 50 * 16) * math.log2(300)
    assert got["p_value"] == pytest.approx(1 / 51)  # no shuffle reaches the real dependence
    assert got["mi_bits"] > got["shuffled_p95"] and got["items"] == 300
    indep = stats.mutual_information_vs_shuffled(a, rng.integers(0, 4, 300), shuffles=50, seed=seed_for(7))
    assert indep["p_value"] > 0.05  # a draw independent of a looks like its shuffles


def test_precision_recall_histogram_and_length_buckets():
    pred = np.array([1, 1, 0, 0, 1, 0], bool)
    true = np.array([1, 0, 0, 1, 1, 1], bool)
    got = stats.precision_recall(pred, true)
    assert got == {"precision": 2 / 3, "recall": 2 / 4, "predicted_frames": 3, "true_frames": 4}
    h = stats.histogram([0.0, 0.1, 0.5, 0.99, 1.0], bins=4)
    assert h["counts"] == [2, 0, 1, 2] and h["edges"][0] == 0.0 and h["edges"][-1] == 1.0
    lengths = np.array([8, 9, 10, 11, 12, 13, 14, 15, 16])
    buckets = stats.length_buckets(lengths)
    assert buckets == [(8, 10), (11, 13), (14, 16)]
    covered = [sum(lo <= n <= hi for lo, hi in buckets) for n in lengths]
    assert covered == [1] * len(lengths)  # every length in exactly one bucket
    assert stats.length_buckets(np.array([5, 5, 5])) == [(5, 5)]
    assert stats.length_buckets(np.array([], int)) == []
