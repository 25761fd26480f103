"""Run configuration: dataclasses that come from defaults, a TOML file and command-line flags.

Precedence: defaults < TOML file (sections ``[model]``, ``[train]``, ``[data]``) < flags. The
``[model]`` section is :class:`hotspot_erc.nn.config.ModelConfig` itself (its defaults and checks
are written there, once, and the model is built from it); ``[train]`` and ``[data]`` are defined
here. Every field carries its help text, and the CLI flags and TOML keys are generated from the
fields, so every option is reachable both ways and ``--help`` always matches. ``evaluate`` and
``predict`` start from the settings stored in the checkpoint; their few flags (batch size, device,
workers, progress) are the same generated ``[train]`` flags, overriding the checkpoint's values.
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

from hotspot_erc.nn.config import ModelConfig  # noqa: F401  (the [model] section; re-exported)


def _f(default, help: str, choices=None):
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass
class TrainConfig:
    """Optimisation and run control for :class:`hotspot_erc.train.trainer.Trainer`."""

    epochs: int = _f(20, "maximum training epochs")
    batch_size: int = _f(8, "dialogues per (global) batch")
    bucket: bool = _f(True, "batch dialogues of similar total length together (seeded by seed and epoch; the "
                      "batch order stays random); off = a uniform shuffle")
    num_workers: int = _f(0, "DataLoader worker processes preparing batches while the model computes (0 = in the "
                          "training process)")
    # 5e-3, not 2e-3: the alignment objective learns a sharper match at it (docs/EXPERIMENTS.md,
    # 2026-11-30).
    lr: float = _f(5e-3, "Adam learning rate")
    weight_decay: float = _f(0.0, "Adam L2 weight decay")
    lb_weight: float = _f(0.01, "lambda of the MoA load-balancing loss")
    align_warmup: int = _f(12, "epochs before the `epochs` that train only MoA's alignment objective and load "
                           "balancing, without cross-entropy (dev F1 and early stopping count from the epoch "
                           "after); skipped, with a warning, when the model has no alignment objective (MoA off "
                           "or align_weight 0)")
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
    report: bool = _f(True, "`hotspot-erc train` only: after training, write report.html (one offline page: gates, "
                      "routing, alignment, graph edges, robustness, cost, dialogues) and report.json into the "
                      "run folder, as `hotspot-erc inspect RUN_DIR` does")


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
    try:
        m.validate()
    except ValueError as exc:
        # ModelConfig names the field first; add the flag a user of the CLI would change.
        name, _, rest = str(exc).partition(" ")
        if name in {f.name for f in dataclasses.fields(m)} and not rest.startswith("("):
            raise ValueError(f"{_flag(name)} {rest}") from None
        raise
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
    if t.align_warmup < 0:
        raise ValueError(f"{_flag('align_warmup')} must be >= 0, got {t.align_warmup}")
    if t.patience < 0:
        raise ValueError(f"{_flag('patience')} must be >= 0 (0 = no early stopping), got {t.patience}")
    if not 0.0 <= t.warmup < 1.0:
        raise ValueError(f"{_flag('warmup')} must be in [0, 1), got {t.warmup}")
    if not re.fullmatch(r"auto|cpu|cuda(:[0-9]+)?", t.device):
        raise ValueError(f"{_flag('device')} must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {t.device!r}")
    if d.synthetic_dialogues < 3:
        raise ValueError(f"{_flag('synthetic_dialogues')} must be >= 3 (one per split), got {d.synthetic_dialogues}")
    return cfg


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

# The [train] settings evaluate/predict take from the command line (the rest comes from the checkpoint).
RUNTIME_FIELDS = ("batch_size", "device", "num_workers", "progress")


def add_arguments(parser: argparse.ArgumentParser, sections=("model", "train", "data"), only=None,
                  default_note: str | None = None) -> None:
    """One flag per field of each section (``--d-model``, ``--no-hgf``, ...). Defaults are None so
    that only flags actually given override the TOML file (or the checkpoint). ``only`` limits the
    flags to some field names; ``default_note`` replaces the default shown in the help."""
    for section in sections:
        cls = SECTIONS[section]
        title = (f"{section} options ([{section}] in a --config TOML file)" if default_note is None
                 else f"{section} options")
        group = parser.add_argument_group(title)
        for f in dataclasses.fields(cls):
            if only is not None and f.name not in only:
                continue
            flag = "--" + f.name.replace("_", "-")
            dest = f"{section}__{f.name}"
            default = f.default
            help_text = f"{f.metadata['help']} (default: {default_note or repr(default)})"
            if isinstance(default, bool):
                group.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=None,
                                   help=help_text)
            else:
                group.add_argument(flag, dest=dest, type=type(default), default=None,
                                   choices=f.metadata.get("choices"), help=help_text,
                                   metavar=f.name.upper() if not f.metadata.get("choices") else None)


def flag_values(args: argparse.Namespace) -> dict[str, dict]:
    """``{section: {field: value}}`` of the generated flags actually given."""
    out: dict[str, dict] = {}
    for key, val in vars(args).items():
        if "__" not in key or val is None:
            continue
        section, name = key.split("__", 1)
        if section in SECTIONS:
            out.setdefault(section, {})[name] = val
    return out


def from_args(args: argparse.Namespace, config_path: str | None = None, base: dict | None = None) -> RunConfig:
    """Defaults, then ``base`` (e.g. a checkpoint's config), then the TOML file, then the flags."""
    cfg = RunConfig.from_dict(base or {})
    if config_path:
        toml = load_toml(config_path)
        for section in SECTIONS:
            _update(getattr(cfg, section), toml.get(section, {}), f"[{section}] of {config_path}")
    for section, values in flag_values(args).items():
        for name, val in values.items():
            setattr(getattr(cfg, section), name, val)
    return validate(cfg)
