"""Preview Memory: every memory frame as a thumbnail grid, without decoding through the VAE."""
from __future__ import annotations

from comfy_api.latest import io, ui

from .glue import overrides
from .glue.bridge import check_channels, latent_rgb, normalization_of
from .glue.payload import grid, memory_frames, story_payload, thumbs
from .glue.types import Story


class PreviewMemory(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="OneStoryPreviewMemory",
            display_name="OneStory Preview Memory",
            category="OneStory",
            description="Shows every memory frame (one row per shot) using the model's cheap latent→RGB preview, "
                        "plus the shot list, pins and exclusions on the node.",
            inputs=[
                Story.Input("story", tooltip="The story to show."),
                io.Model.Input("model", tooltip="The Wan MODEL; its latent format gives the latent→RGB preview colours."),
                io.Int.Input("columns", default=8, min=1, max=64, tooltip="Thumbnails per row."),
                io.String.Input(overrides.WIDGET, default="", multiline=False, optional=True, tooltip=
                                overrides.TOOLTIP + " Here it only changes what is shown (the story passes "
                                "through unchanged); use it to try pins before copying them to a shot node."),
            ],
            outputs=[io.Image.Output(display_name="grid")],
            is_output_node=True,
        )

    @classmethod
    def validate_inputs(cls, memory_overrides: str = "") -> bool | str:
        return overrides.check(memory_overrides)

    @classmethod
    def execute(cls, story, model, columns: int, memory_overrides: str = "") -> io.NodeOutput:
        if story.num_frames == 0:
            raise ValueError("Preview Memory: the story is empty; add or generate a shot first.")
        latent_format = model.get_model_object("latent_format")
        check_channels(story, latent_format.latent_channels, "MODEL")
        view, ov = overrides.apply(story, memory_overrides)
        rgb = latent_rgb(normalization_of(model).to_model(view.frames.float()), latent_format)
        image = grid(rgb, columns)
        save = lambda im: ui.PreviewImage(im, cls=cls).as_dict()["images"][0]  # noqa: E731
        payload = {**story_payload(story), "memory_frames": memory_frames(view, None, ov),
                   "captions": [s.caption for s in view.shots], "thumbs": thumbs(rgb, save)}
        return io.NodeOutput(image, ui={**ui.PreviewImage(image, cls=cls).as_dict(), "onestory_story": [payload]})
