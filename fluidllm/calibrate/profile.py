"""Batch-time profile tables (CSV), in the columns of ``derived_batch_time_*.csv``.

Required columns: ``tokens_in_batch`` and ``iteration_ms``; optional ``prefill_tokens``,
``decode_tokens``, ``kv_context`` (per decode request) and ``scenario``.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ModelError

__all__ = ["Profile", "read_profile", "NUMERIC_COLUMNS"]

NUMERIC_COLUMNS = ("tokens_in_batch", "prefill_tokens", "decode_tokens", "kv_context", "iteration_ms")


@dataclass(frozen=True, eq=False)
class Profile:
    """Columns of a profile: numeric arrays by name, plus ``scenario`` strings (may be empty)."""

    columns: dict[str, np.ndarray]
    scenario: np.ndarray
    path: str

    def __len__(self) -> int:
        return int(self.columns["iteration_ms"].size)

    @property
    def tokens(self) -> np.ndarray:
        return self.columns["tokens_in_batch"]

    @property
    def times_ms(self) -> np.ndarray:
        return self.columns["iteration_ms"]

    def composition(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(prefill tokens P, decode requests D, total decode KV context K = D·kv_context)."""
        n = self.tokens
        P = self.columns.get("prefill_tokens", n)
        D = self.columns.get("decode_tokens", np.zeros_like(n))
        kv = self.columns.get("kv_context", np.zeros_like(n))
        return P, D, D * kv


def read_profile(path: str | Path, scenario: str | list[str] | None = None) -> Profile:
    """Read a profile CSV, optionally keeping only rows of ``scenario`` (a name or list of names).

    Raises:
        ModelError: missing file or column, non-numeric or non-positive time, no rows left.
    """
    p = Path(path)
    if not p.is_file():
        raise ModelError("profile", str(path), "no such file")
    with p.open(newline="") as fh:
        reader = csv.DictReader(fh)
        fieldnames = reader.fieldnames or []
        rows = list(reader)
    for c in ("tokens_in_batch", "iteration_ms"):
        if c not in fieldnames:
            raise ModelError(f"{p.name} header", fieldnames, "must contain tokens_in_batch and iteration_ms")
    if scenario is not None:
        wanted = {scenario} if isinstance(scenario, str) else set(scenario)
        if "scenario" not in fieldnames:
            raise ModelError("scenario", scenario, f"{p.name} has no scenario column")
        known = {r["scenario"] for r in rows}
        unknown = wanted - known
        if unknown:
            raise ModelError("scenario", sorted(unknown)[0], f"must be one of {sorted(known)}")
        rows = [r for r in rows if r["scenario"] in wanted]
    if not rows:
        raise ModelError(p.name, "<rows>", "has no profile rows")
    cols: dict[str, np.ndarray] = {}
    for c in NUMERIC_COLUMNS:
        if c in fieldnames:
            try:
                cols[c] = np.array([float(r[c]) for r in rows])
            except ValueError as e:
                raise ModelError(f"{p.name} column {c}", "<value>", f"must be numeric ({e})") from None
            bad = np.flatnonzero(~np.isfinite(cols[c]) | (cols[c] < 0))
            if bad.size:
                raise ModelError(f"{p.name} row {int(bad[0]) + 2} {c}", cols[c][bad[0]], "must be a finite number >= 0")
    bad = np.flatnonzero(cols["iteration_ms"] <= 0)
    if bad.size:
        raise ModelError(f"{p.name} row {int(bad[0]) + 2} iteration_ms", cols["iteration_ms"][bad[0]], "must be > 0")
    scen = np.array([r.get("scenario", "") for r in rows])
    return Profile(cols, scen, str(p.resolve()))
