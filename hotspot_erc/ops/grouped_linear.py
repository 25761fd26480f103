"""Segment-routed expert projection — ``grouped_expert_linear`` (DESIGN §3.2).

For token t of segment s: ``y_t = Σ_i gates[s,i] · (x_t @ weight[experts[s,i]] + bias[experts[s,i]])``.
Every token of a segment uses that segment's k experts (a Mixture-of-Aligners router picks them
per utterance).

Backends: ``"triton"`` (CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1``; float32,
float16, bfloat16), ``"cpu"`` (vectorised ATen: the (token, slot) pairs are sorted by expert and
each expert multiplies only its own rows — N·k rows in all, against the reference's N·E) and
``"reference"`` (:mod:`hotspot_erc.reference.grouped_linear`, loop over experts). Automatic choice:
Triton for CUDA tensors (float64 CUDA tensors use the ATen path), ATen for CPU tensors.

Both compiled paths are one ``torch.library`` custom op, ``hotspot_erc::grouped_expert_linear``,
with a registered fake and autograd formula, so ``torch.compile(fullgraph=True)`` traces through
it. Gradients flow to x, gates, weight and bias (not to the integer ``experts``/``cu_seqlens``);
the weight gradient is deterministic on every path (grouped by expert, no float atomics).

Checks: shapes, dtypes and devices always (no sync). Values — expert ids in [0, E) and
``cu_seqlens`` starting at 0, non-decreasing, ending at N — are read on the host, so they are
checked for CPU tensors always and for CUDA tensors only with ``HOTSPOT_ERC_VALIDATE=1`` (a sync);
otherwise CUDA expert ids are checked by an asynchronous device assert. Value checks are skipped
while ``torch.compile`` traces (they would need the values).
"""
from __future__ import annotations

from typing import Optional

import torch

from hotspot_erc.ops import _backend
from hotspot_erc.ops.cpu import grouped_linear as cpu
from hotspot_erc.reference.grouped_linear import grouped_expert_linear_reference

OP = "grouped_expert_linear"


# "cpu" is the ATen path: it runs on any device, but the automatic choice takes it for CUDA
# tensors only in float64 (it reads per-expert counts on the host, a sync there).
SUPPORTS = _backend.register(OP, {"triton": _backend.triton_reason, "cpu": lambda device: ""})


# ----------------------------------------------------------------------------- registered op

@torch.library.custom_op("hotspot_erc::grouped_linear_plan", mutates_args=())
def _grouped_linear_plan_op(cu_seqlens: torch.Tensor, experts: torch.Tensor, num_experts: int,
                            num_tokens: int, block_m: int) -> tuple[torch.Tensor, torch.Tensor]:
    from hotspot_erc.kernels.grouped_linear import build_plan

    return build_plan(cu_seqlens.contiguous(), experts.contiguous(), num_experts, num_tokens, block_m)


@_grouped_linear_plan_op.register_fake
def _(cu_seqlens, experts, num_experts, num_tokens, block_m):
    num_seg, k = experts.shape[-2], experts.shape[-1]
    t = (num_tokens + block_m - 1) // block_m + num_seg
    len_routing = 2 * num_seg * k + 1 + num_experts + 1
    routing = (experts.new_empty(experts.shape[0], len_routing, dtype=torch.int64) if experts.dim() == 3
               else experts.new_empty(len_routing, dtype=torch.int64))
    return experts.new_empty(2 * t + num_seg + 1, dtype=torch.int64), routing


@torch.library.custom_op("hotspot_erc::grouped_expert_linear", mutates_args=())
def _grouped_expert_linear_op(x: torch.Tensor, cu_seqlens: torch.Tensor, experts: torch.Tensor,
                              gates: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                              tiles: Optional[torch.Tensor], routing: Optional[torch.Tensor],
                              block_m: int, impl: str) -> torch.Tensor:
    """``tiles``/``routing``/``block_m``: the Triton path's plan (:class:`GroupedLinearPlan`);
    the forward reads the tiles, the backward reuses both (None on the ATen path)."""
    if impl == "triton":
        from hotspot_erc.kernels.grouped_linear import grouped_linear_forward

        return grouped_linear_forward(x.contiguous(), cu_seqlens.contiguous(), experts.contiguous(),
                                      gates.contiguous(), weight,
                                      bias.contiguous() if bias is not None else None, tiles, block_m)
    return cpu.forward(x, cu_seqlens, experts, gates, weight, bias)


@_grouped_expert_linear_op.register_fake
def _(x, cu_seqlens, experts, gates, weight, bias, tiles, routing, block_m, impl):
    return x.new_empty(x.shape[0], weight.shape[2])


@torch.library.custom_op("hotspot_erc::grouped_expert_linear_backward", mutates_args=())
def _grouped_expert_linear_backward_op(
        grad: torch.Tensor, x: torch.Tensor, cu_seqlens: torch.Tensor, experts: torch.Tensor,
        gates: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
        tiles: Optional[torch.Tensor], routing: Optional[torch.Tensor], block_m: int, impl: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dx, dgates, dweight, dbias); dbias is an empty [0] tensor when there is no bias."""
    if impl == "triton":
        from hotspot_erc.kernels.grouped_linear import grouped_linear_backward

        dx, dg, dw, db = grouped_linear_backward(
            grad.contiguous(), x.contiguous(), cu_seqlens.contiguous(), experts.contiguous(),
            gates.contiguous(), weight, bias.contiguous() if bias is not None else None,
            tiles, routing, block_m)
    else:
        dx, dg, dw, db = cpu.backward(grad, x, cu_seqlens, experts, gates, weight, bias)
    if db is None:
        db = weight.new_empty(0)
    return dx, dg, dw, db


@_grouped_expert_linear_backward_op.register_fake
def _(grad, x, cu_seqlens, experts, gates, weight, bias, tiles, routing, block_m, impl):
    # Contiguous, like both implementations' outputs: empty_like would copy the strides of a
    # transposed x or weight, and compiled graphs trust the fake's strides.
    db = bias.new_empty(bias.shape) if bias is not None else weight.new_empty(0)
    return x.new_empty(x.shape), gates.new_empty(gates.shape), weight.new_empty(weight.shape), db


def _setup_context(ctx, inputs, output):
    x, cu_seqlens, experts, gates, weight, bias, tiles, routing, block_m, impl = inputs
    # The plan is saved with the inputs: the backward reuses it instead of rebuilding it.
    ctx.save_for_backward(x, cu_seqlens, experts, gates, weight, bias, tiles, routing)
    ctx.impl, ctx.block_m = impl, block_m


def _backward(ctx, grad):
    x, cu_seqlens, experts, gates, weight, bias, tiles, routing = ctx.saved_tensors
    dx, dg, dw, db = _grouped_expert_linear_backward_op(
        grad, x, cu_seqlens, experts, gates, weight, bias, tiles, routing, ctx.block_m, ctx.impl)
    return dx, None, None, dg, dw, (db if bias is not None else None), None, None, None, None


_grouped_expert_linear_op.register_autograd(_backward, setup_context=_setup_context)


# ----------------------------------------------------------------------------- plan

class GroupedLinearPlan:
    """Where the Triton kernels' work is, for one ``cu_seqlens`` and one (or P) expert choices:
    the row tiles (tiles never cross segments) and the (segment, slot) assignments grouped by
    expert. Built on the device in one launch without a host sync; the op's forward reads it
    and its backward reuses it, so a call with a plan costs one forward launch and three
    backward launches.

    Build it with :func:`grouped_linear_plan` and pass it as ``plan=`` to
    :func:`grouped_expert_linear`. Several calls can share one build: a plan for ``experts``
    [P, S, k] holds P expert choices over the same ``cu_seqlens`` (``plan[p]`` is the plan of
    choice p, a view), e.g. the modality pairs of a Mixture-of-Aligners layer that read the same
    source. The plan describes the *values* of ``cu_seqlens`` and ``experts`` it was built
    from: pass the same tensors (on CPU the op checks the values; on CUDA only the shapes, as
    reading values would sync). The CPU/reference backends ignore it.

    Attributes: ``tiles`` int64 [2T + S + 1], ``routing`` int64 [L] or [P, L] (layout in
    :mod:`hotspot_erc.kernels.grouped_linear`), ``cu_seqlens``, ``experts`` ([S, k] or
    [P, S, k]), ``num_tokens``, ``num_experts``, ``block_m`` (rows per tile).
    """

    __slots__ = ("tiles", "routing", "cu_seqlens", "experts", "num_tokens", "num_experts", "block_m")

    def __init__(self, tiles, routing, cu_seqlens, experts, num_tokens, num_experts, block_m):
        self.tiles, self.routing = tiles, routing
        self.cu_seqlens, self.experts = cu_seqlens, experts
        self.num_tokens, self.num_experts, self.block_m = num_tokens, num_experts, block_m

    @property
    def batched(self) -> bool:
        return self.experts.dim() == 3

    def __len__(self) -> int:
        if not self.batched:
            raise TypeError("len() of a single-choice plan: build with experts [P, S, k] for P choices")
        return self.experts.shape[0]

    def __getitem__(self, p: int) -> "GroupedLinearPlan":
        if not self.batched:
            raise TypeError("indexing a single-choice plan: build with experts [P, S, k] for P choices")
        return GroupedLinearPlan(self.tiles, self.routing[p], self.cu_seqlens, self.experts[p],
                                 self.num_tokens, self.num_experts, self.block_m)

    def __repr__(self) -> str:
        choices = f", choices={self.experts.shape[0]}" if self.batched else ""
        return (f"GroupedLinearPlan(segments={self.cu_seqlens.shape[0] - 1}, tokens={self.num_tokens}, "
                f"k={self.experts.shape[-1]}, experts={self.num_experts}, block_m={self.block_m}{choices})")


def grouped_linear_plan(cu_seqlens: torch.Tensor, experts: torch.Tensor, num_experts: int,
                        num_tokens: int) -> GroupedLinearPlan:
    """Build the Triton kernels' plan for ``cu_seqlens`` [S+1] and ``experts`` [S, k] (or
    [P, S, k]: P expert choices over the same segments, one launch for all), ``num_experts`` =
    E = ``weight.shape[0]`` and ``num_tokens`` = N = ``x.shape[0]`` (passed, not read from
    ``cu_seqlens[-1]``, which would sync on CUDA). One kernel launch, no host sync.

    Example (the P = 2 pairs reading one source share one build)::

        plan = grouped_linear_plan(cu_src, torch.stack([experts_a, experts_b]), E, x.shape[0])
        ya = grouped_expert_linear(x, cu_src, experts_a, gates_a, w_a, b_a, plan=plan[0])
        yb = grouped_expert_linear(x, cu_src, experts_b, gates_b, w_b, b_b, plan=plan[1])
    """
    _backend.check_tensor("experts", experts, dtypes=_backend.INDEX_DTYPES)
    if experts.dim() not in (2, 3):
        raise ValueError(f"experts must have shape [S, k] or [P, S, k], got {tuple(experts.shape)}")
    _backend.check_cu_seqlens("cu_seqlens", cu_seqlens, num_tokens, experts.device)
    if cu_seqlens.shape[0] != experts.shape[-2] + 1:
        raise ValueError(f"cu_seqlens has {cu_seqlens.shape[0] - 1} segments but experts has "
                         f"{experts.shape[-2]} rows: they must agree (cu_seqlens [S+1], experts [..., S, k])")
    if experts.shape[-1] < 1:
        raise ValueError(f"experts must have at least one slot per segment, got {tuple(experts.shape)}")
    if int(num_experts) < 1:
        raise ValueError(f"num_experts must be >= 1, got {num_experts}")
    if _backend.triton_reason(experts.device):
        raise _backend.BackendUnavailable(f"{OP}: a plan is for the Triton kernels, which cannot run here: "
                                          f"{_backend.triton_reason(experts.device)}")
    return _build_plan(cu_seqlens, experts, int(num_experts), int(num_tokens))


def _build_plan(cu_seqlens, experts, num_experts: int, num_tokens: int) -> GroupedLinearPlan:
    from hotspot_erc.kernels.grouped_linear import plan_block_m

    cu_seqlens, experts = cu_seqlens.contiguous(), experts.contiguous()
    block_m = plan_block_m(num_tokens, experts.shape[-2])
    tiles, routing = _grouped_linear_plan_op(cu_seqlens, experts, num_experts, num_tokens, block_m)
    return GroupedLinearPlan(tiles, routing, cu_seqlens, experts, num_tokens, num_experts, block_m)


def _check_plan(plan, cu_seqlens, experts, num_tokens, num_experts) -> None:
    """The plan must describe these tensors: shapes always; values on CPU (no sync there)."""
    if not isinstance(plan, GroupedLinearPlan):
        raise TypeError(f"plan must be a GroupedLinearPlan (from grouped_linear_plan), got {type(plan).__name__}")
    if plan.batched:
        raise ValueError(f"plan holds {plan.experts.shape[0]} expert choices: pass one of them, plan[p]")
    if (plan.num_tokens, plan.num_experts) != (num_tokens, num_experts) or plan.experts.shape != experts.shape \
            or plan.tiles.device != experts.device:
        raise ValueError(f"plan was built for {plan.num_tokens} tokens, {plan.num_experts} experts, experts "
                         f"{tuple(plan.experts.shape)} on {plan.tiles.device}; this call has {num_tokens} tokens, "
                         f"{num_experts} experts, experts {tuple(experts.shape)} on {experts.device}")
    if torch.compiler.is_compiling() or experts.device.type != "cpu":
        return
    same_cu = plan.cu_seqlens is cu_seqlens or torch.equal(plan.cu_seqlens.long(), cu_seqlens.long())
    same_ex = plan.experts is experts or torch.equal(plan.experts.long(), experts.long())
    if not (same_cu and same_ex):
        raise ValueError("plan was built from other cu_seqlens/experts values than this call's: "
                         "build it from the tensors you pass")


# ----------------------------------------------------------------------------- public function

def _validate(x, cu_seqlens, experts, gates, weight, bias):
    _backend.check_tensor("x", x, ndim=2, dtypes=_backend.FLOAT_DTYPES)
    dev = x.device
    _backend.check_tensor("weight", weight, ndim=3, dtypes=(x.dtype,), device=dev)
    if weight.shape[1] != x.shape[1]:
        raise ValueError(f"weight must have shape [E, d_in={x.shape[1]}, d_out] to match x, "
                         f"got {tuple(weight.shape)}")
    num_experts, _, d_out = weight.shape
    if num_experts < 1:
        raise ValueError("weight must hold at least one expert (shape [E, d_in, d_out] with E >= 1)")
    if bias is not None:
        _backend.check_tensor("bias", bias, ndim=2, dtypes=(x.dtype,), device=dev)
        if tuple(bias.shape) != (num_experts, d_out):
            raise ValueError(f"bias must have shape [E, d_out] = [{num_experts}, {d_out}], "
                             f"got {tuple(bias.shape)}")
    _backend.check_tensor("experts", experts, ndim=2, dtypes=_backend.INDEX_DTYPES, device=dev)
    _backend.check_tensor("gates", gates, ndim=2, dtypes=_backend.FLOAT_DTYPES, device=dev)
    if gates.shape != experts.shape:
        raise ValueError(f"gates must have the shape of experts {tuple(experts.shape)} ([S, k]), "
                         f"got {tuple(gates.shape)}")
    if experts.shape[1] < 1:
        raise ValueError(f"experts must have at least one slot per segment (shape [S, k], k >= 1), "
                         f"got {tuple(experts.shape)}")
    compiling = torch.compiler.is_compiling()
    if compiling:
        _backend.check_tensor("cu_seqlens", cu_seqlens, ndim=1, dtypes=_backend.INDEX_DTYPES, device=dev)
    else:
        _backend.check_cu_seqlens("cu_seqlens", cu_seqlens, x.shape[0], dev)
    if cu_seqlens.shape[0] != experts.shape[0] + 1:
        raise ValueError(f"cu_seqlens has {cu_seqlens.shape[0] - 1} segments but experts has "
                         f"{experts.shape[0]} rows: they must agree (cu_seqlens [S+1], experts [S, k])")
    if compiling or experts.numel() == 0:
        return
    if dev.type == "cpu" or _backend.validate_values():
        lo, hi = int(experts.min()), int(experts.max())
        if lo < 0 or hi >= num_experts:
            raise ValueError(f"experts must hold ids in [0, {num_experts}) (E = weight.shape[0]), "
                             f"got values in [{lo}, {hi}]")
    else:
        torch._assert_async(((experts >= 0) & (experts < num_experts)).all(),
                            f"grouped_expert_linear: experts must hold ids in [0, {num_experts})")


def grouped_expert_linear(x: torch.Tensor, cu_seqlens: torch.Tensor, experts: torch.Tensor,
                          gates: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                          backend: str | None = None, plan: GroupedLinearPlan | None = None) -> torch.Tensor:
    """Project every segment's tokens with the gated mix of that segment's top-k experts.

    Args:
        x: [N, d_in] packed tokens of S segments (float32/float16/bfloat16; float64 on the
            ``"cpu"``/``"reference"`` paths).
        cu_seqlens: int32/int64 [S+1] segment boundaries (0, ..., N; empty segments allowed).
        experts: int32/int64 [S, k] expert ids in [0, E) (k = 1..E; repeats add up).
        gates: [S, k] mixing weights (any float dtype; its gradient comes back in that dtype).
        weight: [E, d_in, d_out] in x's dtype. bias: [E, d_out] or None.
        backend: None (automatic), "triton", "cpu" or "reference".
        plan: the Triton kernels' plan from :func:`grouped_linear_plan` for these
            ``cu_seqlens``/``experts`` (built here when None; other backends ignore it).

    Returns:
        [N, d_out] in x's dtype: ``Σ_i gates[s,i] · (x_t @ weight[experts[s,i]] + bias[...])``.
    """
    _validate(x, cu_seqlens, experts, gates, weight, bias)
    # Kernels read the routing tables at unit stride: strided views (same values) are copied.
    cu_seqlens, experts, gates = cu_seqlens.contiguous(), experts.contiguous(), gates.contiguous()
    name = _backend.choose(OP, backend, x.device, SUPPORTS, dtype=x.dtype)
    if name == "reference":
        return grouped_expert_linear_reference(x, cu_seqlens, experts, gates, weight, bias)
    if name != "triton":
        return _grouped_expert_linear_op(x, cu_seqlens, experts, gates, weight, bias, None, None, 0, "aten")
    if plan is None:
        plan = _build_plan(cu_seqlens, experts, weight.shape[0], x.shape[0])
    else:
        _check_plan(plan, cu_seqlens, experts, x.shape[0], weight.shape[0])
    return _grouped_expert_linear_op(x, cu_seqlens, experts, gates, weight, bias,
                                     plan.tiles, plan.routing, plan.block_m, "triton")
