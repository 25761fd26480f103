"""Functional ops. Each takes ``backend=None`` (auto) or one of "triton", "cuda", "cpu",
"reference"; see :mod:`hotspot_erc.ops._backend`."""
from hotspot_erc.ops._backend import BACKENDS, BackendUnavailable

__all__ = ["BACKENDS", "BackendUnavailable"]
