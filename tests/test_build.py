"""The package, its compiled extension and `info` are wired correctly."""
import os
import subprocess
import sys

import pytest
import torch
from tolerance import assert_close

import hotspot_erc
from hotspot_erc import _ext
from hotspot_erc.ops import _backend


def test_extension_loads():
    mod, why = _ext.load()
    assert mod is not None, why
    assert mod.torch_version.split("+")[0] == torch.__version__.split("+")[0]


def _compiled_ops():
    _ext.load()
    names = [n for n in torch._C._dispatch_get_all_op_names() if n.startswith("hotspot_erc::")]
    return [n for n in names if torch._C._dispatch_has_kernel_for_dispatch_key(n, "CPU")
            and not torch._C._dispatch_has_kernel_for_dispatch_key(n, "CompositeExplicitAutograd")]


# Compiled for the CPU only, by design: on CUDA the same computation is a Triton kernel
# (kernels/gather_segment_matmul.py, reached through ops.relational.relational_conv;
# kernels/graph_attention.py, reached through ops.graph_attention).
CPU_ONLY_OPS = {"hotspot_erc::relational_conv", "hotspot_erc::relational_conv_backward",
                "hotspot_erc::graph_attention_forward", "hotspot_erc::graph_attention_backward"}


def test_cuda_sources_compiled_when_torch_has_cuda():
    """A CUDA syntax error must fail CI even without a GPU: every compiled op has a CUDA kernel."""
    if not torch.cuda._is_compiled():
        pytest.skip("torch is a CPU-only build: CUDA sources are not expected to be compiled")
    info = _ext.build_info()
    if info.get("cuda_reason", "").startswith("HOTSPOT_ERC_FORCE_CPU"):
        pytest.skip("built with HOTSPOT_ERC_FORCE_CPU=1")
    assert _ext.cuda_built(), _ext.cuda_unavailable_reason()
    ops = _compiled_ops()
    assert "hotspot_erc::relational_aggregate" in ops
    missing = [n for n in ops if not torch._C._dispatch_has_kernel_for_dispatch_key(n, "CUDA")
               and n not in CPU_ONLY_OPS]
    assert not missing, f"ops with a compiled CPU kernel but no CUDA kernel: {missing}"


def test_kernels_package_installed():
    import hotspot_erc.kernels as k

    assert k.__name__ == "hotspot_erc.kernels"


def test_kernels_import_nothing_above_them():
    """kernels/ sits below ops/: relative imports only, nothing from the rest of the package
    (ops reads the interpreter switch from kernels/_launch.py, never the other way round)."""
    import ast

    root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "kernels")
    bad = []
    for name in sorted(os.listdir(root)):
        if not name.endswith(".py"):
            continue
        tree = ast.parse(open(os.path.join(root, name)).read())
        for node in ast.walk(tree):
            mods = []
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                mods = [node.module or ""]
            bad += [f"{name}:{node.lineno} imports {m}" for m in mods if m.split(".")[0] == "hotspot_erc"]
    assert not bad, bad


def test_benchmark_readme_does_not_import_run_all():
    """run_all regenerates the README through readme; readme reads results only (no cycle)."""
    import ast

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "readme.py")
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.ImportFrom):
            names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
            assert "benchmarks.run_all" not in names, f"benchmarks/readme.py:{node.lineno} imports run_all"


def test_info_runs():
    out = subprocess.run([sys.executable, "-m", "hotspot_erc.info"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "torch" in out.stdout and "hotspot_erc._C" in out.stdout
    assert "loaded" in out.stdout


def test_backend_choice_errors():
    dev = torch.device("cpu")
    supports = {"cuda": lambda d: _backend.cuda_ext_reason("relational_aggregate"), "cpu": lambda d: ""}
    assert _backend.choose("x", None, dev, supports) == "cpu"
    assert _backend.choose("x", "reference", dev, supports) == "reference"
    with pytest.raises(ValueError, match="backend must be one of"):
        _backend.choose("x", "tpu", dev, supports)
    with pytest.raises(_backend.BackendUnavailable, match="no 'triton' backend"):
        _backend.choose("x", "triton", dev, supports)
    with pytest.raises(_backend.BackendUnavailable, match="needs CUDA tensors"):
        _backend.choose("x", "cuda", dev, supports)


def test_stale_extension_message(monkeypatch):
    _ext.load.cache_clear()
    try:
        monkeypatch.setattr(_ext, "build_info", lambda: {"torch_version": "1.0.0"})
        def fail():
            raise ImportError("undefined symbol: _ZN3c10...")

        monkeypatch.setattr(_ext, "_import_extension", fail)
        mod, why = _ext.load()
        assert mod is None
        assert "1.0.0" in why and torch.__version__ in why
    finally:
        _ext.load.cache_clear()
        monkeypatch.undo()
        _ext.load()


def test_version():
    assert hotspot_erc.__version__


def test_use_backend_overrides_automatic_choice():
    dev = torch.device("cpu")
    supports = {"triton": lambda d: "", "cpu": lambda d: ""}
    with _backend.use_backend("reference"):
        assert _backend.choose("x", None, dev, supports) == "reference"
        assert _backend.choose("x", "cpu", dev, supports) == "cpu"  # explicit wins
        with _backend.use_backend("cuda"):  # op lacks it: automatic choice
            assert _backend.choose("x", None, dev, supports) == "cpu"
    assert _backend.choose("x", None, dev, supports) == "cpu"
    with pytest.raises(ValueError, match="backend must be one of"):
        _backend.use_backend("gpu")


def test_use_backend_reference_matches_default_path():
    from hotspot_erc.ops import hotspot_gate, use_backend
    from hotspot_erc.reference import hotspot_gate_reference

    c, h = torch.randn(9, 8, dtype=torch.float64), torch.randn(9, 8, dtype=torch.float64)
    w, b = torch.randn(16, 8, dtype=torch.float64), torch.randn(8, dtype=torch.float64)
    with use_backend("reference"):
        out = hotspot_gate(c, h, w, b)
    # float64; the gate's logits are 16-long products ([c, h] against w): k = 16. out = c + α (h - c)
    # with α in (0, 1) may cancel: scale |c| + |h|, which bounds its terms
    assert_close(out, hotspot_gate_reference(c, h, w, b), torch.float64, 16, scale=c.abs() + h.abs(),
                 what="reference backend")


def test_has_kernel_for_unknown_op_is_false():
    assert not _ext.has_kernel("no_such_op", "CPU")
    assert _ext.has_kernel("relational_aggregate", "CPU")


# ----------------------------------------------------------------------------- make gpu-check
# The script runs on a GPU machine; its planning, budgets and cut-short logic are tested here.

def _gpu_check():
    return pytest.importorskip("benchmarks.gpu_check")


def test_gpu_check_dry_run_plans_every_stage_within_eight_minutes():
    gc = _gpu_check()
    lines = []
    assert gc.main(["--dry-run", "--no-readme"], log=lambda *a, **k: lines.append(" ".join(map(str, a)))) == 0
    text = "\n".join(lines)
    for stage in ("build ", "build-check", "tests ", "bench "):
        assert stage in text, text
    assert "--no-build-isolation --no-deps -e ." in text and "-m gpu" in text and "--no-readme" in text
    steps = gc.plan((9, 0), gc.DEFAULT_BUDGETS)
    assert sum(s.budget_s for s in steps) <= gc.TOTAL_BUDGET_S == 480
    assert [s.name for s in steps] == ["build", "build-check", "tests", "bench"]
    assert steps[0].env["TORCH_CUDA_ARCH_LIST"] == "9.0"  # the present GPU's arch only
    assert gc.arch_list((8, 6)) == "8.6"
    assert all(s.env.get("TRITON_INTERPRET", "unset") is None for s in steps)  # real kernels, not the interpreter
    # over-budget plans are refused, not run
    assert gc.main(["--dry-run", "--budget-tests", "400"], log=lambda *a, **k: None) == 2


def test_gpu_check_cuts_an_overrunning_stage_short():
    import sys
    import time

    gc = _gpu_check()
    stage = gc.Stage("slow", [sys.executable, "-c", "import time; print('started', flush=True); time.sleep(60)"], 2.0)
    t0 = time.time()
    logged = []
    r = gc.run_stage(stage, log=lambda *a, **k: logged.append(" ".join(map(str, a))))
    assert time.time() - t0 < 20
    assert r.status == "cut short" and "rerun alone with" in r.detail and "budget 2 s" in r.detail
    ok = gc.run_stage(gc.Stage("ok", [sys.executable, "-c", "print('3 passed, 1 skipped in 2.00s')"], 30.0),
                      log=lambda *a, **k: None)
    assert ok.status == "passed"
    bad = gc.run_stage(gc.Stage("tests", [sys.executable, "-c", "print('== 1 failed, 2 passed in 1s =='); raise SystemExit(1)"],
                                30.0), log=lambda *a, **k: None)
    assert bad.status == "failed" and bad.detail == "1 failed, 2 passed in 1s"


def test_gpu_check_without_gpu_says_so():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    gc = _gpu_check()
    msgs = []
    assert gc.main([], log=lambda *a, **k: msgs.append(" ".join(map(str, a)))) == 2
    assert "needs a CUDA GPU" in msgs[0]


def test_gpu_check_records_stages_in_the_results_json(tmp_path, monkeypatch):
    import json

    gc = _gpu_check()
    monkeypatch.setattr(gc, "RESULTS_DIR", str(tmp_path))
    path = gc._record([gc.StageResult("tests", "cut short", 160.2, 160, "cut short after 160 s")],
                      {"name": "NVIDIA H200", "capability": [9, 0]})
    assert path.startswith(str(tmp_path)) and "nvidia-h200-" in path
    data = json.load(open(path))
    assert data["gpu_check"]["stages"]["tests"]["status"] == "cut short"
