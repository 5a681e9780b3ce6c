"""The paper's two stages as separate nodes, plus Apply Context for the stock samplers:
Frame Selector (story + caption → ranked top-K), Adaptive Conditioner (→ context tokens),
Apply Context (MODEL + context → patched clone)."""
from __future__ import annotations

from comfy_api.latest import io, ui

from ..onestory.conditioner import Context
from . import overrides
from .bridge import caption_tokens, check_channels, latent_rgb
from .hook import apply_context
from .payload import memory_frames, planned_tiers, selection_payload, thumbs, tier_labels
from .types import Adapter, ContextType, SelectionBundle, SelectionType, Story

CATEGORY = "OneStory"
SCORERS = ["auto", "learned", "sink_recent", "recency", "novelty", "uniform"]
K_TOOLTIP = ("How many memory frames to keep (top-K). Pinned frames are always kept; if K exceeds the "
             "selectable frames, all are kept (the UI note says so).")
SCORER_TOOLTIP = ("How frames are ranked. auto = learned if the adapter has a trained selector, else "
                  "sink_recent; learned = the paper's caption-aware selector; sink_recent = first shot + "
                  "latest frames; recency; novelty = diverse frames; uniform = spread over the story.")


def resolve_scorer(scorer: str, adapter) -> str:
    if scorer == "auto":
        return "learned" if adapter.trained else "sink_recent"
    if scorer == "learned" and not adapter.trained:
        raise ValueError("scorer 'learned' needs a trained adapter; the training-free adapter has no selector. "
                         "Pick 'auto' or a heuristic scorer, or load a trained adapter.")
    return scorer


def run_selection(story, positive, adapter, k: int, scorer: str):
    """Core call shared by Frame Selector and Next Shot."""
    from ..onestory.selector import select

    if story.num_frames == 0:
        raise ValueError("the story is empty: there is nothing to select yet. Generate or add a first shot "
                         "(Next Shot handles an empty story by sampling without memory).")
    check_channels(story, adapter.backbone.latent_channels, "adapter's MODEL")
    name = resolve_scorer(scorer, adapter)
    text = caption_tokens(positive)
    if text.shape[-1] != adapter.backbone.text_dim:
        raise ValueError(f"the positive conditioning has {text.shape[-1]}-d tokens but the MODEL expects "
                         f"{adapter.backbone.text_dim}-d (umT5-XXL for Wan); use the Wan text encoder.")
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


class FrameSelector(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="OneStoryFrameSelector",
            display_name="OneStory Frame Selector",
            category=CATEGORY,
            description="Ranks every memory frame for the next shot's caption and keeps the top K (pinned frames "
                        "always, excluded never). Shows the kept frames and their scores on the node.",
            inputs=[
                Story.Input("story", tooltip="The story whose memory is searched."),
                io.Conditioning.Input("positive", tooltip="The next shot's caption (CLIP Text Encode with the Wan text encoder)."),
                Adapter.Input("adapter", tooltip="From OneStory Adapter Loader."),
                io.Int.Input("k", default=8, min=0, max=256, tooltip=K_TOOLTIP),
                io.Combo.Input("scorer", options=SCORERS, default="auto", tooltip=SCORER_TOOLTIP),
                overrides_input(),
            ],
            outputs=[SelectionType.Output(display_name="selection")],
            is_output_node=True,
        )

    @classmethod
    def validate_inputs(cls, memory_overrides: str = "") -> bool | str:
        return overrides.check(memory_overrides)

    @classmethod
    def execute(cls, story, positive, adapter, k: int, scorer: str, memory_overrides: str = "") -> io.NodeOutput:
        view, ov = overrides.apply(story, memory_overrides)     # a copy with this node's pins/excludes
        selection = run_selection(view, positive, adapter, k, scorer)
        payload = selection_payload(view, selection, k)
        # Tiers as the Adaptive Conditioner would assign them at the adapter's default budget.
        tiers = planned_tiers(view, selection, adapter.conditioner, adapter.default_budget)
        payload.update(strip_payload(cls, view, selection, ov, adapter, tiers, adapter.default_budget))
        previews = ui.PreviewImage(kept_preview(view, selection, adapter), cls=cls).as_dict() \
            if selection.kept else {"images": []}
        # The selection ranks the input story's frames (same frames, only flags differ), so it
        # carries the input story's fingerprint and pairs with it in the Adaptive Conditioner.
        return io.NodeOutput(SelectionBundle(selection, story.fingerprint()),
                             ui={**previews, "onestory_selection": [payload]})


class AdaptiveConditioner(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="OneStoryAdaptiveConditioner",
            display_name="OneStory Adaptive Conditioner",
            category=CATEGORY,
            description="Turns the selected frames into context tokens: higher-ranked frames get finer patches, "
                        "within a token budget. Computed once per shot.",
            inputs=[
                Story.Input("story", tooltip="The same story the selection was made from."),
                SelectionType.Input("selection", tooltip="From OneStory Frame Selector."),
                Adapter.Input("adapter", tooltip="From OneStory Adapter Loader."),
                io.Float.Input("budget", default=1.0, min=0.0, max=64.0, step=0.25, tooltip=
                               "Token budget in latent-frame equivalents (1 = the tokens of one latent frame at "
                               "full resolution). More = more memory detail, slower sampling."),
            ],
            outputs=[ContextType.Output(display_name="context")],
        )

    @classmethod
    def execute(cls, story, selection, adapter, budget: float) -> io.NodeOutput:
        if selection.story_fingerprint != story.fingerprint():
            raise ValueError("Adaptive Conditioner: the selection was made from a different story (or an earlier "
                             "version of it); connect the same story to both nodes.")
        return io.NodeOutput(build_context(story, selection.selection, adapter, budget))


def build_context(story, selection, adapter, budget: float) -> Context:
    return adapter.conditioner.build(story, selection, budget, normalization=adapter.normalization)


class ApplyContext(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="OneStoryApplyContext",
            display_name="OneStory Apply Context",
            category=CATEGORY,
            description="Returns a patched copy of the Wan MODEL whose blocks attend to the context tokens; use it "
                        "with the stock KSampler / SamplerCustomAdvanced. The input MODEL is not changed.",
            inputs=[
                io.Model.Input("model", tooltip="A Wan 2.1/2.2 MODEL (any loader, LoRAs applied or not)."),
                ContextType.Input("context", tooltip="From OneStory Adaptive Conditioner."),
                io.Boolean.Input("context_in_negative", default=True, tooltip=
                                 "Keep the memory in the negative (CFG) branch too, as the paper does. Off = "
                                 "the negative runs without memory (pushes harder toward the memory; 2 passes)."),
                io.Model.Input("model_low", optional=True, tooltip=
                               "Wan 2.2 A14B: the low-noise expert, patched the same way."),
            ],
            outputs=[io.Model.Output(display_name="model"), io.Model.Output(display_name="model_low")],
        )

    @classmethod
    def execute(cls, model, context, context_in_negative: bool, model_low=None) -> io.NodeOutput:
        patched = apply_context(model, context.tokens, context.positions, context_in_negative)
        low = patched if model_low is None else apply_context(model_low, context.tokens, context.positions,
                                                              context_in_negative)
        return io.NodeOutput(patched, low)
