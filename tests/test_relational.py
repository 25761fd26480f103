"""relational_aggregate / relational_message_sum: C++ (and CUDA) kernels against the reference."""
import pytest
import torch

from hotspot_erc import _ext
from hotspot_erc.ops import _backend
from hotspot_erc.ops.relational import (RelationalGraph, relational_aggregate, relational_matmul,
                                        relational_message_sum)
from hotspot_erc.reference import relational as ref
from tolerance import accumulation, assert_close, magnitude, magnitude_grads, rel_bound, rel_err


def random_graph(n, r, e, device, self_loops=True, duplicates=True, isolated=2, unused=1):
    """Random typed edges with the shapes that hurt: isolated nodes, unused relations, self loops
    and duplicate edges."""
    hi = max(n - isolated, 1)
    ei = torch.randint(0, hi, (2, e), device=device)
    et = torch.randint(0, max(r - unused, 1), (e,), device=device)
    if self_loops and e >= 2 and n > 0:
        ei[1, :2] = ei[0, :2]
    if duplicates and e >= 4:
        ei[:, 3] = ei[:, 2]
        et[3] = et[2]
    return ei, et


def bucket_degree(g):
    """The longest sum of one aggregate: the most type-r edges into one node (at least 1)."""
    return max(int(g.in_degree().max()), 1) if g.in_degree().numel() else 1


def node_degree(g):
    """The longest sum of one message_sum output: the most edges into one node, all types."""
    return max(int(g.in_degree().sum(1).max()), 1) if g.in_degree().numel() else 1


def out_degree(ei, n, et=None, r=1):
    """The longest sum of one input gradient: the most edges out of one node (with ``et``: out of
    one (node, type) pair, the rows of h [N*R, d] a message_sum reads)."""
    key = ei[0].long() if et is None else ei[0].long() * r + et.long()
    return max(int(torch.bincount(key.cpu(), minlength=n * r).max()), 1) if key.numel() else 1


# k of chained reductions (a bucket's sum, then a GEMM's sum) is the sum of their lengths: the
# independent roundings of the stages add up as one random walk.


@pytest.mark.parametrize("reduce", ["mean", "sum"])
@pytest.mark.parametrize("n,r,d,e", [(1, 1, 1, 0), (1, 2, 3, 4), (7, 3, 5, 20), (100, 4, 33, 400), (37, 8, 16, 9)])
def test_aggregate_matches_reference(device, reduce, n, r, d, e):
    ei, et = random_graph(n, r, e, device)
    g = RelationalGraph(ei, et, n, r)
    x = torch.randn(n, d, device=device)
    out = relational_aggregate(x, g, reduce)
    want = ref.relational_aggregate(x.double(), ei, et, n, r, reduce)
    assert out.shape == (n, r, d) and out.dtype == x.dtype
    scale = magnitude(lambda t: ref.relational_aggregate(t, ei, et, n, r, reduce), x.double())
    assert_close(out, want, torch.float32, bucket_degree(g), scale=scale, what="aggregate")
    # buckets without edges are written as exact zeros (an unwritten element would show here)
    empty = g.in_degree() == 0
    assert torch.equal(out[empty], torch.zeros_like(out[empty]))
    h = torch.randn(n, r, d, device=device)
    msg = relational_message_sum(h, g, reduce)
    assert msg.shape == (n, d)
    scale = magnitude(lambda t: ref.relational_message_sum(t, ei, et, n, reduce), h.double())
    assert_close(msg, ref.relational_message_sum(h.double(), ei, et, n, reduce), torch.float32, node_degree(g),
                 scale=scale, what="message_sum")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_dtypes_accumulate_in_float32(device, dtype):
    n, r, d, e = 50, 3, 24, 600  # ~4 edges per bucket so rounding of a low-precision sum shows
    ei, et = random_graph(n, r, e, device)
    g = RelationalGraph(ei, et, n, r)
    x = torch.randn(n, d, device=device).to(dtype)
    want = ref.relational_aggregate(x.double(), ei, et, n, r, "mean")
    out = relational_aggregate(x, g)
    assert out.dtype == dtype
    # FlashAttention's rule: at most 2x the error of PyTorch's own computation in that dtype
    scale = magnitude(lambda t: ref.relational_aggregate(t, ei, et, n, r, "mean"), x.double())
    torch_err = rel_err(ref.relational_aggregate(x, ei, et, n, r, "mean"), want, scale)
    assert rel_err(out, want, scale) <= 2 * torch_err + rel_bound(dtype, bucket_degree(g), accumulate=accumulation(dtype))
    xg = x.detach().requires_grad_()
    gz = torch.randn(n, r, d, device=device).to(dtype)
    (grad,) = torch.autograd.grad(relational_aggregate(xg, g), xg, gz)
    xr = x.double().requires_grad_()
    (want_grad,) = torch.autograd.grad(ref.relational_aggregate(xr, ei, et, n, r, "mean"), xr, gz.double())
    assert grad.dtype == dtype
    (scale,) = magnitude_grads(lambda t: ref.relational_aggregate(t, ei, et, n, r, "mean"), [x], gz)[1]
    assert_close(grad, want_grad, dtype, out_degree(ei, n), scale=scale, what="grad")


@pytest.mark.parametrize("reduce", ["mean", "sum"])
def test_gradcheck_float64(reduce):
    n, r, d = 9, 3, 4
    ei, et = random_graph(n, r, 30, "cpu")
    g = RelationalGraph(ei, et, n, r)
    x = torch.randn(n, d, dtype=torch.float64, requires_grad=True)
    h = torch.randn(n, r, d, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: relational_aggregate(x, g, reduce), (x,))
    assert torch.autograd.gradgradcheck(lambda x: relational_aggregate(x, g, reduce), (x,))
    assert torch.autograd.gradcheck(lambda h: relational_message_sum(h, g, reduce), (h,))
    assert torch.autograd.gradgradcheck(lambda h: relational_message_sum(h, g, reduce), (h,))


def test_backward_matches_reference_and_is_deterministic(device):
    n, r, d = 64, 5, 31
    ei, et = random_graph(n, r, 1000, device)
    g = RelationalGraph(ei, et, n, r)
    x = torch.randn(n, d, device=device, requires_grad=True)
    gz = torch.randn(n, r, d, device=device)
    grads = [torch.autograd.grad(relational_aggregate(x, g), x, gz)[0] for _ in range(2)]
    assert torch.equal(grads[0], grads[1])  # bitwise: fixed summation order, no atomics
    xr = x.detach().double().requires_grad_()
    (want,) = torch.autograd.grad(ref.relational_aggregate(xr, ei, et, n, r, "mean"), xr, gz.double())
    (scale,) = magnitude_grads(lambda t: ref.relational_aggregate(t, ei, et, n, r, "mean"), [x], gz)[1]
    assert_close(grads[0], want, torch.float32, out_degree(ei, n), scale=scale, what="grad x")
    h = torch.randn(n, r, d, device=device, requires_grad=True)
    go = torch.randn(n, d, device=device)
    gh = [torch.autograd.grad(relational_message_sum(h, g, "sum"), h, go)[0] for _ in range(2)]
    assert torch.equal(gh[0], gh[1])
    hr = h.detach().double().requires_grad_()
    (want_h,) = torch.autograd.grad(ref.relational_message_sum(hr, ei, et, n, "sum"), hr, go.double())
    (scale,) = magnitude_grads(lambda t: ref.relational_message_sum(t, ei, et, n, "sum"), [h], go)[1]
    assert_close(gh[0], want_h, torch.float32, out_degree(ei, n, et, r), scale=scale, what="grad h")


def test_empty_graphs(device):
    g0 = RelationalGraph(torch.empty(2, 0, dtype=torch.long, device=device),
                         torch.empty(0, dtype=torch.long, device=device), 0, 3)
    x0 = torch.randn(0, 4, device=device, requires_grad=True)
    z0 = relational_aggregate(x0, g0)
    assert z0.shape == (0, 3, 4)
    z0.sum().backward()
    assert x0.grad.shape == (0, 4)
    g = RelationalGraph(torch.empty(2, 0, dtype=torch.long, device=device),
                        torch.empty(0, dtype=torch.long, device=device), 5, 2)
    x = torch.randn(5, 4, device=device, requires_grad=True)
    z = relational_aggregate(x, g)
    assert torch.equal(z, torch.zeros(5, 2, 4, device=device))
    z.sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))
    assert relational_message_sum(torch.randn(5, 2, 4, device=device), g).abs().sum() == 0


def test_int32_ids_and_graph_reuse(device):
    n, r = 11, 3
    ei, et = random_graph(n, r, 40, device)
    g64 = RelationalGraph(ei, et, n, r)
    g32 = RelationalGraph(ei.int(), et.int(), n, r)
    x = torch.randn(n, 6, device=device)
    assert torch.equal(relational_aggregate(x, g64), relational_aggregate(x, g32))
    assert g64.in_degree().sum() == 40
    assert "num_relations=3" in repr(g64)


def test_bad_inputs():
    n, r = 6, 2
    ei, et = random_graph(n, r, 10, "cpu")
    with pytest.raises(ValueError, match="out of range"):
        RelationalGraph(torch.tensor([[0, 6], [1, 2]]), torch.tensor([0, 1]), n, r)
    with pytest.raises(ValueError, match="out of range"):
        RelationalGraph(torch.tensor([[0, -1], [1, 2]]), torch.tensor([0, 1]), n, r)
    with pytest.raises(ValueError, match="type 2"):
        RelationalGraph(torch.tensor([[0, 1], [1, 2]]), torch.tensor([0, 2]), n, r)
    with pytest.raises(TypeError, match="edge_index must have dtype"):
        RelationalGraph(ei.float(), et, n, r)
    with pytest.raises(TypeError, match="edge_type must have dtype"):
        RelationalGraph(ei, et.float(), n, r)
    with pytest.raises(ValueError, match="edge_type must be on cpu"):
        RelationalGraph(ei, et.to("meta"), n, r)
    with pytest.raises(ValueError, match="one entry per edge"):
        RelationalGraph(ei, et[:-1], n, r)
    with pytest.raises(ValueError, match=r"shape \[2, E\]"):
        RelationalGraph(ei[:1], et, n, r)
    with pytest.raises(TypeError, match="num_nodes must be a Python int"):
        RelationalGraph(ei, et, torch.tensor(n), r)
    with pytest.raises(ValueError, match="num_relations must be >= 1"):
        RelationalGraph(ei, et, n, 0)
    g = RelationalGraph(ei, et, n, r)
    x = torch.randn(n, 4)
    xt = torch.randn(4, n).t()  # a strided view is read like its contiguous copy
    assert torch.equal(relational_aggregate(xt, g), relational_aggregate(xt.contiguous(), g))
    with pytest.raises(ValueError, match="one row per node"):
        relational_aggregate(torch.randn(n + 1, 4), g)
    with pytest.raises(TypeError, match="x must have dtype"):
        relational_aggregate(x.long(), g)
    with pytest.raises(ValueError, match="x must be on cpu"):
        relational_aggregate(torch.randn(n, 4, device="meta"), g)
    with pytest.raises(ValueError, match="reduce must be one of"):
        relational_aggregate(x, g, "max")
    with pytest.raises(TypeError, match="RelationalGraph"):
        relational_aggregate(x, (ei, et))
    with pytest.raises(ValueError, match=r"h must have shape \[N, 2, d\]"):
        relational_message_sum(torch.randn(n, 3, 4), g)


def test_unvalidated_invalid_edges_are_dropped_not_written():
    """What an unvalidated CUDA graph does with bad ids, checked on CPU: the edge is ignored."""
    n, r = 5, 2
    ei = torch.tensor([[0, 1, 7, 2, -3, 4], [1, 2, 3, 9, 0, 4]])
    et = torch.tensor([0, 1, 0, 1, 1, 5])
    g = RelationalGraph(ei, et, n, r, validate=False)
    x = torch.randn(n, 3, requires_grad=True)
    z = relational_aggregate(x, g, "sum")
    keep = torch.tensor([True, True, False, False, False, False])
    want = ref.relational_aggregate(x, ei[:, keep], et[keep], n, r, "sum")
    assert torch.equal(z, want)
    z.sum().backward()
    assert torch.equal(x.grad[:, 0], torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0]))


def _op_args(g, x, mean=True):
    return (x, g.rowptr, g.col, g.key, g.t_node_ptr, g.t_key, g.t_key, g.rowptr, mean)


def test_compiled_op_rejects_malformed_structures():
    n, r = 6, 2
    ei, et = random_graph(n, r, 10, "cpu")
    g = RelationalGraph(ei, et, n, r)
    x = torch.randn(n, 3)
    op = torch.ops.hotspot_erc.relational_aggregate
    bad_col = g.col.clone()
    bad_col[0] = n + 5
    with pytest.raises(RuntimeError, match="idx.*out of range"):
        op(x, g.rowptr, bad_col, g.key, g.t_node_ptr, g.t_key, g.t_key, g.rowptr, True)
    with pytest.raises(RuntimeError, match="must be int64"):
        op(x, g.rowptr.int(), g.col, g.key, g.t_node_ptr, g.t_key, g.t_key, g.rowptr, True)
    with pytest.raises(RuntimeError, match="same length"):
        op(x, g.rowptr, g.col, g.key[:-1], g.t_node_ptr, g.t_key, g.t_key, g.rowptr, True)
    with pytest.raises(RuntimeError, match="non-decreasing"):
        op(x, g.rowptr.flip(0), g.col, g.key, g.t_node_ptr, g.t_key, g.t_key, g.rowptr, True)
    with pytest.raises(RuntimeError, match="src must be contiguous"):
        op(torch.randn(3, n).t(), g.rowptr, g.col, g.key, g.t_node_ptr, g.t_key, g.t_key, g.rowptr, True)
    with pytest.raises(RuntimeError, match="t_ptr must have"):
        op(x, g.rowptr, g.col, g.key, g.rowptr, g.t_key, g.t_key, g.rowptr, True)
    with pytest.raises(RuntimeError, match="src must be float32"):
        op(x.long(), *_op_args(g, x)[1:])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_opcheck(device, dtype):
    n, r = 10, 3
    ei, et = random_graph(n, r, 30, device)
    g = RelationalGraph(ei, et, n, r)
    x = torch.randn(n, 5, device=device, dtype=dtype, requires_grad=True)
    torch.library.opcheck(torch.ops.hotspot_erc.relational_aggregate.default, _op_args(g, x))
    h = torch.randn(n * r, 5, device=device, dtype=dtype, requires_grad=True)
    torch.library.opcheck(torch.ops.hotspot_erc.relational_aggregate.default,
                          (h, g.node_ptr, g.col_rel, g.key, g.t_rowptr, g.t_dst, g.t_key, g.rowptr, False))


def test_torch_compile_fullgraph(device):
    n, r = 12, 3
    ei, et = random_graph(n, r, 40, device)

    def layer(x, ei, et):
        g = RelationalGraph(ei, et, n, r)  # built inside the graph too: no host sync, no break
        return relational_aggregate(x, g).sum(1) + relational_message_sum(x[:, None].expand(-1, r, -1).contiguous(), g)

    x = torch.randn(n, 4, device=device, requires_grad=True)
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    out = compiled(x, ei, et)
    want = layer(x, ei, et)
    g = RelationalGraph(ei, et, n, r)
    # one output: the r bucket means (at most bucket_degree terms each) summed, plus message_sum's
    # sum over every in-edge of the node
    assert_close(out, want, torch.float32, bucket_degree(g) + r + node_degree(g),
                 scale=magnitude(layer, x.detach(), ei, et), what="forward")
    (g1,) = torch.autograd.grad(out.sum(), x)
    (g2,) = torch.autograd.grad(want.sum(), x)
    # x[j]'s gradient: one term per out-edge from each of the two ops; all terms positive
    assert_close(g1, g2, torch.float32, 2 * out_degree(ei, n), what="grad")
    compiled2 = torch.compile(lambda x, g: relational_aggregate(x, g, "sum"), fullgraph=True, dynamic=True)
    assert_close(compiled2(x, g), relational_aggregate(x, g, "sum"), torch.float32, bucket_degree(g),
                 scale=magnitude(lambda t: relational_aggregate(t, g, "sum"), x.detach()), what="dynamic")


def test_backend_choice():
    n, r = 4, 2
    g = RelationalGraph(torch.tensor([[0, 1], [1, 2]]), torch.tensor([0, 1]), n, r)
    x = torch.randn(n, 3)
    assert _backend.choose("relational_aggregate", None, x.device, _backend.OPS["relational_aggregate"]) == "cpu"
    assert torch.equal(relational_aggregate(x, g, backend="cpu"), relational_aggregate(x, g, backend="reference"))
    with pytest.raises(_backend.BackendUnavailable, match="needs CUDA tensors|unavailable"):
        relational_aggregate(x, g, backend="cuda")
    with pytest.raises(_backend.BackendUnavailable, match="no 'triton' backend"):
        relational_aggregate(x, g, backend="triton")


@pytest.mark.parametrize("e", [0, 1, 80, 600])  # no edges, one, sparse buckets, most buckets full
@pytest.mark.parametrize("reduce", ["mean", "sum"])
def test_relational_matmul_grouped(reduce, e):
    n, r = 23, 4
    ei, et = random_graph(n, r, e, "cpu")  # relation 3 unused, nodes 21-22 isolated
    g = RelationalGraph(ei, et, n, r)
    x = torch.randn(n, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(r, 5, 3, dtype=torch.float64, requires_grad=True)
    out = relational_matmul(x, w, g, reduce)

    def spec(x, w):
        return torch.einsum("nri,rio->no", ref.relational_aggregate(x, ei, et, n, r, reduce), w)

    want = spec(x, w)
    # a term goes through its bucket's sum, then the GEMM's sum over r * in
    k_out = bucket_degree(g) + r * 5
    scale = magnitude(spec, x.detach(), w.detach())
    assert_close(out, want, torch.float64, k_out, scale=scale, what="forward")
    assert torch.autograd.gradcheck(lambda x, w: relational_matmul(x, w, g, reduce), (x, w))
    go = torch.randn(n, 3, dtype=torch.float64)
    first = torch.autograd.grad(relational_matmul(x, w, g, reduce), [x, w], go)
    again = torch.autograd.grad(relational_matmul(x, w, g, reduce), [x, w], go)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert_close(relational_matmul(x, w, g, reduce, backend="reference"), want, torch.float64, k_out, scale=scale,
                 what="reference backend")
    rm = g.relation_major()
    assert rm["num_buckets"] == int((g.in_degree() > 0).sum())
    # only x needs a gradient / only the weight does; x's gradient: the sum over out (3) of the
    # GEMM, then one term per out-edge; the weight's: a bucket's sum, then one term per node
    sx, sw = magnitude_grads(spec, [x, w], go)[1]
    (gx,) = torch.autograd.grad(relational_matmul(x, w.detach(), g, reduce), x, go)
    assert_close(gx, first[0], torch.float64, 3 + out_degree(ei, n), scale=sx, what="grad x")
    (gw,) = torch.autograd.grad(relational_matmul(x.detach(), w, g, reduce), w, go)
    assert_close(gw, first[1], torch.float64, bucket_degree(g) + n, scale=sw, what="grad w")


def test_relational_matmul_bad_weight():
    g = RelationalGraph(torch.tensor([[0, 1], [1, 2]]), torch.tensor([0, 1]), 4, 2)
    x = torch.randn(4, 5)
    with pytest.raises(ValueError, match=r"weight must have shape \[2, 5, out\]"):
        relational_matmul(x, torch.randn(2, 4, 3), g)
    with pytest.raises(TypeError, match="weight must have dtype"):
        relational_matmul(x, torch.randn(2, 5, 3, dtype=torch.float64), g)


def test_cuda_kernel_registered_when_cuda_built():
    """A CUDA syntax error in csrc/relational must fail CI even without a GPU."""
    if not _ext.cuda_built():
        pytest.skip(f"extension built without CUDA: {_ext.cuda_unavailable_reason()}")
    assert _ext.has_kernel("relational_aggregate", "CUDA")
    assert _ext.has_kernel("relational_aggregate", "CPU")
    assert _ext.has_kernel("relational_aggregate", "Autograd")


@pytest.mark.gpu
@pytest.mark.parametrize("d", [3, 64])  # the one-feature and the four-feature CUDA kernels
def test_cuda_matches_cpu_bitwise(d):
    n, r = 300, 5
    ei, et = random_graph(n, r, 3000, "cpu")
    g_cpu = RelationalGraph(ei, et, n, r)
    g_gpu = g_cpu.to("cuda")
    x = torch.randn(n, d)
    # same shared per-row arithmetic, same edge order: identical up to FMA contraction
    out_gpu = relational_aggregate(x.cuda(), g_gpu).cpu()
    assert_close(out_gpu, relational_aggregate(x, g_cpu), torch.float32, bucket_degree(g_cpu),
                 scale=magnitude(lambda t: relational_aggregate(t, g_cpu), x), what="cuda vs cpu")
    bad = RelationalGraph(torch.tensor([[0, n + 3], [1, 1]], device="cuda"), torch.tensor([0, 0], device="cuda"),
                          n, r, validate=False)
    z = relational_aggregate(x.cuda(), bad, "sum")
    torch.cuda.synchronize()
    assert torch.equal(z[1, 0].cpu(), x[0])


@pytest.mark.gpu
def test_cuda_forward_backward_never_synchronise():
    from hotspot_erc.nn.rgcn import RGCNConv

    n, r = 500, 6
    ei, et = random_graph(n, r, 4000, "cuda")
    layer = RGCNConv(32, 48, r).cuda()
    x = torch.randn(n, 32, device="cuda", requires_grad=True)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        g = RelationalGraph(ei, et, n, r)  # building the CSR on device: no host read either
        out = layer(x, g)
        out.backward(torch.ones_like(out))
        relational_message_sum(torch.randn(n, r, 8, device="cuda"), g)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    assert x.grad is not None and torch.isfinite(x.grad).all()
