"""A process killed with SIGKILL while it saves checkpoints in a loop never leaves a corrupt or
mismatched checkpoint: both files load, their header and tensors come from the same save, the
sidecar JSON is repaired when the kill left it missing or stale, and the temporary files of the
killed writer are removed by the next save."""
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from conftest import seed_for

from hotspot_erc.train.checkpoint import load_checkpoint, save_checkpoint, sidecar_path

WRITER = textwrap.dedent("""
    import sys
    import torch
    from hotspot_erc.train.checkpoint import save_checkpoint

    folder, k = sys.argv[1], int(sys.argv[2])
    model = torch.nn.Linear(512, 1024)  # 2 MB per save: kills land inside writes
    saves = 0
    while True:
        with torch.no_grad():
            model.weight.fill_(k)
            model.bias.fill_(k)
        name = "best" if k % 2 else "last"
        save_checkpoint(f"{folder}/{name}.safetensors", model, {"k": k}, {"k": k}, with_rng=False)
        saves += 1
        if saves == 2:  # both files exist from here on
            print("ready", flush=True)
        k += 1
""")


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_kill_during_save_leaves_loadable_checkpoints(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    rng = random.Random(seed_for(0))
    start = 0
    orphans = set()  # temporary files the kills left (a kill inside a write leaves one)
    for _ in range(4):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(folder), str(start)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
            time.sleep(rng.uniform(0.05, 0.4))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        start += 10_000  # the next writer's values never repeat the last one's
        orphans |= {n for n in os.listdir(folder) if n.startswith(".tmp-")}

        for name in ("best.safetensors", "last.safetensors"):
            ck = load_checkpoint(str(folder / name))
            k = ck.config["k"]
            assert ck.state == {"k": k}
            # Header and tensors come from the same save: an atomic rename, never a mix.
            assert all(torch.equal(t, torch.full_like(t, float(k))) for t in ck.model.values())
            side = json.loads(open(sidecar_path(str(folder / name))).read())  # present, repaired by the load
            assert side["config"] == {"k": k}

    # Whatever the kills left behind is temporary files only, which the next save removes.
    save_checkpoint(str(folder / "last.safetensors"), torch.nn.Linear(2, 2), {"k": -1}, {}, with_rng=False)
    names = sorted(os.listdir(folder))
    assert names == ["best.json", "best.safetensors", "last.json", "last.safetensors"], (names, orphans)
    print(f"temporary files left by the kills and removed: {len(orphans)}")


def test_stale_temp_files_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".tmp-{dead_pid}-abcd1234.safetensors"
    live = tmp_path / f".tmp-{os.getppid()}-abcd1234.json"  # our parent is alive: a save in progress
    legacy = tmp_path / ".tmp-k2j4h5g6.json"                 # pid-less name of format 1, a day old
    foreign = tmp_path / ".tmp-user-notes.txt"               # not a name we create
    for p in (stale, live, legacy, foreign):
        p.write_bytes(b"x")
    os.utime(legacy, (time.time() - 86400, time.time() - 86400))
    save_checkpoint(str(tmp_path / "ck.safetensors"), torch.nn.Linear(2, 2), {})
    names = set(os.listdir(tmp_path))
    assert stale.name not in names and legacy.name not in names
    assert live.name in names and foreign.name in names


def test_missing_or_edited_sidecar_is_rewritten_from_the_checkpoint(tmp_path):
    path = str(tmp_path / "best.safetensors")
    save_checkpoint(path, torch.nn.Linear(2, 2), {"radius": 2}, {"epoch": 1})
    os.unlink(sidecar_path(path))
    assert load_checkpoint(path).config == {"radius": 2}
    assert json.loads(open(sidecar_path(path)).read())["config"] == {"radius": 2}
    side = json.loads(open(sidecar_path(path)).read())
    side["config"]["radius"] = 5  # the sidecar is a copy, never a source of settings
    open(sidecar_path(path), "w").write(json.dumps(side))
    assert load_checkpoint(path).config == {"radius": 2}
    assert json.loads(open(sidecar_path(path)).read())["config"] == {"radius": 2}
