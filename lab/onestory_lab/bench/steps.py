"""Per-step time of onestory/wan.py for every memory method and shot, the per-shot cost of the
Frame Selector + Adaptive Conditioner, the pipeline call counts and the calibrated step-time
model's check (scaled config, CPU).

Noise control: every (method, shot) context is built once (as in a real shot), then the steps
are timed round-robin - repeat r times every shot × method, method order rotated every round -
so slow phases of a shared machine hit all methods alike; ratios use per-round pairs and medians.
"""
from __future__ import annotations

import contextlib
import time
from typing import Callable, Optional

import torch

from onestory_lab.bench import costmodel as cm
from onestory import wan
from onestory.scorers import select

from .common import METHODS, BenchConfig, Story, median, now, timed

Log = Callable[[str], None]


@contextlib.contextmanager
def self_attention_clock(acc: list):
    """Adds to ``acc[0]`` the clock time spent in the DiT's self-attention (`wan._attend` with
    as many keys as queries; cross-attention has the caption's keys) while active. Costs two
    clock reads per attention call, nothing else: the step's own numbers are unchanged."""
    attend = wan._attend

    def timed_attend(q, k, v, heads):
        if q.shape[1] != k.shape[1]:
            return attend(q, k, v, heads)
        t0 = now()
        out = attend(q, k, v, heads)
        acc[0] += now() - t0
        return out

    wan._attend = timed_attend
    try:
        yield acc
    finally:
        wan._attend = attend


@torch.no_grad()
def measure_steps(story: Story, cfg: BenchConfig, log: Log = print,
                  full_history_repeats: Optional[int] = None) -> dict:
    """Median step time (s) per method and shot, with the raw samples and context sizes, and
    per sample the part spent in self-attention (for the calibrated cost model)."""
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
    attention = {k: [] for k in velocities}
    fh_reps = cfg.repeats if full_history_repeats is None else min(full_history_repeats, cfg.repeats)
    order = list(METHODS)
    t_start = time.perf_counter()
    acc = [0.0]
    with self_attention_clock(acc):
        for r in range(cfg.repeats):
            rot = order[r % len(order):] + order[: r % len(order)]
            for s in shots:
                for m in rot:
                    # full history is the slow one: fewer rounds, except at the first shot,
                    # which calibrates the step-time model and is cheap
                    if m == "full_history" and r >= fh_reps and s != shots[0]:
                        continue
                    acc[0] = 0.0
                    samples[(m, s)].append(timed(lambda: velocities[(m, s)](x, sigma)))
                    attention[(m, s)].append(acc[0])
            log(f"  steps: round {r + 1}/{cfg.repeats} done ({time.perf_counter() - t_start:.0f} s)")
    out: dict = {"step_seconds": {}, "samples": {}, "attention_samples": {}, "context_tokens": {}}
    for m in METHODS:
        out["step_seconds"][m] = {str(s): median(samples[(m, s)]) for s in shots}
        out["samples"][m] = {str(s): samples[(m, s)] for s in shots}
        out["attention_samples"][m] = {str(s): attention[(m, s)] for s in shots}
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
def measure_selection(story: Story, cfg: BenchConfig, log: Log = print) -> dict:
    """Selector (learned, on the whole bank) + conditioner (budget 1) time per shot, vs a step.

    Neither module keeps anything between calls, so every repeat does a shot's whole work. The
    fraction divides the median selection by the median budget-1 step of the same shot, timed
    right after it (the same phase of a shared machine).
    """
    rows = []
    x, sigma = story.step_inputs()
    # a selection takes ~1 ms, a step ~100: 3x more selection repeats cost nothing and steady a
    # median that one slow phase of a shared machine could otherwise move
    reps, sel_reps = max(3, cfg.repeats), max(3, 3 * cfg.repeats)
    for s in cfg.shots:
        bank = story.bank(s)
        sel_t, cond_t = [], []
        for _ in range(sel_reps):
            t0 = now()
            selection = select(bank, cfg.k, "learned", text=story.text, selector=story.selector)
            t1 = now()
            story.conditioner.build(bank, selection, 1.0)
            sel_t.append(t1 - t0)
            cond_t.append(now() - t1)
        velocity = story.velocity(story.context("onestory_b1", s))
        step = median([timed(lambda: velocity(x, sigma)) for _ in range(reps)])
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

    handles = [counting("dit", story.model)]
    # select() scores a bank through score_bank and the pipeline builds the context with
    # build_banks, which does not go through forward(), so count those two entry points themselves
    build, score_bank = story.conditioner.build_banks, story.selector.score_bank

    def counted_build(*a, **kw):
        counts["conditioner"] += 1
        return build(*a, **kw)

    def counted_score_bank(*a, **kw):
        counts["selector"] += 1
        return score_bank(*a, **kw)

    story.conditioner.build_banks = counted_build
    story.selector.score_bank = counted_score_bank
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
        del story.conditioner.build_banks
        del story.selector.score_bank
    return {"per_shot": rows,
            "context_built_once_per_shot": all(r["conditioner_calls"] == 1 and r["selector_calls"] == 1 for r in rows),
            "one_dit_call_per_step": all(r["dit_calls"] == r["steps"] for r in rows)}


def step_time_model(cfg: BenchConfig, steps: dict) -> tuple[cm.StepTimeModel, dict]:
    """The calibrated CPU step-time model of this run (see `cm.StepTimeModel`): calibrated on
    the no-memory step (pooled over all shots: the same token count) and on full history at the
    first shot, each with its measured self-attention time; everything else is predicted."""
    dims, nx = cfg.model_dims(), cm.noise_tokens(cfg.model_dims(), cfg.geometry())
    first = str(cfg.shots[0])
    none_t = [x for s in cfg.shots for x in steps["samples"]["none"][str(s)]]
    none_a = [x for s in cfg.shots for x in steps["attention_samples"]["none"][str(s)]]
    points = [(0, median(none_t), median(none_a)),
              (steps["context_tokens"]["full_history"][first], median(steps["samples"]["full_history"][first]),
               median(steps["attention_samples"]["full_history"][first]))]
    model = cm.StepTimeModel.calibrate(dims, nx, points, batch=2)
    info = {"calibration_points": [{"method": "none", "shots": "all", "context_tokens": points[0][0],
                                    "step_seconds": points[0][1], "attention_seconds": points[0][2]},
                                   {"method": "full_history", "shots": first, "context_tokens": points[1][0],
                                    "step_seconds": points[1][1], "attention_seconds": points[1][2]}],
            "fixed_seconds": model.fixed_seconds, "token_flops_per_second": model.token_flops_per_second,
            "attention_flops_per_second": model.attention_flops_per_second,
            "attention_share_no_memory": model_share(model, cfg, 0)}
    return model, info


def model_share(model: cm.StepTimeModel, cfg: BenchConfig, n_ctx: int) -> float:
    """Self-attention's share of a step with ``n_ctx`` context tokens, according to ``model``."""
    dims, nx = cfg.model_dims(), cm.noise_tokens(cfg.model_dims(), cfg.geometry())
    attn = cm.flop_classes(dims, nx, n_ctx, batch=2)["attention"] / model.attention_flops_per_second
    return attn / model.seconds(dims, nx, n_ctx, batch=2)


def analytic_check(cfg: BenchConfig, steps: dict, tolerance: float = 0.15) -> dict:
    """Predicted step ratios (method / no memory) at the scaled config vs the measured time
    ratios, for the calibrated step-time model (the target; its two calibration points are
    marked and left out of the error) and for plain FLOP counts (for reference); also checks
    that the model's token counts equal the measured context sizes."""
    dims, geo = cfg.model_dims(), cfg.geometry()
    nx = cm.noise_tokens(dims, geo)
    base = cm.forward_flops(dims, nx, 0, batch=2)["total"]
    model, info = step_time_model(cfg, steps)
    base_time = model.seconds(dims, nx, 0, batch=2)
    rows, worst, worst_flops = [], 0.0, 0.0
    for m in METHODS:
        if m == "none":
            continue
        constant = len({steps["context_tokens"][m][str(s)] for s in cfg.shots}) == 1
        pooled = paired_ratio(steps["samples"], m, "none", cfg.shots) if constant else None
        for s in cfg.shots:
            nc = cm.context_tokens(m, geo, s, k=cfg.k)
            flop_ratio = cm.forward_flops(dims, nx, nc, batch=2)["total"] / base
            pred = model.seconds(dims, nx, nc, batch=2) / base_time
            # same token count at every shot: pool the paired samples of all shots (less noise)
            meas = pooled if constant else paired_ratio(steps["samples"], m, "none", [s])
            calibration = m == "full_history" and s == cfg.shots[0]
            err, flop_err = abs(pred - meas) / meas, abs(flop_ratio - meas) / meas
            if not calibration:
                worst = max(worst, err)
            worst_flops = max(worst_flops, flop_err)
            att = [a / t for a, t in zip(steps["attention_samples"][m][str(s)], steps["samples"][m][str(s)])]
            rows.append({"method": m, "shot": s, "context_tokens_model": nc,
                         "context_tokens_measured": steps["context_tokens"][m][str(s)],
                         "predicted_ratio": pred, "measured_ratio": meas, "pooled_over_shots": constant,
                         "relative_error": err, "calibration_point": calibration,
                         "within_tolerance": calibration or err <= tolerance,
                         "flop_ratio": flop_ratio, "flop_relative_error": flop_err,
                         "attention_share_measured": median(att),
                         "attention_share_predicted": model_share(model, cfg, nc)})
    return {"tolerance": tolerance, "model": "calibrated step time (fixed + token work + self-attention)",
            "calibration": info, "rows": rows, "max_relative_error": worst,
            "max_relative_error_flops_only": worst_flops,
            "all_within_tolerance": all(r["within_tolerance"] for r in rows),
            "token_counts_match": all(r["context_tokens_model"] == r["context_tokens_measured"] for r in rows)}
