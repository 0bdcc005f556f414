"""``fluidllm sweep SWEEP.toml``: run (or resume) a sweep (:mod:`fluidllm.sweep`).

``add_parser(subparsers)`` registers the command; ``main(args)`` runs it and returns 0; :func:`run`
is the standalone entry (``python -m fluidllm.sweep``) that prints a ModelError and returns 2.

Progress bar: on stderr when stderr is a terminal, off otherwise and always off under ``--json``
(a log file or CI gets no bar lines); ``--progress`` forces it on (even with ``--json``: it writes to
stderr only), ``--no-progress`` forces it off.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
from typing import Any

from .._stdio import json_stdout
from .runner import ENV_SCHEDULER, run_sweep
from .spec import load_sweep

__all__ = ["add_parser", "main", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``sweep`` to an ``argparse`` sub-parsers object; returns the new parser."""
    s = subparsers.add_parser(
        "sweep", help="run a parameter sweep (grid, zipped lists, random draws) of capacity / simulate / stability / "
                      "fluid analyses; finished points are stored at once, so running it again resumes")
    s.add_argument("sweep", help="sweep TOML file")
    s.add_argument("--results", help="results folder (default: <stem>.results/ next to the sweep file)")
    s.add_argument("--scheduler", help=f"Dask scheduler address tcp://HOST:PORT (default: ${ENV_SCHEDULER}, "
                                       "else local worker processes; 'local' forces local)")
    s.add_argument("--workers", type=int, help="local worker processes (default: CPU count; 1 = in this process)")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--progress", dest="progress", action="store_true", default=None,
                   help="show the progress bar on stderr (default: only when stderr is a terminal and not --json)")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="never show the progress bar")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.set_defaults(func=main)
    return s


def main(args: argparse.Namespace) -> int:
    """Run ``fluidllm sweep`` on parsed ``args``. Raises ModelError on bad input."""
    progress = args.progress
    if progress is None and args.json:
        progress = False
    with json_stdout() if args.json else contextlib.nullcontext():
        spec = load_sweep(args.sweep)
        res = run_sweep(spec, results=args.results, scheduler=args.scheduler, workers=args.workers,
                        progress=progress)
    if args.json:
        sys.stdout.write(json.dumps(res.to_dict(), allow_nan=False) + "\n")
    else:
        print(res.table())
    return 0


def run(argv: list[str] | None = None) -> int:
    """``fluidllm sweep ARGV`` (tests, ``python -m``): the ``fluidllm`` command's own parsing and errors."""
    from ..cli import main as _main

    return _main(["sweep", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run())
