"""PyTorch backend parity: ``fluidllm.simulate(..., backend="torch")`` equals ``backend="numpy"``.

Random numbers are drawn by NumPy on the host for every backend, and every state update is integer
arithmetic, so the two backends must give IDENTICAL results: the same batch logs and every output
array equal element for element (floats included: the same operations in the same order). Checked
for every vectorized policy on small models with k_max, a resident cap and a small KV memory that
forces preemptions, and once across the 512-replication block boundary. Skipped without torch.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import fluidllm as F
from fluidllm.model import (Engine, Geometric, Independent, Model, PoissonArrival, PolicySpec, Staircase, TwoFeature,
                            Workload)
from fluidllm.policies.rules import VECTOR_POLICIES

POLICY_NAMES = sorted(VECTOR_POLICIES)
_SKIP = ("backend", "wall_s", "peak_state_bytes")   # where the run happened and how long it took


@pytest.fixture(scope="module", autouse=True)
def _torch() -> None:
    try:
        # exc_type=ImportError: also skip a CUDA build of torch whose libraries are missing here.
        pytest.importorskip("torch", exc_type=ImportError)
    except OSError as e:
        pytest.skip(f"torch is not importable here: {e}")


def assert_identical(a: F.SimResult, b: F.SimResult) -> None:
    """Every field of two SimResults equal (arrays element for element, NaN equal to NaN)."""
    assert a.backend == "numpy" and b.backend == "torch"
    for f in dataclasses.fields(a):
        if f.name in _SKIP:
            continue
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray):
            assert x.shape == y.shape and x.dtype == y.dtype, f.name
            assert np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), f.name
        elif isinstance(x, F.sim.result.LatencySummary):
            assert np.array_equal(x.count, y.count), f.name
            for k in x.per_replication:
                assert np.array_equal(x.per_replication[k], y.per_replication[k], equal_nan=True), (f.name, k)
            for k in ("mean", "p50", "p90", "p99"):
                assert np.array_equal(getattr(x, k), getattr(y, k), equal_nan=True), (f.name, k)
        else:
            assert x == y, f.name


def _model(policy: str, engine_kw: dict, rate: float, prefill: float, decode: float) -> Model:
    opts = {"chunk_size": 7} if policy in ("orca", "sarathi", "vllm-v1") else {}
    eng = Engine("e", 48, policy=PolicySpec(policy, opts), **engine_kw)
    w = Workload("w", PoissonArrival(rate), Independent(Geometric(prefill), Geometric(decode, 0)))
    return Model({"e": eng}, {"w": w})


CASES = {
    # the paper's staircase with a k_max cap, no memory limit
    "staircase-kmax": (dict(batch_time=Staircase(11.28, 35.47, 16), max_batch_requests=5), 6.0, 20.0, 8.0),
    # attention terms, a resident cap and a KV memory small enough to preempt (and leave prompts unschedulable)
    "two-feature-kv": (dict(batch_time=TwoFeature(5.0, 0.3, 8, 0.05, 0.001, 1e-4), max_batch_requests=6,
                            max_resident_requests=12, kv_capacity_tokens=120), 30.0, 20.0, 12.0),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("policy", POLICY_NAMES)
def test_torch_equals_numpy(policy: str, case: str) -> None:
    kw, rate, m_p, m_d = CASES[case]
    m = _model(policy, kw, rate, m_p, m_d)
    a = F.simulate(m, replications=3, horizon_s=2.0, seed=11, batch_log=True, grid_points=50)
    b = F.simulate(m, replications=3, horizon_s=2.0, seed=11, batch_log=True, grid_points=50, backend="torch")
    assert sum(map(len, a.batch_log)) > 0
    assert a.batch_log == b.batch_log
    assert_identical(a, b)
    if case == "two-feature-kv" and policy not in ("fastertransformer", "fastertransformer-static"):
        # the memory must actually bind for this case to test preemption (FT never over-admits)
        assert a.preemptions.sum() > 0


def test_torch_equals_numpy_across_blocks_and_loads() -> None:
    """R = 515 spans two blocks of 512 (block seeds); per-replication loads."""
    m = _model("sarathi", CASES["two-feature-kv"][0], 30.0, 20.0, 12.0)
    loads = np.linspace(0.5, 1.5, 515)
    a = F.simulate(m, replications=515, horizon_s=0.3, seed=5, load=loads, grid_points=20)
    b = F.simulate(m, replications=515, horizon_s=0.3, seed=5, load=loads, grid_points=20, backend="torch")
    assert_identical(a, b)


def test_torch_path_never_converts_tensors_implicitly(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a GPU an implicit ``np.asarray(tensor)`` in the loop would be a hidden device-to-host copy
    (or an error for CUDA tensors). Every conversion must go through ``Backend.to_numpy``: with
    ``Tensor.__array__`` raising, the torch run must still finish and equal the NumPy run."""
    import torch

    from fluidllm.sim import backend as backend_mod

    calls = {"to_numpy": 0}
    real = backend_mod._TorchBackend.to_numpy

    def counted(self, a):  # type: ignore[no-untyped-def]
        calls["to_numpy"] += 1
        return real(self, a)

    def forbidden(self, *a, **k):  # type: ignore[no-untyped-def]
        raise AssertionError("implicit numpy conversion of a torch tensor")

    m = _model("sarathi", CASES["two-feature-kv"][0], 30.0, 20.0, 12.0)
    a = F.simulate(m, replications=4, horizon_s=1.0, seed=3, batch_log=True, grid_points=20)
    monkeypatch.setattr(backend_mod._TorchBackend, "to_numpy", counted)
    monkeypatch.setattr(torch.Tensor, "__array__", forbidden)
    with pytest.raises(AssertionError, match="implicit numpy"):
        np.asarray(torch.zeros(2))                 # the trap is armed
    b = F.simulate(m, replications=4, horizon_s=1.0, seed=3, batch_log=True, grid_points=20, backend="torch")
    assert calls["to_numpy"] > 0
    assert a.batch_log == b.batch_log
    assert_identical(a, b)
