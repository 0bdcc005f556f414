"""fluidllm.testing: the policy checks on every built-in (the right classification, the minimal
counterexamples), on broken plug-ins, the user example as a user runs it, and `fluidllm check-policy`.
(The envelope, reachability, real-scale cases and brute force: tests/test_judge.py.)"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings

import fluidllm as fl
from fluidllm.cli import main
from fluidllm.sim.reference import check_plan
from fluidllm.testing import (DEFAULT_ENVELOPE, as_policy, check_invariants, check_matches, check_policy,
                              check_work_conserving, strategies, unreachable)

ROOT = Path(__file__).resolve().parents[1]
BUILTINS = ["fastertransformer", "fastertransformer-static", "vllm", "orca", "sarathi", "kfcfs", "vllm-v1"]
NOT_WC = ["fastertransformer", "fastertransformer-static", "vllm"]

PLUGINS = textwrap.dedent('''
    import itertools

    class PrefillFirst:
        """Prefill chunks FCFS; decodes only when no prompt waits: not work-conserving."""
        name = "prefill-first"
        work_conserving = True          # a wrong claim

        def plan(self, view):
            budget, plan = view.token_budget, {}
            if view.kv_free_tokens is not None:
                budget = min(budget, view.kv_free_tokens)
            k = view.max_batch_requests
            for r in view.requests:
                if r.prefill_left > 0 and budget > 0 and (k is None or len(plan) < k):
                    n = min(r.prefill_left, budget); plan[r.id] = (n, 0); budget -= n
            if not plan:
                for r in view.requests:
                    if r.decode_left > 0 and budget > 0 and (k is None or len(plan) < k):
                        plan[r.id] = (0, 1); budget -= 1
            return plan

        def plan_vectorized(self, B, state):   # wrong: decodes even when a prompt waits
            from fluidllm.policies.fill import fcfs_fill
            gp, budget, slots = fcfs_fill(B, state.pre, state.budget, state.slots, whole=False)
            gd, _, _ = fcfs_fill(B, B.astype((state.pre == 0) & (state.dec > 0), "int32"), budget, slots,
                                 whole=False)
            return gp, gd

    class Greedy:
        name = "greedy"

        def plan(self, view):           # every prompt whole: breaks the budget
            return {r.id: (r.prefill_left, 0) if r.prefill_left else (0, 1) for r in view.requests}

    class Moody:
        name = "moody"
        _calls = itertools.count()

        def plan(self, view):           # alternates between two valid plans: not deterministic
            r = view.requests[0]
            if next(self._calls) % 2 or r.prefill_left == 0:
                return {r.id: (0, 1)} if r.prefill_left == 0 else {r.id: (1, 0)}
            return {r.id: (min(r.prefill_left, view.token_budget, 2), 0)}
''')


@pytest.fixture()
def plugfile(tmp_path: Path) -> Path:
    p = tmp_path / "sched.py"
    p.write_text(PLUGINS)
    return p


# ------------------------------------------------------------------------------- built-ins


@pytest.mark.parametrize("name", BUILTINS)
def test_builtins_obey_the_rules_and_match_their_vectorized_rule(name: str) -> None:
    check_invariants(name, max_examples=80, exhaustive=False).assert_ok()
    check_matches(name, max_examples=40).assert_ok()


@pytest.mark.parametrize("name", NOT_WC)
def test_non_work_conserving_builtins_get_the_minimal_counterexample(name: str) -> None:
    r = check_work_conserving(name, max_examples=100)
    assert not r.work_conserving and r.declared is False and r.agrees_with_claim
    ce = r.counterexample
    # One decoder and a 1-token prompt at b_max = 2: the policy will not mix them.
    assert ce.view.token_budget == 2
    assert [(q.prefill_left, q.decode_left) for q in ce.view.requests] == [(0, 1), (1, 0)]
    assert ce.batch_tokens == 1 and ce.demand_tokens == 2 and ce.budget_tokens == 2
    assert ce.plan == ({1: (1, 0)} if name == "vllm" else {0: (0, 1)})
    d = r.to_dict()["counterexample"]
    assert d["state"]["requests"][1]["prefill_left"] == 1 and d["plan"] in ({"0": [0, 1]}, {"1": [1, 0]})
    with pytest.raises(AssertionError, match=r"(?s)b_max = 2.*id 1: prefill left 1.*holds 1 token"):
        r.assert_ok()


@pytest.mark.parametrize("name", ["orca", "sarathi", "kfcfs", "vllm-v1"])
def test_work_conserving_builtins_pass(name: str) -> None:
    r = check_work_conserving(name, max_examples=150)
    assert r.work_conserving and r.declared is True and r.counterexample is None
    s = r.search          # every state of the corner, the structured ones, then the hypothesis budget
    assert s.exhaustive == 11816 and s.structured > 1000 and s.random == 150 and r.examples == s.total
    assert s.max_requests >= 4097 and s.max_budget == 4096 and min(s.with_k_max, s.with_kv, s.with_resident_cap) > 0
    assert "every reachable state" in r.summary() and "structured" in r.summary()


def test_a_chunk_cap_breaks_work_conservation() -> None:
    r = check_work_conserving(fl.PolicySpec("sarathi", {"chunk_size": 2}), max_examples=50)
    ce = r.counterexample
    assert not r.work_conserving and ce.view.token_budget == 3
    assert [(q.prefill_left, q.decode_left) for q in ce.view.requests] == [(3, 0)] and ce.batch_tokens == 2


def test_reports_are_deterministic() -> None:
    a = check_work_conserving("vllm", max_examples=60, exhaustive=False, seed=4)
    b = check_work_conserving("vllm", max_examples=60, exhaustive=False, seed=4)
    assert a == b and not a.work_conserving


# ------------------------------------------------------------------------------- plug-ins


def test_plugin_checks_find_each_fault(plugfile: Path) -> None:
    wc = check_work_conserving(f"{plugfile}:PrefillFirst", max_examples=100)
    assert not wc.work_conserving and wc.declared is True and not wc.agrees_with_claim
    assert [(q.prefill_left, q.decode_left) for q in wc.counterexample.view.requests] == [(0, 1), (1, 0)]
    check_invariants(f"{plugfile}:PrefillFirst", max_examples=50).assert_ok()
    m = check_matches(f"{plugfile}:PrefillFirst", max_examples=100)
    assert not m.ok and "vectorized gives (0, 1), scalar (0, 0)" in m.counterexample.problem

    bad = check_invariants(f"{plugfile}:Greedy", max_examples=50)
    assert not bad.ok and "exceed token_budget" in bad.counterexample.problem
    with pytest.raises(AssertionError, match=r"(?s)state: b_max = 1.*prefill left 2.*exceed token_budget = 1"):
        bad.assert_ok()
    moody = check_invariants(f"{plugfile}:Moody", max_examples=50)
    assert not moody.ok and "not deterministic" in moody.counterexample.problem


def test_policy_objects_specs_and_names_are_all_accepted(plugfile: Path) -> None:
    from fluidllm.policies.plugin import load_policy

    obj = load_policy(f"{plugfile}:PrefillFirst")
    spec = fl.PolicySpec("python", {"target": f"{plugfile}:PrefillFirst"})
    reports = [check_work_conserving(p, max_examples=20).counterexample for p in (obj, spec)]
    assert reports[0] == reports[1]
    with pytest.raises(fl.ModelError, match="policy"):
        check_invariants(42)


@settings(max_examples=60, deadline=None)
@given(strategies.states(DEFAULT_ENVELOPE.for_policy(as_policy("fastertransformer-static"))))
def test_generated_views_are_states_the_engine_can_show(view) -> None:
    ids = [r.id for r in view.requests]
    assert ids == sorted(set(ids)) and all(r.arrival_index == r.id for r in view.requests)
    assert all(r.prefill_left + r.decode_left > 0 and (r.running or r.prefill_left > 0) for r in view.requests)
    assert all(r.running == (r.kv_tokens > 0) for r in view.requests) and view.static_group <= set(ids)
    assert view.kv_capacity_tokens is None or view.kv_capacity_tokens >= view.kv_free_tokens >= 0
    assert unreachable(view, DEFAULT_ENVELOPE.for_policy(as_policy("fastertransformer-static"))) is None
    check_plan(view, {})


def test_import_needs_no_pytest_and_names_the_extra_without_hypothesis() -> None:
    code = ("import sys; import fluidllm.testing; assert 'pytest' not in sys.modules; "
            "sys.modules['hypothesis'] = None; [sys.modules.pop(k) for k in list(sys.modules) "
            "if k.startswith('fluidllm.testing')]\n"
            "try:\n    import fluidllm.testing\nexcept ImportError as e:\n    print(e)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "fluidllm[test]" in out.stdout and "hypothesis" in out.stdout


# ------------------------------------------------------------------------------- the user example


def test_the_user_example_passes_as_a_user_runs_it() -> None:
    folder = ROOT / "examples" / "my_scheduler"
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_my_policy.py"],
                         cwd=folder, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "4 passed" in out.stdout
    m = fl.load_model(folder / "model.toml")
    assert m.engines["a100"].policy.options["target"] == f"{(folder / 'my_policy.py').resolve()}:MyPolicy"


# ------------------------------------------------------------------------------- the CLI


def test_cli_check_policy_on_a_file_outside_the_package(plugfile: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(plugfile.parent)
    rc = main(["check-policy", "sched.py:PrefillFirst", "--json", "--replications", "2", "--horizon-s", "20",
               "--max-examples", "100"])
    d = json.loads(capsys.readouterr().out)
    assert rc == 1                                     # its work-conserving claim is wrong
    assert d["invariants_ok"] is True and d["work_conserving"] is False
    assert set(d["counterexample"]) >= {"state", "plan"} and d["counterexample"]["plan"] == {"1": [1, 0]}
    assert 0 < d["max_scale"] < 1.1 * d["work_conserving_max_scale"] and d["capacity"]["method"] == "simulated"


def test_cli_check_policy_builtin_text_and_analytic_capacity(capsys) -> None:
    assert main(["check-policy", "sarathi", "--max-examples", "50"]) == 0
    out = capsys.readouterr().out
    assert "work-conserving: YES" in out and "default model" in out and "(analytic)" in out
    assert main(["check-policy", "vllm", "--json", "--no-capacity", "--max-examples", "50"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["work_conserving"] is False and d["max_scale"] is None and d["counterexample"]["plan"] == {"1": [1, 0]}


@pytest.mark.parametrize("target,match", [("missing.py:X", "no such file"), ("sched.py:Nope", "no attribute"),
                                          ("nosuchpolicy", "built-in policy name")])
def test_cli_bad_target_is_a_model_error_exit_2(plugfile: Path, target: str, match: str, capsys, monkeypatch) -> None:
    monkeypatch.chdir(plugfile.parent)
    assert main(["check-policy", target]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: policy.target") and match in err and "Traceback" not in err


def test_check_policy_with_a_model_file_and_engine() -> None:
    res = check_policy("orca", ROOT / "examples" / "paper_codellama_b512.toml", engine="a100", max_examples=30)
    assert res.capacity.method == "analytic" and res.capacity.max_scale == res.capacity.work_conserving_max_scale
    assert res.to_dict()["engine"] == "a100"
    with pytest.raises(fl.ModelError, match="--engine"):
        check_policy("sarathi", ROOT / "examples" / "paper_codellama_b512.toml", engine="nope", capacity=False)


def test_check_policy_keeps_the_params_the_model_gives_its_plugin() -> None:
    folder = ROOT / "examples" / "my_scheduler"
    res = check_policy(f"{folder / 'my_policy.py'}:MyPolicy", folder / "model.toml", capacity=False, max_examples=100)
    assert res.policy == "decode-first(prefill_cap=128)" and res.target.options["params"] == {"prefill_cap": 128}
    ce = res.work_conserving.counterexample
    assert not res.work_conserving.ok and res.ok                 # not work-conserving, and it says so
    # judged on the model's engine (b_max 512, 129-token prompts): one prompt alone gets 128 tokens
    assert ce.view.token_budget == 512 and [q.prefill_left for q in ce.view.requests] == [129]
    assert ce.batch_tokens == 128
    assert res.to_dict()["max_scale"] is None and res.exit_code == 0
