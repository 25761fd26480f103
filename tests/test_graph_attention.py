"""graph_attention: attention over incoming edges, every backend against the float64 reference."""
import math

import pytest
import torch

from hotspot_erc.ops import AttentionGraph, graph_attention
from hotspot_erc.ops._backend import BackendUnavailable, triton_reason
from hotspot_erc.reference.graph_attention import graph_attention_reference
from conftest import seed_for
from tolerance import LOW_PRECISION, accumulation, assert_close

BACKENDS = ["cpu", "reference"] + ([] if triton_reason(torch.device("cpu")) else ["triton"])


def random_edges(n_src, n_dst, e, gen, isolated=2):
    """Edges with what hurts: destinations without in-edges, self loops, a duplicate edge, and
    an order that is not sorted by destination."""
    hi = max(n_dst - isolated, 1)
    ei = torch.stack([torch.randint(0, n_src, (e,), generator=gen), torch.randint(0, hi, (e,), generator=gen)])
    if e >= 2 and n_src == n_dst:
        ei[0, :2] = ei[1, :2]
    if e >= 4:
        ei[:, 3] = ei[:, 2]
    return ei


def make(n_src, n_dst, e, heads, dim, dtype, edge=False, mask=False, seed=0):
    gen = torch.Generator().manual_seed(seed_for(seed))
    ei = random_edges(n_src, n_dst, e, gen)
    q = torch.randn(n_dst, heads, dim, generator=gen, dtype=torch.float64).to(dtype)
    k = torch.randn(n_src, heads, dim, generator=gen, dtype=torch.float64).to(dtype)
    v = torch.randn(n_src, heads, dim, generator=gen, dtype=torch.float64).to(dtype)
    emb = torch.randn(e, heads, dim, generator=gen, dtype=torch.float64).to(dtype) if edge else None
    m = ((torch.rand(e, heads, generator=gen) > 0.25).double() / 0.75) if mask else None
    return ei, q, k, v, emb, m


def magnitudes(q, k, v, emb, m, ei, go, scale=None):
    """Σ|terms| of the output and of every gradient (float64), to first order, the scale of the
    rounding bound: s_e = c·q_i·(k_j + e_e), p = softmax over i's edges, out_i = Σ p m (v + e);
    g_e = m·do_i·(v + e), δ_i = do_i·out_i, ds = p (g − δ). A relative error ε of a score moves p
    by p (ε|s| − Σ p ε|s|), so p's magnitude is p + E + p·ΣE with E = p·|s|ₘ, |s|ₘ = c·|q|·|k + e|;
    every product then takes its factors' magnitudes."""
    q, k, v, go = (t.detach().double() for t in (q, k, v, go))
    emb = emb.detach().double() if emb is not None else None
    src, dst = ei[0].long(), ei[1].long()
    c = 1.0 / math.sqrt(q.shape[2]) if scale is None else scale
    out, p = graph_attention_reference(q, k, v, ei, emb, m, c)
    kk, vv = k[src], v[src]
    if emb is not None:
        kk, vv = kk + emb, vv + emb
    mm = torch.ones_like(p) if m is None else m.double()
    err = p * c * (q[dst].abs() * kk.abs()).sum(-1)
    pm = p + err + p * torch.zeros_like(out[..., 0]).index_add(0, dst, err)[dst]
    out_mag = torch.zeros_like(out).index_add(0, dst, (pm * mm)[..., None] * vv.abs())
    g = mm * (go[dst] * vv).sum(-1)
    g_mag = mm * (go[dst].abs() * vv.abs()).sum(-1)
    delta = (go * out).sum(-1)[dst]
    delta_mag = (go.abs() * out_mag).sum(-1)[dst]
    ds_mag = p * (g_mag + delta_mag) + (pm - p) * (g - delta).abs()
    kept = (pm * mm)[..., None]
    dq = torch.zeros_like(q).index_add(0, dst, c * ds_mag[..., None] * kk.abs())
    dk = torch.zeros_like(k).index_add(0, src, c * ds_mag[..., None] * q[dst].abs())
    dv = torch.zeros_like(v).index_add(0, src, kept * go[dst].abs())
    de = kept * go[dst].abs() + c * ds_mag[..., None] * q[dst].abs()
    return out_mag, [dq, dk, dv] + ([de] if emb is not None else [])


def lengths(ei, n_src, n_dst, dim):
    """k of the output (a score's dot over D, then a sum over a destination's edges) and of the
    gradients (the same, then a sum over a source's out-edges)."""
    indeg = int(torch.bincount(ei[1], minlength=n_dst).max()) if ei.shape[1] else 1
    outdeg = int(torch.bincount(ei[0], minlength=n_src).max()) if ei.shape[1] else 1
    return dim + indeg, 2 * dim + indeg + outdeg


def check_against_reference(backend, n_src, n_dst, e, heads, dim, dtype, edge, mask, seed=0):
    ei, q, k, v, emb, m = make(n_src, n_dst, e, heads, dim, dtype, edge, mask, seed)
    leaves = [t.clone().requires_grad_() for t in (q, k, v) + ((emb,) if emb is not None else ())]
    out, alpha = graph_attention(*leaves[:3], ei, leaves[3] if emb is not None else None,
                                 None if m is None else m.to(dtype if dtype == torch.float64 else torch.float32),
                                 return_alpha=True, backend=backend)
    assert out.dtype == dtype and out.shape == q.shape
    ref_leaves = [t.double().requires_grad_() for t in (q, k, v) + ((emb,) if emb is not None else ())]
    ref_out, ref_alpha = graph_attention_reference(*ref_leaves[:3], ei, ref_leaves[3] if emb is not None else None, m)
    gen = torch.Generator().manual_seed(seed_for(seed + 1))
    go = torch.randn(out.shape, generator=gen, dtype=torch.float64)
    ref_grads = torch.autograd.grad(ref_out, ref_leaves, go)
    grads = torch.autograd.grad(out, leaves, go.to(dtype))
    out_mag, grad_mags = magnitudes(q, k, v, emb, m, ei, go)
    k_out, k_grad = lengths(ei, n_src, n_dst, dim)
    acc = accumulation(dtype)
    assert torch.isfinite(out).all()
    assert_close(out, ref_out, dtype, k_out, scale=out_mag, accumulate=acc, what="out")
    # The weights come out in float32 (float64 for float64 inputs): one rounding of a softmax.
    assert alpha.shape == (e, heads) and not alpha.requires_grad
    assert_close(alpha, ref_alpha, dtype, dim + k_out, accumulate=acc, what="alpha")
    for name, g, r, s in zip(("dq", "dk", "dv", "dedge"), grads, ref_grads, grad_mags):
        assert torch.isfinite(g).all(), name
        assert_close(g, r, dtype, k_grad, scale=s, accumulate=acc, what=name)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("edge,mask", [(False, False), (True, False), (False, True), (True, True)],
                         ids=["plain", "edge", "mask", "edge+mask"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_matches_reference(backend, edge, mask, dtype):
    if backend == "triton" and dtype == torch.float64:
        pytest.skip("the Triton kernels have no float64 path (the capability table says so)")
    check_against_reference(backend, 13, 13, 45, 2, 7, dtype, edge, mask, seed=1)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(9, 5, 30, 3, 16), (4, 11, 25, 1, 100), (6, 6, 20, 7, 1)],
                         ids=["bipartite-more-src", "bipartite-more-dst-d100", "d1"])
def test_shapes(backend, shape):
    check_against_reference(backend, *shape, torch.float32, edge=True, mask=False, seed=2)


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_edges_and_isolated_nodes(backend):
    q, k, v = torch.randn(5, 2, 4), torch.randn(3, 2, 4), torch.randn(3, 2, 4)
    leaves = [t.requires_grad_() for t in (q, k, v)]
    out, alpha = graph_attention(*leaves, torch.zeros(2, 0, dtype=torch.long), return_alpha=True, backend=backend)
    assert torch.equal(out, torch.zeros_like(out)) and alpha.shape == (0, 2)
    grads = torch.autograd.grad(out.sum(), leaves)
    assert all(torch.equal(g, torch.zeros_like(g)) for g in grads)
    # one edge into node 4: every other node is isolated, every other source unused
    ei = torch.tensor([[1], [4]])
    out = graph_attention(*leaves, ei, backend=backend)
    assert torch.equal(out[:4], torch.zeros_like(out[:4]))
    assert_close(out[4], v[1].detach(), torch.float32, 1, what="single edge: the value itself")
    dq, dk, dv = torch.autograd.grad(out.sum(), leaves)
    assert torch.isfinite(dq).all() and torch.equal(dk[[0, 2]], torch.zeros_like(dk[[0, 2]]))
    assert torch.equal(dv[[0, 2]], torch.zeros_like(dv[[0, 2]]))


def test_gradcheck():
    ei, q, k, v, emb, m = make(6, 5, 16, 2, 3, torch.float64, edge=True, mask=True, seed=3)
    leaves = [t.requires_grad_() for t in (q, k, v, emb)]
    assert torch.autograd.gradcheck(lambda q_, k_, v_, e_: graph_attention(q_, k_, v_, ei, e_, m, backend="cpu"),
                                    leaves)


@pytest.mark.parametrize("need_alpha", [False, True])
def test_opcheck(need_alpha):
    ei, q, k, v, emb, m = make(7, 6, 20, 2, 5, torch.float64, edge=True, mask=True, seed=4)
    g = AttentionGraph(ei, 7, 6)
    args = (q.requires_grad_(), k.requires_grad_(), v.requires_grad_(), emb.requires_grad_(), m, *g.structure(),
            0.5, need_alpha, "cpu")
    torch.library.opcheck(torch.ops.hotspot_erc.graph_attention.default, args)
    out, lse, _ = torch.ops.hotspot_erc.graph_attention.default(*args)
    go = torch.randn_like(out)
    torch.library.opcheck(torch.ops.hotspot_erc.graph_attention_bwd.default,
                          (go, q.detach(), k.detach(), v.detach(), emb.detach(), m, out.detach(), lse, *g.structure(),
                           0.5, True, "cpu"))


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "reference"])
def test_deterministic_at_any_thread_count(backend):
    ei, q, k, v, emb, _ = make(40, 40, 400, 3, 20, torch.float32, edge=True, seed=5)
    results = []
    saved = torch.get_num_threads()
    try:
        for threads in (1, 2, 1):
            torch.set_num_threads(threads)
            leaves = [t.clone().requires_grad_() for t in (q, k, v, emb)]
            out = graph_attention(*leaves[:3], ei, leaves[3], backend=backend)
            results.append([out] + list(torch.autograd.grad(out, leaves, torch.ones_like(out))))
    finally:
        torch.set_num_threads(saved)
    for other in results[1:]:
        assert all(torch.equal(a, b) for a, b in zip(results[0], other))


def test_prepared_graph_is_reused_and_checked():
    ei, q, k, v, _, _ = make(8, 8, 30, 2, 4, torch.float32, seed=6)
    g = AttentionGraph(ei, 8)
    assert torch.equal(graph_attention(q, k, v, g), graph_attention(q, k, v, ei))
    with pytest.raises(ValueError, match="source and 8 destination"):
        graph_attention(q[:5], k, v, g)


def test_bad_input():
    ei, q, k, v, emb, _ = make(6, 6, 10, 2, 4, torch.float32, edge=True, seed=7)
    with pytest.raises(ValueError, match="out of range"):
        graph_attention(q, k, v, torch.tensor([[0, 6], [1, 2]]))
    with pytest.raises(ValueError, match=r"shape \[2, E\]"):
        AttentionGraph(torch.zeros(3, 4, dtype=torch.long), 4)
    with pytest.raises(TypeError, match="edge_index must have dtype"):
        AttentionGraph(torch.zeros(2, 4), 4)
    with pytest.raises(TypeError, match="num_src must be a Python int"):
        AttentionGraph(ei, torch.tensor(6))
    with pytest.raises(ValueError, match="k must be"):
        graph_attention(q, k[:, :1], v, ei)
    with pytest.raises(ValueError, match="v must have k's shape"):
        graph_attention(q, k, v[:, :, :2], ei)
    with pytest.raises(TypeError, match="k must have dtype"):
        graph_attention(q, k.double(), v, ei)
    with pytest.raises(ValueError, match=r"edge must be \[E, H, D\]"):
        graph_attention(q, k, v, ei, emb[:3])
    with pytest.raises(ValueError, match=r"edge_mask must be \[E, H\]"):
        graph_attention(q, k, v, ei, edge_mask=torch.ones(10, 3))
    with pytest.raises(ValueError, match="edge_mask takes no gradient"):
        graph_attention(q, k, v, ei, edge_mask=torch.ones(10, 2, requires_grad=True))
    with pytest.raises(ValueError, match="scale must be a finite number"):
        graph_attention(q, k, v, ei, scale=float("nan"))
    with pytest.raises(TypeError, match="graph must be an AttentionGraph"):
        graph_attention(q, k, v, [[0], [1]])
    with pytest.raises(BackendUnavailable):
        graph_attention(q, k, v, ei, backend="cuda")


def test_compiled_kernel_checks_its_structure():
    """A direct torch.ops call with a malformed structure raises, never reads out of bounds."""
    ei, q, k, v, _, _ = make(6, 6, 10, 2, 4, torch.float32, seed=8)
    rowptr, col, eid, *_ = AttentionGraph(ei, 6).structure()
    fwd = torch.ops.hotspot_erc.graph_attention_forward
    with pytest.raises(RuntimeError, match="out of range"):
        fwd(q, k, v, None, None, rowptr, col + 6, eid, 0.5, False)
    with pytest.raises(RuntimeError, match="permutation"):
        fwd(q, k, v, None, None, rowptr, col, torch.zeros_like(eid), 0.5, False)
    with pytest.raises(RuntimeError, match="pointer must run from 0"):
        fwd(q, k, v, None, None, rowptr - 1, col, eid, 0.5, False)
    with pytest.raises(RuntimeError, match="non-decreasing"):
        fwd(q, k, v, None, None, torch.tensor([0, 5, 3, 10, 10, 10, 10]), col, eid, 0.5, False)
    with pytest.raises(RuntimeError, match="must have q's dtype"):
        fwd(q, k.double(), v, None, None, rowptr, col, eid, 0.5, False)


@pytest.mark.parametrize("dtype", LOW_PRECISION)
def test_half_types_on_cpu(dtype):
    check_against_reference("cpu", 10, 10, 30, 2, 8, dtype, edge=True, mask=True, seed=9)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_triton_on_cuda_at_conversation_scale(dtype):
    """The Triton kernels on a GPU, a CORECT-sized graph (7 heads x 100), against float64."""
    gen = torch.Generator().manual_seed(seed_for(10))
    n, e, heads, dim = 1800, 30000, 7, 100
    ei = random_edges(n, n, e, gen, isolated=20).cuda()
    q, k, v, emb = (torch.randn(rows, heads, dim, generator=gen).to("cuda", dtype) for rows in (n, n, n, e))
    leaves = [t.requires_grad_() for t in (q, k, v, emb)]
    out = graph_attention(*leaves[:3], ei, leaves[3], backend="triton")
    go = torch.randn(out.shape, generator=gen).cuda()
    grads = torch.autograd.grad(out, leaves, go.to(dtype))
    refs = [t.detach().double().requires_grad_() for t in leaves]
    ref = graph_attention_reference(*refs[:3], ei, refs[3])[0]
    ref_grads = torch.autograd.grad(ref, refs, go.double())
    out_mag, grad_mags = magnitudes(*refs, None, ei, go)
    k_out, k_grad = lengths(ei, n, n, dim)
    acc = accumulation(dtype)
    assert_close(out, ref, dtype, k_out, scale=out_mag, accumulate=acc, what="out")
    for name, g, r, s in zip(("dq", "dk", "dv", "dedge"), grads, ref_grads, grad_mags):
        assert_close(g, r, dtype, k_grad, scale=s, accumulate=acc, what=name)


def test_torch_compile_fullgraph():
    ei, q, k, v, emb, _ = make(8, 6, 25, 2, 4, torch.float32, edge=True, seed=11)
    graph = AttentionGraph(ei, 8, 6)
    leaves = [t.requires_grad_() for t in (q, k, v, emb)]

    def fn(q, k, v, e):
        return graph_attention(q, k, v, graph, e, backend="cpu").square().sum()

    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    got = torch.autograd.grad(compiled(*leaves), leaves)
    want = torch.autograd.grad(fn(*leaves), leaves)
    assert all(torch.equal(a, b) for a, b in zip(got, want))
