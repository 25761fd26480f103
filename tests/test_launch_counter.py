"""Launch counter (hotspot_erc.testing) and per-op launch ceilings.

The counter must count a known toy exactly; then every op's launches on small shapes (Triton
backend through the interpreter, and the CPU backend) are held to today's measured counts as
ceilings, so a change that adds launches fails here. Every launch budget is met, so the
ceilings are at or below the budgets.

Run ``python tests/test_launch_counter.py`` to print every case's counts.
"""
import functools
import os

if __name__ == "__main__":  # pragma: no cover - the table printer below runs without pytest
    import torch as _torch

    if not _torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest
import torch

from hotspot_erc.testing import LaunchCount, LaunchCounter, count_fwd_bwd, count_launches, is_counted
from tolerance import assert_close, rel_bound

# ----------------------------------------------------------------------------- the counter itself


def _toy_kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def _add_one(x_ptr, n, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        tl.store(x_ptr + offs, tl.load(x_ptr + offs, mask=mask) + 1, mask=mask)

    return _add_one


def test_counts_toy_exactly():
    kernel = _toy_kernel()

    def toy(x):
        y = x.view(-1).clone()                 # view: 0, clone: 1
        kernel[(1,)](y, y.numel(), BLOCK=16)   # Triton: 1
        kernel[(1,)](y, y.numel(), BLOCK=16)   # Triton: 1 (its interpreter copies: not counted)
        z = torch.empty_like(y)                # allocation: 0
        z.zero_()                              # fill: 1
        return (y + z)[1:].unsqueeze(0).t()    # add: 1; slice, unsqueeze, t: views, 0

    x = torch.randn(3, 4)
    n = count_launches(toy, x)
    assert (n.total, n.triton, n.aten, n.custom) == (5, 2, 3, 0), n
    assert n.launches == {"aten.clone": 1, "triton:_add_one": 2, "aten.zero_": 1, "aten.add": 1}
    # the hook launches for real: x + 1 + 1, two roundings, against x + 2, one
    assert_close(toy(x), (x.view(-1) + 2)[1:].unsqueeze(0).t(), torch.float32, 2,
                 scale=(x.view(-1).abs() + 2)[1:].unsqueeze(0).t(), what="toy")
    assert "triton=2" in repr(n) and "triton:_add_one×2" in repr(n)


def test_looks_inside_python_custom_ops_and_counts_autograd_engine_ops():
    kernel = _toy_kernel()

    @torch.library.custom_op("hotspot_erc_test::add_one_twice", mutates_args=())
    def add_one_twice(x: torch.Tensor) -> torch.Tensor:
        y = x.clone()                              # 1
        kernel[(1,)](y, y.numel(), BLOCK=16)       # 1
        return y * 2                               # 1

    add_one_twice.register_autograd(lambda ctx, g: 2 * g)  # backward: mul
    x = torch.randn(8, requires_grad=True)
    fwd, bwd = count_fwd_bwd(lambda t: add_one_twice(t) + add_one_twice(t), x)
    assert fwd.launches == {"aten.clone": 2, "triton:_add_one": 2, "aten.mul": 2, "aten.add": 1}, fwd
    # two mul (one per use) + the engine's add summing x's two gradients
    assert bwd.launches == {"aten.mul": 2, "aten.add": 1}, bwd


def test_counts_cpp_ops_as_kernels():
    from hotspot_erc import _ext

    if not _ext.has_kernel("relational_aggregate", "CPU"):
        pytest.skip("compiled ops unavailable (python -m hotspot_erc.info says why)")
    from hotspot_erc.ops.relational import RelationalGraph, relational_aggregate

    ei = torch.tensor([[0, 1, 2, 3], [1, 2, 3, 0]])
    graph = RelationalGraph(ei, torch.tensor([0, 1, 0, 1]), 4, 2)
    n = count_launches(relational_aggregate, torch.randn(4, 3), graph, backend="cpu")
    assert n.custom >= 1, n
    assert any(k.startswith("hotspot_erc.") for k in n.launches), n


def test_views_allocations_excluded_syncs_listed():
    ops = torch.ops.aten
    assert not is_counted(ops.view.default) and not is_counted(ops.t.default)
    assert not is_counted(ops.empty.memory_format) and not is_counted(ops.empty_like.default)
    assert not is_counted(ops._unsafe_view.default) and not is_counted(ops.as_strided_.default)
    assert is_counted(ops.zero_.default) and is_counted(ops.zeros.default) and is_counted(ops.copy_.default)
    x = torch.arange(6.0)
    n = count_launches(lambda: (x.nonzero(), x.sum().item()))
    assert n.syncs == {"aten.nonzero": 1, "aten._local_scalar_dense": 1}, n
    assert isinstance(n, LaunchCount) and int(n) == n.total == 3


def test_nested_counters_both_count():
    x = torch.randn(4)
    with LaunchCounter() as outer:
        x + 1
        with LaunchCounter() as inner:
            x * 2
    assert inner.count.total == 1 and outer.count.total == 2


# ----------------------------------------------------------------------------- per-op cases
# Small shapes: odd sizes and an empty segment, as the op tests use.

def _gate_case(backend):
    from hotspot_erc.ops.hotspot_gate import hotspot_gate

    n, d = 13, 16
    c, h = torch.randn(n, d, requires_grad=True), torch.randn(n, d, requires_grad=True)
    w = (torch.randn(2 * d, d) / d).requires_grad_()
    b = torch.randn(d, requires_grad=True)
    return lambda *a: hotspot_gate(*a, backend=backend), (c, h, w, b)


def _grouped_case(backend):
    from hotspot_erc.ops.grouped_linear import grouped_expert_linear

    lens, d_in, d_out, num_experts, k = [3, 0, 5, 7], 16, 8, 4, 2
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist())
    x = torch.randn(cu[-1].item(), d_in, requires_grad=True)
    experts = torch.stack([torch.randperm(num_experts)[:k] for _ in lens])
    gates = torch.softmax(torch.randn(len(lens), k), -1).requires_grad_()
    w = torch.randn(num_experts, d_in, d_out, requires_grad=True)
    b = torch.randn(num_experts, d_out, requires_grad=True)
    return (lambda x, g, w, b: grouped_expert_linear(x, cu, experts, g, w, b, backend=backend)), (x, gates, w, b)


def _attention_case(backend):
    from hotspot_erc.ops.varlen_attention import varlen_cross_attention

    lq, lk, heads, dh = [3, 5, 0, 4], [4, 2, 3, 0], 2, 16
    cu_q = torch.tensor([0] + torch.tensor(lq).cumsum(0).tolist())
    cu_k = torch.tensor([0] + torch.tensor(lk).cumsum(0).tolist())
    q = torch.randn(sum(lq), heads, dh, requires_grad=True)
    k = torch.randn(sum(lk), heads, dh, requires_grad=True)
    v = torch.randn(sum(lk), heads, dh, requires_grad=True)
    return (lambda q, k, v: varlen_cross_attention(q, k, v, cu_q, cu_k, backend=backend)), (q, k, v)


def _graph_attention_case(backend):
    from hotspot_erc.ops.graph_attention import AttentionGraph, graph_attention

    n_src, n_dst, e, heads, dim = 9, 11, 40, 2, 16
    ei = torch.stack([torch.randint(0, n_src, (e,)), torch.randint(0, n_dst - 2, (e,))])
    graph = AttentionGraph(ei, n_src, n_dst)  # prepared once, as a model reuses it across layers
    q = torch.randn(n_dst, heads, dim, requires_grad=True)
    k = torch.randn(n_src, heads, dim, requires_grad=True)
    v = torch.randn(n_src, heads, dim, requires_grad=True)
    edge = torch.randn(e, heads, dim, requires_grad=True)
    return (lambda q, k, v, edge: graph_attention(q, k, v, graph, edge, backend=backend)), (q, k, v, edge)


def _rgcn_case(backend):
    from hotspot_erc.nn.rgcn import RGCNConv
    from hotspot_erc.ops.relational import RelationalGraph

    n, r, e, dim = 12, 4, 40, 8
    ei = torch.randint(0, n, (2, e))
    et = torch.randint(0, r, (e,))
    graph = RelationalGraph(ei, et, n, r)  # prepared once, as a model reuses it across layers
    layer = RGCNConv(dim, dim, r)
    x = torch.randn(n, dim, requires_grad=True)
    if backend == "triton":
        # The layer picks its path from the device: on CUDA tensors it calls relational_conv with
        # these arguments, which runs the Triton gather-GEMM (here through the interpreter).
        from hotspot_erc.ops.relational import relational_conv

        return (lambda x: relational_conv(x, layer.weight, graph, layer.root, layer.bias, "mean",
                                          backend="triton")), (x,), layer
    assert backend == "cpu"
    return (lambda x: layer(x, graph)), (x,), layer


MOA_LENS = {"t": [3, 5, 1], "a": [6, 2, 3], "v": [2, 0, 4]}  # 3 modalities, 3 utterances


def _moa_case(backend):
    from hotspot_erc.nn.moa import MixtureOfAligners

    dim = 16
    moa = MixtureOfAligners(dim, num_experts=4, top_k=2, num_heads=2, backend=backend)
    cu = {m: torch.tensor([0] + torch.tensor(l).cumsum(0).tolist()) for m, l in MOA_LENS.items()}
    feats = {m: torch.randn(int(c[-1]), dim, requires_grad=True) for m, c in cu.items()}
    return moa, feats, cu


def _moa_loss(out):
    return sum(o.square().mean() for o in out.outputs.values()) + out.lb_loss


@functools.lru_cache(maxsize=None)
def measure(op: str, backend: str) -> tuple[LaunchCount, LaunchCount]:
    """(forward, backward) launch counts of one case, steady state (after one uncounted step);
    the MoA case: (forward + loss, backward). Cached: the ceiling and budget tests share it.

    The draw is part of the case and stays fixed whatever HOTSPOT_ERC_TEST_SEED says: the CPU
    paths launch one GEMM per expert group that received tokens, so MoA's CPU counts follow the
    routing a draw gives (over 400 draws: forward 155-163, backward 254-302), and a ceiling
    holds for one routing."""
    torch.manual_seed(0)
    if op == "moa":
        moa, feats, cu = _moa_case(backend)
        return count_fwd_bwd(moa, feats, cu, loss=_moa_loss,
                             inputs=[*moa.parameters(), *feats.values()])
    if op == "rgcn":
        fn, args, layer = _rgcn_case(backend)
        return count_fwd_bwd(fn, *args, inputs=[*args, *layer.parameters()])
    fn, args = {"gate": _gate_case, "grouped": _grouped_case, "attention": _attention_case,
                "graph_attention": _graph_attention_case}[op](backend)
    out = fn(*args)
    return count_fwd_bwd(fn, *args, grad=torch.randn_like(out))


def _launches(op: str, backend: str, which: str) -> tuple[int, LaunchCount | tuple]:
    fwd, bwd = measure(op, backend)
    if which == "fwd":
        return fwd.total, fwd
    if which == "bwd":
        return bwd.total, bwd
    return fwd.total + bwd.total, (fwd, bwd)


# Today's counts with this counter on these cases (value checks apart, as the CUDA path runs
# them only with HOTSPOT_ERC_VALIDATE=1), measured 2026-11-30 at the commit that added it (and
# on the kernel work in progress then, the larger of the two): ceilings, lower them as the
# kernels improve. "fwd+bwd" of MoA: forward (with the loss) plus backward.
CEILINGS = {
    ("gate", "triton", "fwd"): 1, ("gate", "triton", "bwd"): 2,  # budget 1 / 2: met
    ("gate", "cpu", "fwd"): 4, ("gate", "cpu", "bwd"): 11,
    ("grouped", "triton", "fwd"): 2, ("grouped", "triton", "bwd"): 3,  # budget 2 / 4: met
    ("grouped", "cpu", "fwd"): 20, ("grouped", "cpu", "bwd"): 51,
    ("attention", "triton", "fwd"): 2, ("attention", "triton", "bwd"): 2,  # budget 2 / 3: met
    ("attention", "cpu", "fwd"): 43, ("attention", "cpu", "bwd"): 55,
    # attention over incoming edges (prepared graph, edge features): budget 2 / 4: met
    ("graph_attention", "triton", "fwd"): 1, ("graph_attention", "triton", "bwd"): 2,
    ("graph_attention", "cpu", "fwd"): 1, ("graph_attention", "cpu", "bwd"): 1,
    # budget 3 / 6: met (was 20 / 18, then 3 / 3; 1 / 1 with the fused relational_conv)
    ("rgcn", "cpu", "fwd"): 1, ("rgcn", "cpu", "bwd"): 1,
    # the CUDA path (Triton gather-GEMM + per-node sum): was 3 / 3 with Z in memory
    ("rgcn", "triton", "fwd"): 2, ("rgcn", "triton", "bwd"): 3,
    # MoA Triton: 305 / 444 / 749 before grouped_expert_linear's plan (2 / 3 launches per pair),
    # 215 / 180 / 395 with it; 86 / 83 / 169 with every pair batched (one router bmm, one routing,
    # one grouped call, one attention call, one query and one output matmul per target).
    # Budget fwd+bwd 214 (40% of the 535 counted before this work): met.
    ("moa", "triton", "fwd"): 86, ("moa", "triton", "bwd"): 83, ("moa", "triton", "fwd+bwd"): 169,
    # CPU 566 / 768 per pair (forward 554 -> 566: nn/moa.py's instruments), 162 / 286 batched
    ("moa", "cpu", "fwd"): 162, ("moa", "cpu", "bwd"): 286,
}
# The launch budgets (hotspot_gate 1 / 2, grouped_expert_linear 2 / 4, varlen attention 2 / 3,
# graph_attention 2 / 4, RGCNConv 3 / 6 on CPU and CUDA, MixtureOfAligners fwd+bwd 214) are all
# met: the ceilings above are at or below them, so a change that breaks a budget fails test_launches_at_most_today.


def _ids(table):
    return ["-".join(k) for k in table]


@pytest.mark.parametrize("op,backend,which", list(CEILINGS), ids=_ids(CEILINGS))
def test_launches_at_most_today(op, backend, which):
    n, detail = _launches(op, backend, which)
    assert n <= CEILINGS[op, backend, which], f"{op} {which} launches grew to {n}: {detail}"


if __name__ == "__main__":  # pragma: no cover
    import sys

    wanted = sys.argv[1:]
    for op, backend in dict.fromkeys(k[:2] for k in CEILINGS):
        if wanted and op not in wanted:
            continue
        f, b = measure(op, backend)
        print(f"{op:9s} {backend:7s} fwd {f.total:4d} bwd {b.total:4d} total {f.total + b.total:4d}")
        print(f"   fwd {f}\n   bwd {b}", flush=True)


def test_value_checks_listed_apart_and_sites_recorded():
    fn, args = _attention_case("triton")
    n = count_launches(fn, *args)
    with_checks = count_launches(fn, *args, include_validation=True)
    assert n.validation and "_local_scalar_dense" in repr(n.validation)  # cu_seqlens checks (CPU only)
    assert with_checks.total == n.total + sum(n.validation.values())
    assert any("check_cu_seqlens" in site for _, site in n.sites)
    assert "hotspot_erc.kernels.varlen_attention" in n.where()


# ----------------------------------------------------------------------------- perf model

def test_perf_model_matches_design_floors():
    pm = pytest.importorskip("benchmarks.perf_model")
    h100 = "NVIDIA H100 80GB HBM3"
    # DESIGN §6: hotspot_gate vector, N = 64k, d = 256, bf16: both floors ≈ 20-35 µs on the H100.
    w = pm.hotspot_gate(65536, 256, 256, 2, "fwd")
    assert w.flops == 4 * 65536 * 256 * 256 and w.bytes == 2 * (3 * 65536 * 256 + 2 * 256 * 256 + 256)
    assert 20e-3 <= w.flops / 800e12 * 1e3 <= 35e-3 and 20e-3 <= w.bytes / 3.0e12 * 1e3 <= 35e-3
    # a division and a scaling, in float64
    assert pm.floor_ms(w, h100, "bfloat16") == pytest.approx(max(w.flops / 800e12, w.bytes / 3.0e12) * 1e3,
                                                             rel=rel_bound(torch.float64), abs=0)
    bwd = pm.hotspot_gate(65536, 256, 256, 2, "bwd")
    assert bwd.flops == 3 * w.flops and pm.hotspot_gate(65536, 256, 256, 2, "fwd+bwd") == w + bwd
    # varlen attention: backward 2.5x the forward's FLOPs
    f = pm.varlen_cross_attention([3, 5], [4, 0], 2, 16, 2, "fwd")
    assert f.flops == 4 * 2 * 16 * 12 and pm.varlen_cross_attention([3, 5], [4, 0], 2, 16, 2, "bwd").flops == 2.5 * f.flops
    # grouped linear: 2·N·k·d_in·d_out, each used expert's weight read once
    g = pm.grouped_expert_linear(100, 8, 4, 2, 3, 2, "fwd", bias=False)
    assert g.flops == 2 * 100 * 2 * 8 * 4 and g.bytes == 2 * (100 * 8 + 100 * 4 + 3 * 8 * 4)
    # RGCN: only the non-empty buckets are multiplied
    dense = pm.rgcn_conv(10, 30, 4, 8, 8, 4, "fwd")
    sparse = pm.rgcn_conv(10, 30, 4, 8, 8, 4, "fwd", nonempty_buckets=12)
    assert dense.flops - sparse.flops == 2 * (40 - 12) * 8 * 8


def test_perf_model_shares_only_on_known_devices():
    pm = pytest.importorskip("benchmarks.perf_model")
    w = pm.Work(1e12, 1e9)
    r = pm.rates(w, 10.0, "NVIDIA H200", "bfloat16")
    # rates: a few float64 divisions and scalings of exact inputs
    f64 = dict(rel=rel_bound(torch.float64), abs=0)
    assert r["tflops"] == pytest.approx(100, **f64) and r["gbps"] == pytest.approx(100, **f64)
    assert r["flops_share"] == pytest.approx(100e12 / 989e12, **f64)
    assert r["bw_share"] == pytest.approx(100e9 / 4.8e12, **f64)
    assert pm.device_peaks("NVIDIA GH200 480GB")["bytes_per_s"] == 4.0e12  # not matched as "H200"
    for name in ("x86_64 CPU x2", "Some Future GPU", None):
        r = pm.rates(w, 10.0, name, "bfloat16")
        assert "bw_share" not in r and "floor_ms" not in r


def test_ops_with_python_decompositions_run_their_own_kernel():
    """aten.native_batch_norm carries a Python decomposition under CompositeImplicitAutograd but
    no such C++ kernel: the counter runs (and counts) the op itself instead of asking the
    dispatcher for a kernel that is not there (which crashed the process)."""
    bn = torch.nn.BatchNorm1d(6).train()
    x = torch.randn(5, 6, requires_grad=True)
    count = count_launches(lambda: bn(x), warmup=0)
    assert count.launches["aten.native_batch_norm"] == 1
