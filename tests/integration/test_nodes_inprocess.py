"""OneStory nodes called in-process on real ComfyUI objects (tiny random Wan ModelPatchers, CPU).

Opt-in like test_hook_parity.py (ONESTORY_COMFYUI_DIR). Covers what the HTTP tests cannot see:
the Next Shots progress bar (ComfyUI's progress hook) and the adapter bundle's live modules.
"""
from __future__ import annotations

import pytest
import torch

from test_hook_parity import CONFIGS, load_pack, models  # noqa: E402  (skips the module without ComfyUI)

import comfy.utils  # noqa: E402

load_pack()
import onestory_pack.nodes.glue.adapter_compat as adapter_compat  # noqa: E402
import onestory_pack.nodes.adapter_nodes as adapter_nodes  # noqa: E402
import onestory_pack.nodes.next_shot_nodes as next_shot_nodes  # noqa: E402
from onestory_pack.nodes.glue.bridge import backbone_of, normalization_of  # noqa: E402
from onestory_pack.onestory.adapter import OneStoryAdapter  # noqa: E402
from onestory_pack.onestory.conditioner import AdaptiveConditioner  # noqa: E402
from onestory_pack.onestory.errors import AdapterMismatch  # noqa: E402
from onestory_pack.onestory.memory import MemoryBank  # noqa: E402
from onestory_pack.onestory.frame_selector import FrameSelector  # noqa: E402


def _shots_kwargs(steps: int) -> dict:
    scalars = dict(width=32, height=32, length=5, seed=3, steps=steps, cfg=3.0, sampler_name="euler",
                   scheduler="simple", k=4, budget=1.0, scorer="sink_recent", route="onestory",
                   context_in_negative=True, switch_at=0.5)
    return {k: [v] for k, v in scalars.items()}


def test_next_shots_reports_steps_over_all_shots(monkeypatch):
    monkeypatch.setattr(comfy.utils, "PROGRESS_THROTTLE_MIN_INTERVAL", 0.0)   # every step is sent
    cfg, _, _ = CONFIGS["t2v"]
    _, model = models(cfg)
    g = torch.Generator().manual_seed(0)
    positives = [[[torch.randn(1, 8, 4096, generator=g), {}]] for _ in range(3)]
    negative = [[[torch.randn(1, 8, 4096, generator=g), {}]]]
    adapter = adapter_nodes.training_free(model)
    steps, events = 2, []
    old = comfy.utils.PROGRESS_BAR_HOOK
    comfy.utils.set_progress_bar_global_hook(lambda value, total, preview, node_id=None: events.append((value, total)))
    try:
        out = next_shot_nodes.NextShots.execute([model], positives, negative, [MemoryBank.empty()], [adapter],
                                                caption=["a", "b", "c"], **_shots_kwargs(steps))
    finally:
        comfy.utils.set_progress_bar_global_hook(old)
    print(f"\n[nodes in-process] Next Shots progress events: {events}")
    assert out.result[1].num_shots == 3
    assert events and {t for _, t in events} == {3 * steps}, events
    values = [v for v, _ in events]
    assert values == sorted(values) and values[-1] == 3 * steps
    assert sorted(set(values)) == list(range(1, 3 * steps + 1)), values   # one bar, every step of every shot


def test_adapter_file_keeps_time_gap_and_selector(tmp_path):
    cfg, _, _ = CONFIGS["t2v"]
    _, model = models(cfg)
    backbone = backbone_of(model)
    cond = AdaptiveConditioner(16, cfg.dim, time_gap=2.5)
    sel = FrameSelector(16, 4096, width=32, num_queries=4, heads=2, spatial_stride=4)
    path = tmp_path / "a.safetensors"
    OneStoryAdapter.from_modules(cond, sel, backbone=backbone.family, text_dim=4096, default_budget=2.5).save(path)
    bundle = adapter_compat.bundle_from_file("a.safetensors", path, backbone, normalization_of(model),
                                             model.get_model_object("latent_format"))
    assert bundle.conditioner.time_gap == 2.5 and bundle.default_budget == 2.5 and bundle.trained
    assert all(torch.equal(a, b) for a, b in zip(bundle.selector.state_dict().values(), sel.state_dict().values()))
    # the time gap reaches the context positions: t = -(n - j) - time_gap
    bank = MemoryBank.empty().add_shot(torch.randn(16, 2, 4, 4), "x")
    from onestory_pack.onestory.scorers import select

    ctx = bundle.conditioner.build(bank, select(bank, 2, "recency"), 1.0)
    assert sorted(set(ctx.positions[:, 0].tolist())) == [-4.5, -3.5]
    # a bundle bound to this MODEL, used with another backbone: the core's check, every field named
    other_cfg, _, _ = CONFIGS["i2v-clip"]
    _, other = models(other_cfg)
    with pytest.raises(AdapterMismatch) as e:
        adapter_compat.check_bundle(bundle, backbone_of(other), "model_low")
    assert "wan2.1-t2v" in str(e.value) and "wan2.1-i2v" in str(e.value) and "model_low" in str(e.value)
