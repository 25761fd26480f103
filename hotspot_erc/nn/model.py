"""HotspotERC: the whole model of DESIGN §1, with a switch for every ablation.

Per conversation batch and modality m::

    frames ─► Linear to d ─► x − β⊙mean_utt(x) ─► hotspot extraction (C_m, H_m)
           ─► HGF  X_m = α⊙H_m + (1-α)⊙C_m
           ─► frame encoder (varlen self-attention inside each utterance)
    ├─► MoA (ordered pairs k→j, frame level) ─► attention pooling per utterance
    └─► attention pooling ─► + speaker embedding ─► relational GNN over (modality, utterance) nodes
    ─► concat [MoA ; graph] per utterance ─► 2-layer MLP ─► logits [S, C]

With the defaults MoA's queries are HGF's rows at the hotspot peaks (``moa_input="gated"``), its
keys the projected frames, HGF's peak rows join MoA's output rows with a learned scale
(``hgf_join="scaled"``), and the graph starts from the MoA-pooled vectors (``graph_on_aligned``):
the encoder branch then feeds only the instruments.

Projected frames are first centred per utterance with a learned share β of the utterance mean
(``center=True``): offsets that are constant over an utterance (speaker, channel, session) would
otherwise dominate every frame, and hotspots are departures from the utterance, not offsets.

Ablations: ``hgf=False`` uses the global content C_m only; ``moa=False`` pools the encoder
frames without cross-modal alignment; ``graph=False`` drops the graph branch;
``temporal_edges`` / ``cross_modal_edges`` remove edge families; ``num_experts`` / ``top_k`` /
``gate`` / ``hotspot_source`` / ``modalities`` choose variants; ``modality_dropout`` hides random
(modality, utterance) inputs while training.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field

import torch
from torch import nn

from hotspot_erc.hotspots import LearnedScorer, extract_hotspots, rule_scores
from hotspot_erc.nn.align_objective import padded_rows
from hotspot_erc.nn.config import HOTSPOT_SOURCES, MODALITIES, ModelConfig  # noqa: F401  (re-exported)
from hotspot_erc.nn.encoder import AttentionPool, FrameEncoder
from hotspot_erc.nn.fusion import HotspotGatedFusion
from hotspot_erc.nn.graph import CrossModalGraph
from hotspot_erc.nn.moa import MixtureOfAligners, hotspot_frames
from hotspot_erc.segments import Segments, as_segments, segment_mean_broadcast

# Kept for imports written before hotspot_erc.segments: the per-row (broadcast) segment mean.
segment_mean = segment_mean_broadcast


@dataclass
class ModelOutput:
    """What :meth:`HotspotERC.forward` returns.

    ``gates[m]`` is the HGF gate α [N_m, g] (empty dict when HGF is off); ``scores[m]`` the frame
    intensity scores used for hotspot extraction (both detached: inspection only);
    ``hotspot_mask[m]`` the window membership [N_m];
    ``routing`` the MoA routing keyed "k->j" (empty when MoA is off); ``features`` the utterance
    vectors fed to the classifier [S, F]; ``cu_seqlens`` the segment boundaries actually used
    (modality dropout can empty segments in training) and ``segments`` their
    :class:`~hotspot_erc.segments.Segments`; ``graph_update`` ‖GNN output − input‖ /
    ‖input‖ over all nodes (detached; None without the graph): near 0 means the graph adds nothing.
    ``branches`` holds each representation the classifier could use, per utterance and detached:
    ``"encoder"`` (attention-pooled encoder frames), ``"moa"`` (pooled MoA output) and ``"graph"``;
    ``moa_residual[m]`` is ‖Σ alignment outputs‖ / ‖frames‖ of target m; ``attention_mass`` (only
    when ``model.inspect`` is set) the per-pair hotspot attention statistics of
    :func:`hotspot_erc.nn.attention_inspect.hotspot_attention_mass`; ``attention_qk`` (same
    condition) each pair's detached (q, k, cu_q, cu_k), for frame-level instruments such as
    :func:`hotspot_erc.train.probes.matched_burst_attention`; ``peaks[m]`` the hotspot window
    centres [S, K] (packed frame index, -1 = none); ``align_loss`` the unweighted cross-utterance
    alignment objective (:mod:`hotspot_erc.nn.align_objective`), computed in training when
    ``align_weight`` > 0, else None; ``hgf_join_ratio[m]`` (with ``hgf_join``) ‖HGF rows joined‖ /
    ‖MoA output rows‖ of target m (detached): how much of HGF's fused rows the MoA-pooled vector gets.
    """

    logits: torch.Tensor
    lb_loss: torch.Tensor
    gates: dict = field(default_factory=dict)
    scores: dict = field(default_factory=dict)
    hotspot_mask: dict = field(default_factory=dict)
    routing: dict = field(default_factory=dict)
    features: torch.Tensor | None = None
    cu_seqlens: dict = field(default_factory=dict)
    segments: dict = field(default_factory=dict)
    graph_update: torch.Tensor | None = None
    branches: dict = field(default_factory=dict)
    moa_residual: dict = field(default_factory=dict)
    attention_mass: dict = field(default_factory=dict)
    attention_qk: dict = field(default_factory=dict)
    peaks: dict = field(default_factory=dict)
    align_loss: torch.Tensor | None = None
    hgf_join_ratio: dict = field(default_factory=dict)


def drop_modalities(features: dict, cu_seqlens: dict, intensity: dict | None, p: float,
                    modalities: tuple[str, ...], generator: torch.Generator | None = None):
    """Hide each present (modality, utterance) input with probability ``p`` by emptying its
    segment; every utterance keeps at least one of the modalities it has.

    Returns new (features, cu_seqlens, intensity) dicts. Selecting the kept frames is a boolean
    index, which synchronises with a GPU: it runs only in training with ``p > 0``.
    """
    segs = {m: as_segments(cu_seqlens[m], features[m].shape[0]) for m in modalities}
    feats, segs, inten = drop_modality_segments(features, segs, intensity, p, modalities, generator)
    return feats, {m: segs[m].cu_seqlens for m in modalities}, inten


def drop_modality_segments(features: dict, segments: dict[str, Segments], intensity: dict | None, p: float,
                           modalities: tuple[str, ...], generator: torch.Generator | None = None):
    """:func:`drop_modalities` on :class:`~hotspot_erc.segments.Segments`: returns new
    (features, segments, intensity) dicts."""
    lengths = torch.stack([segments[m].lengths for m in modalities])  # [M, S]
    present = torch.stack([segments[m].present for m in modalities])
    r = torch.rand(lengths.shape, device=lengths.device, generator=generator)
    keep = (r >= p) & present
    # Utterances that lost everything get back the present modality with the largest draw.
    fallback = torch.where(present, r, torch.full_like(r, -1.0)).argmax(0)
    restore = torch.nn.functional.one_hot(fallback, len(modalities)).T.bool() & present
    keep = keep | (restore & ~keep.any(0, keepdim=True))
    feats, segs, inten = {}, {}, ({} if intensity is not None else None)
    for i, m in enumerate(modalities):
        n = features[m].shape[0]
        frame_keep = torch.repeat_interleave(keep[i], lengths[i], output_size=n)
        feats[m] = features[m][frame_keep]
        new_len = lengths[i] * keep[i]
        cu = segments[m].cu_seqlens
        segs[m] = Segments.from_segment_lengths(new_len, feats[m].shape[0],
                                                cu_seqlens=torch.cat([cu[:1], cu[:1] + torch.cumsum(new_len, 0)]))
        if inten is not None and m in intensity:
            inten[m] = intensity[m][frame_keep]
    return feats, segs, inten


# The graph branch's parameters were attributes of HotspotERC itself (speaker, gnn, gnn_norm)
# before CrossModalGraph owned them; checkpoints keep those keys, so the model writes and reads
# every key of the graph branch (those of graph_conv rgcn_transformer too) without the "graph."
# prefix of the submodule.


def _graph_keys_unprefixed(module, state_dict, prefix, local_metadata):
    inner = prefix + "graph."
    if any(k.startswith(inner) for k in state_dict):
        items = list(state_dict.items())  # rebuilt in place so the keys keep their order
        state_dict.clear()
        for k, v in items:
            state_dict[prefix + k[len(inner):] if k.startswith(inner) else k] = v


def _graph_keys_prefixed(module, state_dict, prefix, *args):
    graph = module._modules.get("graph")
    if graph is None:
        return
    parts = (set(graph._modules) | set(graph._parameters) | set(graph._buffers)) - set(module._modules)
    for k in [k for k in state_dict if k.startswith(prefix) and k[len(prefix):].split(".", 1)[0] in parts]:
        state_dict[prefix + "graph." + k[len(prefix):]] = state_dict.pop(k)


class HotspotERC(nn.Module):
    """Multimodal ERC model built around emotion hotspots (see module docstring).

    Args:
        dims: input feature size per modality, e.g. ``{"t": 32, "a": 24, "v": 16}``.
        num_classes: number of emotion classes.
        config: a :class:`~hotspot_erc.nn.config.ModelConfig` (or a dict of its fields; None = the
            defaults). Its fields are every option of the model, with their help texts.
        **overrides: single ``ModelConfig`` fields by keyword (``HotspotERC(dims, 6, d_model=32)``),
            applied on top of ``config``.

    ``model.config`` is the validated configuration the model was built from.
    """

    def __init__(self, dims: dict[str, int], num_classes: int, config: ModelConfig | dict | None = None,
                 **overrides):
        super().__init__()
        if config is None:
            config = ModelConfig()
        elif isinstance(config, dict):
            config = ModelConfig.from_dict(config)
        elif not isinstance(config, ModelConfig):
            raise TypeError(f"config must be a ModelConfig, a dict of its fields or None, got "
                            f"{type(config).__name__}; pass single options by keyword (d_model=...)")
        unknown = sorted(set(overrides) - set(ModelConfig.__dataclass_fields__))
        if unknown:
            raise TypeError(f"HotspotERC got unknown option(s) {unknown}; the options are the fields of ModelConfig")
        cfg = config.replace(**overrides).validate()
        mods = tuple(cfg.modalities)
        missing = [m for m in mods if m not in dims]
        if missing:
            raise ValueError(f"modalities {missing} were asked for but dims only has {sorted(dims)}")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
        moa = cfg.moa
        if moa and len(mods) < 2:
            # Text-only (or any single-modality) training is a supported setup: MoA has no pair
            # to align there, so it switches off with a note instead of refusing to build.
            logging.getLogger(__name__).warning(
                "MoA aligns pairs of modalities; with modalities=%r it is switched off", "".join(mods))
            moa = False
        self.config = cfg
        if cfg.hotspot_source == "learned" and moa and cfg.moa_input == "projected" and cfg.hgf_join == "none" \
                and cfg.graph_on_aligned and not cfg.encoder_skip:
            # The scorer learns only through HGF's soft windows; here nothing of HGF reaches the loss.
            logging.getLogger(__name__).warning(
                "hotspot_source='learned' gets no gradient with MoA on %s frames and graph_on_aligned: HGF's "
                "vectors do not reach the classifier; add hgf_join, moa_input='gated' or encoder_skip", cfg.moa_input)
        d_model, num_heads, dropout = cfg.d_model, cfg.num_heads, cfg.dropout
        self.modalities = mods
        self.dims = {m: int(dims[m]) for m in mods}
        self.num_classes = num_classes
        self.d_model = d_model
        self.hotspot_source = cfg.hotspot_source
        self.rule_kind = cfg.rule_kind
        self.num_windows = cfg.num_windows
        self.radius = cfg.radius
        self.soft_temperature = cfg.soft_temperature
        self.content_pool = cfg.resolved_content_pool
        self.use_hgf, self.use_moa, self.use_graph = cfg.hgf, moa, cfg.graph
        self.modality_dropout = cfg.modality_dropout

        self.proj = nn.ModuleDict({m: nn.Linear(self.dims[m], d_model) for m in mods})
        self.center = cfg.center
        if cfg.center:
            # x - β ⊙ mean_utterance(x), β learned per channel (starts at 1): removes what is
            # constant over an utterance (speaker / channel / session offsets) so hotspots stand
            # out; β can move to 0 where the utterance mean itself is the evidence.
            self.center_beta = nn.ParameterDict({m: nn.Parameter(torch.ones(d_model)) for m in mods})
        if cfg.hotspot_source == "learned":
            self.scorer = nn.ModuleDict({m: LearnedScorer(d_model) for m in mods})
        if cfg.hgf:
            self.hgf = nn.ModuleDict({m: HotspotGatedFusion(d_model, gate=cfg.gate) for m in mods})
            # For MoA's queries, which must start as the peak frames. The shift moves HGF's gate at
            # every frame, so the encoder's input outside the windows starts near 0 too; without
            # MoA reading HGF (no MoA, text only) HGF keeps nn.Linear's start near α = 0.5.
            if cfg.hgf_gate_bias and moa and cfg.moa_input == "gated":
                with torch.no_grad():
                    for fusion in self.hgf.values():
                        fusion.bias.add_(cfg.hgf_gate_bias)
        self.encoder = nn.ModuleDict({m: FrameEncoder(d_model, cfg.encoder_layers, num_heads, dropout=dropout)
                                      for m in mods})
        self.pool = nn.ModuleDict({m: AttentionPool(d_model, num_heads) for m in mods})
        width = len(mods) * d_model
        self.moa_keys = cfg.moa_keys
        self.moa_queries, self.moa_input = cfg.moa_queries, cfg.moa_input
        self.hotspot_pool = cfg.hotspot_pool
        self.align_weight = cfg.align_weight if moa else 0.0
        # The encoder's LayerNorms scale every frame to the same norm, so the small fused frames
        # outside hotspot windows come out as large as the hotspot frames; a learned marker added
        # to window frames keeps them distinguishable after normalisation.
        self.mark_hotspots = cfg.mark_hotspots
        if cfg.mark_hotspots:
            self.hotspot_marker = nn.ParameterDict({m: nn.Parameter(torch.randn(d_model) * d_model ** -0.5)
                                                    for m in mods})
        # Without MoA the classifier sees the encoder-pooled vectors; with it, the MoA-pooled ones,
        # and beside them the encoder-pooled ones when encoder_skip is on.
        self.encoder_skip = cfg.encoder_skip and moa
        self.graph_on_aligned = cfg.graph_on_aligned and moa
        if self.encoder_skip:
            width += len(mods) * d_model
        if moa:
            self.moa = MixtureOfAligners(d_model, modalities=mods, num_experts=cfg.num_experts, top_k=cfg.top_k,
                                         num_heads=num_heads, dropout=dropout, shared_expert=cfg.shared_expert)
            self.moa_pool = nn.ModuleDict({m: AttentionPool(d_model, num_heads) for m in mods})
        # The classifier sees HGF's own rows beside MoA's; with moa_input="projected" this is HGF's
        # only path to the loss besides encoder_skip or a graph on encoder vectors (README).
        self.hgf_join = cfg.hgf_join if moa else "none"
        if self.hgf_join == "scaled":
            self.hgf_join_scale = nn.ParameterDict({m: nn.Parameter(torch.zeros(d_model)) for m in mods})
        if cfg.graph:
            self.graph = CrossModalGraph(d_model, mods, cfg.graph_layers, cfg.graph_scheme, cfg.window_past,
                                         cfg.window_future, cfg.temporal_edges, cfg.cross_modal_edges,
                                         cfg.speaker_table_size, dropout, conv=cfg.graph_conv,
                                         heads=cfg.num_heads)
            self.graph_modalities = self.graph.node_modalities
            self.relation_names = self.graph.relation_names
            self.num_speakers = self.graph.num_speakers
            width += self.graph.out_features
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(width, cfg.classifier_hidden), nn.GELU(),
                                        nn.Dropout(dropout), nn.Linear(cfg.classifier_hidden, num_classes))
        # Evaluation-time instrument: when True, forward also measures where MoA attention looks
        # (recomputes the attention probabilities; leave off for training).
        self.inspect = False
        self.register_state_dict_post_hook(_graph_keys_unprefixed)
        self.register_load_state_dict_pre_hook(_graph_keys_prefixed)

    @classmethod
    def from_config(cls, cfg, dims: dict[str, int], num_classes: int, **overrides) -> "HotspotERC":
        """Build from a :class:`~hotspot_erc.nn.config.ModelConfig` (or its dict, or any
        dataclass with its fields)."""
        if not isinstance(cfg, (ModelConfig, dict)):
            cfg = dataclasses.asdict(cfg)
        return cls(dims, num_classes, cfg, **overrides)

    # ------------------------------------------------------------------ helpers
    def _build_graph(self, dialogue, speaker, present=None):
        """The conversation graph of a batch (see :meth:`CrossModalGraph.build_graph`)."""
        return self.graph.build_graph(dialogue, speaker, present)

    def _pool(self, pool, x, segs: Segments, peaks):
        """Attention pooling of each utterance's frames, or of its hotspot windows only."""
        if not self.hotspot_pool or x.shape[0] == 0:
            return pool(x, segs.cu_seqlens)
        frames, cu_h, has = hotspot_frames(x, segs, peaks, self.radius)
        return pool(frames, cu_h) * has.to(x.dtype).unsqueeze(1)

    def _join_hgf(self, out: ModelOutput, m: str, rows: torch.Tensor, fused: torch.Tensor) -> torch.Tensor:
        """MoA's output rows of target ``m`` with HGF's fused rows at the same frames joined
        (``hgf_join``); ``fused`` is HGF's output (the global content C with HGF off). Records
        ‖joined‖ / ‖MoA rows‖ in ``out.hgf_join_ratio[m]``."""
        if self.hgf_join == "none":
            return rows
        if self.hgf_join == "scaled":
            fused = fused * self.hgf_join_scale[m].to(fused.dtype)
        out.hgf_join_ratio[m] = fused.detach().norm() / rows.detach().norm().clamp(min=1e-12)
        return rows + fused

    def _contrast_rows(self, segs: dict[str, Segments], peaks: dict) -> tuple[dict, dict, int]:
        """Padded rows for MoA's alignment objective (:meth:`MixtureOfAligners._contrast`): per
        modality, its query rows as a target (the hotspot peaks: K per utterance in "peaks"
        mode, MoA's query rows at the peaks in "frames" mode) and its frames as a source (all
        of them, or the K·W window frames with ``moa_keys="hotspots"``)."""
        rows, frames = {}, {}
        for m in self.modalities:
            valid = peaks[m] >= 0                                                # [S, K]
            if self.moa_queries == "peaks":
                rows[m] = (torch.arange(valid.numel(), device=valid.device).view(valid.shape), valid)
            else:
                rows[m] = (peaks[m].clamp(min=0), valid)
            if self.moa_keys == "hotspots":
                width = 2 * self.radius + 1
                count = valid.numel() * width
                frames[m] = (torch.arange(count, device=valid.device).view(valid.shape[0], -1),
                             valid.repeat_interleave(width, 1))
            else:
                sg = segs[m]
                # max_len is a host int from the collate; only a hand-built GPU batch lacks it
                max_len = sg.max_len if sg.max_len is not None else int(sg.lengths.max())
                frames[m] = padded_rows(sg.cu_seqlens, max_len)
        return rows, frames, self.config.align_group

    def _scores(self, m, raw, x, segs: Segments, intensity):
        if self.hotspot_source == "data":
            if intensity is None or m not in intensity:
                raise ValueError(f"hotspot_source='data' needs per-frame intensity scores for modality "
                                 f"{m!r}, but the batch has none; use hotspot_source='rule' or 'learned'")
            return intensity[m].to(x.dtype)
        if self.hotspot_source == "learned":
            return self.scorer[m](x)
        if self.center:  # intensity = how far a frame departs from its utterance, not its offset
            raw = raw - segment_mean_broadcast(raw, segs)
        return rule_scores(raw, segs, kind=self.rule_kind)

    @staticmethod
    def _segments(batch, m: str) -> Segments:
        """The batch's :class:`Segments` of modality ``m`` (built once by the collate), or, for a
        batch without them, the Segments of its ``cu_seqlens[m]`` (built here, no sync)."""
        segments = getattr(batch, "segments", None)
        if segments is not None and m in segments:
            return segments[m]
        return as_segments(batch.cu_seqlens[m], batch.features[m].shape[0])

    # ------------------------------------------------------------------ forward
    def forward(self, batch) -> ModelOutput:
        """``batch``: a :class:`hotspot_erc.data.dataset.Batch` (or anything with ``features``,
        ``cu_seqlens``, ``intensity``, ``dialogue`` and ``speaker``; ``segments`` is used when
        present)."""
        mods = self.modalities
        absent = [m for m in mods if m not in batch.features or m not in batch.cu_seqlens]
        if absent:
            raise ValueError(f"the model uses modalities {''.join(mods)!r} but the batch lacks {absent}")
        for m in mods:
            if batch.features[m].shape[-1] != self.dims[m]:
                raise ValueError(f"modality {m!r} has feature size {batch.features[m].shape[-1]} but the "
                                 f"model was built for {self.dims[m]}")
        feats = {m: batch.features[m] for m in mods}
        segs = {m: self._segments(batch, m) for m in mods}
        intensity = getattr(batch, "intensity", None)
        if self.training and self.modality_dropout > 0:
            feats, segs, intensity = drop_modality_segments(feats, segs, intensity, self.modality_dropout, mods)

        out = ModelOutput(logits=None, lb_loss=None, cu_seqlens={m: segs[m].cu_seqlens for m in mods},
                          segments=segs)
        enc, pooled, peaks, projected, gated = {}, {}, {}, {}, {}
        for m in mods:
            raw, sg = feats[m], segs[m]
            x = self.proj[m](raw)
            if self.center:
                x = x - self.center_beta[m] * segment_mean_broadcast(x, sg)
            projected[m] = x
            score = self._scores(m, raw, x, sg, intensity)
            soft = self.hotspot_source == "learned"
            hs = extract_hotspots(x, sg, score, num_windows=self.num_windows, radius=self.radius, soft=soft,
                                  temperature=self.soft_temperature, pool=self.content_pool)
            # detached, like every diagnostic output: DDP (find_unused_parameters) treats a returned
            # tensor that still needs grad as one whose parameters must receive gradient
            out.scores[m], out.hotspot_mask[m] = score.detach(), hs.mask
            peaks[m] = out.peaks[m] = hs.peaks
            if self.use_hgf:
                fused, alpha = self.hgf[m](hs.content, hs.hotspot, return_gate=True)
                out.gates[m] = alpha.detach()
            else:
                fused = hs.content
            gated[m] = fused
            if self.mark_hotspots:  # window membership as a direction, since norms cannot carry it
                fused = fused + hs.mask.to(fused.dtype).unsqueeze(1) * self.hotspot_marker[m]
            enc[m] = self.encoder[m](fused, sg.cu_seqlens)
            pooled[m] = self._pool(self.pool[m], enc[m], sg, hs.peaks)

        encoder_pooled = torch.cat([pooled[m] for m in mods], -1)
        out.branches["encoder"] = encoder_pooled.detach()
        if self.use_moa:
            sources = None
            contrast = self.training and self.align_weight > 0
            x_in = enc if self.moa_input == "encoder" else projected
            # "gated": the targets ask from their HGF outputs (hotspot-gated), sources answer with
            # their projected frames; the other inputs use one stream for both.
            x_q = gated if self.moa_input == "gated" else x_in
            if self.moa_keys == "hotspots":  # targets attend to the sources' hotspot windows only
                sources = {m: hotspot_frames(x_in[m], segs[m], peaks[m], self.radius) for m in mods
                           if x_in[m].shape[0] > 0}
            if self.moa_queries == "peaks":
                # Only each target's hotspot peaks ask: K query rows per utterance, attending to
                # every source frame (or its windows); the utterance vector pools those K rows.
                tgt = {m: hotspot_frames(x_q[m], segs[m], peaks[m], 0) for m in mods}
                if sources is None:
                    sources = {m: (x_in[m], segs[m].cu_seqlens, segs[m].present) for m in mods}
                # Inspecting: every query row is a peak (a hotspot frame); the keys keep their masks.
                hot = None if not self.inspect else {
                    m: torch.ones(tgt[m][0].shape[0], dtype=torch.bool, device=tgt[m][0].device) for m in mods}
                src_hot = None if not self.inspect or self.moa_keys == "hotspots" else out.hotspot_mask
                moa = self.moa({m: tgt[m][0] for m in mods}, {m: tgt[m][1] for m in mods}, sources=sources,
                               record_qk=self.inspect, hotspot_mask=hot, source_hotspot_mask=src_hot,
                               contrast=self._contrast_rows(segs, peaks) if contrast else None)
                # HGF's rows at the peaks, gathered again even when they are the query rows: reusing
                # those would change the backward's summation order and so the measured runs (README)
                rows = {m: self._join_hgf(out, m, moa.outputs[m], hotspot_frames(gated[m], segs[m], peaks[m], 0)[0])
                        for m in mods}
                moa_pooled = {m: self.moa_pool[m](rows[m], tgt[m][1])
                              * tgt[m][2].to(rows[m].dtype).unsqueeze(1) for m in mods}
            else:
                if sources is None and x_q is not x_in:
                    sources = {m: (x_in[m], segs[m].cu_seqlens, segs[m].present) for m in mods}
                moa = self.moa(x_q, segs, hotspot_mask=out.hotspot_mask if self.inspect else None, sources=sources,
                               record_qk=self.inspect, contrast=self._contrast_rows(segs, peaks) if contrast else None)
                moa_pooled = {m: self._pool(self.moa_pool[m], self._join_hgf(out, m, moa.outputs[m], gated[m]), segs[m],
                                            peaks[m]) for m in mods}
            parts = [torch.cat([moa_pooled[m] for m in mods], -1)]
            out.lb_loss, out.routing = moa.lb_loss, dict(moa.routing)
            out.moa_residual, out.attention_mass = moa.residual_ratio, moa.attention_mass
            out.align_loss = moa.align_loss
            out.attention_qk = moa.attention_qk
            out.branches["moa"] = parts[0].detach()
            if self.encoder_skip:
                parts.insert(0, encoder_pooled)
            if self.graph_on_aligned:  # the graph passes aligned (cross-modal) evidence between turns
                pooled = moa_pooled
        else:
            parts = [encoder_pooled]
            out.lb_loss = parts[0].new_zeros(())
        if self.use_graph:
            present = torch.stack([segs[m].present for m in mods])  # [M, S]
            g, out.graph_update = self.graph(pooled, batch.dialogue, batch.speaker, present)
            parts.append(g)
            out.branches["graph"] = g.detach()
        out.features = torch.cat(parts, -1)
        out.logits = self.classifier(out.features)
        return out
