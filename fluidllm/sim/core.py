"""The vectorized simulator core: R replications of one engine advance batch by batch in lock-step.

Same time model and rules as the reference (:mod:`fluidllm.sim.reference`, which is the oracle this
core must match batch for batch on the same draws):

* time is continuous (ms); a replication runs batches back to back; arrivals during a batch are
  eligible at the next boundary; an idle replication starts at the instant work arrives;
* at a boundary: arrivals join the FCFS queue, are admitted up to ``max_resident_requests``, the KV
  rule preempts if memory is short, the policy plans the batch over the resident requests in FCFS
  order, and the batch runs for ``batch_time.batch_ms(P, D, K)`` ms;
* a run stops at each replication's first boundary at or after the horizon.

Layout. Resident requests live in *slot* arrays shaped (R, Q) in FCFS order (completed requests
leave holes, squeezed out when they pile up); requests that arrived but have not been taken into
the slots wait in a per-replication FIFO (R, C). Only as many waiting requests are moved into the
slots as the policy could possibly serve in the next batch (their prompts cover the token budget,
or k_max of them): every built-in rule fills in FCFS order, so a request behind those gets nothing
and moving it later changes no batch. Both arrays grow by doubling; a replication that would make
the state exceed ``max_memory_mb`` is stopped and reported as diverged, with its time.

The KV-memory rule (when ``kv_capacity_tokens`` M is set) is the reference's: requests hold the
tokens they have processed; a request with v_p + v_d > M is set aside as unschedulable; before
planning, while free memory is below min(decoders, b_max, k_max), the last KV holder in FCFS order
is preempted (recompute: its processed tokens become prefill again); the batch may hold at most
min(b_max, free memory) tokens.
"""
from __future__ import annotations

import math
import time as _time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..errors import ModelError, integer, require
from ..model.engine import Engine
from ..policies.rules import SlotState, vector_policy
from .backend import Backend, get_backend
from .draws import parse_initial

__all__ = ["CoreOutput", "run_core", "HIST_BINS_PER_DECADE", "HIST_MIN_MS", "hist_edges_ms"]

#: Latency histograms: log-spaced bins from HIST_MIN_MS over HIST_DECADES decades.
HIST_BINS_PER_DECADE = 100
HIST_MIN_MS = 1e-2
HIST_DECADES = 9
_NB = HIST_BINS_PER_DECADE * HIST_DECADES


def hist_edges_ms() -> np.ndarray:
    """Edges (ms) of the latency histograms: relative bin width 10^(1/100) − 1 ≈ 2.3 %; the last
    bin also holds everything above 10^7 ms."""
    return HIST_MIN_MS * 10.0 ** (np.arange(_NB + 1) / HIST_BINS_PER_DECADE)


@dataclass
class CoreOutput:
    """Raw per-replication outputs of :func:`run_core` (NumPy arrays, one row per replication)."""

    replications: int
    horizon_ms: float
    token_budget: int
    backend: str
    end_ms: np.ndarray
    arrived: np.ndarray
    completed: np.ndarray
    in_system_end: np.ndarray
    backlog_tokens_end: np.ndarray
    max_in_system: np.ndarray
    in_system_time_ms: np.ndarray          # ∫ N(t) dt over [0, end_ms]
    batches: np.ndarray
    batches_full: np.ndarray
    batches_mixed: np.ndarray
    batches_decode_only: np.ndarray
    batches_prefill_only: np.ndarray
    prefill_tokens: np.ndarray
    decode_tokens: np.ndarray
    busy_ms: np.ndarray
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
    latency_sum_ms: dict[str, np.ndarray]
    latency_count: dict[str, np.ndarray]
    latency_hist: dict[str, np.ndarray]
    peak_state_bytes: int
    steps: int
    wall_s: float
    batch_log: list[list[dict[str, Any]]] | None = field(default=None)


def run_core(engine: Engine, source: Any, *, backend: str | Backend = "numpy", grid_points: int = 200,
             batch_log: bool = False, max_memory_mb: float = 4096.0,
             initial: Sequence[Sequence[int]] | None = None) -> CoreOutput:
    """Run R replications of ``engine`` on the arrivals of ``source`` up to ``source.horizon_ms``.

    ``source`` is a :class:`~fluidllm.sim.source.StreamSource` or
    :class:`~fluidllm.sim.source.FixedSource`. ``initial``: requests present at time 0 in every
    replication, ``(prefill_left, decode_left[, kv_context_tokens])``, ahead of all arrivals
    (numbered 0.. in the batch log, arrivals after them, as in the reference).

    Raises:
        ModelError: a bad grid, memory cap or initial entry, or a batch time that is not a finite
            positive number of ms.
        NotImplementedError: a policy without a vectorized rule.
    """
    t_wall = _time.perf_counter()
    return _Core(engine, source, get_backend(backend), grid_points, batch_log, max_memory_mb, initial).run(t_wall)


class _Core:
    def __init__(self, engine: Engine, source: Any, B: Backend, grid_points: int, batch_log: bool,
                 max_memory_mb: float, initial: Sequence[Sequence[int]] | None) -> None:
        require(isinstance(engine, Engine), "engine", engine, "must be an Engine")
        self.engine, self.source, self.B = engine, source, B
        self.spec = engine.policy
        self.rule = vector_policy(self.spec)
        self.R = R = int(source.R)
        self.H = float(source.horizon_ms)
        self.G = integer(grid_points, "grid_points", minimum=2)
        require(isinstance(max_memory_mb, (int, float)) and max_memory_mb > 0, "max_memory_mb", max_memory_mb,
                "must be a positive number of MiB")
        self.mem_cap = float(max_memory_mb) * 2**20
        self.log = batch_log
        self.b_max = engine.token_budget
        self.kmax = engine.max_batch_requests
        self.rescap = engine.max_resident_requests
        self.M = engine.kv_capacity_tokens
        bt = engine.batch_time
        self.tokens_only = bt.tokens_only
        self.track_kv = self.M is not None or not self.tokens_only
        self.whole = self.rule.whole_prompts and not self.spec.flag("split_long_prompts")
        # A waiting request can be served in the next batch only if the prompts ahead of it ask for
        # fewer than b_max tokens; "ask" = min(prompt, chunk or b_max piece).
        chunk = self.spec.options.get("chunk_size")
        self.piece = min(chunk, self.b_max) if chunk else self.b_max
        if self.tokens_only:
            table = np.asarray(bt.tokens_ms(np.arange(1, self.b_max + 1)), dtype=float)
            bad = np.flatnonzero(~(np.isfinite(table) & (table > 0)))
            if bad.size:
                raise ModelError(f"engines.{engine.name}.batch_time", float(table[bad[0]]),
                                 f"must give a finite positive time; got it for {bad[0] + 1} tokens")
            self.table = B.asarray(np.concatenate([[np.nan], table]), "float64")
        self.peak = 0
        self.steps = 0
        self._alloc(initial)

    # ------------------------------------------------------------------ state allocation
    def _alloc(self, initial: Sequence[Sequence[int]] | None) -> None:
        B, R = self.B, self.R
        init = parse_initial(initial)
        self.n_init = len(init)
        if self.rescap is not None and self.n_init > self.rescap:
            raise ModelError("initial", f"<{self.n_init} requests>",
                             f"must not exceed max_resident_requests = {self.rescap} in the vectorized core")
        self.Q = Q = self._width(self.n_init)
        self.slot_dtypes = {"pre": "int32", "dec": "int32", "arr": "float64", "first": "float64", "vd1": "int32",
                            "evt": "int32"}
        self.pre = B.zeros((R, Q), "int32")
        self.dec = B.zeros((R, Q), "int32")
        self.arr = B.zeros((R, Q), "float64")
        self.first = B.full((R, Q), math.nan, "float64")
        self.vd1 = B.full((R, Q), -1, "int32")     # v_d − 1
        # The decode-left value at which the slot's next latency event fires: v_d − 1 (its first
        # token) until that token, then 0 (its completion), −1 once complete or empty. One compare
        # per batch (dec == evt) then finds every event, instead of five passes.
        self.evt = B.full((R, Q), -1, "int32")
        self.any_vd0 = False
        if self.track_kv:
            self.kv = B.zeros((R, Q), "int32")
            self.slot_dtypes["kv"] = "int32"
        if self.rule.needs_running:
            self.running = B.zeros((R, Q), "bool")
            self.slot_dtypes["running"] = "bool"
        if self.rule.needs_group:
            self.group = B.zeros((R, Q), "bool")
            self.slot_dtypes["group"] = "bool"
        if self.log:
            self.rid = B.zeros((R, Q), "int64")
            self.slot_dtypes["rid"] = "int64"
        # Per-replication scalars.
        self.t = B.zeros(R, "float64")
        self.active = B.full(R, self.H > 0, "bool")
        self.n_end = B.zeros(R, "int64")
        self.n_win = B.zeros(R, "int64")
        z = lambda dt="int64": B.zeros(R, dt)  # noqa: E731
        self.uns_n, self.uns_tok = z(), z()
        self.uns_arr = np.zeros(R)      # host: Σ arrival instants of the set-aside requests
        self.arrived, self.completed = z(), z()
        self.max_sys = z()
        self.sys_time = z("float64")
        self.nb, self.nb_full, self.nb_mixed, self.nb_dec = z(), z(), z(), z()
        self.tok_p, self.tok_d = z(), z()
        self.busy_ms = z("float64")
        self.preempt, self.recomp = z(), z()
        self.diverged = B.full(R, False, "bool")
        self.div_ms = B.full(R, math.nan, "float64")
        self.grid = B.asarray(self.H * np.arange(self.G) / self.G, "float64")
        self.g_next = z()
        self.s_sys = B.zeros((R, self.G), "int64")
        self.s_back = B.zeros((R, self.G), "int64")
        self.s_p = B.zeros((R, self.G), "int32")
        self.s_d = B.zeros((R, self.G), "int32")
        # Latency accumulators stay on the host: events are sparse.
        self.lat = ("ttft", "tbt", "e2e")
        self.lat_sum = {k: np.zeros(R) for k in self.lat}
        self.lat_n = {k: np.zeros(R, dtype=np.int64) for k in self.lat}
        self.hist = {k: np.zeros((R, _NB), dtype=np.int32) for k in self.lat}
        self._events: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {k: [] for k in self.lat}
        self._n_events = 0
        self.rows = B.arange(R)
        # FIFO of arrived (or future) requests not yet in the slots.
        self.C = 0
        self.head, self.ap, self.tail = z(), z(), z()
        self.f_t = B.zeros((R, 0), "float64")
        self.f_p = B.zeros((R, 0), "int32")
        self.f_d = B.zeros((R, 0), "int32")
        self.f_rid = B.zeros((R, 0), "int64")
        self.f_ctok = B.zeros((R, 0), "int64")
        self.next_rid = np.full(R, self.n_init, dtype=np.int64)
        self.log_rows: list[list[dict[str, Any]]] = [[] for _ in range(R)] if self.log else []
        if init:
            n = len(init)
            P = B.asarray(np.array([p for p, _, _ in init], dtype=np.int32))
            D = B.asarray(np.array([d for _, d, _ in init], dtype=np.int32))
            self.pre[:, :n] = P[None, :]
            self.dec[:, :n] = D[None, :]
            self.vd1[:, :n] = D[None, :] - 1
            self.evt[:, :n] = D[None, :] - 1
            self.any_vd0 = self.any_vd0 or any(d == 0 for _, d, _ in init)
            if self.track_kv:
                self.kv[:, :n] = B.asarray(np.array([c for _, _, c in init], dtype=np.int32))[None, :]
            if self.rule.needs_running:
                self.running[:, :n] = B.asarray(np.array([p == 0 or c > 0 for p, _, c in init]))[None, :]
            if self.log:
                self.rid[:, :n] = B.arange(n)[None, :]
            self.n_end += n
            self.n_win += n
            self.arrived += n
            # Initial requests that can never finish are set aside, as arrivals are.
            never = np.array([self._never(p, d, c) for p, d, c in init])
            if never.any():
                cols = B.asarray(np.flatnonzero(never))
                tok = B.rsum(self.pre[:, cols] + self.dec[:, cols], "int64")
                self.uns_n += int(never.sum())
                self.uns_tok += tok
                self.pre[:, cols] = 0
                self.dec[:, cols] = 0
                self.n_win -= int(never.sum())
        self.win_pre = B.rsum(self.pre, "int64")
        self.win_dec = B.rsum(self.dec, "int64")
        self.long_prompts = bool(B.to_numpy(self.pre > self.piece).any())
        self._account()

    def _never(self, p: int, d: int, c: int) -> bool:
        return (self.whole and p > self.b_max) or (self.M is not None and p + d + c > self.M)

    def _state_bytes(self) -> int:
        B = self.B
        arrays = [getattr(self, n) for n in self.slot_dtypes]
        arrays += [self.f_t, self.f_p, self.f_d, self.f_rid, self.f_ctok, self.s_sys, self.s_back,
                   self.s_p, self.s_d]
        return sum(B.nbytes(a) for a in arrays) + sum(h.nbytes for h in self.hist.values())

    def _account(self) -> None:
        self.peak = max(self.peak, self._state_bytes())

    def _diverge(self, rows_mask: Any) -> None:
        """Stop the replications in ``rows_mask``: they outgrew the memory cap."""
        m = rows_mask & self.active
        self.diverged |= m
        self.div_ms = self.B.where(m, self.t, self.div_ms)
        self.active &= ~m

    # ------------------------------------------------------------------ the slot arrays
    def _compact(self) -> None:
        """Squeeze completed requests' holes out of the slots (FCFS order kept)."""
        B = self.B
        W = self.Q
        live = (self.pre + self.dec) > 0
        n_live = B.rsum(live, "int64")
        r, c = B.nonzero2d(live)                       # row-major: FCFS order within each row
        start = B.cumsum(n_live[None, :], "int64")[0] - n_live
        newc = B.arange(int(r.shape[0])) - start[r]     # rank of the live slot within its row
        src, dst = r * W + c, r * W + newc            # flat indices: far faster than (r, c) pairs
        for name, dt in self.slot_dtypes.items():
            a = getattr(self, name).reshape(-1)
            vals = a[src]
            a[:] = self._SLOT_FILL.get(name, 0)
            a[dst] = vals
        self.n_end = n_live
        # Keep the slot arrays tight: every per-batch operation runs over their full width.
        Q = self._width(int(n_live.max()))
        if Q < self.Q:
            self._resize(Q)

    _SLOT_FILL = {"first": math.nan, "vd1": -1, "evt": -1}

    def _resize(self, Q: int) -> None:
        """Reallocate the slot arrays with width Q (keeping the first min(Q, old Q) slots)."""
        B = self.B
        keep = min(Q, self.Q)
        for name, dt in self.slot_dtypes.items():
            a = getattr(self, name)
            new = B.full((self.R, Q), self._SLOT_FILL.get(name, 0), dt)
            new[:, :keep] = a[:, :keep]
            setattr(self, name, new)
        self.Q = Q

    @staticmethod
    def _width(n: int) -> int:
        """Slot width for n occupied slots: a little headroom, a multiple of 16."""
        return max(16, -(-(n + n // 8 + 8) // 16) * 16)

    def _grow_slots(self, need: int) -> None:
        """Make room for ``need`` slots per replication (compacting first, then widening)."""
        if need <= self.Q:
            return
        self._compact()
        need = max(need, int(self.n_end.max()) + 1)
        if need <= self.Q:
            return
        Q = max(self._width(need), self.Q + self.Q // 4)
        extra = (Q - self.Q) * self.R * sum(np.dtype(dt).itemsize for dt in self.slot_dtypes.values())
        if self._state_bytes() + extra > self.mem_cap:
            self._diverge(self.n_end >= self.Q)
            return
        self._resize(Q)
        self._account()

    # ------------------------------------------------------------------ the FIFO
    def _append_block(self) -> None:
        """Draw the next epoch of arrivals and append it to every replication's FIFO."""
        B = self.B
        blk = self.source.next_block()
        counts = np.asarray(blk.counts, dtype=np.int64)
        counts = np.where(B.to_numpy(self.diverged), 0, counts)   # a stopped replication takes no more
        n = int(counts.max(initial=0))
        head = B.to_numpy(self.head)
        tail = B.to_numpy(self.tail)
        keep = tail - head
        need = int((keep + counts).max(initial=0))
        C = max(self.C, 64)
        while C < need:
            C *= 2
        if C > self.C:
            extra = (C - self.C) * self.R * (8 + 4 + 4 + 8 + 8)
            if self._state_bytes() + extra > self.mem_cap:
                over = (keep + counts) > self.C
                self._diverge(B.asarray(over))
                counts = np.where(over, 0, counts)
                need = int((keep + counts).max(initial=0))
                C = max(self.C, 64)
                while C < need:
                    C *= 2
        # Shift every row left by its head and append the new block after its tail.
        idx = B.asarray(np.minimum(head[:, None] + np.arange(C)[None, :], max(self.C - 1, 0)))
        valid = B.asarray(np.arange(C)[None, :] < keep[:, None])

        flat_src = self.rows[:, None] * max(self.C, 1) + idx

        def shifted(a: Any, fill: Any, dt: str) -> Any:
            if self.C == 0:
                return B.full((self.R, C), fill, dt)
            return B.where(valid, a.reshape(-1)[flat_src], fill)

        f_t = shifted(self.f_t, math.inf, "float64")
        f_p = shifted(self.f_p, 0, "int32")
        f_d = shifted(self.f_d, 0, "int32")
        f_rid = shifted(self.f_rid, 0, "int64") if self.log else self.f_rid
        self.ap = self.ap - self.head
        self.head = B.zeros(self.R, "int64")
        if n:
            flat = np.flatnonzero(np.arange(n)[None, :] < counts[:, None])
            r, j = flat // n, flat % n
            cols = keep[r] + j
            dst = B.asarray(r * C + cols)
            src = r * blk.times_ms.shape[1] + j
            f_t.reshape(-1)[dst] = B.asarray(blk.times_ms.reshape(-1)[src], "float64")
            f_p.reshape(-1)[dst] = B.asarray(blk.prefill.reshape(-1)[src], "int32")
            f_d.reshape(-1)[dst] = B.asarray(blk.decode.reshape(-1)[src], "int32")
            if self.log:
                f_rid.reshape(-1)[dst] = B.asarray(self.next_rid[r] + j, "int64")
            self.next_rid += counts
            self.arrived += B.asarray(counts)
        self.tail = B.asarray(keep + counts)
        self.f_t, self.f_p, self.f_d, self.f_rid = f_t, f_p, f_d, f_rid
        self.f_ctok = B.cumsum(B.astype(f_p, "int64") + B.astype(f_d, "int64"), "int64")
        self.C = C
        self._account()

    def _fifo_sum(self, cum: Any, lo: Any, hi: Any, dtype: str) -> Any:
        """Σ over FIFO positions [lo, hi) of the quantity whose inclusive prefix sum is ``cum``."""
        B = self.B
        if self.C == 0:
            return B.zeros(self.R, dtype)
        at = lambda i: B.where(i > 0, cum[self.rows, B.maximum(i - 1, 0)], 0)  # noqa: E731
        return at(hi) - at(lo)

    def _ensure_arrivals(self, upto: Any, rows: Any, advanced: bool = False) -> None:
        """Move eligibility pointers past arrivals at or before ``upto[r]``, drawing epochs until the
        FIFO of every replication in ``rows`` holds all of them and its next arrival after them (when
        the source has one). ``advanced``: the pointers are already past ``upto`` for the FIFO as it is."""
        B = self.B
        while True:
            if not advanced:
                self._advance_eligible(upto)
            advanced = False
            if self.source.exhausted:
                return
            act = B.to_numpy(rows)
            if not act.any():
                return
            tmax = float(np.max(np.where(act, B.to_numpy(upto), -math.inf)))
            starving = bool((act & B.to_numpy(self.ap >= self.tail)).any())
            if self.source.until_ms > tmax and not starving:
                return
            self._append_block()

    def _advance_eligible(self, t: Any) -> None:
        """Move each row's eligibility pointer past arrivals at or before ``t`` (FIFO times are sorted
        and ``inf`` past the tail), looking 4 arrivals ahead at a time."""
        B = self.B
        if self.C == 0:
            return
        L = 4
        j = B.arange(L)[None, :]
        idx = B.minimum(self.ap[:, None] + j, self.C - 1)
        nxt = self.f_t.reshape(-1)[self.rows[:, None] * self.C + idx]
        move = B.rsum((nxt <= t[:, None]) & ((self.ap[:, None] + j) < self.tail[:, None]), "int64")
        self.ap = self.ap + move
        # Rows with more arrivals in the batch are few: go on over those rows only, 16 at a time.
        rows = B.nonzero(move == L)[0]
        L = 16
        j = B.arange(L)[None, :]
        while int(rows.shape[0]):
            ap = self.ap[rows]
            idx = B.minimum(ap[:, None] + j, self.C - 1)
            nxt = self.f_t.reshape(-1)[rows[:, None] * self.C + idx]
            move = B.rsum((nxt <= t[rows][:, None]) & ((ap[:, None] + j) < self.tail[rows][:, None]), "int64")
            self.ap[rows] = ap + move
            rows = rows[move == L]

    # ------------------------------------------------------------------ admission into the slots
    def _pull(self) -> None:
        """Move eligible waiting requests into the slots, FCFS, while the policy could still reach
        them: the slots' prompts ask for fewer than b_max tokens (and, with caps, fewer than k_max
        prompts / max_resident_requests requests are there). Requests that can never run are set
        aside as they come. Up to ``L`` waiting requests per replication are examined at once."""
        B = self.B
        W = self.Q
        pre = self.pre
        # reach = Σ min(prefill left, piece) over the slots; it is the tracked Σ prefill left unless a
        # prompt longer than the piece was ever taken in (or a recompute made one).
        reach = B.rsum(B.minimum(pre, self.piece), "int64") if self.long_prompts else self.win_pre
        ncand = B.rsum(pre > 0, "int64") if self.kmax is not None else None
        while True:
            avail = B.where(self.active, self.ap - self.head, 0)
            room = self.active & (reach < self.b_max)
            if self.rescap is not None:
                room &= self.n_win < self.rescap
            if ncand is not None:
                room &= ncand < self.kmax
            avail = B.where(room, avail, 0)
            L = min(int(avail.max()), 16)
            if L <= 0:
                return
            j = B.arange(L)[None, :]
            valid = j < avail[:, None]
            idx = B.minimum(self.head[:, None] + j, self.C - 1)
            flat = self.rows[:, None] * self.C + idx          # flat gathers: far faster than 2-D fancy indexing
            p = self.f_p.reshape(-1)[flat]
            d = None if (not self.whole and self.M is None) else self.f_d.reshape(-1)[flat]
            simple = not (self.whole or self.M is not None or self.rescap is not None or ncand is not None)
            if simple:                  # every waiting request can run: candidates = a prefix
                never = None
                cand = valid
                nbefore = j
            else:
                never = (p > self.b_max) if self.whole else B.zeros(p.shape, "bool")
                if self.M is not None:
                    never = never | ((p + d) > self.M)   # can never finish within KV memory
                cand = valid & ~never
                nbefore = B.cumsum(cand, "int64") - B.astype(cand, "int64")
            x = B.where(cand, B.astype(B.minimum(p, self.piece), "int64"), 0)
            before = B.cumsum(x, "int64") - x
            take = cand & ((reach[:, None] + before) < self.b_max)
            if self.rescap is not None:
                take &= (self.n_win[:, None] + nbefore) < self.rescap
            if ncand is not None:
                take &= (ncand[:, None] + nbefore) < self.kmax
            n_take = B.rsum(take, "int64")
            # Consume up to the first candidate refused (the rest wait); set aside the never-runnable.
            if simple:
                stop = n_take
            else:
                refused = cand & ~take
                stop = B.rmin(B.where(refused, j, B.minimum(avail, L)[:, None]))
            need = int((self.n_end + n_take).max())
            if need > self.Q:
                self._grow_slots(need + 1)
                reach = B.rsum(B.minimum(self.pre, self.piece), "int64") if self.long_prompts else self.win_pre
                if ncand is not None:
                    ncand = B.rsum(self.pre > 0, "int64")
                continue  # positions changed (compaction) or rows diverged: look again
            nv = None if never is None else valid & (j < stop[:, None]) & never
            if nv is not None and bool(B.to_numpy(nv).any()):
                self.uns_n += B.rsum(nv, "int64")
                self.uns_tok += B.rsum(B.where(nv, B.astype(p + d, "int64"), 0), "int64")
                rn, cn = B.nonzero2d(nv)
                np.add.at(self.uns_arr, B.to_numpy(rn), B.to_numpy(self.f_t[rn, idx[rn, cn]]))
            r, c = B.nonzero2d(take)
            if int(r.shape[0]):
                pos = self.n_end[r] + (c if simple else nbefore[r, c])
                h = idx[r, c]
                fh = r * self.C + h
                pr, dr = p[r, c], self.f_d.reshape(-1)[fh]
                fs = r * self.Q + pos
                self.pre.reshape(-1)[fs] = pr
                self.dec.reshape(-1)[fs] = dr
                self.vd1.reshape(-1)[fs] = dr - 1
                self.evt.reshape(-1)[fs] = dr - 1
                self.arr.reshape(-1)[fs] = self.f_t.reshape(-1)[fh]
                if self.log:
                    self.rid.reshape(-1)[fs] = self.f_rid.reshape(-1)[fh]
                if not self.long_prompts and bool(B.to_numpy(pr > self.piece).any()):
                    self.long_prompts = True
                if not self.any_vd0 and bool(B.to_numpy(dr == 0).any()):
                    self.any_vd0 = True
                self.win_pre = self.win_pre + B.bincount_sum(r, pr, self.R)
                self.win_dec = self.win_dec + B.bincount_sum(r, dr, self.R)
                reach = reach + B.bincount_sum(r, B.minimum(pr, self.piece), self.R)
                if ncand is not None:
                    ncand = ncand + n_take
                self.n_end = self.n_end + n_take
                self.n_win = self.n_win + n_take
            self.head = self.head + stop
            # Another round only for replications that examined a full block and refused nobody.
            if not bool(B.to_numpy((stop == L) & (avail > L)).any()):
                return

    # ------------------------------------------------------------------ KV preemption
    def _preempt(self, W: int) -> None:
        """Rule K3: while free KV is below min(decoders, b_max, k_max), preempt the last KV holder."""
        B = self.B
        cap = self.b_max if self.kmax is None else min(self.b_max, self.kmax)
        while True:
            kv, pre, dec = self.kv[:, :W], self.pre[:, :W], self.dec[:, :W]
            used = B.rsum(kv, "int64")
            need = B.minimum(B.rsum((pre == 0) & (dec > 0), "int64"), cap)
            short = self.active & (self.M - used < need) & B.rany(kv > 0)
            if not bool(B.to_numpy(short).any()):
                return
            self._preempt_last(short, W)

    def _preempt_last(self, rows: Any, W: int) -> None:
        """Preempt (recompute) the last KV holder in FCFS order in each replication of ``rows``."""
        B = self.B
        r = B.nonzero(rows)[0]
        holders = self.kv[r, :W] > 0
        last = B.rmax(B.where(holders, B.arange(W)[None, :], -1))
        ok = last >= 0
        r, last = r[ok], last[ok]
        k = self.kv[r, last]
        self.pre[r, last] += k
        self.win_pre[r] += B.astype(k, "int64")
        self.long_prompts = True
        self.kv[r, last] = 0
        if self.rule.needs_running:
            self.running[r, last] = False
        self.preempt[r] += 1
        self.recomp[r] += B.astype(k, "int64")

    def _plan(self, W: int) -> tuple[Any, Any, Any, Any, Any]:
        """The policy's batch for every replication: (prefill, decode) per slot, P, D and U (KV used)."""
        B = self.B
        budget = B.full(self.R, self.b_max, "int32")
        kv_used = None
        if self.M is not None:
            kv_used = B.rsum(self.kv[:, :W], "int64")
            budget = B.astype(B.minimum(B.astype(budget, "int64"), self.M - kv_used), "int32")
        budget = B.where(self.active, budget, 0)
        slots = None if self.kmax is None else B.full(self.R, self.kmax, "int32")
        state = SlotState(self.pre[:, :W], self.dec[:, :W], budget, slots, self.b_max,
                          self.running[:, :W] if self.rule.needs_running else None,
                          self.group[:, :W] if self.rule.needs_group else None)
        out = self.rule.plan(B, state, self.spec)
        gp, gd = out[0], out[1]
        if len(out) == 4:
            return gp, gd, B.astype(out[2], "int64"), B.astype(out[3], "int64"), kv_used
        return gp, gd, B.rsum(gp, "int64"), B.rsum(gd, "int64"), kv_used

    # ------------------------------------------------------------------ one lock-step batch
    def _record_grid(self, t: Any, t_new: Any, P: Any, D: Any, W: int) -> None:
        B = self.B
        cross = self.g_next < self.G
        gi = B.minimum(self.g_next, self.G - 1)
        cross &= self.grid[gi] < t_new
        if not bool(B.to_numpy(cross).any()):
            return
        n_sys = self.n_win + (self.ap - self.head) + self.uns_n
        back = self.win_pre + self.win_dec + self._fifo_sum(self.f_ctok, self.head, self.ap, "int64") + self.uns_tok
        while bool(B.to_numpy(cross).any()):
            r = B.nonzero(cross)[0]
            g = self.g_next[r]
            self.s_sys[r, g] = n_sys[r]
            self.s_back[r, g] = back[r]
            self.s_p[r, g] = B.astype(P[r], "int32")
            self.s_d[r, g] = B.astype(D[r], "int32")
            self.g_next[r] += 1
            gi = B.minimum(self.g_next, self.G - 1)
            cross = (self.g_next < self.G) & (self.grid[gi] < t_new) & cross

    def _latency(self, kind: str, r: Any, x: Any) -> None:
        """Queue latency events (replication ``r``, value ``x`` ms); :meth:`_flush` adds them up."""
        self._events[kind].append((self.B.to_numpy(r), self.B.to_numpy(x)))
        self._n_events += int(r.shape[0])
        if self._n_events > 16 * self.R + 262144:
            self._flush()

    def _flush(self) -> None:
        """Add the queued latency events to the per-replication sums and histograms (host)."""
        for kind, parts in self._events.items():
            if not parts:
                continue
            r = np.concatenate([p[0] for p in parts]).astype(np.int64)
            x = np.concatenate([p[1] for p in parts]).astype(float)
            parts.clear()
            self.lat_sum[kind] += np.bincount(r, weights=x, minlength=self.R)
            self.lat_n[kind] += np.bincount(r, minlength=self.R)
            b = np.floor(np.log10(np.maximum(x, 1e-300) / HIST_MIN_MS) * HIST_BINS_PER_DECADE)
            flat = r * _NB + np.clip(b, 0, _NB - 1).astype(np.int64)
            self.hist[kind].reshape(-1)[:] += np.bincount(flat, minlength=self.R * _NB).astype(np.int32)
        self._n_events = 0

    def step(self) -> bool:
        B = self.B
        # (The pointers were moved past this boundary at the end of the previous batch.)
        self._ensure_arrivals(self.t, self.active, advanced=self.steps > 0)
        self._pull()
        if not bool(B.to_numpy(self.active).any()):
            return False
        W = self.Q      # full width: contiguous arrays (the slots past n_end are empty)
        if self.M is not None:
            self._preempt(W)
        gp, gd, P, D, kv_used = self._plan(W)
        if self.M is not None:
            # Rule K5: an empty plan while requests are resident (only the KV cap causes it):
            # preempt the last KV holder and plan again.
            while True:
                stuck = self.active & ((P + D) == 0) & (self.n_win > 0)
                if not bool(B.to_numpy(stuck).any()):
                    break
                if not bool(B.to_numpy(stuck & B.rany(self.kv[:, :W] > 0)).any()):
                    raise RuntimeError("empty batch while requests are resident and no request holds KV")
                self._preempt_last(stuck, W)
                gp, gd, P, D, kv_used = self._plan(W)
        pre, dec = self.pre[:, :W], self.dec[:, :W]
        n = P + D
        busy = n > 0
        t = self.t
        if self.tokens_only:
            dt = self.table[n]
            K = None
        else:
            K = B.rsum(B.where(gd > 0, self.kv[:, :W], 0), "int64")
            dt = B.asarray(np.asarray(self.engine.batch_time.batch_ms(
                B.to_numpy(P), B.to_numpy(D), B.to_numpy(K)), dtype=float))
            bad = B.to_numpy(busy & ~((dt > 0) & (dt < math.inf)))
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise ModelError(f"engines.{self.engine.name}.batch_time", float(B.to_numpy(dt)[i]),
                                 f"must give a finite positive time; got it for P={int(B.to_numpy(P)[i])}, "
                                 f"D={int(B.to_numpy(D)[i])}, K={int(B.to_numpy(K)[i])}")
        idle = self.active & ~busy
        nxt = self.f_t[self.rows, B.minimum(self.ap, max(self.C - 1, 0))] if self.C else \
            B.full(self.R, math.inf, "float64")
        nxt = B.where(self.ap < self.tail, nxt, math.inf)
        t_idle = B.minimum(B.maximum(t, nxt), self.H)
        t_new = B.where(busy, t + B.where(busy, dt, 0.0), B.where(idle, t_idle, t))
        self._record_grid(t, t_new, P, D, W)
        if self.log:
            self._log(gp, gd, t, t_new, P, D, K, W, kv_used)
        # The batch runs: tokens served, state at its end.
        if self.rule.needs_group:
            start = busy & ~B.rany(self.group[:, :W])
            given0 = (gp + gd) > 0
            self.group[:, :W] = B.where(start[:, None], given0, self.group[:, :W])
        pre -= gp
        dec -= gd
        self.win_pre -= P
        self.win_dec -= D
        if self.track_kv:
            self.kv[:, :W] += gp + gd
        if self.rule.needs_running:
            self.running[:, :W] |= (gp + gd) > 0
        # Counters.
        hasP, hasD = P > 0, D > 0
        self.nb += B.astype(busy, "int64")
        self.nb_full += B.astype(n == self.b_max, "int64")
        self.nb_mixed += B.astype(hasP & hasD, "int64")
        self.nb_dec += B.astype(hasD & ~hasP, "int64")
        self.tok_p += P
        self.tok_d += D
        self.busy_ms += B.where(busy, t_new - t, 0.0)
        # Arrivals during the batch (for the peak count; they join at the next boundary).
        self._ensure_arrivals(t_new, self.active)
        self.max_sys = B.maximum(self.max_sys, self.n_win + (self.ap - self.head) + self.uns_n)
        # Events: a decode token that is the request's first (dec == v_d − 1) or last (dec == 0), i.e.
        # dec == evt, and, when some request has v_d = 0, a prefill that finishes such a request.
        r, c = B.nonzero2d(dec == self.evt[:, :W])
        if self.any_vd0:
            r0, c0 = B.nonzero2d((gp > 0) & (pre == 0) & (dec == 0))
        if int(r.shape[0]):
            te = t_new[r]
            a = self.arr[r, c]
            v1 = self.vd1[r, c]
            d_left = dec[r, c]
            f = d_left == v1                   # first decode token now
            if bool(f.any()):
                self.first[r[f], c[f]] = te[f]
                self.evt[r[f], c[f]] = 0
                self._latency("ttft", r[f], te[f] - a[f])
            e = d_left == 0                    # last decode token now: complete
            r, c, te, a, v1 = r[e], c[e], te[e], a[e], v1[e]
            m = v1 >= 1                        # v_d >= 2: mean time between its tokens
            if bool(m.any()):
                self._latency("tbt", r[m], (te[m] - self.first[r[m], c[m]]) / B.astype(v1[m], "float64"))
        else:
            te = a = t_new[r]
        if self.any_vd0 and int(r0.shape[0]):  # v_d = 0: the prefill's end is its first token and its end
            te0, a0 = t_new[r0], self.arr[r0, c0]
            self._latency("ttft", r0, te0 - a0)
            self.first[r0, c0] = te0
            r, c = B.concat(r, r0), B.concat(c, c0)
            te, a = B.concat(te, te0), B.concat(a, a0)
        if int(r.shape[0]):
            self._latency("e2e", r, te - a)
            cnt = B.asarray(np.bincount(B.to_numpy(r), minlength=self.R))
            self.completed += cnt
            self.n_win -= cnt
            self.evt[r, c] = -1
            if self.track_kv:
                self.kv[r, c] = 0
            if self.rule.needs_running:
                self.running[r, c] = False
            if self.rule.needs_group:
                self.group[r, c] = False
        self.t = t_new
        self.active &= t_new < self.H
        self.steps += 1
        # Squeeze holes when they take a quarter of the width.
        holes = int((self.n_end - self.n_win).max())
        if holes > max(16, W // 4):
            self._compact()
        return True

    def _log(self, gp: Any, gd: Any, t: Any, t_new: Any, P: Any, D: Any, K: Any, W: int, kv_used: Any) -> None:
        B = self.B
        np_gp, np_gd = B.to_numpy(gp), B.to_numpy(gd)
        rid = B.to_numpy(self.rid[:, :W])
        pre, dec = B.to_numpy(self.pre[:, :W]), B.to_numpy(self.dec[:, :W])
        t0, t1 = B.to_numpy(t), B.to_numpy(t_new)
        Pn, Dn = B.to_numpy(P), B.to_numpy(D)
        Kn = None if K is None else B.to_numpy(K)
        U = None if kv_used is None else B.to_numpy(kv_used)
        for r in range(self.R):
            if Pn[r] + Dn[r] == 0:
                continue
            give = np.flatnonzero(np_gp[r] + np_gd[r])
            live = np.flatnonzero(pre[r] + dec[r])
            self.log_rows[r].append({
                "start_ms": float(t0[r]), "end_ms": float(t1[r]),
                "tokens": tuple(sorted((int(rid[r, j]), int(np_gp[r, j]), int(np_gd[r, j])) for j in give)),
                "resident_before": tuple(sorted((int(rid[r, j]), int(pre[r, j]), int(dec[r, j])) for j in live)),
                "prefill_tokens": int(Pn[r]), "decode_tokens": int(Dn[r]),
                "kv_context_tokens": None if Kn is None else int(Kn[r]),
                "kv_used_before": None if U is None else int(U[r]),
            })

    def run(self, t_wall: float) -> CoreOutput:
        B, N = self.B, self.B.to_numpy
        while self.step():
            pass
        self._flush()
        end = N(self.t)
        W = max(int(self.n_end.max()), 1)
        live = (self.pre[:, :W] + self.dec[:, :W]) > 0
        n_sys = N(self.n_win + (self.ap - self.head) + self.uns_n)
        back = N(B.rsum(self.pre[:, :W] + self.dec[:, :W], "int64")
                 + self._fifo_sum(self.f_ctok, self.head, self.ap, "int64") + self.uns_tok)
        # Float sums on the host, in a fixed order, so every backend gives the same numbers.
        jw = np.arange(self.C)[None, :]
        in_fifo = (jw >= N(self.head)[:, None]) & (jw < N(self.ap)[:, None])
        arr_left = (np.where(N(live), N(self.arr[:, :W]), 0.0).sum(axis=1)
                    + np.where(in_fifo, N(self.f_t), 0.0).sum(axis=1) + self.uns_arr)
        # Waiting requests that can never run count as unschedulable from their arrival, as in the reference.
        uns = N(self.uns_n)
        if self.C and (self.whole or self.M is not None):
            j = B.arange(self.C)[None, :]
            waiting = (j >= self.head[:, None]) & (j < self.ap[:, None])
            never = (self.f_p > self.b_max) if self.whole else B.zeros(self.f_p.shape, "bool")
            if self.M is not None:
                never = never | ((self.f_p + self.f_d) > self.M)
            uns = uns + N(B.rsum(waiting & never, "int64"))
        # ∫ N(t) dt: completed requests' sojourns plus (end − arrival) of those still in the system.
        sys_time = self.lat_sum["e2e"] + n_sys * end - arr_left
        return CoreOutput(
            replications=self.R, horizon_ms=self.H, token_budget=self.b_max, backend=B.name,
            end_ms=end, arrived=N(self.arrived), completed=N(self.completed),
            in_system_end=n_sys, backlog_tokens_end=back, max_in_system=N(self.max_sys),
            in_system_time_ms=sys_time, batches=N(self.nb), batches_full=N(self.nb_full),
            batches_mixed=N(self.nb_mixed), batches_decode_only=N(self.nb_dec), batches_prefill_only=N(self.nb - self.nb_mixed - self.nb_dec),
            prefill_tokens=N(self.tok_p), decode_tokens=N(self.tok_d), busy_ms=N(self.busy_ms),
            unschedulable=uns, preemptions=N(self.preempt), recomputed_tokens=N(self.recomp),
            diverged=N(self.diverged), diverged_ms=N(self.div_ms), grid_ms=N(self.grid),
            series_in_system=N(self.s_sys), series_backlog_tokens=N(self.s_back),
            series_prefill_tokens=N(self.s_p), series_decode_tokens=N(self.s_d),
            latency_sum_ms=dict(self.lat_sum), latency_count=dict(self.lat_n), latency_hist=dict(self.hist),
            peak_state_bytes=int(self.peak), steps=self.steps, wall_s=_time.perf_counter() - t_wall,
            batch_log=self.log_rows if self.log else None)
