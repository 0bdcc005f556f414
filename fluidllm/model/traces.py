"""Request traces: the Azure LLM inference trace 2023 (CSV) and Mooncake FAST'25 traces (JSONL).

A :class:`Trace` holds arrival times (ms from the first request), prompt and output lengths, and
turns into the model's objects: ``trace.lengths()`` (empirical pairs) and ``trace.arrival()``.

Data credits (required by their licences, see ``fluidllm/data/README.md``):
Azure 2023 — Patel et al., "Splitwise", ISCA 2024, CC BY 4.0; Mooncake — Moonshot AI and
Tsinghua University, FAST'25, Apache-2.0.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelError
from .arrivals import TraceArrival
from .lengths import EmpiricalPairs

__all__ = ["Trace", "load_trace", "load_azure_trace", "load_mooncake_trace", "DATASETS", "dataset_path"]

#: Traces vendored with the package (arrival_ms, prefill, decode), named for TOML ``dataset = NAME``.
DATASETS = {
    "azure-conv-2023": "azure_conv_2023.csv",
    "azure-code-2023": "azure_code_2023.csv",
    "mooncake-conv-2000": "mooncake_conv_2000.csv",
}


def dataset_path(name: str) -> Path:
    """Path of a vendored trace. Raises ModelError for an unknown name."""
    if name not in DATASETS:
        raise ModelError("dataset", name, f"must be one of {sorted(DATASETS)}")
    return Path(str(resources.files("fluidllm.data").joinpath(DATASETS[name])))


@dataclass(frozen=True, eq=False)
class Trace:
    """Arrival times (ms, from 0, ascending), prefill and decode tokens of each request."""

    arrival_ms: np.ndarray
    prefill: np.ndarray
    decode: np.ndarray
    source: dict[str, Any]

    def __len__(self) -> int:
        return int(self.arrival_ms.size)

    @property
    def rate_per_s(self) -> float:
        span = float(self.arrival_ms[-1] - self.arrival_ms[0])
        return (len(self) - 1) / span * 1000.0 if span > 0 else float("inf")

    def lengths(self) -> EmpiricalPairs:
        """The empirical joint law of (v_p, v_d) over the trace's rows."""
        return EmpiricalPairs(self.prefill, self.decode, source=dict(self.source))

    def arrival(self, speedup: float = 1.0) -> TraceArrival:
        """Replay of the trace's arrival times, ``speedup`` times faster."""
        return TraceArrival(self.arrival_ms, speedup, source=dict(self.source))


def _check_tokens(values: np.ndarray, column: str, path: Path, first_row: int) -> None:
    bad = np.flatnonzero(values < 0)
    if bad.size:
        raise ModelError(f"{path.name} row {int(bad[0]) + first_row} {column}", int(values[bad[0]]),
                         "token counts must be >= 0")


def _open(path: str | Path) -> Path:
    p = Path(path)
    if not p.is_file():
        raise ModelError("file", str(path), "no such trace file")
    return p


def load_azure_trace(path: str | Path) -> Trace:
    """Azure LLM inference trace 2023 CSV: ``TIMESTAMP, ContextTokens, GeneratedTokens``.

    Raises:
        ModelError: missing file, missing column, unparsable row, negative token count.
    """
    p = _open(path)
    with p.open(newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        raise ModelError("file", str(path), "is empty")
    head = [h.strip() for h in rows[0]]
    need = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
    for col in need:
        if col not in head:
            raise ModelError(f"{p.name} header", head, f"must contain {list(need)}")
    i_t, i_p, i_d = (head.index(c) for c in need)
    body = rows[1:]
    if len(body) < 1:
        raise ModelError("file", str(path), "has no requests")
    try:
        ts = np.array([r[i_t].strip() for r in body], dtype="datetime64[ns]")
        pre = np.array([int(r[i_p]) for r in body], dtype=np.int64)
        dec = np.array([int(r[i_d]) for r in body], dtype=np.int64)
    except (ValueError, IndexError) as e:
        raise ModelError(f"{p.name}", "<row>", f"every row needs a timestamp and two integers ({e})") from None
    _check_tokens(pre, "ContextTokens", p, 2)
    _check_tokens(dec, "GeneratedTokens", p, 2)
    t_ms = (ts - ts[0]).astype(np.int64) / 1e6
    return _sorted(t_ms, pre, dec, {"file": str(p.resolve()), "format": "azure"}, p)


def load_mooncake_trace(path: str | Path) -> Trace:
    """Mooncake JSONL: one object per line with ``timestamp`` (ms), ``input_length``, ``output_length``.

    Raises:
        ModelError: missing file, bad JSON, missing key, negative token count.
    """
    p = _open(path)
    t, pre, dec = [], [], []
    with p.open() as fh:
        for i, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                t.append(float(obj["timestamp"]))
                pre.append(int(obj["input_length"]))
                dec.append(int(obj["output_length"]))
            except (ValueError, KeyError, TypeError) as e:
                raise ModelError(f"{p.name} line {i}", line.strip()[:60],
                                 f"must be JSON with timestamp, input_length, output_length ({e})") from None
    if not t:
        raise ModelError("file", str(path), "has no requests")
    pre_a, dec_a = np.array(pre, dtype=np.int64), np.array(dec, dtype=np.int64)
    _check_tokens(pre_a, "input_length", p, 1)
    _check_tokens(dec_a, "output_length", p, 1)
    t_a = np.array(t, dtype=float)
    return _sorted(t_a - t_a.min(), pre_a, dec_a, {"file": str(p.resolve()), "format": "mooncake"}, p)


def load_fluidllm_trace(path: str | Path) -> Trace:
    """fluidllm's own CSV form (``arrival_ms, prefill, decode``), as in the vendored datasets."""
    p = _open(path)
    with p.open(newline="") as fh:
        rows = [r for r in csv.reader(fh) if r and not r[0].startswith("#")]
    head = [h.strip() for h in rows[0]]
    if head[:3] != ["arrival_ms", "prefill", "decode"]:
        raise ModelError(f"{p.name} header", head, "must be arrival_ms,prefill,decode")
    try:
        arr = np.array([[float(x) for x in r[:3]] for r in rows[1:]])
    except ValueError as e:
        raise ModelError(p.name, "<row>", f"every row needs three numbers ({e})") from None
    pre, dec = arr[:, 1].astype(np.int64), arr[:, 2].astype(np.int64)
    _check_tokens(pre, "prefill", p, 2)
    _check_tokens(dec, "decode", p, 2)
    return _sorted(arr[:, 0], pre, dec, {"file": str(p.resolve()), "format": "fluidllm"}, p)


def _sorted(t: np.ndarray, pre: np.ndarray, dec: np.ndarray, source: dict[str, Any], p: Path) -> Trace:
    order = np.argsort(t, kind="stable")
    return Trace(t[order] - t[order][0], pre[order], dec[order], source)


_LOADERS = {"azure": load_azure_trace, "mooncake": load_mooncake_trace, "fluidllm": load_fluidllm_trace}


def load_trace(path: str | Path | None = None, format: str | None = None, *, dataset: str | None = None) -> Trace:
    """Load a trace file (format from ``format`` or the extension: .jsonl Mooncake, .csv Azure or
    fluidllm's own) or a vendored ``dataset`` (see :data:`DATASETS`).

    Raises:
        ModelError: unknown format or dataset, missing file, bad rows.
    """
    if dataset is not None:
        tr = load_fluidllm_trace(dataset_path(dataset))
        return Trace(tr.arrival_ms, tr.prefill, tr.decode, {"dataset": dataset})
    if path is None:
        raise ModelError("file", None, "give a trace file or a dataset name")
    if format is None:
        p = Path(path)
        if p.suffix == ".jsonl":
            format = "mooncake"
        else:
            format = "azure"
            if p.is_file():
                with p.open() as fh:
                    if fh.readline().startswith("arrival_ms"):
                        format = "fluidllm"
    if format not in _LOADERS:
        raise ModelError("format", format, f"must be one of {sorted(_LOADERS)}")
    return _LOADERS[format](path)
