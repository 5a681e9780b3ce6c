"""Conversions between ComfyUI objects and OneStory core types.

Everything ComfyUI-specific that more than one node needs lives here, so node files stay
thin: MODEL → backbone facts and latent normalization, CONDITIONING → caption tokens,
LATENT ↔ bank frames, and the cheap latent → RGB preview.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .core import LatentNormalization


@dataclass(frozen=True)
class Backbone:
    """What OneStory needs to know about a Wan MODEL."""

    model_dim: int
    in_dim: int
    text_dim: int
    latent_channels: int
    num_layers: int
    model_type: str          # "t2v" | "i2v" (as ComfyUI detected it)
    family: str              # e.g. "wan2.1-i2v", "wan2.2-ti2v-5b"

    @property
    def i2v_slot(self) -> bool:
        """The model input has the image-conditioning channels [noise | mask4 | image]."""
        return self.in_dim == 2 * self.latent_channels + 4


def backbone_of(model) -> Backbone:
    """Backbone facts from a Wan MODEL (raises a clear error for a non-Wan MODEL)."""
    from .hook import wan_diffusion_model

    dm = wan_diffusion_model(model)
    in_dim = int(dm.patch_embedding.in_channels)
    out_dim = int(dm.out_dim)
    text_dim = int(dm.text_embedding[0].in_features)
    model_type = "i2v" if getattr(dm, "img_emb", None) is not None else "t2v"
    from types import SimpleNamespace

    from .core import BackboneInfo

    # Family names follow the core (adapter metadata): A14B I2V counts as "wan2.1-i2v" because
    # the conditioner depends only on the latent channel layout. Unknown layouts raise there.
    family = BackboneInfo.from_wan_config(SimpleNamespace(
        model_type=model_type, dim=int(dm.dim), text_dim=text_dim, in_dim=in_dim, out_dim=out_dim)).family
    return Backbone(int(dm.dim), in_dim, text_dim, out_dim, len(dm.blocks), model_type, family)


def patch_embedding_of(model) -> tuple[Tensor, Tensor]:
    """The MODEL's own patch embedding (weight "d i kt kh kw", bias "d"), fp32 on the CPU.

    Weights may be fp8/GGUF-backed or offloaded; `comfy.model_management.cast_to` gives a
    plain float tensor either way (the same call the ops use at forward time).
    """
    import comfy.model_management as mm
    from .hook import wan_diffusion_model

    pe = wan_diffusion_model(model).patch_embedding
    weight = mm.cast_to(pe.weight, dtype=torch.float32, device=torch.device("cpu"), copy=True)
    bias = mm.cast_to(pe.bias, dtype=torch.float32, device=torch.device("cpu"), copy=True)
    return weight, bias


def normalization_of(model) -> LatentNormalization:
    """Bank → model space as the MODEL's `process_latent_in` does it, as a core normalization.

    `process_latent_in` is affine per channel for every Wan latent format; probing it at 0 and
    1 recovers mean/std without depending on the latent format's attribute names.
    """
    c = model.get_model_object("latent_format").latent_channels
    zero = torch.zeros(1, c, 1, 1, 1)
    at0 = model.model.process_latent_in(zero).flatten().float()
    at1 = model.model.process_latent_in(zero + 1).flatten().float()
    scale = at1 - at0                      # = 1 / std
    return LatentNormalization(tuple((-at0 / scale).tolist()), tuple((1.0 / scale).tolist()))


def caption_tokens(positive: list) -> Tensor:
    """The umT5 caption tokens "l d_t" of the first positive conditioning entry."""
    if not positive or not isinstance(positive[0][0], Tensor):
        raise ValueError("positive conditioning is empty; connect the output of CLIP Text Encode.")
    text = positive[0][0]
    if text.ndim != 3:
        raise ValueError(f"positive conditioning tensor must be 'b l d', got shape {tuple(text.shape)}.")
    return text[0].float().cpu()


def latent_to_shot(latent: dict) -> Tensor:
    """LATENT["samples"] "b c t h w" → one shot "c t h w" (batch 1 only: a story is one video)."""
    samples = latent["samples"]
    if samples.ndim != 5:
        raise ValueError(f"the LATENT must be a video latent 'b c t h w', got shape {tuple(samples.shape)}; "
                         "use a Wan latent (e.g. from a sampler or 'Empty Hunyuan Latent Video').")
    if samples.shape[0] != 1:
        raise ValueError(f"the LATENT holds a batch of {samples.shape[0]} videos; a story shot is one "
                         "video. Use 'Latent From Batch' to pick one.")
    return samples[0].detach().float().cpu()


def check_channels(bank, channels: int, what: str) -> None:
    """Refuse a story whose latents come from another VAE than `what` uses."""
    if bank.channels is not None and bank.channels != channels:
        raise ValueError(
            f"this story holds {bank.channels}-channel latents but the {what} uses {channels}-channel "
            "latents: the story was made with another VAE/model family (Wan 2.1 = 16, Wan 2.2 5B = 48). "
            "Start a new story for this model.")


def latent_rgb(frames_model: Tensor, latent_format: Any) -> Tensor:
    """Cheap preview: model-space frames "f c h w" → IMAGE "f h w 3" in [0, 1].

    Uses the latent format's `latent_rgb_factors` (the same linear map as ComfyUI's live
    Latent2RGB preview); falls back to the first three channels when a format has none.
    """
    x = frames_model.float()
    factors = getattr(latent_format, "latent_rgb_factors", None)
    if factors is not None and len(factors) == x.shape[1]:
        w = torch.tensor(factors, dtype=torch.float32)                       # c 3
        bias = torch.tensor(latent_format.latent_rgb_factors_bias or [0.0] * 3, dtype=torch.float32)
        rgb = torch.einsum("fchw,cr->fhwr", x, w) + bias
    else:
        rgb = x[:, :3].movedim(1, -1)
    return ((rgb + 1.0) / 2.0).clamp(0.0, 1.0)


def vae_spatial_ratio(vae) -> int:
    """Pixels per latent pixel of a ComfyUI VAE (Wan 2.1: 8, Wan 2.2: 16)."""
    r = vae.downscale_ratio
    return int(r[-1] if isinstance(r, tuple) else r)


def encode_stills(vae, images: Tensor, height: int, width: int) -> Tensor:
    """IMAGE "n H W 3" → one latent frame per image, "c n h w" (bank space) at latent size h×w.

    Each image is encoded on its own (a video VAE would otherwise fold 4 images into one
    latent frame) after resizing to the pixel size of the story's latents.
    """
    import comfy.utils

    ratio = vae_spatial_ratio(vae)
    pix = comfy.utils.common_upscale(images.movedim(-1, 1), width * ratio, height * ratio,
                                     "bilinear", "center").movedim(1, -1)
    frames = [vae.encode(pix[i:i + 1, :, :, :3])[0, :, 0] for i in range(pix.shape[0])]
    return torch.stack(frames, dim=1).float().cpu()


def decode_video(vae, latent: Tensor) -> Tensor:
    """One video latent "1 c t h w" (bank space) → IMAGE "f H W 3", as the stock VAE Decode does.

    Wan's causal VAE turns t latent frames into 4·(t-1)+1 frames; a latent is decoded as one
    clip, so callers pass one shot at a time (a concatenation of shots would decode each later
    shot's first latent frame to 4 frames with the previous shot in the causal cache).
    """
    images = vae.decode(latent)
    return images.reshape(-1, *images.shape[-3:]).float().cpu()


def vae_latent_channels(vae) -> int | None:
    """Latent channels of a ComfyUI VAE (None when the VAE does not say)."""
    channels = getattr(vae, "latent_channels", None)
    return int(channels) if channels is not None else None
