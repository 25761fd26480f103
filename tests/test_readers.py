"""Readers on small files written in the original layouts, and the restricted unpickler."""
import argparse
import collections
import os
import pickle
import sys
import types

import numpy as np
import pytest
import torch
from conftest import seed_for
from tolerance import rel_bound

from hotspot_erc.data.convert import add_convert_arguments, convert, run_convert
from hotspot_erc.data.format import open_corpus
from hotspot_erc.data.iemocap import ReaderError
from hotspot_erc.data.safe_pickle import Record, UnsafePickleError, safe_load

DT, DA, DV = 7, 5, 3  # small stand-ins for IEMOCAP's 100/100/512 feature sizes


def iemocap_tuple(rng, num_train=10, num_test=3, train_as_set=False):
    """The DialogueRNN/MMGCN 9-tuple, with the per-dialogue value types those files mix."""
    ids, spk, lab, text, audio, visual, sent = {}, {}, {}, {}, {}, {}, {}
    vids = [f"Ses0{i // 5 + 1}{'FM'[i % 2]}_impro{i:02d}" for i in range(num_train + num_test)]
    for k, vid in enumerate(vids):
        n = 1 if k == 2 else int(rng.integers(3, 8))
        ids[vid] = [f"{vid}_{'FM'[u % 2]}{u:03d}" for u in range(n)]
        spk[vid] = ["M" if (u + k) % 3 else "F" for u in range(n)]
        lab[vid] = [int(x) for x in rng.integers(0, 6, size=n)]
        text[vid] = [rng.standard_normal(DT).astype(np.float32) for _ in range(n)]  # list of vectors
        audio[vid] = rng.standard_normal((n, DA)).astype(np.float32)                # [n, d] array
        visual[vid] = [rng.standard_normal(DV) for _ in range(n)]                   # float64 vectors
        sent[vid] = [f"words {u}" for u in range(n)]
    train, test = vids[:num_train], vids[num_train:]
    return (ids, spk, lab, text, audio, visual, sent, set(train) if train_as_set else train, test)


@pytest.fixture
def iemocap_pkl(tmp_path):
    data = iemocap_tuple(np.random.default_rng(seed_for(0)))
    path = tmp_path / "IEMOCAP_features.pkl"
    with open(path, "wb") as fh:
        pickle.dump(data, fh, protocol=2)  # the original files are Python 2 era pickles
    return path, data


def test_iemocap_six_way(iemocap_pkl, tmp_path):
    path, (ids, spk, lab, text, audio, visual, sent, train, test) = iemocap_pkl
    c = open_corpus(convert("iemocap", path, tmp_path / "out"))
    assert c.label_names == ["hap", "sad", "neu", "ang", "exc", "fru"]
    assert c.dims == {"t": DT, "a": DA, "v": DV}
    names = lambda split: [c.dialogue_ids[i] for i in c.split_dialogues(split)]  # noqa: E731
    assert names("dev") == train[:1] and names("train") == train[1:] and names("test") == test
    for i, vid in enumerate(c.dialogue_ids):
        lo, hi = c.dialogue_utterances(i)
        assert c.label[lo:hi].tolist() == lab[vid]
        assert c.utterance_ids[lo:hi] == ids[vid]
        assert c.texts[lo:hi] == sent[vid]
        first = spk[vid][0]
        assert c.speaker[lo:hi].tolist() == [0 if s == first else 1 for s in spk[vid]]
        assert (np.diff(c.offsets["t"][lo:hi + 1]) == 1).all()  # one frame per utterance
        np.testing.assert_array_equal(c.features["t"][c.offsets["t"][lo]:c.offsets["t"][hi]], np.stack(text[vid]))
        np.testing.assert_array_equal(c.features["a"][c.offsets["a"][lo]:c.offsets["a"][hi]], audio[vid])
        np.testing.assert_allclose(c.features["v"][c.offsets["v"][lo]:c.offsets["v"][hi]], np.stack(visual[vid]),
                                   rtol=rel_bound(torch.float32), atol=0)  # float64 stored as float32


def test_iemocap_four_way(iemocap_pkl, tmp_path):
    path, data = iemocap_pkl
    lab = data[2]
    c = open_corpus(convert("iemocap", path, tmp_path / "ctx", four_way=True))
    assert c.label_names == ["hap", "sad", "neu", "ang"]
    all_labels = [y for vid in c.dialogue_ids for y in lab[vid]]
    assert c.label.tolist() == [y if y < 4 else -1 for y in all_labels]  # exc/fru kept as context
    d = open_corpus(convert("iemocap", path, tmp_path / "drop", four_way=True, drop_unlabelled=True))
    assert d.label.tolist() == [y for y in all_labels if y < 4]
    assert d.num_utterances < c.num_utterances


def test_iemocap_set_of_train_ids_is_sorted(tmp_path):
    data = iemocap_tuple(np.random.default_rng(seed_for(1)), num_train=20, train_as_set=True)
    path = tmp_path / "f.pkl"
    path.write_bytes(pickle.dumps(data))
    c = open_corpus(convert("iemocap", path, tmp_path / "out"))
    dev = [c.dialogue_ids[i] for i in c.split_dialogues("dev")]
    assert dev == sorted(data[7])[:2]


def test_iemocap_layout_errors(tmp_path):
    path = tmp_path / "bad.pkl"
    path.write_bytes(pickle.dumps(({}, {}, {})))
    with pytest.raises(ReaderError, match="expected the 9-tuple"):
        convert("iemocap", path, tmp_path / "o1")
    data = list(iemocap_tuple(np.random.default_rng(seed_for(2))))
    vid = data[8][0]
    data[3][vid] = data[3][vid][:-1]  # one text vector short
    path.write_bytes(pickle.dumps(tuple(data)))
    with pytest.raises(ReaderError, match=rf"dialogue '{vid}', text features: .* feature entries for"):
        convert("iemocap", path, tmp_path / "o2")
    data = list(iemocap_tuple(np.random.default_rng(seed_for(2))))
    data[2][vid] = [9] * len(data[2][vid])
    path.write_bytes(pickle.dumps(tuple(data)))
    with pytest.raises(ReaderError, match="label 9 outside 0..5"):
        convert("iemocap", path, tmp_path / "o3")


def _cogmen_pickle(tmp_path, monkeypatch, rng, module="cogmen.Sample"):
    """Pickle COGMEN-style Sample objects under their original module path, then unregister it."""
    mod = types.ModuleType(module)

    class Sample:
        def __init__(self, vid, speaker, label, text, audio, visual, sentence):
            self.vid, self.speaker, self.label = vid, speaker, label
            self.text, self.audio, self.visual, self.sentence = text, audio, visual, sentence
            self.sbert_sentence_embeddings = np.ones((len(label), 4), dtype=np.float32) * len(label)

    Sample.__module__, Sample.__qualname__ = module, "Sample"
    mod.Sample = Sample
    parent = types.ModuleType(module.split(".")[0])
    setattr(parent, module.split(".")[1], mod)
    monkeypatch.setitem(sys.modules, parent.__name__, parent)
    monkeypatch.setitem(sys.modules, module, mod)
    ids, spk, lab, text, audio, visual, sent, train, test = iemocap_tuple(rng, num_train=6, num_test=2)
    mk = lambda v: Sample(v, spk[v], lab[v], text[v], audio[v], visual[v], sent[v])  # noqa: E731
    data = {"train": [mk(v) for v in train[1:]], "dev": [mk(train[0])], "test": [mk(v) for v in test]}
    path = tmp_path / "data_iemocap.pkl"
    path.write_bytes(pickle.dumps(data))
    # Loading must not need (or import) the original package.
    monkeypatch.delitem(sys.modules, module)
    monkeypatch.delitem(sys.modules, parent.__name__)
    return path, data, lab


@pytest.mark.parametrize("module", ["cogmen.Sample", "corect.Sample"])
def test_cogmen_processed(tmp_path, monkeypatch, module):
    path, data, lab = _cogmen_pickle(tmp_path, monkeypatch, np.random.default_rng(seed_for(3)), module)
    with pytest.raises(ModuleNotFoundError):
        pickle.loads(path.read_bytes())  # the plain unpickler needs the original package
    c = open_corpus(convert("cogmen", path, tmp_path / "out"))
    assert [c.dialogue_ids[i] for i in c.split_dialogues("dev")] == [data["dev"][0].vid]
    assert [c.dialogue_ids[i] for i in c.split_dialogues("test")] == [s.vid for s in data["test"]]
    assert c.label.tolist() == [y for vid in c.dialogue_ids for y in lab[vid]]
    assert c.dims == {"t": DT, "a": DA, "v": DV}
    s = open_corpus(convert("cogmen", path, tmp_path / "sbert", text_field="sbert_sentence_embeddings"))
    assert s.dims["t"] == 4
    lo, hi = s.dialogue_utterances(0)
    assert (s.features["t"][s.offsets["t"][lo]:s.offsets["t"][hi]] == hi - lo).all()


def test_cogmen_dict_items_and_errors(tmp_path):
    rng = np.random.default_rng(seed_for(4))
    item = {"vid": "v0", "speaker": ["M", "F"], "label": [0, 3], "text": rng.standard_normal((2, 3)),
            "audio": rng.standard_normal((2, 2)), "visual": rng.standard_normal((2, 2)), "sentence": ["a", "b"]}
    path = tmp_path / "p.pkl"
    path.write_bytes(pickle.dumps({"train": [item], "valid": [{**item, "vid": "v1"}], "test": [{**item, "vid": "v2"}]}))
    c = open_corpus(convert("cogmen", path, tmp_path / "ok", label_names=["n", "x", "y", "z"]))
    assert c.label_names == ["n", "x", "y", "z"] and sorted(c.splits) == ["dev", "test", "train"]
    broken = {k: v for k, v in item.items() if k != "audio"}
    path.write_bytes(pickle.dumps({"train": [broken]}))
    with pytest.raises(ReaderError, match=r"train\[0\]: missing field 'audio'"):
        convert("cogmen", path, tmp_path / "bad")


def mosei_split(rng, videos, T=6, zero_score_at=None):
    """MulT layout for one split: [n, T, d] zero-padded sequences, labels [n, 1, 1], id [n, 3]."""
    rows, n = [], sum(videos.values())
    for v, k in videos.items():
        starts = rng.permutation(k) * 2.5  # stored out of order on purpose
        rows += [[v.encode(), f"{s:.1f}".encode(), f"{s + 2:.1f}".encode()] for s in starts]
    out = {"text": rng.standard_normal((n, T, 4)), "audio": rng.standard_normal((n, T, 3)),
           "vision": rng.standard_normal((n, T, 2)), "labels": rng.uniform(-3.4, 3.4, size=(n, 1, 1)),
           "id": np.array(rows, dtype=object)}
    pad = rng.integers(0, T, size=n)
    for i in range(n):
        for key in ("text", "audio", "vision"):
            out[key][i, :pad[i]] = 0.0  # MulT left-pads every modality with zeros
    out["audio"][0, -1, 1] = -np.inf
    out["labels"][1, 0, 0] = 0.0
    return out, pad


def test_mosei(tmp_path):
    rng = np.random.default_rng(seed_for(5))
    train, train_pad = mosei_split(rng, {"vidA": 3, "vidB": 1, "vidC": 2})
    data = {"train": train, "valid": mosei_split(rng, {"vidD": 2})[0], "test": mosei_split(rng, {"vidE": 3})[0]}
    path = tmp_path / "mosei_senti_data.pkl"
    path.write_bytes(pickle.dumps(data, protocol=4))
    c = open_corpus(convert("mosei", path, tmp_path / "m7", num_classes=7))
    assert c.label_names[3] == "neutral" and c.num_classes == 7
    assert [c.dialogue_ids[i] for i in c.split_dialogues("train")] == ["vidA", "vidB", "vidC"]
    assert c.dims == {"t": 4, "a": 3, "v": 2}
    scores = train["labels"][:, 0, 0]
    starts = np.array([float(r[1]) for r in train["id"]])
    order = [i for i in np.lexsort((starts, [r[0] for r in train["id"]]))]  # by video, then start time
    lo, hi = c.dialogue_utterances(0)
    assert hi - lo == 3 and set(c.speaker[lo:hi].tolist()) == {0}
    np.testing.assert_allclose(c.score[:6], scores[order], rtol=rel_bound(torch.float32), atol=0)  # stored as float32
    assert c.label[:6].tolist() == (np.round(np.clip(scores[order], -3, 3)) + 3).astype(int).tolist()
    for u, i in enumerate(order):
        L = 6 - train_pad[i]
        assert c.offsets["t"][u + 1] - c.offsets["t"][u] == L  # padding frames stripped
        frames_a = c.features["a"][c.offsets["a"][u]:c.offsets["a"][u + 1]]
        expect = train["audio"][i, train_pad[i]:].astype(np.float32)
        expect[np.isneginf(expect)] = 0.0
        np.testing.assert_array_equal(frames_a, expect)
    assert np.isfinite(c.features["a"][:]).all()
    b = open_corpus(convert("mosei", path, tmp_path / "m2", num_classes=2))
    assert b.label_names == ["negative", "positive"]
    assert b.label[:6].tolist() == (scores[order] >= 0).astype(int).tolist()
    z = open_corpus(convert("mosei", path, tmp_path / "m2z", num_classes=2, exclude_zero=True))
    assert z.label[order.index(1)] == -1  # the score-0 segment


# --- the restricted unpickler ----------------------------------------------------------------

class _Boom:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (self.target,))


def test_malicious_pickle_is_refused(tmp_path):
    target = str(tmp_path / "pwned")
    payload = pickle.dumps({"train": [_Boom(target)]})
    with pytest.raises(UnsafePickleError, match=r"refusing to load (posix|os|nt)\.mkdir"):
        safe_load(payload)
    assert not os.path.exists(target)  # nothing ran
    path = tmp_path / "evil.pkl"
    path.write_bytes(payload)
    for fmt in ("iemocap", "cogmen", "mosei"):
        with pytest.raises(UnsafePickleError, match="evil.pkl: refusing to load"):
            convert(fmt, path, tmp_path / f"out_{fmt}")
        assert not os.path.exists(target)


@pytest.mark.parametrize("obj", [collections.Counter(a=1), argparse.Namespace(x=1), print])
def test_unlisted_globals_are_refused(obj):
    with pytest.raises(UnsafePickleError, match="only numpy arrays, numpy scalars and builtin containers"):
        safe_load(pickle.dumps(obj))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_numpy_and_containers_load(protocol):
    obj = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "s": {1, 2}, "t": (np.float64(2.5), b"x"),
           "o": np.array([b"id", "x"], dtype=object), "od": collections.OrderedDict(k=[1])}
    out = safe_load(pickle.dumps(obj, protocol=protocol))
    np.testing.assert_array_equal(out["a"], obj["a"])
    assert out["s"] == {1, 2} and out["t"] == obj["t"] and out["o"].tolist() == [b"id", "x"]
    assert out["od"] == obj["od"]


def test_records_only_on_request(monkeypatch):
    mod = types.ModuleType("somepkg")

    class Sample:
        pass

    Sample.__module__, Sample.__qualname__ = "somepkg", "Sample"
    mod.Sample = Sample
    monkeypatch.setitem(sys.modules, "somepkg", mod)
    s = Sample()
    s.x = np.ones(2)
    blob = pickle.dumps([s])
    with pytest.raises(UnsafePickleError, match="somepkg.Sample"):
        safe_load(blob)
    (rec,) = safe_load(blob, record_classes=[("*", "Sample")])
    assert isinstance(rec, Record) and type(rec).__name__ == "Sample" and rec.x.tolist() == [1.0, 1.0]


def test_cli_convert(iemocap_pkl, tmp_path, capsys):
    from hotspot_erc.cli import main

    path, _ = iemocap_pkl
    parser = add_convert_arguments(argparse.ArgumentParser())
    assert run_convert(parser.parse_args(["iemocap", str(path), str(tmp_path / "c"), "--four-way"])) == 0
    assert "labels=['hap', 'sad', 'neu', 'ang']" in capsys.readouterr().out
    # Converting again into a non-empty directory is refused with a one-line error (5: output).
    assert main(["convert", "iemocap", str(path), str(tmp_path / "c")]) == 5
    assert "not empty" in capsys.readouterr().err
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps(_Boom(str(tmp_path / "x"))))
    assert main(["convert", "mosei", str(evil), str(tmp_path / "m")]) == 3  # 3: source data
    assert "refusing to load" in capsys.readouterr().err


def test_converter_registry_and_exit_policy(iemocap_pkl, tmp_path, capsys, monkeypatch):
    """Each format is one registered converter with its own options; options are refused before
    anything is read (2), and whatever goes wrong while reading is a data error (3)."""
    import importlib

    from hotspot_erc.cli import build_parser, main

    conv = importlib.import_module("hotspot_erc.data.convert")  # the package's `convert` is the function

    path, _ = iemocap_pkl
    build_parser()  # the CLI hands the text layer's converter to the registry
    assert list(conv.converters())[:3] == ["iemocap", "cogmen", "mosei"]
    assert "conversation-csv" in conv.converters()
    with pytest.raises(SystemExit) as info:
        main(["convert", "iemocap", str(path), str(tmp_path / "o"), "--classes", "2"])  # a mosei option
    assert info.value.code == 2 and not os.path.exists(tmp_path / "o")
    assert "--classes" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["convert", "--help"])
    out = capsys.readouterr().out
    assert info.value.code == 0 and all(name in out for name in conv.converters())
    with pytest.raises(ValueError, match="mosei does not take the option"):
        convert("mosei", path, tmp_path / "o", four_way=True)

    def reshape_fails(src, out_dir, **opts):  # a malformed source the reader did not foresee
        return np.zeros(5).reshape(2, 3)

    monkeypatch.setattr(conv, "read_mosei", reshape_fails)
    assert main(["convert", "mosei", str(path), str(tmp_path / "m")]) == 3  # was 2 before the registry
    err = capsys.readouterr().err
    assert str(path) in err and "cannot reshape" in err and "Traceback" not in err
    assert conv.register(conv.Converter("toy", "a toy", lambda p: None, lambda a: 0)).name == "toy"
    try:
        with pytest.raises(ValueError, match="already registered"):
            conv.register(conv.Converter("toy", "again", lambda p: None, lambda a: 0))
    finally:
        del conv.CONVERTERS["toy"]


def test_one_dev_split_rule_and_one_alias_table():
    from hotspot_erc.data.splits import SPLITS, canonical_split, carve_dev, dev_count

    # 120 * 0.1 is 12.000000000000002 in floating point: still 12, as in COGMEN's preprocessing
    assert dev_count(120, 0.1) == 12 and dev_count(108, 0.1) == 10 and dev_count(15, 0.1) == 1
    assert dev_count(19, 0.1) == 1 and dev_count(20, 0.1) == 2  # rounded down ...
    assert dev_count(5, 0.1) == 1 and dev_count(2, 0.9) == 1  # ... at least one, and train keeps one
    assert dev_count(1, 0.5) == 0 and dev_count(50, 0.0) == 0
    for bad in (1.0, -0.1, float("nan"), "0.1", True):
        with pytest.raises(ValueError, match="dev_fraction must be a number in"):
            dev_count(10, bad)
    assert carve_dev(list("abcdefghij"), 0.2) == (["a", "b"], list("cdefghij"))
    assert SPLITS == ("train", "dev", "test")
    assert [canonical_split(s) for s in ("train", "valid", "Validation", " val ", "dev", "TEST")] == \
        ["train", "dev", "dev", "dev", "dev", "test"]
    assert canonical_split("tset") is None and canonical_split(3) is None


def test_iemocap_dev_split_follows_the_rule(iemocap_pkl, tmp_path):
    from hotspot_erc.data.splits import dev_count

    path, _ = iemocap_pkl
    for fraction in (0.1, 0.5):
        c = open_corpus(convert("iemocap", path, tmp_path / f"c{fraction}", dev_fraction=fraction))
        n_train = len(c.splits["train"]) + len(c.splits["dev"])
        assert len(c.splits["dev"]) == dev_count(n_train, fraction)
