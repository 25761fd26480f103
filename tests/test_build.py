"""The package, its compiled extension and `info` are wired correctly."""
import subprocess
import sys

import pytest
import torch

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
    missing = [n for n in ops if not torch._C._dispatch_has_kernel_for_dispatch_key(n, "CUDA")]
    assert not missing, f"ops with a compiled CPU kernel but no CUDA kernel: {missing}"


def test_kernels_package_installed():
    import hotspot_erc.kernels as k

    assert k.__name__ == "hotspot_erc.kernels"


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
    torch.testing.assert_close(out, hotspot_gate_reference(c, h, w, b))


def test_has_kernel_for_unknown_op_is_false():
    assert not _ext.has_kernel("no_such_op", "CPU")
    assert _ext.has_kernel("relational_aggregate", "CPU")
