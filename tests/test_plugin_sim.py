"""Python plug-in policies in ``fluidllm.simulate``: the per-replication path (:mod:`fluidllm.sim.scalar`)
and the vectorized form (``plan_vectorized``).

A plug-in that reimplements a built-in rule must give the built-in's ``SimResult`` for the same
seed, field by field: exactly, except ``mean_requests_in_system`` (the core sums arrival instants
over its slot layout: equal to 1e-12 relative) and the fields that describe the run rather than the
system (``backend``, ``peak_state_bytes``, ``wall_s``, and the batch log's ``resident_before``, of
which the core lists only the FCFS prefix it moved into its slots).
"""
from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import numpy as np
import pytest

import fluidllm as fl
import importlib
from fluidllm.model.batchtime import TwoFeature
from fluidllm.policies import plugin_vector_policy, vector_policy
from fluidllm.sim.draws import draw_requests
from fluidllm.sim.result import LatencySummary

PLUGINS = textwrap.dedent('''
    import numpy as np
    from fluidllm.policies.fill import fcfs_fill


    def _limits(view):
        budget = view.token_budget
        if view.kv_free_tokens is not None:          # every planned token adds one KV token
            budget = min(budget, view.kv_free_tokens)
        return budget, (view.max_batch_requests or view.token_budget)


    class DecodeFirst:
        """Sarathi: decodes FCFS, then prefill chunks FCFS."""
        name = "decode-first"
        work_conserving = True

        def plan(self, view):
            budget, slots = _limits(view)
            plan = {}
            for r in view.requests:
                if budget > 0 and slots and r.decoding:
                    plan[r.id] = (0, 1); budget -= 1; slots -= 1
            for r in view.requests:
                if budget > 0 and slots and r.prefill_left > 0:
                    n = min(r.prefill_left, budget)
                    plan[r.id] = (n, 0); budget -= n; slots -= 1
            return plan


    class VectorDecodeFirst(DecodeFirst):
        """The same rule over (R, W) slot arrays, from the fill primitive (as rules._sarathi)."""
        name = "vector-decode-first"

        def plan_vectorized(self, B, s):
            dec = B.astype((s.pre == 0) & (s.dec > 0), "int32")
            gd, budget, slots = fcfs_fill(B, dec, s.budget, s.slots, whole=False, fresh=True)
            gp, _, _ = fcfs_fill(B, s.pre, budget, slots, whole=False)
            return gp, gd


    def _whole_prefills(view, plan, budget, slots):
        for r in view.requests:
            if r.prefill_left > 0:
                need = min(r.prefill_left, view.token_budget)
                if slots == 0 or need > budget:
                    break
                plan[r.id] = (need, 0); budget -= need; slots -= 1


    def _decodes(view, plan, budget, slots):
        for r in view.requests:
            if r.decoding and budget > 0 and slots:
                plan[r.id] = (0, 1); budget -= 1; slots -= 1


    class PromptFirst:
        """vLLM v0: any prompt waiting -> whole prompts FCFS; none fits (or none) -> decodes."""
        name = "prompt-first"

        def plan(self, view):
            budget, slots = _limits(view)
            plan = {}
            if any(r.prefill_left > 0 for r in view.requests):
                _whole_prefills(view, plan, budget, slots)
            if not plan:
                _decodes(view, plan, budget, slots)
            return plan


    class DecodeOnly:
        """FasterTransformer (stylised): any decoder -> decodes only; else whole prompts."""
        name = "decode-only"

        def plan(self, view):
            budget, slots = _limits(view)
            plan = {}
            if any(r.decoding for r in view.requests):
                _decodes(view, plan, budget, slots)
            else:
                _whole_prefills(view, plan, budget, slots)
            return plan


    class ShortestPromptFirst:
        """Not FCFS: the shortest prompt first (may serve a younger request before an older one)."""
        name = "spf"

        def plan(self, view):
            budget, slots = _limits(view)
            plan = {}
            _decodes(view, plan, budget, slots)
            budget -= len(plan); slots -= len(plan)
            for r in sorted((r for r in view.requests if r.prefill_left > 0), key=lambda r: (r.prefill_left, r.id)):
                if budget > 0 and slots:
                    n = min(r.prefill_left, budget)
                    plan[r.id] = (n, 0); budget -= n; slots -= 1
            return plan
''')

MODEL = textwrap.dedent('''
    [engines.e]
    token_budget = 64
    policy = "sarathi"
    batch_time = { kind = "staircase", c_ms = 8, a_ms = 20, b0 = 16 }

    [workloads.w]
    arrival = { kind = "poisson", rate_per_s = 4.0 }
    prefill = { kind = "uniform", low = 1, high = 60 }
    decode = { kind = "geometric", mean = 6 }
''')

SKIP = {"backend", "peak_state_bytes", "wall_s", "batch_log", "policy", "work_conserving", "steps"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[fl.Model, Path]:
    d = tmp_path_factory.mktemp("plugins")
    (d / "pol.py").write_text(PLUGINS)
    (d / "m.toml").write_text(MODEL)
    return fl.load_model(d / "m.toml"), d / "pol.py"


def py(path: Path, cls: str) -> fl.PolicySpec:
    return fl.PolicySpec("python", {"target": f"{path}:{cls}"})


def assert_same(a: fl.SimResult, b: fl.SimResult, where: str) -> None:
    """Every field of two SimResults equal (see the module text for the exceptions)."""
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        at = f"{where}: {f.name}"
        if f.name in SKIP:
            continue
        if f.name == "mean_requests_in_system":
            np.testing.assert_allclose(x, y, rtol=1e-12, atol=0, err_msg=at)
        elif isinstance(x, LatencySummary):
            for g in dataclasses.fields(x):
                u, v = getattr(x, g.name), getattr(y, g.name)
                if isinstance(u, dict):
                    assert u.keys() == v.keys(), at
                    for k in u:
                        np.testing.assert_array_equal(u[k], v[k], err_msg=f"{at}.{g.name}.{k}")
                else:
                    np.testing.assert_array_equal(u, v, err_msg=f"{at}.{g.name}")
        elif isinstance(x, np.ndarray):
            assert x.dtype == y.dtype, (at, x.dtype, y.dtype)
            np.testing.assert_array_equal(x, y, err_msg=at)
        else:
            assert x == y, (at, x, y)
    if a.batch_log is not None:
        for r, (la, lb) in enumerate(zip(a.batch_log, b.batch_log)):
            assert len(la) == len(lb), (where, r)
            for ba, bb in zip(la, lb):
                ka, kb = dict(ba), dict(bb)
                ra, rb = ka.pop("resident_before"), kb.pop("resident_before")
                assert ka == kb, (where, r)
                short, full = (ra, rb) if len(ra) <= len(rb) else (rb, ra)
                assert full[:len(short)] == short, (where, r)


CASES = [  # (built-in, plug-in, engine changes, load, R, horizon_s, seed)
    ("sarathi", "DecodeFirst", {}, 1.0, 6, 30, 0),
    ("sarathi", "DecodeFirst", {"max_batch_requests": 3}, 1.6, 5, 30, 7),
    ("sarathi", "DecodeFirst", {"kv_capacity_tokens": 160}, 1.3, 5, 30, 3),
    ("sarathi", "DecodeFirst", {"kv_capacity_tokens": 120, "max_resident_requests": 5,
                                "batch_time": TwoFeature(5.0, 0.2, 16, 0.3, 0.01)}, 1.0, 4, 30, 5),
    ("vllm", "PromptFirst", {}, 1.0, 6, 30, 1),
    ("vllm", "PromptFirst", {"max_batch_requests": 2}, 1.4, 4, 30, 2),
    ("vllm", "PromptFirst", {"kv_capacity_tokens": 200}, 1.2, 4, 30, 4),
    ("fastertransformer", "DecodeOnly", {}, 0.7, 5, 30, 9),
    ("fastertransformer", "DecodeOnly", {"max_batch_requests": 4}, 1.0, 4, 30, 10),
    # v_p + v_d > M: set aside as unschedulable; light load: idle stretches between them
    ("sarathi", "DecodeFirst", {"kv_capacity_tokens": 70}, 0.3, 4, 30, 1),
    ("vllm", "PromptFirst", {"kv_capacity_tokens": 70, "max_resident_requests": 3}, 0.5, 4, 30, 6),
]


@pytest.mark.parametrize("builtin,cls,changes,load,R,H,seed", CASES)
def test_plugin_equals_its_builtin_on_every_field(setup, builtin, cls, changes, load, R, H, seed) -> None:
    model, path = setup
    a = fl.simulate(model.with_engine("e", policy=fl.PolicySpec(builtin), **changes), replications=R,
                    horizon_s=H, seed=seed, load=load, batch_log=True, grid_points=50)
    b = fl.simulate(model.with_engine("e", policy=py(path, cls), **changes), replications=R, horizon_s=H,
                    seed=seed, load=load, batch_log=True, grid_points=50)
    assert b.backend == "reference" and b.policy == "python"
    assert a.batches.sum() > 100 * R and a.completed.min() > 0
    if changes.get("kv_capacity_tokens") == 70:
        assert a.unschedulable.sum() > 0
    elif "kv_capacity_tokens" in changes:
        assert a.preemptions.sum() > 0 or builtin == "vllm"
    assert_same(a, b, f"{builtin} vs {cls} {changes}")
    assert a.steps == b.steps


def test_plugins_equal_builtins_on_random_engines(setup) -> None:
    """More seeds, loads, R and caps: drawn from a fixed generator."""
    model, path = setup
    g = np.random.default_rng(2026)
    for builtin, cls in (("sarathi", "DecodeFirst"), ("vllm", "PromptFirst"), ("fastertransformer", "DecodeOnly")):
        for _ in range(3):
            ch = {}
            if g.random() < 0.5:
                ch["max_batch_requests"] = int(g.integers(1, 6))
            if g.random() < 0.5:
                ch["kv_capacity_tokens"] = int(g.integers(64, 400))
            if g.random() < 0.3:
                ch["max_resident_requests"] = int(g.integers(1, 8))
            kw = dict(replications=int(g.integers(1, 5)), horizon_s=float(g.uniform(5, 20)), seed=int(g.integers(1000)),
                      load=float(g.uniform(0.2, 2.0)), grid_points=int(g.integers(2, 80)))
            a = fl.simulate(model.with_engine("e", policy=fl.PolicySpec(builtin), **ch), **kw)
            b = fl.simulate(model.with_engine("e", policy=py(path, cls), **ch), **kw)
            assert_same(a, b, f"{builtin} {ch} {kw}")
            assert a.steps == b.steps


def test_blocks_loads_initial_and_workers(setup, monkeypatch: pytest.MonkeyPatch) -> None:
    """Several replication blocks (per-block seeds), a load per replication, initial requests, and
    worker processes (the numbers do not depend on them)."""
    model, path = setup
    monkeypatch.setattr(importlib.import_module("fluidllm.sim.simulate"), "BLOCK", 3)
    loads = np.linspace(0.6, 1.5, 7)
    init = [(5, 3), (0, 4, 10), (70, 0)]     # the last: a prompt above the budget, served in pieces by sarathi
    kw = dict(replications=7, horizon_s=15, seed=12, load=loads, initial=init, grid_points=40)
    a = fl.simulate(model.with_engine("e", policy=fl.PolicySpec("sarathi")), **kw)
    b = fl.simulate(model.with_engine("e", policy=py(path, "DecodeFirst")), **kw)
    c = fl.simulate(model.with_engine("e", policy=py(path, "DecodeFirst")), workers=2, **kw)
    assert_same(a, b, "blocks")
    assert_same(b, c, "workers")


def test_replayed_requests(setup) -> None:
    model, path = setup
    eng, wl = model.engines["e"], list(model.workloads.values())
    reqs = [draw_requests(wl, 12_000.0, s) for s in range(3)]
    a = fl.simulate(model, requests=reqs, horizon_s=10)      # arrivals in [10 s, 12 s) are not part of the run
    b = fl.simulate(model.with_engine("e", policy=py(path, "DecodeFirst")), requests=reqs, horizon_s=10)
    assert_same(a, b, "replay")
    assert eng.policy.name == "sarathi"


def test_vectorized_plugin_runs_in_the_core_and_equals_its_scalar_form(setup) -> None:
    model, path = setup
    spec = py(path, "VectorDecodeFirst")
    rule = vector_policy(spec)
    assert rule.work_conserving and not rule.whole_prompts and not rule.needs_running
    for changes in ({}, {"max_batch_requests": 3, "kv_capacity_tokens": 150}):
        kw = dict(replications=6, horizon_s=30, seed=21, load=1.3, batch_log=True)
        vec = fl.simulate(model.with_engine("e", policy=spec, **changes), **kw)
        sca = fl.simulate(model.with_engine("e", policy=py(path, "DecodeFirst"), **changes), **kw)
        ref = fl.simulate(model.with_engine("e", policy=fl.PolicySpec("sarathi"), **changes), **kw)
        assert vec.backend == "numpy" and sca.backend == "reference"
        assert_same(vec, sca, f"vectorized vs scalar {changes}")
        assert_same(vec, ref, f"vectorized vs sarathi {changes}")
        # the core's own log, exactly the built-in's (the same admission into the slots)
        assert vec.batch_log == ref.batch_log


def test_scalar_plugin_has_no_vectorized_rule(setup) -> None:
    _, path = setup
    with pytest.raises(NotImplementedError, match="per-replication path"):
        vector_policy(py(path, "DecodeFirst"))
    from fluidllm.policies.plugin import policy_object
    assert plugin_vector_policy(policy_object(py(path, "VectorDecodeFirst"))).name == "vector-decode-first"


def test_a_non_fcfs_plugin_sees_every_waiting_request(setup) -> None:
    """Shortest prompt first serves younger short prompts ahead of older long ones: it differs
    from sarathi (which the core's admission shortcut would have forced) and is still checked."""
    model, path = setup
    kw = dict(replications=4, horizon_s=30, seed=2, load=4.0)     # 0.8 of capacity
    spf = fl.simulate(model.with_engine("e", policy=py(path, "ShortestPromptFirst")), **kw)
    sar = fl.simulate(model.with_engine("e", policy=fl.PolicySpec("sarathi")), **kw)
    assert np.array_equal(spf.arrived, sar.arrived)          # the same draws
    assert spf.ttft.mean < 0.95 * sar.ttft.mean               # short prompts first: lower mean TTFT
    assert spf.e2e.p50 < sar.e2e.p50


def test_stability_and_boundary_with_a_plugin(setup) -> None:
    model, path = setup
    m = model.with_engine("e", policy=py(path, "DecodeFirst"))
    r = fl.stability(m, load=0.5, replications=4, horizon_s=40, seed=1, extensions=0)
    s = fl.stability(model, load=0.5, replications=4, horizon_s=40, seed=1, extensions=0)
    assert r.verdict == s.verdict and r.slope_tokens_per_s == s.slope_tokens_per_s
    assert r.work_conserving is True
    b = fl.stability_boundary(m, lo=0.5, hi=3.0, points=3, rounds=1, replications=3, horizon_s=20, seed=4)
    c = fl.stability_boundary(model, lo=0.5, hi=3.0, points=3, rounds=1, replications=3, horizon_s=20, seed=4)
    assert b.rounds == c.rounds
