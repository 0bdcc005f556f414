"""The network static planning LP against theory: fixed-engine DAGs, Rybko–Stolyar, replica sets
(Prop. 3), the single-engine configuration LP (k_max, KV memory, two-feature batch time), duals,
and the region (Gale enumeration against the LP projection)."""
from __future__ import annotations

import json

import cvxpy as cp
import numpy as np
import pytest

import fluidllm as fl
from fluidllm.capacity import max_token_rate
from fluidllm.capacity.network import (NetworkCapacity, network_capacity, network_region_halfspaces,
                                       region_vertices)
from fluidllm.model import ClassNetwork, JobClass
from fluidllm.model.batchtime import Constant

PAPER = fl.Staircase(11.28, 35.47, 128)


def eng(name, b=512, bt=PAPER, k=None, kv=None):
    return fl.Engine(name, b, bt, max_batch_requests=k, kv_capacity_tokens=kv)


def mu(e) -> float:
    return max_token_rate(e.batch_time, e.token_budget).tokens_per_s


def rybko_stolyar(load: float = 0.9) -> ClassNetwork:
    E = {"e1": fl.Engine("e1", 768, Constant(1.0)), "e2": fl.Engine("e2", 768, Constant(1.0))}
    rate = load * 768 / 608 * 1000  # req/s: t_b = 1 ms, b_max = 768 → μ* = 768 000 tokens/s
    cl = (JobClass("A.1", "e1", 32, 32, "A"), JobClass("A.2", "e2", 512, 32, "A"),
          JobClass("B.1", "e2", 32, 32, "B"), JobClass("B.2", "e1", 512, 32, "B"))
    P = np.zeros((4, 4))
    P[0, 1] = P[2, 3] = 1.0
    return ClassNetwork(E, cl, np.array([rate, 0, rate, 0]), P)


def fork_dag() -> ClassNetwork:
    """W: a on e1, then b (e2) and c (e3) in parallel, then d on e1 (a join); V: one call on e3;
    U: a feedback loop on e2 (repeat with probability 0.3)."""
    E = {"e1": eng("e1", 512), "e2": eng("e2", 256), "e3": eng("e3", 1024)}
    cl = (JobClass("W.a", "e1", 200, 50, "W"), JobClass("W.b", "e2", 400, 100, "W"),
          JobClass("W.c", "e3", 1000, 20, "W"), JobClass("W.d", "e1", 300, 300, "W"),
          JobClass("V.x", "e3", 64, 512, "V"), JobClass("U.y", "e2", 128, 128, "U"))
    P = np.zeros((6, 6))
    P[0, 1] = P[0, 2] = 1.0
    P[1, 3] = 1.0   # the join: d runs once per W job (at the rate level)
    P[5, 5] = 0.3
    return ClassNetwork(E, cl, np.array([1.0, 0, 0, 0, 2.0, 1.5]), P)


def test_fixed_engine_dag_is_the_min_over_engines_and_duals_name_the_bottleneck():
    cn = fork_dag()
    lam = cn.visit_rates
    load = {e: 0.0 for e in cn.engines}
    for c, l in zip(cn.classes, lam):
        load[c.engines[0]] += l * c.mean_tokens
    ratios = {e: mu(cn.engines[e]) / load[e] for e in cn.engines}
    want = min(ratios.values())
    res = network_capacity(cn)
    assert isinstance(res, NetworkCapacity)
    assert res.max_scale == pytest.approx(want, rel=1e-7)
    b = min(ratios, key=ratios.get)
    assert res.bottlenecks == (b,)
    # duals: the bottleneck's time row prices θ* (elasticity 1), the others are free
    for name, e in res.engines.items():
        if name == b:
            assert e.dual > 0 and e.elasticity == pytest.approx(1.0, rel=1e-6) and e.binding == "token_budget"
            assert e.utilisation == pytest.approx(1.0 / res.max_scale, rel=1e-6) and e.saturated
        else:
            assert not e.saturated
            assert abs(e.dual) < 1e-8 and e.binding == "none"
            assert e.utilisation == pytest.approx(load[name] / mu(cn.engines[name]), rel=1e-6)
    assert res.workflows["W"] == pytest.approx(1.0 * want) and res.workflows["U"] == pytest.approx(1.5 * want)
    # the dual is the derivative: 1 % more capacity on the bottleneck gives dual × 1 % more θ
    assert res.engines[b].dual == pytest.approx(res.max_scale, rel=1e-6)
    # scaling the rates scales θ* inversely
    assert network_capacity(cn.scaled(4.0)).max_scale == pytest.approx(want / 4, rel=1e-7)


def test_rybko_stolyar_is_inside_the_region():
    """Each engine at 0.9: the LP says θ* = 1/0.9 although priority policies are unstable there
    (Li, Dai, Peng v3 §5.4): the static planning LP is necessary, not sufficient, for cyclic routing."""
    res = network_capacity(rybko_stolyar(0.9))
    assert res.max_scale == pytest.approx(1 / 0.9, rel=1e-9)
    assert res.stable and set(res.bottlenecks) <= {"e1", "e2"} and res.bottlenecks
    assert sum(e.elasticity for e in res.engines.values()) == pytest.approx(1.0, rel=1e-6)
    for e in res.engines.values():  # dual-degenerate: both saturate, the duals split arbitrarily
        assert e.utilisation == pytest.approx(0.9, rel=1e-9) and e.saturated
    reg = network_region_halfspaces(rybko_stolyar(0.9), workflows=["A", "B"])
    assert reg.method == "gale" and reg.A.shape == (2, 2)
    V = region_vertices(reg)
    rs = 0.9 * 768 / 608 * 1000 / 0.9
    assert any(np.allclose(v, [rs, rs], rtol=1e-9) for v in V)
    assert reg.max_scale([1.0, 1.0]) == pytest.approx(rs, rel=1e-9)


@pytest.mark.parametrize("K", [2, 3, 5])
@pytest.mark.parametrize("rule", ["jsq-tokens", "jsq-requests", "round-robin", "random"])
def test_identical_replicas_scale_k_times(K, rule):
    """Prop. 3: K identical replicas sustain K μ* / offered tokens, whatever the rule (equal shares
    are optimal for identical engines)."""
    E = {f"r{i}": eng(f"r{i}", 512) for i in range(K)}
    cn = ClassNetwork(E, (JobClass("w.a", tuple(E), 129, 112, "w", rule),), np.array([3.0]), np.zeros((1, 1)))
    res = network_capacity(cn)
    assert res.max_scale == pytest.approx(K * mu(E["r0"]) / (3.0 * 241), rel=1e-7)
    assert sum(res.routing["w.a"].values()) == pytest.approx(3.0, rel=1e-9)


def test_heterogeneous_replicas_free_split_beats_round_robin():
    E = {"big": eng("big", 1024), "small": eng("small", 128)}
    mk = lambda rule: ClassNetwork(E, (JobClass("w.a", ("big", "small"), 100, 100, "w", rule),),  # noqa: E731
                                   np.array([1.0]), np.zeros((1, 1)))
    free = network_capacity(mk("jsq-tokens"))
    assert free.max_scale == pytest.approx((mu(E["big"]) + mu(E["small"])) / 200, rel=1e-7)
    assert set(free.bottlenecks) == {"big", "small"}
    # the split follows the capacities
    r = free.routing["w.a"]
    assert r["big"] / r["small"] == pytest.approx(mu(E["big"]) / mu(E["small"]), rel=1e-6)
    rr = network_capacity(mk("round-robin"))
    assert rr.max_scale == pytest.approx(2 * mu(E["small"]) / 200, rel=1e-7)
    assert rr.bottlenecks == ("small",)
    assert network_capacity(mk("round-robin"), split="free").max_scale == pytest.approx(free.max_scale, rel=1e-9)
    w = ClassNetwork(E, (JobClass("w.a", ("big", "small"), 100, 100, "w", "weighted", (3.0, 1.0)),),
                     np.array([1.0]), np.zeros((1, 1)))
    want = min(mu(E["big"]) / (0.75 * 200), mu(E["small"]) / (0.25 * 200))
    assert network_capacity(w).max_scale == pytest.approx(want, rel=1e-7)


def _one_class(model: fl.Model, name: str, moments: bool = True):
    w = model.workloads[name]
    L = w.lengths
    cn = ClassNetwork(dict(model.engines), (JobClass(name, (w.engine,), L.mean_prefill, L.mean_decode, name),),
                      np.array([w.rate_per_s]), np.zeros((1, 1)))
    kvm = {name: (L.mean_kv_token_batches, L.mean_decode_context)} if moments else None
    return cn, kvm


@pytest.mark.parametrize("case", ["kmax", "kv", "kv-geometric", "two-feature", "plain"])
def test_one_class_network_equals_single_engine_capacity(case):
    det = lambda p, d: fl.Independent(fl.Deterministic(p), fl.Deterministic(d))  # noqa: E731
    if case == "kmax":     # vertex C of Theorem 10: k_max binds
        e, law, rate = eng("e", 128, k=100), det(290, 990), 1000 / 467.5
    elif case == "kv":
        e, law, rate = eng("e", 96, kv=6000), det(100, 1000), 1.0
    elif case == "kv-geometric":
        e, law, rate = eng("e", 256, k=64, kv=40000), fl.Independent(fl.Deterministic(200), fl.Geometric(150)), 2.0
    elif case == "two-feature":
        bt = fl.TwoFeature(c_ms=8.0, a_ms=0.05, b0=64, decode_ms=0.03, kv_ms=2e-4, prefill_sq_ms=1e-5)
        e, law, rate = eng("e", 48, bt, k=20), det(300, 40), 1.0
    else:
        e, law, rate = eng("e", 512), det(129, 112), 5.0
    m = fl.Model({"e": e}, {"w": fl.Workload("w", fl.PoissonArrival(rate), law, "e")})
    single = fl.capacity(m)
    cn, kvm = _one_class(m, "w")
    res = network_capacity(cn, kv_moments=kvm)
    assert res.max_scale == pytest.approx(single.max_scale, rel=1e-6)
    ec, ne = single.engines["e"], res.engines["e"]
    assert ne.bottleneck and ne.binding == ec.binding and set(ne.binding_all) == set(ec.binding_all)
    assert ne.utilisation == pytest.approx(ec.utilisation, rel=1e-6)
    if case in ("kmax", "kv", "plain"):  # deterministic lengths: the means-only fallback is exact
        assert network_capacity(cn).max_scale == pytest.approx(single.max_scale, rel=1e-6)
    if case == "kmax":
        assert ne.binding == "batch_requests"
        assert ne.support[0]["prefill_tokens"] == 29 and ne.support[0]["decode_tokens"] == 99
    if case == "kv":
        # the per-batch cap ⌊M / (κ + 1)⌋ = 9 decodes binds (as in the single-engine LP)
        assert ne.binding == "kv_memory" and all(c["decode_tokens"] <= 9 for c in ne.support)
    if case == "kv-geometric":  # the means-only fallback under-estimates E[g]: an outer bound
        assert network_capacity(cn).max_scale >= single.max_scale * (1 - 1e-9)


def test_kv_bottleneck_in_a_network_and_the_lp_region():
    """Two engines, one with a KV limit that binds; the LP projection region agrees with θ* along
    several directions."""
    E = {"m": eng("m", 96, kv=6000), "f": eng("f", 512)}
    cl = (JobClass("A.1", "f", 500, 20, "A"), JobClass("A.2", "m", 100, 1000, "A"),
          JobClass("B.1", ("m", "f"), 200, 50, "B", "jsq-tokens"))
    P = np.zeros((3, 3))
    P[0, 1] = 1.0
    cn = ClassNetwork(E, cl, np.array([0.05, 0.0, 1.0]), P)
    res = network_capacity(cn)
    assert "m" in res.bottlenecks and res.engines["m"].binding == "kv_memory"
    reg = network_region_halfspaces(cn, workflows=["A", "B"])
    assert reg.method == "lp"
    # κ_m is frozen at the current mix in the region; give the same κ to the capacity LP
    assert reg.decode_context["m"] == pytest.approx(res.engines["m"].decode_context)
    for d in ([1.0, 0.0], [0.0, 1.0], [0.05, 1.0], [1.0, 3.0]):
        alpha = np.array([d[0], 0.0, d[1]])
        th = network_capacity(ClassNetwork(E, cl, alpha, P), decode_context=reg.decode_context).max_scale
        assert reg.max_scale(d) == pytest.approx(th, rel=1e-5)
    V = region_vertices(reg)
    assert V.shape[1] == 2 and np.allclose(V[0], 0)


def _replica_network() -> ClassNetwork:
    E = {"a": eng("a", 512), "b": eng("b", 256), "c": eng("c", 1024), "d": eng("d", 128)}
    cl = (JobClass("X.1", ("a", "b"), 300, 100, "X"), JobClass("X.2", "c", 800, 50, "X"),
          JobClass("Y.1", ("b", "c", "d"), 100, 300, "Y"), JobClass("Y.2", "a", 64, 64, "Y"),
          JobClass("Z.1", "d", 500, 10, "Z"), JobClass("Z.2", ("a", "c"), 50, 50, "Z", "round-robin"),
          JobClass("Q.1", "b", 40, 40, "Q"))
    P = np.zeros((7, 7))
    P[0, 1] = P[2, 3] = P[4, 5] = 1.0
    P[3, 2] = 0.2   # Y loops back with probability 0.2
    return ClassNetwork(E, cl, np.array([1.0, 0, 2.0, 0, 0.5, 0, 3.0]), P)


def test_gale_halfspaces_equal_the_lp_projection_and_the_capacity_lp():
    cn = _replica_network()
    rng = np.random.default_rng(7)
    for coords in (["X", "Y"], ["X", "Y", "Z"]):
        gale = network_region_halfspaces(cn, workflows=coords)
        lp = network_region_halfspaces(cn, workflows=coords, method="lp")
        assert gale.method == "gale" and lp.method == "lp"
        Vg, Vl = region_vertices(gale), region_vertices(lp)
        assert Vg.shape == Vl.shape
        for v in Vg:
            assert np.min(np.abs(Vl - v).max(1) / np.maximum(1.0, np.abs(v).max())) < 1e-5
        # along random directions (the others at their current rates) the LP's θ agrees
        for _ in range(4):
            u = rng.uniform(0.1, 1.0, len(coords))
            t_g, t_l = gale.max_scale(u), lp.max_scale(u)
            assert t_g == pytest.approx(t_l, rel=1e-5)
            assert gale.contains(0.99 * t_g * u) and not gale.contains(1.01 * t_g * u)
    # all workflows as coordinates: the region's max_scale along α is the capacity LP's θ*
    full = network_region_halfspaces(cn, workflows=["X", "Y", "Z", "Q"])
    assert full.max_scale([1.0, 2.0, 0.5, 3.0]) == pytest.approx(network_capacity(cn).max_scale, rel=1e-7)
    # class coordinates: the same region for single-entry workflows
    cls = network_region_halfspaces(cn, classes=["X.1", "Y.1", "Z.1", "Q.1"])
    assert cls.max_scale([1.0, 2.0, 0.5, 3.0]) == pytest.approx(full.max_scale([1.0, 2.0, 0.5, 3.0]), rel=1e-9)


def test_fixed_engine_halfspaces_are_the_engine_rows():
    cn = fork_dag()
    reg = network_region_halfspaces(cn, workflows=["W", "V", "U"])
    assert sorted(reg.rows) == ["e1", "e2", "e3"]
    lam = np.linalg.solve(np.eye(6) - cn.routing.T, np.eye(6)[:, [0, 4, 5]])
    for i, e in enumerate(reg.rows):
        coef = sum(lam[k] * c.mean_tokens for k, c in enumerate(cn.classes) if c.engines[0] == e) / mu(cn.engines[e])
        j = reg.rows.index(e)
        assert np.allclose(reg.A[j], coef, rtol=1e-9) and reg.b[j] == pytest.approx(1.0)
    V = region_vertices(cn, workflows=["W", "V", "U"])
    assert V.shape[1] == 3 and np.all(reg.A @ V.T <= reg.b[:, None] + 1e-9)


def test_result_api_and_problem():
    res = network_capacity(_replica_network())
    d = json.loads(res.to_json())
    assert d["max_scale"] == pytest.approx(res.max_scale) and d["bottlenecks"] == list(res.bottlenecks)
    assert set(d["engines"]) == {"a", "b", "c", "d"} and "routing_per_s" in d
    assert "bottleneck engines" in res.table() and "replica-set split" in res.table()
    assert isinstance(res.problem, cp.Problem)
    names = {type(c).__name__ for c in res.problem.constraints}
    assert names <= {"Equality", "Inequality"}
    assert res.problem.value * res.theta_ref == pytest.approx(res.max_scale)
    # duals read by name: the time row of each engine, in engine_order
    t = np.asarray(res.constraints["time"].dual_value) * res.theta_ref
    assert np.allclose(t, [res.engines[e].dual for e in res.engine_order])
    assert set(res.constraints) >= {"routing", "split", "prefill_tokens", "decode_tokens", "time"}
    # each class's routed rates add up to its visit rate at the current rates
    cn = _replica_network()
    for k, c in enumerate(cn.classes):
        assert sum(res.routing[c.name].values()) == pytest.approx(cn.visit_rates[k], rel=1e-7)
    # round-robin keeps equal shares
    z = res.routing["Z.2"]
    assert z["a"] == pytest.approx(z["c"], rel=1e-7)


def test_errors_name_the_field():
    cn = rybko_stolyar()
    with pytest.raises(fl.ModelError, match="split"):
        network_capacity(cn, split="magic")
    with pytest.raises(fl.ModelError, match="arrival_rates"):
        network_capacity(cn.scaled(0.0))
    with pytest.raises(fl.ModelError, match="workflows"):
        network_region_halfspaces(cn, workflows=["nope"])
    with pytest.raises(fl.ModelError, match="coordinates"):
        region_vertices(network_region_halfspaces(cn, workflows=["A"]))
    with pytest.raises(fl.ModelError, match="kv_moments"):
        network_capacity(cn, kv_moments={"nope": (1.0, 1.0)})
    with pytest.raises(fl.ModelError, match="gale"):
        network_region_halfspaces(ClassNetwork({"e": eng("e", 128, k=10)}, (JobClass("a", "e", 1, 1),),
                                               np.array([1.0]), np.zeros((1, 1))), classes=["a"], method="gale")


def _plain_lp(cn: ClassNetwork, kvm=None) -> float:
    """Reference: the static planning LP written out plainly with scipy — every batch configuration
    (p, d) with p + d ≤ b_max (no extreme-column reduction, no pruning, no scaling); free splits
    for JSQ, equal shares otherwise; deterministic-length KV moments unless given."""
    from scipy.optimize import linprog

    names = list(cn.engines)
    lam = cn.visit_rates
    pairs = [(k, names.index(e)) for k, c in enumerate(cn.classes) for e in c.engines]
    g = [(kvm or {}).get(c.name, ((c.mean_decode + 1) * (c.mean_prefill + c.mean_decode / 2),))[0] for c in cn.classes]
    kap = [(kvm or {}).get(c.name, (0, c.mean_prefill + (c.mean_decode - 1) / 2))[1] for c in cn.classes]
    cols = []
    for j, n in enumerate(names):
        e = cn.engines[n]
        num = sum(lam[k] * cn.classes[k].mean_decode * kap[k] / len(cn.classes[k].engines) for k, jj in pairs if jj == j)
        den = sum(lam[k] * cn.classes[k].mean_decode / len(cn.classes[k].engines) for k, jj in pairs if jj == j)
        kappa = num / den if den > 0 else 0.0
        b, K, M = e.token_budget, e.max_batch_requests, e.kv_capacity_tokens
        for p in range(b + 1):
            for d in range(b + 1 - p):
                if p + d == 0 or (K is not None and d + (p > 0) > K) or (M is not None and d > M // (kappa + 1)):
                    continue
                q = min(p, K - d) if K is not None else p
                t = float(e.batch_time.batch_ms(np.array([p]), np.array([d]), np.array([d * kappa]))[0])
                cols.append((j, p, d, q, t))
    nX, nY = len(pairs), len(cols)
    n = nX + nY + 1
    A_ub, b_ub, A_eq, b_eq = [], [], [], []
    for k, c in enumerate(cn.classes):
        row = np.zeros(n)
        for v, (kk, _) in enumerate(pairs):
            if kk == k:
                row[v] = 1.0
        row[-1] = -lam[k]
        A_eq.append(row)
        b_eq.append(0.0)
        if len(c.engines) > 1 and c.routing not in ("jsq-tokens", "jsq-requests"):
            for v, (kk, _) in enumerate(pairs):
                if kk == k:
                    r = np.zeros(n)
                    r[v], r[-1] = 1.0, -lam[k] / len(c.engines)
                    A_eq.append(r)
                    b_eq.append(0.0)
    for j, name in enumerate(names):
        M = cn.engines[name].kv_capacity_tokens
        for what in range(4 if M is not None else 3):
            row = np.zeros(n)
            for v, (k, jj) in enumerate(pairs):
                if jj == j:
                    c = cn.classes[k]
                    row[v] = [c.mean_prefill, c.mean_decode, float(c.mean_prefill > 0), g[k]][what] / 1000.0
            for i, (jj, p, d, q, t) in enumerate(cols):
                if jj == j:
                    row[nX + i] = -[p, d, q, M][what] / t
            A_ub.append(row)
            b_ub.append(0.0)
        row = np.zeros(n)
        for i, col in enumerate(cols):
            if col[0] == j:
                row[nX + i] = 1.0
        A_ub.append(row)
        b_ub.append(1.0)
    c = np.zeros(n)
    c[-1] = -1.0
    res = linprog(c, A_ub=np.array(A_ub), b_ub=b_ub, A_eq=np.array(A_eq), b_eq=b_eq, method="highs")
    assert res.status == 0, res.message
    return -res.fun


@pytest.mark.parametrize("seed", range(6))
def test_random_networks_against_a_plain_lp(seed):
    rng = np.random.default_rng(seed)
    E = {}
    for j in range(4):
        b = int(rng.integers(8, 40))
        k = int(rng.integers(2, b)) if rng.random() < 0.5 else None
        kv = int(rng.integers(200, 3000)) if rng.random() < 0.4 else None
        bt = [fl.Staircase(2.0, 3.0, int(rng.integers(1, 16))), fl.Affine(1.0, 0.2), Constant(1.0)][j % 3]
        E[f"e{j}"] = eng(f"e{j}", b, bt, k, kv)
    names = list(E)
    cl, K = [], 6
    for i in range(K):
        es = tuple(rng.choice(names, size=int(rng.integers(1, 3)), replace=False))
        rule = str(rng.choice(["jsq-tokens", "round-robin"]))
        cl.append(JobClass(f"c{i}", es, float(rng.integers(1, 30)), float(rng.integers(0, 20)), f"w{i // 2}", rule))
    P = np.zeros((K, K))
    for i in range(0, K, 2):
        P[i, i + 1] = 1.0
    P[K - 1, 0] = 0.3 * rng.random()   # a cycle back to the first class
    cn = ClassNetwork(E, tuple(cl), np.array([rng.uniform(0.5, 2.0) if i % 2 == 0 else 0.0 for i in range(K)]), P)
    assert network_capacity(cn).max_scale == pytest.approx(_plain_lp(cn), rel=1e-6)
