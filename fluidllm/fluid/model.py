"""The fluid model of one engine (Li, Dai, Peng, arXiv 2504.07347, Thm 2 and its fluid-limit proof).

Scope: the paper's model — batch time a function of the token count only, no k_max, no resident
or KV cap — under a work-conserving policy (``sarathi``, ``kfcfs``, ``vllm-v1``: decode-first;
``orca``: prefill-first), plus the stylised non-work-conserving FasterTransformer for one class of
deterministic (v_p, v_d) with v_p <= b_max (whole prompts). Anything else raises ModelError.

State, per class k, in tokens:

* ``P_k(t) >= 0``: prefill tokens owed (requests whose prefill is not done);
* ``D_k(t) >= 0``: decode tokens owed by requests whose prefill is done.

Requests still in prefill also owe their decode tokens; in the fluid limit (prefill served FCFS, so
at most O(1) requests are part-way through their prompt) that is ``r_k P_k`` with
``r_k = m_d,k / m_p,k``. The total token backlog — what the simulator reports as tokens owed — is

    W(t) = Σ_k [(1 + r_k) P_k(t) + D_k(t)].

Dynamics (u_p,k, u_d,k: prefill and decode service rates in tokens/ms):

    dP_k/dt = λ_k m_p,k − u_p,k(t)
    dD_k/dt = r_k u_p,k(t) − u_d,k(t)
    Σ_k (u_p,k + u_d,k) <= μ,   = μ whenever W > 0 (work conservation),

with μ = b_max / t(b_max): a work-conserving batch holds exactly b_max tokens whenever the demand is
at least b_max, which it is while the fluid backlog is positive (Θ(n) tokens and Θ(n) requests at
fluid scale n). μ equals the paper's μ* = max_{n <= b_max} n/t(n) when b0 divides b_max for the
staircase; where it does not, μ < μ* and the work-conserving fluid drains at μ, not μ*
(``FluidModel.max_token_rate_per_ms`` carries μ* for comparison).

Summing, for every work-conserving policy dW/dt = λ(m_p + m_d) − μ while W > 0: from W(0) = W0 the
fluid empties at W0 / (μ − λ(m_p + m_d)) below capacity and grows at slope λ(m_p + m_d) − μ above it.
Under fluid scaling (backlog and time both divided by n) the simulator converges to this.

The split between P and D is the policy's (the total is not):

* decode-first (sarathi; kfcfs and vllm-v1 because, with FCFS prefill, every decoding request is
  older than every waiting one — for an initial state this assumes the decoders are listed first):
  while D > 0 the Θ(n) decoding requests fill every batch, u_d = μ, u_p = 0; when D = 0 < P
  decode work is served as it appears (sliding mode, D stays 0): u_p = μ / (1 + ρ_c),
  u_d = ρ_c u_p, where ρ_c = Σ r_k c_k over the composition c of the prefill being served.
* prefill-first (orca): while P > 0 prefill fills every batch, u_p = μ, u_d = 0; when P = 0 < D
  and Λ_p = Σ λ_k m_p,k < μ, arriving prefill is served at once (u_p = Λ_p) and decode gets the
  rest, u_d = μ − Λ_p; if Λ_p >= μ, P grows.
* per class, prefill and decode are both served FCFS (sarathi/orca fill FCFS), so each queue is a
  sequence of segments of fixed class composition (initial content — assumed interleaved across
  classes — then arrivals, then decode work in the order its prefill was served); the head segment
  is consumed at its composition.
* stylised FasterTransformer (decode-only batch whenever a request decodes, else a prefill-only
  batch of whole prompts FCFS), one class, deterministic (v_p, v_d), k = floor(b_max / v_p) >= 1:
  while D > 0, decode-only batches of b_max tokens, u_d = μ; when D = 0 < P the engine cycles one
  prefill batch of k prompts (t(k v_p)) and v_d decode batches of k tokens (t(k) each), a sliding
  mode at rate μ_FT = k (v_p + v_d) / (t(k v_p) + v_d t(k)) tokens/ms split in the ratio v_p : v_d.
  Stable iff λ(v_p + v_d) < μ_FT. Random lengths make the decode phase last the maximum of k decode
  lengths, a law-dependent quantity: not provided. Vanilla vLLM (prefill-first, no mixing) is not
  provided either: below saturation every arrival interrupts decoding with a small prefill-only
  batch, whose cost depends on the arrival process, not only on its rate.

Units: tokens and milliseconds (rates in tokens/ms); helpers also report tokens/s.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..capacity.rate import max_token_rate
from ..errors import ModelError, finite_number, require
from ..model.engine import Engine
from ..model.lengths import Deterministic, Independent
from ..model.model import Model
from ..model.workload import Workload

__all__ = ["FluidModel", "fluid_model", "DECODE_FIRST", "PREFILL_FIRST", "FLUID_POLICIES"]

DECODE_FIRST = ("sarathi", "kfcfs", "vllm-v1")
PREFILL_FIRST = ("orca",)
FLUID_POLICIES = DECODE_FIRST + PREFILL_FIRST + ("fastertransformer",)


def _num(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


@dataclass(frozen=True, eq=False)
class FluidModel:
    """The fluid model of one engine (see the module docstring for the equations).

    Attributes:
        engine, policy: names. ``mode``: ``decode-first``, ``prefill-first`` or ``fastertransformer``.
        classes: the workload names, in model order (the class index k).
        prefill_inflow_per_ms: λ_k m_p,k (tokens/ms) at ``load``.
        decode_inflow_per_ms: λ_k m_d,k (tokens/ms) at ``load``.
        decode_ratio: r_k = m_d,k / m_p,k.
        service_per_ms: μ = b_max / t(b_max), the full-batch token rate (tokens/ms).
        sliding_service_per_ms: the total rate when D = 0 < P: μ for work-conserving policies,
            μ_FT for FasterTransformer.
        max_token_rate_per_ms: μ* = max_{n <= b_max} n / t(n) (the paper's bound), for comparison.
        load: the multiplier applied to every arrival rate.
    """

    engine: str
    policy: str
    work_conserving: bool
    mode: str
    classes: tuple[str, ...]
    prefill_inflow_per_ms: np.ndarray
    decode_inflow_per_ms: np.ndarray
    decode_ratio: np.ndarray
    service_per_ms: float
    sliding_service_per_ms: float
    max_token_rate_per_ms: float
    load: float

    @property
    def offered_per_ms(self) -> float:
        """λ(m_p + m_d) summed over classes (tokens/ms)."""
        return float(self.prefill_inflow_per_ms.sum() + self.decode_inflow_per_ms.sum())

    @property
    def capacity_per_ms(self) -> float:
        """The long-run token rate of the saturated fluid (μ, or μ_FT) in tokens/ms."""
        return self.sliding_service_per_ms

    @property
    def growth_slope_per_ms(self) -> float:
        """max(0, λ(m_p + m_d) − capacity): the long-run slope of W (tokens/ms)."""
        return max(0.0, self.offered_per_ms - self.capacity_per_ms)

    def to_dict(self) -> dict[str, Any]:
        return {"engine": self.engine, "policy": self.policy, "work_conserving": self.work_conserving,
                "mode": self.mode, "classes": list(self.classes), "load": self.load,
                "prefill_inflow_tokens_per_s": [float(x) * 1000 for x in self.prefill_inflow_per_ms],
                "decode_inflow_tokens_per_s": [float(x) * 1000 for x in self.decode_inflow_per_ms],
                "decode_ratio": [float(x) for x in self.decode_ratio],
                "service_tokens_per_s": self.service_per_ms * 1000,
                "capacity_tokens_per_s": self.capacity_per_ms * 1000,
                "max_token_rate_tokens_per_s": self.max_token_rate_per_ms * 1000,
                "offered_tokens_per_s": self.offered_per_ms * 1000,
                "growth_slope_tokens_per_s": _num(self.growth_slope_per_ms * 1000)}


def _pick(model: Model, engine: str | None) -> tuple[Engine, list[Workload]]:
    require(isinstance(model, Model), "model", type(model).__name__,
            "must be a single-engine-workload Model (see load_model); network models ([workflows.*]) have "
            "capacity (fluidllm capacity) but are not simulated or given a fluid trajectory here yet")
    names = list(model.engines)
    if engine is None:
        used = [n for n in names if model.workloads_on(n)]
        require(len(used) == 1, "engine", None, f"must name the engine; this model has workloads on {used or names}")
        engine = used[0]
    require(engine in model.engines, "engine", engine, f"must be one of {names}")
    workloads = model.workloads_on(engine)
    require(len(workloads) > 0, "engine", engine, "has no workloads")
    return model.engines[engine], workloads


def _ft_rate(eng: Engine, workloads: list[Workload]) -> float:
    f = f"engines.{eng.name}.policy"
    require(len(workloads) == 1, f, "fastertransformer",
            "has a fluid model only for one class of deterministic lengths (several classes given)")
    L = workloads[0].lengths
    det = isinstance(L, Independent) and isinstance(L.prefill, Deterministic) and isinstance(L.decode, Deterministic)
    require(det, f"workloads.{workloads[0].name}.lengths", getattr(L, "kind", L),
            "fastertransformer has a fluid model only for deterministic prefill and decode lengths")
    vp, vd = int(L.prefill.value), int(L.decode.value)
    k = eng.token_budget // vp
    require(k >= 1, f"workloads.{workloads[0].name}.prefill", vp,
            f"exceeds token_budget = {eng.token_budget}: a whole prompt never fits (capacity 0)")
    t = eng.batch_time.tokens_ms
    return k * (vp + vd) / (float(t(k * vp)) + vd * float(t(k)))


def fluid_model(model: Model, *, load: float = 1.0, engine: str | None = None) -> FluidModel:
    """The fluid model of ``engine`` (may be omitted for one-engine models) at ``load`` × the rates.

    Raises:
        ModelError: a bad argument; an engine outside the paper's model (k_max, resident or KV cap,
            composition-dependent batch time), a policy without a fluid model here (named), or a
            FasterTransformer workload that is not one class of deterministic lengths.
    """
    eng, workloads = _pick(model, engine)
    load = finite_number(load, "load", minimum=0)
    f = f"engines.{eng.name}"
    for key in ("max_batch_requests", "max_resident_requests", "kv_capacity_tokens"):
        require(getattr(eng, key) is None, f"{f}.{key}", getattr(eng, key),
                "must be unset: the fluid model covers the paper's model (token budget only)")
    require(eng.batch_time.tokens_only, f"{f}.batch_time.kind", eng.batch_time.kind,
            "must be a function of the token count for the fluid model")
    pol = eng.policy.name
    require(pol in FLUID_POLICIES, f"{f}.policy", pol, f"has no fluid model here; one of {list(FLUID_POLICIES)}")
    lam = np.array([w.arrival.rate_per_s / 1000.0 * load for w in workloads])
    mp = np.array([w.lengths.mean_prefill for w in workloads], dtype=float)
    md = np.array([w.lengths.mean_decode for w in workloads], dtype=float)
    require(bool(np.all(mp > 0)), "workloads.lengths.prefill", mp.tolist(), "must have a positive mean")
    b = eng.token_budget
    mu = b / float(eng.batch_time.tokens_ms(b))
    mode = "decode-first" if pol in DECODE_FIRST else "prefill-first" if pol in PREFILL_FIRST else "fastertransformer"
    sliding = _ft_rate(eng, workloads) if mode == "fastertransformer" else mu
    ro = lambda a: (a.setflags(write=False), a)[1]  # noqa: E731
    return FluidModel(engine=eng.name, policy=pol, work_conserving=eng.policy.work_conserving, mode=mode,
                      classes=tuple(w.name for w in workloads), prefill_inflow_per_ms=ro(lam * mp),
                      decode_inflow_per_ms=ro(lam * md), decode_ratio=ro(md / mp), service_per_ms=mu,
                      sliding_service_per_ms=sliding,
                      max_token_rate_per_ms=max_token_rate(eng.batch_time, b).tokens_per_ms, load=load)


def initial_state(fm: FluidModel, initial_tokens: Any) -> tuple[np.ndarray, np.ndarray]:
    """(P0, D0) per class from ``None`` (empty), one (P0, D0) pair (one class), a list of pairs in
    class order, or a dict class name -> pair. Tokens, finite, >= 0.

    Raises:
        ModelError: a bad shape, a negative or non-finite entry, an unknown class name.
    """
    K = len(fm.classes)
    P, D = np.zeros(K), np.zeros(K)
    if initial_tokens is None:
        return P, D
    items: Sequence[Any]
    if isinstance(initial_tokens, dict):
        for name in initial_tokens:
            require(name in fm.classes, f"initial_tokens.{name}", initial_tokens[name],
                    f"names no class on engine {fm.engine}: {list(fm.classes)}")
        items = [initial_tokens.get(c, (0, 0)) for c in fm.classes]
    elif (isinstance(initial_tokens, (tuple, list)) and len(initial_tokens) == 2
          and all(not isinstance(x, (tuple, list, np.ndarray)) for x in initial_tokens)):
        items = [initial_tokens]
    else:
        require(isinstance(initial_tokens, (tuple, list)), "initial_tokens", initial_tokens,
                "must be None, a (P0, D0) pair, a list of pairs (one per class) or a dict class -> pair")
        items = list(initial_tokens)
    require(len(items) == K, "initial_tokens", initial_tokens, f"must give one (P0, D0) pair per class ({K})")
    for k, e in enumerate(items):
        name = f"initial_tokens.{fm.classes[k]}"
        require(isinstance(e, (tuple, list)) and len(e) == 2, name, e, "must be a (P0, D0) pair of tokens")
        P[k] = finite_number(e[0], f"{name}.prefill", minimum=0)
        D[k] = finite_number(e[1], f"{name}.decode", minimum=0)
    return P, D
