"""Foster–Lyapunov certificates and instability proofs for the *untruncated* batch-epoch chain.

A chain built by :func:`~fluidllm.markov.build_chain` is truncated at ``max_requests``: arrivals
that do not fit are lost. A drift check on that finite chain proves nothing about the real
(untruncated) one: every finite chain is positive recurrent, and at the boundary the lost arrivals
make the drift look more negative than it is. So the results here say which of two things they are:

* ``scope = "untruncated"``: a proof for the real chain, by an explicit argument that covers every
  state, including the infinitely many beyond the truncation. Only then is
  :attr:`DriftCertificate.certified` (positive recurrence) or :attr:`InstabilityWitness.flagged`
  (instability) true.
* ``scope = "truncated"``: only the state-by-state check on the finite chain (``truncated_holds``,
  ``truncated_flagged``): *truncated, not a proof* — every printed form says so.

The Lyapunov function of the proofs
-----------------------------------
V(x) = tokens left = Σ_i (p_i + d_i) (geometric decode: Σ_i p_i + d_i / q, the expected tokens
left). Its one-step drift in the **untruncated** chain is known exactly at *every* state x:

    Δ∞(x) = E[V(X_1) − V(X_0) | X_0 = x] = E[A]·E[v_p + v_d] − b(x)          (tokens per batch)

with b(x) the tokens of the batch planned in x (each served token lowers V by one, in
expectation for a geometric decode token; the arrivals add E[A]·E[v] in expectation, whatever the
state). :func:`untruncated_drift` returns it; on the truncated chain it equals
``drift(chain) + chain.lost · E[v]``, so the truncation's lost arrivals never make it look
negative. For a user-supplied V the drift is known only on states that cannot lose an arrival, and
such a V enters only the truncated diagnostics.

The arguments (conditions in full)
----------------------------------
Write λ̄ = E[A] (arrivals per batch), E[v] = E[v_p + v_d], s = min(b_max, k_max) (a bound on the
requests a batch gives tokens to — every planned request gets a token — hence on completions per
batch), and note that for every N the set {fewer than N requests} is finite (the lengths are
bounded, or a phase flag).

1. **work-conserving** (certificate; Li, Dai, Peng arXiv 2504.07347, Thm 2(b) drift argument).
   Conditions: a built-in policy that is work-conserving (orca, sarathi, kfcfs without
   ``chunk_size``; eqs. 8–9: demand Σ_i (p_i + 1{p_i = 0}) >= b_max ⇒ the batch holds b_max
   tokens), no ``max_batch_requests`` or ``max_resident_requests`` below b_max (so every state with
   >= b_max requests has demand >= b_max), P(A = 0) > 0, and the property checked on every state of
   the given chain. Then Δ∞(x) = λ̄E[v] − b_max at every state outside F = {fewer than b_max
   requests}, which is a proof when λ̄E[v] − b_max <= −ε (Foster's criterion: Meyn & Tweedie 2009,
   Thm 11.3.4; F is finite, hence petite, and Δ∞ <= λ̄E[v] on F).

2. **level-independent** (certificate and instability; a quasi-birth–death-type argument for a
   policy whose batch, once the queue is long, depends only on a bounded head of the FCFS queue —
   e.g. FasterTransformer, vLLM or Sarathi at high load). For a head length H, let N = H + s. A
   head h (the first H requests) is *valid* when the plan on h followed by any tail of fresh
   requests is the same and gives tokens only inside h; it is tested against every tail
   (t, t, ..., t) of s + 1 copies of each arrival type t. For the built-in policies this covers
   every tail: their FCFS scans stop at the first tail request they cannot serve (a fresh request
   is never decoding and has p >= 1; the only global predicates, "some request is decoding" (FT)
   and "some prompt waits" (vLLM), are decided by the head and by the tail being non-empty), so
   the plan reads at most the first tail request. The reachable state space of the real chain is
   then enumerated *exactly and finitely*: every state with fewer than N requests explicitly, and
   every state with >= N requests as its head (its tail is fresh arrivals, checked when a state
   enters that region; valid heads never touch the tail, so it stays fresh): from a head, one batch
   (on the head alone), its completions c <= s, and a refill of c requests of any arrival type
   gives the next head; a step may also fall back below N. If every reachable head is valid, then
   for every state with >= N_k = N + (k − 1)·s requests the expected tokens served in the next k
   batches depend only on the head, and bounding them over the refills by a min / max dynamic
   programme (the real tail is one of the refill sequences) gives, for every such state,

       D_k^lo <= E[V(X_k) − V(X_0) | X_0 = x] <= D_k^hi.

   This is level-independence: beyond N_k the k-step drift is a function of the head, the same at
   every level; it is also cross-checked against the batches of the given chain at every level
   >= N it has. If the enumeration finds no head at all, the untruncated chain never holds N
   requests: its reachable state space is finite (argument **finite state space**: a finite
   irreducible chain is positive recurrent).
   *Certificate* when D_k^hi <= −ε for some k <= ``max_steps`` and P(A = 0) > 0: Foster's criterion
   for the k-step chain (state-dependent drift with n(x) = k: Meyn & Tweedie 2009, Thm 19.1.2;
   Fayolle, Malyshev & Menshikov 1995, Thm 2.2.4) with the finite set F = {fewer than N_k
   requests}; P(A = 0) > 0 makes the chain irreducible (the empty state is reachable from all).
   *Instability* when D_k^lo >= ε for some k and a state with V > C = (N_k − 1)·w_max (w_max: the
   largest V of one request; so V > C forces >= N_k requests) is reachable from the empty state
   (an exact search of the head dynamics with one arrival type; with several, a sample path of
   the real chain of positive probability): the transience criterion with bounded jumps below,
   applied to the k-step chain, whose jumps are at most k·``max_jump``.

3. **budget bound** (instability; Li, Dai, Peng Thm 2(a)): no batch holds more than b_max tokens,
   so Δ∞(x) >= λ̄E[v] − b_max at every state, for every policy (plug-ins included: their plans are
   checked against the budget). When that is >= ε: unstable.

The transience criterion used (bounded jumps, positive drift; Lamperti 1960; Fayolle, Malyshev &
Menshikov 1995, §2.2; Meyn & Tweedie 2009, Thm 8.4.2 applied to the bounded function
1 − exp(−s·V)). Let Y_n be the k-step chain, G = {V > C}, and suppose E[V(Y_1) − V(Y_0) | Y_0 = y]
>= ε on G and |V(Y_1) − V(Y_0)| <= J always. For small s > 0, exp(−s·V(Y_n)) is a supermartingale
until Y leaves G, so from y ∈ G the probability of ever leaving G is at most exp(−s·(V(y) − C))
< 1; on the event that Y never leaves G, the martingale strong law gives liminf V(Y_n)/n >= ε. As
such a y is reachable from the empty state, V(X_n) → ∞ with positive probability: the chain is not
positive recurrent (it is transient, being irreducible when P(A = 0) > 0).

A certificate is sufficient, not necessary: "not certified" and "not flagged" may both hold (at the
critical load; for a policy whose head is unbounded — e.g. vLLM, whose waiting decoders pile up;
with several request kinds under a non-work-conserving policy, where the bound over refills is
taken over the worst tail, and a long tail of heavy requests can give a positive k-step drift of
tokens left even when the chain is stable; or when the search is too large: ``reason`` says
which). The truncated diagnostics never decide ``certified`` or ``flagged``.
"""
from __future__ import annotations

import itertools
import math
import weakref
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..errors import finite_number, integer, require
from ..sim.reference import RequestView, View, plan_batch
from .chain import Chain, State, _departures, _num, stationary

__all__ = ["DriftCertificate", "InstabilityWitness", "drift", "untruncated_drift", "drift_certificate",
           "instability_witness", "TOKENS_LEFT"]

#: The Lyapunov function of every untruncated argument.
TOKENS_LEFT = "tokens left: V(x) = sum_i (p_i + d_i) (geometric decode: sum_i p_i + d_i / q)"

_WORK_CONSERVING_BUILTINS = ("orca", "sarathi", "kfcfs")
_BUILTINS = ("fastertransformer", "vllm", "orca", "sarathi", "kfcfs")


def _values(chain: Chain, V: Callable[[State], float] | np.ndarray | None) -> np.ndarray:
    if V is None:
        return np.asarray(chain.tokens_left, dtype=float)
    if callable(V):
        v = np.array([float(V(s)) for s in chain.states])
    else:
        v = np.asarray(V, dtype=float)
        require(v.shape == (chain.n_states,), "V", f"array of shape {v.shape}",
                f"must have one value per state ({chain.n_states})")
    require(bool(np.all(np.isfinite(v))), "V", "non-finite values", "must be finite in every state")
    return v


def drift(chain: Chain, V: Callable[[State], float] | np.ndarray | None = None) -> np.ndarray:
    """Δ(x) = (P V)(x) − V(x) for every state of the *truncated* chain (V default: tokens left).

    On states that can lose an arrival (``chain.loss_prob > 0``) this is lower than the real
    chain's drift; see :func:`untruncated_drift`.

    Raises:
        ModelError: not a Chain, or a V of the wrong shape or with non-finite values.
    """
    require(isinstance(chain, Chain), "chain", chain, "must be a Chain (see build_chain)")
    v = _values(chain, V)
    return chain.P @ v - v


def untruncated_drift(chain: Chain) -> np.ndarray:
    """The exact one-step drift of V = tokens left in the **untruncated** chain, per state of
    ``chain``: E[A]·E[v_p + v_d] − (tokens of the batch planned in the state), in tokens per batch
    (module text). Equal to :func:`drift` plus ``chain.lost · E[v]``.

    Raises:
        ModelError: not a Chain.
    """
    require(isinstance(chain, Chain), "chain", chain, "must be a Chain (see build_chain)")
    return chain.arrival_tokens_per_step - np.asarray(chain.batch_tokens, dtype=float)


# ------------------------------------------------------------------ the untruncated head dynamics


@dataclass(frozen=True)
class _Laws:
    """What the head dynamics need of a chain."""

    policy: Any
    b_max: int
    k_max: int | None
    resident_cap: int | None
    geometric: bool
    q: float
    types: tuple[tuple[int, int], ...]          # arriving request kinds (p, d) (geometric: d = flag 1)
    support: tuple[int, ...]                    # numbers of arrivals with positive probability
    s: int                                      # requests given tokens per batch <= s
    w_max: float                                # the largest V of one request
    mean_tokens: float                          # E[A]·E[v], tokens per batch
    p_no_arrival: float                         # P(A = 0)


def _laws(chain: Chain) -> _Laws:
    eng = chain.engine
    geo = chain.geometric
    q = chain.decode.q if geo else 1.0
    if geo:
        types = tuple((p, 1) for p in chain.prefill)
    else:
        types = tuple((p, d) for p in chain.prefill for d in chain.decode)
    k = eng.max_batch_requests
    s = eng.token_budget if k is None else min(eng.token_budget, k)
    return _Laws(policy=eng.policy, b_max=eng.token_budget, k_max=k, resident_cap=eng.max_resident_requests,
                 geometric=geo, q=q, types=types, support=tuple(sorted(chain.arrivals)), s=s,
                 w_max=max(p + d / q for p, d in types), mean_tokens=chain.arrival_tokens_per_step,
                 p_no_arrival=float(chain.arrivals.get(0, 0.0)))


def _plan(L: _Laws, reqs: State) -> dict[int, tuple[int, int]]:
    """The plan on the FCFS list ``reqs`` exactly as :func:`build_chain` asks for it."""
    n = len(reqs) if L.resident_cap is None else min(len(reqs), L.resident_cap)
    view = View(L.b_max, tuple(RequestView(j, reqs[j][0], reqs[j][1], 0, j, False) for j in range(n)), L.k_max)
    return plan_batch(L.policy, view)


class _TooLarge(Exception):
    pass


@dataclass(frozen=True, eq=False)
class _Heads:
    """The reachable state space of the untruncated chain for one head length H (module text, 2)."""

    H: int
    N: int
    heads: tuple[State, ...]
    tokens: np.ndarray                          # b(h): tokens of the batch planned from head h
    steps: tuple[tuple[tuple[float, int, np.ndarray], ...], ...]  # per head: (prob, completions, next heads)
    entries: frozenset[tuple[int, int]]         # (head, level) where the chain enters levels >= N
    n_low_states: int


def _explore(L: _Laws, H: int, max_states: int) -> _Heads | str:
    """Enumerate the reachable states (below N explicitly, from N on as heads) for head length
    ``H``; a string says why H does not work (too short), :class:`_TooLarge` that the search
    exceeded ``max_states``."""
    N = H + L.s
    types = L.types
    type_set = set(types)
    words_cache: dict[int, list[State]] = {}

    def words(n: int) -> list[State]:
        if n not in words_cache:
            if len(types) ** n > max_states:
                raise _TooLarge(f"{len(types)}^{n} arrival-type sequences exceed max_states = {max_states}")
            words_cache[n] = list(itertools.product(types, repeat=n))
        return words_cache[n]

    low: set[State] = {()}
    low_queue: deque[State] = deque([()])
    index: dict[State, int] = {}
    heads: list[State] = []
    head_queue: deque[State] = deque()
    entries: set[tuple[int, int]] = set()
    tokens: dict[int, int] = {}
    steps: dict[int, tuple[tuple[float, int, np.ndarray], ...]] = {}

    def head_id(h: State) -> int:
        i = index.get(h)
        if i is None:
            i = index[h] = len(heads)
            heads.append(h)
            head_queue.append(h)
            if len(heads) + len(low) > max_states:
                raise _TooLarge(f"more than max_states = {max_states} states and heads")
        return i

    def reach(y: State) -> str | None:
        if len(y) < N:
            if y not in low:
                low.add(y)
                low_queue.append(y)
                if len(heads) + len(low) > max_states:
                    raise _TooLarge(f"more than max_states = {max_states} states and heads")
            return None
        if any(e not in type_set for e in y[H:]):
            return f"head length {H}: a served request lies beyond the head in the reachable state {y}"
        entries.add((head_id(y[:H]), len(y)))
        return None

    while low_queue or head_queue:
        if low_queue:
            x = low_queue.popleft()
            for rest, _, _ in _departures(x, _plan(L, x), L.geometric, L.q):
                for a in L.support:
                    for w in words(a):
                        why = reach(rest + w)
                        if why:
                            return why
            continue
        h = head_queue.popleft()
        plans = [_plan(L, h + (t,) * (L.s + 1)) for t in types]
        plan = plans[0]
        if any(p != plan for p in plans[1:]) or any(j >= H for j in plan):
            return f"head length {H}: the batch from head {h} depends on, or serves, the requests behind it"
        if not plan:
            return f"head length {H}: empty batch planned from head {h}"
        i = index[h]
        tokens[i] = sum(p + d for p, d in plan.values())
        outs = []
        for rest, pr, c in _departures(h, plan, L.geometric, L.q):
            nxt = np.array([head_id(rest + w) for w in words(c)], dtype=np.int64)
            outs.append((pr, c, nxt))
            for a in L.support:                 # falls back below N from a level in [N, N + c − a)
                for m in range(N, N + c - a):
                    for w in words(m - H + a):
                        why = reach(rest + w)
                        if why:
                            return why
        steps[i] = tuple(outs)
    n = len(heads)
    return _Heads(H=H, N=N, heads=tuple(heads), tokens=np.array([tokens[i] for i in range(n)], dtype=float),
                  steps=tuple(steps[i] for i in range(n)), entries=frozenset(entries), n_low_states=len(low))


def _served_bounds(hd: _Heads, k_max: int) -> tuple[np.ndarray, np.ndarray]:
    """lo[k-1, h], hi[k-1, h]: min / max over refill sequences of E[tokens served in k batches]
    from head h (the real tail is one refill sequence, chosen with hindsight of nothing)."""
    n = len(hd.heads)
    lo = np.zeros((k_max, n))
    hi = np.zeros((k_max, n))
    prev_lo = np.zeros(n)
    prev_hi = np.zeros(n)
    for k in range(k_max):
        cur_lo = hd.tokens.copy()
        cur_hi = hd.tokens.copy()
        for i, outs in enumerate(hd.steps):
            for pr, _, nxt in outs:
                cur_lo[i] += pr * prev_lo[nxt].min()
                cur_hi[i] += pr * prev_hi[nxt].max()
        lo[k], hi[k] = cur_lo, cur_hi
        prev_lo, prev_hi = cur_lo, cur_hi
    return lo, hi


def _reaches(L: _Laws, hd: _Heads, C: float, max_iter: int | None = None) -> bool:
    """Whether the untruncated chain reaches, from the empty state and with positive probability,
    a state with V > C (V = tokens left).

    One arrival type: an exact search over (head, level) pairs (the refill of a head is then
    unique, so every transition used is real); a state with more than C requests has V > C (each
    request holds at least one token). Several types: sample paths of the real chain, one per
    arrival type t, with the largest number of arrivals, all of type t, and the outcome with the
    fewest completions at every step (each step has positive probability), up to ``max_iter``
    steps (default 20·(C + 10), at most 20 000); a miss only means no proof.
    """
    if max_iter is None:
        max_iter = int(min(20_000, 20 * (C + 10)))
    if len(L.types) == 1:
        target = int(math.floor(C)) + 1
        seen = set(hd.entries)
        queue = deque(seen)
        while queue:
            i, m = queue.popleft()
            if m >= target:
                return True
            for _, c, nxt in hd.steps[i]:
                for a in L.support:
                    m2 = m - c + a
                    if m2 >= target:
                        return True
                    if m2 < hd.N:
                        continue
                    for j in nxt:
                        key = (int(j), m2)
                        if key not in seen:
                            seen.add(key)
                            queue.append(key)
        return False
    a_top = max(L.support)
    for t in sorted(L.types, key=lambda e: -(e[0] + e[1] / L.q)):
        x: State = ()
        for _ in range(max_iter):
            rest, _, _ = min(_departures(x, _plan(L, x), L.geometric, L.q), key=lambda o: o[2])
            x = rest + (t,) * a_top
            if sum(p + d / L.q for p, d in x) > C:
                return True
    return False


@dataclass(frozen=True, eq=False)
class _Analysis:
    """The level-independent analysis of one chain (cached per chain and limits)."""

    heads: _Heads | None
    reason: str                                  # why there is none, or the locality check
    lo: np.ndarray | None = None
    hi: np.ndarray | None = None
    checked_states: int = 0


_CACHE: "weakref.WeakKeyDictionary[Chain, dict[tuple[int, int, int], _Analysis]]" = weakref.WeakKeyDictionary()


def _level_independent(chain: Chain, L: _Laws, max_steps: int, max_head: int | None, max_states: int) -> _Analysis:
    key = (max_steps, -1 if max_head is None else max_head, max_states)
    per_chain = _CACHE.setdefault(chain, {})
    if key in per_chain:
        return per_chain[key]
    out = _analyse(chain, L, max_steps, max_head, max_states)
    per_chain[key] = out
    return out


def _head_lengths(top: int) -> list[int]:
    """Head lengths to try: 1, 2, 3, 4, then growing by about half each time, and ``top``."""
    out, h = [], 1
    while h < top:
        out.append(h)
        h = h + 1 if h < 4 else (3 * h + 1) // 2
    return out + [top]


def _analyse(chain: Chain, L: _Laws, max_steps: int, max_head: int | None, max_states: int) -> _Analysis:
    if L.policy.name not in _BUILTINS:
        return _Analysis(None, f"policy {L.policy.name!r} is a plug-in: its locality (the batch depends only on "
                               "a bounded head of the queue) cannot be proved from outside")
    h_top = 2 * L.s + 2 if max_head is None else max_head
    why = "no head length tried"
    for H in _head_lengths(h_top):
        try:
            hd = _explore(L, H, max_states)
        except _TooLarge as e:
            return _Analysis(None, f"the reachable-state search stopped at head length {H}: {e}")
        if isinstance(hd, str):
            why = hd
            continue
        # Cross-check the locality on every state of the given chain with >= N requests whose head
        # is reachable: its batch must be the head's (the drift is the same at every level).
        checked = 0
        bt = np.asarray(chain.batch_tokens)
        type_set = set(L.types)
        index = {h: i for i, h in enumerate(hd.heads)}
        for j, x in enumerate(chain.states):
            if len(x) >= hd.N and x[:H] in index and all(e in type_set for e in x[H:]):
                checked += 1
                if bt[j] != hd.tokens[index[x[:H]]]:
                    return _Analysis(None, f"locality check failed: state {x} plans {bt[j]} tokens, its head "
                                           f"{x[:H]} {hd.tokens[index[x[:H]]]:g} (a bug)")
        lo, hi = _served_bounds(hd, max_steps)
        return _Analysis(hd, f"head length {H}: {len(hd.heads)} reachable heads, all valid", lo, hi, checked)
    return _Analysis(None, f"no head length <= {h_top} works ({why})")


# ------------------------------------------------------------------------------------ certificate


@dataclass(frozen=True)
class DriftCertificate:
    """Result of :func:`drift_certificate` (module text).

    The proof (``scope``):
        certified: positive recurrence of the **untruncated** chain is proved (scope
            "untruncated"); false otherwise, whatever the truncated check says.
        scope: "untruncated" (a proof for the real chain) or "truncated" (only the check on this
            finite chain: truncated, not a proof).
        argument: "work-conserving", "level-independent", "finite state space" or "none".
        statement: the argument in words with its numbers, or why none applies.
        reason: why no proof (empty when certified).
        lyapunov: the V of the proof (:data:`TOKENS_LEFT`).
        steps: k, the number of batches of the drift (1 for Foster's criterion), or None.
        threshold_requests: N_k: the finite set F is {fewer than N_k requests}, or None.
        drift_bound: the largest k-step drift of V outside F (tokens per k batches); when not
            certified, the best such bound found (see ``reason``); NaN if none;
            ``drift_bound_per_batch`` = drift_bound / k.
        head_length: H of the level-independent argument, or None; ``n_heads`` its reachable heads;
            ``locality_states_checked`` states of this chain (>= N requests) whose batch was checked
            to be the head's.
        irreducible: P(A = 0) > 0 (the empty state is reachable from every state).
        verdict: one line ("certified ..." / "truncated, not a proof ..." / "not certified ...").

    The truncated diagnostics (this finite chain only; not a proof):
        eps: the required drift −ε.
        drift: per state, the untruncated drift (default V: :func:`untruncated_drift`, exact on
            every state) or, for a user V, the truncated drift; ``drift_truncated``: (P V − V) on
            the truncated chain; V: V per state; boundary: mask of states that can lose an arrival.
        n_positive: states with known drift > −ε (default V: all states; user V: the non-boundary
            ones); level: v*, the largest V among them (−inf if none); exceptional_set_size: such
            states with V <= v*; max_drift_outside, n_outside: over the states with V > v*.
        boundary_min_v, boundary_max_drift (truncated drift), boundary_max_drift_untruncated
            (default V only, else NaN).
        truncated_holds: n_outside > 0 (and, for a user V, v* < boundary_min_v): Δ <= −ε on a band
            above v* of *this* truncation.
    """

    policy: str
    eps: float
    n_states: int
    drift: np.ndarray = field(repr=False)
    drift_truncated: np.ndarray = field(repr=False)
    V: np.ndarray = field(repr=False)
    boundary: np.ndarray = field(repr=False)
    n_positive: int
    level: float
    exceptional_set_size: int
    max_drift_outside: float
    n_outside: int
    boundary_min_v: float
    boundary_max_drift: float
    boundary_max_drift_untruncated: float
    truncated_holds: bool
    certified: bool
    scope: str
    argument: str
    statement: str
    reason: str
    lyapunov: str
    steps: int | None
    threshold_requests: int | None
    drift_bound: float
    drift_bound_per_batch: float
    head_length: int | None
    n_heads: int | None
    locality_states_checked: int
    irreducible: bool

    @property
    def proof(self) -> bool:
        """Same as ``certified``: the result is a proof for the untruncated chain."""
        return self.certified

    @property
    def verdict(self) -> str:
        if self.certified:
            return f"certified: positive recurrent (untruncated proof, {self.argument} argument)"
        if self.truncated_holds:
            return f"truncated, not a proof: the drift check holds on this truncation only ({self.reason})"
        return f"not certified ({self.reason})"

    def to_dict(self) -> dict[str, Any]:
        out = {k: (_num(v) if isinstance(v, float) else v) for k, v in self.__dict__.items()
               if k not in ("drift", "drift_truncated", "V", "boundary")}
        out["verdict"] = self.verdict
        return out


def _prologue(chain: Chain, V: Callable[[State], float] | np.ndarray | None, eps: float, max_steps: int,
              max_head: int | None, max_states: int
              ) -> tuple[float, np.ndarray, np.ndarray, np.ndarray, _Laws, tuple[int, int | None, int]]:
    """Arguments checked; V per state, its truncated drift, the boundary mask, the laws, the limits."""
    require(isinstance(chain, Chain), "chain", chain, "must be a Chain (see build_chain)")
    eps = finite_number(eps, "eps", minimum=0, strict=True)
    limits = (integer(max_steps, "max_steps", minimum=1),
              None if max_head is None else integer(max_head, "max_head", minimum=1),
              integer(max_states, "max_states", minimum=1))
    v = _values(chain, V)
    d = chain.P @ v - v
    boundary = np.asarray(chain.loss_prob) > 0
    return eps, v, d, boundary, _laws(chain), limits


def drift_certificate(chain: Chain, V: Callable[[State], float] | np.ndarray | None = None, *,
                      eps: float = 1e-6, max_steps: int = 12, max_head: int | None = None,
                      max_states: int = 20_000) -> DriftCertificate:
    """Prove positive recurrence of the **untruncated** chain by a Foster–Lyapunov argument, or say
    why not; also report the state-by-state check on this truncation (module text).

    Args:
        chain: a built chain; its engine and laws define the untruncated chain, its states feed
            the truncated diagnostics and the locality cross-check.
        V: Lyapunov function of the truncated diagnostics only (default: tokens left); the proofs
            always use V = tokens left.
        eps: the drift must be <= −eps (tokens per k batches).
        max_steps: the largest k tried by the level-independent argument.
        max_head: the largest head length tried (default 2·s + 2, s = min(b_max, k_max)).
        max_states: the reachable-state search gives up (no proof) beyond this many states.

    Raises:
        ModelError: a bad chain, V, eps, max_steps, max_head or max_states.
    """
    eps, v, d, boundary, L, (max_steps, max_head, max_states) = _prologue(chain, V, eps, max_steps, max_head,
                                                                          max_states)
    inner = ~boundary
    # ---- truncated diagnostics (honest on the boundary for the default V)
    if V is None:
        honest = untruncated_drift(chain)
        known = np.ones(chain.n_states, dtype=bool)
    else:
        honest = d
        known = inner
    bad = known & (honest > -eps)
    level = float(v[bad].max()) if bad.any() else -math.inf
    outside = known & (v > level)
    n_out = int(outside.sum())
    b_min = float(v[boundary].min()) if boundary.any() else math.inf
    truncated_holds = bool(n_out > 0 and (V is None or level < b_min))
    b_untr = math.nan
    if V is None and boundary.any():
        b_untr = float(honest[boundary].max())
    # ---- the untruncated proof
    ae, b_max = L.mean_tokens, L.b_max
    irreducible = L.p_no_arrival > 0
    certified, argument, statement, reason = False, "none", "", ""
    steps = threshold = head_length = n_heads = None
    bound = math.nan
    checked = 0
    wc = L.policy.name in _WORK_CONSERVING_BUILTINS and L.policy.work_conserving \
        and (L.k_max is None or L.k_max >= b_max) and (L.resident_cap is None or L.resident_cap >= b_max)
    if ae - b_max > -eps:
        reason = (f"offered tokens per batch λ̄·E[v] = {ae:.6g} >= b_max − ε = {b_max} − {eps:g}: no batch holds "
                  "more than b_max tokens, so the drift of tokens left is >= λ̄·E[v] − b_max everywhere")
    elif not irreducible:
        reason = "P(A = 0) = 0: irreducibility of the untruncated chain is not established"
    elif wc:
        st = chain.states
        cap = L.resident_cap
        demand = np.array([sum(p + (p == 0) for p, _ in (x if cap is None else x[:cap])) for x in st])
        full_ok = np.asarray(chain.batch_tokens)[demand >= b_max] == b_max
        if not bool(np.all(full_ok)):
            bad_state = st[int(np.flatnonzero(demand >= b_max)[~full_ok][0])]
            reason = f"the work-conserving property fails in state {bad_state} (a bug)"
        else:
            certified, argument, steps, threshold, bound = True, "work-conserving", 1, b_max, ae - b_max
            checked = int((demand >= b_max).sum())
            statement = (
                f"Foster's criterion (Meyn & Tweedie 2009, Thm 11.3.4) for the untruncated chain, V = tokens left: "
                f"{L.policy.name} is work-conserving, so in every state with at least {b_max} requests (demand >= "
                f"b_max) the batch holds b_max = {b_max} tokens and the drift is exactly λ̄·E[v] − b_max = "
                f"{ae:.6g} − {b_max} = {ae - b_max:.6g} tokens per batch <= −ε; the exceptional set F = "
                f"{{fewer than {b_max} requests}} is finite and the drift on it is at most {ae:.6g}; the chain is "
                f"irreducible (P(A = 0) = {L.p_no_arrival:.6g} > 0). Checked on the {checked} states of this chain "
                "with demand >= b_max.")
    if not certified and not reason:
        an = _level_independent(chain, L, max_steps, max_head, max_states)
        if an.heads is None:
            reason = f"level-independent argument not available: {an.reason}"
        else:
            hd = an.heads
            head_length, n_heads, checked = hd.H, len(hd.heads), an.checked_states
            worst = np.array([(k + 1) * ae - an.lo[k].min() if n_heads else -math.inf for k in range(max_steps)])
            ok = np.flatnonzero(worst <= -eps)
            if not n_heads:
                certified, argument, threshold = True, "finite state space", hd.N
                statement = (
                    f"The untruncated chain never holds {hd.N} requests: the exact enumeration of its reachable "
                    f"states from the empty one (module text, 2, head length {hd.H}) finds {hd.n_low_states} states, "
                    f"all with fewer; a finite irreducible chain (P(A = 0) = {L.p_no_arrival:.6g} > 0) is positive "
                    "recurrent.")
            elif ok.size:
                k = int(ok[0]) + 1
                certified, argument, steps, bound = True, "level-independent", k, float(worst[k - 1])
                threshold = hd.N + (k - 1) * L.s
                statement = (
                    f"Foster's criterion for the {k}-step chain (state-dependent drift, n(x) = {k}: Meyn & Tweedie "
                    f"2009, Thm 19.1.2; Fayolle, Malyshev & Menshikov 1995, Thm 2.2.4), V = tokens left: from every "
                    f"state with at least {threshold} requests the next {k} batches depend only on the first "
                    f"{hd.H} requests ({n_heads} reachable heads, all checked local; tails are fresh arrivals), so "
                    f"the {k}-step drift is a function of the head, the same at every level; its largest value "
                    f"over heads and refills is {bound:.6g} tokens ({bound / k:.6g} per batch) <= −ε; F = "
                    f"{{fewer than {threshold} requests}} is finite; irreducible (P(A = 0) = "
                    f"{L.p_no_arrival:.6g} > 0). Locality cross-checked on {checked} states of this chain.")
            else:
                kb = int(np.argmin(worst)) + 1
                bound = float(worst[kb - 1])
                reason = (f"level-independent argument (head length {hd.H}, {n_heads} heads): no k <= {max_steps} "
                          f"gives a negative k-step drift outside a finite set; the best bound is {bound:.6g} tokens "
                          f"per {kb} batches ({bound / kb:.6g} per batch)")
    return DriftCertificate(
        policy=chain.engine.policy.name, eps=eps, n_states=chain.n_states, drift=_ro(honest), drift_truncated=_ro(d),
        V=_ro(v), boundary=_ro(boundary), n_positive=int(bad.sum()), level=level,
        exceptional_set_size=int((known & (v <= level)).sum()),
        max_drift_outside=float(honest[outside].max()) if n_out else math.nan, n_outside=n_out,
        boundary_min_v=b_min, boundary_max_drift=float(d[boundary].max()) if boundary.any() else math.nan,
        boundary_max_drift_untruncated=b_untr, truncated_holds=truncated_holds, certified=bool(certified),
        scope="untruncated" if certified else "truncated", argument=argument,
        statement=statement if certified else f"no proof for the untruncated chain: {reason}",
        reason="" if certified else reason, lyapunov=TOKENS_LEFT, steps=steps, threshold_requests=threshold,
        drift_bound=float(bound), drift_bound_per_batch=float(bound / steps) if steps else math.nan,
        head_length=head_length, n_heads=n_heads, locality_states_checked=int(checked), irreducible=bool(irreducible))


def _ro(a: np.ndarray) -> np.ndarray:
    a = np.array(a)
    a.setflags(write=False)
    return a


# ---------------------------------------------------------------------------------- instability


@dataclass(frozen=True)
class InstabilityWitness:
    """Result of :func:`instability_witness` (module text).

    The proof (``scope``):
        flagged: instability of the **untruncated** chain is proved (V(X_n) → ∞ with positive
            probability from the empty state: not positive recurrent); false otherwise, whatever
            the truncated evidence says.
        scope: "untruncated" or "truncated"; argument: "budget bound", "level-independent" or
            "none"; statement: the argument in words with its numbers; reason: why no proof.
        lyapunov, steps (k), threshold_requests (N_k: the drift bound holds on >= N_k requests),
        drift_bound: the smallest k-step drift of V there (tokens per k batches; when not flagged,
        the best bound found, see ``reason``; NaN if none);
        drift_bound_per_batch; escape_level: C (V > C forces >= N_k requests; a state above it is
        reachable); max_jump: bound on |V(X_1) − V(X_0)|; head_length, n_heads.
        verdict: one line.

    The truncated evidence (this finite chain only; not a proof):
        level: L, the smallest V with Δ >= ε on every non-boundary state with V >= L (inf if none).
        n_states_in_set: non-boundary states with V >= L.
        min_drift_in_set: min Δ over them (NaN if none).
        max_one_step_fall: max over them and their successors y of V(x) − V(y).
        depth: boundary_min_v − L, the height of the band below the truncation.
        stationary_mass_in_set: π of all states (boundary included) with V >= L.
        truncation_mass: P_π(a step loses an arrival).
        truncated_flagged: the set is non-empty and lies strictly below the boundary (depth > 0).
    """

    policy: str
    eps: float
    level: float
    n_states_in_set: int
    min_drift_in_set: float
    max_one_step_fall: float
    boundary_min_v: float
    depth: float
    stationary_mass_in_set: float
    truncation_mass: float
    truncated_flagged: bool
    flagged: bool
    scope: str
    argument: str
    statement: str
    reason: str
    lyapunov: str
    steps: int | None
    threshold_requests: int | None
    drift_bound: float
    drift_bound_per_batch: float
    escape_level: float
    max_jump: float
    head_length: int | None
    n_heads: int | None

    @property
    def proof(self) -> bool:
        """Same as ``flagged``: the result is a proof for the untruncated chain."""
        return self.flagged

    @property
    def verdict(self) -> str:
        if self.flagged:
            return f"unstable: not positive recurrent (untruncated proof, {self.argument} argument)"
        if self.truncated_flagged:
            return f"truncated, not a proof: growth band on this truncation only ({self.reason})"
        return f"not flagged ({self.reason})"

    def to_dict(self) -> dict[str, Any]:
        out = {k: (_num(v) if isinstance(v, float) else v) for k, v in self.__dict__.items()}
        out["verdict"] = self.verdict
        return out


def instability_witness(chain: Chain, V: Callable[[State], float] | np.ndarray | None = None, *,
                        eps: float = 1e-6, max_steps: int = 12, max_head: int | None = None,
                        max_states: int = 20_000) -> InstabilityWitness:
    """Prove instability of the **untruncated** chain (budget bound, or the level-independent
    k-step drift with the transience criterion of the module text), or say why not; also report
    the band of this truncation where V can only be expected to grow (evidence, not a proof).

    Args: as :func:`drift_certificate` (``V`` enters only the truncated evidence; the drift must
    be >= +eps).

    Raises:
        ModelError: a bad chain, V, eps, max_steps, max_head or max_states; a failed stationary
            solve of the truncated chain.
    """
    eps, v, d, boundary, L, (max_steps, max_head, max_states) = _prologue(chain, V, eps, max_steps, max_head,
                                                                          max_states)
    inner = ~boundary
    # ---- truncated evidence (the historical band test)
    low = inner & (d < eps)
    vb = float(v[low].max()) if low.any() else -math.inf
    above = inner & (v > vb)
    level = float(v[above].min()) if above.any() else math.inf
    in_set = inner & (v >= level)
    b_min = float(v[boundary].min()) if boundary.any() else math.inf
    fall = math.nan
    if in_set.any():
        P = chain.P.tocoo()
        m = in_set[P.row]
        fall = float((v[P.row[m]] - v[P.col[m]]).max())
    pi = stationary(chain)
    depth = b_min - level
    # ---- the untruncated proof
    ae, b_max = L.mean_tokens, L.b_max
    a_top = max(L.support)
    jump = float(max(b_max / L.q, a_top * L.w_max))         # |V(X_1) − V(X_0)| <= jump
    flagged, argument, statement, reason = False, "none", "", ""
    steps = threshold = head_length = n_heads = None
    bound = escape = math.nan
    wc = L.policy.name in _WORK_CONSERVING_BUILTINS and L.policy.work_conserving \
        and (L.k_max is None or L.k_max >= b_max) and (L.resident_cap is None or L.resident_cap >= b_max)
    if ae - b_max >= eps:
        flagged, argument, steps, threshold, bound, escape = True, "budget bound", 1, 0, ae - b_max, -math.inf
        statement = (
            f"Budget bound (Li, Dai, Peng arXiv 2504.07347, Thm 2(a)): no batch holds more than b_max = {b_max} tokens, "
            f"so in every state the drift of V = tokens left is >= λ̄·E[v] − b_max = {ae:.6g} − {b_max} = "
            f"{ae - b_max:.6g} >= ε, with |ΔV| <= {jump:g}; by the transience criterion with bounded jumps "
            "(module text) V(X_n)/n → >= that rate a.s.: not positive recurrent, from every state.")
    elif wc:
        reason = (f"{L.policy.name} is work-conserving and λ̄·E[v] = {ae:.6g} < b_max = {b_max}"
                  + (": drift_certificate proves it stable" if ae - b_max <= -eps and L.p_no_arrival > 0
                     else " (critical or near-critical load)"))
    else:
        an = _level_independent(chain, L, max_steps, max_head, max_states)
        if an.heads is None:
            reason = f"level-independent argument not available: {an.reason}"
        else:
            hd = an.heads
            head_length, n_heads = hd.H, len(hd.heads)
            best = np.array([(k + 1) * ae - an.hi[k].max() if n_heads else -math.inf for k in range(max_steps)])
            ok = np.flatnonzero(best >= eps)
            if not n_heads:
                reason = (f"the untruncated chain has a finite reachable state space ({hd.n_low_states} states, "
                          f"fewer than {hd.N} requests each)")
            elif ok.size:
                k = int(ok[0]) + 1
                Nk = hd.N + (k - 1) * L.s
                C = (Nk - 1) * L.w_max              # V > C forces >= Nk requests (each holds <= w_max)
                if _reaches(L, hd, C):
                    flagged, argument, steps, threshold = True, "level-independent", k, Nk
                    bound, escape = float(best[k - 1]), float(C)
                    statement = (
                        f"Transience criterion with bounded jumps (module text; Lamperti 1960; Fayolle, Malyshev & "
                        f"Menshikov 1995, §2.2; Meyn & Tweedie 2009, Thm 8.4.2) for the {k}-step chain, V = tokens "
                        f"left: from every state with at least {Nk} requests the next {k} batches depend only on the "
                        f"first {hd.H} requests ({n_heads} reachable heads, all checked local; tails are fresh "
                        f"arrivals), so the {k}-step drift is a function of the head, the same at every level; its "
                        f"smallest value over heads and refills is {bound:.6g} tokens ({bound / k:.6g} per batch) "
                        f">= ε; |ΔV| <= {jump:g} per batch; V > {C:g} forces at least {Nk} requests and a state "
                        f"with V > {C:g} is reachable from the empty state; so V(X_n) → ∞ with positive "
                        "probability: not positive recurrent"
                        + (" (transient: irreducible as P(A = 0) > 0)." if L.p_no_arrival > 0 else "."))
                else:
                    reason = (f"positive {k}-step drift beyond {Nk} requests, but no reachable state with V > {C:g} "
                              "was found")
            else:
                kb = int(np.argmax(best)) + 1
                bound = float(best[kb - 1])
                reason = (f"level-independent argument (head length {hd.H}, {n_heads} heads): no k <= {max_steps} "
                          f"gives a positive k-step drift on all high states; the best bound is {bound:.6g} tokens "
                          f"per {kb} batches")
    return InstabilityWitness(
        policy=chain.engine.policy.name, eps=eps, level=level, n_states_in_set=int(in_set.sum()),
        min_drift_in_set=float(d[in_set].min()) if in_set.any() else math.nan, max_one_step_fall=fall,
        boundary_min_v=b_min, depth=depth, stationary_mass_in_set=float(pi[v >= level].sum()),
        truncation_mass=float(pi @ chain.loss_prob), truncated_flagged=bool(in_set.any() and depth > 0),
        flagged=bool(flagged), scope="untruncated" if flagged else "truncated", argument=argument,
        statement=statement if flagged else f"no proof for the untruncated chain: {reason}",
        reason="" if flagged else reason, lyapunov=TOKENS_LEFT, steps=steps, threshold_requests=threshold,
        drift_bound=float(bound), drift_bound_per_batch=float(bound / steps) if steps else math.nan,
        escape_level=float(escape), max_jump=jump, head_length=head_length, n_heads=n_heads)
