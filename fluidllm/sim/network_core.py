"""The vectorized network core: R replications of a network model advanced together, instant by instant.

Semantics are exactly those of the oracle :func:`fluidllm.sim.network_reference.simulate_network_reference`
(its module text: instants (a)–(d), live-state routing, joins, loops, branches, KV inheritance, class
priority, draw streams), and the tests check batch for batch that replication r equals the reference
run with the generator ``np.random.default_rng([seed, r])`` (the convention of
:func:`fluidllm.sim.network_simulate.simulate_network` and :func:`fluidllm.sim.network_stability.network_stability`).

Design ("next event per replication"). Every step, each replication r advances to ITS next instant
t_r = min(next batch end over its engines, next instance arrival). Then, per engine, all replications
whose batch ends at t_r apply it in one array operation ((R, Q) slot arrays per engine, slots in
creation order, which is the FCFS order of every engine); the workflow consequences (children, joins,
loops, branches, routing on the live token/request counts) and the arrivals run in a tight per-event
loop over plain Python numbers (they touch only the few requests created at t_r); finally, per engine,
all replications at a batch boundary plan their next batch in one call of the engine's vectorized rule
(:mod:`fluidllm.policies.rules`, as :mod:`fluidllm.sim.core` uses them; class priority runs the inner
rule group by group on the leftover budget and slots, as :func:`~fluidllm.sim.network_reference.plan_priority`).

Not supported (a :class:`~fluidllm.errors.ModelError` says so; use the reference): ``kv_capacity_tokens``
(KV preemption), ``max-pressure``, python plug-in policies, ``wait`` / ``nested-wait``.
"""
from __future__ import annotations

import dataclasses
import math
import time as _time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ModelError, finite_number, integer, require
from ..model.model import Model
from ..model.network import Call, NetworkModel
from ..model.policy import PolicySpec
from ..policies.rules import SlotState, vector_policy
from .backend import get_backend
from .core import _NB, HIST_BINS_PER_DECADE, HIST_MIN_MS
from .draws import _arrival_times
from .network_reference import _HasArrival

__all__ = ["NetworkCoreResult", "run_network_core", "replication_generator", "core_unsupported"]

_START = "^"
_WHOLE_PROMPTS = ("fastertransformer", "fastertransformer-static", "vllm")
# slot status
_EMPTY, _SENT, _WAIT, _RES, _ASIDE = 0, 1, 2, 3, 4


def replication_generator(seed: int, r: int) -> np.random.Generator:
    """The generator replication ``r`` uses: ``np.random.default_rng([seed, r])``; passing it to
    :func:`~fluidllm.sim.network_reference.simulate_network_reference` gives the same run."""
    return np.random.default_rng([int(seed), int(r)])


@dataclass(frozen=True, eq=False)
class NetworkCoreResult:
    """R replications of a network model (:func:`run_network_core`); rows are replications.

    Attributes:
        horizon_ms, replications, seed: the run. engine_names, class_names, workflow_names: model order.
        grid_ms: (G,) grid, ``horizon_ms * arange(G) / G``.
        backlog_tokens: (R, G) network token backlog B(t) = tokens of the requests created by t −
            tokens of the batches ended by t (as :func:`~fluidllm.sim.network_stability.network_backlog`).
        requests_in_system: (R, G) requests created by t and not completed by t.
        instances_in_system: (R, G) instances arrived by t and not completed by t.
        completions_per_class: (R, K) requests of each class completed in (0, horizon].
        instances_arrived, instances_completed: (R, W) per workflow (completed: at any time).
        e2e_sum_ms, e2e_count: (R, W) sum and count of instance end-to-end latencies (ms).
        e2e_hist: (R, W, bins) counts over :func:`fluidllm.sim.core.hist_edges_ms`.
        e2e_ms: per workflow, all completed instances' latencies (ms), in completion order per row,
            with ``e2e_row`` the replication of each.
        batches, tokens_served, tokens_sent: (R, E) per engine. end_ms: (R, E) each engine's end.
        requests_created: (R,) requests created in the run.
        final_backlog_tokens: (R,) B(H), the backlog after every instant <= horizon.
        mean_requests_in_system: (R,) exact time average over [0, H) of requests created and not
            completed; max_requests_in_system: (R,) its maximum over the instants before H.
        full_batches, mixed_batches, decode_only_batches: (R, E) batches with P + D = b_max, with
            prefill and decode tokens, with decode tokens only. busy_ms: (R, E) batch time within [0, H).
        ttft_ms, ttft_row: every request with v_d > 0 that got its first decode token (completed or
            not): first token − creation (ms), and its replication. tbt_ms, tbt_row: those with v_d >= 2: (completion − first token) / (v_d − 1).
        steps, wall_s: lock-step iterations and wall time.
        batch_log: with ``record=True``, per replication and engine the list of
            ``(start_ms, end_ms, tokens)`` (tokens: (request id, prefill, decode) by id), else None.
        requests: with ``record=True``, per replication a dict of per-request arrays (by id):
            ``klass``, ``engine``, ``instance``, ``created_ms``, ``prefill``, ``decode``,
            ``kv_context``, ``completion_ms``.
    """

    horizon_ms: float
    replications: int
    seed: int
    engine_names: tuple[str, ...]
    class_names: tuple[str, ...]
    workflow_names: tuple[str, ...]
    grid_ms: np.ndarray
    backlog_tokens: np.ndarray
    requests_in_system: np.ndarray
    instances_in_system: np.ndarray
    completions_per_class: np.ndarray
    instances_arrived: np.ndarray
    instances_completed: np.ndarray
    e2e_sum_ms: np.ndarray
    e2e_count: np.ndarray
    e2e_hist: np.ndarray
    e2e_ms: dict[str, np.ndarray]
    e2e_row: dict[str, np.ndarray]
    batches: np.ndarray
    tokens_served: np.ndarray
    tokens_sent: np.ndarray
    end_ms: np.ndarray
    requests_created: np.ndarray
    final_backlog_tokens: np.ndarray
    mean_requests_in_system: np.ndarray
    max_requests_in_system: np.ndarray
    full_batches: np.ndarray
    mixed_batches: np.ndarray
    decode_only_batches: np.ndarray
    busy_ms: np.ndarray
    ttft_ms: np.ndarray
    ttft_row: np.ndarray
    tbt_ms: np.ndarray
    tbt_row: np.ndarray
    steps: int
    wall_s: float
    batch_log: list[list[list[tuple]]] | None = None
    requests: list[dict[str, np.ndarray]] | None = None

    def __repr__(self) -> str:
        return (f"NetworkCoreResult(R={self.replications}, horizon_ms={self.horizon_ms:g}, "
                f"engines={list(self.engine_names)}, requests={int(self.requests_created.sum())}, "
                f"steps={self.steps}, wall_s={self.wall_s:.3g})")

    @property
    def e2e_mean_ms(self) -> np.ndarray:
        """(R, W) mean instance latency per workflow (NaN where none completed)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.e2e_sum_ms / self.e2e_count

    def to_dict(self) -> dict[str, Any]:
        return {"horizon_ms": self.horizon_ms, "replications": self.replications, "seed": self.seed,
                "engines": list(self.engine_names), "classes": list(self.class_names),
                "workflows": list(self.workflow_names), "grid_ms": self.grid_ms.tolist(),
                "backlog_tokens": self.backlog_tokens.tolist(),
                "completions_per_class": self.completions_per_class.tolist(),
                "e2e_mean_ms": [[None if math.isnan(x) else float(x) for x in row] for row in self.e2e_mean_ms],
                "batches": self.batches.tolist(), "steps": self.steps, "wall_s": self.wall_s}


def core_unsupported(model: NetworkModel | Model) -> str | None:
    """Why the vectorized network core cannot run ``model`` (the error it would raise), or None."""
    if isinstance(model, Model):
        model = NetworkModel(model.engines, workloads=model.workloads)
    class_index = {c: i for i, c in enumerate(model.class_names)}
    try:
        for i, eng in enumerate(model.engines.values()):
            _Eng(i, eng, 1, class_index, len(class_index))
    except ModelError as e:
        return str(e)
    return None


# ------------------------------------------------------------------------------------ engines


class _Eng:
    """One engine's slots over all replications: (R, Q) arrays in creation (FCFS) order."""

    FIELDS = {"pre": (np.int32, 0), "dec": (np.int32, 0), "kv": (np.int64, 0), "st": (np.int8, 0),
              "rid": (np.int64, 0), "kls": (np.int32, 0), "inst": (np.int64, 0), "ctx": (np.int64, 0),
              "run": (np.bool_, False), "grp": (np.bool_, False), "pp": (np.int32, 0), "pd": (np.int32, 0),
              "ct": (np.float64, 0.0), "ft": (np.float64, math.nan), "dec0": (np.int32, 0)}

    def __init__(self, index: int, engine: Any, R: int, class_index: dict[str, int], K: int) -> None:
        self.index, self.engine, self.R = index, engine, R
        pol = engine.policy
        name = pol.name
        where = f"engines.{engine.name}"
        if engine.kv_capacity_tokens is not None:
            raise ModelError(f"{where}.kv_capacity_tokens", engine.kv_capacity_tokens,
                             "KV memory (preemption) is not supported by the vectorized network core; "
                             "use the reference")
        if name in ("max-pressure", "python", "wait", "nested-wait"):
            raise ModelError(f"{where}.policy", name,
                             "is not supported by the vectorized network core; use the reference")
        self.priority = name == "priority"
        inner = pol.flag("inner") if self.priority else name
        self.spec = PolicySpec(inner) if self.priority else pol
        try:
            self.rule = vector_policy(self.spec)
        except NotImplementedError:
            raise ModelError(f"{where}.policy", inner,
                             "is not supported by the vectorized network core; use the reference") from None
        if name == "vllm-v1" and pol.flag("preemption") != "recompute":
            raise ModelError(f"{where}.policy.preemption", pol.flag("preemption"), "only 'recompute' is implemented")
        # group of each class: dense ranks of the listed classes present, then one last group
        rank = {}
        if self.priority:
            for c in dict.fromkeys(pol.flag("order")):
                if c in class_index:
                    rank[class_index[c]] = len(rank)
        self.n_groups = len(rank) + 1 if self.priority else 1
        self.group_of = np.full(K, len(rank) if self.priority else 0, dtype=np.int32)
        for k, j in rank.items():
            self.group_of[k] = j
        self.b_max = engine.token_budget
        self.k_max = engine.max_batch_requests
        self.rescap = engine.max_resident_requests
        self.whole = inner in _WHOLE_PROMPTS and not self.spec.flag("split_long_prompts")
        bt = engine.batch_time
        self.tokens_only = bt.tokens_only
        if self.tokens_only:
            table = np.asarray(bt.tokens_ms(np.arange(1, self.b_max + 1)), dtype=float)
            bad = np.flatnonzero(~(np.isfinite(table) & (table > 0)))
            if bad.size:
                raise ModelError(f"{where}.batch_time", float(table[bad[0]]),
                                 f"must give a finite positive time; got it for {bad[0] + 1} tokens")
            self.table = np.concatenate([[np.nan], table])
        self.Q = 16
        for n, (dt, fill) in self.FIELDS.items():
            setattr(self, n, np.full((R, self.Q), fill, dtype=dt))
        self.n_end = np.zeros(R, dtype=np.int64)      # next free slot per row
        self.busy = np.full(R, math.inf)               # end of the running batch (inf: idle or stopped)
        self.stopped = np.zeros(R, dtype=bool)
        self.end_ms = np.zeros(R)
        self.nb = np.zeros(R, dtype=np.int64)
        self.served = np.zeros(R, dtype=np.int64)
        self.sent_tok = np.zeros(R, dtype=np.int64)
        self.holes = np.zeros(R, dtype=np.int64)
        # batch mix (full: P + D = b_max; mixed: prefill and decode; decode-only) and busy ms before H
        self.n_full = np.zeros(R, dtype=np.int64)
        self.n_mixed = np.zeros(R, dtype=np.int64)
        self.n_dec = np.zeros(R, dtype=np.int64)
        self.busy_ms = np.zeros(R)
        # first tokens (row, TTFT) and completed requests (row, created, first token, completion, decode)
        self.first: list[tuple[np.ndarray, np.ndarray]] = []
        self.lat: list[tuple[np.ndarray, ...]] = []

    def _resize(self, Q: int) -> None:
        keep = min(Q, self.Q)
        for n, (dt, fill) in self.FIELDS.items():
            a = getattr(self, n)
            new = np.full((self.R, Q), fill, dtype=dt)
            new[:, :keep] = a[:, :keep]
            setattr(self, n, new)
        self.Q = Q

    def compact(self) -> None:
        """Squeeze empty slots out (FCFS order kept; the running batch's plan moves with its slots)."""
        live = self.st != _EMPTY
        n_live = live.sum(axis=1)
        f = np.flatnonzero(live)
        r, c = f // self.Q, f % self.Q
        start = np.cumsum(n_live) - n_live
        newc = np.arange(r.size) - start[r]
        src, dst = r * self.Q + c, r * self.Q + newc
        for n, (dt, fill) in self.FIELDS.items():
            a = getattr(self, n).reshape(-1)
            vals = a[src]
            a[:] = fill
            a[dst] = vals
        self.n_end = n_live.astype(np.int64)
        self.holes[:] = 0
        need = int(n_live.max(initial=0))
        Q = max(16, -(-(need + need // 4 + 8) // 16) * 16)
        if Q < self.Q:
            self._resize(Q)

    def append(self, rows: np.ndarray, vals: dict[str, np.ndarray]) -> None:
        """Append requests (rows in creation order within each row) at the end of their rows."""
        cnt = np.bincount(rows, minlength=self.R)
        if int((self.n_end + cnt).max()) > self.Q:
            if int(self.holes.max()) > self.Q // 4:
                self.compact()
            need = int((self.n_end + cnt).max())
            if need > self.Q:
                self._resize(max(-(-(need + need // 2 + 8) // 16) * 16, self.Q * 2))
        order = np.argsort(rows, kind="stable")
        rows_s = rows[order]
        start = np.cumsum(cnt) - cnt
        pos = self.n_end[rows_s] + (np.arange(rows.size) - start[rows_s])
        flat = rows_s * self.Q + pos
        for n, v in vals.items():
            getattr(self, n).reshape(-1)[flat] = v[order]
        self.n_end += cnt


# ------------------------------------------------------------------------------------ flows


@dataclass
class _Flow:
    name: str
    calls: tuple[Call, ...]
    cls: list[int]                       # class index of call j
    children: dict[str, tuple]           # parent id -> (unconditional kids, branch kids) as call indices
    join_bit: dict[int, int]             # call index of a join -> number of inputs
    input_bit: dict[tuple[int, int], int]  # (join call, parent call) -> bit
    routing: list[Any]
    buffered: bool                       # decisions are only .random(): drawn in chunks
    decide: list[np.random.Generator] = field(default_factory=list)
    dbuf: list[list] = field(default_factory=list)
    rng: list[list[np.random.Generator]] = field(default_factory=list)   # [row][call]
    lbuf: list[list[list]] = field(default_factory=list)                  # [row][call] -> [p list, d list, i]
    chunk: list[int] = field(default_factory=list)
    rr: list[list[int]] = field(default_factory=list)
    laws: list[tuple[Any, ...]] = field(default_factory=list)              # [row] -> each call's length law


def _flows(model: NetworkModel, class_index: dict[str, int], eidx: dict[str, int]) -> list[_Flow]:
    specs = [(w.name, w.arrival, w.calls, f"{w.name}.") for w in model.workflows.values()]
    specs += [(n, wl.arrival, (Call(n, (wl.engine,), wl.lengths),), "") for n, wl in model.workloads.items()]
    out = []
    for name, arrival, calls, prefix in specs:
        ids = [c.id for c in calls]
        cls = [class_index[f"{prefix}{c.id}" if prefix else name] for c in calls]
        children = {}
        for parent in [_START, *ids]:
            kids = [j for j, c in enumerate(calls) if (not c.after if parent == _START else parent in c.after)]
            children[parent] = (kids, [j for j in kids if calls[j].p is not None])
        join_bit, input_bit = {}, {}
        for j, c in enumerate(calls):
            if c.is_join:
                join_bit[j] = len(c.after)
                for b, a in enumerate(c.after):
                    input_bit[(j, ids.index(a))] = b
        routing = []
        for c in calls:
            eng = [eidx[e] for e in c.engines]
            cdf = None
            if c.routing == "weighted":
                w = np.asarray(c.weights, dtype=float)
                p = w / w.sum()
                cdf = p.cumsum()
                cdf /= cdf[-1]
            routing.append((eng, c.routing if len(eng) > 1 else None, cdf))
        buffered = not any(c.routing == "random" and len(c.engines) > 1 for c in calls)
        f = _Flow(name, tuple(calls), cls, children, join_bit, input_bit, routing, buffered)
        f.arrival = arrival  # type: ignore[attr-defined]
        out.append(f)
    return out


def _same_structure(ref: _Flow, other: _Flow) -> bool:
    """Whether two flows differ at most in their arrival process and their calls' length laws."""
    if (ref.name, ref.cls, ref.children, ref.join_bit, ref.input_bit, ref.buffered) != \
            (other.name, other.cls, other.children, other.join_bit, other.input_bit, other.buffered):
        return False
    for (e1, rule1, cdf1), (e2, rule2, cdf2) in zip(ref.routing, other.routing):
        if e1 != e2 or rule1 != rule2 or (cdf1 is None) != (cdf2 is None) or \
                (cdf1 is not None and not np.array_equal(cdf1, cdf2)):
            return False
    return len(ref.calls) == len(other.calls) and all(
        dataclasses.replace(c2, lengths=c1.lengths) == c1 for c1, c2 in zip(ref.calls, other.calls))


def _replication_flows(model: NetworkModel, flows: list[_Flow], models: Sequence[Any], R: int,
                       class_index: dict[str, int], eidx: dict[str, int]) -> list[list[_Flow]]:
    """Each replication's flows from ``models`` (validated: ``model`` up to arrivals and length laws)."""
    require(isinstance(models, Sequence) and not isinstance(models, (str, bytes)), "replication_models",
            type(models).__name__, "must be a sequence of NetworkModel, one per replication")
    require(len(models) == R, "replication_models", f"<{len(models)} models>",
            f"must hold one model per replication ({R})")
    out = []
    for i, m in enumerate(models):
        where = f"replication_models[{i}]"
        if isinstance(m, Model):
            m = NetworkModel(m.engines, workloads=m.workloads)
        require(isinstance(m, NetworkModel), where, type(m).__name__, "must be a NetworkModel (or a Model)")
        require(list(m.engines) == list(model.engines) and m.class_names == model.class_names, where,
                f"<engines {list(m.engines)}, classes {list(m.class_names)}>",
                f"must have the engines {list(model.engines)} and classes {list(model.class_names)} of model")
        for name, e in m.engines.items():
            try:
                same = e is model.engines[name] or bool(e == model.engines[name])
            except ValueError:                 # an array field: fall back to the printed form
                same = repr(e) == repr(model.engines[name])
            require(same, f"{where}.engines.{name}", e, "must equal model's engine of that name")
        mine = _flows(m, class_index, eidx)
        ok = len(mine) == len(flows) and all(_same_structure(a, b) for a, b in zip(flows, mine))
        require(ok, where, "<workflows>", "must equal model's workflows except for arrival processes and "
                "length laws")
        out.append(mine)
    return out


# ------------------------------------------------------------------------------------ the run


def run_network_core(model: NetworkModel | Model, horizon_ms: float, replications: int, seed: int = 0, *,
                     grid_points: int = 200, record: bool = False, first_replication: int = 0,
                     replication_models: Sequence[NetworkModel | Model] | None = None) -> NetworkCoreResult:
    """Simulate R = ``replications`` replications of ``model`` over [0, ``horizon_ms``) (instances
    arrive in [0, horizon); each engine stops at its first boundary >= horizon), replication r with
    :func:`replication_generator` (seed, r): each equals
    ``simulate_network_reference(model, horizon_ms, np.random.default_rng([seed, r]))`` batch for batch.
    Row i of the result is replication r = ``first_replication`` + i (so blocks of replications run in
    separate processes give the rows of one run).

    ``replication_models``: optionally one model per row, each ``model`` except for its arrival
    processes and its calls' length laws (e.g. one trace replayed from a different row per
    replication); row i then equals ``simulate_network_reference(replication_models[i], horizon_ms,
    np.random.default_rng([seed, first_replication + i]))``.

    Raises:
        ModelError: a bad model, horizon, replications, seed or grid; a feature the vectorized network
            core does not run (KV capacity, max-pressure, python plug-ins): use the reference; a length
            law drawing v_p < 1 (without inherits_kv) or v_d < 0; a bad batch time.
        RuntimeError: an empty batch while requests are resident (a policy bug).
    """
    t_wall = _time.perf_counter()
    if isinstance(model, Model):
        model = NetworkModel(model.engines, workloads=model.workloads)
    require(isinstance(model, NetworkModel), "model", model, "must be a NetworkModel (or a Model)")
    H = finite_number(horizon_ms, "horizon_ms", minimum=0)
    R = integer(replications, "replications", minimum=1)
    seed = integer(seed, "seed", minimum=0)
    G = integer(grid_points, "grid_points", minimum=2)
    r0 = integer(first_replication, "first_replication", minimum=0)
    B = get_backend("numpy")

    class_names = model.class_names
    class_index = {c: i for i, c in enumerate(class_names)}
    K = len(class_names)
    engine_names = list(model.engines)
    eidx = {e: i for i, e in enumerate(engine_names)}
    E = len(engine_names)
    engs = [_Eng(i, model.engines[e], R, class_index, K) for i, e in enumerate(engine_names)]
    flows = _flows(model, class_index, eidx)
    W = len(flows)
    per_row = (None if replication_models is None else
               _replication_flows(model, flows, replication_models, R, class_index, eidx))
    call_index = [{c.id: j for j, c in enumerate(f.calls)} for f in flows]

    # Streams and arrivals per replication (the reference's order of spawns and draws).
    arr_t: list[list[float]] = []
    arr_o: list[list[int]] = []
    inst_arr: list[list[float]] = []
    inst_flow: list[list[int]] = []
    n_inst_flow = np.zeros((R, W), dtype=np.int64)
    for r in range(R):
        gen = replication_generator(seed, r0 + r)
        streams = gen.spawn(W)
        times, owners, order = [], [], []
        for k, (f, stream) in enumerate(zip(flows, streams)):
            arr_rng, len_rng = stream.spawn(2)
            decide = stream.spawn(1)[0]
            src = f if per_row is None else per_row[r][k]
            t = _arrival_times(_HasArrival(src.arrival), H, arr_rng)  # type: ignore[attr-defined]
            f.laws.append(tuple(c.lengths for c in src.calls))
            n = len(f.calls)
            extra = len_rng.spawn(n - 1) if n > 1 else []
            f.rng.append([len_rng if j == 0 else extra[j - 1] for j in range(n)])
            f.lbuf.append([None] * n)
            f.chunk.append(max(1, int(t.size)))
            f.decide.append(decide)
            f.dbuf.append([[], 0])
            f.rr.append([0] * n)
            times.append(t)
            owners.append(np.full(t.size, k, dtype=np.int64))
            order.append(np.arange(t.size))
            n_inst_flow[r, k] = t.size
        t_all = np.concatenate(times) if times else np.empty(0)
        o_all = np.concatenate(owners) if owners else np.empty(0, np.int64)
        idx = np.lexsort((np.concatenate(order), o_all, t_all))
        arr_t.append(t_all[idx].tolist() + [math.inf])
        arr_o.append(o_all[idx].tolist())
        inst_arr.append([])
        inst_flow.append([])
    a_ptr = [0] * R
    next_arr = np.array([arr_t[r][0] for r in range(R)])

    # Live counts for routing, per engine and row (Python lists: touched one request at a time).
    owed_tok = [[0] * R for _ in range(E)]
    owed_n = [[0] * R for _ in range(E)]
    inst_active: list[list[int]] = [[] for _ in range(R)]
    inst_done: list[list[bool]] = [[] for _ in range(R)]
    joins: list[dict] = [dict() for _ in range(R)]
    next_rid = [0] * R
    created_tok = np.zeros(R, dtype=np.int64)
    served_tok = np.zeros(R, dtype=np.int64)
    n_created = np.zeros(R, dtype=np.int64)
    n_completed = np.zeros(R, dtype=np.int64)
    n_inst_arr = np.zeros(R, dtype=np.int64)
    n_inst_done = np.zeros(R, dtype=np.int64)
    comp_cls = np.zeros((R, K), dtype=np.int64)
    inst_arrived = np.zeros((R, W), dtype=np.int64)
    inst_completed = np.zeros((R, W), dtype=np.int64)
    e2e_vals: list[list[float]] = [[] for _ in range(W)]
    e2e_rows: list[list[int]] = [[] for _ in range(W)]
    grid = H * np.arange(G) / G
    # one more point at H itself: the final backlog and counts (state after every instant <= H)
    grid_x = np.append(grid, H)
    GX = G + 1
    g_next = np.zeros(R, dtype=np.int64)
    s_back = np.zeros((R, GX), dtype=np.int64)
    s_req = np.zeros((R, GX), dtype=np.int64)
    s_inst = np.zeros((R, GX), dtype=np.int64)
    # exact time average over [0, H) and max (instants < H) of requests in system
    area = np.zeros(R)
    max_req = np.zeros(R, dtype=np.int64)
    t_last = np.zeros(R)
    log = [[[] for _ in range(E)] for _ in range(R)] if record else None
    rec = [{k: [] for k in ("klass", "engine", "instance", "created_ms", "prefill", "decode", "kv_context")}
           for _ in range(R)] if record else None
    rec_done: list[dict[int, float]] = [dict() for _ in range(R)] if record else []
    pending: list[tuple] = []          # requests created this step: (row, engine, fields)

    def draw(f: _Flow, r: int, j: int) -> tuple[int, int]:
        b = f.lbuf[r][j]
        if b is None or b[2] >= len(b[0]):
            p, d = f.laws[r][j].sample(f.rng[r][j], f.chunk[r])
            b = [np.asarray(p, np.int64).tolist(), np.asarray(d, np.int64).tolist(), 0]
            f.lbuf[r][j] = b
        i = b[2]
        b[2] = i + 1
        return b[0][i], b[1][i]

    def u01(f: _Flow, r: int) -> float:
        if not f.buffered:
            return f.decide[r].random()
        b = f.dbuf[r]
        if b[1] >= len(b[0]):
            b[0], b[1] = f.decide[r].random(256).tolist(), 0
        x = b[0][b[1]]
        b[1] += 1
        return x

    def route(f: _Flow, r: int, j: int) -> int:
        eng, rule, cdf = f.routing[j]
        if rule is None:
            return eng[0]
        if rule == "jsq-tokens":
            best, e_best = None, eng[0]
            for e in eng:
                v = owed_tok[e][r]
                if best is None or v < best:
                    best, e_best = v, e
            return e_best
        if rule == "jsq-requests":
            best, e_best = None, eng[0]
            for e in eng:
                v = owed_n[e][r]
                if best is None or v < best:
                    best, e_best = v, e
            return e_best
        if rule == "round-robin":
            i = f.rr[r][j]
            f.rr[r][j] = i + 1
            return eng[i % len(eng)]
        if rule == "random":
            return eng[int(f.decide[r].integers(len(eng)))]
        if rule == "weighted":
            return eng[int(np.searchsorted(cdf, u01(f, r), side="right"))]
        raise ModelError(f"workflows.{f.name}.calls.{f.calls[j].id}.routing", rule, "unknown routing rule")

    def launch(r: int, ii: int, fi: int, j: int, t: float, parent_ctx: int | None) -> None:
        f = flows[fi]
        c = f.calls[j]
        k = f.cls[j]
        p, d = draw(f, r, j)
        if (p < 1 and not c.inherits_kv) or p < 0:
            raise ModelError(f"{class_names[k]}.prefill", p, "drew v_p < 1; v_p >= 1 unless inherits_kv = true")
        if d < 0:
            raise ModelError(f"{class_names[k]}.decode", d, "drew v_d < 0")
        ctx = parent_ctx if (c.inherits_kv and parent_ctx is not None) else 0
        e = route(f, r, j)
        rid = next_rid[r]
        next_rid[r] = rid + 1
        inst_active[r][ii] += 1
        created_tok[r] += p + d
        n_created[r] += 1
        if record:
            for key, v in (("klass", k), ("engine", e), ("instance", ii), ("created_ms", t), ("prefill", p),
                           ("decode", d), ("kv_context", ctx)):
                rec[r][key].append(v)
        if p + d == 0:                                   # nothing to compute: done at once
            if record:
                rec_done[r][rid] = t
            complete(r, rid, k, ii, fi, j, ctx, t)
            return
        owed_tok[e][r] += p + d
        owed_n[e][r] += 1
        engs[e].sent_tok[r] += p + d
        pending.append((r, e, p, d, ctx, rid, k, ii, ctx + p + d, p == 0 or ctx > 0))

    def go_on(r: int, ii: int, fi: int, parent: str, pj: int, t: float, parent_ctx: int | None) -> None:
        f = flows[fi]
        kids, branch = f.children[parent]
        if branch:
            u = u01(f, r)
            cum, chosen = 0.0, branch[-1]
            for j in branch:
                cum += f.calls[j].p
                if u < cum:
                    chosen = j
                    break
            kids = [j for j in kids if f.calls[j].p is None or j == chosen]
        for j in kids:
            if j in f.join_bit:
                key = (ii, fi, j)
                got = joins[r].get(key, 0)
                bit = 1 << f.input_bit[(j, pj)]
                if got & bit:
                    raise RuntimeError(f"instance {ii}: join {f.calls[j].id!r} got input {parent!r} twice")
                got |= bit
                if got != (1 << f.join_bit[j]) - 1:
                    joins[r][key] = got
                    continue
                del joins[r][key]
            launch(r, ii, fi, j, t, parent_ctx)

    def complete(r: int, rid: int, k: int, ii: int, fi: int, j: int, ctxtot: int, t: float) -> None:
        f = flows[fi]
        c = f.calls[j]
        n_completed[r] += 1
        if 0 < t <= H:
            comp_cls[r, k] += 1
        if c.loop_to is not None and u01(f, r) < c.loop_p:
            launch(r, ii, fi, call_index[fi][c.loop_to], t, ctxtot)
        else:
            go_on(r, ii, fi, c.id, j, t, ctxtot)
        inst_active[r][ii] -= 1
        if inst_active[r][ii] == 0 and not inst_done[r][ii]:
            finish_instance(r, ii, fi, t)

    def finish_instance(r: int, ii: int, fi: int, t: float) -> None:
        if any(key[0] == ii for key in joins[r]):
            raise RuntimeError(f"instance {ii} ended with joins waiting for inputs")
        inst_done[r][ii] = True
        n_inst_done[r] += 1
        inst_completed[r, fi] += 1
        e2e_vals[fi].append(t - inst_arr[r][ii])
        e2e_rows[fi].append(r)

    def new_instance(r: int, fi: int, t: float) -> None:
        ii = len(inst_active[r])
        inst_active[r].append(1)
        inst_done[r].append(False)
        inst_arr[r].append(t)
        inst_flow[r].append(fi)
        n_inst_arr[r] += 1
        inst_arrived[r, fi] += 1
        go_on(r, ii, fi, _START, -1, t, None)
        inst_active[r][ii] -= 1
        if inst_active[r][ii] == 0:
            finish_instance(r, ii, fi, t)

    flow_of_class = np.zeros(K, dtype=np.int64)
    call_of_class = np.zeros(K, dtype=np.int64)
    for fi, f in enumerate(flows):
        for j, k in enumerate(f.cls):
            flow_of_class[k], call_of_class[k] = fi, j

    steps = 0
    rows_all = np.arange(R)
    while True:
        t_row = next_arr.copy()
        for en in engs:
            np.minimum(t_row, en.busy, out=t_row)
        # grid: points before this instant see the state after the previous one
        back = created_tok - served_tok
        nreq = n_created - n_completed
        ninst = n_inst_arr - n_inst_done
        gi = np.minimum(g_next, GX - 1)
        cross = (g_next < GX) & (grid_x[gi] < t_row)
        while cross.any():
            r = np.flatnonzero(cross)
            g = g_next[r]
            s_back[r, g], s_req[r, g], s_inst[r, g] = back[r], nreq[r], ninst[r]
            g_next[r] += 1
            gi = np.minimum(g_next, GX - 1)
            cross = (g_next < GX) & (grid_x[gi] < t_row)
        # nreq is the state after each row's last instant t_last
        np.maximum(max_req, np.where(t_last < H, nreq, 0), out=max_req)
        area += nreq * (np.minimum(t_row, H) - np.minimum(t_last, H))
        t_last = t_row
        live = np.isfinite(t_row)
        if not live.any():
            break
        steps += 1
        # (a) every batch ending at t: tokens served, completions
        comps = []
        ended = []
        for en in engs:
            due = (en.busy == t_row) & live
            ended.append(due)
            if not due.any():
                continue
            rows = np.flatnonzero(due)
            gp, gd = en.pp[rows], en.pd[rows]
            pre = en.pre[rows] - gp
            dec = en.dec[rows] - gd
            given = (gp + gd) > 0
            done = given & (pre == 0) & (dec == 0)
            ft = en.ft[rows]
            t_b = np.broadcast_to(t_row[rows][:, None], ft.shape)
            first = np.isnan(ft) & ((gd > 0) | done)     # the reference: first decode token, else completion
            ft[first] = t_b[first]
            en.ft[rows] = ft
            if first.any():                               # TTFT at the first token, completed or not
                fr, fc = np.nonzero(first)
                fg = rows[fr]
                has = en.dec0[fg, fc] > 0
                en.first.append((fg[has], ft[fr, fc][has] - en.ct[fg, fc][has]))
            en.pre[rows], en.dec[rows] = pre, dec
            en.kv[rows] += gp + gd
            if en.rule.needs_running:
                en.run[rows] |= given
            n_tok = (gp.sum(axis=1, dtype=np.int64) + gd.sum(axis=1, dtype=np.int64))
            served_tok[rows] += n_tok
            en.served[rows] += n_tok
            en.pp[rows] = 0
            en.pd[rows] = 0
            en.busy[rows] = math.inf
            ot = owed_tok[en.index]
            for r, x in zip(rows.tolist(), n_tok.tolist()):
                ot[r] -= x
            if done.any():
                rr, cc = np.nonzero(done)
                rg = rows[rr]
                en.lat.append((rg, en.ct[rg, cc], ft[rr, cc], t_row[rg], en.dec0[rg, cc]))
                en.st[rg, cc] = _EMPTY
                en.kv[rg, cc] = 0
                en.run[rg, cc] = False
                en.grp[rg, cc] = False
                np.add.at(en.holes, rg, 1)
                comps.append((rg, np.full(rg.size, en.index), en.rid[rg, cc], en.kls[rg, cc], en.inst[rg, cc],
                              en.ctx[rg, cc]))
        # (b) their consequences, engine by engine, by id within an engine
        if comps:
            cr, ce, cid, ck, ci, cx = (np.concatenate(x) for x in zip(*comps))
            o = np.lexsort((cid, ce, cr))
            cr_l, ce_l = cr[o].tolist(), ce[o].tolist()
            for r, e in zip(cr_l, ce_l):          # the state at t is complete before any consequence
                owed_n[e][r] -= 1
            for r, e, rid, k, ii, x in zip(cr_l, ce_l, cid[o].tolist(), ck[o].tolist(), ci[o].tolist(),
                                           cx[o].tolist()):
                t = float(t_row[r])
                if record:
                    rec_done[r][rid] = t
                complete(r, rid, k, ii, int(flow_of_class[k]), int(call_of_class[k]), x, t)
        # (c) exogenous arrivals
        for r in np.flatnonzero((next_arr == t_row) & live).tolist():
            t = arr_t[r][a_ptr[r]]
            while arr_t[r][a_ptr[r]] == t:
                new_instance(r, arr_o[r][a_ptr[r]], t)
                a_ptr[r] += 1
            next_arr[r] = arr_t[r][a_ptr[r]]
        # requests created at t enter their engines (as "sent")
        got_sent = [None] * E
        if pending:
            P_ = np.array(pending, dtype=np.int64)
            pending.clear()
            for e in np.unique(P_[:, 1]).tolist():
                m = P_[P_[:, 1] == e]
                engs[e].append(m[:, 0], {"pre": m[:, 2], "dec": m[:, 3], "kv": m[:, 4], "rid": m[:, 5],
                                         "kls": m[:, 6], "inst": m[:, 7], "ctx": m[:, 8], "run": m[:, 9] > 0,
                                         "st": np.full(m.shape[0], _SENT), "dec0": m[:, 3],
                                         "ct": t_row[m[:, 0]], "ft": np.full(m.shape[0], math.nan)})
                gs = np.zeros(R, dtype=bool)
                gs[m[:, 0]] = True
                got_sent[e] = gs
        # (d) batch boundaries, engine by engine
        for en in engs:
            due = ended[en.index] & ~en.stopped
            if got_sent[en.index] is not None:
                idle_new = got_sent[en.index] & ~ended[en.index] & ~en.stopped & np.isinf(en.busy)
                late = idle_new & (t_row >= H)
                if late.any():
                    en.stopped |= late
                    en.end_ms[late] = H
                due |= idle_new & ~late
            if not due.any():
                continue
            _boundary(en, np.flatnonzero(due), t_row, H, B, owed_tok, owed_n, log, rows_all)
        for en in engs:
            if int(en.holes.max()) > max(16, en.Q // 4):
                en.compact()

    for en in engs:
        idle = ~en.stopped
        en.end_ms[idle] = H
        en.stopped[:] = True

    hist = np.zeros((R, W, _NB), dtype=np.int32)
    e2e_sum = np.zeros((R, W))
    e2e_cnt = np.zeros((R, W), dtype=np.int64)
    e2e_ms, e2e_row = {}, {}
    for fi, f in enumerate(flows):
        x = np.asarray(e2e_vals[fi], dtype=float)
        rr = np.asarray(e2e_rows[fi], dtype=np.int64)
        e2e_ms[f.name], e2e_row[f.name] = x, rr
        e2e_sum[:, fi] = np.bincount(rr, weights=x, minlength=R)
        e2e_cnt[:, fi] = np.bincount(rr, minlength=R)
        b = np.floor(np.log10(np.maximum(x, 1e-300) / HIST_MIN_MS) * HIST_BINS_PER_DECADE)
        b = np.clip(b, 0, _NB - 1).astype(np.int64)
        np.add.at(hist[:, fi, :], (rr, b), 1)
    lat = [x for en in engs for x in en.lat]
    if lat:
        l_row, l_ct, l_ft, l_end, l_dec = (np.concatenate(x) for x in zip(*lat))
    else:
        l_row, l_ct, l_ft, l_end, l_dec = (np.empty(0, dt) for dt in (np.int64, float, float, float, np.int64))
    multi = l_dec >= 2
    fst = [x for en in engs for x in en.first]
    f_row, f_val = ((np.concatenate(x) for x in zip(*fst)) if fst
                    else (np.empty(0, np.int64), np.empty(0)))
    requests = None
    if record:
        requests = []
        for r in range(R):
            d = {k: np.asarray(v, dtype=float if k == "created_ms" else np.int64) for k, v in rec[r].items()}
            comp = np.full(next_rid[r], math.nan)
            for rid, t in rec_done[r].items():
                comp[rid] = t
            d["completion_ms"] = comp
            requests.append(d)
    return NetworkCoreResult(
        horizon_ms=H, replications=R, seed=seed, engine_names=tuple(engine_names), class_names=tuple(class_names),
        workflow_names=tuple(f.name for f in flows), grid_ms=grid, backlog_tokens=s_back[:, :G],
        requests_in_system=s_req[:, :G], instances_in_system=s_inst[:, :G], completions_per_class=comp_cls,
        instances_arrived=inst_arrived, instances_completed=inst_completed, e2e_sum_ms=e2e_sum, e2e_count=e2e_cnt,
        e2e_hist=hist, e2e_ms=e2e_ms, e2e_row=e2e_row,
        batches=np.stack([en.nb for en in engs], axis=1), tokens_served=np.stack([en.served for en in engs], axis=1),
        tokens_sent=np.stack([en.sent_tok for en in engs], axis=1), end_ms=np.stack([en.end_ms for en in engs], axis=1),
        requests_created=n_created, final_backlog_tokens=s_back[:, G],
        mean_requests_in_system=area / H if H > 0 else np.zeros(R), max_requests_in_system=max_req,
        full_batches=np.stack([en.n_full for en in engs], axis=1),
        mixed_batches=np.stack([en.n_mixed for en in engs], axis=1),
        decode_only_batches=np.stack([en.n_dec for en in engs], axis=1),
        busy_ms=np.stack([en.busy_ms for en in engs], axis=1),
        ttft_ms=f_val, ttft_row=f_row,
        tbt_ms=(l_end[multi] - l_ft[multi]) / (l_dec[multi] - 1), tbt_row=l_row[multi],
        steps=steps, wall_s=_time.perf_counter() - t_wall, batch_log=log, requests=requests)


def _boundary(en: _Eng, rows: np.ndarray, t_row: np.ndarray, H: float, B: Any, owed_tok: list, owed_n: list,
              log: Any, rows_all: np.ndarray) -> None:
    """Batch boundaries of engine ``en`` in replications ``rows``: eligibility, admission, the horizon
    stop, then the policy's plan and its batch time (steps (1)–(4) of the reference)."""
    st = en.st[rows]
    sent = st == _SENT
    if sent.any():
        if en.whole:
            aside = sent & (en.pre[rows] > en.b_max)
            if aside.any():
                rr, cc = np.nonzero(aside)
                tok = (en.pre[rows][aside] + en.dec[rows][aside]).astype(np.int64)
                for r, x in zip(rows[rr].tolist(), tok.tolist()):
                    owed_tok[en.index][r] -= x
                    owed_n[en.index][r] -= 1
                st[aside] = _ASIDE
                sent &= ~aside
        st[sent] = _WAIT
    wait = st == _WAIT
    if wait.any():
        if en.rescap is None:
            st[wait] = _RES
        else:
            n_res = (st == _RES).sum(axis=1)
            rank = np.cumsum(wait, axis=1)
            st[wait & (rank <= (en.rescap - n_res)[:, None])] = _RES
    en.st[rows] = st
    t = t_row[rows]
    stop = t >= H
    if stop.any():
        sr = rows[stop]
        en.stopped[sr] = True
        en.end_ms[sr] = t[stop]
        rows, st, t = rows[~stop], st[~stop], t[~stop]
        if rows.size == 0:
            return
    res = st == _RES
    pre = np.where(res, en.pre[rows], 0)
    dec = np.where(res, en.dec[rows], 0)
    run = en.run[rows] if en.rule.needs_running else None
    grp = en.grp[rows] if en.rule.needs_group else None
    n = rows.size
    budget = np.full(n, en.b_max, dtype=np.int32)
    slots = None if en.k_max is None else np.full(n, en.k_max, dtype=np.int32)
    if en.n_groups == 1:
        gp, gd = _rule(en, B, pre, dec, budget, slots, run, grp)
    else:
        gsl = en.group_of[en.kls[rows]]
        gp = np.zeros(pre.shape, np.int32)
        gd = np.zeros(pre.shape, np.int32)
        for g in range(en.n_groups):
            m = gsl == g
            if not (m & res).any():
                continue
            p_g, d_g = _rule(en, B, np.where(m, pre, 0), np.where(m, dec, 0), budget, slots,
                             None if run is None else run & m, None if grp is None else grp & m)
            gp += p_g
            gd += d_g
            budget = budget - (p_g.sum(axis=1) + d_g.sum(axis=1)).astype(np.int32)
            if slots is not None:
                slots = slots - ((p_g + d_g) > 0).sum(axis=1).astype(np.int32)
    P = gp.sum(axis=1, dtype=np.int64)
    D = gd.sum(axis=1, dtype=np.int64)
    N = P + D
    busy = N > 0
    if (~busy & res.any(axis=1)).any():
        i = int(np.flatnonzero(~busy & res.any(axis=1))[0])
        raise RuntimeError(f"empty batch while requests are resident (engine {en.engine.name}, "
                           f"replication {int(rows[i])}, {float(t[i]):g} ms)")
    if not busy.any():
        return
    rows, gp, gd, t, P, D, N = rows[busy], gp[busy], gd[busy], t[busy], P[busy], D[busy], N[busy]
    if en.tokens_only:
        dt = en.table[N]
        K = None
    else:
        K = np.where(gd > 0, en.kv[rows], 0).sum(axis=1)
        dt = np.asarray(en.engine.batch_time.batch_ms(P, D, K), dtype=float) * np.ones(rows.size)
        bad = ~((dt > 0) & (dt < math.inf))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ModelError(f"engines.{en.engine.name}.batch_time", float(dt[i]),
                             f"must give a finite positive time; got it for P={int(P[i])}, D={int(D[i])}, "
                             f"K={int(K[i])}")
    if en.rule.needs_group:
        start = ~en.grp[rows].any(axis=1)
        if start.any():
            sr = rows[start]
            en.grp[sr] = (gp[start] + gd[start]) > 0
    en.pp[rows], en.pd[rows] = gp, gd
    en.busy[rows] = t + dt
    en.nb[rows] += 1
    en.n_full[rows] += N == en.b_max
    en.n_mixed[rows] += (P > 0) & (D > 0)
    en.n_dec[rows] += (P == 0) & (D > 0)
    en.busy_ms[rows] += np.minimum(t + dt, H) - t
    if log is not None:
        rid = en.rid[rows]
        for i, r in enumerate(rows.tolist()):
            c = np.flatnonzero(gp[i] + gd[i])
            toks = tuple(sorted((int(rid[i, j]), int(gp[i, j]), int(gd[i, j])) for j in c))
            log[r][en.index].append((float(t[i]), float(t[i] + dt[i]), toks))


def _rule(en: _Eng, B: Any, pre: np.ndarray, dec: np.ndarray, budget: np.ndarray, slots: Any, run: Any,
          grp: Any) -> tuple[np.ndarray, np.ndarray]:
    state = SlotState(pre, dec, budget, slots, en.b_max, run, grp)
    out = en.rule.plan(B, state, en.spec)
    return np.asarray(out[0], dtype=np.int32), np.asarray(out[1], dtype=np.int32)
