"""The encoders behind the latent cache, behind two small interfaces so that nothing downstream
cares which implementation produced the tensors.

Both read the files a ComfyUI user already has:
* `WanLatentEncoder`: `models/vae/wan_2.1_vae.safetensors` through our own encoder half of the
  Wan VAE (wan_vae.py), parity-tested against ComfyUI's (tests/integration/test_data_parity.py);
* `UMT5TextEncoder`: `models/text_encoders/umt5_xxl_*.safetensors` (the tokenizer is embedded in
  the file as `spiece_model`, as in ComfyUI's repackaged files) through transformers'
  UMT5EncoderModel, whose parameter names are the file's.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from . import deps
from .wan_vae import load_wan_vae_encoder


def sha256_file(path: str | Path, chunk: int = 1 << 24) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


class LatentEncoder(Protocol):
    file: Path
    channels: int

    def encode(self, frames: Tensor | np.ndarray) -> Tensor:
        """frames "t h w 3" (uint8, or float in [0, 1]) -> bank-space latents "c t' h' w'" (float32, CPU)."""


class TextEncoder(Protocol):
    file: Path
    dim: int

    def encode(self, text: str) -> tuple[Tensor, Tensor]:
        """caption -> (features "l d" float32, mask "l" bool)."""


def _load_safetensors(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    import safetensors.torch as st
    from safetensors import safe_open

    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    return st.load_file(str(path)), meta


def _dequantize(sd: dict[str, Tensor], dtype: torch.dtype) -> dict[str, Tensor]:
    """Float copies of every tensor. ComfyUI's fp8 "scaled" files store `w` in fp8 and a scalar
    `<layer>.scale_weight`; the real weight is w * scale_weight."""
    out: dict[str, Tensor] = {}
    for k, v in sd.items():
        if k == "scaled_fp8" or k.endswith(".scale_weight") or k.endswith(".scale_input") or k == "spiece_model":
            continue
        if k.endswith(".weight") and k[:-len("weight")] + "scale_weight" in sd:
            v = v.float() * sd[k[:-len("weight")] + "scale_weight"].float()
        out[k] = v.to(dtype)
    return out


class WanLatentEncoder:
    """Wan 2.1 VAE encoder: latents as ComfyUI's VAEEncode returns them (raw posterior means)."""

    def __init__(self, path: str | Path, device: str = "cpu", dtype: torch.dtype = torch.float32) -> None:
        self.file = Path(path)
        sd, _ = _load_safetensors(self.file)
        self.model = load_wan_vae_encoder({k: v for k, v in sd.items() if v.is_floating_point()}, dtype).to(device)
        self.channels = self.model.z_dim
        self.device, self.dtype = device, dtype
        self.spatial = self.model.spatial_factor
        self.temporal = self.model.temporal_factor

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        return (self.channels, 1 + (frames - 1) // self.temporal, height // self.spatial, width // self.spatial)

    def encode(self, frames: Tensor | np.ndarray) -> Tensor:
        x = torch.as_tensor(frames)
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"frames must be 't h w 3', got {tuple(x.shape)}")
        h, w = x.shape[1:3]   # centre crop to multiples of the spatial factor, as ComfyUI's VAE does
        ch, cw = h // self.spatial * self.spatial, w // self.spatial * self.spatial
        x = x[:, (h % self.spatial) // 2:(h % self.spatial) // 2 + ch, (w % self.spatial) // 2:(w % self.spatial) // 2 + cw]
        x = x.permute(3, 0, 1, 2).unsqueeze(0) * 2.0 - 1.0          # "1 3 t h w" in [-1, 1]
        z = self.model(x.to(self.device, self.dtype))
        return z[0].float().cpu()


UMT5_PREFIXES = ("umt5xxl.transformer.", "text_encoders.umt5xxl.transformer.", "transformer.")


class UMT5TextEncoder:
    """umT5 encoder (Wan's text encoder) + its sentencepiece tokenizer from one safetensors file.

    Captions are tokenised like ComfyUI's CLIPTextEncode without prompt weights (sentencepiece with
    an end token, no padding); features are the final-layer-norm outputs, one row per token
    (ComfyUI pads to 512 with zero rows, which cross-attention reads as nothing)."""

    def __init__(self, path: str | Path, device: str = "cpu", dtype: torch.dtype = torch.float32,
                 tokenizer: str | Path | None = None, max_tokens: int = 512) -> None:
        self.file = Path(path)
        sd, meta = _load_safetensors(self.file)
        for p in UMT5_PREFIXES:
            if any(k.startswith(p) for k in sd) and "shared.weight" not in sd:
                sd = {k[len(p):]: v for k, v in sd.items() if k.startswith(p)}
        spm = deps.sentencepiece()
        if tokenizer is not None:
            self.tokenizer = spm.SentencePieceProcessor(model_file=str(tokenizer), add_bos=False, add_eos=True)
        elif "spiece_model" in sd:
            proto = sd["spiece_model"].numpy().tobytes()
            self.tokenizer = spm.SentencePieceProcessor(model_proto=proto, add_bos=False, add_eos=True)
        else:
            raise ValueError(f"{self.file} has no embedded tokenizer ('spiece_model'); pass the umT5 "
                             "sentencepiece model with --tokenizer")
        if "shared.weight" not in sd:
            raise ValueError(f"{self.file} is not a umT5 encoder file (no shared.weight)")
        sd = _dequantize(sd, dtype)
        transformers = deps.transformers()
        config = transformers.UMT5Config(**self.infer_config(sd))
        with torch.device("meta"):
            model = transformers.UMT5EncoderModel(config)
        sd = {k: v for k, v in sd.items() if k.startswith(("shared.", "encoder."))}
        sd.setdefault("encoder.embed_tokens.weight", sd["shared.weight"])
        missing, unexpected = model.load_state_dict(sd, strict=False, assign=True)
        if missing or unexpected:
            raise ValueError(f"{self.file}: umT5 weights do not match (missing {missing[:3]}, unexpected {unexpected[:3]})")
        model.encoder.embed_tokens = model.shared   # one tensor, as the file has one
        self.model = model.to(device).eval()
        self.dim = config.d_model
        self.device, self.max_tokens = device, max_tokens
        self.eos = self.tokenizer.eos_id()

    @staticmethod
    def infer_config(sd: dict[str, Tensor]) -> dict:
        vocab, d_model = sd["shared.weight"].shape
        layers = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("encoder.block."))
        rel = sd["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"]
        buckets, heads = rel.shape
        inner = sd["encoder.block.0.layer.0.SelfAttention.q.weight"].shape[0]
        gated = "encoder.block.0.layer.1.DenseReluDense.wi_0.weight" in sd
        d_ff = sd["encoder.block.0.layer.1.DenseReluDense." + ("wi_0" if gated else "wi") + ".weight"].shape[0]
        return dict(vocab_size=vocab, d_model=d_model, d_kv=inner // heads, d_ff=d_ff, num_layers=layers,
                    num_heads=heads, relative_attention_num_buckets=buckets, relative_attention_max_distance=128,
                    feed_forward_proj="gated-gelu" if gated else "relu", layer_norm_epsilon=1e-6,
                    is_encoder_decoder=False, use_cache=False, tie_word_embeddings=False)

    def tokenize(self, text: str) -> list[int]:
        ids = list(self.tokenizer.encode(text))
        if len(ids) > self.max_tokens:   # keep the end token, as Wan's tokenizer truncation does
            ids = ids[:self.max_tokens - 1] + [self.eos]
        return ids

    @torch.inference_mode()
    def encode(self, text: str) -> tuple[Tensor, Tensor]:
        ids = torch.tensor([self.tokenize(text)], device=self.device)
        mask = torch.ones_like(ids, dtype=torch.bool)
        out = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
        return out[0].float().cpu(), mask[0].cpu()


def encoder_manifest(encoder: LatentEncoder | TextEncoder) -> dict:
    return {"file": encoder.file.name, "sha256": sha256_file(encoder.file)}
