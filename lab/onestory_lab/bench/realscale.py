"""Selection cost at real Wan 2.1 14B 480p dimensions, as a fraction of a DiT step on this CPU.

The Frame Selector (adapter defaults: width 1024, 16 queries, 8 heads, φ_V stride 8) and the
Adaptive Conditioner (D = 5120, default kernels, budget 1, K = 9) run at full size: memory of
21 latent frames of 16 x 60 x 104 per earlier shot, a 512-token umT5 caption of width 4096. A
DiT step of that size does not fit this machine's time (~3.6 PFLOP), so it is priced:

    step seconds = FFN FLOPs / FFN-matmul rate + self-attention FLOPs / SDPA rate
                   + every other FLOP / projection-matmul rate

with the FLOPs of `costmodel.flop_classes` / `forward_flops` (CFG batch 2, budget-1 context)
and the three rates measured here on kernels of the model's own shapes (a 256-row slice of
the token matrix against the real 5120 x 5120 and 5120 x 13824 weights; SDPA with head dim
128 against all N keys). Element-wise work (norms, RoPE, modulation, GELU) and dispatch are
not priced, so the priced step is too short and the fraction an upper bound. `price_check`
applies the same pricing to the scaled config, where the step can be measured, to show the
size of that gap.

Besides the whole selection, each shot reports the parts a cache could save: the φ_V / φ_P
encoding of the frames the previous shot's selection already encoded (what a per-frame
encoding cache saves at most) and the bank fingerprint (sha256 of the frames; memoised on the
immutable bank, and called by the nodes several times per shot).

    python -m onestory_lab.bench.realscale [--shots 2 6 10] [--threads 1]   # prints JSON (default shots 2-10)
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from onestory.conditioner import AdaptiveConditioner
from onestory.defaults import K as DEFAULT_K
from onestory.frame_selector import FrameSelector
from onestory.memory import MemoryBank
from onestory.scorers import select
from onestory_lab.bench import costmodel as cm

from .common import median, now, timed

Log = Callable[[str], None]


@dataclass(frozen=True)
class RealScale:
    """Sizes of the real-scale measurement (defaults: Wan 2.1 14B, 480p x 81 frames)."""

    model: cm.ModelDims = cm.WAN21_14B
    geometry: cm.Geometry = cm.WAN21_480P
    selector: cm.SelectorDims = cm.SelectorDims()
    k: int = DEFAULT_K
    budget: float = 1.0
    shots: tuple[int, ...] = tuple(range(2, 11))
    repeats: int = 3
    rate_rows: int = 256          # rows of the token slice the rates are measured on
    rate_heads: int = 4           # heads of the SDPA rate kernel (the rate is per head)


#: Format check only (`bench --quick`): tiny sizes, same code path.
QUICK = RealScale(model=cm.ModelDims("quick", dim=64, ffn_dim=176, num_heads=2, num_layers=2, text_dim=64,
                                     text_len=8),
                  geometry=cm.Geometry.from_latent("quick", 5, 8, 12),
                  selector=cm.SelectorDims(width=32, num_queries=16, heads=2, spatial_stride=8),
                  shots=(2, 3), repeats=1, rate_rows=32, rate_heads=2)


def _median_time(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: allocator, kernel selection
    return median([timed(fn) for _ in range(repeats)])


@torch.no_grad()
def measure_rates(model: cm.ModelDims, n_tokens: int, rows: int, heads: int, repeats: int = 3) -> dict:
    """FLOP/s of this CPU on kernels shaped like one DiT block of ``model`` with ``n_tokens``
    tokens: projection (rows x D @ D x D), FFN (rows x D @ D x F) and SDPA (``heads`` heads of
    ``rows`` queries against ``n_tokens`` keys, head dim D / H)."""
    g = torch.Generator().manual_seed(0)
    d, f, hd = model.dim, model.ffn_dim, model.head_dim
    rows = min(rows, n_tokens)
    x = torch.randn(rows, d, generator=g)
    w_proj, w_ffn = torch.randn(d, d, generator=g), torch.randn(f, d, generator=g)
    q = torch.randn(1, heads, rows, hd, generator=g)
    kv = torch.randn(2, 1, heads, n_tokens, hd, generator=g)
    t_proj = _median_time(lambda: F.linear(x, w_proj), repeats)
    t_ffn = _median_time(lambda: F.linear(x, w_ffn), repeats)
    t_sdpa = _median_time(lambda: F.scaled_dot_product_attention(q, kv[0], kv[1]), repeats)
    return {"projection_flops_per_second": 2.0 * rows * d * d / t_proj,
            "ffn_flops_per_second": 2.0 * rows * d * f / t_ffn,
            "attention_flops_per_second": 4.0 * heads * rows * n_tokens * hd / t_sdpa,
            "rows": rows, "heads": heads, "keys": n_tokens}


def price_step(model: cm.ModelDims, n_noise: int, n_ctx: int, rates: dict, batch: int = 2) -> dict:
    """Seconds of one DiT forward (CFG batch ``batch``) at ``rates`` (see `measure_rates`)."""
    flops = cm.forward_flops(model, n_noise, n_ctx, batch)
    attention, ffn = flops["self_attn_sdpa"], flops["ffn"]
    other = flops["total"] - attention - ffn
    seconds = (ffn / rates["ffn_flops_per_second"] + attention / rates["attention_flops_per_second"]
               + other / rates["projection_flops_per_second"])
    return {"flops": flops["total"], "seconds": seconds}


def _bank(cfg: RealScale, shots: int, gen: torch.Generator) -> list[MemoryBank]:
    """Banks of a story before each shot 1..shots (random latents)."""
    t, h, w = cfg.geometry.latent
    banks = [MemoryBank.empty()]
    for i in range(1, shots):
        latent = torch.randn(cfg.model.latent_channels, t, h, w, generator=gen)
        banks.append(banks[-1].add_shot(latent, f"shot {i}", seed=i))
    return banks


@torch.no_grad()
def measure_selection(cfg: RealScale, log: Log = print) -> dict:
    """Per shot: learned selection + budget-1 conditioner at ``cfg``'s sizes, medians of
    ``cfg.repeats``; plus the parts a cache could save (see the module docstring)."""
    torch.manual_seed(0)
    m, s = cfg.model, cfg.selector
    selector = FrameSelector(latent_channels=m.latent_channels, text_dim=m.text_dim, width=s.width,
                             num_queries=s.num_queries, heads=s.heads, spatial_stride=s.spatial_stride).eval()
    conditioner = AdaptiveConditioner(m.latent_channels, m.dim).eval()
    gen = torch.Generator().manual_seed(1)
    text = torch.randn(m.text_len, m.text_dim, generator=gen)
    banks = _bank(cfg, max(cfg.shots), gen)
    rows = []
    for shot in cfg.shots:
        bank, previous = banks[shot - 1], banks[shot - 2]
        sel_t, cond_t = [], []
        select(bank, cfg.k, "learned", text=text, selector=selector)  # warm-up
        for _ in range(cfg.repeats):
            t0 = now()
            selection = select(bank, cfg.k, "learned", text=text, selector=selector)
            t1 = now()
            ctx = conditioner.build(bank, selection, cfg.budget)
            sel_t.append(t1 - t0)
            cond_t.append(now() - t1)
        reuse = (_median_time(lambda: selector.encode_memory(previous.frames), cfg.repeats)
                 if previous.num_frames else 0.0)
        # a fresh bank object each time: the fingerprint is memoised per bank
        fingerprint = median([timed(lambda: MemoryBank._new(bank.frames, bank.records, bank.shots).fingerprint())
                              for _ in range(cfg.repeats)])
        rows.append({"shot": shot, "memory_frames": bank.num_frames, "context_tokens": len(ctx),
                     "selector_seconds": median(sel_t), "conditioner_seconds": median(cond_t),
                     "total_seconds": median([a + b for a, b in zip(sel_t, cond_t)]),
                     "reencode_previous_seconds": reuse, "fingerprint_seconds": fingerprint})
        log(f"  real scale, shot {shot} ({bank.num_frames} memory frames): selector "
            f"{rows[-1]['selector_seconds']:.3f} s, conditioner {rows[-1]['conditioner_seconds']:.3f} s")
    return {"per_shot": rows, "selector_parameters": sum(p.numel() for p in selector.parameters()),
            "conditioner_parameters": sum(p.numel() for p in conditioner.parameters())}


def run(cfg: RealScale = RealScale(), log: Log = print, scaled: "object | None" = None) -> dict:
    """The real-scale row: selection measured, step priced, fractions; with ``scaled`` (a
    `common.BenchConfig` and the measured median budget-1 step of it, as a pair) also the
    pricing checked against a measured step."""
    nx = cm.noise_tokens(cfg.model, cfg.geometry)
    nc = cm.context_tokens("onestory_b1", cfg.geometry, max(cfg.shots), k=cfg.k)
    log(f"  real scale: rates on {cfg.model.name}-shaped kernels ({nx + nc} tokens)")
    rates = measure_rates(cfg.model, nx + nc, cfg.rate_rows, cfg.rate_heads)
    step = price_step(cfg.model, nx, nc, rates)
    sel = measure_selection(cfg, log)
    for row in sel["per_shot"]:
        flops = cm.selection_cost(cfg.model, cfg.geometry, row["shot"], selector=cfg.selector, k=cfg.k,
                                  budget=cfg.budget)
        row["fraction_of_step"] = row["total_seconds"] / step["seconds"]
        row["reencode_previous_fraction_of_step"] = row["reencode_previous_seconds"] / step["seconds"]
        row["fingerprint_fraction_of_step"] = row["fingerprint_seconds"] / step["seconds"]
        row["flop_fraction_of_step"] = flops["fraction_of_step"]
        row["context_tokens_model"] = cm.context_tokens("onestory_b1", cfg.geometry, row["shot"], k=cfg.k)
    out = {"sizes": {"model": asdict(cfg.model), "geometry": asdict(cfg.geometry), "latent": list(cfg.geometry.latent),
                     "selector": asdict(cfg.selector), "k": cfg.k, "budget": cfg.budget, "repeats": cfg.repeats},
           "noise_tokens": nx, "context_tokens": nc, "rates": rates,
           "step_seconds_priced": step["seconds"], "step_flops": step["flops"], **sel,
           "max_fraction_of_step": max(r["fraction_of_step"] for r in sel["per_shot"])}
    if scaled is not None:
        out["price_check"] = price_check(*scaled, rows=cfg.rate_rows)
    return out


def price_check(bench_cfg, measured_step_seconds: float, rows: int = 256) -> dict:
    """The pricing of `run` applied to the scaled benchmark config, against its measured
    budget-1 step (same run): priced / measured < 1 is the share the pricing leaves out."""
    dims = bench_cfg.model_dims()
    nx = cm.noise_tokens(dims, bench_cfg.geometry())
    nc = cm.context_tokens("onestory_b1", bench_cfg.geometry(), bench_cfg.shots[0], k=bench_cfg.k)
    rates = measure_rates(dims, nx + nc, rows, dims.num_heads, repeats=7)
    priced = price_step(dims, nx, nc, rates)["seconds"]
    return {"config": bench_cfg.name, "rates": rates, "priced_seconds": priced,
            "measured_seconds": measured_step_seconds, "priced_over_measured": priced / measured_step_seconds}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="onestory_lab.bench.realscale", description=__doc__.split("\n\n")[0])
    ap.add_argument("--shots", type=int, nargs="+", default=list(RealScale.shots))
    ap.add_argument("--repeats", type=int, default=RealScale.repeats)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    res = run(RealScale(shots=tuple(a.shots), repeats=a.repeats), log=lambda s: print(s, file=sys.stderr))
    print(json.dumps(res, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
