"""Building a model from run settings, sizing its speaker table from the corpus, and loading one
back from a checkpoint (with the checks that a corpus fits it)."""
from __future__ import annotations

import numpy as np

import hotspot_erc
from hotspot_erc.nn.config import AUTO_SPEAKERS, with_legacy_fields
from hotspot_erc.nn.model import HotspotERC
from hotspot_erc.train import checkpoint as ckpt
from hotspot_erc.train.config import RunConfig

# A speaker table smaller than this is never chosen automatically (the size models had before
# tables were sized from the corpus, so earlier runs rebuild identically).
MIN_AUTO_SPEAKERS = AUTO_SPEAKERS


def build_model(cfg: RunConfig, dims: dict[str, int], num_classes: int) -> HotspotERC:
    """The model ``cfg.model`` describes (num_speakers 0, when no corpus sized the table, takes
    :data:`MIN_AUTO_SPEAKERS`)."""
    return HotspotERC(dims, num_classes, cfg.model.replace())


def speakers_needed(*datasets) -> int:
    """Speaker-table size the corpora behind ``datasets`` need: the largest dialogue-local speaker
    id + 1 over each whole corpus (every split, so test dialogues fit the trained table too)."""
    need, seen = 0, set()
    for ds in datasets:
        corpus = getattr(ds, "corpus", None)
        if corpus is not None:
            if id(corpus) in seen:
                continue
            seen.add(id(corpus))
            spk = np.asarray(corpus.speaker)
            if spk.size:
                need = max(need, int(spk.max()) + 1)
        else:
            for i in range(len(ds)):
                spk = ds[i].speaker
                if spk.numel():
                    need = max(need, int(spk.max()) + 1)
    return need


def size_speaker_table(cfg: RunConfig, needed: int, where: str = "the corpus") -> RunConfig:
    """A copy of ``cfg`` whose ``model.num_speakers`` fits ``needed`` speakers.

    0 (auto) becomes ``needed``, at least :data:`MIN_AUTO_SPEAKERS` (exactly ``needed`` for the
    ``cogmen`` scheme, whose relations are per speaker pair); an explicit value that is too small
    is refused, since the model would otherwise have to merge speakers.
    """
    cfg = RunConfig.from_dict(cfg.to_dict())
    m = cfg.model
    if m.num_speakers == 0:
        floor = 1 if m.graph_scheme == "cogmen" else MIN_AUTO_SPEAKERS
        m.num_speakers = max(needed, floor)
    elif m.num_speakers < needed:
        raise ValueError(f"num_speakers {m.num_speakers} is too small: {where} has a dialogue with speaker id "
                         f"{needed - 1} ({needed} speakers); use --num-speakers {needed} or more, or 0 to size "
                         "the table from the corpus")
    return cfg


def checkpoint_config(cfg: RunConfig, dims: dict, label_names: list[str]) -> dict:
    return {"run": cfg.to_dict(), "dims": dict(dims), "label_names": list(label_names),
            "hotspot_erc_version": hotspot_erc.__version__}


def load_model(path: str, device="cpu"):
    """Rebuild the model a checkpoint was trained with and load its weights.
    Returns (model in eval mode, RunConfig, checkpoint config dict)."""
    ck = ckpt.load_checkpoint(path)
    try:
        run = dict(ck.config["run"])
        run["model"] = with_legacy_fields(run.get("model") or {})
        cfg = RunConfig.from_dict(run)
        dims, labels = ck.config["dims"], ck.config["label_names"]
    except (KeyError, ValueError, TypeError) as exc:
        raise ckpt.CheckpointError(f"checkpoint {path} has an unusable config ({exc})") from exc
    model = build_model(cfg, dims, len(labels))
    ckpt.apply_model_state(model, ck)
    return model.to(device).eval(), cfg, ck.config


def check_corpus_fits(corpus, dims: dict, label_names: list[str], modalities, what: str) -> None:
    """A corpus must have the modalities, feature dims and label names the model was built for."""
    missing = [m for m in modalities if m not in corpus.modalities]
    if missing:
        raise ValueError(f"{what} uses modalities {list(modalities)} but corpus {corpus.path} only has "
                         f"{list(corpus.modalities)}")
    bad = {m: (corpus.dims[m], dims[m]) for m in modalities if int(corpus.dims[m]) != int(dims[m])}
    if bad:
        desc = ", ".join(f"{m}: corpus {c} vs model {d}" for m, (c, d) in bad.items())
        raise ValueError(f"feature dims of corpus {corpus.path} do not match {what} ({desc})")
    if list(corpus.label_names) != list(label_names):
        unknown = [n for n in corpus.label_names if n not in label_names]
        detail = f"unknown label names {unknown}" if unknown else "same names in another order or a subset"
        raise ValueError(f"labels of corpus {corpus.path} ({list(corpus.label_names)}) do not match {what} "
                         f"({list(label_names)}): {detail}")
