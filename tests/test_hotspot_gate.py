"""hotspot_gate (DESIGN §3.1): every backend against the float64 reference, gradients, saved
memory, torch.library/compile integration, bad input, and the HotspotGatedFusion module.

On CPU the "triton" backend runs the real kernels through TRITON_INTERPRET=1 (set by conftest).
"""
import math

import pytest
import torch

from conftest import rel_err, run_offline_compile
from hotspot_erc.nn.fusion import HotspotGatedFusion
from hotspot_erc.ops._backend import BackendUnavailable
from hotspot_erc.ops.hotspot_gate import (_hotspot_gate_backward_op, _hotspot_gate_op, hotspot_gate,
                                          resolve_backend)
from hotspot_erc.reference.hotspot_gate import hotspot_gate_reference


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


def assert_close_all(got, want, tol):
    names = ["out", "alpha", "dc", "dh", "dweight", "dbias"]
    flat_got = [got[0], got[1], *got[2]]
    flat_want = [want[0], want[1], *want[2]]
    for name, a, b in zip(names, flat_got, flat_want):
        assert a.shape == b.shape, (name, a.shape, b.shape)
        assert torch.isfinite(a).all(), f"{name} has non-finite values (an unwritten element?)"
        # dweight/dbias sum over all N tokens and can cancel: their norm is small next to the
        # terms summed, so float32 rounding shows more in a relative error.
        bound = tol * (10 if name in ("dweight", "dbias") else 1)
        err = rel_err(a, b)
        assert err < bound, f"{name}: relative error {err:.2e} >= {bound:.0e}"


@pytest.fixture
def poison(monkeypatch):
    """Kernel output buffers start as NaN, so any element a kernel fails to write shows up."""
    from hotspot_erc.kernels import hotspot_gate as kernels

    def nan_empty(shape, dtype, device):
        return torch.full(shape, float("nan"), dtype=dtype, device=device)

    monkeypatch.setattr(kernels, "_empty", nan_empty)


# ----------------------------------------------------------------------------- numerics

SHAPES = [(n, d) for n in (1, 7, 100, 1023) for d in (16, 100, 256)]  # the odd sizes


@pytest.mark.parametrize("gate", ["vector", "scalar"])
@pytest.mark.parametrize("n,d", SHAPES)
def test_triton_matches_reference_fp32(n, d, gate, poison):
    inputs = make_inputs(n, d, gate)
    go = torch.randn(n, d)
    ga = torch.randn(n, inputs[2].shape[1])
    got = run_op(inputs, go, ga, "triton")
    assert_close_all(got, reference_f64(inputs, go, ga), 1e-5)


@pytest.mark.parametrize("gate", ["vector", "scalar"])
@pytest.mark.parametrize("n,d", [(5, 1), (9, 5), (70, 33)])
def test_triton_tiny_and_ragged_features(n, d, gate, poison):
    """d below tl.dot's 16 and d not a multiple of a tile: masked loads and stores."""
    inputs = make_inputs(n, d, gate)
    go = torch.randn(n, d)
    ga = torch.randn(n, inputs[2].shape[1])
    assert_close_all(run_op(inputs, go, ga, "triton"), reference_f64(inputs, go, ga), 1e-5)


@pytest.mark.parametrize("gate", ["vector", "scalar"])
@pytest.mark.parametrize("n,d", [(1, 16), (7, 100), (1023, 256), (100, 1)])
def test_cpu_backend_matches_reference_fp32(n, d, gate):
    inputs = make_inputs(n, d, gate)
    go = torch.randn(n, d)
    ga = torch.randn(n, inputs[2].shape[1])
    assert_close_all(run_op(inputs, go, ga, "cpu"), reference_f64(inputs, go, ga), 1e-5)


@pytest.mark.parametrize("backend", ["triton", "cpu"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("gate", ["vector", "scalar"])
def test_low_precision_within_twice_eager_error(dtype, gate, backend, poison):
    """FlashAttention's rule: error vs float64 at most 2x the eager reference's own error in the
    same dtype (plus a small floor for values that eager happens to round exactly)."""
    n, d = 100, 64
    inputs = make_inputs(n, d, gate, dtype=dtype)
    go = torch.randn(n, d).to(dtype)
    ga = torch.randn(n, inputs[2].shape[1]).to(dtype)
    truth = reference_f64(inputs, go, ga)
    out_e, alpha_e = hotspot_gate_reference(*inputs, return_gate=True)
    eager = (out_e, alpha_e, torch.autograd.grad([out_e, alpha_e], inputs, [go, ga]))
    got = run_op(inputs, go, ga, backend)
    for name, a, e, t in zip(["out", "alpha", "dc", "dh", "dweight", "dbias"],
                             [got[0], got[1], *got[2]], [eager[0], eager[1], *eager[2]],
                             [truth[0], truth[1], *truth[2]]):
        assert a.dtype == dtype, name
        assert rel_err(a, t) <= 2 * rel_err(e, t) + 2e-3, (name, rel_err(a, t), rel_err(e, t))


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
    for a, b in zip(got, want):
        assert rel_err(a, b) < 1e-5


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
    assert rel_err(hotspot_gate(c, h, w, b, backend="triton"), want) < 1e-5
    assert rel_err(hotspot_gate(c, h, w, b, backend="cpu"), want) < 1e-5


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
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-5)
    for a, t in zip(grads, (c, h, fusion.weight)):
        assert torch.allclose(a, t.grad, rtol=1e-5, atol=1e-5)


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
    assert rel_err(out, want_out) < 1e-5 and rel_err(alpha, want_alpha) < 1e-5
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
    tol = 1e-2 if dtype == torch.bfloat16 else 2e-3  # float32 may use TF32 if torch allows it
    assert_close_all(got, reference_f64(inputs, go, ga), tol)


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
