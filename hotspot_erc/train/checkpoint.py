"""Checkpoints: safetensors tensors + JSON config, written atomically, never pickled.

One checkpoint is one ``.safetensors`` file. Its tensors are the model's state dict
(``model/<name>``), the optimizer's per-parameter state (``optim/<index>/<key>``) and the RNG
states (``rng/...``); its header metadata holds JSON: the run config (enough to rebuild the
model), the training state (epoch, history, early-stopping counters, optimizer hyper-parameters,
LR-schedule state) and a SHA-256 over every header entry and every tensor byte, so a truncated or
bit-flipped file, or an edited setting (a radius, a window count), is reported as such instead of
loading a model that silently predicts something else. The file is self-contained: a
human-readable copy of config and state is written next to it as ``<name>.json`` (with the same
SHA-256), but nothing reads settings from that copy; a missing or stale copy is rewritten from
the checkpoint when it is loaded.

Writes go to a temporary file in the same folder, are flushed to disk and then renamed over the
target, so a crash, a kill or a full / read-only disk never destroys the previous checkpoint.
Temporary files carry the writer's process id; ones left by a killed writer are removed by the
next save into the same folder (:func:`remove_stale_temp_files`).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
from dataclasses import dataclass, field

import torch

FORMAT = "hotspot-erc-checkpoint"
# 2: the checksum also covers the header (config, state, optimizer meta); 1 covered tensors only.
FORMAT_VERSION = 2
_TMP_PREFIX = ".tmp-"
# Ours: .tmp-<pid>-<random>.<ext>; before pids were added: .tmp-<random>.<ext>.
_TMP_OWN = re.compile(r"^\.tmp-(\d+)-[A-Za-z0-9_]+\.(safetensors|json)$")
_TMP_LEGACY = re.compile(r"^\.tmp-[A-Za-z0-9_]{8}\.(safetensors|json)$")
_STALE_SECONDS = 3600.0


class CheckpointError(RuntimeError):
    """A checkpoint cannot be written, read or applied; the message says which file and why."""


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` returns."""

    path: str
    config: dict
    state: dict
    model: dict[str, torch.Tensor]
    optim: dict[str, torch.Tensor] = field(default_factory=dict)
    rng: dict[str, torch.Tensor] = field(default_factory=dict)


# ----------------------------------------------------------------------------- hashing

def _tensor_bytes(t: torch.Tensor) -> bytes:
    t = t.detach().cpu().contiguous().reshape(-1)
    return t.view(torch.uint8).numpy().tobytes() if t.numel() else b""


def _digest(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> str:
    """SHA-256 of the tensors and (format 2) of every header entry except the checksum itself."""
    h = hashlib.sha256()
    if metadata is not None:
        for key in sorted(k for k in metadata if k != "sha256"):
            val = metadata[key].encode()
            h.update(f"meta|{key}|{len(val)}|".encode())
            h.update(val)
    for name in sorted(tensors):
        t = tensors[name]
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(_tensor_bytes(t))
    return h.hexdigest()


# ----------------------------------------------------------------------------- optimizer state

def _flatten_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for key, val in st.items():
            if isinstance(val, torch.Tensor):
                tensors[f"optim/{idx}/{key}"] = val
            else:
                scalars.setdefault(str(idx), {})[key] = val
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for name, t in tensors.items():
        _, idx, key = name.split("/", 2)
        state.setdefault(int(idx), {})[key] = t
    for idx, vals in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(vals)
    return {"state": state, "param_groups": meta["param_groups"]}


# ----------------------------------------------------------------------------- writing

def _json(obj, what: str) -> str:
    try:
        return json.dumps(obj, sort_keys=True)
    except TypeError as exc:
        raise CheckpointError(f"the {what} of a checkpoint must be JSON-serialisable: {exc}") from exc


def rng_state() -> dict[str, torch.Tensor]:
    """Torch RNG states (CPU and every visible CUDA device) as tensors."""
    out = {"rng/cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"rng/cuda/{i}"] = s
    return out


def set_rng_state(rng: dict[str, torch.Tensor]) -> None:
    if "rng/cpu" in rng:
        torch.set_rng_state(rng["rng/cpu"].to(torch.uint8))
    cuda = sorted((k for k in rng if k.startswith("rng/cuda/")), key=lambda k: int(k.rsplit("/", 1)[1]))
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([rng[k].to(torch.uint8) for k in cuda])


def save_checkpoint(path: str, model: torch.nn.Module, config: dict, state: dict | None = None,
                    optimizer: torch.optim.Optimizer | None = None, with_rng: bool = True) -> str:
    """Write ``model`` (+ optimizer, RNG, ``state``) and ``config`` to ``path`` atomically.

    Raises :class:`CheckpointError` when the folder cannot be written; any earlier file at
    ``path`` is then left untouched.
    """
    from safetensors.torch import save as save_bytes

    tensors: dict[str, torch.Tensor] = {}
    for name, t in model.state_dict().items():
        tensors[f"model/{name}"] = t
    optim_meta = None
    if optimizer is not None:
        opt_tensors, optim_meta = _flatten_optimizer(optimizer)
        tensors.update(opt_tensors)
    if with_rng:
        tensors.update(rng_state())
    # safetensors refuses shared storage and non-contiguous views: give every entry its own copy.
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "config": _json(config, "config"),
        "state": _json(state or {}, "training state"),
        "optim": _json(optim_meta, "optimizer state"),
    }
    metadata["sha256"] = _digest(tensors, metadata)
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise CheckpointError(f"cannot write checkpoint {path}: it is a folder")
    try:
        os.makedirs(folder, exist_ok=True)
        remove_stale_temp_files(folder)
        tmp = _temp_path(folder, ".safetensors")
    except OSError as exc:
        raise CheckpointError(f"cannot write a checkpoint in {folder}: {exc.strerror or exc}") from exc
    from safetensors import SafetensorError

    try:
        # Serialised in memory and written by us: safetensors' own file writer goes through a
        # ".tmpXXXXXX" file of its Rust side, which a kill leaves behind under a name that
        # remove_stale_temp_files cannot attribute to a dead writer.
        _write_file(tmp, save_bytes(tensors, metadata=metadata))
        os.replace(tmp, path)
        _fsync_dir(folder)
        _write_sidecar(path, config, state or {}, metadata["sha256"])
    except (OSError, SafetensorError) as exc:
        # safetensors reports a full disk as SafetensorError("... IoError ..."), not OSError.
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise CheckpointError(f"cannot write checkpoint {path}: {reason}") from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _write_file(path: str, data: bytes) -> None:
    """Write and fsync ``data`` (a full disk raises OSError here)."""
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _temp_path(folder: str, suffix: str) -> str:
    fd, tmp = tempfile.mkstemp(prefix=f"{_TMP_PREFIX}{os.getpid()}-", suffix=suffix, dir=folder)
    os.close(fd)
    return tmp


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def remove_stale_temp_files(folder: str) -> list[str]:
    """Delete temporary checkpoint files a killed writer left in ``folder``; returns their names.

    Only names this module creates are considered: ``.tmp-<pid>-*`` whose process is gone (or that
    are a day old, in case the pid was reused), and the pid-less names of format 1 after an hour.
    A file being written by a live process is never touched.
    """
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    now = time.time()
    for name in names:
        own, legacy = _TMP_OWN.match(name), _TMP_LEGACY.match(name)
        if not own and not legacy:
            continue
        full = os.path.join(folder, name)
        try:
            age = now - os.stat(full).st_mtime
        except OSError:
            continue
        stale = age > 24 * _STALE_SECONDS if own else age > _STALE_SECONDS
        if own and not stale:
            stale = not _pid_alive(int(own.group(1)))
        if stale:
            try:
                os.unlink(full)
                removed.append(name)
            except OSError:
                pass
    return removed


def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def sidecar_path(path: str) -> str:
    return os.path.splitext(path)[0] + ".json"


def _write_sidecar(path: str, config: dict, state: dict, digest: str) -> None:
    _write_json_atomic(sidecar_path(path), {"config": config, "state": state, "sha256": digest})


def _sync_sidecar(path: str, config: dict, state: dict, digest: str) -> None:
    """Rewrite ``<name>.json`` when a kill left it missing or it no longer matches the checkpoint
    (best effort: a read-only folder keeps what it has; the checkpoint itself is authoritative)."""
    side = sidecar_path(path)
    try:
        with open(side) as fh:
            current = json.load(fh)
        if current == {"config": config, "state": state, "sha256": digest}:
            return
    except (OSError, ValueError):
        pass
    try:
        _write_sidecar(path, config, state, digest)
    except OSError:
        pass


def _write_json_atomic(path: str, obj) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    tmp = _temp_path(folder, ".json")
    try:
        with open(tmp, "w") as fh:
            json.dump(obj, fh, indent=1, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# ----------------------------------------------------------------------------- reading

def load_checkpoint(path: str) -> Checkpoint:
    """Read and verify a checkpoint. Missing, truncated, corrupt or foreign files raise
    :class:`CheckpointError` with the reason."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    if not os.path.exists(path):
        raise CheckpointError(f"no checkpoint at {path}")
    if os.path.isdir(path):
        raise CheckpointError(f"{path} is a folder; pass the .safetensors checkpoint file inside it")
    try:
        with safe_open(path, framework="pt") as fh:
            metadata = fh.metadata() or {}
        tensors = load_file(path)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({exc})") from exc
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a safetensors file but not a hotspot-erc checkpoint "
                              f"(no '{FORMAT}' header)")
    raw_version = metadata.get("format_version", "")
    if not re.fullmatch(r"[0-9]{1,6}", raw_version):
        raise CheckpointError(f"checkpoint {path} is corrupt: its format_version {raw_version!r} is not a number")
    version = int(raw_version)
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format {version}, newer than "
                              f"this hotspot-erc ({FORMAT_VERSION}); upgrade hotspot-erc")
    if version < 1:
        raise CheckpointError(f"checkpoint {path} is corrupt: format_version {version} does not exist")
    digest = _digest(tensors, metadata if version >= 2 else None)
    if metadata.get("sha256") != digest:
        what = "tensor data" if version < 2 else "settings or tensor data"
        raise CheckpointError(f"checkpoint {path} is corrupt: its {what} do not match the checksum "
                              "written with it (edited or damaged)")
    try:
        config = json.loads(metadata["config"])
        state = json.loads(metadata.get("state", "{}"))
        optim_meta = json.loads(metadata.get("optim", "null"))
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} has an unreadable JSON header ({exc})") from exc
    if not isinstance(config, dict) or not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} has an unreadable JSON header (config and state must be objects)")
    _sync_sidecar(path, config, state, digest)
    ck = Checkpoint(path=path, config=config, state=state, model={}, rng={})
    optim = {}
    for name, t in tensors.items():
        group, _, rest = name.partition("/")
        if group == "model":
            ck.model[rest] = t
        elif group == "optim":
            optim[name] = t
        elif group == "rng":
            ck.rng[name] = t
    ck.optim = _unflatten_optimizer(optim, optim_meta) if optim_meta is not None else {}
    return ck


def apply_model_state(model: torch.nn.Module, ck: Checkpoint) -> None:
    """Load the checkpoint's weights into ``model``, naming every missing, unexpected or
    mis-shaped tensor when they do not fit (for example a model built for other feature dims)."""
    own = model.state_dict()
    missing = sorted(set(own) - set(ck.model))
    unexpected = sorted(set(ck.model) - set(own))
    shapes = [f"{k}: checkpoint {tuple(ck.model[k].shape)} vs model {tuple(own[k].shape)}"
              for k in sorted(set(own) & set(ck.model)) if own[k].shape != ck.model[k].shape]
    if missing or unexpected or shapes:
        parts = []
        if shapes:
            parts.append("shape mismatch: " + "; ".join(shapes[:5]) + (" ..." if len(shapes) > 5 else ""))
        if missing:
            parts.append("missing: " + ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else ""))
        if unexpected:
            parts.append("unexpected: " + ", ".join(unexpected[:5]) + (" ..." if len(unexpected) > 5 else ""))
        raise CheckpointError(f"checkpoint {ck.path} does not fit this model ({' | '.join(parts)})")
    model.load_state_dict(ck.model)


def apply_optimizer_state(optimizer: torch.optim.Optimizer, ck: Checkpoint) -> None:
    if not ck.optim:
        raise CheckpointError(f"checkpoint {ck.path} holds no optimizer state (it cannot be resumed)")
    try:
        optimizer.load_state_dict(ck.optim)
    except (ValueError, KeyError) as exc:
        raise CheckpointError(f"optimizer state in {ck.path} does not fit this model ({exc})") from exc
