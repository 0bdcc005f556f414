"""The figures of the single-engine story (Li, Dai, Peng, arXiv 2504.07347), one function each.

Every function computes its data through the public API (``fluidllm``, ``fluidllm.calibrate``,
``fluidllm.capacity``, ``fluidllm.fluid``) and returns a matplotlib :class:`~matplotlib.figure.Figure`
(Agg backend; nothing is shown). The numbers a caption or an assertion needs are attached to the
figure as ``fig.numbers`` (a JSON-safe dict, documented per function), so that the notebook and the
report read them from the computation, never from a previous run. ``quick=True`` shrinks the costly
ones (fewer replications, shorter horizons, fewer points) for tests; the conclusions stay the same.

Units: times in ms inside models, arrival rates in requests/s, token rates in tokens/s.
"""
from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

import fluidllm as fl  # noqa: E402

__all__ = ["PAPER_BATCH_TIME", "FIG1_MODEL", "VERTEX_C_MODEL", "VENDORED_PROFILE", "calibration_dir",
           "calibration_profiles", "capacity_settings", "policy_table", "batch_time_fits", "capacity_region",
           "policy_trajectories",
           "fluid_vs_scaled", "boundary_vs_budget"]

_PKG = Path(fl.__file__).resolve().parent
_ROOT = _PKG.parent
#: the paper's CodeLlama-34B / A100-80GB staircase fit (v3): c = 11.28 ms, a = 35.47 ms, b0 = 128.
PAPER_BATCH_TIME = fl.Staircase(11.28, 35.47, 128)
#: the paper's Fig. 1 workload (129 prompt + geometric(112) output tokens) at b_max = 512.
FIG1_MODEL = _ROOT / "examples" / "paper_codellama_b512.toml"
#: Theorem 10's vertex C example (k_max = 100, b_max = b0 = 128).
VERTEX_C_MODEL = _ROOT / "examples" / "vertex_c_kmax100.toml"
#: the GPU profile shipped with the package (vidur measurements, Llama-2-7B on an A100).
VENDORED_PROFILE = _PKG / "data" / "profile_llama-2-7b_a100.csv"
PAPER_POLICIES = ("fastertransformer", "vllm", "orca", "sarathi")
_COLORS = {"fastertransformer": "tab:red", "vllm": "tab:orange", "orca": "tab:blue", "sarathi": "tab:green",
           "fastertransformer-static": "tab:purple"}


def _figure(**kw: Any) -> Figure:
    return Figure(**kw)


def _fig1_model() -> fl.Model:
    return fl.load_model(FIG1_MODEL)


def _only_engine(model: fl.Model) -> str:
    if len(model.engines) != 1:
        raise fl.ModelError("model.engines", sorted(model.engines), "must hold exactly one engine for this figure")
    return next(iter(model.engines))


# ------------------------------------------------------------------------------------- a. calibration
def calibration_dir() -> Path | None:
    """The project's shared calibration folder (``derived_batch_time_*.csv``), if present.

    ``$FLUIDLLM_CALIBRATION_DIR`` when set, else ``../shared/calibration`` beside the repository. None
    when the folder does not exist (a user's machine): only the vendored profile is then fitted.
    """
    env = os.environ.get("FLUIDLLM_CALIBRATION_DIR")
    d = Path(env) if env else _ROOT.parent / "shared" / "calibration"
    return d if d.is_dir() else None


def calibration_profiles(include_shared: bool = True) -> tuple[list[tuple[str, Path]], str]:
    """(label, path) of the profiles to fit, and a sentence saying where they came from.

    The vendored profile always; the shared folder's ``derived_batch_time_*.csv`` when it exists and
    ``include_shared`` (a byte-identical copy of the vendored file is listed once).
    """
    out = [("Llama-2-7B A100 (vendored)", VENDORED_PROFILE)]
    d = calibration_dir() if include_shared else None
    if not include_shared:
        return out, "vendored profile only (shared profiles not requested)"
    if d is None:
        return out, ("vendored profile only: the shared calibration folder (derived_batch_time_*.csv) "
                     "is not on this machine")
    seen = {hashlib.sha256(VENDORED_PROFILE.read_bytes()).hexdigest()}
    for p in sorted(d.glob("derived_batch_time_*.csv")):
        h = hashlib.sha256(p.read_bytes()).hexdigest()
        if h in seen:
            continue
        seen.add(h)
        label = p.stem.removeprefix("derived_batch_time_").replace("_", " ")
        out.append((label, p))
    return out, f"vendored profile plus {len(out) - 1} derived profile(s) from {d}"


def batch_time_fits(*, scenario: str = "prefill_only", families: Sequence[str] = ("piecewise-linear", "staircase"),
                    include_shared: bool = True, n_boot: int = 0, quick: bool = False) -> Figure:
    """Batch-time fits on real GPU profiles, with residual panels (the paper's R² > 0.97 claim).

    For each profile (:func:`calibration_profiles`; ``quick``: the vendored one only) the rows of
    ``scenario`` are fitted by :func:`fluidllm.calibrate.fit_profile` with ``families``; top panel:
    measured iteration time vs tokens in the batch with the fitted curves, bottom: residuals (ms).

    ``fig.numbers``: ``profiles`` (list of {label, path, rows, chosen, fits: {family: {r2, rmse_ms,
    params}}}), ``source`` (which profiles, and why some are missing), ``min_r2``.
    """
    from ..calibrate import fit_profile, read_profile

    profs, source = calibration_profiles(include_shared and not quick)
    fig = _figure(figsize=(3.6 * len(profs) + 0.6, 5.6), layout="constrained")
    axes = fig.subplots(2, len(profs), squeeze=False, sharex="col", gridspec_kw={"height_ratios": [3, 1.3]})
    rows = []
    styles = ["-", "--", ":", "-."]
    for j, (label, path) in enumerate(profs):
        prof = read_profile(path, scenario)
        res = fit_profile(prof, families=list(families), n_boot=n_boot, seed=0)
        n, t = prof.tokens, prof.times_ms
        order = np.argsort(n)
        top, bot = axes[0, j], axes[1, j]
        top.plot(n, t, ".", ms=3, color="0.4", label="measured")
        fits = {}
        for k, f in enumerate(res.fits):
            pred = np.asarray(f.model.tokens_ms(n[order]), dtype=float)
            top.plot(n[order], pred, styles[k % 4], lw=1.2, label=f"{f.family} R²={f.r2:.4f}")
            bot.plot(n[order], t[order] - pred, styles[k % 4], lw=0.9)
            fits[f.family] = {"r2": float(f.r2), "rmse_ms": float(f.rmse_ms),
                              "params": {p: float(v) for p, v in f.params.items()}}
        bot.axhline(0, color="k", lw=0.5)
        top.set_title(label, fontsize=9)
        top.legend(fontsize=7, loc="upper left")
        bot.set_xlabel("tokens in batch n")
        if j == 0:
            top.set_ylabel("iteration time  [ms]")
            bot.set_ylabel("residual  [ms]")
        rows.append({"label": label, "path": str(path), "rows": int(len(prof)), "chosen": res.chosen.family,
                     "fits": fits})
    if quick and include_shared:
        source = "vendored profile only (quick mode)"
    fig.suptitle(f"Batch time vs tokens ({scenario} rows): {source}", fontsize=9)
    fig.numbers = {"profiles": rows, "source": source, "scenario": scenario,
                   "min_r2": min(f["r2"] for r in rows for f in r["fits"].values())}
    return fig


# ------------------------------------------------------------------------------------- b. capacity region
def capacity_region(*, batch_time: fl.BatchTime = PAPER_BATCH_TIME, budgets: Sequence[int] = (128, 512, 1024),
                    k_max: int = 100, b_max_region: int = 128, n_max: int = 1024, quick: bool = False) -> Figure:
    """n/t(n) of the paper's staircase and Theorem 10's (λ_p, λ_d) region with k_max, vertex C marked.

    Left: n/t(n) in tokens/s for n ≤ ``n_max`` with μ* = max_{n ≤ b_max} n/t(n) marked per budget
    (Theorem 2). Right: the (λ_p, λ_d) token-rate region of ``b_max_region`` without and with
    ``k_max`` (configuration LP), and vertex C = (29, 99)/t(128) tokens/ms.

    ``fig.numbers``: ``mu_tokens_per_s`` {b_max: μ*}, ``argmax_tokens`` {b_max: n*}, ``vertices_per_s``
    (with k_max), ``vertex_c_per_s``, ``vertex_c_is_vertex``, ``vertex_c_scale`` (largest s with s·C in
    the region: 1 on the boundary), ``vertex_c_model_max_scale`` (capacity of the shipped example).
    Cheap (closed forms and small LPs): ``quick`` changes nothing.
    """
    from ..capacity import max_token_rate, token_rate_curve

    fig = _figure(figsize=(11, 4.2), layout="constrained")
    ax, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.4, 1]})
    n, r = token_rate_curve(batch_time, n_max)
    ax.plot(n, r * 1000, lw=1, color="0.3")
    mus, argm = {}, {}
    for b in budgets:
        mu = max_token_rate(batch_time, b)
        mus[int(b)], argm[int(b)] = float(mu.tokens_per_s), int(mu.argmax_tokens)
        ax.plot(mu.argmax_tokens, mu.tokens_per_s, "o",
                label=f"b_max={b}: μ*={mu.tokens_per_s:.1f} tok/s at n={mu.argmax_tokens}")
    ax.set_xlabel("tokens in batch n")
    ax.set_ylabel("n / t(n)  [tokens/s]")
    ax.set_title("token rate of the paper's staircase t(n) = 11.28 + 35.47·⌈n/128⌉ ms", fontsize=9)
    ax.legend(fontsize=8, loc="lower right")

    regions = {}
    for k, style in [(None, "--"), (k_max, "-")]:
        reg = fl.token_region(fl.Engine("e", b_max_region, batch_time, max_batch_requests=k))
        regions[k] = reg
        V = reg.vertices_per_s
        ax2.plot(np.r_[V[:, 0], V[0, 0]], np.r_[V[:, 1], V[0, 1]], style, label=f"k_max = {k}")
    t128 = float(batch_time.tokens_ms(b_max_region))
    C = np.array([29.0, 99.0]) / t128 * 1000.0
    reg = regions[k_max]
    is_vertex = any(np.allclose(v, C, rtol=1e-9) for v in reg.vertices_per_s)
    c_scale = reg.max_scale(*C)
    ax2.plot(*C, "ko")
    ax2.annotate(f"vertex C = (29, 99)/{t128:g} per ms\n= ({C[0]:.1f}, {C[1]:.1f}) tok/s", C,
                 textcoords="offset points", xytext=(8, 6), fontsize=8)
    ax2.set_xlabel("λ_p  prefill tokens/s")
    ax2.set_ylabel("λ_d  decode tokens/s")
    ax2.set_title(f"(λ_p, λ_d) region, b_max = {b_max_region}", fontsize=9)
    ax2.legend(fontsize=8)
    vc = fl.load_model(VERTEX_C_MODEL)
    vc_cap = fl.capacity(vc)
    fig.numbers = {"mu_tokens_per_s": mus, "argmax_tokens": argm,
                   "vertices_per_s": reg.vertices_per_s.tolist(), "vertex_c_per_s": C.tolist(),
                   "vertex_c_is_vertex": bool(is_vertex), "vertex_c_scale": float(c_scale),
                   "vertex_c_model_max_scale": float(vc_cap.max_scale),
                   "vertex_c_model_binding": list(vc_cap.engines[_only_engine(vc)].binding_all)}
    return fig


# ------------------------------------------------------------------------------------- c. trajectories
def _late_slope_per_s(grid_ms: np.ndarray, y: np.ndarray) -> float:
    """Least-squares slope (per s) of y over the second half of the grid."""
    h = grid_ms >= grid_ms[-1] / 2
    return float(np.polyfit(grid_ms[h] / 1000.0, y[h], 1)[0])


def policy_trajectories(*, model: fl.Model | None = None, policies: Sequence[str] = PAPER_POLICIES,
                        fractions: Sequence[float] = (0.75, 1.1), replications: int | None = None,
                        horizon_s: float | None = None, seed: int = 0, verdicts: bool = True,
                        quick: bool = False) -> Figure:
    """The four paper policies on the Fig. 1 workload below and above the work-conserving capacity.

    For each fraction f of ``capacity(model).max_scale`` (f < 1 inside the region) and each policy,
    ``fluidllm.simulate`` from empty; top row: the token backlog (mean over replications, band =
    10–90 % of replications; log scale), with the fluid line W(t) = slope·t where a fluid model
    exists (work-conserving policies: slope max(0, λ(m_p + m_d) − b_max/t(b_max)), Theorem 2);
    bottom row: requests in system. With ``verdicts``, ``fluidllm.stability`` at the same load,
    replications and starting horizon (other seeds; INCONCLUSIVE doubles the horizon up to twice) gives
    each curve its STABLE / UNSTABLE / INCONCLUSIVE verdict. ``quick``: 150 s instead of 300 s (still 8
    replications).

    ``fig.numbers``: ``max_scale``, ``rate_per_s`` (the file's), ``runs``: list of {policy, fraction,
    load, final_backlog_tokens, mean_in_system, late_slope_tokens_per_s, fluid_slope_tokens_per_s,
    verdict, verdict_horizon_s (the horizon that decided it)}.
    """
    from ..fluid import growth_slope_tokens_per_s

    R = replications or 8          # the verdict's Student-t intervals need R >= ~8 to call STABLE at 0.75
    H = horizon_s or (150.0 if quick else 300.0)
    model = model or _fig1_model()
    eng = _only_engine(model)
    cap = fl.capacity(model)
    fig = _figure(figsize=(5.2 * len(fractions), 7), layout="constrained")
    axes = fig.subplots(2, len(fractions), squeeze=False, sharex=True)
    runs = []
    for j, f in enumerate(fractions):
        load = f * cap.max_scale
        top, bot = axes[0, j], axes[1, j]
        for pol in policies:
            m = model.with_engine(eng, policy=fl.PolicySpec(pol))
            sim = fl.simulate(m, replications=R, horizon_s=H, seed=seed, load=load, grid_points=150)
            ts = sim.grid_ms / 1000.0
            col = _COLORS.get(pol)
            W, Q = sim.series_backlog_tokens, sim.series_in_system
            verdict, vh = None, None
            if verdicts:
                st = fl.stability(m, load=load, replications=R, horizon_s=H, seed=seed + 1000)
                verdict, vh = st.verdict, float(st.horizons_s[-1])
            lab = pol + ("" if verdict is None else f" ({verdict})")
            for ax, Y in ((top, W), (bot, Q)):
                mean = Y.mean(axis=0)
                ax.plot(ts, np.maximum(mean, 1), color=col, lw=1.3, label=lab)
                lo, hi = np.percentile(Y, [10, 90], axis=0)
                ax.fill_between(ts, np.maximum(lo, 1), np.maximum(hi, 1), color=col, alpha=0.18, lw=0)
            try:
                slope = growth_slope_tokens_per_s(m, load=load)
            except fl.ModelError:     # no fluid model for this policy and workload (vLLM, FT with random lengths)
                slope = None
            runs.append({"policy": pol, "fraction": float(f), "load": float(load),
                         "final_backlog_tokens": float(W[:, -1].mean()), "mean_in_system":
                         float(sim.mean_requests_in_system.mean()),
                         "late_slope_tokens_per_s": _late_slope_per_s(sim.grid_ms, W.mean(axis=0)),
                         "fluid_slope_tokens_per_s": slope, "verdict": verdict, "verdict_horizon_s": vh})
        wc = [r["fluid_slope_tokens_per_s"] for r in runs if r["fraction"] == float(f)
              and r["fluid_slope_tokens_per_s"] is not None and r["policy"] in ("orca", "sarathi")]
        if wc:
            if wc[0] > 0:
                top.plot(ts[1:], wc[0] * ts[1:], "k--", lw=1, label=f"fluid (work-conserving): {wc[0]:.0f} tok/s")
            else:
                top.plot([], [], "k--", lw=1, label="fluid (work-conserving): slope 0, W = 0")
        top.set_yscale("log")
        top.set_ylim(bottom=100)
        bot.set_yscale("log")
        top.set_title(f"{f:g} × capacity (load {load:.3g} × file rate = "
                      f"{load * sum(w.rate_per_s for w in model.workloads.values()):.2f} req/s)", fontsize=9)
        top.legend(fontsize=7, loc="lower right")
        bot.set_xlabel("time  [s]")
        if j == 0:
            top.set_ylabel("token backlog  [tokens]")
            bot.set_ylabel("requests in system")
    fig.suptitle(f"Fig. 1 workload, {R} replications × {H:g} s (mean, band 10–90 %)", fontsize=9)
    fig.numbers = {"max_scale": float(cap.max_scale),
                   "rate_per_s": float(sum(w.rate_per_s for w in model.workloads.values())),
                   "replications": R, "horizon_s": H, "seed": seed, "runs": runs}
    return fig


# ------------------------------------------------------------------------------------- d. fluid limit
def _det_model(policy: str, rate_per_s: float, vp: int, vd: int, b_max: int) -> fl.Model:
    e = fl.Engine("gpu0", b_max, PAPER_BATCH_TIME, policy=fl.PolicySpec(policy))
    w = fl.Workload("chat", fl.PoissonArrival(rate_per_s), fl.Independent(fl.Deterministic(vp), fl.Deterministic(vd)))
    return fl.Model({"gpu0": e}, {"chat": w})


def fluid_vs_scaled(*, ns: Sequence[int] | None = None, cases: Sequence[tuple[str, float]] | None = None,
                    vp: int = 100, vd: int = 100, k: int = 50, b_max: int = 512, replications: int | None = None,
                    seed: int = 1, quick: bool = False) -> Figure:
    """The fluid limit as defined: simulations from n·x0, space and time scaled by 1/n, vs the fluid.

    x0 = k requests of (v_p, v_d) deterministic tokens (fluid state (P0, D0) = (k·v_p, 0), W0 =
    k(v_p + v_d)); for each n the simulator starts with n·k such requests, runs over n·T (T = 1.5 ×
    the fluid drain time) and its mean token backlog W_sim(n t)/n is drawn against the fluid W(t) of
    ``fluidllm.fluid_trajectory`` (exact, event to event). The sup-distance over the grid is in the
    legend; the fluid model is homogeneous, so it should decay like C/n (tests/test_fluid.py).
    ``cases``: (policy, load as a fraction of b_max/t(b_max)) pairs, default Sarathi at 0.5 (Poisson
    arrivals) and the stylised FasterTransformer without arrivals.

    ``fig.numbers``: ``cases``: list of {policy, load_fraction, W0, drain_time_ms, ns, sup_distance
    (tokens, scaled), sup_distance_rel (÷ W0)}.
    """
    from ..capacity import max_token_rate
    from ..fluid import drain_time_ms

    ns = tuple(ns or ((1, 4, 16) if quick else (4, 16, 64)))
    cases = tuple(cases or (("sarathi", 0.5), ("fastertransformer", 0.0)))
    R = replications or (2 if quick else 4)
    mu = max_token_rate(PAPER_BATCH_TIME, b_max).tokens_per_s
    fig = _figure(figsize=(5.4 * len(cases), 6.2), layout="constrained")
    grid = fig.subplots(2, len(cases), squeeze=False, sharex="col", gridspec_kw={"height_ratios": [2.2, 1]})
    out = []
    for j, (pol, frac) in enumerate(cases):
        ax, ax_err = grid[0, j], grid[1, j]
        rate = frac * mu / (vp + vd)
        m = _det_model(pol, rate, vp, vd, b_max)
        x0 = (k * vp, 0)
        d = drain_time_ms(m, initial_tokens=x0)
        T = 1.5 * d / 1000.0
        fl_tr = fl.fluid_trajectory(m, initial_tokens=x0, horizon_s=T, points=400)
        ax.plot(fl_tr.times_ms / 1000.0, fl_tr.total, "k--", lw=1.3, label="fluid W(t)", zorder=5)
        sups = []
        for n in ns:
            sim = fl.simulate(m, replications=1 if rate == 0 else R, horizon_s=n * T, seed=seed,
                              initial=[(vp, vd)] * (n * k), grid_points=300)
            t_scaled = sim.grid_ms / n
            W_sim = sim.series_backlog_tokens.mean(axis=0) / n
            W_fl = np.interp(t_scaled, fl_tr.times_ms, fl_tr.total)
            sup = float(np.abs(W_sim - W_fl).max())
            sups.append(sup)
            ax.plot(t_scaled / 1000.0, W_sim, lw=1.4, label=f"n = {n}: sup |W_sim/n − W| = {sup:.0f}")
            ax_err.plot(t_scaled / 1000.0, W_sim - W_fl, lw=1)
        W0 = k * (vp + vd)
        ax.set_title(f"{pol}, load {frac:g} × b_max/t(b_max), x0 = {k} × ({vp}, {vd})", fontsize=9)
        ax_err.axhline(0, color="k", lw=0.5)
        ax_err.set_xlabel("scaled time t = time / n  [s]")
        ax.set_ylabel("scaled token backlog W / n")
        ax_err.set_ylabel("W_sim/n − W  [tokens]")
        ax.legend(fontsize=7)
        out.append({"policy": pol, "load_fraction": frac, "W0": W0, "drain_time_ms": d, "ns": list(ns),
                    "sup_distance": sups, "sup_distance_rel": [s / W0 for s in sups]})
    fig.suptitle("Fluid limit: simulator from n·x0, rescaled by 1/n, against the fluid trajectory", fontsize=9)
    fig.numbers = {"cases": out, "replications": R, "seed": seed}
    return fig


# ------------------------------------------------------------------------------------- e. boundary vs budget
def capacity_settings(quick: bool) -> dict[str, Any]:
    """Simulation effort of the capacity brackets: replications per load, horizon (s), boundary grid,
    budgets of :func:`boundary_vs_budget`, and whether the analytic rows of the table are simulated too."""
    if quick:
        return {"replications": 4, "horizon_s": 60.0, "boundary_points": 4, "boundary_rounds": 1,
                "budgets": (128, 512), "simulate_table": False, "precision": 0.1}
    return {"replications": 8, "horizon_s": 400.0, "boundary_points": 6, "boundary_rounds": 2,
            "budgets": (128, 256, 512, 1024), "simulate_table": True, "precision": 0.02}


def policy_table(model: fl.Model, policies: Sequence[str], *, quick: bool = False, seed: int = 0,
                 simulate: bool | None = None) -> Any:
    """:func:`fluidllm.policy_capacity_table` of ``policies`` with the effort of :func:`capacity_settings`.

    Raises:
        ModelError: bad model or policy (named).
    """
    s = capacity_settings(quick)
    return fl.policy_capacity_table(model, tuple(policies), replications=s["replications"], seed=seed,
                                    horizon_s=s["horizon_s"], boundary_points=s["boundary_points"],
                                    boundary_rounds=s["boundary_rounds"], precision=s["precision"],
                                    simulate=s["simulate_table"] if simulate is None else simulate)


def _rate(model: fl.Model) -> float:
    return float(sum(w.rate_per_s for w in model.workloads.values()))


def boundary_vs_budget(*, model: fl.Model | None = None, budgets: Sequence[int] | None = None,
                       tables: dict[int, Any] | None = None, seed: int = 0, quick: bool = False) -> Figure:
    """Maximum stable arrival rate vs token budget b_max, per policy, on the Fig. 1 workload.

    Work-conserving bound (analytic, Theorem 2 / the configuration LP: every work-conserving policy,
    Orca and Sarathi included, reaches it), FasterTransformer (analytic renewal-reward over saturated
    batching cycles; 0 when a prompt never fits the budget) and vanilla vLLM (the simulator's
    bracketed stability boundary, drawn as an error bar), from :func:`fluidllm.policy_capacity_table`
    (``tables``: precomputed tables by budget holding at least those two rows; the missing ones are
    computed here with :func:`policy_table`). Rates in requests/s (max_scale × the file's rate).

    ``fig.numbers``: ``rows``: list of {b_max, wc_rate_per_s, ft_rate_per_s, vllm_bracket_per_s
    [lo, hi] (hi None when no unstable load was found) or None}, ``rate_per_s``, ``settings``.
    """
    model = model or _fig1_model()
    eng = _only_engine(model)
    s = capacity_settings(quick)
    budgets = tuple(budgets or s["budgets"])
    tables = dict(tables or {})
    lam = _rate(model)
    rows = []
    for b in budgets:
        tab = tables.get(int(b))
        if tab is None:
            tab = policy_table(model.with_engine(eng, token_budget=int(b)), ("fastertransformer", "vllm"),
                               quick=quick, seed=seed, simulate=False)
        ft = tab.row("fastertransformer").analytic
        vb = tab.row("vllm").simulated
        rows.append({"b_max": int(b), "wc_rate_per_s": float(tab.work_conserving_max_scale) * lam,
                     "ft_rate_per_s": None if ft is None else float(ft.max_scale) * lam,
                     "vllm_bracket_per_s": None if vb is None else [
                         float(vb[0]) * lam, float(vb[1]) * lam if math.isfinite(vb[1]) else None]})
    fig = _figure(figsize=(7, 4.4), layout="constrained")
    ax = fig.subplots()
    x = np.array([r["b_max"] for r in rows])
    ax.plot(x, [r["wc_rate_per_s"] for r in rows], "o-", color="tab:green",
            label="work-conserving bound (Orca, Sarathi; analytic)")
    ft = [(r["b_max"], r["ft_rate_per_s"]) for r in rows if r["ft_rate_per_s"] is not None]
    if ft:
        ax.plot(*zip(*ft), "s-", color=_COLORS["fastertransformer"], label="FasterTransformer (analytic)")
    first = True
    for r in rows:
        vb = r["vllm_bracket_per_s"]
        if vb is None:
            continue
        lo, hi = vb[0], vb[1] if vb[1] is not None else vb[0]
        ax.errorbar([r["b_max"]], [(lo + hi) / 2], yerr=[[(hi - lo) / 2], [(hi - lo) / 2]], fmt="D",
                    color=_COLORS["vllm"], capsize=4, label="vanilla vLLM (simulated bracket)" if first else None)
        first = False
    ax.axhline(lam, color="0.5", ls=":", lw=1, label=f"Fig. 1 file rate {lam:g} req/s")
    ax.set_xscale("log", base=2)
    ax.set_xticks(x, [str(b) for b in x])
    ax.set_xlabel("token budget b_max  [tokens per batch]")
    ax.set_ylabel("max stable arrival rate  [requests/s]")
    ax.set_title("Maximum stable load vs token budget (129 + geometric(112) tokens, paper staircase)", fontsize=9)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    fig.numbers = {"rows": rows, "rate_per_s": lam, "settings": {k: v for k, v in s.items() if k != "budgets"},
                   "replications": s["replications"], "seed": seed}
    return fig
