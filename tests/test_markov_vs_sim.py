"""Cross-check: the vectorized simulator (:func:`fluidllm.simulate`) against the exact batch-epoch
Markov chain (:mod:`fluidllm.markov`), for every policy the chain supports.

Making the simulator run the chain's model exactly
--------------------------------------------------
The chain (``fluidllm/markov/chain.py``) is slotted: at boundary n the state X_n is the FCFS list
of requests, the policy plans one batch, the batch's completions leave at its end, then A_{n+1}
i.i.d. arrivals join at the tail, giving X_{n+1}; an empty system takes an idle step of one slot.
The simulator is run on the same model:

* the engine's batch time is ``Constant(T_MS)``: every batch, whatever its tokens, lasts T_MS, and
  the chain's idle step (``idle_step_ms`` = the time of a one-token batch) lasts T_MS too;
* A_n requests arrive at the instant n·T_MS, n = 0..N−1, A_n drawn from the chain's per-step pmf,
  v_p from its prefill pmf and v_d from its decode pmf (``GeometricDecode(q)``: v_d ~ Geometric(q)
  on {1, 2, ...}; the chain's phase flag is exact for it because the policies only look at
  whether decode tokens are left, and every decode token ends the request with probability q);
  the requests are replayed with ``simulate(model, requests=...)``;
* an arrival exactly at a batch boundary is eligible at that boundary (``reference.py`` and
  ``core.py`` advance the eligibility pointer over arrival times ``<= t`` before planning), so the
  arrivals at n·T_MS join after the completions of the batch ending there and before the next batch
  is planned: the chain's order. An idle engine jumps to the next arrival, which is on the grid,
  exactly as the chain's run of idle steps; so every boundary stays on the grid;
* the horizon is H = N·T_MS: the run stops at the first boundary >= H, which is H itself (busy or
  idle), so ``end_ms`` = H in every replication.

The number in system N(s) (arrivals counted from their instant, completions at the end of their
batch) is then constant on each slot [k·T_MS, (k+1)·T_MS) and equals the size of the state at that
boundary *after* its arrivals and *before* its batch, which is exactly the epoch of
``ChainResult.mean_in_system`` (E_π|X_n|, X_n as above). A replication starts empty; the chain
started at X_0 = () takes an idle first step that brings A arrivals, which our A_0 at time 0 plays,
so the simulator's slot k (k = 0..N−1) has the law of X_{k+1}, μ_{k+1} = δ_() P^{k+1}. Hence:

* ``mean_requests_in_system`` = (1/N) Σ_{k<N} N(k·T_MS), with expectation
  (1/N) Σ_{n=1..N} μ_n · n_requests;
* ``throughput_requests_per_s`` = completed/H·1000, completed = completions of the batches of
  slots 0..N−1 (the last ends at H and is counted), with expectation
  (1000/(N·T_MS)) Σ_{n=1..N} μ_n · completions;

both computed from the chain by N sparse steps of μ (the "finite-horizon" values). They differ from
the stationary ``mean_in_system`` and ``throughput_per_s`` only by the transient from the empty
start, which the test computes exactly and checks to be small next to the interval (so the
stationary values are effectively the ones under test).

The mean end-to-end latency cannot be aligned exactly and is checked with a stated allowance: the
simulator averages the latency over the requests *completed* within the horizon. The
pooled estimator Σ_r (latency sum)_r / Σ_r completed_r has expectation (E∫N − E[ages at H]) /
E[completed] up to a ratio bias of order 1/(R·E[completed]) (~1e-5 relative here, ignored), where
∫N (= mean in system × H) and completed have the exact chain expectations above and the "ages at H"
(Σ (H − arrival) over the requests still in the system at H, censored from the latency sum) are
not a chain quantity but are *observed* exactly in every replication (``mean_in_system × H −
e2e.mean × completed``, the core's own identity). The chain's Little's-law value (mean_in_system /
throughput, in slots, × T_MS: a request counted at slots a..c has e2e = (c + 1 − a)·T_MS) is
compared in its finite-horizon form E∫N / E[completed] (exact from the chain; it differs from the
stationary Little value by the transient, checked small): it must lie inside the delta-method
interval of the pooled ratio, whose lower side is widened by the observed censoring term
Σ_r ages_r / Σ_r completed_r (the estimator sits below E∫N / E[completed] by about that much).

Truncation. The chain truncates at ``max_requests`` (arrivals beyond it are lost); the simulator
does not. Coupled on the same draws, the two agree until the first step at which the untruncated
system would hold more than ``max_requests`` requests after arrivals. ``series_in_system`` sampled
on the grid n·T_MS (``grid_points`` = N: the state at the boundary n·T_MS, after arrivals, before
the batch) shows every |X_n|, so the test asserts max_n |X_n| <= max_requests in every replication:
the simulator's sample *is* then a sample of the truncated chain, and the comparison is exact with
no truncation error term. The probability that a fresh seed would break this coupling is at most
δ = R · Σ_n μ_n · loss_prob (expected lossy steps, exact from the chain); it is asserted < 2e-3
per case, and the chain's stationary ``truncation_mass`` is asserted < 1e-6.

Intervals and error rate. 99.9 % Student-t intervals across the R replications (the replications
are i.i.d.; each is the full run from empty, nothing discarded: the transient is accounted for
exactly instead). Per case: 3 interval assertions (mean in system, throughput, e2e) → 10 cases × 3
= 30 assertions; with random seeds the family-wise false-failure probability would be at most
30 × 0.1 % + Σ δ (≈ 0.5 % here) ≈ 3.5 % (the other checks, e.g. transient and censoring below half
an interval, hold by wide margins). The seeds are fixed, so the file is deterministic. The negative
controls (the chains of the orca b_max = 2 case with a 10 % higher arrival probability, and with
b_max = 3) must be rejected by the same intervals: the test has power.
"""
from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from scipy import stats

from fluidllm import simulate
from fluidllm.markov import GeometricDecode, bernoulli_arrivals, build_chain, poisson_arrivals, solve
from fluidllm.markov.chain import MARKOV_POLICIES, Chain, ChainResult
from fluidllm.model import Constant, Deterministic, Engine, Independent, Model, PoissonArrival, PolicySpec, Workload
from fluidllm.sim import Requests

T_MS = 2.5          # batch (and idle-step) time: not 1, so that per-batch vs per-ms mix-ups show
R = 64              # replications
N_STEPS = 4000      # slots per replication (horizon N_STEPS·T_MS)
LEVEL = 0.999       # two-sided Student-t level of every interval
SEED = 20250407


@dataclass(frozen=True)
class Case:
    id: str
    policy: str
    b_max: int
    prefill: dict[int, float]
    decode: Any                     # pmf {v_d: prob} or GeometricDecode
    arrivals: dict[int, float]
    max_requests: int


CASES = [
    Case("ft-b3-pre12-dec1-bern.45", "fastertransformer", 3, {1: .5, 2: .5}, {1: 1.0}, bernoulli_arrivals(0.45),
         11),
    Case("ft-b2-pre2-geo.5-bern.25", "fastertransformer", 2, {2: 1.0}, GeometricDecode(0.5),
         bernoulli_arrivals(0.25), 30),
    Case("vllm-b3-pre123-dec2-bern.35", "vllm", 3, {1: .4, 2: .3, 3: .3}, {2: 1.0}, bernoulli_arrivals(0.35), 22),
    Case("vllm-b2-pre1-geo.5-pois.3", "vllm", 2, {1: 1.0}, GeometricDecode(0.5), poisson_arrivals(0.3, 1e-12), 28),
    Case("orca-b2-pre13-dec1-bern.4", "orca", 2, {1: .7, 3: .3}, {1: 1.0}, bernoulli_arrivals(0.4), 20),
    Case("orca-b4-pre2-geo.4-pois.45", "orca", 4, {2: 1.0}, GeometricDecode(0.4), poisson_arrivals(0.45, 1e-12),
         36),
    Case("sarathi-b3-pre12-dec02-bern.7", "sarathi", 3, {1: .5, 2: .5}, {0: .5, 2: .5}, bernoulli_arrivals(0.7), 6),
    Case("sarathi-b2-pre2-geo.5-bern.4", "sarathi", 2, {2: 1.0}, GeometricDecode(0.5), bernoulli_arrivals(0.4), 30),
    Case("kfcfs-b4-pre13-dec2-bern.5", "kfcfs", 4, {1: .5, 3: .5}, {2: 1.0}, bernoulli_arrivals(0.5), 6),
    Case("kfcfs-b2-pre12-geo.7-bern.45", "kfcfs", 2, {1: .6, 2: .4}, GeometricDecode(0.7),
         bernoulli_arrivals(0.45), 12),
]
assert {c.policy for c in CASES} == set(MARKOV_POLICIES) - {"python"}  # plug-ins: tests/test_plugin.py


def _engine(policy: str, b_max: int) -> Engine:
    return Engine("e", b_max, Constant(T_MS), policy=PolicySpec(policy))


def _chain(case: Case, arrivals: dict[int, float] | None = None) -> Chain:
    return build_chain(_engine(case.policy, case.b_max), prefill=case.prefill, decode=case.decode,
                       arrivals=case.arrivals if arrivals is None else arrivals, max_requests=case.max_requests)


def _pick(rng: np.random.Generator, pmf: dict[int, float], size: int) -> np.ndarray:
    vals = np.fromiter(pmf.keys(), dtype=np.int64)
    probs = np.fromiter(pmf.values(), dtype=float)
    return vals[rng.choice(vals.size, size=size, p=probs / probs.sum())]


def _draw(case: Case, seed: int) -> list[Requests]:
    """R replications of the chain's arrivals on the grid n·T_MS, n = 0..N_STEPS−1."""
    out = []
    for rng in np.random.default_rng(seed).spawn(R):
        A = _pick(rng, case.arrivals, N_STEPS)
        t = np.repeat(np.arange(N_STEPS) * T_MS, A)
        vp = _pick(rng, case.prefill, t.size)
        if isinstance(case.decode, GeometricDecode):
            vd = rng.geometric(case.decode.q, size=t.size)
        else:
            vd = _pick(rng, case.decode, t.size)
        out.append(Requests.from_lists(t, vp, vd))
    return out


def _finite_horizon(chain: Chain, n: int) -> tuple[float, float, float]:
    """Exact expectations over slots 1..n of the chain started at (): mean in system per slot,
    completions per slot, and the expected number of steps that lose an arrival."""
    PT = chain.P.T.tocsr()
    mu = np.zeros(chain.n_states)
    mu[0] = 1.0
    acc = np.zeros(chain.n_states)
    for _ in range(n):
        mu = PT @ mu
        acc += mu
    return (float(acc @ chain.n_requests) / n, float(acc @ chain.completions) / n, float(acc @ chain.loss_prob))


def _t_interval(x: np.ndarray) -> tuple[float, float]:
    x = np.asarray(x, dtype=float)
    return float(x.mean()), float(stats.t.ppf(0.5 + LEVEL / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))


def _ratio_interval(num: np.ndarray, den: np.ndarray) -> tuple[float, float]:
    """Σ num / Σ den and the half-width of its delta-method Student-t interval across replications."""
    num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    w = num.sum() / den.sum()
    z = num - w * den
    se = z.std(ddof=1) / math.sqrt(z.size) / den.mean()
    return float(w), float(stats.t.ppf(0.5 + LEVEL / 2, z.size - 1) * se)


@dataclass
class Outcome:
    chain: Chain
    res: ChainResult
    fh_in_system: float         # finite-horizon expectation of the simulator's mean in system
    fh_throughput_per_s: float
    fh_latency_ms: float        # E∫N / E completed (finite-horizon Little)
    delta: float                # R · expected lossy steps per replication
    in_system: np.ndarray       # per replication
    throughput_per_s: np.ndarray
    latency_sum_ms: np.ndarray
    completed: np.ndarray
    ages_at_end_ms: np.ndarray
    max_series: np.ndarray
    series_mean: np.ndarray
    end_ms: np.ndarray
    arrived: np.ndarray
    drawn: np.ndarray           # requests drawn per replication
    p_queue: float              # P_π(at least 3 requests in system)
    seconds: float


@functools.lru_cache(maxsize=None)
def _outcome(case_id: str) -> Outcome:
    t0 = time.perf_counter()
    i = [c.id for c in CASES].index(case_id)
    case = CASES[i]
    chain = _chain(case)
    res = solve(chain)
    fh_n, fh_c, lossy = _finite_horizon(chain, N_STEPS)
    # The model's workload only names the engine; ``requests=`` replaces its draws.
    model = Model({"e": chain.engine},
                  {"w": Workload("w", PoissonArrival(1.0), Independent(Deterministic(1), Deterministic(1)))})
    reqs = _draw(case, SEED + i)
    sim = simulate(model, requests=reqs, horizon_s=N_STEPS * T_MS / 1000.0, grid_points=N_STEPS)
    lat_sum = sim.e2e.per_replication["mean"] * sim.completed
    H = N_STEPS * T_MS
    return Outcome(
        chain=chain, res=res, fh_in_system=fh_n, fh_throughput_per_s=fh_c / T_MS * 1000.0,
        fh_latency_ms=fh_n / fh_c * T_MS, delta=R * lossy, in_system=sim.mean_requests_in_system,
        throughput_per_s=sim.throughput_requests_per_s, latency_sum_ms=lat_sum, completed=sim.completed,
        ages_at_end_ms=sim.mean_requests_in_system * H - lat_sum, max_series=sim.series_in_system.max(axis=1),
        series_mean=sim.series_in_system.mean(axis=1), end_ms=sim.end_ms, arrived=sim.arrived,
        drawn=np.array([len(q) for q in reqs]), p_queue=float(res.pi[chain.n_requests >= 3].sum()),
        seconds=time.perf_counter() - t0)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_simulator_means_inside_intervals_around_chain(case: Case) -> None:
    o = _outcome(case.id)
    r = o.res
    # The chain is a faithful, untruncated-in-effect model of this instance.
    assert r.residual < 1e-10
    assert r.truncation_mass < 1e-6, r.truncation_mass
    assert o.delta < 2e-3, o.delta
    assert r.mean_step_ms == pytest.approx(T_MS, rel=1e-12)
    # Queues form (load is moderately high): about one request or more in system on average, and
    # at least 3 a good part of the time.
    assert r.mean_in_system > 0.9 and o.p_queue > 0.05
    # The simulator ran the grid model: every run ends at H, every request arrived, and the core's
    # exact ∫N dt equals the boundary-by-boundary sum (N constant on slots).
    H = N_STEPS * T_MS
    assert np.all(o.end_ms == H) and np.array_equal(o.arrived, o.drawn)
    assert np.allclose(o.series_mean, o.in_system, rtol=1e-12, atol=1e-12)
    # Coupling with the truncated chain never broke: the sample is a sample of the chain.
    assert int(o.max_series.max()) <= case.max_requests, (int(o.max_series.max()), case.max_requests)

    # The transient from the empty start is small next to the intervals (so the stationary values
    # are the ones effectively under test).
    n_m, n_h = _t_interval(o.in_system)
    x_m, x_h = _t_interval(o.throughput_per_s)
    w_m, w_h = _ratio_interval(o.latency_sum_ms, o.completed)
    censor = float(o.ages_at_end_ms.sum() / o.completed.sum())      # >= 0: e2e <= Little per replication
    w_stat = r.mean_latency_batches * T_MS
    assert abs(o.fh_in_system - r.mean_in_system) < 0.5 * n_h
    assert abs(o.fh_throughput_per_s - r.throughput_per_s) < 0.5 * x_h
    assert abs(o.fh_latency_ms - w_stat) < 0.5 * w_h
    # The censoring allowance (observed) does not swamp the interval.
    assert 0 <= censor < 0.5 * w_h

    # The measured agreement (shown with ``pytest -s`` or ``-rP``).
    thr = f"chain {r.throughput_per_s:.3f} (T: {o.fh_throughput_per_s:.3f})  sim {x_m:.3f} ± {x_h:.3f}"
    print(f"{case.id}: {o.chain.n_states} states, trunc {r.truncation_mass:.1e}, delta {o.delta:.1e}, "
          f"P(>=3) {o.p_queue:.2f}, {o.seconds:.2f} s\n"
          f"  in system   chain {r.mean_in_system:.4f} (T: {o.fh_in_system:.4f})  sim {n_m:.4f} ± {n_h:.4f}\n"
          f"  thr req/s   {thr}\n"
          f"  e2e ms      chain {w_stat:.4f} (T: {o.fh_latency_ms:.4f})  sim {w_m:.4f} ± {w_h:.4f} "
          f"(censoring {censor:.2e})")

    assert abs(n_m - o.fh_in_system) <= n_h, (n_m, n_h, o.fh_in_system)
    assert abs(x_m - o.fh_throughput_per_s) <= x_h, (x_m, x_h, o.fh_throughput_per_s)
    # One-sided allowance: the censored latency sum falls short of ∫N by the ages at H.
    assert o.fh_latency_ms - w_h - censor <= w_m <= o.fh_latency_ms + w_h, (w_m, w_h, censor, o.fh_latency_ms)


def test_negative_control_wrong_chains_are_rejected() -> None:
    # The same simulator sample (orca, b_max = 2, Bernoulli(0.4)) against chains of a slightly
    # different instance: the intervals that contain the right chain (test above) must exclude
    # these (the test has power). (i) P(arrival) 0.4 -> 0.44 (+10 %); (ii) b_max 2 -> 3.
    case = CASES[4]
    assert case.policy == "orca" and case.b_max == 2 and case.arrivals == bernoulli_arrivals(0.4)
    o = _outcome(case.id)
    n_m, n_h = _t_interval(o.in_system)
    x_m, x_h = _t_interval(o.throughput_per_s)
    w_m, w_h = _ratio_interval(o.latency_sum_ms, o.completed)
    censor = float(o.ages_at_end_ms.sum() / o.completed.sum())
    wrong_rate = _chain(case, bernoulli_arrivals(0.44))
    wrong_budget = build_chain(_engine(case.policy, 3), prefill=case.prefill, decode=case.decode,
                               arrivals=case.arrivals, max_requests=case.max_requests)
    for name, chain in (("arrival p 0.44", wrong_rate), ("b_max 3", wrong_budget)):
        fh_n, fh_c, _ = _finite_horizon(chain, N_STEPS)
        fh_w = fh_n / fh_c * T_MS
        print(f"negative control {name}: in system chain {fh_n:.4f} vs sim {n_m:.4f} ± {n_h:.4f} "
              f"({abs(n_m - fh_n) / n_h:.1f} half-widths); e2e chain {fh_w:.4f} vs sim {w_m:.4f} ± {w_h:.4f} "
              f"({abs(w_m - fh_w) / w_h:.1f} half-widths)")
        assert abs(n_m - fh_n) > n_h, (name, n_m, n_h, fh_n)
        assert not (fh_w - w_h - censor <= w_m <= fh_w + w_h), (name, w_m, w_h, fh_w)
    # Throughput = accepted arrivals: it sees the arrival rate (+10 %), not the budget.
    fh_c = _finite_horizon(wrong_rate, N_STEPS)[1] / T_MS * 1000.0
    assert abs(x_m - fh_c) > x_h, (x_m, x_h, fh_c)
