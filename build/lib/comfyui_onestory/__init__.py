"""OneStory for ComfyUI — V3 registration only.

Only `comfy_entrypoint` is exported, no V1 node-class mappings: when both exist ComfyUI loads
the V1 mappings and skips the entrypoint (tests/test_nodes_contract.py checks). Outside ComfyUI (CI, `python -m onestory_lab`) this
file is not imported; the core lives in `onestory/` and never imports comfy.
"""
WEB_DIRECTORY = "./js"


async def comfy_entrypoint():
    from .nodes.extension import OneStoryExtension

    return OneStoryExtension()
