"""TransformerConv: a drop-in for torch_geometric.nn.TransformerConv (same state_dict, outputs, gradients)."""
import itertools

import pytest
import torch

from hotspot_erc.nn import TransformerConv
from hotspot_erc.ops import AttentionGraph
from conftest import seed_for
from test_graph_attention import BACKENDS, random_edges
from tolerance import assert_close

pyg = pytest.importorskip("torch_geometric.nn")

OPTIONS = [dict(heads=h, concat=c, beta=b, edge_dim=e, bias=bi, root_weight=r)
           for h, c, b, e, bi, r in itertools.product((1, 3), (True, False), (False, True), (None, 4), (True, False),
                                                      (True, False))]


def option_id(o):
    return "-".join(f"{k}={v}" for k, v in o.items())


def pair(in_c, out_c, dtype=torch.float64, **kw):
    theirs = pyg.TransformerConv(in_c, out_c, **kw).to(dtype)
    ours = TransformerConv(in_c, out_c, **kw).to(dtype)
    ours.load_state_dict(theirs.state_dict())  # strict: the same names and shapes
    return theirs, ours


def inputs(n_src, n_dst, e, in_c, edge_dim, dtype, seed):
    gen = torch.Generator().manual_seed(seed_for(seed))
    ei = random_edges(n_src, n_dst, e, gen)
    xs = torch.randn(n_src, in_c[0] if isinstance(in_c, tuple) else in_c, generator=gen, dtype=torch.float64)
    xd = torch.randn(n_dst, in_c[1] if isinstance(in_c, tuple) else in_c, generator=gen, dtype=torch.float64) \
        if n_src != n_dst or isinstance(in_c, tuple) else None
    ea = torch.randn(e, edge_dim, generator=gen, dtype=torch.float64) if edge_dim else None
    cast = (lambda t: None if t is None else t.to(dtype))
    return ei, cast(xs), cast(xd), cast(ea)


def run(layer, x, ei, ea, go):
    """Output, attention weights and the gradients of every float input and parameter."""
    leaves = [t.detach().clone().requires_grad_() if t is not None else None for t in (x[0], x[1], ea)]
    xin = (leaves[0], leaves[1]) if leaves[1] is not None else leaves[0]
    out, (ei_out, alpha) = layer(xin, ei, leaves[2], return_attention_weights=True)
    if go is None:
        return out, ei_out, alpha, []
    params = [p for _, p in sorted(layer.named_parameters())]
    used = [t for t in leaves if t is not None] + params
    grads = torch.autograd.grad(out, used, go, allow_unused=True)
    return out, ei_out, alpha, [torch.zeros_like(t) if g is None else g for t, g in zip(used, grads)]


def term_scales(layer, x, ei, ea, go):
    """Σ|terms| of every gradient ``run`` returns, in its order: the gradients of a projection
    y = x Wᵀ + b are sums of |dy|·|x| (weight), |dy| (bias) and |dy|·|W| (input), with dy the
    gradient at its output (float64, from ``layer``'s own backward). The attention makes some
    of them cancel exactly (a key bias shifts every score of a destination alike: zero
    gradient), so the reference's own size is no scale for them."""
    saved = {}

    def keep(name):
        def fwd(mod, inp, out):
            saved[name] = [inp[0].detach()]
            out.register_hook(lambda g: saved[name].append(g.detach()))
        return fwd

    lins = {n: m for n, m in layer.named_modules() if hasattr(m, "weight") and n.startswith("lin_")}
    handles = [m.register_forward_hook(keep(n)) for n, m in lins.items()]
    try:
        run(layer, x, ei, ea, go)
    finally:
        for h in handles:
            h.remove()
    mag = {}
    for n, m in lins.items():
        if n not in saved:  # unused (lin_skip without the root term): zero gradients
            saved[n] = [torch.zeros(1, m.weight.shape[1], dtype=m.weight.dtype),
                        torch.zeros(1, m.weight.shape[0], dtype=m.weight.dtype)]
        inp, dy = saved[n]
        mag[f"{n}.weight"] = dy.abs().t() @ inp.abs()
        if getattr(m, "bias", None) is not None:
            mag[f"{n}.bias"] = dy.abs().sum(0)
        mag[f"{n}.input"] = dy.abs() @ m.weight.detach().abs()
    x_src = mag["lin_key.input"] + mag["lin_value.input"]
    x_dst = mag["lin_query.input"] + (mag["lin_skip.input"] if layer.root_weight else 0)
    inputs = [x_src + x_dst] if x[1] is None else [x_src, x_dst]
    if ea is not None:
        inputs.append(mag["lin_edge.input"])
    return inputs + [mag[n] for n, _ in sorted(layer.named_parameters())]


def compare(theirs, ours, x, ei, ea, dtype, what):
    gen = torch.Generator().manual_seed(seed_for(99))
    out_t = run(theirs, x, ei, ea, None)[0]
    go = torch.randn(out_t.shape, generator=gen, dtype=torch.float64).to(dtype)
    out_t, ei_t, a_t, g_t = run(theirs, x, ei, ea, go)
    out_o, ei_o, a_o, g_o = run(ours, x, ei, ea, go)
    assert torch.equal(ei_o, ei_t)
    # Both compute in dtype. The longest chain: a projection (in), a score (C) and a
    # destination's edges; the gradients add a source's out-edges and the sum over nodes of the
    # weight gradients: every count below the node count plus 64.
    k = x[0].shape[0] + (x[1].shape[0] if x[1] is not None else 0) + 64
    assert_close(out_o, out_t, dtype, k, what=f"{what} out")
    assert_close(a_o, a_t.detach(), dtype, k, what=f"{what} alpha")
    scales = term_scales(theirs, x, ei, ea, go)
    assert len(scales) == len(g_t) == len(g_o)
    for i, (go_, gt_, sc) in enumerate(zip(g_o, g_t, scales)):
        assert_close(go_, gt_, dtype, k, scale=sc, what=f"{what} grad {i}")


@pytest.mark.parametrize("opts", OPTIONS, ids=option_id)
def test_matches_pyg_every_option(opts):
    theirs, ours = pair(6, 5, **opts)
    ei, xs, _, ea = inputs(14, 14, 50, 6, opts["edge_dim"], torch.float64, seed=11)
    compare(theirs, ours, (xs, None), ei, ea, torch.float64, option_id(opts))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_pyg_each_backend(backend, dtype):
    if backend == "triton" and dtype == torch.float64:
        pytest.skip("the Triton kernels have no float64 path")
    opts = dict(heads=3, concat=True, beta=True, edge_dim=4)
    theirs, ours = pair(8, 7, dtype=dtype, **opts)
    ours.backend = backend
    ei, xs, _, ea = inputs(20, 20, 80, 8, 4, dtype, seed=12)
    compare(theirs, ours, (xs, None), ei, ea, dtype, backend)


@pytest.mark.parametrize("concat", [True, False])
def test_bipartite(concat):
    theirs, ours = pair((6, 4), 5, heads=2, concat=concat, beta=True, edge_dim=3)
    ei, xs, xd, ea = inputs(9, 12, 40, (6, 4), 3, torch.float64, seed=13)
    compare(theirs, ours, (xs, xd), ei, ea, torch.float64, "bipartite")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dropout_draws_like_pyg(dtype):
    """Same random state, same dropped edges: training outputs agree, not only their law."""
    theirs, ours = pair(6, 5, dtype=dtype, heads=3, dropout=0.4, edge_dim=2)
    theirs.train(), ours.train()
    ei, xs, _, ea = inputs(15, 15, 60, 6, 2, dtype, seed=14)
    torch.manual_seed(seed_for(15))
    out_t = theirs(xs, ei, ea)
    torch.manual_seed(seed_for(15))
    out_o = ours(xs, ei, ea)
    assert_close(out_o, out_t, dtype, 64, what="dropout output")
    assert not torch.allclose(out_o, ours.eval()(xs, ei, ea)), "dropout changed nothing"
    ours.train()
    ours.dropout = 1.0
    only_root = ours.lin_skip(xs)
    assert_close(ours(xs, ei, ea), only_root, dtype, 8, what="dropout=1 leaves the root term")


def test_state_dict_loads_both_ways_and_repr():
    theirs, ours = pair(6, 5, heads=2, beta=True, edge_dim=3)
    theirs.load_state_dict(ours.state_dict())  # strict the other way too
    assert sorted(ours.state_dict()) == sorted(theirs.state_dict())
    assert "heads=2" in repr(ours)


def test_prepared_graph_and_torch_compile():
    theirs, ours = pair(6, 5, heads=2)
    ei, xs, _, _ = inputs(10, 10, 30, 6, None, torch.float64, seed=16)
    g = AttentionGraph(ei, 10)
    assert torch.equal(ours(xs, g), ours(xs, ei))
    out, (ei_out, _) = ours(xs, g, return_attention_weights=False)
    assert torch.equal(ei_out, ei)
    compiled = torch.compile(lambda x: ours(x, g), fullgraph=True, backend="aot_eager")
    assert_close(compiled(xs), ours(xs, g), torch.float64, 64, what="compiled")


def test_bad_input():
    with pytest.raises(ValueError, match="lazy initialisation"):
        TransformerConv(-1, 4)
    with pytest.raises(TypeError, match="unexpected keyword argument 'foo'"):
        TransformerConv(4, 4, foo=1)
    with pytest.raises(ValueError, match="aggr='add' only"):
        TransformerConv(4, 4, aggr="mean")
    with pytest.raises(ValueError, match="dropout must be a probability"):
        TransformerConv(4, 4, dropout=1.5)
    layer = TransformerConv(4, 3, heads=2, edge_dim=2)
    x, ei = torch.randn(5, 4), torch.tensor([[0, 1], [1, 2]])
    with pytest.raises(ValueError, match="edge_attr is required"):
        layer(x, ei)
    with pytest.raises(ValueError, match=r"edge_attr must be \[E, edge_dim\]"):
        layer(x, ei, torch.randn(3, 2))
    with pytest.raises(ValueError, match="no edge_dim"):
        TransformerConv(4, 3)(x, ei, torch.randn(2, 2))
    with pytest.raises(ValueError, match=r"x must be a \[N, 4\] tensor"):
        layer(torch.randn(5, 3), ei, torch.randn(2, 2))
    with pytest.raises(TypeError, match="SparseTensor"):
        layer(x, [[0, 1], [1, 2]], torch.randn(2, 2))
    with pytest.raises(ValueError, match="out of range"):
        layer(x, torch.tensor([[0, 7], [1, 2]]), torch.randn(2, 2))
