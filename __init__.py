"""OneStory for ComfyUI — V3 registration only.

Only `comfy_entrypoint` is exported (no NODE_CLASS_MAPPINGS): ComfyUI loads the V1 mappings
and skips the entrypoint when both exist. Outside ComfyUI (CI, `python -m onestory`) this
file is not imported; the core lives in `onestory/` and never imports comfy.
"""
WEB_DIRECTORY = "./js"


async def comfy_entrypoint():
    from .nodes.extension import OneStoryExtension

    return OneStoryExtension()
