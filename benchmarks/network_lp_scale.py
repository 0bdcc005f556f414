"""How long the network static planning LP takes at scale, against a peer in the same process.

Random networks: E engines (paper staircase batch time; a third with k_max, a sixth with KV memory;
token budgets 256..1024), W workflows × C calls (a chain with an occasional fork; a quarter of the
calls on a replica set of 2..4 engines with JSQ routing, i.e. a free split). Timed: building +
solving `network_capacity` (cvxpy + HiGHS, vectorised sparse constraints; `engine_detail=False`
so that only the network LP is timed, and separately with it). Peer: the same LP, read back from
the cvxpy problem, solved by scipy.optimize.linprog (HiGHS) directly (ratio: the cvxpy
modelling overhead), and the same LP built with scalar constraints in Python loops; all must give
the same max_scale. Target: 100 engines, 1,000 calls < 10 s.
Run: `python benchmarks/network_lp_scale.py [--quick]`.
"""
from __future__ import annotations

import sys
import time

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linprog

import fluidllm as fl
from fluidllm.capacity.network import _COL_CACHE, network_capacity
from fluidllm.model import ClassNetwork, JobClass
from fluidllm.model.batchtime import Staircase


def random_network(n_engines: int, n_workflows: int, calls: int, seed: int = 0) -> ClassNetwork:
    rng = np.random.default_rng(seed)
    engines = {}
    for j in range(n_engines):
        b = int(rng.choice([256, 512, 768, 1024]))
        k = int(rng.choice([64, 128])) if j % 3 == 0 else None
        m = int(rng.choice([60_000, 131_000])) if j % 6 == 1 else None
        engines[f"e{j}"] = fl.Engine(f"e{j}", b, Staircase(11.28, 35.47, 128), max_batch_requests=k,
                                     kv_capacity_tokens=m)
    names = list(engines)
    classes, K = [], n_workflows * calls
    P = np.zeros((K, K))
    alpha = np.zeros(K)
    for w in range(n_workflows):
        for c in range(calls):
            i = w * calls + c
            if rng.random() < 0.25:
                es = tuple(rng.choice(names, size=int(rng.integers(2, min(5, n_engines + 1))), replace=False))
                routing = "jsq-tokens"
            else:
                es, routing = (str(rng.choice(names)),), "jsq-tokens"
            classes.append(JobClass(f"W{w}.c{c}", es, float(rng.integers(16, 2048)), float(rng.integers(8, 512)),
                                    f"W{w}", routing))
            if c + 1 < calls:
                P[i, i + 1] = 1.0
                if c + 2 < calls and rng.random() < 0.1:
                    P[i, i + 2] = 1.0       # a fork: the next two calls both run
        alpha[w * calls] = float(rng.uniform(0.01, 0.2))
    return ClassNetwork(engines, tuple(classes), alpha, P)


def peer_linprog(prob) -> tuple[float, float]:
    """The same LP (from cvxpy's own standard form) solved by linprog/HiGHS; (max_scale_normalised, s)."""
    import cvxpy as cp
    data, _, _ = prob.get_problem_data(cp.HIGHS)   # A x = b (zero cone), A x <= b (nonneg), lower bounds
    c, A, b = data["c"], data["A"], data["b"]
    lb = data.get("lower_bounds")
    lb = np.full(A.shape[1], -np.inf) if lb is None else np.asarray(lb, dtype=float)
    dims = data["dims"]
    nz, nl = dims.zero, dims.nonneg
    A = sp.csr_matrix(A)
    t = time.perf_counter()
    res = linprog(c, A_ub=A[nz:nz + nl], b_ub=b[nz:nz + nl], A_eq=A[:nz], b_eq=b[:nz],
                  bounds=np.c_[lb, np.full(lb.size, np.inf)], method="highs")
    assert res.status == 0, res.message
    return -res.fun, time.perf_counter() - t


def scalar_peer(cn: ClassNetwork) -> tuple[float, float]:
    """The same LP built the naive way: one cvxpy constraint per class and per engine row (Python
    loops over scalar expressions), HiGHS; (θ*, seconds)."""
    import cvxpy as cp
    from fluidllm.capacity.network import _ROWS, _build, _theta_ref

    t = time.perf_counter()
    lam = np.asarray(cn.visit_rates)
    data = _build(cn, lam, "rule", None)
    ref = _theta_ref(cn, lam, data)
    nX, nY = data.pairs_k.size, data.col_engine.size
    f = cp.Variable(nX, nonneg=True)
    y = cp.Variable(nY, nonneg=True)
    th = cp.Variable()
    cons = []
    for k in range(len(cn.classes)):
        cons.append(cp.sum(f[np.flatnonzero(data.pairs_k == k)]) == th)
    for r in range(data.F.shape[0]):
        cons.append(f[int(data.F.indices[r])] == th * data.F_share[r])
    lamx = ref * lam[data.pairs_k]
    for kind in _ROWS:
        G, H = data.G[kind].tocsr(), data.H[kind].tocsr()
        for r in range(G.shape[0]):
            gy, hx = G[r], H[r]
            cons.append(gy.data @ y[gy.indices] >= (hx.data * lamx[hx.indices]) @ f[hx.indices])
    T = data.T.tocsr()
    for r in range(T.shape[0]):
        cons.append(cp.sum(y[T[r].indices]) <= 1)
    prob = cp.Problem(cp.Maximize(th), cons)
    prob.solve(solver="HIGHS")
    return ref * float(th.value), time.perf_counter() - t


def main() -> None:
    quick = "--quick" in sys.argv
    sizes = [(10, 20, 5), (50, 100, 5), (100, 200, 5), (200, 400, 5)] if not quick else [(10, 20, 5)]
    network_capacity(random_network(3, 2, 2), engine_detail=False)   # imports, cvxpy warm-up
    hdr = (f"{'engines':>7} {'calls':>6} {'vars':>7} {'cons':>7} {'build+solve s':>13} {'+detail s':>9} "
           f"{'linprog s':>9} {'ratio':>6} {'scalar s':>8} {'ratio':>6} {'max_scale':>10} {'bottlenecks'}")
    print(hdr)
    print("-" * len(hdr))
    for E, W, C in sizes:
        cn = random_network(E, W, C, seed=E)
        _COL_CACHE.clear()
        t0 = time.perf_counter()
        res = network_capacity(cn, engine_detail=False)
        t1 = time.perf_counter()
        _COL_CACHE.clear()
        t2 = time.perf_counter()
        network_capacity(cn, engine_detail=True)
        t3 = time.perf_counter()
        peer_val, t_peer = peer_linprog(res.problem)
        peer = peer_val * res.theta_ref
        assert abs(peer - res.max_scale) <= 1e-6 * max(1.0, res.max_scale), (peer, res.max_scale)
        _COL_CACHE.clear()
        sc_val, t_sc = scalar_peer(cn)
        assert abs(sc_val - res.max_scale) <= 1e-6 * max(1.0, res.max_scale), (sc_val, res.max_scale)
        print(f"{E:>7} {W * C:>6} {res.n_variables:>7} {res.n_constraints:>7} {t1 - t0:>13.3f} {t3 - t2:>9.3f} "
              f"{t_peer:>9.3f} {(t1 - t0) / t_peer:>6.1f} {t_sc:>8.3f} {t_sc / (t1 - t0):>6.1f} "
              f"{res.max_scale:>10.5g} {','.join(res.bottlenecks[:3])}")
    print("linprog: HiGHS alone on cvxpy's stuffed matrices (ratio = ours / it: modelling overhead);")
    print("scalar: the same LP built with one cvxpy constraint per class/engine row (ratio = it / ours).")
    print("target: 100 engines, 1000 calls: build+solve < 10 s")


if __name__ == "__main__":
    main()
