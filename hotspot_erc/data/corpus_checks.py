"""Consistency checks shared by the corpus writer and reader, so a corpus is held to the same rules
when it is written and when it is opened: offsets, finite values, split membership. Each takes
a ``fail(problem)`` callable that raises the caller's error (the writer's names the dialogue, the
reader's the file).
"""
from __future__ import annotations

import numpy as np

# Rows per chunk when scanning or copying frames: bounded memory whatever the corpus size.
CHUNK_ROWS = 1 << 16


def check_offsets(off, count, fname, what, fail, total=None, total_what=""):
    """``off`` holds ``count + 1`` non-decreasing offsets from 0 to ``total``."""
    if len(off) != count + 1:
        fail(fname, f"{len(off)} entries, expected {count + 1} (one more than the {count} {what})")
    if off[0] != 0:
        fail(fname, f"must start at 0, starts at {int(off[0])}")
    step = np.diff(off)
    if (step < 0).any():
        i = int(np.flatnonzero(step < 0)[0])
        fail(fname, f"offsets out of order: entry {i + 1} ({int(off[i + 1])}) < entry {i} ({int(off[i])})")
    if total is not None and off[-1] != total:
        fail(fname, f"last offset {int(off[-1])} out of range: there are {total} {total_what}")


def check_finite(arr, fname, fail):
    """No NaN/Inf in the rows of ``arr``, read ``CHUNK_ROWS`` at a time (memory maps stay unread)."""
    for lo in range(0, arr.shape[0], CHUNK_ROWS):
        chunk = np.asarray(arr[lo:lo + CHUNK_ROWS])
        ok = np.isfinite(chunk)
        if not ok.all():
            row = lo + int(np.flatnonzero(~ok.all(axis=1))[0])
            fail(fname, f"row {row} contains NaN or Inf")


def check_splits(splits, dialogue_ids, fail) -> dict[str, np.ndarray]:
    """``splits`` maps split name to a list of dialogue indices, each in range and in one split
    only, once. Returns the indices as int64 arrays."""
    out, owner = {}, {}
    count = len(dialogue_ids)
    for name, members in splits.items():
        if not isinstance(members, list) or any(not isinstance(x, (int, np.integer)) or isinstance(x, bool)
                                                for x in members):
            fail(f"split {name!r} must be a list of dialogue indices")
        for x in members:
            x = int(x)
            if not 0 <= x < count:
                fail(f"split {name!r} has dialogue index {x}, outside 0..{count - 1}")
            if x in owner:
                where = "twice in" if owner[x] == name else f"in both {owner[x]!r} and"
                fail(f"dialogue {x} ({dialogue_ids[x]!r}) appears {where} split {name!r}")
            owner[x] = name
        out[name] = np.asarray(members, dtype=np.int64)
    return out
