"""Does *which* memory frames the context holds change what a trained DiT generates?

One trained (dit, adapter) pair, the same held-out stories, noise, sampler, K and budget; only
the ranking of the memory changes:

* ``recency``  the newest K frames (the "conditioner only" policy);
* ``learned``  the pair's Frame Selector (the "selector + conditioner" policy);
* ``oracle``   ground-truth relevance (`storyworld.relevance`) as the scores: the best any
               selector could pick (ties go to the newer frame, as in `top_k`);
* ``worst``    minus the ground truth: the least relevant frames.

Per-shot colour accuracy of recurring characters and environment recall show where in a story
the ranking acts. ``learned`` between ``recency`` and ``oracle`` is the selector earning its keep.

    python -m onestory_lab.experiments.selection_oracle --run runs/ablate/both_s0 --k 2 --out runs/oracle_s0.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch


RANKINGS = ("recency", "learned", "oracle", "worst")


def truth_scores(sign: float = 1.0):
    """A score_fn for `generate_batch`: ground-truth relevance of every memory frame."""
    from onestory_lab.storyworld.world import relevance

    def fn(stories, s, memory, text, mask):
        rows = [torch.from_numpy(relevance(st.shots[:s], st.shots[s])) for st in stories]
        return sign * torch.stack(rows).to(memory.dtype)
    return fn


def main(argv=None) -> int:
    from onestory_lab.eval.generate import GenParams
    from onestory_lab.eval.run import evaluate
    from onestory_lab.train.checkpoint import load_model

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="training output directory (RUN/checkpoint/*.safetensors)")
    ap.add_argument("--k", type=int, default=None, help="kept frames (default: the run's)")
    ap.add_argument("--budget", type=float, default=None, help="context budget (default: the run's)")
    ap.add_argument("--rankings", nargs="+", default=list(RANKINGS), choices=RANKINGS)
    ap.add_argument("--pattern", default="insert_recall")
    ap.add_argument("--stories", type=int, default=200)
    ap.add_argument("--seed", type=int, default=None, help="noise seed (default: the run's training seed, as experiments/ablate.py)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", required=True, help="result JSON")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    ck = Path(args.run) / "checkpoint"
    model = load_model(ck / "dit.safetensors", ck / "adapter.safetensors")
    seed = model.cfg.seed if args.seed is None else args.seed
    res = {"run": args.run, "pattern": args.pattern, "stories": args.stories, "rankings": {}}
    for name in args.rankings:
        if name == "learned" and not model.cfg.learned:
            continue
        policy = "conditioner" if name == "recency" else "both"
        params = GenParams.for_model(model, policy=policy, k=args.k, budget=args.budget, steps=20, cfg=3.0,
                                     shift=1.0, seed=seed)
        fn = {"oracle": truth_scores(1.0), "worst": truth_scores(-1.0)}.get(name)
        t0 = time.perf_counter()
        r = evaluate(model, patterns=[args.pattern], per_pattern=args.stories, params=params, batch=50,
                     progress=False, frames=[0], score_fn=fn)["patterns"][args.pattern]
        r["seconds"] = round(time.perf_counter() - t0, 1)
        res["rankings"][name] = r | {"k": params.k, "budget": params.budget}
        shots = [s for s in range(2, 7) if f"shot{s}_colour_acc" in r]
        print(f"{name:8s} char {r['character_recall']:.3f} colour {r['colour_acc']:.3f} env "
              f"{r['environment_recall']:.3f} | colour per shot "
              + " ".join(f"{s}:{r[f'shot{s}_colour_acc']:.2f}" for s in shots)
              + " | env per shot " + " ".join(f"{s}:{r.get(f'shot{s}_environment_recall', float('nan')):.2f}"
                                           for s in range(2, 7)), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
