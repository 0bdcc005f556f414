"""``fluidllm paper``: reproduce every claim of the paper and write a Markdown report with figures.

:func:`write_report` runs, in a process pool of ``workers``, every ``proofs_checks`` check (one job
each; the network checks among them), the figures of :mod:`fluidllm.report.figures` (one engine) and
:mod:`fluidllm.report.network_figures` (networks of agents) and the per-policy capacity table
(:func:`fluidllm.policy_capacity_table`, one job per policy and token budget), then writes
``OUT/README.md`` — one verdict table at the top, a section per figure with the numbers read from the
computation, the capacity table, and a reproducibility footer — plus one PNG per figure.

Everything is seeded (seed 0 unless a figure says otherwise), so a rerun gives the same numbers.
"""
from __future__ import annotations

import dataclasses
import math
import os
import pkgutil
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..errors import ModelError

__all__ = ["FIGURES", "Report", "write_report", "check_names", "check_out_dir"]

#: the figures, in report order: name -> section title.
FIGURES: dict[str, str] = {
    "batch_time_fits": "Batch time is a function of the token count (GPU profiles)",
    "capacity_region": "Capacity: n/t(n) and the (λ_p, λ_d) region with k_max (Theorems 2 and 10)",
    "policy_trajectories": "The four paper policies below and above capacity (Fig. 1)",
    "fluid_vs_scaled": "The fluid limit: scaled simulations converge to the fluid trajectory",
    "boundary_vs_budget": "Maximum stable load vs token budget, per policy",
    "network_capacity": "Networks of LLM agents: the static planning LP and the Rybko–Stolyar region",
    "rybko_stolyar_policies": "Rybko–Stolyar at 0.9 load: exit priority diverges, entry priority and max-pressure "
                              "do not (fluid prediction and simulation)",
}
TABLE_POLICIES = ("fastertransformer", "fastertransformer-static", "vllm", "orca", "sarathi")
TABLE_BUDGET = 512          # the Fig. 1 model's own budget: the per-policy table is computed there
SEED = 0


def _settings(quick: bool) -> dict[str, Any]:
    from .figures import capacity_settings

    return capacity_settings(quick)


# ------------------------------------------------------------------------------------------- result
@dataclass(frozen=True)
class Report:
    """What :func:`write_report` wrote and found.

    Attributes:
        out_dir, readme: the folder and its ``README.md``; figures: figure name -> PNG path.
        checks: one dict per proofs_checks outcome (name, claim, source, method, verdict, detail, seconds).
        counts: number of checks per verdict (PASS, FAIL, PENDING); errors: figure or table jobs that raised.
        numbers: figure name -> the figure's ``numbers``; table: the per-policy capacity table (dict) or None.
        parts_s: wall seconds of each job; wall_s: the whole run.
    """

    out_dir: Path
    readme: Path
    figures: dict[str, Path]
    checks: tuple[dict[str, Any], ...]
    counts: dict[str, int]
    errors: dict[str, str]
    numbers: dict[str, Any]
    table: dict[str, Any] | None
    parts_s: dict[str, float]
    wall_s: float
    quick: bool
    workers: int
    files: tuple[Path, ...] = field(default=())

    @property
    def ok(self) -> bool:
        """No check failed (PENDING allowed) and every figure and table job ran."""
        return self.counts.get("FAIL", 0) == 0 and not self.errors

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: files written, verdict counts, wall times."""
        return {"ok": self.ok, "out_dir": str(self.out_dir), "readme": str(self.readme),
                "files": [str(p) for p in self.files], "figures": {k: str(v) for k, v in self.figures.items()},
                "counts": dict(self.counts), "errors": dict(self.errors), "wall_s": self.wall_s,
                "parts_s": dict(self.parts_s), "quick": self.quick, "workers": self.workers,
                "checks": [{k: c[k] for k in ("name", "verdict", "seconds")} for c in self.checks]}

    def summary(self) -> str:
        """A few lines for the terminal."""
        c = self.counts
        lines = [f"wrote {self.readme} and {len(self.figures)} figure(s) in {self.wall_s:.1f} s"
                 + (" (quick)" if self.quick else ""),
                 f"checks: {c.get('PASS', 0)} passed, {c.get('FAIL', 0)} failed, {c.get('PENDING', 0)} pending"]
        for ch in self.checks:
            if ch["verdict"] == "FAIL":
                lines.append(f"  FAIL {ch['name']}: {ch['detail'].splitlines()[0] if ch['detail'] else ''}")
        for k, e in self.errors.items():
            lines.append(f"  ERROR {k}: {e}")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------- inputs
def check_names() -> list[str]:
    """Names of every ``proofs_checks`` check (``check_*`` modules), sorted."""
    import proofs_checks

    return sorted(m.name for m in pkgutil.iter_modules(proofs_checks.__path__) if m.name.startswith("check_"))


def check_out_dir(out_dir: str | os.PathLike, field_name: str = "out_dir") -> Path:
    """``out_dir`` as a Path, created if missing.

    Raises:
        ModelError: it exists and is not a folder, or cannot be created.
    """
    p = Path(out_dir)
    if p.exists() and not p.is_dir():
        raise ModelError(field_name, str(out_dir), "must be a folder (or a path that does not exist yet); it is a file")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ModelError(field_name, str(out_dir), f"cannot be created: {e.strerror or e}") from None
    if not os.access(p, os.W_OK):
        raise ModelError(field_name, str(out_dir), "must be a writable folder")
    return p


def _selection(given: Sequence[str] | None, known: Sequence[str], field_name: str) -> list[str]:
    if given is None:
        return list(known)
    if isinstance(given, str):
        raise ModelError(field_name, given, f"must be a list of names from {list(known)}")
    bad = [g for g in given if g not in known]
    if bad:
        raise ModelError(field_name, bad, f"must name only {list(known)}")
    return [k for k in known if k in given]


# ------------------------------------------------------------------------------------------- jobs
def _job_check(name: str) -> tuple[list[dict[str, Any]], float]:
    import proofs_checks

    t0 = time.perf_counter()
    outs = proofs_checks.run_all(only=[name])
    return [{"name": o.name, "claim": o.claim, "source": o.source, "method": o.method, "verdict": o.verdict,
             "detail": o.detail, "seconds": o.seconds} for o in outs], time.perf_counter() - t0


def _job_figure(name: str, out_dir: str, quick: bool, kw: dict[str, Any]) -> tuple[dict[str, Any], str, float]:
    from . import figures, network_figures

    t0 = time.perf_counter()
    mod = network_figures if name in network_figures.__all__ else figures
    fig = getattr(mod, name)(quick=quick, **kw)
    path = Path(out_dir) / f"{name}.png"
    fig.savefig(path, dpi=110)
    return fig.numbers, str(path), time.perf_counter() - t0


def _job_table(budget: int, policies: tuple[str, ...], simulate: bool, quick: bool) -> tuple[Any, float]:
    import fluidllm as fl

    from . import figures

    t0 = time.perf_counter()
    m = fl.load_model(figures.FIG1_MODEL)
    eng = next(iter(m.engines))
    tab = figures.policy_table(m.with_engine(eng, token_budget=int(budget)), policies, quick=quick, seed=SEED,
                               simulate=simulate)
    return tab, time.perf_counter() - t0


def _cost(key: tuple) -> float:
    """Rough expected seconds of a job (measured on 2 cores), to start the long ones first."""
    kind, name = key[0], key[1]
    if kind == "table":
        return 35.0 if "vllm" in key[2] else (25.0 if key[3] else 0.1)
    if kind == "check":
        return 35.0 if "simulation" in name or "paths" in name else (18.0 if "drift" in name else 2.0)
    return {"policy_trajectories": 45.0, "fluid_vs_scaled": 22.0, "rybko_stolyar_policies": 25.0}.get(name, 3.0)


# ------------------------------------------------------------------------------------------- text
def _md(s: str) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def _g(x: Any, fmt: str = ".4g") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    return format(x, fmt)


def _verdict_table(checks: Sequence[dict[str, Any]]) -> str:
    lines = ["| check | claim | source | method | verdict | s | detail |", "|---|---|---|---|---|---:|---|"]
    for c in checks:
        v = {"PASS": "PASS", "FAIL": "**FAIL**", "PENDING": "PENDING"}[c["verdict"]]
        det = (c["detail"] or "").splitlines()[0] if c["detail"] else ""
        if len(det) > 220:
            det = det[:217] + "..."
        lines.append(f"| `{c['name']}` | {_md(c['claim'])} | {_md(c['source'])} | {_md(c['method'])} | {v} | "
                     f"{c['seconds']:.1f} | {_md(det)} |")
    return "\n".join(lines)


def _caption(name: str, n: dict[str, Any]) -> str:
    if name == "batch_time_fits":
        parts = []
        for p in n["profiles"]:
            fits = ", ".join(f"{f} R² = {v['r2']:.4f}" for f, v in p["fits"].items())
            parts.append(f"{p['label']} ({p['rows']} rows; {fits}; BIC picks {p['chosen']})")
        return (f"Each panel fits the `{n['scenario']}` rows of one GPU profile (iteration time vs tokens in the "
                f"batch) with `fluidllm.calibrate.fit_profile`; residuals below. Profiles: {n['source']}. "
                f"{'; '.join(parts)}. The smallest R² of any fit is {n['min_r2']:.4f}, consistent with the "
                f"paper's claim that batch time is (to R² > 0.97) a function of the token count alone.")
    if name == "capacity_region":
        mus = ", ".join(f"b_max = {b}: μ* = {mu:.1f} tokens/s at n = {n['argmax_tokens'][b]}"
                        for b, mu in n["mu_tokens_per_s"].items())
        c = n["vertex_c_per_s"]
        return (f"Left: n/t(n) of the paper's staircase; the maximum over n ≤ b_max sits at b_max when b0 = 128 "
                f"divides it ({mus}). Right: the (λ_p, λ_d) region at b_max = 128 without and with k_max = 100. "
                f"Vertex C = ({c[0]:.2f}, {c[1]:.2f}) tokens/s is "
                f"{'a vertex' if n['vertex_c_is_vertex'] else 'NOT a vertex'} of the k_max region and the largest "
                f"scale along its direction is {n['vertex_c_scale']:.6f} (1 = on the boundary); the shipped "
                f"example `examples/vertex_c_kmax100.toml` has capacity max_scale = "
                f"{n['vertex_c_model_max_scale']:.6f} "
                f"with binding limits {', '.join(n['vertex_c_model_binding'])}.")
    if name == "policy_trajectories":
        rows = []
        for r in n["runs"]:
            fs = "—" if r["fluid_slope_tokens_per_s"] is None else f"{r['fluid_slope_tokens_per_s']:.0f}"
            vh = "" if r.get("verdict_horizon_s") in (None, n["horizon_s"]) else f" ({r['verdict_horizon_s']:g} s)"
            rows.append(f"| {r['policy']} | {r['fraction']:g} | {r['verdict'] or '—'}{vh} | "
                        f"{r['late_slope_tokens_per_s']:.0f} | {fs} | {r['final_backlog_tokens']:.0f} | "
                        f"{r['mean_in_system']:.1f} |")
        return (f"The Fig. 1 workload (129 prompt tokens, geometric output with mean 112, b_max = 512) at 0.75 "
                f"and 1.1 of the work-conserving capacity (max_scale {n['max_scale']:.4f} × {n['rate_per_s']:g} "
                f"req/s), {n['replications']} replications × {n['horizon_s']:g} s from empty; the dashed line is "
                f"the fluid backlog of Theorem 2, slope max(0, λ(m_p + m_d) − b_max/t(b_max)). Verdicts from "
                f"`fluidllm.stability` at the same load and horizon, other seeds (α = 0.01; an INCONCLUSIVE "
                f"verdict doubles the horizon up to twice, shown in brackets):\n\n"
                "| policy | × capacity | verdict | backlog slope, 2nd half (tokens/s) | fluid slope | "
                "final backlog (tokens) | mean in system |\n|---|---:|---|---:|---:|---:|---:|\n" + "\n".join(rows))
    if name == "fluid_vs_scaled":
        parts = []
        for c in n["cases"]:
            ds = ", ".join(f"n = {k}: {d:.0f} ({100 * r:.2f} % of W0)"
                           for k, d, r in zip(c["ns"], c["sup_distance"], c["sup_distance_rel"]))
            parts.append(f"{c['policy']} at load {c['load_fraction']:g} (W0 = {c['W0']} tokens, fluid drain "
                         f"{c['drain_time_ms'] / 1000:.2f} s): sup-distance {ds}")
        return ("The simulator started from n·x0 and rescaled by 1/n in space and time approaches the fluid "
                "trajectory of `fluidllm.fluid_trajectory` (computed exactly, event to event) as n grows — the "
                "definition of the fluid limit used in the stability proof. " + "; ".join(parts) + ".")
    if name == "network_capacity":
        ex = "; ".join(f"`{f}` {v['max_scale']:.4f} (bottleneck {', '.join(v['bottlenecks']) or '—'})"
                       for f, v in n["examples"].items())
        V = n["rs_vertices_per_s"]
        return (f"Left: the capacity region of the Rybko–Stolyar example in the (rate of A, rate of B) plane from "
                f"the static planning LP (`fluidllm.capacity`), vertices {', '.join(f'({a:.0f}, {b:.0f})' for a, b in V)} "
                f"req/s; the example sits at max_scale {n['rs_max_scale']:.4f} (each engine at load 0.9). The red "
                f"triangle is where static priority to the exiting classes is stable: its virtual station has load "
                f"{n['rs_virtual_station']:.4f} > 1 at the example's rates (`fluidllm.capacity.network_symbolic`). "
                f"Right: the LP capacity of every example network (max_scale × the file's rates) with the engines "
                f"on the boundary: {ex}.")
    if name == "rybko_stolyar_policies":
        rows = [f"| {r['label']} | {r['fluid_verdict']} | {r['fluid_growth_tokens_per_s']:.4g} | "
                f"{', '.join(map(str, r['in_system']))} |" for r in n["runs"]]
        return ("The same network and rates under three engine policies. Left: the network fluid model "
                "(`fluidllm.fluid.network_fluid_trajectory`) from a loaded start, the prediction made before any "
                "simulation. Right: the reference network simulator from empty "
                f"(one path, seed {n['seed']}, {n['horizon_ms']:g} ms). Max-pressure (Dai–Lin 2005) needs no "
                "priority order and holds the network at the entry-priority level; the replicated verdict is in "
                "`check_rybko_stolyar_backpressure` above.\n\n"
                "| policy | fluid verdict | fluid growth (tokens/s; < 0 drains) | requests in system every 250 ms |\n"
                "|---|---|---:|---|\n" + "\n".join(rows))
    if name == "boundary_vs_budget":
        rows = []
        for r in n["rows"]:
            vb = r["vllm_bracket_per_s"]
            vs = "—" if vb is None else f"[{_g(vb[0], '.3g')}, {_g(vb[1], '.3g')}]"
            rows.append(f"| {r['b_max']} | {r['wc_rate_per_s']:.3f} | {_g(r['ft_rate_per_s'], '.3f')} | {vs} |")
        return ("Largest stable arrival rate (requests/s) for the Fig. 1 lengths as the token budget grows: "
                "the work-conserving bound (b_max/t(b_max))/(m_p + m_d) (Orca, Sarathi), FasterTransformer by "
                "renewal-reward, vanilla vLLM by the simulator's bracket "
                f"({n['replications']} replications per load). At b_max = 128 neither FasterTransformer nor vLLM "
                "can serve a 129-token prompt (whole prompts, the default convention): capacity 0.\n\n"
                "| b_max | work-conserving (req/s) | FasterTransformer (req/s) | vLLM bracket (req/s) |\n"
                "|---:|---:|---:|---|\n" + "\n".join(rows))
    return ""


# ------------------------------------------------------------------------------------------- main
def _merge_tables(tabs: list[Any]) -> Any:
    rows = tuple(r for t in tabs for r in t.rows)
    order = {p: i for i, p in enumerate(TABLE_POLICIES)}
    rows = tuple(sorted(rows, key=lambda r: order.get(r.name, len(order))))
    return dataclasses.replace(tabs[0], rows=rows)


def write_report(out_dir: str | os.PathLike = "report", *, quick: bool = False, workers: int = 2,
                 figures: Sequence[str] | None = None, only_checks: Sequence[str] | None = None,
                 policy_table: bool = True) -> Report:
    """Reproduce the paper's claims (one engine and networks); write ``out_dir/README.md`` and one PNG per figure.

    Args:
        out_dir: folder to write (created if missing).
        quick: smaller simulations (for tests; the conclusions are the same, the brackets wider).
        workers: processes for the jobs (checks, figures, capacity-table rows); 1 runs in-process.
        figures: names from :data:`FIGURES` to draw (default all; ``[]`` none).
        only_checks: ``proofs_checks`` names to run (default all; ``[]`` none).
        policy_table: compute the per-policy capacity table (:func:`fluidllm.policy_capacity_table`).

    Returns:
        :class:`Report` (``ok`` is False when a check failed or a job raised).

    Raises:
        ModelError: ``out_dir`` is a file or cannot be created, an unknown figure or check name, workers < 1.
    """
    import fluidllm as fl

    t_start = time.perf_counter()
    out = check_out_dir(out_dir)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ModelError("workers", workers, "must be an integer >= 1")
    figs = _selection(figures, list(FIGURES), "figures")
    checks = _selection(only_checks, check_names(), "only_checks")
    s = _settings(quick)

    jobs: dict[tuple, tuple] = {}
    for c in checks:
        jobs[("check", c)] = (_job_check, c)
    for f in figs:
        if f != "boundary_vs_budget":
            jobs[("figure", f)] = (_job_figure, f, str(out), quick, {})
    need_512 = policy_table or "boundary_vs_budget" in figs
    if need_512:
        pols = TABLE_POLICIES if policy_table else ("fastertransformer", "vllm")
        for p in pols:
            # every row, FasterTransformer's too: while nothing is stable the bracket search reaches
            # below its lowest load, so the renewal-reward value is checked against a real bracket
            sim = s["simulate_table"] and policy_table
            jobs[("table", str(TABLE_BUDGET), p, sim)] = (_job_table, TABLE_BUDGET, (p,), sim, quick)
    if "boundary_vs_budget" in figs:
        for b in s["budgets"]:
            if b != TABLE_BUDGET:
                jobs[("table", str(b), "fastertransformer,vllm", False)] = (
                    _job_table, b, ("fastertransformer", "vllm"), False, quick)

    results: dict[tuple, Any] = {}
    errors: dict[str, str] = {}
    order = sorted(jobs, key=_cost, reverse=True)
    if workers == 1 or len(order) <= 1:
        for k in order:
            fn, *args = jobs[k]
            try:
                results[k] = fn(*args)
            except Exception as e:  # a broken job is reported, not hidden
                errors[":".join(map(str, k))] = f"{type(e).__name__}: {e}"
    else:
        with ProcessPoolExecutor(max_workers=min(workers, len(order))) as pool:
            futs = {k: pool.submit(*jobs[k]) for k in order}
            for k, fut in futs.items():
                try:
                    results[k] = fut.result()
                except Exception as e:
                    errors[":".join(map(str, k))] = f"{type(e).__name__}: {e}"

    parts: dict[str, float] = {}
    check_rows: list[dict[str, Any]] = []
    for c in checks:
        r = results.get(("check", c))
        if r is None:
            check_rows.append({"name": c, "claim": "", "source": "", "method": "", "verdict": "FAIL",
                               "detail": errors.get(f"check:{c}", "did not run"), "seconds": 0.0})
            continue
        check_rows.extend(r[0])
        parts[f"check {c}"] = r[1]
    counts = {v: sum(c["verdict"] == v for c in check_rows) for v in ("PASS", "FAIL", "PENDING")}

    # the per-policy table at b_max = 512, and one (FT, vLLM) table per other budget
    tables: dict[int, Any] = {}
    by_budget: dict[int, list[Any]] = {}
    for k, v in results.items():
        if k[0] == "table":
            by_budget.setdefault(int(k[1]), []).append(v[0])
            parts[f"capacity table b_max={k[1]} {k[2]}"] = v[1]
    for b, tabs in by_budget.items():
        tables[b] = _merge_tables(tabs)

    numbers: dict[str, Any] = {}
    fig_paths: dict[str, Path] = {}
    for f in figs:
        if f == "boundary_vs_budget":
            t0 = time.perf_counter()
            try:
                from . import figures as F

                fig = F.boundary_vs_budget(quick=quick, tables=tables, seed=SEED)
                p = out / f"{f}.png"
                fig.savefig(p, dpi=110)
                numbers[f], fig_paths[f] = fig.numbers, p
            except Exception as e:
                errors[f"figure:{f}"] = f"{type(e).__name__}: {e}"
            parts[f"figure {f}"] = time.perf_counter() - t0
            continue
        r = results.get(("figure", f))
        if r is not None:
            numbers[f], fig_paths[f] = r[0], Path(r[1])
            parts[f"figure {f}"] = r[2]

    table = tables.get(TABLE_BUDGET) if policy_table else None
    wall = time.perf_counter() - t_start
    readme = out / "README.md"
    readme.write_text(_readme(check_rows, counts, figs, numbers, fig_paths, errors, table, parts, wall, quick,
                              workers, s, fl.__version__))
    files = (readme, *fig_paths.values())
    return Report(out, readme, fig_paths, tuple(check_rows), counts, errors, numbers,
                  None if table is None else table.to_dict(), parts, wall, quick, workers, files)


def _readme(checks, counts, figs, numbers, fig_paths, errors, table, parts, wall, quick, workers, s, version) -> str:
    import matplotlib
    import numpy as np

    L = ["# fluidllm: reproduction of the paper's results (one engine and networks of agents)",
         "",
         "Li, Dai, Peng, *Throughput-Optimal Scheduling Algorithms for LLM Inference and AI Agents*, "
         "arXiv 2504.07347. Written by `fluidllm paper`" + (" --quick" if quick else "") + "; every number "
         "below is computed by this run.",
         "",
         f"## Verdicts: {counts['PASS']} passed, {counts['FAIL']} failed, {counts['PENDING']} pending",
         "",
         "Every executable check of `proofs_checks` (PENDING: the machinery is not there yet, neither passed "
         "nor failed).",
         "",
         _verdict_table(checks) if checks else "_no checks selected_",
         ""]
    if errors:
        L += ["**Jobs that raised** (the run is not OK):", ""]
        L += [f"* `{k}`: {_md(v)}" for k, v in errors.items()] + [""]
    for f in figs:
        L += [f"## {FIGURES[f]}", ""]
        if f in fig_paths:
            L += [f"![{f}]({fig_paths[f].name})", "", _caption(f, numbers[f]), ""]
        else:
            L += ["_not drawn: the job raised (see above)._", ""]
    if table is not None:
        L += ["## Each policy's own capacity (Fig. 1 workload, b_max = 512)", "",
              "`fluidllm.policy_capacity_table`: analytic where theory gives it (Theorem 2 for work-conserving "
              "policies, renewal-reward for FasterTransformer) and the simulator's stability bracket "
              + ("beside every row (so Theorem 2's and the renewal-reward values are checked by simulation; "
                 "vLLM has only its bracket)" if s["simulate_table"] else
                 "for vLLM (quick run: analytic rows not re-simulated)")
              + f"; max_scale multiplies the file's {table.rate_per_s:g} req/s; work-conserving bound "
              f"{table.work_conserving_max_scale:.4f}.", "", table.markdown(), ""]
    L += ["## Reproducibility", "",
          f"* fluidllm {version}, Python {platform.python_version()}, NumPy {np.__version__}, "
          f"matplotlib {matplotlib.__version__}, on {platform.machine()} with {os.cpu_count()} CPU(s); "
          f"{workers} worker process(es).",
          f"* Seeds: {SEED} for the simulations of the capacity table and the trajectories "
          f"(stability verdicts: seed + 1000), 1 for the fluid-limit runs, 0 for the calibration fits.",
          f"* Capacity brackets: {s['replications']} replications per load, horizon {s['horizon_s']:g} s, "
          f"{s['boundary_rounds']} round(s) × {s['boundary_points']} loads"
          + (" (quick mode)." if quick else "."),
          f"* Wall time: {wall:.1f} s in all. Per part (seconds of each job, run in parallel):", ""]
    L += ["| part | s |", "|---|---:|"]
    L += [f"| {k} | {v:.1f} |" for k, v in sorted(parts.items(), key=lambda kv: -kv[1])]
    L.append("")
    return "\n".join(L)
