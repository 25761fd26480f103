"""The synthetic stories record where they planted each burst (burst_spans_<m>, burst_roles_<m> in
the truth file), read back per frame by burst_frame_roles; a corpus written before the spans
existed is regenerated with the same frames."""
import os

import numpy as np
import pytest
from conftest import seed_for

from hotspot_erc.data.format import open_corpus
from hotspot_erc.data.synthetic import generate_synthetic_corpus
from hotspot_erc.data.synthetic_common import (ROLE_DECOY, ROLE_EVIDENCE, ROLE_NONE, TRUTH_FILE,
                                               burst_frame_roles, span_truth_dtypes)

QUIET = {"default": {"intensity_noise": 0.0, "spurious_prob": 0.0},
         "align": {"intensity_noise": 0.0, "spurious_prob": 0.0}}


@pytest.mark.parametrize("kind", ["default", "align"])
def test_spans_are_exactly_the_frames_the_bursts_raised(tmp_path, kind):
    # Without intensity noise and spurious peaks, the intensity is the bursts' profile alone: every
    # frame of a recorded span is > 0 and every frame outside all spans is 0.
    path = generate_synthetic_corpus(tmp_path / kind, num_dialogues=12, seed=seed_for(3), kind=kind, **QUIET[kind])
    c = open_corpus(path)
    roles = burst_frame_roles(c)
    assert set(roles) == {"t", "a", "v"}
    truth = np.load(os.path.join(path, TRUTH_FILE))
    for m in ("t", "a", "v"):
        inten = np.asarray(c.intensity[m])
        assert roles[m].shape == inten.shape
        np.testing.assert_array_equal(roles[m] > 0, inten > 0, err_msg=m)
        spans, kinds = truth[f"burst_spans_{m}"], truth[f"burst_roles_{m}"]
        lengths = np.diff(c.offsets[m])
        for u in range(len(lengths)):
            for (lo, hi), r in zip(spans[u], kinds[u]):
                if r == ROLE_NONE:
                    assert lo == hi == -1
                else:
                    assert 0 <= lo < hi <= lengths[u]
    if kind == "default":
        # The evidence burst goes with the evidence flag; a decoy only ever sits in text.
        assert ((truth["burst_roles_t"][:, 0] == ROLE_EVIDENCE) == truth["evidence_t"]).all()
        assert (truth["burst_roles_t"][:, 1] == ROLE_DECOY).any()
        assert truth["burst_roles_a"].shape[1] == truth["burst_roles_v"].shape[1] == 1
    else:
        # Audio: one key-matched burst per cue-carrying utterance, the others distractors.
        cue = ~truth["cueless"]
        slot = truth["true_burst"]
        evidence = truth["burst_roles_a"] == ROLE_EVIDENCE
        assert (evidence.sum(1)[cue] == 1).all() and (evidence.sum(1)[~cue] == 0).all()
        assert (evidence[cue].argmax(1) == slot[cue]).all()
        centre = truth["audio_centres"][cue, slot[cue]]
        span = truth["burst_spans_a"][cue, slot[cue]]
        assert ((span[:, 0] <= centre) & (centre < span[:, 1])).all()


def test_a_corpus_without_spans_is_regenerated_with_the_same_frames(tmp_path):
    opts = dict(num_dialogues=6, seed=seed_for(4), utterances=(3, 5))
    path = generate_synthetic_corpus(tmp_path / "c", **opts)
    before = {m: np.load(os.path.join(path, f"features_{m}.npy")) for m in ("t", "a", "v")}
    truth_path = os.path.join(path, TRUTH_FILE)
    old = {k: v for k, v in np.load(truth_path).items() if k not in span_truth_dtypes()}
    np.savez(truth_path, **old)  # what a corpus written before the spans holds
    assert burst_frame_roles(open_corpus(path)) is None
    generate_synthetic_corpus(tmp_path / "c", **opts)
    assert burst_frame_roles(open_corpus(path)) is not None
    for m, x in before.items():
        np.testing.assert_array_equal(np.load(os.path.join(path, f"features_{m}.npy")), x)
    # With the truth complete, the folder is reused as it is.
    stamp = os.stat(truth_path).st_mtime_ns
    generate_synthetic_corpus(tmp_path / "c", **opts)
    assert os.stat(truth_path).st_mtime_ns == stamp
