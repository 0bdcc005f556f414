"""``fluidllm plan TRACE``: the fewest engines of one profile for a trace (:mod:`fluidllm.capacity.planning`).

``add_parser(subparsers)`` registers the command on ``fluidllm``'s sub-parsers; ``main(args)`` runs it
and returns the exit status (0; with ``--confirm``, 1 when the simulation does not confirm the plan).
Bad input raises :class:`~fluidllm.errors.ModelError`, which ``fluidllm``'s ``main`` prints and turns
into exit 2; :func:`run` does the same for a standalone call (tests, ``python -m``).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
from typing import Any

from .._stdio import json_stdout
from ..errors import ModelError
from ..sim.network_stability import SIMULATORS
from .planning import LENGTHS, confirm_plan, plan_engines

__all__ = ["add_parser", "main", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``plan`` to an ``argparse`` sub-parsers object; returns the new parser."""
    s = subparsers.add_parser(
        "plan", help="fewest engines of one GPU profile for a trace at a rate scale (LP capacity of K engines "
                     "under JSQ, Prop. 3), optionally confirmed by simulating K and K-1 engines")
    s.add_argument("trace", help="trace file (Azure CSV, Mooncake JSONL, fluidllm CSV) or a vendored dataset name")
    g = s.add_mutually_exclusive_group(required=True)
    g.add_argument("--engine", help="engine TOML file with [engines.NAME] (one engine, or pick with --engine-name)")
    g.add_argument("--preset", help="batch-time preset name (see `fluidllm presets`), with --token-budget")
    s.add_argument("--engine-name", help="which [engines.NAME] of --engine when the file holds several")
    s.add_argument("--token-budget", type=int, default=512, help="b_max for --preset (default 512)")
    s.add_argument("--policy", help="replace the engine's scheduling policy (default: the engine's, sarathi for a preset)")
    s.add_argument("--rate-scale", type=float, default=1.0, help="multiply the trace's rate (replay speed-up; default 1)")
    s.add_argument("--utilisation", type=float, default=0.8, help="target load per engine, in (0, 1] (default 0.8)")
    s.add_argument("--lengths", choices=LENGTHS, default="empirical",
                   help="length law: the trace's pairs (default) or laws fitted by fit_trace")
    s.add_argument("--routing", default="jsq-tokens", help="jsq-tokens (default) or jsq-requests")
    s.add_argument("--confirm", action="store_true", help="simulate K and K-1 engines replaying the trace")
    s.add_argument("--horizon-s", type=float, help="simulated seconds per replication for --confirm")
    s.add_argument("--replications", type=int, default=16, help="replications for --confirm (default 16)")
    s.add_argument("--simulator", default="auto", choices=SIMULATORS,
                   help="auto (vectorized network core where it runs), core or reference, for --confirm")
    s.add_argument("--workers", type=int, default=1, help="processes for --confirm's replications (default 1)")
    s.add_argument("--seed", type=int, default=0, help="seed for --confirm (default 0)")
    s.add_argument("--solver", help="cvxpy LP solver (default HIGHS, then CLARABEL)")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.set_defaults(func=main)
    return s


def main(args: argparse.Namespace) -> int:
    """Run ``fluidllm plan`` on parsed ``args``. Raises ModelError on bad input."""
    with json_stdout() if args.json else contextlib.nullcontext():
        out, text, status = _compute(args)
    if args.json:
        sys.stdout.write(json.dumps(out, allow_nan=False) + "\n")
    else:
        print(text)
    return status


def _compute(args: argparse.Namespace) -> tuple[dict[str, Any], str, int]:
    if args.horizon_s is not None and not args.confirm:
        raise ModelError("--horizon-s", args.horizon_s, "only applies with --confirm")
    plan = plan_engines(args.trace, args.engine, preset=args.preset, token_budget=args.token_budget,
                        utilisation=args.utilisation, rate_scale=args.rate_scale, policy=args.policy,
                        lengths=args.lengths, routing=args.routing, solver=args.solver,
                        engine_name=args.engine_name)
    out: dict[str, Any] = plan.to_dict()
    text = plan.table()
    status = 0
    if args.confirm:
        c = confirm_plan(plan, args.horizon_s, args.replications, args.seed, simulator=args.simulator,
                         workers=args.workers)
        out["confirm"] = c.to_dict()
        text += "\n\n" + c.table()
        status = 0 if c.confirmed else 1
    return out, text, status


def run(argv: list[str] | None = None) -> int:
    """``fluidllm plan ARGV`` (tests, ``python -m``): the ``fluidllm`` command's own parsing and errors."""
    from ..cli import main as _main

    return _main(["plan", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run())
