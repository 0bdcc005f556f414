"""State envelopes: which engine states the judge may show a policy, built only as the engine reaches them.

An :class:`Envelope` is what one engine can present to a policy at a batch boundary: its token
budget b_max, its caps — ``max_batch_requests`` (k_max per batch), ``max_resident_requests``
(admission) and ``kv_capacity_tokens`` (M) — each fixed, absent, or (the default envelope) a range
that is sometimes absent, the request classes with the support of their (v_p, v_d) laws, and the
most requests resident at once. :func:`envelope_for` derives it from a model's engine (its limits,
nothing more: a limit the model does not have is never shown), :data:`DEFAULT_ENVELOPE` stands for
every engine fluidllm models up to real scale.

Reachability (the engine of :mod:`fluidllm.sim.reference`, design.md "The model"). A resident request
has a history (v_p, v_d, dd, kv): v_p and v_d in the support of its class's laws, dd decode tokens
produced so far, kv the KV tokens it holds (tokens processed since it last started). The policy sees
``prefill_left`` p = v_p + dd − kv, ``decode_left`` d = v_d − dd, ``running`` = kv > 0,
``kv_tokens`` = kv (preemption moves kv back into the prefill: p + d + kv = v_p + v_d always).

* R1 not complete: p + d ≥ 1; 0 ≤ dd < v_d (dd = 0 when v_d = 0): the last decode token completes it.
* R2 no KV cap (nothing is ever preempted): dd > 0 ⇒ p = 0 (decode starts after the whole prompt);
  a request not running is fresh (p = v_p, d = v_d).
* R3 KV cap M: v_p + v_d ≤ M (K2: a larger request is set aside, never resident); 0 ≤ kv ≤ v_p + dd
  (a preempted request recomputes its prompt and its dd decode tokens as prefill, K3); U = Σ kv ≤ M
  and ``kv_free_tokens`` = M − U ≥ min(#decoding, b_max, k_max) (K3 ran before planning).
* R4 whole-prompt rules (fastertransformer, fastertransformer-static, vllm without
  ``split_long_prompts``): v_p ≤ b_max (a longer prompt is set aside when it arrives).
* R5 at most ``max_resident_requests`` resident; ids strictly increasing in FCFS order (gaps allowed),
  ``arrival_index`` = id; ``klass`` = the class's index in the envelope.
* R6 ``static_group`` (engine memory of fastertransformer-static only, empty for every other policy):
  no group ⇒ every resident is fresh; members have been served (kv > 0, or preempted under a KV cap);
  non-members are fresh.

Not covered: ``initial`` requests of :func:`~fluidllm.sim.reference.simulate_reference` that start
running without KV context, and network calls that inherit KV (their kv starts at the context).
Lengths are drawn up to the :data:`QUANTILE` of each law (a bounded law: its whole support).
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from ..errors import require
from ..sim.reference import RequestView, View

__all__ = ["Support", "RequestClass", "Envelope", "DEFAULT_ENVELOPE", "QUANTILE", "envelope_for", "resolve_envelope",
           "policy_traits", "unreachable", "structured_states", "make_view", "Hist"]

#: Lengths are drawn up to this quantile of each length law (bounded laws: the whole support).
QUANTILE = 0.999

#: A request's history (klass, v_p, v_d, dd, kv), see the module text.
Hist = tuple[int, int, int, int, int]


# ------------------------------------------------------------------------------------- supports


@dataclass(frozen=True)
class Support:
    """A finite set of token counts as sorted, disjoint, inclusive intervals ``((lo, hi), ...)``."""

    intervals: tuple[tuple[int, int], ...]
    _los: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        iv = tuple(sorted((int(a), int(b)) for a, b in self.intervals))
        require(len(iv) > 0 and all(0 <= a <= b for a, b in iv), "support", list(iv),
                "must be non-empty intervals (lo, hi) with 0 <= lo <= hi")
        merged: list[tuple[int, int]] = []
        for a, b in iv:
            if merged and a <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(merged[-1][1], b))
            else:
                merged.append((a, b))
        object.__setattr__(self, "intervals", tuple(merged))
        object.__setattr__(self, "_los", tuple(a for a, _ in merged))

    @classmethod
    def of(cls, values: Iterable[int]) -> "Support":
        """The support of a set of integers."""
        v = np.unique(np.asarray(list(values), dtype=np.int64))
        require(v.size > 0, "support", [], "must hold at least one value")
        cut = np.flatnonzero(np.diff(v) > 1)
        starts = np.concatenate([[0], cut + 1])
        ends = np.concatenate([cut, [v.size - 1]])
        return cls(tuple((int(v[a]), int(v[b])) for a, b in zip(starts, ends)))

    @property
    def min(self) -> int:
        return self.intervals[0][0]

    @property
    def max(self) -> int:
        return self.intervals[-1][1]

    def __contains__(self, x: object) -> bool:
        if not isinstance(x, (int, np.integer)):
            return False
        i = bisect.bisect_right(self._los, int(x)) - 1
        return i >= 0 and x <= self.intervals[i][1]

    def first_in(self, lo: int, hi: int) -> int | None:
        """The smallest value in [lo, hi], or None."""
        if lo > hi:
            return None
        i = max(bisect.bisect_right(self._los, lo) - 1, 0)
        for a, b in self.intervals[i:]:
            if a > hi:
                return None
            if b >= lo:
                return max(a, lo)
        return None

    def last_in(self, lo: int, hi: int) -> int | None:
        """The largest value in [lo, hi], or None."""
        if lo > hi:
            return None
        i = bisect.bisect_right(self._los, hi) - 1
        while i >= 0:
            a, b = self.intervals[i]
            if b < lo:
                return None
            return min(b, hi)
        return None

    def near(self, x: int, lo: int = 0, hi: int | None = None) -> int | None:
        """The value in [lo, hi] closest to ``x`` (the smaller one on a tie), or None."""
        hi = self.max if hi is None else hi
        below = self.last_in(lo, min(x, hi))
        above = self.first_in(max(x, lo), hi)
        if below is None:
            return above
        if above is None or x - below <= above - x:
            return below
        return above

    def span(self, lo: int, hi: int) -> tuple[int, int]:
        """Indices [i, j) of the intervals that meet [lo, hi]."""
        i = max(bisect.bisect_right(self._los, lo) - 1, 0)
        if i < len(self.intervals) and self.intervals[i][1] < lo:
            i += 1
        return i, bisect.bisect_right(self._los, hi)

    def clip(self, lo: int, hi: int) -> "Support | None":
        """The part in [lo, hi] (None: empty)."""
        if lo <= self.min and hi >= self.max:
            return self
        i, j = self.span(lo, hi)
        iv = tuple((max(a, lo), min(b, hi)) for a, b in self.intervals[i:j])
        return Support(iv) if iv else None

    def size(self) -> int:
        return sum(b - a + 1 for a, b in self.intervals)

    def values(self) -> Iterator[int]:
        for a, b in self.intervals:
            yield from range(a, b + 1)

    def text(self) -> str:
        parts = [str(a) if a == b else f"{a}..{b}" for a, b in self.intervals[:4]]
        more = len(self.intervals) - 4
        return "{" + ", ".join(parts) + (f", … {more} more ranges" if more > 0 else "") + "}"

    def to_list(self) -> list[list[int]]:
        return [[a, b] for a, b in self.intervals]


def _law_support(law: Any, quantile: float = QUANTILE) -> Support:
    """The values of a marginal length law with positive mass, up to its ``quantile``."""
    lo = int(law.min_value)
    top = law.max_value
    if math.isfinite(top) and top - lo <= 2_000_000:
        hi = int(top)
    else:
        hi = int(law.support_upto(1e-7))
    ks = np.arange(0, hi + 1, dtype=np.int64)
    pm = np.asarray(law.pmf(ks), dtype=float)
    cdf = np.cumsum(pm)
    q = int(np.searchsorted(cdf, quantile * cdf[-1]))
    keep = ks[(pm > 0) & (ks <= max(q, lo))]
    return Support.of(keep if keep.size else [lo])


def _pairs_support(values: np.ndarray, quantile: float = QUANTILE) -> Support:
    v = np.asarray(values, dtype=np.int64)
    q = int(np.quantile(v, quantile, method="higher"))
    return Support.of(v[v <= q])


@dataclass(frozen=True)
class RequestClass:
    """One request class as the envelope draws it: its name and the supports of v_p and v_d."""

    name: str
    prefill: Support
    decode: Support

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "prefill": self.prefill.to_list(), "decode": self.decode.to_list()}


def _class_of(name: str, lengths: Any) -> RequestClass:
    if hasattr(lengths, "prefill") and hasattr(lengths.prefill, "pmf"):
        return RequestClass(name, _law_support(lengths.prefill), _law_support(lengths.decode))
    return RequestClass(name, _pairs_support(lengths.prefill), _pairs_support(lengths.decode))


# ------------------------------------------------------------------------------------- envelopes

Range = tuple[int, int]


@dataclass(frozen=True)
class Envelope:
    """The engine states a judge may generate (see the module text for what "reachable" means).

    Attributes:
        token_budget: b_max, an inclusive range (lo, hi) (a model: (b, b)).
        max_batch_requests, max_resident_requests, kv_capacity_tokens: each None (the engine has no
            such limit: never shown) or an inclusive range (a model: (v, v)); tokens for M.
        caps_optional: each cap above is also absent in some states (the default envelope).
        max_requests: most resident requests in one state (also bounded by the resident cap).
        classes: the request classes (``klass`` = index), with their length supports.
        whole_prompts: R4 (set by :meth:`for_policy` for whole-prompt built-ins).
        static_group: R6, states carry a fastertransformer-static group (set by :meth:`for_policy`).
        source: where it comes from, in words.

    Raises:
        ModelError: an empty or inverted range, a range below 1, no class.
    """

    token_budget: Range
    max_batch_requests: Range | None = None
    max_resident_requests: Range | None = None
    kv_capacity_tokens: Range | None = None
    caps_optional: bool = False
    max_requests: int = 512
    classes: tuple[RequestClass, ...] = ()
    whole_prompts: bool = False
    static_group: bool = False
    source: str = "envelope given"

    def __post_init__(self) -> None:
        for key in ("token_budget", "max_batch_requests", "max_resident_requests", "kv_capacity_tokens"):
            v = getattr(self, key)
            if v is None:
                require(key != "token_budget", key, v, "must be a range (lo, hi) of integers >= 1")
                continue
            if isinstance(v, (int, np.integer)):
                v = (int(v), int(v))
            require(isinstance(v, (tuple, list)) and len(v) == 2 and all(isinstance(x, (int, np.integer)) for x in v)
                    and 1 <= v[0] <= v[1], f"envelope.{key}", v, "must be None or a range (lo, hi), 1 <= lo <= hi")
            object.__setattr__(self, key, (int(v[0]), int(v[1])))
        require(isinstance(self.max_requests, int) and self.max_requests >= 1, "envelope.max_requests",
                self.max_requests, "must be an integer >= 1")
        classes = tuple(self.classes) or DEFAULT_CLASSES
        require(all(isinstance(c, RequestClass) for c in classes), "envelope.classes", classes,
                "must be RequestClass objects")
        object.__setattr__(self, "classes", classes)

    # -- derived
    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.classes)

    @property
    def resident_limit(self) -> int:
        """Most residents in a state: max_requests, and at most the largest resident cap."""
        rc = self.max_resident_requests
        return self.max_requests if rc is None or self.caps_optional else min(self.max_requests, rc[1])

    def for_policy(self, policy: Any) -> "Envelope":
        """This envelope with the engine rules the policy's own flags bring (R4, R6)."""
        t = policy_traits(policy)
        return replace(self, whole_prompts=t["whole_prompts"], static_group=t["static_group"])

    def text(self) -> str:
        def lim(name: str, r: Range | None, unit: str = "") -> str:
            if r is None:
                return f"no {name}"
            v = f"{r[0]}{unit}" if r[0] == r[1] else f"{r[0]}..{r[1]}{unit}"
            return f"{name} {v}" + (" or none" if self.caps_optional else "")
        b = self.token_budget
        parts = [f"b_max {b[0]}" if b[0] == b[1] else f"b_max {b[0]}..{b[1]}",
                 lim("k_max", self.max_batch_requests), lim("resident cap", self.max_resident_requests),
                 lim("KV limit", self.kv_capacity_tokens, " tokens"),
                 f"up to {self.resident_limit} resident requests"]
        cls = "; ".join(f"class {c.name}: v_p in {c.prefill.text()}, v_d in {c.decode.text()}" for c in self.classes)
        rules = [r for r, on in (("whole prompts <= b_max", self.whole_prompts),
                                 ("static groups", self.static_group)) if on]
        rc = self.max_resident_requests
        if rc is not None and rc[1] < b[0] and not self.caps_optional:
            rules.append(f"the resident cap {rc[1]} is below b_max: a batch of decoders alone never fills the "
                         "budget whatever the policy (an engine limit, in the capacity LP; demand counts residents)")
        return f"{self.source}: " + ", ".join(parts) + f"; {cls}" + (f"; {', '.join(rules)}" if rules else "")

    def to_dict(self) -> dict[str, Any]:
        lst = lambda r: None if r is None else list(r)  # noqa: E731
        return {"source": self.source, "token_budget": list(self.token_budget),
                "max_batch_requests": lst(self.max_batch_requests),
                "max_resident_requests": lst(self.max_resident_requests),
                "kv_capacity_tokens": lst(self.kv_capacity_tokens), "caps_optional": self.caps_optional,
                "max_requests": self.resident_limit, "classes": [c.to_dict() for c in self.classes],
                "whole_prompts": self.whole_prompts, "static_group": self.static_group, "quantile": QUANTILE}


#: Default classes: prompts 1..8192 tokens, outputs 0..4096 tokens (two classes, for class-aware rules).
DEFAULT_CLASSES = (RequestClass("a", Support(((1, 8192),)), Support(((0, 4096),))),
                   RequestClass("b", Support(((1, 8192),)), Support(((0, 4096),))))

#: Every engine fluidllm models, up to real scale: b_max 1..4096; k_max and resident caps 1..256 and
#: a KV limit of 1..2^20 tokens, each also absent; up to 4098 resident requests (b_max + 2 decoders);
#: the two classes of :data:`DEFAULT_CLASSES`.
DEFAULT_ENVELOPE = Envelope((1, 4096), (1, 256), (1, 256), (1, 1 << 20), caps_optional=True, max_requests=4098,
                            classes=DEFAULT_CLASSES, source="default envelope (every engine, up to real scale)")


def envelope_for(model: Any, engine: str | None = None, *, label: str | None = None) -> Envelope:
    """The envelope of one engine of ``model``: its b_max, k_max, resident cap and KV limit exactly
    (None stays None), the length supports of the classes sent to it (up to :data:`QUANTILE`), and
    up to max(512, b_max + 2, k_max + 2) resident requests (at most the resident cap, at most 8192).

    ``model``: a :class:`~fluidllm.Model` or network model, a model file path, or an
    :class:`~fluidllm.Engine` (then the default classes). ``engine``: needed when several engines
    carry load. ``label``: how the envelope's ``source`` names the model.

    Raises:
        ModelError: an unknown engine, several engines with load and none named (field ``engine``).
    """
    from pathlib import Path

    from ..model.engine import Engine

    if isinstance(model, (str, Path)):
        from ..model.io import load_model

        label = label or f"model {model}"
        model = load_model(model)
    if isinstance(model, Engine):
        eng, classes = model, DEFAULT_CLASSES
        label = f"{label + ', ' if label else ''}engine {eng.name}"
    else:
        engines = getattr(model, "engines", None)
        require(isinstance(engines, dict), "model", type(model).__name__, "must be a Model, a network model, a model "
                "file or an Engine")
        lengths = _lengths_on(model)
        if engine is None:
            used = [n for n in engines if lengths.get(n)]
            require(len(used) == 1 or len(engines) == 1, "engine", None,
                    f"must name the engine to judge on; this model has load on {used or sorted(engines)}")
            engine = used[0] if used else next(iter(engines))
        require(engine in engines, "engine", engine, f"must be one of {sorted(engines)}")
        eng = engines[engine]
        found = lengths.get(engine) or []
        classes = tuple(_class_of(n, ln) for n, ln in found) or DEFAULT_CLASSES
        label = f"{label or 'model'}, engine {engine}" + ("" if found else " (no load: default lengths)")
    fix = lambda v: None if v is None else (v, v)  # noqa: E731
    b, k, rc = eng.token_budget, eng.max_batch_requests, eng.max_resident_requests
    n = min(max(512, b + 2, (k or 0) + 2), 8192)
    if rc is not None:
        n = min(n, rc)
    return Envelope((b, b), fix(k), fix(rc), fix(eng.kv_capacity_tokens), False, n, classes, source=label)


def _lengths_on(model: Any) -> dict[str, list[tuple[str, Any]]]:
    out: dict[str, list[tuple[str, Any]]] = {}
    for w in getattr(model, "workloads", {}).values():
        out.setdefault(w.engine, []).append((w.name, w.lengths))
    for wf in getattr(model, "workflows", {}).values():
        for c in wf.calls:
            for e in c.engines:
                out.setdefault(e, []).append((f"{wf.name}.{c.id}", c.lengths))
    return out


def resolve_envelope(model: Any = None, engine: str | None = None, envelope: Envelope | None = None) -> Envelope:
    """``envelope``, else :func:`envelope_for` ``(model, engine)``, else :data:`DEFAULT_ENVELOPE`.

    Raises:
        ModelError: both a model and an envelope, or a bad model / engine.
    """
    if envelope is not None:
        require(model is None, "envelope", envelope.source, "give a model or an envelope, not both")
        require(isinstance(envelope, Envelope), "envelope", envelope, "must be an Envelope")
        return envelope
    if model is None:
        require(engine is None, "engine", engine, "needs a model")
        return DEFAULT_ENVELOPE
    return envelope_for(model, engine)


_WHOLE = ("fastertransformer", "fastertransformer-static", "vllm")


def policy_traits(policy: Any) -> dict[str, bool]:
    """The engine rules a policy's own flags bring: ``whole_prompts`` (R4) and ``static_group`` (R6).

    A built-in (anything with a ``spec`` PolicySpec) as the reference engine treats it; a plug-in
    neither (the engine never sets a plug-in's prompt aside nor keeps a static group for it).
    """
    spec = getattr(policy, "spec", None)
    if spec is None:
        return {"whole_prompts": False, "static_group": False}
    name = spec.name
    inner = spec.flag("inner") if name == "priority" else name
    split = spec.flag("split_long_prompts") if name in _WHOLE else False
    return {"whole_prompts": inner in _WHOLE and not split, "static_group": inner == "fastertransformer-static"}


# ------------------------------------------------------------------------------ reachable states


def _needed(reqs: Sequence[RequestView], b: int, k: int | None) -> int:
    """K3: the KV room the decoders need, min(#decoding, b_max, k_max)."""
    n = sum(1 for r in reqs if r.decoding)
    return min(n, b, k if k is not None else n)


def _fresh(env: Envelope, r: RequestView) -> bool:
    """Never served (nor preempted): no KV and its whole (v_p, v_d) left."""
    cl = env.classes[r.klass]
    return r.kv_tokens == 0 and r.prefill_left in cl.prefill and r.decode_left in cl.decode


_VIEWS: dict[tuple[Hist, int], RequestView] = {}


def _realize(h: Hist, rid: int) -> RequestView:
    """The request as the policy sees it (views are immutable: equal ones are shared)."""
    r = _VIEWS.get((h, rid))
    if r is None:
        if len(_VIEWS) > 500_000:
            _VIEWS.clear()
        c, vp, vd, dd, kv = h
        r = _VIEWS[(h, rid)] = RequestView(rid, vp + dd - kv, vd - dd, c, rid, kv > 0, kv)
    return r


def make_view(env: Envelope, b: int, k: int | None, rc: int | None, M: int | None, hists: Sequence[Hist],
              ids: Sequence[int] | None = None, group: Iterable[int] = ()) -> View | None:
    """The state with these limits and request histories (FCFS order), after the engine's K3
    preemptions when M is set (the last KV holder is preempted while the decoders lack room);
    None when more requests than ``rc`` / the envelope allow. ``ids``: default 0, 1, ..."""
    hs = list(hists)
    if not hs or len(hs) > env.resident_limit or (rc is not None and len(hs) > rc):
        return None
    ids = list(range(len(hs))) if ids is None else list(ids)
    reqs = [_realize(h, i) for h, i in zip(hs, ids)]
    kv_free = None
    if M is not None:
        used = sum(h[4] for h in hs)
        n_dec = sum(1 for r in reqs if r.decoding)
        j = len(hs) - 1
        while M - used < min(n_dec, b, k if k is not None else n_dec):
            while j >= 0 and hs[j][4] == 0:
                j -= 1
            if j < 0:
                break
            c, vp, vd, dd, kv = hs[j]
            n_dec -= reqs[j].decoding
            hs[j] = (c, vp, vd, dd, 0)
            reqs[j] = _realize(hs[j], ids[j])
            used -= kv
        kv_free = M - used
    return View(b, tuple(reqs), k, rc, M, frozenset(group), kv_free)


def _within(r: Range | None, v: int | None, optional: bool, what: str) -> str | None:
    if v is None:
        return None if (r is None or optional) else f"{what} is missing (the engine has {r})"
    if r is None:
        return f"{what} = {v}, but the engine has no such limit"
    if not r[0] <= v <= r[1]:
        return f"{what} = {v} is outside {r[0]}..{r[1]}"
    return None


def _request_unreachable(env: Envelope, b: int, M: int | None, r: RequestView) -> str | None:
    if not 0 <= r.klass < len(env.classes):
        return f"request {r.id}: class {r.klass} is not one of the envelope's {len(env.classes)}"
    cl = env.classes[r.klass]
    p, d, kv = r.prefill_left, r.decode_left, r.kv_tokens
    if min(p, d, kv) < 0 or p + d < 1:
        return f"request {r.id}: (p, d, kv) = ({p}, {d}, {kv}) is negative or complete"
    if r.running != (kv > 0):
        return f"request {r.id}: running = {r.running} with {kv} KV tokens (running means holding KV)"
    if r.arrival_index != r.id:
        return f"request {r.id}: arrival_index {r.arrival_index} differs from its id"
    T = p + d + kv
    if M is not None and T > M:
        return f"request {r.id}: v_p + v_d = {T} > the KV capacity {M} (set aside at arrival, K2)"
    vp_hi = b if env.whole_prompts else T
    Sp, Sd = cl.prefill, cl.decode
    if d == 0:            # v_d = 0, dd = 0
        ok = 0 in Sd and p >= 1 and T in Sp and T <= vp_hi
    elif M is None and p > 0:   # no preemption: decode not started, v_d = d, v_p = p + kv
        ok = d in Sd and (p + kv) in Sp and p + kv <= vp_hi
    else:
        # some v_d in Sd ∩ [d, T - vp] with v_p = T - v_d in Sp (no preemption: p = 0, i.e. kv = v_p + dd)
        ok = False
        for a, c in Sd.intervals:
            lo, hi = max(a, d), min(c, T)
            if lo > hi:
                continue
            # v_p in [T - hi, T - lo] ∩ [0, vp_hi]
            if Sp.first_in(max(T - hi, 0), min(T - lo, vp_hi)) is not None:
                ok = True
                break
    if not ok:
        return (f"request {r.id}: no (v_p, v_d) in class {cl.name}'s supports gives prefill left {p}, decode left "
                f"{d} and {kv} KV tokens" + (" without a preemption" if M is None else "")
                + (f" with v_p <= b_max = {b}" if env.whole_prompts else ""))
    return None


def unreachable(view: View, env: Envelope) -> str | None:
    """Why ``view`` is not a state the engine can show inside ``env`` (R1–R6), or None if it is."""
    b = view.token_budget
    if not env.token_budget[0] <= b <= env.token_budget[1]:
        return f"b_max = {b} is outside {env.token_budget[0]}..{env.token_budget[1]}"
    for r, v, what in ((env.max_batch_requests, view.max_batch_requests, "max_batch_requests"),
                       (env.max_resident_requests, view.max_resident_requests, "max_resident_requests"),
                       (env.kv_capacity_tokens, view.kv_capacity_tokens, "kv_capacity_tokens")):
        why = _within(r, v, env.caps_optional, what)
        if why:
            return why
    reqs = view.requests
    if len(reqs) > env.resident_limit:
        return f"{len(reqs)} residents exceed the envelope's {env.resident_limit}"
    if view.max_resident_requests is not None and len(reqs) > view.max_resident_requests:
        return f"{len(reqs)} residents exceed max_resident_requests = {view.max_resident_requests}"
    ids = [r.id for r in reqs]
    if any(x < 0 for x in ids) or ids != sorted(set(ids)):
        return "ids are not strictly increasing in FCFS order"
    M = view.kv_capacity_tokens
    for r in reqs:
        why = _request_unreachable(env, b, M, r)
        if why:
            return why
    if M is None:
        if view.kv_free_tokens is not None:
            return f"kv_free_tokens = {view.kv_free_tokens} without a KV capacity"
    else:
        used = sum(r.kv_tokens for r in reqs)
        if view.kv_free_tokens != M - used:
            return f"kv_free_tokens = {view.kv_free_tokens}, but M − U = {M} − {used}"
        need = _needed(reqs, b, view.max_batch_requests)
        if M - used < need:
            return f"KV free {M - used} < {need} decoders' tokens: the engine preempts first (K3)"
    g = view.static_group
    if g and not env.static_group:
        return "a static group, but only fastertransformer-static keeps one"
    if env.static_group:
        if not g <= set(ids):
            return "static group members that are not resident"
        for r in reqs:
            if r.id in g and M is None and r.kv_tokens == 0:
                return f"request {r.id} is in the static group but was never served"
            if r.id not in g and not _fresh(env, r):
                return (f"request {r.id} has been served but is not in the static group" if g else
                        f"request {r.id} has been served, but no static group runs")
    return None


# ---------------------------------------------------------------------------- structured states


class _Maker:
    """Request histories of chosen shapes for one state's limits (b, M) and class."""

    def __init__(self, env: Envelope, b: int, M: int | None) -> None:
        self.env, self.b, self.M = env, b, M
        top = M if M is not None else 1 << 40
        self._supports = []
        for cl in env.classes:
            d = cl.decode.clip(0, max(top - 1, 0))
            p_hi = min(top - (d.min if d else 0), b if env.whole_prompts else 1 << 40)
            self._supports.append((cl.prefill.clip(0, p_hi), d))

    def _sup(self, c: int) -> tuple[Support | None, Support | None]:
        return self._supports[c]

    def _vd(self, c: int, vp: int, at_least: int) -> int | None:
        _, Sd = self._sup(c)
        top = (self.M - vp) if self.M is not None else 1 << 40
        return None if Sd is None else Sd.first_in(at_least, top)

    def fresh(self, c: int, size: int | None = None, decode: int = 0) -> Hist | None:
        """A waiting prompt of about ``size`` tokens (smallest by default)."""
        Sp, _ = self._sup(c)
        if Sp is None:
            return None
        vp = Sp.min if size is None else Sp.near(max(size, Sp.min))
        if vp is None:
            return None
        vd = self._vd(c, vp, decode)
        return None if vd is None or (vp == 0 and vd == 0) else (c, vp, vd, 0, 0)

    def big(self, c: int) -> Hist | None:
        """The longest waiting prompt."""
        Sp, _ = self._sup(c)
        return None if Sp is None else self.fresh(c, Sp.max)

    def decoder(self, c: int, left: int = 1) -> Hist | None:
        """A running decoder with ``left`` decode tokens left (its prompt the smallest)."""
        Sp, _ = self._sup(c)
        if Sp is None:
            return None
        vp = Sp.min
        vd = self._vd(c, vp, max(left, 1))
        if vd is None:
            return None
        d = min(left, vd)
        return (c, vp, vd, vd - d, vp + vd - d)

    def chunking(self, c: int, left: int) -> Hist | None:
        """A running prompt with ``left`` prefill tokens left (at least one served)."""
        Sp, _ = self._sup(c)
        if Sp is None:
            return None
        vp = Sp.first_in(left + 1, Sp.max)
        if vp is None:
            return None
        vd = self._vd(c, vp, 0)
        return None if vd is None else (c, vp, vd, 0, vp - left)

    def preempted(self, c: int) -> Hist | None:
        """A decoder preempted for KV memory (recomputes its prompt and decode tokens): KV caps only."""
        if self.M is None:
            return None
        Sp, _ = self._sup(c)
        if Sp is None:
            return None
        vd = self._vd(c, Sp.min, 2)
        return None if vd is None else (c, Sp.min, vd, 1, 0)


def _sizes(*xs: int | None, lo: int = 1, hi: int) -> list[int]:
    return sorted({int(x) for x in xs if x is not None and lo <= x <= hi})


def _budgets(env: Envelope) -> list[int]:
    lo, hi = env.token_budget
    return _sizes(lo, 2, 3, 4, 7, 128, 129, 513, hi, lo=lo, hi=hi)


def _cap_options(env: Envelope, b: int) -> list[tuple[int | None, int | None, int | None]]:
    """(k_max, resident cap, M) combinations tried at budget ``b``: the engine's own, or (optional
    caps) none, and at a few budgets each cap alone at a few values."""
    def pick(r: Range | None, *want: int) -> list[int]:
        return [] if r is None else _sizes(r[0], *want, r[1], lo=r[0], hi=r[1])

    if not env.caps_optional:
        one = lambda r: None if r is None else r[0]  # noqa: E731
        return [(one(env.max_batch_requests), one(env.max_resident_requests), one(env.kv_capacity_tokens))]
    out: list[tuple[int | None, int | None, int | None]] = [(None, None, None)]
    if b in (4, 513):
        def inside(r: Range | None, want: int) -> list[int]:
            return [] if r is None else _sizes(want, lo=r[0], hi=r[1])
        out += [(k, None, None) for k in inside(env.max_batch_requests, 3 if b == 4 else 128)]
        out += [(None, rc, None) for rc in inside(env.max_resident_requests, 2 if b == 4 else 128)]
        out += [(None, None, m) for m in inside(env.kv_capacity_tokens, 2 * b if b == 4 else 64 * b)]
    return out


def structured_states(env: Envelope) -> Iterator[tuple[str, View]]:
    """Deterministic extreme states of ``env``, each with its family name, all reachable:

    ``decoders`` (n running decoders, n around 1..5, 127..130, 255..257, b_max ± 1, k_max ± 1 and the
    most the envelope allows), ``decoders+prompt`` (the same behind or ahead of one waiting prompt of
    several sizes), ``decoders+chunk`` (a running prompt mid-prefill), ``huge-prompt``,
    ``waiting-queue`` (hundreds of fresh prompts), ``demand-at-budget`` (decoders and prompts whose
    demand is b_max − 1, b_max, b_max + 1), ``running+waiting`` (vLLM v1's two passes), ``mixed-classes``,
    ``kv-tight`` / ``kv-full`` / ``preempted`` (KV caps), ``static-group`` (fastertransformer-static).
    """
    key = env
    if key not in _STRUCTURED:
        if len(_STRUCTURED) >= 4:
            _STRUCTURED.pop(next(iter(_STRUCTURED)))
        _STRUCTURED[key] = list(_structured(env))
    return iter(_STRUCTURED[key])


_STRUCTURED: dict[Envelope, list[tuple[str, View]]] = {}


def _structured(env: Envelope) -> Iterator[tuple[str, View]]:
    seen: set[tuple] = set()
    for b in _budgets(env):
        for i, (k, rc, M) in enumerate(_cap_options(env, b)):
            for fam, hists, group in _families(env, b, k, rc, M, full=i == 0 and (b <= 1024 or not env.caps_optional)):
                if not hists or None in hists:
                    continue
                key = (b, k, rc, M, tuple(hists), group)
                if key in seen:
                    continue
                seen.add(key)
                v = make_view(env, b, k, rc, M, hists, group=group)  # type: ignore[arg-type]
                if v is not None:
                    yield fam, v


def _families(env: Envelope, b: int, k: int | None, rc: int | None, M: int | None,
              full: bool = True) -> Iterator[tuple[str, list[Hist | None], frozenset[int]]]:
    """The families at one (b, k_max, resident cap, M); ``full``: every size, else the edges only."""
    mk = _Maker(env, b, M)
    cap = env.resident_limit if rc is None else min(rc, env.resident_limit)
    most = cap if rc is not None or cap <= max(b + 2, 514) else None     # the envelope's own most
    caps = (k - 1, k, k + 1) if k else ()
    many = (127, 128, 129, 130, 255, 256, 257) if b >= 64 or (k or 0) >= 64 else ()
    edges = _sizes(1, 5, *many[2::4], b - 1, b, b + 1, *caps, most, hi=cap)      # every family at these
    ns = _sizes(1, 2, 3, 4, 5, 8, *many, b - 1, b, b + 1, *caps, most, hi=cap) if full else edges
    none: frozenset[int] = frozenset()
    last = len(env.classes) - 1
    sp = env.classes[0].prefill
    small = max(sp.min, 1)
    if env.static_group:
        for n in ns:
            if n + 1 <= cap:
                yield "static-group", [mk.decoder(0)] * n + [mk.fresh(0)], frozenset(range(n))
            if n + 2 <= cap:
                yield "static-group", [mk.decoder(0)] * n + [mk.fresh(0), mk.fresh(0, b)], frozenset(range(n))
            yield "static-group", [mk.decoder(0)] * n, frozenset(range(n))
        for n in _sizes(1, 2, 3, b, b + 1, min(cap, 300), hi=cap):
            yield "static-group", [mk.fresh(0)] * n, none
        return
    for n in ns:
        yield "decoders", [mk.decoder(0)] * n, none
        if n < cap:
            yield "decoders+prompt", [mk.decoder(0)] * n + [mk.fresh(0)], none
        if n > 600 or n not in edges:      # thousands of requests, or between the edges: those two only
            continue
        if n < cap:
            for s in _sizes(b - n + 1, sp.max, lo=small + 1, hi=sp.max):
                yield "decoders+prompt", [mk.decoder(0)] * n + [mk.fresh(0, s)], none
            yield "decoders+prompt", [mk.fresh(0, b)] + [mk.decoder(0)] * n, none
            for s in _sizes(1, b - n + 1, hi=max(sp.max - 1, 1)):
                yield "decoders+chunk", [mk.decoder(0)] * n + [mk.chunking(0, s)], none
        if n + 2 <= cap:
            left = max(1, min(b // 2, sp.max - 1))
            yield "running+waiting", [mk.chunking(0, left)] + [mk.decoder(0)] * n + [mk.fresh(0)], none
        if last > 0 and n + 1 <= cap:
            yield "mixed-classes", [mk.decoder(i % (last + 1)) for i in range(n)] + [mk.fresh(last, b)], none
        if M is not None and n + 1 <= cap:
            yield "kv-tight", [mk.decoder(0, 2)] * n + [mk.fresh(0, b)], none
            yield "preempted", [mk.decoder(0)] * n + [mk.preempted(0)], none
    for s in _sizes(small, b - 1, b, b + 1, 4 * b + 3, sp.max, lo=small, hi=sp.max) if full else \
            _sizes(b + 1, sp.max, lo=small, hi=sp.max):
        yield "huge-prompt", [mk.fresh(0, s)], none
        if cap >= 2:
            yield "huge-prompt", [mk.decoder(0), mk.fresh(0, s)], none
            yield "huge-prompt", [mk.chunking(0, s), mk.fresh(0, s)], none
    for n in _sizes(2, 3, 130, min(cap, 300), most, hi=min(cap, 600)) if full else _sizes(2, 130, hi=cap):
        yield "waiting-queue", [mk.fresh(0)] * n, none
        yield "waiting-queue", [mk.fresh(i % (last + 1), b if i % 2 else small) for i in range(n)], none
    # demand exactly b - 1, b, b + 1: n decoders and j prompts of the smallest size
    for j in _sizes(1, 2, b // small, lo=1, hi=cap):
        for delta in (-1, 0, 1):
            n = b + delta - j * small
            if 0 <= n and n + j <= cap and (full or j == 1):
                yield "demand-at-budget", [mk.decoder(0)] * n + [mk.fresh(0)] * j, none
                yield "demand-at-budget", [mk.fresh(0)] * j + [mk.decoder(0)] * n, none
    if k:
        for n in _sizes(k - 1, k, k + 1, hi=cap - 1):
            yield "k_max", [mk.fresh(0)] * (n + 1), none
    if M is not None:
        fill = mk.chunking(0, 1)
        if fill is not None and fill[4] > 0:
            yield "kv-full", [fill] * max(1, min(cap, M // fill[4])), none
            yield "kv-full", [fill] * max(1, min(cap, M // fill[4])) + [mk.fresh(0)], none
