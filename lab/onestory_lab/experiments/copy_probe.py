"""What does the DiT copy from its context? Ground-truth memory, hand-built contexts.

For held-out insert-and-recall stories (1-latent-frame shots), every target shot s whose caption
refers back to a room that the NEWEST memory frame does not show is generated from its caption
with a chosen context, then read back. `r` is the latest memory frame showing the target's room
(and its cast if any frame does), `n` the newest memory frame (n > r, room(n) != room(target)).
Conditions (frames, conditioner tiers; tier 0 = finest 2x2 kernel, 1 = 4x4):

* ``eval``            what evaluation builds: recency top-K, tiers from solve_budget(budget)
* ``r_fine``          [r] alone at tier 0, at its true time position
* ``r_coarse``        [r] alone at tier 1
* ``r_n``             [r, n] at tiers [1, 1] (the training context shape), true time order
* ``r_n_swapped``     the same tokens, time positions swapped (r sits where the newest frame sits)
* ``n_fine``          [n] alone at tier 0 (what last-frame-only gives)
* ``r0_n1``           r at tier 0, n at tier 1, true time order (what a correct top-1 gets at budget 2)
* ``n0_r1``           n at tier 0, r at tier 1 (what recency ranking gives at budget 2)
* ``r0_n1_swapped``   as r0_n1 with the time positions swapped (is it the tier or the time slot?)

Reported per condition: room recall (room read == target's room), newest-room rate (room read ==
n's room), target character colour / full character right (recurring characters only), and the
colour of n's character painted instead.

    python -m onestory_lab.experiments.copy_probe [--dit D --adapter A] [--stories 50] [--out r.json]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

import numpy as np
import torch

CONDITIONS = ("eval", "r_fine", "r_coarse", "r_n", "r_n_swapped", "n_fine", "r0_n1", "n0_r1", "r0_n1_swapped")


def _items(stories):
    """(story, s, r, n) for every eligible target shot."""
    out = []
    for st in stories:
        for s in range(2, len(st.shots)):
            tgt = st.shots[s]
            n = s - 1
            if st.shots[n].environment == tgt.environment:
                continue
            rooms = [m for m in range(s) if st.shots[m].environment == tgt.environment]
            if not rooms:
                continue
            with_cast = [m for m in rooms if set(tgt.cast) <= set(st.shots[m].cast)]
            r = (with_cast or rooms)[-1]
            out.append((st, s, r, n))
    return out


def _context(model, memory: torch.Tensor, cond: str, r: int, n: int, f: int, budget: float, k: int):
    """tokens "n d", positions "n 3" for one item; memory "f c h w" (model space)."""
    from onestory.conditioner import solve_budget

    h, w = memory.shape[-2:]
    if cond == "eval":
        ranked = list(range(f - 1, max(-1, f - 1 - k), -1))
        tiers = solve_budget(len(ranked), model.conditioner.kernels, h, w, budget, model.conditioner.patch)
        used = ranked[:len(tiers)]
        ctx = model.conditioner(memory[used], torch.tensor(used), torch.tensor(used, dtype=torch.float64), tiers)
        return ctx.tokens, ctx.positions
    frames, times, tiers = {
        "r_fine": ([r], [r], [0]), "r_coarse": ([r], [r], [1]), "n_fine": ([n], [n], [0]),
        "r_n": ([r, n], [r, n], [1, 1]), "r_n_swapped": ([r, n], [n, r], [1, 1]),
        "r0_n1": ([r, n], [r, n], [0, 1]), "n0_r1": ([n, r], [n, r], [0, 1]),
        "r0_n1_swapped": ([r, n], [n, r], [0, 1]),
    }[cond]
    ctx = model.conditioner(memory[frames], torch.tensor(frames), torch.tensor(times, dtype=torch.float64), tiers)
    return ctx.tokens, ctx.positions


@torch.no_grad()
def probe(model, stories: int = 50, offset: int = 0, conditions=CONDITIONS, steps: int = 20,
          cfg: float = 3.0, shift: float = 1.0, budget: Optional[float] = None, k: Optional[int] = None,
          batch: int = 40) -> dict:
    from onestory.sampling import wan_sigmas
    from onestory_lab.storyworld.dataset import eval_stories
    from onestory_lab.storyworld.decode import read_latent
    from onestory_lab.storyworld.latent import LatentCodec, frames_to_tensor
    from onestory_lab.storyworld.splits import range_of
    from onestory_lab.storyworld.text import Tokenizer
    from onestory_lab.train.model import BatchContext

    codec, tok = LatentCodec(), Tokenizer()
    budget = model.cfg.budget if budget is None else budget
    k = model.cfg.effective_k if k is None else k
    sts = eval_stories("insert_recall", stories, pixel_frames=1, offset=offset, world=model.cfg.world)
    items = _items(sts)
    lat = {st.seed: model.norm.to_model(torch.stack([codec.encode(frames_to_tensor(st.render_shot(i)))
                                                       for i in range(len(st.shots))]))[:, :, 0]
           for st in sts}                                                      # "s c h w" per story
    sig = wan_sigmas(steps, shift)
    res = {}
    for cond in conditions:
        c = {"room": 0, "room_newest": 0, "colour": 0, "character": 0, "colour_newest": 0, "n": 0, "n_char": 0}
        for i in range(0, len(items), batch):
            chunk = items[i:i + batch]
            # group by memory length: "eval" token counts depend on it
            for f in sorted({s for _, s, _, _ in chunk}):
                part = [it for it in chunk if it[1] == f]
                toks, poss = zip(*(_context(model, lat[st.seed][:s], cond, r, n, s, budget, k)
                                   for st, s, r, n in part))
                ctx = BatchContext(torch.stack(toks), torch.stack(poss), [], [])
                ids, mask = tok.encode_batch([st.captions[s] for st, s, _, _ in part])
                text = model.text(ids, mask)
                b = len(part)
                x = torch.stack([torch.randn(16, 1, 16, 16, generator=torch.Generator().manual_seed(
                    (st.seed * 7 + s) * 1009)) for st, s, _, _ in part])
                both = BatchContext(torch.cat([ctx.tokens] * 2), torch.cat([ctx.positions] * 2), [], [])
                uncond = torch.zeros_like(text)
                for j in range(steps):
                    sg = sig[j].expand(b).float()
                    vv = model.velocity(torch.cat([x, x]), torch.cat([sg, sg]), torch.cat([text, uncond]), both)
                    v_c, v_u = vv.chunk(2)
                    x = x + float(sig[j + 1] - sig[j]) * (v_u + cfg * (v_c - v_u))
                bank = model.norm.to_bank(x)
                for (st, s, r, n), z in zip(part, bank):
                    rd = read_latent(z, codec, world=st.world)[0]
                    tgt, new = st.truth(s, 0), st.truth(n, 0)
                    c["n"] += 1
                    c["room"] += rd.environment == tgt.environment
                    c["room_newest"] += rd.environment == new.environment
                    for ch, pl in zip(tgt.characters, tgt.placements):
                        cid = tgt.character_ids[tgt.characters.index(ch)]
                        if not any(cid in st.shots[m].cast for m in range(s)):
                            continue
                        c["n_char"] += 1
                        if rd.characters:
                            cx = pl.x + pl.size / 2
                            got = min(rd.characters, key=lambda q: abs(q.x + q.size / 2 - cx)).character
                            c["colour"] += got.colour == ch.colour
                            c["character"] += got == ch
                            c["colour_newest"] += got.colour in {q.colour for q in new.characters} - {ch.colour}
        res[cond] = {"room_recall": round(c["room"] / max(1, c["n"]), 4),
                     "newest_room_rate": round(c["room_newest"] / max(1, c["n"]), 4),
                     "colour_recall": round(c["colour"] / max(1, c["n_char"]), 4),
                     "character_recall": round(c["character"] / max(1, c["n_char"]), 4),
                     "newest_colour_rate": round(c["colour_newest"] / max(1, c["n_char"]), 4),
                     "targets": c["n"], "recurring_characters": c["n_char"]}
        print(cond, res[cond], flush=True)
    return {"conditions": res, "stories": stories, "story_offset": offset,
            "seed_range": range_of(offset, stories), "budget": budget, "k": k,
            "sampler": {"steps": steps, "cfg": cfg, "shift": shift}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dit")
    ap.add_argument("--adapter")
    ap.add_argument("--stories", type=int, default=50)
    ap.add_argument("--story-offset", type=int, default=0)
    ap.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=CONDITIONS)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    from onestory_lab.demo import ADAPTER, DIT
    from onestory_lab.train.checkpoint import load_model

    model = load_model(a.dit or str(DIT), a.adapter or str(ADAPTER))
    if model.cfg.pixel_frames != 1:
        raise SystemExit("copy_probe needs a 1-latent-frame model (--pixel-frames 1)")
    res = probe(model, a.stories, a.story_offset, a.conditions)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
