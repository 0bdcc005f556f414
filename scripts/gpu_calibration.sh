#!/usr/bin/env bash
# The one command to run on an H100/H200 box: measure, fit, compare, write presets, benchmark.
#
#   scripts/gpu_calibration.sh                       # cuda: llama-2-7b and codellama-34b shapes
#   scripts/gpu_calibration.sh --device cpu --shape tiny --quick     # every step on a CPU (CI smoke run)
#
# Steps (all output under --out, default gpu_calibration_out/):
#   1. environment.txt: nvidia-smi, torch and fluidllm versions, git commit, UTC date
#   2. profile_SHAPE.csv (+ .json): fluidllm's GPU profiler (python -m fluidllm.calibrate.profile_cli:
#      random-weight decoder, CUDA events, warm-up, medians; 2 of the shape's layers timed and scaled)
#   3. fit_SHAPE.json / fit_SHAPE_2f.json: `fluidllm calibrate` with the staircase and piecewise-linear
#      families on the prefill_only rows, and the two-feature family on all rows
#   4. comparison.md: t(n) and mu* = max n/t(n) (b_max = 512) of each measured fit beside the paper's
#      A100 staircase (preset codellama-34b-a100), the A100 Llama-2-7B profile shipped in fluidllm/data
#      and the shared H100 Llama-2-7B profile (../shared/calibration), fitted the same way
#      presets_measured.toml: [presets.SHAPE-GPU(-staircase)] records in presets.toml's format, with
#      provenance (device, torch, commit, date, command)
#   5. sim_speed_torch.json / sim_speed_numpy.json: benchmarks/sim_speed.py at R = 65,536 replications
#      on the torch backend on --device, and on numpy (peers: the reference and SimPy, same process)
#
# Options: --device cuda|cpu|cuda:N   --shape NAME (repeatable; default llama-2-7b codellama-34b)
#          --out DIR   --quick (small grid, 2 repeats, R = 64, 10 simulated s)   --no-bench
#          --layers N (default 2; tiny: all)   --repeats N   --n-boot N (default 200)
#          --bench-horizon-s S (default 120)   --replications LIST (default 65536)
# Environment: PYTHON (default: .venv/bin/python if present, else python3).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
  if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi

DEVICE=cuda
SHAPES=()
OUT=gpu_calibration_out
QUICK=0
BENCH=1
LAYERS=""
REPEATS=""
NBOOT=200
BENCH_H=120
REPS=65536
while [[ $# -gt 0 ]]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --shape) SHAPES+=("$2"); shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --quick) QUICK=1; shift ;;
    --no-bench) BENCH=0; shift ;;
    --layers) LAYERS="$2"; shift 2 ;;
    --repeats) REPEATS="$2"; shift 2 ;;
    --n-boot) NBOOT="$2"; shift 2 ;;
    --bench-horizon-s) BENCH_H="$2"; shift 2 ;;
    --replications) REPS="$2"; shift 2 ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    *) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ ${#SHAPES[@]} -gt 0 ]] || SHAPES=(llama-2-7b codellama-34b)
mkdir -p "$OUT"
COMMAND="scripts/gpu_calibration.sh --device $DEVICE $(printf -- '--shape %s ' "${SHAPES[@]}")$( ((QUICK)) && echo --quick)"

echo "== 1. environment -> $OUT/environment.txt"
{
  echo "date_utc: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "git_commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)"
  echo "command: $COMMAND"
  "$PY" -c "import sys, torch, fluidllm; print('python:', sys.version.split()[0]); print('torch:', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available()); print('fluidllm:', fluidllm.__version__)"
  if command -v nvidia-smi >/dev/null 2>&1; then nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv || true; fi
} > "$OUT/environment.txt"
cat "$OUT/environment.txt"

PROFILE_OPTS=(--device "$DEVICE")
[[ -n "$LAYERS" ]] && PROFILE_OPTS+=(--layers "$LAYERS")
if ((QUICK)); then
  PROFILE_OPTS+=(--grid quick --warmup 1 --repeats "${REPEATS:-2}")
  # a busy 2-core CI box: two torch threads contending with other work jitter by tens of ms
  [[ "$DEVICE" == cpu ]] && PROFILE_OPTS+=(--threads 1)
else
  PROFILE_OPTS+=(--repeats "${REPEATS:-5}")
fi

for s in "${SHAPES[@]}"; do
  echo "== 2. profile $s on $DEVICE -> $OUT/profile_$s.csv"
  "$PY" -m fluidllm.calibrate.profile_cli --profile --shape "$s" "${PROFILE_OPTS[@]}" \
    --out "$OUT/profile_$s.csv" --json > "$OUT/profile_$s.json"
  echo "== 3. fit $s -> $OUT/fit_$s.json, $OUT/fit_${s}_2f.json"
  "$PY" -m fluidllm calibrate "$OUT/profile_$s.csv" --scenario prefill_only --family staircase,piecewise-linear \
    --n-boot "$NBOOT" --json > "$OUT/fit_$s.json"
  "$PY" -m fluidllm calibrate "$OUT/profile_$s.csv" --family two-feature --n-boot "$NBOOT" --json \
    > "$OUT/fit_${s}_2f.json"
done

echo "== 4. comparison -> $OUT/comparison.md, presets -> $OUT/presets_measured.toml"
"$PY" - "$OUT" "$COMMAND" "${SHAPES[@]}" <<'PYEOF'
import json, subprocess, sys, tomllib
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from fluidllm.calibrate import fit_profile
from fluidllm.calibrate.fit import inline_toml
from fluidllm.capacity import max_token_rate
from fluidllm.presets import get_preset

out, command, shapes = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
ROOT = Path.cwd()
B_MAX, NS = 512, (128, 512, 2048)
refs = [("paper A100 CodeLlama-34B (preset codellama-34b-a100)", "staircase", get_preset("codellama-34b-a100"))]
for label, path in (("A100 Llama-2-7B (fluidllm/data/profile_llama-2-7b_a100.csv)",
                     ROOT / "fluidllm/data/profile_llama-2-7b_a100.csv"),
                    ("H100 Llama-2-7B (shared derived_batch_time_Llama-2-7b_H100.csv)",
                     ROOT.parent / "shared/calibration/derived_batch_time_Llama-2-7b_H100.csv")):
    if path.is_file():
        r = fit_profile(path, scenario="prefill_only", families=["staircase", "piecewise-linear"], n_boot=0)
        refs += [(label, f.family, f.model) for f in r.fits]
    else:
        refs.append((label + ": not found, skipped", None, None))

def sig(d):
    """Parameters to 6 significant digits (as scripts/make_presets.py); integers stay integers."""
    return {k: (v if isinstance(v, int) else float(f"{v:.6g}")) for k, v in d.items()}

def row(label, fam, bt):
    t = [float(bt.tokens_ms(n)) for n in NS]
    mu = max_token_rate(bt, B_MAX)
    return (f"| {label} | {fam} | {inline_toml(sig(bt.params()))} | "
            + " | ".join(f"{x:.4g}" for x in t) + f" | {mu.tokens_per_s:.6g} (n = {mu.argmax_tokens}) |"), mu.tokens_per_s

env = (out / "environment.txt").read_text()
lines = [f"# Measured batch-time fits vs references\n", "```", env.strip(), "```", "",
         f"| source | family | parameters | " + " | ".join(f"t({n}) ms" for n in NS) + f" | mu* tok/s (b_max {B_MAX}) |",
         "|---|---|---|" + "---:|" * (len(NS) + 1)]
presets = [f"# Written by {command} on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; paste into "
           "fluidllm/presets/presets.toml after review\n"]
for s in shapes:
    prof = json.loads((out / f"profile_{s}.json").read_text())
    fit = json.loads((out / f"fit_{s}.json").read_text())
    dev = prof["device_name"]
    slug = "".join(ch if ch.isalnum() else "-" for ch in dev.lower().replace("nvidia ", "")).strip("-")
    slug = "-".join(p for p in slug.split("-") if p)
    rec = fit["families"]
    for f in rec:
        from fluidllm.model.io import batch_time_from_toml
        bt = batch_time_from_toml({"kind": f["family"], **f["params"]}, "fit", ROOT)
        text, _ = row(f"measured {s} on {dev} ({prof['dtype']}, {prof['layers_timed']}/{prof['shape']['n_layers']} layers x{prof['layer_scale']:g})",
                      f["family"], bt)
        lines.append(text)
        name = f"{s}-{slug}" + ("" if f["family"] == "piecewise-linear" else f"-{f['family']}")
        src = (f"{s} shape (random weights), {dev}, {prof['dtype']}, torch {prof['torch']}: {f['family']} least-squares "
               f"fit (fluidllm.calibrate.fit_profile) to the prefill_only rows of a profile measured by "
               f"fluidllm.calibrate.profiler ({prof['layers_timed']} of {prof['shape']['n_layers']} layers timed, "
               f"scaled; {prof['kv_layout']} KV; median of {prof['repeats']}); {command}; "
               f"commit {env.split('git_commit: ')[1].split()[0]}")
        stats = {"r2": round(f["r2"], 6), "rmse_ms": float(f"{f['rmse_ms']:.4g}"), "rows": f["n_rows"],
                 "n_boot": f["n_boot"], "ci95": {k: [x if k == "b0" else float(f"{x:.4g}") for x in v] for k, v in f["intervals"].items()}}
        presets.append(f"[presets.{name}]\nsource = {json.dumps(src)}\nmodel = {inline_toml({'kind': f['family'], **sig(f['params'])})}\n"
                       f"fit = {inline_toml(stats)}\n")
for label, fam, bt in refs:
    lines.append(row(label, fam, bt)[0] if bt is not None else f"| {label} | | | " + " | " * len(NS) + " |")
(out / "comparison.md").write_text("\n".join(lines) + "\n")
(out / "presets_measured.toml").write_text("\n".join(presets))
tomllib.loads((out / "presets_measured.toml").read_text())   # must parse
print("\n".join(lines))
PYEOF

if ((BENCH)); then
  if ((QUICK)); then BOPTS=(--quick --horizon-s 10 --peer-budget-s 5 --replications 1,64); else
    BOPTS=(--horizon-s "$BENCH_H" --replications "$REPS"); fi
  echo "== 5. sim_speed: torch on $DEVICE vs numpy -> $OUT/sim_speed_{torch,numpy}.json"
  "$PY" benchmarks/sim_speed.py "${BOPTS[@]}" --backend torch --device "$DEVICE" --json "$OUT/sim_speed_torch.json"
  "$PY" benchmarks/sim_speed.py "${BOPTS[@]}" --backend numpy --json "$OUT/sim_speed_numpy.json"
fi
echo "done: $OUT"
