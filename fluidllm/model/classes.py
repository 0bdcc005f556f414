"""The class-level view of an agent network: job classes, their engines and the routing between them.

This is the multiclass queueing-network form every network analysis shares (capacity LP, fluid
model, symbolic conditions), whatever the workflow syntax that produced it
(:mod:`fluidllm.model.network` builds it from ``[workflows.*]``):

* class k (e.g. ``"A.plan"``, one call of one workflow) is served on one engine of ``engines[k]``
  (one name, or a replica set with a routing rule), with mean prefill m_p,k and mean decode m_d,k
  tokens per visit;
* α_k: exogenous arrivals of class k (requests/s);
* P[k, l]: expected number of class-l jobs a class-k completion creates. Rows may sum to less than 1
  (the job leaves with the rest), or to more than 1 (a fork creates several jobs); a join is
  represented at the rate level (the joined call's visit rate), which is all the capacity and
  fluid-rate analyses need.

Visit rates solve the traffic equation λ = α + Pᵀλ, i.e. λ = (I − Pᵀ)⁻¹ α, which requires the spectral
radius of P to be below 1 (every job leaves eventually).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ModelError, finite_number, require
from .engine import Engine

__all__ = ["JobClass", "ClassNetwork", "ROUTING_RULES"]

#: how a replica set picks an engine for each job
ROUTING_RULES = ("jsq-tokens", "jsq-requests", "round-robin", "random", "weighted")


@dataclass(frozen=True)
class JobClass:
    """One job class: a call of a workflow, the engines that may serve it, its mean tokens per visit.

    ``engines``: one engine name, or several (a replica set) chosen by ``routing`` (with
    ``weights`` for ``weighted``). ``workflow``: the workflow it belongs to (for per-workflow results).
    ``mean_kv_token_batches`` (E[g], token-batches) and ``mean_decode_context`` (κ, tokens): the KV
    moments of its length law (:class:`~fluidllm.model.lengths.JointLengths`) for KV-capped engines;
    None: only the means are known (the capacity LP then uses deterministic lengths at the means).
    """

    name: str
    engines: tuple[str, ...]
    mean_prefill: float
    mean_decode: float
    workflow: str = ""
    routing: str = "jsq-tokens"
    weights: tuple[float, ...] | None = None
    mean_kv_token_batches: float | None = None
    mean_decode_context: float | None = None

    def __post_init__(self) -> None:
        require(isinstance(self.name, str) and self.name, "class.name", self.name, "must be a non-empty string")
        engines = (self.engines,) if isinstance(self.engines, str) else tuple(self.engines)
        require(len(engines) >= 1 and all(isinstance(e, str) for e in engines), f"classes.{self.name}.engines",
                self.engines, "must name at least one engine")
        require(len(set(engines)) == len(engines), f"classes.{self.name}.engines", engines, "must not repeat an engine")
        object.__setattr__(self, "engines", engines)
        object.__setattr__(self, "mean_prefill", finite_number(self.mean_prefill, f"classes.{self.name}.mean_prefill",
                                                               minimum=0))
        object.__setattr__(self, "mean_decode", finite_number(self.mean_decode, f"classes.{self.name}.mean_decode",
                                                              minimum=0))
        require(self.routing in ROUTING_RULES, f"classes.{self.name}.routing", self.routing,
                f"must be one of {list(ROUTING_RULES)}")
        if self.weights is not None:
            w = tuple(finite_number(x, f"classes.{self.name}.weights", minimum=0) for x in self.weights)
            require(len(w) == len(engines) and sum(w) > 0, f"classes.{self.name}.weights", self.weights,
                    f"must give one non-negative weight per engine ({len(engines)}), not all zero")
            object.__setattr__(self, "weights", w)
        require(self.routing != "weighted" or self.weights is not None, f"classes.{self.name}.weights", None,
                "must be given for routing = 'weighted'")

    @property
    def mean_tokens(self) -> float:
        """m_p + m_d: tokens per visit."""
        return self.mean_prefill + self.mean_decode


@dataclass(frozen=True, eq=False)
class ClassNetwork:
    """Engines, job classes, exogenous arrival rates α (req/s) and the routing matrix P (see module)."""

    engines: dict[str, Engine]
    classes: tuple[JobClass, ...]
    arrival_rates: np.ndarray
    routing: np.ndarray
    _visit: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        require(len(self.classes) >= 1, "classes", len(self.classes), "must hold at least one job class")
        names = [c.name for c in self.classes]
        require(len(set(names)) == len(names), "classes", names, "must have unique names")
        for c in self.classes:
            for e in c.engines:
                if e not in self.engines:
                    raise ModelError(f"classes.{c.name}.engines", e, f"must be one of the engines {sorted(self.engines)}")
        K = len(self.classes)
        a = np.asarray(self.arrival_rates, dtype=float)
        P = np.asarray(self.routing, dtype=float)
        require(a.shape == (K,) and np.all(np.isfinite(a)) and np.all(a >= 0), "arrival_rates", a.tolist(),
                f"must be {K} finite non-negative rates (req/s)")
        require(P.shape == (K, K) and np.all(np.isfinite(P)) and np.all(P >= 0), "routing", P.shape,
                f"must be a {K}x{K} matrix of finite non-negative entries")
        rho = max(abs(np.linalg.eigvals(P))) if K else 0.0
        require(rho < 1 - 1e-12, "routing", float(rho),
                "must have spectral radius < 1 (every job eventually leaves the network)")
        a.setflags(write=False)
        P.setflags(write=False)
        object.__setattr__(self, "engines", dict(self.engines))
        object.__setattr__(self, "classes", tuple(self.classes))
        object.__setattr__(self, "arrival_rates", a)
        object.__setattr__(self, "routing", P)
        lam = np.linalg.solve(np.eye(K) - P.T, a)
        lam.setflags(write=False)
        object.__setattr__(self, "_visit", lam)

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    def index(self, name: str) -> int:
        """Position of class ``name``."""
        for i, c in enumerate(self.classes):
            if c.name == name:
                return i
        raise ModelError("class", name, f"must be one of {self.class_names}")

    @property
    def visit_rates(self) -> np.ndarray:
        """λ = (I − Pᵀ)⁻¹ α: visits per second of each class (req/s)."""
        return self._visit

    def scaled(self, load: float) -> "ClassNetwork":
        """The same network with every exogenous rate multiplied by ``load``."""
        load = finite_number(load, "load", minimum=0)
        return ClassNetwork(self.engines, self.classes, self.arrival_rates * load, self.routing)

    def to_dict(self) -> dict[str, Any]:
        return {"engines": sorted(self.engines),
                "classes": [{"name": c.name, "workflow": c.workflow, "engines": list(c.engines), "routing": c.routing,
                             "mean_prefill": c.mean_prefill, "mean_decode": c.mean_decode} for c in self.classes],
                "arrival_rates_per_s": self.arrival_rates.tolist(), "routing": self.routing.tolist(),
                "visit_rates_per_s": self.visit_rates.tolist()}
