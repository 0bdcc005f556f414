"""Executable checks of the theory: one module per claim (``check_*.py``).

Each module defines ``CLAIM``, ``SOURCE`` (paper, section), ``METHOD`` (symbolic / LP / chain /
fluid / simulation) and ``check() -> tuple[bool, str]`` (verdict and a one-line detail). A claim
whose machinery does not exist yet sets ``PENDING = "why"`` instead: it is listed as PENDING with
that reason, neither passed nor failed, so what is still unchecked stays visible.
``python -m proofs_checks`` runs them all, prints the table and exits 1 on any failure.
"""
from __future__ import annotations

import importlib
import pkgutil
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Outcome", "run_all", "table", "example"]

#: the repository's example models (the checks run from a checkout, from any working directory)
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def example(name: str) -> Path:
    """Path of ``examples/NAME`` in the checkout this package lives in."""
    return EXAMPLES / name


@dataclass(frozen=True)
class Outcome:
    name: str
    claim: str
    source: str
    method: str
    ok: bool
    detail: str
    seconds: float
    pending: bool = False

    @property
    def verdict(self) -> str:
        return "PENDING" if self.pending else ("PASS" if self.ok else "FAIL")


def run_all(only: list[str] | None = None) -> list[Outcome]:
    """Run every ``check_*`` module (or those named in ``only``); exceptions count as failures."""
    out = []
    for mod in sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)])):
        if not mod.startswith("check_") or (only and mod not in only):
            continue
        m = importlib.import_module(f"{__name__}.{mod}")
        if getattr(m, "PENDING", None):
            out.append(Outcome(mod, m.CLAIM, m.SOURCE, m.METHOD, True, f"pending: {m.PENDING}", 0.0, pending=True))
            continue
        t0 = time.perf_counter()
        try:
            ok, detail = m.check()
        except Exception as e:  # a crash is a failed check, shown with its cause
            ok, detail = False, f"raised {type(e).__name__}: {e}\n{traceback.format_exc()}"
        out.append(Outcome(mod, m.CLAIM, m.SOURCE, m.METHOD, bool(ok), detail, time.perf_counter() - t0))
    return out


def table(results: list[Outcome]) -> str:
    """The verdict table: check, method, PASS/FAIL, seconds, claim and source, then the detail."""
    w = max([len(r.name) for r in results] + [5])
    lines = [f"{'check':<{w}}  {'method':<10} {'verdict':<7} {'s':>6}  claim — source", "-" * (w + 80)]
    for r in results:
        lines.append(f"{r.name:<{w}}  {r.method:<10} {r.verdict:<7} {r.seconds:>6.2f}  "
                     f"{r.claim} — {r.source}")
        lines.append(f"{'':<{w}}  {r.detail}")
    failed = sum(not r.ok for r in results)
    pending = sum(r.pending for r in results)
    lines.append(f"\n{len(results) - failed - pending} passed, {failed} failed, {pending} pending")
    return "\n".join(lines)
