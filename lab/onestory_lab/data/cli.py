"""`python -m onestory_lab data {shots,plan,cache,inspect}` (docs/training-wan.md, "Data")."""
from __future__ import annotations

import argparse
import json
import logging
import sys


def _dtype(name: str):
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def _shots(args: argparse.Namespace) -> int:
    from .pipeline import find_videos, run_shots
    from .shots import make_detector

    videos = find_videos(args.videos)
    if not videos:
        raise SystemExit(f"no videos found in {args.videos}")
    summary = run_shots(videos, args.out, make_detector(args.detector, args.threshold, args.device),
                        args.min_shot_frames, args.min_shots, quiet=args.quiet)
    print(summary.text())
    return 0


def _plan(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .captions import TransformersRewriter, read_captions
    from .features import ImageEncoder
    from .pipeline import PlanConfig, run_plan
    from .plan import ClipSpec, Thresholds

    if (args.frames - 1) % 4:
        raise SystemExit(f"--frames must be 1 + 4n (Wan's VAE), got {args.frames}")
    if args.width % 16 or args.height % 16:
        raise SystemExit(f"--width/--height must be multiples of 16 (VAE 8 x DiT patch 2), got {args.width}x{args.height}")
    cfg = PlanConfig(ClipSpec(args.frames, args.stride, args.width, args.height),
                     Thresholds(args.min_related, args.max_duplicate))
    rewriter = TransformersRewriter(args.rewriter, args.device) if args.rewriter else None
    summary = run_plan(Path(args.out) / "shots.jsonl", args.out, read_captions(args.captions),
                       ImageEncoder(args.clip, args.device), ImageEncoder(args.dino, args.device), cfg,
                       rewriter, quiet=args.quiet)
    print(summary.text())
    return 0


def _cache(args: argparse.Namespace) -> int:
    from .encoders import UMT5TextEncoder, WanLatentEncoder
    from .pipeline import read_plan_config, run_cache

    spec = read_plan_config(args.out).spec
    vae = WanLatentEncoder(args.vae, args.device, _dtype(args.encoder_dtype))
    te = UMT5TextEncoder(args.text_encoder, args.device, _dtype(args.encoder_dtype), tokenizer=args.tokenizer)
    summary = run_cache(args.out, args.cache, vae, te, spec, args.shard_size, args.cross_share, args.seed,
                        _dtype(args.dtype), quiet=args.quiet)
    print(summary.text())
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .cache import check_sample, read_sample
    from .records import read_jsonl

    root = Path(args.cache)
    manifest = json.loads((root / "manifest.json").read_text())
    records = [obj for _, obj in read_jsonl(root / "samples.jsonl")]
    kinds: dict[str, int] = {}
    for r in records:
        kinds[r["kind"]] = kinds.get(r["kind"], 0) + 1
        if args.check:
            check_sample(read_sample(root, r), manifest["latent_channels"], manifest["text_dim"])
    print(json.dumps({"manifest": manifest, "samples": len(records), "kinds": kinds,
                      "checked": len(records) if args.check else 0}, indent=2))
    return 0


def add_data_parser(sub) -> None:
    data = sub.add_parser("data", help="real-video dataset: shots, captions, filters, latent cache (docs/training-wan.md)")
    dsub = data.add_subparsers(dest="data_command", required=True)

    def common(p, device=True):
        p.add_argument("--out", required=True, help="work directory (shots.jsonl, plan.jsonl, plan-config.json)")
        if device:
            p.add_argument("--device", default="cpu", help="torch device for the models (default cpu)")
        p.add_argument("--quiet", action="store_true", help="no progress bar")

    s = dsub.add_parser("shots", help="detect shots: OUT/shots.jsonl (resumable)")
    s.add_argument("videos", nargs="+", help="video files or directories (searched recursively)")
    common(s)
    s.add_argument("--detector", choices=("transnetv2", "scenedetect"), default="transnetv2")
    s.add_argument("--threshold", type=float, default=None, help="cut threshold (transnetv2 0.5, scenedetect 27)")
    s.add_argument("--min-shot-frames", type=int, default=81, help="shorter shots are dropped (default 81)")
    s.add_argument("--min-shots", type=int, default=2, help="videos with fewer kept shots are skipped (default 2)")
    s.set_defaults(data_func=_shots)

    p = dsub.add_parser("plan", help="captions, filters, pseudo-labels: OUT/plan.jsonl (resumable)")
    common(p)
    p.add_argument("--captions", required=True, help="captions JSONL (video, shot or start/end, caption)")
    p.add_argument("--clip", required=True, help="local transformers folder of a CLIP or SigLIP model")
    p.add_argument("--dino", required=True, help="local transformers folder of a DINOv2 model")
    p.add_argument("--frames", type=int, default=81, help="pixel frames per clip, 1 + 4n (default 81)")
    p.add_argument("--stride", type=int, default=1, help="take every n-th source frame (default 1)")
    p.add_argument("--width", type=int, default=832)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--min-related", type=float, default=0.5, help="CLIP cosine below which adjacent shots are unrelated")
    p.add_argument("--max-duplicate", type=float, default=0.95, help="DINOv2 cosine above which a shot is a near-duplicate")
    p.add_argument("--rewriter", default=None, help="local transformers folder of a causal LM for referential captions")
    p.set_defaults(data_func=_plan)

    c = dsub.add_parser("cache", help="three-shot samples -> VAE latents + text features (resumable)")
    common(c)
    c.add_argument("--cache", required=True, help="cache directory (manifest.json, samples.jsonl, shards/)")
    c.add_argument("--vae", required=True, help="wan_2.1_vae.safetensors (ComfyUI models/vae)")
    c.add_argument("--text-encoder", required=True, help="umT5-XXL safetensors (ComfyUI models/text_encoders)")
    c.add_argument("--tokenizer", default=None, help="sentencepiece model if the text encoder file has none embedded")
    c.add_argument("--shard-size", type=int, default=64, help="samples per shard (default 64)")
    c.add_argument("--cross-share", type=float, default=0.5, help="share of inflated samples using another video's shot")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="bfloat16",
                   help="stored latents/text features (default bfloat16)")
    c.add_argument("--encoder-dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    c.set_defaults(data_func=_cache)

    i = dsub.add_parser("inspect", help="print a cache's manifest and sample counts; --check reads every sample")
    i.add_argument("cache")
    i.add_argument("--check", action="store_true", help="load every sample and check the contract's shapes")
    i.set_defaults(data_func=_inspect)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    from .deps import MissingDependency

    try:
        return int(args.data_func(args))
    except MissingDependency as e:
        raise SystemExit(str(e)) from e
