"""Synthetic multimodal conversations: the project's embedded default corpus.

Generative story (every random draw comes from one ``numpy`` generator seeded by ``seed``, so the
same options give byte-identical files):

1. **World.** For each modality m (text ``t``, audio ``a``, visual ``v``; dims 32/24/16 by default)
   draw orthonormal directions: *evidence prototypes* and a ``key_dim``-dimensional *alignment key*
   subspace. Text and visual carry *valence* prototypes (positive, negative, sad; text also a
   "calm" prototype for neutral speech); audio carries *arousal* prototypes (high, low). The six
   IEMOCAP emotions map to codes::

       emotion  valence (t, v)  arousal (a)
       hap      positive        low
       exc      positive        high
       ang      negative        high
       fru      negative        low
       sad      sad             low
       neu      calm (t only)   none

   So hap/exc and ang/fru are confusable pairs: text or video alone says "positive" (or
   "negative"), audio alone says "high" (or "low"); only the combination of a valence modality with
   audio names the class.

2. **Conversation.** A dialogue has 8-16 turns between two speakers (the speaker switches with
   probability ``switch_prob``). Each speaker has an emotional state: on their next turn they keep
   it with probability ``carry_prob``, adopt the other speaker's current state with probability
   ``contagion_prob``, or draw a fresh one from the prior. An utterance's label is its speaker's
   state (emotion carry-over between turns).

3. **Frames.** Each (utterance, modality) gets a length (``frames[m]`` range; a modality goes
   missing, zero frames, with probability ``missing_prob``, never all three). Every frame is
   ``nuisance_u + style_speaker + noise``: the per-utterance nuisance vector is large
   (``nuisance_scale``) and constant over the utterance, so mean pooling an utterance mostly returns
   nuisance. The evidence lives in bursts.

4. **Hotspots.** Evidence is planted as one short burst (2-5 frames, bump profile, amplitude
   ``burst_amplitude``) per modality, centred at a shared relative position plus a per-modality
   jitter of up to ``async_jitter`` of the utterance (asynchronous offsets: modalities also differ in
   frame rate). Each burst adds the modality's prototype for the label and ``key_amplitude`` times
   the utterance's random alignment key (mapped into each modality's key subspace). Per modality,
   evidence is dropped with probability ``drop_evidence_prob`` (visual more often: ``video_evidence``).

5. **Decoys (alignment).** With probability ``decoy_prob`` the text of an emotional utterance (with
   at least 12 text frames) holds
   a second, equally strong burst with a *different* valence and a *different* random key, far from
   the true one. Pooled text then shows two valences; the true one is the burst whose key matches
   the audio/visual bursts: cross-modal alignment resolves it, per-modality pooling cannot.

6. **Silent utterances (context).** With probability ``silent_prob`` an utterance carries no burst
   at all in any modality (neutral ones included). Its label still follows the speaker's state, so
   only the dialogue context (previous turns of the same speaker, contagion) predicts it.

7. **Intensity.** The per-frame intensity is the bump profile of all bursts (true and decoy) plus
   Gaussian noise (``intensity_noise``) plus occasional spurious peaks, clipped to [0, 1]: it marks
   bursts noisily and cannot tell true from decoy bursts.

Splits are 70/15/15 by dialogue (shuffled). Per-utterance generation flags (``silent``, ``decoy``,
``evidence_<m>``) and the frame spans of the planted bursts (``burst_spans_<m>`` [U, B, 2] with
``burst_roles_<m>`` [U, B]: B = 2 for text, the evidence burst then the decoy, 1 otherwise; see
:func:`~hotspot_erc.data.synthetic_common.span_truth_dtypes`) are saved in ``synthetic_truth.npz``
for analysis; models never read it.

What simple probes see (logistic regression, 3-fold CV, 160 dialogues, seeds 1 and 2; asserted
with margins in ``tests/test_synthetic.py``): mean-pooled frames of all modalities reach 0.20-0.21
accuracy (the majority class is 0.25), the frame the intensity marks (minus the utterance mean)
reaches 0.73-0.74; on hap/exc/ang/fru, text alone and audio alone reach about 0.5 while text+audio
reach 0.99; a classifier trained on the other utterances gets silent ones right under 35% of the
time, while the same speaker's previous label matches theirs more than 60% of the time.
"""
from __future__ import annotations

import json
import os
from typing import Mapping

import numpy as np

from hotspot_erc.data.format import DialogueRecord
from hotspot_erc.data.synthetic_align import generate_alignment_corpus
from hotspot_erc.data.synthetic_common import (LABEL_NAMES, MODALITIES, ROLE_DECOY, ROLE_EVIDENCE,  # noqa: F401
                                               ROLE_NONE, SYNTHETIC_KINDS, SYNTHETIC_NAMES, _bump, _previous_recipe,
                                               _reusable, _write, draw_lengths, merge_options, span_truth_dtypes)

VALENCE = {"hap": "pos", "exc": "pos", "ang": "neg", "fru": "neg", "sad": "sad", "neu": "calm"}
AROUSAL = {"hap": "low", "exc": "high", "ang": "high", "fru": "low", "sad": "low", "neu": None}
CODES = {
    "t": ("pos", "neg", "sad", "calm"),
    "a": ("high", "low"),
    "v": ("pos", "neg", "sad"),
}

DEFAULTS = dict(
    utterances=(8, 16),
    frames={"t": (10, 40), "a": (20, 60), "v": (15, 50)},
    dims={"t": 32, "a": 24, "v": 16},
    prior=(0.15, 0.15, 0.25, 0.15, 0.15, 0.15),  # hap sad neu ang exc fru
    switch_prob=0.8,
    carry_prob=0.7,
    contagion_prob=0.15,
    missing_prob=0.0,
    nuisance_scale=1.5,
    style_scale=0.3,
    noise_scale=0.5,
    burst_amplitude=3.0,
    key_dim=4,
    key_amplitude=2.0,
    async_jitter=0.15,
    drop_evidence_prob=0.1,
    video_evidence=0.6,
    decoy_prob=0.3,
    silent_prob=0.15,
    intensity_noise=0.15,
    spurious_prob=0.3,
    split_fractions=(0.7, 0.15, 0.15),
)


def generate_synthetic_corpus(out_dir: str | os.PathLike, num_dialogues: int = 120, seed: int = 0,
                              overwrite: bool = False, kind: str = "default", **options) -> str:
    """Generate the synthetic corpus (see the module docstring) into ``out_dir``; returns the path.

    ``kind`` chooses the story: ``"default"`` (this module) or ``"align"`` (the alignment story of
    :mod:`hotspot_erc.data.synthetic_align`, whose own options then apply).
    ``options`` override :data:`DEFAULTS` (e.g. ``missing_prob=0.2``, ``dims={"t": 64, ...}``).
    If ``out_dir`` already holds a synthetic corpus generated with the same arguments (kind
    included) it is reused as is; one generated with other arguments or of another kind is
    replaced; another corpus is replaced only with ``overwrite=True``; a non-empty folder that holds
    no corpus is always refused (only files a corpus writer creates are ever deleted, see
    :func:`hotspot_erc.data.format.remove_corpus`).
    """
    if kind == "align":
        return generate_alignment_corpus(out_dir, num_dialogues=num_dialogues, seed=seed, overwrite=overwrite,
                                         **options)
    if kind != "default":
        raise ValueError(f"unknown synthetic corpus kind {kind!r}; known: {list(SYNTHETIC_KINDS)}")
    opts = merge_options(DEFAULTS, options, num_dialogues)
    recipe = json.loads(json.dumps({"num_dialogues": num_dialogues, "seed": seed, **opts}))
    out_dir = os.fspath(out_dir)
    truth_dtypes = {"silent": bool, "decoy": bool, **{f"evidence_{m}": bool for m in MODALITIES},
                    **span_truth_dtypes()}
    if _reusable(out_dir, recipe, overwrite, truth_dtypes):
        return out_dir

    rng = np.random.default_rng(seed)
    world = _World(rng, opts)
    _write(out_dir, rng, num_dialogues=num_dialogues, dims=opts["dims"], label_names=LABEL_NAMES,
           name="synthetic", recipe=recipe, dialogue=lambda d: _dialogue(rng, world, opts, f"syn{d:05d}"),
           truth_dtypes=truth_dtypes, split_fractions=opts["split_fractions"])
    return out_dir


class _World:
    """Fixed directions per modality: evidence prototypes and the alignment-key subspace."""

    def __init__(self, rng: np.random.Generator, opts: Mapping):
        self.proto, self.key_basis = {}, {}
        k = opts["key_dim"]
        for m in MODALITIES:
            d = opts["dims"][m]
            need = len(CODES[m]) + k
            if d < need:
                raise ValueError(f"dims[{m!r}] = {d} is too small: modality {m!r} needs at least {need} "
                                 f"({len(CODES[m])} prototypes + key_dim {k})")
            q, _ = np.linalg.qr(rng.standard_normal((d, need)))
            self.proto[m] = {code: q[:, i] for i, code in enumerate(CODES[m])}
            self.key_basis[m] = q[:, len(CODES[m]):]  # [d, key_dim]


def _dialogue(rng: np.random.Generator, world: _World, o: Mapping, did: str):
    n = int(rng.integers(o["utterances"][0], o["utterances"][1] + 1))
    prior = np.asarray(o["prior"], dtype=np.float64)
    prior = prior / prior.sum()
    # Speakers and their emotional states (carry-over and contagion between turns).
    speakers = [0]
    for _ in range(1, n):
        speakers.append(1 - speakers[-1] if rng.random() < o["switch_prob"] else speakers[-1])
    state = [int(rng.choice(6, p=prior)), int(rng.choice(6, p=prior))]
    labels, spoke = [], [False, False]
    for s in speakers:
        if spoke[s]:
            r = rng.random()
            if r < o["carry_prob"]:
                pass
            elif r < o["carry_prob"] + o["contagion_prob"]:
                state[s] = state[1 - s]
            else:
                state[s] = int(rng.choice(6, p=prior))
        spoke[s] = True
        labels.append(state[s])
    style = {m: rng.standard_normal((2, o["dims"][m])) * o["style_scale"] for m in MODALITIES}

    feats = {m: [] for m in MODALITIES}
    inten = {m: [] for m in MODALITIES}
    flags = {"silent": [], "decoy": [], **{f"evidence_{m}": [] for m in MODALITIES},
             **{k: [] for k in span_truth_dtypes()}}
    for u in range(n):
        emo = LABEL_NAMES[labels[u]]
        lengths = draw_lengths(rng, o)
        silent = rng.random() < o["silent_prob"]
        key = rng.standard_normal(o["key_dim"])
        key /= np.linalg.norm(key)
        anchor = rng.uniform(0.2, 0.8)
        codes = {"t": VALENCE[emo], "a": AROUSAL[emo], "v": VALENCE[emo] if VALENCE[emo] != "calm" else None}
        decoy = (not silent) and emo != "neu" and lengths["t"] >= 12 and rng.random() < o["decoy_prob"]
        flags["silent"].append(silent)
        flags["decoy"].append(decoy)
        for m in MODALITIES:
            L, d = lengths[m], o["dims"][m]
            x = (rng.standard_normal(d) * o["nuisance_scale"] + style[m][speakers[u]]
                 + rng.standard_normal((L, d)) * o["noise_scale"])
            prof = np.zeros(L)
            keep = 1.0 - o["drop_evidence_prob"]
            if m == "v":
                keep *= o["video_evidence"]
            has_ev = L > 0 and not silent and codes[m] is not None and rng.random() < keep
            flags[f"evidence_{m}"].append(bool(has_ev))
            spans, roles = [[-1, -1]] * (2 if m == "t" else 1), [ROLE_NONE] * (2 if m == "t" else 1)
            if has_ev:
                centre = np.clip(anchor + rng.uniform(-o["async_jitter"], o["async_jitter"]), 0.0, 1.0)
                c, spans[0] = _plant(rng, x, prof, centre, world.proto[m][codes[m]], world.key_basis[m] @ key, o)
                roles[0] = ROLE_EVIDENCE
                if m == "t" and decoy:
                    others = [v for v in ("pos", "neg", "sad") if v != codes["t"]]
                    wrong = others[int(rng.integers(len(others)))]
                    fake_key = rng.standard_normal(o["key_dim"])
                    fake_key /= np.linalg.norm(fake_key)
                    # Far from the true burst: on the other half of the utterance.
                    far = 0.85 if c < L / 2 else 0.15
                    _, spans[1] = _plant(rng, x, prof, far, world.proto[m][wrong], world.key_basis[m] @ fake_key, o)
                    roles[1] = ROLE_DECOY
            flags[f"burst_spans_{m}"].append(spans)
            flags[f"burst_roles_{m}"].append(roles)
            noise = rng.standard_normal(L) * o["intensity_noise"]
            spurious = np.zeros(L)
            if L > 0 and rng.random() < o["spurious_prob"]:
                spurious[int(rng.integers(L))] = 0.6
            feats[m].append(x.astype(np.float32))
            inten[m].append(np.clip(prof + noise + spurious, 0.0, 1.0).astype(np.float32))
    rec = DialogueRecord(dialogue_id=did, speakers=speakers, labels=labels, features=feats, intensity=inten,
                         utterance_ids=[f"{did}_u{u:02d}" for u in range(n)])
    return rec, flags


def _plant(rng, x, prof, centre, proto, key_vec, o) -> tuple[int, list[int]]:
    """Add one burst centred at relative position ``centre``; returns its centre frame and its
    half-open frame span."""
    L = x.shape[0]
    width = int(rng.integers(2, 6))
    c = int(round(centre * (L - 1)))
    lo = max(0, min(c - width // 2, L - width))
    shape = _bump(min(width, L))
    x[lo:lo + len(shape)] += shape[:, None] * (o["burst_amplitude"] * proto + o["key_amplitude"] * key_vec)[None, :]
    prof[lo:lo + len(shape)] = np.maximum(prof[lo:lo + len(shape)], shape)
    return c, [lo, lo + len(shape)]
