"""`fluidllm capacity` and `fluidllm simulate` on network models ([workflows.*]) through the CLI."""
import json

import pytest

from fluidllm.cli import main


def test_capacity_json_keys_for_a_network(capsys) -> None:
    assert main(["capacity", "examples/networks/rybko_stolyar.toml", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    # each engine at load 0.9 (paper-notes §5.4): the LP region says 1/0.9, although priority fails
    assert d["max_scale"] == pytest.approx(1 / 0.9, rel=1e-6)
    for e in ("e1", "e2"):
        assert d["engines"][e]["max_token_rate_per_s"] == pytest.approx(768_000.0)
        assert d["engines"][e]["argmax_batch_tokens"] == 768 and d["engines"][e]["saturated"] is True
    assert {"A", "B"} <= set(d["workflows"]) and d["workflows"]["A"]["max_rate_per_s"] > 0
    assert "binding" in d["engines"]["e1"]


def test_simulate_a_network_json_and_single_engine_options_rejected(capsys) -> None:
    assert main(["simulate", "examples/networks/dag.toml", "--horizon-s", "2", "--replications", "2", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    for k in ("throughput_requests_per_s", "mean_requests_in_system", "max_requests_in_system",
              "final_backlog_tokens", "e2e_ms", "ttft_ms", "tbt_ms", "batches", "per_workflow"):
        assert k in d, k
    assert d["network"] is True and len(d["throughput_requests_per_s"]) == 2
    assert set(d["batches"]) == {"e1", "e2"} and set(d["e2e_ms"]) >= {"mean", "p50", "p90", "p99"}
    for opt in (["--policy", "orca"], ["--engine", "e1"], ["--backend", "torch"]):
        assert main(["simulate", "examples/networks/dag.toml", "--horizon-s", "1", *opt]) == 2
        err = capsys.readouterr().err
        assert opt[0] in err and "network" in err and "Traceback" not in err
