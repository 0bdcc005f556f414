"""The ``fluidllm`` command line. Every command takes ``--json`` (one JSON object on stdout).

Bad input prints one line ``error: FIELD = VALUE: what is allowed`` on stderr and exits 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable

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
    _emit(c.to_dict(), a.json, lambda: f"== {a.model}\n" + c.table())
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


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fluidllm", description="Capacity of LLM inference engines and agent networks.")
    p.add_argument("--version", action="version", version=f"fluidllm {__import__('fluidllm').__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("capacity", help="capacity region, max load, binding limit of a model")
    s.add_argument("model", help="model TOML file")
    s.add_argument("--load", type=float, help="multiply every arrival rate by this factor first")
    s.add_argument("--solver", help="cvxpy LP solver (default HIGHS, then CLARABEL)")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.set_defaults(func=cmd_capacity)

    s = sub.add_parser("region", help="vertices and facets of each engine's (prefill, decode) token-rate region")
    s.add_argument("model")
    s.add_argument("--engine", help="one engine (default: all)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_region)

    s = sub.add_parser("calibrate", help="fit batch-time families to a GPU profile CSV")
    s.add_argument("profile", help="profile CSV (tokens_in_batch, iteration_ms, ...)")
    s.add_argument("--scenario", help="keep only these scenario rows (comma separated)")
    s.add_argument("--family", help="fit only these families (comma separated)")
    s.add_argument("--max-tokens", type=int, help="keep only rows with tokens_in_batch <= this")
    s.add_argument("--n-boot", type=int, default=200, help="bootstrap resamples for the intervals")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", help="write the chosen model as TOML here")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_calibrate)

    s = sub.add_parser("presets", help="list the shipped batch-time presets with their sources")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_presets)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``fluidllm`` console script; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ModelError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
