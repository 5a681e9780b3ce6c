"""Parts 1 and 2: per-step time of onestory/wan.py for every memory method and shot, and the
per-shot cost of the Frame Selector + Adaptive Conditioner (scaled config, CPU).

Noise control: every (method, shot) context is built once (as in a real shot), then the steps
are timed round-robin - repeat r times every shot × method, method order rotated every round -
so slow phases of a shared machine hit all methods alike; ratios use per-round pairs and medians.
"""
from __future__ import annotations

import time
from typing import Callable, Optional

import torch

from onestory import costmodel as cm
from onestory.selector import select

from .common import METHODS, BenchConfig, Story, median, now, timed

Log = Callable[[str], None]


@torch.no_grad()
def measure_steps(story: Story, cfg: BenchConfig, log: Log = print,
                  full_history_repeats: Optional[int] = None) -> dict:
    """Median step time (s) per method and shot, with the raw samples and context sizes."""
    shots = list(cfg.shots)
    velocities, tokens = {}, {}
    for s in shots:
        for m in METHODS:
            ctx = story.context(m, s)
            velocities[(m, s)] = story.velocity(ctx)
            tokens[(m, s)] = len(ctx)
    x, sigma = story.step_inputs()
    for v in velocities.values():  # warm-up: one untimed step each (allocator, kernels)
        v(x, sigma)
    samples = {k: [] for k in velocities}
    fh_reps = cfg.repeats if full_history_repeats is None else min(full_history_repeats, cfg.repeats)
    order = list(METHODS)
    t_start = time.perf_counter()
    for r in range(cfg.repeats):
        rot = order[r % len(order):] + order[: r % len(order)]
        for s in shots:
            for m in rot:
                if m == "full_history" and r >= fh_reps:
                    continue
                samples[(m, s)].append(timed(lambda: velocities[(m, s)](x, sigma)))
        log(f"  steps: round {r + 1}/{cfg.repeats} done ({time.perf_counter() - t_start:.0f} s)")
    out: dict = {"step_seconds": {}, "samples": {}, "context_tokens": {}}
    for m in METHODS:
        out["step_seconds"][m] = {str(s): median(samples[(m, s)]) for s in shots}
        out["samples"][m] = {str(s): samples[(m, s)] for s in shots}
        out["context_tokens"][m] = {str(s): tokens[(m, s)] for s in shots}
    out["full_history_repeats"] = fh_reps
    return out


def paired_ratio(samples: dict, num: str, den: str, shots) -> float:
    """Median over rounds and shots of step(num) / step(den) measured in the same round."""
    ratios = []
    for s in shots:
        a, b = samples[num][str(s)], samples[den][str(s)]
        ratios += [x / y for x, y in zip(a, b)]
    return median(ratios)


@torch.no_grad()
def measure_selection(story: Story, cfg: BenchConfig, step_seconds: dict, log: Log = print) -> dict:
    """Selector (learned, on the whole bank) + conditioner (budget 1) time per shot, vs a step."""
    rows = []
    for s in cfg.shots:
        bank = story.bank(s)
        sel_t, cond_t = [], []
        for _ in range(max(3, cfg.repeats)):
            t0 = now()
            selection = select(bank, cfg.k, "learned", text=story.text, selector=story.selector)
            t1 = now()
            story.conditioner.build(bank, selection, 1.0)
            t2 = now()
            sel_t.append(t1 - t0)
            cond_t.append(t2 - t1)
        step = step_seconds["onestory_b1"][str(s)]
        total = median([a + b for a, b in zip(sel_t, cond_t)])
        model_cost = cm.selection_cost(cfg.model_dims(), cfg.geometry(), s, selector=cfg.selector_dims(), k=cfg.k,
                                       steps=cfg.steps_per_shot)
        rows.append({"shot": s, "memory_frames": bank.num_frames, "selector_seconds": median(sel_t),
                     "conditioner_seconds": median(cond_t), "total_seconds": total, "step_seconds": step,
                     "fraction_of_step": total / step,
                     "fraction_of_shot": total / (total + cfg.steps_per_shot * step),
                     "analytic_fraction_of_step": model_cost["fraction_of_step"]})
    log(f"  selector+conditioner: max {100 * max(r['fraction_of_step'] for r in rows):.2f} % of a step")
    return {"steps_per_shot": cfg.steps_per_shot, "per_shot": rows,
            "max_fraction_of_step": max(r["fraction_of_step"] for r in rows),
            "max_fraction_of_shot": max(r["fraction_of_shot"] for r in rows)}


@torch.no_grad()
def pipeline_check(story: Story, cfg: BenchConfig, steps: int = 3) -> dict:
    """Run the real `NextShotGenerator.generate` (budget 1) at the first and last shot, counting
    how often the selector and the conditioner run and how often the DiT is called: the context
    must be built once per shot and reused by every step and both CFG branches (1 call/step)."""
    from onestory.story import NextShotGenerator, ShotSpec, StoryParams

    counts = {"selector": 0, "conditioner": 0, "dit": 0}

    def counting(name, module):
        def hook(*_):
            counts[name] += 1
        return module.register_forward_pre_hook(hook)

    handles = [counting("selector", story.selector), counting("dit", story.model)]
    build = story.conditioner.build  # build() calls forward() directly: count build itself

    def counted_build(*a, **kw):
        counts["conditioner"] += 1
        return build(*a, **kw)

    story.conditioner.build = counted_build
    gen = NextShotGenerator(story.model, story.conditioner, selector=story.selector, negative_text=story.negative)
    params = StoryParams(frames=cfg.frames, height=cfg.height, width=cfg.width, k=cfg.k, budget=1.0,
                         scorer="learned", steps=steps, cfg=cfg.cfg)
    rows = []
    try:
        for s in (cfg.shots[0], cfg.shots[-1]):
            for key in counts:
                counts[key] = 0
            t = timed(lambda: gen.generate(story.bank(s), ShotSpec("bench", story.text, seed=s), params))
            rows.append({"shot": s, "steps": steps, "seconds": t, **{f"{k}_calls": v for k, v in counts.items()}})
    finally:
        for h in handles:
            h.remove()
        del story.conditioner.build
    return {"per_shot": rows,
            "context_built_once_per_shot": all(r["conditioner_calls"] == 1 and r["selector_calls"] == 1 for r in rows),
            "one_dit_call_per_step": all(r["dit_calls"] == r["steps"] for r in rows)}


def analytic_check(cfg: BenchConfig, steps: dict, tolerance: float = 0.15) -> dict:
    """Cost-model step ratios (method / no memory, FLOPs) at the scaled config vs the measured
    time ratios; also checks that the model's token counts equal the measured context sizes."""
    dims, geo = cfg.model_dims(), cfg.geometry()
    nx = cm.noise_tokens(dims, geo)
    base = cm.forward_flops(dims, nx, 0, batch=2)["total"]
    rows, worst = [], 0.0
    for m in METHODS:
        if m == "none":
            continue
        constant = len({steps["context_tokens"][m][str(s)] for s in cfg.shots}) == 1
        pooled = paired_ratio(steps["samples"], m, "none", cfg.shots) if constant else None
        for s in cfg.shots:
            nc = cm.context_tokens(m, geo, s, k=cfg.k)
            pred = cm.forward_flops(dims, nx, nc, batch=2)["total"] / base
            # same token count at every shot: pool the paired samples of all shots (less noise)
            meas = pooled if constant else paired_ratio(steps["samples"], m, "none", [s])
            err = abs(pred - meas) / meas
            worst = max(worst, err)
            rows.append({"method": m, "shot": s, "context_tokens_model": nc,
                         "context_tokens_measured": steps["context_tokens"][m][str(s)],
                         "predicted_ratio": pred, "measured_ratio": meas, "pooled_over_shots": constant,
                         "relative_error": err,
                         "within_tolerance": err <= tolerance})
    return {"tolerance": tolerance, "rows": rows, "max_relative_error": worst,
            "all_within_tolerance": all(r["within_tolerance"] for r in rows),
            "token_counts_match": all(r["context_tokens_model"] == r["context_tokens_measured"] for r in rows)}
