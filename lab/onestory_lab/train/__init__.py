"""Training OneStory on the story world (paper §4.4): L_shot + λ·L_sel, shot inflation,
decoupled conditioning, AdamW, safetensors checkpoints, single process or torchrun/DDP (gloo).

config       TrainConfig (one dataclass, JSON round trip)
losses       sigma sampling, rectified-flow L_shot, selector L_sel
policies     context policies: which memory frames become context tokens, at which tier
model        StoryModel: DiT + selector + conditioner, build and per-item context batching
checkpoint   save / load (DiT in Wan key names, adapter file, optimizer safetensors + JSON)
loop         train(cfg)
See docs/training.md.
"""
from .config import TrainConfig

__all__ = ["TrainConfig"]
