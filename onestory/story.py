"""Standalone next-shot generation: a Wan DiT with its OneStory modules, on `onestory.pipeline`.

T2MSV: shot 1 from text alone. I2MSV: shot 1 from text plus an image latent in the I2V slot
(mask 1 on latent frame 0). Later shots reach the past only through the context tokens; their
I2V slot stays empty (mask 0, zero latent), as the paper routes history through X = [N, C].
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor

from . import defaults
from .conditioner import AdaptiveConditioner, Context
from .errors import OneStoryError
from .frame_selector import FrameSelector
from .latent import LatentNormalization
from .memory import MemoryBank
from .pipeline import MemorySettings, NextShotPipeline, ShotSpec
from .sampling import FlowSampler, ProgressCallback, StepInfo
from .selection import Selection

__all__ = ["ShotSpec", "StoryParams", "ShotResult", "NextShotGenerator", "generate_story"]


@dataclass(frozen=True)
class StoryParams:
    """Sizes are in latent units: `frames` latent frames of `height`×`width` per shot."""

    frames: int
    height: int
    width: int
    k: int = defaults.K
    budget: float = defaults.BUDGET
    scorer: str = defaults.SCORER
    steps: int = defaults.STEPS
    shift: float = defaults.SHIFT
    cfg: float = defaults.CFG
    solver: str = defaults.SOLVER
    context_in_negative: bool = defaults.CONTEXT_IN_NEGATIVE

    @property
    def memory(self) -> MemorySettings:
        return MemorySettings(k=self.k, budget=self.budget, scorer=self.scorer)

    @property
    def size(self) -> tuple[int, int, int]:
        return self.frames, self.height, self.width


@dataclass(frozen=True)
class ShotResult:
    bank: MemoryBank            # the input bank plus this shot
    latent: Tensor              # "1 c t h w", bank space
    selection: Optional[Selection]
    context: Context


ShotProgress = Callable[[int, StepInfo], None]
"""(shot index, step info) -> None."""


class NextShotGenerator:
    """A backbone bound to its OneStory modules: the pipeline plus a `FlowSampler`.

    The model is any callable with the `onestory.wan.WanModel` signature and a `.config`
    (model_type, in_dim, out_dim). Memory frames are converted to model space with
    `normalization` before selection and conditioning; generated shots are converted back.
    """

    def __init__(self, model: torch.nn.Module, conditioner: AdaptiveConditioner, *,
                 selector: Optional[FrameSelector] = None, normalization: Optional[LatentNormalization] = None,
                 negative_text: Optional[Tensor] = None) -> None:
        self.model = model
        self.pipeline = NextShotPipeline(conditioner, selector=selector, normalization=normalization)
        self.negative_text = negative_text

    def sampler(self, params: StoryParams, callback: Optional[ProgressCallback] = None,
                should_stop: Optional[Callable[[], bool]] = None) -> FlowSampler:
        return FlowSampler(self.model, steps=params.steps, shift=params.shift, cfg=params.cfg, solver=params.solver,
                           context_in_negative=params.context_in_negative, negative_text=self.negative_text,
                           callback=callback, should_stop=should_stop)

    def generate(self, bank: MemoryBank, shot: ShotSpec, params: StoryParams, *,
                 first_image: Optional[Tensor] = None, callback: Optional[ProgressCallback] = None,
                 should_stop: Optional[Callable[[], bool]] = None) -> ShotResult:
        """One shot of one story; `first_image` "c h w" (model space) fills the I2V slot."""
        out = self.pipeline([bank], [shot], params.memory, params.size, self.sampler(params, callback, should_stop),
                            first_frames=[first_image])
        return ShotResult(out.banks[0], out.latents[0], out.plan.selections[0], out.plan.context.contexts[0])


def generate_story(generator: NextShotGenerator, shots: Sequence[ShotSpec], params: StoryParams, *,
                   first_image: Optional[Tensor] = None, bank: Optional[MemoryBank] = None,
                   progress: Optional[ShotProgress] = None,
                   should_stop: Optional[Callable[[], bool]] = None) -> MemoryBank:
    """Generate `shots` in order, each conditioned on everything before it.

    Returns the final bank; `bank.shots[i].selection` records what shot i remembered.
    An interrupt raises `Interrupted` and the caller's `bank` is unchanged.
    """
    if not shots:
        raise OneStoryError("shots is empty: give at least one caption.")
    base = generator.sampler(params, should_stop=should_stop)

    def sampler_for(i: int) -> FlowSampler:
        return base if progress is None else replace(base, callback=lambda info: progress(i, info))

    banks = None if bank is None else [bank]
    return generator.pipeline.stories([list(shots)], params.memory, params.size, sampler_for, banks=banks,
                                      first_frames=[first_image])[0]
