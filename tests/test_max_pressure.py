"""Max-pressure (Dai-Lin 2005) in the network reference simulator: every batch serves only classes of
non-negative pressure, highest first; an engine idles only when every request it could serve is of
negative pressure; the model and fluid layers name it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import fluidllm as fl
from fluidllm.errors import ModelError
from fluidllm.fluid import fluid_policies_of, network_fluid_verdict
from fluidllm.model.policy import PolicySpec
from fluidllm.sim.network_reference import pressure_order, simulate_network_reference

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "networks"
MP = EXAMPLES / "rybko_stolyar_maxpressure.toml"


def _weights(run, cn, t: float) -> np.ndarray:
    """Pressures at a boundary at t, from the run's request records (completions at t already applied,
    creations at t counted)."""
    alive = (run.created_ms <= t) & ~(run.completion_ms <= t)
    n = np.bincount(run.klass[alive], minlength=len(cn.classes)).astype(float)
    m = np.array([c.mean_prefill + c.mean_decode for c in cn.classes])
    return (n - cn.routing @ n) / m


TANDEM = """
[engines.e1]
token_budget = 64
policy = { kind = "max-pressure", inner = "sarathi" }
batch_time = { kind = "constant", c_ms = 1 }
[engines.e2]
token_budget = 16
policy = { kind = "max-pressure", inner = "kfcfs" }
batch_time = { kind = "constant", c_ms = 5 }
[workflows.W]
arrival = { kind = "poisson", rate_per_s = 150 }
[[workflows.W.calls]]
id = "a"
engine = "e1"
prefill = { kind = "deterministic", value = 4 }
decode = { kind = "deterministic", value = 4 }
[[workflows.W.calls]]
id = "b"
engine = "e2"
prefill = { kind = "deterministic", value = 4 }
decode = { kind = "geometric", mean = 4 }
after = ["a"]
"""


def _model(name: str):
    return fl.load_model(MP) if name == "rybko-stolyar" else fl.loads_model(TANDEM)


@pytest.fixture(scope="module", params=["rybko-stolyar", "tandem"])
def mp_run(request):
    model = _model(request.param)
    return request.param, model, simulate_network_reference(model, 600.0, 3)


def test_batches_serve_nonnegative_pressure_highest_first(mp_run) -> None:
    _, model, run = mp_run
    cn = model.class_network()
    checked = 0
    for e in run.engine_names:
        for b in run.batches[e]:
            w = _weights(run, cn, b.start_ms)
            served = {run.klass[i] for i, p, d in b.tokens if p + d > 0}
            assert all(w[k] >= 0 for k in served), (e, b.index, w, served)
            present = {run.klass[i] for i, _, _ in b.resident_before}
            ok = [k for k in present if w[k] >= 0]
            assert ok, (e, b.index)
            top = min(ok, key=lambda k: (-w[k], k))
            assert top in served            # the first group always gets tokens (kfcfs inner, no KV cap)
            checked += 1
    assert checked > 100


def test_idles_only_when_every_eligible_request_has_negative_pressure(mp_run) -> None:
    name, model, run = mp_run
    cn = model.class_network()
    instants = np.unique(np.concatenate([run.created_ms, run.completion_ms[np.isfinite(run.completion_ms)]]))
    instants = instants[instants < run.horizon_ms]
    idle_with_work = 0
    for ei, e in enumerate(run.engine_names):
        starts = np.array([b.start_ms for b in run.batches[e]])
        ends = np.array([b.end_ms for b in run.batches[e]])
        for t in instants:
            j = np.searchsorted(starts, t, side="right") - 1
            if j >= 0 and starts[j] <= t < ends[j]:
                continue                                    # busy
            here = (run.engine == ei) & (run.created_ms <= t) & ~(run.completion_ms <= t)
            if not here.any():
                continue
            w = _weights(run, cn, t)
            assert np.all(w[run.klass[here]] < 0), (e, t)   # idle with work: all of it of negative pressure
            idle_with_work += 1
    if name == "tandem":      # e2's queue outgrows e1's: e1 holds its work back (not work-conserving)
        assert idle_with_work > 0


def test_stable_where_priority_to_exiting_classes_diverges() -> None:
    n_mp = simulate_network_reference(fl.load_model(MP), 1500.0, 7).requests_in_system(np.arange(0, 1501, 250.0))
    n_pr = simulate_network_reference(fl.load_model(EXAMPLES / "rybko_stolyar.toml"), 1500.0, 7) \
        .requests_in_system(np.arange(0, 1501, 250.0))
    assert np.all(np.diff(n_pr[1:]) > 0) and n_pr[-1] >= 5 * n_mp[-1]
    assert n_mp[1:].max() <= 3 * n_mp[1:].mean()
    assert network_fluid_verdict(fl.load_model(MP)).verdict == "DRAINS"


def test_pressure_order_and_spec() -> None:
    w = np.array([0.5, -0.1, 0.5, 0.0, 2.0])
    assert pressure_order(w, {0, 1, 2, 3}) == {0: 0, 2: 1, 3: 2}
    assert pressure_order(w, {1}) == {}
    assert PolicySpec("max-pressure").flag("inner") == "kfcfs"
    assert not PolicySpec("max-pressure").work_conserving
    with pytest.raises(ModelError, match="policy.inner"):
        PolicySpec("max-pressure", {"inner": "priority"})
    with pytest.raises(ModelError, match="order"):
        PolicySpec("max-pressure", {"order": ["A.short"]})
    assert set(fluid_policies_of(fl.load_model(MP)).values()) == {"max-weight"}
