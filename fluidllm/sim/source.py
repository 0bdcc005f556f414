"""Arrival sources for the vectorized core: the requests of R replications, epoch by epoch.

The core pulls arrivals in blocks covering successive epochs [t0, t1) of simulated time, so that
memory does not grow with the horizon. A :class:`StreamSource` draws them with NumPy on the host
(the same numbers on every backend); a :class:`FixedSource` replays pre-drawn
:class:`~fluidllm.sim.draws.Requests`, one per replication (this is how the core is compared with
the reference simulator on the same draws).

Streams (StreamSource): the seed is split with ``Generator.spawn`` into one child per workload and
each child into an arrival stream and a length stream, as in :func:`~fluidllm.sim.draws.draw_requests`;
the numbers differ from ``draw_requests`` (they are drawn for all replications at once) but the laws
are the same: Poisson arrivals are drawn epoch by epoch as a Poisson count and sorted uniform
instants (exact, the process being memoryless); renewal processes start at 0 with the first arrival
after one gap; deterministic arrivals at ``offset_ms + k·gap``; traces replay their instants. Each replication r
may run at its own load ``scale[r]`` (every rate multiplied by it): gaps are divided by it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import ModelError, finite_number, integer, require
from ..model.arrivals import DeterministicArrival, PoissonArrival, TraceArrival
from ..model.workload import Workload
from .draws import Requests

__all__ = ["ArrivalBlock", "StreamSource", "FixedSource"]


@dataclass(frozen=True)
class ArrivalBlock:
    """Arrivals of one epoch for every replication, padded with ``inf`` times.

    Attributes:
        times_ms: (R, n) arrival instants, ascending per row, ``inf`` past ``counts[r]``.
        prefill, decode: (R, n) int64 v_p and v_d (0 in padding).
        klass: (R, n) int64 workload index.
        counts: (R,) arrivals per replication in this block.
    """

    times_ms: np.ndarray
    prefill: np.ndarray
    decode: np.ndarray
    klass: np.ndarray
    counts: np.ndarray


def _seed_streams(seed: np.random.Generator | int, n: int) -> list[tuple[np.random.Generator, np.random.Generator]]:
    gen = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(integer(seed, "seed", minimum=0))
    return [tuple(child.spawn(2)) for child in gen.spawn(n)]  # type: ignore[misc]


class StreamSource:
    """Draws the arrivals of R replications of ``workloads`` over [0, horizon_ms), epoch by epoch.

    Raises:
        ModelError: no workloads, a bad horizon, replications, seed or scale.
    """

    def __init__(self, workloads: Sequence[Workload], replications: int, horizon_ms: float,
                 seed: np.random.Generator | int, scale: np.ndarray | None = None,
                 per_epoch: float = 128.0) -> None:
        self.workloads = list(workloads)
        require(len(self.workloads) > 0, "workloads", self.workloads, "must hold at least one workload")
        self.R = integer(replications, "replications", minimum=1)
        self.horizon_ms = finite_number(horizon_ms, "horizon_s", minimum=0)
        sc = np.ones(self.R) if scale is None else np.asarray(scale, dtype=float)
        require(sc.shape == (self.R,) and bool(np.all(np.isfinite(sc))) and bool(np.all(sc > 0)), "load",
                "<array>" if sc.size > 1 else float(sc.ravel()[0]) if sc.size else sc,
                f"must be finite and > 0, one value per replication ({self.R})")
        self.scale = sc
        self.class_names = tuple(w.name for w in self.workloads)
        self._streams = _seed_streams(seed, len(self.workloads))
        self.until_ms = 0.0
        self._next: list[np.ndarray | None] = []
        for w, (arr_rng, _) in zip(self.workloads, self._streams):
            a = w.arrival
            if isinstance(a, TraceArrival):
                self._next.append(None)
            elif isinstance(a, DeterministicArrival):
                self._next.append(np.full(self.R, a.offset_ms if a.rate > 0 else math.inf))
            else:
                self._next.append(a.gaps_ms(arr_rng, self.R) / sc)
        rate_per_ms = sum(w.arrival.rate_per_s for w in self.workloads) / 1000.0 * float(sc.max())
        # Epochs long enough for ``per_epoch`` arrivals per replication on average.
        self.epoch_ms = self.horizon_ms if rate_per_ms <= 0 or not math.isfinite(rate_per_ms) else \
            max(per_epoch / rate_per_ms, 1e-9)

    @property
    def exhausted(self) -> bool:
        return self.until_ms >= self.horizon_ms

    def _times(self, k: int, w: Workload, t1: float) -> np.ndarray:
        """(R, n) arrival instants of workload k in [until_ms, t1), inf-padded."""
        a = w.arrival
        if isinstance(a, TraceArrival):
            base = a.arrival_times_ms()                       # already sped up by the trace's own speedup
            lo = np.searchsorted(base, self.until_ms * self.scale, side="left")
            hi = np.searchsorted(base, t1 * self.scale, side="left")
            n = int((hi - lo).max(initial=0))
            idx = lo[:, None] + np.arange(n)[None, :]
            ok = idx < hi[:, None]
            t = base[np.minimum(idx, base.size - 1)] / self.scale[:, None]
            return np.where(ok, t, np.inf)
        arr_rng = self._streams[k][0]
        if isinstance(a, PoissonArrival):
            # Poisson: the count in [t0, t1) is Poisson(λ·scale·Δ) and, given it, the instants are
            # sorted uniforms (memoryless, so each epoch is drawn afresh: exact and vectorized).
            t0, span = self.until_ms, t1 - self.until_ms
            n = arr_rng.poisson(a.rate_per_s / 1000.0 * self.scale * span)
            m = int(n.max(initial=0))
            u = np.where(np.arange(m)[None, :] < n[:, None], arr_rng.random((self.R, m)), np.inf)
            u.sort(axis=1)
            return t0 + u * span
        nxt = self._next[k]
        cols = []
        while True:
            mask = nxt < t1
            if not mask.any():
                break
            cols.append(np.where(mask, nxt, np.inf))
            gaps = a.gaps_ms(arr_rng, self.R) / self.scale
            nxt = np.where(mask, nxt + gaps, nxt)
        self._next[k] = nxt
        return np.stack(cols, axis=1) if cols else np.full((self.R, 0), np.inf)

    def next_block(self) -> ArrivalBlock:
        """Arrivals in the next epoch [until_ms, min(until_ms + epoch_ms, horizon_ms))."""
        t1 = min(self.until_ms + self.epoch_ms, self.horizon_ms)
        times, pre, dec, kls = [], [], [], []
        for k, w in enumerate(self.workloads):
            t = self._times(k, w, t1)
            valid = np.isfinite(t)
            n = int(valid.sum())
            p, d = w.lengths.sample(self._streams[k][1], n)
            P = np.zeros(t.shape, dtype=np.int64)
            D = np.zeros(t.shape, dtype=np.int64)
            P[valid] = p
            D[valid] = d
            if n and (P[valid].min() < 1 or D[valid].min() < 0):
                raise ModelError(f"workloads.{w.name}.prefill", int(P[valid].min()), "drew v_p < 1 or v_d < 0")
            times.append(t)
            pre.append(P)
            dec.append(D)
            kls.append(np.full(t.shape, k, dtype=np.int64))
        self.until_ms = t1
        return _merge(times, pre, dec, kls)


def _merge(times: list[np.ndarray], pre: list[np.ndarray], dec: list[np.ndarray],
           kls: list[np.ndarray]) -> ArrivalBlock:
    if len(times) == 1:   # one workload: already sorted, inf-padded at the end
        t = times[0]
        counts = np.isfinite(t).sum(axis=1)
        n = int(counts.max(initial=0))
        return ArrivalBlock(t[:, :n], pre[0][:, :n], dec[0][:, :n], kls[0][:, :n], counts)
    t = np.concatenate(times, axis=1)
    # Stable sort by time: ties keep workload order, then draw order (as draw_requests).
    order = np.argsort(t, axis=1, kind="stable")
    t = np.take_along_axis(t, order, axis=1)
    counts = np.isfinite(t).sum(axis=1)
    n = int(counts.max(initial=0))
    take = lambda parts: np.take_along_axis(np.concatenate(parts, axis=1), order, axis=1)[:, :n]  # noqa: E731
    return ArrivalBlock(t[:, :n], take(pre), take(dec), take(kls), counts)


class FixedSource:
    """Replays pre-drawn requests, ``requests[r]`` for replication r, in one block.

    Raises:
        ModelError: an empty list or a non-Requests entry.
    """

    def __init__(self, requests: Sequence[Requests], horizon_ms: float) -> None:
        self.requests = list(requests)
        require(len(self.requests) > 0, "requests", self.requests, "must hold one Requests per replication")
        for i, r in enumerate(self.requests):
            require(isinstance(r, Requests), f"requests[{i}]", r, "must be a Requests (see draw_requests)")
        self.R = len(self.requests)
        self.horizon_ms = finite_number(horizon_ms, "horizon_ms", minimum=0)
        self.class_names = self.requests[0].class_names
        self.until_ms = 0.0

    @property
    def exhausted(self) -> bool:
        return self.until_ms >= self.horizon_ms

    def next_block(self) -> ArrivalBlock:
        """Every request arriving before the horizon (later ones are not part of the run)."""
        keep = [r.arrival_ms < self.horizon_ms for r in self.requests]
        n = max(int(k.sum()) for k in keep)
        R = self.R
        t = np.full((R, n), np.inf)
        P = np.zeros((R, n), dtype=np.int64)
        D = np.zeros((R, n), dtype=np.int64)
        K = np.zeros((R, n), dtype=np.int64)
        for i, (r, k) in enumerate(zip(self.requests, keep)):
            m = int(k.sum())
            t[i, :m] = r.arrival_ms[k]
            P[i, :m] = r.prefill[k]
            D[i, :m] = r.decode[k]
            K[i, :m] = r.klass[k]
        self.until_ms = self.horizon_ms
        return ArrivalBlock(t, P, D, K, np.array([int(k.sum()) for k in keep]))
