"""The world-v2 recall study (docs/results.md, "Recall on fresh stories"): evaluate trained runs
under eval-time variants on one seed range and report mean ± std over training seeds.

    python -m onestory_lab.experiments.recall_study --runs runs/study --out lab/results/storyworld/study \\
        --story-offset 1074790400 --per-pattern 200
    python -m onestory_lab.experiments.recall_study --out lab/results/storyworld/study --report

A run directory is `<config>_s<seed>` (trained by experiments/recall_study.sh). Every (run,
variant) writes `<run>__<variant>.json`; existing results are skipped (resumable). Variants are
ordinary pipeline settings of one trained DiT (`eval.generate.memory_settings`): the policy (which
scorer, how many kept frames) and the context budget.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

from onestory_lab.experiments.ablate import _stats   # (mean, sample std, n) over seeds

# variant -> (configs it applies to, GenParams overrides)
VARIANTS = {
    "method":      (("both",), dict(policy="both", k=4, budget=2.0)),
    "conditioner": (("both",), dict(policy="conditioner", k=4, budget=2.0)),
    "selector":    (("both",), dict(policy="selector", k=4, budget=2.0)),
    "budget1":     (("both",), dict(policy="both", k=4, budget=1.0)),
    "budget3":     (("both",), dict(policy="both", k=4, budget=3.0)),
    "oracle":      (("both",), dict(policy="both", k=4, budget=2.0)),   # ground-truth relevance as scores
    "last_frame":  (("last_frame",), dict(policy="last_frame", k=1, budget=2.0)),
}
LABELS = {"both/method": "selector + conditioner (K 4, budget 2)",
          "both/conditioner": "conditioner only: recency top-4, same tiers",
          "both/selector": "selector only: learned top-1 at the finest tier",
          "both/budget1": "budget 1 (K 4: every frame at 4x4)",
          "both/budget3": "budget 3 (K 4: top-2 at 2x2)",
          "both/oracle": "oracle ranking: ground-truth relevance as the scores",
          "last_frame/last_frame": "last frame only (its own trained DiT)"}
METRICS = ("character_recall", "environment_recall", "shot4_character_recall", "shot4_environment_recall",
           "shot6_character_recall", "shot6_environment_recall", "shape_acc", "colour_acc", "pattern_acc",
           "caption_alignment")
RUN_NAME = re.compile(r"^(?P<config>[a-z_]+)_s(?P<seed>\d+)$")


def evaluate_run(run: Path, variant: str, args) -> dict:
    from onestory_lab.eval.generate import GenParams
    from onestory_lab.eval.run import evaluate
    from onestory_lab.train.checkpoint import load_model

    model = load_model(run / "checkpoint" / "dit.safetensors", run / "checkpoint" / "adapter.safetensors")
    # the run's training seed also seeds the sampling noise: seeds are independent repeats
    params = GenParams.for_model(model, seed=model.cfg.seed, **VARIANTS[variant][1])
    t0 = time.perf_counter()
    score_fn = None
    if variant == "oracle":
        from onestory_lab.experiments.selection_oracle import truth_scores

        score_fn = truth_scores()
    res = evaluate(model, patterns=args.patterns, per_pattern=args.per_pattern, params=params,
                   batch=args.batch, progress=False, story_offset=args.story_offset, score_fn=score_fn)
    step = json.loads((run / "checkpoint" / "trainer.json").read_text())["step"]
    res.update(run=run.name, variant=variant, train_step=step, eval_seconds=round(time.perf_counter() - t0, 1))
    return res


def collect(out: Path) -> dict[str, list[dict]]:
    """"config/variant" -> results over seeds."""
    res: dict[str, list[dict]] = {}
    for p in sorted(out.glob("*__*.json")):
        r = json.loads(p.read_text())
        config = RUN_NAME.match(r["run"]).group("config")
        res.setdefault(f"{config}/{r['variant']}", []).append(r)
    return res


def _cell(rs: list[dict], pattern: str, metric: str) -> str:
    m, sd, n = _stats([r["patterns"][pattern].get(metric, float("nan")) for r in rs if pattern in r["patterns"]])
    return "—" if n == 0 else f"{m:.3f} ± {sd:.3f}" if n > 1 else f"{m:.3f}"


def report(out: Path, pattern: str = "insert_recall") -> str:
    res = collect(out)
    if not res:
        return f"no results in {out}"
    any_r = next(iter(res.values()))[0]
    lines = [f"Stories: `{pattern}`, {any_r['patterns'][pattern]['stories']} per run, eval indices from "
             f"{any_r['story_offset']} ({any_r['seed_range']} range); mean ± std over training seeds (n).\n",
             "| configuration | character recall | environment recall | shot 4 char / env | shot 6 char / env "
             "| shape / colour / pattern (recurring) | caption alignment | n |",
             "|---|---|---|---|---|---|---|---|"]
    for key, label in LABELS.items():
        rs = res.get(key, [])
        if not rs:
            continue
        c = {m: _cell(rs, pattern, m) for m in METRICS}
        lines.append(f"| {label} | {c['character_recall']} | {c['environment_recall']} | "
                     f"{c['shot4_character_recall']} / {c['shot4_environment_recall']} | "
                     f"{c['shot6_character_recall']} / {c['shot6_environment_recall']} | "
                     f"{c['shape_acc']} / {c['colour_acc']} / {c['pattern_acc']} | {c['caption_alignment']} | {len(rs)} |")
    lines.append(_gap(res, pattern))
    return "\n".join(lines) + "\n"


def _gap(res: dict, pattern: str) -> str:
    """Target 2 of issue 15, stated with the numbers it rests on."""
    out = []
    for metric in ("character_recall", "environment_recall"):
        a = _stats([r["patterns"][pattern][metric] for r in res.get("both/method", [])])
        b = _stats([r["patterns"][pattern][metric] for r in res.get("last_frame/last_frame", [])])
        if a[2] < 2 or b[2] < 2:
            continue
        gap, sd = a[0] - b[0], max(a[1], b[1])
        out.append(f"{metric.replace('_', ' ')}: method − last frame = {a[0]:.3f} − {b[0]:.3f} = {gap:.3f}; "
                   f"larger seed std {sd:.3f}; gap = {gap / sd if sd > 0 else float('inf'):.1f} × std "
                   f"(n = {a[2]} / {b[2]} seeds).")
    return "\n" + "\n".join(out)


def plot(out: Path, png: Path, pattern: str = "insert_recall") -> None:
    """Per-shot character and environment recall, mean ± std over seeds, one line per configuration."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("--plot needs matplotlib: pip install 'onestory-lab[bench]'") from None
    res = collect(out)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, kind in zip(axes, ("character", "environment")):
        for key, label in LABELS.items():
            rs = res.get(key, [])
            if not rs:
                continue
            xs, ms, sds = [], [], []
            for shot in range(2, 7):
                m, sd, n = _stats([r["patterns"][pattern].get(f"shot{shot}_{kind}_recall", float("nan")) for r in rs])
                if n:
                    xs.append(shot), ms.append(m), sds.append(0.0 if n < 2 else sd)
            ax.errorbar(xs, ms, yerr=sds, marker="o", capsize=3, label=f"{label} (n={len(rs)})")
        ax.set_xlabel("shot")
        ax.set_ylabel(f"{kind} recall ({pattern})")
        ax.set_ylim(0, 1)
        ax.set_xticks(range(2, 7))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(png, dpi=100)


def headline(out: Path, pattern: str = "insert_recall") -> str:
    """The demo's summary of the table (written to the bundled checkpoint's assets)."""
    res = collect(out)
    both, last = res.get("both/method", []), res.get("last_frame/last_frame", [])
    if not both or not last:
        raise SystemExit(f"{out} needs both/method and last_frame/last_frame results for a headline")
    r0 = both[0]
    n = r0["patterns"][pattern]["stories"]

    def s(rs, m):
        mean, sd, k = _stats([r["patterns"][pattern][m] for r in rs])
        return f"{mean:.3f} ± {sd:.3f}" if k > 1 else f"{mean:.3f}"

    return (f"Recall study, {n} fresh {pattern} stories, {len(both)} training seeds (docs/results.md):\n"
            f"  selector + conditioner: character recall {s(both, 'character_recall')}, environment recall "
            f"{s(both, 'environment_recall')}\n"
            f"  last frame only:        character recall {s(last, 'character_recall')}, environment recall "
            f"{s(last, 'environment_recall')}\n"
            f"The bundled checkpoint is the study's seed 0.")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default="runs/study", help="folder of <config>_s<seed> training runs")
    ap.add_argument("--out", required=True, help="result JSON folder")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--only", nargs="+", default=None, help="run names to evaluate (default: all)")
    ap.add_argument("--patterns", nargs="+", default=["insert_recall"])
    ap.add_argument("--per-pattern", type=int, default=200)
    ap.add_argument("--story-offset", type=int, default=0)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--report", action="store_true", help="only print the table of OUT's results")
    ap.add_argument("--plot", default=None, metavar="PNG", help="only plot per-shot recall of OUT's results to PNG")
    ap.add_argument("--headline", default=None, metavar="TXT",
                    help="only write the demo's summary of OUT's results to TXT")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if args.report:
        print(report(out, args.patterns[0]))
        return 0
    if args.plot:
        plot(out, Path(args.plot), args.patterns[0])
        return 0
    if args.headline:
        Path(args.headline).write_text(headline(out, args.patterns[0]) + "\n")
        return 0
    import torch

    torch.set_num_threads(args.threads)
    out.mkdir(parents=True, exist_ok=True)
    runs = sorted(p for p in Path(args.runs).iterdir() if RUN_NAME.match(p.name) and (p / "checkpoint").exists())
    for run in runs:
        if args.only and run.name not in args.only:
            continue
        config = RUN_NAME.match(run.name).group("config")
        for variant in args.variants:
            if config not in VARIANTS[variant][0]:
                continue
            path = out / f"{run.name}__{variant}.json"
            if path.exists():
                continue
            r = evaluate_run(run, variant, args)
            path.write_text(json.dumps(r, indent=1))
            ir = r["patterns"][args.patterns[0]]
            print(f"{run.name:14s} {variant:12s} char {ir['character_recall']:.3f} env {ir['environment_recall']:.3f} "
                  f"({r['eval_seconds']} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
