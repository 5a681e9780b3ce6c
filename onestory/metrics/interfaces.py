"""The model interfaces the metrics call. Any callable with these signatures plugs in.

All images are float "n 3 h w" in [0, 1], any size (the encoder resizes and normalises).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol, Sequence

from torch import Tensor


class ImageEncoder(Protocol):
    """"n 3 h w" in [0, 1] -> "n d" image embeddings (not necessarily normalised)."""

    name: str

    def __call__(self, images: Tensor) -> Tensor: ...


class ImageTextModel(Protocol):
    """A contrastive image-text model (CLIP, SigLIP): both towers in one embedding space."""

    name: str

    def encode_images(self, images: Tensor) -> Tensor: ...      # "n 3 h w" -> "n d"

    def encode_texts(self, texts: Sequence[str]) -> Tensor: ...  # -> "n d"


class VideoTextModel(Protocol):
    """A video-text model (ViCLIP): one embedding per clip of frames."""

    name: str
    frames: int                                                  # frames it expects per clip

    def encode_videos(self, clips: Tensor) -> Tensor: ...        # "n t 3 h w" -> "n d"

    def encode_texts(self, texts: Sequence[str]) -> Tensor: ...  # -> "n d"


class PersonSegmenter(Protocol):
    """"n 3 h w" -> one bool "k h w" tensor of person instance masks per image (k may be 0)."""

    name: str

    def __call__(self, images: Tensor) -> list[Tensor]: ...


class FlowModel(Protocol):
    """Optical flow in pixels: frames a, b "n 3 h w" in [0, 1] -> "n 2 h w" (dx, dy)."""

    name: str

    def __call__(self, a: Tensor, b: Tensor) -> Tensor: ...


class AestheticScorer(Protocol):
    """"n 3 h w" -> "n" LAION aesthetic scores on the predictor's 0-10 scale."""

    name: str

    def __call__(self, images: Tensor) -> Tensor: ...


@dataclass(frozen=True)
class Models:
    """The models a score run has; None = the metrics that need it are reported as missing.

    dino       C-Cons / E-Cons region embeddings (the paper: DINOv2)
    subject    VBench subject consistency (VBench: DINO ViT-B/16; DINOv2 is used when that is what
               the user has; the model name is reported)
    clip       VBench background consistency (VBench: CLIP ViT-B/32 image tower)
    aesthetic  VBench aesthetic quality (LAION head on CLIP ViT-L/14)
    text       S-Align: a VideoTextModel (ViCLIP, as in the paper) or an ImageTextModel
    persons    person masks for C-Cons / E-Cons
    flow       VBench dynamic degree (RAFT)
    """

    dino: Optional[ImageEncoder] = None
    subject: Optional[ImageEncoder] = None
    clip: Optional[ImageEncoder] = None
    aesthetic: Optional[AestheticScorer] = None
    text: Optional[object] = None
    persons: Optional[PersonSegmenter] = None
    flow: Optional[FlowModel] = None
    # why a model is absent (e.g. "dinov2: no file models/dinov2.safetensors"), per field
    missing: tuple[tuple[str, str], ...] = ()
    # which of several candidates was chosen and why (e.g. ViCLIP over an image-text model), per field
    notes: tuple[tuple[str, str], ...] = ()

    def why_missing(self, field: str) -> str:
        for k, v in self.missing:
            if k == field:
                return v
        return f"no {field} model given"
