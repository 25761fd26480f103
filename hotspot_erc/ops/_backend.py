"""Backend choice and argument checks shared by every functional op.

Every op in :mod:`hotspot_erc.ops` takes ``backend=None``: ``None`` picks the fastest backend for
the tensors' device; ``"triton"``, ``"cuda"``, ``"cpu"`` or ``"reference"`` force one. Forcing a
backend that cannot run raises :class:`BackendUnavailable` naming the reason.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from hotspot_erc import _ext
from hotspot_erc.kernels._launch import triton_interpret  # noqa: F401  (the switch lives with the kernels)

BACKENDS = ("triton", "cuda", "cpu", "reference")


class BackendUnavailable(RuntimeError):
    """A forced backend cannot run here; the message says why."""


_TRITON_IMPORT_ERROR: str | None = None


def _triton_import_error() -> str:
    # A plain module-level memo rather than functools.lru_cache: Dynamo warns when it traces
    # through lru_cache wrappers, and choose() runs inside compiled regions.
    global _TRITON_IMPORT_ERROR
    if _TRITON_IMPORT_ERROR is None:
        try:
            import triton  # noqa: F401
            import triton.language  # noqa: F401

            _TRITON_IMPORT_ERROR = ""
        except Exception as exc:  # ImportError, or a broken install
            _TRITON_IMPORT_ERROR = f"Triton is not importable ({exc})"
    return _TRITON_IMPORT_ERROR


def triton_reason(device: torch.device) -> str:
    """Empty when Triton kernels can run on ``device``; otherwise why not."""
    err = _triton_import_error()
    if err:
        return err
    if device.type == "cuda":
        if triton_interpret():
            return ""  # interpreted, but runs
        return ""
    if device.type == "cpu":
        if triton_interpret():
            return ""
        return ("Triton runs on CPU tensors only through its interpreter: set TRITON_INTERPRET=1 "
                "before hotspot_erc is imported")
    return f"Triton does not support device type {device.type!r}"


def ext_reason(op: str, dispatch_key: str) -> str:
    """Empty when the compiled kernel of ``op`` is registered for ``dispatch_key`` ("CPU" or
    "CUDA"); otherwise why not."""
    why = _ext.cuda_unavailable_reason() if dispatch_key == "CUDA" else _ext.unavailable_reason()
    if why:
        return why
    if not _ext.has_kernel(op, dispatch_key):
        kind = "CUDA" if dispatch_key == "CUDA" else "compiled CPU"
        return f"hotspot_erc::{op} has no {kind} kernel in this build"
    return ""


def cuda_ext_reason(op: str) -> str:
    return ext_reason(op, "CUDA")


def cpu_ext_reason(op: str) -> str:
    return ext_reason(op, "CPU")


# ----------------------------------------------------------------------------- capabilities

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
INDEX_DTYPES = (torch.int32, torch.int64)
HALF_AND_SINGLE = (torch.float32, torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class Capability:
    """What one backend of one op takes, beyond being available at all (which the op's
    ``supports`` callables report): the float dtypes it computes in, the device types its code
    runs on, and the largest head dim (None: any)."""
    dtypes: tuple = FLOAT_DTYPES
    devices: tuple = ("cpu",)
    max_head_dim: int | None = None


# The one table :func:`choose` consults. The Triton kernels have no float64 path; the ATen
# compositions of hotspot_gate and grouped_expert_linear are device-generic, so float64 CUDA
# tensors land there, while the attention's CPU path groups segments on the host (CPU only) and
# float64 CUDA attention goes to the reference. Triton on CPU tensors means the interpreter.
CAPABILITIES: dict[str, dict[str, Capability]] = {
    "hotspot_gate": {"triton": Capability(HALF_AND_SINGLE, ("cuda", "cpu")),
                     "cpu": Capability(FLOAT_DTYPES, ("cpu", "cuda"))},
    "grouped_expert_linear": {"triton": Capability(HALF_AND_SINGLE, ("cuda", "cpu")),
                              "cpu": Capability(FLOAT_DTYPES, ("cpu", "cuda"))},
    "varlen_cross_attention": {"triton": Capability(HALF_AND_SINGLE, ("cuda", "cpu"), max_head_dim=128),
                               "cpu": Capability(FLOAT_DTYPES, ("cpu",))},
    "relational_aggregate": {"cuda": Capability(FLOAT_DTYPES, ("cuda",)),
                             "cpu": Capability(FLOAT_DTYPES, ("cpu",))},
    "graph_attention": {"triton": Capability(HALF_AND_SINGLE, ("cuda", "cpu")),
                        "cpu": Capability(FLOAT_DTYPES, ("cpu",))},
    "segment_matmul": {"triton": Capability(FLOAT_DTYPES, ("cuda", "cpu")),
                       "cpu": Capability(FLOAT_DTYPES, ("cpu",))},
}
# A backend missing from the table: any float dtype, on the device its name says.
_DEFAULT_DEVICES = {"triton": ("cuda", "cpu"), "cuda": ("cuda",), "cpu": ("cpu",)}


class UnsupportedDtype(BackendUnavailable, TypeError):
    """A forced backend does not compute in the tensors' dtype."""


class UnsupportedShape(BackendUnavailable, ValueError):
    """A forced backend does not take the tensors' shape (e.g. a head dim above its limit)."""


def capability(op: str, backend: str) -> Capability:
    cap = CAPABILITIES.get(op, {}).get(backend)
    return cap if cap is not None else Capability(FLOAT_DTYPES, _DEFAULT_DEVICES.get(backend, ("cpu", "cuda")))


def _dtype_names(dtypes) -> str:
    names = [str(d).replace("torch.", "") for d in dtypes]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def input_reason(op: str, backend: str, dtype: torch.dtype | None = None, head_dim: int | None = None):
    """(exception class, reason) when ``backend`` of ``op`` cannot take these inputs, else None."""
    cap = capability(op, backend)
    if dtype is not None and dtype not in cap.dtypes:
        return UnsupportedDtype, (f"takes {_dtype_names(cap.dtypes)} tensors, got "
                                  f"{str(dtype).replace('torch.', '')}")
    if head_dim is not None and cap.max_head_dim is not None and head_dim > cap.max_head_dim:
        return UnsupportedShape, f"supports head dims up to {cap.max_head_dim}, got {head_dim}"
    return None


def _auto(op, device, supports, dtype, head_dim) -> str:
    # Device-native backends first (Triton or the CUDA kernels on CUDA, the CPU kernels on CPU),
    # then device-generic ones that run there too, each tier in the op's order of preference.
    # Never the interpreter: it is for tests.
    native = ("triton", "cuda") if device.type == "cuda" else ("cpu",)
    for tier in (True, False):
        for name in supports:
            if (name in native) != tier or device.type not in capability(op, name).devices:
                continue
            if name == "triton" and (device.type != "cuda" or triton_interpret()):
                continue
            if input_reason(op, name, dtype, head_dim) is None and not supports[name](device):
                return name
    return "reference"


def choose(op: str, backend: str | None, device: torch.device, supports: dict[str, object],
           dtype: torch.dtype | None = None, head_dim: int | None = None) -> str:
    """Resolve ``backend`` for ``op`` on ``device`` (and, where given, the inputs' ``dtype`` and
    ``head_dim``), by one rule for every op.

    ``supports`` maps each backend the op implements to a callable ``device -> reason`` (empty
    string when usable) in order of preference; ``"reference"`` is always usable. What each
    backend takes is :data:`CAPABILITIES`. ``backend=None`` picks the first device-native backend
    that is available and takes the inputs, else a device-generic one that does, else the
    reference. A forced backend that cannot run raises :class:`BackendUnavailable` (its
    subclasses :class:`UnsupportedDtype` / :class:`UnsupportedShape`, also ``TypeError`` /
    ``ValueError``, when the inputs are the reason), naming what it takes and what can run.
    """
    if backend is None and _OVERRIDE is not None and (_OVERRIDE == "reference" or _OVERRIDE in supports):
        # use_backend(): a backend that cannot take these inputs leaves the choice automatic.
        if _OVERRIDE == "reference" or input_reason(op, _OVERRIDE, dtype, head_dim) is None:
            backend = _OVERRIDE
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS} or None, got {backend!r}")
    if backend is None:
        return _auto(op, device, supports, dtype, head_dim)
    if backend == "reference":
        return backend
    if backend not in supports:
        raise BackendUnavailable(f"{op} has no {backend!r} backend (it has {tuple(supports)})")
    devices = capability(op, backend).devices
    why = supports[backend](device)
    if device.type not in devices:
        why = why or (f"backend={backend!r} needs {' or '.join(d.upper() for d in devices)} tensors, "
                      f"got {device.type} tensors")
    if why:
        raise BackendUnavailable(f"{op}: backend {backend!r} is unavailable: {why}")
    bad = input_reason(op, backend, dtype, head_dim)
    if bad is not None:
        cls, why = bad
        others = [n for n in supports if n != backend and device.type in capability(op, n).devices
                  and input_reason(op, n, dtype, head_dim) is None] + ["reference"]
        raise cls(f"{op}: backend {backend!r} {why}; use " + " or ".join(f"backend={n!r}" for n in others))
    return backend


def explain(op: str, device_type: str, supports: dict[str, object]) -> str:
    """One line for `hotspot_erc.info`: the backend chosen automatically or why each fails."""
    dev = torch.device(device_type)
    reasons = []
    native = ("triton", "cuda") if device_type == "cuda" else ("cpu",)
    for name in supports:
        if name not in native:
            continue
        why = supports[name](dev)
        if not why:
            return name
        reasons.append(f"{name}: {why}")
    return "reference" + (f"  ({'; '.join(reasons)})" if reasons else "")


# ----------------------------------------------------------------------------- global override

_OVERRIDE: str | None = None


class use_backend:  # noqa: N801  (used like a function, as a context manager)
    """Make ``backend=None`` mean ``name`` for every op inside the block (ops that lack that
    backend keep choosing automatically; ``"reference"`` exists for all). An explicit ``backend=``
    argument still wins. Used to run a whole model on the reference path, e.g. in benchmarks::

        with hotspot_erc.ops.use_backend("reference"):
            loss = model(batch).logits.sum()
    """

    def __init__(self, name: str | None):
        if name is not None and name not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS} or None, got {name!r}")
        self.name = name

    def __enter__(self):
        global _OVERRIDE
        self._saved, _OVERRIDE = _OVERRIDE, self.name
        return self

    def __exit__(self, *exc):
        global _OVERRIDE
        _OVERRIDE = self._saved
        return False


# ----------------------------------------------------------------------------- argument checks

def check_tensor(name: str, t, *, ndim: int | None = None, dtypes=None, device=None) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if ndim is not None and t.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(t.shape)}")
    if dtypes is not None and t.dtype not in dtypes:
        names = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        raise TypeError(f"{name} must have dtype in ({names}), got {str(t.dtype).replace('torch.', '')}")
    if device is not None and t.device != device:
        raise ValueError(f"{name} must be on {device}, got {t.device}")


def check_qkv(q, k, v, key_rows: str = "Nk", head_dim: str = "Dh") -> None:
    """q [Nq, H, Dh] in a float dtype; k and v with q's dtype, device, heads and head dim, and one
    shape between them (the attention ops' shared checks; ``key_rows`` and ``head_dim`` name the
    dimensions the way the op's own docs do)."""
    check_tensor("q", q, ndim=3, dtypes=FLOAT_DTYPES)
    check_tensor("k", k, ndim=3, dtypes=(q.dtype,), device=q.device)
    check_tensor("v", v, ndim=3, dtypes=(q.dtype,), device=q.device)
    if k.shape[1:] != q.shape[1:]:
        raise ValueError(f"k must be [{key_rows}, H, {head_dim}] with q's H and {head_dim} {tuple(q.shape[1:])}, got "
                         f"shape {tuple(k.shape)}")
    if v.shape != k.shape:
        raise ValueError(f"v must have k's shape {tuple(k.shape)}, got {tuple(v.shape)}")


def check_cu_seqlens(name: str, cu: torch.Tensor, total: int | None, device) -> None:
    """Shape/dtype/device checks (no sync). Value checks that need the host are done only when
    the tensor is on the CPU, or under :func:`validate_values`."""
    check_tensor(name, cu, ndim=1, dtypes=INDEX_DTYPES, device=device)
    if cu.numel() < 1:
        raise ValueError(f"{name} must have at least one element (shape [S+1]), got shape {tuple(cu.shape)}")
    if torch.compiler.is_compiling():
        return  # value reads would break the graph; the eager call checked them
    if cu.device.type == "cpu" or validate_values():
        if int(cu[0]) != 0:
            raise ValueError(f"{name} must start at 0, got {int(cu[0])}")
        if cu.numel() > 1 and bool((cu[1:] < cu[:-1]).any()):
            raise ValueError(f"{name} must be non-decreasing")
        if total is not None and int(cu[-1]) != total:
            raise ValueError(f"{name} must end at the token count {total}, got {int(cu[-1])}")


def validate_values() -> bool:
    """Checks that read tensor values on GPU synchronise; they run only when
    HOTSPOT_ERC_VALIDATE=1 (CPU tensors are always checked: that costs no sync)."""
    return os.environ.get("HOTSPOT_ERC_VALIDATE", "0") not in ("", "0")


# ----------------------------------------------------------------------------- op registry

OPS: dict[str, dict[str, object]] = {}


def register(op: str, supports: dict[str, object]) -> dict[str, object]:
    """Declare ``op``'s backends (see :func:`choose`) so `hotspot_erc.info` can report them."""
    OPS[op] = supports
    return supports
