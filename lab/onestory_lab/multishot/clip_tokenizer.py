"""CLIP's byte-level BPE tokenizer, standard library only (the text side of ViCLIP).

Ported from OpenAI CLIP's `clip/simple_tokenizer.py` (MIT licence, Copyright (c) 2021 OpenAI), which
InternVid ships unchanged as `Data/InternVid/viclip/simple_tokenizer.py` in OpenGVLab/InternVideo
(Apache-2.0) and in the Hugging Face repo OpenGVLab/ViCLIP. Same vocabulary file
(`bpe_simple_vocab_16e6.txt.gz`), same merges, same ids.

Two dependencies of the original are replaced:
* `regex` and its pattern `<|startoftext|>|<|endoftext|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+`:
  `pieces` scans the text with the same alternatives, letters and numbers read from `unicodedata`
  categories (L*, N*); `regex`'s whitespace class is the standard one without U+001C..U+001F.
* `ftfy.fix_text` is used when ftfy is installed; without it the text is NFC-normalised and curly
  quotes, Latin ligatures and full-width ASCII are mapped as ftfy's defaults map them. Text that
  needs ftfy's other repairs (mojibake, control characters) then tokenizes differently:
  `pip install ftfy` for those.
"""
from __future__ import annotations

import gzip
import html
import re
import unicodedata
from functools import lru_cache
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import Tensor

SOT, EOT = "<|startoftext|>", "<|endoftext|>"
CONTRACTIONS = ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d")   # the pattern's order
NOT_SPACE = "\x1c\x1d\x1e\x1f"        # str.isspace() says yes, regex's \s says no
WHITESPACE_RUN = re.compile(r"[^\S\x1c-\x1f]+")
MERGES = 49152 - 256 - 2               # merges CLIP reads from the vocabulary file

# what ftfy's default fixes do to the characters captions commonly carry (used without ftfy)
_FALLBACK = str.maketrans({
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"',
    "\ufb00": "ff", "\ufb01": "fi", "\ufb02": "fl", "\ufb03": "ffi", "\ufb04": "ffl", "\ufb05": "st", "\ufb06": "st",
    **{c: c - 0xFEE0 for c in range(0xFF01, 0xFF5F)}, 0x3000: " ",
})


@lru_cache()
def bytes_to_unicode() -> dict[int, str]:
    """Every byte -> a printable character (the byte-level BPE alphabet)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def fix_text(text: str) -> str:
    try:
        import ftfy
    except ImportError:
        return unicodedata.normalize("NFC", text).translate(_FALLBACK)
    return ftfy.fix_text(text)


def clean(text: str) -> str:
    """basic_clean + whitespace_clean + lower, as CLIP's encode does."""
    text = html.unescape(html.unescape(fix_text(text))).strip()
    return WHITESPACE_RUN.sub(" ", text).strip().lower()


def _kind(c: str) -> str:
    """'L' letter, 'N' number, ' ' whitespace, '.' anything else."""
    cat = unicodedata.category(c)
    if cat[0] in "LN":
        return cat[0]
    return " " if c.isspace() and c not in NOT_SPACE else "."


def pieces(text: str) -> list[str]:
    """The pre-tokenisation `re.findall(pat, text)` of CLIP: alternatives tried in the pattern's order
    at each position; letters and other symbols in runs, every digit alone, whitespace skipped."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        special = next((s for s in (SOT, EOT) + CONTRACTIONS if text.startswith(s, i)), None)
        if special:
            out.append(special)
            i += len(special)
            continue
        kind = _kind(text[i])
        if kind == " ":
            i += 1
            continue
        j = i + 1
        if kind != "N":
            while j < n and _kind(text[j]) == kind:
                j += 1
        out.append(text[i:j])
        i = j
    return out


class Tokenizer:
    """CLIP's SimpleTokenizer on a `bpe_simple_vocab_16e6.txt.gz` (or any file in its format)."""

    def __init__(self, bpe_path: str | Path):
        with gzip.open(bpe_path) as f:
            lines = f.read().decode("utf-8").split("\n")
        merges = [tuple(line.split()) for line in lines[1:MERGES + 1]]
        alphabet = list(bytes_to_unicode().values())
        vocab = alphabet + [c + "</w>" for c in alphabet] + ["".join(m) for m in merges] + [SOT, EOT]
        self.encoder = {t: i for i, t in enumerate(vocab)}
        self.decoder = {i: t for t, i in self.encoder.items()}
        self.ranks = {m: i for i, m in enumerate(merges)}
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {v: k for k, v in self.byte_encoder.items()}
        self.cache = {SOT: SOT, EOT: EOT}
        self.sot, self.eot = self.encoder[SOT], self.encoder[EOT]

    def bpe(self, token: str) -> str:
        """Merge the characters of one piece by rank; the last one carries the end-of-word mark."""
        if token in self.cache:
            return self.cache[token]
        word = list(token[:-1]) + [token[-1] + "</w>"]
        while len(word) > 1:
            pairs = {(a, b) for a, b in zip(word, word[1:])}
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        out = " ".join(word)
        self.cache[token] = out
        return out

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for piece in pieces(clean(text)):
            piece = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
            ids.extend(self.encoder[t] for t in self.bpe(piece).split(" "))
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        text = "".join(self.decoder[i] for i in ids)
        return bytearray(self.byte_decoder[c] for c in text).decode("utf-8", errors="replace").replace("</w>", " ")

    def __call__(self, texts: Sequence[str], context_length: int, truncate: bool = True) -> Tensor:
        """"n context_length" int64 ids: start, text, end, zero padding; an over-long text is cut and
        its last id replaced by the end id (CLIP's `tokenize(..., truncate=True)`)."""
        out = torch.zeros(len(texts), context_length, dtype=torch.long)
        for i, text in enumerate(texts):
            ids = [self.sot] + self.encode(text) + [self.eot]
            if len(ids) > context_length:
                if not truncate:
                    raise ValueError(f"text {i} has {len(ids)} tokens, more than the context length {context_length}")
                ids = ids[:context_length]
                ids[-1] = self.eot
            out[i, :len(ids)] = torch.tensor(ids)
        return out


def load_tokenizer(path: str | Path, vocab_size: Optional[int] = None) -> Tokenizer:
    """A Tokenizer whose vocabulary must match the text tower's embedding rows when given."""
    tok = Tokenizer(path)
    if vocab_size is not None and len(tok.encoder) != vocab_size:
        raise ValueError(f"{path} gives {len(tok.encoder)} token ids but the text tower has {vocab_size} "
                         "embeddings; use the bpe_simple_vocab_16e6.txt.gz that came with the model")
    return tok
