"""Helpers shared by the Triton launchers: the interpreter switch and device placement.

This package imports nothing from the rest of :mod:`hotspot_erc` (the ops layer sits above it and
reads :func:`triton_interpret` from here)."""
from __future__ import annotations

import functools
import os

import torch


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
