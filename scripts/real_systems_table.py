"""Classify the real-system plug-ins of examples/real_systems/ and measure their capacity loss.

For each plug-in (and fluidllm's built-in sarathi and vllm as anchors): the work-conserving verdict
of ``fluidllm.testing.check_work_conserving`` (with its minimal counterexample), and its capacity on
two workloads as a multiple of the model's rate, next to the work-conserving bound of the
configuration LP:

* ``fig1``: the paper's Fig. 1 workload (examples/paper_codellama_b512.toml; no KV cap).
* ``azure-conv``: Llama-2-7B on an A100 with a 100,000-token KV cache, 2048 tokens and 256
  requests per batch (examples/llama2_7b_a100_azure_conv.toml), Poisson arrivals with the Azure
  2023 conversation trace's (prompt, output) length pairs.

Plug-ins have no closed form, so their capacity is the simulator's bracketed stability boundary
(:func:`fluidllm.policy_capacity`), through the per-replication path that runs ``plan(view)``.
Writes the Markdown table between the markers in examples/real_systems/README.md and prints it.

    python scripts/real_systems_table.py [--replications 8] [--horizon-s 600] [--workers 2]
"""
from __future__ import annotations

import argparse
import re
import time
from dataclasses import replace
from pathlib import Path

import fluidllm as fl
from fluidllm.model.arrivals import PoissonArrival

ROOT = Path(__file__).resolve().parents[1]
RS = ROOT / "examples" / "real_systems"
PLUGINS = [
    ("SGLang default (no mixing)", "sglang_default.py:SGLangDefault", {}),
    ("LightLLM (peak-KV admission)", "lightllm_peak_kv.py:LightLLMPeakKV", {}),
    ("TensorRT-LLM GUARANTEED_NO_EVICT", "trtllm_no_evict.py:TRTLLMGuaranteedNoEvict", {}),
    ("vLLM v1 defaults (2048 tokens, 128 seqs)", "vllm_v1_defaults.py:VLLMV1Defaults", {}),
]
ANCHORS = [("fluidllm sarathi (built-in)", "sarathi"), ("fluidllm vllm v0 (built-in)", "vllm")]


def workloads() -> dict[str, fl.Model]:
    fig1 = fl.load_model(ROOT / "examples" / "paper_codellama_b512.toml")
    az = fl.load_model(ROOT / "examples" / "llama2_7b_a100_azure_conv.toml")
    w = az.workloads["azure_conv"]
    az = replace(az, workloads={"azure_conv": replace(w, arrival=PoissonArrival(w.arrival.rate_per_s))})
    return {"fig1": fig1, "azure-conv": az}


def _one_line(ce) -> str:
    st = ", ".join(f"({r.prefill_left}, {r.decode_left})" for r in ce.view.requests)
    return (f"b_max {ce.view.token_budget}, requests (prefill left, decode left) {st}: batch of "
            f"{ce.batch_tokens} tokens, demand {ce.demand_tokens}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replications", type=int, default=8)
    ap.add_argument("--horizon-s", type=float, default=400.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    from fluidllm.testing import check_work_conserving

    models = workloads()
    specs = [(label, fl.PolicySpec("python", {"target": f"{RS / t}", **({"params": p} if p else {})}))
             for label, t, p in PLUGINS] + [(label, fl.PolicySpec(n)) for label, n in ANCHORS]
    rows = []
    for label, spec in specs:
        t0 = time.perf_counter()
        wc = check_work_conserving(spec)
        cells = []
        for name, m in models.items():
            pc = fl.policy_capacity(m, spec, replications=a.replications, seed=a.seed, horizon_s=a.horizon_s,
                                    workers=a.workers, boundary_points=6)
            wc_s = pc.work_conserving_max_scale
            if pc.interval is None:
                cells.append(f"{pc.max_scale:.3g} of {wc_s:.3g} ({100 * pc.loss_ratio:.0f} % loss, {pc.method})")
            else:   # a bracket: the loss is a range too (the midpoint alone would mislead)
                lo, hi = pc.interval
                cells.append(f"[{lo:.3g}, {hi:.3g}] of {wc_s:.3g} (loss {100 * max(0.0, 1 - hi / wc_s):.0f}–"
                             f"{100 * max(0.0, 1 - lo / wc_s):.0f} %, {pc.method})")
        ce = "" if wc.work_conserving else f" (minimal counterexample: {_one_line(wc.counterexample)})"
        rows.append(f"| {label} | {'yes' if wc.work_conserving else 'no'}{ce} | " + " | ".join(cells) + " |")
        print(rows[-1], f"({time.perf_counter() - t0:.0f} s)", flush=True)
    head = ["| policy | work-conserving (fluidllm.testing) | Fig. 1 workload: max_scale of WC bound | "
            "Azure conv lengths, 100k KV: max_scale of WC bound |", "|---|---|---|---|"]
    table = "\n".join(head + rows)
    note = (f"\n\n{a.replications} replications x {a.horizon_s:g} s per load, 2 rounds x 6 loads, seed {a.seed}; "
            "`python scripts/real_systems_table.py`.")
    readme = RS / "README.md"
    text = readme.read_text()
    new = re.sub(r"(<!-- table:start -->\n).*?(\n<!-- table:end -->)", lambda mm: mm.group(1) + table + note + mm.group(2),
                 text, flags=re.S)
    readme.write_text(new)
    print(table + note)


if __name__ == "__main__":
    main()
