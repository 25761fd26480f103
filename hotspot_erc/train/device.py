"""Which device a run uses, and the autocast that goes with it."""
from __future__ import annotations

import contextlib
import re

import torch

from hotspot_erc.train.distributed import DistInfo


def resolve_device(pref: str, dist_info: DistInfo | None = None) -> torch.device:
    """``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` as a usable device; ValueError otherwise."""
    if not isinstance(pref, str) or not re.fullmatch(r"auto|cpu|cuda(:[0-9]+)?", pref.strip()):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {pref!r}")
    pref = pref.strip()
    if pref == "auto":
        pref = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(pref)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {pref!r} was asked for but no CUDA device is available "
                             "(use --device cpu or auto)")
        if dev.index is None:
            dev = torch.device("cuda", dist_info.local_rank if dist_info and dist_info.enabled else 0)
        if dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {pref!r} was asked for but only {torch.cuda.device_count()} CUDA "
                             "device(s) are visible")
    return dev


def autocast(device: torch.device, enabled: bool):
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
