"""Instruments that show whether each branch earns its place: MoA attention mass on
hotspot frames, MoA residual ratio, per-branch representations, gradient norms, linear probes."""
import json

import numpy as np
import pytest
import torch
from conftest import seed_for
from tolerance import assert_close, rel_bound

from hotspot_erc.data.dataset import DialogueDataset, collate_dialogues
from hotspot_erc.data.format import open_corpus
from hotspot_erc.data.synthetic import generate_synthetic_corpus
from hotspot_erc.nn.attention_inspect import hotspot_attention_mass
from hotspot_erc.nn.model import HotspotERC
from hotspot_erc.train.trainer import branch_grad_sq, branch_parameters


def _brute_force(q, k, cu_q, cu_k, hot_q, hot_k, scale):
    mass = uniform = frames = 0.0
    for s in range(cu_q.numel() - 1):
        qs, ks = q[cu_q[s]:cu_q[s + 1]].double(), k[cu_k[s]:cu_k[s + 1]].double()
        if ks.shape[0] == 0:
            continue
        p = torch.softmax(torch.einsum("qhd,khd->hqk", qs, ks) * scale, -1)  # [H, Lq, Lk]
        hk = hot_k[cu_k[s]:cu_k[s + 1]].double()
        for i in range(qs.shape[0]):
            if hot_q[cu_q[s] + i]:
                mass += float((p[:, i] * hk).sum(-1).mean())
                uniform += float(hk.mean())
                frames += 1
    return torch.tensor([mass, uniform, frames], dtype=torch.float64)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_attention_mass_matches_brute_force(seed):
    g = torch.Generator().manual_seed(seed_for(seed))
    lq, lk = torch.tensor([3, 0, 5, 4, 1]), torch.tensor([4, 2, 0, 6, 1])
    cu_q = torch.cat([torch.zeros(1, dtype=torch.long), lq.cumsum(0)])
    cu_k = torch.cat([torch.zeros(1, dtype=torch.long), lk.cumsum(0)])
    q, k = torch.randn(int(lq.sum()), 2, 4, generator=g), torch.randn(int(lk.sum()), 2, 4, generator=g)
    hot_q, hot_k = torch.rand(q.shape[0], generator=g) > 0.4, torch.rand(k.shape[0], generator=g) > 0.5
    got = hotspot_attention_mass(q, k, cu_q, cu_k, hot_q, hot_k, 0.5)
    # float32 scores (head dim 4) and softmax over a segment's keys (6 at most), summed over the
    # hotspot query rows in float64: k = keys x head dim. The sums add positive terms (no cancellation).
    want = _brute_force(q, k, cu_q, cu_k, hot_q, hot_k, 0.5)
    assert_close(got, want, torch.float32, int(lk.max()) * q.shape[2], what="attention mass")
    # attention that only sees hotspot keys puts all its mass there: lift = 1 / uniform share
    soft = hotspot_attention_mass(q, k, cu_q, cu_k, hot_q.float(), hot_k.float(), 0.5)
    assert torch.equal(soft, got)  # window weights are thresholded at 0.5


def test_attention_mass_empty():
    cu = torch.tensor([0, 0, 0])
    out = hotspot_attention_mass(torch.zeros(0, 2, 4), torch.zeros(0, 2, 4), cu, cu, torch.zeros(0, dtype=torch.bool),
                                 torch.zeros(0, dtype=torch.bool), 1.0)
    assert out.tolist() == [0.0, 0.0, 0.0]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = generate_synthetic_corpus(tmp_path_factory.mktemp("syn") / "c", num_dialogues=6, seed=0,
                                     utterances=(3, 4), frames={"t": (2, 7), "a": (3, 8), "v": (1, 6)})
    return open_corpus(path)


def test_model_reports_branches_and_attention(corpus):
    ds = DialogueDataset(corpus, "train")
    batch = collate_dialogues([ds[i] for i in range(2)])
    torch.manual_seed(seed_for(0))
    model = HotspotERC(corpus.dims, len(corpus.label_names), d_model=16, num_heads=2, classifier_hidden=16).eval()
    out = model(batch)
    s = batch.labels.shape[0]
    assert set(out.branches) == {"encoder", "moa", "graph"} and all(v.shape == (s, 48) for v in out.branches.values())
    assert not out.attention_mass and set(out.moa_residual) == {"t", "a", "v"}  # attention only when inspecting
    model.inspect = True
    inspected = model(batch)
    assert set(inspected.attention_mass) == {"a->t", "v->t", "t->a", "v->a", "t->v", "a->v"}
    torch.testing.assert_close(inspected.logits, out.logits, rtol=0, atol=0)  # inspecting changes nothing
    mass, uniform, frames = inspected.attention_mass["a->t"].tolist()
    assert frames > 0 and 0 <= mass <= frames and 0 <= uniform <= frames
    no_moa = HotspotERC(corpus.dims, len(corpus.label_names), d_model=16, num_heads=2, moa=False, graph=False)
    assert set(no_moa(batch).branches) == {"encoder"}


def test_branch_gradient_norms(corpus):
    model = HotspotERC(corpus.dims, len(corpus.label_names), d_model=16, num_heads=2, classifier_hidden=16)
    groups = branch_parameters(model)
    assert set(groups) == {"hotspot_fusion", "encoder", "moa", "graph", "classifier"}
    assert sum(len(v) for v in groups.values()) == len(list(model.parameters()))
    ds = DialogueDataset(corpus, "train")
    model(collate_dialogues([ds[0]])).logits.sum().backward()
    sq = branch_grad_sq(groups)
    expected = [sum(float(p.grad.double().square().sum()) for p in ps if p.grad is not None) for ps in groups.values()]
    # float64 sums of squares (positive terms) over a group's gradient entries: k = their number
    k = max(sum(p.numel() for p in ps) for ps in groups.values())
    assert_close(sq, torch.tensor(expected, dtype=torch.float64), torch.float64, k, what="gradient norms")


def test_run_report_carries_instruments(corpus, tmp_path):
    from hotspot_erc.cli import main

    run = tmp_path / "run"
    assert main(["train", "--corpus", corpus.path, "--run-dir", str(run), "--d-model", "16", "--num-heads", "2",
                 "--classifier-hidden", "16", "--epochs", "2", "--align-warmup", "0", "--batch-size", "2",
                 "--no-progress"]) == 0
    diag = json.loads((run / "metrics.json").read_text())["diagnostics"]
    assert set(diag["probes"]) == {"encoder", "moa", "graph", "classifier_input"}
    assert all(0 <= p["dev_accuracy"] <= 1 for p in diag["probes"].values())
    assert set(diag["moa_attention"]) == {"a->t", "v->t", "t->a", "v->a", "t->v", "a->v"}
    assert set(diag["moa_residual_ratio"]) == {"t", "a", "v"}
    assert set(diag["hgf_join_ratio"]) == {"t", "a", "v"}  # hgf_join="scaled" by default
    assert all(0 < r < float("inf") for r in diag["hgf_join_ratio"].values())  # the factor left 0 in training
    history = json.loads((run / "history.json").read_text())
    assert set(history[-1]["grad_norm"]) == {"hotspot_fusion", "encoder", "moa", "graph", "classifier"}
    assert (run / "branches.png").exists()


def test_range_attention_mass_matches_softmax():
    from hotspot_erc.nn.attention_inspect import range_attention_mass

    g = torch.Generator().manual_seed(seed_for(3))
    q, k = torch.randn(9, 2, 4, generator=g), torch.randn(13, 2, 4, generator=g)
    cu_k = torch.tensor([0, 5, 5, 13])
    rows, seg = torch.tensor([1, 7, 3]), torch.tensor([0, 2, 1])
    lo, hi = torch.tensor([[0, 3], [2, 6], [0, 1]]), torch.tensor([[2, 5], [4, 8], [1, 2]])
    got = range_attention_mass(q, k, cu_k, rows, seg, lo, hi, 0.5)
    for u in range(3):
        a, b = int(cu_k[seg[u]]), int(cu_k[seg[u] + 1])
        for j in range(2):
            if b == a:  # a segment without keys: no attention anywhere
                assert float(got[u, j]) == 0.0
                continue
            p = ((q[rows[u]].unsqueeze(0) * k[a:b]).sum(-1) * 0.5).softmax(0).mean(1)  # [L], mean over heads
            # scores over head dim 4, softmax over the segment's b - a keys (positive terms)
            assert_close(got[u, j], p[int(lo[u, j]):int(hi[u, j])].sum(), torch.float32, (b - a) * q.shape[2],
                         what=f"range mass {u}, {j}")


@pytest.mark.parametrize("queries", ["frames", "peaks"])
def test_matched_burst_attention_on_the_alignment_story(tmp_path, queries):
    from hotspot_erc.data.synthetic_align import generate_alignment_corpus
    from hotspot_erc.train.probes import matched_burst_attention

    path = generate_alignment_corpus(tmp_path / "align", num_dialogues=8, seed=1)
    c = open_corpus(path)
    ds = DialogueDataset(c, "train")
    torch.manual_seed(seed_for(0))
    model = HotspotERC(c.dims, len(c.label_names), d_model=16, num_heads=2, num_speakers=4,
                       moa_queries=queries).eval()
    res = matched_burst_attention(model, ds, "cpu", batch_size=4)
    max_keys = max(int(np.diff(c.offsets[m]).max()) for m in "av")
    assert set(res) == {"a->t", "v->t"}
    for pair in res.values():
        assert pair["utterances"] > 0
        assert 0.0 < pair["uniform"] < 1.0
        assert 0.0 <= pair["matched"] <= 1.0 and 0.0 <= pair["distractor"] <= 1.0
        # three bursts share one probability distribution
        # (up to the rounding of the softmax's normalising sum over a source utterance's frames)
        assert pair["matched"] + 2 * pair["distractor"] <= 1.0 + rel_bound(torch.float32, max_keys)
    assert model.inspect is False
    # other corpora and models without MoA: nothing to measure
    other = generate_synthetic_corpus(tmp_path / "default", num_dialogues=4, seed=0)
    oc = open_corpus(other)
    assert matched_burst_attention(model, DialogueDataset(oc, "train"), "cpu") is None
    no_moa = HotspotERC(c.dims, len(c.label_names), d_model=16, num_heads=2, num_speakers=4, moa=False)
    assert matched_burst_attention(no_moa, ds, "cpu") is None
    windows_only = HotspotERC(c.dims, len(c.label_names), d_model=16, num_heads=2, num_speakers=4,
                              moa_keys="hotspots")
    assert matched_burst_attention(windows_only, ds, "cpu") is None


def test_cued_and_cueless_accuracy(tmp_path):
    from hotspot_erc.data.synthetic_align import alignment_truth, generate_alignment_corpus
    from hotspot_erc.train.probes import context_split_accuracy

    c = open_corpus(generate_alignment_corpus(tmp_path / "align", num_dialogues=8, seed=1))
    truth = alignment_truth(c)
    ids = list(c.utterance_ids)
    labels = np.asarray(c.label).astype(np.int64)
    preds = labels.copy()
    cueless = truth["cueless"].astype(bool)
    preds[cueless] = (labels[cueless] + 1) % 6  # every cue-less one wrong, every cued one right
    labels_masked = labels.copy()
    labels_masked[0] = -1  # unlabelled utterances are not counted
    got = context_split_accuracy(c, {"utterance_ids": ids, "labels": labels_masked, "preds": preds})
    assert got["cued"]["accuracy"] == 1.0 and got["cueless"]["accuracy"] == 0.0
    assert got["cued"]["utterances"] + got["cueless"]["utterances"] == len(ids) - 1
    assert got["cueless"]["utterances"] == int(cueless.sum()) - int(cueless[0])
    other = open_corpus(generate_synthetic_corpus(tmp_path / "default", num_dialogues=4, seed=0))
    assert context_split_accuracy(other, {"utterance_ids": [], "labels": [], "preds": []}) is None
