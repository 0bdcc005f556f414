"""The random draws of one replication: every request's arrival time, class and (v_p, v_d).

These draws are the shared input of every simulator in :mod:`fluidllm.sim`: the plain reference
(:mod:`fluidllm.sim.reference`) and the vectorized core consume the same :class:`Requests`, so
that the two can be compared batch for batch.

Streams: the seed (or generator) is split with ``Generator.spawn`` into one child stream per
workload, and each child into an arrival stream and a length stream. Adding a workload therefore
does not change the draws of the others, and scaling a Poisson rate changes the arrival times
but not the lengths (common random numbers).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import ModelError, finite_number, integer, require
from ..model.arrivals import DeterministicArrival, TraceArrival
from ..model.workload import Workload

__all__ = ["Requests", "draw_requests", "parse_initial"]


def parse_initial(initial: Sequence[Sequence[int]] | None) -> list[tuple[int, int, int]]:
    """Requests present at time 0: ``(prefill_left, decode_left[, kv_context_tokens])`` each, as
    ``(p, d, kv_context)`` triples (context 0 by default).

    Raises:
        ModelError: an entry of the wrong shape, negative counts, or nothing left to serve.
    """
    out = []
    for i, e in enumerate(initial or ()):
        f = f"initial[{i}]"
        require(isinstance(e, (tuple, list)) and len(e) in (2, 3), f, e,
                "must be (prefill_left, decode_left) or (prefill_left, decode_left, kv_context_tokens)")
        p = integer(e[0], f"{f}.prefill_left", minimum=0)
        d = integer(e[1], f"{f}.decode_left", minimum=0)
        c = integer(e[2], f"{f}.kv_context_tokens", minimum=0) if len(e) == 3 else 0
        require(p + d > 0, f, tuple(e), "must have a token left (a finished request is not present)")
        out.append((p, d, c))
    return out


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.array(a, copy=True)
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class Requests:
    """Requests of one replication, sorted by arrival time.

    Ties in ``arrival_ms`` are broken by workload order, then by draw order; position ``i`` in
    these arrays is the request's FCFS index.

    Attributes:
        arrival_ms: arrival instants in ms (float, ascending, finite, >= 0).
        prefill: v_p >= 1 prefill tokens (int64).
        decode: v_d >= 0 decode tokens (int64).
        klass: index of the request's workload in ``class_names`` (int64).
        class_names: the workloads' names (may be empty for hand-built requests).

    Raises:
        ModelError: arrays of different lengths, unsorted or negative arrival times, v_p < 1,
            v_d < 0, or a class index outside ``class_names``.
    """

    arrival_ms: np.ndarray
    prefill: np.ndarray
    decode: np.ndarray
    klass: np.ndarray
    class_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        a = np.asarray(self.arrival_ms, dtype=float)
        n = a.size
        require(a.ndim == 1, "requests.arrival_ms", a.shape, "must be one-dimensional")
        arrays = {}
        for name in ("prefill", "decode", "klass"):
            v = np.asarray(getattr(self, name))
            require(v.ndim == 1 and v.size == n, f"requests.{name}", f"<{v.size} values>",
                    f"must be one-dimensional with one value per arrival ({n})")
            require(v.size == 0 or (np.issubdtype(v.dtype, np.number) and bool(np.all(v == np.round(v)))),
                    f"requests.{name}", "<data>", "must be integers")
            arrays[name] = v.astype(np.int64)
        require(bool(np.all(np.isfinite(a))), "requests.arrival_ms", "<data>", "must be finite")
        if n and a[0] < 0:
            raise ModelError("requests.arrival_ms[0]", float(a[0]), "must be >= 0")
        bad = np.flatnonzero(np.diff(a) < 0)
        if bad.size:
            raise ModelError(f"requests.arrival_ms[{int(bad[0]) + 1}]", float(a[bad[0] + 1]), "must be sorted ascending")
        bad = np.flatnonzero(arrays["prefill"] < 1)
        if bad.size:
            raise ModelError(f"requests.prefill[{int(bad[0])}]", int(arrays["prefill"][bad[0]]),
                             "every request has at least 1 prefill token (v_p >= 1)")
        bad = np.flatnonzero(arrays["decode"] < 0)
        if bad.size:
            raise ModelError(f"requests.decode[{int(bad[0])}]", int(arrays["decode"][bad[0]]), "must be >= 0")
        names = tuple(self.class_names)
        k = arrays["klass"]
        if n and (k.min() < 0 or (names and k.max() >= len(names))):
            i = int(np.flatnonzero((k < 0) | ((k >= len(names)) if names else False))[0])
            raise ModelError(f"requests.klass[{i}]", int(k[i]),
                             f"must index the classes {list(names)}" if names else "must be >= 0")
        object.__setattr__(self, "arrival_ms", _frozen(a))
        for name, v in arrays.items():
            object.__setattr__(self, name, _frozen(v))
        object.__setattr__(self, "class_names", names)

    @classmethod
    def from_lists(cls, arrival_ms: Sequence[float], prefill: Sequence[int], decode: Sequence[int],
                   klass: Sequence[int] | None = None, class_names: Sequence[str] = ()) -> "Requests":
        """Hand-built requests (already sorted by arrival); ``klass`` defaults to all zeros."""
        if klass is None:
            klass = [0] * len(arrival_ms)
        return cls(np.asarray(arrival_ms, dtype=float), np.asarray(prefill), np.asarray(decode),
                   np.asarray(klass), tuple(class_names))

    def __len__(self) -> int:
        return int(self.arrival_ms.size)

    def __repr__(self) -> str:
        return (f"Requests(n={len(self)}, classes={list(self.class_names)}, "
                f"last_arrival_ms={float(self.arrival_ms[-1]) if len(self) else None})")

    @property
    def tokens(self) -> np.ndarray:
        """v_p + v_d per request."""
        return self.prefill + self.decode


def _arrival_times(w: Workload, horizon_ms: float, rng: np.random.Generator) -> np.ndarray:
    """Arrival instants of one workload in [0, horizon_ms).

    Poisson and renewal: an ordinary renewal process started at 0 (first arrival after one gap).
    Deterministic: ``offset_ms + k * gap``. Trace: the replayed instants (after speed-up).
    """
    arr = w.arrival
    if isinstance(arr, TraceArrival):
        t = arr.arrival_times_ms()
        return t[t < horizon_ms]
    if isinstance(arr, DeterministicArrival):
        gap = float(arr.gaps_ms(rng, 1)[0])
        if not math.isfinite(gap) or arr.offset_ms >= horizon_ms:
            return np.empty(0)
        n = int(math.ceil((horizon_ms - arr.offset_ms) / gap)) + 1
        t = arr.offset_ms + gap * np.arange(n)
        return t[t < horizon_ms]
    # Poisson / renewal: draw gaps in chunks until the running sum passes the horizon.
    if arr.rate_per_s == 0 or horizon_ms <= 0:
        return np.empty(0)
    expected = horizon_ms * arr.rate_per_ms
    chunk = int(expected + 4.0 * math.sqrt(expected) + 16)
    pieces: list[np.ndarray] = []
    last = 0.0
    while last < horizon_ms:
        t = last + np.cumsum(arr.gaps_ms(rng, chunk))
        pieces.append(t)
        last = float(t[-1])
    t = np.concatenate(pieces)
    return t[t < horizon_ms]


def draw_requests(workloads: Sequence[Workload], horizon_ms: float,
                  rng: np.random.Generator | int) -> Requests:
    """Draw every request arriving in [0, ``horizon_ms``) for the given workloads.

    Arrival instants come from ``arrival.gaps_ms`` (Poisson, renewal, deterministic) or
    ``arrival.arrival_times_ms()`` (trace); (v_p, v_d) from ``workload.lengths.sample``. The result
    is sorted by arrival time, ties broken by workload order then draw order. Deterministic given
    an integer seed (or a generator in a given state).

    Raises:
        ModelError: no workloads or a non-workload, a negative or infinite horizon, a seed that is
            not a non-negative integer or ``numpy.random.Generator``, or a length law that draws
            v_p < 1 or v_d < 0.
    """
    workloads = list(workloads)
    require(len(workloads) > 0, "workloads", workloads, "must hold at least one workload")
    for i, w in enumerate(workloads):
        require(isinstance(w, Workload), f"workloads[{i}]", w, "must be a Workload")
    horizon_ms = finite_number(horizon_ms, "horizon_ms", minimum=0)
    if isinstance(rng, np.random.Generator):
        gen = rng
    else:
        gen = np.random.default_rng(integer(rng, "seed", minimum=0))
    try:
        streams = gen.spawn(len(workloads))
    except (TypeError, ValueError, AttributeError):
        raise ModelError("seed", rng, "must be an integer seed or a Generator from numpy.random.default_rng") from None

    times, prefill, decode, klass, order = [], [], [], [], []
    for k, (w, stream) in enumerate(zip(workloads, streams)):
        arr_rng, len_rng = stream.spawn(2)
        t = _arrival_times(w, horizon_ms, arr_rng)
        p, d = w.lengths.sample(len_rng, t.size)
        p = np.asarray(p, dtype=np.int64)
        d = np.asarray(d, dtype=np.int64)
        if p.size and p.min() < 1:
            raise ModelError(f"workloads.{w.name}.prefill", int(p.min()), "drew v_p < 1; every request has v_p >= 1")
        if d.size and d.min() < 0:
            raise ModelError(f"workloads.{w.name}.decode", int(d.min()), "drew v_d < 0")
        times.append(t)
        prefill.append(p)
        decode.append(d)
        klass.append(np.full(t.size, k, dtype=np.int64))
        order.append(np.arange(t.size))
    t = np.concatenate(times)
    k = np.concatenate(klass)
    idx = np.lexsort((np.concatenate(order), k, t))  # last key is primary: time, then class, then draw
    return Requests(t[idx], np.concatenate(prefill)[idx], np.concatenate(decode)[idx], k[idx],
                    tuple(w.name for w in workloads))
