"""The order-aware Frame Selector (max_shots > 0), its adapter field, and story-prefix L_sel."""
import pytest
import torch

from onestory.adapter import AdapterMeta, OneStoryAdapter
from onestory.conditioner import AdaptiveConditioner
from onestory_lab.storyworld.dataset import StoryPrefixPool
from onestory_lab.storyworld.inflation import story_seed
from onestory_lab.storyworld.world import PATTERN_NAMES, make_story, relevance
from onestory.errors import OneStoryError, ShapeError
from onestory.memory import MemoryBank
from onestory.frame_selector import FrameSelector
from onestory.scorers import select
from onestory_lab.train.config import TrainConfig
from onestory_lab.train.loop import make_optimizer, story_batch, train_step
from onestory_lab.train.model import StoryModel

C, DT = 4, 12


def selector(max_shots, seed=0):
    torch.manual_seed(seed)
    return FrameSelector(C, DT, width=16, num_queries=4, heads=2, spatial_stride=2, max_shots=max_shots)


def _randomise_order(sel):
    with torch.no_grad():
        sel.shot_tokens.weight.normal_(0, 1.0)
        sel.shot_pooled.weight.normal_(0, 1.0)


def test_zero_initialised_order_embedding_is_the_plain_selector():
    plain, ordered = selector(0), selector(8)
    ordered.load_state_dict(plain.state_dict(), strict=False)
    mem, text = torch.randn(2, 6, C, 4, 4), torch.randn(2, 5, DT)
    shots = torch.tensor([[0, 0, 1, 1, 2, 2]] * 2)
    assert torch.allclose(plain(mem, text), ordered(mem, text, shots=shots), atol=1e-6)


def test_identical_frames_are_told_apart_by_their_shot():
    sel = selector(8)
    _randomise_order(sel)
    frame = torch.randn(C, 4, 4)
    mem = frame.expand(1, 3, C, 4, 4)            # three copies of one frame
    text = torch.randn(1, 5, DT)
    s = sel(mem, text, shots=torch.tensor([[0, 1, 2]]))[0]
    assert len(set(s.tolist())) == 3, s         # a content-only selector gives them one score
    assert torch.allclose(selector(0)(mem, text)[0].diff(), torch.zeros(2), atol=1e-6)


def test_ordinals_past_the_last_slot_share_it():
    sel = selector(3)
    _randomise_order(sel)
    mem, text = torch.randn(1, 2, C, 4, 4), torch.randn(1, 5, DT)
    assert torch.equal(sel(mem, text, shots=torch.tensor([[0, 2]])), sel(mem, text, shots=torch.tensor([[0, 7]])))


def test_shots_are_required_and_checked():
    sel = selector(4)
    mem, text = torch.randn(1, 2, C, 4, 4), torch.randn(1, 5, DT)
    with pytest.raises(OneStoryError, match="pass shots"):
        sel(mem, text)
    with pytest.raises(ShapeError, match="one shot ordinal per memory frame"):
        sel(mem, text, shots=torch.tensor([[0, 1, 2]]))
    with pytest.raises(OneStoryError, match="negative"):
        sel(mem, text, shots=torch.tensor([[0, -1]]))
    with pytest.raises(OneStoryError, match="integer"):
        sel(mem, text, shots=torch.tensor([[0.0, 1.0]]))
    with pytest.raises(OneStoryError, match="max_shots"):
        FrameSelector(C, DT, width=16, num_queries=4, heads=2, max_shots=-1)


def test_score_bank_uses_the_banks_shot_indices():
    sel = selector(8)
    _randomise_order(sel)
    g = torch.Generator().manual_seed(0)
    bank = MemoryBank.empty()
    for s in range(3):
        bank = bank.add_shot(torch.randn(C, 2, 4, 4, generator=g), f"shot {s}")
    text = torch.randn(5, DT)
    shots = torch.tensor([[r.shot for r in bank.records]])
    assert shots.tolist() == [[0, 0, 1, 1, 2, 2]]
    want = sel(bank.frames[None], text[None], shots=shots)[0]
    assert torch.allclose(sel.score_bank(bank, text), want, atol=1e-5)
    dropped = bank.drop_shot(0)               # later shots move down: their ordinals change
    want = sel(dropped.frames[None], text[None], shots=torch.tensor([[0, 0, 1, 1]]))[0]
    assert torch.allclose(sel.score_bank(dropped, text), want, atol=1e-5)
    assert select(dropped, 2, "learned", text=text, selector=sel).scores.shape == (4,)


def _meta(max_shots):
    sel = selector(max_shots)
    cond = AdaptiveConditioner(C, 32)
    return OneStoryAdapter.from_modules(cond, sel, backbone="wan2.1-t2v", text_dim=DT)


def test_adapter_round_trip_keeps_the_order_embedding(tmp_path):
    a = _meta(6)
    _randomise_order(a.selector)
    a.save(tmp_path / "a.safetensors")
    b = OneStoryAdapter.load(tmp_path / "a.safetensors")
    assert b.meta.selector.max_shots == 6 and b.selector.max_shots == 6
    assert torch.equal(b.selector.shot_tokens.weight, a.selector.shot_tokens.weight)


def test_order_free_adapter_metadata_is_unchanged():
    """Files without the field (written before it existed) load; order-free files omit it."""
    d = _meta(0).meta.to_json()
    assert "max_shots" not in d["selector"]
    assert AdapterMeta.from_json(d).selector.max_shots == 0
    assert _meta(5).meta.to_json()["selector"]["max_shots"] == 5


def test_story_prefix_pool_matches_the_story_world():
    pool = StoryPrefixPool(4, seed=1, pixel_frames=5)     # 2 latent frames per shot
    b = pool.batch(3, [2, 0])
    assert b["memory"].shape == (2, 6, 16, 16, 16) and b["relevance"].shape == (2, 6)
    st = make_story(story_seed("train", (1 << 39) + 4 + 2), PATTERN_NAMES[2], pixel_frames=5)
    assert torch.equal(b["relevance"][0], torch.from_numpy(relevance(st.shots[:3], st.shots[3])))
    again = StoryPrefixPool(4, seed=1, pixel_frames=5).batch(3, [2, 0])
    assert torch.equal(again["memory"], b["memory"])
    with pytest.raises(ValueError, match="target shot"):
        pool.batch(6, [0])


TINY = dict(dim=64, layers=2, heads=1, ffn_dim=128, text_dim=128, sel_width=32, sel_queries=2, sel_heads=1,
            batch_size=4, warmup_lr_steps=0, log_every=1, progress=False, threads=2, pixel_frames=1,
            decoupled_steps=0, sel_shots=8)


def _triplets(n=4):
    from onestory_lab.storyworld.dataset import TripletDataset

    ds = TripletDataset(length=64, seed=0, pixel_frames=1)
    return torch.utils.data.default_collate([ds[i] for i in range(n)])


def _order_grad(cfg, pool, step):
    torch.manual_seed(0)
    model = StoryModel(cfg)
    opt = make_optimizer(cfg, model)
    out = train_step(model, model, opt, cfg, _triplets(), step=step, rank=0, pool=pool)
    return out, model.selector.shot_tokens.weight.grad


def test_story_prefix_items_train_the_ordinals_three_shot_samples_never_reach():
    """3-shot samples have memory shots 0 and 1 only: slots 2+ learn from story prefixes alone."""
    pool = StoryPrefixPool(6, pixel_frames=1)
    cfg = TrainConfig(out="unused", sel_story_batch=5, **TINY)
    # a step whose story prefixes have 4 memory shots (1 latent frame each)
    step = next(i for i in range(100) if story_batch(cfg, pool, i, 0)["memory"].shape[1] == 4)
    out, grad = _order_grad(TrainConfig(out="unused", sel_story_batch=0, **TINY), pool, step)
    assert "l_sel_story" not in out
    assert grad[2:].abs().max() == 0 and grad[:2].abs().max() > 0
    out, grad = _order_grad(cfg, pool, step)
    assert out["l_sel_story"] > 0 and 0 <= out["sel_story_top1"] <= 1
    assert grad[2:4].abs().min() > 0 and grad[4:].abs().max() == 0
