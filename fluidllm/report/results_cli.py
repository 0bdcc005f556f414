"""``fluidllm report RESULTS``: the HTML page of a sweep results folder (:mod:`fluidllm.report.results_page`).

``add_parser(subparsers)`` registers the command; ``main(args)`` writes the page and returns 0; bad
input (a missing or empty folder) raises :class:`~fluidllm.errors.ModelError`, which ``fluidllm``'s
``main`` prints and turns into exit 2; :func:`run` does the same standalone (tests, ``python -m``).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
from typing import Any

from .._stdio import json_stdout

__all__ = ["add_parser", "main", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``report`` to an ``argparse`` sub-parsers object; returns the new parser."""
    s = subparsers.add_parser(
        "report", help="one self-contained HTML page for a sweep results folder: stability map (policy x load), "
                       "capacity and capacity-region plots, latency percentiles, a table of every point")
    s.add_argument("results", help="sweep results folder (written by `fluidllm sweep`)")
    s.add_argument("--out", help="folder to write index.html and the PNGs to (default: <results>/report)")
    s.add_argument("--title", help="page title")
    s.add_argument("--json", action="store_true", help="print one JSON object (html, figures, points, ...)")
    s.set_defaults(func=main)
    return s


def main(args: argparse.Namespace) -> int:
    """Run ``fluidllm report`` on parsed ``args``. Raises ModelError on bad input."""
    from .results_page import render_results

    with json_stdout() if args.json else contextlib.nullcontext():
        page = render_results(args.results, args.out, title=args.title)
    if args.json:
        sys.stdout.write(json.dumps(page.to_dict(), allow_nan=False) + "\n")
    else:
        print(page.summary())
    return 0


def run(argv: list[str] | None = None) -> int:
    """``fluidllm report ARGV`` (tests, ``python -m``): the ``fluidllm`` command's own parsing and errors."""
    from ..cli import main as _main

    return _main(["report", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run())
