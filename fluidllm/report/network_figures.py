"""The figures of the network story (Li, Dai, Peng, arXiv 2504.07347 §5), for ``fluidllm paper``.

Same conventions as :mod:`fluidllm.report.figures`: each function computes through the library
(the static planning LP, the symbolic virtual-station condition, the network fluid model, the
reference network simulator) and returns a matplotlib Figure with ``fig.numbers`` (JSON-safe) for
the caption; ``quick=True`` shortens the simulations.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

import fluidllm as fl  # noqa: E402

__all__ = ["NETWORKS_DIR", "network_capacity", "rybko_stolyar_policies"]

NETWORKS_DIR = Path(fl.__file__).resolve().parent.parent / "examples" / "networks"
#: the Rybko–Stolyar variants: label -> example file.
RS_VARIANTS = {"priority to exiting classes": "rybko_stolyar.toml",
               "priority to entering classes": "rybko_stolyar_stable.toml",
               "max-pressure": "rybko_stolyar_maxpressure.toml"}
_RS_COLORS = {"priority to exiting classes": "tab:red", "priority to entering classes": "tab:blue",
              "max-pressure": "tab:green"}


def _load(name: str) -> Any:
    return fl.load_model(NETWORKS_DIR / name)


def network_capacity(*, quick: bool = False) -> Figure:
    """Left: the Rybko–Stolyar capacity region in the (rate of A, rate of B) plane from the static
    planning LP, and the smaller region where priority to the exiting classes is stable (the
    virtual-station condition). Right: each example network's LP capacity (max_scale) and its
    bottleneck engines.

    ``fig.numbers``: ``rs_vertices_per_s``, ``rs_current_per_s``, ``rs_max_scale``,
    ``rs_virtual_station`` (its load at the current rates; > 1: exit priority unstable),
    ``examples`` {file: {max_scale, bottlenecks}}. Cheap (LPs): ``quick`` changes nothing.
    """
    from ..capacity.network import network_region_halfspaces, region_vertices
    from ..capacity.network_symbolic import network_conditions
    from ..fluid import fluid_policies_of

    rs = _load("rybko_stolyar.toml")
    cn = rs.class_network()
    reg = network_region_halfspaces(cn, workflows=["A", "B"])
    V = region_vertices(reg)
    cur = np.array([rs.workflows["A"].rate_per_s, rs.workflows["B"].rate_per_s])
    cond = network_conditions(cn, fluid_policies_of(rs))
    (vs_name, vs_value), = cond.evaluate()["virtual_stations"].items()
    ca = cond.evaluate({"A.short": 1.0, "B.short": 0.0})["virtual_stations"][vs_name]
    cb = cond.evaluate({"A.short": 0.0, "B.short": 1.0})["virtual_stations"][vs_name]

    fig = Figure(figsize=(12, 4.6), layout="constrained")
    ax, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.2]})
    ax.fill(V[:, 0], V[:, 1], color="tab:blue", alpha=0.15, label="capacity region (static planning LP)")
    ax.plot(np.r_[V[:, 0], V[0, 0]], np.r_[V[:, 1], V[0, 1]], color="tab:blue")
    tri = np.array([[0, 0], [1 / ca, 0], [0, 1 / cb]])
    ax.fill(tri[:, 0], tri[:, 1], color="tab:red", alpha=0.15, label="stable under exit priority (virtual station)")
    ax.plot(*cur, "k*", ms=12, label=f"the example: ({cur[0]:.0f}, {cur[1]:.0f}) req/s")
    ax.set_xlabel("rate of workflow A [req/s]")
    ax.set_ylabel("rate of workflow B [req/s]")
    ax.set_title("Rybko–Stolyar on two LLM engines", fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    ax.set_xlim(0, 1.3 * V[:, 0].max())
    ax.set_ylim(0, 1.3 * V[:, 1].max())

    examples: dict[str, Any] = {}
    for f in sorted(p.name for p in NETWORKS_DIR.glob("*.toml")):
        cap = fl.capacity(_load(f))
        d = cap.to_dict()
        bott = sorted(e for e, x in d.get("engines", {}).items() if x.get("saturated"))
        examples[f] = {"max_scale": float(cap.max_scale), "bottlenecks": bott}
    names = list(examples)
    vals = [examples[n]["max_scale"] for n in names]
    ax2.barh(range(len(names)), vals, color="0.6")
    ax2.axvline(1.0, color="k", lw=0.8, ls="--")
    for i, n in enumerate(names):
        ax2.text(vals[i], i, f" {vals[i]:.3f}  ({', '.join(examples[n]['bottlenecks']) or '—'})", va="center",
                 fontsize=7)
    ax2.set_yticks(range(len(names)), [n.removesuffix(".toml") for n in names], fontsize=8)
    ax2.set_xlabel("LP capacity max_scale (× the file's rates; 1 = on the boundary)")
    ax2.set_title("example networks: capacity and bottleneck engines", fontsize=9)
    ax2.set_xlim(0, 1.45 * max(vals))
    fig.numbers = {"rs_vertices_per_s": V.tolist(), "rs_current_per_s": cur.tolist(),
                   "rs_max_scale": float(reg.max_scale(cur)), "rs_virtual_station": float(vs_value),
                   "examples": examples}
    return fig


def rybko_stolyar_policies(*, quick: bool = False, seed: int = 7) -> Figure:
    """The Rybko–Stolyar network at 0.9 load on both engines under three policies: the fluid
    prediction (network workload from a loaded start) and the reference simulator from empty
    (requests in system, one path per policy, same seed).

    ``fig.numbers``: ``horizon_ms``, ``runs`` [{label, file, fluid_verdict, fluid_growth_tokens_per_s,
    in_system (every 250 ms), late_slope_requests_per_s}].
    """
    from ..fluid import network_fluid_trajectory, network_fluid_verdict
    from ..sim.network_reference import simulate_network_reference

    H = 750.0 if quick else 1500.0
    ts = np.arange(0.0, H + 1.0, 250.0)
    fine = np.linspace(0.0, H, 151)
    fig = Figure(figsize=(12, 4.2), layout="constrained")
    ax, ax2 = fig.subplots(1, 2)
    runs = []
    trajs = {}
    verdicts = {}
    for label, f in RS_VARIANTS.items():
        m = _load(f)
        verdicts[label] = network_fluid_verdict(m)
    init = verdicts["priority to exiting classes"].worst_initial
    T = 1.5 * (verdicts["priority to entering classes"].drain_time_s or 1.0)
    for label, f in RS_VARIANTS.items():
        m = _load(f)
        v = verdicts[label]
        tr = network_fluid_trajectory(m, initial_tokens={init: 1.0e6}, horizon_s=T, points=200)
        trajs[label] = tr
        ax.plot(tr.times_s, tr.total_work / 1e6, color=_RS_COLORS[label], label=f"{label}: {v.verdict}")
        run = simulate_network_reference(m, H, seed)
        n_fine = run.requests_in_system(fine)
        ax2.plot(fine, n_fine, color=_RS_COLORS[label], label=label)
        late = fine >= H / 2
        slope = float(np.polyfit(fine[late] / 1000.0, n_fine[late], 1)[0])
        runs.append({"label": label, "file": f, "fluid_verdict": v.verdict,
                     "fluid_growth_tokens_per_s": float(v.growth_rate_tokens_per_s),
                     "in_system": run.requests_in_system(ts).astype(int).tolist(),
                     "late_slope_requests_per_s": slope})
    ax.set_xlabel("time [s]")
    ax.set_ylabel("fluid network workload [M tokens]")
    ax.set_title(f"fluid model from 10^6 tokens in {init}", fontsize=9)
    ax.legend(fontsize=8)
    ax2.set_xlabel("time [ms]")
    ax2.set_ylabel("requests in system")
    ax2.set_title(f"reference simulator from empty, seed {seed}, each engine at load 0.9", fontsize=9)
    ax2.legend(fontsize=8)
    fig.numbers = {"horizon_ms": H, "seed": seed, "runs": runs}
    return fig
