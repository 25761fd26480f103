"""Property fuzzing: every op on many small random inputs against its float64 reference,
outputs and gradients (issue 13).

``hypothesis`` is not a dependency, so the cases come from a seeded generator: each test draws
its shapes, segment layouts (empty segments included), index dtypes, strides and options from
``random.Random(seed)``; a failure names the seed and case, which replays it exactly. The
compiled and ATen paths get many cases; the Triton kernels run through the interpreter on CPU
and get a few tiny ones.
"""
import random

import pytest
import torch

from hotspot_erc.nn.rgcn import RGCNConv
from hotspot_erc.ops import segment
from hotspot_erc.ops.grouped_linear import grouped_expert_linear
from hotspot_erc.ops.hotspot_gate import hotspot_gate
from hotspot_erc.ops.relational import (RelationalGraph, relational_aggregate, relational_matmul,
                                        relational_message_sum)
from hotspot_erc.ops.varlen_attention import varlen_cross_attention
from hotspot_erc.reference import relational as ref_rel
from hotspot_erc.reference.grouped_linear import grouped_expert_linear_per_segment
from hotspot_erc.reference.hotspot_gate import hotspot_gate_reference
from hotspot_erc.reference.varlen_attention import varlen_cross_attention_reference

from conftest import rel_err

F64 = torch.float64
# (backend, dtype, cases, tolerance on ‖out − ref‖ / ‖ref‖)
RUNS = [("cpu", F64, 120, 1e-10), ("reference", F64, 30, 1e-10), ("triton", torch.float32, 10, 2e-5)]


def _cu(rng, segments, longest, dtype=None):
    lens = [rng.randint(0, longest) for _ in range(segments)]
    if rng.random() < 0.3 and lens:
        lens[rng.randrange(len(lens))] = 0
    cu = torch.tensor([0] + lens).cumsum(0)
    return cu.to(dtype or rng.choice([torch.int32, torch.int64]))


def _maybe_strided(rng, t):
    """``t``, or a view of the same values with a stride of 2 along the first dimension."""
    if rng.random() < 0.5 or t.dim() == 0:
        return t
    wide = torch.zeros((2 * t.shape[0],) + tuple(t.shape[1:]), dtype=t.dtype)
    wide[::2] = t
    return wide[::2]


def _randn(gen, *shape, dtype=F64):
    return torch.randn(*shape, generator=gen, dtype=F64).to(dtype)


def _compare(got, want, tol, what):
    assert got.shape == want.shape, what
    assert torch.isfinite(got).all(), what
    assert rel_err(got, want) <= tol, f"{what}: rel err {rel_err(got, want):.2e}"


def _run(fn_op, fn_ref, inputs, gen, tol, what):
    """Forward and backward of op and reference from the same leaves, compared."""
    ours = [t.detach().clone().requires_grad_() for t in inputs]
    refs = [t.detach().double().clone().requires_grad_() for t in inputs]
    out, want = fn_op(*ours), fn_ref(*refs)
    _compare(out, want, tol, what + " output")
    dy = _randn(gen, *out.shape)
    for y, g in ((out, dy.to(out.dtype)), (want, dy)):
        if y.requires_grad:
            y.backward(g)
        else:
            assert y.numel() == 0, f"{what}: a non-empty output outside the autograd graph"
    for i, (a, b) in enumerate(zip(ours, refs)):
        # an input the output does not use (a bias left out) may get None or zeros
        ga = a.grad if a.grad is not None else torch.zeros_like(a)
        gb = b.grad if b.grad is not None else torch.zeros_like(b)
        _compare(ga, gb, tol, f"{what} grad {i}")


# ----------------------------------------------------------------------------- attention

@pytest.mark.parametrize("backend, dtype, count, tol", RUNS, ids=[r[0] for r in RUNS])
def test_fuzz_varlen_attention(backend, dtype, count, tol):
    for seed in range(count):
        rng, gen = random.Random(seed), torch.Generator().manual_seed(seed)
        s = rng.randint(0, 4)
        cq, ck = _cu(rng, s, 9), _cu(rng, s, 9)
        heads, dh = rng.randint(1, 3), rng.choice([1, 3, 8, 17])
        scale = rng.choice([None, 0.3, 2.0])
        q = _randn(gen, int(cq[-1]), heads, dh, dtype=dtype)
        k = _randn(gen, int(ck[-1]), heads, dh, dtype=dtype)
        v = _randn(gen, int(ck[-1]), heads, dh, dtype=dtype)
        cq_in, ck_in = _maybe_strided(rng, cq), _maybe_strided(rng, ck)
        _run(lambda q, k, v: varlen_cross_attention(q, k, v, cq_in, ck_in, scale, backend=backend),
             lambda q, k, v: varlen_cross_attention_reference(q, k, v, cq.long(), ck.long(), scale),
             [q, k, v], gen, tol, f"seed {seed}")


# ----------------------------------------------------------------------------- grouped linear

@pytest.mark.parametrize("backend, dtype, count, tol", RUNS, ids=[r[0] for r in RUNS])
def test_fuzz_grouped_expert_linear(backend, dtype, count, tol):
    for seed in range(count):
        rng, gen = random.Random(seed), torch.Generator().manual_seed(seed)
        s, e = rng.randint(0, 4), rng.randint(1, 4)
        k = rng.randint(1, e)
        cu = _cu(rng, s, 7)
        d_in, d_out = rng.randint(1, 7), rng.randint(1, 7)
        experts = torch.randint(0, e, (s, k), generator=gen).to(rng.choice([torch.int32, torch.int64]))
        x = _randn(gen, int(cu[-1]), d_in, dtype=dtype)
        gates = torch.rand(s, k, generator=gen, dtype=F64).to(dtype)
        weight = _randn(gen, e, d_in, d_out, dtype=dtype)
        bias = _randn(gen, e, d_out, dtype=dtype)
        has_bias = rng.random() < 0.7
        cu_in, ex_in = _maybe_strided(rng, cu), _maybe_strided(rng, experts)

        def op(x, g, w, b):
            return grouped_expert_linear(x, cu_in, ex_in, g, w, b if has_bias else None, backend=backend)

        def ref(x, g, w, b):
            return grouped_expert_linear_per_segment(x, cu, experts.long(), g, w, b if has_bias else None)

        _run(op, ref, [x, gates, weight, bias], gen, tol, f"seed {seed}")


# ----------------------------------------------------------------------------- hotspot gate

@pytest.mark.parametrize("backend, dtype, count, tol", RUNS, ids=[r[0] for r in RUNS])
def test_fuzz_hotspot_gate(backend, dtype, count, tol):
    for seed in range(count):
        rng, gen = random.Random(seed), torch.Generator().manual_seed(seed)
        n, d = rng.randint(0, 9), rng.randint(1, 9)
        g = rng.choice([1, d])
        inputs = [_randn(gen, n, d, dtype=dtype), _randn(gen, n, d, dtype=dtype),
                  _randn(gen, 2 * d, g, dtype=dtype), _randn(gen, g, dtype=dtype)]
        if rng.random() < 0.5:
            inputs[0] = inputs[0].t().contiguous().t()  # column-major storage
        _run(lambda c, h, w, b: hotspot_gate(c, h, w, b, backend=backend), hotspot_gate_reference,
             inputs, gen, tol, f"seed {seed}")


# ----------------------------------------------------------------------------- relational

def _graph(rng, gen):
    n, r = rng.randint(0, 7), rng.randint(1, 4)
    e = rng.randint(0, 16) if n else 0
    ei = torch.randint(0, max(n, 1), (2, e), generator=gen)
    et = torch.randint(0, r, (e,), generator=gen)
    return n, r, _maybe_strided(rng, ei.t()).t() if e else ei, et


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_fuzz_relational_ops(backend):
    for seed in range(100):
        rng, gen = random.Random(seed), torch.Generator().manual_seed(seed)
        n, r, ei, et = _graph(rng, gen)
        graph = RelationalGraph(ei, et, n, r)
        reduce = rng.choice(["mean", "sum"])
        d, o = rng.randint(1, 6), rng.randint(1, 6)
        x, h, w = _randn(gen, n, d), _randn(gen, n, r, d), _randn(gen, r, d, o)
        what = f"seed {seed}"
        _run(lambda x: relational_aggregate(x, graph, reduce, backend=backend),
             lambda x: ref_rel.relational_aggregate(x, ei, et, n, r, reduce), [x], gen, 1e-10, what)
        _run(lambda h: relational_message_sum(h, graph, reduce, backend=backend),
             lambda h: ref_rel.relational_message_sum(h, ei, et, n, reduce), [h], gen, 1e-10, what)
        _run(lambda x, w: relational_matmul(x, w, graph, reduce, backend=backend),
             lambda x, w: torch.einsum("nri,rio->no", ref_rel.relational_aggregate(x, ei, et, n, r, reduce), w),
             [x, w], gen, 1e-10, what)


def test_fuzz_rgcn_conv():
    for seed in range(60):
        rng, gen = random.Random(seed), torch.Generator().manual_seed(seed)
        n, r, ei, et = _graph(rng, gen)
        i, o = rng.randint(1, 6), rng.randint(1, 6)
        kw = rng.choice([{}, {"num_bases": rng.randint(1, 3)}])
        torch.manual_seed(seed)
        conv = RGCNConv(i, o, r, aggr=rng.choice(["mean", "add"]), root_weight=rng.random() < 0.8, **kw).double()
        x = _randn(gen, n, i)
        aggr = "sum" if conv.aggr == "add" else "mean"

        def ref(x):
            return ref_rel.rgcn_conv(x, ei, et, conv.weight, conv.comp, conv.root, conv.bias, aggr)

        _run(lambda x: conv(x, ei, et), ref, [x], gen, 1e-10, f"seed {seed}")


# ----------------------------------------------------------------------------- segment helpers

def test_fuzz_segment_helpers():
    for seed in range(100):
        rng, gen = random.Random(seed), torch.Generator().manual_seed(seed)
        cu = _cu(rng, rng.randint(0, 6), 6, torch.int64)
        s, n = cu.numel() - 1, int(cu[-1])
        lens = cu.diff()
        seg = torch.repeat_interleave(torch.arange(s), lens)
        cols = rng.choice([(), (3,), (2, 2)])
        x, y = _randn(gen, n, *cols), _randn(gen, s, *cols)
        index = torch.randint(0, max(s, 1), (rng.randint(0, 12),), generator=gen) if s else torch.zeros(0, dtype=torch.long)
        what = f"seed {seed}"
        zero = x.new_zeros((s,) + cols)

        def plain_sum(x):
            return zero.index_add(0, seg, x)

        _run(lambda x: segment.segment_sum(x, cu), plain_sum, [x], gen, 1e-12, what)
        _run(lambda x: segment.segment_mean(x, cu),
             lambda x: plain_sum(x) / lens.clamp(min=1).to(x.dtype).view((-1,) + (1,) * len(cols)), [x], gen,
             1e-12, what)
        _run(lambda y: segment.segment_broadcast(y, cu, n), lambda y: y[seg], [y], gen, 1e-12, what)
        if s:
            _run(lambda y: segment.gather_rows(y, index), lambda y: y[index], [y], gen, 1e-12, what)
