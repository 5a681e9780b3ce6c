"""ViCLIP (InternVid's video CLIP) in plain PyTorch: the S-Align model of the OneStory paper.

Ported from OpenGVLab/InternVideo `Data/InternVid/viclip/` (`viclip.py`, `viclip_vision.py`,
`viclip_text.py`; Apache-2.0, Copyright (c) OpenGVLab), the code that the Hugging Face repo
OpenGVLab/ViCLIP (weights `ViClip-InternVid-10M-FLT.pth`, MIT) ships and VBench runs for its
`overall_consistency`. Module names are the official ones, so the official state dict
(its "model" entry, converted once to safetensors by the user as docs/evaluation.md shows: keys
`vision_encoder.*`, `text_encoder.*`, `temp`) loads strictly.

    vision  "b t 3 h w" -> Conv3d patches (1 x p x p) per frame -> + class token, + spatial position
            embedding, + temporal position embedding per frame -> one ViT over all t * (h/p) * (w/p)
            tokens (joint space-time attention) -> ln_post(class token) @ proj -> "b d"
    text    "b l" ids -> CLIP text transformer (causal) -> ln_final at the end token (the largest id)
            @ text_projection -> "b d"

Eval path only: ViCLIP's training-time token masking, drop path and dropout are not ported (they are
identities at inference). Attention is `scaled_dot_product_attention` on the weights of the
original `nn.MultiheadAttention` (`attn.in_proj_weight`, `attn.in_proj_bias`, `attn.out_proj`).
"""
from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Mapping

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor, nn

HEAD_DIM = 64   # every released ViCLIP (B/16, L/14) uses 64-dim heads in both towers


@dataclass(frozen=True)
class ViCLIPConfig:
    """Defaults: ViCLIP-L/14 as released (InternVid-10M-FLT)."""

    image_size: int = 224
    patch_size: int = 14
    frames: int = 8
    vision_width: int = 1024
    vision_layers: int = 24
    embed_dim: int = 768
    text_width: int = 768
    text_layers: int = 12
    context_length: int = 32   # ViCLIP's max_txt_l (CLIP's 77 cut to 32)
    vocab_size: int = 49408

    @property
    def vision_heads(self) -> int:
        return self.vision_width // HEAD_DIM

    @property
    def text_heads(self) -> int:
        return self.text_width // HEAD_DIM


class QuickGELU(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(1.702 * x)


class Attention(nn.Module):
    """Multi-head self-attention holding nn.MultiheadAttention's parameters (packed q, k, v)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by {heads} heads")
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.randn(3 * width, width) * width ** -0.5)
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: Tensor, causal: bool) -> Tensor:   # "b n d"
        q, k, v = (rearrange(t, "b n (h e) -> b h n e", h=self.heads)
                   for t in F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1))
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        return self.out_proj(rearrange(out, "b h n e -> b n (h e)"))


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict([("c_fc", nn.Linear(width, 4 * width)), ("gelu", QuickGELU()),
                                              ("c_proj", nn.Linear(4 * width, width))]))

    def forward(self, x: Tensor, causal: bool = False) -> Tensor:
        x = x + self.attn(self.ln_1(x), causal)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int):
        super().__init__()
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(width, heads) for _ in range(layers))

    def forward(self, x: Tensor, causal: bool = False) -> Tensor:
        for block in self.resblocks:
            x = block(x, causal)
        return x


class VisionTransformer(nn.Module):
    """The space-time ViT of viclip_vision.py (kernel_size 1: one frame per patch)."""

    def __init__(self, cfg: ViCLIPConfig):
        super().__init__()
        w, p = cfg.vision_width, cfg.patch_size
        if cfg.image_size % p:
            raise ValueError(f"image_size {cfg.image_size} is not a multiple of patch_size {p}")
        self.conv1 = nn.Conv3d(3, w, (1, p, p), (1, p, p), bias=False)
        self.class_embedding = nn.Parameter(torch.randn(w) * w ** -0.5)
        self.positional_embedding = nn.Parameter(torch.randn((cfg.image_size // p) ** 2 + 1, w) * w ** -0.5)
        self.temporal_positional_embedding = nn.Parameter(torch.zeros(1, cfg.frames, w))
        self.ln_pre = nn.LayerNorm(w)
        self.transformer = Transformer(w, cfg.vision_layers, cfg.vision_heads)
        self.ln_post = nn.LayerNorm(w)
        self.proj = nn.Parameter(torch.randn(w, cfg.embed_dim) * w ** -0.5)

    def forward(self, video: Tensor) -> Tensor:
        """Normalised frames "b t 3 h w" (t = frames, or 1 for an image) -> "b d"."""
        b, t = video.shape[:2]
        x = self.conv1(rearrange(video, "b t c h w -> b c t h w"))
        x = rearrange(x, "b d t h w -> b t (h w) d") + self.positional_embedding[1:]
        # one frame gets the mean temporal embedding (the original's image path)
        temporal = self.temporal_positional_embedding.mean(1, keepdim=True) if t == 1 else self.temporal_positional_embedding
        x = rearrange(x + temporal[:, :, None], "b t n d -> b (n t) d")
        cls = repeat(self.class_embedding + self.positional_embedding[0], "d -> b 1 d", b=b)
        x = self.ln_pre(torch.cat([cls, x], dim=1))
        x = self.ln_post(self.transformer(x))
        return x[:, 0] @ self.proj


class TextTransformer(nn.Module):
    """CLIP's text tower (viclip_text.py's CLIP_TEXT)."""

    def __init__(self, cfg: ViCLIPConfig):
        super().__init__()
        w = cfg.text_width
        self.token_embedding = nn.Embedding(cfg.vocab_size, w)
        self.positional_embedding = nn.Parameter(torch.randn(cfg.context_length, w) * 0.01)
        self.transformer = Transformer(w, cfg.text_layers, cfg.text_heads)
        self.ln_final = nn.LayerNorm(w)
        self.text_projection = nn.Parameter(torch.randn(w, cfg.embed_dim) * w ** -0.5)

    def forward(self, ids: Tensor) -> Tensor:
        """"b l" token ids (start, text, end, zeros) -> "b d" at the end token (the largest id)."""
        x = self.token_embedding(ids) + self.positional_embedding[: ids.shape[1]]
        x = self.ln_final(self.transformer(x, causal=True))
        return x[torch.arange(x.shape[0]), ids.argmax(dim=-1)] @ self.text_projection


class ViCLIP(nn.Module):
    """Both towers; `temp` is the contrastive temperature (kept for strict loading, unused here)."""

    def __init__(self, cfg: ViCLIPConfig = ViCLIPConfig()):
        super().__init__()
        self.config = cfg
        self.vision_encoder = VisionTransformer(cfg)
        self.text_encoder = TextTransformer(cfg)
        self.temp = nn.Parameter(torch.tensor(0.01))

    def encode_video(self, video: Tensor) -> Tensor:
        """Normalised frames "b t 3 h w" -> unnormalised "b d" (ViCLIP's encode_vision(test=True))."""
        t = video.shape[1]
        if video.ndim != 5 or video.shape[2] != 3 or t not in (1, self.config.frames):
            raise ValueError(f"video: expected 'b t 3 h w' with t = {self.config.frames} (or 1), got {tuple(video.shape)}")
        return self.vision_encoder(video)

    def encode_ids(self, ids: Tensor) -> Tensor:
        """Token ids "b l" (l <= context_length) -> unnormalised "b d" (ViCLIP's encode_text)."""
        if ids.ndim != 2 or ids.shape[1] > self.config.context_length:
            raise ValueError(f"ids: expected 'b l' with l <= {self.config.context_length}, got {tuple(ids.shape)}")
        return self.text_encoder(ids)


def _layers(state: Mapping[str, Tensor], prefix: str) -> int:
    found = {int(m.group(1)) for k in state if (m := re.match(re.escape(prefix) + r"\.transformer\.resblocks\.(\d+)\.", k))}
    return max(found) + 1 if found else 0


def config_from_state(state: Mapping[str, Tensor]) -> ViCLIPConfig:
    """Sizes read off the tensor shapes (heads = width / 64); KeyError when a key is absent."""
    conv = state["vision_encoder.conv1.weight"]              # "w 3 1 p p"
    if conv.ndim != 5 or conv.shape[2] != 1:
        raise ValueError(f"vision_encoder.conv1.weight has shape {tuple(conv.shape)}; ViCLIP's is (width, 3, 1, p, p)")
    grid = round((state["vision_encoder.positional_embedding"].shape[0] - 1) ** 0.5)
    tokens = state["text_encoder.token_embedding.weight"]
    return ViCLIPConfig(image_size=grid * conv.shape[-1], patch_size=conv.shape[-1],
                        frames=state["vision_encoder.temporal_positional_embedding"].shape[1],
                        vision_width=conv.shape[0], vision_layers=_layers(state, "vision_encoder"),
                        embed_dim=state["vision_encoder.proj"].shape[1], text_width=tokens.shape[1],
                        text_layers=_layers(state, "text_encoder"),
                        context_length=state["text_encoder.positional_embedding"].shape[0], vocab_size=tokens.shape[0])


def _listed(keys: list[str]) -> str:
    return f"{len(keys)}: {', '.join(keys[:4])}{', ...' if len(keys) > 4 else ''}"


def from_state_dict(state: Mapping[str, Tensor]) -> ViCLIP:
    """A ViCLIP with exactly these weights (strict: every key and shape must match), in eval mode.
    Keys may all carry one `module.` prefix (a DistributedDataParallel save); it is stripped.
    ValueError names the missing, unexpected and misshapen keys."""
    if state and all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    try:
        model = ViCLIP(config_from_state(state))
    except KeyError as e:
        raise ValueError(f"no {e.args[0]} among its {len(state)} keys") from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
              if k in state and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        raise ValueError("; ".join(f"{what} keys {_listed(keys)}" for what, keys in
                                   (("missing", missing), ("unexpected", unexpected), ("misshapen", shapes)) if keys))
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return model.eval().requires_grad_(False)
