"""Frame Selector + Adaptive Conditioner per shot: where the time goes, and what the derived
weights (onestory/derived.py) change. Pure PyTorch, scaled config, one process:

    python -m bench.selection_cost [--shot 10] [--repeats 60] [--quick] [--out FILE.json]

For the learned selection (``select``) and the budget-1 context (``AdaptiveConditioner.build``)
of one shot, each started as in a story (the previous bank already scored), in three cache
states, interleaved round by round:

* ``warm``: right after the same selection, untimed (code and weights in the CPU caches);
* ``flushed``: right after copying 64 MiB (data and code evicted; nothing else changed);
* ``after_step``: right after a budget-1 DiT step (what a real next shot sees).

Each state runs with the derived weights on and off (``onestory.derived.ENABLED``), so their
effect is a ratio within one run. ``tier_products`` times each patchifier product alone with
nn.Linear's weight layout, input-major, and input-major with the padding folded in. A control
times 50 small tensor ops warm and flushed: the per-op cost of refilling the caches,
independent of our code. Medians of CPU time (one torch thread); ratios, never absolute targets.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.common import QUICK, SCALED, Story, machine_info, median, now, set_clock
from onestory import derived
from onestory.selector import select

STATES = ("warm", "flushed", "after_step")


def _bench(fn, repeats: int) -> float:
    for _ in range(10):
        fn()
    samples = []
    for _ in range(repeats):
        t0 = now()
        fn()
        samples.append(now() - t0)
    return median(samples)


@torch.no_grad()
def tier_products(cfg, conditioner, repeats: int) -> list[dict]:
    """Each tier's product at budget 1 alone (warm, 20 x repeats): nn.Linear's "d k" weight,
    the same weight input-major "k d", and input-major with the padding folded in."""
    from onestory.conditioner import _folded_weight, solve_budget
    h, w = cfg.height, cfg.width
    tiers = solve_budget(cfg.k, conditioner.kernels, h, w, 1.0, conditioner.patch)
    rows = []
    for tier in sorted(set(tiers)):
        _, kh, kw = conditioner.kernels[tier]
        frames = sum(t == tier for t in tiers)
        conv = conditioner.patchifiers[tier]
        weight, bias = conv.weight.flatten(1), conv.bias
        x = torch.randn(frames * -(-h // kh) * -(-w // kw), weight.shape[1])
        folded = _folded_weight(conv.weight, h, w)
        xf = torch.randn(x.shape[0], folded.shape[0])
        input_major = weight.t().contiguous()
        times = {"plain": _bench(lambda: F.linear(x, weight, bias), 20 * repeats),
                 "input_major": _bench(lambda: torch.addmm(bias, x, input_major), 20 * repeats),
                 "folded": _bench(lambda: torch.addmm(bias, xf, folded), 20 * repeats)}
        rows.append({"tier": tier, "kernel": list(conditioner.kernels[tier]), "rows": x.shape[0],
                     "weights": weight.numel(), "folded_weights": folded.numel(),
                     "seconds": times, "input_major_over_plain": times["input_major"] / times["plain"],
                     "folded_over_plain": times["folded"] / times["plain"]})
    return rows


def _small_ops(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    y = x
    for _ in range(10):   # 5 ops per round, 50 in all
        y = (F.layer_norm(F.linear(y, w, b), (w.shape[0],)) + x).mul(0.5).relu()
    return y


@torch.no_grad()
def measure(cfg, shot: int, repeats: int, log=print) -> dict:
    story = Story(cfg)
    bank, previous = story.bank(shot), story.bank(shot - 1)
    selector, conditioner = story.selector, story.conditioner
    velocity = story.velocity(story.context("onestory_b1", shot))
    x, sigma = story.step_inputs()
    big = torch.empty(64 * 2**20 // 4)
    sink = torch.empty_like(big)
    xs, ws, bs = torch.randn(16, 32), torch.randn(32, 32), torch.randn(32)

    def start_of_shot():
        selector.clear_memory_cache()
        if previous.num_frames:
            select(previous, cfg.k, "learned", text=story.text, selector=selector)

    def prepare(state):
        if state == "warm":   # the same selection once, untimed: its code and data in the caches
            conditioner.build(bank, select(bank, cfg.k, "learned", text=story.text, selector=selector), 1.0)
        start_of_shot()
        if state == "flushed":
            sink.copy_(big)
        elif state == "after_step":
            velocity(x, sigma)

    samples = {(on, s): {"select": [], "build": []} for on in (True, False) for s in STATES}
    control = {"warm": [], "flushed": []}
    for on in (True, False):   # warm-up: derived weights made, kernels loaded
        derived.ENABLED = on
        start_of_shot()
        conditioner.build(bank, select(bank, cfg.k, "learned", text=story.text, selector=selector), 1.0)
    try:
        for r in range(repeats):
            for on in ((True, False) if r % 2 else (False, True)):
                derived.ENABLED = on
                for state in STATES:
                    prepare(state)
                    t0 = now()
                    selection = select(bank, cfg.k, "learned", text=story.text, selector=selector)
                    t1 = now()
                    conditioner.build(bank, selection, 1.0)
                    t2 = now()
                    samples[(on, state)]["select"].append(t1 - t0)
                    samples[(on, state)]["build"].append(t2 - t1)
            for state in ("warm", "flushed"):
                if state == "flushed":
                    sink.copy_(big)
                t0 = now()
                _small_ops(xs, ws, bs)
                control[state].append(now() - t0)
    finally:
        derived.ENABLED = True

    out = {"config": cfg.name, "shot": shot, "memory_frames": bank.num_frames, "repeats": repeats,
           "machine": machine_info(), "states": {}}
    for state in STATES:
        row = {}
        for on in (True, False):
            s = samples[(on, state)]
            key = "derived" if on else "plain"
            row[key] = {"select_seconds": median(s["select"]), "build_seconds": median(s["build"]),
                        "total_seconds": median([a + b for a, b in zip(s["select"], s["build"])])}
        row["build_ratio_derived_over_plain"] = row["derived"]["build_seconds"] / row["plain"]["build_seconds"]
        row["total_ratio_derived_over_plain"] = row["derived"]["total_seconds"] / row["plain"]["total_seconds"]
        out["states"][state] = row
    warm = out["states"]["warm"]["derived"]["total_seconds"]
    for state in ("flushed", "after_step"):
        out["states"][state]["total_over_warm"] = out["states"][state]["derived"]["total_seconds"] / warm
    out["tier_products"] = tier_products(cfg, conditioner, repeats)
    out["control_50_ops"] = {"warm_seconds": median(control["warm"]), "flushed_seconds": median(control["flushed"]),
                             "extra_per_op_seconds": (median(control["flushed"]) - median(control["warm"])) / 50}
    for state in STATES:
        r = out["states"][state]
        log(f"  {state:10s} select+build {1e3 * r['derived']['total_seconds']:.3f} ms (derived) / "
            f"{1e3 * r['plain']['total_seconds']:.3f} ms (plain); build ratio {r['build_ratio_derived_over_plain']:.3f}")
    for row in out["tier_products"]:
        log(f"  tier {row['tier']} {tuple(row['kernel'])}: {row['rows']} rows x {row['weights'] // cfg.dim} inputs: "
            f"input-major {row['input_major_over_plain']:.2f}x, folded {row['folded_over_plain']:.2f}x the nn.Linear time")
    c = out["control_50_ops"]
    log(f"  control: 50 small ops {1e6 * c['warm_seconds']:.0f} us warm, {1e6 * c['flushed_seconds']:.0f} us flushed")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shot", type=int, default=None, help="shot to select for (default: the config's last)")
    ap.add_argument("--repeats", type=int, default=60)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="tiny config, 2 repeats: checks the output format only")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    set_clock("cpu")
    cfg = QUICK if args.quick else SCALED
    repeats = 2 if args.quick else args.repeats
    shot = args.shot or cfg.shots[-1]
    if shot < 2:
        ap.error("--shot must be >= 2 (shot 1 has no memory)")
    result = measure(cfg, shot, repeats, log=lambda m: print(m, file=sys.stderr))
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
