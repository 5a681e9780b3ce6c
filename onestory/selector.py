"""Frame selection (OneStory paper §4.2): score every memory frame, keep the top K.

* `FrameSelector` - the learned, caption-conditioned scorer of the paper.
* Training-free scorers for when no trained selector exists: ``recency``, ``novelty``,
  ``sink_recent`` (StoryMem's memory sink + recent window) and ``uniform``.
* `top_k` turns scores into a `Selection` (hard top-K on detached scores, pins and excludes
  honoured). Because the selection is a list of indices and the conditioner reads the raw
  memory latents, the generation loss never reaches the selector: it is trained by L_sel only.

Shapes use einops notation: ``f`` memory frames, ``l`` caption tokens, ``m`` queries.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Sequence

import torch
import torch.nn.functional as F
from einops import repeat
from torch import Tensor, nn

from .conditioner import patch_blocks
from .derived import ParamSnapshot
from .errors import OneStoryError, ShapeError
from .latent import LatentNormalization

if TYPE_CHECKING:  # pragma: no cover - typing only
    from .memory import MemoryBank

SCORERS = ("learned", "recency", "novelty", "sink_recent", "uniform")
DEFAULT_K = 9

__all__ = ["SCORERS", "DEFAULT_K", "Selection", "top_k", "MemoryEncoding", "FrameSelector",
           "score_frames", "select"]


# --------------------------------------------------------------------------------------------
# Selection and top-K
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Selection:
    """Result of a selection over a memory of F frames.

    scores: "f" float32 CPU, detached; one finite score per memory frame (excluded frames keep
            their score, they are simply never kept).
    kept:   memory indices ranked best first: pinned frames first, then by score; ties go to
            the later frame.
    scorer: name of the scorer that produced ``scores``.
    """

    scores: Tensor
    kept: tuple[int, ...]
    scorer: str

    def __post_init__(self):
        scores = torch.as_tensor(self.scores)
        if scores.ndim != 1:
            raise ShapeError(f"Selection.scores has shape {tuple(scores.shape)}; expected 'f'")
        scores = scores.detach().to(device="cpu", dtype=torch.float32).contiguous()
        if not torch.isfinite(scores).all():
            raise OneStoryError("Selection.scores contains NaN or inf: scores must be finite")
        kept = tuple(operator.index(i) for i in self.kept)
        f = scores.numel()
        if len(set(kept)) != len(kept) or any(i < 0 or i >= f for i in kept):
            raise OneStoryError(f"Selection.kept={kept} must hold distinct indices in 0..{f - 1}")
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "kept", kept)
        object.__setattr__(self, "scorer", str(self.scorer))

    @classmethod
    def _checked(cls, scores: Tensor, kept: tuple[int, ...], scorer: str) -> "Selection":
        """For `top_k`, which has already established everything `__post_init__` checks
        (finite float32 CPU scores, distinct in-range int indices): skips the second pass."""
        selection = object.__new__(cls)
        object.__setattr__(selection, "scores", scores)
        object.__setattr__(selection, "kept", kept)
        object.__setattr__(selection, "scorer", str(scorer))
        return selection

    @property
    def num_frames(self) -> int:
        return self.scores.numel()

    def __len__(self) -> int:
        return len(self.kept)

    def to_json(self) -> dict:
        """JSON-able summary (story files, UI payloads)."""
        return {"scorer": self.scorer, "num_frames": self.num_frames, "kept": list(self.kept),
                "scores": [float(s) for s in self.scores.tolist()]}

    @staticmethod
    def from_json(data: dict) -> "Selection":
        try:
            return Selection(torch.tensor(data["scores"], dtype=torch.float32),
                             tuple(data["kept"]), data["scorer"])
        except (KeyError, TypeError) as exc:
            raise OneStoryError(f"selection JSON is missing or has a malformed field ({exc}); "
                                "expected keys scorer, kept, scores") from None


def _all_finite(values: Tensor) -> bool:
    # one tensor op (torch.isfinite(x).all() is five): this runs on every selection
    return all(map(math.isfinite, values.tolist()))


def _flags(values: Iterable[bool] | None, f: int, name: str) -> list[bool]:
    if values is None:
        return [False] * f
    if isinstance(values, Tensor):
        values = values.reshape(-1).tolist()
    out = list(map(bool, values))
    if len(out) != f:
        raise ShapeError(f"{name} has {len(out)} entries but there are {f} scores: give one flag "
                         "per memory frame")
    return out


def _check_k(k) -> int:
    try:
        if isinstance(k, bool):
            raise TypeError
        k = operator.index(k)
    except TypeError:
        raise OneStoryError(f"k={k!r} must be an integer >= 0 (number of memory frames to "
                            "keep)") from None
    if k < 0:
        raise OneStoryError(f"k={k} must be >= 0 (number of memory frames to keep)")
    return k


def top_k(scores: Tensor, k: int, pinned: Sequence[bool] | None = None,
          excluded: Sequence[bool] | None = None, scorer: str = "learned") -> Selection:
    """Hard top-K over ``scores`` "f" (detached first: no gradient flows through a selection).

    * ``k < 0`` is an error; ``k`` larger than the number of selectable (not excluded) frames is
      clamped to it - asking for more memory than exists is not an error, the conditioner's
      budget decides how many kept frames are actually used.
    * Pinned frames are always kept (so ``len(kept) = max(k, #pinned)`` after clamping) and
      ranked first; excluded frames are never kept (a frame both pinned and excluded is
      excluded: exclusion is the stronger user intent).
    * Ranking is by score, ties broken by the later frame (higher index) first.
    """
    if not isinstance(scores, Tensor):
        scores = torch.as_tensor(scores, dtype=torch.float32)
    if scores.ndim != 1:
        raise ShapeError(f"scores has shape {tuple(scores.shape)}; expected 'f' (one score per "
                         "memory frame)")
    k = _check_k(k)
    values = scores.detach().float().cpu().contiguous()
    if not _all_finite(values):
        raise OneStoryError("scores contains NaN or inf: every memory frame needs a finite score")
    f = values.numel()
    pin = _flags(pinned, f, "pinned")
    exc = _flags(excluded, f, "excluded")
    # Best first, ties to the later frame: a stable descending sort of the reversed scores keeps
    # equal scores in reversed (= later frame first) order.
    order = (f - 1) - torch.sort(values.flip(0), descending=True, stable=True).indices
    if not any(pin) and not any(exc):
        return Selection._checked(values, tuple(order[:k].tolist()), scorer)
    pin_t = torch.tensor(pin, dtype=torch.bool)[order]
    exc_t = torch.tensor(exc, dtype=torch.bool)[order]
    pinned_ids = order[pin_t & ~exc_t].tolist()
    others = order[~pin_t & ~exc_t].tolist()
    kept = pinned_ids + others[:max(0, k - len(pinned_ids))]
    return Selection._checked(values, tuple(kept), scorer)


# --------------------------------------------------------------------------------------------
# learned selector
# --------------------------------------------------------------------------------------------

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

    Both are per frame: frame i's rows depend on frame i only, so encodings of different
    frames can be computed separately and stacked (this is what the bank cache relies on).
    """

    tokens: Tensor
    pooled: Tensor


@dataclass(frozen=True, eq=False)
class _BankCache:
    """Encodings of the frames of the last bank scored, keyed by `MemoryBank.frame_keys`.

    Valid only for the weights they were computed with (`weights`: the same tensors, storages
    and autograd versions, see `onestory.derived`) and the same normalization, dtype and device.
    """

    keys: tuple[int, ...]
    tokens: Tensor            # "f n w"
    pooled: Tensor            # "f w"
    normalization: LatentNormalization
    weights: ParamSnapshot


class FrameSelector(nn.Module):
    """Learned Frame Selector (paper §4.2).

    Q  = m learnable queries of width ``width`` (the selector's own width, not the DiT's)
    Q' = Q + Attn(Q, φ_T(text))                 φ_T: Linear(text_dim -> width)
    M1 = φ_V(memory)                            φ_V: Conv2d(C -> width, kernel = stride =
                                                     spatial_stride), replicate-padded
    Q''= Q' + Attn(Q', M1 tokens of all frames)
    s  = φ_P(M1) · LN(Q'')ᵀ / sqrt(width)       φ_P: per-frame mean pool -> Linear(width, width)
    S  = mean over the m queries                -> "b f"

    With ``max_shots > 0`` (an addition to the paper, see docs/results.md "Session 5") the
    selector also knows the order of the shots: learned embeddings of each frame's shot ordinal
    (0 = the first shot; ordinals ≥ max_shots share the last slot) are added to that frame's M1
    tokens and to its φ_P vector before the memory attention. Captions refer to what came
    before by order ("the second figure", "back in the first room"), which a content-only,
    permutation-equivariant scorer cannot resolve. The embeddings start at zero (the plain
    selector) and are applied after `encode_memory`, so per-frame encodings stay caption- and
    order-independent and the bank cache is unaffected.

    The final LayerNorm and the 1/sqrt(width) keep initial scores O(1) whatever the width
    (L_sel regresses them onto cosine-scale pseudo-labels in [-1, 1]).

    ``forward`` = `encode_memory` (caption-independent, per frame) + `score_encoded`.
    `score_bank` scores a `MemoryBank` and keeps the encodings of its frames for the next call
    (see `score_bank`); nothing of that cache is part of the state dict.
    """

    #: The bank cache is skipped when one bank's encodings would exceed this many bytes.
    memory_cache_max_bytes: int = 256 * 2**20

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
        self._bank_cache: _BankCache | None = None

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

    # ---- scoring a memory bank, with the per-frame encodings kept across calls ---------------

    def clear_memory_cache(self) -> None:
        """Forget the encodings kept by `score_bank`. Needed for correctness only after writing
        weights through ``param.data``, which bypasses the version counters the cache follows
        (see `onestory.derived`)."""
        self._bank_cache = None

    def cached_frame_keys(self) -> tuple[int, ...]:
        """`MemoryBank.frame_keys` of the frames whose encodings `score_bank` keeps."""
        cache = getattr(self, "_bank_cache", None)
        return () if cache is None else cache.keys

    def _cache_weights(self) -> tuple[Tensor, ...]:
        return (self.memory_proj.weight, self.memory_proj.bias, self.frame_proj.weight,
                self.frame_proj.bias)

    def _cache_usable(self, cache: _BankCache | None, norm: LatentNormalization) -> bool:
        if cache is None or cache.normalization != norm:
            return False
        ref = self.queries
        if cache.tokens.dtype != ref.dtype or cache.tokens.device != ref.device:
            return False
        # Version counters and storages, not a comparison of values: that read 1.5x the φ_V
        # weights on every selection. They follow optimizer steps, load_state_dict, .to() and
        # .data swaps; writes through .data are not seen (then: clear_memory_cache()).
        return cache.weights.matches(self._cache_weights())

    @torch.no_grad()
    def score_bank(self, bank: "MemoryBank", text: Tensor,
                   normalization: LatentNormalization | None = None) -> Tensor:
        """Scores "f" (float32, CPU) of every frame of ``bank`` for caption tokens ``text``
        "l d_t"; the same values as ``forward`` on the bank in model space (no gradient).

        The encodings of the bank's frames are kept, keyed by `MemoryBank.frame_keys`: the next
        call only encodes frames it has not seen (a new shot, a swapped frame). The cache holds
        the frames of the last bank scored and nothing else, is dropped when the weights, the
        normalization, the dtype or the device change, and is skipped when it would exceed
        `memory_cache_max_bytes`.
        """
        norm = normalization or LatentNormalization.identity(bank.channels)
        self._check_memory_shape(1, bank.num_frames, *bank.frames.shape[1:])
        self._check_text(1, bank.num_frames, text[None], None, None)
        keys = bank.frame_keys()
        cache = getattr(self, "_bank_cache", None)
        if not self._cache_usable(cache, norm):
            cache = None
        if cache is not None and cache.keys == keys:
            tokens, pooled = cache.tokens, cache.pooled
        else:
            old_keys = () if cache is None else cache.keys
            if old_keys and keys[:len(old_keys)] == old_keys:
                # the common case, a shot appended to the bank scored last: no per-key lookups
                hit = list(range(len(old_keys))) + [-1] * (len(keys) - len(old_keys))
                miss = list(range(len(old_keys), len(keys)))
            else:
                rows = {key: i for i, key in enumerate(old_keys)}
                hit = [rows.get(key, -1) for key in keys]
                miss = [i for i, r in enumerate(hit) if r < 0]
            n_old = len(keys) - len(miss)
            if miss:
                lo, hi = miss[0], miss[-1] + 1
                frames = bank.frames[lo:hi] if hi - lo == len(miss) else bank.frames[miss]
                new = self.encode_memory(norm.to_model(frames, channel_dim=1))
            if not miss:                        # frames dropped or reordered: gather
                sel = torch.tensor(hit, device=cache.tokens.device)
                tokens, pooled = cache.tokens[sel], cache.pooled[sel]
            elif n_old == 0:
                tokens, pooled = new.tokens, new.pooled
            elif hit[:n_old] == list(range(n_old)):       # appended frames: one concatenation
                tokens = torch.cat([cache.tokens[:n_old], new.tokens])
                pooled = torch.cat([cache.pooled[:n_old], new.pooled])
            else:
                tokens = cache.tokens.new_empty((len(keys), *cache.tokens.shape[1:]))
                pooled = cache.pooled.new_empty((len(keys), *cache.pooled.shape[1:]))
                dev = tokens.device
                old = [i for i, r in enumerate(hit) if r >= 0]
                old_t = torch.tensor(old, device=dev)
                src_t = torch.tensor([hit[i] for i in old], device=dev)
                miss_t = torch.tensor(miss, device=dev)
                tokens[old_t], pooled[old_t] = cache.tokens[src_t], cache.pooled[src_t]
                tokens[miss_t], pooled[miss_t] = new.tokens, new.pooled
            nbytes = tokens.numel() * tokens.element_size() + pooled.numel() * pooled.element_size()
            if nbytes <= self.memory_cache_max_bytes:
                weights = cache.weights if cache is not None else ParamSnapshot.of(self._cache_weights())
                self._bank_cache = _BankCache(keys, tokens, pooled, norm, weights)
            else:
                self._bank_cache = None
        shots = (self._check_shots(torch.tensor([r.shot for r in bank.records]), (bank.num_frames,))
                 if self.max_shots else None)
        return self._score(MemoryEncoding(tokens, pooled), text, None, None, shots).float().cpu()


# --------------------------------------------------------------------------------------------
# training-free scorers and selection on a bank
# --------------------------------------------------------------------------------------------

def _rank_scores(order: Sequence[int], f: int) -> Tensor:
    """Scores in (0, 1] that make `top_k` reproduce ``order`` (a permutation of range(f))."""
    scores = torch.empty(f, dtype=torch.float32)
    for pos, i in enumerate(order):
        scores[i] = (f - pos) / f
    return scores


def _by_time_desc(times: list[float], indices: Iterable[int]) -> list[int]:
    return sorted(indices, key=lambda i: (-times[i], -i))


def _spread_order(indices: list[int]) -> list[int]:
    """1-D farthest-point order over a time-ordered list, starting at its first element:
    first, last, middle, quarter points, ... (each next pick maximises its distance to the
    picks so far; ties go to the later position)."""
    if not indices:
        return []
    n = len(indices)
    chosen = [0]
    dist = [abs(p - 0) for p in range(n)]
    while len(chosen) < n:
        best = max(range(n), key=lambda p: (dist[p], p))
        chosen.append(best)
        dist = [min(dist[p], abs(p - best)) for p in range(n)]
    return [indices[p] for p in chosen]


def _uniform_positions(n: int, k: int) -> list[int]:
    """k positions evenly spread over n items: centres of k equal bins."""
    return sorted({min(n - 1, int((j + 0.5) * n / k)) for j in range(k)})


def _novelty_order(emb: Tensor, pinned: list[bool], excluded: list[bool]) -> list[int]:
    """Greedy farthest-point order. Seed = pinned frames (already kept); if none, the frame with
    the largest summed distance to all candidates (the most atypical one). Each next frame
    maximises its minimum distance to the frames chosen so far (ties: later frame). Excluded
    frames come last (they are never kept, so they must not shadow their near-duplicates)."""
    f = emb.shape[0]
    # exact pairwise distances (the matmul shortcut would turn duplicates into tiny non-zeros)
    dist = torch.cdist(emb, emb, compute_mode="donot_use_mm_for_euclid_dist")  # "f f" float64
    avail = torch.tensor([not excluded[i] and not pinned[i] for i in range(f)], dtype=torch.bool)
    order = [i for i in range(f - 1, -1, -1) if pinned[i] and not excluded[i]]

    def last_argmax(values: Tensor) -> int:   # ties -> later frame
        return f - 1 - int(torch.argmax(values.flip(0)))

    if not order and avail.any():
        total = dist[:, avail].sum(dim=1)
        first = last_argmax(torch.where(avail, total, torch.full_like(total, -math.inf)))
        order.append(first)
        avail[first] = False
    if avail.any():
        mind = dist[:, order].min(dim=1).values
        while avail.any():
            i = last_argmax(torch.where(avail, mind, torch.full_like(mind, -math.inf)))
            order.append(i)
            avail[i] = False
            mind = torch.minimum(mind, dist[:, i])
    order += [i for i in range(f - 1, -1, -1) if excluded[i]]
    return order


def _check_bank(bank: "MemoryBank") -> None:
    if bank is None or bank.num_frames == 0:
        raise OneStoryError("memory bank is empty: generate or add a first shot before selecting "
                            "memory frames (the first shot needs no memory)")


def score_frames(bank: "MemoryBank", scorer: str, *, text: Tensor | None = None,
                 selector: FrameSelector | None = None,
                 normalization: LatentNormalization | None = None,
                 k: int | None = None) -> Tensor:
    """One finite float32 score per memory frame ("f", CPU); higher = keep first.

    * ``recency``: later frames (by ``bank.frame_times()``) score higher.
    * ``novelty``: greedy farthest-point order in a pooled-latent embedding (model space,
      4x4 average pool, L2): starts from the pinned frames, else from the most atypical
      frame; each next frame maximises its min distance to those already chosen. Rank scores.
    * ``sink_recent``: StoryMem's memory: the first shot's frames (memory sink, spread over the
      shot from its first frame) interleaved with the most recent frames, recent first:
      newest, sink 1, 2nd newest, sink 2, ... Rank scores.
    * ``uniform``: with ``k``, the k frames at the centres of k equal bins over the
      non-excluded frames (time order) score 1, the rest 0; without ``k``, a nested spread
      order (first, last, middle, ...) as rank scores.
    * ``learned``: ``selector`` (FrameSelector) on the bank in model space with caption tokens
      ``text`` "l d_t" (or "1 l d_t"); evaluated without gradient.
    Rank scores are (F - position) / F, so `top_k` reproduces the scorer's order exactly.
    """
    _check_bank(bank)
    if scorer not in SCORERS:
        raise OneStoryError(f"scorer={scorer!r} is unknown: choose one of {', '.join(SCORERS)}")
    f = bank.num_frames
    records = bank.records
    norm = normalization or LatentNormalization.identity(bank.channels)
    if norm.channels != bank.channels:
        raise OneStoryError(f"normalization has {norm.channels} channels but the bank has "
                            f"{bank.channels}; use the normalization of the bank's VAE")
    if scorer == "learned":
        return _score_learned(bank, text, selector, norm)
    pinned = [bool(r.pinned) for r in records]
    excluded = [bool(r.excluded) for r in records]
    times = [float(t) for t in bank.frame_times().tolist()]

    if scorer == "recency":
        return _rank_scores(_by_time_desc(times, range(f)), f)

    if scorer == "sink_recent":
        first_shot = min(r.shot for r in records)
        sink_ids = sorted((i for i in range(f) if records[i].shot == first_shot),
                          key=lambda i: (times[i], i))
        sink = _spread_order(sink_ids)
        recent = _by_time_desc(times, range(f))
        order: list[int] = []
        seen: set[int] = set()
        queues = [recent, sink]
        pos = [0, 0]
        turn = 0
        while len(order) < f:
            q = queues[turn]
            while pos[turn] < len(q) and q[pos[turn]] in seen:
                pos[turn] += 1
            if pos[turn] < len(q):
                order.append(q[pos[turn]])
                seen.add(q[pos[turn]])
            turn = 1 - turn
        return _rank_scores(order, f)

    if scorer == "uniform":
        timeline = sorted(range(f), key=lambda i: (times[i], i))
        if k is None:
            return _rank_scores(_spread_order(timeline), f)
        k = _check_k(k)
        usable = [i for i in timeline if not excluded[i]]
        scores = torch.zeros(f, dtype=torch.float32)
        if usable and k > 0:
            for p in _uniform_positions(len(usable), min(int(k), len(usable))):
                scores[usable[p]] = 1.0
        return scores

    # novelty
    x = norm.to_model(bank.frames, channel_dim=1)
    emb = F.adaptive_avg_pool2d(x, (4, 4)).flatten(1).double()
    return _rank_scores(_novelty_order(emb, pinned, excluded), f)


def _score_learned(bank: "MemoryBank", text: Tensor | None, selector: FrameSelector | None,
                   norm: LatentNormalization) -> Tensor:
    if selector is None:
        raise OneStoryError("scorer 'learned' needs a trained FrameSelector (load an adapter), or "
                            "choose a training-free scorer: recency, novelty, sink_recent, uniform")
    if text is None:
        raise OneStoryError("scorer 'learned' needs the caption tokens of the new shot (text "
                            f"'l d_t', d_t = {selector.text_dim})")
    if not isinstance(text, Tensor):
        raise ShapeError(f"text is a {type(text).__name__}; expected a tensor 'l d_t'")
    if text.ndim == 3 and text.shape[0] == 1:
        text = text[0]
    if text.ndim != 2:
        raise ShapeError(f"text has shape {tuple(text.shape)}; expected caption tokens 'l d_t' "
                         "(one caption)")
    scores = selector.score_bank(bank, text, norm)
    if not _all_finite(scores):
        raise OneStoryError("the FrameSelector produced NaN/inf scores: check the adapter weights "
                            "and the text tensor")
    return scores


def select(bank: "MemoryBank", k: int = DEFAULT_K, scorer: str = "sink_recent", *,
           text: Tensor | None = None, selector: FrameSelector | None = None,
           normalization: LatentNormalization | None = None) -> Selection:
    """Score the bank's frames and keep the top ``k``, honouring the bank's pins and excludes.

    ``normalization`` maps bank space to model space (None = identity); it matters for
    ``learned`` and ``novelty``. Empty bank -> OneStoryError.
    """
    _check_bank(bank)
    k = _check_k(k)
    scores = score_frames(bank, scorer, text=text, selector=selector,
                          normalization=normalization, k=k)
    return top_k(scores, k, [r.pinned for r in bank.records], [r.excluded for r in bank.records],
                 scorer)
