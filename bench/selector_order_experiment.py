"""Experiment (not the shipped selector): can the Frame Selector rank story memory above chance
when it knows the order of the shots and is trained on story-length memory?

Why: the story-world captions name recurring entities by order of appearance ("the second
figure", "back in the first room"), and `onestory.selector.FrameSelector` sees frame content only
(it is permutation-equivariant over memory frames); it is trained on 3-shot samples, i.e. on two
memory shots. `bench/selector_probe.py` puts the bundled selector at chance on insert-and-recall.

What this does, selector only (no DiT step, minutes on a CPU):
1. load a trained (dit, adapter) pair; render N training-split stories (all three patterns);
2. fine-tune its selector on L_sel alone with memory = shots 1..s-1 of a story (s uniform in
   2..6) and labels = `storyworld.relevance`; with ``--order``, a learned embedding of each
   frame's shot ordinal (zero-initialised, 8 slots) is added to the selector's memory tokens and
   to its pooled per-frame vectors; without it (control), the same training on the same data;
3. the top-1 hit rate of `selector_probe` on 200 held-out stories per pattern;
4. with ``--generate``, the held-out insert-and-recall stories generated with the pair's DiT and
   this selector (same sampler, noise and seed as `bench/ablate.py`'s evaluation of the pair).

    python bench/selector_order_experiment.py --order --out runs/selector_order.json
    python bench/selector_order_experiment.py --out runs/selector_control.json      # control
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
for p in (ROOT, ROOT / "bench"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))


class ShotOrder(nn.Module):
    """Learned shot-ordinal embeddings for the selector's memory tokens and pooled vectors."""

    def __init__(self, width: int, slots: int = 8):
        super().__init__()
        self.tokens = nn.Embedding(slots, width)
        self.pooled = nn.Embedding(slots, width)
        nn.init.zeros_(self.tokens.weight)     # starts as the plain selector
        nn.init.zeros_(self.pooled.weight)
        self.slots = slots

    def forward(self, shot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shot = shot.clamp(max=self.slots - 1)
        return self.tokens(shot), self.pooled(shot)


def shot_ordinals(shots: int, per_shot: int, batch: int = 1) -> torch.Tensor:
    """"b (s t)": the shot ordinal of every memory frame, shot-major as the memory is stored."""
    return torch.arange(shots).repeat_interleave(per_shot)[None].expand(batch, -1)


def scorer(selector, order: ShotOrder | None):
    """scores "b f" of memory "b f c h w" whose frames belong to shot ordinals "b f"."""
    from onestory.selector import MemoryEncoding

    def scores(memory, shot, text, mask):
        enc = selector.encode_memory(memory)
        tokens, pooled = enc.tokens, enc.pooled
        if order is not None:
            e_tok, e_pool = order(shot)
            tokens, pooled = tokens + e_tok[:, :, None, :], pooled + e_pool
        return selector._score(MemoryEncoding(tokens, pooled), text, mask, None)
    return scores


def render(model, n: int):
    from onestory.data.inflation import story_seed
    from onestory.data.latent import LatentCodec, frames_to_tensor
    from onestory.data.storyworld import PATTERN_NAMES, make_story, relevance
    from onestory.data.text import Tokenizer

    codec, tok = LatentCodec(), Tokenizer()
    lat, ids, masks, rels = [], [], [], []
    for i in range(n):   # training split: never an evaluation story
        st = make_story(story_seed("train", 5_000_000 + i), PATTERN_NAMES[i % 3], pixel_frames=model.cfg.pixel_frames)
        lat.append(torch.stack([codec.encode(frames_to_tensor(st.render_shot(k))) for k in range(len(st.shots))]))
        a, m = tok.encode_batch(st.captions)
        ids.append(a)
        masks.append(m)
        rels.append([relevance(st.shots[:s], st.shots[s]) if s else None for s in range(len(st.shots))])
    lat = torch.stack(lat)                                             # "n s c t h w", bank space
    lat = model.norm.to_model(lat.flatten(0, 1)).view(lat.shape)
    with torch.no_grad():
        text = torch.stack([model.text(a, m) for a, m in zip(ids, masks)])   # "n s l d"
    return lat, text, torch.stack(masks), rels


def train_selector(model, order: ShotOrder | None, data, steps: int, batch: int, lr: float, seed: int,
                   log=print) -> list[dict]:
    lat, text, mask, rels = data
    n, shots, t = lat.shape[0], lat.shape[1], lat.shape[3]
    selector = model.selector
    params = list(selector.parameters()) + (list(order.parameters()) if order is not None else [])
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    score = scorer(selector, order)
    valid = {s: [i for i in range(n) if rels[i][s].max() > 0] for s in range(1, shots)}
    g = torch.Generator().manual_seed(seed)
    selector.train()
    hist, out = [], []
    for step in range(steps):
        s = 1 + int(torch.randint(shots - 1, (1,), generator=g))
        pick = [valid[s][j] for j in torch.randint(len(valid[s]), (batch,), generator=g).tolist()]
        memory = lat[pick, :s].transpose(2, 3).flatten(1, 2)          # "b (s t) c h w"
        shot = shot_ordinals(s, t, len(pick))
        y = torch.from_numpy(np.stack([rels[i][s] for i in pick]))
        sc = score(memory, shot, text[pick, s], mask[pick, s])
        loss = ((sc - y) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        top = sc.detach().argmax(1)
        hist.append((loss.item(), (y.gather(1, top[:, None])[:, 0] >= y.max(1).values - 1e-6).float().mean().item()))
        if (step + 1) % 250 == 0:
            rec = {"step": step + 1, "loss": float(np.mean([a for a, _ in hist[-250:]])),
                   "top1": float(np.mean([b for _, b in hist[-250:]]))}
            out.append(rec)
            log(f"  step {rec['step']}: L_sel {rec['loss']:.3f}, top-1 {rec['top1']:.3f}")
    selector.eval()
    return out


def main(argv=None) -> int:
    from onestory.demo import ADAPTER, DIT
    from onestory.train.checkpoint import load_model
    from selector_probe import probe

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dit", default=str(DIT))
    ap.add_argument("--adapter", default=str(ADAPTER))
    ap.add_argument("--order", action="store_true", help="add the shot-ordinal embedding (else: control)")
    ap.add_argument("--stories", type=int, default=3000, help="training stories rendered")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--probe-stories", type=int, default=200)
    ap.add_argument("--generate", action="store_true", help="also generate the held-out insert_recall stories")
    ap.add_argument("--out", required=True, help="result JSON")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    model = load_model(args.dit, args.adapter)
    order = ShotOrder(model.selector.width) if args.order else None
    res = {"args": vars(args)}
    res["probe_before"] = probe(model, "insert_recall", args.probe_stories)["all_shots"]
    data = render(model, args.stories)
    print(f"{args.stories} stories rendered ({time.perf_counter() - t0:.0f} s)", flush=True)
    res["train"] = train_selector(model, order, data, args.steps, args.batch, args.lr, args.seed,
                                  log=lambda m: print(m, flush=True))
    score = scorer(model.selector, order)

    def fn(story, s, memory, text, mask):
        return score(memory, shot_ordinals(s, memory.shape[1] // s), text, mask)[0].detach()

    res["probe"] = {}
    for pattern in ("insert_recall", "composition", "consistency"):
        r = probe(model, pattern, args.probe_stories, score_fn=fn)
        res["probe"][pattern] = r
        print(f"{pattern:14s} top-1 {r['all_shots']['selector']:.3f} (newest {r['all_shots']['newest']:.3f}, "
              f"random {r['all_shots']['random']:.3f}); per shot "
              + ", ".join(f"{s}: {v['selector']:.2f}" for s, v in r["per_shot"].items()), flush=True)
    if args.generate:
        from onestory.data.storyworld import latent_states
        from onestory.eval.generate import GenParams
        from onestory.eval.run import evaluate

        t = latent_states(model.cfg.pixel_frames)      # latent frames per shot

        def scores(memory, text, mask):
            return score(memory, shot_ordinals(memory.shape[1] // t, t, memory.shape[0]), text, mask)

        if order is not None:       # the control's fine-tuned selector is already the model's
            model.scores = scores
        params = GenParams.for_model(model, steps=20, cfg=3.0, shift=1.0, seed=args.seed)
        with torch.no_grad():
            res["generate"] = evaluate(model, patterns=["insert_recall"], per_pattern=args.probe_stories,
                                       params=params, batch=50, progress=True, frames=[0])
    res["seconds"] = round(time.perf_counter() - t0, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
