"""Reader for COGMEN/CORECT processed pickles: ``{"train": [...], "dev": [...], "test": [...]}``.

Each list item is one dialogue, pickled as a ``Sample`` object (COGMEN's ``cogmen.Sample``, CORECT's
equivalent) or a dict, with fields ``vid, speaker, label, text, audio, visual, sentence`` (and,
in COGMEN, ``sbert_sentence_embeddings``). ``Sample`` objects are rebuilt as inert attribute records
by the restricted unpickler: the original class (which loads a sentence encoder on import) is never
imported. ``text_field`` picks the text features (``"text"`` or ``"sbert_sentence_embeddings"``).
"""
from __future__ import annotations

import os
from typing import Sequence

from hotspot_erc.data.iemocap import (FOUR_WAY, IEMOCAP_LABELS, ReaderError, dialogue_record,
                                      write_records)
from hotspot_erc.data.safe_pickle import Record, safe_load
from hotspot_erc.data.splits import canonical_split

# Any module's class named Sample (cogmen.Sample, corect.Sample, __main__, ...) is a record.
RECORD_CLASSES = [("*", "Sample")]


def _field(item, name, where, required=True):
    if isinstance(item, dict):
        if name in item:
            return item[name]
    elif isinstance(item, Record) and name in vars(item):
        return vars(item)[name]
    if required:
        raise ReaderError(f"{where}: missing field {name!r}")
    return None


def read_cogmen(src: str | os.PathLike, out_dir: str | os.PathLike, *, label_names: Sequence[str] | None = None,
                four_way: bool = False, drop_unlabelled: bool = False, text_field: str = "text",
                overwrite: bool = False, feature_dtype: str = "float32") -> str:
    """Convert a COGMEN/CORECT processed pickle at ``src`` into a native corpus at ``out_dir``.

    ``label_names`` defaults to IEMOCAP's six (labels must index into it); ``four_way`` keeps the
    first four classes (hap sad neu ang) as in :func:`hotspot_erc.data.iemocap.read_iemocap`.
    """
    data = safe_load(src, record_classes=RECORD_CLASSES)
    if not isinstance(data, dict) or not any(canonical_split(k) for k in data):
        keys = f" with keys {sorted(map(str, data))}" if isinstance(data, dict) else ""
        raise ReaderError(f"{src}: expected a dict with keys 'train', 'dev', 'test' holding lists of samples, "
                          f"got {type(data).__name__}{keys}")
    names = list(label_names) if label_names else list(IEMOCAP_LABELS)
    by_split = {}
    for key, items in data.items():
        split = canonical_split(key)
        if split is None:
            raise ReaderError(f"{src}: unexpected split {key!r} (expected train/dev/valid/test)")
        if not isinstance(items, (list, tuple)):
            raise ReaderError(f"{src}: split {key!r} must be a list of samples, got {type(items).__name__}")
        recs = []
        for i, item in enumerate(items):
            where = f"{src}: {key}[{i}]"
            if not isinstance(item, (dict, Record)):
                raise ReaderError(f"{where}: expected a Sample or dict, got {type(item).__name__}")
            vid = _field(item, "vid", where)
            rec = dialogue_record(
                vid, None, _field(item, "speaker", where), _field(item, "label", where),
                {"t": _field(item, text_field, where), "a": _field(item, "audio", where),
                 "v": _field(item, "visual", where)},
                _field(item, "sentence", where, required=False),
                num_classes=len(names), keep_classes=FOUR_WAY if four_way else None,
                drop_unlabelled=drop_unlabelled, label_names=names)
            if rec is not None:
                recs.append(rec)
        by_split.setdefault(split, []).extend(recs)
    if four_way:
        names = names[:FOUR_WAY]
    meta = {"name": "cogmen-processed", "source": os.path.basename(os.fspath(src)), "reader": "cogmen",
            "text_field": text_field}
    return write_records(out_dir, by_split, names, meta, overwrite, feature_dtype)
