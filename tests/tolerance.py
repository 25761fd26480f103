"""Float tolerances derived from error bounds, shared by every test that compares floats.

A result built from reductions of length ``k`` in a format with unit roundoff ``u`` carries a
rounding error that grows like ``√k · u`` times the size of what was summed (the probabilistic
bound of Higham & Mary, SIAM J. Sci. Comput. 2019: independent rounding errors add as a random
walk). So a kernel in ``dtype`` compared with a float64 reference is held to

    ‖out − ref‖ ≤ c · √k · u(dtype) · ‖scale‖

where ``scale`` is the reference itself, or, where the result may cancel (a gradient summed over
terms of both signs, a single scalar), the same computation on the magnitudes of its inputs
(``Σ|terms|``), which is what the bound really multiplies. ``c`` counts the roundings each term
goes through (input conversion, product, accumulation, a final cast) with a margin for the
√k estimate; one value serves every test so that no test tunes its own.

Comparisons of two float64 computations use the same formula with float64's ``u``.
"""
from __future__ import annotations

import math

import torch

# Unit roundoff 2^-p, p = significand bits incl. the implicit one. "tf32" is float32 data whose
# products the GPU's tensor cores round to TF32 (10 explicit bits) when torch allows it.
UNIT_ROUNDOFF = {
    torch.float64: 2.0 ** -53,
    torch.float32: 2.0 ** -24,
    "tf32": 2.0 ** -11,
    torch.float16: 2.0 ** -11,
    torch.bfloat16: 2.0 ** -8,
}

# Roundings per term (input cast, product, accumulation, output cast) times a margin of 2 for the
# probabilistic √k estimate.
C = 8.0


LOW_PRECISION = (torch.bfloat16, torch.float16)


def accumulation(dtype):
    """Where a kernel of ``dtype`` sums: float32 for the 16-bit formats (every kernel here and
    PyTorch's own accumulate them in float32), else ``dtype`` itself (None)."""
    return torch.float32 if dtype in LOW_PRECISION else None


def unit_roundoff(dtype) -> float:
    try:
        return UNIT_ROUNDOFF[dtype]
    except KeyError:
        raise ValueError(f"dtype: expected one of {list(UNIT_ROUNDOFF)}, got {dtype!r}") from None


def rel_bound(dtype, k: int = 1, *, c: float = C, accumulate=None) -> float:
    """The bound on ‖out − ref‖ / ‖scale‖ for results of ``k``-long reductions in ``dtype``.

    ``accumulate``: the format the reductions really run in when it is wider than ``dtype`` (a
    bfloat16 kernel that sums in float32 and rounds each result to bfloat16 once); the bound is
    then one rounding in ``dtype`` plus the sums' rounding in ``accumulate``."""
    growth = math.sqrt(max(int(k), 1))
    if accumulate is None:
        return c * growth * unit_roundoff(dtype)
    return c * (unit_roundoff(dtype) + growth * unit_roundoff(accumulate))


def rel_err(out: torch.Tensor, ref: torch.Tensor, scale: torch.Tensor | None = None) -> float:
    """‖out − ref‖ / ‖scale‖ (scale defaults to ref) in float64; the bare error where ‖scale‖ = 0."""
    out = out.detach().double().cpu()
    ref = ref.detach().double().cpu()
    denom = (ref if scale is None else scale.detach().double().cpu()).norm().item()
    num = (out - ref).norm().item()
    return num / denom if denom > 0 else num


def assert_close(out: torch.Tensor, ref: torch.Tensor, dtype, k: int = 1, *, scale=None,
                 c: float = C, accumulate=None, what: str = "") -> None:
    """Fail when ``out`` is further from ``ref`` than the rounding bound of ``dtype`` allows."""
    assert out.shape == ref.shape, f"{what}: shape {tuple(out.shape)} != {tuple(ref.shape)}"
    err, bound = rel_err(out, ref, scale), rel_bound(dtype, k, c=c, accumulate=accumulate)
    assert err <= bound, (f"{what}: relative error {err:.3g} > bound {bound:.3g} "
                          f"(c={c}, k={k}, u={unit_roundoff(dtype):.3g}, {dtype})")


def magnitude(fn, *tensors):
    """``fn`` on the magnitudes of its float inputs: for a (multi)linear computation this is
    Σ|terms| of every output, the scale the rounding bound multiplies."""
    return fn(*(t.abs() if isinstance(t, torch.Tensor) and t.is_floating_point() else t for t in tensors))


def magnitude_grads(fn, inputs, grad_out):
    """``fn`` and its gradients at the magnitudes of ``inputs`` (float64) for ``|grad_out|``: for a
    (multi)linear ``fn`` with non-negative coefficients, Σ|terms| of the output and of every
    gradient element. Returns (output, [gradient per input]); inputs ``fn`` ignores get zeros."""
    leaves = [t.detach().abs().double().requires_grad_() for t in inputs]
    out = fn(*leaves)
    if not out.requires_grad:
        return out.detach(), [torch.zeros_like(t) for t in leaves]
    grads = torch.autograd.grad(out, leaves, grad_out.detach().abs().double(), allow_unused=True)
    return out.detach(), [torch.zeros_like(t) if g is None else g for t, g in zip(leaves, grads)]


def abs_copy(module: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``module`` with the magnitudes of its parameters: run on magnitudes, a layer that
    is multilinear in its input and parameters gives Σ|terms| (see :func:`magnitude`)."""
    import copy

    twin = copy.deepcopy(module)
    with torch.no_grad():
        for p in twin.parameters():
            p.abs_()
    return twin


def printed_tol(decimals: int, dtype=torch.float32, k: int = 1, size: float = 1.0) -> float:
    """Absolute tolerance for a value written down with ``decimals`` decimals (half a unit of the
    last digit) and recomputed in ``dtype`` from ``k``-long reductions of values of ``size``."""
    return 0.5 * 10.0 ** -decimals + rel_bound(dtype, k) * size
