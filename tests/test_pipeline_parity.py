"""The next-shot pipeline reproduces the code paths it replaced, on the same seeds.

`tests/data/pipeline_parity.safetensors` holds the outputs of the replaced code (the standalone
`NextShotGenerator` loop, the lab's own batched Euler + CFG loop in `generate_batch`, and
`StoryModel.context`'s per-item builder), recorded by running that code: this file with
ONESTORY_RECORD_PARITY=1 at the commit that added onestory/pipeline.py (`git log --diff-filter=A --
onestory/pipeline.py`), where the old and the new paths ran side by side and were compared in
full (the old code is gone since; git keeps it). The file keeps every 11th
element of latents and tokens (`probe`). The cases below rebuild the same tiny models from fixed
seeds and compare.

Tolerances: the standalone story and the context builder are compared exactly (same operations
in the same order). The eval loop differs in two places by float rounding only: the memory of
later shots is the bank-space latent mapped back to model space ((x·std + mean − mean)/std is x
to ~1 ulp, 6e-8 relative) and the learned selector scores one story at a time instead of a padded
batch (another summation order); both are amplified by a few DiT calls, so latents are compared
with atol 1e-5 (outputs are O(1)) and the kept frames / tiers exactly.
"""
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from onestory.conditioner import AdaptiveConditioner
from onestory.frame_selector import FrameSelector
from onestory.latent import LatentNormalization
from onestory.memory import MemoryBank
from onestory.pipeline import MemorySettings, NextShotPipeline, ShotSpec
from onestory.sampling import FlowSampler
from onestory.wan import WanConfig, WanModel

REFERENCE = Path(__file__).parent / "data" / "pipeline_parity.safetensors"
TEXT_DIM = 32


def probe(x: torch.Tensor) -> torch.Tensor:
    """Every 11th element of a large tensor: what the reference file keeps of latents and tokens."""
    return x.detach().reshape(-1)[::11]


@pytest.fixture(scope="module")
def reference() -> dict[str, torch.Tensor]:
    return load_file(str(REFERENCE))


# ---- standalone story --------------------------------------------------------------------------

def tiny_backbone(model_type: str):
    torch.manual_seed(0)
    in_dim = 16 if model_type == "t2v" else 36
    cfg = WanConfig(model_type=model_type, in_dim=in_dim, dim=64, ffn_dim=128, text_dim=TEXT_DIM, out_dim=16,
                    num_heads=2, num_layers=2)
    model = WanModel(cfg).eval()
    cond = AdaptiveConditioner.from_patch_embedding(model.patch_embedding.weight, model.patch_embedding.bias,
                                                    latent_channels=16, time_gap=0.5)
    torch.manual_seed(1)
    selector = FrameSelector(16, TEXT_DIM, width=32, num_queries=2, heads=2, spatial_stride=2, max_shots=4).eval()
    with torch.no_grad():   # non-zero shot-order embeddings, so the ordinals matter
        selector.shot_tokens.weight.normal_(0, 0.5)
        selector.shot_pooled.weight.normal_(0, 0.5)
    return model, cond, selector


def story_shots(n: int):
    g = torch.Generator().manual_seed(1)
    return [ShotSpec(f"caption {i}", torch.randn(5 + i % 2, TEXT_DIM, generator=g), seed=10 + i) for i in range(n)]


STANDALONE = {
    # name: (backbone, scorer, k, budget, normalization, first image, negative text)
    "t2v_sink_recent": ("t2v", "sink_recent", 3, 1.0, False, False, False),
    "t2v_learned_wan21": ("t2v", "learned", 3, 1.5, True, False, True),
    "t2v_novelty": ("t2v", "novelty", 2, 0.5, False, False, False),
    "i2v_learned": ("i2v", "learned", 4, 1.0, False, True, False),
    "i2v_recency_wan21": ("i2v", "recency", 2, 1.0, True, True, True),
}


@pytest.mark.parametrize("name", sorted(STANDALONE))
def test_standalone_story_matches_recorded(name, reference):
    backbone, scorer, k, budget, wan21, image, negative = STANDALONE[name]
    model, cond, selector = tiny_backbone(backbone)
    norm = LatentNormalization.wan21() if wan21 else None
    neg = torch.randn(3, TEXT_DIM, generator=torch.Generator().manual_seed(5)) if negative else None
    first = torch.randn(16, 8, 8, generator=torch.Generator().manual_seed(6)) if image else None
    shots = story_shots(4)
    size = (2, 8, 8)

    pipeline = NextShotPipeline(cond, selector=selector, normalization=norm)
    sampler = FlowSampler(model, steps=3, cfg=2.0, negative_text=neg)
    new = pipeline.stories([shots], MemorySettings(k=k, budget=budget, scorer=scorer), size, sampler,
                           first_frames=[first])[0]

    assert torch.equal(probe(new.frames), reference[f"standalone/{name}/frames"])
    for s, shot in enumerate(new.shots):
        sel = shot.selection
        ref_kept = reference[f"standalone/{name}/kept{s}"]
        assert (list(sel["kept"]) if sel else [-1]) == ref_kept.long().tolist()
        assert shot.seed == shots[s].seed and shot.caption == shots[s].caption


def test_batched_stories_equal_one_story_at_a_time():
    """Three stories in one batch (one DiT call per step) give each story what it gets alone."""
    model, cond, selector = tiny_backbone("t2v")
    pipeline = NextShotPipeline(cond, selector=selector)
    sampler = FlowSampler(model, steps=2, cfg=2.0)
    g = torch.Generator().manual_seed(3)
    stories = [[ShotSpec(f"s{j} c{i}", torch.randn(5, TEXT_DIM, generator=g), seed=100 * j + i) for i in range(3)]
               for j in range(3)]
    settings = MemorySettings(k=2, budget=1.0, scorer="learned")
    together = pipeline.stories(stories, settings, (2, 8, 8), sampler)
    for j, story in enumerate(stories):
        alone = pipeline.stories([story], settings, (2, 8, 8), sampler)[0]
        torch.testing.assert_close(together[j].frames, alone.frames, atol=1e-5, rtol=0)
        for a, b in zip(together[j].shots[1:], alone.shots[1:]):   # batched DiT calls round differently
            assert a.selection["kept"] == b.selection["kept"]
            torch.testing.assert_close(torch.tensor(a.selection["scores"]), torch.tensor(b.selection["scores"]),
                                       atol=1e-5, rtol=0)


def test_stories_with_different_token_counts_are_sampled_in_groups():
    """A story with an excluded frame keeps fewer frames (fewer tokens) than its batch mates: the
    sampler is called once per token count, and every story gets what it gets alone."""
    model, cond, _ = tiny_backbone("t2v")
    pipeline = NextShotPipeline(cond)
    calls = []

    class Counting(FlowSampler):
        def __call__(self, request):
            calls.append(request.context.counts)
            return super().__call__(request)

    sampler = Counting(model, steps=1, cfg=2.0)
    settings = MemorySettings(k=2, budget=4.0, scorer="recency")
    g = torch.Generator().manual_seed(4)
    first = [ShotSpec(f"a{j}", torch.randn(4, TEXT_DIM, generator=g), seed=j) for j in range(3)]
    banks = list(pipeline([MemoryBank.empty()] * 3, first, settings, (2, 8, 8), sampler).banks)
    assert calls == [(0, 0, 0)]
    banks[1] = banks[1].set_excluded(1)
    calls.clear()
    second = [ShotSpec(f"b{j}", torch.randn(4 + j, TEXT_DIM, generator=g), seed=10 + j) for j in range(3)]
    out = pipeline(banks, second, settings, (2, 8, 8), sampler)
    assert calls == [(32, 32), (16,)], calls
    for j in range(3):
        alone = pipeline([banks[j]], [second[j]], settings, (2, 8, 8), sampler)
        if j != 1:   # stories 0 and 2 share a call: story 0's caption is zero-padded to story 2's length
            continue
        assert torch.equal(out.latents[j], alone.latents[0])
        assert out.banks[j].shots[-1].selection == alone.banks[0].shots[-1].selection


# ---- eval (the lab's batched generation) --------------------------------------------------------

TINY = dict(dim=64, layers=2, heads=1, ffn_dim=128, text_dim=128, sel_width=32, sel_queries=2, sel_heads=1,
            sel_shots=4, progress=False, threads=2, latent_norm=True, pixel_frames=1)


def tiny_story_model(policy: str):
    from onestory_lab.train.config import TrainConfig
    from onestory_lab.train.model import StoryModel

    torch.manual_seed(0)
    model = StoryModel(TrainConfig(out="unused", policy=policy, k=3, budget=2.0, **TINY)).eval()
    with torch.no_grad():
        model.selector.shot_tokens.weight.normal_(0, 0.5)
        model.selector.shot_pooled.weight.normal_(0, 0.5)
    return model


@pytest.mark.parametrize("policy", ["both", "selector", "conditioner", "last_frame"])
def test_eval_generation_matches_recorded(policy, reference):
    from onestory_lab.eval.generate import GenParams, generate_batch
    from onestory_lab.storyworld.dataset import eval_stories

    model = tiny_story_model(policy)
    stories = eval_stories("insert_recall", 2, pixel_frames=model.cfg.pixel_frames)
    params = GenParams.for_model(model, steps=2, cfg=3.0, seed=7, context_in_negative=True)   # as recorded
    for i, run in enumerate(generate_batch(model, stories, params)):
        torch.testing.assert_close(probe(torch.stack(run.latents)), reference[f"eval/{policy}/latents{i}"],
                                   atol=1e-5, rtol=0)
        for s, sel in enumerate(run.selections):
            key = f"eval/{policy}/story{i}/shot{s}"
            assert (sel["kept"] if sel else [-1]) == reference[key + "/kept"].long().tolist()
            assert (sel["tiers"] if sel else [-1]) == reference[key + "/tiers"].long().tolist()
            assert (sel is not None and sel["scores"] is not None) == (key + "/scores" in reference)
            if key + "/scores" in reference:
                torch.testing.assert_close(torch.tensor(sel["scores"]), reference[key + "/scores"], atol=2e-4, rtol=0)


def test_eval_default_guides_with_the_memory(reference):
    """The lab samples with the context out of CFG's negative branch by default: shot 1 (empty
    memory) is unchanged, every later shot differs from the context-in-negative recording."""
    from onestory_lab.eval.generate import GenParams, generate_batch
    from onestory_lab.storyworld.dataset import eval_stories

    model = tiny_story_model("both")
    stories = eval_stories("insert_recall", 1, pixel_frames=model.cfg.pixel_frames)
    params = GenParams.for_model(model, steps=2, cfg=3.0, seed=7)
    assert params.context_in_negative is False
    latents = torch.stack(generate_batch(model, stories, params)[0].latents)     # "s c t h w"
    diff = (probe(latents) - reference["eval/both/latents0"]).abs()
    shot = torch.arange(diff.numel()) * 11 // latents[0].numel()              # the shot of each probed value
    assert diff[shot == 0].max() < 1e-5
    assert all(diff[shot == s].max() > 1e-4 for s in range(1, latents.shape[0]))


# ---- training's context builder ----------------------------------------------------------------

def test_story_model_context_matches_recorded(reference):
    """Training's context (StoryModel.context, on AdaptiveConditioner.build_batch) equals what the
    per-item builder it replaced made, and carries gradients to the memory and the conditioner."""
    model = tiny_story_model("both")
    g = torch.Generator().manual_seed(2)
    memory = torch.randn(3, 6, 16, 16, 16, generator=g, requires_grad=True)
    ranked = [[5, 1, 3], [0, 2, 4], [4, 5, 0]]
    ctx = model.context(memory, ranked, 2.0)
    assert torch.equal(probe(ctx.tokens), reference["context/tokens"])
    assert torch.equal(ctx.positions, reference["context/positions"])
    assert ctx.kept == [r[:len(ctx.tiers)] for r in ranked]
    ctx.tokens.square().sum().backward()
    assert memory.grad is not None and memory.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.any() for p in model.conditioner.parameters())
