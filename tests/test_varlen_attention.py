"""varlen_cross_attention (DESIGN §3.3): every backend against the float64 reference and against
torch's scaled_dot_product_attention segment by segment; gradients, edge segments, bad input,
torch.library registration. Triton runs through TRITON_INTERPRET=1 when there is no GPU."""
import math

import pytest
import torch
import torch.nn.functional as F

from conftest import assert_compiles_offline, run_offline_compile, seed_for
from hotspot_erc.ops import _backend
from hotspot_erc.ops.varlen_attention import (
    OP,
    _bwd_op,
    _fwd_op,
    varlen_cross_attention,
)
from hotspot_erc.reference.varlen_attention import (
    padded_attention_reference,
    padded_sdpa_attention,
    varlen_cross_attention_reference,
)
from tolerance import C, accumulation, assert_close, rel_bound, rel_err

# Segment-length patterns (queries, keys) that hurt: empty segments on either side, one token,
# odd sizes, lengths straddling the 16-row tiles the interpreter uses, one long segment.
LAYOUTS = {
    "mixed": ([5, 0, 17, 1, 33, 2], [9, 4, 0, 1, 20, 31]),
    "one_token": ([1, 1, 1], [1, 1, 1]),
    "one_long": ([70], [45]),
    "tile_edges": ([16, 15, 17, 32], [16, 17, 15, 1]),
}


def cu(lens, dtype=torch.int64, device="cpu"):
    return torch.tensor([0] + list(lens), dtype=torch.int64).cumsum(0).to(device=device, dtype=dtype)


def make(lq, lk, heads=2, head_dim=24, dtype=torch.float32, device="cpu", cu_dtype=torch.int64):
    q = torch.randn(sum(lq), heads, head_dim, dtype=dtype, device=device)
    k = torch.randn(sum(lk), heads, head_dim, dtype=dtype, device=device)
    v = torch.randn(sum(lk), heads, head_dim, dtype=dtype, device=device)
    return q, k, v, cu(lq, cu_dtype, device), cu(lk, cu_dtype, device)


def backends_for(device):
    return ["cpu", "triton"] if device.type == "cpu" else ["triton"]


def ref64(q, k, v, cq, ck, scale=None):
    return varlen_cross_attention_reference(q.double(), k.double(), v.double(), cq, ck, scale)


def attention_k(lq, lk, head_dim):
    """k of every attention value: the longest segment's keys (out, dq) or queries (dk, dv)
    times the head dim (each score is a head_dim-long dot)."""
    return max([*lq, *lk, 1]) * head_dim


def attention_magnitudes(q, k, v, cq, ck, scale=None, grad=None, grad_lse=None):
    """Σ|terms| of out, dq, dk and dv (float64): the output P·|V| (a weighted mean of values of both
    signs), and the backward's sums on magnitudes, dS = P ⊙ (|dO|·|V|ᵀ + Σ|dO ⊙ O| + |dlse|),
    dq = |scale|·dS·|K|, dk = |scale|·dSᵀ·|Q|, dv = Pᵀ·|dO|. Gradients are zero without ``grad``."""
    q, k, v = (t.detach().double() for t in (q, k, v))
    scale = q.shape[-1] ** -0.5 if scale is None else abs(scale)
    out, dq, dk, dv = (torch.zeros_like(t) for t in (q, q, k, v))
    for s in range(len(cq) - 1):
        qa, qb, ka, kb = int(cq[s]), int(cq[s + 1]), int(ck[s]), int(ck[s + 1])
        if qa == qb or ka == kb:
            continue
        qs, ks, vs = q[qa:qb], k[ka:kb], v[ka:kb]
        p = torch.softmax(torch.einsum("qhd,khd->hqk", qs, ks) * scale, -1)
        out[qa:qb] = torch.einsum("hqk,khd->qhd", p, vs.abs())
        if grad is None:
            continue
        g = grad[qa:qb].detach().double().abs()
        row = (g * torch.einsum("hqk,khd->qhd", p, vs).abs()).sum(-1).T  # Σ|dO ⊙ O|, [H, Lq]
        if grad_lse is not None:
            row = row + grad_lse[qa:qb].detach().double().abs().T
        ds = p * (torch.einsum("qhd,khd->hqk", g, vs.abs()) + row[..., None])
        dq[qa:qb] = scale * torch.einsum("hqk,khd->qhd", ds, ks.abs())
        dk[ka:kb] = scale * torch.einsum("hqk,qhd->khd", ds, qs.abs())
        dv[ka:kb] = torch.einsum("hqk,qhd->khd", p, g)
    return out, dq, dk, dv


@pytest.fixture
def poison_empty(monkeypatch):
    """Fresh float allocations are NaN, so any element a kernel forgets to write shows."""
    real_empty, real_empty_like = torch.empty, torch.empty_like

    def poison(t):
        return t.fill_(float("nan")) if t.is_floating_point() else t

    monkeypatch.setattr(torch, "empty", lambda *a, **kw: poison(real_empty(*a, **kw)))
    monkeypatch.setattr(torch, "empty_like", lambda *a, **kw: poison(real_empty_like(*a, **kw)))


# ----------------------------------------------------------------------------- forward

@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("backend", ["cpu", "triton"])
def test_forward_matches_reference(layout, backend, poison_empty):
    lq, lk = LAYOUTS[layout]
    q, k, v, cq, ck = make(lq, lk)
    out = varlen_cross_attention(q, k, v, cq, ck, backend=backend)
    assert out.shape == q.shape and out.dtype == q.dtype
    assert torch.isfinite(out).all()
    assert_close(out, ref64(q, k, v, cq, ck), torch.float32, attention_k(lq, lk, 24),
                 scale=attention_magnitudes(q, k, v, cq, ck)[0])


def test_forward_matches_sdpa_per_segment(device):
    lq, lk = LAYOUTS["mixed"]
    q, k, v, cq, ck = make(lq, lk, heads=3, head_dim=16, device=device)
    # two float32 computations; on a GPU both follow torch's matmul setting (TF32 where allowed)
    unit = "tf32" if device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32 else torch.float32
    for backend in backends_for(device):
        for scale in (None, 0.3):
            out = varlen_cross_attention(q, k, v, cq, ck, scale=scale, backend=backend)
            mag = attention_magnitudes(q, k, v, cq, ck, scale)[0]
            for s in range(len(lq)):
                o_s = out[cq[s]:cq[s + 1]]
                if lk[s] == 0:
                    assert torch.equal(o_s, torch.zeros_like(o_s))
                    continue
                # SDPA wants [H, L, Dh].
                want = F.scaled_dot_product_attention(
                    q[cq[s]:cq[s + 1]].transpose(0, 1), k[ck[s]:ck[s + 1]].transpose(0, 1),
                    v[ck[s]:ck[s + 1]].transpose(0, 1), scale=scale,
                ).transpose(0, 1)
                assert_close(o_s, want, unit, attention_k([lq[s]], [lk[s]], 16), scale=mag[cq[s]:cq[s + 1]],
                             what=f"segment {s}")


@pytest.mark.parametrize("head_dim", [8, 16, 24, 64, 100, 128])
def test_triton_head_dims(head_dim):
    lq, lk = [3, 18, 0, 7], [20, 2, 5, 7]
    q, k, v, cq, ck = make(lq, lk, heads=1, head_dim=head_dim)
    out = varlen_cross_attention(q, k, v, cq, ck, backend="triton")
    assert_close(out, ref64(q, k, v, cq, ck), torch.float32, attention_k(lq, lk, head_dim),
                 scale=attention_magnitudes(q, k, v, cq, ck)[0])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_triton_half_precision(dtype):
    """FlashAttention's rule: error at most 2x that of PyTorch's own attention in the dtype,
    for the output and the gradients, plus the dtype's rounding bound as a floor; errors against
    Σ|terms|. (float16 runs the GPU's native-dtype dots even under the interpreter; bfloat16 is
    upcast there.)"""
    lq, lk = LAYOUTS["mixed"]
    q, k, v, cq, ck = make(lq, lk, dtype=dtype, head_dim=32)
    grad = torch.randn_like(q)

    def run(fn, dt, **kw):
        leaves = [t.to(dt).requires_grad_(True) for t in (q, k, v)]
        out = fn(*leaves, cq, ck, **kw)
        return (out, *torch.autograd.grad(out, leaves, grad.to(dt)))

    want = run(varlen_cross_attention_reference, torch.float64)
    torch_own = run(varlen_cross_attention_reference, dtype)
    got = run(varlen_cross_attention, dtype, backend="triton")
    assert got[0].dtype == dtype
    floor = rel_bound(dtype, attention_k(lq, lk, 32), accumulate=accumulation(dtype))
    for name, g, t, w, m in zip(("out", "dq", "dk", "dv"), got, torch_own, want,
                                attention_magnitudes(q, k, v, cq, ck, grad=grad)):
        assert torch.isfinite(g).all(), name
        assert rel_err(g, w, m) <= 2 * rel_err(t, w, m) + floor, (name, rel_err(g, w, m), rel_err(t, w, m))


def test_int32_cu_seqlens_and_strided_inputs():
    lq, lk = LAYOUTS["mixed"]
    q, k, v, cq, ck = make(lq, lk, cu_dtype=torch.int32)
    # Views with a non-unit last stride and a head stride that is not Dh.
    qkv = torch.randn(q.shape[0], q.shape[1], 3 * q.shape[2])
    q_view = qkv[..., ::3]
    want = ref64(q_view, k, v, cq, ck)
    mag = attention_magnitudes(q_view, k, v, cq, ck)[0]
    for backend in ("cpu", "triton"):
        out = varlen_cross_attention(q_view, k, v, cq, ck, backend=backend)
        assert_close(out, want, torch.float32, attention_k(lq, lk, q.shape[2]), scale=mag, what=backend)


def test_empty_batches():
    for lq, lk in (([], []), ([0, 0], [3, 0]), ([2, 1], [0, 0])):
        q, k, v, cq, ck = make(lq, lk)
        q.requires_grad_(True), k.requires_grad_(True), v.requires_grad_(True)
        for backend in ("cpu", "triton"):
            out = varlen_cross_attention(q, k, v, cq, ck, backend=backend)
            assert out.shape == q.shape
            assert torch.equal(out, torch.zeros_like(out))
            dq, dk, dv = torch.autograd.grad(out.sum(), (q, k, v), allow_unused=True)
            for g, x in ((dq, q), (dk, k), (dv, v)):
                assert g is not None and g.shape == x.shape and torch.equal(g, torch.zeros_like(g))


# ----------------------------------------------------------------------------- backward

@pytest.mark.parametrize("layout", ["mixed", "tile_edges"])
@pytest.mark.parametrize("backend", ["cpu", "triton"])
def test_gradients_match_reference(layout, backend, poison_empty):
    lq, lk = LAYOUTS[layout]
    q, k, v, cq, ck = make(lq, lk)
    grad = torch.randn_like(q)
    leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
    out = varlen_cross_attention(*leaves, cq, ck, scale=0.2, backend=backend)
    got = torch.autograd.grad(out, leaves, grad)
    leaves64 = [t.double().requires_grad_(True) for t in (q, k, v)]
    want = torch.autograd.grad(varlen_cross_attention_reference(*leaves64, cq, ck, 0.2), leaves64, grad.double(),
                               allow_unused=True)
    mags = attention_magnitudes(q, k, v, cq, ck, 0.2, grad)[1:]
    for name, g, w, m in zip("qkv", got, want, mags):
        assert torch.isfinite(g).all(), name
        w = torch.zeros_like(g, dtype=torch.float64) if w is None else w
        assert_close(g, w, torch.float32, attention_k(lq, lk, 24), scale=m, what="d" + name)
    # Keys of segments without queries, and queries of segments without keys, get zero gradients.
    dq, dk, _ = got
    for s, (nq, nk) in enumerate(zip(lq, lk)):
        if nq == 0:
            assert torch.equal(dk[ck[s]:ck[s + 1]], torch.zeros_like(dk[ck[s]:ck[s + 1]]))
        if nk == 0:
            assert torch.equal(dq[cq[s]:cq[s + 1]], torch.zeros_like(dq[cq[s]:cq[s + 1]]))


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_gradcheck_float64(backend):
    lq, lk = [3, 0, 1, 4], [2, 3, 0, 5]
    q, k, v, cq, ck = make(lq, lk, heads=2, head_dim=2, dtype=torch.float64)
    inputs = tuple(t.requires_grad_(True) for t in (q, k, v))
    assert torch.autograd.gradcheck(
        lambda q_, k_, v_: varlen_cross_attention(q_, k_, v_, cq, ck, backend=backend), inputs)


@pytest.mark.parametrize("aten_flash", [True, False], ids=["aten_flash", "explicit"])
@pytest.mark.parametrize("budget", [1 << 22, 64], ids=["one_group", "many_groups"])
def test_cpu_path_variants(aten_flash, budget, monkeypatch):
    """The CPU path with and without ATen's flash kernels, in one padded group or many."""
    from hotspot_erc.ops.cpu import varlen_attention as mod

    monkeypatch.setattr(mod, "SCORE_BUDGET", budget)
    if not aten_flash:
        monkeypatch.setattr(mod, "CPU_FLASH", None)
        monkeypatch.setattr(mod, "CPU_FLASH_BWD", None)
    lq, lk = LAYOUTS["mixed"]
    q, k, v, cq, ck = make(lq, lk, dtype=torch.float64, heads=2, head_dim=5)
    assert len(mod.length_groups(cq, ck, 2)) == (1 if budget > 64 else 4)
    leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
    grad = torch.randn_like(q)
    out = varlen_cross_attention(*leaves, cq, ck, backend="cpu")
    got = torch.autograd.grad(out, leaves, grad)
    leaves64 = [t.clone().requires_grad_(True) for t in (q, k, v)]
    ref = varlen_cross_attention_reference(*leaves64, cq, ck)
    want = torch.autograd.grad(ref, leaves64, grad)
    kk = attention_k(lq, lk, 5)
    mags = attention_magnitudes(q, k, v, cq, ck, grad=grad)
    assert_close(out, ref, torch.float64, kk, scale=mags[0], what="out")
    for name, g, w, m in zip(("dq", "dk", "dv"), got, want, mags[1:]):
        assert_close(g, w, torch.float64, kk, scale=m, what=name)
    for dtype in (torch.bfloat16, torch.float16):
        low = [t.to(dtype) for t in (q, k, v)]
        out = varlen_cross_attention(*low, cq, ck, backend="cpu")
        assert out.dtype == dtype
        torch_err = rel_err(varlen_cross_attention_reference(*low, cq, ck), ref, mags[0])
        assert rel_err(out, ref, mags[0]) <= 2 * torch_err + rel_bound(dtype, kk, accumulate=torch.float32)


def test_lse_gradient_folds_into_backward():
    """The registered op also returns the log-sum-exp; its gradient must be right too."""
    lq, lk = [3, 2, 1], [2, 0, 4]
    q, k, v, cq, ck = make(lq, lk, heads=1, head_dim=4, dtype=torch.float64)
    inputs = tuple(t.requires_grad_(True) for t in (q, k, v))

    def f(q_, k_, v_):
        out, lse, _ = _fwd_op(q_, k_, v_, cq, ck, 0.5, "cpu")
        return out, torch.where(torch.isfinite(lse), lse, 0.0)

    assert torch.autograd.gradcheck(f, inputs)


def test_triton_lse_gradient_matches_cpu():
    lq, lk = LAYOUTS["mixed"]
    q, k, v, cq, ck = make(lq, lk)
    g_out, g_lse = torch.randn_like(q), torch.randn(q.shape[:2])
    grads = {}
    for backend, dtype in (("triton", torch.float32), ("cpu", torch.float64)):
        leaves = [t.to(dtype).requires_grad_(True) for t in (q, k, v)]
        out, lse, _ = _fwd_op(*leaves, cq, ck, 0.3, backend)
        loss = (out * g_out.to(dtype)).sum() + torch.where(torch.isfinite(lse), lse * g_lse.to(dtype), 0.0).sum()
        grads[backend] = torch.autograd.grad(loss, leaves)
    mags = attention_magnitudes(q, k, v, cq, ck, 0.3, g_out, g_lse)[1:]
    for name, got, want, m in zip(("dq", "dk", "dv"), grads["triton"], grads["cpu"], mags):
        assert_close(got, want, torch.float32, attention_k(lq, lk, 24), scale=m, what=name)


# (The bitwise-reproducibility test lives in tests/test_determinism.py, GPU-marked: under the
# interpreter, which runs one program at a time, such a test cannot fail.)


# ----------------------------------------------------------------------------- baselines used by benchmarks

def test_padded_baselines_match_reference():
    lq, lk = LAYOUTS["mixed"]
    q, k, v, cq, ck = make(lq, lk)
    want = ref64(q, k, v, cq, ck)
    mag = attention_magnitudes(q, k, v, cq, ck)[0]
    for fn in (padded_attention_reference, padded_sdpa_attention):
        out = fn(q, k, v, cq, ck)
        assert torch.isfinite(out).all()
        # padded to the longest segment: k counts its keys, as attention_k does
        assert_close(out, want, torch.float32, attention_k(lq, lk, 24), scale=mag, what=fn.__name__)


@pytest.mark.parametrize("block", [16, 64])
def test_block_table_covers_every_tile_once(block):
    """Programs map to (segment, tile) in order, each tile once; the rest of the grid idles.
    300 segments (with empty ones) cross the table kernel's 128-segment chunks."""
    from hotspot_erc.kernels.varlen_attention import block_table

    lens = [5, 0, 17, 1, 33, 16, 0, 32] + torch.randint(0, 90, (292,)).tolist()
    for n in (8, len(lens)):
        table = block_table(cu(lens[:n]), block, sum(lens[:n]))
        seg, blk = table.tolist()
        want = [(s, b) for s, m in enumerate(lens[:n]) for b in range(math.ceil(m / block))]
        assert len(seg) == math.ceil(sum(lens[:n]) / block) + n
        assert [(s, b) for s, b in zip(seg, blk) if s >= 0] == want
        assert all(s == -1 for s in seg[len(want):])


# ----------------------------------------------------------------------------- fixed launch configs

def test_tile_config_table_covers_every_launch(monkeypatch):
    """Every (kernel, dtype class, head tile, table tile) a launcher can pick on a GPU has an
    entry for each arch family in the checked-in table (no first-call autotuning)."""
    tune = pytest.importorskip("benchmarks.tune_attention")
    import hotspot_erc.kernels.varlen_attention as K
    from hotspot_erc.kernels import tile_configs

    table = tile_configs.TABLE["varlen_attention"]
    assert set(table) == {"sm90", "sm80", "default"}
    wanted = set(tune.keys())
    for family, entries in table.items():
        assert {tile_configs.key(*k) for k in wanted} == set(entries), family
        for e in entries.values():
            assert e["tile"] in (16, 32, 64) and e["num_warps"] in (4, 8) and 1 <= e["num_stages"] <= 3
    # the launcher's own choices, as on a GPU (not the interpreter's single tile)
    monkeypatch.setattr(K, "_interpreting", lambda: False)
    saved = torch.backends.cuda.matmul.allow_tf32
    try:
        for tf32 in (False, True):
            torch.backends.cuda.matmul.allow_tf32 = tf32
            for dtype in (torch.float32, torch.bfloat16):
                dclass = tile_configs.dtype_class(dtype)
                for avg in (5, 100, 3000):
                    (bf, _), (bq, _), (bk, _) = K.table_layout(avg * 10, avg * 10, 10, dtype)
                    for d in (8, 24, 64, 100):
                        bd = K._head_tile(d)
                        assert ("fwd", dclass, bd, bf) in wanted and ("dq", dclass, bd, bq) in wanted
                        assert ("dkdv", dclass, bd, bk) in wanted
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved


def test_tune_attention_rewrites_only_its_family(tmp_path):
    """The generator replaces one arch family's entries between the markers and keeps the rest."""
    import shutil

    tune = pytest.importorskip("benchmarks.tune_attention")
    path = tmp_path / "tile_configs.py"
    shutil.copy(tune.TABLE_FILE, path)
    entries = {"fwd/half/d64/t32": {"tile": 32, "num_warps": 4, "num_stages": 2}}
    tune.write_table("sm90", entries, str(path))
    scope: dict = {}
    exec(path.read_text(), scope)
    table = scope["TABLE"]["varlen_attention"]
    assert table["sm90"] == entries
    from hotspot_erc.kernels import tile_configs

    assert table["sm80"] == tile_configs.TABLE["varlen_attention"]["sm80"]
    assert "def lookup" in path.read_text()  # the code around the markers is kept


def test_tile_table_has_exactly_the_generator_keys_and_candidates():
    """Every family holds one entry per launch the launchers can make, each one of the
    generator's candidates for that key (cheap: no compile)."""
    from benchmarks import tune_attention as tune
    from hotspot_erc.kernels import tile_configs

    names = {f"{k}/{c}/d{d}/t{t}": (d, t) for k, c, d, t in tune.keys()}
    assert tile_configs.GENERATED_WITH.startswith("triton ")
    for family, entries in tile_configs.TABLE["varlen_attention"].items():
        assert set(entries) == set(names), family
        for name, e in entries.items():
            d, t = names[name]
            assert (e["tile"], e["num_warps"], e["num_stages"]) in tune.candidates(t, d), (family, name)


@pytest.mark.slow
def test_tile_table_is_what_the_offline_generator_makes():
    """The checked-in entries are the offline generator's (ptxas spill reports, no timing), so
    regenerating changes nothing. A sample of keys (each compiles up to eight configs), float32
    among them, for both generated families; `python -m benchmarks.tune_attention --offline
    --arch 90 --check` checks all."""
    from benchmarks import tune_attention as tune
    from hotspot_erc.kernels import tile_configs

    if tile_configs.GENERATED_WITH != tune.generator_version():
        pytest.skip(f"table made with {tile_configs.GENERATED_WITH}, this is {tune.generator_version()} "
                    "(ptxas differs)")
    import os

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sample = "fwd/fp32/d64/t32,dkdv/fp32/d32/t32,dq/half/d64/t64"
    for arch in (90, 80):
        script = (f"import sys; sys.path.insert(0, {root!r}); from benchmarks import tune_attention as t; "
                  f"sys.exit(t.main(['--offline', '--arch', '{arch}', '--only', {sample!r}, '--check']))")
        done = run_offline_compile(script, timeout=1200)
        assert done.returncode == 0, done.stdout + done.stderr[-2000:]
        assert "3 sm" in done.stdout and "entries match the generator" in done.stdout, done.stdout


def test_fixed_configs_unless_autotune_asked(monkeypatch):
    import triton

    import hotspot_erc.kernels.varlen_attention as K
    from hotspot_erc.kernels import tile_configs

    monkeypatch.setattr(K, "_interpreting", lambda: False)
    monkeypatch.delenv("HOTSPOT_ERC_AUTOTUNE", raising=False)
    kernel, cfg = K._launch_config("dkdv", K._bwd_dkdv_kernel, torch.device("cpu"), torch.bfloat16, 128, 64)
    assert kernel is K._bwd_dkdv_kernel
    want = tile_configs.TABLE["varlen_attention"]["default"]["dkdv/half/d128/t64"]
    assert cfg == {"BLOCK_M": want["tile"], "num_warps": want["num_warps"], "num_stages": want["num_stages"]}
    monkeypatch.setenv("HOTSPOT_ERC_AUTOTUNE", "1")
    kernel, cfg = K._launch_config("dkdv", K._bwd_dkdv_kernel, torch.device("cpu"), torch.bfloat16, 128, 64)
    assert isinstance(kernel, triton.runtime.Autotuner) and cfg == {}
    assert tile_configs.lookup("varlen_attention", "fwd", "sm90", "half", 256, 64)["tile"] == 16  # unknown key
    # token counts vary per batch: not specialised (no recompile per batch size)
    for kern in (K._fwd_kernel, K._bwd_dq_kernel, K._bwd_dkdv_kernel):
        # JITFunction keeps the list as given; the interpreter's wrapper in its jit kwargs
        dns = getattr(kern, "do_not_specialize", None) or kern.kwargs.get("do_not_specialize", ())
        assert "num_tiles" in dns, kern


def test_backward_reuses_forward_tables():
    """One launch builds the forward's and both backward passes' block tables; the backward
    launches only its two attention kernels."""
    from hotspot_erc.testing import count_fwd_bwd

    lq, lk = LAYOUTS["mixed"]
    q, k, v, cq, ck = make(lq, lk)
    leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
    fwd, bwd = count_fwd_bwd(lambda *a: varlen_cross_attention(*a, cq, ck, backend="triton"), *leaves,
                             grad=torch.randn_like(q))
    assert fwd.launches == {"triton:_block_tables_kernel": 1, "triton:_fwd_kernel": 1}, fwd
    assert bwd.launches == {"triton:_bwd_dq_kernel": 1, "triton:_bwd_dkdv_kernel": 1}, bwd


# ----------------------------------------------------------------------------- bad input

def test_bad_input_messages():
    lq, lk = [2, 3], [4, 1]
    q, k, v, cq, ck = make(lq, lk)
    call = varlen_cross_attention
    with pytest.raises(ValueError, match="cu_seqlens_q must start at 0"):
        call(q, k, v, cq + 1, ck)
    with pytest.raises(ValueError, match="cu_seqlens_k must be non-decreasing"):
        call(q, k, v, cq, torch.tensor([0, 4, 3, 5]))
    with pytest.raises(ValueError, match="cu_seqlens_q must end at the token count 5"):
        call(q, k, v, torch.tensor([0, 2, 4]), ck)
    with pytest.raises(ValueError, match="same number of segments"):
        call(q, k, v, cq, torch.tensor([0, 5]))
    with pytest.raises(TypeError, match="cu_seqlens_q must have dtype"):
        call(q, k, v, cq.float(), ck)
    with pytest.raises(ValueError, match="k must be"):
        call(q, k[:, :1], v, cq, ck)
    with pytest.raises(ValueError, match="v must have k's shape"):
        call(q, k, v[:, :, :5], cq, ck)
    with pytest.raises(TypeError, match="k must have dtype"):
        call(q, k.double(), v, cq, ck)
    with pytest.raises(ValueError, match="q must have 3 dimensions"):
        call(q[0], k, v, cq, ck)
    with pytest.raises(ValueError, match="scale must be a finite number"):
        call(q, k, v, cq, ck, scale=float("nan"))
    with pytest.raises(ValueError, match="backend must be one of"):
        call(q, k, v, cq, ck, backend="cuDNN")
    with pytest.raises(ValueError, match="head dims up to 128"):
        big = make(lq, lk, head_dim=129)
        call(*big, backend="triton")
    with pytest.raises(TypeError, match="float32, float16 or bfloat16"):
        call(q.double(), k.double(), v.double(), cq, ck, backend="triton")


def test_registered_for_info():
    assert OP in _backend.OPS
    assert _backend.explain(OP, "cpu", _backend.OPS[OP]) == "cpu"


# ----------------------------------------------------------------------------- torch.library

@pytest.mark.parametrize("backend", ["cpu", "triton"])
def test_opcheck(backend):
    lq, lk = [3, 0, 5], [2, 4, 0]
    q, k, v, cq, ck = make(lq, lk, heads=2, head_dim=16)
    q = q.transpose(0, 1).contiguous().transpose(0, 1)  # head-major storage: fake and real strides must agree
    q.requires_grad_(True), k.requires_grad_(True), v.requires_grad_(True)
    torch.library.opcheck(_fwd_op, (q, k, v, cq, ck, 0.25, backend))
    out, lse, tables = _fwd_op(q, k, v, cq, ck, 0.25, backend)
    assert (tables.numel() > 0) == (backend == "triton")
    grad_lse = torch.where(torch.isfinite(lse), torch.randn_like(lse), 0.0)
    for g_lse in (None, grad_lse):
        for tbl in (None, tables):  # the forward's tables, or rebuilt
            torch.library.opcheck(_bwd_op, (torch.randn_like(out), q.detach(), k.detach(), v.detach(),
                                            out.detach(), lse.detach(), g_lse, cq, ck, 0.25, backend, tbl))


@pytest.mark.parametrize("backend", [None, "triton"])
def test_torch_compile_fullgraph(backend):
    lq, lk = LAYOUTS["mixed"]
    q, k, v, cq, ck = make(lq, lk)
    leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]

    def f(q_, k_, v_):
        return varlen_cross_attention(q_, k_, v_, cq, ck, backend=backend).square().sum()

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    loss = compiled(*leaves)
    got = torch.autograd.grad(loss, leaves)
    leaves2 = [t.clone().requires_grad_(True) for t in (q, k, v)]
    want = torch.autograd.grad(f(*leaves2), leaves2)
    # Two float32 computations. The loss sums the N·H·Dh squares (positive: ‖loss‖ is Σ|terms|),
    # each from an attention output: two stages, their errors add. Its gradients are attention's
    # with dO = 2·out.
    kk = attention_k(lq, lk, q.shape[2])
    assert_close(loss, f(q, k, v), torch.float32, max(q.numel(), kk), c=2 * C, what="loss")
    mags = attention_magnitudes(q, k, v, cq, ck, grad=2 * ref64(q, k, v, cq, ck))[1:]
    for name, g, w, m in zip(("dq", "dk", "dv"), got, want, mags):
        assert_close(g, w, torch.float32, kk, scale=m, what=name)


# ----------------------------------------------------------------------------- GPU

@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_gpu_conversation_shapes(dtype):
    gen = torch.Generator().manual_seed(seed_for(1))
    lq = torch.randint(0, 300, (40,), generator=gen).tolist()
    lk = torch.randint(0, 300, (40,), generator=gen).tolist()
    q, k, v, cq, ck = make(lq, lk, heads=4, head_dim=64, dtype=dtype, device="cuda")
    grad = torch.randn_like(q)
    leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
    out = varlen_cross_attention(*leaves, cq, ck)
    got = torch.autograd.grad(out, leaves, grad)
    leaves64 = [t.double().requires_grad_(True) for t in (q, k, v)]
    ref = varlen_cross_attention_reference(*leaves64, cq, ck)
    want = torch.autograd.grad(ref, leaves64, grad.double())
    low = [t.detach().requires_grad_(True) for t in (q, k, v)]
    torch_out = padded_sdpa_attention(*low, cq, ck)
    torch_grads = torch.autograd.grad(torch_out, low, grad)
    # FlashAttention's rule, errors against Σ|terms|, the dtype's rounding bound as the floor
    # (float32 follows torch's matmul setting: TF32 products only where torch allows them)
    unit = "tf32" if dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32 else dtype
    floor = rel_bound(unit, attention_k(lq, lk, 64), accumulate=accumulation(dtype))
    mags = attention_magnitudes(q, k, v, cq, ck, grad=grad)
    assert rel_err(out, ref, mags[0]) <= 2 * rel_err(torch_out, ref, mags[0]) + floor
    for g, w, t, m in zip(got, want, torch_grads, mags[1:]):
        assert torch.isfinite(g).all()
        assert rel_err(g, w, m) <= 2 * rel_err(t, w, m) + floor


@pytest.mark.gpu
def test_gpu_no_host_sync():
    lq, lk = [120, 0, 33, 257], [64, 9, 0, 300]
    q, k, v, cq, ck = make(lq, lk, heads=4, head_dim=64, dtype=torch.bfloat16, device="cuda")
    leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
    varlen_cross_attention(*leaves, cq, ck).sum().backward()  # compile first
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = varlen_cross_attention(*leaves, cq, ck)
        torch.autograd.grad(out, leaves, torch.ones_like(out))
    finally:
        torch.cuda.set_sync_debug_mode("default")


# ----------------------------------------------------------------------------- sm_90 compile, no GPU

# Compiles every kernel for sm_90 (PTX and cubin through Triton's bundled ptxas) in a fresh
# interpreter without TRITON_INTERPRET, at the launchers' largest table tiles and the larger
# autotuned tile: catches code the interpreter accepts but the GPU compiler rejects (tl.dot shapes
# and operand dtypes, constexpr misuse) on machines without a GPU.
_SM90_COMPILE = r'''
import os
os.environ.pop("TRITON_INTERPRET", None)
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
import hotspot_erc.kernels.varlen_attention as K

def build(kernel, dtype, consts, num_warps):
    triton.compile(ASTSource(fn=kernel, signature=K.offline_signature(kernel, dtype), constexprs=consts),
                   target=GPUTarget("cuda", 90, 128), options={"num_warps": num_warps, "num_stages": 3})

for dtype, prec, fwd_m, dkdv_n in (("bf16", "tf32", 128, 64), ("fp32", "ieee", 64, 32)):
    common = dict(BLOCK_D=128, DOT_F32=dtype == "fp32", PRECISION=prec)
    build(K._fwd_kernel, dtype, dict(BLOCK_M=fwd_m, BLOCK_N=64, **common), 8)
    build(K._bwd_dq_kernel, dtype, dict(BLOCK_M=64, BLOCK_N=64, HAS_DLSE=True, **common), 8)
    build(K._bwd_dkdv_kernel, dtype, dict(BLOCK_M=64, BLOCK_N=dkdv_n, **common), 8)
build(K._block_tables_kernel, "i32", dict(BLOCK_P=K._TABLE_ROWS, BLOCK_S=K._TABLE_COLS), 4)
print("compiled")
'''


def test_triton_kernels_compile_for_sm90():
    assert_compiles_offline(_SM90_COMPILE)
