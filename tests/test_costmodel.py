"""Analytic cost model: token counts against the paper's numbers and the real budget solver."""
import itertools

import pytest

from onestory_lab.bench import costmodel as cm


def test_480p_tokens_per_latent_frame():
    assert cm.WAN21_480P.latent == (21, 60, 104)
    assert cm.tokens_per_frame(cm.DEFAULT_PATCH, 60, 104) == 1560
    assert cm.noise_tokens(cm.WAN21_14B, cm.WAN21_480P) == 21 * 1560


def test_paper_token_overheads_at_480p():
    nx = cm.noise_tokens(cm.WAN21_14B, cm.WAN21_480P)
    b1 = cm.context_tokens("onestory_b1", cm.WAN21_480P, shot=2, mode="bound")
    assert round(100 * b1 / nx, 1) == 4.8            # paper: budget 1 adds 4.8 % tokens
    solver = cm.context_tokens("onestory_b1", cm.WAN21_480P, shot=2)
    assert 0 < solver <= b1                          # the solver never exceeds the bound
    sm = cm.context_tokens("storymem10", cm.WAN21_480P, shot=2)
    assert round(100 * sm / nx) == 48                 # paper: StoryMem's 10 frames add 48 %


def test_full_history_grows_and_onestory_is_flat():
    a = cm.analyze(cm.WAN21_14B, cm.WAN21_480P)
    full = [r["context_tokens"] for r in a["methods"]["full_history"]["shots"]]
    assert full == [21 * 1560 * (s - 1) for s in range(2, 11)]
    assert a["methods"]["onestory_b1"]["flatness_ratio"] == 1.0
    assert a["methods"]["last_frame"]["shots"][0]["context_tokens"] == 1560


def test_other_geometries():
    assert cm.WAN21_720P.latent == (21, 90, 160)
    assert cm.noise_tokens(cm.WAN21_14B, cm.WAN21_720P) == 21 * 3600
    assert cm.WAN22_704P.latent == (31, 44, 80)
    assert cm.noise_tokens(cm.WAN22_5B, cm.WAN22_704P) == 31 * 880


def test_selector_conditioner_is_negligible_at_14b():
    a = cm.analyze(cm.WAN21_14B, cm.WAN21_480P)
    assert a["selector_conditioner_fraction_max"] < 0.01


def test_flops_scale_with_tokens():
    m = cm.WAN21_14B
    f0 = cm.forward_flops(m, 1000)["total"]
    f1 = cm.forward_flops(m, 1000, 100)["total"]
    assert f1 > f0
    assert cm.forward_flops(m, 1000, batch=2)["total"] == pytest.approx(2 * f0)


def test_flop_classes_sum_to_the_total_and_scale_as_named():
    m = cm.WAN21_14B
    for nc in (0, 1560, 32760):
        c = cm.flop_classes(m, 32760, nc, batch=2)
        assert sum(c.values()) == pytest.approx(cm.forward_flops(m, 32760, nc, batch=2)["total"])
    a, b = cm.flop_classes(m, 1000, 0), cm.flop_classes(m, 1000, 1000)
    assert b["fixed"] == a["fixed"]
    assert b["attention"] == pytest.approx(4 * a["attention"])
    assert b["token"] < 2 * a["token"]               # the head and patch embedding see noise tokens only


def test_step_time_model_calibration_recovers_a_known_machine():
    m = cm.ModelDims("small", dim=128, ffn_dim=352, num_heads=2, num_layers=4, text_len=16)
    truth = cm.StepTimeModel(fixed_seconds=0.02, token_flops_per_second=3e10, attention_flops_per_second=6e10)

    def measured(nc):
        attention = cm.flop_classes(m, 672, nc, batch=2)["attention"] / truth.attention_flops_per_second
        return nc, truth.seconds(m, 672, nc), attention

    fit = cm.StepTimeModel.calibrate(m, 672, [measured(0), measured(672)])
    assert fit.fixed_seconds == pytest.approx(truth.fixed_seconds)
    assert fit.token_flops_per_second == pytest.approx(truth.token_flops_per_second)
    assert fit.attention_flops_per_second == pytest.approx(truth.attention_flops_per_second)
    assert fit.seconds(m, 672, 6048) == pytest.approx(truth.seconds(m, 672, 6048))
    with pytest.raises(ValueError, match="two"):
        cm.StepTimeModel.calibrate(m, 672, [measured(0)])
    with pytest.raises(ValueError, match="differ in tokens"):
        cm.StepTimeModel.calibrate(m, 672, [measured(0), measured(0)])
    with pytest.raises(ValueError, match="attention time"):
        cm.StepTimeModel.calibrate(m, 672, [(0, 0.1, 0.2), measured(672)])
