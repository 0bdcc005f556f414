"""Property checks for scheduling policies: the engine's rules, work conservation, vectorized = scalar.

Each check generates engine states with hypothesis (:mod:`fluidllm.testing.strategies`), derandomised
from ``seed`` and without an example database, so the same call gives the same answer everywhere.
When a state breaks the property, hypothesis shrinks it to a minimal one; the check returns a frozen
report with that counterexample (state + plan, readable), or a pass with the number of states tried.

``policy`` is a plug-in object (``name`` and ``plan(view)``, see :mod:`fluidllm.policies.plugin`),
a :class:`~fluidllm.PolicySpec` (a built-in rule, run through
:func:`fluidllm.sim.reference.plan_batch`, or ``python``), a built-in policy name, or a plug-in
target ``"file.py:Class"`` / ``"module:Class"``.

Work conservation (Li, Dai, Peng, arXiv 2504.07347, eqs. 8–9): with demand Σ_i (p_i + 1{p_i = 0})
over the resident requests and budget = min(b_max, kv_free_tokens) (the KV free space caps a batch
like a second token budget, rule K4), the batch holds exactly min(budget, demand) tokens. With a cap
k_max on requests per batch the paper's definition does not apply as such (Theorem 10); here a batch
that gives tokens to k_max requests is then accepted whatever its size: the policy must not leave
budget idle while it still has request slots and demand.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from . import _hypothesis  # noqa: F401  (a clear ImportError without hypothesis)
from hypothesis import HealthCheck, find, settings
from hypothesis import strategies as st
from hypothesis.errors import NoSuchExample

from ..errors import ModelError
from ..model.policy import POLICIES, PolicySpec
from ..policies.plugin import PlanViolation, declared_work_conserving, load_policy, plan_with, policy_object
from ..sim.reference import RequestView, View, plan_batch
from .strategies import view_batches, views

__all__ = ["check_invariants", "check_work_conserving", "check_matches", "as_policy", "Counterexample",
           "CheckReport", "InvariantsReport", "WorkConservingReport", "MatchReport", "state_dict", "state_text",
           "batch_tokens", "wc_budget", "tiny_views"]

Plan = dict[int, tuple[int, int]]


# ------------------------------------------------------------------------------------ policies


class BuiltinPolicy:
    """A built-in rule seen through the plug-in contract: ``plan`` is the reference's scalar rule
    (:func:`~fluidllm.sim.reference.plan_batch`), ``plan_vectorized`` the simulator's rule."""

    def __init__(self, spec: PolicySpec) -> None:
        self.spec = spec
        self.name = spec.name + ("" if not spec.options else
                                 "(" + ", ".join(f"{k}={v}" for k, v in spec.options.items()) + ")")
        self.work_conserving = POLICIES[spec.name][0]

    def plan(self, view: View) -> Plan:
        return plan_batch(self.spec, view)

    def plan_vectorized(self, B: Any, state: Any) -> tuple[Any, Any]:
        from ..policies.rules import vector_policy

        out = vector_policy(self.spec).plan(B, state, self.spec)
        return out[0], out[1]

    def __repr__(self) -> str:
        return f"BuiltinPolicy({self.spec!r})"


def as_policy(policy: Any) -> Any:
    """The object with ``name`` and ``plan(view)`` that ``policy`` stands for (see the module text).

    Raises:
        ModelError: an unknown policy name or a bad plug-in target.
    """
    if isinstance(policy, str):
        policy = load_policy(policy) if ":" in policy else PolicySpec(policy)
    if isinstance(policy, PolicySpec):
        return policy_object(policy) if policy.name == "python" else BuiltinPolicy(policy)
    if not callable(getattr(policy, "plan", None)):
        raise ModelError("policy", policy, "must be a plug-in object with plan(view), a PolicySpec, a built-in "
                                           "policy name or a target 'file.py:Class'")
    return policy


def _name(policy: Any) -> str:
    return str(getattr(policy, "name", type(policy).__name__))


# ------------------------------------------------------------------------------ counterexamples


def wc_budget(view: View) -> int:
    """The tokens a batch may hold: min(b_max, kv_free_tokens)."""
    return view.token_budget if view.kv_free_tokens is None else min(view.token_budget, view.kv_free_tokens)


def batch_tokens(plan: Mapping[int, tuple[int, int]]) -> int:
    return int(sum(p + d for p, d in plan.values()))


def state_dict(view: View) -> dict[str, Any]:
    """A JSON-ready dict of a view (the engine state a policy sees)."""
    return {"token_budget": view.token_budget, "max_batch_requests": view.max_batch_requests,
            "max_resident_requests": view.max_resident_requests, "kv_capacity_tokens": view.kv_capacity_tokens,
            "kv_free_tokens": view.kv_free_tokens, "static_group": sorted(view.static_group),
            "requests": [{"id": r.id, "prefill_left": r.prefill_left, "decode_left": r.decode_left, "klass": r.klass,
                          "arrival_index": r.arrival_index, "running": r.running} for r in view.requests]}


def state_text(view: View) -> str:
    """A view as lines a person reads: the limits, then one line per resident request (FCFS)."""
    caps = [f"b_max = {view.token_budget}"]
    if view.max_batch_requests is not None:
        caps.append(f"k_max = {view.max_batch_requests}")
    if view.kv_free_tokens is not None:
        caps.append(f"KV free = {view.kv_free_tokens} of {view.kv_capacity_tokens} tokens")
    if view.max_resident_requests is not None:
        caps.append(f"resident cap = {view.max_resident_requests}")
    lines = [f"state: {', '.join(caps)}; {len(view.requests)} resident request(s), FCFS:"]
    for r in view.requests:
        phase = "decoding" if r.decoding else ("prefill" if r.prefill_left > 0 else "done")
        extra = [phase] + (["running"] if r.running else []) + (["static group"] if r.id in view.static_group else [])
        lines.append(f"  id {r.id}: prefill left {r.prefill_left}, decode left {r.decode_left} "
                     f"(class {r.klass}; {', '.join(extra)})")
    return "\n".join(lines)


def _plan_text(plan: Mapping[int, tuple[int, int]] | None) -> str:
    if plan is None:
        return "batch: none (plan failed)"
    P = sum(p for p, _ in plan.values())
    D = sum(d for _, d in plan.values())
    body = ", ".join(f"id {k}: {p} prefill + {d} decode" for k, (p, d) in plan.items()) or "empty"
    return f"batch: {body}  = {P + D} token{'s' if P + D != 1 else ''} ({P} prefill, {D} decode)"


@dataclass(frozen=True)
class Counterexample:
    """A state where a property fails, with what the policy did there.

    Attributes:
        view: the state (a :class:`~fluidllm.sim.reference.View`); views: all rows for check_matches.
        plan: the policy's plan (request id -> (prefill, decode)), None when ``plan`` itself failed.
        problem: what is wrong, in words.
        demand_tokens: Σ_i (p_i + 1{p_i = 0}); budget_tokens: min(b_max, kv_free); batch_tokens: the plan's total.
    """

    view: View
    plan: Plan | None
    problem: str
    demand_tokens: int
    budget_tokens: int
    batch_tokens: int | None
    views: tuple[View, ...] = field(default=(), repr=False)

    def text(self) -> str:
        rows = self.views if len(self.views) > 1 else (self.view,)
        states = "\n".join(state_text(v) for v in rows)
        return (f"{states}\n{_plan_text(self.plan)}\n"
                f"demand Σ(p_i + 1{{p_i=0}}) = {self.demand_tokens}, budget min(b_max, KV free) = "
                f"{self.budget_tokens}\nproblem: {self.problem}")

    def to_dict(self) -> dict[str, Any]:
        return {"state": state_dict(self.view),
                "plan": None if self.plan is None else {str(k): [p, d] for k, (p, d) in self.plan.items()},
                "problem": self.problem, "demand_tokens": self.demand_tokens, "budget_tokens": self.budget_tokens,
                "batch_tokens": self.batch_tokens}


def _example(view: View, plan: Plan | None, problem: str, views: tuple[View, ...] = ()) -> Counterexample:
    return Counterexample(view, plan, problem, view.demand_tokens, wc_budget(view),
                          None if plan is None else batch_tokens(plan), views)


# ------------------------------------------------------------------------------------- reports


@dataclass(frozen=True)
class CheckReport:
    """The outcome of one check.

    Attributes:
        check: which property; policy: the policy's name.
        ok: the property held on every generated state.
        examples: states tried (when it failed: up to the first failure plus the shrinking steps).
        max_examples, seed: the search budget and its seed (derandomised: same call, same answer).
        counterexample: the minimal failing state (hypothesis-shrunk), None when ok.
    """

    check: str
    policy: str
    ok: bool
    examples: int
    max_examples: int
    seed: int
    counterexample: Counterexample | None = None

    def __bool__(self) -> bool:
        return self.ok

    def summary(self) -> str:
        if self.ok:
            return f"{self.check}: PASS for policy {self.policy!r} on {self.examples} states (seed {self.seed})"
        return (f"{self.check}: FAIL for policy {self.policy!r} (minimal state after {self.examples} tried, "
                f"seed {self.seed})")

    def text(self) -> str:
        return self.summary() + ("" if self.counterexample is None else "\n" + self.counterexample.text())

    __str__ = text

    def assert_ok(self) -> "CheckReport":
        """Return self when the property held; raise AssertionError with the readable state and plan."""
        if not self.ok:
            raise AssertionError(self.text())
        return self

    def to_dict(self) -> dict[str, Any]:
        return {"check": self.check, "policy": self.policy, "ok": self.ok, "examples": self.examples,
                "max_examples": self.max_examples, "seed": self.seed,
                "counterexample": None if self.counterexample is None else self.counterexample.to_dict()}


@dataclass(frozen=True)
class InvariantsReport(CheckReport):
    """:func:`check_invariants`: every plan passes the engine's rules and is deterministic."""


@dataclass(frozen=True)
class WorkConservingReport(CheckReport):
    """:func:`check_work_conserving`; ``declared``: the policy's own claim (None: it makes none)."""

    declared: bool | None = None

    @property
    def work_conserving(self) -> bool:
        return self.ok

    @property
    def agrees_with_claim(self) -> bool:
        """No claim, or the claim is what the search found."""
        return self.declared is None or self.declared == self.ok

    def summary(self) -> str:
        claim = "" if self.declared is None else f"; it declares work_conserving = {self.declared}"
        if self.ok:
            return (f"work-conserving: YES for policy {self.policy!r}: no violating state among {self.examples} "
                    f"tried (seed {self.seed}){claim}")
        return f"work-conserving: NO for policy {self.policy!r}: minimal counterexample (seed {self.seed}){claim}"

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "work_conserving": self.ok, "declared": self.declared}


@dataclass(frozen=True)
class MatchReport(CheckReport):
    """:func:`check_matches`: the vectorized rule gives the scalar plan on every generated batch of states."""


# ------------------------------------------------------------------------------------- search


def tiny_views(max_requests: int = 3, max_budget: int = 4, max_prefill: int = 4, max_decode: int = 2):
    """Every small state, smallest first: 1..max_requests requests (ids 0.., running = prompt done),
    b_max 1..max_budget, prefill 0..max_prefill, decode 0..max_decode; no caps."""
    from itertools import product

    one = [(p, d) for p in range(max_prefill + 1) for d in range(max_decode + 1) if p + d > 0]
    for n in range(1, max_requests + 1):
        for b in range(1, max_budget + 1):
            for state in product(one, repeat=n):
                yield View(b, tuple(RequestView(i, p, d, 0, i, p == 0) for i, (p, d) in enumerate(state)))


def _search(strategy: st.SearchStrategy, failure: Callable[[Any], Counterexample | None], max_examples: int,
            seed: int, exhaustive: bool = False) -> tuple[int, Any]:
    """(states tried, a minimal failing example or None): first every tiny state in order of size
    (``exhaustive``; the first failure is then minimal), then hypothesis (shrunk)."""
    calls = [0]
    if exhaustive:
        for view in tiny_views():
            calls[0] += 1
            if failure(view) is not None:
                return calls[0], view

    def fails(x: Any) -> bool:
        calls[0] += 1
        return failure(x) is not None

    cfg = settings(max_examples=max_examples, database=None, deadline=None, print_blob=False,
                   suppress_health_check=list(HealthCheck))
    try:
        found = find(strategy, fails, settings=cfg, random=random.Random(seed))
    except NoSuchExample:
        return calls[0], None
    return calls[0], found


def _plan(policy: Any, view: View) -> tuple[Plan | None, str | None]:
    try:
        return plan_with(policy, view), None
    except PlanViolation as e:
        return None, str(e)


def _copy(view: View) -> View:
    return View(view.token_budget, tuple(RequestView(r.id, r.prefill_left, r.decode_left, r.klass, r.arrival_index,
                                                     r.running) for r in view.requests),
                view.max_batch_requests, view.max_resident_requests, view.kv_capacity_tokens,
                frozenset(view.static_group), view.kv_free_tokens)


def _state_options(k_max: bool, kv: bool, max_requests: int, token_budget: Any) -> dict[str, Any]:
    return dict(k_max="sometimes" if k_max else False, kv="sometimes" if kv else False, max_requests=max_requests,
                static_group=True, token_budget=token_budget)


def check_invariants(policy: Any, *, max_examples: int = 300, seed: int = 0, k_max: bool = True, kv: bool = True,
                     max_requests: int = 8, token_budget: Any = None,
                     exhaustive: bool = True) -> InvariantsReport:
    """Check that every plan obeys the engine's rules and that the policy is deterministic.

    On generated states (:func:`fluidllm.testing.strategies.views`; ``k_max`` / ``kv``: also states
    with a per-batch request cap / a KV cap) each plan must pass
    :func:`fluidllm.sim.reference.check_plan` (budget, caps, one decode token per request, no decode
    before the prompt is done, ...), must not be empty while requests are resident and no KV cap can
    explain it (the engine would stop with "empty batch"), and a second call on an equal state must
    give the same plan. ``exhaustive``: first every tiny state (:func:`tiny_views`: up to 3
    requests, b_max <= 4, prefill <= 4, decode <= 2 — 11 816 states), then ``max_examples``
    generated ones.

    ``token_budget``: b_max of the generated states (an int or a hypothesis strategy; default
    :data:`fluidllm.testing.strategies.BUDGETS`); ``max_requests``: resident requests per state.

    Returns:
        An :class:`InvariantsReport` (``.assert_ok()`` raises AssertionError with the state and plan).
    """
    pol = as_policy(policy)

    def failure(view: View) -> Counterexample | None:
        plan, err = _plan(pol, view)
        if err is not None:
            return _example(view, None, err)
        if not plan and view.requests and view.kv_free_tokens is None:
            return _example(view, plan, f"empty batch while {len(view.requests)} request(s) are resident "
                                        "(the engine stops here)")
        again, err = _plan(pol, _copy(view))
        if err is not None or again != plan or list(again) != list(plan):
            return _example(view, plan, f"not deterministic: the same state gave {again if err is None else err}")
        return None

    strategy = views(**_state_options(k_max, kv, max_requests, token_budget))
    n, found = _search(strategy, failure, max_examples, seed, exhaustive)
    return InvariantsReport("invariants", _name(pol), found is None, n, max_examples, seed,
                            None if found is None else failure(found))


def check_work_conserving(policy: Any, *, max_examples: int = 1000, seed: int = 0, k_max: bool = True,
                          kv: bool = True, max_requests: int = 8, token_budget: Any = None,
                          exhaustive: bool = True) -> WorkConservingReport:
    """Search for a state where the policy is not work-conserving (eqs. 8–9, see the module text).

    A batch must hold min(budget, demand) tokens, budget = min(b_max, KV free), demand =
    Σ_i (p_i + 1{p_i = 0}); with k_max a batch giving tokens to k_max requests passes. A plan that
    breaks the engine's rules counts as a failure too (there is no batch to judge). ``exhaustive``:
    first every tiny state (:func:`tiny_views`), smallest first, so a violation there is reported
    in its smallest form; then ``max_examples`` hypothesis states, a failure shrunk by hypothesis.

    Returns:
        A :class:`WorkConservingReport`: ``work_conserving`` and, when False, the minimal
        counterexample (state, plan, demand, batch tokens); ``declared``: the policy's claim.
    """
    pol = as_policy(policy)

    def failure(view: View) -> Counterexample | None:
        plan, err = _plan(pol, view)
        if err is not None:
            return _example(view, None, err)
        want = min(wc_budget(view), view.demand_tokens)
        got = batch_tokens(plan)
        if got == want:
            return None
        if view.max_batch_requests is not None and len(plan) >= view.max_batch_requests:
            return None
        return _example(view, plan, f"the batch holds {got} token{'s' if got != 1 else ''}, but min(budget, demand) "
                                    f"= {want}: {want - got} token(s) of budget left idle with work waiting")

    strategy = views(**_state_options(k_max, kv, max_requests, token_budget))
    n, found = _search(strategy, failure, max_examples, seed, exhaustive)
    return WorkConservingReport("work-conserving", _name(pol), found is None, n, max_examples, seed,
                                None if found is None else failure(found), declared_work_conserving(pol))


def _slot_arrays(views_: tuple[View, ...], holes: list[bool]) -> tuple[Any, list[list[int | None]]]:
    """The (R, W) SlotState of a batch of views (empty slots where ``holes`` says, like completed
    requests in the simulator), and per row the request id in each slot (None: empty)."""
    import numpy as np

    from ..policies.rules import SlotState
    from ..sim.backend import get_backend

    B = get_backend("numpy")
    layout: list[list[int | None]] = []
    for v in views_:
        row: list[int | None] = []
        for j, r in enumerate(v.requests):
            if holes and holes[j % len(holes)]:
                row.append(None)
            row.append(r.id)
        layout.append(row)
    R, W = len(views_), max(1, max(len(row) for row in layout))
    pre = np.zeros((R, W), np.int32)
    dec = np.zeros((R, W), np.int32)
    running = np.zeros((R, W), bool)
    group = np.zeros((R, W), bool)
    for i, (v, row) in enumerate(zip(views_, layout)):
        by_id = {r.id: r for r in v.requests}
        for j, rid in enumerate(row):
            if rid is not None:
                r = by_id[rid]
                pre[i, j], dec[i, j], running[i, j] = r.prefill_left, r.decode_left, r.running
                group[i, j] = rid in v.static_group
    budget = np.array([wc_budget(v) for v in views_], np.int32)
    k = views_[0].max_batch_requests
    slots = None if k is None else np.array([v.max_batch_requests for v in views_], np.int32)
    state = SlotState(B.asarray(pre), B.asarray(dec), B.asarray(budget), None if slots is None else B.asarray(slots),
                      views_[0].token_budget, B.asarray(running), B.asarray(group))
    return (B, state), layout


def check_matches(vectorized: Any, scalar: Any = None, *, max_examples: int = 200, seed: int = 0,
                  k_max: bool = True, kv: bool = True, max_requests: int = 8,
                  token_budget: Any = None) -> MatchReport:
    """Check that a vectorized rule gives the scalar plan on generated batches of states.

    ``vectorized``: an object with ``plan_vectorized(B, state)`` (a plug-in, or a built-in name /
    PolicySpec: the simulator's rule) or such a callable; ``scalar`` (default: ``vectorized``
    itself): the policy whose ``plan(view)`` is the reference. Each generated batch is 1–4 states
    sharing b_max, laid out as :class:`~fluidllm.policies.rules.SlotState` arrays (R, W) on the NumPy
    backend with empty slots in between (as completed requests leave them in the simulator);
    ``plan_vectorized`` returns ``(prefill, decode)`` (R, W) arrays (further outputs are ignored),
    which must equal the scalar plans slot for slot.
    """
    import numpy as np

    vec_obj = vectorized if callable(getattr(vectorized, "plan_vectorized", None)) or callable(vectorized) \
        else as_policy(vectorized)
    if not callable(getattr(vec_obj, "plan_vectorized", None)) and not callable(vec_obj):
        raise ModelError("vectorized", vectorized, "must have plan_vectorized(B, state) or be such a function")
    scal = as_policy(vectorized if scalar is None else scalar)
    vfun = vec_obj.plan_vectorized if callable(getattr(vec_obj, "plan_vectorized", None)) else vec_obj

    def failure(case: Any) -> Counterexample | None:
        views_, holes = case
        plans = []
        for v in views_:
            plan, err = _plan(scal, v)
            if err is not None:
                return _example(v, None, f"the scalar plan breaks the engine's rules: {err}", views_)
            plans.append(plan)
        (B, state), layout = _slot_arrays(views_, holes)
        try:
            out = vfun(B, state)
            gp, gd = B.to_numpy(out[0]).astype(np.int64), B.to_numpy(out[1]).astype(np.int64)
        except Exception as e:  # noqa: BLE001 - reported as the counterexample
            return _example(views_[0], plans[0], f"plan_vectorized raised {type(e).__name__}: {e}", views_)
        if gp.shape != state.pre.shape or gd.shape != state.pre.shape:
            return _example(views_[0], plans[0], f"plan_vectorized returned shapes {gp.shape}, {gd.shape}; "
                                                 f"expected {state.pre.shape}", views_)
        for i, (v, plan, row) in enumerate(zip(views_, plans, layout)):
            for j in range(gp.shape[1]):
                rid = row[j] if j < len(row) else None
                want = (0, 0) if rid is None else plan.get(rid, (0, 0))
                got = (int(gp[i, j]), int(gd[i, j]))
                if got != want:
                    where = "an empty slot" if rid is None else f"request {rid}"
                    return _example(v, plan, f"row {i}, slot {j} ({where}): vectorized gives {got}, scalar {want}",
                                    views_)
        return None

    strat = st.tuples(view_batches(**_state_options(k_max, kv, max_requests, token_budget)),
                      st.lists(st.booleans(), max_size=6))
    n, found = _search(strat, failure, max_examples, seed)
    return MatchReport("vectorized = scalar", _name(scal), found is None, n, max_examples, seed,
                       None if found is None else failure(found))
