"""The paper's two stages as separate nodes, plus Apply Context for the stock samplers:
Frame Selector (story + caption → ranked top-K), Adaptive Conditioner (→ context tokens),
Apply Context (MODEL + context → patched clone)."""
from __future__ import annotations

from comfy_api.latest import io, ui

from .glue import overrides
from .glue.core import defaults
from .glue.hook import apply_context
from .glue.payload import planned_tiers, selection_payload
from .glue.selection import (K_TOOLTIP, SCORER_TOOLTIP, SCORERS, build_context, check_budget, kept_preview,
                             overrides_input, run_selection, strip_payload)
from .glue.types import Adapter, ContextType, SelectionBundle, SelectionType, Story

CATEGORY = "OneStory"


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
                io.Int.Input("k", default=defaults.K, min=0, max=256, tooltip=K_TOOLTIP),
                io.Combo.Input("scorer", options=SCORERS, default=defaults.NODE_SCORER, tooltip=SCORER_TOOLTIP),
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
                io.Float.Input("budget", default=defaults.BUDGET, min=0.0, max=64.0, step=0.25, tooltip=
                               "Token budget in latent-frame equivalents (1 = the tokens of one latent frame at "
                               "full resolution). More = more memory detail, slower sampling. Must fit at least "
                               "one memory frame (0 is refused); for no memory set the Frame Selector's k to 0."),
            ],
            outputs=[ContextType.Output(display_name="context")],
        )

    @classmethod
    def execute(cls, story, selection, adapter, budget: float) -> io.NodeOutput:
        if selection.story_fingerprint != story.fingerprint():
            raise ValueError("Adaptive Conditioner: the selection was made from a different story (or an earlier "
                             "version of it); connect the same story to both nodes.")
        if story.num_frames:
            check_budget(story.height, story.width, adapter, budget, "Adaptive Conditioner",
                         bool(selection.selection.kept), k_input="the Frame Selector's k")
        return io.NodeOutput(build_context(story, selection.selection, adapter, budget))


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
                io.Boolean.Input("context_in_negative", default=defaults.CONTEXT_IN_NEGATIVE, tooltip=
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
