"""`fluidllm capacity` on network models ([workflows.*]): the static planning LP through the CLI."""
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


def test_commands_without_network_support_exit_2(capsys) -> None:
    assert main(["simulate", "examples/networks/dag.toml", "--horizon-s", "1"]) == 2
    err = capsys.readouterr().err
    assert "NetworkModel" in err and "not simulated" in err and "Traceback" not in err
