"""``segment_matmul``: rows in groups, each group times its own weight (pyg-lib's segment_matmul;
``grouped_expert_linear`` with k = 1 and unit gates), with an optional *root* group that has its
own weight and a bias, for rows already in memory. ``RGCNConv`` multiplies its non-empty (node,
relation) buckets grouped by relation plus one root row per node the same way,
with the gather fused into the A operand so the gathered rows never exist: on CUDA
``kernels/gather_segment_matmul.py`` (this op's kernel with a gathering A-tile load, sharing its
tile map), on the CPU the C++ ``relational_conv``; this op is what a CPU build without
``relational_conv`` falls back to.

``segment_matmul(a, ptr, weight, root=None, bias=None, tiles=None, backend=None)``:

* ``a`` [M, in]; ``ptr`` int64 [G+1] (no root) or [G+2] (root group first); ``weight`` [G, in, out];
  rows of group g are multiplied by ``weight[g]``, rows of the root group by ``root`` plus
  ``bias``; rows past ``ptr[-1]`` (padding of a sync-free bound) come out zero.
* One compiled op, ``hotspot_erc::segment_matmul``: the C++ CPU kernel (``csrc/segment_matmul``,
  one GEMM per group through ATen's CPU matmul, one launch) and the Triton CUDA kernel
  (:mod:`hotspot_erc.kernels.segment_matmul`, registered here for the CUDA dispatch key; its row
  tiles come from ``tiles``, which callers cache with their graph). The C++ autograd formula
  calls ``segment_matmul_backward``: one launch on the CPU, two on CUDA.
* ``backend="triton"`` runs the Triton kernels on CPU tensors under ``TRITON_INTERPRET=1``
  (tests); ``"reference"`` is the loop over groups in plain PyTorch.
"""
from __future__ import annotations

import torch

from hotspot_erc import _ext
from hotspot_erc.ops import _backend
from hotspot_erc.reference.segment_matmul import segment_matmul_reference as reference

OP = "segment_matmul"


def _registered() -> bool:
    return _ext.available() and hasattr(torch.ops.hotspot_erc, OP)


def _compiled_reason(device: torch.device) -> str:
    return "" if _registered() else f"hotspot_erc::{OP} is not compiled ({_ext.unavailable_reason() or 'no kernel'})"


# The CUDA kernel is Triton's (reached through the compiled op's CUDA key when the extension is
# loaded, called directly otherwise); the CPU one is C++.
SUPPORTS = _backend.register(OP, {
    "triton": _backend.triton_reason,
    "cpu": lambda device: _compiled_reason(device) or _backend.cpu_ext_reason(OP),
})


class _TritonSegmentMatmul(torch.autograd.Function):
    """The Triton kernels called directly (CPU tensors under the interpreter, or CUDA)."""

    @staticmethod
    def forward(ctx, a, ptr, weight, root, bias, tiles):
        from hotspot_erc.kernels import segment_matmul as K

        ctx.save_for_backward(a, ptr, weight, root, tiles)
        ctx.has_bias = bias is not None
        return K.forward(a, ptr, weight, root, bias, tiles)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        from hotspot_erc.kernels import segment_matmul as K

        a, ptr, weight, root, tiles = ctx.saved_tensors
        ga, gw, groot, gb = K.backward(grad, a, ptr, weight, root, ctx.has_bias, tiles)
        return ga, None, gw, (groot if root is not None else None), (gb if ctx.has_bias else None), None


def gather_kernels():
    """:mod:`hotspot_erc.kernels.gather_segment_matmul` (this op's kernel with the relational
    gather fused into its A-tile load; ``relational_conv``'s CUDA path), loaded on first use like
    every Triton kernel here."""
    from hotspot_erc.kernels import gather_segment_matmul

    return gather_segment_matmul


def row_tiles(ptr: torch.Tensor, num_rows: int, cache: dict) -> torch.Tensor | None:
    """The CUDA kernel's row-tile map for groups ``ptr`` over ``num_rows`` rows, built once per
    (tile size, group count) and kept in ``cache`` (e.g. with a prepared graph); None on the CPU,
    whose kernel needs none. One launch the first time, no sync."""
    if not ptr.is_cuda:
        return None
    from hotspot_erc.kernels import segment_matmul as K

    bm = K.block_m(num_rows, ptr.numel() - 1)
    key = (bm, ptr.numel())
    if key not in cache:
        cache[key] = K.tile_map(ptr, num_rows, bm)
    return cache[key]


def _check(a, ptr, weight, root, bias):
    _backend.check_tensor("a", a, ndim=2, dtypes=_backend.FLOAT_DTYPES)
    _backend.check_tensor("ptr", ptr, ndim=1, dtypes=(torch.int64,), device=a.device)
    _backend.check_tensor("weight", weight, ndim=3, dtypes=(a.dtype,), device=a.device)
    if weight.shape[1] != a.shape[1]:
        raise ValueError(f"weight must be [G, in={a.shape[1]}, out], got {tuple(weight.shape)}")
    groups = weight.shape[0] + (root is not None)
    if ptr.shape[0] != groups + 1:
        raise ValueError(f"ptr must have {groups + 1} entries ({weight.shape[0]} weights"
                         f"{' + the root group' if root is not None else ''}), got {ptr.shape[0]}")
    if root is not None:
        _backend.check_tensor("root", root, ndim=2, dtypes=(a.dtype,), device=a.device)
        if tuple(root.shape) != (a.shape[1], weight.shape[2]):
            raise ValueError(f"root must be [in, out] = [{a.shape[1]}, {weight.shape[2]}], got {tuple(root.shape)}")
    if bias is not None:
        if root is None:
            raise ValueError("bias is added to the root group's rows: pass root with it")
        _backend.check_tensor("bias", bias, ndim=1, dtypes=(a.dtype,), device=a.device)
        if bias.shape[0] != weight.shape[2]:
            raise ValueError(f"bias must be [out] = [{weight.shape[2]}], got {tuple(bias.shape)}")


def segment_matmul(a: torch.Tensor, ptr: torch.Tensor, weight: torch.Tensor, root: torch.Tensor | None = None,
                   bias: torch.Tensor | None = None, tiles: torch.Tensor | None = None,
                   backend: str | None = None) -> torch.Tensor:
    """Grouped product (see the module docstring) -> [M, out] in a's dtype."""
    _check(a, ptr, weight, root, bias)
    # "cuda" names this op's CUDA kernels, which are Triton's (accepted as before).
    name = _backend.choose(OP, "triton" if backend == "cuda" else backend, a.device, SUPPORTS, dtype=a.dtype)
    if name == "reference":
        return reference(a, ptr, weight, root, bias)
    if name == "triton" and (backend is not None or not a.is_cuda or not _registered()):
        # Forced (the interpreter on CPU tensors in tests), or no compiled op to dispatch through.
        return _TritonSegmentMatmul.apply(a.contiguous(), ptr.contiguous(), weight, root, bias, tiles)
    return torch.ops.hotspot_erc.segment_matmul(a.contiguous(), ptr.contiguous(), weight, root, bias, tiles)


# ----------------------------------------------------------------------------- registration

if _registered():
    @torch.library.register_fake("hotspot_erc::segment_matmul")
    def _(a, ptr, weight, root, bias, tiles):
        return a.new_empty(a.shape[0], weight.shape[2])

    @torch.library.register_fake("hotspot_erc::segment_matmul_backward")
    def _(grad, a, ptr, weight, root, has_bias, tiles):
        groot = a.new_empty(a.shape[1], weight.shape[2]) if root is not None else a.new_empty(0)
        gb = a.new_empty(weight.shape[2]) if has_bias else a.new_empty(0)
        return a.new_empty(a.shape), weight.new_empty(weight.shape), groot, gb

    # The CUDA kernels are Triton's: registered for the op's CUDA dispatch key, so the C++
    # autograd formula reaches them through the dispatcher like the CPU kernel.
    @torch.library.impl("hotspot_erc::segment_matmul", "CUDA")
    def _segment_matmul_cuda(a, ptr, weight, root, bias, tiles):
        from hotspot_erc.kernels import segment_matmul as K

        return K.forward(a, ptr, weight, root, bias, tiles)

    @torch.library.impl("hotspot_erc::segment_matmul_backward", "CUDA")
    def _segment_matmul_backward_cuda(grad, a, ptr, weight, root, has_bias, tiles):
        from hotspot_erc.kernels import segment_matmul as K

        return K.backward(grad, a, ptr, weight, root, has_bias, tiles)
