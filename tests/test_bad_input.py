"""Hostile and careless input: every case below exits with the exit code of the policy
in ``hotspot_erc.cli`` and one line naming the problem, never a traceback; destructive options
delete only what hotspot-erc wrote; nothing wrong is accepted silently.

Each table row is (id, builder, exit code, fragment of the error line). A builder gets a
:class:`Workspace` (a fresh folder, plus a tiny corpus and checkpoint shared by the module) and
returns the argv, writing whatever bad file the case needs.
"""
import errno
import json
import os
import pickle
import shutil
import struct
import sys

import numpy as np
import pytest
import torch
from conftest import seed_for

from hotspot_erc.cli import main
from hotspot_erc.data.format import open_corpus
from hotspot_erc.data.synthetic import generate_synthetic_corpus

TINY = ["--d-model", "16", "--num-heads", "2", "--classifier-hidden", "16", "--epochs", "1", "--align-warmup", "0", "--batch-size", "4",
        "--no-progress", "--no-plots", "--device", "cpu"]


# ----------------------------------------------------------------------------- shared fixtures

@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    from hotspot_erc.train import config as C
    from hotspot_erc.train.run import train

    root = tmp_path_factory.mktemp("bad_input")
    corpus = generate_synthetic_corpus(root / "corpus", num_dialogues=8, seed=3, utterances=(3, 4),
                                       frames={"t": (2, 5), "a": (2, 6), "v": (2, 5)})
    cfg = C.RunConfig()
    cfg.model.d_model, cfg.model.num_heads, cfg.model.classifier_hidden = 16, 2, 16
    cfg.train.epochs, cfg.train.batch_size, cfg.train.progress, cfg.train.plots = 1, 4, False, False
    cfg.train.align_warmup = 0
    cfg.train.device = "cpu"
    cfg.data.corpus = corpus
    res = train(cfg, run_dir=str(root / "run"))
    return {"corpus": corpus, "ckpt": os.path.join(res["run_dir"], "checkpoints", "best.safetensors")}


class Workspace:
    def __init__(self, tmp_path, shared):
        self.tmp = tmp_path
        self.corpus = shared["corpus"]
        self.ckpt = shared["ckpt"]

    def path(self, name: str) -> str:
        return str(self.tmp / name)

    def write(self, name: str, data: bytes) -> str:
        (self.tmp / name).parent.mkdir(parents=True, exist_ok=True)
        (self.tmp / name).write_bytes(data)
        return self.path(name)

    def pickle(self, name: str, obj) -> str:
        return self.write(name, pickle.dumps(obj, protocol=2))

    def corpus_copy(self, name: str, **arrays) -> str:
        """The shared corpus with some per-utterance arrays replaced (label=..., speaker=...)."""
        dst = self.tmp / name
        shutil.copytree(self.corpus, dst)
        for key, fn in arrays.items():
            arr = np.load(dst / f"{key}.npy")
            np.save(dst / f"{key}.npy", fn(arr))
        return str(dst)

    def edited_checkpoint(self, name: str, old: str, new: str) -> str:
        """A copy of the checkpoint whose header text has ``old`` replaced by ``new`` (same length,
        so tensor offsets stay valid): what a one-byte edit of the stored settings looks like."""
        assert len(old) == len(new)
        raw = open(self.ckpt, "rb").read()
        (n,) = struct.unpack("<Q", raw[:8])
        header = raw[8:8 + n].decode()
        assert old in header, old
        return self.write(name, raw[:8] + header.replace(old, new, 1).encode() + raw[8 + n:])


@pytest.fixture
def ws(tmp_path, shared):
    return Workspace(tmp_path, shared)


# ----------------------------------------------------------------------------- source files

def iemocap(mutate=None, dims=(4, 3, 2)):
    """A small IEMOCAP 9-tuple (4 dialogues of 3 utterances); ``mutate(list)`` breaks it."""
    rng = np.random.default_rng(seed_for(0))
    vids = [f"Ses01F_impro{i:02d}" for i in range(4)]
    ids = {v: [f"{v}_{u}" for u in range(3)] for v in vids}
    spk = {v: ["M", "F", "M"] for v in vids}
    lab = {v: [0, 1, 2] for v in vids}
    text = {v: [rng.standard_normal(dims[0]) for _ in range(3)] for v in vids}
    audio = {v: rng.standard_normal((3, dims[1])).astype(np.float32) for v in vids}
    visual = {v: [rng.standard_normal(dims[2]) for _ in range(3)] for v in vids}
    sent = {v: ["a", "b", "c"] for v in vids}
    data = [ids, spk, lab, text, audio, visual, sent, vids[:3], vids[3:]]
    if mutate:
        mutate(data)
    return tuple(data)


def cogmen(mutate=None):
    rng = np.random.default_rng(seed_for(1))
    items = [{"vid": f"d{i}", "speaker": ["M", "F"], "label": [0, 1], "text": [rng.standard_normal(4) for _ in range(2)],
              "audio": [rng.standard_normal(3) for _ in range(2)], "visual": [rng.standard_normal(2) for _ in range(2)],
              "sentence": ["a", "b"]} for i in range(4)]
    data = {"train": items[:2], "dev": items[2:3], "test": items[3:]}
    if mutate:
        mutate(data)
    return data


def mosei(labels=None):
    rng = np.random.default_rng(seed_for(2))
    n = 4
    part = {"text": rng.standard_normal((n, 3, 4)).astype(np.float32),
            "audio": rng.standard_normal((n, 3, 3)).astype(np.float32),
            "vision": rng.standard_normal((n, 3, 2)).astype(np.float32),
            "labels": rng.uniform(-3, 3, (n, 1, 1)) if labels is None else labels,
            "id": np.array([[f"v{i}", str(i)] for i in range(n)], dtype=object)}
    return {"train": part, "valid": dict(part), "test": dict(part)}


def _set(data, index, key, value):
    data[index][key] = value


def _pop(data, index, key):
    del data[index][key]


def _both_splits(data):
    data[8] = data[8] + [data[7][-1]]  # the last train dialogue: the dev split comes from the front


def _dup_vid(data):
    data["train"][1] = {**data["train"][1], "vid": data["train"][0]["vid"]}


def _csv(ws, name, rows, header="dialogue_id,utterance_id,speaker,text,label,split"):
    return ws.write(name, (header + "\n" + "\n".join(rows) + "\n").encode())


CSV_ARGS = ["--preset", "generic", "--encoder", "hashing", "--hashing-dim", "8", "--intensity", "none"]
GOOD_ROWS = [f"d{d},{u},{'AB'[u % 2]},hello there {d} {u},{'xy'[(d + u) % 2]},{'train' if d < 3 else 'test'}"
             for d in range(4) for u in range(3)]


# ----------------------------------------------------------------------------- the table

CASES = [
    # --- converters: unreadable sources (3)
    ("empty-pickle-iemocap", lambda w: ["convert", "iemocap", w.write("e.pkl", b""), w.path("o")], 3,
     "empty or truncated"),
    ("empty-pickle-cogmen", lambda w: ["convert", "cogmen", w.write("e.pkl", b""), w.path("o")], 3,
     "empty or truncated"),
    ("empty-pickle-mosei", lambda w: ["convert", "mosei", w.write("e.pkl", b""), w.path("o")], 3,
     "empty or truncated"),
    ("truncated-pickle-iemocap", lambda w: ["convert", "iemocap",
                                            w.write("t.pkl", pickle.dumps(iemocap(), protocol=2)[:300]),
                                            w.path("o")], 3, "truncated"),
    ("truncated-pickle-mosei", lambda w: ["convert", "mosei", w.write("t.pkl", pickle.dumps(mosei())[:-50]),
                                          w.path("o")], 3, "pickle"),
    ("text-file-cogmen", lambda w: ["convert", "cogmen", w.write("t.pkl", b"dialogue,label\nx,1\n"), w.path("o")],
     3, "not a readable pickle"),
    ("source-missing", lambda w: ["convert", "iemocap", w.path("absent.pkl"), w.path("o")], 3, "no such file"),
    ("source-is-folder", lambda w: ["convert", "mosei", str(w.tmp), w.path("o")], 3, "is a folder"),
    # --- converters: readable pickles with inconsistent content (3)
    ("iemocap-string-labels", lambda w: ["convert", "iemocap", w.pickle("s.pkl", iemocap(
        lambda d: _set(d, 2, "Ses01F_impro01", ["happy", "sad", "neu"]))), w.path("o")], 3,
     "label 'happy' is not a class index"),
    ("iemocap-nan-label", lambda w: ["convert", "iemocap", w.pickle("n.pkl", iemocap(
        lambda d: _set(d, 2, "Ses01F_impro01", [0, float("nan"), 1]))), w.path("o")], 3, "NaN"),
    ("iemocap-speakers-missing-dialogue", lambda w: ["convert", "iemocap", w.pickle("m.pkl", iemocap(
        lambda d: _pop(d, 1, "Ses01F_impro02"))), w.path("o")], 3, "has no entry in videoSpeakers"),
    ("iemocap-feature-size-differs", lambda w: ["convert", "iemocap", w.pickle("f.pkl", iemocap(
        lambda d: _set(d, 4, "Ses01F_impro02", np.zeros((3, 9), np.float32)))), w.path("o")], 3,
     "every dialogue needs the same feature size"),
    ("iemocap-dialogue-in-train-and-test", lambda w: ["convert", "iemocap", w.pickle("b.pkl", iemocap(_both_splits)),
                                                      w.path("o")], 3, "in both split 'train' and split 'test'"),
    ("cogmen-duplicate-video-id", lambda w: ["convert", "cogmen", w.pickle("c.pkl", cogmen(_dup_vid)), w.path("o")],
     3, "appears twice in split 'train'"),
    ("mosei-label-count", lambda w: ["convert", "mosei", w.pickle("l.pkl", mosei(labels=np.zeros((3, 1, 1)))),
                                     w.path("o")], 3, "'labels' has shape (3, 1, 1) for 4 segments"),
    ("mosei-nan-labels", lambda w: ["convert", "mosei", w.pickle("n.pkl", mosei(
        labels=np.array([0.5, np.nan, 1.0, np.nan]).reshape(4, 1, 1))), w.path("o")], 3,
     "2 sentiment label(s) are NaN"),
    ("csv-unknown-split", lambda w: ["convert", "conversation-csv", _csv(w, "u.csv", GOOD_ROWS[:-1] + [
        "d3,2,B,typo here,x,tset"]), w.path("o"), *CSV_ARGS], 3, "unknown split 'tset'"),
    # --- converters: options (2) and output folders (5)
    ("dev-fraction-above-one", lambda w: ["convert", "iemocap", w.pickle("i.pkl", iemocap()), w.path("o"),
                                          "--dev-fraction", "1.5"], 2, "--dev-fraction: must be in [0, 1)"),
    ("dev-fraction-negative", lambda w: ["convert", "iemocap", w.pickle("i.pkl", iemocap()), w.path("o"),
                                         "--dev-fraction", "-1"], 2, "--dev-fraction: must be in [0, 1)"),
    ("csv-dev-fraction-above-one", lambda w: ["convert", "conversation-csv", _csv(w, "g.csv", GOOD_ROWS), w.path("o"),
                                              *CSV_ARGS, "--dev-fraction", "1.5"], 2, "must be in [0, 1)"),
    ("output-is-a-file", lambda w: ["convert", "iemocap", w.pickle("i.pkl", iemocap()), w.write("f", b"x")], 5,
     "is a file, not a folder"),
    ("output-contains-input", lambda w: ["convert", "iemocap", w.pickle("i.pkl", iemocap()), str(w.tmp),
                                         "--overwrite"], 5, "contains the input"),
    ("output-inside-input", lambda w: ["convert", "conversation-csv", str(w.tmp / "csvs"), str(w.tmp / "csvs" / "o"),
                                       *CSV_ARGS, "--overwrite"], 5, "lies inside the input"),
    ("overwrite-foreign-folder", lambda w: ["convert", "iemocap", w.pickle("i.pkl", iemocap()),
                                            os.path.dirname(w.write("mine/notes.txt", b"keep")), "--overwrite"], 5,
     "does not hold a hotspot-erc corpus"),
    # --- train: settings (2), data (3), output (5), divergence (6)
    ("train-radius-negative", lambda w: ["train", "--corpus", w.corpus, "--runs-root", w.path("runs"), *TINY,
                                         "--radius", "-1"], 2, "radius (--radius) must be >= 0, got -1"),
    ("train-window-past-negative", lambda w: ["train", "--corpus", w.corpus, "--runs-root", w.path("runs"), *TINY,
                                              "--window-past", "-1"], 2, "window_past (--window-past) must be >= 0"),
    ("train-graph-layers-negative", lambda w: ["train", "--corpus", w.corpus, "--runs-root", w.path("runs"), *TINY,
                                               "--graph-layers", "-2"], 2, "graph_layers (--graph-layers) must be >= 0"),
    ("train-encoder-layers-negative", lambda w: ["train", "--corpus", w.corpus, "--runs-root", w.path("runs"), *TINY,
                                                 "--encoder-layers", "-1"], 2, "encoder_layers (--encoder-layers)"),
    ("train-patience-negative", lambda w: ["train", "--corpus", w.corpus, "--runs-root", w.path("runs"), *TINY,
                                           "--patience", "-1"], 2, "patience (--patience) must be >= 0"),
    ("train-grad-clip-negative", lambda w: ["train", "--corpus", w.corpus, "--runs-root", w.path("runs"), *TINY,
                                            "--grad-clip", "-1"], 2, "grad_clip (--grad-clip) must be a finite number"),
    ("train-lr-inf", lambda w: ["train", "--corpus", w.corpus, "--runs-root", w.path("runs"), *TINY, "--lr", "inf"],
     2, "lr (--lr) must be a finite number > 0, got inf"),
    ("train-lr-nan", lambda w: ["train", "--corpus", w.corpus, "--runs-root", w.path("runs"), *TINY, "--lr", "nan"],
     2, "lr (--lr) must be a finite number"),
    ("train-config-is-folder", lambda w: ["train", "--corpus", w.corpus, "--runs-root", w.path("runs"), *TINY,
                                          "--config", str(w.tmp)], 2, "is a folder; --config takes a TOML file"),
    ("train-device-tpu", lambda w: ["train", "--corpus", w.corpus, "--runs-root", w.path("runs"),
                                    *TINY[:-2], "--device", "tpu"], 2, "device (--device) must be"),
    ("train-speaker-table-too-small", lambda w: ["train", "--corpus", w.corpus, "--runs-root", w.path("runs"), *TINY,
                                                 "--num-speakers", "1"], 2, "num_speakers 1 is too small"),
    ("train-graph-without-edges", lambda w: ["train", "--corpus", w.corpus, "--runs-root", w.path("runs"), *TINY,
                                             "--no-temporal-edges", "--no-cross-modal-edges"], 2, "no edges"),
    ("train-nothing-labelled", lambda w: ["train", "--corpus", w.corpus_copy("unl", label=lambda a: a * 0 - 1),
                                          "--runs-root", w.path("runs"), *TINY], 3, "has no labelled utterance"),
    ("train-run-dir-under-a-file", lambda w: ["train", "--corpus", w.corpus, "--run-dir",
                                              os.path.join(w.write("f", b"x"), "run"), *TINY], 5,
     "is a file, not a folder"),
    ("train-diverges", lambda w: ["train", "--corpus", w.corpus, "--run-dir", w.path("run"), *TINY, "--lr", "1e30",
                                  "--grad-clip", "0"], 6, "training diverged"),
    # --- evaluate / predict
    ("evaluate-device-tpu", lambda w: ["evaluate", w.ckpt, "--corpus", w.corpus, "--device", "tpu"], 2,
     "device (--device) must be 'auto', 'cpu', 'cuda' or 'cuda:N'"),
    ("evaluate-batch-size-zero", lambda w: ["evaluate", w.ckpt, "--corpus", w.corpus, "--batch-size", "0"], 2,
     "batch_size (--batch-size) must be >= 1, got"),
    ("predict-batch-size-negative", lambda w: ["predict", w.ckpt, "--corpus", w.corpus, "--batch-size", "-3"], 2,
     "batch_size (--batch-size) must be >= 1, got"),
    ("predict-output-txt", lambda w: ["predict", w.ckpt, "--corpus", w.corpus, "-o", w.path("x.txt")], 2,
     "must end in .json or .csv"),
    ("evaluate-nothing-labelled", lambda w: ["evaluate", w.ckpt, "--corpus", w.corpus_copy(
        "unl", label=lambda a: a * 0 - 1), "--no-progress"], 3, "has no labelled utterance"),
    ("evaluate-speaker-beyond-table", lambda w: ["evaluate", w.ckpt, "--corpus", w.corpus_copy(
        "spk", speaker=lambda a: np.where(np.arange(a.size) == 1, 9, a)), "--no-progress"], 3, "speaker id 9"),
    ("evaluate-out-is-a-file", lambda w: ["evaluate", w.ckpt, "--corpus", w.corpus, "--out", w.write("f", b"x")], 5,
     "is a file, not a folder"),
    ("checkpoint-format-version-not-a-number", lambda w: ["evaluate", w.edited_checkpoint(
        "v.safetensors", '"format_version":"2"', '"format_version":"x"'), "--corpus", w.corpus], 4, "is not a number"),
    ("checkpoint-edited-radius", lambda w: ["evaluate", w.edited_checkpoint(
        "r.safetensors", '\\"radius\\": 2', '\\"radius\\": 3'), "--corpus", w.corpus], 4,
     "do not match the checksum"),
    ("checkpoint-edited-rule-kind", lambda w: ["predict", w.edited_checkpoint(
        "k.safetensors", '\\"rule_kind\\": \\"norm\\"', '\\"rule_kind\\": \\"nor \\"'), "--corpus", w.corpus], 4,
     "do not match the checksum"),
]
if not torch.cuda.is_available():
    CASES.append(("evaluate-device-cuda-without-gpu", lambda w: ["evaluate", w.ckpt, "--corpus", w.corpus,
                                                                 "--device", "cuda"], 2, "no CUDA device"))


def run_cli(argv, capsys) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("name,build,code,fragment", CASES, ids=[c[0] for c in CASES])
def test_bad_input(name, build, code, fragment, ws, capsys):
    if name == "output-inside-input":
        (ws.tmp / "csvs").mkdir()
        _csv(ws, "csvs/train.csv", GOOD_ROWS)
    got, err = run_cli(build(ws), capsys)
    assert got == code, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and fragment in lines[0], err
    if code in (2, 3) and name.startswith("train"):
        # A rejected configuration leaves no run folder behind.
        assert not os.path.exists(ws.path("runs")) or not os.listdir(ws.path("runs")), os.listdir(ws.path("runs"))
    if name == "output-contains-input":
        assert sorted(os.listdir(ws.tmp)) == ["i.pkl"]  # the source is untouched, nothing was written
    if name == "output-inside-input":
        assert sorted(os.listdir(ws.tmp / "csvs")) == ["train.csv"]
    if name == "overwrite-foreign-folder":
        assert (ws.tmp / "mine" / "notes.txt").read_bytes() == b"keep"


# ----------------------------------------------------------------------------- cases with more to check

def test_diverged_run_saves_nothing_non_finite(ws, capsys):
    code, err = run_cli(["train", "--corpus", ws.corpus, "--run-dir", ws.path("run"), *TINY, "--epochs", "2",
                         "--lr", "1e30", "--grad-clip", "0"], capsys)
    assert code == 6 and "no non-finite weights were saved" in err
    from hotspot_erc.train.checkpoint import load_checkpoint

    for name in ("best.safetensors", "last.safetensors"):
        path = ws.tmp / "run" / "checkpoints" / name
        if path.exists():
            assert all(torch.isfinite(t).all() for t in load_checkpoint(str(path)).model.values())


def test_speaker_table_is_sized_from_the_corpus(ws, capsys):
    """A corpus whose dialogues have 11 speakers trains with a table of 11 (the default would
    have merged ids >= 8), and evaluate/predict accept it."""
    corpus = ws.corpus_copy("many", speaker=lambda a: np.arange(a.size) % 11)
    code, err = run_cli(["train", "--corpus", corpus, "--run-dir", ws.path("run"), *TINY], capsys)
    assert code == 0, err
    cfg = json.loads((ws.tmp / "run" / "config.json").read_text())
    assert cfg["run"]["model"]["num_speakers"] == 11
    ckpt = ws.path("run/checkpoints/best.safetensors")
    assert run_cli(["predict", ckpt, "--corpus", corpus, "-o", ws.path("p.csv"), "--no-progress"], capsys)[0] == 0
    # The small corpus keeps the table of 8 that models had before tables were sized.
    small = json.loads(open(os.path.join(os.path.dirname(os.path.dirname(ws.ckpt)), "config.json")).read())
    assert small["run"]["model"]["num_speakers"] == 8


def test_csv_long_field_and_empty_labels_are_read_and_counted(ws, capsys):
    rows = list(GOOD_ROWS)
    rows[0] = rows[0].replace("hello there 0 0", "word " * 40_000)  # 200,000 characters in one field
    rows[4] = rows[4].rsplit(",", 2)[0] + ",,train"                  # an empty label cell
    rows[5] = rows[5].rsplit(",", 2)[0] + ",,train"
    code, err = run_cli(["convert", "conversation-csv", _csv(ws, "long.csv", rows), ws.path("o"), *CSV_ARGS], capsys)
    assert code == 0, err
    assert "empty label (kept as unlabelled context) (2)" in err and "2 of 12 utterance(s) have no label" in err
    c = open_corpus(ws.path("o"))
    assert int((np.asarray(c.label) < 0).sum()) == 2
    assert len(c.texts[0]) > 131_072


def test_iemocap_four_way_says_how_many_became_unlabelled(ws, capsys):
    code = main(["convert", "iemocap", ws.pickle("i.pkl", iemocap(lambda d: _set(d, 2, "Ses01F_impro00", [4, 5, 0]))),
                 ws.path("o"), "--four-way"])
    out = capsys.readouterr().out
    assert code == 0 and "note: 2 utterance(s) are unlabelled" in out


def test_overwrite_replaces_only_corpus_files(ws, capsys):
    src = ws.pickle("i.pkl", iemocap())
    assert main(["convert", "iemocap", src, ws.path("o")]) == 0
    (ws.tmp / "o" / "README.txt").write_text("mine")
    assert main(["convert", "iemocap", src, ws.path("o"), "--overwrite", "--four-way"]) == 0
    assert (ws.tmp / "o" / "README.txt").read_text() == "mine"
    assert open_corpus(ws.path("o")).label_names == ["hap", "sad", "neu", "ang"]
    assert os.path.exists(src)


# ----------------------------------------------------------------------------- full disk, read-only folders

def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_full_disk_while_converting_leaves_nothing_half_written(ws, capsys, monkeypatch):
    import hotspot_erc.data.corpus_writer as writer

    monkeypatch.setattr(writer, "_write_json", _no_space)
    code, err = run_cli(["convert", "iemocap", ws.pickle("i.pkl", iemocap()), ws.path("o")], capsys)
    assert code == 5 and "No space left on device" in err and "Traceback" not in err
    assert not os.path.exists(ws.path("o"))  # created by us, so removed again


def test_full_disk_while_saving_a_checkpoint(ws, capsys, monkeypatch):
    import hotspot_erc.train.checkpoint as ck

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ck, "_write_file", fail)
    code, err = run_cli(["train", "--corpus", ws.corpus, "--run-dir", ws.path("run"), *TINY], capsys)
    assert code == 5 and "No space left on device" in err and "Traceback" not in err
    assert [n for n in os.listdir(ws.path("run/checkpoints")) if n.startswith(".tmp-")] == []


def test_full_disk_while_writing_an_evaluation_report(ws, capsys, monkeypatch):
    import hotspot_erc.train.run as run

    monkeypatch.setattr(run, "write_report", _no_space)
    code, err = run_cli(["evaluate", ws.ckpt, "--corpus", ws.corpus, "--out", ws.path("ev"), "--no-progress"], capsys)
    assert code == 5 and "No space left on device" in err


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores folder permissions")
def test_read_only_output_folders(ws, capsys):
    ro = ws.tmp / "ro"
    ro.mkdir()
    os.chmod(ro, 0o555)
    try:
        for argv in (["convert", "iemocap", ws.pickle("i.pkl", iemocap()), str(ro / "o")],
                     ["train", "--corpus", ws.corpus, "--run-dir", str(ro / "run"), *TINY],
                     ["evaluate", ws.ckpt, "--corpus", ws.corpus, "--out", str(ro / "ev")]):
            code, err = run_cli(argv, capsys)
            assert code == 5 and "Traceback" not in err, err
    finally:
        os.chmod(ro, 0o755)


def test_a_real_process_prints_one_line_and_no_traceback(ws):
    import subprocess

    out = subprocess.run([sys.executable, "-m", "hotspot_erc.cli", "convert", "mosei", ws.write("e.pkl", b""),
                          ws.path("o")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 3
    assert out.stderr.strip().count("\n") == 0 and "Traceback" not in out.stderr
    assert out.stderr.startswith("hotspot-erc convert: error: ")
