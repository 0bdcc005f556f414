"""Hypothesis strategies for fluidllm's objects: engine states (policy views), engines, length laws,
arrival processes, workloads, batch-time models and whole models.

The state strategies generate what the engine can show a policy at a batch boundary (see
:mod:`fluidllm.sim.reference`): resident requests in FCFS order with strictly increasing ids (gaps
allowed, so a policy cannot assume ids 0..n-1), ``arrival_index = id``, prefill and decode left
(never both zero), ``running = True`` whenever the prompt is done (a request past its prefill has
been served), optionally a per-batch request cap k_max, KV free space and a static group. Every
strategy shrinks towards small budgets, few requests and short lengths, so a failing state found by
hypothesis is a small one.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from . import _hypothesis  # noqa: F401  (a clear ImportError without hypothesis)
from hypothesis import strategies as st

from .. import model as F
from ..model.policy import POLICIES, PolicySpec
from ..sim.reference import RequestView, View

__all__ = ["BUDGETS", "views", "view_batches", "length_laws", "joint_laws", "arrivals", "policies", "batch_times",
           "engines", "workloads", "models", "names"]

finite = dict(allow_nan=False, allow_infinity=False)


# ------------------------------------------------------------------------------- engine states

#: Token budgets b_max of generated states: mostly small (1..16, where failures shrink to), and
#: some up to 1024, so that thresholds in a policy (caps, chunk sizes) are crossed too.
BUDGETS = st.one_of(st.integers(1, 16), st.integers(17, 1024))


def _flag(draw: Any, value: Any, on: Any) -> Any:
    """``value``: False/None → off, True → draw from ``on``, ``"sometimes"`` → None or a draw from
    ``on`` (shrinks to None), a strategy → draw from it, else the value itself."""
    if value is False or value is None:
        return None
    if value is True:
        return draw(on)
    if value == "sometimes":
        return draw(st.one_of(st.none(), on))
    if isinstance(value, st.SearchStrategy):
        return draw(value)
    return value


def _requests(draw: Any, b_max: int, max_requests: int, max_prefill: int | None, max_decode: int,
              classes: int, min_requests: int) -> tuple[RequestView, ...]:
    # prompts up to b_max/2, b_max or 3·b_max (so that states with little prefill demand are common)
    pmax = draw(st.sampled_from([max(1, b_max // 2), b_max, 3 * b_max])) if max_prefill is None else max_prefill
    one = st.tuples(st.integers(0, pmax), st.integers(0, max_decode)).filter(lambda e: e[0] + e[1] > 0)
    lens = draw(st.lists(one, min_size=min_requests, max_size=max_requests))
    out = []
    rid = -1
    for p, d in lens:
        rid += 1 + draw(st.integers(0, 3))
        klass = draw(st.integers(0, classes - 1)) if classes > 1 else 0
        running = True if p == 0 else draw(st.booleans())
        out.append(RequestView(rid, p, d, klass, rid, running))
    return tuple(out)


@st.composite
def views(draw: Any, *, token_budget: Any = None, max_requests: int = 8, min_requests: int = 1,
          max_prefill: int | None = None, max_decode: int = 4, k_max: Any = False, kv: Any = False,
          resident_cap: bool = False, static_group: bool = False, classes: int = 2) -> View:
    """A :class:`~fluidllm.sim.reference.View`: what a policy sees at one batch boundary.

    Args:
        token_budget: b_max (an int, a strategy; default :data:`BUDGETS`: 1..16 mostly, up to 1024).
        max_requests, min_requests: how many resident requests.
        max_prefill: largest prefill left (default b_max/2, b_max or 3·b_max, drawn: prompts longer
            than the budget too).
        max_decode: largest decode left.
        k_max: False (none), True (drawn, 1..max_requests+1), ``"sometimes"`` (none or drawn; shrinks
            to none), an int or a strategy: ``max_batch_requests``.
        kv: False (no KV cap), True (KV free tokens drawn, 0..2·b_max), ``"sometimes"``, an int or a
            strategy: ``kv_free_tokens``; ``kv_capacity_tokens`` is then at least that.
        resident_cap: also set ``max_resident_requests`` (>= the resident count).
        static_group: draw a FasterTransformer static group among the residents.
        classes: request classes (``klass`` in 0..classes-1).
    """
    b = draw(BUDGETS) if token_budget is None else _flag(draw, token_budget, BUDGETS)
    kmax = _flag(draw, k_max, st.integers(1, max_requests + 1))
    kv_free = _flag(draw, kv, st.integers(0, 2 * b))
    reqs = _requests(draw, b, max_requests, max_prefill, max_decode, classes, min_requests)
    cap = draw(st.integers(len(reqs), len(reqs) + 4)) if resident_cap else None
    kv_cap = None if kv_free is None else kv_free + draw(st.integers(0, 64))
    group: frozenset[int] = frozenset()
    if static_group and reqs:
        group = frozenset(r.id for r in reqs if draw(st.booleans()))
    return View(b, reqs, kmax, cap, kv_cap, group, kv_free)


@st.composite
def view_batches(draw: Any, *, max_rows: int = 4, **kw: Any) -> tuple[View, ...]:
    """1..max_rows views sharing b_max and whether k_max / KV caps are set (one (R, W) slot-array
    batch of the vectorized simulator); keyword arguments as :func:`views`."""
    b = draw(BUDGETS) if kw.get("token_budget") is None else _flag(draw, kw["token_budget"], BUDGETS)
    kw = {**kw, "token_budget": b}
    kmax = kw.get("k_max")
    if kmax is True or kmax == "sometimes":       # one k_max for the whole batch (or none)
        kw["k_max"] = _flag(draw, kmax, st.integers(1, kw.get("max_requests", 8) + 1))
    if kw.get("kv") == "sometimes":               # KV cap on every row or on none
        kw["kv"] = draw(st.booleans())
    return tuple(draw(st.lists(views(**kw), min_size=1, max_size=max_rows)))


# ------------------------------------------------------------------------------- model objects


@st.composite
def length_laws(draw: Any, min_at_least: int = 0, depth: int = 1, scale: float = 500.0) -> F.LengthLaw:
    """Any marginal length law whose support starts at ``>= min_at_least``, means up to ~``scale``.

    Lognormal parameters are kept where its exact moments are cheap (sigma <= 0.8, mean <= 300).
    """
    lo = min_at_least
    kinds = ["deterministic", "geometric", "poisson", "uniform", "lognormal", "empirical"]
    if depth > 0:
        kinds.append("mixture")
    kind = draw(st.sampled_from(kinds))
    if kind == "deterministic":
        return F.Deterministic(draw(st.integers(lo, lo + int(10 * scale))))
    if kind in ("geometric", "poisson"):
        mn = draw(st.integers(lo, lo + 3))
        mean = draw(st.floats(mn, mn + scale, **finite))
        return (F.Geometric if kind == "geometric" else F.Poisson)(mean, mn)
    if kind == "uniform":
        low = draw(st.integers(lo, lo + 200))
        return F.Uniform(low, draw(st.integers(low, low + int(6 * scale))))
    if kind == "lognormal":
        # ceil(Y) >= 1 always: fine for any min_at_least <= 1
        return F.Lognormal(draw(st.floats(0.5, min(300.0, scale), **finite)),
                           draw(st.floats(0.05, 0.8 if scale >= 300 else 0.5, **finite)))
    if kind == "empirical":
        vals = draw(st.lists(st.integers(lo, lo + int(40 * scale)), min_size=1, max_size=40))
        return F.Empirical(np.array(vals))
    n = draw(st.integers(1, 3))
    raw = draw(st.lists(st.floats(0.05, 1.0, **finite), min_size=n, max_size=n))
    w = [x / sum(raw) for x in raw]
    w[-1] = 1.0 - sum(w[:-1])
    comps = [draw(length_laws(min_at_least=lo, depth=depth - 1, scale=scale)) for _ in range(n)]
    return F.Mixture(tuple(w), tuple(comps))


@st.composite
def joint_laws(draw: Any) -> Any:
    """A joint (prefill, decode) law: empirical pairs, or independent marginals (prefill >= 1)."""
    if draw(st.booleans()):
        n = draw(st.integers(1, 30))
        pre = draw(st.lists(st.integers(1, 9000), min_size=n, max_size=n))
        dec = draw(st.lists(st.integers(0, 2000), min_size=n, max_size=n))
        return F.EmpiricalPairs(np.array(pre), np.array(dec))
    return F.Independent(draw(length_laws(min_at_least=1)), draw(length_laws()))


@st.composite
def arrivals(draw: Any) -> Any:
    """An arrival process: Poisson, deterministic, renewal or trace replay."""
    kind = draw(st.sampled_from(["poisson", "deterministic", "renewal", "trace"]))
    rate = draw(st.floats(0.0, 1e4, **finite))
    if kind == "poisson":
        return F.PoissonArrival(rate)
    if kind == "deterministic":
        return F.DeterministicArrival(rate, draw(st.floats(0.0, 1e5, **finite)))
    if kind == "renewal":
        return F.RenewalArrival(rate, draw(st.floats(0.01, 50.0, **finite)),
                                draw(st.sampled_from(["gamma", "lognormal", "weibull"])))
    gaps = draw(st.lists(st.floats(0.0, 1e4, **finite), min_size=1, max_size=20))
    speed = draw(st.sampled_from([1.0, 0.5, 2.0, 7.25]))
    return F.TraceArrival(np.concatenate([[0.0], np.cumsum(gaps)]), speed)


@st.composite
def policies(draw: Any) -> PolicySpec:
    """A :class:`PolicySpec` of any kind with valid flags (a ``python`` one names a file it does not load)."""
    name = draw(st.sampled_from(sorted(POLICIES)))
    opts: dict = {}
    if name in ("fastertransformer", "fastertransformer-static", "vllm") and draw(st.booleans()):
        opts["split_long_prompts"] = draw(st.booleans())
    if name in ("orca", "sarathi", "vllm-v1") and draw(st.booleans()):
        opts["chunk_size"] = draw(st.one_of(st.none(), st.integers(1, 4096)))
    if name == "vllm-v1" and draw(st.booleans()):
        opts["preemption"] = "recompute"
    if name == "priority":
        opts["inner"] = draw(st.sampled_from(["kfcfs", "sarathi", "orca", "vllm"]))
        opts["order"] = draw(st.lists(st.sampled_from(["a", "b", "chat", "code"]), max_size=3))
    if name in ("wait", "nested-wait"):
        opts["thresholds"] = draw(st.lists(st.integers(1, 1000), max_size=3))
    if name == "python":
        opts["target"] = "/plugins/my_policy.py:MyPolicy"   # absolute: a model file round-trips it
    return PolicySpec(name, opts)


@st.composite
def batch_times(draw: Any, token_budget: int) -> Any:
    """A batch-time model of any kind (a table covers 1..token_budget)."""
    kind = draw(st.sampled_from(["constant", "affine", "piecewise-linear", "staircase", "two-feature",
                                 "table", "preset"]))
    c = draw(st.floats(0.01, 100.0, **finite))
    a = draw(st.floats(0.0, 50.0, **finite))
    if kind == "constant":
        return F.Constant(c)
    if kind == "affine":
        return F.Affine(c, a)
    if kind == "piecewise-linear":
        return F.PiecewiseLinear(c, a, draw(st.integers(0, 1024)))
    if kind == "staircase":
        return F.Staircase(c, a, draw(st.integers(1, 1024)))
    if kind == "two-feature":
        return F.TwoFeature(c, a, draw(st.integers(0, 1024)), draw(st.floats(0, 1, **finite)),
                            draw(st.floats(0, 1e-3, **finite)), draw(st.floats(0, 1e-5, **finite)))
    if kind == "preset":
        from ..presets import get_preset, preset_names

        return get_preset(draw(st.sampled_from(preset_names())))
    inner = draw(st.lists(st.integers(2, token_budget + 500), max_size=8, unique=True))
    tokens = sorted({1, token_budget, *inner})
    if len(tokens) < 2:
        tokens = [1, 2]
    times = np.cumsum(draw(st.lists(st.floats(0.01, 20.0, **finite), min_size=len(tokens),
                                    max_size=len(tokens))))
    return F.Table(np.array(tokens, float), times)


@st.composite
def engines(draw: Any, name: str = "e", policy: Any = None) -> F.Engine:
    """An engine: budget 1..4096, any batch time, optional caps, any policy (or ``policy``: a spec or strategy)."""
    b = draw(st.integers(1, 4096))
    cap = st.one_of(st.none(), st.integers(1, 10**6))
    bt, kmax, rescap, kv = draw(batch_times(b)), draw(cap), draw(cap), draw(cap)
    if policy is None:
        pol = draw(policies())
    elif isinstance(policy, st.SearchStrategy):
        pol = draw(policy)
    else:
        pol = policy
    return F.Engine(name, b, bt, kmax, rescap, kv, pol)


names = st.from_regex(r"[a-z][a-z0-9_-]{0,7}", fullmatch=True)


@st.composite
def workloads(draw: Any, name: str = "w", engine: str = "e") -> F.Workload:
    """A workload on ``engine``: any arrival process and joint length law."""
    return F.Workload(name, draw(arrivals()), draw(joint_laws()), engine)


@st.composite
def models(draw: Any) -> F.Model:
    """A model of 1..3 engines and 0..3 workloads, each on one of them."""
    enames = draw(st.lists(names, min_size=1, max_size=3, unique=True))
    eng = {n: draw(engines(n)) for n in enames}
    wnames = draw(st.lists(names, max_size=3, unique=True))
    wl = {n: F.Workload(n, draw(arrivals()), draw(joint_laws()), draw(st.sampled_from(enames))) for n in wnames}
    return F.Model(eng, wl)
