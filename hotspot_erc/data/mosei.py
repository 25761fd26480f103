"""Reader for CMU-MOSEI in MulT's ``mosei_senti_data.pkl`` layout.

The pickle maps split (``"train"``, ``"valid"``, ``"test"``) to a dict of arrays::

    text    [n, T, 300]   audio [n, T, 74]   vision [n, T, 35]   (word-aligned frame sequences)
    labels  [n, 1, 1]     sentiment in [-3, 3]
    id      [n, k]        row[0] = video id, row[1] = segment start (when present)

Every segment is one utterance; the segments of one video form one conversation (a monologue:
one speaker), ordered by start time when the id carries it, else by position. As in MulT, ``-inf``
audio values become 0. Frames where every modality is all-zero are MulT's padding and are dropped
(``strip_padding=False`` keeps them). Labels: ``num_classes=2`` is by sign (negative < 0 <=
non-negative, MulT's convention; ``exclude_zero=True`` marks score-0 segments -1 instead),
``num_classes=7`` rounds the score clipped to [-3, 3]. The raw score is kept in ``score.npy``.
"""
from __future__ import annotations

import os
import re

import numpy as np

from hotspot_erc.data.format import DialogueRecord
from hotspot_erc.data.iemocap import ReaderError, write_records
from hotspot_erc.data.safe_pickle import safe_load
from hotspot_erc.data.splits import canonical_split
FIELDS = {"t": "text", "a": "audio", "v": "vision"}
LABELS_2 = ["negative", "positive"]
LABELS_7 = ["strong_neg", "neg", "weak_neg", "neutral", "weak_pos", "pos", "strong_pos"]


def sentiment_classes(score: np.ndarray, num_classes: int, exclude_zero: bool = False) -> np.ndarray:
    """Class index per sentiment score (see the module docstring)."""
    score = np.asarray(score, dtype=np.float64)
    if num_classes == 2:
        out = (score >= 0).astype(np.int64)
        if exclude_zero:
            out[score == 0] = -1
        return out
    if num_classes == 7:
        return (np.round(np.clip(score, -3.0, 3.0)) + 3).astype(np.int64)
    raise ValueError(f"num_classes must be 2 or 7, got {num_classes}")


def _text(x) -> str:
    if isinstance(x, bytes):
        return x.decode("utf-8", "replace")
    if isinstance(x, np.generic):
        x = x.item()
        return x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x)
    return str(x)


def _video_and_start(row, i: int):
    """(video id, sort key) from one id entry: a [video, start, ...] row or a 'video[seg]' string."""
    arr = np.asarray(row, dtype=object).reshape(-1)
    if arr.size == 0:
        return f"segment{i}", (0, float(i))
    video = _text(arr[0])
    if arr.size >= 2:
        try:
            return video, (0, float(_text(arr[1])))
        except ValueError:
            pass
    m = re.fullmatch(r"(.*)\[(\d+)\]", video)
    if m:
        return m.group(1), (0, float(m.group(2)))
    return video, (1, float(i))


def read_mosei(src: str | os.PathLike, out_dir: str | os.PathLike, *, num_classes: int = 7,
               exclude_zero: bool = False, strip_padding: bool = True, overwrite: bool = False,
               feature_dtype: str = "float32") -> str:
    """Convert MulT's ``mosei_senti_data.pkl`` at ``src`` into a native corpus at ``out_dir``."""
    if num_classes not in (2, 7):
        raise ValueError(f"num_classes must be 2 or 7, got {num_classes}")
    data = safe_load(src)
    if not isinstance(data, dict) or not any(canonical_split(k) for k in data):
        raise ReaderError(f"{src}: expected a dict with splits 'train', 'valid', 'test', got {type(data).__name__}")
    by_split: dict[str, list[DialogueRecord]] = {}
    seen: set[str] = set()
    for key, part in data.items():
        split = canonical_split(key)
        if split is None:
            raise ReaderError(f"{src}: unexpected split {key!r} (expected train/valid/test)")
        where = f"{src}: split {key!r}"
        if not isinstance(part, dict):
            raise ReaderError(f"{where}: expected a dict of arrays, got {type(part).__name__}")
        for need in (*FIELDS.values(), "labels"):
            if need not in part:
                raise ReaderError(f"{where}: missing {need!r} (keys are {sorted(part)})")
        arrays = {}
        for m, name in FIELDS.items():
            try:
                arr = np.asarray(part[name], dtype=np.float32)
            except (TypeError, ValueError):
                raise ReaderError(f"{where}: {name!r} must be a numeric [segments, frames, dim] array") from None
            if arr.ndim != 3:
                raise ReaderError(f"{where}: {name!r} must be [segments, frames, dim], got shape {arr.shape}")
            arrays[m] = arr
        n = arrays["t"].shape[0]
        for m, arr in arrays.items():
            if arr.shape[0] != n:
                raise ReaderError(f"{where}: {FIELDS[m]!r} has {arr.shape[0]} segments, 'text' has {n}")
        audio = arrays["a"].copy()
        audio[np.isneginf(audio)] = 0.0  # MulT's fix for log-energy features of silent frames
        arrays["a"] = audio
        try:
            raw = np.asarray(part["labels"], dtype=np.float64)
        except (TypeError, ValueError):
            raise ReaderError(f"{where}: 'labels' must be numeric sentiment scores") from None
        if raw.ndim == 0 or raw.shape[0] != n or (n and raw.size % n):
            raise ReaderError(f"{where}: 'labels' has shape {raw.shape} for {n} segments (expected [{n}, 1, 1])")
        score = raw.reshape(n, -1)[:, 0] if n else np.zeros(0)
        bad = ~np.isfinite(score)
        if bad.any():
            raise ReaderError(f"{where}: {int(bad.sum())} sentiment label(s) are NaN or infinite (first at "
                              f"segment {int(np.flatnonzero(bad)[0])}); fix or drop those segments")
        labels = sentiment_classes(score, num_classes, exclude_zero)
        ids = part.get("id")
        if ids is not None and (not hasattr(ids, "__len__") or len(ids) != n):
            count = len(ids) if hasattr(ids, "__len__") else "no list of"
            raise ReaderError(f"{where}: 'id' has {count} entries for {n} segments")
        groups: dict[str, list[tuple]] = {}
        for i in range(n):
            video, order = _video_and_start(ids[i], i) if ids is not None else (f"{key}{i}", (0, float(i)))
            groups.setdefault(video, []).append((order, i))
        recs = []
        for video, members in groups.items():
            members.sort()
            idx = [i for _, i in members]
            did = video if video not in seen else f"{video}@{split}"
            seen.add(did)
            feats = {m: [] for m in FIELDS}
            for i in idx:
                keep = np.ones(arrays["t"].shape[1], dtype=bool)
                if strip_padding and all(arrays[m].shape[1] == keep.size for m in FIELDS):
                    keep = np.zeros_like(keep)
                    for m in FIELDS:
                        keep |= (arrays[m][i] != 0).any(axis=1)
                for m in FIELDS:
                    seq = arrays[m][i]
                    feats[m].append(seq[keep] if seq.shape[0] == keep.size else seq)
            recs.append(DialogueRecord(
                dialogue_id=did, speakers=[0] * len(idx), labels=labels[idx].tolist(), features=feats,
                utterance_ids=[f"{video}[{j}]" for j in range(len(idx))], scores=score[idx].tolist()))
        by_split.setdefault(split, []).extend(recs)
    names = LABELS_2 if num_classes == 2 else LABELS_7
    meta = {"name": f"mosei-{num_classes}class", "source": os.path.basename(os.fspath(src)), "reader": "mult-mosei",
            "exclude_zero": exclude_zero, "strip_padding": strip_padding}
    return write_records(out_dir, by_split, names, meta, overwrite, feature_dtype)
