"""Adaptive Conditioner: kernel table, budget solver, inflation from a patch embedding, positions."""
import math

import pytest
import torch
import torch.nn.functional as F

from onestory.conditioner import (
    DEFAULT_KERNELS, AdaptiveConditioner, Context, block_centres, budget_tokens, solve_budget,
    tokens_per_frame, validate_kernels,
)
from onestory.errors import OneStoryError, ShapeError
from onestory.latent import LatentNormalization
from onestory.memory import MemoryBank
from onestory.selection import Selection, top_k
from onestory.scorers import select

C, D = 4, 8


def make_cond(kernels=DEFAULT_KERNELS, time_gap=0.0, seed=0):
    torch.manual_seed(seed)
    return AdaptiveConditioner(C, D, kernels=kernels, time_gap=time_gap)


# ---------------------------------------------------------------- kernel table


def test_default_kernels_validate():
    assert validate_kernels() == ((1, 2, 2), (1, 4, 4), (1, 8, 8), (1, 16, 16))


@pytest.mark.parametrize("kernels, words", [
    (((1, 2, 2), (2, 4, 4)), ["kernels[1]", "temporal", "contiguous"]),
    (((1, 2, 2), (1, 3, 3)), ["kernels[1]", "multiples", "patch"]),
    (((1, 4, 4), (1, 2, 2)), ["kernels[1]", "finest first"]),
    (((1, 4, 4), (1, 4, 4)), ["kernels[1]", "finest first"]),
    (((1, 4, 8), (1, 8, 4)), ["kernels[1]", "finest first"]),
    ((), ["kernels is empty"]),
    (((1, 2),), ["kernels[0]", "three integers"]),
    (((1, 0, 2),), ["kernels[0]", ">= 1"]),
])
def test_bad_kernel_tables_are_refused(kernels, words):
    with pytest.raises(OneStoryError) as info:
        validate_kernels(kernels)
    for word in words:
        assert word in str(info.value)
    with pytest.raises(OneStoryError):
        AdaptiveConditioner(C, D, kernels=kernels)


def test_tokens_per_frame_paper_numbers():
    # Wan 2.1 at 480x832 -> latent 60x104 (stride 8).
    assert [tokens_per_frame(k, 60, 104) for k in DEFAULT_KERNELS] == [1560, 390, 104, 28]
    assert tokens_per_frame((1, 4, 4), 5, 7) == 2 * 2
    assert budget_tokens(1.0, 60, 104) == 1560
    assert budget_tokens(0.25, 60, 104) == 390


# ---------------------------------------------------------------- budget solver


def test_solver_hand_case():
    # 1 latent-frame budget at 480p, K = 9: everyone at (1,16,16) costs 9*28 = 252, leaving 1308.
    # Rank 0..2 upgrade to (1,4,4) (+362 each -> 222 left), rank 3,4 to (1,8,8) (+76 each -> 70
    # left), the rest cannot afford (1,8,8) any more.
    assert solve_budget(9, DEFAULT_KERNELS, 60, 104, 1.0) == [1, 1, 1, 2, 2, 3, 3, 3, 3]
    # 3 frame-equivalents: the top frame gets the finest tier.
    assert solve_budget(3, DEFAULT_KERNELS, 60, 104, 3.0)[0] == 0
    assert solve_budget(5, DEFAULT_KERNELS, 60, 104, 0.0) == []
    # 15 tokens < 28 (coarsest): nothing fits.
    assert solve_budget(5, DEFAULT_KERNELS, 60, 104, 0.01) == []
    assert solve_budget(0, DEFAULT_KERNELS, 60, 104, 1.0) == []


def test_solver_drops_lowest_ranks_when_coarsest_does_not_fit():
    # 16x16 latent: 64 tokens per frame at (1,2,2); (1,16,16) costs 1 token per frame.
    tiers = solve_budget(100, DEFAULT_KERNELS, 16, 16, 0.5)   # 32 tokens
    assert len(tiers) == 32 and all(t == 3 for t in tiers)


@pytest.mark.parametrize("bad", [-0.5, float("nan"), float("inf"), "lots"])
def test_solver_rejects_bad_budget(bad):
    with pytest.raises(OneStoryError, match="budget"):
        solve_budget(3, DEFAULT_KERNELS, 16, 16, bad)


def test_solver_rejects_negative_count():
    with pytest.raises(OneStoryError, match="num_ranked"):
        solve_budget(-1, DEFAULT_KERNELS, 16, 16, 1.0)


SIZES = [(4, 4), (5, 7), (6, 10), (16, 16), (9, 33), (60, 104)]
BUDGETS = [0.25, 0.5, 1.0, 1.7, 3.0]
KS = [1, 2, 5, 9, 17, 30]


@pytest.mark.parametrize("h, w", SIZES)
def test_solver_monotone_and_within_budget(h, w):
    for budget in BUDGETS:
        limit = budget_tokens(budget, h, w)
        assert limit <= budget * tokens_per_frame((1, 2, 2), h, w) + 1e-9
        previous_total = None
        for k in range(0, 31):
            tiers = solve_budget(k, DEFAULT_KERNELS, h, w, budget)
            cost = [tokens_per_frame(kern, h, w) for kern in DEFAULT_KERNELS]
            total = sum(cost[t] for t in tiers)
            assert total <= limit
            assert len(tiers) <= k
            # rank order: a higher-ranked frame never gets a coarser tier
            assert tiers == sorted(tiers)
            # frames are only dropped when even the coarsest tier no longer fits
            if len(tiers) < k:
                assert (len(tiers) + 1) * cost[-1] > limit
            # the top frame got the finest tier it could afford with everyone else at coarsest
            if tiers:
                spare = limit - len(tiers) * cost[-1]
                finest = min(t for t in range(len(cost)) if cost[t] - cost[-1] <= spare)
                assert tiers[0] == finest
            if previous_total is not None and len(tiers) == k:
                # more frames never shrink the number of frames used
                assert len(tiers) >= len(solve_budget(k - 1, DEFAULT_KERNELS, h, w, budget))
            previous_total = total
        # more budget never gives the top frame a coarser tier nor fewer frames
    for k in (1, 9, 30):
        runs = [solve_budget(k, DEFAULT_KERNELS, h, w, b) for b in BUDGETS]
        for a, b in zip(runs, runs[1:]):
            assert len(b) >= len(a)
            if a and b:
                assert b[0] <= a[0]


@pytest.mark.parametrize("h, w", SIZES[:-1])
@pytest.mark.parametrize("budget", BUDGETS)
def test_token_count_matches_solver(h, w, budget):
    cond = make_cond()
    torch.manual_seed(1)
    frames = torch.randn(30, C, h, w)
    for k in KS:
        tiers = solve_budget(k, cond.kernels, h, w, budget)
        ctx = cond(frames[:k], torch.arange(k), torch.arange(k).float(), tiers)
        predicted = sum(tokens_per_frame(cond.kernels[t], h, w) for t in tiers)
        assert len(ctx) == predicted <= budget_tokens(budget, h, w)
        assert ctx.tokens.shape == (predicted, D)
        assert ctx.positions.shape == (predicted, 3)
        # every token says which frame and tier it came from, and the counts agree
        for i, t in enumerate(tiers):
            sel = ctx.frame_index == i
            assert int(sel.sum()) == tokens_per_frame(cond.kernels[t], h, w)
            assert set(ctx.tier[sel].tolist()) == {t}
        # frames without a tier (dropped by the solver) give no tokens
        assert set(ctx.frame_index.tolist()) == set(range(len(tiers)))


# ---------------------------------------------------------------- inflation


def _patch_embed(seed=0, in_dim=C):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(D, in_dim, 1, 2, 2, generator=g), torch.randn(D, generator=g)


@pytest.mark.parametrize("h, w", [(16, 16), (10, 22)])
def test_t2v_inflation_constant_frame_same_token_every_tier(h, w):
    weight, bias = _patch_embed()
    cond = AdaptiveConditioner.from_patch_embedding(weight, bias, C)
    value = torch.tensor([0.7, -1.3, 2.0, 0.1])
    frame = value.view(1, C, 1, 1).expand(1, C, h, w).contiguous()
    reference = F.conv3d(value.view(1, C, 1, 1, 1).expand(1, C, 1, 2, 2), weight, bias,
                         stride=(1, 2, 2)).flatten()
    for tier in range(4):
        ctx = cond(frame, [0], [0.0], [tier])
        assert len(ctx) == tokens_per_frame(cond.kernels[tier], h, w)
        torch.testing.assert_close(ctx.tokens, reference.expand_as(ctx.tokens),
                                   rtol=1e-5, atol=1e-5)


def test_t2v_finest_tier_equals_patch_embedding():
    weight, bias = _patch_embed()
    cond = AdaptiveConditioner.from_patch_embedding(weight, bias, C)
    x = torch.randn(1, C, 8, 12)
    ctx = cond(x, [0], [0.0], [0])
    ref = F.conv3d(x.unsqueeze(2), weight, bias, stride=(1, 2, 2))
    torch.testing.assert_close(ctx.tokens, ref.flatten(2)[0].T, rtol=1e-5, atol=1e-5)


def test_inflated_kernel_is_patch_embedding_of_pooled_latent():
    # FramePack rule: (1,4,4) on x == the (1,2,2) embedding of x average-pooled by 2.
    weight, bias = _patch_embed()
    cond = AdaptiveConditioner.from_patch_embedding(weight, bias, C)
    x = torch.randn(1, C, 8, 16)
    ctx = cond(x, [0], [0.0], [1])
    pooled = F.avg_pool2d(x, 2)
    ref = F.conv3d(pooled.unsqueeze(2), weight, bias, stride=(1, 2, 2))
    torch.testing.assert_close(ctx.tokens, ref.flatten(2)[0].T, rtol=1e-5, atol=1e-5)


def test_i2v_inflation_equals_embedding_of_clean_frame_with_mask_one():
    weight, bias = _patch_embed(seed=3, in_dim=2 * C + 4)
    cond = AdaptiveConditioner.from_patch_embedding(weight, bias, C)
    value = torch.tensor([0.2, 1.5, -0.4, -2.0])
    const = value.view(1, C, 1, 1, 1).expand(1, C, 1, 2, 2)
    full = torch.cat([const, torch.ones(1, 4, 1, 2, 2), const], dim=1)     # [c | mask 1 | c]
    reference = F.conv3d(full, weight, bias, stride=(1, 2, 2)).flatten()
    frame = value.view(1, C, 1, 1).expand(1, C, 12, 20).contiguous()
    for tier in range(4):
        ctx = cond(frame, [0], [0.0], [tier])
        torch.testing.assert_close(ctx.tokens, reference.expand_as(ctx.tokens),
                                   rtol=1e-4, atol=1e-4)
    # and on a non-constant frame the finest tier equals the full I2V embedding of [x | 1 | x]
    x = torch.randn(1, C, 1, 4, 6)
    full = torch.cat([x, torch.ones(1, 4, 1, 4, 6), x], dim=1)
    ref = F.conv3d(full, weight, bias, stride=(1, 2, 2)).flatten(2)[0].T
    torch.testing.assert_close(cond(x[:, :, 0], [0], [0.0], [0]).tokens, ref,
                               rtol=1e-4, atol=1e-4)


def test_from_patch_embedding_rejects_unknown_in_dim():
    weight, bias = _patch_embed(in_dim=20)
    with pytest.raises(ShapeError) as info:
        AdaptiveConditioner.from_patch_embedding(weight, bias, C)
    assert "in_dim=20" in str(info.value) and "latent_channels=4" in str(info.value)
    with pytest.raises(ShapeError, match="weight"):
        AdaptiveConditioner.from_patch_embedding(weight[:, :, 0], bias, C)
    with pytest.raises(ShapeError, match="bias"):
        AdaptiveConditioner.from_patch_embedding(weight[:, :C], bias[:3], C)


def test_from_patch_embedding_keeps_dtype():
    weight, bias = _patch_embed()
    cond = AdaptiveConditioner.from_patch_embedding(weight.bfloat16(), bias.bfloat16(), C)
    assert cond.patchifiers[2].weight.dtype == torch.bfloat16
    ctx = cond(torch.randn(2, C, 8, 8), [0, 1], [0.0, 1.0], [0, 2])
    assert ctx.tokens.dtype == torch.bfloat16 and ctx.positions.dtype == torch.float32


# ---------------------------------------------------------------- positions


def test_block_centres_hand_cases():
    # h = i*k/2 + k/4 - 1/2 in (1,2,2)-patch units
    assert block_centres(8, 2, 2).tolist() == [0.0, 1.0, 2.0, 3.0]
    assert block_centres(8, 4, 2).tolist() == [0.5, 2.5]
    assert block_centres(16, 8, 2).tolist() == [1.5, 5.5]
    assert block_centres(16, 16, 2).tolist() == [3.5]
    # non-multiple: rows 4..7 of a 5-row frame are replicate copies of row 4 (coordinate 1.75)
    assert block_centres(5, 4, 2).tolist() == [0.5, 1.75]
    # size 6 with k=4: block 1 = rows 4, 5, 5, 5 -> coords 1.75, 2.25, 2.25, 2.25 -> 2.125
    assert block_centres(6, 4, 2).tolist() == [0.5, 2.125]


def test_positions_time_order_and_gap():
    cond = make_cond(time_gap=2.0)
    frames = torch.randn(3, C, 4, 4)
    # ranked: memory frames 7, 2, 5 with times 7, 2, 5 -> time order 2, 5, 7 -> t = -3, -2, -1
    ctx = cond(frames, [7, 2, 5], [7.0, 2.0, 5.0], [0, 1, 1])
    t_of = {}
    for idx, t in zip(ctx.frame_index.tolist(), ctx.positions[:, 0].tolist()):
        t_of.setdefault(idx, set()).add(t)
    assert t_of == {2: {-5.0}, 5: {-4.0}, 7: {-3.0}}
    assert (ctx.positions[:, 0] < 0).all()
    # tokens come frame by frame in time order
    assert ctx.frame_index.tolist() == [2, 5] + [7] * 4


def test_positions_spatial_grid_per_tier():
    cond = make_cond()
    frames = torch.randn(2, C, 8, 16)
    ctx = cond(frames, [0, 1], [0.0, 1.0], [1, 0])   # frame 0 at (1,4,4), frame 1 at (1,2,2)
    p0 = ctx.positions[ctx.frame_index == 0]
    assert p0[:, 1].tolist() == [0.5] * 4 + [2.5] * 4
    assert p0[:, 2].tolist() == [0.5, 2.5, 4.5, 6.5] * 2
    p1 = ctx.positions[ctx.frame_index == 1]
    assert p1[:, 1].tolist() == [float(i) for i in range(4) for _ in range(8)]
    assert p1[:, 2].tolist() == [float(j) for j in range(8)] * 4
    assert set(ctx.positions[:, 0].tolist()) == {-2.0, -1.0}


@pytest.mark.parametrize("tier", [0, 1, 2, 3])
def test_position_of_token_matches_its_content(tier):
    # A single hot latent pixel changes exactly one token; that token's (h, w) must be the
    # centre of the block containing the pixel.
    weight, bias = _patch_embed()
    cond = AdaptiveConditioner.from_patch_embedding(weight, bias, C)
    h, w, r, c = 16, 32, 9, 21
    x = torch.zeros(1, C, h, w)
    hot = x.clone()
    hot[0, :, r, c] = 5.0
    base = cond(x, [0], [0.0], [tier])
    ctx = cond(hot, [0], [0.0], [tier])
    changed = (ctx.tokens - base.tokens).abs().sum(dim=1) > 1e-4
    assert int(changed.sum()) == 1
    _, kh, kw = cond.kernels[tier]
    expect_h = (r // kh) * kh / 2 + kh / 4 - 0.5
    expect_w = (c // kw) * kw / 2 + kw / 4 - 0.5
    assert ctx.positions[changed, 1:].tolist() == [[expect_h, expect_w]]


# ---------------------------------------------------------------- Context and errors


def test_context_empty():
    ctx = Context.empty(D)
    assert len(ctx) == 0 and ctx.tokens.shape == (0, D) and ctx.positions.shape == (0, 3)
    assert ctx.frame_index.dtype == torch.long and ctx.tier.dtype == torch.long
    assert len(make_cond()(torch.randn(2, C, 4, 4), [0, 1], [0.0, 1.0], [])) == 0


def test_context_checks_shapes():
    with pytest.raises(ShapeError, match="positions"):
        Context(torch.zeros(3, D), torch.zeros(2, 3), torch.zeros(3).long(), torch.zeros(3).long())


def test_forward_input_errors():
    cond = make_cond()
    with pytest.raises(ShapeError, match="frames has 3 channels.*latent_channels=4"):
        cond(torch.randn(1, 3, 4, 4), [0], [0.0], [0])
    with pytest.raises(ShapeError, match="frames has shape"):
        cond(torch.randn(C, 4, 4), [0], [0.0], [0])
    with pytest.raises(ShapeError, match="frame_index"):
        cond(torch.randn(2, C, 4, 4), [0], [0.0, 1.0], [0])
    with pytest.raises(OneStoryError, match="tiers"):
        cond(torch.randn(1, C, 4, 4), [0], [0.0], [0, 1])
    with pytest.raises(OneStoryError, match="tiers"):
        cond(torch.randn(1, C, 4, 4), [0], [0.0], [4])


def test_gradients_reach_patchifiers_used():
    cond = make_cond()
    ctx = cond(torch.randn(2, C, 8, 8), [0, 1], [0.0, 1.0], [0, 2])
    ctx.tokens.square().mean().backward()
    assert cond.patchifiers[0].weight.grad.abs().sum() > 0
    assert cond.patchifiers[2].weight.grad.abs().sum() > 0
    assert cond.patchifiers[1].weight.grad is None


# ---------------------------------------------------------------- build from a bank


def _bank(shots=3, t=5, h=6, w=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    bank = MemoryBank.empty()
    for s in range(shots):
        bank = bank.add_shot(torch.randn(C, t, h, w, generator=g), f"shot {s}")
    return bank


def test_build_equals_forward_on_ranked_frames():
    bank = _bank()
    cond = make_cond()
    norm = LatentNormalization((0.5, -1.0, 0.0, 2.0), (2.0, 1.0, 0.5, 3.0))
    sel = select(bank, 9, "recency")
    ctx = cond.build(bank, sel, 1.0, normalization=norm)
    tiers = solve_budget(9, cond.kernels, 6, 10, 1.0)
    used = list(sel.kept[:len(tiers)])
    frames = norm.to_model(bank.frames[used], channel_dim=1)
    ref = cond(frames, used, bank.frame_times()[used], tiers)
    torch.testing.assert_close(ctx.tokens, ref.tokens)
    assert torch.equal(ctx.positions, ref.positions)
    assert torch.equal(ctx.frame_index, ref.frame_index)
    assert len(ctx) <= budget_tokens(1.0, 6, 10)
    # the most recent frame is rank 0 -> finest tier used
    assert int(ctx.tier[ctx.frame_index == 14].unique()) == tiers[0]
    # the newest memory frame sits right before the shot
    assert ctx.positions[ctx.frame_index == 14, 0].unique().tolist() == [-1.0]


def test_build_empty_selection_and_stale_selection():
    bank = _bank()
    cond = make_cond()
    empty = top_k(torch.zeros(bank.num_frames), 0, scorer="recency")
    assert len(cond.build(bank, empty)) == 0
    stale = select(_bank(shots=2), 4, "recency")
    with pytest.raises(OneStoryError, match="select"):
        cond.build(bank, stale)
    with pytest.raises(OneStoryError, match="normalization"):
        cond.build(bank, select(bank, 2, "recency"), normalization=LatentNormalization.identity(3))
    other = AdaptiveConditioner(3, D)
    with pytest.raises(ShapeError, match="channels"):
        other.build(bank, select(bank, 2, "recency"))


# ---------------------------------------------------------------- forward against a reference


def reference_forward(cond, frames, frame_index, frame_time, tiers):
    """The conditioner written frame by frame, as the paper describes it: each ranked frame is
    patchified by its tier's Conv3d, then the frames are laid out in time order (ties: memory
    index), the j-th of n at t = -(n - j) - time_gap, each raster-ordered at its block centres."""
    n = len(tiers)
    order = sorted(range(n), key=lambda i: (float(frame_time[i]), int(frame_index[i])))
    tokens, positions, index, tier_ids = [], [], [], []
    for j, i in enumerate(order):
        _, kh, kw = cond.kernels[tiers[i]]
        h, w = frames.shape[-2:]
        x = F.pad(frames[i:i + 1], (0, (-w) % kw, 0, (-h) % kh), mode="replicate")
        out = cond.patchifiers[tiers[i]](x[:, :, None])            # "1 d 1 hh ww"
        tokens.append(out.flatten(2)[0].T)
        gh, gw = torch.meshgrid(block_centres(h, kh, 2), block_centres(w, kw, 2), indexing="ij")
        m = gh.numel()
        positions.append(torch.stack([torch.full((m,), -(n - j) - cond.time_gap, dtype=torch.float64),
                                      gh.reshape(-1), gw.reshape(-1)], dim=1))
        index += [int(frame_index[i])] * m
        tier_ids += [tiers[i]] * m
    return torch.cat(tokens), torch.cat(positions).float(), torch.tensor(index), torch.tensor(tier_ids)


@pytest.mark.parametrize("seed", range(6))
def test_forward_matches_frame_by_frame_reference(seed):
    g = torch.Generator().manual_seed(seed)
    cond = make_cond(time_gap=[0.0, 1.5][seed % 2], seed=seed)
    h, w = [(8, 16), (5, 7), (16, 6)][seed % 3]
    k = 7
    frames = torch.randn(k, C, h, w, generator=g)
    index = torch.randperm(40, generator=g)[:k]
    times = torch.randint(0, 4, (k,), generator=g).double()          # ties broken by index
    n = [7, 5, 7, 3, 6, 7][seed]
    # monotone like the solver's output, and arbitrary (forward accepts any tiers)
    tiers = sorted(torch.randint(0, 4, (n,), generator=g).tolist()) if seed % 2 else \
        torch.randint(0, 4, (n,), generator=g).tolist()
    with torch.no_grad():
        ctx = cond(frames, index, times, tiers)
        tokens, positions, idx, tier_ids = reference_forward(cond, frames, index, times, tiers)
    torch.testing.assert_close(ctx.tokens, tokens, rtol=1e-5, atol=1e-5)
    assert torch.equal(ctx.positions, positions)
    assert torch.equal(ctx.frame_index, idx) and torch.equal(ctx.tier, tier_ids)


def test_contexts_own_their_tensors():
    # positions and tiers are built from a layout of the tiers: changing a
    # returned Context in place must not reach the next one
    cond = make_cond()
    frames = torch.randn(3, C, 8, 8)
    first = cond(frames, [0, 1, 2], [0.0, 1.0, 2.0], [0, 1, 1])
    expected = first.positions.clone(), first.tier.clone()
    first.positions.zero_()
    first.tier.fill_(9)
    again = cond(frames, [0, 1, 2], [0.0, 1.0, 2.0], [0, 1, 1])
    assert torch.equal(again.positions, expected[0]) and torch.equal(again.tier, expected[1])
