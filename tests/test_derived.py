"""Derived inference weights (onestory/derived.py): reuse while the parameters are unchanged,
recomputation when they change, and the conditioner's folded tier weights against the plain
Conv3d path."""
import copy
import pickle

import pytest
import torch
from torch import nn

from onestory import derived
from onestory.conditioner import AdaptiveConditioner
from onestory.derived import DerivedWeights, ParamSnapshot, wants_derived
from onestory.latent import LatentNormalization
from onestory.memory import MemoryBank
from onestory.selector import FrameSelector, select


def counting_cache(linear: nn.Linear):
    cache, calls = DerivedWeights(), []

    def get():
        def make():
            calls.append(1)
            return linear.weight.t().contiguous()
        return cache.get("w", (linear.weight,), make)
    return cache, calls, get


def test_reused_until_the_weight_changes():
    lin = nn.Linear(6, 4)
    cache, calls, get = counting_cache(lin)
    first = get()
    assert get() is first and len(calls) == 1                 # unchanged: reused
    with torch.no_grad():
        lin.weight.mul_(2.0)                                    # optimizer-style in-place step
    assert torch.equal(get(), lin.weight.t()) and len(calls) == 2
    lin.load_state_dict(nn.Linear(6, 4).state_dict())           # copy_ into the same tensor
    assert torch.equal(get(), lin.weight.t()) and len(calls) == 3
    lin.double()                                                # .data swapped to a new storage
    assert get().dtype == torch.float64 and len(calls) == 4
    lin.weight = nn.Parameter(torch.randn(4, 6))                # a new parameter object
    assert torch.equal(get(), lin.weight.t()) and len(calls) == 5
    square = nn.Linear(4, 4)
    cache, calls, get = counting_cache(square)
    get()
    square.weight.data = square.weight.data.t()                 # same storage, other strides
    assert torch.equal(get(), square.weight.t()) and len(calls) == 2
    cache.clear()
    get()
    assert len(calls) == 3


def test_writes_through_data_need_clear():
    # the documented limitation: .data has its own version counter
    lin = nn.Linear(6, 4)
    cache, calls, get = counting_cache(lin)
    get()
    lin.weight.data.mul_(3.0)
    assert len(calls) == 1 and not torch.equal(get(), lin.weight.t())
    cache.clear()
    assert torch.equal(get(), lin.weight.t())


def test_snapshot_keeps_the_storage_alive():
    p = torch.randn(8)
    snap = ParamSnapshot.of([p])
    ptr = p.data_ptr()
    del p
    assert snap.keep[0].data_ptr() == ptr                       # nothing else can take the address


def test_copies_and_pickles_start_empty():
    cache = DerivedWeights(max_entries=3)
    cache.get("a", (torch.randn(2),), lambda: 1)
    assert len(copy.deepcopy(cache)) == 0 and copy.deepcopy(cache).max_entries == 3
    assert len(pickle.loads(pickle.dumps(cache))) == 0


def test_entry_limit():
    cache = DerivedWeights(max_entries=2)
    p = torch.randn(2)
    for key in "abc":
        cache.get(key, (p,), lambda: key)
    assert len(cache) == 2


def test_wants_derived_only_at_inference_on_cpu():
    p = nn.Parameter(torch.randn(3))
    assert not wants_derived(p)                                 # training: gradients needed
    with torch.no_grad():
        assert wants_derived(p)
    assert wants_derived(p.detach())
    derived.ENABLED = False
    try:
        with torch.no_grad():
            assert not wants_derived(p)
    finally:
        derived.ENABLED = True


# ---------------------------------------------------------------- conditioner

def plain_context(cond, frames, tiers):
    derived.ENABLED = False
    try:
        return cond(frames, list(range(len(tiers))), [float(i) for i in range(len(tiers))], tiers)
    finally:
        derived.ENABLED = True


@pytest.mark.parametrize("h,w", [(8, 16), (5, 7), (16, 6), (3, 3), (17, 33), (32, 32)])
def test_folded_tiers_equal_the_plain_path(h, w):
    torch.manual_seed(0)
    cond = AdaptiveConditioner(4, 8)
    frames = torch.randn(6, 4, h, w)
    tiers = [0, 1, 2, 3, 3, 2]
    with torch.no_grad():
        fast = cond(frames, list(range(6)), [float(i) for i in range(6)], tiers)
        plain = plain_context(cond, frames, tiers)
    torch.testing.assert_close(fast.tokens, plain.tokens, rtol=1e-5, atol=1e-5)
    assert torch.equal(fast.positions, plain.positions) and torch.equal(fast.tier, plain.tier)
    assert len(cond._derived) == len(set(tiers))


def test_conditioner_follows_weight_updates_and_trains_on_the_plain_path():
    torch.manual_seed(1)
    cond = AdaptiveConditioner(4, 8)
    frames = torch.randn(3, 4, 8, 16)
    tiers = [1, 3, 3]
    args = (frames, [0, 1, 2], [0.0, 1.0, 2.0], tiers)
    with torch.no_grad():
        before = cond(*args).tokens
        cond.patchifiers[3].weight.mul_(-1.0)
        after = cond(*args).tokens
        assert not torch.allclose(before, after)
        torch.testing.assert_close(after, plain_context(cond, frames, tiers).tokens, rtol=1e-5, atol=1e-5)
    ctx = cond(*args)                                           # grad enabled: the Conv3d weights
    ctx.tokens.sum().backward()
    assert cond.patchifiers[3].weight.grad is not None and cond.patchifiers[1].weight.grad is not None
    torch.testing.assert_close(ctx.tokens.detach(), after, rtol=1e-5, atol=1e-5)


def test_conditioner_clear_weight_cache_after_data_writes():
    torch.manual_seed(2)
    cond = AdaptiveConditioner(4, 8)
    frames = torch.randn(2, 4, 8, 16)
    args = (frames, [0, 1], [0.0, 1.0], [3, 3])
    with torch.no_grad():
        cond(*args)
        cond.patchifiers[3].weight.data.mul_(2.0)
        cond.clear_weight_cache()
        torch.testing.assert_close(cond(*args).tokens, plain_context(cond, frames, [3, 3]).tokens,
                                   rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- selector bank cache

def test_selector_clear_memory_cache_after_data_writes():
    torch.manual_seed(3)
    sel = FrameSelector(latent_channels=4, text_dim=12, width=16, num_queries=4, heads=2, spatial_stride=4).eval()
    bank = MemoryBank.empty().add_shot(torch.randn(4, 3, 8, 8), "a").add_shot(torch.randn(4, 3, 8, 8), "b")
    text = torch.randn(5, 12)

    def fresh():
        with torch.no_grad():
            return sel(LatentNormalization.identity(4).to_model(bank.frames)[None], text[None])[0]
    select(bank, 2, "learned", text=text, selector=sel)
    sel.memory_proj.weight.data.mul_(-2.0)
    sel.clear_memory_cache()
    torch.testing.assert_close(sel.score_bank(bank, text), fresh())


def test_frame_times_of():
    bank = MemoryBank.empty().add_shot(torch.randn(4, 3, 2, 2), "a").add_shot(torch.randn(4, 2, 2, 2), "b")
    idx = [4, 0, 2, -1]
    assert bank.frame_times_of(idx) == bank.frame_times()[idx].tolist()
    with pytest.raises(IndexError, match="out of range"):
        bank.frame_times_of([5])
