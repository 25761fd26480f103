"""grouped_expert_linear (DESIGN §3.2): every backend against the float64 reference."""
import textwrap

import pytest
import torch

from conftest import assert_compiles_offline
from hotspot_erc.ops import _backend
from hotspot_erc.ops.grouped_linear import grouped_expert_linear
from hotspot_erc.reference.grouped_linear import (grouped_expert_linear_per_segment,
                                                  grouped_expert_linear_reference)
from tolerance import C, accumulation, assert_close, magnitude, rel_bound, rel_err

# Segment lengths that hurt: 1-token segments, empty ones (first, middle, last), odd sizes and
# one segment spanning several row tiles.
CASES = {
    "mixed": [5, 0, 1, 17, 33, 2],
    "empty_ends": [0, 7, 1, 0],
    "one_long": [71],
    "all_empty": [0, 0, 0],
    "no_segments": [],
}


def make_inputs(lens, num_experts, k, d_in, d_out, dtype=torch.float64, device="cpu", bias=True,
                distinct=True):
    cu = torch.tensor([0] + torch.tensor(lens, dtype=torch.int64).cumsum(0).tolist(), device=device)
    n, s = int(cu[-1]), len(lens)
    x = torch.randn(n, d_in, dtype=dtype, device=device)
    weight = torch.randn(num_experts, d_in, d_out, dtype=dtype, device=device) / d_in ** 0.5
    b = torch.randn(num_experts, d_out, dtype=dtype, device=device) if bias else None
    if distinct:
        experts = torch.stack([torch.randperm(num_experts)[:k] for _ in range(s)]) if s else \
            torch.zeros(0, k, dtype=torch.int64)
    else:
        experts = torch.randint(0, num_experts, (s, k))
    gates = torch.rand(s, k, dtype=dtype, device=device) + 0.1
    return x, cu, experts.to(device), gates, weight, b


def _grads(fn, x, gates, weight, bias, dy):
    leaves = [t.detach().requires_grad_() for t in (x, gates, weight)]
    leaves.append(bias.detach().requires_grad_() if bias is not None else None)
    out = fn(*leaves)
    want = [t for t in leaves if t is not None]
    return out, torch.autograd.grad(out, want, dy.to(out.dtype))


GRADS = ("x", "gates", "weight", "bias")


def reduction_lengths(cu, experts, d_in, d_out):
    """k (the longest reduction) of the output and of each gradient:
    out: K slots of a d_in-long dot plus the bias; dx: K slots of a d_out-long dot;
    dgates: Σ over the segment's rows of x · (dy Wᵀ) + dy · b, or dy · (x W + b) (the order is the
    backend's), so its longest stage sums L·(d_in + d_out) terms for the longest segment L;
    dweight, dbias: the rows routed to one expert (a repeated slot routes its rows twice)."""
    lens = (cu[1:] - cu[:-1]).cpu().long()
    k = experts.shape[1]
    longest = int(lens.max()) if lens.numel() else 0
    routed = torch.zeros(1 + int(experts.max()) if experts.numel() else 1, dtype=torch.int64)
    routed.index_add_(0, experts.cpu().long().flatten(), lens.repeat_interleave(k))
    rows = int(routed.max())
    return {"out": k * (d_in + 1), "x": k * d_out, "gates": longest * (d_in + d_out),
            "weight": rows, "bias": rows}


# The gate gradient chains two reductions (dy Wᵀ or x W + b inside, the segment's rows outside):
# their rounding errors add, √k_inner + √k_outer ≤ 2·√k_longest, so two roundings of the longest.
C_BY_GRAD = {"x": C, "gates": 2 * C, "weight": C, "bias": C}


def magnitudes(cu, experts, x, gates, weight, bias, dy):
    """Σ|terms| of the output and of each gradient: the reference (multilinear in x, W, b and the
    gates) on the magnitudes of its inputs and of dy."""
    return magnitude(lambda *t: _grads(lambda *a: grouped_expert_linear_reference(a[0], cu, experts, *a[1:]),
                                       *t), x, gates, weight, bias, dy)


def assert_matches(dtype, ks, mags, out, grads, ref, ref_grads):
    """out and dx (no sum over rows) against ‖ref‖; dgates, dweight and dbias, summed over rows of
    both signs, against Σ|terms|."""
    assert_close(out, ref, dtype, ks["out"], what="out")
    for name, g, r, m in zip(GRADS, grads, ref_grads, mags[1]):
        assert not g.isnan().any(), name
        assert_close(g, r, dtype, ks[name], scale=None if name == "x" else m, c=C_BY_GRAD[name], what=name)


def assert_within_twice_eager(dtype, ks, mags, got, eager, truth, unit=None):
    """FlashAttention's rule, value by value (out, then the gradients): error at most twice the
    eager reference's in the same dtype, plus the rounding bound of the dtype (``unit``: the
    rounding it gets, "tf32" for float32 on tensor cores) as a floor where eager happens to round
    exactly. Errors relative to ‖truth‖ for out and dx, to Σ|terms| for the gradients summed over
    rows."""
    for name, g, e, t, m in zip(("out", *GRADS), got, eager, truth, (None, *mags[1])):
        assert g.dtype == dtype, name
        scale = None if name in ("out", "x") else m
        err, eager_err = rel_err(g, t, scale), rel_err(e, t, scale)
        assert err <= 2 * eager_err + rel_bound(unit or dtype, ks[name], c=C_BY_GRAD.get(name, C),
                                                 accumulate=accumulation(dtype)), \
            (name, err, eager_err)


@pytest.fixture
def poison(monkeypatch):
    """Every buffer the Triton kernels must fill starts as NaN (the plan's integer buffers: a huge
    value, which would send any read of an unwritten entry far out of bounds)."""
    import hotspot_erc.kernels.grouped_linear as kern

    monkeypatch.setattr(kern, "_empty", lambda shape, dtype, device: torch.full(
        shape, float("nan") if dtype.is_floating_point else 2 ** 40, dtype=dtype, device=device))


def test_reference_matches_definition():
    for lens, e, k, distinct in ((CASES["mixed"], 5, 2, True), ([3, 0, 4], 3, 4, False)):
        x, cu, experts, gates, w, b = make_inputs(lens, e, k, 6, 5, distinct=distinct)
        ref = grouped_expert_linear_reference(x, cu, experts, gates, w, b)
        lit = grouped_expert_linear_per_segment(x, cu, experts, gates, w, b)
        assert_close(ref, lit, torch.float64, reduction_lengths(cu, experts, 6, 5)["out"])


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("backend", ["triton", "cpu"])
@pytest.mark.parametrize("num_experts,k,bias", [(4, 2, True), (1, 1, False), (5, 5, True)])
def test_matches_reference(poison, case, backend, num_experts, k, bias):
    dtype = torch.float32 if backend == "triton" else torch.float64
    x, cu, experts, gates, w, b = make_inputs(CASES[case], num_experts, k, 20, 24, bias=bias)
    ref, ref_grads = _grads(lambda *a: grouped_expert_linear_reference(a[0], cu, experts, a[1], a[2], a[3]),
                            x, gates, w, b, dy := torch.randn(x.shape[0], 24, dtype=torch.float64))
    out, grads = _grads(lambda *a: grouped_expert_linear(a[0], cu, experts, a[1], a[2], a[3], backend=backend),
                        x.to(dtype), gates.to(dtype), w.to(dtype), b.to(dtype) if b is not None else None, dy)
    assert out.dtype == dtype and out.shape == ref.shape
    assert not out.isnan().any()
    assert_matches(dtype, reduction_lengths(cu, experts, 20, 24), magnitudes(cu, experts, x, gates, w, b, dy),
                   out, grads, ref, ref_grads)


@pytest.mark.parametrize("backend", ["triton", "cpu"])
def test_many_experts_repeats_and_int32(poison, backend):
    """E = 64, experts repeated inside a segment, int32 indices, k = 3."""
    dtype = torch.float32 if backend == "triton" else torch.float64
    x, cu, experts, gates, w, b = make_inputs([9, 1, 0, 20], 64, 3, 16, 17, distinct=False)
    experts[0] = torch.tensor([63, 63, 0])
    ref, ref_grads = _grads(lambda *a: grouped_expert_linear_reference(a[0], cu, experts, a[1], a[2], a[3]),
                            x, gates, w, b, dy := torch.randn(x.shape[0], 17, dtype=torch.float64))
    out, grads = _grads(lambda *a: grouped_expert_linear(a[0], cu.int(), experts.int(), a[1], a[2], a[3],
                                                          backend=backend),
                        x.to(dtype), gates.to(dtype), w.to(dtype), b.to(dtype), dy)
    assert_matches(dtype, reduction_lengths(cu, experts, 16, 17), magnitudes(cu, experts, x, gates, w, b, dy),
                   out, grads, ref, ref_grads)
    # experts nobody chose get exactly zero weight gradient
    unused = torch.ones(64, dtype=torch.bool)
    unused[experts.flatten()] = False
    assert grads[2][unused].abs().max() == 0


@pytest.mark.parametrize("d_in,d_out", [(0, 5), (3, 0)])
def test_triton_zero_width_features(poison, d_in, d_out):
    """d_in = 0 still has a bias term in the gate and bias gradients (kernels whose grid has a
    d_in axis must still run once); d_out = 0 gives empty outputs and zero gradients."""
    x, cu, experts, gates, w, b = make_inputs([3, 0, 2], 3, 2, d_in, d_out)
    dy = torch.randn(x.shape[0], d_out, dtype=torch.float64)
    ref, ref_grads = _grads(lambda *a: grouped_expert_linear_reference(a[0], cu, experts, a[1], a[2], a[3]),
                            x, gates, w, b, dy)
    out, grads = _grads(lambda *a: grouped_expert_linear(a[0], cu, experts, a[1], a[2], a[3], backend="triton"),
                        x.float(), gates.float(), w.float(), b.float(), dy)
    assert out.shape == ref.shape
    ks, mags = reduction_lengths(cu, experts, d_in, d_out), magnitudes(cu, experts, x, gates, w, b, dy)
    for name, g, r, m in zip(GRADS, grads, ref_grads, mags[1]):
        assert g.shape == r.shape and not g.isnan().any(), name
        # every gradient against Σ|terms|: with d_in = 0 or d_out = 0 most references are exact zeros
        assert_close(g, r, torch.float32, ks[name], scale=m, c=C_BY_GRAD[name], what=name)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_triton_low_precision(poison, dtype):
    """FlashAttention's rule: at most 2x the error PyTorch's own eager path makes in that dtype."""
    x, cu, experts, gates, w, b = make_inputs(CASES["mixed"], 4, 2, 32, 40)
    dy = torch.randn(x.shape[0], 40, dtype=torch.float64)
    ref, ref_grads = _grads(lambda *a: grouped_expert_linear_reference(a[0], cu, experts, a[1], a[2], a[3]),
                            x, gates, w, b, dy)
    low = [t.to(dtype) for t in (x, gates, w, b)]
    eager, eager_grads = _grads(lambda *a: grouped_expert_linear_reference(a[0], cu, experts, a[1], a[2], a[3]),
                                *low, dy)
    out, grads = _grads(lambda *a: grouped_expert_linear(a[0], cu, experts, a[1], a[2], a[3], backend="triton"),
                        *low, dy)
    assert out.dtype == dtype
    assert_within_twice_eager(dtype, reduction_lengths(cu, experts, 32, 40),
                              magnitudes(cu, experts, x, gates, w, b, dy), (out, *grads), (eager, *eager_grads),
                              (ref, *ref_grads))


# Bitwise reproducibility across processes: GPU-marked, in tests/test_determinism.py (under the
# interpreter, one program at a time, a repeat test cannot fail).


def test_plan_built_once_shared_by_calls():
    """One plan launch for P expert choices over the same segments; each call with ``plan[p]``
    is then one forward launch and gives bitwise what a call that builds its own plan gives."""
    from hotspot_erc.ops.grouped_linear import GroupedLinearPlan, grouped_linear_plan
    from hotspot_erc.testing import count_fwd_bwd, count_launches

    x, cu, e1, g1, w, b = make_inputs(CASES["mixed"], 4, 2, 16, 8, dtype=torch.float32)
    e2 = torch.stack([torch.randperm(4)[:2] for _ in range(e1.shape[0])])
    g2 = torch.rand(e1.shape, dtype=torch.float32)
    plans = grouped_linear_plan(cu, torch.stack([e1, e2]), 4, x.shape[0])
    assert isinstance(plans, GroupedLinearPlan) and len(plans) == 2 and "choices=2" in repr(plans)
    assert count_launches(grouped_linear_plan, cu, torch.stack([e1, e2]), 4, x.shape[0]).total == 1
    dy = torch.randn(x.shape[0], 8, dtype=torch.float64)
    for p, (e, g) in enumerate(((e1, g1), (e2, g2))):
        want = _grads(lambda *a: grouped_expert_linear(a[0], cu, e, a[1], a[2], a[3], backend="triton"),
                      x, g, w, b, dy)
        got = _grads(lambda *a: grouped_expert_linear(a[0], cu, e, a[1], a[2], a[3], backend="triton",
                                                      plan=plans[p]), x, g, w, b, dy)
        for u, v in zip((want[0], *want[1]), (got[0], *got[1])):
            assert torch.equal(u, v)
        leaves = [t.detach().requires_grad_() for t in (x, g, w, b)]
        fwd, bwd = count_fwd_bwd(lambda *a: grouped_expert_linear(a[0], cu, e, a[1], a[2], a[3],
                                                                  backend="triton", plan=plans[p]),
                                 *leaves, grad=torch.randn(x.shape[0], 8))
        assert (fwd.total, bwd.total) == (1, 3), (fwd, bwd)
    # the CPU backend ignores a plan; a wrong one is refused with the reason
    assert_close(grouped_expert_linear(x, cu, e1, g1, w, b, backend="cpu", plan=plans[1]),
                 grouped_expert_linear(x, cu, e1, g1, w, b, backend="cpu"), torch.float32,
                 reduction_lengths(cu, e1, 16, 8)["out"])
    with pytest.raises(ValueError, match="other cu_seqlens/experts values"):
        grouped_expert_linear(x, cu, e1, g1, w, b, backend="triton", plan=plans[1])
    with pytest.raises(ValueError, match="holds 2 expert choices"):
        grouped_expert_linear(x, cu, e1, g1, w, b, backend="triton", plan=plans)
    with pytest.raises(ValueError, match="plan was built for 58 tokens, 4 experts"):
        w5 = torch.cat([w, w[:1]])
        grouped_expert_linear(x, cu, e1, g1, w5, torch.cat([b, b[:1]]), backend="triton", plan=plans[0])
    with pytest.raises(TypeError, match="plan must be a GroupedLinearPlan"):
        grouped_expert_linear(x, cu, e1, g1, w, b, backend="triton", plan=(plans.tiles, plans.routing))
    with pytest.raises(ValueError, match="segments but experts has"):
        grouped_linear_plan(cu, e1[:-1], 4, x.shape[0])


def test_plan_layout():
    """The plan's contents, read back: tiles never cross segments and cover every row once;
    the routing is a stable sort of the assignments by expert with their rows' starts."""
    from hotspot_erc.kernels.grouped_linear import plan_sizes
    from hotspot_erc.ops.grouped_linear import grouped_linear_plan

    lens = [5, 0, 1, 17, 33, 2, 0]
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist())
    experts = torch.tensor([[2, 0], [1, 1], [0, 2], [2, 2], [1, 0], [2, 1], [0, 0]])
    plan = grouped_linear_plan(cu, experts, 3, int(cu[-1]))
    t, _, _ = plan_sizes(int(cu[-1]), len(lens), 2, 3, plan.block_m)
    seg, row0, start = plan.tiles[:t], plan.tiles[t:2 * t], plan.tiles[2 * t:]
    rows = []
    for s in range(len(lens)):
        mine = (seg == s).nonzero().flatten()
        assert mine.tolist() == list(range(int(start[s]), int(start[s + 1])))
        for r in row0[mine].tolist():
            rows += range(r, min(r + plan.block_m, int(cu[s + 1])))
    assert rows == list(range(int(cu[-1]))) and (seg[int(start[-1]):] == -1).all()
    sk = experts.numel()
    order, begin, first = plan.routing[:sk], plan.routing[sk:2 * sk + 1], plan.routing[2 * sk + 1:]
    assert order.tolist() == torch.sort(experts.flatten(), stable=True).indices.tolist()
    assert first.tolist() == [0] + torch.bincount(experts.flatten(), minlength=3).cumsum(0).tolist()
    seg_len = torch.tensor(lens)[order // 2]
    assert begin.tolist() == [0] + seg_len.cumsum(0).tolist()


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_gradcheck_float64(backend):
    x, cu, experts, gates, w, b = make_inputs([3, 0, 1, 4], 3, 2, 4, 3)
    leaves = [t.requires_grad_() for t in (x, gates, w, b)]
    assert torch.autograd.gradcheck(
        lambda x_, g_, w_, b_: grouped_expert_linear(x_, cu, experts, g_, w_, b_, backend=backend), leaves)


@pytest.mark.parametrize("impl", ["aten", "triton"])
def test_opcheck(impl):
    from hotspot_erc.ops.grouped_linear import grouped_linear_plan

    dtype = torch.float64 if impl == "aten" else torch.float32
    for bias in (True, False):
        x, cu, experts, gates, w, b = make_inputs([3, 0, 5], 3, 2, 16, 16, dtype=dtype, bias=bias)
        if not bias:
            # Transposed storage (a weight kept [E, d_out, d_in]): the fake's gradient strides
            # must still match the real, contiguous ones.
            x, w = x.t().contiguous().t(), w.transpose(1, 2).contiguous().transpose(1, 2)
        plan = (None, None, 0)
        if impl == "triton":
            p = grouped_linear_plan(cu, experts, 3, x.shape[0])
            plan = (p.tiles, p.routing, p.block_m)
            torch.library.opcheck(torch.ops.hotspot_erc.grouped_linear_plan.default,
                                  (cu, experts, 3, x.shape[0], p.block_m))
        args = (x.requires_grad_(), cu, experts, gates.requires_grad_(), w.requires_grad_(),
                b.requires_grad_() if b is not None else None, *plan, impl)
        torch.library.opcheck(torch.ops.hotspot_erc.grouped_expert_linear.default, args)
        dy = torch.randn(x.shape[0], w.shape[2], dtype=dtype)
        torch.library.opcheck(torch.ops.hotspot_erc.grouped_expert_linear_backward.default,
                              (dy, *(a.detach() if isinstance(a, torch.Tensor) else a for a in args)))


def test_torch_compile_fullgraph():
    x, cu, experts, gates, w, b = make_inputs(CASES["mixed"], 4, 2, 8, 6, dtype=torch.float32)
    leaves = [t.requires_grad_() for t in (x, gates, w, b)]

    def f(x_, g_, w_, b_):
        return torch.tanh(grouped_expert_linear(x_, cu, experts, g_, w_, b_)).sum()

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    got = torch.autograd.grad(compiled(*leaves), leaves)
    want = torch.autograd.grad(f(*leaves), leaves)
    # two float32 computations of the gradients; the output's gradient is dy = 1 - tanh²(out), so
    # Σ|terms| is the backward on magnitudes with that dy
    x64, g64, w64, b64 = (t.detach().double() for t in (x, gates, w, b))
    dy = 1 - torch.tanh(grouped_expert_linear_reference(x64, cu, experts, g64, w64, b64)).square()
    ks = reduction_lengths(cu, experts, 8, 6)
    mags = magnitudes(cu, experts, x64, g64, w64, b64, dy)
    for name, g, r, m in zip(GRADS, got, want, mags[1]):
        assert_close(g, r, torch.float32, ks[name], scale=None if name == "x" else m, c=C_BY_GRAD[name],
                     what=name)


def test_auto_backend_and_registration():
    assert "grouped_expert_linear" in _backend.OPS
    assert _backend.choose("grouped_expert_linear", None, torch.device("cpu"),
                           _backend.OPS["grouped_expert_linear"]) == "cpu"
    x, cu, experts, gates, w, b = make_inputs([2, 3], 2, 1, 4, 4)
    out = grouped_expert_linear(x, cu, experts, gates, w, b)
    assert_close(out, grouped_expert_linear_reference(x, cu, experts, gates, w, b), torch.float64,
                 reduction_lengths(cu, experts, 4, 4)["out"])


def test_bad_inputs():
    x, cu, experts, gates, w, b = make_inputs([2, 3], 3, 2, 4, 5)
    call = grouped_expert_linear
    with pytest.raises(ValueError, match=r"experts must hold ids in \[0, 3\)"):
        call(x, cu, experts + 3, gates, w, b)
    with pytest.raises(ValueError, match=r"experts must hold ids"):
        call(x, cu, experts - 3, gates, w, b)
    with pytest.raises(ValueError, match="gates must have the shape of experts"):
        call(x, cu, experts, gates[:, :1], w, b)
    with pytest.raises(ValueError, match="must start at 0"):
        call(x, cu + 1, experts, gates, w, b)
    with pytest.raises(ValueError, match="non-decreasing"):
        call(x, torch.tensor([0, 4, 2, 5]), torch.zeros(3, 2, dtype=torch.long), torch.rand(3, 2,
             dtype=torch.float64), w, b)
    with pytest.raises(ValueError, match="end at the token count 5"):
        call(x, torch.tensor([0, 2, 4]), experts, gates, w, b)
    with pytest.raises(ValueError, match="cu_seqlens has 1 segments but experts has 2 rows"):
        call(x, torch.tensor([0, 5]), experts, gates, w, b)
    with pytest.raises(ValueError, match=r"weight must have shape \[E, d_in=4"):
        call(x, cu, experts, gates, w[:, :3], b)
    with pytest.raises(TypeError, match="weight must have dtype"):
        call(x, cu, experts, gates, w.float(), b)
    with pytest.raises(ValueError, match=r"bias must have shape \[E, d_out\] = \[3, 5\]"):
        call(x, cu, experts, gates, w, b[:, :4])
    with pytest.raises(TypeError, match="experts must have dtype"):
        call(x, cu, experts.float(), gates, w, b)
    with pytest.raises(_backend.BackendUnavailable, match="float32, float16 or bfloat16"):
        call(x, cu, experts, gates, w, b, backend="triton")
    with pytest.raises(ValueError, match="backend must be one of"):
        call(x, cu, experts, gates, w, b, backend="tpu")


# Compiles every Triton kernel for sm_90 (PTX + cubin through Triton's bundled ptxas) in a fresh
# interpreter without TRITON_INTERPRET: catches code the interpreter accepts but the GPU compiler
# rejects, on machines without a GPU.
_SM90_COMPILE = textwrap.dedent("""
    import os
    os.environ.pop("TRITON_INTERPRET", None)
    import inspect
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    import hotspot_erc.kernels.grouped_linear as K

    def build(kernel, pointers, consts, **opts):
        sig = {}
        for name in inspect.signature(kernel.fn).parameters:
            if name in consts:
                sig[name] = "constexpr"
            elif name.endswith("_ptr"):
                sig[name] = pointers[name]
            else:
                sig[name] = "i32"
        triton.compile(ASTSource(fn=kernel, signature=sig, constexprs=consts),
                       target=GPUTarget("cuda", 90, 64), options=opts)

    for cu_t in ("*i32", "*i64"):
        build(K._plan_kernel, dict(cu_ptr=cu_t, experts_ptr=cu_t, tiles_ptr="*i64", routing_ptr="*i64"),
              dict(K=2, BLOCK_M=32, BLOCK_P=K._PLAN_TILES, BLOCK_S=K._PLAN_SEGMENTS, BLOCK_A=K._PLAN_ASSIGN))
    for dt, prec, bk in (("bf16", "tf32", 64), ("fp32", "ieee", 32)):
        ptrs = dict(a_ptr="*" + dt, b_ptr="*" + dt, bias_ptr="*" + dt, experts_ptr="*i64",
                    gates_ptr="*fp32", out_ptr="*" + dt, tiles_ptr="*i64",
                    cu_ptr="*i64", x2_ptr="*" + dt, dgb_ptr="*" + dt, partial_ptr="*fp32")
        for dgate in (False, True):
            build(K._routed_mm_kernel, ptrs, dict(K=2, HAS_BIAS=not dgate, DGATE=dgate, DGATE_BIAS=dgate,
                  BLOCK_M=64, BLOCK_N=128, BLOCK_K=bk, UPCAST=False, PRECISION=prec),
                  num_warps=8, num_stages=3)  # what the launcher uses for 64x128 tiles
        ptrs = dict(x_ptr="*" + dt, dy_ptr="*" + dt, cu_ptr="*i32", gates_ptr="*fp32", routing_ptr="*i64",
                    dw_ptr="*fp32", db_ptr="*fp32")
        build(K._expert_weight_grad_kernel, ptrs, dict(K=2, HAS_BIAS=True, BLOCK_M=64, BLOCK_K=64,
              BLOCK_N=64, UPCAST=False, PRECISION=prec), num_warps=8, num_stages=3)
        build(K._finalize_kernel, dict(partial_ptr="*fp32", tiles_ptr="*i64", dgates_ptr="*fp32",
              dw_part_ptr="*fp32", dw_ptr="*" + dt, db_part_ptr="*fp32", db_ptr="*" + dt),
              dict(K=3, BLOCK_K=4, BLOCK=K._FINALIZE_BLOCK))
    print("compiled")
""")


def test_triton_kernels_compile_for_sm90():
    assert_compiles_offline(_SM90_COMPILE)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_conversation_shapes(dtype):
    """Real kernels at conversation scale: accuracy, bitwise-repeatable gradients, no host sync."""
    lens = torch.randint(0, 400, (64,)).tolist() + [1, 0, 4096]
    x, cu, experts, gates, w, b = make_inputs(lens, 8, 2, 128, 96, device="cuda")
    dy = torch.randn(x.shape[0], 96, dtype=torch.float64, device="cuda")
    ref, ref_grads = _grads(lambda *a: grouped_expert_linear_reference(a[0], cu, experts, a[1], a[2], a[3]),
                            x, gates, w, b, dy)
    low = [t.to(dtype) for t in (x, gates, w, b)]

    def run():
        return _grads(lambda *a: grouped_expert_linear(a[0], cu, experts, a[1], a[2], a[3]), *low, dy)

    run()  # compile outside the sync check
    torch.cuda.set_sync_debug_mode("error")
    try:
        out, grads = run()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    eager, eager_grads = _grads(lambda *a: grouped_expert_linear_reference(a[0], cu, experts, a[1], a[2], a[3]),
                                *low, dy)
    # float32 follows torch's matmul setting on the GPU (TF32 only where allowed), in kernel and eager
    unit = "tf32" if dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32 else dtype
    assert_within_twice_eager(dtype, reduction_lengths(cu, experts, 128, 96),
                              magnitudes(cu, experts, x, gates, w, b, dy), (out, *grads), (eager, *eager_grads),
                              (ref, *ref_grads), unit=unit)
    _, again = run()
    for g0, g1 in zip(grads, again):
        assert torch.equal(g0, g1)
