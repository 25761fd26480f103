"""From raw conversation transcripts to a corpus: CSV reading, word-level text features, word intensity.

A text frame is one word (:func:`split_words`). :func:`convert_conversation_csv` reads MELD,
EmoryNLP or any conversation CSV (:func:`read_conversation_csv`), encodes every word offline
(:func:`get_encoder`: MiniLM, any local Hugging Face encoder or GloVe from the ``text`` extra, or
the dependency-free hashing baseline) and scores its intensity (VADER lexicon or an external
tagger's file), writing the native corpus format. Heavy dependencies (transformers for MiniLM and
``hf:``, the optional packages) load only when an encoder that needs them is created.
"""
from hotspot_erc.text.csv_reader import (PRESETS, ConversationTable, CsvFormatError, CsvLayout, make_layout,
                                         read_conversation_csv)
from hotspot_erc.text.encoders import (GloveEncoder, HashingEncoder, HFWordEncoder, MiniLMEncoder, MissingTextExtra,
                                       WordEncoder, get_encoder)
from hotspot_erc.text.lexicon import (LexiconScorer, TaggerFileError, read_tagger_file, vader_lexicon,
                                      write_word_file)
from hotspot_erc.text.mojibake import repair_mojibake
from hotspot_erc.text.words import split_words

_CONVERT = ("add_csv_arguments", "convert_conversation_csv", "run_csv_convert")


def __getattr__(name):
    # Imported on first use, so `python -m hotspot_erc.text.convert` does not find it pre-imported.
    if name in _CONVERT:
        from hotspot_erc.text import convert

        return getattr(convert, name)
    raise AttributeError(f"module 'hotspot_erc.text' has no attribute {name!r}")


__all__ = [
    "ConversationTable", "CsvFormatError", "CsvLayout", "GloveEncoder", "HashingEncoder", "HFWordEncoder",
    "LexiconScorer", "MiniLMEncoder", "MissingTextExtra", "PRESETS", "TaggerFileError", "WordEncoder",
    "add_csv_arguments", "convert_conversation_csv", "get_encoder", "make_layout", "read_conversation_csv",
    "read_tagger_file", "repair_mojibake", "run_csv_convert", "split_words", "vader_lexicon", "write_word_file",
]
