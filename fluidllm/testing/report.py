"""``fluidllm check-policy``: one verdict sheet for a scheduling policy.

:func:`check_policy` runs :func:`~fluidllm.testing.check_invariants` and
:func:`~fluidllm.testing.check_work_conserving` on the policy — on the states of the model's engine
(its envelope: budget, caps, KV limit and length laws; without a model, the default envelope of
every engine up to real scale) — then its capacity on the model with
:func:`fluidllm.policy_capacity` (analytic where fluidllm derives it, otherwise the simulator's
bracketed stability boundary) beside the work-conserving bound (Li, Dai, Peng, Thm 2 / the
configuration LP). The capacity is computed even when an invariant fails: the failure is a finding
shown beside it (a simulation that reaches a broken plan reports that instead of a capacity).

Exit status of the command (:attr:`CheckPolicyResult.exit_code`): 0 — the plans obey the engine's
rules on every state tried and the policy's ``work_conserving`` claim (if any) is what the search
found; 1 — a finding: an invariant fails, or the claim is wrong (the capacity is still reported);
2 — bad input (target, model, engine: one line on stderr, no traceback).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ModelError
from ..model.policy import POLICIES, PolicySpec
from .checks import (DEFAULT_MAX_EXAMPLES, InvariantsReport, WorkConservingReport, as_policy, check_invariants,
                     check_work_conserving)
from .envelope import DEFAULT_ENVELOPE, envelope_for

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
        capacity: the :class:`~fluidllm.PolicyCapacity` on the model (None when skipped or failed).
        capacity_error: why the capacity could not be computed (a simulation that reached a plan
            breaking the engine's rules), None otherwise.
    """

    policy: str
    target: PolicySpec
    invariants: InvariantsReport
    work_conserving: WorkConservingReport
    model: str
    engine: str | None
    capacity: Any = None
    capacity_error: str | None = None

    @property
    def ok(self) -> bool:
        """The rules hold and the policy's work-conservation claim (if any) is what the search found."""
        return self.invariants.ok and self.work_conserving.agrees_with_claim

    @property
    def exit_code(self) -> int:
        """0 when :attr:`ok`, 1 for a finding (an invariant fails or the claim is wrong)."""
        return 0 if self.ok else 1

    def to_dict(self) -> dict[str, Any]:
        f = lambda x: None if x is None or not math.isfinite(x) else float(x)  # noqa: E731
        ce = self.work_conserving.counterexample
        inv_ce = self.invariants.counterexample
        cap = self.capacity
        env = self.work_conserving.envelope
        return {
            "policy": self.policy, "target": self.target.to_toml(), "model": self.model, "engine": self.engine,
            "ok": self.ok, "exit_code": self.exit_code,
            "invariants_ok": self.invariants.ok,
            "invariants_counterexample": None if inv_ce is None else inv_ce.to_dict(),
            "work_conserving": self.work_conserving.ok,
            "declared_work_conserving": self.work_conserving.declared,
            "counterexample": None if ce is None else ce.to_dict(),
            "states_tried": {"invariants": self.invariants.examples, "work_conserving": self.work_conserving.examples},
            "search": {"invariants": self.invariants.search.to_dict(),
                       "work_conserving": self.work_conserving.search.to_dict()},
            "envelope": None if env is None else env.to_dict(),
            "seed": self.work_conserving.seed,
            "max_scale": None if cap is None else f(cap.max_scale),
            "work_conserving_max_scale": None if cap is None else f(cap.work_conserving_max_scale),
            "capacity": None if cap is None else cap.to_dict(),
            "capacity_error": self.capacity_error,
        }

    def text(self) -> str:
        env = self.work_conserving.envelope
        lines = [f"== policy {self.policy}  ({self.model})"]
        if env is not None:
            lines.append(f"judged on {env.text()}")
        lines += [self.invariants.summary(), *([self.invariants.counterexample.text()]
                                               if self.invariants.counterexample is not None else []),
                  self.work_conserving.summary(), *([self.work_conserving.counterexample.text()]
                                                    if self.work_conserving.counterexample is not None else [])]
        if not self.work_conserving.agrees_with_claim:
            lines.append("  !! the policy's work_conserving claim disagrees with the search")
        if not self.invariants.ok:
            lines.append("  !! the plans break the engine's rules in the state above (a finding: exit status 1)")
        c = self.capacity
        if self.capacity_error is not None:
            lines.append(f"capacity: not computed: {self.capacity_error}")
        if c is not None:
            iv = "" if c.interval is None else f", interval [{c.interval[0]:.4g}, {c.interval[1]:.4g}]"
            lines.append(f"capacity on engine {c.engine}: max_scale {c.max_scale:.4g} ({c.method}{iv}) vs the "
                         f"work-conserving bound {c.work_conserving_max_scale:.4g} (loss {100 * c.loss_ratio:.1f} %)")
            lines.append(f"  {c.detail}")
            if not self.invariants.ok:
                lines.append("  (the simulations never reached a state whose plan breaks the rules; the capacity "
                             "holds for the states they met)")
            if c.method == "simulated" and c.interval is not None and c.interval[0] == 0:
                lines.append("  !! no load came out STABLE: the bracket is uninformative; give a longer --horizon-s "
                             "or more --replications")
            lines.append("  (max_scale: the factor by which every arrival rate of the model can be multiplied "
                         "and stay stable)")
        return "\n".join(lines)

    __str__ = text


def check_policy(target: Any, model: Any = None, *, engine: str | None = None, replications: int = 8,
                 seed: int = 0, max_examples: int = DEFAULT_MAX_EXAMPLES, capacity: bool = True,
                 horizon_s: float | None = None) -> CheckPolicyResult:
    """Judge one policy: engine rules, work conservation (minimal counterexample) and capacity.

    Args:
        target: a built-in name, a PolicySpec, or ``file.py:Class`` / ``module:Class``. A plug-in
            target without params that the model's engine already names is checked with the
            engine's ``params``.
        model: a model file path or a :class:`~fluidllm.Model`: the policy is judged on that engine's
            states (:func:`~fluidllm.testing.envelope.envelope_for`) and its capacity computed there;
            None: judged on :data:`~fluidllm.testing.envelope.DEFAULT_ENVELOPE`, capacity on
            :func:`default_model`.
        engine: the engine whose policy is replaced (needed when the model has several).
        replications, seed, horizon_s: for a simulated capacity boundary; ``seed`` also seeds the searches.
        max_examples: random states of the work-conservation search (the invariants get a third).
        capacity: also compute the capacity (the slow part for a simulated boundary); it is computed
            even when an invariant fails (``capacity_error`` says why when the simulation cannot run).

    Raises:
        ModelError: a bad target, model or engine (the CLI prints it and exits 2).
    """
    from ..capacity.policy import policy_capacity
    from ..sim.reference import PlanViolation

    spec = policy_spec(target)
    if model is None:
        m, label, env = default_model(spec), DEFAULT_MODEL_TEXT, DEFAULT_ENVELOPE
        if engine is not None and engine not in m.engines:
            raise ModelError("--engine", engine, f"must be one of {sorted(m.engines)}")
    else:
        if isinstance(model, (str, Path)):
            from ..model.io import load_model

            m, label = load_model(model), f"model {model}"
        else:
            m, label = model, "model given"
        if engine is not None and engine not in m.engines:
            raise ModelError("--engine", engine, f"must be one of {sorted(m.engines)}")
        env = envelope_for(m, engine, label=label)
    if spec.name == "python" and "params" not in spec.options:
        # The model's engine names this very plug-in: keep its params (they are part of the policy).
        for e in ([engine] if engine is not None else list(m.engines)):
            own = m.engines[e].policy
            if own.name == "python" and own.options.get("target") == spec.options["target"]:
                spec = own
                break
    inv = check_invariants(spec, envelope=env, max_examples=max(50, max_examples // 3), seed=seed)
    wc = check_work_conserving(spec, envelope=env, max_examples=max_examples, seed=seed)
    name = inv.policy
    cap, err = None, None
    eng_name = engine
    if capacity:
        try:
            cap = policy_capacity(m, spec, engine=engine, replications=replications, seed=seed, horizon_s=horizon_s)
            eng_name = cap.engine
        except PlanViolation as e:
            err = f"a simulation reached a plan that breaks the engine's rules: {e}"
    return CheckPolicyResult(name, spec, inv, wc, label, eng_name, cap, err)
