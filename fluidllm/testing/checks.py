"""Property checks for scheduling policies: the engine's rules, work conservation, vectorized = scalar.

Each check judges a policy on the states one engine can reach: the
:class:`~fluidllm.testing.envelope.Envelope` of a model's engine (``model=``, ``engine=``: its
budget, caps, KV limit and length laws, nothing it does not have), an envelope given
(``envelope=``), or :data:`~fluidllm.testing.envelope.DEFAULT_ENVELOPE` (every engine, up to
real scale). The search, in order:

1. ``exhaustive``: every reachable state of the envelope's corner (b_max up to 3 above its least,
   at most 3 requests, v_p <= 2, v_d <= 2: :mod:`fluidllm.testing.brute`), smallest first — when
   the envelope has small budgets;
2. ``structured``: deterministic extreme states (:func:`~fluidllm.testing.envelope.structured_states`:
   hundreds of decoders, b_max ± 1, caps ± 1, a huge prompt, a waiting queue of hundreds,
   demand exactly at the budget, KV at its limit, ...);
3. ``max_examples`` random states from hypothesis (:func:`fluidllm.testing.strategies.states`),
   derandomised from ``seed`` and without an example database (same call, same answer).

A failing state is shrunk (hypothesis, then a greedy pass that removes requests, lowers the limits
and shortens the requests while the state stays reachable and keeps failing) and returned in a
frozen report with the state and the batch, readable; a pass reports what was searched
(:class:`SearchStats`: states of each kind, the largest state, the families covered) and the envelope.

``policy`` is a plug-in object (``name`` and ``plan(view)``, see :mod:`fluidllm.policies.plugin`),
a :class:`~fluidllm.PolicySpec` (a built-in rule, run through
:func:`fluidllm.sim.reference.plan_batch`; ``priority`` through the network reference's
class-priority rule with the envelope's class names, or ``python``), a built-in policy name, or a
plug-in target ``"file.py:Class"`` / ``"module:Class"``.

Work conservation (Li, Dai, Peng, arXiv 2504.07347, eqs. 8–9): with demand Σ_i (p_i + 1{p_i = 0})
over the resident requests and budget = min(b_max, kv_free_tokens) (the KV free space caps a batch
like a second token budget, rule K4), the batch holds exactly min(budget, demand) tokens. With a cap
k_max on requests per batch the paper's definition does not apply as such (Theorem 10); here a batch
that gives tokens to k_max requests is then accepted whatever its size: the policy must not leave
budget idle while it still has request slots and demand. The engine's own admission cap
(``max_resident_requests``) is a limit of the engine, not of the policy: demand counts the resident
requests only.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Iterator, Mapping

from . import _hypothesis  # noqa: F401  (a clear ImportError without hypothesis)
from hypothesis import HealthCheck, Phase, find, settings
from hypothesis import strategies as st
from hypothesis.errors import NoSuchExample

from ..errors import ModelError
from ..model.policy import PolicySpec
from ..policies.plugin import PlanViolation, declared_work_conserving, load_policy, plan_with, policy_object
from ..sim.reference import REFERENCE_POLICIES, RequestView, View, plan_batch
from .envelope import Envelope, RequestClass, resolve_envelope, structured_states, unreachable
from .strategies import states, view_batches

__all__ = ["check_invariants", "check_work_conserving", "check_matches", "as_policy", "Counterexample",
           "CheckReport", "InvariantsReport", "WorkConservingReport", "MatchReport", "SearchStats", "state_dict",
           "state_text", "batch_tokens", "wc_budget", "shrink_state", "DEFAULT_MAX_EXAMPLES"]

Plan = dict[int, tuple[int, int]]

#: Random states per check by default (``fluidllm check-policy``: the work-conservation search;
#: the invariants get a third). With the structured families this keeps a check of a plug-in on a
#: real-scale model to a few seconds on one core.
DEFAULT_MAX_EXAMPLES = 400


# ------------------------------------------------------------------------------------ policies


class BuiltinPolicy:
    """A built-in rule seen through the plug-in contract: ``plan`` is the reference's scalar rule
    (:func:`~fluidllm.sim.reference.plan_batch`; ``priority``:
    :func:`~fluidllm.sim.network_reference.plan_priority`, its ``order`` naming classes of
    ``class_names``), ``plan_vectorized`` the simulator's rule; ``work_conserving`` the library's claim
    (:attr:`fluidllm.PolicySpec.work_conserving`)."""

    def __init__(self, spec: PolicySpec, class_names: Iterable[str] = ()) -> None:
        self.spec = spec
        self.name = spec.name + ("" if not spec.options else
                                 "(" + ", ".join(f"{k}={v}" for k, v in spec.options.items()) + ")")
        self.work_conserving = spec.work_conserving
        names = list(class_names)
        order = list(dict.fromkeys(spec.flag("order"))) if spec.name == "priority" else []
        ranked = [names.index(c) for c in order if c in names]
        self._rank = {k: j for j, k in enumerate(ranked)}

    def plan(self, view: View) -> Plan:
        if self.spec.name == "priority":
            from ..sim.network_reference import plan_priority

            return plan_priority(self.spec, view, self._rank)
        return plan_batch(self.spec, view)

    def plan_vectorized(self, B: Any, state: Any) -> tuple[Any, Any]:
        from ..policies.rules import vector_policy

        out = vector_policy(self.spec).plan(B, state, self.spec)
        return out[0], out[1]

    def __repr__(self) -> str:
        return f"BuiltinPolicy({self.spec!r})"


_JUDGED = tuple(n for n in REFERENCE_POLICIES if n != "python") + ("priority", "python")


def as_policy(policy: Any, class_names: Iterable[str] = ()) -> Any:
    """The object with ``name`` and ``plan(view)`` that ``policy`` stands for (see the module text);
    ``class_names``: the classes a ``priority`` order names (index = ``klass``).

    Raises:
        ModelError: an unknown policy name, a bad plug-in target, or a built-in the judge has no
            scalar rule for (max-pressure, wait, nested-wait; field ``policy``).
    """
    if isinstance(policy, str):
        policy = load_policy(policy) if ":" in policy else PolicySpec(policy)
    if isinstance(policy, PolicySpec):
        if policy.name == "python":
            return policy_object(policy)
        if policy.name not in _JUDGED or (policy.name == "priority" and policy.flag("inner") not in _JUDGED):
            raise ModelError("policy", policy.name, f"has no scalar rule the judge can run; it judges {list(_JUDGED)} "
                                                    "(priority with one of them inside) and plug-ins")
        return BuiltinPolicy(policy, class_names)
    if not callable(getattr(policy, "plan", None)):
        raise ModelError("policy", policy, "must be a plug-in object with plan(view), a PolicySpec, a built-in "
                                           "policy name or a target 'file.py:Class'")
    return policy


def _name(policy: Any) -> str:
    return str(getattr(policy, "name", type(policy).__name__))


def _prepare(policy: Any, env: Envelope) -> tuple[Any, Envelope]:
    """The policy object and the envelope with the engine rules its flags bring (R4, R6)."""
    pol = as_policy(policy, env.class_names)
    return pol, env.for_policy(pol)


# ------------------------------------------------------------------------------ counterexamples


def wc_budget(view: View) -> int:
    """The tokens a batch may hold: min(b_max, kv_free_tokens)."""
    return view.token_budget if view.kv_free_tokens is None else min(view.token_budget, view.kv_free_tokens)


def batch_tokens(plan: Mapping[int, tuple[int, int]]) -> int:
    """Σ (prefill + decode) tokens of a plan."""
    return int(sum(p + d for p, d in plan.values()))


def state_dict(view: View) -> dict[str, Any]:
    """A JSON-ready dict of a view (the engine state a policy sees)."""
    return {"token_budget": view.token_budget, "max_batch_requests": view.max_batch_requests,
            "max_resident_requests": view.max_resident_requests, "kv_capacity_tokens": view.kv_capacity_tokens,
            "kv_free_tokens": view.kv_free_tokens, "static_group": sorted(view.static_group),
            "requests": [{"id": r.id, "prefill_left": r.prefill_left, "decode_left": r.decode_left, "klass": r.klass,
                          "arrival_index": r.arrival_index, "running": r.running, "kv_tokens": r.kv_tokens}
                         for r in view.requests]}


def _runs(view: View) -> list[tuple[int, int, RequestView]]:
    """Runs of consecutive requests alike but for their id: (first index, length, first request)."""
    out: list[tuple[int, int, RequestView]] = []
    sig = None
    for i, r in enumerate(view.requests):
        s = (r.prefill_left, r.decode_left, r.klass, r.running, r.kv_tokens, r.id in view.static_group)
        if out and s == sig:
            j, n, first = out[-1]
            out[-1] = (j, n + 1, first)
        else:
            out.append((i, 1, r))
            sig = s
    return out


def state_text(view: View) -> str:
    """A view as lines a person reads: the limits, then the resident requests in FCFS order (a run
    of more than 3 alike requests on one line)."""
    caps = [f"b_max = {view.token_budget}"]
    if view.max_batch_requests is not None:
        caps.append(f"k_max = {view.max_batch_requests}")
    if view.kv_free_tokens is not None:
        caps.append(f"KV free = {view.kv_free_tokens} of {view.kv_capacity_tokens} tokens")
    if view.max_resident_requests is not None:
        caps.append(f"resident cap = {view.max_resident_requests}")
    lines = [f"state: {', '.join(caps)}; {len(view.requests)} resident request(s), FCFS:"]
    for i, n, r in _runs(view):
        phase = "decoding" if r.decoding else "prefill"
        extra = [phase] + (["running"] if r.running else ["waiting"]) + \
            ([f"holds {r.kv_tokens} KV"] if r.kv_tokens else []) + \
            (["static group"] if r.id in view.static_group else [])
        rows = view.requests[i: i + n]
        if n <= 3:
            for q in rows:
                lines.append(f"  id {q.id}: prefill left {q.prefill_left}, decode left {q.decode_left} "
                             f"(class {q.klass}; {', '.join(extra)})")
        else:
            lines.append(f"  ids {rows[0].id}..{rows[-1].id} ({n} requests): prefill left {r.prefill_left}, "
                         f"decode left {r.decode_left} each (class {r.klass}; {', '.join(extra)})")
    return "\n".join(lines)


def _plan_text(plan: Mapping[int, tuple[int, int]] | None) -> str:
    if plan is None:
        return "batch: none (plan failed)"
    P = sum(p for p, _ in plan.values())
    D = sum(d for _, d in plan.values())
    items = list(plan.items())
    if len(items) > 12:
        body = ", ".join(f"id {k}: {p}+{d}" for k, (p, d) in items[:6]) + f", … ({len(items) - 8} more) …, " + \
            ", ".join(f"id {k}: {p}+{d}" for k, (p, d) in items[-2:]) + " (prefill+decode)"
    else:
        body = ", ".join(f"id {k}: {p} prefill + {d} decode" for k, (p, d) in items) or "empty"
    return (f"batch: {body}  = {P + D} token{'s' if P + D != 1 else ''} ({P} prefill, {D} decode) to "
            f"{len(items)} request(s)")


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
        states_ = "\n".join(state_text(v) for v in rows)
        return (f"{states_}\n{_plan_text(self.plan)}\n"
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
class SearchStats:
    """What a check searched.

    Attributes:
        exhaustive: states of the envelope's corner, all of them (0: no corner); corner: it, in words.
        structured: structured extreme states tried; families: the families among them.
        random: hypothesis states (generation and its shrinking); shrink: states of the greedy shrink.
        max_requests, max_budget, max_demand: the largest resident count, b_max and demand tried.
        with_k_max, with_resident_cap, with_kv: states tried with each cap set.
    """

    exhaustive: int = 0
    structured: int = 0
    random: int = 0
    shrink: int = 0
    families: tuple[str, ...] = ()
    corner: str | None = None
    max_requests: int = 0
    max_budget: int = 0
    max_demand: int = 0
    with_k_max: int = 0
    with_resident_cap: int = 0
    with_kv: int = 0

    @property
    def total(self) -> int:
        return self.exhaustive + self.structured + self.random + self.shrink

    def text(self) -> str:
        parts = []
        if self.exhaustive:
            parts.append(f"{self.exhaustive} exhaustive ({self.corner})")
        if self.structured:
            parts.append(f"{self.structured} structured ({len(self.families)} families: {', '.join(self.families)})")
        parts.append(f"{self.random} random")
        if self.shrink:
            parts.append(f"{self.shrink} shrinking")
        caps = ", ".join(f"{n} with {what}" for n, what in ((self.with_k_max, "k_max"),
                                                             (self.with_resident_cap, "a resident cap"),
                                                             (self.with_kv, "a KV cap")) if n)
        return (f"{self.total} states: " + "; ".join(parts) + f"; largest: {self.max_requests} requests, b_max "
                f"{self.max_budget}, demand {self.max_demand} tokens" + (f"; {caps}" if caps else ""))

    def to_dict(self) -> dict[str, Any]:
        return {"total": self.total, "exhaustive": self.exhaustive, "corner": self.corner,
                "structured": self.structured, "families": list(self.families), "random": self.random,
                "shrink": self.shrink, "max_requests": self.max_requests, "max_budget": self.max_budget,
                "max_demand": self.max_demand, "with_k_max": self.with_k_max,
                "with_resident_cap": self.with_resident_cap, "with_kv": self.with_kv}


@dataclass(frozen=True)
class CheckReport:
    """The outcome of one check.

    Attributes:
        check: which property; policy: the policy's name.
        ok: the property held on every state tried.
        examples: states tried (when it failed: up to the first failure plus the shrinking steps).
        max_examples, seed: the random-search budget and its seed (derandomised: same call, same answer).
        counterexample: the minimal failing state, None when ok.
        search: what was searched (:class:`SearchStats`); envelope: the states it was judged on.
    """

    check: str
    policy: str
    ok: bool
    examples: int
    max_examples: int
    seed: int
    counterexample: Counterexample | None = None
    search: SearchStats = field(default_factory=SearchStats)
    envelope: Envelope | None = None

    def __bool__(self) -> bool:
        return self.ok

    def _where(self) -> str:
        return "" if self.envelope is None else f" on {self.envelope.source}"

    def summary(self) -> str:
        if self.ok:
            return (f"{self.check}: PASS for policy {self.policy!r}{self._where()}: {self.search.text()} "
                    f"(seed {self.seed})")
        return (f"{self.check}: FAIL for policy {self.policy!r}{self._where()} (minimal state after {self.examples} "
                f"tried, seed {self.seed})")

    def text(self) -> str:
        env = "" if self.envelope is None else f"\n  envelope: {self.envelope.text()}"
        return self.summary() + env + ("" if self.counterexample is None else "\n" + self.counterexample.text())

    __str__ = text

    def assert_ok(self) -> "CheckReport":
        """Return self when the property held; raise AssertionError with the readable state and plan."""
        if not self.ok:
            raise AssertionError(self.text())
        return self

    def to_dict(self) -> dict[str, Any]:
        return {"check": self.check, "policy": self.policy, "ok": self.ok, "examples": self.examples,
                "max_examples": self.max_examples, "seed": self.seed,
                "counterexample": None if self.counterexample is None else self.counterexample.to_dict(),
                "search": self.search.to_dict(), "envelope": None if self.envelope is None else self.envelope.to_dict()}


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
            return (f"work-conserving: YES for policy {self.policy!r}{self._where()}: no violating state among "
                    f"{self.search.text()} (seed {self.seed}){claim}")
        return (f"work-conserving: NO for policy {self.policy!r}{self._where()}: minimal counterexample after "
                f"{self.examples} states (seed {self.seed}){claim}")

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "work_conserving": self.ok, "declared": self.declared}


@dataclass(frozen=True)
class MatchReport(CheckReport):
    """:func:`check_matches`: the vectorized rule gives the scalar plan on every generated batch of states."""


# ---------------------------------------------------------------------------------- properties


def _plan(policy: Any, view: View) -> tuple[Plan | None, str | None]:
    try:
        return plan_with(policy, view), None
    except PlanViolation as e:
        return None, str(e)


Failure = Callable[[View], "Counterexample | None"]


def invariants_failure(pol: Any) -> Failure:
    """The invariants property: a plan that passes :func:`~fluidllm.sim.reference.check_plan`, is not
    empty while requests are resident (unless a KV cap explains it: the engine then preempts, K5),
    and is the same on an equal state."""

    def failure(view: View) -> Counterexample | None:
        plan, err = _plan(pol, view)
        if err is not None:
            return _example(view, None, err)
        if not plan and view.requests and view.kv_free_tokens is None:
            return _example(view, plan, f"empty batch while {len(view.requests)} request(s) are resident "
                                        "(the engine stops here)")
        try:        # the same state again (views are immutable: the same object is an equal state)
            raw = pol.plan(view)
            again = {int(k): (int(v[0]), int(v[1])) for k, v in raw.items()}
        except Exception as e:  # noqa: BLE001 - reported as the counterexample
            return _example(view, plan, f"not deterministic: the same state then raised {type(e).__name__}: {e}")
        if again != plan or list(again) != list(plan):
            return _example(view, plan, f"not deterministic: the same state gave {again}")
        return None

    return failure


def wc_failure(pol: Any) -> Failure:
    """The work-conservation property (module text); a plan that breaks the engine's rules fails too."""

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

    return failure


# -------------------------------------------------------------------------------------- search


class _Tracker:
    def __init__(self) -> None:
        self.n = {"exhaustive": 0, "structured": 0, "random": 0, "shrink": 0}
        self.families: dict[str, None] = {}
        self.corner: str | None = None
        self.big = [0, 0, 0]
        self.caps = [0, 0, 0]

    def see(self, view: View, kind: str, family: str | None = None) -> None:
        self.n[kind] += 1
        if family is not None:
            self.families[family] = None
        n = len(view.requests)
        if n > self.big[0]:
            self.big[0] = n
        if view.token_budget > self.big[1]:
            self.big[1] = view.token_budget
        if n > 8 or kind != "exhaustive":
            dem = view.demand_tokens
            if dem > self.big[2]:
                self.big[2] = dem
        self.caps[0] += view.max_batch_requests is not None
        self.caps[1] += view.max_resident_requests is not None
        self.caps[2] += view.kv_capacity_tokens is not None

    def freeze(self) -> SearchStats:
        return SearchStats(self.n["exhaustive"], self.n["structured"], self.n["random"], self.n["shrink"],
                           tuple(self.families), self.corner, *self.big, *self.caps)


def corner_of(env: Envelope) -> Envelope | None:
    """The envelope's corner that the exhaustive phase lists: b_max up to its least + 3, at most 3
    requests, the first class with v_p <= 2 and v_d <= 2, the engine's fixed caps (optional caps
    absent); None when the envelope has no budget <= 4 or no such lengths."""
    lo = env.token_budget[0]
    if lo > 4:
        return None
    cl = env.classes[0]
    sp, sd = cl.prefill.clip(0, 2), cl.decode.clip(0, 2)
    if sp is None or sd is None:
        return None
    fixed = lambda r: None if r is None or env.caps_optional else (r[0], r[0])  # noqa: E731
    return replace(env, token_budget=(lo, min(env.token_budget[1], lo + 3)), caps_optional=False,
                   max_batch_requests=fixed(env.max_batch_requests),
                   max_resident_requests=fixed(env.max_resident_requests),
                   kv_capacity_tokens=fixed(env.kv_capacity_tokens), max_requests=min(3, env.resident_limit),
                   classes=(RequestClass(cl.name, sp, sd),),
                   source=f"every reachable state with b_max {lo}..{min(env.token_budget[1], lo + 3)}, <= 3 requests, "
                          f"v_p <= 2, v_d <= 2")


_CORNERS: dict[Envelope, list[View]] = {}


def _corner_states(corner: Envelope) -> list[View]:
    from .brute import enumerate_states

    if corner not in _CORNERS:
        if len(_CORNERS) >= 4:
            _CORNERS.pop(next(iter(_CORNERS)))
        _CORNERS[corner] = list(enumerate_states(corner))
    return _CORNERS[corner]


def _shrink_candidates(view: View, env: Envelope) -> Iterator[View]:
    """Smaller states than ``view``, most reduction first (they may be unreachable: the caller checks)."""
    reqs = list(view.requests)
    n = len(reqs)

    def rebuild(rs: list[RequestView], **kw: Any) -> View:
        b = kw.get("b", view.token_budget)
        M = kw.get("M", view.kv_capacity_tokens)
        g = view.static_group & {r.id for r in rs}
        free = None if M is None else M - sum(r.kv_tokens for r in rs)
        return View(b, tuple(rs), kw.get("k", view.max_batch_requests), kw.get("rc", view.max_resident_requests),
                    M, frozenset(g), free)

    M0 = view.kv_capacity_tokens
    size = n // 2
    while size >= 1:                                   # drop runs of requests (delta debugging)
        for start in range(0, n, size):
            rest = reqs[:start] + reqs[start + size:]
            if rest:
                yield rebuild(rest)
                freed = sum(r.kv_tokens for r in reqs[start:start + size])
                if M0 is not None and freed and env.kv_capacity_tokens is not None and \
                        M0 - freed >= env.kv_capacity_tokens[0]:
                    yield rebuild(rest, M=M0 - freed)   # and the KV they held: the same free space
        size //= 2
    b = view.token_budget
    for nb in sorted({env.token_budget[0], b // 2, b - 1}):
        if env.token_budget[0] <= nb < b:
            yield rebuild(reqs, b=nb)
    for key, r, v in (("k", env.max_batch_requests, view.max_batch_requests),
                      ("rc", env.max_resident_requests, view.max_resident_requests),
                      ("M", env.kv_capacity_tokens, view.kv_capacity_tokens)):
        if v is None or r is None:
            continue
        if env.caps_optional:
            yield rebuild(reqs, **{key: None})
        for nv in sorted({r[0], v // 2, v - 1, n if key == "rc" else r[0]}):
            if r[0] <= nv < v:
                yield rebuild(reqs, **{key: nv})
    for i, run, r in _runs(view):                      # shorten a run of alike requests, all together
        p, d, kv = r.prefill_left, r.decode_left, r.kv_tokens
        cands = {(p2, d2, kv2, c2) for p2 in {0, 1, p // 2, p - 1, p} for d2 in {0, 1, d // 2, d - 1, d}
                 for kv2 in {0, 1, kv // 2, kv - 1, kv} for c2 in {0, r.klass}
                 if 0 <= p2 <= p and 0 <= d2 <= d and 0 <= kv2 <= kv and p2 + d2 >= 1}
        cands.discard((p, d, kv, r.klass))
        for p2, d2, kv2, c2 in sorted(cands, key=lambda x: (x[0] + x[1] + x[2], x[3])):
            new = [RequestView(q.id, p2, d2, c2, q.arrival_index, kv2 > 0, kv2) for q in reqs[i: i + run]]
            yield rebuild(reqs[:i] + new + reqs[i + run:])
    ids = list(range(n))
    if [r.id for r in reqs] != ids:                    # ids 0..n-1
        remap = {r.id: j for j, r in enumerate(reqs)}
        rs = [RequestView(j, r.prefill_left, r.decode_left, r.klass, j, r.running, r.kv_tokens)
              for j, r in enumerate(reqs)]
        v = rebuild(rs)
        yield View(v.token_budget, v.requests, v.max_batch_requests, v.max_resident_requests, v.kv_capacity_tokens,
                   frozenset(remap[g] for g in view.static_group), v.kv_free_tokens)


def shrink_state(view: View, env: Envelope, fails: Callable[[View], bool], max_steps: int = 4000) -> View:
    """A smaller failing state: greedily take the first smaller reachable state (removing requests,
    lowering b_max and the caps, shortening requests, renumbering ids) that still ``fails``, until
    none does or ``max_steps`` states were tried."""
    cur = view
    steps = 0
    improved = True
    tried: set[tuple] = set()        # states alike but for their ids are tried once
    while improved and steps < max_steps:
        improved = False
        for cand in _shrink_candidates(cur, env):
            sig = (cand.token_budget, cand.max_batch_requests, cand.max_resident_requests, cand.kv_capacity_tokens,
                   tuple((n, r.prefill_left, r.decode_left, r.klass, r.kv_tokens, r.id in cand.static_group)
                         for _, n, r in _runs(cand)), tuple(r.id for r in cand.requests[:1]))
            if sig in tried:
                continue
            tried.add(sig)
            if unreachable(cand, env) is not None:
                continue
            steps += 1
            if fails(cand):
                cur, improved = cand, True
                break
            if steps >= max_steps:
                break
    return cur


def _search(env: Envelope, strategy: st.SearchStrategy, failure: Failure, max_examples: int, seed: int,
            exhaustive: bool, structured: bool) -> tuple[View | None, SearchStats]:
    """(a minimal failing state or None, what was searched): the corner, the structured states, then
    hypothesis; a failure outside the corner is shrunk."""
    tr = _Tracker()

    def probe(kind: str, family: str | None = None) -> Callable[[View], bool]:
        def fails(v: View) -> bool:
            tr.see(v, kind, family)
            return failure(v) is not None
        return fails

    corner = corner_of(env) if exhaustive else None
    if corner is not None:
        tr.corner = corner.source
        fails = probe("exhaustive")
        for v in _corner_states(corner):
            if fails(v):
                return v, tr.freeze()                # enumerated smallest first: already minimal
    found: View | None = None
    if structured:
        for fam, v in structured_states(env):
            if probe("structured", fam)(v):
                found = v
                break
    if found is None and max_examples > 0:
        # generation only: the greedy shrink below works on states directly, cheaper than hypothesis's
        cfg = settings(max_examples=max_examples, database=None, deadline=None, print_blob=False,
                       suppress_health_check=list(HealthCheck), phases=(Phase.generate,))
        try:
            found = find(strategy, probe("random"), settings=cfg, random=random.Random(seed))
        except NoSuchExample:
            found = None
    if found is not None:
        found = shrink_state(found, env, probe("shrink"))
    return found, tr.freeze()


def _judge_args(policy: Any, model: Any, engine: str | None, envelope: Envelope | None) -> tuple[Any, Envelope]:
    return _prepare(policy, resolve_envelope(model, engine, envelope))


def check_invariants(policy: Any, model: Any = None, *, engine: str | None = None, envelope: Envelope | None = None,
                     max_examples: int = DEFAULT_MAX_EXAMPLES, seed: int = 0, exhaustive: bool = True,
                     structured: bool = True) -> InvariantsReport:
    """Check that every plan obeys the engine's rules and that the policy is deterministic.

    On the states of the envelope (module text: ``model`` / ``engine``, or ``envelope``, or the
    default one) each plan must pass :func:`fluidllm.sim.reference.check_plan` (budget, caps, one
    decode token per request, no decode before the prompt is done, ...), must not be empty while
    requests are resident and no KV cap can explain it (the engine would stop with "empty batch"),
    and a second call on an equal state must give the same plan. ``exhaustive``: first every state of
    the envelope's corner; ``structured``: then the structured extreme states; then ``max_examples``
    hypothesis states.

    Returns:
        An :class:`InvariantsReport` (``.assert_ok()`` raises AssertionError with the state and plan).

    Raises:
        ModelError: a bad policy, model, engine or envelope.
    """
    pol, env = _judge_args(policy, model, engine, envelope)
    failure = invariants_failure(pol)
    found, stats = _search(env, states(env), failure, max_examples, seed, exhaustive, structured)
    return InvariantsReport("invariants", _name(pol), found is None, stats.total, max_examples, seed,
                            None if found is None else failure(found), stats, env)


def check_work_conserving(policy: Any, model: Any = None, *, engine: str | None = None,
                          envelope: Envelope | None = None, max_examples: int = DEFAULT_MAX_EXAMPLES, seed: int = 0,
                          exhaustive: bool = True, structured: bool = True) -> WorkConservingReport:
    """Search for a state where the policy is not work-conserving (eqs. 8–9, see the module text).

    A batch must hold min(budget, demand) tokens, budget = min(b_max, KV free), demand =
    Σ_i (p_i + 1{p_i = 0}); with k_max a batch giving tokens to k_max requests passes. A plan that
    breaks the engine's rules counts as a failure too (there is no batch to judge). The states: those
    of the envelope (``model`` / ``engine``: that engine's; ``envelope``; default: every engine up to
    real scale) — the corner exhaustively, the structured extreme states, ``max_examples`` hypothesis
    states; a failure is reported in its minimal form.

    Returns:
        A :class:`WorkConservingReport`: ``work_conserving`` and, when False, the minimal
        counterexample (state, plan, demand, batch tokens); ``declared``: the policy's claim;
        ``search``: what a YES rests on.

    Raises:
        ModelError: a bad policy, model, engine or envelope.
    """
    pol, env = _judge_args(policy, model, engine, envelope)
    failure = wc_failure(pol)
    found, stats = _search(env, states(env), failure, max_examples, seed, exhaustive, structured)
    return WorkConservingReport("work-conserving", _name(pol), found is None, stats.total, max_examples, seed,
                                None if found is None else failure(found), stats, env, declared_work_conserving(pol))


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


def check_matches(vectorized: Any, scalar: Any = None, model: Any = None, *, engine: str | None = None,
                  envelope: Envelope | None = None, max_examples: int = 200, seed: int = 0) -> MatchReport:
    """Check that a vectorized rule gives the scalar plan on generated batches of states.

    ``vectorized``: an object with ``plan_vectorized(B, state)`` (a plug-in, or a built-in name /
    PolicySpec: the simulator's rule) or such a callable; ``scalar`` (default: ``vectorized``
    itself): the policy whose ``plan(view)`` is the reference. Each generated batch is 1–4 states of
    the envelope (as :func:`check_work_conserving`) sharing b_max and k_max, laid out as
    :class:`~fluidllm.policies.rules.SlotState` arrays (R, W) on the NumPy backend with empty slots in
    between (as completed requests leave them in the simulator); ``plan_vectorized`` returns
    ``(prefill, decode)`` (R, W) arrays (further outputs are ignored), which must equal the scalar
    plans slot for slot.

    Raises:
        ModelError: ``vectorized`` has no ``plan_vectorized``; a bad policy, model or envelope.
    """
    import numpy as np

    env0 = resolve_envelope(model, engine, envelope)
    vec_obj = vectorized if callable(getattr(vectorized, "plan_vectorized", None)) or callable(vectorized) \
        else as_policy(vectorized, env0.class_names)
    if not callable(getattr(vec_obj, "plan_vectorized", None)) and not callable(vec_obj):
        raise ModelError("vectorized", vectorized, "must have plan_vectorized(B, state) or be such a function")
    scal, env = _prepare(vectorized if scalar is None else scalar, env0)
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

    strat = st.tuples(view_batches(env), st.lists(st.booleans(), max_size=6))
    tr = _Tracker()

    def fails(case: Any) -> bool:
        tr.see(case[0][0], "random")
        return failure(case) is not None

    cfg = settings(max_examples=max_examples, database=None, deadline=None, print_blob=False,
                   suppress_health_check=list(HealthCheck))
    try:
        found = find(strat, fails, settings=cfg, random=random.Random(seed))
    except NoSuchExample:
        found = None
    stats = tr.freeze()
    return MatchReport("vectorized = scalar", _name(scal), found is None, stats.total, max_examples, seed,
                       None if found is None else failure(found), stats, env)
