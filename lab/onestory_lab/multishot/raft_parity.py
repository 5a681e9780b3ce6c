"""Parity of the RAFT port with torchvision's `raft_large`; writes the regression fixture of the tests.

    python -m onestory_lab.multishot.raft_parity [--out tests/data/raft_parity.safetensors]

Needs `torchvision.models.optical_flow.raft_large` importable (a torchvision built for your torch).
Its optical-flow code is plain Python on torch: torchvision's `models/optical_flow/raft.py`,
`_utils.py` and `ops/misc.py` in a package named `torchvision` on PYTHONPATH run it too, with the
rest of that package (weights enum, presets, usage logging) stubbed.
Both models get the same `seeded_state` weights; flows of every update are compared.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Mapping

import torch
from torch import Tensor

from .raft import RAFT, raft_large

SEED = 0
UPDATES = 12                      # the fixture's flow updates (VBench runs 20; 12 is torchvision's default)
FIXTURE_SIZE = (128, 128)         # the smallest input RAFT-Large accepts: keeps the fixture under 200 KB
FIXTURE_SHIFT = (3, -5)           # image2 = image1 rolled by (rows, columns)
CASES = ((2, 128, 128), (1, 128, 192), (1, 136, 128))   # (n, h, w): batch, wide, 17-cell pyramid base
WEIGHT_RULE = ("one torch.Generator seeded with SEED; for each key in sorted order: int64 keys "
               "(num_batches_tracked) = 0 and draw nothing; else x = randn(shape); tensors of 2 or more dims "
               "x * prod(shape[1:]) ** -0.5; 1-dim x * 0.1, then + 1 for norm weights (keys ending '.1.weight') "
               "and running_var = 1 + |x * 0.1|")


def seeded_state(shapes: Mapping[str, tuple[torch.Size, torch.dtype]], seed: int = SEED) -> dict[str, Tensor]:
    """Deterministic weights for every key (`WEIGHT_RULE`); shapes: key -> (shape, dtype)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k in sorted(shapes):
        shape, dtype = shapes[k]
        if dtype == torch.int64:
            out[k] = torch.zeros(shape, dtype=dtype)
            continue
        x = torch.randn(tuple(shape), generator=g)
        if len(shape) >= 2:
            out[k] = x * math.prod(shape[1:]) ** -0.5
        elif k.endswith("running_var"):
            out[k] = 1 + (x * 0.1).abs()
        else:
            out[k] = x * 0.1 + (1 if k.endswith(".1.weight") else 0)
    return out


def state_shapes(model: torch.nn.Module) -> dict[str, tuple[torch.Size, torch.dtype]]:
    return {k: (v.shape, v.dtype) for k, v in model.state_dict().items()}


def seeded_port(seed: int = SEED) -> RAFT:
    model = raft_large()
    model.load_state_dict(seeded_state(state_shapes(model), seed), strict=True)
    return model.eval()


def seeded_images(n: int, h: int, w: int, seed: int = SEED) -> Tensor:
    """uint8 images "n 3 h w" (values 0..255; the model takes x / 127.5 - 1)."""
    g = torch.Generator().manual_seed(seed + 1)
    return torch.randint(0, 256, (n, 3, h, w), generator=g, dtype=torch.uint8)


def to_model(images: Tensor) -> Tensor:
    """uint8 "n 3 h w" -> float "n 3 h w" in [-1, 1]."""
    return images.float() / 127.5 - 1


def fixture_pair(image1: Tensor) -> tuple[Tensor, Tensor]:
    """(image1, image2) in [-1, 1] from the fixture's uint8 image1 (image2: image1 rolled by FIXTURE_SHIFT)."""
    return to_model(image1), to_model(torch.roll(image1, shifts=FIXTURE_SHIFT, dims=(-2, -1)))


def reference(seed: int = SEED) -> torch.nn.Module:
    try:
        from torchvision.models.optical_flow import raft_large as tv_raft_large
    except Exception as e:
        raise SystemExit(f"torchvision's raft_large is not importable here ({type(e).__name__}: {e}); see "
                         "this module's docstring") from None
    model = tv_raft_large(weights=None)
    model.load_state_dict(seeded_state(state_shapes(model), seed), strict=True)
    return model.eval()


def run(out: Path | None) -> dict:
    torch.set_num_threads(1)
    ref, port = reference(), seeded_port()
    if state_shapes(ref) != state_shapes(port):
        raise SystemExit("state dicts differ: " + str(set(ref.state_dict()) ^ set(port.state_dict())))
    report: dict[str, object] = {"state dict": f"{len(ref.state_dict())} keys, same names, shapes and dtypes"}
    with torch.no_grad():
        for i, (n, h, w) in enumerate(CASES):
            imgs = seeded_images(2 * n, h, w, SEED + 10 * i)
            a, b = to_model(imgs[:n]), to_model(imgs[n:])
            fr, fp = ref(a, b, num_flow_updates=UPDATES), port(a, b, num_flow_updates=UPDATES)
            diff = max((x - y).abs().max().item() for x, y in zip(fr, fp))
            report[f"{n} x {h} x {w}, {UPDATES} updates: max abs diff (all updates)"] = diff
            report[f"{n} x {h} x {w}: max abs flow"] = max(x.abs().max().item() for x in fr)
        image1 = seeded_images(1, *FIXTURE_SIZE)
        a, b = fixture_pair(image1)
        flow = ref(a, b, num_flow_updates=UPDATES)[-1]
        report["fixture: max abs diff"] = (flow - port(a, b, num_flow_updates=UPDATES)[-1]).abs().max().item()
    if out is not None:
        from safetensors.torch import save_file
        meta = {"what": "torchvision raft_large's last flow for image1 and image2 = roll(image1); weights "
                        "regenerated by seeded_state",
                "seed": str(SEED), "weights": WEIGHT_RULE, "updates": str(UPDATES),
                "image2": f"torch.roll(image1, shifts={FIXTURE_SHIFT}, dims=(-2, -1))",
                "inputs": "uint8 / 127.5 - 1", "torch": torch.__version__,
                "state_dict": json.dumps({k: [list(v.shape), str(v.dtype)] for k, v in ref.state_dict().items()}),
                "command": "python -m onestory_lab.multishot.raft_parity --out FILE"}
        save_file({"image1": image1.contiguous(), "flow": flow.contiguous()}, str(out), metadata=meta)
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="write the test fixture here")
    args = ap.parse_args(argv)
    print(json.dumps(run(args.out), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
