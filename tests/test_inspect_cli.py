"""`hotspot-erc inspect` on the command line and `train`'s report: exit codes for bad input, the
report of a text-only run (words as frames, the sections MoA cannot fill say why), and `train
--no-report` naming the command instead."""
import json
import os
from html import escape

import pytest
from conftest import seed_for
from inspect_runs import TINY, synthetic_run, text_run

from hotspot_erc.cli import main
from hotspot_erc.data.format import open_corpus
from hotspot_erc.data.synthetic import generate_synthetic_corpus
from hotspot_erc.text.words import split_words


def test_inspect_writes_both_files_where_asked(tmp_path, tmp_path_factory, capsys):
    run = synthetic_run(tmp_path_factory)["run"]
    out = tmp_path / "sub" / "mine.html"
    assert main(["inspect", run, "-o", str(out), "--max-dialogues", "2", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert f"report: {out}" in text and f"numbers: {tmp_path / 'sub' / 'mine.json'}" in text
    assert "gate t: " in text and "routing: one expert per pair" in text
    rep = json.loads((tmp_path / "sub" / "mine.json").read_text())
    assert rep["dialogues"]["shown"] == 2 and rep["dialogues"]["sampled"]
    assert escape("Showing 2 of the split's 3 dialogues, a random sample (seed 0)") in out.read_text()


@pytest.mark.parametrize("args, code, message", [
    (lambda t, r: ["inspect", str(t / "nothing-here")], 4, "does not exist"),
    (lambda t, r: ["inspect", str(t)], 4, "holds no checkpoints"),
    (lambda t, r: ["inspect", r, "-o", str(t / "report.txt")], 2, "ending in .html"),
    (lambda t, r: ["inspect", r, "-o", str(t / "f.html")], 5, "is a folder"),
    (lambda t, r: ["inspect", r, "--split", "nope"], 3, "--split nope"),
    (lambda t, r: ["inspect", r, "--max-dialogues", "0"], 2, "--max-dialogues must be"),
    (lambda t, r: ["inspect", r, "--device", "tpu"], 2, "--device"),
])
def test_inspect_refuses_bad_input_with_its_exit_code(tmp_path, tmp_path_factory, capsys, args, code, message):
    run = synthetic_run(tmp_path_factory)["run"]
    (tmp_path / "f.html").mkdir()
    assert main(args(tmp_path, run)) == code
    err = capsys.readouterr().err
    assert err.startswith("hotspot-erc inspect: error:") and message in err, err


def test_inspect_refuses_a_corpus_that_does_not_fit(tmp_path_factory, capsys):
    run = synthetic_run(tmp_path_factory)["run"]
    other = text_run(tmp_path_factory)["corpus"]
    assert main(["inspect", run, "--corpus", other]) == 3
    assert "modalities" in capsys.readouterr().err


def test_text_run_report(tmp_path_factory):
    r = text_run(tmp_path_factory)
    rep = json.loads(open(os.path.join(r["run"], "report.json")).read())
    corpus = open_corpus(r["corpus"])
    row = {u: i for i, u in enumerate(corpus.utterance_ids)}
    for d in rep["dialogues"]["dialogues"]:
        for u in d["utterances"]:
            words = split_words(corpus.texts[row[u["id"]]])
            assert u["modalities"]["t"]["words"] == words and len(u["modalities"]["t"]["score"]) == len(words)
    assert rep["dialogues"]["has_words"] and not rep["dialogues"]["has_truth"]
    assert "truth" not in rep["gates"]["modalities"]["t"]
    assert rep["gates"]["modalities"]["t"]["verdict_against"].startswith("the model's hotspot windows")
    assert rep["robustness"]["missing"]["t"][-1] is None and "no other modality" in rep["robustness"]["notes"][0]
    assert "one modality" in rep["cost"]["measured"]["note"]
    assert rep["graph"]["variants"]["no_cross_modal"]["note"].startswith("not applicable")


def test_train_without_report_names_the_command(tmp_path, capsys):
    corpus = generate_synthetic_corpus(tmp_path / "c", num_dialogues=6, seed=seed_for(31), utterances=(3, 4),
                                       frames={"t": (3, 5), "a": (3, 6), "v": (3, 5)})
    run = tmp_path / "run"
    args = [a if a != "2" or i == 0 or TINY[i - 1] != "--epochs" else "1" for i, a in enumerate(TINY)]
    assert main(["train", "--corpus", corpus, "--run-dir", str(run), *args, "--no-report"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1] == f"report: not written (--no-report); make it with: hotspot-erc inspect {run}"
    assert not (run / "report.html").exists()
    assert main(["inspect", str(run), "--no-progress"]) == 0
    assert (run / "report.html").exists() and (run / "report.json").exists()
