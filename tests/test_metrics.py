"""Metrics agree with scikit-learn and handle ignored labels and every label set."""
import numpy as np
import pytest
import torch
from conftest import seed_for
from sklearn import metrics as sk
from tolerance import rel_bound

from hotspot_erc.train.metrics import (accuracy, confusion_matrix, evaluate_predictions, per_class_f1,
                                       weighted_f1)


@pytest.mark.parametrize("num_classes", [2, 4, 6, 7])  # MOSEI 2, IEMOCAP 4, IEMOCAP 6, MOSEI 7
def test_against_sklearn(num_classes):
    rng = np.random.default_rng(seed_for(num_classes))
    y = rng.integers(0, num_classes, 257)
    p = np.where(rng.random(257) < 0.6, y, rng.integers(0, num_classes, 257))
    # float64 from exact counts: a division (k = 1); weighted F1 adds one term per class
    assert accuracy(y, p) == pytest.approx(sk.accuracy_score(y, p), rel=rel_bound(torch.float64), abs=0)
    assert weighted_f1(y, p, num_classes) == pytest.approx(sk.f1_score(y, p, average="weighted"),
                                                           rel=rel_bound(torch.float64, num_classes), abs=0)
    assert per_class_f1(y, p, num_classes) == pytest.approx(list(sk.f1_score(y, p, average=None,
                                                                              labels=range(num_classes))),
                                                            rel=rel_bound(torch.float64), abs=0)
    np.testing.assert_array_equal(confusion_matrix(y, p, num_classes),
                                  sk.confusion_matrix(y, p, labels=range(num_classes)))


def test_ignored_labels_are_dropped():
    y = torch.tensor([0, 1, -1, 2, -1, 1])
    p = torch.tensor([0, 2, 1, 2, 0, 1])
    keep = y >= 0
    assert accuracy(y, p) == pytest.approx(sk.accuracy_score(y[keep], p[keep]), rel=rel_bound(torch.float64), abs=0)
    assert weighted_f1(y, p) == pytest.approx(sk.f1_score(y[keep], p[keep], average="weighted"),
                                              rel=rel_bound(torch.float64, 3), abs=0)  # 3 classes
    cm = confusion_matrix(y, p, 3)
    assert cm.sum() == 4 and cm[1, 2] == 1 and cm[1, 1] == 1


def test_report_names_classes_and_handles_absent_ones():
    names = ["hap", "sad", "neu", "ang"]
    rep = evaluate_predictions([0, 0, 1, 1], [0, 1, 1, 1], names)
    assert rep["support"] == 4
    assert set(rep["per_class_f1"]) == set(names)
    assert rep["per_class_f1"]["neu"] == 0.0 and rep["per_class_f1"]["ang"] == 0.0
    assert rep["confusion_matrix"] == [[1, 1, 0, 0], [0, 2, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    # weighted F1 weights by true support: absent classes contribute nothing
    assert rep["weighted_f1"] == pytest.approx(sk.f1_score([0, 0, 1, 1], [0, 1, 1, 1], average="weighted"),
                                               rel=rel_bound(torch.float64, len(names)), abs=0)


def test_all_unlabelled_and_bad_input():
    assert accuracy([-1, -1], [0, 1]) == 0.0 and weighted_f1([-1], [0]) == 0.0
    with pytest.raises(ValueError, match="same length"):
        accuracy([0, 1], [0])
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix([0, 3], [0, 1], 3)
