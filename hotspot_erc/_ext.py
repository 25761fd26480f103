"""Loading of the compiled extension ``hotspot_erc._C``, with reasons when it is unavailable."""
from __future__ import annotations

import functools
import json
import os

import torch

_PKG_DIR = os.path.dirname(os.path.abspath(__file__))


def build_info() -> dict:
    """Facts setup.py recorded when the extension was (or failed to be) built."""
    try:
        with open(os.path.join(_PKG_DIR, "_build_info.json")) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return {}


def _same_torch(a: str | None, b: str) -> bool:
    # Local tags (+cu130) and patch level both matter for ABI: compare the full release.
    return a is not None and a.split("+")[0] == b.split("+")[0]


def _import_extension():
    from hotspot_erc import _C  # loading registers the ops with the dispatcher

    return _C


@functools.lru_cache(maxsize=None)
def load() -> tuple[object | None, str]:
    """Import ``hotspot_erc._C`` once; returns (module or None, reason it is unavailable)."""
    info = build_info()
    built_for = info.get("torch_version")
    try:
        _C = _import_extension()
    except ImportError as exc:
        if built_for and not _same_torch(built_for, torch.__version__):
            return None, (
                f"hotspot_erc._C was built for torch {built_for} but torch {torch.__version__} is "
                f"installed; rebuild with `pip install --no-build-isolation -e .` ({exc})"
            )
        if info.get("build_error"):
            return None, f"the extension failed to build: {info['build_error'][-300:]}"
        return None, f"hotspot_erc._C is not built ({exc}); run `make setup`"
    if not _same_torch(_C.torch_version, torch.__version__):
        return None, (
            f"hotspot_erc._C was built for torch {_C.torch_version} but torch {torch.__version__} "
            "is installed; rebuild with `pip install --no-build-isolation -e .`"
        )
    return _C, ""


def available() -> bool:
    return load()[0] is not None


def unavailable_reason() -> str:
    return load()[1]


def cuda_built() -> bool:
    mod = load()[0]
    return bool(mod is not None and getattr(mod, "with_cuda", 0))


def cuda_unavailable_reason() -> str:
    mod, why = load()
    if mod is None:
        return why
    if not getattr(mod, "with_cuda", 0):
        return "hotspot_erc._C was built without CUDA: " + (
            build_info().get("cuda_reason") or "unknown reason"
        )
    return ""


def has_kernel(op: str, dispatch_key: str) -> bool:
    """Whether ``hotspot_erc::<op>`` has a kernel for ``dispatch_key`` (e.g. "CPU", "CUDA")."""
    load()
    # Called on every op call through _backend.choose: ask the dispatcher directly (microseconds)
    # rather than listing every registered op name (milliseconds); it raises for unknown ops.
    try:
        return torch._C._dispatch_has_kernel_for_dispatch_key(f"hotspot_erc::{op}", dispatch_key)
    except RuntimeError:  # "operator ... does not exist"
        return False
