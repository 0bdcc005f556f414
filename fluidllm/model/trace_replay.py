"""Replay of a trace at a rate scale with each request's own (v_p, v_d): arrival i gets row i.

:meth:`Trace.arrival` replays the arrival instants and :meth:`Trace.lengths` gives the empirical
joint law, from which the simulators draw i.i.d. pairs: the arrival at instant t_i does not get the
lengths recorded with it. For trace-driven planning the pairing matters (a burst of long prompts is
not a burst of average ones), so :class:`TraceReplay` keeps it:

* ``speedup`` s divides every gap: the replayed rate is s × the trace's rate (n − 1)/span.
* ``start`` rotates the trace cyclically (the replay begins at row ``start``; rows before it follow
  the last one), so replications of one trace see different but real sample paths.
* ``cycles`` c plays the rotated trace c times back to back. Between the last row of one cycle and
  the first of the next sits one mean gap span/(n − 1), so a cycle lasts span·n/(n − 1) and the
  long-run rate stays exactly s (n − 1)/span for every c and ``start``.

:meth:`TraceReplay.lengths` is a :class:`ReplayPairs`: the same empirical law (means, KV moments)
whose ``sample(rng, size)`` returns the first ``size`` rows in replay order, ignoring ``rng``. Both
simulators draw a call's lengths in one chunk covering every arrival of the horizon
(:func:`fluidllm.sim.draws.draw_requests`; the reference network simulator for a one-call
workflow), so the i-th arrival takes the i-th row; ``tests/test_trace_replay.py`` checks this
on both.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..errors import finite_number, integer, require
from .arrivals import TraceArrival
from .lengths import EmpiricalPairs
from .traces import Trace
from .workload import Workload

__all__ = ["TraceReplay", "ReplayPairs", "replay_for_horizon"]


@dataclass(frozen=True, eq=False)
class ReplayPairs(EmpiricalPairs):
    """A trace's (v_p, v_d) rows in replay order; ``sample`` returns them in that order (cycling).

    As a law it is :class:`EmpiricalPairs` over the rows (each with mass 1/n); only the draws differ.
    """

    kind: ClassVar[str] = "empirical-pairs"

    def sample(self, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
        # The rng is deliberately unused: the order is the trace's, not a draw.
        n = integer(size, "size", minimum=0)
        return np.resize(self.prefill, n), np.resize(self.decode, n)

    def __repr__(self) -> str:
        return (f"ReplayPairs(n={self.prefill.size}, mean_prefill={self.mean_prefill:.4g}, "
                f"mean_decode={self.mean_decode:.4g}, source={self.source!r})")


@dataclass(frozen=True, eq=False)
class TraceReplay:
    """Trace ``trace`` replayed ``speedup`` times faster from row ``start``, ``cycles`` times over.

    Raises:
        ModelError: a trace with fewer than 2 requests, speedup ≤ 0, start outside [0, n), cycles < 1.
    """

    trace: Trace
    speedup: float = 1.0
    start: int = 0
    cycles: int = 1

    def __post_init__(self) -> None:
        require(isinstance(self.trace, Trace), "trace", self.trace, "must be a fluidllm.model.traces.Trace")
        n = len(self.trace)
        require(n >= 2, "trace", f"<{n} requests>", "must hold at least 2 requests to replay")
        span = float(self.trace.arrival_ms[-1] - self.trace.arrival_ms[0])
        require(span > 0, "trace.arrival_ms", f"<span {span} ms>", "must span a positive time to give a rate")
        object.__setattr__(self, "speedup", finite_number(self.speedup, "speedup", minimum=0, strict=True))
        s = integer(self.start, "start", minimum=0)
        require(s < n, "start", s, f"must be a row of the trace, 0..{n - 1}")
        object.__setattr__(self, "start", s)
        object.__setattr__(self, "cycles", integer(self.cycles, "cycles", minimum=1))

    def __len__(self) -> int:
        return len(self.trace) * self.cycles

    @property
    def cycle_ms(self) -> float:
        """Length of one cycle after speed-up: span·n/(n − 1)/speedup (ms)."""
        t = self.trace.arrival_ms
        n = t.size
        return float(t[-1] - t[0]) * n / (n - 1) / self.speedup

    @property
    def rate_per_s(self) -> float:
        """Long-run replayed rate: speedup × (n − 1)/span (requests/s)."""
        return self.trace.rate_per_s * self.speedup

    def _order(self) -> np.ndarray:
        n = len(self.trace)
        return (np.arange(n) + self.start) % n

    def arrival_times_ms(self) -> np.ndarray:
        """Replayed instants (ms from 0, ascending), ``len(self)`` of them."""
        t = np.asarray(self.trace.arrival_ms, dtype=float)
        t = t - t[0]
        n = t.size
        cycle_raw = float(t[-1]) * n / (n - 1)
        idx = self._order()
        one = t[idx] + np.where(idx < self.start, cycle_raw, 0.0) - t[self.start]
        allc = (one[None, :] + cycle_raw * np.arange(self.cycles)[:, None]).reshape(-1)
        return allc / self.speedup

    def arrival(self) -> TraceArrival:
        """The replayed instants as an arrival process (``TraceArrival`` at speedup 1, times pre-scaled)."""
        src = {**dict(self.trace.source), "speedup": self.speedup, "start": self.start, "cycles": self.cycles}
        return TraceArrival(self.arrival_times_ms(), 1.0, source=src)

    def lengths(self) -> ReplayPairs:
        """(v_p, v_d) of each replayed arrival, in order (``len(self)`` rows)."""
        idx = np.tile(self._order(), self.cycles)
        return ReplayPairs(self.trace.prefill[idx], self.trace.decode[idx], source=dict(self.trace.source))

    def workload(self, name: str = "trace", engine: str | None = None) -> Workload:
        """A single-engine workload that replays the trace with its own lengths."""
        return Workload(name, self.arrival(), self.lengths(), engine)

    def to_dict(self) -> dict[str, Any]:
        return {"requests": len(self.trace), "speedup": self.speedup, "start": self.start, "cycles": self.cycles,
                "rate_per_s": self.rate_per_s, "cycle_s": self.cycle_ms / 1000.0, "source": dict(self.trace.source)}


def replay_for_horizon(trace: Trace, speedup: float, horizon_ms: float, start: int = 0) -> TraceReplay:
    """The fewest cycles of ``trace`` at ``speedup`` from row ``start`` whose arrivals cover [0, horizon_ms).

    Raises:
        ModelError: bad trace, speedup, start or horizon (named).
    """
    h = finite_number(horizon_ms, "horizon_ms", minimum=0, strict=True)
    one = TraceReplay(trace, speedup, start, 1)
    return TraceReplay(trace, speedup, start, max(1, int(math.ceil(h / one.cycle_ms))))
