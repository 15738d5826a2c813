from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from scipy.stats import norm as normal_dist
from torch import nn
from torch.distributions import Independent, Normal, kl_divergence

from ibmonitor.exceptions import EstimationWarning, InvalidParameterError
from ibmonitor.measures import PACBayesResult, counting, pac_bayes, pac_bayes_kl

F64 = torch.float64


def _margin_problem(n=200, a=0.2, b=6.0):
    """Every point has margin w.x = 1 and norm^2 a^2 + b^2 under w = e_1 / a.

    x_i = a e_1 + b e_{i+1}. With nu ~ N(0, sigma^2) on the weight and the bias,
    each logit moves by N(0, sigma^2 r^2), r^2 = a^2 + b^2 + 1, so the expected
    accuracy drop is Phi(-1 / (sigma r)). The points' noises share only the
    e_1 and bias terms (3% of the variance), so a few draws average well.
    """
    x = torch.zeros(n, n + 1, dtype=F64)
    x[:, 0] = a
    x[torch.arange(n), torch.arange(1, n + 1)] = b
    model = nn.Linear(n + 1, 1).double()
    with torch.no_grad():
        model.weight.zero_()
        model.weight[0, 0] = 1.0 / a
        model.bias.zero_()
    y = torch.ones(n, dtype=torch.int64)

    def loss_fn(out, target):
        return F.binary_cross_entropy_with_logits(out.squeeze(1), target.to(out.dtype))

    r = math.sqrt(a**2 + b**2 + 1)
    return model, loss_fn, x, y, r


def test_pac_bayes_sigma_is_a_standard_deviation():
    """The found sigma matches the closed form Phi(-1/(sigma r)) = target.

    A variance/std mix-up (sigma^2 used as the std) would find sqrt(sigma*),
    about 2.6x larger here.
    """
    model, loss_fn, x, y, r = _margin_problem()
    target = 0.1
    expected = 1.0 / (r * normal_dist.ppf(1 - target))
    result = pac_bayes(
        model,
        loss_fn,
        (x, y),
        target_deviation=target,
        tol=0.005,
        n_samples=40,
        max_iter=20,
    )
    assert isinstance(result, PACBayesResult)
    assert result.converged
    assert result.train_acc == 1.0
    assert result.train_acc - result.perturbed_acc == pytest.approx(target, abs=0.005)
    assert result.sigma == pytest.approx(expected, rel=0.08)
    assert result.flatness == pytest.approx(1 / result.sigma**2)


@pytest.mark.filterwarnings("ignore::ibmonitor.exceptions.EstimationWarning")
def test_pac_bayes_bound_formula(mlp_problem):
    model, loss_fn, x, y = mlp_problem
    init = copy.deepcopy(model.state_dict())
    with torch.no_grad():
        for v in init.values():
            v.mul_(0.5)
    result = pac_bayes(model, loss_fn, (x, y), init=init, n_samples=3, max_iter=6)
    w = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    w0 = torch.cat([v.reshape(-1) for v in init.values()])
    m, delta = 120, 0.05
    kl = float(((w - w0) ** 2).sum()) / (2 * result.sigma**2)
    complexity = kl + math.log(m / delta) + 10
    assert result.m == m
    assert result.kl == pytest.approx(kl, rel=1e-12)
    assert result.complexity == pytest.approx(complexity, rel=1e-12)
    assert result.bound == pytest.approx(math.sqrt(complexity / (2 * (m - 1))))
    # Without init the prior is centred at zero; n_train sets m.
    orig = pac_bayes(model, loss_fn, (x, y), n_samples=3, max_iter=6, n_train=1000)
    assert orig.m == 1000
    assert orig.kl == pytest.approx(float((w**2).sum()) / (2 * orig.sigma**2))


@pytest.mark.filterwarnings("ignore::ibmonitor.exceptions.EstimationWarning")
def test_pac_bayes_accepts_module_as_init(mlp_problem):
    model, loss_fn, x, y = mlp_problem
    twin = copy.deepcopy(model)
    result = pac_bayes(model, loss_fn, (x, y), init=twin, n_samples=2, max_iter=4)
    assert result.kl == 0.0


def test_pac_bayes_kl_magnitude_aware_matches_gaussian_kl():
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(40, generator=gen, dtype=F64)
    w0 = torch.randn(40, generator=gen, dtype=F64)
    sigma, eps = 0.3, 1e-2
    s = torch.sqrt(sigma**2 * w**2 + eps**2)
    rho2 = float((s**2).sum() + ((w - w0) ** 2).sum()) / 40

    def kl_with(rho2):
        q = Independent(Normal(w, s), 1)
        p = Independent(Normal(w0, torch.full_like(w, math.sqrt(rho2))), 1)
        return float(kl_divergence(q, p))

    value = pac_bayes_kl(w, w0, sigma, magnitude_aware=True, magnitude_eps=eps)
    assert value == pytest.approx(kl_with(rho2), rel=1e-10)
    # rho^2 is the minimiser over isotropic priors.
    assert kl_with(rho2 * 1.05) > value
    assert kl_with(rho2 * 0.95) > value
    plain = pac_bayes_kl(w, w0, sigma)
    q = Independent(Normal(w, torch.full_like(w, sigma)), 1)
    p = Independent(Normal(w0, torch.full_like(w, sigma)), 1)
    assert plain == pytest.approx(float(kl_divergence(q, p)), rel=1e-10)


@pytest.mark.filterwarnings("ignore::ibmonitor.exceptions.EstimationWarning")
def test_pac_bayes_magnitude_aware_runs(mlp_problem):
    model, loss_fn, x, y = mlp_problem
    result = pac_bayes(
        model, loss_fn, (x, y), magnitude_aware=True, n_samples=3, max_iter=8
    )
    assert result.magnitude_aware
    assert 0 < result.sigma < 2
    assert math.isfinite(result.bound)


def test_pac_bayes_warns_when_search_cannot_reach_target():
    model, loss_fn, x, y, _ = _margin_problem()
    with pytest.warns(EstimationWarning, match="did not reach target_deviation"):
        result = pac_bayes(model, loss_fn, (x, y), sigma_max=1e-3, n_samples=2)
    assert not result.converged
    assert 0 < result.sigma < 1e-3
    assert result.perturbed_acc == 1.0


@pytest.mark.filterwarnings("ignore::ibmonitor.exceptions.EstimationWarning")
def test_pac_bayes_cost_is_search_steps_times_samples(mlp_problem):
    model, loss_fn, x, y = mlp_problem
    with counting() as counts:
        result = pac_bayes(model, loss_fn, (x, y), n_samples=3, max_iter=5)
    assert counts.forward == 1 + 3 * result.n_search_steps
    assert counts.hvp == counts.grad == 0


def test_pac_bayes_needs_accuracy():
    model = nn.Linear(3, 2).double()
    x, y = torch.randn(8, 3, dtype=F64), torch.randn(8, 2, dtype=F64) * 5
    with pytest.raises(InvalidParameterError, match="needs the training accuracy"):
        pac_bayes(model, nn.MSELoss(), (x, y))


def test_pac_bayes_rejects_bad_init(mlp_problem):
    model, loss_fn, x, y = mlp_problem
    with pytest.raises(InvalidParameterError, match="lacks parameters"):
        pac_bayes(model, loss_fn, (x, y), init={"0.weight": model[0].weight})
    with pytest.raises(InvalidParameterError, match="'init' parameter"):
        pac_bayes(model, loss_fn, (x, y), init=[1, 2])
    with pytest.raises(InvalidParameterError, match="'delta' parameter"):
        pac_bayes(model, loss_fn, (x, y), delta=1.0)
