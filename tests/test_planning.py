"""Trace-driven capacity planning (fluidllm.capacity.planning, fluidllm plan)."""
from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fluidllm as F
from fluidllm.capacity.planning import (CONFIRM_CYCLES, ConfirmResult, confirm_plan, load_engine, plan_engines,
                                        replica_set_model)
from fluidllm.capacity.planning_cli import run
from fluidllm.errors import ModelError
from fluidllm.model.arrivals import PoissonArrival
from fluidllm.model.batchtime import Staircase
from fluidllm.model.engine import Engine
from fluidllm.model.io import loads_model
from fluidllm.model.lengths import Deterministic, Geometric, Independent
from fluidllm.model.trace_replay import TraceReplay
from fluidllm.model.traces import Trace, load_trace
from fluidllm.model.workload import Workload

from conftest import MOONCAKE_DIR

DATA = Path(F.__file__).parent / "data"
# Prop. 3 check's engine: b_max 64, t(n) = 1 + 3 ceil(n/32) ms, mu* = 64/7 tokens/ms at n = 64.
MU_TOK_PER_S = 64 / 7 * 1000


def _engine(**kw) -> Engine:
    return Engine("g", 64, Staircase(1.0, 3.0, 32), **kw)


def _trace(rate_per_s: float, n: int = 2000, vp: int = 64, vd: int = 8, seed: int = 5) -> Trace:
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.exponential(1000.0 / rate_per_s, n))
    return Trace(t - t[0], np.full(n, vp), np.full(n, vd), {"synthetic": seed})


def _theta_toml(eng_toml: str, k: int, rate: float, vp: int, vd: int) -> float:
    """max_scale of K engines under JSQ, from a TOML model built here (independent of replica_set_model)."""
    names = [f"x{i}" for i in range(k)]
    doc = "".join(f"[engines.{n}]\n{eng_toml}\n" for n in names)
    route = 'routing = "jsq-tokens"\n' if k > 1 else ""
    doc += (f'[workflows.w]\narrival = {{ kind = "poisson", rate_per_s = {rate!r} }}\n[[workflows.w.calls]]\n'
            f'id = "c"\nengine = {json.dumps(names) if k > 1 else json.dumps(names[0])}\n{route}'
            f'prefill = {{ kind = "deterministic", value = {vp} }}\ndecode = {{ kind = "deterministic", value = {vd} }}\n')
    return float(F.capacity(loads_model(doc)).max_scale)


ENG_TOML = 'token_budget = 64\npolicy = "sarathi"\nbatch_time = { kind = "staircase", c_ms = 1.0, a_ms = 3.0, b0 = 32 }'


@pytest.mark.parametrize("rate, U", [(100.0, 0.8), (900.0, 0.8), (2500.0, 0.5), (2500.0, 0.95), (333.0, 1.0)])
def test_k_is_minimal_and_matches_prop3(rate: float, U: float) -> None:
    tr = _trace(rate)
    p = plan_engines(tr, _engine(), utilisation=U)
    lam = tr.rate_per_s
    # Prop. 3 closed form (deterministic lengths 64 + 8): K engines sustain K mu*/(m_p + m_d)
    per_engine = MU_TOK_PER_S / 72.0
    k_closed = math.ceil(lam / (U * per_engine))
    assert p.engines_needed == k_closed
    assert p.capacity_requests_per_s == pytest.approx(k_closed * per_engine, rel=1e-9)
    assert p.closed_form_requests_per_s == pytest.approx(k_closed * per_engine, rel=1e-12)
    assert p.capacity_per_engine_tokens_per_s == pytest.approx(MU_TOK_PER_S, rel=1e-9)
    assert p.offered_rate_per_s == pytest.approx(lam) and p.offered_tokens_per_s == pytest.approx(72 * lam)
    # minimal, by an LP on an independently written model: K meets U, K - 1 does not
    th_k = _theta_toml(ENG_TOML, p.engines_needed, lam, 64, 8)
    assert lam <= U * th_k * lam * (1 + 1e-9)
    assert p.load_per_engine == pytest.approx(1 / th_k, rel=1e-9) and p.load_per_engine <= U + 1e-9
    if p.engines_needed > 1:
        th_m1 = _theta_toml(ENG_TOML, p.engines_needed - 1, lam, 64, 8)
        assert lam > U * th_m1 * lam
        assert p.load_at_k_minus_1 == pytest.approx(1 / th_m1, rel=1e-9)
    else:
        assert p.load_at_k_minus_1 is None
    assert p.binding == "token_budget"


def test_rate_scale_is_a_faster_replay() -> None:
    tr = _trace(400.0)
    fast = Trace(tr.arrival_ms / 3.0, tr.prefill, tr.decode, tr.source)
    a, b = plan_engines(tr, _engine(), rate_scale=3.0), plan_engines(fast, _engine())
    assert a.engines_needed == b.engines_needed
    assert a.offered_rate_per_s == pytest.approx(b.offered_rate_per_s, rel=1e-12)
    assert a.offered_rate_per_s == pytest.approx(3 * tr.rate_per_s, rel=1e-12)


def test_empirical_and_fitted_lengths() -> None:
    tr = load_trace(dataset="azure-code-2023")
    e = plan_engines(tr, preset="codellama-34b-a100", rate_scale=4.0)
    assert e.lengths["kind"] == "empirical"
    assert e.mean_prefill == pytest.approx(tr.prefill.mean()) and e.mean_decode == pytest.approx(tr.decode.mean())
    per = e.max_token_rate_per_s / (e.mean_prefill + e.mean_decode)
    assert e.engines_needed == math.ceil(e.offered_rate_per_s / (0.8 * per))
    f = plan_engines(tr, preset="codellama-34b-a100", rate_scale=4.0, lengths="fitted")
    law = f.lengths_law
    assert isinstance(law, Independent)
    assert f.lengths["kind"] == "fitted" and f.lengths["prefill"]["best"] in ("geometric", "lognormal")
    assert f.mean_prefill == pytest.approx(law.mean_prefill) and f.mean_decode == pytest.approx(law.mean_decode)
    per_f = f.max_token_rate_per_s / (f.mean_prefill + f.mean_decode)
    assert f.engines_needed == math.ceil(f.offered_rate_per_s / (0.8 * per_f))


def test_workload_source_and_kv_memory() -> None:
    # geometric decode with a KV cap: no closed form, the LP still decides; K minimal by the same LP
    eng = _engine(kv_capacity_tokens=2000)
    w = Workload("w", PoissonArrival(300.0), Independent(Deterministic(64), Geometric(20.0)))
    p = plan_engines(w, eng, utilisation=0.7)
    assert p.closed_form_requests_per_s is None and p.source["workload"] == "w"
    th = {k: float(F.capacity(replica_set_model(eng, k, PoissonArrival(300.0), w.lengths)).max_scale)
          for k in (p.engines_needed - 1, p.engines_needed) if k >= 1}
    assert th[p.engines_needed] * 0.7 >= 1 - 1e-9
    if p.engines_needed > 1:
        assert th[p.engines_needed - 1] * 0.7 < 1
    # the KV cap can only lower capacity below the token-budget bound
    assert p.capacity_per_engine_tokens_per_s <= MU_TOK_PER_S * (1 + 1e-9)


def test_engine_from_toml_and_policy(tmp_path: Path) -> None:
    f = tmp_path / "eng.toml"
    f.write_text(f"[engines.a100]\n{ENG_TOML}\n")
    e = load_engine(f, policy="vllm")
    assert e.name == "a100" and e.policy.name == "vllm"
    p = plan_engines(_trace(300.0), f, policy="vllm")
    assert not p.policy_work_conserving and "not work-conserving" in p.table()
    two = tmp_path / "two.toml"
    two.write_text(f"[engines.a]\n{ENG_TOML}\n[engines.b]\n{ENG_TOML}\n")
    with pytest.raises(ModelError, match="name one of them"):
        load_engine(two)
    assert load_engine(two, name="b").name == "b"


@pytest.mark.parametrize("kw, field", [
    ({"utilisation": 0}, "utilisation"), ({"utilisation": 1.5}, "utilisation"), ({"rate_scale": 0}, "rate_scale"),
    ({"lengths": "bootstrap"}, "lengths"), ({"routing": "random"}, "routing"), ({"max_engines": 2}, "max_engines"),
    ({"preset": "codellama-34b-a100"}, "engine"), ({"policy": "nope"}, "policy"),
])
def test_bad_arguments_are_named(kw: dict, field: str) -> None:
    with pytest.raises(ModelError, match=field):
        plan_engines(_trace(2000.0), _engine(), **kw)


def test_bad_sources_are_named() -> None:
    with pytest.raises(ModelError, match="source"):
        plan_engines(42, _engine())  # type: ignore[arg-type]
    with pytest.raises(ModelError, match="source"):
        plan_engines(Trace(np.zeros(1), np.ones(1, int), np.ones(1, int), {}), _engine())
    with pytest.raises(ModelError, match="no such trace file"):
        plan_engines("/nonexistent/trace.csv", _engine())
    with pytest.raises(ModelError, match="engine"):
        plan_engines(_trace(100.0))
    with pytest.raises(ModelError, match="preset"):
        plan_engines(_trace(100.0), preset="no-such-gpu")


def test_confirm_stable_at_k_unstable_at_k_minus_1() -> None:
    # K = 2 at load 0.75, K - 1 = 1 at load 1.5. Backlog test alpha = 0.01 (a wrong definite verdict
    # <= 1 %); 6 replications of 6 s (about 1,100 requests each; one doubling when INCONCLUSIVE),
    # replays from random rows. Seeds 0-5 all gave STABLE / UNSTABLE (3 of them after the doubling).
    lam = 0.75 * 2 * MU_TOK_PER_S / 72
    p = plan_engines(_trace(lam, n=3000), _engine())
    assert p.engines_needed == 2 and p.load_at_k_minus_1 == pytest.approx(1.5, rel=0.05)
    c = confirm_plan(p, horizon_s=6, replications=6, seed=0)
    assert isinstance(c, ConfirmResult)
    assert c.at_k.verdict == "STABLE" and c.at_k.expected == "STABLE"
    assert c.at_k_minus_1 is not None and c.at_k_minus_1.verdict == "UNSTABLE" and c.confirmed
    # overload growth is about the fluid rate (load - 1) x capacity of one engine, within the interval's width
    lo, hi = c.at_k_minus_1.slope_interval
    fluid = (p.load_at_k_minus_1 - 1) * MU_TOK_PER_S
    assert lo - 0.25 * fluid <= fluid <= hi + 0.25 * fluid
    assert len(set(c.at_k.starts)) > 1
    json.dumps(c.to_dict(), allow_nan=False)


def test_confirm_core_and_reference_give_the_same_rows() -> None:
    # the trace replays differ per replication (random start rows); the vectorized network core gets
    # them as replication_models and must give the reference's verdict, slope and interval exactly
    lam = 0.75 * 2 * MU_TOK_PER_S / 72
    p = plan_engines(_trace(lam, n=3000), _engine())
    core = confirm_plan(p, horizon_s=3, replications=3, seed=4, extensions=0, simulator="core", workers=2)
    ref = confirm_plan(p, horizon_s=3, replications=3, seed=4, extensions=0, simulator="reference")
    for a, b in ((core.at_k, ref.at_k), (core.at_k_minus_1, ref.at_k_minus_1)):
        assert a.simulator == "core" and b.simulator == "reference"
        assert dataclasses.replace(a, simulator="reference") == b
    assert confirm_plan(p, horizon_s=3, replications=3, seed=4, extensions=0).at_k.simulator == "core"


def test_confirm_default_horizon_is_six_replay_cycles() -> None:
    # each of the backlog test's six windows then covers one whole period of the looped trace
    lam = 0.75 * 2 * MU_TOK_PER_S / 72
    p = plan_engines(_trace(lam, n=400), _engine())
    cycle_s = TraceReplay(p.trace, p.rate_scale).cycle_ms / 1000.0
    c = confirm_plan(p, replications=3, extensions=0)
    assert c.at_k.horizon_s == pytest.approx(CONFIRM_CYCLES * cycle_s) and CONFIRM_CYCLES == 6
    assert c.at_k_minus_1 is not None and c.at_k_minus_1.horizon_s == pytest.approx(6 * cycle_s)


def test_confirm_argument_errors() -> None:
    p = plan_engines(_trace(300.0), _engine())
    with pytest.raises(ModelError, match="replications"):
        confirm_plan(p, 1.0, replications=1)
    with pytest.raises(ModelError, match="horizon_s"):
        confirm_plan(p, horizon_s=0)
    with pytest.raises(ModelError, match="plan"):
        confirm_plan("plan")  # type: ignore[arg-type]
    with pytest.raises(ModelError, match="simulator"):
        confirm_plan(p, 1.0, simulator="gpu")
    with pytest.raises(ModelError, match="workers"):
        confirm_plan(p, 1.0, workers=0)


REQUIRED = {"engines_needed", "engine", "utilisation", "rate_scale", "offered_rate_per_s", "offered_tokens_per_s",
            "capacity_requests_per_s", "capacity_tokens_per_s", "capacity_per_engine_requests_per_s",
            "capacity_per_engine_tokens_per_s", "load_per_engine", "load_at_k_minus_1", "binding", "lengths",
            "max_token_rate_per_s", "closed_form_requests_per_s", "source"}


def _write_trace(path: Path, tr: Trace) -> None:
    rows = "\n".join(f"{float(t)!r},{int(p)},{int(d)}" for t, p, d in zip(tr.arrival_ms, tr.prefill, tr.decode))
    path.write_text("arrival_ms,prefill,decode\n" + rows + "\n")


def test_cli_json_keys(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    f, eng = tmp_path / "t.csv", tmp_path / "e.toml"
    _write_trace(f, _trace(500.0))
    eng.write_text(f"[engines.g]\n{ENG_TOML}\n")
    assert run([str(f), "--engine", str(eng), "--rate-scale", "2", "--utilisation", "0.7", "--json"]) == 0
    out = capfd.readouterr().out
    d = json.loads(out)              # exactly one JSON object on stdout (no solver banner)
    assert REQUIRED <= set(d)
    p = plan_engines(f, eng, rate_scale=2.0, utilisation=0.7)
    assert d["engines_needed"] == p.engines_needed and d["rate_scale"] == 2.0 and d["utilisation"] == 0.7
    assert run([str(f), "--preset", "codellama-34b-a100", "--token-budget", "256"]) == 0
    assert "plan:" in capfd.readouterr().out


def test_cli_confirm_json(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    f, eng = tmp_path / "t.csv", tmp_path / "e.toml"
    _write_trace(f, _trace(500.0))
    eng.write_text(f"[engines.g]\n{ENG_TOML}\n")
    status = run([str(f), "--engine", str(eng), "--confirm", "--horizon-s", "2", "--replications", "3",
                  "--workers", "2", "--json"])
    d = json.loads(capfd.readouterr().out)
    assert status == (0 if d["confirm"]["confirmed"] else 1)
    assert d["confirm"]["at_k"]["simulator"] == "core" and d["confirm"]["at_k"]["replications"] == 3
    with pytest.raises(SystemExit):   # argparse: an unknown simulator
        run([str(f), "--engine", str(eng), "--confirm", "--simulator", "gpu"])


def test_cli_json_stdout_is_one_object_in_a_fresh_process() -> None:
    # a fresh interpreter: HiGHS prints its banner on the process's first solve, straight into fd 1
    out = subprocess.run([sys.executable, "-m", "fluidllm", "plan", "azure-conv-2023", "--preset",
                          "codellama-34b-a100", "--json"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["engines_needed"] == 3


def test_cli_errors_exit_2(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "t.csv"
    _write_trace(f, _trace(500.0))
    assert run([str(f), "--preset", "codellama-34b-a100", "--utilisation", "2", "--json"]) == 2
    err = capfd.readouterr()
    assert err.out == "" and "utilisation" in err.err
    assert run([str(f), "--preset", "codellama-34b-a100", "--horizon-s", "5"]) == 2
    assert "--horizon-s" in capfd.readouterr().err
    with pytest.raises(SystemExit):   # argparse: --engine and --preset are exclusive
        run([str(f), "--preset", "x", "--engine", "y"])


def test_vendored_mooncake_subset() -> None:
    tr = load_trace(DATA / "mooncake_conv_2000.csv")
    assert len(tr) == 2000 and tr.arrival_ms[0] == 0 and tr.prefill.min() >= 1
    assert (DATA / "ATTRIBUTION-mooncake.md").is_file() and (DATA / "LICENSE-mooncake-apache-2.0.txt").is_file()
    p = plan_engines(tr, preset="llama-2-7b-h100")
    per = p.max_token_rate_per_s / (tr.prefill.mean() + tr.decode.mean())
    assert p.engines_needed == math.ceil(tr.rate_per_s / (0.8 * per))


@pytest.mark.skipif(not (MOONCAKE_DIR / "conversation_trace.jsonl").is_file(), reason="shared Mooncake traces absent")
def test_vendored_mooncake_matches_shared_source() -> None:
    full = load_trace(MOONCAKE_DIR / "conversation_trace.jsonl")
    sub = load_trace(DATA / "mooncake_conv_2000.csv")
    # the loader sorts stably by time; the source file is in time order, so the first 2,000 rows agree
    assert np.array_equal(full.prefill[:2000], sub.prefill) and np.array_equal(full.decode[:2000], sub.decode)
    assert np.allclose(full.arrival_ms[:2000], sub.arrival_ms)


def test_confirm_workload_source_uses_network_stability() -> None:
    # a Poisson workload (no trace): the verdicts come from network_stability on the replica sets
    lam = 0.75 * 2 * MU_TOK_PER_S / 72
    w = Workload("w", PoissonArrival(lam), Independent(Deterministic(64), Deterministic(8)))
    p = plan_engines(w, _engine())
    assert p.engines_needed == 2
    c = confirm_plan(p, horizon_s=6, replications=6, seed=0)
    assert c.replay.startswith("workload arrivals (poisson)")
    assert c.at_k.verdict == "STABLE" and c.at_k_minus_1 is not None and c.at_k_minus_1.expected == "UNSTABLE"
    assert c.at_k_minus_1.verdict in ("UNSTABLE", "INCONCLUSIVE")   # never STABLE at load 1.5 (alpha 1 %)
