"""Triton kernels and their launchers, installed as ``hotspot_erc.kernels``.

Pure kernel code: no autograd, no argument validation (that lives in :mod:`hotspot_erc.ops`).
"""
