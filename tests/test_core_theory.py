"""The vectorized core (and the reference) against results known in closed form.

* The worked example of Li, Dai, Peng (arXiv 2504.07347, Fig. 8; ``paper-notes.md``): four
  policies, batch for batch.
* Queueing theory: one-token requests (v_p = 1, v_d = 0) on an engine with b_max = 1 and a constant
  batch time c are served one at a time, FCFS, each for exactly c ms, starting at once when the
  engine is idle (the time model: an idle engine starts at the arrival instant; arrivals during a
  batch wait for its end, when the engine is busy anyway) — an M/D/1 queue under Poisson arrivals.
  With v_p ~ Geometric and K-FCFS the head request takes every one-token batch until its prompt is
  done: an M/G/1 queue with service c·v_p. Pollaczek–Khinchine gives the mean number in system.
* Deterministic arrivals: a stable engine gives every request e2e = c exactly; a saturated one
  piles up H/g − H/c requests.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from fluidllm.model import (Constant, Deterministic, DeterministicArrival, Engine, Geometric, Independent,
                            PoissonArrival, PolicySpec, Workload)
from fluidllm.policies.rules import VECTOR_POLICIES
from fluidllm.sim import Requests, simulate_reference
from fluidllm.sim.core import run_core
from fluidllm.sim.source import FixedSource, StreamSource

# ------------------------------------------------------------------------------ Fig. 8, batch for batch

# A, B, C (ids 0, 1, 2) are decoding at time 0 with 2, 4, 3 decode tokens left; D and E (ids 3, 4;
# 1 prefill + 1 decode token each) arrive at 1 and 2 ms, during the first batch [0, 10).
# "Xd" = a decode token for X, "Xp" = its prefill token. b_max = 4 reproduces the vLLM, FT and
# Sarathi rows of the figure, b_max = 5 the Orca row (paper-notes.md).
FIG8 = {
    "vllm": (4, ["Ad Bd Cd", "Dp Ep", "Ad Bd Cd Dd", "Bd Cd Ed", "Bd"]),
    "orca": (5, ["Ad Bd Cd", "Ad Bd Cd Dp Ep", "Bd Cd Dd Ed", "Bd"]),
    "fastertransformer": (4, ["Ad Bd Cd", "Ad Bd Cd", "Bd Cd", "Bd", "Dp Ep", "Dd Ed"]),
    "sarathi": (4, ["Ad Bd Cd", "Ad Bd Cd Dp", "Bd Cd Dd Ep", "Bd Ed"]),
}


def _row(text: str) -> tuple[tuple[int, int, int], ...]:
    """'Ad Dp' -> ((0, 0, 1), (3, 1, 0)): (id, prefill tokens, decode tokens), by id."""
    return tuple(sorted((ord(t[0]) - ord("A"), int(t[1] == "p"), int(t[1] == "d")) for t in text.split()))


@pytest.mark.parametrize("policy", sorted(FIG8))
def test_fig8_worked_example(policy: str) -> None:
    b_max, rows = FIG8[policy]
    expected = [_row(r) for r in rows]
    eng = Engine("fig8", b_max, Constant(10.0), policy=PolicySpec(policy))
    initial = [(0, 2), (0, 4), (0, 3)]
    de = Requests.from_lists([1.0, 2.0], [1, 1], [1, 1])
    ref = simulate_reference(eng, de, 100.0, initial=initial)
    out = run_core(eng, FixedSource([de], 100.0), batch_log=True, initial=initial)
    core = out.batch_log[0]
    assert [b.tokens for b in ref.batches] == expected
    assert [b["tokens"] for b in core] == expected
    # Back to back from 0, 10 ms each; then idle until the horizon with everybody done.
    times = [(10.0 * k, 10.0 * (k + 1)) for k in range(len(rows))]
    assert [(b.start_ms, b.end_ms) for b in ref.batches] == times
    assert [(b["start_ms"], b["end_ms"]) for b in core] == times
    assert ref.n_completed == out.completed[0] == 5 and out.in_system_end[0] == 0
    assert out.end_ms[0] == ref.end_ms == 100.0


# ------------------------------------------------------------------------ M/D/1 and M/G/1 (P–K formula)

# Confidence intervals: each check below is a two-sided 99.9 % Student-t interval over R
# independent replications (the t quantile with R − 1 degrees of freedom), so a correct simulator
# fails one check with probability about 0.1 % over seeds; this file makes 12 such checks (4 per
# queue), so at most about 1.2 % of seeds would give a false failure. The seeds are fixed: the
# outcome is deterministic. The runs start empty, which biases the time averages down by
# (∫(L − E N(t)) dt) / H; that integrated deficit, measured with 3000-4000 short replications, is
# about 0 ± 1 (M/D/1, ρ = 0.5), 27 ± 7 (M/D/1, ρ = 0.8) and 65 ± 18 (the M/G/1 below) request·ms
# for c = 1 ms, so at these horizons the bias is below a tenth of the intervals' half-widths.
R = 64
Q999 = float(stats.t.ppf(0.9995, R - 1))


def _ci_contains(x: np.ndarray, value: float) -> tuple[bool, str]:
    m, se = float(np.mean(x)), float(np.std(x, ddof=1) / math.sqrt(x.size))
    return abs(m - value) <= Q999 * se, f"mean {m:.6g} ± {Q999 * se:.3g} (99.9 %), expected {value:.6g}"


def _queue_checks(out, lam_per_ms: float, L_theory: float) -> None:
    assert not out.diverged.any()
    L = out.in_system_time_ms / out.end_ms                     # time-average number in system
    W = out.latency_sum_ms["e2e"] / out.latency_count["e2e"]   # mean sojourn (e2e) of completed requests
    thr = out.completed / out.end_ms                           # requests per ms
    ok, msg = _ci_contains(L, L_theory)
    assert ok, "mean number in system: " + msg
    ok, msg = _ci_contains(thr, lam_per_ms)
    assert ok, "throughput: " + msg
    ok, msg = _ci_contains(L - lam_per_ms * W, 0.0)            # Little: L = λ W
    assert ok, "Little's law: " + msg
    ok, msg = _ci_contains(W, L_theory / lam_per_ms)
    assert ok, "mean e2e: " + msg


@pytest.mark.parametrize("rho, horizon_ms", [(0.5, 10_000.0), (0.8, 20_000.0)])
def test_md1_pollaczek_khinchine(rho: float, horizon_ms: float) -> None:
    """M/D/1 with service c = 1 ms: L = ρ + ρ²/(2(1 − ρ)), ρ = λc."""
    c = 1.0
    lam = rho / c                                               # per ms
    eng = Engine("e", 1, Constant(c), policy=PolicySpec("sarathi"))
    w = Workload("w", PoissonArrival(1000.0 * lam), Independent(Deterministic(1), Deterministic(0)))
    out = run_core(eng, StreamSource([w], R, horizon_ms, seed=2024))
    assert np.all(out.batches == out.completed)                 # one request per batch
    np.testing.assert_allclose(out.busy_ms, c * out.batches, rtol=1e-12)
    _queue_checks(out, lam, rho + rho**2 / (2 * (1 - rho)))


def test_mg1_geometric_prompts_pollaczek_khinchine() -> None:
    """K-FCFS, b_max = 1, c = 1 ms, v_p ~ Geometric(mean 3, min 1), v_d = 0: the head request takes
    every batch until its prompt is done, so service S = c·v_p (FCFS, non-preemptive) and
    L = ρ + λ² E[S²] / (2(1 − ρ)), ρ = λ E[S], E[S²] = c² (Var v_p + E[v_p]²)."""
    c, rho, law = 1.0, 0.7, Geometric(3.0)
    ES, ES2 = c * law.mean, c * c * (law.var + law.mean**2)
    lam = rho / ES
    eng = Engine("e", 1, Constant(c), policy=PolicySpec("kfcfs"))
    w = Workload("w", PoissonArrival(1000.0 * lam), Independent(law, Deterministic(0)))
    out = run_core(eng, StreamSource([w], R, 20_000.0, seed=77))
    assert np.all(out.prefill_tokens == out.batches) and np.all(out.decode_tokens == 0)
    _queue_checks(out, lam, rho + lam**2 * ES2 / (2 * (1 - rho)))


# ------------------------------------------------------------------------------ deterministic arrivals


@pytest.mark.parametrize("policy", sorted(VECTOR_POLICIES))
def test_deterministic_arrivals_below_capacity_wait_for_nothing(policy: str) -> None:
    """One request (1, 0) every g = 2 ms, c = 1.5 ms < g: each arrives at an idle engine, starts at
    once and completes exactly c later: e2e = c for every request, whatever the policy."""
    g, c, H = 2.0, 1.5, 2_001.0
    eng = Engine("e", 1, Constant(c), policy=PolicySpec(policy))
    w = Workload("w", DeterministicArrival(1000.0 / g), Independent(Deterministic(1), Deterministic(0)))
    out = run_core(eng, StreamSource([w], 2, H, seed=0))
    n = math.ceil(H / g)                                        # arrivals at 0, g, 2g, ... < H
    assert np.all(out.arrived == n) and np.all(out.completed == n) and np.all(out.in_system_end == 0)
    assert np.all(out.latency_count["e2e"] == n)
    assert np.all(out.latency_sum_ms["e2e"] == n * c)           # exact: every e2e is exactly c
    assert np.all(out.max_in_system == 1)
    np.testing.assert_allclose(out.in_system_time_ms, n * c, rtol=1e-12)
    # The same through the reference, request by request.
    t = np.arange(n) * g
    ref = simulate_reference(eng, Requests.from_lists(t, [1] * n, [0] * n), H)
    assert np.array_equal(ref.completion_ms - ref.arrival_ms, np.full(n, c))


@pytest.mark.parametrize("policy", sorted(VECTOR_POLICIES))
def test_deterministic_arrivals_above_capacity_pile_up(policy: str) -> None:
    """g = 2 ms < c = 3 ms: the engine never idles and serves one request per c ms, so at the end
    the backlog is H/g − H/c requests (one token each) up to one request."""
    g, c, H = 2.0, 3.0, 3_001.0
    eng = Engine("e", 1, Constant(c), policy=PolicySpec(policy))
    w = Workload("w", DeterministicArrival(1000.0 / g), Independent(Deterministic(1), Deterministic(0)))
    out = run_core(eng, StreamSource([w], 2, H, seed=0))
    expected = H / g - H / c
    assert np.all(np.abs(out.backlog_tokens_end - expected) < 1), (out.backlog_tokens_end, expected)
    assert np.all(out.in_system_end == out.backlog_tokens_end)
    assert np.all(out.completed == math.ceil(H / c)) and np.all(out.end_ms == c * math.ceil(H / c))
    np.testing.assert_allclose(out.busy_ms, out.end_ms, rtol=1e-12)   # never idle
