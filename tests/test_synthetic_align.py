"""The alignment story (``--synthetic-kind align``): determinism, format, the kind in the cache
recipe, and probes showing that its fine label needs frame-level cross-modal alignment and that its
cue-less utterances need the conversation."""
import filecmp
import json
import os

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score

from hotspot_erc.data import generate_alignment_corpus, generate_synthetic_corpus
from hotspot_erc.data.format import open_corpus
from hotspot_erc.data.synthetic import LABEL_NAMES
from hotspot_erc.data.synthetic_align import CLASS_CODES, probe_baseline, probe_features
from conftest import previous_same_speaker_label


def _files(path):
    return sorted(os.listdir(path))


def test_deterministic_by_seed(tmp_path):
    a = generate_alignment_corpus(tmp_path / "a", num_dialogues=8, seed=7)
    b = generate_synthetic_corpus(tmp_path / "b", num_dialogues=8, seed=7, kind="align")
    c = generate_alignment_corpus(tmp_path / "c", num_dialogues=8, seed=8)
    assert _files(a) == _files(b)
    match, mismatch, errors = filecmp.cmpfiles(a, b, _files(a), shallow=False)
    assert not mismatch and not errors, mismatch
    assert not np.array_equal(np.load(os.path.join(a, "features_a.npy"))[:50],
                              np.load(os.path.join(c, "features_a.npy"))[:50])


def test_corpus_shape_and_truth(tmp_path):
    path = generate_alignment_corpus(tmp_path / "d", num_dialogues=40, seed=3)
    c = open_corpus(path)
    assert c.label_names == LABEL_NAMES and c.modalities == ("t", "a", "v")
    assert c.dims == {"t": 32, "a": 24, "v": 16}
    assert c.meta["name"] == "synthetic-align" and c.meta["generator"]["kind"] == "align"
    assert {k: len(v) for k, v in c.splits.items()} == {"train": 28, "dev": 6, "test": 6}
    per_dialogue = np.diff(c.dialogue_offsets)
    assert per_dialogue.min() >= 8 and per_dialogue.max() <= 16
    for m, (lo, hi) in {"t": (8, 20), "a": (20, 40), "v": (12, 25)}.items():
        lengths = np.diff(c.offsets[m])
        assert lengths.min() >= lo and lengths.max() <= hi
        assert c.intensity[m] is not None and 0 <= c.intensity[m].min() and c.intensity[m].max() <= 1
    truth = dict(np.load(os.path.join(path, "synthetic_truth.npz")))
    U = c.num_utterances
    assert truth["audio_centres"].shape == truth["video_centres"].shape == truth["burst_signs"].shape == (U, 3)
    cue = ~truth["cueless"]
    codes = np.array([CLASS_CODES[LABEL_NAMES[y]] for y in c.label])
    assert (codes[:, 0] == truth["coarse"]).all() and (codes[:, 1] == truth["fine"]).all()
    assert ((truth["true_burst"] >= 0) == cue).all() and (truth["text_centre"][cue] >= 0).all()
    # the key-matched burst carries the label's sign; each utterance's sign set holds both signs
    signs = truth["burst_signs"][cue]
    true_sign = signs[np.arange(len(signs)), truth["true_burst"][cue]]
    assert (true_sign == 2 * truth["fine"][cue] - 1).all()
    assert (np.abs(signs.sum(1)) == 1).all()
    # every burst centre is marked by the intensity; cue-less utterances carry no burst
    for m, key in (("a", "audio_centres"), ("v", "video_centres")):
        off = c.offsets[m]
        frames = (off[:-1, None] + truth[key])[cue]
        assert (np.diff(np.sort(truth[key][cue], 1), axis=1) > 0).all()  # three distinct bursts
        assert np.asarray(c.intensity[m])[frames].mean() > 0.8
        assert (truth[key][~cue] == -1).all()
    lag = (truth["video_centres"][cue] / (np.diff(c.offsets["v"])[cue, None] - 1)
           - truth["audio_centres"][cue] / (np.diff(c.offsets["a"])[cue, None] - 1))
    assert np.median(lag) > 0  # video lags audio


def test_kind_is_part_of_the_cache_recipe(tmp_path):
    folder = tmp_path / "s"
    generate_synthetic_corpus(folder, num_dialogues=5)
    assert open_corpus(folder).meta["name"] == "synthetic"
    generate_synthetic_corpus(folder, num_dialogues=5, kind="align")  # not reused: replaced
    assert open_corpus(folder).meta["name"] == "synthetic-align"
    stamp = os.path.getmtime(os.path.join(folder, "features_a.npy"))
    generate_alignment_corpus(folder, num_dialogues=5)  # same recipe: reused
    assert os.path.getmtime(os.path.join(folder, "features_a.npy")) == stamp
    generate_synthetic_corpus(folder, num_dialogues=5)  # and back
    assert open_corpus(folder).meta["name"] == "synthetic"
    with pytest.raises(ValueError, match="unknown synthetic corpus kind"):
        generate_synthetic_corpus(folder, kind="aligned")
    with pytest.raises(TypeError, match="unknown synthetic corpus options"):
        generate_alignment_corpus(tmp_path / "x", decoy_prob=0.1)


def test_run_prepares_the_chosen_kind(tmp_path):
    from hotspot_erc.train.config import DataConfig
    from hotspot_erc.train.run import prepare_corpus

    cfg = DataConfig(synthetic=True, synthetic_dir=str(tmp_path / "syn"), synthetic_dialogues=4,
                     synthetic_kind="align")
    path = prepare_corpus(cfg, progress=False)
    with open(os.path.join(path, "meta.json")) as fh:
        assert json.load(fh)["generator"]["kind"] == "align"
    cfg.synthetic_kind = "default"
    prepare_corpus(cfg, progress=False)
    assert open_corpus(path).meta["name"] == "synthetic"


# --- the signal design ------------------------------------------------------------------------

@pytest.fixture(scope="module", params=[1, 2])
def probe(request, tmp_path_factory):
    path = generate_alignment_corpus(tmp_path_factory.mktemp("align") / "c", num_dialogues=160, seed=request.param)
    return probe_features(path)


def _cv_acc(X, y):
    return cross_val_score(LogisticRegression(max_iter=2000, C=1.0), X, y, cv=3).mean()


def test_fine_label_needs_the_key_matched_frame(probe):
    p = probe
    cue = ~p["cueless"]
    fine = p["fine"]
    assert 0.18 < p["cueless"].mean() < 0.32
    # (a) mean pooling of every modality: chance on the fine sign inside each coarse group
    pooled = np.concatenate([p[f"mean_{m}"] for m in "tav"], 1)
    for g in range(3):
        sel = cue & (p["coarse"] == g)
        assert _cv_acc(pooled[sel], fine[sel]) < 0.6, g
    # (b) text hotspot + the audio frame whose key matches it: the fine sign (and the 6-way label)
    matched = np.concatenate([p["match_t"], p["match_a"]], 1)
    acc_match = _cv_acc(matched[cue], fine[cue])
    assert acc_match >= 0.85, acc_match
    assert _cv_acc(matched[cue], p["corpus"].label[cue]) >= 0.85
    # (c) the loudest audio frame is one of three equally loud bursts: far worse
    loudest = np.concatenate([p["peak_t"], p["peak_a"]], 1)
    acc_peak = _cv_acc(loudest[cue], fine[cue])
    assert acc_peak < 0.65 and acc_peak < acc_match - 0.25, (acc_peak, acc_match)


def test_cueless_utterances_need_the_conversation(probe):
    p = probe
    c, cue = p["corpus"], ~p["cueless"]
    y = c.label
    X = np.concatenate([p[f"{kind}_{m}"] for kind in ("mean", "peak") for m in "tav"], 1)
    clf = LogisticRegression(max_iter=2000).fit(X[cue], y[cue])
    assert (clf.predict(X[~cue]) == y[~cue]).mean() < 0.3  # chance is 1/6
    prev_same = previous_same_speaker_label(c)
    assert (prev_same[~cue] >= 0).all()  # a speaker's first utterance always carries a cue
    assert (y[~cue] == prev_same[~cue]).mean() >= 0.9  # 1.0 by construction (no label noise)


def test_probe_baseline(tmp_path):
    path = generate_alignment_corpus(tmp_path / "b", num_dialogues=60, seed=0)
    r = probe_baseline(path)
    assert r["test_utterances"] > 0 and 0.55 < r["accuracy"] < 0.95 and 0.5 < r["weighted_f1"] < 0.95
    with pytest.raises(ValueError, match="alignment-story"):
        probe_baseline(generate_synthetic_corpus(tmp_path / "d", num_dialogues=4))
