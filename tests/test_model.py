"""HotspotERC end to end on tiny synthetic dialogues: shapes, every ablation switch, missing
modalities, batch-independence, modality dropout, encoder pooling and input errors."""
import dataclasses

import pytest
import torch
from conftest import seed_for
from tolerance import C, assert_close, magnitude, rel_bound, rel_err

from hotspot_erc.data.dataset import DialogueDataset, collate_dialogues
from hotspot_erc.data.format import open_corpus
from hotspot_erc.data.synthetic import generate_synthetic_corpus
from hotspot_erc.nn.encoder import AttentionPool, FrameEncoder
from hotspot_erc.nn.model import HotspotERC, drop_modalities, segment_mean

SMALL = dict(d_model=16, num_heads=2, classifier_hidden=16, dropout=0.0, num_experts=4, top_k=2)  # routed: exercises routing
# The longest reduction behind a logit: the classifier's first layer reads 3 modalities x d_model
# (MoA's vectors) + 3 graph nodes x d_model = 96 features. "Changes the prediction" means logits
# further apart than this rounding bound.
K_LOGITS = 6 * 16


def tiny_corpus(path, n=8, missing=0.0, seed=0):
    return generate_synthetic_corpus(path, num_dialogues=n, seed=seed, utterances=(3, 5), missing_prob=missing,
                                     frames={"t": (2, 7), "a": (3, 8), "v": (1, 6)})


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return open_corpus(tiny_corpus(tmp_path_factory.mktemp("syn") / "c", missing=0.3))


@pytest.fixture(scope="module")
def batch(corpus):
    ds = DialogueDataset(corpus, "train")
    return collate_dialogues([ds[i] for i in range(min(3, len(ds)))])


def _model(corpus, **kw):
    torch.manual_seed(seed_for(0))
    return HotspotERC(corpus.dims, len(corpus.label_names), **{**SMALL, **kw})


@pytest.mark.parametrize("graph_on_aligned", [True, False])
def test_full_model_forward_backward(corpus, batch, graph_on_aligned):
    assert any((batch.lengths(m) == 0).any() for m in "tav"), "the fixture must hold missing modalities"
    model = _model(corpus, graph_on_aligned=graph_on_aligned, num_experts=4, top_k=2)
    out = model(batch)
    S = batch.num_utterances
    assert out.logits.shape == (S, len(corpus.label_names))
    assert torch.isfinite(out.logits).all() and out.lb_loss.dim() == 0 and torch.isfinite(out.lb_loss)
    for m in "tav":
        n = batch.features[m].shape[0]
        assert out.gates[m].shape == (n, 16) and out.hotspot_mask[m].shape == (n,)
    assert set(out.routing) == {f"{a}->{b}" for a in "tav" for b in "tav" if a != b}
    assert out.routing["a->t"].experts.shape == (S, 2)
    assert out.graph_update is not None and 0 < float(out.graph_update) < float("inf")
    (torch.nn.functional.cross_entropy(out.logits, batch.labels.clamp(min=0)) + out.lb_loss).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(torch.isfinite(g).all() for g in grads if g is not None)
    # The graph, MoA and HGF (MoA's queries) receive gradient; the frame encoder only where its
    # pooled vectors reach the classifier (the graph starts from them when not from MoA's).
    reached = ("graph.gnn.0", "moa.", "hgf.t") + (() if graph_on_aligned else ("pool.a", "encoder.v"))
    for name in reached:
        assert any(n.startswith(name) and p.grad.abs().sum() > 0 for n, p in model.named_parameters()), name


ABLATIONS = {
    "no_hgf": dict(hgf=False),
    "no_moa": dict(moa=False),
    "no_graph": dict(graph=False),
    "no_cross_modal_edges": dict(cross_modal_edges=False),
    "no_temporal_edges": dict(temporal_edges=False),
    "scalar_gate": dict(gate="scalar"),
    "hotspots_data": dict(hotspot_source="data"),
    "hotspots_learned": dict(hotspot_source="learned"),  # the ablate variant: gradient through MoA's queries
    "hotspots_learned_encoder_skip": dict(hotspot_source="learned", encoder_skip=True, moa_input="projected"),
    "gated_queries": dict(moa_input="gated"),
    "gated_frame_queries": dict(moa_input="gated", moa_queries="frames"),
    "shared_expert": dict(shared_expert=True),
    "graph_on_encoder": dict(graph_on_aligned=False, graph_scheme="default", window_past=2),  # HGF's vectors reach the classifier
    "hotspots_norm": dict(rule_kind="norm"),
    "experts_1_top1": dict(num_experts=1, top_k=1),
    "experts_3_top1": dict(num_experts=3, top_k=1),
    "text_audio": dict(modalities="ta"),
    "text_only": dict(modalities="t", moa=False),
    "speaker_graph": dict(graph_scheme="speaker"),
    "corect_graph": dict(graph_scheme="corect", window_past=-1, window_future=3),
    "cogmen_graph": dict(graph_scheme="cogmen", window_past=4, window_future=-1, num_speakers=2),
    "cogmen_text_only": dict(graph_scheme="cogmen", modalities="t", moa=False, num_speakers=2),
    "hotspot_alignment": dict(moa_keys="hotspots", hotspot_pool=True, encoder_skip=True, graph_on_aligned=True),
    "hotspot_pool_no_moa": dict(hotspot_pool=True, moa=False, encoder_skip=True),
    "mark_hotspots": dict(mark_hotspots=True),
    "peak_queries": dict(moa_queries="peaks"),
    "peak_queries_projected": dict(moa_queries="peaks", moa_input="projected"),
    "projected_hotspot_keys": dict(moa_input="projected", moa_keys="hotspots"),
    "two_encoder_layers": dict(encoder_layers=2, graph_layers=1),
    "hgf_join_add": dict(hgf_join="add"),
    "gated_queries_gate_bias": dict(moa_input="gated", hgf_gate_bias=3.0),
    "hgf_join_scaled_frames": dict(hgf_join="scaled", moa_queries="frames"),
    "hgf_join_no_hgf": dict(hgf_join="add", hgf=False),
    "no_center": dict(center=False),
}


@pytest.mark.parametrize("name", list(ABLATIONS))
def test_ablation_switches(corpus, batch, name):
    kw = ABLATIONS[name]
    model = _model(corpus, **kw)
    out = model(batch)
    mods = kw.get("modalities", "tav")
    assert out.logits.shape == (batch.num_utterances, 6) and torch.isfinite(out.logits).all()
    graph_nodes = 1 if kw.get("graph_scheme") == "cogmen" else len(mods)  # COGMEN: one node per utterance
    skip = kw.get("encoder_skip", False) and kw.get("moa", True)  # encoder beside MoA vectors
    width = len(mods) * 16 * (1 + int(skip)) + graph_nodes * 16 * int(kw.get("graph", True))
    assert model.classifier[1].in_features == width
    if kw.get("hgf") is False:
        assert out.gates == {} and not hasattr(model, "hgf")
    else:
        g = 1 if kw.get("gate") == "scalar" else 16
        assert all(out.gates[m].shape[1] == g for m in mods)
    if kw.get("moa") is False:
        assert out.routing == {} and float(out.lb_loss) == 0.0 and not hasattr(model, "moa")
    else:
        assert all(r.experts.shape[1] == kw.get("top_k", 2) for r in out.routing.values())
        assert all(r.usage.shape == (kw.get("num_experts", 4),) for r in out.routing.values())
    if kw.get("graph") is False:
        assert not hasattr(model, "graph") and out.graph_update is None
    if "cross_modal_edges" in kw or "temporal_edges" in kw:
        present = torch.stack([batch.lengths(m) > 0 for m in mods])
        g = model.graph.build_graph(batch.dialogue, batch.speaker, present)
        used = {model.relation_names[i] for i in g.edge_type.unique().tolist()}
        cross = {n for n in used if "->" in n}
        assert used and (not cross if "cross_modal_edges" in kw else cross == used)
    out.logits.sum().backward()
    if kw.get("hotspot_source") == "learned":  # the soft windows pass gradient to the scorer
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.scorer.parameters())


def test_hotspot_switch_changes_the_prediction(corpus, batch):
    """HGF off means global content only: the outputs differ from the gated model with the same
    weights wherever HGF's output reaches the classifier: by default MoA's queries are HGF's rows
    at the peaks; with graph_on_aligned=False the graph starts from the encoder over them."""
    for kw in (dict(), dict(graph_on_aligned=False, moa_input="projected")):
        on, off = _model(corpus, **kw).eval(), _model(corpus, hgf=False, **kw).eval()
        off.load_state_dict({k: v for k, v in on.state_dict().items() if not k.startswith("hgf.")})
        assert rel_err(on(batch).logits, off(batch).logits) > rel_bound(torch.float32, K_LOGITS)


@pytest.mark.parametrize("queries", ["peaks", "frames"])
def test_hgf_join_scale(corpus, batch, queries):
    """hgf_join="scaled" starts as "none" (factor 0) and equals "add" at factor 1; HGF receives
    gradient through the join even with the default graph on MoA's vectors."""
    kw = dict(moa_queries=queries, moa_input="projected")  # MoA itself does not read HGF here
    none, add = _model(corpus, hgf_join="none", **kw).eval(), _model(corpus, hgf_join="add", **kw).eval()
    scaled = _model(corpus, hgf_join="scaled", **kw).eval()
    state = none.state_dict()
    add.load_state_dict(state)
    missing, unexpected = scaled.load_state_dict(state, strict=False)
    assert sorted(missing) == [f"hgf_join_scale.{m}" for m in "atv"] and not unexpected
    out = scaled(batch)
    assert torch.equal(out.logits, none(batch).logits)
    assert all(float(out.hgf_join_ratio[m]) == 0.0 for m in "tav") and none(batch).hgf_join_ratio == {}
    assert rel_err(add(batch).logits, none(batch).logits) > rel_bound(torch.float32, K_LOGITS)
    with torch.no_grad():
        for p in scaled.hgf_join_scale.values():
            p.fill_(1.0)
    assert_close(scaled(batch).logits, add(batch).logits, torch.float32, K_LOGITS, what="join factor 1 vs add")
    assert all(float(r) > 0 for r in add(batch).hgf_join_ratio.values())
    add.train()
    add(batch).logits.sum().backward()
    assert all(add.hgf[m].weight.grad.abs().sum() > 0 for m in "tav")
    none.train()
    none(batch).logits.sum().backward()
    assert all(none.hgf[m].weight.grad is None for m in "tav")


def test_hgf_gate_bias_shifts_only_the_initial_bias(corpus, batch):
    base, shifted = _model(corpus, hgf_gate_bias=0.0), _model(corpus, hgf_gate_bias=3.0)
    for name, p in base.state_dict().items():
        q = shifted.state_dict()[name]
        if name.startswith("hgf.") and name.endswith(".bias"):
            assert_close(q, p + 3.0, torch.float32, what=name)  # one addition: one rounding
        else:
            assert torch.equal(q, p), name
    shifted.eval()
    out = shifted(batch)
    assert all(float(out.gates[m].mean()) > 0.9 for m in "tav")
    # without MoA reading HGF's rows the bias is not applied (no_moa and text-only runs keep α ≈ 0.5)
    for kw in (dict(moa=False), dict(moa_input="projected")):
        a, b = _model(corpus, hgf_gate_bias=0.0, **kw), _model(corpus, hgf_gate_bias=3.0, **kw)
        assert all(torch.equal(a.hgf[m].bias, b.hgf[m].bias) for m in "tav")


@pytest.mark.parametrize("kw", [dict(moa=False), dict(modalities="t")], ids=["no_moa", "text_only"])
def test_hgf_join_and_gate_bias_off_without_moa(corpus, batch, kw):
    """Without MoA (switched off, or one modality) neither the join nor the gate bias exists: the
    model and its random stream are those of hgf_join="none", hgf_gate_bias=0."""
    model = _model(corpus, hgf_join="scaled", hgf_gate_bias=5.0, **kw)
    plain = _model(corpus, hgf_join="none", hgf_gate_bias=0.0, **kw)
    assert model.hgf_join == "none" and not hasattr(model, "hgf_join_scale")
    assert model.state_dict().keys() == plain.state_dict().keys()
    assert all(torch.equal(v, plain.state_dict()[k]) for k, v in model.state_dict().items())


def test_hgf_join_zero_scale_with_gated_queries(corpus, batch):
    """With the default gated queries a zero join factor is exactly no join, and the joined rows are
    the query rows: a factor of 1 adds HGF's peak rows, which changes the prediction."""
    none = _model(corpus, hgf_join="none").eval()
    scaled = _model(corpus, hgf_join="scaled").eval()
    scaled.load_state_dict(none.state_dict(), strict=False)
    assert torch.equal(scaled(batch).logits, none(batch).logits)
    with torch.no_grad():
        for p in scaled.hgf_join_scale.values():
            p.fill_(1.0)
    assert rel_err(scaled(batch).logits, none(batch).logits) > rel_bound(torch.float32, K_LOGITS)


def test_utterances_do_not_see_other_dialogues(corpus):
    """Dialogues are independent in a batch (block-diagonal graph, per-utterance attention), so
    splitting a batch (as DDP does) cannot change any utterance's logits."""
    ds = DialogueDataset(corpus, "train")
    model = _model(corpus).eval()
    a, b = ds[0], ds[1]
    both = model(collate_dialogues([a, b])).logits
    alone = torch.cat([model(collate_dialogues([a])).logits, model(collate_dialogues([b])).logits])
    assert_close(both, alone, torch.float32, K_LOGITS, what="batched vs one dialogue at a time")


def test_modality_dropout(corpus, batch):
    mods = ("t", "a", "v")
    gen = torch.Generator().manual_seed(seed_for(0))
    feats, cus, inten = drop_modalities(batch.features, batch.cu_seqlens, batch.intensity, 0.6, mods, gen)
    before = torch.stack([batch.lengths(m) > 0 for m in mods])
    after = torch.stack([cus[m].diff() > 0 for m in mods])
    assert (after <= before).all() and (after < before).any()
    assert (after.any(0) == before.any(0)).all(), "an utterance must keep one of its modalities"
    for m in mods:
        assert feats[m].shape[0] == int(cus[m][-1]) == inten[m].shape[0]
        kept = torch.repeat_interleave(after[mods.index(m)], batch.lengths(m))
        torch.testing.assert_close(feats[m], batch.features[m][kept], rtol=0, atol=0)  # a selection: no arithmetic
    model = _model(corpus, modality_dropout=0.5)
    model.train()
    out = model(batch)
    assert torch.isfinite(out.logits).all()
    model.eval()  # no dropout outside training: every segment is kept
    ev = model(batch)
    assert all(torch.equal(ev.cu_seqlens[m], batch.cu_seqlens[m]) for m in mods)


def test_segment_mean_and_centering(corpus, batch):
    cu = torch.tensor([0, 2, 2, 5])
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    ref = torch.cat([x[:2].mean(0).expand(2, 3), x[2:].mean(0).expand(3, 3)])
    # k = 3: the longest segment; the mean may cancel, so the scale is the mean of magnitudes
    assert_close(segment_mean(x, cu), ref, torch.float64, 3, scale=magnitude(segment_mean, x, cu), what="segment_mean")
    assert torch.autograd.gradcheck(lambda t: segment_mean(t, cu), (x,))
    # Centred projected frames average to zero inside each utterance while β = 1.
    model = _model(corpus)
    m = "a"
    x = model.proj[m](batch.features[m])
    centred = x - model.center_beta[m] * segment_mean(x, batch.cu_seqlens[m])
    # exactly 0 in exact arithmetic; two reductions over the frames of an utterance (the mean that
    # is subtracted, then the mean of the result), each of k = longest utterance terms: c = 2 C.
    cu_m = batch.cu_seqlens[m]
    assert_close(segment_mean(centred, cu_m), torch.zeros_like(centred), torch.float32,
                 int(cu_m.diff().max()), c=2 * C, scale=magnitude(segment_mean, x, cu_m), what="centred mean")


def test_pooling_of_empty_segments_is_zero_with_finite_gradients():
    torch.manual_seed(seed_for(0))
    pool, enc = AttentionPool(8, 2), FrameEncoder(8, 1, 2)
    cu = torch.tensor([0, 3, 3, 4, 4, 9])
    x = torch.randn(9, 8, requires_grad=True)
    y = pool(enc(x, cu), cu)
    assert y.shape == (5, 8)
    assert torch.equal(y[1], torch.zeros(8)) and torch.equal(y[3], torch.zeros(8))
    assert y[[0, 2, 4]].abs().sum(-1).gt(0).all()
    y.sum().backward()
    assert torch.isfinite(x.grad).all()
    # Pooling equals softmax attention of the learned query over each segment's frames.
    h, dh = 2, 4
    k, v = pool.key(x.detach()).view(9, h, dh), pool.value(x.detach()).view(9, h, dh)
    seg = slice(4, 9)
    att = torch.softmax(torch.einsum("hd,nhd->hn", pool.query.detach(), k[seg]) * dh ** -0.5, -1)
    ref = pool.out(torch.einsum("hn,nhd->hd", att, v[seg]).reshape(8))
    # k = 5 keys x head dim 4; the output layer may cancel: scale = the same on magnitudes
    scale = magnitude(lambda w, vs: torch.nn.functional.linear(torch.einsum("hn,nhd->hd", att, vs).reshape(8), w),
                      pool.out.weight.detach(), v[seg].detach())
    assert_close(pool(x.detach(), cu)[4], ref.detach(), torch.float32, 5 * dh, scale=scale, what="attention pool")


def test_encoder_and_pool_gradcheck_float64():
    torch.manual_seed(seed_for(0))
    enc, pool = FrameEncoder(4, 1, 2).double(), AttentionPool(4, 2).double()
    cu = torch.tensor([0, 2, 2, 5])
    x = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: pool(enc(t, cu), cu), (x,))


def test_single_modality_switches_moa_off(corpus, batch, caplog):
    with caplog.at_level("WARNING"):
        model = _model(corpus, modalities="t")
    assert not model.use_moa and not hasattr(model, "moa")
    assert "switched off" in caplog.text
    out = model(batch)
    assert out.logits.shape[0] == batch.labels.shape[0] and not out.routing
    assert torch.isfinite(out.logits).all()


def test_bad_inputs(corpus, batch):
    with pytest.raises(ValueError, match="modalities"):
        _model(corpus, modalities="tx")
    with pytest.raises(ValueError, match="top_k|num_experts|experts"):
        _model(corpus, num_experts=1, top_k=2)(batch)
    with pytest.raises(ValueError, match="no edges"):
        _model(corpus, modalities="t", moa=False, temporal_edges=False)
    model = _model(corpus)
    with pytest.raises(ValueError, match="feature size"):
        model(dataclasses.replace(batch, features={**batch.features, "a": batch.features["a"][:, :5]}))
    with pytest.raises(ValueError, match="lacks"):
        model(dataclasses.replace(batch, features={k: v for k, v in batch.features.items() if k != "v"}))
    with pytest.raises(ValueError, match="intensity"):
        _model(corpus, hotspot_source="data")(dataclasses.replace(batch, intensity=None))
    with pytest.raises(ValueError, match="moa_keys"):
        _model(corpus, moa_keys="frames")
    with pytest.raises(ValueError, match=r"num_speakers must be >= 0"):
        _model(corpus, num_speakers=-1)
    assert _model(corpus, num_speakers=0).num_speakers == 8  # 0 = auto; without a corpus, 8
    with pytest.raises(ValueError, match=r"num_speakers=1"):  # never silently clamped on CPU
        _model(corpus, num_speakers=1)(dataclasses.replace(batch, speaker=torch.ones_like(batch.speaker)))


@pytest.mark.gpu
def test_cpu_and_gpu_agree(corpus, batch):
    model = _model(corpus).eval()
    ref = model(batch).logits
    out = model.to("cuda")(batch.to("cuda")).logits.cpu()
    assert_close(out, ref, "tf32", K_LOGITS, what="CUDA vs CPU")  # CUDA matmuls may round products to TF32


@pytest.mark.gpu
def test_compiles_on_gpu(corpus, batch):
    model = _model(corpus).cuda().eval()
    b = batch.to("cuda")
    ref = model(b).logits
    out = torch.compile(model, dynamic=True)(b).logits
    assert_close(out, ref, "tf32", K_LOGITS, what="compiled vs eager")  # CUDA matmuls may round to TF32


def test_config_is_the_one_source_of_options(corpus):
    import dataclasses as dc

    from hotspot_erc.nn.config import ModelConfig

    cfg = ModelConfig(d_model=16, num_heads=2, classifier_hidden=16, graph_scheme="speaker", soft_temperature=0.5)
    model = HotspotERC(corpus.dims, len(corpus.label_names), cfg, dropout=0.0)
    assert model.config == dc.replace(cfg, dropout=0.0) and model.config is not cfg
    assert model.soft_temperature == 0.5 and model.content_pool == "mean"
    # keywords alone, a dict and from_config give the same model
    kw = dict(d_model=16, num_heads=2, classifier_hidden=16, graph_scheme="speaker", soft_temperature=0.5, dropout=0.0)
    for other in (HotspotERC(corpus.dims, len(corpus.label_names), **kw),
                  HotspotERC(corpus.dims, len(corpus.label_names), model.config.to_dict()),
                  HotspotERC.from_config(model.config, corpus.dims, len(corpus.label_names))):
        assert other.config == model.config
        assert list(other.state_dict()) == list(model.state_dict())
    # every constructor option is a field, with help text
    for f in dc.fields(ModelConfig):
        assert f.metadata["help"], f.name
    assert HotspotERC(corpus.dims, 3, hotspot_source="learned", d_model=16, num_heads=2).content_pool == "attention"
    assert HotspotERC(corpus.dims, 3, content_pool=None, d_model=16, num_heads=2).config.content_pool == "auto"
    assert HotspotERC(corpus.dims, 3, modalities=("t", "a"), d_model=16, num_heads=2).config.modalities == "ta"
    for bad, msg in ((dict(rule_kind="peak"), "rule_kind must be one of"), (dict(d_model=30), "divisible"),
                     (dict(soft_temperature=0.0), "soft_temperature"), (dict(dropout=1.0), "dropout"),
                     (dict(window_past=-1), "window_past"), (dict(hgf=1), "hgf must be bool"),
                     (dict(num_windows=True), "num_windows must be int"), (dict(content_pool="max"), "content_pool"),
                     (dict(hgf_gate_bias=float("nan")), "hgf_gate_bias must be a finite number"),
                     (dict(hgf_join="mean"), "hgf_join must be one of")):
        with pytest.raises(ValueError, match=msg):
            ModelConfig(**bad).validate()
        with pytest.raises(ValueError, match=msg):
            HotspotERC(corpus.dims, 3, **bad)
    with pytest.raises(TypeError, match="unknown option"):
        HotspotERC(corpus.dims, 3, d_modle=8)
    with pytest.raises(TypeError, match="config must be a ModelConfig"):
        HotspotERC(corpus.dims, 3, 64)
    with pytest.raises(ValueError, match="unknown model setting"):
        ModelConfig.from_dict({"d_modle": 8})


def test_batch_segments_are_used_as_they_are(corpus, batch):
    """A batch with the collate's Segments and the same batch with offsets only give the same
    output; the model reads the Segments it is given instead of re-deriving them."""
    from hotspot_erc.segments import Segments

    model = _model(corpus).eval()
    segs = {m: Segments.from_cu_seqlens(batch.cu_seqlens[m], batch.features[m].shape[0]) for m in "tav"}
    with_segs = dataclasses.replace(batch, segments=segs)
    without = dataclasses.replace(batch, segments=None)
    a, b = model(with_segs), model(without)
    assert torch.equal(a.logits, b.logits)
    assert all(a.segments[m] is segs[m] for m in "tav")
    poisoned = {m: dataclasses.replace(s, present=torch.zeros_like(s.present)) for m, s in segs.items()}
    c = model(dataclasses.replace(batch, segments=poisoned))
    assert not torch.equal(c.logits, a.logits)  # presence came from the Segments, not the offsets


def test_state_dict_keys_of_the_graph_branch_are_unchanged(corpus, batch):
    """CrossModalGraph owns speaker / gnn / gnn_norm, but checkpoints keep their top-level keys."""
    model = _model(corpus)
    keys = list(model.state_dict())
    assert "speaker.weight" in keys and "gnn.0.weight" in keys and "gnn_norm.1.bias" in keys
    assert not any(k.startswith("graph.") for k in keys)
    assert any(n.startswith("graph.gnn.0") for n, _ in model.named_parameters())
    other = _model(corpus, dropout=0.1)
    torch.nn.init.zeros_(other.graph.speaker.weight)
    other.load_state_dict(model.state_dict())
    assert torch.equal(other.graph.speaker.weight, model.graph.speaker.weight)
    wrapped = torch.nn.Sequential(model)  # prefixes (as under DDP) keep working
    assert "0.speaker.weight" in wrapped.state_dict()
    torch.nn.Sequential(other).load_state_dict(wrapped.state_dict())
    no_graph = _model(corpus, graph=False)
    with pytest.raises(RuntimeError, match="speaker.weight"):
        no_graph.load_state_dict(model.state_dict())


def test_peak_queries_with_missing_modalities(corpus):
    """moa_queries="peaks": an utterance whose target stream is empty gets a zero MoA vector, and
    gradients stay finite and reach MoA."""
    ds = DialogueDataset(corpus, "train")
    b = collate_dialogues([ds[i] for i in range(len(ds))])
    assert any(bool((b.lengths(m) == 0).any()) for m in "tav")  # the fixture hides some modalities
    model = _model(corpus, moa_queries="peaks", moa_input="projected", graph=False)
    out = model(b)
    moa_vec = out.branches["moa"].view(b.num_utterances, len(model.modalities), model.d_model)
    for i, m in enumerate(model.modalities):
        assert torch.all(moa_vec[b.lengths(m) == 0, i] == 0), m
    out.logits.sum().backward()
    grads = [p.grad for p in model.moa.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(float(g.abs().sum()) > 0 for g in grads)


@pytest.mark.parametrize("training", [False, True])
def test_modality_absent_from_the_whole_batch(corpus, batch, training):
    """A modality with no frame in any utterance of a batch (modality dropout can hide it from a
    small batch) gives zero MoA vectors for it, finite logits and finite gradients."""
    feats, cus = dict(batch.features), dict(batch.cu_seqlens)
    feats["a"] = feats["a"][:0]
    cus["a"] = torch.zeros_like(cus["a"])
    intensity = dict(batch.intensity, a=batch.intensity["a"][:0]) if batch.intensity is not None else None
    empty = dataclasses.replace(batch, features=feats, cu_seqlens=cus, intensity=intensity, segments=None,
                                graph=None)
    model = _model(corpus)
    model.train(training)
    out = model(empty)
    assert torch.isfinite(out.logits).all()
    moa_vec = out.branches["moa"].view(empty.num_utterances, len(model.modalities), model.d_model)
    assert torch.all(moa_vec[:, model.modalities.index("a")] == 0)
    out.logits.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
