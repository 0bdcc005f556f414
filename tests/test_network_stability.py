"""Network stability verdicts through the reference network simulator (fluidllm.sim.network_stability)."""
import json

import numpy as np
import pytest

import fluidllm as fl
from fluidllm.cli import main
from fluidllm.sim.network_reference import simulate_network_reference
from fluidllm.sim.network_stability import network_backlog, network_horizon_ms, network_stability
from proofs_checks.check_network_dag_forkjoin import DAG, network


@pytest.fixture(scope="module")
def dag():
    return network(DAG)


def test_dag_verdicts_below_and_above_lp_capacity(dag):
    cap = fl.capacity(dag).max_scale
    lo = network_stability(dag, load=0.9 * cap, replications=8, horizon_s=2.0, seed=0, extensions=0)
    hi = network_stability(dag, load=1.1 * cap, replications=8, horizon_s=2.0, seed=0, extensions=0)
    assert (lo.verdict, lo.fluid_verdict) == ("STABLE", "DRAINS")
    assert (hi.verdict, hi.fluid_verdict) == ("UNSTABLE", "DIVERGES")
    assert lo.fluid_slope_tokens_per_s == pytest.approx(0.0, abs=1.0)
    # the fluid token content from empty grows at the bottleneck's excess, 0.1 * 256 tokens/ms
    assert hi.fluid_slope_tokens_per_s == pytest.approx(25_600, rel=0.02)
    assert hi.slope_interval[0] < hi.fluid_slope_tokens_per_s * 1.2 and hi.slope_interval[1] > 0.8 * 25_600
    assert hi.engine_loads["e2"] == pytest.approx(1.1)


def test_backlog_is_created_minus_served_and_workers_do_not_matter(dag):
    run = simulate_network_reference(dag.scaled(0.5), 200.0, 3)
    end = run.end_ms + 1.0
    left = sum(run.tokens_left(e) for e in run.engine_names)
    assert network_backlog(run, [0.0, end])[1] == left
    a = network_stability(dag, load=0.5, replications=2, horizon_s=0.2, seed=5, extensions=0)
    b = network_stability(dag, load=0.5, replications=2, horizon_s=0.2, seed=5, extensions=0, workers=2)
    assert np.array_equal(a.backlog, b.backlog)
    assert network_horizon_ms(dag, 0.5) >= 10_000.0


def test_cli_json_keys(tmp_path, capsys):
    p = tmp_path / "dag.toml"
    p.write_text(DAG)
    assert main(["stability", str(p), "--json", "--load", "0.5", "--replications", "2", "--horizon-s", "0.3"]) == 0
    d = json.loads(capsys.readouterr().out)
    for k in ("verdict", "slope_tokens_per_s", "slope_interval", "fluid_slope_tokens_per_s", "fluid_verdict",
              "offered_tokens_per_s", "horizon_s", "replications", "seed", "load", "details", "engine_loads"):
        assert k in d
    assert d["verdict"] in ("STABLE", "UNSTABLE", "INCONCLUSIVE") and d["horizons_s"][0] == 0.3


@pytest.mark.parametrize("opt", [["--policy", "sarathi"], ["--engine", "e1"]])
def test_cli_policy_or_engine_with_network_exits_2(tmp_path, capsys, opt):
    p = tmp_path / "dag.toml"
    p.write_text(DAG)
    assert main(["stability", str(p), "--horizon-s", "0.1", *opt]) == 2
    assert opt[0] in capsys.readouterr().err


def test_core_and_reference_give_one_verdict(dag):
    a = network_stability(dag, load=0.9, replications=4, horizon_s=1.0, seed=3, extensions=0, simulator="core")
    b = network_stability(dag, load=0.9, replications=4, horizon_s=1.0, seed=3, extensions=0,
                          simulator="reference")
    assert (a.simulator, b.simulator) == ("core", "reference")
    assert np.array_equal(a.backlog, b.backlog) and a.to_dict()["details"] == b.to_dict()["details"]
