"""The SimPy peer of the speed benchmark (``benchmarks/simpy_engine.py``) runs batch for batch like
the reference simulator (policy ``sarathi``, same engine, same draws): same batch starts and ends,
same prefill and decode tokens, same completions. This is what makes it a fair peer in
``benchmarks/sim_speed.py``.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("simpy")

from fluidllm.model import (Affine, Constant, Deterministic, Engine, Geometric, Independent, PoissonArrival,  # noqa: E402
                            PolicySpec, Staircase, Uniform, Workload)
from fluidllm.sim import Requests, draw_requests, simulate_reference  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from simpy_engine import simulate_simpy  # noqa: E402


def assert_same_run(eng: Engine, req: Requests, horizon_ms: float) -> None:
    ref = simulate_reference(eng, req, horizon_ms)
    bt = eng.batch_time
    run = simulate_simpy(req, eng.token_budget, lambda n: float(bt.tokens_ms(n)), horizon_ms,
                         eng.max_batch_requests)
    expected = [(b.start_ms, b.end_ms, b.prefill_tokens, b.decode_tokens) for b in ref.batches]
    assert len(run.batches) == len(expected)
    for i, (got, want) in enumerate(zip(run.batches, expected)):
        assert got == want, f"batch {i}: simpy {got} != reference {want}"
    assert run.end_ms == ref.end_ms
    assert run.completed == ref.n_completed
    assert run.arrived == ref.n_arrived
    np.testing.assert_array_equal(run.completion_ms, ref.completion_ms)  # NaN == NaN here


CASES = [
    # (b_max, k_max, batch time, rate per s, prefill law, decode law, horizon ms, seed)
    (512, None, Staircase(11.28, 35.47, 128), 15.0, Deterministic(100), Deterministic(100), 20_000.0, 1),
    (512, None, Staircase(11.28, 35.47, 128), 20.0, Deterministic(100), Deterministic(100), 15_000.0, 2),  # overload
    (64, 3, Affine(2.0, 0.05), 60.0, Uniform(1, 150), Geometric(6.0, min=0), 5_000.0, 3),  # long prompts, v_d = 0
    (16, 3, Constant(1.0), 900.0, Uniform(1, 20), Uniform(0, 4), 300.0, 4),
    (128, None, Affine(5.0, 0.2), 3.0, Uniform(1, 40), Geometric(10.0, min=0), 60_000.0, 5),  # mostly idle
]


@pytest.mark.parametrize("case", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_simpy_matches_reference_batch_for_batch(case) -> None:
    b_max, k_max, bt, rate, pre, dec, horizon, seed = case
    eng = Engine("e", b_max, bt, max_batch_requests=k_max, policy=PolicySpec("sarathi"))
    wl = Workload("w", PoissonArrival(rate), Independent(pre, dec))
    req = draw_requests([wl], horizon, seed)
    assert 100 <= len(req) <= 1000
    assert_same_run(eng, req, horizon)


def test_simpy_idle_start_and_horizon() -> None:
    """An idle engine starts at the arrival; the run stops at the first boundary >= horizon."""
    req = Requests.from_lists([0.3, 10.25, 10.5], prefill=[3, 2, 1], decode=[1, 0, 2])
    eng = Engine("e", 4, Constant(1.0), policy=PolicySpec("sarathi"))
    run = simulate_simpy(req, 4, lambda n: 1.0, 11.0)
    assert run.batches == [(0.3, 1.3, 3, 0), (1.3, 2.3, 0, 1), (10.25, 11.25, 2, 0)]
    assert run.end_ms == 11.25 and run.completed == 2 and math.isnan(run.completion_ms[2])
    assert_same_run(eng, req, 11.0)
    assert simulate_simpy(req, 4, lambda n: 1.0, 0.0).batches == []
