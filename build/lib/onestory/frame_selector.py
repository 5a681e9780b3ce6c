"""The learned Frame Selector (OneStory paper §4.2): caption-conditioned scores per memory frame.

Shapes use einops notation: ``f`` memory frames, ``l`` caption tokens, ``m`` queries, ``n``
φ_V tokens per frame, ``w`` the selector's width.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from einops import repeat
from torch import Tensor, nn

from .blocks import patch_blocks
from .errors import OneStoryError, ShapeError
from .latent import LatentNormalization

if TYPE_CHECKING:  # pragma: no cover - typing only
    from .memory import MemoryBank

__all__ = ["MemoryEncoding", "FrameSelector"]


class _CrossAttention(nn.Module):
    """Pre-norm multi-head cross-attention with a residual, no FFN (paper Fig. 3c)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm_q = nn.LayerNorm(width)
        self.norm_kv = nn.LayerNorm(width)
        self.q = nn.Linear(width, width)
        self.k = nn.Linear(width, width)
        self.v = nn.Linear(width, width)
        self.o = nn.Linear(width, width)

    def forward(self, x: Tensor, ctx: Tensor, mask: Tensor | None) -> Tensor:
        """x "b m w", ctx "b n w", mask "b n" bool (True = attend) or None; or, without the
        batch dim and without a mask, x "m w", ctx "n w" (fewer ops for one memory bank)."""
        # view/transpose instead of einops: the same layout, without einops' per-call parsing,
        # which is a visible share of this tiny module's cost.
        *lead, m, w = x.shape
        n, hd = ctx.shape[-2], w // self.heads
        b = lead or [1]   # a batch dim even then: without one SDPA takes its slower math path
        kv = self.norm_kv(ctx)
        q = self.q(self.norm_q(x)).view(*b, m, self.heads, hd).transpose(-3, -2)
        k = self.k(kv).view(*b, n, self.heads, hd).transpose(-3, -2)
        v = self.v(kv).view(*b, n, self.heads, hd).transpose(-3, -2)
        attn_mask = None if mask is None else mask[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return x + self.o(out.transpose(-3, -2).reshape(*lead, m, w))


@dataclass(frozen=True, eq=False)
class MemoryEncoding:
    """What the Frame Selector computes from the memory alone, independent of the caption.

    tokens: "b f n w" M1 = φ_V(memory), n tokens per frame
    pooled: "b f w"   φ_P(mean over the n tokens of M1)

    Both are per frame: frame i's rows depend on frame i only.
    """

    tokens: Tensor
    pooled: Tensor


class FrameSelector(nn.Module):
    """Learned Frame Selector (paper §4.2).

    Q  = m learnable queries of width ``width`` (the selector's own width, not the DiT's)
    Q' = Q + Attn(Q, φ_T(text))                 φ_T: Linear(text_dim -> width)
    M1 = φ_V(memory)                            φ_V: Conv2d(C -> width, kernel = stride =
                                                     spatial_stride), replicate-padded
    Q''= Q' + Attn(Q', M1 tokens of all frames)
    s  = φ_P(M1) · LN(Q'')ᵀ / sqrt(width)       φ_P: per-frame mean pool -> Linear(width, width)
    S  = mean over the m queries                -> "b f"

    With ``max_shots > 0`` (an addition to the paper, see docs/results.md) the
    selector also knows the order of the shots: learned embeddings of each frame's shot ordinal
    (0 = the first shot; ordinals ≥ max_shots share the last slot) are added to that frame's M1
    tokens and to its φ_P vector before the memory attention. Captions refer to what came
    before by order ("the second figure", "back in the first room"), which a content-only,
    permutation-equivariant scorer cannot resolve. The embeddings start at zero (the plain
    selector) and are applied after `encode_memory`, so per-frame encodings stay caption- and
    order-independent.

    The final LayerNorm and the 1/sqrt(width) keep initial scores O(1) whatever the width
    (L_sel regresses them onto cosine-scale pseudo-labels in [-1, 1]).

    ``forward`` = `encode_memory` (caption-independent, per frame) + `score_encoded`;
    `score_bank` scores a `MemoryBank`.
    """

    def __init__(self, latent_channels: int = 16, text_dim: int = 4096, width: int = 1024,
                 num_queries: int = 16, heads: int = 8, spatial_stride: int = 8,
                 max_shots: int = 0):
        super().__init__()
        for name, value in (("latent_channels", latent_channels), ("text_dim", text_dim),
                            ("width", width), ("num_queries", num_queries), ("heads", heads),
                            ("spatial_stride", spatial_stride)):
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise OneStoryError(f"FrameSelector {name}={value!r} must be an integer >= 1")
        if isinstance(max_shots, bool) or int(max_shots) != max_shots or max_shots < 0:
            raise OneStoryError(f"FrameSelector max_shots={max_shots!r} must be an integer >= 0 "
                                "(0 = no shot-order embedding)")
        if width % heads:
            raise OneStoryError(f"FrameSelector width={width} must be divisible by heads={heads}")
        self.latent_channels = int(latent_channels)
        self.text_dim = int(text_dim)
        self.width = int(width)
        self.num_queries = int(num_queries)
        self.heads = int(heads)
        self.spatial_stride = int(spatial_stride)
        self.queries = nn.Parameter(torch.randn(num_queries, width) * 0.02)
        self.text_proj = nn.Linear(text_dim, width)                        # φ_T
        self.text_attn = _CrossAttention(width, heads)
        self.memory_proj = nn.Conv2d(latent_channels, width, spatial_stride,
                                     stride=spatial_stride)                 # φ_V
        self.memory_attn = _CrossAttention(width, heads)
        self.frame_proj = nn.Linear(width, width)                           # φ_P
        self.out_norm = nn.LayerNorm(width)
        self.max_shots = int(max_shots)
        if self.max_shots:
            self.shot_tokens = nn.Embedding(self.max_shots, width)    # added to M1 tokens
            self.shot_pooled = nn.Embedding(self.max_shots, width)    # added to φ_P(M1)
            nn.init.zeros_(self.shot_tokens.weight)
            nn.init.zeros_(self.shot_pooled.weight)

    def extra_repr(self) -> str:
        return (f"latent_channels={self.latent_channels}, text_dim={self.text_dim}, "
                f"width={self.width}, num_queries={self.num_queries}, heads={self.heads}, "
                f"spatial_stride={self.spatial_stride}, max_shots={self.max_shots}")

    def config(self) -> dict:
        return {"latent_channels": self.latent_channels, "text_dim": self.text_dim,
                "width": self.width, "num_queries": self.num_queries, "heads": self.heads,
                "spatial_stride": self.spatial_stride, "max_shots": self.max_shots}

    @property
    def uses_shot_order(self) -> bool:
        return self.max_shots > 0

    def _check_shots(self, shots: Tensor | None, lead: tuple[int, ...]) -> Tensor | None:
        """shots: the 0-based shot ordinal of every memory frame, shape ``lead`` ("b f" or "f")."""
        if not self.max_shots:
            return None      # an order-free selector ignores ordinals
        if shots is None:
            raise OneStoryError(
                "this FrameSelector was trained with shot order (max_shots="
                f"{self.max_shots}): pass shots, the 0-based shot ordinal of every memory frame "
                "(e.g. from MemoryBank.records[i].shot)")
        shots = torch.as_tensor(shots)
        if tuple(shots.shape) != tuple(lead):
            raise ShapeError(f"shots has shape {tuple(shots.shape)}; expected {tuple(lead)} "
                             "(one shot ordinal per memory frame)")
        if shots.dtype.is_floating_point or shots.dtype == torch.bool:
            raise OneStoryError(f"shots must be integer shot ordinals, got dtype {shots.dtype}")
        if shots.numel() and int(shots.min()) < 0:
            raise OneStoryError("shots holds a negative ordinal; shot ordinals count from 0")
        return shots.to(self.queries.device).clamp(max=self.max_shots - 1)

    def _check(self, memory, text, text_mask, frame_mask):
        if not isinstance(memory, Tensor) or memory.ndim != 5:
            shape = tuple(memory.shape) if isinstance(memory, Tensor) else type(memory).__name__
            raise ShapeError(f"memory has shape {shape}; expected 'b f c h w' model-space latents "
                             "(add a batch dim with memory[None] for a single bank)")
        b, f = self._check_memory_shape(*memory.shape)
        return self._check_text(b, f, text, text_mask, frame_mask)

    def _check_memory_shape(self, b: int, f: int, c: int, h: int, w: int) -> tuple[int, int]:
        if f == 0:
            raise ShapeError("memory is empty (f = 0): add at least one shot to the memory bank "
                             "before selecting frames")
        if c != self.latent_channels:
            raise ShapeError(f"memory has {c} channels but the FrameSelector was built for "
                             f"latent_channels={self.latent_channels}; use latents of the matching "
                             "VAE or a selector trained for it")
        if h == 0 or w == 0:
            raise ShapeError(f"memory frames are {h}x{w}: latent frames need h, w >= 1")
        return b, f

    def _check_text(self, b: int, f: int, text, text_mask, frame_mask):
        if not isinstance(text, Tensor) or text.ndim != 3:
            shape = tuple(text.shape) if isinstance(text, Tensor) else type(text).__name__
            raise ShapeError(f"text has shape {shape}; expected caption tokens 'b l d_t'")
        if text.shape[-1] != self.text_dim:
            raise ShapeError(f"text (caption tokens) has width {text.shape[-1]} but the "
                             f"FrameSelector expects text_dim={self.text_dim}: pass the text "
                             "encoder's token features (umT5: 4096-d, the CONDITIONING tensor), "
                             "or build the selector with the matching text_dim")
        if text.shape[0] != b:
            raise ShapeError(f"text has batch {text.shape[0]} but memory has batch {b}")
        if text.shape[1] == 0:
            raise ShapeError("text has no tokens (l = 0): encode the caption first")
        if text_mask is not None:
            if tuple(text_mask.shape) != (b, text.shape[1]):
                raise ShapeError(f"text_mask has shape {tuple(text_mask.shape)}; expected "
                                 f"{(b, text.shape[1])} ('b l', True = real token)")
            text_mask = text_mask.bool()
            if not text_mask.any(dim=1).all():
                raise OneStoryError("text_mask masks every token of some caption: each caption "
                                    "needs at least one real token")
        if frame_mask is not None:
            if tuple(frame_mask.shape) != (b, f):
                raise ShapeError(f"frame_mask has shape {tuple(frame_mask.shape)}; expected "
                                 f"{(b, f)} ('b f', True = real frame)")
            frame_mask = frame_mask.bool()
            if not frame_mask.any(dim=1).all():
                raise OneStoryError("frame_mask masks every frame of some memory: each batch item "
                                    "needs at least one real memory frame")
        return text_mask, frame_mask

    def forward(self, memory: Tensor, text: Tensor, text_mask: Tensor | None = None,
                frame_mask: Tensor | None = None, shots: Tensor | None = None) -> Tensor:
        """memory "b f c h w" (model space), text "b l d_t", masks True = real, shots "b f"
        (shot ordinals; needed iff ``max_shots > 0``) -> scores "b f".

        Masked (padded) frames take no part in the attention and get score 0.
        """
        text_mask, frame_mask = self._check(memory, text, text_mask, frame_mask)
        shots = self._check_shots(shots, tuple(memory.shape[:2]))
        return self._score(self.encode_memory(memory), text, text_mask, frame_mask, shots)

    def encode_memory(self, memory: Tensor) -> MemoryEncoding:
        """memory "b f c h w" (model space) -> its `MemoryEncoding` (M1 and φ_P per frame);
        "f c h w" (no batch dim) gives "f n w" and "f w"."""
        ref = self.queries
        memory = memory.to(device=ref.device, dtype=ref.dtype)
        *lead, f, c, h, w = memory.shape
        s = self.spatial_stride
        x = memory.reshape(-1, c, h, w)
        ph, pw = (-h) % s, (-w) % s
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        # φ_V as block reshape + linear with the Conv2d weights (kernel == stride): the same
        # result as the conv, without CPU conv setup that dominated the selector's cost.
        blocks = patch_blocks(x, s, s)                                 # "(b f) n (c s1 s2)"
        m1 = F.linear(blocks.flatten(0, 1), self.memory_proj.weight.flatten(1), self.memory_proj.bias)
        m1 = m1.view(*lead, f, blocks.shape[1], self.width)           # M1 "b f n w"
        return MemoryEncoding(m1, self.frame_proj(m1.mean(dim=-2)))   # φ_P(M1) "b f w"

    def score_encoded(self, encoding: MemoryEncoding, text: Tensor, text_mask: Tensor | None = None,
                      frame_mask: Tensor | None = None, shots: Tensor | None = None) -> Tensor:
        """Scores "b f" of an encoded memory for caption tokens ``text`` "b l d_t" (masks as in
        `forward`); ``score_encoded(encode_memory(m), t)`` equals ``forward(m, t)``."""
        tokens = encoding.tokens
        if tokens.ndim != 4 or tokens.shape[-1] != self.width or \
                tuple(encoding.pooled.shape) != (*tokens.shape[:2], self.width):
            raise ShapeError(f"encoding has tokens {tuple(tokens.shape)} and pooled "
                             f"{tuple(encoding.pooled.shape)}; expected 'b f n {self.width}' and "
                             f"'b f {self.width}' from this selector's encode_memory")
        b, f = tokens.shape[:2]
        if f == 0:
            raise ShapeError("encoding is empty (f = 0): add at least one shot to the memory bank "
                             "before selecting frames")
        text_mask, frame_mask = self._check_text(b, f, text, text_mask, frame_mask)
        shots = self._check_shots(shots, (b, f))
        return self._score(encoding, text, text_mask, frame_mask, shots)

    def _score(self, encoding: MemoryEncoding, text: Tensor, text_mask: Tensor | None,
               frame_mask: Tensor | None, shots: Tensor | None = None) -> Tensor:
        """Batched ("b ..." inputs, masks allowed) or, for one bank, unbatched (tokens "f n w",
        pooled "f w", text "l d_t", no masks) -> scores "b f" or "f". ``shots`` ("b f" / "f",
        checked) adds the shot-order embeddings."""
        ref = self.queries
        text = text.to(device=ref.device, dtype=ref.dtype)
        m1, g = encoding.tokens, encoding.pooled
        if shots is not None:
            m1 = m1 + self.shot_tokens(shots).unsqueeze(-2)
            g = g + self.shot_pooled(shots)
        *lead, f, n, _ = m1.shape

        q = self.queries.expand(*lead, -1, -1) if lead else self.queries
        tmask = None if text_mask is None else text_mask.to(ref.device)
        q = self.text_attn(q, self.text_proj(text), tmask)                      # Q'

        fmask = None if frame_mask is None else frame_mask.to(ref.device)
        kmask = None if fmask is None else repeat(fmask, "b f -> b (f n)", n=n)
        q = self.memory_attn(q, m1.reshape(*lead, f * n, -1), kmask)             # Q''

        # mean over queries of g·LN(q_m) = g·(mean of LN(q_m)): one product per frame, not m
        q_mean = self.out_norm(q).mean(dim=-2)                                   # "b w" / "w"
        scores = torch.matmul(g, q_mean.unsqueeze(-1)).squeeze(-1) / math.sqrt(self.width)
        if fmask is not None:
            scores = scores.masked_fill(~fmask, 0.0)
        return scores

    # ---- scoring a memory bank -------------------------------------------------------------

    @torch.no_grad()
    def score_bank(self, bank: "MemoryBank", text: Tensor,
                   normalization: LatentNormalization | None = None) -> Tensor:
        """Scores "f" (float32, CPU) of every frame of ``bank`` for caption tokens ``text``
        "l d_t"; the same values as ``forward`` on the bank in model space (no gradient)."""
        norm = normalization or LatentNormalization.identity(bank.channels)
        self._check_memory_shape(1, bank.num_frames, *bank.frames.shape[1:])
        self._check_text(1, bank.num_frames, text[None], None, None)
        encoding = self.encode_memory(norm.to_model(bank.frames, channel_dim=1))
        shots = (self._check_shots(torch.tensor([r.shot for r in bank.records]), (bank.num_frames,))
                 if self.max_shots else None)
        return self._score(encoding, text, None, None, shots).float().cpu()
