"""The network reference simulator: equal to the one-engine reference, workflow invariants, rates, JSQ,
Rybko–Stolyar. Every test is deterministic (fixed seeds); statistical bounds are z = 5 (error rate
below 1e-6 per comparison if the simulator is right)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fluidllm.model.io import load_model, loads_model
from fluidllm.sim.draws import Requests, draw_requests
from fluidllm.sim.network_reference import NetworkReferenceRun, simulate_network_reference
from fluidllm.sim.reference import simulate_reference

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "networks"
Z = 5.0


def _engine(name: str, policy: str = '"kfcfs"', budget: int = 64, extra: str = "",
            bt: str = '{ kind = "constant", c_ms = 1 }') -> str:
    return f"[engines.{name}]\ntoken_budget = {budget}\npolicy = {policy}\nbatch_time = {bt}\n{extra}\n"


# ------------------------------------------------------------------ (1) one engine = simulate_reference


@pytest.mark.parametrize("policy,extra", [
    ('"sarathi"', ""), ('"vllm"', "max_batch_requests = 6\n"), ('"orca"', "kv_capacity_tokens = 120\n"),
    ('"kfcfs"', "max_resident_requests = 5\n"), ('"fastertransformer"', ""),
])
@pytest.mark.parametrize("as_workflows", [False, True])
def test_one_engine_equals_single_engine_reference(policy: str, extra: str, as_workflows: bool) -> None:
    bt = '{ kind = "affine", c_ms = 2.0, a_ms = 0.05 }'
    laws = {"a": ('{ kind = "poisson", mean = 20 }', '{ kind = "geometric", mean = 6 }', 150.0),
            "b": ('{ kind = "uniform", low = 1, high = 60 }', '{ kind = "poisson", mean = 3 }', 90.0)}
    doc = _engine("g", policy, 64, extra, bt)
    for n, (p, d, rate) in laws.items():
        if as_workflows:   # one-call workflows draw exactly what the equivalent workloads draw
            doc += (f"[workflows.{n}]\narrival = {{ kind = \"poisson\", rate_per_s = {rate} }}\n"
                    f"[[workflows.{n}.calls]]\nid = \"x\"\nprefill = {p}\ndecode = {d}\n")
        else:
            doc += (f"[workloads.{n}]\narrival = {{ kind = \"poisson\", rate_per_s = {rate} }}\n"
                    f"prefill = {p}\ndecode = {d}\n")
    net = loads_model(doc)
    single = loads_model(_engine("g", policy, 64, extra, bt) + "".join(
        f"[workloads.{n}]\narrival = {{ kind = \"poisson\", rate_per_s = {rate} }}\nprefill = {p}\ndecode = {d}\n"
        for n, (p, d, rate) in laws.items()))
    horizon = 600.0
    run = simulate_network_reference(net, horizon, 11)
    reqs = draw_requests(list(single.workloads.values()), horizon, 11)
    # same draws: the network created the same requests at the same instants
    assert np.array_equal(run.created_ms, reqs.arrival_ms)
    assert np.array_equal(run.prefill, reqs.prefill) and np.array_equal(run.decode, reqs.decode)
    assert np.array_equal(run.klass, reqs.klass)
    ref = simulate_reference(single.engines["g"], reqs, horizon)
    mine = run.batches["g"]
    assert len(mine) == len(ref.batches) > 50
    for b, c in zip(mine, ref.batches):
        assert (b.start_ms, b.end_ms, b.tokens, b.resident_before, b.preempted) == \
            (c.start_ms, c.end_ms, c.tokens, c.resident_before, c.preempted)
    assert np.array_equal(run.completion_ms, ref.completion_ms, equal_nan=True)
    assert np.array_equal(run.first_token_ms, ref.first_token_ms, equal_nan=True)
    assert run.engine_end_ms["g"] == ref.end_ms
    assert run.preemptions["g"] == ref.preemptions
    if "kv_capacity" in extra:
        assert ref.preemptions > 0                         # rules K3/K5 exercised
    assert sorted(run.left["g"]) == sorted(ref.resident + ref.waiting)


def test_deterministic_workload_equals_reference_by_hand() -> None:
    """A deterministic one-engine network (gap 5 ms, (7, 3) tokens) against the reference on the same list."""
    net = loads_model(_engine("g", '"sarathi"', 8) + "[workloads.w]\n"
                      'arrival = { kind = "deterministic", rate_per_s = 200 }\n'
                      'prefill = { kind = "deterministic", value = 7 }\ndecode = { kind = "deterministic", value = 3 }\n')
    run = simulate_network_reference(net, 100.0, 0)
    n = run.n_requests
    reqs = Requests.from_lists(list(run.created_ms), [7] * n, [3] * n)
    ref = simulate_reference(net.engines["g"], reqs, 100.0)
    assert [b.tokens for b in run.batches["g"]] == [b.tokens for b in ref.batches]
    assert np.array_equal(run.completion_ms, ref.completion_ms, equal_nan=True)


# ------------------------------------------------------------------ (2) invariants on random networks


@st.composite
def networks(draw):  # two engines, a workflow with a start branch, a fork-join and a loop
    pol = draw(st.sampled_from(['"kfcfs"', '"sarathi"', '"orca"',
                                '{ kind = "priority", inner = "kfcfs", order = ["W.j", "W.a"] }',
                                '{ kind = "max-pressure", inner = "sarathi" }']))
    pb = draw(st.sampled_from([0.2, 0.5, 0.7]))
    q = draw(st.sampled_from([0.25, 0.5]))
    q2 = draw(st.sampled_from([0.3, 0.6]))
    rate = draw(st.sampled_from([60.0, 120.0]))
    law = 'prefill = { kind = "poisson", mean = 6 }\ndecode = { kind = "geometric", mean = 3 }\n'

    def call(cid, eng, after, more=""):
        return f"[[workflows.W.calls]]\nid = \"{cid}\"\nengine = {eng}\n{law}after = {after}\n{more}"

    doc = _engine("e1", pol, 48) + _engine("e2", pol, 48) + _engine("e3", '"sarathi"', 32)
    doc += f"[workflows.W]\narrival = {{ kind = \"poisson\", rate_per_s = {rate} }}\n"
    doc += call("a", '"e1"', "[]", f"p = {pb}\n")
    doc += call("b", '"e2"', "[]", f"p = {1 - pb}\nloop = {{ to = \"b\", p = {q2} }}\n")
    doc += call("f1", '["e2", "e3"]', '["a"]', 'routing = "jsq-requests"\n')
    doc += call("f2", '"e1"', '["a"]')
    doc += call("j", '"e2"', '["f1", "f2"]')
    doc += call("c", '["e1", "e2", "e3"]', '["j"]', f'routing = "round-robin"\nloop = {{ to = "j", p = {q} }}\n')
    doc += call("d", '["e1", "e3"]', '["b"]', 'routing = "weighted"\nweights = [1.0, 3.0]\ninherits_kv = true\n')
    return loads_model(doc)


def _bound(n: float, p: float) -> float:
    return Z * np.sqrt(max(n * p * (1 - p), 1e-12)) + 1


@settings(max_examples=4, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(networks(), st.integers(0, 2**16))
def test_invariants_on_random_networks(model, seed: int) -> None:
    horizon = 2000.0
    run = simulate_network_reference(model, horizon, seed)
    cn = model.class_network()
    names = list(run.class_names)
    # no job lost
    assert run.n_instances == run.n_instances_completed + run.n_instances_in_progress
    live = np.isnan(run.instance_completion_ms)
    req_live = np.isnan(run.completion_ms)
    assert set(np.flatnonzero(live)) == set(run.instance[req_live].tolist()) | {i for i, _ in run.pending_joins}
    early = run.instance_arrival_ms < horizon / 2
    assert not live[early].any()                           # light load: every early instance finished
    assert np.all(run.instance_completion_ms[~live] >= run.instance_arrival_ms[~live])
    # every fork joined exactly once: a join starts once per time each of its inputs went on
    j, f1, f2 = names.index("W.j"), names.index("W.f1"), names.index("W.f2")
    done = ~live
    assert np.array_equal(run.join_fires[done, j], run.went_on[done, f1])
    assert np.array_equal(run.join_fires[done, j], run.went_on[done, f2])
    assert run.join_fires[done, j].max() <= 1 and run.forks >= run.join_fires[:, j].sum()
    # per batch: budget and k_max (check_plan ran on every plan; re-check the log) and tokens conserved
    for e in run.engine_names:
        b_max = model.engines[e].token_budget
        assert all(0 < b.n_tokens <= b_max for b in run.batches[e])
        assert all(b1.end_ms <= b2.start_ms for b1, b2 in zip(run.batches[e], run.batches[e][1:]))
        assert run.tokens_served(e) + run.tokens_left(e) == run.tokens_sent(e) + run.recomputed_tokens[e]
    # branch frequencies: the start branch chooses a with probability p
    pa = model.workflows["W"].call("a").p
    n = run.branch_draws["W.^"]
    assert n == run.n_instances
    assert abs(run.branch_counts.get(("W.^", "W.a"), 0) - n * pa) <= _bound(n, pa)
    # mean visits per instance (loops) against class_network().visit_rates / rate
    rate = model.workflows["W"].rate_per_s
    v = run.visits[early]
    for k, name in enumerate(names):
        expect = cn.visit_rates[k] / rate
        se = v[:, k].std(ddof=1) / np.sqrt(v.shape[0])
        assert abs(v[:, k].mean() - expect) <= Z * se + 0.02, (name, v[:, k].mean(), expect)
    # inherits_kv: d starts with b's tokens as its KV context
    d = names.index("W.d")
    assert np.all(run.kv_context[run.klass == d] > 0)


# ------------------------------------------------------------------ (3) throughput per class = visit rates


def test_throughput_per_class_matches_visit_rates() -> None:
    model = load_model(EXAMPLES / "fork_join.toml")
    # make it fast: 1 ms batches with a budget far above the load, short decodes
    for e in model.engines:
        model = model.with_engine(e, batch_time=loads_model(_engine("x")).engines["x"].batch_time)
    horizon, t0 = 40_000.0, 5_000.0
    run = simulate_network_reference(model.scaled(4.0), horizon, 3)
    cn = model.scaled(4.0).class_network()
    got = run.completions_per_class(t0, horizon)
    T = (horizon - t0) / 1000.0
    rate = 6.0
    v2 = (run.visits.astype(float) ** 2).mean(axis=0)          # E[V_k^2] per instance: count ~ compound Poisson
    for k, name in enumerate(run.class_names):
        expect = cn.visit_rates[k] * T
        assert abs(got[k] - expect) <= Z * np.sqrt(rate * T * v2[k]) + 1, (name, got[k], expect)


# ------------------------------------------------------------------ (4) JSQ balances replicas


def test_jsq_tokens_balances_four_replicas() -> None:
    doc = "".join(_engine(f"g{i}", '"sarathi"', 256) for i in range(4))
    doc += ('[workflows.chat]\narrival = { kind = "poisson", rate_per_s = 400 }\n[[workflows.chat.calls]]\n'
            'id = "answer"\nengine = ["g0", "g1", "g2", "g3"]\nrouting = "jsq-tokens"\n'
            'prefill = { kind = "poisson", mean = 100 }\ndecode = { kind = "geometric", mean = 20 }\n')
    run = simulate_network_reference(loads_model(doc), 5000.0, 5)
    served = np.array([run.tokens_served(e) for e in run.engine_names], dtype=float)
    counts = np.bincount(run.engine, minlength=4).astype(float)
    # even independent (random) routing would stay within Z·sqrt(2 n) of each other; JSQ is far tighter
    assert counts.max() - counts.min() <= Z * np.sqrt(2 * counts.mean())
    mean_tokens = served.sum() / counts.sum()
    assert served.max() - served.min() <= Z * np.sqrt(2 * counts.mean()) * mean_tokens


def test_round_robin_and_ties_go_to_lowest_index() -> None:
    doc = "".join(_engine(f"g{i}", '"kfcfs"', 64) for i in range(3))
    doc += ('[workflows.w]\narrival = { kind = "deterministic", rate_per_s = 100 }\n[[workflows.w.calls]]\n'
            'id = "x"\nengine = ["g0", "g1", "g2"]\nrouting = "round-robin"\n'
            'prefill = { kind = "deterministic", value = 4 }\ndecode = { kind = "deterministic", value = 1 }\n')
    run = simulate_network_reference(loads_model(doc), 100.0, 0)
    assert run.engine.tolist() == [i % 3 for i in range(run.n_requests)]
    # jsq with every replica empty at each arrival (each request finishes before the next): always g0
    run = simulate_network_reference(loads_model(doc.replace("round-robin", "jsq-tokens")), 100.0, 0)
    assert set(run.engine.tolist()) == {0}


# ------------------------------------------------------------------ class priority


def test_priority_plan_is_inner_rule_class_by_class() -> None:
    from fluidllm.model.policy import PolicySpec
    from fluidllm.sim.network_reference import plan_priority
    from fluidllm.sim.reference import RequestView, View, plan_batch

    reqs = (RequestView(0, 10, 3, klass=0), RequestView(1, 0, 5, klass=1, running=True),
            RequestView(2, 30, 2, klass=1), RequestView(3, 0, 4, klass=2, running=True),
            RequestView(4, 25, 1, klass=0))
    view = View(32, reqs, max_batch_requests=4)
    pol = PolicySpec("priority", {"inner": "kfcfs", "order": ["B", "A"]})
    # class 1 ("B") first: id 1 decode, id 2 takes 30 of 30 -> budget 1 left; then class 0 ("A"): id 0 gets 1
    plan = plan_priority(pol, view, {1: 0, 0: 1})
    assert plan == {1: (0, 1), 2: (30, 0), 0: (1, 0)}
    # no order: the inner rule over everyone
    assert plan_priority(pol, view, {}) == plan_batch(PolicySpec("kfcfs"), view)
    # slots: k_max = 2 stops after class 1
    assert plan_priority(pol, View(32, reqs, max_batch_requests=2), {1: 0, 0: 1}) == {1: (0, 1), 2: (30, 0)}
    # a whole-prompt inner rule keeps prompts whole on the leftover budget: class 1 takes prompt 2
    # whole (vLLM: prefill first, no decode for id 1); the rest (2 tokens left) cannot take prompt 0
    # (10 tokens) whole, so vLLM falls back to decodes there: id 3
    vl = PolicySpec("priority", {"inner": "vllm", "order": ["B"]})
    assert plan_priority(vl, View(32, reqs), {1: 0}) == {2: (30, 0), 3: (0, 1)}


# ------------------------------------------------------------------ (5) Rybko–Stolyar


def test_rybko_stolyar_priorities() -> None:
    horizon = 1500.0
    ts = np.arange(0.0, horizon + 1, 250.0)
    out = {}
    for name in ("rybko_stolyar", "rybko_stolyar_stable"):
        run = simulate_network_reference(load_model(EXAMPLES / f"{name}.toml"), horizon, 7)
        out[name] = run.requests_in_system(ts)
        print(name, "requests in system at", ts.tolist(), ":", out[name].tolist())
    stable, unstable = out["rybko_stolyar_stable"], out["rybko_stolyar"]
    # reverse (entering-class) priority: the backlog stays near its mean level
    assert stable[1:].max() <= 3 * stable[1:].mean()
    # exiting-class priority (virtual station at 1.61): the backlog grows steadily, far above the stable one
    assert np.all(np.diff(unstable[1:]) > 0)
    assert unstable[-1] >= 5 * stable[-1]


def test_result_type() -> None:
    run = simulate_network_reference(load_model(EXAMPLES / "dag.toml"), 2000.0, 1)
    assert isinstance(run, NetworkReferenceRun) and "NetworkReferenceRun(" in repr(run)
    assert run.e2e_ms.size == run.n_instances_completed and np.all(run.e2e_ms > 0)
