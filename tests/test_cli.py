"""The command line: one JSON object with --json, human tables otherwise, exit 2 on bad input."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fluidllm.cli import main

ROOT = Path(__file__).resolve().parents[1]
EX = ROOT / "examples"


def run(capsys, *args):
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("name", ["paper_codellama_b512", "vertex_c_kmax100", "llama2_7b_a100_azure_conv"])
def test_capacity_json(capsys, name):
    rc, out, err = run(capsys, "capacity", str(EX / f"{name}.toml"), "--json")
    assert rc == 0 and err == ""
    d = json.loads(out)  # exactly one JSON object
    assert out.count("\n") == 1
    for e in d["engines"].values():
        assert {"max_token_rate_per_s", "argmax_batch_tokens", "binding"} <= set(e)
    for w in d["workloads"].values():
        assert "max_rate_per_s" in w
    assert isinstance(d["max_scale"], float)


def test_capacity_table_and_load(capsys):
    f = str(EX / "paper_codellama_b512.toml")
    rc, out, _ = run(capsys, "capacity", f)
    assert rc == 0 and "binding" in out and "token_budget" in out
    base = json.loads(run(capsys, "capacity", f, "--json")[1])["max_scale"]
    doubled = json.loads(run(capsys, "capacity", f, "--load", "2", "--json")[1])["max_scale"]
    assert doubled == pytest.approx(base / 2, rel=1e-9)


def test_region_and_presets(capsys):
    rc, out, _ = run(capsys, "region", str(EX / "vertex_c_kmax100.toml"), "--json")
    d = json.loads(out)
    verts = d["a100"]["vertices_per_s"]
    assert any(abs(v[0] - 29 / 46.75 * 1000) < 1e-6 and abs(v[1] - 99 / 46.75 * 1000) < 1e-6 for v in verts)
    rc, out, _ = run(capsys, "presets", "--json")
    assert "codellama-34b-a100" in json.loads(out)


def test_calibrate_writes_toml(capsys, tmp_path):
    prof = ROOT / "fluidllm" / "data" / "profile_llama-2-7b_a100.csv"
    out_toml = tmp_path / "bt.toml"
    rc, out, _ = run(capsys, "calibrate", str(prof), "--scenario", "prefill_only", "--n-boot", "20",
                     "--out", str(out_toml), "--json")
    assert rc == 0
    d = json.loads(out)
    assert {"model", "r2", "families"} <= set(d)
    assert "batch_time" in out_toml.read_text()


@pytest.mark.parametrize("args, field", [
    (["capacity", "nope.toml"], "model file"),
    (["capacity", "{bad}"], "model file"),
    (["calibrate", "missing.csv"], "profile"),
    (["calibrate", str(ROOT / "fluidllm/data/profile_llama-2-7b_a100.csv"), "--family", "cubic"], "famil"),
])
def test_bad_input_exits_2_without_traceback(capsys, args, field):
    rc, out, err = run(capsys, *args)
    assert rc == 2 and out == ""
    assert err.startswith("error: ") and field in err and "Traceback" not in err


def test_bad_model_field_through_the_real_script(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[engines.g]\ntoken_budget = 0\nbatch_time = { kind = "constant", c_ms = 1 }\n')
    p = subprocess.run([sys.executable, "-m", "fluidllm", "capacity", str(bad)], capture_output=True, text=True)
    assert p.returncode == 2
    assert p.stderr.strip() == "error: engines.g.token_budget = 0: must be an integer >= 1"


def test_json_is_one_object_even_when_a_native_solver_prints(tmp_path):
    # HiGHS prints a banner to fd 1 on its first solve in a process; --json must still be one object
    # on stdout (the banner, if any, goes to stderr). A network LP is the first solve here.
    p = subprocess.run([sys.executable, "-m", "fluidllm", "capacity", "examples/networks/replicas_jsq.toml", "--json"],
                       capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    assert p.returncode == 0, p.stderr
    obj = json.loads(p.stdout)
    assert "max_scale" in obj and p.stdout.count("\n") == 1
