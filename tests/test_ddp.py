"""Distributed training: `torchrun` with 2 CPU processes (gloo) gives the same metrics and weights as
one process on the same global batch, and only rank 0 writes checkpoints."""
import json
import os
import subprocess
import sys

import pytest
import torch
from tolerance import rel_bound

from hotspot_erc.data.synthetic import generate_synthetic_corpus
from hotspot_erc.train.checkpoint import load_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LR = 1e-3
# Dropout, the load-balancing term and the alignment objective (its negatives are the utterances
# of the process's own shard) are per-process quantities: off, so the comparison is exact.
FLAGS = ["--d-model", "16", "--num-heads", "2", "--classifier-hidden", "16", "--epochs", "2", "--batch-size", "4",
         "--lr", str(LR), "--dropout", "0", "--lb-weight", "0", "--align-weight", "0", "--align-warmup", "0",
         "--device", "cpu", "--no-progress", "--no-plots"]
# The longest reduction behind the loss: the classifier's first layer reads 3 modalities x 16
# (MoA's vectors) + 3 graph nodes x 16 = 96 features (a batch's CE mean adds <= 4 x 6 terms).
K_LOSS = 96


def _comparable(name, t):
    """Leave out parameters whose gradient is (near) zero by construction, because Adam turns
    rounding-level gradients into full-size steps of either sign: the key part of the
    self-attention bias (softmax ignores a per-query constant) and the input projection bias
    (centring with β ≈ 1 subtracts it again)."""
    if name.startswith("proj.") and name.endswith(".bias"):
        return t[:0]
    if name.endswith("attn.qkv.bias"):
        d = t.shape[0] // 3
        return torch.cat([t[:d], t[2 * d:]])
    return t


def _train(run_dir, corpus, nproc, flags=FLAGS):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}
    if nproc == 1:
        cmd = [sys.executable, "-m", "hotspot_erc.cli"]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "hotspot_erc.cli"]
    out = subprocess.run(cmd + ["train", "--corpus", corpus, "--run-dir", str(run_dir), *flags],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=400)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="torch.distributed with gloo is not available")
def test_two_process_ddp_matches_one_process(tmp_path):
    corpus = generate_synthetic_corpus(tmp_path / "c", num_dialogues=10, seed=3, utterances=(3, 6),
                                       frames={"t": (2, 6), "a": (3, 7), "v": (2, 5)})
    one = _train(tmp_path / "one", corpus, 1)
    two = _train(tmp_path / "two", corpus, 2)
    assert two["world_size"] == 2 and one["world_size"] == 1
    for split in ("dev", "test"):
        assert two[split]["confusion_matrix"] == one[split]["confusion_matrix"], split
        # float64 from the same counts: one term per class (6), each <= 1
        assert two[split]["weighted_f1"] == pytest.approx(one[split]["weighted_f1"], rel=0,
                                                          abs=rel_bound(torch.float64, 6))
    h1 = json.loads((tmp_path / "one" / "history.json").read_text())
    h2 = json.loads((tmp_path / "two" / "history.json").read_text())
    for a, b in zip(h1, h2):
        # float32 losses (CE >= 0, near log 6 here: no cancellation), mean over batches in float64
        assert b["train_ce"] == pytest.approx(a["train_ce"], rel=rel_bound(torch.float32, K_LOSS), abs=0)
        assert b["dev_loss"] == pytest.approx(a["dev_loss"], rel=rel_bound(torch.float32, K_LOSS), abs=0)
    w1 = load_checkpoint(str(tmp_path / "one" / "checkpoints" / "last.safetensors"))
    w2 = load_checkpoint(str(tmp_path / "two" / "checkpoints" / "last.safetensors"))
    assert w2.state["world_size"] == 2
    worst = max((_comparable(k, w1.model[k]) - _comparable(k, w2.model[k])).abs().max().item()
                for k in w1.model if _comparable(k, w1.model[k]).numel())
    # Not a rounding bound: Adam divides each gradient entry by its own running size, so rounding-level
    # differences of small entries become a fraction of a step (lr) of either sign. The runs must stay
    # within a tenth of one step; normalising the loss per rank instead of by the global batch moves
    # weights by ~5 steps (~5e-3) here.
    assert worst < LR / 10, worst
    # Rank 0 wrote the checkpoints: one of each, no temporary or per-rank files.
    assert sorted(os.listdir(tmp_path / "two" / "checkpoints")) == [
        "best.json", "best.safetensors", "last.json", "last.safetensors"]


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="torch.distributed with gloo is not available")
def test_ddp_trains_with_the_alignment_warmup(tmp_path):
    """The default model leaves the frame encoder without gradient (its vectors do not reach the
    loss) and warm-up epochs train MoA's objective alone: DDP must accept both."""
    corpus = generate_synthetic_corpus(tmp_path / "c", num_dialogues=8, seed=3, utterances=(3, 5),
                                       frames={"t": (2, 6), "a": (3, 7), "v": (2, 5)})
    flags = ["--d-model", "16", "--num-heads", "2", "--classifier-hidden", "16", "--epochs", "1", "--align-warmup", "1",
             "--batch-size", "4", "--device", "cpu", "--no-progress", "--no-plots"]
    m = _train(tmp_path / "two", corpus, 2, flags)
    assert m["world_size"] == 2 and m["epochs_run"] == 2 and m["best_epoch"] == 2
    history = json.loads((tmp_path / "two" / "history.json").read_text())
    assert history[0]["align_warmup"] and not history[1]["align_warmup"] and history[0]["train_align"] > 0
