"""MixtureOfAligners (DESIGN §3.2–3.4) and its routing functions."""
import pytest
import torch
import torch.nn.functional as F

from conftest import seed_for
from hotspot_erc.nn.moa import (MixtureOfAligners, MoAOutput, PlainCrossModalAttention, RoutingInfo,
                                segment_mean)
from hotspot_erc.reference.grouped_linear import grouped_expert_linear_per_segment
from hotspot_erc.reference.routing import load_balancing_loss, topk_masked_softmax
from hotspot_erc.reference.varlen_attention import varlen_cross_attention_reference
from tolerance import assert_close, magnitude, rel_bound, rel_err

# Per-modality segment lengths of 4 utterances: "v" misses utterance 1, "a" misses utterance 3,
# utterance 2 has a single text frame.
LENS = {"t": [3, 5, 1, 4], "a": [6, 2, 3, 0], "v": [2, 0, 4, 3]}


def moa_k(dim, lens, num_experts, top_k, num_heads, shared=False):
    """k of MoA's values: a chain of reductions sums its lengths (the stages' independent
    roundings add as one random walk). Routing (gates): a segment's mean pooling (L, the longest
    segment), the router's dot over dim, the softmax's sum over E. Outputs: routing, the experts'
    projection (top_k slots of dim + 1; a shared expert adds dim + 1), attention (scores over
    dim / heads, then a segment's keys, L at most), the output projection (dim + 1), the sum over
    the other modalities and the residual (M), LayerNorm's mean and variance (2 dim). The
    load-balancing loss: routing, the mean over S segments, the dot over E, the sum over pairs."""
    longest = max(max(v) for v in lens.values())
    m, segments = len(lens), len(next(iter(lens.values())))
    k_route = longest + dim + num_experts
    k_out = (k_route + (top_k + shared) * (dim + 1) + dim // num_heads + longest + dim + 1 + m + 2 * dim)
    k_loss = k_route + segments + num_experts + m * (m - 1)
    return {"route": k_route, "out": k_out, "loss": k_loss}


def make_batch(dim, dtype=torch.float64, lens=LENS, device="cpu"):
    cu = {m: torch.tensor([0] + torch.tensor(l).cumsum(0).tolist(), device=device) for m, l in lens.items()}
    feats = {m: torch.randn(int(c[-1]), dim, dtype=dtype, device=device) for m, c in cu.items()}
    return feats, cu


def moa_by_hand(moa, feats, cu):
    """The module's computation re-derived from the references with a loop over utterances."""
    outputs, lb, routing = {}, 0.0, {}
    for t in moa.modalities:
        mixed = torch.zeros_like(feats[t])
        for s in moa.modalities:
            if s == t:
                continue
            al = moa.aligners[f"{s}_{t}"]
            ct, cs = cu[t].tolist(), cu[s].tolist()
            pooled = torch.stack([feats[t][ct[i]:ct[i + 1]].mean(0) if ct[i + 1] > ct[i]
                                  else feats[t].new_zeros(moa.dim) for i in range(len(ct) - 1)])
            logits = pooled @ al.router.weight.T
            top, experts = logits.topk(moa.top_k, dim=-1)
            masked = torch.full_like(logits, float("-inf")).scatter(1, experts, top)
            gates = torch.softmax(masked, -1).gather(1, experts)
            probs = torch.softmax(logits, -1)
            valid = torch.tensor([ct[i + 1] > ct[i] and cs[i + 1] > cs[i] for i in range(len(ct) - 1)])
            f = torch.zeros(moa.num_experts, dtype=logits.dtype)
            for i in valid.nonzero().flatten().tolist():
                for e in experts[i].tolist():
                    f[e] += 1
            f = f / max(int(valid.sum()), 1) / moa.top_k
            p = probs[valid].sum(0) / max(int(valid.sum()), 1)
            lb = lb + moa.num_experts * (f * p).sum()
            kv = grouped_expert_linear_per_segment(feats[s], cu[s], experts, gates, al.expert_weight,
                                                   al.expert_bias)
            if moa.shared_expert:  # the shared aligner, gate 1 for every utterance
                kv = kv + feats[s] @ al.shared_weight[0] + al.shared_bias[0]
            h = moa.num_heads
            q = al.query(feats[t]).view(-1, h, moa.dim // h)
            k, v = kv.view(-1, 2, h, moa.dim // h).unbind(1)
            attn = varlen_cross_attention_reference(q, k, v, cu[t], cu[s])
            mixed = mixed + al.out(attn.reshape(-1, moa.dim))
            routing[f"{s}->{t}"] = (experts, gates, f)
        outputs[t] = F.layer_norm(feats[t] + mixed, (moa.dim,), moa.norms[t].weight, moa.norms[t].bias)
    return outputs, lb, routing


@pytest.mark.parametrize("backend,shared", [(None, False), ("reference", False), (None, True), ("reference", True)])
def test_matches_hand_computation(backend, shared):
    moa = MixtureOfAligners(16, num_experts=4, top_k=2, num_heads=2, backend=backend, shared_expert=shared).double()
    with torch.no_grad():  # distinct norms so a mix-up of modalities shows
        for norm in moa.norms.values():
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.normal_()
    feats, cu = make_batch(16)
    got = moa(feats, cu)
    want, lb, routing = moa_by_hand(moa, feats, cu)
    ks = moa_k(16, LENS, 4, 2, 2, shared)
    assert isinstance(got, MoAOutput)
    assert set(got.outputs) == {"t", "a", "v"}
    for m in "tav":
        assert got.outputs[m].shape == feats[m].shape
        assert_close(got.outputs[m], want[m], torch.float64, ks["out"], what=m)
    assert_close(got.lb_loss, lb, torch.float64, ks["loss"], what="lb_loss")  # a sum of products of f, p >= 0
    assert set(got.routing) == {"a->t", "v->t", "t->a", "v->a", "t->v", "a->v"}
    for key, (experts, gates, usage) in routing.items():
        info = got.routing[key]
        assert isinstance(info, RoutingInfo)
        assert torch.equal(info.experts, experts)
        assert_close(info.gates, gates, torch.float64, ks["route"], what=key)
        assert_close(info.usage, usage, torch.float64, 1, what=key)  # exact counts, two divisions
        assert_close(info.usage.sum(), torch.ones((), dtype=usage.dtype), torch.float64, 4, what=key)


def test_gradients_reach_every_parameter_and_input():
    moa = MixtureOfAligners(16, num_experts=3, top_k=2, num_heads=4)
    feats, cu = make_batch(16, torch.float32)
    feats = {m: x.requires_grad_() for m, x in feats.items()}
    out = moa(feats, cu)
    (sum((o * torch.randn_like(o)).sum() for o in out.outputs.values()) + out.lb_loss).backward()
    for name, p in moa.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    for m, x in feats.items():
        assert torch.isfinite(x.grad).all(), m


def test_gradcheck_inputs_float64():
    moa = MixtureOfAligners(8, modalities=("t", "a"), num_experts=3, top_k=2, num_heads=2).double()
    lens = {"t": [2, 0, 3], "a": [1, 2, 2]}
    feats, cu = make_batch(8, lens=lens)
    xt, xa = (feats[m].requires_grad_() for m in "ta")

    def f(xt_, xa_):
        out = moa({"t": xt_, "a": xa_}, cu)
        return out.outputs["t"], out.outputs["a"], out.lb_loss

    assert torch.autograd.gradcheck(f, (xt, xa), fast_mode=True)


def test_triton_backends_match_cpu():
    """Both ops forced to their Triton kernels (interpreted here) give the module's CPU result."""
    import copy

    torch.manual_seed(seed_for(1))
    ref = MixtureOfAligners(32, modalities=("t", "a"), num_experts=4, top_k=2, num_heads=2, backend="cpu")
    tri = MixtureOfAligners(32, modalities=("t", "a"), num_experts=4, top_k=2, num_heads=2, backend="triton")
    tri.load_state_dict(ref.state_dict())
    truth = copy.deepcopy(ref).double()
    lens = {"t": [3, 17, 1, 0], "a": [6, 0, 5, 2]}
    feats, cu = make_batch(32, torch.float32, lens=lens)
    outs = []
    for moa, dtype in ((ref, torch.float32), (tri, torch.float32), (truth, torch.float64)):
        leaves = {m: x.to(dtype, copy=True).requires_grad_() for m, x in feats.items()}
        o = moa(leaves, cu)
        loss = sum((v * torch.linspace(-1, 1, v.numel()).to(dtype).view_as(v)).sum() for v in o.outputs.values())
        grads = torch.autograd.grad(loss + o.lb_loss, [leaves["t"], leaves["a"], *moa.parameters()])
        outs.append((o, grads))
    (o_ref, g_ref), (o_tri, g_tri), (_, g_truth) = outs
    ks = moa_k(32, lens, 4, 2, 2)
    # the backward runs the forward's chain again in reverse, and a weight's gradient then sums
    # over a modality's rows
    k_grad = 2 * ks["out"] + max(int(c[-1]) for c in cu.values())
    for m in "ta":
        assert_close(o_tri.outputs[m], o_ref.outputs[m], torch.float32, ks["out"], what=m)
    # The weights' gradients sum rows of both signs: FlashAttention's rule against the float64
    # module, the Triton run's error at most twice the CPU run's in float32 (both see the same
    # cancellation) plus the float32 bound.
    for name, g, r, t in zip(["t", "a", *(k for k, _ in ref.named_parameters())], g_tri, g_ref, g_truth):
        assert rel_err(g, t) <= 2 * rel_err(r, t) + rel_bound(torch.float32, k_grad), name


def test_missing_modality_and_uniform_router():
    """Zero router weights: uniform probabilities, so every pair's loss is exactly 1; a modality
    absent from a whole batch gives finite outputs and no routed utterance for its pairs."""
    moa = MixtureOfAligners(16, num_experts=4, top_k=2, num_heads=2)
    with torch.no_grad():
        for al in moa.aligners.values():
            al.router.weight.zero_()
    lens = {"t": [3, 5, 1], "a": [2, 4, 1], "v": [0, 0, 0]}
    feats, cu = make_batch(16, torch.float32, lens=lens)
    out = moa(feats, cu)
    assert out.outputs["v"].shape == (0, 16)
    for o in out.outputs.values():
        assert torch.isfinite(o).all()
    # the 2 pairs between t and a count; the 4 pairs touching v route nothing
    ks = moa_k(16, lens, 4, 2, 2)
    assert_close(out.lb_loss, torch.tensor(2.0), torch.float32, ks["loss"], what="lb_loss")
    for key, info in out.routing.items():
        assert info.experts.shape == (3, 2) and info.gates.shape == (3, 2)
        assert_close(info.gates.sum(-1), torch.ones(3), torch.float32, ks["route"] + 2, what=key)
        assert float(info.usage.sum()) == (0.0 if "v" in key else 1.0)


def test_single_expert_equals_plain_cross_attention():
    """With E = k = 1 the gate is exactly 1, so MoA is the plain block with the expert as its
    key/value projection."""
    moa = MixtureOfAligners(16, num_experts=1, top_k=1, num_heads=2).double()
    plain = PlainCrossModalAttention(16, num_heads=2).double()
    with torch.no_grad():
        for key, al in moa.aligners.items():
            plain.query[key].load_state_dict(al.query.state_dict())
            plain.out[key].load_state_dict(al.out.state_dict())
            plain.key_value[key].weight.copy_(al.expert_weight[0].T)
            plain.key_value[key].bias.copy_(al.expert_bias[0])
    plain.norms.load_state_dict(moa.norms.state_dict())
    feats, cu = make_batch(16)
    a, b = moa(feats, cu), plain(feats, cu)
    k_out = moa_k(16, LENS, 1, 1, 2)["out"]
    for m in "tav":
        assert_close(a.outputs[m], b.outputs[m], torch.float64, k_out, what=m)
    assert float(b.lb_loss) == 0.0 and b.routing == {}
    assert all(float(info.gates.detach().min()) == 1.0 for info in a.routing.values())


def test_autocast_bfloat16():
    """Under autocast the query is bfloat16 while features stay float32: the module casts the
    expert path to match, routes in float32 and still trains every parameter."""
    moa = MixtureOfAligners(16, num_experts=4, top_k=2, num_heads=2)
    feats, cu = make_batch(16, torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = moa(feats, cu)
    assert all(torch.isfinite(o).all() for o in out.outputs.values())
    assert all(info.gates.dtype == torch.float32 for info in out.routing.values())
    (sum(o.float().sum() for o in out.outputs.values()) + out.lb_loss).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in moa.parameters())


def test_routing_functions():
    logits = torch.tensor([[2.0, 1.0, -1.0, 0.5], [0.0, 3.0, 1.0, 2.0]])
    experts, gates, probs = topk_masked_softmax(logits, 2)
    assert experts.tolist() == [[0, 1], [1, 3]]
    masked = logits.masked_fill(torch.ones_like(logits, dtype=torch.bool).scatter(1, experts, False), float("-inf"))
    # softmaxes over E = 4 logits
    assert_close(gates, torch.softmax(masked, -1).gather(1, experts), torch.float32, 4, what="gates")
    assert_close(probs, torch.softmax(logits, -1), torch.float32, 4, what="probs")
    with pytest.raises(ValueError, match="top_k must be in"):
        topk_masked_softmax(logits, 5)
    # everything on expert 0 with certainty: the worst case, L = E
    e = 4
    onehot = torch.zeros(5, e)
    onehot[:, 0] = 1
    loss, f = load_balancing_loss(onehot, torch.zeros(5, 1, dtype=torch.long), e)
    assert float(loss) == e and f.tolist() == [1.0, 0.0, 0.0, 0.0]
    # no valid row: zero, not NaN
    loss, f = load_balancing_loss(onehot, torch.zeros(5, 1, dtype=torch.long), e, torch.zeros(5, dtype=torch.bool))
    assert float(loss) == 0.0 and float(f.sum()) == 0.0


def test_segment_mean():
    x = torch.randn(6, 3)
    cu = torch.tensor([0, 2, 2, 6])
    got = segment_mean(x, cu)

    def spec(x):
        return torch.stack([x[:2].mean(0), torch.zeros(3), x[2:].mean(0)])

    assert_close(got, spec(x), torch.float32, 4, scale=magnitude(spec, x), what="segment_mean")  # 4 rows at most


def test_torch_compile_fullgraph():
    moa = MixtureOfAligners(16, modalities=("t", "a"), num_experts=4, top_k=1, num_heads=2)
    feats, cu = make_batch(16, torch.float32, lens={"t": [3, 0, 4], "a": [2, 5, 1]})
    eager = moa(feats, cu)
    compiled = torch.compile(lambda f, c: moa(f, c), fullgraph=True, backend="aot_eager")(feats, cu)
    ks = moa_k(16, {"t": [3, 0, 4], "a": [2, 5, 1]}, 4, 1, 2)
    for m in "ta":
        assert_close(compiled.outputs[m], eager.outputs[m], torch.float32, ks["out"], what=m)
    assert_close(compiled.lb_loss, eager.lb_loss, torch.float32, ks["loss"], what="lb_loss")


def test_bad_configuration_and_inputs():
    with pytest.raises(ValueError, match="at least 2 modalities"):
        MixtureOfAligners(16, modalities=("t",))
    with pytest.raises(ValueError, match=r"num_heads \(3\) must divide dim \(16\)"):
        MixtureOfAligners(16, num_heads=3)
    with pytest.raises(ValueError, match="top_k must be in"):
        MixtureOfAligners(16, num_experts=2, top_k=3)
    moa = MixtureOfAligners(16, num_heads=2)
    feats, cu = make_batch(16, torch.float32)
    with pytest.raises(KeyError, match="need key 'v'"):
        moa({"t": feats["t"], "a": feats["a"]}, cu)
    with pytest.raises(ValueError, match=r"feats\['a'\] must have shape \[N, 16\]"):
        moa({**feats, "a": feats["a"][:, :8]}, cu)
    with pytest.raises(ValueError, match="same utterances"):
        moa(feats, {**cu, "v": cu["v"][:-1]})


@pytest.mark.gpu
def test_cuda_matches_cpu():
    cpu = MixtureOfAligners(64, num_experts=8, top_k=2, num_heads=4)
    gpu = MixtureOfAligners(64, num_experts=8, top_k=2, num_heads=4).cuda()
    gpu.load_state_dict(cpu.state_dict())
    lens = {m: torch.randint(0, 200, (32,)).tolist() for m in "tav"}
    feats, cu = make_batch(64, torch.float32, lens=lens)
    a = cpu(feats, cu)
    b = gpu({m: x.cuda() for m, x in feats.items()}, {m: c.cuda() for m, c in cu.items()})
    unit = "tf32" if torch.backends.cuda.matmul.allow_tf32 else torch.float32  # the GPU's float32 matmuls
    k_out = moa_k(64, lens, 8, 2, 4)["out"]
    for m in "tav":
        assert_close(b.outputs[m].cpu(), a.outputs[m], unit, k_out, what=m)
    for key, info in a.routing.items():
        assert torch.equal(b.routing[key].experts.cpu(), info.experts)


def test_hotspot_frames_fixed_size_stream():
    from hotspot_erc.nn.moa import hotspot_frames

    x = torch.arange(10.0).view(10, 1)
    cu = torch.tensor([0, 4, 4, 10])
    peaks = torch.tensor([[1, -1], [-1, -1], [7, 4]])
    frames, cu_k, has = hotspot_frames(x, cu, peaks, radius=1)
    # windows clipped to their utterance; a missing window repeats the first; empty utterance flagged
    assert frames.view(3, 2, 3).tolist() == [[[0, 1, 2], [0, 1, 2]], [[4, 4, 4], [4, 4, 4]],
                                             [[6, 7, 8], [4, 4, 5]]]
    assert cu_k.tolist() == [0, 6, 12, 18] and has.tolist() == [True, False, True]
    x = torch.randn(10, 3, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(lambda t: hotspot_frames(t, cu, peaks, 1)[0], (x,))


def test_moa_sources_default_to_all_frames():
    """Passing each modality's own frames as ``sources`` is the plain forward; utterances whose
    stand-in source has no frames contribute nothing."""
    torch.manual_seed(seed_for(0))
    lens = {"t": [3, 5, 1, 4], "a": [6, 2, 3, 1], "v": [2, 1, 4, 3]}
    feats, cu = make_batch(16, lens=lens)
    moa = MixtureOfAligners(16, modalities=("t", "a", "v"), num_heads=2).double().eval()
    ref = moa(feats, cu)
    present = {m: cu[m][1:] > cu[m][:-1] for m in cu}
    got = moa(feats, cu, sources={m: (feats[m], cu[m], present[m]) for m in cu})
    k_out = moa_k(16, lens, moa.num_experts, moa.top_k, 2)["out"]
    for m in feats:
        assert_close(got.outputs[m], ref.outputs[m], torch.float64, k_out, what=m)
    none = {m: (feats[m], cu[m], torch.zeros_like(present[m])) for m in cu}
    alone = moa(feats, cu, sources=none)  # nothing to attend to: the residual and norm only
    for m in feats:
        # the residual, LayerNorm's mean and variance
        assert_close(alone.outputs[m], moa.norms[m](feats[m]), torch.float64, 1 + 2 * 16, what=m)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_batched_routing_equals_per_pair_reference(dtype):
    """The module routes every pair in one set of ops: row p must be the per-pair reference."""
    from hotspot_erc.nn.moa import batched_routing

    torch.manual_seed(seed_for(0))
    n_pairs, num_seg, num_experts, k = 6, 5, 4, 2
    logits = torch.randn(n_pairs, num_seg, num_experts, dtype=dtype)
    logits[1, 2] = 0.0  # ties
    valid = torch.rand(n_pairs, num_seg) > 0.3
    valid[3] = False  # a pair without any routed utterance
    for v in (valid, valid.to(dtype), None):
        experts, gates, usage, loss = batched_routing(logits, k, num_experts, v)
        assert experts.shape == gates.shape == (n_pairs, num_seg, k) and usage.shape == (n_pairs, num_experts)
        for p in range(n_pairs):
            e_ref, g_ref, probs = topk_masked_softmax(logits[p], k)
            l_ref, f_ref = load_balancing_loss(probs, e_ref, num_experts, None if v is None else valid[p])
            assert torch.equal(experts[p], e_ref) and torch.equal(gates[p], g_ref)
            torch.testing.assert_close(usage[p], f_ref, rtol=0, atol=0)
            torch.testing.assert_close(loss[p], l_ref, rtol=0, atol=0)
    assert float(batched_routing(logits, k, num_experts, valid)[3][3]) == 0.0


def test_pairs_batched_equal_per_pair_aligners():
    """The batched forward (stacked weights, one grouped call, one attention call) equals running
    each PairAligner on its own, outputs and gradients; state_dict keys are the per-pair ones."""
    torch.manual_seed(seed_for(3))
    moa = MixtureOfAligners(16, num_experts=4, top_k=2, num_heads=2).double()
    assert all(k.startswith(("aligners.", "norms.")) for k in moa.state_dict())
    assert {k.split(".")[2] for k in moa.state_dict() if k.startswith("aligners.")} == {
        "router", "query", "expert_weight", "expert_bias", "out"}
    feats, cu = make_batch(16)
    feats = {m: x.requires_grad_() for m, x in feats.items()}

    def per_pair():
        present = {m: cu[m][1:] > cu[m][:-1] for m in cu}
        mixed, lb = {}, 0.0
        for s, t in moa.pairs:
            out, l, _, _ = moa.aligners[f"{s}_{t}"](feats[t], cu[t], feats[s], cu[s], segment_mean(feats[t], cu[t]),
                                                     present[s] & present[t])
            mixed[t] = out if t not in mixed else mixed[t] + out
            lb = lb + l
        return moa._residual(feats, mixed), lb

    got = moa(feats, cu)
    want, lb = per_pair()
    params = [*feats.values(), *moa.parameters()]
    # a random cotangent: with Σ o² through LayerNorms of unit weight the gradient below the norms
    # is only eps / (var + eps) of its terms (Σ x̂² is constant), so both sides would be rounding noise
    dy = {m: torch.randn_like(o) for m, o in got.outputs.items()}
    g_got = torch.autograd.grad(sum((o * dy[m]).sum() for m, o in got.outputs.items()) + got.lb_loss, params)
    g_want = torch.autograd.grad(sum((o * dy[m]).sum() for m, o in want.items()) + lb, params)
    ks = moa_k(16, LENS, 4, 2, 2)
    # the backward runs the forward's chain again in reverse, and a weight's gradient then sums
    # over a modality's rows; those rows carry the random cotangent's independent signs, so the
    # sum and its rounding error both grow like a random walk and ‖ref‖ is their scale
    k_grad = 2 * ks["out"] + max(int(c[-1]) for c in cu.values())
    for m in feats:
        assert_close(got.outputs[m], want[m], torch.float64, ks["out"], what=m)
    assert_close(got.lb_loss, lb, torch.float64, ks["loss"], what="lb_loss")
    for a, b in zip(g_got, g_want):
        assert_close(a, b, torch.float64, k_grad, what="grad")


def test_model_routing_matches_the_reference_spec():
    """nn.routing (what the forward runs) against reference.routing (the spec), incl. masked rows."""
    from hotspot_erc.nn import routing as model_routing

    g = torch.Generator().manual_seed(seed_for(3))
    logits = torch.randn(7, 5, generator=g, dtype=torch.float64)
    valid = torch.tensor([1, 0, 1, 1, 0, 1, 1], dtype=torch.bool)
    for k in (1, 2, 5):
        got = model_routing.topk_masked_softmax(logits, k)
        want = topk_masked_softmax(logits, k)
        assert all(torch.equal(a, b) for a, b in zip(got, want))
        for v in (None, valid):
            assert all(torch.equal(a, b) for a, b in zip(model_routing.load_balancing_loss(got[2], got[0], 5, v),
                                                         load_balancing_loss(want[2], want[0], 5, v)))


def test_segments_or_offsets_give_the_same_moa():
    from hotspot_erc.segments import Segments

    torch.manual_seed(seed_for(0))
    moa = MixtureOfAligners(16, num_experts=4, top_k=2, num_heads=2).double()
    lens = {"t": [3, 0, 2], "a": [1, 4, 0], "v": [2, 2, 2]}
    cu = {m: torch.tensor([0] + torch.tensor(v).cumsum(0).tolist()) for m, v in lens.items()}
    feats = {m: torch.randn(int(c[-1]), 16, dtype=torch.float64) for m, c in cu.items()}
    segs = {m: Segments.from_cu_seqlens(c, feats[m].shape[0]) for m, c in cu.items()}
    a, b = moa(feats, cu), moa(feats, segs)
    assert all(torch.equal(a.outputs[m], b.outputs[m]) for m in "tav") and torch.equal(a.lb_loss, b.lb_loss)
