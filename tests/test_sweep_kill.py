"""A real sweep (a subprocess) killed with SIGKILL mid-run: every stored file is a whole point, and the
same command started again reuses exactly those points, unchanged, and computes the rest."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

from fluidllm.sweep import load_results, load_sweep, run_sweep
from fluidllm.sweep.store import stored_ids

MODEL = """
[engines.gpu0]
token_budget = 512
policy = "sarathi"
batch_time = { kind = "staircase", c_ms = 11.28, a_ms = 35.47, b0 = 128 }

[workloads.chat]
arrival = { kind = "poisson", rate_per_s = 10.4 }
prefill = { kind = "deterministic", value = 129 }
decode  = { kind = "geometric", mean = 112 }
"""

# simulate x 4 replications x 40 s: ~0.3 s a point on one core; two analyses so a point has two rows
SWEEP = """
model = "model.toml"
analyses = ["simulate", "capacity"]
replications = 4
horizon_s = 40
seed = 3
[grid]
load = [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4]
"""


def _children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(d.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_sigkill_mid_sweep_then_resume(tmp_path: Path):
    (tmp_path / "model.toml").write_text(MODEL)
    (tmp_path / "s.toml").write_text(SWEEP)
    out = tmp_path / "s.results"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    env.pop("FLUIDLLM_DASK_SCHEDULER", None)
    cmd = [sys.executable, "-m", "fluidllm.sweep", str(tmp_path / "s.toml"), "--workers", "2", "--json"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while len(stored_ids(out)) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, proc.communicate()
        workers = _children(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
        # the pool's worker processes see their task pipe close and exit; none is left computing
        deadline = time.monotonic() + 20
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [w for w in workers if _alive(w)]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    before = stored_ids(out)
    spec = load_sweep(tmp_path / "s.toml")
    assert 2 <= len(before) < len(spec.points)
    # every stored file is a whole point: it reads, it has a row per analysis, its id is its name
    for pid in before:
        t = pq.read_table(out / f"{pid}.parquet")
        assert t.num_rows == 2 and set(t.column("point_id").to_pylist()) == {pid}
        assert t.column("analysis").to_pylist() == ["simulate", "capacity"]
        assert t.column("out.throughput_requests_per_s").null_count == 1  # the capacity row's
    old = load_results(out, sorted(before))
    # the same command again (worker pool, --json: exactly one JSON object on stdout)
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    res = json.loads(again.stdout)
    assert (res["points_reused"], res["points_computed"], res["points_total"]) == (len(before), 12 - len(before), 12)
    assert res["results"] == str(out.resolve())
    assert not [p for p in out.iterdir() if p.name.startswith(".tmp-")]
    assert load_results(out, sorted(before)).equals(old)  # reused, not rewritten
    assert stored_ids(out) == {p.point_id for p in spec.points}
    assert len(load_results(out, [p.point_id for p in spec.points])) == 24
    assert run_sweep(spec, workers=1).points_reused == 12
