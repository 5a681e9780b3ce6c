"""Training smoke tests: tiny model, a few steps on the CPU."""
import torch
from safetensors.torch import load_file

from onestory_lab.storyworld.dataset import TripletDataset
from onestory_lab.train.checkpoint import load_model
from onestory_lab.train.config import TrainConfig
from onestory_lab.train.losses import noisy, sample_sigma, selector_loss, shot_loss
from onestory_lab.train.loop import make_optimizer, train, train_step
from onestory_lab.train.model import StoryModel
from onestory.wan import WanModel

TINY = dict(dim=64, layers=2, heads=1, ffn_dim=128, text_dim=128, sel_width=32, sel_queries=2, sel_heads=1,
            batch_size=4, warmup_lr_steps=0, log_every=1, progress=False, threads=2)


def _batch(n=4, seed=0):
    ds = TripletDataset(length=64, seed=seed)
    return torch.utils.data.default_collate([ds[i] for i in range(n)])


def test_loss_finite_and_decreasing_on_fixed_batch():
    torch.manual_seed(0)
    cfg = TrainConfig(out="unused", steps=1000, decoupled_steps=0, lr=2e-3, **TINY)
    model = StoryModel(cfg)
    opt = make_optimizer(cfg, model)
    batch = _batch()
    losses = [train_step(model, model, opt, cfg, batch, step=0, rank=0)["loss"] for _ in range(15)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3, losses


def test_selector_gets_no_gradient_from_shot_loss():
    torch.manual_seed(0)
    cfg = TrainConfig(out="unused", policy="both", **TINY)
    model = StoryModel(cfg)
    batch = _batch()
    g = torch.Generator().manual_seed(0)
    x0 = batch["shot3"]
    sigma = sample_sigma(4, g)
    xt, target = noisy(x0, torch.randn(x0.shape, generator=g), sigma)
    v, scores, labels, ctx, _ = model(batch, xt, sigma, torch.zeros(4, dtype=torch.bool), "both", g)
    assert ctx.tokens is not None and ctx.tokens.shape[1] > 0
    shot_loss(v, target).backward(retain_graph=True)
    for p in model.selector.parameters():
        assert p.grad is None or not p.grad.any()
    assert any(p.grad is not None and p.grad.any() for p in model.conditioner.parameters())
    selector_loss(scores, labels).backward()
    assert any(p.grad is not None and p.grad.any() for p in model.selector.parameters())


def test_checkpoint_resume_round_trip(tmp_path):
    common = dict(decoupled_steps=2, ckpt_every=100, **TINY)
    straight = train(TrainConfig(out=str(tmp_path / "a"), steps=4, **common))
    train(TrainConfig(out=str(tmp_path / "b"), steps=4, **common), stop_at=2)   # "interrupted"
    resumed = train(TrainConfig(out=str(tmp_path / "b"), steps=4, **common), resume=True)
    sa, sb = straight.state_dict(), resumed.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    # the saved pair loads back (DiT in original Wan key names, adapter via onestory.adapter)
    ck = tmp_path / "b" / "checkpoint"
    sd = load_file(str(ck / "dit.safetensors"))
    assert "patch_embedding.weight" in sd and "blocks.0.self_attn.q.weight" in sd
    WanModel.from_state_dict(sd, num_heads=1)
    loaded = load_model(ck / "dit.safetensors", ck / "adapter.safetensors")
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, sb[k]), k
    assert (tmp_path / "b" / "log.jsonl").read_text().count("\n") == 4


def test_one_latent_frame_shots_normalised_space_and_wan_init(tmp_path):
    """pixel_frames=1 trains on 1-latent-frame shots; latent_norm keeps bank space outside the
    model (generation hands the reader bank-space latents); wan_init starts at v = 0."""
    from onestory_lab.storyworld.dataset import eval_stories
    from onestory_lab.eval.generate import GenParams, generate_batch
    from onestory_lab.train.checkpoint import base_architecture

    cfg = TrainConfig(out=str(tmp_path / "base"), steps=2, policy="none", pixel_frames=1, latent_norm=True,
                      wan_init=True, **TINY)
    fresh = StoryModel(cfg)
    assert not fresh.dit.head.head.weight.any()          # Wan's zero output head
    batch = torch.utils.data.default_collate([TripletDataset(8, pixel_frames=1)[i] for i in range(2)])
    assert batch["shot3"].shape[2] == 1                   # "c t h w" with t = 1
    base = train(cfg)
    arch = base_architecture(tmp_path / "base" / "checkpoint" / "dit.safetensors")
    assert arch == {k: getattr(cfg, k) for k in arch} and arch["pixel_frames"] == 1

    model = StoryModel(TrainConfig(out="unused", policy="both", **{**TINY, **arch}), dit=base.dit)
    # model space is standardised: the bank-space mean of channel 0 (~0.83) maps to ~0
    z = batch["shot3"]
    assert abs(model.norm.to_model(z)[:, 0].mean().item()) < abs(z[:, 0].mean().item())
    torch.testing.assert_close(model.norm.to_bank(model.norm.to_model(z)), z)
    stories = eval_stories("insert_recall", 2, pixel_frames=1)
    runs = generate_batch(model.eval(), stories, GenParams.for_model(model, steps=2, cfg=1.0))
    assert [tuple(x.shape) for x in runs[0].latents] == [(16, 1, 16, 16)] * 6, [x.shape for x in runs[0].latents]
    assert [len(s["kept"]) for s in runs[0].selections[1:]] == [1, 2, 3, 4, 4]


def test_world_latent_statistics_match_the_codec():
    """WORLD_MEAN / WORLD_STD are measured, not invented: re-measure them on other stories."""
    from onestory_lab.storyworld.inflation import story_seed
    from onestory_lab.storyworld.latent import WORLD_MEAN, WORLD_STD, LatentCodec, frames_to_tensor
    from onestory_lab.storyworld.world import PATTERN_NAMES, make_story

    codec = LatentCodec()
    z = torch.stack([codec.encode(frames_to_tensor(make_story(story_seed("train", 5_000 + i),
                                                              PATTERN_NAMES[i % 3], 32, 1).render_shot(k)))
                     for i in range(60) for k in range(6)])
    torch.testing.assert_close(z.mean(dim=(0, 2, 3, 4)), torch.tensor(WORLD_MEAN), atol=0.06, rtol=0)
    torch.testing.assert_close(z.std(dim=(0, 2, 3, 4)), torch.tensor(WORLD_STD), atol=0.06, rtol=0.1)


def test_pixel_frames_must_be_wan_shaped():
    import pytest

    with pytest.raises(ValueError, match="4n\\+1"):
        TrainConfig(pixel_frames=4)


def test_two_frame_memory_at_budget_two_gives_every_ranking_the_same_context():
    """Why the decoupled warm-up and the selector-driven context train the same DiT in the bundled
    recipe (docs/results.md, section 7): a triplet's 2 memory frames both get the finest tier at
    budget 2 and the tokens are laid out in time order, so the ranking changes nothing."""
    from onestory_lab.train.config import TrainConfig
    from onestory_lab.train.model import StoryModel

    torch.manual_seed(0)
    model = StoryModel(TrainConfig(out="unused", policy="both", k=4, budget=2.0, dim=64, ffn_dim=128, heads=1,
                                   layers=1, text_dim=32, sel_width=16, sel_queries=2, sel_heads=1, pixel_frames=1))
    memory = torch.randn(1, 2, 16, 16, 16)
    a, b = model.context(memory, [[1, 0]], 2.0), model.context(memory, [[0, 1]], 2.0)
    assert a.tiers == b.tiers == [0, 0]
    torch.testing.assert_close(a.tokens, b.tokens, rtol=0, atol=0)
    torch.testing.assert_close(a.positions, b.positions, rtol=0, atol=0)
    c = model.context(memory, [[1, 0]], 1.0)     # budget 1: both frames at 4x4, still rank-free
    assert c.tiers == [1, 1] and c.tokens.shape[1] == 32
