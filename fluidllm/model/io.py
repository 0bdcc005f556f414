"""TOML load/save of models (the shape in ``design.md``). ``load_model(save_model(m)) == m``.

File paths inside a model (tables, empirical laws, traces) are resolved against the TOML file's
folder when loaded and written relative to the new file's folder when saved.
"""
from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import tomli_w

from ..errors import ModelError, finite_number
from . import arrivals as A
from . import batchtime as B
from . import lengths as L
from .engine import Engine
from .model import Model
from .policy import policy_from_toml
from .traces import load_trace
from .workload import Workload

if TYPE_CHECKING:
    from .network import NetworkModel

__all__ = ["load_model", "loads_model", "dumps_model", "save_model", "batch_time_from_toml",
           "length_law_from_toml", "arrival_from_toml"]

_ENGINE_KEYS = {"token_budget", "max_batch_requests", "max_resident_requests", "kv_capacity_tokens",
                "policy", "batch_time"}
_WORKLOAD_KEYS = {"arrival", "prefill", "decode", "lengths", "engine"}


def _table(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ModelError(where, value, "must be a table { kind = ..., ... }")
    return dict(value)


def _keys(d: dict[str, Any], where: str, allowed: set[str], required: set[str] = frozenset()) -> None:
    for k in d:
        if k not in allowed:
            raise ModelError(f"{where}.{k}", d[k], f"is not a known key; allowed: {sorted(allowed)}")
    for k in required:
        if k not in d:
            raise ModelError(f"{where}.{k}", None, "is required")


def _path(d: dict[str, Any], where: str, base: Path) -> Path:
    f = d.get("file")
    if not isinstance(f, str) or not f:
        raise ModelError(f"{where}.file", f, "must be a file path")
    p = Path(f)
    p = p if p.is_absolute() else (base / p)
    if not p.is_file():
        raise ModelError(f"{where}.file", f, f"no such file (looked for {p})")
    return p.resolve()


def _rewrap(e: ModelError, where: str) -> ModelError:
    if e.field.startswith(where):
        field = e.field
    elif " " in e.field:  # a data file's row, line or header ("bad.csv row 3 ..."): keep the file name whole
        field = f"{where} ({e.field})"
    else:
        field = f"{where}.{e.field.split('.')[-1]}"
    return ModelError(field, e.value, e.allowed)


# ------------------------------------------------------------------------------- batch time


def batch_time_from_toml(value: Any, where: str, base: Path) -> B.BatchTime:
    """Read ``batch_time = { kind = ..., ... }`` or ``{ preset = NAME }``."""
    d = _table(value, where)
    if "preset" in d:
        _keys(d, where, {"preset"})
        from ..presets import get_preset

        return get_preset(d["preset"], field=f"{where}.preset")
    kind = d.pop("kind", None)
    kinds = {"constant": B.Constant, "affine": B.Affine, "piecewise-linear": B.PiecewiseLinear,
             "staircase": B.Staircase, "two-feature": B.TwoFeature, "table": None}
    if kind not in kinds:
        raise ModelError(f"{where}.kind", kind, f"must be one of {sorted(kinds)} (or give preset = NAME)")
    try:
        if kind == "table":
            return _table_from_toml(d, where, base)
        cls = kinds[kind]
        init = [f for f in dataclasses.fields(cls) if f.init and f.name != "preset"]
        _keys(d, where, {f.name for f in init}, {f.name for f in init if f.default is dataclasses.MISSING})
        return cls(**d)
    except ModelError as e:
        raise _rewrap(e, where) from None
    except TypeError as e:
        raise ModelError(where, value, f"bad parameters for {kind}: {e}") from None


def _table_from_toml(d: dict[str, Any], where: str, base: Path) -> B.Table:
    if "tokens" in d:
        _keys(d, where, {"tokens", "times_ms"}, {"tokens", "times_ms"})
        return B.Table(np.asarray(d["tokens"], float), np.asarray(d["times_ms"], float))
    _keys(d, where, {"file", "scenario", "tokens_column", "time_column"}, {"file"})
    from ..calibrate.profile import read_profile

    p = _path(d, where, base)
    prof = read_profile(p, scenario=d.get("scenario"))
    tcol = d.get("tokens_column", "tokens_in_batch")
    ycol = d.get("time_column", "iteration_ms")
    if tcol not in prof.columns or ycol not in prof.columns:
        raise ModelError(f"{where}.file", str(p), f"must have columns {tcol!r} and {ycol!r}")
    source = {k: v for k, v in d.items() if k != "file"}
    source["file"] = str(p)
    return B.Table(prof.columns[tcol], prof.columns[ycol], source=source)


# ------------------------------------------------------------------------------- lengths


def length_law_from_toml(value: Any, where: str, base: Path) -> L.LengthLaw:
    """Read one marginal length law."""
    d = _table(value, where)
    kind = d.pop("kind", None)
    try:
        if kind == "deterministic":
            _keys(d, where, {"value"}, {"value"})
            return L.Deterministic(d["value"])
        if kind in ("geometric", "poisson"):
            _keys(d, where, {"mean", "min"}, {"mean"})
            cls = L.Geometric if kind == "geometric" else L.Poisson
            return cls(d["mean"], d.get("min", 1))
        if kind == "uniform":
            _keys(d, where, {"low", "high"}, {"low", "high"})
            return L.Uniform(d["low"], d["high"])
        if kind == "lognormal":
            _keys(d, where, {"mean", "sigma"}, {"mean", "sigma"})
            return L.Lognormal(d["mean"], d["sigma"])
        if kind == "empirical":
            if "values" in d:
                _keys(d, where, {"values"})
                return L.Empirical(np.asarray(d["values"]))
            _keys(d, where, {"file", "dataset", "column", "format"}, {"column"})
            tr = _trace(d, where, base)
            col = d["column"]
            if col not in ("prefill", "decode"):
                raise ModelError(f"{where}.column", col, "must be 'prefill' or 'decode' (the trace's columns)")
            return L.Empirical(getattr(tr, col), source={**tr.source, "column": col})
        if kind == "mixture":
            _keys(d, where, {"weights", "components"}, {"weights", "components"})
            comps = d["components"]
            if not isinstance(comps, list):
                raise ModelError(f"{where}.components", comps, "must be a list of length laws")
            return L.Mixture(tuple(d["weights"]),
                             tuple(length_law_from_toml(c, f"{where}.components[{i}]", base) for i, c in enumerate(comps)))
    except ModelError as e:
        raise _rewrap(e, where) from None
    raise ModelError(f"{where}.kind", kind, "must be one of ['deterministic', 'empirical', 'geometric', "
                     "'lognormal', 'mixture', 'poisson', 'uniform']")


def _trace(d: dict[str, Any], where: str, base: Path):
    if "dataset" in d:
        return load_trace(dataset=d["dataset"])
    p = _path(d, where, base)
    return load_trace(p, d.get("format"))


def _joint_from_toml(d: dict[str, Any], where: str, base: Path) -> L.JointLengths:
    if "lengths" in d:
        if "prefill" in d or "decode" in d:
            raise ModelError(f"{where}.lengths", d["lengths"], "give either lengths or prefill + decode, not both")
        ld = _table(d["lengths"], f"{where}.lengths")
        kind = ld.pop("kind", None)
        if kind != "empirical-pairs":
            raise ModelError(f"{where}.lengths.kind", kind, "must be 'empirical-pairs'")
        if "prefill" in ld:
            _keys(ld, f"{where}.lengths", {"prefill", "decode"}, {"prefill", "decode"})
            return L.EmpiricalPairs(np.asarray(ld["prefill"]), np.asarray(ld["decode"]))
        _keys(ld, f"{where}.lengths", {"file", "dataset", "format"})
        return _trace(ld, f"{where}.lengths", base).lengths()
    for k in ("prefill", "decode"):
        if k not in d:
            raise ModelError(f"{where}.{k}", None, "is required (or give lengths = { kind = 'empirical-pairs', ... })")
    return L.Independent(length_law_from_toml(d["prefill"], f"{where}.prefill", base),
                         length_law_from_toml(d["decode"], f"{where}.decode", base))


# ------------------------------------------------------------------------------- arrivals


def arrival_from_toml(value: Any, where: str, base: Path) -> A.Arrival:
    """Read ``arrival = { kind = ..., rate_per_s = ... }``."""
    d = _table(value, where)
    kind = d.pop("kind", None)
    try:
        if kind == "poisson":
            _keys(d, where, {"rate_per_s"}, {"rate_per_s"})
            return A.PoissonArrival(d["rate_per_s"])
        if kind == "deterministic":
            _keys(d, where, {"rate_per_s", "offset_ms"}, {"rate_per_s"})
            return A.DeterministicArrival(d["rate_per_s"], d.get("offset_ms", 0.0))
        if kind == "renewal":
            _keys(d, where, {"rate_per_s", "scv", "distribution"}, {"rate_per_s"})
            return A.RenewalArrival(d["rate_per_s"], d.get("scv", 1.0), d.get("distribution", "gamma"))
        if kind == "trace":
            _keys(d, where, {"file", "dataset", "format", "speedup", "times_ms"})
            if "times_ms" in d:
                return A.TraceArrival(np.asarray(d["times_ms"]), d.get("speedup", 1.0))
            tr = _trace(d, where, base)
            return tr.arrival(finite_number(d.get("speedup", 1.0), f"{where}.speedup", minimum=0, strict=True))
    except ModelError as e:
        raise _rewrap(e, where) from None
    raise ModelError(f"{where}.kind", kind, "must be one of ['deterministic', 'poisson', 'renewal', 'trace']")


# ------------------------------------------------------------------------------- model


def _engine_from_toml(name: str, d: Any, base: Path) -> Engine:
    where = f"engines.{name}"
    d = _table(d, where)
    _keys(d, where, _ENGINE_KEYS, {"token_budget", "batch_time"})
    policy = policy_from_toml(d.get("policy", "sarathi"), f"{where}.policy", base)
    bt = batch_time_from_toml(d["batch_time"], f"{where}.batch_time", base)
    return Engine(name, d["token_budget"], bt, d.get("max_batch_requests"), d.get("max_resident_requests"),
                  d.get("kv_capacity_tokens"), policy)


def _workload_from_toml(name: str, d: Any, base: Path) -> Workload:
    where = f"workloads.{name}"
    d = _table(d, where)
    _keys(d, where, _WORKLOAD_KEYS, {"arrival"})
    return Workload(name, arrival_from_toml(d["arrival"], f"{where}.arrival", base),
                    _joint_from_toml(d, where, base), d.get("engine"))


def loads_model(text: str, base_dir: str | Path = ".") -> Model | NetworkModel:
    """Parse a model from TOML text; relative paths resolve against ``base_dir``.

    A file with ``[workflows.*]`` gives a :class:`~fluidllm.model.network.NetworkModel`, else a ``Model``.

    Raises:
        ModelError: malformed TOML or any invalid field.
    """
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ModelError("TOML", "<file>", f"is malformed: {e}") from None
    base = Path(base_dir)
    for k in doc:
        if k not in ("engines", "workloads", "workflows"):
            raise ModelError(k, doc[k], "is not a known top-level table; allowed: engines, workloads, workflows")
    if "workflows" in doc:
        from .network import network_from_toml

        return network_from_toml(doc, base)
    engines = {n: _engine_from_toml(n, e, base) for n, e in _table(doc.get("engines", {}), "engines").items()}
    workloads = {n: _workload_from_toml(n, w, base) for n, w in _table(doc.get("workloads", {}), "workloads").items()}
    return Model(engines, workloads)


def load_model(path: str | Path) -> Model | NetworkModel:
    """Load a model TOML file (a ``NetworkModel`` when it has ``[workflows.*]``).

    Raises:
        ModelError: missing file, malformed TOML or any invalid field.
    """
    p = Path(path)
    if not p.is_file():
        raise ModelError("model file", str(path), "no such file")
    return loads_model(p.read_text(), p.parent)


def _rel(d: Any, base: Path | None) -> Any:
    if isinstance(d, dict):
        out = {}
        for k, v in d.items():
            if k == "file" and isinstance(v, str) and base is not None:
                v = os.path.relpath(v, base)
            out[k] = _rel(v, base)
        return out
    if isinstance(d, list):
        return [_rel(x, base) for x in d]
    if isinstance(d, float) and math.isinf(d):
        raise ModelError("model", d, "cannot be written to TOML")
    return d


def model_to_dict(model: Model | NetworkModel, base_dir: str | Path | None = None) -> dict[str, Any]:
    """The TOML document of ``model`` as nested dicts."""
    base = Path(base_dir).resolve() if base_dir is not None else None
    engines: dict[str, Any] = {}
    for n, e in model.engines.items():
        d: dict[str, Any] = {"token_budget": e.token_budget}
        for k in ("max_batch_requests", "max_resident_requests", "kv_capacity_tokens"):
            if getattr(e, k) is not None:
                d[k] = getattr(e, k)
        d["policy"] = e.policy.to_toml()
        d["batch_time"] = e.batch_time.to_dict()
        engines[n] = d
    workloads: dict[str, Any] = {}
    for n, w in model.workloads.items():
        d = {"arrival": w.arrival.to_dict(), **w.lengths.to_dict(), "engine": w.engine}
        workloads[n] = d
    doc: dict[str, Any] = {"engines": engines, "workloads": workloads}
    if hasattr(model, "workflows"):  # a NetworkModel
        if not workloads:
            del doc["workloads"]
        doc["workflows"] = {n: w.to_dict() for n, w in model.workflows.items()}
    return _rel(doc, base)


def dumps_model(model: Model | NetworkModel, base_dir: str | Path | None = None) -> str:
    """TOML text of ``model`` (file paths relative to ``base_dir`` when given, else absolute)."""
    return tomli_w.dumps(model_to_dict(model, base_dir))


def save_model(model: Model | NetworkModel, path: str | Path) -> None:
    """Write ``model`` as TOML to ``path``."""
    p = Path(path)
    p.write_text(dumps_model(model, p.parent))
