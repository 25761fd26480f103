"""RGCNConv: a drop-in for torch_geometric.nn.RGCNConv (same state_dict, same outputs)."""
import pickle

import pytest
import torch

from hotspot_erc.nn.rgcn import RGCNConv
from hotspot_erc.ops.relational import RelationalGraph
from hotspot_erc.reference import relational as ref
from conftest import rel_err
from test_relational import random_graph

pyg = pytest.importorskip("torch_geometric.nn")

DECOMPOSITIONS = [{}, {"num_bases": 2}, {"num_bases": 6}, {"num_blocks": 2}]


def pair(in_c, out_c, r, dtype=torch.float64, device="cpu", **kw):
    theirs = pyg.RGCNConv(in_c, out_c, r, **kw).to(device, dtype)
    ours = RGCNConv(in_c, out_c, r, **kw).to(device, dtype)
    ours.load_state_dict(theirs.state_dict())  # strict: same names and shapes
    return theirs, ours


@pytest.mark.parametrize("aggr", ["mean", "add"])
@pytest.mark.parametrize("kw", DECOMPOSITIONS, ids=["plain", "bases2", "bases6", "blocks2"])
@pytest.mark.parametrize("in_c,out_c", [(6, 10), (10, 6)])  # both orders of the computation
def test_matches_pyg(device, aggr, kw, in_c, out_c):
    n, r = 23, 5
    ei, et = random_graph(n, r, 90, device, isolated=3, unused=2)
    theirs, ours = pair(in_c, out_c, r, device=device, aggr=aggr, **kw)
    x = torch.randn(n, in_c, dtype=torch.float64, device=device, requires_grad=True)
    out, want = ours(x, ei, et), theirs(x, ei, et)
    assert rel_err(out, want) < 1e-12
    gout = torch.randn_like(out)
    ours_g = torch.autograd.grad(out, [x, *ours.parameters()], gout)
    theirs_g = torch.autograd.grad(want, [x, *theirs.parameters()], gout)
    for a, b in zip(ours_g, theirs_g):
        assert rel_err(a, b) < 1e-12


@pytest.mark.parametrize("order", ["aggregate_first", "transform_first"])
def test_both_orders_with_dense_weights(monkeypatch, order):
    """The CPU always takes the blocked aggregate-first path; check the GPU's orders here too."""
    n, r = 30, 4
    ei, et = random_graph(n, r, 100, "cpu")
    theirs, ours = pair(7, 5, r)
    monkeypatch.setattr(RGCNConv, "plan", lambda self, num_nodes=1, device=None: (order, False))
    x = torch.randn(n, 7, dtype=torch.float64, requires_grad=True)
    out, want = ours(x, ei, et), theirs(x, ei, et)
    assert rel_err(out, want) < 1e-12
    (gx,) = torch.autograd.grad(out.sum(), x)
    (gx_want,) = torch.autograd.grad(want.sum(), x)
    assert rel_err(gx, gx_want) < 1e-12


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
    assert rel_err(ours(x, ei, et), want) < 1e-5
    assert rel_err(ours(x, g), want) < 1e-5
    assert torch.equal(ours(x, g), ours(x, ei, et))


@pytest.mark.parametrize("aggr", ["mean", "add"])
def test_featureless_nodes_like_pyg(aggr):
    n, r = 9, 3
    ei, et = random_graph(n, r, 30, "cpu")
    theirs, ours = pair(n, 4, r, aggr=aggr, num_bases=2)
    assert rel_err(ours(None, ei, et), theirs(None, ei, et)) < 1e-12
    idx = torch.randperm(n)
    assert rel_err(ours(idx, ei, et), theirs(idx, ei, et)) < 1e-12


def test_no_edges_root_and_bias_only():
    ours = RGCNConv(5, 3, 2)
    with torch.no_grad():
        ours.bias.normal_()
    x = torch.randn(4, 5)
    empty = torch.empty(2, 0, dtype=torch.long)
    out = ours(x, empty, torch.empty(0, dtype=torch.long))
    assert torch.allclose(out, x @ ours.root + ours.bias)
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
    assert rel_err(layer(x, ei, et), want) < 1e-12


def test_torch_compile_fullgraph():
    n, r = 20, 3
    ei, et = random_graph(n, r, 60, "cpu")
    layer = RGCNConv(8, 8, r)
    x = torch.randn(n, 8, requires_grad=True)
    compiled = torch.compile(layer, fullgraph=True)  # inductor: the op's fake shapes and autograd
    out = compiled(x, ei, et)
    assert torch.allclose(out, layer(x, ei, et), atol=1e-5)
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
        layer(torch.randn(3, 4), ei, et)
    with pytest.raises(ValueError, match="relations"):
        layer(torch.randn(6, 4), RelationalGraph(ei, et, 6, 3))
    with pytest.raises(TypeError, match="bipartite"):
        layer((torch.randn(6, 4), torch.randn(6, 4)), ei, et)
    assert "num_relations=2" in repr(layer)
    pickle.loads(pickle.dumps(layer))
