"""The result of :func:`fluidllm.simulate`: per-replication outputs, time series and latencies."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from .core import HIST_BINS_PER_DECADE, HIST_MIN_MS, CoreOutput

__all__ = ["SimResult", "LatencySummary", "hist_quantile_ms", "mean_interval"]

#: Confidence level of every interval across replications.
CONFIDENCE = 0.95
QUANTILES = {"p50": 0.50, "p90": 0.90, "p99": 0.99}


def mean_interval(x: np.ndarray, level: float = CONFIDENCE) -> tuple[float, tuple[float, float] | None]:
    """Mean of finite values and its Student-t ``level`` interval across replications (None if < 2)."""
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return math.nan, None
    m = float(x.mean())
    if x.size < 2:
        return m, None
    h = float(stats.t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return m, (m - h, m + h)


def hist_quantile_ms(hist: np.ndarray, q: float) -> np.ndarray:
    """Per-row q-quantile (ms) of log-binned latency histograms (R, bins); NaN for an empty row.

    Linear interpolation of the log-latency inside the bin that crosses q; the bins are
    10^(1/HIST_BINS_PER_DECADE) wide, so the quantile is within ±1.2 % of the sample quantile.
    """
    hist = np.asarray(hist, dtype=np.int64)
    cum = np.cumsum(hist, axis=1)
    n = cum[:, -1]
    target = q * n
    k = np.argmax(cum >= np.maximum(target, 1e-12)[:, None], axis=1)
    below = np.where(k > 0, np.take_along_axis(cum, np.maximum(k - 1, 0)[:, None], axis=1)[:, 0], 0)
    inbin = np.take_along_axis(hist, k[:, None], axis=1)[:, 0]
    frac = np.where(inbin > 0, (target - below) / np.maximum(inbin, 1), 0.5)
    logx = np.log10(HIST_MIN_MS) + (k + np.clip(frac, 0, 1)) / HIST_BINS_PER_DECADE
    return np.where(n > 0, 10.0 ** logx, np.nan)


@dataclass(frozen=True)
class LatencySummary:
    """One latency (TTFT, TBT or end-to-end) summarised over replications.

    ``mean``, ``p50``, ``p90``, ``p99``: averages over replications of each replication's statistic
    (ms); ``intervals``: their 95 % Student-t intervals across replications (None with one
    replication or no events); ``count``: events per replication; ``per_replication``: each
    replication's statistics.
    """

    mean: float
    p50: float
    p90: float
    p99: float
    intervals: dict[str, tuple[float, float] | None]
    count: np.ndarray
    per_replication: dict[str, np.ndarray]

    def to_dict(self) -> dict[str, Any]:
        return {"mean": _num(self.mean), "p50": _num(self.p50), "p90": _num(self.p90), "p99": _num(self.p99),
                "intervals": {k: None if v is None else [_num(v[0]), _num(v[1])] for k, v in self.intervals.items()},
                "count": [int(c) for c in self.count]}


def _latency(out: CoreOutput, kind: str) -> LatencySummary:
    n = out.latency_count[kind]
    per = {"mean": np.where(n > 0, out.latency_sum_ms[kind] / np.maximum(n, 1), np.nan)}
    for name, q in QUANTILES.items():
        per[name] = hist_quantile_ms(out.latency_hist[kind], q)
    pts, ivs = {}, {}
    for name, v in per.items():
        pts[name], ivs[name] = mean_interval(v)
    return LatencySummary(pts["mean"], pts["p50"], pts["p90"], pts["p99"], ivs, n.copy(), per)


def _num(x: Any) -> Any:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _list(a: np.ndarray) -> list[Any]:
    a = np.asarray(a)
    if np.issubdtype(a.dtype, np.integer) or a.dtype == bool:
        return a.tolist()
    return [_num(v) for v in a.tolist()]


@dataclass(frozen=True, eq=False)
class SimResult:
    """Replicated simulation of one engine (:func:`fluidllm.simulate`).

    Per-replication arrays (length R): ``arrived``, ``completed``, ``end_ms`` (the first batch
    boundary at or after the horizon), ``throughput_requests_per_s`` (completed / end),
    ``mean_requests_in_system`` (exact time average of the number in system, arrivals counted from
    their instant), ``max_requests_in_system``, ``final_backlog_tokens`` (tokens owed at the end),
    ``batches``, ``fraction_full`` / ``fraction_mixed`` / ``fraction_decode_only`` /
    ``fraction_prefill_only`` (of batches), ``unschedulable``, ``preemptions``,
    ``recomputed_tokens``, ``diverged`` / ``diverged_ms`` (stopped at the memory cap, and when).

    Time series on ``grid_ms`` (G points in [0, horizon)), shaped (R, G): ``series_in_system``,
    ``series_backlog_tokens``, ``series_prefill_tokens`` and ``series_decode_tokens`` (the batch
    running at the grid instant; 0 when idle), each the state at the last batch boundary at or
    before the grid instant.

    Latencies (``ttft``, ``tbt``, ``e2e``: :class:`LatencySummary`): TTFT = end of the batch with the
    first decode token − arrival (v_d = 0: end of the prefill); TBT = a request's mean time between
    its decode tokens, (completion − first token)/(v_d − 1), for v_d >= 2; e2e = completion −
    arrival. Only completed requests count (the run starts empty).
    """

    engine: str
    policy: str
    work_conserving: bool
    replications: int
    horizon_ms: float
    seed: int | None
    load: np.ndarray
    backend: str
    token_budget: int
    arrived: np.ndarray
    completed: np.ndarray
    end_ms: np.ndarray
    throughput_requests_per_s: np.ndarray
    mean_requests_in_system: np.ndarray
    max_requests_in_system: np.ndarray
    final_backlog_tokens: np.ndarray
    batches: np.ndarray
    fraction_full: np.ndarray
    fraction_mixed: np.ndarray
    fraction_decode_only: np.ndarray
    fraction_prefill_only: np.ndarray
    prefill_tokens_served: np.ndarray
    decode_tokens_served: np.ndarray
    busy_fraction: np.ndarray
    unschedulable: np.ndarray
    preemptions: np.ndarray
    recomputed_tokens: np.ndarray
    diverged: np.ndarray
    diverged_ms: np.ndarray
    grid_ms: np.ndarray
    series_in_system: np.ndarray
    series_backlog_tokens: np.ndarray
    series_prefill_tokens: np.ndarray
    series_decode_tokens: np.ndarray
    ttft: LatencySummary
    tbt: LatencySummary
    e2e: LatencySummary
    peak_state_bytes: int
    wall_s: float
    steps: int
    batch_log: list[list[dict[str, Any]]] | None = field(default=None, repr=False)

    @property
    def requests_arrived(self) -> np.ndarray:
        return self.arrived

    @property
    def requests_completed(self) -> np.ndarray:
        return self.completed

    @property
    def memory_per_replication_bytes(self) -> float:
        return self.peak_state_bytes / self.replications

    @classmethod
    def from_core(cls, out: CoreOutput, *, engine: str, policy: str, work_conserving: bool, seed: int | None,
                  load: np.ndarray) -> "SimResult":
        end = out.end_ms
        nb = np.maximum(out.batches, 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            thr = np.where(end > 0, out.completed / end * 1000.0, np.nan)
            mean_sys = np.where(end > 0, out.in_system_time_ms / end, np.nan)
            busy = np.where(end > 0, out.busy_ms / end, np.nan)
        return cls(
            engine=engine, policy=policy, work_conserving=work_conserving, replications=out.replications,
            horizon_ms=out.horizon_ms, seed=seed, load=np.asarray(load, dtype=float), backend=out.backend,
            token_budget=out.token_budget, arrived=out.arrived, completed=out.completed, end_ms=end,
            throughput_requests_per_s=thr, mean_requests_in_system=mean_sys,
            max_requests_in_system=out.max_in_system, final_backlog_tokens=out.backlog_tokens_end,
            batches=out.batches, fraction_full=out.batches_full / nb, fraction_mixed=out.batches_mixed / nb,
            fraction_decode_only=out.batches_decode_only / nb, fraction_prefill_only=out.batches_prefill_only / nb,
            prefill_tokens_served=out.prefill_tokens, decode_tokens_served=out.decode_tokens, busy_fraction=busy,
            unschedulable=out.unschedulable, preemptions=out.preemptions, recomputed_tokens=out.recomputed_tokens,
            diverged=out.diverged, diverged_ms=out.diverged_ms, grid_ms=out.grid_ms,
            series_in_system=out.series_in_system, series_backlog_tokens=out.series_backlog_tokens,
            series_prefill_tokens=out.series_prefill_tokens, series_decode_tokens=out.series_decode_tokens,
            ttft=_latency(out, "ttft"), tbt=_latency(out, "tbt"), e2e=_latency(out, "e2e"),
            peak_state_bytes=out.peak_state_bytes, wall_s=out.wall_s, steps=out.steps, batch_log=out.batch_log)

    def __repr__(self) -> str:
        m, _ = mean_interval(self.throughput_requests_per_s)
        return (f"SimResult(engine={self.engine!r}, policy={self.policy!r}, R={self.replications}, "
                f"horizon_s={self.horizon_ms / 1000:g}, throughput_requests_per_s={m:.4g}, "
                f"mean_requests_in_system={mean_interval(self.mean_requests_in_system)[0]:.4g}, "
                f"diverged={int(self.diverged.sum())})")

    def summary(self) -> dict[str, Any]:
        """Means over replications with 95 % intervals of the headline outputs."""
        out = {}
        for key in ("throughput_requests_per_s", "mean_requests_in_system", "max_requests_in_system",
                    "final_backlog_tokens", "fraction_full", "fraction_mixed", "fraction_decode_only", "busy_fraction"):
            m, iv = mean_interval(getattr(self, key))
            out[key] = {"mean": _num(m), "interval": None if iv is None else [_num(iv[0]), _num(iv[1])]}
        return out

    def to_dict(self, series: bool = False) -> dict[str, Any]:
        """JSON-ready outputs (per-replication lists; ``series=True`` adds the time series)."""
        d: dict[str, Any] = {
            "engine": self.engine, "policy": self.policy, "work_conserving": self.work_conserving,
            "replications": self.replications, "horizon_s": self.horizon_ms / 1000.0, "seed": self.seed,
            "load": _list(self.load) if np.unique(self.load).size > 1 else _num(self.load[0]),
            "backend": self.backend, "token_budget": self.token_budget,
            "throughput_requests_per_s": _list(self.throughput_requests_per_s),
            "mean_requests_in_system": _list(self.mean_requests_in_system),
            "max_requests_in_system": _list(self.max_requests_in_system),
            "final_backlog_tokens": _list(self.final_backlog_tokens),
            "arrived": _list(self.arrived), "completed": _list(self.completed),
            "ttft_ms": self.ttft.to_dict(), "tbt_ms": self.tbt.to_dict(), "e2e_ms": self.e2e.to_dict(),
            "batches": {"count": _list(self.batches), "full_fraction": _list(self.fraction_full),
                        "mixed_fraction": _list(self.fraction_mixed),
                        "decode_only_fraction": _list(self.fraction_decode_only),
                        "prefill_only_fraction": _list(self.fraction_prefill_only)},
            "unschedulable": _list(self.unschedulable), "preemptions": _list(self.preemptions),
            "recomputed_tokens": _list(self.recomputed_tokens),
            "diverged": _list(self.diverged), "diverged_ms": _list(self.diverged_ms),
            "summary": self.summary(),
            "peak_state_bytes": self.peak_state_bytes, "wall_s": self.wall_s,
        }
        if series:
            d["series"] = {"grid_ms": _list(self.grid_ms), "in_system": self.series_in_system.tolist(),
                           "backlog_tokens": self.series_backlog_tokens.tolist(),
                           "prefill_tokens": self.series_prefill_tokens.tolist(),
                           "decode_tokens": self.series_decode_tokens.tolist()}
        return d

    def to_json(self, **kw: Any) -> str:
        return json.dumps(self.to_dict(**kw), allow_nan=False)

    def table(self) -> str:
        """A human-readable summary."""
        s = self.summary()

        def fmt(key: str, unit: str = "") -> str:
            m = s[key]["mean"]
            iv = s[key]["interval"]
            txt = "n/a" if m is None else f"{m:.4g}{unit}"
            return txt + ("" if iv is None else f"  [{iv[0]:.4g}, {iv[1]:.4g}]")

        lines = [f"engine {self.engine}, policy {self.policy} ({'work-conserving' if self.work_conserving else 'not work-conserving'}), "
                 f"{self.replications} replications x {self.horizon_ms / 1000:g} s, load {_fmt_load(self.load)}",
                 f"  throughput          {fmt('throughput_requests_per_s', ' req/s')}",
                 f"  requests in system  {fmt('mean_requests_in_system')} (mean), max {int(np.max(self.max_requests_in_system))}",
                 f"  backlog at end      {fmt('final_backlog_tokens', ' tokens')}",
                 f"  batches             {int(self.batches.sum())}: full {fmt('fraction_full')}, mixed {fmt('fraction_mixed')}, "
                 f"decode-only {fmt('fraction_decode_only')}"]
        for name, lat in (("TTFT", self.ttft), ("TBT", self.tbt), ("e2e", self.e2e)):
            lines.append(f"  {name:<5} ms  mean {_g(lat.mean)}  p50 {_g(lat.p50)}  p90 {_g(lat.p90)}  p99 {_g(lat.p99)}")
        if self.unschedulable.any():
            lines.append(f"  unschedulable requests (never served): {int(self.unschedulable.sum())}")
        if self.preemptions.any():
            lines.append(f"  KV preemptions: {int(self.preemptions.sum())}, recomputed tokens {int(self.recomputed_tokens.sum())}")
        if self.diverged.any():
            lines.append(f"  DIVERGED (memory cap reached): {int(self.diverged.sum())} replications, "
                         f"first at {np.nanmin(self.diverged_ms) / 1000:.4g} s")
        return "\n".join(lines)


def _g(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{x:.4g}"


def _fmt_load(load: np.ndarray) -> str:
    u = np.unique(load)
    return f"{u[0]:g}" if u.size == 1 else f"{u.min():g}..{u.max():g}"

