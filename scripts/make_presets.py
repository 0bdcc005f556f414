#!/usr/bin/env python3
"""Regenerate the fitted batch-time presets in ``fluidllm/presets/presets.toml``.

For each derived profile ``derived_batch_time_<MODEL>_<GPU>.csv`` of the project's calibration folder
it writes three presets (name = the lower-cased ``<MODEL>-<GPU>``, underscores as dashes):

* ``NAME``            piecewise-linear ``c + a·max(0, n − b0)`` fitted to the ``prefill_only`` rows with
                      at most 4096 tokens (the paper's token-count model);
* ``NAME-staircase``  staircase ``c + a·⌈n / b0⌉`` fitted to the same rows;
* ``NAME-2f``         two-feature model fitted to all rows (prefill-only, decode-only, mixed).

Fits: :func:`fluidllm.calibrate.fit_profile` (non-negative least squares, integer knee searched,
bootstrap 95 % intervals, seed 0). Parameters are rounded to 6 significant digits. The paper preset
``codellama-34b-a100`` (first in the file) is kept byte for byte.

Usage: ``python scripts/make_presets.py [--calibration DIR] [--out FILE] [--n-boot N] [--seed S]``
"""
from __future__ import annotations

import argparse
import importlib
import sys
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fluidllm.calibrate import fit_profile  # noqa: E402
from fluidllm.calibrate.fit import inline_toml  # noqa: E402

PAPER_PRESET = "codellama-34b-a100"
MARKER = "# ---- fitted presets: written by scripts/make_presets.py from the calibration profiles ----"
PREFILL_SCENARIO = "prefill_only"
PREFILL_MAX_TOKENS = 4096
SIG_DIGITS = 6

_VIDUR = "microsoft/vidur 7d47513, MIT"
_LSS = "casys-kaist/LLMServingSim 5daddb2, MIT"

#: (profile stem, what the model/GPU is, how iteration_ms was assembled: per the calibration README)
PROFILES: list[tuple[str, str, str]] = [
    ("Llama-2-7b_A100", "Llama-2-7B, TP 1, A100-80GB",
     f"linear ops: vidur A100 mlp.csv (measured; {_VIDUR}); attention: fits to 36 values transcribed from "
     f"vidur's A100 Llama-2-7B attention.csv (measured; {_VIDUR}); no TP communication"),
    ("Llama-2-7b_H100", "Llama-2-7B, TP 1, H100",
     f"linear ops: vidur H100 mlp.csv (measured; {_VIDUR}); prefill attention: LLMServingSim H100 Llama-3.1-8B "
     f"attn rows (measured; {_LSS}); decode attention: ESTIMATE (A100 fit scaled by the HBM bandwidth ratio)"),
    ("Llama-2-70b_tp4_A100", "Llama-2-70B, TP 4, A100-80GB (DGX)",
     f"linear ops: vidur A100 mlp.csv at TP 4 (measured; {_VIDUR}); attention: ESTIMATE (A100 Llama-2-7B "
     f"attention fits rescaled to the per-GPU head counts); all-reduce: vidur a100_dgx NCCL measurements ({_VIDUR})"),
    ("Llama-2-70b_tp4_H100", "Llama-2-70B, TP 4, H100 (DGX)",
     f"linear ops: vidur H100 mlp.csv at TP 4 (measured; {_VIDUR}); prefill attention: LLMServingSim H100 "
     f"attention.csv (measured <= 1024 tokens; {_LSS}); decode attention: ESTIMATE (A100 7B fit x heads x HBM "
     f"ratio); all-reduce: vidur h100_dgx NCCL measurements ({_VIDUR}); caveat: vidur's H100 kernels are "
     "faster than splitwise-sim's end-to-end H100 measurements"),
    ("Llama-3.1-70B_tp4_H100", "Llama-3.1-70B, TP 4, H100",
     f"linear ops: LLMServingSim H100 layers.csv at TP 4 (measured, <= 2048 tokens; {_LSS}); prefill attention: "
     f"LLMServingSim attention.csv (measured <= 1024 tokens, scaled 8B curve beyond; {_LSS}); decode attention: "
     f"ESTIMATE (A100 7B fit x heads x HBM ratio); all-reduce: vidur h100_dgx NCCL measurements ({_VIDUR})"),
]


def preset_name(stem: str) -> str:
    """``Llama-2-70b_tp4_A100`` → ``llama-2-70b-tp4-a100``."""
    return stem.lower().replace("_", "-")


def sig(x: float, digits: int = SIG_DIGITS) -> float:
    """``x`` rounded to ``digits`` significant digits."""
    return float(f"{float(x):.{digits}g}")


def rounded(params: dict[str, Any]) -> dict[str, Any]:
    return {k: (int(v) if k == "b0" else sig(v)) for k, v in params.items()}


def record(name: str, fit: Any, source: str, rows: int, seed: int, n_boot: int) -> str:
    """One ``[presets.NAME]`` block."""
    import tomli_w

    model = {"kind": fit.model.kind, **rounded(fit.params)}
    ci = {k: [int(v[0]), int(v[1])] if k == "b0" else [sig(v[0], 4), sig(v[1], 4)]
          for k, v in fit.intervals.items()}
    stats = {"r2": sig(fit.r2), "rmse_ms": sig(fit.rmse_ms, 4), "rows": rows,
             "p90_rel_error": sig(fit.residual_percentiles["rel_p90"], 4), "seed": seed, "n_boot": n_boot}
    if ci:
        stats["ci95"] = ci
    key = tomli_w.dumps({name: 0}).split("=", 1)[0].strip()
    return (f"[presets.{key}]\n"
            f"source = {tomli_w.dumps({'s': source}).split('=', 1)[1].strip()}\n"
            f"model = {inline_toml(model)}\n"
            f"fit = {inline_toml(stats)}\n")


def paper_block(text: str) -> str:
    """The file's header and the paper preset, up to the fitted section (or the next preset)."""
    if MARKER in text:
        return text.split(MARKER, 1)[0].rstrip("\n") + "\n"
    head = f"[presets.{PAPER_PRESET}]"
    i = text.index(head)
    nxt = text.find("\n[", i + len(head))
    return (text if nxt < 0 else text[:nxt + 1]).rstrip("\n") + "\n"


def build(calibration: Path, seed: int, n_boot: int) -> tuple[str, list[tuple[str, Any]]]:
    blocks: list[str] = []
    summary: list[tuple[str, Any]] = []
    for stem, what, how in PROFILES:
        csv = calibration / f"derived_batch_time_{stem}.csv"
        name = preset_name(stem)
        tok = fit_profile(csv, scenario=PREFILL_SCENARIO, families=["piecewise-linear", "staircase"],
                          n_boot=n_boot, seed=seed, max_tokens=PREFILL_MAX_TOKENS)
        full = fit_profile(csv, families=["two-feature"], n_boot=n_boot, seed=seed)
        rows_tok = (f"rows with scenario = {PREFILL_SCENARIO} and tokens_in_batch <= {PREFILL_MAX_TOKENS} "
                    f"({tok.n_rows} rows)")
        rows_all = f"all rows: prefill-only, decode-only (kv 512 and 2048) and mixed chunk + decode ({full.n_rows} rows)"
        for suffix, fam, res, rows in (("", "piecewise-linear", tok, rows_tok), ("-staircase", "staircase", tok, rows_tok),
                                       ("-2f", "two-feature", full, rows_all)):
            f = res.fit(fam)
            src = (f"{what}: {fam} least-squares fit (fluidllm.calibrate.fit_profile, seed {seed}) to "
                   f"derived_batch_time_{stem}.csv of the fluidllm calibration folder (derive_batch_time.py), "
                   f"{rows}; iteration_ms = GPU time of one forward pass assembled from {how}")
            blocks.append(record(name + suffix, f, src, res.n_rows, seed, n_boot))
            summary.append((name + suffix, f))
    return "\n".join(blocks), summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calibration", type=Path, default=ROOT.parent / "shared" / "calibration",
                    help="folder with derived_batch_time_*.csv (default: ../shared/calibration from the repo root)")
    ap.add_argument("--out", type=Path, default=ROOT / "fluidllm" / "presets" / "presets.toml")
    ap.add_argument("--n-boot", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    old = args.out.read_text()
    fitted, summary = build(args.calibration, args.seed, args.n_boot)
    text = paper_block(old) + "\n" + MARKER + "\n\n" + fitted
    presets = tomllib.loads(text)["presets"]
    first = next(iter(presets))
    assert first == PAPER_PRESET, first
    assert tomllib.loads(old)["presets"][PAPER_PRESET] == presets[PAPER_PRESET]
    args.out.write_text(text)

    import fluidllm.presets as P

    importlib.reload(P)
    for name, f in summary:
        m = P.get_preset(name)
        print(f"{name:<34} {f.family:<17} R² {f.r2:.5f}  RMSE {f.rmse_ms:7.3f} ms  {m.params()}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
