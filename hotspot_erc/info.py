"""`python -m hotspot_erc.info`: versions, build facts and which backend each op uses."""
from __future__ import annotations

import importlib
import platform
import shutil
import subprocess
import sys

import torch

from hotspot_erc import _ext
from hotspot_erc.ops import _backend

# Modules that register ops with hotspot_erc.ops._backend.register when imported.
_OP_MODULES = ("hotspot_erc.ops",)


def _cmd_version(cmd: list[str]) -> str:
    exe = shutil.which(cmd[0])
    if exe is None:
        return "not found"
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout
    except Exception as exc:
        return f"error ({exc})"
    lines = [ln for ln in out.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "unknown"


def _first_line(cmd: list[str]) -> str:
    if shutil.which(cmd[0]) is None:
        return "not found"
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout
    except Exception as exc:
        return f"error ({exc})"
    return out.strip().splitlines()[0] if out.strip() else "unknown"


def report() -> str:
    import hotspot_erc

    for mod in _OP_MODULES:
        importlib.import_module(mod)
    lines = []
    add = lines.append
    add(f"hotspot-erc     {hotspot_erc.__version__}")
    add(f"python          {platform.python_version()} ({sys.executable})")
    add(f"torch           {torch.__version__} (CUDA build: {torch.version.cuda or 'no'})")
    if torch.cuda.is_available():
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        add(f"CUDA devices    {names}")
    else:
        why = "torch is a CPU build" if not torch.cuda._is_compiled() else "no CUDA driver/device"
        add(f"CUDA devices    none ({why})")
    try:
        import triton

        add(f"triton          {triton.__version__}" + ("  [TRITON_INTERPRET=1]" if _backend.triton_interpret() else ""))
    except Exception as exc:
        add(f"triton          unavailable ({exc})")
    add(f"c++ compiler    {_first_line(['c++', '--version'])}")
    add(f"nvcc            {_cmd_version(['nvcc', '--version'])}")
    info = _ext.build_info()
    mod, why = _ext.load()
    if mod is None:
        add(f"hotspot_erc._C  not loaded: {why}")
    else:
        devs = "CPU" + (", CUDA" if getattr(mod, "with_cuda", 0) else "")
        add(f"hotspot_erc._C  loaded (built for torch {mod.torch_version}; kernels for {devs})")
        if not getattr(mod, "with_cuda", 0):
            add(f"                CUDA kernels not built: {info.get('cuda_reason', 'unknown')}")
        elif info.get("cuda_arch_list"):
            add(f"                CUDA archs {info['cuda_arch_list']}")
    add("")
    add(f"{'op':28s} {'CPU tensors':28s} CUDA tensors")
    for op, supports in sorted(_backend.OPS.items()):
        cpu = _backend.explain(op, "cpu", supports)
        if torch.cuda.is_available():
            cuda = _backend.explain(op, "cuda", supports)
        else:
            cuda = "-  (no CUDA device)"
            reasons = []
            for name in ("triton", "cuda"):
                if name in supports:
                    r = _backend.cuda_ext_reason(op) if name == "cuda" else _backend.triton_reason(torch.device("cuda"))
                    ok = "kernel compiled" if name == "cuda" else "importable"
                    reasons.append(f"{name}: {ok if not r else r}")
            if reasons:
                cuda += "  " + "; ".join(reasons)
        add(f"{op:28s} {cpu:28s} {cuda}")
    add("")
    add("what each backend takes (ops/_backend.py CAPABILITIES; backend=None passes over one the inputs do not fit):")
    for op, caps in sorted(_backend.CAPABILITIES.items()):
        add(f"  {op:26s} " + "; ".join(f"{name}: {_capability_text(name, cap)}" for name, cap in caps.items()))
    return "\n".join(lines)


def _capability_text(name: str, cap) -> str:
    dtypes = ("any float dtype" if set(cap.dtypes) == set(_backend.FLOAT_DTYPES)
              else ", ".join(str(d).replace("torch.", "") for d in cap.dtypes))
    # Triton on CPU tensors is its interpreter (tests), never an automatic choice.
    devices = [d.upper() + (" (interpreter)" if name == "triton" and d == "cpu" else "") for d in cap.devices]
    text = f"{dtypes} on {'/'.join(devices)}"
    return text + (f", head dim <= {cap.max_head_dim}" if cap.max_head_dim is not None else "")


def main() -> int:
    print(report())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
