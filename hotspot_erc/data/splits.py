"""Split names, their aliases and the dev-split rule, for every reader and converter.

A corpus has the splits ``train``, ``dev`` and ``test``. Sources spell dev in several ways
(MOSEI's and COGMEN's pickles say ``valid``; CSVs and file names say ``validation`` or ``val``):
:func:`canonical_split` maps each of them to ``dev`` and anything else unknown to None, so a reader
can refuse it (an unknown split name is an error, never a fourth split).

Sources without a dev split (IEMOCAP's 9-tuple, a CSV without dev rows) get one carved from the
front of train by :func:`carve_dev`, the one rule behind every ``--dev-fraction``: the first
``floor(fraction * n)`` train dialogues in source order become dev, at least one and at most
``n - 1`` when ``fraction > 0`` and there are ``n >= 2`` train dialogues (so neither split ends up
empty), none when ``fraction == 0``. Rounding down keeps IEMOCAP's dev split identical to COGMEN's
preprocessing (12 of 120 at 0.1); the product is taken with a tolerance so that 120 * 0.1, which is
12.000000000000002 in floating point, counts as 12.
"""
from __future__ import annotations

import math
from typing import Sequence, TypeVar

SPLITS = ("train", "dev", "test")
DEV_ALIASES = ("valid", "validation", "val")
ALIASES = {alias: "dev" for alias in DEV_ALIASES}
# Words that name a split in a file name (``train_sent_emo.csv``, ``emorynlp_dev_final.csv``).
SPLIT_WORDS = {"train": ("train",), "dev": ("dev", *DEV_ALIASES), "test": ("test",)}
DEFAULT_DEV_FRACTION = 0.1

T = TypeVar("T")


def canonical_split(name) -> str | None:
    """``train``/``dev``/``test`` for a split name or an alias of dev (any case, outer spaces
    ignored); None for anything else."""
    if not isinstance(name, str):
        return None
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    return key if key in SPLITS else None


def check_fraction(value, name: str = "dev_fraction") -> float:
    """A share in [0, 1); anything else (1.5, -1, NaN, a string) is refused rather than clamped."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
    return float(value)


def dev_count(num_train: int, fraction: float) -> int:
    """How many of ``num_train`` train dialogues become dev under ``fraction`` (module docstring)."""
    fraction = check_fraction(fraction)
    if fraction == 0.0 or num_train < 2:
        return 0
    k = math.floor(num_train * fraction + 1e-9)
    return min(max(k, 1), num_train - 1)


def carve_dev(train: Sequence[T], fraction: float) -> tuple[list[T], list[T]]:
    """``(dev, train)``: the first :func:`dev_count` items of ``train`` (in the given order) and
    the rest."""
    k = dev_count(len(train), fraction)
    return list(train[:k]), list(train[k:])
