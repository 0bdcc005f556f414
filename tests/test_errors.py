"""Bad input: one ModelError (a ValueError) that names the field and the value."""
from __future__ import annotations

import math

import numpy as np
import pytest

import fluidllm as F
from conftest import write_azure_csv

ENGINE = """
[engines.gpu0]
token_budget = 512
batch_time = { kind = "staircase", c_ms = 11.28, a_ms = 35.47, b0 = 128 }
"""
WORKLOAD = """
[workloads.w]
arrival = { kind = "poisson", rate_per_s = 1.0 }
prefill = { kind = "deterministic", value = 129 }
decode = { kind = "geometric", mean = 112 }
"""
GOOD = ENGINE + WORKLOAD


def with_line(old: str, new: str, text: str = GOOD) -> str:
    assert old in text, old
    return text.replace(old, new)


def arrival(s):
    return with_line('arrival = { kind = "poisson", rate_per_s = 1.0 }', f"arrival = {s}")


def prefill(s):
    return with_line('prefill = { kind = "deterministic", value = 129 }', f"prefill = {s}")


def decode(s):
    return with_line('decode = { kind = "geometric", mean = 112 }', f"decode = {s}")


def engine_line(s):
    return with_line("token_budget = 512", s)


def batch_time(s):
    return with_line('batch_time = { kind = "staircase", c_ms = 11.28, a_ms = 35.47, b0 = 128 }', f"batch_time = {s}")


NAN = object()  # marker: the value must be NaN

# (id, TOML text, expected field, expected value)
TOML_CASES = [
    # rates
    ("rate-negative", arrival('{ kind = "poisson", rate_per_s = -1.0 }'), "workloads.w.arrival.rate_per_s", -1.0),
    ("rate-nan", arrival('{ kind = "poisson", rate_per_s = nan }'), "workloads.w.arrival.rate_per_s", NAN),
    ("rate-inf", arrival('{ kind = "poisson", rate_per_s = inf }'), "workloads.w.arrival.rate_per_s", math.inf),
    ("rate-string", arrival('{ kind = "poisson", rate_per_s = "fast" }'), "workloads.w.arrival.rate_per_s", "fast"),
    ("det-rate-negative", arrival('{ kind = "deterministic", rate_per_s = -2.5 }'),
     "workloads.w.arrival.rate_per_s", -2.5),
    ("det-offset-negative", arrival('{ kind = "deterministic", rate_per_s = 1.0, offset_ms = -3.0 }'),
     "workloads.w.arrival.offset_ms", -3.0),
    ("renewal-rate-inf", arrival('{ kind = "renewal", rate_per_s = -inf, scv = 2.0 }'),
     "workloads.w.arrival.rate_per_s", -math.inf),
    ("renewal-scv-zero", arrival('{ kind = "renewal", rate_per_s = 1.0, scv = 0.0 }'), "workloads.w.arrival.scv", 0.0),
    ("renewal-scv-nan", arrival('{ kind = "renewal", rate_per_s = 1.0, scv = nan }'), "workloads.w.arrival.scv", NAN),
    ("renewal-distribution", arrival('{ kind = "renewal", rate_per_s = 1.0, distribution = "pareto" }'),
     "workloads.w.arrival.distribution", "pareto"),
    ("weibull-scv-unreachable", arrival('{ kind = "renewal", rate_per_s = 1.0, scv = 1e-9, distribution = "weibull" }'),
     "workloads.w.arrival.scv", 1e-9),
    ("trace-speedup-zero", arrival('{ kind = "trace", dataset = "azure-conv-2023", speedup = 0.0 }'),
     "workloads.w.arrival.speedup", 0.0),
    ("arrival-kind", arrival('{ kind = "hawkes", rate_per_s = 1.0 }'), "workloads.w.arrival.kind", "hawkes"),
    # length laws
    ("empirical-empty", prefill('{ kind = "empirical", values = [] }'), "workloads.w.prefill.values", "<0 values>"),
    ("empirical-negative", decode('{ kind = "empirical", values = [3, 0, -2] }'), "workloads.w.decode.values[2]", -2),
    ("empirical-fraction", decode('{ kind = "empirical", values = [3, 1.5] }'), "workloads.w.decode.values", "<data>"),
    ("deterministic-negative", decode('{ kind = "deterministic", value = -3 }'), "workloads.w.decode.value", -3),
    ("deterministic-fraction", decode('{ kind = "deterministic", value = 2.5 }'), "workloads.w.decode.value", 2.5),
    ("uniform-low-gt-high", decode('{ kind = "uniform", low = 10, high = 5 }'), "workloads.w.decode.high", 5),
    ("uniform-negative", decode('{ kind = "uniform", low = -1, high = 5 }'), "workloads.w.decode.low", -1),
    ("geometric-below-min", decode('{ kind = "geometric", mean = 0.5 }'), "workloads.w.decode.mean", 0.5),
    ("geometric-below-explicit-min", decode('{ kind = "geometric", mean = 3.0, min = 5 }'),
     "workloads.w.decode.mean", 3.0),
    ("geometric-mean-nan", decode('{ kind = "geometric", mean = nan }'), "workloads.w.decode.mean", NAN),
    ("poisson-below-min", decode('{ kind = "poisson", mean = -4.0 }'), "workloads.w.decode.mean", -4.0),
    ("poisson-negative-min", decode('{ kind = "poisson", mean = 4.0, min = -1 }'), "workloads.w.decode.min", -1),
    ("lognormal-sigma-zero", decode('{ kind = "lognormal", mean = 10.0, sigma = 0.0 }'),
     "workloads.w.decode.sigma", 0.0),
    ("lognormal-mean-inf", decode('{ kind = "lognormal", mean = inf, sigma = 1.0 }'),
     "workloads.w.decode.mean", math.inf),
    ("mixture-weights", decode('{ kind = "mixture", weights = [0.5, 0.6], components = '
                               '[{ kind = "deterministic", value = 1 }, { kind = "deterministic", value = 2 }] }'),
     "workloads.w.decode.weights", [0.5, 0.6]),
    ("mixture-bad-component", decode('{ kind = "mixture", weights = [1.0], components = '
                                     '[{ kind = "uniform", low = 9, high = 2 }] }'),
     "workloads.w.decode.components[0].high", 2),
    ("law-kind", decode('{ kind = "zipf", mean = 3.0 }'), "workloads.w.decode.kind", "zipf"),
    ("empirical-column", decode('{ kind = "empirical", dataset = "azure-conv-2023", column = "output" }'),
     "workloads.w.decode.column", "output"),
    ("dataset-unknown", decode('{ kind = "empirical", dataset = "sharegpt", column = "decode" }'),
     "workloads.w.decode.dataset", "sharegpt"),
    # prefill law with mass at 0 tokens
    ("prefill-zero-deterministic", prefill('{ kind = "deterministic", value = 0 }'), "workloads.w.prefill", 0),
    ("prefill-zero-geometric", prefill('{ kind = "geometric", mean = 5.0, min = 0 }'), "workloads.w.prefill", 0),
    ("prefill-zero-poisson", prefill('{ kind = "poisson", mean = 5.0, min = 0 }'), "workloads.w.prefill", 0),
    ("prefill-zero-uniform", prefill('{ kind = "uniform", low = 0, high = 5 }'), "workloads.w.prefill", 0),
    ("prefill-zero-empirical", prefill('{ kind = "empirical", values = [4, 0, 9] }'), "workloads.w.prefill", 0),
    ("prefill-zero-mixture", prefill('{ kind = "mixture", weights = [0.9, 0.1], components = '
                                     '[{ kind = "deterministic", value = 7 }, { kind = "deterministic", value = 0 }] }'),
     "workloads.w.prefill", 0),
    ("prefill-zero-pairs", with_line('prefill = { kind = "deterministic", value = 129 }\n'
                                     'decode = { kind = "geometric", mean = 112 }',
                                     'lengths = { kind = "empirical-pairs", prefill = [3, 0], decode = [1, 1] }'),
     "workloads.w.prefill", 0),
    # engine limits
    ("token-budget-zero", engine_line("token_budget = 0"), "engines.gpu0.token_budget", 0),
    ("token-budget-negative", engine_line("token_budget = -3"), "engines.gpu0.token_budget", -3),
    ("token-budget-fraction", engine_line("token_budget = 1.5"), "engines.gpu0.token_budget", 1.5),
    ("k-max-zero", engine_line("token_budget = 512\nmax_batch_requests = 0"), "engines.gpu0.max_batch_requests", 0),
    ("resident-zero", engine_line("token_budget = 512\nmax_resident_requests = -1"),
     "engines.gpu0.max_resident_requests", -1),
    ("kv-zero", engine_line("token_budget = 512\nkv_capacity_tokens = 0"), "engines.gpu0.kv_capacity_tokens", 0),
    # policies
    ("policy-unknown", engine_line('token_budget = 512\npolicy = "tgi"'), "engines.gpu0.policy", "tgi"),
    ("policy-table-unknown", engine_line('token_budget = 512\npolicy = { kind = "tgi" }'), "engines.gpu0.policy", "tgi"),
    ("policy-flag-unknown", engine_line('token_budget = 512\npolicy = { kind = "sarathi", chunky = 3 }'),
     "engines.gpu0.policy.chunky", 3),
    ("policy-flag-not-for-policy", engine_line('token_budget = 512\npolicy = { kind = "kfcfs", chunk_size = 64 }'),
     "engines.gpu0.policy.chunk_size", 64),
    ("policy-flag-type", engine_line('token_budget = 512\npolicy = { kind = "vllm", split_long_prompts = 1 }'),
     "engines.gpu0.policy.split_long_prompts", 1),
    ("policy-chunk-zero", engine_line('token_budget = 512\npolicy = { kind = "orca", chunk_size = 0 }'),
     "engines.gpu0.policy.chunk_size", 0),
    ("policy-priority-inner", engine_line('token_budget = 512\npolicy = { kind = "priority", inner = "priority" }'),
     "engines.gpu0.policy.inner", "priority"),
    ("policy-no-kind", engine_line('token_budget = 512\npolicy = { chunk_size = 8 }'), "engines.gpu0.policy.kind", None),
    # batch time
    ("batch-time-kind", batch_time('{ kind = "quadratic", c_ms = 1.0 }'), "engines.gpu0.batch_time.kind", "quadratic"),
    ("batch-time-no-kind", batch_time("{ c_ms = 1.0 }"), "engines.gpu0.batch_time.kind", None),
    ("preset-unknown", batch_time('{ preset = "gpt-9-h100" }'), "engines.gpu0.batch_time.preset", "gpt-9-h100"),
    ("preset-extra-key", batch_time('{ preset = "codellama-34b-a100", c_ms = 1.0 }'),
     "engines.gpu0.batch_time.c_ms", 1.0),
    ("batch-time-param-negative", batch_time('{ kind = "affine", c_ms = 1.0, a_ms = -0.1 }'),
     "engines.gpu0.batch_time.a_ms", -0.1),
    ("batch-time-missing-param", batch_time('{ kind = "staircase", c_ms = 1.0, a_ms = 1.0 }'),
     "engines.gpu0.batch_time.b0", None),
    ("table-short", batch_time('{ kind = "table", tokens = [1, 256], times_ms = [5.0, 20.0] }'),
     "engines.gpu0.token_budget", 512),
    ("table-from-2", batch_time('{ kind = "table", tokens = [2, 512], times_ms = [5.0, 20.0] }'),
     "engines.gpu0.token_budget", 512),
    # unknown keys, unknown names
    ("top-level-key", GOOD + "\n[solver]\nname = 'highs'\n", "solver", {"name": "highs"}),
    ("engine-key", engine_line("token_budget = 512\ntoken_budgett = 5"), "engines.gpu0.token_budgett", 5),
    ("workload-key", with_line("[workloads.w]", "[workloads.w]\npriority = 2"), "workloads.w.priority", 2),
    ("law-key", decode('{ kind = "geometric", mean = 112, meann = 3 }'), "workloads.w.decode.meann", 3),
    ("arrival-key", arrival('{ kind = "poisson", rate_per_s = 1.0, burst = 3 }'), "workloads.w.arrival.burst", 3),
    ("batch-time-key", batch_time('{ kind = "constant", c_ms = 1.0, d_ms = 2.0 }'), "engines.gpu0.batch_time.d_ms", 2.0),
    ("workload-unknown-engine", with_line("[workloads.w]", '[workloads.w]\nengine = "gpu9"'),
     "workloads.w.engine", "gpu9"),
    ("workload-no-arrival", with_line('arrival = { kind = "poisson", rate_per_s = 1.0 }', ""),
     "workloads.w.arrival", None),
    ("workload-no-decode", decode("").replace("decode = ", ""), "workloads.w.decode", None),
    ("engine-no-batch-time", batch_time("").replace("batch_time = ", ""), "engines.gpu0.batch_time", None),
    ("no-engines", WORKLOAD, "engines", {}),
    ("two-engines-no-choice", GOOD + '\n[engines.gpu1]\ntoken_budget = 8\nbatch_time = { kind = "constant", c_ms = 1.0 }\n',
     "workloads.w.engine", None),
    # missing files
    ("missing-trace-arrival", arrival('{ kind = "trace", file = "nope.csv" }'), "workloads.w.arrival.file", "nope.csv"),
    ("missing-trace-law", decode('{ kind = "empirical", file = "nope.jsonl", column = "decode" }'),
     "workloads.w.decode.file", "nope.jsonl"),
    ("missing-table", batch_time('{ kind = "table", file = "profile.csv" }'), "engines.gpu0.batch_time.file",
     "profile.csv"),
]


def _check(err: F.ModelError, field: str, value) -> None:
    assert isinstance(err, ValueError)
    assert err.field == field, str(err)
    msg = str(err)
    assert msg.startswith(field), msg
    if value is NAN:
        assert isinstance(err.value, float) and math.isnan(err.value), msg
        assert "nan" in msg
    else:
        assert err.value == value or (isinstance(value, str) and str(value) in str(err.value)), (err.value, value)
        assert repr(value) in msg or str(value) in msg, msg
    assert err.allowed and err.allowed in msg


@pytest.mark.parametrize("text,field,value", [c[1:] for c in TOML_CASES], ids=[c[0] for c in TOML_CASES])
def test_bad_toml_raises_model_error(tmp_path, text, field, value):
    assert F.loads_model(GOOD)  # the base model is valid
    with pytest.raises(F.ModelError) as ei:
        F.loads_model(text, base_dir=tmp_path)
    _check(ei.value, field, value)


@pytest.mark.parametrize("text", ["[engines.gpu0\n", "token_budget = = 3", "[engines.gpu0]\nx = [1, 2\n",
                                  GOOD + "\n[engines.gpu0]\ntoken_budget = 5\n"])
def test_malformed_toml(text):
    with pytest.raises(F.ModelError, match="malformed") as ei:
        F.loads_model(text)
    assert ei.value.field == "TOML"


def test_missing_model_file(tmp_path):
    with pytest.raises(F.ModelError) as ei:
        F.load_model(tmp_path / "model.toml")
    _check(ei.value, "model file", str(tmp_path / "model.toml"))


def test_trace_row_with_negative_tokens_in_model(tmp_path):
    write_azure_csv(tmp_path / "bad.csv", [("2023-11-16 18:15:46.0", 10, 2), ("2023-11-16 18:15:47.0", -5, 3)])
    with pytest.raises(F.ModelError) as ei:
        F.loads_model(prefill('{ kind = "empirical", file = "bad.csv", column = "prefill" }'), tmp_path)
    assert ei.value.value == -5
    assert "bad.csv" in ei.value.field and "row 3" in ei.value.field and "workloads.w.prefill" in ei.value.field
    with pytest.raises(F.ModelError) as ei:
        F.loads_model(arrival('{ kind = "trace", file = "bad.csv" }'), tmp_path)
    assert ei.value.value == -5 and "row 3" in str(ei.value)
    lengths = with_line('prefill = { kind = "deterministic", value = 129 }\ndecode = { kind = "geometric", mean = 112 }',
                        'lengths = { kind = "empirical-pairs", file = "bad.csv" }')
    with pytest.raises(F.ModelError) as ei:
        F.loads_model(lengths, tmp_path)
    assert ei.value.value == -5 and "row 3" in str(ei.value)


def test_table_file_not_covering_budget(tmp_path):
    (tmp_path / "p.csv").write_text("tokens_in_batch,iteration_ms\n1,5.0\n64,9.0\n")
    with pytest.raises(F.ModelError) as ei:
        F.loads_model(batch_time('{ kind = "table", file = "p.csv" }'), tmp_path)
    _check(ei.value, "engines.gpu0.token_budget", 512)
    assert "1..64" in str(ei.value)


# ------------------------------------------------------------------------------ constructors

CONSTRUCTOR_CASES = [
    ("poisson-negative", lambda: F.PoissonArrival(-1.0), "rate_per_s", -1.0),
    ("poisson-nan", lambda: F.PoissonArrival(math.nan), "rate_per_s", NAN),
    ("poisson-inf", lambda: F.PoissonArrival(math.inf), "rate_per_s", math.inf),
    ("deterministic-nan", lambda: F.DeterministicArrival(math.nan), "rate_per_s", NAN),
    ("renewal-negative", lambda: F.RenewalArrival(-0.5), "rate_per_s", -0.5),
    ("renewal-weibull-scv-huge", lambda: F.RenewalArrival(1.0, 1e13, "weibull"), "scv", 1e13),
    ("empirical-empty", lambda: F.Empirical(np.array([], dtype=int)), "values", "<0 values>"),
    ("empirical-negative", lambda: F.Empirical(np.array([1, -4])), "values[1]", -4),
    ("uniform-inverted", lambda: F.Uniform(7, 3), "high", 3),
    ("geometric-below-min", lambda: F.Geometric(0.2), "mean", 0.2),
    ("geometric-inf", lambda: F.Geometric(math.inf), "mean", math.inf),
    ("mixture-negative-weight", lambda: F.Mixture((1.5, -0.5), (F.Deterministic(1), F.Deterministic(2))),
     "weights[1]", -0.5),
    ("mixture-count", lambda: F.Mixture((1.0,), (F.Deterministic(1), F.Deterministic(2))), "weights", [1.0]),
    ("token-budget", lambda: F.Engine("e", 0, F.Constant(1.0)), "engines.e.token_budget", 0),
    ("k-max", lambda: F.Engine("e", 8, F.Constant(1.0), max_batch_requests=0), "engines.e.max_batch_requests", 0),
    ("engine-batch-time-type", lambda: F.Engine("e", 8, 3.0), "engines.e.batch_time", 3.0),
    ("table-coverage", lambda: F.Engine("e", 100, F.Table(np.array([1.0, 99.0]), np.array([1.0, 2.0]))),
     "engines.e.token_budget", 100),
    ("policy-unknown", lambda: F.PolicySpec("round-robin"), "policy", "round-robin"),
    ("policy-flag", lambda: F.PolicySpec("orca", {"split_long_prompts": True}), "policy.split_long_prompts", True),
    ("policy-python-target", lambda: F.PolicySpec("python", {"target": "nocolon"}), "policy.target", "nocolon"),
    ("prefill-zero", lambda: F.Workload("w", F.PoissonArrival(1.0), F.Independent(F.Uniform(0, 3), F.Deterministic(1))),
     "workloads.w.prefill", 0),
    ("workload-engine", lambda: F.Model({"e": F.Engine("e", 8, F.Constant(1.0))},
                                        {"w": F.Workload("w", F.PoissonArrival(1.0),
                                                         F.Independent(F.Deterministic(1), F.Deterministic(1)), "x")}),
     "workloads.w.engine", "x"),
    ("engine-name-key", lambda: F.Model({"a": F.Engine("b", 8, F.Constant(1.0))}), "engines.a.name", "b"),
    ("preset", lambda: __import__("fluidllm.presets", fromlist=["get_preset"]).get_preset("nope"),
     "batch_time.preset", "nope"),
    ("scale-model", lambda: F.loads_model(GOOD).scaled(-1.0), "load", -1.0),
    ("with-engine", lambda: F.loads_model(GOOD).with_engine("gpu7", token_budget=3), "engine", "gpu7"),
]


@pytest.mark.parametrize("make,field,value", [c[1:] for c in CONSTRUCTOR_CASES], ids=[c[0] for c in CONSTRUCTOR_CASES])
def test_bad_constructor_arguments(make, field, value):
    with pytest.raises(F.ModelError) as ei:
        make()
    _check(ei.value, field, value)


def test_model_error_is_one_line_with_parts():
    e = F.ModelError("engines.gpu0.token_budget", -3, "must be an integer >= 1")
    assert isinstance(e, ValueError)
    assert str(e) == "engines.gpu0.token_budget = -3: must be an integer >= 1"
    assert (e.field, e.value, e.allowed) == ("engines.gpu0.token_budget", -3, "must be an integer >= 1")
    assert "\n" not in str(e)
