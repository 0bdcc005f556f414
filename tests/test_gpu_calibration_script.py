"""``scripts/gpu_calibration.sh`` in its CPU smoke mode: every step but the benchmark, on the tiny shape.

On a CUDA machine the same script profiles the paper's shapes; here it proves the pipeline (profile
CSV in the shared columns, fits, comparison with the A100 and H100 profiles, preset records with
provenance) runs end to end and writes what the GPU run would. Skipped without torch.
"""
from __future__ import annotations

import csv
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from fluidllm.calibrate.profiler import CSV_COLUMNS
from fluidllm.model.io import batch_time_from_toml

ROOT = Path(__file__).resolve().parent.parent


def test_cpu_smoke_run_writes_every_artifact(tmp_path: Path) -> None:
    try:
        pytest.importorskip("torch", exc_type=ImportError)
    except OSError as e:
        pytest.skip(f"torch is not importable here: {e}")
    out = tmp_path / "cal"
    p = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_calibration.sh"), "--device", "cpu", "--shape", "tiny",
                        "--quick", "--no-bench", "--out", str(out)], capture_output=True, text=True, timeout=600,
                       cwd=ROOT, env={**os.environ, "PYTHON": sys.executable})
    assert p.returncode == 0, p.stderr[-2000:]
    with open(out / "profile_tiny.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == CSV_COLUMNS and len(rows) >= 4
    assert all(float(r["iteration_ms"]) > 0 for r in rows)
    assert {"prefill_only"} <= {r["scenario"] for r in rows}
    presets = tomllib.loads((out / "presets_measured.toml").read_text())["presets"]
    assert presets, "no preset records"
    for name, rec in presets.items():
        assert "commit" in rec["source"] and "torch" in rec["source"], name
        bt = batch_time_from_toml(rec["model"], f"presets.{name}.model", out)
        assert float(bt.batch_ms(64, 0)) > 0
    cmp_text = (out / "comparison.md").read_text()
    assert "A100" in cmp_text and "tiny" in cmp_text
    assert (out / "environment.txt").is_file()
