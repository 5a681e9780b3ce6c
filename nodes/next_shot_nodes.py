"""Next Shot (one shot per node) and Next Shots (a list of captions in one node).

This ComfyUI version (0.33.0, 2026-08-22) has no core StartLoop/EndLoop nodes, so a caption
list is handled by list processing instead: CreateList → CLIP Text Encode maps over the list,
and Next Shots (is_input_list) receives every conditioning and runs the shots in order,
carrying the story from one to the next.
"""
from __future__ import annotations

import torch
from comfy_api.latest import io, ui

from .glue import overrides
from .glue.bridge import check_channels
from .glue.core import defaults
from .glue.next_shot import ROUTES, ShotSettings, generate_shot, latent_size
from .glue.payload import planned_tiers, selection_payload
from .glue.selection import (BUDGET_TOOLTIP, K_TOOLTIP, SCORER_TOOLTIP, SCORERS, check_budget, kept_preview,
                             overrides_input, strip_payload)
from .glue.types import Adapter, SelectionBundle, SelectionType, Story

CATEGORY = "OneStory"


def sampler_names() -> list[str]:
    import comfy.samplers

    return list(comfy.samplers.KSampler.SAMPLERS)


def scheduler_names() -> list[str]:
    import comfy.samplers

    return list(comfy.samplers.KSampler.SCHEDULERS)


def shot_inputs() -> list:
    """Widgets shared by both nodes, in their public (never reorder) order."""
    return [
        io.String.Input("caption", multiline=True, default="", tooltip=
                        "The shot's caption as text, stored with the shot (encode the same text for 'positive')."),
        io.Int.Input("width", default=832, min=16, max=8192, step=16, tooltip="Frame width in pixels."),
        io.Int.Input("height", default=480, min=16, max=8192, step=16, tooltip="Frame height in pixels."),
        io.Int.Input("length", default=81, min=1, max=8192, step=4, tooltip="Frames per shot (4n+1 for Wan)."),
        # "fixed" by default: a seed that changes on every queue would re-run every shot, and
        # editing shot 3 must re-run only shots 3..N (the rest come from ComfyUI's cache).
        io.Int.Input("seed", default=0, min=0, max=0xffffffffffffffff,
                     control_after_generate=io.ControlAfterGenerate.fixed, tooltip=
                     "Noise seed of the shot (Next Shots adds the shot index). 'fixed' after generate by "
                     "default, so re-queuing re-runs only the shots whose inputs changed."),
        io.Int.Input("steps", default=defaults.STEPS, min=1, max=10000, tooltip="Sampling steps per shot."),
        io.Float.Input("cfg", default=defaults.CFG, min=0.0, max=100.0, step=0.1, round=0.01, tooltip="Classifier-free guidance scale."),
        io.Combo.Input("sampler_name", options=sampler_names(), default="euler", tooltip="ComfyUI sampler."),
        io.Combo.Input("scheduler", options=scheduler_names(), default="simple", tooltip="ComfyUI scheduler."),
        io.Int.Input("k", default=defaults.K, min=0, max=256, tooltip=K_TOOLTIP),
        io.Float.Input("budget", default=defaults.BUDGET, min=0.0, max=64.0, step=0.25, tooltip=BUDGET_TOOLTIP),
        io.Combo.Input("scorer", options=SCORERS, default=defaults.NODE_SCORER, tooltip=SCORER_TOOLTIP),
        io.Combo.Input("route", options=ROUTES, default="onestory", tooltip=
                       "How memory reaches the model: onestory = context tokens (paper); storymem = kept frames as "
                       "extra I2V frames (StoryMem LoRA on Wan 2.2 I2V A14B); keyframe = best frame as start image."),
        io.Boolean.Input("context_in_negative", default=defaults.CONTEXT_IN_NEGATIVE, tooltip=
                         "onestory route: keep the memory in the negative CFG branch too (paper default)."),
        io.Float.Input("switch_at", default=0.5, min=0.0, max=1.0, step=0.05, tooltip=
                       "With model_low (Wan 2.2 A14B): fraction of the steps run by the high-noise MODEL."),
    ]


def model_inputs() -> list:
    return [
        io.Model.Input("model", tooltip="The Wan MODEL (any loader; LoRAs welcome)."),
        io.Conditioning.Input("positive", tooltip="The shot's caption, encoded with the Wan text encoder."),
        io.Conditioning.Input("negative", tooltip="Negative prompt."),
        Story.Input("story", tooltip="The story so far (New Story for the first shot)."),
        Adapter.Input("adapter", tooltip="From OneStory Adapter Loader."),
    ]


def optional_inputs() -> list:
    return [
        io.Vae.Input("vae", optional=True, tooltip="Needed by start_image and the storymem / keyframe routes."),
        io.Model.Input("model_low", optional=True, tooltip="Wan 2.2 A14B: the low-noise expert MODEL."),
        io.Image.Input("start_image", optional=True, tooltip="I2V models: first frame of this shot (I2MSV)."),
        io.ClipVision.Input("clip_vision", optional=True, tooltip="keyframe route: also feed the keyframe to CLIP vision."),
    ]


def memory_rgb_of_latent(latent, adapter):
    """The new shot's first latent frame as a cheap RGB preview "1 h w 3" (timeline thumbnail)."""
    from .glue.bridge import latent_rgb

    first = latent[0, :, :1].movedim(1, 0).float()                # "1 c h w", bank space
    return latent_rgb(adapter.normalization.to_model(first), adapter.latent_format)


def uses_memory(s: ShotSettings, story) -> bool:
    """The onestory route will keep memory frames: k > 0 or a pinned frame (k = 0 = no memory)."""
    return s.route == "onestory" and (s.k > 0 or any(story.pinned))


def check_size(story, model, s: ShotSettings, node: str) -> None:
    """The shot's pixel size must give the story's latent size; the message says width and
    height by name for both (pixels and latents), so no W×H / H×W mix-up is possible."""
    if not story.num_frames:
        return
    c, _, h, w = latent_size(model, s)
    check_channels(story, c, "MODEL")          # another VAE family first: a size hint would mislead
    if (h, w) == (story.height, story.width):
        return
    ratio = model.get_model_object("latent_format").spacial_downscale_ratio
    raise ValueError(f"{node}: width {s.width} and height {s.height} pixels give latent frames of width {w} and "
                     f"height {h}, but this story's latent frames have width {story.width} and height "
                     f"{story.height}. Set width {story.width * ratio} and height {story.height * ratio} (the "
                     "size of the story's earlier shots), or start a new story.")


def check_lists(positive: list, negative: list, captions: list, single: dict) -> int:
    """Next Shots' list lengths -> number of shots. One shot per positive; caption must match it
    one to one; negative may be one for all shots or one per shot; every other input is one
    value for all shots. Anything else is an error naming both lengths (never a silent drop)."""
    n = len(positive)
    if len(captions) != n:
        raise ValueError(
            f"Next Shots: positive has {n} entr{'y' if n == 1 else 'ies'} (one shot each) but caption has "
            f"{len(captions)}. Connect the same caption list to CLIP Text Encode's text and to caption "
            "(as in the caption-list example) so every shot has its own caption.")
    if len(negative) not in (1, n):
        raise ValueError(f"Next Shots: negative has {len(negative)} entries but positive has {n}; give one "
                         "negative for all shots or one per shot.")
    for name, values in single.items():
        if values is not None and len(values) != 1:
            raise ValueError(f"Next Shots: {name} has {len(values)} values but takes one for all {n} shots "
                             "(only positive, negative and caption are per shot); connect a single value.")
    return n


def settings(kw: dict, seed_offset: int = 0) -> ShotSettings:
    fields = ShotSettings.__dataclass_fields__
    values = {k: kw[k] for k in fields}
    values["seed"] = int(values["seed"]) + seed_offset
    return ShotSettings(**values)


class NextShot(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="OneStoryNextShot",
            display_name="OneStory Next Shot",
            category=CATEGORY,
            description="Generates the next shot of the story: selects memory frames for the caption, conditions the "
                        "Wan MODEL on them, samples with ComfyUI's sampler (live preview, interruptible) and adds "
                        "the shot. Outputs the shot's latent, the longer story and the selection used.",
            inputs=model_inputs() + shot_inputs() + optional_inputs() + [overrides_input()],
            outputs=[io.Latent.Output(display_name="latent"), Story.Output(display_name="story"),
                     SelectionType.Output(display_name="selection")],
        )

    @classmethod
    def validate_inputs(cls, memory_overrides: str = "") -> bool | str:
        return overrides.check(memory_overrides)

    @classmethod
    def execute(cls, model, positive, negative, story, adapter, vae=None, model_low=None, start_image=None,
                clip_vision=None, memory_overrides: str = "", **kw) -> io.NodeOutput:
        s = settings(kw)
        view, ov = overrides.apply(story, memory_overrides)   # this shot's pins/excludes, on a copy
        check_size(view, model, s, "Next Shot")
        if view.num_frames:
            check_budget(view.height, view.width, adapter, s.budget, "Next Shot", uses_memory(s, view))
        out = generate_shot(model, positive, negative, view, adapter, kw["caption"], s, vae=vae,
                            model_low=model_low, start_image=start_image, clip_vision=clip_vision)
        # The story passed on keeps the input story's own flags: overrides are this shot's only.
        new_story = out.story if view is story else overrides.restore_flags(story, out.story)
        payload = {"shot": story.num_shots, "route": s.route, "context_tokens": out.tokens, "caption": kw["caption"]}
        previews, tiers = {}, None
        if out.selection is not None:
            payload.update(selection_payload(view, out.selection, s.k))
            if s.route == "onestory":
                tiers = planned_tiers(view, out.selection, adapter.conditioner, s.budget)
            if out.selection.kept:
                previews = ui.PreviewImage(kept_preview(view, out.selection, adapter), cls=cls).as_dict()
        first = memory_rgb_of_latent(out.latent, adapter)
        payload.update(strip_payload(cls, view, out.selection, ov, adapter, tiers,
                                     s.budget if tiers is not None else None, first_frame=first))
        return io.NodeOutput({"samples": out.latent}, new_story, SelectionBundle(out.selection, story.fingerprint()),
                             ui={**previews, "onestory_selection": [payload]})


class NextShots(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="OneStoryNextShots",
            display_name="OneStory Next Shots (caption list)",
            category=CATEGORY,
            description="Generates one shot per entry of a caption list (e.g. CreateList → CLIP Text Encode), in "
                        "order, each conditioned on every earlier shot. Outputs all new shots as one latent and the story.",
            is_input_list=True,
            inputs=model_inputs() + shot_inputs() + optional_inputs(),
            outputs=[io.Latent.Output(display_name="latent"), Story.Output(display_name="story")],
        )

    @classmethod
    def execute(cls, model, positive, negative, story, adapter, vae=None, model_low=None, start_image=None,
                clip_vision=None, **kw) -> io.NodeOutput:
        import comfy.utils

        one = lambda v: None if v is None else v[0]  # noqa: E731  (scalars arrive as 1-element lists)
        captions = kw.pop("caption")
        count = check_lists(positive, negative, captions, {
            "model": model, "story": story, "adapter": adapter, "vae": vae, "model_low": model_low,
            "start_image": start_image, "clip_vision": clip_vision, **kw})
        scalars = {k: v[0] for k, v in kw.items()}
        bank, shots, summary = story[0], [], []
        first = settings(scalars)
        check_size(bank, one(model), first, "Next Shots")
        if count > 1 or bank.num_frames:        # some shot will have memory
            _, _, h, w = latent_size(one(model), first)
            check_budget(h, w, one(adapter), first.budget, "Next Shots", uses_memory(first, bank))
        # One bar over every sampler step of every shot (the per-shot sampler bar would restart at 0
        # for each shot). Steps are the same for all shots (one widget value).
        total = len(positive) * scalars["steps"]
        pbar = comfy.utils.ProgressBar(total)
        for i, pos in enumerate(positive):
            caption = captions[i]
            neg = negative[i] if len(negative) == count else negative[0]
            out = generate_shot(one(model), pos, neg, bank, one(adapter), caption, settings(scalars, i),
                                vae=one(vae), model_low=one(model_low),
                                start_image=one(start_image) if i == 0 else None, clip_vision=one(clip_vision),
                                progress=(i * scalars["steps"], total, pbar))
            summary.append({"shot": bank.num_shots, "caption": caption, "context_tokens": out.tokens,
                            "kept": [] if out.selection is None else list(out.selection.kept)})
            bank = out.story
            shots.append(out.latent)
            pbar.update_absolute((i + 1) * scalars["steps"], total)
        return io.NodeOutput({"samples": torch.cat(shots, dim=2)}, bank, ui={"onestory_shots": summary})
