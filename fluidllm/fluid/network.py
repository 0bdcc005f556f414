"""Multiclass fluid model of a network of batched LLM engines (the class-level form
:class:`~fluidllm.model.classes.ClassNetwork`), its trajectories and a fluid stability verdict.

Model (Li, Dai, Peng, arXiv 2504.07347 v3 §5, in the classical multiclass fluid form of Dai 1995).
Units: tokens and milliseconds inside (rates in tokens/ms); results report seconds.

* Class k (one call of a workflow) brings m_k = m_p,k + m_d,k tokens per visit (m_k > 0 required).
  Its fluid content z_k(t) >= 0 is measured in tokens; z_k / m_k is the fluid number of jobs.
  A class on a replica set has one buffer (k, e) per engine e of its set; z_k is their sum.
* Engine e serves tokens at μ_e = b_max / t(b_max) (tokens/ms) whenever it holds fluid: at fluid
  scale a backlog of Θ(n) requests always fills a b_max batch (the work-conservation argument of
  :mod:`fluidllm.fluid.model`; Li et al. Thm 2), and a request's own tokens take O(1) batches, so a
  job is served "instantly" at fluid scale and only the token rate μ_e matters. The engine splits
  μ_e among its buffers by the policy: u_(k,e) >= 0, Σ_k u_(k,e) <= μ_e, with equality while
  Σ_k z_(k,e) > 0 (every policy here is work-conserving except max-weight, see below).
* Flow (jobs × mean tokens of the next class): with U_k(t) = ∫ u_k the class-k tokens served,

      z_k(t) = z_k(0) + α_k m_k t + Σ_l P[l, k] (m_k / m_l) U_l(t) − U_k(t),

  i.e. class-l completions (u_l / m_l jobs per ms) create class-k jobs at P[l, k] per completion.
  (Assumes a job's tokens leave at the fluid token rate of its class: the standard head-of-line
  fluid with service time m_k / μ_e per job.)
* Replica sets split a class's inflow by the fluid limit of the routing rule: ``round-robin`` and
  ``random`` equal fractions, ``weighted`` the normalised weights; ``jsq-tokens`` / ``jsq-requests``
  join the least-loaded engines: the inflow water-fills the engines' total token (job) backlogs, so
  the loaded engines' backlogs are equalised (the fluid limit of join-the-shortest-queue).

Policies (``policies[engine]``; an engine not named uses ``"kfcfs"``):

* ``"kfcfs"``: the engine's greedy fill in admission order. At fluid scale this is FIFO across the
  engine's classes: every request admitted earlier is finished before later ones get tokens, so
  the fluid is the FIFO fluid model (Bramson 1996): the engine serves its content in arrival order,
  cohort by cohort, each cohort at its own class composition. (Chosen over head-of-line
  proportional sharing because K-FCFS really is FIFO across classes; the proportional rule is
  ``"proportional"``.)
* ``"proportional"``: u_(k,e) = μ_e z_(k,e) / Σ_j z_(j,e) (head-of-line processor sharing).
* ``("priority", order)``: static preemptive priority, ``order`` the class names highest first
  (classes of the engine not listed follow in network order). The highest class with positive
  fluid takes all of μ_e; a class with zero fluid is served at its inflow rate (sliding mode, it
  stays at 0) and the rest goes down the order.
* ``"max-weight"``: max-pressure / back-pressure (Tassiulas–Ephremides 1992; Dai–Lin 2005): class
  k's pressure is (Q_k − Σ_l P[k, l] Q_l) / m_k with Q = z / m the fluid job counts (the job service
  rate on e is μ_e / m_k), and the engine serves the buffer of largest non-negative pressure at
  full rate (ties and emptying classes: the rest goes to the next pressure). A class of negative
  pressure is not served (this is what makes max-pressure throughput-optimal; it may idle).

Integration: an explicit discrete-time fluid scheme with adaptive steps, not exact events
(proportional sharing is not piecewise linear, FIFO is a delay system, and priority / max-weight
have sliding modes). In each step of length h every buffer offers its content plus its inflow of
the step, each engine serves at most μ_e h of it by its policy, and the produced work is routed
within the step (a few fixed-point passes; what the passes leave unrouted stays "in transit" to the
next step and is counted in its class, so tokens are conserved exactly). A class that is empty but
fed is thus served at its inflow rate, as in the fluid's sliding modes. Every policy here is
scale-invariant (z -> c z, t -> c t), so the step is proportional to the backlog,
h = clip(rel_step · W / max_e μ_e, h_floor, h_max): the relative error is uniform in scale and a
drain to 0 takes finitely many steps. The scheme converges to the fluid solution as rel_step -> 0,
with O(h) error at the switching times; on piecewise-linear solutions between switches it is exact.

Stability verdict: the fluid model is stable when every solution reaches 0 in finite time (Dai 1995:
then the queueing network is positive recurrent). Tokens are not the right yardstick across a
route — serving 1 000 tokens of a (32, 32) call can create 8 500 tokens of a (512, 32) call — so the
verdict measures the network workload W̃ = Σ_k z_k w_k / m_k, with w = (I − P)⁻¹ m the tokens a
class-k job still costs the network including its later calls (the trajectory reports it as
``total_work``). A run DRAINS when W̃ falls to δ W̃(0) (δ = 10⁻³; by scale invariance, reaching δ
from every state of size 1 by time T implies reaching 0 by T / (1 − δ)); otherwise the envelope
κ = max W̃ over the last quarter of the horizon / max W̃ over the second quarter decides:
DIVERGES if κ > 1 and W̃ ended above its start, CONTRACTS if κ < 1 (a slow drain, e.g. close to a
stability boundary, where the fluid cycles with shrinking amplitude), INCONCLUSIVE otherwise.
One initial condition can hide an instability: the Rybko–Stolyar pattern is excited from a state
where the fluid sits on one route; the symmetric state (equal content everywhere) drains under the
unstable priority at ρ_e = 0.9, because the two routes then block each other in lockstep. The
verdict therefore runs a set of initial conditions — equal content in every class, and all content
in one class, for each class — and reports the worst.

What is proven stable where (do not read more into the verdicts):

* One engine, any work-conserving policy: stable iff λ(m_p + m_d) < μ* (Li, Dai, Peng, Thm 2).
* Networks with DAG (feed-forward) or fork-join routing, any work-conserving policy on every engine
  (K-FCFS included): stable iff every engine's offered token load ρ_e < 1 (Li, Dai, Peng v3 §5).
  (Feed-forward multiclass fluid networks with work-conserving policies are stable under ρ_e < 1:
  the classical induction along the DAG, Dai 1995 / Chen 1995.)
* Cyclic routing (a workflow revisits an engine): no guarantee for work-conserving policies. The
  Rybko–Stolyar network (v3 §5.4) under priority to the exiting classes is unstable at ρ_e = 0.9;
  the fluid is stable iff ρ_e < 1 and the virtual-station condition holds
  (:mod:`fluidllm.capacity.network_symbolic`; Botvich–Zamyatin 1992, Dai–Vande Vate 1996). Which
  policy is throughput-optimal for cyclic agent networks is left open by the paper.
* Max-weight / back-pressure (max-pressure): throughput-optimal for every topology (stable for every
  rate vector with ρ_e < 1) — a classical result for switched and processing networks
  (Tassiulas–Ephremides 1992; Dai–Lin 2005, whose processing-network model the batched engine fits
  at fluid scale because one engine serves μ_e tokens/ms in any class mix), not a result of Li et al.
  In a model file: ``policy = { kind = "max-pressure", inner }`` on an engine (the network reference
  simulator runs it; ``proofs_checks/check_rybko_stolyar_backpressure.py`` shows it stable on
  Rybko–Stolyar at 0.9 load).
* FIFO (K-FCFS) on cyclic networks: no general guarantee (Bramson 1994 built unstable FIFO networks
  with ρ_e < 1); the verdict here is numerical evidence only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import ModelError, finite_number, integer, require
from ..model.batchtime import Constant
from ..model.classes import ClassNetwork, JobClass
from ..model.engine import Engine

__all__ = ["NETWORK_POLICIES", "NetworkFluidTrajectory", "NetworkFluidVerdict", "network_fluid_trajectory",
           "network_fluid_verdict", "engine_loads", "rybko_stolyar_network"]

NETWORK_POLICIES = ("kfcfs", "proportional", "priority", "max-weight")
_PASSES = 6


def _num(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


# --------------------------------------------------------------------------------------------- setup
@dataclass
class _Net:
    cn: ClassNetwork
    m: np.ndarray                 # (K,) tokens per visit
    alpha_tok: np.ndarray         # (K,) exogenous tokens/ms
    R: np.ndarray                 # (K, K) tokens of class k created per token of class l served: P[l,k] m_k/m_l
    P: np.ndarray
    buf_class: np.ndarray         # (J,) class of each buffer
    buf_engine: np.ndarray        # (J,) engine index of each buffer
    engines: list[str]
    mu: np.ndarray                # (E,) tokens/ms
    kinds: list[str]              # per engine
    orders: list[np.ndarray]      # per engine: its buffers, in policy order (priority) or network order
    split: list[tuple[np.ndarray, np.ndarray | None, str]]  # per class: (buffers, fixed fractions, jsq unit)
    work: np.ndarray              # (K,) tokens the network still serves per token of class k (incl. later calls)


def _policy(spec: Any, eng: str, cn: ClassNetwork, on: list[int]) -> tuple[str, list[int]]:
    f = f"policies.{eng}"
    if isinstance(spec, str):
        require(spec in ("kfcfs", "proportional", "max-weight"), f, spec,
                "must be 'kfcfs', 'proportional', 'max-weight' or ('priority', [class names, highest first])")
        return spec, on
    require(isinstance(spec, (tuple, list)) and len(spec) == 2 and spec[0] == "priority"
            and isinstance(spec[1], (tuple, list)), f, spec, "must be ('priority', [class names, highest first])")
    names = [cn.classes[k].name for k in on]
    order = list(spec[1])
    for n in order:
        require(n in names, f"{f}.order", n, f"must name a class served on {eng}: {names}")
    require(len(set(order)) == len(order), f"{f}.order", order, "must not repeat a class")
    ranked = [on[names.index(n)] for n in order] + [k for k in on if cn.classes[k].name not in order]
    return "priority", ranked


def fluid_policies_of(model: Any) -> dict[str, Any]:
    """The fluid policy of each engine of a :class:`~fluidllm.model.network.NetworkModel`:
    ``priority`` engines give ``("priority", order)``, ``max-pressure`` engines ``"max-weight"``; every
    other work-conserving built-in rule is taken at fluid scale as K-FCFS (a work-conserving FCFS fill; the not-work-conserving ones are not modelled).

    Raises:
        ModelError: an engine whose policy has no fluid counterpart here (named).
    """
    out: dict[str, Any] = {}
    for name, eng in model.engines.items():
        spec = eng.policy
        if spec.name == "priority":
            out[name] = ("priority", list(spec.flag("order")))
        elif spec.name == "max-pressure":
            out[name] = "max-weight"
        elif spec.name in ("kfcfs", "sarathi", "orca", "vllm-v1") and spec.work_conserving:
            out[name] = "kfcfs"
        else:
            raise ModelError(f"engines.{name}.policy", spec.name,
                             "must be priority, max-pressure or a work-conserving built-in (kfcfs, sarathi, orca, vllm-v1) "
                             "for the network fluid model")
    return out


def _coerce(cn: Any, policies: Mapping[str, Any] | None) -> tuple[ClassNetwork, Mapping[str, Any] | None]:
    from ..model.network import NetworkModel

    if isinstance(cn, NetworkModel):
        return cn.class_network(), (fluid_policies_of(cn) if policies is None else policies)
    return cn, policies


def _setup(cn: ClassNetwork, policies: Mapping[str, Any] | None) -> _Net:
    require(isinstance(cn, ClassNetwork), "network", cn, "must be a fluidllm ClassNetwork")
    policies = dict(policies or {})
    used = sorted({e for c in cn.classes for e in c.engines}, key=list(cn.engines).index)
    for e in policies:
        require(e in used, "policies", e, f"must name an engine that serves a class: {used}")
    m = np.array([c.mean_tokens for c in cn.classes], dtype=float)
    for c, mk in zip(cn.classes, m):
        require(mk > 0, f"classes.{c.name}.mean_tokens", mk, "must be > 0 for the fluid model (m_p + m_d)")
    mu = []
    for e in used:
        eng = cn.engines[e]
        for key in ("max_batch_requests", "max_resident_requests", "kv_capacity_tokens"):
            require(getattr(eng, key) is None, f"engines.{e}.{key}", getattr(eng, key),
                    "must be unset: the fluid model covers the paper's model (token budget only)")
        require(eng.batch_time.tokens_only, f"engines.{e}.batch_time.kind", eng.batch_time.kind,
                "must be a function of the token count for the fluid model")
        mu.append(eng.token_budget / float(eng.batch_time.tokens_ms(eng.token_budget)))
    bc, be = [], []
    split = []
    for k, c in enumerate(cn.classes):
        idx = []
        for e in c.engines:
            idx.append(len(bc))
            bc.append(k)
            be.append(used.index(e))
        idx_a = np.array(idx)
        if len(idx) == 1:
            split.append((idx_a, np.ones(1), ""))
        elif c.routing in ("round-robin", "random"):
            split.append((idx_a, np.full(len(idx), 1.0 / len(idx)), ""))
        elif c.routing == "weighted":
            w = np.array(c.weights, dtype=float)
            split.append((idx_a, w / w.sum(), ""))
        else:
            split.append((idx_a, None, "tokens" if c.routing == "jsq-tokens" else "requests"))
    bc_a, be_a = np.array(bc), np.array(be)
    kinds, orders = [], []
    for i, e in enumerate(used):
        on = [int(j) for j in np.flatnonzero(be_a == i)]
        kind, ranked = _policy(policies.get(e, "kfcfs"), e, cn, [int(bc_a[j]) for j in on])
        kinds.append(kind)
        # buffers in policy order (each class has at most one buffer per engine)
        orders.append(np.array([on[[int(bc_a[j]) for j in on].index(k)] for k in ranked]))
    P = np.asarray(cn.routing, dtype=float)
    R = P * m[None, :] / m[:, None]
    work = np.linalg.solve(np.eye(len(m)) - P, m) / m
    return _Net(cn, m, cn.arrival_rates / 1000.0 * m, R, P, bc_a, be_a, used, np.array(mu), kinds, orders, split,
                work)


def engine_loads(cn: ClassNetwork) -> dict[str, float]:
    """ρ_e = Σ_k λ_k,e m_k / μ_e per engine (visit rates λ from the traffic equation; a replica set's
    load split by its fixed fractions, or evenly for JSQ, which is then only indicative).

    Raises:
        ModelError: as :func:`network_fluid_trajectory`.
    """
    net = _setup(cn, None)
    lam = cn.visit_rates / 1000.0
    load = np.zeros(len(net.engines))
    for k, (bufs, frac, _) in enumerate(net.split):
        f = frac if frac is not None else np.full(bufs.size, 1.0 / bufs.size)
        for j, fj in zip(bufs, f):
            load[net.buf_engine[j]] += lam[k] * net.m[k] * fj
    return {e: float(load[i] / net.mu[i]) for i, e in enumerate(net.engines)}


# ----------------------------------------------------------------------------------------- stepping
def _waterfill(levels: np.ndarray, amount: float) -> np.ndarray:
    """Amounts a_i >= 0 with Σ a_i = amount that raise the lowest levels first (equalising them)."""
    order = np.argsort(levels)
    s = levels[order]
    out = np.zeros(levels.size)
    for i in range(levels.size):
        nxt = s[i + 1] if i + 1 < levels.size else math.inf
        if float(np.sum(nxt - s[: i + 1])) >= amount:
            lvl = (amount + float(np.sum(s[: i + 1]))) / (i + 1)
            out[order[: i + 1]] = lvl - s[: i + 1]
            break
    return out


class _State:
    def __init__(self, net: _Net, z0: np.ndarray) -> None:
        self.net = net
        self.z = z0.astype(float).copy()
        self.carry = np.zeros(len(net.m))             # class-level tokens in transit
        self.S = np.zeros(len(net.m))                  # last step's class-level service (pass seed)
        self.fifo: list[list[np.ndarray] | None] = []
        for i, kind in enumerate(net.kinds):
            if kind == "kfcfs":
                v = self.z[net.orders[i]].copy()
                self.fifo.append([v] if v.sum() > 0 else [])
            else:
                self.fifo.append(None)

    def split(self, inflow: np.ndarray) -> np.ndarray:
        net = self.net
        y = np.zeros(self.z.size)
        for k, (bufs, frac, unit) in enumerate(net.split):
            a = inflow[k]
            if a <= 0:
                continue
            if frac is not None:
                y[bufs] = a * frac
                continue
            lv = np.zeros(bufs.size)
            for i, j in enumerate(bufs):
                mine = net.buf_engine == net.buf_engine[j]
                lv[i] = self.z[mine].sum() if unit == "tokens" else (self.z[mine] / net.m[net.buf_class[mine]]).sum()
            amt = a if unit == "tokens" else a / net.m[k]
            f = _waterfill(lv, amt)
            y[bufs] = f if unit == "tokens" else f * net.m[k]
        return y

    def allocate(self, y: np.ndarray, h: float) -> np.ndarray:
        net = self.net
        s = np.zeros(self.z.size)
        x = self.z + y
        zc = np.bincount(net.buf_class, weights=self.z, minlength=len(net.m))
        for i, kind in enumerate(net.kinds):
            bufs = net.orders[i]
            cap = net.mu[i] * h
            xi = x[bufs]
            if kind == "proportional":
                tot = xi.sum()
                s[bufs] = xi if tot <= cap else xi * (cap / tot)
            elif kind == "priority" or kind == "max-weight":
                seq = range(bufs.size)
                if kind == "max-weight":
                    ks = net.buf_class[bufs]
                    w = (xi / net.m[ks] - net.P[ks] @ (zc / net.m)) / net.m[ks]
                    seq = [int(t) for t in np.argsort(-w, kind="stable") if w[t] >= 0]
                left = cap
                for t in seq:
                    if left <= 0:
                        break
                    take = min(xi[t], left)
                    s[bufs[t]] = take
                    left -= take
            else:  # kfcfs: FIFO cohorts, then this step's arrivals
                left = cap
                acc = np.zeros(bufs.size)
                for c in self.fifo[i]:
                    tc = c.sum()
                    if tc <= left:
                        acc += c
                        left -= tc
                    else:
                        acc += c * (left / tc)
                        left = 0.0
                        break
                if left > 0:
                    yi = y[bufs]
                    ty = yi.sum()
                    acc += yi if ty <= left else yi * (left / ty)
                s[bufs] = np.minimum(acc, xi)
        return s

    def step(self, h: float) -> np.ndarray:
        net = self.net
        base = net.alpha_tok * h + self.carry
        S_used = self.S
        for _ in range(_PASSES):
            inflow = np.maximum(base + net.R.T @ S_used, 0.0)
            y = self.split(inflow)
            s = self.allocate(y, h)
            S_new = np.bincount(net.buf_class, weights=s, minlength=len(net.m))
            if float(np.max(np.abs(S_new - S_used))) <= 1e-12 * (1.0 + float(S_new.sum())):
                break
            S_used = S_new
        # S_used produced y; S_new was served: the difference is routed next step
        self.carry = base + net.R.T @ S_new - inflow
        self.S = S_new
        for i, kind in enumerate(net.kinds):
            if kind != "kfcfs":
                continue
            bufs = net.orders[i]
            q = self.fifo[i]
            left = float(s[bufs].sum())
            while q and left > 0:
                tc = q[0].sum()
                if tc <= left * (1 + 1e-12):
                    left -= tc
                    q.pop(0)
                else:
                    q[0] = q[0] * (1 - left / tc)
                    left = 0.0
            yi = y[bufs]
            ty = yi.sum()
            if ty > 0:
                rest = yi * (1 - min(left, ty) / ty)
                if rest.sum() > 0:
                    q.append(rest)
        self.z = np.maximum(self.z + y - s, 0.0)
        return s

    def classes(self) -> np.ndarray:
        return np.bincount(self.net.buf_class, weights=self.z, minlength=len(self.net.m)) + self.carry


def _initial(net: _Net, initial_tokens: Any) -> np.ndarray:
    """Buffer contents from None, a (K,) array / sequence in class order, or a dict class -> tokens
    (a replica-set class's content is split evenly over its engines)."""
    cn = net.cn
    K = len(cn.classes)
    zc = np.zeros(K)
    if initial_tokens is None:
        pass
    elif isinstance(initial_tokens, Mapping):
        for name, v in initial_tokens.items():
            require(name in cn.class_names, f"initial_tokens.{name}", v, f"must name a class: {cn.class_names}")
            zc[cn.index(name)] = finite_number(v, f"initial_tokens.{name}", minimum=0)
    else:
        try:
            arr = None if isinstance(initial_tokens, str) else np.asarray(initial_tokens, dtype=float)
        except (TypeError, ValueError):
            arr = None
        require(arr is not None and arr.shape == (K,) and bool(np.all(np.isfinite(arr))) and bool(np.all(arr >= 0)),
                "initial_tokens", initial_tokens,
                f"must be None, {K} non-negative token counts (class order) or a dict class -> tokens")
        zc = np.array(arr, dtype=float)
    z = np.zeros(net.buf_class.size)
    for k, (bufs, _, _) in enumerate(net.split):
        z[bufs] = zc[k] / bufs.size
    return z


# ------------------------------------------------------------------------------------- trajectories
@dataclass(frozen=True, eq=False)
class NetworkFluidTrajectory:
    """A network fluid trajectory on a time grid.

    Attributes:
        times_s: (G,) grid on [0, horizon] (s).
        backlog: (K, G) fluid token content per class (tokens; classes in network order).
        total: (G,) Σ_k backlog.
        total_work: (G,) W̃ = Σ_k backlog_k w_k / m_k, the tokens still to be served including the
            later calls the present jobs will make (w = (I − P)⁻¹ m).
        utilisation: (E, G) fraction of μ_e used over the grid interval ending at each point (the
            first point: the first step).
        drain_time_s: when the total reaches 0 for good within the horizon (s), or None.
        classes, engines: names. ``service_tokens_per_s``: μ_e per engine.
        policies: the policy per engine, as given (defaults filled in).
        step_s: the largest integration step (s).
    """

    times_s: np.ndarray
    backlog: np.ndarray
    total: np.ndarray
    total_work: np.ndarray
    utilisation: np.ndarray
    drain_time_s: float | None
    classes: tuple[str, ...]
    engines: tuple[str, ...]
    service_tokens_per_s: np.ndarray
    policies: dict[str, Any]
    step_s: float

    def slope_tokens_per_s(self, start_fraction: float = 0.5) -> float:
        """Least-squares slope of the total over the last part of the grid (tokens/s)."""
        i = int(self.times_s.size * start_fraction)
        t, w = self.times_s[i:], self.total[i:]
        return float(np.polyfit(t, w, 1)[0]) if t.size >= 2 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"classes": list(self.classes), "engines": list(self.engines),
                "policies": {e: (p if isinstance(p, str) else [p[0], list(p[1])]) for e, p in self.policies.items()},
                "service_tokens_per_s": self.service_tokens_per_s.tolist(), "times_s": self.times_s.tolist(),
                "backlog_tokens": self.backlog.tolist(), "total_tokens": self.total.tolist(),
                "total_work_tokens": self.total_work.tolist(),
                "utilisation": self.utilisation.tolist(), "drain_time_s": _num(self.drain_time_s),
                "step_s": self.step_s}

    def __repr__(self) -> str:
        d = "never" if self.drain_time_s is None else f"{self.drain_time_s:.6g} s"
        return (f"NetworkFluidTrajectory({len(self.classes)} classes on {len(self.engines)} engines, "
                f"{self.times_s.size} points to {self.times_s[-1]:.6g} s, W0 = {self.total[0]:.6g}, "
                f"W_end = {self.total[-1]:.6g}, drains {d})")


def _run(net: _Net, z0: np.ndarray, H_ms: float, h_max: float, rel_step: float, *, stop_below: float = 0.0,
         measure: np.ndarray | None = None,
         max_steps: int = 200_000) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Adaptive steps h = clip(rel_step · W / max_e μ_e, h_floor, h_max) with h_floor the step at
    W = 10⁻⁴ W_ref (W_ref: the initial total, or one h_max of service if that is smaller): the
    fluid is scale-invariant, so a step proportional to the backlog keeps the relative error
    uniform; a drained network steps at h_max. Stops early once W <= ``stop_below``.
    Returns (times (B,), class contents (B, K), cumulative service per engine (B, E), the residual
    tolerance below which W counts as 0)."""
    st = _State(net, z0)
    E = len(net.engines)
    mu_max = float(net.mu.max())
    W_ref = max(float(z0.sum()), float(net.mu.sum()) * h_max * 1e-3)
    h_floor = min(rel_step * 1e-4 * W_ref / mu_max, h_max)
    # what the scheme leaves in a drained network: bang-bang policies (max-weight) chatter at the
    # scale of one smallest step's service
    tiny = 1e-9 * W_ref + 2.0 * float(net.mu.sum()) * h_floor
    ts, Zs, Cs = [0.0], [st.classes()], [np.zeros(E)]
    t, c = 0.0, np.zeros(E)
    for _ in range(max_steps):
        if t >= H_ms * (1 - 1e-12):
            break
        W = float(Zs[-1].sum())
        h = h_max if W <= tiny else min(max(rel_step * W / mu_max, h_floor), h_max)
        h = min(h, H_ms - t)
        s = st.step(h)
        t += h
        c = c + np.bincount(net.buf_engine, weights=s, minlength=E)
        ts.append(t)
        Zs.append(st.classes())
        Cs.append(c)
        if (float(Zs[-1].sum()) if measure is None else float(Zs[-1] @ measure)) <= stop_below:
            break
    return np.array(ts), np.array(Zs), np.array(Cs), tiny


def _drain(times: np.ndarray, W: np.ndarray, tol: float) -> float | None:
    """The first time after which W stays at (numerical) 0."""
    above = np.flatnonzero(W > tol)
    if above.size == 0:
        return 0.0
    last = above[-1]
    return None if last == W.size - 1 else float(times[last + 1])


def network_fluid_trajectory(cn: ClassNetwork, policies: Mapping[str, Any] | None = None, *,
                             initial_tokens: Any = None, horizon_s: float, points: int = 200,
                             max_step_s: float | None = None, rel_step: float = 0.01,
                             load: float = 1.0) -> NetworkFluidTrajectory:
    """The fluid trajectory of the network at ``load`` × the exogenous rates (see the module).

    Args:
        policies: engine name -> ``"kfcfs"`` | ``"proportional"`` | ``"max-weight"`` |
            ``("priority", [class names, highest first])``; engines not named use ``"kfcfs"``.
        initial_tokens: None (empty), the token content per class (array in class order) or a dict
            class name -> tokens.
        horizon_s: the grid covers [0, horizon_s] with ``points`` points.
        max_step_s, rel_step: integration steps h = clip(rel_step · W / max_e μ_e, h_floor, max_step)
            (default max_step: the grid spacing / 4; h_floor: the step at W = 10⁻⁴ W(0)).

    Raises:
        ModelError: a bad argument (named), an engine outside the paper's model (k_max, resident or
            KV caps, composition-dependent batch time), a class with m_p + m_d = 0.
    """
    cn, policies = _coerce(cn, policies)
    load = finite_number(load, "load", minimum=0)
    net = _setup(cn.scaled(load) if load != 1.0 else cn, policies)
    H = finite_number(horizon_s, "horizon_s", minimum=0, strict=True) * 1000.0
    G = integer(points, "points", minimum=2)
    h_max = H / (G - 1) / 4 if max_step_s is None else finite_number(max_step_s, "max_step_s", minimum=0,
                                                                       strict=True) * 1000.0
    rel = finite_number(rel_step, "rel_step", minimum=0, strict=True)
    z0 = _initial(net, initial_tokens)
    times, Z, C, tiny = _run(net, z0, H, h_max, rel)
    W = Z.sum(axis=1)
    grid = np.linspace(0.0, H, G)
    Zg = np.array([np.interp(grid, times, Z[:, k]) for k in range(Z.shape[1])])
    Cg = np.array([np.interp(grid, times, C[:, e]) for e in range(C.shape[1])])
    dt = np.diff(grid)
    util = np.empty_like(Cg)
    util[:, 1:] = np.diff(Cg, axis=1) / (net.mu[:, None] * dt[None, :])
    util[:, 0] = (C[1] - C[0]) / (net.mu * (times[1] - times[0]))
    pol = {e: (policies or {}).get(e, "kfcfs") for e in net.engines}
    out = [grid / 1000.0, Zg, Zg.sum(axis=0), np.clip(util, 0.0, 1.0), net.mu * 1000.0, net.work @ Zg]
    for a in out:
        a.setflags(write=False)
    dr = _drain(times, W, tiny)
    return NetworkFluidTrajectory(times_s=out[0], backlog=out[1], total=out[2], total_work=out[5],
                                  utilisation=out[3],
                                  drain_time_s=None if dr is None else dr / 1000.0, classes=tuple(cn.class_names),
                                  engines=tuple(net.engines), service_tokens_per_s=out[4], policies=pol,
                                  step_s=h_max / 1000.0)


# ------------------------------------------------------------------------------------------ verdict
@dataclass(frozen=True, eq=False)
class NetworkFluidVerdict:
    """The fluid stability verdict of a network under a policy assignment.

    Attributes:
        verdict: the worst over the initial conditions of ``DRAINS`` (W̃ reaches ``drained`` × its
            start within the horizon), ``CONTRACTS`` (not drained, but its envelope shrinks),
            ``INCONCLUSIVE``, ``DIVERGES`` (envelope grows and W̃ ends above its start); see the
            module docstring.
        growth_rate_tokens_per_s: least-squares slope of the workload W̃ over the second half of
            the worst run (tokens/s), from initial content ``initial_total_tokens``.
        drain_time_s: the longest drain time over the initial conditions (None unless DRAINS).
        worst_initial: the name of the worst initial condition (``"uniform"`` or a class name).
        final_ratio: W̃ at the end of the worst run / W̃ at its start.
        runs: per initial condition: (verdict, drain_time_s, final_ratio, slope_tokens_per_s).
        engine_loads: ρ_e per engine; ``horizon_s``, ``initial_total_tokens``: the runs' settings.
    """

    verdict: str
    growth_rate_tokens_per_s: float
    drain_time_s: float | None
    worst_initial: str
    final_ratio: float
    runs: dict[str, tuple[str, float | None, float, float]]
    engine_loads: dict[str, float]
    horizon_s: float
    initial_total_tokens: float
    policies: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "growth_rate_tokens_per_s": self.growth_rate_tokens_per_s,
                "drain_time_s": _num(self.drain_time_s), "worst_initial": self.worst_initial,
                "final_ratio": self.final_ratio,
                "runs": {k: {"verdict": v[0], "drain_time_s": _num(v[1]), "final_ratio": v[2],
                             "slope_tokens_per_s": v[3]} for k, v in self.runs.items()},
                "engine_loads": self.engine_loads, "horizon_s": self.horizon_s,
                "initial_total_tokens": self.initial_total_tokens,
                "policies": {e: (p if isinstance(p, str) else [p[0], list(p[1])]) for e, p in self.policies.items()}}

    def __repr__(self) -> str:
        return (f"NetworkFluidVerdict({self.verdict}, worst from {self.worst_initial!r}, growth "
                f"{self.growth_rate_tokens_per_s:.6g} tokens/s, drain {self.drain_time_s}, "
                f"ρ = {self.engine_loads})")


def network_fluid_verdict(cn: ClassNetwork, policies: Mapping[str, Any] | None = None, *,
                          initial: str | Sequence[str] = "worst", initial_total_tokens: float = 1.0e6,
                          horizon_s: float | None = None, rel_step: float = 0.05, drained: float = 1e-3,
                          load: float = 1.0) -> NetworkFluidVerdict:
    """Whether the fluid model drains or diverges (see the module docstring for why several
    initial conditions are run).

    Args:
        initial: ``"worst"`` (``"uniform"`` and every class alone), ``"uniform"`` (equal content in
            every class), a class name, or a list of those.
        initial_total_tokens: the initial total backlog (tokens); the fluid is scale-invariant, so
            this only sets the time scale.
        drained: a run "drains" once its workload W̃ falls to δ = ``drained`` × its start. By
            scale invariance, if every initial state of size 1 reaches size δ < 1 by time T, every
            one reaches 0 by T / (1 − δ); ``drain_time_s`` is the (longest) time to reach δ W̃(0).
        rel_step: integration step as a fraction of the backlog's service time at the fastest engine.
        horizon_s: defaults to 60 × the time the network needs to serve the initial backlog at the
            slowest engine's spare rate (at least 5 % of μ_e).

    Raises:
        ModelError: as :func:`network_fluid_trajectory`, or an unknown initial condition.
    """
    cn, policies = _coerce(cn, policies)
    load = finite_number(load, "load", minimum=0)
    net_cn = cn.scaled(load) if load != 1.0 else cn
    net = _setup(net_cn, policies)
    W0 = finite_number(initial_total_tokens, "initial_total_tokens", minimum=0, strict=True)
    rho = engine_loads(net_cn)
    names = cn.class_names
    if initial == "worst":
        inits = ["uniform"] + names
    else:
        inits = [initial] if isinstance(initial, str) else list(initial)
    for i in inits:
        require(i == "uniform" or i in names, "initial", i, f"must be 'worst', 'uniform' or a class name: {names}")
    if horizon_s is None:
        spare = min(max(1.0 - rho[e], 0.05) * net.mu[i] for i, e in enumerate(net.engines))
        H = 60.0 * W0 / spare
    else:
        H = finite_number(horizon_s, "horizon_s", minimum=0, strict=True) * 1000.0
    rel = finite_number(rel_step, "rel_step", minimum=0, strict=True)
    h_max = H / 200.0
    runs: dict[str, tuple[str, float | None, float, float]] = {}
    for name in inits:
        zc = np.full(len(names), W0 / len(names)) if name == "uniform" else np.eye(len(names))[names.index(name)] * W0
        times, Z, _, _ = _run(net, _initial(net, zc), H, h_max, rel, stop_below=drained * float(zc @ net.work),
                              measure=net.work)
        W = Z @ net.work
        dr = _drain(times, W, drained * W[0])
        half = int(np.searchsorted(times, times[-1] / 2))
        slope = float(np.polyfit(times[half:], W[half:], 1)[0]) * 1000.0 if times.size - half >= 2 else 0.0
        ratio = float(W[-1] / W[0])
        q = [int(np.searchsorted(times, times[-1] * f)) for f in (0.25, 0.5, 0.75)]
        early, late = float(W[q[0]:q[1] + 1].max()), float(W[q[2]:].max())
        kappa = late / early if early > 0 else math.inf
        if dr is not None:
            v = "DRAINS"
        elif kappa > 1.0 + 1e-9 and ratio > 1.0:
            v = "DIVERGES"
        elif kappa < 1.0 - 1e-9:
            v = "CONTRACTS"
        else:
            v = "INCONCLUSIVE"
        runs[name] = (v, None if dr is None else dr / 1000.0, ratio, slope)
    rank = {"DIVERGES": 3, "INCONCLUSIVE": 2, "CONTRACTS": 1, "DRAINS": 0}
    worst = max(inits, key=lambda n: (rank[runs[n][0]], runs[n][2], runs[n][1] or 0.0))
    verdict = runs[worst][0]
    drain = max(r[1] for r in runs.values()) if verdict == "DRAINS" else None
    pol = {e: (policies or {}).get(e, "kfcfs") for e in net.engines}
    return NetworkFluidVerdict(verdict=verdict, growth_rate_tokens_per_s=runs[worst][3], drain_time_s=drain,
                               worst_initial=worst, final_ratio=runs[worst][2], runs=runs, engine_loads=rho,
                               horizon_s=H / 1000.0, initial_total_tokens=W0, policies=pol)


# ------------------------------------------------------------------------------------------ example
def rybko_stolyar_network(load: float = 0.9) -> ClassNetwork:
    """The Rybko–Stolyar agent network of Li, Dai, Peng v3 §5.4 (parameters as in the reproduction
    recorded in the project notes): two engines with b_max = 768 and t ≡ 1 ms (μ_e = 768 tokens/ms);
    type A calls engine 1 with (m_p, m_d) = (32, 32) then engine 2 with (512, 32); type B the mirror
    image. Each type arrives at load · 768/608 requests/ms, so each engine is at ρ_e = load.
    Classes, in order: ``A.1`` (e1), ``A.2`` (e2), ``B.1`` (e2), ``B.2`` (e1).
    """
    load = finite_number(load, "load", minimum=0)
    E = {"e1": Engine("e1", 768, Constant(1.0)), "e2": Engine("e2", 768, Constant(1.0))}
    cl = (JobClass("A.1", "e1", 32, 32, "A"), JobClass("A.2", "e2", 512, 32, "A"),
          JobClass("B.1", "e2", 32, 32, "B"), JobClass("B.2", "e1", 512, 32, "B"))
    P = np.zeros((4, 4))
    P[0, 1] = P[2, 3] = 1.0
    rate = load * 768.0 / 608.0 * 1000.0
    return ClassNetwork(E, cl, np.array([rate, 0.0, rate, 0.0]), P)
