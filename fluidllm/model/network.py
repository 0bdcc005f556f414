"""Networks of LLM agents: engines and workflows (DAGs of calls with branches, fork-join and loops).

Li, Dai, Peng (arXiv 2504.07347, v3 §5): engines are the nodes, workflows the job classes; each
workflow is a DAG of LLM calls. This module is the validated data; :meth:`NetworkModel.class_network`
gives the class-level form (:class:`~fluidllm.model.classes.ClassNetwork`) that the capacity LP and
the fluid model use, and :meth:`NetworkModel.to_networkx` a graph for users.

TOML (``design.md``; engines as for single-engine models; ``[workloads.*]`` may sit beside)::

    [workflows.A]
    arrival = { kind = "poisson", rate_per_s = 1.0 }
    acyclic = true                  # optional (default false): then any loop is an error
    [[workflows.A.calls]]
    id = "plan"                     # unique in the workflow, no '.'; its class is "A.plan"
    engine = "e1"                   # or a replica set: engine = ["e1", "e2"], routing = "jsq-tokens"
                                    # (jsq-tokens | jsq-requests | round-robin | random | weighted,
                                    #  weights = [...] one per engine for weighted; default jsq-tokens)
    prefill = { kind = "poisson", mean = 32 }   # or lengths = { kind = "empirical-pairs", ... }
    decode  = { kind = "poisson", mean = 32 }
    after = []                      # ids this call waits for (default []: a start call)
    inherits_kv = false             # true: continues an earlier call's KV cache; v_p = 0 allowed
    loop = { to = "plan", p = 0.3 } # optional, see below
    [[workflows.A.calls]]
    id = "act"
    after = ["plan"]
    p = 0.7                         # optional: a probabilistic branch (see below)
    ...

Semantics of one workflow instance (one arrival of the workflow's arrival process). A call's
*children* are the calls that list it in ``after``; the *start calls* (``after = []``) are the
children of the arrival itself.

* **Next / fork.** When a call completes, every child without ``p`` starts (in parallel when
  there are several: a fork). A call with one unconditional child is a plain sequence.
* **Branch.** The children of one call (or the start calls) that carry ``p`` form that call's branch:
  exactly one of them starts, chosen with probability ``p`` (0 < p <= 1; the branch's p must sum to 1
  within 1e-9). A branch may sit beside unconditional children (they all start, plus the chosen one).
  A child not chosen is skipped and so is everything that descends only from it; there is no merge
  of alternatives (write the shared tail once per alternative).
* **Join.** A call with several ids in ``after`` is a join: it starts when all of them have completed,
  once. Its inputs must be the parallel paths of one fork: none descends from another, and all run
  in exactly the same instances (they went through the same branch choices), so a join never waits
  for a branch that was not taken. A join carries no ``p``.
* **Loop (cycles).** ``loop = { to = ID, p }`` on call c (0 < p < 1): when c completes, with probability
  p the instance goes back to ``to`` (which starts again at once, without waiting for its ``after``)
  instead of going on; with probability 1 − p it goes on to c's children as above. ``to`` is c or an
  ancestor of c, and the loop body (the calls on the paths from ``to`` to c) is one thread: no call of
  it but c forks and none but ``to`` is a join. A loop is how a workflow revisits an engine
  (Rybko–Stolyar, §5.4). ``after`` itself must never form a cycle (that would wait forever).

Validation raises :class:`~fluidllm.errors.ModelError` naming the field, e.g.
``workflows.A.calls.act.p``: unknown engine or call id, duplicate ids, branch p not summing to 1, a
join whose inputs are not the paths of one fork, ``acyclic = true`` with a loop or a cycle, calls
unreachable from the start calls, ``routing`` without a replica set, ``weights`` of the wrong length.

Mapping to :class:`ClassNetwork` (:meth:`NetworkModel.class_network`): one class per call, named
``"WORKFLOW.CALL"`` (a plain ``[workloads.NAME]`` is one class ``"NAME"``). α of a start call is the
workflow's rate (times its ``p`` in a start branch). ``P[c, x]`` for a child x of c is
``(1 − q_c)·p_x`` (``p_x = 1`` without p), with q_c the loop probability of c, and ``P[c, to] += q_c``.
A fork therefore has several successors with probability 1 each (row sum > 1). A join J is fed only by
its first input ``after[0]``: its inputs complete in the same instances, so that input's exit rate is
J's visit rate; the other inputs' edges appear in :meth:`NetworkModel.to_networkx` (kind ``join``),
not in P. Visit rates λ = (I − Pᵀ)⁻¹α are then visits per second of each call.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np

from ..errors import ModelError, finite_number, require
from .arrivals import Arrival
from .classes import ROUTING_RULES, ClassNetwork, JobClass
from .engine import Engine
from .lengths import JointLengths
from .workload import Workload

__all__ = ["Call", "Workflow", "NetworkModel", "network_from_toml"]

_START = "^"  # the arrival of an instance, as a pseudo-parent of the start calls


def _prefill_min(lengths: JointLengths) -> int:
    pre = getattr(lengths, "prefill", None)
    if hasattr(pre, "min_value"):
        return int(pre.min_value)
    return int(np.min(pre))


def _name(x: Any, field_: str) -> str:
    require(isinstance(x, str) and x != "" and "." not in x and x != _START, field_, x,
            "must be a non-empty string without '.'")
    return x


@dataclass(frozen=True)
class Call:
    """One LLM call of a workflow: its engine(s), its (v_p, v_d) law, what it waits for.

    ``engines``: one engine, or a replica set chosen per job by ``routing`` (``ROUTING_RULES``;
    ``weights`` for ``weighted``); empty in a one-engine model means that engine. ``after``: the ids it
    waits for. ``p``: its probability in its parent's branch (None: unconditional). ``loop_to``,
    ``loop_p``: go back to call ``loop_to`` with probability ``loop_p`` after completing.
    ``inherits_kv``: continues an earlier call's KV cache, so v_p = 0 is allowed.

    Raises:
        ModelError: fields named ``calls.ID.FIELD`` (the workflow prefixes ``workflows.NAME.``).
    """

    id: str
    engines: tuple[str, ...]
    lengths: JointLengths
    after: tuple[str, ...] = ()
    p: float | None = None
    routing: str | None = None
    weights: tuple[float, ...] | None = None
    loop_to: str | None = None
    loop_p: float = 0.0
    inherits_kv: bool = False

    def __post_init__(self) -> None:
        _name(self.id, f"calls.{self.id}.id" if isinstance(self.id, str) and self.id else "calls.id")
        f = f"calls.{self.id}"
        engines = (self.engines,) if isinstance(self.engines, str) else tuple(self.engines)
        require(all(isinstance(e, str) and e for e in engines), f"{f}.engine", self.engines,
                "must name an engine or a list of engines")
        require(len(set(engines)) == len(engines), f"{f}.engine", list(engines), "must not repeat an engine")
        object.__setattr__(self, "engines", engines)
        routing = self.routing
        if len(engines) <= 1:
            require(routing is None, f"{f}.routing", routing,
                    "is only for a replica set (engine = [\"e1\", \"e2\", ...])")
        elif routing is None:
            routing = "jsq-tokens"
        require(routing is None or routing in ROUTING_RULES, f"{f}.routing", routing,
                f"must be one of {list(ROUTING_RULES)}")
        object.__setattr__(self, "routing", routing)
        if self.weights is not None:
            require(routing == "weighted", f"{f}.weights", list(self.weights), "is only for routing = 'weighted'")
            require(isinstance(self.weights, (list, tuple)), f"{f}.weights", self.weights, "must be a list")
            w = tuple(finite_number(x, f"{f}.weights", minimum=0) for x in self.weights)
            require(len(w) == len(engines) and sum(w) > 0, f"{f}.weights", list(w),
                    f"must give one non-negative weight per engine of the replica set ({len(engines)}), not all 0")
            object.__setattr__(self, "weights", w)
        require(routing != "weighted" or self.weights is not None, f"{f}.weights", None,
                "must be given for routing = 'weighted'")
        require(isinstance(self.lengths, JointLengths), f"{f}.lengths", self.lengths, "must be a joint length law")
        require(isinstance(self.inherits_kv, bool), f"{f}.inherits_kv", self.inherits_kv, "must be true or false")
        if not self.inherits_kv and _prefill_min(self.lengths) < 1:
            raise ModelError(f"{f}.prefill", _prefill_min(self.lengths),
                             "every call has at least 1 prefill token unless inherits_kv = true")
        after = (self.after,) if isinstance(self.after, str) else tuple(self.after)
        require(all(isinstance(a, str) for a in after), f"{f}.after", list(after), "must be a list of call ids")
        require(len(set(after)) == len(after), f"{f}.after", list(after), "must not repeat an id")
        require(self.id not in after, f"{f}.after", list(after), "must not name the call itself")
        object.__setattr__(self, "after", after)
        if self.p is not None:
            p = finite_number(self.p, f"{f}.p", minimum=0, strict=True)
            require(p <= 1, f"{f}.p", p, "must be a probability in (0, 1]")
            require(len(after) <= 1, f"{f}.p", p, "a join (several ids in after) cannot be a branch")
            object.__setattr__(self, "p", p)
        if self.loop_to is not None:
            require(isinstance(self.loop_to, str), f"{f}.loop.to", self.loop_to, "must be a call id")
            q = finite_number(self.loop_p, f"{f}.loop.p", minimum=0, strict=True)
            require(q < 1, f"{f}.loop.p", q, "must be a probability in (0, 1) (p = 1 never leaves)")
            object.__setattr__(self, "loop_p", q)
        else:
            require(self.loop_p == 0, f"{f}.loop.p", self.loop_p, "needs loop.to")

    @property
    def is_join(self) -> bool:
        return len(self.after) > 1

    def to_dict(self) -> dict[str, Any]:
        """The TOML table of this call."""
        d: dict[str, Any] = {"id": self.id}
        if self.engines:
            d["engine"] = self.engines[0] if len(self.engines) == 1 else list(self.engines)
        if self.routing is not None:
            d["routing"] = self.routing
        if self.weights is not None:
            d["weights"] = list(self.weights)
        d.update(self.lengths.to_dict())
        d["after"] = list(self.after)
        if self.p is not None:
            d["p"] = self.p
        if self.loop_to is not None:
            d["loop"] = {"to": self.loop_to, "p": self.loop_p}
        if self.inherits_kv:
            d["inherits_kv"] = True
        return d


@dataclass(frozen=True)
class Workflow:
    """A workflow: an arrival process of instances and its calls (see the module for the semantics).

    Raises:
        ModelError: a structural error, naming ``workflows.NAME.calls.ID.FIELD``.
    """

    name: str
    arrival: Arrival
    calls: tuple[Call, ...]
    acyclic: bool = False

    def __post_init__(self) -> None:
        w = f"workflows.{_name(self.name, 'workflows')}"
        require(isinstance(self.arrival, Arrival), f"{w}.arrival", self.arrival, "must be an arrival process")
        require(isinstance(self.acyclic, bool), f"{w}.acyclic", self.acyclic, "must be true or false")
        calls = tuple(self.calls)
        require(len(calls) >= 1 and all(isinstance(c, Call) for c in calls), f"{w}.calls", len(calls),
                "must hold at least one call ([[workflows.NAME.calls]])")
        object.__setattr__(self, "calls", calls)
        ids = [c.id for c in calls]
        for i, c in enumerate(calls):
            if c.id in ids[:i]:
                raise ModelError(f"{w}.calls.{c.id}.id", c.id, "must be unique within the workflow")
        for c in calls:
            for a in c.after:
                require(a in ids, f"{w}.calls.{c.id}.after", a, f"must name calls of the workflow {ids}")
            if c.loop_to is not None:
                require(c.loop_to in ids, f"{w}.calls.{c.id}.loop.to", c.loop_to, f"must be one of {ids}")
        dag = self._dag()
        if self.acyclic:
            for c in calls:
                if c.loop_to is not None:
                    raise ModelError(f"{w}.calls.{c.id}.loop", {"to": c.loop_to, "p": c.loop_p},
                                     "is a cycle, but the workflow is declared acyclic = true")
            try:
                cyc = nx.find_cycle(dag)
                x = min((e[0] for e in cyc), key=ids.index)
                raise ModelError(f"{w}.calls.{x}.after", list(self.call(x).after),
                                 f"forms a cycle {[e[0] for e in cyc]}, but the workflow is declared acyclic = true")
            except nx.NetworkXNoCycle:
                pass
        roots = [c.id for c in calls if not c.after]
        require(bool(roots), f"{w}.calls", ids, "needs at least one start call (after = [])")
        seen = set(roots) | set().union(*(nx.descendants(dag, r) for r in roots))
        for c in calls:
            require(c.id in seen, f"{w}.calls.{c.id}", list(c.after),
                    "is unreachable: no chain of after leads to it from a start call (after = [])")
        try:
            cyc = nx.find_cycle(dag)
            x = min((e[0] for e in cyc), key=ids.index)
            raise ModelError(f"{w}.calls.{x}.after", list(self.call(x).after),
                             f"forms a cycle {[e[0] for e in cyc]}: after must be acyclic (write cycles with "
                             "loop = { to = ID, p = ... })")
        except nx.NetworkXNoCycle:
            pass
        self._check_branches(w)
        self._check_joins(w, dag)
        self._check_loops(w, dag)

    # ------------------------------------------------------------------ structure

    def call(self, cid: str) -> Call:
        """The call with id ``cid``."""
        for c in self.calls:
            if c.id == cid:
                return c
        raise ModelError(f"workflows.{self.name}.calls", cid, f"must be one of {[c.id for c in self.calls]}")

    def children(self, parent: str) -> list[Call]:
        """The calls that list ``parent`` in ``after`` (``"^"``: the start calls), in file order."""
        if parent == _START:
            return [c for c in self.calls if not c.after]
        return [c for c in self.calls if parent in c.after]

    def _dag(self) -> nx.DiGraph:
        g = nx.DiGraph()
        g.add_nodes_from(c.id for c in self.calls)
        g.add_edges_from((a, c.id) for c in self.calls for a in c.after)
        return g

    def _threads(self, parent: str) -> int:
        kids = self.children(parent)
        return sum(1 for k in kids if k.p is None) + (1 if any(k.p is not None for k in kids) else 0)

    def _check_branches(self, w: str) -> None:
        for parent in [_START, *(c.id for c in self.calls)]:
            br = [k for k in self.children(parent) if k.p is not None]
            if br:
                s = math.fsum(k.p for k in br)  # type: ignore[misc]
                where = "of the start calls" if parent == _START else f"after {parent!r}"
                require(abs(s - 1.0) <= 1e-9, f"{w}.calls.{br[0].id}.p", [k.p for k in br],
                        f"the branch {where} ({', '.join(k.id for k in br)}) must have p summing to 1, not {s:g}")

    def guards(self) -> dict[str, frozenset[tuple[str, str]]]:
        """Each call's branch choices: the (parent, chosen child) pairs under which it runs (loops aside).

        Two calls run in the same instances iff their guards are equal (choices are independent, p > 0).
        """
        out: dict[str, frozenset[tuple[str, str]]] = {}
        for cid in nx.topological_sort(self._dag()):
            c = self.call(cid)
            parent = c.after[0] if c.after else _START
            g = out.get(parent, frozenset())
            out[cid] = g | {(parent, cid)} if c.p is not None and c.p < 1 else g  # p = 1: a sure choice
        return out

    def _check_joins(self, w: str, dag: nx.DiGraph) -> None:
        guards = self.guards()
        for c in self.calls:
            if not c.is_join:
                continue
            for a in c.after:
                anc = sorted(set(c.after) & nx.ancestors(dag, a))
                if anc:
                    raise ModelError(f"{w}.calls.{c.id}.after", list(c.after),
                                     f"is a join without its fork: {anc[0]!r} comes before {a!r} on one path, "
                                     "so they are not parallel")
            gs = {a: sorted(guards[a]) for a in c.after}
            require(len({frozenset(g) for g in gs.values()}) == 1, f"{w}.calls.{c.id}.after", list(c.after),
                    "a join's inputs must be the parallel paths of one fork, run in the same instances; they sit "
                    f"under different branch choices {gs} (a join never merges alternatives)")

    def _check_loops(self, w: str, dag: nx.DiGraph) -> None:
        for c in self.calls:
            if c.loop_to is None:
                continue
            f = f"{w}.calls.{c.id}.loop"
            to = c.loop_to
            require(to == c.id or to in nx.ancestors(dag, c.id), f"{f}.to", to,
                    f"must be {c.id!r} or one of its ancestors {sorted(nx.ancestors(dag, c.id))}")
            body = ({to} | nx.descendants(dag, to)) & ({c.id} | nx.ancestors(dag, c.id))
            for b in sorted(body):
                require(b == c.id or self._threads(b) <= 1, f, {"to": to, "p": c.loop_p},
                        f"its body must be one thread, but {b!r} forks inside it")
                require(b == to or not self.call(b).is_join, f, {"to": to, "p": c.loop_p},
                        f"its body must be one thread, but {b!r} is a join inside it")

    # ------------------------------------------------------------------ rates

    @property
    def rate_per_s(self) -> float:
        return self.arrival.rate_per_s

    def scaled(self, factor: float) -> "Workflow":
        return replace(self, arrival=self.arrival.scaled(factor))

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"arrival": self.arrival.to_dict()}
        if self.acyclic:
            d["acyclic"] = True
        d["calls"] = [c.to_dict() for c in self.calls]
        return d


@dataclass(frozen=True)
class NetworkModel:
    """Engines by name, workflows by name, and optional plain single-call workloads by name.

    In a one-engine model a call or workload may omit its engine. Class names (``"W.call"`` and
    workload names) are unique.

    Raises:
        ModelError: an unknown engine, a name clash, a bad type.
    """

    engines: dict[str, Engine]
    workflows: dict[str, Workflow] = field(default_factory=dict)
    workloads: dict[str, Workload] = field(default_factory=dict)

    def __post_init__(self) -> None:
        require(len(self.engines) > 0, "engines", {}, "a model needs at least one [engines.NAME] table")
        for name, e in self.engines.items():
            require(isinstance(e, Engine), f"engines.{name}", e, "must be an Engine")
            require(e.name == name, f"engines.{name}.name", e.name, f"must equal its key {name!r}")
        names = sorted(self.engines)
        fixed: dict[str, Workflow] = {}
        for wn, wf in self.workflows.items():
            require(isinstance(wf, Workflow), f"workflows.{wn}", wf, "must be a Workflow")
            require(wf.name == wn, f"workflows.{wn}.name", wf.name, f"must equal its key {wn!r}")
            calls = []
            for c in wf.calls:
                f = f"workflows.{wn}.calls.{c.id}.engine"
                if not c.engines:
                    require(len(self.engines) == 1, f, None, f"must name one of the engines {names}")
                    c = replace(c, engines=(names[0],))
                for e in c.engines:
                    require(e in self.engines, f, e, f"must be one of the engines {names}")
                calls.append(c)
            fixed[wn] = replace(wf, calls=tuple(calls))
        loads: dict[str, Workload] = {}
        for n, wl in self.workloads.items():
            require(isinstance(wl, Workload), f"workloads.{n}", wl, "must be a Workload")
            require(n not in self.workflows, f"workloads.{n}", n, "must not share its name with a workflow")
            require("." not in n, f"workloads.{n}", n, "must not contain '.' in a network model")
            if wl.engine is None:
                require(len(self.engines) == 1, f"workloads.{n}.engine", None, f"must name one of the engines {names}")
                wl = replace(wl, engine=names[0])
            require(wl.engine in self.engines, f"workloads.{n}.engine", wl.engine, f"must be one of {names}")
            loads[n] = wl
        require(bool(fixed) or bool(loads), "workflows", {}, "a network model needs at least one workflow")
        object.__setattr__(self, "engines", dict(self.engines))
        object.__setattr__(self, "workflows", fixed)
        object.__setattr__(self, "workloads", loads)

    @property
    def class_names(self) -> list[str]:
        """``"W.call"`` for every call of every workflow, then the workload names (class order)."""
        return [f"{w.name}.{c.id}" for w in self.workflows.values() for c in w.calls] + list(self.workloads)

    def class_network(self) -> ClassNetwork:
        """The class-level form: classes, α (req/s) and routing P (mapping in the module docstring)."""
        classes: list[JobClass] = []
        idx: dict[str, int] = {}
        for w in self.workflows.values():
            for c in w.calls:
                idx[f"{w.name}.{c.id}"] = len(classes)
                classes.append(JobClass(f"{w.name}.{c.id}", c.engines, c.lengths.mean_prefill,
                                        c.lengths.mean_decode, w.name, c.routing or "jsq-tokens", c.weights,
                                        c.lengths.mean_kv_token_batches, c.lengths.mean_decode_context))
        for n, wl in self.workloads.items():
            idx[n] = len(classes)
            classes.append(JobClass(n, (wl.engine,), wl.lengths.mean_prefill, wl.lengths.mean_decode, n,
                                    mean_kv_token_batches=wl.lengths.mean_kv_token_batches,
                                    mean_decode_context=wl.lengths.mean_decode_context))
        K = len(classes)
        alpha = np.zeros(K)
        P = np.zeros((K, K))
        for w in self.workflows.values():
            for c in w.calls:
                k = idx[f"{w.name}.{c.id}"]
                if not c.after:
                    alpha[k] += w.rate_per_s * (1.0 if c.p is None else c.p)
                else:
                    # a join is fed by its first input only (its inputs complete in the same instances)
                    parent = idx[f"{w.name}.{c.after[0]}"]
                    P[parent, k] += (1.0 - w.call(c.after[0]).loop_p) * (1.0 if c.p is None else c.p)
                if c.loop_to is not None:
                    P[k, idx[f"{w.name}.{c.loop_to}"]] += c.loop_p
        for n, wl in self.workloads.items():
            alpha[idx[n]] = wl.rate_per_s
        return ClassNetwork(self.engines, tuple(classes), alpha, P)

    def to_networkx(self, workflow: str | None = None) -> nx.DiGraph:
        """One DiGraph of all calls (or of ``workflow``'s): nodes ``"W.call"``, edges parent → child.

        Node attributes: ``workflow``, ``call``, ``engines``, ``routing``, ``weights``, ``lengths``,
        ``mean_prefill``, ``mean_decode``, ``inherits_kv``, ``join`` (bool), ``start_p`` (probability an
        instance starts with it; 0 for non-start calls). Edge attributes: ``kind`` — ``next`` (the one
        unconditional child), ``fork`` (one of several parallel children), ``branch`` (with its ``p``),
        ``join`` (an input of a join other than its first; not in the class routing P), ``loop`` — and
        ``p`` (1 for next/fork/join). Graph attribute ``rates_per_s``: each workflow's arrival rate.
        """
        g = nx.DiGraph()
        wfs = self.workflows.values() if workflow is None else [self._workflow(workflow)]
        g.graph["rates_per_s"] = {w.name: w.rate_per_s for w in wfs}
        for w in wfs:
            for c in w.calls:
                g.add_node(f"{w.name}.{c.id}", workflow=w.name, call=c.id, engines=c.engines, routing=c.routing,
                           weights=c.weights, lengths=c.lengths, mean_prefill=c.lengths.mean_prefill,
                           mean_decode=c.lengths.mean_decode, inherits_kv=c.inherits_kv, join=c.is_join,
                           start_p=0.0 if c.after else (1.0 if c.p is None else c.p))
            for c in w.calls:
                n_uncond = sum(1 for k in w.children(c.id) if k.p is None)
                for k in w.children(c.id):
                    if k.p is not None:
                        kind, p = "branch", k.p
                    elif k.is_join and k.after[0] != c.id:
                        kind, p = "join", 1.0
                    else:
                        kind, p = ("fork" if n_uncond > 1 else "next"), 1.0
                    g.add_edge(f"{w.name}.{c.id}", f"{w.name}.{k.id}", kind=kind, p=p)
                if c.loop_to is not None:
                    g.add_edge(f"{w.name}.{c.id}", f"{w.name}.{c.loop_to}", kind="loop", p=c.loop_p)
        return g

    def _workflow(self, name: str) -> Workflow:
        if name not in self.workflows:
            raise ModelError("workflow", name, f"must be one of {sorted(self.workflows)}")
        return self.workflows[name]

    def scaled(self, load: float) -> "NetworkModel":
        """The same model with every arrival rate multiplied by ``load``."""
        load = finite_number(load, "load", minimum=0)
        return replace(self, workflows={k: w.scaled(load) for k, w in self.workflows.items()},
                       workloads={k: w.scaled(load) for k, w in self.workloads.items()})

    def with_engine(self, name: str, **changes: object) -> "NetworkModel":
        """A copy with fields of engine ``name`` replaced."""
        if name not in self.engines:
            raise ModelError("engine", name, f"must be one of {sorted(self.engines)}")
        engines = dict(self.engines)
        engines[name] = replace(engines[name], **changes)
        return replace(self, engines=engines)

    def to_dict(self, base_dir: str | Path | None = None) -> dict[str, Any]:
        """The TOML document as nested dicts (file paths relative to ``base_dir`` when given)."""
        from .io import model_to_dict

        return model_to_dict(self, base_dir)


def network_from_toml(doc: dict[str, Any], base: str | Path = ".") -> NetworkModel:
    """Build a :class:`NetworkModel` from a parsed TOML document (``engines``, ``workflows``, ``workloads``).

    Raises:
        ModelError: any invalid field, named as in the file (``workflows.A.calls.plan.engine``).
    """
    from . import io

    base = Path(base)
    engines = {n: io._engine_from_toml(n, e, base) for n, e in io._table(doc.get("engines", {}), "engines").items()}
    workloads = {n: io._workload_from_toml(n, w, base)
                 for n, w in io._table(doc.get("workloads", {}), "workloads").items()}
    workflows = {n: _workflow_from_toml(n, w, base)
                 for n, w in io._table(doc.get("workflows", {}), "workflows").items()}
    return NetworkModel(engines, workflows, workloads)


_CALL_KEYS = {"id", "engine", "routing", "weights", "prefill", "decode", "lengths", "after", "p", "loop",
              "inherits_kv"}


def _workflow_from_toml(name: str, d: Any, base: Path) -> Workflow:
    from . import io

    w = f"workflows.{name}"
    d = io._table(d, w)
    io._keys(d, w, {"arrival", "acyclic", "calls"}, {"arrival", "calls"})
    raw = d["calls"]
    if not isinstance(raw, list) or not raw:
        raise ModelError(f"{w}.calls", raw, "must be a non-empty array of tables [[workflows.NAME.calls]]")
    calls = []
    for i, cd in enumerate(raw):
        cd = io._table(cd, f"{w}.calls[{i}]")
        cid = cd.get("id")
        if not isinstance(cid, str) or not cid:
            raise ModelError(f"{w}.calls[{i}].id", cid, "is required: a non-empty string")
        f = f"{w}.calls.{cid}"
        io._keys(cd, f, _CALL_KEYS)
        loop = cd.get("loop")
        if loop is not None:
            loop = io._table(loop, f"{f}.loop")
            io._keys(loop, f"{f}.loop", {"to", "p"}, {"to", "p"})
        engine = cd.get("engine", ())
        if isinstance(engine, list):
            engine = tuple(engine)
        elif not isinstance(engine, (str, tuple)):
            raise ModelError(f"{f}.engine", engine, "must name an engine or a list of engines")
        after = cd.get("after", [])
        if not isinstance(after, list):
            raise ModelError(f"{f}.after", after, "must be a list of call ids, e.g. after = [\"plan\"]")
        try:
            calls.append(Call(cid, engine, io._joint_from_toml(cd, f, base), tuple(after), cd.get("p"),
                              cd.get("routing"), cd.get("weights"), loop["to"] if loop else None,
                              loop["p"] if loop else 0.0, cd.get("inherits_kv", False)))
        except ModelError as e:
            raise (ModelError(f"{w}.{e.field}", e.value, e.allowed) if e.field.startswith("calls.") else e) from None
    return Workflow(name, io.arrival_from_toml(d["arrival"], f"{w}.arrival", base), tuple(calls),
                    d.get("acyclic", False))
