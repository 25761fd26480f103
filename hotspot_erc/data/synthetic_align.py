"""Synthetic conversations where frame-level cross-modal alignment is necessary (the "align" story).

The second built-in story (``hotspot-erc train --synthetic --synthetic-kind align``). The default
story (:mod:`hotspot_erc.data.synthetic`) can largely be solved from per-modality hotspots; here the
fine label can only be read by matching a text hotspot with the one audio (or, lagged, video) burst
that shares its content, and a quarter of the utterances can only be read from the conversation.

Generative story (every random draw comes from one ``numpy`` generator seeded by ``seed``, so the
same options give byte-identical files):

1. **Classes.** Six IEMOCAP names in IEMOCAP's order, as 3 coarse groups x 2 fine signs::

       group (text)   fine - (low)   fine + (high)
       pos            hap            exc
       neg            fru            ang
       calm           sad            neu

2. **World.** Per modality, orthonormal directions: text holds one *group prototype* per coarse
   group; audio and visual hold one *fine direction* (added with sign +1 or -1). Each modality also
   has its own ``key_dim``-dimensional *key subspace*: a content key (a random unit vector) is
   written into each modality through that modality's basis, so matching keys across modalities
   takes a learned projection, not a plain dot product.

3. **Conversation.** 8-16 turns between two speakers (the speaker switches with probability
   ``switch_prob``). Each speaker has a state; the first utterance of a speaker carries a cue.
   A later utterance whose speaker's previous utterance carried a cue is, with probability
   ``cueless_prob``, *cue-less*: its label is that previous utterance's label (the same speaker
   goes on feeling the same) and its frames hold no evidence at all. Otherwise it carries a cue
   and its label is the speaker's state kept with probability ``carry_prob`` or drawn afresh from
   ``prior``. Cue-less utterances never follow each other for one speaker (no chains), so the
   label is always one same-speaker turn back; about a quarter of all utterances are cue-less.

4. **Frames.** Each (utterance, modality) gets a length (``frames[m]``: short, so training is fast
   on a CPU; a modality goes missing, zero frames, with probability ``missing_prob``, never all
   three). Every frame is ``nuisance_u + style_speaker + noise``; the per-utterance nuisance is
   large (``nuisance_scale``) and constant over the utterance, so mean pooling mostly returns it.

5. **Text hotspot.** A cue-carrying utterance's text holds ONE burst (``burst_width`` frames,
   bump profile) at a random position: ``text_amplitude`` x the group prototype plus
   ``key_amplitude`` x the utterance's key. Text gives the coarse group, never the fine sign.

6. **Audio bursts (alignment).** Its audio holds ``bursts`` (3) equally strong, equally wide
   bursts, one per equal slice of the utterance (jittered by ``slot_jitter``), each
   ``fine_amplitude`` x sign x fine direction + ``key_amplitude`` x its own key. The burst in a
   random slot carries the text's key and the true fine sign; the others carry fresh random keys.
   The signs are drawn so that the *set* of signs says nothing about the label: with 3 bursts it is
   {+,+,-} or {+,-,-} with equal probability, whatever the label, and the true burst is one of
   those with the label's sign. So mean pooling (the signs cancel into a label-free sum), the
   loudest frame (a random one of the three) and any rule that looks at audio alone are at chance on
   the fine sign; only the burst whose key matches the text burst's key tells it.

7. **Video (lagged, weaker).** Video mirrors audio: the same bursts (same keys, same signs, through
   the video bases) at the same relative positions shifted ``video_lag`` frames later, scaled by
   ``video_scale``.

8. **Intensity.** Per frame: the bump profile of every burst plus Gaussian noise
   (``intensity_noise``) plus an occasional spurious peak (``spurious_prob``), clipped to [0, 1].
   It marks all bursts alike (it cannot tell the true audio burst from a distractor); cue-less
   utterances get noise (and spurious peaks) only.

Splits are 70/15/15 by dialogue (shuffled, as in the default story). ``synthetic_truth.npz`` holds,
per utterance, for analysis (models never read it): ``cueless`` (bool), ``coarse`` (0 pos, 1 neg,
2 calm), ``fine`` (0 low, 1 high), ``true_burst`` (slot of the key-matched audio/video burst, -1
when cue-less), ``burst_signs`` [U, bursts] (+1/-1, 0 when cue-less), and the centre frames
``text_centre`` [U], ``audio_centres`` / ``video_centres`` [U, bursts] (-1 when absent or missing),
and the bursts' frame spans ``burst_spans_<m>`` with ``burst_roles_<m>`` (text: its one burst;
audio / video: the slots in order, the key-matched one the evidence, the others distractors; see
:func:`~hotspot_erc.data.synthetic_common.span_truth_dtypes`).

Corpus cache: the generator recipe in ``meta.json`` carries ``"kind": "align"`` (the default story's
carries no kind), so a folder holding one story is never reused for the other: switching kinds in
the same ``--synthetic-dir`` regenerates the corpus (pass another ``--synthetic-dir`` to keep both).

What simple probes see (logistic regression, 3-fold CV, 160 dialogues, seeds 1 and 2; asserted
with margins in ``tests/test_synthetic_align.py``): on the fine sign within each coarse group,
mean-pooled frames of all modalities reach 0.47-0.53 (chance 0.5); the text hotspot frame plus the
key-matched audio frame (centred) reach 1.00 on the fine sign and 0.99 on the 6-way label, the text
hotspot plus the loudest audio frame 0.52-0.54 on the fine sign. A 6-way classifier trained on
cue-carrying utterances gets 0.17-0.18 of cue-less ones right (chance 1/6), while the same
speaker's previous label is theirs every time (that utterance is 1, 2, 3 turns back in 24%, 61%,
13% of cases). :func:`probe_baseline` (one key-matched frame per modality, train -> test) reaches
0.78 accuracy / 0.78 weighted F1 on 160 dialogues, seed 0: a model must read context to beat it.
"""
from __future__ import annotations

import json
import os
from typing import Mapping

import numpy as np

from hotspot_erc.data.format import Corpus, DialogueRecord, open_corpus
from hotspot_erc.data.synthetic_common import (LABEL_NAMES, MODALITIES, ROLE_DECOY, ROLE_EVIDENCE, ROLE_NONE,
                                               TRUTH_FILE, _bump, _reusable, _write, draw_lengths, merge_options,
                                               span_truth_dtypes)

GROUPS = ("pos", "neg", "calm")
# class name -> (coarse group index, fine sign index: 0 = low / -, 1 = high / +)
CLASS_CODES = {"hap": (0, 0), "exc": (0, 1), "fru": (1, 0), "ang": (1, 1), "sad": (2, 0), "neu": (2, 1)}
_CLASS_OF = {code: LABEL_NAMES.index(name) for name, code in CLASS_CODES.items()}

DEFAULTS = dict(
    utterances=(8, 16),
    frames={"t": (8, 20), "a": (20, 40), "v": (12, 25)},
    dims={"t": 32, "a": 24, "v": 16},
    prior=(1 / 6,) * 6,  # hap sad neu ang exc fru
    switch_prob=0.8,
    carry_prob=0.3,
    cueless_prob=0.4,
    missing_prob=0.0,
    nuisance_scale=1.5,
    style_scale=0.3,
    noise_scale=0.5,
    text_amplitude=3.0,
    fine_amplitude=2.0,
    key_dim=6,
    key_amplitude=2.0,
    bursts=3,
    burst_width=(2, 4),
    slot_jitter=0.15,
    video_lag=(1, 3),
    video_scale=0.6,
    intensity_noise=0.1,
    spurious_prob=0.2,
    split_fractions=(0.7, 0.15, 0.15),
)

TRUTH_DTYPES = {"cueless": bool, "coarse": np.int64, "fine": np.int64, "true_burst": np.int64,
                "burst_signs": np.int64, "text_centre": np.int64, "audio_centres": np.int64,
                "video_centres": np.int64, **span_truth_dtypes()}


def generate_alignment_corpus(out_dir: str | os.PathLike, num_dialogues: int = 120, seed: int = 0,
                              overwrite: bool = False, **options) -> str:
    """Generate the alignment story (see the module docstring) into ``out_dir``; returns the path.

    ``options`` override :data:`DEFAULTS`. Reuse and replacement follow
    :func:`hotspot_erc.data.synthetic.generate_synthetic_corpus` (the recipe includes the kind, so a
    default-story corpus in the folder is replaced, never reused).
    """
    opts = merge_options(DEFAULTS, options, num_dialogues)
    _check(opts)
    recipe = json.loads(json.dumps({"kind": "align", "num_dialogues": num_dialogues, "seed": seed, **opts}))
    out_dir = os.fspath(out_dir)
    if _reusable(out_dir, recipe, overwrite, TRUTH_DTYPES):
        return out_dir

    rng = np.random.default_rng(seed)
    world = _World(rng, opts)
    _write(out_dir, rng, num_dialogues=num_dialogues, dims=opts["dims"], label_names=LABEL_NAMES,
           name="synthetic-align", recipe=recipe, dialogue=lambda d: _dialogue(rng, world, opts, f"aln{d:05d}"),
           truth_dtypes=TRUTH_DTYPES, split_fractions=opts["split_fractions"])
    return out_dir


def _check(o: Mapping) -> None:
    B = int(o["bursts"])
    if B < 2:
        raise ValueError(f"bursts must be >= 2 (the true one and at least one distractor), got {B}")
    wlo, whi = o["burst_width"]
    if not 1 <= wlo <= whi:
        raise ValueError(f"burst_width must be (lo, hi) with 1 <= lo <= hi, got {o['burst_width']}")
    if o["frames"]["t"][0] < whi:
        raise ValueError(f"text frames {o['frames']['t']} must be at least burst_width's {whi}")
    for m in ("a", "v"):
        if o["frames"][m][0] < B * whi:
            raise ValueError(f"frames[{m!r}] = {o['frames'][m]} too short for {B} bursts of up to {whi} frames")
    if not 0.0 <= o["cueless_prob"] <= 1.0 or not 0.0 <= o["missing_prob"] < 1.0:
        raise ValueError("cueless_prob must be in [0, 1] and missing_prob in [0, 1)")


class _World:
    """Fixed directions per modality: group prototypes (text), fine direction (audio, video), key basis."""

    def __init__(self, rng: np.random.Generator, opts: Mapping):
        self.group, self.fine, self.key_basis = {}, {}, {}
        k = opts["key_dim"]
        for m in MODALITIES:
            d = opts["dims"][m]
            n_ev = len(GROUPS) if m == "t" else 1
            if d < n_ev + k:
                raise ValueError(f"dims[{m!r}] = {d} is too small: modality {m!r} needs at least {n_ev + k} "
                                 f"({n_ev} evidence directions + key_dim {k})")
            q, _ = np.linalg.qr(rng.standard_normal((d, n_ev + k)))
            if m == "t":
                self.group[m] = q[:, :n_ev].T  # [3, d]
            else:
                self.fine[m] = q[:, 0]
            self.key_basis[m] = q[:, n_ev:]  # [d, key_dim]


def _unit(rng: np.random.Generator, k: int) -> np.ndarray:
    v = rng.standard_normal(k)
    return v / np.linalg.norm(v)


def _place(x: np.ndarray, prof: np.ndarray, centre: int, width: int, vec: np.ndarray) -> tuple[int, list[int]]:
    """Add a bump of ``width`` frames carrying ``vec`` around frame ``centre`` (kept inside the
    utterance, so every burst has its full width); returns the bump's peak frame and its half-open
    frame span."""
    L = x.shape[0]
    width = min(width, L)
    lo = int(np.clip(centre - width // 2, 0, L - width))
    shape = _bump(width)
    x[lo:lo + width] += shape[:, None] * vec[None, :]
    prof[lo:lo + width] = np.maximum(prof[lo:lo + width], shape)
    return lo + (width - 1) // 2, [lo, lo + width]


def _labels(rng: np.random.Generator, o: Mapping, n: int):
    speakers = [0]
    for _ in range(1, n):
        speakers.append(1 - speakers[-1] if rng.random() < o["switch_prob"] else speakers[-1])
    prior = np.asarray(o["prior"], dtype=np.float64)
    prior = prior / prior.sum()
    state = [-1, -1]
    prev_cue = [False, False]  # did the speaker's previous utterance carry a cue (False: none yet)
    labels, cueless = [], []
    for s in speakers:
        if prev_cue[s] and rng.random() < o["cueless_prob"]:
            cueless.append(True)  # label = the same speaker's previous label (state unchanged)
            prev_cue[s] = False
        else:
            cueless.append(False)
            if state[s] < 0 or rng.random() >= o["carry_prob"]:
                state[s] = int(rng.choice(6, p=prior))
            prev_cue[s] = True
        labels.append(state[s])
    return speakers, labels, cueless


def _dialogue(rng: np.random.Generator, world: _World, o: Mapping, did: str):
    n = int(rng.integers(o["utterances"][0], o["utterances"][1] + 1))
    speakers, labels, cueless = _labels(rng, o, n)
    style = {m: rng.standard_normal((2, o["dims"][m])) * o["style_scale"] for m in MODALITIES}
    B, kd = int(o["bursts"]), o["key_dim"]
    wlo, whi = o["burst_width"]

    feats = {m: [] for m in MODALITIES}
    inten = {m: [] for m in MODALITIES}
    flags = {k: [] for k in TRUTH_DTYPES}
    for u in range(n):
        coarse, fine = CLASS_CODES[LABEL_NAMES[labels[u]]]
        lengths = draw_lengths(rng, o)
        xs, profs = {}, {}
        for m in MODALITIES:
            L, d = lengths[m], o["dims"][m]
            xs[m] = (rng.standard_normal(d) * o["nuisance_scale"] + style[m][speakers[u]]
                     + rng.standard_normal((L, d)) * o["noise_scale"])
            profs[m] = np.zeros(L)
        text_centre, centres = -1, {"a": [-1] * B, "v": [-1] * B}
        spans = {"t": [[-1, -1]], "a": [[-1, -1]] * B, "v": [[-1, -1]] * B}
        roles = {"t": [ROLE_NONE], "a": [ROLE_NONE] * B, "v": [ROLE_NONE] * B}
        true_slot, signs = -1, [0] * B
        if not cueless[u]:
            keys = [_unit(rng, kd) for _ in range(B)]  # keys[0] is the utterance's (text) key
            true_slot = int(rng.integers(B))
            # The sign set is drawn independently of the label (1..B-1 pluses); the true burst gets
            # the label's sign, the others the remaining signs in random order.
            n_plus = int(rng.integers(1, B))
            rest = [1] * (n_plus - (fine == 1)) + [-1] * (B - n_plus - (fine == 0))
            rest = [rest[i] for i in rng.permutation(B - 1)]
            signs = rest[:true_slot] + [1 if fine == 1 else -1] + rest[true_slot:]
            slot_keys = [keys[1 + i - (i > true_slot)] if i != true_slot else keys[0] for i in range(B)]
            rel = (np.arange(B) + 0.5 + rng.uniform(-o["slot_jitter"], o["slot_jitter"], B)) / B
            if lengths["t"] > 0:
                w = int(rng.integers(wlo, whi + 1))
                c = int(round(rng.uniform(0.15, 0.85) * (lengths["t"] - 1)))
                vec = (o["text_amplitude"] * world.group["t"][coarse]
                       + o["key_amplitude"] * (world.key_basis["t"] @ keys[0]))
                text_centre, spans["t"][0] = _place(xs["t"], profs["t"], c, w, vec)
                roles["t"][0] = ROLE_EVIDENCE
            lag = int(rng.integers(o["video_lag"][0], o["video_lag"][1] + 1))
            for m in ("a", "v"):
                L = lengths[m]
                if L == 0:
                    continue
                w = int(rng.integers(wlo, whi + 1))  # one width per modality: equally strong bursts
                scale = 1.0 if m == "a" else o["video_scale"]
                shift = 0 if m == "a" else lag
                for i in range(B):
                    vec = scale * (o["fine_amplitude"] * signs[i] * world.fine[m]
                                   + o["key_amplitude"] * (world.key_basis[m] @ slot_keys[i]))
                    centres[m][i], spans[m][i] = _place(xs[m], profs[m], int(round(rel[i] * (L - 1))) + shift, w, vec)
                    roles[m][i] = ROLE_EVIDENCE if i == true_slot else ROLE_DECOY
        for m in MODALITIES:
            L = lengths[m]
            noise = rng.standard_normal(L) * o["intensity_noise"]
            spurious = np.zeros(L)
            if L > 0 and rng.random() < o["spurious_prob"]:
                spurious[int(rng.integers(L))] = 0.6
            feats[m].append(xs[m].astype(np.float32))
            inten[m].append(np.clip(profs[m] + noise + spurious, 0.0, 1.0).astype(np.float32))
        flags["cueless"].append(cueless[u])
        flags["coarse"].append(coarse)
        flags["fine"].append(fine)
        flags["true_burst"].append(true_slot)
        flags["burst_signs"].append(signs)
        flags["text_centre"].append(text_centre)
        flags["audio_centres"].append(centres["a"])
        flags["video_centres"].append(centres["v"])
        for m in MODALITIES:
            flags[f"burst_spans_{m}"].append(spans[m])
            flags[f"burst_roles_{m}"].append(roles[m])
    rec = DialogueRecord(dialogue_id=did, speakers=speakers, labels=labels, features=feats, intensity=inten,
                         utterance_ids=[f"{did}_u{u:02d}" for u in range(n)])
    return rec, flags


# ----------------------------------------------------------------------------- probes

def alignment_truth(corpus: Corpus) -> dict | None:
    """The per-utterance truth arrays of an open alignment-story corpus (see the module
    docstring), or None for any other corpus (another kind, or no truth file)."""
    recipe = (getattr(corpus, "meta", None) or {}).get("generator")
    path = os.path.join(str(corpus.path), TRUTH_FILE)
    if not isinstance(recipe, dict) or recipe.get("kind") != "align" or not os.path.exists(path):
        return None
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def probe_features(corpus) -> dict:
    """Per-utterance probe features of an alignment-story corpus (a path or an open corpus).

    Returns ``mean_<m>`` (mean frame), ``peak_<m>`` (the frame of highest intensity minus the mean)
    and ``match_<m>`` (minus the mean: for text the hotspot burst's centre frame, for audio and
    video the centre frame of the key-matched burst, from the truth file; on cue-less utterances,
    which have no burst, the peak frame), each [U, d_m] (zeros where the modality is missing),
    plus the truth arrays under their own names.
    """
    c = corpus if isinstance(corpus, Corpus) else open_corpus(corpus)
    truth = alignment_truth(c)
    if truth is None:
        if not os.path.exists(os.path.join(c.path, TRUTH_FILE)):
            raise ValueError(f"{c.path} holds no {TRUTH_FILE}: not a synthetic corpus")
        raise ValueError(f"{c.path} is not an alignment-story corpus (generate it with kind='align')")
    U = c.num_utterances
    out = dict(truth)
    for m in c.modalities:
        F, off, I = np.asarray(c.features[m], dtype=np.float64), c.offsets[m], np.asarray(c.intensity[m])
        mean, peak, match = (np.zeros((U, F.shape[1])) for _ in range(3))
        for u in range(U):
            lo, hi = off[u], off[u + 1]
            if hi == lo:
                continue
            x = F[lo:hi]
            mean[u] = x.mean(0)
            peak[u] = x[I[lo:hi].argmax()] - mean[u]
            if m == "t":
                at = truth["text_centre"][u]
            else:
                b = truth["true_burst"][u]
                at = truth[("audio_centres" if m == "a" else "video_centres")][u, b] if b >= 0 else -1
            match[u] = (x[at] - mean[u]) if at >= 0 else peak[u]
        out[f"mean_{m}"], out[f"peak_{m}"], out[f"match_{m}"] = mean, peak, match
    out["corpus"] = c
    return out


def probe_baseline(corpus_path, seed: int = 0) -> dict:
    """The one-frame linear probe baseline a model must beat on this story.

    Logistic regression on [text hotspot frame; key-matched audio frame; key-matched video frame]
    (each minus its utterance mean; the frames are picked with the generator's truth, see
    :func:`probe_features`), trained on the train split, scored on the test split. Cue-less
    utterances have no matched frame (they get their peak frames) and stay near chance: the probe
    has no context. Returns ``{"accuracy", "weighted_f1", "train_utterances", "test_utterances"}``;
    ``seed`` is the classifier's ``random_state``.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    p = probe_features(corpus_path)
    c = p["corpus"]
    X = np.concatenate([p[f"match_{m}"] for m in c.modalities], 1)
    split = {}
    for name in ("train", "test"):
        idx = [np.arange(*c.dialogue_utterances(int(d))) for d in c.split_dialogues(name)]
        idx = np.concatenate(idx) if idx else np.zeros(0, dtype=np.int64)
        split[name] = idx[c.label[idx] >= 0]
    tr, te = split["train"], split["test"]
    clf = LogisticRegression(max_iter=2000, C=1.0, random_state=seed).fit(X[tr], c.label[tr])
    pred = clf.predict(X[te])
    return {"accuracy": float(accuracy_score(c.label[te], pred)),
            "weighted_f1": float(f1_score(c.label[te], pred, average="weighted")),
            "train_utterances": int(len(tr)), "test_utterances": int(len(te))}
