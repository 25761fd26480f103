"""Streaming corpus writer: :class:`DialogueRecord` in, a corpus folder out (layout in
:mod:`hotspot_erc.data.format`).

Frames go to raw scratch files as dialogues arrive and are copied into ``.npy`` files at the end,
so the peak memory is one dialogue plus one copy chunk; ``meta.json`` is written last, so an
interrupted write leaves a folder that the reader refuses; a failure removes what this writer
wrote and nothing else.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
from typing import Iterable, Mapping, Sequence

import numpy as np

from hotspot_erc.data import corpus_checks
from hotspot_erc.data.corpus_layout import (_SCRATCH, FEATURE_DTYPES, FORMAT_NAME, FORMAT_VERSION, CorpusWriteError,
                                            RecordError, remove_corpus)


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
            raise RecordError(f"{where}: {len(rec.speakers)} speakers for {n} labels")
        bad = [y for y in rec.labels if not -1 <= int(y) < len(self.label_names)]
        if bad:
            raise RecordError(f"{where}: label {bad[0]} outside -1..{len(self.label_names) - 1} "
                             f"(label_names has {len(self.label_names)} classes)")
        if any(int(s) < 0 for s in rec.speakers):
            raise RecordError(f"{where}: speaker ids must be >= 0, got {list(rec.speakers)}")
        if str(rec.dialogue_id) in self._seen_ids:
            raise RecordError(f"{where}: duplicate dialogue id")
        for m in self.modalities:
            seq = rec.features.get(m)
            if seq is None:
                raise RecordError(f"{where}: no features for modality {m!r}")
            if len(seq) != n:
                raise RecordError(f"{where}: modality {m!r} has {len(seq)} utterances, labels have {n}")
        for name, seq in (("utterance_ids", rec.utterance_ids), ("scores", rec.scores), ("texts", rec.texts)):
            if seq is not None and len(seq) != n:
                raise RecordError(f"{where}: {len(seq)} {name} for {n} utterances")
        if self.with_scores and rec.scores is None:
            raise RecordError(f"{where}: the writer was opened with scores=True but the dialogue has none")
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
                    raise RecordError(f"{where}, utterance {u}, modality {m!r}: expected [L, {d}] frames, "
                                     f"got shape {tuple(frames.shape)}")
                if frames.dtype.kind not in "biuf" or not np.isfinite(frames).all():
                    raise RecordError(f"{where}, utterance {u}, modality {m!r}: features must be finite numbers "
                                     "(found NaN, Inf or non-numeric values)")
                frames_of[m].append(frames)
                if m in self._inten:
                    if rec.intensity is None or m not in rec.intensity:
                        raise RecordError(f"{where}: no intensity for modality {m!r}")
                    inten = np.asarray(rec.intensity[m][u], dtype=np.float32).reshape(-1)
                    if not np.isfinite(inten).all():
                        raise RecordError(f"{where}, utterance {u}, modality {m!r}: intensity holds NaN or Inf")
                    if inten.shape[0] != frames.shape[0]:
                        raise RecordError(f"{where}, utterance {u}, modality {m!r}: {inten.shape[0]} intensity "
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
                if isinstance(x, (int, np.integer)) and not isinstance(x, bool):
                    out.append(int(x))
                elif str(x) in index:
                    out.append(index[str(x)])
                else:
                    raise RecordError(f"split {name!r}: unknown dialogue id {x!r}")
            split_idx[str(name)] = out

        def fail(problem):
            raise RecordError(problem)

        corpus_checks.check_splits(split_idx, self._dialogue_ids, fail)
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
        step = corpus_checks.CHUNK_ROWS
        for lo in range(0, shape[0], step):
            out[lo:lo + step] = src[lo:lo + step]
        del src
    out.flush()
    del out


def _write_json(path: str, obj) -> None:
    with open(path, "w") as fh:
        json.dump(obj, fh, indent=1)
