"""Tokenizer and text encoder for the story-world caption grammar.

Choice: a *fixed* encoder - a deterministic Gaussian embedding per word (seeded) plus a
sinusoidal position code, zeroed at padding. Why:
* it plays the role of the paper's frozen umT5 (the paper fine-tunes the DiT, not T5): the DiT's
  own `text_embedding` MLP and cross-attention, and the selector's text projection, are what
  learn to read captions, exactly the parameters that learn in production;
* features are a pure function of (caption, dim, seed), so they can be cached, are identical in
  every process and across ablation runs, and cannot drift when another module trains;
* the grammar is tiny (~60 words) and position-coded, so a non-contextual encoder loses nothing
  the cross-attention cannot recover (word order gives the binding "the first figure walks left").
Padding positions are exactly zero, as Wan zero-pads umT5 context to its text length.
`TextEncoder(trainable=True)` turns the word table into a parameter if joint training is wanted.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

from .grammar import caption_words, vocabulary

SPECIALS: tuple[str, ...] = ("<pad>", "<unk>")
PAD_ID = 0
UNK_ID = 1
DEFAULT_MAX_LENGTH = 40  # longest grammar caption is 28 tokens (two new characters + new room)


class Tokenizer:
    """Word-level tokenizer; vocab = specials + grammar.vocabulary() in its fixed order."""

    def __init__(self, max_length: int = DEFAULT_MAX_LENGTH) -> None:
        self.max_length = max_length
        self.vocab: tuple[str, ...] = SPECIALS + vocabulary()
        self._index = {w: i for i, w in enumerate(self.vocab)}

    def __len__(self) -> int:
        return len(self.vocab)

    def encode(self, caption: str) -> tuple[Tensor, Tensor]:
        """-> (ids "l" long, mask "l" bool, True = real token), padded to max_length.
        Unknown words map to <unk> (user-typed prompts must not crash the demo)."""
        words = caption_words(caption)
        if len(words) > self.max_length:
            raise ValueError(f"caption has {len(words)} tokens > max_length={self.max_length}; "
                             f"raise Tokenizer(max_length=...)")
        ids = torch.full((self.max_length,), PAD_ID, dtype=torch.long)
        ids[:len(words)] = torch.tensor([self._index.get(w, UNK_ID) for w in words], dtype=torch.long)
        mask = torch.zeros(self.max_length, dtype=torch.bool)
        mask[:len(words)] = True
        return ids, mask

    def encode_batch(self, captions: Sequence[str]) -> tuple[Tensor, Tensor]:
        """-> (ids "b l", mask "b l")."""
        pairs = [self.encode(c) for c in captions]
        return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])

    def decode(self, ids: Tensor) -> str:
        return " ".join(self.vocab[i] for i in ids.tolist() if i != PAD_ID)


def sinusoidal(length: int, dim: int) -> Tensor:
    """"l d" standard transformer position code."""
    pos = torch.arange(length, dtype=torch.float64)[:, None]
    freq = torch.exp(-math.log(10000.0) * torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    pe = torch.zeros(length, dim, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq)[:, : dim // 2]
    return pe.float()


class TextEncoder(nn.Module):
    """ids "b l" (+ mask "b l") -> features "b l d_t"; also accepts unbatched "l"."""

    def __init__(self, dim: int = 128, vocab_size: int | None = None,
                 max_length: int = DEFAULT_MAX_LENGTH, seed: int = 0, trainable: bool = False) -> None:
        super().__init__()
        vocab_size = vocab_size or len(Tokenizer(max_length))
        g = torch.Generator().manual_seed(seed)
        table = torch.randn(vocab_size, dim, generator=g)
        table[PAD_ID] = 0.0
        self.dim = dim
        if trainable:
            self.table = nn.Parameter(table)
        else:
            self.register_buffer("table", table, persistent=False)
        self.register_buffer("positions", sinusoidal(max_length, dim), persistent=False)

    def forward(self, ids: Tensor, mask: Tensor | None = None) -> Tensor:
        squeeze = ids.ndim == 1
        ids = ids[None] if squeeze else ids
        mask = (ids != PAD_ID) if mask is None else (mask[None] if squeeze else mask)
        x = self.table[ids] + self.positions[: ids.shape[1]]
        x = x * mask[..., None].to(x.dtype)
        return x[0] if squeeze else x


def encode_captions(captions: Sequence[str], dim: int = 128, seed: int = 0,
                    max_length: int = DEFAULT_MAX_LENGTH) -> tuple[Tensor, Tensor]:
    """Convenience: captions -> (features "b l d_t", mask "b l") with a fixed encoder."""
    tok = Tokenizer(max_length)
    ids, mask = tok.encode_batch(captions)
    with torch.no_grad():
        return TextEncoder(dim, len(tok), max_length, seed)(ids, mask), mask
