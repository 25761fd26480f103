"""Native corpus format: writer/reader round trip and every validation error."""
import json
import os
import pickle

import numpy as np
import pytest
import torch
from conftest import seed_for
from tolerance import rel_bound

from hotspot_erc.data import corpus_checks
from hotspot_erc.data import format as fmt
from hotspot_erc.data.format import (CorpusFormatError, CorpusWriter, DialogueRecord, RecordError, open_corpus,
                                     write_corpus)

DIMS = {"t": 5, "a": 3}


def make_dialogues(seed=0, num=4):
    """Dialogues with odd lengths, a one-utterance dialogue and missing (zero-frame) modalities."""
    rng = np.random.default_rng(seed_for(seed))
    out = []
    for d in range(num):
        n = 1 if d == 1 else int(rng.integers(2, 6))
        lens = {m: [int(x) for x in rng.integers(0, 7, size=n)] for m in DIMS}
        lens["t"][0] = max(lens["t"][0], 1)
        out.append(DialogueRecord(
            dialogue_id=f"dlg{d}",
            speakers=[int(x) for x in rng.integers(0, 2, size=n)],
            labels=[int(x) for x in rng.integers(-1, 3, size=n)],
            features={m: [rng.standard_normal((L, DIMS[m])) for L in lens[m]] for m in DIMS},
            intensity={"t": [rng.random(L) for L in lens["t"]]},
            utterance_ids=[f"dlg{d}_u{u}" for u in range(n)],
            scores=[float(x) for x in rng.uniform(-3, 3, size=n)],
            texts=[f"utterance {u}" for u in range(n)],
        ))
    return out


def write(path, dialogues=None, **kw):
    dialogues = make_dialogues() if dialogues is None else dialogues
    opts = dict(modalities=["t", "a"], dims=DIMS, label_names=["x", "y", "z"], intensity=["t"], scores=True)
    opts.update(kw)
    return write_corpus(path, dialogues, {"train": [0, 1], "dev": ["dlg2"], "test": [3]}, **opts)


@pytest.fixture
def corpus_dir(tmp_path):
    return write(tmp_path / "corpus")


def test_round_trip(corpus_dir):
    dialogues = make_dialogues()
    c = open_corpus(corpus_dir)
    assert c.num_dialogues == 4
    assert c.num_utterances == sum(len(d.labels) for d in dialogues)
    assert c.modalities == ("t", "a") and c.dims == DIMS and c.label_names == ["x", "y", "z"]
    assert isinstance(c.features["t"], np.memmap)  # opened memory-mapped, not read into RAM
    assert c.intensity["a"] is None and c.intensity["t"] is not None
    assert c.split_dialogues("dev").tolist() == [2] and c.split_dialogues("train").tolist() == [0, 1]
    for i, rec in enumerate(dialogues):
        lo, hi = c.dialogue_utterances(i)
        assert c.dialogue_ids[i] == rec.dialogue_id
        assert c.label[lo:hi].tolist() == list(rec.labels)
        assert c.speaker[lo:hi].tolist() == list(rec.speakers)
        assert c.utterance_ids[lo:hi] == list(rec.utterance_ids)
        assert c.texts[lo:hi] == list(rec.texts)
        # stored as float32: one rounding
        np.testing.assert_allclose(c.score[lo:hi], rec.scores, rtol=rel_bound(torch.float32), atol=0)
        for m in DIMS:
            for k, u in enumerate(range(lo, hi)):
                got = c.features[m][c.offsets[m][u]:c.offsets[m][u + 1]]
                np.testing.assert_array_equal(got, rec.features[m][k].astype(np.float32))
        for k, u in enumerate(range(lo, hi)):
            off = c.offsets["t"]
            np.testing.assert_array_equal(c.intensity["t"][off[u]:off[u + 1]], rec.intensity["t"][k].astype(np.float32))
        np.testing.assert_array_equal(c.dialogue_frames(i, "t"),
                                      np.concatenate(rec.features["t"]).astype(np.float32))
    with pytest.raises(KeyError, match="no split 'valid'"):
        c.split_dialogues("valid")


def test_float16_storage(tmp_path):
    c = open_corpus(write(tmp_path / "c16", feature_dtype="float16"))
    assert c.features["t"].dtype == np.float16 and c.meta["feature_dtype"] == "float16"


def test_pickle_reopens_by_path(corpus_dir):
    c = open_corpus(corpus_dir)
    blob = pickle.dumps(c)
    assert len(blob) < 1000  # the path travels, not the frames
    c2 = pickle.loads(blob)
    np.testing.assert_array_equal(c2.features["a"], c.features["a"])


def test_chunked_value_scan_finds_late_nan(tmp_path, monkeypatch):
    path = write(tmp_path / "c")
    total = open_corpus(path).features["t"].shape[0]
    arr = np.load(os.path.join(path, "features_t.npy"), mmap_mode="r+")
    arr[total - 1, 2] = np.nan
    arr.flush()
    del arr
    monkeypatch.setattr(corpus_checks, "CHUNK_ROWS", 4)  # many chunks: the NaN sits in the last one
    with pytest.raises(CorpusFormatError, match=f"features_t.npy: row {total - 1} contains NaN or Inf"):
        open_corpus(path)
    assert open_corpus(path, check_values=False).num_dialogues == 4


def _save(path, name, arr):
    np.save(os.path.join(path, name), arr)


def _edit_meta(path, **changes):
    with open(os.path.join(path, "meta.json")) as fh:
        meta = json.load(fh)
    meta.update(changes)
    with open(os.path.join(path, "meta.json"), "w") as fh:
        json.dump(meta, fh)


def _edit_json(path, name, fn):
    with open(os.path.join(path, name)) as fh:
        obj = json.load(fh)
    with open(os.path.join(path, name), "w") as fh:
        json.dump(fn(obj), fh)


def _load(path, name):
    return np.load(os.path.join(path, name))


def _poke(path, name, index, value):
    arr = np.load(os.path.join(path, name), mmap_mode="r+")
    arr[index] = value
    arr.flush()


CORRUPTIONS = {
    "meta missing": (lambda p: os.remove(os.path.join(p, "meta.json")), "meta.json", "missing"),
    "meta not json": (lambda p: open(os.path.join(p, "meta.json"), "w").write("{oops"), "meta.json", "not valid JSON"),
    "wrong version": (lambda p: _edit_meta(p, version=99), "meta.json", "unsupported format version 99"),
    "no label names": (lambda p: _edit_meta(p, label_names=[]), "meta.json", "'label_names' must be a non-empty list"),
    "bad dims": (lambda p: _edit_meta(p, dims={"t": 5}), "meta.json", "'dims' must give a positive int"),
    "features missing": (lambda p: os.remove(os.path.join(p, "features_a.npy")), "features_a.npy", "missing"),
    "offsets missing": (lambda p: os.remove(os.path.join(p, "offsets_t.npy")), "offsets_t.npy", "missing"),
    "labels missing": (lambda p: os.remove(os.path.join(p, "label.npy")), "label.npy", "missing"),
    "splits missing": (lambda p: os.remove(os.path.join(p, "splits.json")), "splits.json", "missing"),
    "dim disagrees": (lambda p: _edit_meta(p, dims={"t": 6, "a": 3}), "features_t.npy",
                      r"feature dim 5 disagrees with meta.json dims\['t'\] = 6"),
    "dtype disagrees": (lambda p: _edit_meta(p, feature_dtype="float16"), "features_t.npy",
                        "dtype float32 disagrees with meta.json feature_dtype float16"),
    "offsets out of order": (lambda p: _poke(p, "offsets_t.npy", 1, _load(p, "offsets_t.npy")[2] + 1),
                             "offsets_t.npy", r"offsets out of order: entry 2 \(\d+\) < entry 1"),
    "offsets out of range": (lambda p: _poke(p, "offsets_a.npy", -1, 10**6), "offsets_a.npy",
                             "last offset 1000000 out of range"),
    "offsets not from 0": (lambda p: _poke(p, "offsets_a.npy", 0, 1), "offsets_a.npy", "must start at 0"),
    "offsets wrong count": (lambda p: _save(p, "offsets_t.npy", _load(p, "offsets_t.npy")[:-1]), "offsets_t.npy",
                            "entries, expected"),
    "dialogue offsets out of range": (lambda p: _poke(p, "dialogue_offsets.npy", -1, 999), "dialogue_offsets.npy",
                                      "out of range"),
    "unknown label": (lambda p: _poke(p, "label.npy", 2, 3), "label.npy", "utterance 2 has label 3, outside -1..2"),
    "label below -1": (lambda p: _poke(p, "label.npy", 0, -2), "label.npy", "has label -2"),
    "nan feature": (lambda p: _poke(p, "features_a.npy", (1, 1), np.nan), "features_a.npy",
                    "row 1 contains NaN or Inf"),
    "inf feature": (lambda p: _poke(p, "features_t.npy", (0, 0), np.inf), "features_t.npy",
                    "row 0 contains NaN or Inf"),
    "inf intensity": (lambda p: _poke(p, "intensity_t.npy", 0, -np.inf), "intensity_t.npy", "NaN or Inf"),
    "nan score": (lambda p: _poke(p, "score.npy", 0, np.nan), "score.npy", "NaN or Inf"),
    "intensity length": (lambda p: _save(p, "intensity_t.npy", _load(p, "intensity_t.npy")[:-1]), "intensity_t.npy",
                         "values for"),
    "speaker length": (lambda p: _save(p, "speaker.npy", _load(p, "speaker.npy")[:-1]), "speaker.npy",
                       "entries, label.npy has"),
    "negative speaker": (lambda p: _poke(p, "speaker.npy", 0, -1), "speaker.npy", "negative speaker id"),
    "float labels": (lambda p: _save(p, "label.npy", _load(p, "label.npy").astype(np.float32)), "label.npy",
                     "unexpected dtype"),
    "2-d offsets": (lambda p: _save(p, "offsets_t.npy", _load(p, "offsets_t.npy")[:, None]), "offsets_t.npy",
                    "expected a 1-d array"),
    "not npy": (lambda p: open(os.path.join(p, "speaker.npy"), "wb").write(b"garbage"), "speaker.npy",
                "not a readable .npy"),
    "ids count": (lambda p: _edit_json(p, "ids.json", lambda o: {**o, "utterances": o["utterances"][:-1]}), "ids.json",
                  "utterance ids for"),
    "split out of range": (lambda p: _edit_json(p, "splits.json", lambda o: {**o, "test": [7]}), "splits.json",
                           "dialogue index 7, outside 0..3"),
    "split overlap": (lambda p: _edit_json(p, "splits.json", lambda o: {**o, "test": [0]}), "splits.json",
                      "appears in both 'train' and split 'test'"),
    "split not ints": (lambda p: _edit_json(p, "splits.json", lambda o: {**o, "test": ["dlg3"]}), "splits.json",
                       "must be a list of dialogue indices"),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_validation_errors(corpus_dir, case):
    corrupt, fname, message = CORRUPTIONS[case]
    corrupt(corpus_dir)
    with pytest.raises(CorpusFormatError, match=message) as info:
        open_corpus(corpus_dir)
    assert os.path.join(corpus_dir, fname) in str(info.value)  # names the file


def test_not_a_directory(tmp_path):
    with pytest.raises(CorpusFormatError, match="not a directory"):
        open_corpus(tmp_path / "nowhere")


def test_writer_rejects_bad_dialogues(tmp_path):
    w = CorpusWriter(tmp_path / "w", modalities=["t"], dims={"t": 2}, label_names=["x"])
    good = DialogueRecord("d0", [0], [0], {"t": [np.zeros((3, 2))]})
    w.add(good)
    with pytest.raises(ValueError, match="duplicate dialogue id"):
        w.add(good)
    with pytest.raises(ValueError, match=r"expected \[L, 2\] frames, got shape \(3, 4\)"):
        w.add(DialogueRecord("d1", [0], [0], {"t": [np.zeros((3, 4))]}))
    with pytest.raises(ValueError, match="2 speakers for 1 labels"):
        w.add(DialogueRecord("d2", [0, 1], [0], {"t": [np.zeros((3, 2))]}))
    with pytest.raises(ValueError, match="no features for modality 't'"):
        w.add(DialogueRecord("d3", [0], [0], {}))
    with pytest.raises(ValueError, match="label 1 outside -1..0"):
        w.add(DialogueRecord("d4", [0], [1], {"t": [np.zeros((3, 2))]}))
    with pytest.raises(ValueError, match="speaker ids must be >= 0"):
        w.add(DialogueRecord("d5", [-1], [0], {"t": [np.zeros((3, 2))]}))
    # Rejected dialogues left nothing behind: the corpus holds exactly the good one.
    path = w.close({"train": ["d0"]})
    c = open_corpus(path)
    assert c.num_utterances == 1 and c.features["t"].shape == (3, 2)
    with pytest.raises(FileExistsError, match="not empty"):
        CorpusWriter(path, modalities=["t"], dims={"t": 2}, label_names=["x"])
    opts = dict(modalities=["t"], dims={"t": 2}, label_names=["x"])
    with pytest.raises(ValueError, match="unknown dialogue id"):
        write_corpus(tmp_path / "w2", [good], {"train": ["nope"]}, **opts)
    # The writer and the reader hold splits to one rule (corpus_checks.check_splits), in the same words.
    with pytest.raises(RecordError, match=r"dialogue 0 \('d0'\) appears in both 'train' and split 'test'"):
        write_corpus(tmp_path / "w3", [good], {"train": [0], "test": ["d0"]}, **opts)
    with pytest.raises(RecordError, match="split 'train' has dialogue index 3, outside 0..0"):
        write_corpus(tmp_path / "w4", [good], {"train": [3]}, **opts)
    with pytest.raises(RecordError, match=r"dialogue 0 \('d0'\) appears twice in split 'train'"):
        write_corpus(tmp_path / "w5", [good], {"train": [0, "d0"]}, **opts)
    for sub in ("w2", "w3", "w4", "w5"):
        assert not os.path.exists(tmp_path / sub)  # a refused corpus leaves no folder


def test_writer_errors_are_record_errors(tmp_path):
    """Everything the writer refuses about a dialogue is a RecordError (a data error: the CLI exits 3)."""
    w = CorpusWriter(tmp_path / "w", modalities=["t"], dims={"t": 2}, label_names=["x"])
    with pytest.raises(RecordError, match="features must be finite"):
        w.add(DialogueRecord("d0", [0], [0], {"t": [np.full((2, 2), np.nan)]}))
    with pytest.raises(RecordError, match="label 3 outside"):
        w.add(DialogueRecord("d0", [0], [3], {"t": [np.zeros((2, 2))]}))
    w.close({"train": []})


def test_format_module_keeps_every_public_name():
    from hotspot_erc.data import corpus_layout, corpus_reader, corpus_writer

    for name in ("FORMAT_NAME", "FORMAT_VERSION", "FEATURE_DTYPES", "CorpusFormatError", "CorpusWriteError",
                 "OutputRefused", "RecordError", "holds_corpus", "remove_corpus", "check_not_overlapping",
                 "DialogueRecord", "CorpusWriter", "write_corpus", "Corpus", "open_corpus"):
        assert getattr(fmt, name) is getattr(corpus_layout, name, None) or getattr(fmt, name) is getattr(
            corpus_writer, name, None) or getattr(fmt, name) is getattr(corpus_reader, name, None), name


def test_interrupted_write_is_refused(tmp_path):
    w = CorpusWriter(tmp_path / "w", modalities=["t"], dims={"t": 2}, label_names=["x"])
    w.add(DialogueRecord("d0", [0], [0], {"t": [np.ones((3, 2))]}))
    # close() never ran: meta.json, written last, is absent.
    with pytest.raises(CorpusFormatError, match="meta.json: missing"):
        open_corpus(tmp_path / "w")
