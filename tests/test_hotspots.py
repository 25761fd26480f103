"""hotspot_erc.hotspots (DESIGN §4): scores, NMS peak picking, C/H/mask, the soft top-k and a
learned scorer trained end to end. Vectorised code is checked against per-utterance loops."""
import math

import pytest
import torch
from conftest import seed_for
from tolerance import assert_close, magnitude, rel_bound

from hotspot_erc.hotspots import (Hotspots, LearnedScorer, extract_hotspots, normalize_scores, pick_peaks,
                                  rule_scores)


def random_cu(lengths, device="cpu"):
    cu = torch.zeros(len(lengths) + 1, dtype=torch.long)
    cu[1:] = torch.tensor(lengths).cumsum(0)
    return cu.to(device)


# Empty, 1-frame, shorter-than-a-window and long utterances, in a mixed order.
LENGTHS = [0, 1, 3, 17, 0, 2, 9, 40, 5, 1, 0, 23]


def loop_peaks(scores, cu, k, radius):
    """Greedy NMS written the obvious way, one utterance at a time (the spec)."""
    out = torch.full((len(cu) - 1, k), -1, dtype=torch.long)
    for s in range(len(cu) - 1):
        lo, hi = int(cu[s]), int(cu[s + 1])
        avail = list(range(lo, hi))
        for j in range(k + 1):
            if not avail:
                break
            # NaN never beats a number (it ranks as -inf); ties go to the earliest frame.
            best = max(avail, key=lambda t: (-math.inf if math.isnan(float(scores[t])) else float(scores[t]), -t))
            if j < k:
                out[s, j] = best
            avail = [t for t in avail if abs(t - best) > 2 * radius]
    return out


# ----------------------------------------------------------------------------- scores

def test_rule_scores(device):
    x = torch.randn(sum(LENGTHS), 6, device=device)
    cu = random_cu(LENGTHS, device)
    assert_close(rule_scores(x, cu, "norm"), x.norm(dim=1), torch.float32, x.shape[1], what="norm")  # k = d
    got = rule_scores(x, cu, "delta").cpu()
    xc = x.cpu()
    for s in range(len(LENGTHS)):
        lo, hi = int(cu[s]), int(cu[s + 1])
        for t in range(lo, hi):
            if t > lo:
                want = (xc[t] - xc[t - 1]).norm()
            elif hi - lo > 1:
                want = (xc[t + 1] - xc[t]).norm()
            else:
                want = torch.tensor(0.0)
            assert_close(got[t], want, torch.float32, x.shape[1], what=f"delta {s}, {t}")  # k = d
    with pytest.raises(ValueError, match="kind must be one of"):
        rule_scores(x, cu, "energy")


def test_rule_scores_empty_batch():
    assert rule_scores(torch.zeros(0, 4), torch.tensor([0, 0]), "delta").shape == (0,)


def test_normalize_scores():
    cu = random_cu(LENGTHS)
    s = torch.randn(sum(LENGTHS)) * 5 + 3
    s[int(cu[6]):int(cu[7])] = 2.0  # a flat utterance
    z = normalize_scores(s, cu)
    assert z.min() >= 0 and z.max() <= 1
    assert torch.all(z[int(cu[6]):int(cu[7])] == 0)
    for i in (3, 7, 11):  # each non-flat utterance spans exactly [0, 1]
        seg = z[int(cu[i]):int(cu[i + 1])]
        # (max - min) / (max - min): one subtraction each side, one division
        assert seg.min() == 0 and abs(float(seg.max()) - 1.0) <= rel_bound(torch.float32)


def test_learned_scorer_shape():
    scorer = LearnedScorer(12)
    assert scorer(torch.randn(30, 12)).shape == (30,)
    assert scorer(torch.randn(0, 12)).shape == (0,)


# ----------------------------------------------------------------------------- peaks and windows

@pytest.mark.parametrize("k,radius", [(1, 0), (2, 2), (3, 1), (4, 3)])
def test_peaks_match_loop(k, radius):
    cu = random_cu(LENGTHS)
    scores = torch.randn(sum(LENGTHS)).round(decimals=0)  # many ties: earliest frame must win
    scores[5] = float("nan")
    peaks, _ = pick_peaks(scores, cu, k, radius)
    assert torch.equal(peaks, loop_peaks(scores, cu, k, radius))


def loop_mask(peaks, cu, radius, n):
    mask = torch.zeros(n)
    for s in range(len(cu) - 1):
        lo, hi = int(cu[s]), int(cu[s + 1])
        for p in peaks[s].tolist():
            if p >= 0:
                mask[max(lo, p - radius):min(hi, p + radius + 1)] = 1
    return mask


@pytest.mark.parametrize("pool", ["mean", "attention"])
def test_extract_hard(pool, device):
    n = sum(LENGTHS)
    cu = random_cu(LENGTHS, device)
    x = torch.randn(n, 8, device=device)
    scores = rule_scores(x, cu, "delta")
    hs = extract_hotspots(x, cu, scores, num_windows=2, radius=2, pool=pool)
    assert isinstance(hs, Hotspots)
    assert hs.peaks.shape == (len(LENGTHS), 2) and hs.peaks.dtype == torch.long
    mask = loop_mask(hs.peaks.cpu(), cu.cpu(), 2, n)
    assert torch.equal(hs.mask.cpu(), mask)
    assert torch.equal(hs.hotspot, x * hs.mask[:, None])
    for s, length in enumerate(LENGTHS):
        lo, hi = int(cu[s]), int(cu[s + 1])
        if length == 0:
            assert torch.all(hs.peaks[s] == -1)
            continue
        frames = x[lo:hi]
        if pool == "mean":
            want = frames.mean(0)
        else:
            w = torch.softmax(scores[lo:hi], 0)[:, None]
            want = (w * frames).sum(0)
        # k = the utterance's frames; the (weighted) mean may cancel: scale = the same on magnitudes
        scale = frames.abs().mean(0) if pool == "mean" else magnitude(lambda f: (w * f).sum(0), frames)
        assert_close(hs.content[lo:hi], want.expand(length, -1), torch.float32, length,
                     scale=scale.expand(length, -1), what=f"content {s}")
        if length <= 2 * 2 + 1:  # no room for a second window outside the first's suppression zone
            assert (hs.peaks[s] >= 0).sum() == 1
        if length <= 2 + 1:  # shorter than a window's half: covered whole
            assert torch.all(hs.mask[lo:hi] == 1)


def test_flat_scores_and_edge_cases():
    cu = random_cu([0, 1, 4, 12])
    x = torch.randn(17, 3)
    hs = extract_hotspots(x, cu, torch.zeros(17), num_windows=2, radius=1)
    # Ties go to the earliest frame: windows at the start, then past the suppression zone.
    assert hs.peaks.tolist() == [[-1, -1], [0, -1], [1, 4], [5, 8]]
    assert torch.isfinite(hs.content).all() and torch.isfinite(hs.hotspot).all()
    empty = extract_hotspots(torch.zeros(0, 3), torch.tensor([0, 0, 0]), torch.zeros(0))
    assert empty.peaks.shape == (2, 2) and torch.all(empty.peaks == -1)
    assert empty.content.shape == (0, 3) and empty.mask.shape == (0,)
    none = extract_hotspots(x, cu, torch.randn(17), num_windows=0)
    assert none.peaks.shape == (4, 0) and torch.all(none.mask == 0) and torch.all(none.hotspot == 0)


def test_int32_cu_seqlens_and_float64():
    cu = random_cu(LENGTHS).int()
    x = torch.randn(sum(LENGTHS), 4, dtype=torch.float64)
    hs = extract_hotspots(x, cu, rule_scores(x, cu), soft=True)
    assert hs.content.dtype == hs.hotspot.dtype == hs.mask.dtype == torch.float64


# ----------------------------------------------------------------------------- soft top-k

def test_soft_membership_and_gradients():
    n = sum(LENGTHS)
    cu = random_cu(LENGTHS)
    x = torch.randn(n, 5, dtype=torch.float64)
    scores = torch.randn(n, dtype=torch.float64, requires_grad=True)
    hard = extract_hotspots(x, cu, scores.detach(), num_windows=2, radius=1)
    soft = extract_hotspots(x, cu, scores, num_windows=2, radius=1, soft=True, temperature=0.5)
    assert torch.equal(soft.peaks, hard.peaks)  # the centres are the hard choice
    assert torch.all((soft.mask > 0) == (hard.mask > 0))  # support = the hard windows
    assert torch.all((soft.mask >= 0) & (soft.mask <= 1))
    inner = soft.window_weight[(soft.peaks >= 0)]
    assert torch.all((inner > 0) & (inner <= 1))
    (soft.hotspot.sum() * 1.0).backward()
    assert scores.grad.abs().sum() > 0

    def f(s):
        out = extract_hotspots(x, cu, s, num_windows=2, radius=1, soft=True, temperature=0.5, pool="attention")
        return out.hotspot, out.content

    assert torch.autograd.gradcheck(f, (scores.detach().clone().requires_grad_(),))


def test_learned_scorer_trains_end_to_end():
    """A scorer trained only through the soft windows learns to put them on planted bursts."""
    gen = torch.Generator().manual_seed(seed_for(1))
    dim, s_count = 8, 48
    lengths = torch.randint(10, 25, (s_count,), generator=gen).tolist()
    cu = random_cu(lengths)
    n = sum(lengths)
    x = torch.randn(n, dim, generator=gen) * 0.5
    direction = torch.zeros(dim)
    direction[0] = 1.0
    burst = torch.zeros(n, dtype=torch.bool)
    for s in range(s_count):  # test data set-up, not library code: a loop is fine here
        t = int(cu[s]) + int(torch.randint(0, lengths[s], (1,), generator=gen))
        burst[t] = True
    x[burst] += 3.0 * direction  # the burst differs only along `direction`, not in norm alone
    torch.manual_seed(seed_for(0))
    scorer = LearnedScorer(dim)
    opt = torch.optim.Adam(scorer.parameters(), lr=0.05)

    def hit_rate():
        with torch.no_grad():
            peaks = extract_hotspots(x, cu, scorer(x), num_windows=1, radius=0).peaks[:, 0]
        return burst[peaks].float().mean().item()

    before = hit_rate()
    for _ in range(25):
        hs = extract_hotspots(x, cu, scorer(x), num_windows=1, radius=0, soft=True, pool="attention")
        # Reward: how much of `direction` the hotspot features carry, per utterance.
        loss = -(hs.hotspot @ direction).sum() / s_count - (hs.content @ direction).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = hit_rate()
    assert after >= 0.9 and after > before, (before, after)


# ----------------------------------------------------------------------------- validation, scale

def test_bad_input():
    x = torch.randn(10, 4)
    cu = torch.tensor([0, 4, 10])
    s = torch.randn(10)
    with pytest.raises(ValueError, match=r"scores must have shape \[N\]"):
        extract_hotspots(x, cu, s[:9])
    with pytest.raises(ValueError, match="cu_seqlens must end at the token count"):
        extract_hotspots(x, torch.tensor([0, 4, 9]), s)
    with pytest.raises(ValueError, match="cu_seqlens must be non-decreasing"):
        extract_hotspots(x, torch.tensor([0, 6, 4, 10]), s)
    with pytest.raises(TypeError, match="cu_seqlens must have dtype"):
        extract_hotspots(x, cu.float(), s)
    with pytest.raises(ValueError, match="radius must be an integer >= 0"):
        extract_hotspots(x, cu, s, radius=-1)
    with pytest.raises(ValueError, match="num_windows must be an integer >= 0"):
        extract_hotspots(x, cu, s, num_windows=1.5)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        extract_hotspots(x, cu, s, soft=True, temperature=0.0)
    with pytest.raises(ValueError, match="pool must be one of"):
        extract_hotspots(x, cu, s, pool="max")
    with pytest.raises(ValueError, match="x must have shape"):
        extract_hotspots(x[:, 0], cu, s)
    with pytest.raises(ValueError, match="scores must be on"):
        extract_hotspots(x, cu, s.to("meta"))


def count_aten_calls(fn) -> int:
    from torch.utils._python_dispatch import TorchDispatchMode

    class Counter(TorchDispatchMode):
        calls = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Counter.calls += 1
            return func(*args, **(kwargs or {}))

    with Counter():
        fn()
    return Counter.calls


@pytest.mark.parametrize("soft", [False, True])
def test_op_count_independent_of_utterance_count(soft):
    """Vectorised: the number of tensor ops is the same for 3 utterances and for 3,000 (a loop
    over utterances or frames would scale with them)."""
    def run(count):
        lengths = torch.randint(0, 30, (count,)).tolist()
        cu = random_cu(lengths)
        x = torch.randn(sum(lengths), 16, requires_grad=soft)
        scores = rule_scores(x, cu, "delta")
        hs = extract_hotspots(x, cu, scores, num_windows=3, radius=2, soft=soft, pool="attention")
        if soft:
            (hs.hotspot.sum() + hs.content.sum()).backward()
        return hs

    assert count_aten_calls(lambda: run(3)) == count_aten_calls(lambda: run(3000))


@pytest.mark.gpu
def test_cuda_matches_cpu():
    cu = random_cu(LENGTHS)
    x = torch.randn(sum(LENGTHS), 8)
    scores = rule_scores(x, cu, "delta")
    want = extract_hotspots(x, cu, scores, soft=True, pool="attention")
    got = extract_hotspots(x.cuda(), cu.cuda(), scores.cuda(), soft=True, pool="attention")
    assert torch.equal(got.peaks.cpu(), want.peaks)
    # the soft mask is a sigmoid of a score difference per window (k = 1); the content a softmax-
    # weighted sum over an utterance's frames, which may cancel (scale: the same on magnitudes)
    assert_close(got.mask.cpu(), want.mask, torch.float32, what="mask")
    scale = magnitude(lambda a: extract_hotspots(a, cu, scores, soft=True, pool="attention").content, x)
    assert_close(got.content.cpu(), want.content, torch.float32, max(LENGTHS), scale=scale, what="content")
