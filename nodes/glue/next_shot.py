"""Next Shot: the core's next-shot pipeline (select → condition → sample → add the shot to the
story) with a sampler that runs ComfyUI's own sampling on the MODEL.

Three routes share the selection and differ in how memory reaches the model:
* onestory  — context tokens from the Adaptive Conditioner, injected by the block hook (paper).
* storymem  — the kept frames prepended as extra latent frames whose I2V channel slot holds the
              memory latent with mask "given"; they are trimmed from the output (StoryMem M2V).
* keyframe  — the top-ranked frame becomes the I2V start frame (and, with a CLIP-vision model,
              the CLIP-vision input), for any I2V model without training.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from .adapter_compat import check_bundle
from .bridge import backbone_of, check_channels
from .core import MemorySettings, NextShotPipeline, ShotSpec, defaults
from .hook import apply_context
from .selection import selection_inputs

ROUTES = ["onestory", "storymem", "keyframe"]


@dataclass(frozen=True)
class ShotSettings:
    width: int
    height: int
    length: int
    seed: int
    steps: int
    cfg: float
    sampler_name: str
    scheduler: str
    k: int
    budget: float
    scorer: str
    route: str
    context_in_negative: bool
    switch_at: float


@dataclass(frozen=True)
class ShotOutput:
    latent: Tensor          # "1 c t h w" bank space, the new shot only
    story: object           # MemoryBank with the shot added
    selection: object       # core Selection | None (first shot)
    tokens: int             # context tokens used (onestory route)


def latent_size(model, s: ShotSettings) -> tuple[int, int, int, int]:
    lf = model.get_model_object("latent_format")
    ratio_s, ratio_t = lf.spacial_downscale_ratio, lf.temporal_downscale_ratio
    return lf.latent_channels, (s.length - 1) // ratio_t + 1, s.height // ratio_s, s.width // ratio_s


def _set(cond: list, values: dict) -> list:
    import node_helpers

    return node_helpers.conditioning_set_values(cond, values)


def _gray_slot(vae, s: ShotSettings, start_image: Optional[Tensor]) -> tuple[Tensor, Tensor]:
    """The I2V slot as WanImageToVideo builds it: VAE(start image + 0.5-gray frames), mask 0 = given."""
    import comfy.utils

    image = torch.full((s.length, s.height, s.width, 3), 0.5)
    if start_image is not None:
        image[:1] = comfy.utils.common_upscale(start_image[:1].movedim(-1, 1), s.width, s.height,
                                               "bilinear", "center").movedim(1, -1)[..., :3]
    concat = vae.encode(image).float().cpu()
    mask = torch.ones(1, 1, concat.shape[2], concat.shape[-2], concat.shape[-1])
    if start_image is not None:
        mask[:, :, :1] = 0.0
    return concat, mask


def _callback(model, steps: int, progress: Optional[tuple], offset: int = 0):
    """Live preview + progress. Without `progress`: ComfyUI's own per-sampler bar (steps of this
    shot). With `progress = (done, total, pbar)`: one bar over several shots (Next Shots), the
    step reported as done + offset + i + 1 of total."""
    import latent_preview

    if progress is None:
        return latent_preview.prepare_callback(model, steps)
    done, total, pbar = progress
    previewer = latent_preview.get_previewer(model.load_device, model.model.latent_format)

    def callback(step, x0, x, total_steps):
        preview = None
        if previewer is not None and x0 is not None:
            preview = previewer.decode_latent_to_preview_image("JPEG", x0.tensors[0] if x0.is_nested else x0)
        pbar.update_absolute(done + offset + step + 1, total, preview)
    return callback


def _sample(model, model_low, positive, negative, latent: Tensor, s: ShotSettings,
            progress: Optional[tuple] = None) -> Tensor:
    """ComfyUI's own sampling path (comfy.sample.sample, as KSampler / KSamplerAdvanced)."""
    import comfy.sample
    import comfy.utils

    latent = comfy.sample.fix_empty_latent_channels(model, latent)
    noise = comfy.sample.prepare_noise(latent, s.seed)
    disable_pbar = not comfy.utils.PROGRESS_BAR_ENABLED
    if model_low is None:
        return comfy.sample.sample(model, noise, s.steps, s.cfg, s.sampler_name, s.scheduler, positive, negative,
                                   latent, denoise=1.0, callback=_callback(model, s.steps, progress),
                                   disable_pbar=disable_pbar, seed=s.seed)
    # Wan 2.2 A14B: high-noise expert for the first steps, low-noise expert for the rest, like two
    # KSamplerAdvanced nodes (leftover noise handed over, no new noise for the second pass).
    switch = min(s.steps, max(0, round(s.steps * s.switch_at)))
    x = comfy.sample.sample(model, noise, s.steps, s.cfg, s.sampler_name, s.scheduler, positive, negative, latent,
                            start_step=0, last_step=switch, force_full_denoise=False,
                            callback=_callback(model, s.steps, progress), disable_pbar=disable_pbar,
                            seed=s.seed)
    return comfy.sample.sample(model_low, comfy.sample.prepare_empty_noise(x), s.steps, s.cfg, s.sampler_name,
                               s.scheduler, positive, negative, x, disable_noise=True, start_step=switch,
                               last_step=s.steps, force_full_denoise=True,
                               callback=_callback(model_low, s.steps, progress, offset=switch),
                               disable_pbar=disable_pbar, seed=s.seed)


@dataclass(frozen=True)
class ComfySampler:
    """The pipeline's sampler inside ComfyUI: `comfy.sample` with the MODEL patched by the context
    (onestory route), or with the kept frames in the I2V slot (storymem / keyframe); one story per
    request. Returns bank-space latents, as ComfyUI's sampler does."""

    model: object
    model_low: object
    positive: list
    negative: list
    settings: ShotSettings
    vae: object = None
    start_image: Optional[Tensor] = None
    clip_vision: object = None
    progress: Optional[tuple] = None
    space: str = "bank"

    def __call__(self, request) -> Tensor:
        s, positive, negative = self.settings, self.positive, self.negative
        if request.shape[0] != 1:
            raise ValueError(f"Next Shot samples one story at a time, got {request.shape[0]}.")
        _, c, t, h, w = request.shape
        story, selection = request.banks[0], request.plan.selections[0]
        kept = list(selection.kept) if selection is not None else []
        context = request.context.contexts[0]
        patched, patched_low, prefix = self.model, self.model_low, 0
        if len(context):
            patched = apply_context(self.model, context.tokens, context.positions, s.context_in_negative)
            if self.model_low is not None:
                patched_low = apply_context(self.model_low, context.tokens, context.positions, s.context_in_negative)
        if s.route in ("storymem", "keyframe") or self.start_image is not None:
            vae = self.vae
            concat, mask = _gray_slot(vae, s, self.start_image)
            if s.route == "keyframe" and kept and self.start_image is None:
                key = story.frames[kept[0]].float()                       # "c h w", bank space
                concat[:, :, 0] = key
                mask[:, :, :1] = 0.0
                if self.clip_vision is not None:
                    image = vae.decode(key[None, :, None])                 # "1 (t) H W 3"
                    image = image.reshape(-1, *image.shape[-3:])[:1]
                    cv = self.clip_vision.encode_image(image)
                    positive, negative = _set(positive, {"clip_vision_output": cv}), _set(negative, {"clip_vision_output": cv})
            if s.route == "storymem" and kept:
                times = story.frame_times()
                ordered = sorted(kept, key=lambda i: float(times[i]))     # memory in story order, as StoryMem
                memory = story.frames[ordered].float().movedim(0, 1)[None]  # "1 c n h w"
                prefix = memory.shape[2]
                concat = torch.cat([memory, concat], dim=2)
                mask = torch.cat([torch.zeros(1, 1, prefix, h, w), mask], dim=2)
            values = {"concat_latent_image": concat, "concat_mask": mask}
            positive, negative = _set(positive, values), _set(negative, values)
        latent = torch.zeros(1, c, prefix + t, h, w)
        samples = _sample(patched, patched_low, positive, negative, latent, s, self.progress)
        return samples[:, :, prefix:].float().cpu()


def generate_shot(model, positive, negative, story, adapter, caption: str, s: ShotSettings, *,
                  vae=None, model_low=None, start_image: Optional[Tensor] = None,
                  clip_vision=None, progress: Optional[tuple] = None) -> ShotOutput:
    """One shot of the story through the core's next-shot pipeline. Inputs are never modified;
    the story returned is a new bank.

    `progress` = (steps already done, total steps, comfy.utils.ProgressBar) reports this shot's
    sampler steps on a bar shared by several shots (Next Shots); None = the sampler's own bar.
    """
    if s.route not in ROUTES:
        raise ValueError(f"Next Shot: unknown route {s.route!r}; choose one of {ROUTES}.")
    backbone = backbone_of(model)
    check_bundle(adapter, backbone, "MODEL")
    if model_low is not None:
        low = backbone_of(model_low)
        check_bundle(adapter, low, "model_low")
    c, t, h, w = latent_size(model, s)
    check_channels(story, c, "MODEL")
    if story.num_frames and (story.height, story.width) != (h, w):
        ratio = model.get_model_object("latent_format").spacial_downscale_ratio
        raise ValueError(f"Next Shot: the story's latents are {story.height}×{story.width} but {s.width}×{s.height} "
                         f"pixels give {h}×{w}; set width {story.width * ratio} and height {story.height * ratio}.")
    needs_slot = s.route in ("storymem", "keyframe") or start_image is not None
    if needs_slot and not backbone.i2v_slot:
        raise ValueError(f"Next Shot: route {s.route!r}/start_image needs an image-to-video Wan model (input "
                         f"channels 2·C+4); this MODEL ({backbone.family}) has {backbone.in_dim}. Use route "
                         "'onestory' or an I2V model.")
    if needs_slot and vae is None:
        raise ValueError("Next Shot: this route / start_image needs the vae input (connect your Wan VAE).")

    if story.num_frames:
        scorer, text = selection_inputs(story, positive, adapter, s.scorer)
    else:   # nothing to select: the caption features are not read (ComfyUI samples from `positive`)
        scorer, text = defaults.SCORER, torch.zeros(1, adapter.backbone.text_dim)
    pipeline = NextShotPipeline(adapter.conditioner, selector=adapter.selector, normalization=adapter.normalization)
    sampler = ComfySampler(model, model_low, positive, negative, s, vae=vae, start_image=start_image,
                           clip_vision=clip_vision, progress=progress)
    out = pipeline([story], [ShotSpec(caption, text, s.seed)], MemorySettings(s.k, s.budget, scorer), (t, h, w),
                   sampler, with_context=s.route == "onestory")
    return ShotOutput(out.latents[0], out.banks[0], out.plan.selections[0], out.plan.context.counts[0])
