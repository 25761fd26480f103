"""hotspot_gate (DESIGN §3.1): every backend against the float64 reference, gradients, saved
memory, torch.library/compile integration, bad input, and the HotspotGatedFusion module.

On CPU the "triton" backend runs the real kernels through TRITON_INTERPRET=1 (set by conftest).
"""
import math

import pytest
import torch

from conftest import run_offline_compile
from hotspot_erc.nn.fusion import HotspotGatedFusion
from hotspot_erc.ops._backend import BackendUnavailable
from hotspot_erc.ops.hotspot_gate import (_hotspot_gate_backward_op, _hotspot_gate_op, hotspot_gate,
                                          resolve_backend)
from hotspot_erc.reference.hotspot_gate import hotspot_gate_reference
from tolerance import C, assert_close, rel_bound, rel_err


def make_inputs(n, d, gate, dtype=torch.float32, device="cpu", requires_grad=True):
    g = d if gate == "vector" else 1
    c = torch.randn(n, d, device=device)
    h = torch.randn(n, d, device=device)
    # nn.Linear-like scale keeps z = O(1), so the gate is not saturated and gradients are live.
    w = torch.randn(2 * d, g, device=device) / math.sqrt(2 * d)
    b = torch.randn(g, device=device) * 0.5
    return [t.to(dtype).requires_grad_(requires_grad) for t in (c, h, w, b)]


def reference_f64(inputs, grad_out, grad_alpha):
    """Outputs and gradients of the reference in float64 (the ground truth)."""
    ins = [t.detach().double().requires_grad_() for t in inputs]
    out, alpha = hotspot_gate_reference(*ins, return_gate=True)
    grads = torch.autograd.grad([out, alpha], ins, [grad_out.double(), grad_alpha.double()])
    return out, alpha, grads


def run_op(inputs, grad_out, grad_alpha, backend):
    out, alpha = hotspot_gate(*inputs, return_gate=True, backend=backend)
    grads = torch.autograd.grad([out, alpha], inputs, [grad_out, grad_alpha])
    return out, alpha, grads


NAMES = ("out", "alpha", "dc", "dh", "dweight", "dbias")


def error_model(inputs, grad_out, grad_alpha):
    """Per compared value (NAMES): k, c and the scale of its rounding bound.

    Every value starts from z = [c; h] @ W + b, a reduction of 2d + 1 terms (out and α: one
    stage). The gate gradient dz = (dout ⊙ (h − c) + dα) ⊙ α(1 − α) adds, for the scalar gate, a
    sum over the d features; dc and dh add dz @ Wᵀ (over the g gate columns); dweight and dbias
    add a sum over the N rows. Chained stages' rounding errors add (Σ√k_i ≤ n·√max k_i): c is
    C times the number of stages and k the longest stage. dweight and dbias sum rows of both
    signs, so their scale is Σ|terms| (the same sums on magnitudes); the others are against ‖ref‖.
    """
    c, h, w, b = (t.detach().double() for t in inputs)
    n, d = c.shape
    scalar = w.shape[1] == 1
    alpha = torch.sigmoid(torch.cat([c, h], -1) @ w + b)
    terms = grad_out.double().abs() * (h - c).abs()
    if scalar:
        terms = terms.sum(1, keepdim=True)
    dz_mag = (terms + grad_alpha.double().abs()) * alpha * (1 - alpha)
    dw_mag = torch.cat([c, h], -1).abs().T @ dz_mag
    kz = 2 * d + 1
    dz_stages = 2 + scalar  # z, (the scalar gate's feature sum,) the row sum
    return {"out": (kz, C, None), "alpha": (kz, C, None),
            "dc": (kz, 2 * C, None), "dh": (kz, 2 * C, None),
            "dweight": (max(n, kz), dz_stages * C, dw_mag), "dbias": (max(n, kz), dz_stages * C, dz_mag.sum(0))}


def assert_close_all(got, want, dtype, model):
    """Each of out, α, dc, dh, dweight, dbias within the rounding bound of ``dtype``."""
    for name, a, b in zip(NAMES, [got[0], got[1], *got[2]], [want[0], want[1], *want[2]]):
        assert torch.isfinite(a).all(), f"{name} has non-finite values (an unwritten element?)"
        k, c, scale = model[name]
        assert_close(a, b, dtype, k, scale=scale, c=c, what=name)


@pytest.fixture
def poison(monkeypatch):
    """Kernel output buffers start as NaN, so any element a kernel fails to write shows up."""
    from hotspot_erc.kernels import hotspot_gate as kernels

    def nan_empty(shape, dtype, device):
        return torch.full(shape, float("nan"), dtype=dtype, device=device)

    monkeypatch.setattr(kernels, "_empty", nan_empty)


# ----------------------------------------------------------------------------- numerics

SHAPES = [(n, d) for n in (1, 7, 100, 1023) for d in (16, 100, 256)]  # odd sizes


@pytest.mark.parametrize("gate", ["vector", "scalar"])
@pytest.mark.parametrize("n,d", SHAPES)
def test_triton_matches_reference_fp32(n, d, gate, poison):
    inputs = make_inputs(n, d, gate)
    go = torch.randn(n, d)
    ga = torch.randn(n, inputs[2].shape[1])
    got = run_op(inputs, go, ga, "triton")
    assert_close_all(got, reference_f64(inputs, go, ga), torch.float32, error_model(inputs, go, ga))


@pytest.mark.parametrize("gate", ["vector", "scalar"])
@pytest.mark.parametrize("n,d", [(5, 1), (9, 5), (70, 33)])
def test_triton_tiny_and_ragged_features(n, d, gate, poison):
    """d below tl.dot's 16 and d not a multiple of a tile: masked loads and stores."""
    inputs = make_inputs(n, d, gate)
    go = torch.randn(n, d)
    ga = torch.randn(n, inputs[2].shape[1])
    assert_close_all(run_op(inputs, go, ga, "triton"), reference_f64(inputs, go, ga), torch.float32,
                     error_model(inputs, go, ga))


@pytest.mark.parametrize("gate", ["vector", "scalar"])
@pytest.mark.parametrize("n,d", [(1, 16), (7, 100), (1023, 256), (100, 1)])
def test_cpu_backend_matches_reference_fp32(n, d, gate):
    inputs = make_inputs(n, d, gate)
    go = torch.randn(n, d)
    ga = torch.randn(n, inputs[2].shape[1])
    assert_close_all(run_op(inputs, go, ga, "cpu"), reference_f64(inputs, go, ga), torch.float32,
                     error_model(inputs, go, ga))


@pytest.mark.parametrize("backend", ["triton", "cpu"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("gate", ["vector", "scalar"])
def test_low_precision_within_twice_eager_error(dtype, gate, backend, poison):
    """FlashAttention's rule: error vs float64 at most 2x the eager reference's own error in the
    same dtype (plus the dtype's rounding bound as a floor for values that eager happens to round
    exactly)."""
    n, d = 100, 64
    inputs = make_inputs(n, d, gate, dtype=dtype)
    go = torch.randn(n, d).to(dtype)
    ga = torch.randn(n, inputs[2].shape[1]).to(dtype)
    truth = reference_f64(inputs, go, ga)
    out_e, alpha_e = hotspot_gate_reference(*inputs, return_gate=True)
    eager = (out_e, alpha_e, torch.autograd.grad([out_e, alpha_e], inputs, [go, ga]))
    got = run_op(inputs, go, ga, backend)
    model = error_model(inputs, go, ga)
    for name, a, e, t in zip(NAMES, [got[0], got[1], *got[2]], [eager[0], eager[1], *eager[2]],
                             [truth[0], truth[1], *truth[2]]):
        assert a.dtype == dtype, name
        k, c, scale = model[name]
        err, eager_err = rel_err(a, t, scale), rel_err(e, t, scale)
        assert err <= 2 * eager_err + rel_bound(dtype, k, c=c, accumulate=torch.float32), (name, err, eager_err)


@pytest.mark.parametrize("gate", ["vector", "scalar"])
def test_gradcheck_float64(gate):
    inputs = [t.double().detach().requires_grad_() for t in make_inputs(6, 5, gate)]

    def f(*args):
        return hotspot_gate(*args, return_gate=True, backend="cpu")

    assert torch.autograd.gradcheck(f, inputs)
    assert torch.autograd.gradcheck(lambda *a: hotspot_gate(*a, backend="reference"), inputs)


@pytest.mark.parametrize("backend", ["triton", "cpu"])
def test_no_gate_requested_and_unused_gate_gradient(backend):
    """Without return_gate the op returns one tensor; gradients equal the out-only reference."""
    inputs = make_inputs(33, 16, "vector")
    out = hotspot_gate(*inputs, backend=backend)
    assert isinstance(out, torch.Tensor)
    go = torch.randn_like(out)
    got = torch.autograd.grad(out, inputs, go)
    ins = [t.detach().double().requires_grad_() for t in inputs]
    want = torch.autograd.grad(hotspot_gate_reference(*ins), ins, go.double())
    model = error_model(inputs, go, torch.zeros(33, 16))
    for name, a, b in zip(NAMES[2:], got, want):
        k, c, scale = model[name]
        assert_close(a, b, torch.float32, k, scale=scale, c=c, what=name)


@pytest.mark.parametrize("backend", ["triton", "cpu"])
@pytest.mark.parametrize("gate", ["vector", "scalar"])
def test_empty_batch(backend, gate):
    c, h, w, b = make_inputs(0, 16, gate)
    out, alpha = hotspot_gate(c, h, w, b, return_gate=True, backend=backend)
    assert out.shape == (0, 16) and alpha.shape == (0, w.shape[1])
    dc, dh, dw, db = torch.autograd.grad(out.sum(), (c, h, w, b))
    assert dc.shape == (0, 16) and dw.abs().sum() == 0 and db.abs().sum() == 0


def test_strided_rows(poison):
    """Column slices of a wider tensor (row stride != d) are read in place, correctly."""
    big = torch.randn(50, 40)
    c, h = big[:, :16], big[:, 20:36]
    _, _, w, b = make_inputs(50, 16, "vector", requires_grad=False)
    want = hotspot_gate_reference(c.double(), h.double(), w.double(), b.double())
    kz = 2 * 16 + 1  # z = [c; h] @ W + b
    assert_close(hotspot_gate(c, h, w, b, backend="triton"), want, torch.float32, kz, what="triton")
    assert_close(hotspot_gate(c, h, w, b, backend="cpu"), want, torch.float32, kz, what="cpu")


# Bitwise reproducibility (deterministic reductions, fixed tiles) is tested across two processes
# on a GPU in tests/test_determinism.py; under the interpreter, which runs one program at a
# time, a repeat test cannot fail. The multi-chunk scalar reduction is covered by the n = 1023
# cases above.


# ----------------------------------------------------------------------------- memory

def saved_bytes(fn) -> int:
    """Bytes of distinct storages autograd saves while ``fn()`` runs."""
    seen = {}

    def pack(t):
        seen[(t.untyped_storage().data_ptr(), t.device)] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


@pytest.mark.parametrize("gate", ["vector", "scalar"])
def test_saved_for_backward(gate):
    """The fused (Triton) op saves no more than its inputs; the CPU backend adds only α [N, g];
    the eager reference saves more than either."""
    c, h, w, b = make_inputs(64, 32, gate)
    inputs_bytes = sum(t.untyped_storage().nbytes() for t in (c, h, w, b))
    fused = saved_bytes(lambda: hotspot_gate(c, h, w, b, backend="triton"))
    assert 0 < fused <= inputs_bytes, (fused, inputs_bytes)
    cpu = saved_bytes(lambda: hotspot_gate(c, h, w, b, backend="cpu"))
    assert cpu <= inputs_bytes + 64 * w.shape[1] * 4, (cpu, inputs_bytes)
    eager = saved_bytes(lambda: hotspot_gate_reference(c, h, w, b))
    # The eager graph keeps [c; h], α and h − c: several [N, d] buffers beyond the inputs.
    assert eager >= inputs_bytes + 64 * 32 * 4 and eager > cpu, (eager, cpu, inputs_bytes)


# ----------------------------------------------------------------------------- integration

@pytest.mark.parametrize("backend", ["triton", "cpu"])
@pytest.mark.parametrize("gate", ["vector", "scalar"])
def test_opcheck(backend, gate):
    c, h, w, b = make_inputs(9, 16, gate)
    for return_gate in (False, True):
        torch.library.opcheck(_hotspot_gate_op, (c, h, w, b, return_gate, backend))
    args = [t.detach() for t in (c, h, w, b)]
    g = w.shape[1]
    alpha = torch.rand(9, g)
    torch.library.opcheck(_hotspot_gate_backward_op, (torch.randn(9, 16), None, *args, None, backend))
    torch.library.opcheck(_hotspot_gate_backward_op, (torch.randn(9, 16), torch.randn(9, g), *args, None, backend))
    torch.library.opcheck(_hotspot_gate_backward_op, (torch.randn(9, 16), torch.randn(9, g), *args, alpha, backend))


@pytest.mark.parametrize("backend", [None, "triton"])
def test_torch_compile_fullgraph(backend):
    fusion = HotspotGatedFusion(16, backend=backend)
    c, h = torch.randn(20, 16, requires_grad=True), torch.randn(20, 16, requires_grad=True)

    def step(c, h):
        out, alpha = fusion(c, h, return_gate=True)
        return (out * out).sum() + alpha.sum()

    compiled = torch.compile(step, fullgraph=True)
    got = compiled(c, h)
    got.backward()
    grads = (c.grad.clone(), h.grad.clone(), fusion.weight.grad.clone())
    for t in (c, h, fusion.weight):
        t.grad = None
    want = step(c, h)
    want.backward()
    # Two float32 computations. The loss sums N·(d + g) positive terms (out², α), each from z's
    # 2d + 1 terms: two stages; no cancellation, so ‖want‖ is the scale. The gradients are those
    # of the op with dout = 2·out and dα = 1.
    inputs = (c, h, fusion.weight, fusion.bias)
    n, d, g = c.shape[0], c.shape[1], fusion.weight.shape[1]
    assert_close(got, want, torch.float32, max(n * (d + g), 2 * d + 1), c=2 * C, what="loss")
    out64 = hotspot_gate_reference(*(t.detach().double() for t in inputs))
    model = error_model(inputs, 2 * out64, torch.ones(n, g))
    for name, a, t in zip(("dc", "dh", "dweight"), grads, (c, h, fusion.weight)):
        k, cc, scale = model[name]
        assert_close(a, t.grad, torch.float32, k, scale=scale, c=cc, what=name)


def test_backend_resolution():
    cpu = torch.device("cpu")
    assert resolve_backend(cpu, torch.float32, None) == "cpu"
    assert resolve_backend(cpu, torch.float64, None) == "cpu"
    assert resolve_backend(cpu, torch.float32, "reference") == "reference"
    assert resolve_backend(cpu, torch.float32, "triton") == "triton"  # interpreter (conftest)
    with pytest.raises(BackendUnavailable, match="float32, float16 or bfloat16"):
        resolve_backend(cpu, torch.float64, "triton")
    with pytest.raises(BackendUnavailable, match="no 'cuda' backend"):
        resolve_backend(cpu, torch.float32, "cuda")


# ----------------------------------------------------------------------------- bad input

def test_bad_input_messages():
    c, h, w, b = make_inputs(5, 8, "vector", requires_grad=False)
    with pytest.raises(ValueError, match="h must have the shape of c"):
        hotspot_gate(c, h[:4], w, b)
    with pytest.raises(ValueError, match=r"weight must have shape \[2d, g\]"):
        hotspot_gate(c, h, w[:8], b)
    with pytest.raises(ValueError, match=r"weight must have shape \[2d, g\]"):
        hotspot_gate(c, h, torch.randn(16, 3), b)
    with pytest.raises(ValueError, match="bias must have shape"):
        hotspot_gate(c, h, w, b[:1])
    with pytest.raises(TypeError, match="h must have the dtype of c"):
        hotspot_gate(c, h.double(), w, b)
    with pytest.raises(TypeError, match="weight must have dtype"):
        hotspot_gate(c, h, w.half(), b)
    with pytest.raises(ValueError, match="h must be on"):
        hotspot_gate(c, h.to("meta"), w, b)
    with pytest.raises(ValueError, match="c must have 2 dimensions"):
        hotspot_gate(c[0], h[0], w, b)
    with pytest.raises(TypeError, match="c must be a torch.Tensor"):
        hotspot_gate(c.tolist(), h, w, b)
    with pytest.raises(TypeError, match="c must have dtype"):
        hotspot_gate(c.long(), h.long(), w, b)
    with pytest.raises(ValueError, match="at least one feature"):
        hotspot_gate(c[:, :0], h[:, :0], w[:0], b)
    with pytest.raises(ValueError, match="backend must be one of"):
        hotspot_gate(c, h, w, b, backend="tpu")


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy, inside the Triton interpreter
@pytest.mark.parametrize("backend", ["triton", "cpu", "reference"])
@pytest.mark.parametrize("gate", ["vector", "scalar"])
def test_nan_inf_propagate_to_their_rows_only(backend, gate):
    """Documented behaviour: NaN/Inf spread to the outputs they touch (like any linear layer),
    other tokens are unaffected, and nothing hangs."""
    c, h, w, b = make_inputs(40, 16, gate, requires_grad=False)
    c[3, 5] = float("nan")
    h[17, 0] = float("inf")
    out, alpha = hotspot_gate(c, h, w, b, return_gate=True, backend=backend)
    assert torch.isnan(out[3]).any() and torch.isnan(alpha[3]).all()
    assert not torch.isfinite(out[17]).all()
    clean = torch.ones(40, dtype=torch.bool)
    clean[[3, 17]] = False
    assert torch.isfinite(out[clean]).all() and torch.isfinite(alpha[clean]).all()


# ----------------------------------------------------------------------------- module

@pytest.mark.parametrize("gate", ["vector", "scalar"])
def test_module(gate, device):
    m = HotspotGatedFusion(24, gate=gate).to(device)
    assert m.weight.shape == (48, 24 if gate == "vector" else 1)
    c, h = torch.randn(11, 24, device=device), torch.randn(11, 24, device=device)
    out, alpha = m(c, h, return_gate=True)
    want_out, want_alpha = hotspot_gate_reference(c, h, m.weight, m.bias, return_gate=True)
    # two float32 computations of z = [c; h] @ W + b (2d + 1 terms); on a GPU both follow torch's
    # matmul setting (TF32 only where allowed)
    unit = "tf32" if device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32 else torch.float32
    assert_close(out, want_out, unit, 2 * 24 + 1, what="out")
    assert_close(alpha, want_alpha, unit, 2 * 24 + 1, what="alpha")
    assert torch.equal(m(c, h), out)
    out.sum().backward()
    assert m.weight.grad is not None and m.bias.grad is not None
    # Inputs of a bf16 model: parameters follow the input dtype.
    assert m(c.bfloat16(), h.bfloat16()).dtype == torch.bfloat16
    assert "gate='%s'" % gate in repr(m)


def test_module_rejects_bad_gate():
    with pytest.raises(ValueError, match="gate must be"):
        HotspotGatedFusion(8, gate="matrix")


# ----------------------------------------------------------------------------- GPU only

@pytest.mark.gpu
@pytest.mark.parametrize("gate", ["vector", "scalar"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_native_kernels_no_sync(gate, dtype):
    n, d = 4099, 256
    inputs = make_inputs(n, d, gate, dtype=dtype, device="cuda")
    go = torch.randn(n, d, device="cuda", dtype=dtype)
    ga = torch.randn(n, inputs[2].shape[1], device="cuda", dtype=dtype)
    assert resolve_backend(torch.device("cuda"), dtype, None) == "triton"
    torch.cuda.set_sync_debug_mode("error")
    try:
        got = run_op(inputs, go, ga, None)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    want = reference_f64(inputs, go, ga)
    model = error_model(inputs, go, ga)
    if dtype == torch.float32:
        # float32 follows torch's matmul setting: TF32 products only where torch allows them
        unit = "tf32" if torch.backends.cuda.matmul.allow_tf32 else torch.float32
        assert_close_all(got, want, unit, model)
        return
    # bfloat16 inputs (the reference sees the same values), float32 accumulation: the sums round
    # as float32 does, and bfloat16 enters once per element, where dz is stored and where each
    # result is cast (k = 1, within C's roundings per term).
    for name, a, b in zip(NAMES, [got[0], got[1], *got[2]], [want[0], want[1], *want[2]]):
        assert torch.isfinite(a).all(), name
        k, c, scale = model[name]
        err, bound = rel_err(a, b, scale), rel_bound(dtype, k, c=c, accumulate=torch.float32)
        assert err <= bound, (name, err, bound)


# ----------------------------------------------------------------------------- GPU compile, no GPU

_COMPILE_SCRIPT = r'''
import json, sys
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
import hotspot_erc.kernels.hotspot_gate as K

FP32_PTRS = {"pw_ptr"}  # float32 partial sums
SCALAR_FP32 = {"dz_ptr"}  # the scalar gate's dz is float32

def compile_one(fn, dtype, consts, num_warps, scalar=False):
    sig = {}
    for p in fn.params:
        if p.is_constexpr:
            sig[p.name] = "constexpr"
        elif p.name.endswith("_ptr"):
            f32 = p.name in FP32_PTRS or (scalar and p.name in SCALAR_FP32)
            sig[p.name] = "*fp32" if f32 else "*" + dtype
        else:
            sig[p.name] = "i32"
    # What Triton's launcher specialises for 16-divisible sizes, strides and aligned pointers
    # (as at d = 256/1024 with contiguous tensors): the pipelined code then uses more shared memory.
    attrs = {(i,): [["tt.divisibility", 16]] for i, p in enumerate(fn.params)
             if not p.is_constexpr and p.name not in ("N", "rows_per_chunk", "chunks")}
    src = ASTSource(fn=fn, signature=sig, constexprs=consts, attrs=attrs)
    k = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": num_warps, "num_stages": 3})
    return k.metadata.shared

out = {}
for dtype, elem, d in (("bf16", 2, 256), ("fp32", 4, 1024)):
    t = K._tiles(d, elem)
    blk = {k: t[k] for k in ("BLOCK_M", "BLOCK_N", "BLOCK_K")}
    prec = "ieee" if dtype == "fp32" else "tf32"  # kernels._launch.dot_precision, TF32 off
    gemm = dict(UPCAST=False, PRECISION=prec, **blk)
    out[f"fwd_vector/{dtype}"] = compile_one(K._fwd_vector_kernel, dtype, dict(WRITE_ALPHA=True, **gemm), t["num_warps"])
    for dr in (64, d):  # one tile (every gate column in registers) and the two-phase sweep
        r = K._rows_tiles(dr, elem)
        rows_gemm = dict(UPCAST=False, PRECISION=prec, **{k: r[k] for k in ("BLOCK_M", "BLOCK_N", "BLOCK_K")})
        out[f"rows_vector/{dtype}/{dr}"] = compile_one(K._bwd_rows_vector_kernel, dtype,
                                                       dict(HAS_GA=True, ONE_TILE=r["BLOCK_N"] >= dr, **rows_gemm),
                                                       r["num_warps"])
    bk, bn = K._dw_tiles(d)
    out[f"dw_vector/{dtype}"] = compile_one(K._bwd_dw_vector_kernel, dtype,
                                            dict(UPCAST=False, PRECISION=prec, BLOCK_M=K._dw_rows(bk, elem),
                                                 BLOCK_N=bn, BLOCK_K=bk), 4)
    if dtype == "fp32":
        continue  # float32 matters for the GEMM tiles' shared memory only
    bm, bd, nw, one = K._row_tiles(d)
    for one_pass in (True, False):
        rows = dict(ONE_PASS=one_pass, BLOCK_M=bm, BLOCK_D=bd if one_pass else 256)
        out[f"fwd_scalar/{dtype}/{one_pass}"] = compile_one(K._fwd_scalar_kernel, dtype, dict(WRITE_ALPHA=True, **rows), nw, True)
        out[f"rows_scalar/{dtype}/{one_pass}"] = compile_one(K._bwd_rows_scalar_kernel, dtype, dict(HAS_GA=True, **rows), nw, True)
    out[f"finalize_scalar/{dtype}"] = compile_one(K._bwd_finalize_scalar_kernel, dtype, dict(BLOCK=1024), 4, True)
print(json.dumps(out))
'''


def test_kernels_compile_for_hopper():
    """Every kernel compiles to sm_90 code with the launchers' tile choices (no GPU needed:
    Triton's own ptxas), and the GEMM tiles fit an H100's 227 KB of shared memory per block."""
    import json

    proc = run_offline_compile(_COMPILE_SCRIPT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    shared = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(shared) == 13
    for name, nbytes in shared.items():
        assert nbytes <= 227 * 1024, (name, nbytes)
