"""Command line: `python -m onestory <command>`."""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(out_dir=args.out, seed=args.seed, steps=args.steps)
    return 0


def _bench(args: argparse.Namespace) -> int:
    # The benchmarks live in bench/ at the repository root (scripts, not part of the package).
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    if not (root / "bench" / "run.py").exists():
        raise SystemExit("onestory bench needs a source checkout (bench/ next to onestory/); "
                         "clone the repository and run it from there.")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from bench.run import run

    run(args.out, quick=args.quick, threads=args.threads, hook=not args.no_hook, memory=not args.no_memory)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="onestory", description="OneStory: multi-shot video with adaptive memory.")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="generate a six-shot story on the CPU with the embedded default model")
    demo.add_argument("--out", default="out/demo", help="output directory (created; default: out/demo)")
    demo.add_argument("--seed", type=int, default=0, help="story seed (default 0)")
    demo.add_argument("--steps", type=int, default=None, help="denoising steps per shot (default: model's)")
    demo.set_defaults(func=_demo)

    bench = sub.add_parser("bench", help="performance benchmarks: DIR/results.json, results.md, PNG plots "
                                         "(docs/performance.md)")
    bench.add_argument("--out", required=True, help="output directory (created)")
    bench.add_argument("--quick", action="store_true", help="tiny config, one round: checks the output format only")
    bench.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    bench.add_argument("--no-hook", action="store_true", help="skip the ComfyUI hook part (ONESTORY_COMFYUI_DIR)")
    bench.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocess")
    bench.set_defaults(func=_bench)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
