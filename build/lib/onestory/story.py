"""The standalone next-shot loop (paper §4.1): for every shot, select → condition → sample → remember.

T2MSV: shot 1 from text alone. I2MSV: shot 1 from text plus an image latent in the I2V slot
(mask 1 on latent frame 0). Later shots reach the past only through the context tokens; their
I2V slot stays empty (mask 0, zero latent), as the paper routes history through X = [N, C].
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor

from .conditioner import AdaptiveConditioner, Context
from .errors import OneStoryError, ShapeError
from .latent import LatentNormalization
from .memory import MemoryBank
from .sampling import ProgressCallback, StepInfo, cfg_velocity, sample, wan_sigmas
from .frame_selector import FrameSelector
from .selection import Selection
from .scorers import select


@dataclass(frozen=True)
class ShotSpec:
    """One shot to generate: its caption, the caption's features "l d_t" and its noise seed."""

    caption: str
    text: Tensor
    seed: int


@dataclass(frozen=True)
class StoryParams:
    """Sizes are in latent units: `frames` latent frames of `height`×`width` per shot."""

    frames: int
    height: int
    width: int
    k: int = 8
    budget: float = 1.0
    scorer: str = "sink_recent"
    steps: int = 20
    shift: float = 5.0
    cfg: float = 5.0
    solver: str = "euler"
    context_in_negative: bool = True


@dataclass(frozen=True)
class ShotResult:
    bank: MemoryBank            # the input bank plus this shot
    latent: Tensor              # "1 c t h w", bank space
    selection: Optional[Selection]
    context: Context


ShotProgress = Callable[[int, StepInfo], None]
"""(shot index, step info) -> None."""


class NextShotGenerator:
    """Binds a backbone with its OneStory modules; `generate` makes one shot from a bank.

    The model is any callable with the `onestory.wan.WanModel` signature and a `.config`
    (model_type, in_dim, out_dim). Memory frames are converted to model space with
    `normalization` before selection and conditioning; generated shots are converted back.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        conditioner: AdaptiveConditioner,
        *,
        selector: Optional[FrameSelector] = None,
        normalization: Optional[LatentNormalization] = None,
        negative_text: Optional[Tensor] = None,
    ) -> None:
        self.model = model
        self.conditioner = conditioner
        self.selector = selector
        cfg = model.config
        self.channels: int = cfg.out_dim
        self.is_i2v: bool = cfg.in_dim == 2 * cfg.out_dim + 4
        self.normalization = normalization or LatentNormalization.identity(self.channels)
        self.negative_text = negative_text

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _slot(self, params: StoryParams, first_image: Optional[Tensor]) -> Optional[Tensor]:
        """The I2V channel slot "1 (4+c) t h w": [mask ×4 | image latent] (model space)."""
        if not self.is_i2v:
            if first_image is not None:
                raise OneStoryError("first_image (I2MSV) needs an image-to-video backbone (in_dim = 2·C + 4); "
                                    "this model is text-to-video — drop first_image or load an I2V model.")
            return None
        y = torch.zeros(1, 4 + self.channels, params.frames, params.height, params.width)
        if first_image is not None:
            expected = (self.channels, params.height, params.width)
            if tuple(first_image.shape) != expected:
                raise ShapeError(f"first_image has shape {tuple(first_image.shape)}, expected 'c h w' = {expected} "
                                 "(model-space latent of the start image at the story's latent size).")
            y[:, :4, 0] = 1.0
            y[:, 4:, 0] = first_image.float()
        return y.to(self.device)

    @torch.no_grad()
    def generate(
        self,
        bank: MemoryBank,
        shot: ShotSpec,
        params: StoryParams,
        *,
        first_image: Optional[Tensor] = None,
        callback: Optional[ProgressCallback] = None,
        should_stop: Optional[Callable[[], bool]] = None,
    ) -> ShotResult:
        device = self.device
        text = shot.text.to(device).float().unsqueeze(0)
        selection: Optional[Selection] = None
        context = Context.empty(self.conditioner.dim)
        if bank.num_frames > 0:
            selection = select(bank, params.k, params.scorer, text=shot.text, selector=self.selector,
                               normalization=self.normalization)
            context = self.conditioner.build(bank, selection, params.budget, normalization=self.normalization)
        negative = self.negative_text if self.negative_text is not None else torch.zeros_like(shot.text)
        velocity = cfg_velocity(
            self.model,
            cond=text,
            uncond=negative.to(device).float().unsqueeze(0),
            scale=params.cfg,
            y=self._slot(params, first_image),
            ctx_tokens=context.tokens.to(device) if len(context) else None,
            ctx_positions=context.positions.to(device) if len(context) else None,
            context_in_negative=params.context_in_negative,
        )
        gen = torch.Generator().manual_seed(shot.seed)
        noise = torch.randn(1, self.channels, params.frames, params.height, params.width, generator=gen)
        x0 = sample(velocity, noise.to(device), wan_sigmas(params.steps, params.shift), solver=params.solver,
                    callback=callback, should_stop=should_stop)
        latent = self.normalization.to_bank(x0.cpu())
        new_bank = bank.add_shot(latent, shot.caption, source="generated", seed=shot.seed,
                                 selection=None if selection is None else selection.to_json())
        return ShotResult(bank=new_bank, latent=latent, selection=selection, context=context)


def generate_story(
    generator: NextShotGenerator,
    shots: Sequence[ShotSpec],
    params: StoryParams,
    *,
    first_image: Optional[Tensor] = None,
    bank: Optional[MemoryBank] = None,
    progress: Optional[ShotProgress] = None,
    should_stop: Optional[Callable[[], bool]] = None,
) -> MemoryBank:
    """Generate `shots` in order, each conditioned on everything before it.

    Returns the final bank; `bank.shots[i].selection` records what shot i remembered.
    An interrupt raises `Interrupted` and the caller's `bank` is unchanged.
    """
    if not shots:
        raise OneStoryError("shots is empty: give at least one caption.")
    current = bank if bank is not None else MemoryBank.empty()
    for i, shot in enumerate(shots):
        cb = None if progress is None else (lambda info, i=i: progress(i, info))
        result = generator.generate(current, shot, params, first_image=first_image if i == 0 else None,
                                    callback=cb, should_stop=should_stop)
        current = result.bank
    return current

