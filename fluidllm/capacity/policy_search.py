"""A policy's capacity by simulation, bracketed to a few per cent: a sequential search with common
random numbers, for policies that theory does not cover (vanilla vLLM, FasterTransformer with caps,
any policy with a k_max, resident or KV cap, plug-ins).

What is decided at a load x (a multiple of the model's arrival rates)
-----------------------------------------------------------------------
The sign of the *backlogged drift*

    s(x) = offered(x) − μ(x)      (tokens/s),   offered(x) = x · Σ_k λ_k (m_p,k + m_d,k),

where μ(x) is the token rate the engine serves while it holds a large backlog and requests arrive
at x times the model's rates. s(x) > 0: the backlog grows linearly (UNSTABLE); s(x) < 0: a large
backlog drains linearly, which is the Foster–Lyapunov / fluid-limit criterion for positive
recurrence (Dai 1995: a fluid model that drains from large states makes the chain stable; Li, Dai,
Peng, arXiv 2504.07347, Thm 2 uses the same argument for work-conserving rules). The capacity is
the root c of s. Testing the drift from a backlog, instead of the level of a queue started empty,
is what makes loads 1 % from c decidable: from empty, a load 1 % below c needs a relaxation time
of order 1/(1 − ρ)² before it looks flat, while the backlogged drift is ±1 % of offered at once.

How s(x) is measured (one replication)
--------------------------------------
1. *Warm-up*: arrivals at ``warmup_load`` = 1.1 × the configuration-LP bound (Theorem 2(a): every
   policy is unstable there, so the backlog grows) for ``warmup_s``, long enough (from a pilot run)
   for the backlog to reach about b_max·(m_p + m_d) tokens — a full batch's worth of requests, so
   that every rule's batches are full while it drains. The policy builds its *own* backlogged
   state (waiting prompts for FasterTransformer, decoding requests for vLLM).
2. *Settle*: then arrivals at x for ``settle_s`` = 2 sojourn times, (m_d + 1 + m_p/b_max)·t(b_max)
   each, discarded (the queue composition adapts to the new rate).
3. *Window* of ``window_s``: μ̂ = (A − ΔB)/W, with A the tokens that arrived in the window (known
   exactly from the draws) and ΔB the change of the simulated token backlog. s_r = offered(x) − μ̂ is
   the backlog slope ΔB/W with the arrival noise (A − E A)/W removed — a control variate with known
   mean (Poisson arrivals, i.i.d. lengths: E A = offered(x)·W), which cuts the standard error
   five-fold on the Fig. 1 workload because a backlogged engine's service does not depend on the
   lengths of the requests arriving.
   If the backlog runs low in the window (a load well below c), μ̂ drops towards the arrival rate,
   which moves s_r towards 0, never past it in expectation: the error is towards INCONCLUSIVE, not
   towards a wrong verdict; ``min_backlog_fraction`` reports it.

Common random numbers: replication r draws one base stream (unit-load arrival instants u and
lengths, :func:`fluidllm.sim.draws.draw_requests` at the model's rates); at load x its requests arrive
at τ(u) = u / x_w during the warm-up and T_w + (u − x_w T_w)/x after it. So every load of one
simulation call sees the same warm-up (the same backlogged state at T_w) and the same requests in
the same order, only faster or slower: s(x) is a smooth function of x within a call, and several
loads run as one vectorized simulation.

The search
----------
* Bounds: above, ``upper`` = the configuration-LP ``capacity(model).max_scale`` (Theorem 2(a): no
  policy is stable above it); below, ``lower`` (an analytic value if the caller has one, else 0).
* Pilot (independent stream): the warm-up alone, 32 replications for 4 sojourn times; its served
  rate μ(x_w) gives the *saturated-throughput* estimate c0 = μ(x_w)/offered(1) (exact when the
  backlogged service does not depend on the arrival rate, as for request-level batching; an
  underestimate when a higher arrival rate costs service, as vLLM's prefill-first rule does), and
  its spread the noise σ² (tokens²/s per replication) that sizes the test: R·W >= (1.2·q·σ/s_t)²
  replication-seconds, with s_t = h·c·offered(1) the drift at the planned distance h·c from the
  root and q the t quantile of one look. The window W is picked for 32 replications (the vectorized
  core runs 32 for about 1.3 × the cost of 8) between 2 and 20 sojourn times, then the replications grow
  (FasterTransformer on the Fig. 1 workload needs ~700 per load, vLLM ~40).
* Estimation (common random numbers, one stream per round): 3 loads ĉ·(1 + e·{−1, 0, 1}),
  e = 2.5 h, a quarter of the confirmation's replications, one vectorized call; the root of s by
  regula falsi between neighbours of opposite sign, else the least-squares line (extrapolated up
  to 4 e; otherwise re-centred, up to 3 rounds). Its spread re-sizes the confirmation.
* Confirmation (fresh, independent streams — never the estimation's numbers): the pair
  ĉ(1 − h), ĉ(1 + h), h = 0.45 × ``precision`` (width 0.9 × precision), or, once one side is
  confirmed, the other side as far out as the width target allows. Each load is a group-sequential
  t-test over replications: look k uses R1·2^(k−1) replications (the earlier ones kept), at most
  ``max_looks`` looks; look k declares UNSTABLE if the lower end of the two-sided (1 − α/K)
  t-interval of s exceeds 0, STABLE if its upper end is below 0, else goes on (INCONCLUSIVE after
  the last look). A round that misses re-centres on the pair's own regula-falsi root; up to
  ``max_rounds`` rounds. Loads up to 1.1 × the LP bound may be confirmed (so a work-conserving
  policy's bound is checked from above, not assumed).

Error rates
-----------
Each confirmation verdict is a wrong STABLE (or wrong UNSTABLE) with probability <= α/2 (one-sided
α/(2K) at each of K looks, Bonferroni), and its replications are independent of everything that
chose the load. The bracket [lo, hi] — lo the largest load confirmed STABLE (or ``lower``), hi the
smallest confirmed UNSTABLE (or ``upper``, by Theorem 2(a)) — therefore holds with probability
>= 1 − n·α/2, n the number of definite confirmation verdicts (``error_bound``; typically 2, so 1 %
at the default α = 0.01). Assumptions not covered by α: the t-intervals' normality (each s_r is a
window average, so the CLT applies), and that the warm-up reaches the backlogged regime that
decides stability (true when the rule's backlogged behaviour does not depend on how large the
backlog is once its batches are full — FasterTransformer, vLLM, Orca, Sarathi; a rule whose
service keeps changing with the backlog size is outside it).
"""
from __future__ import annotations

import math
import sys
import time as _time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from scipy import stats

from ..errors import finite_number, integer, require
from ..model.model import Model
from ..model.policy import PolicySpec

__all__ = ["SearchStep", "PolicySearchResult", "policy_capacity_search"]

_GRID = 256          # grid points of every simulation (the window starts at the first one after settle)
_PILOT_SOJOURNS = 4.0
_SETTLE_SOJOURNS = 2.0
_MIN_WINDOW_SOJOURNS = 2.0
_MAX_WARMUP_SOJOURNS = 60.0
_MAX_WINDOW_SOJOURNS = 20.0
_WINDOW_MARGIN = 1.2
_PREFERRED_REPLICATIONS = 32
_HALF_WIDTH = 0.45   # confirmation pair at ĉ(1 ± h), h = 0.45 × precision: width 0.9 × precision


def _num(x: Any) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


@dataclass(frozen=True)
class SearchStep:
    """One load in one simulation call of :func:`policy_capacity_search`.

    Attributes:
        stage: ``pilot``, ``estimate`` or ``confirm``.
        round: estimation / confirmation round (0 for the pilot); look: look of the sequential test.
        load: the load (multiple of the model's rates).
        verdict: ``STABLE``, ``UNSTABLE``, ``INCONCLUSIVE`` (confirmation), ``-`` (pilot, estimate).
        slope_tokens_per_s: mean backlogged drift s = offered − served rate (tokens/s).
        slope_interval: its two-sided t-interval at the look's level (tokens/s).
        served_tokens_per_s: mean served rate μ̂ in the window.
        replications: replications behind the numbers (all looks so far); window_s: window (s).
        min_backlog_fraction: smallest backlog in the window / the warm-up target (< 0.25: the
            engine ran low on work, see the module docstring).
        stream: the seed stream (independent streams per confirmation round).
    """

    stage: str
    round: int
    look: int
    load: float
    verdict: str
    slope_tokens_per_s: float
    slope_interval: tuple[float, float]
    served_tokens_per_s: float
    replications: int
    window_s: float
    min_backlog_fraction: float
    stream: int

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "round": self.round, "look": self.look, "load": float(self.load),
                "verdict": self.verdict, "slope_tokens_per_s": _num(self.slope_tokens_per_s),
                "slope_interval": [_num(self.slope_interval[0]), _num(self.slope_interval[1])],
                "served_tokens_per_s": _num(self.served_tokens_per_s), "replications": int(self.replications),
                "window_s": float(self.window_s), "min_backlog_fraction": _num(self.min_backlog_fraction),
                "stream": int(self.stream)}


@dataclass(frozen=True)
class PolicySearchResult:
    """A bracket [lo, hi] on a policy's capacity (max_scale) from :func:`policy_capacity_search`.

    Attributes:
        engine, policy: what was searched.
        lo, hi: the bracket (multiples of the model's rates); ``lo_source`` / ``hi_source`` say
            what each is: ``confirmed`` (a simulated verdict), ``lower bound`` / ``upper bound``
            (the analytic seed: ``lower`` as given, the configuration-LP bound of Theorem 2(a)).
        estimate: the last root estimate of the drift (not a bound).
        saturated_estimate: c0, the pilot's saturated-throughput estimate.
        lower, upper: the analytic seeds; precision: the width target (hi − lo <= precision × mid).
        met_precision: whether the target was met.
        alpha: per-verdict error level (each definite verdict wrong with probability <= alpha/2).
        error_bound: n·alpha/2, n = definite confirmation verdicts: P(bracket wrong) <= error_bound.
        offered_tokens_per_s: offered rate at load 1 (tokens/s).
        warmup_load, warmup_s, settle_s, window_s: the simulation plan (s of simulated time).
        replications: R, the fewest replications per load asked for; estimate_replications and
            confirm_replications: those used per load by the estimation and at a confirmation's
            first look (look k uses confirm_replications·2^(k−1)); max_looks: K.
        steps: every load of every call (pilot, estimation, confirmation looks).
        replication_runs: replications simulated in all; batches: simulated batches in all (summed
            over replications); simulated_s: simulated seconds in all; wall_s: wall time.
        seed: the seed; notes: anything the caller should know (target missed, inconsistent verdicts).
    """

    engine: str
    policy: str
    lo: float
    hi: float
    lo_source: str
    hi_source: str
    estimate: float
    saturated_estimate: float
    lower: float
    upper: float
    precision: float
    met_precision: bool
    alpha: float
    error_bound: float
    offered_tokens_per_s: float
    warmup_load: float
    warmup_s: float
    settle_s: float
    window_s: float
    replications: int
    estimate_replications: int
    confirm_replications: int
    max_looks: int
    steps: tuple[SearchStep, ...]
    replication_runs: int
    batches: int
    simulated_s: float
    wall_s: float
    seed: int
    notes: tuple[str, ...] = ()

    @property
    def interval(self) -> tuple[float, float]:
        """(lo, hi)."""
        return (self.lo, self.hi)

    @property
    def mid(self) -> float:
        """The bracket's midpoint."""
        return 0.5 * (self.lo + self.hi)

    @property
    def width_fraction(self) -> float:
        """(hi − lo) / mid."""
        return (self.hi - self.lo) / self.mid if self.mid > 0 else math.inf

    @property
    def rounds(self) -> tuple[tuple[tuple[float, str, float], ...], ...]:
        """(load, verdict, slope) per simulation call, in the shape of ``BoundaryResult.rounds``."""
        out: dict[tuple[str, int, int], list[tuple[float, str, float]]] = {}
        for s in self.steps:
            out.setdefault((s.stage, s.round, s.look), []).append((s.load, s.verdict, s.slope_tokens_per_s))
        return tuple(tuple(v) for v in out.values())

    @property
    def verdicts(self) -> int:
        """Definite confirmation verdicts (the n of ``error_bound``)."""
        return sum(1 for s in self.steps if s.stage == "confirm" and s.verdict in ("STABLE", "UNSTABLE"))

    def detail(self) -> str:
        """One sentence: how the bracket was obtained, its error rate and the effort."""
        loads = sorted({round(s.load, 6) for s in self.steps if s.stage != "pilot"})
        conf = [s for s in self.steps if s.stage == "confirm" and s.verdict in ("STABLE", "UNSTABLE")]
        txt = (f"sequential search with common random numbers: backlogged drift (offered − served tokens/s) "
               f"after a {self.warmup_s:.4g} s warm-up at {self.warmup_load:.4g} (1.1 x the LP bound "
               f"{self.upper:.4g}), {self.settle_s:.4g} s settle, {self.window_s:.4g} s window; pilot "
               f"saturated-throughput estimate {self.saturated_estimate:.4g}; {len(loads)} loads tried, "
               f"{len(conf)} confirmed on fresh replications (t-tests, up to {self.max_looks} looks from "
               f"{self.confirm_replications} replications per load, each verdict wrong w.p. <= {self.alpha / 2:g}); "
               f"lo {self.lo_source}, hi {self.hi_source}; P(bracket wrong) <= {self.error_bound:.3g}; "
               f"{self.replication_runs} replications, {self.batches} batches, {self.wall_s:.1f} s")
        if self.notes:
            txt += "; " + "; ".join(self.notes)
        return txt

    def line(self) -> str:
        return (f"{self.policy}: capacity in [{self.lo:.5g}, {self.hi:.5g}] (width {100 * self.width_fraction:.2f} %"
                f" of the midpoint, target {100 * self.precision:g} %), P(wrong) <= {self.error_bound:.3g}, "
                f"{self.wall_s:.1f} s")

    def to_dict(self) -> dict[str, Any]:
        return {"engine": self.engine, "policy": self.policy, "lo": _num(self.lo), "hi": _num(self.hi),
                "interval": [_num(self.lo), _num(self.hi)], "lo_source": self.lo_source,
                "hi_source": self.hi_source, "estimate": _num(self.estimate),
                "saturated_estimate": _num(self.saturated_estimate), "lower": _num(self.lower),
                "upper": _num(self.upper), "precision": float(self.precision),
                "width_fraction": _num(self.width_fraction), "met_precision": bool(self.met_precision),
                "alpha": float(self.alpha), "error_bound": _num(self.error_bound), "verdicts": self.verdicts,
                "offered_tokens_per_s": _num(self.offered_tokens_per_s), "warmup_load": _num(self.warmup_load),
                "warmup_s": _num(self.warmup_s), "settle_s": _num(self.settle_s), "window_s": _num(self.window_s),
                "replications": int(self.replications), "estimate_replications": int(self.estimate_replications),
                "confirm_replications": int(self.confirm_replications), "max_looks": int(self.max_looks),
                "replication_runs": int(self.replication_runs), "batches": int(self.batches),
                "simulated_s": _num(self.simulated_s), "wall_s": _num(self.wall_s), "seed": int(self.seed),
                "notes": list(self.notes), "detail": self.detail(), "steps": [s.to_dict() for s in self.steps]}


# ------------------------------------------------------------------------------------------ simulation


@dataclass(frozen=True)
class _Plan:
    warmup_load: float
    warmup_ms: float
    settle_ms: float
    window_ms: float

    @property
    def horizon_ms(self) -> float:
        return self.warmup_ms + self.settle_ms + self.window_ms


@dataclass(frozen=True)
class _Measured:
    """Per-replication drift at each load of one call: s[i] is (R,) for loads[i]."""

    loads: tuple[float, ...]
    s: tuple[np.ndarray, ...]
    served: tuple[np.ndarray, ...]
    min_frac: tuple[float, ...]
    diverged: tuple[int, ...]
    window_ms: float
    batches: int
    replications: int
    simulated_ms: float


def _sim_chunk(args: tuple[Any, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from ..sim.simulate import simulate

    model, eng_name, reqs, horizon_ms, backend, max_memory_mb = args
    sim = simulate(model, engine=eng_name, requests=reqs, horizon_s=horizon_ms / 1000.0, grid_points=_GRID,
                   backend=backend, max_memory_mb=max_memory_mb)
    return (np.asarray(sim.grid_ms, dtype=float), np.asarray(sim.series_backlog_tokens, dtype=float),
            np.asarray(sim.diverged, dtype=bool), np.asarray(sim.batches))


class _Sim:
    """Runs the calls of one search: draws, load mapping, simulation, drift per replication."""

    def __init__(self, model: Model, eng_name: str, workloads: Sequence[Any], *, seed: int, backend: str,
                 workers: int, max_memory_mb: float, offered1: float, target_tokens: float) -> None:
        self.model, self.eng, self.workloads = model, eng_name, list(workloads)
        self.seed, self.backend, self.workers, self.mem = seed, backend, workers, max_memory_mb
        self.offered1, self.target = offered1, target_tokens
        self.batches = 0
        self.runs = 0
        self.simulated_ms = 0.0
        self.pool: ProcessPoolExecutor | None = None

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()
            self.pool = None

    def run(self, loads: Sequence[float], plan: _Plan, *, stream: int, first: int, count: int) -> _Measured:
        from ..sim.draws import Requests, draw_requests

        loads = tuple(float(x) for x in loads)
        xw, Tw, H = plan.warmup_load, plan.warmup_ms, plan.horizon_ms
        u_max = xw * Tw + max(loads) * (H - Tw) * (1 + 1e-9) + 1.0
        grid = H * np.arange(_GRID) / _GRID
        ia = int(min(_GRID - 2, math.ceil((Tw + plan.settle_ms) / H * _GRID - 1e-9)))
        ta, tb = grid[ia], grid[_GRID - 1]                 # the window: first grid point after settle, last
        reqs, cum = [], []
        for r in range(first, first + count):
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, stream, r]))
            base = draw_requests(self.workloads, u_max, rng)
            u = base.arrival_ms
            for x in loads:
                t = np.where(u < xw * Tw, u / xw, Tw + (u - xw * Tw) / x)
                keep = t < H
                q = Requests(t[keep], base.prefill[keep], base.decode[keep], base.klass[keep], base.class_names)
                reqs.append(q)
                tok = (q.prefill + q.decode).astype(float)
                c = np.concatenate([[0.0], np.cumsum(tok)])
                at = c[np.searchsorted(q.arrival_ms, [ta, tb], side="right")]
                cum.append(at[1] - at[0])                   # tokens arrived in the window
        n = len(reqs)
        w = max(1, min(self.workers, n // 8 or 1))
        chunks = [reqs[i * n // w:(i + 1) * n // w] for i in range(w)]
        jobs = [(self.model, self.eng, c, H, self.backend, self.mem) for c in chunks if c]
        if len(jobs) > 1:
            if self.pool is None:                          # one pool for the whole search (imports once)
                self.pool = ProcessPoolExecutor(max_workers=self.workers)
            outs = list(self.pool.map(_sim_chunk, jobs))
        else:
            outs = [_sim_chunk(jobs[0])]
        g = outs[0][0]
        back = np.concatenate([o[1] for o in outs])
        div = np.concatenate([o[2] for o in outs])
        self.batches += int(sum(int(np.sum(o[3])) for o in outs))
        self.runs += n
        self.simulated_ms += n * H
        if g.size != _GRID or abs(g[ia] - ta) > 1e-6 * max(H, 1.0):   # pragma: no cover - an internal invariant
            raise RuntimeError(f"simulator grid ({g.size} points) differs from the search's ({_GRID})")
        # (Averaging blocks of grid points at the two ends was tried: on the Fig. 1 workload it does
        # not lower the standard error, the noise at the ends being small beside the service's.)
        W = float(tb - ta)                                 # ms
        A = np.asarray(cum)
        dB = back[:, _GRID - 1] - back[:, ia]
        served = (A - dB) / W * 1000.0                     # tokens/s
        mins = back[:, ia:].min(axis=1)
        L = len(loads)
        idx = np.arange(n).reshape(count, L)                # replication-major, loads inner
        s_out, srv_out, mf, nd = [], [], [], []
        for i, x in enumerate(loads):
            rows = idx[:, i]
            ok = rows[~div[rows]]
            srv = served[ok]
            s_out.append(x * self.offered1 - srv)
            srv_out.append(srv)
            mf.append(float(mins[rows].min() / self.target) if rows.size else math.nan)
            nd.append(int(div[rows].sum()))
        return _Measured(loads, tuple(s_out), tuple(srv_out), tuple(mf), tuple(nd), W, self.batches, n, n * H)


def _tinterval(x: np.ndarray, level_alpha: float) -> tuple[float, float, float]:
    """(mean, lo, hi): two-sided (1 − level_alpha) Student-t interval of the mean."""
    m = float(np.mean(x)) if x.size else math.nan
    if x.size < 2:
        return m, -math.inf, math.inf
    se = float(np.std(x, ddof=1) / math.sqrt(x.size))
    q = float(stats.t.ppf(1 - level_alpha / 2, x.size - 1))
    return m, m - q * se, m + q * se


def _root(points: Sequence[tuple[float, float]]) -> float | None:
    """Root of s(x) from (load, mean drift) pairs: regula falsi between the nearest pair of opposite
    sign, else the least-squares line (None if it has no positive slope)."""
    pts = sorted(points)
    for (x0, s0), (x1, s1) in zip(pts, pts[1:]):
        if s0 < 0 < s1:
            return x0 - s0 * (x1 - x0) / (s1 - s0)
    if len(pts) >= 2:
        x = np.array([p[0] for p in pts])
        s = np.array([p[1] for p in pts])
        b, a = np.polyfit(x, s, 1)
        if b > 0:
            return float(-a / b)
    return None


def _say(progress: bool, policy: str, text: str) -> None:
    if progress:
        print(f"[policy-search {policy}] {text}", file=sys.stderr, flush=True)


def policy_capacity_search(model: Model, policy: str | PolicySpec | None = None, *, engine: str | None = None,
                           lower: float | None = None, upper: float | None = None, precision: float = 0.02,
                           alpha: float = 0.01, replications: int = 32, seed: int = 0,
                           window_s: float | None = None, max_window_s: float | None = None,
                           max_looks: int = 3, max_rounds: int = 5, max_replications: int = 2048,
                           progress: bool = False,
                           backend: str = "numpy", workers: int = 1,
                           max_memory_mb: float = 4096.0) -> PolicySearchResult:
    """Bracket the capacity of ``policy`` on one engine of ``model`` by simulation (module docstring).

    Args:
        model: a single-engine model (or name ``engine``); loads multiply all its arrival rates.
        policy: the policy (default: the engine's own).
        lower: an analytic lower bound on the capacity (max_scale), used as the bracket's lo until a
            load is confirmed STABLE; default 0.
        upper: an upper bound; default the configuration-LP bound ``capacity(model).max_scale``
            (Theorem 2(a): no policy is stable above it). The warm-up runs at 1.1 × upper.
        precision: the width target, hi − lo <= precision × (hi + lo)/2 (default 2 %).
        alpha: per-verdict error level; each confirmed verdict is wrong with probability <= alpha/2.
        replications: the fewest replications per load at a look (the search uses more where the
            pilot's noise asks for them: ``confirm_replications``; look k doubles them k − 1 times).
        seed: the seed; the same seed (and arguments) gives the same bracket, on any ``workers``.
        window_s: the measurement window (simulated s); default sized from the pilot's noise.
        max_window_s: cap on the default window (default 20 sojourn times); past it the
            replications grow instead, up to ``max_replications`` per load at the first look.
        max_looks: K, looks of the sequential test; max_rounds: confirmation rounds.
        progress: print one line per simulation call to stderr (nothing on stdout).
        backend: the simulator's array backend; workers: processes sharing each call's replications.
        max_memory_mb: per-replication memory cap (a replication reaching it is left out).

    Returns:
        :class:`PolicySearchResult`; the bracket is honest (lo confirmed STABLE or the lower bound,
        hi confirmed UNSTABLE or the LP bound) even where the precision target is missed
        (``met_precision`` False, with a note).

    Raises:
        ModelError: bad arguments (named, with the value and what is allowed), an unknown engine or
            policy, a model with no load on the engine.
    """
    from ..sim.simulate import pick_engine
    from . import capacity

    t_start = _time.perf_counter()
    eng, workloads = pick_engine(model, engine)
    spec = eng.policy if policy is None else (policy if isinstance(policy, PolicySpec) else PolicySpec(policy))
    m = model.with_engine(eng.name, policy=spec)
    precision = finite_number(precision, "precision", minimum=0.0, strict=True)
    require(precision <= 0.5, "precision", precision, "must be in (0, 0.5] (a fraction of the capacity, e.g. 0.02)")
    alpha = finite_number(alpha, "alpha", minimum=0.0, strict=True)
    require(alpha <= 0.5, "alpha", alpha, "must be in (0, 0.5]")
    R = integer(replications, "replications", minimum=2)
    seed = integer(seed, "seed", minimum=0)
    K = integer(max_looks, "max_looks", minimum=1)
    require(K <= 8, "max_looks", K, "must be an integer in 1..8")
    max_rounds = integer(max_rounds, "max_rounds", minimum=1)
    workers = integer(workers, "workers", minimum=1)
    max_memory_mb = finite_number(max_memory_mb, "max_memory_mb", minimum=0, strict=True)
    lam = sum(w.arrival.rate_per_s for w in workloads)
    require(lam > 0, "load", lam, "must be positive: every arrival rate on the engine is 0")
    offered1 = sum(w.arrival.rate_per_s * w.lengths.mean_tokens for w in workloads)   # tokens/s at load 1
    U = capacity(m).max_scale if upper is None else finite_number(upper, "upper", minimum=0.0, strict=True)
    require(math.isfinite(U) and U > 0, "upper", U, "must be a finite positive bound on max_scale")
    L0 = 0.0 if lower is None else finite_number(lower, "lower", minimum=0.0)
    require(L0 < U, "lower", L0, f"must be < upper = {U:.6g}")

    # Time scales: full-batch time, a sojourn (m_d + 1 + m_p/b_max full batches), the warm-up target.
    b = eng.token_budget
    t_full = float(np.asarray(eng.batch_time.batch_ms(b, 0, 0)))
    mp = sum(w.arrival.rate_per_s * w.lengths.mean_prefill for w in workloads) / lam
    md = sum(w.arrival.rate_per_s * w.lengths.mean_decode for w in workloads) / lam
    tau = (md + 1.0 + mp / b) * t_full                     # ms
    target = b * (mp + md)                                 # tokens: a full batch's worth of requests
    if window_s is not None:
        window_s = finite_number(window_s, "window_s", minimum=0, strict=True)
    cap_ms = _MAX_WINDOW_SOJOURNS * tau if max_window_s is None else \
        finite_number(max_window_s, "max_window_s", minimum=0, strict=True) * 1000.0
    R_max = integer(max_replications, "max_replications", minimum=R)
    sim = _Sim(m, eng.name, workloads, seed=seed, backend=backend, workers=workers, max_memory_mb=max_memory_mb,
               offered1=offered1, target_tokens=target)
    try:
        name = spec.label
        steps: list[SearchStep] = []
        notes: list[str] = []
        h = _HALF_WIDTH * precision
        R_pref = max(R, _PREFERRED_REPLICATIONS)   # the vectorized core runs 32 replications for about the cost of 8

        def sizing(sig2: float, c: float, W_fixed: float | None) -> tuple[float, int]:
            """(window ms, first-look replications per load) for the drift h·c·offered(1) at the planned
            distance from the root to be shown at look 1 with margin 1.2: R·W >= (1.2·q·σ/s_t)², q the t
            quantile of one look. The window grows first (from 2 to 20 sojourns), then the replications."""
            s_t = h * c * offered1
            if not (math.isfinite(sig2) and sig2 > 0 and s_t > 0):
                return (cap_ms if W_fixed is None else W_fixed), R

            def need(n: int) -> float:                         # replication-seconds
                q = float(stats.t.ppf(1 - alpha / K / 2, n - 1))
                return (_WINDOW_MARGIN * q / s_t) ** 2 * sig2

            W = W_fixed if W_fixed is not None else \
                min(max(need(R_pref) / R_pref * 1000.0, _MIN_WINDOW_SOJOURNS * tau), cap_ms)
            n = R
            for _ in range(4):
                n = max(R, int(math.ceil(need(n) / W * 1000.0)))
            if n > R_max:
                notes.append(f"{n} replications per load would be needed at look 1; capped at {R_max} "
                             f"(max_replications)")
            return W, min(n, R_max)

        # ---- pilot: the warm-up alone, from empty at x_w (stream 0) -------------------------------------
        xw = 1.1 * U
        t0 = _time.perf_counter()
        Tp = _PILOT_SOJOURNS * tau
        pilot = sim.run([xw], _Plan(xw, Tp / 2, 0.0, Tp / 2), stream=0, first=0, count=R_pref)
        sw = pilot.s[0]
        mu_w = float(np.mean(pilot.served[0]))
        c0 = mu_w / offered1
        growth = float(np.mean(sw))                            # tokens/s while the backlog builds
        sigma2 = float(np.var(sw, ddof=1) * pilot.window_ms / 1000.0) if sw.size > 1 else math.nan
        if growth > 0:
            Tw = min(max(target / growth * 1000.0, _SETTLE_SOJOURNS * tau), _MAX_WARMUP_SOJOURNS * tau)
        else:
            Tw = _MAX_WARMUP_SOJOURNS * tau
            notes.append(f"the backlog did not grow at the warm-up load {xw:.4g} (is upper = {U:.4g} an upper bound?)")
        if Tw >= _MAX_WARMUP_SOJOURNS * tau and growth > 0:
            notes.append(f"warm-up capped at {Tw / 1000:.4g} s")
        c_hat = min(max(c0, L0, 1e-3 * U), U)
        Wc, R1 = sizing(sigma2, c_hat, None if window_s is None else window_s * 1000.0)
        plan = _Plan(xw, Tw, _SETTLE_SOJOURNS * tau, Wc)
        steps.append(SearchStep("pilot", 0, 1, xw, "-", growth, _tinterval(sw, alpha)[1:], mu_w, int(sw.size),
                                pilot.window_ms / 1000.0, pilot.min_frac[0], 0))
        _say(progress, name, f"pilot: load {xw:.4g} (1.1 x LP bound {U:.4g}), {R_pref} reps x {Tp / 1000:.4g} s: "
                             f"served {mu_w:.5g} tokens/s -> saturated estimate {c0:.4g}, noise {sigma2:.3g} "
                             f"tokens^2/s; plan: warm-up {Tw / 1000:.4g} s, settle {plan.settle_ms / 1000:.4g} s, "
                             f"window {Wc / 1000:.4g} s, "
                             f"{R1} replications per load ({_time.perf_counter() - t0:.1f} s)")

        # ---- estimation with common random numbers (streams 1, 2, 3) -----------------------------------
        # A quarter of the confirmation's replications: the root to about half the planned distance h·c.
        e = 2.5 * h
        est_points: list[tuple[float, float]] = []
        est_var: list[float] = []
        Re = max(R_pref, int(math.ceil(R1 / 4)))
        for rnd in range(1, 4):
            t0 = _time.perf_counter()
            loads = sorted({min(max(c_hat * (1 + e * k), 1e-3 * U), 1.05 * U) for k in (-1, 0, 1)})
            meas = sim.run(loads, plan, stream=rnd, first=0, count=Re)
            pts = []
            for x, sr, srv, mf in zip(meas.loads, meas.s, meas.served, meas.min_frac):
                mean, lo_, hi_ = _tinterval(sr, alpha)
                steps.append(SearchStep("estimate", rnd, 1, x, "-", mean, (lo_, hi_), float(np.mean(srv)), int(sr.size),
                                        meas.window_ms / 1000.0, mf, rnd))
                pts.append((x, mean))
                if sr.size > 1:
                    est_var.append(float(np.var(sr, ddof=1)) * meas.window_ms / 1000.0)
            est_points = pts                                   # the CRN points of this round only
            r_ = _root(pts)
            srt = sorted(pts)
            bracketed = any(p0[1] < 0 < p1[1] for p0, p1 in zip(srt, srt[1:]))
            old = c_hat
            if r_ is not None:
                c_hat = min(max(r_, 1e-3 * U), U)
            elif all(p[1] < 0 for p in pts):
                c_hat = min(max(p[0] for p in pts) * (1 + 4 * e), U)
            else:
                c_hat = max(min(p[0] for p in pts) * (1 - 4 * e), 1e-3 * U)
            _say(progress, name, f"estimate {rnd}: {Re} reps per load, "
                 + ", ".join(f"{x:.5g}: {v:+.4g}" for x, v in pts)
                 + f" tokens/s -> root {c_hat:.5g} ({_time.perf_counter() - t0:.1f} s)")
            if bracketed or abs(c_hat - old) <= 4 * e * old:
                break
            e *= 2
        if est_var and window_s is None:
            _, R1 = sizing(float(np.mean(est_var)), c_hat, plan.window_ms)

        # ---- confirmation on fresh streams (11, 12, ...) -----------------------------------------------
        # Loads up to the warm-up load 1.1·U may be tested (so a work-conserving policy's bound is checked
        # from above too); the reported hi falls back on U (Theorem 2(a)) while none is confirmed UNSTABLE.
        stable: list[float] = []
        unstable: list[float] = []
        half = precision / 2
        x_min = 1e-3 * U                                       # loads below this are not tried

        def top() -> float:
            return min(unstable) if unstable else xw

        def bracket() -> tuple[float, float]:
            hi_ = min(unstable) if unstable else U
            st = [x for x in stable if x < hi_]
            return (max(st) if st else L0), hi_

        def done() -> bool:
            lo_, hi_ = bracket()
            return bool(stable and unstable) and hi_ - lo_ <= precision * 0.5 * (hi_ + lo_) * (1 + 1e-12)

        for rnd in range(1, max_rounds + 1):
            if done():
                break
            a_ = max([x for x in stable if x < top()], default=None)
            b_ = min(unstable) if unstable else None
            lo_c: float | None = c_hat * (1 - h)
            hi_c: float | None = c_hat * (1 + h)
            if a_ is not None and a_ >= lo_c:                  # the stable side is done: push the other side
                lo_c = None                                    # as far out as the width target allows
                hi_c = a_ + 0.95 * (a_ * (1 + half) / (1 - half) - a_)
            if b_ is not None and b_ <= (hi_c if hi_c is not None else -math.inf) and lo_c is not None:
                hi_c = None
                lo_c = b_ - 0.95 * (b_ - b_ * (1 - half) / (1 + half))
            floor = max(a_ if a_ is not None else L0, x_min)
            cand = sorted({x for x in (lo_c, hi_c) if x is not None and floor < x < top()})
            if not cand:
                if top() <= x_min * (1 + precision):
                    notes.append(f"capacity below {x_min:.3g} (10^-3 of the LP bound): no smaller load is tried")
                else:
                    notes.append("no load left to test inside the bracket")
                break
            stream = 10 + rnd
            pending = list(cand)
            data: dict[float, list[np.ndarray]] = {x: [] for x in cand}
            served: dict[float, list[np.ndarray]] = {x: [] for x in cand}
            minf: dict[float, float] = {x: math.inf for x in cand}
            means: dict[float, float] = {}
            ndiv: dict[float, int] = {}
            first = 0
            for look in range(1, K + 1):
                if not pending:
                    break
                t0 = _time.perf_counter()
                count = R1 * (2 ** (look - 1)) - first          # look k: R1·2^(k-1) replications in all
                meas = sim.run(pending, plan, stream=stream, first=first, count=count)
                first += count
                line, still = [], []
                for x, sr, srv, mf, nd in zip(meas.loads, meas.s, meas.served, meas.min_frac, meas.diverged):
                    data[x].append(sr)
                    served[x].append(srv)
                    minf[x] = min(minf[x], mf)
                    allx = np.concatenate(data[x])
                    mean, lo_, hi_ = _tinterval(allx, alpha / K)
                    means[x] = mean
                    verdict = "UNSTABLE" if lo_ > 0 else "STABLE" if hi_ < 0 else "INCONCLUSIVE"
                    if nd:
                        ndiv[x] = ndiv.get(x, 0) + nd
                    if verdict == "STABLE" and ndiv.get(x):
                        # replications that hit the memory cap are left out of the mean: never call it STABLE then
                        verdict = "INCONCLUSIVE"
                        notes.append(f"{ndiv[x]} replication(s) at load {x:.5g} reached the memory cap "
                                     f"({max_memory_mb:g} MiB): not confirmed STABLE")
                    if verdict == "UNSTABLE":
                        unstable.append(x)
                    elif verdict == "STABLE":
                        stable.append(x)
                    elif look < K:
                        still.append(x)
                    steps.append(SearchStep("confirm", rnd, look, x, verdict, mean, (lo_, hi_),
                                            float(np.mean(np.concatenate(served[x]))), int(allx.size),
                                            meas.window_ms / 1000.0, minf[x], stream))
                    shown = "(continue)" if x in still else verdict
                    line.append(f"{x:.5g} {shown} ({mean:+.4g} [{lo_:+.4g}, {hi_:+.4g}] tokens/s, {allx.size} reps)")
                _say(progress, name, f"confirm {rnd} look {look}: " + "; ".join(line)
                     + f" ({_time.perf_counter() - t0:.1f} s)")
                pending = still
            # Re-centre: on this round's own points (CRN within the round), else on every mean so far.
            r_ = _root(list(means.items())) if len(means) >= 2 else None
            if r_ is None:
                r_ = _root(est_points + [(st.load, st.slope_tokens_per_s) for st in steps if st.stage == "confirm"])
            if r_ is None and len(means) == 1:
                (x1, s1), = means.items()
                r_ = x1 - s1 / offered1                        # Newton step with the unit-load slope offered(1)
            if r_ is not None:
                c_hat = min(r_, U)                             # Theorem 2(a): the capacity is at most U
            lo_b = max([x for x in stable if x < top()], default=L0)
            if not (lo_b < c_hat < top()):
                c_hat = 0.5 * (lo_b + min(top(), U))

        lo, hi = bracket()
        if stable and max(stable) > U:
            notes.append(f"a load above the LP bound {U:.5g} was confirmed STABLE ({max(stable):.5g}): this "
                         f"contradicts Theorem 2(a) (a wrong verdict, or a simulator or bound error)")
        if stable and max(stable) >= hi:
            notes.append(f"a load confirmed STABLE ({max(stable):.5g}) lies at or above one confirmed UNSTABLE "
                         f"({hi:.5g}): a wrong verdict or a drift that is not monotone in the load")
        met = done()
        if not met:
            width = 100 * (hi - lo) / max(0.5 * (hi + lo), 1e-300)
            notes.append(f"width target {100 * precision:g} % not met (width {width:.3g} %)")
        res = PolicySearchResult(
            engine=eng.name, policy=name, lo=float(lo), hi=float(hi),
            lo_source="confirmed" if stable and lo in stable else
            ("lower bound" if lower is not None else "trivial (0)"),
            hi_source="confirmed" if unstable else "upper bound (Theorem 2(a), configuration LP)"
            if upper is None else "upper bound (given)",
            estimate=float(c_hat), saturated_estimate=float(c0), lower=float(L0), upper=float(U),
            precision=float(precision), met_precision=met, alpha=float(alpha), error_bound=0.0,
            offered_tokens_per_s=float(offered1), warmup_load=float(xw), warmup_s=plan.warmup_ms / 1000.0,
            settle_s=plan.settle_ms / 1000.0, window_s=plan.window_ms / 1000.0, replications=R,
            estimate_replications=Re,
            confirm_replications=R1, max_looks=K,
            steps=tuple(steps), replication_runs=sim.runs, batches=sim.batches, simulated_s=sim.simulated_ms / 1000.0,
            wall_s=0.0, seed=seed, notes=tuple(notes))
        wall = _time.perf_counter() - t_start
        res = _replace(res, error_bound=res.verdicts * alpha / 2, wall_s=wall)
        _say(progress, name, res.line())
        return res
    finally:
        sim.close()


def _replace(r: PolicySearchResult, **kw: Any) -> PolicySearchResult:
    from dataclasses import replace

    return replace(r, **kw)
