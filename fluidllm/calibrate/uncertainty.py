"""Calibration uncertainty carried into capacity: bootstrap intervals and batch-time sensitivity.

* :func:`bootstrap_fits` refits one batch-time family to B nonparametric bootstrap resamples of a
  profile's rows (rows drawn with replacement, the knee searched again each time) with the public
  :func:`fluidllm.calibrate.fit_family` — :func:`fluidllm.calibrate.fit_profile` reports parameter
  intervals but keeps no per-replicate models, and capacity is a nonlinear function of all
  parameters jointly, so the replicates are needed, not the marginal intervals.
* :func:`capacity_interval` recomputes capacity (``max_scale`` and each engine's μ* =
  max_{n ≤ b_max} n/t(n), tokens/s; Li, Dai, Peng Thm 2 / the configuration LP) with every replicate's
  batch time on the calibrated engine, and reports the percentile interval at ``level``.
* :func:`capacity_sensitivity` scales the batch time by 1 ± ``rel_error`` (all time coefficients, or one
  of them) and reports each policy's capacity (:func:`fluidllm.capacity.policy.policy_capacity`).
  Theory: scaling every coefficient by s scales every batch time by s, so every batch-level rate — the
  LP scale and the static-batching renewal rate alike — scales by exactly 1/s.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import ModelError
from ..model import batchtime as B
from .fit import CalibrationResult, FamilyFit, fit_family, fit_profile
from .profile import Profile, read_profile

__all__ = ["BootstrapFits", "bootstrap_fits", "CapacityInterval", "capacity_interval", "scaled_batch_time",
           "SensitivityRow", "Sensitivity", "capacity_sensitivity", "add_interval_arguments", "interval_report",
           "interval_text", "TIME_COEFFICIENTS"]

#: the batch-time coefficients in ms that :func:`scaled_batch_time` can scale.
TIME_COEFFICIENTS = ("c_ms", "a_ms", "decode_ms", "kv_ms", "prefill_sq_ms")
_BOOT_FAMILIES = ("constant", "affine", "piecewise-linear", "staircase", "two-feature")


def _f(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


# ----------------------------------------------------------------------------------- bootstrap


@dataclass(frozen=True, eq=False)
class BootstrapFits:
    """A family fitted to a profile (``point``) and to ``n_boot`` bootstrap resamples of its rows.

    ``replicates`` holds the batch-time models of the resamples whose fit succeeded; ``failed`` counts
    the others (e.g. a two-feature resample with no positive intercept)."""

    family: str
    point: FamilyFit
    replicates: tuple[B.BatchTime, ...]
    failed: int
    n_rows: int
    n_boot: int
    seed: int
    profile: str
    scenario: tuple[str, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"family": self.family, "point": self.point.to_dict(), "n_boot": self.n_boot,
                "replicates_ok": len(self.replicates), "failed": self.failed, "n_rows": self.n_rows,
                "seed": self.seed, "profile": self.profile,
                "scenario": None if self.scenario is None else list(self.scenario)}


def _profile_arrays(prof: Profile) -> tuple[np.ndarray, ...]:
    P, D, K = prof.composition()
    has = "decode_tokens" in prof.columns or "prefill_tokens" in prof.columns
    return prof.tokens, prof.times_ms, (P if has else None), (D if has else None), (K if has else None)


def bootstrap_fits(profile: str | Path | Profile | CalibrationResult, family: str | None = None, *,
                   n_boot: int = 200, seed: int = 0, scenario: str | Sequence[str] | None = None,
                   max_tokens: int | None = None) -> BootstrapFits:
    """Refit ``family`` to ``n_boot`` resamples (with replacement) of the profile's rows.

    Args:
        profile: a profile CSV, a read :class:`Profile`, or a :class:`CalibrationResult` (its profile,
            scenario, token cut and chosen family are reused).
        family: ``constant``, ``affine``, ``piecewise-linear``, ``staircase`` or ``two-feature``
            (default: the family :func:`fit_profile` chooses by BIC). The table is an interpolant and
            has no bootstrap here.
        n_boot: resamples (>= 1); seed: their seed (same seed, same replicates).
        scenario, max_tokens: row selection as in :func:`fit_profile`.

    Raises:
        ModelError: the table family, bad counts, no rows, or no resample could be fitted.
    """
    if isinstance(profile, CalibrationResult):
        scenario = profile.scenario if scenario is None else scenario
        max_tokens = profile.max_tokens if max_tokens is None else max_tokens
        family = family or profile.chosen.family
        profile = profile.profile
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise ModelError("n_boot", n_boot, "must be an integer >= 1")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ModelError("seed", seed, "must be an integer >= 0")
    scen = None if scenario is None else ([scenario] if isinstance(scenario, str) else list(scenario))
    if isinstance(profile, Profile):
        prof = profile
        if scen is not None:
            keep = np.isin(prof.scenario, scen)
            prof = Profile({k: v[keep] for k, v in prof.columns.items()}, prof.scenario[keep], prof.path)
    else:
        prof = read_profile(profile, scen)
    if max_tokens is not None:
        keep = prof.tokens <= max_tokens
        prof = Profile({k: v[keep] for k, v in prof.columns.items()}, prof.scenario[keep], prof.path)
    if len(prof) == 0:
        raise ModelError("profile", prof.path, "has no rows after the selection")
    if family is None:
        family = fit_profile(prof, n_boot=0).chosen.family
    if family not in _BOOT_FAMILIES:
        raise ModelError("family", family, f"must be one of {list(_BOOT_FAMILIES)} (the table is an interpolant: "
                         "no bootstrap capacity)")
    n, t, P, D, K = _profile_arrays(prof)
    point = fit_family(family, n, t, P, D, K, n_boot=0)
    rng = np.random.default_rng(int(seed))
    m = n.size
    reps: list[B.BatchTime] = []
    failed = 0
    for _ in range(int(n_boot)):
        idx = rng.integers(0, m, size=m)
        sub = [None if a is None else a[idx] for a in (P, D, K)]
        try:
            reps.append(fit_family(family, n[idx], t[idx], *sub, n_boot=0).model)
        except ModelError:
            failed += 1
    if not reps:
        raise ModelError("bootstrap", f"{failed} of {n_boot} resamples failed", f"no {family} fit on any resample")
    return BootstrapFits(family, point, tuple(reps), failed, m, int(n_boot), int(seed), prof.path,
                         None if scen is None else tuple(scen))


# ----------------------------------------------------------------------------------- capacity


def _pick(model: Any, engine: str | None) -> str:
    from ..model.network import NetworkModel

    if isinstance(model, NetworkModel):
        raise ModelError("model", "network", "capacity_interval takes a single-engine-per-workload model "
                         "([engines.*] with [workloads.*])")
    if engine is None:
        if len(model.engines) != 1:
            raise ModelError("engine", None, f"must name the calibrated engine, one of {sorted(model.engines)}")
        return next(iter(model.engines))
    if engine not in model.engines:
        raise ModelError("engine", engine, f"must be one of {sorted(model.engines)}")
    return engine


def _engine_capacity(e: Any, workloads: list[Any], solver: str | None) -> tuple[float, float]:
    """(LP max_scale, μ* tokens/s) of one engine: the two numbers of ``engine_capacity`` that an interval
    needs, without its symbolic closed form (sympy is ~50 ms a call; the LP alone ~15 ms)."""
    from ..capacity import demand_of, solve_config_lp
    from ..capacity.rate import max_token_rate, max_token_rate_mixed

    dem = demand_of(workloads, kv=e.kv_capacity_tokens is not None)
    if e.batch_time.tokens_only and e.kv_capacity_tokens is None:
        rate = max_token_rate(e.batch_time, e.token_budget)
    else:
        rate = max_token_rate_mixed(e, dem.decode_context)
    lp = solve_config_lp(e, dem, solver=solver)
    return float(lp.max_scale), float(rate.tokens_per_s)


@dataclass(frozen=True, eq=False)
class CapacityInterval:
    """Capacity with a bootstrap percentile interval over the batch-time fit's replicates.

    ``max_scale`` / ``max_scale_interval``: the point value (fit to all rows) and (lo, hi) at ``level``;
    ``engines``: per engine ``{"max_token_rate_per_s": point, "interval": (lo, hi)}`` (tokens/s; engines
    other than ``engine`` are not recalibrated, so their interval is a point); ``samples``: each
    replicate's max_scale."""

    engine: str
    family: str
    level: float
    n_boot: int
    failed: int
    max_scale: float
    max_scale_interval: tuple[float, float]
    engines: dict[str, dict[str, Any]]
    samples: tuple[float, ...]
    profile: str
    n_rows: int

    @property
    def width(self) -> float:
        """hi − lo of max_scale's interval."""
        return self.max_scale_interval[1] - self.max_scale_interval[0]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: ``max_scale`` {point, lo, hi}, ``engines.NAME.max_token_rate_per_s`` {point, lo, hi}."""
        return {"engine": self.engine, "family": self.family, "level": self.level, "n_boot": self.n_boot,
                "failed": self.failed, "profile": self.profile, "n_rows": self.n_rows,
                "max_scale": {"point": _f(self.max_scale), "lo": _f(self.max_scale_interval[0]),
                              "hi": _f(self.max_scale_interval[1])},
                "engines": {k: {"max_token_rate_per_s": {"point": _f(v["max_token_rate_per_s"]),
                                                         "lo": _f(v["interval"][0]), "hi": _f(v["interval"][1])}}
                            for k, v in self.engines.items()}}

    def line(self) -> str:
        e = self.engines[self.engine]
        lo, hi = self.max_scale_interval
        return (f"{100 * self.level:g} % bootstrap interval ({self.family} fit, {self.n_boot} resamples of "
                f"{self.n_rows} rows): max_scale {self.max_scale:.4g} [{lo:.4g}, {hi:.4g}]; engine {self.engine} "
                f"mu* {e['max_token_rate_per_s']:.6g} [{e['interval'][0]:.6g}, {e['interval'][1]:.6g}] tokens/s")


def capacity_interval(model: Any, fit_or_boot: BootstrapFits | CalibrationResult | str | Path | Profile,
                      level: float = 0.95, *, engine: str | None = None, family: str | None = None,
                      n_boot: int = 200, seed: int = 0, scenario: str | Sequence[str] | None = None,
                      solver: str | None = None) -> CapacityInterval:
    """Capacity of ``model`` with engine ``engine``'s batch time replaced by each bootstrap replicate.

    Args:
        model: a :class:`~fluidllm.Model` (one or more engines, workloads on them).
        fit_or_boot: :class:`BootstrapFits`, or what :func:`bootstrap_fits` takes (it is then called
            with ``family``, ``n_boot``, ``seed``, ``scenario``).
        level: central percentile interval, in (0, 1).
        engine: the calibrated engine (default: the only one).

    Returns:
        :class:`CapacityInterval`; the point value uses the fit to all rows (not the model's own
        batch time), so it matches ``capacity(model with that fit)``.

    Raises:
        ModelError: bad level, unknown engine, a network model, fit errors (see :func:`bootstrap_fits`).
    """
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 < level < 1:
        raise ModelError("level", level, "must be a number in (0, 1), e.g. 0.95")
    name = _pick(model, engine)
    boot = fit_or_boot if isinstance(fit_or_boot, BootstrapFits) else bootstrap_fits(
        fit_or_boot, family, n_boot=n_boot, seed=seed, scenario=scenario)
    fixed: dict[str, tuple[float, float]] = {}
    for k, e in model.engines.items():
        if k != name:
            fixed[k] = _engine_capacity(e, model.workloads_on(k), solver)
    eng = model.engines[name]
    wl = model.workloads_on(name)

    def one(bt: B.BatchTime) -> tuple[float, float]:
        e2 = replace(eng, batch_time=bt)
        s, mu = _engine_capacity(e2, wl, solver)
        return min([s] + [v[0] for v in fixed.values()]), mu

    s0, mu0 = one(boot.point.model)
    res = np.array([one(bt) for bt in boot.replicates])
    q = [100 * (1 - level) / 2, 100 * (1 + level) / 2]
    s_lo, s_hi = (float(x) for x in np.percentile(res[:, 0], q))
    m_lo, m_hi = (float(x) for x in np.percentile(res[:, 1], q))
    engines = {k: {"max_token_rate_per_s": v[1], "interval": (v[1], v[1])} for k, v in fixed.items()}
    engines[name] = {"max_token_rate_per_s": mu0, "interval": (m_lo, m_hi)}
    return CapacityInterval(name, boot.family, float(level), boot.n_boot, boot.failed, s0, (s_lo, s_hi),
                            dict(sorted(engines.items())), tuple(float(x) for x in res[:, 0]), boot.profile,
                            boot.n_rows)


# ----------------------------------------------------------------------------------- sensitivity


def scaled_batch_time(bt: B.BatchTime, factor: float, component: str | None = None) -> B.BatchTime:
    """``bt`` with its time coefficients (or only ``component``, one of :data:`TIME_COEFFICIENTS`)
    multiplied by ``factor`` (> 0); a table's times are all multiplied. Knees (``b0``) are kept.

    Raises:
        ModelError: factor <= 0, a component the family does not have.
    """
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor > 0 or not math.isfinite(factor):
        raise ModelError("factor", factor, "must be a finite number > 0")
    if isinstance(bt, B.Table):
        if component is not None:
            raise ModelError("component", component, "a table has no coefficients: scale all times (None)")
        return B.Table(bt.tokens, bt.times_ms * factor)
    present = [c for c in TIME_COEFFICIENTS if hasattr(bt, c)]
    if component is not None and component not in present:
        raise ModelError("component", component, f"must be one of {present} for a {bt.kind} batch time")
    names = present if component is None else [component]
    changes: dict[str, Any] = {c: getattr(bt, c) * factor for c in names}
    if getattr(bt, "preset", None) is not None:
        changes["preset"] = None      # no longer the preset: report its coefficients
    return replace(bt, **changes)


@dataclass(frozen=True)
class SensitivityRow:
    """One policy: its capacity with the batch time × (1 − e), × 1 and × (1 + e)."""

    policy: str
    method: str
    max_scale: float
    max_scale_faster: float
    max_scale_slower: float

    def elasticity(self, rel_error: float) -> float:
        """−Δ ln(capacity) / Δ ln(batch-time scale) between × (1 − e) and × (1 + e): 1 when capacity ∝ 1/t."""
        if not (self.max_scale_slower > 0 and self.max_scale_faster > 0):
            return math.nan
        return -(math.log(self.max_scale_slower) - math.log(self.max_scale_faster)) / (
            math.log1p(rel_error) - math.log1p(-rel_error))

    def to_dict(self, rel_error: float) -> dict[str, Any]:
        el = self.elasticity(rel_error)
        return {"policy": self.policy, "method": self.method, "max_scale": _f(self.max_scale),
                "max_scale_faster": _f(self.max_scale_faster), "max_scale_slower": _f(self.max_scale_slower),
                "ratio_faster": _f(self.max_scale_faster / self.max_scale) if self.max_scale > 0 else None,
                "ratio_slower": _f(self.max_scale_slower / self.max_scale) if self.max_scale > 0 else None,
                "elasticity": _f(el)}


@dataclass(frozen=True)
class Sensitivity:
    """Each policy's capacity under a ± ``rel_error`` batch-time error (``component``: None = all)."""

    engine: str
    rel_error: float
    component: str | None
    rows: tuple[SensitivityRow, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"engine": self.engine, "rel_error": self.rel_error, "component": self.component,
                "rows": [r.to_dict(self.rel_error) for r in self.rows]}

    def row(self, policy: str) -> SensitivityRow:
        for r in self.rows:
            if r.policy == policy:
                return r
        raise ModelError("policy", policy, f"must be one of {[r.policy for r in self.rows]}")

    def markdown(self) -> str:
        e = 100 * self.rel_error
        what = "every coefficient" if self.component is None else self.component
        lines = [f"batch time ({what}) x (1 ± {e:g} %) on engine {self.engine}",
                 f"| policy | method | max_scale | x(1−{e:g} %) | x(1+{e:g} %) | elasticity |",
                 "|---|---|---:|---:|---:|---:|"]
        for r in self.rows:
            d = r.to_dict(self.rel_error)
            lines.append(f"| {r.policy} | {r.method} | {r.max_scale:.4g} | {r.max_scale_faster:.4g} "
                         f"({100 * (d['ratio_faster'] - 1):+.2f} %) | {r.max_scale_slower:.4g} "
                         f"({100 * (d['ratio_slower'] - 1):+.2f} %) | {d['elasticity']:.3f} |")
        return "\n".join(lines)


def capacity_sensitivity(model: Any, rel_error: float = 0.05, *, policies: Sequence[str] | None = None,
                         engine: str | None = None, component: str | None = None, replications: int = 8,
                         seed: int = 0) -> Sensitivity:
    """Each policy's capacity (:func:`~fluidllm.capacity.policy.policy_capacity`: analytic where theory
    gives it) with engine ``engine``'s batch time scaled by 1 − e, 1 and 1 + e (e = ``rel_error``).

    Args:
        policies: default the engine's own policy and ``fastertransformer``, ``orca``, ``sarathi`` (all
            analytic on the paper's model; ``vllm`` is simulated, hence slow).
        component: scale only this coefficient (``c_ms``, ``a_ms``, ...); None scales them all, and then
            every capacity scales by exactly 1/(1 ± e).

    Raises:
        ModelError: rel_error not in (0, 1), unknown engine, policy or component.
    """
    from ..capacity.policy import policy_capacity

    if isinstance(rel_error, bool) or not isinstance(rel_error, (int, float)) or not 0 < rel_error < 1:
        raise ModelError("rel_error", rel_error, "must be a number in (0, 1), e.g. 0.05")
    name = _pick(model, engine)
    eng = model.engines[name]
    if policies is None:
        policies = list(dict.fromkeys([eng.policy.label, "fastertransformer", "orca", "sarathi"]))
    variants = {f: model.with_engine(name, batch_time=scaled_batch_time(eng.batch_time, f, component))
                for f in (1 - rel_error, 1.0, 1 + rel_error)}
    rows = []
    for p in policies:
        pc = {f: policy_capacity(m, p, engine=name, replications=replications, seed=seed)
              for f, m in variants.items()}
        base = pc[1.0]
        rows.append(SensitivityRow(base.name, base.method, base.max_scale, pc[1 - rel_error].max_scale,
                                   pc[1 + rel_error].max_scale))
    return Sensitivity(name, float(rel_error), component, tuple(rows))


# ----------------------------------------------------------------------------------- CLI pieces


def add_interval_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--profile-fit PROFILE.csv``, ``--n-boot``, ``--level``, ``--profile-family``,
    ``--profile-scenario`` to the ``capacity`` sub-parser (its ``--engine`` and ``--seed`` are reused)."""
    g = parser.add_argument_group("calibration interval (--profile-fit)")
    g.add_argument("--profile-fit", help="profile CSV: bootstrap its batch-time fit and report capacity's interval "
                                         "(JSON key interval)")
    g.add_argument("--profile-family", help="family to bootstrap (default: the one fit_profile chooses by BIC)")
    g.add_argument("--profile-scenario", help="keep only these scenario rows of the profile (comma separated)")
    g.add_argument("--n-boot", type=int, default=200, help="bootstrap resamples (default 200)")
    g.add_argument("--level", type=float, default=0.95, help="interval level (default 0.95)")
    if "--engine" not in parser._option_string_actions:
        g.add_argument("--engine", help="the calibrated engine (default: the only one)")
    if "--seed" not in parser._option_string_actions:
        g.add_argument("--seed", type=int, default=0)
    return parser


def interval_report(args: argparse.Namespace, model: Any) -> dict[str, Any]:
    """The ``interval`` object for ``fluidllm capacity --profile-fit``: :meth:`CapacityInterval.to_dict`.

    Raises:
        ModelError: as :func:`capacity_interval`.
    """
    scen = args.profile_scenario.split(",") if getattr(args, "profile_scenario", None) else None
    ci = capacity_interval(model, args.profile_fit, args.level, engine=getattr(args, "engine", None),
                           family=getattr(args, "profile_family", None), n_boot=args.n_boot,
                           seed=getattr(args, "seed", 0) or 0, scenario=scen)
    return ci.to_dict()


def interval_text(d: dict[str, Any]) -> str:
    """One readable line from :func:`interval_report`'s dict."""
    ms = d["max_scale"]
    e = d["engines"][d["engine"]]["max_token_rate_per_s"]
    return (f"{100 * d['level']:g} % bootstrap interval ({d['family']} fit, {d['n_boot']} resamples of "
            f"{d['n_rows']} rows): max_scale {ms['point']:.4g} [{ms['lo']:.4g}, {ms['hi']:.4g}]; engine "
            f"{d['engine']} mu* {e['point']:.6g} [{e['lo']:.6g}, {e['hi']:.6g}] tokens/s")
