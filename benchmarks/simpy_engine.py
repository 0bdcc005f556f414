"""A plain SimPy model of one LLM engine running Sarathi-Serve: the event-driven peer of the benchmark.

This is what a competent engineer writes in SimPy, one replication per ``Environment``, with no
fluidllm machinery: an arrival process puts requests into the engine's queue, and an engine
process forms a batch at every boundary and holds it for ``batch_ms(n_tokens)``. It exists so that
``benchmarks/sim_speed.py`` can compare the vectorized core with the tool people would otherwise
use; ``tests/test_simpy_engine.py`` checks that it runs batch for batch like
:func:`fluidllm.sim.simulate_reference` on the same draws, which is what makes it a fair peer.

The model (``design.md``, "The model"):

* A request has v_p >= 1 prefill tokens, then v_d >= 0 decode tokens, at most one decode token
  per batch, and its first decode token in the batch after the one that ends its prefill; with
  v_d = 0 it completes with its last prefill token.
* The engine runs batches back to back. A request arriving during a batch is eligible at the next
  boundary; an idle engine starts a batch at the instant a request arrives.
* Sarathi-Serve at each boundary, over the present requests in FCFS order: one decode token per
  decoding request, then prefill chunks, as much as fits from the oldest prompt before the next
  (so as few requests as possible get prefill), within the token budget b_max and, if given, at
  most k_max requests per batch.
* The run stops at the first batch boundary at or after the horizon (an idle engine stops at the
  horizon), as the reference does.

Arrivals are replayed from a pre-drawn :class:`fluidllm.sim.Requests` (Poisson arrivals from
:func:`fluidllm.sim.draw_requests`) so that both simulators see the same requests. An arrival that
falls exactly on a batch boundary is taken at that boundary by the reference; here it depends on
SimPy's event order. With continuous (Poisson) arrival times that has probability zero.

Needs ``simpy`` (``pip install 'fluidllm[bench]'`` or ``pip install simpy``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import simpy

from fluidllm.sim import Requests

__all__ = ["SimpyRun", "simulate_simpy"]


@dataclass
class SimpyRun:
    """What one SimPy run produced.

    Attributes:
        batches: (start_ms, end_ms, prefill_tokens, decode_tokens) of every batch, in order.
        completed: requests finished by ``end_ms``.
        completion_ms: per request (position in ``Requests``), the end of the batch that finished
            it; NaN if not finished.
        end_ms: where the run stopped (the first boundary >= horizon, or the horizon when idle).
        arrived: requests that arrived by ``end_ms``.
    """

    batches: list[tuple[float, float, int, int]]
    completed: int
    completion_ms: np.ndarray
    end_ms: float
    arrived: int


class _Request:
    __slots__ = ("id", "prefill_left", "decode_left")

    def __init__(self, rid: int, prefill: int, decode: int) -> None:
        self.id = rid
        self.prefill_left = prefill
        self.decode_left = decode


class SarathiEngine:
    """One engine: a queue of new arrivals, the present requests, and the batch loop."""

    def __init__(self, env: simpy.Environment, token_budget: int, batch_ms: Callable[[int], float],
                 horizon_ms: float, max_batch_requests: int | None, n_requests: int) -> None:
        self.env = env
        self.b_max = token_budget
        self.k_max = max_batch_requests if max_batch_requests is not None else token_budget
        self.batch_ms = batch_ms
        self.horizon_ms = horizon_ms
        self.new: list[_Request] = []          # arrived since the last boundary
        self.present: list[_Request] = []      # eligible and unfinished, FCFS
        self.wakeup: simpy.Event | None = None  # set while the engine is idle
        self.batches: list[tuple[float, float, int, int]] = []
        self.completion_ms = [math.nan] * n_requests
        self.completed = 0

    def arrive(self, req: _Request) -> None:
        self.new.append(req)
        if self.wakeup is not None and not self.wakeup.triggered:
            self.wakeup.succeed()

    def plan(self) -> list[tuple[_Request, int, int]]:
        """Sarathi-Serve: decode tokens FCFS, then prefill chunks FCFS, within b_max and k_max."""
        budget, slots = self.b_max, self.k_max
        plan = []
        for r in self.present:
            if budget == 0 or slots == 0:
                return plan
            if r.prefill_left == 0:            # present and prefill done: decoding
                plan.append((r, 0, 1))
                budget -= 1
                slots -= 1
        for r in self.present:
            if budget == 0 or slots == 0:
                break
            if r.prefill_left > 0:
                n = min(r.prefill_left, budget)
                plan.append((r, n, 0))
                budget -= n
                slots -= 1
        return plan

    def run(self):
        env = self.env
        while env.now < self.horizon_ms:
            if self.new:                       # arrivals since the last boundary become eligible
                self.present.extend(self.new)
                self.new.clear()
            if not self.present:               # idle: start the instant work arrives
                self.wakeup = env.event()
                yield self.wakeup | env.timeout(self.horizon_ms - env.now)
                self.wakeup = None
                continue
            plan = self.plan()
            prefill = sum(p for _, p, _ in plan)
            decode = sum(d for _, _, d in plan)
            start = env.now
            yield env.timeout(self.batch_ms(prefill + decode))
            end = env.now
            self.batches.append((start, end, prefill, decode))
            finished = False
            for r, p, d in plan:
                r.prefill_left -= p
                r.decode_left -= d
                if r.prefill_left == 0 and r.decode_left == 0:
                    self.completion_ms[r.id] = end
                    self.completed += 1
                    finished = True
            if finished:
                self.present = [r for r in self.present if r.prefill_left or r.decode_left]


def _arrivals(env: simpy.Environment, engine: SarathiEngine, requests: Requests):
    for i, (t, p, d) in enumerate(zip(requests.arrival_ms.tolist(), requests.prefill.tolist(),
                                      requests.decode.tolist())):
        yield env.timeout(t - env.now)
        engine.arrive(_Request(i, p, d))


def simulate_simpy(requests: Requests, token_budget: int, batch_ms: Callable[[int], float],
                   horizon_ms: float, max_batch_requests: int | None = None) -> SimpyRun:
    """Run one Sarathi-Serve engine on ``requests`` until the first batch boundary >= ``horizon_ms``.

    ``batch_ms(n)``: the time in ms of a batch of n tokens (prefill + decode).
    """
    env = simpy.Environment()
    engine = SarathiEngine(env, int(token_budget), batch_ms, float(horizon_ms), max_batch_requests, len(requests))
    env.process(_arrivals(env, engine, requests))
    done = env.process(engine.run())
    env.run(until=done)
    end = env.now
    return SimpyRun(batches=engine.batches, completed=engine.completed,
                    completion_ms=np.array(engine.completion_ms, dtype=float), end_ms=end,
                    arrived=int(np.count_nonzero(requests.arrival_ms <= end)))
