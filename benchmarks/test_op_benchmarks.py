"""Op-level benchmarks under pytest-benchmark, so results can be compared between commits:

    pytest benchmarks/test_op_benchmarks.py --benchmark-autosave          # store this commit's run
    pytest benchmarks/test_op_benchmarks.py --benchmark-compare           # compare with the last one

Each op runs with its automatic backend ("ours") and its plain-PyTorch reference, forward and
forward+backward, at one conversation-sized shape on whatever device is present. Baselines come
from ``hotspot_erc.reference``; nothing is re-typed. Not collected by ``make test`` (testpaths).
"""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("pytest_benchmark")

from hotspot_erc import ops  # noqa: E402
from hotspot_erc import reference as ref  # noqa: E402

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
DTYPE = torch.bfloat16 if DEVICE.type == "cuda" else torch.float32


def _sync():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def _lengths(n_seg=32, lo=20, hi=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(lo, hi + 1, (n_seg,), generator=g)
    return torch.cat([torch.zeros(1, dtype=torch.long), lens.cumsum(0)]).to(DEVICE)


def _run(benchmark, fn, leaves, backward):
    def step():
        out = fn()
        if backward:
            torch.autograd.grad(out.float().sum(), leaves)
        _sync()

    benchmark(step)


@pytest.mark.parametrize("impl", ["ours", "reference"])
@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "fwd+bwd"])
def test_hotspot_gate(benchmark, impl, backward):
    d = 128
    c = torch.randn(8192, d, device=DEVICE, dtype=DTYPE, requires_grad=True)
    h = torch.randn(8192, d, device=DEVICE, dtype=DTYPE, requires_grad=True)
    w = (torch.randn(2 * d, d, device=DEVICE, dtype=DTYPE) / d ** 0.5).requires_grad_()
    b = torch.zeros(d, device=DEVICE, dtype=DTYPE, requires_grad=True)
    fn = ops.hotspot_gate if impl == "ours" else ref.hotspot_gate_reference
    _run(benchmark, lambda: fn(c, h, w, b), [c, h, w, b], backward)


@pytest.mark.parametrize("impl", ["ours", "reference"])
@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "fwd+bwd"])
def test_varlen_cross_attention(benchmark, impl, backward):
    cu_q, cu_k = _lengths(seed=1), _lengths(seed=2)
    q = torch.randn(int(cu_q[-1]), 4, 32, device=DEVICE, dtype=DTYPE, requires_grad=True)
    k = torch.randn(int(cu_k[-1]), 4, 32, device=DEVICE, dtype=DTYPE, requires_grad=True)
    v = torch.randn(int(cu_k[-1]), 4, 32, device=DEVICE, dtype=DTYPE, requires_grad=True)
    fn = ops.varlen_cross_attention if impl == "ours" else ref.varlen_cross_attention_reference
    _run(benchmark, lambda: fn(q, k, v, cu_q, cu_k), [q, k, v], backward)


@pytest.mark.parametrize("impl", ["ours", "reference"])
@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "fwd+bwd"])
def test_grouped_expert_linear(benchmark, impl, backward):
    cu = _lengths(seed=3)
    n, s, e, k, d = int(cu[-1]), cu.numel() - 1, 8, 2, 128
    x = torch.randn(n, d, device=DEVICE, dtype=DTYPE, requires_grad=True)
    experts = torch.stack([torch.randperm(e)[:k] for _ in range(s)]).to(DEVICE)
    gates = torch.softmax(torch.randn(s, k, device=DEVICE), -1).to(DTYPE).requires_grad_()
    w = (torch.randn(e, d, d, device=DEVICE, dtype=DTYPE) / d ** 0.5).requires_grad_()
    fn = ops.grouped_expert_linear if impl == "ours" else ref.grouped_expert_linear_reference
    _run(benchmark, lambda: fn(x, cu, experts, gates, w), [x, gates, w], backward)


@pytest.mark.parametrize("impl", ["ours", "reference"])
@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "fwd+bwd"])
def test_relational_aggregate(benchmark, impl, backward):
    n, e, r, d = 4800, 48000, 12, 128
    g = torch.Generator().manual_seed(4)
    ei = torch.randint(0, n, (2, e), generator=g).to(DEVICE)
    et = torch.randint(0, r, (e,), generator=g).to(DEVICE)
    x = torch.randn(n, d, device=DEVICE, dtype=torch.float32, requires_grad=True)
    if impl == "ours":
        graph = ops.RelationalGraph(ei, et, n, r)
        fn = lambda: ops.relational_aggregate(x, graph)  # noqa: E731
    else:
        fn = lambda: ref.relational_aggregate_reference(x, ei, et, n, r)  # noqa: E731
    _run(benchmark, fn, [x], backward)
