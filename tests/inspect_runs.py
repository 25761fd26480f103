"""Tiny trained runs shared by the report's tests: a 2-epoch run on a small synthetic corpus (three
modalities, generator truth) and a 2-epoch text-only run on a corpus converted from a conversation
CSV. Each is trained once per test session (cached here, in a folder of the session's temporary
root) and read by every test module that asks for it."""
from __future__ import annotations

import csv

import numpy as np
from conftest import seed_for

from hotspot_erc import cli
from hotspot_erc.data.synthetic import generate_synthetic_corpus
from hotspot_erc.text.convert import convert_conversation_csv

TINY = ["--d-model", "16", "--num-heads", "2", "--classifier-hidden", "16", "--epochs", "2", "--align-warmup", "0",
        "--batch-size", "4", "--device", "cpu", "--no-progress", "--no-plots"]
_RUNS: dict[str, dict] = {}

EMOTION_WORDS = {"joy": ["great", "wonderful", "love"], "anger": ["hate", "furious", "awful"],
                 "neutral": ["okay", "maybe", "table"]}


def synthetic_corpus(path) -> str:
    return generate_synthetic_corpus(path, num_dialogues=20, seed=seed_for(11), utterances=(4, 7),
                                     frames={"t": (10, 18), "a": (8, 16), "v": (6, 12)})


def synthetic_run(tmp_path_factory) -> dict:
    """``{"run", "corpus"}`` of the 2-epoch synthetic run; its report.html was written by train."""
    if "synthetic" not in _RUNS:
        root = tmp_path_factory.mktemp("inspect-synthetic")
        corpus = synthetic_corpus(root / "corpus")
        run = root / "run"
        assert cli.main(["train", "--corpus", corpus, "--run-dir", str(run), *TINY]) == 0
        _RUNS["synthetic"] = {"run": str(run), "corpus": corpus}
    return _RUNS["synthetic"]


def write_conversation_csv(path, num_dialogues: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    emotions = sorted(EMOTION_WORDS)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["conv", "turn", "who", "line", "feeling", "part"])
        for d in range(num_dialogues):
            split = "test" if d % 5 == 0 else ("dev" if d % 5 == 1 else "train")
            for t in range(int(rng.integers(3, 7))):
                emo = emotions[int(rng.integers(len(emotions)))]
                word = EMOTION_WORDS[emo][int(rng.integers(3))]
                text = f"Well, I think it is {word} <b>really</b>!" if t % 2 else f"That {word} one."
                w.writerow([f"d{d}", t, ["Ann", "Bob"][t % 2], text, emo, split])
    return str(path)


def text_run(tmp_path_factory) -> dict:
    """``{"run", "corpus"}`` of the 2-epoch text-only run on a corpus converted from a CSV."""
    if "text" not in _RUNS:
        root = tmp_path_factory.mktemp("inspect-text")
        src = write_conversation_csv(root / "talk.csv", 15, seed_for(12))
        columns = {"dialogue": "conv", "order": "turn", "speaker": "who", "text": "line", "label": "feeling",
                   "split": "part"}
        corpus = convert_conversation_csv(root / "corpus", src, columns=columns, encoder="hashing",
                                          encoder_options={"dim": 16}, intensity="none", progress=False)
        run = root / "run"
        assert cli.main(["train", "--corpus", corpus, "--run-dir", str(run), "--modalities", "t", *TINY]) == 0
        _RUNS["text"] = {"run": str(run), "corpus": corpus}
    return _RUNS["text"]


def materialised_replicates(fn, arrays, cluster, weights) -> np.ndarray:
    """``fn`` over each bootstrap resample, built by copying every drawn cluster's frames."""
    out = []
    for w in weights:
        idx = np.concatenate([np.nonzero(cluster == c)[0] for c in range(w.size) for _ in range(int(w[c]))])
        out.append(fn(*(a[idx] for a in arrays)))
    return np.array(out, dtype=np.float64)
