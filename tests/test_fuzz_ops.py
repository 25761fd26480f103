"""Property fuzzing: every op on many small random inputs against its float64 reference,
outputs and gradients.

``hypothesis`` is not a dependency, so the cases come from a seeded generator: each test draws
its shapes, segment layouts (empty segments included), index dtypes, strides and options from
``random.Random(seed_for(case))``; a failure names the case, which replays exactly under the same
HOTSPOT_ERC_TEST_SEED. The compiled and ATen paths get many cases; the Triton kernels run through
the interpreter on CPU and get a few tiny ones.

Every value is held to the rounding bound of its dtype (tests/tolerance.py): k is the summed
length of the reductions the value goes through (the stages' independent roundings add as one
random walk), and the scale is Σ|terms|: the reference on the magnitudes of its inputs for the
multilinear ops, a first-order expansion for the gate and attention (:func:`_gate_magnitudes`,
:func:`_attention_magnitudes`).
"""
import random

import pytest
import torch

from hotspot_erc.nn.rgcn import RGCNConv
from hotspot_erc.ops import graph_attention, segment
from hotspot_erc.ops.grouped_linear import grouped_expert_linear
from hotspot_erc.ops.hotspot_gate import hotspot_gate
from hotspot_erc.ops.relational import (RelationalGraph, relational_aggregate, relational_matmul,
                                        relational_message_sum)
from hotspot_erc.ops.varlen_attention import varlen_cross_attention
from hotspot_erc.reference import relational as ref_rel
from hotspot_erc.reference.graph_attention import graph_attention_reference
from hotspot_erc.reference.grouped_linear import grouped_expert_linear_per_segment
from hotspot_erc.reference.hotspot_gate import hotspot_gate_reference
from hotspot_erc.reference.varlen_attention import default_scale, varlen_cross_attention_reference

from conftest import seed_for
from tolerance import assert_close, magnitude_grads

F64 = torch.float64
# (backend, dtype of its computation, cases)
RUNS = [("cpu", F64, 120), ("reference", F64, 30), ("triton", torch.float32, 10)]


def _draws(case):
    """The case's two generators: Python's for shapes and options, torch's for values."""
    return random.Random(seed_for(case)), torch.Generator().manual_seed(seed_for(case))


def _cu(rng, segments, longest, dtype=None):
    lens = [rng.randint(0, longest) for _ in range(segments)]
    if rng.random() < 0.3 and lens:
        lens[rng.randrange(len(lens))] = 0
    cu = torch.tensor([0] + lens).cumsum(0)
    return cu.to(dtype or rng.choice([torch.int32, torch.int64]))


def _longest(cu):
    return int(cu.diff().max()) if cu.numel() > 1 else 0


def _maybe_strided(rng, t):
    """``t``, or a view of the same values with a stride of 2 along the first dimension."""
    if rng.random() < 0.5 or t.dim() == 0:
        return t
    wide = torch.zeros((2 * t.shape[0],) + tuple(t.shape[1:]), dtype=t.dtype)
    wide[::2] = t
    return wide[::2]


def _randn(gen, *shape, dtype=F64):
    return torch.randn(*shape, generator=gen, dtype=F64).to(dtype)


def _compare(got, want, dtype, k, scale, what):
    assert torch.isfinite(got).all(), what
    assert_close(got, want, dtype, k, scale=scale, what=what)


def _run(fn_op, fn_ref, inputs, gen, dtype, k_out, k_grad, what, scales=None):
    """Forward and backward of op and reference from the same leaves, compared: the output with
    k = ``k_out``, every gradient with k = ``k_grad``, each against its Σ|terms| from
    ``scales(float64 inputs, dy)`` (default: ``fn_ref`` on magnitudes, for multilinear ops)."""
    ours = [t.detach().clone().requires_grad_() for t in inputs]
    refs = [t.detach().double().clone().requires_grad_() for t in inputs]
    out, want = fn_op(*ours), fn_ref(*refs)
    dy = _randn(gen, *out.shape)
    refs_in = [t.detach() for t in refs]
    out_scale, grad_scales = scales(refs_in, dy) if scales else magnitude_grads(fn_ref, refs_in, dy)
    _compare(out, want, dtype, k_out, out_scale, what + " output")
    for y, g in ((out, dy.to(out.dtype)), (want, dy)):
        if y.requires_grad:
            y.backward(g)
        else:
            assert y.numel() == 0, f"{what}: a non-empty output outside the autograd graph"
    for i, (a, b, m) in enumerate(zip(ours, refs, grad_scales)):
        # an input the output does not use (a bias left out) may get None or zeros
        ga = a.grad if a.grad is not None else torch.zeros_like(a)
        gb = b.grad if b.grad is not None else torch.zeros_like(b)
        _compare(ga, gb, dtype, k_grad, m, f"{what} grad {i}")


# ----------------------------------------------------------------------------- attention

def _attention_magnitudes(cq, ck, scale):
    """Σ|terms| of attention's output and gradients, to first order, per segment and head:
    S = s·QKᵀ, P = softmax(S), O = PV; dP = dO Vᵀ, D = rowsum(dO ∘ O), dS = P ∘ (dP − D),
    dQ = s·dS K, dK = s·dSᵀ Q, dV = Pᵀ dO. A relative error ε of a score moves P by
    P ∘ (ε|S| − Σ P ε|S|), so P's magnitude is P + E with E = P ∘ |S|ₘ + P ∘ rowsum(P ∘ |S|ₘ),
    |S|ₘ = s·|Q||K|ᵀ; every product then takes its factors' magnitudes."""
    cq, ck = cq.long().tolist(), ck.long().tolist()

    def scales(inputs, dy):
        q, k, v = inputs
        s = default_scale(q.shape[-1], scale)
        om, dq, dk, dv = (torch.zeros_like(t) for t in (q, q, k, v))
        for a, b, c, d in zip(cq[:-1], cq[1:], ck[:-1], ck[1:]):
            if a == b or c == d:
                continue
            qs, ks, vs, dos = q[a:b], k[c:d], v[c:d], dy[a:b]
            p = torch.softmax(s * torch.einsum("qhd,khd->hqk", qs, ks), -1)
            e = p * s * torch.einsum("qhd,khd->hqk", qs.abs(), ks.abs())
            pm = p + e + p * e.sum(-1, keepdim=True)
            om[a:b] = torch.einsum("hqk,khd->qhd", pm, vs.abs())
            dp = torch.einsum("qhd,khd->hqk", dos, vs)
            dpm = torch.einsum("qhd,khd->hqk", dos.abs(), vs.abs())
            dd = (p * dp).sum(-1, keepdim=True)
            ddm = torch.einsum("qhd,qhd->hq", dos.abs(), om[a:b])[..., None]
            dsm = p * (dpm + ddm) + (pm - p) * (dp - dd).abs()
            dq[a:b] = s * torch.einsum("hqk,khd->qhd", dsm, ks.abs())
            dk[c:d] = s * torch.einsum("hqk,qhd->khd", dsm, qs.abs())
            dv[c:d] = torch.einsum("hqk,qhd->khd", pm, dos.abs())
        return om, [dq, dk, dv]

    return scales


@pytest.mark.parametrize("backend, dtype, count", RUNS, ids=[r[0] for r in RUNS])
def test_fuzz_varlen_attention(backend, dtype, count):
    for case in range(count):
        rng, gen = _draws(case)
        s = rng.randint(0, 4)
        cq, ck = _cu(rng, s, 9), _cu(rng, s, 9)
        heads, dh = rng.randint(1, 3), rng.choice([1, 3, 8, 17])
        scale = rng.choice([None, 0.3, 2.0])
        q = _randn(gen, int(cq[-1]), heads, dh, dtype=dtype)
        k = _randn(gen, int(ck[-1]), heads, dh, dtype=dtype)
        v = _randn(gen, int(ck[-1]), heads, dh, dtype=dtype)
        cq_in, ck_in = _maybe_strided(rng, cq), _maybe_strided(rng, ck)
        # the output: scores over dh, then the sum over a segment's keys; dQ sums over keys, dK and
        # dV over queries, each term built from dh-long dots
        lq, lk = _longest(cq), _longest(ck)
        _run(lambda q, k, v: varlen_cross_attention(q, k, v, cq_in, ck_in, scale, backend=backend),
             lambda q, k, v: varlen_cross_attention_reference(q, k, v, cq.long(), ck.long(), scale),
             [q, k, v], gen, dtype, lk * dh, max(lq, lk) * dh, f"case {case}",
             scales=_attention_magnitudes(cq, ck, scale))


# ----------------------------------------------------------------------------- grouped linear

@pytest.mark.parametrize("backend, dtype, count", RUNS, ids=[r[0] for r in RUNS])
def test_fuzz_grouped_expert_linear(backend, dtype, count):
    for case in range(count):
        rng, gen = _draws(case)
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

        # out: k slots of a d_in-long dot plus the bias. Gradients, the longest of: x's (k slots of
        # a d_out-long dot); a gate's (x W + b, then the sum over its segment's rows and d_out); an
        # expert's weight or bias (a sum over every row routed to it, k times at most)
        n = int(cu[-1])
        k_grad = max(k * d_out, d_in + 1 + _longest(cu) * d_out, n * k)
        _run(op, ref, [x, gates, weight, bias], gen, dtype, k * (d_in + 1), k_grad, f"case {case}")


# ----------------------------------------------------------------------------- hotspot gate

def _gate_magnitudes(inputs, dy):
    """Σ|terms| of the gate's output and gradients, to first order: z = [c; h] W + b, α = σ(z),
    out = c + α(h − c). A relative error ε of z moves α by α' ε |z|ₘ (α' = α(1 − α), |z|ₘ =
    |[c; h]| |W| + |b|) and α' by at most as much, so α's magnitude is α + α'|z|ₘ; then
    dz = Σ_group dy (h − c) α', dc = dy (1 − α) + dz W_cᵀ, dh = dy α + dz W_hᵀ, dW = [c; h]ᵀ dz,
    db = Σ_rows dz, every product on its factors' magnitudes."""
    c, h, w, b = inputs
    d = c.shape[1]
    z = torch.cat([c, h], -1) @ w + b
    zm = torch.cat([c, h], -1).abs() @ w.abs() + b.abs()
    alpha = torch.sigmoid(z)
    da = alpha * (1 - alpha)
    am = alpha + da * zm                      # [N, g], broadcast over d when g = 1
    dam = da * (1 + zm)
    diff = h.abs() + c.abs()
    out = c.abs() + am * diff
    dzm = (dy.abs() * diff * dam)
    dzm = dzm.sum(1, keepdim=True) if w.shape[1] == 1 else dzm
    dc = dy.abs() * (1 - alpha + da * zm) + dzm @ w[:d].abs().T
    dh = dy.abs() * am + dzm @ w[d:].abs().T
    dw = torch.cat([c, h], -1).abs().T @ dzm
    return out, [dc, dh, dw, dzm.sum(0)]


@pytest.mark.parametrize("backend, dtype, count", RUNS, ids=[r[0] for r in RUNS])
def test_fuzz_hotspot_gate(backend, dtype, count):
    for case in range(count):
        rng, gen = _draws(case)
        n, d = rng.randint(0, 9), rng.randint(1, 9)
        g = rng.choice([1, d])
        inputs = [_randn(gen, n, d, dtype=dtype), _randn(gen, n, d, dtype=dtype),
                  _randn(gen, 2 * d, g, dtype=dtype), _randn(gen, g, dtype=dtype)]
        if rng.random() < 0.5:
            inputs[0] = inputs[0].t().contiguous().t()  # column-major storage
        # out: z's 2d-long dot plus the bias, the interpolation; gradients, the longest of: dz (z,
        # then the sum over a group of d features), then dc, dh (over g) or dW, db (over the rows)
        k_out = 2 * d + 2
        _run(lambda c, h, w, b: hotspot_gate(c, h, w, b, backend=backend), hotspot_gate_reference,
             inputs, gen, dtype, k_out, k_out + d + max(g, n), f"case {case}", scales=_gate_magnitudes)


# ----------------------------------------------------------------------------- relational

def _graph(rng, gen):
    n, r = rng.randint(0, 7), rng.randint(1, 4)
    e = rng.randint(0, 16) if n else 0
    ei = torch.randint(0, max(n, 1), (2, e), generator=gen)
    et = torch.randint(0, r, (e,), generator=gen)
    return n, r, _maybe_strided(rng, ei.t()).t() if e else ei, et


def _most(keys, size):
    """The largest count of one value among ``keys`` (at least 1): the longest sum over them."""
    return max(int(torch.bincount(keys.long(), minlength=max(size, 1)).max()), 1) if keys.numel() else 1


def _degrees(n, r, ei, et):
    """(edges into one (node, type) bucket, into one node, out of one (node, type), out of one
    node): the most of each, the lengths of the relational sums."""
    src, dst, et = ei[0].long(), ei[1].long(), et.long()
    return (_most(dst * r + et, n * r), _most(dst, n), _most(src * r + et, n * r), _most(src, n))


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_fuzz_relational_ops(backend):
    for case in range(100):
        rng, gen = _draws(case)
        n, r, ei, et = _graph(rng, gen)
        graph = RelationalGraph(ei, et, n, r)
        reduce = rng.choice(["mean", "sum"])
        d, o = rng.randint(1, 6), rng.randint(1, 6)
        x, h, w = _randn(gen, n, d), _randn(gen, n, r, d), _randn(gen, r, d, o)
        what = f"case {case}"
        bucket, into, out_typed, out_of = _degrees(n, r, ei, et)
        _run(lambda x: relational_aggregate(x, graph, reduce, backend=backend),
             lambda x: ref_rel.relational_aggregate(x, ei, et, n, r, reduce), [x], gen, F64, bucket, out_of, what)
        _run(lambda h: relational_message_sum(h, graph, reduce, backend=backend),
             lambda h: ref_rel.relational_message_sum(h, ei, et, n, reduce), [h], gen, F64, into, out_typed, what)
        # out: a bucket's sum, then the GEMM over r·d; x's gradient: over o, then the out-edges;
        # w's: a bucket's sum, then one term per node
        _run(lambda x, w: relational_matmul(x, w, graph, reduce, backend=backend),
             lambda x, w: torch.einsum("nri,rio->no", ref_rel.relational_aggregate(x, ei, et, n, r, reduce), w),
             [x, w], gen, F64, bucket + r * d, max(o + out_of, bucket + n), what)


def test_fuzz_rgcn_conv():
    for case in range(60):
        rng, gen = _draws(case)
        n, r, ei, et = _graph(rng, gen)
        i, o = rng.randint(1, 6), rng.randint(1, 6)
        kw = rng.choice([{}, {"num_bases": rng.randint(1, 3)}])
        torch.manual_seed(seed_for(case))
        conv = RGCNConv(i, o, r, aggr=rng.choice(["mean", "add"]), root_weight=rng.random() < 0.8, **kw).double()
        x = _randn(gen, n, i)
        aggr = "sum" if conv.aggr == "add" else "mean"
        params = [conv.weight, conv.comp, conv.root, conv.bias]

        def ref(x, *ps):
            return ref_rel.rgcn_conv(x, ei, et, *(ps or params), aggr)

        mags = [None if p is None else p.detach().abs() for p in params]
        bucket, _, _, out_of = _degrees(n, r, ei, et)
        b = kw.get("num_bases", 0)
        # out: W_r composed from b bases, a bucket's mean, the GEMM over r·i, the root's over i, the
        # bias; x's gradient: W_r composed, over o for every relation and the root, the out-edges
        _run(lambda x: conv(x, ei, et), ref, [x], gen, F64, b + bucket + (r + 1) * i + 1, b + (r + 1) * o + out_of,
             f"case {case}", scales=lambda inputs, dy: magnitude_grads(lambda x: ref(x, *mags), inputs, dy))


# ----------------------------------------------------------------------------- segment helpers

def test_fuzz_segment_helpers():
    for case in range(100):
        rng, gen = _draws(case)
        cu = _cu(rng, rng.randint(0, 6), 6, torch.int64)
        s, n = cu.numel() - 1, int(cu[-1])
        lens = cu.diff()
        seg = torch.repeat_interleave(torch.arange(s), lens)
        cols = rng.choice([(), (3,), (2, 2)])
        x, y = _randn(gen, n, *cols), _randn(gen, s, *cols)
        index = torch.randint(0, max(s, 1), (rng.randint(0, 12),), generator=gen) if s else torch.zeros(0, dtype=torch.long)
        what = f"case {case}"
        zero = x.new_zeros((s,) + cols)
        longest, repeats = max(_longest(cu), 1), _most(index, s)

        def plain_sum(x):
            return zero.index_add(0, seg, x)

        # a sum over a segment's rows one way (the mean: then a division), copies the other way
        _run(lambda x: segment.segment_sum(x, cu), plain_sum, [x], gen, F64, longest, 1, what)
        _run(lambda x: segment.segment_mean(x, cu),
             lambda x: plain_sum(x) / lens.clamp(min=1).to(x.dtype).view((-1,) + (1,) * len(cols)), [x], gen,
             F64, longest + 1, 1, what)
        _run(lambda y: segment.segment_broadcast(y, cu, n), lambda y: y[seg], [y], gen, F64, 1, longest, what)
        if s:
            _run(lambda y: segment.gather_rows(y, index), lambda y: y[index], [y], gen, F64, 1, repeats, what)


# ----------------------------------------------------------------------------- graph attention

@pytest.mark.parametrize("backend, dtype, count", RUNS, ids=[r[0] for r in RUNS])
def test_fuzz_graph_attention(backend, dtype, count):
    from test_graph_attention import magnitudes

    for case in range(count):
        rng, gen = _draws(case)
        n_src, n_dst = rng.randint(0, 7), rng.randint(0, 7)
        e = rng.randint(0, 20) if n_src and n_dst else 0
        heads, dh = rng.randint(1, 3), rng.choice([1, 3, 8, 17])
        scale = rng.choice([None, 0.3, 2.0])
        ei = torch.stack([torch.randint(0, max(n_src, 1), (e,), generator=gen),
                          torch.randint(0, max(n_dst, 1), (e,), generator=gen)])
        ei_in = _maybe_strided(rng, ei.t()).t().to(rng.choice([torch.int32, torch.int64])) if e else ei
        mask = ((torch.rand(e, heads, generator=gen) > 0.3).double() / 0.7) if rng.random() < 0.5 else None
        inputs = [_randn(gen, n_dst, heads, dh, dtype=dtype), _randn(gen, n_src, heads, dh, dtype=dtype),
                  _randn(gen, n_src, heads, dh, dtype=dtype)]
        with_edge = rng.random() < 0.5
        if with_edge:
            inputs.append(_randn(gen, e, heads, dh, dtype=dtype))

        def op(q, k, v, *edge):
            m = None if mask is None else mask.to(torch.float64 if q.dtype == F64 else torch.float32)
            return graph_attention(q, k, v, ei_in, edge[0] if edge else None, m, scale, backend=backend)

        def ref(q, k, v, *edge):
            return graph_attention_reference(q, k, v, ei, edge[0] if edge else None, mask, scale)[0]

        def scales(refs, dy):
            return magnitudes(*refs[:3], refs[3] if with_edge else None, mask, ei, dy, scale)

        # the output: a score's dot over dh, then a destination's edges; the gradients add a
        # source's out-edges (dk, dv) and the dot of do with the value row (ds)
        indeg = _most(ei[1], n_dst)
        outdeg = _most(ei[0], n_src)
        _run(op, ref, inputs, gen, dtype, dh + indeg, 2 * dh + indeg + outdeg, f"case {case}", scales=scales)
