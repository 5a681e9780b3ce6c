"""Does the base render what a caption states? Shot 1 of held-out stories (text only, empty
memory), read back attribute by attribute.

Every entity of shot 1 is new, so its caption states every attribute: each character's shape,
colour and pattern and the room's colour, texture and layout. For each true character the read
character nearest to its x centre is compared attribute by attribute (0 for all three if none
was read); "character" = all three right. Rows are also split by framing (body size).

Sources (what is read back):
* ``model``    shot 1 sampled from its caption (Euler, CFG, as evaluation samples it);
* ``codec``    the ground-truth render, encoded and decoded by the latent codec (is the world
               readable after the codec at this resolution?);
* ``denoise``  the ground-truth latent noised to σ = ``--sigma`` and sampled from there to 0 with
               the caption (can the model keep a shape it is shown, as opposed to choosing one?).

    python -m onestory_lab.experiments.shot1_probe --dit D --adapter A [--stories 60]
        [--story-offset 0] [--source model|codec|denoise] [--sigma 0.5] [--out r.json]
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

ATTRS = ("shape", "colour", "pattern", "character", "room_colour", "room_texture", "room_layout", "room")


def _stories(patterns: Sequence[str], count: int, offset: int, pixel_frames: int, world: str = "v1"):
    from onestory_lab.storyworld.dataset import eval_stories

    return [st for p in patterns for st in eval_stories(p, count, pixel_frames=pixel_frames, offset=offset,
                                                         world=world)]


@torch.no_grad()
def sample_shot1(model, stories, steps: int = 20, shift: float = 1.0, cfg: float = 3.0, seed: int = 0,
                 start_sigma: Optional[float] = None, x_start: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Shot-1 latents "b c t h w" (bank space) sampled from the captions with an empty context.
    With `start_sigma`, sampling starts from `x_start` (bank space) noised to that σ."""
    from onestory.sampling import wan_sigmas
    from onestory_lab.storyworld.text import Tokenizer

    tok = Tokenizer()
    ids, mask = tok.encode_batch([st.captions[0] for st in stories])
    text = model.text(ids, mask)
    b = len(stories)
    ctx = model.context(torch.zeros(b, 0, 16, 1, 1), [[] for _ in range(b)], 1.0)
    n = stories[0].latent_frames
    hw = stories[0].frame_size // 2
    noise = torch.stack([torch.randn(16, n, hw, hw, generator=torch.Generator().manual_seed(
        (st.seed * 7) * 1009 + seed)) for st in stories])
    sig = wan_sigmas(steps, shift)
    if start_sigma is not None:
        sig = sig[sig <= start_sigma + 1e-9]
        sig = torch.cat([torch.tensor([start_sigma], dtype=sig.dtype), sig]) if float(sig[0]) < start_sigma else sig
        x0 = model.norm.to_model(x_start)
        x = (1 - start_sigma) * x0 + start_sigma * noise
    else:
        x = noise
    uncond = torch.zeros_like(text)
    for i in range(len(sig) - 1):
        s = sig[i].expand(b).float()
        if cfg == 1.0:
            v = model.velocity(x, s, text, ctx)
        else:
            vv = model.velocity(torch.cat([x, x]), torch.cat([s, s]), torch.cat([text, uncond]), ctx)
            v_c, v_u = vv.chunk(2)
            v = v_u + cfg * (v_c - v_u)
        x = x + float(sig[i + 1] - sig[i]) * v
    return model.norm.to_bank(x)


def score_shot1(story, latent: torch.Tensor, codec=None) -> list[dict]:
    """One row per (latent frame, true character): attribute hits + room hits + framing."""
    from onestory_lab.storyworld.decode import read_latent

    rows = []
    shot = story.shots[0]
    for j, rd in enumerate(read_latent(latent, codec, world=story.world)):
        truth = story.truth(0, j)
        env = truth.environment
        room = {"room_colour": rd.environment.colour == env.colour,
                "room_texture": rd.environment.texture == env.texture,
                "room_layout": rd.environment.layout == env.layout, "room": rd.environment == env}
        for ch, pl in zip(truth.characters, truth.placements):
            cx = pl.x + pl.size / 2
            r = {"framing": shot.framing, "cast": len(shot.cast), "true_shape": ch.shape}
            if rd.characters:
                rc = min(rd.characters, key=lambda c: abs(c.x + c.size / 2 - cx))
                near = rc.character
                r |= {"shape": near.shape == ch.shape, "colour": near.colour == ch.colour,
                      "pattern": near.pattern == ch.pattern, "read_shape": near.shape,
                      "centre_err": abs(rc.x + rc.size / 2 - cx) + abs(rc.y + rc.size / 2 - pl.y - pl.size / 2),
                      "size_err": abs(rc.size - pl.size)}
            else:
                r |= {"shape": False, "colour": False, "pattern": False, "read_shape": "-"}
            r["character"] = r["shape"] and r["colour"] and r["pattern"]
            rows.append(r | room)
    return rows


def summarize(rows: list[dict]) -> dict:
    def acc(rs):
        found = [r for r in rs if "centre_err" in r]
        geo = {k: round(float(np.mean([r[k] for r in found])), 3) if found else None
               for k in ("centre_err", "size_err")}
        return {a: round(float(np.mean([r[a] for r in rs])), 4) for a in ATTRS} | geo | {"n": len(rs)}

    out = {"all": acc(rows)}
    by = defaultdict(list)
    for r in rows:
        by[f"framing={r['framing']}"].append(r)
        by[f"cast={r['cast']}"].append(r)
    out |= {k: acc(v) for k, v in sorted(by.items())}
    conf = Counter((r["true_shape"], r["read_shape"]) for r in rows)
    out["shape_confusion"] = {f"{a}->{b}": n for (a, b), n in sorted(conf.items())}
    return out


def run(model=None, stories: int = 60, offset: int = 0, source: str = "model", sigma: float = 0.5,
        patterns: Sequence[str] = ("consistency", "insert_recall", "composition"), batch: int = 60,
        steps: int = 20, cfg: float = 3.0, shift: float = 1.0, pixel_frames: Optional[int] = None,
        world: Optional[str] = None) -> dict:
    from onestory_lab.storyworld.latent import LatentCodec, frames_to_tensor

    codec = LatentCodec()
    pf = pixel_frames if pixel_frames is not None else model.cfg.pixel_frames
    world = world if world is not None else (model.cfg.world if model is not None else "v1")
    sts = _stories(patterns, stories, offset, pf, world)
    rows: list[dict] = []
    for i in range(0, len(sts), batch):
        chunk = sts[i:i + batch]
        gt = torch.stack([codec.encode(frames_to_tensor(st.render_shot(0))) for st in chunk])
        if source == "codec":
            lat = gt
        elif source == "model":
            lat = sample_shot1(model, chunk, steps, shift, cfg)
        elif source == "denoise":
            lat = sample_shot1(model, chunk, steps, shift, cfg, start_sigma=sigma, x_start=gt)
        else:
            raise ValueError(f"source {source!r}: expected model, codec or denoise")
        for st, z in zip(chunk, lat):
            rows += score_shot1(st, z, codec)
    from onestory_lab.storyworld.splits import range_of

    res = summarize(rows)
    res |= {"source": source, "sigma": sigma if source == "denoise" else None, "stories_per_pattern": stories,
            "story_offset": offset, "seed_range": range_of(offset, stories), "patterns": list(patterns),
            "world": world,
            "steps": steps, "cfg": cfg, "shift": shift}
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dit")
    ap.add_argument("--adapter")
    ap.add_argument("--run", help="training dir (RUN/checkpoint/*.safetensors)")
    ap.add_argument("--stories", type=int, default=60, help="per pattern")
    ap.add_argument("--story-offset", type=int, default=0)
    ap.add_argument("--source", default="model", choices=("model", "codec", "denoise"))
    ap.add_argument("--sigma", type=float, default=0.5)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--cfg", type=float, default=3.0)
    ap.add_argument("--shift", type=float, default=1.0)
    ap.add_argument("--pixel-frames", type=int, default=None, help="codec source without a model")
    ap.add_argument("--world", default=None, help="world version for the codec source (default: the model's)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    model = None
    if a.source != "codec" or a.pixel_frames is None:
        from onestory_lab.train.checkpoint import load_model

        dit = a.dit or str(Path(a.run) / "checkpoint" / "dit.safetensors")
        adapter = a.adapter or str(Path(a.run) / "checkpoint" / "adapter.safetensors")
        model = load_model(dit, adapter)
    res = run(model, a.stories, a.story_offset, a.source, a.sigma, steps=a.steps, cfg=a.cfg, shift=a.shift,
              pixel_frames=a.pixel_frames, world=a.world)
    print(json.dumps({k: v for k, v in res.items() if k != "shape_confusion"}, indent=None)[:3000])
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
