"""The ops' CPU backends written in Python (ATen compositions), one module per op, mirroring
``csrc/<op>/cpu/`` for the compiled ones. Plain functions on valid arguments: checks, backend
choice, registration and autograd stay in :mod:`hotspot_erc.ops`."""
