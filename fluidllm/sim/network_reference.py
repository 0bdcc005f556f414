"""The reference (oracle) simulator of a network of LLM agents: plain Python, one event at a time.

Written from the text of :mod:`fluidllm.model.network` (workflow semantics) and of
:mod:`fluidllm.sim.reference` (one engine's batch loop, rules K1–K6), so that a reader can check it
line by line. It is slow on purpose and is the oracle a vectorized network core must match batch for
batch on the same draws. Li, Dai, Peng (arXiv 2504.07347 v3, §5): engines are the nodes, workflows
the job classes.

Engines. Each engine runs exactly the loop of :func:`fluidllm.sim.reference.simulate_reference`
(same steps (1)–(5), same :func:`~fluidllm.sim.reference.plan_batch` for every built-in policy and
python plug-ins, same :func:`~fluidllm.sim.reference.check_plan`, same KV rules K1–K6): batches back
to back, batch time ``batch_time.batch_ms(P, D, K)``; a request sent to an engine during a batch is
eligible at its next boundary (one sent exactly at a boundary is eligible at it); an idle engine
starts a batch at the instant work is sent to it. Each engine stops at its first boundary at or after
the horizon (an engine idle at the horizon stops there). FCFS order on every engine is the global
request id (creation order).

Instants. All events at one instant t are handled in this order: (a) every batch ending at t is
applied (tokens served, completions), on all engines, so the state at t is complete; (b) the
completions' consequences, engine by engine (model order), by request id within an engine: new
requests are created at t and routed on that live state, one after another (each sees the ones
routed before it); (c) exogenous instance arrivals at t, ordered as :func:`~fluidllm.sim.draws.draw_requests`
orders requests (workflow order, then draw order); (d) batch boundaries at t, engine by engine.

Workflow instances (the module text of :mod:`fluidllm.model.network`). An instance's start calls are
the children of its arrival. When a call completes: if it has ``loop = {to, p}``, with probability p
the call ``to`` starts again at once (without waiting for its ``after``, and without touching any
join's state); otherwise the instance *goes on*: every unconditional child starts, plus exactly one
child of the call's branch (if it has one) chosen with its ``p``. A join (several ids in ``after``)
records which of its inputs went on; when all have, it starts once and its record is cleared.
An instance completes at the instant its last request completes with no request of it pending or
running; a partially-satisfied join at that instant is a bug of the model validation and raises.
Plain ``[workloads.NAME]`` are one-call workflows (class ``"NAME"``).

Routing of a replica set, evaluated on the LIVE state at the instant the request is created (its
ties go to the lowest position in the call's engine list): ``jsq-tokens``: least Σ (prefill left +
decode left) over the requests sent to that engine and not completed — resident, waiting, and sent
but not yet eligible (a request set aside as unschedulable is not counted); ``jsq-requests``: fewest
such requests; ``round-robin``: a counter per call (of a workflow) over all its instances, starting
at position 0; ``random``: uniform; ``weighted``: proportional to ``weights``. Random and weighted use
the workflow's decision stream (below).

KV inheritance (``inherits_kv = true``): the request's KV context is the tokens of the request whose
completion started it (its own context, plus its v_p + v_d); a start call has context 0. The context
is the request's initial ``kv`` (rule K1), as for the ``initial`` requests of the single-engine
reference: it counts in the batch time's K and, with a KV cap, in U, in K2 (p + d + context > M is
unschedulable) and in a preemption (recomputed as prefill). A request with v_p = 0 decodes directly.
A request with v_p = v_d = 0 (possible only with inherits_kv) completes at its creation instant.

Class priority (``policy = { kind = "priority", inner, order }``; the single-engine reference does
not run it): the classes named in ``order`` in turn, then every class not listed as one last group;
for each group the inner rule is run by :func:`~fluidllm.sim.reference.plan_batch` over that group's
resident requests only (FCFS), with the budget and request slots the earlier groups left. The
leftover budget is passed as ``kv_free_tokens`` = min(KV free space, budget left) with
``token_budget`` unchanged, so a whole-prompt inner rule still takes prompts whole (pieces of at most
``token_budget``) and stops at the first that does not fit what is left; the leftover slots as
``max_batch_requests``. The merged plan is checked against the full view. A name in ``order`` that
is no class of the model is ignored. With ``inner = "fastertransformer-static"`` the static group is
the engine's (shared by all classes).

Max-pressure (``policy = { kind = "max-pressure", inner }``; Dai, Lin 2005, the simulated
counterpart of the fluid ``"max-weight"`` of :mod:`fluidllm.fluid.network`): at each of its batch
boundaries the engine computes, on the live state, every class's pressure
w_k = (N_k − Σ_l P[k, l] N_l) / m_k, with N the requests of each class in the network (sent, waiting or
resident on any engine; set-aside requests not counted), P the class routing of
``class_network()`` and m_k = E v_p + E v_d of the class. It serves its classes of w_k ≥ 0 as class
priority does (highest pressure first, ties in class order, the inner rule group by group) and does
not serve a class of negative pressure. If none of its resident requests may be served it idles —
not work-conserving — and plans again at every later instant at which anything happens in the
network (a batch ends anywhere or an instance arrives: the only instants at which N changes).

Draws (common random numbers, as :func:`~fluidllm.sim.draws.draw_requests`): the seed is split with
``Generator.spawn`` into one stream per workflow (model order) and then one per plain workload; each
into an arrival stream and a length stream (``spawn(2)``), and a third child, the *decision* stream
(branches, loops, random and weighted routing). Arrival instants in [0, horizon) come from the same
helper as :func:`draw_requests`. Call j of a workflow draws its (v_p, v_d) from its own stream — the
length stream itself for j = 0, the length stream's j-th child (``spawn(n_calls - 1)``) otherwise —
in chunks of n (the workflow's number of instances; at least 1), the i-th request created for that
call taking the i-th draw. A one-call workflow therefore draws exactly what ``draw_requests`` draws
for the equivalent workload, and a one-engine network of such workflows runs, batch for batch, as
:func:`~fluidllm.sim.reference.simulate_reference` on those requests.
"""
from __future__ import annotations

import math
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ModelError, finite_number, integer, require
from ..model.engine import Engine
from ..model.model import Model
from ..model.network import Call, NetworkModel
from ..model.policy import PolicySpec
from .draws import _arrival_times
from .reference import (REFERENCE_POLICIES, Batch, Plan, PlanViolation, RequestView, View, check_plan,
                        plan_batch)

__all__ = ["NetworkReferenceRun", "simulate_network_reference"]

_START = "^"
_WHOLE_PROMPTS = ("fastertransformer", "fastertransformer-static", "vllm")


# ---------------------------------------------------------------------------------- class priority


def pressure_order(weights: np.ndarray, classes: set[int]) -> dict[int, int]:
    """Max-pressure ranks: ``classes`` with weight >= 0, highest weight first (ties: class index);
    classes of negative weight are left out."""
    keep = sorted((k for k in classes if weights[k] >= 0), key=lambda k: (-weights[k], k))
    return {k: j for j, k in enumerate(keep)}


def plan_priority(policy: PolicySpec, view: View, class_rank: dict[int, int]) -> Plan:
    """The class-priority plan (module text): the inner rule group by group on what is left.

    ``class_rank``: class index -> its group (position in ``order``); classes absent from it form
    the last group.
    """
    inner = PolicySpec(policy.flag("inner"))
    n_groups = len(set(class_rank.values()))
    groups: list[list] = [[] for _ in range(n_groups + 1)]
    for r in view.requests:
        groups[class_rank.get(r.klass, n_groups)].append(r)
    budget = view.token_budget if view.kv_free_tokens is None else min(view.token_budget, view.kv_free_tokens)
    slots = view.max_batch_requests
    plan: Plan = {}
    for g in groups:
        if not g:
            continue
        if budget <= 0 or (slots is not None and slots <= 0):
            break
        sub = View(view.token_budget, tuple(g), slots, view.max_resident_requests, view.kv_capacity_tokens,
                   frozenset(i for i in view.static_group), budget)
        part = plan_batch(inner, sub)
        for rid, (p, d) in part.items():
            plan[rid] = (p, d)
            budget -= p + d
        if slots is not None:
            slots -= len(part)
    return plan


# ------------------------------------------------------------------------------------ the result


@dataclass(frozen=True, eq=False)
class NetworkReferenceRun:
    """One replication of the network reference simulator.

    Requests are numbered by creation (their FCFS order on every engine); per-request arrays use
    that numbering. Instances are numbered by arrival.

    Attributes:
        horizon_ms: the horizon asked for.
        end_ms: the latest engine end (each engine stops at its first boundary >= horizon).
        engine_names, class_names, workflow_names: model order (plain workloads are workflows here).
        engine_end_ms: each engine's last boundary.
        batches: per engine, its batch log (:class:`~fluidllm.sim.reference.Batch`; ids are
            global request ids).
        klass, engine, instance: per request, class index, engine index, instance index.
        created_ms: the instant the request was created (instance arrival or a predecessor's
            completion) and routed.
        prefill, decode: the drawn v_p, v_d. kv_context: inherited KV tokens (inherits_kv).
        first_token_ms, completion_ms: as in :class:`~fluidllm.sim.reference.ReferenceRun`; NaN if
            none yet.
        instance_workflow, instance_arrival_ms, instance_completion_ms: per instance.
        visits: (instances × classes) requests created per instance and class.
        went_on: (instances × classes) completions that went on to the children (not looped back).
        join_fires: (instances × classes) times each join started (0 for other calls).
        pending_joins: (instance, join class) pairs waiting for inputs at the end.
        branch_counts: {(parent class or "W.^", chosen class): times chosen}.
        branch_draws: {parent class or "W.^": times its branch was drawn}.
        loop_backs: per class, completions that looped back.
        forks: completions (or arrivals) that started more than one call.
        left: per engine, (id, prefill left, decode left) of requests not completed at its end
            (sent but not yet eligible, waiting, resident), FCFS.
        unschedulable: per engine, ids set aside (whole prompt > budget, or K2).
        preemptions, recomputed_tokens: per engine (rules K3, K5).
    """

    horizon_ms: float
    end_ms: float
    engine_names: tuple[str, ...]
    class_names: tuple[str, ...]
    workflow_names: tuple[str, ...]
    engine_end_ms: dict[str, float]
    batches: dict[str, tuple[Batch, ...]]
    klass: np.ndarray
    engine: np.ndarray
    instance: np.ndarray
    created_ms: np.ndarray
    prefill: np.ndarray
    decode: np.ndarray
    kv_context: np.ndarray
    first_token_ms: np.ndarray
    completion_ms: np.ndarray
    instance_workflow: np.ndarray
    instance_arrival_ms: np.ndarray
    instance_completion_ms: np.ndarray
    visits: np.ndarray
    went_on: np.ndarray
    join_fires: np.ndarray
    pending_joins: tuple[tuple[int, int], ...]
    branch_counts: dict[tuple[str, str], int]
    branch_draws: dict[str, int]
    loop_backs: np.ndarray
    forks: int
    left: dict[str, tuple[tuple[int, int, int], ...]]
    unschedulable: dict[str, tuple[int, ...]]
    preemptions: dict[str, int]
    recomputed_tokens: dict[str, int]

    def __repr__(self) -> str:
        return (f"NetworkReferenceRun(end_ms={self.end_ms:.6g}, engines={list(self.engine_names)}, "
                f"batches={sum(len(b) for b in self.batches.values())}, requests={self.n_requests}, "
                f"completed={self.n_completed}, instances={self.n_instances}, "
                f"instances_completed={self.n_instances_completed})")

    @property
    def n_requests(self) -> int:
        return int(self.created_ms.size)

    @property
    def n_completed(self) -> int:
        return int(np.count_nonzero(~np.isnan(self.completion_ms)))

    @property
    def n_instances(self) -> int:
        """Instances arrived (all arrive before the horizon)."""
        return int(self.instance_arrival_ms.size)

    @property
    def n_instances_completed(self) -> int:
        return int(np.count_nonzero(~np.isnan(self.instance_completion_ms)))

    @property
    def n_instances_in_progress(self) -> int:
        return self.n_instances - self.n_instances_completed

    @property
    def e2e_ms(self) -> np.ndarray:
        """End-to-end latency of each completed instance (ms), in instance order."""
        done = ~np.isnan(self.instance_completion_ms)
        return self.instance_completion_ms[done] - self.instance_arrival_ms[done]

    def tokens_sent(self, engine: str) -> int:
        """Σ (v_p + v_d) over the requests routed to ``engine``."""
        m = self.engine == self.engine_names.index(engine)
        return int(self.prefill[m].sum() + self.decode[m].sum())

    def tokens_served(self, engine: str) -> int:
        return sum(b.n_tokens for b in self.batches[engine])

    def tokens_left(self, engine: str) -> int:
        """Tokens still owed on ``engine`` at its end: served + left = sent + recomputed."""
        left = sum(p + d for _, p, d in self.left[engine])
        return left + sum(int(self.prefill[i] + self.decode[i]) for i in self.unschedulable[engine])

    def requests_in_system(self, times_ms: Any) -> np.ndarray:
        """Requests created by t and not completed by t, at each t of ``times_ms``."""
        t = np.asarray(times_ms, dtype=float)
        c = np.sort(self.created_ms)
        d = np.sort(np.where(np.isnan(self.completion_ms), np.inf, self.completion_ms))
        return np.searchsorted(c, t, side="right") - np.searchsorted(d, t, side="right")

    def instances_in_system(self, times_ms: Any) -> np.ndarray:
        """Instances arrived by t and not completed by t, at each t of ``times_ms``."""
        t = np.asarray(times_ms, dtype=float)
        a = np.sort(self.instance_arrival_ms)
        d = np.sort(np.where(np.isnan(self.instance_completion_ms), np.inf, self.instance_completion_ms))
        return np.searchsorted(a, t, side="right") - np.searchsorted(d, t, side="right")

    def completions_per_class(self, t0_ms: float = 0.0, t1_ms: float | None = None) -> np.ndarray:
        """Requests of each class completed in (t0, t1] (default t1 = ``horizon_ms``)."""
        t1 = self.horizon_ms if t1_ms is None else float(t1_ms)
        m = (self.completion_ms > t0_ms) & (self.completion_ms <= t1)
        return np.bincount(self.klass[m], minlength=len(self.class_names))


# ------------------------------------------------------------------------------------ the state


@dataclass
class _Request:
    id: int
    klass: int
    instance: int
    call: Call
    engine: int
    created_ms: float
    prefill_total: int
    decode_total: int
    kv_context: int
    prefill_left: int
    decode_left: int
    kv: int
    running: bool
    first_token_ms: float = math.nan
    completion_ms: float = math.nan

    @property
    def decoding(self) -> bool:
        return self.prefill_left == 0 and self.decode_left > 0

    def view(self) -> RequestView:
        return RequestView(self.id, self.prefill_left, self.decode_left, self.klass, self.id, self.running, self.kv)


class _EngineState:
    """One engine: the loop of ``simulate_reference`` cut at its batch boundaries."""

    def __init__(self, index: int, engine: Engine, reqs: list[_Request], class_index: dict[str, int],
                 horizon_ms: float) -> None:
        self.index = index
        self.engine = engine
        self.reqs = reqs
        self.horizon_ms = horizon_ms
        self.policy = engine.policy
        name = self.policy.name
        ranked = name in ("priority", "max-pressure")
        if not ranked and name not in REFERENCE_POLICIES:
            raise NotImplementedError(f"engines.{engine.name}.policy = {name!r}: the network reference runs only "
                                      f"{[*REFERENCE_POLICIES, 'priority', 'max-pressure']} for now")
        inner = self.policy.flag("inner") if ranked else name
        if inner not in REFERENCE_POLICIES:
            raise NotImplementedError(f"engines.{engine.name}.policy.inner = {inner!r}: not in the reference")
        if name == "vllm-v1" and self.policy.flag("preemption") != "recompute":
            raise NotImplementedError(f"engines.{engine.name}.policy.preemption: only 'recompute' is implemented")
        self.inner = inner
        self.rank = ({class_index[c]: i for i, c in enumerate(dict.fromkeys(self.policy.flag("order")))
                      if c in class_index} if name == "priority" else {})
        if name == "priority":  # ranks dense 0..n-1 in order of the listed classes present in the model
            self.rank = {k: j for j, k in enumerate(sorted(self.rank, key=self.rank.get))}
        self.b_max = engine.token_budget
        self.k_max = engine.max_batch_requests
        self.resident_cap = engine.max_resident_requests
        self.kv_cap = engine.kv_capacity_tokens
        self.whole_prompts_only = inner in _WHOLE_PROMPTS and not (
            PolicySpec(inner).flag("split_long_prompts") if ranked
            else self.policy.flag("split_long_prompts"))
        self.sent: list[int] = []          # routed here, not yet eligible (FCFS)
        self.waiting: deque[int] = deque()
        self.resident: list[int] = []
        self.unschedulable: list[int] = []
        self.static_group: set[int] = set()
        self.batches: list[Batch] = []
        self.plan: Plan | None = None      # the batch running, or None
        self.busy_until: float | None = None
        self.stopped = False
        self.end_ms = horizon_ms
        self.preemptions = 0
        self.recomputed = 0
        self.max_pressure = name == "max-pressure"
        self.pressure: Any = None          # max-pressure: () -> (K,) class weights, set by the simulator

    # -- live state for routing
    def owed(self) -> list[int]:
        return self.sent + list(self.waiting) + self.resident

    def tokens_owed(self) -> int:
        return sum(self.reqs[i].prefill_left + self.reqs[i].decode_left for i in self.owed())

    # -- the loop
    def _arrive(self, i: int) -> None:
        r = self.reqs[i]
        if self.whole_prompts_only and r.prefill_left > self.b_max:
            self.unschedulable.append(i)
        elif self.kv_cap is not None and r.prefill_left + r.decode_left + r.kv > self.kv_cap:
            self.unschedulable.append(i)                # K2
        else:
            self.waiting.append(i)

    def _kv_used(self) -> int:
        return sum(self.reqs[i].kv for i in self.resident)

    def _preempt_last(self, preempted: list[int]) -> bool:
        holders = [i for i in self.resident if self.reqs[i].kv > 0]
        if not holders:
            return False
        r = self.reqs[max(holders)]
        r.prefill_left += r.kv
        self.recomputed += r.kv
        self.preemptions += 1
        r.kv = 0
        r.running = False
        preempted.append(r.id)
        return True

    def _plan(self, view: View) -> Plan:
        if self.policy.name == "priority":
            return plan_priority(self.policy, view, self.rank)
        if self.max_pressure:
            rank = pressure_order(self.pressure(), {r.klass for r in view.requests})
            sub = View(view.token_budget, tuple(r for r in view.requests if r.klass in rank),
                       view.max_batch_requests, view.max_resident_requests, view.kv_capacity_tokens,
                       view.static_group, view.kv_free_tokens)
            return plan_priority(self.policy, sub, rank)
        return plan_batch(self.policy, view)

    def _pressure_idle(self) -> bool:
        """Max-pressure: no resident request is of a class of non-negative pressure (idling is the rule)."""
        if not self.max_pressure:
            return False
        w = self.pressure()
        return all(w[self.reqs[i].klass] < 0 for i in self.resident)

    def boundary(self, t: float) -> None:
        """A batch boundary at ``t``: steps (1)–(4) of ``simulate_reference``; idle if nothing to plan."""
        for i in self.sent:                             # (1) eligible now
            self._arrive(i)
        self.sent = []
        while self.waiting and (self.resident_cap is None or len(self.resident) < self.resident_cap):
            self.resident.append(self.waiting.popleft())  # (2) admission
        if t >= self.horizon_ms:
            self.stopped, self.end_ms = True, t
            return
        preempted: list[int] = []
        kv_cap, reqs = self.kv_cap, self.reqs
        if kv_cap is not None:                          # (2b) K3
            while True:
                n_dec = sum(1 for i in self.resident if reqs[i].decoding)
                needed = min(n_dec, self.b_max, self.k_max if self.k_max is not None else n_dec)
                if kv_cap - self._kv_used() >= needed or not self._preempt_last(preempted):
                    break
        while True:                                     # (3) plan, K5
            kv_free = None if kv_cap is None else kv_cap - self._kv_used()
            view = View(self.b_max, tuple(reqs[i].view() for i in self.resident), self.k_max, self.resident_cap,
                        kv_cap, frozenset(self.static_group), kv_free)
            plan = self._plan(view)
            if plan or not self.resident or kv_cap is None or self._pressure_idle() \
                    or not self._preempt_last(preempted):
                break
        where = f"engine {self.engine.name}, batch {len(self.batches)} at {t:g} ms, policy {self.policy.name}"
        if self.policy.name != "python":
            check_plan(view, plan, where)
        if not plan:
            if self.resident and not self._pressure_idle():
                raise PlanViolation(f"empty batch while {len(self.resident)} requests are resident ({where})")
            self.plan, self.busy_until = None, None     # idle until work is sent here
            return
        if self.inner == "fastertransformer-static" and not view.static_group:
            self.static_group = set(plan)
        P = sum(p for p, _ in plan.values())
        D = sum(d for _, d in plan.values())
        K = sum(reqs[i].kv for i, (_, d) in plan.items() if d > 0)
        dt = float(np.asarray(self.engine.batch_time.batch_ms(P, D, K)))
        if not (math.isfinite(dt) and dt > 0):
            raise ModelError(f"engines.{self.engine.name}.batch_time", dt,
                             f"must give a finite positive time; got it for P={P}, D={D}, K={K}")
        self.batches.append(Batch(
            index=len(self.batches), start_ms=t, end_ms=t + dt,
            tokens=tuple((i, int(p), int(d)) for i, (p, d) in sorted(plan.items())),
            resident_before=tuple((r.id, r.prefill_left, r.decode_left) for r in view.requests),
            prefill_tokens=P, decode_tokens=D, kv_context_tokens=K,
            kv_used_before=0 if kv_free is None else kv_cap - kv_free, preempted=tuple(preempted)))
        self.plan, self.busy_until = plan, t + dt

    def finish(self) -> list[int]:
        """(5) The running batch ends at ``busy_until``: serve its tokens; the completed ids, ascending."""
        end = self.busy_until
        done = []
        for i, (p, d) in self.plan.items():
            r = self.reqs[i]
            r.prefill_left -= p
            r.decode_left -= d
            r.kv += p + d
            r.running = True
            if d > 0 and math.isnan(r.first_token_ms):
                r.first_token_ms = end
            if r.prefill_left == 0 and r.decode_left == 0:
                if math.isnan(r.first_token_ms):
                    r.first_token_ms = end
                r.completion_ms = end
                r.kv = 0
                self.resident.remove(i)
                self.static_group.discard(i)
                done.append(i)
        self.plan, self.busy_until = None, None
        return sorted(done)


@dataclass
class _Flow:
    """A workflow (or a plain workload as a one-call workflow) with its streams."""

    name: str
    calls: tuple[Call, ...]
    class_of: dict[str, int]
    class_prefix: str
    decide: np.random.Generator
    call_rng: dict[str, np.random.Generator]
    chunk: int
    buf: dict[str, list] = field(default_factory=dict)
    rr: dict[str, int] = field(default_factory=dict)

    def call(self, cid: str) -> Call:
        return next(c for c in self.calls if c.id == cid)

    def children(self, parent: str) -> list[Call]:
        if parent == _START:
            return [c for c in self.calls if not c.after]
        return [c for c in self.calls if parent in c.after]

    def draw(self, c: Call) -> tuple[int, int]:
        buf = self.buf.setdefault(c.id, [np.empty(0, np.int64), np.empty(0, np.int64), 0])
        if buf[2] >= buf[0].size:
            p, d = c.lengths.sample(self.call_rng[c.id], self.chunk)
            buf[0], buf[1], buf[2] = np.asarray(p, np.int64), np.asarray(d, np.int64), 0
        i = buf[2]
        buf[2] += 1
        return int(buf[0][i]), int(buf[1][i])


@dataclass
class _Instance:
    flow: int
    arrival_ms: float
    active: int = 0
    joins: dict[str, set] = field(default_factory=dict)
    completion_ms: float = math.nan


# ------------------------------------------------------------------------------------ the simulator


def simulate_network_reference(model: NetworkModel | Model, horizon_ms: float,
                               seed: int | np.random.Generator) -> NetworkReferenceRun:
    """Simulate ``model`` (a single-engine :class:`~fluidllm.model.model.Model` counts as a network of
    one-call workflows) over [0, ``horizon_ms``): instances arrive in [0, horizon); each engine
    stops at its first batch boundary >= horizon (semantics in the module text).

    Raises:
        ModelError: a bad model, horizon or seed; a length law drawing v_p < 1 (without inherits_kv)
            or v_d < 0; a batch time that is not a finite positive number of ms.
        NotImplementedError: a policy the reference does not run (``wait``, ``nested-wait``).
        PlanViolation: a policy broke the model's rules (a bug).
    """
    if isinstance(model, Model):           # a single-engine model: its workloads are one-call workflows
        model = NetworkModel(model.engines, workloads=model.workloads)
    require(isinstance(model, NetworkModel), "model", model, "must be a NetworkModel (or a Model)")
    horizon_ms = finite_number(horizon_ms, "horizon_ms", minimum=0)
    gen = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(integer(seed, "seed", minimum=0))

    class_names = model.class_names
    class_index = {c: i for i, c in enumerate(class_names)}
    engine_names = list(model.engines)
    eidx = {e: i for i, e in enumerate(engine_names)}
    reqs: list[_Request] = []
    engines = [_EngineState(i, model.engines[e], reqs, class_index, horizon_ms) for i, e in enumerate(engine_names)]
    if any(e.max_pressure for e in engines):
        cn = model.class_network()
        if [c.name for c in cn.classes] != list(class_names):
            raise RuntimeError("class_network() and class_names disagree on the class order")
        m_cls = np.array([c.mean_prefill + c.mean_decode for c in cn.classes], dtype=float)
        P_cls = np.asarray(cn.routing, dtype=float)

        def weights() -> np.ndarray:
            n = np.zeros(len(class_names))
            for e in engines:
                for i in e.owed():
                    n[reqs[i].klass] += 1
            # a class with m_k = 0 completes when created: never resident, its weight unused
            return np.divide(n - P_cls @ n, m_cls, out=np.zeros_like(n), where=m_cls > 0)

        for e in engines:
            e.pressure = weights

    # Flows and their streams; exogenous arrivals.
    specs: list[tuple[str, Any, tuple[Call, ...], str]] = [
        (w.name, w.arrival, w.calls, f"{w.name}.") for w in model.workflows.values()]
    specs += [(n, wl.arrival, (Call(n, (wl.engine,), wl.lengths),), "") for n, wl in model.workloads.items()]
    streams = gen.spawn(len(specs))
    flows: list[_Flow] = []
    times, owners, order = [], [], []
    for k, ((name, arrival, calls, prefix), stream) in enumerate(zip(specs, streams)):
        arr_rng, len_rng = stream.spawn(2)
        decide = stream.spawn(1)[0]
        t = _arrival_times(_HasArrival(arrival), horizon_ms, arr_rng)
        extra = len_rng.spawn(len(calls) - 1) if len(calls) > 1 else []
        call_rng = {c.id: (len_rng if j == 0 else extra[j - 1]) for j, c in enumerate(calls)}
        cls = {c.id: class_index[f"{prefix}{c.id}" if prefix else name] for c in calls}
        flows.append(_Flow(name, tuple(calls), cls, prefix, decide, call_rng, max(1, int(t.size))))
        times.append(t)
        owners.append(np.full(t.size, k, dtype=np.int64))
        order.append(np.arange(t.size))
    t_all = np.concatenate(times) if times else np.empty(0)
    o_all = np.concatenate(owners) if owners else np.empty(0, np.int64)
    idx = np.lexsort((np.concatenate(order), o_all, t_all))
    arrivals = [(float(t_all[i]), int(o_all[i])) for i in idx]

    instances: list[_Instance] = []
    visits: list[Counter] = []
    went_on: list[Counter] = []
    join_fires: list[Counter] = []
    branch_counts: Counter = Counter()
    branch_draws: Counter = Counter()
    loop_backs = np.zeros(len(class_names), dtype=np.int64)
    forks = 0

    def route(flow: _Flow, c: Call) -> int:
        if len(c.engines) == 1:
            return eidx[c.engines[0]]
        cand = [engines[eidx[e]] for e in c.engines]
        rule = c.routing
        if rule == "jsq-tokens":
            load = [e.tokens_owed() for e in cand]
            return cand[int(np.argmin(load))].index          # argmin: first (lowest position) on ties
        if rule == "jsq-requests":
            load = [len(e.owed()) for e in cand]
            return cand[int(np.argmin(load))].index
        if rule == "round-robin":
            j = flow.rr.get(c.id, 0)
            flow.rr[c.id] = j + 1
            return cand[j % len(cand)].index
        if rule == "random":
            return cand[int(flow.decide.integers(len(cand)))].index
        if rule == "weighted":
            w = np.asarray(c.weights, dtype=float)
            return cand[int(flow.decide.choice(len(cand), p=w / w.sum()))].index
        raise ModelError(f"workflows.{flow.name}.calls.{c.id}.routing", rule, "unknown routing rule")

    def launch(ii: int, c: Call, t: float, parent: int | None) -> None:
        inst = instances[ii]
        flow = flows[inst.flow]
        k = flow.class_of[c.id]
        p, d = flow.draw(c)
        if (p < 1 and not c.inherits_kv) or p < 0:
            raise ModelError(f"{class_names[k]}.prefill", p, "drew v_p < 1; v_p >= 1 unless inherits_kv = true")
        if d < 0:
            raise ModelError(f"{class_names[k]}.decode", d, "drew v_d < 0")
        ctx = 0
        if c.inherits_kv and parent is not None:
            pr = reqs[parent]
            ctx = pr.kv_context + pr.prefill_total + pr.decode_total
        e = route(flow, c)
        rid = len(reqs)
        reqs.append(_Request(rid, k, ii, c, e, t, p, d, ctx, p, d, kv=ctx, running=(p == 0 or ctx > 0)))
        inst.active += 1
        visits[ii][k] += 1
        if p + d == 0:                                   # nothing to compute: done at once
            reqs[rid].first_token_ms = reqs[rid].completion_ms = t
            complete(rid, t)
        else:
            engines[e].sent.append(rid)

    def go_on(ii: int, parent: str, t: float, parent_rid: int | None) -> None:
        nonlocal forks
        flow = flows[instances[ii].flow]
        kids = flow.children(parent)
        start = [k for k in kids if k.p is None]
        branch = [k for k in kids if k.p is not None]
        if branch:
            u = flow.decide.random()
            cum, chosen = 0.0, branch[-1]
            for k in branch:
                cum += k.p
                if u < cum:
                    chosen = k
                    break
            pname = f"{flow.name}.^" if parent == _START else class_names[flow.class_of[parent]]
            branch_draws[pname] += 1
            branch_counts[(pname, class_names[flow.class_of[chosen.id]])] += 1
            start = [k for k in kids if k.p is None or k is chosen]   # file order
        if len(start) > 1:
            forks += 1
        for k in start:
            if k.is_join:
                got = instances[ii].joins.setdefault(k.id, set())
                if parent in got:
                    raise RuntimeError(f"instance {ii}: join {k.id!r} got input {parent!r} twice")
                got.add(parent)
                if len(got) < len(k.after):
                    continue
                del instances[ii].joins[k.id]
                join_fires[ii][flow.class_of[k.id]] += 1
            launch(ii, k, t, parent_rid)

    def complete(rid: int, t: float) -> None:
        r = reqs[rid]
        ii = r.instance
        inst = instances[ii]
        flow = flows[inst.flow]
        c = r.call
        if c.loop_to is not None and flow.decide.random() < c.loop_p:
            loop_backs[r.klass] += 1
            launch(ii, flow.call(c.loop_to), t, rid)
        else:
            went_on[ii][r.klass] += 1
            go_on(ii, c.id, t, rid)
        inst.active -= 1
        if inst.active == 0 and math.isnan(inst.completion_ms):
            if inst.joins:
                raise RuntimeError(f"instance {ii} ended with joins waiting for inputs: {inst.joins}")
            inst.completion_ms = t

    def new_instance(k: int, t: float) -> None:
        instances.append(_Instance(k, t))
        visits.append(Counter())
        went_on.append(Counter())
        join_fires.append(Counter())
        ii = len(instances) - 1
        instances[ii].active += 1           # hold the instance open while its start calls launch
        go_on(ii, _START, t, None)
        instances[ii].active -= 1
        if instances[ii].active == 0:
            instances[ii].completion_ms = t

    # The event loop.
    a = 0
    while True:
        cand = [e.busy_until for e in engines if e.busy_until is not None]
        if a < len(arrivals):
            cand.append(arrivals[a][0])
        if not cand:
            break
        t = min(cand)
        ended = [e for e in engines if e.busy_until == t]
        done = [(e, e.finish()) for e in ended]            # (a) apply every batch ending at t
        for e, ids in done:                                 # (b) their consequences
            for rid in ids:
                complete(rid, t)
        while a < len(arrivals) and arrivals[a][0] == t:    # (c) exogenous arrivals
            new_instance(arrivals[a][1], t)
            a += 1
        for e in engines:                                   # (d) boundaries
            if e.stopped or e.busy_until is not None:
                continue
            if e in ended:
                e.boundary(t)
            elif e.sent or (e.max_pressure and (e.resident or e.waiting)):  # idle: starts at once, or stops at the horizon
                if t >= horizon_ms:
                    e.stopped, e.end_ms = True, horizon_ms
                else:
                    e.boundary(t)
    for e in engines:                                       # engines idle at the end stop at the horizon
        if not e.stopped:
            e.stopped, e.end_ms = True, horizon_ms

    def ro(x: Any, dtype: Any) -> np.ndarray:
        out = np.array(x, dtype=dtype)
        out.setflags(write=False)
        return out

    K = len(class_names)

    def mat(cs: list[Counter]) -> np.ndarray:
        m = np.zeros((len(cs), K), dtype=np.int64)
        for i, c in enumerate(cs):
            for k, v in c.items():
                m[i, k] = v
        m.setflags(write=False)
        return m

    pending = tuple((ii, flows[inst.flow].class_of[j]) for ii, inst in enumerate(instances) for j in inst.joins)
    loop_backs.setflags(write=False)
    return NetworkReferenceRun(
        horizon_ms=horizon_ms, end_ms=max(e.end_ms for e in engines), engine_names=tuple(engine_names),
        class_names=tuple(class_names), workflow_names=tuple(f.name for f in flows),
        engine_end_ms={e.engine.name: e.end_ms for e in engines},
        batches={e.engine.name: tuple(e.batches) for e in engines},
        klass=ro([r.klass for r in reqs], np.int64), engine=ro([r.engine for r in reqs], np.int64),
        instance=ro([r.instance for r in reqs], np.int64), created_ms=ro([r.created_ms for r in reqs], float),
        prefill=ro([r.prefill_total for r in reqs], np.int64), decode=ro([r.decode_total for r in reqs], np.int64),
        kv_context=ro([r.kv_context for r in reqs], np.int64),
        first_token_ms=ro([r.first_token_ms for r in reqs], float),
        completion_ms=ro([r.completion_ms for r in reqs], float),
        instance_workflow=ro([i.flow for i in instances], np.int64),
        instance_arrival_ms=ro([i.arrival_ms for i in instances], float),
        instance_completion_ms=ro([i.completion_ms for i in instances], float),
        visits=mat(visits), went_on=mat(went_on), join_fires=mat(join_fires), pending_joins=pending,
        branch_counts=dict(branch_counts), branch_draws=dict(branch_draws), loop_backs=loop_backs, forks=forks,
        left={e.engine.name: tuple((i, reqs[i].prefill_left, reqs[i].decode_left)
                                   for i in sorted(e.owed())) for e in engines},
        unschedulable={e.engine.name: tuple(e.unschedulable) for e in engines},
        preemptions={e.engine.name: e.preemptions for e in engines},
        recomputed_tokens={e.engine.name: e.recomputed for e in engines})


@dataclass(frozen=True)
class _HasArrival:
    """What :func:`fluidllm.sim.draws._arrival_times` reads of a workload: its arrival process."""

    arrival: Any
