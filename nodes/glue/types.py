"""Socket types of the pack and the small bundles that travel on them.

Sockets carry core objects (MemoryBank, Selection, Context) or, where a node needs more than
the core object, a frozen bundle defined here. All are immutable: ComfyUI caches outputs by
reference, so a node must never change what it received.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from comfy_api.latest import io

from .core import LatentNormalization, defaults

# Type names are public (they appear in saved workflows): never rename.
Story = io.Custom("ONESTORY_STORY")            # onestory.memory.MemoryBank
Adapter = io.Custom("ONESTORY_ADAPTER")        # AdapterBundle
SelectionType = io.Custom("ONESTORY_SELECTION")  # SelectionBundle
ContextType = io.Custom("ONESTORY_CONTEXT")    # onestory.conditioner.Context


@dataclass(frozen=True)
class AdapterBundle:
    """A OneStory adapter bound to the MODEL it was loaded for."""

    name: str                       # file name or "training-free"
    conditioner: Any                # onestory.conditioner.AdaptiveConditioner (eval mode, CPU)
    selector: Optional[Any]         # onestory.selector.FrameSelector | None (training-free)
    backbone: Any                   # nodes.bridge.Backbone
    normalization: LatentNormalization
    latent_format: Any              # the MODEL's comfy latent format (for RGB previews)
    default_budget: float = defaults.BUDGET   # the adapter's budget: Frame Selector's tier preview

    @property
    def trained(self) -> bool:
        return self.selector is not None


@dataclass(frozen=True)
class SelectionBundle:
    """A core Selection plus the fingerprint of the story it ranks (to catch mix-ups)."""

    selection: Any                  # onestory.selector.Selection
    story_fingerprint: str
