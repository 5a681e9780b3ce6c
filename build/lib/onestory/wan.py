"""Standalone Wan 2.1 / 2.2 DiT with OneStory context injection (pure PyTorch).

Parameter names are the original Wan ones, i.e. the keys ComfyUI loads from
`models/diffusion_models`, so one checkpoint (and any adapter or LoRA trained on top of this
module) serves both the standalone and the ComfyUI world.

Context injection (OneStory §4.3): `ctx_tokens` "b n d" are hidden-width tokens made from
earlier shots. They join the noisy tokens of the new shot in the self-attention of every
block, with RoPE at `ctx_positions` (negative time), and leave before the output head. Since
cross-attention and the FFN act per token, letting them also pass through those (as ordinary
tokens) is the same as "concatenate after patch_embedding, run all blocks, drop before the
head" - which is what `WanModel.forward` does, and what a ComfyUI hook reproduces by carrying
the tokens from block to block.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, fields
from typing import Any, Mapping, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from .errors import OneStoryError, ShapeError
from .rope import apply_rope, axes_dims, grid_positions, rope_for

__all__ = ["WanConfig", "WanModel", "rope_for", "grid_positions", "sinusoidal_embedding"]

CLIP_DIM = 1280   # CLIP-H penultimate hidden states, 257 tokens per image (514 for FLF2V)

# Variants ComfyUI detects from these keys; their extra modules are not implemented here.
_UNSUPPORTED = {
    "vace_patch_embedding.weight": "VACE",
    "control_adapter.conv.weight": "Fun camera control",
    "casual_audio_encoder.encoder.final_linear.weight": "S2V",
    "audio_proj.audio_proj_glob_1.layer.bias": "HuMo",
    "face_adapter.fuser_blocks.0.k_norm.weight": "Animate",
    "patch_embedding_mask.weight": "SCAIL 2",
    "patch_embedding_pose.weight": "SCAIL",
    "patch_embedding_global.weight": "WanDancer",
    "ref_conv.weight": "Fun reference (ref_conv)",
}


@dataclass(frozen=True)
class WanConfig:
    model_type: str = "t2v"                       # "t2v" | "i2v" (i2v adds img_emb for CLIP features)
    patch_size: tuple[int, int, int] = (1, 2, 2)
    in_dim: int = 16                              # 36 for I2V: [noise16 | mask4 | image16]
    dim: int = 2048
    ffn_dim: int = 8192
    freq_dim: int = 256
    text_dim: int = 4096
    out_dim: int = 16
    num_heads: int = 16
    num_layers: int = 32
    eps: float = 1e-6
    qk_norm: bool = True
    cross_attn_norm: bool = True
    flf_pos_embed_token_number: Optional[int] = None   # FLF2V: learned position of 514 CLIP tokens

    def __post_init__(self) -> None:
        object.__setattr__(self, "patch_size", tuple(int(p) for p in self.patch_size))
        if self.model_type not in ("t2v", "i2v"):
            raise OneStoryError(f"model_type must be 't2v' or 'i2v', got {self.model_type!r}.")
        if len(self.patch_size) != 3:
            raise OneStoryError(f"patch_size must have 3 entries (t, h, w), got {self.patch_size}.")
        if self.num_heads < 1 or self.dim % self.num_heads:
            raise OneStoryError(f"dim={self.dim} must be divisible by num_heads={self.num_heads}; "
                                "pass num_heads explicitly for models narrower than 128 per head.")
        axes_dims(self.head_dim)

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def latent_channels(self) -> int:
        return self.out_dim

    @staticmethod
    def tiny(model_type: str = "t2v", *, dim: int = 64, num_heads: int = 2, num_layers: int = 2,
             ffn_dim: Optional[int] = None, text_dim: int = 32, latent_channels: int = 16) -> "WanConfig":
        """A few-hundred-kB model for tests: same structure, small widths."""
        in_dim = latent_channels if model_type == "t2v" else 2 * latent_channels + 4
        return WanConfig(model_type=model_type, in_dim=in_dim, dim=dim, ffn_dim=ffn_dim or 2 * dim,
                         text_dim=text_dim, out_dim=latent_channels, num_heads=num_heads, num_layers=num_layers)

    @classmethod
    def from_state_dict(cls, sd: Mapping[str, Tensor], *, metadata: Optional[Mapping[str, str]] = None,
                        num_heads: Optional[int] = None) -> "WanConfig":
        """Detect the config from shapes, as ComfyUI's `detect_unet_config` does for Wan.

        Like ComfyUI: num_heads = dim // 128, patch (1, 2, 2), eps 1e-6, qk / cross-attn norm on,
        i2v iff `img_emb.proj.0.bias` exists; a safetensors `metadata["config"]` JSON
        `{"transformer": {...}}` overrides fields, and `num_heads` overrides everything.
        Unlike ComfyUI, text_dim is read from `text_embedding.0.weight` (ComfyUI assumes 4096).
        Keys may carry a prefix such as `model.diffusion_model.`.
        """
        prefix = _key_prefix(sd)
        for key, name in _UNSUPPORTED.items():
            if prefix + key in sd:
                raise OneStoryError(f"state dict is a Wan {name} model (has {prefix + key}); "
                                    "OneStory's standalone Wan supports plain T2V / I2V / TI2V / FLF2V.")

        def shape(key: str) -> tuple[int, ...]:
            return tuple(sd[prefix + key].shape)

        dim = shape("head.modulation")[-1]
        block_ids = {int(m.group(1)) for k in sd if (m := re.match(re.escape(prefix) + r"blocks\.(\d+)\.", k))}
        cfg: dict[str, Any] = dict(
            model_type="i2v" if prefix + "img_emb.proj.0.bias" in sd else "t2v",
            in_dim=shape("patch_embedding.weight")[1], dim=dim, ffn_dim=shape("blocks.0.ffn.0.weight")[0],
            text_dim=shape("text_embedding.0.weight")[1], out_dim=shape("head.head.weight")[0] // 4,
            num_heads=dim // 128, num_layers=len(block_ids))
        if prefix + "img_emb.emb_pos" in sd:
            cfg["flf_pos_embed_token_number"] = shape("img_emb.emb_pos")[1]
        if metadata is not None and "config" in metadata:
            known = {f.name for f in fields(cls)}
            cfg.update({k: v for k, v in json.loads(metadata["config"]).get("transformer", {}).items() if k in known})
        if num_heads is not None:
            cfg["num_heads"] = num_heads
        if cfg["num_heads"] < 1:
            raise OneStoryError(f"dim={dim} < 128, so num_heads cannot be guessed as dim // 128; pass num_heads "
                                "(or store {'transformer': {'num_heads': ...}} in the safetensors metadata 'config').")
        return cls(**cfg)


def _key_prefix(sd: Mapping[str, Tensor]) -> str:
    if "head.modulation" in sd:
        return ""
    for key in sd:
        if key.endswith(".head.modulation"):
            return key[: -len("head.modulation")]
    raise OneStoryError("state dict has no 'head.modulation' key, so it is not a Wan diffusion model "
                        "(expected the files ComfyUI loads from models/diffusion_models).")


def sinusoidal_embedding(t: Tensor, dim: int) -> Tensor:
    """Timesteps "n" -> "n dim" float32, [cos | sin] halves (Wan's order)."""
    half = dim // 2
    freqs = torch.pow(10000, -torch.arange(half, dtype=torch.float32, device=t.device).div(half))
    angle = torch.outer(t.to(torch.float32), freqs)
    return torch.cat([angle.cos(), angle.sin()], dim=1)


def _attend(q: Tensor, k: Tensor, v: Tensor, heads: int) -> Tensor:
    """"b l (h d)" queries against "b s (h d)" keys/values -> "b l (h d)"."""
    q, k, v = (rearrange(a, "b l (h d) -> b h l d", h=heads) for a in (q, k, v))
    return rearrange(F.scaled_dot_product_attention(q, k, v), "b h l d -> b l (h d)")


class SelfAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qk_norm: bool, eps: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.norm_q = nn.RMSNorm(dim, eps=eps) if qk_norm else nn.Identity()
        self.norm_k = nn.RMSNorm(dim, eps=eps) if qk_norm else nn.Identity()

    def forward(self, x: Tensor, freqs: Tensor) -> Tensor:
        """x "b l d", freqs "1 l 1 (d_head/2) 2 2" -> "b l d"."""
        def rotated(a: Tensor) -> Tensor:  # RMSNorm spans all heads, RoPE acts per head
            return apply_rope(rearrange(a, "b l (h d) -> b l h d", h=self.num_heads), freqs).flatten(2)

        q, k = rotated(self.norm_q(self.q(x))), rotated(self.norm_k(self.k(x)))
        return self.o(_attend(q, k, self.v(x), self.num_heads))


class CrossAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qk_norm: bool, eps: float, image: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.norm_q = nn.RMSNorm(dim, eps=eps) if qk_norm else nn.Identity()
        self.norm_k = nn.RMSNorm(dim, eps=eps) if qk_norm else nn.Identity()
        self.image = image
        if image:
            self.k_img, self.v_img = nn.Linear(dim, dim), nn.Linear(dim, dim)
            self.norm_k_img = nn.RMSNorm(dim, eps=eps) if qk_norm else nn.Identity()

    def forward(self, x: Tensor, context: Tensor, context_img_len: Optional[int]) -> Tensor:
        """x "b l d", context "b (img txt) d" -> "b l d"."""
        q = self.norm_q(self.q(x))
        if not self.image:
            return self.o(_attend(q, self.norm_k(self.k(context)), self.v(context), self.num_heads))
        # context_img_len None (I2V run without CLIP vision): as in ComfyUI, both the text and the
        # image branch then attend to the whole text context.
        img, txt = context[:, :context_img_len], context[:, context_img_len:]
        out = _attend(q, self.norm_k(self.k(txt)), self.v(txt), self.num_heads)
        out = out + _attend(q, self.norm_k_img(self.k_img(img)), self.v_img(img), self.num_heads)
        return self.o(out)


class WanBlock(nn.Module):
    def __init__(self, cfg: WanConfig) -> None:
        super().__init__()
        dim, eps = cfg.dim, cfg.eps
        self.norm1 = nn.LayerNorm(dim, eps, elementwise_affine=False)
        self.self_attn = SelfAttention(dim, cfg.num_heads, cfg.qk_norm, eps)
        self.norm3 = nn.LayerNorm(dim, eps) if cfg.cross_attn_norm else nn.Identity()
        self.cross_attn = CrossAttention(dim, cfg.num_heads, cfg.qk_norm, eps, image=cfg.model_type == "i2v")
        self.norm2 = nn.LayerNorm(dim, eps, elementwise_affine=False)
        self.ffn = nn.Sequential(nn.Linear(dim, cfg.ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(cfg.ffn_dim, dim))
        self.modulation = nn.Parameter(torch.randn(1, 6, dim) / dim**0.5)

    def forward(self, x: Tensor, e: Tensor, freqs: Tensor, context: Tensor, context_img_len: Optional[int]) -> Tensor:
        """x "b l d"; e "b 1 6 d" (shared) or "b l 6 d" (per token); freqs "1 l 1 (d_head/2) 2 2"."""
        shift1, scale1, gate1, shift2, scale2, gate2 = (self.modulation.to(x.dtype)[None] + e).unbind(2)
        x = torch.addcmul(x, self.self_attn(torch.addcmul(shift1, self.norm1(x), 1 + scale1), freqs), gate1)
        x = x + self.cross_attn(self.norm3(x), context, context_img_len)
        return torch.addcmul(x, self.ffn(torch.addcmul(shift2, self.norm2(x), 1 + scale2)), gate2)


class Head(nn.Module):
    def __init__(self, cfg: WanConfig) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(cfg.dim, cfg.eps, elementwise_affine=False)
        self.head = nn.Linear(cfg.dim, math.prod(cfg.patch_size) * cfg.out_dim)
        self.modulation = nn.Parameter(torch.randn(1, 2, cfg.dim) / cfg.dim**0.5)

    def forward(self, x: Tensor, e: Tensor) -> Tensor:
        """x "b l d", e "b (1|l) d" (time embedding, before time_projection) -> "b l (p q r c)"."""
        shift, scale = (self.modulation.to(x.dtype)[None] + e[:, :, None]).unbind(2)
        return self.head(torch.addcmul(shift, self.norm(x), 1 + scale))


class ImageEmbedding(nn.Module):
    """CLIP-H hidden states "b 257 1280" -> image context tokens "b 257 d"."""

    def __init__(self, dim: int, flf_tokens: Optional[int]) -> None:
        super().__init__()
        self.proj = nn.Sequential(nn.LayerNorm(CLIP_DIM), nn.Linear(CLIP_DIM, CLIP_DIM), nn.GELU(),
                                  nn.Linear(CLIP_DIM, dim), nn.LayerNorm(dim))
        self.emb_pos = nn.Parameter(torch.zeros(1, flf_tokens, CLIP_DIM)) if flf_tokens else None

    def forward(self, clip_fea: Tensor) -> Tensor:
        if self.emb_pos is not None:
            clip_fea = clip_fea[:, : self.emb_pos.shape[1]] + self.emb_pos[:, : clip_fea.shape[1]].to(clip_fea)
        return self.proj(clip_fea)


class WanModel(nn.Module):
    def __init__(self, config: WanConfig) -> None:
        super().__init__()
        self.config = c = config
        self.patch_embedding = nn.Conv3d(c.in_dim, c.dim, kernel_size=c.patch_size, stride=c.patch_size)
        self.text_embedding = nn.Sequential(nn.Linear(c.text_dim, c.dim), nn.GELU(approximate="tanh"),
                                            nn.Linear(c.dim, c.dim))
        self.time_embedding = nn.Sequential(nn.Linear(c.freq_dim, c.dim), nn.SiLU(), nn.Linear(c.dim, c.dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(c.dim, 6 * c.dim))
        self.blocks = nn.ModuleList(WanBlock(c) for _ in range(c.num_layers))
        self.head = Head(c)
        self.img_emb = ImageEmbedding(c.dim, c.flf_pos_embed_token_number) if c.model_type == "i2v" else None

    def init_weights(self) -> "WanModel":
        """The initialisation of Wan's own training code (wan/modules/model.py `init_weights`):
        xavier linears with zero bias, N(0, 0.02) text/time embeddings, zero output head (the
        model starts by predicting v = 0). Only for training from scratch; checkpoints overwrite it."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.xavier_uniform_(self.patch_embedding.weight.flatten(1))
        for seq in (self.text_embedding, self.time_embedding):
            for m in seq.modules():
                if isinstance(m, nn.Linear):
                    nn.init.normal_(m.weight, std=0.02)
        nn.init.zeros_(self.head.head.weight)
        return self

    @classmethod
    def from_state_dict(cls, sd: Mapping[str, Tensor], *, metadata: Optional[Mapping[str, str]] = None,
                        num_heads: Optional[int] = None) -> "WanModel":
        """Build from a Wan checkpoint (prefix such as `model.diffusion_model.` allowed), strict load."""
        config = WanConfig.from_state_dict(sd, metadata=metadata, num_heads=num_heads)
        prefix = _key_prefix(sd)
        model = cls(config)
        model.load_state_dict({k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)})
        return model

    def rope_for(self, positions: Tensor) -> Tensor:
        """Float positions "n 3" (t, h, w) -> freqs "1 n 1 (head_dim/2) 2 2" for this model's heads."""
        return rope_for(positions, self.config.head_dim)

    def forward(self, x: Tensor, t: Tensor, context: Tensor, clip_fea: Optional[Tensor] = None,
                ctx_tokens: Optional[Tensor] = None, ctx_positions: Optional[Tensor] = None) -> Tensor:
        """Velocity for x "b c_in f h w" -> "b out_dim f h w".

        t: "b" or "b f" (per latent frame, Wan 2.2 TI2V style); context: text features
        "b l text_dim"; clip_fea: "b 257 1280" (I2V, optional); ctx_tokens: "b n dim" or "n dim"
        with ctx_positions "n 3" float (t, h, w) in patch units, or "b n 3" (per item, additive:
        batched training/evaluation where each item's kept frames sit at different positions).
        """
        c = self.config
        b, _, f, h, w = x.shape
        pt, ph, pw = c.patch_size
        pad = (0, -w % pw, 0, -h % ph, 0, -f % pt)
        if any(pad):  # ComfyUI pads odd sizes circularly and crops the output again
            x = F.pad(x, pad, mode="circular")
        x = self.patch_embedding(x.to(self.patch_embedding.weight.dtype))
        gf, gh, gw = x.shape[2:]
        x = rearrange(x, "b d f h w -> b (f h w) d")
        freqs = self.rope_for(grid_positions(gf, gh, gw, device=x.device))

        e = self._time_embedding(t, b, gf).to(x.dtype)               # "b (1|f) d"
        e0 = self.time_projection(e).unflatten(-1, (6, c.dim))       # "b (1|f) 6 d"
        if e.shape[1] > 1:  # per-frame modulation -> one row per token of that frame
            e, e0 = e.repeat_interleave(gh * gw, dim=1), e0.repeat_interleave(gh * gw, dim=1)

        context = self.text_embedding(context.to(x.dtype))
        context_img_len = None
        if clip_fea is not None:  # a T2V model ignores clip_fea, as in ComfyUI
            if self.img_emb is not None:
                context = torch.cat([self.img_emb(clip_fea.to(x.dtype)), context], dim=1)
            context_img_len = clip_fea.shape[-2]

        n = 0 if ctx_tokens is None else ctx_tokens.shape[-2]
        if n:
            ctx, ctx_freqs = self._context(ctx_tokens, ctx_positions, b, x)
            freqs = freqs.expand(ctx_freqs.shape[0], -1, -1, -1, -1, -1)
            x, freqs = torch.cat([ctx, x], dim=1), torch.cat([ctx_freqs, freqs], dim=1)
            if e0.shape[1] > 1:  # context tokens take the modulation of the first noise frame
                e0 = torch.cat([e0[:, :1].expand(-1, n, -1, -1), e0], dim=1)

        for block in self.blocks:
            x = block(x, e0, freqs, context, context_img_len)

        x = self.head(x[:, n:], e)
        x = rearrange(x, "b (f h w) (p q r c) -> b c (f p) (h q) (w r)", f=gf, h=gh, w=gw, p=pt, q=ph, r=pw)
        return x[:, :, :f, :h, :w]

    def _time_embedding(self, t: Tensor, b: int, frames: int) -> Tensor:
        """t "" | "b" | "b (1|frames)" -> time embedding "b (1|frames) d"."""
        if t.ndim == 0:
            t = t.expand(b)
        if t.ndim == 1:
            t = t[:, None]
        if t.ndim != 2 or t.shape[0] != b or t.shape[1] not in (1, frames):
            raise ShapeError(f"t must be 'b' or 'b f' with b={b}, f={frames} latent frames; got {tuple(t.shape)}.")
        e = self.time_embedding(sinusoidal_embedding(t.flatten(), self.config.freq_dim).to(self.time_embedding[0].weight))
        return e.unflatten(0, t.shape)

    def _context(self, tokens: Tensor, positions: Optional[Tensor], b: int, x: Tensor) -> tuple[Tensor, Tensor]:
        """Validate and broadcast context tokens -> ("b n d", freqs "1 n 1 (d_head/2) 2 2")."""
        n, dim = tokens.shape[-2:]
        if dim != self.config.dim or tokens.ndim not in (2, 3) or (tokens.ndim == 3 and tokens.shape[0] not in (1, b)):
            raise ShapeError(f"ctx_tokens must be 'n {self.config.dim}' or 'b n {self.config.dim}' with b in (1, {b}); "
                             f"got {tuple(tokens.shape)}.")
        ok = positions is not None and (tuple(positions.shape) == (n, 3) or (
            positions.ndim == 3 and positions.shape[0] in (1, b) and tuple(positions.shape[1:]) == (n, 3)))
        if not ok:
            got = None if positions is None else tuple(positions.shape)
            raise ShapeError(f"ctx_positions must be '{n} 3' (t, h, w per context token) or 'b {n} 3' "
                             f"(one set per batch item), got {got}.")
        tokens = tokens.to(x.dtype).to(x.device)
        tokens = tokens.expand(b, -1, -1) if tokens.ndim == 3 else tokens[None].expand(b, -1, -1)
        positions = positions.to(x.device)
        if positions.ndim == 3:  # per-item positions (batched training/eval): freqs "b n 1 ..."
            return tokens, torch.cat([self.rope_for(p) for p in positions]).expand(b, -1, -1, -1, -1, -1)
        return tokens, self.rope_for(positions)
