"""Checked-in launch configs of the Triton kernels that used to autotune.

Autotuning at the first call of every shape class cost a host sync and a compile storm on the
first training step, and the chosen tile (hence the summation order) depended on timing, so two
processes or two DDP ranks were not bitwise identical. The launchers now read their tile, warps
and pipeline stages from :data:`TABLE`, keyed by

    op -> arch family ("sm90", "sm80", "default") -> "kernel/dtype class/d<head tile>/t<table tile>"

where the dtype class is ``half`` (float16, bfloat16), ``tf32`` (float32 with TF32 allowed) or
``fp32`` (float32, IEEE dots), the head tile is the power of two covering Dh, and the table tile
is the rows per program that the block table fixes (chosen from shapes by the launcher). Every
entry is ``{"tile": free tile, "num_warps": w, "num_stages": st}``.

The table is generated, not typed: ``python -m benchmarks.tune_attention --offline --arch 90``
compiles every candidate for that arch with Triton's own ptxas (no GPU needed) and keeps, in a
fixed order of preference (larger free tile, more pipeline stages), the first one that neither
spills registers nor overflows shared memory; ``python -m benchmarks.tune_attention`` on a GPU
times the candidates instead (``triton.testing.do_bench`` on conversation shapes) and rewrites
that arch's entries with the fastest. ``HOTSPOT_ERC_AUTOTUNE=1`` makes the launchers autotune
at run time again (the old behaviour; not bitwise reproducible across processes).

The offline pick depends only on the compiler: ``GENERATED_WITH`` names the Triton (hence ptxas)
that made the table, and ``python -m benchmarks.tune_attention --offline --arch 90 --check``
(a slow test runs it on a sample of keys) fails if any entry differs from what the generator
makes now. Compiler errors other than "does not fit" stop the generator instead of rejecting the
candidate, so a loaded machine cannot change the table.
"""
from __future__ import annotations

import os

import torch

_ARCH_CACHE: dict = {}


def autotune_enabled() -> bool:
    return os.environ.get("HOTSPOT_ERC_AUTOTUNE", "0") not in ("", "0")


def arch_family(device: torch.device) -> str:
    """"sm90" (Hopper), "sm80" (Ampere and Ada: sm_80/86/89) or "default" (anything else, and
    CPU tensors). Host-side query, cached per device: no sync."""
    if device.type != "cuda":
        return "default"
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _ARCH_CACHE:
        major, _ = torch.cuda.get_device_capability(index)
        _ARCH_CACHE[index] = {9: "sm90", 8: "sm80"}.get(major, "default")
    return _ARCH_CACHE[index]


def dtype_class(dtype: torch.dtype) -> str:
    if dtype in (torch.float16, torch.bfloat16):
        return "half"
    return "tf32" if torch.backends.cuda.matmul.allow_tf32 else "fp32"


def key(kernel: str, dclass: str, head_tile: int, table_tile: int) -> str:
    return f"{kernel}/{dclass}/d{head_tile}/t{table_tile}"


def lookup(op: str, kernel: str, arch: str, dclass: str, head_tile: int, table_tile: int) -> dict:
    """The entry for this launch: the arch family's, else the "default" family's, else the
    smallest safe config (a key the table lacks: a launcher choice added without regenerating)."""
    k = key(kernel, dclass, head_tile, table_tile)
    by_arch = TABLE.get(op, {})
    entry = by_arch.get(arch, {}).get(k) or by_arch.get("default", {}).get(k)
    return entry or {"tile": 16, "num_warps": 4, "num_stages": 1}


# BEGIN GENERATED TABLE (benchmarks/tune_attention.py rewrites what lies between these markers)
GENERATED_WITH = 'triton 3.8.0'
TABLE: dict = {
    'varlen_attention': {
        'default': {
            'dkdv/fp32/d128/t32': {'tile': 32, 'num_warps': 8, 'num_stages': 1},
            'dkdv/fp32/d16/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dkdv/fp32/d32/t32': {'tile': 64, 'num_warps': 8, 'num_stages': 2},
            'dkdv/fp32/d64/t32': {'tile': 32, 'num_warps': 8, 'num_stages': 2},
            'dkdv/half/d128/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 2},
            'dkdv/half/d128/t64': {'tile': 64, 'num_warps': 8, 'num_stages': 3},
            'dkdv/half/d16/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dkdv/half/d16/t64': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dkdv/half/d32/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dkdv/half/d32/t64': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dkdv/half/d64/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dkdv/half/d64/t64': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dkdv/tf32/d128/t32': {'tile': 32, 'num_warps': 4, 'num_stages': 3},
            'dkdv/tf32/d128/t64': {'tile': 16, 'num_warps': 4, 'num_stages': 1},
            'dkdv/tf32/d16/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dkdv/tf32/d16/t64': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dkdv/tf32/d32/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dkdv/tf32/d32/t64': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dkdv/tf32/d64/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dkdv/tf32/d64/t64': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dq/fp32/d128/t32': {'tile': 32, 'num_warps': 8, 'num_stages': 2},
            'dq/fp32/d128/t64': {'tile': 16, 'num_warps': 4, 'num_stages': 1},
            'dq/fp32/d16/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dq/fp32/d16/t64': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dq/fp32/d32/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dq/fp32/d32/t64': {'tile': 64, 'num_warps': 8, 'num_stages': 2},
            'dq/fp32/d64/t32': {'tile': 64, 'num_warps': 8, 'num_stages': 2},
            'dq/fp32/d64/t64': {'tile': 32, 'num_warps': 8, 'num_stages': 2},
            'dq/half/d128/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dq/half/d128/t64': {'tile': 32, 'num_warps': 4, 'num_stages': 2},
            'dq/half/d16/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dq/half/d16/t64': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dq/half/d32/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dq/half/d32/t64': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dq/half/d64/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dq/half/d64/t64': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dq/tf32/d128/t32': {'tile': 32, 'num_warps': 4, 'num_stages': 3},
            'dq/tf32/d128/t64': {'tile': 16, 'num_warps': 4, 'num_stages': 1},
            'dq/tf32/d16/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dq/tf32/d16/t64': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dq/tf32/d32/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dq/tf32/d32/t64': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dq/tf32/d64/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dq/tf32/d64/t64': {'tile': 32, 'num_warps': 4, 'num_stages': 3},
            'fwd/fp32/d128/t32': {'tile': 32, 'num_warps': 8, 'num_stages': 2},
            'fwd/fp32/d128/t64': {'tile': 32, 'num_warps': 8, 'num_stages': 2},
            'fwd/fp32/d16/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'fwd/fp32/d16/t64': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'fwd/fp32/d32/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'fwd/fp32/d32/t64': {'tile': 64, 'num_warps': 8, 'num_stages': 2},
            'fwd/fp32/d64/t32': {'tile': 64, 'num_warps': 8, 'num_stages': 2},
            'fwd/fp32/d64/t64': {'tile': 32, 'num_warps': 8, 'num_stages': 2},
            'fwd/half/d128/t128': {'tile': 16, 'num_warps': 4, 'num_stages': 1},
            'fwd/half/d128/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'fwd/half/d128/t64': {'tile': 64, 'num_warps': 8, 'num_stages': 3},
            'fwd/half/d16/t128': {'tile': 64, 'num_warps': 8, 'num_stages': 3},
            'fwd/half/d16/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'fwd/half/d16/t64': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'fwd/half/d32/t128': {'tile': 64, 'num_warps': 8, 'num_stages': 3},
            'fwd/half/d32/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'fwd/half/d32/t64': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'fwd/half/d64/t128': {'tile': 64, 'num_warps': 8, 'num_stages': 3},
            'fwd/half/d64/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'fwd/half/d64/t64': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'fwd/tf32/d128/t128': {'tile': 32, 'num_warps': 8, 'num_stages': 2},
            'fwd/tf32/d128/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 2},
            'fwd/tf32/d128/t64': {'tile': 32, 'num_warps': 8, 'num_stages': 2},
            'fwd/tf32/d16/t128': {'tile': 64, 'num_warps': 8, 'num_stages': 3},
            'fwd/tf32/d16/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'fwd/tf32/d16/t64': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'fwd/tf32/d32/t128': {'tile': 64, 'num_warps': 8, 'num_stages': 3},
            'fwd/tf32/d32/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'fwd/tf32/d32/t64': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'fwd/tf32/d64/t128': {'tile': 64, 'num_warps': 8, 'num_stages': 3},
            'fwd/tf32/d64/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'fwd/tf32/d64/t64': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
        },
        'sm80': {
            'dkdv/fp32/d128/t32': {'tile': 32, 'num_warps': 8, 'num_stages': 1},
            'dkdv/fp32/d16/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dkdv/fp32/d32/t32': {'tile': 64, 'num_warps': 8, 'num_stages': 2},
            'dkdv/fp32/d64/t32': {'tile': 32, 'num_warps': 8, 'num_stages': 2},
            'dkdv/half/d128/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 2},
            'dkdv/half/d128/t64': {'tile': 64, 'num_warps': 8, 'num_stages': 3},
            'dkdv/half/d16/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dkdv/half/d16/t64': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dkdv/half/d32/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dkdv/half/d32/t64': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dkdv/half/d64/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dkdv/half/d64/t64': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dkdv/tf32/d128/t32': {'tile': 32, 'num_warps': 4, 'num_stages': 3},
            'dkdv/tf32/d128/t64': {'tile': 16, 'num_warps': 4, 'num_stages': 1},
            'dkdv/tf32/d16/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dkdv/tf32/d16/t64': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dkdv/tf32/d32/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dkdv/tf32/d32/t64': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dkdv/tf32/d64/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dkdv/tf32/d64/t64': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dq/fp32/d128/t32': {'tile': 32, 'num_warps': 8, 'num_stages': 2},
            'dq/fp32/d128/t64': {'tile': 16, 'num_warps': 4, 'num_stages': 1},
            'dq/fp32/d16/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dq/fp32/d16/t64': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dq/fp32/d32/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dq/fp32/d32/t64': {'tile': 64, 'num_warps': 8, 'num_stages': 2},
            'dq/fp32/d64/t32': {'tile': 64, 'num_warps': 8, 'num_stages': 2},
            'dq/fp32/d64/t64': {'tile': 32, 'num_warps': 8, 'num_stages': 2},
            'dq/half/d128/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dq/half/d128/t64': {'tile': 32, 'num_warps': 4, 'num_stages': 2},
            'dq/half/d16/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dq/half/d16/t64': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dq/half/d32/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dq/half/d32/t64': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dq/half/d64/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dq/half/d64/t64': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dq/tf32/d128/t32': {'tile': 32, 'num_warps': 4, 'num_stages': 3},
            'dq/tf32/d128/t64': {'tile': 16, 'num_warps': 4, 'num_stages': 1},
            'dq/tf32/d16/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dq/tf32/d16/t64': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dq/tf32/d32/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dq/tf32/d32/t64': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dq/tf32/d64/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dq/tf32/d64/t64': {'tile': 32, 'num_warps': 4, 'num_stages': 3},
            'fwd/fp32/d128/t32': {'tile': 32, 'num_warps': 8, 'num_stages': 2},
            'fwd/fp32/d128/t64': {'tile': 32, 'num_warps': 8, 'num_stages': 2},
            'fwd/fp32/d16/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'fwd/fp32/d16/t64': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'fwd/fp32/d32/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'fwd/fp32/d32/t64': {'tile': 64, 'num_warps': 8, 'num_stages': 2},
            'fwd/fp32/d64/t32': {'tile': 64, 'num_warps': 8, 'num_stages': 2},
            'fwd/fp32/d64/t64': {'tile': 32, 'num_warps': 8, 'num_stages': 2},
            'fwd/half/d128/t128': {'tile': 16, 'num_warps': 4, 'num_stages': 1},
            'fwd/half/d128/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'fwd/half/d128/t64': {'tile': 64, 'num_warps': 8, 'num_stages': 3},
            'fwd/half/d16/t128': {'tile': 64, 'num_warps': 8, 'num_stages': 3},
            'fwd/half/d16/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'fwd/half/d16/t64': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'fwd/half/d32/t128': {'tile': 64, 'num_warps': 8, 'num_stages': 3},
            'fwd/half/d32/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'fwd/half/d32/t64': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'fwd/half/d64/t128': {'tile': 64, 'num_warps': 8, 'num_stages': 3},
            'fwd/half/d64/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'fwd/half/d64/t64': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'fwd/tf32/d128/t128': {'tile': 32, 'num_warps': 8, 'num_stages': 2},
            'fwd/tf32/d128/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 2},
            'fwd/tf32/d128/t64': {'tile': 32, 'num_warps': 8, 'num_stages': 2},
            'fwd/tf32/d16/t128': {'tile': 64, 'num_warps': 8, 'num_stages': 3},
            'fwd/tf32/d16/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'fwd/tf32/d16/t64': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'fwd/tf32/d32/t128': {'tile': 64, 'num_warps': 8, 'num_stages': 3},
            'fwd/tf32/d32/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'fwd/tf32/d32/t64': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'fwd/tf32/d64/t128': {'tile': 64, 'num_warps': 8, 'num_stages': 3},
            'fwd/tf32/d64/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'fwd/tf32/d64/t64': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
        },
        'sm90': {
            'dkdv/fp32/d128/t32': {'tile': 16, 'num_warps': 4, 'num_stages': 1},
            'dkdv/fp32/d16/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dkdv/fp32/d32/t32': {'tile': 16, 'num_warps': 4, 'num_stages': 1},
            'dkdv/fp32/d64/t32': {'tile': 32, 'num_warps': 8, 'num_stages': 1},
            'dkdv/half/d128/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dkdv/half/d128/t64': {'tile': 32, 'num_warps': 8, 'num_stages': 3},
            'dkdv/half/d16/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dkdv/half/d16/t64': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dkdv/half/d32/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dkdv/half/d32/t64': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dkdv/half/d64/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dkdv/half/d64/t64': {'tile': 64, 'num_warps': 4, 'num_stages': 2},
            'dkdv/tf32/d128/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dkdv/tf32/d128/t64': {'tile': 16, 'num_warps': 4, 'num_stages': 1},
            'dkdv/tf32/d16/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dkdv/tf32/d16/t64': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dkdv/tf32/d32/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dkdv/tf32/d32/t64': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dkdv/tf32/d64/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dkdv/tf32/d64/t64': {'tile': 64, 'num_warps': 8, 'num_stages': 2},
            'dq/fp32/d128/t32': {'tile': 64, 'num_warps': 8, 'num_stages': 2},
            'dq/fp32/d128/t64': {'tile': 32, 'num_warps': 8, 'num_stages': 3},
            'dq/fp32/d16/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dq/fp32/d16/t64': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dq/fp32/d32/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dq/fp32/d32/t64': {'tile': 32, 'num_warps': 8, 'num_stages': 2},
            'dq/fp32/d64/t32': {'tile': 64, 'num_warps': 8, 'num_stages': 2},
            'dq/fp32/d64/t64': {'tile': 16, 'num_warps': 4, 'num_stages': 1},
            'dq/half/d128/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dq/half/d128/t64': {'tile': 64, 'num_warps': 4, 'num_stages': 2},
            'dq/half/d16/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dq/half/d16/t64': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dq/half/d32/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dq/half/d32/t64': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dq/half/d64/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dq/half/d64/t64': {'tile': 64, 'num_warps': 8, 'num_stages': 2},
            'dq/tf32/d128/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 2},
            'dq/tf32/d128/t64': {'tile': 32, 'num_warps': 8, 'num_stages': 3},
            'dq/tf32/d16/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dq/tf32/d16/t64': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dq/tf32/d32/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dq/tf32/d32/t64': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dq/tf32/d64/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'dq/tf32/d64/t64': {'tile': 64, 'num_warps': 4, 'num_stages': 2},
            'fwd/fp32/d128/t32': {'tile': 64, 'num_warps': 8, 'num_stages': 2},
            'fwd/fp32/d128/t64': {'tile': 32, 'num_warps': 8, 'num_stages': 3},
            'fwd/fp32/d16/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'fwd/fp32/d16/t64': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'fwd/fp32/d32/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'fwd/fp32/d32/t64': {'tile': 64, 'num_warps': 8, 'num_stages': 2},
            'fwd/fp32/d64/t32': {'tile': 64, 'num_warps': 8, 'num_stages': 2},
            'fwd/fp32/d64/t64': {'tile': 32, 'num_warps': 8, 'num_stages': 2},
            'fwd/half/d128/t128': {'tile': 64, 'num_warps': 8, 'num_stages': 3},
            'fwd/half/d128/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'fwd/half/d128/t64': {'tile': 64, 'num_warps': 8, 'num_stages': 3},
            'fwd/half/d16/t128': {'tile': 64, 'num_warps': 8, 'num_stages': 3},
            'fwd/half/d16/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'fwd/half/d16/t64': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'fwd/half/d32/t128': {'tile': 64, 'num_warps': 8, 'num_stages': 3},
            'fwd/half/d32/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'fwd/half/d32/t64': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'fwd/half/d64/t128': {'tile': 64, 'num_warps': 8, 'num_stages': 3},
            'fwd/half/d64/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'fwd/half/d64/t64': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'fwd/tf32/d128/t128': {'tile': 32, 'num_warps': 8, 'num_stages': 3},
            'fwd/tf32/d128/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'fwd/tf32/d128/t64': {'tile': 64, 'num_warps': 8, 'num_stages': 3},
            'fwd/tf32/d16/t128': {'tile': 64, 'num_warps': 8, 'num_stages': 3},
            'fwd/tf32/d16/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'fwd/tf32/d16/t64': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'fwd/tf32/d32/t128': {'tile': 64, 'num_warps': 8, 'num_stages': 3},
            'fwd/tf32/d32/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'fwd/tf32/d32/t64': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'fwd/tf32/d64/t128': {'tile': 64, 'num_warps': 8, 'num_stages': 3},
            'fwd/tf32/d64/t32': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
            'fwd/tf32/d64/t64': {'tile': 64, 'num_warps': 4, 'num_stages': 3},
        },
    },
}
# END GENERATED TABLE
