"""Hypothesis strategies for fluidllm's objects: engine states (policy views), engines, length laws,
arrival processes, workloads, batch-time models and whole models.

The state strategies (:func:`states`, :func:`view_batches`) generate only what the engine can show a
policy at a batch boundary inside an :class:`~fluidllm.testing.envelope.Envelope` (the model's own
limits and length laws, or :data:`~fluidllm.testing.envelope.DEFAULT_ENVELOPE`; "reachable" is
defined there, rules R1–R6): every request from a history (v_p, v_d, decode tokens done, KV held),
a KV state after the engine's preemptions, no limit the engine does not have. A state is a few
groups of identical requests (so hundreds of requests cost a few draws), in FCFS order with
strictly increasing ids (gaps allowed, so a policy cannot assume ids 0..n-1); everything shrinks
towards few requests, small budgets, short lengths and no caps, so a failing state found by
hypothesis is a small one.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from . import _hypothesis  # noqa: F401  (a clear ImportError without hypothesis)
from hypothesis import strategies as st

from .. import model as F
from ..model.policy import POLICIES, PolicySpec
from ..sim.reference import View
from .envelope import DEFAULT_ENVELOPE, Envelope, Hist, Support, _Maker, make_view

__all__ = ["states", "view_batches", "length_laws", "joint_laws", "arrivals", "policies", "batch_times",
           "engines", "workloads", "models", "names"]

finite = dict(allow_nan=False, allow_infinity=False)


# ------------------------------------------------------------------------------- engine states

_DRAW = object()

# A few strategies made once: drawing from a cached strategy is much cheaper than building one per draw.
_SMALL = [st.integers(0, k) for k in range(16)]
_WIDE = st.integers(0, (1 << 31) - 1)
_BOOL = st.booleans()


def _int(draw: Any, lo: int, hi: int) -> int:
    """An int in [lo, hi], shrinking to lo; hypothesis's bias to small numbers carries over."""
    span = hi - lo
    if span <= 0:
        return lo
    if span < 16:
        return lo + draw(_SMALL[span])
    return lo + draw(_WIDE) % (span + 1)


def _in_range(draw: Any, lo: int, hi: int, *special: int) -> int:
    """An int in [lo, hi]: small ones most often (shrinks to lo), some special values, any value."""
    if lo == hi:
        return lo
    branch = draw(_SMALL[3])
    if branch <= 1:
        return _int(draw, lo, min(hi, lo + 15))
    if branch == 2:
        picks = sorted({x for x in special if lo <= x <= hi} | {lo, hi})
        return picks[_int(draw, 0, len(picks) - 1)]
    return _int(draw, lo, hi)


def _cap(draw: Any, r: tuple[int, int] | None, optional: bool, *special: int) -> int | None:
    if r is None or (optional and not draw(_BOOL)):
        return None
    return _in_range(draw, r[0], r[1], *special)


def _value(draw: Any, s: Support | None, lo: int, hi: int) -> int | None:
    """A value of ``s`` in [lo, hi] (shrinks to the smallest), None if there is none: an end of an
    interval or any value in it."""
    if s is None:
        return None
    i, j = s.span(lo, hi)
    if i >= j:
        return None
    a, b = s.intervals[_int(draw, i, j - 1)]
    a, b = max(a, lo), min(b, hi)
    how = draw(_SMALL[3])
    return a if how == 0 else b if how == 1 else _int(draw, a, b)


def _history(draw: Any, env: Envelope, mk: _Maker, M: int | None) -> Hist | None:
    """One request's history (klass, v_p, v_d, dd, kv) inside the envelope (rules R1–R4)."""
    c = _int(draw, 0, len(env.classes) - 1)
    Sp, Sd = mk._sup(c)
    vp = _value(draw, Sp, 0, 1 << 40)
    if vp is None:
        return None
    vd = _value(draw, Sd, 0 if vp > 0 else 1, (M - vp) if M is not None else 1 << 40)
    if vd is None:
        return None
    phases = ["fresh", "prefilling", "decoding"] + (["preempted", "recomputing"] if M is not None else [])
    phase = phases[_int(draw, 0, len(phases) - 1)]
    if phase == "prefilling" and vp >= 2:
        return (c, vp, vd, 0, _int(draw, 1, vp - 1))
    if phase == "decoding" and vd >= 1:
        dd = _int(draw, 0, vd - 1)
        return (c, vp, vd, dd, vp + dd)
    if phase in ("preempted", "recomputing") and vd >= 1:
        dd = _int(draw, 0, vd - 1)
        kv = 0 if phase == "preempted" or vp + dd < 2 else _int(draw, 1, vp + dd - 1)
        return (c, vp, vd, dd, kv)
    return (c, vp, vd, 0, 0)


_MAKERS: dict[tuple[Envelope, int, int | None], _Maker] = {}


def _maker(env: Envelope, b: int, M: int | None) -> _Maker:
    key = (env, b, M)
    if key not in _MAKERS:
        if len(_MAKERS) > 256:
            _MAKERS.clear()
        _MAKERS[key] = _Maker(env, b, M)
    return _MAKERS[key]


def _count(draw: Any, limit: int) -> int:
    branch = draw(_SMALL[9])
    top = min(4, limit) if branch < 6 else min(64, limit) if branch < 9 else limit
    return _int(draw, 1, max(1, top))


@st.composite
def states(draw: Any, envelope: Envelope | None = None, *, token_budget: int | None = None, k_max: Any = _DRAW,
           kv: bool | None = None, min_requests: int = 1) -> View:
    """A :class:`~fluidllm.sim.reference.View` the engine can show a policy inside ``envelope``.

    Args:
        envelope: the limits and lengths (default :data:`~fluidllm.testing.envelope.DEFAULT_ENVELOPE`);
            give ``envelope.for_policy(policy)`` for a whole-prompt built-in or fastertransformer-static.
        token_budget: fix b_max (must lie in the envelope's range); default: drawn.
        k_max: fix ``max_batch_requests`` (an int or None); default: drawn as the envelope says.
        kv: force a KV cap on (True) or off (False) where the envelope makes it optional.
        min_requests: fewest resident requests.

    A state is 1–6 groups of identical requests (1–4 mostly, up to 64, sometimes up to the most the
    envelope allows), optionally interleaved; requests of a fastertransformer-static envelope are
    fresh unless a static group (the served ones) runs (R6).
    """
    env = DEFAULT_ENVELOPE if envelope is None else envelope
    b = _in_range(draw, *env.token_budget, 2, 3, 4, 127, 128, 129, 256, 512) if token_budget is None \
        else token_budget
    k = _cap(draw, env.max_batch_requests, env.caps_optional, 2, 4, 128, 256) if k_max is _DRAW else k_max
    rc = _cap(draw, env.max_resident_requests, env.caps_optional, 128, 256)
    kv_range = env.kv_capacity_tokens
    if kv is not None and kv_range is not None and env.caps_optional:
        M = _in_range(draw, kv_range[0], min(kv_range[1], 64), 2 * b) if kv else None
        if kv and draw(_BOOL):
            M = _in_range(draw, *kv_range, 2 * b, 64 * b)
    else:
        M = _cap(draw, kv_range, env.caps_optional, 2 * b, 64 * b)
    mk = _maker(env, b, M)
    limit = env.resident_limit if rc is None else min(rc, env.resident_limit)
    groups: list[list[Hist]] = []
    for _ in range(1 + draw(_SMALL[5])):
        h = _history(draw, env, mk, M)
        if h is not None:
            groups.append([h] * _count(draw, limit))
    if len(groups) > 1 and draw(_BOOL):   # interleave the groups
        hists = [g[i] for i in range(max(map(len, groups))) for g in groups if i < len(g)]
    else:
        hists = [h for g in groups for h in g]
    hists = hists[:limit]
    group: frozenset[int] = frozenset()
    served = [i for i, h in enumerate(hists) if h[4] > 0 or h[3] > 0]
    if env.static_group and not (served and draw(_BOOL)):
        hists = [(c, vp, vd, 0, 0) for c, vp, vd, _, _ in hists]   # no group runs: every resident is fresh
        served = []
    start, stride = draw(_SMALL[3]), (1, 1, 2, 3)[draw(_SMALL[3])]
    ids = [start + stride * i for i in range(len(hists))]
    if env.static_group and served:
        group = frozenset(ids[i] for i in served)
    v = make_view(env, b, k, rc, M, hists, ids, group) if len(hists) >= min_requests else None
    if v is None:   # nothing the envelope could hold: the smallest state there is
        c, vp, vd, _, _ = mk.fresh(0) or (0, 1, 0, 0, 0)
        v = make_view(env, b, k, rc, M, [(c, vp, vd, 0, 0)] * max(1, min_requests), None, frozenset())
    assert v is not None
    return v


@st.composite
def view_batches(draw: Any, envelope: Envelope | None = None, *, max_rows: int = 4) -> tuple[View, ...]:
    """1..max_rows states sharing b_max, k_max and whether a KV cap is set (one (R, W) slot-array
    batch of the vectorized simulator), each as :func:`states` draws it."""
    env = DEFAULT_ENVELOPE if envelope is None else envelope
    b = _in_range(draw, *env.token_budget, 2, 3, 4, 127, 128, 129, 256, 512)
    k = _cap(draw, env.max_batch_requests, env.caps_optional, 2, 4, 128, 256)
    kv = draw(_BOOL) if env.caps_optional and env.kv_capacity_tokens is not None else None
    return tuple(draw(st.lists(states(env, token_budget=b, k_max=k, kv=kv), min_size=1, max_size=max_rows)))


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
