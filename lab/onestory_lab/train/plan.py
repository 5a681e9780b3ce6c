"""`onestory train --plan`: per-GPU memory and tokens per step for Wan 2.1 1.3B / 14B.

* Parameter counts are exact: `onestory.wan.WanModel` built on the meta device with the real
  configs (plus LoRA injected by the trainer's own `lora.inject`, plus the selector and
  conditioner of the default TrainConfig).
* Activation bytes per token per DiT block are measured, not assumed: autograd's saved tensors
  of one real `WanBlock` (saved_tensors_hooks, distinct storages) at two small widths give the
  coefficients of `a·dim + b·ffn_dim + c` elements per token, then scaled to the real widths.
  The CPU SDPA kernel saves what GPU flash attention saves (q, k, v, out, logsumexp), so the
  count carries over; per-head logsumexp (fp32) is folded into c.
* `--plan-measure` also checks the activation model against the measured peak RSS of a tiny
  forward+backward on this CPU (with and without activation checkpointing).

Memory model per GPU (FSDP2 full sharding over N GPUs, batch 1 clip per GPU, bf16 compute):
  full:  fp32 master weights 4P/N + fp32 grads 4P/N + AdamW moments 8P/N
  LoRA:  frozen bf16 base 2P/N + (LoRA, selector, conditioner) 16T/N
  plus   two unsharded bf16 blocks (the running one + the prefetched one) with their grads
  plus   activations: no checkpointing = layers x per-block bytes; per-block checkpointing =
         layers x one bf16 block input + RECOMPUTE_BLOCKS x one block's activations (the block
         being recomputed, its activation gradients and temporaries; see RECOMPUTE_BLOCKS).
Not modelled: the CUDA context and allocator fragmentation (typically 1-3 GB), the VAE / text
encoder (the trainer reads a latent cache), communication buffers.
"""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass

import torch
from torch import nn

from onestory.defaults import BUDGET
from onestory.wan import WanConfig, WanModel

GB = 1024 ** 3
WAN = {  # musubi-tuner wan/configs (research/training-eval.md §1); T2V in_dim 16, umT5 text_dim 4096
    "Wan2.1-T2V-1.3B": WanConfig(dim=1536, ffn_dim=8960, num_heads=12, num_layers=30, text_dim=4096),
    "Wan2.1-T2V-14B": WanConfig(dim=5120, ffn_dim=13824, num_heads=40, num_layers=40, text_dim=4096),
}
CLIP = {"frames": 81, "height": 480, "width": 832, "text_tokens": 512}
LORA = {"rank": 32, "targets": "q,k,v,o,ffn.0,ffn.2"}
# Peak of a checkpointed backward in units of one block's saved activations, beyond the stored
# block inputs: (measured peak - stored inputs) / block = 3.9 on the `--plan-measure` CPU run
# (dim 256, 6 blocks, 2048 tokens); rounded up. The check table re-measures it.
RECOMPUTE_BLOCKS = 4


@dataclass
class Counts:
    total: int
    block: int
    root: int
    lora: int
    small: int          # selector + conditioner


def counts(cfg: WanConfig, rank: int = LORA["rank"], targets: str = LORA["targets"]) -> Counts:
    from onestory.conditioner import AdaptiveConditioner
    from onestory.frame_selector import FrameSelector
    from .config import TrainConfig
    from .lora import inject

    with torch.device("meta"):
        m = WanModel(cfg)
        total = sum(p.numel() for p in m.parameters())
        block = sum(p.numel() for p in m.blocks[0].parameters())
        inject(m, rank, float(rank), targets)
        lora = sum(p.numel() for n, p in m.named_parameters() if ".lora_" in n)
        t = TrainConfig()
        small = sum(p.numel() for p in AdaptiveConditioner(16, cfg.dim).parameters())
        small += sum(p.numel() for p in FrameSelector(16, cfg.text_dim, width=t.sel_width, num_queries=t.sel_queries,
                                                      heads=t.sel_heads, spatial_stride=t.sel_stride).parameters())
    return Counts(total, block, total - cfg.num_layers * block, lora, small)


def tokens(cfg: WanConfig, budget: float = BUDGET) -> dict[str, int]:
    t = (CLIP["frames"] - 1) // 4 + 1
    h, w = CLIP["height"] // 8 // cfg.patch_size[1], CLIP["width"] // 8 // cfg.patch_size[2]
    return {"latent_frames": t, "noise": t * h * w, "context": int(round(budget * h * w)), "text": CLIP["text_tokens"]}


def saved_elements(dim: int, ffn: int, heads: int, n: int, text: int = 16, lora_rank: int = 0) -> float:
    """Elements autograd keeps for one WanBlock forward on n tokens (distinct storages, fp32
    run: bytes / 4), excluding the block input and the text (shared by all blocks)."""
    from onestory.rope import grid_positions, rope_for
    from onestory.wan import WanBlock

    cfg = WanConfig(dim=dim, ffn_dim=ffn, num_heads=heads, num_layers=1, text_dim=dim)
    block = WanBlock(cfg)
    if lora_rank:
        _lora_block(block, lora_rank)
    x = torch.randn(1, n, dim, requires_grad=True)
    e = torch.randn(1, 1, 6, dim)
    ctx = torch.randn(1, text, dim)
    freqs = rope_for(grid_positions(1, 1, n), cfg.head_dim)
    seen: dict[int, int] = {}
    skip = {x.untyped_storage().data_ptr(), ctx.untyped_storage().data_ptr(), freqs.untyped_storage().data_ptr(),
            e.untyped_storage().data_ptr()}
    params = {p.untyped_storage().data_ptr() for p in block.parameters()}

    def pack(t):
        s = t.untyped_storage()
        ptr = s.data_ptr()
        if ptr not in skip and ptr not in params:
            seen[ptr] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        block(x, e, freqs, ctx, None)
    return sum(seen.values()) / 4


def _lora_block(block: nn.Module, rank: int) -> None:
    from .lora import LoRALinear

    for name, mod in list(block.named_modules()):
        for child, sub in list(mod.named_children()):
            full = f"{name}.{child}" if name else child
            if isinstance(sub, nn.Linear) and any(full == s or full.endswith("." + s) for s in LORA["targets"].split(",")):
                new = LoRALinear(sub.in_features, sub.out_features, sub.bias is not None, rank, float(rank))
                new.weight.requires_grad_(False)
                setattr(mod, child, new)


def activation_model(lora_rank: int = 0) -> dict[str, float]:
    """Fit elements/token = a·dim + b·ffn + c from three small measured blocks (n tokens and
    2n tokens remove the per-sample text terms)."""
    import numpy as np

    rows, ys = [], []
    for dim, ffn, heads in ((128, 256, 2), (128, 640, 2), (256, 256, 4)):
        per_token = (saved_elements(dim, ffn, heads, 512, lora_rank=lora_rank)
                     - saved_elements(dim, ffn, heads, 256, lora_rank=lora_rank)) / 256
        rows.append([dim, ffn, 1.0])
        ys.append(per_token)
    a, b, c = np.linalg.solve(np.array(rows), np.array(ys))
    return {"a_dim": float(a), "b_ffn": float(b), "c": float(c)}


def plan_rows(gpus: list[int], act: dict[str, dict[str, float]]) -> list[dict]:
    rows = []
    for name, cfg in WAN.items():
        c, tk = counts(cfg), tokens(cfg)
        n_tok = tk["noise"] + tk["context"]
        for mode in ("lora", "full"):
            coef = act[mode]
            per_block = (coef["a_dim"] * cfg.dim + coef["b_ffn"] * cfg.ffn_dim + coef["c"]) * n_tok * 2   # bf16
            act_no_ac = cfg.num_layers * per_block
            act_ac = cfg.num_layers * n_tok * cfg.dim * 2 + RECOMPUTE_BLOCKS * per_block
            transient = 2 * c.block * (2 + 2)          # two unsharded bf16 blocks + their bf16 grads
            for n in gpus:
                if mode == "full":
                    weights, grads, optim = 4 * c.total / n, 4 * c.total / n, 8 * c.total / n
                else:
                    t = c.lora + c.small
                    weights, grads, optim = (2 * (c.total - c.lora) + 4 * t) / n, 4 * t / n, 8 * t / n
                rows.append({"model": name, "mode": mode, "gpus": n, "params": c.total, "trainable":
                             c.total + c.small if mode == "full" else c.lora + c.small,
                             "weights_gb": weights / GB, "grads_gb": grads / GB, "optim_gb": optim / GB,
                             "unsharded_blocks_gb": transient / GB, "act_gb": act_no_ac / GB, "act_ckpt_gb": act_ac / GB,
                             "total_gb": (weights + grads + optim + transient + act_no_ac) / GB,
                             "total_ckpt_gb": (weights + grads + optim + transient + act_ac) / GB,
                             "tokens_per_gpu": n_tok, "tokens_per_step": n * n_tok})
    return rows


def markdown(rows: list[dict], act: dict, check: list[dict] | None = None) -> str:
    out = [f"Clip {CLIP['width']}x{CLIP['height']}x{CLIP['frames']} frames, context budget {BUDGET} latent frame, "
           f"batch 1 clip per GPU, bf16 compute, AdamW; LoRA rank {LORA['rank']} on {LORA['targets']}. GB = 2^30 bytes.",
           "", "| model | params | trains | GPUs | weights | grads | AdamW | 2 unsharded blocks | activations "
           "(none / per-block ckpt) | total per GPU (no ckpt / ckpt) | tokens per GPU / per step |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['model']} | {r['params'] / 1e9:.3f} B | {r['mode']} ({r['trainable'] / 1e6:,.1f} M) | "
                   f"{r['gpus']} | {r['weights_gb']:.2f} | {r['grads_gb']:.2f} | {r['optim_gb']:.2f} | "
                   f"{r['unsharded_blocks_gb']:.2f} | {r['act_gb']:.1f} / {r['act_ckpt_gb']:.1f} | "
                   f"{r['total_gb']:.1f} / {r['total_ckpt_gb']:.1f} | {r['tokens_per_gpu']:,} / {r['tokens_per_step']:,} |")
    out += ["", "Activation elements per token per block (measured on WanBlock, fit a·dim + b·ffn_dim + c): "
            + "; ".join(f"{k}: {v['a_dim']:.2f}·dim + {v['b_ffn']:.2f}·ffn + {v['c']:.1f}" for k, v in act.items())]
    if check:
        out += ["", "| check (tiny CPU fp32 run) | predicted activations | measured peak RSS increase | ratio |",
                "|---|---|---|---|"]
        for c in check:
            out.append(f"| {c['name']} | {c['predicted_mb']:.0f} MB | {c['measured_mb']:.0f} MB | "
                       f"{c['measured_mb'] / c['predicted_mb']:.2f} |")
    return "\n".join(out)


_PROBE = r"""
import json, resource, sys, torch
from onestory.wan import WanConfig, WanModel
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper, CheckpointImpl
dim, ffn, heads, layers, f, h, w, ckpt = json.loads(sys.argv[1])
torch.set_num_threads(1)
torch.manual_seed(0)
m = WanModel(WanConfig.tiny("t2v", dim=dim, num_heads=heads, num_layers=layers, ffn_dim=ffn, text_dim=64))
if ckpt:
    for i, b in enumerate(m.blocks):
        m.blocks[i] = checkpoint_wrapper(b, checkpoint_impl=CheckpointImpl.NO_REENTRANT)
x = torch.randn(1, 16, f, h, w); text = torch.randn(1, 16, 64); t = torch.tensor([500.0])
for p in m.parameters():
    p.grad = torch.zeros_like(p)       # gradient buffers exist before the measured step
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
m(x, t, text).square().mean().backward()
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"peak_increase_kb": after - before}))
"""


def measure_peak(act: dict[str, float]) -> list[dict]:
    """Peak RSS increase of one forward+backward (fresh process) vs the activation model."""
    dim, ffn, heads, layers, f, h, w = 256, 1024, 2, 6, 4, 32, 64          # 2048 tokens
    n = f * (h // 2) * (w // 2)
    per_block = (act["a_dim"] * dim + act["b_ffn"] * ffn + act["c"]) * n * 4
    out = []
    for ckpt in (False, True):
        r = subprocess.run([sys.executable, "-c", _PROBE, json.dumps([dim, ffn, heads, layers, f, h, w, ckpt])],
                           capture_output=True, text=True, check=True)
        kb = json.loads(r.stdout.strip().splitlines()[-1])["peak_increase_kb"]
        predicted = layers * n * dim * 4 + RECOMPUTE_BLOCKS * per_block if ckpt else layers * per_block
        out.append({"name": f"dim {dim}, ffn {ffn}, {layers} blocks, {n} tokens, "
                            f"{'per-block checkpointing' if ckpt else 'no checkpointing'}",
                    "predicted_mb": predicted / 2 ** 20, "measured_mb": kb / 1024})
    return out


def main(gpus: list[int], out: str | None = None, measure: bool = False) -> int:
    act = {"lora": activation_model(lora_rank=LORA["rank"]), "full": activation_model()}
    rows = plan_rows(gpus, act)
    check = measure_peak(act["full"]) if measure else None
    md = markdown(rows, act, check)
    print(md)
    if out:
        with open(out + ".md", "w") as f:
            f.write(md + "\n")
        with open(out + ".json", "w") as f:
            json.dump({"rows": rows, "activation_model": act, "check": check}, f, indent=1)
    return 0
