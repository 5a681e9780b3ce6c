import time

import pytest
import torch

from onestory.conditioner import AdaptiveConditioner
from onestory.errors import Interrupted, OneStoryError
from onestory.memory import MemoryBank
from onestory.story import NextShotGenerator, ShotSpec, StoryParams, generate_story
from onestory.wan import WanConfig, WanModel

TEXT_DIM = 32


def tiny(model_type="t2v", seed=0):
    torch.manual_seed(seed)
    in_dim = 16 if model_type == "t2v" else 36
    cfg = WanConfig(model_type=model_type, in_dim=in_dim, dim=64, ffn_dim=128, text_dim=TEXT_DIM, out_dim=16,
                    num_heads=2, num_layers=2)
    model = WanModel(cfg).eval()
    cond = AdaptiveConditioner.from_patch_embedding(model.patch_embedding.weight, model.patch_embedding.bias,
                                                    latent_channels=16)
    return NextShotGenerator(model, cond)


def shots(n):
    g = torch.Generator().manual_seed(1)
    return [ShotSpec(f"caption {i}", torch.randn(5, TEXT_DIM, generator=g), seed=i) for i in range(n)]


PARAMS = StoryParams(frames=2, height=8, width=8, k=3, budget=1.0, steps=3, cfg=2.0)


def test_six_shot_t2msv_end_to_end():
    gen = tiny()
    start = time.perf_counter()
    bank = generate_story(gen, shots(6), PARAMS)
    elapsed = time.perf_counter() - start
    assert bank.num_shots == 6 and bank.num_frames == 12
    assert torch.isfinite(bank.frames).all()
    assert bank.shots[0].selection is None  # nothing to remember yet
    for i in range(1, 6):
        sel = bank.shots[i].selection
        assert sel is not None and 0 < len(sel["kept"]) <= PARAMS.k
        assert all(0 <= k < 2 * i for k in sel["kept"])  # only frames of earlier shots
    assert [s.caption for s in bank.shots] == [f"caption {i}" for i in range(6)]
    assert elapsed < 30, elapsed


def test_memory_changes_the_next_shot_and_same_seed_reproduces():
    gen = tiny()
    s = shots(2)
    a = generate_story(gen, s, PARAMS)
    b = generate_story(gen, s, PARAMS)
    assert torch.equal(a.frames, b.frames)  # seeded
    # Same shot-2 seed and caption, different memory -> different shot 2.
    other_first = [ShotSpec("caption 0", s[0].text, seed=99), s[1]]
    c = generate_story(gen, other_first, PARAMS)
    assert not torch.equal(a.shot_frames(1), c.shot_frames(1))


def test_i2msv_first_shot_uses_image_slot():
    gen = tiny("i2v")
    image = torch.randn(16, 8, 8)
    a = generate_story(gen, shots(2), PARAMS, first_image=image)
    b = generate_story(gen, shots(2), PARAMS, first_image=-image)
    assert not torch.equal(a.shot_frames(0), b.shot_frames(0))
    with pytest.raises(OneStoryError, match="first_image"):
        generate_story(gen, shots(1), PARAMS, first_image=torch.randn(16, 4, 4))
    with pytest.raises(OneStoryError, match="image-to-video"):
        generate_story(tiny("t2v"), shots(1), PARAMS, first_image=image)


def test_interrupt_leaves_bank_unchanged():
    gen = tiny()
    bank = generate_story(gen, shots(2), PARAMS)
    before = bank.fingerprint()
    calls = iter(range(100))
    with pytest.raises(Interrupted):
        generate_story(gen, shots(3), PARAMS, bank=bank, should_stop=lambda: next(calls) >= 4)
    assert bank.fingerprint() == before and bank.num_shots == 2
