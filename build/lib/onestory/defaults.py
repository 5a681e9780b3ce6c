"""Every default of the next-shot pipeline in one place: the core, the ComfyUI node widgets and the
command line read them from here, so they cannot drift apart.

K = 9 and the kernel table are the paper-scale preset A (`docs/architecture.md`): at a budget of
one latent frame on a 480p Wan latent, the top 2 frames get (1,4,4) and the next 7 (1,8,8).
"""
from __future__ import annotations

Kernel = tuple[int, int, int]

K: int = 9                      # memory frames the selector keeps (top-K)
BUDGET: float = 1.0             # context size in latent-frame equivalents (paper default: 1)
SCORER: str = "sink_recent"     # training-free scorer when no trained selector exists
NODE_SCORER: str = "auto"       # node widgets: learned with a trained adapter, else SCORER
KERNELS: tuple[Kernel, ...] = ((1, 2, 2), (1, 4, 4), (1, 8, 8), (1, 16, 16))
PATCH: Kernel = (1, 2, 2)       # Wan's patch embedding
CONTEXT_IN_NEGATIVE: bool = True

# standalone sampling (Wan 2.1 reference settings); ComfyUI uses its own sampler widgets
STEPS: int = 20
SHIFT: float = 5.0
CFG: float = 5.0
SOLVER: str = "euler"
