"""TOML load/save: round trips of random models, file-backed laws, relative paths."""
from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

import fluidllm as F
from conftest import AZURE_SMALL, MOONCAKE_SMALL, models, write_azure_csv, write_mooncake_jsonl, write_profile_csv

DESIGN_EXAMPLE = """
[engines.gpu0]
token_budget = 512                  # b_max
max_batch_requests = 100            # optional, k_max per batch
kv_capacity_tokens = 131000         # optional
policy = "sarathi"
batch_time = { kind = "staircase", c_ms = 11.28, a_ms = 35.47, b0 = 128 }

[workloads.chat]
arrival = { kind = "poisson", rate_per_s = 10.4 }
prefill = { kind = "deterministic", value = 129 }
decode  = { kind = "geometric", mean = 112 }
engine  = "gpu0"
"""


def test_design_example_loads():
    m = F.loads_model(DESIGN_EXAMPLE)
    e = m.engines["gpu0"]
    assert (e.token_budget, e.max_batch_requests, e.kv_capacity_tokens) == (512, 100, 131000)
    assert e.max_resident_requests is None
    assert e.policy == F.PolicySpec("sarathi")
    assert e.batch_time == F.Staircase(11.28, 35.47, 128)
    w = m.workloads["chat"]
    assert w.arrival == F.PoissonArrival(10.4) and w.engine == "gpu0"
    assert w.lengths == F.Independent(F.Deterministic(129), F.Geometric(112.0))
    assert F.loads_model(F.dumps_model(m)) == m


def test_single_engine_workload_may_omit_engine():
    text = DESIGN_EXAMPLE.replace('engine  = "gpu0"', "")
    assert F.loads_model(text).workloads["chat"].engine == "gpu0"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(models())
def test_hypothesis_round_trip(m):
    text = F.dumps_model(m)
    back = F.loads_model(text)
    assert back == m
    assert F.dumps_model(back) == text
    # rates, means and batch times survive exactly
    for name, w in m.workloads.items():
        assert back.workloads[name].rate_per_s == w.rate_per_s
        assert back.workloads[name].lengths.mean_tokens == w.lengths.mean_tokens
    for name, e in m.engines.items():
        b = back.engines[name]
        if e.batch_time.tokens_only:
            n = np.arange(1, e.token_budget + 1)
            assert np.array_equal(b.batch_time.tokens_ms(n), e.batch_time.tokens_ms(n))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                                 HealthCheck.function_scoped_fixture])
@given(models())
def test_hypothesis_save_load(tmp_path, m):
    p = tmp_path / "sub" / "model.toml"
    p.parent.mkdir(exist_ok=True)
    F.save_model(m, p)
    assert F.load_model(p) == m


def test_policy_flags_round_trip():
    for spec in [F.PolicySpec("vllm", {"split_long_prompts": True}), F.PolicySpec("sarathi", {"chunk_size": 256}),
                 F.PolicySpec("priority", {"inner": "sarathi", "order": ["b", "a"]}),
                 F.PolicySpec("python", {"target": "x.py:Cls"}), F.PolicySpec("sarathi", {"chunk_size": None})]:
        e = F.Engine("g", 64, F.Constant(1.0), policy=spec)
        m = F.Model({"g": e})
        assert F.loads_model(F.dumps_model(m)).engines["g"].policy == spec


def test_trace_arrival_inline_times_round_trip():
    m = F.Model({"g": F.Engine("g", 8, F.Constant(1.0))},
                {"w": F.Workload("w", F.TraceArrival(np.array([0.0, 1.5, 4.0]), 3.0),
                                 F.Independent(F.Deterministic(1), F.Deterministic(0)))})
    assert F.loads_model(F.dumps_model(m)) == m


# ------------------------------------------------------------------------------ files


def _project(root: Path) -> Path:
    """A model folder with data beside it: models/m.toml referring to ../data/*."""
    write_azure_csv(root / "data" / "azure.csv", AZURE_SMALL)
    write_mooncake_jsonl(root / "data" / "moon.jsonl", MOONCAKE_SMALL)
    write_profile_csv(root / "data" / "profile.csv", [1, 8, 64, 256, 1024], [9.0, 9.5, 11.0, 18.0, 55.0])
    text = """
[engines.gpu0]
token_budget = 1024
policy = { kind = "vllm", split_long_prompts = true }
batch_time = { kind = "table", file = "../data/profile.csv" }

[engines.gpu1]
token_budget = 512
batch_time = { preset = "codellama-34b-a100" }

[workloads.chat]
arrival = { kind = "trace", file = "../data/azure.csv", speedup = 2.5 }
prefill = { kind = "empirical", file = "../data/azure.csv", column = "prefill" }
decode  = { kind = "mixture", weights = [0.5, 0.5], components = [
  { kind = "empirical", file = "../data/moon.jsonl", column = "decode" },
  { kind = "lognormal", mean = 40.0, sigma = 0.5 } ] }
engine = "gpu0"

[workloads.moon]
arrival = { kind = "trace", file = "../data/moon.jsonl" }
lengths = { kind = "empirical-pairs", file = "../data/moon.jsonl" }
engine = "gpu1"

[workloads.vendored]
arrival = { kind = "renewal", rate_per_s = 2.0, scv = 3.0, distribution = "lognormal" }
lengths = { kind = "empirical-pairs", dataset = "azure-code-2023" }
engine = "gpu1"
"""
    p = root / "models" / "m.toml"
    p.parent.mkdir(parents=True)
    p.write_text(text)
    return p


def test_file_backed_model_loads(tmp_path):
    m = F.load_model(_project(tmp_path / "proj"))
    chat = m.workloads["chat"]
    assert np.array_equal(chat.lengths.prefill.values, [a[1] for a in AZURE_SMALL])
    assert chat.arrival.speedup == 2.5 and chat.arrival.times_ms.size == len(AZURE_SMALL)
    moon = m.workloads["moon"].lengths
    assert isinstance(moon, F.EmpiricalPairs)
    assert np.array_equal(moon.prefill, [r[1] for r in MOONCAKE_SMALL])
    assert np.array_equal(moon.decode, [r[2] for r in MOONCAKE_SMALL])
    assert np.array_equal(m.workloads["moon"].arrival.times_ms, [0.0, 0.0, 40.0, 125.5])
    tab = m.engines["gpu0"].batch_time
    assert isinstance(tab, F.Table) and tab.tokens_ms(64) == pytest.approx(11.0)
    assert m.workloads["vendored"].lengths.prefill.size == 8819


def test_save_then_load_with_relative_paths(tmp_path):
    src = _project(tmp_path / "proj")
    m = F.load_model(src)
    out = tmp_path / "proj" / "models" / "deeper" / "again.toml"
    out.parent.mkdir()
    F.save_model(m, out)
    text = out.read_text()
    assert str(tmp_path) not in text  # every file path is written relative to the new file
    doc = tomllib.loads(text)
    assert doc["engines"]["gpu0"]["batch_time"]["file"] == "../../data/profile.csv"
    assert doc["workloads"]["chat"]["prefill"]["file"] == "../../data/azure.csv"
    assert doc["workloads"]["vendored"]["lengths"] == {"kind": "empirical-pairs", "dataset": "azure-code-2023"}
    assert F.load_model(out) == m

    # move the whole folder: relative paths still find the data
    moved = tmp_path / "elsewhere" / "copy"
    shutil.copytree(tmp_path / "proj", moved)
    shutil.rmtree(tmp_path / "proj")
    m2 = F.load_model(moved / "models" / "deeper" / "again.toml")
    assert m2.workloads["chat"].lengths.prefill.digest == m.workloads["chat"].lengths.prefill.digest
    assert m2.workloads["moon"].lengths.digest == m.workloads["moon"].lengths.digest
    assert np.array_equal(m2.workloads["chat"].arrival.times_ms, m.workloads["chat"].arrival.times_ms)
    assert m2.engines["gpu0"].batch_time == m.engines["gpu0"].batch_time
    assert m2.workloads["chat"].lengths.prefill.source["file"].startswith(str(moved.resolve()))
    assert F.load_model(moved / "models" / "m.toml").workloads["chat"].lengths == m2.workloads["chat"].lengths


def test_dumps_without_base_dir_writes_absolute_paths(tmp_path):
    m = F.load_model(_project(tmp_path / "proj"))
    doc = tomllib.loads(F.dumps_model(m))
    assert Path(doc["workloads"]["chat"]["prefill"]["file"]).is_absolute()
    assert F.loads_model(F.dumps_model(m), base_dir="/nonexistent") == m


def test_model_to_dict_shape():
    m = F.loads_model(DESIGN_EXAMPLE)
    d = F.model_to_dict(m)
    assert d["engines"]["gpu0"]["batch_time"] == {"kind": "staircase", "c_ms": 11.28, "a_ms": 35.47, "b0": 128}
    assert d["workloads"]["chat"]["prefill"] == {"kind": "deterministic", "value": 129}
    assert d["workloads"]["chat"]["decode"] == {"kind": "geometric", "mean": 112.0}
