"""Length-law fitting against theory: MLE identities, asymptotic CIs, DKW bounds (fixed seeds)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from fluidllm.errors import ModelError
from fluidllm.model.fit_lengths import fit_geometric, fit_lengths, fit_lognormal, fit_trace
from fluidllm.model.lengths import Geometric, Lognormal

N = 4000


def test_geometric_mle_mean_is_sample_mean() -> None:
    v = Geometric(50.0, min=3).sample(np.random.default_rng(1), N)
    f = fit_geometric(v)
    assert f.law.mean == pytest.approx(v.mean(), rel=1e-12)
    assert f.law.min_value == v.min()


def test_lognormal_recovers_parameters_within_ci() -> None:
    # MLE asymptotics: sd(mu_hat) = sigma/sqrt(n), sd(sigma_hat) = sigma/sqrt(2n); discretisation
    # (ceil) is modelled exactly in the likelihood. 4 sd two-sided: error rate ~6e-5 per parameter.
    true = Lognormal(300.0, 0.8)
    v = true.sample(np.random.default_rng(2), N)
    law = fit_lognormal(v).law
    assert abs(law.mu - true.mu) < 4 * true.sigma / math.sqrt(N)
    assert abs(law.sigma - true.sigma) < 4 * true.sigma / math.sqrt(2 * N)


@pytest.mark.parametrize("law,expected", [(Lognormal(300.0, 0.8), "lognormal"),
                                          (Geometric(300.0, min=1), "geometric")])
def test_bic_picks_the_generating_family(law, expected) -> None:
    # With n = 4000 the log-likelihood gap between these families grows ~ n; a wrong pick has
    # probability far below 1e-6 for these shapes.
    rep = fit_lengths(law.sample(np.random.default_rng(3), N))
    assert rep.best == expected


def test_ks_of_true_family_within_dkw_bound_and_empirical_zero() -> None:
    # DKW: P(sup|F_n - F| > eps) <= 2 exp(-2 n eps^2); eps at alpha = 1e-3. The fitted law is
    # closer to F_n than the true law is only on average, so allow twice the bound.
    v = Lognormal(120.0, 0.6).sample(np.random.default_rng(4), N)
    rep = fit_lengths(v)
    eps = math.sqrt(math.log(2 / 1e-3) / (2 * N))
    assert rep.fit("lognormal").ks < 2 * eps
    assert rep.fit("empirical").ks < 1e-12  # cumsum round-off only
    assert rep.fit("empirical").loglik >= rep.fit("lognormal").loglik


def test_spearman_independent_and_dependent() -> None:
    rng = np.random.default_rng(5)
    p = Lognormal(500.0, 1.0).sample(rng, N)
    d = Lognormal(100.0, 1.0).sample(rng, N)
    # Independent: rho ~ N(0, 1/(n-1)); 4 sd bound, error rate ~6e-5.
    assert abs(fit_trace(p, d).spearman) < 4 / math.sqrt(N - 1)
    dep = fit_trace(p, np.maximum(p // 5, 1))
    assert dep.spearman > 0.99 and dep.spearman_p < 1e-10


def test_vendored_trace_fits_are_json_and_consistent() -> None:
    import json

    from fluidllm.model.traces import load_trace

    t = load_trace(dataset="azure-code-2023")
    f = fit_trace(t.prefill, t.decode)
    assert f.prefill.fit("geometric").law.mean == pytest.approx(t.prefill.mean(), rel=1e-12)
    json.dumps(f.to_dict())


@pytest.mark.parametrize("values,criterion", [([5], "bic"), ([0, 3], "bic"), ([1.5, 2], "bic"),
                                              ([1, 2, 3], "chi2")])
def test_bad_input_raises(values, criterion) -> None:
    with pytest.raises(ModelError):
        fit_lengths(values, criterion)


def test_mismatched_columns_raise() -> None:
    with pytest.raises(ModelError, match="decode"):
        fit_trace([1, 2, 3], [1, 2])
