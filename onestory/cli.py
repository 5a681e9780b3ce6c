"""Command line: `python -m onestory <command>`."""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(out_dir=args.out, seed=args.seed, steps=args.steps)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="onestory", description="OneStory: multi-shot video with adaptive memory.")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="generate a six-shot story on the CPU with the embedded default model")
    demo.add_argument("--out", default="out/demo", help="output directory (created; default: out/demo)")
    demo.add_argument("--seed", type=int, default=0, help="story seed (default 0)")
    demo.add_argument("--steps", type=int, default=None, help="denoising steps per shot (default: model's)")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
