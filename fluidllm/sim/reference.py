"""The reference (oracle) simulator of one LLM engine: plain Python, one request at a time.

Written from the model text (``design.md``, "The model") so that a reader can check it line by
line; it is slow on purpose and exists only as the oracle that the vectorized core must match
batch for batch on the same draws (:func:`fluidllm.sim.draws.draw_requests`).

Time model. Time is continuous (ms). The engine runs batches back to back. A request that
arrives during a batch becomes eligible at the next batch boundary (an arrival exactly at a
boundary is eligible at it); an idle engine starts a batch at the instant work arrives. At every
boundary: (1) requests that arrived by then join the waiting queue (FCFS); (2) waiting requests
are admitted (become resident) in FCFS order while fewer than ``max_resident_requests`` are
resident; (2b) with a KV cap, requests are preempted (rule K3 below); (3) the policy plans the
batch over the resident requests in FCFS order (with a KV cap, rule K5 may preempt and plan
again); (4) the engine checks the plan (:func:`check_plan`) and runs it for
``batch_time.batch_ms(P, D, K)`` ms, with P the prefill tokens, D the decode tokens and K the
summed KV context (the kv of rule K1: tokens processed before this batch, prefill and decode,
since the last restart) of the requests given a decode token; (5) at the batch's end, requests
with nothing left complete and leave.

Requests. v_p >= 1 prefill tokens, then v_d >= 0 decode tokens; all prefill before any decode;
at most one decode token per request per batch; a request whose prefill ends in batch n gets its
first decode token in batch n+1 at the earliest; with v_d = 0 it completes with its last prefill
token. A request is *running* once it has been given tokens, until it is preempted (below); an
initial request starts running if its prefill_left = 0 or its kv_context_tokens > 0.

Policies (Li, Dai, Peng, arXiv 2504.07347, Table 1 and §3; built from three fill primitives over
the resident requests in FCFS order, see ``style.md``):

* ``fastertransformer``: any request decoding → fill decodes; else fill whole prefills (stylised).
* ``fastertransformer-static``: request-level static batching: a group of waiting requests whose
  whole prompts fit the budget and k_max runs its prefill, then decodes until all of its members
  finish; the others wait. Requests already decoding at time 0 (``initial``) form the first group.
* ``vllm`` (v0): any prefill waiting → fill whole prefills; if that planned nothing (the first
  whole prompt does not fit the KV free space, rule K4) or no prefill waits → fill decodes.
* ``orca``: fill prefill chunks, then fill decodes into what is left.
* ``sarathi``: fill decodes, then fill prefill chunks (as few requests as possible).
* ``kfcfs``: one FCFS walk giving each request its decode token or as much prefill as fits.
* ``vllm-v1``: first a K-FCFS walk over the *running* requests in FCFS order (each gets its decode
  token if decoding, or a prefill chunk min(prefill_left, budget left, chunk_size) if it has
  prefill left), stopping when the batch is full (budget or k_max slots); then fill prefill chunks
  (FCFS, honouring ``chunk_size``, as Orca and Sarathi) over the requests that are not running.
  Its max_num_seqs is the engine's ``max_resident_requests`` (admission).

Flags: ``split_long_prompts`` (FT, FT-static, vLLM; default False): whole prompts only, and a
prompt longer than the budget can never run — such a request is set aside when it arrives,
listed in ``ReferenceRun.unschedulable`` and never served (it stays in the system: with it the
policy's capacity for its class is zero), but it blocks nobody (like vLLM v0, which ignores
over-long prompts). True: a prompt is served in pieces of at most ``token_budget`` tokens (a piece
is "whole" for the fill rule). Without the flag, the one prompt that can still be longer than the
budget is a recompute after a KV preemption (rule K3); it too is served in budget-sized pieces.
``chunk_size`` (Orca, Sarathi, vLLM v1): at most that many prefill tokens per request per batch.

KV memory (only when ``engine.kv_capacity_tokens`` = M is set; every policy):

* K1. Each request holds ``kv`` KV tokens: the tokens it has processed (prefill and decode) since
  it last (re)started; an initial request starts with kv = its kv_context_tokens (default 0). A
  request's KV is freed when it completes. U = Σ kv over the resident requests. (Without a cap kv
  is tracked the same way; it is the K of the batch time.)
* K2. Unschedulable: a request with v_p + v_d > M can never finish; when it arrives it is set aside
  exactly like an over-long whole prompt (listed in ``ReferenceRun.unschedulable``, never served,
  stays in the system, blocks nobody). For an initial request the test is prefill_left +
  decode_left + kv_context_tokens > M.
* K3. Preemption, at every boundary after arrivals and admission and before planning: let
  needed = min(#decoding resident requests, token_budget, max_batch_requests if set), where
  decoding means prefill_left = 0 and decode_left > 0. While M − U < needed and some resident
  request holds kv > 0: preempt the resident request with kv > 0 that is LAST in FCFS order
  (largest id): prefill_left += kv (it must recompute everything it had processed: prompt and the
  decode tokens generated so far), kv = 0, running = False; it keeps its place in FCFS order and
  stays resident (counts toward max_resident_requests); decode_left and first_token_ms are
  unchanged. Recompute needed (a preempted decoder is no longer decoding) and U, and repeat.
  ``ReferenceRun.preemptions`` counts preemptions and ``ReferenceRun.recomputed_tokens`` sums the
  kv they freed; ``Batch.preempted`` lists the ids preempted at the boundary of that batch.
* K4. The KV free space caps the batch like a second token budget: with kv_free = M − U at
  planning (``View.kv_free_tokens``), the fill primitives use min(token_budget − tokens so far,
  kv_free − tokens so far) (every planned token adds one KV token), and :func:`check_plan` also
  rejects a plan of more than kv_free tokens. ``Batch.kv_used_before`` records U at planning.
* K5. Deadlock breaking: if the policy then plans nothing although requests are resident (only the
  KV cap can cause that), preempt as in K3 the resident request with kv > 0 that is last in FCFS
  order, and plan again; repeat until the plan is not empty. (For the chunked policies — orca,
  sarathi, kfcfs, vllm-v1 — this happens only when nothing is decoding and U = M: it amounts to
  needed = 1 in K3. For the whole-prompt policies it frees room for the first whole prompt.)
* K6. After a batch: kv += p + d for every planned request, and every planned request is running.

Token accounting: tokens served + tokens left = tokens arrived + recomputed tokens.

Plug-in policies (``python``, :mod:`fluidllm.policies.plugin`) run here as they are: their
``plan(view)`` is called at every boundary and the plan checked like any other.

Not implemented here (raise :class:`NotImplementedError`): the policies ``priority``, ``wait`` and
``nested-wait``, and a ``vllm-v1`` ``preemption`` mode other than ``recompute``.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from ..errors import ModelError, finite_number, integer, require
from ..model.engine import Engine
from ..model.policy import PolicySpec
from ..model.workload import Workload
from .draws import Requests, draw_requests, parse_initial

__all__ = [
    "RequestView", "View", "Plan", "PlanViolation", "plan_batch", "check_plan", "Batch",
    "ReferenceRun", "simulate_reference", "run_reference", "REFERENCE_POLICIES",
]

#: A batch plan: request id -> (prefill tokens, decode tokens), in the order the policy filled it.
Plan = dict[int, tuple[int, int]]

#: The policies this simulator runs.
REFERENCE_POLICIES = ("fastertransformer", "fastertransformer-static", "vllm", "orca", "sarathi", "kfcfs",
                      "vllm-v1", "python")
_WHOLE_PROMPTS = ("fastertransformer", "fastertransformer-static", "vllm")


class PlanViolation(RuntimeError):
    """A policy produced a batch plan that breaks the model's rules (a bug in the policy)."""


# ------------------------------------------------------------------------------- the policy view


@dataclass(frozen=True)
class RequestView:
    """One resident request as a policy sees it (read-only).

    ``running``: it has been given tokens and not been preempted since (see the module text).
    ``kv_tokens``: the KV cache it holds now (tokens processed since it last started; 0 without a
    KV model) — what a memory-aware policy needs to foresee its peak use.
    """

    id: int
    prefill_left: int
    decode_left: int
    klass: int = 0
    arrival_index: int = 0
    running: bool = False
    kv_tokens: int = 0

    @property
    def decoding(self) -> bool:
        """Prefill done and decode tokens left: may take one decode token in this batch."""
        return self.prefill_left == 0 and self.decode_left > 0


@dataclass(frozen=True)
class View:
    """What a policy sees at a batch boundary: the limits and the resident requests in FCFS order.

    ``static_group`` is the engine's memory for ``fastertransformer-static``: the ids of the
    current static batch still resident (empty: none running). ``kv_free_tokens``: M − U, the KV
    tokens this batch may add (rule K4; None: no KV cap).
    """

    token_budget: int
    requests: tuple[RequestView, ...]
    max_batch_requests: int | None = None
    max_resident_requests: int | None = None
    kv_capacity_tokens: int | None = None
    static_group: frozenset[int] = frozenset()
    kv_free_tokens: int | None = None

    @property
    def demand_tokens(self) -> int:
        """Σ_i (p_i + 1{p_i = 0}) over the resident requests (Li et al., eqs. 8–9)."""
        return sum(r.prefill_left + (1 if r.prefill_left == 0 else 0) for r in self.requests)


# ------------------------------------------------------------------------- the three fill primitives


class _Fill:
    """A batch being filled: budget and request slots left, and the plan so far.

    The budget is min(token_budget, kv_free_tokens) tokens (rule K4: every planned token adds one
    KV token).
    """

    def __init__(self, view: View) -> None:
        self.budget = view.token_budget
        if view.kv_free_tokens is not None:
            self.budget = min(self.budget, view.kv_free_tokens)
        k = view.max_batch_requests
        self.slots = view.token_budget if k is None else k
        self.plan: Plan = {}

    def full(self) -> bool:
        return self.budget <= 0 or self.slots <= 0

    def give(self, r: RequestView, prefill: int, decode: int) -> None:
        self.plan[r.id] = (prefill, decode)
        self.budget -= prefill + decode
        self.slots -= 1

    def decodes(self, requests: Sequence[RequestView]) -> None:
        """Fill decodes: one token per decoding request, FCFS, while budget and cap allow."""
        for r in requests:
            if r.decoding and r.id not in self.plan:
                if self.full():
                    return
                self.give(r, 0, 1)

    def whole_prefills(self, requests: Sequence[RequestView], piece: int | None) -> None:
        """Fill whole prefills: whole prompts FCFS while they fit; stop at the first that does not.

        ``piece``: the token budget (a prompt longer than it is taken in pieces of at most that
        size: with ``split_long_prompts``, or a recompute after a KV preemption); None: the whole
        remaining prompt.
        """
        for r in requests:
            if r.prefill_left > 0 and r.id not in self.plan:
                need = r.prefill_left if piece is None else min(r.prefill_left, piece)
                if self.slots == 0 or need > self.budget:
                    return
                self.give(r, need, 0)

    def prefill_chunks(self, requests: Sequence[RequestView], chunk: int | None) -> None:
        """Fill prefill chunks: as much as fits from the oldest prompt before the next (FCFS)."""
        for r in requests:
            if r.prefill_left > 0 and r.id not in self.plan:
                if self.full():
                    return
                n = min(r.prefill_left, self.budget, chunk if chunk is not None else r.prefill_left)
                self.give(r, n, 0)


def plan_batch(policy: PolicySpec, view: View) -> Plan:
    """The batch a policy plans for ``view`` (may be empty only when nothing is resident).

    Raises:
        NotImplementedError: a policy outside :data:`REFERENCE_POLICIES`.
    """
    name = policy.name
    reqs = view.requests
    f = _Fill(view)
    # Whole prompts, in budget-sized pieces when longer than the budget: with split_long_prompts,
    # or (without it) a recompute after a KV preemption; other over-long prompts never get here.
    piece = view.token_budget
    if name == "fastertransformer":
        if any(r.decoding for r in reqs):
            f.decodes(reqs)
        else:
            f.whole_prefills(reqs, piece)
    elif name == "fastertransformer-static":
        group = [r for r in reqs if r.id in view.static_group]
        if not group and any(r.decoding for r in reqs):  # requests decoding at time 0 form a group
            f.decodes(reqs)
        elif not group:                                 # start a new static batch
            f.whole_prefills(reqs, piece)
        elif any(r.prefill_left > 0 for r in group):    # the group's prefill (pieces if split)
            f.whole_prefills(group, piece)
        else:                                           # decode until every member finishes
            f.decodes(group)
    elif name == "vllm":
        if any(r.prefill_left > 0 for r in reqs):
            f.whole_prefills(reqs, piece)
        if not f.plan:          # no prefill waits, or the first whole prompt does not fit the KV free space
            f.decodes(reqs)
    elif name == "orca":
        f.prefill_chunks(reqs, policy.flag("chunk_size"))
        f.decodes(reqs)
    elif name == "sarathi":
        f.decodes(reqs)
        f.prefill_chunks(reqs, policy.flag("chunk_size"))
    elif name == "kfcfs":
        for r in reqs:
            if f.full():
                break
            if r.decoding:
                f.give(r, 0, 1)
            elif r.prefill_left > 0:
                f.give(r, min(r.prefill_left, f.budget), 0)
    elif name == "vllm-v1":
        chunk = policy.flag("chunk_size")
        for r in reqs:                                  # K-FCFS over the running requests
            if not r.running:
                continue
            if f.full():
                break
            if r.decoding:
                f.give(r, 0, 1)
            elif r.prefill_left > 0:
                f.give(r, min(r.prefill_left, f.budget, chunk if chunk is not None else r.prefill_left), 0)
        f.prefill_chunks([r for r in reqs if not r.running], chunk)  # then new (or preempted) prompts
    elif name == "python":
        from ..policies.plugin import plan_with, policy_object

        return plan_with(policy_object(policy), view)
    else:
        raise NotImplementedError(
            f"policy {name!r} is not in the reference simulator; it runs {list(REFERENCE_POLICIES)}")
    return f.plan


def _is_int(x: object) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def check_plan(view: View, plan: Mapping[int, tuple[int, int]], where: str = "") -> None:
    """Check a batch plan against the model's rules; raise :class:`PlanViolation` on the first break.

    Checked: the resident cap; every planned id is resident and listed once with integer tokens
    (prefill, decode), not both zero; 0 <= prefill <= prefill left; decode in {0, 1} and <= decode
    left; no decode token in the batch where the request's prefill runs or ends (which also rules
    out decode before prefill is done); total tokens <= ``token_budget`` and <= ``kv_free_tokens``
    (when set); requests given tokens <= ``max_batch_requests``.
    """
    at = f" ({where})" if where else ""

    def fail(msg: str) -> None:
        raise PlanViolation(msg + at)

    resident = {}
    for r in view.requests:
        if r.id in resident:
            fail(f"request {r.id} is resident twice")
        resident[r.id] = r
    cap = view.max_resident_requests
    if cap is not None and len(resident) > cap:
        fail(f"{len(resident)} resident requests exceed max_resident_requests = {cap}")
    total = 0
    for rid, tokens in plan.items():
        if rid not in resident:
            fail(f"request {rid} is planned but not resident")
        r = resident[rid]
        if not (isinstance(tokens, tuple) and len(tokens) == 2 and all(_is_int(x) for x in tokens)):
            fail(f"request {rid}: plan entry {tokens!r} is not (prefill tokens, decode tokens) as integers")
        p, d = int(tokens[0]), int(tokens[1])
        if p == 0 and d == 0:
            fail(f"request {rid} is planned with no tokens")
        if not 0 <= p <= r.prefill_left:
            fail(f"request {rid}: {p} prefill tokens, but 0..{r.prefill_left} are left")
        if not 0 <= d <= min(1, r.decode_left):
            fail(f"request {rid}: {d} decode tokens; at most one per batch and {r.decode_left} left")
        if d > 0 and p > 0:
            fail(f"request {rid}: a decode token in the batch where its prefill runs")
        if d > 0 and r.prefill_left > 0:
            fail(f"request {rid}: a decode token before its prefill is done ({r.prefill_left} left)")
        total += p + d
    if total > view.token_budget:
        fail(f"{total} tokens exceed token_budget = {view.token_budget}")
    if view.kv_free_tokens is not None and total > view.kv_free_tokens:
        fail(f"{total} tokens exceed the KV free space kv_free_tokens = {view.kv_free_tokens}")
    k = view.max_batch_requests
    if k is not None and len(plan) > k:
        fail(f"{len(plan)} requests exceed max_batch_requests = {k}")


# ------------------------------------------------------------------------------------- the result


@dataclass(frozen=True)
class Batch:
    """One batch of the log.

    Attributes:
        index: 0, 1, ... in order.
        start_ms, end_ms: when it ran.
        tokens: (request id, prefill tokens, decode tokens) per planned request, by id (FCFS).
        resident_before: (request id, prefill left, decode left) of every resident request at the
            boundary where the batch was planned, by id: the state the policy saw.
        prefill_tokens, decode_tokens: P and D.
        kv_context_tokens: K, the summed KV context of the requests given a decode token.
        kv_used_before: U, the KV tokens held by the resident requests when the batch was planned
            (after the preemptions); 0 without a KV cap.
        preempted: ids preempted at the boundary where the batch was planned, in order (rules K3
            and K5); empty without a KV cap.
    """

    index: int
    start_ms: float
    end_ms: float
    tokens: tuple[tuple[int, int, int], ...]
    resident_before: tuple[tuple[int, int, int], ...]
    prefill_tokens: int
    decode_tokens: int
    kv_context_tokens: int
    kv_used_before: int = 0
    preempted: tuple[int, ...] = ()

    @property
    def n_tokens(self) -> int:
        return self.prefill_tokens + self.decode_tokens

    @property
    def demand_tokens(self) -> int:
        """Σ_i (p_i + 1{p_i = 0}) over ``resident_before`` (the work-conservation threshold)."""
        return sum(p + (1 if p == 0 else 0) for _, p, _ in self.resident_before)


def _ro(a: Sequence[float] | np.ndarray, dtype: type) -> np.ndarray:
    out = np.array(a, dtype=dtype)
    out.setflags(write=False)
    return out


@dataclass(frozen=True, eq=False)
class ReferenceRun:
    """One replication of the reference simulator.

    Requests are numbered ``0 .. n_initial - 1`` for those present at time 0 (``initial``), then
    ``n_initial + i`` for ``requests[i]``; per-request arrays use this numbering. For the initial
    requests ``arrival_ms`` is 0, ``prefill`` / ``decode`` are what was left at time 0, and
    ``first_token_ms`` is their first decode token *in this run* (not a TTFT).

    Attributes:
        horizon_ms: the horizon asked for.
        end_ms: where the run stopped: the first batch boundary >= horizon (or the horizon, when
            the engine was idle there).
        batches: the batch log.
        first_token_ms: end of the batch holding the request's first decode token (v_d = 0: the
            batch finishing its prefill); NaN if none yet.
        completion_ms: end of the batch finishing the request; NaN if not finished.
        resident: (id, prefill left, decode left) of the requests resident at ``end_ms``, FCFS.
        waiting: (id, prefill left, decode left) of those arrived by ``end_ms`` but not admitted.
        unschedulable: ids of requests whose prompt is longer than the token budget under a
            whole-prompt policy, or (with a KV cap M) whose v_p + v_d exceeds M (initial: prefill
            left + decode left + KV context): never served, still in the system.
        preemptions: KV preemptions (rules K3 and K5); 0 without a KV cap.
        recomputed_tokens: Σ of the kv freed by those preemptions: tokens served a second time.
            Tokens served + tokens left = tokens arrived + recomputed tokens.
    """

    policy: str
    token_budget: int
    horizon_ms: float
    end_ms: float
    batches: tuple[Batch, ...]
    n_initial: int
    arrival_ms: np.ndarray
    prefill: np.ndarray
    decode: np.ndarray
    klass: np.ndarray
    first_token_ms: np.ndarray
    completion_ms: np.ndarray
    resident: tuple[tuple[int, int, int], ...]
    waiting: tuple[tuple[int, int, int], ...]
    unschedulable: tuple[int, ...]
    preemptions: int = 0
    recomputed_tokens: int = 0

    def __repr__(self) -> str:
        return (f"ReferenceRun(policy={self.policy!r}, end_ms={self.end_ms:.6g}, batches={len(self.batches)}, "
                f"arrived={self.n_arrived}, completed={self.n_completed}, resident={len(self.resident)}, "
                f"waiting={len(self.waiting)}, unschedulable={self.n_unschedulable}, "
                f"preemptions={self.preemptions})")

    @property
    def n_requests(self) -> int:
        return int(self.arrival_ms.size)

    @property
    def n_arrived(self) -> int:
        """Requests present by ``end_ms`` (initial ones included)."""
        return int(np.count_nonzero(self.arrival_ms <= self.end_ms))

    @property
    def n_completed(self) -> int:
        return int(np.count_nonzero(~np.isnan(self.completion_ms)))

    @property
    def n_unschedulable(self) -> int:
        return len(self.unschedulable)

    @property
    def tokens_arrived(self) -> int:
        """Σ (v_p + v_d) over the requests present by ``end_ms``."""
        m = self.arrival_ms <= self.end_ms
        return int(self.prefill[m].sum() + self.decode[m].sum())

    @property
    def tokens_served(self) -> int:
        return sum(b.n_tokens for b in self.batches)

    @property
    def tokens_left(self) -> int:
        """Tokens still owed at ``end_ms``: resident, waiting and unschedulable requests (a preempted
        request owes its recompute too: served + left = arrived + ``recomputed_tokens``)."""
        left = sum(p + d for _, p, d in self.resident) + sum(p + d for _, p, d in self.waiting)
        return left + sum(int(self.prefill[i] + self.decode[i]) for i in self.unschedulable)

    def mean_in_system(self, t0_ms: float = 0.0, t1_ms: float | None = None) -> float:
        """Time average over [t0, t1] (default t1 = ``end_ms``) of the number of requests in the
        system: arrived (from their arrival instant, not their first boundary) and not completed.
        """
        t1 = self.end_ms if t1_ms is None else float(t1_ms)
        require(t1 > t0_ms, "t1_ms", t1, f"must be > t0_ms = {t0_ms}")
        done = np.where(np.isnan(self.completion_ms), np.inf, self.completion_ms)
        stay = np.minimum(done, t1) - np.maximum(self.arrival_ms, t0_ms)
        return float(np.sum(np.maximum(stay, 0.0)) / (t1 - t0_ms))


# ------------------------------------------------------------------------------------ the engine


@dataclass
class _Request:
    """The mutable state of one request during the run."""

    id: int
    arrival_ms: float
    klass: int
    prefill_total: int
    decode_total: int
    prefill_left: int
    decode_left: int
    kv: int                      # K1: tokens processed since the last (re)start (initial: its KV context)
    running: bool                # given tokens and not preempted since
    first_token_ms: float = math.nan
    completion_ms: float = math.nan

    @property
    def decoding(self) -> bool:
        return self.prefill_left == 0 and self.decode_left > 0

    def view(self) -> RequestView:
        return RequestView(self.id, self.prefill_left, self.decode_left, self.klass, self.id, self.running, self.kv)


def _initial_requests(initial: Sequence[Sequence[int]] | None) -> list[_Request]:
    return [_Request(i, 0.0, -1, p, d, p, d, kv=ctx, running=(p == 0 or ctx > 0))
            for i, (p, d, ctx) in enumerate(parse_initial(initial))]


def simulate_reference(engine: Engine, requests: Requests, horizon_ms: float,
                       initial: Sequence[Sequence[int]] | None = None) -> ReferenceRun:
    """Run one engine on ``requests`` until the first batch boundary >= ``horizon_ms``.

    ``initial``: requests present at time 0, each ``(prefill_left, decode_left)`` or
    ``(prefill_left, decode_left, kv_context_tokens)`` (KV context held before time 0, default 0),
    ahead of every drawn request in FCFS order (class index -1). Every plan is checked with
    :func:`check_plan`. With ``engine.kv_capacity_tokens`` set, rules K1–K6 of the module text apply.

    Raises:
        ModelError: a bad engine, requests, horizon or initial entry; a batch time that is not a
            finite positive number of ms.
        NotImplementedError: a policy outside :data:`REFERENCE_POLICIES` (``priority``, ``wait``,
            ``nested-wait``), or a ``vllm-v1`` preemption mode other than ``recompute``.
        PlanViolation: a policy broke the model's rules (a bug).
    """
    require(isinstance(engine, Engine), "engine", engine, "must be an Engine")
    require(isinstance(requests, Requests), "requests", requests, "must be a Requests (see draw_requests)")
    horizon_ms = finite_number(horizon_ms, "horizon_ms", minimum=0)
    policy = engine.policy
    if policy.name not in REFERENCE_POLICIES:
        raise NotImplementedError(f"engines.{engine.name}.policy = {policy.name!r}: the reference simulator "
                                  f"runs only {list(REFERENCE_POLICIES)} for now")
    if policy.name == "vllm-v1" and policy.flag("preemption") != "recompute":
        raise NotImplementedError(f"engines.{engine.name}.policy.preemption = {policy.flag('preemption')!r}: "
                                  "the reference simulator implements only 'recompute'")
    b_max = engine.token_budget
    k_max = engine.max_batch_requests
    resident_cap = engine.max_resident_requests
    kv_cap = engine.kv_capacity_tokens                  # M, or None: no KV limit
    whole_prompts_only = policy.name in _WHOLE_PROMPTS and not policy.flag("split_long_prompts")

    # Every request, initial ones first: ids are positions in this list and the FCFS order.
    reqs = _initial_requests(initial)
    n_initial = len(reqs)
    for i in range(len(requests)):
        p, d = int(requests.prefill[i]), int(requests.decode[i])
        reqs.append(_Request(n_initial + i, float(requests.arrival_ms[i]), int(requests.klass[i]),
                             p, d, p, d, kv=0, running=False))

    not_arrived = deque(range(n_initial, len(reqs)))   # by arrival time (requests are sorted)
    waiting: deque[int] = deque()                       # arrived, not admitted, FCFS
    resident: list[int] = []                            # admitted, FCFS (ids ascending)
    unschedulable: list[int] = []
    static_group: set[int] = set()                      # fastertransformer-static's running batch
    batches: list[Batch] = []
    preemptions = 0
    recomputed_tokens = 0

    def arrive(i: int) -> None:
        r = reqs[i]
        if whole_prompts_only and r.prefill_left > b_max:
            unschedulable.append(i)                     # can never fit: reported, never served
        elif kv_cap is not None and r.prefill_left + r.decode_left + r.kv > kv_cap:
            unschedulable.append(i)                     # K2: can never fit the KV memory
        else:
            waiting.append(i)

    def kv_used() -> int:                               # K1: U
        return sum(reqs[i].kv for i in resident)

    def preempt_last(preempted: list[int]) -> bool:
        """Preempt the resident request with kv > 0 that is last in FCFS order (K3); False if none."""
        nonlocal preemptions, recomputed_tokens
        holders = [i for i in resident if reqs[i].kv > 0]
        if not holders:
            return False
        r = reqs[max(holders)]
        r.prefill_left += r.kv                          # recompute the prompt and the decode tokens so far
        recomputed_tokens += r.kv
        preemptions += 1
        r.kv = 0
        r.running = False
        preempted.append(r.id)
        return True

    for i in range(n_initial):
        arrive(i)

    t = 0.0
    while True:
        # (1) requests that arrived by this boundary become eligible.
        while not_arrived and reqs[not_arrived[0]].arrival_ms <= t:
            arrive(not_arrived.popleft())
        # (2) admission, FCFS, up to the resident cap.
        while waiting and (resident_cap is None or len(resident) < resident_cap):
            resident.append(waiting.popleft())
        # Stop at the first boundary at or after the horizon.
        if t >= horizon_ms:
            break
        # (2b) K3: preempt the last KV holder while the decoding requests lack room.
        preempted: list[int] = []
        if kv_cap is not None:
            while True:
                n_decoding = sum(1 for i in resident if reqs[i].decoding)
                needed = min(n_decoding, b_max, k_max if k_max is not None else n_decoding)
                if kv_cap - kv_used() >= needed or not preempt_last(preempted):
                    break
        # (3) the policy plans over the resident requests; (4) the engine checks the plan.
        while True:
            kv_free = None if kv_cap is None else kv_cap - kv_used()
            view = View(b_max, tuple(reqs[i].view() for i in resident), k_max, resident_cap, kv_cap,
                        frozenset(static_group), kv_free)
            plan = plan_batch(policy, view)
            # K5: an empty plan with requests resident can only come from the KV cap: free room, replan.
            if plan or not resident or kv_cap is None or not preempt_last(preempted):
                break
        where = f"batch {len(batches)} at {t:g} ms, policy {policy.name}"
        if policy.name != "python":             # a plug-in's plan was checked as it was made (plan_with)
            check_plan(view, plan, where)
        if not plan:
            if resident:
                raise PlanViolation(f"empty batch while {len(resident)} requests are resident ({where})")
            # Idle: the next batch starts at the instant work arrives (or the run ends at the horizon).
            if not_arrived and reqs[not_arrived[0]].arrival_ms < horizon_ms:
                t = max(t, reqs[not_arrived[0]].arrival_ms)
            else:
                t = horizon_ms
            continue
        if policy.name == "fastertransformer-static" and not view.static_group:
            static_group = set(plan)                    # a new static batch starts
        # (4) run it: P prefill tokens, D decode tokens, K KV context of the decoding requests.
        P = sum(p for p, _ in plan.values())
        D = sum(d for _, d in plan.values())
        K = sum(reqs[i].kv for i, (_, d) in plan.items() if d > 0)
        dt = float(np.asarray(engine.batch_time.batch_ms(P, D, K)))
        if not (math.isfinite(dt) and dt > 0):
            raise ModelError(f"engines.{engine.name}.batch_time", dt,
                             f"must give a finite positive time; got it for P={P}, D={D}, K={K}")
        start, end = t, t + dt
        batches.append(Batch(
            index=len(batches), start_ms=start, end_ms=end,
            tokens=tuple((i, int(p), int(d)) for i, (p, d) in sorted(plan.items())),
            resident_before=tuple((r.id, r.prefill_left, r.decode_left) for r in view.requests),
            prefill_tokens=P, decode_tokens=D, kv_context_tokens=K,
            kv_used_before=0 if kv_free is None else kv_cap - kv_free, preempted=tuple(preempted)))
        # (5) at the batch's end: tokens are served (K6), first tokens and completions recorded.
        for i, (p, d) in plan.items():
            r = reqs[i]
            r.prefill_left -= p
            r.decode_left -= d
            r.kv += p + d
            r.running = True
            if d > 0 and math.isnan(r.first_token_ms):
                r.first_token_ms = end                  # its first decode token
            if r.prefill_left == 0 and r.decode_left == 0:
                if math.isnan(r.first_token_ms):
                    r.first_token_ms = end              # v_d = 0: the batch finishing its prefill
                r.completion_ms = end
                r.kv = 0                                # its KV is freed
                resident.remove(i)
                static_group.discard(i)
        t = end

    end_ms = t
    return ReferenceRun(
        policy=policy.name, token_budget=b_max, horizon_ms=horizon_ms, end_ms=end_ms,
        batches=tuple(batches), n_initial=n_initial,
        arrival_ms=_ro([r.arrival_ms for r in reqs], float),
        prefill=_ro([r.prefill_total for r in reqs], np.int64),
        decode=_ro([r.decode_total for r in reqs], np.int64),
        klass=_ro([r.klass for r in reqs], np.int64),
        first_token_ms=_ro([r.first_token_ms for r in reqs], float),
        completion_ms=_ro([r.completion_ms for r in reqs], float),
        resident=tuple((i, reqs[i].prefill_left, reqs[i].decode_left) for i in resident),
        waiting=tuple((i, reqs[i].prefill_left, reqs[i].decode_left) for i in waiting),
        unschedulable=tuple(unschedulable), preemptions=preemptions, recomputed_tokens=recomputed_tokens)


def run_reference(engine: Engine, workloads: Sequence[Workload], horizon_ms: float,
                  seed: np.random.Generator | int) -> ReferenceRun:
    """Draw requests for ``workloads`` over [0, horizon_ms) with ``seed`` and run the reference."""
    return simulate_reference(engine, draw_requests(workloads, horizon_ms, seed), horizon_ms)
