"""Run configuration: dataclasses that come from defaults, a TOML file and command-line flags.

Precedence: defaults < TOML file (sections ``[model]``, ``[train]``, ``[data]``) < flags. Every
field carries its help text, so the CLI's ``--help`` is generated from here and always matches.
A TOML file uses the field names (``-`` or ``_``)::

    [model]
    d_model = 96
    modalities = "ta"
    moa = false

    [train]
    epochs = 40
    class_weights = true

    [data]
    corpus = "data/iemocap4"
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import re
import tomllib
from dataclasses import dataclass, field


def _f(default, help: str, choices=None):
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass
class ModelConfig:
    """Architecture of :class:`hotspot_erc.nn.model.HotspotERC` (DESIGN §1 defaults)."""

    d_model: int = _f(64, "width d of every modality after projection")
    modalities: str = _f("tav", "modalities to use, as letters (t=text, a=audio, v=video), e.g. 'ta'")
    hotspot_source: str = _f("rule", "where frame intensity scores come from: the corpus' own "
                             "scores ('data'), a rule on the features ('rule') or a learned scorer",
                             ("data", "rule", "learned"))
    rule_kind: str = _f("norm", "rule scorer: feature norm or frame-to-frame change (on centred frames "
                        "when --center is on)", ("norm", "delta"))
    center: bool = _f(True, "subtract a learned share (per channel, starting at 1) of each utterance's mean "
                      "frame before hotspot extraction, so utterance-constant offsets do not drown hotspots")
    num_windows: int = _f(2, "hotspot windows K per utterance and modality")
    radius: int = _f(2, "half-width w of each hotspot window, in frames")
    hgf: bool = _f(True, "hotspot-gated fusion; off = global utterance content only")
    gate: str = _f("vector", "HGF gate per token: one per channel or a single scalar", ("vector", "scalar"))
    encoder_layers: int = _f(1, "pre-norm transformer blocks per modality (frame level)")
    num_heads: int = _f(4, "attention heads in encoders, pooling and MoA")
    moa: bool = _f(True, "mixture-of-aligners cross-modal alignment; off = no alignment")
    num_experts: int = _f(4, "MoA expert aligners E per modality pair")
    top_k: int = _f(2, "MoA experts used per utterance and pair")
    graph: bool = _f(True, "cross-modal conversation graph with relational GNN layers")
    graph_layers: int = _f(2, "relational GNN (RGCNConv) layers")
    temporal_edges: bool = _f(True, "graph edges to past/future utterances of the same modality")
    cross_modal_edges: bool = _f(True, "graph edges between modalities of the same utterance")
    window_past: int = _f(2, "past utterances linked by temporal edges (-1 = the whole past; "
                          "corect/cogmen schemes only)")
    window_future: int = _f(2, "future utterances linked by temporal edges (-1 = the whole future; "
                            "corect/cogmen schemes only; corect's future bound is exclusive)")
    graph_scheme: str = _f("default", "edge set and typing of the conversation graph: ours (default, "
                           "speaker, temporal_multi) or exactly CORECT's / COGMEN's graph (corect, cogmen)",
                           ("default", "temporal_multi", "speaker", "corect", "cogmen"))
    num_speakers: int = _f(0, "size of the speaker embedding table, indexed by speaker id within a dialogue "
                           "(0 = from the corpus: its most speakers in one dialogue, at least 8; exactly that "
                           "for graph_scheme cogmen)")
    dropout: float = _f(0.1, "dropout in encoders, MoA and classifier")
    modality_dropout: float = _f(0.0, "training only: probability of hiding each (modality, "
                                 "utterance) input; one modality per utterance always stays")
    classifier_hidden: int = _f(128, "hidden width of the two-layer MLP classifier")
    encoder_skip: bool = _f(False, "with MoA: the classifier also sees the encoder-pooled utterance vectors "
                            "beside the MoA-pooled ones")
    moa_keys: str = _f("all", "frames MoA targets attend to in each source modality: all of them, or only the "
                       "frames of its hotspot windows", ("all", "hotspots"))
    hotspot_pool: bool = _f(False, "utterance vectors pool the frames of the hotspot windows only (encoder and "
                            "MoA outputs) instead of all frames")
    mark_hotspots: bool = _f(False, "add a learned marker vector to frames inside hotspot windows before the "
                             "encoder (its LayerNorms otherwise erase the size difference between window and "
                             "other frames)")
    graph_on_aligned: bool = _f(False, "with MoA: graph nodes start from the MoA-pooled (aligned) utterance "
                                "vectors instead of the encoder-pooled ones")


@dataclass
class TrainConfig:
    """Optimisation and run control for :class:`hotspot_erc.train.trainer.Trainer`."""

    epochs: int = _f(20, "maximum training epochs")
    batch_size: int = _f(8, "dialogues per (global) batch")
    bucket: bool = _f(True, "batch dialogues of similar total length together (seeded by seed and epoch; the "
                      "batch order stays random); off = a uniform shuffle")
    num_workers: int = _f(0, "DataLoader worker processes preparing batches while the model computes (0 = in the "
                          "training process)")
    lr: float = _f(2e-3, "Adam learning rate")
    weight_decay: float = _f(0.0, "Adam L2 weight decay")
    lb_weight: float = _f(0.01, "lambda of the MoA load-balancing loss")
    class_weights: bool = _f(False, "weight cross-entropy by inverse class frequency of the train split")
    schedule: str = _f("cosine", "LR schedule over steps, after linear warm-up", ("cosine", "linear", "constant"))
    warmup: float = _f(0.05, "share of all steps used for linear LR warm-up")
    patience: int = _f(6, "early stopping: epochs without dev weighted-F1 gain before stopping (0 = off)")
    grad_clip: float = _f(1.0, "clip the global gradient norm to this (0 = off)")
    seed: int = _f(0, "seed of weights, data order and dropout")
    amp: bool = _f(True, "bfloat16 autocast on GPU (ignored on CPU)")
    compile: bool = _f(False, "torch.compile the model")
    device: str = _f("auto", "'auto' (CUDA when available), 'cpu', 'cuda' or 'cuda:N'")
    progress: bool = _f(True, "show progress bars")
    plots: bool = _f(True, "write the PNG plots into the run folder (JSON/CSV reports are always written)")


@dataclass
class DataConfig:
    """Where the corpus comes from."""

    corpus: str = _f("", "corpus folder in the native format (see `hotspot-erc convert`)")
    synthetic: bool = _f(False, "use the synthetic corpus (generated into --synthetic-dir if absent)")
    synthetic_kind: str = _f("default", "synthetic story: 'default' (hotspots, confusable pairs, carry-over) or "
                             "'align' (the fine label needs frame-level text-audio alignment, a quarter of "
                             "the utterances need context; see hotspot_erc.data.synthetic_align)",
                             ("default", "align"))
    synthetic_dir: str = _f("data/synthetic", "cache folder of the synthetic corpus (one story at a time: the "
                            "kind is part of the recipe, so switching kinds regenerates it)")
    synthetic_dialogues: int = _f(160, "dialogues in a newly generated synthetic corpus")
    synthetic_seed: int = _f(0, "seed of a newly generated synthetic corpus")


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        cfg = cls()
        for section in ("model", "train", "data"):
            _update(getattr(cfg, section), d.get(section, {}) or {}, f"[{section}]")
        return cfg


SECTIONS = {"model": ModelConfig, "train": TrainConfig, "data": DataConfig}


def _update(obj, values: dict, where: str) -> None:
    fields = {f.name: f for f in dataclasses.fields(obj)}
    for key, val in values.items():
        name = key.replace("-", "_")
        if name not in fields:
            raise ValueError(f"unknown setting {key!r} in {where}; known: {', '.join(sorted(fields))}")
        f = fields[name]
        typ = type(f.default)
        if typ is float and isinstance(val, int) and not isinstance(val, bool):
            val = float(val)
        if not isinstance(val, typ) or (typ is int and isinstance(val, bool)):
            raise ValueError(f"setting {key!r} in {where} must be {typ.__name__}, got {val!r}")
        if f.metadata.get("choices") and val not in f.metadata["choices"]:
            raise ValueError(f"setting {key!r} in {where} must be one of {f.metadata['choices']}, got {val!r}")
        setattr(obj, name, val)


def _flag(name: str) -> str:
    return f"{name} (--{name.replace('_', '-')})"


def validate(cfg: RunConfig) -> RunConfig:
    """Value checks that the types alone do not express; messages name the setting and its flag."""
    m, t, d = cfg.model, cfg.train, cfg.data
    mods = m.modalities
    if not mods or any(c not in "tav" for c in mods) or len(set(mods)) != len(mods):
        raise ValueError(f"{_flag('modalities')} must be distinct letters among 't', 'a', 'v', got {mods!r}")
    minimum = {"d_model": 1, "num_heads": 1, "num_experts": 1, "top_k": 1, "num_windows": 1,
               "classifier_hidden": 1, "radius": 0, "encoder_layers": 0, "graph_layers": 0, "num_speakers": 0}
    for name, low in minimum.items():
        if getattr(m, name) < low:
            raise ValueError(f"{_flag(name)} must be >= {low}, got {getattr(m, name)}")
    _validate_windows(m)
    if m.d_model % m.num_heads:
        raise ValueError(f"d_model ({m.d_model}) must be divisible by num_heads ({m.num_heads})")
    if m.top_k > m.num_experts:
        raise ValueError(f"top_k ({m.top_k}) cannot exceed num_experts ({m.num_experts})")
    for name in ("dropout", "modality_dropout"):
        if not 0.0 <= getattr(m, name) < 1.0:  # also false for NaN
            raise ValueError(f"{_flag(name)} must be in [0, 1), got {getattr(m, name)}")
    for name in ("epochs", "batch_size"):
        if getattr(t, name) < 1:
            raise ValueError(f"{_flag(name)} must be >= 1, got {getattr(t, name)}")
    if not (math.isfinite(t.lr) and t.lr > 0):
        raise ValueError(f"{_flag('lr')} must be a finite number > 0, got {t.lr}")
    for name in ("weight_decay", "lb_weight", "grad_clip"):
        if not (math.isfinite(getattr(t, name)) and getattr(t, name) >= 0):
            raise ValueError(f"{_flag(name)} must be a finite number >= 0, got {getattr(t, name)}")
    if t.num_workers < 0:
        raise ValueError(f"{_flag('num_workers')} must be >= 0, got {t.num_workers}")
    if t.patience < 0:
        raise ValueError(f"{_flag('patience')} must be >= 0 (0 = no early stopping), got {t.patience}")
    if not 0.0 <= t.warmup < 1.0:
        raise ValueError(f"{_flag('warmup')} must be in [0, 1), got {t.warmup}")
    if not re.fullmatch(r"auto|cpu|cuda(:[0-9]+)?", t.device):
        raise ValueError(f"{_flag('device')} must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {t.device!r}")
    if d.synthetic_dialogues < 3:
        raise ValueError(f"{_flag('synthetic_dialogues')} must be >= 3 (one per split), got {d.synthetic_dialogues}")
    return cfg


def _validate_windows(m: "ModelConfig") -> None:
    # -1 ("whole past/future") is the baselines' convention; our schemes take explicit windows.
    lowest = -1 if m.graph_scheme in ("corect", "cogmen") else 0
    for name in ("window_past", "window_future"):
        if getattr(m, name) < lowest:
            allowed = ">= 0 (or -1 = whole dialogue with graph_scheme corect/cogmen)" if lowest == 0 else ">= -1"
            raise ValueError(f"{name} must be {allowed}, got {getattr(m, name)}")


def load_toml(path: str) -> dict:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ValueError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise ValueError(f"config file {path} is a folder; --config takes a TOML file") from None
    except OSError as exc:
        raise ValueError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"config file {path} is not valid TOML: {exc}") from None
    unknown = set(data) - set(SECTIONS)
    if unknown:
        raise ValueError(f"config file {path} has unknown sections {sorted(unknown)}; "
                         f"use [model], [train] and [data]")
    return data


# ----------------------------------------------------------------------------- argparse glue

def add_arguments(parser: argparse.ArgumentParser, sections=("model", "train", "data")) -> None:
    """One flag per field of each section (``--d-model``, ``--no-hgf``, ...). Defaults are None so
    that only flags actually given override the TOML file."""
    for section in sections:
        cls = SECTIONS[section]
        group = parser.add_argument_group(f"{section} options ([{section}] in a --config TOML file)")
        for f in dataclasses.fields(cls):
            flag = "--" + f.name.replace("_", "-")
            dest = f"{section}__{f.name}"
            default = f.default
            help_text = f"{f.metadata['help']} (default: {default!r})"
            if isinstance(default, bool):
                group.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=None,
                                   help=help_text)
            else:
                group.add_argument(flag, dest=dest, type=type(default), default=None,
                                   choices=f.metadata.get("choices"), help=help_text,
                                   metavar=f.name.upper() if not f.metadata.get("choices") else None)


def from_args(args: argparse.Namespace, config_path: str | None = None, base: dict | None = None) -> RunConfig:
    """Defaults, then ``base`` (e.g. a checkpoint's config), then the TOML file, then the flags."""
    cfg = RunConfig.from_dict(base or {})
    if config_path:
        toml = load_toml(config_path)
        for section in SECTIONS:
            _update(getattr(cfg, section), toml.get(section, {}), f"[{section}] of {config_path}")
    for key, val in vars(args).items():
        if "__" not in key or val is None:
            continue
        section, name = key.split("__", 1)
        if section in SECTIONS:
            setattr(getattr(cfg, section), name, val)
    return validate(cfg)
