"""The vectorized network core against the network reference: replication r equals
``simulate_network_reference(model, H, default_rng([seed, r]))`` batch for batch (engine, start, end,
per-request tokens), on random small networks and on the examples; per-batch invariants. Deterministic
(fixed seeds, hypothesis derandomised)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fluidllm.errors import ModelError
from fluidllm.model.arrivals import PoissonArrival
from fluidllm.model.io import load_model, loads_model
from fluidllm.model.trace_replay import TraceReplay
from fluidllm.model.traces import Trace
from fluidllm.sim.network_core import replication_generator, run_network_core
from fluidllm.sim.network_reference import simulate_network_reference
from fluidllm.sim.network_stability import network_backlog

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "networks"


def _engine(name: str, policy: str = '"kfcfs"', budget: int = 64, extra: str = "",
            bt: str = '{ kind = "constant", c_ms = 1 }') -> str:
    return f"[engines.{name}]\ntoken_budget = {budget}\npolicy = {policy}\nbatch_time = {bt}\n{extra}\n"


POLICIES = ['"kfcfs"', '"sarathi"', '"orca"', '"vllm"', '"fastertransformer"', '"vllm-v1"',
            '"fastertransformer-static"', '{ kind = "sarathi", chunk_size = 8 }',
            '{ kind = "priority", inner = "kfcfs", order = ["W.j", "W.a"] }',
            '{ kind = "priority", inner = "vllm", order = ["W.c", "W.b"] }',
            '{ kind = "priority", inner = "sarathi", order = ["W.d"] }']


@st.composite
def networks(draw):  # (copied from test_network_reference, other policies) three engines, one workflow
    # with a start branch, a fork-join, loops, replica sets under every routing rule, inherited KV
    pol = draw(st.sampled_from(POLICIES))
    pol2 = draw(st.sampled_from(POLICIES))
    caps = draw(st.sampled_from(["", "max_batch_requests = 3\n", "max_resident_requests = 4\n"]))
    bt = draw(st.sampled_from(['{ kind = "constant", c_ms = 1 }', '{ kind = "affine", c_ms = 0.5, a_ms = 0.03 }',
                               '{ kind = "staircase", c_ms = 0.7, a_ms = 0.4, b0 = 16 }']))
    pb = draw(st.sampled_from([0.2, 0.5, 0.7]))
    q = draw(st.sampled_from([0.25, 0.5]))
    q2 = draw(st.sampled_from([0.3, 0.6]))
    rate = draw(st.sampled_from([60.0, 150.0, 300.0]))
    rr = draw(st.sampled_from(["round-robin", "jsq-tokens", "random"]))
    law = 'prefill = { kind = "poisson", mean = 6 }\ndecode = { kind = "geometric", mean = 3 }\n'

    def call(cid, eng, after, more=""):
        return f"[[workflows.W.calls]]\nid = \"{cid}\"\nengine = {eng}\n{law}after = {after}\n{more}"

    doc = _engine("e1", pol, 48, caps, bt) + _engine("e2", pol2, 48, "", bt) + _engine("e3", '"sarathi"', 32, caps)
    doc += f"[workflows.W]\narrival = {{ kind = \"poisson\", rate_per_s = {rate} }}\n"
    doc += call("a", '"e1"', "[]", f"p = {pb}\n")
    doc += call("b", '"e2"', "[]", f"p = {1 - pb}\nloop = {{ to = \"b\", p = {q2} }}\n")
    doc += call("f1", '["e2", "e3"]', '["a"]', 'routing = "jsq-requests"\n')
    doc += call("f2", '"e1"', '["a"]')
    doc += call("j", '"e2"', '["f1", "f2"]')
    doc += call("c", '["e1", "e2", "e3"]', '["j"]', f'routing = "{rr}"\nloop = {{ to = "j", p = {q} }}\n')
    doc += call("d", '["e1", "e3"]', '["b"]', 'routing = "weighted"\nweights = [1.0, 3.0]\ninherits_kv = true\n')
    doc += ('[workloads.side]\narrival = { kind = "poisson", rate_per_s = 40 }\nengine = "e3"\n'
            'prefill = { kind = "uniform", low = 1, high = 40 }\ndecode = { kind = "deterministic", value = 0 }\n')
    return loads_model(doc)


def _same_as_reference(model, horizon: float, R: int, seed: int, out=None, models=None):
    if out is None:
        out = run_network_core(model, horizon, R, seed, record=True, replication_models=models)
    runs = []
    for r in range(R):
        ref = simulate_network_reference(model if models is None else models[r], horizon,
                                         replication_generator(seed, r))
        for ei, e in enumerate(ref.engine_names):
            mine = out.batch_log[r][ei]
            theirs = [(b.start_ms, b.end_ms, b.tokens) for b in ref.batches[e]]
            assert len(mine) == len(theirs), (r, e, len(mine), len(theirs))
            for i, (x, y) in enumerate(zip(mine, theirs)):
                assert x == y, (r, e, i, x, y)
            assert out.end_ms[r, ei] == ref.engine_end_ms[e]
        req = out.requests[r]
        for key in ("klass", "engine", "instance", "created_ms", "prefill", "decode", "kv_context"):
            assert np.array_equal(req[key], getattr(ref, key)), key
        assert np.array_equal(req["completion_ms"], ref.completion_ms, equal_nan=True)
        assert np.array_equal(out.backlog_tokens[r], network_backlog(ref, out.grid_ms))
        assert np.array_equal(out.requests_in_system[r], ref.requests_in_system(out.grid_ms))
        assert np.array_equal(out.instances_in_system[r], ref.instances_in_system(out.grid_ms))
        assert np.array_equal(out.completions_per_class[r], ref.completions_per_class())
        for wi, w in enumerate(ref.workflow_names):
            sel = ref.instance_workflow == wi
            e2e = ref.instance_completion_ms[sel] - ref.instance_arrival_ms[sel]
            e2e = e2e[~np.isnan(e2e)]
            assert out.e2e_count[r, wi] == e2e.size
            assert np.isclose(out.e2e_sum_ms[r, wi], e2e.sum(), rtol=1e-12, atol=1e-9)
            assert np.allclose(np.sort(out.e2e_ms[w][out.e2e_row[w] == r]), np.sort(e2e), rtol=0, atol=1e-9)
        runs.append(ref)
    return out, runs


def _invariants(model, out, runs) -> None:
    for r, ref in enumerate(runs):
        req = out.requests[r]
        n = req["klass"].size
        for ei, e in enumerate(out.engine_names):
            eng = model.engines[e]
            seen: dict[int, int] = {}
            last_end = -np.inf
            for start, end, toks in out.batch_log[r][ei]:
                assert start >= last_end and end > start
                last_end = end
                total = sum(p + d for _, p, d in toks)
                assert 0 < total <= eng.token_budget                       # budget
                if eng.max_batch_requests is not None:
                    assert len(toks) <= eng.max_batch_requests              # k_max
                ids = [i for i, _, _ in toks]
                assert len(set(ids)) == len(ids)                            # no request twice in a batch
                for i, p, d in toks:
                    assert req["engine"][i] == ei and d in (0, 1) and p >= 0
                    seen[i] = seen.get(i, 0) + p + d
            # per request: tokens served never exceed what it owes; completed = all served
            for i, s in seen.items():
                assert s <= req["prefill"][i] + req["decode"][i]
                if not np.isnan(req["completion_ms"][i]):
                    assert s == req["prefill"][i] + req["decode"][i]
            # tokens served + left = sent (no KV cap: nothing recomputed)
            assert out.tokens_served[r, ei] == sum(seen.values())
            assert out.tokens_served[r, ei] + ref.tokens_left(e) == out.tokens_sent[r, ei] == ref.tokens_sent(e)
        # no request lost or duplicated: ids 0..n-1 once each, completions once
        assert np.array_equal(np.sort(np.arange(n)), np.arange(ref.n_requests))
        # every fork joined: in finished instances a join fired once per input that went on
        names = list(ref.class_names)
        if "W.j" in names:
            done = ~np.isnan(ref.instance_completion_ms)
            j, f1, f2 = names.index("W.j"), names.index("W.f1"), names.index("W.f2")
            assert np.array_equal(ref.join_fires[done, j], ref.went_on[done, f1])
            assert np.array_equal(ref.join_fires[done, j], ref.went_on[done, f2])
        assert out.instances_arrived[r].sum() == ref.n_instances
        assert out.instances_completed[r].sum() == ref.n_instances_completed


@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(networks(), st.integers(0, 2**16))
def test_random_networks_equal_reference_batch_for_batch(model, seed: int) -> None:
    out, runs = _same_as_reference(model, 200.0, 2, seed)
    assert sum(len(b) for b in out.batch_log[0]) > 20
    _invariants(model, out, runs)


@pytest.mark.parametrize("name,horizon", [("dag", 20000.0), ("fork_join", 20000.0), ("replicas_jsq", 2000.0),
                                          ("rybko_stolyar", 200.0), ("rybko_stolyar_stable", 200.0)])
def test_examples_equal_reference(name: str, horizon: float) -> None:
    model = load_model(EXAMPLES / f"{name}.toml")
    out, runs = _same_as_reference(model, horizon, 2, 9)
    _invariants(model, out, runs)
    assert out.batches.sum() > 100


def test_unsupported_features_name_the_field() -> None:
    with pytest.raises(ModelError, match="kv_capacity_tokens.*vectorized network core"):
        run_network_core(load_model(EXAMPLES / "disaggregated.toml"), 100.0, 2, 0)
    with pytest.raises(ModelError, match="policy.*vectorized network core"):
        run_network_core(load_model(EXAMPLES / "rybko_stolyar_maxpressure.toml"), 100.0, 2, 0)
    with pytest.raises(ModelError, match="replications"):
        run_network_core(load_model(EXAMPLES / "dag.toml"), 100.0, 0, 0)


def test_result_without_record_matches_recorded() -> None:
    model = load_model(EXAMPLES / "fork_join.toml")
    a = run_network_core(model, 20000.0, 4, 3)
    b = run_network_core(model, 20000.0, 4, 3, record=True)
    assert a.batch_log is None and a.requests is None and "NetworkCoreResult(" in repr(a)
    assert np.array_equal(a.backlog_tokens, b.backlog_tokens)
    assert np.array_equal(a.e2e_hist, b.e2e_hist) and a.e2e_hist.sum() == a.e2e_count.sum()
    assert a.to_dict()["replications"] == 4
    # replications differ from each other (distinct seeds per row)
    assert len({tuple(x) for x in a.backlog_tokens.tolist()}) == 4


def _with_inputs(model, arrival, lengths):
    """``model`` (one workflow of one call) with another arrival process and length law."""
    (name, wf), = model.workflows.items()
    call = dataclasses.replace(wf.calls[0], lengths=lengths)
    return dataclasses.replace(model, workflows={name: dataclasses.replace(wf, arrival=arrival, calls=(call,))})


def test_replication_models_each_row_equals_the_reference_on_its_model() -> None:
    # one trace replayed from a different row per replication, each request with its own lengths
    # (the use of fluidllm.capacity.planning.confirm_plan), and a plain change of Poisson rate
    model = load_model(EXAMPLES / "replicas_jsq.toml")
    rng = np.random.default_rng(5)
    n = 400
    tr = Trace(np.cumsum(rng.exponential(20.0, n)), rng.integers(1, 300, n), rng.integers(0, 200, n),
               source={"name": "synthetic"})
    models = [_with_inputs(model, rep.arrival(), rep.lengths())
              for rep in (TraceReplay(tr, 1.5, start=s, cycles=2) for s in (0, 17, 333))]
    models.append(_with_inputs(model, PoissonArrival(25.0), model.workflows["chat"].calls[0].lengths))
    out, runs = _same_as_reference(model, 4000.0, 4, 11, models=models)
    _invariants(model, out, runs)
    assert len({tuple(x) for x in out.backlog_tokens.tolist()}) == 4
    # the rows of the first replays get the trace's own lengths in replay order
    for r, s in enumerate((0, 17, 333)):
        got = out.requests[r]["prefill"][:5]
        assert np.array_equal(got, tr.prefill[(np.arange(5) + s) % n])


def test_replication_models_must_match_the_model() -> None:
    model = load_model(EXAMPLES / "replicas_jsq.toml")
    law = model.workflows["chat"].calls[0].lengths
    ok = _with_inputs(model, PoissonArrival(30.0), law)
    with pytest.raises(ModelError, match="one model per replication"):
        run_network_core(model, 100.0, 2, 0, replication_models=[ok])
    (name, wf), = model.workflows.items()
    other_routing = dataclasses.replace(model, workflows={name: dataclasses.replace(
        wf, calls=(dataclasses.replace(wf.calls[0], routing="round-robin"),))})
    with pytest.raises(ModelError, match=r"replication_models\[1\].*except for arrival"):
        run_network_core(model, 100.0, 2, 0, replication_models=[ok, other_routing])
    slower = dataclasses.replace(model, engines={**model.engines,
                                                 "g0": dataclasses.replace(model.engines["g0"], token_budget=256)})
    with pytest.raises(ModelError, match=r"replication_models\[0\]\.engines\.g0"):
        run_network_core(model, 100.0, 2, 0, replication_models=[slower, ok])
