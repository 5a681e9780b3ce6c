"""Does the learned Frame Selector rank the right memory first? No sampling: the memory is the
ground-truth latents of the earlier shots, so this isolates the selector from the DiT.

For every held-out story and every shot with a recurring entity, the top-1 frame of the
selector's scores is a *hit* when its ground-truth relevance (`storyworld.relevance`: share of
the shot's recurring entities that frame shows) is the maximum over the memory. Reported per
shot index, next to the same rate for "newest frame first" (what last-frame-only keeps) and for
a uniformly random frame (the expected hit rate = share of frames at the maximum).

    python -m onestory_lab.experiments.selector_probe --dit D.safetensors --adapter A.safetensors [--stories 200]
    python -m onestory_lab.experiments.selector_probe                    # the bundled checkpoint
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch



@torch.no_grad()
def probe(model, pattern: str = "insert_recall", stories: int = 200, score_fn=None, story_offset: int = 0) -> dict:
    """``score_fn(story, shot, memory "1 f c h w", text "1 l d", mask "1 l") -> "f"`` replaces the
    model's selector (tests use oracles)."""
    from onestory_lab.storyworld.dataset import EvalStoryDataset
    from onestory_lab.storyworld.world import relevance

    if score_fn is None:
        def score_fn(story, s, memory, text, mask):
            return model.scores(memory, text, mask)[0]

    ds = EvalStoryDataset(per_pattern=stories, patterns=[pattern], pixel_frames=model.cfg.pixel_frames,
                          world=model.cfg.world, offset=story_offset)
    rows: dict[int, dict[str, list[float]]] = {}
    for item in ds:
        story, latents = item["story"], item["latents"]               # latents "s c t h w" (bank space)
        text = model.text(item["tokens"], item["token_mask"])          # "s l d"
        for s in range(1, latents.shape[0]):
            rel = relevance(story.shots[:s], story.shots[s])
            if rel.max() <= 0:          # nothing recurring: no frame is better than another
                continue
            memory = model.norm.to_model(latents[:s]).transpose(1, 2).flatten(0, 1)[None]  # "1 f c h w"
            scores = np.asarray(score_fn(story, s, memory, text[s:s + 1], item["token_mask"][s:s + 1]),
                                dtype=np.float64)
            best = rel.max()
            r = rows.setdefault(s + 1, {"selector": [], "newest": [], "random": []})
            r["selector"].append(float(rel[int(np.argmax(scores))] == best))
            r["newest"].append(float(rel[-1] == best))
            r["random"].append(float(np.mean(rel == best)))
    per_shot = {str(s): {k: round(float(np.mean(v)), 4) for k, v in r.items()} | {"n": len(r["selector"])}
                for s, r in sorted(rows.items())}
    pooled = {k: round(float(np.mean([x for r in rows.values() for x in r[k]])), 4)
              for k in ("selector", "newest", "random")}
    return {"pattern": pattern, "stories": stories, "story_offset": story_offset, "per_shot": per_shot,
            "all_shots": pooled}


def main(argv=None) -> int:
    from onestory_lab.demo import ADAPTER, DIT
    from onestory_lab.train.checkpoint import load_model

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dit", default=None, help="DiT safetensors (default: the bundled one)")
    ap.add_argument("--adapter", default=None, help="adapter safetensors (default: the bundled one)")
    ap.add_argument("--pattern", default="insert_recall")
    ap.add_argument("--stories", type=int, default=200)
    ap.add_argument("--story-offset", type=int, default=0, help="first eval story index (storyworld/splits.py)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="also write the result JSON here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_model(args.dit or DIT, args.adapter or ADAPTER)
    if not model.cfg.learned:
        raise SystemExit(f"this checkpoint was trained with policy {model.cfg.policy!r}: its Frame Selector "
                         "was never trained (use a 'both' or 'selector' run)")
    res = probe(model, args.pattern, args.stories, story_offset=args.story_offset)
    print(f"top-1 hit rate ({args.pattern}, {args.stories} stories; hit = a frame of maximal ground-truth relevance)")
    print("shot   n    selector  newest  random")
    for s, r in res["per_shot"].items():
        print(f"{s:>4} {r['n']:4d}    {r['selector']:.3f}   {r['newest']:.3f}   {r['random']:.3f}")
    a = res["all_shots"]
    print(f" all         {a['selector']:.3f}   {a['newest']:.3f}   {a['random']:.3f}")
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
