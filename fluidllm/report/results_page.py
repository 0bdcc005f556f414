"""``fluidllm report RESULTS``: one self-contained HTML page for a sweep results folder.

:func:`render_results` reads a folder written by :mod:`fluidllm.sweep` (or takes its DataFrame) and
writes ``OUT/index.html`` with, where the data has them:

- the **stability map**: the verdict (STABLE / UNSTABLE / INCONCLUSIVE) of every point over policy x
  load, the regression slope (tokens/s) in each cell, one panel per value of the other swept fields;
- **capacity**: the LP's ``max_scale`` and maximum token rate against each swept field, and the
  **capacity region** per policy: the boundary load seen by the stability test (the largest STABLE
  load below the smallest UNSTABLE one), by the fluid model (largest DRAINS below the smallest
  DIVERGES) and by the LP (``load x max_scale``: ``max_scale`` is relative to the point's own rates,
  which are the base rates times ``load``, so the product is the load at the boundary);
- **latency percentiles**: p50 / p90 / p99 of end-to-end, TTFT and TBT against load per policy (log y);
- a table of every point, the sweep's size, the fluidllm versions that computed it and the analyses
  that are missing or that rejected a point.

Figures are drawn with matplotlib (Agg) and embedded as base64 PNG, so ``index.html`` is one file that
opens anywhere; the same PNGs are written beside it. Columns read: the store contract of
:mod:`fluidllm.sweep.store` (``point_id``, ``param.*``, ``analysis``, ``out.*``, ``seconds``,
``error``, ``fluidllm_version``, ``finished_at``); any of them but ``point_id`` and ``analysis`` may
be absent.
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..errors import ModelError

__all__ = ["SECTIONS", "VERDICTS", "ResultsPage", "load_results_folder", "sweep_axes", "stability_grid",
           "boundary_loads", "render_results"]

#: page sections in order: id -> title. A section is written only when the data has it.
SECTIONS: dict[str, str] = {
    "summary": "Sweep",
    "stability_map": "Stability map",
    "capacity": "Capacity",
    "capacity_region": "Capacity region: boundary load per policy",
    "latency": "Latency percentiles",
    "points": "All points",
}
VERDICTS = ("STABLE", "INCONCLUSIVE", "UNSTABLE")
_VERDICT_COLORS = {"STABLE": "#4daf4a", "INCONCLUSIVE": "#d9d9d9", "UNSTABLE": "#e41a1c"}
_MISSING_COLOR = "#ffffff"
#: panels drawn at most per figure (one per combination of the other swept fields); the page says
#: when some are left out.
MAX_PANELS = 12
_LAT = (("e2e", "end-to-end"), ("ttft", "TTFT"), ("tbt", "TBT"))
_PCT_STYLE = {50: "-", 90: "--", 99: ":"}
_STORE_SUFFIX = ".parquet"


# ------------------------------------------------------------------------------------------ loading
def _parquet_files(folder: Path) -> list[Path]:
    """The finished point files of a results folder: ``*.parquet`` directly inside it, skipping the
    store's temporary and metadata files (a leading ``.`` or ``_``, a ``.tmp`` suffix) and any
    sub-folder (the report itself defaults to ``RESULTS/report``)."""
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.name.endswith(_STORE_SUFFIX) and not p.name.startswith((".", "_"))
                  and not p.name.endswith(".tmp"))


def _read_folder_direct(folder: Path):
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = _parquet_files(folder)
    if not files:
        return pd.DataFrame(columns=["point_id", "analysis"])
    # per file, then concatenated with type promotion: sweeps run into one folder may differ in
    # their param columns
    table = pa.concat_tables([pq.read_table(f) for f in files], promote_options="permissive")
    return table.to_pandas()


def load_results_folder(results: str | Path):
    """Every finished point of a sweep results folder as one pandas DataFrame (one row per point and
    analysis).

    Uses :func:`fluidllm.sweep.load_results` when that module is importable, else reads the Parquet
    files itself (pyarrow), skipping temporary files.

    Raises:
        ModelError: ``results`` is missing, not a folder, or holds no finished point.
    """
    p = Path(results)
    if not p.is_dir():
        raise ModelError("RESULTS", str(results),
                         "no finished points: not a folder (run `fluidllm sweep SWEEP.toml --results DIR` first)")
    try:
        # fluidllm.sweep was written in parallel with this module: prefer its reader (the store's own
        # rules), fall back to reading the files directly so the report never depends on it
        from ..sweep import load_results as _load
    except ImportError:  # pragma: no cover - the sweep package ships with fluidllm
        _load = None
    df = _load(p) if _load is not None else _read_folder_direct(p)
    if len(df) == 0:
        raise ModelError("RESULTS", str(results), "no finished points in this folder (no <point_id>.parquet files)")
    return df


def _manifest(results: Path | None) -> dict[str, Any] | None:
    if results is None:
        return None
    f = results / "_sweep.json"
    try:
        return json.loads(f.read_text())
    except (OSError, ValueError):
        return None


# ------------------------------------------------------------------------------------------ helpers
def _isnull(v: Any) -> bool:
    if v is None:
        return True
    try:
        return isinstance(v, float) and math.isnan(v)
    except TypeError:  # pragma: no cover
        return False


def _num(v: Any) -> float | None:
    if _isnull(v) or isinstance(v, (bool, str)):
        return None
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _label(v: Any) -> str:
    if _isnull(v):
        return "—"
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        return format(v, "g")
    return str(v)


def _sort_key(v: Any) -> tuple:
    x = _num(v)
    return (0, x, "") if x is not None else (1, 0.0, _label(v))


def _g(x: Any, fmt: str = ".4g") -> str:
    x = _num(x)
    return "—" if x is None else format(x, fmt)


def _short(col: str) -> str:
    return col[len("param."):] if col.startswith("param.") else col


def sweep_axes(df) -> dict[str, Any]:
    """How a results frame is laid out: ``params`` (the ``param.*`` columns), ``policy`` (the first
    ``param.*policy*`` column, else the first swept field other than load, else None), ``load``
    (``param.load`` or None: then every point is at load 1) and ``facets`` (the other swept fields,
    one panel per combination of their values)."""
    params = [c for c in df.columns if c.startswith("param.")]
    load = "param.load" if "param.load" in params else None
    rest = [c for c in params if c != load]
    policy = next((c for c in rest if "policy" in c.lower()), rest[0] if rest else None)
    facets = [c for c in rest if c != policy]
    return {"params": params, "policy": policy, "load": load, "facets": facets}


def _col(df, name: str):
    return df[name] if name in df.columns else None


def _rows(df, analysis: str):
    return df[df["analysis"] == analysis]


def _has(df, analysis: str, cols: Sequence[str]) -> bool:
    sub = _rows(df, analysis)
    return len(sub) > 0 and any(c in sub.columns and sub[c].notna().any() for c in cols)


def _keyed(df, axes: dict[str, Any]) -> list[dict[str, Any]]:
    """One dict per row: ``facet`` (tuple of labels), ``policy`` (label), ``load`` (float), ``row``."""
    out = []
    for _, r in df.iterrows():
        facet = tuple(_label(r[c]) for c in axes["facets"])
        pol = _label(r[axes["policy"]]) if axes["policy"] else "(base model)"
        load = _num(r[axes["load"]]) if axes["load"] else 1.0
        out.append({"facet": facet, "policy": pol, "load": 1.0 if load is None else load, "row": r})
    return out


def _latest(items: list[dict[str, Any]]) -> dict[str, Any]:
    # several points in one cell happen when sweeps with other settings share a folder: the most
    # recently finished one is shown
    return max(items, key=lambda it: str(it["row"].get("finished_at", "")))


def _facet_title(axes: dict[str, Any], facet: tuple) -> str:
    return ", ".join(f"{_short(c)} = {v}" for c, v in zip(axes["facets"], facet)) or "all points"


def _facets_and_policies(keyed: list[dict[str, Any]], raw_facets: dict[tuple, tuple]) -> tuple[list, list]:
    facets = sorted({k["facet"] for k in keyed}, key=lambda f: tuple(_sort_key(v) for v in raw_facets[f]))
    policies = sorted({k["policy"] for k in keyed}, key=_sort_key)
    return facets, policies


def _raw_facets(df, axes: dict[str, Any]) -> dict[tuple, tuple]:
    out: dict[tuple, tuple] = {}
    for _, r in df.iterrows():
        raw = tuple(r[c] for c in axes["facets"])
        out.setdefault(tuple(_label(v) for v in raw), raw)
    return out


# ------------------------------------------------------------------------------------------ numbers
def stability_grid(df) -> dict[str, Any]:
    """The stability map's numbers: ``policies``, ``loads`` (sorted), and per facet (``title``) the
    ``verdict`` and ``slope_tokens_per_s`` matrices (policy x load; None where no point).
    Empty ``panels`` when the frame has no stability rows."""
    axes = sweep_axes(df)
    sub = _rows(df, "stability")
    if "out.verdict" not in sub.columns:
        sub = sub.iloc[0:0]
    keyed = [k for k in _keyed(sub, axes) if not _isnull(k["row"].get("out.verdict"))]
    raw = _raw_facets(sub, axes)
    facets, policies = _facets_and_policies(keyed, raw)
    loads = sorted({k["load"] for k in keyed})
    panels = []
    for f in facets:
        verdict = [[None] * len(loads) for _ in policies]
        slope = [[None] * len(loads) for _ in policies]
        cells: dict[tuple[int, int], list] = {}
        for k in keyed:
            if k["facet"] == f:
                cells.setdefault((policies.index(k["policy"]), loads.index(k["load"])), []).append(k)
        for (i, j), items in cells.items():
            r = _latest(items)["row"]
            verdict[i][j] = str(r["out.verdict"])
            slope[i][j] = _num(r.get("out.slope_tokens_per_s"))
        panels.append({"facet": list(f), "title": _facet_title(axes, f), "verdict": verdict, "slope_tokens_per_s": slope})
    return {"policy_field": _short(axes["policy"]) if axes["policy"] else None, "policies": policies,
            "loads": loads, "panels": panels}


def _interval(pairs: list[tuple[float, str]], below: str, above: str, exact: str | None = None) -> dict[str, Any]:
    """From (load, verdict) pairs: ``lo`` = largest ``below`` load under the smallest ``above`` load
    (None if none), ``hi`` = that smallest ``above`` load (None: never seen, the boundary is past the
    largest load tested), ``exact`` = a load with verdict ``exact`` inside [lo, hi] if any."""
    ups = [x for x, v in pairs if v == above]
    hi = min(ups) if ups else None
    downs = [x for x, v in pairs if v == below and (hi is None or x < hi)]
    lo = max(downs) if downs else None
    ex = None
    if exact is not None:
        ats = [x for x, v in pairs if v == exact and (lo is None or x >= lo) and (hi is None or x <= hi)]
        ex = min(ats) if ats else None
    return {"lo": lo, "hi": hi, "exact": ex, "tested": sorted({x for x, _ in pairs})}


def boundary_loads(df) -> list[dict[str, Any]]:
    """Per facet and policy, the boundary load three ways:

    - ``stability``: ``lo`` = the largest STABLE load below the smallest UNSTABLE one, ``hi`` = that
      UNSTABLE load (None where not observed);
    - ``fluid``: the same with DRAINS / DIVERGES (``exact``: a BOUNDARY load);
    - ``lp``: the median over capacity rows of ``load x out.max_scale`` (the LP boundary in load
      units), with ``lp_spread`` (max - min; 0 when the points agree).

    Returns a list of dicts ``{facet, title, policy, stability, fluid, lp, lp_spread}`` (a method's
    entry is None when the frame has no rows of it).
    """
    axes = sweep_axes(df)
    by: dict[tuple[tuple, str], dict[str, list]] = {}
    for k in _keyed(df, axes):
        r, a = k["row"], k["row"]["analysis"]
        slot = by.setdefault((k["facet"], k["policy"]), {"stability": [], "fluid": [], "lp": []})
        if a == "stability" and not _isnull(r.get("out.verdict")):
            slot["stability"].append((k["load"], str(r["out.verdict"])))
        elif a == "fluid" and not _isnull(r.get("out.fluid_verdict")):
            slot["fluid"].append((k["load"], str(r["out.fluid_verdict"])))
        elif a == "capacity" and _num(r.get("out.max_scale")) is not None:
            slot["lp"].append(k["load"] * _num(r["out.max_scale"]))
    raw = _raw_facets(df, axes)
    out = []
    for (facet, pol) in sorted(by, key=lambda fp: (tuple(_sort_key(v) for v in raw[fp[0]]), _sort_key(fp[1]))):
        s = by[(facet, pol)]
        if not (s["stability"] or s["fluid"] or s["lp"]):
            continue
        lp = sorted(s["lp"])
        med = None
        if lp:
            n = len(lp)
            med = lp[n // 2] if n % 2 else 0.5 * (lp[n // 2 - 1] + lp[n // 2])
        out.append({"facet": list(facet), "title": _facet_title(axes, facet), "policy": pol,
                    "stability": _interval(s["stability"], "STABLE", "UNSTABLE") if s["stability"] else None,
                    "fluid": _interval(s["fluid"], "DRAINS", "DIVERGES", "BOUNDARY") if s["fluid"] else None,
                    "lp": med, "lp_spread": (lp[-1] - lp[0]) if lp else None})
    return out


# ------------------------------------------------------------------------------------------ figures
def _figure(n_panels: int, ncols: int, w: float, h: float):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    ncols = max(1, min(ncols, n_panels))
    nrows = max(1, math.ceil(n_panels / ncols))
    # fixed margins in inches rather than constrained layout: layout solving cost more than drawing
    # (about half of the page's time), and the panels here have labels of known size
    W, H = w * ncols, h * nrows + 0.9
    fig = Figure(figsize=(W, H))
    fig.subplots_adjust(left=0.95 / W, right=1 - 0.15 / W, bottom=0.95 / H, top=1 - 0.55 / H,
                        wspace=0.45, hspace=0.55)
    axs = fig.subplots(nrows, ncols, squeeze=False)
    flat = [a for row in axs for a in row]
    for a in flat[n_panels:]:
        a.set_visible(False)
    return fig, flat[:n_panels]


def _fig_stability(grid: dict[str, Any]):
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    panels = grid["panels"][:MAX_PANELS]
    pols, loads = grid["policies"], grid["loads"]
    fig, axs = _figure(len(panels), 3, max(3.2, 0.9 * len(loads) + 1.6), max(2.2, 0.55 * len(pols) + 1.4))
    cmap = ListedColormap([_MISSING_COLOR] + [_VERDICT_COLORS[v] for v in VERDICTS])
    for ax, p in zip(axs, panels):
        codes = [[0 if v is None else 1 + VERDICTS.index(v) if v in VERDICTS else 2 for v in row]
                 for row in p["verdict"]]
        ax.imshow(codes, cmap=cmap, vmin=0, vmax=len(VERDICTS), aspect="auto")
        for i, row in enumerate(p["slope_tokens_per_s"]):
            for j, s in enumerate(row):
                if p["verdict"][i][j] is not None:
                    ax.text(j, i, "—" if s is None else f"{s:+.3g}", ha="center", va="center", fontsize=7)
        ax.set_xticks(range(len(loads)), [f"{x:g}" for x in loads])
        ax.set_yticks(range(len(pols)), pols)
        ax.set_xlabel("load (x base arrival rates)")
        if grid["policy_field"]:
            ax.set_ylabel(grid["policy_field"])
        ax.set_title(p["title"], fontsize=9)
    fig.legend(handles=[Patch(color=_VERDICT_COLORS[v], label=v) for v in VERDICTS]
               + [Patch(facecolor=_MISSING_COLOR, edgecolor="0.6", label="not run")],
               loc="lower center", ncols=4, fontsize=8)
    fig.suptitle("Stability verdict per point; cell text: backlog slope (tokens/s)", fontsize=10)
    return fig


def _policy_colors(policies: Sequence[str]) -> dict[str, Any]:
    known = {"fastertransformer": "tab:red", "vllm": "tab:orange", "orca": "tab:blue", "sarathi": "tab:green",
             "fastertransformer-static": "tab:purple"}
    cycle = ["tab:cyan", "tab:brown", "tab:pink", "tab:olive", "tab:gray", "tab:purple", "black"]
    out, k = {}, 0
    for p in policies:
        if p in known:
            out[p] = known[p]
        else:
            out[p] = cycle[k % len(cycle)]
            k += 1
    return out


def _fig_capacity(df, axes: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Capacity rows: max_scale (row 1) and max_token_rate_per_s (row 2) against each swept field."""
    sub = _rows(df, "capacity")
    metrics = [(c, lab) for c, lab in (("out.max_scale", "LP max_scale (x the point's rates)"),
                                       ("out.max_token_rate_per_s", "max token rate (tokens/s)"))
               if c in sub.columns and sub[c].notna().any()]
    fields = axes["params"] or [None]
    fig, axs = _figure(len(metrics) * len(fields), len(fields), 3.6, 2.8)
    keyed = _keyed(sub, axes)
    pols = sorted({k["policy"] for k in keyed}, key=_sort_key)
    colors = _policy_colors(pols)
    numbers: dict[str, Any] = {}
    for m, (col, lab) in enumerate(metrics):
        for f, fld in enumerate(fields):
            ax = axs[m * len(fields) + f]
            xs_all = sorted({_label(k["row"][fld]) for k in keyed}, key=_sort_key) if fld else ["all"]
            numeric = fld is not None and all(_num(x) is not None for x in xs_all)
            pos = {x: (float(x) if numeric else i) for i, x in enumerate(xs_all)}
            for pol in pols:
                pts = [(pos[_label(k["row"][fld])] if fld else 0, _num(k["row"][col])) for k in keyed
                       if k["policy"] == pol and _num(k["row"][col]) is not None]
                if not pts:
                    continue
                ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=12, alpha=0.5, color=colors[pol])
                xs = sorted({p[0] for p in pts})
                means = [sum(y for x, y in pts if x == x0) / sum(1 for x, _ in pts if x == x0) for x0 in xs]
                ax.plot(xs, means, "-", color=colors[pol], label=pol, lw=1.2)
                numbers.setdefault(col, {}).setdefault(_short(fld) if fld else "all", {})[pol] = \
                    {"x": xs if numeric else [xs_all[int(i)] for i in xs], "mean": means}
            if col == "out.max_scale":
                ax.axhline(1.0, color="0.3", lw=0.8, ls="--")
            if not numeric:
                ax.set_xticks(range(len(xs_all)), xs_all, rotation=30 if len(xs_all) > 4 else 0, fontsize=7)
            ax.set_xlabel(_short(fld) if fld else "")
            ax.set_ylabel(lab, fontsize=8)
    if pols and axs:
        axs[0].legend(fontsize=7, title=_short(axes["policy"]) if axes["policy"] else None, title_fontsize=7)
    fig.suptitle("LP capacity per point (mean over the other fields; dots: every point)", fontsize=10)
    return fig, numbers


def _fig_region(bounds: list[dict[str, Any]]) -> Any:
    from matplotlib.lines import Line2D

    titles = list(dict.fromkeys(b["title"] for b in bounds))[:MAX_PANELS]
    fig, axs = _figure(len(titles), 3, 4.0, 3.0)
    for ax, t in zip(axs, titles):
        items = [b for b in bounds if b["title"] == t]
        top = max([x for b in items for m in ("stability", "fluid") if b[m] for x in b[m]["tested"]]
                  + [b["lp"] for b in items if b["lp"] is not None] + [1.0])
        for i, b in enumerate(items):
            for m, dx, color in (("stability", -0.12, "tab:blue"), ("fluid", 0.12, "tab:purple")):
                iv = b[m]
                if iv is None:
                    continue
                lo = iv["lo"] if iv["lo"] is not None else 0.0
                hi = iv["hi"] if iv["hi"] is not None else top * 1.08
                ax.plot([i + dx, i + dx], [lo, hi], color=color, lw=5, alpha=0.55, solid_capstyle="butt")
                if iv["hi"] is None:  # never unstable: the boundary lies above the largest load tested
                    ax.annotate("", (i + dx, hi), (i + dx, hi - 0.001 - 0.04 * top),
                                arrowprops={"arrowstyle": "->", "color": color})
                if iv.get("exact") is not None:
                    ax.plot([i + dx], [iv["exact"]], "o", color=color, ms=5)
            if b["lp"] is not None:
                ax.plot([i - 0.3, i + 0.3], [b["lp"], b["lp"]], color="black", lw=1.6)
        ax.set_xticks(range(len(items)), [b["policy"] for b in items], rotation=20 if len(items) > 3 else 0)
        ax.set_xlim(-0.6, len(items) - 0.4)
        ax.set_ylim(0, top * 1.12)
        ax.set_ylabel("boundary load (x base rates)")
        ax.set_title(t, fontsize=9)
    fig.legend(handles=[Line2D([], [], color="tab:blue", lw=5, alpha=0.55,
                               label="simulated: largest STABLE .. smallest UNSTABLE"),
                        Line2D([], [], color="tab:purple", lw=5, alpha=0.55,
                               label="fluid: largest DRAINS .. smallest DIVERGES"),
                        Line2D([], [], color="black", lw=1.6, label="LP: load x max_scale")],
               loc="lower center", ncols=3, fontsize=7)
    fig.suptitle("Capacity region: where each method puts the boundary load", fontsize=10)
    return fig


def _fig_latency(df, axes: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    sub = _rows(df, "simulate")
    metrics = [(m, lab) for m, lab in _LAT
               if any(f"out.{m}_ms_p{q}" in sub.columns and sub[f"out.{m}_ms_p{q}"].notna().any() for q in _PCT_STYLE)]
    keyed = _keyed(sub, axes)
    raw = _raw_facets(sub, axes)
    facets, pols = _facets_and_policies(keyed, raw)
    facets = facets[:MAX_PANELS]
    colors = _policy_colors(pols)
    fig, axs = _figure(len(metrics) * len(facets), len(metrics), 3.6, 2.8)
    numbers: dict[str, Any] = {}
    for fi, f in enumerate(facets):
        for mi, (m, lab) in enumerate(metrics):
            ax = axs[fi * len(metrics) + mi]
            for pol in pols:
                cells: dict[float, list] = {}
                for k in keyed:
                    if k["facet"] == f and k["policy"] == pol:
                        cells.setdefault(k["load"], []).append(k)
                loads = sorted(cells)
                for q, ls in _PCT_STYLE.items():
                    ys = [_num(_latest(cells[x])["row"].get(f"out.{m}_ms_p{q}")) for x in loads]
                    pts = [(x, y) for x, y in zip(loads, ys) if y is not None and y > 0]
                    if pts:
                        ax.plot([p[0] for p in pts], [p[1] for p in pts], ls, marker=".", color=colors[pol],
                                label=f"{pol} p{q}")
                        numbers.setdefault(_facet_title(axes, f), {}).setdefault(m, {}).setdefault(pol, {})[f"p{q}"] = \
                            {"load": [p[0] for p in pts], "ms": [p[1] for p in pts]}
            if ax.lines:
                ax.set_yscale("log")
            ax.set_xlabel("load (x base arrival rates)")
            ax.set_ylabel(f"{lab} latency (ms)", fontsize=8)
            ax.set_title(_facet_title(axes, f), fontsize=8)
    if axs:
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], color=colors[p], lw=2, label=p) for p in pols] + \
                  [Line2D([], [], color="0.3", ls=ls, label=f"p{q}") for q, ls in _PCT_STYLE.items()]
        fig.legend(handles=handles, loc="lower center", ncols=min(8, len(handles)), fontsize=7)
    fig.suptitle("Latency percentiles against load (pooled over replications)", fontsize=10)
    return fig, numbers


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------ summary
def _points_table(df, axes: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    analyses = [a for a in ("stability", "capacity", "simulate", "fluid") if (df["analysis"] == a).any()]
    cols = {"stability": [("out.verdict", "verdict"), ("out.slope_tokens_per_s", "slope tok/s")],
            "capacity": [("out.max_scale", "max_scale"), ("lp_load", "LP boundary load"), ("out.binding", "binding")],
            "simulate": [("out.throughput_requests_per_s", "throughput req/s"), ("out.e2e_ms_p50", "e2e p50 ms"),
                         ("out.e2e_ms_p99", "e2e p99 ms")],
            "fluid": [("out.fluid_verdict", "fluid"), ("out.drain_time_s", "drain s")]}
    head = ["point"] + [_short(c) for c in axes["params"]] + [lab for a in analyses for _, lab in cols[a]] + ["errors"]
    body = []
    groups = df.groupby("point_id", sort=False)
    order = sorted(groups.groups, key=lambda pid: tuple(_sort_key(groups.get_group(pid).iloc[0][c])
                                                        for c in axes["params"]) + (pid,))
    for pid in order:
        g = groups.get_group(pid)
        first = g.iloc[0]
        row = [str(pid)] + [_label(first[c]) for c in axes["params"]]
        for a in analyses:
            ra = g[g["analysis"] == a]
            r = ra.iloc[-1] if len(ra) else None
            for c, _ in cols[a]:
                if r is None:
                    row.append("not run")
                    continue
                if c == "lp_load":
                    load = _num(first[axes["load"]]) if axes["load"] else 1.0
                    ms = _num(r.get("out.max_scale"))
                    row.append(_g(None if ms is None or load is None else ms * load))
                    continue
                v = r.get(c)
                row.append(_g(v) if _num(v) is not None else _label(v))
        errs = [f"{a}: {e}" for a, e in zip(g["analysis"], g["error"]) if not _isnull(e)] if "error" in g.columns else []
        row.append("; ".join(errs))
        body.append(row)
    return head, body


def _summary(df, manifest: dict[str, Any] | None) -> dict[str, Any]:
    points = int(df["point_id"].nunique())
    analyses = [a for a in ("capacity", "simulate", "stability", "fluid") if (df["analysis"] == a).any()]
    analyses += sorted(set(map(str, df["analysis"].unique())) - set(analyses))
    have = df.groupby("analysis")["point_id"].nunique().to_dict()
    expected = list(manifest.get("analyses", [])) if manifest else []
    missing = {a: points - int(have.get(a, 0)) for a in dict.fromkeys(analyses + expected)
               if points - int(have.get(a, 0)) > 0}
    rejected: dict[str, dict[str, int]] = {}
    if "error" in df.columns:
        for a, e in zip(df["analysis"], df["error"]):
            if not _isnull(e):
                rejected.setdefault(str(a), {}).setdefault(str(e), 0)
                rejected[str(a)][str(e)] += 1
    versions = sorted({str(v) for v in df["fluidllm_version"].dropna()}) if "fluidllm_version" in df.columns else []
    fin = sorted(str(v) for v in df["finished_at"].dropna()) if "finished_at" in df.columns else []
    secs = float(df["seconds"].sum()) if "seconds" in df.columns and df["seconds"].notna().any() else None
    return {"points": points, "rows": int(len(df)), "analyses": analyses, "missing": missing, "rejected": rejected,
            "versions": versions, "finished_first": fin[0] if fin else None, "finished_last": fin[-1] if fin else None,
            "compute_s": secs, "points_total": (manifest or {}).get("points_total"),
            "sweep_file": (manifest or {}).get("sweep")}


# ------------------------------------------------------------------------------------------ result
@dataclass(frozen=True)
class ResultsPage:
    """What :func:`render_results` wrote.

    Attributes:
        html: ``OUT/index.html`` (self-contained: figures inline). out_dir: OUT.
        figures: figure name -> its PNG beside the page. sections: section ids written, in page order.
        points: distinct points; rows: result rows (one per point and analysis); analyses: those present.
        missing: analysis -> points without a row of it; rejected: analysis -> rows whose analysis
            rejected the point (``error`` set). numbers: each figure's numbers (JSON-safe).
    """

    html: Path
    out_dir: Path
    figures: dict[str, Path]
    sections: tuple[str, ...]
    points: int
    rows: int
    analyses: tuple[str, ...]
    missing: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    numbers: dict[str, Any] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: ``html``, ``figures`` (name -> PNG path), ``points`` (the CLI contract) plus
        ``out_dir``, ``sections``, ``rows``, ``analyses``, ``missing``, ``rejected``, ``numbers``."""
        return {"html": str(self.html), "figures": {k: str(v) for k, v in self.figures.items()}, "points": self.points,
                "out_dir": str(self.out_dir), "sections": list(self.sections), "rows": self.rows,
                "analyses": list(self.analyses), "missing": dict(self.missing), "rejected": dict(self.rejected),
                "numbers": self.numbers}

    def summary(self) -> str:
        """One or two lines for the terminal."""
        s = (f"wrote {self.html}: {self.points} point(s), {len(self.figures)} figure(s) "
             f"({', '.join(self.figures) or 'none'})")
        if self.missing:
            s += "\n  missing: " + ", ".join(f"{a} at {n} point(s)" for a, n in self.missing.items())
        return s


# ------------------------------------------------------------------------------------------ page
_CSS = """body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1200px;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ccc;margin-top:1.6em}
figure{margin:1em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}figcaption{font-size:.9em;color:#444}
table{border-collapse:collapse;font-size:.8em}td,th{border:1px solid #ddd;padding:2px 6px;text-align:left}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}.note{color:#8a4b00}
.STABLE{background:#dff0d8}.UNSTABLE{background:#f8d7da}.INCONCLUSIVE{background:#eee}
.scroll{overflow-x:auto}code{font-size:.95em}"""


def _e(s: Any) -> str:
    return html.escape(str(s), quote=True)


def _img(name: str, png: bytes, alt: str, caption: str) -> str:
    b64 = base64.b64encode(png).decode("ascii")
    return (f'<figure id="fig-{_e(name)}"><img class="figure" data-figure="{_e(name)}" alt="{_e(alt)}" '
            f'src="data:image/png;base64,{b64}"><figcaption>{caption}</figcaption></figure>')


def _cell(v: str) -> str:
    cls = v if v in VERDICTS else ("num" if _num_text(v) else "")
    return f'<td class="{cls}">{_e(v)}</td>' if cls else f"<td>{_e(v)}</td>"


def _num_text(v: str) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return False


def _render_html(title: str, parts: list[tuple[str, str]]) -> str:
    nav = " · ".join(f'<a href="#{sid}">{_e(SECTIONS[sid])}</a>' for sid, _ in parts)
    body = "\n".join(f'<section id="{sid}"><h2>{_e(SECTIONS[sid])}</h2>\n{content}\n</section>' for sid, content in parts)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
            f"<style>{_CSS}</style></head><body>\n<h1>{_e(title)}</h1>\n<nav>{nav}</nav>\n{body}\n</body></html>\n")


def _summary_html(s: dict[str, Any], axes: dict[str, Any], source: str) -> str:
    rows = [("results", source), ("points", f"{s['points']}" + (f" of {s['points_total']} in the sweep"
                                                               if s["points_total"] is not None else "")),
            ("result rows", s["rows"]), ("analyses", ", ".join(s["analyses"])),
            ("swept fields", ", ".join(_short(c) for c in axes["params"]) or "none"),
            ("policy axis", _short(axes["policy"]) if axes["policy"] else "none (one row: the base model)"),
            ("load axis", "load" if axes["load"] else "not swept (every point at load 1)"),
            ("fluidllm versions", ", ".join(s["versions"]) or "not recorded"),
            ("finished", f"{s['finished_first']} .. {s['finished_last']}" if s["finished_first"] else "not recorded"),
            ("compute time", f"{s['compute_s']:.3g} s" if s["compute_s"] is not None else "not recorded")]
    if s["sweep_file"]:
        rows.insert(1, ("sweep file", s["sweep_file"]))
    out = "<table>" + "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows) + "</table>"
    notes = []
    if s["points_total"] is not None and s["points_total"] > s["points"]:
        notes.append(f"{s['points_total'] - s['points']} point(s) of the sweep are not finished yet "
                     "(running the sweep again computes only those).")
    if len(s["versions"]) > 1:
        notes.append("points were computed by different fluidllm versions: " + ", ".join(s["versions"]) + ".")
    for a, n in s["missing"].items():
        notes.append(f"analysis <code>{_e(a)}</code> missing at {n} of {s['points']} point(s).")
    for a, errs in s["rejected"].items():
        for e, n in errs.items():
            notes.append(f"analysis <code>{_e(a)}</code> rejected {n} point(s): {_e(e)}")
    if notes:
        out += '<ul class="note">' + "".join(f"<li>{n}</li>" for n in notes) + "</ul>"
    return out


def _boundary_table(bounds: list[dict[str, Any]]) -> str:
    def iv(x: dict[str, Any] | None) -> str:
        if x is None:
            return "not run"
        lo = "—" if x["lo"] is None else f"{x['lo']:g}"
        hi = f"> {max(x['tested']):g}" if x["hi"] is None else f"{x['hi']:g}"
        ex = f" (= {x['exact']:g})" if x.get("exact") is not None else ""
        return f"{lo} .. {hi}{ex}"

    head = ["panel", "policy", "simulated (STABLE .. UNSTABLE)", "fluid (DRAINS .. DIVERGES)", "LP load x max_scale"]
    rows = [[b["title"], b["policy"], iv(b["stability"]), iv(b["fluid"]), _g(b["lp"])] for b in bounds]
    return _table(head, rows)


def _table(head: list[str], rows: list[list[str]]) -> str:
    return ('<div class="scroll"><table><thead><tr>' + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr></thead><tbody>"
            + "".join("<tr>" + "".join(_cell(str(v)) for v in r) + "</tr>" for r in rows) + "</tbody></table></div>")


def _too_many(n: int, what: str) -> str:
    return (f'<p class="note">{n} {what}: the figure shows the first {MAX_PANELS}; the table below lists all.</p>'
            if n > MAX_PANELS else "")


def render_results(df_or_dir: Any, out: str | Path | None = None, *, title: str | None = None) -> ResultsPage:
    """Write ``OUT/index.html`` (and one PNG per figure beside it) for a sweep's results.

    Args:
        df_or_dir: a results folder written by ``fluidllm sweep`` or its DataFrame (the store's columns).
        out: the folder to write (created if missing); default ``<results>/report`` for a folder.
        title: the page title (default: "fluidllm sweep results: <folder name>").

    Raises:
        ModelError: no finished points (a missing or empty folder, an empty frame), a frame without
            ``point_id`` / ``analysis``, or an ``out`` that is a file or cannot be created.
    """
    import pandas as pd

    from .paper import check_out_dir

    results = None
    if isinstance(df_or_dir, pd.DataFrame):
        df = df_or_dir
        if out is None:
            raise ModelError("out", None, "must be given when rendering a DataFrame")
        source = "DataFrame"
    else:
        results = Path(df_or_dir)
        df = load_results_folder(results)
        source = str(results)
    missing_cols = [c for c in ("point_id", "analysis") if c not in df.columns]
    if missing_cols:
        raise ModelError("RESULTS", source, f"is not a sweep results table: no column(s) {missing_cols}")
    if len(df) == 0:
        raise ModelError("RESULTS", source, "no finished points")
    out_dir = check_out_dir(out if out is not None else results / "report", "--out")
    df = df.reset_index(drop=True)
    axes = sweep_axes(df)
    manifest = _manifest(results)
    summ = _summary(df, manifest)
    figures: dict[str, Path] = {}
    numbers: dict[str, Any] = {"axes": {k: ([_short(c) for c in v] if isinstance(v, list) else
                                            (_short(v) if v else None)) for k, v in axes.items()}}
    parts: list[tuple[str, str]] = [("summary", _summary_html(summ, axes, source))]

    def add_figure(name: str, fig: Any, alt: str, caption: str) -> str:
        png = _png(fig)
        path = out_dir / f"{name}.png"
        path.write_bytes(png)
        figures[name] = path
        return _img(name, png, alt, caption)

    grid = stability_grid(df)
    if grid["panels"]:
        numbers["stability_map"] = grid
        parts.append(("stability_map", _too_many(len(grid["panels"]), "panels") + add_figure(
            "stability_map", _fig_stability(grid), "stability map: verdict per policy and load",
            "Verdict of the stability test at each point (policy x load); cell text: the slope of the "
            "backlog in tokens/s (positive grows). One panel per value of the other swept fields.")))
    if _has(df, "capacity", ["out.max_scale", "out.max_token_rate_per_s"]):
        fig, nums = _fig_capacity(df, axes)
        numbers["capacity"] = nums
        parts.append(("capacity", add_figure(
            "capacity", fig, "LP capacity against each swept field",
            "The configuration LP at each point: <code>max_scale</code> (how far the point's rates can be "
            "multiplied and stay inside the region; below the dashed line at 1 the point is overloaded) and "
            "the engine's maximum token rate, against each swept field.")))
    bounds = boundary_loads(df)
    if bounds and (any(b["stability"] or b["fluid"] for b in bounds)):
        numbers["capacity_region"] = bounds
        n = len({b["title"] for b in bounds})
        parts.append(("capacity_region", _too_many(n, "panels") + add_figure(
            "capacity_region", _fig_region(bounds), "boundary load per policy: simulated, fluid, LP",
            "Boundary load per policy: the simulated interval runs from the largest STABLE load below the "
            "smallest UNSTABLE one to that UNSTABLE load (an arrow: no UNSTABLE load was tested); the fluid "
            "interval the same with DRAINS / DIVERGES; the black bar is the LP's load x max_scale.")
            + _boundary_table(bounds)))
    if _has(df, "simulate", [f"out.{m}_ms_p{q}" for m, _ in _LAT for q in _PCT_STYLE]):
        fig, nums = _fig_latency(df, axes)
        numbers["latency"] = nums
        n = len({tuple(_label(r[c]) for c in axes["facets"]) for _, r in _rows(df, "simulate").iterrows()})
        parts.append(("latency", _too_many(n, "panel rows") + add_figure(
            "latency", fig, "latency percentiles against load per policy",
            "p50 (solid), p90 (dashed) and p99 (dotted) of end-to-end latency, time to first token and time "
            "between tokens, in ms on a log scale, against load; one colour per policy.")))
    head, body = _points_table(df, axes)
    parts.append(("points", _table(head, body)))
    page_title = title or f"fluidllm sweep results: {results.name if results is not None else 'DataFrame'}"
    index = out_dir / "index.html"
    index.write_text(_render_html(page_title, parts), encoding="utf-8")
    rejected = {a: sum(v.values()) for a, v in summ["rejected"].items()}
    return ResultsPage(html=index, out_dir=out_dir, figures=figures, sections=tuple(s for s, _ in parts),
                       points=summ["points"], rows=summ["rows"], analyses=tuple(summ["analyses"]),
                       missing=dict(summ["missing"]), rejected=rejected, numbers=_json_safe(numbers))


def _json_safe(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, bool) or x is None or isinstance(x, str):
        return x
    n = _num(x)
    if n is not None:
        return int(x) if isinstance(x, int) else n
    return None if _isnull(x) else str(x)
