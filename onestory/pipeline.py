"""The next-shot pipeline (paper §4.1), batched over stories: plan → sample → commit.

* plan: per story, score the memory for the new caption and keep the top K
  (`onestory.scorers.select`, or `onestory.selection.top_k` on scores the caller computed), then
  turn the kept frames into context tokens (`AdaptiveConditioner.build_banks`, the builder
  training uses too);
* sample: a `Sampler` (the backbone's side: noise, guidance, solver) turns the plan into the new
  shots' clean latents. The pipeline owns no model: the standalone sampler wraps
  `onestory.sampling` (`onestory.sampling.FlowSampler`), the ComfyUI nodes pass one that calls
  `comfy.sample` with the patched MODEL;
* commit: a new `MemoryBank` per story with the shot appended and its selection recorded.

Stories whose contexts have different token counts cannot share one DiT call: the sampler is
called once per group of equal count (`ContextBatch.groups`), in story order within a group.
Shapes use einops notation: ``b`` stories, ``l`` caption tokens, ``n`` context tokens.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Protocol, Sequence, runtime_checkable

import torch
from torch import Tensor

from . import defaults
from .conditioner import AdaptiveConditioner, ContextBatch
from .errors import OneStoryError, ShapeError
from .frame_selector import FrameSelector
from .latent import LatentNormalization
from .memory import MemoryBank
from .scorers import select
from .selection import Selection, top_k

__all__ = ["ShotSpec", "MemorySettings", "ShotPlan", "SampleRequest", "Sampler", "ShotBatch",
           "NextShotPipeline", "seeded_noise", "pad_captions"]


@dataclass(frozen=True)
class ShotSpec:
    """One shot to generate: its caption, the caption's features "l d_t" as the DiT reads them,
    and its noise seed. ``text_mask`` "l" (True = real token) marks padding the caller added
    (e.g. a fixed text length): the learned scorer then reads the real tokens only."""

    caption: str
    text: Tensor
    seed: int
    text_mask: Optional[Tensor] = None

    def real_text(self) -> Tensor:
        """The caption tokens without padding, "l' d_t"."""
        return self.text if self.text_mask is None else self.text[self.text_mask.bool()]


@dataclass(frozen=True)
class MemorySettings:
    """What the pipeline remembers: the ``k`` frames ``scorer`` ranks best, conditioned within
    ``budget`` latent-frame equivalents of context tokens."""

    k: int = defaults.K
    budget: float = defaults.BUDGET
    scorer: str = defaults.SCORER


@dataclass(frozen=True)
class ShotPlan:
    """Selection and context of every story of a batch for its next shot."""

    selections: tuple[Optional[Selection], ...]   # per story; None = empty memory (first shot)
    context: ContextBatch

    def __len__(self) -> int:
        return len(self.selections)

    def subset(self, items: Sequence[int]) -> "ShotPlan":
        return ShotPlan(tuple(self.selections[i] for i in items), self.context.subset(items))


def seeded_noise(seeds: Sequence[int], shape: Sequence[int]) -> Tensor:
    """The pipeline's noise rule: story i's noise "c t h w" is ``torch.randn`` from a CPU
    generator seeded with ``seeds[i]`` (the same stream as ComfyUI's `prepare_noise` for a
    batch of one). Returns "b c t h w" float32 on the CPU."""
    return torch.stack([torch.randn(tuple(shape), generator=torch.Generator().manual_seed(int(s)))
                        for s in seeds])


def pad_captions(texts: Sequence[Tensor]) -> Tensor:
    """Caption features "l_i d_t" -> "b l d_t", zero-padded to the longest (Wan zero-pads umT5
    output). A model trained at a fixed text length should get features padded to it already."""
    n = max(t.shape[0] for t in texts)
    return torch.stack([torch.nn.functional.pad(t.float(), (0, 0, 0, n - t.shape[0])) for t in texts])


@dataclass(frozen=True)
class SampleRequest:
    """What the pipeline hands a sampler: one shot for each of b stories.

    shape:        "b c t h w" of the new shots (model space)
    seeds:        per story noise seed; `noise()` applies the pipeline's rule (`seeded_noise`)
    text:         "b l d_t" caption features (cond), zero-padded to the longest caption
    context:      per story context; ``context.tokens`` "b n d", ``context.positions`` "b n 3"
                  (n equal for every story of a request; n = 0: no memory)
    first_frames: per story the model-space latent "c h w" of a start image for the I2V slot
                  (frame 0 given), or None
    banks, plan:  the stories before this shot and their plan (routes that feed memory through
                  the I2V slot read the kept frames there)
    """

    shape: tuple[int, int, int, int, int]
    seeds: tuple[int, ...]
    text: Tensor
    context: ContextBatch
    first_frames: tuple[Optional[Tensor], ...]
    banks: tuple[MemoryBank, ...]
    plan: ShotPlan

    def noise(self) -> Tensor:
        return seeded_noise(self.seeds, self.shape[1:])


@runtime_checkable
class Sampler(Protocol):
    """Turns a `SampleRequest` into the new shots' clean latents "b c t h w".

    ``space`` says which space they are in: "model" (what the DiT denoises; the pipeline maps
    them to bank space with its normalization) or "bank" (a sampler whose backbone already
    returns raw VAE latents, as ComfyUI's does). An interrupt raises
    `onestory.errors.Interrupted`; nothing is committed then.
    """

    space: str

    def __call__(self, request: SampleRequest) -> Tensor: ...


@dataclass(frozen=True)
class ShotBatch:
    """One shot per story: the new banks, the new shots' latents and the plan that made them."""

    banks: tuple[MemoryBank, ...]     # the input banks, each plus its new shot
    latents: tuple[Tensor, ...]       # per story "1 c t h w", bank space
    plan: ShotPlan


class NextShotPipeline:
    """Selection, conditioning and memory of next-shot generation; the backbone is the sampler's.

    ``normalization`` maps bank space (raw VAE latents, what banks store) to model space (what
    the selector, the conditioner and the DiT read); None = identity.
    """

    def __init__(self, conditioner: AdaptiveConditioner, *, selector: Optional[FrameSelector] = None,
                 normalization: Optional[LatentNormalization] = None) -> None:
        self.conditioner = conditioner
        self.selector = selector
        self.normalization = normalization or LatentNormalization.identity(conditioner.latent_channels)
        if self.normalization.channels != conditioner.latent_channels:
            raise OneStoryError(f"normalization has {self.normalization.channels} channels but the "
                                f"conditioner takes {conditioner.latent_channels}; use the VAE's normalization")

    @property
    def channels(self) -> int:
        return self.conditioner.latent_channels

    # ---- plan ------------------------------------------------------------------------------

    def plan(self, banks: Sequence[MemoryBank], shots: Sequence[ShotSpec], settings: MemorySettings, *,
             scores: Optional[Sequence[Optional[Tensor]]] = None, with_context: bool = True) -> ShotPlan:
        """Selection and context per story. ``scores[i]`` "f" replaces the scorer for story i
        (top-K of those, with the bank's pins and excludes; ``settings.scorer`` is recorded as
        the scorer's name). ``with_context=False`` selects only (routes that feed the kept frames
        some other way): every context is empty."""
        _check_batch(banks, shots)
        if scores is not None and len(scores) != len(banks):
            raise ShapeError(f"scores has {len(scores)} entries for {len(banks)} stories")
        selections: list[Optional[Selection]] = []
        for i, (bank, shot) in enumerate(zip(banks, shots)):
            if bank.num_frames == 0:
                selections.append(None)
            elif scores is not None and scores[i] is not None:
                records = bank.records
                selections.append(top_k(scores[i], settings.k, [r.pinned for r in records],
                                        [r.excluded for r in records], settings.scorer))
            else:
                selections.append(select(bank, settings.k, settings.scorer, text=shot.real_text(),
                                         selector=self.selector, normalization=self.normalization))
        used = selections if with_context else [None] * len(selections)
        context = self.conditioner.build_banks(banks, used, settings.budget, self.normalization)
        return ShotPlan(tuple(selections), context)

    # ---- sample ----------------------------------------------------------------------------

    def sample(self, banks: Sequence[MemoryBank], shots: Sequence[ShotSpec], plan: ShotPlan,
               size: Sequence[int], sampler: Sampler,
               first_frames: Optional[Sequence[Optional[Tensor]]] = None) -> Tensor:
        """The new shots "b c t h w" in bank space; ``size`` = (t, h, w) latent frames and size.
        One sampler call per group of stories with equal context token counts."""
        _check_batch(banks, shots)
        if len(plan) != len(banks):
            raise ShapeError(f"the plan has {len(plan)} stories but {len(banks)} banks were given")
        t, h, w = (int(v) for v in size)
        frames = tuple(first_frames) if first_frames is not None else (None,) * len(banks)
        if len(frames) != len(banks):
            raise ShapeError(f"first_frames has {len(frames)} entries for {len(banks)} stories")
        for i, bank in enumerate(banks):
            if bank.num_frames and (bank.height, bank.width) != (h, w):
                raise ShapeError(f"story {i} holds {bank.height}×{bank.width} latents but the new shot is "
                                 f"{h}×{w}: generate at the story's latent size")
        groups = plan.context.groups()
        out: list[Optional[Tensor]] = [None] * len(banks)
        for items in groups:
            request = SampleRequest(
                shape=(len(items), self.channels, t, h, w), seeds=tuple(int(shots[i].seed) for i in items),
                text=pad_captions([shots[i].text for i in items]), context=plan.context.subset(items),
                first_frames=tuple(frames[i] for i in items), banks=tuple(banks[i] for i in items),
                plan=plan.subset(items))
            x = sampler(request)
            if tuple(x.shape) != request.shape:
                raise ShapeError(f"the sampler returned {tuple(x.shape)}; expected 'b c t h w' = {request.shape}")
            space = getattr(sampler, "space", "model")
            if space not in ("model", "bank"):
                raise OneStoryError(f"sampler.space is {space!r}; expected 'model' or 'bank'")
            x = x.detach().float().cpu()
            x = self.normalization.to_bank(x) if space == "model" else x
            for j, i in enumerate(items):
                out[i] = x[j:j + 1]
        return torch.cat(out)  # type: ignore[arg-type]

    # ---- commit ----------------------------------------------------------------------------

    @staticmethod
    def commit(banks: Sequence[MemoryBank], shots: Sequence[ShotSpec], plan: ShotPlan,
               latents: Tensor) -> tuple[MemoryBank, ...]:
        """Each bank plus its new shot "c t h w" (``latents`` "b c t h w", bank space), with the
        shot's caption, seed and selection recorded. The input banks are unchanged."""
        _check_batch(banks, shots)
        return tuple(bank.add_shot(latents[i:i + 1], shot.caption, source="generated", seed=shot.seed,
                                   selection=None if sel is None else sel.to_json())
                     for i, (bank, shot, sel) in enumerate(zip(banks, shots, plan.selections)))

    # ---- all three -------------------------------------------------------------------------

    def __call__(self, banks: Sequence[MemoryBank], shots: Sequence[ShotSpec], settings: MemorySettings,
                 size: Sequence[int], sampler: Sampler, *,
                 first_frames: Optional[Sequence[Optional[Tensor]]] = None,
                 scores: Optional[Sequence[Optional[Tensor]]] = None, with_context: bool = True) -> ShotBatch:
        """plan → sample → commit for one shot of every story."""
        plan = self.plan(banks, shots, settings, scores=scores, with_context=with_context)
        latents = self.sample(banks, shots, plan, size, sampler, first_frames)
        new = self.commit(banks, shots, plan, latents)
        return ShotBatch(new, tuple(latents[i:i + 1] for i in range(len(new))), plan)

    def stories(self, shots: Sequence[Sequence[ShotSpec]], settings: MemorySettings, size: Sequence[int],
                sampler: Sampler | Callable[[int], Sampler], *, banks: Optional[Sequence[MemoryBank]] = None,
                first_frames: Optional[Sequence[Optional[Tensor]]] = None,
                scores: Optional[Callable[[int, Sequence[MemoryBank]], Optional[Sequence[Tensor]]]] = None,
                on_shot: Optional[Callable[[int, ShotBatch], None]] = None) -> tuple[MemoryBank, ...]:
        """Several stories shot by shot: ``shots[i][s]`` is story i's shot s (every story the
        same number of shots); each shot is conditioned on everything before it.

        ``sampler`` is a `Sampler` (it has ``space``) or a function of the shot index that returns
        one (e.g. to report progress per shot).
        ``first_frames`` apply to the first shot only. ``scores(s, banks)`` may return per-story
        scores for shot s (analysis: e.g. ground-truth relevance). ``on_shot(s, batch)`` sees
        every shot. Returns the final banks; the caller's banks are unchanged.
        """
        if not shots or any(len(row) != len(shots[0]) for row in shots) or not shots[0]:
            raise OneStoryError("shots must hold one non-empty list of shots per story, all the same length")
        current = tuple(banks) if banks is not None else tuple(MemoryBank.empty() for _ in shots)
        for s in range(len(shots[0])):
            step = [row[s] for row in shots]
            now = sampler if isinstance(sampler, Sampler) else sampler(s)
            given = None if scores is None or all(b.num_frames == 0 for b in current) else scores(s, current)
            batch = self(current, step, settings, size, now, first_frames=first_frames if s == 0 else None,
                         scores=given)
            if on_shot is not None:
                on_shot(s, batch)
            current = batch.banks
        return current


def _check_batch(banks: Sequence[MemoryBank], shots: Sequence[ShotSpec]) -> None:
    if not banks:
        raise OneStoryError("no stories given: pass at least one MemoryBank (MemoryBank.empty() for a new story)")
    if len(banks) != len(shots):
        raise ShapeError(f"{len(banks)} banks but {len(shots)} shots: give one shot per story")
