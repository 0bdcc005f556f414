"""`fluidllm simulate` and `fluidllm stability`: one JSON object with --json, text otherwise, exit 2 on bad input."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from fluidllm.cli import main

ROOT = Path(__file__).resolve().parents[1]
PAPER = str(ROOT / "examples" / "paper_codellama_b512.toml")
LATENCY_KEYS = {"mean", "p50", "p90", "p99"}
VERDICTS = {"STABLE", "UNSTABLE", "INCONCLUSIVE"}


def run(capsys, *args):
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def one_json(out: str) -> dict:
    assert out.count("\n") == 1  # exactly one JSON object on one line
    return json.loads(out)


def test_simulate_json_has_the_required_keys(capsys):
    rc, out, err = run(capsys, "simulate", PAPER, "--replications", "2", "--horizon-s", "20", "--json")
    assert rc == 0 and err == ""
    d = one_json(out)
    assert {"throughput_requests_per_s", "mean_requests_in_system", "max_requests_in_system",
            "final_backlog_tokens", "e2e_ms", "ttft_ms", "tbt_ms", "batches"} <= set(d)
    assert len(d["final_backlog_tokens"]) == 2  # one per replication
    for key in ("e2e_ms", "ttft_ms", "tbt_ms"):
        assert LATENCY_KEYS <= set(d[key])
        assert d[key]["mean"] > 0
    assert d["policy"] == "sarathi" and d["load"] == 1.0 and "series" not in d


def test_simulate_load_policy_and_series(capsys):
    rc, out, _ = run(capsys, "simulate", PAPER, "--replications", "2", "--horizon-s", "10", "--load", "0.5",
                     "--policy", "orca", "--seed", "3", "--series", "--json")
    d = one_json(out)
    assert rc == 0 and d["policy"] == "orca" and d["load"] == 0.5 and d["seed"] == 3
    assert len(d["series"]["backlog_tokens"]) == 2


def test_simulate_text_prints_a_table(capsys):
    rc, out, err = run(capsys, "simulate", PAPER, "--replications", "2", "--horizon-s", "10")
    assert rc == 0 and err == ""
    assert "throughput" in out and "TTFT" in out and "e2e" in out and "req/s" in out
    with pytest.raises(json.JSONDecodeError):
        json.loads(out)


def test_stability_json_has_the_required_keys(capsys):
    rc, out, err = run(capsys, "stability", PAPER, "--horizon-s", "60", "--replications", "4", "--json")
    assert rc == 0 and err == ""
    d = one_json(out)
    assert {"verdict", "slope_tokens_per_s", "slope_interval", "fluid_slope_tokens_per_s"} <= set(d)
    assert d["verdict"] in VERDICTS
    assert len(d["slope_interval"]) == 2
    assert d["fluid_slope_tokens_per_s"] == 0.0  # sarathi is work-conserving; 0.75 of capacity
    assert d["verdict"] != "UNSTABLE"


def test_fastertransformer_above_its_capacity_is_unstable(capsys):
    # FasterTransformer (decode-first, no mixing) loses capacity: at 1.3 x the example's rate (0.975 of
    # the token capacity) its backlog grows at ~3300 tokens/s, decided on the first 60 s horizon.
    args = ("stability", PAPER, "--policy", "fastertransformer", "--load", "1.3", "--horizon-s", "60",
            "--replications", "4")
    rc, out, _ = run(capsys, *args, "--json")
    d = one_json(out)
    assert rc == 0 and d["policy"] == "fastertransformer" and d["load"] == 1.3
    assert d["verdict"] == "UNSTABLE" and d["slope_interval"][0] > 1000
    assert d["fluid_slope_tokens_per_s"] is None  # not work-conserving: no fluid oracle
    rc, out, _ = run(capsys, *args)
    assert rc == 0 and "UNSTABLE" in out and "fastertransformer" in out


def test_stability_boundary(capsys):
    args = ("stability", PAPER, "--policy", "fastertransformer", "--horizon-s", "30", "--replications", "2",
            "--boundary", "0.3:1.3")
    rc, out, _ = run(capsys, *args, "--json")
    d = one_json(out)
    assert rc == 0 and {"stable_load", "unstable_load", "rounds"} <= set(d["boundary"])
    assert d["boundary"]["policy"] == "fastertransformer"
    rc, out, _ = run(capsys, *args)
    assert rc == 0 and "stability boundary" in out


@pytest.mark.parametrize("args, field", [
    (["simulate", PAPER, "--load", "-1"], "--load"),
    (["stability", PAPER, "--load", "-1"], "--load"),
    (["simulate", PAPER, "--policy", "nope"], "policy"),
    (["stability", PAPER, "--policy", "nope"], "policy"),
    (["simulate", "missing.toml"], "model file"),
    (["stability", "missing.toml"], "model file"),
    (["simulate", PAPER, "--policy", "priority", "--horizon-s", "1"], "priority"),
    (["stability", PAPER, "--policy", "priority", "--horizon-s", "1"], "priority"),
    (["simulate", PAPER, "--engine", "nope"], "--engine"),
    (["stability", PAPER, "--boundary", "1.5:1.0"], "--boundary"),
    (["stability", PAPER, "--boundary", "x"], "--boundary"),
    (["simulate", PAPER, "--replications", "0"], "replications"),
])
def test_bad_input_exits_2_without_traceback(capsys, args, field):
    rc, out, err = run(capsys, *args)
    assert rc == 2 and out == ""
    assert err.startswith("error: ") and field in err and "Traceback" not in err


@pytest.mark.parametrize("args", [
    ["simulate", PAPER, "--load", "abc"],
    ["stability", PAPER, "--backend", "jax"],
    ["stability", PAPER, "--replications", "2.5"],
])
def test_argparse_errors_exit_2(capsys, args):
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


def test_policy_needs_engine_when_the_model_has_several(capsys, tmp_path):
    two = tmp_path / "two.toml"
    two.write_text('[engines.a]\ntoken_budget = 64\nbatch_time = { kind = "constant", c_ms = 10 }\n'
                   '[engines.b]\ntoken_budget = 64\nbatch_time = { kind = "constant", c_ms = 10 }\n'
                   '[workloads.w]\nengine = "b"\narrival = { kind = "poisson", rate_per_s = 1 }\n'
                   'prefill = { kind = "deterministic", value = 4 }\ndecode = { kind = "deterministic", value = 4 }\n')
    rc, out, err = run(capsys, "simulate", str(two), "--policy", "orca", "--horizon-s", "5")
    assert rc == 2 and out == "" and err.startswith("error: --engine")
    rc, out, _ = run(capsys, "simulate", str(two), "--policy", "orca", "--engine", "b", "--horizon-s", "5",
                     "--replications", "2", "--json")
    d = one_json(out)
    assert rc == 0 and d["engine"] == "b" and d["policy"] == "orca"
