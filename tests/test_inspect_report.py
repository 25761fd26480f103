"""Every number of the run report (report.json, written by `train` for a 2-epoch synthetic run)
against a direct computation: the model run again batch by batch, its outputs read directly, the
generator's truth read from the truth file's spans, the ablated graph made by zeroing relation
weights instead of removing edges, the altered inputs built at the batch level."""
import copy
import json
import math
import os

import numpy as np
import pytest
import torch
from conftest import seed_for
from inspect_runs import materialised_replicates, synthetic_run
from sklearn.metrics import mutual_info_score
from tolerance import rel_bound

from hotspot_erc.data.dataset import DialogueDataset
from hotspot_erc.data.synthetic_common import ROLE_DECOY, ROLE_EVIDENCE, TRUTH_FILE
from hotspot_erc.inspect import stats
from hotspot_erc.inspect.collect import collect
from hotspot_erc.inspect.dialogues import dialogue_view
from hotspot_erc.inspect.edges import graph_section
from hotspot_erc.inspect.gates import GATE_DIFF_MIN, verdict
from hotspot_erc.inspect.report import load_run
from hotspot_erc.inspect.routing import TURN_BOUNDS, routing_section
from hotspot_erc.nn.model import HotspotERC
from hotspot_erc.segments import Segments
from hotspot_erc.train.batching import eval_loader
from hotspot_erc.train.metrics import evaluate_predictions, weighted_f1

F32, F64 = torch.float32, torch.float64
BATCH = 4  # the run's batch size: the direct passes see the same batches, so the same numbers


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    r = synthetic_run(tmp_path_factory)
    with open(os.path.join(r["run"], "report.json")) as fh:
        rep = json.load(fh, parse_constant=lambda c: pytest.fail(f"{c} in report.json"))
    run = load_run(r["run"])
    model = run["model"]
    ds = DialogueDataset(run["corpus_obj"], "test", modalities=model.modalities)
    passes = forward(model, ds)
    return {**r, "rep": rep, "model": model, "ds": ds, "passes": passes, "corpus": run["corpus_obj"],
            "truth": np.load(os.path.join(r["corpus"], TRUTH_FILE))}


@torch.no_grad()
def forward(model, ds, inspect=True):
    model.eval()
    model.inspect = inspect
    try:
        return [(b, model(b)) for b in eval_loader(ds, BATCH, torch.device("cpu"))]
    finally:
        model.inspect = False


def cat(xs):
    return torch.cat([torch.as_tensor(x) for x in xs]).numpy()


def direct_preds(passes):
    probs = cat([torch.softmax(o.logits.float(), -1) for _, o in passes])
    labels = cat([b.labels for b, _ in passes])
    return labels, probs.argmax(1), probs


def frame_utterance(passes, m):
    """Split-wide utterance index and in-utterance position of every frame of modality m."""
    utt, pos, u0 = [], [], 0
    for b, _ in passes:
        lengths = b.lengths(m)
        for s, n in enumerate(lengths.tolist()):
            utt += [u0 + s] * n
            pos += list(range(n))
        u0 += b.num_utterances
    return np.array(utt, np.int64), np.array(pos, np.int64)


def truth_roles_of_split(tiny, m):
    """Role of every frame of the split, from the truth file's spans (not burst_frame_roles)."""
    c, truth = tiny["corpus"], tiny["truth"]
    out = []
    for d in tiny["ds"].indices:
        lo, hi = c.dialogue_utterances(int(d))
        for u in range(lo, hi):
            n = int(c.offsets[m][u + 1] - c.offsets[m][u])
            roles = np.zeros(n, np.int64)
            for (a, b), r in zip(truth[f"burst_spans_{m}"][u], truth[f"burst_roles_{m}"][u]):
                if r:
                    roles[a:b] = r
            out.append(roles)
    return np.concatenate(out)


def close(a, b, bound):
    assert a is not None and b is not None and abs(a - b) <= bound, (a, b, bound)


# ----------------------------------------------------------------------------- summary

def test_summary_metrics_are_those_of_the_split(tiny):
    labels, preds, _ = direct_preds(tiny["passes"])
    s = tiny["rep"]["summary"]
    ref = evaluate_predictions(labels, preds, s["label_names"])
    m = s["metrics"]
    assert m["accuracy"] == ref["accuracy"] and m["weighted_f1"] == ref["weighted_f1"]
    assert m["per_class_f1"] == ref["per_class_f1"] and m["confusion_matrix"] == ref["confusion_matrix"]
    assert s["utterances"] == len(labels) and s["labelled"] == int((labels >= 0).sum())
    assert s["dialogues"] == len(tiny["ds"]) and s["split"] == "test" and s["modalities"] == "tav"
    assert s["changed_settings"]["d_model"] == [64, 16]
    with open(os.path.join(tiny["run"], "metrics.json")) as fh:
        assert s["stored_test"] == json.load(fh)["test"]


# ----------------------------------------------------------------------------- gates

@pytest.mark.parametrize("m", ["t", "a", "v"])
def test_gate_numbers(tiny, m):
    passes, g = tiny["passes"], tiny["rep"]["gates"]["modalities"][m]
    alpha = cat([o.gates[m].float() for _, o in passes]).astype(np.float64)     # [F, channels]
    # The report's per-frame gate is the float32 mean over channels (collect.FrameRecord.gate).
    gate = cat([o.gates[m].float().mean(1) for _, o in passes]).astype(np.float64)
    inten = cat([b.intensity[m] for b, _ in passes]).astype(np.float64)
    window = cat([o.hotspot_mask[m].float() > 0.5 for _, o in passes])
    utt, _ = frame_utterance(passes, m)
    n = gate.size
    b64 = rel_bound(F64, n) * np.abs(gate).max()
    assert g["frames"] == n and g["channels"] == alpha.shape[1]
    close(g["mean"], gate.mean(), b64)
    close(g["std"], gate.std(), b64)
    for key, q in (("p05", 0.05), ("p50", 0.5), ("p95", 0.95)):
        close(g[key], np.quantile(gate, q), b64)
    counts, _ = np.histogram(alpha.reshape(-1), bins=25, range=(0, 1))
    assert g["histogram_all_channels"]["counts"] == counts.tolist()
    # Correlation with the corpus' intensity and its utterance-bootstrap interval.
    kappa = (np.linalg.norm(gate) * np.linalg.norm(inten)) / (np.linalg.norm(gate - gate.mean())
                                                               * np.linalg.norm(inten - inten.mean()))
    bound_r = rel_bound(F64, n) * kappa
    assert g["intensity_source"] == "corpus intensity"
    close(g["correlation"]["r"], np.corrcoef(gate, inten)[0, 1], bound_r)
    weights = stats.bootstrap_weights(len(np.unique(utt)), stats.BOOTSTRAP_REPLICATES, 0)
    reps = materialised_replicates(lambda a, b: np.corrcoef(a, b)[0, 1], (gate, inten), utt, weights)
    lo, hi = np.quantile(reps[np.isfinite(reps)], [0.025, 0.975])
    close(g["correlation"]["ci"][0], lo, bound_r)
    close(g["correlation"]["ci"][1], hi, bound_r)
    # Inside / outside the model's windows and the generator's bursts.
    close(g["windows"]["inside"], gate[window].mean(), b64)
    close(g["windows"]["outside"], gate[~window].mean(), b64)
    roles = truth_roles_of_split(tiny, m)
    hot = roles > 0
    t = g["truth"]
    close(t["gate"]["inside"], gate[hot].mean(), b64)
    close(t["gate"]["outside"], gate[~hot].mean(), b64)
    close(t["gate"]["difference"], gate[hot].mean() - gate[~hot].mean(), 2 * b64)
    assert t["windows_vs_bursts"]["precision"] == (window & hot).sum() / window.sum()
    assert t["windows_vs_bursts"]["recall"] == (window & hot).sum() / hot.sum()
    ev = roles == ROLE_EVIDENCE
    assert t["windows_vs_evidence"]["recall"] == (window & ev).sum() / ev.sum()
    assert t["burst_share"] == hot.mean()
    # The verdict is the rule applied to the burst comparison.
    d, ci = t["gate"]["difference"], t["gate"]["ci"]
    want = ("concentrated" if ci[0] > 0 and d >= GATE_DIFF_MIN else
            "inverted" if ci[1] < 0 and d <= -GATE_DIFF_MIN else "flat")
    assert g["verdict"] == want and g["verdict_against"].startswith("the generator's bursts")


def test_verdict_rule():
    assert verdict({"difference": 0.2, "ci": [0.1, 0.3]}) == "concentrated"
    assert verdict({"difference": 0.2, "ci": [-0.01, 0.4]}) == "flat"        # the interval holds 0
    assert verdict({"difference": 0.01, "ci": [0.005, 0.02]}) == "flat"      # real but too small to matter
    assert verdict({"difference": -0.3, "ci": [-0.4, -0.2]}) == "inverted"
    assert verdict({"difference": None, "ci": None}) is None


# ----------------------------------------------------------------------------- routing

def test_one_expert_per_pair_is_said_not_drawn(tiny):
    r = tiny["rep"]["routing"]
    assert r["one_expert"] and r["pairs"] == {} and "one expert aligner per modality pair" in r["note"]
    with open(os.path.join(tiny["run"], "history.json")) as fh:
        history = json.load(fh)
    lb = r["load_balance"]
    assert lb["train_lb"] == [h["train_lb"] for h in history] and lb["epochs"] == [1, 2]
    assert lb["dev_routing_entropy"]["a->t"] == [h["dev_routing_entropy"]["a->t"] for h in history]


def test_routing_numbers_with_routed_experts(tiny):
    torch.manual_seed(seed_for(21))
    model = HotspotERC(tiny["model"].dims, 6, d_model=16, num_heads=2, classifier_hidden=16, num_experts=3, top_k=2)
    col = collect(model, tiny["ds"], "cpu", tiny["rep"]["summary"]["label_names"], BATCH)
    got = routing_section(col, [], seed=0)
    passes = forward(model, tiny["ds"])
    labels = cat([b.labels for b, _ in passes])
    speaker = cat([b.speaker for b, _ in passes])
    turn = np.concatenate([np.arange(n) for n in np.bincount(col.dialogue)])
    bucket = np.array([sum(t >= lo for lo in TURN_BOUNDS) - 1 for t in turn])
    for pair, p in got["pairs"].items():
        src, tgt = pair.split("->")
        experts = cat([o.routing[pair].experts for _, o in passes])
        gates = cat([o.routing[pair].gates.float() for _, o in passes]).astype(np.float64)
        valid = cat([(o.segments[src].lengths > 0) & (o.segments[tgt].lengths > 0) for _, o in passes])
        assert p["utterances"] == valid.sum()
        for name, groups, size in (("by_class", labels, 6), ("by_speaker", speaker, int(speaker[valid].max()) + 1),
                                   ("by_turn", bucket, len(TURN_BOUNDS))):
            table = np.zeros((size, 3))
            for u in np.nonzero(valid & (groups >= 0))[0]:
                for e, w in zip(experts[u], gates[u]):
                    table[groups[u], e] += w
            totals = table.sum(1, keepdims=True)
            want = np.divide(table, totals, out=np.zeros_like(table), where=totals > 0)
            np.testing.assert_allclose(p[name]["shares"], want, rtol=0, atol=rel_bound(F64, 2 * len(labels)))
        top = experts[np.arange(len(experts)), gates.argmax(1)]
        lab = valid & (labels >= 0)
        ref = mutual_info_score(labels[lab], top[lab]) / math.log(2)
        close(p["mi"]["class"]["mi_bits"], ref, rel_bound(F64, 18) * math.log2(max(lab.sum(), 2)))
        perm = np.random.default_rng(0)
        null = [mutual_info_score(perm.permutation(labels[lab]), top[lab]) / math.log(2) for _ in range(stats.SHUFFLES)]
        close(p["mi"]["class"]["shuffled_mean"], float(np.mean(null)), rel_bound(F64, 18 * stats.SHUFFLES) * 8)
        assert p["mi"]["class"]["p_value"] == (1 + sum(v >= ref - 1e-12 for v in null)) / (1 + stats.SHUFFLES)


# ----------------------------------------------------------------------------- alignment

def test_alignment_numbers(tiny):
    passes, model = tiny["passes"], tiny["model"]
    a = tiny["rep"]["alignment"]
    roles = {m: truth_roles_of_split(tiny, m) for m in "tav"}
    starts = {m: 0 for m in "tav"}
    sums = {p: {"win": [], "uni": [], "matched": [], "mu": [], "distr": [], "du": []} for p in a["pairs"]}
    worst_len = 1
    for b, o in passes:
        for pair, (q, k, _, cu_k) in o.attention_qk.items():
            src, tgt = pair.split("->")
            cu_t, cu_s = o.segments[tgt].cu_seqlens, o.segments[src].cu_seqlens
            kk = o.peaks[tgt].shape[1]
            for s in range(b.num_utterances):
                n_src = int(cu_k[s + 1] - cu_k[s])
                if n_src == 0 or int(cu_t[s + 1] - cu_t[s]) == 0:
                    continue
                for j in range(kk):
                    peak = int(o.peaks[tgt][s, j])
                    if peak < 0:
                        continue
                    keys = k[int(cu_k[s]):int(cu_k[s + 1])].double()                       # [W, H, Dh]
                    logits = torch.einsum("hd,whd->hw", q[s * kk + j].double(), keys) / math.sqrt(q.shape[-1])
                    p = torch.softmax(logits, -1).mean(0).numpy()
                    worst_len = max(worst_len, n_src)
                    win = o.hotspot_mask[src][int(cu_s[s]):int(cu_s[s + 1])].numpy() > 0.5
                    acc = sums[pair]
                    acc["win"].append(p[win].sum())
                    acc["uni"].append(win.mean())
                    f_src = starts[src] + int(cu_s[s])
                    r_src = roles[src][f_src:f_src + n_src]
                    if roles[tgt][starts[tgt] + peak] != ROLE_EVIDENCE:
                        continue
                    for key, uk, role in (("matched", "mu", ROLE_EVIDENCE), ("distr", "du", ROLE_DECOY)):
                        if (r_src == role).any():
                            acc[key].append(p[r_src == role].sum())
                            acc[uk].append((r_src == role).mean())
        for m in "tav":
            starts[m] += int(b.lengths(m).sum())
    bound = rel_bound(F32, worst_len + q.shape[-1])  # float32 scores and softmax in the report
    for pair, acc in sums.items():
        got = a["pairs"][pair]
        assert got["windows"]["queries"] == len(acc["win"])
        close(got["windows"]["mass"], np.mean(acc["win"]), bound)
        close(got["windows"]["uniform"], np.mean(acc["uni"]), rel_bound(F64, len(acc["uni"])))
        t = got["truth"]
        assert t["matched"]["queries"] == len(acc["matched"]) and t["distractors"]["queries"] == len(acc["distr"])
        if acc["matched"]:
            close(t["matched"]["mass"], np.mean(acc["matched"]), bound)
            close(t["matched"]["lift"], np.mean(acc["matched"]) / np.mean(acc["mu"]), bound / np.mean(acc["mu"]))
        if acc["distr"]:
            close(t["distractors"]["mass"], np.mean(acc["distr"]), bound)
        else:
            assert t["distractors"]["mass"] is None  # no decoy in the source: nothing to compare, no NaN


# ----------------------------------------------------------------------------- graph

def _zeroed(model, ids):
    z = copy.deepcopy(model)
    with torch.no_grad():
        for conv in z.graph.gnn:
            conv.weight[ids] = 0.0
    return z


def test_graph_variants_equal_zeroed_relation_weights(tiny):
    g, model = tiny["rep"]["graph"], tiny["model"]
    names = model.graph.relation_names
    families = {"no_temporal": [i for i, n in enumerate(names) if ":past" in n or ":future" in n],
                "no_cross_modal": [i for i, n in enumerate(names) if ":" not in n],
                "no_same_speaker": [i for i, n in enumerate(names) if n.endswith(":same")],
                "no_other_speaker": [i for i, n in enumerate(names) if n.endswith(":other")]}
    labels, full_preds, _ = direct_preds(tiny["passes"])
    dia = np.concatenate([np.full(n, i) for i, n in enumerate(np.bincount(
        np.repeat(np.arange(len(tiny["ds"])), [tiny["ds"].num_utterances(i) for i in range(len(tiny["ds"]))])))])
    dia_len = np.bincount(dia)[dia]
    lengths = np.sort(np.bincount(dia))
    assert g["buckets"] == [list(b) for b in stats.length_buckets(lengths)]
    types = np.concatenate([model.graph.build_graph(b.dialogue, b.speaker, b.present()).edge_type.numpy()
                            for b, _ in tiny["passes"]])
    assert g["total_edges"] == types.size
    assert g["full"]["weighted_f1"] == weighted_f1(labels, full_preds, 6)
    for name, ids in families.items():
        v = g["variants"][name]
        assert v["edges_removed"] == int(np.isin(types, ids).sum())
        _, preds, _ = direct_preds(forward(_zeroed(model, ids), tiny["ds"], inspect=False))
        assert v["weighted_f1"] == weighted_f1(labels, preds, 6), name
        for (lo, hi), got in zip(g["buckets"], v["by_length"]):
            sel = (dia_len >= lo) & (dia_len <= hi)
            assert got == weighted_f1(labels[sel], preds[sel], 6)
        assert v["delta"] == v["weighted_f1"] - g["full"]["weighted_f1"]


def test_graph_ablation_leaves_the_model_as_it_was(tiny):
    model = copy.deepcopy(tiny["model"])
    col = collect(model, tiny["ds"], "cpu", tiny["rep"]["summary"]["label_names"], BATCH)
    options = dict(model.graph.edge_options)
    before = direct_preds(forward(model, tiny["ds"], inspect=False))[2]
    graph_section(model, col, tiny["ds"], "cpu", BATCH, "speaker")
    assert model.graph.edge_options == options and "build_graph" not in vars(model.graph)
    np.testing.assert_array_equal(direct_preds(forward(model, tiny["ds"], inspect=False))[2], before)


# ----------------------------------------------------------------------------- robustness

def _without(batch, m, hide):
    """``batch`` with modality m emptied in the utterances marked by ``hide`` [S]."""
    lengths = batch.lengths(m)
    keep = torch.repeat_interleave(~hide, lengths)
    new_len = torch.where(hide, 0, lengths)
    seg = Segments.from_lengths(new_len.tolist())
    return type(batch)(**{**batch.__dict__, "features": {**batch.features, m: batch.features[m][keep]},
                          "cu_seqlens": {**batch.cu_seqlens, m: seg.cu_seqlens},
                          "segments": {**batch.segments, m: seg},
                          "intensity": {**batch.intensity, m: batch.intensity[m][keep]}})


@torch.no_grad()
def _preds_on(model, batches):
    model.eval()
    return np.concatenate([model(b).logits.argmax(-1).numpy() for b in batches])


def _dialogue_sizes(ds, batch):
    return [ds.num_utterances(i) for i in batch]


def test_missing_modality_and_noise_numbers(tiny):
    rob, model, ds = tiny["rep"]["robustness"], tiny["model"], tiny["ds"]
    labels = direct_preds(tiny["passes"])[0]
    order = [list(range(i, min(i + BATCH, len(ds)))) for i in range(0, len(ds), BATCH)]
    assert rob["training_modality_dropout"] == 0.0 and rob["missing"]["a"][0] == rob["full"]
    for m, share in (("a", 1.0), ("t", 0.5), ("v", 0.25)):
        batches = []
        for (b, _), items in zip(tiny["passes"], order):
            draws = [np.random.default_rng((0, i)).random(ds.num_utterances(i)) < share for i in items]
            hide = torch.from_numpy(np.concatenate(draws)) & (b.lengths(m) > 0)
            batches.append(_without(b, m, hide))
        want = weighted_f1(labels, _preds_on(model, batches), 6)
        assert rob["missing"][m][rob["shares"].index(share)] == want, (m, share)
    # Noise: level x the channel's std over the split, drawn per dialogue in modality order.
    c = ds.corpus
    std = {}
    for m in "tav":
        frames = np.concatenate([np.asarray(c.dialogue_frames(int(d), m), np.float64) for d in ds.indices])
        std[m] = frames.std(0).astype(np.float32)
    level = rob["noise_levels"][1]
    batches = []
    for (b, _), items in zip(tiny["passes"], order):
        feats = {}
        for m in "tav":
            parts = []
            for i in items:
                x = ds[i].features[m]
                parts.append(x)
            feats[m] = parts
        for j, i in enumerate(items):
            rng = np.random.default_rng((0, i))
            for m in "tav":
                x = feats[m][j]
                feats[m][j] = x + torch.from_numpy(rng.standard_normal(tuple(x.shape)).astype(np.float32)
                                                   * (level * std[m]))
        batches.append(type(b)(**{**b.__dict__, "features": {m: torch.cat(v) for m, v in feats.items()}}))
    assert rob["noise"][1] == weighted_f1(labels, _preds_on(model, batches), 6)


# ----------------------------------------------------------------------------- cost, dialogues, page

def test_cost_numbers(tiny):
    m = tiny["rep"]["cost"]["measured"]
    first, _ = tiny["passes"][0]
    assert m["overhead"] == m["moa_ms"] / m["plain_ms"] and m["moa_ms"] > 0 and m["plain_ms"] > 0
    assert m["frames"] == {k: int(v.shape[0]) for k, v in first.features.items()}
    assert m["utterances"] == first.num_utterances and (m["num_experts"], m["top_k"]) == (1, 1)
    routed = m["routed"]  # the run has one expert per pair: a routed block is timed beside it
    assert (routed["num_experts"], routed["top_k"]) == (4, 2) and routed["overhead"] == routed["ms"] / m["plain_ms"]
    with open(os.path.join(tiny["run"], "history.json")) as fh:
        secs = sorted(h["seconds"] for h in json.load(fh))
    assert tiny["rep"]["cost"]["run_epoch_seconds"] == (secs[0] + secs[1]) / 2


def test_dialogue_view_entries(tiny):
    v, passes = tiny["rep"]["dialogues"], tiny["passes"]
    labels, preds, probs = direct_preds(passes)
    names = tiny["rep"]["summary"]["label_names"]
    assert v["shown"] == v["total"] == len(tiny["ds"]) and not v["sampled"] and v["has_truth"]
    utts = [u for d in v["dialogues"] for u in d["utterances"]]
    ids = [u for b, _ in passes for u in b.utterance_ids]
    assert [u["id"] for u in utts] == ids
    score = {m: cat([o.scores[m] for _, o in passes]) for m in "tav"}
    gate = {m: cat([o.gates[m].float().mean(1) for _, o in passes]) for m in "tav"}
    starts = {m: 0 for m in "tav"}
    for k, u in enumerate(utts):
        assert u["true"] == names[labels[k]] and u["pred"] == names[preds[k]]
        assert abs(u["confidence"] - probs[k].max()) <= 5e-5  # rounded to 4 decimals
        for m in "tav":
            md = u["modalities"][m]
            n = len(md["score"])
            np.testing.assert_allclose(md["score"], score[m][starts[m]:starts[m] + n], rtol=0, atol=5e-5 + 1e-6)
            np.testing.assert_allclose(md["gate"], gate[m][starts[m]:starts[m] + n], rtol=0, atol=5e-5 + 1e-6)
            assert md["truth"] == truth_roles_of_split(tiny, m)[starts[m]:starts[m] + n].tolist()
            starts[m] += n
    assert starts == {m: sum(int(b.lengths(m).sum()) for b, _ in passes) for m in "tav"}
    # The neighbours of the first utterance: the sources of its in-edges, with relation names.
    b, _ = passes[0]
    g = tiny["model"].graph.build_graph(b.dialogue, b.speaker, b.present())
    s = b.num_utterances
    dst = g.edge_index[1] % s == 0
    want = {}
    for src, mod_s, mod_d, rel in zip((g.edge_index[0][dst] % s).tolist(), (g.edge_index[0][dst] // s).tolist(),
                                      (g.edge_index[1][dst] // s).tolist(), g.edge_type[dst].tolist()):
        want.setdefault(src + 1, set()).add(f"{'tav'[mod_s]}→{'tav'[mod_d]} {g.relation_names[rel]}")
    assert {n["turn"]: set(n["relations"]) for n in utts[0]["neighbours"]} == want
    # A larger split is sampled, and says so.
    col = collect(tiny["model"], tiny["ds"], "cpu", names, BATCH)
    small = dialogue_view(col, tiny["corpus"], None, max_dialogues=1, seed=seed_for(5))
    pick = np.random.default_rng(seed_for(5)).choice(len(tiny["ds"]), 1, replace=False)
    assert small["shown"] == 1 and small["sampled"] and small["dialogues"][0]["index"] == int(pick[0])


def test_page_holds_every_section_and_the_same_data(tiny):
    with open(os.path.join(tiny["run"], "report.html"), encoding="utf-8") as fh:
        page = fh.read()
    for sid in ("summary", "gates", "routing", "alignment", "graph", "robustness", "cost", "dialogues"):
        assert f'<section id="{sid}">' in page
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "") and "https://" not in page
    data = page.split('<script type="application/json" id="report-data">', 1)[1].split("</script>", 1)[0]
    assert json.loads(data)["dialogues"] == tiny["rep"]["dialogues"]


# ----------------------------------------------------------------------------- other models

@pytest.mark.parametrize("options, expect", [
    ({"hgf": False}, {"gates": "HGF is off"}),
    ({"moa": False}, {"routing": "MoA is off", "alignment": "MoA is off"}),
    ({"graph": False}, {"graph": "the graph is off"}),
    ({"moa_keys": "hotspots"}, {"alignment": "hotspot-window slots"}),
    ({"hotspot_source": "learned"}, {}),
    ({"graph_scheme": "cogmen", "num_speakers": 2}, {}),
    ({"num_experts": 3, "top_k": 2, "shared_expert": True}, {}),
    ({"moa_queries": "frames", "moa_input": "encoder"}, {}),
])
def test_every_model_variant_gets_a_whole_report(tiny, options, expect):
    """Untrained variants (the report reads any model): every section is there, says why it is
    empty where the model lacks its branch, and the JSON holds no NaN."""
    run = load_run(tiny["run"])
    cfg = copy.deepcopy(run["cfg"])
    for k, v in options.items():
        setattr(cfg.model, k, v)
    torch.manual_seed(seed_for(41))
    run.update(cfg=cfg, model=HotspotERC(run["model"].dims, 6, cfg.model.replace()), config=cfg.to_dict())
    from hotspot_erc.inspect.html import page
    from hotspot_erc.inspect.report import build_report

    rep = build_report(run, "test", batch_size=BATCH, max_dialogues=2)
    rep.update(written="now", version="test", json_name="r.json")
    json.dumps(rep, allow_nan=False)
    html = page(rep)
    for section, words in expect.items():
        assert words in json.dumps(rep[section]), section
    for sid in ("summary", "gates", "routing", "alignment", "graph", "robustness", "cost", "dialogues"):
        assert f'<section id="{sid}">' in html
    if options.get("graph") is not False:
        assert set(rep["graph"]["variants"]) >= {"no_cross_modal", "no_temporal"}
    if options.get("num_experts", 1) > 1:
        assert set(rep["routing"]["pairs"]) == {"a->t", "v->t", "t->a", "v->a", "t->v", "a->v"}
