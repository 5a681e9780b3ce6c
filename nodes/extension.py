"""The pack's node list (V3). Node ids are public API: never rename or reorder widgets."""
from __future__ import annotations

from comfy_api.latest import ComfyExtension, io

from .adapter_nodes import AdapterLoader
from .file_nodes import LoadStory, SaveStory
from .next_shot_nodes import NextShot, NextShots
from .preview_nodes import PreviewMemory
from .select_nodes import AdaptiveConditioner, ApplyContext, FrameSelector
from .story_nodes import AddShot, DecodeStory, EditMemory, NewStory, StoryToLatent
from .story_score_nodes import EvalModelLoader, StoryScore

NODES: list[type[io.ComfyNode]] = [
    AdapterLoader, NewStory, AddShot, EditMemory, FrameSelector, AdaptiveConditioner, ApplyContext,
    NextShot, NextShots, SaveStory, LoadStory, PreviewMemory, StoryToLatent, DecodeStory, EvalModelLoader, StoryScore,
]


class OneStoryExtension(ComfyExtension):
    async def on_load(self) -> None:
        # The example workflows' Load Image nodes name images shipped with the pack.
        import folder_paths

        from .glue.example_inputs import install

        install(folder_paths.get_input_directory())

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)
