"""``fluidllm check-policy``: one verdict sheet for a scheduling policy.

:func:`check_policy` runs :func:`~fluidllm.testing.check_invariants` and
:func:`~fluidllm.testing.check_work_conserving` on the policy, then its capacity on a model with
:func:`fluidllm.policy_capacity` (analytic where fluidllm derives it, otherwise the simulator's
bracketed stability boundary) beside the work-conserving bound (Li, Dai, Peng, Thm 2 / the
configuration LP).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ModelError
from ..model.policy import POLICIES, PolicySpec
from .checks import InvariantsReport, WorkConservingReport, as_policy, check_invariants, check_work_conserving

__all__ = ["check_policy", "CheckPolicyResult", "default_model", "DEFAULT_MODEL_TEXT"]

#: What :func:`default_model` is, in words (printed by the CLI).
DEFAULT_MODEL_TEXT = ("default model: the paper's Fig. 1 setup scaled down — one engine 'gpu', b_max = 128, "
                      "CodeLlama-34B/A100 staircase batch time (c = 11.28 ms, a = 35.47 ms, b0 = 128), "
                      "Poisson arrivals at 2 req/s of 64-token prompts with geometric outputs of mean 32 tokens")


def default_model(policy: PolicySpec | None = None) -> Any:
    """The small model ``check-policy`` uses without ``--model`` (see :data:`DEFAULT_MODEL_TEXT`)."""
    from ..model import (Deterministic, Engine, Geometric, Independent, Model, PoissonArrival, Staircase,
                         Workload)

    eng = Engine("gpu", 128, Staircase(11.28, 35.47, 128), None, None, None, policy or PolicySpec("sarathi"))
    wl = Workload("chat", PoissonArrival(2.0), Independent(Deterministic(64), Geometric(32.0, 1)), "gpu")
    return Model({"gpu": eng}, {"chat": wl})


def policy_spec(target: Any) -> PolicySpec:
    """A PolicySpec for ``target``: a spec, a built-in name, or a plug-in target ``file.py:Class`` /
    ``module:Class`` (a relative file path is resolved against the current folder).

    Raises:
        ModelError: an unknown name, a missing file or attribute, a broken plug-in (field ``policy.target``).
    """
    if isinstance(target, PolicySpec):
        spec = target
    elif isinstance(target, str) and ":" not in target:
        if target not in POLICIES or target == "python":
            raise ModelError("policy.target", target, "must be a built-in policy name "
                             f"({', '.join(n for n in POLICIES if n != 'python')}) or 'path/to/file.py:ClassName' "
                             "or 'module:ClassName'")
        spec = PolicySpec(target)
    elif isinstance(target, str):
        where, attr = target.rsplit(":", 1)
        if where.endswith(".py"):
            target = f"{Path(where).expanduser().resolve()}:{attr}"
        spec = PolicySpec("python", {"target": target})
    else:
        raise ModelError("policy.target", target, "must be a policy name or 'file.py:ClassName'")
    as_policy(spec)         # load it now: a bad target fails here, with its ModelError
    return spec


@dataclass(frozen=True)
class CheckPolicyResult:
    """What ``fluidllm check-policy`` reports.

    Attributes:
        policy: the policy's name; target: the spec it was checked as.
        invariants: the :class:`~fluidllm.testing.InvariantsReport`.
        work_conserving: the :class:`~fluidllm.testing.WorkConservingReport`.
        model: the model file, or the default model's description; engine: the engine.
        capacity: the :class:`~fluidllm.PolicyCapacity` on the model (None when skipped).
    """

    policy: str
    target: PolicySpec
    invariants: InvariantsReport
    work_conserving: WorkConservingReport
    model: str
    engine: str | None
    capacity: Any = None

    @property
    def ok(self) -> bool:
        """The rules hold and the policy's work-conservation claim (if any) is what the search found."""
        return self.invariants.ok and self.work_conserving.agrees_with_claim

    def to_dict(self) -> dict[str, Any]:
        f = lambda x: None if x is None or not math.isfinite(x) else float(x)  # noqa: E731
        ce = self.work_conserving.counterexample
        inv_ce = self.invariants.counterexample
        cap = self.capacity
        return {
            "policy": self.policy, "target": self.target.to_toml(), "model": self.model, "engine": self.engine,
            "invariants_ok": self.invariants.ok,
            "invariants_counterexample": None if inv_ce is None else inv_ce.to_dict(),
            "work_conserving": self.work_conserving.ok,
            "declared_work_conserving": self.work_conserving.declared,
            "counterexample": None if ce is None else ce.to_dict(),
            "states_tried": {"invariants": self.invariants.examples, "work_conserving": self.work_conserving.examples},
            "seed": self.work_conserving.seed,
            "max_scale": None if cap is None else f(cap.max_scale),
            "work_conserving_max_scale": None if cap is None else f(cap.work_conserving_max_scale),
            "capacity": None if cap is None else cap.to_dict(),
        }

    def text(self) -> str:
        lines = [f"== policy {self.policy}  ({self.model})", self.invariants.text(), self.work_conserving.text()]
        if not self.work_conserving.agrees_with_claim:
            lines.append("  !! the policy's work_conserving claim disagrees with the search")
        c = self.capacity
        if c is not None:
            iv = "" if c.interval is None else f", interval [{c.interval[0]:.4g}, {c.interval[1]:.4g}]"
            lines.append(f"capacity on engine {c.engine}: max_scale {c.max_scale:.4g} ({c.method}{iv}) vs the "
                         f"work-conserving bound {c.work_conserving_max_scale:.4g} (loss {100 * c.loss_ratio:.1f} %)")
            lines.append(f"  {c.detail}")
            if c.method == "simulated" and c.interval is not None and c.interval[0] == 0:
                lines.append("  !! no load came out STABLE: the bracket is uninformative; give a longer --horizon-s "
                             "or more --replications")
            lines.append("  (max_scale: the factor by which every arrival rate of the model can be multiplied "
                         "and stay stable)")
        return "\n".join(lines)

    __str__ = text


def check_policy(target: Any, model: Any = None, *, engine: str | None = None, replications: int = 8,
                 seed: int = 0, max_examples: int = 1000, capacity: bool = True,
                 horizon_s: float | None = None) -> CheckPolicyResult:
    """Judge one policy: engine rules, work conservation (minimal counterexample) and capacity.

    Args:
        target: a built-in name, a PolicySpec, or ``file.py:Class`` / ``module:Class``. A plug-in
            target without params that the model's engine already names is checked with the
            engine's ``params``.
        model: a model file path or a :class:`~fluidllm.Model`; None: :func:`default_model`.
        engine: the engine whose policy is replaced (needed when the model has several).
        replications, seed, horizon_s: for a simulated capacity boundary; ``seed`` also seeds the searches.
        max_examples: states tried by the work-conservation search (the invariants get a third).
        capacity: also compute the capacity (the slow part for a simulated boundary).

    Raises:
        ModelError: a bad target, model or engine (the CLI prints it and exits 2).
    """
    from ..capacity.policy import policy_capacity

    spec = policy_spec(target)
    if model is None:
        m, label = default_model(spec), DEFAULT_MODEL_TEXT
    elif isinstance(model, (str, Path)):
        from ..model.io import load_model

        m, label = load_model(model), f"model {model}"
    else:
        m, label = model, "model given"
    if engine is not None and engine not in m.engines:
        raise ModelError("--engine", engine, f"must be one of {sorted(m.engines)}")
    if spec.name == "python" and "params" not in spec.options:
        # The model's engine names this very plug-in: keep its params (they are part of the policy).
        for e in ([engine] if engine is not None else list(m.engines)):
            own = m.engines[e].policy
            if own.name == "python" and own.options.get("target") == spec.options["target"]:
                spec = own
                break
    inv = check_invariants(spec, max_examples=max(50, max_examples // 3), seed=seed)
    wc = check_work_conserving(spec, max_examples=max_examples, seed=seed)
    name = inv.policy
    cap = None
    eng_name = engine
    if capacity and inv.ok:
        cap = policy_capacity(m, spec, engine=engine, replications=replications, seed=seed, horizon_s=horizon_s)
        eng_name = cap.engine
    return CheckPolicyResult(name, spec, inv, wc, label, eng_name, cap)
