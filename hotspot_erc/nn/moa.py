"""Mixture-of-Aligners (DESIGN §3.2–3.4): routed expert alignment between modalities.

For every ordered modality pair k→j (source k, target j) and every utterance s:

1. a router reads the mean of the target's frames of s, ``logits_s = W_r · pool_j(s)`` ([S, E]),
   keeps the top-k logits and mixes with their softmax (TopK-masked softmax);
2. the source frames of s go through the gated mix of the chosen expert aligners
   (:func:`~hotspot_erc.ops.grouped_linear.grouped_expert_linear`). Each expert maps a
   source frame straight to an aligned (key, value) pair, ``[d] -> [2d]``: a mix of linear
   aligners followed by a shared linear key/value projection is the same family of functions,
   so the separate projection would only add a GEMM;
3. the target frames of s cross-attend to those aligned source frames —
   :func:`~hotspot_erc.ops.varlen_attention.varlen_cross_attention`, multi-head — and an output
   projection maps the result back to d.

Target j's output is ``LayerNorm(x_j + dropout(Σ_{k≠j} attn_{k→j}))`` (post-norm residual).
:class:`PairAligner` holds one pair's parameters and computes it alone (the per-pair spec);
:class:`MixtureOfAligners` runs all pairs at once on their stacked parameters (a fixed
number of launches, not one set per pair), with the same results.
Utterances whose target or source stream is empty (a missing modality) still get a routing row
but count for neither the attention (zeros) nor the load-balancing loss.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from hotspot_erc.nn.align_objective import alignment_contrast
from hotspot_erc.nn.attention_inspect import hotspot_attention_mass
from hotspot_erc.nn.routing import batched_routing, load_balancing_loss, topk_masked_softmax  # noqa: F401
from hotspot_erc.ops import _backend
from hotspot_erc.ops.grouped_linear import grouped_expert_linear
from hotspot_erc.ops.varlen_attention import varlen_cross_attention
# segment_mean is re-exported for imports written before hotspot_erc.segments held it.
from hotspot_erc.segments import Segments, gather_rows, segment_broadcast, segment_mean, segment_sum_by_lengths  # noqa: F401


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
    # per pair, when asked (``record_qk``): the detached (q [N_t, H, Dh], k [N_s, H, Dh],
    # cu_q [S+1], cu_k [S+1]) the attention used, for frame-level instruments
    attention_qk: dict[str, tuple] = field(default_factory=dict)
    # when asked (``contrast``): the cross-utterance alignment objective, mean over pairs
    align_loss: torch.Tensor | None = None


class PairAligner(nn.Module):
    """Router, expert aligners and cross-attention of one ordered modality pair (source→target).

    :class:`MixtureOfAligners` keeps its pairs' parameters here (state_dict keys
    ``aligners.<s>_<t>.*``) but stacks them and runs every pair in one batched computation;
    :meth:`forward` is the same computation for this pair alone."""

    def __init__(self, dim: int, num_experts: int, top_k: int, num_heads: int, shared_expert: bool = False):
        super().__init__()
        self.num_experts, self.top_k, self.num_heads = num_experts, top_k, num_heads
        self.shared_expert = shared_expert
        self.router = nn.Linear(dim, num_experts, bias=False)
        self.query = nn.Linear(dim, dim)
        self.expert_weight = nn.Parameter(torch.empty(num_experts, dim, 2 * dim))
        self.expert_bias = nn.Parameter(torch.empty(num_experts, 2 * dim))
        if shared_expert:
            # One aligner every utterance uses with gate 1, beside the routed ones: what all
            # utterances share (a global key map) is learned once instead of by every expert.
            self.shared_weight = nn.Parameter(torch.empty(1, dim, 2 * dim))
            self.shared_bias = nn.Parameter(torch.empty(1, 2 * dim))
        self.out = nn.Linear(dim, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # nn.Linear's default init, drawn independently per expert so experts start apart.
        bound = 1.0 / math.sqrt(self.expert_weight.shape[1])
        nn.init.uniform_(self.expert_weight, -bound, bound)
        nn.init.uniform_(self.expert_bias, -bound, bound)
        if self.shared_expert:
            nn.init.uniform_(self.shared_weight, -bound, bound)
            nn.init.uniform_(self.shared_bias, -bound, bound)

    def expert_params(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Weights [E(+1), d, 2d] and biases [E(+1), 2d] of the aligners; the shared one last."""
        if not self.shared_expert:
            return self.expert_weight, self.expert_bias
        return torch.cat([self.expert_weight, self.shared_weight]), torch.cat([self.expert_bias, self.shared_bias])

    def forward(self, target, cu_target, source, cu_source, pooled_target, valid, backend=None, hotspots=None):
        """``hotspots``: optional (target mask, source mask) to also return the attention mass
        statistics of :func:`~hotspot_erc.nn.attention_inspect.hotspot_attention_mass`."""
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
        weight, bias = self.expert_params()
        sel, mix = with_shared_expert(experts, gates, self.num_experts, self.shared_expert)
        kv = grouped_expert_linear(source.to(dt), cu_source, sel, mix.to(dt), weight.to(dt), bias.to(dt),
                                   backend=backend)
        k, v = kv.view(-1, 2, heads, d // heads).unbind(1)
        attn = varlen_cross_attention(q, k, v, cu_target, cu_source, backend=backend)
        mass = None
        if hotspots is not None:
            mass = hotspot_attention_mass(q, k, cu_target, cu_source, hotspots[0], hotspots[1],
                                          (d // heads) ** -0.5)
        return self.out(attn.reshape(-1, d)), lb, RoutingInfo(experts, gates, usage), mass


def with_shared_expert(experts: torch.Tensor, gates: torch.Tensor, num_experts: int, shared: bool):
    """The routed (experts [S, k], gates [S, k]) with the shared aligner (id ``num_experts``,
    gate 1) appended as a (k+1)-th column when ``shared``."""
    if not shared:
        return experts, gates
    col = experts.new_full((experts.shape[0], 1), num_experts)
    return torch.cat([experts, col], 1), torch.cat([gates, gates.new_ones(gates.shape[0], 1)], 1)


def hotspot_frames(x: torch.Tensor, cu_seqlens: Segments | torch.Tensor, peaks: torch.Tensor, radius: int) -> tuple:
    """The frames of each utterance's hotspot windows as a fixed-size packed stream, for
    :class:`MixtureOfAligners` ``sources``: ``(frames [S·K·W, d], cu_seqlens [S+1], has [S])``
    with W = 2·radius + 1 slots around each of the K peaks (``peaks`` [S, K], -1 = no window).

    Fixed sizes keep this free of host synchronisation: slots past an utterance's end repeat its
    edge frame, missing windows repeat the first one, and ``has`` is False for an utterance with
    no window (its slots point anywhere; the caller drops what they produce).
    """
    if isinstance(cu_seqlens, Segments):
        cu_seqlens = cu_seqlens.cu_seqlens
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
    return gather_rows(x, idx), cu, valid[:, 0]


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
                 num_heads: int = 4, dropout: float = 0.0, backend: str | None = None, shared_expert: bool = False):
        super().__init__(dim, modalities, num_heads, dropout, backend)
        if num_experts < 1:
            raise ValueError(f"num_experts must be >= 1, got {num_experts}")
        if not 1 <= top_k <= num_experts:
            raise ValueError(f"top_k must be in [1, num_experts={num_experts}], got {top_k}")
        self.num_experts, self.top_k, self.shared_expert = num_experts, top_k, shared_expert
        # ModuleDict keys may not contain "."; "a_t" = source a, target t.
        self.aligners = nn.ModuleDict({f"{s}_{t}": PairAligner(dim, num_experts, top_k, num_heads, shared_expert)
                                       for s, t in self.pairs})

    def forward(self, feats: dict[str, torch.Tensor], cu_seqlens: dict[str, torch.Tensor | Segments],
                hotspot_mask: dict[str, torch.Tensor] | None = None,
                sources: dict[str, tuple] | None = None, record_qk: bool = False,
                source_hotspot_mask: dict[str, torch.Tensor] | None = None,
                contrast: tuple[dict, dict, int | None] | None = None) -> MoAOutput:
        """``cu_seqlens[m]``: offsets [S+1], or the batch's :class:`~hotspot_erc.segments.Segments`
        (its lengths and presence are then used as they are).
        ``hotspot_mask`` (optional, bool [N_m] per modality): also measure where attention
        looks (``MoAOutput.attention_mass``); for evaluation, it recomputes the probabilities.
        ``sources`` (optional): per modality ``(frames [P, dim], cu_seqlens [S+1], has [S] bool)``,
        the frames its targets attend to instead of all of ``feats[m]`` (e.g. its hotspot
        windows, :func:`hotspot_frames`); an utterance with ``has`` False contributes nothing.
        ``record_qk``: also return each pair's queries and keys (``MoAOutput.attention_qk``).
        ``contrast``: ``(rows, frames, group)``, per modality a padded ``(index [S, L], mask [S, L])``
        (:func:`~hotspot_erc.nn.align_objective.padded_rows`) of its query rows (as target) and
        of its source-stream frames (as source), and the utterances per contrast group (None =
        the whole batch); MoA then also returns
        ``MoAOutput.align_loss``, the mean over pairs of
        :func:`~hotspot_erc.nn.align_objective.alignment_contrast` (see :meth:`_contrast`).
        ``source_hotspot_mask``: the masks of the ``sources`` rows, when those are not ``feats``'
        (with ``hotspot_mask`` for the target rows).

        Every pair runs at once (the same computation as :class:`PairAligner` per pair, in a
        fixed number of launches whatever the number of pairs): one router matmul, one batched
        routing, one ``grouped_expert_linear`` over the P pairs' source streams laid end to end
        (pair p's experts are ids p·E.. of the stacked expert weights), one query projection and
        one output projection per target (stacked weights), one ``varlen_cross_attention`` over
        the P·S (pair, utterance) segments. The pairs' parameters stay where they are
        (``aligners["a_t"]``); they are stacked at run time.
        """
        segs = {m: v for m, v in cu_seqlens.items() if isinstance(v, Segments)}
        cu_seqlens = {m: v.cu_seqlens if isinstance(v, Segments) else v for m, v in cu_seqlens.items()}
        self._check(feats, cu_seqlens)
        mods, pairs = self.modalities, self.pairs
        n_mod, n_pairs, others = len(mods), len(pairs), len(mods) - 1
        h, d, n_exp = self.num_heads, self.dim, self.num_experts
        aligners = [self.aligners[f"{s}_{t}"] for s, t in pairs]
        src = {m: (feats[m], cu_seqlens[m]) for m in mods}
        if sources is not None:
            src.update({m: (v[0], v[1]) for m, v in sources.items() if m in src})
        num_seg = cu_seqlens[mods[0]].shape[0] - 1

        # Lengths of every pair's key and query streams, [2P, S]: pairs' source streams first,
        # then their targets' (pairs are target-major, so target t is rows P + t·(M-1)...). One
        # stack of the given Segments' lengths, else one difference over the stacked offsets.
        if sources is None and len(segs) == n_mod:
            lengths = torch.stack([segs[s].lengths for s, _ in pairs] + [segs[t].lengths for _, t in pairs])
        else:
            cu = torch.stack([src[s][1].long() for s, _ in pairs] + [cu_seqlens[t].long() for _, t in pairs])
            lengths = cu[:, 1:] - cu[:, :-1]
        cu_all = F.pad(lengths.view(2, n_pairs * num_seg).cumsum(1), (1, 0))
        cu_k, cu_q = cu_all[0], cu_all[1]                               # [P·S + 1] each
        len_mod = lengths[n_pairs:].view(n_mod, others, num_seg)[:, 0]  # [M, S] (views)
        nonempty = lengths > 0
        present = nonempty[n_pairs:].view(n_mod, others, num_seg)[:, 0]
        if sources is None:
            valid = nonempty[:n_pairs] & nonempty[n_pairs:]             # [P, S]
        else:  # routing counts the utterances where both feats streams have frames
            both = present[:, None] & present[None]                     # [M (target), M (source), S]
            valid = both.view(n_mod * n_mod, num_seg)[1:].view(others, n_mod + 1, num_seg)[:, :n_mod]
            valid = valid.reshape(n_pairs, num_seg)                     # off-diagonal, target-major

        # Router: mean of each target's frames (= segment_mean), one batched matmul for all pairs.
        x0 = feats[mods[0]]
        totals = torch.stack([segment_sum_by_lengths(feats[m], len_mod[i]) for i, m in enumerate(mods)])
        pooled = totals / len_mod.clamp(min=1).to(totals.dtype).unsqueeze(-1)   # [M, S, d]
        w_router = torch.stack([al.router.weight for al in aligners])             # [P, E, d]
        logits = torch.bmm(pooled, w_router.view(n_mod, others * n_exp, d).transpose(1, 2))
        logits = logits.view(n_mod, num_seg, others, n_exp).transpose(1, 2).reshape(n_pairs, num_seg, n_exp)
        if logits.dtype in (torch.float16, torch.bfloat16):
            logits = logits.float()  # top-k ties and the softmax are better decided in float32
        experts, gates, usage, lb = batched_routing(logits, self.top_k, n_exp, valid)

        # Queries: one Linear per target on its pairs' stacked weights, pair-major rows.
        w_q = torch.stack([al.query.weight for al in aligners]).view(n_mod, others * d, d).unbind(0)
        b_q = torch.stack([al.query.bias for al in aligners]).view(n_mod, others * d).unbind(0)
        q_pairs = []
        for i, t in enumerate(mods):
            q_pairs.extend(F.linear(feats[t], w_q[i], b_q[i]).split(d, dim=1))
        q = torch.cat(q_pairs)                                         # [Σ_p N_t(p), d]
        dt = q.dtype  # under autocast the Linear picks it; the custom ops do not

        # Keys/values: every pair's source stream end to end, one grouped call (experts p·E..).
        x_src = torch.cat([src[s][0] for s, _ in pairs]).to(dt)
        n_all = n_exp + int(self.shared_expert)  # aligners per pair, the shared one last
        sel, mix = with_shared_expert(experts.view(n_pairs * num_seg, -1), gates.view(n_pairs * num_seg, -1),
                                      n_exp, self.shared_expert)
        sel, mix = sel.view(n_pairs, num_seg, -1), mix.view(n_pairs, num_seg, -1)
        offset = torch.arange(0, n_pairs * n_all, n_all, device=experts.device, dtype=experts.dtype)
        params = [al.expert_params() for al in aligners]
        w_kv = torch.stack([w for w, _ in params]).view(n_pairs * n_all, d, 2 * d).to(dt)
        b_kv = torch.stack([b for _, b in params]).view(n_pairs * n_all, 2 * d).to(dt)
        kv = grouped_expert_linear(x_src, cu_k, (sel + offset.view(-1, 1, 1)).view(n_pairs * num_seg, -1),
                                   mix.view(n_pairs * num_seg, -1).to(dt), w_kv, b_kv, backend=self.backend)
        k, v = kv.view(-1, 2, h, d // h).unbind(1)
        q = q.view(-1, h, d // h)
        attn = varlen_cross_attention(q, k, v, cu_q, cu_k, backend=self.backend)

        n_q = [feats[t].shape[0] for _, t in pairs]
        masses: dict[str, torch.Tensor] = {}
        qk: dict[str, tuple] = {}
        # Per pair (its queries, its keys): for the instruments only.
        per_pair = [] if not (record_qk or hotspot_mask is not None) else \
            list(zip(pairs, q.split(n_q), k.split([src[s][0].shape[0] for s, _ in pairs])))
        if record_qk:
            for (s, t), q_p, k_p in per_pair:
                qk[pair_key(s, t)] = (q_p.detach(), k_p.detach(), cu_seqlens[t], src[s][1])
        if hotspot_mask is not None:
            for (s, t), q_p, k_p in per_pair:
                if source_hotspot_mask is not None:
                    hot_src = source_hotspot_mask[s]
                elif sources is None or s not in sources:
                    hot_src = hotspot_mask[s]
                else:  # window frames only: every key is a hotspot frame
                    hot_src = torch.ones(src[s][0].shape[0], dtype=torch.bool, device=x0.device)
                masses[pair_key(s, t)] = hotspot_attention_mass(q_p, k_p, cu_seqlens[t], src[s][1],
                                                                hotspot_mask[t], hot_src, (d // h) ** -0.5)

        align_loss = None
        if contrast is not None:
            align_loss = self._contrast(contrast, q, x_src, w_kv, b_kv, sel, mix,
                                        n_q, [src[s][0].shape[0] for s, _ in pairs])

        # Output projections: Σ_pairs out_p(attn_p) = one matmul of the target's pairs' outputs
        # side by side with the stacked transposed weights, plus the summed biases.
        attn = attn.view(-1, d)
        mixed = {}
        if sources is None:
            w_o = torch.stack([al.out.weight.t() for al in aligners]).view(n_mod, others * d, d).unbind(0)
            b_o = torch.stack([al.out.bias for al in aligners]).view(n_mod, others, d).sum(1).unbind(0)
            blocks = attn.split([others * feats[t].shape[0] for t in mods])
            for i, t in enumerate(mods):
                a_t = blocks[i].view(others, -1, d).transpose(0, 1).reshape(-1, others * d)
                mixed[t] = torch.addmm(b_o[i], a_t, w_o[i])
        else:  # per pair: the stand-in rows of utterances without source frames are dropped
            for (s, t), al, a_p in zip(pairs, aligners, attn.split(n_q)):
                out = al.out(a_p)
                if s in sources:
                    has = sources[s][2]
                    out = out * segment_broadcast(has.to(out.dtype).unsqueeze(1), segs.get(t, cu_seqlens[t]), out.shape[0])
                mixed[t] = out if t not in mixed else mixed[t] + out
            mixed = {m: mixed[m] for m in mods}
        routing = {pair_key(s, t): RoutingInfo(experts[p], gates[p], usage[p]) for p, (s, t) in enumerate(pairs)}
        return MoAOutput(outputs=self._residual(feats, mixed), lb_loss=lb.sum(), routing=routing,
                         residual_ratio=self._residual_ratio(feats, mixed), attention_mass=masses,
                         attention_qk=qk, align_loss=align_loss)

    def _contrast(self, contrast, q, x_src, w_kv, b_kv, experts, gates, n_q, n_k) -> torch.Tensor:
        """The cross-utterance alignment objective over every pair, scored exactly as the
        attention would score query rows of utterance s against the frames of utterance u had s
        attended to them: keys made with *s's* expert mix, not u's. Keys computed with u's own
        routing would carry u's target content through the gates and expert biases, a shortcut
        that identifies u without matching anything (measured: the objective then drops while
        attention never finds the matched burst).

        ``q·k^(s)_f = Σ_e G_se (q·k_e(f))`` with G the dense gates [S, E(+1)]: every aligner's keys
        once, side by side, against copies of the query scaled by s's gates, so one dot product
        over (aligner, channel) gives the mixed score. When the aligners outnumber the heads it is
        cheaper to move the query into the source's input space instead,
        ``q̃ = Σ_e G_se W_e q`` and ``q·k^(s)_f = q̃·x_f + Σ_e G_se q·b_e`` (same numbers)."""
        rows, frames, group = contrast
        h, d, n_all = self.num_heads, self.dim, self.num_experts + int(self.shared_expert)
        dh = d // h
        w_k = w_kv[:, :, :d].reshape(len(self.pairs), n_all, d, h, dh)
        b_k = b_kv[:, :d].reshape(len(self.pairs), n_all, h, dh)
        losses = []
        for p, ((s, t), q_p, x_p) in enumerate(zip(self.pairs, q.split(n_q), x_src.split(n_k))):
            q_idx, q_mask = rows[t]
            k_idx, k_mask = frames[s]
            qs = gather_rows(q_p.reshape(q_p.shape[0], -1), q_idx.reshape(-1)).view(*q_idx.shape, h, dh)
            xs = gather_rows(x_p, k_idx.reshape(-1)).view(*k_idx.shape, d)
            acc = torch.float64 if qs.dtype == torch.float64 else torch.float32
            qs, xs = qs.to(acc) * dh ** -0.5, xs.to(acc)  # the attention's scale, on the small tensor
            # dense gates [S, E(+1)]; a comparison, not F.one_hot, which reads the ids on a GPU
            hot = experts[p].unsqueeze(-1) == torch.arange(n_all, device=experts.device)
            mix = (hot.to(acc) * gates[p].to(acc).unsqueeze(-1)).sum(1)
            w, b = w_k[p].to(acc), b_k[p].to(acc)
            if n_all <= h:  # every aligner's keys side by side; the gates scale the query's copies
                keys = torch.einsum("sfd,edhc->sfhec", xs, w) + b.transpose(0, 1)        # [S, L_k, H, E, Dh]
                q_mix = qs.unsqueeze(3) * mix[:, None, None, :, None]                   # [S, L_q, H, E, Dh]
                losses.append(alignment_contrast(q_mix.flatten(3), q_mask, keys.flatten(3), k_mask, 1.0,
                                                 group=group))
            else:  # the query moved into the source's input space
                q_in = torch.einsum("se,edhc,slhc->slhd", mix, w, qs)
                bias = torch.einsum("se,ehc,slhc->slh", mix, b, qs)
                losses.append(alignment_contrast(q_in, q_mask, xs, k_mask, 1.0, row_bias=bias, group=group))
        return torch.stack(losses).mean()


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
        cu_seqlens = {m: v.cu_seqlens if isinstance(v, Segments) else v for m, v in cu_seqlens.items()}
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
