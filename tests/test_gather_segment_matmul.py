"""The Triton gather-GEMM (``kernels/gather_segment_matmul.py``): RGCNConv's CUDA path, the
relational gather fused into segment_matmul's A-tile load. On CPU tensors through
``TRITON_INTERPRET=1`` against the reference (float64 and float32 kernels against float64
references, within the rounding bound of their dtype), the former three-launch path, PyG's
layer; the GPU-marked tests run the same on CUDA and check bitwise repeats."""
import functools

import pytest
import torch

from conftest import OFFLINE_SM90_BUILD, assert_compiles_offline
from hotspot_erc import _ext
from hotspot_erc.ops import _backend
from hotspot_erc.ops.relational import RelationalGraph, _triton_relational_conv, relational_conv
from hotspot_erc.reference import relational as ref
from test_relational import random_graph
from tolerance import C, abs_copy, assert_close, magnitude, rel_bound, rel_err

needs_ops = pytest.mark.skipif(not _ext.has_kernel("relational_aggregate", "CPU"),
                               reason="compiled ops unavailable (python -m hotspot_erc.info says why)")
needs_interp = pytest.mark.skipif(bool(_backend.triton_reason(torch.device("cpu"))),
                                  reason="Triton on CPU tensors needs TRITON_INTERPRET=1")
pytestmark = [needs_ops]


def _case(n, r, e, d_in, d_out, root, bias, dtype, device="cpu", hub=0):
    """Isolated nodes, an unused relation, self loops, duplicate edges; ``hub`` extra edges into
    node 0 under relation 0 (one bucket far above the tile's other degrees)."""
    ei, et = random_graph(n, r, e, device, isolated=min(3, n - 1), unused=1 if r > 1 else 0)
    if hub:
        src = torch.arange(hub, device=device) % n
        ei = torch.cat([ei, torch.stack([src, torch.zeros_like(src)])], 1)
        et = torch.cat([et, torch.zeros(hub, dtype=et.dtype, device=device)])
    graph = RelationalGraph(ei, et, n, r)
    x = torch.randn(n, d_in, dtype=dtype, device=device)
    w = torch.randn(r, d_in, d_out, dtype=dtype, device=device)
    rt = torch.randn(d_in, d_out, dtype=dtype, device=device) if root else None
    b = torch.randn(d_out, dtype=dtype, device=device) if bias else None
    return graph, x, w, rt, b


def _leaves(x, w, rt, b):
    return [t.detach().clone().requires_grad_() for t in (x, w, rt, b) if t is not None]


def _split(leaves, root, bias):
    x, w = leaves[:2]
    return x, w, (leaves[2] if root else None), (leaves[-1] if bias else None)


def _reference(graph, leaves, root, bias, reduce):
    x, w, rt, b = _split(leaves, root, bias)
    return ref.rgcn_conv(x, graph.edge_index, graph.edge_type, w, None, rt, b, reduce)


def _fwd_bwd(fn, leaves, g=None):
    out = fn(*leaves)
    g = torch.randn_like(out) if g is None else g
    grads = torch.autograd.grad(out, leaves, g, allow_unused=True)
    return out.detach(), [torch.zeros_like(t) if gr is None else gr for t, gr in zip(leaves, grads)], g


def stage_lengths(graph, d_in, d_out):
    """The reductions an RGCN layer chains: a bucket's mean over its edges (``deg``), the GEMM
    over d_in plus the bias (``dot``), a node's sum over its root row and R relation rows
    (``rel``), a weight gradient's sum over the rows of a group (``rows``, at most N), and the
    input gradient's ``dout @ Wᵀ`` (``back``) then transposed gather over the buckets a node
    feeds plus its root row (``fan``)."""
    src, dst = graph.edge_index.cpu()
    key = dst * graph.num_relations + graph.edge_type.cpu()
    deg = int(torch.bincount(key).max()) if key.numel() else 0
    fan = int(torch.bincount(src).max()) if src.numel() else 0
    return {"deg": deg, "dot": d_in + 1, "rel": graph.num_relations + 1, "rows": graph.num_nodes,
            "back": d_out, "fan": fan + 1}


def error_model(graph, d_in, d_out, root, bias):
    """(name, k, c) per compared value: out, then the gradients of x, W, root and bias (those
    present). Chained stages' rounding errors add (Σ√k_i ≤ n·√max k_i): c is C times the number
    of stages and k the longest. out: deg, dot, rel; dx: back, fan; dW: deg, rows; droot, dbias:
    rows."""
    st = stage_lengths(graph, d_in, d_out)
    model = [("out", max(st["deg"], st["dot"], st["rel"]), 3 * C), ("dx", max(st["back"], st["fan"]), 2 * C),
             ("dW", max(st["deg"], st["rows"]), 2 * C)]
    return model + [("droot", st["rows"], C)] * root + [("dbias", st["rows"], C)] * bias


def magnitudes(graph, leaves, g, root, bias, reduce):
    """Σ|terms| of out and of each gradient: the reference (multilinear in x, W, root and bias,
    with positive mean weights) on magnitudes, with |dout|."""
    return magnitude(lambda *t: _fwd_bwd(lambda *l: _reference(graph, list(l), root, bias, reduce),
                                         _leaves(*t[:-1]), t[-1])[:2], *_split(leaves, root, bias), g)


def assert_matches(dtype, model, mags, out, grads, want, want_grads):
    """out and every gradient within the rounding bound of ``dtype``, against Σ|terms| (every
    value sums gathered rows of both signs)."""
    assert len(model) == 1 + len(grads) == 1 + len(want_grads)
    for (name, k, c), a, w_, m in zip(model, (out, *grads), (want, *want_grads), (mags[0], *mags[1])):
        assert_close(a, w_, dtype, k, scale=m, c=c, what=name)


SHAPES = {
    "small": (40, 5, 120, 6, 9, 0),
    "tiles": (70, 3, 260, 20, 40, 0),     # several row tiles per relation, K and N tiles > 1
    "hub": (30, 3, 60, 5, 7, 45),         # one bucket of degree ~50 next to degree-1 buckets
    "no_edges": (7, 2, 0, 3, 5, 0),        # every bucket empty: root and bias only
    "no_features": (9, 2, 20, 0, 4, 0),   # d_in = 0
}


@needs_interp
@pytest.mark.parametrize("exact_rows", [True, False], ids=["exact", "padded"])
@pytest.mark.parametrize("reduce", ["mean", "sum"])
@pytest.mark.parametrize("root,bias", [(True, True), (True, False), (False, True), (False, False)])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_matches_reference_float64(shape, root, bias, reduce, exact_rows):
    """float64 kernels (float64 accumulation and dot) against autograd through the reference;
    ``padded``: the sync-free row bound N + min(E, N·R) the CUDA path uses, padding rows included."""
    n, r, e, d_in, d_out, hub = SHAPES[shape]
    graph, x, w, rt, b = _case(n, r, e, d_in, d_out, root, bias, torch.float64, hub=hub)
    cs = graph.compact(exact_rows=exact_rows)
    mean = reduce == "mean"
    out, grads, g = _fwd_bwd(lambda *t: _triton_relational_conv(*_split(t, root, bias)[:2], cs,
                                                                 *_split(t, root, bias)[2:], mean),
                             _leaves(x, w, rt, b))
    want, want_grads, _ = _fwd_bwd(lambda *t: _reference(graph, list(t), root, bias, reduce), _leaves(x, w, rt, b), g)
    assert out.shape == (n, d_out) and out.dtype == torch.float64
    assert_matches(torch.float64, error_model(graph, d_in, d_out, root, bias),
                   magnitudes(graph, _leaves(x, w, rt, b), g, root, bias, reduce), out, grads, want, want_grads)


@needs_interp
@pytest.mark.parametrize("reduce", ["mean", "sum"])
@pytest.mark.parametrize("root,bias", [(True, True), (False, True), (False, False)])
def test_float32_against_float64_reference_and_three_launch_path(reduce, root, bias):
    """float32 kernels: within float32 rounding of the float64 reference, and as close to it as
    the former three-launch path (relational_aggregate into Z, segment_matmul, node sum)."""
    from hotspot_erc.ops.segment_matmul import segment_matmul

    graph, x, w, rt, b = _case(70, 4, 300, 20, 24, root, bias, torch.float32, hub=30)
    out, grads, g = _fwd_bwd(lambda *t: relational_conv(*_split(t, root, bias)[:2], graph,
                                                        *_split(t, root, bias)[2:], reduce, backend="triton"),
                             _leaves(x, w, rt, b))
    leaves64 = [t.double() for t in _leaves(x, w, rt, b)]
    want, want_grads, _ = _fwd_bwd(lambda *t: _reference(graph, list(t), root, bias, reduce), leaves64, g.double())
    assert out.dtype == torch.float32 and all(a.dtype == torch.float32 for a in grads)
    model = error_model(graph, 20, 24, root, bias)
    mags = magnitudes(graph, leaves64, g.double(), root, bias, reduce)
    assert_matches(torch.float32, model, mags, out, grads, want, want_grads)

    cs = graph.compact(exact_rows=False)
    gather = torch.ops.hotspot_erc.relational_aggregate

    def three_launch(x, w, rt, b):
        z = gather(x, *cs["z"], reduce == "mean")
        rt_ = rt if rt is not None else torch.zeros(x.shape[1], w.shape[2])
        y = segment_matmul(z, cs["group_ptr"], w, rt_, b, backend="triton")
        return gather(y, *cs["nodes"], False)

    old = three_launch(x, w, rt, b)
    # the same three stages in float32 (gather, GEMM, node sum); the fused kernel at most twice
    # as far from float64 as the three launches, with the float32 bound as the floor
    _, k, c = model[0]
    assert_close(out, old, torch.float32, k, scale=mags[0], c=c, what="fused vs three launches")
    assert rel_err(out, want, mags[0]) <= 2 * rel_err(old, want, mags[0]) + rel_bound(torch.float32, k, c=c)


@needs_interp
def test_bitwise_repeat_and_no_z():
    """Same inputs, same bits (every sum in a fixed order, no atomics; under the interpreter this
    cannot fail, the GPU test below is the real check), and no [rows, in] tensor is allocated
    in forward (Z is never written)."""
    graph, x, w, rt, b = _case(50, 4, 200, 12, 10, True, True, torch.float32, hub=20)
    runs = [_fwd_bwd(lambda *t: relational_conv(t[0], t[1], graph, t[2], t[3], backend="triton"),
                     _leaves(x, w, rt, b), torch.ones(50, 10))[:2] for _ in range(2)]
    assert torch.equal(runs[0][0], runs[1][0])
    for a, b_ in zip(runs[0][1], runs[1][1]):
        assert torch.equal(a, b_)

    rows = graph.compact()["rows"]
    shapes = []

    class Allocs(torch.utils._python_dispatch.TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if isinstance(out, torch.Tensor):
                shapes.append(tuple(out.shape))
            return out

    with torch.no_grad(), Allocs():
        relational_conv(x, w, graph, rt, b, backend="triton")
    assert (rows, 12) not in shapes and (rows, 10) in shapes  # P [rows, out], no Z [rows, in]


@needs_interp
@pytest.mark.parametrize("aggr", ["mean", "add"])
@pytest.mark.parametrize("kw", [{}, {"num_bases": 2}, {"root_weight": False}, {"bias": False}],
                         ids=["plain", "bases2", "no_root", "no_bias"])
def test_rgcn_layer_on_the_triton_path_matches_pyg(monkeypatch, aggr, kw):
    """RGCNConv's arguments to relational_conv (aggregation, composed weights, root, bias) as the
    CUDA path passes them, with the Triton kernels forced on CPU tensors."""
    pyg = pytest.importorskip("torch_geometric.nn")
    import hotspot_erc.nn.rgcn as rgcn

    monkeypatch.setattr(rgcn, "relational_conv", functools.partial(relational_conv, backend="triton"))
    n, r = 23, 5
    ei, et = random_graph(n, r, 90, "cpu", isolated=3, unused=2)
    theirs = pyg.RGCNConv(6, 10, r, aggr=aggr, **kw).double()
    ours = rgcn.RGCNConv(6, 10, r, aggr=aggr, **kw).double()
    ours.load_state_dict(theirs.state_dict())
    if ours.bias is not None:
        with torch.no_grad():
            ours.bias.normal_()
            theirs.bias.copy_(ours.bias)
    x = torch.randn(n, 6, dtype=torch.float64, requires_grad=True)
    out, want = ours(x, ei, et), theirs(x, ei, et)
    gout = torch.randn_like(out)
    # Two float64 computations of a layer that is multilinear in x and its parameters: Σ|terms|
    # is PyG's layer on magnitudes. One (k, c) for every value: the longest stage of any
    # (a bucket's mean, the GEMM, a node's relation sum, a gradient's row sum, the transposed
    # gather, the basis composition W_r = Σ_b comp[r, b] V_b and its gradient over W's
    # entries), at most four stages chained.
    mag_layer = abs_copy(theirs)
    x_mag = x.detach().abs().requires_grad_()
    mag = mag_layer(x_mag, ei, et)
    mags = (mag, *torch.autograd.grad(mag, [x_mag, *mag_layer.parameters()], gout.abs()))
    st = stage_lengths(RelationalGraph(ei, et, n, r), 6, 10)
    k, c = max(*st.values(), 6 * 10, kw.get("num_bases", 1)), 4 * C
    assert_close(out, want, torch.float64, k, scale=mags[0], c=c, what="out")
    for a, b, m in zip(torch.autograd.grad(out, [x, *ours.parameters()], gout),
                       torch.autograd.grad(want, [x, *theirs.parameters()], gout), mags[1:]):
        assert_close(a, b, torch.float64, k, scale=m, c=c)


def test_backend_argument():
    graph, x, w, rt, b = _case(10, 2, 20, 3, 4, True, True, torch.float32)
    with pytest.raises(ValueError, match="backend must be"):
        relational_conv(x, w, graph, rt, b, backend="cuda")
    if _backend.triton_reason(torch.device("cpu")):
        with pytest.raises(_backend.BackendUnavailable, match="TRITON_INTERPRET"):
            relational_conv(x, w, graph, rt, b, backend="triton")


_SM90 = OFFLINE_SM90_BUILD + """
import hotspot_erc.kernels.gather_segment_matmul as K

for dt, prec, low in (("bf16", "tf32", True), ("fp32", "ieee", False), ("fp32", "tf32", False), ("fp64", "ieee", False)):
    f64 = dt == "fp64"
    bn = 64 if f64 else 128
    ptrs = dict(src_ptr="*" + dt, eptr_ptr="*i64", idx_ptr="*i64", rowsrc_ptr="*i64", w_ptr="*" + dt,
                root_ptr="*" + dt, bias_ptr="*" + dt, out_ptr="*" + dt, tiles_ptr="*i64", gptr_ptr="*i64",
                T="i64", G="i64", M="i64", N_SRC="i64", NUM_E="i64")
    for gather, root, bias in ((True, True, True), (True, False, True), (False, True, False), (False, False, False)):
        build(K._gather_mm_kernel, ptrs, dict(GATHER=gather, MEAN=gather, HAS_ROOT=root, HAS_BIAS=bias, ACC64=f64,
              LOW=low, PRECISION=prec, BLOCK_M=64, BLOCK_N=bn, BLOCK_K=64 if dt == "bf16" else 32),
              8 if bn == 128 else 4, 2)
    ptrs = dict(x_ptr="*" + dt, eptr_ptr="*i64", idx_ptr="*i64", g_ptr="*" + dt, rownode_ptr="*i64",
                gptr_ptr="*i64", dw_ptr="*" + dt, droot_ptr="*" + dt, db_ptr="*" + dt,
                N_SRC="i64", N_G="i64", NUM_E="i64")
    build(K._gather_wgrad_kernel, ptrs, dict(MEAN=True, HAS_ROOT=True, HAS_BIAS=True, ACC64=f64, LOW=low,
          PRECISION=prec, BLOCK_M=32, BLOCK_K=32 if f64 else 64, BLOCK_N=bn), 8 if bn == 128 else 4, 2)
print("compiled")
"""


def test_triton_kernels_compile_for_sm90():
    assert_compiles_offline(_SM90)


# ----------------------------------------------------------------------------- GPU

@pytest.mark.gpu
@pytest.mark.parametrize("reduce", ["mean", "sum"])
def test_cuda_matches_cpu_bitwise_repeatable_no_sync(reduce):
    """The CUDA path (Triton gather-GEMM + per-node sum) against the CPU kernel in float64 and
    the float64 reference in float32; two runs give the same bits; no host sync after the graph
    is prepared; 2 launches forward, 3 backward."""
    from hotspot_erc.testing import count_fwd_bwd

    n, r = 3000, 12
    cpu_graph, x, w, rt, b = _case(n, r, 30000, 64, 48, True, True, torch.float64, hub=500)
    graph = cpu_graph.to("cuda")
    leaves = _leaves(x, w, rt, b)
    want, want_grads, g = _fwd_bwd(lambda *t: relational_conv(*t[:2], cpu_graph, *t[2:], reduce), leaves)
    model = error_model(cpu_graph, 64, 48, True, True)
    mags = magnitudes(cpu_graph, leaves, g, True, True, reduce)
    # float32 follows torch's matmul setting: TF32 products only where torch allows them
    f32 = "tf32" if torch.backends.cuda.matmul.allow_tf32 else torch.float32
    for dtype, unit in ((torch.float64, torch.float64), (torch.float32, f32)):
        dev = [t.detach().to("cuda", dtype).requires_grad_() for t in leaves]
        gd = g.to("cuda", dtype)

        def run():
            return _fwd_bwd(lambda *t: relational_conv(*t[:2], graph, *t[2:], reduce), dev, gd)[:2]

        run()  # compile, compact structure and tiles
        torch.cuda.set_sync_debug_mode("error")
        try:
            out, grads = run()
            out2, grads2 = run()
        finally:
            torch.cuda.set_sync_debug_mode("default")
        assert_matches(unit, model, mags, out, grads, want, want_grads)
        assert torch.equal(out, out2) and all(torch.equal(a, b_) for a, b_ in zip(grads, grads2))
    fwd, bwd = count_fwd_bwd(lambda x: relational_conv(x, *dev[1:2], graph, *dev[2:], reduce), dev[0],
                             inputs=dev)
    assert fwd.triton == 1 and bwd.triton == 2 and fwd.total <= 3 and bwd.total <= 6, (fwd, bwd)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_rgcn_layer_equals_cpu_layer_and_repeats(dtype):
    """The layer on CUDA (fused Triton path) equals the layer on the CPU (fused C++ kernel)."""
    from hotspot_erc.nn.rgcn import RGCNConv

    n, r = 4800, 12
    ei, et = random_graph(n, r, 28000, "cpu", isolated=10, unused=1)
    layer = RGCNConv(128, 128, r).double()
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(n, 128, dtype=torch.float64, requires_grad=True)
    want = layer(x, RelationalGraph(ei, et, n, r))
    want_grads = torch.autograd.grad(want.square().sum(), [x, *layer.parameters()])
    layer_c = RGCNConv(128, 128, r).to("cuda", dtype)
    layer_c.load_state_dict(layer.state_dict())
    graph = RelationalGraph(ei.cuda(), et.cuda(), n, r)
    xc = x.detach().to("cuda", dtype).requires_grad_()
    runs = []
    for _ in range(3):
        out = layer_c(xc, graph)
        runs.append([out.detach()] + list(torch.autograd.grad(out.float().square().sum(),
                                                                [xc, *layer_c.parameters()])))
    # Σ|terms|: the layer (multilinear in x and its parameters) on magnitudes, dout = 2·|out|.
    # One (k, c) for every value: the longest stage of any (N rows in the root and bias
    # gradients), at most three chained. The layer's inputs are rounded to the dtype, so the
    # reference differs by that rounding too.
    mag_layer = abs_copy(layer)
    x_mag = x.detach().abs().requires_grad_()
    mag = mag_layer(x_mag, RelationalGraph(ei, et, n, r))
    mags = (mag, *torch.autograd.grad(mag, [x_mag, *mag_layer.parameters()], 2 * want.detach().abs()))
    k, c = max(stage_lengths(RelationalGraph(ei, et, n, r), 128, 128).values()), 3 * C
    if dtype == torch.float32:
        # float32 follows torch's matmul setting: TF32 products only where torch allows them
        bound = rel_bound("tf32" if torch.backends.cuda.matmul.allow_tf32 else torch.float32, k, c=c)
    else:
        # bfloat16 storage, float32 accumulation: bfloat16 rounds once per element (the inputs,
        # each stage's stored result: k = 1), the sums round as float32 does
        bound = rel_bound(dtype, k, c=c, accumulate=torch.float32)
    for a, w_, m in zip(runs[-1], [want, *want_grads], mags):
        err = rel_err(a, w_, m)
        assert err <= bound, (err, bound)
    for a, b_ in zip(runs[1], runs[2]):
        assert torch.equal(a, b_)
