"""OneStory: next-shot multi-shot video generation with adaptive memory (pure PyTorch core).

This package never imports ComfyUI; `nodes/` adapts it to ComfyUI types.
"""

__version__ = "0.1.0"
