"""The native frame-level corpus format: writer, reader and validation.

A corpus is one directory::

    meta.json                 format name and version, label names, modalities, feature dims, counts
    features_<m>.npy          [F_m, d_m] float32 (or float16) frames of modality m, all utterances concatenated
    offsets_<m>.npy           [U+1] int64: utterance u owns frames offsets[u]:offsets[u+1] (empty = missing)
    intensity_<m>.npy         [F_m] float32 per-frame intensity (optional, per modality)
    dialogue_offsets.npy      [D+1] int64: dialogue i owns utterances dialogue_offsets[i]:dialogue_offsets[i+1]
    speaker.npy               [U] int64 speaker id inside its dialogue (0, 1, ...)
    label.npy                 [U] int64 class index, -1 = unlabelled (kept as context, ignored by losses)
    score.npy                 [U] float32 continuous target (optional, e.g. MOSEI sentiment)
    ids.json                  dialogue ids, utterance ids (and optional utterance texts)
    splits.json               {"train": [dialogue index, ...], "dev": [...], "test": [...]} (disjoint)

Utterances are stored dialogue by dialogue in turn order, so a dialogue is a contiguous range and
its frames are a contiguous range of every ``features_<m>.npy``: a loader reads one slice per
modality. Arrays are opened memory-mapped, so a corpus larger than RAM can be opened; the NaN/Inf
scan reads the frames in fixed-size chunks. ``meta.json`` is written last, so an interrupted
write leaves a directory that :func:`open_corpus` refuses.

Replacing a corpus (``overwrite=True``) deletes only the files a writer creates (the names above,
``synthetic_truth.npz`` and the ``.partial`` scratch folder); anything else in the folder stays, and
a non-empty folder that does not hold a corpus is refused even with ``overwrite``.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from typing import Iterable, Mapping, Sequence

import numpy as np

FORMAT_NAME = "hotspot-erc-corpus"
FORMAT_VERSION = 1
FEATURE_DTYPES = ("float32", "float16")
# Rows per chunk when scanning or copying frames: bounded memory whatever the corpus size.
_CHUNK_ROWS = 1 << 16


class CorpusFormatError(ValueError):
    """A corpus directory is missing a file or holds inconsistent data; the message names both."""


class CorpusWriteError(OSError):
    """The output folder cannot be written (a file, read-only, full disk); nothing half-written stays."""


class OutputRefused(ValueError):
    """The output folder is (or contains, or lies inside) an input: writing there is refused."""


# What a writer (or the synthetic generator) creates in a corpus folder: the only names that
# overwrite=True ever deletes.
_CORPUS_FILES = re.compile(r"^(meta\.json|ids\.json|splits\.json|dialogue_offsets\.npy|speaker\.npy|label\.npy|"
                           r"score\.npy|synthetic_truth\.npz|(features|offsets|intensity)_[A-Za-z_][A-Za-z0-9_]*\.npy)$")
_SCRATCH_FILES = re.compile(r"^(features|intensity)_[A-Za-z_][A-Za-z0-9_]*\.bin$")
_SCRATCH = ".partial"


def holds_corpus(folder: str) -> bool:
    """True when ``folder`` holds a hotspot-erc corpus (its meta.json) or a writer's interrupted one."""
    try:
        with open(os.path.join(folder, "meta.json")) as fh:
            meta = json.load(fh)
        if isinstance(meta, dict) and meta.get("format") == FORMAT_NAME:
            return True
    except (OSError, ValueError):
        pass
    try:
        names = os.listdir(folder)
    except OSError:
        return False
    return _SCRATCH in names and all(n == _SCRATCH or _CORPUS_FILES.match(n) for n in names)


def remove_corpus(folder: str) -> list[str]:
    """Delete the corpus files in ``folder`` (never anything else); returns the names left in place.

    Raises FileExistsError when the non-empty folder does not hold a corpus: a destructive option
    only deletes what a writer wrote.
    """
    names = sorted(os.listdir(folder))
    if names and not holds_corpus(folder):
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        raise FileExistsError(f"{folder} is not empty and does not hold a hotspot-erc corpus ({shown}); "
                              "--overwrite only replaces a corpus: choose an empty or new folder")
    kept = []
    for name in names:
        full = os.path.join(folder, name)
        if name == _SCRATCH and os.path.isdir(full) and not os.path.islink(full):
            for inner in os.listdir(full):
                if _SCRATCH_FILES.match(inner):
                    os.unlink(os.path.join(full, inner))
            try:
                os.rmdir(full)
            except OSError:
                kept.append(name)
        elif _CORPUS_FILES.match(name) and os.path.isfile(full) and not os.path.islink(full):
            os.unlink(full)
        else:
            kept.append(name)
    return kept


def check_not_overlapping(out_dir: str | os.PathLike, inputs) -> None:
    """Refuse an output folder that is an input, lies inside one, or contains one: writing (and
    --overwrite) there would destroy the data being converted."""
    out = os.path.realpath(os.fspath(out_dir))
    for src in inputs:
        if src is None:
            continue
        real = os.path.realpath(os.fspath(src))
        if out == real:
            raise OutputRefused(f"the output folder {out_dir} is the input {src}; choose another output folder")
        if real.startswith(out.rstrip(os.sep) + os.sep):
            raise OutputRefused(f"the output folder {out_dir} contains the input {src}; choose a folder that does "
                             "not hold the data being converted")
        if out.startswith(real.rstrip(os.sep) + os.sep):
            raise OutputRefused(f"the output folder {out_dir} lies inside the input {src}; choose a folder outside it")


@dataclasses.dataclass
class DialogueRecord:
    """One dialogue, as handed to :class:`CorpusWriter`.

    ``features[m]`` is a list with one ``[L, d_m]`` array per utterance (``L`` may be 0: the modality
    is missing for that utterance); ``intensity[m]`` likewise holds ``[L]`` arrays, or is omitted.
    """

    dialogue_id: str
    speakers: Sequence[int]
    labels: Sequence[int]
    features: Mapping[str, Sequence[np.ndarray]]
    intensity: Mapping[str, Sequence[np.ndarray]] | None = None
    utterance_ids: Sequence[str] | None = None
    scores: Sequence[float] | None = None
    texts: Sequence[str] | None = None


class CorpusWriter:
    """Streams dialogues into a corpus directory without holding the corpus in memory.

    Frames are appended to raw scratch files and copied into ``.npy`` files by :meth:`close`, so the
    peak memory is one dialogue plus one copy chunk. Use as a context manager or call
    :meth:`close` with the split lists.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike,
        *,
        modalities: Sequence[str],
        dims: Mapping[str, int],
        label_names: Sequence[str],
        intensity: bool | Iterable[str] = False,
        scores: bool = False,
        feature_dtype: str = "float32",
        overwrite: bool = False,
        extra_meta: Mapping | None = None,
    ):
        self.out_dir = os.fspath(out_dir)
        if feature_dtype not in FEATURE_DTYPES:
            raise ValueError(f"feature_dtype must be one of {FEATURE_DTYPES}, got {feature_dtype!r}")
        modalities = tuple(modalities)
        if not modalities:
            raise ValueError("modalities must name at least one modality")
        if len(set(modalities)) != len(modalities):
            raise ValueError(f"modalities must be distinct, got {modalities}")
        for m in modalities:
            if not isinstance(m, str) or not m.isidentifier():
                raise ValueError(f"modality names must be identifiers such as 't', got {m!r}")
            if int(dims.get(m, 0)) <= 0:
                raise ValueError(f"dims[{m!r}] must be a positive feature size, got {dims.get(m)!r}")
        if not label_names:
            raise ValueError("label_names must list at least one class")
        self.modalities = modalities
        self.dims = {m: int(dims[m]) for m in modalities}
        self.label_names = [str(n) for n in label_names]
        if intensity is True:
            intensity = modalities
        self.intensity_modalities = tuple(m for m in modalities if intensity and m in tuple(intensity))
        self.with_scores = bool(scores)
        self.feature_dtype = np.dtype(feature_dtype)
        self.extra_meta = dict(extra_meta or {})

        self._frames, self._inten = {}, {}
        self._written: list[str] = []
        self._created_dir = False
        self._scratch = os.path.join(self.out_dir, _SCRATCH)
        self.kept_files: list[str] = []
        if os.path.exists(self.out_dir) and not os.path.isdir(self.out_dir):
            raise CorpusWriteError(f"cannot write corpus folder {self.out_dir}: it is a file, not a folder")
        try:
            if os.path.isdir(self.out_dir) and os.listdir(self.out_dir):
                if not overwrite:
                    raise FileExistsError(f"{self.out_dir} exists and is not empty (pass overwrite=True / "
                                          "--overwrite to replace the corpus in it)")
                self.kept_files = remove_corpus(self.out_dir)
            self._created_dir = not os.path.isdir(self.out_dir)
            os.makedirs(self.out_dir, exist_ok=True)
            os.makedirs(self._scratch, exist_ok=True)
            self._frames = {m: open(os.path.join(self._scratch, f"features_{m}.bin"), "wb") for m in modalities}
            self._inten = {m: open(os.path.join(self._scratch, f"intensity_{m}.bin"), "wb")
                           for m in self.intensity_modalities}
        except FileExistsError as exc:
            if exc.errno is None:  # ours above, not the OS's
                raise
            self._discard()
            raise _write_error(self.out_dir, exc) from exc
        except OSError as exc:
            self._discard()
            raise _write_error(self.out_dir, exc) from exc
        self._lengths: dict[str, list[int]] = {m: [] for m in modalities}
        self._speaker: list[int] = []
        self._label: list[int] = []
        self._score: list[float] = []
        self._dialogue_sizes: list[int] = []
        self._dialogue_ids: list[str] = []
        self._seen_ids: set[str] = set()
        self._utterance_ids: list[str] = []
        self._texts: list[str] = []
        self._any_text = False
        self._closed = False

    def add(self, rec: DialogueRecord) -> None:
        """Append one dialogue (checked here so an error names the dialogue, not a file offset)."""
        n = len(rec.labels)
        where = f"dialogue {rec.dialogue_id!r}"
        if len(rec.speakers) != n:
            raise ValueError(f"{where}: {len(rec.speakers)} speakers for {n} labels")
        bad = [y for y in rec.labels if not -1 <= int(y) < len(self.label_names)]
        if bad:
            raise ValueError(f"{where}: label {bad[0]} outside -1..{len(self.label_names) - 1} "
                             f"(label_names has {len(self.label_names)} classes)")
        if any(int(s) < 0 for s in rec.speakers):
            raise ValueError(f"{where}: speaker ids must be >= 0, got {list(rec.speakers)}")
        if str(rec.dialogue_id) in self._seen_ids:
            raise ValueError(f"{where}: duplicate dialogue id")
        for m in self.modalities:
            seq = rec.features.get(m)
            if seq is None:
                raise ValueError(f"{where}: no features for modality {m!r}")
            if len(seq) != n:
                raise ValueError(f"{where}: modality {m!r} has {len(seq)} utterances, labels have {n}")
        for name, seq in (("utterance_ids", rec.utterance_ids), ("scores", rec.scores), ("texts", rec.texts)):
            if seq is not None and len(seq) != n:
                raise ValueError(f"{where}: {len(seq)} {name} for {n} utterances")
        if self.with_scores and rec.scores is None:
            raise ValueError(f"{where}: the writer was opened with scores=True but the dialogue has none")
        # Check everything before writing anything, so a rejected dialogue leaves no partial frames.
        frames_of, inten_of = {}, {}
        for m in self.modalities:
            d = self.dims[m]
            frames_of[m], inten_of[m] = [], []
            for u, frames in enumerate(rec.features[m]):
                frames = np.asarray(frames)
                if frames.ndim == 1 and frames.size == 0:
                    frames = frames.reshape(0, d)
                if frames.ndim != 2 or frames.shape[1] != d:
                    raise ValueError(f"{where}, utterance {u}, modality {m!r}: expected [L, {d}] frames, "
                                     f"got shape {tuple(frames.shape)}")
                if frames.dtype.kind not in "biuf" or not np.isfinite(frames).all():
                    raise ValueError(f"{where}, utterance {u}, modality {m!r}: features must be finite numbers "
                                     "(found NaN, Inf or non-numeric values)")
                frames_of[m].append(frames)
                if m in self._inten:
                    if rec.intensity is None or m not in rec.intensity:
                        raise ValueError(f"{where}: no intensity for modality {m!r}")
                    inten = np.asarray(rec.intensity[m][u], dtype=np.float32).reshape(-1)
                    if not np.isfinite(inten).all():
                        raise ValueError(f"{where}, utterance {u}, modality {m!r}: intensity holds NaN or Inf")
                    if inten.shape[0] != frames.shape[0]:
                        raise ValueError(f"{where}, utterance {u}, modality {m!r}: {inten.shape[0]} intensity "
                                         f"values for {frames.shape[0]} frames")
                    inten_of[m].append(inten)
        try:
            for m in self.modalities:
                for frames in frames_of[m]:
                    self._frames[m].write(np.ascontiguousarray(frames, dtype=self.feature_dtype).tobytes())
                    self._lengths[m].append(frames.shape[0])
                for inten in inten_of[m]:
                    self._inten[m].write(inten.tobytes())
        except OSError as exc:
            raise _write_error(self.out_dir, exc) from exc
        self._speaker.extend(int(s) for s in rec.speakers)
        self._label.extend(int(y) for y in rec.labels)
        if self.with_scores:
            self._score.extend(float(s) for s in rec.scores)
        uids = rec.utterance_ids or [f"{rec.dialogue_id}_{u}" for u in range(n)]
        self._utterance_ids.extend(str(x) for x in uids)
        if rec.texts is not None:
            self._any_text = True
            self._texts.extend(str(t) for t in rec.texts)
        else:
            self._texts.extend([""] * n)
        self._dialogue_ids.append(str(rec.dialogue_id))
        self._seen_ids.add(str(rec.dialogue_id))
        self._dialogue_sizes.append(n)

    def close(self, splits: Mapping[str, Sequence[int | str]]) -> str:
        """Finish the corpus. ``splits`` maps split name to dialogue indices or dialogue ids."""
        if self._closed:
            raise RuntimeError("CorpusWriter.close() was already called")
        try:
            return self._close(splits)
        except OSError as exc:
            if isinstance(exc, CorpusWriteError):
                raise
            raise _write_error(self.out_dir, exc) from exc

    def _close(self, splits):
        for fh in [*self._frames.values(), *self._inten.values()]:
            fh.close()
        index = {d: i for i, d in enumerate(self._dialogue_ids)}
        split_idx: dict[str, list[int]] = {}
        for name, members in splits.items():
            out = []
            for x in members:
                if isinstance(x, (int, np.integer)):
                    out.append(int(x))
                elif str(x) in index:
                    out.append(index[str(x)])
                else:
                    raise ValueError(f"split {name!r}: unknown dialogue id {x!r}")
            split_idx[str(name)] = out
        owner: dict[int, str] = {}
        for name, members in split_idx.items():
            for i in members:
                if not 0 <= i < len(self._dialogue_ids):
                    raise ValueError(f"split {name!r}: dialogue index {i} outside 0..{len(self._dialogue_ids) - 1}")
                if i in owner:
                    raise ValueError(f"split {name!r}: dialogue {self._dialogue_ids[i]!r} is already in split "
                                     f"{owner[i]!r}")
                owner[i] = name
        num_frames = {}
        for m in self.modalities:
            lengths = np.asarray(self._lengths[m], dtype=np.int64)
            offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
            np.cumsum(lengths, out=offsets[1:])
            num_frames[m] = int(offsets[-1])
            np.save(self._path(f"offsets_{m}.npy"), offsets)
            _raw_to_npy(os.path.join(self._scratch, f"features_{m}.bin"), self._path(f"features_{m}.npy"),
                        self.feature_dtype, (num_frames[m], self.dims[m]))
            if m in self._inten:
                _raw_to_npy(os.path.join(self._scratch, f"intensity_{m}.bin"), self._path(f"intensity_{m}.npy"),
                            np.dtype(np.float32), (num_frames[m],))
        dlg = np.zeros(len(self._dialogue_sizes) + 1, dtype=np.int64)
        np.cumsum(np.asarray(self._dialogue_sizes, dtype=np.int64), out=dlg[1:])
        np.save(self._path("dialogue_offsets.npy"), dlg)
        np.save(self._path("speaker.npy"), np.asarray(self._speaker, dtype=np.int64))
        np.save(self._path("label.npy"), np.asarray(self._label, dtype=np.int64))
        if self.with_scores:
            np.save(self._path("score.npy"), np.asarray(self._score, dtype=np.float32))
        ids = {"dialogues": self._dialogue_ids, "utterances": self._utterance_ids}
        if self._any_text:
            ids["texts"] = self._texts
        _write_json(self._path("ids.json"), ids)
        _write_json(self._path("splits.json"), split_idx)
        shutil.rmtree(self._scratch)
        meta = {
            **self.extra_meta,
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "label_names": self.label_names,
            "modalities": list(self.modalities),
            "dims": self.dims,
            "feature_dtype": self.feature_dtype.name,
            "intensity": list(self.intensity_modalities),
            "scores": self.with_scores,
            "num_dialogues": len(self._dialogue_ids),
            "num_utterances": len(self._label),
            "num_frames": num_frames,
            "splits": {k: len(v) for k, v in split_idx.items()},
        }
        _write_json(self._path("meta.json"), meta)  # last: its presence marks a complete corpus
        self._closed = True
        return self.out_dir

    def _path(self, name: str) -> str:
        path = os.path.join(self.out_dir, name)
        self._written.append(path)
        return path

    def _discard(self) -> None:
        """Remove what this writer wrote (scratch, finished files) after a failure; nothing else."""
        for fh in [*self._frames.values(), *self._inten.values()]:
            try:
                fh.close()
            except OSError:
                pass
        shutil.rmtree(self._scratch, ignore_errors=True)
        for path in self._written:
            try:
                os.unlink(path)
            except OSError:
                pass
        if self._created_dir:
            try:
                os.rmdir(self.out_dir)
            except OSError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None and not self._closed:
            # meta.json was never written, so the folder stays unreadable: leave nothing half-done.
            self._discard()


def write_corpus(
    out_dir: str | os.PathLike,
    dialogues: Iterable[DialogueRecord],
    splits: Mapping[str, Sequence[int | str]],
    **writer_options,
) -> str:
    """Write ``dialogues`` (any iterable, consumed once) and ``splits`` as a corpus; returns the path."""
    writer = CorpusWriter(out_dir, **writer_options)
    with writer:
        for rec in dialogues:
            writer.add(rec)
        return writer.close(splits)


def _write_error(out_dir: str, exc: OSError) -> CorpusWriteError:
    reason = exc.strerror or str(exc)
    return CorpusWriteError(f"cannot write corpus folder {out_dir}: {reason}"
                            + (f" ({exc.filename})" if exc.filename else ""))


def _raw_to_npy(raw: str, dst: str, dtype: np.dtype, shape: tuple) -> None:
    out = np.lib.format.open_memmap(dst, mode="w+", dtype=dtype, shape=shape)
    if out.size:
        src = np.memmap(raw, dtype=dtype, mode="r", shape=shape)
        for lo in range(0, shape[0], _CHUNK_ROWS):
            out[lo:lo + _CHUNK_ROWS] = src[lo:lo + _CHUNK_ROWS]
        del src
    out.flush()
    del out


def _write_json(path: str, obj) -> None:
    with open(path, "w") as fh:
        json.dump(obj, fh, indent=1)


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
    _check_offsets(dlg, len(dlg) - 1, "dialogue_offsets.npy", "dialogues", fail, total=U,
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
        _check_offsets(off, U, f"offsets_{m}.npy", "utterances", fail, total=feats.shape[0],
                       total_what=f"frames in features_{m}.npy")
        if check_values:
            _check_finite(feats, f"features_{m}.npy", fail)
        inten = None
        if m in inten_mods:
            inten = load(f"intensity_{m}.npy", 1, "f")
            if inten.shape[0] != feats.shape[0]:
                fail(f"intensity_{m}.npy", f"{inten.shape[0]} values for {feats.shape[0]} frames")
            if check_values:
                _check_finite(inten[:, None], f"intensity_{m}.npy", fail)
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
    splits, owner = {}, {}
    D = len(dlg) - 1
    for name, members in raw_splits.items():
        if not isinstance(members, list) or any(not isinstance(x, int) or isinstance(x, bool) for x in members):
            fail("splits.json", f"split {name!r} must be a list of dialogue indices")
        arr = np.asarray(members, dtype=np.int64)
        if arr.size and (arr.min() < 0 or arr.max() >= D):
            fail("splits.json", f"split {name!r} has dialogue index {int(arr[(arr < 0) | (arr >= D)][0])}, "
                                f"outside 0..{D - 1}")
        for x in members:
            if x in owner:
                where = "twice in" if owner[x] == name else f"in both {owner[x]!r} and"
                fail("splits.json", f"dialogue {x} ({ids['dialogues'][x]!r}) appears {where} split {name!r}")
            owner[x] = name
        splits[name] = arr

    corpus.meta = meta
    corpus.modalities = tuple(modalities)
    corpus.dims = {m: int(dims[m]) for m in modalities}
    corpus.label_names = list(label_names)
    corpus.features, corpus.offsets, corpus.intensity = features, offsets, intensity
    corpus.dialogue_offsets, corpus.speaker, corpus.label, corpus.score = dlg, speaker, label, score
    corpus.dialogue_ids, corpus.utterance_ids, corpus.texts = ids["dialogues"], ids["utterances"], texts
    corpus.splits = splits


def _check_offsets(off, count, fname, what, fail, total=None, total_what=""):
    if len(off) != count + 1:
        fail(fname, f"{len(off)} entries, expected {count + 1} (one more than the {count} {what})")
    if off[0] != 0:
        fail(fname, f"must start at 0, starts at {int(off[0])}")
    step = np.diff(off)
    if (step < 0).any():
        i = int(np.flatnonzero(step < 0)[0])
        fail(fname, f"offsets out of order: entry {i + 1} ({int(off[i + 1])}) < entry {i} ({int(off[i])})")
    if total is not None and off[-1] != total:
        fail(fname, f"last offset {int(off[-1])} out of range: there are {total} {total_what}")


def _check_finite(arr, fname, fail):
    for lo in range(0, arr.shape[0], _CHUNK_ROWS):
        chunk = np.asarray(arr[lo:lo + _CHUNK_ROWS])
        ok = np.isfinite(chunk)
        if not ok.all():
            row = lo + int(np.flatnonzero(~ok.all(axis=1))[0])
            fail(fname, f"row {row} contains NaN or Inf")
