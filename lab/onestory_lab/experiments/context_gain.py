"""How much does the memory lower a trained DiT's flow loss? A probe of context use.

Real three-shot training triplets (no inflation) from a fixed held-out stream of the train split;
the same noise at fixed σ; the DiT's L_shot on the target shot with the memory as context, with
no context, and with one memory frame only. Items are split by whether the target shows a
recurring entity (`relevance` > 0: the caption withholds its appearance, so only the memory can
tell it). A DiT that fully uses the memory brings the recurring items' loss down to the level of
the items the caption describes in full; the gap that stays is what it has not learned to take
from the context.

    python -m onestory_lab.experiments.context_gain --run runs/study/both_s0 --out gain.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

SIGMAS = (0.3, 0.6, 0.9)
GAIN_SEED = 12345            # the item stream (train split; no run draws with this seed)


@torch.no_grad()
def context_gain(run: Path, items: int = 48) -> dict:
    from onestory_lab.storyworld.dataset import TripletDataset
    from onestory_lab.train.checkpoint import load_model
    from onestory_lab.train.losses import noisy
    from onestory_lab.train.model import BatchContext

    ck = run / "checkpoint"
    m = load_model(ck / "dit.safetensors", ck / "adapter.safetensors")
    ds = TripletDataset(length=1 << 40, seed=GAIN_SEED, pixel_frames=m.cfg.pixel_frames, mix=(1.0, 0.0, 0.0),
                        standalone_captions=False, world=m.cfg.world)
    rows = [ds[i] for i in range(items)]
    batch = {k: torch.stack([torch.as_tensor(r[k]) for r in rows]) for k in rows[0]
             if torch.is_tensor(rows[0][k]) or isinstance(rows[0][k], (int, float))}
    x0 = m.norm.to_model(batch["shot3"])
    b = x0.shape[0]
    memory = m.norm.to_model(torch.cat([batch["shot1"], batch["shot2"]], 2)).transpose(1, 2)  # "b f c h w"
    text, _ = m.caption(batch)
    recurring = batch["relevance"].max(1).values > 0
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    contexts = {"memory": m.context(memory, [[1, 0]] * b, m.cfg.budget),
                "newest frame": m.context(memory, [[1]] * b, m.cfg.budget),
                "none": BatchContext(None, None, [[]] * b, [])}
    out: dict = {"run": str(run), "items": b, "recurring_items": int(recurring.sum()), "sigmas": {}}
    for s in SIGMAS:
        sig = torch.full((b,), s)
        xn, target = noisy(x0, noise, sig)
        row = {}
        for name, ctx in contexts.items():
            loss = ((m.velocity(xn, sig, text, ctx) - target) ** 2).flatten(1).mean(1)
            row[name] = {"recurring": round(float(loss[recurring].mean()), 5),
                         "described": round(float(loss[~recurring].mean()), 5)}
        out["sigmas"][str(s)] = row
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, nargs="+", help="training output directories")
    ap.add_argument("--items", type=int, default=48)
    ap.add_argument("--out", default=None, help="write the JSON here")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    res = [context_gain(Path(r), args.items) for r in args.run]
    for r in res:
        print(r["run"], f"({r['recurring_items']} of {r['items']} items show a recurring entity)")
        for s, row in r["sigmas"].items():
            print(f"  σ {s}: " + "  ".join(f"{k}: {v['recurring']:.4f} (described {v['described']:.4f})"
                                           for k, v in row.items()))
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
