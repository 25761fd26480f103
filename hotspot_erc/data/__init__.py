"""Corpora on disk, synthetic conversations, readers of existing data sets, batching and
conversation graphs."""
from hotspot_erc.data.cogmen import read_cogmen
from hotspot_erc.data.convert import convert
from hotspot_erc.data.dataset import (Batch, DialogueDataset, DialogueItem, LengthBucketSampler,
                                      collate_dialogues, make_loader)
from hotspot_erc.data.format import (Corpus, CorpusFormatError, CorpusWriteError, CorpusWriter, DialogueRecord,
                                     OutputRefused, open_corpus, write_corpus)
from hotspot_erc.data.graph import ConversationGraph, build_conversation_graph, conversation_graph_fn
from hotspot_erc.data.iemocap import ReaderError, read_iemocap
from hotspot_erc.data.mosei import read_mosei
from hotspot_erc.data.safe_pickle import UnreadablePickleError, UnsafePickleError, safe_load
from hotspot_erc.data.synthetic import generate_synthetic_corpus
from hotspot_erc.data.synthetic_align import generate_alignment_corpus

__all__ = [
    "Batch", "ConversationGraph", "Corpus", "CorpusFormatError", "CorpusWriteError", "CorpusWriter",
    "DialogueDataset", "DialogueItem", "DialogueRecord", "LengthBucketSampler", "OutputRefused", "ReaderError",
    "UnreadablePickleError", "UnsafePickleError",
    "build_conversation_graph", "collate_dialogues", "conversation_graph_fn", "convert",
    "generate_alignment_corpus", "generate_synthetic_corpus", "make_loader", "open_corpus", "read_cogmen",
    "read_iemocap", "read_mosei", "safe_load", "write_corpus",
]
