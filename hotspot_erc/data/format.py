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

The code is split by concern, and every name stays importable from here: file names, errors and
folder ownership in :mod:`~hotspot_erc.data.corpus_layout`, the writer in
:mod:`~hotspot_erc.data.corpus_writer`, the reader in :mod:`~hotspot_erc.data.corpus_reader`, and
the checks both apply (offsets, finite values, splits) in :mod:`~hotspot_erc.data.corpus_checks`.
"""
from hotspot_erc.data.corpus_checks import CHUNK_ROWS as _CHUNK_ROWS  # noqa: F401
from hotspot_erc.data.corpus_layout import (_CORPUS_FILES, _SCRATCH, _SCRATCH_FILES, FEATURE_DTYPES,  # noqa: F401
                                            FORMAT_NAME, FORMAT_VERSION, CorpusFormatError, CorpusWriteError,
                                            OutputRefused, RecordError, check_not_overlapping, holds_corpus,
                                            remove_corpus)
from hotspot_erc.data.corpus_reader import Corpus, open_corpus  # noqa: F401
from hotspot_erc.data.corpus_writer import (CorpusWriter, DialogueRecord, _write_error, _write_json,  # noqa: F401
                                            write_corpus)
