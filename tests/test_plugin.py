"""Plug-in policies (``policy = { kind = "python", target = ... }``): loading, the engine's checks,
and the same batches as the built-in rule they reimplement, in the reference simulator and in the
Markov chain."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

import fluidllm as fl
from fluidllm.markov import build_chain, solve
from fluidllm.model.batchtime import Constant
from fluidllm.policies.plugin import PlanViolation, load_policy, policy_object
from fluidllm.sim.reference import run_reference

DECODE_FIRST = textwrap.dedent('''
    class DecodeFirst:
        """Sarathi written against the plug-in API: decodes FCFS, then prefill chunks FCFS."""
        name = "decode-first"
        work_conserving = True

        def __init__(self, chunk=None):
            self.chunk = chunk

        def plan(self, view):
            budget = view.token_budget
            slots = view.max_batch_requests or budget
            plan = {}
            for r in view.requests:
                if budget and slots and r.prefill_left == 0 and r.decode_left > 0:
                    plan[r.id] = (0, 1); budget -= 1; slots -= 1
            for r in view.requests:
                if budget and slots and r.prefill_left > 0:
                    n = min(r.prefill_left, budget, self.chunk or r.prefill_left)
                    plan[r.id] = (n, 0); budget -= n; slots -= 1
            return plan

    class Greedy:
        name = "greedy"

        def plan(self, view):   # gives every request everything: breaks the budget
            return {r.id: (r.prefill_left, 0) if r.prefill_left else (0, 1) for r in view.requests}

    class NoName:
        def plan(self, view):
            return {}

    class Raises:
        name = "raises"

        def plan(self, view):
            raise RuntimeError("boom")
''')


@pytest.fixture()
def plugfile(tmp_path: Path) -> Path:
    p = tmp_path / "sched.py"
    p.write_text(DECODE_FIRST)
    return p


def _spec(path: Path, cls: str = "DecodeFirst", **params) -> fl.PolicySpec:
    opts = {"target": f"{path}:{cls}"}
    if params:
        opts["params"] = params
    return fl.PolicySpec("python", opts)


def test_plugin_matches_the_builtin_rule_batch_for_batch(plugfile: Path) -> None:
    m = fl.load_model("examples/paper_codellama_b512.toml")
    for spec, ref in ((_spec(plugfile), fl.PolicySpec("sarathi")),
                      (_spec(plugfile, chunk=64), fl.PolicySpec("sarathi", {"chunk_size": 64}))):
        a = run_reference(m.with_engine("a100", policy=spec).engines["a100"], list(m.workloads.values()), 30_000, 5)
        b = run_reference(m.with_engine("a100", policy=ref).engines["a100"], list(m.workloads.values()), 30_000, 5)
        assert len(a.batches) == len(b.batches) > 100
        assert all(x.tokens == y.tokens and x.end_ms == y.end_ms for x, y in zip(a.batches, b.batches))
    assert _spec(plugfile).work_conserving is True


def test_plugin_in_the_markov_chain_equals_the_builtin(plugfile: Path) -> None:
    laws = dict(prefill={1: 0.5, 3: 0.5}, decode={0: 0.3, 2: 0.7}, arrivals={0: 0.6, 1: 0.4}, max_requests=6)
    a = solve(build_chain(fl.Engine("e", 3, Constant(1.0), policy=_spec(plugfile)), **laws))
    b = solve(build_chain(fl.Engine("e", 3, Constant(1.0), policy=fl.PolicySpec("sarathi")), **laws))
    assert a.mean_in_system == pytest.approx(b.mean_in_system, rel=1e-10)
    with pytest.raises(fl.ModelError, match="decode"):
        build_chain(fl.Engine("e", 3, Constant(1.0), policy=_spec(plugfile)), prefill={1: 1.0},
                    decode=__import__("fluidllm.markov", fromlist=["GeometricDecode"]).GeometricDecode(0.5),
                    arrivals={0: 0.5, 1: 0.5}, max_requests=4)


def test_toml_target_relative_to_the_model_file(tmp_path: Path) -> None:
    (tmp_path / "pol").mkdir()
    (tmp_path / "pol" / "sched.py").write_text(DECODE_FIRST)
    (tmp_path / "m.toml").write_text(textwrap.dedent('''
        [engines.e]
        token_budget = 64
        batch_time = { kind = "constant", c_ms = 10 }
        policy = { kind = "python", target = "pol/sched.py:DecodeFirst", params = { chunk = 16 } }
        [workloads.w]
        arrival = { kind = "poisson", rate_per_s = 5 }
        prefill = { kind = "deterministic", value = 40 }
        decode = { kind = "deterministic", value = 3 }
    '''))
    m = fl.load_model(tmp_path / "m.toml")
    spec = m.engines["e"].policy
    assert spec.options["target"] == f"{(tmp_path / 'pol' / 'sched.py').resolve()}:DecodeFirst"
    assert policy_object(spec).chunk == 16


def test_broken_plans_are_caught_by_the_engine(plugfile: Path) -> None:
    m = fl.load_model("examples/paper_codellama_b512.toml")
    with pytest.raises(PlanViolation, match="greedy.*exceed|budget"):
        run_reference(m.with_engine("a100", policy=_spec(plugfile, "Greedy")).engines["a100"],
                      list(m.workloads.values()), 30_000, 1)
    with pytest.raises(PlanViolation, match="raised RuntimeError: boom"):
        run_reference(m.with_engine("a100", policy=_spec(plugfile, "Raises")).engines["a100"],
                      list(m.workloads.values()), 30_000, 1)


@pytest.mark.parametrize("target,match", [
    ("nowhere.py:X", "no such file"),
    ("fluidllm_no_such_module:X", "cannot be imported"),
    ("fluidllm.policies.plugin:Missing", "no attribute"),
    ("no-colon", "file.py:ClassName"),
])
def test_bad_targets_name_the_field(target: str, match: str) -> None:
    with pytest.raises(fl.ModelError, match=match) as e:
        load_policy(target)
    assert e.value.field == "policy.target"


def test_bad_objects_and_params(plugfile: Path) -> None:
    with pytest.raises(fl.ModelError, match="str `name`"):
        load_policy(f"{plugfile}:NoName")
    with pytest.raises(fl.ModelError, match="constructing") as e:
        load_policy(f"{plugfile}:DecodeFirst", {"bogus": 1})
    assert e.value.field == "policy.params"
    with pytest.raises(fl.ModelError, match="must be a table"):
        fl.PolicySpec("python", {"target": f"{plugfile}:DecodeFirst", "params": 3})
