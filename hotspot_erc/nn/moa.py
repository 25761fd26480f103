"""Mixture-of-Aligners (DESIGN §3.2–3.4): routed expert alignment between modalities.

For every ordered modality pair k→j (source k, target j) and every utterance s:

1. a router reads the mean of the target's frames of s, ``logits_s = W_r · pool_j(s)`` ([S, E]),
   keeps the top-k logits and mixes with their softmax (TopK-masked softmax);
2. the source frames of s go through the gated mix of the chosen expert aligners — one
   :func:`~hotspot_erc.ops.grouped_linear.grouped_expert_linear` call per pair. Each expert maps a
   source frame straight to an aligned (key, value) pair, ``[d] -> [2d]``: a mix of linear
   aligners followed by a shared linear key/value projection is the same family of functions,
   so the separate projection would only add a GEMM;
3. the target frames of s cross-attend to those aligned source frames —
   :func:`~hotspot_erc.ops.varlen_attention.varlen_cross_attention`, multi-head — and an output
   projection maps the result back to d.

Target j's output is ``LayerNorm(x_j + dropout(Σ_{k≠j} attn_{k→j}))`` (post-norm residual).
Utterances whose target or source stream is empty (a missing modality) still get a routing row
but count for neither the attention (zeros) nor the load-balancing loss.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from hotspot_erc.nn.attention_inspect import hotspot_attention_mass
from hotspot_erc.ops import _backend
from hotspot_erc.ops import segment as _segment
from hotspot_erc.ops.grouped_linear import grouped_expert_linear
from hotspot_erc.reference.routing import load_balancing_loss, topk_masked_softmax


@dataclass
class RoutingInfo:
    """Routing of one modality pair: ``experts`` LongTensor [S, k], ``gates`` [S, k] and
    ``usage`` [E] (share of the utterances' slots that went to each expert; sums to 1 when any
    utterance has both streams)."""

    experts: torch.Tensor
    gates: torch.Tensor
    usage: torch.Tensor


@dataclass
class MoAOutput:
    """``outputs[m]``: [N_m, dim] frame-level features after residual + norm; ``lb_loss``: scalar
    load-balancing loss summed over pairs; ``routing["a->t"]``: :class:`RoutingInfo` of the pair
    whose source is "a" and target "t"."""

    outputs: dict[str, torch.Tensor]
    lb_loss: torch.Tensor
    routing: dict[str, RoutingInfo]
    # ‖Σ pair outputs‖ / ‖x‖ per target (detached): how much alignment changes a stream
    residual_ratio: dict[str, torch.Tensor] = field(default_factory=dict)
    # per pair, when hotspot masks were given: float64 [3] sums (mass of target hotspot frames on
    # source hotspot frames, uniform attention's mass there, frames), see nn.attention_inspect
    attention_mass: dict[str, torch.Tensor] = field(default_factory=dict)


def segment_mean(x: torch.Tensor, cu_seqlens: torch.Tensor) -> torch.Tensor:
    """Mean of each segment's rows, [S, d]; zeros for empty segments. Deterministic (ordered
    segment reductions forward and backward, no atomics) and without host sync."""
    return _segment.segment_mean(x, cu_seqlens)


class PairAligner(nn.Module):
    """Router, expert aligners and cross-attention of one ordered modality pair (source→target)."""

    def __init__(self, dim: int, num_experts: int, top_k: int, num_heads: int):
        super().__init__()
        self.num_experts, self.top_k, self.num_heads = num_experts, top_k, num_heads
        self.router = nn.Linear(dim, num_experts, bias=False)
        self.query = nn.Linear(dim, dim)
        self.expert_weight = nn.Parameter(torch.empty(num_experts, dim, 2 * dim))
        self.expert_bias = nn.Parameter(torch.empty(num_experts, 2 * dim))
        self.out = nn.Linear(dim, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # nn.Linear's default init, drawn independently per expert so experts start apart.
        bound = 1.0 / math.sqrt(self.expert_weight.shape[1])
        nn.init.uniform_(self.expert_weight, -bound, bound)
        nn.init.uniform_(self.expert_bias, -bound, bound)

    def forward(self, target, cu_target, source, cu_source, pooled_target, valid, backend=None, hotspots=None):
        """``hotspots``: optional (target mask, source mask) to also return the attention mass
        statistics of :func:`~hotspot_erc.nn.attention_inspect.hotspot_attention_mass`."""
        from hotspot_erc.ops.varlen_attention import varlen_cross_attention

        logits = self.router(pooled_target)
        if logits.dtype in (torch.float16, torch.bfloat16):
            logits = logits.float()  # top-k ties and the softmax are better decided in float32
        experts, gates, probs = topk_masked_softmax(logits, self.top_k)
        lb, usage = load_balancing_loss(probs, experts, self.num_experts, valid)
        heads = self.num_heads
        d = target.shape[1]
        q = self.query(target).view(-1, heads, d // heads)
        # Everything in the query's dtype (under autocast nn.Linear picks it; the custom op
        # does not): the op wants source and weight in one dtype, attention q/k/v in one too.
        dt = q.dtype
        kv = grouped_expert_linear(source.to(dt), cu_source, experts, gates,
                                   self.expert_weight.to(dt), self.expert_bias.to(dt), backend=backend)
        k, v = kv.view(-1, 2, heads, d // heads).unbind(1)
        attn = varlen_cross_attention(q, k, v, cu_target, cu_source, backend=backend)
        mass = None
        if hotspots is not None:
            mass = hotspot_attention_mass(q, k, cu_target, cu_source, hotspots[0], hotspots[1],
                                          (d // heads) ** -0.5)
        return self.out(attn.reshape(-1, d)), lb, RoutingInfo(experts, gates, usage), mass


def hotspot_frames(x: torch.Tensor, cu_seqlens: torch.Tensor, peaks: torch.Tensor, radius: int) -> tuple:
    """The frames of each utterance's hotspot windows as a fixed-size packed stream, for
    :class:`MixtureOfAligners` ``sources``: ``(frames [S·K·W, d], cu_seqlens [S+1], has [S])``
    with W = 2·radius + 1 slots around each of the K peaks (``peaks`` [S, K], -1 = no window).

    Fixed sizes keep this free of host synchronisation: slots past an utterance's end repeat its
    edge frame, missing windows repeat the first one, and ``has`` is False for an utterance with
    no window (its slots point anywhere; the caller drops what they produce).
    """
    s_count, k_count = peaks.shape
    width = 2 * radius + 1
    start = cu_seqlens[:-1].long()
    last = cu_seqlens[1:].long() - 1
    valid = peaks >= 0
    centre = torch.where(valid, peaks, peaks[:, :1])  # [S, K]
    idx = centre[:, :, None] + torch.arange(-radius, radius + 1, device=peaks.device)  # [S, K, W]
    idx = torch.maximum(torch.minimum(idx, last[:, None, None]), start[:, None, None])
    idx = idx.clamp(0, max(x.shape[0] - 1, 0)).reshape(-1)
    cu = torch.arange(s_count + 1, device=peaks.device, dtype=cu_seqlens.dtype) * (k_count * width)
    return _segment.gather_rows(x, idx), cu, valid[:, 0]


def pair_key(source: str, target: str) -> str:
    return f"{source}->{target}"


class _CrossModalBlock(nn.Module):
    """Shared skeleton: every ordered pair (source, target) contributes an attention output to
    its target; each target gets ``LayerNorm(x + dropout(Σ pair outputs))``."""

    def __init__(self, dim: int, modalities, num_heads: int, dropout: float, backend: str | None):
        super().__init__()
        modalities = tuple(modalities)
        if len(modalities) < 2:
            raise ValueError(f"{type(self).__name__} needs at least 2 modalities to align, got {modalities}")
        if len(set(modalities)) != len(modalities):
            raise ValueError(f"modalities must be distinct, got {modalities}")
        if dim % num_heads:
            raise ValueError(f"num_heads ({num_heads}) must divide dim ({dim})")
        self.dim, self.modalities, self.num_heads, self.backend = dim, modalities, num_heads, backend
        self.pairs = [(s, t) for t in modalities for s in modalities if s != t]
        self.norms = nn.ModuleDict({m: nn.LayerNorm(dim) for m in modalities})
        self.dropout = nn.Dropout(dropout)

    def _check(self, feats, cu_seqlens) -> None:
        num_seg = None
        for m in self.modalities:
            if m not in feats or m not in cu_seqlens:
                raise KeyError(f"{type(self).__name__} was built for modalities {self.modalities}: "
                               f"feats and cu_seqlens need key {m!r}")
            x, cu = feats[m], cu_seqlens[m]
            _backend.check_tensor(f"feats[{m!r}]", x, dtypes=_backend.FLOAT_DTYPES)
            if x.dim() != 2 or x.shape[1] != self.dim:
                raise ValueError(f"feats[{m!r}] must have shape [N, {self.dim}], got {tuple(x.shape)}")
            if not isinstance(cu, torch.Tensor) or cu.dim() != 1:
                shape = tuple(cu.shape) if isinstance(cu, torch.Tensor) else type(cu).__name__
                raise ValueError(f"cu_seqlens[{m!r}] must be a 1-D tensor [S+1], got {shape}")
            if num_seg is None:
                num_seg = cu.shape[0]
            elif cu.shape[0] != num_seg:
                raise ValueError("every modality's cu_seqlens must count the same utterances, got "
                                 + ", ".join(f"{k}: {cu_seqlens[k].shape[0] - 1}" for k in self.modalities))
        for m in self.modalities:
            # dtype, device and (for CPU tensors) values: the ops would reject them later, with
            # names the caller never used.
            _backend.check_cu_seqlens(f"cu_seqlens[{m!r}]", cu_seqlens[m], feats[m].shape[0], feats[m].device)

    def _residual(self, feats, mixed) -> dict[str, torch.Tensor]:
        return {m: self.norms[m](feats[m] + self.dropout(mixed[m])) for m in self.modalities}

    @staticmethod
    def _residual_ratio(feats, mixed) -> dict[str, torch.Tensor]:
        return {m: (mixed[m].detach().norm() / feats[m].detach().norm().clamp(min=1e-12)) for m in mixed}


class MixtureOfAligners(_CrossModalBlock):
    """Routed cross-modal alignment for every ordered pair of ``modalities``.

    Args:
        dim: feature size of every modality (frames already projected to a shared d).
        modalities: single-letter keys, at least two ("t", "a", "v" by default).
        num_experts: expert aligners per pair (E). top_k: experts per utterance (1..E).
        num_heads: attention heads; must divide ``dim``.
        dropout: on the summed cross-attention before the residual.
        backend: forwarded to both ops (None = automatic; "reference" gives the eager baseline).

    ``forward(feats, cu_seqlens)`` takes ``feats[m]`` [N_m, dim] packed frames and
    ``cu_seqlens[m]`` [S+1] (same S for every modality; a missing modality of an utterance is an
    empty segment) and returns a :class:`MoAOutput`.
    """

    def __init__(self, dim: int, modalities=("t", "a", "v"), num_experts: int = 4, top_k: int = 2,
                 num_heads: int = 4, dropout: float = 0.0, backend: str | None = None):
        super().__init__(dim, modalities, num_heads, dropout, backend)
        if num_experts < 1:
            raise ValueError(f"num_experts must be >= 1, got {num_experts}")
        if not 1 <= top_k <= num_experts:
            raise ValueError(f"top_k must be in [1, num_experts={num_experts}], got {top_k}")
        self.num_experts, self.top_k = num_experts, top_k
        # ModuleDict keys may not contain "."; "a_t" = source a, target t.
        self.aligners = nn.ModuleDict({f"{s}_{t}": PairAligner(dim, num_experts, top_k, num_heads)
                                       for s, t in self.pairs})

    def forward(self, feats: dict[str, torch.Tensor], cu_seqlens: dict[str, torch.Tensor],
                hotspot_mask: dict[str, torch.Tensor] | None = None,
                sources: dict[str, tuple] | None = None) -> MoAOutput:
        """``hotspot_mask`` (optional, bool [N_m] per modality): also measure where attention
        looks (``MoAOutput.attention_mass``); for evaluation, it recomputes the probabilities.
        ``sources`` (optional): per modality ``(frames [P, dim], cu_seqlens [S+1], has [S] bool)``,
        the frames its targets attend to instead of all of ``feats[m]`` (e.g. its hotspot
        windows, :func:`hotspot_frames`); an utterance with ``has`` False contributes nothing."""
        self._check(feats, cu_seqlens)
        pooled = {m: segment_mean(feats[m], cu_seqlens[m]) for m in self.modalities}
        present = {m: (cu_seqlens[m][1:] - cu_seqlens[m][:-1]) > 0 for m in self.modalities}
        mixed = {m: None for m in self.modalities}
        routing: dict[str, RoutingInfo] = {}
        masses: dict[str, torch.Tensor] = {}
        lb_total = feats[self.modalities[0]].new_zeros(())
        for s, t in self.pairs:
            if sources is not None and s in sources:
                src, cu_src, has = sources[s]
                hot_src = torch.ones(src.shape[0], dtype=torch.bool, device=src.device)
            else:
                src, cu_src, has = feats[s], cu_seqlens[s], present[s]
                hot_src = None if hotspot_mask is None else hotspot_mask[s]
            hot = None if hotspot_mask is None else (hotspot_mask[t], hot_src)
            out, lb, info, mass = self.aligners[f"{s}_{t}"](
                feats[t], cu_seqlens[t], src, cu_src, pooled[t], present[s] & present[t],
                self.backend, hotspots=hot)
            if sources is not None and s in sources:  # stand-in rows of utterances without frames
                out = out * _segment.segment_broadcast(has.to(out.dtype).unsqueeze(1), cu_seqlens[t], out.shape[0])
            mixed[t] = out if mixed[t] is None else mixed[t] + out
            lb_total = lb_total + lb
            routing[pair_key(s, t)] = info
            if mass is not None:
                masses[pair_key(s, t)] = mass
        return MoAOutput(outputs=self._residual(feats, mixed), lb_loss=lb_total, routing=routing,
                         residual_ratio=self._residual_ratio(feats, mixed), attention_mass=masses)


class PlainCrossModalAttention(_CrossModalBlock):
    """The same block without routing or experts: per pair one shared key/value projection of
    the source frames, then the same cross-attention, output projection, residual and norm.

    The "w/o MoA" ablation, and the baseline ``benchmarks/bench_moa.py`` measures MoA's overhead
    against. Returns a :class:`MoAOutput` with a zero ``lb_loss`` and empty ``routing``.
    """

    def __init__(self, dim: int, modalities=("t", "a", "v"), num_heads: int = 4, dropout: float = 0.0,
                 backend: str | None = None):
        super().__init__(dim, modalities, num_heads, dropout, backend)
        self.query = nn.ModuleDict({f"{s}_{t}": nn.Linear(dim, dim) for s, t in self.pairs})
        self.key_value = nn.ModuleDict({f"{s}_{t}": nn.Linear(dim, 2 * dim) for s, t in self.pairs})
        self.out = nn.ModuleDict({f"{s}_{t}": nn.Linear(dim, dim) for s, t in self.pairs})

    def forward(self, feats: dict[str, torch.Tensor], cu_seqlens: dict[str, torch.Tensor],
                hotspot_mask: dict[str, torch.Tensor] | None = None) -> MoAOutput:
        from hotspot_erc.ops.varlen_attention import varlen_cross_attention

        self._check(feats, cu_seqlens)
        mixed = {m: None for m in self.modalities}
        masses: dict[str, torch.Tensor] = {}
        h, d = self.num_heads, self.dim
        for s, t in self.pairs:
            key = f"{s}_{t}"
            q = self.query[key](feats[t]).view(-1, h, d // h)
            k, v = self.key_value[key](feats[s]).view(-1, 2, h, d // h).unbind(1)
            attn = varlen_cross_attention(q, k, v, cu_seqlens[t], cu_seqlens[s], backend=self.backend)
            if hotspot_mask is not None:
                masses[pair_key(s, t)] = hotspot_attention_mass(q, k, cu_seqlens[t], cu_seqlens[s], hotspot_mask[t],
                                                                hotspot_mask[s], (d // h) ** -0.5)
            out = self.out[key](attn.reshape(-1, d))
            mixed[t] = out if mixed[t] is None else mixed[t] + out
        lb = feats[self.modalities[0]].new_zeros(())
        return MoAOutput(outputs=self._residual(feats, mixed), lb_loss=lb, routing={},
                         residual_ratio=self._residual_ratio(feats, mixed), attention_mass=masses)
