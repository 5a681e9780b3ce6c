"""Adaptive Conditioner (OneStory paper §4.3): kept memory frames -> compact context tokens.

The kept frames arrive ranked best first (see `onestory.selection.Selection.kept`). A budget
solver gives every ranked frame a *tier* (an index into the kernel table, 0 = finest); each
tier has its own Conv3d patchifier ``C -> D`` with kernel = stride = (1, kh, kw). More relevant
frames get finer kernels (more tokens). The context tokens carry RoPE positions so that the
DiT can attend to them jointly with the noisy tokens of the new shot.

Shapes use einops notation: ``k`` kept frames, ``c`` latent channels, ``n`` context tokens,
``d`` DiT width.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import defaults
from .blocks import patch_blocks
from .errors import OneStoryError, ShapeError
from .latent import LatentNormalization

if TYPE_CHECKING:  # pragma: no cover - typing only
    from .memory import MemoryBank
    from .selection import Selection

Kernel = tuple[int, int, int]
DEFAULT_KERNELS: tuple[Kernel, ...] = defaults.KERNELS
DEFAULT_PATCH: Kernel = defaults.PATCH
DEFAULT_BUDGET = defaults.BUDGET

__all__ = [
    "Kernel", "DEFAULT_KERNELS", "DEFAULT_PATCH", "DEFAULT_BUDGET", "validate_kernels",
    "tokens_per_frame", "solve_budget", "budget_tokens", "block_centres", "Context",
    "ContextBatch", "AdaptiveConditioner",
]


# --------------------------------------------------------------------------------------------
# kernel table and budget solver
# --------------------------------------------------------------------------------------------

def _as_kernel(value, name: str) -> Kernel:
    try:
        kernel = tuple(int(v) for v in value)
        ok = len(kernel) == 3 and all(int(v) == v for v in value)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise OneStoryError(f"{name}={value!r} is not a kernel: give three integers (kt, kh, kw), "
                            "e.g. (1, 4, 4)")
    if min(kernel) < 1:
        raise OneStoryError(f"{name}={kernel} has a size < 1: every kernel size must be >= 1")
    return kernel  # type: ignore[return-value]


def validate_kernels(kernels: Sequence[Sequence[int]] = DEFAULT_KERNELS,
                     patch: Sequence[int] = DEFAULT_PATCH) -> tuple[Kernel, ...]:
    """Check a kernel table and return it as a tuple of int triples.

    Rules: non-empty; every kernel has kt == 1 (kept frames are not contiguous in time, so a
    temporal kernel would mix unrelated frames); kh, kw are multiples of the backbone patch;
    listed finest first, each kernel at least as large as the previous one in h and in w and
    strictly larger in one of them (so a coarser tier never costs more tokens than a finer one).
    """
    patch = _as_kernel(patch, "patch")
    if patch[0] != 1:
        raise OneStoryError(f"patch={patch}: the backbone patch must have temporal size 1 "
                            "(Wan uses (1, 2, 2))")
    if kernels is None or len(kernels) == 0:
        raise OneStoryError("kernels is empty: give at least one kernel, e.g. "
                            f"{DEFAULT_KERNELS}")
    out: list[Kernel] = []
    for i, value in enumerate(kernels):
        k = _as_kernel(value, f"kernels[{i}]")
        if k[0] != 1:
            raise OneStoryError(
                f"kernels[{i}]={k}: temporal kernel size must be 1 because the kept memory frames "
                f"are not contiguous in time; use (1, {k[1]}, {k[2]})")
        if k[1] % patch[1] or k[2] % patch[2]:
            raise OneStoryError(
                f"kernels[{i}]={k}: kh and kw must be multiples of the backbone patch {patch} so "
                "that the patchifier can be inflated from the patch embedding")
        if out:
            prev = out[-1]
            if k[1] < prev[1] or k[2] < prev[2] or (k[1], k[2]) == (prev[1], prev[2]):
                raise OneStoryError(
                    f"kernels[{i}]={k} is not coarser than kernels[{i - 1}]={prev}: list the kernels "
                    "finest first, each larger than the previous one (e.g. "
                    f"{DEFAULT_KERNELS})")
        out.append(k)
    return tuple(out)


def tokens_per_frame(kernel: Sequence[int], h: int, w: int) -> int:
    """Tokens one latent frame of size h x w yields under ``kernel`` (replicate-padded)."""
    kernel = _as_kernel(kernel, "kernel")
    if h < 1 or w < 1:
        raise ShapeError(f"frame size {h}x{w} is empty: latent frames need h, w >= 1")
    return math.ceil(h / kernel[1]) * math.ceil(w / kernel[2])


def budget_tokens(budget: float, h: int, w: int, patch: Sequence[int] = DEFAULT_PATCH) -> int:
    """Token budget for ``budget`` latent-frame equivalents (1 = one frame at ``patch``)."""
    try:
        budget = float(budget)
    except (TypeError, ValueError):
        raise OneStoryError(f"budget={budget!r} is not a number: give latent-frame equivalents, "
                            "e.g. 1.0") from None
    if not math.isfinite(budget) or budget < 0:
        raise OneStoryError(f"budget={budget} must be a finite number >= 0 (latent-frame "
                            "equivalents, e.g. 1.0)")
    # The epsilon absorbs float error such as 0.29 * 100 = 28.999999999999996.
    return int(math.floor(budget * tokens_per_frame(patch, h, w) + 1e-6))


def solve_budget(num_ranked: int, kernels: Sequence[Sequence[int]], h: int, w: int,
                 budget: float, patch: Sequence[int] = DEFAULT_PATCH) -> list[int]:
    """Assign a tier (index into ``kernels``, 0 = finest) to each ranked frame.

    Budget tokens = ``floor(budget * tokens_per_frame(patch, h, w))``. Every frame first gets the
    coarsest tier; frames for which even that does not fit are dropped from the end (lowest
    ranks), so the result may be shorter than ``num_ranked``. Then, in rank order, each frame is
    upgraded to the finest tier whose extra cost still fits in what is left. The remaining
    budget only shrinks, so the tiers are monotone: a higher-ranked frame never gets a coarser
    tier than a lower-ranked one. The total never exceeds the budget.
    """
    if isinstance(num_ranked, bool) or int(num_ranked) != num_ranked or num_ranked < 0:
        raise OneStoryError(f"num_ranked={num_ranked!r} must be an integer >= 0")
    num_ranked = int(num_ranked)
    kernels = validate_kernels(kernels, patch)
    total = budget_tokens(budget, h, w, patch)
    cost = [tokens_per_frame(k, h, w) for k in kernels]
    coarsest = len(kernels) - 1
    n = min(num_ranked, total // cost[coarsest])
    tiers = [coarsest] * n
    remaining = total - n * cost[coarsest]
    for i in range(n):
        for tier in range(coarsest + 1):
            extra = cost[tier] - cost[coarsest]
            if extra <= remaining:
                tiers[i] = tier
                remaining -= extra
                break
    return tiers


def block_centres(size: int, kernel: int, patch: int) -> Tensor:
    """Centre of every kernel block along one axis, in backbone-patch units (float64).

    A latent row r (continuous centre r + 1/2) sits at patch coordinate (r + 1/2)/p - 1/2,
    so patch q covers coordinate q exactly. A block i of size k covers rows [i*k, (i+1)*k);
    the mean of its rows' coordinates is ((i + 1/2)*k)/p - 1/2 = i*k/p + k/(2p) - 1/2, i.e.
    for p = 2: ``i*k/2 + k/4 - 1/2`` (the centre of the block in (1,2,2)-patch units; for k = p
    it is i, the backbone's own position). Rows beyond the frame (the last block when ``size``
    is not a multiple of k) are filled by replicate padding, so they repeat the last row: we
    average the clamped rows, which is the FramePack rule (replicate-pad the RoPE grid, then
    average-pool it over the block) and keeps the position on the content the token sees.
    """
    blocks = math.ceil(size / kernel)
    rows = torch.arange(blocks * kernel, dtype=torch.float64).clamp(max=size - 1)
    coords = (rows + 0.5) / patch - 0.5
    return coords.view(blocks, kernel).mean(dim=1)


def _block_grid(h: int, w: int, kernel: Kernel, patch: Sequence[int]) -> Tensor:
    """(h, w) block centres of one tier, "(hh ww) 2" float64."""
    gh, gw = torch.meshgrid(block_centres(h, kernel[1], patch[1]), block_centres(w, kernel[2], patch[2]),
                            indexing="ij")
    return torch.stack([gh.reshape(-1), gw.reshape(-1)], dim=1)


@dataclass(frozen=True, eq=False)
class _Layout:
    """What a context's patchification depends on besides frame content and time order: the
    frame size and the tier of each ranked frame. "Rows" are the patchifier outputs, tier by
    tier (finest first), each tier's frames in rank order."""

    groups: tuple[tuple[int, slice | Tensor], ...]  # (tier, its ranked frames: a slice or indices)
    row_start: tuple[int, ...]            # per ranked frame, its first row
    counts: tuple[int, ...]               # per ranked frame, its number of tokens
    hw: Tensor                            # "rows 2" float32, (h, w) position of every row
    tier: Tensor                          # "rows" long


def _layout(h: int, w: int, tiers: tuple[int, ...], kernels: tuple[Kernel, ...], patch: Kernel) -> _Layout:
    groups, row_start, hw, tier_rows = [], [0] * len(tiers), [], []
    counts = tuple(_block_grid(h, w, kernels[t], patch).shape[0] for t in tiers)
    row = 0
    for t in sorted(set(tiers)):
        members = [i for i, ti in enumerate(tiers) if ti == t]
        contiguous = members == list(range(members[0], members[-1] + 1))
        groups.append((t, slice(members[0], members[-1] + 1) if contiguous else torch.tensor(members)))
        for i in members:
            row_start[i] = row
            row += counts[i]
        grid = _block_grid(h, w, kernels[t], patch)
        hw.append(grid.float().repeat(len(members), 1))
        tier_rows.append(torch.full((grid.shape[0] * len(members),), t, dtype=torch.long))
    return _Layout(tuple(groups), tuple(row_start), counts, torch.cat(hw), torch.cat(tier_rows))


# --------------------------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Context:
    """Context tokens for the DiT.

    tokens:      "n d"  patchified memory frames (dtype/device of the conditioner)
    positions:   "n 3"  float32 (t, h, w) RoPE positions; t < 0, h/w in backbone-patch units
    frame_index: "n"    long, memory index of the frame each token came from
    tier:        "n"    long, kernel tier of each token (0 = finest)
    """

    tokens: Tensor
    positions: Tensor
    frame_index: Tensor
    tier: Tensor

    def __post_init__(self):
        n = self.tokens.shape[0] if self.tokens.ndim == 2 else -1
        if self.tokens.ndim != 2:
            raise ShapeError(f"Context.tokens has shape {tuple(self.tokens.shape)}; expected 'n d'")
        if tuple(self.positions.shape) != (n, 3):
            raise ShapeError(f"Context.positions has shape {tuple(self.positions.shape)}; "
                             f"expected ({n}, 3)")
        for name in ("frame_index", "tier"):
            t = getattr(self, name)
            if tuple(t.shape) != (n,):
                raise ShapeError(f"Context.{name} has shape {tuple(t.shape)}; expected ({n},)")

    @staticmethod
    def empty(dim: int, dtype: torch.dtype = torch.float32,
              device: torch.device | str | None = None) -> "Context":
        return Context(
            tokens=torch.zeros(0, dim, dtype=dtype, device=device),
            positions=torch.zeros(0, 3, dtype=torch.float32, device=device),
            frame_index=torch.zeros(0, dtype=torch.long, device=device),
            tier=torch.zeros(0, dtype=torch.long, device=device),
        )

    @property
    def dim(self) -> int:
        return self.tokens.shape[1]

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def to(self, device=None, dtype: torch.dtype | None = None) -> "Context":
        """Move everything to ``device``; ``dtype`` applies to the tokens only."""
        return Context(self.tokens.to(device=device, dtype=dtype), self.positions.to(device),
                       self.frame_index.to(device), self.tier.to(device))


@dataclass(frozen=True, eq=False)
class ContextBatch:
    """The contexts of a batch of stories, one `Context` per story.

    contexts: per story its `Context` ("n_i d" tokens)
    used:     per story the memory indices that got a tier, best first
    tiers:    per story the tier of each used frame

    ``tokens`` "b n d" and ``positions`` "b n 3" exist when every story has the same token
    count n (`uniform`): stories whose counts differ (different numbers of kept frames, frame
    sizes or budgets) cannot share one DiT call; `groups` splits them into sub-batches of equal
    count, and `subset` takes one.
    """

    contexts: tuple[Context, ...]
    used: tuple[tuple[int, ...], ...]
    tiers: tuple[tuple[int, ...], ...]

    def __len__(self) -> int:
        return len(self.contexts)

    @property
    def counts(self) -> tuple[int, ...]:
        """Context tokens per story."""
        return tuple(len(c) for c in self.contexts)

    @property
    def uniform(self) -> bool:
        return len(set(self.counts)) <= 1

    def groups(self) -> list[tuple[int, ...]]:
        """Story indices grouped by token count (groups in order of first appearance)."""
        out: dict[int, list[int]] = {}
        for i, n in enumerate(self.counts):
            out.setdefault(n, []).append(i)
        return [tuple(g) for g in out.values()]

    def subset(self, items) -> "ContextBatch":
        items = list(items)
        return ContextBatch(tuple(self.contexts[i] for i in items), tuple(self.used[i] for i in items),
                            tuple(self.tiers[i] for i in items))

    def _stacked(self, name: str) -> Tensor:
        if not self.uniform:
            raise OneStoryError(f"the stories have different context token counts {self.counts}: split "
                                "the batch with ContextBatch.groups() before stacking")
        return torch.stack([getattr(c, name) for c in self.contexts])

    @property
    def tokens(self) -> Tensor:
        """"b n d" (n may be 0)."""
        return self._stacked("tokens")

    @property
    def positions(self) -> Tensor:
        """"b n 3" float32 (t, h, w) per story."""
        return self._stacked("positions")


# --------------------------------------------------------------------------------------------
# module
# --------------------------------------------------------------------------------------------

def _inflate(weight: Tensor, patch: Kernel, kernel: Kernel) -> Tensor:
    """Inflate a patch-embedding weight "d c 1 ph pw" to "d c 1 kh kw".

    FramePack's rule (`initialize_weight_from_another_conv3d`, einops
    ``'(h hk)'``): every weight element is repeated over an rh x rw sub-block and divided by
    rh*rw. The inflated conv on a k x k block therefore equals the patch embedding applied to
    the block average-pooled by (rh, rw): the token a 2x-downsampled latent would get.
    """
    rh, rw = kernel[1] // patch[1], kernel[2] // patch[2]
    out = weight.repeat_interleave(rh, dim=3).repeat_interleave(rw, dim=4)
    return out / float(rh * rw)


class AdaptiveConditioner(nn.Module):
    """Per-tier Conv3d patchifiers ``C -> D`` (paper §4.3).

    ``patchifiers[i]`` has kernel = stride = ``kernels[i]``; tier 0 is the finest. Frames are
    replicate-padded to multiples of the kernel. ``time_gap`` (>= 0) shifts every context frame
    further into the past, e.g. to mark a shot boundary between memory and the new shot.
    """

    def __init__(self, latent_channels: int, dim: int,
                 kernels: Sequence[Sequence[int]] = DEFAULT_KERNELS,
                 patch: Sequence[int] = DEFAULT_PATCH, time_gap: float = 0.0):
        super().__init__()
        if int(latent_channels) < 1 or int(dim) < 1:
            raise OneStoryError(f"latent_channels={latent_channels}, dim={dim}: both must be >= 1")
        if not math.isfinite(float(time_gap)) or float(time_gap) < 0:
            raise OneStoryError(f"time_gap={time_gap} must be a finite number >= 0")
        self.kernels = validate_kernels(kernels, patch)
        self.patch: Kernel = _as_kernel(patch, "patch")
        self.latent_channels = int(latent_channels)
        self.dim = int(dim)
        self.time_gap = float(time_gap)
        self.patchifiers = nn.ModuleList(
            nn.Conv3d(self.latent_channels, self.dim, kernel_size=k, stride=k) for k in self.kernels)

    def extra_repr(self) -> str:
        return f"kernels={self.kernels}, patch={self.patch}, time_gap={self.time_gap}"

    # ---- construction from a backbone ------------------------------------------------------

    @classmethod
    def from_patch_embedding(cls, weight: Tensor, bias: Tensor | None, latent_channels: int,
                             kernels: Sequence[Sequence[int]] = DEFAULT_KERNELS,
                             time_gap: float = 0.0) -> "AdaptiveConditioner":
        """Initialise every patchifier from a backbone patch embedding by kernel inflation.

        weight "d i 1 ph pw", bias "d" (Wan: ``patch_embedding.weight/bias``). The patch is
        read from the weight. T2V (i == C): used as is. I2V (i == 2C + 4, input layout
        [noise C | mask 4 | image C]): a clean memory frame is fed both as the noise-slot
        latent and as the conditioning image with mask = 1, so
        ``W = W[:, :C] + W[:, C+4:]`` and ``bias += W[:, C:C+4].sum()`` over channels and kernel.
        Then each tier's weight is inflated (see `_inflate`); the bias is copied. An untrained
        conditioner thus maps a constant frame to exactly the backbone's own token.
        """
        C = int(latent_channels)
        if not isinstance(weight, Tensor) or weight.ndim != 5:
            shape = tuple(weight.shape) if isinstance(weight, Tensor) else type(weight).__name__
            raise ShapeError(f"weight has shape {shape}; expected a Conv3d patch-embedding weight "
                             "'d in_dim 1 ph pw' (Wan: patch_embedding.weight)")
        d, in_dim = weight.shape[:2]
        patch = tuple(int(s) for s in weight.shape[2:])
        if bias is not None and tuple(bias.shape) != (d,):
            raise ShapeError(f"bias has shape {tuple(bias.shape)}; expected ({d},) to match weight")
        w = weight.detach().float()
        b = bias.detach().float().clone() if bias is not None else torch.zeros(d)
        b = b.to(w.device)
        if in_dim == C:
            pass
        elif in_dim == 2 * C + 4:
            b = b + w[:, C:C + 4].sum(dim=(1, 2, 3, 4))
            w = w[:, :C] + w[:, C + 4:]
        else:
            raise ShapeError(
                f"weight has in_dim={in_dim} but latent_channels={C}: expected {C} (T2V) or "
                f"{2 * C + 4} (I2V: noise {C} + mask 4 + image {C}); pass the latent channel "
                "count of the backbone's VAE")
        module = cls(C, d, kernels=kernels, patch=patch, time_gap=time_gap)
        with torch.no_grad():
            for kernel, conv in zip(module.kernels, module.patchifiers):
                conv.weight.copy_(_inflate(w, module.patch, kernel))
                conv.bias.copy_(b)
        # fp8 / quantised storage dtypes cannot run a conv: those fall back to float32.
        dtype = weight.dtype if weight.dtype in (torch.float16, torch.bfloat16, torch.float32,
                                                 torch.float64) else torch.float32
        return module.to(device=weight.device, dtype=dtype)

    # ---- forward ---------------------------------------------------------------------------

    def _param(self) -> Tensor:
        return self.patchifiers[0].weight

    def forward(self, frames: Tensor, frame_index: Tensor | Sequence[int],
                frame_time: Tensor | Sequence[float], tiers: Sequence[int]) -> Context:
        """frames "k c h w" (model space, ranked best first); frame_index "k" (memory index);
        frame_time "k" (global time, orders the RoPE t axis); tiers: one per ranked frame, as
        returned by `solve_budget` (it may be shorter than k: the lowest-ranked frames without a
        tier are dropped). Tokens come out frame by frame in time order, each frame raster-order.
        """
        if not isinstance(frames, Tensor) or frames.ndim != 4:
            shape = tuple(frames.shape) if isinstance(frames, Tensor) else type(frames).__name__
            raise ShapeError(f"frames has shape {shape}; expected 'k c h w' (one latent frame per "
                             "kept memory frame)")
        k, c, h, w = frames.shape
        if c != self.latent_channels:
            raise ShapeError(f"frames has {c} channels but the conditioner was built for "
                             f"latent_channels={self.latent_channels}; use latents of the "
                             "matching VAE or an adapter made for it")
        frame_index = torch.as_tensor(frame_index, dtype=torch.long).reshape(-1).cpu()
        frame_time = torch.as_tensor(frame_time, dtype=torch.float64).reshape(-1).cpu()
        if frame_index.numel() != k or frame_time.numel() != k:
            raise ShapeError(f"frame_index has {frame_index.numel()} and frame_time "
                             f"{frame_time.numel()} entries; both need one per frame ({k})")
        tiers = [int(t) for t in tiers]
        if len(tiers) > k:
            raise OneStoryError(f"tiers has {len(tiers)} entries for {k} frames: give at most one "
                                "tier per ranked frame (use solve_budget)")
        if any(t < 0 or t >= len(self.kernels) for t in tiers):
            raise OneStoryError(f"tiers={tiers} has an entry outside 0..{len(self.kernels) - 1} "
                                f"(the kernel table has {len(self.kernels)} tiers)")
        n = len(tiers)
        if n == 0:
            ref = self._param()
            return Context.empty(self.dim, dtype=ref.dtype, device=ref.device)
        return self._context(frames[:n], frame_index[:n].tolist(), frame_time[:n].tolist(), tiers)

    def _context(self, frames: Tensor, indices: list[int], times: list[float], tiers: list[int]) -> Context:
        """`forward` on validated inputs: n frames "n c h w", n indices, times and tiers."""
        ref = self._param()
        dev = ref.device
        n, _, h, w = frames.shape
        layout = _layout(h, w, tuple(tiers), self.kernels, self.patch)
        x = frames if (frames.device, frames.dtype) == (dev, ref.dtype) else \
            frames.to(device=dev, dtype=ref.dtype)
        outs = []
        for tier, members in layout.groups:
            _, kh, kw = self.kernels[tier]
            xt = x[members] if isinstance(members, slice) else x.index_select(0, members.to(dev))
            conv = self.patchifiers[tier]
            # Conv3d with kernel == stride and kt == 1 is a linear map of each block; computed as
            # reshape + matmul (same result, much faster than a CPU conv with large kernels).
            ph, pw = (-h) % kh, (-w) % kw
            if ph or pw:
                xt = F.pad(xt, (0, pw, 0, ph), mode="replicate")
            blocks = patch_blocks(xt, kh, kw).flatten(0, 1)            # "(m hh ww) (c kh kw)"
            outs.append(F.linear(blocks, conv.weight.flatten(1), conv.bias))   # "(m hh ww) d"
        rows = outs[0] if len(outs) == 1 else torch.cat(outs)

        # Tokens come out frame by frame in time order (ties: memory index); the newest memory
        # frame sits right before the shot on the RoPE t axis: j-th of n at -(n - j) - time_gap.
        order = sorted(range(n), key=lambda i: (times[i], indices[i]))
        counts, starts = layout.counts, layout.row_start
        src = [r for i in order for r in range(starts[i], starts[i] + counts[i])]
        t = torch.tensor([-(n - j) - self.time_gap for j, i in enumerate(order) for _ in range(counts[i])],
                         dtype=torch.float32)
        index = torch.tensor([indices[i] for i in order for _ in range(counts[i])], dtype=torch.long)
        if src == list(range(len(src))):
            tokens, hw, tier_ids = rows, layout.hw, layout.tier.clone()
        else:
            src_t = torch.tensor(src, dtype=torch.long)
            tokens = rows.index_select(0, src_t if dev.type == "cpu" else src_t.to(dev))
            hw, tier_ids = layout.hw.index_select(0, src_t), layout.tier.index_select(0, src_t)
        positions = torch.cat([t[:, None], hw], dim=1)
        if dev.type != "cpu":
            positions, index, tier_ids = positions.to(dev), index.to(dev), tier_ids.to(dev)
        return Context(tokens, positions, index, tier_ids)

    # ---- batched: the one builder of the pipeline and of training -------------------------

    def build_batch(self, frames: Sequence[Tensor], index: Sequence[Sequence[int]], budget: float,
                    times: Sequence[Sequence[float]] | None = None) -> ContextBatch:
        """Context of every story of a batch.

        frames[i] "k_i c h w": story i's ranked memory frames (model space, best first); index[i]:
        their memory indices (k_i ints); times[i]: their global times, which order the RoPE t
        axis (None = the indices, as in a story-ordered memory). Per story, `solve_budget` on
        k_i frames at the story's frame size assigns the tiers; the lowest-ranked frames without
        a tier are dropped. Differentiable in ``frames`` and the weights (training calls this).
        """
        if len(frames) != len(index) or (times is not None and len(times) != len(frames)):
            raise ShapeError(f"frames, index and times have {len(frames)}, {len(index)} and "
                             f"{None if times is None else len(times)} entries: give one per story")
        ref = self._param()
        contexts, used, tiers = [], [], []
        for i, x in enumerate(frames):
            ids = [int(j) for j in index[i]]
            if not isinstance(x, Tensor) or x.ndim != 4 or x.shape[0] != len(ids):
                shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
                raise ShapeError(f"frames[{i}] has shape {shape}; expected 'k c h w' with k = "
                                 f"{len(ids)} (one frame per entry of index[{i}])")
            if x.shape[1] != self.latent_channels:
                raise ShapeError(f"frames[{i}] has {x.shape[1]} channels but the conditioner was "
                                 f"built for latent_channels={self.latent_channels}; use latents "
                                 "of the matching VAE or an adapter made for it")
            t = solve_budget(len(ids), self.kernels, x.shape[-2], x.shape[-1], budget, self.patch) if ids else []
            keep = ids[:len(t)]
            if not t:
                contexts.append(Context.empty(self.dim, dtype=ref.dtype, device=ref.device))
            else:
                when = [float(v) for v in (keep if times is None else list(times[i])[:len(t)])]
                contexts.append(self._context(x[:len(t)], keep, when, t))
            used.append(tuple(keep))
            tiers.append(tuple(t))
        return ContextBatch(tuple(contexts), tuple(used), tuple(tiers))

    def build_banks(self, banks: Sequence["MemoryBank"], selections: Sequence["Selection | None"],
                    budget: float = DEFAULT_BUDGET,
                    normalization: LatentNormalization | None = None) -> ContextBatch:
        """`build_batch` on memory banks: story i's ``selections[i].kept`` frames (None or an
        empty selection = no context), converted to model space with ``normalization``."""
        if len(banks) != len(selections):
            raise ShapeError(f"{len(banks)} banks but {len(selections)} selections: give one per story")
        frames, index, times = [], [], []
        for bank, selection in zip(banks, selections):
            kept = [] if selection is None or bank.num_frames == 0 else list(selection.kept)
            if not kept:
                frames.append(torch.zeros(0, self.latent_channels, 1, 1))
                index.append([])
                times.append([])
                continue
            self._check_bank(bank, selection)
            norm = normalization or LatentNormalization.identity(bank.channels)
            if norm.channels != bank.channels:
                raise OneStoryError(f"normalization has {norm.channels} channels but the bank has "
                                    f"{bank.channels}; use the normalization of the bank's VAE")
            frames.append(norm.to_model(bank.frames[kept], channel_dim=1))
            index.append(kept)
            times.append(bank.frame_times_of(kept))
        return self.build_batch(frames, index, budget, times)

    def _check_bank(self, bank: "MemoryBank", selection: "Selection") -> None:
        if selection.scores.numel() != bank.num_frames or max(selection.kept) >= bank.num_frames:
            raise OneStoryError(
                f"selection was made on a memory of {selection.scores.numel()} frames but the bank "
                f"has {bank.num_frames}: run select() again on this bank")
        if bank.channels != self.latent_channels:
            raise ShapeError(f"bank has {bank.channels} latent channels but the conditioner was "
                             f"built for {self.latent_channels}; use an adapter for this VAE")

    # ---- from a memory bank ----------------------------------------------------------------

    def build(self, bank: "MemoryBank", selection: "Selection", budget: float = DEFAULT_BUDGET,
              normalization: LatentNormalization | None = None) -> Context:
        """The context of one bank: `build_banks` for a batch of one. An empty selection gives
        an empty Context (the DiT then runs exactly as without memory)."""
        return self.build_banks([bank], [selection], budget, normalization).contexts[0]
