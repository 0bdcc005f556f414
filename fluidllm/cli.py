"""The ``fluidllm`` command line. Every command takes ``--json`` (one JSON object on stdout).

Bad input prints one line ``error: FIELD = VALUE: what is allowed`` on stderr and exits 2.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Any, Callable

from ._stdio import json_stdout
from .errors import ModelError

__all__ = ["main"]


def _emit(obj: Any, as_json: bool, text: Callable[[], str]) -> None:
    if as_json:
        sys.stdout.write(json.dumps(obj, allow_nan=False) + "\n")
    else:
        sys.stdout.write(text() + "\n")


def _load(path: str, load: float | None):
    from .model.io import load_model

    m = load_model(path)
    if load is not None:
        m = m.scaled(load)
    return m


def cmd_capacity(a: argparse.Namespace) -> int:
    from .capacity import capacity

    m = _load(a.model, a.load)
    c = capacity(m, solver=a.solver)
    d = c.to_dict()
    pc = None
    if a.policy is not None:
        from .capacity.policy import policy_capacity

        pc = policy_capacity(m, a.policy, engine=a.engine, replications=a.replications, seed=a.seed,
                             precision=a.precision, progress=not a.quiet)
        d["policy"] = pc.to_dict()
    iv = None
    if a.profile_fit:
        from .calibrate.uncertainty import interval_report, interval_text

        iv = interval_report(a, m)
        d["interval"] = iv
    _emit(d, a.json, lambda: f"== {a.model}\n" + c.table() + ("" if pc is None else "\n" + pc.line())
          + ("" if iv is None else "\n" + interval_text(iv)))
    return 0


def cmd_region(a: argparse.Namespace) -> int:
    from .capacity import demand_of, token_region

    m = _load(a.model, None)
    names = [a.engine] if a.engine else list(m.engines)
    out = {}
    for n in names:
        if n not in m.engines:
            raise ModelError("--engine", n, f"must be one of {sorted(m.engines)}")
        ctx = demand_of(m.workloads_on(n)).decode_context
        out[n] = token_region(m.engines[n], ctx)

    def text() -> str:
        lines = []
        for n, r in out.items():
            lines.append(f"engine {n}: (prefill, decode) token-rate region, tokens/s")
            for v, c in zip(r.vertices_per_s, r.vertex_configurations):
                if not v.any():
                    continue
                lines.append(f"  vertex ({v[0]:10.3f}, {v[1]:10.3f})   batch of {c[0]} prefill + {c[1]} decode tokens")
            for A, b in zip(r.A, r.b_per_s):
                lines.append(f"  facet {A[0]:.6f}·λp + {A[1]:.6f}·λd ≤ {b:.4f}")
        return "\n".join(lines)

    _emit({n: r.to_dict() for n, r in out.items()}, a.json, text)
    return 0


def cmd_calibrate(a: argparse.Namespace) -> int:
    from .calibrate import fit_profile

    if a.measure_profile:
        from .calibrate.profile_cli import run_profile

        return run_profile(a)
    if not a.profile:
        raise ModelError("profile", None, "give a profile CSV to fit, or --profile to measure one")

    scen = a.scenario.split(",") if a.scenario else None
    fams = a.family.split(",") if a.family else None
    res = fit_profile(a.profile, scenario=scen, families=fams, n_boot=a.n_boot, seed=a.seed,
                      max_tokens=a.max_tokens)
    if a.out:
        Path(a.out).write_text(res.to_toml())
    _emit(res.to_dict(), a.json, lambda: res.table() + (f"\nwrote {a.out}" if a.out else "\n\n" + res.to_toml()))
    return 0


def cmd_presets(a: argparse.Namespace) -> int:
    from .presets import PRESETS

    def text() -> str:
        lines = []
        for name, rec in PRESETS.items():
            model = ", ".join(f"{k} = {v}" for k, v in rec["model"].items())
            lines.append(f"{name}\n  {model}\n  source: {rec['source']}")
        return "\n".join(lines)

    _emit(PRESETS, a.json, text)
    return 0


def _sim_model(a: argparse.Namespace):
    """The model of ``a.model`` with ``--policy`` applied, the engine name to simulate, and the load."""
    from .errors import finite_number
    from .model.io import load_model
    from .model.policy import PolicySpec

    load = 1.0 if a.load is None else finite_number(a.load, "--load", minimum=0, strict=True)
    m = load_model(a.model)
    engine = a.engine
    if engine is not None and engine not in m.engines:
        raise ModelError("--engine", engine, f"must be one of {sorted(m.engines)}")
    if a.policy is not None:
        spec = PolicySpec(a.policy)
        if engine is None:
            if len(m.engines) != 1:
                raise ModelError("--engine", None, f"must name the engine whose policy --policy replaces; "
                                 f"this model has engines {sorted(m.engines)}")
            engine = next(iter(m.engines))
        m = m.with_engine(engine, policy=spec)
    return m, engine, load


def _network_only(a: argparse.Namespace, extra: tuple = ()) -> None:
    """Reject the single-engine options on a network model."""
    for opt, val, ok in (("--policy", a.policy, None), ("--engine", a.engine, None),
                         ("--backend", a.backend, "numpy"), *extra):
        if val != ok:
            raise ModelError(opt, val, "does not apply to a network model (set each engine's policy in the "
                             "file; the network is simulated by the reference simulator, all engines)")


def cmd_simulate(a: argparse.Namespace) -> int:
    import os

    from .errors import finite_number
    from .model.io import load_model
    from .model.network import NetworkModel
    from .sim.simulate import simulate

    if isinstance(load_model(a.model), NetworkModel):
        from .sim.network_simulate import simulate_network

        _network_only(a)
        load = 1.0 if a.load is None else finite_number(a.load, "--load", minimum=0, strict=True)
        nres = simulate_network(load_model(a.model), replications=8 if a.replications is None else a.replications,
                                horizon_s=a.horizon_s, seed=a.seed, load=load, workers=min(2, os.cpu_count() or 1))
        _emit(nres.to_dict(series=a.series), a.json, nres.table)
        return 0
    m, engine, load = _sim_model(a)
    res = simulate(m, replications=16 if a.replications is None else a.replications,
                   horizon_s=60.0 if a.horizon_s is None else a.horizon_s, seed=a.seed, load=load, engine=engine,
                   backend=a.backend)
    _emit(res.to_dict(series=a.series), a.json, res.table)
    return 0


def _parse_boundary(text: str) -> tuple[float, float]:
    from .errors import finite_number

    parts = text.split(":")
    if len(parts) != 2:
        raise ModelError("--boundary", text, "must be LO:HI, two loads with 0 < LO < HI (e.g. 0.8:1.6)")
    try:
        lo, hi = float(parts[0]), float(parts[1])
    except ValueError:
        raise ModelError("--boundary", text, "must be LO:HI, two numbers with 0 < LO < HI (e.g. 0.8:1.6)") from None
    lo = finite_number(lo, "--boundary LO", minimum=0, strict=True)
    hi = finite_number(hi, "--boundary HI", minimum=0, strict=True)
    if not hi > lo:
        raise ModelError("--boundary", text, "must be LO:HI with 0 < LO < HI")
    return lo, hi


def _boundary_text(b: dict) -> str:
    def g(x):
        return "none found" if x is None else f"{x:g}"

    lines = [f"stability boundary of {b['policy']} on {b['engine']} (loads multiply the file's arrival rates; "
             f"{b['replications']} replications x {b['horizon_s']:g} s per load):",
             f"  largest STABLE load {g(b['stable_load'])}, smallest UNSTABLE load above it {g(b['unstable_load'])}"]
    for k, row in enumerate(b["rounds"], 1):
        lines.append(f"  round {k}: " + ", ".join(f"{r['load']:.4g} {r['verdict']}" for r in row))
    return "\n".join(lines)


def cmd_stability(a: argparse.Namespace) -> int:
    from .sim.stability import stability, stability_boundary
    from .model.io import load_model
    from .model.network import NetworkModel

    if isinstance(load_model(a.model), NetworkModel):
        # a network: the reference network simulator (fluidllm.sim.network_stability)
        from .errors import finite_number
        from .sim.network_stability import network_stability

        _network_only(a, (("--boundary", a.boundary, None),))
        load = 1.0 if a.load is None else finite_number(a.load, "--load", minimum=0, strict=True)
        nres = network_stability(load_model(a.model), load=load, replications=a.replications,
                                 horizon_s=a.horizon_s, seed=a.seed, alpha=a.alpha, tolerance=a.tolerance)
        how = "given by --horizon-s" if a.horizon_s is not None else "chosen from the network's time scales"
        _emit(nres.to_dict(), a.json, lambda: "\n".join(
            [nres.line(), f"  {nres.reason}",
             f"  horizon {', '.join(f'{h:g}' for h in nres.horizons_s)} s ({how}; INCONCLUSIVE doubles it once)"]))
        return 0

    bounds = _parse_boundary(a.boundary) if a.boundary is not None else None
    m, engine, load = _sim_model(a)
    res = stability(m, load=load, replications=a.replications, horizon_s=a.horizon_s, seed=a.seed, engine=engine,
                    backend=a.backend, alpha=a.alpha, tolerance=a.tolerance)
    d = res.to_dict()
    if bounds is not None:
        d["boundary"] = stability_boundary(m, lo=bounds[0], hi=bounds[1], replications=a.replications,
                                           horizon_s=a.horizon_s, seed=a.seed, engine=engine, backend=a.backend,
                                           alpha=a.alpha, tolerance=a.tolerance).to_dict()

    def text() -> str:
        hs = ", ".join(f"{h:g}" for h in res.horizons_s)
        how = "given by --horizon-s" if a.horizon_s is not None else "chosen from the model's time scales"
        out = [res.line(), f"  {res.reason}", f"  horizon {hs} s ({how}; INCONCLUSIVE doubles it)"]
        if "boundary" in d:
            out.append(_boundary_text(d["boundary"]))
        return "\n".join(out)

    _emit(d, a.json, text)
    return 0


def _sim_options(s: argparse.ArgumentParser, horizon_default: float | None, horizon_help: str | None = None,
                 replications_help: str | None = None) -> None:
    s.add_argument("model", help="model TOML file")
    s.add_argument("--load", type=float, help="multiply every arrival rate by this factor (default 1)")
    s.add_argument("--policy", help="replace the simulated engine's policy by this one (default flags)")
    s.add_argument("--engine", help="the engine to simulate (needed when the model has several)")
    if replications_help is None:
        s.add_argument("--replications", type=int, default=16, help="independent runs, simulated together (default 16)")
    else:
        s.add_argument("--replications", type=int, default=None, help=replications_help)
    if horizon_default is None:
        s.add_argument("--horizon-s", type=float, default=None,
                       help=horizon_help or "simulated seconds per run (default: chosen from the model's time scales)")
    else:
        s.add_argument("--horizon-s", type=float, default=horizon_default,
                       help=f"simulated seconds per run (default {horizon_default:g})")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--backend", choices=["numpy", "cupy", "torch"], default="numpy", help="array backend")
    s.add_argument("--json", action="store_true", help="print one JSON object")


def cmd_check(a: argparse.Namespace) -> int:
    import proofs_checks

    results = proofs_checks.run_all(a.only or None)
    obj = {"passed": sum(r.verdict == "PASS" for r in results), "failed": sum(not r.ok for r in results),
           "pending": sum(r.pending for r in results),
           "checks": [{"name": r.name, "claim": r.claim, "source": r.source, "method": r.method, "ok": r.ok,
                       "verdict": r.verdict, "detail": r.detail, "seconds": r.seconds} for r in results]}
    _emit(obj, a.json, lambda: proofs_checks.table(results))
    return 0 if obj["failed"] == 0 else 1


def cmd_check_policy(a: argparse.Namespace) -> int:
    """Exit 0: rules hold and the work-conservation claim agrees; 1: a finding (an invariant fails or
    the claim is wrong; the capacity is still reported); 2: bad input (ModelError, one line)."""
    from .testing.report import check_policy

    if a.max_examples is not None and a.max_examples < 0:
        raise ModelError("--max-examples", a.max_examples, "must be an integer >= 0")
    kw = {} if a.max_examples is None else {"max_examples": a.max_examples}
    res = check_policy(a.target, a.model, engine=a.engine, replications=a.replications, seed=a.seed,
                       capacity=not a.no_capacity, horizon_s=a.horizon_s, **kw)
    _emit(res.to_dict(), a.json, res.text)
    return res.exit_code


def _names(text: str | None, field: str) -> list[str] | None:
    if text is None:
        return None
    if text.strip() == "none":
        return []
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise ModelError(field, text, "must be comma-separated names, or 'none'")
    return names


def cmd_paper(a: argparse.Namespace) -> int:
    try:
        from .report.paper import check_out_dir, write_report
    except ImportError as e:
        raise ModelError("matplotlib", None, f"must be installed for `fluidllm paper` ({e}); "
                         "pip install matplotlib") from None

    check_out_dir(a.out, "--out")
    rep = write_report(a.out, quick=a.quick, workers=a.workers, figures=_names(a.figures, "--figures"),
                       only_checks=_names(a.checks, "--checks"), policy_table=not a.no_policy_table)
    _emit(rep.to_dict(), a.json, rep.summary)
    return 0 if rep.ok else 1


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fluidllm", description="Capacity of LLM inference engines and agent networks.")
    p.add_argument("--version", action="version", version=f"fluidllm {__import__('fluidllm').__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("capacity", help="capacity region, max load, binding limit of a model")
    s.add_argument("model", help="model TOML file")
    s.add_argument("--load", type=float, help="multiply every arrival rate by this factor first")
    s.add_argument("--solver", help="cvxpy LP solver (default HIGHS, then CLARABEL)")
    s.add_argument("--policy", help="also the capacity of this policy (analytic where theory gives it, "
                                    "else the simulator's stability boundary) and its loss")
    s.add_argument("--engine", help="the engine for --policy (needed when the model has several)")
    s.add_argument("--replications", type=int, default=8,
                   help="fewest replications per load for a simulated bracket (the search adds more as its noise needs)")
    s.add_argument("--precision", type=float, default=0.02,
                   help="width of a simulated bracket as a fraction of its midpoint (default 0.02)")
    s.add_argument("--quiet", action="store_true", help="no progress lines on stderr for a simulated bracket")
    s.add_argument("--seed", type=int, default=0, help="seed for a simulated boundary")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    from .calibrate.uncertainty import add_interval_arguments

    add_interval_arguments(s)
    s.set_defaults(func=cmd_capacity)

    s = sub.add_parser("check", help="run the executable checks of the theory (proofs_checks); exit 1 on a failure")
    s.add_argument("only", nargs="*", help="names of checks to run (default: all)")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.set_defaults(func=cmd_check)

    s = sub.add_parser("paper", help="reproduce the paper's claims (one engine, networks): checks, figures, capacity table "
                                     "-> OUT/README.md + PNGs; exit 1 on a failed check")
    s.add_argument("--out", default="report", help="folder to write (default ./report; created if missing)")
    s.add_argument("--quick", action="store_true",
                   help="small simulations for the figures and the table (the checks run in full; about 1 minute)")
    s.add_argument("--workers", type=int, default=2, help="processes for the checks and simulations (default 2)")
    s.add_argument("--figures", help="comma-separated figure names to draw, or 'none' (default: all)")
    s.add_argument("--checks", help="comma-separated proofs_checks names to run, or 'none' (default: all)")
    s.add_argument("--no-policy-table", action="store_true", help="skip the per-policy capacity table")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.set_defaults(func=cmd_paper)

    s = sub.add_parser("region", help="vertices and facets of each engine's (prefill, decode) token-rate region")
    s.add_argument("model")
    s.add_argument("--engine", help="one engine (default: all)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_region)

    s = sub.add_parser("calibrate", help="fit batch-time families to a GPU profile CSV")
    s.add_argument("profile", nargs="?", help="profile CSV to fit (tokens_in_batch, iteration_ms, ...); omit with --profile")
    s.add_argument("--scenario", help="keep only these scenario rows (comma separated)")
    s.add_argument("--family", help="fit only these families (comma separated)")
    s.add_argument("--max-tokens", type=int, help="keep only rows with tokens_in_batch <= this")
    s.add_argument("--n-boot", type=int, default=200, help="bootstrap resamples for the intervals")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", help="with a CSV: write the chosen model as TOML here; with --profile: the profile CSV")
    s.add_argument("--json", action="store_true")
    from .calibrate.profile_cli import add_profile_arguments

    add_profile_arguments(s)
    s.set_defaults(func=cmd_calibrate)

    s = sub.add_parser("simulate", help="replicated stochastic simulation of one engine or of a network: "
                                        "throughput, latencies")
    _sim_options(s, None, horizon_help="simulated seconds per run (default 60 for one engine; for a network "
                                       "chosen from its time scales)",
                 replications_help="independent runs (default 16 for one engine, simulated together; 8 for a "
                                   "network)")
    s.add_argument("--series", action="store_true", help="with --json: add the time series")
    s.set_defaults(func=cmd_simulate)

    s = sub.add_parser("stability", help="STABLE / UNSTABLE / INCONCLUSIVE verdict at a load, fluid oracle beside")
    _sim_options(s, None)
    s.add_argument("--alpha", type=float, default=0.01, help="error rate of a wrong definite verdict (default 0.01)")
    s.add_argument("--tolerance", type=float, default=0.02,
                   help="backlog growth below this fraction of the offered tokens/s counts as none (default 0.02)")
    s.add_argument("--boundary", metavar="LO:HI",
                   help="also bracket the largest stable load between LO and HI (multiples of the file's rates)")
    s.set_defaults(func=cmd_stability)

    s = sub.add_parser("check-policy", help="judge a scheduling policy: engine rules, work conservation "
                                            "(minimal counterexample), capacity vs the work-conserving bound",
                       epilog="exit status: 0 the rules hold and the work_conserving claim (if any) agrees; 1 a "
                              "finding (an invariant fails or the claim is wrong; the capacity is still reported); "
                              "2 bad input")
    s.add_argument("target", help="file.py:Class, module:Class, or a built-in policy name")
    s.add_argument("--model", help="model TOML file: the policy is judged on its engine's states (budget, caps, "
                                   "KV limit, length laws) and its capacity computed there (default: judged on "
                                   "every engine up to real scale, capacity on a small built-in model)")
    s.add_argument("--engine", help="the engine whose policy is replaced (needed when the model has several)")
    s.add_argument("--replications", type=int, default=8, help="replications per load for a simulated boundary")
    s.add_argument("--horizon-s", type=float, default=None,
                   help="simulated seconds per run (default: chosen from the model's time scales)")
    s.add_argument("--seed", type=int, default=0, help="seed of the state searches and the simulations")
    s.add_argument("--max-examples", type=int, default=None,
                   help="random states of the work-conservation search, besides the structured and exhaustive "
                        "ones (default 400; the invariants get a third)")
    s.add_argument("--no-capacity", action="store_true", help="skip the capacity (no simulation)")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.set_defaults(func=cmd_check_policy)

    from .capacity.planning_cli import add_parser as _add_plan

    _add_plan(sub)
    from .report.results_cli import add_parser as _add_report
    from .sweep.cli import add_parser as _add_sweep

    _add_sweep(sub)
    _add_report(sub)

    s = sub.add_parser("presets", help="list the shipped batch-time presets with their sources")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_presets)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``fluidllm`` console script; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        with json_stdout() if getattr(args, "json", False) else contextlib.nullcontext():
            return int(args.func(args))
    except ModelError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except NotImplementedError as e:  # a feature the simulator does not run yet (e.g. the priority policy)
        if not str(e):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
