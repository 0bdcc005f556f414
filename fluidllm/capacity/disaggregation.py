"""Disaggregated serving (DistServe / Splitwise / Mooncake): how many prefill and decode engines.

A request with joint lengths (v_p, v_d) becomes a two-call workflow: call ``prefill`` with lengths
(v_p, 0) on a pool of n_p copies of the engine, a KV transfer over a link, then call ``decode``
(``after = ["prefill"]``, ``inherits_kv = true``) with lengths (0, v_d) on a pool of n_d copies.
:func:`disaggregated_model` builds that :class:`~fluidllm.model.network.NetworkModel`,
:func:`colocated_model` the same n engines serving whole requests, :func:`provision` compares every
split n_p + n_d = n with colocation, :func:`min_engines` finds the fewest engines for a rate.

KV moments of the two halves (the per-class inputs of the KV-memory row of the network LP,
:mod:`fluidllm.capacity.network`). With g the KV token-batches of a request's shortest life
(:attr:`~fluidllm.model.lengths.JointLengths.mean_kv_token_batches`: after each of its batches it
holds v_p, v_p + 1, ..., v_p + v_d tokens, g = (v_d + 1)(v_p + v_d/2)):

* prefill half (v_p, 0): one batch holding v_p tokens, g_P = v_p; no decode, κ_P = 0;
* decode half: it arrives holding the v_p inherited tokens and after its j-th batch holds v_p + j,
  j = 1..v_d: g_D = Σ_j (v_p + j) = v_d (v_p + (v_d + 1)/2); its j-th decode token sees v_p + j − 1
  prior tokens, so κ_D = E[v_d v_p + v_d(v_d − 1)/2] / m_d — the colocated κ of the joint law.

So g_P + g_D = g exactly. Both are moments of the *joint* law (E[v_d v_p] keeps the correlation of
:class:`~fluidllm.model.lengths.EmpiricalPairs`); :class:`PrefillHalf` and :class:`InheritedDecode`
carry them, so ``fluidllm.capacity(model)`` on the network model uses them. A decode call written
in TOML with ``prefill = 0`` and its own decode law instead gets g = E[(v_d + 1) v_d / 2] (no
inherited prompt): an optimistic KV row. The network simulators draw each call's lengths from the
call's own law, independently: ``InheritedDecode.sample`` draws v_d from the decode marginal, so a
simulated disaggregated model keeps the marginals but not the correlation (its inherited context is
the parent's drawn v_p, as :mod:`fluidllm.sim.network_reference` states).

Capacity (the fluid region; Li, Dai, Peng arXiv 2504.07347 §5 static planning LP). The two pools
share no engine and see the same visit rate λ, and within a pool of identical engines with a free
(JSQ) split the equal split is optimal (the LP is convex and symmetric under permuting the pool),
so with θ_P, θ_D, θ_C the scales of ONE engine serving the prefill half, the decode half and whole
requests at rate λ:

    θ_dis(n_p, n_d) = min(n_p θ_P, n_d θ_D),      θ_col(n) = n θ_C.

**Colocation is never worse in this model**: θ_col(n) ≥ θ_dis(n_p, n − n_p) for every split. A
colocated engine may run any batch of a prefill or a decode engine (same batch times; its κ equals
the decode engine's), g_P + g_D = g and the prefill-slot demand is the same, so time-sharing n_p/n
of prefill-engine schedules and n_d/n of decode-engine schedules on each of n colocated engines is
feasible for the colocated LP. Equality holds e.g. for token-count batch times without k_max or KV
memory when n m_p/(m_p + m_d) is an integer; otherwise integrality of the split, k_max on
decode-only batches, or batch times that favour mixed batches make colocation strictly better.
What disaggregation buys is latency (no prefill-decode interference in TBT, separate SLOs), which
this LP does not measure. The KV transfer is a delay (:func:`kv_transfer_ms`): it changes latency,
not capacity (a pure delay node has no capacity limit; KV held on the prefill engine during the
transfer is outside the g of the shortest life above, like queueing).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np

from ..errors import finite_number, integer, require
from ..model.arrivals import PoissonArrival
from ..model.engine import Engine
from ..model.lengths import Deterministic, Empirical, JointLengths
from ..model.network import Call, NetworkModel, Workflow

__all__ = ["PrefillHalf", "InheritedDecode", "disaggregated_model", "colocated_model", "kv_transfer_ms",
           "provision", "ProvisioningResult", "Split", "min_engines", "MinEngines", "pool_scales"]

_REL = 1e-9


# --------------------------------------------------------------------------------------------------
# The two halves of a joint law
# --------------------------------------------------------------------------------------------------

def _decode_law_dict(joint: JointLengths) -> dict[str, Any]:
    dec = getattr(joint, "decode", None)
    if hasattr(dec, "to_dict"):
        return dec.to_dict()
    src = getattr(joint, "source", None)
    if isinstance(src, dict) and ("dataset" in src or "file" in src):
        return {"kind": "empirical", **src, "column": "decode"}
    return {"kind": "empirical", "values": np.asarray(dec).tolist()}


def _prefill_law_dict(joint: JointLengths) -> dict[str, Any]:
    pre = getattr(joint, "prefill", None)
    if hasattr(pre, "to_dict"):
        return pre.to_dict()
    src = getattr(joint, "source", None)
    if isinstance(src, dict) and ("dataset" in src or "file" in src):
        return {"kind": "empirical", **src, "column": "prefill"}
    return {"kind": "empirical", "values": np.asarray(pre).tolist()}


@dataclass(frozen=True, eq=False)
class PrefillHalf(JointLengths):
    """The prefill call of a disaggregated request with law ``joint``: lengths (v_p, 0).

    E[g] = m_p (one batch holding v_p tokens), κ = 0 (no decode token)."""

    joint: JointLengths
    kind: ClassVar[str] = "prefill-half"

    def __post_init__(self) -> None:
        require(isinstance(self.joint, JointLengths), "lengths", self.joint, "must be a joint length law")

    @property
    def prefill(self) -> Any:
        return getattr(self.joint, "prefill")

    mean_prefill = property(lambda self: self.joint.mean_prefill)
    mean_decode = property(lambda self: 0.0)

    def moment(self, f) -> float:
        return self.joint.moment(lambda p, d: f(p, 0.0 * d))

    @property
    def mean_kv_token_batches(self) -> float:
        return self.joint.mean_prefill

    @property
    def mean_decode_context(self) -> float:
        return 0.0

    def sample(self, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
        p, _ = self.joint.sample(rng, size)
        return p, np.zeros_like(p)

    def to_dict(self) -> dict[str, Any]:
        return {"prefill": _prefill_law_dict(self.joint), "decode": {"kind": "deterministic", "value": 0}}

    def __repr__(self) -> str:
        return f"PrefillHalf({self.joint!r})"


@dataclass(frozen=True, eq=False)
class InheritedDecode(JointLengths):
    """The decode call of a disaggregated request with law ``joint``: lengths (0, v_d), KV context v_p.

    E[g] = E[v_d (v_p + (v_d + 1)/2)] and κ = E[v_d v_p + v_d(v_d − 1)/2] / m_d, both over the joint
    law (module docstring). ``sample`` draws v_d from the joint law's decode marginal (the network
    simulators take the inherited context from the parent request, drawn independently)."""

    joint: JointLengths
    kind: ClassVar[str] = "inherited-decode"

    def __post_init__(self) -> None:
        require(isinstance(self.joint, JointLengths), "lengths", self.joint, "must be a joint length law")

    @property
    def prefill(self) -> Deterministic:
        return Deterministic(0)

    mean_prefill = property(lambda self: 0.0)
    mean_decode = property(lambda self: self.joint.mean_decode)

    def moment(self, f) -> float:
        """E[f(0, v_d)]: the call's own lengths (the inherited prompt is context, not work)."""
        return self.joint.moment(lambda p, d: f(0.0 * p, d))

    @property
    def mean_kv_token_batches(self) -> float:
        return self.joint.moment(lambda p, d: d * (p + (d + 1.0) / 2.0))

    @property
    def mean_decode_context(self) -> float:
        return self.joint.mean_decode_context

    def sample(self, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
        _, d = self.joint.sample(rng, size)
        return np.zeros_like(d), d

    def to_dict(self) -> dict[str, Any]:
        return {"prefill": {"kind": "deterministic", "value": 0}, "decode": _decode_law_dict(self.joint)}

    def __repr__(self) -> str:
        return f"InheritedDecode({self.joint!r})"


# --------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------

def kv_transfer_ms(prompt_tokens: Any, kv_bytes_per_token: float, link_gbps: float) -> Any:
    """KV transfer delay (ms) of a prompt: v_p × kv_bytes_per_token × 8 / (link_gbps × 10⁹) × 1000.

    ``link_gbps``: link bandwidth in Gbit/s (10⁹ bit/s); ``kv_bytes_per_token``: bytes of K and V
    per token over all layers (Llama-2-7B fp16: 2 × 32 layers × 4096 × 2 B = 524,288 B). Pure
    transmission time, no setup latency or overlap with prefill. A delay: it changes latency
    (TTFT), never capacity. Vectorised over ``prompt_tokens``.

    Raises:
        ModelError: a negative prompt, a non-positive bandwidth or byte count.
    """
    kvb = finite_number(kv_bytes_per_token, "kv_bytes_per_token", minimum=0, strict=True)
    bw = finite_number(link_gbps, "link_gbps", minimum=0, strict=True)
    v = np.asarray(prompt_tokens, dtype=float)
    require(bool(np.all(np.isfinite(v)) and np.all(v >= 0)), "prompt_tokens", "<data>", "must be finite and >= 0")
    out = v * kvb * 8.0 / (bw * 1e9) * 1000.0
    return float(out) if out.ndim == 0 else out


def _pool(engine: Engine, prefix: str, n: int) -> dict[str, Engine]:
    require(isinstance(engine, Engine), "engine", engine, "must be an Engine")
    return {f"{prefix}{i}": replace(engine, name=f"{prefix}{i}") for i in range(n)}


def _check(lengths: JointLengths, rate_per_s: float) -> float:
    require(isinstance(lengths, JointLengths), "lengths", lengths, "must be a joint length law (JointLengths)")
    return finite_number(rate_per_s, "rate_per_s", minimum=0, strict=True)


def _set(names: list[str]) -> tuple[str, ...] | str:
    return names[0] if len(names) == 1 else tuple(names)


def disaggregated_model(engine: Engine, lengths: JointLengths, rate_per_s: float, n_prefill: int, n_decode: int,
                        *, kv_bytes_per_token: float | None = None, link_gbps: float | None = None,
                        routing: str = "jsq-tokens") -> NetworkModel:
    """Workflow ``serve``: call ``prefill`` ((v_p, 0), :class:`PrefillHalf`) on engines ``prefill0..``,
    then call ``decode`` ((0, v_d), :class:`InheritedDecode`, ``inherits_kv``) on ``decode0..``; Poisson
    arrivals at ``rate_per_s`` requests/s. ``kv_bytes_per_token`` and ``link_gbps`` are validated but
    not part of the model: the transfer is a delay (:func:`kv_transfer_ms`), the network model has no
    delay element, and a delay changes no capacity.

    Raises:
        ModelError: n_prefill or n_decode < 1, a bad rate, engine or length law.
    """
    rate = _check(lengths, rate_per_s)
    n_p = integer(n_prefill, "n_prefill", minimum=1)
    n_d = integer(n_decode, "n_decode", minimum=1)
    if kv_bytes_per_token is not None or link_gbps is not None:
        require(kv_bytes_per_token is not None and link_gbps is not None, "link_gbps", link_gbps,
                "give both kv_bytes_per_token and link_gbps, or neither")
        kv_transfer_ms(0, kv_bytes_per_token, link_gbps)  # validates
    pe, de = _pool(engine, "prefill", n_p), _pool(engine, "decode", n_d)
    calls = (Call("prefill", _set(list(pe)), PrefillHalf(lengths), routing=routing if n_p > 1 else None),
             Call("decode", _set(list(de)), InheritedDecode(lengths), after=("prefill",),
                  routing=routing if n_d > 1 else None, inherits_kv=True))
    wf = Workflow("serve", PoissonArrival(rate), calls, acyclic=True)
    return NetworkModel({**pe, **de}, {"serve": wf})


def colocated_model(engine: Engine, lengths: JointLengths, rate_per_s: float, n: int, *,
                    routing: str = "jsq-tokens") -> NetworkModel:
    """Workflow ``serve``: one call ``serve`` with the joint law on a replica set ``colocated0..`` of n
    copies of ``engine`` (one engine when n = 1); Poisson arrivals at ``rate_per_s``."""
    rate = _check(lengths, rate_per_s)
    n = integer(n, "n", minimum=1)
    ce = _pool(engine, "colocated", n)
    call = Call("serve", _set(list(ce)), lengths, routing=routing if n > 1 else None)
    return NetworkModel(ce, {"serve": Workflow("serve", PoissonArrival(rate), (call,), acyclic=True)})


def _single_pool_model(engine: Engine, half: JointLengths, rate: float, inherits: bool) -> NetworkModel:
    e = replace(engine, name="e0")
    call = Call("c", ("e0",), half, inherits_kv=inherits)
    return NetworkModel({"e0": e}, {"w": Workflow("w", PoissonArrival(rate), (call,), acyclic=True)})


@dataclass(frozen=True)
class PoolScales:
    """θ of ONE engine at the rate (``capacity`` of a one-engine network) and its binding limit, for
    the prefill half, the decode half and whole requests."""

    prefill: float
    decode: float
    colocated: float
    prefill_binding: str
    decode_binding: str
    colocated_binding: str


def pool_scales(engine: Engine, lengths: JointLengths, rate_per_s: float, *, solver: str | None = None) -> PoolScales:
    """θ_P, θ_D, θ_C (module docstring) by the static planning LP on one-engine networks.

    Raises:
        ModelError: LP solver failure.
    """
    from .network import network_capacity

    rate = _check(lengths, rate_per_s)
    out = []
    for half, inh in ((PrefillHalf(lengths), False), (InheritedDecode(lengths), True), (lengths, False)):
        nc = network_capacity(_single_pool_model(engine, half, rate, inh).class_network(), solver=solver)
        e0 = nc.engines["e0"]
        out.append((nc.max_scale, e0.binding))
    return PoolScales(out[0][0], out[1][0], out[2][0], out[0][1], out[1][1], out[2][1])


# --------------------------------------------------------------------------------------------------
# Provisioning
# --------------------------------------------------------------------------------------------------

def _fin(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


@dataclass(frozen=True)
class Split:
    """One split: n_prefill + n_decode engines, its max_scale θ, max rate θλ (req/s) and the pool(s)
    that bind ("prefill", "decode" or "both")."""

    n_prefill: int
    n_decode: int
    max_scale: float
    max_rate_per_s: float
    bottleneck: str

    def to_dict(self) -> dict[str, Any]:
        return {"n_prefill": self.n_prefill, "n_decode": self.n_decode, "max_scale": _fin(self.max_scale),
                "max_rate_per_s": _fin(self.max_rate_per_s), "bottleneck": self.bottleneck}


def _split(n_p: int, n_d: int, ps: PoolScales, rate: float) -> Split:
    a, b = n_p * ps.prefill, n_d * ps.decode
    th = min(a, b)
    bot = "both" if abs(a - b) <= _REL * max(a, b) else ("prefill" if a < b else "decode")
    return Split(n_p, n_d, th, th * rate, bot)


@dataclass(frozen=True, eq=False)
class ProvisioningResult:
    """Result of :func:`provision`.

    ``splits``: every n_prefill = 1..n_total − 1. ``best``: the split with the largest max_scale (ties:
    fewest prefill engines). ``colocated_max_scale``/``colocated_max_rate_per_s``: n_total colocated
    engines. ``disaggregation_beats_colocation``: best θ > colocated θ (relative tolerance 1e-9; never
    true in this LP, see the module docstring); ``gain`` = best θ / colocated θ − 1 (≤ 0).
    ``per_engine``: θ of one engine at the rate (prefill half, decode half, whole requests) and their
    binding limits; ``method``: "pools" (the closed form over one-engine LPs) or "network" (the network
    LP of every split). ``kv_transfer_ms``: mean / p50 / p99 of the transfer delay over the prompt law
    when a link was given (latency only)."""

    rate_per_s: float
    n_total: int
    splits: tuple[Split, ...]
    best: Split
    colocated_max_scale: float
    colocated_max_rate_per_s: float
    disaggregation_beats_colocation: bool
    gain: float
    per_engine: PoolScales
    method: str
    kv_transfer_ms: dict[str, float] | None = None
    results: dict[tuple[int, int], Any] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        pe = self.per_engine
        return {"rate_per_s": self.rate_per_s, "n_total": self.n_total, "method": self.method,
                "splits": [s.to_dict() for s in self.splits], "best": self.best.to_dict(),
                "colocated": {"n": self.n_total, "max_scale": _fin(self.colocated_max_scale),
                              "max_rate_per_s": _fin(self.colocated_max_rate_per_s)},
                "disaggregation_beats_colocation": self.disaggregation_beats_colocation, "gain": self.gain,
                "per_engine_max_rate_per_s": {"prefill": pe.prefill * self.rate_per_s,
                                              "decode": pe.decode * self.rate_per_s,
                                              "colocated": pe.colocated * self.rate_per_s},
                "per_engine_binding": {"prefill": pe.prefill_binding, "decode": pe.decode_binding,
                                       "colocated": pe.colocated_binding},
                "kv_transfer_ms": self.kv_transfer_ms}

    def table(self) -> str:
        pe, r = self.per_engine, self.rate_per_s
        lines = [f"n_total = {self.n_total}, rate {r:.6g} req/s; one engine sustains prefill {pe.prefill * r:.5g} "
                 f"({pe.prefill_binding}), decode {pe.decode * r:.5g} ({pe.decode_binding}), whole requests "
                 f"{pe.colocated * r:.5g} ({pe.colocated_binding}) req/s", "",
                 f"{'n_prefill':>9} {'n_decode':>8} {'max_scale':>10} {'max req/s':>10}  bottleneck", "-" * 52]
        for s in self.splits:
            mark = "  <- best" if s is self.best else ""
            lines.append(f"{s.n_prefill:>9} {s.n_decode:>8} {s.max_scale:>10.5g} {s.max_rate_per_s:>10.5g}  "
                         f"{s.bottleneck}{mark}")
        lines += ["", f"colocated x{self.n_total}: max_scale {self.colocated_max_scale:.5g}, "
                  f"{self.colocated_max_rate_per_s:.5g} req/s; disaggregation "
                  f"{'BEATS' if self.disaggregation_beats_colocation else 'does not beat'} colocation "
                  f"({100 * self.gain:+.2f} %)"]
        if self.kv_transfer_ms:
            k = self.kv_transfer_ms
            lines.append(f"KV transfer (latency only): mean {k['mean']:.3g} ms, p50 {k['p50']:.3g}, p99 {k['p99']:.3g}")
        return "\n".join(lines)


def _transfer_stats(lengths: JointLengths, kvb: float | None, gbps: float | None) -> dict[str, float] | None:
    if kvb is None and gbps is None:
        return None
    require(kvb is not None and gbps is not None, "link_gbps", gbps, "give both kv_bytes_per_token and link_gbps")
    mean = kv_transfer_ms(lengths.mean_prefill, kvb, gbps)
    pre = getattr(lengths, "prefill", None)
    if isinstance(pre, np.ndarray):
        vals = pre
    elif isinstance(pre, Empirical):
        vals = pre.values
    else:
        vals = lengths.sample(np.random.default_rng(0), 100_000)[0]
    q = np.percentile(np.asarray(vals, dtype=float), [50, 99])
    return {"mean": mean, "p50": kv_transfer_ms(q[0], kvb, gbps), "p99": kv_transfer_ms(q[1], kvb, gbps)}


def provision(engine: Engine, lengths: JointLengths, rate_per_s: float, n_total: int, *,
              kv_bytes_per_token: float | None = None, link_gbps: float | None = None, method: str = "pools",
              solver: str | None = None) -> ProvisioningResult:
    """Every split n_prefill + n_decode = n_total (each ≥ 1) against n_total colocated engines.

    ``method="pools"``: θ(n_p, n_d) = min(n_p θ_P, n_d θ_D) and θ_col = n θ_C from three one-engine
    LPs (exact for the network LP: module docstring); ``"network"``: ``fluidllm.capacity`` of
    :func:`disaggregated_model` for every split and of :func:`colocated_model` (slower; the
    NetworkCapacity results are kept in ``results``, key (n_p, n_d), colocated under (0, n)).

    Raises:
        ModelError: n_total < 2, a bad method, rate or law; LP solver failure.
    """
    from . import capacity

    rate = _check(lengths, rate_per_s)
    n = integer(n_total, "n_total", minimum=2)
    require(method in ("pools", "network"), "method", method, "must be 'pools' or 'network'")
    ktm = _transfer_stats(lengths, kv_bytes_per_token, link_gbps)
    ps = pool_scales(engine, lengths, rate, solver=solver)
    results: dict[tuple[int, int], Any] = {}
    if method == "pools":
        splits = tuple(_split(k, n - k, ps, rate) for k in range(1, n))
        col = n * ps.colocated
    else:
        out = []
        for k in range(1, n):
            nc = capacity(disaggregated_model(engine, lengths, rate, k, n - k), solver=solver)
            results[(k, n - k)] = nc
            s = _split(k, n - k, ps, rate)
            out.append(replace(s, max_scale=nc.max_scale, max_rate_per_s=nc.max_scale * rate))
        splits = tuple(out)
        nc = capacity(colocated_model(engine, lengths, rate, n), solver=solver)
        results[(0, n)] = nc
        col = nc.max_scale
    top = max(s.max_scale for s in splits)
    best = next(s for s in splits if s.max_scale >= top * (1 - _REL))
    beats = best.max_scale > col * (1 + _REL)
    return ProvisioningResult(rate, n, splits, best, col, col * rate, beats, best.max_scale / col - 1.0, ps, method,
                              ktm, results)


@dataclass(frozen=True)
class MinEngines:
    """Result of :func:`min_engines`: the fewest engines whose fluid region holds ``rate_per_s``
    strictly inside (max_scale > 1; on the boundary the fluid model is critical, not stable).
    Disaggregated: n_prefill + n_decode (each pool at its own minimum, the pools being independent);
    colocated: n_colocated (≤ n_disaggregated always in this LP)."""

    rate_per_s: float
    n_prefill: int
    n_decode: int
    n_colocated: int
    disaggregated_max_scale: float
    colocated_max_scale: float
    per_engine: PoolScales

    @property
    def n_disaggregated(self) -> int:
        return self.n_prefill + self.n_decode

    def to_dict(self) -> dict[str, Any]:
        return {"rate_per_s": self.rate_per_s, "disaggregated": {
            "n_prefill": self.n_prefill, "n_decode": self.n_decode, "n_total": self.n_disaggregated,
            "max_scale": self.disaggregated_max_scale},
            "colocated": {"n_total": self.n_colocated, "max_scale": self.colocated_max_scale}}

    def table(self) -> str:
        return (f"rate {self.rate_per_s:.6g} req/s: disaggregated {self.n_disaggregated} engines "
                f"({self.n_prefill} prefill + {self.n_decode} decode, max_scale {self.disaggregated_max_scale:.4g}); "
                f"colocated {self.n_colocated} engines (max_scale {self.colocated_max_scale:.4g})")


def _fewest(theta1: float) -> int:
    """Smallest n with n θ₁ > 1 (θ₁: one engine's scale)."""
    require(theta1 > 0 and math.isfinite(theta1), "max_scale", theta1, "one engine must have a finite positive scale")
    k = math.floor((1.0 / theta1) * (1 + _REL)) + 1
    return max(k, 1)


def min_engines(engine: Engine, lengths: JointLengths, rate_per_s: float, *, solver: str | None = None) -> MinEngines:
    """Fewest engines that sustain ``rate_per_s`` (req/s), disaggregated and colocated (:class:`MinEngines`).

    Raises:
        ModelError: a bad rate or law; an engine that cannot serve the work at all; LP solver failure.
    """
    rate = _check(lengths, rate_per_s)
    ps = pool_scales(engine, lengths, rate, solver=solver)
    n_p, n_d, n_c = _fewest(ps.prefill), _fewest(ps.decode), _fewest(ps.colocated)
    return MinEngines(rate, n_p, n_d, n_c, min(n_p * ps.prefill, n_d * ps.decode), n_c * ps.colocated, ps)
