"""The `hotspot-erc` command line: help, train → evaluate → predict, and clear exit codes for
bad input (corrupt / truncated / mismatched checkpoints, wrong dims, unknown labels, empty split,
unwritable output) without losing an earlier checkpoint."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from tolerance import rel_bound

from hotspot_erc.cli import build_parser, main
from hotspot_erc.data.synthetic import generate_synthetic_corpus

TINY = ["--d-model", "16", "--num-heads", "2", "--classifier-hidden", "16", "--epochs", "1", "--align-warmup", "0", "--batch-size", "4",
        "--no-progress", "--no-plots"]


def _corpus(path, seed=2, **kw):
    return generate_synthetic_corpus(path, num_dialogues=8, seed=seed, utterances=(3, 4),
                                     frames={"t": (2, 5), "a": (2, 6), "v": (2, 5)}, **kw)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    corpus = _corpus(root / "corpus")
    run_dir = root / "run"
    assert main(["train", "--corpus", corpus, "--run-dir", str(run_dir), *TINY]) == 0
    return {"root": root, "corpus": corpus, "run": run_dir,
            "ckpt": str(run_dir / "checkpoints" / "best.safetensors")}


def test_help_explains_every_flag(capsys):
    parser = build_parser()
    for cmd in ("train", "evaluate", "predict", "ablate", "convert", "info", "bench"):
        with pytest.raises(SystemExit) as exc:
            parser.parse_args([cmd, "--help"])
        assert exc.value.code == 0
        text = capsys.readouterr().out
        assert "usage: hotspot-erc " + cmd in text
    sub = next(a for a in parser._actions if a.dest == "command").choices
    for name, p in sub.items():
        for action in p._actions:
            if action.option_strings and action.dest != "help":
                assert action.help and len(action.help) > 10, (name, action.option_strings)
    assert main([]) == 2


def test_train_writes_report_and_prints_path(trained, capsys):
    run = trained["run"]
    for f in ("metrics.json", "history.json", "config.json", "confusion_matrix.csv", "predictions_test.csv"):
        assert (run / f).exists(), f
    assert not (run / "gates.png").exists()  # --no-plots
    m = json.loads((run / "metrics.json").read_text())
    assert 0.0 <= m["test"]["weighted_f1"] <= 1.0 and m["epochs_run"] == 1


def test_evaluate_and_predict(trained, tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["evaluate", trained["ckpt"], "--corpus", trained["corpus"], "--split", "dev", "--out", str(out),
                 "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "dev: accuracy" in text and "report:" in text
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["dev"]) >= {"accuracy", "weighted_f1", "per_class_f1", "confusion_matrix"}
    assert (out / "gates.png").exists() and (out / "confusion_matrix.png").exists()

    pj, pc = tmp_path / "p.json", tmp_path / "p.csv"
    assert main(["predict", trained["ckpt"], "--corpus", trained["corpus"], "--split", "test", "-o", str(pj),
                 "--no-progress"]) == 0
    rows = json.loads(pj.read_text())
    assert rows and set(rows[0]) == {"utterance_id", "predicted", "true", "probabilities"}
    probs = rows[0]["probabilities"]  # a float32 softmax: its normalising sum has one term per class
    assert abs(sum(probs.values()) - 1) <= rel_bound(torch.float32, len(probs))
    assert rows[0]["predicted"] == max(rows[0]["probabilities"], key=rows[0]["probabilities"].get)
    # One conversation, as CSV.
    from hotspot_erc.data.format import open_corpus

    c = open_corpus(trained["corpus"])
    did = str(c.dialogue_ids[0])
    lo, hi = c.dialogue_utterances(0)
    assert main(["predict", trained["ckpt"], "--corpus", trained["corpus"], "--dialogue", did, "-o", str(pc),
                 "--no-progress"]) == 0
    lines = pc.read_text().strip().splitlines()
    assert lines[0].startswith("utterance_id,predicted,true,p_hap") and len(lines) == 1 + hi - lo
    assert main(["predict", trained["ckpt"], "--corpus", trained["corpus"], "--dialogue", "nope"]) == 3
    capsys.readouterr()
    assert main(["predict", trained["ckpt"], "--corpus", trained["corpus"], "--dialogue", did, "--no-progress"]) == 0
    printed = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    assert len(printed) == hi - lo


def test_evaluate_and_predict_use_the_checkpoints_settings(trained, capsys, monkeypatch):
    """No defaults of their own: batch size, device, workers and progress come from the checkpoint
    unless a flag overrides them."""
    from hotspot_erc.train import run as run_mod

    seen = []
    real = run_mod.predict

    def spy(*args, **kwargs):
        seen.append(kwargs["batch_size"])
        return real(*args, **kwargs)

    monkeypatch.setattr(run_mod, "predict", spy)
    assert main(["evaluate", trained["ckpt"], "--corpus", trained["corpus"], "--no-progress"]) == 0
    assert main(["predict", trained["ckpt"], "--corpus", trained["corpus"], "--batch-size", "3", "--no-progress"]) == 0
    assert seen == [4, 3]  # TINY trained with --batch-size 4
    capsys.readouterr()
    with pytest.raises(SystemExit):
        build_parser().parse_args(["evaluate", "--help"])
    assert "the checkpoint's setting" in capsys.readouterr().out


def test_bad_checkpoints(trained, tmp_path, capsys):
    raw = open(trained["ckpt"], "rb").read()
    trunc = tmp_path / "trunc.safetensors"
    trunc.write_bytes(raw[: len(raw) // 2])
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(raw[:-8] + bytes(8))
    for path, msg in ((trunc, "corrupt or truncated"), (corrupt, "corrupt"), (tmp_path / "none.safetensors", "no checkpoint")):
        assert main(["evaluate", str(path), "--corpus", trained["corpus"], "--no-progress"]) == 4
        assert msg in capsys.readouterr().err


def test_corpus_that_does_not_fit(trained, tmp_path, capsys):
    other = _corpus(tmp_path / "dims", dims={"a": 10})
    assert main(["evaluate", trained["ckpt"], "--corpus", other, "--no-progress"]) == 3
    assert "feature dims" in capsys.readouterr().err
    renamed = tmp_path / "labels"
    shutil.copytree(trained["corpus"], renamed)
    meta = json.loads((renamed / "meta.json").read_text())
    meta["label_names"] = ["joy"] + meta["label_names"][1:]
    (renamed / "meta.json").write_text(json.dumps(meta))
    assert main(["evaluate", trained["ckpt"], "--corpus", str(renamed), "--no-progress"]) == 3
    assert "unknown label names ['joy']" in capsys.readouterr().err
    empty = tmp_path / "empty"
    shutil.copytree(trained["corpus"], empty)
    splits = json.loads((empty / "splits.json").read_text())
    splits["train"], splits["test"] = splits["train"] + splits["test"], []
    (empty / "splits.json").write_text(json.dumps(splits))
    assert main(["evaluate", trained["ckpt"], "--corpus", str(empty), "--no-progress"]) == 3
    assert "split 'test'" in capsys.readouterr().err
    assert main(["evaluate", trained["ckpt"], "--corpus", str(tmp_path / "absent")]) == 3


def test_unwritable_output_and_checkpoint_kept(trained, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["evaluate", trained["ckpt"], "--corpus", trained["corpus"], "--out", str(blocker / "sub")]) == 5
    assert "is a file, not a folder" in capsys.readouterr().err
    assert main(["train", "--corpus", trained["corpus"], "--run-dir", str(blocker / "run"), *TINY]) == 5
    # A refused resume (other settings) leaves the earlier checkpoint byte for byte.
    last = trained["run"] / "checkpoints" / "last.safetensors"
    before = last.read_bytes()
    assert main(["train", "--corpus", trained["corpus"], "--run-dir", str(trained["run"]), "--resume", *TINY,
                 "--d-model", "8"]) == 4
    assert "model config differs" in capsys.readouterr().err
    assert last.read_bytes() == before
    assert main(["train", "--resume", *TINY]) == 2  # --resume without --run-dir
    assert main(["train", "--corpus", trained["corpus"], "--run-dir", str(trained["run"]), *TINY]) == 5
    assert "already holds a run" in capsys.readouterr().err and last.read_bytes() == before
    assert main(["train", "--corpus", trained["corpus"], *TINY, "--top-k", "9"]) == 2
    assert "top_k" in capsys.readouterr().err


def test_bench_outside_a_checkout_and_module_entry(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["bench", "--quick"]) == 2
    assert "benchmarks/run_all.py" in capsys.readouterr().err
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-m", "hotspot_erc.cli", "--help"], capture_output=True, text=True,
                         cwd=root, timeout=120)
    assert out.returncode == 0 and "train" in out.stdout and "ablate" in out.stdout
