"""Selection and context building as the nodes use them: scorer resolution, checks against the
adapter, previews, the memory strip payload and the widgets shared by several nodes."""
from __future__ import annotations

import math

from comfy_api.latest import io, ui

from . import overrides
from .bridge import caption_tokens, check_channels, latent_rgb
from .core import Context, defaults, select, solve_budget, tokens_per_frame
from .payload import memory_frames, thumbs, tier_labels

SCORERS = ["auto", "learned", "sink_recent", "recency", "novelty", "uniform"]
K_TOOLTIP = ("How many memory frames to keep (top-K). Pinned frames are always kept; if K exceeds the "
             "selectable frames, all are kept (the UI note says so). 0 (and nothing pinned) = this shot "
             "without memory.")
BUDGET_TOOLTIP = ("onestory route: context token budget in latent-frame equivalents (1 = the tokens of one latent "
                  "frame at full resolution). More = more memory detail, slower sampling. Must fit at least one "
                  "memory frame (0 is refused); for a shot without memory set k to 0.")
SCORER_TOOLTIP = ("How frames are ranked. auto = learned if the adapter has a trained selector, else "
                  "sink_recent; learned = the paper's caption-aware selector; sink_recent = first shot + "
                  "latest frames; recency; novelty = diverse frames; uniform = spread over the story.")


def resolve_scorer(scorer: str, adapter) -> str:
    if scorer == "auto":
        return "learned" if adapter.trained else defaults.SCORER
    if scorer == "learned" and not adapter.trained:
        raise ValueError("scorer 'learned' needs a trained adapter; the training-free adapter has no selector. "
                         "Pick 'auto' or a heuristic scorer, or load a trained adapter.")
    return scorer


def selection_inputs(story, positive, adapter, scorer: str):
    """Checks shared by every selection; -> (scorer name, caption tokens "l d_t")."""
    if story.num_frames == 0:
        raise ValueError("the story is empty: there is nothing to select yet. Generate or add a first shot "
                         "(Next Shot handles an empty story by sampling without memory).")
    check_channels(story, adapter.backbone.latent_channels, "adapter's MODEL")
    name = resolve_scorer(scorer, adapter)
    text = caption_tokens(positive)
    if text.shape[-1] != adapter.backbone.text_dim:
        raise ValueError(f"the positive conditioning has {text.shape[-1]}-d tokens but the MODEL expects "
                         f"{adapter.backbone.text_dim}-d (umT5-XXL for Wan); use the Wan text encoder.")
    return name, text


def run_selection(story, positive, adapter, k: int, scorer: str):
    """The Frame Selector node's selection (Next Shot selects inside the core pipeline)."""
    name, text = selection_inputs(story, positive, adapter, scorer)
    return select(story, k, name, text=text, selector=adapter.selector, normalization=adapter.normalization)


def kept_preview(story, selection, adapter):
    """RGB thumbnails of the kept frames, in rank order (cheap latent → RGB, no VAE)."""
    frames = story.frames[list(selection.kept)].float()
    return latent_rgb(adapter.normalization.to_model(frames), adapter.latent_format)


def memory_rgb(story, adapter):
    """Every memory frame as a cheap latent → RGB preview, in memory order."""
    return latent_rgb(adapter.normalization.to_model(story.frames.float()), adapter.latent_format)


def overrides_input():
    """The last input of Frame Selector, Next Shot and Preview Memory (appended; never reorder)."""
    return io.String.Input(overrides.WIDGET, default="", multiline=False, optional=True, tooltip=overrides.TOOLTIP)


def strip_payload(cls, view, selection, ov, adapter, tiers, tier_budget, first_frame=None) -> dict:
    """What the memory strip draws: every memory frame (score, rank, tier, flags, override) + thumbnails."""
    save = lambda image: ui.PreviewImage(image, cls=cls).as_dict()["images"][0]  # noqa: E731
    rgb = memory_rgb(view, adapter) if view.num_frames else None
    if rgb is None and first_frame is None:
        return {"memory_frames": []}
    rgb = rgb if rgb is not None else first_frame[:0]
    return {"memory_frames": memory_frames(view, selection, ov, tiers),
            "captions": [s.caption for s in view.shots],
            "tier_labels": tier_labels(adapter.conditioner), "tier_budget": tier_budget,
            "thumbs": thumbs(rgb, save, first_frame)}


def build_context(story, selection, adapter, budget: float) -> Context:
    return adapter.conditioner.build(story, selection, budget, normalization=adapter.normalization)


def check_budget(h: int, w: int, adapter, budget: float, node: str, memory_wanted: bool,
                 k_input: str = "k") -> None:
    """Refuse a budget too small for even one memory frame at the coarsest tier.

    Such a budget gives the model zero context tokens while the selection still reports kept
    frames, so memory would silently be off. `memory_wanted` = frames will be (or were) kept:
    k > 0 or something pinned. "No memory" is k = 0, which the selection shows as nothing kept.
    `h`, `w` = the story's latent frame size; `k_input` names the k widget in the advice.
    """
    if not memory_wanted:
        return
    cond = adapter.conditioner
    if solve_budget(1, cond.kernels, h, w, budget, cond.patch):
        return
    need = tokens_per_frame(cond.kernels[-1], h, w)
    per_frame = tokens_per_frame(cond.patch, h, w)
    least = math.ceil(1000 * need / per_frame) / 1000          # rounded up: the value shown must fit
    tokens = f"{need} token{'' if need == 1 else 's'}"
    raise ValueError(f"{node}: budget {budget:g} gives {int(budget * per_frame)} context tokens, fewer than one "
                     f"memory frame needs at the coarsest tier ({tokens} at this story's latent size), so the "
                     f"memory would be ignored. Set budget to at least {least:g} (1.0 is the usual value), or "
                     f"set {k_input} to 0 for a shot without memory.")
