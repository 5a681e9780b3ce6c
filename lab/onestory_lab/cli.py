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
                   shift=args.shift, cfg=args.cfg, seed=args.seed, frames=args.read_frames)
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
    ev.add_argument("--batch", type=int, default=50, help="stories generated together (default 50)")
    ev.add_argument("--policy", default=None, help="override the trained context policy")
    ev.add_argument("--k", type=int, default=None)
    ev.add_argument("--budget", type=float, default=None)
    ev.add_argument("--steps", type=int, default=None, help="Euler steps (default 20)")
    ev.add_argument("--shift", type=float, default=None, help="sigma shift (default 1)")
    ev.add_argument("--cfg", type=float, default=None, help="CFG scale (default 3)")
    ev.add_argument("--seed", type=int, default=None, help="noise seed (default 0)")
    ev.add_argument("--read-frames", nargs="+", type=int, default=None,
                    help="latent frames of each shot to read back (default all; e.g. 1 = the middle one)")
    ev.add_argument("--out", default=None, help="write the metrics JSON here")
    ev.set_defaults(func=_eval)


def _add_data(sub) -> None:
    from .data.cli import add_data_parser, run

    add_data_parser(sub)
    sub.choices["data"].set_defaults(func=run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="onestory", description="OneStory: multi-shot video with adaptive memory.")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="generate a six-shot insert-and-recall story on the CPU with the bundled "
                                       "story-world checkpoint (GIF, contact sheet, recall metrics)")
    demo.add_argument("--out", default="out/demo", help="output directory (created; default: out/demo)")
    demo.add_argument("--seed", type=int, default=0, help="story seed (default 0)")
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
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
