"""Exact discrete-time Markov chains of one engine at batch epochs (small instances).

The model (what :func:`build_chain` builds, exactly)
----------------------------------------------------

Time is slotted by batches: step n is the n-th batch boundary. The batch *time* does not enter the
state; it enters only through the per-step arrival law (e.g. Poisson(λ·t̄) for a mean batch time t̄)
and, in :func:`solve`, through the stationary mean step time used to turn "per batch" into "per ms".

* **State.** X_n = ((p_1, d_1), ..., (p_m, d_m)): the requests in the system at boundary n, in FCFS
  (arrival) order, with p_i the prefill tokens left and d_i the decode tokens left. With a
  geometric decode law (:class:`GeometricDecode`) d_i is a *phase flag* in {0, 1}: 1 = the decode
  phase has not ended (the request will decode, or is decoding), 0 = no decode phase (v_d = 0).
  0 <= m <= ``max_requests``; the empty tuple () is the empty system.
* **Step.** At boundary n the policy plans one batch with
  :func:`fluidllm.sim.reference.plan_batch` (the same rules as the simulators) on the view
  ``View(token_budget, requests, max_batch_requests)`` whose requests are the first
  min(m, ``max_resident_requests``) entries of X_n (admission is FCFS, so the resident requests are
  always a prefix of the FCFS order), with ids 0..m-1 and ``decode_left`` = d_i. The batch runs:
  every planned request loses its prefill tokens and, if given a decode token, one decode token.
  Bounded decode: a request with (0, 0) left completes at the end of the batch. Geometric decode:
  each request given a decode token completes with probability q, independently, and otherwise
  stays with (0, 1); a request whose prefill ends with flag 0 completes. Completed requests leave;
  the others keep their order.
* **Arrivals.** Then A_{n+1} new requests join at the tail, A i.i.d. over steps with pmf
  ``arrivals`` (:func:`poisson_arrivals`, :func:`bernoulli_arrivals`, or any finite pmf); each new
  request draws v_p from ``prefill`` and (independently) v_d from ``decode`` (a finite pmf, or
  :class:`GeometricDecode`: P(v_d = k) = q (1 − q)^(k−1), k >= 1, stored as the flag 1). A request
  with v_p = 0 is not allowed (a request starts with its prompt). Arrivals also happen during an
  idle step (empty system: the engine "runs" an empty batch of one slot).
* **Truncation.** If fewer than A slots are left below ``max_requests`` after the departures, the
  first ones that fit join and the rest are *lost*. The chain is the BFS closure of () under these
  transitions. ``truncation_mass`` (see :func:`solve`) = P_π(a step loses an arrival): a user must
  check that it is negligible before trusting the chain as a model of the untruncated system.
  Stability is a property of the untruncated chain only (every finite chain is positive
  recurrent): :func:`~fluidllm.markov.drift_certificate` and
  :func:`~fluidllm.markov.instability_witness` prove it with arguments that cover the states
  beyond the truncation, or say "truncated, not a proof".

Not modelled (raise :class:`~fluidllm.errors.ModelError`): a KV-cache cap (the state holds no KV
context), ``fastertransformer-static`` and ``vllm-v1`` (they need per-request memory outside this
state), and, for the whole-prompt policies without ``split_long_prompts``, prompts longer than the
budget (they could never be served).
"""
from __future__ import annotations

import itertools
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import scipy.sparse as sp

from ..errors import ModelError, finite_number, integer, require
from ..model.engine import Engine
from ..sim.reference import RequestView, View, plan_batch

__all__ = ["GeometricDecode", "Chain", "ChainResult", "build_chain", "solve", "stationary", "poisson_arrivals",
           "bernoulli_arrivals", "MARKOV_POLICIES"]

#: Policies whose next batch is a function of this chain's state alone.
#: ``python``: a plug-in whose plan is a function of the view alone (no memory between batches);
#: ids in its view are positions 0..m-1, so they are not stable across steps.
MARKOV_POLICIES = ("fastertransformer", "vllm", "orca", "sarathi", "kfcfs", "python")
_WHOLE_PROMPTS = ("fastertransformer", "vllm")
_PMF_TOL = 1e-9

State = tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class GeometricDecode:
    """Geometric decode length: after each decode token the request stops with probability ``q``.

    P(v_d = k) = q (1 − q)^(k − 1) for k >= 1; mean 1/q. In the chain state the decode field is a
    phase flag (1 = decode phase not over).
    """

    q: float

    def __post_init__(self) -> None:
        q = finite_number(self.q, "decode.q", minimum=0, strict=True)
        require(q <= 1, "decode.q", q, "must be in (0, 1]")
        object.__setattr__(self, "q", q)

    @property
    def mean(self) -> float:
        return 1.0 / self.q


def poisson_arrivals(mean: float, tail: float = 1e-12) -> dict[int, float]:
    """Poisson(``mean``) arrivals per batch, cut at the first n with P(A > n) < ``tail`` and
    renormalised (the cut mass, < ``tail``, is spread proportionally)."""
    mean = finite_number(mean, "arrivals.mean", minimum=0)
    tail = finite_number(tail, "arrivals.tail", minimum=0, strict=True)
    from scipy import stats

    n_max = int(stats.poisson.isf(tail, mean)) + 1 if mean > 0 else 0
    p = stats.poisson.pmf(np.arange(n_max + 1), mean)
    p = p / p.sum()
    return {n: float(x) for n, x in enumerate(p) if x > 0}


def bernoulli_arrivals(p: float) -> dict[int, float]:
    """At most one arrival per batch, with probability ``p``."""
    p = finite_number(p, "arrivals.p", minimum=0)
    require(p <= 1, "arrivals.p", p, "must be in [0, 1]")
    return {0: 1.0 - p, 1: p} if p > 0 else {0: 1.0}


def _pmf(x: Any, name: str, minimum: int) -> dict[int, float]:
    """A finite pmf {value: prob} (or a sequence of probs indexed from 0), validated."""
    if isinstance(x, Mapping):
        items = list(x.items())
    elif isinstance(x, Sequence) and not isinstance(x, str):
        items = list(enumerate(x))
    else:
        raise ModelError(name, x, "must be a pmf {value: probability} or a list of probabilities")
    require(len(items) > 0, name, x, "must not be empty")
    out: dict[int, float] = {}
    for k, v in items:
        kk = integer(k, f"{name}[{k!r}]", minimum=minimum)
        pv = finite_number(v, f"{name}[{k!r}]", minimum=0)
        if pv > 0:
            out[kk] = out.get(kk, 0.0) + pv
    total = sum(out.values())
    require(abs(total - 1.0) <= _PMF_TOL, name, x, f"probabilities must sum to 1 (got {total:.12g})")
    return {k: v / total for k, v in sorted(out.items())}


@dataclass(frozen=True, eq=False)
class Chain:
    """A built chain: states, sparse transition matrix and per-state quantities.

    Attributes:
        engine: the engine (policy, budget, caps, batch-time model).
        states: the states in BFS order (``states[0] == ()``), see the module text.
        index: state -> row.
        P: the transition matrix (CSR, rows sum to 1).
        prefill, decode, arrivals: the validated laws ({value: prob}; ``decode`` may be a
            :class:`GeometricDecode`).
        max_requests: the truncation level.
        n_requests: requests in system per state.
        tokens_left: V = Σ (p_i + d_i) per state (geometric decode: Σ p_i + d_i/q, the expected
            tokens left).
        batch_prefill, batch_decode: tokens of the batch planned in each state.
        completions: expected completions during the step from each state.
        loss_prob: P(the step loses an arrival | state).
        lost: expected arrivals lost during the step from each state.
        step_ms: time of the step's batch (ms) by the engine's batch-time model with no KV context;
            an idle step lasts ``idle_step_ms``.
        mean_arrivals: E[A], requests per step.
        mean_request_tokens: E[v_p + v_d].
        build_seconds: wall time of the build.
    """

    engine: Engine
    states: tuple[State, ...]
    index: dict[State, int] = field(repr=False)
    P: sp.csr_matrix = field(repr=False)
    prefill: dict[int, float]
    decode: dict[int, float] | GeometricDecode
    arrivals: dict[int, float]
    max_requests: int
    n_requests: np.ndarray = field(repr=False)
    tokens_left: np.ndarray = field(repr=False)
    batch_prefill: np.ndarray = field(repr=False)
    batch_decode: np.ndarray = field(repr=False)
    completions: np.ndarray = field(repr=False)
    loss_prob: np.ndarray = field(repr=False)
    lost: np.ndarray = field(repr=False)
    step_ms: np.ndarray = field(repr=False)
    idle_step_ms: float
    mean_arrivals: float
    mean_request_tokens: float
    build_seconds: float

    def __repr__(self) -> str:
        return (f"Chain(policy={self.engine.policy.name!r}, token_budget={self.engine.token_budget}, "
                f"states={self.n_states}, transitions={self.P.nnz}, max_requests={self.max_requests}, "
                f"build_seconds={self.build_seconds:.3g})")

    @property
    def n_states(self) -> int:
        return len(self.states)

    @property
    def geometric(self) -> bool:
        return isinstance(self.decode, GeometricDecode)

    @property
    def batch_tokens(self) -> np.ndarray:
        return self.batch_prefill + self.batch_decode

    @property
    def arrival_tokens_per_step(self) -> float:
        """E[A]·E[v_p + v_d]: offered tokens per batch."""
        return self.mean_arrivals * self.mean_request_tokens


def _sequences(types: list[tuple[tuple[int, int], float]], m: int) -> list[tuple[State, float]]:
    """All ordered sequences of m arriving requests with their probabilities."""
    out = []
    for combo in itertools.product(types, repeat=m):
        prob = 1.0
        for _, pr in combo:
            prob *= pr
        out.append((tuple(t for t, _ in combo), prob))
    return out


def _departures(s: State, plan: Mapping[int, tuple[int, int]], geometric: bool, q: float
                ) -> list[tuple[State, float, int]]:
    """The batch ``plan`` (position -> (prefill, decode) tokens) runs on state ``s``: the possible
    (remaining requests in FCFS order, probability, completions) outcomes (module text, *Step*).

    Bounded decode: one outcome. Geometric decode (``geometric``, stop probability ``q``): each
    request given a decode token completes with probability q, independently.
    """
    after = []
    certain_done = 0
    coin = []                                   # geometric: positions whose completion is random
    for j, (p, d) in enumerate(s):
        tp, td = plan.get(j, (0, 0))
        p2 = p - tp
        if geometric:
            if td:
                coin.append(len(after))
                after.append((0, 1))
            elif p2 == 0 and d == 0:
                certain_done += 1
            else:
                after.append((p2, d))
        else:
            d2 = d - td
            if p2 == 0 and d2 == 0:
                certain_done += 1
            else:
                after.append((p2, d2))
    outcomes: list[tuple[State, float, int]] = []
    if coin:
        for bits in itertools.product((0, 1), repeat=len(coin)):
            k = sum(bits)
            pr = q ** k * (1 - q) ** (len(coin) - k)
            if pr == 0:
                continue
            gone = {coin[c] for c, b in enumerate(bits) if b}
            outcomes.append((tuple(r for a, r in enumerate(after) if a not in gone), pr, certain_done + k))
    else:
        outcomes.append((tuple(after), 1.0, certain_done))
    return outcomes


def build_chain(engine: Engine, *, prefill: Mapping[int, float] | Sequence[float],
                decode: Mapping[int, float] | Sequence[float] | GeometricDecode,
                arrivals: Mapping[int, float] | Sequence[float], max_requests: int,
                max_states: int = 2_000_000, idle_step_ms: float | None = None) -> Chain:
    """Build the batch-epoch chain of ``engine`` (module text) by BFS from the empty state.

    Args:
        engine: the engine; its policy must be one of :data:`MARKOV_POLICIES`; no KV cap.
        prefill: pmf of v_p (values >= 1), e.g. ``{1: .5, 2: .5}``.
        decode: pmf of v_d (values >= 0), or :class:`GeometricDecode`.
        arrivals: pmf of the number of arrivals per batch (values >= 0).
        max_requests: truncation level (requests in system); arrivals beyond it are lost.
        max_states: refuse to build more states than this (ModelError).
        idle_step_ms: the length of an idle step for per-ms figures (default: the time of a
            one-token batch).

    Raises:
        ModelError: a bad field (named), an unsupported policy or engine feature, or more than
            ``max_states`` states.
    """
    t0 = time.perf_counter()
    require(isinstance(engine, Engine), "engine", engine, "must be an Engine")
    pol = engine.policy
    f = f"engines.{engine.name}"
    require(pol.name in MARKOV_POLICIES, f"{f}.policy", pol.name,
            f"the Markov chain supports only {list(MARKOV_POLICIES)} (their batch depends on this state alone)")
    require(engine.kv_capacity_tokens is None, f"{f}.kv_capacity_tokens", engine.kv_capacity_tokens,
            "must be unset: the Markov chain state holds no KV context")
    pre = _pmf(prefill, "prefill", minimum=1)
    geo = isinstance(decode, GeometricDecode)
    dec: dict[int, float] | GeometricDecode = decode if geo else _pmf(decode, "decode", minimum=0)
    # a plug-in may read decode_left; with a geometric law the state holds only a phase flag
    require(not (geo and pol.name == "python"), "decode", decode,
            "must be a finite pmf for a python plug-in (a geometric decode is stored as a phase flag, "
            "which would show the plug-in decode_left = 1)")
    arr = _pmf(arrivals, "arrivals", minimum=0)
    max_requests = integer(max_requests, "max_requests", minimum=1)
    max_states = integer(max_states, "max_states", minimum=1)
    b_max = engine.token_budget
    if pol.name in _WHOLE_PROMPTS and not pol.flag("split_long_prompts"):
        require(max(pre) <= b_max, "prefill", max(pre),
                f"a prompt longer than token_budget = {b_max} can never run under {pol.name} "
                "without split_long_prompts")
    bt = engine.batch_time
    idle = float(np.asarray(bt.batch_ms(1, 0, 0))) if idle_step_ms is None else \
        finite_number(idle_step_ms, "idle_step_ms", minimum=0)

    # Arriving request types (p, d) with probabilities; geometric decode: d is the phase flag 1.
    if geo:
        types = [((p, 1), pp) for p, pp in pre.items()]
        mean_tokens = sum(p * pp for p, pp in pre.items()) + dec.mean
    else:
        types = [((p, d), pp * pd) for p, pp in pre.items() for d, pd in dec.items()]
        mean_tokens = sum(p * pp for p, pp in pre.items()) + sum(d * pd for d, pd in dec.items())
    q = dec.q if geo else 1.0
    a_max = max(arr)

    def at_least(r: int) -> float:                  # P(A >= r)
        return sum(v for n, v in arr.items() if n >= r)

    def excess(r: int) -> float:                    # E[(A - r)^+]
        return sum((n - r) * v for n, v in arr.items() if n > r)
    seq_cache: dict[int, list[tuple[State, float]]] = {}

    def seqs(m: int) -> list[tuple[State, float]]:
        if m not in seq_cache:
            require(len(types) ** m <= max_states, "arrivals", f"up to {m} arrivals of {len(types)} kinds",
                    f"more than max_states = {max_states} arrival sequences per step; use a shorter "
                    "arrival pmf, fewer length values or a lower max_requests")
            seq_cache[m] = _sequences(types, m)
        return seq_cache[m]

    def arrivals_into(room: int) -> list[tuple[State, float]]:
        """(arriving sequence, probability) when ``room`` slots are free; and loss stats."""
        out: list[tuple[State, float]] = []
        for m in range(0, min(room, a_max) + 1):
            pm = at_least(m) if m == room else arr.get(m, 0.0)
            if pm > 0:
                out.extend((s, pm * pr) for s, pr in seqs(m))
        return out

    resident_cap = engine.max_resident_requests
    k_max = engine.max_batch_requests
    index: dict[State, int] = {(): 0}
    states: list[State] = [()]
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    vals: list[np.ndarray] = []
    n_req, v_left, b_pre, b_dec, compl, loss_p, lost, step = [], [], [], [], [], [], [], []
    queue = deque([0])
    arrival_cache: dict[int, list[tuple[State, float]]] = {}
    while queue:
        i = queue.popleft()
        s = states[i]
        m = len(s)
        n_res = m if resident_cap is None else min(m, resident_cap)
        view = View(b_max, tuple(RequestView(j, s[j][0], s[j][1], 0, j, False) for j in range(n_res)), k_max)
        plan = plan_batch(pol, view)
        if m and not plan:
            raise ModelError(f"{f}.policy", pol.name, f"planned an empty batch in state {s} (a bug)")
        P_tok = sum(p for p, _ in plan.values())
        D_tok = sum(d for _, d in plan.values())
        outcomes = _departures(s, plan, geo, q)
        row_t: dict[int, float] = {}
        e_compl = 0.0
        p_loss = 0.0
        e_lost = 0.0
        for rest, pr, c in outcomes:
            e_compl += pr * c
            room = max_requests - len(rest)
            if room < a_max:
                p_loss += pr * at_least(room + 1)
                e_lost += pr * excess(room)
            if room not in arrival_cache:
                arrival_cache[room] = arrivals_into(room)
            for new, pa in arrival_cache[room]:
                t = rest + new
                k = index.get(t)
                if k is None:
                    k = len(states)
                    if k >= max_states:
                        raise ModelError("max_states", max_states,
                                         f"the chain has more states; lower max_requests (= {max_requests}) "
                                         "or raise max_states")
                    index[t] = k
                    states.append(t)
                    queue.append(k)
                row_t[k] = row_t.get(k, 0.0) + pr * pa
        rows.append(np.full(len(row_t), i, dtype=np.int64))
        cols.append(np.fromiter(row_t.keys(), dtype=np.int64, count=len(row_t)))
        vals.append(np.fromiter(row_t.values(), dtype=float, count=len(row_t)))
        n_req.append(m)
        v_left.append(sum(p + d / q for p, d in s))
        b_pre.append(P_tok)
        b_dec.append(D_tok)
        compl.append(e_compl)
        loss_p.append(p_loss)
        lost.append(e_lost)
        step.append(float(np.asarray(bt.batch_ms(P_tok, D_tok, 0))) if plan else idle)
    n = len(states)
    P = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    ro = lambda x, dt=float: _ro(np.asarray(x, dtype=dt))  # noqa: E731
    return Chain(engine=engine, states=tuple(states), index=index, P=P, prefill=pre, decode=dec, arrivals=arr,
                 max_requests=max_requests, n_requests=ro(n_req, np.int64), tokens_left=ro(v_left),
                 batch_prefill=ro(b_pre, np.int64), batch_decode=ro(b_dec, np.int64), completions=ro(compl),
                 loss_prob=ro(loss_p), lost=ro(lost), step_ms=ro(step), idle_step_ms=idle,
                 mean_arrivals=sum(k * v for k, v in arr.items()), mean_request_tokens=mean_tokens,
                 build_seconds=time.perf_counter() - t0)


def _ro(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a



# ------------------------------------------------------------------------------- the stationary law


def _num(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


@dataclass(frozen=True)
class ChainResult:
    """Stationary figures of a :class:`Chain` (all "per batch" = per step of the chain).

    Attributes:
        policy, token_budget, max_requests: what was solved.
        n_states, n_transitions: size of the chain.
        pi: the stationary distribution (same order as ``chain.states``).
        mean_in_system: E_π[requests in system] at a boundary, after the step's arrivals and before its batch.
        mean_tokens_left: E_π[V], V = tokens left (geometric decode: expected tokens left).
        throughput_per_batch: E_π[completions per step] (requests per batch).
        arrival_rate_per_batch: E[A]; ``loss_fraction`` = E_π[arrivals lost] / E[A]; in the
            stationary chain throughput = E[A]·(1 − loss_fraction) exactly.
        mean_batch_tokens: E_π[tokens in the batch]; ``full_batch_fraction`` = P_π(the batch holds
            exactly token_budget tokens) (idle steps count as not full).
        p_empty: P_π(system empty at a boundary).
        truncation_mass: P_π(the step loses an arrival): how much the truncation matters.
        mean_latency_batches: Little's law, mean_in_system / throughput_per_batch (steps from the
            boundary after arrival to the boundary after completion).
        mean_step_ms: E_π[step time] (batch-time model, no KV context; an idle step lasts
            ``chain.idle_step_ms``); ``throughput_per_s`` = throughput_per_batch / mean_step_ms·1000.
        residual: ‖π P − π‖₁ of the solution.
        build_seconds, solve_seconds: wall times.
    """

    policy: str
    token_budget: int
    max_requests: int
    n_states: int
    n_transitions: int
    pi: np.ndarray = field(repr=False)
    mean_in_system: float
    mean_tokens_left: float
    throughput_per_batch: float
    arrival_rate_per_batch: float
    loss_fraction: float
    mean_batch_tokens: float
    full_batch_fraction: float
    p_empty: float
    truncation_mass: float
    mean_latency_batches: float
    mean_step_ms: float
    throughput_per_s: float
    residual: float
    build_seconds: float
    solve_seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {k: (_num(v) if isinstance(v, float) else v) for k, v in self.__dict__.items() if k != "pi"}


def stationary(chain: Chain, method: str = "auto", tol: float = 1e-13) -> np.ndarray:
    """The stationary distribution π (π P = π, Σ π = 1) by a sparse linear solve.

    The balance equations (I − Pᵀ) πᵀ = 0 with the equation of state () replaced by Σ π = 1: one
    solution when the chain has a single recurrent class (always here when P(A = 0) > 0: () is
    reachable from every state). ``method``: ``"direct"`` (SuperLU; exact but its fill-in grows fast
    with the FCFS state space), ``"gmres"`` (restarted GMRES from the uniform law, relative
    residual ``tol``, then ILU-preconditioned GMRES if that did not converge), or ``"auto"``
    (direct up to 4000 states, else gmres). Tiny negative round-off is clipped and π renormalised.

    Raises:
        ModelError: an unknown method, or a solve that fails (singular system, no convergence).
    """
    import scipy.sparse.linalg as spla

    require(method in ("auto", "direct", "gmres"), "method", method, "must be 'auto', 'direct' or 'gmres'")
    n = chain.n_states
    if n == 1:
        return np.ones(1)
    A = (sp.identity(n, format="csr") - chain.P.T.tocsr()).tolil()
    A[0, :] = np.ones((1, n))
    A = A.tocsc()
    b = np.zeros(n)
    b[0] = 1.0
    if method == "direct" or (method == "auto" and n <= 4000):
        pi = spla.spsolve(A, b)
    else:
        x0 = np.full(n, 1.0 / n)
        pi, info = spla.gmres(A, b, x0=x0, rtol=tol, atol=0.0, restart=100, maxiter=1000)
        if info != 0:
            ilu = spla.spilu(A, drop_tol=1e-4, fill_factor=10)
            pre = spla.LinearOperator(A.shape, ilu.solve)
            pi, info = spla.gmres(A, b, x0=pi, M=pre, rtol=tol, atol=0.0, restart=100, maxiter=1000)
        if info != 0:
            raise ModelError("method", method, f"GMRES did not converge on {n} states (info = {info}); "
                             "try method='direct' or a smaller chain")
    if not np.all(np.isfinite(pi)):
        raise ModelError("chain", chain, "the balance equations are singular (more than one recurrent class)")
    pi = np.clip(pi, 0.0, None)
    return pi / pi.sum()


def solve(chain: Chain, method: str = "auto") -> ChainResult:
    """Stationary law (:func:`stationary` with ``method``) and its figures (:class:`ChainResult`).

    Raises:
        ModelError: not a Chain; a failed solve.
    """
    require(isinstance(chain, Chain), "chain", chain, "must be a Chain (see build_chain)")
    t0 = time.perf_counter()
    pi = stationary(chain, method)
    residual = float(np.abs(chain.P.T @ pi - pi).sum())
    solve_s = time.perf_counter() - t0
    thr = float(pi @ chain.completions)
    lam = chain.mean_arrivals
    mean_n = float(pi @ chain.n_requests)
    step = float(pi @ chain.step_ms)
    full = chain.batch_tokens == chain.engine.token_budget
    return ChainResult(
        policy=chain.engine.policy.name, token_budget=chain.engine.token_budget, max_requests=chain.max_requests,
        n_states=chain.n_states, n_transitions=int(chain.P.nnz), pi=_ro(pi), mean_in_system=mean_n,
        mean_tokens_left=float(pi @ chain.tokens_left), throughput_per_batch=thr, arrival_rate_per_batch=lam,
        loss_fraction=float(pi @ chain.lost) / lam if lam > 0 else 0.0,
        mean_batch_tokens=float(pi @ chain.batch_tokens), full_batch_fraction=float(pi[full].sum()),
        p_empty=float(pi[0]), truncation_mass=float(pi @ chain.loss_prob),
        mean_latency_batches=mean_n / thr if thr > 0 else math.nan,
        mean_step_ms=step, throughput_per_s=thr / step * 1000.0 if step > 0 else math.nan,
        residual=residual, build_seconds=chain.build_seconds, solve_seconds=solve_s)
