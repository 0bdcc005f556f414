"""``fluidllm calibrate --profile --out PROFILE.csv``: measure batch times with the GPU profiler.

``add_profile_arguments(parser)`` adds the profiler's options to the ``calibrate`` sub-parser (options it
already has — ``--out``, ``--seed``, ``--json``, ``--n-boot`` — are reused, not added twice);
``run_profile(args)`` measures, writes the CSV and (``--fit``) fits it with
:func:`fluidllm.calibrate.fit_profile`. :func:`run` is the same on its own parser (tests, ``python -m``).
Bad input raises :class:`~fluidllm.errors.ModelError` (exit 2 through ``fluidllm``'s ``main``).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

from .._stdio import json_stdout
from ..errors import ModelError
from .profiler import DTYPES, KV_LAYOUTS, SHAPES, profile_model

__all__ = ["add_profile_arguments", "run_profile", "run"]


def _has(parser: argparse.ArgumentParser, option: str) -> bool:
    return option in parser._option_string_actions  # argparse keeps no public lookup


def add_profile_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--profile`` and the profiler's options to ``parser`` (the ``calibrate`` sub-parser).

    ``--profile`` sets ``args.measure_profile`` (the positional ``profile`` CSV keeps its own name)."""
    g = parser.add_argument_group("profiler (--profile: measure instead of fit; needs pip install fluidllm[gpu])")
    g.add_argument("--profile", dest="measure_profile", action="store_true",
                   help="time forward passes of a decoder on this machine and write a profile CSV to --out")
    g.add_argument("--shape", default="tiny", choices=list(SHAPES), help="decoder shape (default tiny)")
    g.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    g.add_argument("--dtype", choices=list(DTYPES), help="default float16 on CUDA, float32 (the only one) on CPU")
    g.add_argument("--layers", type=int, help="decoder layers to time; times scaled by n_layers/layers "
                                              "(default: all for tiny, 2 otherwise)")
    g.add_argument("--grid", help="quick, standard, or 'prefill:P,..;decode@KV:D,..;mixed@KV:P+D,..' "
                                  "(default quick for tiny, standard otherwise)")
    g.add_argument("--kv-layout", default="contiguous", choices=list(KV_LAYOUTS), help="KV cache layout")
    g.add_argument("--no-rope", action="store_true", help="skip rotary embeddings")
    g.add_argument("--warmup", type=int, default=2, help="untimed passes per grid point (default 2)")
    g.add_argument("--repeats", type=int, default=5, help="timed passes per grid point; medians (default 5)")
    g.add_argument("--max-kv-gb", type=float, help="KV cache allowed for the timed layers (default half the free "
                                                   "GPU memory; 2 GB on CPU)")
    g.add_argument("--threads", type=int, help="CPU threads for torch while profiling (default: torch's own)")
    g.add_argument("--fit", action="store_true", help="also fit the measured CSV (fluidllm.calibrate.fit_profile)")
    if not _has(parser, "--out"):
        g.add_argument("--out", help="profile CSV to write")
    if not _has(parser, "--seed"):
        g.add_argument("--seed", type=int, default=0)
    if not _has(parser, "--n-boot"):
        g.add_argument("--n-boot", type=int, default=200, help="bootstrap resamples for --fit")
    if not _has(parser, "--json"):
        g.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def _compute(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    if getattr(args, "profile", None):
        raise ModelError("profile", args.profile, "give either a CSV to fit or --profile to measure, not both")
    if not args.out:
        raise ModelError("--out", None, "--profile needs --out PROFILE.csv")
    if not str(args.out).endswith(".csv"):
        raise ModelError("--out", args.out, "must be a .csv path (the profile table)")
    progress = None if args.json else (lambda s: print(s, file=sys.stderr, flush=True))
    run_ = profile_model(args.shape, device=args.device, grid=args.grid, layers=args.layers, dtype=args.dtype,
                         kv_layout=args.kv_layout, rope=not args.no_rope, warmup=args.warmup,
                         repeats=args.repeats, seed=args.seed, max_kv_gb=args.max_kv_gb, threads=args.threads,
                         progress=progress)
    if not run_.rows:
        raise ModelError("grid", args.grid, "no grid point could be measured: " +
                         "; ".join(w for _, w in run_.skipped[:3]))
    path = run_.write_csv(args.out)
    out: dict[str, Any] = {"profile": str(path), **run_.to_dict()}
    text = run_.table() + f"\nwrote {path} ({len(run_.rows)} rows)"
    if args.fit:
        from .fit import fit_profile

        scen = getattr(args, "scenario", None)
        res = fit_profile(path, scenario=scen.split(",") if scen else None, n_boot=args.n_boot, seed=args.seed)
        out["fit"] = res.to_dict()
        text += "\n\n" + res.table()
    return out, text


def run_profile(args: argparse.Namespace) -> int:
    """Measure the profile of parsed ``args``; write ``args.out``; print the table or one JSON object.

    Returns 0. Raises ModelError on bad input (no torch: ``pip install fluidllm[gpu]``)."""
    with json_stdout() if args.json else contextlib.nullcontext():
        out, text = _compute(args)
    if args.json:
        sys.stdout.write(json.dumps(out, allow_nan=False) + "\n")
    else:
        print(text)
    return 0


def run(argv: list[str] | None = None) -> int:
    """``fluidllm calibrate --profile ARGV`` on its own parser: ModelError prints ``error: ...``, returns 2."""
    p = argparse.ArgumentParser(prog="fluidllm calibrate")
    p.add_argument("profile", nargs="?", help=argparse.SUPPRESS)
    p.add_argument("--scenario", help="with --fit: keep only these scenario rows (comma separated)")
    add_profile_arguments(p)
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if not args.measure_profile:
            raise ModelError("--profile", False, "this entry point only measures: pass --profile")
        return run_profile(args)
    except ModelError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run())
