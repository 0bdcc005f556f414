"""A sweep on a real dask.distributed cluster (scheduler + two worker processes on 127.0.0.1) gives
the same stored values as the in-process run with the same seed; FLUIDLLM_DASK_SCHEDULER is honoured."""
from __future__ import annotations

from pathlib import Path

import pytest

from fluidllm.sweep import load_results, load_sweep, run_sweep

distributed = pytest.importorskip("distributed")

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

SWEEP = """
model = "model.toml"
analyses = ["capacity", "simulate", "stability", "fluid"]
replications = 2
horizon_s = 4
seed = 7
[grid]
"engines.gpu0.policy" = ["sarathi", "orca"]
load = [0.6, 1.3]
"""


def test_dask_loopback_cluster_matches_the_local_run(tmp_path: Path, monkeypatch):
    (tmp_path / "model.toml").write_text(MODEL)
    (tmp_path / "s.toml").write_text(SWEEP)
    spec = load_sweep(tmp_path / "s.toml")
    local = run_sweep(spec, results=tmp_path / "local", workers=1)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as cluster:
        addr = cluster.scheduler_address
        assert addr.startswith("tcp://127.0.0.1:")
        res = run_sweep(spec, results=tmp_path / "dask", scheduler=addr)
        assert (res.scheduler, res.points_computed, res.points_total) == (addr, 4, 4)
        with distributed.Client(addr) as client:  # both workers took part
            ran = client.run(lambda dask_worker: len(dask_worker.data) + dask_worker.state.executed_count)
        assert len(ran) == 2 and all(v > 0 for v in ran.values())
        # the environment variable stands in for --scheduler (a fresh folder: computed again, on the cluster)
        monkeypatch.setenv("FLUIDLLM_DASK_SCHEDULER", addr)
        again = run_sweep(spec, results=tmp_path / "dask2")
        assert again.scheduler == addr and again.points_computed == 4
    drop = ["seconds", "finished_at"]
    a = load_results(local.results, local.point_ids).drop(columns=drop)
    for folder in (res.results, again.results):
        b = load_results(folder, res.point_ids).drop(columns=drop)
        assert a.equals(b)
    assert set(a["out.verdict"].dropna()) <= {"STABLE", "UNSTABLE", "INCONCLUSIVE"}
