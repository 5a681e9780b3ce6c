"""The ComfyUI hook (nodes/glue/hook.py) on a real ComfyUI with a tiny Wan (opt-in).

Runs inside ComfyUI's Python, with the pack and the lab importable there (`pip install -e . -e lab`,
or on PYTHONPATH) and the ComfyUI checkout first on PYTHONPATH (`python -m onestory_lab bench`
starts it so when ONESTORY_COMFYUI_DIR is set):

    PYTHONPATH=~/comfyui-harness/ComfyUI ONESTORY_COMFYUI_DIR=~/comfyui-harness/ComfyUI \
        ~/comfyui-harness/venv/bin/python -m onestory_lab.bench.hook_bench [--quick]

Times whole `comfy.sample.sample` calls (euler, CFG 5, both branches in one batch) - all of
ComfyUI's per-call machinery included - for three MODELs, interleaved and repeated:
the unpatched Wan, the same MODEL after `apply_context` with an EMPTY context, and with a
budget-1 context built by onestory's conditioner. Prints one JSON object.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time

def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    ap.add_argument("--attention", choices=("default", "pytorch"), default="default",
                    help="ComfyUI's attention backend: its CPU default (sub-quadratic chunks) or "
                         "--use-pytorch-cross-attention (SDPA, what onestory.wan uses)")
    a = ap.parse_args(argv)
    import torch

    torch.set_num_threads(a.threads)
    import comfy.cli_args

    comfy.cli_args.args.cpu = True
    comfy.cli_args.args.use_pytorch_cross_attention = a.attention == "pytorch"
    import comfy.sample
    import comfy.sd

    from onestory.conditioner import AdaptiveConditioner
    from onestory.memory import MemoryBank
    from onestory.scorers import select
    from onestory.wan import WanConfig, WanModel

    from .common import QUICK, SCALED, median

    hook = importlib.import_module("comfyui_onestory.nodes.glue.hook")
    cfg = QUICK if a.quick else SCALED
    # 75 repeats: an empty context installs nothing, so empty vs unpatched is an A/A comparison;
    # its per-repeat ratios spread ±3-5 % (a 4-step sample takes ~0.3 s), and with 25 repeats the
    # median still moved by about ±1 % between runs
    steps, repeats = (2, 1) if a.quick else (4, 75)
    # ComfyUI guesses num_heads = dim // 128: use a 128-wide head so both sides agree.
    dim = 128
    wcfg = WanConfig(model_type="t2v", in_dim=cfg.channels, dim=dim, ffn_dim=352, text_dim=4096, out_dim=cfg.channels,
                     num_heads=1, num_layers=cfg.num_layers)
    torch.manual_seed(0)
    sd = WanModel(wcfg).state_dict()
    plain = comfy.sd.load_diffusion_model_state_dict(dict(sd), model_options={"dtype": torch.float32})
    conditioner = AdaptiveConditioner.from_patch_embedding(sd["patch_embedding.weight"], sd["patch_embedding.bias"],
                                                           cfg.channels)
    g = torch.Generator().manual_seed(1)
    bank = MemoryBank.empty().add_shot(torch.randn(cfg.channels, cfg.frames, cfg.height, cfg.width, generator=g), "s1")
    ctx = conditioner.build(bank, select(bank, cfg.k, "sink_recent"), 1.0)
    empty = hook.apply_context(plain, ctx.tokens[:0].detach(), ctx.positions[:0])
    budget1 = hook.apply_context(plain, ctx.tokens.detach(), ctx.positions)
    text = torch.randn(1, 16, 4096, generator=g)
    positive, negative = [[text, {}]], [[torch.zeros_like(text), {}]]
    latent = torch.zeros(1, cfg.channels, cfg.frames, cfg.height, cfg.width)
    noise = torch.randn(latent.shape, generator=g)
    models = {"unpatched": plain, "empty_context": empty, "budget1_context": budget1}

    clock = time.process_time if a.clock == "cpu" else time.perf_counter

    def run(m):
        t0 = clock()
        comfy.sample.sample(m, noise, steps, 5.0, "euler", "simple", positive, negative, latent,
                            disable_pbar=True, seed=0)
        return clock() - t0

    outs = {k: comfy.sample.sample(m, noise, steps, 5.0, "euler", "simple", positive, negative, latent,
                                   disable_pbar=True, seed=0) for k, m in models.items()}  # warm-up
    samples = {k: [] for k in models}
    names = list(models)
    for r in range(repeats):
        for k in names[r % 3:] + names[: r % 3]:
            samples[k].append(run(models[k]))
    pair = lambda k: median([x / y for x, y in zip(samples[k], samples["unpatched"])])  # noqa: E731
    print(json.dumps({
        "comfyui_dir": os.environ.get("ONESTORY_COMFYUI_DIR"), "steps_per_sample": steps, "clock": a.clock, "attention": a.attention, "repeats": repeats, "dim": dim,
        "num_layers": cfg.num_layers, "latent": [cfg.frames, cfg.height, cfg.width],
        "context_tokens_budget1": len(ctx), "torch": torch.__version__, "torch_num_threads": torch.get_num_threads(),
        "sample_seconds": {k: median(v) for k, v in samples.items()}, "samples": samples,
        "hook_overhead_ratio": pair("empty_context"), "budget1_hook_ratio": pair("budget1_context"),
        "empty_context_output_identical": bool(torch.equal(outs["empty_context"], outs["unpatched"])),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
