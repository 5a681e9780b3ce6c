"""Evaluation on held-out six-shot stories: batched autoregressive generation (shot 1 from text,
later shots from the memory of GENERATED shots), read back with the deterministic attribute
reader, exact metrics per pattern. See docs/results.md."""
from .generate import GenParams, StoryRun, generate_batch
from .metrics import story_metrics, aggregate

__all__ = ["GenParams", "StoryRun", "generate_batch", "story_metrics", "aggregate"]
