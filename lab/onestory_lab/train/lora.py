"""LoRA for the Wan DiT, with the base keys untouched.

`LoRALinear` IS an `nn.Linear` (same `weight` / `bias` names) plus two child linears
`lora_down` "r in" and `lora_up` "out r": y = W x + b + (alpha / r) · up(down(x)). So the
backbone's state dict loads into a LoRA-injected DiT by its original Wan keys, and the LoRA's
own keys (`blocks.0.self_attn.q.lora_down.weight`) are already ComfyUI's "regular" LoRA naming:
with the `diffusion_model.` prefix and an `.alpha` scalar per module, ComfyUI's stock
`LoraLoaderModelOnly` applies the file to a Wan MODEL (comfy/lora.py `model_lora_keys_unet`
maps `diffusion_model.<module>`; comfy/weight_adapter/lora.py reads lora_up / lora_down / alpha
and patches W + alpha/r · up @ down).

Why not peft: peft wraps the base layer (`q.base_layer.weight`), so the backbone no longer loads
by Wan keys and its saved keys carry `.default`, which ComfyUI does not map for Wan (the DiffSynth
LoRAs need renaming for that reason). Plain parameters also shard per parameter under FSDP2
(frozen bf16 base next to trainable fp32 LoRA in one block) with nothing peft-specific.
"""
from __future__ import annotations

import math
import zlib
from typing import Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

COMFY_PREFIX = "diffusion_model."


class LoRALinear(nn.Linear):
    def __init__(self, in_features: int, out_features: int, bias: bool, rank: int, alpha: float,
                 device=None, dtype=None) -> None:
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.rank, self.alpha = rank, float(alpha)
        self.lora_down = nn.Linear(in_features, rank, bias=False, device=device)
        self.lora_up = nn.Linear(rank, out_features, bias=False, device=device)

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def forward(self, x: Tensor) -> Tensor:
        base = F.linear(x, self.weight.to(x.dtype), None if self.bias is None else self.bias.to(x.dtype))
        return base + self.lora_up(self.lora_down(x.to(self.lora_down.weight.dtype))).to(base.dtype) * self.scale


def target_names(dit: nn.Module, targets: str) -> list[str]:
    """Names of the linears inside `blocks.*` whose name ends with one of the comma-separated
    suffixes (DiffSynth's convention: "q,k,v,o,ffn.0,ffn.2" = self/cross attention + FFN)."""
    suffixes = [t.strip() for t in targets.split(",") if t.strip()]
    if not suffixes:
        raise ValueError("lora_targets is empty; e.g. 'q,k,v,o,ffn.0,ffn.2'")
    names = [n for n, m in dit.named_modules()
             if n.startswith("blocks.") and isinstance(m, nn.Linear)
             and any(n == s or n.endswith("." + s) for s in suffixes)]
    if not names:
        raise ValueError(f"lora_targets {targets!r} match no linear inside the DiT blocks")
    return names


def inject(dit: nn.Module, rank: int, alpha: float, targets: str, seed: int = 0) -> list[str]:
    """Replace the targeted linears by LoRALinear in place (works on the meta device: the base
    weights are moved over, not copied), give the LoRA weights their `init_value` (unless on the
    meta device: materialisation does it) and freeze every non-LoRA DiT parameter."""
    names = target_names(dit, targets)
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = dit.get_submodule(parent_name)
        old: nn.Linear = getattr(parent, child)
        new = LoRALinear(old.in_features, old.out_features, old.bias is not None, rank, alpha,
                         device=old.weight.device, dtype=old.weight.dtype)
        new.weight = old.weight
        if old.bias is not None:
            new.bias = old.bias
        setattr(parent, child, new)
    with torch.no_grad():
        for n, p in dit.named_parameters():
            p.requires_grad_(".lora_" in n)
            if ".lora_" in n and not p.is_meta:
                p.copy_(init_value(n, tuple(p.shape), seed))
    return names


def init_value(name: str, shape: tuple[int, ...], seed: int) -> Tensor:
    """The initial value of a LoRA weight by name: up = 0 (the model starts as the base),
    down = nn.Linear's kaiming-uniform, from a generator seeded by (seed, name) so every rank and
    every run makes the same values without touching the global RNG."""
    if name.endswith("lora_up.weight"):
        return torch.zeros(shape)
    g = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
    bound = 1.0 / math.sqrt(shape[1])
    return (torch.rand(shape, generator=g) * 2 - 1) * bound


def comfy_lora(state: Mapping[str, Tensor], alpha: float, dtype: torch.dtype = torch.float32) -> dict[str, Tensor]:
    """DiT-relative LoRA weights (`blocks.0.self_attn.q.lora_down.weight`, ...) -> the file
    ComfyUI's LoraLoaderModelOnly reads: `diffusion_model.<module>.lora_down.weight`,
    `.lora_up.weight` and a scalar `.alpha` per module."""
    out: dict[str, Tensor] = {}
    for k, v in state.items():
        if ".lora_down.weight" not in k and ".lora_up.weight" not in k:
            continue
        out[COMFY_PREFIX + k] = v.detach().to("cpu", dtype).contiguous()
        module = k.rsplit(".lora_", 1)[0]
        out[f"{COMFY_PREFIX}{module}.alpha"] = torch.tensor(float(alpha))
    if not out:
        raise ValueError("no lora_down / lora_up weights in the state dict")
    return out


def merge(base: Mapping[str, Tensor], lora_file: Mapping[str, Tensor], strength: float = 1.0) -> dict[str, Tensor]:
    """Wan state dict with a ComfyUI-format LoRA merged in: W + strength · alpha/r · up @ down
    (what the stock loader computes; used to check it)."""
    out = {k: v.clone() for k, v in base.items()}
    for k in lora_file:
        if not k.endswith(".lora_down.weight"):
            continue
        module = k[len(COMFY_PREFIX): -len(".lora_down.weight")]
        down, up = lora_file[k].float(), lora_file[f"{COMFY_PREFIX}{module}.lora_up.weight"].float()
        alpha = float(lora_file[f"{COMFY_PREFIX}{module}.alpha"])
        w = out[module + ".weight"]
        out[module + ".weight"] = (w.float() + strength * alpha / down.shape[0] * up @ down).to(w.dtype)
    return out


def lora_names(names: Iterable[str]) -> list[str]:
    return [n for n in names if ".lora_" in n]
