"""simulate_network: its definitions checked on a deterministic network and against the reference runs."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import fluidllm as fl
from fluidllm.errors import ModelError
from fluidllm.sim.network_reference import simulate_network_reference
from fluidllm.sim.network_simulate import simulate_network

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "networks"

# one request every 10 ms, (v_p, v_d) = (1, 2) on a 1 ms engine, then (2, 1) on another: each call takes
# 3 batches (prefill, then one decode token per batch) resp. 2 batches.
DET = """
[engines.e1]
token_budget = 8
policy = "kfcfs"
batch_time = { kind = "constant", c_ms = 1 }
[engines.e2]
token_budget = 8
policy = "sarathi"
batch_time = { kind = "constant", c_ms = 1 }
[workflows.W]
arrival = { kind = "deterministic", rate_per_s = 100 }
[[workflows.W.calls]]
id = "a"
engine = "e1"
prefill = { kind = "deterministic", value = 1 }
decode = { kind = "deterministic", value = 2 }
[[workflows.W.calls]]
id = "b"
engine = "e2"
prefill = { kind = "deterministic", value = 2 }
decode = { kind = "deterministic", value = 1 }
after = ["a"]
"""


def test_deterministic_network_closed_forms() -> None:
    res = simulate_network(fl.loads_model(DET), replications=2, horizon_s=1.0, seed=0)
    d = res.to_dict()
    assert d["e2e_ms"]["mean"] == pytest.approx(5.0) and d["e2e_ms"]["p99"] == pytest.approx(5.0)
    # TTFT: call a 2 ms (prefill batch, then its first decode token), call b 2 ms; TBT only for v_d >= 2: 1 ms
    assert d["ttft_ms"]["mean"] == pytest.approx(2.0) and d["tbt_ms"]["mean"] == pytest.approx(1.0)
    # in system: call a for 3 ms and call b for 2 ms of every 10 ms
    assert d["mean_requests_in_system"] == pytest.approx([0.5, 0.5], abs=2e-3)
    assert d["max_requests_in_system"] == [1, 1]
    assert d["throughput_requests_per_s"] == pytest.approx([100.0, 100.0], abs=1.0)
    assert d["batches"]["e1"]["busy_fraction"] == pytest.approx([0.3, 0.3], abs=2e-3)
    assert d["batches"]["e2"]["decode_only_fraction"] == pytest.approx([0.5, 0.5], abs=2e-3)
    json.dumps(d, allow_nan=False)


def test_outputs_are_the_reference_runs_summarised() -> None:
    model = fl.load_model(EXAMPLES / "fork_join.toml")
    res = simulate_network(model, replications=3, horizon_s=3.0, seed=5, load=0.8)
    H = 3000.0
    for r in range(3):
        run = simulate_network_reference(model.scaled(0.8), H, np.random.default_rng([5, r]))
        out = res.runs[r]
        assert out["jobs_completed"] == run.n_instances_completed
        e2e = run.e2e_ms
        assert out["e2e_ms"]["mean"] == pytest.approx(e2e.mean() if e2e.size else np.nan, nan_ok=True)
        # exact time average against a fine sampling of the step function
        ts = np.linspace(0, H, 300_001)[:-1]
        assert out["mean_in_system"] == pytest.approx(run.requests_in_system(ts).mean(), rel=2e-3, abs=2e-3)
        for e in run.engine_names:
            assert out["engines"][e]["batches"] == len(run.batches[e])
    # the numbers do not depend on workers
    again = simulate_network(model, replications=3, horizon_s=3.0, seed=5, load=0.8, workers=2)
    assert again.to_dict() == res.to_dict()


def test_bad_arguments() -> None:
    model = fl.load_model(EXAMPLES / "dag.toml")
    with pytest.raises(ModelError, match="replications"):
        simulate_network(model, replications=0)
    with pytest.raises(ModelError, match="horizon_s"):
        simulate_network(model, horizon_s=-1)
    with pytest.raises(ModelError, match="model"):
        simulate_network(fl.load_model("examples/paper_codellama_b512.toml"))


def _same(a, b, path: str = "") -> None:
    """Equal outputs: dicts key by key, numbers to 1e-9 (sums in a different order), NaN where NaN."""
    if isinstance(a, dict):
        assert set(a) == set(b), path
        for k in a:
            _same(a[k], b[k], f"{path}.{k}")
    else:
        np.testing.assert_allclose(np.asarray(a, float), np.asarray(b, float), rtol=1e-9, atol=1e-9,
                                   equal_nan=True, err_msg=path)


@pytest.mark.parametrize("name", ["dag.toml", "fork_join.toml", "replicas_jsq.toml", "rybko_stolyar.toml"])
def test_vectorized_core_gives_the_reference_outputs(name: str) -> None:
    # every per-replication output (latency percentiles, exact in-system average and max, batch mix,
    # busy fraction, series, final backlog) equals the reference's summary of the same replications
    model = fl.load_model(EXAMPLES / name)
    h = 0.4 if name == "rybko_stolyar.toml" else 15.0
    core = simulate_network(model, replications=3, horizon_s=h, seed=2, simulator="core")
    ref = simulate_network(model, replications=3, horizon_s=h, seed=2, simulator="reference")
    assert (core.simulator, ref.simulator) == ("core", "reference")
    assert core.runs[0]["jobs_completed"] > 0
    for x, y in zip(core.runs, ref.runs):
        _same(x, y)
    blocks = simulate_network(model, replications=3, horizon_s=h, seed=2, simulator="core", workers=2)
    for x, y in zip(blocks.runs, core.runs):
        _same(x, y)


def test_simulator_choice() -> None:
    mp = fl.load_model(EXAMPLES / "rybko_stolyar_maxpressure.toml")
    assert simulate_network(mp, replications=2, horizon_s=0.05, seed=0).simulator == "reference"
    with pytest.raises(ModelError, match="simulator = 'core'.*max-pressure"):
        simulate_network(mp, replications=2, horizon_s=0.05, simulator="core")
    with pytest.raises(ModelError, match="simulator"):
        simulate_network(mp, replications=2, horizon_s=0.05, simulator="gpu")
    dag = fl.load_model(EXAMPLES / "dag.toml")
    assert simulate_network(dag, replications=2, horizon_s=0.5, seed=0).simulator == "core"
