"""Checkpoints: round trip, atomic writes, and clear errors for every kind of bad file."""
import json
import os
import stat

import pytest
import torch
from conftest import seed_for
from torch import nn

from hotspot_erc.train.checkpoint import (CheckpointError, apply_model_state, apply_optimizer_state,
                                          load_checkpoint, save_checkpoint)


def _model(d_in=5, d_out=3):
    torch.manual_seed(seed_for(1))
    m = nn.Sequential(nn.Linear(d_in, 7), nn.GELU(), nn.Linear(7, d_out))
    m.register_buffer("bf16_buf", torch.randn(4).bfloat16())  # non-float32 dtypes survive too
    return m


def _trained(model):
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(8, model[0].in_features)).square().mean().backward()
        opt.step()
    return opt


def test_round_trip_model_optimizer_state(tmp_path):
    m = _model()
    opt = _trained(m)
    path = str(tmp_path / "ck.safetensors")
    cfg = {"run": {"model": {"d_model": 7}}, "label_names": ["a", "b", "c"]}
    save_checkpoint(path, m, cfg, {"epoch": 4, "history": [{"x": 1.5}]}, optimizer=opt)
    ck = load_checkpoint(path)
    assert ck.config == cfg and ck.state["epoch"] == 4 and ck.state["history"] == [{"x": 1.5}]
    m2 = _model()
    with torch.no_grad():
        for p in m2.parameters():
            p.add_(1.0)
    apply_model_state(m2, ck)
    for (k, a), (_, b) in zip(m.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, b), k
    opt2 = torch.optim.Adam(m2.parameters(), lr=1e-2)
    apply_optimizer_state(opt2, ck)
    # Same optimizer state => the next step gives identical weights.
    x = torch.randn(8, 5)
    for mm, oo in ((m, opt), (m2, opt2)):
        oo.zero_grad()
        mm(x).square().mean().backward()
        oo.step()
    for a, b in zip(m.parameters(), m2.parameters()):
        assert torch.equal(a, b)
    # The human-readable JSON copy of the config sits next to it; no temp files are left.
    side = json.loads((tmp_path / "ck.json").read_text())
    assert side["config"] == cfg
    assert sorted(os.listdir(tmp_path)) == ["ck.json", "ck.safetensors"]


def test_truncated_corrupt_foreign_missing(tmp_path):
    m = _model()
    path = str(tmp_path / "ck.safetensors")
    save_checkpoint(path, m, {"k": 1})
    raw = open(path, "rb").read()
    trunc = tmp_path / "trunc.safetensors"
    trunc.write_bytes(raw[: len(raw) - 40])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(str(trunc))
    flipped = bytearray(raw)
    flipped[-3] ^= 0xFF  # inside the tensor data: only the checksum can notice
    bad = tmp_path / "flip.safetensors"
    bad.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(str(bad))
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 5)
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(str(junk))
    from safetensors.torch import save_file

    foreign = str(tmp_path / "foreign.safetensors")
    save_file({"w": torch.zeros(2)}, foreign)
    with pytest.raises(CheckpointError, match="not a hotspot-erc checkpoint"):
        load_checkpoint(foreign)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(str(tmp_path / "absent.safetensors"))
    with pytest.raises(CheckpointError, match="folder"):
        load_checkpoint(str(tmp_path))


def test_mismatched_model_is_named(tmp_path):
    path = str(tmp_path / "ck.safetensors")
    save_checkpoint(path, _model(5, 3), {})
    ck = load_checkpoint(path)
    with pytest.raises(CheckpointError, match=r"shape mismatch: 0\.weight"):
        apply_model_state(_model(6, 3), ck)
    with pytest.raises(CheckpointError, match="unexpected"):
        apply_model_state(nn.Sequential(nn.Linear(5, 7)), ck)
    with pytest.raises(CheckpointError, match="no optimizer state"):
        apply_optimizer_state(torch.optim.Adam(_model().parameters()), ck)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores folder permissions")
def test_unwritable_folder_keeps_earlier_checkpoint(tmp_path):
    path = str(tmp_path / "ck.safetensors")
    m = _model()
    save_checkpoint(path, m, {"v": 1})
    before = open(path, "rb").read()
    with torch.no_grad():
        m[0].weight.add_(1)
    os.chmod(tmp_path, stat.S_IRUSR | stat.S_IXUSR)
    try:
        with pytest.raises(CheckpointError, match="cannot write"):
            save_checkpoint(path, m, {"v": 2})
    finally:
        os.chmod(tmp_path, stat.S_IRWXU)
    assert open(path, "rb").read() == before
    assert load_checkpoint(path).config == {"v": 1}


def test_failed_write_keeps_earlier_checkpoint(tmp_path, monkeypatch):
    """A crash in the middle of writing (simulated) leaves the old file and no temp file."""
    import hotspot_erc.train.checkpoint as ck

    path = str(tmp_path / "ck.safetensors")
    save_checkpoint(path, _model(), {"v": 1})

    def boom(filename, data):
        with open(filename, "wb") as fh:
            fh.write(data[:7])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ck, "_write_file", boom)
    with pytest.raises(CheckpointError, match="No space left"):
        save_checkpoint(path, _model(), {"v": 2})
    assert load_checkpoint(path).config == {"v": 1}
    assert sorted(os.listdir(tmp_path)) == ["ck.json", "ck.safetensors"]


def test_config_must_be_json(tmp_path):
    with pytest.raises(CheckpointError, match="JSON"):
        save_checkpoint(str(tmp_path / "x.safetensors"), _model(), {"bad": object()})


def test_folder_that_cannot_exist(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(CheckpointError, match="cannot write"):
        save_checkpoint(str(blocker / "ck.safetensors"), _model(), {})


def _rewrite_metadata(path, dst, change):
    """Copy a safetensors file with its header metadata changed by ``change(dict)``."""
    import struct

    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    change(header["__metadata__"])
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(dst, "wb") as fh:
        fh.write(struct.pack("<Q", len(text)) + text + raw[8 + n:])
    return str(dst)


def test_checksum_covers_settings_and_state(tmp_path):
    """Editing a stored setting (one that changes every prediction) is caught like a flipped bit."""
    path = str(tmp_path / "ck.safetensors")
    save_checkpoint(path, _model(), {"run": {"model": {"radius": 2, "num_windows": 2}}}, {"epoch": 3})
    edits = {
        "config": lambda m: m.update(config=m["config"].replace('"radius": 2', '"radius": 3')),
        "state": lambda m: m.update(state=m["state"].replace("3", "4")),
        "extra key": lambda m: m.update(note="hello"),
    }
    for what, change in edits.items():
        bad = _rewrite_metadata(path, tmp_path / f"bad-{what}.safetensors", change)
        with pytest.raises(CheckpointError, match="do not match the checksum"):
            load_checkpoint(bad)
    with pytest.raises(CheckpointError, match="not a number"):
        load_checkpoint(_rewrite_metadata(path, tmp_path / "v.safetensors", lambda m: m.update(format_version="two")))
    with pytest.raises(CheckpointError, match="newer than"):
        load_checkpoint(_rewrite_metadata(path, tmp_path / "n.safetensors", lambda m: m.update(format_version="99")))


def test_format_1_checkpoints_still_load(tmp_path):
    """Format 1 (checksum over the tensors only) is still read, with its own checksum rule."""
    from hotspot_erc.train.checkpoint import _digest

    path = str(tmp_path / "ck.safetensors")
    m = _model()
    save_checkpoint(path, m, {"v": 1}, with_rng=False)
    tensors = load_checkpoint(path).model
    old = _rewrite_metadata(path, tmp_path / "old.safetensors", lambda meta: meta.update(
        format_version="1", sha256=_digest({f"model/{k}": v for k, v in tensors.items()})))
    assert load_checkpoint(old).config == {"v": 1}


def test_checkpoint_without_newer_model_fields_loads_as_trained(tmp_path):
    """A checkpoint written before moa_queries / moa_input existed was a frame-query, encoder-input
    MoA model: it must load as that, not with today's defaults."""
    from hotspot_erc.nn.config import LEGACY_MODEL
    from hotspot_erc.nn.model import HotspotERC
    from hotspot_erc.train.config import RunConfig
    from hotspot_erc.train.model_io import load_model

    dims = {"t": 6, "a": 5, "v": 4}
    cfg = RunConfig()
    cfg.model.d_model, cfg.model.num_heads, cfg.model.num_speakers = 8, 2, 4
    for key, value in LEGACY_MODEL.items():  # what such a model was: every later field at its old meaning
        setattr(cfg.model, key, value)
    torch.manual_seed(seed_for(0))
    model = HotspotERC(dims, 3, config=cfg.model)
    run = cfg.to_dict()
    for key in LEGACY_MODEL:
        run["model"].pop(key)
    path = str(tmp_path / "old.safetensors")
    save_checkpoint(path, model, {"run": run, "dims": dims, "label_names": ["a", "b", "c"]})
    loaded, loaded_cfg, _ = load_model(path)
    assert (loaded.moa_queries, loaded.moa_input) == ("frames", "encoder")
    assert loaded_cfg.model.moa_queries == "frames"
    assert (loaded.hgf_join, loaded_cfg.model.hgf_gate_bias) == ("none", 0.0)
    # a config saved before hgf_join / hgf_gate_bias existed: moa_input "projected", neither field
    run["model"].update(moa_queries="peaks", moa_input="projected")
    cfg.model.moa_queries, cfg.model.moa_input = "peaks", "projected"
    torch.manual_seed(seed_for(0))
    model = HotspotERC(dims, 3, config=cfg.model)
    save_checkpoint(path, model, {"run": run, "dims": dims, "label_names": ["a", "b", "c"]})
    loaded, loaded_cfg, _ = load_model(path)
    assert (loaded.moa_input, loaded.hgf_join, loaded_cfg.model.hgf_gate_bias) == ("projected", "none", 0.0)
    assert RunConfig().model.moa_queries == "peaks"  # today's default differs: the fill is what matters
