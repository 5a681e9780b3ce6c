"""Frame selection: top-K with pins/excludes, training-free scorers, the learned FrameSelector."""
import json

import pytest
import torch
import torch.nn.functional as F

from onestory.conditioner import AdaptiveConditioner, solve_budget
from onestory.errors import OneStoryError, ShapeError
from onestory.latent import LatentNormalization
from onestory.memory import MemoryBank
from onestory.frame_selector import FrameSelector
from onestory.selection import Selection, top_k
from onestory.scorers import score_frames, select

C, DT = 4, 12


def tiny_selector(seed=0, **kw):
    torch.manual_seed(seed)
    args = dict(latent_channels=C, text_dim=DT, width=16, num_queries=4, heads=2,
                spatial_stride=2)
    args.update(kw)
    return FrameSelector(**args)


def bank_from_values(values_per_shot, h=4, w=4):
    """One shot per list; frame j of a shot is the constant values_per_shot[s][j]."""
    bank = MemoryBank.empty()
    for s, values in enumerate(values_per_shot):
        v = torch.tensor(values, dtype=torch.float32)
        bank = bank.add_shot(v.view(1, -1, 1, 1).expand(C, -1, h, w).contiguous(), f"shot {s}")
    return bank


def random_bank(shots=3, t=4, h=6, w=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    bank = MemoryBank.empty()
    for s in range(shots):
        bank = bank.add_shot(torch.randn(C, t, h, w, generator=g), f"shot {s}")
    return bank


# ---------------------------------------------------------------- top_k


def test_top_k_ranks_by_score():
    sel = top_k(torch.tensor([0.1, 0.9, 0.5, 0.7]), 2, scorer="recency")
    assert sel.kept == (1, 3) and sel.scorer == "recency"
    assert sel.scores.dtype == torch.float32 and sel.scores.shape == (4,)


def test_top_k_ties_go_to_later_frame():
    assert top_k(torch.zeros(5), 3).kept == (4, 3, 2)
    assert top_k(torch.tensor([1.0, 2.0, 1.0, 2.0]), 3).kept == (3, 1, 2)


def test_top_k_pins_first_and_always_kept():
    scores = torch.tensor([0.0, 0.9, 0.8, 0.1, 0.7])
    pinned = [True, False, False, True, False]
    assert top_k(scores, 3, pinned, None).kept == (3, 0, 1)
    # k smaller than the number of pinned frames: all pins are still kept
    assert top_k(scores, 0, pinned, None).kept == (3, 0)
    assert top_k(scores, 1, pinned, None).kept == (3, 0)


def test_top_k_excludes_never_kept_and_wins_over_pin():
    scores = torch.tensor([5.0, 4.0, 3.0, 2.0])
    excluded = [True, False, False, False]
    assert top_k(scores, 2, None, excluded).kept == (1, 2)
    assert top_k(scores, 2, [True, False, False, False], excluded).kept == (1, 2)


def test_top_k_clamps_to_selectable():
    sel = top_k(torch.arange(4.0), 10, None, [False, True, False, False])
    assert sel.kept == (3, 2, 0)
    assert top_k(torch.arange(0.0), 3).kept == ()


@pytest.mark.parametrize("k", [-1, 2.5, True, "3"])
def test_top_k_rejects_bad_k(k):
    with pytest.raises(OneStoryError, match="k="):
        top_k(torch.zeros(3), k)


def test_top_k_input_errors():
    with pytest.raises(OneStoryError, match="NaN"):
        top_k(torch.tensor([0.0, float("nan")]), 1)
    with pytest.raises(ShapeError, match="pinned has 2 entries"):
        top_k(torch.zeros(3), 1, [True, False])
    with pytest.raises(ShapeError, match="excluded"):
        top_k(torch.zeros(3), 1, None, [True])
    with pytest.raises(ShapeError, match="scores"):
        top_k(torch.zeros(2, 3), 1)


def test_top_k_detaches_scores():
    s = torch.tensor([0.3, 0.2], requires_grad=True)
    sel = top_k(s * 2, 1)
    assert not sel.scores.requires_grad and sel.kept == (0,)


def test_selection_json_round_trip():
    sel = top_k(torch.tensor([0.25, -1.0, 3.5]), 2, [False, True, False], None, "novelty")
    data = json.loads(json.dumps(sel.to_json()))
    assert data == {"scorer": "novelty", "num_frames": 3, "kept": [1, 2],
                    "scores": [0.25, -1.0, 3.5]}
    back = Selection.from_json(data)
    assert back.kept == sel.kept and torch.equal(back.scores, sel.scores)
    with pytest.raises(OneStoryError, match="kept"):
        Selection(torch.zeros(3), (0, 3), "recency")
    with pytest.raises(OneStoryError):
        Selection.from_json({"kept": [0]})


# ---------------------------------------------------------------- training-free scorers


def test_recency_keeps_last_k_newest_first():
    bank = random_bank(shots=3, t=4)
    assert select(bank, 5, "recency").kept == (11, 10, 9, 8, 7)


def test_sink_recent_keeps_first_shot_and_latest():
    bank = random_bank(shots=3, t=3)         # frames 0-2 shot 0, 3-5 shot 1, 6-8 shot 2
    assert select(bank, 2, "sink_recent").kept == (8, 0)
    # sink frames are spread over the first shot: first, last, ...
    assert select(bank, 4, "sink_recent").kept == (8, 0, 7, 2)
    assert select(bank, 6, "sink_recent").kept == (8, 0, 7, 2, 6, 1)
    # with one shot only, the "recent" end and the sink are both in shot 0
    assert select(random_bank(shots=1, t=5), 3, "sink_recent").kept == (4, 0, 3)


def test_novelty_picks_odd_frame_first_among_duplicates():
    for odd in (0, 2, 4):
        values = [0.0] * 5
        values[odd] = 3.0
        sel = select(bank_from_values([values]), 2, "novelty")
        assert sel.kept[0] == odd
        # then the frame farthest from it: all duplicates tie -> the latest one
        assert sel.kept[1] == max(i for i in range(5) if i != odd)


def test_novelty_duplicates_are_exact_ties_in_a_large_bank():
    # A larger bank (cdist switches algorithms above 25 rows): duplicates must still tie exactly,
    # so the odd frame leads and the tie-break (later frame first) orders the rest.
    base = torch.randn(C, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 3.0 + 0.5
    x = base.expand(C, 60, 8, 8).clone()
    x[:, 17] += 1.0
    bank = MemoryBank.empty().add_shot(x, "many duplicates")
    assert select(bank, 30, "novelty").kept == (17,) + tuple(range(59, 30, -1))


def test_novelty_is_greedy_farthest_point_on_a_line():
    # values 0..4: 0 and 4 have the largest summed distance (tie -> later: 4); then 0; then 2;
    # then 1 and 3 tie at distance 1 -> later first.
    assert select(bank_from_values([[0, 1, 2, 3, 4]]), 5, "novelty").kept == (4, 0, 2, 3, 1)


def _greedy_reference(frames, pinned, excluded):
    emb = F.adaptive_avg_pool2d(frames.double(), (4, 4)).flatten(1)
    n = emb.shape[0]
    dist = [[float((emb[i] - emb[j]).norm()) for j in range(n)] for i in range(n)]
    cand = [i for i in range(n) if not excluded[i] and not pinned[i]]
    chosen = [i for i in range(n) if pinned[i] and not excluded[i]]
    if not chosen:
        first = max(cand, key=lambda i: (sum(dist[i][j] for j in cand), i))
        chosen.append(first)
        cand.remove(first)
    out = []
    while cand:
        nxt = max(cand, key=lambda i: (min(dist[i][j] for j in chosen), i))
        chosen.append(nxt)
        out.append(nxt)
        cand.remove(nxt)
    return chosen, out


@pytest.mark.parametrize("pin", [None, 5])
def test_novelty_matches_reference_greedy_with_pins_and_excludes(pin):
    bank = random_bank(shots=3, t=4, seed=3)
    bank = bank.set_excluded([2, 7])
    if pin is not None:
        bank = bank.set_pinned([pin])
    chosen, _ = _greedy_reference(bank.frames, bank.pinned, bank.excluded)
    sel = select(bank, 12, "novelty")
    assert sel.kept == tuple(chosen)
    assert 2 not in sel.kept and 7 not in sel.kept
    # top_k of the same scores reproduces every prefix of the greedy order
    for k in (1, 3, 6):
        assert select(bank, k, "novelty").kept == tuple(chosen[:max(k, int(pin is not None))])


def test_novelty_uses_model_space():
    # channel 0 differs a lot in bank space but is divided by a huge std in model space
    bank = MemoryBank.empty()
    x = torch.zeros(C, 3, 4, 4)
    x[0, 0] = 100.0            # frame 0 odd in channel 0 (bank space)
    x[1, 1] = 1.0              # frame 1 odd in channel 1
    bank = bank.add_shot(x, "s")
    assert select(bank, 1, "novelty").kept == (0,)
    norm = LatentNormalization((0.0,) * C, (1e4, 1.0, 1.0, 1.0))
    assert select(bank, 1, "novelty", normalization=norm).kept == (1,)


def test_uniform_is_evenly_spaced():
    bank = random_bank(shots=3, t=3)         # 9 frames
    assert sorted(select(bank, 3, "uniform").kept) == [1, 4, 7]
    assert select(bank, 3, "uniform").kept == (7, 4, 1)
    assert sorted(select(bank, 1, "uniform").kept) == [4]
    assert sorted(select(bank, 9, "uniform").kept) == list(range(9))
    # spacing is over the frames that can be kept
    ex = bank.set_excluded([0, 1, 2])         # 6 usable frames 3..8 -> bins of 2 -> 4, 6, 8
    assert sorted(select(ex, 3, "uniform").kept) == [4, 6, 8]
    # without k: a nested spread order (first, last, middle, ...)
    scores = score_frames(bank, "uniform")
    assert top_k(scores, 3).kept == (0, 8, 4)


def test_select_honours_bank_pins_and_excludes():
    bank = random_bank(shots=3, t=4).set_pinned([1]).set_excluded([11, 10])
    for scorer in ("recency", "sink_recent", "uniform", "novelty"):
        sel = select(bank, 3, scorer)
        assert sel.kept[0] == 1, scorer
        assert 11 not in sel.kept and 10 not in sel.kept, scorer
        assert len(sel.kept) == 3 and sel.scorer == scorer
        assert torch.isfinite(sel.scores).all() and sel.scores.shape == (12,)
    assert select(bank, 3, "recency").kept == (1, 9, 8)


def test_select_errors():
    with pytest.raises(OneStoryError, match="memory bank is empty"):
        select(MemoryBank.empty(), 3, "recency")
    bank = random_bank()
    with pytest.raises(OneStoryError, match="scorer='best'"):
        select(bank, 3, "best")
    with pytest.raises(OneStoryError, match="FrameSelector"):
        select(bank, 3, "learned", text=torch.randn(5, DT))
    with pytest.raises(OneStoryError, match="caption tokens"):
        select(bank, 3, "learned", selector=tiny_selector())
    with pytest.raises(OneStoryError, match="k=-2"):
        select(bank, -2, "uniform")
    with pytest.raises(ShapeError, match="text"):
        select(bank, 3, "learned", text=torch.randn(2, 5, DT), selector=tiny_selector())


def test_learned_scorer_runs_selector_in_model_space():
    bank = random_bank(shots=2, t=3)
    selector = tiny_selector()
    text = torch.randn(7, DT)
    norm = LatentNormalization((0.1, 0.2, 0.3, 0.4), (1.0, 2.0, 3.0, 4.0))
    sel = select(bank, 2, "learned", text=text, selector=selector, normalization=norm)
    with torch.no_grad():
        ref = selector(norm.to_model(bank.frames, channel_dim=1)[None], text[None])[0]
    torch.testing.assert_close(sel.scores, ref)
    assert sel.kept == top_k(ref, 2).kept
    # "1 l d_t" is accepted too
    sel2 = select(bank, 2, "learned", text=text[None], selector=selector, normalization=norm)
    assert torch.equal(sel2.scores, sel.scores)


# ---------------------------------------------------------------- FrameSelector


@pytest.mark.parametrize("h, w", [(6, 6), (5, 7), (1, 3)])
def test_selector_output_shape(h, w):
    sel = tiny_selector()
    scores = sel(torch.randn(2, 5, C, h, w), torch.randn(2, 3, DT))
    assert scores.shape == (2, 5) and torch.isfinite(scores).all()


def test_selector_defaults_match_contract():
    s = FrameSelector()
    assert s.config() == {"latent_channels": 16, "text_dim": 4096, "width": 1024,
                          "num_queries": 16, "heads": 8, "spatial_stride": 8, "max_shots": 0}
    assert s.queries.shape == (16, 1024)
    assert s.memory_proj.kernel_size == (8, 8) and s.memory_proj.stride == (8, 8)


def test_selector_scores_depend_on_caption_and_frames():
    sel = tiny_selector()
    mem = torch.randn(1, 4, C, 6, 6)
    a = sel(mem, torch.randn(1, 3, DT))
    b = sel(mem, torch.randn(1, 3, DT))
    assert not torch.allclose(a, b)
    # frame scores follow the frames: permuting memory permutes the scores
    perm = torch.tensor([2, 0, 3, 1])
    text = torch.randn(1, 3, DT)
    torch.testing.assert_close(sel(mem[:, perm], text), sel(mem, text)[:, perm],
                               rtol=1e-5, atol=1e-6)


def test_padded_text_tokens_do_not_change_scores():
    sel = tiny_selector()
    mem = torch.randn(2, 3, C, 6, 6)
    text = torch.randn(2, 4, DT)
    ref = sel(mem, text)
    padded = torch.cat([text, 100 * torch.randn(2, 5, DT)], dim=1)
    mask = torch.zeros(2, 9, dtype=torch.bool)
    mask[:, :4] = True
    torch.testing.assert_close(sel(mem, padded, text_mask=mask), ref, rtol=1e-5, atol=1e-6)
    # without the mask the padding does change them (so the test above can fail)
    assert not torch.allclose(sel(mem, padded), ref, atol=1e-4)


def test_padded_frames_do_not_change_scores():
    sel = tiny_selector()
    mem = torch.randn(1, 3, C, 6, 6)
    text = torch.randn(1, 4, DT)
    ref = sel(mem, text)
    padded = torch.cat([mem, 50 * torch.randn(1, 2, C, 6, 6)], dim=1)
    mask = torch.tensor([[True, True, True, False, False]])
    out = sel(padded, text, frame_mask=mask)
    torch.testing.assert_close(out[:, :3], ref, rtol=1e-5, atol=1e-6)
    assert out[0, 3:].tolist() == [0.0, 0.0]
    assert not torch.allclose(sel(padded, text)[:, :3], ref, atol=1e-4)


def test_selector_input_errors_name_the_input():
    sel = tiny_selector()
    mem, text = torch.randn(1, 3, C, 6, 6), torch.randn(1, 4, DT)
    with pytest.raises(ShapeError, match=r"text \(caption tokens\) has width 7.*text_dim=12"):
        sel(mem, torch.randn(1, 4, 7))
    with pytest.raises(ShapeError, match="memory has 3 channels.*latent_channels=4"):
        sel(torch.randn(1, 3, 3, 6, 6), text)
    with pytest.raises(ShapeError, match="memory is empty"):
        sel(torch.randn(1, 0, C, 6, 6), text)
    with pytest.raises(ShapeError, match="memory has shape"):
        sel(torch.randn(3, C, 6, 6), text)
    with pytest.raises(ShapeError, match="text has batch"):
        sel(mem, torch.randn(2, 4, DT))
    with pytest.raises(ShapeError, match="text_mask"):
        sel(mem, text, text_mask=torch.ones(1, 3, dtype=torch.bool))
    with pytest.raises(OneStoryError, match="text_mask masks every token"):
        sel(mem, text, text_mask=torch.zeros(1, 4, dtype=torch.bool))
    with pytest.raises(OneStoryError, match="frame_mask"):
        sel(mem, text, frame_mask=torch.zeros(1, 3, dtype=torch.bool))
    with pytest.raises(OneStoryError, match="width=10.*heads=4"):
        FrameSelector(C, DT, width=10, heads=4)


def test_generation_loss_gives_no_gradient_to_selector_but_l_sel_does():
    torch.manual_seed(0)
    selector = tiny_selector()
    cond = AdaptiveConditioner(C, 8)
    memory = torch.randn(1, 6, C, 8, 8)
    text = torch.randn(1, 5, DT)

    scores = selector(memory, text)
    assert scores.requires_grad
    sel = top_k(scores[0], 3, scorer="learned")
    kept = list(sel.kept)
    tiers = solve_budget(len(kept), cond.kernels, 8, 8, 1.0)
    ctx = cond(memory[0, kept], kept, [float(i) for i in kept], tiers)
    generation_loss = ctx.tokens.square().mean()
    generation_loss.backward(retain_graph=False)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in cond.parameters())
    for name, p in selector.named_parameters():
        assert p.grad is None or not p.grad.any(), name

    # L_sel (MSE on the averaged scores) trains every selector parameter
    y = torch.tensor([[0.5, -1.0, 0.0, 0.9, 0.2, 0.1]])
    l_sel = F.mse_loss(selector(memory, text), y)
    l_sel.backward()
    for name, p in selector.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


# ---------------------------------------------------------------- encodings and scoring a bank


def fresh_scores(selector, bank, text, norm=None):
    """The reference: forward on the whole bank in model space."""
    norm = norm or LatentNormalization.identity(C)
    with torch.no_grad():
        return selector(norm.to_model(bank.frames, channel_dim=1)[None], text[None])[0]


def test_encode_then_score_equals_forward_with_masks():
    sel = tiny_selector()
    mem, text = torch.randn(2, 5, C, 5, 7), torch.randn(2, 4, DT)
    tmask = torch.tensor([[True, True, False, True], [True, False, False, False]])
    fmask = torch.tensor([[True, True, True, False, True], [True, False, True, True, True]])
    enc = sel.encode_memory(mem)
    assert enc.tokens.shape == (2, 5, 12, 16) and enc.pooled.shape == (2, 5, 16)
    torch.testing.assert_close(sel.score_encoded(enc, text, tmask, fmask),
                               sel(mem, text, text_mask=tmask, frame_mask=fmask))
    # per frame: encoding frames one at a time gives the rows of the joint encoding
    single = sel.encode_memory(mem[:, 3:4])
    torch.testing.assert_close(single.tokens[:, 0], enc.tokens[:, 3], rtol=1e-5, atol=1e-6)
    with pytest.raises(ShapeError, match="encoding has tokens"):
        sel.score_encoded(type(enc)(enc.tokens[..., :8], enc.pooled), text)
    with pytest.raises(ShapeError, match="text has batch"):
        sel.score_encoded(enc, text[:1])


def test_score_bank_input_errors_name_the_input():
    sel = tiny_selector()
    with pytest.raises(ShapeError, match=r"text \(caption tokens\) has width 7.*text_dim=12"):
        sel.score_bank(random_bank(), torch.randn(4, 7))
    other = MemoryBank.empty().add_shot(torch.randn(3, 2, 6, 6), "three channels")
    with pytest.raises(ShapeError, match="memory has 3 channels.*latent_channels=4"):
        sel.score_bank(other, torch.randn(4, DT))
