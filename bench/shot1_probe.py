"""Text-only quality of a story-world DiT: generate shot 1 of N held-out stories under a few
sampler settings, read them back, print caption alignment and write a picture (row 1 = ground
truth, then one row per setting). Used to pick the evaluation sampler and to check a base DiT
before spending fine-tuning time on it (docs/results.md, "sampler").

    python bench/shot1_probe.py runs/base/checkpoint --out shot1.png --stories 40
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SETTINGS = ((10, 3.0, 1.0), (20, 3.0, 3.0), (20, 1.0, 3.0))   # (Euler steps, shift, cfg)


@torch.no_grad()
def probe(ckpt: Path, stories: int, settings=SETTINGS, pattern: str = "composition"):
    from onestory.data.dataset import eval_stories
    from onestory.data.decode import read_latent
    from onestory.data.latent import LatentCodec
    from onestory.data.text import Tokenizer
    from onestory.sampling import wan_sigmas
    from onestory.train.checkpoint import load_model
    from onestory.train.model import BatchContext

    model = load_model(ckpt / "dit.safetensors", ckpt / "adapter.safetensors").eval()
    held = eval_stories(pattern, stories, pixel_frames=model.cfg.pixel_frames)
    ids, mask = Tokenizer().encode_batch([s.captions[0] for s in held])
    text = model.text(ids, mask)
    empty = BatchContext(None, None, [[]] * stories, [])
    rows = [np.concatenate([s.render_shot(0)[0] for s in held[:10]], 1)]
    results = []
    for steps, shift, cfg in settings:
        sig = wan_sigmas(steps, shift)
        x = torch.randn(stories, 16, held[0].latent_frames, 16, 16, generator=torch.Generator().manual_seed(0))
        for i in range(steps):
            s = sig[i].expand(stories)
            v = model.velocity(x, s, text, empty)
            if cfg != 1.0:
                vu = model.velocity(x, s, torch.zeros_like(text), empty)
                v = vu + cfg * (v - vu)
            x = x + (sig[i + 1] - sig[i]) * v
        z = model.norm.to_bank(x)
        hits = dict(character=0, environment=0, shape=0, colour=0, pattern=0)
        for i, st in enumerate(held):
            reading, truth = read_latent(z[i][:, :1])[0], st.truth(0, 0)
            hits["environment"] += reading.environment == truth.environment
            hits["character"] += truth.characters[0] in [c.character for c in reading.characters]
            if reading.characters:
                got, want = reading.characters[0].character, truth.characters[0]
                hits["shape"] += got.shape == want.shape
                hits["colour"] += got.colour == want.colour
                hits["pattern"] += got.pattern == want.pattern
        res = {k: v / stories for k, v in hits.items()}
        results.append(((steps, shift, cfg), res))
        print(f"steps {steps:2d} shift {shift:g} cfg {cfg:g}: " + "  ".join(f"{k} {v:.2f}" for k, v in res.items()),
              flush=True)
        px = LatentCodec().decode(z[:10]).clamp(0, 1)
        rows.append(np.concatenate([px[i, :, 0].permute(1, 2, 0).numpy() for i in range(len(px))], 1))
    return results, rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", type=Path, help="directory with dit.safetensors + adapter.safetensors")
    ap.add_argument("--out", type=Path, default=None, help="PNG of the generations")
    ap.add_argument("--stories", type=int, default=40)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    _, rows = probe(args.checkpoint, args.stories)
    if args.out:
        from PIL import Image

        img = (np.concatenate(rows, 0) * 255).round().astype(np.uint8)
        Image.fromarray(img).resize((img.shape[1] * 3, img.shape[0] * 3), Image.NEAREST).save(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
