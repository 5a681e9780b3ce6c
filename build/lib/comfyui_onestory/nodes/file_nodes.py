"""Save Story / Load Story: one safetensors file per story, by relative name only.

Save writes under ComfyUI's output directory, Load reads from its input directory (where
uploads land), so shared workflows hold no machine-specific paths. `..`, absolute paths and
names escaping the directory are refused by the core's `safe_relative_path`.
"""
from __future__ import annotations

import os

import folder_paths
from comfy_api.latest import io, ui

from .glue.core import MemoryBank
from .glue.core import safe_relative_path
from .glue.payload import story_payload
from .glue.types import Story

SUFFIX = ".safetensors"


class SaveStory(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="OneStorySaveStory",
            display_name="OneStory Save Story",
            category="OneStory",
            description="Saves the story (latents, captions, pins, selection history) to ComfyUI's output folder "
                        "so it can be continued later with Load Story.",
            inputs=[
                Story.Input("story", tooltip="The story to save."),
                io.String.Input("name", default="stories/my_story", tooltip=
                                "Relative file name under the output folder ('.safetensors' is added). "
                                "Absolute paths and '..' are refused."),
            ],
            outputs=[],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, story, name: str) -> io.NodeOutput:
        base = folder_paths.get_output_directory()
        path = safe_relative_path(base, name, SUFFIX)
        os.makedirs(path.parent, exist_ok=True)
        story.save(path)
        rel = os.path.relpath(path, base).replace(os.sep, "/")
        return io.NodeOutput(ui={**ui.PreviewText(f"saved {story.num_shots} shots to output/{rel}").as_dict(),
                                 "onestory_story": [story_payload(story)]})


class LoadStory(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="OneStoryLoadStory",
            display_name="OneStory Load Story",
            category="OneStory",
            description="Loads a story saved by Save Story from ComfyUI's input folder (copy or upload it there).",
            inputs=[
                io.String.Input("name", default="stories/my_story", tooltip=
                                "Relative file name under the input folder ('.safetensors' is added). "
                                "Absolute paths and '..' are refused."),
            ],
            outputs=[Story.Output(display_name="story")],
        )

    @classmethod
    def fingerprint_inputs(cls, name: str):
        # Re-load when the file changes on disk; the name alone would keep a stale cached story.
        try:
            st = os.stat(safe_relative_path(folder_paths.get_input_directory(), name, SUFFIX))
            return f"{name}|{st.st_mtime_ns}|{st.st_size}"
        except (OSError, ValueError):
            return name  # execute() reports the problem with a clear message

    @classmethod
    def execute(cls, name: str) -> io.NodeOutput:
        path = safe_relative_path(folder_paths.get_input_directory(), name, SUFFIX)
        if not path.is_file():
            raise ValueError(f"Load Story: no story file input/{name} (looked for {path.name}); save one with "
                             "Save Story and copy it from the output folder into the input folder.")
        return io.NodeOutput(MemoryBank.load(path))
