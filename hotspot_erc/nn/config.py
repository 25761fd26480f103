"""`ModelConfig`: every option of :class:`~hotspot_erc.nn.model.HotspotERC`, its default, its help
text and its checks, written once.

The model is built from it (``HotspotERC(dims, num_classes, config)``; keywords override single
fields), the run configuration's ``[model]`` section, the TOML file and the command-line flags are
generated from its fields (``hotspot_erc.train.config``), and checkpoints store it as a dict
(:meth:`ModelConfig.to_dict` / :meth:`ModelConfig.from_dict`). Each field's metadata holds its
``help`` text and, where the value is one of a few names, its ``choices``.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from hotspot_erc.data.graph import node_modalities, scheme_has_edges

MODALITIES = ("t", "a", "v")
HOTSPOT_SOURCES = ("data", "rule", "learned")
RULE_KINDS = ("norm", "delta")
GATES = ("vector", "scalar")
GRAPH_SCHEMES = ("default", "temporal_multi", "speaker", "corect", "cogmen")
GRAPH_CONVS = ("rgcn", "rgcn_transformer")
MOA_KEYS = ("all", "hotspots")
CONTENT_POOLS = ("auto", "mean", "attention")
# Speaker-table size when num_speakers is 0 ("auto") and no corpus was consulted; the trainer
# sizes the table from the corpus instead (at least this many, exactly the need for cogmen).
AUTO_SPEAKERS = 8


def _f(default, help: str, choices=None):
    return field(default=default, metadata={"help": help, "choices": choices})


# What a saved model config that lacks a field meant: the behaviour before the field existed
# (checkpoints and run configs written earlier load and resume as they were trained).
LEGACY_MODEL = {"moa_queries": "frames", "moa_input": "encoder", "soft_temperature": 1.0, "content_pool": "auto",
                "align_weight": 0.0, "shared_expert": False, "align_group": 32, "hgf_join": "none",
                "hgf_gate_bias": 0.0, "graph_conv": "rgcn"}


def with_legacy_fields(saved: dict) -> dict:
    """A stored ``[model]`` dict completed with :data:`LEGACY_MODEL` for the fields it lacks."""
    return {**{k: v for k, v in LEGACY_MODEL.items() if k not in saved}, **saved}


@dataclass
class ModelConfig:
    """Architecture of :class:`hotspot_erc.nn.model.HotspotERC` (DESIGN §1 defaults, except where a
    field's comment says why not)."""

    d_model: int = _f(64, "width d of every modality after projection")
    modalities: str = _f("tav", "modalities to use, as letters (t=text, a=audio, v=video), e.g. 'ta'")
    hotspot_source: str = _f("rule", "where frame intensity scores come from: the corpus' own "
                             "scores ('data'), a rule on the features ('rule') or a learned scorer",
                             HOTSPOT_SOURCES)
    rule_kind: str = _f("norm", "rule scorer: feature norm or frame-to-frame change (on centred frames "
                        "when --center is on)", RULE_KINDS)
    center: bool = _f(True, "subtract a learned share (per channel, starting at 1) of each utterance's mean "
                      "frame before hotspot extraction, so utterance-constant offsets do not drown hotspots")
    num_windows: int = _f(2, "hotspot windows K per utterance and modality")
    radius: int = _f(2, "half-width w of each hotspot window, in frames")
    hgf: bool = _f(True, "hotspot-gated fusion; off = global utterance content only")
    # 5 (α ≈ 0.99): MoA's queries are HGF's outputs at the peaks and must start as the peak frames,
    # which alignment needs; 3 cost the alignment story 3 points (docs/EXPERIMENTS.md).
    hgf_gate_bias: float = _f(5.0, "with MoA and moa_input 'gated': added to HGF's gate bias at "
                              "initialisation; positive values start the gate near 1 at every frame, so MoA's queries "
                              "start as the hotspot peak frames themselves (and frames outside the windows near 0)")
    gate: str = _f("vector", "HGF gate per token: one per channel or a single scalar", GATES)
    encoder_layers: int = _f(1, "pre-norm transformer blocks per modality (frame level)")
    num_heads: int = _f(4, "attention heads in encoders, pooling and MoA")
    moa: bool = _f(True, "mixture-of-aligners cross-modal alignment; off = no alignment")
    # One aligner per pair, not DESIGN's E=4/k=2 (MixtureOfAligners' own defaults): with routed
    # experts the alignment objective was learned far worse (docs/EXPERIMENTS.md).
    num_experts: int = _f(1, "MoA expert aligners E per modality pair")
    top_k: int = _f(1, "MoA experts used per utterance and pair")
    shared_expert: bool = _f(False, "MoA: one more aligner per pair that every utterance uses (gate 1) beside its "
                             "top_k routed ones")
    graph: bool = _f(True, "cross-modal conversation graph with relational GNN layers")
    graph_layers: int = _f(2, "relational GNN (RGCNConv) layers of graph_conv rgcn")
    graph_conv: str = _f("rgcn", "graph layers: rgcn (graph_layers residual RGCNConv layers) or rgcn_transformer "
                         "(CORECT's and COGMEN's stack: RGCNConv, TransformerConv with num_heads concatenated heads, "
                         "BatchNorm, leaky ReLU)", GRAPH_CONVS)
    temporal_edges: bool = _f(True, "graph edges to past/future utterances of the same modality")
    cross_modal_edges: bool = _f(True, "graph edges between modalities of the same utterance")
    # 3, not 2: on the alignment story a cue-less utterance's label is the same speaker's previous
    # one, which is 3 turns back in 13% of cases (README).
    window_past: int = _f(3, "past utterances linked by temporal edges (-1 = the whole past; "
                          "corect/cogmen schemes only)")
    window_future: int = _f(2, "future utterances linked by temporal edges (-1 = the whole future; "
                            "corect/cogmen schemes only; corect's future bound is exclusive)")
    # "speaker": typing temporal edges by same/other speaker let context reach cue-less utterances
    # (docs/EXPERIMENTS.md).
    graph_scheme: str = _f("speaker", "edge set and typing of the conversation graph: ours (default, "
                           "speaker, temporal_multi) or exactly CORECT's / COGMEN's graph (corect, cogmen)",
                           GRAPH_SCHEMES)
    num_speakers: int = _f(0, "size of the speaker embedding table, indexed by speaker id within a dialogue "
                           "(0 = from the corpus: its most speakers in one dialogue, at least 8; exactly that "
                           "for graph_scheme cogmen; a model built without a corpus takes 8)")
    dropout: float = _f(0.1, "dropout in encoders, MoA and classifier")
    modality_dropout: float = _f(0.0, "training only: probability of hiding each (modality, "
                                 "utterance) input; one modality per utterance always stays")
    classifier_hidden: int = _f(128, "hidden width of the two-layer MLP classifier")
    encoder_skip: bool = _f(False, "with MoA: the classifier also sees the encoder-pooled utterance vectors "
                            "beside the MoA-pooled ones")
    moa_keys: str = _f("all", "frames MoA targets attend to in each source modality: all of them, or only the "
                       "frames of its hotspot windows", MOA_KEYS)
    hotspot_pool: bool = _f(False, "utterance vectors pool the frames of the hotspot windows only (encoder and "
                            "MoA outputs) instead of all frames")
    mark_hotspots: bool = _f(False, "add a learned marker vector to frames inside hotspot windows before the "
                             "encoder (its LayerNorms otherwise erase the size difference between window and "
                             "other frames)")
    graph_on_aligned: bool = _f(True, "with MoA: graph nodes start from the MoA-pooled (aligned) utterance "
                                "vectors instead of the encoder-pooled ones")
    moa_queries: str = _f("peaks", "MoA queries: only each target's hotspot peak frames (K rows per utterance), "
                          "or every target frame",
                          ("frames", "peaks"))
    # "gated": hotspots reach MoA only through HGF, as in DESIGN's flow, so no_hgf (global content only)
    # means what it says; with "projected" MoA bypassed HGF and no_hgf tied with full (README).
    moa_input: str = _f("gated", "frames MoA aligns: the projected, centred frames (before HGF and the "
                        "encoder), the encoder outputs, or 'gated': queries from the HGF outputs (at the "
                        "peaks, or every frame with moa_queries 'frames'), keys and values from the projected frames",
                        ("encoder", "projected", "gated"))
    # "scaled": the classifier sees HGF's rows beside MoA's, weighted by what training finds (README).
    hgf_join: str = _f("scaled", "with MoA: HGF's fused rows at MoA's query rows join MoA's output rows before "
                       "pooling: not at all, added as they are, or scaled by a learned per-channel factor "
                       "that starts at 0", ("none", "add", "scaled"))
    align_weight: float = _f(1.0, "training only, with MoA: weight of the cross-utterance alignment objective "
                             "(each utterance's MoA queries must pick out its own source frames among the "
                             "batch's; hotspot_erc.nn.align_objective); 0 = off")
    align_group: int = _f(32, "alignment objective: consecutive utterances of a batch are split into groups of "
                          "this many, and each utterance must pick out its own source frames among its group's "
                          "(cost grows with batch utterances x group)")
    soft_temperature: float = _f(1.0, "temperature of the learned scorer's soft top-k windows and of "
                                 "score-weighted (attention) content pooling")
    content_pool: str = _f("auto", "how hotspot extraction pools an utterance's global content C: mean of its "
                           "frames, or score-weighted attention; auto = attention for a learned scorer, "
                           "else mean", CONTENT_POOLS)

    def __post_init__(self):
        # Spellings the keyword constructor has always accepted, mapped onto the field types so
        # that TOML, the CLI and checkpoints see one form.
        if isinstance(self.modalities, (tuple, list)):
            self.modalities = "".join(self.modalities)
        if self.content_pool is None:
            self.content_pool = "auto"

    # ------------------------------------------------------------------ derived values
    @property
    def resolved_content_pool(self) -> str:
        """``content_pool`` with "auto" decided: a learned scorer also gets gradient through
        score-weighted pooling; data / rule scores are not calibrated as attention logits."""
        if self.content_pool != "auto":
            return self.content_pool
        return "attention" if self.hotspot_source == "learned" else "mean"

    @property
    def speaker_table_size(self) -> int:
        """``num_speakers`` with 0 (auto, no corpus consulted) resolved to :data:`AUTO_SPEAKERS`."""
        return self.num_speakers or AUTO_SPEAKERS

    # ------------------------------------------------------------------ dict round trip
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "ModelConfig":
        """A config from a dict of field values (a checkpoint's, say); fields it lacks keep their
        defaults (options added since it was written), unknown keys raise."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown model setting(s) {unknown}; known: {', '.join(sorted(known))}")
        return cls(**values)

    def replace(self, **overrides) -> "ModelConfig":
        """A copy with some fields changed; unknown names raise a ValueError naming them."""
        if not overrides:
            return dataclasses.replace(self)
        return ModelConfig.from_dict({**self.to_dict(), **overrides})

    # ------------------------------------------------------------------ checks
    def validate(self) -> "ModelConfig":
        """Raise ValueError naming the field when a value is of the wrong type or out of range;
        returns ``self``."""
        for f in dataclasses.fields(self):
            value, typ = getattr(self, f.name), type(f.default)
            if typ is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
                setattr(self, f.name, value)
            if not isinstance(value, typ) or (typ is not bool and isinstance(value, bool)):
                raise ValueError(f"{f.name} must be {typ.__name__}, got {value!r}")
            choices = f.metadata.get("choices")
            if choices and value not in choices:
                raise ValueError(f"{f.name} must be one of {choices}, got {value!r}")
        mods = self.modalities
        if not mods or any(c not in MODALITIES for c in mods) or len(set(mods)) != len(mods):
            raise ValueError(f"modalities must be distinct letters among 't', 'a', 'v', got {mods!r}")
        minimum = {"d_model": 1, "num_heads": 1, "num_experts": 1, "top_k": 1, "num_windows": 1,
                   "classifier_hidden": 1, "radius": 0, "encoder_layers": 0, "graph_layers": 0,
                   "num_speakers": 0, "align_group": 2}
        for name, low in minimum.items():
            if getattr(self, name) < low:
                raise ValueError(f"{name} must be >= {low}, got {getattr(self, name)}")
        # -1 ("whole past/future") is the baselines' convention; our schemes take explicit windows.
        lowest = -1 if self.graph_scheme in ("corect", "cogmen") else 0
        for name in ("window_past", "window_future"):
            if getattr(self, name) < lowest:
                allowed = ">= 0 (or -1 = whole dialogue with graph_scheme corect/cogmen)" if lowest == 0 else ">= -1"
                raise ValueError(f"{name} must be {allowed}, got {getattr(self, name)}")
        if self.d_model % self.num_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by num_heads ({self.num_heads})")
        if self.top_k > self.num_experts:
            raise ValueError(f"top_k ({self.top_k}) cannot exceed num_experts ({self.num_experts})")
        for name in ("dropout", "modality_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:  # also false for NaN
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if not (math.isfinite(self.align_weight) and self.align_weight >= 0):
            raise ValueError(f"align_weight must be a finite number >= 0, got {self.align_weight}")
        if not math.isfinite(self.hgf_gate_bias):
            raise ValueError(f"hgf_gate_bias must be a finite number, got {self.hgf_gate_bias}")
        if not (math.isfinite(self.soft_temperature) and self.soft_temperature > 0):
            raise ValueError(f"soft_temperature must be a finite number > 0, got {self.soft_temperature}")
        if self.graph and not scheme_has_edges(node_modalities(mods, self.graph_scheme), self.graph_scheme,
                                               self.temporal_edges, self.cross_modal_edges):
            raise ValueError("the conversation graph has no edges with these options (temporal_edges and "
                             "cross_modal_edges both off, or one modality without temporal edges); turn the "
                             "graph off with graph=False / --no-graph")
        return self
