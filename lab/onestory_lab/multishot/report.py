"""Table 1 layout (markdown), JSON and plots of one or more scored runs."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Optional

from onestory.metrics.stats import COLUMNS


def _cell(v: Mapping) -> str:
    if v.get("mean") is None:
        return "-"
    return f"{v['mean']:.4f}" if v.get("ci95") is None else f"{v['mean']:.4f} ± {v['ci95']:.4f}"


def markdown(results: Mapping, extra: Optional[Mapping[str, Mapping]] = None) -> str:
    """results: {"task", "runs": {name: {"aggregate": ..., "missing": ...}}}; extra: per run, per
    group, additional columns (e.g. the story world's exact read-back)."""
    runs = results["runs"]
    groups = ["all"] + sorted({g for r in runs.values() for g in r["aggregate"]["groups"] if g != "all"})
    lines = [f"# Multi-shot evaluation: {results.get('benchmark', '')} ({results.get('task', '')})", "",
             "Mean ± 95 % confidence interval over stories (Student t); '-' = not computed (see Models).", ""]
    extra_cols = sorted({k for e in (extra or {}).values() for g in e.values() for k in g})
    for g in groups:
        lines += [f"## {'All stories' if g == 'all' else 'Pattern: ' + g}", ""]
        head = ["Method", "Stories"] + [h for _, h in COLUMNS] + extra_cols
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for name, r in runs.items():
            agg = r["aggregate"]["groups"].get(g)
            if agg is None:
                continue
            row = [name, str(agg["stories"])] + [_cell(agg[k]) for k, _ in COLUMNS]
            ex = (extra or {}).get(name, {}).get(g, {})
            row += [f"{ex[c]:.4f}" if isinstance(ex.get(c), float) else str(ex.get(c, "-")) for c in extra_cols]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    lines += ["## Models", ""]
    for name, r in runs.items():
        for k, m in sorted(r["aggregate"]["models"].items()):
            lines.append(f"- {name} / {k}: {m}")
        for k, why in sorted(r.get("missing", {}).items()):
            lines.append(f"- {name} / {k}: not computed: {why}")
    return "\n".join(lines) + "\n"


def _plt():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        return plt
    except ImportError:
        return None


def bar_chart(results: Mapping, path: Path) -> Optional[Path]:
    plt = _plt()
    if plt is None:
        return None
    runs = results["runs"]
    cols = [(k, h) for k, h in COLUMNS if any(r["aggregate"]["groups"]["all"][k]["mean"] is not None
                                              for r in runs.values())]
    if not cols:
        return None
    fig, axes = plt.subplots(1, len(cols), figsize=(2.2 * len(cols) + 1, 3.2), squeeze=False)
    for ax, (k, h) in zip(axes[0], cols):
        names = list(runs)
        means = [runs[n]["aggregate"]["groups"]["all"][k]["mean"] or 0.0 for n in names]
        cis = [runs[n]["aggregate"]["groups"]["all"][k]["ci95"] or 0.0 for n in names]
        ax.bar(range(len(names)), means, yerr=cis, capsize=3, color=[f"C{i}" for i in range(len(names))])
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7)
        ax.set_title(h, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def heatmap(score: Mapping, path: Path, title: str = "") -> Optional[Path]:
    """Shot x shot character / environment similarity, annotated pairs boxed, S-Align per shot."""
    plt = _plt()
    if plt is None or "character" not in score.get("matrices", {}):
        return None
    mats = score["matrices"]
    n = len(mats["character"])
    fig, axes = plt.subplots(1, 3 if "s_align" in score["per_shot"] else 2, figsize=(9, 3.2))
    for ax, key, pairs in ((axes[0], "character", "character_pairs"), (axes[1], "environment", "place_pairs")):
        im = ax.imshow(mats[key], vmin=0, vmax=1, cmap="viridis")
        for s, t in mats[pairs]:
            for a, b in ((s, t), (t, s)):
                ax.add_patch(plt.Rectangle((b - 0.5, a - 0.5), 1, 1, fill=False, ec="white", lw=1.5))
        ax.set_xticks(range(n), range(1, n + 1))
        ax.set_yticks(range(n), range(1, n + 1))
        ax.set_title(f"{key} (boxed: annotated)", fontsize=8)
        fig.colorbar(im, ax=ax, fraction=0.046)
    if len(axes) == 3:
        axes[2].bar(range(1, n + 1), score["per_shot"]["s_align"])
        axes[2].set_title("S-Align per shot", fontsize=8)
    fig.suptitle(title or score["story"], fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def write(results: Mapping, out: Path, extra: Optional[Mapping] = None, heatmaps: bool = True) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({**results, "extra": extra or {}}, indent=1))
    (out / "results.md").write_text(markdown(results, extra), encoding="utf-8")
    files = {"json": str(out / "results.json"), "markdown": str(out / "results.md")}
    bar = bar_chart(results, out / "metrics.png")
    if bar:
        files["bars"] = str(bar)
    if heatmaps:
        for name, r in results["runs"].items():
            d = out / "heatmaps" / name
            d.mkdir(parents=True, exist_ok=True)
            for s in r["stories"]:
                heatmap(s, d / f"{s['story']}.png", f"{name}: {s['story']}")
    return files
