"""Per-word emotion intensity for text frames: a sentiment lexicon, or scores an external tagger wrote.

- Lexicon: VADER's valence ratings (MIT-licensed ``vaderSentiment`` package), read from the
  package's own ``vader_lexicon.txt``. A word's intensity is ``|mean valence| / 4`` in [0, 1]
  (ratings run from -4 to +4); words outside the lexicon score 0. Valence magnitude, not sign:
  a hotspot is where emotion is strong, whichever emotion it is.
- External tagger (as the paper does with an LLM): export the words with :func:`write_word_file`,
  let the tagger mark them, and read its answer with :func:`read_tagger_file`. One JSON object per
  line with ``utterance_id`` and either ``scores`` (one number >= 0 per word, aligned with
  ``words``) or ``hot_words`` (the words the tagger marked, each scoring 1; or a
  ``{"word": score}`` object). Mistakes are reported with file and line.
"""
from __future__ import annotations

import json
import math
import os
from typing import Iterable, Mapping, NamedTuple, Sequence

import numpy as np

from hotspot_erc.text.words import normalize_word

VADER_SCALE = 4.0


def vader_lexicon() -> dict[str, float]:
    """VADER's word -> mean valence table (needs ``vaderSentiment``: the ``text`` extra)."""
    from importlib import resources

    from hotspot_erc.text.encoders import _require

    _require("vaderSentiment", "vaderSentiment", "VADER lexicon",
             instead="use --intensity tagger (an external tagger's file) or none")
    table = {}
    text = resources.files("vaderSentiment").joinpath("vader_lexicon.txt").read_text(encoding="utf-8")
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) >= 2 and parts[0]:
            table[parts[0]] = float(parts[1])
    return table


class LexiconScorer:
    """Word intensity ``min(|valence| / scale, 1)`` from a word -> valence table (default VADER)."""

    def __init__(self, lexicon: Mapping[str, float] | None = None, scale: float = VADER_SCALE, name: str = "vader"):
        self.lexicon = dict(vader_lexicon() if lexicon is None else lexicon)
        self.scale = float(scale)
        self.name = name if lexicon is None or name != "vader" else "custom"

    def describe(self) -> dict:
        return {"name": "lexicon", "lexicon": self.name, "entries": len(self.lexicon), "scale": self.scale}

    def score(self, words: Sequence[str]) -> np.ndarray:
        out = np.zeros(len(words), dtype=np.float32)
        for i, w in enumerate(words):
            v = self.lexicon.get(normalize_word(w), self.lexicon.get(w))
            if v is not None:
                out[i] = min(abs(v) / self.scale, 1.0)
        return out


class TaggerFileError(ValueError):
    """An external tagger's score file does not match the corpus; names the file and line."""


def write_word_file(path: str | os.PathLike, utterances: Iterable[tuple[str, str, Sequence[str]]]) -> str:
    """Write ``(utterance_id, text, words)`` as JSON lines for an external tagger to fill in."""
    path = os.fspath(path)
    with open(path, "w", encoding="utf-8") as fh:
        for uid, text, words in utterances:
            fh.write(json.dumps({"utterance_id": uid, "text": text, "words": list(words)}, ensure_ascii=False) + "\n")
    return path


def read_tagger_file(path: str | os.PathLike) -> dict[str, "TaggerEntry"]:
    """utterance id -> :class:`TaggerEntry` for every line of a tagger's JSON-lines answer."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise TaggerFileError(f"{path}: no such tagger score file")
    out: dict[str, TaggerEntry] = {}
    with open(path, encoding="utf-8-sig") as fh:
        for n, line in enumerate(fh, 1):
            where = f"{path}:{n}"
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise TaggerFileError(f"{where}: not a JSON object ({exc.msg})") from None
            if not isinstance(obj, dict) or not isinstance(obj.get("utterance_id"), str):
                raise TaggerFileError(f"{where}: each line must be an object with a string 'utterance_id'")
            if ("scores" in obj) == ("hot_words" in obj):
                raise TaggerFileError(f"{where}: give exactly one of 'scores' (one per word) or 'hot_words'")
            uid = obj["utterance_id"]
            if uid in out:
                raise TaggerFileError(f"{where}: utterance {uid!r} already scored at {out[uid].where}")
            kind = "scores" if "scores" in obj else "hot_words"
            out[uid] = TaggerEntry(kind, obj[kind], where)
    return out


class TaggerEntry(NamedTuple):
    kind: str  # "scores" or "hot_words"
    value: object
    where: str  # "file:line"

    def word_scores(self, words: Sequence[str]) -> np.ndarray:
        """Per-word intensity of the utterance whose words are ``words``."""
        out = np.zeros(len(words), dtype=np.float32)
        if self.kind == "scores":
            spec = self.value
            if not isinstance(spec, list) or not all(_is_number(x) for x in spec):
                raise TaggerFileError(f"{self.where}: 'scores' must be a list of numbers, got {spec!r}")
            if len(spec) != len(words):
                raise TaggerFileError(f"{self.where}: {len(spec)} scores for {len(words)} words "
                                      f"{list(words)[:12]} (scores align with the exported 'words')")
            if any(x < 0 for x in spec):
                raise TaggerFileError(f"{self.where}: scores must be >= 0, got {spec}")
            out[:] = spec
            return out
        spec = self.value
        if isinstance(spec, list) and all(isinstance(x, str) for x in spec):
            spec = {w: 1.0 for w in spec}
        if not isinstance(spec, dict):
            raise TaggerFileError(f"{self.where}: 'hot_words' must be a list of words or a word -> score object, "
                                  f"got {spec!r}")
        marks = {}
        for w, s in spec.items():
            if not _is_number(s) or s < 0:
                raise TaggerFileError(f"{self.where}: score of hot word {w!r} must be a finite number >= 0, got {s!r}")
            marks[normalize_word(w)] = float(s)
        for i, w in enumerate(words):
            out[i] = marks.get(normalize_word(w), 0.0)
        return out


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
