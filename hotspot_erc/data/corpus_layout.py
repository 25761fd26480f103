"""Where a corpus lives: its file names and versions, the errors of the format, and which files
in a folder belong to a corpus (what ``overwrite`` may delete, and which folders it refuses).

The layout itself is described in :mod:`hotspot_erc.data.format`.
"""
from __future__ import annotations

import json
import os
import re

FORMAT_NAME = "hotspot-erc-corpus"
FORMAT_VERSION = 1
FEATURE_DTYPES = ("float32", "float16")


class CorpusFormatError(ValueError):
    """A corpus directory is missing a file or holds inconsistent data; the message names both."""


class CorpusWriteError(OSError):
    """The output folder cannot be written (a file, read-only, full disk); nothing half-written stays."""


class OutputRefused(ValueError):
    """The output folder is (or contains, or lies inside) an input: writing there is refused."""


class RecordError(ValueError):
    """A dialogue or split handed to the corpus writer is inconsistent (label out of range, frames
    of the wrong size, NaN features, a dialogue in two splits): a problem of the source data, so
    the CLI exits 3. The message names the dialogue, utterance and modality."""


# What a writer (or the synthetic generator) creates in a corpus folder: the only names that
# overwrite=True ever deletes.
_CORPUS_FILES = re.compile(r"^(meta\.json|ids\.json|splits\.json|dialogue_offsets\.npy|speaker\.npy|label\.npy|"
                           r"score\.npy|synthetic_truth\.npz|(features|offsets|intensity)_[A-Za-z_][A-Za-z0-9_]*\.npy)$")
_SCRATCH_FILES = re.compile(r"^(features|intensity)_[A-Za-z_][A-Za-z0-9_]*\.bin$")
_SCRATCH = ".partial"


def holds_corpus(folder: str) -> bool:
    """True when ``folder`` holds a hotspot-erc corpus (its meta.json) or a writer's interrupted one."""
    try:
        with open(os.path.join(folder, "meta.json")) as fh:
            meta = json.load(fh)
        if isinstance(meta, dict) and meta.get("format") == FORMAT_NAME:
            return True
    except (OSError, ValueError):
        pass
    try:
        names = os.listdir(folder)
    except OSError:
        return False
    return _SCRATCH in names and all(n == _SCRATCH or _CORPUS_FILES.match(n) for n in names)


def remove_corpus(folder: str) -> list[str]:
    """Delete the corpus files in ``folder`` (never anything else); returns the names left in place.

    Raises FileExistsError when the non-empty folder does not hold a corpus: a destructive option
    only deletes what a writer wrote.
    """
    names = sorted(os.listdir(folder))
    if names and not holds_corpus(folder):
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        raise FileExistsError(f"{folder} is not empty and does not hold a hotspot-erc corpus ({shown}); "
                              "--overwrite only replaces a corpus: choose an empty or new folder")
    kept = []
    for name in names:
        full = os.path.join(folder, name)
        if name == _SCRATCH and os.path.isdir(full) and not os.path.islink(full):
            for inner in os.listdir(full):
                if _SCRATCH_FILES.match(inner):
                    os.unlink(os.path.join(full, inner))
            try:
                os.rmdir(full)
            except OSError:
                kept.append(name)
        elif _CORPUS_FILES.match(name) and os.path.isfile(full) and not os.path.islink(full):
            os.unlink(full)
        else:
            kept.append(name)
    return kept


def check_not_overlapping(out_dir: str | os.PathLike, inputs) -> None:
    """Refuse an output folder that is an input, lies inside one, or contains one: writing (and
    --overwrite) there would destroy the data being converted."""
    out = os.path.realpath(os.fspath(out_dir))
    for src in inputs:
        if src is None:
            continue
        real = os.path.realpath(os.fspath(src))
        if out == real:
            raise OutputRefused(f"the output folder {out_dir} is the input {src}; choose another output folder")
        if real.startswith(out.rstrip(os.sep) + os.sep):
            raise OutputRefused(f"the output folder {out_dir} contains the input {src}; choose a folder that does "
                             "not hold the data being converted")
        if out.startswith(real.rstrip(os.sep) + os.sep):
            raise OutputRefused(f"the output folder {out_dir} lies inside the input {src}; choose a folder outside it")
