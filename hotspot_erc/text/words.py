"""The word split that defines text frames: one frame per word.

Every encoder, lexicon and external score file is aligned to this one split, so it lives in one
place. Words keep inner apostrophes ("don't", "Monica's"); runs of punctuation are words of their
own, because "!", "?" and "..." carry emotion in dialogue.
"""
from __future__ import annotations

import re
import unicodedata

_WORD = re.compile(r"\w+(?:['’]\w+)*|[^\w\s]+")


def split_words(text: str) -> list[str]:
    """The words (text frames) of one utterance, in order."""
    return _WORD.findall(unicodedata.normalize("NFC", text))


def normalize_word(word: str) -> str:
    """Lookup form for vocabularies: lower case, typographic apostrophes made plain."""
    return word.lower().replace("’", "'")
