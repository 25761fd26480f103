"""Helpers shared by the Triton launchers: the interpreter switch, device placement, the
``tl.dot`` input precision and power-of-two tile sizes.

This package imports nothing from the rest of :mod:`hotspot_erc` (the ops layer sits above it and
reads :func:`triton_interpret` from here)."""
from __future__ import annotations

import functools
import os

import torch
import triton


def triton_interpret() -> bool:
    """Whether Triton runs through its CPU interpreter (``TRITON_INTERPRET=1``). Triton reads the
    variable when a kernel is *defined* (at import), so it must be set before
    :mod:`hotspot_erc` is imported; launchers read it here to pick interpreter-sized tiles."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def on_device(launcher):
    """Run a launcher with its first tensor's CUDA device current: Triton launches on the
    current device, so tensors on cuda:1 while cuda:0 is current would otherwise be handed to
    kernels running on cuda:0 (invalid addresses, or silent peer reads)."""
    @functools.wraps(launcher)
    def run(first, *args, **kwargs):
        if first.is_cuda:
            with torch.cuda.device(first.device):
                return launcher(first, *args, **kwargs)
        return launcher(first, *args, **kwargs)

    return run


def dot_precision(dtype: torch.dtype) -> str:
    """``tl.dot``'s ``input_precision`` for operands of ``dtype``: float32 follows torch's own matmul
    setting (TF32 only when the user allowed it), so kernels agree with eager float32 math;
    float64 is exact ("tf32" names a float32 mode); half types ignore it."""
    if dtype == torch.float64:
        return "ieee"
    if dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32:
        return "ieee"
    return "tf32"


def block_size(n: int, cap: int) -> int:
    """A tile edge for a dimension of ``n``: the next power of two, at least 16 (``tl.dot``'s
    minimum) and at most ``cap``; 16 or 32 under the interpreter (small tiles run faster there)."""
    if triton_interpret():
        return 16 if n <= 16 else 32
    return max(16, min(cap, triton.next_power_of_2(n)))
