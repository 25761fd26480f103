"""The cross-utterance alignment objective (hotspot_erc.nn.align_objective) and its wiring."""
import math

import pytest
import torch
from conftest import seed_for
from tolerance import rel_bound

from hotspot_erc.nn.align_objective import alignment_contrast, padded_rows
from hotspot_erc.nn.config import ModelConfig
from hotspot_erc.nn.moa import MixtureOfAligners
from hotspot_erc.nn.routing import topk_masked_softmax
from hotspot_erc.segments import segment_mean


def _brute(q, k, q_mask, k_mask, scale, bias=None, magnitude=False):
    """The docstring formula, one (head, s, u) at a time, on padded tensors. With ``magnitude``,
    also the mean of |log Σ_u exp(score_u)| + |score_s|: what the rounding of each term multiplies
    (a term is a difference of the two and may cancel)."""
    s_count, _, heads = q.shape[:3]
    total, count, mag = 0.0, 0, 0.0
    for h in range(heads):
        for s in range(s_count):
            rows = [r for r in range(q.shape[1]) if q_mask[s, r]]
            if not rows or not k_mask[s].any():
                continue
            scores = []
            for u in range(s_count):
                terms = []
                for r in rows:
                    kh = k[u] if k.dim() == 3 else k[u, :, h]
                    f_terms = [float(q[s, r, h] @ kh[f]) * scale for f in range(k.shape[1]) if k_mask[u, f]]
                    if f_terms:
                        b = 0.0 if bias is None else float(bias[s, r, h])
                        terms.append(float(torch.logsumexp(torch.tensor(f_terms, dtype=torch.float64), 0)) + b)
                scores.append(torch.logsumexp(torch.tensor(terms, dtype=torch.float64), 0) if terms
                              else torch.tensor(float("-inf"), dtype=torch.float64))
            scores = torch.stack(scores)
            total += float(-(scores[s] - torch.logsumexp(scores, 0)))
            mag += float(torch.logsumexp(scores, 0).abs() + scores[s].abs())
            count += 1
    return (total / max(count, 1), mag / max(count, 1)) if magnitude else total / max(count, 1)


def _k(q, k):
    """The products behind one utterance pair's score: query rows x source frames x head dim."""
    return q.shape[1] * k.shape[1] * q.shape[-1]


def _case(s_count=3, lq=3, lk=4, heads=2, dh=3, shared=False, seed=0):
    gen = torch.Generator().manual_seed(seed_for(seed))
    q = torch.randn(s_count, lq, heads, dh, generator=gen, dtype=torch.float64)
    k = torch.randn(*((s_count, lk, dh) if shared else (s_count, lk, heads, dh)), generator=gen, dtype=torch.float64)
    q_mask = torch.rand(s_count, lq, generator=gen) < 0.7
    k_mask = torch.rand(s_count, lk, generator=gen) < 0.7
    return q, q_mask, k, k_mask


@pytest.mark.parametrize("shared,bias", [(False, False), (True, False), (True, True)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_brute_force(shared, bias, seed):
    q, q_mask, k, k_mask = _case(shared=shared, seed=seed)
    q_mask[0] = False  # an utterance without query rows (no peak) is left out
    k_mask[1] = False  # one without source frames (a missing modality) too
    b = torch.randn(q.shape[:3], dtype=torch.float64) if bias else None
    got = alignment_contrast(q, q_mask, k, k_mask, 0.5, row_bias=b)
    assert torch.isfinite(got)
    want, mag = _brute(q, k, q_mask, k_mask, 0.5, b, magnitude=True)
    assert float(got) == pytest.approx(want, rel=0, abs=rel_bound(torch.float64, _k(q, k)) * mag)


def test_padded_rows():
    idx, mask = padded_rows(torch.tensor([0, 2, 2, 5]), 3)
    assert mask.tolist() == [[True, True, False], [False, False, False], [True, True, True]]
    assert idx[mask].tolist() == [0, 1, 2, 3, 4]
    assert int(idx.min()) >= 0 and int(idx.max()) <= 4


def test_nothing_to_match_is_zero_with_finite_grad():
    q, q_mask, k, k_mask = _case()
    q.requires_grad_(True)
    k.requires_grad_(True)
    loss = alignment_contrast(q, q_mask, k, torch.zeros_like(k_mask), 1.0)
    loss.backward()
    assert float(loss.detach()) == 0.0 and torch.isfinite(q.grad).all() and torch.isfinite(k.grad).all()


def test_gradcheck_with_empty_utterances():
    q, q_mask, k, k_mask = _case(shared=True, seed=3)
    q_mask[2] = False
    k_mask[0] = False
    q.requires_grad_(True)
    k.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: alignment_contrast(a, q_mask, b, k_mask, 0.7), (q, k))


def test_shared_content_scores_lower_than_shuffled():
    """Where each utterance's frames hold its own query (plus noise), the loss is far below
    log S; with the frame streams shuffled between utterances it is far above."""
    gen = torch.Generator().manual_seed(seed_for(1))
    s_count, heads, dh, frames = 16, 1, 8, 5
    q = torch.randn(s_count, 1, heads, dh, generator=gen)
    # every query of norm 2√dh: a short query, which some draws give, would match others' frames too
    q = q * (2 * dh ** 0.5 / q.norm(dim=-1, keepdim=True))
    k = torch.randn(s_count, frames, heads, dh, generator=gen)
    k[:, 2] = q[:, 0]  # frame 2 of each utterance carries its content
    ones_q, ones_k = torch.ones(s_count, 1, dtype=torch.bool), torch.ones(s_count, frames, dtype=torch.bool)
    matched = alignment_contrast(q, ones_q, k, ones_k, 1.0)
    shuffled = alignment_contrast(q, ones_q, k.roll(1, 0), ones_k, 1.0)
    assert float(matched) < 0.5 * math.log(s_count) < float(shuffled)


@pytest.mark.parametrize("group", [2, 3, 5])
def test_groups_match_brute_force_per_group(group):
    q, q_mask, k, k_mask = _case(s_count=5, shared=True, seed=4)
    got = alignment_contrast(q, q_mask, k, k_mask, 0.5, group=group)
    total, count, mag = 0.0, 0, 0.0
    for start in range(0, 5, group):
        sl = slice(start, start + group)
        n = int((q_mask[sl].any(1) & k_mask[sl].any(1)).sum()) * q.shape[2]
        value, m = _brute(q[sl], k[sl], q_mask[sl], k_mask[sl], 0.5, magnitude=True)
        total, mag, count = total + value * n, mag + m * n, count + n
    assert float(got) == pytest.approx(total / count, rel=0, abs=rel_bound(torch.float64, _k(q, k)) * mag / count)
    with pytest.raises(ValueError, match="group"):
        alignment_contrast(q, q_mask, k, k_mask, 0.5, group=1)


def test_bad_shapes_raise():
    q, q_mask, k, k_mask = _case()
    with pytest.raises(ValueError, match="same H and D"):
        alignment_contrast(q, q_mask, k[..., :1], k_mask, 1.0)
    with pytest.raises(ValueError, match="same S"):
        alignment_contrast(q, q_mask, k[:1], k_mask[:1], 1.0)


# (experts, top_k, shared, heads): aligners > heads takes the input-space path, else per-expert keys
@pytest.mark.parametrize("n_exp,top_k,shared,heads", [(3, 2, False, 2), (3, 2, True, 2), (3, 2, True, 4),
                                                      (1, 1, False, 2), (2, 1, False, 4)])
def test_moa_scores_with_the_query_utterances_routing(n_exp, top_k, shared, heads):
    """MoA's objective equals a brute force in which utterance s's rows meet utterance u's frames
    through keys made with s's expert mix (PairAligner's own computation), never u's."""
    torch.manual_seed(seed_for(0))
    d, s_count = 8, 4
    moa = MixtureOfAligners(d, modalities=("t", "a"), num_experts=n_exp, top_k=top_k, num_heads=heads,
                            shared_expert=shared).double()
    lens = {"t": [3, 2, 4, 1], "a": [5, 3, 0, 4]}
    feats = {m: torch.randn(sum(v), d, dtype=torch.float64) for m, v in lens.items()}
    cu = {m: torch.tensor([0] + torch.tensor(v).cumsum(0).tolist()) for m, v in lens.items()}
    pads = {m: padded_rows(cu[m], max(lens[m])) for m in lens}
    out = moa(feats, cu, contrast=(pads, pads, None))
    want_g = []
    # groups of 2: the same brute force restricted to utterances {0, 1} and {2, 3}
    halves = moa(feats, cu, contrast=(pads, pads, 2))
    want, scale, scale_g = [], [], []
    for s, t in moa.pairs:
        al = moa.aligners[f"{s}_{t}"]
        experts, gates, _ = topk_masked_softmax(al.router(segment_mean(feats[t], cu[t])), top_k)
        q = al.query(feats[t]).view(-1, heads, d // heads)
        qi, qm = pads[t]
        ki, km = pads[s]
        q_pad = q[qi]
        # keys of every source frame under every target utterance's routing: [S (routing), S, L_k, H, Dh]
        keys = []
        for r in range(s_count):
            w = sum(gates[r, j] * al.expert_weight[experts[r, j]] for j in range(top_k))
            b = sum(gates[r, j] * al.expert_bias[experts[r, j]] for j in range(top_k))
            if shared:
                w, b = w + al.shared_weight[0], b + al.shared_bias[0]
            keys.append((feats[s] @ w + b)[:, :d].view(-1, heads, d // heads)[ki])
        total, count, g_total, g_count, mag, g_mag = 0.0, 0, 0.0, 0, 0.0, 0.0
        for h in range(heads):
            for r in range(s_count):
                if not qm[r].any() or not km[r].any():
                    continue
                scores = []
                for u in range(s_count):
                    sc = torch.einsum("lc,fc->lf", q_pad[r, :, h], keys[r][u, :, h]) * (d // heads) ** -0.5
                    sc = sc.masked_fill(~(qm[r][:, None] & km[u][None, :]), float("-inf"))
                    scores.append(torch.logsumexp(sc.reshape(-1), 0))
                scores = torch.stack(scores).detach()
                total += float(torch.logsumexp(scores, 0) - scores[r])
                mag += float(torch.logsumexp(scores, 0).abs() + scores[r].abs())  # each term may cancel
                count += 1
                mine = scores[(r // 2) * 2:(r // 2) * 2 + 2]
                g_total += float(torch.logsumexp(mine, 0) - mine[r % 2])
                g_mag += float(torch.logsumexp(mine, 0).abs() + mine[r % 2].abs())
                g_count += 1
        want.append(total / count)
        want_g.append(g_total / g_count)
        scale.append(mag / count)
        scale_g.append(g_mag / g_count)
    # keys are d-long products of the frames: rows x frames x d products behind one pair's score
    k = max(lens["t"]) * max(lens["a"]) * d
    assert float(out.align_loss.detach()) == pytest.approx(sum(want) / len(want), rel=0,
                                                  abs=rel_bound(torch.float64, k) * sum(scale) / len(scale))
    assert float(halves.align_loss.detach()) == pytest.approx(sum(want_g) / len(want_g), rel=0,
                                                     abs=rel_bound(torch.float64, k) * sum(scale_g) / len(scale_g))
    assert moa(feats, cu).align_loss is None


def test_config_rejects_negative_weight():
    with pytest.raises(ValueError, match="align_weight"):
        ModelConfig(align_weight=-1.0).validate()
    with pytest.raises(ValueError, match="align_weight"):
        ModelConfig(align_weight=float("nan")).validate()


@pytest.mark.parametrize("queries,keys", [("peaks", "all"), ("frames", "all"), ("peaks", "hotspots")])
def test_model_returns_align_loss_in_training_only(tmp_path, queries, keys):
    from hotspot_erc.data.dataset import DialogueDataset, collate_dialogues
    from hotspot_erc.data.format import open_corpus
    from hotspot_erc.data.synthetic import generate_synthetic_corpus
    from hotspot_erc.nn.model import HotspotERC

    corpus = open_corpus(generate_synthetic_corpus(tmp_path / "c", num_dialogues=6, seed=0, utterances=(3, 5),
                                                   missing_prob=0.3, frames={"t": (2, 7), "a": (3, 8), "v": (1, 6)}))
    ds = DialogueDataset(corpus, "train")
    batch = collate_dialogues([ds[i] for i in range(min(3, len(ds)))])
    torch.manual_seed(seed_for(0))
    small = dict(d_model=16, num_heads=2, classifier_hidden=16, dropout=0.0, moa_queries=queries, moa_keys=keys)
    model = HotspotERC(corpus.dims, 6, align_weight=0.5, **small)
    model.train()
    out = model(batch)
    assert out.align_loss is not None and out.align_loss.dim() == 0 and torch.isfinite(out.align_loss)
    out.align_loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if n.startswith("moa.") and ".query." in n]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)
    assert not out.attention_qk  # the live q/k are not handed out
    model.eval()
    assert model(batch).align_loss is None
    assert HotspotERC(corpus.dims, 6, align_weight=0.0, **small).train()(batch).align_loss is None


@pytest.mark.parametrize("n_exp,top_k,heads", [(1, 1, 2), (3, 2, 2)])
def test_objective_never_reads_a_device_value(n_exp, top_k, heads):
    """Forward and backward of the objective dispatch no op that would wait for a GPU (the
    padding lengths are host ints; the dense gates are a comparison, not one_hot)."""
    from hotspot_erc.testing import count_fwd_bwd

    torch.manual_seed(seed_for(0))
    moa = MixtureOfAligners(8, modalities=("t", "a"), num_experts=n_exp, top_k=top_k, num_heads=heads)
    lens = {"t": [3, 2, 4, 1], "a": [5, 3, 0, 4]}
    feats = {m: torch.randn(sum(v), 8) for m, v in lens.items()}
    cu = {m: torch.tensor([0] + torch.tensor(v).cumsum(0).tolist()) for m, v in lens.items()}
    pads = {m: padded_rows(cu[m], max(lens[m])) for m in lens}
    loss = lambda o: o.align_loss + sum(v.sum() for v in o.outputs.values())  # noqa: E731
    fwd, bwd = count_fwd_bwd(lambda: moa(feats, cu, contrast=(pads, pads, 2)), loss=loss, inputs=list(moa.parameters()))
    # MoA's own forward may read CPU-only values (its CPU kernels); the objective adds none.
    fwd0, bwd0 = count_fwd_bwd(lambda: moa(feats, cu), loss=lambda o: sum(v.sum() for v in o.outputs.values()),
                               inputs=list(moa.parameters()))
    assert fwd.syncs == fwd0.syncs and bwd.syncs == bwd0.syncs, (fwd.syncs, fwd0.syncs, bwd.syncs, bwd0.syncs)
    assert fwd.total > fwd0.total
