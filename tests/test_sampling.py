import pytest
import torch

from onestory.errors import Interrupted, OneStoryError
from onestory.sampling import cfg_velocity, sample, wan_sigmas


def test_wan_sigmas_formula_and_endpoints():
    s = wan_sigmas(4, shift=3.0)
    assert s.shape == (5,)
    assert s[0].item() == 1.0 and s[-1].item() == 0.0
    assert torch.all(s[1:] < s[:-1])
    t = 0.5  # sigma = shift·t / (1 + (shift−1)·t) = 1.5 / 2
    assert s[2].item() == pytest.approx(0.75)
    assert torch.allclose(wan_sigmas(4, shift=1.0), torch.linspace(1, 0, 5))
    with pytest.raises(OneStoryError, match="steps"):
        wan_sigmas(0, 3.0)


def point_mass_velocity(x0):
    # For data concentrated at x0 the exact velocity is (x − x0)/σ: straight trajectories.
    return lambda x, sigma: (x - x0) / sigma.view(-1, 1, 1, 1, 1)


@pytest.mark.parametrize("solver", ["euler", "heun"])
def test_straight_flow_is_integrated_exactly(solver):
    x0 = torch.randn(1, 4, 2, 3, 3)
    noise = torch.randn_like(x0)
    out = sample(point_mass_velocity(x0), noise, wan_sigmas(3, 5.0), solver=solver)
    assert torch.allclose(out, x0, atol=1e-5)


def gaussian_velocity(s2):
    # Data ~ N(0, s2): E[x0 | x_σ] = (1−σ)s2 / ((1−σ)²s2 + σ²) · x; v = (x − E[x0|x]) / σ.
    def v(x, sigma):
        sg = sigma.view(-1, 1, 1, 1, 1)
        x0 = (1 - sg) * s2 / ((1 - sg) ** 2 * s2 + sg ** 2) * x
        return (x - x0) / sg
    return v


def test_heun_is_second_order_and_euler_first_order():
    s2 = 0.3  # the exact ODE maps noise ε at σ=1 to sqrt(s2)·ε at σ=0
    noise = torch.randn(1, 2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    exact = noise * s2 ** 0.5

    def err(solver, steps):
        return (sample(gaussian_velocity(s2), noise, wan_sigmas(steps, 1.0), solver=solver) - exact).abs().max()

    # Doubling the steps halves a first-order error and quarters a second-order one.
    assert 1.7 < err("euler", 8) / err("euler", 16) < 2.3
    assert 3.4 < err("heun", 8) / err("heun", 16) < 4.6
    assert err("heun", 8) < err("euler", 8)


def test_callback_and_interrupt():
    x0 = torch.zeros(1, 1, 1, 2, 2)
    seen = []
    sample(point_mass_velocity(x0), torch.ones_like(x0), wan_sigmas(5, 3.0), callback=lambda i: seen.append(i.step))
    assert seen == [0, 1, 2, 3, 4]

    calls = []

    def v(x, s):
        calls.append(1)
        return x

    stop_after = iter([False, False, True])
    with pytest.raises(Interrupted):
        sample(v, torch.ones_like(x0), wan_sigmas(5, 3.0), should_stop=lambda: next(stop_after))
    assert len(calls) == 2


class RecordingModel:
    """Velocity = mean of text features + number of context tokens; records calls."""

    def __init__(self):
        self.calls = []

    def __call__(self, x, t, context, clip_fea=None, ctx_tokens=None, ctx_positions=None):
        n = 0 if ctx_tokens is None else ctx_tokens.shape[-2]
        self.calls.append((x.shape[0], n))
        return torch.ones_like(x) * context.mean(dim=(1, 2)).view(-1, 1, 1, 1, 1) + n


def test_cfg_combines_branches_and_context_placement():
    x = torch.zeros(1, 2, 1, 2, 2)
    cond, uncond = torch.full((1, 3, 4), 2.0), torch.zeros(1, 5, 4)  # different lengths get zero-padded
    tokens, pos = torch.zeros(7, 8), torch.zeros(7, 3)
    m = RecordingModel()
    v = cfg_velocity(m, cond=cond, uncond=uncond, scale=3.0, ctx_tokens=tokens, ctx_positions=pos)(x, torch.ones(1))
    # padded cond mean = 2·3/5 = 1.2; both branches see 7 context tokens: v = 7 + 3·1.2
    assert torch.allclose(v, torch.full_like(x, 7 + 3 * 1.2))
    assert m.calls == [(2, 7)]  # one batched call

    m = RecordingModel()
    v = cfg_velocity(m, cond=cond, uncond=uncond, scale=3.0, ctx_tokens=tokens, ctx_positions=pos,
                     context_in_negative=False)(x, torch.ones(1))
    assert m.calls == [(1, 7), (1, 0)]
    assert torch.allclose(v, torch.full_like(x, 0 + 3 * (1.2 + 7)))

    with pytest.raises(OneStoryError, match="negative"):
        cfg_velocity(m, cond=cond, uncond=None, scale=2.0)
