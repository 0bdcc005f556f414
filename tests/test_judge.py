"""The work-conservation judge on the model's own envelope: reachable states only, real scale, the
false yeses (a decode cap of 4, vLLM v1's 128-sequence cap) caught, the false no (a user's Sarathi on
a model without a KV limit) gone, and the verdicts equal to brute force on small envelopes."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

import fluidllm as fl
from fluidllm.cli import main
from fluidllm.sim.reference import RequestView, View, check_plan
from fluidllm.testing import (DEFAULT_ENVELOPE, Envelope, RequestClass, Support, as_policy, brute_force,
                              check_invariants,
                              check_policy, check_work_conserving, enumerate_states, envelope_for, small_envelope,
                              strategies, structured_states, unreachable)

ROOT = Path(__file__).resolve().parents[1]
VLLM_V1_DEFAULTS = f"{ROOT / 'examples' / 'real_systems' / 'vllm_v1_defaults.py'}:VLLMV1Defaults"

PLUGINS = textwrap.dedent('''
    class MySarathi:
        """Sarathi-Serve written against the documented contract only: token_budget,
        max_batch_requests, requests (id, prefill_left, decode_left)."""
        name = "my-sarathi"
        work_conserving = True

        def plan(self, view):
            budget, k, plan = view.token_budget, view.max_batch_requests, {}
            for r in view.requests:
                if r.prefill_left == 0 and r.decode_left > 0 and budget > 0 and (k is None or len(plan) < k):
                    plan[r.id] = (0, 1); budget -= 1
            for r in view.requests:
                if r.prefill_left > 0 and budget > 0 and (k is None or len(plan) < k):
                    n = min(r.prefill_left, budget); plan[r.id] = (n, 0); budget -= n
            return plan

    class DecodeCap:
        """Sarathi with at most `cap` decode tokens per batch."""
        work_conserving = True              # wrong

        def __init__(self, cap=4):
            self.cap, self.name = cap, f"decode-cap-{cap}"

        def plan(self, view):
            budget = view.token_budget if view.kv_free_tokens is None else min(view.token_budget, view.kv_free_tokens)
            k, plan, nd = view.max_batch_requests, {}, 0
            for r in view.requests:
                room = budget > 0 and nd < self.cap and (k is None or len(plan) < k)
                if r.prefill_left == 0 and r.decode_left > 0 and room:
                    plan[r.id] = (0, 1); budget -= 1; nd += 1
            for r in view.requests:
                if r.prefill_left > 0 and budget > 0 and (k is None or len(plan) < k):
                    n = min(r.prefill_left, budget); plan[r.id] = (n, 0); budget -= n
            return plan

    class Lazy:
        """K-FCFS that keeps one token of the budget back: deliberately not work-conserving."""
        name = "lazy"

        def plan(self, view):
            budget = view.token_budget if view.kv_free_tokens is None else min(view.token_budget, view.kv_free_tokens)
            budget = max(1, budget - 1) if budget > 0 else 0
            k, plan = view.max_batch_requests, {}
            for r in view.requests:
                if budget <= 0 or (k is not None and len(plan) >= k):
                    break
                n = 1 if r.prefill_left == 0 else min(r.prefill_left, budget)
                plan[r.id] = (n, 0) if r.prefill_left else (0, 1); budget -= n
            return plan

    class HugeStateBug(MySarathi):
        """Breaks the budget only with more than 300 requests resident (the simulator never gets there)."""
        name = "huge-state-bug"

        def plan(self, view):
            plan = MySarathi.plan(self, view)
            if len(view.requests) > 300:
                plan = {r.id: (r.prefill_left, 0) if r.prefill_left else (0, 1) for r in view.requests}
            return plan

    class Greedy:
        name = "greedy"

        def plan(self, view):           # every prompt whole: breaks the budget at once
            return {r.id: (r.prefill_left, 0) if r.prefill_left else (0, 1) for r in view.requests}
''')

FIG1 = textwrap.dedent('''
    # The paper's Fig. 1 engine without a KV limit (b_max = 512, 129-token prompts, outputs of mean 112)
    [engines.a100]
    token_budget = 512
    batch_time = { preset = "codellama-34b-a100" }
    policy = "sarathi"
    [workloads.fig1]
    arrival = { kind = "poisson", rate_per_s = 10.4 }
    prefill = { kind = "deterministic", value = 129 }
    decode  = { kind = "geometric", mean = 112 }
''')


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("judge")
    (d / "mine.py").write_text(PLUGINS)
    (d / "M.toml").write_text(FIG1)
    return d


def _m(files: Path):
    return fl.load_model(files / "M.toml")


# ------------------------------------------------------------------ the envelope, reachable states


def test_the_envelope_is_the_models_own(files: Path) -> None:
    env = envelope_for(files / "M.toml")
    assert env.token_budget == (512, 512) and env.kv_capacity_tokens is None and env.max_batch_requests is None
    assert env.max_resident_requests is None and not env.caps_optional and env.resident_limit == 514
    (cl,) = env.classes
    assert cl.prefill.intervals == ((129, 129),) and cl.decode.min == 1 and 700 < cl.decode.max < 800  # 0.999 quantile
    kv = envelope_for(fl.load_model(files / "M.toml").with_engine("a100", kv_capacity_tokens=20_000,
                                                                     max_batch_requests=256))
    assert kv.kv_capacity_tokens == (20_000, 20_000) and kv.max_batch_requests == (256, 256)
    json.dumps(env.to_dict(), allow_nan=False)
    with pytest.raises(fl.ModelError, match="engine"):
        envelope_for(files / "M.toml", "nope")


ENVELOPES = {
    "default": DEFAULT_ENVELOPE,
    "fig1": None,                                   # filled from the file in the test
    "kv+k_max+resident cap": Envelope((64, 64), (16, 16), (40, 40), (600, 600), max_requests=40,
                                      classes=(RequestClass("x", Support(((1, 3), (50, 70))), Support(((0, 9),))),)),
    "static group": DEFAULT_ENVELOPE.for_policy(as_policy("fastertransformer-static")),
}


@pytest.mark.parametrize("name", list(ENVELOPES))
def test_generated_and_structured_states_are_reachable(name: str, files: Path) -> None:
    env = ENVELOPES[name] or envelope_for(files / "M.toml")

    @settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(strategies.states(env))
    def prop(view: View) -> None:
        assert unreachable(view, env) is None, unreachable(view, env)
        check_plan(view, {})
        if env.kv_capacity_tokens is None or not env.caps_optional and view.kv_capacity_tokens is None:
            assert view.kv_free_tokens is None

    prop()
    if name != "default":                           # (the default one's structured states: below)
        for fam, v in structured_states(env):
            assert unreachable(v, env) is None, (fam, unreachable(v, env))


def test_structured_states_reach_real_scale() -> None:
    fams: dict[str, int] = {}
    big = {"decoders": 0, "waiting": 0, "edge": False}
    for fam, v in structured_states(DEFAULT_ENVELOPE):
        fams[fam] = fams.get(fam, 0) + 1
        if fam == "decoders":
            big["decoders"] = max(big["decoders"], len(v.requests))
        if fam == "waiting-queue" and all(not r.running for r in v.requests):
            big["waiting"] = max(big["waiting"], len(v.requests))
        if fam == "demand-at-budget" and v.demand_tokens in (v.token_budget - 1, v.token_budget + 1):
            big["edge"] = True
    assert {"decoders", "decoders+prompt", "huge-prompt", "waiting-queue", "demand-at-budget", "kv-full",
            "preempted", "k_max", "mixed-classes", "running+waiting"} <= set(fams)
    assert big["decoders"] >= 4097 and big["waiting"] >= 300 and big["edge"]


def test_unreachable_states_are_named() -> None:
    env = envelope_for(fl.Engine("e", 8, fl.Constant(1.0)))          # no caps at all
    dec = RequestView(0, 0, 1, 0, 0, True, 5)
    assert unreachable(View(8, (dec,)), env) is None
    # the state of the false "no": a KV cap of 0 on an engine without one, a running request holding KV
    assert "no such limit" in unreachable(View(8, (dec,), kv_capacity_tokens=0, kv_free_tokens=0), env)
    assert "running = False with 5 KV" in unreachable(View(8, (RequestView(0, 0, 1, 0, 0, False, 5),)), env)
    never_served = View(8, (RequestView(0, 0, 1, 0, 0, False, 0),))       # a decoder that holds no KV
    assert "no (v_p, v_d)" in unreachable(never_served, env)
    # 5-token prompts: 3 prefill left with 4 KV tokens means decode tokens were produced and recomputed
    five = Envelope((8, 8), classes=(RequestClass("x", Support(((5, 5),)), Support(((0, 9),))),))
    again = View(8, (RequestView(0, 3, 1, 0, 0, True, 4),))
    assert "without a preemption" in unreachable(again, five)
    assert unreachable(View(8, again.requests, None, None, 100, frozenset(), 96),
                       Envelope((8, 8), kv_capacity_tokens=(100, 100), classes=five.classes)) is None
    assert "KV free" in unreachable(View(8, (dec, RequestView(1, 0, 1, 0, 1, True, 5)), None, None, 10, frozenset(), 0),
                                    Envelope((8, 8), kv_capacity_tokens=(10, 10)))
    assert "exceed" in unreachable(
        View(8, (dec, RequestView(1, 1, 0, 0, 1)), None, 1), Envelope((8, 8), max_resident_requests=(1, 1)))
    assert "static group" in unreachable(View(8, (dec,), static_group=frozenset({0})), env)


# --------------------------------------------------------------------------- the three cases


def test_a_decode_cap_of_4_is_caught_with_the_minimal_state(files: Path) -> None:
    for where in ({"model": files / "M.toml"}, {}):
        r = check_work_conserving(f"{files / 'mine.py'}:DecodeCap", **where)
        ce = r.counterexample
        assert not r.ok and r.declared is True and not r.agrees_with_claim
        assert [(q.prefill_left, q.decode_left) for q in ce.view.requests] == [(0, 1)] * 5
        assert ce.batch_tokens == 4 and ce.demand_tokens == 5
        assert ce.view.token_budget == (512 if where else 5)
        json.dumps(r.to_dict(), allow_nan=False)


def test_vllm_v1_with_its_128_sequence_cap_is_not_work_conserving(files: Path) -> None:
    r = check_work_conserving(VLLM_V1_DEFAULTS, files / "M.toml")
    ce = r.counterexample
    assert not r.ok and r.declared is False         # its file now says so; the judge finds the state
    assert ce.view.token_budget == 512 and len(ce.view.requests) == 129
    assert sum(q.decoding and q.running for q in ce.view.requests) == 128 and not ce.view.requests[-1].running
    assert ce.batch_tokens == 128 and ce.demand_tokens == 128 + 129
    assert "ids 0..127 (128 requests)" in ce.text()
    # with the engine's own resident cap (the built-in vllm-v1: max_num_seqs = max_resident_requests) it is
    m = _m(files).with_engine("a100", max_resident_requests=128)
    ok = check_work_conserving("vllm-v1", m, max_examples=50)
    assert ok.ok and ok.search.max_requests == 128 and ok.envelope.max_resident_requests == (128, 128)
    assert "resident cap 128 is below b_max" in ok.text()


def test_a_users_sarathi_passes_on_a_model_without_a_kv_limit(files: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(files)
    assert main(["check-policy", "mine.py:MySarathi", "--model", "M.toml", "--no-capacity", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["invariants_ok"] and d["work_conserving"] and d["ok"] and d["exit_code"] == 0
    assert d["envelope"]["kv_capacity_tokens"] is None and d["envelope"]["token_budget"] == [512, 512]
    s = d["search"]["work_conserving"]
    assert s["structured"] > 50 and s["random"] > 0 and s["max_requests"] >= 514 and s["max_budget"] == 512
    # without a model it is judged on every engine: a KV-capped one shows the KV free space it ignores
    inv = check_invariants(f"{files / 'mine.py'}:MySarathi", max_examples=20)
    assert not inv.ok and "kv_free_tokens" in inv.counterexample.problem


def test_the_capacity_is_reported_with_an_invariant_failure(files: Path, capsys, monkeypatch) -> None:
    import importlib

    cp = importlib.import_module("fluidllm.capacity.policy")
    real, calls = cp.policy_capacity, []

    def fake(m, spec, **kw):     # a plug-in's real capacity is simulated for minutes: the analytic one, same type
        calls.append(spec)
        return real(m, "sarathi")

    monkeypatch.setattr(cp, "policy_capacity", fake)
    monkeypatch.chdir(files)
    rc = main(["check-policy", "mine.py:HugeStateBug", "--model", "M.toml", "--json", "--max-examples", "20"])
    d = json.loads(capsys.readouterr().out)
    assert rc == 1 and d["exit_code"] == 1 and not d["invariants_ok"] and calls
    ce = d["invariants_counterexample"]
    assert len(ce["state"]["requests"]) > 300 and "exceed token_budget = 512" in ce["problem"]
    assert d["max_scale"] > 0 and d["capacity"]["method"] == "analytic" and d["capacity_error"] is None
    assert main(["check-policy", "mine.py:HugeStateBug", "--model", "M.toml", "--max-examples", "20"]) == 1
    out = capsys.readouterr().out
    assert "invariants: FAIL" in out and "capacity on engine a100" in out and "never reached" in out


def test_a_simulation_that_hits_a_broken_plan_reports_it_instead_of_a_capacity(files: Path) -> None:
    small = _m(files).with_engine("a100", token_budget=64)
    res = check_policy(f"{files / 'mine.py'}:Greedy", small, max_examples=10)
    assert res.exit_code == 1 and res.capacity is None and "breaks the engine's rules" in res.capacity_error
    assert "capacity: not computed" in res.text()
    json.dumps(res.to_dict(), allow_nan=False)


def test_bad_input_is_exit_2_with_one_line(files: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(files)
    for argv in (["check-policy", "mine.py:MySarathi", "--model", "nope.toml"],
                 ["check-policy", "mine.py:MySarathi", "--model", "M.toml", "--engine", "zz"],
                 ["check-policy", "wait"], ["check-policy", "sarathi", "--max-examples", "-1"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err


# ------------------------------------------------------------------ brute force = the judge

SMALL = {"many": small_envelope(6, 4, 1, 1), "lengths": small_envelope(4, 3, 2, 1),
         "caps": small_envelope(3, 2, 2, 1, k_max=2, kv_capacity=3), "classes": small_envelope(3, 3, 1, 1, classes=2)}

# (policy, declared work_conserving, theory: None where unknown, envelopes)
TABLE = [
    ("fastertransformer", False, False, "many lengths caps"),
    ("fastertransformer-static", False, False, "many lengths caps"),
    ("vllm", False, False, "many lengths caps"),
    ("orca", True, True, "many lengths caps"),
    ("sarathi", True, True, "many lengths caps"),
    ("kfcfs", True, True, "many lengths caps"),
    ("vllm-v1", True, True, "many lengths caps"),
    (fl.PolicySpec("sarathi", {"chunk_size": 1}), False, False, "lengths"),
    (fl.PolicySpec("priority", {"inner": "kfcfs", "order": ["b"]}), True, True, "classes caps"),
    (fl.PolicySpec("priority", {"inner": "sarathi", "order": ["b", "a"]}), True, True, "classes"),
    # a priority rule is as work-conserving as its inner rule: with vLLM v0 inside it is not
    (fl.PolicySpec("priority", {"inner": "vllm", "order": ["b"]}), False, False, "classes"),
    ("mine.py:DecodeCap(cap=2)", True, False, "many lengths"),
    ("mine.py:Lazy", None, False, "many lengths caps"),
    ("mine.py:MySarathi", True, True, "many lengths"),
]


def _target(files: Path, p):
    if isinstance(p, str) and p.startswith("mine.py:"):
        cls, _, arg = p.split(":")[1].partition("(")
        params = dict(kv.split("=") for kv in arg.rstrip(")").split(",")) if arg else {}
        return fl.PolicySpec("python", {"target": f"{files / 'mine.py'}:{cls}",
                                        **({"params": {k: int(v) for k, v in params.items()}} if params else {})})
    return p


def test_the_judge_agrees_with_brute_force_on_small_envelopes(files: Path) -> None:
    rows = []
    for p, declared, theory, where in TABLE:
        pol = _target(files, p)
        verdicts = []
        for e in where.split():
            bf = brute_force(pol, SMALL[e])
            j = check_work_conserving(pol, envelope=SMALL[e], exhaustive=False, max_examples=40)
            rows.append((str(p), e, j.declared, j.ok, bf.ok, bf.states))
            assert j.ok == bf.ok, (p, e, j.text(), bf.summary())
            if not bf.ok:   # the judge's (shrunk) counterexample is a state of the envelope, small too
                assert unreachable(j.counterexample.view, SMALL[e].for_policy(as_policy(pol, ("a", "b")))) is None
                assert len(j.counterexample.view.requests) <= len(bf.counterexample.view.requests) + 1, (p, e)
            verdicts.append(j.ok)
        assert rows[-1][2] == declared, (p, rows[-1][2])
        # the theory: work-conserving on every state, or a counterexample in some small envelope
        assert (all(verdicts) if theory else not all(verdicts)), (p, verdicts)
    print("\npolicy | envelope | declared WC | judge | brute force (states)")
    for name, e, declared, j, b, n in rows:
        print(f"{name} | {e} | {declared} | {'WC' if j else 'not WC'} | {'WC' if b else 'not WC'} ({n})")


def test_the_invariants_judge_agrees_with_brute_force(files: Path) -> None:
    env = SMALL["caps"]
    for target, ok in (("Greedy", False), ("MySarathi", False), ("DecodeCap", True), ("Lazy", True)):
        pol = f"{files / 'mine.py'}:{target}"          # (MySarathi ignores the KV free space of "caps")
        bf = brute_force(pol, env, check="invariants")
        j = check_invariants(pol, envelope=env, exhaustive=False, max_examples=40)
        assert bf.ok == j.ok == ok, (target, bf.summary(), j.text())
    assert brute_force("vllm-v1", env, check="invariants").ok


def test_brute_force_lists_exactly_the_reachable_states() -> None:
    env = small_envelope(2, 2, 2, 1)
    listed = list(enumerate_states(env))
    json.dumps(brute_force("sarathi", env).to_dict(), allow_nan=False)
    assert all(unreachable(v, env) is None for v in listed)
    keys = {(v.token_budget, tuple((r.prefill_left, r.decode_left, r.kv_tokens) for r in v.requests)) for v in listed}
    assert len(keys) == len(listed)
    # one request, b_max 1: fresh (1,0) (1,1) (2,0) (2,1); mid-prefill (1,0,kv 1) (1,1,kv 1); decoding (0,1,kv 1|2)
    one = sorted(k[1][0] for k in keys if k[0] == 1 and len(k[1]) == 1)
    assert one == sorted([(1, 0, 0), (1, 1, 0), (2, 0, 0), (2, 1, 0), (1, 0, 1), (1, 1, 1), (0, 1, 1), (0, 1, 2)])

    @settings(max_examples=80, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(strategies.states(env))
    def in_listing(v: View) -> None:   # the generator never leaves the enumerated (reachable) set
        assert (v.token_budget, tuple((r.prefill_left, r.decode_left, r.kv_tokens) for r in v.requests)) in keys

    in_listing()
    with pytest.raises(fl.ModelError, match="too many"):
        next(enumerate_states(DEFAULT_ENVELOPE))
