"""Opening a corpus folder: :class:`Corpus` (memory-mapped arrays) and :func:`open_corpus`, which
validates every file against ``meta.json`` before anything is used (layout in
:mod:`hotspot_erc.data.format`)."""
from __future__ import annotations

import json
import os

import numpy as np

from hotspot_erc.data import corpus_checks
from hotspot_erc.data.corpus_layout import FEATURE_DTYPES, FORMAT_NAME, FORMAT_VERSION, CorpusFormatError


class Corpus:
    """A validated, memory-mapped corpus directory (see the module docstring for the layout).

    Attributes: ``path``, ``meta``, ``modalities``, ``dims``, ``label_names``, ``features[m]``,
    ``offsets[m]``, ``intensity[m]`` (or None), ``dialogue_offsets``, ``speaker``, ``label``,
    ``score`` (or None), ``dialogue_ids``, ``utterance_ids``, ``texts`` (or None), ``splits``.
    Pickling a Corpus pickles its path, so DataLoader workers re-open the memory maps rather than
    receiving copies of the frames.
    """

    def __init__(self, path: str | os.PathLike, check_values: bool = True):
        self.path = os.fspath(path)
        self._check_values = check_values
        _load_into(self, self.path, check_values)

    # Only the path travels to worker processes; arrays are re-mapped there.
    def __getstate__(self):
        return {"path": self.path}

    def __setstate__(self, state):
        self.path = state["path"]
        self._check_values = False
        _load_into(self, self.path, check_values=False)

    @property
    def num_dialogues(self) -> int:
        return len(self.dialogue_offsets) - 1

    @property
    def num_utterances(self) -> int:
        return len(self.label)

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    def split_dialogues(self, split: str) -> np.ndarray:
        """Dialogue indices of ``split`` (int64, in the stored order)."""
        if split not in self.splits:
            raise KeyError(f"{self.path}: no split {split!r}; splits are {sorted(self.splits)}")
        return self.splits[split]

    def dialogue_utterances(self, i: int) -> tuple[int, int]:
        """Half-open utterance range of dialogue ``i``."""
        return int(self.dialogue_offsets[i]), int(self.dialogue_offsets[i + 1])

    def dialogue_frames(self, i: int, m: str) -> np.ndarray:
        """All frames of modality ``m`` in dialogue ``i`` (a memory-mapped view, not a copy)."""
        lo, hi = self.dialogue_utterances(i)
        off = self.offsets[m]
        return self.features[m][off[lo]:off[hi]]

    def __repr__(self) -> str:
        dims = ", ".join(f"{m}={self.dims[m]}" for m in self.modalities)
        return (f"Corpus({self.path!r}, dialogues={self.num_dialogues}, utterances={self.num_utterances}, "
                f"dims=({dims}), labels={self.label_names}, splits={ {k: len(v) for k, v in self.splits.items()} })")


def open_corpus(path: str | os.PathLike, check_values: bool = True) -> Corpus:
    """Open and validate a corpus directory.

    Raises :class:`CorpusFormatError` naming the file and the problem: missing files, offsets out of
    order or range, dims that disagree with ``meta.json``, labels outside ``label_names``, NaN/Inf
    features (``check_values=False`` skips this full scan of the frames, for very large corpora).
    """
    return Corpus(path, check_values=check_values)


def _load_into(corpus: Corpus, path: str, check_values: bool) -> None:
    def fail(fname: str, problem: str):
        raise CorpusFormatError(f"{os.path.join(path, fname)}: {problem}")

    if not os.path.isdir(path):
        raise CorpusFormatError(f"{path}: not a directory (expected a hotspot-erc corpus directory)")
    meta_path = os.path.join(path, "meta.json")
    if not os.path.isfile(meta_path):
        fail("meta.json", "missing (not a corpus, or an interrupted write)")
    try:
        with open(meta_path) as fh:
            meta = json.load(fh)
    except json.JSONDecodeError as exc:
        fail("meta.json", f"not valid JSON ({exc})")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        found = meta.get("format") if isinstance(meta, dict) else meta
        fail("meta.json", f"'format' must be {FORMAT_NAME!r}, got {found!r}")
    if meta.get("version") != FORMAT_VERSION:
        fail("meta.json", f"unsupported format version {meta.get('version')!r} (this reader reads {FORMAT_VERSION})")
    for key in ("label_names", "modalities", "dims"):
        if key not in meta:
            fail("meta.json", f"missing key {key!r}")
    label_names, modalities, dims = meta["label_names"], meta["modalities"], meta["dims"]
    if not isinstance(label_names, list) or not label_names:
        fail("meta.json", f"'label_names' must be a non-empty list, got {label_names!r}")
    if not isinstance(modalities, list) or not modalities or len(set(modalities)) != len(modalities):
        fail("meta.json", f"'modalities' must be a non-empty list of distinct names, got {modalities!r}")
    if not isinstance(dims, dict) or any(not isinstance(dims.get(m), int) or dims.get(m) <= 0 for m in modalities):
        fail("meta.json", f"'dims' must give a positive int for each of {modalities}, got {dims!r}")
    fdtype = meta.get("feature_dtype", "float32")
    if fdtype not in FEATURE_DTYPES:
        fail("meta.json", f"'feature_dtype' must be one of {FEATURE_DTYPES}, got {fdtype!r}")
    inten_mods = meta.get("intensity", [])
    if not isinstance(inten_mods, list) or any(m not in modalities for m in inten_mods):
        fail("meta.json", f"'intensity' must list modalities among {modalities}, got {inten_mods!r}")

    def load(fname: str, ndim: int, kinds: str, required: bool = True):
        full = os.path.join(path, fname)
        if not os.path.isfile(full):
            if required:
                fail(fname, "missing")
            return None
        try:
            arr = np.load(full, mmap_mode="r", allow_pickle=False)
        except Exception as exc:  # truncated header, pickled object array, ...
            fail(fname, f"not a readable .npy array ({exc})")
        if arr.ndim != ndim:
            fail(fname, f"expected a {ndim}-d array, got shape {arr.shape}")
        if arr.dtype.kind not in kinds:
            fail(fname, f"unexpected dtype {arr.dtype}")
        return arr

    def load_json(fname: str):
        full = os.path.join(path, fname)
        if not os.path.isfile(full):
            fail(fname, "missing")
        try:
            with open(full) as fh:
                return json.load(fh)
        except json.JSONDecodeError as exc:
            fail(fname, f"not valid JSON ({exc})")

    dlg = np.asarray(load("dialogue_offsets.npy", 1, "iu"), dtype=np.int64)
    speaker = np.asarray(load("speaker.npy", 1, "iu"), dtype=np.int64)
    label = np.asarray(load("label.npy", 1, "iu"), dtype=np.int64)
    U = len(label)
    if len(dlg) == 0:
        fail("dialogue_offsets.npy", "empty (needs at least the leading 0)")
    corpus_checks.check_offsets(dlg, len(dlg) - 1, "dialogue_offsets.npy", "dialogues", fail, total=U,
                   total_what="utterances in label.npy")
    if len(speaker) != U:
        fail("speaker.npy", f"{len(speaker)} entries, label.npy has {U} utterances")
    if U and speaker.min() < 0:
        fail("speaker.npy", f"negative speaker id {int(speaker.min())}")
    bad = (label < -1) | (label >= len(label_names))
    if bad.any():
        u = int(np.flatnonzero(bad)[0])
        fail("label.npy", f"utterance {u} has label {int(label[u])}, outside -1..{len(label_names) - 1} "
                          f"(label_names has {len(label_names)} classes)")
    score = None
    if meta.get("scores"):
        score = load("score.npy", 1, "f")
        if len(score) != U:
            fail("score.npy", f"{len(score)} entries for {U} utterances")
        if not np.isfinite(score).all():
            fail("score.npy", "contains NaN or Inf")

    features, offsets, intensity = {}, {}, {}
    for m in modalities:
        off = np.asarray(load(f"offsets_{m}.npy", 1, "iu"), dtype=np.int64)
        feats = load(f"features_{m}.npy", 2, "f")
        if feats.dtype != np.dtype(fdtype):
            fail(f"features_{m}.npy", f"dtype {feats.dtype} disagrees with meta.json feature_dtype {fdtype}")
        if feats.shape[1] != dims[m]:
            fail(f"features_{m}.npy", f"feature dim {feats.shape[1]} disagrees with meta.json dims[{m!r}] = {dims[m]}")
        corpus_checks.check_offsets(off, U, f"offsets_{m}.npy", "utterances", fail, total=feats.shape[0],
                       total_what=f"frames in features_{m}.npy")
        if check_values:
            corpus_checks.check_finite(feats, f"features_{m}.npy", fail)
        inten = None
        if m in inten_mods:
            inten = load(f"intensity_{m}.npy", 1, "f")
            if inten.shape[0] != feats.shape[0]:
                fail(f"intensity_{m}.npy", f"{inten.shape[0]} values for {feats.shape[0]} frames")
            if check_values:
                corpus_checks.check_finite(inten[:, None], f"intensity_{m}.npy", fail)
        features[m], offsets[m], intensity[m] = feats, off, inten

    ids = load_json("ids.json")
    if not (isinstance(ids, dict) and isinstance(ids.get("dialogues"), list)
            and isinstance(ids.get("utterances"), list)):
        fail("ids.json", "must hold lists 'dialogues' and 'utterances'")
    if len(ids["dialogues"]) != len(dlg) - 1:
        fail("ids.json", f"{len(ids['dialogues'])} dialogue ids for {len(dlg) - 1} dialogues")
    if len(ids["utterances"]) != U:
        fail("ids.json", f"{len(ids['utterances'])} utterance ids for {U} utterances")
    texts = ids.get("texts")
    if texts is not None and len(texts) != U:
        fail("ids.json", f"{len(texts)} texts for {U} utterances")

    raw_splits = load_json("splits.json")
    if not isinstance(raw_splits, dict):
        fail("splits.json", "must map split names to lists of dialogue indices")
    splits = corpus_checks.check_splits(raw_splits, ids["dialogues"], lambda problem: fail("splits.json", problem))

    corpus.meta = meta
    corpus.modalities = tuple(modalities)
    corpus.dims = {m: int(dims[m]) for m in modalities}
    corpus.label_names = list(label_names)
    corpus.features, corpus.offsets, corpus.intensity = features, offsets, intensity
    corpus.dialogue_offsets, corpus.speaker, corpus.label, corpus.score = dlg, speaker, label, score
    corpus.dialogue_ids, corpus.utterance_ids, corpus.texts = ids["dialogues"], ids["utterances"], texts
    corpus.splits = splits
