"""The pack's node list (V3). Node ids are public API: never rename or reorder widgets."""
from __future__ import annotations

from comfy_api.latest import ComfyExtension, io

from .adapter_nodes import AdapterLoader
from .file_nodes import LoadStory, SaveStory
from .next_shot_nodes import NextShot, NextShots
from .preview_nodes import PreviewMemory
from .select_nodes import AdaptiveConditioner, ApplyContext, FrameSelector
from .story_nodes import AddShot, EditMemory, NewStory, StoryToLatent

NODES: list[type[io.ComfyNode]] = [
    AdapterLoader, NewStory, AddShot, EditMemory, FrameSelector, AdaptiveConditioner, ApplyContext,
    NextShot, NextShots, SaveStory, LoadStory, PreviewMemory, StoryToLatent,
]


class OneStoryExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)
