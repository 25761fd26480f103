"""Synthetic corpus: determinism, shape of the default corpus, and that its signal needs hotspots,
cross-modal combination and context (checked with small linear probes)."""
import filecmp
import os

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score

from hotspot_erc.data.format import open_corpus
from hotspot_erc.data.synthetic import LABEL_NAMES, generate_synthetic_corpus
from conftest import previous_same_speaker_label


def _files(path):
    return sorted(f for f in os.listdir(path))


def test_deterministic_by_seed(tmp_path):
    a = generate_synthetic_corpus(tmp_path / "a", num_dialogues=8, seed=7)
    b = generate_synthetic_corpus(tmp_path / "b", num_dialogues=8, seed=7)
    c = generate_synthetic_corpus(tmp_path / "c", num_dialogues=8, seed=8)
    assert _files(a) == _files(b)
    npy = [f for f in _files(a) if f.endswith(".npy")]
    match, mismatch, errors = filecmp.cmpfiles(a, b, npy + ["ids.json", "splits.json"], shallow=False)
    assert not mismatch and not errors
    assert not np.array_equal(np.load(os.path.join(a, "features_t.npy"))[:50],
                              np.load(os.path.join(c, "features_t.npy"))[:50])


def test_default_corpus_shape(tmp_path):
    c = open_corpus(generate_synthetic_corpus(tmp_path / "d"))
    assert c.label_names == LABEL_NAMES == ["hap", "sad", "neu", "ang", "exc", "fru"]
    assert c.modalities == ("t", "a", "v") and c.dims == {"t": 32, "a": 24, "v": 16}
    assert c.num_dialogues == 120
    assert {k: len(v) for k, v in c.splits.items()} == {"train": 84, "dev": 18, "test": 18}
    per_dialogue = np.diff(c.dialogue_offsets)
    assert per_dialogue.min() >= 8 and per_dialogue.max() <= 16
    for m, (lo, hi) in {"t": (10, 40), "a": (20, 60), "v": (15, 50)}.items():
        lengths = np.diff(c.offsets[m])
        assert lengths.min() >= lo and lengths.max() <= hi  # no missing modalities by default
        assert c.intensity[m] is not None and 0 <= c.intensity[m].min() and c.intensity[m].max() <= 1
    assert set(np.unique(c.speaker)) == {0, 1}
    counts = np.bincount(c.label, minlength=6)
    assert (counts > 0.08 * c.num_utterances).all()  # every class well represented


def test_missing_modalities(tmp_path):
    c = open_corpus(generate_synthetic_corpus(tmp_path / "m", num_dialogues=30, missing_prob=0.4))
    empty = np.stack([np.diff(c.offsets[m]) == 0 for m in c.modalities])
    assert 0.25 < empty.mean() < 0.5
    assert not empty.all(axis=0).any()  # never all three missing


def test_reuse_and_refuse(tmp_path):
    path = generate_synthetic_corpus(tmp_path / "r", num_dialogues=5)
    stamp = os.path.getmtime(os.path.join(path, "features_t.npy"))
    assert generate_synthetic_corpus(tmp_path / "r", num_dialogues=5) == path
    assert os.path.getmtime(os.path.join(path, "features_t.npy")) == stamp  # same recipe: reused
    generate_synthetic_corpus(tmp_path / "r", num_dialogues=6)  # another recipe: regenerated
    assert open_corpus(path).num_dialogues == 6
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("not a corpus")
    with pytest.raises(FileExistsError, match="does not hold a synthetic corpus"):
        generate_synthetic_corpus(other, num_dialogues=5)
    assert (other / "notes.txt").exists()
    # overwrite replaces a corpus, never files it did not write.
    with pytest.raises(FileExistsError, match="does not hold a hotspot-erc corpus"):
        generate_synthetic_corpus(other, num_dialogues=5, overwrite=True)
    assert (other / "notes.txt").read_text() == "not a corpus"
    with pytest.raises(TypeError, match="unknown synthetic corpus options"):
        generate_synthetic_corpus(tmp_path / "x", burst_amplitud=2.0)


# --- the signal design ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    """Per-utterance probe features from a mid-size corpus, plus the generator's truth flags."""
    path = generate_synthetic_corpus(tmp_path_factory.mktemp("probe") / "c", num_dialogues=160, seed=1)
    c = open_corpus(path)
    U = c.num_utterances
    mean, peak = {}, {}
    for m in c.modalities:
        F, off, I = np.asarray(c.features[m]), c.offsets[m], np.asarray(c.intensity[m])
        mean[m] = np.zeros((U, F.shape[1]))
        peak[m] = np.zeros((U, F.shape[1]))
        for u in range(U):
            x = F[off[u]:off[u + 1]]
            mean[m][u] = x.mean(0)
            # the frame the data's intensity marks, relative to its utterance: a crude hotspot
            peak[m][u] = x[I[off[u]:off[u + 1]].argmax()] - mean[m][u]
    truth = dict(np.load(os.path.join(path, "synthetic_truth.npz")))
    return c, mean, peak, truth


def _cv_acc(X, y):
    clf = LogisticRegression(max_iter=2000, C=1.0)
    return cross_val_score(clf, X, y, cv=3).mean()


def test_mean_pooling_is_diluted_hotspots_are_not(probe):
    c, mean, peak, truth = probe
    y = c.label
    acc_mean = _cv_acc(np.concatenate([mean[m] for m in c.modalities], 1), y)
    acc_peak = _cv_acc(np.concatenate([peak[m] for m in c.modalities], 1), y)
    assert acc_mean < 0.3  # near the majority-class rate: the nuisance swamps pooled evidence
    assert acc_peak > acc_mean + 0.3


def test_confusable_pairs_need_two_modalities(probe):
    """hap/exc and ang/fru share their valence (text); hap/fru and exc/ang share arousal (audio)."""
    c, _, peak, truth = probe
    classes = [LABEL_NAMES.index(n) for n in ("hap", "exc", "ang", "fru")]
    sel = np.isin(c.label, classes) & truth["evidence_t"] & truth["evidence_a"] & ~truth["decoy"]
    y = c.label[sel]
    text_only = _cv_acc(peak["t"][sel], y)
    audio_only = _cv_acc(peak["a"][sel], y)
    both = _cv_acc(np.concatenate([peak["t"][sel], peak["a"][sel]], 1), y)
    assert text_only < 0.6 and audio_only < 0.6, (text_only, audio_only)  # each alone: about 1 in 2
    assert both > 0.85, both
    pair = np.isin(y, classes[:2])
    assert _cv_acc(peak["t"][sel][pair], y[pair]) < 0.65  # text cannot split hap from exc


def test_silent_utterances_follow_context(probe):
    c, _, peak, truth = probe
    silent = truth["silent"]
    assert 0.08 < silent.mean() < 0.25
    prev_same = previous_same_speaker_label(c)
    has_prev = silent & (prev_same >= 0)
    carried = (c.label[has_prev] == prev_same[has_prev]).mean()
    assert carried > 0.6  # the speaker's previous label predicts a silent utterance's label
    X = np.concatenate([peak[m] for m in c.modalities], 1)
    clf = LogisticRegression(max_iter=2000).fit(X[~silent], c.label[~silent])
    assert (clf.predict(X[silent]) == c.label[silent]).mean() < 0.35  # its own frames do not


def test_decoys_only_in_text_of_emotional_utterances(probe):
    c, _, _, truth = probe
    decoy = truth["decoy"]
    assert 0.1 < decoy.mean() < 0.3
    assert not (decoy & truth["silent"]).any()
    assert (c.label[decoy] != LABEL_NAMES.index("neu")).all()
