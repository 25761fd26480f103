"""Trainer, configuration and reports: resume reproduces the uninterrupted run, early stopping,
LR schedule, class weights, config precedence, report files and collapse warnings."""
import argparse
import json
import math
import os

import numpy as np
import pytest
import torch
from tolerance import assert_close, rel_bound

from hotspot_erc.data.synthetic import generate_synthetic_corpus
from hotspot_erc.train import config as C
from hotspot_erc.train import run
from hotspot_erc.train.checkpoint import load_checkpoint
from hotspot_erc.train.reports import collapse_warnings, routing_entropy
from hotspot_erc.train.trainer import inverse_frequency_weights, lr_lambda


@pytest.fixture(scope="module")
def corpus_path(tmp_path_factory):
    return generate_synthetic_corpus(tmp_path_factory.mktemp("syn") / "c", num_dialogues=10, seed=1,
                                     utterances=(3, 5), frames={"t": (2, 6), "a": (3, 7), "v": (2, 5)})


def tiny_config(corpus_path, **train):
    cfg = C.RunConfig()
    cfg.data.corpus = str(corpus_path)
    cfg.model.d_model, cfg.model.num_heads, cfg.model.classifier_hidden = 16, 2, 16
    cfg.model.modality_dropout = 0.2  # exercises the per-epoch RNG stream across a resume
    cfg.train.epochs, cfg.train.batch_size, cfg.train.progress, cfg.train.patience = 2, 3, False, 0
    cfg.train.align_warmup = 0
    for k, v in train.items():
        setattr(cfg.train, k, v)
    return cfg


class Interrupt(Exception):
    pass


def _stop_after(epoch_index):
    def cb(trainer, epoch, rec):
        if epoch == epoch_index:
            raise Interrupt()
    return cb


def test_resume_matches_uninterrupted_run(corpus_path, tmp_path):
    cfg = tiny_config(corpus_path, epochs=1, align_warmup=1)  # interrupted inside the warm-up
    full = run.train(cfg, run_dir=str(tmp_path / "full"))
    with pytest.raises(Interrupt):
        run.train(cfg, run_dir=str(tmp_path / "cut"), callbacks=[_stop_after(0)])
    ck = load_checkpoint(str(tmp_path / "cut" / "checkpoints" / "last.safetensors"))
    assert ck.state["epoch"] == 0 and ck.optim["state"]
    resumed = run.train(cfg, run_dir=str(tmp_path / "cut"), resume=True)
    a = load_checkpoint(str(tmp_path / "full" / "checkpoints" / "last.safetensors"))
    b = load_checkpoint(str(tmp_path / "cut" / "checkpoints" / "last.safetensors"))
    assert a.model.keys() == b.model.keys()
    for k in a.model:
        assert torch.equal(a.model[k], b.model[k]), k
    ha, hb = json.load(open(tmp_path / "full" / "history.json")), json.load(open(tmp_path / "cut" / "history.json"))
    for ra, rb in zip(ha, hb):
        for key in ("train_loss", "dev_weighted_f1", "dev_loss", "lr"):
            assert ra[key] == rb[key], key
    assert full["metrics"]["test"] == resumed["metrics"]["test"]
    # The run folder holds every report artefact.
    names = set(os.listdir(tmp_path / "full"))
    assert {"config.json", "metrics.json", "history.json", "confusion_matrix.csv", "confusion_matrix.png",
            "learning_curves.png", "gates.png", "experts.png", "load_balance.png", "predictions_test.csv",
            "checkpoints"} <= names
    metrics = json.load(open(tmp_path / "full" / "metrics.json"))
    assert set(metrics["diagnostics"]["gates"]) == {"t", "a", "v"} and len(metrics["diagnostics"]["routing"]) == 6
    assert metrics["diagnostics"]["graph_update_ratio"] > 0
    assert metrics["test"]["support"] > 0 and len(metrics["test"]["confusion_matrix"]) == 6


def test_resume_refuses_a_different_config(corpus_path, tmp_path):
    cfg = tiny_config(corpus_path, epochs=1)
    run.train(cfg, run_dir=str(tmp_path / "r"), plots=False)
    last = tmp_path / "r" / "checkpoints" / "last.safetensors"
    before, config_before = last.read_bytes(), (tmp_path / "r" / "config.json").read_bytes()
    cfg.model.d_model = 32
    with pytest.raises(run.CheckpointProblem, match="model config differs"):
        run.train(cfg, run_dir=str(tmp_path / "r"), resume=True)
    cfg.model.d_model = 16
    cfg.train.seed = 5
    with pytest.raises(run.CheckpointProblem, match="seed"):
        run.train(cfg, run_dir=str(tmp_path / "r"), resume=True)
    assert last.read_bytes() == before and (tmp_path / "r" / "config.json").read_bytes() == config_before


def test_early_stopping_and_best_epoch(corpus_path, tmp_path):
    # A learning rate this small cannot change the predictions: dev F1 never improves after epoch 1.
    cfg = tiny_config(corpus_path, epochs=6, patience=2, lr=1e-12)
    cfg.model.moa = False  # keeps it quick; stopping does not depend on the architecture
    res = run.train(cfg, run_dir=str(tmp_path / "es"), plots=False)
    assert res["metrics"]["epochs_run"] == 3 and res["metrics"]["best_epoch"] == 1
    best = load_checkpoint(str(tmp_path / "es" / "checkpoints" / "best.safetensors"))
    assert best.state["epoch"] == 0


def test_class_weights_and_schedule_units():
    w = inverse_frequency_weights(np.array([0, 0, 0, 1, -1, 2, 2]), 4)
    assert_close(w, torch.tensor([6 / 12, 6 / 4, 6 / 8, 1.0]), torch.float32)  # a division, cast to float32
    # float64 factors in [0, 1] from a few operations on terms of size <= 1: absolute bound of one
    # rounding chain (k = 1) times that size
    one = dict(rel=0, abs=rel_bound(torch.float64))
    f = lr_lambda(100, 0.1, "cosine")
    assert f(0) == pytest.approx(0.1, **one) and f(9) == pytest.approx(1.0, **one)
    assert f(10) == pytest.approx(1.0, **one)
    assert f(55) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)), **one) and f(100) == pytest.approx(0.0, **one)
    assert lr_lambda(10, 0.0, "linear")(5) == pytest.approx(0.5, **one)
    assert lr_lambda(10, 0.0, "constant")(9) == 1.0



def test_training_batches_are_seeded_bucketed_and_sharded(corpus_path):
    from hotspot_erc.data.dataset import DialogueBatchSampler, DialogueDataset

    ds = DialogueDataset(corpus_path, "train")
    s = DialogueBatchSampler(ds, 3, shuffle=True, bucket=True, seed=0)
    a, b = s.global_batches(1), DialogueBatchSampler(ds, 3, shuffle=True, bucket=True, seed=0).global_batches(1)
    assert a == b and sorted(sum(a, [])) == list(range(len(ds))) and s.global_batches(2) != a
    assert len(a) == len(s) == -(-len(ds) // 3)
    # DDP: each rank takes its share of the same global batches; a batch smaller than the world goes
    ranks = [DialogueBatchSampler(ds, 3, shuffle=True, bucket=True, seed=0, rank=r, world_size=2) for r in (0, 1)]
    for r in ranks:
        r.set_epoch(1)
    shares = [list(r) for r in ranks]
    whole = [g for g in a if len(g) >= 2]
    assert [x + y for x, y in zip(*shares)] == [g[0::2] + g[1::2] for g in whole]
    assert len(shares[0]) == len(ranks[0]) == len(whole)


def test_class_weighted_training_runs(corpus_path, tmp_path):
    cfg = tiny_config(corpus_path, epochs=1, class_weights=True, lb_weight=0.0)
    cfg.model.moa, cfg.model.graph = False, False
    res = run.train(cfg, run_dir=str(tmp_path / "cw"), plots=False)
    assert math.isfinite(json.load(open(tmp_path / "cw" / "history.json"))[0]["train_loss"])
    assert res["metrics"]["diagnostics"]["routing"] == {}


def test_every_model_option_is_reachable_from_toml_and_flags(tmp_path):
    """One configuration source: the [model] section is nn.config.ModelConfig itself, and the
    flags and TOML keys are generated from its fields (soft_temperature and content_pool too)."""
    import dataclasses

    from hotspot_erc.nn.config import ModelConfig

    assert C.ModelConfig is ModelConfig
    parser = argparse.ArgumentParser()
    C.add_arguments(parser)
    flags = {o for a in parser._actions for o in a.option_strings}
    for f in dataclasses.fields(ModelConfig):
        assert "--" + f.name.replace("_", "-") in flags, f.name
    toml = tmp_path / "m.toml"
    toml.write_text('[model]\nsoft_temperature = 2\ncontent_pool = "attention"\n')
    cfg = C.from_args(parser.parse_args(["--soft-temperature", "0.5"]), str(toml))
    assert cfg.model.soft_temperature == 0.5 and cfg.model.content_pool == "attention"
    with pytest.raises(ValueError, match=r"soft_temperature \(--soft-temperature\) must be a finite number > 0"):
        C.from_args(parser.parse_args(["--soft-temperature", "0"]))
    with pytest.raises(SystemExit):
        parser.parse_args(["--content-pool", "max"])
    from hotspot_erc.train.model_io import build_model

    assert build_model(cfg, {"t": 4, "a": 3, "v": 2}, 3).config.content_pool == "attention"
    for name, changes in run.VARIANTS.items():  # the ablation presets name real options
        ModelConfig().replace(**changes).validate()


def test_config_precedence_and_errors(tmp_path):
    parser = argparse.ArgumentParser()
    C.add_arguments(parser)
    toml = tmp_path / "c.toml"
    toml.write_text('[model]\nd_model = 32\nhgf = false\n[train]\nlr = 1\nepochs = 3\n')
    cfg = C.from_args(parser.parse_args(["--epochs", "5", "--no-graph"]), str(toml))
    assert cfg.model.d_model == 32 and cfg.model.hgf is False and cfg.model.graph is False
    assert cfg.train.lr == 1.0 and cfg.train.epochs == 5  # flag beats file
    assert C.RunConfig.from_dict(cfg.to_dict()) == cfg
    bad = tmp_path / "bad.toml"
    for text, msg in (('[model]\nd_modle = 3\n', "unknown setting 'd_modle'"),
                      ('[model]\nd_model = "x"\n', "must be int"),
                      ('[model]\ngate = "both"\n', "must be one of"),
                      ('[modle]\n', "unknown sections"),
                      ('[model\n', "not valid TOML")):
        bad.write_text(text)
        with pytest.raises(ValueError, match=msg):
            C.from_args(parser.parse_args([]), str(bad))
    for flags, msg in ((["--top-k", "5"], "top_k"), (["--modalities", "tx"], "modalities"),
                       (["--d-model", "30", "--num-heads", "4"], "divisible")):
        with pytest.raises(ValueError, match=msg):
            C.from_args(parser.parse_args(flags))
    with pytest.raises(ValueError, match="does not exist"):
        C.from_args(parser.parse_args([]), str(tmp_path / "absent.toml"))


def test_collapse_warnings():
    diag = {"gates": {"t": {"frames": 100, "std": 0.001, "mean": 0.999}, "a": {"frames": 100, "std": 0.2, "mean": 0.5}},
            "routing": {"a->t": {"entropy": routing_entropy([100, 0, 0, 0]), "usage_share": [1, 0, 0, 0]},
                        "t->a": {"entropy": routing_entropy([1, 1, 1, 1]), "usage_share": [.25] * 4}}}
    w = collapse_warnings(diag)
    assert len(w) == 2 and "'t'" in w[0] and "a->t" in w[1]
    assert "graph adds nothing" in collapse_warnings({"graph_update_ratio": 0.001})[0]
    assert collapse_warnings({"graph_update_ratio": 0.5}) == []
    # float64 entropy: a sum over the 4 experts, divided by log 4
    assert routing_entropy([1, 1, 1, 1]) == pytest.approx(1.0, rel=rel_bound(torch.float64, 4), abs=0)
    assert routing_entropy([5, 0]) == 0.0
    # one expert per pair: nothing to route, nothing collapsed
    assert collapse_warnings({"routing": {"a->t": {"entropy": routing_entropy([7]), "usage_share": [1.0]}}}) == []


def test_empty_split_and_missing_corpus(corpus_path, tmp_path):
    import shutil

    broken = tmp_path / "c"
    shutil.copytree(corpus_path, broken)
    splits = json.load(open(broken / "splits.json"))
    splits["train"], splits["dev"] = splits["train"] + splits["dev"], []
    json.dump(splits, open(broken / "splits.json", "w"))
    with pytest.raises(run.DataError, match="split 'dev' .* is empty"):
        run.train(tiny_config(broken), run_dir=str(tmp_path / "x"))
    with pytest.raises(run.DataError, match="does not exist"):
        run.train(tiny_config(tmp_path / "nowhere"), run_dir=str(tmp_path / "y"))


def test_speaker_table_sizing_rules():
    from hotspot_erc.train.trainer import size_speaker_table

    cfg = C.RunConfig()
    assert cfg.model.num_speakers == 0  # auto
    assert size_speaker_table(cfg, 2).model.num_speakers == 8      # never below the historical 8
    assert size_speaker_table(cfg, 11).model.num_speakers == 11    # grows with the corpus
    assert cfg.model.num_speakers == 0                             # the caller's config is not changed
    cfg.model.graph_scheme = "cogmen"                              # relations per speaker pair: exact
    assert size_speaker_table(cfg, 2).model.num_speakers == 2
    cfg.model.num_speakers = 4
    assert size_speaker_table(cfg, 4).model.num_speakers == 4      # an explicit size that fits is kept
    with pytest.raises(ValueError, match="num_speakers 4 is too small.*speaker id 5"):
        size_speaker_table(cfg, 6)


def test_non_finite_loss_stops_training_before_anything_is_saved(corpus_path, tmp_path):
    cfg = tiny_config(corpus_path, lr=1e30, grad_clip=0.0)
    with pytest.raises(run.DivergedError, match="training diverged at epoch 1"):
        run.train(cfg, run_dir=str(tmp_path / "run"))
    assert not os.path.exists(tmp_path / "run" / "checkpoints")


def test_align_warmup_trains_no_classifier_and_counts_no_best(corpus_path, tmp_path):
    """Warm-up epochs leave the classifier's weights as initialised (cross-entropy is off), train
    MoA's alignment objective, and are neither best nor bad epochs for early stopping."""
    cfg = tiny_config(corpus_path, epochs=1, align_warmup=2, patience=1)
    cfg.model.align_weight = 1.0
    seen = {}

    def grab(trainer, epoch, rec):
        seen[epoch] = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}

    res = run.train(cfg, run_dir=str(tmp_path / "wu"), plots=False, callbacks=[grab])
    assert res["metrics"]["epochs_run"] == 3 and res["metrics"]["best_epoch"] == 3
    first, second, third = seen[0], seen[1], seen[2]
    for k in first:
        if k.startswith("classifier."):
            assert torch.equal(first[k], second[k]), k      # no cross-entropy in warm-up
            assert not torch.equal(second[k], third[k]), k  # trained after it
    moved = [k for k in first if ".query." in k and k.startswith("moa.") and not torch.equal(first[k], second[k])]
    assert moved  # the alignment objective trained MoA's queries
    hist = json.load(open(tmp_path / "wu" / "history.json"))
    assert all(h["train_align"] > 0 for h in hist)


def test_align_warmup_settings_are_checked(corpus_path, tmp_path, caplog):
    cfg = tiny_config(corpus_path, epochs=1, align_warmup=-1)
    cfg.model.align_weight = 1.0
    with pytest.raises(ValueError, match="align_warmup"):
        C.validate(cfg)
    # Without an alignment objective (here MoA off: the no_moa ablation) warm-up is skipped.
    cfg.train.align_warmup, cfg.model.moa = 2, False
    with caplog.at_level("WARNING"):
        res = run.train(cfg, run_dir=str(tmp_path / "nomoa"), plots=False)
    assert "align_warmup" in caplog.text and res["metrics"]["best_epoch"] == 1
