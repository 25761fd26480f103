"""Triton kernels of attention over incoming graph edges (DESIGN §3.8), at the launcher level:
forward (out, lse, alpha) and all four gradients against autograd of the float64 reference, on
graphs with the shapes that hurt (nodes without in-edges, sources without out-edges, duplicate
edges, self loops, bipartite node sets, degrees spanning several edge tiles, no edges at all),
with and without edge features and the message multiplier. Triton runs through
TRITON_INTERPRET=1 when there is no GPU; every output is allocated poisoned (NaN), so an
element a kernel forgets to write shows."""
import pytest
import torch

from conftest import OFFLINE_SM90_BUILD, assert_compiles_offline, seed_for
from hotspot_erc.kernels import graph_attention as K
from hotspot_erc.reference.graph_attention import graph_attention_reference
from tolerance import assert_close, rel_bound, rel_err

HUB_IN, HUB_OUT = 11, 10  # degrees of the hub nodes: three edge tiles of the interpreter's four rows


# ----------------------------------------------------------------------------- graphs


def make_edges(n_src, n_dst, num_random, gen):
    """[2, E] edges in shuffled order (so the sorted structures' eid and t_eid are real
    permutations) with: destination 1 and the last destination without in-edges, source 0 and
    the last source without out-edges, a hub destination (0) and a hub source (2), three
    self loops where the node sets overlap, three duplicated edges. Returns (edges, destinations
    without in-edges, sources without out-edges)."""
    no_in = [1, n_dst - 1]
    no_out = [0, n_src - 1]
    dsts = torch.tensor([i for i in range(n_dst) if i not in no_in])
    srcs = torch.tensor([j for j in range(n_src) if j not in no_out])
    src = srcs[torch.randint(len(srcs), (num_random,), generator=gen)]
    dst = dsts[torch.randint(len(dsts), (num_random,), generator=gen)]
    hub_src = srcs[torch.randint(len(srcs), (HUB_IN,), generator=gen)]
    hub_dst = dsts[torch.randint(len(dsts), (HUB_OUT,), generator=gen)]
    loops = torch.tensor([2, 3, 4])
    src = torch.cat([src, hub_src, torch.full((HUB_OUT,), 2), loops, src[:3]])
    dst = torch.cat([dst, torch.zeros(HUB_IN, dtype=torch.long), hub_dst, loops, dst[:3]])
    perm = torch.randperm(len(src), generator=gen)
    return torch.stack([src[perm], dst[perm]]), no_in, no_out


def structures(edge_index, n_src, n_dst):
    """The CSR over destinations and the transposed CSR over sources, as the ops layer builds
    them (stable sorts, so equal keys keep their edge order)."""
    src, dst = edge_index[0], edge_index[1]
    order = torch.sort(dst, stable=True).indices
    t_order = torch.sort(src, stable=True).indices
    zero = torch.zeros(1, dtype=torch.long)
    rowptr = torch.cat([zero, torch.bincount(dst, minlength=n_dst).cumsum(0)])
    t_rowptr = torch.cat([zero, torch.bincount(src, minlength=n_src).cumsum(0)])
    return dict(rowptr=rowptr, col=src[order], eid=order, t_rowptr=t_rowptr, t_dst=dst[t_order], t_eid=t_order)


def make_case(n_src=9, n_dst=7, heads=3, head_dim=7, num_random=16, dtype=torch.float32, with_edge=True,
              with_mask=True, seed=0):
    gen = torch.Generator().manual_seed(seed_for(seed))
    edge_index, no_in, no_out = make_edges(n_src, n_dst, num_random, gen)
    num_edges = edge_index.shape[1]

    def randn(*shape):
        return torch.randn(*shape, generator=gen).to(dtype)

    case = dict(q=randn(n_dst, heads, head_dim), k=randn(n_src, heads, head_dim), v=randn(n_src, heads, head_dim),
                edge=randn(num_edges, heads, head_dim) if with_edge else None,
                # dropout's scaled keep-mask
                mask=(torch.rand(num_edges, heads, generator=gen) > 0.3).float() / 0.7 if with_mask else None,
                grad=randn(n_dst, heads, head_dim), edge_index=edge_index, no_in=no_in, no_out=no_out,
                scale=0.75 * head_dim ** -0.5)
    case.update(structures(edge_index, n_src, n_dst))
    return case


# ----------------------------------------------------------------------------- runs and references


def run_forward(c, need_alpha=True):
    return K.forward(c["q"], c["k"], c["v"], c["edge"], c["mask"], c["rowptr"], c["col"], c["eid"], c["scale"],
                     need_alpha)


def run_backward(c, out, lse, do=None, need_edge_grad=True):
    return K.backward(c["grad"] if do is None else do, c["q"], c["k"], c["v"], c["edge"], c["mask"], out, lse,
                      c["rowptr"], c["col"], c["eid"], c["t_rowptr"], c["t_dst"], c["t_eid"], c["scale"],
                      need_edge_grad)


def reference(c, grad=None):
    """Float64 (out, lse, alpha, [dq, dk, dv, dedge]) from the reference and its autograd; the
    log-sum-exp per destination from the scores, -inf where there are no in-edges."""
    leaves = [None if t is None else t.detach().double().requires_grad_(True)
              for t in (c["q"], c["k"], c["v"], c["edge"])]
    mask = None if c["mask"] is None else c["mask"].double()
    out, alpha = graph_attention_reference(*leaves[:3], c["edge_index"], leaves[3], mask, c["scale"])
    src, dst = c["edge_index"]
    with torch.no_grad():
        key = leaves[1][src] + (0.0 if leaves[3] is None else leaves[3])
        score = (leaves[0][dst] * key).sum(-1) * c["scale"]
        index = dst[:, None].expand_as(score)
        peak = torch.full(out.shape[:2], float("-inf"), dtype=torch.float64)
        peak = peak.scatter_reduce(0, index, score, "amax", include_self=False)
        total = torch.zeros_like(peak).index_add(0, dst, torch.exp(score - peak[dst]))
        lse = torch.where(total > 0, torch.log(total) + peak, float("-inf"))
    want = [t for t in leaves if t is not None]
    grads = torch.autograd.grad(out, want, (c["grad"] if grad is None else grad).double())
    grads = list(grads) + ([None] if leaves[3] is None else [])
    return out.detach(), lse, alpha.detach(), grads


def magnitudes(c, p, grad=None):
    """Σ|terms| (float64) of out, of each score, and of dq, dk, dv, dedge: what the rounding bound
    multiplies, since outputs and gradients are sums of terms of both signs. With p the exact
    probabilities and m the multiplier: out = Σ p·m·(|v|+|E|); a score q·(k+E) has
    scale·|q|·(|k|+|E|); δ = do·out has |do|·|out|; ds = p·(m·|do|·(|v|+|E|) + |δ|);
    dq = scale·Σ ds·(|k|+|E|), dk = scale·Σ ds·|q|, dv = Σ p·m·|do|, dE = p·m·|do| + scale·ds·|q|.
    ``p``: the reference's alpha."""
    src, dst = c["edge_index"]
    q, k, v = (c[n].detach().double().abs() for n in "qkv")
    emb = 0.0 if c["edge"] is None else c["edge"].double().abs()
    m = 1.0 if c["mask"] is None else c["mask"].double().abs()
    do = (c["grad"] if grad is None else grad).double().abs()
    key, val = k[src] + emb, v[src] + emb
    pm = p * m
    out = torch.zeros_like(q).index_add(0, dst, pm[..., None] * val)
    score = c["scale"] * (q[dst] * key).sum(-1)
    row = (do * out).sum(-1)
    ds = p * (m * (do[dst] * val).sum(-1) + row[dst])
    dq = c["scale"] * torch.zeros_like(q).index_add(0, dst, ds[..., None] * key)
    dk = c["scale"] * torch.zeros_like(k).index_add(0, src, ds[..., None] * q[dst])
    dv = torch.zeros_like(v).index_add(0, src, pm[..., None] * do[dst])
    dedge = pm[..., None] * do[dst] + c["scale"] * ds[..., None] * q[dst]
    return out, score, [dq, dk, dv, dedge]


def reduction_k(c):
    """k of the rounding bound: the longest edge segment (in or out) times the head dim, the
    longest chain of additions behind any output (a dot over D per edge, a sum over edges)."""
    src, dst = c["edge_index"]
    deg = max([1] + torch.bincount(dst).tolist() + torch.bincount(src).tolist()) if src.numel() else 1
    return deg * max(c["q"].shape[2], 1)


@pytest.fixture
def poisoned(monkeypatch):
    """Fresh float allocations are NaN, so any element a kernel forgets to write shows. Yields
    the data pointers it poisoned, so a test can check its outputs went through it."""
    real_empty = torch.empty
    ptrs = set()

    def empty(*args, **kwargs):
        t = real_empty(*args, **kwargs)
        if t.is_floating_point():
            t.fill_(float("nan"))
            ptrs.add(t.data_ptr())
        return t

    monkeypatch.setattr(torch, "empty", empty)
    yield ptrs


def check_poisoned(ptrs, *tensors):
    for t in tensors:
        assert t is None or t.numel() == 0 or t.data_ptr() in ptrs, "output not allocated through the poison"


# ----------------------------------------------------------------------------- forward and backward


def check_case(c, dtype, poisoned):
    out, lse, alpha = run_forward(c)
    grads = run_backward(c, out, lse)
    check_poisoned(poisoned, out, lse, alpha, *grads)
    want_out, want_lse, want_alpha, want_grads = reference(c)
    mag_out, mag_score, mag_grads = magnitudes(c, want_alpha)
    kk = reduction_k(c)
    # float32 inside the kernels for every dtype: a 16-bit result is one rounding of a float32
    # sum; lse and alpha stay float32 whatever the inputs.
    bound = dict(accumulate=torch.float32) if dtype != torch.float32 else {}

    assert out.dtype == dtype and lse.dtype == alpha.dtype == torch.float32
    assert out.shape == c["q"].shape and lse.shape == c["q"].shape[:2]
    assert alpha.shape == (c["edge_index"].shape[1], c["q"].shape[1])
    assert torch.isfinite(out).all() and torch.isfinite(alpha).all() and not torch.isnan(lse).any()
    assert_close(out, want_out, dtype, kk, scale=mag_out, what="out", **bound)

    # lse carries the scores' absolute error (plus the log's rounding): scale by the largest
    # score magnitude of each destination, plus one.
    dst = c["edge_index"][1]
    peak = torch.zeros_like(want_lse).scatter_reduce(0, dst[:, None].expand_as(mag_score), mag_score, "amax") + 1.0
    finite = torch.isfinite(want_lse)
    assert torch.equal(torch.isfinite(lse), finite)
    assert (lse[~finite] == float("-inf")).all()
    assert_close(lse[finite], want_lse[finite], torch.float32, kk, scale=peak[finite], what="lse")
    # alpha = exp(s − lse): its relative error is the absolute error of s − lse.
    assert_close(alpha, want_alpha, torch.float32, kk, scale=want_alpha * (mag_score + peak[dst]), what="alpha")

    for name, g, w, m, x in zip(("dq", "dk", "dv", "dedge"), grads, want_grads, mag_grads,
                                (c["q"], c["k"], c["v"], c["edge"])):
        if x is None:
            assert g is None, name
            continue
        assert g.dtype == dtype and g.shape == x.shape, name
        assert torch.isfinite(g).all(), name
        assert_close(g, w, dtype, kk, scale=m, what=name, **bound)

    # Exact zeros, never NaN, where there is nothing to sum.
    dq, dk, dv, _ = grads
    for i in c["no_in"]:
        assert torch.equal(out[i], torch.zeros_like(out[i])) and torch.equal(dq[i], torch.zeros_like(dq[i]))
        assert (lse[i] == float("-inf")).all()
    for j in c["no_out"]:
        assert torch.equal(dk[j], torch.zeros_like(dk[j])) and torch.equal(dv[j], torch.zeros_like(dv[j]))
    return out, lse, alpha, grads


FEATURES = {"plain": (False, False), "edge": (True, False), "mask": (False, True), "edge_mask": (True, True)}


@pytest.mark.parametrize("heads", [1, 3])
@pytest.mark.parametrize("head_dim", [1, 7, 100])
def test_float32_matches_reference(head_dim, heads, poisoned):
    c = make_case(heads=heads, head_dim=head_dim, seed=100 * head_dim + heads)
    check_case(c, torch.float32, poisoned)


@pytest.mark.parametrize("features", ["plain", "edge", "mask"])
def test_float32_optional_inputs(features, poisoned):
    """Without edge features, without the multiplier, without both (both on: above)."""
    with_edge, with_mask = FEATURES[features]
    c = make_case(heads=3, head_dim=7, with_edge=with_edge, with_mask=with_mask, seed=20 + len(features))
    check_case(c, torch.float32, poisoned)


@pytest.mark.parametrize("dtype,head_dim,features", [
    (torch.bfloat16, 7, "plain"), (torch.bfloat16, 100, "edge_mask"),
    (torch.float16, 7, "edge_mask"), (torch.float16, 100, "plain"),
])
def test_half_precision_matches_reference(dtype, head_dim, features, poisoned):
    """The dtype's rounding bound with float32 accumulation, which is tighter than
    FlashAttention's rule (twice PyTorch's own error in the dtype): every sum runs in float32
    on inputs that are exact in float32, and each result is rounded to the dtype once (the
    backward also reads the rounded forward output)."""
    with_edge, with_mask = FEATURES[features]
    c = make_case(heads=3, head_dim=head_dim, dtype=dtype, with_edge=with_edge, with_mask=with_mask,
                  seed=1000 + head_dim + len(features))
    check_case(c, dtype, poisoned)


def test_half_precision_bound_is_meaningful():
    """The bf16 bound used above is below the error PyTorch's own bfloat16 reference makes on
    the same inputs, so passing it says more than FlashAttention's rule would."""
    # (no multiplier: the reference itself wants it in the inputs' dtype)
    c = make_case(head_dim=100, dtype=torch.bfloat16, with_mask=False, seed=7)
    want_out, _, want_alpha, _ = reference(c)
    own, _ = graph_attention_reference(c["q"], c["k"], c["v"], c["edge_index"], c["edge"], None, c["scale"])
    mag_out = magnitudes(c, want_alpha)[0]
    bound = rel_bound(torch.bfloat16, reduction_k(c), accumulate=torch.float32)
    got = run_forward(c)[0]
    assert rel_err(got, want_out, mag_out) <= min(bound, 2 * rel_err(own, want_out, mag_out))


def test_bipartite_more_destinations_than_sources(poisoned):
    check_case(make_case(n_src=6, n_dst=11, heads=2, head_dim=5, seed=3), torch.float32, poisoned)


def test_optional_outputs(poisoned):
    """Without alpha the output is an empty [0, H] tensor and the rest is bitwise what the run with it
    gives; without the edge gradient dedge is None and the other gradients are unchanged."""
    c = make_case(head_dim=7, seed=11)
    out, lse, alpha = run_forward(c, need_alpha=True)
    out2, lse2, alpha2 = run_forward(c, need_alpha=False)
    assert alpha2.shape == (0, c["q"].shape[1]) and alpha2.dtype == torch.float32
    assert torch.equal(out, out2) and torch.equal(lse, lse2)
    full = run_backward(c, out, lse, need_edge_grad=True)
    part = run_backward(c, out, lse, need_edge_grad=False)
    assert full[3] is not None and part[3] is None
    for a, b in zip(full[:3], part[:3]):
        assert torch.equal(a, b)
    no_edge = dict(c, edge=None)
    assert run_backward(no_edge, *run_forward(no_edge)[:2], need_edge_grad=True)[3] is None


@pytest.mark.parametrize("n_src,n_dst", [(4, 3), (0, 3), (3, 0), (0, 0)])
def test_no_edges(n_src, n_dst, poisoned):
    """E = 0: zeros and -inf, never NaN; every gradient zero; empty alpha and dedge."""
    heads, head_dim = 2, 7
    gen = torch.Generator().manual_seed(seed_for(5))
    q = torch.randn(n_dst, heads, head_dim, generator=gen)
    k, v = torch.randn(2, n_src, heads, head_dim, generator=gen)
    edge = torch.randn(0, heads, head_dim, generator=gen)
    mask = torch.ones(0, heads)
    s = structures(torch.zeros(2, 0, dtype=torch.long), n_src, n_dst)
    out, lse, alpha = K.forward(q, k, v, edge, mask, s["rowptr"], s["col"], s["eid"], 0.5, True)
    assert out.shape == q.shape and lse.shape == (n_dst, heads) and alpha.shape == (0, heads)
    assert torch.equal(out, torch.zeros_like(out)) and (lse == float("-inf")).all()
    grads = K.backward(torch.randn(q.shape, generator=gen), q, k, v, edge, mask, out, lse, s["rowptr"],
                       s["col"], s["eid"], s["t_rowptr"], s["t_dst"], s["t_eid"], 0.5, True)
    for g, x in zip(grads, (q, k, v, edge)):
        assert g.shape == x.shape and torch.equal(g, torch.zeros_like(x))


def test_strided_inputs(poisoned):
    """Any strides, read in place: a query view with a non-unit feature stride and a head stride
    that is not D, and the stride-0 gradient of ``out.sum()``."""
    c = make_case(head_dim=7, seed=13)
    n_dst, heads, head_dim = c["q"].shape
    wide = torch.randn(n_dst, heads, 3 * head_dim, generator=torch.Generator().manual_seed(seed_for(14)))
    c["q"] = wide[..., ::3]
    c["grad"] = torch.ones(1, 1, 1).expand(n_dst, heads, head_dim)
    check_case(c, torch.float32, poisoned)


def test_backward_is_deterministic():
    """Two runs give the same bits (no atomics: a fixed summation order per node)."""
    c = make_case(head_dim=100, seed=17)
    first = run_forward(c)
    assert all(torch.equal(a, b) for a, b in zip(first, run_forward(c)))
    g1 = run_backward(c, *first[:2])
    g2 = run_backward(c, *first[:2])
    for a, b in zip(g1, g2):
        assert torch.equal(a, b)


def test_launch_counts():
    """One launch forward, two backward, and no other kernels (outputs and scratch are
    allocations, which launch nothing)."""
    from hotspot_erc.testing import count_launches

    c = make_case(head_dim=7, seed=19)
    fwd = count_launches(run_forward, c, warmup=0)
    assert fwd.launches == {"triton:_fwd_kernel": 1}, fwd
    out, lse, _ = run_forward(c)
    bwd = count_launches(run_backward, c, out, lse, warmup=0)
    assert bwd.launches == {"triton:_bwd_dst_kernel": 1, "triton:_bwd_src_kernel": 1}, bwd


# ----------------------------------------------------------------------------- sm_90 compile, no GPU

# Compiles every kernel for sm_90 at the launchers' real tiles (not the interpreter's), with the
# optional inputs on and off: catches code the interpreter accepts but the GPU compiler rejects.
_SM90 = OFFLINE_SM90_BUILD + """
import hotspot_erc.kernels.graph_attention as K

for dt, bd in (("bf16", 128), ("fp32", 16), ("fp16", 512)):
    be = K.edge_tile(bd)
    w = K._warps(be, bd)
    ptrs = {n: "*" + dt for n in ("Q", "K", "V", "EDGE", "OUT", "DO", "DQ", "DEDGE", "DK", "DV")}
    ptrs.update({n: "*fp32" for n in ("MASK", "LSE", "ALPHA", "PM", "DS")})
    ptrs.update({n: "*i64" for n in ("ROWPTR", "COL", "EID", "T_ROWPTR", "T_DST", "T_EID")})
    ptrs.update(qk_scale="fp32", sm_scale="fp32")
    for on in (True, False):
        build(K._fwd_kernel, ptrs, dict(HAS_EDGE=on, HAS_MASK=on, NEED_ALPHA=on, BLOCK_E=be, BLOCK_D=bd), w, 1)
        build(K._bwd_dst_kernel, ptrs, dict(HAS_EDGE=on, HAS_MASK=on, NEED_EDGE_GRAD=on, BLOCK_E=be, BLOCK_D=bd), w, 1)
    build(K._bwd_src_kernel, ptrs, dict(BLOCK_E=be, BLOCK_D=bd), w, 1)
print("compiled")
"""


def test_triton_kernels_compile_for_sm90():
    assert_compiles_offline(_SM90)
