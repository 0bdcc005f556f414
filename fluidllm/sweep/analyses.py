"""The analyses run at one sweep point, through fluidllm's public API, as flat result rows.

Each analysis gives one row of ``out.<name>`` columns (the store contract in ``design.md``):

- ``capacity``: ``out.max_scale`` (how far the point's rates, base rates x load, can be multiplied and
  stay inside the region), ``out.max_token_rate_per_s`` (first engine), ``out.binding`` (the
  bottleneck engine's binding constraint), ``out.bottleneck``.
- ``simulate``: ``out.throughput_requests_per_s`` and ``out.mean_requests_in_system`` (means over
  replications), ``out.{e2e,ttft,tbt}_ms_p{50,90,99}`` (pooled over replications), ms.
- ``stability``: ``out.verdict``, ``out.slope_tokens_per_s``, ``out.slope_lo``/``out.slope_hi`` (its
  interval), ``out.fluid_slope_tokens_per_s``.
- ``fluid``: ``out.fluid_verdict`` and ``out.drain_time_s`` from an initial backlog of
  ``FLUID_BACKLOG_TOKENS`` tokens (one engine: spread evenly over the classes as unstarted prompts;
  ``DRAINS``, ``DIVERGES`` or ``BOUNDARY`` when the load sits exactly at capacity so the fluid
  neither drains nor grows; networks: :func:`fluidllm.fluid.network_fluid_verdict`, worst initial
  condition), ``out.fluid_growth_tokens_per_s``.

An analysis that rejects the point (a policy without a fluid model, say) gives its row with nulls and
the message in ``error``; any other exception propagates (a bug must not be stored as a result).
"""
from __future__ import annotations

import math
import time
from typing import Any

from ..errors import ModelError

__all__ = ["OUT_COLUMNS", "FLUID_BACKLOG_TOKENS", "compute_point"]

FLUID_BACKLOG_TOKENS = 1.0e6

#: every result column and its Arrow type name ("double" or "string"), per analysis
OUT_COLUMNS: dict[str, dict[str, str]] = {
    "capacity": {"out.max_scale": "double", "out.max_token_rate_per_s": "double", "out.binding": "string",
                 "out.bottleneck": "string"},
    "simulate": {"out.throughput_requests_per_s": "double", "out.mean_requests_in_system": "double",
                 **{f"out.{m}_ms_p{q}": "double" for m in ("e2e", "ttft", "tbt") for q in (50, 90, 99)}},
    "stability": {"out.verdict": "string", "out.slope_tokens_per_s": "double", "out.slope_lo": "double",
                  "out.slope_hi": "double", "out.fluid_slope_tokens_per_s": "double"},
    "fluid": {"out.fluid_verdict": "string", "out.drain_time_s": "double", "out.fluid_growth_tokens_per_s": "double"},
}


def _f(x: Any) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _mean(x: Any) -> float | None:
    if isinstance(x, (list, tuple)):
        vals = [float(v) for v in x if v is not None]
        return _f(sum(vals) / len(vals)) if vals else None
    return _f(x)


def _is_network(model: Any) -> bool:
    return hasattr(model, "workflows")


def _capacity(model: Any, load: float) -> dict[str, Any]:
    import fluidllm

    c = fluidllm.capacity(model)
    d = c.to_dict()
    first = next(iter(d["engines"].values()))
    if _is_network(model):
        neck = (d.get("bottlenecks") or [None])[0]
    else:
        neck = d.get("bottleneck")
    binding = d["engines"][neck]["binding"] if neck in d["engines"] else None
    # max_scale is homogeneous of degree -1 in the rates: the point's rates are base x load
    return {"out.max_scale": _f(d["max_scale"] / load), "out.max_token_rate_per_s": _f(first["max_token_rate_per_s"]),
            "out.binding": binding, "out.bottleneck": neck}


def _simulate(model: Any, load: float, reps: int, horizon_s: float, seed: int) -> dict[str, Any]:
    import fluidllm

    if _is_network(model):
        d = fluidllm.simulate_network(model, replications=reps, horizon_s=horizon_s, seed=seed, load=load).to_dict()
        thr, mreq = _mean(d["throughput_requests_per_s"]), _mean(d["mean_requests_in_system"])
    else:
        d = fluidllm.simulate(model, replications=reps, horizon_s=horizon_s, seed=seed, load=load).to_dict()
        thr = _f(d["summary"]["throughput_requests_per_s"]["mean"])
        mreq = _f(d["summary"]["mean_requests_in_system"]["mean"])
    out: dict[str, Any] = {"out.throughput_requests_per_s": thr, "out.mean_requests_in_system": mreq}
    for m in ("e2e", "ttft", "tbt"):
        stats = d.get(f"{m}_ms") or {}
        for q in (50, 90, 99):
            out[f"out.{m}_ms_p{q}"] = _f(stats.get(f"p{q}"))
    return out


def _stability(model: Any, load: float, reps: int, horizon_s: float, seed: int,
               opts: dict[str, Any]) -> dict[str, Any]:
    import fluidllm

    fn = fluidllm.network_stability if _is_network(model) else fluidllm.stability
    d = fn(model, load=load, replications=reps, horizon_s=horizon_s, seed=seed, **opts).to_dict()
    lo, hi = d.get("slope_interval") or (None, None)
    return {"out.verdict": d["verdict"], "out.slope_tokens_per_s": _f(d["slope_tokens_per_s"]),
            "out.slope_lo": _f(lo), "out.slope_hi": _f(hi),
            "out.fluid_slope_tokens_per_s": _f(d.get("fluid_slope_tokens_per_s"))}


def _fluid(model: Any, load: float) -> dict[str, Any]:
    from ..fluid import drain_time_ms, fluid_model, network_fluid_verdict

    if _is_network(model):
        v = network_fluid_verdict(model, load=load, initial_total_tokens=FLUID_BACKLOG_TOKENS)
        return {"out.fluid_verdict": v.verdict, "out.drain_time_s": _f(v.drain_time_s),
                "out.fluid_growth_tokens_per_s": _f(v.growth_rate_tokens_per_s)}
    fm = fluid_model(model, load=load)
    k = len(fm.classes)
    # W = sum_k (1 + r_k) P_k + D_k: unstarted prompts P_k carry their decode work r_k P_k with them
    init = [(FLUID_BACKLOG_TOKENS / k / (1.0 + float(r)), 0.0) for r in fm.decode_ratio]
    drain = drain_time_ms(model, initial_tokens=init, load=load)
    slope = fm.growth_slope_per_ms * 1000.0
    verdict = "DRAINS" if drain is not None else ("DIVERGES" if slope > 0 else "BOUNDARY")
    return {"out.fluid_verdict": verdict, "out.drain_time_s": None if drain is None else _f(drain / 1000.0),
            "out.fluid_growth_tokens_per_s": _f(slope)}


def compute_point(task: dict[str, Any]) -> list[dict[str, Any]]:
    """Run every analysis of one point; returns one row per analysis with ``analysis``, the
    ``out.*`` columns of that analysis, ``seconds`` (its compute time), ``error`` and
    ``fluidllm_version`` (of the process that computed it).

    ``task`` holds ``model`` (built), ``load``, ``analyses``, ``replications``, ``horizon_s`` and
    ``seed`` (this point's), and ``options`` (analysis -> keyword arguments).
    """
    import fluidllm

    model, load = task["model"], float(task["load"])
    rows = []
    for a in task["analyses"]:
        t0 = time.perf_counter()
        err = None
        try:
            if a == "capacity":
                out = _capacity(model, load)
            elif a == "simulate":
                out = _simulate(model, load, task["replications"], task["horizon_s"], task["seed"])
            elif a == "stability":
                out = _stability(model, load, task["replications"], task["horizon_s"], task["seed"],
                                 task.get("options", {}).get("stability", {}))
            else:
                out = _fluid(model, load)
        except ModelError as e:
            out, err = {}, str(e)
        rows.append({"analysis": a, **out, "seconds": time.perf_counter() - t0, "error": err,
                     "fluidllm_version": fluidllm.__version__})
    return rows
