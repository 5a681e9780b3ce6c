"""Command line: `python -m onestory_lab <command>`."""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(out_dir=args.out, seed=args.seed, steps=args.steps, stories=args.stories, dit=args.dit,
             adapter=args.adapter)
    return 0


def _bench(args: argparse.Namespace) -> int:
    from .bench.run import run

    run(args.out, quick=args.quick, threads=args.threads, hook=not args.no_hook, memory=not args.no_memory)
    return 0


def _train(args: argparse.Namespace) -> int:
    import dataclasses

    from .train.config import TrainConfig
    from .train.loop import train

    if args.plan:
        from .train.plan import main as plan

        return plan(gpus=args.plan_gpus, out=args.plan_out, measure=args.plan_measure)
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
              if getattr(args, f.name, None) is not None}
    if values.get("init"):   # fine-tuning: the architecture follows the base unless given explicitly
        from .train.checkpoint import base_architecture

        values = {**base_architecture(values["init"]), **values}
    train(TrainConfig(**values), resume=args.resume, stop_at=args.stop_at)
    return 0


def _eval(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .eval.run import evaluate_files

    dit, adapter = args.dit, args.adapter
    if args.run:
        dit = dit or str(Path(args.run) / "checkpoint" / "dit.safetensors")
        adapter = adapter or str(Path(args.run) / "checkpoint" / "adapter.safetensors")
    if not dit or not adapter:
        raise SystemExit("onestory eval needs --run DIR or both --dit and --adapter")
    evaluate_files(dit, adapter, out=args.out, patterns=args.patterns, per_pattern=args.per_pattern,
                   batch=args.batch, policy=args.policy, k=args.k, budget=args.budget, steps=args.steps,
                   shift=args.shift, cfg=args.cfg, seed=args.seed, context_in_negative=args.context_in_negative,
                   frames=args.read_frames,
                   story_offset=args.story_offset)
    return 0


def _add_train(sub) -> None:
    import dataclasses

    from .train.config import TrainConfig

    train = sub.add_parser("train", help="train on the story world or a latent cache, one process / DDP / FSDP2 "
                                         "(docs/training.md, docs/training-wan.md); under torchrun: "
                                         "torchrun --nproc_per_node N -m onestory_lab train ...")
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            train.add_argument(flag, dest=f.name, type=lambda v: v.lower() in ("1", "true", "yes", "on"),
                               default=None, help=f"(default {f.default})")
        else:
            kind = {"int": int, "float": float, "str": str}.get(str(f.type), type(f.default))
            train.add_argument(flag, dest=f.name, type=kind, default=None, help=f"(default {f.default})")
    train.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint if present")
    train.add_argument("--stop-at", type=int, default=None,
                       help="end after this step with a checkpoint (time-sliced runs; --resume continues)")
    train.add_argument("--plan", action="store_true",
                       help="print the memory / token plan for Wan 2.1 1.3B and 14B (docs/training-wan.md) and exit")
    train.add_argument("--plan-gpus", type=int, nargs="+", default=[1, 8, 16, 64], help="GPU counts of the plan")
    train.add_argument("--plan-out", default=None, help="also write the plan (markdown + JSON) to this prefix")
    train.add_argument("--plan-measure", action="store_true",
                       help="also measure tiny CPU runs' peak memory against the activation model")
    train.set_defaults(func=_train)


def _add_eval(sub) -> None:
    ev = sub.add_parser("eval", help="exact metrics on held-out six-shot stories (docs/results.md)")
    ev.add_argument("--run", help="training output directory (uses RUN/checkpoint/*.safetensors)")
    ev.add_argument("--dit", help="DiT safetensors (with --adapter; instead of --run)")
    ev.add_argument("--adapter", help="adapter safetensors")
    ev.add_argument("--patterns", nargs="+", default=["consistency", "insert_recall", "composition"])
    ev.add_argument("--per-pattern", type=int, default=100, help="held-out stories per pattern (default 100)")
    ev.add_argument("--story-offset", type=int, default=0,
                    help="first eval story index (default 0): stories are eval indices [N, N + per-pattern). "
                         "0.. is the tuning range; 1073741824 (2**30).. is the reserved fresh range for final "
                         "numbers (storyworld/splits.py, docs/storyworld.md)")
    ev.add_argument("--batch", type=int, default=50, help="stories generated together (default 50)")
    ev.add_argument("--policy", default=None, help="override the trained context policy")
    ev.add_argument("--k", type=int, default=None)
    ev.add_argument("--budget", type=float, default=None)
    ev.add_argument("--steps", type=int, default=None, help="Euler steps (default 20)")
    ev.add_argument("--shift", type=float, default=None, help="sigma shift (default 1)")
    ev.add_argument("--cfg", type=float, default=None, help="CFG scale (default 3)")
    ev.add_argument("--seed", type=int, default=None, help="noise seed (default 0)")
    ev.add_argument("--context-in-negative", type=lambda v: v.lower() in ("1", "true", "yes", "on"), default=None,
                    help="keep the context in CFG's negative branch (default false: CFG amplifies the memory too)")
    ev.add_argument("--read-frames", nargs="+", type=int, default=None,
                    help="latent frames of each shot to read back (default all; e.g. 1 = the middle one)")
    ev.add_argument("--out", default=None, help="write the metrics JSON here")
    ev.set_defaults(func=_eval)


def _add_data(sub) -> None:
    from .data.cli import add_data_parser, run

    add_data_parser(sub)
    sub.choices["data"].set_defaults(func=run)


def _evaluate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from onestory.metrics.score import ScoreOptions

    from .multishot.models import load_models

    opts = ScoreOptions(region_frames=args.region_frames, align_frames=args.align_frames,
                        fps=args.fps if args.fps is not None else (8.0 if args.storyworld else 16.0))
    models = load_models(args.models)
    for role, why in models.missing:
        if not (args.storyworld and role == "persons"):   # the story world has its own reader
            print(f"not computed: {why}", file=sys.stderr)
    for _, note in models.notes:
        print(f"note: {note}", file=sys.stderr)
    out = Path(args.out)
    if args.storyworld:
        from .multishot import storyworld

        res = storyworld.run(out, models, per_pattern=args.storyworld, source=args.source, steps=args.steps,
                             options=opts, heatmaps=not args.no_heatmaps)
    else:
        from .multishot.evaluate import evaluate, parse_runs

        if not args.stories or not args.videos:
            raise SystemExit("onestory evaluate needs --stories FILE and --videos [NAME=]DIR ... (or --storyworld N)")
        res = evaluate(args.stories, parse_runs(args.videos), models, out=out, options=opts,
                       heatmaps=not args.no_heatmaps)
    print((out / "results.md").read_text())
    print("files:", ", ".join(res["files"].values()))
    return 0


def _stories_from_text(args: argparse.Namespace) -> int:
    from pathlib import Path

    from onestory.metrics.annotation import Benchmark, parse_shot_list

    from .multishot.benchmark import dumps

    stories = parse_shot_list(Path(args.input).read_text(encoding="utf-8"), args.input)
    Path(args.output).write_text(dumps(Benchmark(Path(args.input).stem, args.task, tuple(stories))), encoding="utf-8")
    print(f"{args.output}: {len(stories)} stories")
    return 0


def _add_evaluate(sub) -> None:
    ev = sub.add_parser("evaluate", help="score multi-shot videos of benchmark stories: OneStory Table 1 layout "
                                         "(docs/evaluation.md)")
    ev.add_argument("--stories", help="benchmark JSON (lab/onestory_lab/multishot/benchmarks/t2msv.json, ...)")
    ev.add_argument("--videos", nargs="+", help="runs to compare: NAME=DIR (or DIR); DIR/<story id>/shot_01/ ...")
    ev.add_argument("--models", help="folder with the metric models (docs/evaluation.md lists the names)")
    ev.add_argument("--out", required=True, help="output directory: results.md, results.json, metrics.png, heatmaps/")
    ev.add_argument("--fps", type=float, default=None, help="frame rate when a story has no meta.json (default 16)")
    ev.add_argument("--region-frames", type=int, default=4, help="frames per shot for C-Cons / E-Cons (default 4)")
    ev.add_argument("--align-frames", type=int, default=8, help="frames per shot for S-Align (default 8)")
    ev.add_argument("--no-heatmaps", action="store_true", help="skip the per-story similarity heatmaps")
    ev.add_argument("--storyworld", type=int, default=0, metavar="N",
                    help="instead of --stories/--videos: N story-world stories per pattern through the same path, "
                         "with the exact read-back beside")
    ev.add_argument("--source", default="truth", help="story world frames: truth (renders) or bundled (generated)")
    ev.add_argument("--steps", type=int, default=None, help="story world, --source bundled: Euler steps (default 20)")
    ev.set_defaults(func=_evaluate)
    conv = sub.add_parser("stories-from-text", help="convert a plain shot list to a benchmark JSON (docs/evaluation.md)")
    conv.add_argument("input")
    conv.add_argument("output")
    conv.add_argument("--task", default="t2msv", choices=("t2msv", "i2msv"))
    conv.set_defaults(func=_stories_from_text)


def _bench_stories(args: argparse.Namespace) -> int:
    from .multishot.bench_stories import bench_stories

    res = bench_stories(args.workflow, [u for u in args.servers.split(",") if u], args.out, args.stories,
                        seed=args.seed, limit=args.limit, timeout=args.timeout, retry=args.retry,
                        attempts=args.attempts, give_up=args.give_up)
    print(f"{res['done']}/{res['total']} stories in {args.out}; failed: {sorted(res['failed']) or 'none'}; "
          f"not run: {len(res['remaining'])}")
    return 0 if res["done"] == res["total"] else 1


def _add_bench_stories(sub) -> None:
    from .multishot.benchmark import path

    b = sub.add_parser("bench-stories", help="run every benchmark story on ComfyUI servers (docs/evaluation.md)")
    b.add_argument("--workflow", required=True, help="API-format workflow with {{shotN}} / {{captions}} placeholders")
    b.add_argument("--servers", required=True, help="comma-separated ComfyUI URLs, e.g. http://127.0.0.1:8188")
    b.add_argument("--out", required=True, help="output directory (resumable)")
    b.add_argument("--stories", default=str(path("t2msv")), help="benchmark JSON (default: the T2MSV benchmark)")
    b.add_argument("--seed", type=int, default=0, help="seed of story 0 for '{{seed}}' inputs (story i: seed + i)")
    b.add_argument("--limit", type=int, default=0, help="only the first N stories (default all)")
    b.add_argument("--timeout", type=float, default=3600, help="seconds one story may take (default 3600)")
    b.add_argument("--retry", type=float, default=5, help="seconds between retries of a dropped server (default 5)")
    b.add_argument("--attempts", type=int, default=2, help="runs of a story whose prompt fails (default 2)")
    b.add_argument("--give-up", type=float, default=600, help="stop when no server progresses this long (default 600)")
    b.set_defaults(func=_bench_stories)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="onestory", description="OneStory: multi-shot video with adaptive memory.")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="generate a six-shot insert-and-recall story on the CPU with the bundled "
                                       "story-world checkpoint (GIF, contact sheet, recall metrics)")
    demo.add_argument("--out", default="out/demo", help="output directory (created; default: out/demo)")
    demo.add_argument("--seed", type=int, default=None,
                      help="eval index of the insert_recall story (default: the first story of the recall "
                           "study's fresh range, storyworld/splits.py STUDY_OFFSET)")
    demo.add_argument("--steps", type=int, default=None, help="denoising steps per shot (default 20)")
    demo.add_argument("--stories", type=int, default=0,
                      help="also score this many held-out insert_recall stories (default 0 = skip; measured ~27 s per story on 2 busy cores: the reader's noisy-image path is slow)")
    demo.add_argument("--dit", default=None, help="DiT safetensors (default: the bundled one)")
    demo.add_argument("--adapter", default=None, help="adapter safetensors (default: the bundled one)")
    demo.set_defaults(func=_demo)

    bench = sub.add_parser("bench", help="performance benchmarks: DIR/results.json, results.md, PNG plots "
                                         "(docs/performance.md)")
    bench.add_argument("--out", required=True, help="output directory (created)")
    bench.add_argument("--quick", action="store_true", help="tiny config, one round: checks the output format only")
    bench.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    bench.add_argument("--no-hook", action="store_true", help="skip the ComfyUI hook part (ONESTORY_COMFYUI_DIR)")
    bench.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocess")
    bench.set_defaults(func=_bench)
    _add_train(sub)
    _add_eval(sub)
    _add_data(sub)
    _add_evaluate(sub)
    _add_bench_stories(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
