"""End to end from raw transcripts: conversation CSV -> corpus -> one epoch text-only -> evaluation.

Offline and fast: the features come from the hashing baseline or a tiny stand-in encoder defined
here, and the per-word intensity from a stand-in "external tagger" that marks emotion words.
"""
import csv
import importlib.util
import json
import os

import numpy as np
import pytest
from conftest import seed_for

from hotspot_erc.data.format import open_corpus
from hotspot_erc.text import convert as text_convert
from hotspot_erc.text.convert import convert_conversation_csv
from hotspot_erc.text.encoders import WordEncoder
from hotspot_erc.text.words import split_words

MELD_HEADER = ["Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID",
               "Season", "Episode", "StartTime", "EndTime"]
EMOTION_WORDS = {"joy": ["great", "wonderful"], "anger": ["hate", "furious"], "sadness": ["sorry", "miss"],
                 "neutral": ["okay", "sure"]}
SENTIMENT = {"joy": "positive", "anger": "negative", "sadness": "negative", "neutral": "neutral"}


def write_meld(path, num_dialogues, seed, damage=False):
    rng = np.random.default_rng(seed_for(seed))
    emotions = sorted(EMOTION_WORDS)
    sr = 0
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\r\n")
        w.writerow(MELD_HEADER)
        for dia in range(num_dialogues):
            n = int(rng.integers(3, 6))
            if damage and dia == 0:
                n = max(n, 4)  # utterance 3 keeps a "’" to garble after the gap at utterance 1
            for utt in range(n):
                if damage and dia == 0 and utt == 1:
                    continue  # a gap in the utterance ids
                emo = emotions[int(rng.integers(len(emotions)))]
                word = EMOTION_WORDS[emo][int(rng.integers(2))]
                text = f"Well, I’m {word} about it!" if utt % 2 else f"That is {word}."
                if damage and dia == 0:
                    text = text.encode("utf-8").decode("cp1252", errors="replace")  # â€™ mojibake
                sr += 1
                w.writerow([sr, text, ["Ross", "Rachel"][utt % 2], emo, SENTIMENT[emo], dia, utt, 1, 1,
                            "00:00:01,000", "00:00:02,000"])
    return str(path)


@pytest.fixture
def meld_csvs(tmp_path):
    return {"train": write_meld(tmp_path / "train_sent_emo.csv", 12, 0, damage=True),
            "dev": write_meld(tmp_path / "dev_sent_emo.csv", 3, 1),
            "test": write_meld(tmp_path / "test_sent_emo.csv", 3, 2)}


def test_csv_to_trained_and_evaluated_text_model(tmp_path, meld_csvs, capsys):
    from hotspot_erc import cli

    files = ["--train", meld_csvs["train"], "--dev", meld_csvs["dev"], "--test", meld_csvs["test"]]
    # 1. Words out for the external tagger; the stand-in tagger marks the emotion words.
    words_file = tmp_path / "words.jsonl"
    # (The CSVs' folder works as input too: the files are recognised by their MELD names.)
    assert text_convert.main(["--csv", str(tmp_path), "--preset", "meld", "--export-words", str(words_file)]) == 0
    hot = {w for ws in EMOTION_WORDS.values() for w in ws if w not in ("okay", "sure")}
    with open(words_file, encoding="utf-8") as fh, open(tmp_path / "tagged.jsonl", "w") as out:
        for line in fh:
            item = json.loads(line)
            out.write(json.dumps({"utterance_id": item["utterance_id"],
                                  "scores": [float(w.lower() in hot) for w in item["words"]]}) + "\n")
    # 2. Convert with the offline baseline encoder and the tagger's scores.
    corpus_dir = tmp_path / "meld_corpus"
    rc = text_convert.main([*files, "--preset", "meld", "--encoder", "hashing", "--hashing-dim", "16",
                            "--intensity", "tagger", "--tagger-file", str(tmp_path / "tagged.jsonl"),
                            "-o", str(corpus_dir), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "repaired mojibake" in err and "gap in utterance ids" in err
    corpus = open_corpus(corpus_dir)
    assert corpus.modalities == ("t",) and corpus.dims == {"t": 16}
    assert {k: len(v) for k, v in corpus.splits.items()} == {"train": 12, "dev": 3, "test": 3}
    assert corpus.utterance_ids[:2] == ["train/dia0_utt0", "train/dia0_utt2"]  # the gap is kept
    assert any("I’m" in t for t in corpus.texts) and not any("â€" in t for t in corpus.texts)
    inten = np.asarray(corpus.intensity["t"])
    assert set(np.unique(inten)) <= {0.0, 1.0} and inten.sum() > 0
    # 3. One epoch, text only (MoA aligns pairs of modalities, so it is off; the graph keeps temporal
    #    and speaker relations), then evaluation.
    run_dir = tmp_path / "run"
    common = ["--device", "cpu", "--no-progress"]
    rc = cli.main(["train", "--corpus", str(corpus_dir), "--modalities", "t", "--no-moa", "--hotspot-source", "data",
                   "--graph-scheme", "speaker", "--epochs", "1", "--align-warmup", "0", "--d-model", "16", "--num-heads", "2",
                   "--classifier-hidden", "16", "--run-dir", str(run_dir), *common])
    assert rc == 0, capsys.readouterr().err
    with open(run_dir / "metrics.json") as fh:
        metrics = json.load(fh)
    assert 0.0 <= metrics["test"]["weighted_f1"] <= 1.0 and metrics["epochs_run"] == 1
    capsys.readouterr()
    best = run_dir / "checkpoints" / "best.safetensors"
    assert cli.main(["evaluate", str(best), "--corpus", str(corpus_dir), "--split", "test", *common]) == 0
    assert "weighted F1" in capsys.readouterr().out


class StandInEncoder(WordEncoder):
    """A tiny deterministic encoder: [length, has capital, is punctuation, 1]."""

    name, dim = "stand-in", 4

    def __init__(self):
        self.calls = 0

    def encode(self, utterances):
        self.calls += 1
        return [np.array([[len(w), w[:1].isupper(), not w[:1].isalnum(), 1.0] for w in words],
                         dtype=np.float32).reshape(len(words), 4) for words in utterances]


def test_stand_in_encoder_and_corpus_contents(tmp_path):
    path = tmp_path / "conv.csv"
    path.write_text("conv,turn,who,line,feeling\n"
                    "a,0,Ann,Hello there!,happy\n"
                    "a,1,Bob,,calm\n"  # no words: a zero-length text segment
                    "a,2,Ann,Why?,sad\n"
                    "b,0,Cy,Fine.,calm\n"
                    "c,0,Di,OK,happy\n", encoding="utf-8")
    enc = StandInEncoder()
    out = convert_conversation_csv(tmp_path / "c", path, columns={"dialogue": "conv", "order": "turn",
                                                                   "speaker": "who", "text": "line",
                                                                   "label": "feeling"},
                                   encoder=enc, intensity="none", dev_fraction=0.3, batch_size=2, progress=False)
    corpus = open_corpus(out)
    assert corpus.label_names == ["calm", "happy", "sad"]
    assert corpus.intensity["t"] is None
    # No dev file: the first dialogue(s) of train become dev.
    assert [corpus.dialogue_ids[i] for i in corpus.splits["dev"]] == ["train/a"]
    assert [corpus.dialogue_ids[i] for i in corpus.splits["train"]] == ["train/b", "train/c"]
    np.testing.assert_array_equal(np.diff(corpus.offsets["t"]), [len(split_words(t)) for t in
                                                                  ["Hello there!", "", "Why?", "Fine.", "OK"]])
    np.testing.assert_array_equal(corpus.features["t"][:3], enc.encode([["Hello", "there", "!"]])[0])
    assert list(corpus.speaker) == [0, 1, 0, 0, 0] and list(corpus.label) == [1, 0, 2, 0, 1]
    assert corpus.meta["text"]["encoder"]["name"] == "stand-in"


def test_conversion_is_cached(tmp_path, meld_csvs):
    logs = []
    kw = dict(preset="meld", encoder="hashing", encoder_options={"dim": 8}, intensity="none", log=logs.append,
              progress=False)
    out = convert_conversation_csv(tmp_path / "c", meld_csvs, **kw)
    stamp = os.stat(os.path.join(out, "features_t.npy")).st_mtime_ns
    convert_conversation_csv(tmp_path / "c", meld_csvs, **kw)
    assert "up to date" in logs[-1]
    assert os.stat(os.path.join(out, "features_t.npy")).st_mtime_ns == stamp
    # Other inputs into the same folder: refused without overwrite, recomputed with it.
    kw["encoder_options"] = {"dim": 12}
    with pytest.raises(FileExistsError, match="--overwrite"):
        convert_conversation_csv(tmp_path / "c", meld_csvs, **kw)
    convert_conversation_csv(tmp_path / "c", meld_csvs, overwrite=True, **kw)
    assert open_corpus(out).dims == {"t": 12}


def test_sentiment_task_and_errors(tmp_path, meld_csvs, capsys):
    out = convert_conversation_csv(tmp_path / "s", {"train": meld_csvs["train"]}, preset="meld", label="sentiment",
                                   encoder="hashing", intensity="none", progress=False)
    assert open_corpus(out).label_names == ["neutral", "positive", "negative"]
    bad = tmp_path / "bad.csv"
    bad.write_text("Utterance,Speaker\nhi,A\n")
    assert text_convert.main(["--train", str(bad), "--preset", "meld", "--encoder", "hashing",
                              "-o", str(tmp_path / "x")]) == 3  # 3: source data (cli's exit-code policy)
    assert f"error: {bad}:1: missing column(s)" in capsys.readouterr().err
    tagged = tmp_path / "t.jsonl"
    tagged.write_text('{"utterance_id": "train/dia99_utt0", "scores": []}\n')
    with pytest.raises(ValueError, match=r"t\.jsonl:1: utterance id 'train/dia99_utt0' is not in the CSV"):
        convert_conversation_csv(tmp_path / "y", meld_csvs, preset="meld", encoder="hashing", intensity="tagger",
                                 tagger_file=tagged, progress=False)


@pytest.mark.skipif(importlib.util.find_spec("vaderSentiment") is None,
                    reason="needs the optional package vaderSentiment (pip install \"hotspot-erc[text]\")")
def test_lexicon_intensity(tmp_path, meld_csvs):
    out = convert_conversation_csv(tmp_path / "l", {"test": meld_csvs["test"]}, preset="meld", encoder="hashing",
                                   intensity="lexicon", dev_fraction=0.0, progress=False)
    corpus = open_corpus(out)
    words = [w for t in corpus.texts for w in split_words(t)]
    inten = np.asarray(corpus.intensity["t"])
    assert len(words) == len(inten)
    for w, s in zip(words, inten):
        if w.lower() in ("hate", "great", "wonderful", "furious"):
            assert s > 0.3
        if w.lower() in ("that", "is", "about", "it"):
            assert s == 0
