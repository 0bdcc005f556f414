"""The results store: a folder that is a Parquet dataset, one file per finished point.

``<results>/<point_id>.parquet`` holds that point's rows (one per analysis). A file is written under
a temporary name starting with ``.`` in the same folder, fsynced, then renamed over its final name
with :func:`os.replace` (atomic on POSIX) and the folder fsynced, so a process killed at any
instant leaves either the whole point or none of it; readers (this module, ``pyarrow.dataset``,
which skips names starting with ``.`` or ``_``) never see a temporary file. Leftover temporary
files from a killed run are removed by the next run.

Columns: ``point_id``, ``param.<path>`` (one per swept field, native type; tables and arrays as
canonical JSON text), ``analysis``, every ``out.*`` column of :data:`~fluidllm.sweep.analyses.OUT_COLUMNS`
(null where another analysis's row), ``seconds``, ``error``, ``fluidllm_version``, ``finished_at``
(ISO 8601 UTC). ``_sweep.json`` beside them describes the last sweep run into the folder.
"""
from __future__ import annotations

import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..errors import ModelError
from .analyses import OUT_COLUMNS
from .spec import canonical_json

__all__ = ["SUFFIX", "stored_ids", "write_point", "read_point", "load_results", "write_manifest", "clean_temp"]

SUFFIX = ".parquet"


def _pa():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as e:  # pragma: no cover - pyarrow is a dependency of the sweep extra
        raise ModelError("pyarrow", None, f"must be installed for sweeps ({e})") from None
    return pa, pq


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(folder: Path, name: str, write) -> None:
    tmp = folder / f".tmp-{os.getpid()}-{time.monotonic_ns()}-{name}"
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, folder / name)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(folder)


def clean_temp(folder: str | Path) -> int:
    """Remove temporary files a killed run left in ``folder``; returns how many."""
    n = 0
    for p in Path(folder).glob(".tmp-*"):
        p.unlink(missing_ok=True)
        n += 1
    return n


def stored_ids(folder: str | Path) -> set[str]:
    """The point ids with a finished file in ``folder`` (empty if it does not exist)."""
    p = Path(folder)
    if not p.is_dir():
        return set()
    return {f.name[:-len(SUFFIX)] for f in p.iterdir() if f.name.endswith(SUFFIX) and not f.name.startswith((".", "_"))}


def _param_type(values: Sequence[Any]):
    pa, _ = _pa()
    if all(isinstance(v, bool) for v in values):
        return pa.bool_()
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return pa.int64()
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return pa.float64()
    return pa.string()


def _param_value(v: Any, typ) -> Any:
    pa, _ = _pa()
    if typ == pa.string() and not isinstance(v, str):
        return canonical_json(v)
    if typ == pa.float64():
        return float(v)
    return v


def write_point(folder: str | Path, point_id: str, params: Mapping[str, Any], rows: Sequence[Mapping[str, Any]],
                param_types: Mapping[str, Any] | None = None) -> Path:
    """Write one finished point atomically (see the module docstring); returns its file.

    ``param_types`` (field -> Arrow type) keeps a field's column type the same in every file of a
    sweep; by default each value's own type.
    """
    pa, pq = _pa()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    n = len(rows)
    finished = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    cols: dict[str, Any] = {"point_id": pa.array([point_id] * n, pa.string())}
    for k, v in params.items():
        typ = (param_types or {}).get(k) or _param_type([v])
        cols[f"param.{k}"] = pa.array([_param_value(v, typ)] * n, typ)
    cols["analysis"] = pa.array([r["analysis"] for r in rows], pa.string())
    for spec in OUT_COLUMNS.values():
        for c, t in spec.items():
            cols[c] = pa.array([r.get(c) for r in rows], pa.float64() if t == "double" else pa.string())
    cols["seconds"] = pa.array([float(r["seconds"]) for r in rows], pa.float64())
    cols["error"] = pa.array([r.get("error") for r in rows], pa.string())
    cols["fluidllm_version"] = pa.array([r["fluidllm_version"] for r in rows], pa.string())
    cols["finished_at"] = pa.array([finished] * n, pa.string())
    table = pa.table(cols)
    name = point_id + SUFFIX
    _atomic_write(folder, name, lambda f: pq.write_table(table, f))
    return folder / name


def read_point(folder: str | Path, point_id: str):
    """The rows of one stored point as a pandas DataFrame."""
    _, pq = _pa()
    return pq.read_table(Path(folder) / (point_id + SUFFIX)).to_pandas()


def write_manifest(folder: str | Path, info: Mapping[str, Any]) -> None:
    """Write ``_sweep.json`` (the sweep's settings and point ids) atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = (json.dumps(dict(info), indent=1, allow_nan=False) + "\n").encode()
    _atomic_write(folder, "_sweep.json", lambda f: f.write(data))


def load_results(folder: str | Path, point_ids: Sequence[str] | None = None):
    """Every stored point in ``folder`` (or only ``point_ids``) as one pandas DataFrame, one row per
    point and analysis (points in ``point_ids`` order, else sorted by id; a point's rows in its
    sweep's analysis order); columns as in the module docstring.

    Raises:
        ModelError: ``folder`` is not a directory, or a requested point is not stored.
    """
    import pandas as pd

    pa, pq = _pa()
    p = Path(folder)
    if not p.is_dir():
        raise ModelError("results", str(folder), "is not a results folder")
    have = stored_ids(p)
    ids = sorted(have) if point_ids is None else list(dict.fromkeys(point_ids))
    missing = [i for i in ids if i not in have]
    if missing:
        raise ModelError("point_ids", missing[:3], f"are not stored in {p} ({len(missing)} missing)")
    if not ids:
        return pd.DataFrame(columns=["point_id", "analysis"])
    # per file, then concatenated with type promotion: sweeps run into one folder may differ in
    # their param columns
    tables = [pq.read_table(p / (i + SUFFIX)) for i in ids]
    table = pa.concat_tables(tables, promote_options="permissive")
    return table.to_pandas()
