"""Sweep files: parse, validate, expand into points, and key each point.

A sweep file (TOML) names a base model, the analyses to run at every point and how the points are
made (see ``design.md``)::

    model = "model.toml"          # base model, relative to this file
    analyses = ["stability"]      # any of capacity, simulate, stability, fluid
    replications = 8              # per point (simulate, stability)
    horizon_s = 60                # simulated seconds per replication (simulate, stability)
    seed = 1                      # sweep seed: per-point seeds and random draws derive from it
    samples = 10                  # number of [random] draws (required with [random])
    [options.stability]           # optional: alpha, tolerance, extensions of fluidllm.stability
    tolerance = 0.05
    [grid]                        # cartesian product of these lists
    "engines.gpu0.policy" = ["sarathi", "vllm"]
    load = [0.5, 0.9, 1.1]        # multiplies every arrival rate
    [lists]                       # zipped: equal-length lists, the i-th values go together
    [random]                      # `samples` independent draws of every field listed
    "engines.gpu0.token_budget" = { kind = "integers", low = 128, high = 1024 }   # low <= x <= high
    "workloads.chat.decode.mean" = { kind = "uniform", low = 50, high = 200 }     # low <= x < high
    "engines.gpu0.max_batch_requests" = { kind = "choice", values = [32, 64, 128] }

The points are the product grid x lists x random draws. A field path addresses the model TOML's
tables before the model is built (``engines.NAME.KEY``, ``workloads.NAME.arrival.rate_per_s``; an
array of tables by index or, for tables with an ``id``, by id: ``workflows.A.calls.act.decode.mean``);
``load`` is the one path outside the model. Identical points (a repeated random draw) are one point.

The point key (``point_id``) is the sha256 of the canonical JSON of the point's overrides, the base
model's content hash (its parsed tables plus the bytes of every file it references), the analyses,
replications, horizon and seed, ``fluidllm.__version__`` and a fingerprint of the installed fluidllm
package files, so an edited simulator never silently reuses points computed by the old code.
"""
from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import tomli_w

from ..errors import ModelError, finite_number, integer

__all__ = ["ANALYSES", "Point", "SweepSpec", "load_sweep", "loads_sweep", "apply_overrides", "build_model",
           "code_fingerprint", "canonical_json"]

ANALYSES = ("capacity", "simulate", "stability", "fluid")
_TOP_KEYS = {"model", "analyses", "replications", "horizon_s", "seed", "samples", "grid", "lists", "random",
             "options"}
#: settings an analysis takes from ``[options.NAME]`` (passed to fluidllm.stability / network_stability)
OPTIONS = {"stability": {"alpha": "number in (0, 1)", "tolerance": "number > 0", "extensions": "integer >= 0"}}
_RANDOM_KINDS = {"integers": ("low", "high"), "uniform": ("low", "high"), "loguniform": ("low", "high"),
                 "choice": ("values",)}


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no spaces: the same value always gives the same text."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _sha(text: str | bytes) -> str:
    return hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()


_FINGERPRINT: str | None = None


def code_fingerprint() -> str:
    """sha256 over the relative paths and bytes of every file of the installed ``fluidllm`` package
    (sources, presets, vendored data; caches excluded). Computed once per process."""
    global _FINGERPRINT
    if _FINGERPRINT is None:
        root = Path(__file__).resolve().parent.parent
        h = hashlib.sha256()
        for p in sorted(root.rglob("*")):
            if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo"):
                h.update(p.relative_to(root).as_posix().encode() + b"\0")
                h.update(hashlib.sha256(p.read_bytes()).digest())
        _FINGERPRINT = h.hexdigest()
    return _FINGERPRINT


@dataclass(frozen=True, eq=False)
class Point:
    """One point of a sweep: its overrides (field path -> value, ``load`` included), its key and seed.

    Attributes:
        params: field path -> TOML value, in the sweep's field order.
        point_id: the store key (sha256 hex, see the module docstring).
        seed: this point's simulation seed, from the sweep seed and the overrides only (so it does
            not depend on execution order, scheduler or code version).
    """

    params: dict[str, Any]
    point_id: str
    seed: int

    @property
    def load(self) -> float:
        return float(self.params.get("load", 1.0))


@dataclass(frozen=True, eq=False)
class SweepSpec:
    """A validated, expanded sweep (see the module docstring for the file format).

    Attributes:
        path: the sweep file (None for text parsed with :func:`loads_sweep` without a path).
        model_path: the base model file. ``base_doc``: its parsed TOML tables. ``base_hash``: its
            content hash (tables + referenced files' bytes).
        analyses, replications, horizon_s, seed, samples: as in the file. ``options``: analysis ->
            keyword arguments from ``[options.NAME]``.
        fields: the swept field paths, in order (grid, lists, random).
        points: the distinct points, in expansion order.
    """

    path: Path | None
    model_path: Path
    base_doc: dict[str, Any]
    base_hash: str
    analyses: tuple[str, ...]
    replications: int
    horizon_s: float
    seed: int
    samples: int
    options: dict[str, dict[str, Any]]
    fields: tuple[str, ...]
    points: tuple[Point, ...] = field(repr=False)

    @property
    def default_results(self) -> Path:
        """``<stem>.results/`` next to the sweep file."""
        if self.path is None:
            raise ModelError("results", None, "must be given for a sweep that has no file")
        return self.path.with_name(self.path.stem + ".results")

    def to_dict(self) -> dict[str, Any]:
        return {"sweep": None if self.path is None else str(self.path), "model": str(self.model_path),
                "base_hash": self.base_hash, "analyses": list(self.analyses), "replications": self.replications,
                "horizon_s": self.horizon_s, "seed": self.seed, "samples": self.samples,
                "options": self.options, "fields": list(self.fields), "points_total": len(self.points)}


# ------------------------------------------------------------------------------------ overrides
def _step(node: Any, key: str, where: str) -> tuple[Any, Any]:
    """The child of ``node`` at ``key`` (a table key, a list index or a list element's id)."""
    if isinstance(node, dict):
        if key not in node:
            raise ModelError(where, key, f"is not a key of this table; valid keys here: {sorted(node)}")
        return node, key
    if isinstance(node, list):
        if key.isdigit() and int(key) < len(node):
            return node, int(key)
        ids = [x.get("id") for x in node if isinstance(x, dict)]
        if key in ids:
            return node, ids.index(key)
        raise ModelError(where, key, f"must be an index 0..{len(node) - 1} or an id of this array: {ids}")
    raise ModelError(where, key, f"cannot be addressed: the value above is {node!r}, not a table")


def apply_overrides(doc: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of the model TOML ``doc`` with each ``path -> value`` set (``load`` skipped).

    Every level but the last must exist; the last key may be new in an existing table (an optional
    engine field the base leaves out), and the model builder then checks it is a known key.

    Raises:
        ModelError: a path through a missing key, naming the path and the valid keys at that level.
    """
    out = copy.deepcopy(dict(doc))
    for path, value in overrides.items():
        if path == "load":
            continue
        parts = path.split(".")
        if not all(parts):
            raise ModelError(path, value, "is not a field path (dot-separated keys, e.g. engines.gpu0.token_budget)")
        node: Any = out
        for i, key in enumerate(parts[:-1]):
            parent, k = _step(node, key, f"sweep field {'.'.join(parts[:i + 1])}")
            node = parent[k]
        last = parts[-1]
        if isinstance(node, dict):
            node[last] = copy.deepcopy(value)
        else:
            parent, k = _step(node, last, f"sweep field {path}")
            parent[k] = copy.deepcopy(value)
    return out


def build_model(doc: Mapping[str, Any], base_dir: str | Path) -> Any:
    """The model (``Model`` or ``NetworkModel``) of TOML tables ``doc``; relative files resolve
    against ``base_dir``. Goes through :func:`fluidllm.model.io.loads_model` (nothing is written).

    Raises:
        ModelError: any invalid field, named as in a model file.
    """
    from ..model.io import loads_model

    return loads_model(tomli_w.dumps(dict(doc)), base_dir)


def _file_hashes(d: Any, base: Path, out: dict[str, str]) -> None:
    if isinstance(d, dict):
        for k, v in d.items():
            if k in ("file", "target") and isinstance(v, str):
                p = Path(v.split(":")[0] if k == "target" else v)
                p = p if p.is_absolute() else base / p
                if p.is_file():
                    out[v] = _sha(p.read_bytes())
            else:
                _file_hashes(v, base, out)
    elif isinstance(d, list):
        for x in d:
            _file_hashes(x, base, out)


def base_model_hash(doc: Mapping[str, Any], base: Path) -> str:
    """sha256 of the model tables plus the bytes of every file they reference (tables, traces,
    empirical laws, python policy targets)."""
    files: dict[str, str] = {}
    _file_hashes(doc, base, files)
    return _sha(canonical_json({"doc": doc, "files": files}))


# ------------------------------------------------------------------------------------ parsing
def _value(v: Any, where: str) -> Any:
    """A swept value must be TOML-native and JSON-safe (it goes into the key)."""
    if isinstance(v, float) and not math.isfinite(v):
        raise ModelError(where, v, "must be finite")
    try:
        canonical_json(v)
    except (TypeError, ValueError):
        raise ModelError(where, v, "must be a TOML value (number, string, bool, array or table)") from None
    return v


def _harmonise(values: list[Any]) -> list[Any]:
    """Ints mixed with floats become floats, so a field's column has one type."""
    if any(isinstance(v, float) for v in values) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return [float(v) for v in values]
    return values


def _check_load(values: list[Any], where: str) -> list[float]:
    return [finite_number(v, where, minimum=0, strict=True) for v in values]


def _lists_table(t: Any, where: str) -> dict[str, list[Any]]:
    if not isinstance(t, dict):
        raise ModelError(where, t, "must be a table of field path = [values]")
    out = {}
    for k, v in t.items():
        w = f"{where}.{k!r}" if "." in k else f"{where}.{k}"
        if not isinstance(v, list) or not v:
            raise ModelError(w, v, "must be a non-empty array of values")
        vals = _harmonise([_value(x, w) for x in v])
        out[k] = _check_load(vals, w) if k == "load" else vals
    return out


def _field_seed(seed: int, name: str) -> list[int]:
    return [seed, int(_sha(name)[:15], 16)]


def _draws(t: Any, samples: int, seed: int) -> dict[str, list[Any]]:
    if not isinstance(t, dict):
        raise ModelError("random", t, "must be a table of field path = { kind = ..., ... }")
    out: dict[str, list[Any]] = {}
    for name, d in t.items():
        w = f"random.{name!r}" if "." in name else f"random.{name}"
        if not isinstance(d, dict):
            raise ModelError(w, d, f"must be a table {{ kind = ..., ... }} with kind one of {sorted(_RANDOM_KINDS)}")
        kind = d.get("kind")
        if kind not in _RANDOM_KINDS:
            raise ModelError(f"{w}.kind", kind, f"must be one of {sorted(_RANDOM_KINDS)}")
        need = _RANDOM_KINDS[kind]
        for k in d:
            if k != "kind" and k not in need:
                raise ModelError(f"{w}.{k}", d[k], f"is not a key of kind {kind!r}; allowed: {list(need)}")
        for k in need:
            if k not in d:
                raise ModelError(f"{w}.{k}", None, f"is required for kind {kind!r}")
        # one generator per field, keyed by its name: adding a field leaves the others' draws as they were
        rng = np.random.default_rng(_field_seed(seed, name))
        if kind == "choice":
            vals = d["values"]
            if not isinstance(vals, list) or not vals:
                raise ModelError(f"{w}.values", vals, "must be a non-empty array")
            vals = _harmonise([_value(x, f"{w}.values") for x in vals])
            drawn = [vals[i] for i in rng.integers(0, len(vals), size=samples)]
        elif kind == "integers":
            lo, hi = integer(d["low"], f"{w}.low"), integer(d["high"], f"{w}.high")
            if hi < lo:
                raise ModelError(f"{w}.high", hi, f"must be >= low = {lo}")
            drawn = [int(x) for x in rng.integers(lo, hi, size=samples, endpoint=True)]
        else:
            lo = finite_number(d["low"], f"{w}.low", minimum=0, strict=True) if kind == "loguniform" \
                else finite_number(d["low"], f"{w}.low")
            hi = finite_number(d["high"], f"{w}.high")
            if not hi > lo:
                raise ModelError(f"{w}.high", hi, f"must be > low = {lo}")
            u = rng.uniform(0.0, 1.0, size=samples)
            x = lo + (hi - lo) * u if kind == "uniform" else np.exp(np.log(lo) + (np.log(hi) - np.log(lo)) * u)
            drawn = [float(v) for v in x]
        out[name] = _check_load(drawn, w) if name == "load" else drawn
    return out


def _options(t: Any, analyses: list[str]) -> dict[str, dict[str, Any]]:
    if not isinstance(t, dict):
        raise ModelError("options", t, f"must be a table of [options.NAME] tables, NAME in {sorted(OPTIONS)}")
    out: dict[str, dict[str, Any]] = {}
    for a, kw in t.items():
        if a not in OPTIONS:
            raise ModelError(f"options.{a}", kw, f"is not an analysis with options; allowed: {sorted(OPTIONS)}")
        if a not in analyses:
            raise ModelError(f"options.{a}", kw, f"applies only when analyses include {a!r}")
        if not isinstance(kw, dict):
            raise ModelError(f"options.{a}", kw, "must be a table")
        o: dict[str, Any] = {}
        for k, v in kw.items():
            w = f"options.{a}.{k}"
            if k not in OPTIONS[a]:
                raise ModelError(w, v, f"is not an option of {a}; allowed: {sorted(OPTIONS[a])}")
            if k == "extensions":
                o[k] = integer(v, w, minimum=0)
            else:
                o[k] = finite_number(v, w, minimum=0, strict=True)
                if k == "alpha" and o[k] >= 1:
                    raise ModelError(w, v, "must be in (0, 1)")
        out[a] = o
    return out


def point_seed(seed: int, params: Mapping[str, Any]) -> int:
    """The simulation seed of the point with overrides ``params`` under sweep seed ``seed``."""
    return int(_sha(canonical_json({"seed": seed, "params": dict(params)}))[:8], 16)


def point_key(params: Mapping[str, Any], base_hash: str, analyses: tuple[str, ...], replications: int,
              horizon_s: float, seed: int, options: Mapping[str, Any] | None = None) -> str:
    """The store key of a point (see the module docstring)."""
    from .. import __version__

    return _sha(canonical_json({"params": dict(params), "model": base_hash, "analyses": list(analyses),
                                "replications": replications, "horizon_s": horizon_s, "seed": seed,
                                "options": dict(options or {}),
                                "fluidllm_version": __version__, "code": code_fingerprint()}))


def loads_sweep(text: str, base_dir: str | Path = ".", path: str | Path | None = None) -> SweepSpec:
    """Parse sweep TOML ``text``; ``model`` resolves against ``base_dir``.

    Raises:
        ModelError: malformed TOML, an unknown or missing key, a bad random kind, an empty grid, a
            ``[lists]`` of unequal lengths, a path that is not in the model (with the valid keys at the
            failing level), or a point whose model is invalid.
    """
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ModelError("sweep TOML", "<file>", f"is malformed: {e}") from None
    for k in doc:
        if k not in _TOP_KEYS:
            raise ModelError(k, doc[k], f"is not a sweep key; allowed: {sorted(_TOP_KEYS)}")
    base = Path(base_dir)
    m = doc.get("model")
    if not isinstance(m, str) or not m:
        raise ModelError("model", m, "must be the base model's file path (relative to the sweep file)")
    model_path = (Path(m) if Path(m).is_absolute() else base / m).resolve()
    if not model_path.is_file():
        raise ModelError("model", m, f"no such file (looked for {model_path})")
    analyses = doc.get("analyses", ["stability"])
    if isinstance(analyses, str):
        analyses = [analyses]
    if not isinstance(analyses, list) or not analyses or any(a not in ANALYSES for a in analyses):
        raise ModelError("analyses", analyses, f"must be a non-empty array of {list(ANALYSES)}")
    if len(set(analyses)) != len(analyses):
        raise ModelError("analyses", analyses, "must not repeat an analysis")
    replications = integer(doc.get("replications", 8), "replications", minimum=1)
    horizon_s = finite_number(doc.get("horizon_s", 60.0), "horizon_s", minimum=0, strict=True)
    seed = integer(doc.get("seed", 0), "seed", minimum=0)
    options = _options(doc.get("options", {}), analyses)
    grid = _lists_table(doc.get("grid", {}), "grid")
    lists = _lists_table(doc.get("lists", {}), "lists")
    lens = {len(v) for v in lists.values()}
    if len(lens) > 1:
        raise ModelError("lists", {k: len(v) for k, v in lists.items()}, "must all have the same length (zipped)")
    if "random" in doc:
        if "samples" not in doc:
            raise ModelError("samples", None, "is required with [random]: the number of draws")
        samples = integer(doc["samples"], "samples", minimum=1)
        rand = _draws(doc["random"], samples, seed)
    else:
        if "samples" in doc:
            raise ModelError("samples", doc["samples"], "only applies with a [random] table")
        samples, rand = 0, {}
    names = [*grid, *lists, *rand]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ModelError("sweep fields", dup, "must each appear in only one of [grid], [lists], [random]")
    if not names:
        raise ModelError("grid", {}, "a sweep needs at least one field in [grid], [lists] or [random]")
    try:
        base_doc = tomllib.loads(model_path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ModelError("model", str(model_path), f"is malformed TOML: {e}") from None
    base_hash = base_model_hash(base_doc, model_path.parent)

    grid_rows = [dict(zip(grid, vs)) for vs in itertools.product(*grid.values())] if grid else [{}]
    list_rows = [dict(zip(lists, vs)) for vs in zip(*lists.values())] if lists else [{}]
    rand_rows = [{k: v[i] for k, v in rand.items()} for i in range(samples)] if rand else [{}]
    points: dict[str, Point] = {}
    analyses_t = tuple(analyses)
    for g, li, r in itertools.product(grid_rows, list_rows, rand_rows):
        params = {**g, **li, **r}
        apply_overrides(base_doc, params)  # a bad path fails here, before any model is built
        pid = point_key(params, base_hash, analyses_t, replications, horizon_s, seed, options)
        points.setdefault(pid, Point(params, pid, point_seed(seed, params)))
    return SweepSpec(path=None if path is None else Path(path).resolve(), model_path=model_path, base_doc=base_doc,
                     base_hash=base_hash, analyses=analyses_t, replications=replications, horizon_s=horizon_s,
                     seed=seed, samples=samples, options=options, fields=tuple(names), points=tuple(points.values()))


def load_sweep(path: str | Path) -> SweepSpec:
    """Load and expand a sweep file (see the module docstring).

    Raises:
        ModelError: a missing file, or anything :func:`loads_sweep` rejects.
    """
    p = Path(path)
    if not p.is_file():
        raise ModelError("sweep file", str(path), "no such file")
    return loads_sweep(p.read_text(), p.parent, p)
