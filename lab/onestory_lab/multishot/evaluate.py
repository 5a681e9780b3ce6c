"""`python -m onestory_lab evaluate`: score runs of the benchmark stories, Table 1 layout.

    python -m onestory_lab evaluate --stories lab/onestory_lab/multishot/benchmarks/t2msv.json \
        --videos keyframe=D1 storymem=D2 onestory=D3 --models MODELS --out report/
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Mapping, Optional, Sequence

from onestory.metrics.annotation import Benchmark, load_benchmark
from onestory.metrics.interfaces import Models
from onestory.metrics.score import ScoreOptions, score_story
from onestory.metrics.stats import aggregate

from . import report
from .videos import read_story


def parse_runs(specs: Sequence[str]) -> dict[str, Path]:
    """["name=DIR", "DIR"] -> {name: Path}; a bare DIR is named after its folder."""
    runs: dict[str, Path] = {}
    for spec in specs:
        name, _, d = spec.rpartition("=")
        name = name or Path(d).name
        if name in runs:
            raise SystemExit(f"--videos: run name {name!r} is given twice")
        runs[name] = Path(d)
    return runs


def score_run(bench: Benchmark, root: Path, models: Models, options: ScoreOptions,
              masks_for=None, progress: bool = True) -> list[dict]:
    """Every story of `bench` from `root` -> story scores (JSON-able). masks_for(story, shots)
    may return precomputed person masks (the story world's reader)."""
    out = []
    t0 = time.perf_counter()
    for i, story in enumerate(bench.stories):
        shots, fps = read_story(root, story.id, len(story.shots))
        opts = options if fps is None else ScoreOptions(**{**options.__dict__, "fps": float(fps)})
        masks = masks_for(story, shots) if masks_for else None
        out.append(score_story(shots, story, models, opts, person_masks=masks).to_json())
        if progress:
            print(f"\r  {root.name}: {i + 1}/{len(bench.stories)} stories ({time.perf_counter() - t0:.0f} s)",
                  end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    return out


def evaluate(stories: str | Path, runs: Mapping[str, Path], models: Models, out: Optional[Path] = None,
             options: ScoreOptions = ScoreOptions(), masks_for=None, extra: Optional[Mapping] = None,
             heatmaps: bool = True, progress: bool = True) -> dict:
    bench = load_benchmark(stories)
    results = {"benchmark": bench.name, "task": bench.task, "stories_file": str(stories),
               "options": options.__dict__, "runs": {}}
    for name, root in runs.items():
        scores = score_run(bench, root, models, options, masks_for, progress)
        missing = {}
        for s in scores:
            missing.update(s["missing"])
        results["runs"][name] = {"videos": str(root), "aggregate": aggregate(scores), "missing": missing,
                                 "stories": scores}
    if out is not None:
        results["files"] = report.write(results, out, extra, heatmaps)
    return results
