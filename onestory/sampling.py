"""Rectified-flow sampling with Wan's shifted schedule.

Convention (Wan / ComfyUI `CONST` flow): x_σ = (1 − σ)·x₀ + σ·ε, the model predicts the
velocity v = ε − x₀, so dx/dσ = v and the clean estimate is x₀ = x_σ − σ·v. The model is
called with timestep t = 1000·σ, as ComfyUI's `ModelSamplingDiscreteFlow` does.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional, Protocol

import torch
from torch import Tensor

from . import defaults
from .errors import Interrupted, OneStoryError, ShapeError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from .pipeline import SampleRequest

Velocity = Callable[[Tensor, Tensor], Tensor]
"""(x "b c t h w", sigma "b") -> velocity "b c t h w"."""


@dataclass(frozen=True)
class StepInfo:
    """What a progress callback receives after each solver step."""

    step: int          # 0-based index of the finished step
    total: int
    sigma: float       # σ at the start of the step
    x: Tensor          # state after the step "b c t h w"
    denoised: Tensor   # x₀ estimate at the start of the step "b c t h w"


ProgressCallback = Callable[[StepInfo], None]
SOLVERS = ("euler", "heun")


def wan_sigmas(steps: int, shift: float) -> Tensor:
    """σ schedule of `steps` steps from 1 to 0: σ = shift·t / (1 + (shift − 1)·t), t uniform.

    Returns "s+1" float32 (the last entry is exactly 0).
    """
    if steps < 1:
        raise OneStoryError(f"steps must be >= 1, got {steps}.")
    if shift <= 0:
        raise OneStoryError(f"shift must be > 0, got {shift}; Wan uses 3.0 at 480p and 5.0-8.0 above.")
    t = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    sigma = shift * t / (1.0 + (shift - 1.0) * t)
    return sigma.float()


def sample(
    velocity: Velocity,
    noise: Tensor,
    sigmas: Tensor,
    *,
    solver: str = "euler",
    callback: Optional[ProgressCallback] = None,
    should_stop: Optional[Callable[[], bool]] = None,
) -> Tensor:
    """Integrate dx/dσ = v(x, σ) from σ₀ (pure noise when σ₀ = 1) to the last σ.

    `should_stop` is polled before every model call; when it returns True, `Interrupted` is
    raised and nothing outside this function has been changed.
    """
    if solver not in SOLVERS:
        raise OneStoryError(f"solver must be one of {SOLVERS}, got {solver!r}.")
    if sigmas.ndim != 1 or len(sigmas) < 2:
        raise OneStoryError(f"sigmas must be a 1-D schedule of >= 2 values, got shape {tuple(sigmas.shape)}.")

    def v_at(x: Tensor, s: Tensor) -> Tensor:
        if should_stop is not None and should_stop():
            raise Interrupted("sampling was interrupted; the story was not changed — queue again to continue.")
        return velocity(x, s.expand(x.shape[0]).to(x.device))

    x = noise * sigmas[0]  # σ₀ < 1 would be img2img; the clean part is the caller's business
    total = len(sigmas) - 1
    for i in range(total):
        s, s_next = sigmas[i], sigmas[i + 1]
        v = v_at(x, s)
        denoised = x - s * v
        x_next = x + (s_next - s) * v
        if solver == "heun" and s_next > 0:
            # Heun (2nd order): average the slope at both ends; the last step stays Euler
            # because the slope at σ = 0 is undefined for the x₀ parameterisation.
            v2 = v_at(x_next, s_next)
            x_next = x + (s_next - s) * 0.5 * (v + v2)
        x = x_next
        if callback is not None:
            callback(StepInfo(step=i, total=total, sigma=float(s), x=x, denoised=denoised))
    return x


def pad_text(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Zero-pad two caption tensors "1 l d_t" to a common length (Wan zero-pads umT5 output)."""
    n = max(a.shape[1], b.shape[1])
    pad = lambda x: torch.nn.functional.pad(x, (0, 0, 0, n - x.shape[1]))  # noqa: E731
    return pad(a), pad(b)


class FlowModel(Protocol):
    """What `cfg_velocity` needs of a DiT (satisfied by `onestory.wan.WanModel`)."""

    def __call__(self, x: Tensor, t: Tensor, context: Tensor, clip_fea: Optional[Tensor] = None,
                 ctx_tokens: Optional[Tensor] = None, ctx_positions: Optional[Tensor] = None) -> Tensor: ...


def cfg_velocity(
    model: FlowModel,
    *,
    cond: Tensor,
    uncond: Optional[Tensor],
    scale: float,
    y: Optional[Tensor] = None,
    clip_fea: Optional[Tensor] = None,
    ctx_tokens: Optional[Tensor] = None,
    ctx_positions: Optional[Tensor] = None,
    context_in_negative: bool = True,
) -> Velocity:
    """Classifier-free-guided velocity v = v_u + scale·(v_c − v_u).

    cond / uncond: caption features "1 l d_t" or "b l d_t" (zero-padded to a common length here).
    y: the I2V slot "1 c_y t h w" or "b c_y t h w" concatenated to x on channels. ctx_tokens
    "n d" / "b n d" with ctx_positions "n 3" / "b n 3": computed once per shot by the caller and
    reused by every step and both branches. With the context in both
    branches the two branches run as one batch of 2; without it in the negative, the branches
    need different token counts and run separately.
    """
    if scale != 1.0 and uncond is None:
        raise OneStoryError("cfg scale != 1 needs a negative caption (uncond); pass one or set cfg=1.")
    has_ctx = ctx_tokens is not None and ctx_tokens.shape[-2] > 0
    if uncond is not None:
        cond, uncond = pad_text(cond, uncond)

    def per_row(value: Optional[Tensor], rows: int) -> Optional[Tensor]:
        # "b ..." per story -> "rows ..." (rows = b, or 2b for the joint CFG batch: cond rows
        # first, then uncond rows); "1 ..." and unbatched values broadcast as they are.
        if value is None or value.ndim < 3 or value.shape[0] in (1, rows):
            return value
        return value.repeat(rows // value.shape[0], *([1] * (value.ndim - 1)))

    def forward(x: Tensor, t: Tensor, text: Tensor, with_ctx: bool) -> Tensor:
        rows = x.shape[0]
        slot = per_row(y, rows)
        inp = x if slot is None else torch.cat([x, slot.expand(rows, -1, -1, -1, -1).to(x)], dim=1)
        clip = None if clip_fea is None else per_row(clip_fea, rows).expand(rows, -1, -1)
        text = text.expand(rows, -1, -1)
        if with_ctx and has_ctx:
            return model(inp, t, text, clip, ctx_tokens=per_row(ctx_tokens, rows),
                         ctx_positions=per_row(ctx_positions, rows))
        return model(inp, t, text, clip)

    def velocity(x: Tensor, sigma: Tensor) -> Tensor:
        t = sigma * 1000.0
        if scale == 1.0:
            return forward(x, t, cond, True)
        assert uncond is not None
        if context_in_negative or not has_ctx:
            both = forward(torch.cat([x, x]), torch.cat([t, t]), torch.cat([cond.expand(x.shape[0], -1, -1),
                                                                              uncond.expand(x.shape[0], -1, -1)]), True)
            v_c, v_u = both.chunk(2)
        else:
            v_c = forward(x, t, cond, True)
            v_u = forward(x, t, uncond, False)
        return v_u + scale * (v_c - v_u)

    return velocity


@dataclass(frozen=True)
class FlowSampler:
    """The standalone `onestory.pipeline.Sampler`: Wan's shifted schedule, CFG and an ODE solver
    on a DiT with the `onestory.wan.WanModel` signature and a ``.config`` (in_dim, out_dim).

    The negative caption is ``negative_text`` "l d_t" for every story, or zeros shaped like each
    story's caption (the text dropout the lab trains with). An I2V backbone (in_dim = 2·C + 4)
    gets the slot [mask ×4 | image latent]: story i's ``request.first_frames[i]`` at frame 0
    with mask 1, else zeros. Returns x0 "b c t h w" in model space.
    """

    model: FlowModel
    steps: int = defaults.STEPS
    shift: float = defaults.SHIFT
    cfg: float = defaults.CFG
    solver: str = defaults.SOLVER
    context_in_negative: bool = defaults.CONTEXT_IN_NEGATIVE
    negative_text: Optional[Tensor] = None
    callback: Optional[ProgressCallback] = None
    should_stop: Optional[Callable[[], bool]] = None
    space: str = "model"

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device  # type: ignore[attr-defined]

    def slot(self, request: "SampleRequest") -> Optional[Tensor]:
        """The I2V channel slot "b (4+c) t h w" (model space), or None for a T2V backbone."""
        cfg = self.model.config  # type: ignore[attr-defined]
        b, c, t, h, w = request.shape
        given = [i for i, f in enumerate(request.first_frames) if f is not None]
        if cfg.in_dim != 2 * cfg.out_dim + 4:
            if given:
                raise OneStoryError("first_image (I2MSV) needs an image-to-video backbone (in_dim = 2·C + 4); "
                                    "this model is text-to-video — drop first_image or load an I2V model.")
            return None
        y = torch.zeros(b, 4 + c, t, h, w)
        for i in given:
            image = request.first_frames[i]
            if tuple(image.shape) != (c, h, w):
                raise ShapeError(f"first_image has shape {tuple(image.shape)}, expected 'c h w' = {(c, h, w)} "
                                 "(model-space latent of the start image at the story's latent size).")
            y[i, :4, 0] = 1.0
            y[i, 4:, 0] = image.float()
        return y

    @torch.no_grad()
    def __call__(self, request: "SampleRequest") -> Tensor:
        device = self._device()
        y = self.slot(request)
        cond = request.text.to(device).float()
        uncond = (torch.zeros_like(cond) if self.negative_text is None
                  else self.negative_text.to(device).float().unsqueeze(0))
        ctx = request.context
        n = ctx.counts[0] if len(ctx) else 0
        velocity = cfg_velocity(
            self.model, cond=cond, uncond=uncond, scale=self.cfg,
            y=None if y is None else y.to(device),
            ctx_tokens=ctx.tokens.to(device) if n else None,
            ctx_positions=ctx.positions.to(device) if n else None,
            context_in_negative=self.context_in_negative)
        return sample(velocity, request.noise().to(device), wan_sigmas(self.steps, self.shift), solver=self.solver,
                      callback=self.callback, should_stop=self.should_stop)
