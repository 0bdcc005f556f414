"""Arrival sources of the vectorized core beyond Poisson: renewal, deterministic, trace, mixtures.

Counts are checked against the renewal-theory mean λ·scale·H with a normal bound of 5 standard
deviations of the count (variance ≈ λH·scv for a renewal process), so a false failure has
probability below 1e-6 per check; the seeds are fixed.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from fluidllm.model.arrivals import DeterministicArrival, PoissonArrival, RenewalArrival, TraceArrival
from fluidllm.model.lengths import Deterministic, Geometric, Independent
from fluidllm.model.workload import Workload
from fluidllm.sim.source import StreamSource


def _all(src: StreamSource) -> tuple[np.ndarray, np.ndarray]:
    """Every arrival instant per replication (list of arrays) and the workload index, drained."""
    times = [[] for _ in range(src.R)]
    kls = [[] for _ in range(src.R)]
    while not src.exhausted:
        b = src.next_block()
        for r in range(src.R):
            n = int(b.counts[r])
            times[r].append(b.times_ms[r, :n])
            kls[r].append(b.klass[r, :n])
    return [np.concatenate(t) for t in times], [np.concatenate(k) for k in kls]


def _wl(arrival, name="w") -> Workload:
    return Workload(name, arrival, Independent(Deterministic(10), Geometric(5.0)), "e")


@pytest.mark.parametrize("scv,dist", [(0.25, "gamma"), (4.0, "gamma"), (2.0, "lognormal"), (0.5, "weibull")])
def test_renewal_counts_match_the_rate(scv: float, dist: str) -> None:
    H, rate, R = 200_000.0, 20.0, 64
    src = StreamSource([_wl(RenewalArrival(rate, scv, dist))], R, H, seed=4, scale=np.full(R, 0.5))
    times, _ = _all(src)
    for t in times:
        assert np.all(np.diff(t) >= 0) and (t.size == 0 or (t[0] > 0 and t[-1] < H))
    counts = np.array([t.size for t in times])
    mean = rate * 0.5 * H / 1000.0
    sd = math.sqrt(mean * scv / R)
    assert abs(counts.mean() - mean) < 5 * sd + 1
    # The gaps' squared coefficient of variation is the process's scv (pooled, first gap included).
    gaps = np.concatenate([np.diff(np.concatenate([[0.0], t])) for t in times])
    assert gaps.var() / gaps.mean() ** 2 == pytest.approx(scv, rel=0.15)


def test_deterministic_arrivals_are_exact_and_scale() -> None:
    src = StreamSource([_wl(DeterministicArrival(10.0, offset_ms=5.0))], 3, 1000.0, seed=0,
                       scale=np.array([1.0, 2.0, 0.5]))
    times, _ = _all(src)
    assert np.allclose(times[0], 5.0 + 100.0 * np.arange(10))
    assert np.allclose(times[1], 5.0 + 50.0 * np.arange(20))
    assert np.allclose(times[2], 5.0 + 200.0 * np.arange(5))


def test_trace_is_replayed_and_sped_up_per_replication() -> None:
    base = np.array([0.0, 10.0, 15.0, 40.0, 100.0, 250.0])
    src = StreamSource([_wl(TraceArrival(base, speedup=2.0))], 2, 100.0, seed=0, scale=np.array([1.0, 4.0]))
    times, _ = _all(src)
    assert np.array_equal(times[0], np.array([0.0, 5.0, 7.5, 20.0, 50.0]))
    assert np.array_equal(times[1], base / 8.0)


def test_two_workloads_merge_in_time_order_with_class_ties() -> None:
    a = _wl(DeterministicArrival(10.0), "a")          # every 100 ms from 0
    b = _wl(DeterministicArrival(20.0), "b")          # every 50 ms from 0: ties with a at 0, 100, ...
    src = StreamSource([a, b], 1, 300.0, seed=0)
    times, kls = _all(src)
    assert np.array_equal(times[0], np.array([0, 0, 50, 100, 100, 150, 200, 200, 250], dtype=float))
    assert np.array_equal(kls[0], np.array([0, 1, 1, 0, 1, 1, 0, 1, 1]))   # ties: workload order


def test_poisson_epochs_give_the_poisson_law() -> None:
    # Count in a fixed window ~ Poisson(λH): mean and variance equal (dispersion index 1).
    R, H = 400, 20_000.0
    src = StreamSource([_wl(PoissonArrival(3.0))], R, H, seed=9)
    times, _ = _all(src)
    n = np.array([t.size for t in times])
    assert abs(n.mean() - 60.0) < 5 * math.sqrt(60.0 / R)
    assert n.var(ddof=1) / n.mean() == pytest.approx(1.0, abs=0.3)


def test_blocks_and_workers_do_not_change_the_numbers() -> None:
    # Replications run in blocks of BLOCK with their own seeds; a worker pool must give exactly the
    # numbers of running the blocks one after the other.
    import sys

    import fluidllm as fl

    S = sys.modules["fluidllm.sim.simulate"]
    m = fl.load_model("benchmarks/sim_speed_model.toml")
    old = S.BLOCK
    try:
        S.BLOCK = 2
        one = fl.simulate(m, replications=5, horizon_s=20, seed=7)
        two = fl.simulate(m, replications=5, horizon_s=20, seed=7, workers=2)
    finally:
        S.BLOCK = old
    d1, d2 = one.to_dict(series=True), two.to_dict(series=True)
    for k in d1:
        if k not in ("wall_s", "peak_state_bytes"):
            assert d1[k] == d2[k], k
    assert one.replications == 5 and len(set(one.arrived.tolist())) > 1
    with pytest.raises(fl.ModelError, match="workers"):
        fl.simulate(m, replications=2, horizon_s=1, workers=-1)
