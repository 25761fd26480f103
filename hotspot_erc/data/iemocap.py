"""IEMOCAP readers: the DialogueRNN/MMGCN/COGMEN/CORECT 9-tuple pickle and COGMEN's processed pickle.

The 9-tuple (``IEMOCAP_features.pkl``) is::

    videoIDs, videoSpeakers, videoLabels, videoText, videoAudio, videoVisual, videoSentence, trainVid, testVid

where every ``video*`` is a dict keyed by dialogue id holding one entry per utterance (speakers
``"M"``/``"F"``, labels 0..5 = hap sad neu ang exc fru, one feature vector per utterance and
modality), and ``trainVid``/``testVid`` list dialogue ids. As in COGMEN's preprocessing, the dev
split is the front of ``trainVid`` in its stored order (sorted first when the file holds a set, whose
order is not stable), sized by the one dev-split rule of :mod:`hotspot_erc.data.splits` (10% rounded
down by default). A 10-tuple with an explicit dev list is also read.

Utterance-level features become one frame per utterance and modality; per-utterance frame
sequences (2-d arrays) are kept as sequences. Speakers are numbered inside each dialogue in order
of first appearance. ``four_way=True`` keeps hap sad neu ang: other utterances get label -1 and stay
in the dialogue as context (``drop_unlabelled=True`` removes them instead).
"""
from __future__ import annotations

import os
from typing import Mapping, Sequence

import numpy as np

from hotspot_erc.data.format import CorpusWriter, DialogueRecord
from hotspot_erc.data.safe_pickle import safe_load
from hotspot_erc.data.splits import DEFAULT_DEV_FRACTION, carve_dev, check_fraction

IEMOCAP_LABELS = ["hap", "sad", "neu", "ang", "exc", "fru"]
FOUR_WAY = 4  # hap sad neu ang are the first four classes
MODALITY_FIELDS = {"t": "text", "a": "audio", "v": "visual"}


class ReaderError(ValueError):
    """The source file does not have the layout the reader expects; the message says what differs."""


def utterance_frames(values, n: int, where: str) -> list[np.ndarray]:
    """One ``[L, d]`` float32 array per utterance from a per-dialogue feature entry.

    Accepts an ``[n, d]`` array (one frame per utterance), a list of ``[d]`` vectors, or a list of
    ``[L, d]`` frame sequences.
    """
    if isinstance(values, np.ndarray) and values.dtype != object:
        if values.ndim != 2 or values.shape[0] != n:
            raise ReaderError(f"{where}: expected [{n}, d] features, got shape {values.shape}")
        if values.dtype.kind not in "biuf":
            raise ReaderError(f"{where}: features must be numbers, got dtype {values.dtype}")
        return [values[i:i + 1].astype(np.float32) for i in range(n)]
    try:
        values = list(values)
    except TypeError:
        raise ReaderError(f"{where}: expected a list or array of features, got {type(values).__name__}") from None
    if len(values) != n:
        raise ReaderError(f"{where}: {len(values)} feature entries for {n} utterances")
    out = []
    for i, v in enumerate(values):
        try:
            arr = np.asarray(v, dtype=np.float32)
        except (TypeError, ValueError):
            raise ReaderError(f"{where}, utterance {i}: features must be numbers (a [d] vector or [L, d] "
                              f"frames), got {type(v).__name__}") from None
        if arr.ndim == 1:
            arr = arr[None, :]
        elif arr.ndim != 2:
            raise ReaderError(f"{where}, utterance {i}: expected a [d] vector or [L, d] frames, got shape {arr.shape}")
        out.append(arr)
    return out


def speaker_ids(speakers: Sequence, where: str) -> list[int]:
    """Speaker labels ('M'/'F', names, or one-hot vectors) as ids in order of first appearance."""
    keys = []
    for s in speakers:
        if isinstance(s, (list, tuple, np.ndarray)):
            arr = np.asarray(s)
            if arr.ndim != 1 or arr.size == 0:
                raise ReaderError(f"{where}: cannot read speaker {s!r}")
            keys.append(int(arr.argmax()))
        elif isinstance(s, bytes):
            keys.append(s.decode("latin1"))
        else:
            keys.append(s.item() if isinstance(s, np.generic) else s)
    first: dict = {}
    return [first.setdefault(k, len(first)) for k in keys]


def label_index(y, where: str, label_names: Sequence[str] | None = None) -> int:
    """One label as a class index: an int (or a one-element array), or a class name of
    ``label_names``; -1 stays "unlabelled". NaN, other strings and empty entries are refused."""
    arr = np.asarray(y)
    if arr.size != 1:
        raise ReaderError(f"{where}: a label must be one value, got {y!r}")
    v = arr.reshape(-1)[0]
    if isinstance(v, (bytes, np.bytes_)):
        v = v.decode("latin1")
    if isinstance(v, (str, np.str_)):
        names = {str(n).lower(): i for i, n in enumerate(label_names or ())}
        key = str(v).strip().lower()
        if key in names:
            return names[key]
        if key.lstrip("-").isdigit():
            return int(key)
        raise ReaderError(f"{where}: label {str(v)!r} is not a class index or one of {list(label_names or ())}")
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise ReaderError(f"{where}: label {v!r} is not a class index") from None
    if not np.isfinite(f) or f != int(f):
        raise ReaderError(f"{where}: label {v!r} is not a class index (NaN, infinite or fractional)")
    return int(f)


def dialogue_record(vid, utterance_ids, speakers, labels, features: Mapping[str, object], sentences,
                    num_classes: int, keep_classes: int | None, drop_unlabelled: bool,
                    label_names: Sequence[str] | None = None) -> DialogueRecord | None:
    """Build one :class:`DialogueRecord`; ``None`` when ``drop_unlabelled`` leaves it empty."""
    where = f"dialogue {vid!r}"
    try:
        labels = list(labels)
    except TypeError:
        raise ReaderError(f"{where}: labels must be a list, got {type(labels).__name__}") from None
    labels = [label_index(y, f"{where}, utterance {i}", label_names) for i, y in enumerate(labels)]
    n = len(labels)
    bad = [y for y in labels if not -1 <= y < num_classes]
    if bad:
        raise ReaderError(f"{where}: label {bad[0]} outside 0..{num_classes - 1}")
    spk = speaker_ids(speakers, where + " speakers")
    if len(spk) != n:
        raise ReaderError(f"{where}: {len(spk)} speakers for {n} labels")
    feats = {m: utterance_frames(v, n, f"{where}, {MODALITY_FIELDS.get(m, m)} features") for m, v in features.items()}
    uids = [str(u) for u in utterance_ids] if utterance_ids is not None else [f"{vid}_{i}" for i in range(n)]
    if len(uids) != n:
        raise ReaderError(f"{where}: {len(uids)} utterance ids for {n} labels")
    texts = [s if isinstance(s, str) else str(s) for s in sentences] if sentences is not None else None
    if texts is not None and len(texts) != n:
        texts = None  # transcripts are informational; a mismatch must not block the conversion
    if keep_classes is not None:
        labels = [y if y < keep_classes else -1 for y in labels]
    if drop_unlabelled:
        keep = [i for i, y in enumerate(labels) if y >= 0]
        if not keep:
            return None
        pick = lambda seq: None if seq is None else [seq[i] for i in keep]  # noqa: E731
        labels, spk, uids, texts = pick(labels), pick(spk), pick(uids), pick(texts)
        feats = {m: pick(v) for m, v in feats.items()}
        first: dict = {}
        spk = [first.setdefault(s, len(first)) for s in spk]
    return DialogueRecord(dialogue_id=str(vid), speakers=spk, labels=labels, features=feats,
                          utterance_ids=uids, texts=texts)


def write_records(out_dir, records_by_split: Mapping[str, list[DialogueRecord]], label_names, extra_meta,
                  overwrite: bool, feature_dtype: str) -> str:
    """Write dialogues grouped by split; feature dims come from the first utterance with frames."""
    dims, first = {}, {}
    owner: dict[str, str] = {}
    for split, recs in records_by_split.items():
        for rec in recs:
            did = str(rec.dialogue_id)
            if did in owner:
                where = "twice in split " + repr(split) if owner[did] == split else \
                    f"in both split {owner[did]!r} and split {split!r}"
                raise ReaderError(f"dialogue {did!r} appears {where}; a dialogue belongs to one split, once")
            owner[did] = split
            for m, seq in rec.features.items():
                for arr in seq:
                    if arr.shape[0] == 0:
                        continue
                    if m not in dims:
                        dims[m], first[m] = int(arr.shape[1]), did
                    elif int(arr.shape[1]) != dims[m]:
                        raise ReaderError(f"{MODALITY_FIELDS.get(m, m)} features are {dims[m]}-d in dialogue "
                                          f"{first[m]!r} but {int(arr.shape[1])}-d in dialogue {did!r}; every "
                                          "dialogue needs the same feature size")
    modalities = [m for m in ("t", "a", "v") if m in dims] + sorted(m for m in dims if m not in ("t", "a", "v"))
    if not modalities:
        raise ReaderError("no features found in any dialogue")
    writer = CorpusWriter(out_dir, modalities=modalities, dims=dims, label_names=label_names,
                          overwrite=overwrite, feature_dtype=feature_dtype, extra_meta=extra_meta,
                          scores=any(r.scores is not None for rs in records_by_split.values() for r in rs))
    splits = {}
    with writer:
        for split, recs in records_by_split.items():
            splits[split] = []
            for rec in recs:
                try:
                    writer.add(rec)
                except ValueError as exc:  # the writer's checks name the dialogue and utterance
                    raise ReaderError(str(exc)) from exc
                splits[split].append(rec.dialogue_id)
        return writer.close(splits)


def _ordered(ids, name: str) -> list:
    if isinstance(ids, (set, frozenset)):
        return sorted(ids)
    if isinstance(ids, np.ndarray):
        return ids.tolist()
    if isinstance(ids, (list, tuple)):
        return list(ids)
    raise ReaderError(f"{name} must be a list of dialogue ids, got {type(ids).__name__}")


def read_iemocap(src: str | os.PathLike, out_dir: str | os.PathLike, *, four_way: bool = False,
                 drop_unlabelled: bool = False, dev_fraction: float = DEFAULT_DEV_FRACTION, overwrite: bool = False,
                 feature_dtype: str = "float32") -> str:
    """Convert the IEMOCAP 9-tuple pickle at ``src`` into a native corpus at ``out_dir``."""
    check_fraction(dev_fraction, "dev_fraction")
    data = safe_load(src)
    if not isinstance(data, (tuple, list)) or len(data) not in (9, 10):
        raise ReaderError(
            f"{src}: expected the 9-tuple (videoIDs, videoSpeakers, videoLabels, videoText, videoAudio, "
            f"videoVisual, videoSentence, trainVid, testVid), got {type(data).__name__}"
            + (f" of length {len(data)}" if isinstance(data, (tuple, list)) else ""))
    ids, spk, lab, text, audio, visual, sent = data[:7]
    for name, obj in zip(("videoIDs", "videoSpeakers", "videoLabels", "videoText", "videoAudio", "videoVisual"),
                         (ids, spk, lab, text, audio, visual)):
        if not isinstance(obj, dict):
            raise ReaderError(f"{src}: {name} must be a dict keyed by dialogue id, got {type(obj).__name__}")
    train_ids = _ordered(data[7], "trainVid")
    if len(data) == 10:
        dev_ids, test_ids = _ordered(data[8], "devVid"), _ordered(data[9], "testVid")
    else:
        test_ids = _ordered(data[8], "testVid")
        dev_ids, train_ids = carve_dev(train_ids, dev_fraction)
    keep = FOUR_WAY if four_way else None
    by_split = {}
    fields = {"videoSpeakers": spk, "videoLabels": lab, "videoText": text, "videoAudio": audio,
              "videoVisual": visual}
    for split, vids in (("train", train_ids), ("dev", dev_ids), ("test", test_ids)):
        recs = []
        for vid in vids:
            for name, table in fields.items():
                try:
                    if vid not in table:
                        raise ReaderError(f"{src}: {split} dialogue {vid!r} has no entry in {name}")
                except TypeError:  # an unhashable id (a list inside trainVid)
                    raise ReaderError(f"{src}: {split} dialogue id {vid!r} is not a valid key") from None
            rec = dialogue_record(
                vid, ids.get(vid), spk[vid], lab[vid],
                {"t": text[vid], "a": audio[vid], "v": visual[vid]},
                sent.get(vid) if isinstance(sent, dict) else None,
                num_classes=len(IEMOCAP_LABELS), keep_classes=keep, drop_unlabelled=drop_unlabelled,
                label_names=IEMOCAP_LABELS)
            if rec is not None:
                recs.append(rec)
        by_split[split] = recs
    names = IEMOCAP_LABELS[:FOUR_WAY] if four_way else IEMOCAP_LABELS
    meta = {"name": "iemocap-4way" if four_way else "iemocap", "source": os.path.basename(os.fspath(src)),
            "reader": "iemocap-9tuple"}
    return write_records(out_dir, by_split, names, meta, overwrite, feature_dtype)
