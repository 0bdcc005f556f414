"""Trace replay at a rate scale with each request's own lengths (fluidllm.model.trace_replay)."""
from __future__ import annotations


import numpy as np
import pytest

from fluidllm.errors import ModelError
from fluidllm.model.engine import Engine
from fluidllm.model.network import Call, NetworkModel, Workflow
from fluidllm.model.trace_replay import ReplayPairs, TraceReplay, replay_for_horizon
from fluidllm.model.traces import Trace, load_trace
from fluidllm.model.batchtime import Staircase
from fluidllm.sim.draws import draw_requests
from fluidllm.sim.network_reference import simulate_network_reference


def _trace(n: int = 50, seed: int = 3) -> Trace:
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.exponential(20.0, n))
    t -= t[0]
    return Trace(t, rng.integers(1, 300, n), rng.integers(0, 40, n), {"test": seed})


def test_rotation_and_cycles_keep_rows_and_gaps() -> None:
    tr = _trace()
    n = len(tr)
    r = TraceReplay(tr, speedup=2.5, start=7, cycles=3)
    t = r.arrival_times_ms()
    assert t.size == 3 * n and t[0] == 0.0 and np.all(np.diff(t) >= 0)
    gaps = np.diff(tr.arrival_ms)
    mean_gap = tr.arrival_ms[-1] / (n - 1)
    # the rotated cycle's gaps are the trace's gaps from row 7 on, one mean gap at the wrap, then the rest
    want = np.r_[gaps[7:], mean_gap, gaps[:6]] / 2.5
    assert np.allclose(np.diff(t[:n]), want, rtol=1e-12, atol=1e-9)
    # consecutive cycles are shifted copies, one cycle (span n/(n-1)/speedup) apart
    assert np.allclose(t[n:2 * n] - t[:n], r.cycle_ms)
    L = r.lengths()
    assert isinstance(L, ReplayPairs)
    order = (np.arange(n) + 7) % n
    assert np.array_equal(L.prefill[:n], tr.prefill[order]) and np.array_equal(L.decode[2 * n:], tr.decode[order])
    assert L.mean_prefill == pytest.approx(tr.prefill.mean()) and L.mean_decode == pytest.approx(tr.decode.mean())


def test_long_run_rate_is_speedup_times_trace_rate() -> None:
    tr = _trace(200)
    for s in (0.5, 1.0, 3.0):
        r = TraceReplay(tr, s, start=11, cycles=4)
        t = r.arrival_times_ms()
        # arrivals per ms over whole cycles: n per cycle_ms
        assert len(tr) / r.cycle_ms * 1000.0 == pytest.approx(tr.rate_per_s * s, rel=1e-12)
        assert r.rate_per_s == pytest.approx(tr.rate_per_s * s, rel=1e-12)
        assert t[-1] < 4 * r.cycle_ms


def test_replay_for_horizon_covers_the_horizon() -> None:
    tr = _trace()
    r1 = TraceReplay(tr, 2.0)
    H = 3.2 * r1.cycle_ms
    r = replay_for_horizon(tr, 2.0, H, start=5)
    assert r.cycles == 4 and r.start == 5
    assert replay_for_horizon(tr, 2.0, r1.cycle_ms / 3).cycles == 1


def test_sample_ignores_rng_and_cycles() -> None:
    tr = _trace(10)
    L = TraceReplay(tr).lengths()
    p1, d1 = L.sample(np.random.default_rng(0), 25)
    p2, d2 = L.sample(np.random.default_rng(99), 25)
    assert np.array_equal(p1, p2) and np.array_equal(d1, d2)
    assert np.array_equal(p1[:10], tr.prefill) and np.array_equal(p1[10:20], tr.prefill)


def _engine(name: str) -> Engine:
    return Engine(name, 256, Staircase(2.0, 5.0, 64))


def test_draw_requests_pairs_arrival_i_with_row_i() -> None:
    tr = _trace(80)
    r = TraceReplay(tr, 1.7, start=13, cycles=2)
    H = float(r.arrival_times_ms()[100]) + 1e-6         # the first 101 arrivals
    req = draw_requests([r.workload("w", "e")], H, 4)
    L = r.lengths()
    assert req.arrival_ms.size == 101
    assert np.allclose(req.arrival_ms, r.arrival_times_ms()[:101])
    assert np.array_equal(req.prefill, L.prefill[:101]) and np.array_equal(req.decode, L.decode[:101])


def test_network_reference_pairs_arrival_i_with_row_i() -> None:
    tr = _trace(60)
    r = TraceReplay(tr, 3.0, start=21, cycles=2)
    engs = {f"g{i}": _engine(f"g{i}") for i in range(3)}
    wf = Workflow("trace", r.arrival(), (Call("req", tuple(engs), r.lengths(), routing="jsq-tokens"),))
    H = float(r.arrival_times_ms()[-1]) + 1.0
    run = simulate_network_reference(NetworkModel(engs, {"trace": wf}), H, 0)
    order = np.argsort(run.created_ms, kind="stable")
    L = r.lengths()
    assert run.created_ms.size == len(r)
    assert np.allclose(run.created_ms[order], r.arrival_times_ms())
    assert np.array_equal(run.prefill[order], L.prefill) and np.array_equal(run.decode[order], L.decode)


def test_vendored_dataset_replays() -> None:
    tr = load_trace(dataset="azure-code-2023")
    r = TraceReplay(tr, 4.0, start=1000)
    assert r.rate_per_s == pytest.approx(4 * tr.rate_per_s)
    assert r.lengths().prefill[0] == tr.prefill[1000]


@pytest.mark.parametrize("kw, field", [({"speedup": 0}, "speedup"), ({"start": 50}, "start"),
                                       ({"start": -1}, "start"), ({"cycles": 0}, "cycles")])
def test_bad_arguments_are_named(kw: dict, field: str) -> None:
    with pytest.raises(ModelError, match=field):
        TraceReplay(_trace(), **kw)


def test_too_short_or_flat_trace_is_refused() -> None:
    with pytest.raises(ModelError, match="trace"):
        TraceReplay(Trace(np.zeros(1), np.ones(1, int), np.ones(1, int), {}))
    with pytest.raises(ModelError, match="span"):
        TraceReplay(Trace(np.zeros(3), np.ones(3, int), np.ones(3, int), {}))
    with pytest.raises(ModelError, match="horizon_ms"):
        replay_for_horizon(_trace(), 1.0, 0.0)
