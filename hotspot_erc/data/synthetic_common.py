"""What the two synthetic stories share (:mod:`~hotspot_erc.data.synthetic`,
:mod:`~hotspot_erc.data.synthetic_align`): the label names and modalities, option merging, the
per-utterance length draw, the burst profile, and writing a story's corpus with its truth file and
splits (reusing a folder that already holds the same recipe), and the planted bursts' frame spans
both stories record in their truth files (:func:`burst_frame_roles` reads them back per frame).
Both stories import it, so neither imports the other.
"""
from __future__ import annotations

import json
import os
from typing import Mapping

import numpy as np

from hotspot_erc.data.format import FORMAT_NAME, CorpusWriter

LABEL_NAMES = ["hap", "sad", "neu", "ang", "exc", "fru"]  # IEMOCAP's 6-way names and order
MODALITIES = ("t", "a", "v")
# Per-utterance generator truth for analysis; models never read it.
TRUTH_FILE = "synthetic_truth.npz"
# Roles of a planted burst in ``burst_roles_<m>``: the one carrying the label's evidence (in the
# alignment story the key-matched one), or a decoy / distractor burst beside it.
ROLE_NONE, ROLE_EVIDENCE, ROLE_DECOY = 0, 1, 2


def span_truth_dtypes() -> dict:
    """The truth arrays of the planted bursts, per modality m: ``burst_spans_<m>`` [U, B, 2]
    half-open frame ranges inside the utterance ((-1, -1) where there is none) and
    ``burst_roles_<m>`` [U, B] (:data:`ROLE_EVIDENCE`, :data:`ROLE_DECOY` or :data:`ROLE_NONE`)."""
    return {**{f"burst_spans_{m}": np.int64 for m in MODALITIES}, **{f"burst_roles_{m}": np.int64 for m in MODALITIES}}


def burst_frame_roles(corpus) -> dict[str, np.ndarray] | None:
    """Per modality, the role of every frame of an open synthetic corpus (int8 [F_m], packed like
    ``corpus.features[m]``): the role of the planted burst covering it, or :data:`ROLE_NONE`. None
    when the corpus has no truth file or one written before burst spans were recorded."""
    path = os.path.join(corpus.path, TRUTH_FILE)
    if not os.path.isfile(path):
        return None
    with np.load(path) as z:
        if any(k not in z.files for k in span_truth_dtypes()):
            return None
        spans = {m: z[f"burst_spans_{m}"] for m in MODALITIES if m in corpus.modalities}
        roles = {m: z[f"burst_roles_{m}"] for m in spans}
    out = {}
    for m in spans:
        off = np.asarray(corpus.offsets[m], dtype=np.int64)
        frame = np.zeros(int(off[-1]), dtype=np.int8)
        u, b = np.nonzero(roles[m] != ROLE_NONE)
        for ui, bi in zip(u.tolist(), b.tolist()):
            lo, hi = spans[m][ui, bi]
            frame[off[ui] + lo:off[ui] + hi] = roles[m][ui, bi]
        out[m] = frame
    return out


def merge_options(defaults: dict, options: dict, num_dialogues: int) -> dict:
    """A story's options: ``defaults`` overridden by ``options`` (``frames`` and ``dims`` per
    modality), after checking the names and the dialogue count."""
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise TypeError(f"unknown synthetic corpus options {unknown}; known: {sorted(defaults)}")
    if num_dialogues < 3:
        raise ValueError(f"num_dialogues must be >= 3 (one per split), got {num_dialogues}")
    opts = {**defaults, **options}
    opts["frames"] = {**defaults["frames"], **dict(options.get("frames", {}))}
    opts["dims"] = {**defaults["dims"], **dict(options.get("dims", {}))}
    return opts


def draw_lengths(rng: np.random.Generator, o: dict) -> dict[str, int]:
    """Frames per modality of one utterance from the ``frames`` ranges; each modality goes missing
    (0 frames) with probability ``missing_prob``, never all of them."""
    lengths = {m: int(rng.integers(o["frames"][m][0], o["frames"][m][1] + 1)) for m in MODALITIES}
    missing = rng.random(len(MODALITIES)) < o["missing_prob"]
    if missing.all():
        missing[int(rng.integers(len(MODALITIES)))] = False
    for i, m in enumerate(MODALITIES):
        if missing[i]:
            lengths[m] = 0
    return lengths


# Story names (meta.json "name") of the corpora the synthetic generators write: a folder holding
# one of them is a synthetic corpus, which a generator may replace.
SYNTHETIC_NAMES = ("synthetic", "synthetic-align")
SYNTHETIC_KINDS = ("default", "align")


def _reusable(out_dir: str, recipe: dict, overwrite: bool, truth_keys=()) -> bool:
    """True when ``out_dir`` already holds the corpus of ``recipe`` with every array of
    ``truth_keys`` in its truth file; raises when the folder is not ours. A corpus whose truth file
    predates an array is regenerated: the same draws, so the same frames, and the fuller truth."""
    previous = _previous_recipe(out_dir)
    if previous == recipe and not truth_keys:
        return True
    if previous == recipe:
        try:
            with np.load(os.path.join(out_dir, TRUTH_FILE)) as z:
                return all(k in z.files for k in truth_keys)
        except (OSError, ValueError):
            return False
    # Another synthetic corpus is ours to replace; anything else in the folder is not.
    if os.path.isdir(out_dir) and os.listdir(out_dir) and previous is None and not overwrite:
        raise FileExistsError(f"{out_dir} is not empty and does not hold a synthetic corpus "
                              "(choose another folder, or pass overwrite=True to replace the corpus in it)")
    return False


def _write(out_dir: str, rng: np.random.Generator, *, num_dialogues: int, dims: Mapping, label_names,
           name: str, recipe: dict, dialogue, truth_dtypes: Mapping, split_fractions) -> None:
    """Write ``num_dialogues`` dialogues from ``dialogue(d) -> (DialogueRecord, per-utterance flags)``,
    the shuffled 70/15/15-style splits (drawn from ``rng`` after the dialogues) and the truth file."""
    writer = CorpusWriter(out_dir, modalities=MODALITIES, dims=dims, label_names=label_names,
                          intensity=True, overwrite=True,
                          extra_meta={"name": name, "generator": recipe})
    truth = {k: [] for k in truth_dtypes}
    with writer:
        for d in range(num_dialogues):
            rec, flags = dialogue(d)
            writer.add(rec)
            for k, v in flags.items():
                truth[k].extend(v)
        order = rng.permutation(num_dialogues)
        f_train, f_dev, _ = split_fractions
        n_train = max(1, int(round(f_train * num_dialogues)))
        n_dev = max(1, int(round(f_dev * num_dialogues)))
        n_train = min(n_train, num_dialogues - n_dev - 1)
        splits = {
            "train": sorted(order[:n_train].tolist()),
            "dev": sorted(order[n_train:n_train + n_dev].tolist()),
            "test": sorted(order[n_train + n_dev:].tolist()),
        }
        np.savez(os.path.join(out_dir, TRUTH_FILE),
                 **{k: np.asarray(v, dtype=truth_dtypes[k]) for k, v in truth.items()})
        writer.close(splits)


def _previous_recipe(out_dir: str) -> dict | None:
    """The generator arguments of the synthetic corpus already in ``out_dir``, if there is one."""
    try:
        with open(os.path.join(out_dir, "meta.json")) as fh:
            meta = json.load(fh)
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME or meta.get("name") not in SYNTHETIC_NAMES:
        return None
    return meta.get("generator")


def _bump(length: int) -> np.ndarray:
    # A short rise-peak-fall profile; its length is the burst's width in frames.
    x = np.linspace(-1.0, 1.0, length + 2)[1:-1]
    return np.cos(0.5 * np.pi * x) ** 0.5
