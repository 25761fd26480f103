"""Helpers shared by the Triton launchers."""
from __future__ import annotations

import functools

import torch


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
