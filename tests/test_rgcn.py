"""RGCNConv: a drop-in for torch_geometric.nn.RGCNConv (same state_dict, same outputs)."""
import pickle

import pytest
import torch

from hotspot_erc.nn.rgcn import RGCNConv
from hotspot_erc.ops.relational import RelationalGraph
from hotspot_erc.reference import relational as ref
from conftest import OFFLINE_SM90_BUILD, assert_compiles_offline, seed_for
from test_relational import bucket_degree, out_degree, random_graph
from tolerance import assert_close, magnitude, magnitude_grads

pyg = pytest.importorskip("torch_geometric.nn")

DECOMPOSITIONS = [{}, {"num_bases": 2}, {"num_bases": 6}, {"num_blocks": 2}]


def pair(in_c, out_c, r, dtype=torch.float64, device="cpu", **kw):
    theirs = pyg.RGCNConv(in_c, out_c, r, **kw).to(device, dtype)
    ours = RGCNConv(in_c, out_c, r, **kw).to(device, dtype)
    ours.load_state_dict(theirs.state_dict())  # strict: same names and shapes
    return theirs, ours


def spec(layer, ei, et):
    """``layer`` as ``ref.rgcn_conv`` of (x, *the layer's parameters in its order): multilinear with
    non-negative coefficients, so on magnitudes it gives Σ|terms| (:func:`magnitude`, :func:`magnitude_grads`)."""
    names = [k for k, _ in layer.named_parameters()]
    aggr = "sum" if layer.aggr == "add" else "mean"

    def fn(x, *ps):
        p = dict(zip(names, ps))
        return ref.rgcn_conv(x, ei, et, p["weight"], p.get("comp"), p.get("root"), p.get("bias"), aggr)

    return fn


def layer_k(graph, n, in_c, out_c, num_bases=None):
    """k of an RGCN layer's output and of its gradients. A chain of reductions sums its lengths
    (the stages' independent roundings add as one random walk).
    Output: a bucket's mean, the GEMM over R·in (with a basis, W_r composed from B terms first),
    the root GEMM over in, the bias.
    Gradients, the longest of: x's (W_r composed, a GEMM over out per relation and the root, one
    term per out-edge); W_r's (a bucket's mean and an out-edge sum, both counted as the order is
    the backend's, then one term per node; a basis adds the sum over R, comp's the sum over in·out)."""
    r, b = graph.num_relations, num_bases or 0
    deg, outdeg = bucket_degree(graph), out_degree(graph.edge_index, n)
    k_out = deg + (r + 1) * in_c + b + 1
    k_grad = max(b + (r + 1) * out_c + outdeg, deg + outdeg + n + (r + in_c * out_c if b else 0))
    return k_out, k_grad


@pytest.mark.parametrize("aggr", ["mean", "add"])
@pytest.mark.parametrize("kw", DECOMPOSITIONS, ids=["plain", "bases2", "bases6", "blocks2"])
@pytest.mark.parametrize("in_c,out_c", [(6, 10), (10, 6)])  # both orders of the computation
def test_matches_pyg(device, aggr, kw, in_c, out_c):
    n, r = 23, 5
    ei, et = random_graph(n, r, 90, device, isolated=3, unused=2)
    theirs, ours = pair(in_c, out_c, r, device=device, aggr=aggr, **kw)
    x = torch.randn(n, in_c, dtype=torch.float64, device=device, requires_grad=True)
    out, want = ours(x, ei, et), theirs(x, ei, et)
    k_out, k_grad = layer_k(RelationalGraph(ei, et, n, r), n, in_c, out_c, kw.get("num_bases"))
    leaves = [x, *ours.parameters()]
    assert_close(out, want, torch.float64, k_out, scale=magnitude(spec(ours, ei, et), *leaves), what="out")
    gout = torch.randn_like(out)
    ours_g = torch.autograd.grad(out, leaves, gout)
    theirs_g = torch.autograd.grad(want, [x, *theirs.parameters()], gout)
    for a, b, m in zip(ours_g, theirs_g, magnitude_grads(spec(ours, ei, et), leaves, gout)[1]):
        assert_close(a, b, torch.float64, k_grad, scale=m, what="grad")


@pytest.mark.parametrize("order", ["aggregate_first", "transform_first"])
def test_both_orders_with_dense_weights(monkeypatch, order):
    """The CPU always takes the blocked aggregate-first path; check the GPU's orders here too."""
    n, r = 30, 4
    ei, et = random_graph(n, r, 100, "cpu")
    theirs, ours = pair(7, 5, r)
    monkeypatch.setattr(RGCNConv, "plan", lambda self, num_nodes=1, device=None: (order, False))
    x = torch.randn(n, 7, dtype=torch.float64, requires_grad=True)
    out, want = ours(x, ei, et), theirs(x, ei, et)
    k_out, k_grad = layer_k(RelationalGraph(ei, et, n, r), n, 7, 5)
    leaves = [x, *ours.parameters()]
    assert_close(out, want, torch.float64, k_out, scale=magnitude(spec(ours, ei, et), *leaves), what="out")
    (gx,) = torch.autograd.grad(out.sum(), x)
    (gx_want,) = torch.autograd.grad(want.sum(), x)
    scale = magnitude_grads(spec(ours, ei, et), leaves, torch.ones_like(out))[1][0]
    assert_close(gx, gx_want, torch.float64, k_grad, scale=scale, what="grad x")


def test_plan_picks_the_cheaper_order():
    assert RGCNConv(16, 64, 4).plan(100) == ("aggregate_first", False)
    assert RGCNConv(64, 16, 4).plan(100) == ("transform_first", False)
    # basis with B < R: the basis is applied on the feature side, shrinking the GEMM by R/B
    assert RGCNConv(32, 32, 8, num_bases=2).plan(100)[1] is True
    assert RGCNConv(32, 32, 4, num_bases=8).plan(100)[1] is False
    # on the CPU dense weights take the blocked aggregate-first path whatever the shape
    assert RGCNConv(64, 16, 4).plan(100, torch.device("cpu")) == ("aggregate_first", False)
    assert RGCNConv(64, 16, 4).plan(100, torch.device("cuda")) == ("transform_first", False)


def test_float32_and_prepared_graph_reuse(device):
    n, r = 40, 4
    ei, et = random_graph(n, r, 200, device)
    theirs, ours = pair(12, 12, r, dtype=torch.float32, device=device)
    x = torch.randn(n, 12, device=device)
    g = RelationalGraph(ei, et, n, r)
    want = theirs(x, ei, et)
    k_out, _ = layer_k(g, n, 12, 12)
    scale = magnitude(spec(ours, ei, et), x, *ours.parameters())
    assert_close(ours(x, ei, et), want, torch.float32, k_out, scale=scale, what="edge_index")
    assert_close(ours(x, g), want, torch.float32, k_out, scale=scale, what="prepared graph")
    assert torch.equal(ours(x, g), ours(x, ei, et))


@pytest.mark.parametrize("aggr", ["mean", "add"])
def test_featureless_nodes_like_pyg(aggr):
    n, r = 9, 3
    ei, et = random_graph(n, r, 30, "cpu")
    theirs, ours = pair(n, 4, r, aggr=aggr, num_bases=2)
    # featureless: x is the identity (in = n), index features its rows
    k_out, _ = layer_k(RelationalGraph(ei, et, n, r), n, n, 4, 2)
    eye = torch.eye(n, dtype=torch.float64)
    scale = magnitude(spec(ours, ei, et), eye, *ours.parameters())
    assert_close(ours(None, ei, et), theirs(None, ei, et), torch.float64, k_out, scale=scale, what="x=None")
    idx = torch.randperm(n)
    scale = magnitude(spec(ours, ei, et), eye[idx], *ours.parameters())
    assert_close(ours(idx, ei, et), theirs(idx, ei, et), torch.float64, k_out, scale=scale, what="index x")


def test_no_edges_root_and_bias_only():
    ours = RGCNConv(5, 3, 2)
    with torch.no_grad():
        ours.bias.normal_()
    x = torch.randn(4, 5)
    empty = torch.empty(2, 0, dtype=torch.long)
    out = ours(x, empty, torch.empty(0, dtype=torch.long))
    # the root GEMM over in = 5, then the bias
    assert_close(out, x @ ours.root + ours.bias, torch.float32, 5 + 1,
                 scale=magnitude(lambda x, w, b: x @ w + b, x, ours.root, ours.bias), what="root and bias")
    no_root = RGCNConv(5, 3, 2, root_weight=False, bias=False)
    assert "root" not in no_root.state_dict() and "bias" not in no_root.state_dict()
    assert torch.equal(no_root(x, empty, torch.empty(0, dtype=torch.long)), torch.zeros(4, 3))


@pytest.mark.parametrize("kw", DECOMPOSITIONS[:2] + DECOMPOSITIONS[3:], ids=["plain", "bases2", "blocks2"])
def test_gradcheck_float64(kw):
    n, r = 7, 3
    ei, et = random_graph(n, r, 20, "cpu")
    layer = RGCNConv(4, 4, r, **kw).double()
    x = torch.randn(n, 4, dtype=torch.float64, requires_grad=True)
    params = [p for p in layer.parameters()]

    def fn(x, *ps):
        return torch.func.functional_call(layer, dict(zip([k for k, _ in layer.named_parameters()], ps)),
                                          (x, ei, et))

    assert torch.autograd.gradcheck(fn, (x, *params))


def test_reference_layer_agrees():
    n, r = 15, 4
    ei, et = random_graph(n, r, 50, "cpu")
    layer = RGCNConv(6, 5, r, num_blocks=1).double()
    x = torch.randn(n, 6, dtype=torch.float64)
    want = ref.rgcn_conv(x, ei, et, layer.weight, None, layer.root, layer.bias, "mean")
    k_out, _ = layer_k(RelationalGraph(ei, et, n, r), n, 6, 5)
    assert_close(layer(x, ei, et), want, torch.float64, k_out,
                 scale=magnitude(spec(layer, ei, et), x, *layer.parameters()), what="out")


def test_torch_compile_fullgraph():
    n, r = 20, 3
    ei, et = random_graph(n, r, 60, "cpu")
    layer = RGCNConv(8, 8, r)
    x = torch.randn(n, 8, requires_grad=True)
    compiled = torch.compile(layer, fullgraph=True)  # inductor: the op's fake shapes and autograd
    out = compiled(x, ei, et)
    k_out, _ = layer_k(RelationalGraph(ei, et, n, r), n, 8, 8)
    assert_close(out, layer(x, ei, et), torch.float32, k_out,
                 scale=magnitude(spec(layer, ei, et), x.detach(), *layer.parameters()), what="compiled")
    out.sum().backward()
    assert layer.weight.grad is not None and x.grad is not None


def test_errors_and_repr():
    with pytest.raises(ValueError, match="either num_bases"):
        RGCNConv(4, 4, 2, num_bases=2, num_blocks=2)
    with pytest.raises(ValueError, match="aggr must be one of"):
        RGCNConv(4, 4, 2, aggr="max")
    with pytest.raises(ValueError, match="must divide"):
        RGCNConv(5, 4, 2, num_blocks=2)
    layer = RGCNConv(4, 3, 2)
    ei, et = random_graph(6, 2, 8, "cpu")
    with pytest.raises(ValueError, match=r"x must have shape \[N, 4\]"):
        layer(torch.randn(6, 5), ei, et)
    with pytest.raises(ValueError, match="edge_type is required"):
        layer(torch.randn(6, 4), ei)
    with pytest.raises(ValueError, match="out of range"):
        layer(torch.randn(int(ei.max()), 4), ei, et)  # one row short of the largest node id drawn
    with pytest.raises(ValueError, match="relations"):
        layer(torch.randn(6, 4), RelationalGraph(ei, et, 6, 3))
    with pytest.raises(TypeError, match="bipartite"):
        layer((torch.randn(6, 4), torch.randn(6, 4)), ei, et)
    assert "num_relations=2" in repr(layer)
    pickle.loads(pickle.dumps(layer))


# ----------------------------------------------------------------------------- grouped path

def _segment_case(groups, d_in, d_out, root, bias, dtype, pad=3):
    lens = [4, 0, 7, 1, 19][:groups + int(root)]
    ptr = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), dtype=torch.long)
    a = torch.randn(int(ptr[-1]) + pad, d_in, dtype=dtype)
    w = torch.randn(groups, d_in, d_out, dtype=dtype)
    r = torch.randn(d_in, d_out, dtype=dtype) if root else None
    b = torch.randn(d_out, dtype=dtype) if bias else None
    return a, ptr, w, r, b


@pytest.mark.parametrize("backend", ["cpu", "triton"])
@pytest.mark.parametrize("root,bias", [(True, True), (True, False), (False, False)])
def test_segment_matmul_matches_reference(backend, root, bias):
    from hotspot_erc.ops.segment_matmul import reference, segment_matmul

    dtype = torch.float64 if backend == "cpu" else torch.float32
    a, ptr, w, r, b = _segment_case(4, 12, 20, root, bias, dtype)
    leaves = [t.requires_grad_() for t in (a, w, r, b) if t is not None]
    leaves64 = [t.detach().double().requires_grad_() for t in leaves]

    def spec_fn(a, w, *rest):
        rest = iter(rest)
        return reference(a, ptr, w, next(rest) if root else None, next(rest) if bias else None)

    out = segment_matmul(a, ptr, w, r, b, backend=backend)
    want = spec_fn(*leaves64)
    # out: a GEMM over in = 12, then the bias; gradients: a's sums over out = 20, the weights' and
    # the bias's over a group's rows (the root group has the most)
    k_out, k_grad = 12 + 1, max(20, int(ptr.diff().max()))
    assert out.shape == want.shape
    assert_close(out, want, dtype, k_out, scale=magnitude(spec_fn, *leaves64), what="out")
    assert (out[int(ptr[-1]):] == 0).all()  # padding rows past the last group
    g = torch.randn_like(out)
    for got, exp, m in zip(torch.autograd.grad(out, leaves, g), torch.autograd.grad(want, leaves64, g.double()),
                           magnitude_grads(spec_fn, leaves64, g)[1]):
        assert_close(got, exp, dtype, k_grad, scale=m, what="grad")


def test_segment_matmul_gradcheck_and_errors():
    from hotspot_erc.ops.segment_matmul import segment_matmul

    a, ptr, w, r, b = _segment_case(3, 3, 4, True, True, torch.float64, pad=1)
    assert torch.autograd.gradcheck(lambda *t: segment_matmul(t[0], ptr, *t[1:]),
                                    [t.requires_grad_() for t in (a, w, r, b)])
    with pytest.raises(ValueError, match="ptr must have 5 entries"):
        segment_matmul(a, ptr[:-1], w, r, b)
    with pytest.raises(ValueError, match="pass root with it"):
        segment_matmul(a, ptr[1:], w, None, b)
    with pytest.raises(RuntimeError, match="non-decreasing"):
        torch.ops.hotspot_erc.segment_matmul(a, torch.tensor([0, 5, 2, 3, 4]), w, r, b, None)


@pytest.mark.parametrize("root,bias", [(True, True), (False, False)])
def test_segment_matmul_opcheck(root, bias):
    a, ptr, w, r, b = _segment_case(3, 5, 4, root, bias, torch.float32, pad=1)
    for t in (a, w, r, b):
        if t is not None:
            t.requires_grad_()
    torch.library.opcheck(torch.ops.hotspot_erc.segment_matmul.default, (a, ptr, w, r, b, None))


def test_grouped_path_skips_empty_buckets_and_matches_dense():
    """The grouped path's GEMM rows: one per node plus one per non-empty bucket (not N*R), and
    the layer agrees with the dense formulation; also without root weight or bias."""
    from hotspot_erc.nn.rgcn import _grouped_ok

    n, r = 30, 6
    ei, et = random_graph(n, r, 70, "cpu", isolated=4, unused=2)
    graph = RelationalGraph(ei, et, n, r)
    cs = graph.compact()
    nonempty = int((graph.in_degree() > 0).sum())
    assert cs["rows"] == n + nonempty < n * r
    x = torch.randn(n, 5, dtype=torch.float64)
    assert _grouped_ok(x)
    for kw in ({}, {"root_weight": False}, {"bias": False}, {"root_weight": False, "bias": False}):
        layer = RGCNConv(5, 7, r, **kw).double()
        if layer.bias is not None:
            torch.nn.init.normal_(layer.bias)
        z = ref.relational_aggregate(x, ei, et, n, r, "mean")
        want = z.reshape(n, r * 5) @ layer.weight.reshape(r * 5, 7)
        if layer.root is not None:
            want = want + x @ layer.root
        if layer.bias is not None:
            want = want + layer.bias
        k_out, _ = layer_k(graph, n, 5, 7)
        assert_close(layer(x, graph), want, torch.float64, k_out,
                     scale=magnitude(spec(layer, ei, et), x, *layer.parameters()), what=str(kw))


def _conv_case(n, r, e, d_in, d_out, root, bias, dtype=torch.float64, chunk_rows=0):
    """A graph with isolated nodes, an unused relation, self loops and duplicate edges; with
    ``chunk_rows`` more buckets in one relation than the kernel's chunk (the chunk loop runs)."""
    ei, et = random_graph(n, r, e, "cpu", isolated=3, unused=1)
    if chunk_rows:
        star = torch.arange(chunk_rows)
        ei = torch.cat([ei, torch.stack([(star + 1) % n, star % n])], 1)
        et = torch.cat([et, torch.zeros(chunk_rows, dtype=et.dtype)])
    graph = RelationalGraph(ei, et, n, r)
    x = torch.randn(n, d_in, dtype=dtype)
    w = torch.randn(r, d_in, d_out, dtype=dtype)
    rt = torch.randn(d_in, d_out, dtype=dtype) if root else None
    b = torch.randn(d_out, dtype=dtype) if bias else None
    return graph, ei, et, x, w, rt, b


@pytest.mark.parametrize("reduce", ["mean", "sum"])
@pytest.mark.parametrize("root,bias", [(True, True), (True, False), (False, True), (False, False)])
@pytest.mark.parametrize("shape", [(40, 5, 120, 6, 9), (1100, 3, 1500, 4, 3), (7, 2, 0, 3, 5), (9, 2, 20, 0, 4)],
                         ids=["small", "chunks", "no_edges", "in0"])
def test_relational_conv_matches_reference(reduce, root, bias, shape):
    from hotspot_erc.ops.relational import relational_conv

    n, r, e, d_in, d_out = shape
    graph, ei, et, x, w, rt, b = _conv_case(n, r, e, d_in, d_out, root, bias,
                                            chunk_rows=700 if n > 1000 else 0)
    leaves = [t.clone().requires_grad_() for t in (x, w) + ((rt,) if root else ()) + ((b,) if bias else ())]
    xr, wr = leaves[:2]
    rr = leaves[2] if root else None
    br = leaves[-1] if bias else None
    out = relational_conv(xr, wr, graph, rr, br, reduce)

    def spec_fn(x, w, *rest):
        rest = iter(rest)
        return ref.rgcn_conv(x, graph.edge_index, graph.edge_type, w, None, next(rest) if root else None,
                             next(rest) if bias else None, reduce)

    want = spec_fn(*leaves)
    k_out, k_grad = layer_k(graph, n, d_in, d_out)
    assert_close(out, want, torch.float64, k_out, scale=magnitude(spec_fn, *leaves), what="out")
    g = torch.randn_like(out)
    got = torch.autograd.grad(out, leaves, g)
    ref_leaves = [t.clone().requires_grad_() for t in leaves]
    wanted = torch.autograd.grad(spec_fn(*ref_leaves), ref_leaves, g, allow_unused=True)
    for a, w_, m in zip(got, wanted, magnitude_grads(spec_fn, leaves, g)[1]):
        assert_close(a, w_ if w_ is not None else torch.zeros_like(a), torch.float64, k_grad, scale=m,
                     what="grad")


def test_relational_conv_gradcheck_opcheck_and_bitwise_repeat():
    from hotspot_erc.ops.relational import relational_conv

    graph, ei, et, x, w, rt, b = _conv_case(12, 3, 40, 3, 4, True, True)
    leaves = [t.requires_grad_() for t in (x, w, rt, b)]
    assert torch.autograd.gradcheck(lambda *a: relational_conv(*a[:2], graph, *a[2:]), leaves)
    rm = graph.relation_major()
    args = (x.float(), w.float(), rt.float(), b.float(), rm["rel_ptr"], rm["ptr"], rm["col"], rm["dst"], True)
    torch.library.opcheck(torch.ops.hotspot_erc.relational_conv.default,
                          tuple(a.detach().requires_grad_() if a.is_floating_point() else a
                                for a in args[:4]) + args[4:])
    # Same inputs, same bits, with threads splitting the gather, the epilogue and the scatter (the
    # kernel's own sums run in fixed orders; the GEMMs are the BLAS's, as for torch.mm).
    graph, ei, et, x, w, rt, b = _conv_case(1100, 3, 3000, 16, 8, True, True, torch.float32, chunk_rows=700)
    runs = []
    for threads in (2, 2):
        saved = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            leaves = [t.clone().requires_grad_() for t in (x, w, rt, b)]
            out = relational_conv(leaves[0], leaves[1], graph, leaves[2], leaves[3])
            runs.append([out.detach()] + list(torch.autograd.grad(out.square().sum(), leaves)))
        finally:
            torch.set_num_threads(saved)
    for a, b_ in zip(*runs):
        assert torch.equal(a, b_)


def test_relational_conv_rejects_bad_structure():
    graph, ei, et, x, w, rt, b = _conv_case(10, 2, 30, 3, 4, True, True)
    rm = graph.relation_major()
    ok = (x, w, rt, b, rm["rel_ptr"], rm["ptr"], rm["col"], rm["dst"], True)
    conv = torch.ops.hotspot_erc.relational_conv
    bad_dst = rm["dst"].clone()
    bad_dst[0] = 99
    with pytest.raises(RuntimeError, match="is not a node"):
        conv(*ok[:7], bad_dst, True)
    twice = rm["dst"].clone()
    s, e = rm["ranges"][0]
    if e - s >= 2:
        twice[s + 1] = twice[s]
        with pytest.raises(RuntimeError, match="two buckets of relation 0"):
            conv(*ok[:7], twice, True)
    with pytest.raises(RuntimeError, match="rel_ptr must have"):
        conv(*ok[:4], rm["rel_ptr"][:-1], *ok[5:])


def test_rgcn_layer_cpu_is_one_launch_each_way():
    """On the CPU the grouped path is the fused kernel: one launch forward, one backward."""
    from hotspot_erc.testing import count_launches

    graph, ei, et, x, *_ = _conv_case(30, 4, 90, 6, 6, True, True, torch.float32)
    layer = RGCNConv(6, 5, 4)
    x.requires_grad_()
    fwd = count_launches(layer, x, graph)
    assert fwd.total == 1 and fwd.launches == {"hotspot_erc.relational_conv": 1}, fwd


_SM90_SEGMENT = OFFLINE_SM90_BUILD + """
import hotspot_erc.kernels.segment_matmul as K

for dt, prec in (("bf16", "tf32"), ("fp32", "ieee")):
    ptrs = dict(a_ptr="*" + dt, w_ptr="*" + dt, root_ptr="*" + dt, bias_ptr="*" + dt, out_ptr="*" + dt,
                tiles_ptr="*i64", ptr_ptr="*i64")
    for root in (0, 1):
        build(K._segment_mm_kernel, ptrs, dict(ROOT=root, HAS_BIAS=bool(root), UPCAST=False, PRECISION=prec,
              BLOCK_M=64, BLOCK_N=128, BLOCK_K=64 if dt == "bf16" else 32), 8, 3)
    ptrs = dict(a_ptr="*" + dt, g_ptr="*" + dt, ptr_ptr="*i64", dw_ptr="*" + dt, droot_ptr="*" + dt, db_ptr="*" + dt)
    build(K._segment_wgrad_kernel, ptrs, dict(ROOT=1, HAS_BIAS=True, UPCAST=False, PRECISION=prec,
          BLOCK_M=64, BLOCK_K=64, BLOCK_N=64), 4, 3)
print("compiled")
"""


def test_segment_matmul_kernels_compile_for_sm90():
    assert_compiles_offline(_SM90_SEGMENT)


@pytest.mark.gpu
def test_cuda_grouped_path_matches_cpu_and_has_no_sync():
    """The CUDA side of the same design: the Triton gather-GEMM (relational_conv's CUDA path,
    no Z in memory) and the per-node sum, tiles cached with the graph, no host sync after the
    graph is prepared, 2 launches forward and 3 backward (more checks in
    test_gather_segment_matmul.py)."""
    n, r = 3000, 12
    ei, et = random_graph(n, r, 30000, "cpu", isolated=10, unused=1)
    layer = RGCNConv(64, 48, r)
    x = torch.randn(n, 64)
    want = layer(x, RelationalGraph(ei, et, n, r))
    scale = magnitude(spec(layer, ei, et), x, *layer.parameters())
    k_out, _ = layer_k(RelationalGraph(ei, et, n, r), n, 64, 48)
    layer_c = layer.cuda()
    graph = RelationalGraph(ei.cuda(), et.cuda(), n, r)
    xc = x.cuda().requires_grad_()
    layer_c(xc, graph).sum().backward()  # builds the compact structure and tiles, compiles
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = layer_c(xc, graph)
        out.sum().backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    # float32 on the GPU: the Triton dots round to TF32 where torch allows it for matmuls
    unit = "tf32" if torch.backends.cuda.matmul.allow_tf32 else torch.float32
    assert_close(out, want, unit, k_out, scale=scale, what="cuda vs cpu")
    from hotspot_erc.testing import count_fwd_bwd

    fwd, bwd = count_fwd_bwd(lambda x: layer_c(x, graph), xc, inputs=[xc, *layer_c.parameters()])
    assert fwd.launches.get("triton:_gather_mm_kernel") == 1 and fwd.total <= 3, fwd
    assert bwd.launches.get("triton:_gather_wgrad_kernel") == 1 and bwd.total <= 6, bwd


@pytest.mark.parametrize("backend", [None, "triton"])
def test_three_launch_fallback_without_relational_conv(monkeypatch, backend):
    """Where the fused op is missing (a build without it): gather, segment_matmul, node sum;
    without a root weight the nodes' root rows must count as zeros, on every segment_matmul
    backend (the Triton kernel leaves rows outside every group unwritten)."""
    import hotspot_erc.nn.rgcn as rgcn_mod
    from hotspot_erc.ops import use_backend

    if backend == "triton":
        pytest.importorskip("triton")
    monkeypatch.setattr(rgcn_mod, "relational_conv_available", lambda device: False)
    n, r = 30, 6
    ei, et = random_graph(n, r, 70, "cpu", isolated=4, unused=2)
    graph = RelationalGraph(ei, et, n, r)
    x = torch.randn(n, 5)
    k_out, _ = layer_k(graph, n, 5, 7)
    for kw in ({}, {"root_weight": False}, {"root_weight": False, "bias": False}):
        torch.manual_seed(seed_for(0))
        layer = RGCNConv(5, 7, r, **kw)
        if layer.bias is not None:
            torch.nn.init.normal_(layer.bias)
        z = ref.relational_aggregate(x.double(), ei, et, n, r, "mean")
        want = z.reshape(n, r * 5) @ layer.weight.double().reshape(r * 5, 7)
        if layer.root is not None:
            want = want + x.double() @ layer.root.double()
        if layer.bias is not None:
            want = want + layer.bias.double()
        if backend is None:
            got = layer(x, graph)
        else:
            with use_backend(backend):
                got = layer(x, graph)
        assert_close(got, want, torch.float32, k_out,
                     scale=magnitude(spec(layer, ei, et), x.double(), *(p.double() for p in layer.parameters())),
                     what=str(kw))
