"""Tests of the batch-epoch Markov chains (fluidllm.markov).

(a) a one-token workload at b_max = 1 is a slotted single-server queue with a closed form;
(b) stationary throughput = E[A]·(1 − loss) for sarathi, orca, kfcfs (and geometric decode);
(c) the chain agrees with a per-batch Monte-Carlo written here on top of ``plan_batch``;
(d) the drift certificate proves stability below capacity and the witness instability above it,
    for the untruncated chain (more in test_drift_untruncated.py);
(e) FasterTransformer (not work-conserving) holds more requests than Sarathi on the same instance;
(f) a size benchmark (printed, never asserted); bad input raises ModelError naming the field.
"""
from __future__ import annotations

import math
import time

import numpy as np
import pytest
from scipy import stats

from fluidllm.errors import ModelError
from fluidllm.markov import (GeometricDecode, bernoulli_arrivals, build_chain, drift, drift_certificate,
                             instability_witness, poisson_arrivals, solve, stationary)
from fluidllm.model import Constant, Engine, PolicySpec
from fluidllm.sim.reference import RequestView, View, plan_batch


def engine(policy: str = "sarathi", b_max: int = 3, **kw) -> Engine:
    options = kw.pop("options", {})
    return Engine("e", b_max, Constant(1.0), policy=PolicySpec(policy, options), **kw)


SMALL = dict(prefill={1: 0.5, 2: 0.5}, decode={0: 0.5, 2: 0.5}, arrivals={0: 0.5, 1: 0.3, 2: 0.2})


# ------------------------------------------------------------------ (a) one-token queue, closed form

def test_one_token_bernoulli_is_trivial_queue():
    # v_p = 1, v_d = 0, b_max = 1: a boundary's request is served in the batch and leaves; the
    # Bernoulli(p) arrival of that batch is all that is left: Q' = (Q − 1)^+ + A with A <= 1 keeps
    # Q in {0, 1} and P(Q = 1) = p, so E[Q] = p, throughput p, latency 1 batch.
    for p in (0.1, 0.5, 0.9):
        r = solve(build_chain(engine("sarathi", 1), prefill={1: 1}, decode={0: 1}, arrivals=bernoulli_arrivals(p),
                              max_requests=5))
        assert r.n_states == 2
        assert r.mean_in_system == pytest.approx(p, abs=1e-12)
        assert r.throughput_per_batch == pytest.approx(p, abs=1e-12)
        assert r.p_empty == pytest.approx(1 - p, abs=1e-12)
        assert r.mean_latency_batches == pytest.approx(1.0, abs=1e-12)
        assert r.truncation_mass == 0.0


@pytest.mark.parametrize("policy", ["sarathi", "orca", "kfcfs", "fastertransformer", "vllm"])
def test_one_token_slotted_queue_closed_form(policy):
    # Geo^X/D/1 slotted queue: Q' = (Q − 1)^+ + A, A in {0, 1, 2} w.p. (a0, a1, a2), a = E[A] < 1.
    # Means: E[Q] = E[Q] − P(Q > 0) + a  =>  P(Q > 0) = a.
    # Squares: Q'^2 = ((Q−1)^+)^2 + 2A(Q−1)^+ + A^2 with E[((Q−1)^+)^2] = E[Q^2] − 2E[Q] + P(Q>0)
    # and A independent of Q: 0 = −2E[Q] + a + 2a(E[Q] − a) + E[A^2], so
    # E[Q] = (a − 2a^2 + E[A^2]) / (2(1 − a)); with E[A^2] = a1 + 4 a2 = a + 2 a2:
    # E[Q] = a + a2 / (1 − a). Here a = 0.6, a2 = 0.2: E[Q] = 1.1, latency E[Q]/a = 11/6 batches.
    # Tail: π_n ~ 3^(−n) (root z = 3 of z = A(z)), so max_requests = 40 makes truncation ~1e-19.
    a0, a1, a2 = 0.6, 0.2, 0.2
    a = a1 + 2 * a2
    r = solve(build_chain(engine(policy, 1), prefill={1: 1}, decode={0: 1}, arrivals={0: a0, 1: a1, 2: a2},
                          max_requests=40))
    assert r.mean_in_system == pytest.approx(a + a2 / (1 - a), abs=1e-9)
    assert r.p_empty == pytest.approx(1 - a, abs=1e-9)
    assert r.mean_latency_batches == pytest.approx((a + a2 / (1 - a)) / a, abs=1e-9)
    assert r.truncation_mass < 1e-15
    assert r.residual < 1e-12


# --------------------------------------------------------------- (b) throughput = E[A] (1 − loss)

@pytest.mark.parametrize("policy", ["sarathi", "orca", "kfcfs"])
def test_throughput_equals_accepted_arrivals(policy):
    chain = build_chain(engine(policy, 3), max_requests=5, **SMALL)
    r = solve(chain)
    assert r.throughput_per_batch == pytest.approx(r.arrival_rate_per_batch * (1 - r.loss_fraction), abs=1e-10)
    assert 0 < r.truncation_mass < 0.02 and 0 < r.loss_fraction < 0.05
    # Token balance: tokens served per batch = accepted arrival tokens per batch.
    assert r.mean_batch_tokens == pytest.approx(chain.mean_request_tokens * r.throughput_per_batch, abs=1e-10)
    # Direct and iterative solves agree.
    assert np.allclose(stationary(chain, "direct"), stationary(chain, "gmres"), atol=1e-10)
    d = r.to_dict()
    assert d["n_states"] == chain.n_states and "pi" not in d


def test_geometric_decode_throughput_and_tokens():
    chain = build_chain(engine("sarathi", 2), prefill={1: 0.5, 2: 0.5}, decode=GeometricDecode(0.5),
                        arrivals=bernoulli_arrivals(0.4), max_requests=8)
    r = solve(chain)
    assert all(d in (0, 1) for s in chain.states for _, d in s)
    assert chain.mean_request_tokens == pytest.approx(1.5 + 2.0)
    assert r.throughput_per_batch == pytest.approx(0.4 * (1 - r.loss_fraction), abs=1e-10)
    assert r.mean_batch_tokens == pytest.approx(3.5 * r.throughput_per_batch, abs=1e-10)


def test_poisson_arrivals_pmf():
    pmf = poisson_arrivals(0.5, tail=1e-9)
    assert sum(pmf.values()) == pytest.approx(1.0)
    assert sum(k * v for k, v in pmf.items()) == pytest.approx(0.5, abs=1e-8)


# ---------------------------------------------------------- (c) chain vs a per-batch Monte-Carlo

def monte_carlo_mean_in_system(eng: Engine, prefill, decode, arrivals, max_requests, steps, seed, n_means=50):
    """Per-batch simulation of the chain's model with plan_batch; batch-means of the number of
    requests in system at boundaries. Returns (mean, half-width of the 99.9 % t-interval)."""
    rng = np.random.default_rng(seed)
    pv, pp = zip(*prefill.items())
    dv, dp = zip(*decode.items())
    av, ap = zip(*arrivals.items())
    A = rng.choice(av, size=steps, p=ap)
    Vp = rng.choice(pv, size=(steps, max(av)), p=pp)
    Vd = rng.choice(dv, size=(steps, max(av)), p=dp)
    system: list[list[int]] = []
    counts = np.empty(steps)
    for n in range(steps):
        counts[n] = len(system)
        view = View(eng.token_budget, tuple(RequestView(j, p, d, 0, j) for j, (p, d) in enumerate(system)),
                    eng.max_batch_requests)
        plan = plan_batch(eng.policy, view)
        for j, (tp, td) in plan.items():
            system[j][0] -= tp
            system[j][1] -= td
        system = [r for r in system if r[0] + r[1] > 0]
        for k in range(int(A[n])):
            if len(system) < max_requests:
                system.append([int(Vp[n, k]), int(Vd[n, k])])
    burn = steps // 20
    means = counts[burn:][: (steps - burn) // n_means * n_means].reshape(n_means, -1).mean(axis=1)
    half = stats.t.ppf(0.9995, n_means - 1) * means.std(ddof=1) / math.sqrt(n_means)
    return float(means.mean()), float(half)


@pytest.mark.parametrize("policy,b_max,laws,max_requests", [
    ("sarathi", 3, SMALL, 5),
    ("orca", 2, dict(prefill={1: 0.7, 3: 0.3}, decode={1: 1.0}, arrivals={0: 0.65, 1: 0.35}), 6),
    ("fastertransformer", 3, dict(prefill={1: 0.5, 2: 0.5}, decode={1: 0.5, 2: 0.5}, arrivals={0: 0.7, 1: 0.3}), 6),
])
def test_chain_matches_per_batch_monte_carlo(policy, b_max, laws, max_requests):
    eng = engine(policy, b_max)
    r = solve(build_chain(eng, max_requests=max_requests, **laws))
    mean, half = monte_carlo_mean_in_system(eng, laws["prefill"], laws["decode"], laws["arrivals"], max_requests,
                                            steps=60_000, seed=7)
    assert abs(mean - r.mean_in_system) <= half, (mean, half, r.mean_in_system)


# ------------------------------------------------------------- (d) drift certificate and witness

@pytest.mark.parametrize("policy", ["sarathi", "orca", "kfcfs"])
def test_drift_certificate_below_capacity(policy):
    chain = build_chain(engine(policy, 3), max_requests=6, **SMALL)
    assert chain.arrival_tokens_per_step == pytest.approx(1.75)        # < b_max = 3
    cert = drift_certificate(chain)
    assert cert.certified and cert.scope == "untruncated" and cert.argument == "work-conserving"
    assert cert.drift_bound == pytest.approx(1.75 - 3)                 # exact, beyond 3 requests
    assert cert.truncated_holds                                          # the truncated check agrees
    assert cert.level < cert.boundary_min_v and cert.n_outside > 0
    assert cert.max_drift_outside <= -cert.eps
    # Where the batch is full and nothing is lost, the drift is exactly E[A]E[v] − b_max.
    full = (chain.batch_tokens == 3) & (chain.loss_prob == 0)
    assert np.allclose(cert.drift[full], 1.75 - 3)
    # Untruncated drift on the boundary: a full batch there gives exactly 1.75 − 3 as well.
    assert cert.boundary_max_drift_untruncated == pytest.approx(1.75 - 3)
    assert not instability_witness(chain).flagged
    assert set(cert.to_dict()) >= {"certified", "level", "max_drift_outside"}


def test_instability_witness_above_capacity():
    laws = dict(SMALL, arrivals={0: 0.2, 1: 0.4, 2: 0.4})                 # 1.2 · 2.5 = 3 tokens per batch
    chain = build_chain(engine("sarathi", 2), max_requests=5, **laws)     # > b_max = 2
    cert = drift_certificate(chain)
    assert not cert.certified
    w = instability_witness(chain)
    assert w.flagged and w.scope == "untruncated" and w.argument == "budget bound"   # Thm 2(a)
    assert w.truncated_flagged and w.depth > 0 and w.n_states_in_set > 0            # truncated evidence
    assert w.min_drift_in_set >= 3 - 2 - 1e-12                           # Δ >= E[A]E[v] − b_max = 1
    assert w.max_one_step_fall <= 2                                      # V falls by at most b_max
    assert w.truncation_mass > 0.1                                       # the truncation holds the mass
    assert w.to_dict()["flagged"] is True


def test_custom_lyapunov_function():
    chain = build_chain(engine("sarathi", 3), max_requests=4, **SMALL)
    d1 = drift(chain)
    d2 = drift(chain, lambda s: sum(p + d for p, d in s))
    assert np.allclose(d1, d2)
    assert np.allclose(drift(chain, np.zeros(chain.n_states)), 0)


# ------------------------------------------------------------------- (e) FT is not work-conserving

def test_fastertransformer_holds_more_than_sarathi():
    laws = dict(prefill={1: 0.5, 2: 0.5}, decode={1: 0.5, 2: 0.5}, arrivals={0: 0.6, 1: 0.4})
    ft = solve(build_chain(engine("fastertransformer", 3), max_requests=6, **laws))
    sa = solve(build_chain(engine("sarathi", 3), max_requests=6, **laws))
    assert ft.mean_in_system > sa.mean_in_system + 0.1
    assert ft.mean_latency_batches > sa.mean_latency_batches
    assert sa.full_batch_fraction >= 0 and ft.truncation_mass > sa.truncation_mass


# ------------------------------------------------------------------------------ (f) size benchmark

def test_benchmark_largest_chain_in_a_few_seconds(capsys):
    # Grow the truncation until a build + solve takes over ~1 s; print the sizes (no time assert).
    rows = []
    for m in range(3, 12):
        chain = build_chain(engine("sarathi", 3), max_requests=m, **SMALL)
        r = solve(chain)
        rows.append((m, chain.n_states, chain.P.nnz, r.build_seconds, r.solve_seconds, r.truncation_mass))
        if r.build_seconds + r.solve_seconds > 1.0:
            break
    with capsys.disabled():
        for m, n, nnz, b, s, t in rows:
            print(f"\nmarkov sarathi b_max=3 max_requests={m}: {n} states, {nnz} transitions, "
                  f"build {b:.3f} s, solve {s:.3f} s, truncation mass {t:.2e}", end="")
        print()
    assert rows[-1][1] > rows[0][1]


# --------------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("kwargs,field", [
    (dict(prefill={0: 1.0}), "prefill[0]"),
    (dict(prefill={1: 0.5}), "prefill"),
    (dict(decode={-1: 1.0}), "decode[-1]"),
    (dict(decode="x"), "decode"),
    (dict(arrivals={0: 0.5, 1: 0.6}), "arrivals"),
    (dict(arrivals={0: float("nan"), 1: 1.0}), "arrivals[0]"),
    (dict(max_requests=0), "max_requests"),
    (dict(max_states=50), "max_states"),
])
def test_bad_input_names_field(kwargs, field):
    args = dict(SMALL, max_requests=4)
    args.update(kwargs)
    with pytest.raises(ModelError) as e:
        build_chain(engine("sarathi", 3), **args)
    assert e.value.field == field


def test_bad_engine_and_laws():
    with pytest.raises(ModelError) as e:
        build_chain(engine("vllm-v1", 3), max_requests=3, **SMALL)
    assert e.value.field == "engines.e.policy"
    with pytest.raises(ModelError) as e:
        build_chain(engine("sarathi", 3, kv_capacity_tokens=10), max_requests=3, **SMALL)
    assert e.value.field == "engines.e.kv_capacity_tokens"
    with pytest.raises(ModelError) as e:
        build_chain(engine("fastertransformer", 1), max_requests=3, **SMALL)   # prompt of 2 > b_max = 1
    assert e.value.field == "prefill"
    build_chain(engine("fastertransformer", 1, options={"split_long_prompts": True}), max_requests=2, **SMALL)
    with pytest.raises(ModelError) as e:
        GeometricDecode(0.0)
    assert e.value.field == "decode.q"
    with pytest.raises(ModelError) as e:
        bernoulli_arrivals(1.5)
    assert e.value.field == "arrivals.p"
    chain = build_chain(engine("sarathi", 3), max_requests=3, **SMALL)
    with pytest.raises(ModelError) as e:
        drift_certificate(chain, eps=-1)
    assert e.value.field == "eps"
    with pytest.raises(ModelError) as e:
        drift(chain, np.zeros(2))
    assert e.value.field == "V"
    with pytest.raises(ModelError) as e:
        solve(chain, method="lu")
    assert e.value.field == "method"
    with pytest.raises(ModelError) as e:
        solve("chain")
    assert e.value.field == "chain"


def test_resident_cap_limits_the_view():
    # max_resident_requests = 1: only the oldest request is visible, so at most one gets tokens.
    chain = build_chain(engine("sarathi", 3, max_resident_requests=1), max_requests=4, **SMALL)
    assert chain.batch_tokens.max() <= 2
    free = solve(build_chain(engine("sarathi", 3), max_requests=4, **SMALL))
    assert solve(chain).mean_in_system > free.mean_in_system
    assert time.perf_counter() > 0
